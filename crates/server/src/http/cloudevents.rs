//! CloudEvents (v1.0, JSON format) on the HTTP API, both ways, so publishing and reading agree on
//! one mapping. In: a CloudEvent's attributes are stored as headers `ce-<name>` (binary mode keeps
//! its `ce-*` headers as they came; structured mode writes each attribute so), `datacontenttype`
//! as the event's content type and `data`/`data_base64` as its payload. Out ([`from_event`]): an
//! event with a stored `ce-specversion` gets back every stored `ce-*` attribute; any other event
//! gets the default mapping: `id` its id, `source` [`source_of`] its stream, `type` its subject,
//! `time` its timestamp. Every event read as a CloudEvent also carries the extension
//! [`ID_EXTENSION`], its id in the stream, so a client can resume a read after it.

use jetway_core::format::{Event, format_time};
use serde_json::{Map, Value};

use crate::http::json;

/// The media type of one CloudEvent in structured mode.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The media type of a batch of CloudEvents (a JSON array).
pub const CLOUDEVENTS_BATCH_JSON: &str = "application/cloudevents-batch+json";

/// The prefix of a CloudEvent's attributes in binary mode, and of their names as stored headers.
pub const CE_PREFIX: &str = "ce-";

/// The CloudEvents version of events that were not published as CloudEvents.
pub const SPEC_VERSION: &str = "1.0";

/// The extension attribute giving an event's id in its stream (the stream sequence, as a string).
pub const ID_EXTENSION: &str = "jetwayid";

/// The stored header name of CloudEvents attribute `attribute`.
pub fn header_name(attribute: &str) -> String {
    format!("{CE_PREFIX}{attribute}")
}

/// The `source` of an event of `stream` that was not published as a CloudEvent.
pub fn source_of(stream: &str) -> String {
    format!("/jetway/streams/{stream}")
}

/// `event`, stored in `stream`, as a CloudEvent in the JSON format; see the module docs.
/// Attributes published as numbers or booleans were stored as text and come back as strings.
pub fn from_event(event: Event, stream: &str) -> Map<String, Value> {
    let mut attributes = Map::new();
    let published_as_cloud_event = event
        .headers
        .iter()
        .any(|(name, _)| name == &header_name("specversion"));
    if published_as_cloud_event {
        for (name, value) in &event.headers {
            if let Some(attribute) = name.strip_prefix(CE_PREFIX) {
                attributes.insert(attribute.to_owned(), Value::String(value.clone()));
            }
        }
    } else {
        attributes.insert("time".into(), format_time(event.timestamp).into());
    }
    // The required attributes, for an event published without them (or over gRPC with only some
    // `ce-` headers): the default mapping fills what is missing.
    let defaults = [
        ("specversion", SPEC_VERSION.to_owned()),
        ("id", event.id.to_string()),
        ("source", source_of(stream)),
        ("type", event.subject.clone()),
    ];
    for (attribute, value) in defaults {
        attributes
            .entry(attribute)
            .or_insert_with(|| Value::String(value));
    }
    attributes.insert(ID_EXTENSION.into(), event.id.to_string().into());
    if let Some(content_type) = &event.content_type {
        attributes.insert("datacontenttype".into(), content_type.clone().into());
    }
    // The one payload rule of the API: JSON or text as `data`, anything else as `data_base64`;
    // an empty payload is a CloudEvent without data.
    if !event.body.is_empty() {
        match json::payload(event.content_type.as_deref(), &event.body) {
            (Some(data), _) => attributes.insert("data".into(), data),
            (None, Some(data_base64)) => {
                attributes.insert("data_base64".into(), data_base64.into())
            }
            (None, None) => None,
        };
    }
    attributes
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;

    use super::*;

    fn event(headers: &[(&str, &str)], content_type: Option<&str>, body: &'static [u8]) -> Event {
        Event {
            id: 7,
            subject: "orders.new".into(),
            data_type: String::new(),
            content_type: content_type.map(str::to_owned),
            body: Bytes::from_static(body),
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            idempotency_key: None,
            trace_parent: None,
            trace_state: None,
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_event_not_published_as_a_cloud_event_gets_the_default_mapping() {
        let mapped = from_event(event(&[("tenant", "a")], None, &[0xff]), "orders");
        assert_eq!(
            Value::Object(mapped),
            serde_json::json!({
                "specversion": "1.0", "id": "7", "source": "/jetway/streams/orders",
                "type": "orders.new", "time": "1970-01-01T00:00:01Z", "jetwayid": "7",
                "data_base64": "/w==",
            })
        );
    }

    #[test]
    fn a_cloud_event_gets_back_its_stored_attributes() {
        let headers = [
            ("ce-specversion", "1.0"),
            ("ce-id", "e1"),
            ("ce-source", "/shop"),
            ("ce-type", "paid"),
            ("ce-tenant", "a"),
            ("other", "left out"),
        ];
        let mapped = from_event(event(&headers, Some("text/plain"), b"hi"), "orders");
        assert_eq!(
            Value::Object(mapped),
            serde_json::json!({
                "specversion": "1.0", "id": "e1", "source": "/shop", "type": "paid",
                "tenant": "a", "jetwayid": "7", "datacontenttype": "text/plain", "data": "hi",
            })
        );
    }
}
