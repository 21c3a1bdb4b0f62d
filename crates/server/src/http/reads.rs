//! Reads without a consumer over HTTP: `GET /v1/streams/{stream}/events` (a range, as a JSON array
//! or NDJSON by `Accept`) and `GET /v1/streams/{stream}/events/{id}` (one event), through the same
//! [`reads`] functions as gRPC's ReadEvents and GetEvent. Either answers CloudEvents when `Accept`
//! asks for them (`application/cloudevents+json` for one event, `application/cloudevents-batch+json`
//! for a range), mapped by [`cloudevents::from_event`].

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Uri, header},
    response::{IntoResponse, Response},
};
use futures::{Stream, StreamExt};
use jetway_core::{
    Error, ErrorKind,
    format::parse_time,
    reads::{self, ReadSpec},
    streams::StreamPointer,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::http::{
    ApiState,
    cloudevents::{self, CLOUDEVENTS_BATCH_JSON, CLOUDEVENTS_JSON},
    error::{ApiError, ErrorBody},
    json::{self, ApiPath, EventJson, NDJSON},
};

/// `GET /v1/streams/{stream}/events/{id}`.
#[utoipa::path(
    get,
    path = "/v1/streams/{stream}/events/{id}",
    tag = "read",
    summary = "One event by id",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("id" = u64, Path, description = "The event's id (stream sequence)"),
        ("Accept" = Option<String>, Header, description = "`application/cloudevents+json` for the event as a CloudEvent"),
    ),
    responses(
        (status = 200, description = "The event, or a CloudEvent with `Accept: application/cloudevents+json`",
            content(
                (EventJson = "application/json"),
                (Object = "application/cloudevents+json"),
            )
        ),
        (status = 400, description = "A bad stream name or id", body = ErrorBody),
        (status = 401, description = "No or bad credentials (with AUTH_FILE)", body = ErrorBody),
        (status = 403, description = "The client may not read the stream", body = ErrorBody),
        (status = 404, description = "No such stream or event", body = ErrorBody),
    )
)]
pub async fn get_event(
    State(state): State<ApiState>,
    ApiPath((stream, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = id
        .parse::<u64>()
        .map_err(|_| ApiError::invalid("id", "is not a whole number"))?;
    let event = reads::get_event(&state.nats, &stream, id).await?;
    if json::accepts(&headers, CLOUDEVENTS_JSON) {
        let mut response = Json(cloudevents::from_event(event, &stream)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CLOUDEVENTS_JSON),
        );
        return Ok(response);
    }
    Ok(Json(EventJson::from(event)).into_response())
}

/// Parses `from`: `start`, `end`, an id, or an RFC 3339 time.
pub fn pointer(field: &str, value: &str) -> Result<StreamPointer, ApiError> {
    match value {
        "start" => Ok(StreamPointer::Start),
        "end" => Ok(StreamPointer::End),
        _ => match value.parse::<u64>() {
            Ok(0) => Err(ApiError::invalid(
                field,
                "must be at least 1 (ids start at 1)",
            )),
            Ok(id) => Ok(StreamPointer::Offset(id)),
            Err(_) => parse_time(value).map(StreamPointer::Time).ok_or_else(|| {
                ApiError::invalid(field, "is not start, end, an id or an RFC 3339 time")
            }),
        },
    }
}

/// `GET /v1/streams/{stream}/events?from=&limit=&subject=`: the stored events from `from` (the
/// first by default) up to the last one stored when the read started, at most `limit`. The body
/// streams as it is read; an error once it has begun (the server shutting down, say) ends it with
/// an error body as its last item (a last NDJSON line or array element `{"error":…}`).
#[utoipa::path(
    get,
    path = "/v1/streams/{stream}/events",
    tag = "read",
    summary = "A range of stored events",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("from" = Option<String>, Query, description = "`start` (default), `end`, an id, or an RFC 3339 time"),
        ("limit" = Option<u64>, Query, description = "The most events returned"),
        ("subject" = Option<String>, Query, description = "Only events on subjects matching this filter"),
        ("Accept" = Option<String>, Header, description = "`application/x-ndjson` for NDJSON, `application/cloudevents-batch+json` for a batch of CloudEvents"),
    ),
    responses(
        (status = 200, description = "The events: a JSON array, NDJSON with `Accept: application/x-ndjson`, \
                                      or CloudEvents with `Accept: application/cloudevents-batch+json`",
            content(
                (Vec<EventJson> = "application/json"),
                (EventJson = "application/x-ndjson"),
                (Vec<Object> = "application/cloudevents-batch+json"),
            )
        ),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No or bad credentials (with AUTH_FILE)", body = ErrorBody),
        (status = 403, description = "The client may not read the stream", body = ErrorBody),
        (status = 404, description = "No such stream", body = ErrorBody),
    )
)]
pub async fn read_events(
    State(state): State<ApiState>,
    ApiPath(stream): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut query = json::query(uri.query())?;
    let from = query
        .remove("from")
        .map(|value| pointer("from", &value))
        .transpose()?;
    let limit = query
        .remove("limit")
        .map(|value| match value.parse::<u64>() {
            Ok(0) | Err(_) => Err(ApiError::invalid("limit", "is not a whole number above 0")),
            Ok(limit) => Ok(limit),
        })
        .transpose()?;
    let subject = query.remove("subject").unwrap_or_default();
    if let Some(unknown) = query.keys().next() {
        return Err(ApiError::invalid(
            unknown,
            "is not a parameter of this route (from, limit, subject)",
        ));
    }
    let spec = ReadSpec {
        stream,
        from,
        subject,
        limit,
    };
    let events = reads::read_events(&state.nats, &spec).await?;
    if json::accepts(&headers, CLOUDEVENTS_BATCH_JSON) {
        let stream = spec.stream;
        let mut response = json_items(
            events.map(move |event| event.map(|event| cloudevents::from_event(event, &stream))),
            false,
            &state.shutdown,
            "read again from the jetwayid after the last one received",
        );
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CLOUDEVENTS_BATCH_JSON),
        );
        return Ok(response);
    }
    Ok(json_items(
        events.map(|event| event.map(EventJson::from)),
        json::wants_ndjson(&headers),
        &state.shutdown,
        "read again from the id after the last one received",
    ))
}

