//! Integration tests of the `jetway` binary: each test starts a real nats-server and an in-process
//! Jetway server, and runs the CLI as a separate process against it.

// Test code may panic on unwrap/expect: a panic here is a failed test with its message. clippy's
// allow-*-in-tests covers `#[test]` functions only, not the helpers they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod dead_letters;
mod reads;
mod requests;
mod streams;
mod tls;

use std::{process::Stdio, time::Duration};

use jetway_server::testing::TestServer;
use jetway_testkit::eventually;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

/// How long one CLI run may take before the test fails (a hang guard, not a timing check).
const RUN_GUARD: Duration = Duration::from_secs(30);

/// What a finished run of the CLI left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and returns the standard output's lines.
    #[track_caller]
    fn ok(&self) -> Vec<&str> {
        assert_eq!(self.code, 0, "{self:?}");
        self.stdout.lines().collect()
    }

    /// Asserts exit code `code` with one line on standard error mentioning `needle`.
    #[track_caller]
    fn fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "one line: {self:?}");
        assert!(self.stderr.contains(needle), "{needle:?} in {self:?}");
    }

    /// Standard output as JSON lines.
    #[track_caller]
    fn json(&self) -> Vec<Value> {
        self.ok()
            .into_iter()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

/// The CLI, pointed at `server` through `JETWAY_URL`.
fn jetway(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jetway"));
    command
        .args(args)
        .env("JETWAY_URL", server.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the CLI to its end.
async fn run(server: &TestServer, args: &[&str]) -> Run {
    finish(jetway(server, args)).await
}

/// Runs the CLI with `input` on standard input.
async fn run_with_input(server: &TestServer, args: &[&str], input: &str) -> Run {
    let mut command = jetway(server, args);
    command.stdin(Stdio::piped());
    let mut child = command.spawn().expect("run jetway");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    collect(child).await
}

async fn finish(mut command: Command) -> Run {
    collect(command.spawn().expect("run jetway")).await
}

async fn collect(child: tokio::process::Child) -> Run {
    let output = tokio::time::timeout(RUN_GUARD, child.wait_with_output())
        .await
        .expect("jetway finished within the guard")
        .unwrap();
    Run {
        code: output.status.code().expect("an exit code"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A server with stream `orders` on `orders.>`.
async fn server_with_orders() -> TestServer {
    let server = TestServer::start().await;
    run(&server, &["stream", "ensure", "orders", "-t", "orders.>"])
        .await
        .ok();
    server
}

/// Publishes each value on `orders.created`.
async fn publish(server: &TestServer, values: &[&str]) {
    for value in values {
        run(server, &["publish", "-t", "orders.created", "-m", value])
            .await
            .ok();
    }
}

/// Consumes `count` events as `name` from `orders` and returns their data.
async fn consume(server: &TestServer, name: &str, count: u64) -> Vec<String> {
    let count = count.to_string();
    let args = [
        "--json", "consume", "-n", name, "-t", "orders.>", "--stream", "orders", "--count", &count,
    ];
    run(server, &args)
        .await
        .json()
        .into_iter()
        .map(|event| event["data"].as_str().expect("StringValue data").to_owned())
        .collect()
}

#[tokio::test]
async fn publish_then_consume_round_trips_as_text_and_json() {
    let server = server_with_orders().await;
    let published = run(&server, &["publish", "-t", "orders.created", "-m", "hello"]).await;
    assert_eq!(published.ok(), ["published orders.created #1"]);
    let published = run(
        &server,
        &[
            "--json",
            "publish",
            "-t",
            "orders.paid",
            "-m",
            "paid",
            "--key",
            "k1",
        ],
    )
    .await;
    assert_eq!(published.json()[0]["id"], 2);

    let consumed = run(
        &server,
        &[
            "consume", "-n", "text", "-t", "orders.>", "--stream", "orders", "--count", "2",
        ],
    )
    .await;
    let lines = consumed.ok();
    assert_eq!(lines.len(), 2, "{consumed:?}");
    assert!(lines[0].starts_with("#1 orders.created "), "{}", lines[0]);
    assert!(lines[0].ends_with(" hello"), "{}", lines[0]);
    assert!(lines[1].starts_with("#2 orders.paid ") && lines[1].ends_with(" paid"));

    let consumed = run(
        &server,
        &[
            "--json",
            "consume",
            "-n",
            "json",
            "-t",
            "orders.created",
            "--stream",
            "orders",
            "--count",
            "1",
        ],
    )
    .await;
    let event = &consumed.json()[0];
    assert_eq!(event["id"], 1);
    assert_eq!(event["subject"], "orders.created");
    assert_eq!(event["data"], "hello");
    assert_eq!(event["type"], "windshift.test.v1.StringValue");
    assert!(
        event["timestamp"].as_str().unwrap().ends_with('Z'),
        "{event}"
    );
}

#[tokio::test]
async fn standard_input_is_published_line_by_line_with_a_key_per_line() {
    let server = server_with_orders().await;
    let args = [
        "--json",
        "publish",
        "-t",
        "orders.created",
        "--key",
        "batch",
    ];
    let first = run_with_input(&server, &args, "a\nb\n\nc\n").await;
    let ids: Vec<u64> = first
        .json()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(first.stderr.contains("published 3 events"), "{first:?}");

    // The same input again: every line's key was seen, so nothing new is stored.
    let again = run_with_input(&server, &args, "a\nb\n\nc\n").await;
    let ids: Vec<u64> = again
        .json()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);

    publish(&server, &["marker"]).await;
    assert_eq!(
        consume(&server, "reader", 4).await,
        ["a", "b", "c", "marker"]
    );
}

#[tokio::test]
async fn a_named_consumer_resumes_after_a_restart_and_gets_only_what_it_missed() {
    let mut server = server_with_orders().await;
    publish(&server, &["1", "2"]).await;
    assert_eq!(consume(&server, "reader", 2).await, ["1", "2"]);

    server.stop().await;
    server.start_again().await;
    publish(&server, &["3", "4"]).await;
    assert_eq!(consume(&server, "reader", 2).await, ["3", "4"]);
    publish(&server, &["5"]).await;
    assert_eq!(consume(&server, "reader", 1).await, ["5"]);
}

/// `--count N` takes exactly N events: the next ones are not delivered and given back, which would
/// use up their deliveries (here the only one each has).
#[tokio::test]
async fn a_count_takes_exactly_that_many_events() {
    let server = server_with_orders().await;
    publish(&server, &["1", "2", "3", "4"]).await;
    let consume = |count: &'static str| {
        let server = &server;
        async move {
            let args = [
                "--json",
                "consume",
                "-n",
                "once",
                "-t",
                "orders.>",
                "--stream",
                "orders",
                "--max-deliveries",
                "1",
                "--count",
                count,
            ];
            run(server, &args)
                .await
                .json()
                .into_iter()
                .map(|event| {
                    let data = event["data"].as_str().expect("StringValue data").to_owned();
                    (
                        data,
                        event["delivery_attempt"].as_u64().expect("an attempt"),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(consume("1").await, [("1".to_owned(), 1)]);
    assert_eq!(
        consume("3").await,
        [
            ("2".to_owned(), 1),
            ("3".to_owned(), 1),
            ("4".to_owned(), 1)
        ]
    );
}

#[tokio::test]
async fn two_names_each_get_everything() {
    let server = server_with_orders().await;
    publish(&server, &["1", "2", "3"]).await;
    assert_eq!(consume(&server, "a", 3).await, ["1", "2", "3"]);
    assert_eq!(consume(&server, "b", 3).await, ["1", "2", "3"]);
}

#[tokio::test]
async fn from_picks_where_a_new_consumer_starts() {
    let server = server_with_orders().await;
    publish(&server, &["1", "2", "3"]).await;
    assert_eq!(consume_from(&server, "by-seq", "seq:3").await, "3");
    assert_eq!(
        consume_from(&server, "by-time", "time:2000-01-01T00:00:00Z").await,
        "1"
    );
    assert_eq!(consume_from(&server, "by-start", "start").await, "1");
}

/// The first event a new consumer `name` gets with `--from from`.
async fn consume_from(server: &TestServer, name: &str, from: &str) -> Value {
    let args = [
        "--json", "consume", "-n", name, "-t", "orders.>", "--stream", "orders", "--from", from,
        "--count", "1",
    ];
    run(server, &args).await.json()[0]["data"].clone()
}

#[tokio::test]
async fn create_makes_a_stream_for_a_new_topic_and_never_touches_an_existing_one() {
    let server = TestServer::start().await;
    run(&server, &["publish", "-t", "topic.a", "-m", "x"])
        .await
        .fails(2, "NOT_FOUND");
    let created = run(
        &server,
        &["publish", "-t", "topic.a", "-m", "hi", "--create"],
    )
    .await;
    assert_eq!(created.ok(), ["published topic.a #1"]);
    assert!(
        created.stderr.contains("created stream topic"),
        "{created:?}"
    );

    // The stream exists now: --create finds it and leaves it as it is.
    let consumed = run(
        &server,
        &[
            "--json", "consume", "-n", "c", "-t", "topic.a", "--create", "--count", "1",
        ],
    )
    .await;
    assert_eq!(consumed.json()[0]["data"], "hi");
    assert!(!consumed.stderr.contains("created stream"), "{consumed:?}");

    // consume --create on a new topic creates its stream too.
    let args = [
        "--json", "consume", "-n", "c", "-t", "fresh.>", "--create", "--count", "1",
    ];
    let mut consumer = jetway(&server, &args).spawn().unwrap();
    wait_for_stderr(&mut consumer, "consuming").await;
    run(&server, &["publish", "-t", "fresh.one", "-m", "first"])
        .await
        .ok();
    let consumed = collect(consumer).await;
    assert_eq!(consumed.json()[0]["data"], "first");

    // A stream called `taken` exists and captures other subjects: --create leaves it alone.
    run(&server, &["stream", "ensure", "taken", "-t", "elsewhere.>"])
        .await
        .ok();
    run(
        &server,
        &["publish", "-t", "taken.x", "-m", "x", "--create"],
    )
    .await
    .fails(2, "stream taken exists but does not capture taken.x");
    run(
        &server,
        &["publish", "-t", "elsewhere.y", "-m", "still captured"],
    )
    .await
    .ok();
}

/// Reads the child's standard error until a line contains `needle` (the CLI says when it is
/// subscribed), and gives the rest back to the child for `collect`.
async fn wait_for_stderr(child: &mut tokio::process::Child, needle: &str) {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    tokio::time::timeout(RUN_GUARD, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return;
            }
        }
        panic!("stderr ended before {needle:?}");
    })
    .await
    .expect("the line within the guard");
}

#[tokio::test]
async fn tail_prints_only_events_stored_after_it_started() {
    let server = server_with_orders().await;
    publish(&server, &["old"]).await;
    let mut tail = jetway(&server, &["--json", "tail", "orders", "--count", "1"])
        .spawn()
        .unwrap();
    wait_for_stderr(&mut tail, "tailing").await;
    publish(&server, &["new"]).await;
    let tailed = collect(tail).await;
    let events = tailed.json();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"], "new");
}

/// How many consumers stream `orders` has, as `jetway stream info` tells.
async fn orders_consumers(server: &TestServer) -> u64 {
    run(server, &["--json", "stream", "info", "orders"])
        .await
        .json()[0]["consumers"]
        .as_u64()
        .expect("a consumer count")
}

/// `jetway tail` stopped with SIGTERM (as `kill`, a process supervisor or a container runtime stop
/// it) deletes its consumer and exits cleanly, as it does on Ctrl-C.
#[tokio::test]
async fn tail_deletes_its_consumer_when_terminated() {
    let server = server_with_orders().await;
    let mut tail = jetway(&server, &["tail", "orders"]).spawn().unwrap();
    wait_for_stderr(&mut tail, "tailing").await;
    assert_eq!(
        orders_consumers(&server).await,
        1,
        "the tail's own consumer"
    );

    let pid = tail.id().expect("tail is running").to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {pid}: {sent}");
    eventually("the tail's consumer is deleted", || async {
        (orders_consumers(&server).await == 0).then_some(())
    })
    .await;
    let status = tokio::time::timeout(RUN_GUARD, tail.wait())
        .await
        .expect("tail exits within the guard")
        .unwrap();
    assert!(status.success(), "tail ended with {status}");
}

#[tokio::test]
async fn kv_get_set_del_and_watch() {
    let server = TestServer::start().await;
    let set = run(&server, &["kv", "set", "config", "app.color", "blue"]).await;
    assert_eq!(set.ok(), ["app.color set (revision 1)"]);
    let got = run(&server, &["kv", "get", "config", "app.color"]).await;
    assert_eq!(got.ok(), ["blue (revision 1)"]);
    let got = run(&server, &["--json", "kv", "get", "config", "app.color"]).await;
    let entry = &got.json()[0];
    assert_eq!(
        (&entry["value"], &entry["revision"]),
        (&"blue".into(), &1.into())
    );

    run(
        &server,
        &["kv", "set", "config", "app.color", "red", "--create-only"],
    )
    .await
    .fails(2, "ALREADY_EXISTS");
    run(
        &server,
        &["kv", "set", "config", "app.color", "red", "--revision", "9"],
    )
    .await
    .fails(2, "FAILED_PRECONDITION");
    run(
        &server,
        &[
            "kv",
            "set",
            "config",
            "app.color",
            "green",
            "--revision",
            "1",
        ],
    )
    .await
    .ok();
    run(
        &server,
        &["kv", "del", "config", "app.color", "--revision", "1"],
    )
    .await
    .fails(2, "FAILED_PRECONDITION");
    assert_eq!(
        run(&server, &["kv", "del", "config", "app.color"])
            .await
            .ok(),
        ["app.color deleted"]
    );
    run(&server, &["kv", "get", "config", "app.color"])
        .await
        .fails(2, "NOT_FOUND");

    // The store keeps one revision per key: the history of app.color is its delete marker.
    let watched = run(
        &server,
        &[
            "kv",
            "watch",
            "config",
            "app.>",
            "--history",
            "--count",
            "1",
        ],
    )
    .await;
    assert_eq!(watched.ok(), ["3 delete app.color"]);

    let mut watch = jetway(&server, &["kv", "watch", "config", "ui.>", "--count", "3"])
        .spawn()
        .unwrap();
    wait_for_stderr(&mut watch, "watching").await;
    run(&server, &["kv", "set", "config", "ui.theme", "dark"])
        .await
        .ok();
    run(&server, &["kv", "set", "config", "ui.theme", "light"])
        .await
        .ok();
    run(&server, &["kv", "del", "config", "ui.theme"])
        .await
        .ok();
    assert_eq!(
        collect(watch).await.ok(),
        [
            "4 put ui.theme = dark",
            "5 put ui.theme = light",
            "6 delete ui.theme"
        ]
    );
}

#[tokio::test]
async fn exit_codes_are_0_ok_1_usage_and_2_server_with_one_line_on_stderr() {
    let server = server_with_orders().await;
    assert_eq!(run(&server, &["--help"]).await.code, 0);
    assert_eq!(run(&server, &["--version"]).await.code, 0);
    run(&server, &[]).await.fails(1, "subcommand");
    run(&server, &["publish", "--bogus"])
        .await
        .fails(1, "--bogus");
    run(&server, &["publish", "-m", "no subject"])
        .await
        .fails(1, "--subject");
    run(
        &server,
        &[
            "consume", "-n", "x", "-t", "orders.>", "--stream", "orders", "--from", "middle",
        ],
    )
    .await
    .fails(1, "middle");
    // A limit of 0 would print nothing at all; it is a usage error rather than "no limit".
    run(&server, &["read", "orders", "--limit", "0"])
        .await
        .fails(1, "--limit");
    run(&server, &["dlq", "ls", "--limit", "0"])
        .await
        .fails(1, "--limit");
    run(&server, &["stream", "ensure", "bad name", "-t", "x"])
        .await
        .fails(2, "INVALID_ARGUMENT");

    // Nothing listens on port 1: a connection failure is a server error.
    let unreachable = finish({
        let mut command = jetway(
            &server,
            &["--server", "http://127.0.0.1:1", "kv", "get", "a", "b"],
        );
        command.env_remove("JETWAY_URL");
        command
    })
    .await;
    unreachable.fails(2, "cannot connect to http://127.0.0.1:1");
}
