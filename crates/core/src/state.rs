//! Key-value stores: Windshift's StateService and Jetway's additions (store options, watch, keys,
//! history) over JetStream key-value buckets.
//!
//! A store is the bucket of the same name (stream `KV_<store>`, subjects `$KV.<store>.<key>`), laid
//! out as every NATS key-value client lays it out, so stores are shared with direct NATS users. Values
//! are opaque bytes here; the server puts the whole serialized `google.protobuf.Any` in them.
//!
//! Get, Set and Delete speak the key-value protocol directly: a direct get of the last message on the
//! key's subject (as NATS key-value clients read), and a publish with the `KV-Operation` and
//! `Nats-Expected-Last-Subject-Sequence` headers. A bucket handle would cost a stream-info round trip
//! on every call, and building the message here gives the exact size for an over-the-limit error.
//! Watch, Keys and History are long-lived and use async-nats's bucket handle and its ordered
//! consumers, which resume by themselves after a NATS reconnect.

use std::time::{Duration, SystemTime};

use async_nats::{
    HeaderMap,
    header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MARKER_REASON},
    jetstream::{
        ErrorCode,
        consumer::push::{OrderedError, OrderedErrorKind},
        context::PublishError as JsPublishError,
        kv,
        message::PublishMessage,
        stream::{self, DiscardPolicy},
    },
};
use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};

use crate::{
    Error, ErrorKind, Nats,
    error::Classify,
    format,
    names::{validate_key, validate_key_filter, validate_name},
    publish_failure::{self, Failure, Target},
    streams::{
        ApplyError, DEFAULT_DEDUPE_WINDOW, MAX_SEQUENCE, Storage, apply_config,
        is_placement_refusal, placement_message, starting_config,
    },
};

/// Revisions kept per key unless the store is configured otherwise (Windshift's default).
pub const DEFAULT_HISTORY: u32 = 1;
/// The most revisions JetStream keeps per key.
pub const MAX_HISTORY: u32 = 64;
/// The shortest TTL JetStream accepts (its minimum max age).
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Longest store name: the stream `KV_<store>` must stay within JetStream's 255 characters.
const MAX_STORE_NAME_LEN: usize = 252;
/// The header that marks a delete or purge entry.
const OPERATION_HEADER: &str = "KV-Operation";
/// Its value on a delete marker.
const DELETE_MARKER: &str = "DEL";

/// What an entry did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A value was stored.
    Put,
    /// The key was deleted; the entry is a delete marker.
    Delete,
    /// The key was purged (its earlier revisions removed), or expired by a per-key TTL.
    Purge,
}

/// One stored revision of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The revision: the entry's stream sequence, unique in the store.
    pub revision: u64,
    /// What the entry did.
    pub operation: Operation,
    /// When JetStream stored the entry.
    pub time: SystemTime,
    /// The stored value; empty for delete and purge markers.
    pub value: Bytes,
}

/// A stream of entries (Watch, History), ending at the first error.
pub type Entries = BoxStream<'static, Result<Entry, Error>>;

/// A stream of keys (Keys), ending at the first error.
pub type KeyNames = BoxStream<'static, Result<String, Error>>;

/// A store's options, as Jetway's EnsureStore receives them. `None` means the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSpec {
    /// The store's name.
    pub store: String,
    /// How long an entry is kept after it was written; `None`: forever.
    pub ttl: Option<Duration>,
    /// Revisions kept per key, 1 to 64; `None`: 1.
    pub history: Option<u32>,
    /// Largest message (value and headers) accepted; `None`: only NATS's max payload.
    pub max_value_size: Option<u32>,
    /// File (default) or memory.
    pub storage: Option<Storage>,
    /// Replicas in a cluster; `None`: 1.
    pub replicas: Option<u32>,
}

/// A Set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Write {
    /// The store.
    pub store: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// Write only if the key has no value (never written, deleted or purged). Wins over
    /// `last_revision`.
    pub create_only: bool,
    /// Write only if this is the key's latest revision (0: the key was never written).
    pub last_revision: Option<u64>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchFrom {
    /// The latest entry of each matching key, then changes.
    #[default]
    Current,
    /// Every stored entry of the matching keys, then changes.
    History,
    /// Only changes made after the watch started.
    UpdatesOnly,
    /// Only entries with a revision above this one, then changes.
    After(u64),
}

