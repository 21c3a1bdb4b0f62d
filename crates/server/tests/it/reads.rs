//! Publishing raw payloads and custom headers, and reading without a consumer of one's own:
//! GetEvent, ReadEvents (ranges that end once caught up) and Subscribe (a live feed that fans out).

use std::time::SystemTime;

use futures::StreamExt;
use jetway_api::{
    google::protobuf::Timestamp,
    jetway::events::v1::{
        self as api, ReadEventsRequest, StreamPointer, SubscribeRequest, stream_pointer::Pointer,
    },
    windshift::events::v1alpha1::stream_pointer::Pointer as WindshiftPointer,
};
use jetway_core::reads::READ_BATCH;
use jetway_server::config::Limits;
use jetway_testkit::eventually;
use tonic::Code;

use crate::{
    clients::{self, collect, next, publish, raw, typed, value_of},
    harness::{Env, assert_status, value_of as windshift_value_of},
};

/// A read of `stream` with no start, subject or limit set; the [`ReadFixture`] steps set them.
fn read(stream: &str) -> ReadEventsRequest {
    ReadEventsRequest {
        stream: stream.into(),
        from: None,
        subject: String::new(),
        limit: 0,
    }
}

/// The steps of the [`read`] fixture, each setting one field.
trait ReadFixture {
    /// Starts at `pointer`.
    fn from(self, pointer: Pointer) -> Self;
    /// Only events on `subject`.
    fn subject(self, subject: &str) -> Self;
    /// At most `limit` events.
    fn limit(self, limit: u32) -> Self;
}

impl ReadFixture for ReadEventsRequest {
    fn from(mut self, pointer: Pointer) -> Self {
        self.from = Some(StreamPointer {
            pointer: Some(pointer),
        });
        self
    }

    fn subject(mut self, subject: &str) -> Self {
        self.subject = subject.into();
        self
    }

    fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
}

fn ids(responses: &[api::ReadEventsResponse]) -> Vec<u64> {
    responses
        .iter()
        .map(|r| r.event.as_ref().expect("an event").id)
        .collect()
}

