//! The delivery engine behind Events, seen over time: processing timeouts and pings, expiry of
//! in-flight tracking, work sharing, ephemeral start positions, flow control, half-close, and how a
//! session ends when the client drops it or the consumer disappears (spec A #7, #11, #12; B.5.5;
//! tests B.11.5 and B.11.16).
//!
//! Nothing here measures elapsed time. A redelivery within the receive guard (10 s) of a consumer
//! whose processing timeout is 30 s can only come from a nak; the absence of a delivery is shown by
//! JetStream's own counters (`num_ack_pending`, `num_waiting`, `delivered`), not by waiting.

use std::{collections::BTreeSet, time::Duration};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use jetway_api::{
    jetway::events::v1 as api,
    windshift::events::v1alpha1::{
        DeleteConsumerRequest, events_service_client::EventsServiceClient, stream_pointer::Pointer,
    },
};
use jetway_testkit::{NatsServer, TcpProxy, eventually};
use tonic::Code;

use crate::{
    clients,
    harness::{Env, TestServer, value_of},
};

#[tokio::test]
async fn an_unsettled_event_comes_again_after_the_processing_timeout_under_the_same_id() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .timeout(Duration::from_secs(1))
        .ensure()
        .await;
    let mut session = env.subscribe("orders", "worker").await;
    let id = env.publish("orders.created", "slow").await;
    let first = session.event().await;
    assert_eq!((first.id, first.delivery_attempt), (id, 1));

    // Not settled: JetStream takes it back after 1 s and delivers it again.
    let second = session.event().await;
    assert_eq!((second.id, second.delivery_attempt), (id, 2));
    assert_eq!(second.data, first.data);

    // The id from the first delivery settles the newest one: ids are stream sequences.
    let confirmation = session.ack(&[first.id]).await;
    assert_eq!(confirmation.ids, vec![id]);
    assert!(confirmation.invalid_ids.is_empty());
    let info = env
        .consumer_info_until("orders", "worker", "the ack reaches JetStream", |info| {
            info.num_ack_pending == 0 && info.ack_floor.stream_sequence == id
        })
        .await;
    assert_eq!(
        info.delivered.consumer_sequence, 2,
        "two deliveries, no third"
    );
}

#[tokio::test]
async fn pings_hold_an_event_past_its_processing_timeout() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .timeout(Duration::from_secs(1))
        .ensure()
        .await;
    let mut session = env.subscribe("orders", "worker").await;

    let unknown = session.ping(&[1]).await;
    assert_eq!(unknown.invalid_ids, vec![1], "nothing delivered yet");
    assert!(unknown.ids.is_empty());

    let id = env.publish("orders.created", "long job").await;
    assert_eq!(session.event().await.id, id);
    // Hold the event for 2.5 processing timeouts, pinging every 300 ms. `ping` fails unless the
    // very next response is its confirmation, so nothing (no redelivery) came in between.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pinged = session.ping(&[id]).await;
        assert_eq!(pinged.ids, vec![id]);
        assert!(pinged.invalid_ids.is_empty() && pinged.temporary_failed_ids.is_empty());
    }
    let repeated = session.ping(&[id, id, 5]).await;
    assert_eq!(repeated.ids, vec![id]);
    assert_eq!(repeated.invalid_ids, vec![id, 5]);

    assert_eq!(session.ack(&[id]).await.ids, vec![id]);
    let info = env
        .consumer_info_until("orders", "worker", "the ack reaches JetStream", |info| {
            info.num_ack_pending == 0 && info.ack_floor.stream_sequence == id
        })
        .await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(
        info.delivered.consumer_sequence, 1,
        "JetStream delivered the event exactly once"
    );
    assert_eq!(session.ping(&[id]).await.invalid_ids, vec![id], "settled");
}

