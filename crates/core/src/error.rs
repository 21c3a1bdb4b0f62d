//! Jetway's one error type, [`Error`], and the interpretation of NATS and JetStream failures.
//!
//! Every operation in core fails with an [`Error`]: a [`ErrorKind`] saying what the caller can do
//! about it, the field or resource it is about, and a message for the client. Transports map the
//! kind, and only the kind, to their own status (gRPC codes, HTTP statuses), each by one table.
//! JetStream's error codes are read here, once, when a NATS failure becomes an [`Error`].

use async_nats::jetstream::ErrorCode;

/// What a caller can do about an [`Error`]; transports map each kind to one status. Not
/// `non_exhaustive`, on purpose: a kind added here must get its status in every transport's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
#[error("{}", self.inner.message)]
pub struct Error {
    // Boxed: every core call returns it, and the happy path should not carry its size.
    inner: Box<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    field: Option<String>,
    resource: Option<String>,
    limit: Option<&'static str>,
    api: Option<Api>,
}

impl Error {
    /// An error of `kind` with the client-facing `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                field: None,
                resource: None,
                limit: None,
                api: None,
            }),
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
        err.inner.limit = Some(variable);
        err
    }

    /// Something unexpected; `cause` goes to the log, never to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::new(ErrorKind::Internal, cause.to_string())
    }

    /// Names the field this error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.inner.field = Some(field.into());
        self
    }

    /// Names the resource this error is about.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.inner.resource = Some(resource.into());
        self
    }

    /// What the caller can do about this error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message for the client (for [`ErrorKind::Internal`], for the log only).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The input field this error is about, by its API name (e.g. `subjects[1]`).
    pub fn field(&self) -> Option<&str> {
        self.inner.field.as_deref()
    }

    /// The resource this error is about (e.g. `stream orders`).
    pub fn resource(&self) -> Option<&str> {
        self.inner.resource.as_deref()
    }

    /// The configuration variable whose limit was reached, for [`ErrorKind::LimitReached`].
    pub fn limit(&self) -> Option<&'static str> {
        self.inner.limit
    }
}

/// The result of every core operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A JetStream API error, kept beside the [`Error`] it became so that an operation can say what
/// it means for its own request (e.g. "no such stream" as "store orders not found").
#[derive(Debug, Clone)]
struct Api {
    code: ErrorCode,
    description: String,
}

impl Error {
    /// NATS or JetStream does not answer; `cause` says what could not be done.
    pub(crate) fn unavailable(cause: impl std::fmt::Display) -> Self {
        Error::new(
            ErrorKind::Unavailable,
            format!("NATS is unavailable: {cause}"),
        )
    }

    /// The reading of a JetStream API error: the one place its code becomes a kind. An operation
    /// may still say more about it for its own request ([`Error::api_code`]).
    pub(crate) fn jetstream(err: &async_nats::jetstream::Error) -> Self {
        Error::api(err.error_code(), description(err))
    }

    fn api(code: ErrorCode, description: String) -> Self {
        let (kind, message) = match code {
            ErrorCode::MAXIMUM_CONSUMERS_LIMIT => (
                ErrorKind::LimitReached,
                format!(
                    "JetStream: {description} (the stream's max_consumers; for a stream without \
                     one, nats-server's jetstream.limits.default_max_consumers, 1,000 unless \
                     configured)"
                ),
            ),
            // A limit of the server, the account or the stream, which the client may retry once
            // room is made.
            ErrorCode::INSUFFICIENT_RESOURCES
            | ErrorCode::STORAGE_RESOURCES_EXCEEDED
            | ErrorCode::MEMORY_RESOURCES_EXCEEDED
            | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
            | ErrorCode::MAXIMUM_STREAMS_LIMIT => {
                (ErrorKind::LimitReached, format!("JetStream: {description}"))
            }
            ErrorCode::CLUSTER_NOT_AVAILABLE
            | ErrorCode::CLUSTER_NOT_ACTIVE
            | ErrorCode::CLUSTER_NO_PEERS
            | ErrorCode::JETSTREAM_NOT_ENABLED
            | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => {
                (ErrorKind::Unavailable, format!("JetStream: {description}"))
            }
            ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND => {
                (ErrorKind::NotFound, format!("JetStream: {description}"))
            }
            // Any other answer is one JetStream should not give to Jetway's requests; an operation
            // that sends a declaration says it was refused instead ([`Error::refused`]).
            _ => (
                ErrorKind::Internal,
                format!("JetStream error {}: {description}", code.0),
            ),
        };
        let mut err = Error::new(kind, message);
        err.inner.api = Some(Api { code, description });
        err
    }