/// Answers `items` as a JSON array, or NDJSON when `ndjson`, streamed as they come, so a long
/// listing costs the server little memory. An error once the body has begun (server shutdown,
/// which ends the listing early, and says `on_shutdown` to do next) is its last element or line,
/// the error body: a client must not take what it got for the whole listing. Range reads, key
/// listings and dead-letter listings share it.
pub fn json_items<T: Serialize + Send + 'static>(
    items: impl Stream<Item = Result<T, Error>> + Send + 'static,
    ndjson: bool,
    shutdown: &CancellationToken,
    on_shutdown: &'static str,
) -> Response {
    let stop = shutdown.clone();
    let items = items
        .take_until(stop.clone().cancelled_owned())
        .map(Some)
        .chain(futures::stream::once(async move {
            stop.is_cancelled().then(|| {
                Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("the server is shutting down; {on_shutdown}"),
                ))
            })
        }))
        .filter_map(futures::future::ready);
    // Each item is one JSON text; `None` marks the end, where a JSON array closes.
    let items = items
        .map(|item| {
            match item {
                Ok(item) => serde_json::to_vec(&item),
                Err(err) => serde_json::to_vec(ApiError::from(err).body()),
            }
            .map(Some)
        })
        .chain(futures::stream::once(async { Ok(None) }));
    let body = items.scan(false, move |started, item| {
        let bytes = item.map(|item| match (ndjson, item) {
            (true, Some(mut line)) => {
                line.push(b'\n');
                line
            }
            (true, None) => Vec::new(),
            (false, Some(mut element)) => {
                element.insert(0, if *started { b',' } else { b'[' });
                *started = true;
                element
            }
            (false, None) if *started => b"]".to_vec(),
            (false, None) => b"[]".to_vec(),
        });
        futures::future::ready(Some(bytes.map_err(std::io::Error::other)))
    });
    let body = Body::from_stream(body);
    let media = if ndjson { NDJSON } else { "application/json" };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    response
}
