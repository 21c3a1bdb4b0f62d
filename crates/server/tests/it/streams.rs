//! EnsureStream over gRPC, checked in JetStream: subjects, retention, discard, deduplication, event
//! sizes, storage, mirrors and aggregates, and validation.

use std::time::Duration;

use async_nats::jetstream::stream::{DiscardPolicy, StorageType};
use jetway_api::{
    google::protobuf::{Duration as PbDuration, Timestamp},
    windshift::{
        events::v1alpha1::{
            EnsureStreamRequest, StreamPointer,
            ensure_stream_request::{
                DiscardPolicy as PbDiscard, RetentionPolicy, Source, Storage,
                StorageType as PbStorage, StreamSource, StreamSources,
            },
            stream_pointer::Pointer,
        },
        test::v1::StringValue,
    },
};
use jetway_testkit::eventually;
use tonic::Code;

use crate::harness::{Env, assert_status, stream_request};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(60 * 60);

/// A subjects stream with a retention policy.
fn with_retention(
    name: &str,
    subjects: &[&str],
    retention: RetentionPolicy,
) -> EnsureStreamRequest {
    EnsureStreamRequest {
        retention_policy: Some(retention),
        ..stream_request(name, subjects)
    }
}

/// Stream `name` as a source with no start set; [`SourceFixture::from`] sets one.
fn source(name: &str) -> StreamSource {
    StreamSource {
        name: name.into(),
        from: None,
        filter_subjects: Vec::new(),
    }
}

/// The step of the [`source`] fixture.
trait SourceFixture {
    /// Starts at `pointer`.
    fn from(self, pointer: Pointer) -> Self;
}

impl SourceFixture for StreamSource {
    fn from(mut self, pointer: Pointer) -> Self {
        self.from = Some(StreamPointer {
            pointer: Some(pointer),
        });
        self
    }
}

fn mirror(name: &str, of: StreamSource) -> EnsureStreamRequest {
    EnsureStreamRequest {
        name: name.into(),
        source: Some(Source::Mirror(of)),
        ..Default::default()
    }
}

fn aggregate(name: &str, sources: Vec<StreamSource>) -> EnsureStreamRequest {
    EnsureStreamRequest {
        name: name.into(),
        source: Some(Source::Aggregate(StreamSources { sources })),
        ..Default::default()
    }
}

async fn ensure(env: &mut Env, request: EnsureStreamRequest) {
    let name = request.name.clone();
    env.client
        .ensure_stream(request)
        .await
        .unwrap_or_else(|status| panic!("ensure stream {name}: {status:?}"));
}

/// Waits until `stream` holds exactly `count` messages.
async fn messages_eventually(env: &Env, stream: &str, count: u64) {
    eventually(&format!("{stream} holds {count} messages"), || async {
        (env.stream_info(stream).await.state.messages == count).then_some(())
    })
    .await;
}

/// The StringValue stored at `sequence` in `stream`.
async fn value_at(env: &Env, stream: &str, sequence: u64) -> String {
    let message = env
        .js
        .get_stream(stream)
        .await
        .expect("stream exists")
        .get_raw_message(sequence)
        .await
        .unwrap_or_else(|e| panic!("message {sequence} of {stream}: {e}"));
    let any = jetway_api::google::protobuf::Any {
        type_url: "type.googleapis.com/windshift.test.v1.StringValue".into(),
        value: message.payload,
    };
    any.unpack::<StringValue>()
        .expect("a StringValue")
        .expect("decodes")
        .value
}

