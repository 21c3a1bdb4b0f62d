//! Publishing over HTTP: `POST /v1/publish/{subject}` stores the body as sent, its `Content-Type`
//! kept, and answers 201 with the event's id; `POST /v1/publish` publishes a batch, a JSON array
//! or NDJSON of items, and answers one result per item. Both go through the one
//! [`Publisher`] (and [`pipeline::publish_batch`]) that gRPC's PublishEvent and PublishBatch use,
//! within the same per-client publish rate ([`Caller::spend_publishes`]).

use std::collections::BTreeMap;

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use jetway_core::{
    Error,
    pipeline::{self, Outcome},
    publish::Publication,
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Caller, Permission},
    http::{
        ApiState,
        cloudevents::{self, CE_PREFIX, CLOUDEVENTS_JSON},
        error::{ApiError, ErrorBody, ErrorDetail},
        json::{self, ApiPath, NDJSON},
    },
};

/// Request headers with this prefix become the event's custom headers, the prefix removed (and
/// the name in lowercase: HTTP header names are case-insensitive).
pub const HEADER_PREFIX: &str = "jetway-header-";

/// The id of a published event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PublishedJson {
    /// The event's id (stream sequence).
    pub id: u64,
    /// True when the idempotency key had been seen: `id` is the earlier event's.
    pub duplicate: bool,
}

/// `POST /v1/publish/{subject}`: one event, the body as its payload.
#[utoipa::path(
    post,
    path = "/v1/publish/{subject}",
    tag = "publish",
    summary = "Publish one event",
    description = "The body is the payload, stored as sent with its Content-Type. A CloudEvent \
                   is accepted in binary mode (`ce-*` headers, kept as headers; `ce-id` is the \
                   idempotency key) and in structured mode (`application/cloudevents+json`: \
                   `data` or `data_base64` is the payload, `datacontenttype` its content type, \
                   the other attributes `ce-*` headers).",
    params(
        ("subject" = String, Path, description = "The subject to publish to"),
        ("Idempotency-Key" = Option<String>, Header, description = "Deduplicates retries"),
        ("Expected-Last-Id" = Option<u64>, Header, description = "Publish only if the subject's last event has this id"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context"),
    ),
    request_body(content = Vec<u8>, content_type = "*/*", description = "The payload; custom headers are sent as `Jetway-Header-<name>`"),
    responses(
        (status = 201, description = "Stored", body = PublishedJson),
        (status = 400, description = "A bad subject or header", body = ErrorBody),
        (status = 401, description = "No or bad credentials (with AUTH_FILE)", body = ErrorBody),
        (status = 403, description = "The client may not publish on the subject", body = ErrorBody),
        (status = 404, description = "No stream captures the subject", body = ErrorBody),
        (status = 409, description = "Expected-Last-Id is not the last id", body = ErrorBody),
        (status = 413, description = "The body is over HTTP_MAX_BODY_BYTES", body = ErrorBody),
        (status = 429, description = "The client is over its publish_per_second limit", body = ErrorBody),
        (status = 503, description = "NATS is unavailable", body = ErrorBody),
        (status = 504, description = "Not acknowledged in time; retry with the same key", body = ErrorBody),
    )
)]
pub async fn publish_one(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(subject): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The subject's publish permission was checked on the path (auth::rpcs::RULES).
    caller.spend_publishes(1)?;
    let body = json::read_body(&headers, body, state.max_body).await?;
    let structured = json::content_type(&headers)?
        .is_some_and(|value| json::media_type(&value) == CLOUDEVENTS_JSON);
    let publication = if structured {
        structured_cloud_event(subject, &headers, &body)?
    } else {
        from_headers(subject, &headers, body)?
    };
    let published = state.publisher.publish(publication).await?;
    Ok((
        StatusCode::CREATED,
        Json(PublishedJson {
            id: published.id,
            duplicate: published.duplicate,
        }),
    )
        .into_response())
}

