//! Subscriptions: settling events, automatic pings, dropped handles, flow control, reconnecting
//! after a server restart, the end of a subscription, and trace context from publisher to
//! consumer.

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream;
use futures::StreamExt;
use jetway_client::{
    Client, ConsumerOptions, PublishOptions, SettleError, SubscribeOptions, tonic::Code,
};
use jetway_testkit::eventually;

use crate::{TestServer, next_event, stream_and_consumer, text, value_of};

#[tokio::test]
async fn ack_reject_delayed_reject_and_permanent_reject_do_what_they_say() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    stream_and_consumer(&client, "jobs", ConsumerOptions::durable("worker")).await;
    for value in ["ack", "reject", "later", "never"] {
        client.publish("jobs.run", &text(value)).await.unwrap();
    }
    let mut events = client.subscribe("jobs", "worker").await.unwrap();
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(next_event(&mut events).await);
    }
    let values: Vec<String> = first.iter().map(value_of).collect();
    assert_eq!(values, ["ack", "reject", "later", "never"]);
    let mut first = first.into_iter();
    first.next().unwrap().ack().await.expect("ack");
    first.next().unwrap().reject().await.expect("reject");
    first
        .next()
        .unwrap()
        .reject_after(Duration::from_millis(300))
        .await
        .expect("reject after a delay");
    first
        .next()
        .unwrap()
        .reject_permanently()
        .await
        .expect("reject permanently");

    // The two plain rejects come back (the delayed one later); order is JetStream's business.
    let mut again = BTreeMap::new();
    for _ in 0..2 {
        let event = next_event(&mut events).await;
        again.insert(value_of(&event), event.delivery_attempt());
        event.ack().await.unwrap();
    }
    assert_eq!(
        again,
        BTreeMap::from([("later".to_string(), 2), ("reject".to_string(), 2)])
    );

    // Nothing else is redelivered: the next event is one published now.
    client.publish("jobs.run", &text("marker")).await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(
        (value_of(&event), event.delivery_attempt()),
        ("marker".into(), 1)
    );
    event.ack().await.unwrap();

    // A delay past what JetStream can hold is shortened to it, not refused: the subscription goes on.
    client.publish("jobs.run", &text("forever")).await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(value_of(&event), "forever");
    event
        .reject_after(Duration::MAX)
        .await
        .expect("reject with the longest delay");
    client.publish("jobs.run", &text("after")).await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(
        (value_of(&event), event.delivery_attempt()),
        ("after".into(), 1)
    );
    event.ack().await.unwrap();
}

#[tokio::test]
async fn a_held_event_is_pinged_past_its_processing_timeout() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    stream_and_consumer(
        &client,
        "jobs",
        ConsumerOptions::durable("slow").processing_timeout(Duration::from_secs(1)),
    )
    .await;
    client
        .publish("jobs.run", &text("slow work"))
        .await
        .unwrap();
    let mut events = client.subscribe("jobs", "slow").await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(event.delivery_attempt(), 1);

    // Holding the handle is the behaviour under test: 2.5 processing timeouts of "work".
    tokio::time::sleep(Duration::from_millis(2500)).await;
    event
        .ack()
        .await
        .expect("still held: the pings kept the event from expiring");

    // Had it expired, JetStream would have redelivered it before this marker.
    client.publish("jobs.run", &text("marker")).await.unwrap();
    let next = next_event(&mut events).await;
    assert_eq!(
        (value_of(&next), next.delivery_attempt()),
        ("marker".into(), 1)
    );
    next.ack().await.unwrap();
}

#[tokio::test]
async fn a_dropped_handle_is_redelivered_at_once() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    // The default 30 s timeout is well past the receive guard: a redelivery within the guard
    // comes from the reject on drop, not from the timeout.
    stream_and_consumer(&client, "jobs", ConsumerOptions::durable("worker")).await;
    let id = client.publish("jobs.run", &text("dropped")).await.unwrap();
    let mut events = client.subscribe("jobs", "worker").await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!((event.id(), event.delivery_attempt()), (id, 1));
    drop(event);

    let again = next_event(&mut events).await;
    assert_eq!((again.id(), again.delivery_attempt()), (id, 2));
    again.ack().await.unwrap();
}

