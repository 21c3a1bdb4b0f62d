//! The application's side of a subscription: the [`Subscription`] handle, a [`Stream`] of the events
//! the background task hands over, which skips events of a lost connection and stops the task when
//! dropped.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use futures::Stream;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{Error, Event};

/// The events of one consumer, as a [`Stream`] of [`Event`] handles (see [`Client::subscribe`]).
///
/// Dropping it ends the Events stream: the server gives back every event still held, and JetStream
/// redelivers them. Handles still alive then fail to settle with [`SettleError::Closed`].
///
/// [`Client::subscribe`]: crate::Client::subscribe
/// [`SettleError::Closed`]: crate::SettleError::Closed
pub struct Subscription {
    events: mpsc::Receiver<Result<Event, Error>>,
    generation: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Subscription {
    /// The handle on a started task: `events` is what it delivers, `generation` its connection
    /// count.
    pub(super) fn new(
        events: mpsc::Receiver<Result<Event, Error>>,
        generation: Arc<AtomicU64>,
        task: JoinHandle<()>,
    ) -> Subscription {
        Subscription {
            events,
            generation,
            task,
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("connection", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let item = futures::ready!(self.events.poll_recv(cx));
            // An event of a lost connection could not be settled any more; the server gave it
            // back, and it arrives again over the new connection.
            if let Some(Ok(event)) = &item
                && event.generation() != self.generation.load(Ordering::SeqCst)
            {
                continue;
            }
            return Poll::Ready(item);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}
