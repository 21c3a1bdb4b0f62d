//! Many publishes in flight at once, for PublishStream and PublishBatch: events are handed to NATS
//! one after the other, in the order they are pushed, and their JetStream acks are awaited together,
//! so throughput is bound by how fast JetStream stores events rather than by one round trip each.
//!
//! A [`Pipeline`] holds at most `window` unanswered publishes. They go to NATS one at a time, in
//! order, while [`Pipeline::next`] is polled: the connection's ack window
//! ([`crate::ConnectSettings::publish_max_pending`]) may make a publish wait, and it waits *inside*
//! the pipeline, polled together with the acks. An ack releases its slot in the connection's window
//! only once awaited, so waiting for a slot without awaiting the acks would deadlock.
//!
//! Answers come as JetStream's acks arrive. Acks of one stream arrive in publish order, but an
//! item that fails before reaching JetStream (invalid, or NATS down) is answered at once, ahead of
//! earlier items, so callers must not rely on the order of answers.

use std::{
    collections::VecDeque,
    future::poll_fn,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{Stream, future::BoxFuture, stream::FuturesUnordered};

use crate::{
    Invalid,
    publish::{Ack, Publication, PublishError, Published, Publisher},
};

/// The outcome of one publish of a pipeline.
pub type Outcome = Result<Published, PublishError>;

/// Publishes with their acks in flight together; see the module docs. Owned by one task.
pub struct Pipeline<T> {
    publisher: Publisher,
    window: usize,
    /// Pushed, not yet handed to NATS, in push order.
    queued: VecDeque<(T, Publication)>,
    /// The publish being handed to NATS now, with its tag.
    sending: Option<(T, BoxFuture<'static, Ack>)>,
    in_flight: FuturesUnordered<Tagged<T>>,
}

impl<T: Send + 'static> Pipeline<T> {
    /// A pipeline that holds at most `window` (at least 1) unanswered publishes.
    pub fn new(publisher: Publisher, window: usize) -> Pipeline<T> {
        Pipeline {
            publisher,
            window: window.max(1),
            queued: VecDeque::new(),
            sending: None,
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Whether [`Pipeline::push`] may be called: fewer than `window` publishes are unanswered.
    pub fn has_room(&self) -> bool {
        self.len() < self.window
    }

    /// Unanswered publishes.
    pub fn len(&self) -> usize {
        self.queued.len() + usize::from(self.sending.is_some()) + self.in_flight.len()
    }

    /// Whether every publish pushed so far has been answered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `event` for publishing, tagged with `tag`; an `Err` (an event the caller could not
    /// even decode) is answered as it is. Publishes make progress while [`Pipeline::next`] is
    /// polled.
    ///
    /// # Panics
    ///
    /// Without room (see [`Pipeline::has_room`]): the caller must wait for answers first.
    pub fn push(&mut self, tag: T, event: Result<Publication, Invalid>) {
        assert!(self.has_room(), "Pipeline::push without room");
        match event {
            Ok(event) => self.queued.push_back((tag, event)),
            Err(invalid) => self.in_flight.push(Tagged {
                tag: Some(tag),
                outcome: Pending::Failed(Some(invalid.into())),
            }),
        }
    }

    /// The next answer, as acks arrive; `None` once every publish pushed so far has been answered.
    /// Cancel-safe: a cancelled call loses nothing.
    pub async fn next(&mut self) -> Option<(T, Outcome)> {
        poll_fn(|cx| self.poll_answer(cx)).await
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Option<(T, Outcome)>> {
        // Hands queued publishes to NATS, in order, until one has to wait.
        loop {
            if self.sending.is_none() {
                let Some((tag, event)) = self.queued.pop_front() else {
                    break;
                };
                self.sending = Some((tag, Box::pin(self.publisher.send(event))));
            }
            let (_, send) = self.sending.as_mut().expect("set above");
            let Poll::Ready(ack) = send.as_mut().poll(cx) else {
                break;
            };
            let (tag, _) = self.sending.take().expect("set above");
            self.in_flight.push(Tagged {
                tag: Some(tag),
                outcome: Pending::Ack(ack),
            });
        }
        match Pin::new(&mut self.in_flight).poll_next(cx) {
            Poll::Ready(None) if self.sending.is_some() => Poll::Pending,
            other => other,
        }
    }
}

/// The most events one [`publish_batch`] takes.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Publishes `events` (1 to [`MAX_BATCH_EVENTS`]) together, and answers one outcome per event, in
/// the same order. Each `Err` is an event the caller could not decode, answered as it is.
pub async fn publish_batch(
    publisher: &Publisher,
    events: Vec<Result<Publication, Invalid>>,
) -> Result<Vec<Outcome>, Invalid> {
    if events.is_empty() {
        return Err(Invalid::new("events", "at least one event is required"));
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(Invalid::new(
            "events",
            format!("at most {MAX_BATCH_EVENTS} events are allowed in one batch"),
        ));
    }
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    outcomes.resize_with(events.len(), || None);
    let mut pipeline = Pipeline::new(publisher.clone(), events.len());
    for (index, event) in events.into_iter().enumerate() {
        pipeline.push(index, event);
    }
    while let Some((done, outcome)) = pipeline.next().await {
        outcomes[done] = Some(outcome);
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.expect("the pipeline answers every event"))
        .collect())
}

/// A publish that is waiting for its answer, with its tag.
struct Tagged<T> {
    tag: Option<T>,
    outcome: Pending,
}

enum Pending {
    Ack(Ack),
    /// Failed before it was sent; answered when first polled.
    Failed(Option<PublishError>),
}

// Nothing is structurally pinned: the tag is moved out by value, and `Ack` is a boxed future.
impl<T> Unpin for Tagged<T> {}

impl<T> Future for Tagged<T> {
    type Output = (T, Outcome);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match &mut this.outcome {
            Pending::Ack(ack) => std::task::ready!(Pin::new(ack).poll(cx)),
            Pending::Failed(err) => Err(err.take().expect("a failure is answered once")),
        };
        Poll::Ready((this.tag.take().expect("answered once"), outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectSettings, Nats};
    use bytes::Bytes;
    use jetway_testkit::{NatsServer, eventually};

    fn event(subject: &str) -> Publication {
        Publication {
            subject: subject.into(),
            content_type: Some(String::new()),
            body: Bytes::from_static(b"x"),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_connection_ack_window_completes_in_order() {
        let server = NatsServer::start();
        // Two acks in flight on the connection, a hundred in the batch: the batch only completes
        // if the acks are awaited while later events wait for a slot.
        let settings = ConnectSettings {
            url: server.url(),
            name: "pipeline-test".into(),
            publish_max_pending: 2,
        };
        let nats = Nats::connect(&settings).await.unwrap();
        eventually("connected", || async { nats.is_connected().then_some(()) }).await;
        nats.jetstream()
            .create_stream(async_nats::jetstream::stream::Config {
                name: "s".into(),
                subjects: vec!["s.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();

        let publisher = Publisher::new(nats);
        let mut events: Vec<_> = (0..100).map(|_| Ok(event("s.a"))).collect();
        events[50] = Err(Invalid::new("payload", "set data or raw"));
        events[70] = Ok(event("s.*"));
        let outcomes = publish_batch(&publisher, events).await.unwrap();
        assert_eq!(outcomes.len(), 100);
        let ids: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .map(|p| p.id)
            .collect();
        assert_eq!(
            ids,
            (1..=98).collect::<Vec<_>>(),
            "stored in order, failures skipped"
        );
        assert!(matches!(&outcomes[50], Err(PublishError::Invalid(i)) if i.field == "payload"));
        assert!(matches!(&outcomes[70], Err(PublishError::Invalid(i)) if i.field == "subject"));
    }
}
