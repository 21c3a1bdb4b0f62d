//! `windshift.events.v1alpha1.EventsService`: thin handlers that decode, call core, and map the
//! result; and the Events session, one task per bidirectional stream.
//!
//! The session task owns the inbound stream and the core [`Subscription`]. Responses go through a
//! bounded channel that tonic drains; when the channel is closed the client has gone, and the task
//! naks what it still holds so those events are redelivered at once.

use std::{pin::Pin, sync::Arc};

use futures::{FutureExt, Stream};
use jetway_api::windshift::events::v1alpha1::{
    DeleteConsumerRequest, DeleteConsumerResponse, EnsureConsumerRequest, EnsureConsumerResponse,
    EnsureStreamRequest, EnsureStreamResponse, EventsRequest, EventsResponse, PublishEventRequest,
    PublishEventResponse,
    events_request::{self, Request as Req},
    events_response::{Response as Resp, Subscribed},
    events_service_server::EventsService,
};
use jetway_core::{
    Nats,
    consumers::UnnamedLimit,
    delivery::{Delivery, MAX_PROCESSING_EVENTS_LIMIT, SubscribeSpec, Subscription},
    publish::Publisher,
    settle::Settle,
};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    auth::{Caller, Grant, Permission, limits::SessionSlot},
    codec::windshift,
    grpc::{
        events::publish_one,
        publish_stream::Trace,
        status::{self, ToStatus},
        streaming,
    },
    infra::transport::over_message_limit,
};

/// The Windshift events service.
#[derive(Clone)]
pub struct WindshiftEvents {
    nats: Nats,
    publisher: Publisher,
    unnamed: Arc<UnnamedLimit>,
    shutdown: CancellationToken,
}

impl WindshiftEvents {
    /// A service over `nats`, creating unnamed consumers within `unnamed`. Cancelling `shutdown`
    /// ends every Events stream (with UNAVAILABLE) after naking its in-flight events.
    pub fn new(nats: Nats, unnamed: Arc<UnnamedLimit>, shutdown: CancellationToken) -> Self {
        WindshiftEvents {
            publisher: Publisher::new(nats.clone()),
            nats,
            unnamed,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl EventsService for WindshiftEvents {
    async fn ensure_stream(
        &self,
        request: Request<EnsureStreamRequest>,
    ) -> Result<Response<EnsureStreamResponse>, Status> {
        let caller = Caller::of(&request)?;
        let spec = windshift::stream_spec(request.into_inner()).map_err(|e| e.to_status())?;
        caller.permit_stream(&spec).map_err(|e| e.to_status())?;
        jetway_core::streams::ensure_stream(&self.nats, &spec)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(EnsureStreamResponse {}))
    }

    async fn ensure_consumer(
        &self,
        request: Request<EnsureConsumerRequest>,
    ) -> Result<Response<EnsureConsumerResponse>, Status> {
        let caller = Caller::of(&request)?;
        let spec = windshift::consumer_spec(request.into_inner()).map_err(|e| e.to_status())?;
        caller.check(Permission::Manage, &spec.stream)?;
        let id = jetway_core::consumers::ensure_consumer(&self.nats, &spec, &self.unnamed)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(EnsureConsumerResponse { id }))
    }

    async fn delete_consumer(
        &self,
        request: Request<DeleteConsumerRequest>,
    ) -> Result<Response<DeleteConsumerResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        caller.check(Permission::Manage, &request.stream)?;
        jetway_core::consumers::delete_consumer(&self.nats, &request.stream, &request.id)
            .await
            .map_err(|e| e.to_status())?;
        caller.audit(
            "delete consumer",
            &format!("{}/{}", request.stream, request.id),
        );
        Ok(Response::new(DeleteConsumerResponse {}))
    }

    async fn publish_event(
        &self,
        request: Request<PublishEventRequest>,
    ) -> Result<Response<PublishEventResponse>, Status> {
        let caller = Caller::of(&request)?;
        let trace = Trace::of(request.metadata());
        let publication = windshift::publication(request.into_inner(), trace.parent, trace.state)
            .map_err(|e| e.to_status())?;
        let published = publish_one(&caller, &self.publisher, publication).await?;
        Ok(Response::new(PublishEventResponse { id: published.id }))
    }

    type EventsStream = Pin<Box<dyn Stream<Item = Result<EventsResponse, Status>> + Send>>;

