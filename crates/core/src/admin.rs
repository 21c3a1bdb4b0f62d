//! Stream and consumer administration: listing and inspecting streams and consumers, deleting and
//! purging streams. These work on every stream of the NATS account, Jetway's or not, and return
//! JetStream's view in Jetway's terms ([`crate::info`]). Deleting or
//! purging one of Jetway's internal streams ([`internal_stream`]) needs `force`.
//!
//! Listings are paged the way JetStream pages them (up to 256 per page, by name), and the page token
//! is the offset of the next page.

use async_nats::jetstream::{ErrorCode, consumer, stream};
use futures::StreamExt;

use crate::{
    Nats, dead_letters,
    error::{Classify, Invalid, NatsError, api_request},
    info::{ConsumerInfo, StreamInfo},
    names::{validate_existing_filter, validate_existing_name},
};

/// The most subjects GetStreamInfo counts.
pub const MAX_SUBJECTS: usize = 1000;

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, by name.
    pub items: Vec<T>,
    /// The token of the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// A stream with its subjects and their event counts.
#[derive(Debug, Clone)]
pub struct StreamDetails {
    /// The stream's configuration and state.
    pub info: StreamInfo,
    /// Subjects and their event counts, at most [`MAX_SUBJECTS`], by subject.
    pub subjects: Vec<(String, u64)>,
    /// More subjects matched than `subjects` holds.
    pub subjects_truncated: bool,
}

/// Why an administration call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request is invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The stream does not exist.
    #[error("stream {0} not found")]
    StreamNotFound(String),
    /// The consumer does not exist.
    #[error("consumer {consumer} not found on stream {stream}")]
    ConsumerNotFound {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
    },
    /// The stream is one of Jetway's own ([`internal_stream`]) and the call was not forced.
    #[error("stream {stream} is internal to Jetway: {purpose}; pass force to {action} it anyway")]
    Internal {
        /// The stream.
        stream: String,
        /// What Jetway keeps in it.
        purpose: &'static str,
        /// `delete` or `purge`.
        action: &'static str,
    },
    /// JetStream refused (e.g. purging a stream that denies purges).
    #[error("{0}")]
    Rejected(String),
    /// NATS failed.
    #[error(transparent)]
    Nats(#[from] NatsError),
}

impl AdminError {
    fn from_nats(err: NatsError, stream: &str, consumer: &str) -> Self {
        match err.api_code() {
            Some(ErrorCode::STREAM_NOT_FOUND) => AdminError::StreamNotFound(stream.to_owned()),
            Some(ErrorCode::CONSUMER_NOT_FOUND) => AdminError::ConsumerNotFound {
                stream: stream.to_owned(),
                consumer: consumer.to_owned(),
            },
            _ => AdminError::Nats(err),
        }
    }
}

/// ListStreams: one page of streams.
pub async fn list_streams(nats: &Nats, page_token: &str) -> Result<Page<StreamInfo>, AdminError> {
    let offset = offset(page_token)?;
    let answer = api_request(
        nats,
        "STREAM.LIST".into(),
        serde_json::json!({ "offset": offset }),
    )
    .await?;
    page(
        &answer,
        "streams",
        offset,
        |item| serde_json::from_value::<stream::Info>(item).map(StreamInfo::from),
        |info: &StreamInfo| info.name.clone(),
    )
}

/// ListConsumers: one page of a stream's consumers.
pub async fn list_consumers(
    nats: &Nats,
    stream: &str,
    page_token: &str,
) -> Result<Page<ConsumerInfo>, AdminError> {
    validate_existing_name("stream", stream)?;
    let offset = offset(page_token)?;
    let answer = api_request(
        nats,
        format!("CONSUMER.LIST.{stream}"),
        serde_json::json!({ "offset": offset }),
    )
    .await
    .map_err(|err| AdminError::from_nats(err, stream, ""))?;
    page(
        &answer,
        "consumers",
        offset,
        |item| serde_json::from_value::<consumer::Info>(item).map(|info| ConsumerInfo::from(&info)),
        |info: &ConsumerInfo| info.name.clone(),
    )
}

