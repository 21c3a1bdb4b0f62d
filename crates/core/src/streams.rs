//! EnsureStream: validates a stream declaration and creates the JetStream stream, or updates it in
//! place. Windshift-managed settings are written in full on every call (an omitted limit is removed),
//! and settings Windshift does not manage are kept as they are.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{
    ErrorCode,
    stream::{self, DiscardPolicy, StorageType},
};

use crate::{
    Error, Nats,
    error::Classify,
    format,
    names::{validate_filter, validate_name},
};

/// The deduplication window when none is given (and max_age is not shorter).
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// The largest stream sequence a client may give as a start position (2^63−1): JetStream keeps
/// sequences as signed 64-bit numbers in its state files, so a durable consumer starting beyond it
/// is accepted and then lost when nats-server restarts ("corrupt state file"). Every other integer
/// that reaches JetStream's configuration is bounded the same way.
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// Checks a stream sequence that a client gives as a start position (an offset or id).
pub fn validate_sequence(field: &str, sequence: u64) -> Result<(), Error> {
    if sequence > MAX_SEQUENCE {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_SEQUENCE}"),
        ));
    }
    Ok(())
}

/// A position in a stream, used as the start of a consumer or a stream source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPointer {
    /// The first event in the stream.
    Start,
    /// Only events stored from now on.
    End,
    /// The first event stored at or after this time.
    Time(SystemTime),
    /// The event with this stream sequence, and those after it. 0 means the same as `End`.
    Offset(u64),
}

/// What happens when a retention limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discard {
    /// Remove the oldest events.
    #[default]
    Old,
    /// Refuse new events.
    New,
}

/// Where a stream stores its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Storage {
    /// On disk.
    #[default]
    File,
    /// In memory only.
    Memory,
}

/// Retention limits of a stream. `None` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this are removed.
    pub max_age: Option<Duration>,
    /// Most events kept.
    pub max_events: Option<u64>,
    /// Most events kept per subject.
    pub max_events_per_subject: Option<u64>,
    /// Most bytes kept.
    pub max_bytes: Option<u64>,
    /// What to do at a limit.
    pub discard: Discard,
    /// Apply `Discard::New` per subject.
    pub discard_new_per_subject: bool,
}

/// Another stream to copy events from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The source stream's name.
    pub name: String,
    /// Where to start copying; `None` means from the beginning.
    pub from: Option<StreamPointer>,
    /// Copy only events on this subject (at most one is supported).
    pub filter_subjects: Vec<String>,
}

/// Where a stream's events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSource {
    /// Events published on these subjects. Empty means the stream's own name.
    Subjects(Vec<String>),
    /// An exact copy of another stream.
    Mirror(SourceSpec),
    /// The events of several other streams.
    Aggregate(Vec<SourceSpec>),
}

/// A stream declaration, as EnsureStream receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The stream name.
    pub name: String,
    /// Where events come from; exactly one kind is required.
    pub source: Option<StreamSource>,
    /// Retention limits.
    pub retention: Retention,
    /// File (default) or memory.
    pub storage: Option<Storage>,
    /// Replicas in a cluster; defaults to 1.
    pub replicas: Option<u32>,
    /// How long idempotency keys are remembered.
    pub dedupe_window: Option<Duration>,
    /// Largest event body accepted; `None` leaves the NATS max payload as the only limit.
    pub max_event_size: Option<u32>,
}

