//! Publishes over the shared PublishStream: many concurrent callers on one client each get their
//! own id, a conflict fails only its own call, a small window holds callers back instead of
//! failing them, and a cut connection mid-flight still leaves every call stored exactly once.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use futures::{StreamExt, future::join_all};
use jetway_client::{Client, PublishOptions, RetryPolicy, StreamOptions, tonic::Code};
use jetway_testkit::{TcpProxy, eventually};

use crate::{TestServer, text};

/// How many times each value is stored in stream `stream`. A read that meets a connection the
/// proxy cut is made again.
async fn stored(client: &Client, stream: &str) -> BTreeMap<String, usize> {
    eventually("a full read of the stream", || async {
        let mut counts = BTreeMap::new();
        let mut events = client.read(stream).await.ok()?;
        while let Some(event) = events.next().await {
            let value = event
                .ok()?
                .decode::<jetway_api::windshift::test::v1::StringValue>()
                .unwrap()
                .value;
            *counts.entry(value).or_default() += 1;
        }
        Some(counts)
    })
    .await
}

async fn orders(client: &Client) {
    client
        .streams()
        .ensure(&StreamOptions::new("orders").subjects(["orders.>"]))
        .await
        .unwrap();
}

/// Publishes `count` values concurrently from clones of `client`; returns each value's result.
async fn publish_many(client: &Client, count: usize) -> Vec<(String, Result<u64, String>)> {
    let calls = (0..count).map(|i| {
        let client = client.clone();
        async move {
            let value = format!("order {i}");
            let result = client.publish("orders.created", &text(&value)).await;
            (value, result.map_err(|e| e.to_string()))
        }
    });
    join_all(calls).await
}

#[tokio::test]
async fn many_concurrent_publishes_get_distinct_ids_and_are_stored_once() {
    let server = TestServer::start().await;
    // A window smaller than the callers: the rest wait for a slot rather than fail.
    let client = Client::builder()
        .publish_window(16)
        .connect(server.url())
        .await
        .unwrap();
    orders(&client).await;

    let results = publish_many(&client, 300).await;
    let ids: BTreeSet<u64> = results
        .iter()
        .map(|(value, result)| *result.as_ref().unwrap_or_else(|e| panic!("{value}: {e}")))
        .collect();
    assert_eq!(ids.len(), 300, "every publish has its own id");
    assert_eq!(ids, (1..=300).collect(), "ids are the stream's sequences");
    let counts = stored(&client, "orders").await;
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|&n| n == 1), "stored once: {counts:?}");
}

#[tokio::test]
async fn a_conflict_fails_only_its_own_publish() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    orders(&client).await;
    let first = client
        .publish("orders.created", &text("first"))
        .await
        .unwrap();

    // The conflicting publish expects an id that is not the subject's last; it is sent among
    // others that share its stream.
    let stale = PublishOptions::new().expected_last_id(first + 1000);
    let conflicting = text("conflict");
    let (conflict, others) = tokio::join!(
        client.publish_with("orders.created", &conflicting, &stale),
        publish_many(&client, 50),
    );
    let error = conflict.expect_err("a stale expected_last_id is refused");
    assert_eq!(error.code(), Some(Code::FailedPrecondition), "{error}");
    for (value, result) in &others {
        assert!(result.is_ok(), "{value}: {result:?}");
    }
    // The stream goes on: a matching expectation is stored.
    let last = client
        .publish("orders.other", &text("after"))
        .await
        .unwrap();
    let matching = PublishOptions::new().expected_last_id(last);
    client
        .publish_with("orders.other", &text("checked"), &matching)
        .await
        .expect("a matching expected_last_id is stored");
    let counts = stored(&client, "orders").await;
    assert!(!counts.contains_key("conflict"));
    assert_eq!(counts.len(), 1 + 50 + 2);
}

#[tokio::test]
async fn a_stream_cut_mid_flight_leaves_every_publish_stored_exactly_once() {
    let server = TestServer::start().await;
    let port = server.grpc_addr().port();
    let proxy = TcpProxy::start(port).await;
    let policy = RetryPolicy::new().max_attempts(50).backoff(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(200),
    );
    let client = Client::builder()
        .retry_policy(policy)
        .connect(proxy.url().replace("nats://", "http://"))
        .await
        .unwrap();
    orders(&client).await;

    // Callers publishing until told to stop, so that calls are always in flight on the shared
    // stream: the cut meets some, which are answered on a new stream (by the server's
    // deduplication where their first attempt was stored).
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..32)
        .map(|caller| {
            let (client, acked, done) = (client.clone(), acked.clone(), done.clone());
            tokio::spawn(async move {
                let mut published = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    let value = format!("{caller}-{}", published.len());
                    let result = client.publish("orders.created", &text(&value)).await;
                    published.push((value, result.map_err(|e| e.to_string())));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                published
            })
        })
        .collect();
    let acks_beyond = |from: usize| {
        let acked = acked.clone();
        async move {
            eventually("publishes to make progress", || async {
                let now = acked.load(Ordering::SeqCst);
                (now >= from + 200).then_some(now)
            })
            .await
        }
    };
    let before_cut = acks_beyond(0).await;
    proxy.cut();
    acks_beyond(before_cut).await;
    done.store(true, Ordering::SeqCst);

    let mut ids = BTreeSet::new();
    let mut values = BTreeSet::new();
    for caller in callers {
        for (value, result) in caller.await.unwrap() {
            let id = result.unwrap_or_else(|e| panic!("{value}: {e}"));
            assert!(ids.insert(id), "{value} got the id of another publish");
            values.insert(value);
        }
    }
    let counts = stored(&client, "orders").await;
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(counts.into_keys().collect::<BTreeSet<_>>(), values);
    assert!(proxy.accepted() >= 2, "the cut forced a new connection");
}

#[tokio::test]
async fn unary_publishes_stay_available() {
    let server = TestServer::start().await;
    let client = Client::builder()
        .shared_publish_stream(false)
        .connect(server.url())
        .await
        .unwrap();
    orders(&client).await;
    let results = publish_many(&client, 20).await;
    assert!(
        results.iter().all(|(_, result)| result.is_ok()),
        "{results:?}"
    );
    assert_eq!(stored(&client, "orders").await.len(), 20);
}
