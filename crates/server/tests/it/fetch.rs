//! Unary Fetch, Ack and Reject: events taken from a consumer without a stream held open, settled by
//! id in later calls, and redelivered by JetStream when their processing timeout passes.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull, push};
use jetway_api::jetway::events::v1::{self as api, AckRequest, FetchRequest, RejectRequest};
use tonic::Code;

use jetway_core::fetch::FetchLimits;
use jetway_server::config::Limits;
use jetway_testkit::eventually;

use crate::{
    clients::{self, FetchFixture, consumer, fetch, publish, raw, seconds, typed, value_of},
    harness::{Env, assert_status, readyz_until},
};

fn ack(ids: &[u64]) -> AckRequest {
    AckRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        ids: ids.to_vec(),
    }
}

/// A Reject of `ids` for consumer `worker` on `orders`: they come again after the consumer's
/// backoff, unless a [`RejectFixture`] step says otherwise.
fn reject(ids: &[u64]) -> RejectRequest {
    RejectRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        ids: ids.to_vec(),
        permanently: false,
        delay: None,
    }
}

/// The steps of the [`reject`] fixture, each setting one field.
trait RejectFixture {
    /// For good: the events are not delivered again.
    fn permanently(self) -> Self;
    /// The events come again after `delay`.
    fn delay(self, delay: Duration) -> Self;
}

impl RejectFixture for RejectRequest {
    fn permanently(mut self) -> Self {
        self.permanently = true;
        self
    }

    fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay.into());
        self
    }
}

fn settled(ids: &[u64], invalid: &[u64]) -> api::Settled {
    api::Settled {
        ids: ids.to_vec(),
        invalid_ids: invalid.to_vec(),
        temporary_failed_ids: vec![],
    }
}

