//! The delivery engine behind one Events stream: a subscription to a pull consumer that hands out
//! events, remembers what is in flight, and settles events by id (ack, reject, ping).
//!
//! Flow control is exact. The engine requests from JetStream only as many messages as it has free
//! slots (`max_processing_events` minus in flight minus already requested), so no event waits in a
//! buffer while its processing timeout runs. The one exception: a pull request that outlived a
//! reconnect of the NATS connection can bring more than the free slots; those events are held until
//! a slot frees (their processing timeout counting from their arrival), because handing them back
//! would count as a delivery in JetStream. The in-flight table maps the stream sequence (the event
//! id) to the message's ack subject and a deadline; at the deadline the entry is dropped, because
//! JetStream redelivers the event by itself then. Closing the subscription naks whatever is still in
//! flight, so it is redelivered at once rather than after the timeout.
//!
//! Delivery is at-least-once: an event is settled only by an explicit ack or a permanent reject.
//!
//! A [`Subscription`] is owned by one task; nothing in it is shared, so the hot path takes no lock.
//! It does the I/O; its flow-control state, and every rule above, is in `flow`, a plain struct with
//! unit tests.

mod ack_subject;
mod deletions;
mod flow;

pub(crate) use ack_subject::AckMetadata;
pub(crate) use deletions::Deletions;

use std::{collections::HashSet, pin::Pin, time::Duration};

use async_nats::{
    StatusCode, Subject, Subscriber,
    jetstream::{
        AckKind, ErrorCode,
        consumer::{
            FromConsumer, PullConsumer,
            pull::{self, BatchConfig},
        },
    },
};
use futures::{FutureExt, StreamExt};
use tokio::{
    sync::watch,
    time::{Instant, Sleep},
};

use crate::{
    Error, ErrorKind, Nats,
    consumers::{
        attempt_timeout, processing_timeout, require_explicit_acks, within_request_limits,
    },
    dead_letters,
    delivery::flow::{Admission, Flow},
    error::{Classify, about_consumer},
    format::{self, Event},
    names::validate_name,
    settle::{Settle, Settled},
    telemetry::{self, metrics::Path},
};

/// In-flight events per subscription when the client sets no limit.
pub const DEFAULT_MAX_PROCESSING_EVENTS: u64 = 50;
/// The largest `max_processing_events` accepted; it bounds the memory one subscription can hold.
pub const MAX_PROCESSING_EVENTS_LIMIT: u64 = 10_000;
/// How long one pull request waits on the server for messages. Idle subscriptions re-pull this often.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// How long closing waits for its naks to be written out.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Which consumer to subscribe to, and how many events to hold at once.
#[derive(Debug, Clone)]
pub struct SubscribeSpec {
    /// The stream.
    pub stream: String,
    /// The consumer's name (durable, or an ephemeral id from EnsureConsumer).
    pub consumer: String,
    /// Most events handed out and not yet settled; `None` or 0 means 50.
    pub max_processing_events: Option<u64>,
}

/// One delivered event.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event, decoded as on every read path; its id (the stream sequence) settles it. Its trace
    /// context is its receive span's when spans are recorded, else the publisher's.
    pub event: Event,
    /// 1 on the first delivery, 2 on the first redelivery, and so on.
    pub delivery_attempt: u64,
}

/// What settles an event in flight.
struct Receipt {
    /// Its ack subject.
    reply: Subject,
    /// The `<subject> receive` span; it ends when the entry goes.
    span: tracing::Span,
}

/// A live subscription to a pull consumer. See the module docs.
pub struct Subscription {
    nats: Nats,
    consumer: PullConsumer,
    stream: String,
    name: String,
    inbox: Subject,
    messages: Subscriber,
    /// Resolves when JetStream advises that the consumer or its stream was deleted: a pull request
    /// waiting on the server is dropped silently then, so without it the session would only notice
    /// at its next pull.
    deleted: deletions::Watch,
    connected: watch::Receiver<bool>,
    /// False once the connection watch has no sender left; it is then not polled again.
    watching_connection: bool,
    processing_timeout: Duration,
    /// In flight, requested and held: what the next step is.
    flow: Flow<Receipt, async_nats::Message>,
    /// Fires where `flow` says the timer is (see [`Flow::expire`]).
    timer: Pin<Box<Sleep>>,
    meters: telemetry::metrics::Delivery,
    subscriptions: metrics::Gauge,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscriptions.decrement(1.0);
        self.meters.released(self.flow.len());
    }
}

