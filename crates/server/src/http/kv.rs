//! Key-value stores over HTTP, through the same [`state`] functions as gRPC's StateServices: a
//! store's options (`PUT /v1/stores/{store}`), a key's value (`GET`/`PUT`/`DELETE
//! /v1/stores/{store}/keys/{key}`), the keys (`GET /v1/stores/{store}/keys`) and a watch over SSE
//! (`GET /v1/stores/{store}/watch`), and a key's history (`GET /v1/stores/{store}/history/{key}`).
//!
//! A key's revision is its `ETag` (`"7"`); `If-Match` makes a write compare-and-set and
//! `If-None-Match: *` create-only, both answered 412 when the key is not as expected.
//!
//! Values are stored as gRPC stores them, a serialized `google.protobuf.Any`, so both APIs read
//! what either wrote ([`to_any`], [`from_any`]): a body sent as `application/protobuf;
//! proto=<message>` is that message, in an `Any` of its type; any other body is kept with its
//! content type in a `jetway.events.v1.RawPayload`, in an `Any` of that type, which a gRPC client
//! unpacks as it unpacks any other message.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response, sse::Event as SseEvent},
};
use bytes::Bytes;
use futures::StreamExt;
use jetway_api::{TYPE_URL_PREFIX, google::protobuf::Any, jetway::events::v1::RawPayload};
use jetway_core::{
    Error, ErrorKind,
    format::format_time,
    state::{self, Entry, Operation, StoreSpec, WatchFrom, WatchSpec, Write},
    streams::Storage,
};
use prost::{Message, Name};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Caller, Grant, Permission},
    codec::state::decode,
    http::{
        ApiState,
        error::{ApiError, ErrorBody},
        fields, json,
        json::ApiPath,
        live, reads,
    },
};

/// The media type of a protobuf message body; its `proto` parameter names the message type.
pub const PROTOBUF: &str = "application/protobuf";

/// A store's options, for `PUT /v1/stores/{store}`: as Jetway's gRPC EnsureStore, an option left
/// out goes back to its default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StoreJson {
    /// How long an entry is kept after it was written (`"3600s"`, `"10m"`, `"24h"`), at least
    /// 100 ms. Absent: forever.
    pub ttl: Option<String>,
    /// Revisions kept per key, 1 to 64. Absent: 1.
    pub history: Option<u32>,
    /// The largest value accepted, in bytes, with its headers. Absent: NATS's max payload.
    pub max_value_size: Option<u32>,
    /// `file` (the default) or `memory`; it cannot change once the store exists.
    pub storage: Option<StorageJson>,
    /// Copies a NATS cluster keeps. Absent: 1.
    pub replicas: Option<u32>,
}

/// Where a store or stream keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StorageJson {
    /// On disk.
    File,
    /// In memory only; lost when NATS restarts.
    Memory,
}

impl From<StorageJson> for Storage {
    fn from(storage: StorageJson) -> Storage {
        match storage {
            StorageJson::File => Storage::File,
            StorageJson::Memory => Storage::Memory,
        }
    }
}

impl From<Storage> for StorageJson {
    fn from(storage: Storage) -> StorageJson {
        match storage {
            Storage::File => StorageJson::File,
            Storage::Memory => StorageJson::Memory,
        }
    }
}

/// Whether `PUT /v1/stores/{store}` created the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StoreEnsured {
    /// True if the store was created, false if an existing one was updated.
    pub created: bool,
}

/// The revision a write stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Revision {
    /// The new revision of the key, also in the `ETag` header.
    pub revision: u64,
}

/// One entry of a watch: what a change did to a key.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct EntryJson {
    /// The key.
    pub key: String,
    /// The revision: unique in the store, higher for later changes (the SSE `id:`).
    pub revision: u64,
    /// `put`, `delete` or `purge`.
    pub operation: &'static str,
    /// When the entry was stored, RFC 3339 UTC.
    pub time: String,
    /// The value's content type (puts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The value, when it is JSON or text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The value in base64, when it is neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

