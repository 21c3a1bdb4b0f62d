//! PublishStream and PublishBatch: many events with their acks in flight, answered per item. They
//! store events exactly as PublishEvent does, keep idempotency keys and `expected_last_id`, and fail
//! a bad item on its own (with PublishEvent's status) while the rest goes on.

use std::collections::HashMap;

use jetway_api::jetway::events::v1::{
    self as api, PublishBatchRequest, PublishStreamRequest, PublishStreamResponse,
    events_service_client::EventsServiceClient, publish_result::Result as Outcome,
};
use jetway_testkit::eventually;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, transport::Channel};

use crate::{
    clients::{self, collect, next, raw, typed},
    harness::{Env, RECV_GUARD, assert_status, publish_request},
};

const TRACE_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn item(correlation_id: u64, event: api::PublishEventRequest) -> PublishStreamRequest {
    PublishStreamRequest {
        correlation_id,
        event: Some(event),
    }
}

fn keyed(subject: &str, value: &str, key: &str) -> api::PublishEventRequest {
    api::PublishEventRequest {
        idempotency_key: Some(key.into()),
        ..typed(subject, value)
    }
}

fn expecting(subject: &str, value: &str, expected_last_id: u64) -> api::PublishEventRequest {
    api::PublishEventRequest {
        expected_last_id: Some(expected_last_id),
        ..typed(subject, value)
    }
}

/// Sends `requests`, half-closes, and reads the answers to the end of the stream, by correlation id.
async fn stream_all(
    client: &mut EventsServiceClient<Channel>,
    requests: Vec<PublishStreamRequest>,
) -> Result<HashMap<u64, Outcome>, Status> {
    let mut request = tonic::Request::new(tokio_stream::iter(requests));
    request
        .metadata_mut()
        .insert("traceparent", TRACE_PARENT.parse().unwrap());
    let responses = client.publish_stream(request).await?.into_inner();
    let mut answers = HashMap::new();
    for response in collect(responses).await? {
        let outcome = response.result.and_then(|r| r.result).expect("a result");
        let earlier = answers.insert(response.correlation_id, outcome);
        assert!(
            earlier.is_none(),
            "correlation id {} answered twice",
            response.correlation_id
        );
    }
    Ok(answers)
}

#[track_caller]
fn published(outcome: &Outcome) -> api::PublishEventResponse {
    match outcome {
        Outcome::Published(published) => *published,
        Outcome::Error(error) => panic!("expected a stored event, got {error:?}"),
    }
}

#[track_caller]
fn assert_item_error(outcome: &Outcome, code: Code, needle: &str) {
    match outcome {
        Outcome::Error(error) => {
            assert_eq!(Code::from_i32(error.code), code, "{error:?}");
            assert!(
                error.message.contains(needle),
                "{:?} should mention {needle:?}",
                error.message
            );
        }
        Outcome::Published(published) => {
            panic!("expected {code:?} mentioning {needle:?}, got {published:?}")
        }
    }
}

#[tokio::test]
async fn streamed_events_are_answered_by_correlation_id_and_stored_in_request_order() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;

    // More than one window, so the server must answer and read on; ids chosen by the client.
    let total = 3000;
    let requests = (0..total)
        .map(|i| {
            let event = if i % 2 == 0 {
                typed("orders.created", &format!("order {i}"))
            } else {
                raw(
                    "orders.raw",
                    "{}",
                    "application/json",
                    &[("tenant", "acme")],
                )
            };
            item(1_000_000 + i, event)
        })
        .collect();
    let answers = stream_all(&mut client, requests)
        .await
        .expect("the stream ends with OK after the half-close");
    assert_eq!(answers.len() as u64, total, "every request is answered");
    for i in 0..total {
        let answer = published(&answers[&(1_000_000 + i)]);
        assert_eq!(
            (answer.id, answer.duplicate),
            (i + 1, false),
            "events are stored in request order"
        );
    }
    assert_eq!(env.event_count("orders").await, total);

    // Stored exactly as PublishEvent stores them, with the call's trace context.
    let stream = env.js.get_stream("orders").await.unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(
        first.headers.get("WS-Data-Type").unwrap().as_str(),
        "windshift.test.v1.StringValue"
    );
    assert!(first.headers.get("WS-Published-Time").is_some());
    assert_eq!(
        first.headers.get("WS-Trace-Parent").unwrap().as_str(),
        TRACE_PARENT
    );
    let second = stream.get_raw_message(2).await.unwrap();
    assert_eq!(
        second.headers.get("Content-Type").unwrap().as_str(),
        "application/json"
    );
    assert_eq!(second.headers.get("tenant").unwrap().as_str(), "acme");
    assert!(second.headers.get("WS-Data-Type").is_none());
    assert_eq!(second.payload.as_ref(), b"{}");
}

