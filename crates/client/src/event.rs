//! A received event: its contents, and the handle that settles it (ack or reject) through the
//! subscription's background task.

use std::time::{Duration, SystemTime};

use jetway_api::google::protobuf::Any;

use crate::{
    DecodeError, SettleError,
    error::decode_any,
    subscribe::{Action, Link, Outcome},
};

/// How many times a settle is tried while the server reports a temporary failure (its NATS
/// connection is down), and the first pause between tries; the pause doubles each time, so the
/// tries span about 0.6 s.
const SETTLE_ATTEMPTS: u32 = 7;
const SETTLE_RETRY_START: Duration = Duration::from_millis(10);

/// The longest redelivery delay the server accepts: its longest processing timeout, 7 days.
const MAX_REJECT_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// An event received from a [`Subscription`](crate::Subscription), held until it is settled.
///
/// Settle it exactly once: [`Event::ack`] when the work is done, or one of the rejects. While it is
/// held, the subscription pings the server every half processing timeout, so slow work does not
/// cause a redelivery. Dropping it unsettled rejects it, so JetStream redelivers it at once.
///
/// ```no_run
/// use futures::StreamExt;
/// use jetway_api::windshift::test::v1::StringValue;
/// # async fn run(mut subscription: jetway_client::Subscription) -> Result<(), Box<dyn std::error::Error>> {
/// while let Some(event) = subscription.next().await {
///     let event = event?;
///     match event.decode::<StringValue>() {
///         Ok(order) => {
///             println!("{} #{}: {}", event.subject(), event.id(), order.value);
///             event.ack().await?;
///         }
///         // Not for us, and it never will be: do not redeliver it.
///         Err(_) => event.reject_permanently().await?,
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Event {
    id: u64,
    subject: String,
    timestamp: Option<SystemTime>,
    idempotency_key: Option<String>,
    trace_parent: Option<String>,
    trace_state: Option<String>,
    data: Any,
    delivery_attempt: u64,
    link: Link,
    /// Set once a settle has reached a final outcome, so dropping does not reject again.
    settled: bool,
}

impl Event {
    /// A handle for `event`, settled through `link`.
    pub(crate) fn new(event: jetway_api::windshift::events::v1alpha1::Event, link: Link) -> Event {
        let headers = event.headers.unwrap_or_default();
        Event {
            id: event.id,
            subject: event.subject,
            timestamp: headers
                .timestamp
                .and_then(|t| SystemTime::try_from(&t).ok()),
            idempotency_key: headers.idempotency_key,
            trace_parent: headers.trace_parent,
            trace_state: headers.trace_state,
            data: event.data.unwrap_or_default(),
            delivery_attempt: event.delivery_attempt,
            link,
            settled: false,
        }
    }

    /// The event's id: its stream sequence, the id [`Client::publish`](crate::Client::publish)
    /// returned, stable across redeliveries.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The subject it was published on.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When it happened: the publisher's timestamp, else when it was stored.
    pub fn timestamp(&self) -> Option<SystemTime> {
        self.timestamp
    }

    /// The idempotency key it was published with.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The W3C `traceparent` of the publisher, to continue its trace.
    pub fn trace_parent(&self) -> Option<&str> {
        self.trace_parent.as_deref()
    }

    /// The W3C `tracestate` of the publisher.
    pub fn trace_state(&self) -> Option<&str> {
        self.trace_state.as_deref()
    }

    /// 1 on the first delivery, counting up with each redelivery.
    pub fn delivery_attempt(&self) -> u64 {
        self.delivery_attempt
    }

    /// The message as published.
    pub fn data(&self) -> &Any {
        &self.data
    }

    /// The message decoded as `M`; fails if the event holds another type.
    pub fn decode<M: prost::Name + Default>(&self) -> Result<M, DecodeError> {
        decode_any(&self.data)
    }

    /// Done: the event leaves the consumer for good.
    pub async fn ack(self) -> Result<(), SettleError> {
        self.settle(Action::Ack).await
    }

    /// Failed: JetStream redelivers the event at once.
    pub async fn reject(self) -> Result<(), SettleError> {
        self.settle(Action::Reject(None)).await
    }

    /// Failed: JetStream redelivers the event after `delay` (zero: at once). The server raises a
    /// delay under a second to one second. A delay over 7 days (the longest processing timeout) is
    /// shortened to 7 days: the server refuses a longer one with a status that would end the whole
    /// subscription.
    pub async fn reject_after(self, delay: Duration) -> Result<(), SettleError> {
        let delay = delay.min(MAX_REJECT_DELAY);
        self.settle(Action::Reject(Some(delay))).await
    }

    /// Failed for good (e.g. it cannot be parsed): the event leaves the consumer and is never
    /// redelivered.
    pub async fn reject_permanently(self) -> Result<(), SettleError> {
        self.settle(Action::RejectPermanently).await
    }

    async fn settle(mut self, action: Action) -> Result<(), SettleError> {
        let id = self.id;
        let mut pause = SETTLE_RETRY_START;
        for attempt in 1..=SETTLE_ATTEMPTS {
            let error = match self.link.settle(id, action).await {
                Outcome::Settled => None,
                Outcome::NotHeld => Some(SettleError::NotHeld { id }),
                Outcome::ConnectionLost => Some(SettleError::ConnectionLost { id }),
                Outcome::Closed => Some(SettleError::Closed { id }),
                Outcome::TemporaryFailure => {
                    if attempt < SETTLE_ATTEMPTS {
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    continue;
                }
            };
            self.settled = true;
            return error.map_or(Ok(()), Err);
        }
        // Still unsettled: dropping `self` now rejects it, which the background task retries.
        Err(SettleError::Unavailable {
            id,
            attempts: SETTLE_ATTEMPTS,
        })
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if !self.settled {
            self.link.abandon(self.id);
        }
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("timestamp", &self.timestamp)
            .field("idempotency_key", &self.idempotency_key)
            .field("trace_parent", &self.trace_parent)
            .field("delivery_attempt", &self.delivery_attempt)
            .field("type", &self.data.message_name())
            .finish_non_exhaustive()
    }
}

impl Event {
    /// The connection this event came over; the subscription skips events of a lost connection.
    pub(crate) fn generation(&self) -> u64 {
        self.link.generation()
    }
}