/// A watch, as Jetway's Watch receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSpec {
    /// The store.
    pub store: String,
    /// A key or a pattern (`*`, `>`); empty means every key.
    pub key: String,
    /// Where to start.
    pub from: WatchFrom,
}

/// What a failed call on `store` means: "no such stream" is "no such store".
fn about_store(err: Error, store: &str) -> Error {
    match err.api_code() {
        Some(ErrorCode::STREAM_NOT_FOUND) => store_not_found(store),
        _ => err,
    }
}

fn store_not_found(store: &str) -> Error {
    Error::not_found(format!("store {store}"))
}

/// The key has no value (never written, deleted or purged), or, for History, no entries.
fn key_not_found(store: &str, key: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("key {key} not found in store {store}"),
    )
    .with_resource(format!("key {key}"))
}

/// Windshift's EnsureStore: creates the store with the default options if it does not exist. An
/// existing store is never changed, whatever its options.
pub async fn ensure_store(nats: &Nats, store: &str) -> Result<(), Error> {
    validate_store(store)?;
    let spec = StoreSpec {
        store: store.to_owned(),
        ..Default::default()
    };
    let config = stream_config(&spec, None)?;
    // Creating a stream that exists with the same configuration succeeds, and with another one fails
    // with "name in use": both mean the store is there, which is all this call promises.
    match nats.jetstream().create_stream(config).await {
        Ok(_) => {}
        Err(err) => match err.classify() {
            e if e.api_code() == Some(ErrorCode::STREAM_NAME_EXIST) => {}
            e => return Err(rejected(&spec, e)),
        },
    }
    tracing::info!(%store, "store ensured");
    Ok(())
}

/// Jetway's EnsureStore: creates the store with these options, or updates it to them. Options the
/// spec leaves out go back to their defaults; settings Jetway does not manage (e.g. a description
/// set by another client) are kept. Returns whether the store was created.
pub async fn configure_store(nats: &Nats, spec: &StoreSpec) -> Result<bool, Error> {
    validate_spec(spec)?;
    let applied = apply_config(nats, &stream_name(&spec.store), |existing| {
        stream_config(spec, existing)
    })
    .await;
    match applied {
        Ok(created) => {
            tracing::info!(store = %spec.store, created, "store configured");
            Ok(created)
        }
        Err(ApplyError::Build(err)) => Err(err),
        Err(ApplyError::Refused(err)) => Err(rejected(spec, err)),
    }
}

/// Sorts a failed create or update: a configuration JetStream finds invalid is the client's to fix,
/// and any other refusal is a conflict with the store as it is.
fn rejected(spec: &StoreSpec, err: Error) -> Error {
    let store = &spec.store;
    if is_placement_refusal(&err) {
        return Error::conflict(placement_message(
            "replicas",
            spec.replicas.unwrap_or(1),
            &format!("store {store}"),
            &err,
        ));
    }
    err.refused(|code, description| {
        if code == ErrorCode::STREAM_INVALID_CONFIG {
            Error::invalid(
                "store",
                format!("JetStream rejected the configuration: {description}"),
            )
        } else {
            Error::conflict(format!(
                "JetStream rejected the store {store}: {description}"
            ))
        }
    })
}

fn validate_store(store: &str) -> Result<(), Error> {
    validate_name("store", store)?;
    if store.len() > MAX_STORE_NAME_LEN {
        return Err(Error::invalid(
            "store",
            format!("must be at most {MAX_STORE_NAME_LEN} characters"),
        ));
    }
    Ok(())
}

fn validate_spec(spec: &StoreSpec) -> Result<(), Error> {
    validate_store(&spec.store)?;
    if spec.ttl.is_some_and(|ttl| ttl < MIN_TTL) {
        return Err(Error::invalid(
            "ttl",
            format!("must be at least {MIN_TTL:?}; omit it to keep entries forever"),
        ));
    }
    if spec
        .history
        .is_some_and(|history| !(1..=MAX_HISTORY).contains(&history))
    {
        return Err(Error::invalid(
            "history",
            format!("must be between 1 and {MAX_HISTORY}"),
        ));
    }
    if spec.max_value_size == Some(0) {
        return Err(Error::invalid(
            "max_value_size",
            "must be greater than zero; omit it for no limit of the store's own",
        ));
    }
    if spec
        .max_value_size
        .is_some_and(|size| size > i32::MAX as u32)
    {
        return Err(Error::invalid(
            "max_value_size",
            format!("must be at most {}", i32::MAX),
        ));
    }
    if spec.replicas == Some(0) {
        return Err(Error::invalid(
            "replicas",
            "must be greater than zero; omit it for 1",
        ));
    }
    Ok(())
}

