//! `jetway.admin.v1` messages to and from `jetway-core`: redrive selections, stream and consumer
//! info, and dead letters.

use jetway_api::jetway::admin::v1 as api;
use jetway_core::{
    Invalid,
    dead_letters::{DeadLetter, Reason, Selection},
    info::{ConsumerInfo, RetentionKind, StreamInfo},
    streams::{Discard, Storage},
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

/// Encodes a stream's info.
pub(crate) fn stream_info(info: StreamInfo) -> api::StreamInfo {
    let settings = info.settings;
    let state = info.state;
    let config = api::StreamConfig {
        subjects: settings.subjects,
        mirror: settings.mirror,
        sources: settings.sources,
        retention: match settings.retention {
            RetentionKind::Limits => api::RetentionPolicy::Limits,
            RetentionKind::Interest => api::RetentionPolicy::Interest,
            RetentionKind::WorkQueue => api::RetentionPolicy::WorkQueue,
        }
        .into(),
        max_age: settings.max_age.map(Into::into),
        max_events: settings.max_events,
        max_events_per_subject: settings.max_events_per_subject,
        max_bytes: settings.max_bytes,
        discard_policy: match settings.discard {
            Discard::Old => api::DiscardPolicy::Old,
            Discard::New => api::DiscardPolicy::New,
        }
        .into(),
        storage: match settings.storage {
            Storage::File => api::StorageType::File,
            Storage::Memory => api::StorageType::Memory,
        }
        .into(),
        replicas: settings.replicas,
        deduplication_window: Some(settings.deduplication_window.into()),
        max_event_size: settings.max_event_size,
        description: settings.description,
    };
    api::StreamInfo {
        name: info.name,
        config: Some(config),
        state: Some(api::StreamState {
            events: state.events,
            bytes: state.bytes,
            first_id: state.first_id,
            first_time: state.first_time.map(Into::into),
            last_id: state.last_id,
            last_time: state.last_time.map(Into::into),
            consumer_count: state.consumer_count,
            subject_count: state.subject_count,
            deleted_count: state.deleted_count,
        }),
        created: Some(info.created.into()),
    }
}

/// Encodes a consumer's info.
pub(crate) fn consumer_info(info: ConsumerInfo) -> api::ConsumerInfo {
    api::ConsumerInfo {
        stream: info.stream,
        name: info.name,
        durable: info.durable,
        created: Some(info.created.into()),
        subjects: info.subjects,
        processing_timeout: Some(info.processing_timeout.into()),
        max_deliveries: info.max_deliveries,
        backoff: info.backoff.into_iter().map(Into::into).collect(),
        dead_letter_stream: info.dead_letter_stream,
        pull: info.pull,
        pending: info.pending,
        ack_pending: info.ack_pending,
        redelivered: info.redelivered,
        waiting: info.waiting,
        last_delivered_id: info.last_delivered_id,
        ack_floor_id: info.ack_floor_id,
        last_active: info.last_active.map(Into::into),
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
}