/// The publication of `POST /v1/publish/{subject}`: its headers say all but the payload.
fn from_headers(
    subject: String,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Publication, ApiError> {
    let text = |name: &str| json::header_text(headers, name);
    let expected_last_id = text("Expected-Last-Id")?
        .map(|value| {
            value
                .parse::<u64>()
                .map_err(|_| ApiError::invalid("Expected-Last-Id", "is not a whole number"))
        })
        .transpose()?;
    let mut custom = Vec::new();
    let mut cloud_event = false;
    for (name, value) in headers {
        let kept = match name.as_str().strip_prefix(HEADER_PREFIX) {
            Some(short) => short,
            // A CloudEvent in binary mode: its attributes are kept as they came, `ce-` and all.
            None if name.as_str().starts_with(CE_PREFIX) => {
                cloud_event = true;
                name.as_str()
            }
            None => continue,
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid(name.as_str(), "is not visible ASCII"))?;
        custom.push((kept.to_owned(), value.to_owned()));
    }
    custom.sort();
    let mut idempotency_key = text("Idempotency-Key")?;
    if cloud_event {
        for required in ["ce-specversion", "ce-id", "ce-source", "ce-type"] {
            if !headers.contains_key(required) {
                return Err(ApiError::invalid(
                    required,
                    "is required in a CloudEvent (binary mode: any ce- header makes one)",
                ));
            }
        }
        let id = text("ce-id")?;
        if idempotency_key.is_some() && idempotency_key != id {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "differs from ce-id, which is a CloudEvent's idempotency key; send one of them",
            ));
        }
        idempotency_key = id;
    }
    Ok(Publication {
        subject,
        data_type: String::new(),
        content_type: json::content_type(headers)?,
        body,
        headers: custom,
        timestamp: None,
        idempotency_key,
        expected_last_id,
        trace_parent: text("traceparent")?,
        trace_state: text("tracestate")?,
    })
}

/// A CloudEvent in structured mode (`application/cloudevents+json`): `data` (or `data_base64`)
/// becomes the payload with `datacontenttype` as its content type, `id` the idempotency key, and
/// every other attribute a header `ce-<name>`, as binary mode stores them. The path's subject is
/// where it is published; a CloudEvents `subject` attribute is kept as `ce-subject`.
fn structured_cloud_event(
    subject: String,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Publication, ApiError> {
    let serde_json::Value::Object(mut attributes) = serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid("body", format!("is not JSON: {err}")))?
    else {
        return Err(ApiError::invalid(
            "body",
            "must be a JSON object (a CloudEvent)",
        ));
    };
    for required in ["specversion", "id", "source", "type"] {
        if !attributes
            .get(required)
            .is_some_and(serde_json::Value::is_string)
        {
            return Err(ApiError::invalid(
                required,
                "is a required string attribute of a CloudEvent",
            ));
        }
    }
    let data = attributes.remove("data");
    let data_base64 = attributes.remove("data_base64");
    let content_type = match attributes.remove("datacontenttype") {
        None => None,
        Some(serde_json::Value::String(value)) => Some(value),
        Some(_) => return Err(ApiError::invalid("datacontenttype", "must be a string")),
    };
    // A CloudEvent may have no data at all: an empty payload.
    let data_base64 = match (&data, data_base64) {
        (None, None) => Some(serde_json::Value::String(String::new())),
        (_, data_base64) => data_base64,
    };
    let item = BatchItem {
        subject,
        data,
        data_base64: match data_base64 {
            None => None,
            Some(serde_json::Value::String(value)) => Some(value),
            Some(_) => return Err(ApiError::invalid("data_base64", "must be a string")),
        },
        content_type,
        headers: BTreeMap::new(),
        idempotency_key: None,
        expected_last_id: None,
    };
    let mut publication = item_publication(item, |field| field.to_owned())?;
    for (name, value) in attributes {
        let value = match value {
            serde_json::Value::String(value) => value,
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => value.to_string(),
            _ => {
                return Err(ApiError::invalid(
                    &name,
                    "a CloudEvent attribute must be a string, number or boolean",
                ));
            }
        };
        if name == "id" {
            publication.idempotency_key = Some(value.clone());
        }
        publication
            .headers
            .push((cloudevents::header_name(&name), value));
    }
    publication.headers.sort();
    let with_headers = from_headers(String::new(), headers, Bytes::new())?;
    publication.expected_last_id = with_headers.expected_last_id;
    publication.trace_parent = with_headers.trace_parent;
    publication.trace_state = with_headers.trace_state;
    Ok(publication)
}