#[tokio::test]
async fn fetched_events_are_settled_by_id_in_later_calls() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let request = api::EnsureConsumerRequest {
        processing_timeout: Some(seconds(30)),
        ..consumer("orders", "worker", &["orders.>"])
    };
    client.ensure_consumer(request).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(publish(&mut client, typed("orders.created", &format!("event {i}"))).await);
    }
    let with_headers = publish(
        &mut client,
        raw(
            "orders.created",
            "raw",
            "text/plain",
            &[("published-by", "fetch")],
        ),
    )
    .await;

    let first = client.fetch(fetch(2)).await.unwrap().into_inner();
    assert_eq!(first.processing_timeout, Some(seconds(30)));
    let got: Vec<_> = first
        .events
        .iter()
        .map(|e| (e.id, e.delivery_attempt))
        .collect();
    assert_eq!(got, [(ids[0], 1), (ids[1], 1)]);
    assert_eq!(value_of(&first.events[0]), "event 0");

    // An unknown id, a repeated one, and an id fetched from another consumer are invalid.
    client
        .ensure_consumer(consumer("orders", "other", &["orders.>"]))
        .await
        .unwrap();
    let acked = client
        .ack(ack(&[ids[0], 999, ids[0]]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.settled, Some(settled(&[ids[0]], &[999, ids[0]])));
    let elsewhere = AckRequest {
        consumer: "other".into(),
        ..ack(&[ids[1]])
    };
    let wrong_consumer = client.ack(elsewhere).await.unwrap().into_inner();
    assert_eq!(wrong_consumer.settled, Some(settled(&[], &[ids[1]])));

    // Rejected without delay: back at once, as the next delivery.
    let rejected = client.reject(reject(&[ids[1]])).await.unwrap().into_inner();
    assert_eq!(rejected.settled, Some(settled(&[ids[1]], &[])));
    let second = client
        .fetch(fetch(10).wait(Duration::from_secs(5)))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = second
        .events
        .iter()
        .map(|e| (e.id, e.delivery_attempt))
        .collect();
    assert_eq!(got, [(ids[1], 2), (ids[2], 1), (with_headers, 1)]);
    assert_eq!(second.events[2].headers["published-by"], "fetch");

    let all = [ids[1], ids[2], with_headers];
    let acked = client.ack(ack(&all)).await.unwrap().into_inner();
    assert_eq!(acked.settled, Some(settled(&all, &[])));
    env.consumer_info_until("orders", "worker", "the acks reach JetStream", |info| {
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await;

    // Nothing left: a fetch without wait returns at once with nothing.
    let empty = client.fetch(fetch(0)).await.unwrap().into_inner();
    assert!(empty.events.is_empty());

    // A fetch that waits gets the first event that comes.
    let mut waiting_client = client.clone();
    let waiting = tokio::spawn(async move {
        waiting_client
            .fetch(fetch(5).wait(Duration::from_secs(10)))
            .await
            .map(|r| r.into_inner())
    });
    env.consumer_info_until("orders", "worker", "the fetch is waiting", |info| {
        info.num_waiting == 1
    })
    .await;
    let late = publish(&mut client, typed("orders.created", "late")).await;
    let woke = waiting.await.unwrap().unwrap();
    assert_eq!(woke.events.iter().map(|e| e.id).collect::<Vec<_>>(), [late]);
    let rejected = client
        .reject(reject(&[late]).permanently())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.settled, Some(settled(&[late], &[])));
    env.consumer_info_until(
        "orders",
        "worker",
        "the termination reaches JetStream",
        |info| info.num_ack_pending == 0,
    )
    .await;
    assert!(
        client
            .fetch(fetch(1))
            .await
            .unwrap()
            .into_inner()
            .events
            .is_empty()
    );
}

#[tokio::test]
async fn an_unsettled_fetch_comes_back_after_the_processing_timeout_and_the_new_delivery_counts() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let request = api::EnsureConsumerRequest {
        processing_timeout: Some(seconds(1)),
        ..consumer("orders", "worker", &["orders.>"])
    };
    client.ensure_consumer(request).await.unwrap();
    let id = publish(&mut client, typed("orders.created", "slow")).await;
    let first = client.fetch(fetch(1)).await.unwrap().into_inner();
    assert_eq!(first.events[0].delivery_attempt, 1);

    // Not settled: after 1 s JetStream delivers it again, to whoever fetches.
    let again = client
        .fetch(fetch(1).wait(Duration::from_secs(5)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.events[0].id, again.events[0].delivery_attempt),
        (id, 2)
    );
    // The id settles the newest delivery.
    let acked = client.ack(ack(&[id])).await.unwrap().into_inner();
    assert_eq!(acked.settled, Some(settled(&[id], &[])));
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

/// An ack that fails for the moment (NATS is away) leaves the event in flight, even when it was
/// the consumer's only one: the retry after the outage settles it instead of finding an unknown id.
#[tokio::test]
async fn a_temporarily_failed_ack_leaves_the_event_in_flight_for_a_retry() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let request = api::EnsureConsumerRequest {
        processing_timeout: Some(seconds(3600)),
        ..consumer("orders", "worker", &["orders.>"])
    };
    client.ensure_consumer(request).await.unwrap();
    let id = publish(&mut client, typed("orders.created", "held")).await;
    let fetched = client.fetch(fetch(1)).await.unwrap().into_inner();
    assert_eq!(ids_of(&fetched), [(id, 1)]);

    env.nats.stop();
    let addr = env.jetway.health_addr();
    readyz_until(addr, 503).await;
    let during = client.ack(ack(&[id])).await.unwrap().into_inner();
    assert_eq!(
        during.settled,
        Some(api::Settled {
            temporary_failed_ids: vec![id],
            ..settled(&[], &[])
        }),
        "not settled, still in flight"
    );

    env.nats.restart();
    readyz_until(addr, 200).await;
    let after = client.ack(ack(&[id])).await.unwrap().into_inner();
    assert_eq!(
        after.settled,
        Some(settled(&[id], &[])),
        "the retry settles it"
    );
    env.consumer_info_until("orders", "worker", "the ack reaches JetStream", |info| {
        info.num_ack_pending == 0 && info.ack_floor.stream_sequence == id
    })
    .await;
}

