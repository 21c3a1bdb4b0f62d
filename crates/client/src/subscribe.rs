//! Subscriptions: a [`Subscription`] is a stream of [`Event`]s from one consumer.
//!
//! One background task owns the bidirectional Events stream. It hands events out, sends the
//! settle requests that event handles pass it over a bounded channel, pings every held event each
//! half processing timeout, rejects the events whose handles were dropped unsettled, and reconnects
//! with backoff when the transport fails.
//!
//! The server answers every request with exactly one confirmation, in order, so the task keeps
//! the requests it sent in a queue and matches each confirmation to the oldest one.
//!
//! The task never waits on one thing while another needs it: requests wait in an outbox until the
//! request stream has room, and events wait in a queue until the application takes them. Both are
//! bounded: the server sends at most `max_processing_events` unsettled events, and the task stops
//! taking commands while the outbox is full.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use jetway_api::windshift::events::v1alpha1::{
    EventsRequest, EventsResponse,
    events_request::{self, Request},
    events_response::Response,
};
use tokio::{
    sync::{Notify, mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;

use crate::{Client, Error, Event};

/// How many events a subscription holds at most by default (the server's default too).
pub const DEFAULT_MAX_PROCESSING_EVENTS: u64 = 50;

/// Used when the server's `Subscribed` carries no processing timeout (the spec's default).
const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_secs(30);

/// Reconnect backoff: the first pause, doubled after each failed attempt up to the cap.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

/// Requests queued for tonic to send. Small: the outbox behind it holds the rest.
const OUTBOUND_BUFFER: usize = 16;

/// Requests waiting for the outbound stream. While it is this full, handles' commands wait in
/// their channel (and so do the handles).
const OUTBOX_LIMIT: usize = 256;

/// Settle commands queued between the handles and the task.
const COMMAND_BUFFER: usize = 64;

/// How soon a ping or a drop-reject is sent again after the server reported a temporary failure.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// Settings of a subscription.
///
/// ```
/// use jetway_client::SubscribeOptions;
///
/// let options = SubscribeOptions::new().max_processing_events(10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    max_processing_events: u64,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            max_processing_events: DEFAULT_MAX_PROCESSING_EVENTS,
        }
    }
}

impl SubscribeOptions {
    /// The defaults: [`DEFAULT_MAX_PROCESSING_EVENTS`].
    pub fn new() -> Self {
        SubscribeOptions::default()
    }

    /// Flow control: the most events held at once (delivered and not yet settled), 1 to 10,000.
    /// The server sends no more until one is settled.
    pub fn max_processing_events(mut self, max: u64) -> Self {
        self.max_processing_events = max;
        self
    }
}

impl Client {
    /// Subscribes to `consumer` of `stream` (made with [`Consumers::ensure`](crate::Consumers::ensure))
    /// with the default options. Returns once the server has confirmed the subscription, so an
    /// unknown consumer fails here with NOT_FOUND.
    ///
    /// The subscription then survives transport failures and server restarts: it reconnects with
    /// backoff and subscribes again, and the server redelivers whatever was held when the
    /// connection broke. It ends only when dropped, or with an error the server will not change
    /// its mind about (the consumer or stream was deleted).
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn run(client: jetway_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut events = client.subscribe("orders", "billing").await?;
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{}: {}", event.id(), event.subject());
    ///     event.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, stream: &str, consumer: &str) -> Result<Subscription, Error> {
        self.subscribe_with(stream, consumer, &SubscribeOptions::new())
            .await
    }

    /// [`Client::subscribe`] with options.
    pub async fn subscribe_with(
        &self,
        stream: &str,
        consumer: &str,
        options: &SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let subscribe = events_request::Subscribe {
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            max_processing_events: Some(options.max_processing_events),
        };
        let session = Session::open(self, &subscribe).await?;
        let (commands_tx, commands) = mpsc::channel(COMMAND_BUFFER);
        // One slot: events wait in the task's queue, where they are pinged, until taken.
        let (deliver, events) = mpsc::channel(1);
        let generation = Arc::new(AtomicU64::new(0));
        let task = Task {
            client: self.clone(),
            subscribe,
            commands,
            commands_tx,
            abandoned: Arc::new(Abandoned::default()),
            deliver,
            generation: generation.clone(),
        };
        Ok(Subscription {
            events,
            generation,
            task: tokio::spawn(task.run(session)),
        })
    }
}