    async fn events(
        &self,
        request: Request<Streaming<EventsRequest>>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let caller = Caller::of(&request)?;
        let slot = caller.open_events_session()?;
        let (tx, rx) = mpsc::channel(streaming::SESSION_BUFFER);
        let session = Session {
            caller,
            _slot: slot,
            nats: self.nats.clone(),
            tx: tx.clone(),
            shutdown: self.shutdown.clone(),
        };
        // A panic ends the session without its cleanup; the client still gets INTERNAL, and the
        // events it held come back after their processing timeout.
        crate::grpc::panic::spawn_guarded(tx, session.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One Events stream.
struct Session {
    caller: Caller,
    /// Counts the session against the client's `events_sessions` until it ends.
    _slot: Option<SessionSlot>,
    nats: Nats,
    tx: mpsc::Sender<Result<EventsResponse, Status>>,
    shutdown: CancellationToken,
}

/// Why a session loop stopped.
enum End {
    /// The client went away; nothing more can be sent.
    ClientGone,
    /// End the stream with this status.
    Status(Status),
}

impl Session {
    async fn run(self, mut inbound: Streaming<EventsRequest>) {
        // Everything but serving is boxed: a future is as large as the largest one it awaits
        // inline (and a match keeps its scrutinee until its end), and it keeps that size while the
        // session idles. Opening, closing and finishing inline made an idle session's task tens of
        // KiB; they run once per session. The serving future is made before it is awaited, so the
        // opened subscription is held once, in it.
        let end = {
            let serving = match Box::pin(self.open(&mut inbound)).await {
                Ok((subscription, grant)) => Ok(Box::pin(self.serve_and_close(
                    &mut inbound,
                    Box::new(subscription),
                    grant,
                ))),
                Err(end) => Err(end),
            };
            match serving {
                Ok(serving) => serving.await,
                Err(end) => end,
            }
        };
        Box::pin(self.finish(end)).await;
    }

    /// Confirms the subscription, serves it while `grant` holds, and closes it.
    async fn serve_and_close(
        &self,
        inbound: &mut Streaming<EventsRequest>,
        mut subscription: Box<Subscription>,
        mut grant: Grant,
    ) -> End {
        let subscribed = Subscribed {
            processing_timeout: Some(subscription.processing_timeout().into()),
        };
        let sent = self.send(Resp::Subscribed(subscribed)).await;
        let end = match sent {
            Ok(()) => self.serve(inbound, &mut subscription, &mut grant).await,
            Err(end) => end,
        };
        Box::pin(subscription.close()).await;
        end
    }

    /// Reads the subscribe request, checks it and opens its subscription (with the grant that
    /// keeps checking the consume permission), or says how the session ends instead.
    async fn open(
        &self,
        inbound: &mut Streaming<EventsRequest>,
    ) -> Result<(Subscription, Grant), End> {
        let first = tokio::select! {
            first = inbound.message() => first,
            () = self.tx.closed() => return Err(End::ClientGone),
            () = self.shutdown.cancelled() => return Err(End::Status(shutting_down())),
        };
        let subscribe = match first {
            Ok(Some(EventsRequest {
                request: Some(Req::Subscribe(subscribe)),
            })) => subscribe,
            Ok(Some(_)) => {
                return Err(End::Status(Status::invalid_argument(
                    "request: the first message must be a subscribe",
                )));
            }
            Ok(None) => {
                return Err(End::Status(Status::invalid_argument(
                    "request: the stream ended before a subscribe",
                )));
            }
            // A request tonic could not decode or accept; if the client is still there, it learns
            // why (a cancel is not an error: tonic reports it as the end of requests).
            Err(status) => return Err(End::Status(over_message_limit(status))),
        };
        let consumer = format!("{}/{}", subscribe.stream, subscribe.consumer);
        let grant = self
            .caller
            .hold(Permission::Consume, &consumer)
            .map_err(End::Status)?;
        let spec = SubscribeSpec {
            stream: subscribe.stream,
            consumer: subscribe.consumer,
            max_processing_events: subscribe.max_processing_events,
        };
        let subscription = Subscription::open(&self.nats, &spec)
            .await
            .map_err(|err| End::Status(err.to_status()))?;
        Ok((subscription, grant))
    }

    /// Delivers events and answers requests until the client goes, something fails, the server
    /// shuts down, or a reload of the clients file takes the consume permission away (`grant`).
    async fn serve(
        &self,
        inbound: &mut Streaming<EventsRequest>,
        subscription: &mut Subscription,
        grant: &mut Grant,
    ) -> End {
        // After a half-close the client sends nothing more, but still receives events.
        let mut reading = true;
        // Made once: each of these futures registers a waiter when polled, so a fresh one per
        // loop turn would take two locks for every event.
        let cancelled = self.shutdown.cancelled();
        let closed = self.tx.closed();
        let revoked = grant.revoked();
        tokio::pin!(cancelled, closed, revoked);
        loop {
            let response = tokio::select! {
                biased;
                () = &mut cancelled => return End::Status(shutting_down()),
                () = &mut closed => return End::ClientGone,
                // Before the requests: none is answered once the permission is gone.
                revoked = &mut revoked => return End::Status(revoked.to_status()),
                message = inbound.message(), if reading => match message {
                    // Boxed for the same reason as opening: a settlement's future is large.
                    Ok(Some(request)) => match Box::pin(handle(subscription, request)).await {
                        Ok(response) => response,
                        Err(status) => return End::Status(status),
                    },
                    Ok(None) => {
                        reading = false;
                        continue;
                    }
                    Err(status) => return End::Status(over_message_limit(status)),
                },
                delivery = subscription.next() => match delivery {
                    Ok(delivery) => {
                        if let Err(end) = self.send_events(subscription, delivery).await {
                            return end;
                        }
                        continue;
                    }
                    Err(err) => return End::Status(err.to_status()),
                },
            };
            if let Err(end) = self.send(response).await {
                return end;
            }
        }
    }

    /// Sends `first`, then up to [`BURST`] more events that are ready at once, without going
    /// back through the loop's `select!` for each: that polls the shutdown, the client and the
    /// inbound stream (an HTTP/2 lock) before every event, when a backlog comes in batches.
    async fn send_events(
        &self,
        subscription: &mut Subscription,
        first: Delivery,
    ) -> Result<(), End> {
        self.send(Resp::Event(windshift::event(first))).await?;
        for _ in 0..BURST {
            // Polled once; what is not ready waits for the loop, which polls it again (with the
            // task's waker) along with everything else. `next` is cancel-safe.
            match subscription.next().now_or_never() {
                Some(Ok(delivery)) => self.send(Resp::Event(windshift::event(delivery))).await?,
                Some(Err(err)) => return Err(End::Status(err.to_status())),
                None => break,
            }
        }
        Ok(())
    }

    /// Sends one response, waiting while the client is slow to read, but not past a shutdown.
    async fn send(&self, response: Resp) -> Result<(), End> {
        let message = EventsResponse {
            response: Some(response),
        };
        // Room in the buffer is the common case; only a full one needs a wait that a shutdown
        // can cut short.
        let message = match self.tx.try_send(Ok(message)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(End::ClientGone),
            Err(TrySendError::Full(message)) => message,
        };
        tokio::select! {
            sent = self.tx.send(message) => sent.map_err(|_| End::ClientGone),
            () = self.shutdown.cancelled() => Err(End::Status(shutting_down())),
        }
    }

    async fn finish(self, end: End) {
        if let End::Status(status) = end {
            streaming::finish(&self.tx, status).await;
        }
    }
}

/// Events sent back to back after one from the loop, when that many are ready (see
/// [`Session::send_events`]). Acks wait for the loop meanwhile, so this stays well under the
/// session buffer and the smallest window of in-flight events worth batching.
const BURST: usize = 32;

fn shutting_down() -> Status {
    status::shutting_down("subscribe again to continue")
}

/// The most ids one Ack, Reject or Ping lists: the most events a session can hold
/// (`maxProcessingEvents` is at most this many), so a longer list can only repeat ids or name ones
/// the session does not hold. Fetch's Ack and Reject take as many.
const MAX_SETTLE_IDS: usize = MAX_PROCESSING_EVENTS_LIMIT as usize;

/// `ids`, if there are at most [`MAX_SETTLE_IDS`] of them.
fn settle_ids<'a>(field: &str, ids: &'a [u64]) -> Result<&'a [u64], Status> {
    if ids.len() > MAX_SETTLE_IDS {
        return Err(Status::invalid_argument(format!(
            "{field}: must list at most {MAX_SETTLE_IDS} ids, the most a session holds (got {})",
            ids.len()
        )));
    }
    Ok(ids)
}

/// Answers one request after the subscribe with exactly one confirmation.
async fn handle(subscription: &mut Subscription, request: EventsRequest) -> Result<Resp, Status> {
    match request.request {
        Some(Req::Ack(ack)) => Ok(Resp::AckConfirmation(windshift::ack_confirmation(
            subscription
                .settle(settle_ids("ack.ids", &ack.ids)?, Settle::Ack)
                .await,
        ))),
        Some(Req::Reject(reject)) => {
            let ids = settle_ids("reject.ids", &reject.ids)?;
            let how = reject_kind(&reject)?;
            Ok(Resp::RejectConfirmation(windshift::reject_confirmation(
                subscription.settle(ids, how).await,
            )))
        }
        Some(Req::Ping(ping)) => Ok(Resp::PingConfirmation(windshift::ping_confirmation(
            subscription
                .settle(settle_ids("ping.ids", &ping.ids)?, Settle::Ping)
                .await,
        ))),
        Some(Req::Subscribe(_)) => Err(Status::failed_precondition(
            "request.subscribe: this stream is already subscribed; open a new Events stream to subscribe again",
        )),
        None => Err(Status::invalid_argument(
            "request: one of subscribe, ack, reject or ping must be set",
        )),
    }
}

fn reject_kind(reject: &events_request::Reject) -> Result<Settle, Status> {
    windshift::reject(
        reject.permanently == Some(true),
        reject.delay.as_ref(),
        "reject.delay",
    )
    .map_err(|e| e.to_status())
}
