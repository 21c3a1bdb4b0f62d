//! Processing deadlines in order: which of the events held until settlement expires next. Each Events
//! subscription and the Fetch table keep one [`Expiries`].
//!
//! An ordered structure rather than a timer per event: the owner needs one timer, set to
//! [`Expiries::next`], instead of a timer-wheel entry per event. Deadlines mostly come in order
//! (most deliveries share one processing timeout), so those go to the back of a queue, where adding
//! is a push and removing is a binary search; only a deadline earlier than the newest queued one (a
//! shorter backoff step, say) goes to an ordered map. Every event adds one deadline and removes
//! one, and the map's node splits and merges were a visible share of that.

use std::collections::{BTreeMap, VecDeque};

use tokio::time::Instant;

/// Where an entry sits in [`Expiries`]: its deadline, and a serial that tells apart entries with the
/// same deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline {
    /// When the entry expires.
    pub at: Instant,
    serial: u64,
}

/// Removed entries at most this many more than the live ones before the queue is compacted.
const QUEUE_SLACK: usize = 64;

/// Keys ordered by deadline.
#[derive(Debug)]
pub(crate) struct Expiries<K> {
    /// Entries in deadline (and serial) order; a removed entry leaves `None` until it reaches the
    /// front or the queue is compacted. The front is never `None`.
    queue: VecDeque<(Deadline, Option<K>)>,
    /// How many entries of `queue` are not removed.
    queued: usize,
    /// The entries that came earlier than the back of `queue`.
    order: BTreeMap<Deadline, K>,
    serial: u64,
}

impl<K> Default for Expiries<K> {
    fn default() -> Self {
        Expiries {
            queue: VecDeque::new(),
            queued: 0,
            order: BTreeMap::new(),
            serial: 0,
        }
    }
}

impl<K> Expiries<K> {
    /// Adds `key`, expiring at `at`; the returned deadline removes it again.
    pub(crate) fn insert(&mut self, at: Instant, key: K) -> Deadline {
        self.serial += 1;
        let deadline = Deadline {
            at,
            serial: self.serial,
        };
        if self.queue.back().is_none_or(|(last, _)| last.at <= at) {
            self.queue.push_back((deadline, Some(key)));
            self.queued += 1;
        } else {
            self.order.insert(deadline, key);
        }
        deadline
    }

    /// Removes the entry at `deadline`, if it is still there.
    pub(crate) fn remove(&mut self, deadline: &Deadline) -> Option<K> {
        // Serials grow along the queue, as deadlines do.
        let Ok(index) = self
            .queue
            .binary_search_by_key(&deadline.serial, |(queued, _)| queued.serial)
        else {
            return self.order.remove(deadline);
        };
        let key = self.queue.get_mut(index)?.1.take()?;
        self.queued -= 1;
        self.tidy();
        Some(key)
    }

    /// Drops removed entries from the front of the queue, and compacts it when removed entries
    /// outnumber the live ones (an event held long while those after it were settled), so its
    /// size stays bounded by what is held.
    fn tidy(&mut self) {
        while self.queue.front().is_some_and(|(_, key)| key.is_none()) {
            self.queue.pop_front();
        }
        if self.queue.len() > 2 * self.queued + QUEUE_SLACK {
            self.queue.retain(|(_, key)| key.is_some());
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.earliest().map(|deadline| deadline.at)
    }

    /// The earliest entry's deadline: the front of the queue or the first of the map.
    fn earliest(&self) -> Option<Deadline> {
        let queued = self.queue.front().map(|(deadline, _)| *deadline);
        let ordered = self.order.first_key_value().map(|(deadline, _)| *deadline);
        match (queued, ordered) {
            (Some(queued), Some(ordered)) => Some(queued.min(ordered)),
            (queued, ordered) => queued.or(ordered),
        }
    }

    /// Removes and returns the earliest entry if it expired at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<K> {
        let earliest = self.earliest().filter(|deadline| deadline.at <= now)?;
        self.remove(&earliest)
    }

    /// How many entries there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queued + self.order.len()
    }

    /// Whether there are none.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_expire_in_deadline_order_and_removed_ones_never() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut expiries = Expiries::default();
        let late = expiries.insert(now + 3 * second, "late");
        expiries.insert(now + second, "early");
        let twin = expiries.insert(now + second, "twin");
        assert_eq!(expiries.next(), Some(now + second));

        assert_eq!(expiries.remove(&twin), Some("twin"));
        assert_eq!(expiries.remove(&twin), None);
        assert_eq!(expiries.pop_expired(now), None);
        assert_eq!(expiries.pop_expired(now + 2 * second), Some("early"));
        assert_eq!(expiries.pop_expired(now + 2 * second), None);
        assert_eq!(expiries.next(), Some(late.at));
        assert_eq!(expiries.pop_expired(now + 3 * second), Some("late"));
        assert!(expiries.is_empty() && expiries.next().is_none());
    }

    /// The same operations on `Expiries` and on a plain ordered map, in a long pseudo-random mix
    /// of in-order and earlier deadlines, removals in any order and expiries, give the same
    /// answers; and the queue stays bounded by what is held.
    #[test]
    fn behaves_as_an_ordered_map_and_stays_bounded() {
        let start = Instant::now();
        let mut expiries = Expiries::default();
        let mut model: BTreeMap<Deadline, u64> = BTreeMap::new();
        let mut held: Vec<Deadline> = Vec::new();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let mut clock = 0u64;
        for key in 0..20_000u64 {
            clock += random(3);
            match random(10) {
                // Mostly in order, sometimes earlier than the newest.
                0..=4 => {
                    let at = start + Duration::from_millis(clock + 1_000 - random(2) * random(900));
                    let deadline = expiries.insert(at, key);
                    model.insert(deadline, key);
                    held.push(deadline);
                }
                // Settled: mostly the oldest held, sometimes any, sometimes one already gone.
                5..=7 if !held.is_empty() => {
                    let index = if random(4) == 0 {
                        random(held.len() as u64) as usize
                    } else {
                        0
                    };
                    let deadline = held.remove(index);
                    assert_eq!(expiries.remove(&deadline), model.remove(&deadline));
                    assert_eq!(expiries.remove(&deadline), None);
                }
                _ => {
                    let now = start + Duration::from_millis(clock);
                    loop {
                        let expected = model
                            .first_entry()
                            .filter(|entry| entry.key().at <= now)
                            .map(|entry| entry.remove());
                        assert_eq!(expiries.pop_expired(now), expected);
                        if expected.is_none() {
                            break;
                        }
                    }
                    held.retain(|deadline| model.contains_key(deadline));
                }
            }
            assert_eq!(expiries.next(), model.keys().next().map(|d| d.at));
            assert_eq!(expiries.len(), model.len());
            assert!(expiries.queue.len() <= 2 * expiries.queued + QUEUE_SLACK);
        }
    }
}