#[tokio::test]
async fn raw_payloads_and_custom_headers_are_stored_and_read_back() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;

    let request = api::PublishEventRequest {
        idempotency_key: Some("order-7".into()),
        ..raw(
            "orders.created",
            r#"{"order":7}"#,
            "application/json",
            &[("published-by", "billing"), ("Tenant", "acme")],
        )
    };
    let published = client
        .publish_event(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!published.duplicate);
    let again = client.publish_event(request).await.unwrap().into_inner();
    assert_eq!((again.id, again.duplicate), (published.id, true));
    let typed_id = publish(&mut client, typed("orders.paid", "paid 7")).await;

    // Stored in the Windshift format plus a Content-Type and the headers under their own names.
    let stored = env
        .js
        .get_stream("orders")
        .await
        .unwrap()
        .get_raw_message(published.id)
        .await
        .unwrap();
    assert_eq!(
        stored.headers.get("Content-Type").unwrap().as_str(),
        "application/json"
    );
    assert_eq!(
        stored.headers.get("published-by").unwrap().as_str(),
        "billing"
    );
    assert!(stored.headers.get("WS-Data-Type").is_none());
    assert!(stored.headers.get("WS-Published-Time").is_some());

    let event = client
        .get_event(api::GetEventRequest {
            stream: "orders".into(),
            id: published.id,
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(
        (event.id, event.subject.as_str()),
        (published.id, "orders.created")
    );
    assert_eq!(
        event.payload,
        Some(api::event::Payload::Raw(api::RawPayload {
            data: br#"{"order":7}"#.to_vec().into(),
            content_type: "application/json".into(),
        }))
    );
    assert_eq!(
        event.headers.len(),
        2,
        "only custom headers: {:?}",
        event.headers
    );
    assert_eq!(event.headers["published-by"], "billing");
    assert_eq!(event.headers["Tenant"], "acme");
    assert_eq!(event.idempotency_key.as_deref(), Some("order-7"));
    assert!(event.timestamp.is_some());
    assert_eq!(event.delivery_attempt, 0);

    let typed_event = client
        .get_event(api::GetEventRequest {
            stream: "orders".into(),
            id: typed_id,
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(value_of(&typed_event), "paid 7");
    assert!(typed_event.headers.is_empty());

    // A Windshift subscriber of the same stream gets both; the raw body has no message type.
    let start = WindshiftPointer::Start(true);
    let consumer = env
        .consumer("orders")
        .subjects(&["orders.>"])
        .from(start)
        .ensure()
        .await;
    let mut session = env.subscribe("orders", &consumer).await;
    let first = session.event().await;
    assert_eq!(
        first.data.as_ref().unwrap().value,
        br#"{"order":7}"#.to_vec()
    );
    assert_eq!(
        first.data.as_ref().unwrap().type_url,
        "type.googleapis.com/"
    );
    assert_eq!(windshift_value_of(&session.event().await), "paid 7");
}

#[tokio::test]
async fn get_event_and_publish_reject_bad_input_and_unknown_events() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let get = |stream: &str, id: u64| api::GetEventRequest {
        stream: stream.into(),
        id,
    };
    assert_status(
        client.get_event(get("orders", 1)).await,
        Code::NotFound,
        "id 1",
    );
    assert_status(
        client.get_event(get("nope", 1)).await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        client.get_event(get("orders", 0)).await,
        Code::InvalidArgument,
        "id",
    );
    assert_status(
        client.get_event(get("a.b", 1)).await,
        Code::InvalidArgument,
        "stream",
    );

    let bad_header = raw("orders.a", "x", "text/plain", &[("Nats-Msg-Id", "forged")]);
    assert_status(
        client.publish_event(bad_header).await,
        Code::InvalidArgument,
        "headers[\"Nats-Msg-Id\"]",
    );
    for reserved in ["ws-data-type", "JW-DLQ-Reason", "content-type"] {
        let request = raw("orders.a", "x", "", &[(reserved, "x")]);
        assert_status(
            client.publish_event(request).await,
            Code::InvalidArgument,
            reserved,
        );
    }
    let spaced = raw("orders.a", "x", "", &[("has space", "x")]);
    assert_status(
        client.publish_event(spaced).await,
        Code::InvalidArgument,
        "headers",
    );
    let broken_value = raw("orders.a", "x", "", &[("ok", "a\r\nb")]);
    assert_status(
        client.publish_event(broken_value).await,
        Code::InvalidArgument,
        "headers",
    );
    let bad_type = raw("orders.a", "x", "text/plain\n", &[]);
    assert_status(
        client.publish_event(bad_type).await,
        Code::InvalidArgument,
        "raw.content_type",
    );
    let no_payload = api::PublishEventRequest {
        subject: "orders.a".into(),
        ..Default::default()
    };
    assert_status(
        client.publish_event(no_payload).await,
        Code::InvalidArgument,
        "payload",
    );
    assert_status(
        client.publish_event(typed("orders.*", "x")).await,
        Code::InvalidArgument,
        "subject",
    );
    assert_status(
        client.publish_event(typed("elsewhere.a", "x")).await,
        Code::NotFound,
        "elsewhere.a",
    );
    let mut stale = typed("orders.a", "x");
    stale.expected_last_id = Some(9);
    assert_status(
        client.publish_event(stale).await,
        Code::FailedPrecondition,
        "expected_last_id",
    );
    // An empty raw payload without a content type is fine.
    publish(&mut client, raw("orders.a", "", "", &[])).await;
}

#[tokio::test]
async fn read_events_replays_ranges_and_ends_once_caught_up() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let mut published = Vec::new();
    for i in 0..6 {
        let subject = if i % 2 == 0 {
            "orders.created"
        } else {
            "orders.paid"
        };
        published.push(publish(&mut client, typed(subject, &format!("event {i}"))).await);
    }
    let between = SystemTime::now();
    let late = publish(&mut client, typed("orders.created", "late")).await;
    published.push(late);

    let all = collect(
        client
            .read_events(read("orders"))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(ids(&all), published, "everything, in order, then the end");
    assert_eq!(value_of(all[0].event.as_ref().unwrap()), "event 0");

    let from_id = collect(
        client
            .read_events(read("orders").from(Pointer::Id(published[4])))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(ids(&from_id), published[4..]);

    let filtered = collect(
        client
            .read_events(
                read("orders")
                    .from(Pointer::Start(true))
                    .subject("orders.paid")
                    .limit(2),
            )
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&filtered),
        [published[1], published[3]],
        "filter and limit"
    );

    let from_time = collect(
        client
            .read_events(read("orders").from(Pointer::Time(Timestamp::from(between))))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(ids(&from_time), [late]);

    // Past the end, from the end, and a filter nothing matches: no events, and the stream ends.
    for request in [
        read("orders").from(Pointer::Id(late + 1)),
        read("orders").from(Pointer::Id(1_000_000)),
        read("orders").from(Pointer::End(true)),
        read("orders").subject("orders.refunded"),
        read("orders").subject("billing.>"),
    ] {
        let events = collect(client.read_events(request).await.unwrap().into_inner())
            .await
            .unwrap();
        assert!(events.is_empty(), "{events:?}");
    }

    // A read ends at the last event stored when it started, even if more come meanwhile.
    let mut reading = client
        .read_events(read("orders"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut reading).await.event.unwrap().id, published[0]);
    let after_start = publish(&mut client, typed("orders.created", "after the start")).await;
    let rest = collect(reading).await.unwrap();
    assert_eq!(ids(&rest), published[1..]);
    assert!(!ids(&rest).contains(&after_start));

    // Each read's consumer is gone once it ended.
    eventually("the readers' consumers are deleted", || async {
        (env.stream_info("orders").await.state.consumer_count == 0).then_some(())
    })
    .await;
}

/// Issue 17 #9: a start time after 2262 read the whole stream, and one before 1678 read nothing
/// (JetStream counts times in signed 64-bit nanoseconds since 1970).
#[tokio::test]
async fn read_events_from_a_time_beyond_what_jetstream_counts_keeps_its_meaning() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let mut published = Vec::new();
    for value in ["one", "two"] {
        published.push(publish(&mut client, typed("orders.created", value)).await);
    }
    let from = |seconds: i64| Pointer::Time(Timestamp { seconds, nanos: 0 });
    for (what, seconds, expected) in [
        ("the year 3000", 32_503_680_000, vec![]),
        ("the year 1600", -11_676_096_000, published.clone()),
        ("the year 1", -62_135_596_800, published.clone()),
    ] {
        let events = collect(
            client
                .read_events(read("orders").from(from(seconds)))
                .await
                .unwrap()
                .into_inner(),
        )
        .await
        .unwrap();
        assert_eq!(ids(&events), expected, "from {what}");
    }
}

/// Issue 17 #14: a W3C `traceparent` on a message published straight to NATS reached Events
/// subscribers, but Fetch and the reads dropped it (they had a decoder of their own). Every read
/// path now carries the trace context the same way; with tracing off, as here, it passes through.
#[tokio::test]
async fn every_read_path_carries_a_w3c_trace_context_as_events_does() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    env.consumer("orders")
        .named("events")
        .subjects(&["orders.>"])
        .from(WindshiftPointer::Start(true))
        .ensure()
        .await;
    client
        .ensure_consumer(api::EnsureConsumerRequest {
            dead_letter_stream: Some("orders-dead".into()),
            ..clients::consumer("orders", "fetcher", &["orders.>"])
        })
        .await
        .expect("ensure the fetch consumer");
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let state = "vendor=opaque";
    let js = env.js.clone();
    let publish_direct = async |subject: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", parent);
        headers.insert("tracestate", state);
        js.publish_with_headers(subject.to_owned(), headers, "direct".into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    };
    let id = publish_direct("orders.direct").await;
    let expected = (Some(parent.to_owned()), Some(state.to_owned()));
    let carried = |event: &api::Event| (event.trace_parent.clone(), event.trace_state.clone());

    // The Events path, as it always did.
    let mut session = env.subscribe("orders", "events").await;
    let delivered = session.event().await;
    let headers = delivered.headers.clone().expect("headers");
    assert_eq!(
        (delivered.id, headers.trace_parent, headers.trace_state),
        (id, expected.0.clone(), expected.1.clone()),
        "Events"
    );

    let fetched = client
        .fetch(api::FetchRequest {
            stream: "orders".into(),
            consumer: "fetcher".into(),
            max_events: 1,
            wait: None,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(fetched.len(), 1);
    assert_eq!(carried(&fetched[0]), expected, "Fetch");

    let got = client
        .get_event(api::GetEventRequest {
            stream: "orders".into(),
            id,
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .expect("an event");
    assert_eq!(carried(&got), expected, "GetEvent");

    let read = collect(
        client
            .read_events(read("orders"))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(
        carried(read[0].event.as_ref().unwrap()),
        expected,
        "ReadEvents"
    );

    let mut live = client
        .subscribe(subscribe("orders.>", "orders"))
        .await
        .unwrap()
        .into_inner();
    let later = publish_direct("orders.later").await;
    let event = next(&mut live).await.event.expect("an event");
    assert_eq!(
        (event.id, carried(&event)),
        (later, expected.clone()),
        "Subscribe"
    );

    // A dead letter keeps the original's headers, and reads them the same way.
    client
        .reject(api::RejectRequest {
            stream: "orders".into(),
            consumer: "fetcher".into(),
            ids: vec![id],
            permanently: true,
            delay: None,
        })
        .await
        .unwrap();
    let dead = crate::dead_letters::await_dead_letters(&env, "orders-dead", 1).await;
    assert_eq!(
        carried(dead[0].event.as_ref().expect("the event")),
        expected,
        "dead letters"
    );
}

#[tokio::test]
async fn read_events_rejects_bad_input_and_unknown_streams() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    assert_status(
        client.read_events(read("nope")).await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        client.read_events(read("a b")).await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        client
            .read_events(read("orders").from(Pointer::Id(0)))
            .await,
        Code::InvalidArgument,
        "from.id",
    );
    // Issue 17 #6: a sequence JetStream cannot hold (above 2^63−1).
    assert_status(
        client
            .read_events(read("orders").from(Pointer::Id(u64::MAX)))
            .await,
        Code::InvalidArgument,
        "from.id",
    );
    let no_position = ReadEventsRequest {
        from: Some(StreamPointer { pointer: None }),
        ..read("orders")
    };
    assert_status(
        client.read_events(no_position).await,
        Code::InvalidArgument,
        "from",
    );
    let bad_time = Pointer::Time(Timestamp {
        seconds: 300_000_000_000,
        nanos: 0,
    });
    assert_status(
        client.read_events(read("orders").from(bad_time)).await,
        Code::InvalidArgument,
        "from.time",
    );
    assert_status(
        client
            .read_events(read("orders").subject("orders..a"))
            .await,
        Code::InvalidArgument,
        "subject",
    );

    // A work-queue stream (one made by another NATS client, or Jetway's advisory stream) admits
    // only consumers with acks: FAILED_PRECONDITION, not an internal error.
    env.js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "jobs".into(),
            subjects: vec!["jobs.>".into()],
            retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("work-queue stream");
    env.js
        .publish("jobs.a", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_status(
        client.read_events(read("jobs")).await,
        Code::FailedPrecondition,
        "stream jobs is a work-queue stream",
    );
}

fn subscribe(subject: &str, stream: &str) -> SubscribeRequest {
    SubscribeRequest {
        subject: subject.into(),
        stream: stream.into(),
    }
}

#[tokio::test]
async fn subscribe_fans_new_events_out_to_every_subscriber_and_cleans_up() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.stream("audit", &["audit.>"]).await;
    let mut client = clients::events(&env).await;
    let old = publish(&mut client, typed("orders.created", "before")).await;

    // Once the call has returned, the subscription exists: later events all reach it.
    let mut first = client
        .subscribe(subscribe("orders.>", ""))
        .await
        .unwrap()
        .into_inner();
    let mut second = client
        .subscribe(subscribe("orders.created", "orders"))
        .await
        .unwrap()
        .into_inner();
    let a = publish(&mut client, typed("orders.created", "a")).await;
    let b = publish(
        &mut client,
        raw(
            "orders.created",
            "b",
            "text/plain",
            &[("published-by", "test")],
        ),
    )
    .await;
    let paid = publish(&mut client, typed("orders.paid", "paid")).await;
    publish(&mut client, typed("audit.login", "elsewhere")).await;

    let got: Vec<u64> = [
        next(&mut first).await,
        next(&mut first).await,
        next(&mut first).await,
    ]
    .into_iter()
    .map(|r| r.event.unwrap().id)
    .collect();
    assert_eq!(got, [a, b, paid], "new events only, in order");
    assert!(!got.contains(&old));
    let a_again = next(&mut second).await.event.unwrap();
    assert_eq!((a_again.id, value_of(&a_again).as_str()), (a, "a"));
    let b_again = next(&mut second).await.event.unwrap();
    assert_eq!(b_again.id, b);
    assert_eq!(b_again.headers["published-by"], "test");
    assert_eq!(b_again.delivery_attempt, 0);

    // Nothing to acknowledge: the subscriptions hold nothing in flight, and each has its own
    // ephemeral consumer, removed as soon as its client goes away.
    assert_eq!(env.stream_info("orders").await.state.consumer_count, 2);
    // Each pulls at most READ_BATCH events at a time, so a subscriber slow to read holds little.
    let batches: Vec<i64> = env
        .js
        .get_stream("orders")
        .await
        .unwrap()
        .consumers()
        .map(|info| info.expect("consumer info").config.max_batch)
        .collect()
        .await;
    assert_eq!(batches, [READ_BATCH, READ_BATCH]);
    drop(first);
    eventually("the first subscriber's consumer is deleted", || async {
        (env.stream_info("orders").await.state.consumer_count == 1).then_some(())
    })
    .await;
    let c = publish(&mut client, typed("orders.created", "c")).await;
    assert_eq!(
        next(&mut second).await.event.unwrap().id,
        c,
        "the other one carries on"
    );

    // Deleting the stream ends a subscription with NOT_FOUND.
    env.js.delete_stream("orders").await.unwrap();
    let status = tokio::time::timeout(crate::harness::RECV_GUARD, second.message())
        .await
        .expect("the subscription ends")
        .expect_err("with an error");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

/// Subscribers share one consumer per stream and subject filter, so a stream serves far more of
/// them than nats-server's 1,000 consumers per stream, over several connections, and each gets
/// every event, in order. The consumer goes when the last subscriber does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_scales_past_a_thousand_subscribers_on_one_stream() {
    const SUBSCRIBERS: usize = 1500;
    // Not more at once on one connection: h2 ends a connection with GOAWAY (too_many_data_frames)
    // when a few hundred small request messages wait there for their calls to start.
    const CONNECTIONS: usize = 25;
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(env.jetway.channel().await);
    }
    let calls = (0..SUBSCRIBERS).map(|i| {
        let mut client =
            api::events_service_client::EventsServiceClient::new(channels[i % CONNECTIONS].clone());
        async move {
            client
                .subscribe(subscribe("orders.>", "orders"))
                .await
                .map(tonic::Response::into_inner)
        }
    });
    let results = futures::future::join_all(calls).await;
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        refused.is_empty(),
        "{} of {SUBSCRIBERS} refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    let mut feeds: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(env.stream_info("orders").await.state.consumer_count, 1);

    let mut client = clients::events(&env).await;
    let first = publish(&mut client, typed("orders.created", "first")).await;
    let second = publish(&mut client, typed("orders.paid", "second")).await;
    let received = futures::future::join_all(feeds.iter_mut().map(|feed| async move {
        [next(feed).await, next(feed).await].map(|r| r.event.expect("an event").id)
    }))
    .await;
    assert!(
        received.iter().all(|ids| *ids == [first, second]),
        "every subscriber gets both events in order"
    );

    drop(feeds);
    eventually("the shared consumer is deleted", || async {
        (env.stream_info("orders").await.state.consumer_count == 0).then_some(())
    })
    .await;
}

/// A subscriber that stops reading falls behind its feed and is cut off once it has
/// `SUBSCRIBER_BUFFER_EVENTS` waiting: its call ends, after the events it was sent (in order,
/// without a gap), with RESOURCE_EXHAUSTED naming the limit and the first event it missed. The
/// feed does not wait for it: the other subscriber gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_cut_off_and_the_others_carry_on() {
    const EVENTS: usize = 400;
    const BUFFER: usize = 64;
    const BATCH: usize = 40;
    let limits = Limits {
        subscriber_buffer: BUFFER,
        ..Limits::default()
    };
    let mut env = Env::start_with(limits).await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    // Reads nothing until the end; a 1 KiB window lets the server send only a few events ahead.
    let mut slow = api::events_service_client::EventsServiceClient::new(
        env.jetway.slow_reader_channel().await,
    )
    .subscribe(subscribe("orders.>", "orders"))
    .await
    .expect("subscribe")
    .into_inner();
    let mut fast = client
        .subscribe(subscribe("orders.>", "orders"))
        .await
        .expect("subscribe")
        .into_inner();
    // The fast reader says how far it has read, so the publisher never puts more than a batch
    // (under `BUFFER`) ahead of it, however slowly a loaded machine schedules its task.
    let (read, mut progress) = tokio::sync::watch::channel(0_usize);
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < EVENTS {
            ids.push(next(&mut fast).await.event.expect("an event").id);
            read.send_replace(ids.len());
        }
        (ids, fast)
    });

    // 2 KiB each, so what the server's HTTP/2 layer buffers adds only a few to what the slow
    // subscriber holds.
    let body = "x".repeat(2048);
    let mut published = Vec::new();
    for _ in 0..EVENTS / BATCH {
        let batch = api::PublishBatchRequest {
            events: (0..BATCH)
                .map(|_| raw("orders.created", &body, "text/plain", &[]))
                .collect(),
        };
        let results = client
            .publish_batch(batch)
            .await
            .expect("publish")
            .into_inner();
        for result in results.results {
            match result.result {
                Some(api::publish_result::Result::Published(p)) => published.push(p.id),
                other => panic!("not published: {other:?}"),
            }
        }
        let sent = published.len();
        tokio::time::timeout(
            crate::harness::RECV_GUARD,
            progress.wait_for(|read| *read >= sent),
        )
        .await
        .expect("the fast subscriber keeps up")
        .expect("the fast reader runs");
    }
    let (ids, _fast) = reader.await.expect("the fast reader");
    assert_eq!(ids, published);

    let mut got = Vec::new();
    let status = loop {
        let message = tokio::time::timeout(crate::harness::RECV_GUARD, slow.message())
            .await
            .expect("the slow subscriber's call ends");
        match message {
            Ok(Some(response)) => got.push(response.event.expect("an event").id),
            Ok(None) => panic!("ended OK after {} events", got.len()),
            Err(status) => break status,
        }
    };
    assert!(got.len() < EVENTS, "cut off before the end");
    assert_eq!(got, published[..got.len()], "in order, without a gap");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let missed = published[got.len()];
    for needle in [
        "SUBSCRIBER_BUFFER_EVENTS".to_owned(),
        format!("id {missed}"),
    ] {
        assert!(status.message().contains(&needle), "{needle} in {status:?}");
    }
    assert_eq!(env.stream_info("orders").await.state.consumer_count, 1);
}

/// A live feed's consumer lives in nats-server's memory; after nats-server restarts, the feed
/// recreates it from the last event it handed out, so its subscribers miss nothing and get
/// nothing twice.
#[tokio::test]
async fn subscribers_carry_on_after_a_nats_restart() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let mut feeds = Vec::new();
    for _ in 0..2 {
        let feed = client
            .subscribe(subscribe("orders.>", "orders"))
            .await
            .expect("subscribe")
            .into_inner();
        feeds.push(feed);
    }
    let before = publish(&mut client, typed("orders.created", "before")).await;
    for feed in &mut feeds {
        assert_eq!(next(feed).await.event.expect("an event").id, before);
    }

    env.nats.restart();
    let after = eventually("publishing resumes", || {
        let mut client = client.clone();
        async move {
            client
                .publish_event(typed("orders.created", "after"))
                .await
                .ok()
        }
    })
    .await
    .into_inner()
    .id;
    let later = publish(&mut client, typed("orders.created", "later")).await;
    for feed in &mut feeds {
        let ids = [next(feed).await, next(feed).await].map(|r| r.event.expect("an event").id);
        assert_eq!(ids, [after, later]);
    }
}

