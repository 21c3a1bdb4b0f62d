//! The one place where core errors become gRPC statuses. Expected failures get a precise code and a
//! message naming the field or resource; anything unexpected becomes INTERNAL with a fixed message,
//! and its cause goes to the log.

use async_nats::jetstream::ErrorCode;
use jetway_core::{
    Error, ErrorKind, Invalid, NatsError,
    admin::AdminError,
    consumers::ConsumerError,
    dead_letters::DeadLetterError,
    delivery::DeliveryError,
    fetch::{FetchError, InFlightLimit},
    publish::PublishError,
    reads::EventReadError,
    state::{EnsureStoreError, ReadError, WriteError},
    streams::EnsureStreamError,
};
use tonic::{Code, Status};

/// The message of every INTERNAL status: the cause is logged, never sent.
pub const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

/// Maps a core error to a status.
pub trait ToStatus {
    /// The gRPC status for this error.
    fn to_status(&self) -> Status;
}

impl ToStatus for Invalid {
    fn to_status(&self) -> Status {
        Status::invalid_argument(self.to_string())
    }
}

impl ToStatus for NatsError {
    fn to_status(&self) -> Status {
        match self {
            NatsError::Unavailable(_) => Status::unavailable(self.to_string()),
            NatsError::Api { description, .. } => match self.api_code() {
                Some(ErrorCode::MAXIMUM_CONSUMERS_LIMIT) => Status::resource_exhausted(format!(
                    "JetStream: {description} (the stream's max_consumers; for a stream without \
                     one, nats-server's jetstream.limits.default_max_consumers, 1,000 unless \
                     configured)"
                )),
                _ if self.is_resource_limit() => {
                    Status::resource_exhausted(format!("JetStream: {description}"))
                }
                Some(
                    ErrorCode::CLUSTER_NOT_AVAILABLE
                    | ErrorCode::CLUSTER_NOT_ACTIVE
                    | ErrorCode::CLUSTER_NO_PEERS
                    | ErrorCode::JETSTREAM_NOT_ENABLED
                    | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
                ) => Status::unavailable(format!("JetStream: {description}")),
                _ => internal(self),
            },
            NatsError::Other(_) => internal(self),
        }
    }
}

/// The gRPC code of each kind of core error: the one table (the HTTP API has its own, by kind too).
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
        _ => Code::Internal,
    }
}

impl ToStatus for Error {
    fn to_status(&self) -> Status {
        match (code(self.kind()), self.limit()) {
            (Code::Internal, _) => internal(self),
            (code, Some(variable)) => Status::new(code, format!("{self} ({variable})")),
            (code, None) => Status::new(code, self.message()),
        }
    }
}

fn internal(cause: &dyn std::fmt::Display) -> Status {
    tracing::error!(%cause, "internal error");
    Status::internal(INTERNAL_MESSAGE)
}

