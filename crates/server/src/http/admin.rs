//! Administration over HTTP, through the same [`admin`], [`streams`], [`consumers`] and
//! [`dead_letters`] functions as gRPC's AdminService and EnsureStream/DeleteConsumer: streams
//! (list, info, ensure, delete, purge), consumers (list, info, delete), dead letters (list,
//! redrive). Durations are written as protobuf's JSON writes them (`"90s"`), times in RFC 3339.

use std::collections::BTreeMap;

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
};
use futures::{StreamExt, TryStreamExt};
use jetway_api::jetway::admin::v1::RedriveDeadLettersRequest;
use jetway_core::{
    Error, admin, consumers,
    dead_letters::{self, DeadLetter, ListSpec, Reason},
    format::format_time,
    info::{ConsumerInfo, RetentionKind, StreamInfo},
    streams::{self, Discard, Retention, SourceSpec, StreamSource, StreamSpec},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Caller, Permission},
    codec::admin::selection,
    http::{
        ApiState,
        error::{ApiError, ErrorBody},
        fields::{self, format_duration},
        json::{self, ApiPath, EventJson},
        kv::{StorageJson, no_more},
        reads,
    },
};

/// A stream's declaration, for `PUT /v1/streams/{stream}`: as EnsureStream, it creates the
/// stream or updates it in place. Exactly one of `subjects`, `mirror` and `sources` says where its
/// events come from.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSpecJson {
    /// The subjects it captures (`orders.>`); an empty list captures the stream's own name.
    pub subjects: Option<Vec<String>>,
    /// An exact copy of another stream.
    pub mirror: Option<SourceJson>,
    /// The events of several other streams.
    pub sources: Option<Vec<SourceJson>>,
    /// Events older than this are removed (`"24h"`). Absent: no age limit.
    pub max_age: Option<String>,
    /// Most events kept. Absent: no limit.
    pub max_events: Option<u64>,
    /// Most events kept per subject. Absent: no limit.
    pub max_events_per_subject: Option<u64>,
    /// Most bytes kept. Absent: no limit.
    pub max_bytes: Option<u64>,
    /// At a limit: `old` (the default) removes the oldest events, `new` refuses new ones.
    pub discard: Option<DiscardJson>,
    /// With `discard: new`, apply `max_events_per_subject` per subject.
    pub discard_new_per_subject: Option<bool>,
    /// `file` (the default) or `memory`.
    pub storage: Option<StorageJson>,
    /// Copies a NATS cluster keeps. Absent: 1.
    pub replicas: Option<u32>,
    /// How long idempotency keys are remembered (`"2m"`, the default, or `max_age` if shorter).
    pub deduplication_window: Option<String>,
    /// Largest event body accepted, in bytes. Absent: NATS's max payload.
    pub max_event_size: Option<u32>,
}

/// A stream another one copies.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SourceJson {
    /// The source stream.
    pub name: String,
    /// Where to start copying: `start` (the default), `end`, an id, or an RFC 3339 time.
    pub from: Option<String>,
    /// Only events on these subjects (at most one).
    pub filter_subjects: Vec<String>,
}

/// What happens when a stream reaches a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiscardJson {
    /// The oldest events are removed.
    Old,
    /// New events are refused.
    New,
}

/// A stream's configuration and state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamInfoJson {
    /// The stream's name.
    pub name: String,
    /// When it was created, RFC 3339 UTC.
    pub created: String,
    /// How it is configured.
    pub config: StreamConfigJson,
    /// What it holds.
    pub state: StreamStateJson,
}

/// A stream's configuration.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamConfigJson {
    /// The subjects it captures.
    pub subjects: Vec<String>,
    /// The stream it mirrors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// The streams it aggregates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// `limits`, `interest` or `work_queue`.
    pub retention: &'static str,
    /// Events older than this are removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Most events kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_events: Option<u64>,
    /// Most events kept per subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_events_per_subject: Option<u64>,
    /// Most bytes kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// `old` or `new`.
    pub discard: DiscardJson,
    /// `file` or `memory`.
    pub storage: StorageJson,
    /// Copies kept.
    pub replicas: u32,
    /// How long idempotency keys are remembered.
    pub deduplication_window: String,
    /// Largest event body accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_event_size: Option<u32>,
    /// The stream's description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// What a stream holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamStateJson {
    /// Events stored.
    pub events: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// The first stored event's id.
    pub first_id: u64,
    /// When the first stored event was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_time: Option<String>,
    /// The last stored event's id.
    pub last_id: u64,
    /// When the last stored event was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
    /// Consumers on the stream.
    pub consumer_count: u32,
    /// Subjects with events.
    pub subject_count: u64,
    /// Events deleted in between `first_id` and `last_id`.
    pub deleted_count: u64,
}

