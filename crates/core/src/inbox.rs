//! A reply inbox shared by the calls of one kind on a NATS connection: each call sends its message
//! with a reply subject `<inbox>.<token>` of its own, and one subscription on `<inbox>.*` with a
//! routing task hands each reply to the call waiting under its token. Requests (`requests.rs`) and
//! single event publishes (`publish.rs`, whose replies are JetStream's acks) each have one per
//! connection.
//!
//! Matching replies here rather than through async-nats's request table lets a reply that arrives
//! after its call gave up be seen and counted, and spares a JetStream publish the context's own ack
//! window, its acker task and its ack parse. The table holds one entry per call waiting, removed
//! when the reply comes or when the call stops waiting (gave up, or cancelled), so it is bounded by
//! what bounds the callers. The subscription is made on the first call; async-nats subscribes it
//! again after a reconnect. If it ends (the client closed), the waiting calls are told at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use async_nats::{Client, Message, Subject};
use futures::StreamExt;
use metrics::Counter;
use tokio::sync::{OnceCell, oneshot};

use crate::{
    Error,
    pipeline::wire::{reply_subject, token},
};

/// One inbox; see the module docs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Inbox {
    client: Client,
    /// `<inbox>.`, set once the subscription is made and its routing task is running.
    prefix: Arc<OnceCell<String>>,
    table: Arc<Mutex<Table>>,
    /// Counts the replies nobody waited for any more.
    late: Counter,
}

/// Who waits for which token. Tokens are not client input, so they hash with foldhash.
#[derive(Default)]
struct Table {
    next_token: u64,
    waiting: HashMap<u64, oneshot::Sender<Message>, foldhash::fast::RandomState>,
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // Every change is one insert or remove, so a panic leaves nothing half-changed.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("subscribed", &self.prefix.initialized())
            .field("waiting", &lock(&self.table).waiting.len())
            .finish()
    }
}

impl Inbox {
    /// An inbox on `client`'s connection that counts late replies in `late`; nothing is subscribed
    /// until the first [`Inbox::wait`].
    pub(crate) fn new(client: Client, late: Counter) -> Inbox {
        Inbox {
            client,
            prefix: Arc::new(OnceCell::new()),
            table: Arc::default(),
            late,
        }
    }

    /// A new place in the table, with the reply subject to send under. Fails only when the
    /// subscription cannot be made (the client is closed).
    pub(crate) async fn wait(&self) -> Result<Waiter<'_>, Error> {
        let prefix = self.prefix.get_or_try_init(|| self.subscribe()).await?;
        let (tx, rx) = oneshot::channel();
        let token = {
            let mut table = lock(&self.table);
            let token = table.next_token;
            table.next_token += 1;
            table.waiting.insert(token, tx);
            token
        };
        Ok(Waiter {
            reply: reply_subject(prefix, token),
            rx,
            entry: Entry {
                table: &self.table,
                token,
                answered: false,
            },
        })
    }

    /// Subscribes to `<inbox>.*` and spawns the task that routes the replies. The task ends with
    /// the subscription (the client closed or drained), or once no handle on the table is left.
    async fn subscribe(&self) -> Result<String, Error> {
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|err| Error::unavailable(format!("subscribing to an inbox: {err}")))?;
        let prefix = format!("{inbox}.");
        let table = Arc::downgrade(&self.table);
        let (route, late) = (prefix.clone(), self.late.clone());
        tokio::spawn(async move {
            while let Some(reply) = replies.next().await {
                let Some(table) = table.upgrade() else {
                    return;
                };
                let waiter = token(&reply.subject, &route)
                    .and_then(|token| lock(&table).waiting.remove(&token));
                // None: the call stopped waiting before its reply came; Err: it is stopping now.
                if waiter.is_none_or(|waiter| waiter.send(reply).is_err()) {
                    late.increment(1);
                }
            }
            // No more replies: the calls still waiting are told now rather than at their timeout.
            if let Some(table) = table.upgrade() {
                lock(&table).waiting.clear();
            }
        });
        Ok(prefix)
    }

    /// How many calls wait for their reply.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        lock(&self.table).waiting.len()
    }
}

/// A call's place in the inbox: leaves the table when dropped.
pub(crate) struct Waiter<'a> {
    reply: Subject,
    rx: oneshot::Receiver<Message>,
    entry: Entry<'a>,
}

