//! `consume` with a delivery policy, and `jetway dlq ls|redrive`. A dead letter is made the
//! reliable way: the SDK fetches the event and rejects it permanently.

use std::time::Duration;

use jetway_client::{Client, FetchOptions};
use jetway_testkit::eventually;
use serde_json::Value;

use crate::{TestServer, publish, run, server_with_orders};

/// The dead letters `jetway --json dlq ls` prints, once there are `n`.
async fn await_dead_letters(server: &TestServer, n: usize) -> Vec<Value> {
    eventually(&format!("{n} dead letters"), || async {
        let listed = run(server, &["--json", "dlq", "ls"]).await;
        let letters = listed.json();
        (letters.len() == n).then_some(letters)
    })
    .await
}

#[tokio::test]
async fn events_rejected_for_good_are_listed_and_redriven_once() {
    let server = server_with_orders().await;
    run(&server, &["dlq", "ls"])
        .await
        .fails(2, "there are no dead-letter streams");

    // --count 0 only declares the consumer, with its delivery policy.
    let declared = run(
        &server,
        &[
            "consume",
            "-n",
            "worker",
            "-t",
            "orders.>",
            "--max-deliveries",
            "2",
            "--backoff",
            "5s,10s",
            "--dead-letter",
            "orders-dead",
            "--count",
            "0",
        ],
    )
    .await;
    assert!(declared.ok().is_empty());
    assert!(
        declared
            .stderr
            .contains("consumer worker on orders is ready for orders.>"),
        "{declared:?}"
    );
    let client = Client::connect(server.url()).await.unwrap();
    let info = client.consumers().info("orders", "worker").await.unwrap();
    assert_eq!(info.max_deliveries, Some(2));
    assert_eq!(
        info.backoff,
        [Duration::from_secs(5), Duration::from_secs(10)]
    );
    assert_eq!(info.dead_letter_stream.as_deref(), Some("orders-dead"));

    publish(&server, &["bad", "worse"]).await;
    let fetcher = client.fetcher("orders", "worker");
    let fetched = fetcher
        .fetch_with(&FetchOptions::new().wait(Duration::from_secs(5)))
        .await
        .unwrap();
    let ids: Vec<u64> = fetched.events.iter().map(|e| e.id()).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(fetcher.reject_permanently(&ids).await.unwrap().ids, ids);

    let letters = await_dead_letters(&server, 2).await;
    let first = &letters[0];
    assert_eq!(first["dead_letter_stream"], "orders-dead");
    assert_eq!(
        (&first["stream"], &first["consumer"]),
        (&"orders".into(), &"worker".into())
    );
    assert_eq!(
        (&first["reason"], &first["attempts"]),
        (&"rejected".into(), &1.into())
    );
    assert_eq!(
        (&first["event"]["id"], &first["event"]["data"]),
        (&1.into(), &"bad".into())
    );
    let text = run(
        &server,
        &["dlq", "ls", "--dlq", "orders-dead", "--limit", "1"],
    )
    .await;
    let line = text.ok()[0].to_owned();
    assert!(
        line.starts_with(
            "orders-dead 1 orders/worker rejected after 1 delivery: #1 orders.created "
        ),
        "{line}"
    );
    assert!(line.ends_with(" bad"), "{line}");
    assert!(
        run(&server, &["dlq", "ls", "--consumer", "other"])
            .await
            .ok()
            .is_empty()
    );

    // By id: published again once; a retry finds it gone.
    let id = first["id"].to_string();
    let redriven = run(&server, &["dlq", "redrive", &id]).await;
    assert_eq!(redriven.ok(), [format!("orders-dead {id} redriven as #3")]);
    let again = run(&server, &["--json", "dlq", "redrive", &id]).await;
    assert_eq!(again.json()[0]["status"], "not_found");
    let republished = run(&server, &["--json", "read", "orders", "--from", "seq:3"]).await;
    let events = republished.json();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (&events[0]["id"], &events[0]["data"]),
        (&3.into(), &"bad".into())
    );

    // The rest, with --all.
    let all = run(
        &server,
        &[
            "--json",
            "dlq",
            "redrive",
            "--all",
            "--stream",
            "orders",
            "--consumer",
            "worker",
        ],
    )
    .await;
    let all = all.json();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (&all[0]["status"], &all[0]["event_id"]),
        (&"redriven".into(), &4.into())
    );
    assert!(run(&server, &["dlq", "ls"]).await.ok().is_empty());

    run(&server, &["dlq", "redrive"]).await.fails(1, "--all");
    run(&server, &["dlq", "redrive", "1", "--consumer", "worker"])
        .await
        .fails(1, "--consumer");
    run(&server, &["dlq", "ls", "--dlq", "nope"])
        .await
        .fails(2, "NOT_FOUND");
}