/// A page of streams.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamPage {
    /// The streams, by name.
    pub streams: Vec<StreamInfoJson>,
    /// Pass as `page_token` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A stream with its subjects' event counts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamDetailsJson {
    /// The stream.
    #[serde(flatten)]
    pub info: StreamInfoJson,
    /// Events per subject (matching `subject_filter`), at most 1,000 subjects.
    pub subjects: BTreeMap<String, u64>,
    /// More subjects matched than `subjects` holds.
    pub subjects_truncated: bool,
}

/// A consumer's configuration and state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsumerInfoJson {
    /// Its stream.
    pub stream: String,
    /// Its name.
    pub name: String,
    /// Whether it is durable (named).
    pub durable: bool,
    /// When it was created, RFC 3339 UTC.
    pub created: String,
    /// The subjects it delivers.
    pub subjects: Vec<String>,
    /// How long a delivered event may stay unsettled before it is delivered again.
    pub processing_timeout: String,
    /// Deliveries before an event is dead-lettered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    /// Redelivery delays.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backoff: Vec<String>,
    /// Where events that exhaust their deliveries go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_stream: Option<String>,
    /// Whether clients pull (fetch) from it.
    pub pull: bool,
    /// Events not yet delivered.
    pub pending: u64,
    /// Events delivered and not yet settled.
    pub ack_pending: u64,
    /// Events delivered more than once.
    pub redelivered: u64,
    /// Pull requests waiting.
    pub waiting: u64,
    /// The last delivered event's id.
    pub last_delivered_id: u64,
    /// Every event up to this id is settled.
    pub ack_floor_id: u64,
    /// When a client last pulled or was delivered to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
}

/// A page of consumers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsumerPage {
    /// The consumers, by name.
    pub consumers: Vec<ConsumerInfoJson>,
    /// Pass as `page_token` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// What `POST /v1/streams/{stream}/purge` removes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PurgeJson {
    /// Only events on subjects matching this filter. Absent: all.
    pub subject: Option<String>,
    /// Keep the newest this many (of those matching).
    pub keep: Option<u64>,
    /// Required to purge one of Jetway's internal streams.
    pub force: Option<bool>,
}

/// How many events a purge removed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Purged {
    /// Events removed.
    pub purged: u64,
}

/// A dead letter: an event a consumer gave up on, with why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetterJson {
    /// Its id in the dead-letter stream (what a redrive takes).
    pub id: u64,
    /// The stream the event came from.
    pub stream: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// `max_deliveries` or `rejected`.
    pub reason: &'static str,
    /// How many times it was delivered.
    pub attempts: u64,
    /// When it was dead-lettered, RFC 3339 UTC.
    pub time: String,
    /// The event, with its id in its own stream.
    pub event: EventJson,
}

/// Which dead letters to redrive: `ids`, or `all` (narrowed by `stream` and `consumer`, at most
/// `limit`, 1,000 by default and at most).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedriveJson {
    /// These dead letters.
    pub ids: Vec<u64>,
    /// Every dead letter stored now, oldest first.
    pub all: bool,
    /// With `all`: only those from this stream.
    pub stream: String,
    /// With `all`: only those from this consumer.
    pub consumer: String,
    /// With `all`: the most redriven (0: 1,000).
    pub limit: u32,
}

/// What a redrive did; every id is in exactly one list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RedrivenJson {
    /// Published again.
    pub redriven: Vec<RedrivenEvent>,
    /// Not dead letters of this stream, or repeated.
    pub invalid_ids: Vec<u64>,
    /// Not published now; still dead letters, try again.
    pub temporary_failed_ids: Vec<u64>,
}

/// A dead letter published again.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RedrivenEvent {
    /// The dead letter's id.
    pub id: u64,
    /// The id of the event published again.
    pub event_id: u64,
}

