//! EnsureConsumer and DeleteConsumer over gRPC, checked in JetStream: ephemeral and durable defaults,
//! filters, start positions, updates that keep a durable's position, validation, and the cap on
//! unnamed consumers per stream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures::StreamExt;
use jetway_api::{
    google::protobuf::{Duration as PbDuration, Timestamp},
    jetway::events::v1 as api,
    windshift::events::v1alpha1::{
        DeleteConsumerRequest, EnsureConsumerRequest, StreamPointer, stream_pointer::Pointer,
    },
};
use jetway_core::consumers::DEFAULT_MAX_UNNAMED_PER_STREAM;
use jetway_server::config::Limits;
use jetway_testkit::eventually;
use tonic::{Code, Status};

use crate::{
    clients::{self, collect, next},
    harness::{Env, RECV_GUARD, assert_status, value_of},
};

const HOUR: Duration = Duration::from_secs(60 * 60);

/// An unnamed consumer of every subject of `stream`; the [`RequestFixture`] steps add the rest.
fn request(stream: &str) -> EnsureConsumerRequest {
    EnsureConsumerRequest {
        stream: stream.into(),
        name: None,
        subjects: Vec::new(),
        from: None,
        processing_timeout: None,
    }
}

/// The steps of the [`request`] fixture, each setting one field.
trait RequestFixture {
    /// A durable consumer called `name`.
    fn named(self, name: &str) -> Self;
    /// Only events on these subjects.
    fn subjects(self, subjects: &[&str]) -> Self;
}

impl RequestFixture for EnsureConsumerRequest {
    fn named(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    fn subjects(mut self, subjects: &[&str]) -> Self {
        self.subjects = subjects.iter().map(|s| s.to_string()).collect();
        self
    }
}

async fn try_ensure(env: &mut Env, request: EnsureConsumerRequest) -> Result<String, Status> {
    env.client
        .ensure_consumer(request)
        .await
        .map(|r| r.into_inner().id)
}

/// An ephemeral consumer starting after year 9999.
async fn try_ensure_far_future(env: &mut Env) -> Result<String, Status> {
    let far = Timestamp {
        seconds: 300_000_000_000,
        nanos: 0,
    };
    try_ensure(
        env,
        EnsureConsumerRequest {
            from: Some(StreamPointer {
                pointer: Some(Pointer::Time(far)),
            }),
            ..request("orders").subjects(&["orders.>"])
        },
    )
    .await
}

fn delete(stream: &str, id: &str) -> DeleteConsumerRequest {
    DeleteConsumerRequest {
        stream: stream.into(),
        id: id.into(),
    }
}

/// A UUID in its canonical form, version 4, as Windshift names ephemeral consumers.
fn is_uuid_v4(id: &str) -> bool {
    let groups: Vec<_> = id.split('-').collect();
    let lengths: Vec<_> = groups.iter().map(|g| g.len()).collect();
    lengths == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
        && groups[2].starts_with('4')
}

#[tokio::test]
async fn ephemeral_and_durable_consumers_get_the_windshift_defaults() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>", "audit.>"]).await;

    let ephemeral = env
        .consumer("orders")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    assert!(is_uuid_v4(&ephemeral), "{ephemeral:?} is not a UUID v4");
    let info = env.consumer_info("orders", &ephemeral).await;
    assert_eq!(info.name, ephemeral);
    assert_eq!(info.config.durable_name, None);
    assert_eq!(info.config.inactive_threshold, HOUR);
    assert_eq!(info.config.ack_policy, AckPolicy::Explicit);
    assert_eq!(info.config.ack_wait, Duration::from_secs(30));
    assert_eq!(info.config.deliver_policy, DeliverPolicy::New);
    assert_eq!(info.config.filter_subject, "orders.>");
    assert!(info.config.filter_subjects.is_empty());

    // An empty name is ephemeral too, and every call makes a new consumer.
    let again = env
        .consumer("orders")
        .named("")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    assert!(is_uuid_v4(&again), "{again:?} is not a UUID v4");
    assert_ne!(again, ephemeral);
    assert_eq!(
        env.consumer_info("orders", &again)
            .await
            .config
            .inactive_threshold,
        HOUR
    );

