//! Live subscriptions over Server-Sent Events: `GET /v1/subscribe/{subject}` streams every event
//! stored from now on whose subject matches the pattern, through the same live feeds as gRPC's
//! Subscribe. Each SSE `id:` is the event's stream sequence, so a client that reconnects with
//! `Last-Event-ID` (browsers' `EventSource` does) resumes right after it: the events stored
//! meanwhile are replayed with a range read, then the live feed goes on, with nothing missed or
//! repeated. A comment every [`HEARTBEAT`] keeps proxies from closing an idle stream. With
//! `AUTH_FILE`, the client needs the consume permission on the stream (the `stream` parameter, else
//! the one that captures the subject) before anything is streamed, as gRPC's Subscribe does, and
//! the stream ends with a [`FAILURE`] event when a reload of the clients file takes it away.
//! `format=cloudevents` makes each `data:` a CloudEvent ([`cloudevents::from_event`]).
//!
//! Gap-free resume: the live feed is opened first, so it holds every event stored after that; the
//! replay then reads up to the last event stored when it started, which is at least every event
//! stored before the feed opened. The live events the replay already sent (ids up to the last one
//! replayed) are skipped.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, Uri},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt, stream::BoxStream};
use jetway_core::{
    Error,
    live::LiveSpec,
    names::validate_existing_filter,
    reads::{self, ReadSpec},
    streams::{StreamPointer, validate_sequence},
};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Caller, Grant, Permission},
    http::{
        ApiState, cloudevents,
        error::{ApiError, ErrorBody},
        json::{self, ApiPath, EventJson},
    },
};

/// The SSE event type of the last message of a stream that failed (its data is the error body);
/// events themselves have no type, so `EventSource.onmessage` gets them. Not `error`, which
/// browsers also fire for a dropped connection.
pub const FAILURE: &str = "failure";

