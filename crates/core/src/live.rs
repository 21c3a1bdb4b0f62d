//! Live subscriptions (Subscribe): every event stored from now on whose subject matches a filter.
//!
//! The subscribers of one stream and subject filter share a feed in this server: one reader (an
//! ordered consumer, see [`crate::reads`]) whose events go to each of them. The first subscriber
//! opens the feed; when the last one leaves, the feed closes and its consumer is deleted. So a
//! stream costs JetStream one consumer per subject filter per Jetway server however many subscribe,
//! and nats-server's limit on consumers per stream (1,000 by default) does not limit subscribers.
//! The ordered consumer recreates itself after a NATS reconnect from the last event it handed out,
//! so a feed outlives a NATS restart without a gap or a repeat.
//!
//! Each subscriber has a queue of at most `buffer` events. A feed never waits for a subscriber: one
//! whose queue is full when the next event comes is cut off, its call ending after the events it
//! was sent, with a [`crate::ErrorKind::LimitReached`] error naming the first event it missed. So a slow
//! subscriber neither delays the others nor misses an event silently, and it holds at most `buffer`
//! events, which it shares with the other subscribers (each event is decoded once).
//!
//! Order: a feed hands out events in stream order, and a subscriber joins between two of them, so
//! it gets every event stored after its Subscribe returned, in order, each once. It may also get a
//! few stored just before, which the feed had not handed out yet.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Nats,
    format::Event,
    names::{validate_existing_filter, validate_existing_name},
    reads::{Bound, Events, Reader, event_of, stream_of},
};

/// The most events a subscriber may have waiting when none is configured. Events are shared, so
/// this costs memory only while a subscriber lags, and then at most this many events; it lets a
/// subscriber ride out a burst (a PublishBatch is up to 1,000 events) at a client's own pace.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 1000;

/// A live subscription, as Subscribe receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSpec {
    /// A subject or a filter.
    pub subject: String,
    /// The stream; empty means the one stream whose subjects overlap `subject`.
    pub stream: String,
}

/// A stream and a subject filter: what a feed reads.
type Key = (String, String);

/// The feeds of this server.
type Registry = Arc<Mutex<HashMap<Key, Arc<Feed>>>>;

/// What a subscriber's queue carries: an event, or why its call ends.
type Item = Result<Arc<Event>, Error>;

/// The live feeds of this server, shared by every Subscribe call.
#[derive(Clone)]
pub struct LiveFeeds {
    nats: Nats,
    buffer: usize,
    feeds: Registry,
}

/// One feed: its subscribers' queues, and how its opening went.
struct Feed {
    subscribers: Mutex<Subscribers>,
    opened: watch::Receiver<Opening>,
    /// Cancelled when the last subscriber leaves.
    stop: CancellationToken,
    buffer: usize,
}

#[derive(Default)]
struct Subscribers {
    next_id: u64,
    /// Every subscriber still in its call; `None` once its queue was ended (it fell behind, or the
    /// feed failed) while its call sends what the queue still holds.
    queues: HashMap<u64, Option<mpsc::Sender<Item>>>,
}

#[derive(Clone)]
enum Opening {
    Pending,
    Open,
    Failed(Error),
}

impl LiveFeeds {
    /// Feeds over `nats`, each subscriber with a queue of at most `buffer` events (at least 1).
    pub fn new(nats: Nats, buffer: usize) -> Self {
        LiveFeeds {
            nats,
            buffer: buffer.max(1),
            feeds: Arc::default(),
        }
    }

    /// Subscribe: every event stored from now on, until the stream is deleted, the subscriber falls
    /// behind, or the caller stops. The feed is open when this returns.
    pub async fn subscribe(&self, spec: &LiveSpec) -> Result<Events, Error> {
        validate_existing_filter("subject", &spec.subject)?;
        let stream = if spec.stream.is_empty() {
            stream_of(&self.nats, &spec.subject).await?
        } else {
            validate_existing_name("stream", &spec.stream)?;
            spec.stream.clone()
        };
        let (member, queue) = self.join((stream, spec.subject.clone()));
        let mut opened = member.feed.opened.clone();
        let opening = opened
            .wait_for(|opening| !matches!(opening, Opening::Pending))
            .await
            .map(|opening| opening.clone());
        match opening {
            Ok(Opening::Open) => {}
            Ok(Opening::Failed(err)) => return Err(err),
            // The feed's task ended without a word: it panicked.
            Ok(Opening::Pending) | Err(_) => {
                return Err(Error::internal("a live feed stopped while opening"));
            }
        }
        let events = futures::stream::unfold((member, queue), |(member, mut queue)| async move {
            let item = queue.recv().await?;
            Some((item.map(Arc::unwrap_or_clone), (member, queue)))
        });
        Ok(events.boxed())
    }

    /// Adds a subscriber to the feed of `key`, opening the feed if there is none.
    fn join(&self, key: Key) -> (Member, mpsc::Receiver<Item>) {
        // One place more than the buffer, kept for the error that ends the call.
        let (tx, rx) = mpsc::channel(self.buffer + 1);
        let mut feeds = lock(&self.feeds);
        let feed = match feeds.get(&key) {
            Some(feed) => Arc::clone(feed),
            None => {
                let feed = self.open(key.clone());
                feeds.insert(key.clone(), Arc::clone(&feed));
                feed
            }
        };
        let id = {
            let mut subscribers = lock(&feed.subscribers);
            let id = subscribers.next_id;
            subscribers.next_id += 1;
            subscribers.queues.insert(id, Some(tx));
            id
        };
        drop(feeds);
        let member = Member {
            feeds: Arc::clone(&self.feeds),
            key,
            feed,
            id,
        };
        (member, rx)
    }

