//! Request/reply over HTTP (`POST /v1/request/{subject}`) against processors attached over gRPC
//! Respond with the SDK: the reply with its content type and headers, no content, a processor's
//! error as the HTTP status of its code, no processor (503), no answer in time (504) with the
//! timeout from the header, the parameter or the default and cut to the maximum, and bad input.

use std::time::Duration;

use jetway_client::{Answer, Client, Failure, Message, ServeOptions, tonic::Code};
use jetway_server::config::Limits;
use jetway_testkit::eventually;
use tokio::sync::mpsc;

use super::{Reply, call, env};
use crate::harness::{Env, RECV_GUARD, http_get};

/// Attaches an SDK processor on `greet.*` that answers by the last subject token: `quiet` with no
/// content, `missing` with NOT_FOUND, `todo` with UNIMPLEMENTED, `odd` with a reply header HTTP
/// cannot carry, anything else with a text reply that echoes the `x-lang` header; and waits until
/// requests reach it.
async fn greeter(env: &Env) {
    let client = Client::connect(env.jetway.url()).await.unwrap();
    tokio::spawn(async move {
        client
            .serve(
                ServeOptions::new(["greet.*"]).concurrency(4),
                |request| async move {
                    let name = request.subject.trim_start_matches("greet.").to_owned();
                    match name.as_str() {
                        "quiet" => Ok(Answer::NoContent),
                        "missing" => Err(Failure::new(Code::NotFound, "nobody called missing")),
                        "todo" => Err(Failure::new(Code::Unimplemented, "not yet")),
                        _ => {
                            let lang = request.message.headers.get("x-lang").cloned();
                            let body = format!(
                                "hello {name}: {}",
                                String::from_utf8_lossy(&request.message.data)
                            );
                            let mut reply = Message::new(body)
                                .content_type("text/plain; charset=utf-8")
                                .header("x-lang", lang.unwrap_or_default());
                            if name == "odd" {
                                reply = reply.header("bad(name)", "dropped");
                            }
                            Ok(Answer::Reply(reply))
                        }
                    }
                },
            )
            .await
    });
    let addr = env.jetway.http_addr();
    eventually("the processor is attached", || async move {
        let reply = call(addr, "POST", "/v1/request/greet.ready", &[], "").await;
        (reply.status.as_u16() != 503).then_some(())
    })
    .await;
}

