//! Jetway's one error type, [`Error`], and the interpretation of NATS and JetStream failures.
//!
//! Every operation in core fails with an [`Error`]: a [`ErrorKind`] saying what the caller can do
//! about it, the field or resource it is about, and a message for the client. Transports map the
//! kind, and only the kind, to their own status (gRPC codes, HTTP statuses), each by one table.
//! JetStream's error codes are read here, once, when a NATS failure becomes an [`Error`].

use async_nats::jetstream::ErrorCode;

/// What a caller can do about an [`Error`]; transports map each kind to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A client input is not acceptable; [`Error::field`] names it.
    Invalid,
    /// The stream, consumer, store, key or event named in [`Error::resource`] does not exist.
    NotFound,
    /// What the client asked to create exists already (a key in create-only mode).
    AlreadyExists,
    /// The request is well formed but the state does not allow it: an expected last id or
    /// revision that is not the latest, a declaration that conflicts with what exists, an
    /// operation refused for the kind of resource it names.
    Conflict,
    /// A limit was reached; [`Error::limit`] names the setting that sets it, if Jetway's own.
    LimitReached,
    /// NATS did not answer in time; the outcome is unknown and the call may be retried.
    TimedOut,
    /// NATS or JetStream is unavailable, or the server is shutting down; retry later.
    Unavailable,
    /// Stored data is not what the API promises; retrying cannot help.
    DataLoss,
    /// The call carries no credentials, or credentials that name no client.
    Unauthenticated,
    /// The client is known but its permissions do not allow the call on the resource named in
    /// [`Error::resource`].
    PermissionDenied,
    /// Anything unexpected: a bug or an answer NATS should not give. Its message is for the log
    /// only; transports answer with a fixed text.
    Internal,
}

/// The error of every core operation: what kind it is, what it is about, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    field: Option<String>,
    resource: Option<String>,
    limit: Option<&'static str>,
}

impl Error {
    /// An error of `kind` with the client-facing `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            field: None,
            resource: None,
            limit: None,
        }
    }

    /// A validation failure of `field`; the message starts with the field's name.
    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        Error::new(ErrorKind::Invalid, format!("{field}: {reason}")).with_field(field)
    }

    /// `resource` (e.g. `stream orders`) does not exist.
    pub fn not_found(resource: impl Into<String>) -> Self {
        let resource = resource.into();
        Error::new(ErrorKind::NotFound, format!("{resource} not found")).with_resource(resource)
    }

    /// The state does not allow the request; `message` says why.
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Conflict, message)
    }

    /// A limit set by Jetway's `variable` was reached; `message` says which and what to do.
    pub fn limit_reached(variable: &'static str, message: impl Into<String>) -> Self {
        let mut err = Error::new(ErrorKind::LimitReached, message);
        err.limit = Some(variable);
        err
    }

    /// Something unexpected; `cause` goes to the log, never to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::new(ErrorKind::Internal, cause.to_string())
    }

    /// Names the field this error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Names the resource this error is about.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// What the caller can do about this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for the client (for [`ErrorKind::Internal`], for the log only).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The input field this error is about, by its API name (e.g. `subjects[1]`).
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The resource this error is about (e.g. `stream orders`).
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// The configuration variable whose limit was reached, for [`ErrorKind::LimitReached`].
    pub fn limit(&self) -> Option<&'static str> {
        self.limit
    }
}

/// A client input that is not acceptable, naming the field (by its Windshift API name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field path, e.g. `retention_policy.max_age` or `subjects[1]`.
    pub field: String,
    /// Why the value is rejected.
    pub reason: String,
}

impl Invalid {
    /// A validation failure of `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A failure talking to NATS or JetStream that no more specific error variant covers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NatsError {
    /// NATS is not connected, JetStream does not answer, or the request timed out.
    #[error("NATS is unavailable: {0}")]
    Unavailable(String),
    /// JetStream answered with an API error.
    #[error("JetStream error {code}: {description}")]
    Api {
        /// The JetStream `err_code`.
        code: u64,
        /// JetStream's own description.
        description: String,
    },
    /// Anything else; a bug or an unexpected server answer.
    #[error("unexpected NATS failure: {0}")]
    Other(String),
}

