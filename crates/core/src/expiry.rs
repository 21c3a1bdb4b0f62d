//! Processing deadlines in order: which of the events held until settlement expires next. Each Events
//! subscription and the Fetch table keep one [`Expiries`].
//!
//! An ordered map rather than a timer per event: inserting and removing are a few comparisons, and
//! the owner needs one timer, set to [`Expiries::next`], instead of a timer-wheel entry per event.

use std::collections::BTreeMap;

use tokio::time::Instant;

/// Where an entry sits in [`Expiries`]: its deadline, and a serial that tells apart entries with the
/// same deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline {
    /// When the entry expires.
    pub at: Instant,
    serial: u64,
}

/// Keys ordered by deadline.
#[derive(Debug)]
pub(crate) struct Expiries<K> {
    order: BTreeMap<Deadline, K>,
    serial: u64,
}

impl<K> Default for Expiries<K> {
    fn default() -> Self {
        Expiries {
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
        self.order.insert(deadline, key);
        deadline
    }

    /// Removes the entry at `deadline`, if it is still there.
    pub(crate) fn remove(&mut self, deadline: &Deadline) -> Option<K> {
        self.order.remove(deadline)
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.order
            .first_key_value()
            .map(|(deadline, _)| deadline.at)
    }

    /// Removes and returns the earliest entry if it expired at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<K> {
        let entry = self.order.first_entry()?;
        (entry.key().at <= now).then(|| entry.remove())
    }

    /// How many entries there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
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
}
