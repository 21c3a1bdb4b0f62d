//! What administration shows of a stream or a consumer, in Jetway's own terms: JetStream's info
//! answers are read here, once, so no transport sees an async-nats type. Limits JetStream stores as
//! -1 or 0 when there are none become `None`; a consumer's filter is one list however it was set.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{
    consumer,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};

use crate::{
    consumers::processing_timeout,
    dead_letters,
    streams::{Discard, Storage},
};

/// What a stream does with events once they are consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionKind {
    /// Kept until a limit removes them.
    Limits,
    /// Kept while some consumer has yet to acknowledge them.
    Interest,
    /// Removed once one consumer acknowledged them.
    WorkQueue,
}

/// A stream's configuration, as administration shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// The subjects it captures (empty for a mirror).
    pub subjects: Vec<String>,
    /// The stream it mirrors, if it is a mirror.
    pub mirror: Option<String>,
    /// The streams it sources from.
    pub sources: Vec<String>,
    /// Its retention.
    pub retention: RetentionKind,
    /// Events older than this are removed.
    pub max_age: Option<Duration>,
    /// Most events kept.
    pub max_events: Option<u64>,
    /// Most events kept per subject.
    pub max_events_per_subject: Option<u64>,
    /// Most bytes kept.
    pub max_bytes: Option<u64>,
    /// What goes when a limit is reached.
    pub discard: Discard,
    /// Where events are stored.
    pub storage: Storage,
    /// How many copies a cluster keeps.
    pub replicas: u32,
    /// How long a publish's idempotency key is remembered.
    pub deduplication_window: Duration,
    /// Largest event accepted, if the stream sets one.
    pub max_event_size: Option<u32>,
    /// Its description; empty when none.
    pub description: String,
}

/// A stream's state, as administration shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamState {
    /// Events stored.
    pub events: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// The first stored id.
    pub first_id: u64,
    /// When the first stored event was stored; `None` when the stream is empty.
    pub first_time: Option<SystemTime>,
    /// The last id given out.
    pub last_id: u64,
    /// When the last event was stored; `None` when none ever was.
    pub last_time: Option<SystemTime>,
    /// Consumers on the stream.
    pub consumer_count: u32,
    /// Distinct subjects stored.
    pub subject_count: u64,
    /// Ids deleted inside the stored range.
    pub deleted_count: u64,
}

/// A stream: its name, configuration, state and creation time.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// Its configuration.
    pub settings: StreamSettings,
    /// Its state.
    pub state: StreamState,
    /// When it was created.
    pub created: SystemTime,
}

/// A consumer's configuration and state, as administration shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerInfo {
    /// Its stream.
    pub stream: String,
    /// Its name.
    pub name: String,
    /// Whether it is durable (named) rather than ephemeral.
    pub durable: bool,
    /// When it was created.
    pub created: SystemTime,
    /// The subjects it delivers; empty for all of the stream's.
    pub subjects: Vec<String>,
    /// How long a delivered event may stay unsettled.
    pub processing_timeout: Duration,
    /// Most deliveries of one event, if limited.
    pub max_deliveries: Option<u32>,
    /// Redelivery delays, one per attempt (the last repeats).
    pub backoff: Vec<Duration>,
    /// Where dead letters go, if it has a dead-letter stream.
    pub dead_letter_stream: Option<String>,
    /// Whether it is a pull consumer.
    pub pull: bool,
    /// Events not yet delivered.
    pub pending: u64,
    /// Events delivered and not yet settled.
    pub ack_pending: u64,
    /// Events delivered more than once and not yet settled.
    pub redelivered: u64,
    /// Pull requests waiting.
    pub waiting: u64,
    /// The last id delivered.
    pub last_delivered_id: u64,
    /// All ids up to this one are settled.
    pub ack_floor_id: u64,
    /// When it last delivered, if ever.
    pub last_active: Option<SystemTime>,
}

/// A limit JetStream stores as -1 (or 0) when there is none.
fn limit(value: i64) -> Option<u64> {
    u64::try_from(value).ok().filter(|v| *v > 0)
}

impl From<stream::Info> for StreamInfo {
    fn from(info: stream::Info) -> Self {
        let config = info.config;
        let state = info.state;
        let settings = StreamSettings {
            subjects: config.subjects,
            mirror: config.mirror.map(|mirror| mirror.name),
            sources: config
                .sources
                .unwrap_or_default()
                .into_iter()
                .map(|source| source.name)
                .collect(),
            retention: match config.retention {
                RetentionPolicy::Limits => RetentionKind::Limits,
                RetentionPolicy::Interest => RetentionKind::Interest,
                RetentionPolicy::WorkQueue => RetentionKind::WorkQueue,
            },
            max_age: (!config.max_age.is_zero()).then_some(config.max_age),
            max_events: limit(config.max_messages),
            max_events_per_subject: limit(config.max_messages_per_subject),
            max_bytes: limit(config.max_bytes),
            discard: match config.discard {
                DiscardPolicy::Old => Discard::Old,
                DiscardPolicy::New => Discard::New,
            },
            storage: match config.storage {
                StorageType::File => Storage::File,
                StorageType::Memory => Storage::Memory,
            },
            replicas: u32::try_from(config.num_replicas).unwrap_or(u32::MAX),
            deduplication_window: config.duplicate_window,
            max_event_size: u32::try_from(config.max_message_size)
                .ok()
                .filter(|size| *size > 0),
            description: config.description.unwrap_or_default(),
        };
        StreamInfo {
            name: config.name,
            settings,
            state: StreamState {
                events: state.messages,
                bytes: state.bytes,
                first_id: state.first_sequence,
                first_time: (state.messages > 0).then(|| state.first_timestamp.into()),
                last_id: state.last_sequence,
                last_time: (state.last_sequence > 0).then(|| state.last_timestamp.into()),
                consumer_count: u32::try_from(state.consumer_count).unwrap_or(u32::MAX),
                subject_count: state.subjects_count,
                deleted_count: state.deleted_count.unwrap_or_default(),
            },
            created: info.created.into(),
        }
    }
}

impl From<&consumer::Info> for ConsumerInfo {
    fn from(info: &consumer::Info) -> Self {
        let config = &info.config;
        let subjects = if config.filter_subject.is_empty() {
            config.filter_subjects.clone()
        } else {
            vec![config.filter_subject.clone()]
        };
        ConsumerInfo {
            stream: info.stream_name.clone(),
            name: info.name.clone(),
            durable: config.durable_name.is_some(),
            created: info.created.into(),
            subjects,
            processing_timeout: processing_timeout(info),
            max_deliveries: u32::try_from(config.max_deliver).ok().filter(|n| *n > 0),
            backoff: config.backoff.clone(),
            dead_letter_stream: config.metadata.get(dead_letters::METADATA_KEY).cloned(),
            pull: config.deliver_subject.is_none(),
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            waiting: info.num_waiting as u64,
            last_delivered_id: info.delivered.stream_sequence,
            ack_floor_id: info.ack_floor.stream_sequence,
            last_active: info.delivered.last_active.map(SystemTime::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_limits_are_unset() {
        assert_eq!(limit(-1), None);
        assert_eq!(limit(0), None);
        assert_eq!(limit(5), Some(5));
    }
}