#[tokio::test]
async fn a_bad_item_fails_alone_and_the_stream_goes_on() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;

    let requests = vec![
        item(1, typed("orders.a", "first")),
        // Handed to JetStream in request order: the key is new at 2 and a duplicate at 3.
        item(2, keyed("orders.b", "keyed", "key-1")),
        item(3, keyed("orders.b", "keyed again", "key-1")),
        // orders.a already has event 1, so 0 is stale and 1 is right.
        item(4, expecting("orders.a", "stale", 0)),
        item(5, expecting("orders.a", "second", 1)),
        PublishStreamRequest {
            correlation_id: 6,
            event: None,
        },
        item(7, typed("orders.*", "bad subject")),
        item(
            8,
            api::PublishEventRequest {
                payload: None,
                ..typed("orders.a", "no payload")
            },
        ),
        item(9, raw("orders.a", "x", "", &[("WS-Data-Type", "forged")])),
        item(10, typed("nowhere.a", "unbound")),
        item(11, typed("orders.c", "last")),
        // Over JetStream's 64 KiB of headers, far under the size limit of the event.
        item(
            12,
            raw("orders.a", "x", "", &[("big", &"h".repeat(70_000))]),
        ),
    ];
    let answers = stream_all(&mut client, requests)
        .await
        .expect("item errors do not end the stream");
    assert_eq!(answers.len(), 12);
    assert_eq!(published(&answers[&1]).id, 1);
    let key = published(&answers[&2]);
    assert_eq!((key.id, key.duplicate), (2, false));
    let again = published(&answers[&3]);
    assert_eq!((again.id, again.duplicate), (2, true));
    assert_item_error(&answers[&4], Code::FailedPrecondition, "expected_last_id");
    assert_eq!(published(&answers[&5]).id, 3);
    assert_item_error(&answers[&6], Code::InvalidArgument, "event");
    assert_item_error(&answers[&7], Code::InvalidArgument, "subject");
    assert_item_error(&answers[&8], Code::InvalidArgument, "payload");
    assert_item_error(&answers[&9], Code::InvalidArgument, "headers");
    assert_item_error(&answers[&10], Code::NotFound, "nowhere.a");
    assert_eq!(published(&answers[&11]).id, 4);
    assert_item_error(&answers[&12], Code::InvalidArgument, "limit of 64 KiB");
    assert_eq!(
        env.event_count("orders").await,
        4,
        "failed items store nothing"
    );
}

#[tokio::test]
async fn an_open_stream_answers_as_it_goes_and_ends_after_the_half_close() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;

    // Nothing sent: the half-close ends the stream at once, with OK.
    let answers = stream_all(&mut client, Vec::new()).await.expect("OK");
    assert!(answers.is_empty());

    // Each answer comes while the stream is open, before the client sends the next request.
    let (tx, rx) = mpsc::channel(4);
    let mut responses = client
        .publish_stream(ReceiverStream::new(rx))
        .await
        .expect("open")
        .into_inner();
    for i in 1..=3 {
        tx.send(item(i * 10, typed("orders.x", "v"))).await.unwrap();
        let answer: PublishStreamResponse = next(&mut responses).await;
        assert_eq!(answer.correlation_id, i * 10);
        let outcome = answer.result.and_then(|r| r.result).expect("a result");
        assert_eq!(published(&outcome).id, i);
    }
    drop(tx);
    let end = tokio::time::timeout(RECV_GUARD, responses.message())
        .await
        .expect("the end within the guard time");
    assert!(
        matches!(end, Ok(None)),
        "ends with OK after the half-close: {end:?}"
    );
}

#[tokio::test]
async fn server_shutdown_ends_a_stream_with_unavailable_after_its_answers() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;

    let (tx, rx) = mpsc::channel(4);
    let mut responses = client
        .publish_stream(ReceiverStream::new(rx))
        .await
        .expect("open")
        .into_inner();
    tx.send(item(1, typed("orders.x", "v"))).await.unwrap();
    let answer: PublishStreamResponse = next(&mut responses).await;
    assert_eq!(answer.correlation_id, 1);

    env.jetway.begin_shutdown();
    let message = tokio::time::timeout(RECV_GUARD, responses.message())
        .await
        .expect("the end within the guard time");
    let status = match message {
        Ok(Some(extra)) => panic!("nothing more was sent, yet got {extra:?}"),
        Ok(None) => panic!("the stream ended with OK at shutdown"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    drop(tx);
}

#[tokio::test]
async fn batches_answer_every_event_in_request_order() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;

    let events = vec![
        typed("orders.a", "first"),
        keyed("orders.b", "keyed", "key-1"),
        keyed("orders.b", "keyed again", "key-1"),
        expecting("orders.a", "stale", 0),
        expecting("orders.a", "second", 1),
        typed("orders.a b", "bad subject"),
        typed("nowhere.a", "unbound"),
        raw("orders.c", "{}", "application/json", &[]),
    ];
    let mut request = tonic::Request::new(PublishBatchRequest { events });
    request
        .metadata_mut()
        .insert("traceparent", TRACE_PARENT.parse().unwrap());
    let results: Vec<Outcome> = client
        .publish_batch(request)
        .await
        .expect("a batch with bad items still succeeds")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.result.expect("a result"))
        .collect();
    assert_eq!(results.len(), 8, "one result per event");
    assert_eq!(published(&results[0]).id, 1);
    assert_eq!(
        published(&results[1]),
        api::PublishEventResponse {
            id: 2,
            duplicate: false
        }
    );
    assert_eq!(
        published(&results[2]),
        api::PublishEventResponse {
            id: 2,
            duplicate: true
        }
    );
    assert_item_error(&results[3], Code::FailedPrecondition, "expected_last_id");
    assert_eq!(published(&results[4]).id, 3);
    assert_item_error(&results[5], Code::InvalidArgument, "subject");
    assert_item_error(&results[6], Code::NotFound, "nowhere.a");
    assert_eq!(published(&results[7]).id, 4);
    let stored = env
        .js
        .get_stream("orders")
        .await
        .unwrap()
        .get_raw_message(4)
        .await
        .unwrap();
    assert_eq!(
        stored.headers.get("WS-Trace-Parent").unwrap().as_str(),
        TRACE_PARENT
    );
}

