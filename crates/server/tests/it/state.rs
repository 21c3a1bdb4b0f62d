//! Key-value stores: `windshift.state.v1alpha1.StateService` (EnsureStore, Get, Set, Delete) and
//! `jetway.state.v1.StateService` (EnsureStore with options, Watch, Keys, History), against a real
//! nats-server. CAS races run the two writers concurrently, many rounds, and assert that exactly one
//! wins each round.

use std::{collections::BTreeSet, future::IntoFuture, pin::Pin, time::Duration};

use async_nats::jetstream::stream::StorageType;
use futures::TryStreamExt;
use jetway_api::{
    google::protobuf::{Any, Duration as PbDuration},
    jetway::state::v1::{
        self as ext, Operation, StorageType as ExtStorage,
        state_service_client::StateServiceClient as ExtClient, watch_request::Start,
    },
    windshift::{
        state::v1alpha1::{self as ws, state_service_client::StateServiceClient as WsClient},
        test::v1::StringValue,
    },
};
use jetway_testkit::eventually;
use prost::Message;
use tonic::{Code, Status, Streaming, transport::Channel};

use crate::harness::{Env, RECV_GUARD, assert_status};

/// Both state clients on one environment's Jetway.
struct Kv {
    env: Env,
    ws: WsClient<Channel>,
    ext: ExtClient<Channel>,
}

impl Kv {
    async fn start() -> Kv {
        let env = Env::start().await;
        let channel = env.jetway.channel().await;
        Kv {
            env,
            ws: WsClient::new(channel.clone()),
            ext: ExtClient::new(channel),
        }
    }

    /// A store with the Windshift defaults.
    async fn store(&mut self, store: &str) {
        self.ws
            .ensure_store(ws::EnsureStoreRequest {
                store: store.into(),
            })
            .await
            .expect("ensure store");
    }

    /// A store that keeps `history` revisions per key.
    async fn store_with_history(&mut self, store: &str, history: u32) {
        self.ext
            .ensure_store(ext::EnsureStoreRequest {
                store: store.into(),
                history: Some(history),
                ..Default::default()
            })
            .await
            .expect("ensure store with options");
    }

    /// A Set of `key` to `value` in `store` (see [`Setting`]).
    fn try_set(&mut self, store: &str, key: &str, value: &str) -> Setting<'_> {
        Setting {
            ws: &mut self.ws,
            request: set_request(store, key, value),
        }
    }

    async fn set(&mut self, store: &str, key: &str, value: &str) -> u64 {
        self.try_set(store, key, value).await.expect("set")
    }

    async fn try_get(&mut self, store: &str, key: &str) -> Result<ws::GetResponse, Status> {
        self.ws
            .get(ws::GetRequest {
                store: store.into(),
                key: key.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The key's current value and revision.
    async fn get(&mut self, store: &str, key: &str) -> (String, u64) {
        let response = self.try_get(store, key).await.expect("get");
        (
            text_of(response.value.as_ref().expect("a value")),
            response.revision,
        )
    }

    /// A Delete of `key` in `store` (see [`Deleting`]).
    fn try_delete(&mut self, store: &str, key: &str) -> Deleting<'_> {
        Deleting {
            ws: &mut self.ws,
            request: ws::DeleteRequest {
                store: store.into(),
                key: key.into(),
                last_revision: None,
            },
        }
    }

    /// A watch of the keys matching `key` in `store` (see [`Watching`]).
    fn watch(&mut self, store: &str, key: &str) -> Watching<'_> {
        Watching {
            ext: &mut self.ext,
            request: ext::WatchRequest {
                store: store.into(),
                key: key.into(),
                start: None,
            },
        }
    }

    async fn keys(&mut self, store: &str, filter: &str) -> BTreeSet<String> {
        let responses: Vec<ext::KeysResponse> = self
            .ext
            .keys(ext::KeysRequest {
                store: store.into(),
                filter: filter.into(),
            })
            .await
            .expect("keys")
            .into_inner()
            .try_collect()
            .await
            .expect("the keys stream ends cleanly");
        responses.into_iter().flat_map(|r| r.keys).collect()
    }

    async fn try_history(&mut self, store: &str, key: &str) -> Result<Vec<ext::Entry>, Status> {
        let responses: Vec<ext::HistoryResponse> = self
            .ext
            .history(ext::HistoryRequest {
                store: store.into(),
                key: key.into(),
            })
            .await?
            .into_inner()
            .try_collect()
            .await?;
        Ok(responses
            .into_iter()
            .map(|r| r.entry.expect("an entry"))
            .collect())
    }

    /// The stream configuration JetStream holds for a store's bucket.
    async fn bucket_config(&self, store: &str) -> async_nats::jetstream::stream::Config {
        self.env
            .js
            .get_stream(format!("KV_{store}"))
            .await
            .expect("the bucket's stream exists")
            .cached_info()
            .config
            .clone()
    }
}