    let durable = env
        .consumer("orders")
        .named("worker")
        .subjects(&["orders.>", "audit.>"])
        .ensure()
        .await;
    assert_eq!(durable, "worker");
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(info.config.durable_name.as_deref(), Some("worker"));
    assert_eq!(info.config.inactive_threshold, 30 * 24 * HOUR);
    assert_eq!(info.config.ack_wait, Duration::from_secs(30));
    assert_eq!(info.config.deliver_policy, DeliverPolicy::New);
    assert_eq!(info.config.filter_subject, "");
    assert_eq!(info.config.filter_subjects, ["orders.>", "audit.>"]);
}

#[tokio::test]
async fn durable_updates_switch_filters_and_keep_the_timeout() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let filters = |info: &async_nats::jetstream::consumer::Info| {
        (
            info.config.filter_subject.clone(),
            info.config.filter_subjects.clone(),
        )
    };

    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.a"])
        .timeout(Duration::from_secs(5))
        .ensure()
        .await;
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(filters(&info), ("orders.a".into(), vec![]));
    assert_eq!(info.config.ack_wait, Duration::from_secs(5));

    // One subject to another.
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.b"])
        .ensure()
        .await;
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(filters(&info), ("orders.b".into(), vec![]));
    assert_eq!(
        info.config.ack_wait,
        Duration::from_secs(5),
        "an update without processing_timeout keeps the current one"
    );

    // One to two.
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.a", "orders.b"])
        .ensure()
        .await;
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(
        filters(&info),
        (String::new(), vec!["orders.a".into(), "orders.b".into()])
    );

    // Part A #5: two back to one (upstream left both fields set and NATS refused).
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.c"])
        .timeout(Duration::from_secs(7))
        .ensure()
        .await;
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(filters(&info), ("orders.c".into(), vec![]));
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
    assert_eq!(info.config.inactive_threshold, 30 * 24 * HOUR);
}

#[tokio::test]
async fn start_positions_map_to_deliver_policies() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut policy = async |name: &str, from: Option<Pointer>| {
        let mut consumer = env.consumer("orders").named(name).subjects(&["orders.>"]);
        if let Some(from) = from {
            consumer = consumer.from(from);
        }
        consumer.ensure().await;
        env.consumer_info("orders", name)
            .await
            .config
            .deliver_policy
    };

    assert_eq!(policy("default", None).await, DeliverPolicy::New);
    assert_eq!(
        policy("end", Some(Pointer::End(true))).await,
        DeliverPolicy::New
    );
    assert_eq!(
        policy("zero", Some(Pointer::Offset(0))).await,
        DeliverPolicy::New
    );
    assert_eq!(
        policy("start", Some(Pointer::Start(true))).await,
        DeliverPolicy::All
    );
    assert_eq!(
        policy("offset", Some(Pointer::Offset(1))).await,
        DeliverPolicy::ByStartSequence { start_sequence: 1 }
    );
    let at = UNIX_EPOCH + Duration::from_millis(1_720_779_072_123);
    match policy("time", Some(Pointer::Time(Timestamp::from(at)))).await {
        DeliverPolicy::ByStartTime { start_time } => assert_eq!(
            start_time.unix_timestamp_nanos(),
            1_720_779_072_123_000_000,
            "the start time is stored as given"
        ),
        other => panic!("expected ByStartTime, got {other:?}"),
    }
    // A start position only applies on creation; an update keeps the consumer where it is.
    assert_eq!(
        policy("default", Some(Pointer::Start(true))).await,
        DeliverPolicy::New
    );
    // A recent time is accepted too (the ephemeral path).
    let id = env
        .client
        .ensure_consumer(EnsureConsumerRequest {
            from: Some(StreamPointer {
                pointer: Some(Pointer::Time(SystemTime::now().into())),
            }),
            ..request("orders").subjects(&["orders.>"])
        })
        .await
        .expect("ephemeral from a time")
        .into_inner()
        .id;
    assert!(matches!(
        env.consumer_info("orders", &id).await.config.deliver_policy,
        DeliverPolicy::ByStartTime { .. }
    ));
}

