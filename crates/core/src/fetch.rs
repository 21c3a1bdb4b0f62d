//! Unary delivery for clients that cannot hold a stream open: Fetch takes events from a consumer,
//! and Ack and Reject settle them by id in later calls; Extend asks for more time for them.
//!
//! The [`Fetcher`] remembers each fetched event (its ack subject) until it is settled or JetStream
//! stops holding that delivery; then JetStream redelivers it by itself, and the entry is dropped. The
//! conventions are the delivery engine's: the id is the stream sequence, a redelivery replaces the
//! entry of the earlier delivery, and a settlement answers every id in exactly one list.
//!
//! **Never held longer than JetStream holds it.** An entry expires after the processing timeout of
//! its delivery attempt (its backoff entry, or else the consumer's processing timeout), counted from
//! its arrival, as JetStream counts it from the delivery, or from its last extension (a progress
//! ack, which restarts JetStream's timer too).
//! The entries of a consumer are dropped when JetStream announces that the consumer or its stream
//! was deleted, when Fetch, Ack or Reject find it gone or made anew under the same name, and their
//! deadlines follow a change of its timeouts. After a reconnect (announcements sent meanwhile are
//! lost) every consumer in the table is looked up again.
//!
//! **Bounded.** At most [`FetchLimits::per_consumer`] events per consumer, so one consumer at its
//! limit holds up no other, and [`FetchLimits::total`] over all of them, which bounds the memory. A
//! fetch reserves its slots before it pulls, so concurrent fetches never go past either limit. A
//! fetch made for a client ([`FetchSpec::client`]) also reserves within that client's
//! [`ClientQuota`]: each entry records the client that fetched it, and the client's count drops as
//! its entries are settled, expire or are dropped with their consumer.
//!
//! **Pulls.** A pull asks for at most [`MAX_FETCH_BYTES`]; JetStream ends it when the next event
//! would go past them, and the fetch returns what came. An event larger than that on its own comes
//! alone, from a pull without a byte limit. A pull that fails after events came returns them: they
//! were delivered, and JetStream counted the attempt, so handing them back would spend it unseen.
//!
//! Each fetched event gets a receive span and carries trace context as on the Events path (see
//! [`crate::telemetry`]); the span ends with the event's settlement or expiry.
//!
//! The table lives in this process, so settlements must reach the Jetway server that did the fetch.

use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map},
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use async_nats::{
    StatusCode, Subject,
    jetstream::{
        AckKind,
        consumer::{self, PullConsumer, pull::BatchConfig},
        stream::ConsumerErrorKind,
    },
};
use futures::StreamExt;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Span;

use crate::{
    Error, ErrorKind, Nats,
    consumers::{
        attempt_timeout, processing_timeout, require_explicit_acks, within_request_limits,
    },
    dead_letters,
    delivery::AckMetadata,
    error::{Classify, about_consumer, consumer_not_found},
    expiry::{Deadline, Expiries},
    format::{self, Event},
    names::validate_existing_name,
    settle::{Settle, Settled},
    telemetry::{
        self,
        metrics::{self, Path},
    },
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
/// The most bytes one fetch asks for (as JetStream counts them: subject, ack subject, headers and
/// payload of each event), so a response stays under gRPC's default 4 MiB message limit. A single
/// event larger than this still comes, on its own.
pub const MAX_FETCH_BYTES: usize = 3 << 20;
/// The default of [`FetchLimits::per_consumer`]: the most events one Events stream may hold
/// (`maxProcessingEvents`), and the most ids one Ack takes, so one call can settle them all.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONSUMER: usize = 10_000;
/// The default of [`FetchLimits::total`]. An entry takes a few hundred bytes, so a full table
/// takes a few hundred MiB.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1_000_000;
/// The most ids one settlement takes.
pub const MAX_SETTLE_IDS: usize = 10_000;

/// JetStream's announcements that a consumer (`.<stream>.<consumer>`) or a stream (`.<stream>`) was
/// deleted.
const CONSUMER_DELETED: &str = "$JS.EVENT.ADVISORY.CONSUMER.DELETED";
const STREAM_DELETED: &str = "$JS.EVENT.ADVISORY.STREAM.DELETED";

/// How many fetched events this server holds in flight at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// For one consumer.
    pub per_consumer: usize,
    /// Over all consumers.
    pub total: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            per_consumer: DEFAULT_MAX_IN_FLIGHT_PER_CONSUMER,
            total: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// How many fetched events one client may hold in flight on this server, over all consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientQuota {
    /// The client, as the error names it.
    pub id: Arc<str>,
    /// The most events it may hold in flight.
    pub max_in_flight: usize,
    /// The setting that sets `max_in_flight`: the [`Error::limit`] of a fetch refused for it.
    pub limit: &'static str,
}

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
    /// The client the events are fetched for, if its events in flight are limited.
    pub client: Option<ClientQuota>,
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

/// The error of a fetch from `stream`'s `consumer` when it has [`FetchLimits::per_consumer`]
/// events in flight.
fn consumer_full(stream: &str, consumer: &str, max: usize) -> Error {
    Error::limit_reached(
        "FETCH_MAX_IN_FLIGHT_PER_CONSUMER",
        format!(
            "consumer {consumer} on stream {stream} has {max} fetched events in flight on this \
             server, its limit; ack or reject some first, or wait for their processing timeout"
        ),
    )
}

/// The error of a fetch when this server holds [`FetchLimits::total`] events in flight.
fn server_full(max: usize) -> Error {
    Error::limit_reached(
        "FETCH_MAX_IN_FLIGHT",
        format!(
            "this server holds {max} fetched events in flight over all consumers, its limit; ack \
             or reject some first, or wait for their processing timeout"
        ),
    )
}

/// The error of a fetch for a client that holds its [`ClientQuota`] in flight.
fn client_full(quota: &ClientQuota) -> Error {
    Error::limit_reached(
        quota.limit,
        format!(
            "client {:?} has {} fetched events in flight on this server, its limit; ack or reject \
             some first, or wait for their processing timeout",
            quota.id, quota.max_in_flight
        ),
    )
}

