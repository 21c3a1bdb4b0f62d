//! The client's error types: [`Error`] for calls, [`SettleError`] for settling a received event, and
//! [`DecodeError`] for reading the message inside an event or a stored value.

use jetway_api::google::protobuf::Any;
use tonic::Code;

/// Why a call to Jetway failed.
///
/// A status from the server keeps its gRPC code, so callers can react to it: see [`Error::code`] and
/// [`Error::is_not_found`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A metadata key or value cannot be sent as gRPC metadata (ASCII only, lowercase keys).
    #[error("invalid metadata {key:?}: {reason}")]
    InvalidMetadata {
        /// The key as given.
        key: String,
        /// What is wrong with the key or its value.
        reason: String,
    },
    /// The connection to the server could not be made.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The server URL.
        url: String,
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server, or the transport on its behalf, answered with an error status.
    // Boxed: a `tonic::Status` is large, and every `Result` of this crate carries this enum.
    #[error("{}: {}", jetway_api::code_name(.0.code()), .0.message())]
    Status(Box<tonic::Status>),
    /// The server's answer broke the Events protocol (a server bug, or not a Jetway server).
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl Error {
    /// The gRPC status code, if the server (or the transport) answered with a status.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Status(status) => Some(status.code()),
            _ => None,
        }
    }

    /// The full status, with its message and metadata, if there is one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Status(status) => Some(status),
            _ => None,
        }
    }

    /// True for NOT_FOUND: an unknown stream, consumer or store, a subject no stream captures, or
    /// a key without a value.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// Whether a subscription reconnects after this error rather than ending with it: transport
    /// failures and a server going away, but not a request the server refused for good.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::Status(status) => matches!(
                status.code(),
                Code::Unavailable
                    | Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
            ),
            Error::Connect { .. } => true,
            Error::InvalidUrl { .. } | Error::InvalidMetadata { .. } | Error::Protocol(_) => false,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status(Box::new(status))
    }
}

/// Why acking or rejecting an event did not take effect, or may not have. In every case the event
/// is not lost: JetStream delivers it again (at-least-once) unless the settle took effect, so the
/// work must be idempotent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The server no longer holds the event for this subscription: it was already settled, or its
    /// processing timeout passed and JetStream took it back for redelivery.
    #[error("event {id} is no longer held by this subscription; JetStream redelivers it")]
    NotHeld {
        /// The event id.
        id: u64,
    },
    /// The connection that delivered the event was lost before the server confirmed the settle.
    /// If the request had not reached the server, the server gave the event back to JetStream,
    /// which redelivers it, possibly to the same subscription after it reconnected. If it had, it
    /// may have taken effect just before the connection broke: an event acked that way is not
    /// redelivered. Which of the two happened cannot be known.
    #[error(
        "the connection that delivered event {id} was lost before the settle was confirmed; \
         JetStream redelivers it unless the settle took effect"
    )]
    ConnectionLost {
        /// The event id.
        id: u64,
    },
    /// The subscription that delivered the event was dropped or has ended.
    #[error("the subscription that delivered event {id} has ended; JetStream redelivers it")]
    Closed {
        /// The event id.
        id: u64,
    },
    /// The server kept reporting a temporary failure (its NATS connection is down). The event was
    /// rejected on drop, or comes back after its processing timeout.
    #[error("the server could not settle event {id} after {attempts} attempts")]
    Unavailable {
        /// The event id.
        id: u64,
        /// How many times the client tried.
        attempts: u32,
    },
}

/// Why the message inside an event or a stored value could not be decoded as the requested type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The value holds another message type.
    #[error("the value is a {actual}, not a {expected}")]
    WrongType {
        /// The full name of the type asked for.
        expected: String,
        /// The full name of the type the value holds (from its type URL).
        actual: String,
    },
    /// The type matches but the bytes are not a valid encoding of it.
    #[error("cannot decode {type_name}: {source}")]
    Invalid {
        /// The full name of the type.
        type_name: String,
        /// Why prost rejected the bytes.
        #[source]
        source: prost::DecodeError,
    },
    /// The event holds raw bytes (published with a content type), not a protobuf message.
    #[error("the event holds raw bytes, not a {expected}")]
    Raw {
        /// The full name of the type asked for.
        expected: String,
    },
}

/// Decodes `any` as `M`, checking its type URL first.
pub(crate) fn decode_any<M: prost::Name + Default>(any: &Any) -> Result<M, DecodeError> {
    match any.unpack::<M>() {
        Some(Ok(message)) => Ok(message),
        Some(Err(source)) => Err(DecodeError::Invalid {
            type_name: M::full_name(),
            source,
        }),
        None => Err(DecodeError::WrongType {
            expected: M::full_name(),
            actual: any.message_name().to_owned(),
        }),
    }
}