fn stream_name(store: &str) -> String {
    format!("KV_{store}")
}

fn subject(store: &str, key: &str) -> String {
    format!("$KV.{store}.{key}")
}

/// The bucket's stream configuration, as every key-value client makes it (nats.go's defaults, which
/// Windshift used), with the spec's options. When updating, it starts from the existing configuration
/// so settings Jetway does not manage survive.
fn stream_config(
    spec: &StoreSpec,
    existing: Option<&stream::Config>,
) -> Result<stream::Config, Error> {
    let mut config = starting_config(existing, spec.storage, || stream::Config {
        max_messages: -1,
        max_bytes: -1,
        max_consumers: -1,
        ..Default::default()
    })
    .map_err(|stored| {
        Error::conflict(format!(
            "storage: store {} is stored in {stored:?} and its storage type cannot change",
            spec.store
        ))
    })?;
    let ttl = spec.ttl.unwrap_or_default();
    config.name = stream_name(&spec.store);
    config.subjects = vec![subject(&spec.store, ">")];
    config.max_messages_per_subject = i64::from(spec.history.unwrap_or(DEFAULT_HISTORY));
    config.max_age = ttl;
    // JetStream requires the window to fit within max_age.
    config.duplicate_window = if ttl.is_zero() {
        DEFAULT_DEDUPE_WINDOW
    } else {
        ttl.min(DEFAULT_DEDUPE_WINDOW)
    };
    config.max_message_size = spec.max_value_size.map_or(-1, |size| size as i32);
    config.num_replicas = spec.replicas.unwrap_or(1) as usize;
    // What makes a stream a key-value bucket: a purge rolls a key up to one marker, entries are
    // removed only through markers, reads may go to any replica, and a full bucket refuses writes
    // rather than dropping the oldest keys.
    config.allow_rollup = true;
    config.deny_delete = true;
    config.allow_direct = true;
    config.discard = DiscardPolicy::New;
    Ok(config)
}

/// Windshift's Get: the key's current value. A key that was never written, or whose latest entry is
/// a delete or purge marker, is [`ErrorKind::NotFound`].
pub async fn get(nats: &Nats, store: &str, key: &str) -> Result<Entry, Error> {
    validate_store(store)?;
    validate_key("key", key)?;
    match latest(nats, store, key, ReadFrom::AnyReplica)
        .await
        .map_err(|e| about_store(e, store))?
    {
        Some(entry) if entry.operation == Operation::Put => Ok(entry),
        _ => Err(key_not_found(store, key)),
    }
}

/// Which servers may answer a read of a key's latest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFrom {
    /// Any server that holds the store (JetStream direct get), as NATS key-value clients and Windshift
    /// read: cheap for nats-server (no JSON, no base64), but on a cluster a replica may not have a
    /// write that was just acknowledged yet.
    AnyReplica,
    /// The stream leader, through the JetStream API: sees every acknowledged write. Writes that
    /// decide on the latest entry read this way.
    Leader,
}

/// The key's latest entry, markers included. `None` if the key has no entries.
async fn latest(
    nats: &Nats,
    store: &str,
    key: &str,
    from: ReadFrom,
) -> Result<Option<Entry>, Error> {
    let stream = nats
        .jetstream()
        .get_stream_no_info(stream_name(store))
        .await
        .map_err(|err| err.classify())?;
    let subject = subject(store, key);
    let entry = |message: async_nats::jetstream::message::StreamMessage| Entry {
        key: key.to_owned(),
        revision: message.sequence,
        operation: operation(&message.headers),
        time: message.time.into(),
        value: message.payload,
    };
    if from == ReadFrom::AnyReplica {
        use stream::DirectGetErrorKind as K;
        match stream.direct_get_last_for_subject(subject.clone()).await {
            Ok(message) => return Ok(Some(entry(message))),
            Err(err) if matches!(err.kind(), K::NotFound) => return Ok(None),
            // Nobody answers direct gets for this stream: it does not exist, or does not allow
            // direct gets. The leader read below tells which, or reads it.
            Err(err) if matches!(err.kind(), K::ErrorResponse(..)) => {}
            Err(err) => return Err(err.classify()),
        }
    }
    match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => Ok(Some(entry(message))),
        Err(err) if matches!(err.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
            Ok(None)
        }
        Err(err) => Err(err.classify()),
    }
}