/// One Watch seen from the client.
struct Watch {
    entries: Streaming<ext::WatchResponse>,
}

impl Watch {
    /// The next entry, or the status the stream ended with.
    async fn try_next(&mut self) -> Result<ext::Entry, Status> {
        let message = tokio::time::timeout(RECV_GUARD, self.entries.message())
            .await
            .expect("a watch entry within the guard time")?
            .expect("the watch stream does not end by itself");
        Ok(message.entry.expect("an entry"))
    }

    async fn next(&mut self) -> ext::Entry {
        self.try_next().await.expect("a watch entry")
    }
}

fn text(value: &str) -> Any {
    Any::pack(&StringValue {
        value: value.into(),
    })
}

fn text_of(any: &Any) -> String {
    any.unpack::<StringValue>()
        .expect("a StringValue")
        .expect("decodes")
        .value
}

/// An unconditional Set of `key` to `value` in `store`; the [`SetFixture`] steps add conditions.
pub(crate) fn set_request(store: &str, key: &str, value: &str) -> ws::SetRequest {
    ws::SetRequest {
        store: store.into(),
        key: key.into(),
        value: Some(text(value)),
        create_only: None,
        last_revision: None,
    }
}

/// The steps of the [`set_request`] fixture, each setting one field.
trait SetFixture {
    /// Sets `create_only` (`false` is sent as such, not left out).
    fn create_only(self, create_only: bool) -> Self;
    /// Only if the key is at `revision` (0: only if it does not exist).
    fn last_revision(self, revision: u64) -> Self;
}

impl SetFixture for ws::SetRequest {
    fn create_only(mut self, create_only: bool) -> Self {
        self.create_only = Some(create_only);
        self
    }

    fn last_revision(mut self, revision: u64) -> Self {
        self.last_revision = Some(revision);
        self
    }
}

/// A Set through a [`Kv`]'s Windshift client: unconditional unless a step says otherwise.
/// Awaiting it returns the new revision or the call's status.
#[must_use = "nothing is sent until it is awaited"]
struct Setting<'a> {
    ws: &'a mut WsClient<Channel>,
    request: ws::SetRequest,
}

impl Setting<'_> {
    /// See [`SetFixture::create_only`].
    fn create_only(mut self, create_only: bool) -> Self {
        self.request = self.request.create_only(create_only);
        self
    }

    /// See [`SetFixture::last_revision`].
    fn last_revision(mut self, revision: u64) -> Self {
        self.request = self.request.last_revision(revision);
        self
    }
}

impl<'a> IntoFuture for Setting<'a> {
    type Output = Result<u64, Status>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.ws
                .set(self.request)
                .await
                .map(|r| r.into_inner().revision)
        })
    }
}

/// A Delete through a [`Kv`]'s Windshift client: unconditional unless
/// [`Deleting::last_revision`] says otherwise. Awaiting it returns the call's result.
#[must_use = "nothing is sent until it is awaited"]
struct Deleting<'a> {
    ws: &'a mut WsClient<Channel>,
    request: ws::DeleteRequest,
}

impl Deleting<'_> {
    /// Only if the key is at `revision`.
    fn last_revision(mut self, revision: u64) -> Self {
        self.request.last_revision = Some(revision);
        self
    }
}

impl<'a> IntoFuture for Deleting<'a> {
    type Output = Result<(), Status>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.ws.delete(self.request).await.map(drop) })
    }
}

/// A watch through a [`Kv`]'s Jetway client, starting where the server starts one unless
/// [`Watching::start`] says otherwise. Awaiting it opens the watch.
#[must_use = "nothing is sent until it is awaited"]
struct Watching<'a> {
    ext: &'a mut ExtClient<Channel>,
    request: ext::WatchRequest,
}

impl Watching<'_> {
    /// Starts at `start`.
    fn start(mut self, start: Start) -> Self {
        self.request.start = Some(start);
        self
    }
}

impl<'a> IntoFuture for Watching<'a> {
    type Output = Watch;
    type IntoFuture = Pin<Box<dyn Future<Output = Watch> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let entries = self
                .ext
                .watch(self.request)
                .await
                .expect("open watch")
                .into_inner();
            Watch { entries }
        })
    }
}

/// The key, operation and value of an entry, for comparing sequences.
fn summary(entry: &ext::Entry) -> (String, Operation, Option<String>) {
    (
        entry.key.clone(),
        entry.operation(),
        entry.value.as_ref().map(text_of),
    )
}

