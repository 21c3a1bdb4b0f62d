//! EnsureConsumer and DeleteConsumer: durable consumers (named) and ephemeral ones (a generated UUID
//! name that JetStream removes after an hour without a subscriber), all pull-based with explicit acks.
//!
//! Unnamed consumers are capped per stream ([`UnnamedLimit`]): each one lives for an hour, and
//! nats-server 2.15 allows a stream 1,000 consumers unless configured otherwise
//! (`jetstream { limits { default_max_consumers } }`, for streams with `max_consumers: -1`, which is
//! what Jetway creates). Without a cap, a burst of unnamed EnsureConsumer calls would take them all
//! for an hour, and every read, live subscription and named consumer on the stream would fail. They
//! are counted by name: Jetway names them, and only them, as a UUID v4 (Windshift's format); its own
//! readers have a name of their own ([`crate::reads`]).
//!
//! Jetway's EnsureConsumer adds a delivery policy: JetStream's `max_deliver` and `backoff`, and a
//! dead-letter stream, kept in the consumer's metadata (see [`crate::dead_letters`]). Windshift's
//! EnsureConsumer leaves a policy as it is.

use std::{hash::BuildHasher, time::Duration};

use async_nats::jetstream::{
    ErrorCode,
    consumer::{self, AckPolicy, DeliverPolicy, FromConsumer, pull},
    stream,
};

use crate::{
    Error, Nats, dead_letters,
    error::{Classify, about_consumer, api_request},
    format,
    names::{subjects_overlap, validate_filter, validate_name},
    streams::StreamPointer,
};

/// The processing timeout when none is given.
pub const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_secs(30);
/// How long JetStream keeps an ephemeral consumer without a subscriber.
pub const EPHEMERAL_INACTIVE_THRESHOLD: Duration = Duration::from_secs(60 * 60);
/// How long JetStream keeps a durable consumer without a subscriber (30 days).
pub const DURABLE_INACTIVE_THRESHOLD: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A consumer declaration, as EnsureConsumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The stream to read.
    pub stream: String,
    /// The durable name; `None` or empty creates an ephemeral consumer.
    pub name: Option<String>,
    /// Subject filters (at least one; wildcards allowed).
    pub subjects: Vec<String>,
    /// Where a new consumer starts; `None` means new events only.
    pub from: Option<StreamPointer>,
    /// How long a delivered event may stay unsettled. `None` keeps the current value on update, and
    /// means 30 s on create.
    pub processing_timeout: Option<Duration>,
    /// The delivery policy, written in full; `None` keeps the current one (Windshift's
    /// EnsureConsumer has none).
    pub delivery: Option<DeliveryPolicy>,
}

/// How often and how patiently a consumer delivers an event, and where the events it gives up on go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// The most deliveries of one event; `None` is no limit.
    pub max_deliveries: Option<u32>,
    /// Processing timeouts per delivery (the last one repeats); replaces the processing timeout.
    pub backoff: Vec<Duration>,
    /// The dead-letter stream for events that run out of deliveries or are rejected permanently.
    pub dead_letter_stream: Option<String>,
}

/// The longest processing timeout or backoff entry accepted. Jetway tracks each delivery until its
/// timeout, and a week is past any sensible unit of work (the tracking timer also tops out at about
/// two years).
pub const MAX_PROCESSING_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The shortest processing timeout or backoff entry accepted. JetStream redelivers an event the
/// moment its processing timeout passes, whether or not its subscriber is still at work, so a
/// timeout of a few milliseconds redelivers every event thousands of times a second. NATS enforces
/// no floor and Google Pub/Sub's is 10 s (its shortest ack deadline); one second still lets quick
/// work use quick redelivery.
pub const MIN_PROCESSING_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks a processing timeout (or a backoff entry, which is one) given by a client.
fn validate_timeout(field: &str, timeout: Duration) -> Result<(), Error> {
    if timeout < MIN_PROCESSING_TIMEOUT {
        return Err(Error::invalid(
            field,
            format!("must be at least {MIN_PROCESSING_TIMEOUT:?}"),
        ));
    }
    if timeout > MAX_PROCESSING_TIMEOUT {
        return Err(Error::invalid(field, "must be at most 7 days (168h)"));
    }
    Ok(())
}

/// The most entries a backoff schedule may have.
pub const MAX_BACKOFF_ENTRIES: usize = 100;