/// Issue 17 #6: JetStream keeps sequences as signed 64-bit numbers on disk, and a durable consumer
/// starting past 2^63−1 was accepted and then lost when nats-server restarted ("corrupt state
/// file"). Such an offset is refused; the largest one accepted survives a restart.
#[tokio::test]
async fn an_offset_beyond_signed_64_bits_is_refused_and_the_largest_survives_a_restart() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let from_offset = |offset: u64| {
        Some(StreamPointer {
            pointer: Some(Pointer::Offset(offset)),
        })
    };
    for offset in [u64::MAX, i64::MAX as u64 + 1] {
        assert_status(
            try_ensure(
                &mut env,
                EnsureConsumerRequest {
                    from: from_offset(offset),
                    ..request("orders").named("beyond").subjects(&["orders.>"])
                },
            )
            .await,
            Code::InvalidArgument,
            "from.offset",
        );
    }
    let mut jetway = crate::clients::events(&env).await;
    let jetway_request = jetway_api::jetway::events::v1::EnsureConsumerRequest {
        from: Some(jetway_api::jetway::events::v1::StreamPointer {
            pointer: Some(jetway_api::jetway::events::v1::stream_pointer::Pointer::Id(
                u64::MAX,
            )),
        }),
        ..crate::clients::consumer("orders", "beyond", &["orders.>"])
    };
    assert_status(
        jetway.ensure_consumer(jetway_request).await,
        Code::InvalidArgument,
        "from.id",
    );

    let last = i64::MAX as u64;
    env.consumer("orders")
        .named("last")
        .subjects(&["orders.>"])
        .from(Pointer::Offset(last))
        .ensure()
        .await;
    env.nats.restart();
    // A fresh connection: the harness's own one reconnects on its own schedule. The server is ready
    // once it accepts clients, and it restores streams and their consumers before that.
    let js = async_nats::jetstream::new(
        async_nats::connect(env.nats.url())
            .await
            .expect("connect after the restart"),
    );
    let stream = js.get_stream("orders").await.expect("the stream is back");
    let info = stream
        .consumer_info("last")
        .await
        .expect("the consumer survived the restart");
    assert_eq!(
        info.config.deliver_policy,
        DeliverPolicy::ByStartSequence {
            start_sequence: last
        }
    );
    assert!(
        stream.consumer_info("beyond").await.is_err(),
        "nothing refused was created"
    );
}

/// Issue 17 #9: JetStream compares start times as signed 64-bit nanoseconds since 1970, which
/// cover only the years 1678 to 2262. A start time after 2262 meant "from the beginning" and one
/// before 1678 "nothing"; now a time after the last event means "nothing yet" and one before the
/// first "everything", on both EnsureConsumer APIs.
#[tokio::test]
async fn start_times_beyond_what_jetstream_counts_keep_their_meaning() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    for value in ["one", "two", "three"] {
        env.publish("orders.created", value).await;
    }
    let year_3000 = Timestamp {
        seconds: 32_503_680_000,
        nanos: 0,
    };
    let year_1600 = Timestamp {
        seconds: -11_676_096_000,
        nanos: 0,
    };
    let mut jetway = crate::clients::events(&env).await;
    for (name, time, pending) in [
        ("future", year_3000, 0),
        ("past", year_1600, 3),
        ("epoch", Timestamp::default(), 3),
    ] {
        env.consumer("orders")
            .named(name)
            .subjects(&["orders.>"])
            .from(Pointer::Time(time))
            .ensure()
            .await;
        let info = env.consumer_info("orders", name).await;
        assert_eq!(info.num_pending, pending, "Windshift, from {time:?}");

        let ext = format!("{name}-ext");
        jetway
            .ensure_consumer(jetway_api::jetway::events::v1::EnsureConsumerRequest {
                from: Some(jetway_api::jetway::events::v1::StreamPointer {
                    pointer: Some(
                        jetway_api::jetway::events::v1::stream_pointer::Pointer::Time(time),
                    ),
                }),
                ..crate::clients::consumer("orders", &ext, &["orders.>"])
            })
            .await
            .expect("ensure consumer");
        let info = env.consumer_info("orders", &ext).await;
        assert_eq!(info.num_pending, pending, "Jetway, from {time:?}");
    }
}