/// A consumer, by stream and name.
type Key = (String, String);

/// The client a fetched event or a reservation counts against, if any.
type Owner = Option<Arc<str>>;

/// Entries held plus slots reserved, per client with a quota.
#[derive(Default)]
struct Owners(HashMap<Arc<str>, usize>);

impl Owners {
    fn count(&self, owner: &str) -> usize {
        self.0.get(owner).copied().unwrap_or(0)
    }

    fn add(&mut self, owner: &Owner, n: usize) {
        if let Some(owner) = owner
            && n > 0
        {
            *self.0.entry(owner.clone()).or_default() += n;
        }
    }

    /// Forgets a client once it holds nothing, so the map stays as small as the clients in flight.
    fn sub(&mut self, owner: &Owner, n: usize) {
        let Some(owner) = owner else {
            return;
        };
        if let hash_map::Entry::Occupied(mut entry) = self.0.entry(owner.clone()) {
            *entry.get_mut() = entry.get().saturating_sub(n);
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// One fetched event held until it is settled.
struct Held {
    reply: Subject,
    /// Its delivery attempt, which picks its processing timeout.
    attempt: u64,
    /// When it arrived, or when an extension (a progress ack) was last sent for it: the processing
    /// timeout counts from here, as JetStream counts it from the delivery or the last progress.
    arrived: Instant,
    /// Its place among the expiries; a later delivery of the same event gets another one.
    deadline: Deadline,
    /// The delivery's receive span, ended by its settlement or its expiry.
    span: Span,
    /// The client it counts against.
    owner: Owner,
}

/// One delivery of a fetched event, as it enters the table.
struct Delivered {
    reply: Subject,
    attempt: u64,
    arrived: Instant,
    span: Span,
    owner: Owner,
}

/// The events held for one consumer.
struct Holder {
    /// When JetStream made the consumer: one deleted and made again under the same name is
    /// another consumer, whose deliveries these are not.
    created: OffsetDateTime,
    /// Its configuration, for the processing timeout of each attempt.
    config: consumer::Config,
    held: HashMap<u64, Held>,
    /// Every entry by expiry, so the expired ones are found without a scan.
    expiries: Expiries<u64>,
    /// Slots taken by fetches still pulling.
    reserved: usize,
    /// Entries taken out by settlements still being sent. The holder stays while there are any: a
    /// settlement that fails puts its entries back, and without the holder they would be lost.
    settling: usize,
}

impl Holder {
    fn new(info: &consumer::Info) -> Holder {
        Holder {
            created: info.created,
            config: info.config.clone(),
            held: HashMap::new(),
            expiries: Expiries::default(),
            reserved: 0,
            settling: 0,
        }
    }

    /// Drops the entries whose processing timeout has passed (JetStream redelivers those), takes
    /// them off their clients' counts, and returns how many.
    fn expire(&mut self, now: Instant, owners: &mut Owners) -> usize {
        let mut expired = 0;
        while let Some(id) = self.expiries.pop_expired(now) {
            if let Some(held) = self.held.remove(&id) {
                telemetry::error(&held.span, "processing timeout");
                owners.sub(&held.owner, 1);
            }
            expired += 1;
        }
        expired
    }

    fn unused(&self) -> bool {
        self.held.is_empty() && self.reserved == 0 && self.settling == 0
    }

    /// Holds a delivery; returns the earlier delivery of the same event it replaced.
    fn insert(&mut self, id: u64, delivery: Delivered) -> Option<Held> {
        let Delivered {
            reply,
            attempt,
            arrived,
            span,
            owner,
        } = delivery;
        let at = arrived + attempt_timeout(&self.config, attempt);
        let deadline = self.expiries.insert(at, id);
        let held = Held {
            reply,
            attempt,
            arrived,
            deadline,
            span,
            owner,
        };
        let previous = self.held.insert(id, held)?;
        self.expiries.remove(&previous.deadline);
        Some(previous)
    }
}

/// Every consumer's fetched events, with the totals the limits apply to.
struct Table {
    holders: HashMap<Key, Holder>,
    /// Entries over all holders.
    held: usize,
    /// Reserved slots over all holders.
    reserved: usize,
    /// Entries and reserved slots per client with a quota.
    owners: Owners,
    meters: metrics::Delivery,
}

impl Table {
    fn new() -> Table {
        Table {
            holders: HashMap::new(),
            held: 0,
            reserved: 0,
            owners: Owners::default(),
            meters: metrics::Delivery::new(Path::Fetch),
        }
    }

    /// Counts `n` entries gone without a settlement.
    fn released(&mut self, n: usize) {
        self.held -= n;
        self.meters.released(n);
    }

    /// Drops the expired entries of one consumer.
    fn expire(&mut self, key: &Key, now: Instant) {
        let Some(holder) = self.holders.get_mut(key) else {
            return;
        };
        let expired = holder.expire(now, &mut self.owners);
        if holder.unused() {
            self.holders.remove(key);
        }
        self.released(expired);
    }

    /// Drops the expired entries of every consumer.
    fn expire_all(&mut self, now: Instant) {
        let mut expired = 0;
        let owners = &mut self.owners;
        self.holders.retain(|_, holder| {
            expired += holder.expire(now, owners);
            !holder.unused()
        });
        self.released(expired);
    }

    /// Brings the entries of `key` in line with the consumer as JetStream describes it now: they
    /// go if it is a newer consumer of the same name, and their deadlines move if its timeouts
    /// changed (JetStream applies new timeouts to deliveries already made).
    fn sync(&mut self, key: &Key, info: &consumer::Info) {
        let Some(holder) = self.holders.get_mut(key) else {
            return;
        };
        if info.created > holder.created {
            self.forget(key, None);
            if let Some(holder) = self.holders.get_mut(key) {
                *holder = Holder {
                    reserved: holder.reserved,
                    ..Holder::new(info)
                };
            }
            return;
        }
        if info.created < holder.created {
            // Looked up before the consumer was made anew; the newer description stands.
            return;
        }
        let config = &info.config;
        if config.ack_wait == holder.config.ack_wait && config.backoff == holder.config.backoff {
            return;
        }
        holder.config = config.clone();
        holder.expiries = Expiries::default();
        for (id, held) in &mut holder.held {
            let at = held.arrived + attempt_timeout(&holder.config, held.attempt);
            held.deadline = holder.expiries.insert(at, *id);
        }
    }

    /// Drops every entry of `key`, if its consumer was made at or before `deleted` (`None`: in any
    /// case). Reservations stay with the fetches that hold them.
    fn forget(&mut self, key: &Key, deleted: Option<OffsetDateTime>) {
        let Some(holder) = self.holders.get_mut(key) else {
            return;
        };
        if deleted.is_some_and(|deleted| holder.created > deleted) {
            return;
        }
        let gone = holder.held.len();
        for (_, held) in holder.held.drain() {
            self.owners.sub(&held.owner, 1);
        }
        holder.expiries = Expiries::default();
        // Settlements in progress do not keep it: what they fail to settle is not put back.
        if holder.reserved == 0 {
            self.holders.remove(key);
        }
        self.released(gone);
    }

    /// Drops the entries of every consumer of `stream` made at or before `deleted`.
    fn forget_stream(&mut self, stream: &str, deleted: Option<OffsetDateTime>) {
        let keys: Vec<Key> = self
            .holders
            .keys()
            .filter(|(s, _)| s == stream)
            .cloned()
            .collect();
        for key in keys {
            self.forget(&key, deleted);
        }
    }

    /// Reserves up to `wanted` slots for a fetch from `key` (described by `info`) for `client`,
    /// within every limit: at least one, or the limit that leaves none.
    fn reserve(
        &mut self,
        key: &Key,
        info: &consumer::Info,
        wanted: usize,
        limits: &FetchLimits,
        client: Option<&ClientQuota>,
    ) -> Result<usize, Error> {
        let now = Instant::now();
        self.expire(key, now);
        self.sync(key, info);
        let holder = self
            .holders
            .entry(key.clone())
            .or_insert_with(|| Holder::new(info));
        let consumer_room = limits
            .per_consumer
            .saturating_sub(holder.held.len() + holder.reserved);
        let server_room = |table: &Table| limits.total.saturating_sub(table.held + table.reserved);
        let client_room = |table: &Table| {
            client.map_or(usize::MAX, |quota| {
                quota
                    .max_in_flight
                    .saturating_sub(table.owners.count(&quota.id))
            })
        };
        let (mut server, mut own) = (server_room(self), client_room(self));
        if consumer_room > 0 && (server == 0 || own == 0) {
            // Expired entries of other consumers count until they are looked at; look now.
            self.expire_all(now);
            (server, own) = (server_room(self), client_room(self));
        }
        let room = consumer_room.min(server).min(own);
        if room == 0 {
            if self.holders.get(key).is_some_and(Holder::unused) {
                self.holders.remove(key);
            }
            return Err(if consumer_room == 0 {
                consumer_full(&key.0, &key.1, limits.per_consumer)
            } else if server == 0 {
                server_full(limits.total)
            } else if let Some(quota) = client {
                client_full(quota)
            } else {
                server_full(limits.total)
            });
        }
        let granted = wanted.min(room);
        // Made again if the look at every consumer above dropped it while it was still empty.
        self.holders
            .entry(key.clone())
            .or_insert_with(|| Holder::new(info))
            .reserved += granted;
        self.reserved += granted;
        self.owners
            .add(&client.map(|quota| quota.id.clone()), granted);
        Ok(granted)
    }

    /// Gives back `n` slots of `key` reserved for `owner`.
    fn release(&mut self, key: &Key, n: usize, owner: &Owner) {
        self.reserved -= n;
        self.owners.sub(owner, n);
        if let Some(holder) = self.holders.get_mut(key) {
            holder.reserved -= n;
            if holder.unused() {
                self.holders.remove(key);
            }
        }
    }

    /// Holds a delivery fetched from `key` (whose fetch still holds a reservation, so the holder
    /// exists) and counts it.
    fn insert(&mut self, key: &Key, id: u64, delivery: Delivered) {
        let Some(holder) = self.holders.get_mut(key) else {
            return;
        };
        let attempt = delivery.attempt;
        self.owners.add(&delivery.owner, 1);
        if let Some(previous) = holder.insert(id, delivery) {
            // The earlier delivery of this event is gone; this one takes its place.
            self.owners.sub(&previous.owner, 1);
            self.meters.released(1);
        } else {
            self.held += 1;
        }
        self.meters.delivered(attempt);
    }

    /// Takes the entry of event `id` out, for a settlement, which must end with [`Table::settled`].
    fn take(&mut self, key: &Key, id: u64) -> Option<Held> {
        let holder = self.holders.get_mut(key)?;
        let held = holder.held.remove(&id)?;
        holder.expiries.remove(&held.deadline);
        holder.settling += 1;
        self.held -= 1;
        self.owners.sub(&held.owner, 1);
        Some(held)
    }

    /// Ends a settlement that took `taken` entries out of the holder of `key` made at `created`:
    /// the entries in `back` were not settled and go back in flight, unless the consumer went
    /// meanwhile.
    fn settled(
        &mut self,
        key: &Key,
        created: OffsetDateTime,
        taken: usize,
        back: impl IntoIterator<Item = (u64, Held)>,
    ) {
        let current = self
            .holders
            .get_mut(key)
            .filter(|holder| holder.created == created);
        if let Some(holder) = current {
            holder.settling = holder.settling.saturating_sub(taken);
        }
        for (id, held) in back {
            self.restore(key, created, id, held);
        }
        if self.holders.get(key).is_some_and(Holder::unused) {
            self.holders.remove(key);
        }
    }

    /// Restarts the processing timeout of event `id` at `now`, after a progress ack was sent for it
    /// (whose delivery's ack subject is `reply`). An entry replaced by a redelivery meanwhile keeps
    /// its own deadline: the ack went to the earlier delivery.
    fn restart(&mut self, key: &Key, id: u64, reply: &Subject, now: Instant) {
        let Some(holder) = self.holders.get_mut(key) else {
            return;
        };
        let Some(held) = holder.held.get_mut(&id) else {
            return;
        };
        if held.reply != *reply {
            return;
        }
        holder.expiries.remove(&held.deadline);
        held.arrived = now;
        let at = now + attempt_timeout(&holder.config, held.attempt);
        held.deadline = holder.expiries.insert(at, id);
    }

    /// Puts back an entry (taken from the holder made at `created`) whose settlement failed,
    /// unless its consumer went meanwhile.
    fn restore(&mut self, key: &Key, created: OffsetDateTime, id: u64, held: Held) {
        let Some(holder) = self
            .holders
            .get_mut(key)
            .filter(|holder| holder.created == created)
        else {
            self.meters.released(1);
            return;
        };
        if holder.held.contains_key(&id) {
            // Redelivered and fetched again meanwhile: the newer delivery stands.
            self.meters.released(1);
            return;
        }
        let at = held.arrived + attempt_timeout(&holder.config, held.attempt);
        let deadline = holder.expiries.insert(at, id);
        self.owners.add(&held.owner, 1);
        holder.held.insert(id, Held { deadline, ..held });
        self.held += 1;
    }
}

/// The fetched events this server holds in flight; see the module docs. Shared by every call.
pub struct Fetcher {
    nats: Nats,
    limits: FetchLimits,
    table: Mutex<Table>,
}

impl Fetcher {
    /// An empty table over `nats`, within `limits`. Until `shutdown`, a task drops the entries of
    /// deleted consumers and streams as JetStream announces the deletions. Call it inside the Tokio
    /// runtime.
    pub fn start(nats: Nats, limits: FetchLimits, shutdown: CancellationToken) -> Arc<Fetcher> {
        let fetcher = Arc::new(Fetcher {
            nats: nats.clone(),
            limits,
            table: Mutex::new(Table::new()),
        });
        tokio::spawn(forget_deleted(Arc::downgrade(&fetcher), nats, shutdown));
        fetcher
    }

    #[expect(
        clippy::expect_used,
        reason = "no code panics while holding the table lock, so it is never poisoned"
    )]
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().expect("the table lock is never poisoned")
    }