#[tokio::test]
async fn tracking_expires_at_the_processing_timeout_so_a_late_settlement_is_invalid() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    // Made directly: max_deliver 1 means JetStream never redelivers, so the session cannot pick
    // the event up again and refresh its entry.
    env.js
        .get_stream("orders")
        .await
        .expect("stream")
        .create_consumer(pull::Config {
            durable_name: Some("once".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            max_deliver: 1,
            filter_subject: "orders.>".into(),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut session = env.subscribe("orders", "once").max(1).await;
    let id = env.publish("orders.created", "too slow").await;
    assert_eq!(session.event().await.id, id);

    // With its only slot taken, the session pulls again only once the entry has expired.
    env.consumer_info_until(
        "orders",
        "once",
        "the session pulls again after its entry expired",
        |info| info.num_waiting == 1,
    )
    .await;
    let late_ping = session.ping(&[id]).await;
    assert_eq!(late_ping.invalid_ids, vec![id]);
    assert!(late_ping.ids.is_empty());
    let late_ack = session.ack(&[id]).await;
    assert_eq!(late_ack.invalid_ids, vec![id]);
    assert!(late_ack.ids.is_empty());

    // The session keeps working.
    let next = env.publish("orders.created", "next").await;
    let event = session.event().await;
    assert_eq!((event.id, value_of(&event).as_str()), (next, "next"));
    assert_eq!(session.ack(&[next]).await.ids, vec![next]);
}

#[tokio::test]
async fn subscribers_of_one_durable_share_its_events_and_separate_durables_each_get_all() {
    let mut env = Env::start().await;
    env.stream("events", &["events.>"]).await;
    for name in ["shared", "audit"] {
        env.consumer("events")
            .named(name)
            .subjects(&["events.>"])
            .ensure()
            .await;
    }
    // One slot each, so neither session can take everything.
    let mut a = env.subscribe("events", "shared").max(1).await;
    let mut b = env.subscribe("events", "shared").max(1).await;
    let mut audit = env.subscribe("events", "audit").await;

    let mut published = BTreeSet::new();
    for i in 0..10 {
        published.insert(env.publish("events.test", &format!("event {i}")).await);
    }

    // Both hold one; after that each gets its next event only when it acks.
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let mut held_a = a.event().await.id;
    let mut held_b = b.event().await.id;
    got_a.push(held_a);
    got_b.push(held_b);
    while got_a.len() + got_b.len() < published.len() {
        assert_eq!(a.ack(&[held_a]).await.ids, vec![held_a]);
        held_a = a.event().await.id;
        got_a.push(held_a);
        if got_a.len() + got_b.len() < published.len() {
            assert_eq!(b.ack(&[held_b]).await.ids, vec![held_b]);
            held_b = b.event().await.id;
            got_b.push(held_b);
        }
    }
    assert_eq!(a.ack(&[held_a]).await.ids, vec![held_a]);
    assert_eq!(b.ack(&[held_b]).await.ids, vec![held_b]);
    assert!(!got_a.is_empty() && !got_b.is_empty());
    let together: BTreeSet<u64> = got_a.iter().chain(&got_b).copied().collect();
    assert_eq!(together.len(), got_a.len() + got_b.len(), "no event twice");
    assert_eq!(together, published);
    env.consumer_info_until("events", "shared", "all acks reach JetStream", |info| {
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await;

    // The other durable got every event too. Its window (50) holds all ten, so they are all
    // sent before any confirmation could be: read them first, then ack them at once.
    let mut seen = Vec::new();
    for _ in 0..published.len() {
        seen.push(audit.event().await.id);
    }
    assert_eq!(
        seen,
        published.iter().copied().collect::<Vec<_>>(),
        "in stream order"
    );
    assert_eq!(audit.ack(&seen).await.ids, seen);
}

#[tokio::test]
async fn ephemeral_consumers_each_get_events_from_where_they_start() {
    let mut env = Env::start().await;
    env.stream("events", &["events.>"]).await;
    let before = env.publish("events.test", "before").await;

    let one = env
        .consumer("events")
        .subjects(&["events.test"])
        .ensure()
        .await;
    let two = env
        .consumer("events")
        .subjects(&["events.test"])
        .ensure()
        .await;
    let from_start = env
        .consumer("events")
        .subjects(&["events.test"])
        .from(Pointer::Start(true))
        .ensure()
        .await;
    assert!(
        one != two && !one.is_empty(),
        "each ephemeral gets its own id"
    );
    let mut s1 = env.subscribe("events", &one).await;
    let mut s2 = env.subscribe("events", &two).await;
    let mut s3 = env.subscribe("events", &from_start).await;

    let after = env.publish("events.test", "after").await;
    for session in [&mut s1, &mut s2] {
        // The first event is the one published after the consumer was made: "before" was skipped.
        let event = session.event().await;
        assert_eq!((event.id, value_of(&event).as_str()), (after, "after"));
        assert_eq!(session.ack(&[after]).await.ids, vec![after]);
    }
    let first = s3.event().await;
    assert_eq!((first.id, value_of(&first).as_str()), (before, "before"));
    let second = s3.event().await;
    assert_eq!(second.id, after);
    assert_eq!(s3.ack(&[before, after]).await.ids, vec![before, after]);
}

#[tokio::test]
async fn a_dropped_session_naks_its_events_for_prompt_redelivery() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    // 30 s: within the receive guard (10 s) only the nak on disconnect can bring the event back.
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .timeout(Duration::from_secs(30))
        .ensure()
        .await;
    let mut a = env.subscribe("orders", "worker").await;
    let id = env.publish("orders.created", "held").await;
    let event = a.event().await;
    assert_eq!((event.id, event.delivery_attempt), (id, 1));
    drop(a);

    let mut b = env.subscribe("orders", "worker").await;
    let again = b.event().await;
    assert_eq!((again.id, again.delivery_attempt), (id, 2));
    assert_eq!(value_of(&again), "held");
    assert_eq!(b.ack(&[id]).await.ids, vec![id]);
}

#[tokio::test]
async fn max_processing_events_bounds_what_is_in_flight() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let mut session = env.subscribe("orders", "worker").max(2).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(env.publish("orders.created", &format!("event {i}")).await);
    }
    let first = session.event().await;
    let second = session.event().await;
    assert_eq!((first.id, second.id), (ids[0], ids[1]));

    // Two handed out, three left in the stream, and no pull request open for more: nothing else
    // can reach this session.
    env.consumer_info_until(
        "orders",
        "worker",
        "two in flight and no open pull",
        |info| info.num_ack_pending == 2 && info.num_pending == 3 && info.num_waiting == 0,
    )
    .await;
    // The next response is the confirmation, not a third event.
    assert_eq!(
        session.ping(&[first.id, second.id]).await.ids,
        vec![first.id, second.id]
    );

    // Acking one frees exactly one slot.
    assert_eq!(session.ack(&[first.id]).await.ids, vec![first.id]);
    let third = session.event().await;
    assert_eq!(third.id, ids[2]);
    env.consumer_info_until(
        "orders",
        "worker",
        "again two in flight and no open pull",
        |info| info.num_ack_pending == 2 && info.num_pending == 2 && info.num_waiting == 0,
    )
    .await;
    assert_eq!(
        session.ping(&[second.id, third.id]).await.ids,
        vec![second.id, third.id]
    );

    // Acking both lets the rest through.
    assert_eq!(
        session.ack(&[second.id, third.id]).await.ids,
        vec![second.id, third.id]
    );
    let rest = [session.event().await.id, session.event().await.id];
    assert_eq!(rest, [ids[3], ids[4]]);
    assert_eq!(session.ack(&rest).await.ids, rest.to_vec());
}

#[tokio::test]
async fn after_a_half_close_events_still_arrive() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let mut session = env.subscribe("orders", "worker").await;
    session.close_send();

    for value in ["one", "two"] {
        let id = env.publish("orders.created", value).await;
        let event = session.event().await;
        assert_eq!((event.id, value_of(&event).as_str()), (id, value));
    }
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(info.num_ack_pending, 2, "held, not settled, by the session");
}

