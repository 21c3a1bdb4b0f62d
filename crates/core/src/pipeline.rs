//! Many publishes in flight at once, for PublishStream and PublishBatch: events are handed to NATS
//! one after the other, in the order they are pushed, and their JetStream acks are awaited together,
//! so throughput is bound by how fast JetStream stores events rather than by one round trip each.
//!
//! A [`Pipeline`] holds at most `window` unanswered publishes. It publishes each event as a plain
//! NATS message whose reply subject is one of its own (`<inbox>.<token>`), and reads JetStream's
//! acks from one subscription on `<inbox>.*`. This is what a JetStream publish is on the wire; doing
//! it here rather than through `jetstream::Context::send_publish` spares each event a channel, a
//! timer and a shared table entry, and the task that owns the pipeline reads its own acks. The
//! tokens are consecutive, so the table of waiting publishes is a queue in send order, and one
//! timer on its oldest entry times them all out (after `PUBLISH_ACK_TIMEOUT`, 5 s).
//!
//! Publishes also hold a permit of the connection's ack window
//! ([`crate::ConnectSettings::publish_max_pending`]) until answered. A publish that has to wait
//! for one waits *inside* the pipeline, polled together with the acks that free permits.
//!
//! Answers come as JetStream's acks arrive. Acks of one stream arrive in publish order, but an
//! item that fails before reaching JetStream (invalid, or NATS down) is answered at once, ahead of
//! earlier items, so callers must not rely on the order of answers.
//!
//! # The life of a publish
//!
//! Each state is a field of the [`Pipeline`]:
//! 1. **queued**: pushed, its body not yet built into a NATS message;
//! 2. **staged**: built, waiting for a permit of the ack window and room in the client's channel
//!    (one publish at a time, so an idle pipeline holds neither);
//! 3. **waiting**: handed to NATS under a token, waiting for JetStream's ack or its deadline (the
//!    table of tokens, with its rules, is `waiting::AckTable`, plain state with unit tests; the
//!    tokens' reply subjects and the reading of JetStream's replies are in `wire`);
//! 4. **failing**: failed, its error being sorted (which may ask NATS);
//!
//! and then answered by [`Pipeline::next`]. An item that could not even be decoded goes straight to
//! failing.

mod waiting;
pub(crate) mod wire;