#[tokio::test]
async fn handles_outliving_their_subscription_cannot_settle_and_the_event_comes_back() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    stream_and_consumer(&client, "jobs", ConsumerOptions::durable("worker")).await;
    let id = client.publish("jobs.run", &text("orphan")).await.unwrap();
    let mut events = client.subscribe("jobs", "worker").await.unwrap();
    let event = next_event(&mut events).await;
    drop(events);
    assert_eq!(event.ack().await, Err(SettleError::Closed { id }));

    let mut events = client.subscribe("jobs", "worker").await.unwrap();
    let again = next_event(&mut events).await;
    assert_eq!((again.id(), again.delivery_attempt()), (id, 2));
    again.ack().await.unwrap();
}

#[tokio::test]
async fn flow_control_holds_at_most_max_processing_events() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    stream_and_consumer(&client, "jobs", ConsumerOptions::durable("worker")).await;
    for value in ["1", "2", "3"] {
        client.publish("jobs.run", &text(value)).await.unwrap();
    }
    let options = SubscribeOptions::new().max_processing_events(2);
    let mut events = client
        .subscribe_with("jobs", "worker", &options)
        .await
        .unwrap();
    let one = next_event(&mut events).await;
    let two = next_event(&mut events).await;

    // JetStream's view: two delivered and unacked, the third still waiting in the stream.
    let nats = async_nats::connect(server.nats_url()).await.unwrap();
    let stream = jetstream::new(nats).get_stream("jobs").await.unwrap();
    eventually("two events in flight and one waiting", || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("worker").await.ok()?;
            (info.num_ack_pending == 2 && info.num_pending == 1).then_some(())
        }
    })
    .await;

    one.ack().await.unwrap();
    let three = next_event(&mut events).await;
    assert_eq!(value_of(&three), "3");
    two.ack().await.unwrap();
    three.ack().await.unwrap();
}

#[tokio::test]
async fn the_subscription_resubscribes_after_a_server_restart() {
    let mut server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    stream_and_consumer(&client, "jobs", ConsumerOptions::durable("worker")).await;
    let id = client.publish("jobs.run", &text("before")).await.unwrap();
    let mut events = client.subscribe("jobs", "worker").await.unwrap();
    let held = next_event(&mut events).await;
    assert_eq!(held.id(), id);

    server.stop().await;
    server.start_again().await;

    // The server gave the held event back when it shut down; it arrives over the new connection.
    let again = next_event(&mut events).await;
    assert_eq!((again.id(), again.delivery_attempt()), (id, 2));
    assert_eq!(held.ack().await, Err(SettleError::ConnectionLost { id }));
    again.ack().await.expect("ack over the new connection");

    // Publishing works again once the client's channel has reconnected; the key makes the retry
    // safe.
    let keyed = PublishOptions::new().idempotency_key("after-restart");
    let after = eventually("a publish after the restart", || {
        let (client, keyed) = (client.clone(), keyed.clone());
        async move {
            client
                .publish_with("jobs.run", &text("after"), &keyed)
                .await
                .ok()
        }
    })
    .await;
    let event = next_event(&mut events).await;
    assert_eq!((event.id(), value_of(&event)), (after, "after".into()));
    event.ack().await.unwrap();
}

#[tokio::test]
async fn unknown_consumers_fail_to_subscribe_and_a_deleted_one_ends_the_subscription() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    stream_and_consumer(&client, "jobs", ConsumerOptions::durable("worker")).await;
    let missing = client.subscribe("jobs", "nobody").await;
    assert_eq!(
        missing.as_ref().map_err(|e| e.code()).err(),
        Some(Some(Code::NotFound))
    );

    let mut events = client.subscribe("jobs", "worker").await.unwrap();
    client.consumers().delete("jobs", "worker").await.unwrap();
    match tokio::time::timeout(crate::RECV_GUARD, events.next()).await {
        Ok(Some(Err(error))) => assert!(error.is_not_found(), "{error}"),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(crate::RECV_GUARD, events.next())
            .await
            .expect("the end of the subscription")
            .is_none()
    );
}

#[tokio::test]
async fn the_trace_context_of_the_current_span_reaches_the_consumer() {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("jetway-client-test")));
    // This test's runtime is single-threaded, so the subscriber covers every task it runs.
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    stream_and_consumer(&client, "jobs", ConsumerOptions::durable("worker")).await;
    let span = tracing::info_span!("checkout");
    let trace_id = span.context().span().span_context().trace_id().to_string();
    client
        .publish("jobs.run", &text("traced"))
        .instrument(span)
        .await
        .unwrap();

    let mut events = client.subscribe("jobs", "worker").await.unwrap();
    let event = next_event(&mut events).await;
    let parent = event.trace_parent().expect("a traceparent");
    assert!(
        parent.starts_with(&format!("00-{trace_id}-")),
        "{parent} continues trace {trace_id}"
    );
    event.ack().await.unwrap();
}