#[tokio::test]
async fn subjects_are_set_replaced_and_may_use_wildcards() {
    let mut env = Env::start().await;

    env.stream("orders", &["orders.created"]).await;
    assert_eq!(
        env.stream_info("orders").await.config.subjects,
        ["orders.created"]
    );
    // Re-ensuring replaces the subjects: the old one is removed, the new one added.
    env.stream("orders", &["orders.updated"]).await;
    assert_eq!(
        env.stream_info("orders").await.config.subjects,
        ["orders.updated"]
    );

    env.stream("multi", &["multi", "multi.1.*", "multi.2.>"])
        .await;
    assert_eq!(
        env.stream_info("multi").await.config.subjects,
        ["multi", "multi.1.*", "multi.2.>"]
    );
    env.stream("multi", &["multi", "multi.2.>", "multi.3"])
        .await;
    assert_eq!(
        env.stream_info("multi").await.config.subjects,
        ["multi", "multi.2.>", "multi.3"]
    );

    // Settings Jetway does not manage survive a re-ensure.
    let mut config = env.stream_info("orders").await.config;
    config.description = Some("set directly in JetStream".into());
    env.js.update_stream(config).await.expect("direct update");
    env.stream("orders", &["orders.created"]).await;
    let config = env.stream_info("orders").await.config;
    assert_eq!(config.subjects, ["orders.created"]);
    assert_eq!(
        config.description.as_deref(),
        Some("set directly in JetStream")
    );

    // Subjects that another stream captures are a conflict, not an internal error.
    assert_status(
        env.client
            .ensure_stream(stream_request("overlap", &["orders.>"]))
            .await,
        Code::FailedPrecondition,
        "overlap",
    );

    // Two concurrent creations with the same configuration both succeed.
    let (mut a, mut b) = (env.client.clone(), env.client.clone());
    let (first, second) = tokio::join!(
        a.ensure_stream(stream_request("racy", &["racy.>"])),
        b.ensure_stream(stream_request("racy", &["racy.>"])),
    );
    first.expect("first concurrent ensure");
    second.expect("second concurrent ensure");
    assert_eq!(env.stream_info("racy").await.config.subjects, ["racy.>"]);

    for bad in ["", "a.b", "a b"] {
        assert_status(
            env.client.ensure_stream(stream_request(bad, &["x"])).await,
            Code::InvalidArgument,
            "name",
        );
    }
    let no_source = EnsureStreamRequest {
        name: "nosource".into(),
        ..Default::default()
    };
    assert_status(
        env.client.ensure_stream(no_source).await,
        Code::InvalidArgument,
        "source",
    );
    // The rejected declarations created nothing, and the server still works.
    assert!(env.js.get_stream("nosource").await.is_err());
    env.stream("after-errors", &["after.>"]).await;
    assert_eq!(
        env.stream_info("after-errors").await.config.subjects,
        ["after.>"]
    );
}

#[tokio::test]
async fn retention_limits_are_set_changed_and_removed() {
    let mut env = Env::start().await;
    let limits = |age: Duration, events: u64, bytes: u64, per_subject: u64| RetentionPolicy {
        max_age: Some(age.into()),
        max_events: Some(events),
        max_bytes: Some(bytes),
        max_events_per_subject: Some(per_subject),
        ..Default::default()
    };

    ensure(
        &mut env,
        with_retention("orders", &["orders.>"], limits(HOUR, 100, 1024, 10)),
    )
    .await;
    let config = env.stream_info("orders").await.config;
    assert_eq!(
        (
            config.max_age,
            config.max_messages,
            config.max_bytes,
            config.max_messages_per_subject
        ),
        (HOUR, 100, 1024, 10)
    );

    ensure(
        &mut env,
        with_retention("orders", &["orders.>"], limits(2 * HOUR, 200, 2048, 20)),
    )
    .await;
    let config = env.stream_info("orders").await.config;
    assert_eq!(
        (
            config.max_age,
            config.max_messages,
            config.max_bytes,
            config.max_messages_per_subject
        ),
        (2 * HOUR, 200, 2048, 20)
    );

    // Re-ensuring without a policy removes every limit.
    env.stream("orders", &["orders.>"]).await;
    let config = env.stream_info("orders").await.config;
    assert_eq!(
        (
            config.max_age,
            config.max_messages,
            config.max_bytes,
            config.max_messages_per_subject
        ),
        (Duration::ZERO, -1, -1, -1)
    );

    // A limit can be added later, and replacing max_age by max_events removes the age limit.
    ensure(
        &mut env,
        with_retention(
            "orders",
            &["orders.>"],
            RetentionPolicy {
                max_age: Some(HOUR.into()),
                ..Default::default()
            },
        ),
    )
    .await;
    assert_eq!(env.stream_info("orders").await.config.max_age, HOUR);
    ensure(
        &mut env,
        with_retention(
            "orders",
            &["orders.>"],
            RetentionPolicy {
                max_events: Some(100),
                ..Default::default()
            },
        ),
    )
    .await;
    let config = env.stream_info("orders").await.config;
    assert_eq!((config.max_age, config.max_messages), (Duration::ZERO, 100));
}

