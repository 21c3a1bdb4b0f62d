//! The unary calls: connecting and its settings, ensuring streams and consumers, deleting
//! consumers, and publishing with every option.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, stream::DiscardPolicy as JsDiscard};
use jetway_client::{
    Client, ConsumerOptions, DiscardPolicy, Error, PublishOptions, StartPosition, StorageType,
    StreamOptions, StreamSource,
    tonic::{Code, transport::Channel},
};

use crate::{TestServer, next_event, stream_and_consumer, text, value_of};

/// Stream info read directly from JetStream.
async fn stream_config(server: &TestServer, name: &str) -> jetstream::stream::Config {
    let nats = async_nats::connect(server.nats_url()).await.unwrap();
    let mut stream = jetstream::new(nats).get_stream(name).await.unwrap();
    stream.info().await.unwrap().config.clone()
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T, Error>, code: Code) {
    match result {
        Err(error) => assert_eq!(error.code(), Some(code), "{error}"),
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
    }
}

#[tokio::test]
async fn connect_rejects_bad_urls_metadata_and_unreachable_servers() {
    assert!(matches!(
        Client::connect("not a url").await,
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        Client::builder()
            .metadata("Bad Key", "v")
            .connect("http://127.0.0.1:1")
            .await,
        Err(Error::InvalidMetadata { .. })
    ));
    // Port 1 on loopback: nothing listens there.
    assert!(matches!(
        Client::connect("http://127.0.0.1:1").await,
        Err(Error::Connect { .. })
    ));
}

