//! Integration tests of jetway-client against a real nats-server and an in-process Jetway server:
//! one test binary, a module per area. Every test starts its own servers
//! (`jetway_server::testing::TestServer`).

// Test code may panic on unwrap/expect: a panic here is a failed test with its message. clippy's
// allow-*-in-tests covers `#[test]` functions only, not the helpers they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod auth;
mod calls;
mod dead_letters;
mod delivery;
mod failover;
mod reads;
mod requests;
mod shared_stream;
mod state;

use std::time::Duration;

use futures::StreamExt;
use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{Client, ConsumerOptions, Event, StartPosition, StreamOptions, Subscription};
/// The in-process Jetway server every test starts (shared with the server's and the CLI's tests).
pub use jetway_server::testing::TestServer;

/// How long a test waits for one expected event before it fails (a hang guard, not a timing check).
pub const RECV_GUARD: Duration = Duration::from_secs(10);

/// A StringValue.
pub fn text(value: &str) -> StringValue {
    StringValue {
        value: value.into(),
    }
}

/// The next event of a subscription; panics if it ends, fails, or nothing comes within the guard.
pub async fn next_event(subscription: &mut Subscription) -> Event {
    match tokio::time::timeout(RECV_GUARD, subscription.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("the subscription failed: {error}"),
        Ok(None) => panic!("the subscription ended"),
        Err(_) => panic!("no event within {RECV_GUARD:?}"),
    }
}

/// The StringValue inside an event.
pub fn value_of(event: &Event) -> String {
    event.decode::<StringValue>().expect("a StringValue").value
}

/// Ensures stream `stream` on `<stream>.>` and the consumer `consumer` describes on it, on
/// `<stream>.>` from the start (e.g. `ConsumerOptions::durable("billing").processing_timeout(..)`).
pub async fn stream_and_consumer(client: &Client, stream: &str, consumer: ConsumerOptions) {
    client
        .streams()
        .ensure(&StreamOptions::new(stream).subjects([format!("{stream}.>")]))
        .await
        .expect("ensure stream");
    let options = consumer
        .subject(format!("{stream}.>"))
        .from(StartPosition::Start);
    client
        .consumers()
        .ensure(stream, &options)
        .await
        .expect("ensure consumer");
}