#[tokio::test]
async fn discard_policies() {
    let mut env = Env::start().await;
    let discard = |policy: Option<PbDiscard>, per_subject: Option<bool>, max: Option<u64>| {
        with_retention(
            "orders",
            &["orders.>"],
            RetentionPolicy {
                discard_policy: policy.map(|p| p as i32),
                discard_new_per_subject: per_subject,
                max_events_per_subject: max,
                ..Default::default()
            },
        )
    };

    env.stream("orders", &["orders.>"]).await;
    assert_eq!(
        env.stream_info("orders").await.config.discard,
        DiscardPolicy::Old
    );
    ensure(&mut env, discard(Some(PbDiscard::Old), None, None)).await;
    assert_eq!(
        env.stream_info("orders").await.config.discard,
        DiscardPolicy::Old
    );
    ensure(&mut env, discard(Some(PbDiscard::New), None, None)).await;
    assert_eq!(
        env.stream_info("orders").await.config.discard,
        DiscardPolicy::New
    );
    ensure(&mut env, discard(Some(PbDiscard::New), Some(true), Some(5))).await;
    let config = env.stream_info("orders").await.config;
    assert_eq!(
        (
            config.discard,
            config.discard_new_per_subject,
            config.max_messages_per_subject
        ),
        (DiscardPolicy::New, true, 5)
    );
    // Back to old: the per-subject flag goes with it.
    ensure(&mut env, discard(Some(PbDiscard::Old), None, None)).await;
    let config = env.stream_info("orders").await.config;
    assert_eq!(
        (config.discard, config.discard_new_per_subject),
        (DiscardPolicy::Old, false)
    );

    // Discarding new per subject needs a per-subject limit.
    assert_status(
        env.client
            .ensure_stream(discard(Some(PbDiscard::New), Some(true), None))
            .await,
        Code::InvalidArgument,
        "discard_new_per_subject",
    );
    let config = env.stream_info("orders").await.config;
    assert_eq!(
        (config.discard, config.discard_new_per_subject),
        (DiscardPolicy::Old, false),
        "a rejected update changes nothing"
    );
}

#[tokio::test]
async fn dedupe_window_and_max_event_size() {
    let mut env = Env::start().await;

    env.stream("orders", &["orders.>"]).await;
    let config = env.stream_info("orders").await.config;
    assert_eq!(config.duplicate_window, 2 * MINUTE);
    assert_eq!(config.max_message_size, -1);

    ensure(
        &mut env,
        EnsureStreamRequest {
            deduplication_window: Some(MINUTE.into()),
            max_event_size: Some(2 * 1024 * 1024),
            ..stream_request("orders", &["orders.>"])
        },
    )
    .await;
    let config = env.stream_info("orders").await.config;
    assert_eq!(config.duplicate_window, MINUTE);
    assert_eq!(config.max_message_size, 2 * 1024 * 1024);

    ensure(
        &mut env,
        EnsureStreamRequest {
            max_event_size: Some(4 * 1024 * 1024),
            ..stream_request("orders", &["orders.>"])
        },
    )
    .await;
    let config = env.stream_info("orders").await.config;
    assert_eq!(
        config.duplicate_window,
        2 * MINUTE,
        "an omitted window is the default again"
    );
    assert_eq!(config.max_message_size, 4 * 1024 * 1024);

    env.stream("orders", &["orders.>"]).await;
    assert_eq!(env.stream_info("orders").await.config.max_message_size, -1);

    // Part A #18: a max_age under 2 minutes shortens the default window instead of failing.
    let short = RetentionPolicy {
        max_age: Some(Duration::from_secs(30).into()),
        ..Default::default()
    };
    ensure(&mut env, with_retention("short", &["short.>"], short)).await;
    let config = env.stream_info("short").await.config;
    assert_eq!(
        (config.max_age, config.duplicate_window),
        (Duration::from_secs(30), Duration::from_secs(30))
    );
    // An explicit window longer than max_age is the client's mistake.
    assert_status(
        env.client
            .ensure_stream(EnsureStreamRequest {
                deduplication_window: Some(MINUTE.into()),
                ..with_retention("short", &["short.>"], short)
            })
            .await,
        Code::InvalidArgument,
        "deduplication_window",
    );
    assert_status(
        env.client
            .ensure_stream(EnsureStreamRequest {
                deduplication_window: Some(PbDuration {
                    seconds: 0,
                    nanos: 0,
                }),
                ..stream_request("orders", &["orders.>"])
            })
            .await,
        Code::InvalidArgument,
        "deduplication_window",
    );
}

