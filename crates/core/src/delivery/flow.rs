//! The flow-control state of one Events subscription, apart from NATS and from timers: which events
//! are in flight and until when, how many messages are requested from JetStream, and which
//! deliveries wait over the limit. Every rule that decides what the engine does next lives here, as
//! plain methods that take the current time as an argument; the [`Subscription`] does the I/O and
//! asks this state what to do.
//!
//! The rules:
//! - at most `max` events are in flight; a pull asks only for the free slots (`max` minus in
//!   flight, requested and held), and a top-up waits until half the window is free, so a busy
//!   subscription sends few, large pull requests;
//! - a pull request unanswered for its expiry plus [`PULL_GRACE`] is taken as lost, and so is every
//!   request after a reconnect; their slots are requested again;
//! - after JetStream refused or did not answer a pull, the next waits [`PULL_RETRY`];
//! - a delivery over the limit is held (at most `max` of them) until a slot frees, its processing
//!   timeout counting from its arrival; one held past that timeout is dropped, as JetStream
//!   redelivers it by itself;
//! - a redelivery of an event still in flight replaces the old entry and its deadline;
//! - an event leaves the table when settled, or at its deadline (expiry); a ping restarts its
//!   deadline; a settlement that could not be sent leaves it in flight with its deadline;
//! - the one timer is moved only to an earlier deadline, and set to the next one after an expiry.
//!
//! [`Subscription`]: super::Subscription

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use tokio::time::Instant;

use crate::expiry::{Deadline, Expiries};

/// After this much longer than its expiry without an answer, a pull request is taken as lost
/// (e.g. NATS restarted and forgot it) and its slots are requested again.
const PULL_GRACE: Duration = Duration::from_secs(2);
/// Wait before pulling again after JetStream did not answer a pull at all.
const PULL_RETRY: Duration = Duration::from_secs(1);

/// An event handed out and not yet settled.
#[derive(Debug)]
pub(super) struct InFlight<E> {
    /// What the owner needs to settle the event.
    pub(super) entry: E,
    deadline: Deadline,
    /// How long JetStream waits for this delivery's settlement: its backoff entry, or the
    /// processing timeout. A ping restarts the same wait.
    timeout: Duration,
}

/// What to do with a delivery of an event, by what is in flight.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission<E> {
    /// A slot is free: deliver it.
    Free,
    /// The event was in flight already; its old entry (returned) is gone: deliver the new one.
    Replaced(E),
    /// Every slot is taken: hold the delivery ([`Flow::hold`]).
    Full,
}

/// The flow-control state of one subscription; see the module docs. `E` is what settles an event
/// in flight, `M` a delivery held over the limit.
///
/// Methods that may move the subscription's timer return `Some(instant)` to set it to.
#[derive(Debug)]
pub(super) struct Flow<E, M> {
    max: usize,
    /// Keyed by stream sequence with foldhash: the ids come from JetStream, not from the client,
    /// so a fast hash costs nothing in safety, and SipHash was a visible share of each delivery.
    in_flight: HashMap<u64, InFlight<E>, foldhash::fast::RandomState>,
    /// The in-flight events by processing deadline.
    deadlines: Expiries<u64>,
    /// Where the timer is set: a deadline no later than the earliest in `deadlines`. It is moved
    /// only to an earlier deadline: settling the earliest event leaves it in place, and an early
    /// wake-up just sets it again, which costs less than moving it after every Ack.
    timer_at: Option<Instant>,
    /// Messages requested from JetStream and not yet received or given up.
    requested: usize,
    /// Deliveries beyond `max`, with when they came, held until a slot frees. They come from pull
    /// requests that outlived a reconnect: the server keeps them, and their late "request timeout"
    /// makes `requested` undercount. Handing them back would count as a delivery in JetStream (with
    /// one delivery allowed, the event would be gone unseen). At most `max` are held.
    held: VecDeque<(Instant, M)>,
    /// When every pull request sent so far has expired on the server.
    pulls_expire_at: Instant,
    /// No pull before this instant (after JetStream failed to answer one).
    pull_not_before: Instant,
}

impl<E, M> Flow<E, M> {
    /// Nothing in flight, requested or held; at most `max` events in flight.
    pub(super) fn new(max: usize, now: Instant) -> Flow<E, M> {
        Flow {
            max,
            // Grown on demand: reserving `max` up front cost an idle subscription hundreds of KiB.
            in_flight: HashMap::default(),
            deadlines: Expiries::default(),
            timer_at: None,
            requested: 0,
            held: VecDeque::new(),
            pulls_expire_at: now,
            pull_not_before: now,
        }
    }