/// How often an idle SSE stream gets a comment line (`: heartbeat`).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// `GET /v1/subscribe/{subject}?stream=`: live events as SSE; see the module docs. `Last-Event-ID`
/// (or the `last_event_id` parameter, for clients that cannot set headers) resumes after that id.
#[utoipa::path(
    get,
    path = "/v1/subscribe/{subject}",
    tag = "live",
    summary = "Follow live events (Server-Sent Events)",
    description = "Each SSE `id:` is the event's id and its `data:` the event as JSON; a failure \
                   ends the stream with an `event: failure` whose data is the error body.",
    params(
        ("subject" = String, Path, description = "A subject or pattern (`orders.>` as `orders.%3E`)"),
        ("stream" = Option<String>, Query, description = "The stream, when the subject could be in several"),
        ("last_event_id" = Option<u64>, Query, description = "Resume after this id (as the Last-Event-ID header)"),
        ("format" = Option<String>, Query, description = "`json` (default): each `data:` is the event as JSON; `cloudevents`: a CloudEvent"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this id: the events stored since are replayed, then live ones follow"),
    ),
    responses(
        (status = 200, description = "A stream of events", content_type = "text/event-stream", body = EventJson),
        (status = 400, description = "A bad subject or id", body = ErrorBody),
        (status = 401, description = "No or bad credentials (with AUTH_FILE)", body = ErrorBody),
        (status = 403, description = "The client may not consume the stream", body = ErrorBody),
        (status = 404, description = "No stream captures the subject", body = ErrorBody),
    )
)]
pub async fn subscribe(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(subject): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut query = json::query(uri.query())?;
    let stream = query.remove("stream").unwrap_or_default();
    let from_query = query.remove("last_event_id");
    let cloud_events = match query.remove("format").as_deref() {
        None | Some("json") => false,
        Some("cloudevents") => true,
        Some(_) => return Err(ApiError::invalid("format", "is not json or cloudevents")),
    };
    if let Some(unknown) = query.keys().next() {
        return Err(ApiError::invalid(
            unknown,
            "is not a parameter of this route (stream, last_event_id, format)",
        ));
    }
    let last = match headers.get("last-event-id") {
        Some(value) => Some(("Last-Event-ID", value.to_str().unwrap_or("?").to_owned())),
        None => from_query.map(|value| ("last_event_id", value)),
    };
    let last = last
        .map(|(field, value)| {
            let last = value
                .trim()
                .parse::<u64>()
                .map_err(|_| ApiError::invalid(field, "is not an event id (a whole number)"))?;
            // The replay starts at the next id, which must be one a stream can have.
            validate_sequence(field, last.saturating_add(1))?;
            Ok::<_, ApiError>(last)
        })
        .transpose()?;
    // The permission is on a stream, so the stream must be known before anything is streamed (a
    // resume reads it too).
    let stream = if stream.is_empty() {
        validate_existing_filter("subject", &subject)?;
        reads::stream_of(&state.nats, &subject).await?
    } else {
        stream
    };
    let grant = Grant::new(&caller, [(Permission::Consume, stream.clone())])?;
    let spec = LiveSpec {
        subject: subject.clone(),
        stream: stream.clone(),
    };
    let source = stream.clone();
    let live = state.live.subscribe(&spec).await?;
    let events: BoxStream<'static, Result<_, Error>> = match last {
        None => live,
        Some(last) => {
            let replay = reads::read_events(
                &state.nats,
                &ReadSpec {
                    stream,
                    from: Some(StreamPointer::Offset(last.saturating_add(1))),
                    subject,
                    limit: None,
                },
            )
            .await?;
            replay.chain(live).boxed()
        }
    };
    // Ids only grow: whatever the replay sent, or the client had, is not sent again.
    let mut sent = last.unwrap_or(0);
    let events = events.filter_map(move |event| {
        let event = match event {
            Ok(event) if event.id <= sent => None,
            Ok(event) => {
                sent = event.id;
                let message = SseEvent::default().id(event.id.to_string());
                encoded(if cloud_events {
                    message.json_data(cloudevents::from_event(event, &source))
                } else {
                    message.json_data(EventJson::from(event))
                })
                .map(Ok)
            }
            Err(err) => Some(Err(err)),
        };
        futures::future::ready(event)
    });
    Ok(respond(events, grant, &state.shutdown))
}

/// Answers `events` as an SSE stream with a heartbeat comment every [`HEARTBEAT`]: it ends cleanly
/// at server shutdown, and at the first error, which goes out as a last [`FAILURE`] event (so a
/// failed replay never runs into a live feed); a reload of the clients file that revokes `grant`
/// is such an error. Live subscriptions and KV watches share it.
pub fn respond(
    events: impl Stream<Item = Result<SseEvent, Error>> + Send + 'static,
    grant: Grant,
    shutdown: &CancellationToken,
) -> Response {
    let events = Box::pin(events);
    let revoked = Box::pin(async move {
        let mut grant = grant;
        grant.revoked().await
    });
    // Ends right after the first error, without waiting for another event to come.
    let events = futures::stream::unfold(Some((events, revoked)), |going| async move {
        let (mut events, mut revoked) = going?;
        let next = tokio::select! {
            biased;
            revoked = &mut revoked => Err(revoked),
            next = events.next() => next?,
        };
        let going = next.is_ok().then_some((events, revoked));
        Some((next, going))
    })
    .take_until(shutdown.clone().cancelled_owned())
    .filter_map(|event| {
        let event = match event {
            Ok(event) => Some(event),
            Err(err) => encoded(
                SseEvent::default()
                    .event(FAILURE)
                    .json_data(ApiError::from(err).body()),
            ),
        };
        futures::future::ready(event.map(Ok::<_, Infallible>))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response()
}

/// An event that could not be written as JSON is logged and left out (it cannot happen: the
/// types serialize infallibly).
pub fn encoded(event: Result<SseEvent, axum::Error>) -> Option<SseEvent> {
    event
        .map_err(|err| tracing::error!(%err, "an SSE event does not encode"))
        .ok()
}
