//! The book of one session: which events it holds and where each stands (open, being settled,
//! abandoned), the timers that ping held events and retry rejects, the requests waiting for the
//! request stream (the outbox), and the requests sent and waiting for their confirmation.
//!
//! The server answers every request with exactly one confirmation, in order, so the book keeps the
//! requests sent in a queue and matches each confirmation to the oldest one.
//!
//! Both queues are bounded: the server sends at most `max_processing_events` unsettled events, and
//! the task stops taking commands while the outbox is full ([`Book::outbox_full`]).

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    time::Duration,
};

use jetway_api::windshift::events::v1alpha1::{
    Event, EventsRequest, EventsResponse,
    events_request::{self, Request},
    events_response::Response,
};
use tokio::{sync::oneshot, time::Instant};

use super::link::{Action, Command, Outcome};
use crate::Error;

/// Requests waiting for the outbound stream. While it is this full, handles' commands wait in
/// their channel (and so do the handles).
const OUTBOX_LIMIT: usize = 256;

/// How soon a ping or a drop-reject is sent again after the server reported a temporary failure.
const RETRY_DELAY: Duration = Duration::from_millis(100);

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

/// What one session holds; see the module docs.
pub(super) struct Book {
    /// Half the processing timeout.
    ping_interval: Duration,
    held: HashMap<u64, Held>,
    timers: BTreeSet<(Instant, u64)>,
    /// Requests not yet handed to the outbound stream, in order.
    outbox: VecDeque<(EventsRequest, Pending)>,
    /// Requests sent, oldest first, each waiting for its confirmation.
    pending: VecDeque<Pending>,
    /// Events received and not yet taken by the application.
    ready: VecDeque<Event>,
}

impl Book {
    /// An empty book that pings held events every `ping_interval`.
    pub(super) fn new(ping_interval: Duration) -> Book {
        Book {
            ping_interval,
            held: HashMap::new(),
            timers: BTreeSet::new(),
            outbox: VecDeque::new(),
            pending: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// When the next timer is due.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.first().map(|&(due, _)| due)
    }

    /// Whether a request waits for the outbound stream.
    pub(super) fn has_outgoing(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The oldest request of the outbox, now counted as sent and waiting for its confirmation.
    pub(super) fn send_next(&mut self) -> Option<EventsRequest> {
        let (request, pending) = self.outbox.pop_front()?;
        self.pending.push_back(pending);
        Some(request)
    }

    /// Whether the outbox is full, so settle commands must wait.
    pub(super) fn outbox_full(&self) -> bool {
        self.outbox.len() >= OUTBOX_LIMIT
    }

    /// Whether an event waits for the application.
    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The oldest event waiting for the application.
    pub(super) fn take_ready(&mut self) -> Option<Event> {
        self.ready.pop_front()
    }

    /// Applies a message of the server: an event, or a confirmation.
    pub(super) fn handle(&mut self, response: EventsResponse) -> Result<(), Error> {
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

    fn receive(&mut self, event: Event) {
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

    /// Queues the settle request of a handle.
    pub(super) fn settle(&mut self, command: Command) {
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
    pub(super) fn abandon(&mut self, ids: Vec<u64>) {
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
    pub(super) fn fire_timers(&mut self, now: Instant) {
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
    pub(super) fn fail_pending(&mut self) {
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
