//! `jetway stream ls|info|rm|purge`, and how `consume` finds the stream behind a subject when
//! `--stream` is not given.

use crate::{publish, run, server_with_orders};

#[tokio::test]
async fn streams_are_listed_inspected_purged_and_removed() {
    let server = server_with_orders().await;
    publish(&server, &["1", "2"]).await;
    run(&server, &["publish", "-t", "orders.paid", "-m", "3"])
        .await
        .ok();

    let listed = run(&server, &["stream", "ls"]).await;
    let lines = listed.ok();
    assert_eq!(lines.len(), 1, "{listed:?}");
    assert!(lines[0].starts_with("orders: 3 events, "), "{}", lines[0]);
    assert!(
        lines[0].ends_with(" bytes, 0 consumers (orders.>)"),
        "{}",
        lines[0]
    );
    let listed = run(&server, &["--json", "stream", "ls"]).await.json();
    assert_eq!(
        (
            &listed[0]["name"],
            &listed[0]["events"],
            &listed[0]["last_id"]
        ),
        (&"orders".into(), &3.into(), &3.into())
    );
    assert_eq!(listed[0]["subjects"], serde_json::json!(["orders.>"]));

    let info = run(&server, &["stream", "info", "orders"]).await;
    let text = info.ok().join("\n");
    assert!(text.starts_with("stream orders (orders.>)\n"), "{text}");
    assert!(
        text.contains("storage: file, 1 replica, limits retention, discard old, dedup window 2m"),
        "{text}"
    );
    assert!(text.contains("events: 3 ("), "{text}");
    assert!(
        text.contains("subjects: orders.created 2, orders.paid 1"),
        "{text}"
    );
    let info = &run(
        &server,
        &["--json", "stream", "info", "orders", "-t", "orders.paid"],
    )
    .await
    .json()[0];
    assert_eq!(
        info["subject_counts"],
        serde_json::json!({"orders.paid": 1})
    );
    assert_eq!(info["dedup_window"], "2m");

    let purged = run(
        &server,
        &[
            "stream",
            "purge",
            "orders",
            "--subject",
            "orders.created",
            "--keep",
            "1",
        ],
    )
    .await;
    assert_eq!(purged.ok(), ["purged 1 event from orders"]);
    let purged = run(&server, &["--json", "stream", "purge", "orders"]).await;
    assert_eq!(purged.json()[0]["purged"], 2);
    let info = &run(&server, &["--json", "stream", "info", "orders"])
        .await
        .json()[0];
    assert_eq!((&info["events"], &info["last_id"]), (&0.into(), &3.into()));

    assert_eq!(
        run(&server, &["stream", "rm", "orders"]).await.ok(),
        ["stream orders deleted"]
    );
    run(&server, &["stream", "rm", "orders"])
        .await
        .fails(2, "NOT_FOUND: stream orders not found");
    run(&server, &["stream", "info", "orders"])
        .await
        .fails(2, "NOT_FOUND");
    assert!(run(&server, &["stream", "ls"]).await.ok().is_empty());
}

/// `stream purge` and `stream rm` refuse Jetway's internal streams (here a key-value store's)
/// without `--force`.
#[tokio::test]
async fn internal_streams_are_purged_and_removed_only_with_force() {
    let server = crate::TestServer::start().await;
    run(&server, &["kv", "set", "config", "app.color", "blue"])
        .await
        .ok();
    for command in [
        &["stream", "purge", "KV_config"][..],
        &["stream", "rm", "KV_config"],
    ] {
        run(&server, command).await.fails(
            2,
            "FAILED_PRECONDITION: stream KV_config is internal to Jetway: it holds a key-value store; pass force",
        );
    }
    assert_eq!(
        run(&server, &["stream", "purge", "KV_config", "--force"])
            .await
            .ok(),
        ["purged 1 event from KV_config"]
    );
    assert_eq!(
        run(&server, &["stream", "rm", "KV_config", "--force"])
            .await
            .ok(),
        ["stream KV_config deleted"]
    );
}

#[tokio::test]
async fn consume_finds_the_stream_from_the_subject() {
    let server = server_with_orders().await;
    publish(&server, &["hello"]).await;

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
    assert_eq!(consumed.json()[0]["data"], "hello");
    assert!(
        consumed
            .stderr
            .contains("consuming orders.created from orders as c"),
        "{consumed:?}"
    );

    run(&server, &["consume", "-n", "c", "-t", "clicks.home"])
        .await
        .fails(2, "no stream captures clicks.home; pass --create");
    // A filter can match several streams; which one is meant must be said.
    run(&server, &["stream", "ensure", "clicks", "-t", "clicks.>"])
        .await
        .ok();
    run(&server, &["consume", "-n", "c", "-t", "*.home"])
        .await
        .fails(
            1,
            "*.home matches the subjects of several streams (clicks, orders); pass --stream",
        );
    let consumed = run(
        &server,
        &[
            "--json", "consume", "-n", "all", "-t", ">", "--stream", "orders", "--count", "1",
        ],
    )
    .await;
    assert_eq!(consumed.json()[0]["data"], "hello");
}
