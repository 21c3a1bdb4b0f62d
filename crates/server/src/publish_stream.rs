//! `jetway.events.v1.EventsService/PublishStream`: one task per stream reads publish requests, feeds
//! them to a core [`Pipeline`], and answers each as its JetStream ack arrives.
//!
//! The task reads only while the pipeline has room ([`WINDOW`] unanswered requests), so a client
//! that sends faster than JetStream stores is held back by HTTP/2 flow control, and the memory of
//! one stream is bounded. Answers go through a bounded channel that tonic drains; when it closes, the
//! client has gone and the task ends (publishes already handed to NATS still complete).
//!
//! The stream ends with OK once the client half-closed and every request read has been answered. At
//! server shutdown the task stops reading, answers what it read, and ends with UNAVAILABLE.

use jetway_api::jetway::events::v1::{PublishStreamRequest, PublishStreamResponse};
use jetway_core::{
    Invalid,
    pipeline::Pipeline,
    publish::{Publication, Publisher},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming, metadata::MetadataMap};

use crate::{
    events_ext::{publication, publish_result},
    status::{self, ToStatus},
    streaming::{self, Responses},
};

/// Most requests read and not yet answered, per stream.
pub const WINDOW: usize = 1024;

/// The caller's W3C trace context, from the call's metadata; it applies to every event.
#[derive(Clone, Default)]
pub struct Trace {
    /// `traceparent`.
    pub parent: Option<String>,
    /// `tracestate`.
    pub state: Option<String>,
}

impl Trace {
    /// The trace context in a call's metadata; a value that is not valid text counts as absent.
    pub fn of(metadata: &MetadataMap) -> Trace {
        let value = |key| {
            metadata
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Trace {
            parent: value("traceparent"),
            state: value("tracestate"),
        }
    }
}

/// Spawns the task of one PublishStream call and returns the stream tonic sends from.
pub fn spawn(
    publisher: Publisher,
    inbound: Streaming<PublishStreamRequest>,
    trace: Trace,
    shutdown: CancellationToken,
) -> Responses<PublishStreamResponse> {
    let (tx, rx) = mpsc::channel(streaming::SESSION_BUFFER);
    crate::panic::spawn_guarded(tx.clone(), run(publisher, inbound, trace, tx, shutdown));
    Box::pin(ReceiverStream::new(rx))
}

async fn run(
    publisher: Publisher,
    mut inbound: Streaming<PublishStreamRequest>,
    trace: Trace,
    tx: mpsc::Sender<Result<PublishStreamResponse, Status>>,
    shutdown: CancellationToken,
) {
    let mut pipeline = match Pipeline::open(publisher, WINDOW).await {
        Ok(pipeline) => pipeline,
        Err(err) => return streaming::finish(&tx, err.to_status()).await,
    };
    // False once the client half-closed, or the server shuts down: only answers are left to send.
    let mut reading = true;
    let mut end = Ok(());
    // Made once: each of these futures registers a waiter when polled, so a fresh one per loop
    // turn would take a lock for every event.
    let cancelled = shutdown.cancelled();
    let closed = tx.closed();
    tokio::pin!(cancelled, closed);
    while reading || !pipeline.is_empty() {
        tokio::select! {
            biased;
            // Answers first: each one frees a slot of the window.
            answer = pipeline.next(), if !pipeline.is_empty() => {
                let Some((correlation_id, outcome)) = answer else { continue };
                let response = PublishStreamResponse {
                    correlation_id,
                    result: Some(publish_result(outcome)),
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            () = &mut closed => return,
            () = &mut cancelled, if reading => {
                reading = false;
                end = Err(status::shutting_down(
                    "requests without an answer were not published, send them again",
                ));
            }
            message = inbound.message(), if reading && pipeline.has_room() => match message {
                Ok(Some(request)) => pipeline.push(request.correlation_id, decode(request, &trace)),
                Ok(None) => reading = false,
                // The client broke the stream or cancelled; there is nobody to answer.
                Err(_) => return,
            },
        }
    }
    if let Err(status) = end {
        streaming::finish(&tx, status).await;
    }
}

fn decode(request: PublishStreamRequest, trace: &Trace) -> Result<Publication, Invalid> {
    let event = request
        .event
        .ok_or_else(|| Invalid::new("event", "is required"))?;
    publication(event, trace.parent.clone(), trace.state.clone())
}
