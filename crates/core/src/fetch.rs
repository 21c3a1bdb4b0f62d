//! Unary delivery for clients that cannot hold a stream open: Fetch takes events from a consumer,
//! and Ack and Reject settle them by id in later calls.
//!
//! The [`Fetcher`] remembers each fetched event (its ack subject) until it is settled or its
//! processing timeout passes; then JetStream redelivers it by itself, and the entry is dropped. The
//! conventions are the delivery engine's: the id is the stream sequence, a redelivery replaces the
//! entry of the earlier delivery, and a settlement answers every id in exactly one list.
//!
//! Each fetched event gets a receive span and carries trace context as on the Events path (see
//! [`crate::telemetry`]); the span ends with the event's settlement or expiry.
//!
//! The table lives in this process, so settlements must reach the Jetway server that did the
//! fetch. It is bounded: a fetch takes no more events than the table has room for when it starts
//! (so concurrent fetches overshoot [`MAX_IN_FLIGHT`] by at most their own sizes).

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use async_nats::{
    Subject,
    jetstream::{AckKind, consumer::PullConsumer, stream::ConsumerErrorKind},
};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::Span;

use crate::{
    Nats,
    consumers::{
        ConsumerError, attempt_timeout, processing_timeout, require_explicit_acks,
        within_request_limits,
    },
    delivery::{AckMetadata, Settle, Settled},
    error::{Classify, Invalid, NatsError},
    expiry::{Deadline, Expiries},
    format::{self, Event},
    names::validate_existing_name,
    telemetry,
};

/// Events per fetch when the client sets no limit.
pub const DEFAULT_MAX_EVENTS: u32 = 10;
/// The most events one fetch returns.
pub const MAX_EVENTS: u32 = 1000;
/// The longest a fetch waits for its first event.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How much longer than `wait` a fetch waits for JetStream's answer before it gives up on it.
const FETCH_MARGIN: Duration = Duration::from_secs(5);
/// How long a settlement waits for its acks to be written out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Naks the deliveries of a fetch that did not complete, from a task: `Drop` cannot wait.
struct NakOnDrop {
    nats: Nats,
    replies: Vec<Subject>,
}

impl Drop for NakOnDrop {
    fn drop(&mut self) {
        if self.replies.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.replies);
        let client = self.nats.client().clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for reply in replies {
                    client.publish(reply, AckKind::Nak(None).into()).await.ok();
                }
            });
        }
    }
}
/// The most bytes one fetch returns (as JetStream counts them), so a response stays under gRPC's
/// default 4 MiB message limit.
pub const MAX_FETCH_BYTES: usize = 3 << 20;
/// The most fetched events held in flight by this server, over all consumers.
pub const MAX_IN_FLIGHT: usize = 100_000;
/// The most ids one settlement takes.
pub const MAX_SETTLE_IDS: usize = 10_000;

/// A fetch, as Fetch receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchSpec {
    /// The stream.
    pub stream: String,
    /// The consumer.
    pub consumer: String,
    /// The most events returned; 0 means [`DEFAULT_MAX_EVENTS`].
    pub max_events: u32,
    /// How long to wait for the first event; `None` or zero returns at once.
    pub wait: Option<Duration>,
}

/// One fetched event.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The event.
    pub event: Event,
    /// 1 on the first delivery, 2 on the first redelivery, and so on.
    pub delivery_attempt: u64,
}

/// What a fetch returns.
#[derive(Debug, Clone)]
pub struct FetchedEvents {
    /// The events, in delivery order.
    pub events: Vec<Fetched>,
    /// The consumer's processing timeout (of a first delivery).
    pub processing_timeout: Duration,
}

/// Why a Fetch, Ack or Reject failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request is invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The stream or consumer does not exist, or the consumer cannot be fetched from.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// This server holds [`MAX_IN_FLIGHT`] fetched events; settle some, or let them expire.
    #[error("this server holds {MAX_IN_FLIGHT} fetched events in flight; ack or reject some first")]
    TooManyInFlight,
    /// NATS failed.
    #[error(transparent)]
    Nats(#[from] NatsError),
}

type Key = (String, String, u64);

struct Entry {
    reply: Subject,
    /// Its place among the expiries; a later delivery of the same event gets another one.
    deadline: Deadline,
    /// The delivery's receive span, ended by its settlement or its expiry.
    span: Span,
}

#[derive(Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    /// Every entry by expiry, so the expired ones are found without a scan.
    expiries: Expiries<Key>,
}