fn put(key: &str, value: &str) -> (String, Operation, Option<String>) {
    (key.into(), Operation::Put, Some(value.into()))
}

fn deleted(key: &str) -> (String, Operation, Option<String>) {
    (key.into(), Operation::Delete, None)
}

#[tokio::test]
async fn get_set_delete_round_trip_with_revisions() {
    let mut kv = Kv::start().await;
    kv.store("config").await;
    // Ensuring an existing store again is a no-op.
    kv.store("config").await;

    let first = kv.set("config", "app.color", "blue").await;
    let response = kv.try_get("config", "app.color").await.unwrap();
    assert_eq!(response.revision, first);
    assert_eq!(text_of(response.value.as_ref().unwrap()), "blue");
    assert!(response.last_updated.is_some());

    let second = kv.set("config", "app.color", "red").await;
    assert!(second > first);
    assert_eq!(kv.get("config", "app.color").await, ("red".into(), second));

    kv.try_delete("config", "app.color").await.unwrap();
    assert_status(
        kv.try_get("config", "app.color").await,
        Code::NotFound,
        "app.color",
    );
    let third = kv.set("config", "app.color", "green").await;
    assert!(third > second + 1, "the delete marker took a revision");
    assert_eq!(kv.get("config", "app.color").await, ("green".into(), third));

    // Never written, and deleting a missing key succeeds.
    assert_status(kv.try_get("config", "other").await, Code::NotFound, "other");
    kv.try_delete("config", "other").await.unwrap();
    assert_status(kv.try_get("config", "other").await, Code::NotFound, "other");
}

#[tokio::test]
async fn values_are_the_whole_serialized_any_shared_with_nats_clients() {
    let mut kv = Kv::start().await;
    kv.store("shared").await;
    kv.set("shared", "by.jetway", "hello").await;
    let bucket = kv.env.js.get_key_value("shared").await.unwrap();
    let stored = bucket.get("by.jetway").await.unwrap().expect("stored");
    assert_eq!(Any::decode(stored).unwrap(), text("hello"));

    // A NATS key-value client writes a serialized Any; keys may use '/' and '='.
    bucket
        .put("by/nats=1", text("from nats").encode_to_vec().into())
        .await
        .unwrap();
    assert_eq!(kv.get("shared", "by/nats=1").await.0, "from nats");

    // Bytes that are no Any cannot be served as one.
    bucket
        .put("corrupt", bytes::Bytes::from_static(b"\xff\xff\xff"))
        .await
        .unwrap();
    assert_status(
        kv.try_get("shared", "corrupt").await,
        Code::DataLoss,
        "corrupt",
    );
}

#[tokio::test]
async fn a_bucket_without_direct_gets_is_read_from_its_leader() {
    let mut kv = Kv::start().await;
    // Made by another NATS client with direct gets off: nobody answers a direct get for it.
    kv.env
        .js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "KV_legacy".into(),
            subjects: vec!["$KV.legacy.>".into()],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: false,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!kv.bucket_config("legacy").await.allow_direct);
    let revision = kv.set("legacy", "k", "v1").await;
    assert_eq!(kv.get("legacy", "k").await, ("v1".into(), revision));
    assert_status(
        kv.try_get("legacy", "missing").await,
        Code::NotFound,
        "missing",
    );
}

#[tokio::test]
async fn last_revision_is_compare_and_set() {
    let mut kv = Kv::start().await;
    kv.store("s").await;
    // 0 on a missing key creates it; any other revision fails and writes nothing.
    assert_status(
        kv.try_set("s", "fresh", "x").last_revision(1).await,
        Code::FailedPrecondition,
        "last_revision 1",
    );
    assert_status(kv.try_get("s", "fresh").await, Code::NotFound, "fresh");
    let created = kv
        .try_set("s", "fresh", "a")
        .last_revision(0)
        .await
        .unwrap();

    let updated = kv
        .try_set("s", "fresh", "b")
        .last_revision(created)
        .await
        .unwrap();
    assert_status(
        kv.try_set("s", "fresh", "c").last_revision(created).await,
        Code::FailedPrecondition,
        "fresh",
    );
    assert_status(
        kv.try_set("s", "fresh", "c").last_revision(0).await,
        Code::FailedPrecondition,
        "fresh",
    );
    assert_eq!(kv.get("s", "fresh").await, ("b".into(), updated));

    // Delete with a stale revision keeps the value; with the current one it deletes.
    assert_status(
        kv.try_delete("s", "fresh").last_revision(created).await,
        Code::FailedPrecondition,
        "fresh",
    );
    assert_eq!(kv.get("s", "fresh").await, ("b".into(), updated));
    kv.try_delete("s", "fresh")
        .last_revision(updated)
        .await
        .unwrap();
    assert_status(kv.try_get("s", "fresh").await, Code::NotFound, "fresh");
}

