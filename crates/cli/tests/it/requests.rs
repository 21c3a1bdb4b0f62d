//! `jetway request` and `jetway reply`: a request answered by a `reply --echo` or `reply --command`
//! process, and the one-line failures with exit code 2 (no responder, timeout, a failing command).

use crate::{TestServer, jetway, run};
use jetway_testkit::eventually;

/// Starts `jetway reply` with `args`; the process is killed when the handle is dropped.
fn reply(server: &TestServer, args: &[&str]) -> tokio::process::Child {
    let mut all = vec!["reply"];
    all.extend_from_slice(args);
    jetway(server, &all).spawn().expect("run jetway reply")
}

/// Runs `jetway request` with `args` until it stops failing for want of a responder (the processor
/// may not be attached yet), and returns that run.
async fn answered(server: &TestServer, args: &[&str]) -> crate::Run {
    let mut all = vec!["request"];
    all.extend_from_slice(args);
    eventually("the request is answered", || async {
        let run = run(server, &all).await;
        (!run.stderr.contains("no responder")).then_some(run)
    })
    .await
}

#[tokio::test]
async fn request_prints_the_reply_of_an_echoing_processor() {
    let server = TestServer::start().await;
    let nobody = run(&server, &["request", "nobody.home", "-m", "hi"]).await;
    nobody.fails(2, "no responder for subject nobody.home");

    let _echo = reply(&server, &["greet.*", "--echo"]);
    let echoed = answered(&server, &["greet.alice", "-m", "hi"]).await;
    assert_eq!(echoed.ok(), ["hi"]);
    let typed = answered(
        &server,
        &[
            "greet.bob",
            "-m",
            "{}",
            "--content-type",
            "application/json",
            "-H",
            "x-a=1",
            "--timeout",
            "2s",
        ],
    )
    .await;
    assert_eq!(typed.ok(), ["{}"]);
    let json = {
        let mut all = vec!["--json", "request"];
        all.extend_from_slice(&["greet.bob", "-m", "{}", "-H", "x-a=1"]);
        run(&server, &all).await.json()
    };
    assert_eq!(json[0]["data"], "{}");
    assert_eq!(json[0]["headers"]["x-a"], "1");
}

#[tokio::test]
async fn reply_answers_with_a_commands_output_or_its_failure() {
    let server = TestServer::start().await;
    let _upper = reply(&server, &["shout", "--command", "tr a-z A-Z"]);
    let _failing = reply(&server, &["broken", "--command", "echo oops >&2; exit 3"]);
    let _slow = reply(&server, &["slow", "--command", "sleep 5"]);

    assert_eq!(
        answered(&server, &["shout", "-m", "hey"]).await.ok(),
        ["HEY"]
    );
    answered(&server, &["broken", "-m", "x"])
        .await
        .fails(2, "oops");
    answered(&server, &["slow", "--timeout", "300ms"])
        .await
        .fails(2, "DEADLINE_EXCEEDED");
}