fn offset(page_token: &str) -> Result<u64, Invalid> {
    if page_token.is_empty() {
        return Ok(0);
    }
    // JetStream reads the offset as a signed 64-bit number.
    page_token
        .parse::<u64>()
        .ok()
        .filter(|offset| i64::try_from(*offset).is_ok())
        .ok_or_else(|| Invalid::new("page_token", "is not a token from a previous page"))
}

/// Reads one page of a JetStream listing answer: `total`, and the items under `key`, each read by
/// `parse` and sorted by `name`.
fn page<T>(
    answer: &serde_json::Value,
    key: &str,
    offset: u64,
    parse: fn(serde_json::Value) -> serde_json::Result<T>,
    name: impl Fn(&T) -> String,
) -> Result<Page<T>, AdminError> {
    let mut items: Vec<T> = match answer.get(key) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| parse(item.clone()))
            .collect::<Result<_, _>>()
            .map_err(|err| NatsError::Other(format!("reading a JetStream {key} page: {err}")))?,
        _ => Vec::new(),
    };
    items.sort_by_key(|item| name(item));
    let total = answer["total"].as_u64().unwrap_or_default();
    let next = offset + items.len() as u64;
    Ok(Page {
        next_page_token: (next < total && !items.is_empty()).then(|| next.to_string()),
        items,
    })
}

/// GetStreamInfo: a stream's configuration and state, and the event counts of the subjects
/// matching `subject_filter` (empty: all).
pub async fn stream_info(
    nats: &Nats,
    stream: &str,
    subject_filter: &str,
) -> Result<StreamDetails, AdminError> {
    validate_existing_name("stream", stream)?;
    let filter = match subject_filter {
        "" => ">",
        filter => {
            validate_existing_filter("subject_filter", filter)?;
            filter
        }
    };
    let lookup = |err: NatsError| AdminError::from_nats(err, stream, "");
    let handle = nats
        .jetstream()
        .get_stream_no_info(stream)
        .await
        .map_err(|err| lookup(err.classify()))?;
    let mut subjects = handle
        .info_with_subjects(filter)
        .await
        .map_err(|err| lookup(err.classify()))?;
    let mut counts = Vec::new();
    let mut truncated = false;
    while let Some(subject) = subjects.next().await {
        let (subject, count) = subject.map_err(|err| lookup(err.classify()))?;
        if counts.len() == MAX_SUBJECTS {
            truncated = true;
            break;
        }
        counts.push((subject, count as u64));
    }
    counts.sort();
    Ok(StreamDetails {
        info: subjects.info.clone().into(),
        subjects: counts,
        subjects_truncated: truncated,
    })
}

/// What Jetway keeps in `stream` if it is one of its own internal streams: the advisory stream
/// that dead letters are made from, or a key-value store's stream (`KV_<store>`). Deleting or
/// purging one loses what Jetway relies on, so it needs `force`.
pub fn internal_stream(stream: &str) -> Option<&'static str> {
    if stream == dead_letters::ADVISORY_STREAM {
        Some("it keeps the advisories that dead letters are made from")
    } else if stream.starts_with("KV_") {
        Some("it holds a key-value store")
    } else {
        None
    }
}

/// Refuses to `action` an internal stream unless `force`d, and logs a forced one.
fn check_internal(stream: &str, action: &'static str, force: bool) -> Result<(), AdminError> {
    match internal_stream(stream) {
        Some(purpose) if !force => Err(AdminError::Internal {
            stream: stream.to_owned(),
            purpose,
            action,
        }),
        Some(purpose) => {
            tracing::warn!(%stream, purpose, action, "forced on an internal stream");
            Ok(())
        }
        None => Ok(()),
    }
}