/// One item of a batch.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// The subject to publish to.
    pub subject: String,
    /// A JSON payload, stored as JSON (`content_type` defaults to `application/json`); a string
    /// with a non-JSON `content_type` is stored as that text.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// A binary payload in base64 (`content_type` defaults to `application/octet-stream`).
    #[serde(default)]
    pub data_base64: Option<String>,
    /// The payload's content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Custom headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Deduplicates retries, as the `Idempotency-Key` header does.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Publish only if the subject's last event has this id.
    #[serde(default)]
    pub expected_last_id: Option<u64>,
}

/// The result of one batch item: `id` and `duplicate`, or `error`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ItemResult {
    /// Stored.
    Published(PublishedJson),
    /// Not stored, and why.
    Failed {
        /// Why, as the error of a single publish would say, with its HTTP status.
        error: ItemError,
    },
}

/// Why a batch item failed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ItemError {
    /// The HTTP status a single publish would have answered.
    pub status: u16,
    /// The error as a single publish would have answered it.
    #[serde(flatten)]
    pub detail: ErrorDetail,
}

/// The answer to a batch: one result per item, in order.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BatchResults {
    /// One per item, in the order sent.
    pub results: Vec<ItemResult>,
}

/// `POST /v1/publish`: a batch, as a JSON array of [`BatchItem`]s or NDJSON (one per line). An
/// item that does not decode fails alone, naming its place (`items[3].subject`).
#[utoipa::path(
    post,
    path = "/v1/publish",
    tag = "publish",
    summary = "Publish a batch",
    description = "A JSON array of items, or NDJSON (one item per line); at most 1,000 items.",
    request_body(
        content(
            (Vec<BatchItem> = "application/json"),
            (BatchItem = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 200, description = "One result per item, in order", body = BatchResults),
        (status = 400, description = "Not a JSON array or NDJSON, or no items", body = ErrorBody),
        (status = 401, description = "No or bad credentials (with AUTH_FILE)", body = ErrorBody),
        (status = 403, description = "The client may not publish on an item's subject: nothing is published", body = ErrorBody),
        (status = 413, description = "The body is over HTTP_MAX_BODY_BYTES", body = ErrorBody),
        (status = 429, description = "The batch is over the client's publish_per_second limit", body = ErrorBody),
    )
)]
pub async fn publish_batch(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchResults>, ApiError> {
    let media = json::content_type(&headers)?.map(|value| json::media_type(&value));
    let body = json::read_body(&headers, body, state.max_body).await?;
    let items: Vec<serde_json::Value> = match media.as_deref() {
        Some(NDJSON | "application/ndjson") => body
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_slice(line)
                    .map_err(|err| ApiError::invalid(&format!("items[{i}]"), err))
            })
            .collect::<Result<_, _>>()?,
        Some("application/json") => serde_json::from_slice(&body)
            .map_err(|err| ApiError::invalid("items", format!("is not a JSON array: {err}")))?,
        _ => {
            return Err(ApiError::invalid(
                "Content-Type",
                format!("must be application/json (an array of items) or {NDJSON}"),
            ));
        }
    };
    if items.is_empty() {
        return Err(ApiError::invalid("items", "send at least one item"));
    }
    let trace_parent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok());
    let trace_state = headers
        .get("tracestate")
        .and_then(|value| value.to_str().ok());
    let publications = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let mut publication = batch_publication(i, item)?;
            publication.trace_parent = trace_parent.map(str::to_owned);
            publication.trace_state = trace_state.map(str::to_owned);
            Ok::<_, Error>(publication)
        })
        .collect::<Vec<_>>();
    // As gRPC's PublishBatch: the whole batch is refused if one subject is not allowed, so
    // nothing is half published; an item that does not decode fails alone, as it would anyway.
    for publication in publications.iter().flatten() {
        caller.permit(Permission::Publish, &publication.subject)?;
    }
    caller.spend_publishes(publications.len())?;
    let outcomes = pipeline::publish_batch(&state.publisher, publications).await?;
    Ok(Json(BatchResults {
        results: outcomes.into_iter().map(item_result).collect(),
    }))
}

