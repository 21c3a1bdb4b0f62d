//! PublishEvent over gRPC, checked in JetStream: the stored Windshift message format, ids,
//! idempotency keys, `expected_last_id` per subject, size limits, and validation.

use async_nats::jetstream::message::StreamMessage;
use jetway_api::{
    google::protobuf::{Any, Timestamp},
    windshift::{
        events::v1alpha1::{EnsureStreamRequest, PublishEventRequest},
        test::v1::StringValue,
    },
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tonic::{Code, Status};

use crate::harness::{Env, assert_status, publish_request, stream_request};

const TRACE_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

async fn try_publish(env: &mut Env, request: PublishEventRequest) -> Result<u64, Status> {
    env.client
        .publish_event(request)
        .await
        .map(|r| r.into_inner().id)
}

fn with_key(subject: &str, value: &str, key: &str) -> PublishEventRequest {
    PublishEventRequest {
        idempotency_key: Some(key.into()),
        ..publish_request(subject, value)
    }
}

fn expecting(subject: &str, value: &str, expected_last_id: u64) -> PublishEventRequest {
    PublishEventRequest {
        expected_last_id: Some(expected_last_id),
        ..publish_request(subject, value)
    }
}

async fn stored(env: &Env, stream: &str, sequence: u64) -> StreamMessage {
    env.js
        .get_stream(stream)
        .await
        .expect("stream exists")
        .get_raw_message(sequence)
        .await
        .unwrap_or_else(|e| panic!("message {sequence} of {stream}: {e}"))
}

fn header<'a>(message: &'a StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|v| v.as_str())
}

#[tokio::test]
async fn events_are_stored_in_the_windshift_format() {
    let mut env = Env::start().await;
    env.stream("events", &["events.>"]).await;

    let id = env.publish("events.test", "abc").await;
    assert_eq!(id, 1);
    let message = stored(&env, "events", 1).await;
    assert_eq!(message.subject.as_str(), "events.test");
    let body = Any::pack(&StringValue {
        value: "abc".into(),
    })
    .value;
    assert_eq!(message.payload, body, "the body is the inner message only");
    assert_eq!(
        header(&message, "WS-Data-Type"),
        Some("windshift.test.v1.StringValue")
    );
    let published = header(&message, "WS-Published-Time").expect("WS-Published-Time");
    assert!(published.ends_with('Z'), "{published:?} is not UTC with Z");
    OffsetDateTime::parse(published, &Rfc3339)
        .unwrap_or_else(|e| panic!("{published:?} is not RFC 3339: {e}"));
    for absent in ["Nats-Msg-Id", "WS-Trace-Parent", "WS-Trace-State"] {
        assert_eq!(header(&message, absent), None, "{absent} without a reason");
    }

    // A given timestamp is stored as RFC 3339 in UTC, without trailing zeros.
    let timestamp = Timestamp {
        seconds: 1_720_779_072,
        nanos: 123_400_000,
    };
    let id = try_publish(
        &mut env,
        PublishEventRequest {
            timestamp: Some(timestamp),
            ..publish_request("events.test", "timed")
        },
    )
    .await
    .expect("publish with a timestamp");
    assert_eq!(id, 2);
    assert_eq!(
        header(&stored(&env, "events", 2).await, "WS-Published-Time"),
        Some("2024-07-12T10:11:12.1234Z")
    );

    // The caller's trace context travels as gRPC metadata and is stored with the event.
    let mut request = tonic::Request::new(publish_request("events.other", "traced"));
    request
        .metadata_mut()
        .insert("traceparent", TRACE_PARENT.parse().unwrap());
    request
        .metadata_mut()
        .insert("tracestate", "vendor=value".parse().unwrap());
    let id = env
        .client
        .publish_event(request)
        .await
        .expect("publish with a trace")
        .into_inner()
        .id;
    assert_eq!(id, 3);
    let message = stored(&env, "events", 3).await;
    assert_eq!(header(&message, "WS-Trace-Parent"), Some(TRACE_PARENT));
    assert_eq!(header(&message, "WS-Trace-State"), Some("vendor=value"));

    // Any valid protobuf timestamp, also before 1970 (seconds count down, nanos up).
    let id = try_publish(
        &mut env,
        PublishEventRequest {
            timestamp: Some(Timestamp {
                seconds: -1,
                nanos: 500_000_000,
            }),
            ..publish_request("events.test", "old")
        },
    )
    .await
    .expect("publish with a timestamp before 1970");
    assert_eq!(
        header(&stored(&env, "events", id).await, "WS-Published-Time"),
        Some("1969-12-31T23:59:59.5Z")
    );
    assert_eq!(env.event_count("events").await, 4);
}