    /// Fetch: up to `max_events` events, waiting up to `wait` for the first one.
    pub async fn fetch(&self, spec: &FetchSpec) -> Result<FetchedEvents, Error> {
        validate_existing_name("stream", &spec.stream)?;
        validate_existing_name("consumer", &spec.consumer)?;
        if spec.max_events > MAX_EVENTS {
            return Err(Error::invalid(
                "max_events",
                format!("must be at most {MAX_EVENTS}"),
            ));
        }
        if spec.wait.is_some_and(|wait| wait > MAX_WAIT) {
            return Err(Error::invalid(
                "wait",
                format!("must be at most {MAX_WAIT:?}"),
            ));
        }
        let max = match spec.max_events {
            0 => DEFAULT_MAX_EVENTS,
            n => n,
        } as usize;
        let consumer = self.consumer(&spec.stream, &spec.consumer).await?;
        let info = consumer.cached_info();
        let key = (spec.stream.clone(), spec.consumer.clone());
        let wait = spec.wait.filter(|wait| !wait.is_zero());
        let (max, max_bytes, wait) =
            within_request_limits(&info.config, max, MAX_FETCH_BYTES, wait);
        let client = spec.client.as_ref();
        let reserved = self
            .table()
            .reserve(&key, info, max, &self.limits, client)?;
        // Until the events are handed over, a cancelled call (the client gave up) gives back what
        // it took, and its reservation.
        let mut taken = Taken {
            fetcher: self,
            key,
            owner: client.map(|quota| quota.id.clone()),
            reserved,
            messages: Vec::new(),
        };
        let request = BatchConfig {
            batch: reserved,
            max_bytes,
            expires: wait,
            no_wait: true,
            ..Default::default()
        };
        let ended = match self.pull(&consumer, request, &mut taken.messages).await {
            Ok(Ended::TooLarge) if taken.messages.is_empty() => {
                // The next event alone is larger than the bytes asked for: it comes by itself.
                let alone = BatchConfig {
                    batch: 1,
                    no_wait: true,
                    ..Default::default()
                };
                self.pull(&consumer, alone, &mut taken.messages).await
            }
            ended => ended,
        };
        match ended {
            Ok(Ended::Done | Ended::TooLarge) => {}
            Ok(Ended::Lost) => {
                tracing::warn!(stream = %spec.stream, consumer = %spec.consumer,
                    "JetStream did not end a pull in time; returning what came");
            }
            // Those that came were delivered, and JetStream counted the attempt: they go to the
            // client rather than back unseen.
            ended if !taken.messages.is_empty() => {
                tracing::warn!(stream = %spec.stream, consumer = %spec.consumer, ?ended,
                    "a pull ended early; returning the events that came");
            }
            Ok(Ended::Deleted) => {
                return Err(consumer_not_found(&spec.stream, &spec.consumer));
            }
            Ok(Ended::Refused(reason)) => {
                return Err(Error::unavailable(format!(
                    "JetStream refused a pull from consumer {} on stream {}: {reason}",
                    spec.consumer, spec.stream
                )));
            }
            Err(err) => return Err(err),
        }

        // From here on nothing waits, so the call can no longer be cancelled.
        let messages = std::mem::take(&mut taken.messages);
        let mut events = Vec::with_capacity(messages.len());
        let mut entries = Vec::with_capacity(messages.len());
        for (arrived, mut message) in messages {
            let Some((reply, metadata)) = AckMetadata::take(&mut message) else {
                continue;
            };
            let mut event = format::decode(
                metadata.stream_sequence,
                message.subject.as_str().to_owned(),
                message.headers.as_ref(),
                message.payload,
                metadata.stored,
            );
            let span = telemetry::receive(&mut event, &spec.consumer);
            entries.push((
                metadata.stream_sequence,
                Delivered {
                    reply,
                    attempt: metadata.delivered,
                    arrived,
                    span,
                    owner: taken.owner.clone(),
                },
            ));
            events.push(Fetched {
                event,
                delivery_attempt: metadata.delivered,
            });
        }
        {
            let mut table = self.table();
            for (id, delivery) in entries {
                table.insert(&taken.key, id, delivery);
            }
            table.release(&taken.key, taken.reserved, &taken.owner);
        }
        taken.reserved = 0;
        Ok(FetchedEvents {
            events,
            processing_timeout: processing_timeout(consumer.cached_info()),
        })
    }

