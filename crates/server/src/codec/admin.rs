//! `jetway.admin.v1` messages to and from `jetway-core`: redrive selections, stream and consumer
//! info, and dead letters.

use std::time::SystemTime;

use async_nats::jetstream::{
    consumer,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use jetway_api::jetway::admin::v1 as api;
use jetway_core::{
    Invalid,
    consumers::processing_timeout,
    dead_letters::{self, DeadLetter, Reason, Selection},
};

use crate::codec::events::encode_event;

/// Decodes which dead letters to redrive: ids, or all (with its filters).
pub(crate) fn selection(request: &api::RedriveDeadLettersRequest) -> Result<Selection, Invalid> {
    match (request.all, request.ids.is_empty()) {
        (true, false) => Err(Invalid::new("all", "cannot be combined with ids")),
        (false, true) => Err(Invalid::new("ids", "list ids, or set all")),
        (false, false) => {
            if !request.stream.is_empty() || !request.consumer.is_empty() || request.limit > 0 {
                return Err(Invalid::new(
                    "ids",
                    "stream, consumer and limit apply only with all",
                ));
            }
            Ok(Selection::Ids(request.ids.clone()))
        }
        (true, true) => Ok(Selection::All {
            stream: request.stream.clone(),
            consumer: request.consumer.clone(),
            limit: request.limit,
        }),
    }
}

/// A JetStream time as a protobuf timestamp.
pub(crate) fn timestamp(time: time::OffsetDateTime) -> jetway_api::google::protobuf::Timestamp {
    SystemTime::from(time).into()
}

/// A limit JetStream stores as -1 (or 0) when there is none.
pub(crate) fn limit(value: i64) -> Option<u64> {
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// Encodes JetStream's stream info.
pub(crate) fn stream_info(info: stream::Info) -> api::StreamInfo {
    let config = info.config;
    let state = info.state;
    let encoded_config = api::StreamConfig {
        subjects: config.subjects,
        mirror: config.mirror.map(|mirror| mirror.name),
        sources: config
            .sources
            .unwrap_or_default()
            .into_iter()
            .map(|source| source.name)
            .collect(),
        retention: match config.retention {
            RetentionPolicy::Limits => api::RetentionPolicy::Limits,
            RetentionPolicy::Interest => api::RetentionPolicy::Interest,
            RetentionPolicy::WorkQueue => api::RetentionPolicy::WorkQueue,
        }
        .into(),
        max_age: (!config.max_age.is_zero()).then(|| config.max_age.into()),
        max_events: limit(config.max_messages),
        max_events_per_subject: limit(config.max_messages_per_subject),
        max_bytes: limit(config.max_bytes),
        discard_policy: match config.discard {
            DiscardPolicy::Old => api::DiscardPolicy::Old,
            DiscardPolicy::New => api::DiscardPolicy::New,
        }
        .into(),
        storage: match config.storage {
            StorageType::File => api::StorageType::File,
            StorageType::Memory => api::StorageType::Memory,
        }
        .into(),
        replicas: u32::try_from(config.num_replicas).unwrap_or(u32::MAX),
        deduplication_window: Some(config.duplicate_window.into()),
        max_event_size: u32::try_from(config.max_message_size)
            .ok()
            .filter(|size| *size > 0),
        description: config.description.unwrap_or_default(),
    };
    api::StreamInfo {
        name: config.name,
        config: Some(encoded_config),
        state: Some(api::StreamState {
            events: state.messages,
            bytes: state.bytes,
            first_id: state.first_sequence,
            first_time: (state.messages > 0).then(|| timestamp(state.first_timestamp)),
            last_id: state.last_sequence,
            last_time: (state.last_sequence > 0).then(|| timestamp(state.last_timestamp)),
            consumer_count: u32::try_from(state.consumer_count).unwrap_or(u32::MAX),
            subject_count: state.subjects_count,
            deleted_count: state.deleted_count.unwrap_or_default(),
        }),
        created: Some(timestamp(info.created)),
    }
}

/// Encodes JetStream's consumer info.
pub(crate) fn consumer_info(info: &consumer::Info) -> api::ConsumerInfo {
    let config = &info.config;
    let subjects = if config.filter_subject.is_empty() {
        config.filter_subjects.clone()
    } else {
        vec![config.filter_subject.clone()]
    };
    api::ConsumerInfo {
        stream: info.stream_name.clone(),
        name: info.name.clone(),
        durable: config.durable_name.is_some(),
        created: Some(timestamp(info.created)),
        subjects,
        processing_timeout: Some(processing_timeout(info).into()),
        max_deliveries: u32::try_from(config.max_deliver).ok().filter(|n| *n > 0),
        backoff: config.backoff.iter().map(|d| (*d).into()).collect(),
        dead_letter_stream: config.metadata.get(dead_letters::METADATA_KEY).cloned(),
        pull: config.deliver_subject.is_none(),
        pending: info.num_pending,
        ack_pending: info.num_ack_pending as u64,
        redelivered: info.num_redelivered as u64,
        waiting: info.num_waiting as u64,
        last_delivered_id: info.delivered.stream_sequence,
        ack_floor_id: info.ack_floor.stream_sequence,
        last_active: info.delivered.last_active.map(timestamp),
    }
}

/// Encodes a dead letter, with the event it holds.
pub(crate) fn encode_dead_letter(dead_letter: DeadLetter) -> api::DeadLetter {
    api::DeadLetter {
        id: dead_letter.id,
        stream: dead_letter.stream,
        consumer: dead_letter.consumer,
        reason: match dead_letter.reason {
            Reason::MaxDeliveries => api::DeadLetterReason::MaxDeliveries,
            Reason::Rejected => api::DeadLetterReason::Rejected,
        }
        .into(),
        attempts: dead_letter.attempts,
        time: Some(dead_letter.time.into()),
        event: Some(encode_event(dead_letter.event, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redrive_takes_ids_or_all_but_not_both() {
        let request = |ids: Vec<u64>, all: bool| api::RedriveDeadLettersRequest {
            dead_letter_stream: "dead".into(),
            ids,
            all,
            ..Default::default()
        };
        assert_eq!(selection(&request(vec![], false)).unwrap_err().field, "ids");
        assert_eq!(selection(&request(vec![1], true)).unwrap_err().field, "all");
        assert_eq!(
            selection(&request(vec![1, 2], false)).unwrap(),
            Selection::Ids(vec![1, 2])
        );
        let filtered_ids = api::RedriveDeadLettersRequest {
            stream: "orders".into(),
            ..request(vec![1], false)
        };
        assert_eq!(selection(&filtered_ids).unwrap_err().field, "ids");
        assert!(matches!(
            selection(&request(vec![], true)).unwrap(),
            Selection::All { limit: 0, .. }
        ));
    }

    #[test]
    fn absent_limits_are_unset() {
        assert_eq!(limit(-1), None);
        assert_eq!(limit(0), None);
        assert_eq!(limit(5), Some(5));
    }
}