#[tokio::test]
async fn idempotency_keys_deduplicate_within_the_stream() {
    let mut env = Env::start().await;
    env.stream("events", &["events.>"]).await;

    let first = try_publish(&mut env, with_key("events.a", "one", "key-1"))
        .await
        .expect("first");
    let again = try_publish(&mut env, with_key("events.a", "one again", "key-1"))
        .await
        .expect("duplicate");
    assert_eq!(
        (first, again),
        (1, 1),
        "a duplicate returns the original id"
    );
    assert_eq!(env.event_count("events").await, 1);
    let message = stored(&env, "events", 1).await;
    assert_eq!(header(&message, "Nats-Msg-Id"), Some("key-1"));

    let other = try_publish(&mut env, with_key("events.a", "two", "key-2"))
        .await
        .expect("other key");
    assert_eq!(other, 2);
    assert_eq!(env.event_count("events").await, 2);

    // Deduplication is per stream, whatever the subject.
    let elsewhere = try_publish(&mut env, with_key("events.b", "one", "key-1"))
        .await
        .expect("same key, other subject");
    assert_eq!(elsewhere, 1);
    assert_eq!(env.event_count("events").await, 2);
}

#[tokio::test]
async fn expected_last_id_is_checked_per_subject() {
    let mut env = Env::start().await;
    env.stream("events", &["events.>"]).await;

    assert_status(
        try_publish(&mut env, expecting("events.a", "x", 1)).await,
        Code::FailedPrecondition,
        "expected_last_id",
    );
    assert_eq!(
        env.event_count("events").await,
        0,
        "a mismatch stores nothing"
    );

    let first = try_publish(&mut env, expecting("events.a", "a1", 0))
        .await
        .expect("expected 0 on an empty subject");
    assert_eq!(first, 1);
    assert_status(
        try_publish(&mut env, expecting("events.a", "a1 again", 0)).await,
        Code::FailedPrecondition,
        "expected_last_id",
    );
    let second = try_publish(&mut env, expecting("events.a", "a2", first))
        .await
        .expect("expected = the last id");
    assert_eq!(second, 2);
    assert_eq!(env.event_count("events").await, 2);

    // Part A #6: the expectation is about the subject, not the stream.
    let other = try_publish(&mut env, expecting("events.b", "b1", 0))
        .await
        .expect("expected 0 on another, empty subject");
    assert_eq!(other, 3);
    assert_status(
        try_publish(&mut env, expecting("events.b", "b2", second)).await,
        Code::FailedPrecondition,
        "expected_last_id",
    );
    let next = try_publish(&mut env, expecting("events.b", "b2", other))
        .await
        .expect("expected = the subject's last id");
    assert_eq!(next, 4);
    assert_eq!(env.event_count("events").await, 4);
}

#[tokio::test]
async fn invalid_publishes_are_rejected_by_field() {
    let mut env = Env::start().await;
    env.stream("events", &["events.>"]).await;

    assert_status(
        try_publish(&mut env, publish_request("nowhere.test", "x")).await,
        Code::NotFound,
        "nowhere.test",
    );
    // Also when something other than JetStream answers there (a core NATS service).
    let nats = async_nats::connect(env.nats.url()).await.unwrap();
    let mut service = nats.subscribe("service.>").await.unwrap();
    nats.flush().await.unwrap();
    let responder = tokio::spawn({
        let nats = nats.clone();
        async move {
            while let Some(request) = futures::StreamExt::next(&mut service).await {
                if let Some(reply) = request.reply {
                    nats.publish(reply, "pong".into()).await.unwrap();
                }
            }
        }
    });
    assert_status(
        try_publish(&mut env, publish_request("service.ping", "x")).await,
        Code::NotFound,
        "no stream is bound to subject service.ping",
    );
    responder.abort();
    assert_status(
        try_publish(
            &mut env,
            PublishEventRequest {
                data: None,
                ..publish_request("events.test", "x")
            },
        )
        .await,
        Code::InvalidArgument,
        "data",
    );
    for bad in [
        "events.*",
        "events.>",
        "",
        "events..a",
        "events.a b",
        ".events",
    ] {
        assert_status(
            try_publish(&mut env, publish_request(bad, "x")).await,
            Code::InvalidArgument,
            "subject",
        );
    }
    // Timestamps outside what RFC 3339 and protobuf allow (a far-future one used to panic the handler).
    for (seconds, what) in [
        (-62_135_596_801, "before year 1"),
        (300_000_000_000, "after year 9999"),
    ] {
        let status = try_publish(
            &mut env,
            PublishEventRequest {
                timestamp: Some(Timestamp { seconds, nanos: 0 }),
                ..publish_request("events.test", "x")
            },
        )
        .await
        .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().contains("timestamp"), "{what}: {status:?}");
    }
    assert_eq!(env.event_count("events").await, 0);

    // The server still works after the errors.
    let id = env.publish("events.test", "fine").await;
    assert_eq!(id, 1);
    assert_eq!(env.event_count("events").await, 1);
}