#[tokio::test]
async fn deleting_the_consumer_or_stream_under_a_session_ends_it_with_not_found() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.stream("audit", &["audit.>"]).await;
    for name in ["idle", "busy", "direct", "bystander"] {
        env.consumer("orders")
            .named(name)
            .subjects(&["orders.>"])
            .ensure()
            .await;
    }
    env.consumer("audit")
        .named("auditor")
        .subjects(&["audit.>"])
        .ensure()
        .await;

    // A session on another consumer of the same stream, which every deletion below leaves alone
    // (the advisories are shared by all the sessions of a server, and routed by name).
    let mut bystander = env.subscribe("orders", "bystander").await;

    // Two idle sessions, consumer deleted through the API right after subscribing. A pull request
    // still queued in JetStream then is dropped without an answer; the deletion advisory is what
    // ends the sessions promptly.
    let mut idle = env.subscribe("orders", "idle").await;
    let mut idle_too = env.subscribe("orders", "idle").await;
    env.client
        .delete_consumer(DeleteConsumerRequest {
            stream: "orders".into(),
            id: "idle".into(),
        })
        .await
        .expect("delete consumer");
    for session in [&mut idle, &mut idle_too] {
        let status = session.expect_error().await;
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }

    // A consumer deleted straight in JetStream, behind Jetway's back.
    let mut direct = env.subscribe("orders", "direct").await;
    env.js
        .delete_consumer_from_stream("direct", "orders")
        .await
        .expect("delete directly");
    let status = direct.expect_error().await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // A session whose only slot is taken has no pull open, and still notices at once.
    let mut busy = env.subscribe("orders", "busy").max(1).await;
    let id = env.publish("orders.created", "held").await;
    assert_eq!(busy.event().await.id, id);
    env.js
        .delete_consumer_from_stream("busy", "orders")
        .await
        .expect("delete busy");
    let status = busy.expect_error().await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // The whole stream deleted.
    let mut auditor = env.subscribe("audit", "auditor").await;
    env.js.delete_stream("audit").await.expect("delete stream");
    let status = auditor.expect_error().await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Others are unaffected.
    env.consumer("orders")
        .named("fresh")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let mut fresh = env.subscribe("orders", "fresh").await;
    let id = env.publish("orders.created", "after").await;
    assert_eq!(fresh.event().await.id, id);
    assert_eq!(fresh.ack(&[id]).await.ids, vec![id]);
    // The bystander saw every event of the stream, the one held by "busy" too.
    let held = bystander.event().await;
    assert_eq!(bystander.event().await.id, id);
    assert_eq!(bystander.ack(&[held.id, id]).await.ids, vec![held.id, id]);
}

