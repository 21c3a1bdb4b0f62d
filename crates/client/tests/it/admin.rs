//! Administration: listing, inspecting, purging and deleting streams, finding the stream behind a
//! subject, listing and inspecting consumers, and delivery policies on consumers.

use std::{collections::BTreeMap, time::Duration};

use jetway_client::{
    Client, ConsumerOptions, DiscardPolicy, PurgeOptions, Retention, StartPosition, StorageType,
    StreamOptions, tonic::Code,
};

use crate::{TestServer, text};

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, jetway_client::Error>) {
    match result {
        Err(error) => assert_eq!(error.code(), Some(Code::NotFound), "{error}"),
        Ok(value) => panic!("expected NOT_FOUND, got Ok({value:?})"),
    }
}

async fn orders_and_clicks(client: &Client) {
    client
        .streams()
        .ensure(
            &StreamOptions::new("orders")
                .subjects(["orders.>"])
                .max_age(Duration::from_secs(86_400)),
        )
        .await
        .unwrap();
    client
        .streams()
        .ensure(
            &StreamOptions::new("clicks")
                .subjects(["clicks", "clicks.>"])
                .storage(StorageType::Memory),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn streams_are_listed_inspected_purged_and_deleted() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    orders_and_clicks(&client).await;
    for (subject, value) in [
        ("orders.created", "1"),
        ("orders.created", "2"),
        ("orders.paid", "3"),
    ] {
        client.publish(subject, &text(value)).await.unwrap();
    }

    let streams = client.streams().list().await.unwrap();
    let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["clicks", "orders"]);
    let orders = &streams[1];
    assert_eq!(orders.config.subjects, ["orders.>"]);
    assert_eq!(orders.config.max_age, Some(Duration::from_secs(86_400)));
    assert_eq!(orders.config.retention, Retention::Limits);
    assert_eq!(orders.config.discard, DiscardPolicy::Old);
    assert_eq!(orders.config.storage, StorageType::File);
    assert_eq!(orders.config.replicas, 1);
    assert_eq!(orders.config.deduplication_window, Duration::from_secs(120));
    assert_eq!((orders.state.events, orders.state.last_id), (3, 3));
    assert!(orders.created.is_some());
    assert_eq!(streams[0].config.storage, StorageType::Memory);
    assert!(!orders.is_dead_letter_stream());

    let details = client.streams().info("orders").await.unwrap();
    assert_eq!(details.info.state.first_id, 1);
    assert_eq!(details.info.state.subject_count, 2);
    assert!(details.info.state.first_time <= details.info.state.last_time);
    assert_eq!(
        details.subject_counts,
        BTreeMap::from([("orders.created".into(), 2), ("orders.paid".into(), 1)])
    );
    assert!(!details.subjects_truncated);
    let paid = client
        .streams()
        .info_filtered("orders", "orders.paid")
        .await
        .unwrap();
    assert_eq!(
        paid.subject_counts,
        BTreeMap::from([("orders.paid".into(), 1)])
    );
    assert_not_found(client.streams().info("nope").await);

    let purged = client
        .streams()
        .purge_with(
            "orders",
            &PurgeOptions::new().subject("orders.created").keep(1),
        )
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(client.streams().purge("orders").await.unwrap(), 2);
    let emptied = client.streams().info("orders").await.unwrap().info.state;
    assert_eq!((emptied.events, emptied.last_id), (0, 3));

    client.streams().delete("clicks").await.unwrap();
    assert_not_found(client.streams().delete("clicks").await);
    assert_not_found(client.streams().info("clicks").await);
}

#[tokio::test]
async fn the_stream_behind_a_subject_is_found_from_its_subjects() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    orders_and_clicks(&client).await;
    let streams = client.streams();
    assert_eq!(
        streams.for_subject("orders.created").await.unwrap(),
        ["orders"]
    );
    assert_eq!(streams.for_subject("orders.*").await.unwrap(), ["orders"]);
    assert_eq!(streams.for_subject("clicks").await.unwrap(), ["clicks"]);
    assert_eq!(
        streams.for_subject("*.home").await.unwrap(),
        ["clicks", "orders"]
    );
    assert_eq!(
        streams.for_subject(">").await.unwrap(),
        ["clicks", "orders"]
    );
    assert!(streams.for_subject("orders").await.unwrap().is_empty());
    assert!(streams.for_subject("nowhere.>").await.unwrap().is_empty());
}

#[tokio::test]
async fn consumers_are_listed_and_inspected_with_their_delivery_policy() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    orders_and_clicks(&client).await;
    client.publish("orders.created", &text("1")).await.unwrap();
    let backoff = [Duration::from_secs(1), Duration::from_secs(2)];
    let retrying = ConsumerOptions::durable("billing")
        .subject("orders.>")
        .from(StartPosition::Start)
        .max_deliveries(3)
        .backoff(backoff)
        .dead_letter_stream("orders-dead");
    assert_eq!(
        client
            .consumers()
            .ensure("orders", &retrying)
            .await
            .unwrap(),
        "billing"
    );
    let plain = ConsumerOptions::durable("audit")
        .subject("orders.created")
        .processing_timeout(Duration::from_secs(10));
    client.consumers().ensure("orders", &plain).await.unwrap();

    let listed = client.consumers().list("orders").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["audit", "billing"]);
    assert_eq!(listed[0].processing_timeout, Duration::from_secs(10));
    assert_eq!(listed[0].max_deliveries, None);
    assert_eq!(listed[0].dead_letter_stream, None);

    let billing = client.consumers().info("orders", "billing").await.unwrap();
    assert_eq!((billing.stream.as_str(), billing.durable), ("orders", true));
    assert_eq!(billing.subjects, ["orders.>"]);
    assert_eq!(billing.max_deliveries, Some(3));
    assert_eq!(billing.backoff, backoff);
    assert_eq!(billing.processing_timeout, backoff[0]);
    assert_eq!(billing.dead_letter_stream.as_deref(), Some("orders-dead"));
    assert!(billing.pull);
    assert_eq!((billing.pending, billing.ack_pending), (1, 0));

    // The dead-letter stream was made with the consumer, and is told apart by its subjects.
    let dead = client.streams().info("orders-dead").await.unwrap().info;
    assert!(dead.is_dead_letter_stream());

    // Without a policy, an existing consumer keeps its own; with part of one, the rest goes.
    let without = ConsumerOptions::durable("billing").subject("orders.>");
    client.consumers().ensure("orders", &without).await.unwrap();
    let kept = client.consumers().info("orders", "billing").await.unwrap();
    assert_eq!(
        (kept.max_deliveries, kept.backoff.len()),
        (Some(3), backoff.len())
    );
    let only_max = ConsumerOptions::durable("billing")
        .subject("orders.>")
        .max_deliveries(5);
    client
        .consumers()
        .ensure("orders", &only_max)
        .await
        .unwrap();
    let replaced = client.consumers().info("orders", "billing").await.unwrap();
    assert_eq!(replaced.max_deliveries, Some(5));
    assert!(replaced.backoff.is_empty());
    assert_eq!(replaced.dead_letter_stream, None);

    let both = ConsumerOptions::durable("bad")
        .subject("orders.>")
        .processing_timeout(Duration::from_secs(1))
        .backoff([Duration::from_secs(1)]);
    let refused = client
        .consumers()
        .ensure("orders", &both)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument), "{refused}");
    assert_not_found(client.consumers().info("orders", "nobody").await);
    assert_not_found(client.consumers().list("nope").await);
}