#[tokio::test]
async fn create_only_fails_on_an_existing_key_and_recreates_a_deleted_one() {
    let mut kv = Kv::start().await;
    kv.store("s").await;
    let first = kv.try_set("s", "k", "a").create_only(true).await.unwrap();
    assert_status(
        kv.try_set("s", "k", "b").create_only(true).await,
        Code::AlreadyExists,
        "k",
    );
    // create_only wins over last_revision.
    assert_status(
        kv.try_set("s", "k", "b")
            .create_only(true)
            .last_revision(first)
            .await,
        Code::AlreadyExists,
        "k",
    );
    assert_eq!(kv.get("s", "k").await, ("a".into(), first));
    kv.try_delete("s", "k").await.unwrap();
    let again = kv.try_set("s", "k", "c").create_only(true).await.unwrap();
    assert_eq!(kv.get("s", "k").await, ("c".into(), again));
    // create_only false is a plain set.
    let plain = kv.try_set("s", "k", "d").create_only(false).await.unwrap();
    assert_eq!(kv.get("s", "k").await, ("d".into(), plain));
}

#[tokio::test]
async fn concurrent_writers_with_the_same_last_revision_exactly_one_wins() {
    let mut kv = Kv::start().await;
    kv.store("race").await;
    let mut revision = kv.set("race", "counter", "start").await;
    for round in 0..20 {
        let (mut a, mut b) = (kv.ws.clone(), kv.ws.clone());
        let (left, right) = tokio::join!(
            a.set(set_request("race", "counter", &format!("a{round}")).last_revision(revision)),
            b.set(set_request("race", "counter", &format!("b{round}")).last_revision(revision)),
        );
        let (winner, loser) = match (left, right) {
            (Ok(won), Err(lost)) => ((format!("a{round}"), won.into_inner().revision), lost),
            (Err(lost), Ok(won)) => ((format!("b{round}"), won.into_inner().revision), lost),
            other => panic!("round {round}: exactly one writer must win, got {other:?}"),
        };
        assert_eq!(loser.code(), Code::FailedPrecondition, "{loser:?}");
        assert_eq!(kv.get("race", "counter").await, winner);
        revision = winner.1;
    }
}

#[tokio::test]
async fn concurrent_create_only_exactly_one_wins() {
    let mut kv = Kv::start().await;
    kv.store("race").await;
    for round in 0..20 {
        let key = format!("k{}", round % 5);
        // Rounds 5.. create keys that were deleted, which takes the delete marker's revision.
        if round >= 5 {
            kv.try_delete("race", &key).await.unwrap();
        }
        let (mut a, mut b) = (kv.ws.clone(), kv.ws.clone());
        let (left, right) = tokio::join!(
            a.set(set_request("race", &key, "a").create_only(true)),
            b.set(set_request("race", &key, "b").create_only(true)),
        );
        let (winner, loser) = match (left, right) {
            (Ok(won), Err(lost)) => (("a".to_owned(), won.into_inner().revision), lost),
            (Err(lost), Ok(won)) => (("b".to_owned(), won.into_inner().revision), lost),
            other => panic!("round {round}: exactly one create must win, got {other:?}"),
        };
        assert_eq!(loser.code(), Code::AlreadyExists, "{loser:?}");
        assert_eq!(kv.get("race", &key).await, winner);
    }
}

#[tokio::test]
async fn a_deleted_key_is_not_found_and_its_history_shows_the_delete() {
    let mut kv = Kv::start().await;
    kv.store_with_history("h", 10).await;
    let one = kv.set("h", "k", "v1").await;
    let two = kv.set("h", "k", "v2").await;
    kv.try_delete("h", "k").await.unwrap();
    assert_status(kv.try_get("h", "k").await, Code::NotFound, "k");

    let history = kv.try_history("h", "k").await.unwrap();
    let summaries: Vec<_> = history.iter().map(summary).collect();
    assert_eq!(
        summaries,
        vec![put("k", "v1"), put("k", "v2"), deleted("k")]
    );
    let revisions: Vec<u64> = history.iter().map(|e| e.revision).collect();
    assert_eq!(revisions[..2], [one, two]);
    assert!(revisions[2] > two);
    assert!(history.iter().all(|e| e.time.is_some()));

    // The Windshift default keeps one revision per key: only the delete marker is left.
    kv.store("short").await;
    kv.set("short", "k", "v1").await;
    kv.try_delete("short", "k").await.unwrap();
    let history = kv.try_history("short", "k").await.unwrap();
    assert_eq!(
        history.iter().map(summary).collect::<Vec<_>>(),
        vec![deleted("k")]
    );

    assert_status(kv.try_history("h", "never").await, Code::NotFound, "never");
}