    /// How many events are in flight.
    pub(super) fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether event `id` is in flight.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.in_flight.contains_key(&id)
    }

    /// The ids in flight.
    pub(super) fn ids(&self) -> Vec<u64> {
        self.in_flight.keys().copied().collect()
    }

    /// What settles event `id`, while it is in flight.
    pub(super) fn get(&self, id: u64) -> Option<&E> {
        self.in_flight.get(&id).map(|in_flight| &in_flight.entry)
    }

    fn free_slots(&self) -> usize {
        self.max
            .saturating_sub(self.in_flight.len() + self.requested + self.held.len())
    }

    /// How many messages to request from JetStream now, if a pull is worth sending: there are free
    /// slots, JetStream is not being waited for after a failure, and either nothing is requested
    /// or half the window is free. `now` is read only when the rest says yes: this is asked
    /// before every delivery, and mostly the answer is no.
    pub(super) fn pull_size(&self, now: impl FnOnce() -> Instant) -> Option<usize> {
        let free = self.free_slots();
        let worth_it = self.requested == 0 || free >= self.max.div_ceil(2);
        (free > 0 && worth_it && now() >= self.pull_not_before).then_some(free)
    }

    /// A pull request for `batch` messages, expiring on the server after `expires`, was sent.
    pub(super) fn pulled(&mut self, batch: usize, expires: Duration, now: Instant) {
        self.requested += batch;
        self.pulls_expire_at = now + expires + PULL_GRACE;
    }

    /// A requested message arrived.
    pub(super) fn arrived(&mut self) {
        self.requested = self.requested.saturating_sub(1);
    }

    /// A pull request ended, and JetStream says how many of its messages it did not send.
    pub(super) fn request_ended(&mut self, unsent: usize) {
        self.requested = self.requested.saturating_sub(unsent);
    }

    /// JetStream refused a pull request, or nobody answered it: nothing is requested any more,
    /// and asking again at once would fail again, in a loop.
    pub(super) fn pull_failed(&mut self, now: Instant) {
        self.requested = 0;
        self.pull_not_before = now + PULL_RETRY;
    }

    /// The NATS connection came back: pull requests do not survive a reconnect.
    pub(super) fn reconnected(&mut self) {
        self.requested = 0;
    }

    /// When to look at the pull requests again without any message: when they expire, or, with
    /// none under way and free slots, when pulling is allowed again.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        if self.requested > 0 {
            Some(self.pulls_expire_at)
        } else if self.free_slots() > 0 {
            Some(self.pull_not_before)
        } else {
            None
        }
    }

    /// The instant of [`Flow::wake_at`] came: pull requests past their expiry and grace are lost.
    pub(super) fn woke(&mut self, now: Instant) {
        if self.requested > 0 && now >= self.pulls_expire_at {
            self.requested = 0;
        }
    }

    /// Where a delivery of event `id` goes (see [`Admission`]).
    pub(super) fn admit(&mut self, id: u64) -> Admission<E> {
        if let Some(previous) = self.in_flight.remove(&id) {
            // A redelivery of an event this subscription still holds: the newest delivery wins.
            self.deadlines.remove(&previous.deadline);
            Admission::Replaced(previous.entry)
        } else if self.in_flight.len() >= self.max {
            Admission::Full
        } else {
            Admission::Free
        }
    }

    /// Holds a delivery that came at `since` while every slot is taken; gives it back when `max`
    /// are held already (more than a window over: something else is wrong).
    pub(super) fn hold(&mut self, since: Instant, delivery: M) -> Result<(), M> {
        if self.held.len() < self.max {
            self.held.push_back((since, delivery));
            Ok(())
        } else {
            Err(delivery)
        }
    }

    /// The oldest held delivery, with when it came, once a slot is free.
    pub(super) fn next_held(&mut self) -> Option<(Instant, M)> {
        if self.in_flight.len() < self.max {
            self.held.pop_front()
        } else {
            None
        }
    }

    /// Every held delivery, to give back.
    pub(super) fn drain_held(&mut self) -> Vec<M> {
        self.held.drain(..).map(|(_, delivery)| delivery).collect()
    }

    /// Records event `id` as in flight from `since`, to be settled within `timeout`.
    pub(super) fn insert(
        &mut self,
        id: u64,
        entry: E,
        since: Instant,
        timeout: Duration,
    ) -> Option<Instant> {
        let (deadline, timer) = self.add_deadline(id, since + timeout);
        self.in_flight.insert(
            id,
            InFlight {
                entry,
                deadline,
                timeout,
            },
        );
        timer
    }

    /// Takes event `id` out while its settlement is sent; its deadline stays queued until
    /// [`Flow::settled`], and [`Flow::put_back`] returns it as it was.
    pub(super) fn take(&mut self, id: u64) -> Option<InFlight<E>> {
        self.in_flight.remove(&id)
    }

    /// The settlement of a taken event was sent: it is gone for good.
    pub(super) fn settled(&mut self, taken: InFlight<E>) -> E {
        self.deadlines.remove(&taken.deadline);
        taken.entry
    }

    /// The settlement of a taken event could not be sent: it is in flight again, with its deadline.
    pub(super) fn put_back(&mut self, id: u64, taken: InFlight<E>) {
        self.in_flight.insert(id, taken);
    }

    /// A ping of event `id` was sent: its processing timeout starts again at `now`.
    pub(super) fn restart(&mut self, id: u64, now: Instant) -> Option<Instant> {
        let (old, timeout) = {
            let in_flight = self.in_flight.get(&id)?;
            (in_flight.deadline, in_flight.timeout)
        };
        self.deadlines.remove(&old);
        let (deadline, timer) = self.add_deadline(id, now + timeout);
        if let Some(in_flight) = self.in_flight.get_mut(&id) {
            in_flight.deadline = deadline;
        }
        timer
    }

    /// Records that event `id` expires at `at`, and moves the timer if that is earlier.
    fn add_deadline(&mut self, id: u64, at: Instant) -> (Deadline, Option<Instant>) {
        let deadline = self.deadlines.insert(at, id);
        let timer = self.timer_at.is_none_or(|at| deadline.at < at).then(|| {
            self.timer_at = Some(deadline.at);
            deadline.at
        });
        (deadline, timer)
    }

    /// Whether the timer is set.
    pub(super) fn timer_set(&self) -> bool {
        self.timer_at.is_some()
    }

    /// Whether the timer's instant has passed by `now`, fired or not.
    pub(super) fn timer_due(&self, now: Instant) -> bool {
        self.timer_at.is_some_and(|at| at <= now)
    }

    /// Drops the events whose deadline passed by `now`, handing each to `expired`, and sets the
    /// timer for the next deadline.
    pub(super) fn expire(&mut self, now: Instant, mut expired: impl FnMut(E)) -> Option<Instant> {
        while let Some(id) = self.deadlines.pop_expired(now) {
            if let Some(in_flight) = self.in_flight.remove(&id) {
                expired(in_flight.entry);
            }
        }
        self.timer_at = self.deadlines.next();
        self.timer_at
    }
}