#[tokio::test]
async fn updating_a_durable_keeps_its_position() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    for value in ["one", "two", "three"] {
        env.publish("orders.created", value).await;
    }
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .from(Pointer::Start(true))
        .ensure()
        .await;

    // Process the first two events directly over JetStream.
    let consumer: PullConsumer = env
        .js
        .get_stream("orders")
        .await
        .expect("stream")
        .get_consumer("worker")
        .await
        .expect("consumer");
    let mut batch = consumer
        .batch()
        .max_messages(2)
        .expires(RECV_GUARD)
        .messages()
        .await
        .expect("pull");
    let mut sequences = Vec::new();
    while let Some(message) = batch.next().await {
        let message = message.expect("a message");
        sequences.push(message.info().expect("metadata").stream_sequence);
        message.double_ack().await.expect("ack");
    }
    assert_eq!(sequences, [1, 2]);

    // Re-ensure with another timeout and other filters: the position must survive.
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.created", "orders.updated"])
        .timeout(Duration::from_secs(45))
        .ensure()
        .await;
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(info.config.ack_wait, Duration::from_secs(45));
    assert_eq!(info.ack_floor.stream_sequence, 2);
    assert_eq!(info.delivered.stream_sequence, 2);
    assert_eq!(info.num_pending, 1);

    let mut session = env.subscribe("orders", "worker").await;
    let event = session.event().await;
    assert_eq!((event.id, value_of(&event)), (3, "three".to_owned()));
    assert_eq!(event.delivery_attempt, 1);
}

#[tokio::test]
async fn invalid_consumer_requests_are_rejected_by_field() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;

    assert_status(
        try_ensure(
            &mut env,
            EnsureConsumerRequest {
                processing_timeout: Some(PbDuration {
                    seconds: 0,
                    nanos: 0,
                }),
                ..request("orders").named("worker").subjects(&["orders.>"])
            },
        )
        .await,
        Code::InvalidArgument,
        "processing_timeout",
    );
    // Three years: longer than Jetway tracks a delivery.
    let too_long = EnsureConsumerRequest {
        processing_timeout: Some(PbDuration {
            seconds: 100_000_000,
            nanos: 0,
        }),
        ..request("orders").named("worker").subjects(&["orders.>"])
    };
    assert_status(
        try_ensure(&mut env, too_long).await,
        Code::InvalidArgument,
        "processing_timeout",
    );
    assert_status(
        try_ensure(&mut env, request("orders").named("worker")).await,
        Code::InvalidArgument,
        "subjects",
    );
    for bad in ["a b", "a.*b", "orders..x", "orders.>.x"] {
        assert_status(
            try_ensure(&mut env, request("orders").subjects(&[bad])).await,
            Code::InvalidArgument,
            "subjects[0]",
        );
    }
    assert_status(
        try_ensure(&mut env, request("orders").subjects(&["orders.a", "a b"])).await,
        Code::InvalidArgument,
        "subjects[1]",
    );
    for bad in ["", "a.b", "a b"] {
        assert_status(
            try_ensure(
                &mut env,
                request(bad).named("worker").subjects(&["orders.>"]),
            )
            .await,
            Code::InvalidArgument,
            "stream",
        );
    }
    for bad in ["a.b", "a b", "a*"] {
        assert_status(
            try_ensure(
                &mut env,
                request("orders").named(bad).subjects(&["orders.>"]),
            )
            .await,
            Code::InvalidArgument,
            "name",
        );
    }
    assert_status(
        try_ensure(
            &mut env,
            request("missing").named("worker").subjects(&["orders.>"]),
        )
        .await,
        Code::NotFound,
        "missing",
    );
    assert_status(
        try_ensure(&mut env, request("missing").subjects(&["orders.>"])).await,
        Code::NotFound,
        "missing",
    );

    // A start time after year 9999 used to panic the handler.
    assert_status(
        try_ensure_far_future(&mut env).await,
        Code::InvalidArgument,
        "from.time",
    );

    // Part A #17: filters may start with a wildcard.
    for filter in ["*.created", ">"] {
        let id = try_ensure(&mut env, request("orders").subjects(&[filter]))
            .await
            .unwrap_or_else(|status| panic!("filter {filter:?}: {status:?}"));
        assert_eq!(
            env.consumer_info("orders", &id).await.config.filter_subject,
            filter
        );
    }

    // Nothing invalid was created, and the server still works after the errors.
    let stream = env.js.get_stream("orders").await.expect("stream");
    assert!(stream.consumer_info("worker").await.is_err());
    let id = env
        .consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    assert_eq!(id, "worker");
}

