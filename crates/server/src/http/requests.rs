//! Request/reply over HTTP: `POST /v1/request/{subject}` sends the body as a request, through the
//! same [`Requester::request`](jetway_core::requests::Requester::request) as gRPC's
//! `RequestService.Request` (so the same span, metrics and limits), and answers with what the
//! processor answered: 200 with its reply, 204 for "no content", or the HTTP status of the gRPC code
//! it failed with ([`code_status`]). No processor is 503 at once; no answer in time is 504.
//!
//! The body goes as the payload with its `Content-Type`; `Jetway-Header-<name>` request headers
//! become the request's custom headers and the reply's custom headers come back the same way, as
//! the publish route takes them ([`HEADER_PREFIX`]).

use std::time::Duration;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use jetway_api::code_name;
use jetway_core::{
    requests::{Answer, Payload, RequestSpec},
    telemetry::TraceContext,
};

use crate::{
    codec::requests::failure_status,
    http::{
        ApiState,
        error::{ApiError, ErrorBody, code_status},
        json::{self, ApiPath},
        publish::HEADER_PREFIX,
    },
};

/// The request header that says how long to wait for the answer (as the `timeout` parameter does).
pub const TIMEOUT_HEADER: &str = "Request-Timeout";

/// `POST /v1/request/{subject}`: see the module docs.
#[utoipa::path(
    post,
    path = "/v1/request/{subject}",
    tag = "request",
    summary = "Send a request and wait for a processor's answer",
    description = "The body is the request's payload, sent with its Content-Type. The processor's \
                   reply comes back as the body with its content type, and its custom headers as \
                   `Jetway-Header-<name>`. The wait is `Request-Timeout` or `timeout`, else \
                   REQUEST_DEFAULT_TIMEOUT, cut to REQUEST_MAX_TIMEOUT.",
    params(
        ("subject" = String, Path, description = "The subject to send to (no wildcards)"),
        ("timeout" = Option<String>, Query, description = "How long to wait, e.g. `500ms`, `10s`"),
        ("Request-Timeout" = Option<String>, Header, description = "How long to wait (as `timeout`)"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context, passed to the processor"),
    ),
    request_body(content = Vec<u8>, content_type = "*/*", description = "The payload; custom headers are sent as `Jetway-Header-<name>`"),
    responses(
        (status = 200, description = "The processor's reply, with its content type", content_type = "*/*", body = Vec<u8>),
        (status = 204, description = "The processor handled it, with nothing to send back"),
        (status = 400, description = "A bad subject, header or timeout; or the processor failed it with INVALID_ARGUMENT or OUT_OF_RANGE", body = ErrorBody),
        (status = 404, description = "The processor failed it with NOT_FOUND", body = ErrorBody),
        (status = 409, description = "The processor failed it with ALREADY_EXISTS, FAILED_PRECONDITION or ABORTED", body = ErrorBody),
        (status = 413, description = "The body is over HTTP_MAX_BODY_BYTES", body = ErrorBody),
        (status = 429, description = "Every processor is busy and RESPOND_MAX_WAITING requests wait already", body = ErrorBody),
        (status = 500, description = "The processor failed it with UNKNOWN or INTERNAL", body = ErrorBody),
        (status = 501, description = "The processor failed it with UNIMPLEMENTED", body = ErrorBody),
        (status = 503, description = "No processor serves the subject, or the one holding the request left", body = ErrorBody),
        (status = 504, description = "No answer in time", body = ErrorBody),
    )
)]
pub async fn request(
    State(state): State<ApiState>,
    ApiPath(subject): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let timeout = timeout(&headers, uri.query())?;
    let payload = Payload {
        content_type: json::content_type(&headers)?.unwrap_or_default(),
        headers: custom_headers(&headers)?,
        data: json::read_body(&headers, body, state.max_body).await?,
    };
    let trace = TraceContext {
        parent: json::header_text(&headers, "traceparent")?,
        state: json::header_text(&headers, "tracestate")?,
    };
    let spec = RequestSpec {
        subject,
        payload,
        timeout,
        trace,
    };
    match state.requester.request(spec).await? {
        Answer::Reply(reply) => Ok(reply_response(reply)),
        Answer::NoContent => Ok(StatusCode::NO_CONTENT.into_response()),
        Answer::Failed(failure) => {
            // The processor's code, judged as gRPC's Request judges it, then its HTTP status.
            let status = failure_status(failure);
            Err(ApiError::new(
                code_status(status.code()),
                code_name(status.code()),
                status.message(),
            ))
        }
    }
}