#[tokio::test]
async fn subscribe_needs_one_stream_for_its_subject() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.stream("audit", &["audit.>"]).await;
    let mut client = clients::events(&env).await;
    assert_status(
        client.subscribe(subscribe("billing.>", "")).await,
        Code::NotFound,
        "billing.>",
    );
    // `*.created` overlaps both streams: which one is meant must be said.
    assert_status(
        client.subscribe(subscribe("*.created", "")).await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        client.subscribe(subscribe("", "")).await,
        Code::InvalidArgument,
        "subject",
    );
    assert_status(
        client.subscribe(subscribe("a..b", "")).await,
        Code::InvalidArgument,
        "subject",
    );
    assert_status(
        client.subscribe(subscribe("orders.>", "a.b")).await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        client.subscribe(subscribe("orders.>", "nope")).await,
        Code::NotFound,
        "nope",
    );
    // Naming the stream settles the overlap.
    let mut feed = client
        .subscribe(subscribe("*.created", "audit"))
        .await
        .unwrap()
        .into_inner();
    let id = publish(&mut client, typed("audit.created", "x")).await;
    assert_eq!(next(&mut feed).await.event.unwrap().id, id);
}

#[tokio::test]
async fn a_read_cut_by_shutdown_ends_unavailable_even_when_the_client_lags() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    // 3 MiB: more than the server's response buffer and the client's HTTP/2 window hold together,
    // so the read cannot have finished when the shutdown comes, and the server may be waiting for
    // the client to read (then its last status has to wait for room too).
    let body = "x".repeat(3072);
    let batch = api::PublishBatchRequest {
        events: (0..1000)
            .map(|_| raw("orders.created", &body, "text/plain", &[]))
            .collect(),
    };
    client.publish_batch(batch).await.unwrap();
    let mut reading = client
        .read_events(read("orders"))
        .await
        .unwrap()
        .into_inner();
    next(&mut reading).await.event.expect("the first event");

    env.jetway.begin_shutdown();
    // Ending OK would tell the client it read the whole range.
    let status = collect(reading).await.expect_err("the read is cut short");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// A range read whose remaining events are removed while it runs (here by a purge of its subject