/// The `Any` stored for a body sent with `content_type`.
pub fn to_any(content_type: Option<&str>, body: Bytes) -> Result<Any, ApiError> {
    let media = content_type.map(json::media_type);
    if matches!(media.as_deref(), Some(PROTOBUF | "application/x-protobuf")) {
        let message = content_type
            .and_then(|value| parameter(value, "proto"))
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    "Content-Type",
                    "names no message type: send `application/protobuf; proto=<package.Message>`",
                )
            })?;
        return Ok(Any {
            type_url: format!("{TYPE_URL_PREFIX}{message}"),
            value: body,
        });
    }
    Ok(Any::pack(&RawPayload {
        data: body,
        content_type: content_type.unwrap_or_default().to_owned(),
    }))
}

/// The body and content type of a stored `Any`: a `RawPayload`'s bytes and content type
/// (`application/octet-stream` if it has none), or any other message as `application/protobuf`.
pub fn from_any(store: &str, key: &str, any: Any) -> Result<(String, Bytes), Error> {
    match any.unpack::<RawPayload>() {
        Some(Ok(raw)) if raw.content_type.is_empty() => {
            Ok(("application/octet-stream".to_owned(), raw.data))
        }
        Some(Ok(raw)) => Ok((raw.content_type, raw.data)),
        Some(Err(err)) => Err(Error::new(
            ErrorKind::DataLoss,
            format!(
                "the value of key {key} in store {store} is not a valid {}: {err}",
                RawPayload::full_name()
            ),
        )),
        None => Ok((
            format!("{PROTOBUF}; proto={}", any.message_name()),
            any.value,
        )),
    }
}

/// The value of parameter `name` of a media type, unquoted.
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|part| {
        let (key, value) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// An entry's body and content type.
fn value_of(store: &str, entry: &Entry) -> Result<(String, Bytes), Error> {
    from_any(store, &entry.key, decode(store, entry)?)
}

fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// What a conditional header asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    /// `*`: any current value.
    Any,
    /// That revision.
    Revision(u64),
}

/// Parses `If-Match` or `If-None-Match`: `*`, or one ETag this API issued (`"7"`).
fn condition(headers: &HeaderMap, name: &str) -> Result<Option<Condition>, ApiError> {
    let Some(value) = json::header_text(headers, name)? else {
        return Ok(None);
    };
    let value = value.trim();
    if value == "*" {
        return Ok(Some(Condition::Any));
    }
    value
        .strip_prefix('"')
        .and_then(|value| value.strip_suffix('"'))
        .and_then(|revision| revision.parse::<u64>().ok())
        .map(|revision| Some(Condition::Revision(revision)))
        .ok_or_else(|| {
            ApiError::invalid(
                name,
                "must be * or one ETag of this API, a revision in quotes such as \"7\"",
            )
        })
}

/// 412 for a key that is not as `If-Match` expected.
fn not_matched(key: &str, expected: &str) -> ApiError {
    ApiError::from(
        Error::conflict(format!(
            "key {key} is not at If-Match: {expected} (read it again for its current ETag)"
        ))
        .with_field("If-Match"),
    )
    .with_status(StatusCode::PRECONDITION_FAILED)
}

/// The revision a write expects from `If-Match`: an ETag as it is; `*` is the key's current
/// revision, so the write still fails if it changes meanwhile.
async fn expected_revision(
    state: &ApiState,
    store: &str,
    key: &str,
    headers: &HeaderMap,
) -> Result<Option<u64>, ApiError> {
    match condition(headers, "If-Match")? {
        None => Ok(None),
        Some(Condition::Revision(revision)) => Ok(Some(revision)),
        Some(Condition::Any) => match state::get(&state.nats, store, key).await {
            Ok(entry) => Ok(Some(entry.revision)),
            // The key has no value (a missing store is NOT_FOUND about the store).
            Err(err)
                if err.kind() == ErrorKind::NotFound
                    && err.resource() == Some(&format!("key {key}")) =>
            {
                Err(not_matched(key, "*"))
            }
            Err(err) => Err(err.into()),
        },
    }
}