/// Creates the stream, or updates it in place.
pub async fn ensure_stream(nats: &Nats, spec: &StreamSpec) -> Result<(), Error> {
    validate(spec)?;
    require_sources(nats, spec).await?;
    let applied = apply_config(nats, &spec.name, |existing| {
        to_config(spec, existing, SystemTime::now())
    })
    .await;
    match applied {
        Ok(created) => {
            tracing::info!(stream = %spec.name, created, "stream ensured");
            Ok(())
        }
        Err(ApplyError::Build(err)) => Err(err),
        Err(ApplyError::Refused(err)) if is_placement_refusal(&err) => {
            Err(Error::conflict(placement_message(
                "storage.replicas",
                spec.replicas.unwrap_or(1),
                &format!("stream {}", spec.name),
                &err,
            )))
        }
        Err(ApplyError::Refused(err)) => Err(err.refused(|code, description| {
            if code == ErrorCode::STREAM_INVALID_CONFIG {
                Error::invalid(
                    "stream",
                    format!("JetStream rejected the configuration: {description}"),
                )
            } else {
                Error::conflict(format!(
                    "JetStream rejected the stream {}: {description}",
                    spec.name
                ))
            }
        })),
    }
}

/// Whether JetStream refused a stream because it cannot place its replicas: the cluster has fewer
/// JetStream servers than the replicas asked for (or none that fit its placement).
pub(crate) fn is_placement_refusal(err: &Error) -> bool {
    err.api_code() == Some(ErrorCode::CLUSTER_NO_PEERS)
}

/// The message of a placement refusal, naming the request's `field` and keeping NATS's reason, so the
/// user sees that the replica count is the cause.
pub(crate) fn placement_message(field: &str, replicas: u32, what: &str, err: &Error) -> String {
    let reason = err.api_description().unwrap_or_default();
    format!(
        "{field}: JetStream cannot place {replicas} replicas of {what}: {reason}; ask for at most as \
         many replicas as the NATS cluster has JetStream servers"
    )
}

/// Checks that the streams a mirror or an aggregate copies from exist. JetStream accepts a source
/// that does not, and then retries it (and logs an error) every minute, forever.
async fn require_sources(nats: &Nats, spec: &StreamSpec) -> Result<(), Error> {
    let sources: Vec<(String, &SourceSpec)> = match &spec.source {
        Some(StreamSource::Mirror(source)) => vec![("mirror".to_owned(), source)],
        Some(StreamSource::Aggregate(sources)) => sources
            .iter()
            .enumerate()
            .map(|(i, source)| (format!("aggregate.sources[{i}]"), source))
            .collect(),
        _ => Vec::new(),
    };
    for (field, source) in sources {
        match nats.jetstream().get_stream(&source.name).await {
            Ok(_) => {}
            Err(err) => match err.classify() {
                e if e.api_code() == Some(ErrorCode::STREAM_NOT_FOUND) => {
                    return Err(Error::conflict(format!(
                        "{field}.name: stream {} does not exist; create it first",
                        source.name
                    )));
                }
                e => return Err(e),
            },
        }
    }
    Ok(())
}

/// How applying a stream configuration failed.
pub(crate) enum ApplyError<E> {
    /// The caller's `build` refused.
    Build(E),
    /// JetStream refused (an API error says why) or NATS failed.
    Refused(Error),
}

/// Creates the stream `name`, or updates it in place, with the configuration `build` makes from the
/// existing one (`None` when creating), and says whether it was created. Streams and key-value
/// stores are both ensured this way.
pub(crate) async fn apply_config<E>(
    nats: &Nats,
    name: &str,
    build: impl Fn(Option<&stream::Config>) -> Result<stream::Config, E>,
) -> Result<bool, ApplyError<E>> {
    let js = nats.jetstream();
    // A concurrent ensure may create the stream between our lookup and our create; then the second
    // round updates it instead.
    let mut retried = false;
    loop {
        let existing = match js.get_stream(name).await {
            Ok(stream) => Some(stream.cached_info().config.clone()),
            Err(err) => match err.classify() {
                e if e.api_code() == Some(ErrorCode::STREAM_NOT_FOUND) => None,
                e => return Err(ApplyError::Refused(e)),
            },
        };
        let config = build(existing.as_ref()).map_err(ApplyError::Build)?;
        let created = existing.is_none();
        let result = if created {
            js.create_stream(config).await.map(drop)
        } else {
            js.update_stream(config).await.map(drop)
        };
        match result.map_err(|err| err.classify()) {
            Ok(()) => return Ok(created),
            Err(e) if created && !retried && e.api_code() == Some(ErrorCode::STREAM_NAME_EXIST) => {
                retried = true;
            }
            Err(err) => return Err(ApplyError::Refused(err)),
        }
    }
}