/// The most unnamed consumers one stream may have when none is configured: half of nats-server's
/// default of 1,000 consumers per stream, so the other half stays for named consumers, reads and
/// live subscriptions.
pub const DEFAULT_MAX_UNNAMED_PER_STREAM: usize = 500;

/// How many locks the creations of unnamed consumers are spread over, by stream name.
const CREATION_LOCKS: usize = 64;

/// The cap on unnamed consumers per stream. Creating one counts those the stream has and creates it
/// only below the cap, one creation at a time per stream in this process, so the cap is exact for
/// one Jetway server; several servers creating on one stream at the same moment can each add one
/// more.
pub struct UnnamedLimit {
    max_per_stream: usize,
    /// Serialise the count-then-create of a stream; a fixed set, so streams cost no memory here.
    creating: [tokio::sync::Mutex<()>; CREATION_LOCKS],
}

impl UnnamedLimit {
    /// A cap of `max_per_stream` unnamed consumers on each stream.
    pub fn new(max_per_stream: usize) -> Self {
        UnnamedLimit {
            max_per_stream,
            creating: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }

    fn lock_for(&self, stream: &str) -> &tokio::sync::Mutex<()> {
        let hash = foldhash::fast::FixedState::default().hash_one(stream);
        // The remainder is below CREATION_LOCKS, so it fits.
        &self.creating[(hash % CREATION_LOCKS as u64) as usize]
    }
}

/// Whether `name` is one Jetway gives an unnamed consumer: a UUID v4, lowercase and hyphenated. A
/// durable consumer a client named like that is counted too.
pub fn is_unnamed(name: &str) -> bool {
    uuid::Uuid::try_parse(name).is_ok_and(|id| {
        id.get_version_num() == 4
            && id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                == name
    })
}

/// The error of EnsureConsumer when the stream has as many unnamed consumers as [`UnnamedLimit`]
/// allows.
fn too_many_unnamed(stream: &str, limit: usize) -> Error {
    Error::limit_reached(
        "MAX_UNNAMED_CONSUMERS_PER_STREAM",
        format!(
            "stream {stream} has {limit} unnamed consumers, the most allowed per stream; name the \
             consumer, delete unnamed ones no longer used, or wait for them to expire (1 h after \
             their last subscriber)"
        ),
    )
}

/// A pull request within the consumer's own request limits (`max_batch`, `max_bytes`, `max_expires`;
/// zero means none), which JetStream enforces by refusing the whole pull: at most `batch` events of
/// at most `bytes` in all (0: any), waiting at most `expires` (`None`: no wait).
///
/// Under a byte limit of the consumer's below `bytes`, the pull asks for one event and no byte
/// limit: JetStream checks only a limit that is asked for, asking for the consumer's would make it
/// refuse every event larger than that, and one event is at most NATS's max payload.
pub(crate) fn within_request_limits(
    config: &consumer::Config,
    batch: usize,
    bytes: usize,
    expires: Option<Duration>,
) -> (usize, usize, Option<Duration>) {
    let (batch, bytes) = match usize::try_from(config.max_bytes) {
        Ok(limit) if limit > 0 && bytes > limit => (1, 0),
        _ => (batch, bytes),
    };
    let batch = match usize::try_from(config.max_batch) {
        Ok(limit) if limit > 0 => batch.min(limit),
        _ => batch,
    };
    let expires = match config.max_expires {
        limit if !limit.is_zero() => expires.map(|expires| expires.min(limit)),
        _ => expires,
    };
    (batch, bytes, expires)
}

/// Checks that a consumer can hand events out one at a time, for `call` (Events, Fetch): a pull
/// consumer with explicit acks. With no acks JetStream ignores every ack, reject and nak, so nothing
/// is redelivered; with "ack all" one ack settles every earlier event, also those held elsewhere.
pub(crate) fn require_explicit_acks(
    config: &consumer::Config,
    stream: &str,
    name: &str,
    call: &str,
) -> Result<(), Error> {
    let wrong = if config.deliver_subject.is_some() {
        "is a push consumer; it needs a pull consumer"
    } else if config.ack_policy != AckPolicy::Explicit {
        "does not use explicit acks; it needs them"
    } else {
        return Ok(());
    };
    Err(Error::conflict(format!(
        "consumer {name} on stream {stream} {wrong} for {call}"
    )))
}

/// Creates or updates a consumer and returns its name. Updating a durable keeps its position and every
/// setting this request does not manage. An unnamed consumer is created only while the stream has
/// fewer than `unnamed` allows.
pub async fn ensure_consumer(
    nats: &Nats,
    spec: &ConsumerSpec,
    unnamed: &UnnamedLimit,
) -> Result<String, Error> {
    validate_name("stream", &spec.stream)?;
    if spec.subjects.is_empty() {
        return Err(Error::invalid(
            "subjects",
            "one or more subjects must be specified",
        ));
    }
    for (i, subject) in spec.subjects.iter().enumerate() {
        validate_filter(&format!("subjects[{i}]"), subject)?;
    }
    let durable = spec.name.as_deref().filter(|name| !name.is_empty());
    if let Some(name) = durable {
        validate_name("name", name)?;
    }
    if let Some(StreamPointer::Time(time)) = spec.from {
        format::validate_time("from.time", time)?;
    }
    match spec.processing_timeout {
        Some(timeout) if timeout.is_zero() => {
            return Err(Error::invalid(
                "processing_timeout",
                "must be greater than zero; omit it for the default of 30s",
            ));
        }
        Some(timeout) => validate_timeout("processing_timeout", timeout)?,
        None => {}
    }
    if let Some(policy) = &spec.delivery {
        validate_policy(spec, policy)?;
    }
    let js = nats.jetstream();
    let stream = js
        .get_stream(&spec.stream)
        .await
        .map_err(|err| about_consumer(err.classify(), &spec.stream, ""))?;
    validate_filters_in(&spec.subjects, stream.cached_info())?;
    if let Some(dead_letters) = spec
        .delivery
        .as_ref()
        .and_then(|policy| policy.dead_letter_stream.as_ref())
    {
        // Before the consumer exists, so no event it gives up on finds the way unprepared.
        dead_letters::prepare(nats, dead_letters).await?;
    }

    // Held from the count to the creation (see `UnnamedLimit`).
    let mut _creating = None;
    let (name, config) = match durable {
        None => {
            _creating = Some(unnamed.lock_for(&spec.stream).lock().await);
            if count_unnamed(nats, &spec.stream, unnamed.max_per_stream).await?
                >= unnamed.max_per_stream
            {
                return Err(too_many_unnamed(&spec.stream, unnamed.max_per_stream));
            }
            let name = uuid::Uuid::new_v4().to_string();
            let config = pull::Config {
                name: Some(name.clone()),
                deliver_policy: deliver_policy(spec.from),
                inactive_threshold: EPHEMERAL_INACTIVE_THRESHOLD,
                ..managed(spec, None)
            };
            (name, config)
        }
        Some(name) => {
            let existing = match js
                .get_consumer_from_stream::<consumer::Config, _, _>(name, &spec.stream)
                .await
            {
                Ok(consumer) => Some(consumer.cached_info().config.clone()),
                Err(err) => match err.classify() {
                    err if err.api_code() == Some(ErrorCode::CONSUMER_NOT_FOUND) => None,
                    err => return Err(about_consumer(err, &spec.stream, name)),
                },
            };
            let config = match existing {
                Some(existing) => {
                    let existing = pull::Config::try_from_consumer_config(existing).map_err(|_| {
                        Error::conflict(format!(
                            "consumer {name} on stream {} is a push consumer; Jetway only serves pull consumers",
                            spec.stream
                        ))
                    })?;
                    // JetStream would keep the backoff and take its first entry over the new
                    // timeout: the call would succeed and change nothing.
                    if spec.delivery.is_none()
                        && spec
                            .processing_timeout
                            .is_some_and(|t| existing.backoff.first().is_some_and(|&b| b != t))
                    {
                        return Err(Error::conflict(format!(
                            "processing_timeout: consumer {name} on stream {} has a backoff \
                             schedule, whose first entry is its processing timeout; give it a \
                             delivery policy without backoff first (jetway.events.v1 EnsureConsumer)",
                            spec.stream
                        )));
                    }
                    managed(spec, Some(existing))
                }
                None => pull::Config {
                    durable_name: Some(name.to_owned()),
                    name: Some(name.to_owned()),
                    deliver_policy: deliver_policy(spec.from),
                    inactive_threshold: DURABLE_INACTIVE_THRESHOLD,
                    ..managed(spec, None)
                },
            };
            (name.to_owned(), config)
        }
    };
    js.create_consumer_on_stream(config, &spec.stream)
        .await
        .map_err(|err| {
            about_consumer(err.classify(), &spec.stream, &name).refused(|code, description| {
                Error::conflict(format!("JetStream error {}: {description}", code.0))
            })
        })?;
    tracing::info!(stream = %spec.stream, consumer = %name, durable = durable.is_some(), "consumer ensured");
    Ok(name)
}

/// How many unnamed consumers `stream` has, counting up to `enough`. The names come a page (up to
/// 1,024) at a time.
async fn count_unnamed(nats: &Nats, stream: &str, enough: usize) -> Result<usize, Error> {
    let mut count = 0;
    let mut offset = 0;
    loop {
        let answer = api_request(
            nats,
            format!("CONSUMER.NAMES.{stream}"),
            serde_json::json!({ "offset": offset }),
        )
        .await
        .map_err(|err| about_consumer(err, stream, ""))?;
        // An empty page is `null`.
        let names = answer["consumers"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        count += names
            .iter()
            .filter(|name| name.as_str().is_some_and(is_unnamed))
            .count();
        offset += names.len();
        let total = answer["total"].as_u64().unwrap_or_default();
        if count >= enough || names.is_empty() || offset as u64 >= total {
            return Ok(count);
        }
    }
}

/// Checks that each filter can match events of the stream: JetStream accepts a filter outside the
/// stream's subjects, and the consumer then never delivers anything. The events of a mirror or of
/// a stream with sources keep their sources' subjects, so there any filter may match.
fn validate_filters_in(filters: &[String], stream: &stream::Info) -> Result<(), Error> {
    let config = &stream.config;
    if config.mirror.is_some() || config.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        return Ok(());
    }
    for (i, filter) in filters.iter().enumerate() {
        if !config.subjects.iter().any(|s| subjects_overlap(filter, s)) {
            return Err(Error::invalid(
                format!("subjects[{i}]"),
                format!(
                    "{filter} matches none of the subjects of stream {} ({}), so the consumer would never receive an event",
                    config.name,
                    config.subjects.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn validate_policy(spec: &ConsumerSpec, policy: &DeliveryPolicy) -> Result<(), Error> {
    if policy.max_deliveries == Some(0) {
        return Err(Error::invalid(
            "max_deliveries",
            "must be at least 1; omit it for no limit",
        ));
    }
    if policy.backoff.len() > MAX_BACKOFF_ENTRIES {
        return Err(Error::invalid(
            "backoff",
            format!("must have at most {MAX_BACKOFF_ENTRIES} entries"),
        ));
    }
    for (i, timeout) in policy.backoff.iter().enumerate() {
        validate_timeout(&format!("backoff[{i}]"), *timeout)?;
    }
    if !policy.backoff.is_empty() && spec.processing_timeout.is_some() {
        return Err(Error::invalid(
            "processing_timeout",
            "cannot be combined with backoff, whose first entry is the processing timeout",
        ));
    }
    if let Some(max) = policy.max_deliveries
        && policy.backoff.len() > max as usize
    {
        return Err(Error::invalid(
            "backoff",
            format!(
                "has {} entries, more than max_deliveries ({max})",
                policy.backoff.len()
            ),
        ));
    }
    if let Some(dead_letters) = &policy.dead_letter_stream {
        validate_name("dead_letter_stream", dead_letters)?;
        if *dead_letters == spec.stream {
            return Err(Error::invalid(
                "dead_letter_stream",
                "must be another stream than the consumer's",
            ));
        }
    }
    Ok(())
}

/// Deletes a consumer.
pub async fn delete_consumer(nats: &Nats, stream: &str, consumer: &str) -> Result<(), Error> {
    validate_name("stream", stream)?;
    validate_name("id", consumer)?;
    nats.jetstream()
        .delete_consumer_from_stream(consumer, stream)
        .await
        .map_err(|err| about_consumer(err.classify(), stream, consumer))?;
    tracing::info!(%stream, %consumer, "consumer deleted");
    Ok(())
}

/// The settings EnsureConsumer manages, over `base` (the existing config on update). A single filter
/// goes in `filter_subject` and several in `filter_subjects`, and the other field is always cleared:
/// JetStream refuses a consumer with both.
fn managed(spec: &ConsumerSpec, base: Option<pull::Config>) -> pull::Config {
    let updating = base.is_some();
    let mut config = base.unwrap_or_default();
    config.ack_policy = AckPolicy::Explicit;
    match spec.subjects.as_slice() {
        [one] => {
            config.filter_subject = one.clone();
            config.filter_subjects = Vec::new();
        }
        many => {
            config.filter_subject = String::new();
            config.filter_subjects = many.to_vec();
        }
    }
    config.ack_wait = match spec.processing_timeout {
        Some(timeout) => timeout,
        None if updating => config.ack_wait,
        None => DEFAULT_PROCESSING_TIMEOUT,
    };
    if let Some(policy) = &spec.delivery {
        config.max_deliver = policy.max_deliveries.map_or(-1, i64::from);
        config.backoff = policy.backoff.clone();
        // JetStream takes the first backoff entry as the processing timeout anyway.
        if let Some(first) = policy.backoff.first() {
            config.ack_wait = *first;
        }
        match &policy.dead_letter_stream {
            Some(stream) => {
                config
                    .metadata
                    .insert(dead_letters::METADATA_KEY.to_owned(), stream.clone());
            }
            None => {
                config.metadata.remove(dead_letters::METADATA_KEY);
            }
        }
    }
    config
}

fn deliver_policy(from: Option<StreamPointer>) -> DeliverPolicy {
    match from {
        Some(StreamPointer::Time(time)) => DeliverPolicy::ByStartTime {
            start_time: format::start_time(time),
        },
        Some(StreamPointer::Offset(seq)) if seq > 0 => DeliverPolicy::ByStartSequence {
            start_sequence: seq,
        },
        Some(StreamPointer::Start) => DeliverPolicy::All,
        _ => DeliverPolicy::New,
    }
}

/// The processing timeout of an existing consumer, as Subscribe reports it.
pub fn processing_timeout(info: &consumer::Info) -> Duration {
    if info.config.ack_wait.is_zero() {
        DEFAULT_PROCESSING_TIMEOUT
    } else {
        info.config.ack_wait
    }
}

/// How long JetStream waits for the settlement of an event's `attempt`-th delivery: its backoff
/// entry (the last one repeats), or else the processing timeout. Capped at
/// [`MAX_PROCESSING_TIMEOUT`] for consumers made by other tools with a longer one: Jetway then
/// forgets the delivery earlier (a later settlement is invalid), and JetStream still redelivers it
/// on its own timer.
pub(crate) fn attempt_timeout(config: &consumer::Config, attempt: u64) -> Duration {
    let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
    let timeout = match config.backoff.get(index).or(config.backoff.last()) {
        Some(timeout) => *timeout,
        None if config.ack_wait.is_zero() => DEFAULT_PROCESSING_TIMEOUT,
        None => config.ack_wait,
    };
    timeout.min(MAX_PROCESSING_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_unnamed_consumers_names_the_variable() {
        let err = too_many_unnamed("s", 5);
        assert_eq!(err.kind(), crate::ErrorKind::LimitReached);
        assert_eq!(err.limit(), Some("MAX_UNNAMED_CONSUMERS_PER_STREAM"));
        assert!(
            err.message()
                .starts_with("stream s has 5 unnamed consumers"),
            "{err}"
        );
    }

    fn spec(subjects: &[&str]) -> ConsumerSpec {
        ConsumerSpec {
            stream: "s".into(),
            name: Some("d".into()),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            from: None,
            processing_timeout: None,
            delivery: None,
        }
    }

    #[test]
    fn unnamed_consumers_are_told_apart_by_their_uuid_v4_name() {
        assert!(is_unnamed(&uuid::Uuid::new_v4().to_string()));
        assert!(!is_unnamed("billing"));
        assert!(!is_unnamed(&uuid::Uuid::new_v4().simple().to_string()));
        assert!(!is_unnamed(
            &uuid::Uuid::new_v4().to_string().to_uppercase()
        ));
        assert!(!is_unnamed(&format!("{}_1", uuid::Uuid::new_v4())));
        assert!(!is_unnamed("00000000-0000-0000-0000-000000000000"));
    }

    #[test]
    fn one_filter_and_several_filters_never_coexist() {
        let several = managed(&spec(&["a", "b"]), None);
        assert_eq!(
            (
                several.filter_subject.as_str(),
                several.filter_subjects.len()
            ),
            ("", 2)
        );
        let one = managed(&spec(&["c"]), Some(several));
        assert_eq!(one.filter_subject, "c");
        assert!(one.filter_subjects.is_empty());
    }

    #[test]
    fn update_without_timeout_keeps_the_current_one() {
        let base = pull::Config {
            ack_wait: Duration::from_secs(7),
            ..Default::default()
        };
        assert_eq!(
            managed(&spec(&["a"]), Some(base)).ack_wait,
            Duration::from_secs(7)
        );
        assert_eq!(
            managed(&spec(&["a"]), None).ack_wait,
            DEFAULT_PROCESSING_TIMEOUT
        );
    }

    #[test]
    fn a_delivery_policy_is_written_in_full_and_none_keeps_the_current_one() {
        let policy = DeliveryPolicy {
            max_deliveries: Some(3),
            backoff: vec![Duration::from_secs(1), Duration::from_secs(5)],
            dead_letter_stream: Some("dead".into()),
        };
        let with_policy = ConsumerSpec {
            delivery: Some(policy),
            ..spec(&["a"])
        };
        let config = managed(&with_policy, None);
        assert_eq!(config.max_deliver, 3);
        assert_eq!(config.ack_wait, Duration::from_secs(1));
        assert_eq!(config.metadata[dead_letters::METADATA_KEY], "dead");
        let kept = managed(&spec(&["a"]), Some(config.clone()));
        assert_eq!((kept.max_deliver, kept.backoff.len()), (3, 2));
        let cleared = managed(
            &ConsumerSpec {
                delivery: Some(DeliveryPolicy::default()),
                ..spec(&["a"])
            },
            Some(config),
        );
        assert_eq!(cleared.max_deliver, -1);
        assert!(cleared.backoff.is_empty() && cleared.metadata.is_empty());
    }

    #[test]
    fn tracking_never_outlasts_the_longest_processing_timeout() {
        let config = consumer::Config {
            ack_wait: Duration::from_secs(3 * 365 * 24 * 3600),
            ..Default::default()
        };
        assert_eq!(attempt_timeout(&config, 1), MAX_PROCESSING_TIMEOUT);
    }

    #[test]
    fn attempts_take_their_backoff_entry_and_the_last_one_repeats() {
        let mut config = consumer::Config {
            ack_wait: Duration::from_secs(7),
            ..Default::default()
        };
        assert_eq!(attempt_timeout(&config, 3), Duration::from_secs(7));
        config.backoff = vec![Duration::from_secs(1), Duration::from_secs(2)];
        let timeouts: Vec<_> = (1..=4)
            .map(|n| attempt_timeout(&config, n).as_secs())
            .collect();
        assert_eq!(timeouts, [1, 2, 2, 2]);
    }

    #[test]
    fn bad_delivery_policies_name_their_field() {
        let field = |policy: DeliveryPolicy, timeout: Option<Duration>| {
            let spec = ConsumerSpec {
                processing_timeout: timeout,
                ..spec(&["a"])
            };
            validate_policy(&spec, &policy)
                .unwrap_err()
                .field()
                .unwrap_or_default()
                .to_owned()
        };
        let second = Duration::from_secs(1);
        let policy =
            |max: Option<u32>, backoff: Vec<Duration>, dead: Option<&str>| DeliveryPolicy {
                max_deliveries: max,
                backoff,
                dead_letter_stream: dead.map(str::to_owned),
            };
        assert_eq!(field(policy(Some(0), vec![], None), None), "max_deliveries");
        assert_eq!(
            field(policy(None, vec![second, Duration::ZERO], None), None),
            "backoff[1]"
        );
        assert_eq!(
            field(
                policy(None, vec![second, Duration::from_millis(999)], None),
                None
            ),
            "backoff[1]"
        );
        assert_eq!(
            field(
                policy(None, vec![MAX_PROCESSING_TIMEOUT + second], None),
                None
            ),
            "backoff[0]"
        );
        assert_eq!(
            field(policy(Some(1), vec![second, second], None), None),
            "backoff"
        );
        assert_eq!(
            field(policy(None, vec![second], None), Some(second)),
            "processing_timeout"
        );
        assert_eq!(
            field(policy(None, vec![], Some("a.b")), None),
            "dead_letter_stream"
        );
        assert_eq!(
            field(policy(None, vec![], Some("s")), None),
            "dead_letter_stream"
        );
    }

    #[test]
    fn start_pointers_map_to_deliver_policies() {
        assert_eq!(deliver_policy(None), DeliverPolicy::New);
        assert_eq!(deliver_policy(Some(StreamPointer::End)), DeliverPolicy::New);
        assert_eq!(
            deliver_policy(Some(StreamPointer::Offset(0))),
            DeliverPolicy::New
        );
        assert_eq!(
            deliver_policy(Some(StreamPointer::Start)),
            DeliverPolicy::All
        );
        assert_eq!(
            deliver_policy(Some(StreamPointer::Offset(3))),
            DeliverPolicy::ByStartSequence { start_sequence: 3 }
        );
    }
}
