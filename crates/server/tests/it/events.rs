//! The Events RPC as a protocol: the Subscribed handshake, what an Event carries, and the
//! confirmations of Ack, Reject and Ping (spec B.5.5 and tests B.11.10), plus every way a client can
//! get the conversation wrong. Engine behaviour over time (timeouts, sharing, flow control, endings)
//! is in `delivery`.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull, push};
use jetway_api::{
    google::protobuf::Duration as PbDuration,
    windshift::events::v1alpha1::{
        EventsRequest, PublishEventRequest, events_request, events_response::Response as Resp,
        stream_pointer::Pointer,
    },
};
use tonic::{Code, Status};

use crate::harness::{Env, Session, assert_status, publish_request, subscribe, value_of};

/// Reads the session to its end and checks it failed with `code`, mentioning `needle`.
async fn assert_ends_with(session: &mut Session, code: Code, needle: &str) {
    let status: Result<(), Status> = Err(session.expect_error().await);
    assert_status(status, code, needle);
}

/// Checks that the server still serves a normal subscription after a failed one: a fresh consumer
/// receives a fresh event and can ack it.
async fn assert_still_usable(env: &mut Env, stream: &str, subject: &str) {
    let consumer = env.consumer(stream).subjects(&[subject]).ensure().await;
    let mut session = env.subscribe(stream, &consumer).await;
    let id = env.publish(subject, "still usable").await;
    let event = session.event().await;
    assert_eq!((event.id, value_of(&event).as_str()), (id, "still usable"));
    assert_eq!(session.ack(&[id]).await.ids, vec![id]);
}

#[tokio::test]
async fn subscribed_reports_the_processing_timeout_and_events_carry_what_was_published() {
    let mut env = Env::start().await;
    env.stream("events", &["events.>"]).await;
    let quick = env
        .consumer("events")
        .subjects(&["events.test"])
        .timeout(Duration::from_secs(7))
        .ensure()
        .await;
    env.consumer("events")
        .named("default")
        .subjects(&["events.test"])
        .ensure()
        .await;

    let (_default, first) = env.subscribe("events", "default").raw().await;
    match first {
        Ok(Some(Resp::Subscribed(subscribed))) => assert_eq!(
            subscribed.processing_timeout,
            Some(PbDuration::from(Duration::from_secs(30))),
            "the default processing timeout is 30 s"
        ),
        other => panic!("expected Subscribed first, got {other:?}"),
    }
    let (mut session, first) = env.subscribe("events", &quick).raw().await;
    match first {
        Ok(Some(Resp::Subscribed(subscribed))) => assert_eq!(
            subscribed.processing_timeout,
            Some(PbDuration::from(Duration::from_secs(7)))
        ),
        other => panic!("expected Subscribed first, got {other:?}"),
    }

    let request = PublishEventRequest {
        idempotency_key: Some("order-42".into()),
        ..publish_request("events.test", "test")
    };
    let data = request.data.clone();
    let id = env
        .client
        .publish_event(request)
        .await
        .expect("publish")
        .into_inner()
        .id;
    let event = session.event().await;
    assert_eq!(event.id, id, "Event.id is the id PublishEvent returned");
    assert_eq!(event.subject, "events.test");
    assert_eq!(event.delivery_attempt, 1);
    assert_eq!(
        event.data, data,
        "data is the published Any, type URL included"
    );
    assert_eq!(
        event.data.as_ref().map(|d| d.type_url.as_str()),
        Some("type.googleapis.com/windshift.test.v1.StringValue")
    );
    let headers = event.headers.expect("headers are always set");
    assert!(
        headers.timestamp.is_some(),
        "the timestamp is always filled"
    );
    assert_eq!(headers.idempotency_key.as_deref(), Some("order-42"));
}

