//! Administration over HTTP: streams (ensure, list, info, purge, delete), consumers (list, info,
//! delete) and dead letters (list, redrive), and each error's status and field.

use std::net::SocketAddr;

use bytes::Bytes;
use jetway_api::jetway::events::v1::{self as api, RejectRequest};
use jetway_server::config::Limits;
use serde_json::{Value, json};

use super::{Reply, call, get, publish};
use crate::{
    clients::{self, consumer, fetch},
    dead_letters::await_dead_letters,
    harness::Env,
};

async fn send(addr: SocketAddr, method: &str, path: &str, body: Value) -> Reply {
    call(
        addr,
        method,
        path,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

fn ok(reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
}

#[tokio::test]
async fn streams_are_ensured_listed_inspected_purged_and_deleted() {
    let env = Env::start_with(Limits::default()).await;
    let addr = env.jetway.http_addr();
    let declared = json!({
        "subjects": ["orders.>"], "max_age": "24h", "max_events_per_subject": 100,
        "storage": "memory", "deduplication_window": "1m",
    });
    ok(
        &send(addr, "PUT", "/v1/streams/orders", declared.clone()).await,
        204,
    );
    // Again, the same: nothing to change.
    ok(
        &send(addr, "PUT", "/v1/streams/orders", declared).await,
        204,
    );
    for (subject, n) in [
        ("orders.a", 1),
        ("orders.a", 2),
        ("orders.a", 3),
        ("orders.b", 4),
    ] {
        publish(addr, subject, json!(n)).await;
    }

    let info = get(addr, "/v1/streams/orders").await;
    ok(&info, 200);
    let info = info.json();
    assert_eq!(info["name"], "orders");
    assert_eq!(info["config"]["subjects"], json!(["orders.>"]));
    assert_eq!(info["config"]["max_age"], "86400s");
    assert_eq!(info["config"]["max_events_per_subject"], 100);
    assert_eq!(info["config"]["storage"], "memory");
    assert_eq!(info["config"]["deduplication_window"], "60s");
    assert_eq!(info["state"]["events"], 4);
    assert_eq!(info["state"]["last_id"], 4);
    assert_eq!(info["subjects"], json!({"orders.a": 3, "orders.b": 1}));
    let filtered = get(addr, "/v1/streams/orders?subject_filter=orders.b").await;
    assert_eq!(filtered.json()["subjects"], json!({"orders.b": 1}));

    ok(
        &send(
            addr,
            "PUT",
            "/v1/streams/copy",
            json!({"mirror": {"name": "orders", "from": "2"}}),
        )
        .await,
        204,
    );
    let listed = get(addr, "/v1/streams").await;
    ok(&listed, 200);
    let names: Vec<String> = listed.json()["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stream| stream["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"orders".to_owned()), "{names:?}");
    assert!(names.contains(&"copy".to_owned()), "{names:?}");
    assert_eq!(
        get(addr, "/v1/streams/copy").await.json()["config"]["mirror"],
        "orders"
    );

    let purged = send(
        addr,
        "POST",
        "/v1/streams/orders/purge",
        json!({"subject": "orders.a", "keep": 1}),
    )
    .await;
    ok(&purged, 200);
    assert_eq!(purged.json(), json!({"purged": 2}));
    let purged = call(addr, "POST", "/v1/streams/orders/purge", &[], Bytes::new()).await;
    assert_eq!(
        purged.json(),
        json!({"purged": 2}),
        "an empty body purges all"
    );
    assert_eq!(
        get(addr, "/v1/streams/orders").await.json()["state"]["events"],
        0
    );

    ok(
        &call(addr, "DELETE", "/v1/streams/copy", &[], Bytes::new()).await,
        204,
    );
    get(addr, "/v1/streams/copy")
        .await
        .assert_error(404, "NOT_FOUND", None);
}

#[tokio::test]
async fn consumers_and_dead_letters_are_listed_inspected_deleted_and_redriven() {
    let mut env = Env::start_with(Limits::default()).await;
    env.stream("orders", &["orders.>"]).await;
    let addr = env.jetway.http_addr();
    let mut events = clients::events(&env).await;
    let worker = api::EnsureConsumerRequest {
        dead_letter_stream: Some("orders-dead".into()),
        ..consumer("orders", "worker", &["orders.>"])
    };
    events.ensure_consumer(worker).await.unwrap();

    let listed = get(addr, "/v1/streams/orders/consumers").await;
    ok(&listed, 200);
    let listed = listed.json();
    assert_eq!(listed["consumers"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["consumers"][0]["name"], "worker");
    let info = get(addr, "/v1/streams/orders/consumers/worker").await;
    ok(&info, 200);
    let info = info.json();
    assert_eq!(info["dead_letter_stream"], "orders-dead");
    assert_eq!(info["pull"], true);

    let id = publish(addr, "orders.created", json!({"n": 1})).await;
    let batch = events.fetch(fetch(1)).await.unwrap().into_inner();
    assert_eq!(batch.events[0].id, id);
    events
        .reject(RejectRequest {
            stream: "orders".into(),
            consumer: "worker".into(),
            ids: vec![id],
            permanently: true,
            delay: None,
        })
        .await
        .unwrap();
    await_dead_letters(&env, "orders-dead", 1).await;

    let dead = get(addr, "/v1/dead-letters/orders-dead").await;
    ok(&dead, 200);
    let dead = dead.json();
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    let letter = &dead[0];
    assert_eq!(letter["stream"], "orders");
    assert_eq!(letter["consumer"], "worker");
    assert_eq!(letter["reason"], "rejected");
    assert_eq!(letter["event"]["id"], id);
    assert_eq!(letter["event"]["data"], json!({"n": 1}));
    let dead_id = letter["id"].as_u64().unwrap();
    let none = get(addr, "/v1/dead-letters/orders-dead?consumer=other").await;
    assert_eq!(none.json(), json!([]));
    let ndjson = call(
        addr,
        "GET",
        "/v1/dead-letters/orders-dead?stream=orders&limit=1",
        &[("accept", "application/x-ndjson")],
        Bytes::new(),
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&ndjson.body).lines().count(), 1);

    let redrive = |body: Value| send(addr, "POST", "/v1/dead-letters/orders-dead/redrive", body);
    let redriven = redrive(json!({"ids": [dead_id]})).await;
    ok(&redriven, 200);
    let redriven = redriven.json();
    assert_eq!(redriven["redriven"][0]["id"], dead_id);
    let again = redriven["redriven"][0]["event_id"].as_u64().unwrap();
    assert!(again > id);
    let event = get(addr, &format!("/v1/streams/orders/events/{again}")).await;
    assert_eq!(event.json()["data"], json!({"n": 1}));
    let twice = redrive(json!({"ids": [dead_id]})).await.json();
    assert_eq!(twice["invalid_ids"], json!([dead_id]), "{twice}");
    let all = redrive(json!({"all": true})).await.json();
    assert_eq!(all["redriven"], json!([]), "{all}");

    ok(
        &call(
            addr,
            "DELETE",
            "/v1/streams/orders/consumers/worker",
            &[],
            Bytes::new(),
        )
        .await,
        204,
    );
    get(addr, "/v1/streams/orders/consumers/worker")
        .await
        .assert_error(404, "NOT_FOUND", None);
}

#[tokio::test]
async fn admin_errors_have_their_status_and_name_the_field() {
    let mut env = Env::start_with(Limits::default()).await;
    env.stream("orders", &["orders.>"]).await;
    let addr = env.jetway.http_addr();
    let ensure = |body: Value| send(addr, "PUT", "/v1/streams/other", body);
    ensure(json!({"subjects": ["x.>"], "mirror": {"name": "orders"}}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("subjects"));
    ensure(json!({"subjects": ["x.>"], "max_age": "a day"}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("max_age"));
    ensure(json!({"subjects": ["x.>"], "discard": "oldest"}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("discard"));
    ensure(json!({"subjects": "x.>"})).await.assert_error(
        400,
        "INVALID_ARGUMENT",
        Some("subjects"),
    );
    ensure(json!({"subjects": ["x.>"], "retention": "forever"}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("retention"));
    ensure(json!({"mirror": {"name": "orders", "from": "soon"}}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("mirror.from"));
    ensure(json!({"subjects": ["x..y"]})).await.assert_error(
        400,
        "INVALID_ARGUMENT",
        Some("subjects[0]"),
    );
    ensure(json!({"subjects": ["x.>"], "replicas": 0}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("replicas"));
    ensure(json!({"subjects": ["x.>"], "max_events": 0, "discard_new_per_subject": true}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("discard_new_per_subject"));
    ensure(json!({"mirror": {"name": "nothing"}}))
        .await
        .assert_error(409, "FAILED_PRECONDITION", None);
    call(
        addr,
        "PUT",
        "/v1/streams/other",
        &[("content-type", "text/plain")],
        "{}",
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("Content-Type"));
    send(
        addr,
        "PUT",
        "/v1/streams/bad.name",
        json!({"subjects": ["x"]}),
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("stream"));

    get(addr, "/v1/streams/nothing")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, "/v1/streams?page_token=x").await.assert_error(
        400,
        "INVALID_ARGUMENT",
        Some("page_token"),
    );
    get(addr, "/v1/streams?limit=3")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("limit"));
    get(addr, "/v1/streams/orders/consumers/nobody")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, "/v1/streams/nothing/consumers")
        .await
        .assert_error(404, "NOT_FOUND", None);
    call(
        addr,
        "DELETE",
        "/v1/streams/orders/consumers/nobody",
        &[],
        Bytes::new(),
    )
    .await
    .assert_error(404, "NOT_FOUND", None);
    call(addr, "DELETE", "/v1/streams/nothing", &[], Bytes::new())
        .await
        .assert_error(404, "NOT_FOUND", None);
    call(
        addr,
        "DELETE",
        "/v1/streams/orders?force=maybe",
        &[],
        Bytes::new(),
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("force"));
    call(
        addr,
        "DELETE",
        "/v1/streams/JETWAY_ADVISORIES",
        &[],
        Bytes::new(),
    )
    .await
    .assert_error(409, "FAILED_PRECONDITION", None);
    send(
        addr,
        "POST",
        "/v1/streams/orders/purge",
        json!({"keep": -1}),
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("keep"));
    send(
        addr,
        "POST",
        "/v1/streams/orders/purge",
        json!({"subject": "a..b"}),
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("subject"));

    get(addr, "/v1/dead-letters/nothing")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, "/v1/dead-letters/orders?limit=0")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("limit"));
    get(addr, "/v1/dead-letters/orders?from_id=first")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("from_id"));
    let redrive = |body: Value| send(addr, "POST", "/v1/dead-letters/orders-dead/redrive", body);
    redrive(json!({}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("ids"));
    redrive(json!({"ids": [1], "all": true}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("all"));
    redrive(json!({"ids": ["one"]}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("ids"));
}
