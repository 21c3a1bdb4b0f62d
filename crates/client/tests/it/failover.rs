//! Several endpoints and retried publishes: a client given two Jetway replicas over one
//! nats-server keeps publishing and consuming while either replica is down, and publishes through
//! cut connections and a restart each succeed and are stored once.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use jetway_client::{Client, ConsumerOptions, Error, RetryPolicy, StreamOptions, Subscription};
use jetway_testkit::{TcpProxy, eventually};

use crate::{TestServer, next_event, stream_and_consumer, text, value_of};

/// Publishes `values`, then receives them on `events` (acking each); their order is the stream's.
async fn publish_and_receive(client: &Client, events: &mut Subscription, values: &[String]) {
    for value in values {
        // A publish that meets the replica going down is retried on the other one.
        client
            .publish("orders.created", &text(value))
            .await
            .expect("every publish succeeds");
    }
    let mut received = Vec::new();
    for _ in values {
        let event = next_event(events).await;
        received.push(value_of(&event));
        event.ack().await.expect("ack");
    }
    received.sort();
    let mut expected = values.to_vec();
    expected.sort();
    assert_eq!(received, expected);
}

fn values(prefix: &str) -> Vec<String> {
    (0..5).map(|i| format!("{prefix} {i}")).collect()
}

#[tokio::test]
async fn publishes_and_a_subscription_carry_on_through_the_other_endpoint() {
    let mut first = TestServer::start().await;
    let mut second = first.beside().await;
    let client = Client::connect_many([first.url(), second.url()])
        .await
        .unwrap();
    // A short processing timeout: an event whose session a stopping replica cuts off before it
    // could hand it back (its shutdown grace ran out) comes again within the receive guard.
    stream_and_consumer(
        &client,
        "orders",
        ConsumerOptions::durable("billing").processing_timeout(Duration::from_secs(3)),
    )
    .await;
    let mut events = client.subscribe("orders", "billing").await.unwrap();
    publish_and_receive(&client, &mut events, &values("both up")).await;

    // The subscription is on one of the two; taking each down in turn takes it away once.
    first.stop().await;
    publish_and_receive(&client, &mut events, &values("first down")).await;
    first.start_again().await;
    second.stop().await;
    publish_and_receive(&client, &mut events, &values("second down")).await;

    // Calls go to the replica that is up: the stream holds each event once.
    // (The call that finds the second replica gone may be this one: it is asked again.)
    let details = eventually("the stream's info", || async {
        client.streams().info("orders").await.ok()
    })
    .await;
    let stored = details.info.state.events;
    assert_eq!(stored, 15);
}

#[tokio::test]
async fn connecting_needs_one_endpoint_up_and_a_valid_list() {
    let server = TestServer::start().await;
    // A port nothing listens on: the client starts with the endpoint that is up.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let client = Client::connect_many([down.clone(), server.url()])
        .await
        .expect("one endpoint is up");
    client.publish("orders.created", &text("x")).await.ok();
    assert!(matches!(
        Client::connect_many(Vec::<String>::new()).await,
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        Client::connect_many([down.as_str()]).await,
        Err(Error::Connect { .. })
    ));
    assert!(matches!(
        Client::connect_many([server.url(), "not a url".into()]).await,
        Err(Error::InvalidUrl { .. })
    ));
}

/// Waits until `acked` has grown by `more` since `from`, and returns its value then.
async fn after_more_acks(acked: &AtomicUsize, from: usize, more: usize) -> usize {
    eventually("publishers to make progress", || async {
        let now = acked.load(Ordering::SeqCst);
        (now >= from + more).then_some(now)
    })
    .await
}

#[tokio::test]
async fn every_publish_succeeds_once_through_cut_connections_and_a_restart() {
    let mut server = TestServer::start().await;
    let port = server.grpc_addr().port();
    let proxy = TcpProxy::start(port).await;
    // Patient enough to ride out a restart of the in-process server.
    let policy = RetryPolicy::new()
        .max_attempts(100)
        .backoff(Duration::from_millis(10), Duration::from_millis(200));
    let client = Client::builder()
        .retry_policy(policy)
        .connect(proxy.url().replace("nats://", "http://"))
        .await
        .unwrap();
    client
        .streams()
        .ensure(&StreamOptions::new("orders").subjects(["orders.>"]))
        .await
        .unwrap();

    // Publishers without keys of their own, publishing until told to stop: some call is always
    // in flight, so the cut and the restart both meet calls.
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..4)
        .map(|publisher| {
            let (client, acked, done) = (client.clone(), acked.clone(), done.clone());
            tokio::spawn(async move {
                let mut published = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    let value = format!("{publisher}-{}", published.len());
                    let result = client.publish("orders.created", &text(&value)).await;
                    published.push((value, result.map_err(|e| e.to_string())));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                published
            })
        })
        .collect();

    let seen = after_more_acks(&acked, 0, 50).await;
    proxy.cut();
    let seen = after_more_acks(&acked, seen, 50).await;
    server.stop().await;
    server.start_again().await;
    after_more_acks(&acked, seen, 50).await;
    done.store(true, Ordering::SeqCst);

    let mut expected = Vec::new();
    for publisher in publishers {
        for (value, result) in publisher.await.unwrap() {
            assert!(result.is_ok(), "publish {value} failed: {result:?}");
            expected.push(value);
        }
    }
    expected.sort();

    // Each acknowledged event is in the stream exactly once.
    let mut stored = BTreeMap::<String, usize>::new();
    let mut events = client.read("orders").await.unwrap();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        let value = event
            .decode::<jetway_api::windshift::test::v1::StringValue>()
            .unwrap()
            .value;
        *stored.entry(value).or_default() += 1;
    }
    let duplicates: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "stored more than once: {duplicates:?}"
    );
    assert_eq!(stored.into_keys().collect::<Vec<_>>(), expected);
}
