//! Stream and consumer administration: listing and inspecting streams and consumers, purging and
//! deleting streams, and what becomes of a deleted stream's consumers.

use std::time::Duration;

use jetway_api::{
    google::protobuf::Duration as PbDuration,
    jetway::admin::v1::{
        self as api, DeleteStreamRequest, GetConsumerInfoRequest, GetStreamInfoRequest,
        ListConsumersRequest, ListStreamsRequest, PurgeStreamRequest,
    },
    windshift::events::v1alpha1::{EnsureStreamRequest, ensure_stream_request},
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    clients::{self, consumer, publish, seconds, typed},
    harness::{Env, assert_status, stream_request},
};

fn info(stream: &str, filter: &str) -> GetStreamInfoRequest {
    GetStreamInfoRequest {
        stream: stream.into(),
        subject_filter: filter.into(),
    }
}

fn purge(stream: &str, subject: &str, keep: u64) -> PurgeStreamRequest {
    PurgeStreamRequest {
        stream: stream.into(),
        subject: subject.into(),
        keep,
        force: false,
    }
}

fn delete(stream: &str) -> DeleteStreamRequest {
    DeleteStreamRequest {
        stream: stream.into(),
        force: false,
    }
}

fn consumer_info(stream: &str, consumer: &str) -> GetConsumerInfoRequest {
    GetConsumerInfoRequest {
        stream: stream.into(),
        consumer: consumer.into(),
    }
}