#[tokio::test]
async fn pulls_stay_within_the_consumers_request_limits() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    // A consumer made by another tool with a small max batch, max bytes and max expiry: JetStream
    // refuses any pull request over them, so the session must size its requests to fit. It asks for
    // no byte limit, so an event larger than max bytes still comes.
    env.js
        .get_stream("orders")
        .await
        .expect("stream")
        .create_consumer(pull::Config {
            durable_name: Some("limited".into()),
            ack_policy: AckPolicy::Explicit,
            max_batch: 2,
            max_bytes: 1024,
            max_expires: Duration::from_secs(1),
            filter_subject: "orders.>".into(),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut session = env.subscribe("orders", "limited").await;
    let mut published = vec![env.publish("orders.created", &"x".repeat(4096)).await];
    for n in 0..5 {
        published.push(env.publish("orders.created", &format!("e{n}")).await);
    }
    let mut received = Vec::new();
    while received.len() < published.len() {
        received.push(session.event().await.id);
    }
    assert_eq!(received, published);
    assert_eq!(session.ack(&received).await.ids, received);
}

/// A connection to NATS that drops while nats-server stays up (a network blip) leaves the session's
/// pull request waiting on the server, and the session asks for its slots again on the new
/// connection, so more events can come than it has slots. Those are held until a slot frees, not
/// handed back: JetStream counts that as a delivery, and with one delivery allowed the event would
/// be gone unseen.
#[tokio::test]
async fn after_a_connection_blip_every_event_is_delivered_once() {
    let nats = NatsServer::start();
    let proxy = TcpProxy::start(nats.port()).await;
    let jetway = TestServer::builder().nats_url(proxy.url()).start().await;
    let client = EventsServiceClient::new(jetway.channel().await);
    let direct = async_nats::connect(nats.url()).await.expect("direct nats");
    let mut env = Env {
        nats,
        jetway,
        client,
        js: async_nats::jetstream::new(direct),
    };
    env.stream("orders", &["orders.>"]).await;
    let once = api::EnsureConsumerRequest {
        max_deliveries: Some(1),
        ..clients::consumer("orders", "worker", &["orders.>"])
    };
    clients::events(&env)
        .await
        .ensure_consumer(once)
        .await
        .expect("consumer");
    let mut session = env.subscribe("orders", "worker").max(2).await;
    env.consumer_info_until("orders", "worker", "the session's pull waits", |info| {
        info.num_waiting == 1
    })
    .await;
    let connections = proxy.accepted();

    proxy.cut();
    eventually("jetway reconnects", || async {
        (proxy.accepted() > connections).then_some(())
    })
    .await;
    env.consumer_info_until("orders", "worker", "a pull waits again", |info| {
        info.num_waiting >= 1
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(env.publish("orders.created", &format!("e{n}")).await);
    }
    let mut delivered = Vec::new();
    for _ in 0..2 {
        let pair = [session.event().await, session.event().await];
        let pair_ids: Vec<u64> = pair.iter().map(|e| e.id).collect();
        assert_eq!(session.ack(&pair_ids).await.ids, pair_ids);
        delivered.extend(pair.iter().map(|e| (e.id, e.delivery_attempt)));
    }
    let once: Vec<(u64, u64)> = ids.iter().map(|&id| (id, 1)).collect();
    assert_eq!(delivered, once, "each event delivered once, in order");
}
