//! `jetway.events.v1.EventsService`: thin handlers over `jetway_core` for consumers with a delivery
//! policy, publishing raw payloads and custom headers (one event, a stream of them, or a batch),
//! reads without a consumer (GetEvent, ReadEvents), live subscriptions, and unary Fetch, Ack and
//! Reject.
//!
//! PublishStream runs in [`crate::grpc::publish_stream`]; the read streams go through
//! [`crate::grpc::streaming::forward`]. Fetched events are held in flight
//! by one [`Fetcher`] per server, so Ack and Reject must reach the server that did the Fetch.

use std::sync::Arc;

use jetway_api::jetway::events::v1::{
    self as api,
    events_service_server::{EventsService, EventsServiceServer},
};
use jetway_core::{
    Nats,
    consumers::{self, UnnamedLimit},
    fetch::{FetchSpec, Fetcher},
    live::{LiveFeeds, LiveSpec},
    pipeline::{self},
    publish::{Publication, Published, Publisher},
    reads::{self, ReadSpec},
    settle::Settle,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    auth::{Caller, Permission},
    codec::{
        events::{
            consumer_spec, encode_event, encode_settled, optional_pointer, publication,
            publish_result,
        },
        windshift,
    },
    grpc::{
        publish_stream::{self, Trace},
        status::ToStatus,
        streaming::{Responses, forward},
    },
};

/// Jetway's events service.
#[derive(Clone)]
pub struct JetwayEvents {
    nats: Nats,
    publisher: Publisher,
    fetcher: Arc<Fetcher>,
    live: LiveFeeds,
    unnamed: Arc<UnnamedLimit>,
    shutdown: CancellationToken,
}

impl JetwayEvents {
    /// A service over `nats`, sharing the cap on unnamed consumers with Windshift's EnsureConsumer,
    /// and the live feeds (one feed per stream and filter in this server, whoever subscribes) and
    /// the table of fetched events (within its limits) with the HTTP API. Cancelling `shutdown` ends
    /// every ReadEvents and Subscribe stream with UNAVAILABLE, and every PublishStream once it
    /// answered what it read. Call it inside the Tokio runtime.
    pub fn new(
        nats: Nats,
        unnamed: Arc<UnnamedLimit>,
        live: LiveFeeds,
        fetcher: Arc<Fetcher>,
        shutdown: CancellationToken,
    ) -> Self {
        JetwayEvents {
            publisher: Publisher::new(nats.clone()),
            fetcher,
            live,
            unnamed,
            nats,
            shutdown,
        }
    }

    /// The tonic service, ready to add to a server.
    pub fn service(
        nats: Nats,
        unnamed: Arc<UnnamedLimit>,
        live: LiveFeeds,
        fetcher: Arc<Fetcher>,
        shutdown: CancellationToken,
    ) -> EventsServiceServer<JetwayEvents> {
        EventsServiceServer::new(JetwayEvents::new(nats, unnamed, live, fetcher, shutdown))
    }
}