fn stream_json(info: StreamInfo) -> StreamInfoJson {
    let settings = info.settings;
    let state = info.state;
    StreamInfoJson {
        name: info.name,
        created: format_time(info.created),
        config: StreamConfigJson {
            subjects: settings.subjects,
            mirror: settings.mirror,
            sources: settings.sources,
            retention: match settings.retention {
                RetentionKind::Limits => "limits",
                RetentionKind::Interest => "interest",
                RetentionKind::WorkQueue => "work_queue",
            },
            max_age: settings.max_age.map(format_duration),
            max_events: settings.max_events,
            max_events_per_subject: settings.max_events_per_subject,
            max_bytes: settings.max_bytes,
            discard: match settings.discard {
                Discard::Old => DiscardJson::Old,
                Discard::New => DiscardJson::New,
            },
            storage: settings.storage.into(),
            replicas: settings.replicas,
            deduplication_window: format_duration(settings.deduplication_window),
            max_event_size: settings.max_event_size,
            description: settings.description,
        },
        state: StreamStateJson {
            events: state.events,
            bytes: state.bytes,
            first_id: state.first_id,
            first_time: state.first_time.map(format_time),
            last_id: state.last_id,
            last_time: state.last_time.map(format_time),
            consumer_count: state.consumer_count,
            subject_count: state.subject_count,
            deleted_count: state.deleted_count,
        },
    }
}

pub(crate) fn consumer_json(info: ConsumerInfo) -> ConsumerInfoJson {
    ConsumerInfoJson {
        stream: info.stream,
        name: info.name,
        durable: info.durable,
        created: format_time(info.created),
        subjects: info.subjects,
        processing_timeout: format_duration(info.processing_timeout),
        max_deliveries: info.max_deliveries,
        backoff: info.backoff.into_iter().map(format_duration).collect(),
        dead_letter_stream: info.dead_letter_stream,
        pull: info.pull,
        pending: info.pending,
        ack_pending: info.ack_pending,
        redelivered: info.redelivered,
        waiting: info.waiting,
        last_delivered_id: info.last_delivered_id,
        ack_floor_id: info.ack_floor_id,
        last_active: info.last_active.map(format_time),
    }
}

fn dead_letter_json(dead_letter: DeadLetter) -> DeadLetterJson {
    DeadLetterJson {
        id: dead_letter.id,
        stream: dead_letter.stream,
        consumer: dead_letter.consumer,
        reason: match dead_letter.reason {
            Reason::MaxDeliveries => "max_deliveries",
            Reason::Rejected => "rejected",
        },
        attempts: dead_letter.attempts,
        time: format_time(dead_letter.time),
        event: dead_letter.event.into(),
    }
}

/// The query's parameters, only those named in `known`.
fn parameters(uri: &Uri, known: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut query = json::query(uri.query())?;
    let taken = known
        .iter()
        .filter_map(|name| query.remove_entry(*name))
        .collect();
    no_more(&query, &known.join(", "))?;
    Ok(taken)
}

/// A boolean query parameter: `true` or `false`.
fn flag(query: &BTreeMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::invalid(name, "is not true or false")),
    }
}

/// A whole-number query parameter.
fn number(query: &BTreeMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    query
        .get(name)
        .map(|value| {
            value
                .parse()
                .map_err(|_| ApiError::invalid(name, "is not a whole number"))
        })
        .transpose()
}