async fn metric(env: &Env, series: &str) -> f64 {
    let (_, metrics) = http_get(env.jetway.health_addr(), "/metrics").await;
    metrics
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_request_gets_the_reply_no_content_or_the_processors_error() {
    let (env, addr) = env(Limits::default()).await;
    greeter(&env).await;

    let reply = call(
        addr,
        "POST",
        "/v1/request/greet.alice",
        &[
            ("content-type", "text/plain"),
            ("jetway-header-x-lang", "en"),
        ],
        "hi",
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body, "hello alice: hi");
    assert_eq!(reply.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(reply.headers["jetway-header-x-lang"], "en");

    // A reply header HTTP cannot carry is left out; the rest of the reply comes.
    let odd = call(addr, "POST", "/v1/request/greet.odd", &[], "").await;
    assert_eq!(odd.status, 200);
    assert!(
        !odd.headers.keys().any(|name| name.as_str().contains("bad")),
        "{:?}",
        odd.headers
    );

    let no_content = r#"jetway_requests_total{outcome="no_content"}"#;
    let before = metric(&env, no_content).await;
    let quiet = call(addr, "POST", "/v1/request/greet.quiet", &[], "x").await;
    assert_eq!(quiet.status, 204);
    assert!(quiet.body.is_empty());
    // Counted by the same metrics as gRPC's Request.
    assert!(metric(&env, no_content).await > before);

    let missing = call(addr, "POST", "/v1/request/greet.missing", &[], "").await;
    let message = missing.assert_error(404, "NOT_FOUND", None);
    assert_eq!(message, "nobody called missing");
    let todo = call(addr, "POST", "/v1/request/greet.todo", &[], "").await;
    assert_eq!(todo.assert_error(501, "UNIMPLEMENTED", None), "not yet");
}

/// Jetway with request timeouts short enough to reach in a test.
fn short_timeouts() -> Limits {
    Limits {
        request_default_timeout: Duration::from_millis(200),
        request_max_timeout: Duration::from_millis(1500),
        ..Limits::default()
    }
}

/// Attaches an SDK processor on `slow.*` that never answers and reports how long each requester
/// waits (the timeout the server passed on), and waits until requests reach it.
async fn silent(env: &Env) -> Told {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Client::connect(env.jetway.url()).await.unwrap();
    tokio::spawn(async move {
        client
            .serve(
                ServeOptions::new(["slow.*"]).concurrency(64),
                move |request| {
                    let _ = tx.send((request.subject, request.timeout));
                    std::future::pending()
                },
            )
            .await
    });
    let addr = env.jetway.http_addr();
    eventually("the silent processor is attached", || async move {
        let reply = call(addr, "POST", "/v1/request/slow.ready?timeout=50ms", &[], "").await;
        (reply.status.as_u16() == 504).then_some(())
    })
    .await;
    rx
}

/// What the silent processor hears: each request's subject and how long its requester waits.
type Told = mpsc::UnboundedReceiver<(String, Option<Duration>)>;

/// How long the processor was told the requester of `subject` waits (the polls' requests that
/// reached it are passed over).
async fn told(rx: &mut Told, subject: &str) -> Duration {
    loop {
        let (heard, timeout) = tokio::time::timeout(RECV_GUARD, rx.recv())
            .await
            .expect("the request reached the processor")
            .expect("the processor runs");
        if heard == subject {
            return timeout.expect("the server passes the timeout on");
        }
    }
}

#[tokio::test]
async fn no_processor_is_503_and_no_answer_in_time_is_504() {
    let (env, addr) = env(short_timeouts()).await;
    let nobody = call(addr, "POST", "/v1/request/nobody.home", &[], "").await;
    let message = nobody.assert_error(503, "UNAVAILABLE", None);
    assert!(message.contains("no responder"), "{message}");

    let mut rx = silent(&env).await;
    let timeout = |reply: &Reply| reply.assert_error(504, "DEADLINE_EXCEEDED", None);

    // The default: REQUEST_DEFAULT_TIMEOUT.
    timeout(&call(addr, "POST", "/v1/request/slow.a", &[], "").await);
    let waited = told(&mut rx, "slow.a").await;
    assert!(waited <= Duration::from_millis(200), "{waited:?}");
    // The header.
    timeout(
        &call(
            addr,
            "POST",
            "/v1/request/slow.b",
            &[("request-timeout", "100ms")],
            "",
        )
        .await,
    );
    let waited = told(&mut rx, "slow.b").await;
    assert!(waited <= Duration::from_millis(100), "{waited:?}");
    // The parameter, above the default.
    timeout(&call(addr, "POST", "/v1/request/slow.c?timeout=1s", &[], "").await);
    let waited = told(&mut rx, "slow.c").await;
    assert!(
        waited > Duration::from_millis(200) && waited <= Duration::from_secs(1),
        "{waited:?}"
    );
    // Cut to REQUEST_MAX_TIMEOUT.
    let message = timeout(
        &call(
            addr,
            "POST",
            "/v1/request/slow.d",
            &[("request-timeout", "1h")],
            "",
        )
        .await,
    );
    let waited = told(&mut rx, "slow.d").await;
    assert!(waited <= Duration::from_millis(1500), "{waited:?}");
    assert!(message.contains("REQUEST_MAX_TIMEOUT"), "{message}");
}

/// Request headers, as `call` takes them.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn bad_requests_are_400_naming_the_field() {
    let (_env, addr) = env(Limits::default()).await;
    let cases: [(&str, Headers, &str); 6] = [
        ("/v1/request/greet.*", &[], "subject"),
        ("/v1/request/greet.a?timeout=soon", &[], "timeout"),
        ("/v1/request/greet.a?timeout=0s", &[], "timeout"),
        (
            "/v1/request/greet.a",
            &[("request-timeout", "5")],
            "Request-Timeout",
        ),
        (
            "/v1/request/greet.a?timeout=1s",
            &[("request-timeout", "1s")],
            "timeout",
        ),
        ("/v1/request/greet.a?wait=1s", &[], "wait"),
    ];
    for (path, headers, field) in cases {
        let reply = call(addr, "POST", path, headers, "").await;
        reply.assert_error(400, "INVALID_ARGUMENT", Some(field));
    }
    let reserved = call(
        addr,
        "POST",
        "/v1/request/greet.a",
        &[("jetway-header-nats-msg-id", "x")],
        "",
    )
    .await;
    assert_eq!(reserved.status, 400, "{:?}", reserved.body);
    let wrong_method = call(addr, "GET", "/v1/request/greet.a", &[], "").await;
    assert_eq!(wrong_method.status, 405);
}
