//! HTTP workers: fetch a batch from a durable consumer, then ack, reject (at once, after a delay,
//! for good) and extend by id; the table of fetched events shared with gRPC's Fetch and Ack; the
//! limits on events in flight answered 429 naming them; and bad input answered 400 naming the field.

use std::{
    cell::RefCell,
    time::{Duration, Instant},
};

use jetway_api::jetway::events::v1::{self as api, AckRequest};
use jetway_core::fetch::FetchLimits;
use jetway_server::config::Limits;
use jetway_testkit::eventually;
use serde_json::{Value, json};

use super::{call, env, publish};
use crate::{
    clients::{self, consumer, seconds},
    harness::Env,
};

/// Ensures the durable consumer `name` on `orders` with `timeout` as its processing timeout.
async fn worker(env: &Env, name: &str, timeout: u64) {
    let mut client = clients::events(env).await;
    client
        .ensure_consumer(api::EnsureConsumerRequest {
            processing_timeout: Some(seconds(timeout)),
            ..consumer("orders", name, &["orders.>"])
        })
        .await
        .unwrap();
}

fn route(name: &str, action: &str) -> String {
    format!("/v1/streams/orders/consumers/{name}/{action}")
}

/// `POST …/fetch?{query}` → 200; the (id, delivery attempt) of each event, and the whole body.
async fn fetch(env: &Env, name: &str, query: &str) -> (Vec<(u64, u64)>, Value) {
    let path = format!("{}?{query}", route(name, "fetch"));
    let reply = call(env.jetway.http_addr(), "POST", &path, &[], "").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    let ids = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_u64().unwrap(),
                e["delivery_attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    (ids, body)
}

/// `POST …/{action}` with a JSON body → 200; the settled lists.
async fn settle(env: &Env, name: &str, action: &str, body: Value) -> Value {
    let reply = call(
        env.jetway.http_addr(),
        "POST",
        &route(name, action),
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()
}

fn settled(ids: &[u64], invalid: &[u64]) -> Value {
    json!({"ids": ids, "invalid_ids": invalid, "temporary_failed_ids": []})
}

#[tokio::test]
async fn fetched_events_are_acked_rejected_and_redelivered_by_id() {
    let (env, addr) = env(Limits::default()).await;
    worker(&env, "worker", 30).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(publish(addr, "orders.created", json!({"n": i})).await);
    }

    let (got, body) = fetch(&env, "worker", "max_events=3&wait=5s").await;
    assert_eq!(got, [(ids[0], 1), (ids[1], 1), (ids[2], 1)]);
    assert_eq!(body["processing_timeout"], "30s");
    assert_eq!(body["events"][0]["data"], json!({"n": 0}));
    assert_eq!(body["events"][0]["subject"], "orders.created");

    // An unknown id and a repeated one are invalid.
    let acked = settle(&env, "worker", "ack", json!({"ids": [ids[0], 999, ids[0]]})).await;
    assert_eq!(acked, settled(&[ids[0]], &[999, ids[0]]));
    // Settled already.
    let again = settle(&env, "worker", "ack", json!({"ids": [ids[0]]})).await;
    assert_eq!(again, settled(&[], &[ids[0]]));

    // Fetched over HTTP, acked over gRPC: one table of fetched events per server.
    let mut client = clients::events(&env).await;
    let over_grpc = client
        .ack(AckRequest {
            stream: "orders".into(),
            consumer: "worker".into(),
            ids: vec![ids[2]],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(over_grpc.settled.unwrap().ids, [ids[2]]);

    // Rejected with a delay: redelivered, as the second attempt, once the delay passed.
    let rejected = settle(
        &env,
        "worker",
        "reject",
        json!({"ids": [ids[1]], "delay": "1s"}),
    )
    .await;
    assert_eq!(rejected, settled(&[ids[1]], &[]));
    let fetched = RefCell::new(Vec::new());
    eventually("the rejected event comes back", || async {
        let (got, _) = fetch(&env, "worker", "max_events=10&wait=1s").await;
        let mut fetched = fetched.borrow_mut();
        fetched.extend(got);
        fetched.contains(&(ids[1], 2)).then_some(())
    })
    .await;
    let mut fetched = fetched.into_inner();
    fetched.sort_unstable();
    assert_eq!(fetched, [(ids[1], 2), (ids[3], 1)]);

    // Rejected for good: never again.
    let dropped = settle(
        &env,
        "worker",
        "reject",
        json!({"ids": [ids[1], ids[3]], "permanently": true}),
    )
    .await;
    assert_eq!(dropped, settled(&[ids[1], ids[3]], &[]));
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_pending, 0);
}

#[tokio::test]
async fn extended_events_stay_in_flight_past_their_processing_timeout() {
    let (env, addr) = env(Limits::default()).await;
    worker(&env, "worker", 2).await;
    let id = publish(addr, "orders.created", json!({"slow": true})).await;
    let (got, body) = fetch(&env, "worker", "wait=5s").await;
    assert_eq!(got, [(id, 1)]);
    assert_eq!(body["processing_timeout"], "2s");

    // Extended again and again for 2.5 processing timeouts: held all along, here and in
    // JetStream, so it is never redelivered.
    let fetched = Instant::now();
    while fetched.elapsed() < Duration::from_secs(5) {
        let extended = settle(&env, "worker", "extend", json!({"ids": [id]})).await;
        assert_eq!(
            extended,
            settled(&[id], &[]),
            "extended after {:?}",
            fetched.elapsed()
        );
    }
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(info.num_ack_pending, 1);
    let unknown = settle(&env, "worker", "extend", json!({"ids": [id + 1]})).await;
    assert_eq!(unknown, settled(&[], &[id + 1]));

    let acked = settle(&env, "worker", "ack", json!({"ids": [id]})).await;
    assert_eq!(acked, settled(&[id], &[]));
    let info = env.consumer_info("orders", "worker").await;
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_redelivered, 0);
}

#[tokio::test]
async fn fetches_past_the_in_flight_limits_are_429_naming_them() {
    let (env, addr) = env(Limits {
        fetch: FetchLimits {
            per_consumer: 2,
            total: 3,
        },
        ..Limits::default()
    })
    .await;
    worker(&env, "a", 30).await;
    worker(&env, "b", 30).await;
    for i in 0..3 {
        publish(addr, "orders.created", json!({"n": i})).await;
    }
    let (got, _) = fetch(&env, "a", "max_events=10&wait=5s").await;
    assert_eq!(
        got.len(),
        2,
        "as many as the consumer's limit leaves room for"
    );
    let full = call(addr, "POST", &route("a", "fetch"), &[], "").await;
    let message = full.assert_error(429, "RESOURCE_EXHAUSTED", None);
    assert!(
        message.contains("FETCH_MAX_IN_FLIGHT_PER_CONSUMER"),
        "{message}"
    );

    let (got, _) = fetch(&env, "b", "max_events=10&wait=5s").await;
    assert_eq!(
        got.len(),
        1,
        "as many as the server's limit leaves room for"
    );
    let full = call(addr, "POST", &route("b", "fetch"), &[], "").await;
    let message = full.assert_error(429, "RESOURCE_EXHAUSTED", None);
    assert!(message.contains("(FETCH_MAX_IN_FLIGHT)"), "{message}");

    // Settling makes room again.
    let first = got[0].0;
    settle(&env, "b", "ack", json!({"ids": [first]})).await;
    let (got, _) = fetch(&env, "b", "max_events=10&wait=5s").await;
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn bad_worker_requests_are_400_or_404_naming_what_is_wrong() {
    let (env, addr) = env(Limits::default()).await;
    worker(&env, "worker", 30).await;
    let json_type = [("content-type", "application/json")];

    let fetch_cases = [
        ("max_events=lots", "max_events"),
        ("max_events=1001", "max_events"),
        ("wait=2m", "wait"),
        ("wait=soon", "wait"),
        ("limit=1", "limit"),
    ];
    for (query, field) in fetch_cases {
        let path = format!("{}?{query}", route("worker", "fetch"));
        let reply = call(addr, "POST", &path, &[], "").await;
        reply.assert_error(400, "INVALID_ARGUMENT", Some(field));
    }
    let with_body = call(
        addr,
        "POST",
        &route("worker", "fetch"),
        &[],
        "{\"max_events\":1}",
    )
    .await;
    with_body.assert_error(400, "INVALID_ARGUMENT", Some("body"));

    let settle_cases: [(&str, &str, &str); 8] = [
        ("ack", "{", "body"),
        ("ack", "[1]", "body"),
        ("ack", "{}", "ids"),
        ("ack", "{\"ids\":[]}", "ids"),
        ("ack", "{\"ids\":[\"one\"]}", "ids"),
        ("extend", "{\"ids\":[1],\"delay\":\"1s\"}", "delay"),
        ("reject", "{\"ids\":[1],\"delay\":\"200h\"}", "delay"),
        (
            "reject",
            "{\"ids\":[1],\"delay\":\"1s\",\"permanently\":true}",
            "delay",
        ),
    ];
    for (action, body, field) in settle_cases {
        let reply = call(addr, "POST", &route("worker", action), &json_type, body).await;
        reply.assert_error(400, "INVALID_ARGUMENT", Some(field));
    }
    let text = [("content-type", "text/plain")];
    let not_json = call(
        addr,
        "POST",
        &route("worker", "ack"),
        &text,
        "{\"ids\":[1]}",
    )
    .await;
    not_json.assert_error(400, "INVALID_ARGUMENT", Some("Content-Type"));

    for (action, body) in [
        ("fetch", ""),
        ("ack", "{\"ids\":[1]}"),
        ("extend", "{\"ids\":[1]}"),
    ] {
        let reply = call(addr, "POST", &route("nobody", action), &json_type, body).await;
        reply.assert_error(404, "NOT_FOUND", None);
    }
    let wrong_method = call(addr, "GET", &route("worker", "fetch"), &[], "").await;
    assert_eq!(wrong_method.status, 405);
}
