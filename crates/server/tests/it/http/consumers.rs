//! Declaring a consumer over HTTP (`PUT /v1/streams/{stream}/consumers/{consumer}`), as
//! EnsureConsumer: created, updated in place, and each bad field named.

use jetway_server::config::Limits;
use serde_json::{Value, json};

use super::{Reply, call, get, publish};
use crate::harness::Env;

async fn put(addr: std::net::SocketAddr, path: &str, body: Value) -> Reply {
    call(
        addr,
        "PUT",
        path,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_consumer_is_declared_updated_and_its_bad_fields_named() {
    let mut env = Env::start_with(Limits::default()).await;
    env.stream("orders", &["orders.>"]).await;
    let addr = env.jetway.http_addr();
    publish(addr, "orders.new", json!(1)).await;
    let path = "/v1/streams/orders/consumers/billing";
    let declared = json!({
        "subjects": ["orders.>"], "from": "start",
        "max_deliveries": 3, "backoff": ["2s", "10s"], "dead_letter_stream": "orders-dead",
    });
    let created = put(addr, path, declared).await;
    assert_eq!(created.status.as_u16(), 200, "{:?}", created.body);
    let created = created.json();
    assert_eq!(created["name"], "billing");
    assert_eq!(created["durable"], true);
    assert_eq!(created["subjects"], json!(["orders.>"]));
    assert_eq!(created["max_deliveries"], 3);
    assert_eq!(created["dead_letter_stream"], "orders-dead");
    assert_eq!(created["backoff"].as_array().unwrap().len(), 2);
    // From the start: the event stored before it is waiting for it.
    assert_eq!(created["pending"], 1);
    assert_eq!(get(addr, path).await.json()["name"], "billing");

    // Declared again: updated in place, its position kept.
    let updated = put(
        addr,
        path,
        json!({"subjects": ["orders.new"], "processing_timeout": "45s"}),
    )
    .await;
    assert_eq!(updated.status.as_u16(), 200, "{:?}", updated.body);
    let updated = updated.json();
    assert_eq!(updated["subjects"], json!(["orders.new"]));
    assert_eq!(updated["processing_timeout"], "45s");
    assert_eq!(updated["pending"], 1);
    assert_eq!(updated["created"], created["created"]);
    assert!(updated.get("dead_letter_stream").is_none(), "{updated}");

    let cases = [
        (path, json!({}), 400, "subjects"),
        (
            path,
            json!({"subjects": ["orders.>"], "colour": 1}),
            400,
            "colour",
        ),
        (path, json!({"subjects": "orders.>"}), 400, "subjects"),
        (
            path,
            json!({"subjects": ["orders.>"], "backoff": ["soon"]}),
            400,
            "backoff[0]",
        ),
        (
            path,
            json!({"subjects": ["orders.>"], "processing_timeout": "0s"}),
            400,
            "processing_timeout",
        ),
        (
            path,
            json!({"subjects": ["orders.>"], "from": "yesterday"}),
            400,
            "from",
        ),
        (path, json!({"subjects": ["orders..x"]}), 400, "subjects[0]"),
        (
            "/v1/streams/orders/consumers/a.b",
            json!({"subjects": ["orders.>"]}),
            400,
            "consumer",
        ),
    ];
    for (path, body, status, field) in cases {
        let reply = put(addr, path, body.clone()).await;
        assert_eq!(reply.status.as_u16(), status, "{body}: {:?}", reply.body);
        let error = reply.json();
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let missing = put(
        addr,
        "/v1/streams/nowhere/consumers/billing",
        json!({"subjects": ["x"]}),
    )
    .await;
    missing.assert_error(404, "NOT_FOUND", None);
    // The stream is still usable, the consumer as last declared.
    assert_eq!(
        get(addr, path).await.json()["subjects"],
        json!(["orders.new"])
    );
}
