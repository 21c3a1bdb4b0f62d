//! HTTP workers: a durable consumer worked over plain requests, through the server's one
//! [`Fetcher`](jetway_core::fetch::Fetcher), the one gRPC's `EventsService` Fetch, Ack and Reject
//! use (so an event fetched on one API may be settled on the other, and one set of limits,
//! `FETCH_MAX_IN_FLIGHT` and `FETCH_MAX_IN_FLIGHT_PER_CONSUMER`, counts both).
//!
//! Under `/v1/streams/{stream}/consumers/{consumer}`: `POST …/fetch?max_events=&wait=` takes a
//! batch; `POST …/ack`, `…/reject` (with `delay`, or `permanently`) and `…/extend` (more time:
//! the processing timeout starts again) take `{"ids":[…]}` and answer which ids were settled, as
//! gRPC's Ack and Reject do.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, Uri},
    routing::post,
};
use jetway_core::{
    fetch::{FetchSpec, Fetched},
    settle::{Settle, Settled},
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    auth::Caller,
    http::{
        ApiState,
        error::{ApiError, ErrorBody},
        json::{self, ApiPath, EventJson},
    },
};

/// The worker routes, to nest under `/v1`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/streams/{stream}/consumers/{consumer}/fetch", post(fetch))
        .route("/streams/{stream}/consumers/{consumer}/ack", post(ack))
        .route(
            "/streams/{stream}/consumers/{consumer}/reject",
            post(reject),
        )
        .route(
            "/streams/{stream}/consumers/{consumer}/extend",
            post(extend),
        )
}

/// A fetched event: the event, and which delivery of it this is.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FetchedJson {
    /// The event.
    #[serde(flatten)]
    pub event: EventJson,
    /// 1 on the first delivery, 2 on the first redelivery, and so on.
    pub delivery_attempt: u64,
}

/// What a fetch returns.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FetchedEventsJson {
    /// The events, in delivery order; none when none came within `wait`.
    pub events: Vec<FetchedJson>,
    /// How long the worker has to settle or extend a first delivery before it is redelivered
    /// (the consumer's processing timeout), e.g. `30s`.
    pub processing_timeout: String,
}

/// The ids to ack or extend.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct IdsJson {
    /// Ids (stream sequences) of fetched events; at most 10,000.
    pub ids: Vec<u64>,
}

/// The ids to reject, and how.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct RejectJson {
    /// Ids (stream sequences) of fetched events; at most 10,000.
    pub ids: Vec<u64>,
    /// Redeliver after this long (at least 1s, at most 168h), e.g. `30s`; unset: at once.
    pub delay: Option<String>,
    /// Never redeliver (dead-lettered, if the consumer has a dead letter stream).
    pub permanently: Option<bool>,
}

/// Which ids a settlement settled: every id is in exactly one list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct SettledJson {
    /// Settled (or extended).
    pub ids: Vec<u64>,
    /// Not in flight from a fetch on this server: never fetched, already settled, past its
    /// processing timeout (it comes again), or repeated in the list.
    pub invalid_ids: Vec<u64>,
    /// NATS could not take the settlement now; still in flight, retry them.
    pub temporary_failed_ids: Vec<u64>,
}

impl From<Settled> for SettledJson {
    fn from(settled: Settled) -> SettledJson {
        SettledJson {
            ids: settled.ids,
            invalid_ids: settled.invalid_ids,
            temporary_failed_ids: settled.temporary_failed_ids,
        }
    }
}