    /// Sends one pull request and collects what it brings into `into`, with each arrival time, until
    /// JetStream ends it.
    async fn pull(
        &self,
        consumer: &PullConsumer,
        request: BatchConfig,
        into: &mut Vec<(Instant, async_nats::Message)>,
    ) -> Result<Ended, Error> {
        let client = self.nats.client();
        let inbox = Subject::from(client.new_inbox());
        let mut answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| Error::unavailable(format!("subscribing to a pull inbox: {err}")))?;
        // The request expires on the server after `expires`; the margin covers a lost answer.
        let deadline = Instant::now() + request.expires.unwrap_or_default() + FETCH_MARGIN;
        let (mut events_left, byte_limit) = (request.batch, request.max_bytes);
        let mut bytes_left = byte_limit;
        consumer
            .request_batch(request, inbox)
            .await
            .map_err(|err| Error::unavailable(format!("sending a pull request: {err}")))?;
        loop {
            let message = match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    return Err(Error::unavailable("the pull inbox closed"));
                }
                Err(_) => return Ok(Ended::Lost),
            };
            match message.status {
                None | Some(StatusCode::OK) => {
                    // async-nats counts a message's length as JetStream counts it against the
                    // request's bytes: subject, reply subject, headers and payload.
                    let size = message.length;
                    into.push((Instant::now(), message));
                    events_left -= 1;
                    if events_left == 0 {
                        return Ok(Ended::Done);
                    }
                    if byte_limit > 0 {
                        // JetStream ends a request whose bytes are used up exactly without a word.
                        bytes_left = bytes_left.saturating_sub(size);
                        if bytes_left == 0 {
                            return Ok(Ended::Done);
                        }
                    }
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // No (more) events, or the wait is over.
                Some(StatusCode::NOT_FOUND | StatusCode::TIMEOUT) => return Ok(Ended::Done),
                Some(StatusCode::REQUEST_TERMINATED) => {
                    return Ok(match message.description.as_deref() {
                        Some("Message Size Exceeds MaxBytes") => Ended::TooLarge,
                        Some("Batch Completed") => Ended::Done,
                        Some("Consumer Deleted") => Ended::Deleted,
                        other => Ended::Refused(other.unwrap_or("409").to_owned()),
                    });
                }
                Some(StatusCode::NO_RESPONDERS) => {
                    return Ok(Ended::Refused("JetStream did not answer".into()));
                }
                Some(status) => {
                    let description = message.description.unwrap_or_default();
                    return Ok(Ended::Refused(format!("{status} {description}")));
                }
            }
        }
    }

    /// Looks up a consumer that Fetch can serve: a pull consumer with explicit acks.
    async fn consumer(&self, stream: &str, name: &str) -> Result<PullConsumer, Error> {
        let consumer: PullConsumer = self
            .nats
            .jetstream()
            .get_consumer_from_stream(name, stream)
            .await
            .map_err(|err| match err.kind() {
                ConsumerErrorKind::InvalidConsumerType => Error::conflict(format!(
                    "consumer {name} on stream {stream} is a push consumer; Fetch needs a pull consumer"
                )),
                _ => about_consumer(err.classify(), stream, name),
            })?;
        require_explicit_acks(&consumer.cached_info().config, stream, name, "Fetch")?;
        Ok(consumer)
    }

    /// JetStream's description of a consumer.
    async fn info(&self, key: &Key) -> Result<consumer::Info, Error> {
        let (stream, name) = key;
        let lookup = |err: Error| about_consumer(err, stream, name);
        self.nats
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|err| lookup(err.classify()))?
            .consumer_info(name)
            .await
            .map_err(|err| lookup(err.classify()))
    }

    /// Checks that a consumer still is the one its entries came from; drops them if it is gone,
    /// and answers NOT_FOUND then. While NATS is unreachable nothing is checked: settlements fail
    /// as temporary then, and the events stay in flight.
    async fn check(&self, key: &Key) -> Result<(), Error> {
        if !self.nats.is_connected() {
            return Ok(());
        }
        match self.info(key).await {
            Ok(info) => {
                self.table().sync(key, &info);
                Ok(())
            }
            Err(err) if err.kind() == ErrorKind::NotFound => {
                self.table().forget(key, None);
                Err(err)
            }
            Err(err) => {
                tracing::debug!(%err, stream = %key.0, consumer = %key.1, "could not look up a consumer of fetched events");
                Ok(())
            }
        }
    }

    /// Checks every consumer with entries, for deletions whose announcement was lost.
    async fn check_all(&self) {
        let keys: Vec<Key> = self.table().holders.keys().cloned().collect();
        for key in keys {
            self.check(&key).await.ok();
        }
    }

    /// Drops the entries of a consumer or stream whose deletion JetStream announced.
    fn deleted(&self, announcement: &async_nats::Message) {
        #[derive(serde::Deserialize)]
        struct Advisory {
            timestamp: String,
        }
        // Without a time, the entries go whichever consumer they came from: at worst their
        // settlements are answered as invalid and the events come back after their timeout.
        let deleted = serde_json::from_slice::<Advisory>(&announcement.payload)
            .ok()
            .and_then(|advisory| OffsetDateTime::parse(&advisory.timestamp, &Rfc3339).ok());
        let subject = announcement.subject.as_str();
        let mut table = self.table();
        if let Some(names) = subject.strip_prefix(CONSUMER_DELETED) {
            if let Some((stream, consumer)) = names.trim_start_matches('.').split_once('.') {
                table.forget(&(stream.to_owned(), consumer.to_owned()), deleted);
            }
        } else if let Some(stream) = subject.strip_prefix(STREAM_DELETED) {
            table.forget_stream(stream.trim_start_matches('.'), deleted);
        }
    }

    /// Ack, Reject or Extend ([`Settle::Ping`], which keeps the events in flight and restarts their
    /// processing timeout): settles fetched events by id. Each id is answered in exactly one list.
    pub async fn settle(
        &self,
        stream: &str,
        consumer: &str,
        ids: &[u64],
        how: Settle,
    ) -> Result<Settled, Error> {
        validate_existing_name("stream", stream)?;
        validate_existing_name("consumer", consumer)?;
        if ids.is_empty() {
            return Err(Error::invalid("ids", "must list at least one id"));
        }
        if ids.len() > MAX_SETTLE_IDS {
            return Err(Error::invalid(
                "ids",
                format!("must list at most {MAX_SETTLE_IDS}"),
            ));
        }
        let key = (stream.to_owned(), consumer.to_owned());
        self.check(&key).await?;
        if how == Settle::Ping {
            return Ok(self.extend(&key, ids).await);
        }
        if how == Settle::RejectPermanently
            && let Err(err) = dead_letters::prepare_reject(&self.nats, stream, consumer).await
        {
            tracing::warn!(%err, %stream, %consumer,
                "cannot make sure that permanently rejected events are dead-lettered; not rejecting them");
            let mut table = self.table();
            table.expire(&key, Instant::now());
            let holder = table.holders.get(&key);
            return Ok(Settled::none_sent(ids, |id| {
                holder.is_some_and(|holder| holder.held.contains_key(&id))
            }));
        }
        let kind = how.ack_kind();
        let client = self.nats.client();
        let mut settled = Settled::default();
        let mut settling = Settling::take(self, &key, ids, &mut settled.invalid_ids);
        while let Some((id, held)) = settling.pending.pop_front() {
            match self.nats.send_ack(held.reply.clone(), kind).await {
                Ok(()) => {
                    telemetry::settled(&held.span, how);
                    settled.ids.push(id);
                }
                Err(err) => {
                    tracing::warn!(%err, id, "could not settle a fetched event");
                    settled.temporary_failed_ids.push(id);
                    settling.back.push((id, held));
                }
            }
        }
        self.table().meters.settled(how, settled.ids.len());
        // Puts the failed ones back in flight: the client may retry.
        drop(settling);
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

impl Fetcher {
    /// Extend ([`Settle::Ping`]): asks JetStream for more time for each fetched event (a progress
    /// ack) and restarts its processing timeout here too; the events stay in flight. The new
    /// deadline counts from before the ack was sent, so the entry never outlives JetStream's hold.
    async fn extend(&self, key: &Key, ids: &[u64]) -> Settled {
        let now = Instant::now();
        let replies: Vec<(u64, Option<Subject>)> = {
            let mut table = self.table();
            table.expire(key, now);
            let holder = table.holders.get(key);
            let mut seen = HashSet::new();
            ids.iter()
                .map(|&id| {
                    let reply = holder
                        .filter(|_| seen.insert(id))
                        .and_then(|holder| holder.held.get(&id))
                        .map(|held| held.reply.clone());
                    (id, reply)
                })
                .collect()
        };
        let mut settled = Settled::default();
        let mut sent = Vec::new();
        for (id, reply) in replies {
            let Some(reply) = reply else {
                settled.invalid_ids.push(id);
                continue;
            };
            match self
                .nats
                .send_ack(reply.clone(), Settle::Ping.ack_kind())
                .await
            {
                Ok(()) => {
                    settled.ids.push(id);
                    sent.push((id, reply));
                }
                Err(err) => {
                    tracing::warn!(%err, id, "could not extend a fetched event");
                    settled.temporary_failed_ids.push(id);
                }
            }
        }
        {
            let mut table = self.table();
            for (id, reply) in &sent {
                table.restart(key, *id, reply, now);
            }
        }
        // Flushed, so JetStream has the extension before the caller hears it was sent; bounded as
        // a settlement's flush is.
        if !sent.is_empty()
            && !matches!(
                tokio::time::timeout(FLUSH_TIMEOUT, self.nats.client().flush()).await,
                Ok(Ok(()))
            )
        {
            tracing::warn!("extensions not flushed yet; they go out when NATS is reachable");
        }
        settled
    }
}

/// The entries a settlement took out of the table, so two concurrent settlements of one id cannot
/// both send. When it is dropped (the settlement is over, or its call was cancelled), the entries
/// not settled go back in flight until their processing timeout, so the client can settle them
/// again; the holder of their consumer stays meanwhile, even if they were its only entries.
struct Settling<'a> {
    fetcher: &'a Fetcher,
    key: Key,
    /// When the consumer the entries came from was made; `None` if none were taken.
    created: Option<OffsetDateTime>,
    taken: usize,
    /// Taken and not sent yet.
    pending: VecDeque<(u64, Held)>,
    /// Sent without success.
    back: Vec<(u64, Held)>,
}