impl Table {
    /// Drops the entries whose processing timeout has passed: JetStream redelivers those.
    fn expire(&mut self, now: Instant) {
        while let Some(key) = self.expiries.pop_expired(now) {
            if let Some(entry) = self.entries.remove(&key) {
                telemetry::error(&entry.span, "processing timeout");
            }
        }
    }

    fn insert(&mut self, key: Key, reply: Subject, expires: Instant, span: Span) {
        let deadline = self.expiries.insert(expires, key.clone());
        let entry = Entry {
            reply,
            deadline,
            span,
        };
        if let Some(previous) = self.entries.insert(key, entry) {
            self.expiries.remove(&previous.deadline);
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.expiries.remove(&entry.deadline);
        Some(entry)
    }
}

/// The fetched events this server holds in flight; see the module docs. Shared by every call.
pub struct Fetcher {
    nats: Nats,
    table: Mutex<Table>,
}

impl Fetcher {
    /// An empty table over `nats`.
    pub fn new(nats: Nats) -> Fetcher {
        Fetcher {
            nats,
            table: Mutex::default(),
        }
    }

    /// Fetch: up to `max_events` events, waiting up to `wait` for the first one.
    pub async fn fetch(&self, spec: &FetchSpec) -> Result<FetchedEvents, FetchError> {
        validate_existing_name("stream", &spec.stream)?;
        validate_existing_name("consumer", &spec.consumer)?;
        if spec.max_events > MAX_EVENTS {
            return Err(Invalid::new("max_events", format!("must be at most {MAX_EVENTS}")).into());
        }
        if spec.wait.is_some_and(|wait| wait > MAX_WAIT) {
            return Err(Invalid::new("wait", format!("must be at most {MAX_WAIT:?}")).into());
        }
        let room = {
            let mut table = self.table.lock().expect("the table lock is never poisoned");
            table.expire(Instant::now());
            MAX_IN_FLIGHT.saturating_sub(table.entries.len())
        };
        let max = match spec.max_events {
            0 => DEFAULT_MAX_EVENTS,
            n => n,
        } as usize;
        if room == 0 {
            return Err(FetchError::TooManyInFlight);
        }
        let consumer = self.consumer(&spec.stream, &spec.consumer).await?;
        let config = consumer.cached_info().config.clone();
        let wait = spec.wait.filter(|wait| !wait.is_zero());
        let (max, max_bytes, wait) =
            within_request_limits(&config, max.min(room), MAX_FETCH_BYTES, wait);
        let mut fetch = consumer.fetch().max_messages(max).max_bytes(max_bytes);
        if let Some(wait) = wait {
            fetch = fetch.expires(wait);
        }
        let mut batch = fetch.messages().await.map_err(|err| {
            NatsError::Unavailable(format!("fetching from {}: {err}", spec.consumer))
        })?;
        // Until the events are handed over, a cancelled call (the client gave up) gives back what
        // it took, so nothing waits out its processing timeout unseen.
        let mut taken = NakOnDrop {
            nats: self.nats.clone(),
            replies: Vec::new(),
        };
        let mut events = Vec::new();
        let mut entries = Vec::new();
        // The pull request expires on the server after `wait`; the margin covers a lost answer.
        let deadline = Instant::now() + wait.unwrap_or_default() + FETCH_MARGIN;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, batch.next()).await {
            let message = message.map_err(|err| {
                NatsError::Unavailable(format!("fetching from {}: {err}", spec.consumer))
            })?;
            let mut message = message.message;
            let Some((
                reply,
                AckMetadata {
                    stream_sequence: id,
                    delivered: attempt,
                    stored,
                },
            )) = AckMetadata::take(&mut message)
            else {
                continue;
            };
            let expires = Instant::now() + attempt_timeout(&config, attempt);
            taken.replies.push(reply.clone());
            let mut event = format::decode(
                id,
                message.subject.to_string(),
                message.headers.as_ref(),
                message.payload,
                stored,
            );
            let span = telemetry::receive(&mut event, &spec.consumer);
            entries.push((
                (spec.stream.clone(), spec.consumer.clone(), id),
                reply,
                expires,
                span,
            ));
            events.push(Fetched {
                event,
                delivery_attempt: attempt,
            });
        }
        // One lock for the whole batch, taken only once the call can no longer be cancelled.
        let mut table = self.table.lock().expect("the table lock is never poisoned");
        for (key, reply, expires, span) in entries {
            table.insert(key, reply, expires, span);
        }
        drop(table);
        taken.replies.clear();
        Ok(FetchedEvents {
            events,
            processing_timeout: processing_timeout(consumer.cached_info()),
        })
    }