/// Decodes the batch item at `index`; its errors name `items[index].<field>`.
fn batch_publication(index: usize, item: serde_json::Value) -> Result<Publication, Error> {
    let at = |field: &str| format!("items[{index}].{field}");
    let item: BatchItem = serde_json::from_value(item).map_err(|err| {
        let reason = err.to_string();
        // serde names a missing or unknown field in backquotes: the field, named in full.
        match reason.split('`').nth(1) {
            Some(field) => Error::invalid(at(field), &reason),
            None => Error::invalid(format!("items[{index}]"), &reason),
        }
    })?;
    item_publication(item, at)
}

/// The publication of a batch item (or a structured CloudEvent, which has the same payload
/// fields); `at` names a field as the client knows it.
fn item_publication(item: BatchItem, at: impl Fn(&str) -> String) -> Result<Publication, Error> {
    let (content_type, body) = match (item.data, item.data_base64) {
        (Some(serde_json::Value::String(text)), None)
            if item
                .content_type
                .as_deref()
                .is_some_and(|value| !json::is_json(&json::media_type(value))) =>
        {
            (item.content_type, Bytes::from(text))
        }
        (Some(value), None) => (
            Some(
                item.content_type
                    .unwrap_or_else(|| "application/json".to_owned()),
            ),
            Bytes::from(value.to_string()),
        ),
        (None, Some(encoded)) => (
            Some(
                item.content_type
                    .unwrap_or_else(|| "application/octet-stream".to_owned()),
            ),
            STANDARD
                .decode(encoded)
                .map(Bytes::from)
                .map_err(|err| Error::invalid(at("data_base64"), err))?,
        ),
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                at("data"),
                "set data or data_base64, not both",
            ));
        }
        (None, None) => return Err(Error::invalid(at("data"), "set data or data_base64")),
    };
    Ok(Publication {
        subject: item.subject,
        data_type: String::new(),
        content_type,
        body,
        headers: item.headers.into_iter().collect(),
        timestamp: None,
        idempotency_key: item.idempotency_key,
        expected_last_id: item.expected_last_id,
        trace_parent: None,
        trace_state: None,
    })
}

fn item_result(outcome: Outcome) -> ItemResult {
    match outcome {
        Ok(published) => ItemResult::Published(PublishedJson {
            id: published.id,
            duplicate: published.duplicate,
        }),
        Err(err) => {
            let err = ApiError::from(err);
            ItemResult::Failed {
                error: ItemError {
                    status: err.status().as_u16(),
                    detail: err.body().error.clone(),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_take_json_text_or_base64() {
        let item = |value| batch_publication(2, value);
        let json = item(serde_json::json!({"subject": "a", "data": {"n": 1}})).unwrap();
        assert_eq!(json.content_type.as_deref(), Some("application/json"));
        assert_eq!(json.body, Bytes::from("{\"n\":1}"));
        let text =
            item(serde_json::json!({"subject": "a", "data": "hi", "content_type": "text/plain"}))
                .unwrap();
        assert_eq!(text.body, Bytes::from("hi"));
        let binary = item(serde_json::json!({"subject": "a", "data_base64": "/w=="})).unwrap();
        assert_eq!(binary.body, Bytes::from_static(&[0xff]));
        let missing = item(serde_json::json!({"data": 1})).unwrap_err();
        assert_eq!(missing.field(), Some("items[2].subject"));
        let neither = item(serde_json::json!({"subject": "a"})).unwrap_err();
        assert_eq!(neither.field(), Some("items[2].data"));
        let unknown = item(serde_json::json!({"subject": "a", "data": 1, "x": 1})).unwrap_err();
        assert_eq!(unknown.field(), Some("items[2].x"));
    }
}