/// DeleteStream: deletes a stream with its events and consumers. An internal stream
/// ([`internal_stream`]) only with `force`.
pub async fn delete_stream(nats: &Nats, stream: &str, force: bool) -> Result<(), AdminError> {
    validate_existing_name("stream", stream)?;
    check_internal(stream, "delete", force)?;
    nats.jetstream()
        .delete_stream(stream)
        .await
        .map_err(|err| AdminError::from_nats(err.classify(), stream, ""))?;
    tracing::info!(%stream, "stream deleted");
    Ok(())
}

/// PurgeStream: removes the events on subjects matching `subject` (empty: all), except the newest
/// `keep` of them. Returns how many were removed. An internal stream ([`internal_stream`]) only
/// with `force`.
pub async fn purge_stream(
    nats: &Nats,
    stream: &str,
    subject: &str,
    keep: u64,
    force: bool,
) -> Result<u64, AdminError> {
    validate_existing_name("stream", stream)?;
    if !subject.is_empty() {
        validate_existing_filter("subject", subject)?;
    }
    check_internal(stream, "purge", force)?;
    let lookup = |err: NatsError| match AdminError::from_nats(err, stream, "") {
        AdminError::Nats(NatsError::Api { description, .. }) => AdminError::Rejected(format!(
            "JetStream refused to purge {stream}: {description}"
        )),
        other => other,
    };
    let handle = nats
        .jetstream()
        .get_stream_no_info(stream)
        .await
        .map_err(|err| lookup(err.classify()))?;
    let purge = handle.purge();
    let purged = match (subject, keep) {
        ("", 0) => purge.await,
        ("", keep) => purge.keep(keep).await,
        (subject, 0) => purge.filter(subject).await,
        (subject, keep) => purge.filter(subject).keep(keep).await,
    }
    .map_err(|err| lookup(err.classify()))?
    .purged;
    tracing::info!(%stream, subject, keep, purged, "stream purged");
    Ok(purged)
}

/// GetConsumerInfo: a consumer's configuration and state.
pub async fn consumer_info(
    nats: &Nats,
    stream: &str,
    consumer: &str,
) -> Result<ConsumerInfo, AdminError> {
    validate_existing_name("stream", stream)?;
    validate_existing_name("consumer", consumer)?;
    let lookup = |err: NatsError| AdminError::from_nats(err, stream, consumer);
    nats.jetstream()
        .get_stream_no_info(stream)
        .await
        .map_err(|err| lookup(err.classify()))?
        .consumer_info(consumer)
        .await
        .map(|info| ConsumerInfo::from(&info))
        .map_err(|err| lookup(err.classify()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_sort_by_name_and_say_where_the_next_one_starts() {
        let answer = serde_json::json!({"total": 5, "streams": ["b", "a"]});
        let name = |item: &serde_json::Value| item.as_str().unwrap_or_default().to_owned();
        let first = page(&answer, "streams", 0, serde_json::from_value, name).unwrap();
        assert_eq!(first.items, ["a", "b"]);
        assert_eq!(first.next_page_token.as_deref(), Some("2"));
        let last = page(&answer, "streams", 3, serde_json::from_value, name).unwrap();
        assert_eq!(last.next_page_token, None);
        assert_eq!(offset("").unwrap(), 0);
        assert_eq!(offset("7").unwrap(), 7);
        assert_eq!(offset("x").unwrap_err().field, "page_token");
        assert_eq!(
            offset("9223372036854775808").unwrap_err().field,
            "page_token"
        );
    }

    #[test]
    fn internal_streams_need_force() {
        assert!(internal_stream("JETWAY_ADVISORIES").is_some());
        assert!(internal_stream("KV_config").is_some());
        assert_eq!(internal_stream("orders"), None);
        assert_eq!(internal_stream("orders-dead"), None);
        let refused = check_internal("KV_config", "purge", false).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "stream KV_config is internal to Jetway: it holds a key-value store; pass force to purge it anyway"
        );
        assert!(check_internal("KV_config", "purge", true).is_ok());
        assert!(check_internal("orders", "delete", false).is_ok());
    }
}