/// The events of one consumer, as a [`Stream`] of [`Event`] handles (see [`Client::subscribe`]).
///
/// Dropping it ends the Events stream: the server gives back every event still held, and JetStream
/// redelivers them. Handles still alive then fail to settle with [`SettleError::Closed`].
///
/// [`SettleError::Closed`]: crate::SettleError::Closed
pub struct Subscription {
    events: mpsc::Receiver<Result<Event, Error>>,
    generation: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("connection", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let item = futures::ready!(self.events.poll_recv(cx));
            // An event of a lost connection could not be settled any more; the server gave it
            // back, and it arrives again over the new connection.
            if let Some(Ok(event)) = &item
                && event.generation() != self.generation.load(Ordering::SeqCst)
            {
                continue;
            }
            return Poll::Ready(item);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a handle asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    Ack,
    Reject(Option<Duration>),
    RejectPermanently,
}

/// What became of a settle request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Settled,
    NotHeld,
    TemporaryFailure,
    ConnectionLost,
    Closed,
}

/// A settle request from a handle to the task.
struct Command {
    id: u64,
    generation: u64,
    action: Action,
    reply: oneshot::Sender<Outcome>,
}

/// Ids of handles dropped unsettled, with their connection generation. A list rather than the
/// command channel because `Drop` cannot wait for room; it holds at most one entry per handle.
#[derive(Default)]
struct Abandoned {
    ids: Mutex<Vec<(u64, u64)>>,
    notify: Notify,
}

impl Abandoned {
    fn push(&self, id: u64, generation: u64) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, generation));
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A handle's way back to the task that delivered it.
pub(crate) struct Link {
    commands: mpsc::Sender<Command>,
    abandoned: Arc<Abandoned>,
    generation: u64,
}

impl Link {
    /// The connection the event came over.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Sends a settle request and waits for the server's answer.
    pub(crate) async fn settle(&self, id: u64, action: Action) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let command = Command {
            id,
            generation: self.generation,
            action,
            reply,
        };
        if self.commands.send(command).await.is_err() {
            return Outcome::Closed;
        }
        answer.await.unwrap_or(Outcome::Closed)
    }

    /// Asks the task to reject the event, without waiting.
    pub(crate) fn abandon(&self, id: u64) {
        self.abandoned.push(id, self.generation);
    }
}

/// How a session ended.
enum End {
    /// The subscription was dropped.
    Gone,
    /// The connection failed; reconnect.
    Lost(Error),
    /// The server refused the subscription for good; end it with this error.
    Fatal(Error),
}

/// The background task of one subscription.
struct Task {
    client: Client,
    subscribe: events_request::Subscribe,
    commands: mpsc::Receiver<Command>,
    /// Cloned into each handle.
    commands_tx: mpsc::Sender<Command>,
    abandoned: Arc<Abandoned>,
    deliver: mpsc::Sender<Result<Event, Error>>,
    /// Counts connections; handles of an older one cannot be settled.
    generation: Arc<AtomicU64>,
}

impl Task {
    async fn run(mut self, mut session: Session) {
        loop {
            let end = self.drive(&mut session).await;
            session.fail_pending();
            match end {
                End::Gone => return,
                End::Fatal(error) => {
                    self.deliver.send(Err(error)).await.ok();
                    return;
                }
                End::Lost(error) => tracing::warn!(
                    %error,
                    stream = %self.subscribe.stream,
                    consumer = %self.subscribe.consumer,
                    "events stream lost; subscribing again"
                ),
            }
            self.generation.fetch_add(1, Ordering::SeqCst);
            match self.reconnect().await {
                Some(next) => session = next,
                None => return,
            }
        }
    }