/// When the processing timeout of a delivery starts: at its arrival (`held_since`, or now for
/// one not held). `None` for a delivery held past its timeout: JetStream delivers it again by
/// itself.
pub(super) fn started(
    held_since: Option<Instant>,
    timeout: Duration,
    now: Instant,
) -> Option<Instant> {
    match held_since {
        Some(since) if since + timeout <= now => None,
        Some(since) => Some(since),
        None => Some(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_secs(30);

    /// A flow of `max` slots, with events named by a string and held deliveries by a number.
    fn flow(max: usize, now: Instant) -> Flow<&'static str, u64> {
        Flow::new(max, now)
    }

    fn expired(flow: &mut Flow<&'static str, u64>, now: Instant) -> Vec<&'static str> {
        let mut gone = Vec::new();
        flow.expire(now, |entry| gone.push(entry));
        gone
    }

    /// Delivers event `id` now through `admit` and `insert`, as the engine does.
    fn deliver(flow: &mut Flow<&'static str, u64>, id: u64, name: &'static str, now: Instant) {
        assert_eq!(flow.admit(id), Admission::Free);
        flow.arrived();
        flow.insert(id, name, now, TIMEOUT);
    }

    #[test]
    fn a_pull_asks_for_the_free_slots_and_a_top_up_waits_for_half_the_window() {
        let now = Instant::now();
        let mut flow = flow(4, now);
        assert_eq!(flow.pull_size(|| now), Some(4));
        flow.pulled(4, 10 * SECOND, now);
        assert_eq!(flow.pull_size(|| now), None, "every slot is requested");

        deliver(&mut flow, 1, "one", now);
        deliver(&mut flow, 2, "two", now);
        let taken = flow.take(1).unwrap();
        flow.settled(taken);
        assert_eq!(
            flow.pull_size(|| now),
            None,
            "one free slot of four is not worth a pull"
        );
        let taken = flow.take(2).unwrap();
        flow.settled(taken);
        assert_eq!(flow.pull_size(|| now), Some(2), "half the window is free");
    }

    #[test]
    fn without_a_pull_under_way_even_one_free_slot_is_requested() {
        let now = Instant::now();
        let mut flow = flow(4, now);
        flow.pulled(4, 10 * SECOND, now);
        for (id, name) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
            deliver(&mut flow, id, name, now);
        }
        assert_eq!(flow.pull_size(|| now), None);
        assert_eq!(flow.wake_at(), None, "full, and nothing requested");
        let taken = flow.take(4).unwrap();
        flow.settled(taken);
        assert_eq!(flow.pull_size(|| now), Some(1));
    }

    #[test]
    fn an_ended_pull_frees_the_slots_it_did_not_fill() {
        let now = Instant::now();
        let mut flow = flow(10, now);
        flow.pulled(10, 10 * SECOND, now);
        flow.request_ended(3);
        assert_eq!(flow.pull_size(|| now), None, "7 still requested, 3 free");
        flow.request_ended(2);
        assert_eq!(flow.pull_size(|| now), Some(5));
        flow.request_ended(100);
        assert_eq!(
            flow.pull_size(|| now),
            Some(10),
            "never fewer than none requested"
        );
    }

    #[test]
    fn a_pull_unanswered_past_its_expiry_and_grace_is_taken_as_lost() {
        let now = Instant::now();
        let mut flow = flow(4, now);
        flow.pulled(4, 10 * SECOND, now);
        let lost_at = now + 10 * SECOND + PULL_GRACE;
        assert_eq!(flow.wake_at(), Some(lost_at));
        flow.woke(lost_at - Duration::from_nanos(1));
        assert_eq!(flow.pull_size(|| lost_at), None, "still waiting for it");
        flow.woke(lost_at);
        assert_eq!(flow.pull_size(|| lost_at), Some(4));
    }

    #[test]
    fn a_reconnect_requests_the_slots_again() {
        let now = Instant::now();
        let mut flow = flow(4, now);
        flow.pulled(4, 10 * SECOND, now);
        flow.reconnected();
        assert_eq!(flow.pull_size(|| now), Some(4));
    }

    #[test]
    fn after_a_failed_pull_the_next_waits_a_moment() {
        let now = Instant::now();
        let mut flow = flow(4, now);
        flow.pulled(4, 10 * SECOND, now);
        let later = now + 3 * SECOND;
        flow.pull_failed(later);
        assert_eq!(flow.pull_size(|| later), None);
        assert_eq!(flow.wake_at(), Some(later + PULL_RETRY));
        assert_eq!(flow.pull_size(|| later + PULL_RETRY), Some(4));
    }

    #[test]
    fn deliveries_over_the_limit_are_held_up_to_a_window_and_released_in_order() {
        let now = Instant::now();
        let mut flow = flow(2, now);
        deliver(&mut flow, 1, "one", now);
        deliver(&mut flow, 2, "two", now);
        assert_eq!(flow.admit(3), Admission::Full);
        assert_eq!(flow.hold(now, 3), Ok(()));
        assert_eq!(flow.hold(now + SECOND, 4), Ok(()));
        assert_eq!(
            flow.hold(now, 5),
            Err(5),
            "more than a window over is given back"
        );
        assert_eq!(flow.pull_size(|| now), None, "held deliveries take slots");
        assert_eq!(flow.next_held(), None, "no slot is free");

        let taken = flow.take(1).unwrap();
        assert_eq!(flow.settled(taken), "one");
        assert_eq!(flow.next_held(), Some((now, 3)));
        flow.insert(3, "three", now, TIMEOUT);
        assert_eq!(flow.next_held(), None);
        let taken = flow.take(2).unwrap();
        flow.settled(taken);
        assert_eq!(flow.next_held(), Some((now + SECOND, 4)));
        assert_eq!(flow.next_held(), None);
    }

    #[test]
    fn a_held_delivery_keeps_its_arrival_time_and_is_dropped_past_its_timeout() {
        let now = Instant::now();
        assert_eq!(started(None, TIMEOUT, now), Some(now));
        let later = now + 10 * SECOND;
        assert_eq!(started(Some(now), TIMEOUT, later), Some(now));
        assert_eq!(started(Some(now), TIMEOUT, now + TIMEOUT), None);
    }

    #[test]
    fn a_redelivery_replaces_the_old_entry_and_its_deadline() {
        let now = Instant::now();
        let mut flow = flow(2, now);
        deliver(&mut flow, 7, "first", now);
        assert_eq!(flow.admit(7), Admission::Replaced("first"));
        let later = now + 10 * SECOND;
        flow.insert(7, "second", later, TIMEOUT);
        assert_eq!(flow.len(), 1);
        assert_eq!(expired(&mut flow, now + TIMEOUT), Vec::<&str>::new());
        assert_eq!(flow.get(7), Some(&"second"));
        assert_eq!(expired(&mut flow, later + TIMEOUT), ["second"]);
        assert_eq!(flow.len(), 0);
    }

    #[test]
    fn events_expire_at_their_deadline_in_deadline_order() {
        let now = Instant::now();
        let mut flow = flow(3, now);
        flow.insert(1, "late", now, 3 * SECOND);
        flow.insert(2, "early", now, SECOND);
        flow.insert(3, "middle", now, 2 * SECOND);
        assert_eq!(expired(&mut flow, now), Vec::<&str>::new());
        let mut gone = Vec::new();
        let timer = flow.expire(now + 2 * SECOND, |entry| gone.push(entry));
        assert_eq!(gone, ["early", "middle"]);
        assert_eq!(
            timer,
            Some(now + 3 * SECOND),
            "the timer is set to the next deadline"
        );
        assert_eq!(flow.ids(), [1]);
        assert_eq!(flow.expire(now + 3 * SECOND, |_| {}), None);
        assert!(!flow.timer_set());
    }

    #[test]
    fn the_timer_moves_only_to_an_earlier_deadline() {
        let now = Instant::now();
        let mut flow = flow(3, now);
        assert!(!flow.timer_set());
        assert_eq!(flow.insert(1, "a", now, 5 * SECOND), Some(now + 5 * SECOND));
        assert_eq!(flow.insert(2, "b", now, 10 * SECOND), None);
        assert_eq!(flow.insert(3, "c", now, SECOND), Some(now + SECOND));

        // Settling the earliest leaves the timer where it is; it fires early, and moves on.
        let taken = flow.take(3).unwrap();
        flow.settled(taken);
        assert!(flow.timer_due(now + SECOND));
        assert!(!flow.timer_due(now));
        assert_eq!(expired(&mut flow, now + SECOND), Vec::<&str>::new());
        assert!(flow.timer_due(now + 5 * SECOND) && !flow.timer_due(now + 4 * SECOND));
    }

    #[test]
    fn a_settlement_not_sent_leaves_the_event_in_flight_with_its_deadline() {
        let now = Instant::now();
        let mut flow = flow(2, now);
        deliver(&mut flow, 1, "kept", now);
        deliver(&mut flow, 2, "settled", now);

        let taken = flow.take(1).unwrap();
        assert!(!flow.contains(1));
        assert!(
            flow.take(1).is_none(),
            "a repeated id is not in flight twice"
        );
        flow.put_back(1, taken);
        assert!(flow.contains(1));

        let taken = flow.take(2).unwrap();
        assert_eq!(flow.settled(taken), "settled");
        assert_eq!(expired(&mut flow, now + TIMEOUT), ["kept"]);
    }

    #[test]
    fn a_ping_restarts_the_processing_timeout() {
        let now = Instant::now();
        let mut flow = flow(1, now);
        deliver(&mut flow, 1, "pinged", now);
        let ping = now + 20 * SECOND;
        assert_eq!(
            flow.restart(1, ping),
            None,
            "a later deadline leaves the timer"
        );
        assert_eq!(flow.restart(9, ping), None, "not in flight");
        assert_eq!(expired(&mut flow, now + TIMEOUT), Vec::<&str>::new());
        assert!(flow.timer_due(ping + TIMEOUT));
        assert_eq!(expired(&mut flow, ping + TIMEOUT), ["pinged"]);
    }

    #[test]
    fn held_deliveries_are_given_back_on_close() {
        let now = Instant::now();
        let mut flow = flow(1, now);
        deliver(&mut flow, 1, "one", now);
        flow.hold(now, 2).unwrap();
        assert_eq!(flow.drain_held(), [2]);
        assert_eq!(flow.next_held(), None);
    }
}