#[tonic::async_trait]
impl EventsService for JetwayEvents {
    async fn ensure_consumer(
        &self,
        request: Request<api::EnsureConsumerRequest>,
    ) -> Result<Response<api::EnsureConsumerResponse>, Status> {
        let caller = Caller::of(&request)?;
        let spec = consumer_spec(request.into_inner()).map_err(|e| e.to_status())?;
        caller.check(Permission::Manage, &spec.stream)?;
        // Dead letters are written into that stream: it must be the client's too.
        if let Some(stream) = spec
            .delivery
            .as_ref()
            .and_then(|d| d.dead_letter_stream.as_ref())
        {
            caller.check(Permission::Manage, stream)?;
        }
        let id = consumers::ensure_consumer(&self.nats, &spec, &self.unnamed)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::EnsureConsumerResponse { id }))
    }

    async fn publish_event(
        &self,
        request: Request<api::PublishEventRequest>,
    ) -> Result<Response<api::PublishEventResponse>, Status> {
        let caller = Caller::of(&request)?;
        let trace = Trace::of(request.metadata());
        let publication = publication(request.into_inner(), trace.parent, trace.state)
            .map_err(|e| e.to_status())?;
        let published = publish_one(&caller, &self.publisher, publication).await?;
        Ok(Response::new(api::PublishEventResponse {
            id: published.id,
            duplicate: published.duplicate,
        }))
    }

    type PublishStreamStream = Responses<api::PublishStreamResponse>;

    async fn publish_stream(
        &self,
        request: Request<tonic::Streaming<api::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let caller = Caller::of(&request)?;
        let trace = Trace::of(request.metadata());
        Ok(Response::new(publish_stream::spawn(
            caller,
            self.publisher.clone(),
            request.into_inner(),
            trace,
            self.shutdown.clone(),
        )))
    }

    async fn publish_batch(
        &self,
        request: Request<api::PublishBatchRequest>,
    ) -> Result<Response<api::PublishBatchResponse>, Status> {
        let caller = Caller::of(&request)?;
        let trace = Trace::of(request.metadata());
        let events: Vec<_> = request
            .into_inner()
            .events
            .into_iter()
            .map(|event| publication(event, trace.parent.clone(), trace.state.clone()))
            .collect();
        // The whole batch is refused if one subject is not allowed: nothing is half published.
        for event in events.iter().flatten() {
            caller.check(Permission::Publish, &event.subject)?;
        }
        caller.take_publishes(events.len())?;
        let outcomes = pipeline::publish_batch(&self.publisher, events)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::PublishBatchResponse {
            results: outcomes.into_iter().map(publish_result).collect(),
        }))
    }

    async fn get_event(
        &self,
        request: Request<api::GetEventRequest>,
    ) -> Result<Response<api::GetEventResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::Read, &request.stream)?;
        let event = reads::get_event(&self.nats, &request.stream, request.id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::GetEventResponse {
            event: Some(encode_event(event, 0)),
        }))
    }

    type ReadEventsStream = Responses<api::ReadEventsResponse>;

    async fn read_events(
        &self,
        request: Request<api::ReadEventsRequest>,
    ) -> Result<Response<Self::ReadEventsStream>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let grant = caller.hold(Permission::Read, &request.stream)?;
        let spec = ReadSpec {
            from: optional_pointer("from", request.from.as_ref()).map_err(|e| e.to_status())?,
            limit: (request.limit > 0).then_some(request.limit.into()),
            stream: request.stream,
            subject: request.subject,
        };
        let events = reads::read_events(&self.nats, &spec)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(forward(
            events,
            |event| {
                Ok(api::ReadEventsResponse {
                    event: Some(encode_event(event, 0)),
                })
            },
            grant,
            self.shutdown.clone(),
            "read again from the id after the last one received",
        )))
    }

    type SubscribeStream = Responses<api::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<api::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let grant = caller.hold(Permission::Consume, &request.stream)?;
        let spec = LiveSpec {
            subject: request.subject,
            stream: request.stream,
        };
        // The feed is open once this returns, so every event stored after the response headers
        // reach the client is sent.
        let events = self
            .live
            .subscribe(&spec)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(forward(
            events,
            |event| {
                Ok(api::SubscribeResponse {
                    event: Some(encode_event(event, 0)),
                })
            },
            grant,
            self.shutdown.clone(),
            "subscribe again",
        )))
    }

    async fn fetch(
        &self,
        request: Request<api::FetchRequest>,
    ) -> Result<Response<api::FetchResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(
            Permission::Consume,
            &format!("{}/{}", request.stream, request.consumer),
        )?;
        let spec = FetchSpec {
            wait: windshift::optional_duration("wait", request.wait.as_ref())
                .map_err(|e| e.to_status())?,
            stream: request.stream,
            consumer: request.consumer,
            max_events: request.max_events,
            client: caller.fetch_quota(),
        };
        let fetched = self
            .fetcher
            .fetch(&spec)
            .await
            .map_err(|e| Caller::counted(e).to_status())?;
        Ok(Response::new(api::FetchResponse {
            events: fetched
                .events
                .into_iter()
                .map(|f| encode_event(f.event, f.delivery_attempt))
                .collect(),
            processing_timeout: Some(fetched.processing_timeout.into()),
        }))
    }

    async fn ack(
        &self,
        request: Request<api::AckRequest>,
    ) -> Result<Response<api::AckResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(
            Permission::Consume,
            &format!("{}/{}", request.stream, request.consumer),
        )?;
        let settled = self
            .fetcher
            .settle(
                &request.stream,
                &request.consumer,
                &request.ids,
                Settle::Ack,
            )
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::AckResponse {
            settled: Some(encode_settled(settled)),
        }))
    }

    async fn reject(
        &self,
        request: Request<api::RejectRequest>,
    ) -> Result<Response<api::RejectResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(
            Permission::Consume,
            &format!("{}/{}", request.stream, request.consumer),
        )?;
        let how = windshift::reject(request.permanently, request.delay.as_ref(), "delay")
            .map_err(|e| e.to_status())?;
        let settled = self
            .fetcher
            .settle(&request.stream, &request.consumer, &request.ids, how)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::RejectResponse {
            settled: Some(encode_settled(settled)),
        }))
    }
}

/// One event published for `caller`, as both events services' PublishEvent do it: the subject must
/// be the client's to publish on, and the event counts against its publish rate before it is sent.
pub(crate) async fn publish_one(
    caller: &Caller,
    publisher: &Publisher,
    publication: Publication,
) -> Result<Published, Status> {
    caller.check(Permission::Publish, &publication.subject)?;
    caller.take_publishes(1)?;
    publisher
        .publish(publication)
        .await
        .map_err(|e| e.to_status())
}