impl Waiter<'_> {
    /// The reply subject to send the call's message with.
    pub(crate) fn reply(&self) -> Subject {
        self.reply.clone()
    }

    /// The reply; `None` when none will come (the subscription ended). Cancel-safe.
    pub(crate) async fn answer(&mut self) -> Option<Message> {
        let reply = (&mut self.rx).await.ok()?;
        // The routing task took the entry out to answer it.
        self.entry.answered = true;
        Some(reply)
    }
}

/// Where a waiter is in the table; leaves it on drop unless the routing task took it out.
struct Entry<'a> {
    table: &'a Mutex<Table>,
    token: u64,
    answered: bool,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if !self.answered {
            lock(self.table).waiting.remove(&self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jetway_testkit::{NatsServer, eventually_within};

    use super::*;

    /// Answers every request on `echo.>` with its own payload.
    async fn echo(client: &Client) {
        let mut requests = client.subscribe("echo.>").await.unwrap();
        client.flush().await.unwrap();
        let client = client.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    client.publish(reply, request.payload).await.ok();
                }
            }
        });
    }

    /// Sends `payload` on `subject` through `inbox` and waits for the reply.
    async fn call(inbox: &Inbox, subject: &str, payload: &'static str) -> Option<Message> {
        let mut waiter = inbox.wait().await.unwrap();
        inbox
            .client
            .publish_with_reply(subject.to_owned(), waiter.reply(), payload.into())
            .await
            .unwrap();
        waiter.answer().await
    }

    #[tokio::test]
    async fn each_call_gets_its_own_reply_and_leaves_the_table() {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        echo(&client).await;
        let inbox = Inbox::new(client, Counter::noop());
        let payloads = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let replies =
            futures::future::join_all(payloads.map(|payload| call(&inbox, "echo.x", payload)))
                .await;
        for (payload, reply) in payloads.iter().zip(replies) {
            assert_eq!(reply.unwrap().payload, payload.as_bytes());
        }
        assert_eq!(inbox.waiting(), 0);
    }

    #[tokio::test]
    async fn a_call_that_stops_waiting_leaves_the_table_and_its_late_reply_goes_to_nobody() {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        let mut quiet = client.subscribe("quiet").await.unwrap();
        client.flush().await.unwrap();
        echo(&client).await;
        let inbox = Inbox::new(client.clone(), Counter::noop());
        let waiter = inbox.wait().await.unwrap();
        client
            .publish_with_reply("quiet", waiter.reply(), "late".into())
            .await
            .unwrap();
        assert_eq!(inbox.waiting(), 1);
        drop(waiter);
        assert_eq!(inbox.waiting(), 0, "the cancelled call left the table");
        // Its reply comes after it left; the next call still gets its own.
        let request = quiet.next().await.unwrap();
        client
            .publish(request.reply.unwrap(), request.payload)
            .await
            .unwrap();
        let reply = call(&inbox, "echo.x", "mine").await.unwrap();
        assert_eq!(reply.payload, "mine".as_bytes());
        assert_eq!(inbox.waiting(), 0);
    }

    #[tokio::test]
    async fn waiting_calls_are_told_at_once_when_the_client_closes() {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        let _quiet = client.subscribe("quiet").await.unwrap();
        let inbox = Inbox::new(client.clone(), Counter::noop());
        let mut waiter = inbox.wait().await.unwrap();
        client
            .publish_with_reply("quiet", waiter.reply(), "x".into())
            .await
            .unwrap();
        client.drain().await.unwrap();
        assert!(waiter.answer().await.is_none(), "no reply will come");
        drop(waiter);
        assert_eq!(inbox.waiting(), 0);
    }

    #[tokio::test]
    async fn the_inbox_answers_again_after_a_reconnect() {
        let mut server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        let inbox = Inbox::new(client.clone(), Counter::noop());
        echo(&client).await;
        assert!(call(&inbox, "echo.x", "before").await.is_some());
        server.restart();
        // A request written before the client noticed the restart is lost, and that call gives up;
        // once the client is back, async-nats has subscribed the inbox (and the echo) again ahead
        // of anything sent after.
        eventually_within(
            "a call after the reconnect is answered",
            Duration::from_secs(30),
            || async {
                tokio::time::timeout(Duration::from_secs(1), call(&inbox, "echo.x", "after"))
                    .await
                    .ok()
                    .flatten()
            },
        )
        .await;
        assert_eq!(inbox.waiting(), 0);
    }
}
