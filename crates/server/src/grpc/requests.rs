//! `jetway.requests.v1.RequestService`: thin handlers over [`jetway_core::requests`]. Request sends
//! one request and maps its answer ([`answer_request`], which RequestStream runs for each of its
//! requests too, in [`crate::grpc::request_stream`]); Respond runs one task per processor stream.
//!
//! The Respond task owns the inbound stream: it reads the `attach`, attaches the processor, then
//! forwards the requests handed to it and passes its answers to core. Responses go through a
//! bounded channel that tonic drains; a failed send, a closed channel or a broken inbound stream
//! means the processor left, and [`Processor::leave`] fails every request it held with UNAVAILABLE at
//! once. At shutdown the processor stops taking requests, gets
//! [`RESPOND_SHUTDOWN_GRACE`] to answer those it holds, and the stream ends with UNAVAILABLE.

use std::time::Duration;

use jetway_api::jetway::requests::v1::{
    self as api,
    request_service_server::{RequestService, RequestServiceServer},
    respond_request::Message as Inbound,
    respond_response::Message as Outbound,
};
use jetway_core::{
    Nats,
    requests::{Processor, Requester, Responders},
    telemetry::TraceContext,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    auth::{Caller, Grant, Permission},
    codec::requests as codec,
    grpc::{
        publish_stream::Trace,
        request_stream,
        status::{self, ToStatus},
        streaming::{self, Responses},
    },
    infra::{config::Limits, transport::over_message_limit},
};

/// How long a processor may still answer the requests it holds once the server shuts down; what it
/// has not answered then fails with UNAVAILABLE. Shorter than the server's own grace for calls.
pub const RESPOND_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Jetway's request/reply service.
#[derive(Clone)]
pub struct Requests {
    requester: Requester,
    responders: Responders,
    /// `REQUEST_STREAM_MAX_IN_FLIGHT`.
    stream_max_in_flight: usize,
    shutdown: CancellationToken,
}

impl Requests {
    /// The tonic service over `nats`, within `limits`. Cancelling `shutdown` ends every Respond
    /// stream as the module docs say.
    pub fn service(
        nats: Nats,
        limits: &Limits,
        shutdown: CancellationToken,
    ) -> RequestServiceServer<Requests> {
        RequestServiceServer::new(Requests {
            requester: Requester::new(nats.clone(), limits.requests()),
            responders: Responders::new(nats, limits.responders()),
            stream_max_in_flight: limits.request_stream_max_in_flight,
            shutdown,
        })
    }
}

#[tonic::async_trait]
impl RequestService for Requests {
    async fn request(
        &self,
        request: Request<api::RequestRequest>,
    ) -> Result<Response<api::RequestResponse>, Status> {
        let caller = Caller::of(&request)?;
        let deadline = codec::deadline(request.metadata());
        let trace = Trace::of(request.metadata());
        let trace = TraceContext {
            parent: trace.parent,
            state: trace.state,
        };
        answer_request(
            &self.requester,
            &caller,
            request.into_inner(),
            deadline,
            trace,
        )
        .await
        .map(Response::new)
    }

    type RequestStreamStream = Responses<api::RequestStreamResponse>;

    async fn request_stream(
        &self,
        request: Request<Streaming<api::RequestStreamRequest>>,
    ) -> Result<Response<Self::RequestStreamStream>, Status> {
        let caller = Caller::of(&request)?;
        let trace = Trace::of(request.metadata());
        Ok(Response::new(request_stream::spawn(
            self.requester.clone(),
            caller,
            request.into_inner(),
            trace,
            self.stream_max_in_flight,
            self.shutdown.clone(),
        )))
    }

    type RespondStream = Responses<api::RespondResponse>;

