//! The shared publish stream: concurrent publishes of one [`Client`](crate::Client) (and its
//! clones) travel over one `jetway.events.v1.PublishStream`, instead of one unary call each, so
//! their per-call HTTP/2 and gRPC cost is paid once per stream.
//!
//! [`SharedStream::publish`] is one attempt of one publish: it takes a slot of the window, sends
//! the event tagged with a fresh correlation id, and waits for the answer with that id. The stream
//! is opened by the first attempt that needs it and opened again by the first attempt after it
//! broke. When it breaks, every attempt waiting on it fails with UNAVAILABLE, which
//! [`RetryPolicy::run`](crate::RetryPolicy) retries with the same idempotency key: an event that
//! was stored before the break is answered with its first id, not stored twice.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jetway_api::jetway::events::v1::{
    PublishEventRequest, PublishStreamRequest, PublishStreamResponse, publish_result,
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

type Answer = oneshot::Sender<Result<u64, Error>>;

/// The answers awaited on one opened stream.
#[derive(Default)]
struct Waiters {
    /// Set once the stream ended: no attempt may wait on it any more.
    closed: bool,
    by_correlation: HashMap<u64, Answer>,
}

/// One opened PublishStream: where requests go, and who waits for which answer.
struct Opened {
    requests: mpsc::Sender<PublishStreamRequest>,
    waiters: Arc<Mutex<Waiters>>,
}

impl Opened {
    fn is_closed(&self) -> bool {
        lock(&self.waiters).closed
    }
}

/// The shared stream of a client and its clones (see the module docs).
pub(crate) struct SharedStream {
    /// Slots of the window; an attempt holds one until it has its answer or gives up.
    window: Semaphore,
    size: usize,
    /// The current stream; `None` before the first publish.
    current: tokio::sync::Mutex<Option<Opened>>,
    next_correlation: AtomicU64,
}

impl std::fmt::Debug for SharedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStream")
            .field("window", &self.size)
            .finish_non_exhaustive()
    }
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    // A panic while holding this lock cannot leave the map half-updated: recover it.
    waiters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The error of an attempt whose stream ended before its answer came: retryable.
fn broken(status: Option<Status>) -> Error {
    status
        .unwrap_or_else(|| Status::unavailable("the shared publish stream ended"))
        .into()
}

impl SharedStream {
    /// A shared stream with `window` slots (at least 1), opened by the first publish.
    pub(crate) fn new(window: usize) -> SharedStream {
        let size = window.max(1);
        SharedStream {
            window: Semaphore::new(size),
            size,
            current: tokio::sync::Mutex::new(None),
            next_correlation: AtomicU64::new(1),
        }
    }

    /// One attempt of `event` over the shared stream (opened through `stub` if needed), within
    /// `left` (`None`: no deadline): the event's id, or its own error. Waiting for a slot counts
    /// against `left`; DEADLINE_EXCEEDED if it runs out.
    pub(crate) async fn publish(
        &self,
        stub: &jetway_api::jetway::events::v1::events_service_client::EventsServiceClient<
            Transport,
        >,
        event: PublishEventRequest,
        left: Option<Duration>,
    ) -> Result<u64, Error> {
        let attempt = async {
            let _slot = self.window.acquire().await.map_err(|_| broken(None))?;
            let (correlation, answer, requests) = self.enqueue(stub).await?;
            let request = PublishStreamRequest {
                correlation_id: correlation,
                event: Some(event),
            };
            if requests.send(request).await.is_err() {
                return Err(broken(None));
            }
            // The sender is dropped only once the stream ended, after failing every waiter.
            answer.await.unwrap_or_else(|_| Err(broken(None)))
        };
        match left {
            None => attempt.await,
            Some(left) => tokio::time::timeout(left, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(
                        "the publish was not answered within the client's request timeout",
                    )
                    .into())
                }),
        }
    }

    /// Registers a waiter for a new correlation id on the current stream, opening one if there is
    /// none or it ended. Returns the id, the answer to wait on and where to send the request.
    async fn enqueue(
        &self,
        stub: &jetway_api::jetway::events::v1::events_service_client::EventsServiceClient<
            Transport,
        >,
    ) -> Result<
        (
            u64,
            oneshot::Receiver<Result<u64, Error>>,
            mpsc::Sender<PublishStreamRequest>,
        ),
        Error,
    > {
        let mut current = self.current.lock().await;
        let opened = match &mut *current {
            Some(opened) if !opened.is_closed() => &*opened,
            slot => &*slot.insert(self.open(stub.clone()).await?),
        };
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let (tell, answer) = oneshot::channel();
        let mut waiters = lock(&opened.waiters);
        if waiters.closed {
            return Err(broken(None));
        }
        waiters.by_correlation.insert(correlation, tell);
        Ok((correlation, answer, opened.requests.clone()))
    }

    /// Opens a PublishStream and spawns the task that hands its answers to their waiters.
    async fn open(
        &self,
        mut stub: jetway_api::jetway::events::v1::events_service_client::EventsServiceClient<
            Transport,
        >,
    ) -> Result<Opened, Error> {
        // As deep as the window: a slot holder never waits here.
        let (requests, outgoing) = mpsc::channel(self.size);
        // No deadline: the stream lives as long as publishes use it.
        let answers = stub
            .publish_stream(ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        tokio::spawn(deliver(answers, waiters.clone()));
        Ok(Opened { requests, waiters })
    }
}

/// Hands every answer of `answers` to its waiter until the stream ends, then fails the waiters
/// left with the stream's status (UNAVAILABLE if it ended without one), which is retryable.
async fn deliver(mut answers: Streaming<PublishStreamResponse>, waiters: Arc<Mutex<Waiters>>) {
    let end = loop {
        match answers.message().await {
            Ok(Some(answer)) => {
                let waiter = lock(&waiters).by_correlation.remove(&answer.correlation_id);
                if let Some(waiter) = waiter {
                    // A waiter that gave up (deadline, dropped call) no longer listens.
                    let _ = waiter.send(outcome(answer));
                }
            }
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let left = {
        let mut waiters = lock(&waiters);
        waiters.closed = true;
        std::mem::take(&mut waiters.by_correlation)
    };
    if !left.is_empty() {
        tracing::debug!(
            waiting = left.len(),
            status = ?end.as_ref().map(Status::code),
            "the shared publish stream ended; its publishes are retried"
        );
    }
    for waiter in left.into_values() {
        let status = end
            .as_ref()
            .map(|status| Status::new(status.code(), status.message().to_owned()));
        let _ = waiter.send(Err(broken(status)));
    }
}

/// The result of one answered publish: its id, or the status PublishEvent would have failed with.
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
