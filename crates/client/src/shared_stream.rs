//! Shared streams: concurrent calls of one [`Client`](crate::Client) (and its clones) travel over
//! one bidirectional stream whose requests and answers carry an id, instead of one unary call
//! each, so their per-call HTTP/2 and gRPC cost is paid once per stream. Publishes share a
//! `jetway.events.v1.PublishStream` ([`PublishRpc`]), requests a
//! `jetway.requests.v1.RequestStream` ([`RequestRpc`]).
//!
//! [`SharedStream::call`] is one attempt of one call: it takes a slot of the window, sends the
//! request tagged with a fresh id, and waits for the answer with that id. The stream is opened by
//! the first attempt that needs it and opened again by the first attempt after it broke. When it
//! breaks, every attempt waiting on it fails with UNAVAILABLE (or the stream's own status). A
//! publish is then retried by [`RetryPolicy::run`](crate::RetryPolicy) with the same idempotency
//! key: an event that was stored before the break is answered with its first id, not stored twice.
//! A request is not retried: it may have been answered already.

use std::{
    collections::HashMap,
    future::Future,
    marker::PhantomData,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jetway_api::jetway::{
    events::v1::{
        PublishStreamRequest, PublishStreamResponse, events_service_client::EventsServiceClient,
        publish_result,
    },
    requests::v1::{
        RequestResponse, RequestStreamRequest, RequestStreamResponse,
        request_service_client::RequestServiceClient, request_stream_response,
    },
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::{Error, interceptor::Transport};

/// The default window: how many publishes of one client may wait for their answer on the shared
/// stream at once. A further publish waits for a slot (back-pressure, within its deadline). 256
/// keeps a busy stream's JetStream acks in flight in batches while staying well under the
/// server's own window of 1024 requests per stream.
pub const DEFAULT_PUBLISH_WINDOW: usize = 256;

/// The default window of requests: how many requests of one client may wait for their answer on
/// the shared RequestStream at once. A further request waits for a slot (back-pressure, within its
/// timeout). Well under the server's default `REQUEST_STREAM_MAX_IN_FLIGHT` of 1000, which a
/// larger window could meet and have requests refused with RESOURCE_EXHAUSTED.
pub const DEFAULT_REQUEST_WINDOW: usize = 256;

/// A bidirectional RPC whose requests and answers carry an id: what a [`SharedStream`] carries.
pub(crate) trait Rpc: 'static {
    /// The client stub that opens the stream.
    type Stub: Clone + Send + Sync;
    /// One request on the stream.
    type Request: Send + 'static;
    /// One answer on the stream.
    type Response: Send + 'static;
    /// What an answered call returns.
    type Output: Send + 'static;
    /// The stream's name in errors and logs.
    const NAME: &'static str;
    /// The call's name in errors.
    const CALL: &'static str;

    /// Sets the id of `request`.
    fn tag(request: &mut Self::Request, id: u64);
    /// The id `response` answers.
    fn id(response: &Self::Response) -> u64;
    /// The call's result from its answer: its output, or the status the unary call would have
    /// failed with.
    fn outcome(response: Self::Response) -> Result<Self::Output, Error>;
    /// The error of a call whose stream ended before its answer came, with the stream's status if
    /// it had one: that status, else UNAVAILABLE.
    fn broken(status: Option<Status>) -> Error {
        status
            .unwrap_or_else(|| Status::unavailable(format!("{} ended", Self::NAME)))
            .into()
    }
    /// Opens the stream, sending `requests`.
    fn open(
        stub: Self::Stub,
        requests: ReceiverStream<Self::Request>,
    ) -> impl Future<Output = Result<Streaming<Self::Response>, Status>> + Send;
}

/// Publishes over `jetway.events.v1.PublishStream`: an event's id, or its error.
#[derive(Debug)]
pub(crate) struct PublishRpc;

impl Rpc for PublishRpc {
    type Stub = EventsServiceClient<Transport>;
    type Request = PublishStreamRequest;
    type Response = PublishStreamResponse;
    type Output = u64;
    const NAME: &'static str = "the shared publish stream";
    const CALL: &'static str = "publish";

    fn tag(request: &mut PublishStreamRequest, id: u64) {
        request.correlation_id = id;
    }

    fn id(response: &PublishStreamResponse) -> u64 {
        response.correlation_id
    }

    fn outcome(answer: PublishStreamResponse) -> Result<u64, Error> {
        match answer.result.and_then(|result| result.result) {
            Some(publish_result::Result::Published(published)) => Ok(published.id),
            Some(publish_result::Result::Error(error)) => {
                Err(Status::new(Code::from_i32(error.code), error.message).into())
            }
            None => Err(Error::Protocol(
                "a PublishStream answer without a result".into(),
            )),
        }
    }

    async fn open(
        mut stub: EventsServiceClient<Transport>,
        requests: ReceiverStream<PublishStreamRequest>,
    ) -> Result<Streaming<PublishStreamResponse>, Status> {
        Ok(stub.publish_stream(requests).await?.into_inner())
    }
}

/// Requests over `jetway.requests.v1.RequestStream`: a request's answer, or the status Request
/// would have failed with.
#[derive(Debug)]
pub(crate) struct RequestRpc;

impl Rpc for RequestRpc {
    type Stub = RequestServiceClient<Transport>;
    type Request = RequestStreamRequest;
    type Response = RequestStreamResponse;
    type Output = RequestResponse;
    const NAME: &'static str = "the shared request stream";
    const CALL: &'static str = "request";

    fn tag(request: &mut RequestStreamRequest, id: u64) {
        request.id = id;
    }

    fn id(response: &RequestStreamResponse) -> u64 {
        response.id
    }

    fn outcome(answer: RequestStreamResponse) -> Result<RequestResponse, Error> {
        match answer.result {
            Some(request_stream_response::Result::Answer(answer)) => Ok(answer),
            Some(request_stream_response::Result::Error(error)) => {
                Err(Status::new(Code::from_i32(error.code), error.message).into())
            }
            None => Err(Error::Protocol(
                "a RequestStream answer without a result".into(),
            )),
        }
    }

    /// Always UNAVAILABLE: however the stream broke (a cut connection, the server shutting down),
    /// the request may be sent again, and the code says so.
    fn broken(status: Option<Status>) -> Error {
        let message = match status {
            Some(status) => format!("{} broke: {}", Self::NAME, status.message()),
            None => format!("{} ended", Self::NAME),
        };
        Status::unavailable(message).into()
    }

    async fn open(
        mut stub: RequestServiceClient<Transport>,
        requests: ReceiverStream<RequestStreamRequest>,
    ) -> Result<Streaming<RequestStreamResponse>, Status> {
        Ok(stub.request_stream(requests).await?.into_inner())
    }
}

type Answer<R> = oneshot::Sender<Result<<R as Rpc>::Output, Error>>;

/// The answers awaited on one opened stream.
struct Waiters<R: Rpc> {
    /// Set once the stream ended: no attempt may wait on it any more.
    closed: bool,
    by_id: HashMap<u64, Answer<R>>,
}

impl<R: Rpc> Default for Waiters<R> {
    fn default() -> Self {
        Waiters {
            closed: false,
            by_id: HashMap::new(),
        }
    }
}

/// One opened stream: where requests go, and who waits for which answer.
struct Opened<R: Rpc> {
    requests: mpsc::Sender<R::Request>,
    waiters: Arc<Mutex<Waiters<R>>>,
}

impl<R: Rpc> Opened<R> {
    fn is_closed(&self) -> bool {
        lock(&self.waiters).closed
    }
}

/// The shared stream of a client and its clones (see the module docs).
pub(crate) struct SharedStream<R: Rpc> {
    /// Slots of the window; an attempt holds one until it has its answer or gives up.
    window: Semaphore,
    size: usize,
    /// The current stream; `None` before the first call.
    current: tokio::sync::Mutex<Option<Opened<R>>>,
    next_id: AtomicU64,
    rpc: PhantomData<R>,
}

impl<R: Rpc> std::fmt::Debug for SharedStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStream")
            .field("rpc", &R::NAME)
            .field("window", &self.size)
            .finish_non_exhaustive()
    }
}

