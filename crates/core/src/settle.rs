//! How a client settles events it was given (ack, reject for redelivery, reject for good, or a
//! ping that asks for more time), what JetStream is told for each, and the answer listing which ids
//! were settled. Every delivery path (the Events stream and Fetch) settles through these.

use std::{collections::HashSet, time::Duration};

use async_nats::jetstream::AckKind;

use crate::{
    Error,
    consumers::{MAX_PROCESSING_TIMEOUT, MIN_PROCESSING_TIMEOUT},
};

/// How to settle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Processed; never deliver again.
    Ack,
    /// Give back for redelivery, after the delay if there is one.
    Reject(Option<Duration>),
    /// Drop for good without processing.
    RejectPermanently,
    /// Still working: restart the processing timeout.
    Ping,
}

impl Settle {
    /// A reject for redelivery after `delay` (`field` names it for errors). None or zero
    /// redelivers at once, as in Windshift. A delay over [`MAX_PROCESSING_TIMEOUT`] is refused, as
    /// such a processing timeout is: JetStream holds the rejected event as pending all that time,
    /// where it counts against the consumer's limit of unsettled events. A delay under
    /// [`MIN_PROCESSING_TIMEOUT`] is raised to it rather than refused, because Windshift clients
    /// send any delay and a refusal ends their whole Events stream; so a delayed event, like a
    /// timed-out one, comes back at most once a second.
    pub fn reject(field: &str, delay: Option<Duration>) -> Result<Settle, Error> {
        match delay {
            Some(delay) if delay > MAX_PROCESSING_TIMEOUT => Err(Error::invalid(
                field,
                "must be at most 7 days (168h), the longest processing timeout",
            )),
            Some(delay) if !delay.is_zero() => {
                Ok(Settle::Reject(Some(delay.max(MIN_PROCESSING_TIMEOUT))))
            }
            _ => Ok(Settle::Reject(None)),
        }
    }

    /// What JetStream is told.
    pub(crate) fn ack_kind(self) -> AckKind {
        match self {
            Settle::Ack => AckKind::Ack,
            Settle::Reject(Some(delay)) if !delay.is_zero() => AckKind::Nak(Some(delay)),
            Settle::Reject(_) => AckKind::Nak(None),
            Settle::RejectPermanently => AckKind::Term,
            Settle::Ping => AckKind::Progress,
        }
    }
}

/// The outcome of settling a list of ids. Every requested id is in exactly one list, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Settled.
    pub ids: Vec<u64>,
    /// Not in flight on this subscription: never delivered, already settled, expired, or repeated.
    pub invalid_ids: Vec<u64>,
    /// NATS could not take the settlement now; the event is still in flight and may be retried.
    pub temporary_failed_ids: Vec<u64>,
}

impl Settled {
    /// The answer when nothing could be sent: each id held in flight (`in_flight`) is a temporary
    /// failure, to be settled again; the others, and repeats, are invalid.
    pub(crate) fn none_sent(ids: &[u64], mut in_flight: impl FnMut(u64) -> bool) -> Settled {
        let mut seen = HashSet::new();
        let mut settled = Settled::default();
        for &id in ids {
            if seen.insert(id) && in_flight(id) {
                settled.temporary_failed_ids.push(id);
            } else {
                settled.invalid_ids.push(id);
            }
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_delays_are_raised_to_a_second_and_refused_past_a_week() {
        let reject = |delay: Option<Duration>| Settle::reject("delay", delay);
        assert_eq!(reject(None).unwrap(), Settle::Reject(None));
        assert_eq!(reject(Some(Duration::ZERO)).unwrap(), Settle::Reject(None));
        assert_eq!(
            reject(Some(Duration::from_nanos(1))).unwrap(),
            Settle::Reject(Some(MIN_PROCESSING_TIMEOUT))
        );
        let minute = Duration::from_secs(60);
        assert_eq!(reject(Some(minute)).unwrap(), Settle::Reject(Some(minute)));
        assert_eq!(
            reject(Some(MAX_PROCESSING_TIMEOUT)).unwrap(),
            Settle::Reject(Some(MAX_PROCESSING_TIMEOUT))
        );
        let over = reject(Some(MAX_PROCESSING_TIMEOUT + Duration::from_nanos(1)));
        assert_eq!(over.unwrap_err().field(), Some("delay"));
    }
}