#[tokio::test]
async fn storage_type_and_replicas() {
    let mut env = Env::start().await;
    let storage =
        |name: &str, kind: Option<PbStorage>, replicas: Option<u32>| EnsureStreamRequest {
            storage: Some(Storage {
                r#type: kind.map(|k| k as i32),
                replicas,
            }),
            ..stream_request(name, &[&format!("{name}.>")])
        };

    env.stream("plain", &["plain.>"]).await;
    let config = env.stream_info("plain").await.config;
    assert_eq!(
        (config.storage, config.num_replicas),
        (StorageType::File, 1)
    );

    ensure(&mut env, storage("file", Some(PbStorage::File), Some(1))).await;
    let config = env.stream_info("file").await.config;
    assert_eq!(
        (config.storage, config.num_replicas),
        (StorageType::File, 1)
    );

    ensure(&mut env, storage("mem", Some(PbStorage::Memory), None)).await;
    let config = env.stream_info("mem").await.config;
    assert_eq!(
        (config.storage, config.num_replicas),
        (StorageType::Memory, 1)
    );

    // The storage type of an existing stream cannot change, either way.
    assert_status(
        env.client
            .ensure_stream(storage("mem", Some(PbStorage::File), None))
            .await,
        Code::FailedPrecondition,
        "storage.type",
    );
    assert_status(
        env.client
            .ensure_stream(stream_request("mem", &["mem.>"]))
            .await,
        Code::FailedPrecondition,
        "storage.type",
    );
    assert_status(
        env.client
            .ensure_stream(storage("file", Some(PbStorage::Memory), None))
            .await,
        Code::FailedPrecondition,
        "storage.type",
    );
    assert_eq!(
        env.stream_info("mem").await.config.storage,
        StorageType::Memory
    );

    assert_status(
        env.client
            .ensure_stream(storage("zero", None, Some(0)))
            .await,
        Code::InvalidArgument,
        "storage.replicas",
    );
    assert!(env.js.get_stream("zero").await.is_err());

    // Re-ensuring a memory stream as memory still works after the rejections.
    ensure(&mut env, storage("mem", Some(PbStorage::Memory), None)).await;
    assert_eq!(
        env.stream_info("mem").await.config.storage,
        StorageType::Memory
    );
}

#[tokio::test]
async fn mirrors_copy_from_the_beginning_unless_told_otherwise() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.publish("orders.created", "old-1").await;
    env.publish("orders.created", "old-2").await;

    // Part A #4: no `from` means from the beginning (upstream panicked here).
    ensure(&mut env, mirror("copy", source("orders"))).await;
    let mirrored = env
        .stream_info("copy")
        .await
        .config
        .mirror
        .expect("a mirror");
    assert_eq!(mirrored.name, "orders");
    assert_eq!((mirrored.start_sequence, mirrored.start_time), (None, None));
    messages_eventually(&env, "copy", 2).await;
    assert_eq!(value_at(&env, "copy", 1).await, "old-1");

    // From an offset: only that event and those after it.
    ensure(
        &mut env,
        mirror("from-two", source("orders").from(Pointer::Offset(2))),
    )
    .await;
    let mirrored = env
        .stream_info("from-two")
        .await
        .config
        .mirror
        .expect("a mirror");
    assert_eq!(mirrored.start_sequence, Some(2));
    messages_eventually(&env, "from-two", 1).await;
    assert_eq!(value_at(&env, "from-two", 2).await, "old-2");

    // From the end, ensured twice: the second call must not count as a mirror change.
    let tail = mirror("tail", source("orders").from(Pointer::End(true)));
    ensure(&mut env, tail.clone()).await;
    let first = env.stream_info("tail").await.config.mirror;
    ensure(&mut env, tail).await;
    assert_eq!(env.stream_info("tail").await.config.mirror, first);
    // A new event arrives; mirrors copy in order, so the old ones were skipped.
    let id = env.publish("orders.created", "new").await;
    assert_eq!(id, 3);
    messages_eventually(&env, "tail", 1).await;
    let state = env.stream_info("tail").await.state;
    assert_eq!((state.first_sequence, state.last_sequence), (3, 3));
    assert_eq!(value_at(&env, "tail", 3).await, "new");

    // The full copy follows new events too.
    messages_eventually(&env, "copy", 3).await;

    // A start time after year 9999 used to panic the handler.
    let far = Timestamp {
        seconds: 300_000_000_000,
        nanos: 0,
    };
    assert_status(
        env.client
            .ensure_stream(mirror("far", source("orders").from(Pointer::Time(far))))
            .await,
        Code::InvalidArgument,
        "mirror.from.time",
    );
    // Issue 17 #6: an offset JetStream cannot hold (above 2^63−1).
    assert_status(
        env.client
            .ensure_stream(mirror(
                "beyond",
                source("orders").from(Pointer::Offset(u64::MAX)),
            ))
            .await,
        Code::InvalidArgument,
        "mirror.from.offset",
    );
    // Issue 17 #9: JetStream counts start times in signed 64-bit nanoseconds (1678 to 2262). A
    // time before 1678 meant "nothing"; it means everything, and one after 2262 nothing yet.
    let year_1600 = Timestamp {
        seconds: -11_676_096_000,
        nanos: 0,
    };
    ensure(
        &mut env,
        mirror(
            "since-1600",
            source("orders").from(Pointer::Time(year_1600)),
        ),
    )
    .await;
    messages_eventually(&env, "since-1600", 3).await;
    let year_3000 = Timestamp {
        seconds: 32_503_680_000,
        nanos: 0,
    };
    ensure(
        &mut env,
        mirror("from-3000", source("orders").from(Pointer::Time(year_3000))),
    )
    .await;
    let start = env
        .stream_info("from-3000")
        .await
        .config
        .mirror
        .and_then(|m| m.start_time)
        .expect("a start time");
    assert_eq!(start.year(), 2262, "the last year JetStream counts");
    assert_status(
        env.client
            .ensure_stream(mirror(
                "two-filters",
                StreamSource {
                    filter_subjects: vec!["orders.a".into(), "orders.b".into()],
                    ..source("orders")
                },
            ))
            .await,
        Code::InvalidArgument,
        "mirror.filter_subjects",
    );
}

