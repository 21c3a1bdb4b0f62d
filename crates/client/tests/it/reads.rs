//! Raw payloads and custom headers, and reading without a consumer: GetEvent, ReadEvents and live
//! subscriptions.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{
    Client, DecodeError, EventStream, Payload, PublishOptions, ReadOptions, StartPosition,
    StoredEvent, StreamOptions, tonic::Code,
};

use crate::{RECV_GUARD, TestServer, text};

async fn orders(server: &TestServer) -> Client {
    let client = Client::connect(server.url()).await.unwrap();
    client
        .streams()
        .ensure(&StreamOptions::new("orders").subjects(["orders.>"]))
        .await
        .unwrap();
    client
}

async fn read_ids(client: &Client, options: &ReadOptions) -> Vec<u64> {
    let events: Vec<StoredEvent> = client
        .read_with("orders", options)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    events.iter().map(StoredEvent::id).collect()
}

async fn next_live(events: &mut EventStream) -> StoredEvent {
    match tokio::time::timeout(RECV_GUARD, events.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected a live event, got {other:?}"),
    }
}

#[tokio::test]
async fn raw_bytes_and_headers_are_stored_and_given_back() {
    let server = TestServer::start().await;
    let client = orders(&server).await;
    let options = PublishOptions::new()
        .header("published-by", "checkout")
        .header("region", "eu")
        .idempotency_key("order-42");
    let raw = client
        .publish_bytes(
            "orders.created",
            r#"{"order":42}"#,
            "application/json",
            &options,
        )
        .await
        .unwrap();
    let again = client
        .publish_bytes(
            "orders.created",
            r#"{"order":42}"#,
            "application/json",
            &options,
        )
        .await
        .unwrap();
    assert_eq!(raw, again, "the idempotency key applies to raw bytes too");
    let typed = client
        .publish_with(
            "orders.paid",
            &text("paid"),
            &PublishOptions::new().header("published-by", "billing"),
        )
        .await
        .unwrap();
    let untyped = client
        .publish_bytes("orders.note", "plain", "", &PublishOptions::new())
        .await
        .unwrap();

    let event = client.get_event("orders", raw).await.unwrap();
    assert_eq!((event.id(), event.subject()), (raw, "orders.created"));
    assert_eq!(
        event.payload(),
        &Payload::Raw {
            data: r#"{"order":42}"#.into(),
            content_type: Some("application/json".into()),
        }
    );
    assert_eq!(
        event.headers(),
        &BTreeMap::from([
            ("published-by".into(), "checkout".into()),
            ("region".into(), "eu".into()),
        ])
    );
    assert_eq!(event.idempotency_key(), Some("order-42"));
    assert_eq!(event.delivery_attempt(), 0);
    assert!(event.timestamp().is_some());
    assert!(matches!(
        event.decode::<StringValue>(),
        Err(DecodeError::Raw { .. })
    ));

    let event = client.get_event("orders", typed).await.unwrap();
    assert_eq!(event.decode::<StringValue>().unwrap().value, "paid");
    assert_eq!(event.headers()["published-by"], "billing");
    let event = client.get_event("orders", untyped).await.unwrap();
    assert_eq!(
        event.payload(),
        &Payload::Raw {
            data: "plain".into(),
            content_type: None
        }
    );

    let refused = client
        .publish_with(
            "orders.paid",
            &text("x"),
            &PublishOptions::new().header("Nats-Msg-Id", "mine"),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument), "{refused}");
    let missing = client.get_event("orders", 99).await.unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
}

#[tokio::test]
async fn reads_start_anywhere_filter_stop_at_a_limit_and_end_once_caught_up() {
    let server = TestServer::start().await;
    let client = orders(&server).await;
    for (subject, value) in [
        ("orders.created", "1"),
        ("orders.paid", "2"),
        ("orders.created", "3"),
        ("orders.paid", "4"),
    ] {
        client.publish(subject, &text(value)).await.unwrap();
    }

    let all: Vec<StoredEvent> = client
        .read("orders")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let values: Vec<String> = all
        .iter()
        .map(|e| e.decode::<StringValue>().unwrap().value)
        .collect();
    assert_eq!(values, ["1", "2", "3", "4"]);

    let from_two = ReadOptions::new().from(StartPosition::Offset(2)).limit(2);
    assert_eq!(read_ids(&client, &from_two).await, [2, 3]);
    let paid = ReadOptions::new().subject("orders.paid");
    assert_eq!(read_ids(&client, &paid).await, [2, 4]);
    let past_the_end = ReadOptions::new().from(StartPosition::Offset(99));
    assert!(read_ids(&client, &past_the_end).await.is_empty());
    let at_the_end = ReadOptions::new().from(StartPosition::End);
    assert!(read_ids(&client, &at_the_end).await.is_empty());
    let since_epoch = ReadOptions::new().from(StartPosition::Time(std::time::UNIX_EPOCH));
    assert_eq!(read_ids(&client, &since_epoch).await, [1, 2, 3, 4]);

    let missing = client.read("nope").await.unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
}

#[tokio::test]
async fn a_live_subscription_gets_only_new_events_of_its_subjects() {
    let server = TestServer::start().await;
    let client = orders(&server).await;
    client
        .publish("orders.created", &text("before"))
        .await
        .unwrap();

    // The stream is found from the subject, or given.
    let mut everything = client.subscribe_live("orders.>").await.unwrap();
    let mut paid = client
        .subscribe_live_in("orders", "orders.paid")
        .await
        .unwrap();
    let created = client
        .publish("orders.created", &text("new"))
        .await
        .unwrap();
    let settled = client
        .publish_bytes(
            "orders.paid",
            "42",
            "text/plain",
            &PublishOptions::new().header("k", "v"),
        )
        .await
        .unwrap();

    let first = next_live(&mut everything).await;
    assert_eq!(first.id(), created);
    assert_eq!(first.decode::<StringValue>().unwrap().value, "new");
    assert_eq!(next_live(&mut everything).await.id(), settled);
    let only = next_live(&mut paid).await;
    assert_eq!(only.id(), settled);
    assert_eq!(only.headers()["k"], "v");

    let none = client.subscribe_live("nowhere.>").await.unwrap_err();
    assert_eq!(none.code(), Some(Code::NotFound), "{none}");
}