#[tokio::test]
async fn oversized_events_are_rejected_with_the_limit() {
    let mut env = Env::start().await;
    env.client
        .ensure_stream(EnsureStreamRequest {
            max_event_size: Some(200),
            ..stream_request("small", &["small.>"])
        })
        .await
        .expect("ensure small");
    env.stream("big", &["big.>"]).await;

    // The stream's own limit. It counts the headers too, so a tiny event still fits under it.
    assert_status(
        try_publish(&mut env, publish_request("small.x", &"x".repeat(300))).await,
        Code::InvalidArgument,
        "200 bytes",
    );
    assert_eq!(env.event_count("small").await, 0);

    // Without one, NATS's max payload (1 MiB by default) applies.
    let max_payload = 1024 * 1024;
    let status = try_publish(&mut env, publish_request("big.x", &"x".repeat(max_payload)))
        .await
        .expect_err("over the max payload");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(&format!("{max_payload} bytes")),
        "{:?} should state the limit",
        status.message()
    );
    assert_eq!(env.event_count("big").await, 0);

    // JetStream's 64 KiB of headers, here taken up by the data's type URL (WS-Data-Type).
    let mut request = publish_request("big.x", "x");
    if let Some(data) = request.data.as_mut() {
        data.type_url = format!("type.googleapis.com/{}", "t".repeat(70_000));
    }
    assert_status(
        try_publish(&mut env, request).await,
        Code::InvalidArgument,
        "headers: the event's headers",
    );
    assert_eq!(env.event_count("big").await, 0);

    // Events under the limits still go through.
    let id = env.publish("small.x", "tiny").await;
    assert_eq!(id, 1);
    let id = env.publish("big.x", &"x".repeat(max_payload / 2)).await;
    assert_eq!(id, 1);
}

#[tokio::test]
async fn a_full_stream_that_discards_new_events_is_resource_exhausted() {
    use jetway_api::windshift::events::v1alpha1::ensure_stream_request::{
        DiscardPolicy, RetentionPolicy,
    };
    let mut env = Env::start().await;
    let mut request = stream_request("bounded", &["bounded.>"]);
    request.retention_policy = Some(RetentionPolicy {
        max_events: Some(1),
        discard_policy: Some(DiscardPolicy::New as i32),
        ..Default::default()
    });
    env.client
        .ensure_stream(request)
        .await
        .expect("ensure stream");
    let first = env.publish("bounded.a", "fits").await;
    let full = env
        .client
        .publish_event(publish_request("bounded.a", "refused"))
        .await;
    assert_status(full, Code::ResourceExhausted, "maximum messages");
    assert_eq!(
        env.stream_info("bounded").await.state.last_sequence,
        first,
        "nothing more stored"
    );
}

/// JetStream reports every limit of a discard-new stream under one generic "store failed" code;
/// the byte and per-subject limits are told apart from a failing store like the event count is.
#[tokio::test]
async fn each_limit_of_a_stream_that_discards_new_events_is_resource_exhausted() {
    use jetway_api::windshift::events::v1alpha1::ensure_stream_request::{
        DiscardPolicy, RetentionPolicy,
    };
    let mut env = Env::start().await;
    let limits = [
        (
            "bytes",
            RetentionPolicy {
                max_bytes: Some(300),
                ..Default::default()
            },
            "maximum bytes",
        ),
        (
            "persubject",
            RetentionPolicy {
                max_events_per_subject: Some(1),
                discard_new_per_subject: Some(true),
                ..Default::default()
            },
            "maximum messages per subject",
        ),
    ];
    for (name, policy, limit) in limits {
        let mut request = stream_request(name, &[&format!("{name}.>")]);
        request.retention_policy = Some(RetentionPolicy {
            discard_policy: Some(DiscardPolicy::New as i32),
            ..policy
        });
        env.client
            .ensure_stream(request)
            .await
            .expect("ensure stream");
        let subject = format!("{name}.a");
        let first = env.publish(&subject, "fits").await;
        let full = env
            .client
            .publish_event(publish_request(&subject, &"x".repeat(300)))
            .await;
        assert_status(full, Code::ResourceExhausted, limit);
        assert_eq!(
            env.stream_info(name).await.state.last_sequence,
            first,
            "{name}: nothing more stored"
        );
    }
}