#[tokio::test]
async fn a_client_with_a_token_metadata_and_timeouts_works_and_so_does_one_from_a_channel() {
    let server = TestServer::start().await;
    let client = Client::builder()
        .auth_token("s3cret")
        .metadata("x-tenant", "acme")
        .connect_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(5))
        .connect(server.url())
        .await
        .expect("connect");
    stream_and_consumer(&client, "orders", ConsumerOptions::durable("billing")).await;
    assert_eq!(
        client.publish("orders.created", &text("a")).await.unwrap(),
        1
    );

    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let from_channel = Client::from_channel(channel.clone());
    assert_eq!(
        from_channel
            .publish("orders.created", &text("b"))
            .await
            .unwrap(),
        2
    );
    let with_token = Client::builder()
        .auth_token("s3cret")
        .with_channel(channel)
        .unwrap();
    assert_eq!(
        with_token
            .publish("orders.created", &text("c"))
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn streams_are_created_with_every_option_and_updated_in_place() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let options = StreamOptions::new("orders")
        .subjects(["orders.>"])
        .max_age(Duration::from_secs(3600))
        .max_events(100)
        .max_events_per_subject(10)
        .max_bytes(1 << 20)
        .discard(DiscardPolicy::New)
        .discard_new_per_subject(true)
        .storage(StorageType::Memory)
        .replicas(1)
        .deduplication_window(Duration::from_secs(60))
        .max_event_size(4096);
    client.streams().ensure(&options).await.expect("create");
    client.streams().ensure(&options).await.expect("again");
    let config = stream_config(&server, "orders").await;
    assert_eq!(config.subjects, vec!["orders.>".to_string()]);
    assert_eq!(config.max_age, Duration::from_secs(3600));
    assert_eq!(
        (
            config.max_messages,
            config.max_messages_per_subject,
            config.max_bytes
        ),
        (100, 10, 1 << 20)
    );
    assert_eq!(config.discard, JsDiscard::New);
    assert!(config.discard_new_per_subject);
    assert_eq!(config.storage, jetstream::stream::StorageType::Memory);
    assert_eq!(config.num_replicas, 1);
    assert_eq!(config.duplicate_window, Duration::from_secs(60));
    assert_eq!(config.max_message_size, 4096);

    // An update with fewer options removes the others.
    let plain = StreamOptions::new("orders")
        .subjects(["orders.>", "refunds.>"])
        .storage(StorageType::Memory);
    client.streams().ensure(&plain).await.expect("update");
    let config = stream_config(&server, "orders").await;
    assert_eq!(config.subjects.len(), 2);
    assert_eq!(config.max_age, Duration::ZERO);
    assert_eq!(config.max_messages, -1);

    assert_code(
        client
            .streams()
            .ensure(&StreamOptions::new("bad name"))
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn mirrors_and_aggregates_copy_from_their_sources() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    client
        .streams()
        .ensure(&StreamOptions::new("orders").subjects(["orders.>"]))
        .await
        .unwrap();
    client
        .publish("orders.created", &text("one"))
        .await
        .unwrap();
    client
        .streams()
        .ensure(&StreamOptions::new("copy").mirror(StreamSource::new("orders")))
        .await
        .expect("mirror");
    client
        .streams()
        .ensure(
            &StreamOptions::new("all").aggregate([StreamSource::new("orders")
                .from(StartPosition::Start)
                .filter_subject("orders.created")]),
        )
        .await
        .expect("aggregate");
    for stream in ["copy", "all"] {
        let consumer = client
            .consumers()
            .ensure(
                stream,
                &ConsumerOptions::ephemeral()
                    .subject("orders.>")
                    .from(StartPosition::Start),
            )
            .await
            .unwrap();
        let mut events = client.subscribe(stream, &consumer).await.unwrap();
        let event = next_event(&mut events).await;
        assert_eq!(value_of(&event), "one", "copied into {stream}");
        event.ack().await.unwrap();
    }
}

#[tokio::test]
async fn consumers_are_ensured_durable_or_ephemeral_and_deleted() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    client
        .streams()
        .ensure(&StreamOptions::new("orders").subjects(["orders.>"]))
        .await
        .unwrap();
    let durable = ConsumerOptions::durable("billing")
        .subjects(["orders.created", "orders.paid"])
        .from(StartPosition::Time(SystemTime::now()))
        .processing_timeout(Duration::from_secs(5));
    assert_eq!(
        client.consumers().ensure("orders", &durable).await.unwrap(),
        "billing"
    );
    assert_eq!(
        client.consumers().ensure("orders", &durable).await.unwrap(),
        "billing",
        "ensuring again is idempotent"
    );
    let ephemeral = ConsumerOptions::ephemeral()
        .subject("orders.>")
        .from(StartPosition::Offset(1));
    let id = client
        .consumers()
        .ensure("orders", &ephemeral)
        .await
        .unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");

    client
        .consumers()
        .delete("orders", &id)
        .await
        .expect("delete");
    let again = client.consumers().delete("orders", &id).await;
    assert!(again.as_ref().is_err_and(Error::is_not_found), "{again:?}");
    assert_code(
        client
            .consumers()
            .ensure("missing", &ConsumerOptions::durable("x").subject("a"))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn publish_packs_messages_and_honours_every_option() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    stream_and_consumer(&client, "orders", ConsumerOptions::durable("audit")).await;

    let keyed = PublishOptions::new().idempotency_key("order-42");
    let first = client
        .publish_with("orders.created", &text("order 42"), &keyed)
        .await
        .unwrap();
    let again = client
        .publish_with("orders.created", &text("order 42"), &keyed)
        .await
        .unwrap();
    assert_eq!(first, again, "the same key is stored once");

    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let timed = client
        .publish_with(
            "orders.paid",
            &text("paid"),
            &PublishOptions::new().timestamp(when),
        )
        .await
        .unwrap();
    let raw = client
        .publish_raw(
            "orders.paid",
            "windshift.test.v1.StringValue",
            jetway_api::google::protobuf::Any::pack(&text("raw")).value,
            &PublishOptions::new().expected_last_id(timed),
        )
        .await
        .expect("expected_last_id matches the last event on the subject");
    assert_code(
        client
            .publish_with(
                "orders.paid",
                &text("late"),
                &PublishOptions::new().expected_last_id(timed),
            )
            .await,
        Code::FailedPrecondition,
    );
    assert_code(
        client.publish("nowhere.at.all", &text("x")).await,
        Code::NotFound,
    );

    let mut events = client.subscribe("orders", "audit").await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(
        (event.id(), event.subject(), event.idempotency_key()),
        (first, "orders.created", Some("order-42"))
    );
    assert_eq!(event.delivery_attempt(), 1);
    assert_eq!(value_of(&event), "order 42");
    event.ack().await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!((event.id(), event.timestamp()), (timed, Some(when)));
    event.ack().await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(event.id(), raw);
    assert_eq!(event.data().message_name(), "windshift.test.v1.StringValue");
    assert_eq!(value_of(&event), "raw");
    assert!(matches!(
        event.decode::<jetway_api::google::protobuf::Duration>(),
        Err(jetway_client::DecodeError::WrongType { .. })
    ));
    event.ack().await.unwrap();
}
