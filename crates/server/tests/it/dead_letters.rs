//! Delivery policies (max deliveries, backoff) and dead letters: events a consumer gives up on are
//! copied to its dead-letter stream, even across a Jetway restart, and redriven from there once.

use std::time::Duration;

use async_nats::jetstream::{AckKind, consumer::PullConsumer};
use futures::StreamExt;
use jetway_api::{
    google::protobuf::Duration as PbDuration,
    jetway::{
        admin::v1::{
            self as admin_api, DeadLetter, GetConsumerInfoRequest, ListDeadLettersRequest,
            RedriveDeadLettersRequest, admin_service_client::AdminServiceClient,
        },
        events::v1::{self as api, GetEventRequest, RejectRequest},
    },
    windshift::events::v1alpha1::{EnsureConsumerRequest, events_response::Response as Resp},
};
use jetway_testkit::eventually;
use tonic::{Code, transport::Channel};

use crate::{
    clients::{
        self, FetchFixture, collect, consumer, fetch, publish, raw, seconds, typed, value_of,
    },
    harness::{Env, assert_status},
};

fn list(dead_letter_stream: &str) -> ListDeadLettersRequest {
    ListDeadLettersRequest {
        dead_letter_stream: dead_letter_stream.into(),
        ..Default::default()
    }
}

async fn dead_letters(
    admin: &mut AdminServiceClient<Channel>,
    request: ListDeadLettersRequest,
) -> Vec<DeadLetter> {
    let responses = collect(admin.list_dead_letters(request).await.unwrap().into_inner())
        .await
        .unwrap();
    responses
        .into_iter()
        .map(|r| r.dead_letter.expect("a dead letter"))
        .collect()
}

/// Waits until the dead-letter stream holds `n` dead letters, and returns them.
pub(crate) async fn await_dead_letters(env: &Env, stream: &str, n: usize) -> Vec<DeadLetter> {
    eventually(&format!("{n} dead letters in {stream}"), || async {
        let mut admin = clients::admin(env).await;
        let found = match admin.list_dead_letters(list(stream)).await {
            Ok(responses) => collect(responses.into_inner()).await.ok()?,
            // The dead-letter stream is made with the consumer, so this is only a race at start.
            Err(_) => return None,
        };
        (found.len() == n).then(|| found.into_iter().filter_map(|r| r.dead_letter).collect())
    })
    .await
}

/// Waits until the dead-letter worker pulls from the advisory stream: its consumer there has a pull
/// request waiting. The worker learns that the stream was deleted from JetStream's answer to that
/// request ("Consumer Deleted"); a delete while the worker is still opening its consumer, before any
/// request waits, can take its first request with it unanswered, and the worker finds out only when
/// that request expires (after 30 s), past the test's bound. Call this before each forced delete.
async fn await_worker_pulling(env: &Env) {
    eventually("the dead-letter worker pulls advisories", || async {
        let stream = env.js.get_stream("JETWAY_ADVISORIES").await.ok()?;
        let info = stream.consumer_info("dead-letter-worker").await.ok()?;
        (info.num_waiting > 0).then_some(())
    })
    .await;
}

fn redrive(ids: &[u64]) -> RedriveDeadLettersRequest {
    RedriveDeadLettersRequest {
        dead_letter_stream: "orders-dead".into(),
        ids: ids.to_vec(),
        ..Default::default()
    }
}