#[tokio::test]
async fn batches_are_bounded() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;

    assert_status(
        client
            .publish_batch(PublishBatchRequest { events: Vec::new() })
            .await,
        Code::InvalidArgument,
        "events",
    );
    let too_many = vec![typed("orders.a", "x"); 1001];
    assert_status(
        client
            .publish_batch(PublishBatchRequest { events: too_many })
            .await,
        Code::InvalidArgument,
        "1000",
    );
    assert_eq!(
        env.event_count("orders").await,
        0,
        "a refused batch stores nothing"
    );

    let most = vec![typed("orders.a", "x"); 1000];
    let results = client
        .publish_batch(PublishBatchRequest { events: most })
        .await
        .expect("1000 events fit")
        .into_inner()
        .results;
    let ids: Vec<u64> = results
        .iter()
        .map(|r| published(r.result.as_ref().expect("a result")).id)
        .collect();
    assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
}

/// A client that reads none of its answers holds back only its own stream: the server goes on
/// reading JetStream's acks, so the publish permits that all calls share stay free, and every
/// answer still arrives once the client reads.
#[tokio::test]
async fn a_client_that_reads_no_answers_holds_up_no_other_publish() {
    const EVENTS: u64 = 3_000;
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let channel = env.jetway.slow_reader_channel().await;
    let mut slow = EventsServiceClient::new(channel);
    let requests = (1..=EVENTS).map(|i| item(i, typed("orders.slow", "v")));
    let mut responses = slow
        .publish_stream(tokio_stream::iter(requests))
        .await
        .expect("open")
        .into_inner();

    // More than a window of requests stored although hardly any answer was read: their acks were
    // taken in while the answers waited.
    eventually("a window of events stored", || {
        let env = &env;
        async move { (env.event_count("orders").await > 1024).then_some(()) }
    })
    .await;
    let other = tokio::time::timeout(
        RECV_GUARD,
        env.client
            .publish_event(publish_request("orders.other", "v")),
    )
    .await
    .expect("another publish is not held up by the slow stream");
    assert!(other.expect("published").into_inner().id > 1024);

    let mut ids = Vec::new();
    while let Some(answer) = responses.message().await.expect("OK") {
        let outcome = answer.result.and_then(|r| r.result).expect("a result");
        ids.push((answer.correlation_id, published(&outcome).id));
    }
    assert_eq!(ids.len() as u64, EVENTS, "every request is answered");
    ids.sort_unstable();
    ids.dedup_by_key(|(correlation_id, _)| *correlation_id);
    assert_eq!(ids.len() as u64, EVENTS, "each request is answered once");
}

/// A request tonic cannot accept (here: above its 4 MiB limit) ends the stream with tonic's
/// status, after the answers owed for the requests before it; the stream does not end with OK as
/// if everything had been answered.
#[tokio::test]
async fn a_request_too_large_ends_the_stream_with_its_status_after_the_answers() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let mut client = clients::events(&env).await;
    let huge = "x".repeat(5 << 20);
    let requests = vec![
        item(1, typed("orders.x", "v")),
        item(2, raw("orders.x", &huge, "text/plain", &[])),
        item(3, typed("orders.x", "v")),
    ];
    let mut responses = client
        .publish_stream(tokio_stream::iter(requests))
        .await
        .expect("open")
        .into_inner();
    let answer: PublishStreamResponse = next(&mut responses).await;
    assert_eq!(answer.correlation_id, 1);
    published(&answer.result.and_then(|r| r.result).expect("a result"));
    let end = tokio::time::timeout(RECV_GUARD, responses.message())
        .await
        .expect("the end within the guard time");
    assert_status(end, Code::ResourceExhausted, "GRPC_MAX_MESSAGE_BYTES");
    assert_eq!(
        env.event_count("orders").await,
        1,
        "only the first is stored"
    );
}