#[tokio::test]
async fn watch_sees_a_concurrent_writers_updates_in_order() {
    let mut kv = Kv::start().await;
    kv.store("w").await;
    // Once the call returns, the watch is in place: nothing written after it is missed.
    let mut watch = kv
        .watch("w", "users.>")
        .start(Start::UpdatesOnly(true))
        .await;
    let mut writer = kv.ws.clone();
    let writes = tokio::spawn(async move {
        let mut revisions = Vec::new();
        for i in 0..20 {
            let key = format!("users.{}", i % 3);
            let response = writer
                .set(set_request("w", &key, &format!("v{i}")))
                .await
                .expect("set");
            revisions.push((key, format!("v{i}"), response.into_inner().revision));
            // A key the watch does not match.
            writer
                .set(set_request("w", "orders.1", "ignored"))
                .await
                .expect("set");
        }
        writer
            .delete(ws::DeleteRequest {
                store: "w".into(),
                key: "users.0".into(),
                last_revision: None,
            })
            .await
            .expect("delete");
        revisions
    });
    let mut seen = Vec::new();
    for _ in 0..20 {
        let entry = watch.next().await;
        seen.push((
            entry.key.clone(),
            text_of(entry.value.as_ref().unwrap()),
            entry.revision,
        ));
    }
    assert_eq!(seen, writes.await.unwrap());
    let last = watch.next().await;
    assert_eq!(summary(&last), deleted("users.0"));
    assert!(last.revision > seen.last().unwrap().2);
}

#[tokio::test]
async fn watch_starts_at_the_current_values_or_the_whole_history() {
    let mut kv = Kv::start().await;
    kv.store_with_history("w", 5).await;
    kv.set("w", "a", "a1").await;
    kv.set("w", "a", "a2").await;
    kv.set("w", "b", "b1").await;
    kv.try_delete("w", "b").await.unwrap();

    // The default: the latest entry of each key (a delete marker too), then changes.
    let mut current = kv.watch("w", "").await;
    assert_eq!(summary(&current.next().await), put("a", "a2"));
    assert_eq!(summary(&current.next().await), deleted("b"));
    // `false` flags mean the same as no start at all.
    let mut also_current = kv.watch("w", "*").start(Start::IncludeHistory(false)).await;
    assert_eq!(summary(&also_current.next().await), put("a", "a2"));
    assert_eq!(summary(&also_current.next().await), deleted("b"));

    let mut history = kv.watch("w", ">").start(Start::IncludeHistory(true)).await;
    for expected in [put("a", "a1"), put("a", "a2"), put("b", "b1"), deleted("b")] {
        assert_eq!(summary(&history.next().await), expected);
    }

    kv.set("w", "c", "c1").await;
    assert_eq!(summary(&current.next().await), put("c", "c1"));
    assert_eq!(summary(&also_current.next().await), put("c", "c1"));
    assert_eq!(summary(&history.next().await), put("c", "c1"));
}

#[tokio::test]
async fn watch_resumes_after_the_last_revision_seen() {
    let mut kv = Kv::start().await;
    kv.store_with_history("w", 10).await;
    let mut watch = kv.watch("w", "k.*").await;
    let mut revisions = Vec::new();
    for i in 1..=3 {
        revisions.push(kv.set("w", "k.1", &format!("v{i}")).await);
    }
    let mut last_seen = 0;
    for revision in &revisions {
        let entry = watch.next().await;
        assert_eq!(entry.revision, *revision);
        last_seen = entry.revision;
    }
    // The client goes away; writes go on; it comes back with the last revision it saw.
    drop(watch);
    let missed = [
        kv.set("w", "k.1", "v4").await,
        kv.set("w", "k.2", "other").await,
    ];
    let mut resumed = kv
        .watch("w", "k.*")
        .start(Start::AfterRevision(last_seen))
        .await;
    assert_eq!(summary(&resumed.next().await), put("k.1", "v4"));
    assert_eq!(summary(&resumed.next().await), put("k.2", "other"));
    let later = kv.set("w", "k.1", "v5").await;
    let entry = resumed.next().await;
    assert_eq!((summary(&entry), entry.revision), (put("k.1", "v5"), later));
    assert!(missed[0] > last_seen);

    // Resuming after revision 0 replays everything still stored.
    let mut from_zero = kv.watch("w", "k.*").start(Start::AfterRevision(0)).await;
    assert_eq!(from_zero.next().await.revision, revisions[0]);
}