/// The operation an entry's headers record: `KV-Operation` from key-value clients, or the marker
/// reason JetStream itself writes when a per-key TTL expires or a marker is removed.
fn operation(headers: &HeaderMap) -> Operation {
    if let Some(op) = headers.get(OPERATION_HEADER) {
        return match op.as_str() {
            DELETE_MARKER => Operation::Delete,
            "PURGE" => Operation::Purge,
            _ => Operation::Put,
        };
    }
    match headers.get(NATS_MARKER_REASON).map(|r| r.as_str()) {
        Some("MaxAge" | "Purge") => Operation::Purge,
        Some("Remove") => Operation::Delete,
        _ => Operation::Put,
    }
}

/// Windshift's Set: stores the value and returns its revision.
pub async fn set(nats: &Nats, write: Write) -> Result<u64, Error> {
    validate_store(&write.store)?;
    validate_key("key", &write.key)?;
    if write.create_only {
        return create(nats, write).await;
    }
    let Write {
        store,
        key,
        value,
        last_revision,
        ..
    } = write;
    publish(nats, &store, &key, value, None, last_revision).await
}

/// Set with `create_only`. The write is conditional on the revision it expects, so of two concurrent
/// creates exactly one wins.
async fn create(nats: &Nats, write: Write) -> Result<u64, Error> {
    let Write {
        store, key, value, ..
    } = write;
    let exists = || {
        Error::new(
            ErrorKind::AlreadyExists,
            format!("key {key} already exists in store {store}"),
        )
        .with_resource(format!("key {key}"))
    };
    // The common case: the key was never written. A conflict from `publish` is always a revision
    // that is not the latest.
    match publish(nats, &store, &key, value.clone(), None, Some(0)).await {
        Err(err) if err.kind() == ErrorKind::Conflict => {}
        done => return done,
    }
    // The key has entries. It may be created again only if the latest is a delete or purge marker.
    let latest = latest(nats, &store, &key, ReadFrom::Leader)
        .await
        .map_err(|e| about_store(e, &store))?;
    let expected = match latest {
        Some(entry) if entry.operation == Operation::Put => return Err(exists()),
        Some(marker) => marker.revision,
        // The entries were removed (expired) in between.
        None => 0,
    };
    publish(nats, &store, &key, value, None, Some(expected))
        .await
        .map_err(|err| match err.kind() {
            // Someone else wrote the key since we looked.
            ErrorKind::Conflict => exists(),
            _ => err,
        })
}

/// Windshift's Delete: writes a delete marker, so the key reads as missing and its history shows the
/// delete. Deleting a missing key succeeds (and writes a marker).
pub async fn delete(
    nats: &Nats,
    store: &str,
    key: &str,
    last_revision: Option<u64>,
) -> Result<(), Error> {
    validate_store(store)?;
    validate_key("key", key)?;
    publish(
        nats,
        store,
        key,
        Bytes::new(),
        Some(DELETE_MARKER),
        last_revision,
    )
    .await
    .map(drop)
}

/// Publishes one entry (a value, or the marker named by `marker`) and waits for JetStream to store
/// it; returns its revision. With `expected`, JetStream stores it only if that is the key's latest
/// revision.
async fn publish(
    nats: &Nats,
    store: &str,
    key: &str,
    value: Bytes,
    marker: Option<&'static str>,
    expected: Option<u64>,
) -> Result<u64, Error> {
    let mut headers = HeaderMap::new();
    if let Some(marker) = marker {
        headers.insert(OPERATION_HEADER, marker);
    }
    if let Some(revision) = expected {
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, revision.to_string());
    }
    let size = value.len() + format::header_size(&headers);
    if !nats.is_connected() {
        return Err(Error::unavailable("not connected to NATS"));
    }
    let message = PublishMessage::build().payload(value).headers(headers);
    let js = nats.jetstream();
    let result = match js.send_publish(subject(store, key), message).await {
        Ok(ack) => ack.await,
        Err(err) => Err(err),
    };
    match result {
        Ok(ack) => Ok(ack.sequence),
        Err(err) => Err(classify_write(nats, err, store, key, expected, size).await),
    }
}

