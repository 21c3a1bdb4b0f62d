//! What a failed JetStream publish means: the one reading of an async-nats publish error (the send's
//! or the ack's) for every path that publishes, events ([`crate::publish`], the pipeline, dead
//! letters) and key-value writes ([`crate::state`]). It sorts by async-nats error kinds and
//! JetStream error codes, and asks JetStream for facts where a kind or code alone is ambiguous;
//! it never reads an error's text. Each caller turns the [`Failure`] into its own error, in its
//! own words (a stream's subject, or a store).

use async_nats::jetstream::{
    ErrorCode,
    context::{GetStreamByNameErrorKind, PublishError, PublishErrorKind},
    stream::{self, DiscardPolicy},
};

use crate::{Error, ErrorKind, Nats, error::Classify};

/// Where the failed message went, so that the stream behind it can be looked up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// A subject; the stream is whichever captures it.
    Subject(&'a str),
    /// A subject of the named stream.
    Stream(&'a str),
}

/// A failed publish, sorted.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The expected last subject sequence did not match; nothing was stored.
    WrongLastSequence,
    /// No stream takes the message.
    NoStream,
    /// A stream takes the message, yet nothing answered the publish: JetStream is not answering
    /// (e.g. just after a NATS restart).
    Unanswered {
        /// The stream that should have answered.
        stream: String,
    },
    /// Connected, but JetStream did not acknowledge in time; the message may or may not be stored.
    TimedOut,
    /// The connection failed under the publish; async-nats' account of it, for the log.
    Disconnected(String),
    /// The message is over the limit of NATS or of the stream.
    TooLarge {
        /// That limit in bytes; 0 when the stream's could not be read.
        limit: usize,
    },
    /// The message's headers are over JetStream's limit (the API error).
    HeadersTooLarge(Error),
    /// A stream with discard policy `new` is at one of its limits and refuses new messages (the
    /// API error, whose description names the limit).
    StreamFull(Error),
    /// Any other JetStream API error.
    Api(Error),
    /// Looking the stream up failed, or something other than JetStream answered.
    Nats(Error),
}

/// Sorts `err`, the failure of a publish to `target`.
pub(crate) async fn sort(nats: &Nats, err: &PublishError, target: Target<'_>) -> Failure {
    match err.kind() {
        PublishErrorKind::WrongLastSequence => Failure::WrongLastSequence,
        // "No responders": no stream takes the subject, unless JetStream itself is not answering;
        // looking the stream up tells the two apart.
        PublishErrorKind::StreamNotFound => match find_stream(nats, target).await {
            Ok(None) => Failure::NoStream,
            Ok(Some(stream)) => Failure::Unanswered { stream },
            Err(err) => Failure::Nats(err),
        },
        // Not looked up like an answer that is not an ack (below): when JetStream is slow, a whole
        // window of publishes times out at once, and as many lookups would only add to its load.
        PublishErrorKind::TimedOut if nats.is_connected() => Failure::TimedOut,
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
            Failure::Disconnected(err.to_string())
        }
        PublishErrorKind::MaxPayloadExceeded => Failure::TooLarge {
            limit: nats.max_payload(),
        },
        _ => match api_error(err) {
            Some(api) => match api.error_code() {
                ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => Failure::TooLarge {
                    limit: stream_config(nats, target)
                        .await
                        .and_then(|config| usize::try_from(config.max_message_size).ok())
                        .unwrap_or(0),
                },
                ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM => {
                    Failure::HeadersTooLarge(Error::jetstream(api))
                }
                // JetStream reports a stream at a limit under the generic "store failed" code, as
                // it does a failing disk; the stream's policy tells them apart.
                ErrorCode::STREAM_STORE_FAILED if refuses_when_full(nats, target).await => {
                    Failure::StreamFull(Error::jetstream(api))
                }
                _ => Failure::Api(Error::jetstream(api)),
            },
            // Something other than JetStream answered (a core NATS service on a subject no stream
            // captures), with something that is not an ack.
            None => match find_stream(nats, target).await {
                Ok(None) => Failure::NoStream,
                _ => Failure::Nats(Error::other(err)),
            },
        },
    }
}

/// The error of a publish refused by a full stream ([`Failure::StreamFull`], whose API error is
/// `api`), for every path that publishes: RESOURCE_EXHAUSTED, naming the limit as JetStream's
/// description does ("maximum messages exceeded", "maximum bytes exceeded"). `refusing` says who
/// refuses what, in the caller's words. The limit is the stream's (or the bucket's), not one of
/// Jetway's settings, so no variable is named.
pub(crate) fn full(refusing: &str, api: &Error) -> Error {
    Error::new(
        ErrorKind::LimitReached,
        format!(
            "{refusing}: JetStream error {}: {}",
            api.api_code().map_or(0, |code| code.0),
            api.api_description().unwrap_or_default()
        ),
    )
}

/// Whether the stream named `name` exists.
pub(crate) async fn stream_exists(nats: &Nats, name: &str) -> Result<bool, Error> {
    match nats.jetstream().get_stream(name).await {
        Ok(_) => Ok(true),
        Err(err) => match err.classify() {
            e if e.api_code() == Some(ErrorCode::STREAM_NOT_FOUND) => Ok(false),
            e => Err(e),
        },
    }
}

/// The JetStream API error a publish's ack carried, if any.
fn api_error(err: &PublishError) -> Option<&async_nats::jetstream::Error> {
    std::error::Error::source(err)?.downcast_ref()
}

/// The stream that takes messages to `target`, `None` when there is none.
async fn find_stream(nats: &Nats, target: Target<'_>) -> Result<Option<String>, Error> {
    match target {
        Target::Subject(subject) => match nats.jetstream().stream_by_subject(subject).await {
            Ok(stream) => Ok(Some(stream)),
            Err(err) if err.kind() == GetStreamByNameErrorKind::NotFound => Ok(None),
            Err(err) => Err(Error::unavailable(format!(
                "looking up the stream of {subject}: {err}"
            ))),
        },
        Target::Stream(name) => Ok(stream_exists(nats, name).await?.then(|| name.to_owned())),
    }
}

/// The configuration of the stream behind `target`, if it can be read.
async fn stream_config(nats: &Nats, target: Target<'_>) -> Option<stream::Config> {
    let name = match target {
        Target::Stream(name) => name.to_owned(),
        Target::Subject(_) => find_stream(nats, target).await.ok()??,
    };
    let stream = nats.jetstream().get_stream(name).await.ok()?;
    Some(stream.cached_info().config.clone())
}

/// Whether the stream behind `target` refuses new messages at one of its limits (discard policy
/// `new`) rather than dropping old ones.
async fn refuses_when_full(nats: &Nats, target: Target<'_>) -> bool {
    stream_config(nats, target).await.is_some_and(|config| {
        config.discard == DiscardPolicy::New
            && (config.max_messages > 0
                || config.max_bytes > 0
                || (config.discard_new_per_subject && config.max_messages_per_subject > 0))
    })
}
