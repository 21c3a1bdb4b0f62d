//! JetStream's advisories that a stream or a consumer was deleted, shared by every subscription of
//! one NATS connection: a pull request waiting on the server is dropped silently when its consumer
//! goes, so a subscription learns of the deletion from these advisories rather than at its next
//! pull.
//!
//! One subscription per advisory kind serves the whole connection (the first watch makes them),
//! and a table routes each advisory to the watches of that stream or consumer. A NATS subscription
//! per session and kind cost each idle session two Tokio channels of its own (about 6 KiB each);
//! a watch here costs a oneshot and an entry in the table. The table holds one entry per open
//! subscription, each removed when its [`Watch`] is dropped, so it is bounded by the sessions the
//! server admits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use futures::StreamExt;
use tokio::sync::{OnceCell, oneshot};

use crate::Error;

/// The advisory subjects: `<prefix><stream>` and `<prefix><stream>.<consumer>`.
const STREAM_DELETED: &str = "$JS.EVENT.ADVISORY.STREAM.DELETED.";
const CONSUMER_DELETED: &str = "$JS.EVENT.ADVISORY.CONSUMER.DELETED.";

/// The watches of one connection. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Deletions {
    client: async_nats::Client,
    /// Set once the advisory subscriptions are made and their task is running.
    subscribed: Arc<OnceCell<()>>,
    table: Arc<Mutex<Table>>,
}

/// Who waits for which deletion: by stream, then by consumer, then by watch id.
#[derive(Default)]
struct Table {
    next_id: u64,
    streams: HashMap<String, HashMap<String, HashMap<u64, oneshot::Sender<()>>>>,
}

impl Table {
    fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
        // Nothing in the table is left half-changed by a panic: every change is one insert or remove.
        table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells every watch of `stream` (of only `consumer` in it, when given) and forgets them.
    fn fire(&mut self, stream: &str, consumer: Option<&str>) {
        let senders: Vec<_> = match consumer {
            None => self
                .streams
                .remove(stream)
                .into_iter()
                .flat_map(HashMap::into_values)
                .flat_map(HashMap::into_values)
                .collect(),
            Some(consumer) => {
                let Some(consumers) = self.streams.get_mut(stream) else {
                    return;
                };
                let senders = consumers
                    .remove(consumer)
                    .into_iter()
                    .flat_map(HashMap::into_values)
                    .collect();
                if consumers.is_empty() {
                    self.streams.remove(stream);
                }
                senders
            }
        };
        for sender in senders {
            // The watch may be going away right now; then nobody needs telling.
            sender.send(()).ok();
        }
    }

    fn remove(&mut self, stream: &str, consumer: &str, id: u64) {
        let Some(consumers) = self.streams.get_mut(stream) else {
            return;
        };
        if let Some(watches) = consumers.get_mut(consumer) {
            watches.remove(&id);
            if watches.is_empty() {
                consumers.remove(consumer);
            }
        }
        if consumers.is_empty() {
            self.streams.remove(stream);
        }
    }
}

impl std::fmt::Debug for Deletions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deletions")
            .field("subscribed", &self.subscribed.initialized())
            .field("streams_watched", &Table::lock(&self.table).streams.len())
            .finish()
    }
}

impl Deletions {
    /// The watches of `client`'s connection; nothing is subscribed until the first [`Deletions::watch`].
    pub(crate) fn new(client: async_nats::Client) -> Deletions {
        Deletions {
            client,
            subscribed: Arc::new(OnceCell::new()),
            table: Arc::default(),
        }
    }