/// `GET /v1/streams?page_token=`: one page of streams.
#[utoipa::path(
    get,
    path = "/v1/streams",
    tag = "admin",
    summary = "List streams",
    description = "Every stream of the NATS account, by name, up to 256 per page.",
    params(("page_token" = Option<String>, Query, description = "The `next_page_token` of the page before")),
    responses(
        (status = 200, description = "A page of streams", body = StreamPage),
        (status = 400, description = "A bad page token", body = ErrorBody),
    )
)]
pub async fn list_streams(
    State(state): State<ApiState>,
    caller: Caller,
    uri: Uri,
) -> Result<Json<StreamPage>, ApiError> {
    let query = parameters(&uri, &["page_token"])?;
    let token = query.get("page_token").map_or("", String::as_str);
    let page = admin::list_streams(&state.nats, token).await?;
    // As gRPC's ListStreams: a page may come out shorter, the client sees only its streams.
    Ok(Json(StreamPage {
        streams: page
            .items
            .into_iter()
            .filter(|info| caller.may(Permission::See, &info.name))
            .map(stream_json)
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

/// `GET /v1/streams/{stream}?subject_filter=`: a stream's configuration, state and subjects.
#[utoipa::path(
    get,
    path = "/v1/streams/{stream}",
    tag = "admin",
    summary = "A stream's info",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("subject_filter" = Option<String>, Query, description = "Count events only on subjects matching this filter"),
    ),
    responses(
        (status = 200, description = "The stream", body = StreamDetailsJson),
        (status = 400, description = "A bad name or filter", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody),
    )
)]
pub async fn stream_info(
    State(state): State<ApiState>,
    ApiPath(stream): ApiPath<String>,
    uri: Uri,
) -> Result<Json<StreamDetailsJson>, ApiError> {
    let query = parameters(&uri, &["subject_filter"])?;
    let filter = query.get("subject_filter").map_or("", String::as_str);
    let details = admin::stream_info(&state.nats, &stream, filter).await?;
    Ok(Json(StreamDetailsJson {
        info: stream_json(details.info),
        subjects: details.subjects.into_iter().collect(),
        subjects_truncated: details.subjects_truncated,
    }))
}

/// `PUT /v1/streams/{stream}`: creates the stream or updates it in place.
#[utoipa::path(
    put,
    path = "/v1/streams/{stream}",
    tag = "admin",
    summary = "Create or update a stream",
    description = "As EnsureStream. Exactly one of `subjects`, `mirror` and `sources`.",
    params(("stream" = String, Path, description = "The stream: letters, digits, `_` and `-`")),
    request_body(content = StreamSpecJson, content_type = "application/json"),
    responses(
        (status = 204, description = "The stream is as declared"),
        (status = 400, description = "A bad name or field", body = ErrorBody),
        (status = 409, description = "A source stream does not exist, or JetStream refused the change", body = ErrorBody),
    )
)]
pub async fn ensure_stream(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(stream): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let body = json::read_body(&headers, body, state.max_body).await?;
    let spec: StreamSpecJson = fields::object(&headers, &body)?;
    let spec = stream_spec(stream, spec)?;
    caller.permit_stream(&spec)?;
    streams::ensure_stream(&state.nats, &spec)
        .await
        .map_err(http_field)?;
    Ok(StatusCode::NO_CONTENT)
}

/// EnsureStream's fields as [`StreamSpecJson`] names them: core names them as the gRPC request
/// does (`retention_policy.max_age`, `subjects.subjects[0]`).
fn http_field(err: Error) -> Error {
    const RENAMED: [(&str, &str); 7] = [
        ("name", "stream"),
        ("source", "subjects"),
        ("subjects.subjects", "subjects"),
        ("aggregate.sources", "sources"),
        ("retention_policy.", ""),
        ("storage.replicas", "replicas"),
        ("storage.type", "storage"),
    ];
    let Some(field) = err.field() else {
        return err;
    };
    let renamed = RENAMED.iter().find_map(|(grpc, http)| {
        let rest = field.strip_prefix(grpc)?;
        // A whole name, or a prefix of one (`subjects.subjects[0]`).
        (rest.is_empty() || rest.starts_with('[') || grpc.ends_with('.'))
            .then(|| format!("{http}{rest}"))
    });
    match renamed {
        Some(renamed) => {
            Error::new(err.kind(), err.message().replacen(field, &renamed, 1)).with_field(renamed)
        }
        None => err,
    }
}

/// The core spec of a declaration; its fields are named as the client sent them.
fn stream_spec(name: String, spec: StreamSpecJson) -> Result<StreamSpec, ApiError> {
    let source = |field: &str, source: SourceJson| -> Result<SourceSpec, ApiError> {
        Ok(SourceSpec {
            name: source.name,
            from: source
                .from
                .map(|from| reads::pointer(&format!("{field}.from"), &from))
                .transpose()?,
            filter_subjects: source.filter_subjects,
        })
    };
    let source = match (spec.subjects, spec.mirror, spec.sources) {
        (None, None, None) => None,
        (Some(subjects), None, None) => Some(StreamSource::Subjects(subjects)),
        (None, Some(mirror), None) => Some(StreamSource::Mirror(source("mirror", mirror)?)),
        (None, None, Some(sources)) => Some(StreamSource::Aggregate(
            sources
                .into_iter()
                .enumerate()
                .map(|(i, s)| source(&format!("sources[{i}]"), s))
                .collect::<Result<_, _>>()?,
        )),
        _ => {
            return Err(ApiError::invalid(
                "subjects",
                "set exactly one of subjects, mirror and sources",
            ));
        }
    };
    let duration = |field: &str, value: Option<String>| {
        value
            .map(|value| fields::duration(field, &value))
            .transpose()
    };
    Ok(StreamSpec {
        name,
        source,
        retention: Retention {
            max_age: duration("max_age", spec.max_age)?,
            max_events: spec.max_events,
            max_events_per_subject: spec.max_events_per_subject,
            max_bytes: spec.max_bytes,
            discard: match spec.discard {
                None | Some(DiscardJson::Old) => Discard::Old,
                Some(DiscardJson::New) => Discard::New,
            },
            discard_new_per_subject: spec.discard_new_per_subject.unwrap_or(false),
        },
        storage: spec.storage.map(Into::into),
        replicas: spec.replicas,
        dedupe_window: duration("deduplication_window", spec.deduplication_window)?,
        max_event_size: spec.max_event_size,
    })
}

