//! The one place where core errors become gRPC statuses: a table from [`ErrorKind`] to a code
//! ([`code`]), which an HTTP API mirrors with its own table from kind to HTTP status. The message
//! is the error's own, naming the field or resource, and the configuration variable of a Jetway
//! limit; anything unexpected becomes INTERNAL with a fixed message, and its cause goes to the log.
//! What a JetStream error code means is decided in core, not here.

use jetway_core::{Error, ErrorKind};
use tonic::{Code, Status};

/// The message of every INTERNAL status: the cause is logged, never sent.
pub const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

/// Maps a core error to a status.
pub trait ToStatus {
    /// The gRPC status for this error.
    fn to_status(&self) -> Status;
}

/// The gRPC code of each kind of core error: the one table.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Invalid => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Conflict => Code::FailedPrecondition,
        ErrorKind::LimitReached => Code::ResourceExhausted,
        ErrorKind::TimedOut => Code::DeadlineExceeded,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Internal => Code::Internal,
    }
}

impl ToStatus for Error {
    fn to_status(&self) -> Status {
        match (code(self.kind()), self.limit()) {
            (Code::Internal, _) => {
                tracing::error!(cause = %self, "internal error");
                Status::internal(INTERNAL_MESSAGE)
            }
            // A client that hits a limit of Jetway's learns which setting raises it.
            (code, Some(variable)) => Status::new(code, format!("{self} ({variable})")),
            (code, None) => Status::new(code, self.message()),
        }
    }
}

/// UNAVAILABLE for a call that server shutdown ends; `next` tells the client how to carry on.
pub fn shutting_down(next: &str) -> Status {
    Status::unavailable(format!("the server is shutting down; {next}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code() {
        let code = |kind| Error::new(kind, "m").to_status().code();
        assert_eq!(code(ErrorKind::Invalid), Code::InvalidArgument);
        assert_eq!(code(ErrorKind::NotFound), Code::NotFound);
        assert_eq!(code(ErrorKind::AlreadyExists), Code::AlreadyExists);
        assert_eq!(code(ErrorKind::Conflict), Code::FailedPrecondition);
        assert_eq!(code(ErrorKind::LimitReached), Code::ResourceExhausted);
        assert_eq!(code(ErrorKind::TimedOut), Code::DeadlineExceeded);
        assert_eq!(code(ErrorKind::Unavailable), Code::Unavailable);
        assert_eq!(code(ErrorKind::DataLoss), Code::DataLoss);
        assert_eq!(code(ErrorKind::Internal), Code::Internal);
        assert_eq!(shutting_down("call again").code(), Code::Unavailable);
    }

    #[test]
    fn messages_name_the_field_or_resource() {
        let invalid = Error::invalid("value", "the value is 2 bytes, over the limit of 1 bytes");
        let status = invalid.to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "value: the value is 2 bytes, over the limit of 1 bytes"
        );
        let missing = Error::not_found("stream s").to_status();
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(missing.message(), "stream s not found");
        let refused = Error::conflict("deny purge").to_status();
        assert_eq!(refused.message(), "deny purge");
    }

    #[test]
    fn a_jetway_limit_names_its_variable() {
        let full = Error::limit_reached(
            "FETCH_MAX_IN_FLIGHT_PER_CONSUMER",
            "consumer c on stream s has 7 fetched events in flight",
        )
        .to_status();
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert_eq!(
            full.message(),
            "consumer c on stream s has 7 fetched events in flight (FETCH_MAX_IN_FLIGHT_PER_CONSUMER)"
        );
        // JetStream's own limits are no variable of Jetway's.
        let jetstream = Error::new(
            ErrorKind::LimitReached,
            "JetStream: maximum messages exceeded",
        );
        assert_eq!(
            jetstream.to_status().message(),
            "JetStream: maximum messages exceeded"
        );
    }

    #[test]
    fn internal_errors_keep_their_cause_out_of_the_status() {
        let internal = Error::internal("secret detail").to_status();
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), INTERNAL_MESSAGE);
    }
}