    /// Looks up a consumer that Fetch can serve: a pull consumer with explicit acks.
    async fn consumer(&self, stream: &str, name: &str) -> Result<PullConsumer, FetchError> {
        let consumer: PullConsumer = self
            .nats
            .jetstream()
            .get_consumer_from_stream(name, stream)
            .await
            .map_err(|err| match err.kind() {
                ConsumerErrorKind::InvalidConsumerType => ConsumerError::Rejected(format!(
                    "consumer {name} on stream {stream} is a push consumer; Fetch needs a pull consumer"
                )),
                _ => ConsumerError::from_nats(err.classify(), stream, name),
            })?;
        require_explicit_acks(&consumer.cached_info().config, stream, name, "Fetch")?;
        Ok(consumer)
    }

    /// Ack or Reject: settles fetched events by id. Each id is answered in exactly one list.
    pub async fn settle(
        &self,
        stream: &str,
        consumer: &str,
        ids: &[u64],
        how: Settle,
    ) -> Result<Settled, FetchError> {
        validate_existing_name("stream", stream)?;
        validate_existing_name("consumer", consumer)?;
        if ids.is_empty() {
            return Err(Invalid::new("ids", "must list at least one id").into());
        }
        if ids.len() > MAX_SETTLE_IDS {
            return Err(Invalid::new("ids", format!("must list at most {MAX_SETTLE_IDS}")).into());
        }
        let kind = how.ack_kind();
        // Taken out of the table first, so two concurrent settlements of one id cannot both send.
        let taken: Vec<(u64, Option<Entry>)> = {
            let mut table = self.table.lock().expect("the table lock is never poisoned");
            table.expire(Instant::now());
            let mut seen = HashSet::new();
            ids.iter()
                .map(|&id| {
                    let key = (stream.to_owned(), consumer.to_owned(), id);
                    let entry = seen.insert(id).then(|| table.remove(&key)).flatten();
                    (id, entry)
                })
                .collect()
        };
        let client = self.nats.client();
        let mut settled = Settled::default();
        let mut failed = Vec::new();
        for (id, entry) in taken {
            let Some(entry) = entry else {
                settled.invalid_ids.push(id);
                continue;
            };
            match self.nats.send_ack(entry.reply.clone(), kind).await {
                Ok(()) => {
                    how.record(&entry.span);
                    settled.ids.push(id);
                }
                Err(err) => {
                    tracing::warn!(%err, id, "could not settle a fetched event");
                    settled.temporary_failed_ids.push(id);
                    failed.push((id, entry));
                }
            }
        }
        if !failed.is_empty() {
            // Still in flight: the client may retry.
            let mut table = self.table.lock().expect("the table lock is never poisoned");
            for (id, entry) in failed {
                table.insert(
                    (stream.to_owned(), consumer.to_owned(), id),
                    entry.reply,
                    entry.deadline.at,
                    entry.span,
                );
            }
        }
        // Bounded: while NATS reconnects the flush would wait for it, and the settlements are
        // buffered and sent on reconnect anyway.
        if !settled.ids.is_empty()
            && !matches!(
                tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await,
                Ok(Ok(()))
            )
        {
            tracing::warn!("settlements not flushed yet; they go out when NATS is reachable");
        }
        Ok(settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64) -> Key {
        ("s".into(), "c".into(), id)
    }

    #[test]
    fn entries_expire_in_order_and_a_redelivery_replaces_the_earlier_entry() {
        let mut table = Table::default();
        let now = Instant::now();
        let second = Duration::from_secs(1);
        table.insert(key(1), "r1".into(), now + second, Span::none());
        table.insert(key(2), "r2".into(), now + 3 * second, Span::none());
        // A redelivery of 1 with a later deadline: the earlier expiry must not remove it.
        table.insert(key(1), "r1b".into(), now + 5 * second, Span::none());
        assert_eq!(table.expiries.len(), 2);

        table.expire(now + 2 * second);
        assert!(table.entries.contains_key(&key(1)) && table.entries.contains_key(&key(2)));
        table.expire(now + 4 * second);
        assert!(!table.entries.contains_key(&key(2)));
        assert_eq!(table.remove(&key(1)).map(|e| e.reply), Some("r1b".into()));
        assert!(table.entries.is_empty() && table.expiries.is_empty());
    }
}
