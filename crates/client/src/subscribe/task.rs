//! The background task of one subscription: it runs a [`Session`] until it ends, moving events to
//! the application, settle requests from handles to the server and confirmations back, and
//! reconnects with backoff when the transport fails.
//!
//! The task never waits on one thing while another needs it: every branch of its loop is polled
//! together, and each one only moves work between bounded queues (see [`Book`]).
//!
//! [`Book`]: super::book::Book

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jetway_api::windshift::events::v1alpha1::events_request;
use tokio::{sync::mpsc, time::Instant};

use super::{
    link::{Abandoned, Command, Link, Outcome},
    session::Session,
    subscription::Subscription,
};
use crate::{Client, Error, Event};

/// Reconnect backoff: the first pause, doubled after each failed attempt up to the cap.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

/// Settle commands queued between the handles and the task.
const COMMAND_BUFFER: usize = 64;

/// Starts the task of a subscription whose first session is open, and returns its handle.
pub(super) fn spawn(
    client: Client,
    subscribe: events_request::Subscribe,
    session: Session,
) -> Subscription {
    let (commands_tx, commands) = mpsc::channel(COMMAND_BUFFER);
    // One slot: events wait in the task's queue, where they are pinged, until taken.
    let (deliver, events) = mpsc::channel(1);
    let generation = Arc::new(AtomicU64::new(0));
    let task = Task {
        client,
        subscribe,
        commands,
        commands_tx,
        abandoned: Arc::new(Abandoned::default()),
        deliver,
        generation: generation.clone(),
    };
    Subscription::new(events, generation, tokio::spawn(task.run(session)))
}

/// How a session ended.
enum End {
    /// The subscription was dropped.
    Gone,
    /// The connection failed; reconnect.
    Lost(Error),
    /// The server refused the subscription for good; end it with this error.
    Fatal(Error),
}

/// The background task of one subscription.
struct Task {
    client: Client,
    subscribe: events_request::Subscribe,
    commands: mpsc::Receiver<Command>,
    /// Cloned into each handle.
    commands_tx: mpsc::Sender<Command>,
    abandoned: Arc<Abandoned>,
    deliver: mpsc::Sender<Result<Event, Error>>,
    /// Counts connections; handles of an older one cannot be settled.
    generation: Arc<AtomicU64>,
}

impl Task {
    async fn run(mut self, mut session: Session) {
        loop {
            let end = self.drive(&mut session).await;
            session.book.fail_pending();
            match end {
                End::Gone => return,
                End::Fatal(error) => {
                    self.deliver.send(Err(error)).await.ok();
                    return;
                }
                End::Lost(error) => tracing::warn!(
                    %error,
                    stream = %self.subscribe.stream,
                    consumer = %self.subscribe.consumer,
                    "events stream lost; subscribing again"
                ),
            }
            self.generation.fetch_add(1, Ordering::SeqCst);
            match self.reconnect().await {
                Some(next) => session = next,
                None => return,
            }
        }
    }

    /// Opens a new session, with backoff, until one succeeds or the server refuses for good.
    async fn reconnect(&mut self) -> Option<Session> {
        let mut delay = RECONNECT_DELAY_MIN;
        loop {
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            // Handles of the lost connection get their answer at once rather than after the
            // reconnect.
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    Some(command) = self.commands.recv() => {
                        command.reply.send(Outcome::ConnectionLost).ok();
                    }
                }
            }
            match Session::open(&self.client, &self.subscribe).await {
                Ok(session) => {
                    tracing::info!(
                        stream = %self.subscribe.stream,
                        consumer = %self.subscribe.consumer,
                        "subscribed again"
                    );
                    return Some(session);
                }
                Err(error) if error.is_transient() => {
                    tracing::debug!(%error, ?delay, "subscribing again failed; retrying");
                    delay = (delay * 2).min(RECONNECT_DELAY_MAX);
                }
                Err(error) => {
                    self.deliver.send(Err(error)).await.ok();
                    return None;
                }
            }
        }
    }

    fn link(&self, generation: u64) -> Link {
        Link::new(self.commands_tx.clone(), self.abandoned.clone(), generation)
    }

    /// Runs one session until it ends.
    async fn drive(&mut self, session: &mut Session) -> End {
        let generation = self.generation.load(Ordering::SeqCst);
        loop {
            let next_timer = session.book.next_timer();
            tokio::select! {
                message = session.inbound.message() => match message {
                    Ok(Some(response)) => {
                        if let Err(error) = session.book.handle(response, Instant::now()) {
                            return End::Fatal(error);
                        }
                    }
                    Ok(None) => {
                        let status = tonic::Status::unavailable("the server ended the events stream");
                        return End::Lost(status.into());
                    }
                    Err(status) => {
                        let error = Error::from(status);
                        return if error.is_transient() { End::Lost(error) } else { End::Fatal(error) };
                    }
                },
                // An owned permit: a borrowed one would keep `session` borrowed in every branch.
                permit = session.outbound.clone().reserve_owned(), if session.book.has_outgoing() => match permit {
                    Ok(permit) => {
                        if let Some(request) = session.book.send_next() {
                            permit.send(request);
                        }
                    }
                    Err(_) => {
                        let status = tonic::Status::unavailable("the request stream closed");
                        return End::Lost(status.into());
                    }
                },
                permit = self.deliver.reserve(), if session.book.has_ready() => match permit {
                    Ok(permit) => {
                        if let Some(event) = session.book.take_ready() {
                            permit.send(Ok(Event::new(event, self.link(generation))));
                        }
                    }
                    Err(_) => return End::Gone,
                },
                Some(command) = self.commands.recv(), if !session.book.outbox_full() => {
                    if command.generation == generation {
                        session.book.settle(command);
                    } else {
                        command.reply.send(Outcome::ConnectionLost).ok();
                    }
                }
                () = self.abandoned.notify.notified() => {
                    let ids: Vec<u64> = self
                        .abandoned
                        .take()
                        .into_iter()
                        .filter(|&(_, of)| of == generation)
                        .map(|(id, _)| id)
                        .collect();
                    session.book.abandon(ids);
                }
                () = tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    session.book.fire_timers(Instant::now());
                }
            }
        }
    }
}
