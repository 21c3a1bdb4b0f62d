//! Clients of Jetway's own services (`jetway.events.v1`, `jetway.admin.v1`) and builders for the
//! requests the tests of those services share.

use std::time::Duration;

use jetway_api::{
    google::protobuf::{Any, Duration as PbDuration},
    jetway::{
        admin::v1::admin_service_client::AdminServiceClient,
        events::v1::{
            self as api, events_service_client::EventsServiceClient, publish_event_request,
        },
    },
    windshift::test::v1::StringValue,
};
use tonic::{Status, Streaming, transport::Channel};

use crate::harness::{Env, RECV_GUARD};

/// A client of `jetway.events.v1.EventsService` on the environment's Jetway.
pub(crate) async fn events(env: &Env) -> EventsServiceClient<Channel> {
    EventsServiceClient::new(env.jetway.channel().await)
}

/// A `jetway.events.v1` client on the environment's Jetway, with a stream `orders` (`orders.>`)
/// and a pull consumer `worker` on it: the setup the Fetch tests share.
pub(crate) async fn orders_worker(env: &mut Env) -> EventsServiceClient<Channel> {
    env.stream("orders", &["orders.>"]).await;
    let mut client = events(env).await;
    client
        .ensure_consumer(consumer("orders", "worker", &["orders.>"]))
        .await
        .unwrap();
    client
}

/// A client of `jetway.admin.v1.AdminService` on the environment's Jetway.
pub(crate) async fn admin(env: &Env) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(env.jetway.channel().await)
}

/// A publish of a StringValue.
pub(crate) fn typed(subject: &str, value: &str) -> api::PublishEventRequest {
    api::PublishEventRequest {
        subject: subject.into(),
        payload: Some(publish_event_request::Payload::Data(Any::pack(
            &StringValue {
                value: value.into(),
            },
        ))),
        ..Default::default()
    }
}

/// A publish of raw bytes with a content type and custom headers.
pub(crate) fn raw(
    subject: &str,
    data: &str,
    content_type: &str,
    headers: &[(&str, &str)],
) -> api::PublishEventRequest {
    api::PublishEventRequest {
        subject: subject.into(),
        payload: Some(publish_event_request::Payload::Raw(api::RawPayload {
            data: data.to_owned().into_bytes().into(),
            content_type: content_type.into(),
        })),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Publishes through `jetway.events.v1` and returns the event id.
pub(crate) async fn publish(
    client: &mut EventsServiceClient<Channel>,
    request: api::PublishEventRequest,
) -> u64 {
    client
        .publish_event(request)
        .await
        .expect("publish")
        .into_inner()
        .id
}

/// A durable consumer of `stream` on `subjects`, starting at the first event, with no delivery
/// policy; tests add what they need.
pub(crate) fn consumer(stream: &str, name: &str, subjects: &[&str]) -> api::EnsureConsumerRequest {
    api::EnsureConsumerRequest {
        stream: stream.into(),
        name: Some(name.into()),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        from: Some(api::StreamPointer {
            pointer: Some(api::stream_pointer::Pointer::Start(true)),
        }),
        ..Default::default()
    }
}

/// A Fetch of at most `max` events for consumer `worker` on `orders` that returns at once; a
/// [`FetchFixture::wait`] makes it wait for them.
pub(crate) fn fetch(max: u32) -> api::FetchRequest {
    api::FetchRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        max_events: max,
        wait: None,
    }
}

/// The step of the [`fetch`] fixture.
pub(crate) trait FetchFixture {
    /// Waits up to `wait` for the events.
    fn wait(self, wait: impl Into<PbDuration>) -> Self;
}

impl FetchFixture for api::FetchRequest {
    fn wait(mut self, wait: impl Into<PbDuration>) -> Self {
        self.wait = Some(wait.into());
        self
    }
}

/// A protobuf duration of whole seconds.
pub(crate) fn seconds(s: u64) -> PbDuration {
    PbDuration::from(Duration::from_secs(s))
}

/// Reads a server stream to its end: the messages, or the status it failed with.
pub(crate) async fn collect<T>(mut stream: Streaming<T>) -> Result<Vec<T>, Status> {
    let mut items = Vec::new();
    loop {
        let next = tokio::time::timeout(RECV_GUARD, stream.message())
            .await
            .expect("the next message, or the end, within the guard time")?;
        match next {
            Some(item) => items.push(item),
            None => return Ok(items),
        }
    }
}

/// The next message of a server stream that stays open.
pub(crate) async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(RECV_GUARD, stream.message())
        .await
        .expect("a message within the guard time")
        .expect("the stream did not fail")
        .expect("the stream did not end")
}

/// The StringValue of an event with a protobuf payload.
pub(crate) fn value_of(event: &api::Event) -> String {
    match &event.payload {
        Some(api::event::Payload::Data(any)) => {
            any.unpack::<StringValue>()
                .expect("a StringValue")
                .expect("decodes")
                .value
        }
        other => panic!("expected a protobuf payload, got {other:?}"),
    }
}
