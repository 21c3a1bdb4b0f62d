//! The HTTP API's one error shape, `{"error":{"code":"NOT_FOUND","message":"…","field":…}}`, and
//! the one table from a gRPC code to an HTTP status ([`code_status`]): a core [`ErrorKind`] gets
//! the status of its code in the gRPC table in [`crate::grpc::status`] ([`status`]), and a failure
//! a processor answered a request with gets the status of its code. The `code` is the gRPC code's
//! name, so both APIs name a failure alike. Failures of the HTTP layer itself (a body over `HTTP_MAX_BODY_BYTES`, a
//! header that does not parse, an unknown route) get the same shape.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use jetway_api::code_name;
use jetway_core::{Error, ErrorKind};
use serde::Serialize;
use tonic::Code;

use crate::grpc::status::{INTERNAL_MESSAGE, code};

/// The HTTP status of each kind of core error: that of its gRPC code ([`code`]), so an error
/// answers alike on both APIs.
pub fn status(kind: ErrorKind) -> StatusCode {
    code_status(code(kind))
}

/// The HTTP status of each gRPC code: the one table. Also the status of a request a processor
/// failed with that code (`POST /v1/request/{subject}`).
pub fn code_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // Not a standard status; the one gRPC gateways use for a call the client cancelled.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        // The client asked to create what exists, or the state refuses the request (an expected
        // last id that is not the latest): either way, a conflict with the current state.
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unknown | Code::DataLoss | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
    }
}

/// An error answered by the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for [`ErrorBody`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The gRPC code's name for the same failure, e.g. `NOT_FOUND`, `INVALID_ARGUMENT`.
    #[schema(value_type = String, example = "NOT_FOUND")]
    pub code: &'static str,
    /// What happened, naming the field, resource or configuration variable.
    pub message: String,
    /// The request field, query parameter or header at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// An error of the HTTP layer: `status`, with `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code,
                    message: message.into(),
                    field: None,
                },
            },
        }
    }

    /// 400 about `field` (a header, query parameter or body field): `reason` says what is wrong.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::from(Error::invalid(field, reason))
    }

    /// The same error answered with `status` instead, for a route whose HTTP semantics call for
    /// another status than the table's (a failed `If-Match` is 412, not 409; a content coding the
    /// HTTP layer does not decode is 415).
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> ApiError {
        let grpc = code(err.kind());
        let message = match (err.kind(), err.limit()) {
            (ErrorKind::Internal, _) => {
                tracing::error!(cause = %err, "internal error");
                INTERNAL_MESSAGE.to_owned()
            }
            // A client that hits a limit of Jetway's learns which setting raises it.
            (_, Some(variable)) => format!("{err} ({variable})"),
            (_, None) => err.message().to_owned(),
        };
        ApiError {
            status: status(err.kind()),
            body: ErrorBody {
                error: ErrorDetail {
                    code: code_name(grpc),
                    message,
                    field: err.field().map(str::to_owned),
                },
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// 404 for a path no route serves.
pub async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such route; docs/http-api.md and /openapi.json list them",
    )
}

/// 405 for a route that does not take the request's method.
pub async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNIMPLEMENTED",
        "this route does not take this method; docs/http-api.md lists what each route takes",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status_and_code() {
        let answer = |kind| {
            let err = ApiError::from(Error::new(kind, "m"));
            (err.status().as_u16(), err.body().error.code)
        };
        assert_eq!(answer(ErrorKind::Invalid), (400, "INVALID_ARGUMENT"));
        assert_eq!(answer(ErrorKind::NotFound), (404, "NOT_FOUND"));
        assert_eq!(answer(ErrorKind::AlreadyExists), (409, "ALREADY_EXISTS"));
        assert_eq!(answer(ErrorKind::Conflict), (409, "FAILED_PRECONDITION"));
        assert_eq!(answer(ErrorKind::LimitReached), (429, "RESOURCE_EXHAUSTED"));
        assert_eq!(answer(ErrorKind::TimedOut), (504, "DEADLINE_EXCEEDED"));
        assert_eq!(answer(ErrorKind::Unavailable), (503, "UNAVAILABLE"));
        assert_eq!(answer(ErrorKind::DataLoss), (500, "DATA_LOSS"));
        assert_eq!(answer(ErrorKind::Internal), (500, "INTERNAL"));
        assert_eq!(answer(ErrorKind::Unauthenticated), (401, "UNAUTHENTICATED"));
        assert_eq!(
            answer(ErrorKind::PermissionDenied),
            (403, "PERMISSION_DENIED")
        );
    }

    #[test]
    fn codes_a_processor_may_send_have_their_status() {
        let status = |code| code_status(code).as_u16();
        assert_eq!(status(Code::Unknown), 500);
        assert_eq!(status(Code::OutOfRange), 400);
        assert_eq!(status(Code::Aborted), 409);
        assert_eq!(status(Code::Unimplemented), 501);
        assert_eq!(status(Code::Cancelled), 499);
    }

    #[test]
    fn fields_limits_and_internal_causes() {
        let invalid = ApiError::from(Error::invalid("subject", "is empty"));
        assert_eq!(invalid.body().error.field.as_deref(), Some("subject"));
        assert_eq!(invalid.body().error.message, "subject: is empty");
        let limit = ApiError::from(Error::limit_reached("SUBSCRIBER_BUFFER_EVENTS", "cut off"));
        assert_eq!(
            limit.body().error.message,
            "cut off (SUBSCRIBER_BUFFER_EVENTS)"
        );
        let internal = ApiError::from(Error::internal("secret detail"));
        assert_eq!(internal.body().error.message, INTERNAL_MESSAGE);
        let json = serde_json::to_value(internal.body()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "INTERNAL", "message": INTERNAL_MESSAGE}})
        );
    }
}
