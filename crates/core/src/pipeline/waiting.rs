//! The table of a pipeline's publishes that NATS has and JetStream has not answered yet, by token.
//! No I/O and no timer: the deadlines are plain instants, compared with the time passed in.
//!
//! Tokens are consecutive, in send order, so the table is a queue: entry `i` has token `first + i`.
//! An answered entry becomes a hole until every older one is answered too, so the front entry, when
//! there is one, is the oldest publish still waiting, and the only deadline a timer has to watch.

use std::collections::VecDeque;

use tokio::time::Instant;

/// Publishes waiting for their ack, in send order; see the module docs.
#[derive(Debug)]
pub(super) struct AckTable<W> {
    /// Entry `i` has token `first + i`, with its deadline; `None` once answered.
    entries: VecDeque<Option<(Instant, W)>>,
    first: u64,
    /// The entries that are not `None`.
    live: usize,
}

impl<W> Default for AckTable<W> {
    fn default() -> Self {
        AckTable {
            entries: VecDeque::new(),
            first: 0,
            live: 0,
        }
    }
}

impl<W> AckTable<W> {
    /// How many publishes the table spans, from the oldest waiting one to the newest sent,
    /// answered ones between them included.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many publishes are waiting.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// The token of the next publish sent.
    pub(super) fn next_token(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Adds the publish sent under [`AckTable::next_token`], to be answered by `deadline`.
    pub(super) fn push(&mut self, deadline: Instant, waiting: W) {
        self.entries.push_back(Some((deadline, waiting)));
        self.live += 1;
    }

    /// Takes the publish `token` was sent under, if it is still waiting.
    pub(super) fn answer(&mut self, token: u64) -> Option<W> {
        let index = usize::try_from(token.checked_sub(self.first)?).ok()?;
        let (_, waiting) = self.entries.get_mut(index)?.take()?;
        self.live -= 1;
        self.drop_answered();
        Some(waiting)
    }

    /// The deadline of the oldest publish waiting.
    pub(super) fn oldest_deadline(&self) -> Option<Instant> {
        self.entries
            .front()?
            .as_ref()
            .map(|&(deadline, _)| deadline)
    }

    /// Takes the oldest publish waiting if its deadline passed by `now`.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<W> {
        if self.oldest_deadline()? > now {
            return None;
        }
        let (_, expired) = self.entries.pop_front()??;
        self.first += 1;
        self.live -= 1;
        self.drop_answered();
        Some(expired)
    }

    /// Pops answered entries off the front, so the front is the oldest waiting one.
    fn drop_answered(&mut self) {
        while let Some(None) = self.entries.front() {
            self.entries.pop_front();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn tokens_are_consecutive_and_each_is_answered_once() {
        let now = Instant::now();
        let mut table = AckTable::default();
        for name in ["a", "b", "c"] {
            let token = table.next_token();
            table.push(now + SECOND, (token, name));
        }
        assert_eq!((table.len(), table.live()), (3, 3));
        assert_eq!(table.answer(1), Some((1, "b")));
        assert_eq!(table.answer(1), None, "answered already");
        assert_eq!(table.answer(7), None, "never sent");
        assert_eq!(
            (table.len(), table.live()),
            (3, 2),
            "a hole behind a waiting one"
        );
        assert_eq!(table.answer(0), Some((0, "a")));
        assert_eq!(
            (table.len(), table.live()),
            (1, 1),
            "the holes before the oldest waiting one go"
        );
        assert_eq!(table.answer(0), None, "older than the table");
        assert_eq!(table.next_token(), 3);
    }

    #[test]
    fn only_the_oldest_publish_expires_and_then_the_next_is_watched() {
        let now = Instant::now();
        let mut table = AckTable::default();
        table.push(now + SECOND, "oldest");
        table.push(now + 2 * SECOND, "answered");
        table.push(now + 3 * SECOND, "newest");
        assert_eq!(table.oldest_deadline(), Some(now + SECOND));
        assert_eq!(table.pop_expired(now), None);
        table.answer(1);
        assert_eq!(table.pop_expired(now + 5 * SECOND), Some("oldest"));
        assert_eq!(
            table.oldest_deadline(),
            Some(now + 3 * SECOND),
            "the answered one is skipped"
        );
        assert_eq!(table.pop_expired(now + 3 * SECOND), Some("newest"));
        assert_eq!((table.len(), table.live()), (0, 0));
        assert_eq!(table.oldest_deadline(), None);
        assert_eq!(table.pop_expired(now + 5 * SECOND), None);
        assert_eq!(table.next_token(), 3, "tokens are never reused");
    }
}