/// A write's failure: a revision that is not the latest is `If-Match`'s 412, and an existing key
/// `If-None-Match`'s.
fn write_failed(err: Error, key: &str, headers: &HeaderMap) -> ApiError {
    match err.kind() {
        ErrorKind::Conflict if err.field() == Some("last_revision") => {
            let expected = headers
                .get("If-Match")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            not_matched(key, expected)
        }
        ErrorKind::AlreadyExists => ApiError::from(err.with_field("If-None-Match"))
            .with_status(StatusCode::PRECONDITION_FAILED),
        _ => err.into(),
    }
}

/// `PUT /v1/stores/{store}`: creates the store with these options, or updates it to them.
#[utoipa::path(
    put,
    path = "/v1/stores/{store}",
    tag = "kv",
    summary = "Create or update a key-value store",
    description = "As Jetway's gRPC EnsureStore: an option left out goes back to its default, \
                   on an existing store too. An empty body is `{}`, every option its default.",
    params(("store" = String, Path, description = "The store: letters, digits, `_` and `-`")),
    request_body(content = StoreJson, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = StoreEnsured),
        (status = 200, description = "Updated", body = StoreEnsured),
        (status = 400, description = "A bad name or option", body = ErrorBody),
        (status = 409, description = "JetStream refused the change (e.g. of storage)", body = ErrorBody),
    )
)]
pub async fn ensure_store(
    State(state): State<ApiState>,
    ApiPath(store): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json::read_body(&headers, body, state.max_body).await?;
    let options: StoreJson = fields::object(&headers, &body)?;
    let spec = StoreSpec {
        store,
        ttl: options
            .ttl
            .as_deref()
            .map(|ttl| fields::duration("ttl", ttl))
            .transpose()?,
        history: options.history,
        max_value_size: options.max_value_size,
        storage: options.storage.map(Into::into),
        replicas: options.replicas,
    };
    let created = state::configure_store(&state.nats, &spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(StoreEnsured { created })).into_response())
}

/// `GET /v1/stores/{store}/keys/{key}`: the value as it was stored, its revision the `ETag`.
#[utoipa::path(
    get,
    path = "/v1/stores/{store}/keys/{key}",
    tag = "kv",
    summary = "Read a key's value",
    description = "The body is the value with its content type; a value written over gRPC as a \
                   message other than `jetway.events.v1.RawPayload` comes as \
                   `application/protobuf; proto=<message>`. `If-None-Match` with the current \
                   ETag answers 304.",
    params(
        ("store" = String, Path, description = "The store"),
        ("key" = String, Path, description = "The key: dot-separated tokens of letters, digits, `_`, `-`, `/` and `=`"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag the client holds: 304 if it is current"),
    ),
    responses(
        (status = 200, description = "The value", content_type = "*/*", body = Vec<u8>,
            headers(("ETag" = String, description = "The revision, in quotes"))),
        (status = 304, description = "The client's ETag is current"),
        (status = 400, description = "A bad store name or key", body = ErrorBody),
        (status = 404, description = "No such store, or the key has no value", body = ErrorBody),
    )
)]
pub async fn get_value(
    State(state): State<ApiState>,
    ApiPath((store, key)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = state::get(&state.nats, &store, &key).await?;
    let tag = etag(entry.revision);
    if headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|held| held.trim() == "*" || held.trim().as_bytes() == tag.as_bytes())
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let (content_type, value) = value_of(&store, &entry)?;
    let content_type = HeaderValue::from_str(&content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        [(header::CONTENT_TYPE, content_type), (header::ETAG, tag)],
        value,
    )
        .into_response())
}