/// The wait: the `Request-Timeout` header or the `timeout` parameter (not both), or `None` for
/// REQUEST_DEFAULT_TIMEOUT. Core cuts it to REQUEST_MAX_TIMEOUT.
fn timeout(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let mut query = json::query(query)?;
    let from_query = query.remove("timeout");
    if let Some(unknown) = query.keys().next() {
        return Err(ApiError::invalid(
            unknown,
            "is not a parameter of this route (timeout)",
        ));
    }
    let (field, value) = match (json::header_text(headers, TIMEOUT_HEADER)?, from_query) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "timeout",
                "is given both as the Request-Timeout header and the timeout parameter; give one",
            ));
        }
        (Some(value), None) => (TIMEOUT_HEADER, value),
        (None, Some(value)) => ("timeout", value),
        (None, None) => return Ok(None),
    };
    let timeout = json::duration(field, &value)?;
    if timeout.is_zero() {
        return Err(ApiError::invalid(
            field,
            "must be positive; leave it out for REQUEST_DEFAULT_TIMEOUT",
        ));
    }
    Ok(Some(timeout))
}

/// The `Jetway-Header-<name>` request headers, as `(name, value)` with the prefix removed, sorted.
fn custom_headers(headers: &HeaderMap) -> Result<Vec<(String, String)>, ApiError> {
    let mut custom = Vec::new();
    for (name, value) in headers {
        let Some(short) = name.as_str().strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid(name.as_str(), "is not visible ASCII"))?;
        custom.push((short.to_owned(), value.to_owned()));
    }
    custom.sort();
    Ok(custom)
}

/// 200 with the reply's payload, content type and custom headers (as `Jetway-Header-<name>`). A
/// reply header that HTTP cannot carry (a plain NATS responder may send any) is left out and logged.
fn reply_response(reply: Payload) -> Response {
    let mut response = Response::new(Body::from(reply.data));
    let headers = response.headers_mut();
    if !reply.content_type.is_empty() {
        match HeaderValue::from_str(&reply.content_type) {
            Ok(value) => {
                headers.insert(header::CONTENT_TYPE, value);
            }
            Err(_) => tracing::warn!("a reply's content type is not a valid HTTP header value"),
        }
    }
    for (name, value) in reply.headers {
        let name = HeaderName::from_bytes(format!("{HEADER_PREFIX}{name}").as_bytes());
        match (name, HeaderValue::from_str(&value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::warn!("a reply header is not a valid HTTP header; left out"),
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_comes_from_the_header_or_the_parameter() {
        let mut headers = HeaderMap::new();
        assert_eq!(timeout(&headers, None).unwrap(), None);
        assert_eq!(
            timeout(&headers, Some("timeout=250ms")).unwrap(),
            Some(Duration::from_millis(250))
        );
        headers.insert(TIMEOUT_HEADER, HeaderValue::from_static("2s"));
        assert_eq!(
            timeout(&headers, None).unwrap(),
            Some(Duration::from_secs(2))
        );
        let both = timeout(&headers, Some("timeout=1s")).unwrap_err();
        assert_eq!(both.body().error.field.as_deref(), Some("timeout"));
        headers.insert(TIMEOUT_HEADER, HeaderValue::from_static("0s"));
        let zero = timeout(&headers, None).unwrap_err();
        assert_eq!(zero.body().error.field.as_deref(), Some(TIMEOUT_HEADER));
        let unknown = timeout(&HeaderMap::new(), Some("wait=1s")).unwrap_err();
        assert_eq!(unknown.body().error.field.as_deref(), Some("wait"));
    }

    #[test]
    fn reply_headers_come_back_prefixed() {
        let response = reply_response(Payload {
            data: "hi".into(),
            content_type: "text/plain".to_owned(),
            headers: vec![
                ("x-lang".to_owned(), "en".to_owned()),
                ("bad(name)".to_owned(), "v".to_owned()),
            ],
        });
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain");
        assert_eq!(response.headers()["jetway-header-x-lang"], "en");
        assert_eq!(response.headers().len(), 2);
    }
}