#[tokio::test]
async fn event_id_is_the_stream_sequence_not_the_consumer_sequence() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("payments")
        .subjects(&["orders.paid"])
        .ensure()
        .await;
    let mut session = env.subscribe("orders", "payments").await;

    env.publish("orders.created", "created 0").await;
    let paid0 = env.publish("orders.paid", "paid 0").await;
    env.publish("orders.created", "created 1").await;
    assert_eq!(paid0, 2, "the stream interleaves the two subjects");

    let first = session.event().await;
    assert_eq!((first.id, first.subject.as_str()), (paid0, "orders.paid"));
    assert_eq!(value_of(&first), "paid 0");
    // A redelivery has a new consumer sequence but the same stream sequence. Nothing else matches
    // the filter yet, so the next event is the redelivery.
    assert_eq!(session.reject(&[first.id]).await.ids, vec![paid0]);
    let again = session.event().await;
    assert_eq!((again.id, again.delivery_attempt), (paid0, 2));
    assert_eq!(session.ack(&[again.id]).await.ids, vec![paid0]);

    env.publish("orders.created", "created 2").await;
    let paid1 = env.publish("orders.paid", "paid 1").await;
    assert_eq!(paid1, 5);
    let second = session.event().await;
    assert_eq!((second.id, second.delivery_attempt), (paid1, 1));
    assert_eq!(value_of(&second), "paid 1");
    let info = env.consumer_info("orders", "payments").await;
    assert_eq!(
        (
            info.delivered.consumer_sequence,
            info.delivered.stream_sequence
        ),
        (3, paid1),
        "the third delivery of the consumer carries id 5"
    );
    assert_eq!(session.ack(&[second.id]).await.ids, vec![paid1]);
}

#[tokio::test]
async fn acks_are_confirmed_in_the_next_message_and_settle_each_id_once() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let mut session = env.subscribe("orders", "worker").max(1).await;

    let unknown = session.ack(&[1]).await;
    assert_eq!(unknown.invalid_ids, vec![1], "nothing was delivered yet");
    assert!(unknown.ids.is_empty() && unknown.temporary_failed_ids.is_empty());
    let empty = session.ack(&[]).await;
    assert_eq!(
        empty,
        Default::default(),
        "an empty ack gets an empty confirmation"
    );

    let a = env.publish("orders.created", "a").await;
    let b = env.publish("orders.created", "b").await;
    let first = session.event().await;
    assert_eq!(first.id, a);
    // With one slot, b is pulled only after the ack; the confirmation still comes first.
    let confirmation = session.ack(&[a]).await;
    assert_eq!(confirmation.ids, vec![a]);
    assert!(confirmation.invalid_ids.is_empty() && confirmation.temporary_failed_ids.is_empty());
    let second = session.event().await;
    assert_eq!((second.id, value_of(&second).as_str()), (b, "b"));

    let duplicated = session.ack(&[b, b]).await;
    assert_eq!(duplicated.ids, vec![b], "the first occurrence is settled");
    assert_eq!(duplicated.invalid_ids, vec![b], "the repeat is invalid");
    let again = session.ack(&[a]).await;
    assert_eq!(again.invalid_ids, vec![a], "a second ack of the same id");
    assert!(again.ids.is_empty());
    let mixed = session.ack(&[7, b, 9]).await;
    assert_eq!(mixed.invalid_ids, vec![7, b, 9], "request order is kept");

    let info = env
        .consumer_info_until("orders", "worker", "both acks reach JetStream", |info| {
            info.num_ack_pending == 0 && info.ack_floor.stream_sequence == b
        })
        .await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(
        info.delivered.consumer_sequence, 2,
        "each event was delivered exactly once"
    );
}