/// Issue 17 #8: a processing timeout of 1 ns was accepted, and JetStream redelivered the event
/// thousands of times a second. Processing timeouts and backoff entries are at least 1 s, on both
/// EnsureConsumer APIs.
#[tokio::test]
async fn processing_timeouts_and_backoff_entries_shorter_than_a_second_are_refused() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let nanosecond = PbDuration {
        seconds: 0,
        nanos: 1,
    };
    let just_under = PbDuration {
        seconds: 0,
        nanos: 999_999_999,
    };
    for timeout in [nanosecond, just_under] {
        assert_status(
            try_ensure(
                &mut env,
                EnsureConsumerRequest {
                    processing_timeout: Some(timeout),
                    ..request("orders").named("storm").subjects(&["orders.>"])
                },
            )
            .await,
            Code::InvalidArgument,
            "processing_timeout: must be at least 1s",
        );
    }

    let mut jetway = crate::clients::events(&env).await;
    let base = || crate::clients::consumer("orders", "storm", &["orders.>"]);
    assert_status(
        jetway
            .ensure_consumer(jetway_api::jetway::events::v1::EnsureConsumerRequest {
                processing_timeout: Some(nanosecond),
                ..base()
            })
            .await,
        Code::InvalidArgument,
        "processing_timeout: must be at least 1s",
    );
    assert_status(
        jetway
            .ensure_consumer(jetway_api::jetway::events::v1::EnsureConsumerRequest {
                backoff: vec![PbDuration::from(Duration::from_secs(1)), nanosecond],
                ..base()
            })
            .await,
        Code::InvalidArgument,
        "backoff[1]: must be at least 1s",
    );
    let stream = env.js.get_stream("orders").await.expect("stream");
    assert!(
        stream.consumer_info("storm").await.is_err(),
        "nothing refused was created"
    );

    // One second, the shortest accepted, on both APIs.
    env.consumer("orders")
        .named("quick")
        .subjects(&["orders.>"])
        .timeout(Duration::from_secs(1))
        .ensure()
        .await;
    assert_eq!(
        env.consumer_info("orders", "quick").await.config.ack_wait,
        Duration::from_secs(1)
    );
    jetway
        .ensure_consumer(jetway_api::jetway::events::v1::EnsureConsumerRequest {
            backoff: vec![PbDuration::from(Duration::from_secs(1))],
            ..crate::clients::consumer("orders", "quick-ext", &["orders.>"])
        })
        .await
        .expect("a one-second backoff");
}

