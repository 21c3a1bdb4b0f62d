//! Key-value state: a [`Store`] reads and writes protobuf values by key, with compare-and-set on
//! revisions, and [`Store::watch`] streams changes.
//!
//! A key is dot-separated tokens (`app.color`); a value is any protobuf message, stored as a
//! `google.protobuf.Any`. Every write returns the key's new revision, which [`Store::update`] and
//! [`Store::delete_if_revision`] take for optimistic concurrency.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::SystemTime,
};

use futures::Stream;
use jetway_api::{
    google::protobuf::Any,
    jetway::state::v1::{Operation as PbOperation, WatchRequest, watch_request::Start},
    windshift::state::v1alpha1::{DeleteRequest, EnsureStoreRequest, GetRequest, SetRequest},
};

use crate::{Client, DecodeError, Error, error::decode_any};

/// A key-value store, from [`Client::store`].
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    name: String,
}

impl Store {
    /// Store `name`, reached through `client`.
    pub(crate) fn new(client: Client, name: String) -> Self {
        Store { client, name }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the store with the defaults (one revision per key, file storage, no TTL) if it
    /// does not exist. An existing store is left as it is.
    pub async fn ensure(&self) -> Result<(), Error> {
        let request = EnsureStoreRequest {
            store: self.name.clone(),
        };
        self.client
            .state
            .clone()
            .ensure_store(self.client.unary(request))
            .await?;
        Ok(())
    }

    /// The latest value of `key`. A key that was never written, or was deleted, is NOT_FOUND (see
    /// [`Error::is_not_found`]).
    ///
    /// ```no_run
    /// use jetway_api::windshift::test::v1::StringValue;
    /// # async fn run(client: jetway_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = client.store("config");
    /// match store.get("app.color").await {
    ///     Ok(entry) => println!("{} at revision {}", entry.decode::<StringValue>()?.value, entry.revision()),
    ///     Err(e) if e.is_not_found() => println!("not set"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, key: &str) -> Result<Entry, Error> {
        let request = GetRequest {
            store: self.name.clone(),
            key: key.to_owned(),
        };
        let response = self
            .client
            .state
            .clone()
            .get(self.client.unary(request))
            .await?
            .into_inner();
        let value = response
            .value
            .ok_or_else(|| Error::Protocol(format!("Get of {key} answered without a value")))?;
        Ok(Entry {
            revision: response.revision,
            last_updated: response
                .last_updated
                .and_then(|t| SystemTime::try_from(&t).ok()),
            value,
        })
    }

    /// Stores `value` under `key`, whatever is there, and returns the new revision.
    pub async fn set<M: prost::Name>(&self, key: &str, value: &M) -> Result<u64, Error> {
        self.write(key, value, None, None).await
    }

    /// Stores `value` only if `key` has no value (it was never written or was deleted), and
    /// returns the revision. Otherwise ALREADY_EXISTS, and nothing is written.
    pub async fn create<M: prost::Name>(&self, key: &str, value: &M) -> Result<u64, Error> {
        self.write(key, value, Some(true), None).await
    }

    /// Compare-and-set: stores `value` only if `revision` is the key's latest revision (0: never
    /// written), and returns the new revision. Otherwise FAILED_PRECONDITION, and nothing is
    /// written. Of two concurrent updates from the same revision, exactly one succeeds.
    ///
    /// ```no_run
    /// use jetway_api::windshift::test::v1::StringValue;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let store = client.store("config");
    /// let revision = store.set("app.color", &StringValue { value: "blue".into() }).await?;
    /// store.update("app.color", &StringValue { value: "green".into() }, revision).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update<M: prost::Name>(
        &self,
        key: &str,
        value: &M,
        revision: u64,
    ) -> Result<u64, Error> {
        self.write(key, value, None, Some(revision)).await
    }

    async fn write<M: prost::Name>(
        &self,
        key: &str,
        value: &M,
        create_only: Option<bool>,
        last_revision: Option<u64>,
    ) -> Result<u64, Error> {
        let request = SetRequest {
            store: self.name.clone(),
            key: key.to_owned(),
            value: Some(Any::pack(value)),
            create_only,
            last_revision,
        };
        let response = self
            .client
            .state
            .clone()
            .set(self.client.unary(request))
            .await?;
        Ok(response.into_inner().revision)
    }

    /// Deletes `key` (writes a delete marker). Deleting a key without a value succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.remove(key, None).await
    }

    /// Deletes `key` only if `revision` is its latest revision; otherwise FAILED_PRECONDITION.
    pub async fn delete_if_revision(&self, key: &str, revision: u64) -> Result<(), Error> {
        self.remove(key, Some(revision)).await
    }

    async fn remove(&self, key: &str, last_revision: Option<u64>) -> Result<(), Error> {
        let request = DeleteRequest {
            store: self.name.clone(),
            key: key.to_owned(),
            last_revision,
        };
        self.client
            .state
            .clone()
            .delete(self.client.unary(request))
            .await?;
        Ok(())
    }

    /// Streams the entries of the keys matching `pattern` (`*` matches one token, a last `>` the
    /// rest, empty means every key), in revision order, until the [`Watch`] is dropped.
    ///
    /// A watch does not reconnect: after an error, watch again with
    /// [`WatchStart::AfterRevision`] and the last revision received, which repeats nothing and
    /// misses nothing still stored.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use jetway_client::WatchStart;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let mut changes = client.store("config").watch("app.>", WatchStart::Latest).await?;
    /// while let Some(entry) = changes.next().await {
    ///     let entry = entry?;
    ///     println!("{} is now at revision {}", entry.key(), entry.revision());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch(&self, pattern: &str, start: WatchStart) -> Result<Watch, Error> {
        let start = match start {
            WatchStart::Latest => None,
            WatchStart::AllHistory => Some(Start::IncludeHistory(true)),
            WatchStart::UpdatesOnly => Some(Start::UpdatesOnly(true)),
            WatchStart::AfterRevision(revision) => Some(Start::AfterRevision(revision)),
        };
        let request = WatchRequest {
            store: self.name.clone(),
            key: pattern.to_owned(),
            start,
        };
        // No deadline: a watch runs until the caller drops it.
        let inner = self
            .client
            .state_ext
            .clone()
            .watch(tonic::Request::new(request))
            .await?
            .into_inner();
        Ok(Watch { inner })
    }
}