/// Sorts a failed write of `key` to `store` (`expected` and `size` as the message had them; see
/// [`publish_failure::sort`]).
async fn classify_write(
    nats: &Nats,
    err: JsPublishError,
    store: &str,
    key: &str,
    expected: Option<u64>,
    size: usize,
) -> Error {
    let stream = stream_name(store);
    match publish_failure::sort(nats, &err, Target::Stream(&stream)).await {
        Failure::WrongLastSequence => Error::conflict(format!(
            "last_revision {} is not the latest revision of key {key}",
            expected.unwrap_or_default()
        ))
        .with_field("last_revision"),
        Failure::NoStream => store_not_found(store),
        Failure::Unanswered { .. } => {
            Error::unavailable(format!("store {store} did not answer the write"))
        }
        Failure::TimedOut => Error::new(
            ErrorKind::TimedOut,
            "the write timed out waiting for JetStream",
        ),
        Failure::Disconnected(cause) => {
            Error::unavailable(format!("writing to store {store}: {cause}"))
        }
        Failure::TooLarge { limit } => value_too_large(size, limit),
        Failure::StreamFull(api) => {
            publish_failure::full(&format!("store {store} refuses new values"), &api)
        }
        // A store's own headers are a few bytes.
        Failure::HeadersTooLarge(api) | Failure::Api(api) => about_store(api, store),
        Failure::Nats(err) => err,
    }
}

/// The error of a value of `size` bytes, headers included, over the `limit` of the store or NATS.
fn value_too_large(size: usize, limit: usize) -> Error {
    Error::invalid(
        "value",
        format!("the value is {size} bytes with its headers, over the limit of {limit} bytes"),
    )
}

async fn store_exists(nats: &Nats, store: &str) -> Result<bool, Error> {
    publish_failure::stream_exists(nats, &stream_name(store)).await
}

/// The bucket handle for the long-lived reads.
async fn bucket(nats: &Nats, store: &str) -> Result<kv::Store, Error> {
    nats.jetstream()
        .get_key_value(store)
        .await
        .map_err(|err| about_store(err.classify(), store))
}

/// Jetway's Watch: the entries of the keys matching the spec's pattern, from where it says, then
/// every change, in revision order. The stream ends only at an error; if the store is deleted, that
/// error is [`ErrorKind::NotFound`].
pub async fn watch(nats: &Nats, spec: &WatchSpec) -> Result<Entries, Error> {
    validate_store(&spec.store)?;
    let pattern = match spec.key.as_str() {
        "" => ">",
        pattern => {
            validate_key_filter("key", pattern)?;
            pattern
        }
    };
    if let WatchFrom::After(revision) = spec.from
        && revision >= MAX_SEQUENCE
    {
        // The watch starts at the next revision, which must be a sequence JetStream can hold.
        return Err(Error::invalid(
            "after_revision",
            format!("must be below {MAX_SEQUENCE}"),
        ));
    }
    let bucket = bucket(nats, &spec.store).await?;
    let watch = match spec.from {
        WatchFrom::Current => bucket.watch_with_history(pattern).await,
        // Sequence 1 is the start of the stream: everything still stored.
        WatchFrom::History => bucket.watch_from_revision(pattern, 1).await,
        WatchFrom::UpdatesOnly => bucket.watch(pattern).await,
        WatchFrom::After(revision) => {
            bucket
                .watch_from_revision(pattern, revision.saturating_add(1))
                .await
        }
    }
    .map_err(|err| about_store(err.classify(), &spec.store))?;
    let watcher = Watcher {
        nats: nats.clone(),
        store: spec.store.clone(),
        watch,
    };
    Ok(
        futures::stream::unfold(Some(watcher), |watcher| async move {
            let mut watcher = watcher?;
            let item = watcher.next().await?;
            // After an error the stream ends.
            let watcher = item.is_ok().then_some(watcher);
            Some((item, watcher))
        })
        .boxed(),
    )
}