/// `PUT /v1/stores/{store}/keys/{key}`: stores the body as the key's value.
#[utoipa::path(
    put,
    path = "/v1/stores/{store}/keys/{key}",
    tag = "kv",
    summary = "Write a key's value",
    description = "The body is the value, kept with its Content-Type; \
                   `application/protobuf; proto=<message>` stores that message as gRPC's Set \
                   does. `If-Match` writes only if the key is at that ETag (`*`: has any \
                   value), `If-None-Match: *` only if the key has no value; of concurrent \
                   writers with the same condition exactly one succeeds.",
    params(
        ("store" = String, Path, description = "The store"),
        ("key" = String, Path, description = "The key"),
        ("If-Match" = Option<String>, Header, description = "Compare-and-set: the ETag the key must be at, or `*`"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: create only"),
    ),
    request_body(content = Vec<u8>, content_type = "*/*", description = "The value"),
    responses(
        (status = 200, description = "Stored", body = Revision,
            headers(("ETag" = String, description = "The new revision, in quotes"))),
        (status = 201, description = "Created (`If-None-Match: *`)", body = Revision,
            headers(("ETag" = String, description = "The new revision, in quotes"))),
        (status = 400, description = "A bad store name, key, header or value", body = ErrorBody),
        (status = 404, description = "No such store", body = ErrorBody),
        (status = 412, description = "The key is not at If-Match, or exists despite If-None-Match", body = ErrorBody),
        (status = 413, description = "The body is over HTTP_MAX_BODY_BYTES", body = ErrorBody),
    )
)]
pub async fn put_value(
    State(state): State<ApiState>,
    ApiPath((store, key)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let create_only = match condition(&headers, "If-None-Match")? {
        None => false,
        Some(Condition::Any) => true,
        Some(Condition::Revision(_)) => {
            return Err(ApiError::invalid(
                "If-None-Match",
                "only * (create only) is taken on a write",
            ));
        }
    };
    if create_only && headers.contains_key(header::IF_MATCH) {
        return Err(ApiError::invalid(
            "If-Match",
            "cannot be combined with If-None-Match: *",
        ));
    }
    let content_type = json::content_type(&headers)?;
    let body = json::read_body(&headers, body, state.max_body).await?;
    let value = to_any(content_type.as_deref(), body)?;
    let last_revision = expected_revision(&state, &store, &key, &headers).await?;
    let write = Write {
        store,
        key: key.clone(),
        value: value.encode_to_vec().into(),
        create_only,
        last_revision,
    };
    let revision = state::set(&state.nats, write)
        .await
        .map_err(|err| write_failed(err, &key, &headers))?;
    let status = if create_only {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::ETAG, etag(revision))],
        Json(Revision { revision }),
    )
        .into_response())
}