    /// Watches for the deletion of `consumer` or of its `stream`. Once this returns, the advisory
    /// subscriptions were sent to NATS ahead of anything the caller sends next on the connection,
    /// so a deletion after the caller's lookup of the consumer is not missed.
    pub(crate) async fn watch(&self, stream: &str, consumer: &str) -> Result<Watch, Error> {
        self.subscribed.get_or_try_init(|| self.subscribe()).await?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut table = Table::lock(&self.table);
            let id = table.next_id;
            table.next_id += 1;
            table
                .streams
                .entry(stream.to_owned())
                .or_default()
                .entry(consumer.to_owned())
                .or_default()
                .insert(id, tx);
            id
        };
        Ok(Watch {
            rx: Some(rx),
            fired: false,
            _entry: WatchKey {
                table: self.table.clone(),
                stream: stream.to_owned(),
                consumer: consumer.to_owned(),
                id,
            },
        })
    }

    /// Subscribes to both advisories and spawns the task that routes them. The task ends with the
    /// subscriptions (when the connection is drained or closed), or once no [`Deletions`] or
    /// [`Watch`] of this connection is left.
    async fn subscribe(&self) -> Result<(), Error> {
        let subscribe = |subject: String| async move {
            self.client.subscribe(subject).await.map_err(|err| {
                Error::unavailable(format!("subscribing to deletion advisories: {err}"))
            })
        };
        let streams = subscribe(format!("{STREAM_DELETED}*")).await?;
        let consumers = subscribe(format!("{CONSUMER_DELETED}*.*")).await?;
        let table = Arc::downgrade(&self.table);
        let mut advisories = futures::stream::select(streams, consumers);
        tokio::spawn(async move {
            while let Some(advisory) = advisories.next().await {
                let Some(table) = table.upgrade() else {
                    return;
                };
                let subject = advisory.subject.as_str();
                let mut table = Table::lock(&table);
                if let Some(stream) = subject.strip_prefix(STREAM_DELETED) {
                    table.fire(stream, None);
                } else if let Some((stream, consumer)) = subject
                    .strip_prefix(CONSUMER_DELETED)
                    .and_then(|rest| rest.split_once('.'))
                {
                    table.fire(stream, Some(consumer));
                }
            }
        });
        Ok(())
    }
}

/// One subscription's watch: resolves when its consumer or stream is deleted, and leaves the table
/// when dropped.
pub(crate) struct Watch {
    rx: Option<oneshot::Receiver<()>>,
    fired: bool,
    /// Held for its drop, which takes the watch out of the table.
    _entry: WatchKey,
}

/// Where a [`Watch`] is in the table; removes it on drop.
struct WatchKey {
    table: Arc<Mutex<Table>>,
    stream: String,
    consumer: String,
    id: u64,
}

impl Drop for WatchKey {
    fn drop(&mut self) {
        Table::lock(&self.table).remove(&self.stream, &self.consumer, self.id);
    }
}

impl Watch {
    /// Resolves once the consumer or its stream was deleted (at once, when it already was), and
    /// never if the advisories end first. Cancel-safe.
    pub(crate) async fn deleted(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            // Err: the sender went without a deletion (the routing task ended).
            self.fired = rx.await.is_ok();
            self.rx = None;
        }
        if !self.fired {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch entered straight into `table`, as [`Deletions::watch`] does after subscribing.
    fn watch(table: &Arc<Mutex<Table>>, stream: &str, consumer: &str) -> Watch {
        let (tx, rx) = oneshot::channel();
        let mut locked = Table::lock(table);
        let id = locked.next_id;
        locked.next_id += 1;
        locked
            .streams
            .entry(stream.into())
            .or_default()
            .entry(consumer.into())
            .or_default()
            .insert(id, tx);
        Watch {
            rx: Some(rx),
            fired: false,
            _entry: WatchKey {
                table: table.clone(),
                stream: stream.into(),
                consumer: consumer.into(),
                id,
            },
        }
    }

    fn fired(watch: &mut Watch) -> bool {
        futures::FutureExt::now_or_never(watch.deleted()).is_some()
    }

    #[test]
    fn an_advisory_reaches_the_watches_of_its_consumer_or_stream_only() {
        let table = Arc::new(Mutex::new(Table::default()));
        let (mut a1, mut a2) = (watch(&table, "s", "a"), watch(&table, "s", "a"));
        let mut b = watch(&table, "s", "b");
        let mut other = watch(&table, "t", "a");

        Table::lock(&table).fire("s", Some("a"));
        assert!(
            fired(&mut a1) && fired(&mut a2),
            "both sessions of consumer a end"
        );
        assert!(
            !fired(&mut b) && !fired(&mut other),
            "other consumers carry on"
        );
        assert!(fired(&mut a1), "a fired watch stays fired");

        Table::lock(&table).fire("s", None);
        assert!(
            fired(&mut b),
            "the stream's deletion ends every consumer in it"
        );
        assert!(!fired(&mut other), "a stream of another name carries on");
    }

    #[test]
    fn a_dropped_watch_leaves_the_table() {
        let table = Arc::new(Mutex::new(Table::default()));
        let watches: Vec<_> = (0..3)
            .map(|i| watch(&table, "s", &format!("c{}", i % 2)))
            .chain([watch(&table, "t", "c")])
            .collect();
        assert_eq!(Table::lock(&table).streams.len(), 2);
        drop(watches);
        assert!(
            Table::lock(&table).streams.is_empty(),
            "nothing is left behind"
        );
        // An advisory for a stream nobody watches is ignored.
        Table::lock(&table).fire("s", Some("c0"));
        assert!(Table::lock(&table).streams.is_empty());
    }
}