impl NatsError {
    /// The JetStream API error code, if this is an API error.
    pub fn api_code(&self) -> Option<ErrorCode> {
        match self {
            NatsError::Api { code, .. } => Some(ErrorCode(*code)),
            _ => None,
        }
    }

    /// Whether JetStream refused for want of room: a limit of the server, the account or the
    /// stream (consumers, streams, storage, memory), which the client may retry once room is made.
    pub fn is_resource_limit(&self) -> bool {
        matches!(
            self.api_code(),
            Some(
                ErrorCode::INSUFFICIENT_RESOURCES
                    | ErrorCode::STORAGE_RESOURCES_EXCEEDED
                    | ErrorCode::MEMORY_RESOURCES_EXCEEDED
                    | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
                    | ErrorCode::MAXIMUM_STREAMS_LIMIT
                    | ErrorCode::MAXIMUM_CONSUMERS_LIMIT
            )
        )
    }

    pub(crate) fn api(err: &async_nats::jetstream::Error) -> Self {
        // The Display form is "<description> (code N, error code M)"; the codes are kept apart.
        let text = err.to_string();
        let description = text.split(" (code ").next().unwrap_or_default().to_owned();
        NatsError::Api {
            code: err.error_code().0,
            description,
        }
    }

    pub(crate) fn unavailable(err: impl std::fmt::Display) -> Self {
        NatsError::Unavailable(err.to_string())
    }

    pub(crate) fn other(err: impl std::fmt::Display) -> Self {
        NatsError::Other(err.to_string())
    }
}

/// Sorts the error of one async-nats JetStream call into a [`NatsError`]. async-nats gives each
/// call its own error kind enum, so this is implemented once per kind used here.
pub(crate) trait Classify {
    fn classify(&self) -> NatsError;
}

use async_nats::jetstream::{context, kv, stream};

impl Classify for context::GetStreamError {
    fn classify(&self) -> NatsError {
        match self.kind() {
            context::GetStreamErrorKind::JetStream(err) => NatsError::api(&err),
            context::GetStreamErrorKind::Request => NatsError::unavailable(self),
            _ => NatsError::other(self),
        }
    }
}

impl Classify for context::CreateStreamError {
    fn classify(&self) -> NatsError {
        use context::CreateStreamErrorKind as K;
        match self.kind() {
            K::JetStream(err) => NatsError::api(&err),
            K::JetStreamUnavailable | K::TimedOut => NatsError::unavailable(self),
            K::NotFound => api_code(ErrorCode::STREAM_NOT_FOUND, self),
            _ => NatsError::other(self),
        }
    }
}

impl Classify for stream::ConsumerError {
    fn classify(&self) -> NatsError {
        use stream::ConsumerErrorKind as K;
        match self.kind() {
            K::JetStream(err) => NatsError::api(&err),
            K::TimedOut | K::Request => NatsError::unavailable(self),
            _ => NatsError::other(self),
        }
    }
}

impl Classify for context::ConsumerInfoError {
    fn classify(&self) -> NatsError {
        use context::ConsumerInfoErrorKind as K;
        match self.kind() {
            K::JetStream(err) => NatsError::api(&err),
            K::NotFound => api_code(ErrorCode::CONSUMER_NOT_FOUND, self),
            K::StreamNotFound => api_code(ErrorCode::STREAM_NOT_FOUND, self),
            K::TimedOut | K::NoResponders | K::Request | K::Offline => NatsError::unavailable(self),
            K::InvalidName => NatsError::other(self),
        }
    }
}

impl Classify for context::AccountError {
    fn classify(&self) -> NatsError {
        use context::AccountErrorKind as K;
        match self.kind() {
            K::JetStream(err) => NatsError::api(&err),
            K::TimedOut | K::JetStreamUnavailable | K::Other => NatsError::unavailable(self),
        }
    }
}

impl Classify for stream::LastRawMessageError {
    fn classify(&self) -> NatsError {
        use stream::LastRawMessageErrorKind as K;
        match self.kind() {
            K::JetStream(err) => NatsError::api(&err),
            K::Other if is_unanswered(self) => NatsError::unavailable(self),
            K::Other | K::NoMessageFound | K::InvalidSubject => NatsError::other(self),
        }
    }
}

