//! Declaring consumers over HTTP: `PUT /v1/streams/{stream}/consumers/{consumer}` creates the
//! durable consumer or updates it in place, as `jetway.events.v1` EnsureConsumer does, through the
//! same [`consumers::ensure_consumer`]. The path names it, so HTTP never creates an unnamed
//! consumer; its delivery policy is written in full, as EnsureConsumer writes it.

use axum::{Json, body::Body, extract::State, http::HeaderMap};
use jetway_core::{
    Error, admin,
    consumers::{self, ConsumerSpec, DeliveryPolicy},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Caller, Permission},
    http::{
        ApiState,
        admin::{ConsumerInfoJson, consumer_json},
        error::{ApiError, ErrorBody},
        fields, json,
        json::ApiPath,
        reads,
    },
};

/// A consumer's declaration, EnsureConsumer's fields as JSON.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSpecJson {
    /// The subjects it delivers (at least one; wildcards allowed).
    pub subjects: Vec<String>,
    /// Where a new consumer starts: `start`, `end`, an id or an RFC 3339 time. Absent: new
    /// events only. Ignored when the consumer exists.
    pub from: Option<String>,
    /// How long a delivered event may stay unsettled (`"30s"`). Absent: 30 s on create, the
    /// current value on update.
    pub processing_timeout: Option<String>,
    /// Deliveries of one event before it is dead-lettered. Absent: no limit.
    pub max_deliveries: Option<u32>,
    /// Processing timeouts per delivery, the last one repeating (`["1s", "10s"]`).
    pub backoff: Vec<String>,
    /// Where events that run out of deliveries or are rejected for good go.
    pub dead_letter_stream: Option<String>,
}

/// `PUT /v1/streams/{stream}/consumers/{consumer}`: see the module docs.
#[utoipa::path(
    put,
    path = "/v1/streams/{stream}/consumers/{consumer}",
    tag = "admin",
    summary = "Create or update a durable consumer",
    description = "As jetway.events.v1 EnsureConsumer. Needs manage on the stream, and on \
                   `dead_letter_stream` if set.",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("consumer" = String, Path, description = "The consumer: letters, digits, `_` and `-`"),
    ),
    request_body(content = ConsumerSpecJson, content_type = "application/json"),
    responses(
        (status = 200, description = "The consumer as declared", body = ConsumerInfoJson),
        (status = 400, description = "A bad name or field", body = ErrorBody),
        (status = 401, description = "No or bad credentials (with AUTH_FILE)", body = ErrorBody),
        (status = 403, description = "The client may not manage the stream or dead-letter stream", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody),
    )
)]
pub async fn ensure_consumer(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath((stream, consumer)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ConsumerInfoJson>, ApiError> {
    // Manage on the stream was checked on the path (auth::rpcs::RULES).
    let body = json::read_body(&headers, body, state.max_body).await?;
    let declared: ConsumerSpecJson = fields::object(&headers, &body)?;
    let spec = consumer_spec(stream, consumer, declared)?;
    // Dead letters are written into that stream: it must be the client's too, as on gRPC.
    if let Some(dead_letters) = spec
        .delivery
        .as_ref()
        .and_then(|policy| policy.dead_letter_stream.as_ref())
    {
        caller.permit(Permission::Manage, dead_letters)?;
    }
    let name = consumers::ensure_consumer(&state.nats, &spec, &state.unnamed)
        .await
        .map_err(http_field)?;
    let info = admin::consumer_info(&state.nats, &spec.stream, &name).await?;
    Ok(Json(consumer_json(info)))
}

/// The core spec of a declaration, its fields named as the client sent them.
fn consumer_spec(
    stream: String,
    consumer: String,
    declared: ConsumerSpecJson,
) -> Result<ConsumerSpec, ApiError> {
    let backoff = declared
        .backoff
        .iter()
        .enumerate()
        .map(|(i, delay)| fields::duration(&format!("backoff[{i}]"), delay))
        .collect::<Result<_, _>>()?;
    Ok(ConsumerSpec {
        from: declared
            .from
            .map(|from| reads::pointer("from", &from))
            .transpose()?,
        processing_timeout: declared
            .processing_timeout
            .map(|timeout| fields::duration("processing_timeout", &timeout))
            .transpose()?,
        delivery: Some(DeliveryPolicy {
            max_deliveries: declared.max_deliveries,
            backoff,
            dead_letter_stream: declared.dead_letter_stream.filter(|s| !s.is_empty()),
        }),
        stream,
        name: Some(consumer),
        subjects: declared.subjects,
    })
}

/// Core names the consumer `name`, as EnsureConsumer's request does; here the path names it.
fn http_field(err: Error) -> Error {
    match err.field() {
        Some("name") => Error::new(err.kind(), err.message().replacen("name", "consumer", 1))
            .with_field("consumer"),
        _ => err,
    }
}