/// The configuration an ensure starts from: the existing one, so settings Jetway does not manage
/// survive, or `fresh()` for a new stream; with `storage` set. Fails with the existing storage type
/// when it differs, because JetStream cannot change it.
pub(crate) fn starting_config(
    existing: Option<&stream::Config>,
    storage: Option<Storage>,
    fresh: impl FnOnce() -> stream::Config,
) -> Result<stream::Config, StorageType> {
    let storage = match storage.unwrap_or_default() {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    };
    if let Some(existing) = existing
        && existing.storage != storage
    {
        return Err(existing.storage);
    }
    let mut config = existing.cloned().unwrap_or_else(fresh);
    config.storage = storage;
    Ok(config)
}

fn validate(spec: &StreamSpec) -> Result<(), Error> {
    validate_name("name", &spec.name)?;
    match &spec.source {
        None => {
            return Err(Error::invalid(
                "source",
                "one of subjects, mirror or aggregate must be set",
            ));
        }
        Some(StreamSource::Subjects(subjects)) => {
            for (i, subject) in subjects.iter().enumerate() {
                validate_filter(&format!("subjects.subjects[{i}]"), subject)?;
            }
        }
        Some(StreamSource::Mirror(source)) => validate_source("mirror", source)?,
        Some(StreamSource::Aggregate(sources)) => {
            if sources.is_empty() {
                return Err(Error::invalid(
                    "aggregate.sources",
                    "must list at least one stream",
                ));
            }
            for (i, source) in sources.iter().enumerate() {
                validate_source(&format!("aggregate.sources[{i}]"), source)?;
            }
        }
    }
    let retention = &spec.retention;
    positive(
        "retention_policy.max_age",
        retention.max_age,
        "omit it for no age limit",
    )?;
    positive(
        "deduplication_window",
        spec.dedupe_window,
        "omit it for the default",
    )?;
    for (field, value) in [
        ("retention_policy.max_events", retention.max_events),
        (
            "retention_policy.max_events_per_subject",
            retention.max_events_per_subject,
        ),
        ("retention_policy.max_bytes", retention.max_bytes),
    ] {
        if value.is_some_and(|v| v > i64::MAX as u64) {
            return Err(Error::invalid(
                field,
                format!("must be at most {}", i64::MAX),
            ));
        }
    }
    if retention.discard_new_per_subject
        && (retention.discard != Discard::New || retention.max_events_per_subject.unwrap_or(0) == 0)
    {
        return Err(Error::invalid(
            "retention_policy.discard_new_per_subject",
            "needs discard_policy DISCARD_POLICY_NEW and a max_events_per_subject",
        ));
    }
    if let (Some(window), Some(max_age)) = (spec.dedupe_window, retention.max_age)
        && window > max_age
    {
        return Err(Error::invalid(
            "deduplication_window",
            "must not be longer than retention_policy.max_age",
        ));
    }
    if spec.replicas == Some(0) {
        return Err(Error::invalid("storage.replicas", "must be greater than 0"));
    }
    if spec
        .max_event_size
        .is_some_and(|size| size > i32::MAX as u32)
    {
        return Err(Error::invalid(
            "max_event_size",
            format!("must be at most {}", i32::MAX),
        ));
    }
    Ok(())
}