/// Issue 17 #18: a filter outside the stream's subjects was accepted, and the consumer never
/// delivered anything. It is refused on both EnsureConsumer APIs, naming the filter; a filter that
/// overlaps the stream's subjects (narrower, wider or crossing) is fine, and so is any filter on a
/// mirror or an aggregate, whose events keep their sources' subjects.
#[tokio::test]
async fn a_filter_outside_the_streams_subjects_is_refused() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>", "audit.*"]).await;
    for (filters, field) in [
        (&["other.>"][..], "subjects[0]"),
        (&["orders.created", "other.created"][..], "subjects[1]"),
        (&["orders"][..], "subjects[0]"),
        (&["audit.a.b"][..], "subjects[0]"),
    ] {
        assert_status(
            try_ensure(&mut env, request("orders").named("lost").subjects(filters)).await,
            Code::InvalidArgument,
            field,
        );
        assert_status(
            try_ensure(&mut env, request("orders").subjects(filters)).await,
            Code::InvalidArgument,
            "matches none of the subjects of stream orders",
        );
    }
    let mut jetway = crate::clients::events(&env).await;
    assert_status(
        jetway
            .ensure_consumer(crate::clients::consumer("orders", "lost", &["other.>"]))
            .await,
        Code::InvalidArgument,
        "subjects[0]",
    );
    let stream = env.js.get_stream("orders").await.expect("stream");
    assert!(
        stream.consumer_info("lost").await.is_err(),
        "nothing refused was created"
    );

    for (name, filters) in [
        ("narrower", &["orders.created.eu"][..]),
        ("wider", &[">"][..]),
        ("crossing", &["*.created"][..]),
        ("several", &["orders.a", "audit.b"][..]),
    ] {
        try_ensure(&mut env, request("orders").named(name).subjects(filters))
            .await
            .unwrap_or_else(|status| panic!("{filters:?}: {status:?}"));
    }

    // A mirror has no subjects of its own: its events keep those of its source.
    env.client
        .ensure_stream(jetway_api::windshift::events::v1alpha1::EnsureStreamRequest {
            name: "copy".into(),
            source: Some(
                jetway_api::windshift::events::v1alpha1::ensure_stream_request::Source::Mirror(
                    jetway_api::windshift::events::v1alpha1::ensure_stream_request::StreamSource {
                        name: "orders".into(),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        })
        .await
        .expect("mirror");
    try_ensure(
        &mut env,
        request("copy").named("reader").subjects(&["orders.>"]),
    )
    .await
    .expect("a filter on a mirror");
}

#[tokio::test]
async fn delete_consumer_removes_it_once() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let ephemeral = env
        .consumer("orders")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let stream = env.js.get_stream("orders").await.expect("stream");

    env.client
        .delete_consumer(delete("orders", "worker"))
        .await
        .expect("delete durable");
    assert!(stream.consumer_info("worker").await.is_err());
    env.client
        .delete_consumer(delete("orders", &ephemeral))
        .await
        .expect("delete ephemeral");
    assert!(stream.consumer_info(&ephemeral).await.is_err());

    assert_status(
        env.client.delete_consumer(delete("orders", "worker")).await,
        Code::NotFound,
        "worker",
    );
    assert_status(
        env.client
            .delete_consumer(delete("missing", "worker"))
            .await,
        Code::NotFound,
        "missing",
    );
    assert_status(
        env.client.delete_consumer(delete("a.b", "worker")).await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        env.client.delete_consumer(delete("orders", "a b")).await,
        Code::InvalidArgument,
        "id",
    );
    assert_status(
        env.client.delete_consumer(delete("orders", "")).await,
        Code::InvalidArgument,
        "id",
    );

    // A deleted durable can be declared again, and starts afresh.
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    assert_eq!(
        env.consumer_info("orders", "worker")
            .await
            .config
            .durable_name
            .as_deref(),
        Some("worker")
    );
}

/// Unnamed EnsureConsumer calls, through either API, stop at their cap per stream
/// (`MAX_UNNAMED_CONSUMERS_PER_STREAM`), also when they come at once; named consumers, other
/// streams and reads are not held back, and a deleted unnamed consumer frees its place.
#[tokio::test]
async fn unnamed_consumers_stop_at_their_cap_per_stream() {
    let limits = Limits {
        max_unnamed_consumers_per_stream: 3,
        ..Limits::default()
    };
    let mut env = Env::start_with(limits).await;
    env.stream("orders", &["orders.>"]).await;
    env.stream("audit", &["audit.>"]).await;
    let mut jetway = clients::events(&env).await;
    // A live feed (and its consumer) open throughout: Jetway's own readers are not counted.
    let mut feed = jetway
        .subscribe(api::SubscribeRequest {
            subject: "orders.>".into(),
            stream: "orders".into(),
        })
        .await
        .expect("subscribe")
        .into_inner();

    let attempts = (0..10).map(|_| {
        let mut client = env.client.clone();
        async move {
            client
                .ensure_consumer(request("orders").subjects(&["orders.>"]))
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let created: Vec<String> = results
        .iter()
        .filter_map(|result| result.as_ref().ok().map(|r| r.get_ref().id.clone()))
        .collect();
    assert_eq!(created.len(), 3, "{results:?}");
    for refused in results.into_iter().filter(Result::is_err) {
        assert_status(
            refused,
            Code::ResourceExhausted,
            "MAX_UNNAMED_CONSUMERS_PER_STREAM",
        );
    }
    let unnamed = api::EnsureConsumerRequest {
        stream: "orders".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    };
    assert_status(
        jetway.ensure_consumer(unnamed.clone()).await,
        Code::ResourceExhausted,
        "stream orders has 3 unnamed consumers",
    );

    // Everything else still works.
    try_ensure(&mut env, request("audit").subjects(&["audit.>"]))
        .await
        .expect("another stream has a cap of its own");
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let id = env.publish("orders.created", "after the cap").await;
    assert_eq!(next(&mut feed).await.event.expect("an event").id, id);
    let read = jetway
        .read_events(api::ReadEventsRequest {
            stream: "orders".into(),
            ..Default::default()
        })
        .await
        .expect("read")
        .into_inner();
    assert_eq!(collect(read).await.expect("read to the end").len(), 1);

    env.client
        .delete_consumer(delete("orders", &created[0]))
        .await
        .expect("delete one");
    jetway
        .ensure_consumer(unnamed)
        .await
        .expect("a deleted one frees its place");
}

/// Where the 1,000 of issue 17 comes from: nats-server 2.15 gives a stream created with
/// `max_consumers: -1` (as Jetway creates them) a limit of 1,000 consumers all the same
/// (`jetstream { limits { default_max_consumers } }`), counting every consumer, so 1,000 unnamed
/// ones used to lock every read, live subscription and new consumer out of the stream for an hour.
/// Unnamed ones now stop at half of that by default.
#[tokio::test]
async fn unnamed_consumers_leave_room_within_nats_servers_default_limit() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    assert_eq!(env.stream_info("orders").await.config.max_consumers, -1);
    let mut jetway = clients::events(&env).await;
    for _ in 0..DEFAULT_MAX_UNNAMED_PER_STREAM {
        try_ensure(&mut env, request("orders").subjects(&["orders.>"]))
            .await
            .expect("below the cap");
    }
    assert_status(
        try_ensure(&mut env, request("orders").subjects(&["orders.>"])).await,
        Code::ResourceExhausted,
        "MAX_UNNAMED_CONSUMERS_PER_STREAM",
    );

    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let mut feed = jetway
        .subscribe(api::SubscribeRequest {
            subject: "orders.>".into(),
            stream: "orders".into(),
        })
        .await
        .expect("subscribe at the cap")
        .into_inner();
    let id = env.publish("orders.created", "x").await;
    assert_eq!(next(&mut feed).await.event.expect("an event").id, id);
    let before_read = env.stream_info("orders").await.state.consumer_count;
    let read = jetway
        .read_events(api::ReadEventsRequest {
            stream: "orders".into(),
            ..Default::default()
        })
        .await
        .expect("read at the cap")
        .into_inner();
    assert_eq!(collect(read).await.expect("read to the end").len(), 1);
    // The read deletes its consumer in the background once it ends; counted before that, it
    // would make room for one more below.
    eventually("the read's consumer is deleted", || async {
        let count = env.stream_info("orders").await.state.consumer_count;
        (count == before_read).then_some(())
    })
    .await;

    // The rest of nats-server's 1,000, taken directly.
    let stream = env.js.get_stream("orders").await.expect("stream");
    let mut count = before_read;
    let refusal = loop {
        assert!(count <= 1000, "nats-server took more than 1,000 consumers");
        let config = pull::Config {
            name: Some(format!("direct-{count}")),
            ..Default::default()
        };
        match stream.create_consumer(config).await {
            Ok(_) => count += 1,
            Err(err) => break err,
        }
    };
    assert_eq!(count, 1000, "{refusal}");
    assert!(
        refusal
            .to_string()
            .contains("maximum consumers limit reached"),
        "{refusal}"
    );
    // And Jetway says which limit that is.
    assert_status(
        try_ensure(
            &mut env,
            request("orders").named("late").subjects(&["orders.>"]),
        )
        .await,
        Code::ResourceExhausted,
        "default_max_consumers",
    );
}