#[tokio::test]
async fn fetch_ack_and_reject_reject_bad_input_and_unknown_consumers() {
    let mut env = Env::start().await;
    let mut client = clients::orders_worker(&mut env).await;
    // Made directly: Jetway makes only pull consumers with explicit acks.
    let orders = env.js.get_stream("orders").await.unwrap();
    orders
        .create_consumer(push::Config {
            durable_name: Some("pushed".into()),
            deliver_subject: "deliver.pushed".into(),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    orders
        .create_consumer(pull::Config {
            durable_name: Some("unacked".into()),
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    for (consumer, needle) in [("pushed", "push consumer"), ("unacked", "explicit acks")] {
        let request = FetchRequest {
            consumer: consumer.into(),
            ..fetch(1)
        };
        assert_status(
            client.fetch(request).await,
            Code::FailedPrecondition,
            needle,
        );
    }
    assert_status(
        client.fetch(fetch(1001)).await,
        Code::InvalidArgument,
        "max_events",
    );
    assert_status(
        client.fetch(fetch(1).wait(Duration::from_secs(61))).await,
        Code::InvalidArgument,
        "wait",
    );
    let negative = FetchRequest {
        wait: Some(jetway_api::google::protobuf::Duration {
            seconds: -1,
            nanos: 0,
        }),
        ..fetch(1)
    };
    assert_status(client.fetch(negative).await, Code::InvalidArgument, "wait");
    let unknown = FetchRequest {
        consumer: "nobody".into(),
        ..fetch(1)
    };
    assert_status(client.fetch(unknown).await, Code::NotFound, "nobody");
    let no_stream = FetchRequest {
        stream: "nope".into(),
        ..fetch(1)
    };
    assert_status(client.fetch(no_stream).await, Code::NotFound, "nope");
    let bad_name = FetchRequest {
        consumer: "a.b".into(),
        ..fetch(1)
    };
    assert_status(
        client.fetch(bad_name).await,
        Code::InvalidArgument,
        "consumer",
    );

    assert_status(client.ack(ack(&[])).await, Code::InvalidArgument, "ids");
    let bad_stream = AckRequest {
        stream: "".into(),
        ..ack(&[1])
    };
    assert_status(
        client.ack(bad_stream).await,
        Code::InvalidArgument,
        "stream",
    );
    assert_status(
        client.reject(reject(&[])).await,
        Code::InvalidArgument,
        "ids",
    );
    let negative_delay = RejectRequest {
        delay: Some(jetway_api::google::protobuf::Duration {
            seconds: -5,
            nanos: 0,
        }),
        ..reject(&[1])
    };
    assert_status(
        client.reject(negative_delay).await,
        Code::InvalidArgument,
        "delay",
    );
    // Issue 17 #8: no longer than the longest processing timeout (7 days).
    assert_status(
        client
            .reject(reject(&[1]).delay(Duration::from_secs(8 * 24 * 3600)))
            .await,
        Code::InvalidArgument,
        "delay: must be at most",
    );
    // Well-formed, but nothing was fetched: every id is invalid, and the call succeeds.
    let nothing = client
        .reject(reject(&[1, 2]).delay(Duration::from_secs(1)))
        .await;
    assert_eq!(
        nothing.unwrap().into_inner().settled,
        Some(settled(&[], &[1, 2]))
    );
}

/// A consumer made with request limits of its own (by another NATS client) is fetched from within
/// them: JetStream would refuse a larger pull outright.
#[tokio::test]
async fn fetch_stays_within_the_consumers_request_limits() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let orders = env.js.get_stream("orders").await.unwrap();
    for (name, max_batch, max_bytes) in [("worker", 2, 0), ("small", 0, 1024)] {
        orders
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                ack_policy: AckPolicy::Explicit,
                max_batch,
                max_bytes,
                max_expires: Duration::from_secs(1),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for i in 0..3 {
        publish(&mut client, typed("orders.created", &i.to_string())).await;
    }
    // The default of 10 events, a wait over the consumer's 1 s, and Jetway's 3 MiB of bytes.
    let fetched = client
        .fetch(fetch(0).wait(Duration::from_secs(5)))
        .await
        .expect("within the limits")
        .into_inner();
    let ids: Vec<u64> = fetched.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2], "at most max_batch");
    let rest = client
        .fetch(fetch(0).wait(Duration::from_secs(5)))
        .await
        .expect("within the limits")
        .into_inner();
    assert_eq!(rest.events.iter().map(|e| e.id).collect::<Vec<_>>(), [3]);
    assert_eq!(
        client
            .ack(ack(&[1, 2, 3]))
            .await
            .unwrap()
            .into_inner()
            .settled,
        Some(settled(&[1, 2, 3], &[]))
    );

    // Under a byte limit per pull, one event at a time, so one larger than the limit comes too.
    publish(&mut client, typed("orders.created", &"x".repeat(4096))).await;
    let mut ids = Vec::new();
    while ids.len() < 4 {
        let request = FetchRequest {
            consumer: "small".into(),
            ..fetch(0).wait(Duration::from_secs(5))
        };
        let fetched = client.fetch(request).await.expect("within the limits");
        let events = fetched.into_inner().events;
        assert_eq!(events.len(), 1, "one at a time");
        ids.push(events[0].id);
    }
    assert_eq!(ids, [1, 2, 3, 4]);
}

/// Jetway with limits on fetched events in flight small enough to reach in a test.
fn limits(per_consumer: usize, total: usize) -> Limits {
    Limits {
        fetch: FetchLimits {
            per_consumer,
            total,
        },
        ..Limits::default()
    }
}

fn fetch_from(stream: &str, consumer: &str, max: u32) -> FetchRequest {
    FetchRequest {
        stream: stream.into(),
        consumer: consumer.into(),
        max_events: max,
        wait: Some(Duration::from_secs(5).into()),
    }
}

fn ids_of(response: &api::FetchResponse) -> Vec<(u64, u64)> {
    response
        .events
        .iter()
        .map(|e| (e.id, e.delivery_attempt))
        .collect()
}

#[tokio::test]
async fn one_consumer_at_its_limit_does_not_hold_up_another() {
    let mut env = Env::start_with(limits(2, 100)).await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    for name in ["worker", "other"] {
        client
            .ensure_consumer(consumer("orders", name, &["orders.>"]))
            .await
            .unwrap();
    }
    for i in 0..3 {
        publish(&mut client, typed("orders.created", &i.to_string())).await;
    }
    // The fetch takes what the consumer's limit leaves room for, not what it asked for.
    let first = client.fetch(fetch(10)).await.unwrap().into_inner();
    assert_eq!(ids_of(&first), [(1, 1), (2, 1)]);
    let full = client.fetch(fetch(1)).await;
    assert_status(
        full,
        Code::ResourceExhausted,
        "FETCH_MAX_IN_FLIGHT_PER_CONSUMER",
    );
    let other = client
        .fetch(fetch_from("orders", "other", 10))
        .await
        .expect("another consumer has its own limit")
        .into_inner();
    assert_eq!(ids_of(&other), [(1, 1), (2, 1)]);

    // A settlement frees a slot.
    assert_eq!(
        client.ack(ack(&[1])).await.unwrap().into_inner().settled,
        Some(settled(&[1], &[]))
    );
    let next = client.fetch(fetch(10)).await.unwrap().into_inner();
    assert_eq!(ids_of(&next), [(3, 1)]);
}

#[tokio::test]
async fn deleting_a_stream_or_a_consumer_frees_its_fetched_events() {
    // Room for two fetched events on the whole server.
    let mut env = Env::start_with(limits(10, 2)).await;
    let mut client = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    for (stream, name) in [("ft", "f1"), ("orders", "worker")] {
        env.stream(stream, &[&format!("{stream}.>")]).await;
        client
            .ensure_consumer(consumer(stream, name, &[&format!("{stream}.>")]))
            .await
            .unwrap();
        for i in 0..2 {
            publish(&mut client, typed(&format!("{stream}.x"), &i.to_string())).await;
        }
    }
    let held = client.fetch(fetch_from("ft", "f1", 10)).await.unwrap();
    assert_eq!(held.into_inner().events.len(), 2);
    assert_status(
        client.fetch(fetch(1)).await,
        Code::ResourceExhausted,
        "FETCH_MAX_IN_FLIGHT",
    );

    admin
        .delete_stream(jetway_api::jetway::admin::v1::DeleteStreamRequest {
            stream: "ft".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Nothing else touches ft: only JetStream's announcement can free its slots.
    let fetched = eventually("the deleted stream's events no longer count", || {
        let mut client = client.clone();
        async move { client.fetch(fetch(10)).await.ok() }
    })
    .await;
    assert_eq!(ids_of(&fetched.into_inner()), [(1, 1), (2, 1)]);

    // The same for a deleted consumer: its slots go to a consumer of the same name made anew.
    env.stream("ft", &["ft.>"]).await;
    publish(&mut client, typed("ft.x", "again")).await;
    env.js
        .get_stream("orders")
        .await
        .unwrap()
        .delete_consumer("worker")
        .await
        .unwrap();
    client
        .ensure_consumer(consumer("ft", "f1", &["ft.>"]))
        .await
        .unwrap();
    let fetched = eventually("the deleted consumer's events no longer count", || {
        let mut client = client.clone();
        async move { client.fetch(fetch_from("ft", "f1", 10)).await.ok() }
    })
    .await;
    assert_eq!(ids_of(&fetched.into_inner()), [(1, 1)]);
}

/// JetStream applies a new processing timeout to deliveries already made, and so does Jetway: an
/// entry is never held after JetStream gave up waiting for it.
#[tokio::test]
async fn a_shortened_processing_timeout_applies_to_events_already_fetched() {
    let mut env = Env::start_with(limits(1, 100)).await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let hour = api::EnsureConsumerRequest {
        processing_timeout: Some(seconds(3600)),
        ..consumer("orders", "worker", &["orders.>"])
    };
    client.ensure_consumer(hour.clone()).await.unwrap();
    let id = publish(&mut client, typed("orders.created", "slow")).await;
    let first = client.fetch(fetch(1)).await.unwrap().into_inner();
    assert_eq!(ids_of(&first), [(id, 1)]);

    let second = api::EnsureConsumerRequest {
        processing_timeout: Some(seconds(1)),
        ..hour
    };
    client.ensure_consumer(second).await.unwrap();
    // JetStream redelivers after a second; the slot the first delivery held is free by then.
    let again = eventually("the redelivery is fetched", || {
        let mut client = client.clone();
        async move {
            let fetched = client.fetch(fetch(1)).await.ok()?.into_inner();
            (!fetched.events.is_empty()).then_some(fetched)
        }
    })
    .await;
    assert_eq!(ids_of(&again), [(id, 2)]);
    assert_eq!(again.processing_timeout, Some(seconds(1)));
}

#[tokio::test]
async fn settling_on_a_deleted_stream_or_consumer_is_not_found() {
    let mut env = Env::start().await;
    let mut client = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    env.stream("ft", &["ft.>"]).await;
    client
        .ensure_consumer(consumer("ft", "f1", &["ft.>"]))
        .await
        .unwrap();
    for i in 0..3 {
        publish(&mut client, typed("ft.x", &i.to_string())).await;
    }
    let fetched = client.fetch(fetch_from("ft", "f1", 10)).await.unwrap();
    assert_eq!(fetched.into_inner().events.len(), 3);
    let ids: Vec<u64> = (1..=1000).collect();
    let on = |stream: &str, consumer: &str, ids: &[u64]| AckRequest {
        stream: stream.into(),
        consumer: consumer.into(),
        ids: ids.to_vec(),
    };
    let reject_on = |stream: &str, consumer: &str| RejectRequest {
        stream: stream.into(),
        consumer: consumer.into(),
        ids: vec![1],
        permanently: false,
        delay: None,
    };
    assert_status(
        client.ack(on("ft", "nobody", &ids)).await,
        Code::NotFound,
        "nobody",
    );
    assert_status(
        client.reject(reject_on("nowhere", "f1")).await,
        Code::NotFound,
        "nowhere",
    );

    // Made anew under the same name: another consumer, which never delivered these.
    env.js
        .get_stream("ft")
        .await
        .unwrap()
        .delete_consumer("f1")
        .await
        .unwrap();
    assert_status(client.ack(on("ft", "f1", &ids)).await, Code::NotFound, "f1");
    client
        .ensure_consumer(consumer("ft", "f1", &["ft.>"]))
        .await
        .unwrap();
    let fetched = client.fetch(fetch_from("ft", "f1", 2)).await.unwrap();
    assert_eq!(ids_of(&fetched.into_inner()), [(1, 1), (2, 1)]);
    let acked = client.ack(on("ft", "f1", &[1, 3])).await.unwrap();
    assert_eq!(acked.into_inner().settled, Some(settled(&[1], &[3])));

    admin
        .delete_stream(jetway_api::jetway::admin::v1::DeleteStreamRequest {
            stream: "ft".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_status(client.ack(on("ft", "f1", &ids)).await, Code::NotFound, "ft");
    assert_status(
        client.reject(reject_on("ft", "f1")).await,
        Code::NotFound,
        "ft",
    );
}

/// A published event of `size` bytes of raw payload.
fn sized(subject: &str, size: usize) -> api::PublishEventRequest {
    api::PublishEventRequest {
        subject: subject.into(),
        payload: Some(api::publish_event_request::Payload::Raw(api::RawPayload {
            data: vec![b'x'; size].into(),
            content_type: "application/octet-stream".into(),
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_fetch_returns_fewer_events_when_more_would_exceed_3_mib() {
    let mut env = Env::start().await;
    let mut client = clients::orders_worker(&mut env).await;
    for _ in 0..5 {
        publish(&mut client, sized("orders.big", 900_000)).await;
    }
    // Three make 2.7 MB; a fourth would pass 3 MiB.
    let first = client.fetch(fetch(10)).await.unwrap().into_inner();
    assert_eq!(ids_of(&first), [(1, 1), (2, 1), (3, 1)]);
    let rest = client.fetch(fetch(10)).await.unwrap().into_inner();
    assert_eq!(ids_of(&rest), [(4, 1), (5, 1)]);
    let all = [1, 2, 3, 4, 5];
    assert_eq!(
        client.ack(ack(&all)).await.unwrap().into_inner().settled,
        Some(settled(&all, &[]))
    );
    let info = env
        .consumer_info_until("orders", "worker", "the acks reach JetStream", |info| {
            info.num_ack_pending == 0
        })
        .await;
    assert_eq!(
        (info.num_redelivered, info.delivered.consumer_sequence),
        (0, 5),
        "each event delivered once"
    );
}

/// A nats-server that takes messages of up to 8 MiB, which only a configuration file can set (the
/// testkit's servers keep the default of 1 MiB). Killed when dropped.
struct LargePayloadNats {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl LargePayloadNats {
    async fn start() -> LargePayloadNats {
        let binary = jetway_testkit::NatsServer::start().binary().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, "max_payload: 8MB\n").unwrap();
        let ports = dir.path().join("ports");
        std::fs::create_dir(&ports).unwrap();
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&config)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The server writes its ports file once it accepts clients.
        let url = eventually("the nats-server reports its port", || {
            let ports = ports.clone();
            async move {
                let file = std::fs::read_dir(&ports).ok()?.next()?.ok()?.path();
                let ports: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
                ports["nats"][0].as_str().map(str::to_owned)
            }
        })
        .await;
        LargePayloadNats {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for LargePayloadNats {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test]
async fn an_event_larger_than_3_mib_on_its_own_is_fetched_alone() {
    let nats = LargePayloadNats::start().await;
    let jetway = crate::harness::TestServer::builder()
        .nats_url(&nats.url)
        .start()
        .await;
    let channel = jetway.channel().await;
    jetway_api::windshift::events::v1alpha1::events_service_client::EventsServiceClient::new(
        channel.clone(),
    )
    .ensure_stream(crate::harness::stream_request("orders", &["orders.>"]))
    .await
    .unwrap();
    let mut client = api::events_service_client::EventsServiceClient::new(channel);
    client
        .ensure_consumer(consumer("orders", "worker", &["orders.>"]))
        .await
        .unwrap();
    let large = 3 * (1 << 20) + 100_000;
    for _ in 0..2 {
        publish(&mut client, sized("orders.big", large)).await;
    }
    for id in [1, 2] {
        let fetched = client.fetch(fetch(10)).await.unwrap().into_inner();
        assert_eq!(ids_of(&fetched), [(id, 1)], "one at a time");
    }
}