    /// A NATS failure that is neither an API error nor unavailability: a bug or an unexpected
    /// answer. For the log only.
    pub(crate) fn other(err: impl std::fmt::Display) -> Self {
        Error::internal(format!("unexpected NATS failure: {err}"))
    }

    /// The JetStream API error code behind this error, if JetStream answered with one.
    pub(crate) fn api_code(&self) -> Option<ErrorCode> {
        self.inner.api.as_ref().map(|api| api.code)
    }

    /// JetStream's own description of the API error behind this error.
    pub(crate) fn api_description(&self) -> Option<&str> {
        self.inner.api.as_ref().map(|api| api.description.as_str())
    }

    /// JetStream answered a declaration (a stream, store or consumer to create or update) with an
    /// error that no kind covers: it refused the declaration, which the client must change.
    /// `refusal` says what was refused, from the code and JetStream's description. Any other
    /// error stays as it is.
    pub(crate) fn refused(self, refusal: impl FnOnce(ErrorCode, &str) -> Error) -> Self {
        match &self.inner.api {
            Some(api) if self.inner.kind == ErrorKind::Internal => {
                refusal(api.code, &api.description)
            }
            _ => self,
        }
    }
}

/// JetStream's description of an API error. async-nats has no accessor for it, but serializes the
/// error as JetStream sent it.
fn description(err: &async_nats::jetstream::Error) -> String {
    serde_json::to_value(err)
        .ok()
        .and_then(|value| value.get("description")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The error of a stream that does not exist (`stream orders not found`).
pub(crate) fn stream_not_found(stream: &str) -> Error {
    Error::not_found(format!("stream {stream}"))
}

/// The error of a consumer that does not exist.
pub(crate) fn consumer_not_found(stream: &str, consumer: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("consumer {consumer} not found on stream {stream}"),
    )
    .with_resource(format!("consumer {consumer} on stream {stream}"))
}

/// What a failed call about the consumer `consumer` of `stream` (empty: about the stream alone)
/// means: "no such stream" and "no such consumer" name them. Every call that looks up a stream or
/// a consumer reads JetStream's answer this way, whichever API it serves.
pub(crate) fn about_consumer(err: Error, stream: &str, consumer: &str) -> Error {
    match err.api_code() {
        Some(ErrorCode::STREAM_NOT_FOUND) => stream_not_found(stream),
        Some(ErrorCode::CONSUMER_NOT_FOUND) => consumer_not_found(stream, consumer),
        _ => err,
    }
}

/// Sorts the error of one async-nats JetStream call into an [`Error`]. async-nats gives each
/// call its own error kind enum, so this is implemented once per kind used here.
pub(crate) trait Classify {
    fn classify(&self) -> Error;
}

use async_nats::jetstream::{context, kv, stream};

impl Classify for context::GetStreamError {
    fn classify(&self) -> Error {
        match self.kind() {
            context::GetStreamErrorKind::JetStream(err) => Error::jetstream(&err),
            context::GetStreamErrorKind::Request => Error::unavailable(self),
            _ => Error::other(self),
        }
    }
}

impl Classify for context::CreateStreamError {
    fn classify(&self) -> Error {
        use context::CreateStreamErrorKind as K;
        match self.kind() {
            K::JetStream(err) => Error::jetstream(&err),
            K::JetStreamUnavailable | K::TimedOut => Error::unavailable(self),
            K::NotFound => api_code(ErrorCode::STREAM_NOT_FOUND, self),
            _ => Error::other(self),
        }
    }
}

impl Classify for stream::ConsumerError {
    fn classify(&self) -> Error {
        use stream::ConsumerErrorKind as K;
        match self.kind() {
            K::JetStream(err) => Error::jetstream(&err),
            K::TimedOut | K::Request => Error::unavailable(self),
            _ => Error::other(self),
        }
    }
}

impl Classify for context::ConsumerInfoError {
    fn classify(&self) -> Error {
        use context::ConsumerInfoErrorKind as K;
        match self.kind() {
            K::JetStream(err) => Error::jetstream(&err),
            K::NotFound => api_code(ErrorCode::CONSUMER_NOT_FOUND, self),
            K::StreamNotFound => api_code(ErrorCode::STREAM_NOT_FOUND, self),
            K::TimedOut | K::NoResponders | K::Request | K::Offline => Error::unavailable(self),
            K::InvalidName => Error::other(self),
        }
    }
}

impl Classify for context::AccountError {
    fn classify(&self) -> Error {
        use context::AccountErrorKind as K;
        match self.kind() {
            K::JetStream(err) => Error::jetstream(&err),
            K::TimedOut | K::JetStreamUnavailable | K::Other => Error::unavailable(self),
        }
    }
}

impl Classify for stream::LastRawMessageError {
    fn classify(&self) -> Error {
        use stream::LastRawMessageErrorKind as K;
        match self.kind() {
            K::JetStream(err) => Error::jetstream(&err),
            K::Other if is_unanswered(self) => Error::unavailable(self),
            K::Other | K::NoMessageFound | K::InvalidSubject => Error::other(self),
        }
    }
}

impl Classify for stream::DirectGetError {
    fn classify(&self) -> Error {
        use stream::DirectGetErrorKind as K;
        match self.kind() {
            K::TimedOut => Error::unavailable(self),
            K::NotFound | K::InvalidSubject | K::Request | K::ErrorResponse(..) | K::Other => {
                Error::other(self)
            }
        }
    }
}

impl Classify for kv::WatchError {
    fn classify(&self) -> Error {
        use kv::WatchErrorKind as K;
        match self.kind() {
            K::TimedOut => Error::unavailable(self),
            // Creating the ordered consumer failed; its own error says why (e.g. no such stream).
            K::Other | K::ConsumerCreate => match source::<stream::ConsumerError>(self) {
                Some(err) => err.classify(),
                None => Error::other(self),
            },
            K::InvalidKey => Error::other(self),
        }
    }
}

impl Classify for kv::WatcherError {
    fn classify(&self) -> Error {
        match self.kind() {
            // The ordered consumer behind a watch, key listing or history failed.
            kv::WatcherErrorKind::Consumer => Error::unavailable(self),
            kv::WatcherErrorKind::Other => Error::other(self),
        }
    }
}

impl Classify for context::KeyValueError {
    fn classify(&self) -> Error {
        match source::<context::GetStreamError>(self) {
            Some(err) => err.classify(),
            None => Error::other(self),
        }
    }
}

impl Classify for context::RequestError {
    fn classify(&self) -> Error {
        use context::RequestErrorKind as K;
        match self.kind() {
            K::NoResponders | K::TimedOut => Error::unavailable(self),
            // An API error answer arrives wrapped in a request error.
            K::Other | K::InvalidSubject => match source::<async_nats::jetstream::Error>(self) {
                Some(err) => Error::jetstream(err),
                None => Error::other(self),
            },
        }
    }
}

impl Classify for stream::PurgeError {
    fn classify(&self) -> Error {
        use stream::PurgeErrorKind as K;
        match self.kind() {
            K::JetStream(err) => Error::jetstream(&err),
            K::Request | K::TimedOut => Error::unavailable(self),
        }
    }
}

impl Classify for stream::DeleteMessageError {
    fn classify(&self) -> Error {
        use stream::DeleteMessageErrorKind as K;
        match self.kind() {
            K::JetStream(err) => Error::jetstream(&err),
            K::Request | K::TimedOut => Error::unavailable(self),
        }
    }
}

/// Sends a JetStream API request (`subject` after `$JS.API.`) for the calls async-nats does not
/// offer in the shape needed (paged listings, stream names by subject), and returns the answer.
pub(crate) async fn api_request(
    nats: &crate::Nats,
    subject: String,
    payload: serde_json::Value,
) -> Result<serde_json::Value> {
    use async_nats::jetstream::response::Response;
    match nats
        .jetstream()
        .request::<_, _, Response<serde_json::Value>>(subject, &payload)
        .await
    {
        Ok(Response::Ok(value)) => Ok(value),
        Ok(Response::Err { error }) => Err(Error::jetstream(&error)),
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

/// An async-nats error that stands for the JetStream API error `code`.
fn api_code(code: ErrorCode, err: impl std::fmt::Display) -> Error {
    Error::api(code, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JetStream API error as JetStream sends it.
    fn api_error(code: ErrorCode, description: &str) -> async_nats::jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400,
            "err_code": code.0,
            "description": description,
        }))
        .unwrap()
    }

    #[test]
    fn each_jetstream_code_has_one_kind() {
        let read = |code, description| Error::jetstream(&api_error(code, description));
        let max = read(
            ErrorCode::MAXIMUM_CONSUMERS_LIMIT,
            "maximum consumers limit reached",
        );
        assert_eq!(max.kind(), ErrorKind::LimitReached);
        assert_eq!(
            max.message(),
            "JetStream: maximum consumers limit reached (the stream's max_consumers; for a stream \
             without one, nats-server's jetstream.limits.default_max_consumers, 1,000 unless \
             configured)"
        );
        assert_eq!(
            max.limit(),
            None,
            "JetStream's limit, not one of Jetway's settings"
        );
        let storage = read(
            ErrorCode::STORAGE_RESOURCES_EXCEEDED,
            "insufficient storage",
        );
        assert_eq!(storage.kind(), ErrorKind::LimitReached);
        assert_eq!(storage.message(), "JetStream: insufficient storage");
        let cluster = read(
            ErrorCode::CLUSTER_NOT_AVAILABLE,
            "system temporarily unavailable",
        );
        assert_eq!(cluster.kind(), ErrorKind::Unavailable);
        assert_eq!(
            cluster.message(),
            "JetStream: system temporarily unavailable"
        );
        assert_eq!(
            read(ErrorCode::STREAM_NOT_FOUND, "stream not found").kind(),
            ErrorKind::NotFound
        );
        let other = read(ErrorCode::STREAM_INVALID_CONFIG, "bad config");
        assert_eq!(other.kind(), ErrorKind::Internal);
        assert_eq!(other.message(), "JetStream error 10052: bad config");
        assert_eq!(other.api_code(), Some(ErrorCode::STREAM_INVALID_CONFIG));
    }

    #[test]
    fn the_description_is_read_as_sent_not_cut_from_display_text() {
        let err = Error::jetstream(&api_error(
            ErrorCode(10999),
            "odd (code 7, error code 8) text",
        ));
        assert_eq!(
            err.api_description(),
            Some("odd (code 7, error code 8) text")
        );
        assert_eq!(
            err.message(),
            "JetStream error 10999: odd (code 7, error code 8) text"
        );
        let bare: async_nats::jetstream::Error =
            serde_json::from_value(serde_json::json!({"code": 500, "err_code": 10999})).unwrap();
        assert_eq!(Error::jetstream(&bare).api_description(), Some("unknown"));
    }

    /// The same JetStream answer to a lookup means the same whichever API made it: consumers
    /// (EnsureConsumer, DeleteConsumer, Events, Fetch) and administration (GetConsumerInfo, ...)
    /// both read it with `about_consumer`. It used to be FAILED_PRECONDITION through the first and
    /// INTERNAL through the second for an unlisted code.
    #[test]
    fn a_lookup_error_means_the_same_through_consumers_and_admin() {
        let stream = about_consumer(
            Error::jetstream(&api_error(ErrorCode::STREAM_NOT_FOUND, "stream not found")),
            "orders",
            "worker",
        );
        assert_eq!(stream.kind(), ErrorKind::NotFound);
        assert_eq!(stream.message(), "stream orders not found");
        let consumer = about_consumer(
            Error::jetstream(&api_error(
                ErrorCode::CONSUMER_NOT_FOUND,
                "consumer not found",
            )),
            "orders",
            "worker",
        );
        assert_eq!(
            consumer.message(),
            "consumer worker not found on stream orders"
        );
        for code in [
            ErrorCode::MAXIMUM_CONSUMERS_LIMIT,
            ErrorCode::CLUSTER_NOT_ACTIVE,
            ErrorCode::CONSUMER_OFFLINE,
        ] {
            let read = Error::jetstream(&api_error(code, "why"));
            let through = about_consumer(read.clone(), "orders", "worker");
            assert_eq!(
                (through.kind(), through.message()),
                (read.kind(), read.message()),
                "{code:?}"
            );
        }
    }

    #[test]
    fn only_a_refused_declaration_becomes_a_conflict() {
        let refusal =
            |code: ErrorCode, _: &str| Error::conflict(format!("refused with {}", code.0));
        let unlisted = Error::jetstream(&api_error(ErrorCode::STREAM_INVALID_CONFIG, "bad"));
        let refused = unlisted.refused(refusal);
        assert_eq!(refused.kind(), ErrorKind::Conflict);
        assert_eq!(refused.message(), "refused with 10052");
        let limit = Error::jetstream(&api_error(ErrorCode::MAXIMUM_STREAMS_LIMIT, "max"));
        assert_eq!(limit.refused(refusal).kind(), ErrorKind::LimitReached);
        assert_eq!(
            Error::unavailable("down").refused(refusal).kind(),
            ErrorKind::Unavailable
        );
    }
}
