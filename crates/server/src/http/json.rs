//! Events as JSON, and the request helpers every route shares: the body within
//! `HTTP_MAX_BODY_BYTES`, the query string, and the media types the API reads and writes.
//!
//! An event's payload is `data` when it can be written as JSON as it is (a JSON content type whose
//! body parses, or a text one whose body is UTF-8, as a string), else `data_base64`: the same rule
//! as the CloudEvents JSON format, so a payload is never altered and JSON stays readable.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    body::Body,
    extract::{FromRequestParts, Path},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use jetway_core::format::{Event, format_time};
use serde::Serialize;

use crate::http::{error::ApiError, gzip};

/// The path's parameters, as axum's `Path` reads them, but a path that does not decode (invalid
/// percent-encoding or UTF-8) is the API's 400 naming `path`, not axum's plain-text rejection.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::invalid("path", rejection.body_text())),
        }
    }
}

/// NDJSON, one JSON value per line (also accepted as `application/ndjson`).
pub const NDJSON: &str = "application/x-ndjson";

/// An event as the HTTP API writes it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct EventJson {
    /// The stream sequence: the event's id.
    pub id: u64,
    /// The subject it was published to.
    pub subject: String,
    /// When it was stored, RFC 3339 UTC.
    pub timestamp: String,
    /// The payload's content type, as published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The protobuf message name of a typed payload (published over gRPC); absent for raw ones.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub data_type: String,
    /// The payload, when it is JSON or text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The payload in base64, when it is neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// The custom headers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The idempotency key it was published with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// W3C trace context of the publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    /// W3C trace state of the publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<String>,
}

impl From<Event> for EventJson {
    fn from(event: Event) -> EventJson {
        let (data, data_base64) = payload(event.content_type.as_deref(), &event.body);
        EventJson {
            id: event.id,
            subject: event.subject,
            timestamp: format_time(event.timestamp),
            content_type: event.content_type,
            data_type: event.data_type,
            data,
            data_base64,
            headers: event.headers.into_iter().collect(),
            idempotency_key: event.idempotency_key,
            trace_parent: event.trace_parent,
            trace_state: event.trace_state,
        }
    }
}

/// `data` or `data_base64` for a body of `content_type`.
pub fn payload(
    content_type: Option<&str>,
    body: &Bytes,
) -> (Option<serde_json::Value>, Option<String>) {
    let essence = content_type.map(media_type).unwrap_or_default();
    if is_json(&essence)
        && let Ok(value) = serde_json::from_slice(body)
    {
        return (Some(value), None);
    }
    if essence.starts_with("text/")
        && let Ok(text) = std::str::from_utf8(body)
    {
        return (Some(serde_json::Value::String(text.to_owned())), None);
    }
    (None, Some(STANDARD.encode(body)))
}

/// The media type of a `Content-Type` value, lowercase, without parameters.
pub fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `application/json` or a `+json` type.
pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// The request's media type, if it sent a `Content-Type`.
pub fn content_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    header_text(headers, "Content-Type")
}

/// The request header `name` as text, if sent; 400 naming it when it is not visible ASCII.
pub fn header_text(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid(name, "is not visible ASCII"))
        })
        .transpose()
}

/// True when the client asked for NDJSON rather than a JSON array.
pub fn wants_ndjson(headers: &HeaderMap) -> bool {
    accepts(headers, NDJSON) || accepts(headers, "application/ndjson")
}

/// True when the request's `Accept` names `media` (parameters and quality aside).
pub fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|accepted| media_type(accepted) == media)
}

/// Reads the whole body, up to `limit` bytes; a larger one is 413 naming `HTTP_MAX_BODY_BYTES`.
/// The declared length is checked first, so a body announced too large is refused unread. A body
/// sent with `Content-Encoding: gzip` is decompressed, within the same limit ([`gzip::decode`]).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RESOURCE_EXHAUSTED",
            format!("the request body is over {limit} bytes, the most HTTP_MAX_BODY_BYTES allows"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut body = body;
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                format!("the request body could not be read: {err}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > limit {
                return Err(too_large());
            }
            read.extend_from_slice(&data);
        }
    }
    gzip::decode(headers, read.freeze(), limit, too_large)
}

/// The query string's parameters; one given twice is 400.
pub fn query(query: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut parameters = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if parameters
            .insert(name.to_string(), value.to_string())
            .is_some()
        {
            return Err(ApiError::invalid(&name, "is given more than once"));
        }
    }
    Ok(parameters)
}

/// Parses a duration parameter (`wait`, `timeout`, `delay`, …) written as Go writes durations
/// and as the configuration takes them: `500ms`, `5s`, `1m30s`. Zero (`0s`) parses; the caller
/// decides whether it means anything.
pub fn duration(field: &str, value: &str) -> Result<Duration, ApiError> {
    crate::infra::config::go_duration_nanos(value.trim())
        // Whole nanoseconds, as Go keeps them.
        .map(|nanos| Duration::from_nanos(nanos as u64))
        .ok_or_else(|| ApiError::invalid(field, r#"is not a duration like "500ms", "5s" or "1m""#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_text_stay_readable_and_the_rest_is_base64() {
        let json = payload(
            Some("application/json; charset=utf-8"),
            &Bytes::from("{\"a\":1}"),
        );
        assert_eq!(json, (Some(serde_json::json!({"a": 1})), None));
        let broken = payload(Some("application/json"), &Bytes::from("{"));
        assert_eq!(broken, (None, Some("ew==".to_owned())));
        let text = payload(Some("text/plain"), &Bytes::from("hi"));
        assert_eq!(text, (Some(serde_json::json!("hi")), None));
        let binary = payload(None, &Bytes::from_static(&[0xff]));
        assert_eq!(binary, (None, Some("/w==".to_owned())));
    }

    #[test]
    fn queries_refuse_repeated_parameters() {
        let parsed = query(Some("from=3&limit=2&subject=a.%3E")).unwrap();
        assert_eq!(parsed["subject"], "a.>");
        let twice = query(Some("from=1&from=2")).unwrap_err();
        assert_eq!(twice.body().error.field.as_deref(), Some("from"));
    }

    #[test]
    fn durations_parse_as_go_writes_them() {
        assert_eq!(duration("wait", "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            duration("wait", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(duration("wait", "0s").unwrap(), Duration::ZERO);
        let bad = duration("wait", "5").unwrap_err();
        assert_eq!(bad.body().error.field.as_deref(), Some("wait"));
        assert!(duration("wait", "-1s").is_err());
    }
}