/// One watch's state: the ordered consumer and what is needed to tell why it went quiet.
struct Watcher {
    nats: Nats,
    store: String,
    watch: kv::Watch,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<Entry, Error>> {
        loop {
            match self.watch.next().await? {
                Ok(entry) => return Some(Ok(from_kv(entry))),
                // JetStream stopped talking to the watch. If NATS restarted, the ordered consumer is
                // recreated from the last revision by itself; but if the store was deleted, it would
                // retry forever, so look.
                Err(err) if missed_heartbeat(&err) => {
                    match store_exists(&self.nats, &self.store).await {
                        Ok(false) => {
                            return Some(Err(store_not_found(&self.store)));
                        }
                        Ok(true) | Err(_) => continue,
                    }
                }
                Err(err) => return Some(Err(err.classify())),
            }
        }
    }
}

fn missed_heartbeat(err: &kv::WatcherError) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<OrderedError>())
        .is_some_and(|ordered| ordered.kind() == OrderedErrorKind::MissingHeartbeat)
}

fn from_kv(entry: kv::Entry) -> Entry {
    Entry {
        key: entry.key,
        revision: entry.revision,
        operation: match entry.operation {
            kv::Operation::Put => Operation::Put,
            kv::Operation::Delete => Operation::Delete,
            kv::Operation::Purge => Operation::Purge,
        },
        time: entry.created.into(),
        value: entry.value,
    }
}

/// Jetway's Keys: the keys that have a value, matching `filter` (a pattern; empty means all). JetStream
/// sends the latest entry of every key (headers only), and the filter is applied here, so the cost
/// grows with the number of keys in the store, not with the number that match.
pub async fn keys(nats: &Nats, store: &str, filter: &str) -> Result<KeyNames, Error> {
    validate_store(store)?;
    if !filter.is_empty() {
        validate_key_filter("filter", filter)?;
    }
    let keys = bucket(nats, store)
        .await?
        .keys()
        .await
        .map_err(|err| about_store(err.classify(), store))?;
    let filter = filter.to_owned();
    Ok(keys
        .filter_map(move |key| {
            let item = match key {
                Ok(key) if filter.is_empty() || matches(&filter, &key) => Some(Ok(key)),
                Ok(_) => None,
                Err(err) => Some(Err(err.classify())),
            };
            std::future::ready(item)
        })
        .boxed())
}

/// Whether `key` matches `pattern`: a `*` token matches any one token, and a last `>` token any one
/// or more.
fn matches(pattern: &str, key: &str) -> bool {
    let mut keys = key.split('.');
    for token in pattern.split('.') {
        match (token, keys.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (token, Some(part)) if token == part => {}
            _ => return false,
        }
    }
    keys.next().is_none()
}

