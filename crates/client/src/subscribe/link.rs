//! The way from an [`Event`](crate::Event) handle back to the task that delivered it: settle
//! requests ([`Command`]s) over a bounded channel, each answered with an [`Outcome`], and the list
//! of handles dropped unsettled ([`Abandoned`]), which `Drop` fills without waiting.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::{Notify, mpsc, oneshot};

/// What a handle asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    Ack,
    Reject(Option<Duration>),
    RejectPermanently,
}

/// What became of a settle request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Settled,
    NotHeld,
    TemporaryFailure,
    ConnectionLost,
    Closed,
}

/// A settle request from a handle to the task.
pub(super) struct Command {
    pub(super) id: u64,
    pub(super) generation: u64,
    pub(super) action: Action,
    pub(super) reply: oneshot::Sender<Outcome>,
}

/// Ids of handles dropped unsettled, with their connection generation. A list rather than the
/// command channel because `Drop` cannot wait for room; it holds at most one entry per handle.
#[derive(Default)]
pub(super) struct Abandoned {
    ids: Mutex<Vec<(u64, u64)>>,
    pub(super) notify: Notify,
}

impl Abandoned {
    fn push(&self, id: u64, generation: u64) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, generation));
        self.notify.notify_one();
    }

    pub(super) fn take(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A handle's way back to the task that delivered it.
pub(crate) struct Link {
    commands: mpsc::Sender<Command>,
    abandoned: Arc<Abandoned>,
    generation: u64,
}

impl Link {
    /// A link to the task that owns `commands` and `abandoned`, for an event of connection
    /// `generation`.
    pub(super) fn new(
        commands: mpsc::Sender<Command>,
        abandoned: Arc<Abandoned>,
        generation: u64,
    ) -> Link {
        Link {
            commands,
            abandoned,
            generation,
        }
    }

    /// The connection the event came over.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Sends a settle request and waits for the server's answer.
    pub(crate) async fn settle(&self, id: u64, action: Action) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let command = Command {
            id,
            generation: self.generation,
            action,
            reply,
        };
        if self.commands.send(command).await.is_err() {
            return Outcome::Closed;
        }
        answer.await.unwrap_or(Outcome::Closed)
    }

    /// Asks the task to reject the event, without waiting.
    pub(crate) fn abandon(&self, id: u64) {
        self.abandoned.push(id, self.generation);
    }
}