impl<'a> Settling<'a> {
    /// Takes the entries of `ids` out of the table; an id without one, or repeated, goes to
    /// `invalid`.
    fn take(fetcher: &'a Fetcher, key: &Key, ids: &[u64], invalid: &mut Vec<u64>) -> Settling<'a> {
        let mut table = fetcher.table();
        table.expire(key, Instant::now());
        let created = table.holders.get(key).map(|holder| holder.created);
        let mut seen = HashSet::new();
        let mut pending = VecDeque::new();
        for &id in ids {
            match seen.insert(id).then(|| table.take(key, id)).flatten() {
                Some(held) => pending.push_back((id, held)),
                None => invalid.push(id),
            }
        }
        Settling {
            fetcher,
            key: key.clone(),
            created,
            taken: pending.len(),
            pending,
            back: Vec::new(),
        }
    }
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        let Some(created) = self.created.filter(|_| self.taken > 0) else {
            return;
        };
        let back = self.pending.drain(..).chain(self.back.drain(..));
        self.fetcher
            .table()
            .settled(&self.key, created, self.taken, back);
    }
}

/// How one pull request ended.
#[derive(Debug)]
enum Ended {
    /// JetStream has nothing more for it: the events or bytes asked for came, there are no more,
    /// or the wait is over.
    Done,
    /// The next event would go past the bytes asked for.
    TooLarge,
    /// The consumer was deleted.
    Deleted,
    /// JetStream refused or ended the request, for this reason.
    Refused(String),
    /// No answer in time (NATS may have lost the request).
    Lost,
}