/// only) ends once it has sent what it had taken, instead of waiting for events that never come.
#[tokio::test]
async fn a_range_read_ends_when_the_rest_of_its_range_is_purged() {
    const EVENTS: u64 = 999;
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let mut events: Vec<_> = (0..EVENTS)
        .map(|i| typed("orders.created", &i.to_string()))
        .collect();
    events.push(typed("orders.paid", "stays"));
    let mut responses = slow_range_read(&env, &mut client, events, "orders.created").await;

    let purged = env
        .js
        .get_stream("orders")
        .await
        .unwrap()
        .purge()
        .filter("orders.created")
        .await
        .expect("purged");
    assert_eq!(
        purged.purged, EVENTS,
        "every orders.created event, none of orders.paid"
    );
    let mut last = 1;
    loop {
        let message = tokio::time::timeout(crate::harness::RECV_GUARD, responses.message())
            .await
            .expect("the read ends once its range is gone");
        match message.expect("ends with OK") {
            Some(response) => {
                let id = response.event.unwrap().id;
                assert_eq!(id, last + 1, "in order, nothing skipped before the purge");
                last = id;
            }
            None => break,
        }
    }
    assert!(
        last < EVENTS,
        "the purge removed the end of the range (read up to {last})"
    );
}

/// A client that pauses longer than the idle check still gets its whole range: a range read asks
/// what is left only after waiting for events itself, and then finds them there.
#[tokio::test]
async fn a_range_read_paused_by_its_client_still_sends_the_whole_range() {
    const EVENTS: u64 = 500;
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let events = (0..EVENTS)
        .map(|i| typed("orders.created", &i.to_string()))
        .collect();
    let responses = slow_range_read(&env, &mut client, events, "").await;
    // The pause itself is what is tested: longer than the 2 s after which a waiting read checks.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let rest = collect(responses).await.expect("ends with OK");
    assert_eq!(ids(&rest), (2..=EVENTS).collect::<Vec<_>>());
}

/// Stores `events` in stream `orders` in one batch, then reads them (those on `filter`) through a
/// client that can take only a little ahead of what it has read, and reads the first one (id 1).
async fn slow_range_read(
    env: &Env,
    client: &mut api::events_service_client::EventsServiceClient<tonic::transport::Channel>,
    events: Vec<api::PublishEventRequest>,
    filter: &str,
) -> tonic::Streaming<api::ReadEventsResponse> {
    client
        .publish_batch(api::PublishBatchRequest { events })
        .await
        .expect("published");
    let channel = env.jetway.slow_reader_channel().await;
    let mut slow = api::events_service_client::EventsServiceClient::new(channel);
    let mut responses = slow
        .read_events(read("orders").subject(filter))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut responses).await.event.unwrap().id, 1);
    responses
}