#[tokio::test]
async fn a_watch_stops_when_the_client_leaves_and_ends_at_shutdown() {
    let mut kv = Kv::start().await;
    kv.store("w").await;
    let stream = kv.env.js.get_stream("KV_w").await.unwrap();
    let bound = || async {
        let consumers: Vec<_> = stream.consumers().try_collect().await.unwrap();
        consumers.iter().filter(|c| c.push_bound).count()
    };
    let watch = kv.watch("w", ">").await;
    eventually("the watch's consumer is bound", || async {
        (bound().await == 1).then_some(())
    })
    .await;
    drop(watch);
    eventually("the watch's consumer is released", || async {
        (bound().await == 0).then_some(())
    })
    .await;

    let mut watch = kv.watch("w", ">").await;
    kv.env.jetway.begin_shutdown();
    let status = watch.try_next().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("after_revision"), "{status:?}");
}

#[tokio::test]
async fn a_watch_ends_with_not_found_when_its_store_is_deleted() {
    let mut kv = Kv::start().await;
    kv.store("doomed").await;
    let mut watch = kv.watch("doomed", ">").await;
    kv.env.js.delete_key_value("doomed").await.unwrap();
    // The watch notices through the consumer's missing heartbeats, which takes 10 to 15 s.
    let status = tokio::time::timeout(Duration::from_secs(30), watch.entries.message())
        .await
        .expect("the watch ends")
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("doomed"), "{status:?}");
}

#[tokio::test]
async fn keys_lists_current_keys_with_and_without_a_filter() {
    let mut kv = Kv::start().await;
    kv.store("k").await;
    assert!(kv.keys("k", "").await.is_empty());
    for key in ["users.1", "users.2", "users.3.name", "orders.1", "gone"] {
        kv.set("k", key, "x").await;
    }
    kv.try_delete("k", "gone").await.unwrap();
    let set = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        kv.keys("k", "").await,
        set(&["users.1", "users.2", "users.3.name", "orders.1"])
    );
    assert_eq!(kv.keys("k", "users.*").await, set(&["users.1", "users.2"]));
    assert_eq!(
        kv.keys("k", "users.>").await,
        set(&["users.1", "users.2", "users.3.name"])
    );
    assert_eq!(kv.keys("k", "*.1").await, set(&["users.1", "orders.1"]));
    assert_eq!(kv.keys("k", "orders.1").await, set(&["orders.1"]));
    assert!(kv.keys("k", "nothing.*").await.is_empty());

    // More keys than one response holds arrive in several, each once.
    for i in 0..600 {
        kv.set("k", &format!("many.{i}"), "x").await;
    }
    assert_eq!(kv.keys("k", "many.*").await.len(), 600);
}