/// What a fetch took and has not handed over yet: its reservation, and the messages that came. If
/// the call is cancelled, the reservation is given back and the events are naked, so they come back
/// at once rather than after their processing timeout unseen.
struct Taken<'a> {
    fetcher: &'a Fetcher,
    key: Key,
    owner: Owner,
    reserved: usize,
    messages: Vec<(Instant, async_nats::Message)>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.reserved > 0 {
            self.fetcher
                .table()
                .release(&self.key, self.reserved, &self.owner);
        }
        let replies: Vec<Subject> = self
            .messages
            .drain(..)
            .filter_map(|(_, message)| message.reply)
            .collect();
        if replies.is_empty() {
            return;
        }
        tracing::info!(stream = %self.key.0, consumer = %self.key.1, events = replies.len(),
            "a cancelled fetch gives back the events it took");
        // From a task: `Drop` cannot wait.
        let client = self.fetcher.nats.client().clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for reply in replies {
                    client.publish(reply, AckKind::Nak(None).into()).await.ok();
                }
            });
        }
    }
}

/// Drops the entries of deleted consumers and streams as JetStream announces the deletions, and
/// looks every consumer up again after a reconnect, until `shutdown` or the fetcher is gone.
async fn forget_deleted(fetcher: Weak<Fetcher>, nats: Nats, shutdown: CancellationToken) {
    let client = nats.client();
    let subscriptions = futures::future::try_join(
        client.subscribe(format!("{CONSUMER_DELETED}.*.*")),
        client.subscribe(format!("{STREAM_DELETED}.*")),
    )
    .await;
    let mut deletions = match subscriptions {
        Ok((consumers, streams)) => futures::stream::select(consumers, streams),
        Err(err) => {
            tracing::warn!(%err, "cannot hear of deleted consumers; Fetch, Ack and Reject still notice them");
            return;
        }
    };
    let mut connected = nats.connected();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            announcement = deletions.next() => {
                let (Some(announcement), Some(fetcher)) = (announcement, fetcher.upgrade()) else {
                    return;
                };
                fetcher.deleted(&announcement);
            }
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                if *connected.borrow_and_update() {
                    let Some(fetcher) = fetcher.upgrade() else {
                        return;
                    };
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = fetcher.check_all() => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery of attempt `attempt` with reply subject `reply`, arrived at `arrived`.
    fn delivered(reply: impl Into<Subject>, attempt: u64, arrived: Instant) -> Delivered {
        Delivered {
            reply: reply.into(),
            attempt,
            arrived,
            span: Span::none(),
            owner: None,
        }
    }

    fn info(created: i64, ack_wait: u64) -> consumer::Info {
        let mut info: consumer::Info = serde_json::from_value(serde_json::json!({
            "stream_name": "s",
            "name": "c",
            "created": "1970-01-01T00:00:00Z",
            "config": {"ack_policy": "explicit", "deliver_policy": "all", "replay_policy": "instant"},
            "delivered": {"consumer_seq": 0, "stream_seq": 0},
            "ack_floor": {"consumer_seq": 0, "stream_seq": 0},
            "num_ack_pending": 0,
            "num_redelivered": 0,
            "num_waiting": 0,
            "num_pending": 0,
        }))
        .expect("a consumer info");
        info.created = OffsetDateTime::from_unix_timestamp(created).unwrap();
        info.config.ack_wait = Duration::from_secs(ack_wait);
        info
    }

    fn key(consumer: &str) -> Key {
        ("s".into(), consumer.into())
    }

    const LIMITS: FetchLimits = FetchLimits {
        per_consumer: 3,
        total: 4,
    };

    /// Reserves `n` slots of `consumer` and fills them with deliveries `ids`.
    fn fetch(table: &mut Table, consumer: &str, info: &consumer::Info, ids: &[u64]) {
        let key = key(consumer);
        let granted = table.reserve(&key, info, ids.len(), &LIMITS, None).unwrap();
        assert_eq!(granted, ids.len());
        for &id in ids {
            table.insert(&key, id, delivered(format!("r{id}"), 1, Instant::now()));
        }
        table.release(&key, granted, &None);
    }

    #[test]
    fn entries_expire_in_order_and_a_redelivery_replaces_the_earlier_entry() {
        let mut table = Table::new();
        let (k, now) = (key("c"), Instant::now());
        table.holders.insert(k.clone(), Holder::new(&info(1, 1)));
        let second = Duration::from_secs(1);
        table.insert(&k, 1, delivered("r1", 1, now));
        table.insert(&k, 2, delivered("r2", 1, now + 2 * second));
        // A redelivery of 1 with a later deadline: the earlier expiry must not remove it.
        table.insert(&k, 1, delivered("r1b", 1, now + 4 * second));
        assert_eq!((table.held, table.holders[&k].expiries.len()), (2, 2));

        table.expire(&k, now + 2 * second);
        assert_eq!(table.held, 2);
        table.expire(&k, now + 3 * second);
        assert_eq!(table.held, 1);
        assert_eq!(table.take(&k, 1).map(|e| e.reply), Some("r1b".into()));
        assert_eq!(table.held, 0);
        table.settled(&k, info(1, 1).created, 1, []);
        assert!(table.holders.is_empty());
    }

    #[test]
    fn a_failed_settlement_of_a_consumers_only_entry_puts_it_back() {
        let mut table = Table::new();
        let (k, one) = (key("c"), info(1, 30));
        fetch(&mut table, "c", &one, &[7]);
        let held = table.take(&k, 7).unwrap();
        // Another fetch looks at every consumer meanwhile: the one being settled stays.
        table.expire_all(Instant::now());
        table.settled(&k, one.created, 1, [(7, held)]);
        assert_eq!(table.held, 1);
        assert!(table.holders[&k].held.contains_key(&7));

        // Deleted while its only entry was being settled: nothing is put back.
        let held = table.take(&k, 7).unwrap();
        table.forget(&k, None);
        table.settled(&k, one.created, 1, [(7, held)]);
        assert!(table.holders.is_empty() && table.held == 0);
    }

    #[test]
    fn each_consumer_has_its_own_limit_within_the_servers() {
        let mut table = Table::new();
        let one = info(1, 30);
        fetch(&mut table, "a", &one, &[1, 2, 3]);
        let full = table
            .reserve(&key("a"), &one, 1, &LIMITS, None)
            .unwrap_err();
        assert_eq!(full.message(), consumer_full("s", "a", 3).message());
        assert_eq!(full.limit(), Some("FETCH_MAX_IN_FLIGHT_PER_CONSUMER"));
        // Another consumer still gets what the server has left.
        assert_eq!(table.reserve(&key("b"), &one, 5, &LIMITS, None).unwrap(), 1);
        let full = table
            .reserve(&key("c"), &one, 1, &LIMITS, None)
            .unwrap_err();
        assert_eq!(full.message(), server_full(4).message());
        assert_eq!(full.limit(), Some("FETCH_MAX_IN_FLIGHT"));
        table.release(&key("b"), 1, &None);
        assert!(!table.holders.contains_key(&key("b")) && !table.holders.contains_key(&key("c")));
        assert_eq!((table.held, table.reserved), (3, 0));
    }

    #[test]
    fn a_fetch_that_makes_room_by_expiring_keeps_its_reservation() {
        let mut table = Table::new();
        let one = info(1, 1);
        let past = Instant::now() - Duration::from_secs(5);
        let (a, b) = (key("a"), key("b"));
        assert_eq!(table.reserve(&a, &one, 4, &LIMITS, None).unwrap(), 3);
        for id in 1..=3 {
            table.insert(&a, id, delivered("r", 1, past));
        }
        table.release(&a, 3, &None);
        assert_eq!(table.reserve(&b, &one, 1, &LIMITS, None).unwrap(), 1);
        // The server is full until the expired entries of "a" are looked at.
        assert_eq!(table.reserve(&key("c"), &one, 1, &LIMITS, None).unwrap(), 1);
        table.insert(&key("c"), 9, delivered("r", 1, Instant::now()));
        assert_eq!(table.holders[&key("c")].held.len(), 1);
        assert!(!table.holders.contains_key(&a));
    }

    #[test]
    fn deleted_and_remade_consumers_lose_their_entries() {
        let mut table = Table::new();
        fetch(&mut table, "a", &info(10, 30), &[1, 2]);
        fetch(&mut table, "b", &info(10, 30), &[3]);
        // Deleted before it was made: an announcement about an older consumer of that name.
        table.forget(
            &key("a"),
            Some(OffsetDateTime::from_unix_timestamp(5).unwrap()),
        );
        assert_eq!(table.held, 3);
        table.forget(
            &key("a"),
            Some(OffsetDateTime::from_unix_timestamp(20).unwrap()),
        );
        assert_eq!(table.held, 1);
        // Made anew under the same name: the old deliveries are not its own.
        table.sync(&key("b"), &info(30, 30));
        assert_eq!(table.held, 0);
        fetch(&mut table, "b", &info(30, 30), &[4]);
        table.forget_stream("s", None);
        assert!(table.holders.is_empty() && table.held == 0);
    }

    #[test]
    fn deadlines_follow_a_change_of_the_processing_timeout() {
        let mut table = Table::new();
        let now = Instant::now();
        fetch(&mut table, "a", &info(1, 3600), &[1]);
        table.sync(&key("a"), &info(1, 1));
        table.expire(&key("a"), now + Duration::from_secs(2));
        assert_eq!(table.held, 0);
    }

    #[test]
    fn a_clients_quota_spans_its_consumers_and_frees_as_its_entries_go() {
        let mut table = Table::new();
        let quota = ClientQuota {
            id: "x".into(),
            max_in_flight: 3,
            limit: "quota",
        };
        let owner: Owner = Some(quota.id.clone());
        let limits = FetchLimits {
            per_consumer: 10,
            total: 10,
        };
        let (one, past) = (info(1, 1), Instant::now() - Duration::from_secs(5));
        let fetch_for = |table: &mut Table, consumer: &str, ids: &[u64], arrived| {
            let key = key(consumer);
            let granted = table
                .reserve(&key, &one, ids.len(), &limits, Some(&quota))
                .unwrap();
            for &id in ids {
                let delivery = Delivered {
                    owner: owner.clone(),
                    ..delivered("r", 1, arrived)
                };
                table.insert(&key, id, delivery);
            }
            table.release(&key, granted, &owner);
        };
        fetch_for(&mut table, "a", &[1], past);
        fetch_for(&mut table, "b", &[2, 3], Instant::now());
        assert_eq!(table.owners.count("x"), 3);
        // Another client, and fetches without a client, are not held up by it.
        assert_eq!(table.reserve(&key("a"), &one, 1, &limits, None).unwrap(), 1);
        table.release(&key("a"), 1, &None);
        // Full until the expired entry of "a" is looked at; then one slot is free.
        assert_eq!(
            table
                .reserve(&key("b"), &one, 5, &limits, Some(&quota))
                .unwrap(),
            1
        );
        table.release(&key("b"), 1, &owner);
        assert_eq!(table.owners.count("x"), 2);
        assert_eq!(
            table
                .reserve(&key("c"), &one, 1, &limits, Some(&quota))
                .unwrap(),
            1
        );
        table.release(&key("c"), 1, &owner);
        fetch_for(&mut table, "c", &[4], Instant::now());
        let full = table
            .reserve(&key("c"), &one, 1, &limits, Some(&quota))
            .unwrap_err();
        assert_eq!(full.message(), client_full(&quota).message());
        assert_eq!(full.limit(), Some("quota"));
        // A settlement and a deleted consumer give slots back.
        assert!(table.take(&key("b"), 2).is_some());
        assert_eq!(table.owners.count("x"), 2);
        table.forget(&key("c"), None);
        assert_eq!(table.owners.count("x"), 1);
        table.forget_stream("s", None);
        assert!(table.owners.0.is_empty());
    }
}