    /// A new feed of `key`, and the task that opens its reader and hands out its events.
    fn open(&self, key: Key) -> Arc<Feed> {
        let (opening, opened) = watch::channel(Opening::Pending);
        let feed = Arc::new(Feed {
            subscribers: Mutex::default(),
            opened,
            stop: CancellationToken::new(),
            buffer: self.buffer,
        });
        tokio::spawn(run(
            self.nats.clone(),
            Arc::clone(&self.feeds),
            key,
            Arc::clone(&feed),
            opening,
        ));
        feed
    }
}

/// A feed's task: opens the reader, then hands out each event until the last subscriber leaves or
/// the reader fails. Dropping the reader at the end deletes its consumer.
async fn run(
    nats: Nats,
    feeds: Registry,
    key: Key,
    feed: Arc<Feed>,
    opening: watch::Sender<Opening>,
) {
    let (stream, filter) = &key;
    let reader = tokio::select! {
        () = feed.stop.cancelled() => return,
        reader = Reader::open(&nats, stream, DeliverPolicy::New, filter, Bound::Live) => reader,
    };
    let mut reader = match reader {
        Ok(reader) => reader,
        Err(err) => {
            end(&feeds, &key, &feed, &err);
            opening.send_replace(Opening::Failed(err));
            return;
        }
    };
    opening.send_replace(Opening::Open);
    tracing::debug!(%stream, %filter, "live feed opened");
    loop {
        let next = tokio::select! {
            biased;
            () = feed.stop.cancelled() => break,
            next = reader.next() => next,
        };
        match next {
            Some(Ok(message)) => feed.hand_out(Arc::new(event_of(message))),
            Some(Err(err)) => {
                tracing::debug!(%stream, %filter, %err, "live feed ended");
                end(&feeds, &key, &feed, &err);
                break;
            }
            None => {
                // A live reader does not end by itself; should it, its subscribers must not be
                // told that their feed completed.
                let err = Error::unavailable(format!(
                    "the live feed of stream {stream} stopped; subscribe again"
                ));
                end(&feeds, &key, &feed, &err);
                break;
            }
        }
    }
    tracing::debug!(%stream, %filter, "live feed closed");
}

/// Ends a failed feed: no new subscriber joins it, and each of its subscribers gets `err` after the
/// events it has waiting.
fn end(feeds: &Registry, key: &Key, feed: &Arc<Feed>, err: &Error) {
    let mut feeds = lock(feeds);
    if feeds
        .get(key)
        .is_some_and(|current| Arc::ptr_eq(current, feed))
    {
        feeds.remove(key);
    }
    let mut subscribers = lock(&feed.subscribers);
    for queue in subscribers.queues.values_mut() {
        if let Some(tx) = queue.take() {
            // The place kept for it is free; a subscriber that left needs no word.
            tx.try_send(Err(err.clone())).ok();
        }
    }
}

impl Feed {
    /// Queues `event` for every subscriber, cutting off each one whose queue is full.
    fn hand_out(&self, event: Arc<Event>) {
        let mut subscribers = lock(&self.subscribers);
        for queue in subscribers.queues.values_mut() {
            let Some(tx) = queue else {
                continue;
            };
            // Only this task sends, so the room seen here is there for the send; a queue whose
            // subscriber left fails the send, and the subscriber's membership removes it.
            if tx.capacity() > 1 {
                tx.try_send(Ok(Arc::clone(&event))).ok();
            } else {
                let slow = too_slow(self.buffer, event.id);
                tx.try_send(Err(slow)).ok();
                *queue = None;
            }
        }
    }
}

/// The error of a subscriber cut off from its feed: it fell `limit` events behind, and `next` is
/// the first event it was not sent.
fn too_slow(limit: usize, next: u64) -> Error {
    Error::limit_reached(
        "SUBSCRIBER_BUFFER_EVENTS",
        format!(
            "this subscriber fell {limit} events behind the live feed, the most one may have \
             waiting; the first event not sent is id {next}: read on from there with ReadEvents, \
             then subscribe again"
        ),
    )
}

/// A subscriber's place in a feed, given up when its call ends (the event stream is dropped); the
/// last one to leave closes the feed.
struct Member {
    feeds: Registry,
    key: Key,
    feed: Arc<Feed>,
    id: u64,
}

impl Drop for Member {
    fn drop(&mut self) {
        // The registry first, as everywhere: a subscriber joining now either comes before this
        // (and keeps the feed open) or finds no feed and opens a new one.
        let mut feeds = lock(&self.feeds);
        let mut subscribers = lock(&self.feed.subscribers);
        subscribers.queues.remove(&self.id);
        if subscribers.queues.is_empty() {
            if feeds
                .get(&self.key)
                .is_some_and(|current| Arc::ptr_eq(current, &self.feed))
            {
                feeds.remove(&self.key);
            }
            self.feed.stop.cancel();
        }
    }
}

/// Locks `mutex`. Nothing panics while holding these locks, and if something did, the maps would
/// still be whole: the next user carries on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_subscriber_learns_the_variable_and_where_to_read_on() {
        let err = too_slow(5, 9);
        assert_eq!(err.kind(), crate::ErrorKind::LimitReached);
        assert_eq!(err.limit(), Some("SUBSCRIBER_BUFFER_EVENTS"));
        assert!(
            err.message()
                .starts_with("this subscriber fell 5 events behind")
                && err.message().contains("the first event not sent is id 9"),
            "{err}"
        );
    }
}
