//! HTTP/2 under load: a client sending tiny messages at full speed on a PublishStream or an Events
//! stream keeps its connection.

use std::collections::HashSet;

use jetway_api::{
    jetway::events::v1::{
        self as api, PublishStreamRequest, publish_event_request, publish_result::Result as Outcome,
    },
    windshift::events::v1alpha1::{
        EventsRequest, events_request, events_response::Response as Resp,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    clients::{self, typed},
    harness::{Env, RECV_GUARD, subscribe},
};

/// A publish of 8 raw bytes: the smallest event that is not empty.
fn tiny(i: u64) -> PublishStreamRequest {
    PublishStreamRequest {
        correlation_id: i,
        event: Some(api::PublishEventRequest {
            subject: "tiny.x".into(),
            payload: Some(publish_event_request::Payload::Raw(api::RawPayload {
                data: i.to_le_bytes().to_vec().into(),
                content_type: String::new(),
            })),
            ..Default::default()
        }),
    }
}

// Two worker threads: the client writes while the server reads, as between two processes. On one
// thread they would take turns, and the server would never fall behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_stream_of_10000_tiny_events_at_full_speed_is_answered_in_full() {
    let mut env = Env::start().await;
    env.stream("tiny", &["tiny.>"]).await;
    let mut client = clients::events(&env).await;
    let total = 10_000u64;
    // One request at a time, as a client sends them when it has them: each goes out in an HTTP/2
    // frame of its own (tonic packs requests that are ready together into one).
    let (tx, rx) = mpsc::channel(1);
    let producer = tokio::spawn(async move {
        for i in 0..total {
            if tx.send(tiny(i)).await.is_err() {
                break;
            }
        }
    });
    let mut responses = client
        .publish_stream(ReceiverStream::new(rx))
        .await
        .expect("open a PublishStream")
        .into_inner();
    let mut answered = HashSet::new();
    loop {
        let message = tokio::time::timeout(RECV_GUARD, responses.message())
            .await
            .expect("an answer within the guard");
        match message {
            Ok(Some(response)) => {
                let outcome = response.result.and_then(|r| r.result);
                assert!(
                    matches!(outcome, Some(Outcome::Published(_))),
                    "{outcome:?}"
                );
                answered.insert(response.correlation_id);
            }
            Ok(None) => break,
            Err(status) => panic!(
                "the stream failed after {} answers: {status:?}",
                answered.len()
            ),
        }
    }
    producer.await.unwrap();
    assert_eq!(answered.len() as u64, total, "every request is answered");
    assert_eq!(env.event_count("tiny").await, total);
    // The connection is the one the stream used, still up.
    clients::publish(&mut client, typed("tiny.after", "after")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_5000_events_one_at_a_time_as_they_arrive_keeps_the_stream() {
    let mut env = Env::start().await;
    env.stream("tiny", &["tiny.>"]).await;
    let consumer = env.consumer("tiny", None, &["tiny.>"], None, None).await;
    let total = 5_000u64;
    let mut client = clients::events(&env).await;
    let mut published = client
        .publish_stream(tokio_stream::iter((0..total).map(tiny)))
        .await
        .unwrap()
        .into_inner();
    while published.message().await.unwrap().is_some() {}

    let (tx, rx) = mpsc::channel(1);
    tx.send(EventsRequest {
        request: Some(subscribe("tiny", &consumer, Some(1000))),
    })
    .await
    .unwrap();
    let mut responses = env
        .client
        .events(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let (mut delivered, mut acked) = (HashSet::new(), HashSet::new());
    while (acked.len() as u64) < total {
        let message = tokio::time::timeout(RECV_GUARD, responses.message())
            .await
            .expect("a response within the guard");
        match message.map(|m| m.and_then(|m| m.response)) {
            Ok(Some(Resp::Subscribed(_))) => {}
            Ok(Some(Resp::Event(event))) => {
                delivered.insert(event.id);
                let ack = events_request::Ack {
                    ids: vec![event.id],
                };
                tx.send(EventsRequest {
                    request: Some(events_request::Request::Ack(ack)),
                })
                .await
                .expect("the stream takes the ack");
            }
            Ok(Some(Resp::AckConfirmation(confirmation))) => {
                assert!(confirmation.invalid_ids.is_empty(), "{confirmation:?}");
                assert!(
                    confirmation.temporary_failed_ids.is_empty(),
                    "{confirmation:?}"
                );
                acked.extend(confirmation.ids);
            }
            other => panic!(
                "after {} events and {} acks: {other:?}",
                delivered.len(),
                acked.len()
            ),
        }
    }
    assert_eq!(
        delivered.len() as u64,
        total,
        "every event was delivered once"
    );
    env.consumer_info_until("tiny", &consumer, "every ack reached JetStream", |info| {
        info.ack_floor.stream_sequence == total && info.num_ack_pending == 0
    })
    .await;
}