/// `POST /v1/streams/{stream}/consumers/{consumer}/fetch?max_events=&wait=`.
#[utoipa::path(
    post,
    path = "/v1/streams/{stream}/consumers/{consumer}/fetch",
    tag = "workers",
    summary = "Fetch a batch of events from a durable consumer",
    description = "The events stay in flight until acked, rejected, or their processing timeout \
                   passes (then they are redelivered); extend gives more time. Takes no body.",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("consumer" = String, Path, description = "The durable consumer"),
        ("max_events" = Option<u32>, Query, description = "The most events returned (default 10, at most 1000)"),
        ("wait" = Option<String>, Query, description = "How long to wait for the first event, e.g. `5s` (at most 60s; default: answer at once)"),
    ),
    responses(
        (status = 200, description = "The events (maybe none)", body = FetchedEventsJson),
        (status = 400, description = "A bad parameter or name, or a body", body = ErrorBody),
        (status = 404, description = "No such stream or consumer", body = ErrorBody),
        (status = 429, description = "FETCH_MAX_IN_FLIGHT_PER_CONSUMER, FETCH_MAX_IN_FLIGHT or the client's fetched_in_flight (AUTH_FILE) events are in flight already, named in the message", body = ErrorBody),
        (status = 503, description = "NATS is unavailable", body = ErrorBody),
    )
)]
pub async fn fetch(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath((stream, consumer)): ApiPath<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<FetchedEventsJson>, ApiError> {
    let mut query = json::query(uri.query())?;
    let max_events = query
        .remove("max_events")
        .map(|value| {
            value
                .parse::<u32>()
                .map_err(|_| ApiError::invalid("max_events", "is not a whole number"))
        })
        .transpose()?
        .unwrap_or_default();
    let wait = query
        .remove("wait")
        .map(|value| json::duration("wait", &value))
        .transpose()?;
    if let Some(unknown) = query.keys().next() {
        return Err(ApiError::invalid(
            unknown,
            "is not a parameter of this route (max_events, wait)",
        ));
    }
    if !json::read_body(&headers, body, state.max_body)
        .await?
        .is_empty()
    {
        return Err(ApiError::invalid(
            "body",
            "fetch takes no body; its parameters go in the query string (max_events, wait)",
        ));
    }
    let spec = FetchSpec {
        stream,
        consumer,
        max_events,
        wait,
        client: caller.fetch_quota(),
    };
    let fetched = state.fetcher.fetch(&spec).await.map_err(Caller::counted)?;
    Ok(Json(FetchedEventsJson {
        events: fetched.events.into_iter().map(fetched_json).collect(),
        processing_timeout: format_duration(fetched.processing_timeout),
    }))
}

fn fetched_json(fetched: Fetched) -> FetchedJson {
    FetchedJson {
        event: fetched.event.into(),
        delivery_attempt: fetched.delivery_attempt,
    }
}

/// A duration as `wait` and `delay` take it back: seconds, with a fraction if there is one
/// (`30s`, `1.5s`).
fn format_duration(duration: Duration) -> String {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        return format!("{}s", duration.as_secs());
    }
    let fraction = format!("{nanos:09}");
    format!("{}.{}s", duration.as_secs(), fraction.trim_end_matches('0'))
}