#[tokio::test]
async fn rejects_redeliver_now_later_or_never() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    // A long processing timeout, so every redelivery seen here comes from a reject.
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .timeout(Duration::from_secs(60))
        .ensure()
        .await;
    let mut session = env.subscribe("orders", "worker").await;

    let unknown = session.reject(&[1]).await;
    assert_eq!(unknown.invalid_ids, vec![1]);
    assert!(unknown.ids.is_empty());

    // Plain reject: redelivered at once with the same data.
    let request = publish_request("orders.created", "a");
    let a = env
        .client
        .publish_event(request.clone())
        .await
        .expect("publish")
        .into_inner()
        .id;
    let event = session.event().await;
    assert_eq!((event.id, event.delivery_attempt), (a, 1));
    let rejected = session.reject(&[a]).await;
    assert_eq!(rejected.ids, vec![a]);
    assert!(rejected.invalid_ids.is_empty() && rejected.temporary_failed_ids.is_empty());
    let again = session.event().await;
    assert_eq!((again.id, again.delivery_attempt), (a, 2));
    assert_eq!(
        again.data, request.data,
        "the redelivery carries the same data"
    );
    assert_eq!(session.ack(&[a]).await.ids, vec![a]);

    // Reject with a delay: the id is no longer held, so a second reject is invalid, and the
    // confirmation of the second is the very next message.
    let b = env.publish("orders.created", "b").await;
    assert_eq!(session.event().await.id, b);
    let delay = Duration::from_millis(300);
    assert_eq!(session.reject(&[b]).delay(delay).await.ids, vec![b]);
    let twice = session.reject(&[b]).delay(delay).await;
    assert_eq!(twice.invalid_ids, vec![b]);
    assert!(twice.ids.is_empty());
    let later = session.event().await;
    assert_eq!((later.id, later.delivery_attempt), (b, 2));
    assert_eq!(value_of(&later), "b");
    assert_eq!(session.ack(&[b]).await.ids, vec![b]);

    // Permanent reject: gone for good.
    let c = env.publish("orders.created", "c").await;
    assert_eq!(session.event().await.id, c);
    let terminated = session.reject(&[c]).permanently().await;
    assert_eq!(terminated.ids, vec![c]);
    env.consumer_info_until("orders", "worker", "the term reaches JetStream", |info| {
        info.num_ack_pending == 0 && info.ack_floor.stream_sequence == c
    })
    .await;
    let marker = env.publish("orders.created", "marker").await;
    let next = session.event().await;
    assert_eq!(
        (next.id, value_of(&next).as_str()),
        (marker, "marker"),
        "the permanently rejected event is not delivered again"
    );
    assert_eq!(
        session.reject(&[c]).permanently().await.invalid_ids,
        vec![c]
    );
    assert_eq!(session.ack(&[marker]).await.ids, vec![marker]);
}

#[tokio::test]
async fn requests_before_a_subscribe_end_the_stream_with_invalid_argument() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;

    let mut session = env.open_events().await;
    session
        .send(events_request::Request::Ack(events_request::Ack {
            ids: vec![1],
        }))
        .await;
    assert_ends_with(&mut session, Code::InvalidArgument, "subscribe").await;

    let mut session = env.open_events().await;
    session.send_raw(EventsRequest { request: None }).await;
    assert_ends_with(&mut session, Code::InvalidArgument, "subscribe").await;

    let mut session = env.open_events().await;
    session.close_send();
    assert_ends_with(&mut session, Code::InvalidArgument, "subscribe").await;

    assert_still_usable(&mut env, "orders", "orders.created").await;
}

#[tokio::test]
async fn subscribe_checks_names_the_consumer_and_the_limit() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;

    let cases: [(&str, &str, Option<u64>, Code, &str); 8] = [
        ("", "worker", None, Code::InvalidArgument, "stream"),
        ("a.b", "worker", None, Code::InvalidArgument, "stream"),
        ("orders", "", None, Code::InvalidArgument, "consumer"),
        (
            "orders",
            "bad name",
            None,
            Code::InvalidArgument,
            "consumer",
        ),
        ("orders", "nobody", None, Code::NotFound, "nobody"),
        ("missing", "worker", None, Code::NotFound, "missing"),
        (
            "orders",
            "worker",
            Some(10_001),
            Code::InvalidArgument,
            "max_processing_events",
        ),
        (
            "orders",
            "worker",
            Some(u64::MAX),
            Code::InvalidArgument,
            "max_processing_events",
        ),
    ];
    for (stream, consumer, max, code, needle) in cases {
        let mut subscribing = env.subscribe(stream, consumer);
        if let Some(max) = max {
            subscribing = subscribing.max(max);
        }
        let (_session, first) = subscribing.raw().await;
        match first {
            Err(status) => assert_status::<()>(Err(status), code, needle),
            Ok(other) => panic!("subscribe({stream:?}, {consumer:?}, {max:?}): got {other:?}"),
        }
    }

    // A push consumer made outside Jetway cannot be served.
    env.js
        .get_stream("orders")
        .await
        .expect("stream")
        .create_consumer(push::Config {
            durable_name: Some("pushed".into()),
            deliver_subject: "deliver.here".into(),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create push consumer");
    let (_session, first) = env.subscribe("orders", "pushed").raw().await;
    assert_status(first, Code::FailedPrecondition, "push");

    // Nor a pull consumer without explicit acks: JetStream would ignore its rejects ("none"), or
    // one ack would settle the events of other sessions ("all").
    for (name, ack_policy) in [("unacked", AckPolicy::None), ("ack-all", AckPolicy::All)] {
        env.js
            .get_stream("orders")
            .await
            .expect("stream")
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                ack_policy,
                ..Default::default()
            })
            .await
            .expect("create pull consumer");
        let (_session, first) = env.subscribe("orders", name).raw().await;
        assert_status(first, Code::FailedPrecondition, "explicit acks");
    }

    // The largest limit is accepted, and the subscription works.
    let mut session = env.subscribe("orders", "worker").max(10_000).await;
    let id = env.publish("orders.created", "fine").await;
    assert_eq!(session.event().await.id, id);
    assert_eq!(session.ack(&[id]).await.ids, vec![id]);
}