/// `DELETE /v1/stores/{store}/keys/{key}`: writes a delete marker.
#[utoipa::path(
    delete,
    path = "/v1/stores/{store}/keys/{key}",
    tag = "kv",
    summary = "Delete a key",
    description = "Writes a delete marker: the key reads as missing, and watches see the \
                   delete. Deleting a missing key succeeds.",
    params(
        ("store" = String, Path, description = "The store"),
        ("key" = String, Path, description = "The key"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the key is at this ETag, or `*`: has a value"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A bad store name, key or header", body = ErrorBody),
        (status = 404, description = "No such store", body = ErrorBody),
        (status = 412, description = "The key is not at If-Match", body = ErrorBody),
    )
)]
pub async fn delete_value(
    State(state): State<ApiState>,
    ApiPath((store, key)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return Err(ApiError::invalid(
            "If-None-Match",
            "is not taken on a delete; If-Match is",
        ));
    }
    let last_revision = expected_revision(&state, &store, &key, &headers).await?;
    state::delete(&state.nats, &store, &key, last_revision)
        .await
        .map_err(|err| write_failed(err, &key, &headers))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/stores/{store}/keys?filter=`: the keys that have a value.
#[utoipa::path(
    get,
    path = "/v1/stores/{store}/keys",
    tag = "kv",
    summary = "List the keys",
    description = "The keys that have a value, in no particular order: a JSON array, or NDJSON \
                   with `Accept: application/x-ndjson`, streamed as they are read.",
    params(
        ("store" = String, Path, description = "The store"),
        ("filter" = Option<String>, Query, description = "Only keys matching this pattern (`*` one token, a last `>` the rest)"),
    ),
    responses(
        (status = 200, description = "The keys",
            content(
                (Vec<String> = "application/json"),
                (String = "application/x-ndjson"),
            )
        ),
        (status = 400, description = "A bad store name or filter", body = ErrorBody),
        (status = 404, description = "No such store", body = ErrorBody),
    )
)]
pub async fn list_keys(
    State(state): State<ApiState>,
    ApiPath(store): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut query = json::query(uri.query())?;
    let filter = query.remove("filter").unwrap_or_default();
    no_more(&query, "filter")?;
    let keys = state::keys(&state.nats, &store, &filter).await?;
    Ok(reads::json_items(
        keys,
        json::wants_ndjson(&headers),
        &state.shutdown,
        "list the keys again",
    ))
}

/// `GET /v1/stores/{store}/history/{key}`: every stored entry of the key, as gRPC's History.
/// Not under `/keys/`, where the key is the path's rest (it may hold `/`), so no key is mistaken
/// for a history.
#[utoipa::path(
    get,
    path = "/v1/stores/{store}/history/{key}",
    tag = "kv",
    summary = "A key's history",
    description = "Every stored entry of the key, oldest first, deletes and purges included (as \
                   many as the store's `history` keeps): a JSON array, or NDJSON with \
                   `Accept: application/x-ndjson`, streamed as they are read.",
    params(
        ("store" = String, Path, description = "The store"),
        ("key" = String, Path, description = "The key"),
    ),
    responses(
        (status = 200, description = "The entries",
            content(
                (Vec<EntryJson> = "application/json"),
                (EntryJson = "application/x-ndjson"),
            )
        ),
        (status = 400, description = "A bad store name or key", body = ErrorBody),
        (status = 401, description = "No or bad credentials (with AUTH_FILE)", body = ErrorBody),
        (status = 403, description = "The client may not read the store", body = ErrorBody),
        (status = 404, description = "No such store, or the key has no entries", body = ErrorBody),
    )
)]
pub async fn key_history(
    State(state): State<ApiState>,
    ApiPath((store, key)): ApiPath<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    no_more(&json::query(uri.query())?, "none")?;
    let entries = state::history(&state.nats, &store, &key).await?;
    Ok(reads::json_items(
        entries.map(move |entry| entry.and_then(|entry| entry_json(&store, entry))),
        json::wants_ndjson(&headers),
        &state.shutdown,
        "read the history again",
    ))
}

/// 400 for a query parameter the route does not take (`known` lists those it does).
pub fn no_more(
    query: &std::collections::BTreeMap<String, String>,
    known: &str,
) -> Result<(), ApiError> {
    match query.keys().next() {
        Some(unknown) => Err(ApiError::invalid(
            unknown,
            format!("is not a parameter of this route ({known})"),
        )),
        None => Ok(()),
    }
}

/// `GET /v1/stores/{store}/watch?key=&start=`: the entries of the matching keys over SSE.
#[utoipa::path(
    get,
    path = "/v1/stores/{store}/watch",
    tag = "kv",
    summary = "Watch keys (Server-Sent Events)",
    description = "Each SSE `id:` is the entry's revision and its `data:` the entry as JSON. \
                   It starts with the current entry of each matching key (or as `start` says), \
                   then every change. A reconnect with `Last-Event-ID` resumes after that \
                   revision; a failure ends the stream with an `event: failure`.",
    params(
        ("store" = String, Path, description = "The store"),
        ("key" = Option<String>, Query, description = "A key or pattern (`>` as `%3E`); absent: every key"),
        ("start" = Option<String>, Query, description = "`current` (default): each key's latest entry, then changes; `history`: every stored entry; `updates`: changes only"),
        ("after_revision" = Option<u64>, Query, description = "Only entries after this revision (as Last-Event-ID)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this revision"),
    ),
    responses(
        (status = 200, description = "A stream of entries", content_type = "text/event-stream", body = EntryJson),
        (status = 400, description = "A bad store name, key pattern or parameter", body = ErrorBody),
        (status = 404, description = "No such store", body = ErrorBody),
    )
)]
pub async fn watch(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(store): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut query = json::query(uri.query())?;
    let key = query.remove("key").unwrap_or_default();
    let start = query.remove("start");
    let after = query.remove("after_revision");
    no_more(&query, "key, start, after_revision")?;
    let after = match headers.get("last-event-id") {
        Some(value) => Some(("Last-Event-ID", value.to_str().unwrap_or("?").to_owned())),
        None => after.map(|value| ("after_revision", value)),
    };
    let from = match (after, start.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "start",
                "cannot be combined with a resume (after_revision or Last-Event-ID)",
            ));
        }
        (Some((field, value)), None) => WatchFrom::After(
            value
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid(field, "is not a revision (a whole number)"))
                .and_then(|revision| resumable(field, revision))?,
        ),
        (None, None | Some("current")) => WatchFrom::Current,
        (None, Some("history")) => WatchFrom::History,
        (None, Some("updates")) => WatchFrom::UpdatesOnly,
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "start",
                "is not current, history or updates",
            ));
        }
    };
    // Checked again at each reload of the clients file, for as long as the watch is open.
    let grant = Grant::new(&caller, [(Permission::StateRead, store.clone())])?;
    let entries = state::watch(
        &state.nats,
        &WatchSpec {
            store: store.clone(),
            key,
            from,
        },
    )
    .await?;
    let events = entries.map(move |entry| {
        let entry = entry?;
        let id = entry.revision.to_string();
        let entry = entry_json(&store, entry)?;
        Ok(live::encoded(SseEvent::default().id(id).json_data(entry)))
    });
    let events = events.filter_map(|event: Result<Option<SseEvent>, Error>| {
        futures::future::ready(event.transpose())
    });
    Ok(live::respond(events, grant, &state.shutdown))
}

/// A resume's revision: the watch starts at the next one, which must be a sequence JetStream
/// can hold.
fn resumable(field: &str, revision: u64) -> Result<u64, ApiError> {
    jetway_core::streams::validate_sequence(field, revision.saturating_add(1))?;
    Ok(revision)
}

/// An entry as a watch sends it; only a put has a value.
fn entry_json(store: &str, entry: Entry) -> Result<EntryJson, Error> {
    let operation = match entry.operation {
        Operation::Put => "put",
        Operation::Delete => "delete",
        Operation::Purge => "purge",
    };
    let (content_type, data, data_base64) = match entry.operation {
        Operation::Put => {
            let (content_type, value) = value_of(store, &entry)?;
            let (data, data_base64) = json::payload(Some(&content_type), &value);
            (Some(content_type), data, data_base64)
        }
        Operation::Delete | Operation::Purge => (None, None, None),
    };
    Ok(EntryJson {
        key: entry.key,
        revision: entry.revision,
        operation,
        time: format_time(entry.time),
        content_type,
        data,
        data_base64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_content_type_through_an_any() {
        let json = to_any(Some("application/json"), Bytes::from("{\"a\":1}")).unwrap();
        assert_eq!(json.message_name(), "jetway.events.v1.RawPayload");
        assert_eq!(
            from_any("s", "k", json).unwrap(),
            ("application/json".to_owned(), Bytes::from("{\"a\":1}"))
        );
        let bare = to_any(None, Bytes::from_static(b"\x00")).unwrap();
        assert_eq!(
            from_any("s", "k", bare).unwrap().0,
            "application/octet-stream"
        );
        let typed = to_any(
            Some("application/protobuf; proto=\"windshift.test.v1.StringValue\""),
            Bytes::from_static(b"\x0a\x01v"),
        )
        .unwrap();
        assert_eq!(
            typed.type_url,
            "type.googleapis.com/windshift.test.v1.StringValue"
        );
        assert_eq!(
            from_any("s", "k", typed).unwrap().0,
            "application/protobuf; proto=windshift.test.v1.StringValue"
        );
        let unnamed = to_any(Some("application/x-protobuf"), Bytes::new()).unwrap_err();
        assert_eq!(unnamed.body().error.field.as_deref(), Some("Content-Type"));
    }

    #[test]
    fn conditions_take_star_or_one_quoted_revision() {
        let parse = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("If-Match", HeaderValue::from_str(value).unwrap());
            condition(&headers, "If-Match")
        };
        assert_eq!(parse("*").unwrap(), Some(Condition::Any));
        assert_eq!(parse("\"7\"").unwrap(), Some(Condition::Revision(7)));
        for bad in ["7", "W/\"7\"", "\"7\", \"8\"", "\"x\""] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.body().error.field.as_deref(), Some("If-Match"), "{bad}");
        }
        assert_eq!(condition(&HeaderMap::new(), "If-Match").unwrap(), None);
    }
}