fn validate_source(field: &str, source: &SourceSpec) -> Result<(), Error> {
    validate_name(&format!("{field}.name"), &source.name)?;
    if let Some(StreamPointer::Time(time)) = source.from {
        format::validate_time(&format!("{field}.from.time"), time)?;
    }
    match source.filter_subjects.as_slice() {
        [] => Ok(()),
        [filter] => validate_filter(&format!("{field}.filter_subjects[0]"), filter),
        _ => Err(Error::invalid(
            format!("{field}.filter_subjects"),
            "at most one filter subject is supported",
        )),
    }
}

/// A duration that is given must be positive: zero has no useful meaning for these fields.
fn positive(field: &str, value: Option<Duration>, hint: &str) -> Result<(), Error> {
    match value {
        Some(d) if d.is_zero() => Err(Error::invalid(
            field,
            format!("must be greater than zero; {hint}"),
        )),
        _ => Ok(()),
    }
}

/// Builds the JetStream configuration: from the existing one when updating, so settings Windshift
/// does not manage survive, with every Windshift-managed setting written in full.
fn to_config(
    spec: &StreamSpec,
    existing: Option<&stream::Config>,
    now: SystemTime,
) -> Result<stream::Config, Error> {
    let mut config = starting_config(existing, spec.storage, || stream::Config {
        max_consumers: -1,
        ..Default::default()
    })
    .map_err(|stored| {
        Error::conflict(format!(
            "storage.type: stream {} is stored in {stored:?} and its storage type cannot change",
            spec.name
        ))
    })?;
    let retention = &spec.retention;
    let limit = |value: Option<u64>| match value {
        Some(v) if v > 0 => v as i64,
        _ => -1,
    };
    config.name = spec.name.clone();
    config.max_age = retention.max_age.unwrap_or_default();
    config.max_messages = limit(retention.max_events);
    config.max_messages_per_subject = limit(retention.max_events_per_subject);
    config.max_bytes = limit(retention.max_bytes);
    config.discard = match retention.discard {
        Discard::Old => DiscardPolicy::Old,
        Discard::New => DiscardPolicy::New,
    };
    config.discard_new_per_subject = retention.discard_new_per_subject;
    config.num_replicas = spec.replicas.unwrap_or(1) as usize;
    config.duplicate_window = spec.dedupe_window.unwrap_or(match retention.max_age {
        Some(max_age) => max_age.min(DEFAULT_DEDUPE_WINDOW),
        None => DEFAULT_DEDUPE_WINDOW,
    });
    config.max_message_size = spec
        .max_event_size
        .filter(|size| *size > 0)
        .map_or(-1, |size| size as i32);
    config.subjects = Vec::new();
    config.mirror = None;
    config.sources = None;
    #[expect(
        clippy::expect_used,
        reason = "`validate` rejects a spec without a source"
    )]
    let source = spec.source.as_ref().expect("validated");
    match source {
        StreamSource::Subjects(subjects) => config.subjects = subjects.clone(),
        StreamSource::Mirror(source) => {
            let previous = existing.and_then(|e| e.mirror.as_ref());
            config.mirror = Some(to_source(source, previous, now));
        }
        StreamSource::Aggregate(sources) => {
            let previous = existing
                .and_then(|e| e.sources.as_deref())
                .unwrap_or_default();
            config.sources = Some(
                sources
                    .iter()
                    .map(|source| {
                        let same = previous.iter().find(|p| p.name == source.name);
                        to_source(source, same, now)
                    })
                    .collect(),
            );
        }
    }
    Ok(config)
}