/// A permanent reject after a forced delete of the advisory stream is still dead-lettered, through
/// Fetch's Reject and through an Events stream: the advisory stream is made again before the reject
/// is sent, instead of the reject being confirmed and its dead letter lost.
#[tokio::test]
async fn permanent_rejects_after_a_forced_delete_of_the_advisory_stream_are_dead_lettered() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut events = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    let worker = api::EnsureConsumerRequest {
        dead_letter_stream: Some("orders-dead".into()),
        ..consumer("orders", "worker", &["orders.>"])
    };
    events.ensure_consumer(worker).await.unwrap();
    let delete_advisories = admin_api::DeleteStreamRequest {
        stream: "JETWAY_ADVISORIES".into(),
        force: true,
    };

    let fetched = publish(&mut events, typed("orders.created", "fetched")).await;
    await_worker_pulling(&env).await;
    admin
        .delete_stream(delete_advisories.clone())
        .await
        .unwrap();
    let batch = events.fetch(fetch(1)).await.unwrap().into_inner();
    assert_eq!(batch.events[0].id, fetched);
    let rejected = events
        .reject(RejectRequest {
            stream: "orders".into(),
            consumer: "worker".into(),
            ids: vec![fetched],
            permanently: true,
            delay: None,
        })
        .await
        .unwrap()
        .into_inner()
        .settled
        .expect("settled");
    assert_eq!(rejected.ids, [fetched]);
    await_dead_letters(&env, "orders-dead", 1).await;

    let streamed = publish(&mut events, typed("orders.created", "streamed")).await;
    await_worker_pulling(&env).await;
    admin.delete_stream(delete_advisories).await.unwrap();
    let mut session = env.subscribe("orders", "worker").await;
    assert_eq!(session.event().await.id, streamed);
    let rejected = session.reject(&[streamed]).permanently().await;
    assert_eq!(rejected.ids, [streamed]);

    let found = await_dead_letters(&env, "orders-dead", 2).await;
    let mut ids: Vec<u64> = found
        .iter()
        .map(|dead| dead.event.as_ref().unwrap().id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [fetched, streamed]);
}

/// While the advisory stream cannot be made again (here another stream has taken its subjects), a
/// permanent reject fails for now and the event stays in flight; once it can, the same reject goes
/// through and the dead letter is stored.
#[tokio::test]
async fn a_permanent_reject_fails_for_now_while_the_advisory_stream_cannot_be_made() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut events = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    let worker = api::EnsureConsumerRequest {
        dead_letter_stream: Some("orders-dead".into()),
        ..consumer("orders", "worker", &["orders.>"])
    };
    events.ensure_consumer(worker).await.unwrap();
    let id = publish(&mut events, typed("orders.created", "rejected")).await;
    await_worker_pulling(&env).await;
    admin
        .delete_stream(admin_api::DeleteStreamRequest {
            stream: "JETWAY_ADVISORIES".into(),
            force: true,
        })
        .await
        .unwrap();
    env.js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "squatter".into(),
            subjects: vec!["$JS.EVENT.ADVISORY.CONSUMER.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let batch = events.fetch(fetch(1)).await.unwrap().into_inner();
    assert_eq!(batch.events[0].id, id);
    let reject = RejectRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        ids: vec![id],
        permanently: true,
        delay: None,
    };
    let settled = |response: tonic::Response<api::RejectResponse>| {
        response.into_inner().settled.expect("settled")
    };
    let refused = settled(events.reject(reject.clone()).await.unwrap());
    assert_eq!(
        (
            refused.ids.as_slice(),
            refused.temporary_failed_ids.as_slice()
        ),
        (&[][..], &[id][..])
    );

    env.js.delete_stream("squatter").await.unwrap();
    let rejected = settled(events.reject(reject).await.unwrap());
    assert_eq!(rejected.ids, [id]);
    let found = await_dead_letters(&env, "orders-dead", 1).await;
    assert_eq!(found[0].event.as_ref().unwrap().id, id);
}

/// Once the dead-letter worker has run, it makes the advisory stream again after a forced delete,
/// so that the advisories of events that run out of deliveries (which no reject precedes) are kept.
#[tokio::test]
async fn the_worker_makes_a_deleted_advisory_stream_again() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut events = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    let worker = api::EnsureConsumerRequest {
        dead_letter_stream: Some("orders-dead".into()),
        ..consumer("orders", "worker", &["orders.>"])
    };
    events.ensure_consumer(worker).await.unwrap();
    let advisories = || async {
        let stream = env.js.get_stream("JETWAY_ADVISORIES").await.ok()?;
        stream.consumer_info("dead-letter-worker").await.ok()
    };
    await_worker_pulling(&env).await;
    admin
        .delete_stream(admin_api::DeleteStreamRequest {
            stream: "JETWAY_ADVISORIES".into(),
            force: true,
        })
        .await
        .unwrap();
    eventually("the worker made the stream again", advisories).await;
}

