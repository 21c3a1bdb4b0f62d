//! `jetway.events.v1.EventsService/PublishStream`: one task per stream reads publish requests, feeds
//! them to a core [`Pipeline`], and answers each as its JetStream ack arrives.
//!
//! The task reads only while fewer than [`WINDOW`] requests are unanswered and the events waiting
//! for NATS hold less than [`QUEUED_BYTES`], so a client that sends faster than JetStream stores is
//! held back by HTTP/2 flow control, and the memory of one stream is bounded. Answers go through a
//! bounded channel that tonic drains; when it closes, the client has gone and the task ends
//! (publishes already handed to NATS still complete). While that channel is full, answers wait in
//! the task (they count as unanswered), and the pipeline goes on reading JetStream's acks: a client
//! slow to read its answers holds no publish permits of the connection, which other calls share.
//!
//! The stream ends with OK once the client half-closed and every request read has been answered. If
//! the request stream breaks (a request tonic cannot decode, or too large), the task answers what it
//! read and ends with tonic's status. At server shutdown the task stops reading, answers what it
//! read, and ends with UNAVAILABLE.

use jetway_api::jetway::events::v1::{PublishStreamRequest, PublishStreamResponse};
use jetway_core::{
    Error,
    pipeline::Pipeline,
    publish::{Publication, Publisher},
};
use std::collections::VecDeque;

use tokio::sync::{mpsc, mpsc::error::TrySendError};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming, metadata::MetadataMap};

use crate::{
    auth::{Allowed, Caller, Permission},
    codec::events::{publication, publish_result},
    grpc::{
        status::{self, ToStatus},
        streaming::{self, Responses},
    },
    infra::transport::over_message_limit,
};

/// Most requests read and not yet answered, per stream.
pub const WINDOW: usize = 1024;

/// The task stops reading while the events it has read and not yet handed to NATS hold this many
/// body bytes: a window of large events would otherwise hold up to [`WINDOW`] times the largest
/// request tonic decodes.
pub const QUEUED_BYTES: usize = 8 << 20;

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
    caller: Caller,
    publisher: Publisher,
    inbound: Streaming<PublishStreamRequest>,
    trace: Trace,
    shutdown: CancellationToken,
) -> Responses<PublishStreamResponse> {
    let (tx, rx) = mpsc::channel(streaming::SESSION_BUFFER);
    crate::grpc::panic::spawn_guarded(
        tx.clone(),
        run(caller, publisher, inbound, trace, tx, shutdown),
    );
    Box::pin(ReceiverStream::new(rx))
}

async fn run(
    caller: Caller,
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
    // Answers that found the channel full, in order; they wait here so that the pipeline is still
    // polled and its acks return their permits.
    let mut answers = VecDeque::new();
    let mut end = Ok(());
    // A stream sends many events on few subjects: the last one allowed is not matched again.
    let mut last_allowed = Allowed::default();
    // Made once: each of these futures registers a waiter when polled, so a fresh one per loop
    // turn would take a lock for every event.
    let cancelled = shutdown.cancelled();
    let closed = tx.closed();
    tokio::pin!(cancelled, closed);
    while reading || !pipeline.is_empty() || !answers.is_empty() {
        // The pipeline's own window is WINDOW too, so this implies `has_room`.
        let room =
            pipeline.len() + answers.len() < WINDOW && pipeline.queued_bytes() < QUEUED_BYTES;
        tokio::select! {
            biased;
            // Answers first: each one frees a permit.
            answer = pipeline.next(), if !pipeline.is_empty() => {
                let Some((correlation_id, outcome)) = answer else { continue };
                let response = Ok(PublishStreamResponse {
                    correlation_id,
                    result: Some(publish_result(outcome)),
                });
                if !answers.is_empty() {
                    answers.push_back(response);
                    continue;
                }
                match tx.try_send(response) {
                    Ok(()) => {}
                    Err(TrySendError::Full(response)) => answers.push_back(response),
                    Err(TrySendError::Closed(_)) => return,
                }
            }
            permit = tx.reserve(), if !answers.is_empty() => match (permit, answers.pop_front()) {
                (Ok(permit), Some(response)) => permit.send(response),
                _ => return,
            },
            () = &mut closed => return,
            () = &mut cancelled, if reading => {
                reading = false;
                end = Err(status::shutting_down(
                    "requests without an answer were not published, send them again",
                ));
            }
            message = inbound.message(), if reading && room => match message {
                Ok(Some(request)) => {
                    let correlation_id = request.correlation_id;
                    let event = decode(request, &trace);
                    // A subject the client may not publish on, or a spent publish rate, ends the
                    // stream; what was read before it is still answered.
                    let allowed = match &event {
                        Ok(event) => caller
                            .check_repeated(Permission::Publish, &event.subject, &mut last_allowed)
                            .and_then(|()| caller.take_publishes(1)),
                        Err(_) => Ok(()),
                    };
                    match allowed {
                        Ok(()) => pipeline.push(correlation_id, event),
                        Err(status) => {
                            reading = false;
                            end = Err(status);
                        }
                    }
                }
                // Also a cancelled call: tonic reports the client's cancel as the end of requests.
                Ok(None) => reading = false,
                // Nothing more can be read; if the client is still there, it learns why.
                Err(status) => {
                    reading = false;
                    end = Err(over_message_limit(status));
                }
            },
        }
    }
    if let Err(status) = end {
        streaming::finish(&tx, status).await;
    }
}

fn decode(request: PublishStreamRequest, trace: &Trace) -> Result<Publication, Error> {
    let event = request
        .event
        .ok_or_else(|| Error::invalid("event", "is required"))?;
    publication(event, trace.parent.clone(), trace.state.clone())
}
