//! `jetway.requests.v1.RequestService/RequestStream`: one task per stream reads requests, runs each
//! through [`answer_request`] (Request's own path, so each gets Request's answer or status, its
//! metrics and its spans) and answers each by its id as soon as it is answered.
//!
//! The requests of a stream wait together in the task (no task per request): at most
//! `REQUEST_STREAM_MAX_IN_FLIGHT` of them; a further one is answered RESOURCE_EXHAUSTED at once.
//! Answers go through a bounded channel that tonic drains; while it is full the task waits and reads
//! nothing more, so a client that does not read its answers is held back. When the channel closes
//! the client has gone: the task ends, and the requests in flight are dropped (their answers would
//! be late; core counts them so).
//!
//! The stream ends with OK once the client half-closed and every request read has been answered.
//! A request reusing the id of one in flight, or a request stream that breaks, stops the reading;
//! what was read is answered, then the stream ends with INVALID_ARGUMENT naming `id`, or tonic's
//! status. At server shutdown the task stops reading, answers what it read, and ends with
//! UNAVAILABLE.

use std::{collections::HashSet, future::Future};

use futures::{StreamExt, stream::FuturesUnordered};
use jetway_api::jetway::requests::v1::{self as api, request_stream_response::Result as Outcome};
use jetway_core::{Error, requests::Requester, telemetry::TraceContext};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::{
    auth::Caller,
    grpc::{
        publish_stream::Trace,
        requests::answer_request,
        status::{self, ToStatus},
        streaming::{self, Responses},
    },
    infra::{telemetry, transport::over_message_limit},
};

/// The method, as its per-request spans name it.
const METHOD: &str = "/jetway.requests.v1.RequestService/RequestStream";

/// Spawns the task of one RequestStream call, with at most `max_in_flight` requests waiting, and
/// returns the stream tonic sends from. `trace` (the call's metadata) applies to the requests that
/// carry no trace context of their own.
pub fn spawn(
    requester: Requester,
    caller: Caller,
    inbound: Streaming<api::RequestStreamRequest>,
    trace: Trace,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> Responses<api::RequestStreamResponse> {
    let (tx, rx) = mpsc::channel(streaming::SESSION_BUFFER);
    let session = Session {
        requester,
        caller,
        trace,
        max_in_flight,
    };
    crate::grpc::panic::spawn_guarded(tx.clone(), async move {
        session.run(inbound, tx, shutdown).await;
    });
    Box::pin(ReceiverStream::new(rx))
}

type Tx = mpsc::Sender<Result<api::RequestStreamResponse, Status>>;

/// What every request of one stream shares.
struct Session {
    requester: Requester,
    caller: Caller,
    trace: Trace,
    max_in_flight: usize,
}

impl Session {
    async fn run(
        &self,
        mut inbound: Streaming<api::RequestStreamRequest>,
        tx: Tx,
        shutdown: CancellationToken,
    ) {
        let mut in_flight = FuturesUnordered::new();
        // The ids of the requests in flight: a second request with one would make its answer
        // ambiguous.
        let mut ids = HashSet::new();
        // False once the client half-closed, the server shuts down or the stream failed.
        let mut reading = true;
        let mut end = Ok(());
        // Made once: each of these futures registers a waiter when polled, so a fresh one per loop
        // turn would take a lock for every request.
        let cancelled = shutdown.cancelled();
        let closed = tx.closed();
        tokio::pin!(cancelled, closed);
        while reading || !in_flight.is_empty() {
            tokio::select! {
                biased;
                // Answers first: each one makes room.
                Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    ids.remove(&id);
                    if tx.send(Ok(response(id, result))).await.is_err() {
                        return;
                    }
                }
                () = &mut closed => return,
                () = &mut cancelled, if reading => {
                    reading = false;
                    end = Err(status::shutting_down(
                        "the requests in flight were answered; send new ones to another server",
                    ));
                }
                message = inbound.message(), if reading => match message {
                    Ok(Some(request)) => {
                        let id = request.id;
                        if ids.contains(&id) {
                            reading = false;
                            end = Err(Status::invalid_argument(format!(
                                "id: {id} is the id of a request still in flight on this stream"
                            )));
                        } else if ids.len() >= self.max_in_flight {
                            let refused = Err(Status::resource_exhausted(format!(
                                "{} requests of this stream are in flight already \
                                 (REQUEST_STREAM_MAX_IN_FLIGHT); wait for an answer",
                                self.max_in_flight
                            )));
                            if tx.send(Ok(response(id, refused))).await.is_err() {
                                return;
                            }
                        } else {
                            ids.insert(id);
                            in_flight.push(self.answer(request));
                        }
                    }
                    // Also a cancelled call: tonic reports the client's cancel as the end of
                    // requests.
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

    /// One request's answer, with its id.
    fn answer(
        &self,
        request: api::RequestStreamRequest,
    ) -> impl Future<Output = (u64, Result<api::RequestResponse, Status>)> + '_ {
        let api::RequestStreamRequest {
            id,
            request,
            trace_parent,
            trace_state,
        } = request;
        // A request with its own trace context gets a span of its own in that trace, as its unary
        // call would; the others belong to the stream's span.
        let span = match &trace_parent {
            Some(parent) => telemetry::stream_item_span(METHOD, parent, trace_state.as_deref()),
            None => tracing::Span::current(),
        };
        let trace = match trace_parent {
            Some(parent) => TraceContext {
                parent: Some(parent),
                state: trace_state,
            },
            None => TraceContext {
                parent: self.trace.parent.clone(),
                state: self.trace.state.clone(),
            },
        };
        async move {
            let result = match request {
                // A stream has no deadline per request: its own timeout, else the default.
                Some(request) => {
                    answer_request(&self.requester, &self.caller, request, None, trace).await
                }
                None => Err(Error::invalid("request", "is required").to_status()),
            };
            (id, result)
        }
        .instrument(span)
    }
}

fn response(id: u64, result: Result<api::RequestResponse, Status>) -> api::RequestStreamResponse {
    let result = match result {
        Ok(answer) => Outcome::Answer(answer),
        Err(status) => Outcome::Error(api::RequestError {
            code: status.code().into(),
            message: status.message().to_owned(),
        }),
    };
    api::RequestStreamResponse {
        id,
        result: Some(result),
    }
}