    /// Opens a new session, with backoff, until one succeeds or the server refuses for good.
    async fn reconnect(&mut self) -> Option<Session> {
        let mut delay = RECONNECT_DELAY_MIN;
        loop {
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            // Handles of the lost connection get their answer at once rather than after the
            // reconnect.
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    Some(command) = self.commands.recv() => {
                        command.reply.send(Outcome::ConnectionLost).ok();
                    }
                }
            }
            match Session::open(&self.client, &self.subscribe).await {
                Ok(session) => {
                    tracing::info!(
                        stream = %self.subscribe.stream,
                        consumer = %self.subscribe.consumer,
                        "subscribed again"
                    );
                    return Some(session);
                }
                Err(error) if error.is_transient() => {
                    tracing::debug!(%error, ?delay, "subscribing again failed; retrying");
                    delay = (delay * 2).min(RECONNECT_DELAY_MAX);
                }
                Err(error) => {
                    self.deliver.send(Err(error)).await.ok();
                    return None;
                }
            }
        }
    }

    fn link(&self, generation: u64) -> Link {
        Link {
            commands: self.commands_tx.clone(),
            abandoned: self.abandoned.clone(),
            generation,
        }
    }

    /// Runs one session until it ends.
    async fn drive(&mut self, session: &mut Session) -> End {
        let generation = self.generation.load(Ordering::SeqCst);
        loop {
            let next_timer = session.timers.first().map(|&(due, _)| due);
            tokio::select! {
                message = session.inbound.message() => match message {
                    Ok(Some(response)) => {
                        if let Err(error) = session.handle(response) {
                            return End::Fatal(error);
                        }
                    }
                    Ok(None) => {
                        let status = tonic::Status::unavailable("the server ended the events stream");
                        return End::Lost(status.into());
                    }
                    Err(status) => {
                        let error = Error::from(status);
                        return if error.is_transient() { End::Lost(error) } else { End::Fatal(error) };
                    }
                },
                // An owned permit: a borrowed one would keep `session` borrowed in every branch.
                permit = session.outbound.clone().reserve_owned(), if !session.outbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some((request, pending)) = session.outbox.pop_front() {
                            permit.send(request);
                            session.pending.push_back(pending);
                        }
                    }
                    Err(_) => {
                        let status = tonic::Status::unavailable("the request stream closed");
                        return End::Lost(status.into());
                    }
                },
                permit = self.deliver.reserve(), if !session.ready.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = session.ready.pop_front() {
                            permit.send(Ok(Event::new(event, self.link(generation))));
                        }
                    }
                    Err(_) => return End::Gone,
                },
                Some(command) = self.commands.recv(), if session.outbox.len() < OUTBOX_LIMIT => {
                    if command.generation == generation {
                        session.settle(command);
                    } else {
                        command.reply.send(Outcome::ConnectionLost).ok();
                    }
                }
                () = self.abandoned.notify.notified() => {
                    let ids: Vec<u64> = self
                        .abandoned
                        .take()
                        .into_iter()
                        .filter(|&(_, of)| of == generation)
                        .map(|(id, _)| id)
                        .collect();
                    session.abandon(ids);
                }
                () = tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    session.fire_timers(Instant::now());
                }
            }
        }
    }
}

/// Where a held event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Held by the application (or waiting to be taken): pinged on its timer.
    Open,
    /// A settle request of its handle is under way.
    Settling,
    /// Its handle was dropped unsettled: it is being rejected.
    Abandoned,
}

#[derive(Debug)]
struct Held {
    state: State,
    /// The timer's key, when one is set: the next ping, or the next reject of an abandoned event.
    due: Option<Instant>,
}

/// A request sent (or about to be), waiting for its confirmation.
enum Pending {
    Ping(Vec<u64>),
    /// Rejects of dropped handles.
    Abandon(Vec<u64>),
    Settle {
        id: u64,
        ack: bool,
        reply: oneshot::Sender<Outcome>,
    },
}

/// The kinds of confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ack,
    Reject,
    Ping,
}

impl Pending {
    fn kind(&self) -> Kind {
        match self {
            Pending::Ping(_) => Kind::Ping,
            Pending::Abandon(_) => Kind::Reject,
            Pending::Settle { ack: true, .. } => Kind::Ack,
            Pending::Settle { ack: false, .. } => Kind::Reject,
        }
    }
}

/// One Events stream and what it holds.
struct Session {
    outbound: mpsc::Sender<EventsRequest>,
    inbound: tonic::Streaming<EventsResponse>,
    /// Half the processing timeout.
    ping_interval: Duration,
    held: HashMap<u64, Held>,
    timers: BTreeSet<(Instant, u64)>,
    /// Requests not yet handed to the outbound stream, in order.
    outbox: VecDeque<(EventsRequest, Pending)>,
    /// Requests sent, oldest first, each waiting for its confirmation.
    pending: VecDeque<Pending>,
    /// Events received and not yet taken by the application.
    ready: VecDeque<jetway_api::windshift::events::v1alpha1::Event>,
}