/// Issue 17 #18: a mirror of a missing stream was accepted, and nats-server then logged an error
/// every minute. A mirror or an aggregate source must name a stream that exists.
#[tokio::test]
async fn a_mirror_or_source_of_a_missing_stream_is_refused() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    assert_status(
        env.client
            .ensure_stream(mirror("copy", source("missing")))
            .await,
        Code::FailedPrecondition,
        "mirror.name: stream missing does not exist",
    );
    assert_status(
        env.client
            .ensure_stream(aggregate("all", vec![source("orders"), source("missing")]))
            .await,
        Code::FailedPrecondition,
        "aggregate.sources[1].name: stream missing does not exist",
    );
    assert!(
        env.js.get_stream("copy").await.is_err(),
        "no mirror was made"
    );
    assert!(
        env.js.get_stream("all").await.is_err(),
        "no aggregate was made"
    );

    // Once the source exists, the same declarations work.
    env.stream("missing", &["missing.>"]).await;
    ensure(&mut env, mirror("copy", source("missing"))).await;
    ensure(
        &mut env,
        aggregate("all", vec![source("orders"), source("missing")]),
    )
    .await;
}

#[tokio::test]
async fn aggregates_list_sources_in_order_and_honour_start_positions() {
    let mut env = Env::start().await;
    env.stream("alpha", &["alpha.>"]).await;
    env.stream("beta", &["beta.>"]).await;
    env.publish("alpha.x", "a1").await;
    env.publish("alpha.x", "a2").await;
    env.publish("beta.x", "b1").await;

    ensure(
        &mut env,
        aggregate("all", vec![source("alpha"), source("beta")]),
    )
    .await;
    let sources = env
        .stream_info("all")
        .await
        .config
        .sources
        .expect("sources");
    let names: Vec<_> = sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    messages_eventually(&env, "all", 3).await;

    ensure(
        &mut env,
        aggregate(
            "from-start",
            vec![source("alpha").from(Pointer::Start(true))],
        ),
    )
    .await;
    messages_eventually(&env, "from-start", 2).await;
    assert_eq!(value_at(&env, "from-start", 1).await, "a1");

    ensure(
        &mut env,
        aggregate(
            "from-offset",
            vec![source("alpha").from(Pointer::Offset(2))],
        ),
    )
    .await;
    let sources = env
        .stream_info("from-offset")
        .await
        .config
        .sources
        .expect("sources");
    assert_eq!(sources[0].start_sequence, Some(2));
    messages_eventually(&env, "from-offset", 1).await;
    // An aggregate numbers its own events: its first is alpha's second.
    assert_eq!(value_at(&env, "from-offset", 1).await, "a2");

    // From the end, ensured twice: the source keeps the start it got when it was added.
    let from_end = aggregate("from-end", vec![source("alpha").from(Pointer::End(true))]);
    ensure(&mut env, from_end.clone()).await;
    let first = env.stream_info("from-end").await.config.sources;
    assert!(first.as_ref().is_some_and(|s| s[0].start_time.is_some()));
    ensure(&mut env, from_end).await;
    assert_eq!(env.stream_info("from-end").await.config.sources, first);
    env.publish("alpha.x", "a3").await;
    messages_eventually(&env, "from-end", 1).await;
    assert_eq!(
        value_at(&env, "from-end", 1).await,
        "a3",
        "sources copy in order, so the old events were skipped"
    );
    messages_eventually(&env, "all", 4).await;

    assert_status(
        env.client.ensure_stream(aggregate("empty", vec![])).await,
        Code::InvalidArgument,
        "aggregate.sources",
    );
}