/// `POST /v1/streams/{stream}/consumers/{consumer}/ack`.
#[utoipa::path(
    post,
    path = "/v1/streams/{stream}/consumers/{consumer}/ack",
    tag = "workers",
    summary = "Acknowledge fetched events: processed, never delivered again",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("consumer" = String, Path, description = "The durable consumer"),
    ),
    request_body(content = IdsJson, content_type = "application/json"),
    responses(
        (status = 200, description = "Which ids were settled", body = SettledJson),
        (status = 400, description = "A bad body or name", body = ErrorBody),
        (status = 404, description = "No such stream or consumer", body = ErrorBody),
    )
)]
pub async fn ack(
    State(state): State<ApiState>,
    ApiPath((stream, consumer)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SettledJson>, ApiError> {
    settle_listed(&state, &stream, &consumer, &headers, body, Settle::Ack).await
}

/// `POST /v1/streams/{stream}/consumers/{consumer}/reject`.
#[utoipa::path(
    post,
    path = "/v1/streams/{stream}/consumers/{consumer}/reject",
    tag = "workers",
    summary = "Reject fetched events: redelivered (after `delay`), or never (`permanently`)",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("consumer" = String, Path, description = "The durable consumer"),
    ),
    request_body(content = RejectJson, content_type = "application/json"),
    responses(
        (status = 200, description = "Which ids were settled", body = SettledJson),
        (status = 400, description = "A bad body or name", body = ErrorBody),
        (status = 404, description = "No such stream or consumer", body = ErrorBody),
    )
)]
pub async fn reject(
    State(state): State<ApiState>,
    ApiPath((stream, consumer)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SettledJson>, ApiError> {
    let mut fields = Fields::read(&headers, body, state.max_body).await?;
    let request = RejectJson {
        ids: fields.ids()?,
        delay: fields.take("delay")?,
        permanently: fields.take("permanently")?,
    };
    fields.done()?;
    let delay = request
        .delay
        .map(|value| json::duration("delay", &value))
        .transpose()?;
    let how = match (request.permanently.unwrap_or(false), delay) {
        (true, Some(_)) => {
            return Err(ApiError::invalid(
                "delay",
                "a permanent rejection is never redelivered; leave delay out",
            ));
        }
        (true, None) => Settle::RejectPermanently,
        // The same rule as gRPC's Reject: a short delay is raised to 1s, a long one refused.
        (false, delay) => Settle::reject("delay", delay)?,
    };
    settle(&state, &stream, &consumer, &request.ids, how).await
}

/// `POST /v1/streams/{stream}/consumers/{consumer}/extend`.
#[utoipa::path(
    post,
    path = "/v1/streams/{stream}/consumers/{consumer}/extend",
    tag = "workers",
    summary = "Ask for more time: the processing timeout of each fetched event starts again",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("consumer" = String, Path, description = "The durable consumer"),
    ),
    request_body(content = IdsJson, content_type = "application/json"),
    responses(
        (status = 200, description = "Which ids were extended; they stay in flight", body = SettledJson),
        (status = 400, description = "A bad body or name", body = ErrorBody),
        (status = 404, description = "No such stream or consumer", body = ErrorBody),
    )
)]
pub async fn extend(
    State(state): State<ApiState>,
    ApiPath((stream, consumer)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SettledJson>, ApiError> {
    settle_listed(&state, &stream, &consumer, &headers, body, Settle::Ping).await
}

/// Settles, all the same way, the ids an [`IdsJson`] body lists (the body of ack and extend).
async fn settle_listed(
    state: &ApiState,
    stream: &str,
    consumer: &str,
    headers: &HeaderMap,
    body: Body,
    how: Settle,
) -> Result<Json<SettledJson>, ApiError> {
    let mut fields = Fields::read(headers, body, state.max_body).await?;
    let ids = fields.ids()?;
    fields.done()?;
    settle(state, stream, consumer, &ids, how).await
}

/// Settles `ids` of `stream`'s `consumer` through the one fetcher.
async fn settle(
    state: &ApiState,
    stream: &str,
    consumer: &str,
    ids: &[u64],
    how: Settle,
) -> Result<Json<SettledJson>, ApiError> {
    let settled = state.fetcher.settle(stream, consumer, ids, how).await?;
    Ok(Json(settled.into()))
}

/// A JSON object body, read field by field so that an error names the field at fault.
struct Fields(Map<String, Value>);

impl Fields {
    /// Reads the body: `Content-Type: application/json`, a JSON object.
    async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Fields, ApiError> {
        let media = json::content_type(headers)?.map(|value| json::media_type(&value));
        if !media.as_deref().is_some_and(json::is_json) {
            return Err(ApiError::invalid(
                "Content-Type",
                "must be application/json",
            ));
        }
        let body = json::read_body(headers, body, limit).await?;
        match serde_json::from_slice(&body) {
            Ok(Value::Object(fields)) => Ok(Fields(fields)),
            Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
            Err(err) => Err(ApiError::invalid("body", format!("is not JSON: {err}"))),
        }
    }

    /// The field `name`, if present and not null.
    fn take<T: serde::de::DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ApiError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|err| ApiError::invalid(name, err)),
        }
    }

    /// The required `ids`.
    fn ids(&mut self) -> Result<Vec<u64>, ApiError> {
        self.take("ids")?
            .ok_or_else(|| ApiError::invalid("ids", "is required: the ids of fetched events"))
    }

    /// Refuses a field the route does not take.
    fn done(self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            Some(unknown) => Err(ApiError::invalid(
                unknown,
                "is not a field of this route's body",
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_they_are_read() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_nanos(1)), "0.000000001s");
        let back = json::duration("d", &format_duration(Duration::from_millis(2250))).unwrap();
        assert_eq!(back, Duration::from_millis(2250));
    }

    #[test]
    fn body_fields_are_named_in_errors() {
        let fields = |value: Value| Fields(value.as_object().unwrap().clone());
        let mut wrong = fields(serde_json::json!({"ids": "1"}));
        assert_eq!(
            wrong.ids().unwrap_err().body().error.field.as_deref(),
            Some("ids")
        );
        let mut missing = fields(serde_json::json!({}));
        assert_eq!(
            missing.ids().unwrap_err().body().error.field.as_deref(),
            Some("ids")
        );
        let mut extra = fields(serde_json::json!({"ids": [1], "idz": [2]}));
        assert_eq!(extra.ids().unwrap(), [1]);
        assert_eq!(
            extra.done().unwrap_err().body().error.field.as_deref(),
            Some("idz")
        );
    }
}