impl ToStatus for EnsureStreamError {
    fn to_status(&self) -> Status {
        match self {
            EnsureStreamError::Invalid(invalid) => invalid.to_status(),
            EnsureStreamError::Conflict(message) => Status::failed_precondition(message.clone()),
            EnsureStreamError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for ConsumerError {
    fn to_status(&self) -> Status {
        match self {
            ConsumerError::Invalid(invalid) => invalid.to_status(),
            ConsumerError::StreamNotFound(_) | ConsumerError::ConsumerNotFound { .. } => {
                Status::not_found(self.to_string())
            }
            ConsumerError::Rejected(message) => Status::failed_precondition(message.clone()),
            ConsumerError::TooManyUnnamed { .. } => {
                Status::resource_exhausted(format!("{self} (MAX_UNNAMED_CONSUMERS_PER_STREAM)"))
            }
            ConsumerError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for PublishError {
    fn to_status(&self) -> Status {
        match self {
            PublishError::Invalid(invalid) => invalid.to_status(),
            PublishError::NoStream(_) => Status::not_found(self.to_string()),
            PublishError::WrongLastId { .. } => Status::failed_precondition(self.to_string()),
            PublishError::TooLarge { .. } => Status::invalid_argument(format!("data: {self}")),
            PublishError::StreamFull(_) => Status::resource_exhausted(self.to_string()),
            PublishError::TimedOut => Status::deadline_exceeded(self.to_string()),
            PublishError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for DeliveryError {
    fn to_status(&self) -> Status {
        match self {
            DeliveryError::ConsumerDeleted { .. } => Status::not_found(self.to_string()),
            DeliveryError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for EnsureStoreError {
    fn to_status(&self) -> Status {
        match self {
            EnsureStoreError::Invalid(invalid) => invalid.to_status(),
            EnsureStoreError::Conflict(message) => Status::failed_precondition(message.clone()),
            EnsureStoreError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for ReadError {
    fn to_status(&self) -> Status {
        match self {
            ReadError::Invalid(invalid) => invalid.to_status(),
            ReadError::StoreNotFound(_) | ReadError::KeyNotFound { .. } => {
                Status::not_found(self.to_string())
            }
            ReadError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for WriteError {
    fn to_status(&self) -> Status {
        match self {
            WriteError::Invalid(invalid) => invalid.to_status(),
            WriteError::StoreNotFound(_) => Status::not_found(self.to_string()),
            WriteError::KeyExists { .. } => Status::already_exists(self.to_string()),
            WriteError::WrongRevision { .. } => Status::failed_precondition(self.to_string()),
            WriteError::TooLarge { .. } => Status::invalid_argument(format!("value: {self}")),
            WriteError::TimedOut => Status::deadline_exceeded(self.to_string()),
            WriteError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for EventReadError {
    fn to_status(&self) -> Status {
        match self {
            EventReadError::Invalid(invalid) => invalid.to_status(),
            EventReadError::StreamNotFound(_)
            | EventReadError::NoStream(_)
            | EventReadError::EventNotFound { .. } => Status::not_found(self.to_string()),
            EventReadError::WorkQueue(_) => Status::failed_precondition(self.to_string()),
            EventReadError::TooSlow { .. } => {
                Status::resource_exhausted(format!("{self} (SUBSCRIBER_BUFFER_EVENTS)"))
            }
            EventReadError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for FetchError {
    fn to_status(&self) -> Status {
        match self {
            FetchError::Invalid(invalid) => invalid.to_status(),
            FetchError::Consumer(err) => err.to_status(),
            FetchError::TooManyInFlight(limit) => {
                let variable = match limit {
                    InFlightLimit::Consumer { .. } => "FETCH_MAX_IN_FLIGHT_PER_CONSUMER",
                    InFlightLimit::Server { .. } => "FETCH_MAX_IN_FLIGHT",
                };
                Status::resource_exhausted(format!("{limit} ({variable})"))
            }
            FetchError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for AdminError {
    fn to_status(&self) -> Status {
        match self {
            AdminError::Invalid(invalid) => invalid.to_status(),
            AdminError::StreamNotFound(_) | AdminError::ConsumerNotFound { .. } => {
                Status::not_found(self.to_string())
            }
            AdminError::Rejected(message) => Status::failed_precondition(message.clone()),
            AdminError::Internal { .. } => Status::failed_precondition(self.to_string()),
            AdminError::Nats(err) => err.to_status(),
        }
    }
}

impl ToStatus for DeadLetterError {
    fn to_status(&self) -> Status {
        match self {
            DeadLetterError::Invalid(invalid) => invalid.to_status(),
            DeadLetterError::StreamNotFound(_) => Status::not_found(self.to_string()),
            DeadLetterError::NotDeadLetterStream(_) => {
                Status::failed_precondition(format!("dead_letter_stream: {self}"))
            }
            DeadLetterError::TimedOut(_) => Status::deadline_exceeded(self.to_string()),
            DeadLetterError::Nats(err) => err.to_status(),
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
    use tonic::Code;

    #[test]
    fn codes() {
        let code = |e: &dyn ToStatus| e.to_status().code();
        assert_eq!(code(&PublishError::NoStream("a".into())), Code::NotFound);
        assert_eq!(
            code(&PublishError::WrongLastId {
                subject: "a".into(),
                expected: 1
            }),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(&PublishError::TooLarge { size: 2, limit: 1 }),
            Code::InvalidArgument
        );
        assert_eq!(
            code(&NatsError::Unavailable("down".into())),
            Code::Unavailable
        );
        let internal = NatsError::Other("secret detail".into()).to_status();
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), INTERNAL_MESSAGE);
        assert_eq!(
            code(&ConsumerError::StreamNotFound("s".into())),
            Code::NotFound
        );
    }

    #[test]
    fn state_codes() {
        let code = |e: &dyn ToStatus| e.to_status().code();
        assert_eq!(code(&ReadError::StoreNotFound("s".into())), Code::NotFound);
        assert_eq!(
            code(&ReadError::KeyNotFound {
                store: "s".into(),
                key: "k".into()
            }),
            Code::NotFound
        );
        assert_eq!(code(&WriteError::StoreNotFound("s".into())), Code::NotFound);
        assert_eq!(
            code(&WriteError::KeyExists {
                store: "s".into(),
                key: "k".into()
            }),
            Code::AlreadyExists
        );
        assert_eq!(
            code(&WriteError::WrongRevision {
                key: "k".into(),
                expected: 1
            }),
            Code::FailedPrecondition
        );
        let too_large = WriteError::TooLarge { size: 2, limit: 1 }.to_status();
        assert_eq!(too_large.code(), Code::InvalidArgument);
        assert!(too_large.message().starts_with("value: "), "{too_large:?}");
        assert!(
            too_large.message().contains("limit of 1 bytes"),
            "{too_large:?}"
        );
        assert_eq!(code(&WriteError::TimedOut), Code::DeadlineExceeded);
        assert_eq!(
            code(&EnsureStoreError::Conflict("storage".into())),
            Code::FailedPrecondition
        );
        assert_eq!(shutting_down("call again").code(), Code::Unavailable);
    }

    #[test]
    fn event_admin_and_dead_letter_codes() {
        let code = |e: &dyn ToStatus| e.to_status().code();
        assert_eq!(
            code(&EventReadError::EventNotFound {
                stream: "s".into(),
                id: 1
            }),
            Code::NotFound
        );
        assert_eq!(code(&EventReadError::NoStream("a".into())), Code::NotFound);
        let full = FetchError::TooManyInFlight(InFlightLimit::Consumer {
            stream: "s".into(),
            consumer: "c".into(),
            max: 7,
        })
        .to_status();
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert!(
            full.message().contains("consumer c on stream s has 7")
                && full
                    .message()
                    .ends_with("(FETCH_MAX_IN_FLIGHT_PER_CONSUMER)"),
            "{full:?}"
        );
        let server_full = FetchError::TooManyInFlight(InFlightLimit::Server { max: 9 }).to_status();
        assert!(
            server_full.message().ends_with("(FETCH_MAX_IN_FLIGHT)"),
            "{server_full:?}"
        );
        let slow = EventReadError::TooSlow { limit: 5, next: 9 }.to_status();
        assert_eq!(slow.code(), Code::ResourceExhausted);
        assert!(
            slow.message().contains("SUBSCRIBER_BUFFER_EVENTS") && slow.message().contains("id 9"),
            "{slow:?}"
        );
        let unnamed = ConsumerError::TooManyUnnamed {
            stream: "s".into(),
            limit: 5,
        }
        .to_status();
        assert_eq!(unnamed.code(), Code::ResourceExhausted);
        assert!(
            unnamed
                .message()
                .contains("MAX_UNNAMED_CONSUMERS_PER_STREAM"),
            "{unnamed:?}"
        );
        assert_eq!(
            code(&FetchError::Consumer(ConsumerError::StreamNotFound(
                "s".into()
            ))),
            Code::NotFound
        );
        assert_eq!(
            code(&AdminError::StreamNotFound("s".into())),
            Code::NotFound
        );
        assert_eq!(
            code(&AdminError::Rejected("deny purge".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(&DeadLetterError::NotDeadLetterStream("s".into())),
            Code::FailedPrecondition
        );
        assert_eq!(code(&DeadLetterError::TimedOut(7)), Code::DeadlineExceeded);
    }
}
