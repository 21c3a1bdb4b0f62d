//! `jetway.admin.v1.AdminService`: thin handlers over `jetway_core::admin` (streams and consumers)
//! and `jetway_core::dead_letters`, and the encoding of JetStream's stream and consumer info into
//! the API's messages.

use std::time::SystemTime;

use async_nats::jetstream::{
    consumer,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use jetway_api::jetway::admin::v1::{
    self as api,
    admin_service_server::{AdminService, AdminServiceServer},
};
use jetway_core::{
    Invalid, Nats, admin,
    consumers::processing_timeout,
    dead_letters::{self, DeadLetter, ListSpec, Reason, Selection},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    events_ext::encode_event,
    status::ToStatus,
    streaming::{Responses, forward},
};

/// The administration service.
#[derive(Clone)]
pub struct Admin {
    nats: Nats,
    shutdown: CancellationToken,
}

impl Admin {
    /// A service over `nats`. Cancelling `shutdown` ends every ListDeadLetters stream with
    /// UNAVAILABLE.
    pub fn new(nats: Nats, shutdown: CancellationToken) -> Self {
        Admin { nats, shutdown }
    }

    /// The tonic service, ready to add to a server.
    pub fn service(nats: Nats, shutdown: CancellationToken) -> AdminServiceServer<Admin> {
        AdminServiceServer::new(Admin::new(nats, shutdown))
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn list_streams(
        &self,
        request: Request<api::ListStreamsRequest>,
    ) -> Result<Response<api::ListStreamsResponse>, Status> {
        let page = admin::list_streams(&self.nats, &request.into_inner().page_token)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::ListStreamsResponse {
            streams: page.items.into_iter().map(stream_info).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_stream_info(
        &self,
        request: Request<api::GetStreamInfoRequest>,
    ) -> Result<Response<api::GetStreamInfoResponse>, Status> {
        let request = request.into_inner();
        let details = admin::stream_info(&self.nats, &request.stream, &request.subject_filter)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::GetStreamInfoResponse {
            info: Some(stream_info(details.info)),
            subjects: details.subjects.into_iter().collect(),
            subjects_truncated: details.subjects_truncated,
        }))
    }

    async fn delete_stream(
        &self,
        request: Request<api::DeleteStreamRequest>,
    ) -> Result<Response<api::DeleteStreamResponse>, Status> {
        let request = request.into_inner();
        admin::delete_stream(&self.nats, &request.stream, request.force)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::DeleteStreamResponse {}))
    }

    async fn purge_stream(
        &self,
        request: Request<api::PurgeStreamRequest>,
    ) -> Result<Response<api::PurgeStreamResponse>, Status> {
        let request = request.into_inner();
        let purged = admin::purge_stream(
            &self.nats,
            &request.stream,
            &request.subject,
            request.keep,
            request.force,
        )
        .await
        .map_err(|e| e.to_status())?;
        Ok(Response::new(api::PurgeStreamResponse { purged }))
    }

    async fn list_consumers(
        &self,
        request: Request<api::ListConsumersRequest>,
    ) -> Result<Response<api::ListConsumersResponse>, Status> {
        let request = request.into_inner();
        let page = admin::list_consumers(&self.nats, &request.stream, &request.page_token)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::ListConsumersResponse {
            consumers: page.items.iter().map(consumer_info).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_consumer_info(
        &self,
        request: Request<api::GetConsumerInfoRequest>,
    ) -> Result<Response<api::GetConsumerInfoResponse>, Status> {
        let request = request.into_inner();
        let info = admin::consumer_info(&self.nats, &request.stream, &request.consumer)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::GetConsumerInfoResponse {
            info: Some(consumer_info(&info)),
        }))
    }

    type ListDeadLettersStream = Responses<api::ListDeadLettersResponse>;

    async fn list_dead_letters(
        &self,
        request: Request<api::ListDeadLettersRequest>,
    ) -> Result<Response<Self::ListDeadLettersStream>, Status> {
        let request = request.into_inner();
        let spec = ListSpec {
            dead_letter_stream: request.dead_letter_stream,
            stream: request.stream,
            consumer: request.consumer,
            from_id: request.from_id,
            limit: (request.limit > 0).then_some(request.limit.into()),
        };
        let dead_letters = dead_letters::list(&self.nats, &spec)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(forward(
            dead_letters,
            |dead_letter| {
                Ok(api::ListDeadLettersResponse {
                    dead_letter: Some(encode_dead_letter(dead_letter)),
                })
            },
            self.shutdown.clone(),
            "list again from the id after the last one received",
        )))
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<api::RedriveDeadLettersRequest>,
    ) -> Result<Response<api::RedriveDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let selection = selection(&request).map_err(|e| e.to_status())?;
        let redriven = dead_letters::redrive(&self.nats, &request.dead_letter_stream, &selection)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::RedriveDeadLettersResponse {
            redriven: redriven
                .redriven
                .into_iter()
                .map(|(id, event_id)| api::RedrivenEvent { id, event_id })
                .collect(),
            invalid_ids: redriven.invalid_ids,
            temporary_failed_ids: redriven.temporary_failed_ids,
        }))
    }
}

/// Decodes which dead letters to redrive: ids, or all (with its filters).
fn selection(request: &api::RedriveDeadLettersRequest) -> Result<Selection, Invalid> {
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

fn timestamp(time: time::OffsetDateTime) -> jetway_api::google::protobuf::Timestamp {
    SystemTime::from(time).into()
}

/// A limit JetStream stores as -1 (or 0) when there is none.
fn limit(value: i64) -> Option<u64> {
    u64::try_from(value).ok().filter(|v| *v > 0)
}

fn stream_info(info: stream::Info) -> api::StreamInfo {
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

fn consumer_info(info: &consumer::Info) -> api::ConsumerInfo {
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

fn encode_dead_letter(dead_letter: DeadLetter) -> api::DeadLetter {
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