    async fn respond(
        &self,
        request: Request<Streaming<api::RespondRequest>>,
    ) -> Result<Response<Self::RespondStream>, Status> {
        let caller = Caller::of(&request)?;
        let (tx, rx) = mpsc::channel(streaming::SESSION_BUFFER);
        crate::grpc::panic::spawn_guarded(
            tx.clone(),
            respond(
                self.responders.clone(),
                caller,
                request.into_inner(),
                tx,
                self.shutdown.clone(),
            ),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One request, from its message to its answer: Request's whole work, and RequestStream's for each
/// of its requests, so both validate, check the permission, count, trace and fail alike. Waits
/// for the shorter of the request's `timeout` and `deadline`.
pub(crate) async fn answer_request(
    requester: &Requester,
    caller: &Caller,
    request: api::RequestRequest,
    deadline: Option<Duration>,
    trace: TraceContext,
) -> Result<api::RequestResponse, Status> {
    let spec = codec::request_spec(request, deadline, trace).map_err(|e| e.to_status())?;
    caller.check(Permission::Publish, &spec.subject)?;
    let answer = requester.request(spec).await.map_err(|e| e.to_status())?;
    codec::encode_answer(answer)
}

type Tx = mpsc::Sender<Result<api::RespondResponse, Status>>;

fn outbound(message: Outbound) -> Result<api::RespondResponse, Status> {
    Ok(api::RespondResponse {
        message: Some(message),
    })
}

/// The task of one Respond stream.
async fn respond(
    responders: Responders,
    caller: Caller,
    mut inbound: Streaming<api::RespondRequest>,
    tx: Tx,
    shutdown: CancellationToken,
) {
    let first = tokio::select! {
        () = shutdown.cancelled() => {
            return streaming::finish(&tx, status::shutting_down("attach again later")).await;
        }
        () = tx.closed() => return,
        first = inbound.message() => first,
    };
    let attach = match first {
        Ok(Some(api::RespondRequest {
            message: Some(Inbound::Attach(attach)),
        })) => attach,
        Ok(Some(_)) => {
            let status = Status::invalid_argument("attach: the first message must be attach");
            return streaming::finish(&tx, status).await;
        }
        Ok(None) => return,
        Err(status) => return streaming::finish(&tx, over_message_limit(status)).await,
    };
    let spec = codec::processor_spec(attach);
    let needs = spec
        .subjects
        .iter()
        .map(|subject| (Permission::Respond, subject.clone()));
    let mut grant = match Grant::new(&caller, needs) {
        Ok(grant) => grant,
        Err(err) => return streaming::finish(&tx, err.to_status()).await,
    };
    let mut processor = match responders.attach(spec).await {
        Ok(processor) => processor,
        Err(err) => return streaming::finish(&tx, err.to_status()).await,
    };
    let attached = outbound(Outbound::Attached(api::Attached {
        queue_group: processor.queue_group().to_owned(),
        max_in_flight: processor.max_in_flight(),
    }));
    if tx.send(attached).await.is_err() {
        return;
    }
    let end = serve(&mut processor, &mut inbound, &tx, &shutdown, &mut grant).await;
    match end {
        End::Left => processor.leave().await,
        End::Failed(status) => {
            // The held requests fail first: the processor's mistake should not keep them waiting.
            processor.leave().await;
            streaming::finish(&tx, status).await;
        }
        End::ShuttingDown => {
            processor.stop_taking().await;
            let grace = tokio::time::sleep(RESPOND_SHUTDOWN_GRACE);
            tokio::pin!(grace);
            while processor.held() > 0 {
                tokio::select! {
                    () = &mut grace => break,
                    () = tx.closed() => break,
                    // Requests handed over just before the stop still reach the processor.
                    Some(request) = processor.next() => {
                        let request = outbound(Outbound::Request(codec::incoming(request)));
                        if tx.send(request).await.is_err() {
                            break;
                        }
                    }
                    message = inbound.message() => match message {
                        Ok(Some(message)) => {
                            if let Err(status) = handle(&processor, message).await {
                                processor.leave().await;
                                return streaming::finish(&tx, status).await;
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            // Whatever is still held fails now, before the client hears the stream end and before
            // the server drains its NATS connection.
            processor.leave().await;
            streaming::finish(
                &tx,
                status::shutting_down("attach to another server to go on serving"),
            )
            .await;
        }
    }
}

/// How a processor's serving ended.
enum End {
    /// The processor left: its stream ended or broke, or it stopped reading.
    Left,
    /// The processor sent something invalid; the stream ends with this status.
    Failed(Status),
    /// The server is shutting down.
    ShuttingDown,
}

/// Hands requests to the processor and its answers back until it leaves, fails, the server shuts
/// down, or a reload of the clients file takes away its respond permission (`grant`): then it
/// fails with that refusal.
async fn serve(
    processor: &mut Processor,
    inbound: &mut Streaming<api::RespondRequest>,
    tx: &Tx,
    shutdown: &CancellationToken,
    grant: &mut Grant,
) -> End {
    // Made once: each of these futures registers a waiter when polled, so a fresh one per turn
    // would take a lock for every request.
    let cancelled = shutdown.cancelled();
    let closed = tx.closed();
    let revoked = grant.revoked();
    tokio::pin!(cancelled, closed, revoked);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => return End::ShuttingDown,
            () = &mut closed => return End::Left,
            revoked = &mut revoked => return End::Failed(revoked.to_status()),
            message = inbound.message() => match message {
                Ok(Some(message)) => {
                    if let Err(status) = handle(processor, message).await {
                        return End::Failed(status);
                    }
                }
                // The client half-closed: it answers nothing more, so it holds nothing.
                Ok(None) => return End::Left,
                Err(status) => return End::Failed(over_message_limit(status)),
            },
            request = processor.next() => {
                let Some(request) = request else { return End::Left };
                let request = outbound(Outbound::Request(codec::incoming(request)));
                if tx.send(request).await.is_err() {
                    return End::Left;
                }
            }
        }
    }
}

/// Passes one message of the processor on: an answer to core; anything else is refused.
async fn handle(processor: &Processor, message: api::RespondRequest) -> Result<(), Status> {
    match message.message {
        Some(Inbound::Answer(answer)) => {
            let (id, answer) = codec::answer(answer).map_err(|e| e.to_status())?;
            processor
                .answer(id, answer)
                .await
                .map_err(|e| e.to_status())
        }
        Some(Inbound::Attach(_)) => Err(Status::invalid_argument(
            "attach: only the first message may attach; open another stream to serve more",
        )),
        None => Err(Status::invalid_argument("message: set answer")),
    }
}
