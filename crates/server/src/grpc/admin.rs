//! `jetway.admin.v1.AdminService`: thin handlers over `jetway_core::admin` (streams and consumers)
//! and `jetway_core::dead_letters`; the messages are encoded in [`crate::codec::admin`].

use futures::{StreamExt, TryStreamExt};
use jetway_api::jetway::admin::v1::{
    self as api,
    admin_service_server::{AdminService, AdminServiceServer},
};
use jetway_core::{
    Nats, admin,
    dead_letters::{self, ListSpec},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    auth::{Caller, Permission},
    codec::admin::{consumer_info, encode_dead_letter, selection, stream_info},
    grpc::{
        status::ToStatus,
        streaming::{Responses, forward},
    },
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
        let caller = Caller::of(&request)?;
        let page = admin::list_streams(&self.nats, &request.into_inner().page_token)
            .await
            .map_err(|e| e.to_status())?;
        // A page may come out shorter than JetStream's: the client sees only its streams.
        Ok(Response::new(api::ListStreamsResponse {
            streams: page
                .items
                .into_iter()
                .filter(|info| caller.may(Permission::See, &info.name))
                .map(stream_info)
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_stream_info(
        &self,
        request: Request<api::GetStreamInfoRequest>,
    ) -> Result<Response<api::GetStreamInfoResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::See, &request.stream)?;
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
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::Manage, &request.stream)?;
        admin::delete_stream(&self.nats, &request.stream, request.force)
            .await
            .map_err(|e| e.to_status())?;
        caller.audit("delete stream", &request.stream);
        Ok(Response::new(api::DeleteStreamResponse {}))
    }

    async fn purge_stream(
        &self,
        request: Request<api::PurgeStreamRequest>,
    ) -> Result<Response<api::PurgeStreamResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::Manage, &request.stream)?;
        let purged = admin::purge_stream(
            &self.nats,
            &request.stream,
            &request.subject,
            request.keep,
            request.force,
        )
        .await
        .map_err(|e| e.to_status())?;
        caller.audit("purge stream", &request.stream);
        Ok(Response::new(api::PurgeStreamResponse { purged }))
    }

    async fn list_consumers(
        &self,
        request: Request<api::ListConsumersRequest>,
    ) -> Result<Response<api::ListConsumersResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::See, &request.stream)?;
        let page = admin::list_consumers(&self.nats, &request.stream, &request.page_token)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::ListConsumersResponse {
            consumers: page
                .items
                .into_iter()
                .filter(|info| {
                    caller.may(
                        Permission::See,
                        &format!("{}/{}", request.stream, info.name),
                    )
                })
                .map(consumer_info)
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_consumer_info(
        &self,
        request: Request<api::GetConsumerInfoRequest>,
    ) -> Result<Response<api::GetConsumerInfoResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(
            Permission::See,
            &format!("{}/{}", request.stream, request.consumer),
        )?;
        let info = admin::consumer_info(&self.nats, &request.stream, &request.consumer)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::GetConsumerInfoResponse {
            info: Some(consumer_info(info)),
        }))
    }

    type ListDeadLettersStream = Responses<api::ListDeadLettersResponse>;

    async fn list_dead_letters(
        &self,
        request: Request<api::ListDeadLettersRequest>,
    ) -> Result<Response<Self::ListDeadLettersStream>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let grant = caller.hold(Permission::Read, &request.dead_letter_stream)?;
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
        // Dead letters of streams the client may not see are left out.
        let dead_letters = dead_letters
            .try_filter(move |dead_letter| {
                std::future::ready(caller.may(Permission::See, &dead_letter.stream))
            })
            .boxed();
        Ok(Response::new(forward(
            dead_letters,
            |dead_letter| {
                Ok(api::ListDeadLettersResponse {
                    dead_letter: Some(encode_dead_letter(dead_letter)),
                })
            },
            grant,
            self.shutdown.clone(),
            "list again from the id after the last one received",
        )))
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<api::RedriveDeadLettersRequest>,
    ) -> Result<Response<api::RedriveDeadLettersResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::Manage, &request.dead_letter_stream)?;
        let selection = selection(&request).map_err(|e| e.to_status())?;
        let redriven = dead_letters::redrive(&self.nats, &request.dead_letter_stream, &selection)
            .await
            .map_err(|e| e.to_status())?;
        caller.audit("redrive dead letters", &request.dead_letter_stream);
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
