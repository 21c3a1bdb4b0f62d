//! What a pipeline's publishes look like on the wire: the reply subjects that carry their tokens,
//! JetStream's replies (a publish ack or an API error), and the client's refusals to send, read into
//! the error kinds of a JetStream publish. Pure functions, with unit tests.

use async_nats::{
    Message, StatusCode, Subject,
    client::PublishErrorKind as SendErrorKind,
    jetstream::{
        self, ErrorCode,
        context::{PublishError as JsPublishError, PublishErrorKind},
    },
};

use crate::publish::Published;

/// `<prefix><token>`, built without the formatting machinery: one is made per event.
pub(crate) fn reply_subject(prefix: &str, token: u64) -> Subject {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(token);
    let mut subject = String::with_capacity(prefix.len() + digits.len());
    subject.push_str(prefix);
    subject.push_str(digits);
    Subject::from(subject)
}

/// The token of a reply subject made by [`reply_subject`] with `prefix`.
pub(crate) fn token(subject: &str, prefix: &str) -> Option<u64> {
    subject.strip_prefix(prefix)?.parse::<u64>().ok()
}

/// What JetStream's reply to a publish says: the stored event, or why not.
pub(crate) fn read_ack(reply: &Message) -> Result<Published, JsPublishError> {
    /// A publish ack (`{"stream":…,"seq":…,"duplicate":…}`) or an API error; fields not needed
    /// here are skipped without being copied.
    #[derive(serde::Deserialize)]
    struct Ack {
        seq: Option<u64>,
        #[serde(default)]
        duplicate: bool,
        error: Option<jetstream::Error>,
    }
    // No stream captures the subject, or JetStream is not answering yet.
    if reply.status == Some(StatusCode::NO_RESPONDERS) {
        return Err(JsPublishError::new(PublishErrorKind::StreamNotFound));
    }
    let ack: Ack = serde_json::from_slice(&reply.payload)
        .map_err(|err| JsPublishError::with_source(PublishErrorKind::Other, err))?;
    match (ack.error, ack.seq) {
        (Some(error), _) => {
            let kind = match error.error_code() {
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE => PublishErrorKind::WrongLastSequence,
                ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID => PublishErrorKind::WrongLastMessageId,
                _ => PublishErrorKind::Other,
            };
            Err(JsPublishError::with_source(kind, error))
        }
        (None, Some(id)) => Ok(Published {
            id,
            duplicate: ack.duplicate,
        }),
        (None, None) => Err(JsPublishError::with_source(
            PublishErrorKind::Other,
            "JetStream's publish ack has no sequence",
        )),
    }
}

/// The JetStream view of a message the client would not send.
pub(crate) fn sort_send_error(err: &async_nats::client::PublishError) -> JsPublishError {
    match err.kind() {
        SendErrorKind::MaxPayloadExceeded => {
            JsPublishError::new(PublishErrorKind::MaxPayloadExceeded)
        }
        _ => JsPublishError::new(PublishErrorKind::BrokenPipe),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_reply_subject_carries_its_token() {
        let subject = reply_subject("_INBOX.abc.", 42);
        assert_eq!(subject.as_str(), "_INBOX.abc.42");
        assert_eq!(token(&subject, "_INBOX.abc."), Some(42));
        assert_eq!(token("_INBOX.other.42", "_INBOX.abc."), None);
        assert_eq!(token("_INBOX.abc.x", "_INBOX.abc."), None);
    }

    /// JetStream's reply to a publish: `payload`, with a NATS status.
    fn reply(payload: &'static str, status: Option<StatusCode>) -> Message {
        Message {
            subject: "_INBOX.x.1".into(),
            reply: None,
            payload: Bytes::from_static(payload.as_bytes()),
            headers: None,
            status,
            description: None,
            length: 0,
        }
    }

    fn kind(payload: &'static str, status: Option<StatusCode>) -> PublishErrorKind {
        read_ack(&reply(payload, status)).unwrap_err().kind()
    }

    #[test]
    fn a_publish_ack_reads_as_the_stored_event_or_why_not() {
        assert_eq!(
            read_ack(&reply(r#"{"stream":"s","seq":7}"#, None)).unwrap(),
            Published {
                id: 7,
                duplicate: false
            }
        );
        assert_eq!(
            read_ack(&reply(r#"{"stream":"s","seq":7,"duplicate":true}"#, None)).unwrap(),
            Published {
                id: 7,
                duplicate: true
            }
        );
        let error = |err_code: u64| -> &'static str {
            match err_code {
                10071 => {
                    r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}"#
                }
                10070 => {
                    r#"{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: a"}}"#
                }
                _ => {
                    r#"{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}"#
                }
            }
        };
        assert_eq!(
            kind(error(10071), None),
            PublishErrorKind::WrongLastSequence
        );
        assert_eq!(
            kind(error(10070), None),
            PublishErrorKind::WrongLastMessageId
        );
        assert_eq!(kind(error(10008), None), PublishErrorKind::Other);
        assert_eq!(
            kind("", Some(StatusCode::NO_RESPONDERS)),
            PublishErrorKind::StreamNotFound,
            "no stream captures the subject"
        );
        assert_eq!(kind("not json", None), PublishErrorKind::Other);
        assert_eq!(
            kind(r#"{"stream":"s"}"#, None),
            PublishErrorKind::Other,
            "no sequence"
        );
    }

    #[test]
    fn a_message_the_client_would_not_send_is_too_large_or_a_broken_pipe() {
        let sorted = |kind| sort_send_error(&async_nats::client::PublishError::new(kind)).kind();
        assert_eq!(
            sorted(SendErrorKind::MaxPayloadExceeded),
            PublishErrorKind::MaxPayloadExceeded
        );
        assert_eq!(sorted(SendErrorKind::Send), PublishErrorKind::BrokenPipe);
        assert_eq!(
            sorted(SendErrorKind::InvalidSubject),
            PublishErrorKind::BrokenPipe
        );
    }
}