impl Session {
    /// Opens the Events stream, subscribes, and waits for `Subscribed` (bounded by the client's
    /// request timeout).
    async fn open(
        client: &Client,
        subscribe: &events_request::Subscribe,
    ) -> Result<Session, Error> {
        let (outbound, requests) = mpsc::channel(OUTBOUND_BUFFER);
        let first = EventsRequest {
            request: Some(Request::Subscribe(subscribe.clone())),
        };
        outbound
            .try_send(first)
            .map_err(|_| Error::Protocol("cannot queue the subscribe request".into()))?;
        let mut events = client.events.clone();
        let handshake = async move {
            // No deadline on the call itself: the stream lives as long as the subscription.
            let mut inbound = events
                .events(ReceiverStream::new(requests))
                .await?
                .into_inner();
            let first = inbound.message().await?;
            Ok::<_, Error>((inbound, first))
        };
        let (inbound, first) = match client.request_timeout() {
            Some(limit) => tokio::time::timeout(limit, handshake).await.map_err(|_| {
                tonic::Status::deadline_exceeded(format!(
                    "the server did not confirm the subscription within {limit:?}"
                ))
            })??,
            None => handshake.await?,
        };
        let processing_timeout = match first.map(|m| m.response) {
            Some(Some(Response::Subscribed(subscribed))) => subscribed
                .processing_timeout
                .and_then(|d| Duration::try_from(&d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_PROCESSING_TIMEOUT),
            None => {
                return Err(tonic::Status::unavailable(
                    "the server ended the events stream before confirming the subscription",
                )
                .into());
            }
            Some(other) => {
                return Err(Error::Protocol(format!(
                    "expected Subscribed first, got {other:?}"
                )));
            }
        };
        Ok(Session {
            outbound,
            inbound,
            ping_interval: processing_timeout / 2,
            held: HashMap::new(),
            timers: BTreeSet::new(),
            outbox: VecDeque::new(),
            pending: VecDeque::new(),
            ready: VecDeque::new(),
        })
    }

    fn handle(&mut self, response: EventsResponse) -> Result<(), Error> {
        let (kind, confirmation) = match response.response {
            Some(Response::Event(event)) => {
                self.receive(event);
                return Ok(());
            }
            Some(Response::AckConfirmation(c)) => {
                (Kind::Ack, (c.ids, c.invalid_ids, c.temporary_failed_ids))
            }
            Some(Response::RejectConfirmation(c)) => {
                (Kind::Reject, (c.ids, c.invalid_ids, c.temporary_failed_ids))
            }
            Some(Response::PingConfirmation(c)) => {
                (Kind::Ping, (c.ids, c.invalid_ids, c.temporary_failed_ids))
            }
            other => return Err(Error::Protocol(format!("unexpected {other:?}"))),
        };
        self.confirm(kind, confirmation)
    }

    fn receive(&mut self, event: jetway_api::windshift::events::v1alpha1::Event) {
        let id = event.id;
        // The same id again (redelivered to this stream after its timeout): the new delivery
        // replaces the old one, which the server no longer tracks.
        self.unschedule(id);
        self.held.insert(
            id,
            Held {
                state: State::Open,
                due: None,
            },
        );
        self.schedule(id, Instant::now() + self.ping_interval);
        self.ready.push_back(event);
    }

    fn schedule(&mut self, id: u64, due: Instant) {
        if let Some(held) = self.held.get_mut(&id) {
            if let Some(old) = held.due.replace(due) {
                self.timers.remove(&(old, id));
            }
            self.timers.insert((due, id));
        }
    }

    fn unschedule(&mut self, id: u64) {
        if let Some(due) = self.held.get_mut(&id).and_then(|held| held.due.take()) {
            self.timers.remove(&(due, id));
        }
    }

    fn forget(&mut self, id: u64) {
        self.unschedule(id);
        self.held.remove(&id);
    }

    fn settle(&mut self, command: Command) {
        let Command {
            id, action, reply, ..
        } = command;
        self.unschedule(id);
        if let Some(held) = self.held.get_mut(&id) {
            held.state = State::Settling;
        }
        let (request, ack) = match action {
            Action::Ack => (Request::Ack(events_request::Ack { ids: vec![id] }), true),
            Action::Reject(delay) => (reject(vec![id], None, delay), false),
            Action::RejectPermanently => (reject(vec![id], Some(true), None), false),
        };
        self.queue(request, Pending::Settle { id, ack, reply });
    }

    /// Rejects the events whose handles were dropped unsettled.
    fn abandon(&mut self, ids: Vec<u64>) {
        let mut to_reject = Vec::new();
        for id in ids {
            let Some(held) = self.held.get_mut(&id) else {
                continue;
            };
            match held.state {
                State::Open => {
                    held.state = State::Abandoned;
                    to_reject.push(id);
                }
                // The settle under way decides; a temporary failure then turns into a reject.
                State::Settling => held.state = State::Abandoned,
                State::Abandoned => {}
            }
        }
        for &id in &to_reject {
            self.unschedule(id);
        }
        if !to_reject.is_empty() {
            self.queue(
                reject(to_reject.clone(), None, None),
                Pending::Abandon(to_reject),
            );
        }
    }

    /// Pings the held events that are due, and rejects again the abandoned ones whose reject
    /// failed.
    fn fire_timers(&mut self, now: Instant) {
        let mut pings = Vec::new();
        let mut rejects = Vec::new();
        while let Some(&(due, id)) = self.timers.first() {
            if due > now {
                break;
            }
            self.timers.remove(&(due, id));
            let Some(held) = self.held.get_mut(&id) else {
                continue;
            };
            held.due = None;
            match held.state {
                State::Abandoned => rejects.push(id),
                State::Open | State::Settling => pings.push(id),
            }
        }
        for &id in &pings {
            self.schedule(id, now + self.ping_interval);
        }
        if !pings.is_empty() {
            tracing::debug!(ids = ?pings, "pinging held events");
            let request = Request::Ping(events_request::Ping { ids: pings.clone() });
            self.queue(request, Pending::Ping(pings));
        }
        if !rejects.is_empty() {
            self.queue(
                reject(rejects.clone(), None, None),
                Pending::Abandon(rejects),
            );
        }
    }

    fn queue(&mut self, request: Request, pending: Pending) {
        let request = EventsRequest {
            request: Some(request),
        };
        self.outbox.push_back((request, pending));
    }

    /// Matches a confirmation to the oldest request sent, and applies it.
    fn confirm(
        &mut self,
        kind: Kind,
        (ids, _invalid, temporary): (Vec<u64>, Vec<u64>, Vec<u64>),
    ) -> Result<(), Error> {
        let pending = self
            .pending
            .pop_front()
            .ok_or_else(|| Error::Protocol(format!("a {kind:?} confirmation without a request")))?;
        if pending.kind() != kind {
            return Err(Error::Protocol(format!(
                "a {kind:?} confirmation for a {:?} request",
                pending.kind()
            )));
        }
        let settled: HashSet<u64> = ids.into_iter().collect();
        let temporary: HashSet<u64> = temporary.into_iter().collect();
        // An id neither confirmed nor failed temporarily is not held by the server (it lists such
        // ids as invalid).
        let outcome = |id: u64| {
            if settled.contains(&id) {
                Outcome::Settled
            } else if temporary.contains(&id) {
                Outcome::TemporaryFailure
            } else {
                Outcome::NotHeld
            }
        };
        let now = Instant::now();
        match pending {
            Pending::Ping(ids) => {
                for id in ids {
                    match outcome(id) {
                        Outcome::Settled => {}
                        Outcome::TemporaryFailure => {
                            if self.held.get(&id).is_some_and(|h| h.state == State::Open) {
                                self.schedule(id, now + RETRY_DELAY);
                            }
                        }
                        _ => {
                            if self.held.get(&id).is_some_and(|h| h.state == State::Open) {
                                self.forget(id);
                            }
                        }
                    }
                }
            }
            Pending::Abandon(ids) => {
                for id in ids {
                    if outcome(id) == Outcome::TemporaryFailure {
                        self.schedule(id, now + RETRY_DELAY);
                    } else {
                        self.forget(id);
                    }
                }
            }
            Pending::Settle { id, reply, .. } => {
                let result = outcome(id);
                if result != Outcome::TemporaryFailure {
                    self.forget(id);
                    reply.send(result).ok();
                } else if self
                    .held
                    .get(&id)
                    .is_some_and(|h| h.state == State::Abandoned)
                    || reply.send(result).is_err()
                {
                    // Nobody retries this settle: its handle is gone, so reject instead.
                    if let Some(held) = self.held.get_mut(&id) {
                        held.state = State::Abandoned;
                    }
                    self.schedule(id, now + RETRY_DELAY);
                } else {
                    // The handle retries; meanwhile keep the event alive.
                    if let Some(held) = self.held.get_mut(&id) {
                        held.state = State::Open;
                    }
                    self.schedule(id, now + self.ping_interval);
                }
            }
        }
        Ok(())
    }

    /// The connection is gone: every settle waiting for it learns so.
    fn fail_pending(&mut self) {
        let queued = self.outbox.drain(..).map(|(_, pending)| pending);
        for pending in self.pending.drain(..).chain(queued) {
            if let Pending::Settle { reply, .. } = pending {
                reply.send(Outcome::ConnectionLost).ok();
            }
        }
    }
}

fn reject(ids: Vec<u64>, permanently: Option<bool>, delay: Option<Duration>) -> Request {
    Request::Reject(events_request::Reject {
        ids,
        permanently,
        delay: delay.map(Into::into),
    })
}
