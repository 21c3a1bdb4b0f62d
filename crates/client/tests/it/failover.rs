//! Several endpoints: a client given two Jetway replicas over one nats-server keeps publishing and
//! consuming while either replica is down.

use jetway_client::{Client, Error, Subscription};

use crate::{next_event, server::TestServer, stream_and_consumer, text, value_of};

/// Publishes `value` until the client answers Ok: a call that met a replica going down gets
/// UNAVAILABLE once, and the client then steers calls to the other one.
async fn publish_until_stored(client: &Client, value: &str) {
    jetway_testkit::eventually("a publish through the replica that is up", || async move {
        match client.publish("orders.created", &text(value)).await {
            Ok(_) => Some(()),
            Err(Error::Status(status))
                if status.code() == jetway_client::tonic::Code::Unavailable =>
            {
                None
            }
            Err(error) => panic!("the publish failed for good: {error}"),
        }
    })
    .await;
}

/// Publishes `values`, then receives them on `events` (acking each); their order is the stream's.
async fn publish_and_receive(client: &Client, events: &mut Subscription, values: &[String]) {
    for value in values {
        publish_until_stored(client, value).await;
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
    stream_and_consumer(&client, "orders", "billing", None).await;
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
    let details = jetway_testkit::eventually("the stream's info", || async {
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