/// `DELETE /v1/streams/{stream}?force=`: deletes a stream with its events and consumers.
#[utoipa::path(
    delete,
    path = "/v1/streams/{stream}",
    tag = "admin",
    summary = "Delete a stream",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("force" = Option<bool>, Query, description = "Required for one of Jetway's internal streams"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A bad name or parameter", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody),
        (status = 409, description = "An internal stream without force", body = ErrorBody),
    )
)]
pub async fn delete_stream(
    State(state): State<ApiState>,
    ApiPath(stream): ApiPath<String>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let query = parameters(&uri, &["force"])?;
    admin::delete_stream(&state.nats, &stream, flag(&query, "force")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/streams/{stream}/purge`: removes events.
#[utoipa::path(
    post,
    path = "/v1/streams/{stream}/purge",
    tag = "admin",
    summary = "Purge a stream",
    description = "Removes the events on subjects matching `subject` (all by default), except \
                   the newest `keep`.",
    params(("stream" = String, Path, description = "The stream")),
    request_body(content = PurgeJson, content_type = "application/json"),
    responses(
        (status = 200, description = "Purged", body = Purged),
        (status = 400, description = "A bad field", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody),
        (status = 409, description = "An internal stream without force", body = ErrorBody),
    )
)]
pub async fn purge_stream(
    State(state): State<ApiState>,
    ApiPath(stream): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Purged>, ApiError> {
    let body = json::read_body(&headers, body, state.max_body).await?;
    let purge: PurgeJson = fields::object(&headers, &body)?;
    let purged = admin::purge_stream(
        &state.nats,
        &stream,
        purge.subject.as_deref().unwrap_or_default(),
        purge.keep.unwrap_or(0),
        purge.force.unwrap_or(false),
    )
    .await?;
    Ok(Json(Purged { purged }))
}

/// `GET /v1/streams/{stream}/consumers?page_token=`: one page of a stream's consumers.
#[utoipa::path(
    get,
    path = "/v1/streams/{stream}/consumers",
    tag = "admin",
    summary = "List a stream's consumers",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("page_token" = Option<String>, Query, description = "The `next_page_token` of the page before"),
    ),
    responses(
        (status = 200, description = "A page of consumers", body = ConsumerPage),
        (status = 400, description = "A bad name or page token", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody),
    )
)]
pub async fn list_consumers(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(stream): ApiPath<String>,
    uri: Uri,
) -> Result<Json<ConsumerPage>, ApiError> {
    let query = parameters(&uri, &["page_token"])?;
    let token = query.get("page_token").map_or("", String::as_str);
    let page = admin::list_consumers(&state.nats, &stream, token).await?;
    // The layer checked the stream; as gRPC's ListConsumers, only consumers the client may see.
    Ok(Json(ConsumerPage {
        consumers: page
            .items
            .into_iter()
            .filter(|info| caller.may(Permission::See, &format!("{stream}/{}", info.name)))
            .map(consumer_json)
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

/// `GET /v1/streams/{stream}/consumers/{consumer}`.
#[utoipa::path(
    get,
    path = "/v1/streams/{stream}/consumers/{consumer}",
    tag = "admin",
    summary = "A consumer's info",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("consumer" = String, Path, description = "The consumer"),
    ),
    responses(
        (status = 200, description = "The consumer", body = ConsumerInfoJson),
        (status = 400, description = "A bad name", body = ErrorBody),
        (status = 404, description = "No such stream or consumer", body = ErrorBody),
    )
)]
pub async fn consumer_info(
    State(state): State<ApiState>,
    ApiPath((stream, consumer)): ApiPath<(String, String)>,
) -> Result<Json<ConsumerInfoJson>, ApiError> {
    let info = admin::consumer_info(&state.nats, &stream, &consumer).await?;
    Ok(Json(consumer_json(info)))
}

/// `DELETE /v1/streams/{stream}/consumers/{consumer}`.
#[utoipa::path(
    delete,
    path = "/v1/streams/{stream}/consumers/{consumer}",
    tag = "admin",
    summary = "Delete a consumer",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("consumer" = String, Path, description = "The consumer"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A bad name", body = ErrorBody),
        (status = 404, description = "No such stream or consumer", body = ErrorBody),
    )
)]
pub async fn delete_consumer(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath((stream, consumer)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.permit(Permission::Manage, &stream)?;
    consumers::delete_consumer(&state.nats, &stream, &consumer).await?;
    caller.audit("delete consumer", &format!("{stream}/{consumer}"));
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/dead-letters/{dead_letter_stream}?stream=&consumer=&from_id=&limit=`.
#[utoipa::path(
    get,
    path = "/v1/dead-letters/{dead_letter_stream}",
    tag = "admin",
    summary = "List dead letters",
    description = "The dead letters stored now, oldest first: a JSON array, or NDJSON with \
                   `Accept: application/x-ndjson`, streamed as they are read.",
    params(
        ("dead_letter_stream" = String, Path, description = "The dead-letter stream"),
        ("stream" = Option<String>, Query, description = "Only those from this stream"),
        ("consumer" = Option<String>, Query, description = "Only those from this consumer"),
        ("from_id" = Option<u64>, Query, description = "Start at this id"),
        ("limit" = Option<u64>, Query, description = "The most returned"),
    ),
    responses(
        (status = 200, description = "The dead letters",
            content(
                (Vec<DeadLetterJson> = "application/json"),
                (DeadLetterJson = "application/x-ndjson"),
            )
        ),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 404, description = "No such dead-letter stream", body = ErrorBody),
    )
)]
pub async fn list_dead_letters(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(dead_letter_stream): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    caller.permit(Permission::Read, &dead_letter_stream)?;
    let query = parameters(&uri, &["stream", "consumer", "from_id", "limit"])?;
    let limit = match number(&query, "limit")? {
        Some(0) => return Err(ApiError::invalid("limit", "must be at least 1")),
        limit => limit,
    };
    let spec = ListSpec {
        dead_letter_stream,
        stream: query.get("stream").cloned().unwrap_or_default(),
        consumer: query.get("consumer").cloned().unwrap_or_default(),
        from_id: number(&query, "from_id")?.unwrap_or(0),
        limit,
    };
    // As gRPC's ListDeadLetters: dead letters of streams the client may not see are left out.
    let dead_letters =
        dead_letters::list(&state.nats, &spec)
            .await?
            .try_filter(move |dead_letter| {
                std::future::ready(caller.may(Permission::See, &dead_letter.stream))
            });
    Ok(reads::json_items(
        dead_letters.map(|dead_letter| dead_letter.map(dead_letter_json)),
        json::wants_ndjson(&headers),
        &state.shutdown,
        "list again from the id after the last one received",
    ))
}