fn lock<R: Rpc>(waiters: &Mutex<Waiters<R>>) -> std::sync::MutexGuard<'_, Waiters<R>> {
    // A panic while holding this lock cannot leave the map half-updated: recover it.
    waiters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The error of an attempt whose stream ended before its answer came.
fn broken<R: Rpc>(status: Option<Status>) -> Error {
    R::broken(status)
}

impl<R: Rpc> SharedStream<R> {
    /// A shared stream with `window` slots (at least 1), opened by the first call.
    pub(crate) fn new(window: usize) -> SharedStream<R> {
        let size = window.max(1);
        SharedStream {
            window: Semaphore::new(size),
            size,
            current: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            rpc: PhantomData,
        }
    }

    /// One attempt of `request` over the shared stream (opened through `stub` if needed), within
    /// `left` (`None`: no deadline): its output, or its own error. Waiting for a slot counts
    /// against `left`; DEADLINE_EXCEEDED if it runs out.
    pub(crate) async fn call(
        &self,
        stub: &R::Stub,
        mut request: R::Request,
        left: Option<Duration>,
    ) -> Result<R::Output, Error> {
        let attempt = async {
            let _slot = self.window.acquire().await.map_err(|_| broken::<R>(None))?;
            let (id, answer, requests) = self.enqueue(stub).await?;
            R::tag(&mut request, id);
            if requests.send(request).await.is_err() {
                return Err(broken::<R>(None));
            }
            // The sender is dropped only once the stream ended, after failing every waiter.
            answer.await.unwrap_or_else(|_| Err(broken::<R>(None)))
        };
        match left {
            None => attempt.await,
            Some(left) => tokio::time::timeout(left, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "the {} was not answered within the client's request timeout",
                        R::CALL
                    ))
                    .into())
                }),
        }
    }

    /// Registers a waiter for a new id on the current stream, opening one if there is none or it
    /// ended. Returns the id, the answer to wait on and where to send the request.
    async fn enqueue(
        &self,
        stub: &R::Stub,
    ) -> Result<
        (
            u64,
            oneshot::Receiver<Result<R::Output, Error>>,
            mpsc::Sender<R::Request>,
        ),
        Error,
    > {
        let mut current = self.current.lock().await;
        let opened = match &mut *current {
            Some(opened) if !opened.is_closed() => &*opened,
            slot => &*slot.insert(self.open(stub.clone()).await?),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tell, answer) = oneshot::channel();
        let mut waiters = lock(&opened.waiters);
        if waiters.closed {
            return Err(broken::<R>(None));
        }
        waiters.by_id.insert(id, tell);
        Ok((id, answer, opened.requests.clone()))
    }

    /// Opens the stream and spawns the task that hands its answers to their waiters.
    async fn open(&self, stub: R::Stub) -> Result<Opened<R>, Error> {
        // As deep as the window: a slot holder never waits here.
        let (requests, outgoing) = mpsc::channel(self.size);
        // No deadline: the stream lives as long as calls use it.
        let answers = R::open(stub, ReceiverStream::new(outgoing)).await?;
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        tokio::spawn(deliver(answers, waiters.clone()));
        Ok(Opened { requests, waiters })
    }
}

/// Hands every answer of `answers` to its waiter until the stream ends, then fails the waiters
/// left with the stream's status (UNAVAILABLE if it ended without one).
async fn deliver<R: Rpc>(mut answers: Streaming<R::Response>, waiters: Arc<Mutex<Waiters<R>>>) {
    let end = loop {
        match answers.message().await {
            Ok(Some(answer)) => {
                let waiter = lock(&waiters).by_id.remove(&R::id(&answer));
                if let Some(waiter) = waiter {
                    // A waiter that gave up (deadline, dropped call) no longer listens.
                    let _ = waiter.send(R::outcome(answer));
                }
            }
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let left = {
        let mut waiters = lock(&waiters);
        waiters.closed = true;
        std::mem::take(&mut waiters.by_id)
    };
    if !left.is_empty() {
        tracing::debug!(
            stream = R::NAME,
            waiting = left.len(),
            status = ?end.as_ref().map(Status::code),
            "a shared stream ended with calls waiting on it"
        );
    }
    for waiter in left.into_values() {
        let status = end
            .as_ref()
            .map(|status| Status::new(status.code(), status.message().to_owned()));
        let _ = waiter.send(Err(broken::<R>(status)));
    }
}