use std::{
    collections::VecDeque,
    future::poll_fn,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use async_nats::{
    Client, Message, Subscriber,
    jetstream::context::{PublishError as JsPublishError, PublishErrorKind},
    message::OutboundMessage,
};
use futures::{Sink, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::{
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep},
};
use tokio_util::sync::PollSemaphore;
use tracing::Instrument;

use crate::{
    Error,
    connection::PUBLISH_ACK_TIMEOUT,
    publish::{Facts, Prepared, Publication, Published, Publisher, Report},
};
use waiting::AckTable;
use wire::{read_ack, reply_subject, sort_send_error, token};

/// How far, in publishes, the newest one sent may be ahead of the oldest one waiting, as a multiple
/// of the window. Acks of different streams come back independently; one stuck ack (a stream
/// electing a leader) would otherwise let the table of waiting publishes grow with every later
/// publish until the stuck one times out.
const SPAN_PER_WINDOW: usize = 4;

/// The outcome of one publish of a pipeline.
pub type Outcome = Result<Published, Error>;

/// Publishes with their acks in flight together; see the module docs. Owned by one task.
pub struct Pipeline<T> {
    publisher: Publisher,
    /// This pipeline's handle on the connection, used as a `Sink` of messages.
    client: Client,
    window: usize,
    /// The connection's ack window, and a permit taken from it for the next publish.
    permits: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    /// JetStream's acks, on `<inbox>.*`.
    replies: Subscriber,
    /// `<inbox>.`: a reply subject is this and the token.
    reply_prefix: String,
    /// Queued: pushed, not yet handed to NATS, in push order.
    queued: VecDeque<(T, Publication)>,
    /// The body bytes in `queued`.
    queued_bytes: usize,
    /// Staged: the next publish, built and waiting for a permit and room in the client's channel.
    staged: Option<(T, Report, Prepared)>,
    /// Waiting: handed to NATS, by token.
    waiting: AckTable<Waiting<T>>,
    /// Fires at or before the deadline of the oldest waiting publish; `None` when disarmed.
    timer: Option<Pin<Box<Sleep>>>,
    /// Failing: failures being answered; sorting an error may ask NATS (which stream has that
    /// subject?).
    failing: FuturesUnordered<BoxFuture<'static, (T, Outcome)>>,
}

/// A publish handed to NATS, waiting for JetStream.
struct Waiting<T> {
    tag: T,
    report: Report,
    facts: Facts,
    /// Returned to the connection's ack window when the publish is answered.
    _permit: OwnedSemaphorePermit,
}

impl<T: Send + 'static> Pipeline<T> {
    /// Opens a pipeline that holds at most `window` (at least 1) unanswered publishes: subscribes to
    /// its acks. Fails only when the NATS client is closed.
    pub async fn open(publisher: Publisher, window: usize) -> Result<Pipeline<T>, Error> {
        let nats = publisher.nats();
        let client = nats.client().clone();
        let inbox = client.new_inbox();
        let replies = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|err| Error::unavailable(format!("subscribing to publish acks: {err}")))?;
        Ok(Pipeline {
            permits: PollSemaphore::new(Arc::clone(nats.publish_window())),
            publisher,
            client,
            window: window.max(1),
            permit: None,
            replies,
            reply_prefix: format!("{inbox}."),
            queued: VecDeque::new(),
            queued_bytes: 0,
            staged: None,
            waiting: AckTable::default(),
            timer: None,
            failing: FuturesUnordered::new(),
        })
    }

    /// Whether [`Pipeline::push`] may be called: fewer than `window` publishes are unanswered.
    pub fn has_room(&self) -> bool {
        self.len() < self.window
    }

    /// Unanswered publishes.
    pub fn len(&self) -> usize {
        self.queued.len()
            + usize::from(self.staged.is_some())
            + self.waiting.live()
            + self.failing.len()
    }

    /// The body bytes of the publishes pushed and not yet built into a NATS message: what the
    /// pipeline holds beyond its count of publishes, for callers that bound memory as well.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
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
    pub fn push(&mut self, tag: T, event: Result<Publication, Error>) {
        assert!(self.has_room(), "Pipeline::push without room");
        match event {
            Ok(event) => {
                self.queued_bytes += event.body.len();
                self.queued.push_back((tag, event));
            }
            Err(invalid) => self
                .failing
                .push(Box::pin(std::future::ready((tag, Err(invalid))))),
        }
    }

    /// The next answer, as acks arrive; `None` once every publish pushed so far has been answered.
    /// Cancel-safe: a cancelled call loses nothing.
    pub async fn next(&mut self) -> Option<(T, Outcome)> {
        poll_fn(|cx| self.poll_answer(cx)).await
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Option<(T, Outcome)>> {
        self.send_queued(cx);
        while let Poll::Ready(Some(reply)) = self.replies.poll_next_unpin(cx) {
            if let Some(answer) = self.take_ack(&reply) {
                return Poll::Ready(Some(answer));
            }
        }
        self.poll_deadlines(cx);
        match self.failing.poll_next_unpin(cx) {
            Poll::Ready(Some(answer)) => Poll::Ready(Some(answer)),
            _ if self.is_empty() => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }

    /// Hands queued publishes to NATS, in order, until one has to wait for a permit or for room in
    /// the client's command channel, or for the oldest waiting publish (see [`SPAN_PER_WINDOW`]).
    /// Only a publish ready to go holds a permit or room, so an idle pipeline holds neither.
    fn send_queued(&mut self, cx: &mut Context<'_>) {
        // Only answering the oldest waiting publish shrinks the span. That happens in `poll_answer`,
        // which then returns an answer or is woken by one, and comes back here.
        while self.waiting.len() < self.window * SPAN_PER_WINDOW {
            if self.staged.is_none() {
                let Some((tag, event)) = self.queued.pop_front() else {
                    return;
                };
                self.queued_bytes -= event.body.len();
                match self.publisher.prepare(event) {
                    (report, Ok(prepared)) => self.staged = Some((tag, report, prepared)),
                    (report, Err(err)) => {
                        self.answer_failed(tag, report, err);
                        continue;
                    }
                }
            }
            if self.permit.is_none() {
                match self.permits.poll_acquire(cx) {
                    Poll::Ready(Some(permit)) => self.permit = Some(permit),
                    // The window is never closed.
                    Poll::Ready(None) | Poll::Pending => return,
                }
            }
            let Poll::Ready(ready) = Pin::new(&mut self.client).poll_ready(cx) else {
                return;
            };
            #[expect(
                clippy::expect_used,
                reason = "the loop staged a publish above or returned"
            )]
            let (tag, report, prepared) = self.staged.take().expect("staged above");
            if ready.is_err() {
                let closed = Error::unavailable("the NATS client is closed");
                self.answer_failed(tag, report, closed);
                continue;
            }
            let reply = reply_subject(&self.reply_prefix, self.waiting.next_token());
            let message = prepared.message.outbound_message(prepared.subject);
            let sent = Pin::new(&mut self.client).start_send(OutboundMessage {
                subject: message.subject,
                reply: Some(reply),
                payload: message.payload,
                headers: message.headers,
            });
            match sent {
                Ok(()) => {
                    #[expect(
                        clippy::expect_used,
                        reason = "the loop acquired a permit above or returned"
                    )]
                    let permit = self.permit.take().expect("acquired above");
                    self.waiting.push(
                        Instant::now() + PUBLISH_ACK_TIMEOUT,
                        Waiting {
                            tag,
                            report,
                            facts: prepared.facts,
                            _permit: permit,
                        },
                    );
                }
                Err(err) => self.fail_sorted(tag, report, prepared.facts, sort_send_error(&err)),
            }
        }
    }

    /// Answers the publish `reply` is for, unless its answer needs sorting first (then it goes to
    /// `failing`). Replies for unknown or timed-out tokens are dropped.
    fn take_ack(&mut self, reply: &Message) -> Option<(T, Outcome)> {
        let waiting = self
            .waiting
            .answer(token(&reply.subject, &self.reply_prefix)?)?;
        match read_ack(reply) {
            Ok(published) => {
                let outcome = Ok(published);
                self.publisher.finish(waiting.report, &outcome);
                Some((waiting.tag, outcome))
            }
            Err(err) => {
                self.fail_sorted(waiting.tag, waiting.report, waiting.facts, err);
                None
            }
        }
    }

    /// Times out the publishes past their deadline, and keeps the timer on the oldest one left.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) {
        loop {
            let Some(deadline) = self.waiting.oldest_deadline() else {
                self.timer = None;
                return;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            // The timer may have been armed for an older publish that was answered since; it then
            // fires early, and is moved on to the oldest one now.
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            let Some(expired) = self.waiting.pop_expired(Instant::now()) else {
                timer.as_mut().reset(deadline);
                continue;
            };
            let err = JsPublishError::new(PublishErrorKind::TimedOut);
            self.fail_sorted(expired.tag, expired.report, expired.facts, err);
        }
    }

    /// Answers a publish that failed with an error already sorted.
    fn answer_failed(&mut self, tag: T, report: Report, err: Error) {
        let outcome = Err(err);
        self.publisher.finish(report, &outcome);
        self.failing
            .push(Box::pin(std::future::ready((tag, outcome))));
    }

    /// Answers a publish whose error is still to be sorted.
    fn fail_sorted(&mut self, tag: T, report: Report, facts: Facts, err: JsPublishError) {
        let publisher = self.publisher.clone();
        self.failing.push(Box::pin(async move {
            let err = facts
                .classify(publisher.nats(), err)
                .instrument(report.span.clone())
                .await;
            let outcome = Err(err);
            publisher.finish(report, &outcome);
            (tag, outcome)
        }));
    }
}