/// Maps one source. A source that already exists keeps its start position: the pointer only decides
/// where a new source starts, and re-resolving `End` to a new "now" would make every re-ensure a
/// change (which JetStream refuses for mirrors).
fn to_source(
    spec: &SourceSpec,
    previous: Option<&stream::Source>,
    now: SystemTime,
) -> stream::Source {
    let filter_subject = spec.filter_subjects.first().cloned();
    if let Some(previous) = previous
        && previous.name == spec.name
    {
        return stream::Source {
            filter_subject,
            ..previous.clone()
        };
    }
    let (start_sequence, start_time) = match spec.from.unwrap_or(StreamPointer::Start) {
        StreamPointer::Start => (None, None),
        StreamPointer::Offset(seq) if seq > 0 => (Some(seq), None),
        StreamPointer::Time(time) => (None, Some(format::start_time(time))),
        StreamPointer::End | StreamPointer::Offset(_) => (None, Some(format::start_time(now))),
    };
    stream::Source {
        name: spec.name.clone(),
        start_sequence,
        start_time,
        filter_subject,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: StreamSource) -> StreamSpec {
        StreamSpec {
            name: "orders".into(),
            source: Some(source),
            retention: Retention::default(),
            storage: None,
            replicas: None,
            dedupe_window: None,
            max_event_size: None,
        }
    }

    #[test]
    fn defaults_match_windshift() {
        let config = to_config(
            &spec(StreamSource::Subjects(vec!["orders.>".into()])),
            None,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(config.duplicate_window, DEFAULT_DEDUPE_WINDOW);
        assert_eq!(config.num_replicas, 1);
        assert_eq!(config.storage, StorageType::File);
        assert_eq!(config.discard, DiscardPolicy::Old);
        assert_eq!(
            (
                config.max_messages,
                config.max_bytes,
                config.max_message_size
            ),
            (-1, -1, -1)
        );
        assert_eq!(config.max_consumers, -1);
    }

    #[test]
    fn short_max_age_shortens_the_dedupe_window() {
        let mut s = spec(StreamSource::Subjects(vec![]));
        s.retention.max_age = Some(Duration::from_secs(30));
        let config = to_config(&s, None, SystemTime::now()).unwrap();
        assert_eq!(config.duplicate_window, Duration::from_secs(30));
    }

    #[test]
    fn mirror_without_from_starts_at_the_beginning_and_keeps_its_start_on_update() {
        let now = SystemTime::now();
        let mut s = spec(StreamSource::Mirror(SourceSpec {
            name: "a".into(),
            from: None,
            filter_subjects: vec![],
        }));
        let created = to_config(&s, None, now).unwrap();
        let mirror = created.mirror.clone().unwrap();
        assert_eq!((mirror.start_sequence, mirror.start_time), (None, None));

        s.source = Some(StreamSource::Mirror(SourceSpec {
            name: "a".into(),
            from: Some(StreamPointer::End),
            filter_subjects: vec![],
        }));
        let first = to_config(&s, None, now).unwrap();
        let again = to_config(&s, Some(&first), now + Duration::from_secs(5)).unwrap();
        assert_eq!(first.mirror, again.mirror);
    }

    #[test]
    fn invalid_declarations_name_the_field() {
        let field = |s: StreamSpec| match validate(&s) {
            Err(err) => err.field().unwrap_or("(no field)").to_owned(),
            other => panic!("expected invalid, got {other:?}"),
        };
        let mut s = spec(StreamSource::Subjects(vec![
            "ok".into(),
            "bad subject".into(),
        ]));
        assert_eq!(field(s.clone()), "subjects.subjects[1]");
        s.source = None;
        assert_eq!(field(s.clone()), "source");
        s.source = Some(StreamSource::Subjects(vec![]));
        s.replicas = Some(0);
        assert_eq!(field(s.clone()), "storage.replicas");
        s.replicas = None;
        s.retention.max_age = Some(Duration::ZERO);
        assert_eq!(field(s.clone()), "retention_policy.max_age");
        s.retention.max_age = None;
        s.retention.discard_new_per_subject = true;
        assert_eq!(field(s.clone()), "retention_policy.discard_new_per_subject");
        s.retention.discard_new_per_subject = false;
        s.source = Some(StreamSource::Aggregate(vec![SourceSpec {
            name: "x".into(),
            from: None,
            filter_subjects: vec!["a".into(), "b".into()],
        }]));
        assert_eq!(field(s), "aggregate.sources[0].filter_subjects");
    }
}