impl Subscription {
    /// Subscribes to an existing pull consumer.
    pub async fn open(nats: &Nats, spec: &SubscribeSpec) -> Result<Subscription, Error> {
        validate_name("stream", &spec.stream)?;
        validate_name("consumer", &spec.consumer)?;
        let max = match spec.max_processing_events {
            None | Some(0) => DEFAULT_MAX_PROCESSING_EVENTS,
            Some(n) if n > MAX_PROCESSING_EVENTS_LIMIT => {
                return Err(Error::invalid(
                    "max_processing_events",
                    format!("must be at most {MAX_PROCESSING_EVENTS_LIMIT}"),
                ));
            }
            Some(n) => n,
        } as usize;
        // Watched before the lookup, so a deletion right after it is not missed.
        let deleted = nats.deletions().watch(&spec.stream, &spec.consumer).await?;
        let client = nats.client();
        let js = nats.jetstream();
        let lookup = |err: Error| about_consumer(err, &spec.stream, &spec.consumer);
        let stream = js
            .get_stream_no_info(&spec.stream)
            .await
            .map_err(|e| lookup(e.classify()))?;
        let info = stream
            .consumer_info(&spec.consumer)
            .await
            .map_err(|e| lookup(e.classify()))?;
        require_explicit_acks(&info.config, &spec.stream, &spec.consumer, "Events")?;
        let processing_timeout = processing_timeout(&info);
        let config =
            pull::Config::try_from_consumer_config(info.config.clone()).map_err(Error::other)?;
        let consumer = PullConsumer::new(config, info, js.clone());
        let inbox = Subject::from(client.new_inbox());
        let messages = client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| Error::unavailable(format!("subscribing to the pull inbox: {err}")))?;
        let now = Instant::now();
        let meters = telemetry::metrics::Delivery::new(Path::Events);
        let subscriptions = metrics::gauge!(telemetry::metrics::SUBSCRIPTIONS);
        subscriptions.increment(1.0);
        tracing::debug!(stream = %spec.stream, consumer = %spec.consumer, max, "subscribed");
        Ok(Subscription {
            nats: nats.clone(),
            consumer,
            stream: spec.stream.clone(),
            name: spec.consumer.clone(),
            inbox,
            messages,
            deleted,
            connected: nats.connected(),
            watching_connection: true,
            processing_timeout,
            flow: Flow::new(max, now),
            timer: Box::pin(tokio::time::sleep_until(now)),
            meters,
            subscriptions,
        })
    }

    /// The consumer's processing timeout: how long a delivered event may stay unsettled.
    pub fn processing_timeout(&self) -> Duration {
        self.processing_timeout
    }

    /// Waits for the next event and records it as in flight. Cancel-safe: a cancelled call loses
    /// nothing, and the next call carries on.
    ///
    /// An idle session spends its life awaiting this future, so what it awaits only now and then
    /// (pull requests, consumer lookups, naks of held events) is boxed: inline, those futures made
    /// every idle session's task tens of KiB larger.
    pub async fn next(&mut self) -> Result<Delivery, Error> {
        loop {
            while let Some((came, message)) = self.flow.next_held() {
                if let Some(delivery) = self.deliver(message, Some(came)).await {
                    return Ok(delivery);
                }
            }
            self.pull_if_needed().await?;
            let wake_at = self.flow.wake_at();
            tokio::select! {
                biased;
                () = &mut self.timer, if self.flow.timer_set() => self.expire(),
                message = self.messages.next() => match message {
                    Some(message) => {
                        if let Some(delivery) = self.receive(message).await? {
                            return Ok(delivery);
                        }
                    }
                    None => return Err(Error::other("the pull inbox subscription closed")),
                },
                () = self.deleted.deleted() => return Err(self.deleted()),
                changed = self.connected.changed(), if self.watching_connection => match changed {
                    // Pull requests do not survive a reconnect; request the slots again.
                    Ok(()) if *self.connected.borrow_and_update() => self.flow.reconnected(),
                    Ok(()) => {}
                    Err(_) => self.watching_connection = false,
                },
                () = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => {
                    self.flow.woke(Instant::now());
                }
            }
        }
    }

    /// Requests as many messages as there are free slots, when a pull is worth it (see
    /// [`Flow::pull_size`]).
    async fn pull_if_needed(&mut self) -> Result<(), Error> {
        let Some(free) = self.flow.pull_size(Instant::now) else {
            return Ok(());
        };
        let (batch, max_bytes, expires) = within_request_limits(
            &self.consumer.cached_info().config,
            free,
            0,
            Some(PULL_EXPIRES),
        );
        let expires = expires.unwrap_or(PULL_EXPIRES);
        let request = BatchConfig {
            batch,
            max_bytes,
            expires: Some(expires),
            ..Default::default()
        };
        // Boxed, as every rarer await below: a future is as large as the largest one it awaits
        // inline, and an idle session holds the future of `next` (see `Subscription::next`).
        Box::pin(self.consumer.request_batch(request, self.inbox.clone()))
            .await
            .map_err(|err| Error::unavailable(format!("sending a pull request: {err}")))?;
        self.flow.pulled(batch, expires, Instant::now());
        Ok(())
    }

    /// Handles one message on the pull inbox: an event, or a status about our pull requests.
    async fn receive(&mut self, message: async_nats::Message) -> Result<Option<Delivery>, Error> {
        match message.status {
            None | Some(StatusCode::OK) => {
                self.flow.arrived();
                Ok(self.deliver(message, None).await)
            }
            Some(StatusCode::TIMEOUT) | Some(StatusCode::REQUEST_TERMINATED) => {
                match message.description.as_deref() {
                    Some("Consumer Deleted") => return Err(self.deleted()),
                    Some("Consumer is push based") => {
                        return Err(Error::other("the consumer became a push consumer"));
                    }
                    _ => {}
                }
                // The request ended; the server says how many of its messages it did not send.
                let unsent = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse::<usize>().ok());
                match unsent {
                    Some(unsent) => self.flow.request_ended(unsent),
                    None => {
                        // A refusal rather than an ending ("Exceeded MaxWaiting", ...): asking
                        // again at once would be refused again, in a loop.
                        tracing::warn!(description = ?message.description, stream = %self.stream,
                            consumer = %self.name, "JetStream refused a pull request; retrying shortly");
                        self.flow.pull_failed(Instant::now());
                    }
                }
                Ok(None)
            }
            Some(StatusCode::NO_RESPONDERS) => {
                // Nobody serves the consumer's pull subject: it is gone, or JetStream is not up yet.
                self.flow.pull_failed(Instant::now());
                match Box::pin(self.consumer.get_info()).await {
                    Err(err)
                        if matches!(
                            err.classify().api_code(),
                            Some(ErrorCode::CONSUMER_NOT_FOUND | ErrorCode::STREAM_NOT_FOUND)
                        ) =>
                    {
                        Err(self.deleted())
                    }
                    _ => Ok(None),
                }
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Ok(None),
            Some(status) => {
                tracing::warn!(%status, description = ?message.description, stream = %self.stream,
                    consumer = %self.name, "unexpected status on the pull inbox");
                Ok(None)
            }
        }
    }

    /// The error that ends a subscription whose consumer (or its stream) was deleted.
    fn deleted(&self) -> Error {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "consumer {} on stream {} was deleted",
                self.name, self.stream
            ),
        )
        .with_resource(format!("consumer {} on stream {}", self.name, self.stream))
    }

    /// Turns a JetStream message into a [`Delivery`] and records it as in flight, or holds it while
    /// every slot is taken (see `held`). `held_since` is when a held message came; `None` is now.
    async fn deliver(
        &mut self,
        mut message: async_nats::Message,
        held_since: Option<Instant>,
    ) -> Option<Delivery> {
        let (
            reply,
            AckMetadata {
                stream_sequence: id,
                delivered: attempt,
                stored,
            },
        ) = AckMetadata::take(&mut message)?;
        match self.flow.admit(id) {
            Admission::Free => {}
            // The old delivery's receive span ends here.
            Admission::Replaced(_) => self.meters.released(1),
            Admission::Full => {
                message.reply = Some(reply);
                let since = held_since.unwrap_or_else(Instant::now);
                if let Err(message) = self.flow.hold(since, message)
                    && let Some(reply) = &message.reply
                {
                    // More than a window over: something else is wrong; give it back.
                    Box::pin(self.send_ack(reply, AckKind::Nak(None)))
                        .await
                        .ok();
                }
                return None;
            }
        }
        let timeout = attempt_timeout(&self.consumer.cached_info().config, attempt);
        let came = flow::started(held_since, timeout, Instant::now())?;

        let mut event = format::decode(
            id,
            message.subject.as_str().to_owned(),
            message.headers.as_ref(),
            message.payload,
            stored,
        );
        let span = telemetry::receive(&mut event, &self.name);
        let timer = self.flow.insert(id, Receipt { reply, span }, came, timeout);
        self.set_timer(timer);
        self.meters.delivered(attempt);

        Some(Delivery {
            event,
            delivery_attempt: attempt,
        })
    }

    /// Settles events by id. Each id is answered in exactly one list of the result.
    pub async fn settle(&mut self, ids: &[u64], how: Settle) -> Settled {
        // Deadlines that passed while the timer was not polled (the session was busy, or the
        // request came first) expire now: JetStream may already have handed such an event to
        // another subscriber, and a late ack, nak or ping would act on that delivery instead.
        if self.flow.timer_due(Instant::now()) {
            self.expire();
        }
        if how == Settle::Ping {
            return self.ping(ids).await;
        }
        if how == Settle::RejectPermanently
            && ids.iter().any(|&id| self.flow.contains(id))
            && let Err(err) = Box::pin(dead_letters::prepare_reject(
                &self.nats,
                &self.stream,
                &self.name,
            ))
            .await
        {
            tracing::warn!(%err, stream = %self.stream, consumer = %self.name,
                "cannot make sure that permanently rejected events are dead-lettered; not rejecting them");
            return Settled::none_sent(ids, |id| self.flow.contains(id));
        }
        let kind = how.ack_kind();
        let mut settled = Settled {
            ids: Vec::with_capacity(ids.len()),
            ..Settled::default()
        };
        for &id in ids {
            // Taken out while its settlement is sent, and put back if that fails; the deadline
            // stays queued until then.
            let Some(taken) = self.flow.take(id) else {
                settled.invalid_ids.push(id);
                continue;
            };
            match self.send_ack(&taken.entry.reply, kind).await {
                Ok(()) => {
                    settled.ids.push(id);
                    let receipt = self.flow.settled(taken);
                    telemetry::settled(&receipt.span, how);
                }
                Err(err) => {
                    tracing::warn!(%err, id, "could not settle an event");
                    settled.temporary_failed_ids.push(id);
                    self.flow.put_back(id, taken);
                }
            }
        }
        // Counted once per call rather than per event: each update is an atomic on shared metrics.
        self.meters.settled(how, settled.ids.len());
        settled
    }

    /// Restarts the processing timeout of events still in flight.
    async fn ping(&mut self, ids: &[u64]) -> Settled {
        let mut settled = Settled::default();
        // Pings keep their entries, so a repeated id would be found twice; remember what was seen.
        let mut seen = HashSet::new();
        for &id in ids {
            let Some(receipt) = self.flow.get(id) else {
                settled.invalid_ids.push(id);
                continue;
            };
            if !seen.insert(id) {
                settled.invalid_ids.push(id);
                continue;
            }
            match self.send_ack(&receipt.reply, AckKind::Progress).await {
                Ok(()) => {
                    settled.ids.push(id);
                    let timer = self.flow.restart(id, Instant::now());
                    self.set_timer(timer);
                    if let Some(receipt) = self.flow.get(id) {
                        tracing::info!(target: telemetry::SPAN_TARGET, parent: &receipt.span, "pinged");
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, id, "could not settle an event");
                    settled.temporary_failed_ids.push(id);
                }
            }
        }
        settled
    }

    /// Sets the timer to where `flow` moved it, if it did.
    fn set_timer(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.timer.as_mut().reset(at);
        }
    }

    /// Drops the events whose processing timeout passed (JetStream redelivers them on its own), and
    /// sets the timer for the next deadline.
    fn expire(&mut self) {
        let meters = &self.meters;
        let next = self.flow.expire(Instant::now(), |receipt| {
            telemetry::error(&receipt.span, "processing timeout");
            meters.released(1);
        });
        self.set_timer(next);
    }

    async fn send_ack(&self, reply: &Subject, kind: AckKind) -> Result<(), Error> {
        self.nats.send_ack(reply.clone(), kind).await
    }

    /// Naks every event still in flight, so JetStream redelivers them at once, and ends the
    /// subscription.
    pub async fn close(mut self) {
        // Unsubscribe the pull inbox first. Our pull requests may still be open on the server, and
        // JetStream would hand a nak'ed event straight back to one of them: into this inbox, just
        // before it goes away, so the event would return only after its processing timeout. The
        // unsubscribe is written on the connection before the naks, so the server has no interest
        // in those requests any more when it redelivers.
        if let Err(err) = self.messages.unsubscribe().await {
            tracing::warn!(%err, "unsubscribing the pull inbox on close failed");
        }
        let ids: Vec<u64> = self.flow.ids();
        let settled = self.settle(&ids, Settle::Reject(None)).await;
        // Deliveries held over the limit or already buffered in the inbox were never handed out;
        // give them back too. Only what is there now: while NATS reconnects, the unsubscribe is
        // not processed and waiting for the end of the inbox would wait for NATS.
        let mut returned = 0;
        let held = self.flow.drain_held();
        let buffered = std::iter::from_fn(|| self.messages.next().now_or_never().flatten());
        for message in held.into_iter().chain(buffered.collect::<Vec<_>>()) {
            if let (None | Some(StatusCode::OK), Some(reply)) = (message.status, &message.reply)
                && self.send_ack(reply, AckKind::Nak(None)).await.is_ok()
            {
                returned += 1;
            }
        }
        if ids.is_empty() && returned == 0 {
            return;
        }
        // Bounded for the same reason; unflushed naks go out on reconnect, or the events come back
        // after their processing timeout.
        if !matches!(
            tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, self.nats.client().flush()).await,
            Ok(Ok(()))
        ) {
            tracing::warn!("naks on close not flushed yet; they go out when NATS is reachable");
        }
        tracing::debug!(naked = settled.ids.len(), returned, stream = %self.stream, consumer = %self.name, "subscription closed");
    }
}
