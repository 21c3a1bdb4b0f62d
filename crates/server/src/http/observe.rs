//! What every HTTP API request leaves behind: a server span, child of the caller's W3C
//! `traceparent` (so an event published over HTTP continues the caller's trace, as over gRPC), and
//! its count and latency in `/metrics`, by route and status.
//!
//! Both name a request by its route's template (`/v1/publish/{subject}`), never by its path: a
//! path holds subjects, stream names and ids, and a label per path would grow the registry
//! without bound. A path that no route serves is `unmatched`, and a method the API does not know
//! is `other`, for the same reason. An SSE stream's latency is the time to its first byte (the
//! response head): the stream itself lasts as long as the client stays.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use jetway_core::telemetry::SPAN_TARGET;
use tracing::{Instrument, field::Empty};

use crate::infra::telemetry::continue_remote_trace;

/// HTTP API requests answered, labelled `method`, `route` and `status`.
pub const REQUESTS: &str = "jetway_http_requests_total";
/// HTTP API request latency, from the request's head to the response's, labelled `method` and
/// `route`.
pub const REQUEST_DURATION: &str = "jetway_http_request_duration_seconds";
/// The `route` of a request that no route serves.
pub const UNMATCHED: &str = "unmatched";

/// The middleware: times, traces and counts one request.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route.as_str(),
        http.response.status_code = Empty,
    );
    continue_remote_trace(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        REQUESTS,
        "method" => method,
        "route" => route,
        "status" => status.as_str().to_owned(),
    )
    .increment(1);
    response
}

/// The `method` label: a method the API may know, else `other` (a client may send any token).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