#[tokio::test]
async fn given_up_events_are_dead_lettered_and_redriven_once() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut events = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    let worker = api::EnsureConsumerRequest {
        max_deliveries: Some(2),
        processing_timeout: Some(seconds(1)),
        dead_letter_stream: Some("orders-dead".into()),
        ..consumer("orders", "worker", &["orders.>"])
    };
    events.ensure_consumer(worker).await.unwrap();
    let rejected = events
        .publish_event(api::PublishEventRequest {
            idempotency_key: Some("order-1".into()),
            ..raw(
                "orders.created",
                "{}",
                "application/json",
                &[("published-by", "billing")],
            )
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let exhausted = publish(&mut events, typed("orders.paid", "never settled")).await;

    let fetched = events.fetch(fetch(2)).await.unwrap().into_inner();
    assert_eq!(fetched.events.len(), 2);
    events
        .reject(RejectRequest {
            stream: "orders".into(),
            consumer: "worker".into(),
            ids: vec![rejected],
            permanently: true,
            delay: None,
        })
        .await
        .unwrap();
    // The other one is left to time out twice: its second delivery is its last. JetStream gives
    // up on it when it would deliver it again, so while the consumer is being pulled from.
    let again = events
        .fetch(fetch(1).wait(seconds(5)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.events[0].id, again.events[0].delivery_attempt),
        (exhausted, 2)
    );
    let nothing = events
        .fetch(fetch(1).wait(seconds(3)))
        .await
        .unwrap()
        .into_inner();
    assert!(nothing.events.is_empty(), "no third delivery");

    let found = await_dead_letters(&env, "orders-dead", 2).await;
    let by_event = |id: u64| {
        found
            .iter()
            .find(|d| d.event.as_ref().unwrap().id == id)
            .expect("a dead letter of the event")
            .clone()
    };
    let first = by_event(rejected);
    assert_eq!(
        (first.stream.as_str(), first.consumer.as_str()),
        ("orders", "worker")
    );
    assert_eq!(
        first.reason,
        i32::from(admin_api::DeadLetterReason::Rejected)
    );
    assert_eq!(first.attempts, 1);
    assert!(first.time.is_some());
    let event = first.event.clone().unwrap();
    assert_eq!(event.subject, "orders.created");
    assert_eq!(
        event.payload,
        Some(api::event::Payload::Raw(api::RawPayload {
            data: b"{}".to_vec().into(),
            content_type: "application/json".into(),
        }))
    );
    assert_eq!(event.headers.len(), 1);
    assert_eq!(event.headers["published-by"], "billing");
    assert_eq!(event.idempotency_key.as_deref(), Some("order-1"));
    let second = by_event(exhausted);
    assert_eq!(
        second.reason,
        i32::from(admin_api::DeadLetterReason::MaxDeliveries)
    );
    assert_eq!(second.attempts, 2);
    assert_eq!(value_of(second.event.as_ref().unwrap()), "never settled");

    // Filters, a start id and a limit narrow the listing.
    let other = ListDeadLettersRequest {
        consumer: "other".into(),
        ..list("orders-dead")
    };
    assert!(dead_letters(&mut admin, other).await.is_empty());
    let narrowed = ListDeadLettersRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        ..list("orders-dead")
    };
    assert_eq!(dead_letters(&mut admin, narrowed).await.len(), 2);
    let later = found.iter().map(|d| d.id).max().unwrap();
    let from = ListDeadLettersRequest {
        from_id: later,
        ..list("orders-dead")
    };
    assert_eq!(dead_letters(&mut admin, from).await[0].id, later);
    let limited = ListDeadLettersRequest {
        limit: 1,
        ..list("orders-dead")
    };
    assert_eq!(dead_letters(&mut admin, limited).await.len(), 1);

    // Redriven: published again on its subject, with its body and headers, and gone from the
    // dead-letter stream. The same call again finds nothing to do, and publishes nothing.
    let response = admin
        .redrive_dead_letters(redrive(&[first.id]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.redriven.len(), 1);
    let redriven = response.redriven[0];
    assert_eq!(redriven.id, first.id);
    assert!(response.invalid_ids.is_empty() && response.temporary_failed_ids.is_empty());
    let copy = events
        .get_event(GetEventRequest {
            stream: "orders".into(),
            id: redriven.event_id,
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(
        (copy.subject.as_str(), copy.payload.clone()),
        ("orders.created", event.payload)
    );
    assert_eq!(copy.headers, event.headers);
    assert_eq!(copy.timestamp, event.timestamp, "the original time");
    let retried = admin
        .redrive_dead_letters(redrive(&[first.id]))
        .await
        .unwrap()
        .into_inner();
    assert!(retried.redriven.is_empty());
    assert_eq!(retried.invalid_ids, [first.id]);
    assert_eq!(
        env.stream_info("orders").await.state.last_sequence,
        redriven.event_id
    );

    // All the rest, then nothing left.
    let all = RedriveDeadLettersRequest {
        all: true,
        ..redrive(&[])
    };
    let response = admin
        .redrive_dead_letters(all.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.redriven.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second.id]
    );
    assert!(
        dead_letters(&mut admin, list("orders-dead"))
            .await
            .is_empty()
    );
    let nothing = admin.redrive_dead_letters(all).await.unwrap().into_inner();
    assert!(nothing.redriven.is_empty());

    // The consumer gets the redriven events as new ones.
    let fresh = events
        .fetch(fetch(10).wait(seconds(5)))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = fresh
        .events
        .iter()
        .map(|e| (e.id, e.delivery_attempt))
        .collect();
    assert_eq!(
        got,
        [(redriven.event_id, 1), (response.redriven[0].event_id, 1)]
    );
}

#[tokio::test]
async fn a_dead_letter_survives_a_jetway_restart() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut events = clients::events(&env).await;
    let worker = api::EnsureConsumerRequest {
        max_deliveries: Some(1),
        processing_timeout: Some(seconds(1)),
        dead_letter_stream: Some("orders-dead".into()),
        ..consumer("orders", "worker", &["orders.>"])
    };
    events.ensure_consumer(worker).await.unwrap();
    let rejected = publish(&mut events, typed("orders.created", "rejected")).await;
    let exhausted = publish(&mut events, typed("orders.created", "exhausted")).await;

    // Jetway goes away; a NATS client gives up on both events meanwhile.
    env.jetway.stop().await;
    let consumer: PullConsumer = env
        .js
        .get_consumer_from_stream("worker", "orders")
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(2).messages().await.unwrap();
    let first = batch.next().await.unwrap().unwrap();
    assert_eq!(first.info().unwrap().stream_sequence, rejected);
    first.ack_with(AckKind::Term).await.unwrap();
    let second = batch.next().await.unwrap().unwrap();
    assert_eq!(second.info().unwrap().stream_sequence, exhausted);
    // Both advisories wait in the advisory stream; nothing was dead-lettered yet.
    eventually("both advisories are stored", || async {
        let info = env.stream_info("JETWAY_ADVISORIES").await;
        (info.state.messages == 2).then_some(())
    })
    .await;
    assert_eq!(env.stream_info("orders-dead").await.state.messages, 0);

    // A new Jetway on the same NATS picks them up.
    env.jetway.start_again().await;
    let found = await_dead_letters(&env, "orders-dead", 2).await;
    let mut got: Vec<_> = found
        .iter()
        .map(|d| (d.event.as_ref().unwrap().id, d.reason, d.attempts))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                rejected,
                i32::from(admin_api::DeadLetterReason::Rejected),
                1
            ),
            (
                exhausted,
                i32::from(admin_api::DeadLetterReason::MaxDeliveries),
                1
            ),
        ]
    );
    eventually("the advisories are consumed", || async {
        (env.stream_info("JETWAY_ADVISORIES").await.state.messages == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn backoff_sets_the_processing_timeout_of_each_delivery() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut events = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    let worker = api::EnsureConsumerRequest {
        max_deliveries: Some(3),
        backoff: vec![seconds(1), seconds(5)],
        ..consumer("orders", "worker", &["orders.>"])
    };
    events.ensure_consumer(worker).await.unwrap();
    let (mut session, first) = env.subscribe("orders", "worker").raw().await;
    match first {
        Ok(Some(Resp::Subscribed(subscribed))) => {
            assert_eq!(subscribed.processing_timeout, Some(seconds(1)))
        }
        other => panic!("expected Subscribed, got {other:?}"),
    }
    let id = env.publish("orders.created", "slow").await;
    assert_eq!(session.event().await.delivery_attempt, 1);
    // The first delivery has 1 s; the second has 5 s, so it can still be acked after 1.5 s.
    let second = session.event().await;
    assert_eq!((second.id, second.delivery_attempt), (id, 2));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(session.ack(&[id]).await.ids, [id]);

    // Jetway's EnsureConsumer writes the whole policy; Windshift's keeps it.
    let info = |admin: &mut AdminServiceClient<Channel>| {
        let mut admin = admin.clone();
        async move {
            admin
                .get_consumer_info(GetConsumerInfoRequest {
                    stream: "orders".into(),
                    consumer: "worker".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .info
                .unwrap()
        }
    };
    env.client
        .ensure_consumer(EnsureConsumerRequest {
            stream: "orders".into(),
            name: Some("worker".into()),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let kept = info(&mut admin).await;
    assert_eq!((kept.max_deliveries, kept.backoff.len()), (Some(3), 2));
    // A processing timeout cannot go beside the backoff (JetStream would ignore it), so Windshift's
    // EnsureConsumer fails instead of answering OK for nothing.
    assert_status(
        env.client
            .ensure_consumer(EnsureConsumerRequest {
                stream: "orders".into(),
                name: Some("worker".into()),
                subjects: vec!["orders.>".into()],
                processing_timeout: Some(seconds(60)),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "processing_timeout: consumer worker on stream orders has a backoff",
    );
    assert_eq!(info(&mut admin).await.processing_timeout, Some(seconds(1)));
    // The timeout it already has changes nothing, so a service that ensures it at startup is fine.
    env.client
        .ensure_consumer(EnsureConsumerRequest {
            stream: "orders".into(),
            name: Some("worker".into()),
            subjects: vec!["orders.>".into()],
            processing_timeout: Some(seconds(1)),
            ..Default::default()
        })
        .await
        .expect("the same timeout as the backoff's first entry");
    assert_eq!(info(&mut admin).await.backoff.len(), 2);
    let cleared = api::EnsureConsumerRequest {
        dead_letter_stream: Some("orders-dead".into()),
        ..consumer("orders", "worker", &["orders.>"])
    };
    events.ensure_consumer(cleared).await.unwrap();
    let cleared = info(&mut admin).await;
    assert_eq!((cleared.max_deliveries, cleared.backoff.len()), (None, 0));
    assert_eq!(cleared.dead_letter_stream.as_deref(), Some("orders-dead"));
    assert_eq!(
        cleared.processing_timeout,
        Some(seconds(1)),
        "kept from before"
    );
}

#[tokio::test]
async fn delivery_policies_and_dead_letter_calls_reject_bad_input() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.stream("audit", &["audit.>"]).await;
    let mut events = clients::events(&env).await;
    let mut admin = clients::admin(&env).await;
    let base = || consumer("orders", "worker", &["orders.>"]);
    let negative = PbDuration {
        seconds: -1,
        nanos: 0,
    };
    let cases = [
        (
            api::EnsureConsumerRequest {
                max_deliveries: Some(0),
                ..base()
            },
            Code::InvalidArgument,
            "max_deliveries",
        ),
        (
            api::EnsureConsumerRequest {
                backoff: vec![seconds(1), seconds(0)],
                ..base()
            },
            Code::InvalidArgument,
            "backoff[1]",
        ),
        (
            api::EnsureConsumerRequest {
                backoff: vec![negative],
                ..base()
            },
            Code::InvalidArgument,
            "backoff[0]",
        ),
        (
            api::EnsureConsumerRequest {
                max_deliveries: Some(2),
                backoff: vec![seconds(1), seconds(2), seconds(3)],
                ..base()
            },
            Code::InvalidArgument,
            "backoff",
        ),
        (
            api::EnsureConsumerRequest {
                processing_timeout: Some(seconds(5)),
                backoff: vec![seconds(1)],
                ..base()
            },
            Code::InvalidArgument,
            "processing_timeout",
        ),
        (
            api::EnsureConsumerRequest {
                dead_letter_stream: Some("a.b".into()),
                ..base()
            },
            Code::InvalidArgument,
            "dead_letter_stream",
        ),
        (
            api::EnsureConsumerRequest {
                dead_letter_stream: Some("orders".into()),
                ..base()
            },
            Code::InvalidArgument,
            "dead_letter_stream",
        ),
        (
            api::EnsureConsumerRequest {
                dead_letter_stream: Some("audit".into()),
                ..base()
            },
            Code::FailedPrecondition,
            "dead_letter_stream",
        ),
        (
            api::EnsureConsumerRequest {
                from: Some(api::StreamPointer {
                    pointer: Some(api::stream_pointer::Pointer::Id(0)),
                }),
                ..base()
            },
            Code::InvalidArgument,
            "from.id",
        ),
        (
            api::EnsureConsumerRequest {
                subjects: vec![],
                ..base()
            },
            Code::InvalidArgument,
            "subjects",
        ),
        (
            api::EnsureConsumerRequest {
                stream: "nope".into(),
                ..base()
            },
            Code::NotFound,
            "nope",
        ),
    ];
    for (request, code, needle) in cases {
        assert_status(events.ensure_consumer(request).await, code, needle);
    }
    let orders = env.js.get_stream("orders").await.unwrap();
    assert!(
        orders.consumer_info("worker").await.is_err(),
        "no consumer was made"
    );

    let list_case = |request: ListDeadLettersRequest| {
        let mut admin = admin.clone();
        async move { admin.list_dead_letters(request).await.map(drop) }
    };
    assert_status(list_case(list("nope")).await, Code::NotFound, "nope");
    assert_status(
        list_case(list("audit")).await,
        Code::FailedPrecondition,
        "dead_letter_stream",
    );
    assert_status(
        list_case(list("")).await,
        Code::InvalidArgument,
        "dead_letter_stream",
    );
    let bad_filter = ListDeadLettersRequest {
        consumer: "a*".into(),
        ..list("audit")
    };
    assert_status(
        list_case(bad_filter).await,
        Code::InvalidArgument,
        "consumer",
    );
    // Issue 17 #6: a start id JetStream cannot hold (above 2^63−1).
    let beyond = ListDeadLettersRequest {
        from_id: u64::MAX,
        ..list("audit")
    };
    assert_status(list_case(beyond).await, Code::InvalidArgument, "from_id");

    assert_status(
        admin.redrive_dead_letters(redrive(&[])).await,
        Code::InvalidArgument,
        "ids",
    );
    let both = RedriveDeadLettersRequest {
        all: true,
        ..redrive(&[1])
    };
    assert_status(
        admin.redrive_dead_letters(both).await,
        Code::InvalidArgument,
        "all",
    );
    let too_many = RedriveDeadLettersRequest {
        all: true,
        limit: 1001,
        ..redrive(&[])
    };
    assert_status(
        admin.redrive_dead_letters(too_many).await,
        Code::InvalidArgument,
        "limit",
    );
    assert_status(
        admin.redrive_dead_letters(redrive(&[1])).await,
        Code::NotFound,
        "orders-dead",
    );
    let not_dead_letters = RedriveDeadLettersRequest {
        dead_letter_stream: "audit".into(),
        ..redrive(&[1])
    };
    assert_status(
        admin.redrive_dead_letters(not_dead_letters).await,
        Code::FailedPrecondition,
        "dead_letter_stream",
    );
    // A real dead-letter stream with nothing in it: every id is invalid.
    let worker = api::EnsureConsumerRequest {
        dead_letter_stream: Some("orders-dead".into()),
        ..base()
    };
    events.ensure_consumer(worker).await.unwrap();
    let response = admin
        .redrive_dead_letters(redrive(&[0, 1, 1]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.invalid_ids, [0, 1, 1]);
}
