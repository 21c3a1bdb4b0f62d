//! Unary Fetch, Ack and Reject: events taken from a consumer without a stream held open, settled by
//! id in later calls, and redelivered by JetStream when their processing timeout passes.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull, push};
use jetway_api::jetway::events::v1::{self as api, AckRequest, FetchRequest, RejectRequest};
use tonic::Code;

use crate::{
    clients::{self, consumer, publish, raw, seconds, typed, value_of},
    harness::{Env, assert_status},
};

fn fetch(max: u32, wait: Option<Duration>) -> FetchRequest {
    FetchRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        max_events: max,
        wait: wait.map(Into::into),
    }
}

fn ack(ids: &[u64]) -> AckRequest {
    AckRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        ids: ids.to_vec(),
    }
}

fn reject(ids: &[u64], permanently: bool, delay: Option<Duration>) -> RejectRequest {
    RejectRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        ids: ids.to_vec(),
        permanently,
        delay: delay.map(Into::into),
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

    let first = client.fetch(fetch(2, None)).await.unwrap().into_inner();
    assert_eq!(first.processing_timeout, Some(seconds(30)));
    let got: Vec<_> = first
        .events
        .iter()
        .map(|e| (e.id, e.delivery_attempt))
        .collect();
    assert_eq!(got, [(ids[0], 1), (ids[1], 1)]);
    assert_eq!(value_of(&first.events[0]), "event 0");

    // An unknown id, a repeated one, and an id fetched from another consumer are invalid.
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
    let rejected = client
        .reject(reject(&[ids[1]], false, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.settled, Some(settled(&[ids[1]], &[])));
    let second = client
        .fetch(fetch(10, Some(Duration::from_secs(5))))
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
    let empty = client.fetch(fetch(0, None)).await.unwrap().into_inner();
    assert!(empty.events.is_empty());

    // A fetch that waits gets the first event that comes.
    let mut waiting_client = client.clone();
    let waiting = tokio::spawn(async move {
        waiting_client
            .fetch(fetch(5, Some(Duration::from_secs(10))))
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
        .reject(reject(&[late], true, None))
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
            .fetch(fetch(1, None))
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
    let first = client.fetch(fetch(1, None)).await.unwrap().into_inner();
    assert_eq!(first.events[0].delivery_attempt, 1);

    // Not settled: after 1 s JetStream delivers it again, to whoever fetches.
    let again = client
        .fetch(fetch(1, Some(Duration::from_secs(5))))
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

#[tokio::test]
async fn fetch_ack_and_reject_reject_bad_input_and_unknown_consumers() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    client
        .ensure_consumer(consumer("orders", "worker", &["orders.>"]))
        .await
        .unwrap();
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
            ..fetch(1, None)
        };
        assert_status(
            client.fetch(request).await,
            Code::FailedPrecondition,
            needle,
        );
    }
    assert_status(
        client.fetch(fetch(1001, None)).await,
        Code::InvalidArgument,
        "max_events",
    );
    assert_status(
        client.fetch(fetch(1, Some(Duration::from_secs(61)))).await,
        Code::InvalidArgument,
        "wait",
    );
    let negative = FetchRequest {
        wait: Some(jetway_api::google::protobuf::Duration {
            seconds: -1,
            nanos: 0,
        }),
        ..fetch(1, None)
    };
    assert_status(client.fetch(negative).await, Code::InvalidArgument, "wait");
    let unknown = FetchRequest {
        consumer: "nobody".into(),
        ..fetch(1, None)
    };
    assert_status(client.fetch(unknown).await, Code::NotFound, "nobody");
    let no_stream = FetchRequest {
        stream: "nope".into(),
        ..fetch(1, None)
    };
    assert_status(client.fetch(no_stream).await, Code::NotFound, "nope");
    let bad_name = FetchRequest {
        consumer: "a.b".into(),
        ..fetch(1, None)
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
        client.reject(reject(&[], false, None)).await,
        Code::InvalidArgument,
        "ids",
    );
    let negative_delay = RejectRequest {
        delay: Some(jetway_api::google::protobuf::Duration {
            seconds: -5,
            nanos: 0,
        }),
        ..reject(&[1], false, None)
    };
    assert_status(
        client.reject(negative_delay).await,
        Code::InvalidArgument,
        "delay",
    );
    // Issue 17 #8: no longer than the longest processing timeout (7 days).
    assert_status(
        client
            .reject(reject(
                &[1],
                false,
                Some(Duration::from_secs(8 * 24 * 3600)),
            ))
            .await,
        Code::InvalidArgument,
        "delay: must be at most",
    );
    // Well-formed, but nothing was fetched: every id is invalid, and the call succeeds.
    let nothing = client
        .reject(reject(&[1, 2], false, Some(Duration::from_secs(1))))
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
        .fetch(fetch(0, Some(Duration::from_secs(5))))
        .await
        .expect("within the limits")
        .into_inner();
    let ids: Vec<u64> = fetched.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2], "at most max_batch");
    let rest = client
        .fetch(fetch(0, Some(Duration::from_secs(5))))
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
            ..fetch(0, Some(Duration::from_secs(5)))
        };
        let fetched = client.fetch(request).await.expect("within the limits");
        let events = fetched.into_inner().events;
        assert_eq!(events.len(), 1, "one at a time");
        ids.push(events[0].id);
    }
    assert_eq!(ids, [1, 2, 3, 4]);
}