/// The most events one [`publish_batch`] takes.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Publishes `events` (1 to [`MAX_BATCH_EVENTS`]) together, and answers one outcome per event, in
/// the same order. Each `Err` is an event the caller could not decode, answered as it is. The batch
/// as a whole fails only when it is invalid, or the NATS client is closed.
pub async fn publish_batch(
    publisher: &Publisher,
    events: Vec<Result<Publication, Error>>,
) -> Result<Vec<Outcome>, Error> {
    if events.is_empty() {
        return Err(Error::invalid("events", "at least one event is required"));
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(Error::invalid(
            "events",
            format!("at most {MAX_BATCH_EVENTS} events are allowed in one batch"),
        ));
    }
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    outcomes.resize_with(events.len(), || None);
    let mut pipeline = Pipeline::open(publisher.clone(), events.len()).await?;
    for (index, event) in events.into_iter().enumerate() {
        pipeline.push(index, event);
    }
    while let Some((done, outcome)) = pipeline.next().await {
        outcomes[done] = Some(outcome);
    }
    #[expect(
        clippy::expect_used,
        reason = "the pipeline answers every event it was given exactly once"
    )]
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("the pipeline answers every event"))
        .collect();
    Ok(outcomes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ErrorKind;
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

    /// Connects with `window` acks in flight at most, and makes stream `s` on `s.>`.
    pub(crate) async fn connect(server: &NatsServer, window: usize) -> Nats {
        let settings = ConnectSettings {
            url: server.url(),
            name: "pipeline-test".into(),
            publish_max_pending: window,
            security: Default::default(),
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
        nats
    }

    /// Subscribes to `quiet.>` and keeps quiet. No stream captures those subjects, but NATS sees a
    /// subscriber, so it reports no "no responders": only the ack timeout answers a publish there.
    pub(crate) async fn silence(nats: &Nats) -> async_nats::Subscriber {
        let listener = nats.client().subscribe("quiet.>").await.unwrap();
        nats.client().flush().await.unwrap();
        listener
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_connection_ack_window_completes_in_order() {
        let server = NatsServer::start();
        // Two acks in flight on the connection, a hundred in the batch: the batch only completes
        // if the acks are awaited while later events wait for a slot.
        let publisher = Publisher::new(connect(&server, 2).await);
        let mut events: Vec<_> = (0..100).map(|_| Ok(event("s.a"))).collect();
        events[50] = Err(Error::invalid("payload", "set data or raw"));
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
        assert!(matches!(&outcomes[50], Err(e) if e.field() == Some("payload")));
        assert!(matches!(&outcomes[70], Err(e) if e.field() == Some("subject")));
    }

    #[tokio::test]
    async fn an_unanswered_publish_times_out_and_gives_its_slot_back() {
        let server = NatsServer::start();
        // One ack in flight on the connection.
        let nats = connect(&server, 1).await;
        let _listener = silence(&nats).await;
        let publisher = Publisher::new(nats);
        let outcomes = publish_batch(&publisher, vec![Ok(event("quiet.a")), Ok(event("s.a"))])
            .await
            .unwrap();
        assert!(
            matches!(&outcomes[0], Err(e) if e.kind() == ErrorKind::TimedOut),
            "{:?}",
            outcomes[0]
        );
        assert!(
            matches!(outcomes[1], Ok(Published { id: 1, .. })),
            "the second publish got the slot the first one timed out on: {:?}",
            outcomes[1]
        );
    }

    #[tokio::test]
    async fn an_event_over_the_nats_payload_limit_fails_alone() {
        let server = NatsServer::start();
        let publisher = Publisher::new(connect(&server, 8).await);
        let mut big = event("s.a");
        big.body = Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
        let outcomes = publish_batch(&publisher, vec![Ok(big), Ok(event("s.a"))])
            .await
            .unwrap();
        assert!(
            matches!(&outcomes[0], Err(e) if e.field() == Some("data") && e.message().ends_with("over the limit of 1048576 bytes")),
            "{:?}",
            outcomes[0]
        );
        assert!(
            matches!(outcomes[1], Ok(Published { id: 1, .. })),
            "{:?}",
            outcomes[1]
        );
    }

    #[tokio::test]
    async fn a_stuck_publish_holds_back_only_so_many_later_ones() {
        let server = NatsServer::start();
        let nats = connect(&server, 256).await;
        let _listener = silence(&nats).await;
        let mut pipeline = Pipeline::open(Publisher::new(nats), 2).await.unwrap();
        pipeline.push(0, Ok(event("quiet.a")));
        let (mut pushed, mut outcomes) = (1, Vec::new());
        while outcomes.len() < 20 {
            while pushed < 20 && pipeline.has_room() {
                pipeline.push(pushed, Ok(event("s.a")));
                pushed += 1;
            }
            outcomes.push(pipeline.next().await.expect("publishes are unanswered"));
            assert!(
                pipeline.waiting.len() <= 2 * SPAN_PER_WINDOW,
                "{} publishes span the waiting table",
                pipeline.waiting.len()
            );
        }
        let stored = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
        assert_eq!(stored, 19);
        assert!(
            outcomes
                .iter()
                .any(|(tag, o)| *tag == 0 && matches!(o, Err(e) if e.kind() == ErrorKind::TimedOut))
        );
        assert!(pipeline.next().await.is_none());
    }
}