#[tokio::test]
async fn store_options_are_applied_to_the_bucket() {
    let mut kv = Kv::start().await;
    let created = kv
        .ext
        .ensure_store(ext::EnsureStoreRequest {
            store: "opts".into(),
            ttl: Some(PbDuration {
                seconds: 60,
                nanos: 0,
            }),
            history: Some(5),
            max_value_size: Some(4096),
            storage: Some(ExtStorage::Memory.into()),
            replicas: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let config = kv.bucket_config("opts").await;
    assert_eq!(config.max_age, Duration::from_secs(60));
    assert_eq!(config.duplicate_window, Duration::from_secs(60));
    assert_eq!(config.max_messages_per_subject, 5);
    assert_eq!(config.max_message_size, 4096);
    assert_eq!(config.storage, StorageType::Memory);
    assert_eq!(config.num_replicas, 1);
    assert_eq!(config.subjects, vec!["$KV.opts.>".to_owned()]);
    assert!(config.allow_rollup && config.deny_delete && config.allow_direct);

    // An update applies the new options, and an omitted one goes back to its default.
    let updated = kv
        .ext
        .ensure_store(ext::EnsureStoreRequest {
            store: "opts".into(),
            history: Some(64),
            storage: Some(ExtStorage::Memory.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.created);
    let config = kv.bucket_config("opts").await;
    assert_eq!(config.max_messages_per_subject, 64);
    assert_eq!(config.max_age, Duration::ZERO);
    assert_eq!(config.max_message_size, -1);

    // Windshift's EnsureStore never changes an existing store.
    kv.store("opts").await;
    assert_eq!(kv.bucket_config("opts").await.max_messages_per_subject, 64);
    // And creates one with the defaults: one revision per key, file storage, no limits.
    kv.store("plain").await;
    let config = kv.bucket_config("plain").await;
    assert_eq!(config.max_messages_per_subject, 1);
    assert_eq!(config.storage, StorageType::File);
    assert_eq!((config.max_message_size, config.max_bytes), (-1, -1));
    assert_eq!(config.max_age, Duration::ZERO);

    // The storage type cannot change.
    let change = kv
        .ext
        .ensure_store(ext::EnsureStoreRequest {
            store: "opts".into(),
            ..Default::default()
        })
        .await;
    assert_status(change, Code::FailedPrecondition, "storage");
}

#[tokio::test]
async fn a_store_ttl_expires_values() {
    let mut kv = Kv::start().await;
    kv.ext
        .ensure_store(ext::EnsureStoreRequest {
            store: "ttl".into(),
            ttl: Some(PbDuration {
                seconds: 0,
                nanos: 500_000_000,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    kv.set("ttl", "session", "x").await;
    assert_eq!(kv.get("ttl", "session").await.0, "x");
    eventually("the value expires", || {
        let mut ws = kv.ws.clone();
        async move {
            let result = ws
                .get(ws::GetRequest {
                    store: "ttl".into(),
                    key: "session".into(),
                })
                .await;
            (result.err()?.code() == Code::NotFound).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn bad_names_keys_options_and_values_are_invalid_arguments() {
    let mut kv = Kv::start().await;
    kv.store("s").await;
    for store in ["", "a.b", "bad name", "a*"] {
        assert_status(
            kv.ws
                .ensure_store(ws::EnsureStoreRequest {
                    store: store.into(),
                })
                .await,
            Code::InvalidArgument,
            "store",
        );
        assert_status(kv.try_get(store, "k").await, Code::InvalidArgument, "store");
    }
    for key in ["", ".a", "a.", "a..b", "a b", "a*", "a.>", "ä"] {
        assert_status(kv.try_get("s", key).await, Code::InvalidArgument, "key");
        assert_status(
            kv.try_set("s", key, "x").await,
            Code::InvalidArgument,
            "key",
        );
        assert_status(kv.try_delete("s", key).await, Code::InvalidArgument, "key");
    }
    let no_value = kv
        .ws
        .set(ws::SetRequest {
            store: "s".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await;
    assert_status(no_value, Code::InvalidArgument, "value");

    let option = |request: ext::EnsureStoreRequest| {
        let mut ext = kv.ext.clone();
        async move { ext.ensure_store(request).await }
    };
    let base = || ext::EnsureStoreRequest {
        store: "o".into(),
        ..Default::default()
    };
    for (request, field) in [
        (
            ext::EnsureStoreRequest {
                history: Some(65),
                ..base()
            },
            "history",
        ),
        (
            ext::EnsureStoreRequest {
                history: Some(0),
                ..base()
            },
            "history",
        ),
        (
            ext::EnsureStoreRequest {
                ttl: Some(PbDuration {
                    seconds: 0,
                    nanos: 50_000_000,
                }),
                ..base()
            },
            "ttl",
        ),
        (
            ext::EnsureStoreRequest {
                max_value_size: Some(0),
                ..base()
            },
            "max_value_size",
        ),
        (
            ext::EnsureStoreRequest {
                replicas: Some(0),
                ..base()
            },
            "replicas",
        ),
        (
            ext::EnsureStoreRequest {
                storage: Some(9),
                ..base()
            },
            "storage",
        ),
    ] {
        assert_status(option(request).await, Code::InvalidArgument, field);
    }
    let bad_pattern = kv
        .ext
        .watch(ext::WatchRequest {
            store: "s".into(),
            key: "a.>.b".into(),
            start: None,
        })
        .await;
    assert_status(bad_pattern.map(drop), Code::InvalidArgument, "key");
    // Issue 17 #6: the watch starts at the next revision, which JetStream must be able to hold.
    let beyond = kv
        .ext
        .watch(ext::WatchRequest {
            store: "s".into(),
            key: String::new(),
            start: Some(Start::AfterRevision(i64::MAX as u64)),
        })
        .await;
    assert_status(beyond.map(drop), Code::InvalidArgument, "after_revision");
    let bad_filter = kv
        .ext
        .keys(ext::KeysRequest {
            store: "s".into(),
            filter: "a*".into(),
        })
        .await;
    assert_status(bad_filter.map(drop), Code::InvalidArgument, "filter");
    assert_status(
        kv.try_history("s", "a.*").await,
        Code::InvalidArgument,
        "key",
    );
}

#[tokio::test]
async fn oversized_values_are_invalid_arguments_stating_the_limit() {
    let mut kv = Kv::start().await;
    kv.ext
        .ensure_store(ext::EnsureStoreRequest {
            store: "small".into(),
            max_value_size: Some(128),
            ..Default::default()
        })
        .await
        .unwrap();
    // StringValue "x" packed in an Any is about 60 bytes.
    kv.set("small", "k", "x").await;
    assert_status(
        kv.try_set("small", "k", &"x".repeat(200)).await,
        Code::InvalidArgument,
        "limit of 128 bytes",
    );
    assert_eq!(kv.get("small", "k").await.0, "x");

    // Without a limit of the store's own, NATS's max payload (1 MiB) applies.
    kv.store("big").await;
    assert_status(
        kv.try_set("big", "k", &"x".repeat(1 << 20)).await,
        Code::InvalidArgument,
        "limit of 1048576 bytes",
    );
    kv.set("big", "k", &"x".repeat(512 * 1024)).await;
}

/// A store at its maximum values or bytes (limits set on its bucket by another NATS client; a
/// bucket refuses new writes when full) refuses a Set with RESOURCE_EXHAUSTED naming the limit, and
/// keeps what it had.
#[tokio::test]
async fn a_full_store_refuses_a_set_with_resource_exhausted_naming_the_limit() {
    let mut kv = Kv::start().await;
    for (store, limit) in [("values", "maximum messages"), ("bytes", "maximum bytes")] {
        kv.store(store).await;
        let mut config = kv.bucket_config(store).await;
        if store == "values" {
            config.max_messages = 1;
        } else {
            // One value fits (about 60 bytes stored with its key), a second does not.
            config.max_bytes = 150;
        }
        kv.env.js.update_stream(config).await.unwrap();
        let revision = kv.set(store, "first", "x").await;
        assert_status(
            kv.try_set(store, "second", "y").await,
            Code::ResourceExhausted,
            limit,
        );
        assert_eq!(kv.get(store, "first").await, ("x".into(), revision));
        assert_status(kv.try_get(store, "second").await, Code::NotFound, "second");
    }
}

#[tokio::test]
async fn an_unknown_store_is_not_found_everywhere() {
    let mut kv = Kv::start().await;
    assert_status(kv.try_get("nope", "k").await, Code::NotFound, "nope");
    assert_status(kv.try_set("nope", "k", "x").await, Code::NotFound, "nope");
    assert_status(
        kv.try_set("nope", "k", "x").create_only(true).await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        kv.try_set("nope", "k", "x").last_revision(3).await,
        Code::NotFound,
        "nope",
    );
    assert_status(kv.try_delete("nope", "k").await, Code::NotFound, "nope");
    let watch = kv
        .ext
        .watch(ext::WatchRequest {
            store: "nope".into(),
            ..Default::default()
        })
        .await;
    assert_status(watch.map(drop), Code::NotFound, "nope");
    let keys = kv
        .ext
        .keys(ext::KeysRequest {
            store: "nope".into(),
            filter: String::new(),
        })
        .await;
    assert_status(keys.map(drop), Code::NotFound, "nope");
    assert_status(kv.try_history("nope", "k").await, Code::NotFound, "nope");
}

#[tokio::test]
async fn the_server_stays_usable_after_errors() {
    let mut kv = Kv::start().await;
    kv.store("s").await;
    let revision = kv.set("s", "k", "v").await;
    kv.env
        .js
        .get_key_value("s")
        .await
        .unwrap()
        .put("corrupt", bytes::Bytes::from_static(b"\xff"))
        .await
        .unwrap();
    let mut watch = kv.watch("s", "k").start(Start::UpdatesOnly(true)).await;
    // One of every kind of failure, on the same connection.
    let failures = [
        kv.try_get("bad store", "k").await.map(drop),
        kv.try_get("s", "a..b").await.map(drop),
        kv.try_get("nope", "k").await.map(drop),
        kv.try_get("s", "missing").await.map(drop),
        kv.try_get("s", "corrupt").await.map(drop),
        kv.try_set("s", "k", "x")
            .last_revision(revision + 100)
            .await
            .map(drop),
        kv.try_set("s", "k", "x").create_only(true).await.map(drop),
        kv.try_set("s", "k", &"x".repeat(1 << 20)).await.map(drop),
        kv.try_history("s", "missing").await.map(drop),
    ];
    let codes: Vec<Code> = failures
        .iter()
        .map(|r| r.as_ref().unwrap_err().code())
        .collect();
    assert_eq!(
        codes,
        [
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::NotFound,
            Code::NotFound,
            Code::DataLoss,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::InvalidArgument,
            Code::NotFound,
        ]
    );
    // Nothing was written by the failed calls, and everything still works.
    assert_eq!(kv.get("s", "k").await, ("v".into(), revision));
    let next = kv
        .try_set("s", "k", "w")
        .last_revision(revision)
        .await
        .unwrap();
    let entry = watch.next().await;
    assert_eq!((summary(&entry), entry.revision), (put("k", "w"), next));
    assert_eq!(kv.keys("s", "").await.len(), 2);
}