/// `POST /v1/dead-letters/{dead_letter_stream}/redrive`: publishes dead letters again.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{dead_letter_stream}/redrive",
    tag = "admin",
    summary = "Redrive dead letters",
    description = "Publishes the chosen dead letters again to their original subjects and \
                   removes them from the dead-letter stream.",
    params(("dead_letter_stream" = String, Path, description = "The dead-letter stream")),
    request_body(content = RedriveJson, content_type = "application/json"),
    responses(
        (status = 200, description = "What was redriven", body = RedrivenJson),
        (status = 400, description = "A bad selection", body = ErrorBody),
        (status = 404, description = "No such dead-letter stream", body = ErrorBody),
    )
)]
pub async fn redrive_dead_letters(
    State(state): State<ApiState>,
    ApiPath(dead_letter_stream): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RedrivenJson>, ApiError> {
    let body = json::read_body(&headers, body, state.max_body).await?;
    let redrive: RedriveJson = fields::object(&headers, &body)?;
    // The gRPC request's own decoding decides what a selection may combine.
    let selection = selection(&RedriveDeadLettersRequest {
        dead_letter_stream: dead_letter_stream.clone(),
        ids: redrive.ids,
        all: redrive.all,
        stream: redrive.stream,
        consumer: redrive.consumer,
        limit: redrive.limit,
    })?;
    let redriven = dead_letters::redrive(&state.nats, &dead_letter_stream, &selection).await?;
    Ok(Json(RedrivenJson {
        redriven: redriven
            .redriven
            .into_iter()
            .map(|(id, event_id)| RedrivenEvent { id, event_id })
            .collect(),
        invalid_ids: redriven.invalid_ids,
        temporary_failed_ids: redriven.temporary_failed_ids,
    }))
}