#[tokio::test]
async fn streams_are_listed_inspected_purged_and_deleted() {
    let mut env = Env::start().await;
    let limited = EnsureStreamRequest {
        retention_policy: Some(ensure_stream_request::RetentionPolicy {
            max_age: Some(PbDuration::from(Duration::from_secs(3600))),
            max_events_per_subject: Some(100),
            ..Default::default()
        }),
        ..stream_request("orders", &["orders.>"])
    };
    env.client.ensure_stream(limited).await.unwrap();
    env.stream("audit", &["audit.>"]).await;
    let mut events = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    let mut ids = Vec::new();
    for (subject, n) in [
        ("orders.created", 3),
        ("orders.paid", 2),
        ("orders.refunded", 1),
    ] {
        for i in 0..n {
            ids.push(publish(&mut events, typed(subject, &format!("{subject} {i}"))).await);
        }
    }

    let listed = admin
        .list_streams(ListStreamsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["audit", "orders"], "by name");
    assert!(listed.next_page_token.is_empty(), "one page");

    let details = admin
        .get_stream_info(info("orders", ""))
        .await
        .unwrap()
        .into_inner();
    let stream = details.info.unwrap();
    let config = stream.config.unwrap();
    assert_eq!(config.subjects, ["orders.>"]);
    assert_eq!(config.max_age, Some(seconds(3600)));
    assert_eq!(config.max_events_per_subject, Some(100));
    assert_eq!((config.max_events, config.max_bytes), (None, None));
    assert_eq!(config.retention, i32::from(api::RetentionPolicy::Limits));
    assert_eq!(config.storage, i32::from(api::StorageType::File));
    assert_eq!(config.discard_policy, i32::from(api::DiscardPolicy::Old));
    assert_eq!(config.replicas, 1);
    assert_eq!(config.deduplication_window, Some(seconds(120)));
    let state = stream.state.unwrap();
    assert_eq!(
        (state.events, state.first_id, state.last_id),
        (6, ids[0], ids[5])
    );
    assert!(state.bytes > 0);
    assert!(state.first_time.is_some() && state.last_time.is_some());
    assert_eq!((state.consumer_count, state.subject_count), (0, 3));
    assert!(stream.created.is_some());
    assert_eq!(details.subjects.len(), 3);
    assert_eq!(
        (
            details.subjects["orders.created"],
            details.subjects["orders.paid"]
        ),
        (3, 2)
    );
    assert!(!details.subjects_truncated);
    let filtered = admin
        .get_stream_info(info("orders", "orders.paid"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        filtered.subjects.keys().collect::<Vec<_>>(),
        ["orders.paid"]
    );

    // Keep the newest of one subject, then purge another subject, then everything.
    let purged = admin
        .purge_stream(purge("orders", "orders.created", 1))
        .await
        .unwrap();
    assert_eq!(purged.into_inner().purged, 2);
    let purged = admin
        .purge_stream(purge("orders", "orders.paid", 0))
        .await
        .unwrap();
    assert_eq!(purged.into_inner().purged, 2);
    let details = admin
        .get_stream_info(info("orders", ""))
        .await
        .unwrap()
        .into_inner();
    let mut left: Vec<_> = details.subjects.into_iter().collect();
    left.sort();
    assert_eq!(
        left,
        [("orders.created".into(), 1), ("orders.refunded".into(), 1)]
    );
    let purged = admin.purge_stream(purge("orders", "", 0)).await.unwrap();
    assert_eq!(purged.into_inner().purged, 2);
    let state = admin
        .get_stream_info(info("orders", ""))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap()
        .state
        .unwrap();
    assert_eq!(
        (state.events, state.last_id),
        (0, ids[5]),
        "ids are not reused"
    );
    assert_eq!(state.first_time, None);

    admin.delete_stream(delete("audit")).await.unwrap();
    let again = admin.delete_stream(delete("audit")).await;
    assert_status(again, Code::NotFound, "audit");
    assert_status(
        admin.get_stream_info(info("audit", "")).await,
        Code::NotFound,
        "audit",
    );
    let names: Vec<_> = admin
        .list_streams(ListStreamsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .streams
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["orders"]);
}

#[tokio::test]
async fn consumers_are_listed_and_inspected_and_go_with_their_stream() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut events = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    let worker = api_consumer_with_policy();
    events.ensure_consumer(worker).await.unwrap();
    env.consumer("orders")
        .named("audit")
        .subjects(&["orders.created", "orders.paid"])
        .ensure()
        .await;
    for i in 0..3 {
        publish(&mut events, typed("orders.created", &format!("event {i}"))).await;
    }
    // Two delivered to the worker and one redelivered, none acked.
    let fetched = events
        .fetch(jetway_api::jetway::events::v1::FetchRequest {
            stream: "orders".into(),
            consumer: "worker".into(),
            max_events: 2,
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    let first = fetched.events[0].id;
    events
        .reject(jetway_api::jetway::events::v1::RejectRequest {
            stream: "orders".into(),
            consumer: "worker".into(),
            ids: vec![first],
            ..Default::default()
        })
        .await
        .unwrap();
    let again = events
        .fetch(jetway_api::jetway::events::v1::FetchRequest {
            stream: "orders".into(),
            consumer: "worker".into(),
            max_events: 1,
            wait: Some(seconds(5)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.events[0].delivery_attempt, 2);

    let listed = admin
        .list_consumers(ListConsumersRequest {
            stream: "orders".into(),
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed.consumers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["audit", "worker"]);
    assert!(listed.next_page_token.is_empty());
    let audit = &listed.consumers[0];
    assert_eq!(audit.subjects, ["orders.created", "orders.paid"]);
    assert_eq!(audit.max_deliveries, None);
    assert_eq!(audit.processing_timeout, Some(seconds(30)));
    assert_eq!(
        (audit.pending, audit.last_active),
        (3, None),
        "published after it was made, and not delivered"
    );

    let info = admin
        .get_consumer_info(consumer_info("orders", "worker"))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(
        (info.stream.as_str(), info.name.as_str()),
        ("orders", "worker")
    );
    assert!(info.durable && info.pull);
    assert_eq!(info.subjects, ["orders.>"]);
    assert_eq!(info.max_deliveries, Some(5));
    assert_eq!(info.backoff, [seconds(10), seconds(20)]);
    assert_eq!(
        info.processing_timeout,
        Some(seconds(10)),
        "the first backoff entry"
    );
    assert_eq!(info.dead_letter_stream.as_deref(), Some("orders-dead"));
    assert_eq!(
        (info.pending, info.ack_pending, info.redelivered),
        (1, 2, 1)
    );
    assert_eq!(info.last_delivered_id, fetched.events[1].id);
    assert_eq!(info.ack_floor_id, 0);
    assert!(info.last_active.is_some() && info.created.is_some());

    // A deleted stream takes its consumers with it.
    admin.delete_stream(delete("orders")).await.unwrap();
    let list = admin
        .list_consumers(ListConsumersRequest {
            stream: "orders".into(),
            page_token: String::new(),
        })
        .await;
    assert_status(list, Code::NotFound, "orders");
    assert_status(
        admin
            .get_consumer_info(consumer_info("orders", "worker"))
            .await,
        Code::NotFound,
        "orders",
    );
    // Recreated, the stream has none of them.
    env.stream("orders", &["orders.>"]).await;
    let listed = admin
        .list_consumers(ListConsumersRequest {
            stream: "orders".into(),
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.consumers.is_empty());
    assert_status(
        admin
            .get_consumer_info(consumer_info("orders", "worker"))
            .await,
        Code::NotFound,
        "worker",
    );
}

/// Jetway's internal streams (the advisory stream, key-value stores) are deleted and purged only
/// with `force`; other streams, dead-letter streams included, without it.
#[tokio::test]
async fn internal_streams_are_deleted_and_purged_only_with_force() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut events = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    // Makes JETWAY_ADVISORIES and orders-dead.
    events
        .ensure_consumer(api_consumer_with_policy())
        .await
        .unwrap();
    let store = env
        .js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "config".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    store.put("color", "blue".into()).await.unwrap();

    for stream in ["JETWAY_ADVISORIES", "KV_config"] {
        let internal = format!("stream {stream} is internal to Jetway");
        assert_status(
            admin.delete_stream(delete(stream)).await,
            Code::FailedPrecondition,
            &internal,
        );
        assert_status(
            admin.purge_stream(purge(stream, "", 0)).await,
            Code::FailedPrecondition,
            &internal,
        );
    }
    assert_eq!(env.event_count("KV_config").await, 1, "nothing purged");
    let advisories_made = env.stream_info("JETWAY_ADVISORIES").await.created;

    let forced = PurgeStreamRequest {
        force: true,
        ..purge("KV_config", "", 0)
    };
    let purged = admin.purge_stream(forced).await.unwrap().into_inner();
    assert_eq!(purged.purged, 1);
    for stream in ["JETWAY_ADVISORIES", "KV_config"] {
        let forced = DeleteStreamRequest {
            force: true,
            ..delete(stream)
        };
        admin.delete_stream(forced).await.unwrap();
        let answer = admin.get_stream_info(info(stream, "")).await;
        if stream == "JETWAY_ADVISORIES" && answer.is_ok() {
            // The dead-letter worker makes its advisory stream again once it finds it deleted
            // (docs/dead-letters.md), and may have done so already: then it is a new stream.
            let made = env.stream_info(stream).await.created;
            assert!(made > advisories_made, "{stream} was not deleted");
        } else {
            assert_status(answer, Code::NotFound, stream);
        }
    }
    // A dead-letter stream is the user's: its dead letters may be dropped without force.
    admin
        .purge_stream(purge("orders-dead", "", 0))
        .await
        .unwrap();
    admin.delete_stream(delete("orders-dead")).await.unwrap();
}

fn api_consumer_with_policy() -> jetway_api::jetway::events::v1::EnsureConsumerRequest {
    jetway_api::jetway::events::v1::EnsureConsumerRequest {
        max_deliveries: Some(5),
        backoff: vec![seconds(10), seconds(20)],
        dead_letter_stream: Some("orders-dead".into()),
        ..consumer("orders", "worker", &["orders.>"])
    }
}

#[tokio::test]
async fn listings_page_through_every_stream_and_consumer() {
    let env = Env::start().await;
    let mut admin = clients::admin(&env).await;
    // One more than JetStream's page: made directly, as Jetway does not care who made them.
    let names: Vec<String> = (0..257).map(|i| format!("s{i:03}")).collect();
    for name in &names {
        env.js
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                storage: async_nats::jetstream::stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let stream = env.js.get_stream("s000").await.unwrap();
    for i in 0..257 {
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(format!("c{i:03}")),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_streams(ListStreamsRequest { page_token: token })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.streams.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, names);

    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_consumers(ListConsumersRequest {
                stream: "s000".into(),
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        listed.extend(page.consumers.into_iter().map(|c| c.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 2);
    assert_eq!(listed.len(), 257);
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "by name, no repeats"
    );
}

#[tokio::test]
async fn admin_calls_reject_bad_input() {
    let env = Env::start().await;
    let mut admin = clients::admin(&env).await;
    // Both of Jetway's own services report their health by name too.
    let mut health = HealthClient::new(env.jetway.channel().await);
    for service in [
        "jetway.admin.v1.AdminService",
        "jetway.events.v1.EventsService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, i32::from(ServingStatus::Serving), "{service}");
    }
    assert_status(
        admin
            .list_streams(ListStreamsRequest {
                page_token: "not a token".into(),
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_status(
        admin.get_stream_info(info("a.b", "")).await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        admin.get_stream_info(info("orders", "a..b")).await,
        Code::InvalidArgument,
        "subject_filter",
    );
    assert_status(
        admin.delete_stream(delete("")).await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        admin.purge_stream(purge("a b", "", 0)).await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        admin.purge_stream(purge("orders", "orders.>.x", 0)).await,
        Code::InvalidArgument,
        "subject",
    );
    assert_status(
        admin.purge_stream(purge("orders", "", 0)).await,
        Code::NotFound,
        "orders",
    );
    assert_status(
        admin
            .list_consumers(ListConsumersRequest {
                stream: "*".into(),
                page_token: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        admin
            .list_consumers(ListConsumersRequest {
                stream: "orders".into(),
                page_token: "-1".into(),
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_status(
        admin
            .get_consumer_info(consumer_info("orders", "a.b"))
            .await,
        Code::InvalidArgument,
        "consumer",
    );
    assert_status(
        admin.get_consumer_info(consumer_info("orders", "x")).await,
        Code::NotFound,
        "orders",
    );
}

/// Streams and subjects that other NATS clients (or Jetway's own dead letters and stores) named by
/// JetStream's looser rules can be inspected, read and purged.
#[tokio::test]
async fn streams_and_subjects_named_by_jetstreams_rules_can_be_administered() {
    let env = Env::start().await;
    let mut admin = clients::admin(&env).await;
    let mut events = clients::events(&env).await;
    env.js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "orders:v1".into(),
            subjects: vec!["$legacy.orders.>".into()],
            ..Default::default()
        })
        .await
        .expect("a stream made by another client");
    for subject in ["$legacy.orders.a", "$legacy.orders.b", "$legacy.orders.b"] {
        env.js
            .publish(subject, "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let details = admin
        .get_stream_info(info("orders:v1", "$legacy.orders.*"))
        .await
        .expect("inspected")
        .into_inner();
    assert_eq!(details.info.unwrap().state.unwrap().events, 3);
    assert_eq!(details.subjects["$legacy.orders.b"], 2);
    let read = clients::collect(
        events
            .read_events(api_read("orders:v1", "$legacy.orders.b"))
            .await
            .expect("read")
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(read.len(), 2);
    let purged = admin
        .purge_stream(purge("orders:v1", "$legacy.orders.b", 0))
        .await
        .expect("purged")
        .into_inner();
    assert_eq!(purged.purged, 2);
    // Fetch from, and ack to, a consumer named by the same rules.
    env.js
        .get_stream("orders:v1")
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("billing:v1".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("a consumer made by another client");
    let fetched = events
        .fetch(jetway_api::jetway::events::v1::FetchRequest {
            stream: "orders:v1".into(),
            consumer: "billing:v1".into(),
            ..Default::default()
        })
        .await
        .expect("fetched")
        .into_inner();
    let ids: Vec<u64> = fetched.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1]);
    let acked = events
        .ack(jetway_api::jetway::events::v1::AckRequest {
            stream: "orders:v1".into(),
            consumer: "billing:v1".into(),
            ids: ids.clone(),
        })
        .await
        .expect("acked")
        .into_inner();
    assert_eq!(acked.settled.unwrap().ids, ids);
    // Whitespace and misplaced wildcards are still refused.
    assert_status(
        admin.get_stream_info(info("orders v1", "")).await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        admin
            .purge_stream(purge("orders:v1", "$legacy.o*", 0))
            .await,
        Code::InvalidArgument,
        "subject",
    );
}

fn api_read(stream: &str, subject: &str) -> jetway_api::jetway::events::v1::ReadEventsRequest {
    jetway_api::jetway::events::v1::ReadEventsRequest {
        stream: stream.into(),
        subject: subject.into(),
        ..Default::default()
    }
}