impl Classify for stream::DirectGetError {
    fn classify(&self) -> NatsError {
        use stream::DirectGetErrorKind as K;
        match self.kind() {
            K::TimedOut => NatsError::unavailable(self),
            K::NotFound | K::InvalidSubject | K::Request | K::ErrorResponse(..) | K::Other => {
                NatsError::other(self)
            }
        }
    }
}

impl Classify for kv::WatchError {
    fn classify(&self) -> NatsError {
        use kv::WatchErrorKind as K;
        match self.kind() {
            K::TimedOut => NatsError::unavailable(self),
            // Creating the ordered consumer failed; its own error says why (e.g. no such stream).
            K::Other | K::ConsumerCreate => match source::<stream::ConsumerError>(self) {
                Some(err) => err.classify(),
                None => NatsError::other(self),
            },
            K::InvalidKey => NatsError::other(self),
        }
    }
}

impl Classify for kv::WatcherError {
    fn classify(&self) -> NatsError {
        match self.kind() {
            // The ordered consumer behind a watch, key listing or history failed.
            kv::WatcherErrorKind::Consumer => NatsError::unavailable(self),
            kv::WatcherErrorKind::Other => NatsError::other(self),
        }
    }
}

impl Classify for context::KeyValueError {
    fn classify(&self) -> NatsError {
        match source::<context::GetStreamError>(self) {
            Some(err) => err.classify(),
            None => NatsError::other(self),
        }
    }
}

impl Classify for context::RequestError {
    fn classify(&self) -> NatsError {
        use context::RequestErrorKind as K;
        match self.kind() {
            K::NoResponders | K::TimedOut => NatsError::unavailable(self),
            // An API error answer arrives wrapped in a request error.
            K::Other | K::InvalidSubject => match source::<async_nats::jetstream::Error>(self) {
                Some(err) => NatsError::api(err),
                None => NatsError::other(self),
            },
        }
    }
}

impl Classify for stream::PurgeError {
    fn classify(&self) -> NatsError {
        use stream::PurgeErrorKind as K;
        match self.kind() {
            K::JetStream(err) => NatsError::api(&err),
            K::Request | K::TimedOut => NatsError::unavailable(self),
        }
    }
}

impl Classify for stream::DeleteMessageError {
    fn classify(&self) -> NatsError {
        use stream::DeleteMessageErrorKind as K;
        match self.kind() {
            K::JetStream(err) => NatsError::api(&err),
            K::Request | K::TimedOut => NatsError::unavailable(self),
        }
    }
}

/// Sends a JetStream API request (`subject` after `$JS.API.`) for the calls async-nats does not
/// offer in the shape needed (paged listings, stream names by subject), and returns the answer.
pub(crate) async fn api_request(
    nats: &crate::Nats,
    subject: String,
    payload: serde_json::Value,
) -> Result<serde_json::Value, NatsError> {
    use async_nats::jetstream::response::Response;
    match nats
        .jetstream()
        .request::<_, _, Response<serde_json::Value>>(subject, &payload)
        .await
    {
        Ok(Response::Ok(value)) => Ok(value),
        Ok(Response::Err { error }) => Err(NatsError::api(&error)),
        Err(err) => Err(err.classify()),
    }
}

/// The error this one wraps, if it is an `E`. async-nats wraps the error of an inner call this way.
fn source<E: std::error::Error + 'static>(err: &dyn std::error::Error) -> Option<&E> {
    err.source()?.downcast_ref()
}

/// Whether a request got no answer: nobody listens (JetStream is down) or it timed out.
fn is_unanswered(err: &dyn std::error::Error) -> bool {
    use context::RequestErrorKind as K;
    source::<context::RequestError>(err)
        .is_some_and(|request| matches!(request.kind(), K::NoResponders | K::TimedOut))
}

fn api_code(code: ErrorCode, err: impl std::fmt::Display) -> NatsError {
    NatsError::Api {
        code: code.0,
        description: err.to_string(),
    }
}
