//! The book of one session: which events it holds and where each stands (open, being settled,
//! abandoned), the timers that ping held events and retry rejects, the requests waiting for the
//! request stream (the outbox), and the requests sent and waiting for their confirmation.
//!
//! The server answers every request with exactly one confirmation, in order, so the book keeps the
//! requests sent in a queue and matches each confirmation to the oldest one.
//!
//! The book does no I/O and reads no clock: the task passes it the time.
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

    /// Applies a message of the server that came at `now`: an event, or a confirmation.
    pub(super) fn handle(&mut self, response: EventsResponse, now: Instant) -> Result<(), Error> {
        let (kind, confirmation) = match response.response {
            Some(Response::Event(event)) => {
                self.receive(event, now);
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
        self.confirm(kind, confirmation, now)
    }

    fn receive(&mut self, event: Event, now: Instant) {
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
        self.schedule(id, now + self.ping_interval);
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
        now: Instant,
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

#[cfg(test)]
mod tests {
    use jetway_api::windshift::events::v1alpha1::events_response::{
        AckConfirmation, PingConfirmation, RejectConfirmation,
    };
    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(15);

    fn event(id: u64) -> EventsResponse {
        EventsResponse {
            response: Some(Response::Event(Event {
                id,
                ..Event::default()
            })),
        }
    }

    fn acked(ids: &[u64], temporary: &[u64]) -> EventsResponse {
        EventsResponse {
            response: Some(Response::AckConfirmation(AckConfirmation {
                ids: ids.to_vec(),
                invalid_ids: Vec::new(),
                temporary_failed_ids: temporary.to_vec(),
            })),
        }
    }

    fn rejected(ids: &[u64], temporary: &[u64]) -> EventsResponse {
        EventsResponse {
            response: Some(Response::RejectConfirmation(RejectConfirmation {
                ids: ids.to_vec(),
                invalid_ids: Vec::new(),
                temporary_failed_ids: temporary.to_vec(),
            })),
        }
    }

    fn pinged(ids: &[u64], invalid: &[u64]) -> EventsResponse {
        EventsResponse {
            response: Some(Response::PingConfirmation(PingConfirmation {
                ids: ids.to_vec(),
                invalid_ids: invalid.to_vec(),
                temporary_failed_ids: Vec::new(),
            })),
        }
    }

    fn ping(ids: &[u64]) -> Request {
        Request::Ping(events_request::Ping { ids: ids.to_vec() })
    }

    fn ack(id: u64) -> Request {
        Request::Ack(events_request::Ack { ids: vec![id] })
    }

    /// A book holding events `ids`, received at `now` and taken by the application.
    fn holding(ids: &[u64], now: Instant) -> Book {
        let mut book = Book::new(INTERVAL);
        for &id in ids {
            book.handle(event(id), now).unwrap();
            assert_eq!(book.take_ready().map(|event| event.id), Some(id));
        }
        book
    }

    /// The requests of the outbox, now sent.
    fn sent(book: &mut Book) -> Vec<Request> {
        std::iter::from_fn(|| book.send_next())
            .map(|request| request.request.unwrap())
            .collect()
    }

    /// Queues the settle of a handle, and returns where its answer comes.
    fn settle(book: &mut Book, id: u64, action: Action) -> oneshot::Receiver<Outcome> {
        let (reply, answer) = oneshot::channel();
        book.settle(Command {
            id,
            generation: 0,
            action,
            reply,
        });
        answer
    }

    #[test]
    fn a_held_event_is_pinged_every_interval_until_settled() {
        let now = Instant::now();
        let mut book = holding(&[1, 2], now);
        assert_eq!(book.next_timer(), Some(now + INTERVAL));
        book.fire_timers(now + INTERVAL - Duration::from_nanos(1));
        assert!(!book.has_outgoing(), "not due yet");

        book.fire_timers(now + INTERVAL);
        assert_eq!(sent(&mut book), [ping(&[1, 2])]);
        assert_eq!(book.next_timer(), Some(now + 2 * INTERVAL));
        book.handle(pinged(&[1, 2], &[]), now + INTERVAL).unwrap();

        let mut answer = settle(&mut book, 1, Action::Ack);
        assert_eq!(sent(&mut book), [ack(1)]);
        book.handle(acked(&[1], &[]), now + INTERVAL).unwrap();
        assert_eq!(answer.try_recv(), Ok(Outcome::Settled));
        book.fire_timers(now + 2 * INTERVAL);
        assert_eq!(
            sent(&mut book),
            [ping(&[2])],
            "the settled one is not pinged"
        );
    }

    #[test]
    fn an_event_the_server_does_not_hold_is_no_longer_pinged() {
        let now = Instant::now();
        let mut book = holding(&[1, 2], now);
        book.fire_timers(now + INTERVAL);
        sent(&mut book);
        book.handle(pinged(&[2], &[1]), now + INTERVAL).unwrap();
        book.fire_timers(now + 2 * INTERVAL);
        assert_eq!(sent(&mut book), [ping(&[2])]);
    }

    #[test]
    fn settles_are_sent_as_asked_and_answered_by_their_confirmation() {
        let now = Instant::now();
        let mut book = holding(&[1, 2, 3], now);
        let delay = Duration::from_secs(5);
        let mut answers = [
            settle(&mut book, 1, Action::Reject(Some(delay))),
            settle(&mut book, 2, Action::RejectPermanently),
            settle(&mut book, 3, Action::Ack),
        ];
        assert_eq!(
            sent(&mut book),
            [
                reject(vec![1], None, Some(delay)),
                reject(vec![2], Some(true), None),
                ack(3),
            ]
        );
        // Confirmations come in request order; each answers the oldest request.
        book.handle(rejected(&[1], &[]), now).unwrap();
        book.handle(rejected(&[], &[]), now).unwrap();
        book.handle(acked(&[3], &[]), now).unwrap();
        let outcomes = answers.each_mut().map(|answer| answer.try_recv());
        assert_eq!(
            outcomes,
            [
                Ok(Outcome::Settled),
                Ok(Outcome::NotHeld),
                Ok(Outcome::Settled)
            ]
        );
        assert_eq!(book.next_timer(), None, "nothing is held any more");
    }

    #[test]
    fn a_confirmation_of_another_kind_or_without_a_request_is_a_protocol_error() {
        let now = Instant::now();
        let mut book = holding(&[1], now);
        assert!(matches!(
            book.handle(acked(&[1], &[]), now),
            Err(Error::Protocol(_))
        ));
        let _answer = settle(&mut book, 1, Action::Ack);
        sent(&mut book);
        assert!(matches!(
            book.handle(rejected(&[1], &[]), now),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            book.handle(EventsResponse { response: None }, now),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn a_settle_that_failed_for_now_keeps_the_event_alive_for_its_handle_to_retry() {
        let now = Instant::now();
        let mut book = holding(&[1], now);
        let mut answer = settle(&mut book, 1, Action::Ack);
        assert_eq!(
            book.next_timer(),
            None,
            "no ping while the settle is under way"
        );
        sent(&mut book);
        let later = now + Duration::from_secs(1);
        book.handle(acked(&[], &[1]), later).unwrap();
        assert_eq!(answer.try_recv(), Ok(Outcome::TemporaryFailure));
        assert_eq!(book.next_timer(), Some(later + INTERVAL), "pinged again");
    }

    #[test]
    fn a_settle_that_failed_for_now_after_its_handle_went_turns_into_a_reject() {
        let now = Instant::now();
        let mut book = holding(&[1], now);
        drop(settle(&mut book, 1, Action::Ack));
        sent(&mut book);
        book.handle(acked(&[], &[1]), now).unwrap();
        assert_eq!(book.next_timer(), Some(now + RETRY_DELAY));
        book.fire_timers(now + RETRY_DELAY);
        assert_eq!(sent(&mut book), [reject(vec![1], None, None)]);
    }

    #[test]
    fn a_dropped_handle_is_rejected_and_the_reject_retried_until_confirmed() {
        let now = Instant::now();
        let mut book = holding(&[1, 2], now);
        book.abandon(vec![1, 2, 9]);
        assert_eq!(
            sent(&mut book),
            [reject(vec![1, 2], None, None)],
            "an id not held is skipped"
        );
        assert_eq!(book.next_timer(), None, "abandoned events are not pinged");
        book.handle(rejected(&[1], &[2]), now).unwrap();
        assert_eq!(book.next_timer(), Some(now + RETRY_DELAY));
        book.fire_timers(now + RETRY_DELAY);
        assert_eq!(sent(&mut book), [reject(vec![2], None, None)]);
        book.handle(rejected(&[2], &[]), now).unwrap();
        assert_eq!(book.next_timer(), None);
    }

    #[test]
    fn a_handle_dropped_while_its_settle_is_under_way_lets_the_settle_decide() {
        let now = Instant::now();
        let mut book = holding(&[1], now);
        let mut answer = settle(&mut book, 1, Action::Ack);
        book.abandon(vec![1]);
        assert_eq!(sent(&mut book), [ack(1)], "no reject next to the ack");
        book.handle(acked(&[], &[1]), now).unwrap();
        assert_eq!(
            answer.try_recv(),
            Err(TryRecvError::Closed),
            "the handle is gone: nobody is told"
        );
        book.fire_timers(now + RETRY_DELAY);
        assert_eq!(sent(&mut book), [reject(vec![1], None, None)]);
    }

    #[test]
    fn a_lost_connection_answers_every_settle_still_waiting() {
        let now = Instant::now();
        let mut book = holding(&[1, 2], now);
        let mut confirmed_late = settle(&mut book, 1, Action::Ack);
        sent(&mut book);
        let mut never_sent = settle(&mut book, 2, Action::Ack);
        book.fail_pending();
        assert_eq!(confirmed_late.try_recv(), Ok(Outcome::ConnectionLost));
        assert_eq!(never_sent.try_recv(), Ok(Outcome::ConnectionLost));
        assert!(!book.has_outgoing());
    }

    #[test]
    fn the_outbox_stops_taking_commands_when_full() {
        let now = Instant::now();
        let ids: Vec<u64> = (0..OUTBOX_LIMIT as u64).collect();
        let mut book = holding(&ids, now);
        let answers: Vec<_> = ids[..OUTBOX_LIMIT - 1]
            .iter()
            .map(|&id| settle(&mut book, id, Action::Ack))
            .collect();
        assert!(!book.outbox_full());
        let _last = settle(&mut book, OUTBOX_LIMIT as u64 - 1, Action::Ack);
        assert!(book.outbox_full());
        assert!(book.send_next().is_some());
        assert!(!book.outbox_full());
        drop(answers);
    }

    #[test]
    fn a_redelivered_event_replaces_the_one_held() {
        let now = Instant::now();
        let mut book = holding(&[1], now);
        let later = now + Duration::from_secs(40);
        book.handle(event(1), later).unwrap();
        assert_eq!(
            book.next_timer(),
            Some(later + INTERVAL),
            "one timer, the new one"
        );
        assert!(book.has_ready());
    }
}