#[tokio::test]
async fn bad_requests_after_the_subscribe_end_the_stream_and_release_held_events() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    // 30 s: a prompt redelivery below proves the ended session nak'ed what it held.
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .timeout(Duration::from_secs(30))
        .ensure()
        .await;

    let mut session = env.subscribe("orders", "worker").await;
    session.send(subscribe("orders", "worker")).await;
    assert_ends_with(&mut session, Code::FailedPrecondition, "subscribe").await;

    let mut session = env.subscribe("orders", "worker").await;
    session.send_raw(EventsRequest { request: None }).await;
    assert_ends_with(&mut session, Code::InvalidArgument, "request").await;

    let mut session = env.subscribe("orders", "worker").await;
    let id = env.publish("orders.created", "held").await;
    assert_eq!(session.event().await.id, id);
    session
        .send(events_request::Request::Reject(events_request::Reject {
            ids: vec![id],
            permanently: None,
            delay: Some(PbDuration {
                seconds: -1,
                nanos: 0,
            }),
        }))
        .await;
    assert_ends_with(&mut session, Code::InvalidArgument, "reject.delay").await;
    // Issue 17 #8: a delay longer than the longest processing timeout (7 days) is refused too.
    let mut session = env.subscribe("orders", "worker").await;
    assert_eq!(session.event().await.id, id);
    session
        .send(events_request::Request::Reject(events_request::Reject {
            ids: vec![id],
            permanently: None,
            delay: Some(PbDuration {
                seconds: 8 * 24 * 60 * 60,
                nanos: 0,
            }),
        }))
        .await;
    assert_ends_with(
        &mut session,
        Code::InvalidArgument,
        "reject.delay: must be at most",
    )
    .await;

    let mut session = env.subscribe("orders", "worker").await;
    let event = session.event().await;
    assert_eq!(
        (event.id, event.delivery_attempt),
        (id, 3),
        "each failed session nak'ed its event"
    );
    assert_eq!(session.ack(&[id]).await.ids, vec![id]);

    // An earlier event, from the start, on a fresh consumer: the server is fine.
    let from_start = env
        .consumer("orders")
        .subjects(&["orders.>"])
        .from(Pointer::Start(true))
        .ensure()
        .await;
    let mut session = env.subscribe("orders", &from_start).await;
    assert_eq!(session.event().await.id, id);
    assert_still_usable(&mut env, "orders", "orders.other").await;
}

/// A request tonic cannot accept (here: above its 4 MiB limit) ends the session with tonic's status,
/// before the subscribe as after it, instead of an OK that reads as a normal end; what the session
/// held goes back to JetStream.
#[tokio::test]
async fn a_request_too_large_ends_the_session_with_its_status() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;

    let mut session = env.open_events().await;
    session
        .send(subscribe("orders", &"w".repeat(5 << 20)))
        .await;
    assert_ends_with(
        &mut session,
        Code::ResourceExhausted,
        "GRPC_MAX_MESSAGE_BYTES",
    )
    .await;

    let mut session = env.subscribe("orders", "worker").await;
    let id = env.publish("orders.created", "held").await;
    assert_eq!(session.event().await.id, id);
    session
        .send(events_request::Request::Ack(events_request::Ack {
            ids: vec![id; 5 << 20],
        }))
        .await;
    assert_ends_with(
        &mut session,
        Code::ResourceExhausted,
        "GRPC_MAX_MESSAGE_BYTES",
    )
    .await;

    let mut session = env.subscribe("orders", "worker").await;
    let event = session.event().await;
    assert_eq!((event.id, event.delivery_attempt), (id, 2), "not acked");
    assert_eq!(session.ack(&[id]).await.ids, vec![id]);
}
