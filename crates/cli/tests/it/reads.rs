//! `jetway read`, and raw publishing with custom headers (`publish --raw --header`), read back.

use crate::{publish, run, run_with_input, server_with_orders};

#[tokio::test]
async fn read_starts_anywhere_stops_at_a_limit_and_ends_once_caught_up() {
    let server = server_with_orders().await;
    publish(&server, &["1", "2", "3", "4"]).await;

    let all = run(&server, &["read", "orders"]).await;
    let lines = all.ok();
    assert_eq!(lines.len(), 4, "{all:?}");
    assert!(lines[0].starts_with("#1 orders.created ") && lines[0].ends_with(" 1"));
    assert!(lines[3].starts_with("#4 orders.created ") && lines[3].ends_with(" 4"));

    let some = run(
        &server,
        &[
            "--json", "read", "orders", "--from", "seq:2", "--limit", "2",
        ],
    )
    .await;
    let ids: Vec<_> = some.json().iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, [2, 3]);
    let from_time = run(
        &server,
        &[
            "--json",
            "read",
            "orders",
            "--from",
            "time:2000-01-01T00:00:00Z",
            "--limit",
            "1",
        ],
    )
    .await;
    assert_eq!(from_time.json()[0]["data"], "1");

    // Past the end, and from the end: nothing, and done.
    assert!(
        run(&server, &["read", "orders", "--from", "seq:99"])
            .await
            .ok()
            .is_empty()
    );
    assert!(
        run(&server, &["read", "orders", "--from", "end"])
            .await
            .ok()
            .is_empty()
    );
    run(&server, &["publish", "-t", "orders.paid", "-m", "paid"])
        .await
        .ok();
    let paid = run(&server, &["--json", "read", "orders", "-t", "orders.paid"]).await;
    assert_eq!(paid.json()[0]["id"], 5);

    // Reading took nothing from any consumer: a new one still gets everything.
    let consumed = run(
        &server,
        &[
            "--json", "consume", "-n", "c", "-t", "orders.>", "--count", "5",
        ],
    )
    .await;
    assert_eq!(consumed.json().len(), 5);

    run(&server, &["read", "nope"]).await.fails(2, "NOT_FOUND");
}

#[tokio::test]
async fn raw_publishes_keep_their_bytes_content_type_and_headers() {
    let server = server_with_orders().await;
    let published = run(
        &server,
        &[
            "publish",
            "-t",
            "orders.created",
            "--raw",
            "--content-type",
            "application/json",
            "-m",
            r#"{"order":42}"#,
            "--header",
            "published-by=checkout",
            "-H",
            "trace=a=b",
        ],
    )
    .await;
    assert_eq!(published.ok(), ["published orders.created #1"]);
    let lines = run_with_input(
        &server,
        &[
            "publish",
            "-t",
            "orders.note",
            "--raw",
            "-H",
            "source=stdin",
        ],
        "first\r\nsecond\n",
    )
    .await;
    assert!(lines.stderr.contains("published 2 events"), "{lines:?}");
    // A StringValue can carry headers too.
    run(
        &server,
        &["publish", "-t", "orders.paid", "-m", "paid", "-H", "k=v"],
    )
    .await
    .ok();

    let events = run(&server, &["--json", "read", "orders"]).await.json();
    assert_eq!(events.len(), 4);
    let raw = &events[0];
    assert_eq!(raw["data"], r#"{"order":42}"#);
    assert_eq!(raw["content_type"], "application/json");
    assert_eq!(
        raw["headers"],
        serde_json::json!({"published-by": "checkout", "trace": "a=b"})
    );
    assert_eq!(
        (&events[1]["data"], &events[1]["content_type"]),
        (&"first".into(), &serde_json::Value::Null)
    );
    assert_eq!(events[2]["data"], "second");
    assert_eq!(events[2]["headers"], serde_json::json!({"source": "stdin"}));
    assert_eq!(events[3]["type"], "windshift.test.v1.StringValue");
    assert_eq!(events[3]["headers"], serde_json::json!({"k": "v"}));

    // A consumer (Windshift's Events stream) shows the raw bytes as text too.
    let consumed = run(
        &server,
        &[
            "--json",
            "consume",
            "-n",
            "c",
            "-t",
            "orders.created",
            "--count",
            "1",
        ],
    )
    .await;
    assert_eq!(consumed.json()[0]["data"], r#"{"order":42}"#);

    run(
        &server,
        &[
            "publish",
            "-t",
            "orders.x",
            "-m",
            "x",
            "-H",
            "Nats-Msg-Id=1",
        ],
    )
    .await
    .fails(2, "INVALID_ARGUMENT");
    run(
        &server,
        &["publish", "-t", "orders.x", "-m", "x", "-H", "nothing"],
    )
    .await
    .fails(1, "NAME=VALUE");
    run(
        &server,
        &[
            "publish",
            "-t",
            "orders.x",
            "-m",
            "x",
            "--content-type",
            "text/plain",
        ],
    )
    .await
    .fails(1, "--raw");
}