/// The value of a key, from [`Store::get`].
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    revision: u64,
    last_updated: Option<SystemTime>,
    value: Any,
}

impl Entry {
    /// The revision of this value: pass it to [`Store::update`] for compare-and-set.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When this value was written.
    pub fn last_updated(&self) -> Option<SystemTime> {
        self.last_updated
    }

    /// The value as stored.
    pub fn value(&self) -> &Any {
        &self.value
    }

    /// The value decoded as `M`; fails if it holds another type.
    pub fn decode<M: prost::Name + Default>(&self) -> Result<M, DecodeError> {
        decode_any(&self.value)
    }
}

/// Where a [`Store::watch`] starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WatchStart {
    /// The latest entry of each matching key, then changes.
    #[default]
    Latest,
    /// Every stored revision of each matching key, then changes.
    AllHistory,
    /// Only changes from now on.
    UpdatesOnly,
    /// The entries after this revision, then changes: the way to resume a watch.
    AfterRevision(u64),
}

/// What a watched change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A value was written.
    Put,
    /// The key was deleted.
    Delete,
    /// The key and its history were purged.
    Purge,
}

/// One change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEntry {
    key: String,
    revision: u64,
    operation: Operation,
    time: Option<SystemTime>,
    value: Option<Any>,
}

impl WatchEntry {
    /// The key that changed.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The revision of the change; resume after it with [`WatchStart::AfterRevision`].
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// What the change did.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// When the change was written.
    pub fn time(&self) -> Option<SystemTime> {
        self.time
    }

    /// The value written, for [`Operation::Put`].
    pub fn value(&self) -> Option<&Any> {
        self.value.as_ref()
    }

    /// The value written, decoded as `M`; `None` for a delete or purge.
    pub fn decode<M: prost::Name + Default>(&self) -> Option<Result<M, DecodeError>> {
        self.value.as_ref().map(decode_any)
    }
}

/// The changes of a [`Store::watch`]: a stream of entries that ends with an error (e.g. NOT_FOUND
/// when the store is deleted, UNAVAILABLE when the server shuts down) or never.
pub struct Watch {
    inner: tonic::Streaming<jetway_api::jetway::state::v1::WatchResponse>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Stream for Watch {
    type Item = Result<WatchEntry, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = match futures::ready!(Pin::new(&mut self.inner).poll_next(cx)) {
            None => None,
            Some(Err(status)) => Some(Err(status.into())),
            Some(Ok(response)) => Some(watch_entry(response.entry)),
        };
        Poll::Ready(item)
    }
}

fn watch_entry(entry: Option<jetway_api::jetway::state::v1::Entry>) -> Result<WatchEntry, Error> {
    let entry = entry.ok_or_else(|| Error::Protocol("a Watch answer without an entry".into()))?;
    let operation = match PbOperation::try_from(entry.operation) {
        Ok(PbOperation::Put) => Operation::Put,
        Ok(PbOperation::Delete) => Operation::Delete,
        Ok(PbOperation::Purge) => Operation::Purge,
        _ => {
            return Err(Error::Protocol(format!(
                "a Watch entry with operation {}",
                entry.operation
            )));
        }
    };
    Ok(WatchEntry {
        key: entry.key,
        revision: entry.revision,
        operation,
        time: entry.time.and_then(|t| SystemTime::try_from(&t).ok()),
        value: entry.value,
    })
}