/// Jetway's History: every stored entry of the key, oldest first, markers included. A key with no
/// entries is [`ErrorKind::NotFound`].
pub async fn history(nats: &Nats, store: &str, key: &str) -> Result<Entries, Error> {
    validate_store(store)?;
    validate_key("key", key)?;
    let mut history = bucket(nats, store)
        .await?
        .history(key)
        .await
        .map_err(|err| about_store(err.classify(), store))?;
    // The first entry is read here, so an unknown key fails the call instead of giving an empty
    // stream.
    let first = match history.next().await {
        Some(first) => first.map_err(|err| err.classify())?,
        None => {
            return Err(key_not_found(store, key));
        }
    };
    let rest = history.map(|entry| entry.map(from_kv).map_err(|err| err.classify()));
    Ok(
        futures::stream::once(std::future::ready(Ok(from_kv(first))))
            .chain(rest)
            .boxed(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::StorageType;

    #[test]
    fn default_store_matches_the_key_value_defaults() {
        let spec = StoreSpec {
            store: "s".into(),
            ..Default::default()
        };
        let config = stream_config(&spec, None).unwrap();
        assert_eq!(config.name, "KV_s");
        assert_eq!(config.subjects, vec!["$KV.s.>".to_owned()]);
        assert_eq!(config.max_messages_per_subject, 1);
        assert_eq!(
            (
                config.max_messages,
                config.max_bytes,
                config.max_message_size,
                config.max_consumers
            ),
            (-1, -1, -1, -1)
        );
        assert_eq!(config.max_age, Duration::ZERO);
        assert_eq!(config.duplicate_window, DEFAULT_DEDUPE_WINDOW);
        assert_eq!(
            (config.storage, config.num_replicas),
            (StorageType::File, 1)
        );
        assert!(config.allow_rollup && config.deny_delete && config.allow_direct);
        assert_eq!(config.discard, DiscardPolicy::New);
    }

    #[test]
    fn options_apply_and_a_short_ttl_shortens_the_dedupe_window() {
        let spec = StoreSpec {
            store: "s".into(),
            ttl: Some(Duration::from_secs(30)),
            history: Some(5),
            max_value_size: Some(1024),
            storage: Some(Storage::Memory),
            replicas: Some(3),
        };
        let config = stream_config(&spec, None).unwrap();
        assert_eq!(config.max_age, Duration::from_secs(30));
        assert_eq!(config.duplicate_window, Duration::from_secs(30));
        assert_eq!(config.max_messages_per_subject, 5);
        assert_eq!(config.max_message_size, 1024);
        assert_eq!(
            (config.storage, config.num_replicas),
            (StorageType::Memory, 3)
        );
    }

    #[test]
    fn an_update_keeps_unmanaged_settings_and_refuses_a_storage_change() {
        let spec = StoreSpec {
            store: "s".into(),
            history: Some(3),
            ..Default::default()
        };
        let mut existing = stream_config(&spec, None).unwrap();
        existing.description = Some("set elsewhere".into());
        existing.max_bytes = 1 << 20;
        let updated = stream_config(&spec, Some(&existing)).unwrap();
        assert_eq!(updated.description.as_deref(), Some("set elsewhere"));
        assert_eq!(updated.max_bytes, 1 << 20);
        let memory = StoreSpec {
            storage: Some(Storage::Memory),
            ..spec
        };
        assert!(matches!(
            stream_config(&memory, Some(&existing)),
            Err(err) if err.kind() == ErrorKind::Conflict
        ));
    }

    #[test]
    fn a_value_too_large_names_the_field_and_the_limit() {
        let err = value_too_large(2, 1);
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert_eq!(
            err.message(),
            "value: the value is 2 bytes with its headers, over the limit of 1 bytes"
        );
    }

    #[test]
    fn invalid_options_name_the_field() {
        let field = |spec: StoreSpec| {
            let err = validate_spec(&spec).unwrap_err();
            err.field().unwrap_or_default().to_owned()
        };
        let spec = || StoreSpec {
            store: "s".into(),
            ..Default::default()
        };
        assert_eq!(
            field(StoreSpec {
                store: "a.b".into(),
                ..spec()
            }),
            "store"
        );
        assert_eq!(
            field(StoreSpec {
                store: "x".repeat(MAX_STORE_NAME_LEN + 1),
                ..spec()
            }),
            "store"
        );
        for history in [0, MAX_HISTORY + 1] {
            assert_eq!(
                field(StoreSpec {
                    history: Some(history),
                    ..spec()
                }),
                "history"
            );
        }
        for ttl in [Duration::ZERO, MIN_TTL - Duration::from_millis(1)] {
            assert_eq!(
                field(StoreSpec {
                    ttl: Some(ttl),
                    ..spec()
                }),
                "ttl"
            );
        }
        assert_eq!(
            field(StoreSpec {
                max_value_size: Some(0),
                ..spec()
            }),
            "max_value_size"
        );
        assert_eq!(
            field(StoreSpec {
                replicas: Some(0),
                ..spec()
            }),
            "replicas"
        );
        assert!(
            validate_spec(&StoreSpec {
                history: Some(MAX_HISTORY),
                ..spec()
            })
            .is_ok()
        );
    }

    #[test]
    fn patterns_match_whole_tokens() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "x"));
        assert!(matches("*.b", "user/1=x.b"));
        assert!(!matches("a.b", "a.bc"));
    }

    #[test]
    fn operations_come_from_the_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(operation(&headers), Operation::Put);
        headers.insert(OPERATION_HEADER, DELETE_MARKER);
        assert_eq!(operation(&headers), Operation::Delete);
        headers.insert(OPERATION_HEADER, "PURGE");
        assert_eq!(operation(&headers), Operation::Purge);
        let mut marker = HeaderMap::new();
        marker.insert(NATS_MARKER_REASON, "MaxAge");
        assert_eq!(operation(&marker), Operation::Purge);
    }
}
