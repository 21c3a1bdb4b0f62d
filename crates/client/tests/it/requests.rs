//! Request/reply through the SDK: `Client::request` against a processor served by `Client::serve`,
//! with replies, no content and failures, handlers running concurrently, and the processor
//! attaching again by itself after the server restarts. Concurrent requests share one
//! RequestStream: each gets its own answer, a failure fails only its own request, and a cut stream
//! fails only the requests in flight, with UNAVAILABLE, before the next request opens a new one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::join_all;
use jetway_client::{Answer, Client, Failure, Message, ServeOptions, tonic::Code};
use jetway_testkit::{TcpProxy, eventually};
use tokio::sync::Barrier;

use jetway_server::testing::TestServer;

/// A handler: `fail` fails with NOT_FOUND, `empty` has no content, `pair` waits until a second
/// `pair` is being handled too, anything else is echoed in upper case with a header.
async fn handle(request: jetway_client::Request, pairs: Arc<Barrier>) -> Result<Answer, Failure> {
    match request.message.data.as_slice() {
        b"fail" => Err(Failure::new(Code::NotFound, "no such thing")),
        b"empty" => Ok(Answer::NoContent),
        b"pair" => {
            pairs.wait().await;
            Ok(Answer::Reply(Message::new("paired")))
        }
        data => Ok(Answer::Reply(
            Message::new(data.to_ascii_uppercase())
                .content_type("text/plain")
                .header("x-subject", request.subject),
        )),
    }
}

/// Requests `data` on `subject` until the processor is attached (the first requests may find no
/// responder yet), then returns the answer.
async fn first_answer(client: &Client, subject: &str, data: &str) -> Answer {
    eventually("the processor answers", || async {
        client.request(subject, data).await.ok()
    })
    .await
}

#[tokio::test]
async fn a_served_handler_answers_and_the_processor_attaches_again_after_a_restart() {
    let mut server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    assert_eq!(
        client.request("svc.echo", "hi").await.unwrap_err().code(),
        Some(Code::Unavailable),
        "nobody serves it yet"
    );
    let pairs = Arc::new(Barrier::new(2));
    let serving = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .serve(
                    ServeOptions::new(["svc.*"]).concurrency(2),
                    move |request| handle(request, Arc::clone(&pairs)),
                )
                .await
        }
    });

    let answer = first_answer(&client, "svc.echo", "hi").await;
    assert_eq!(
        answer,
        Answer::Reply(
            Message::new("HI")
                .content_type("text/plain")
                .header("x-subject", "svc.echo")
        )
    );
    assert_eq!(
        client.request("svc.x", "empty").await.unwrap(),
        Answer::NoContent
    );
    let failed = client.request("svc.x", "fail").await.unwrap_err();
    assert_eq!(failed.code(), Some(Code::NotFound));
    assert_eq!(failed.status().unwrap().message(), "no such thing");
    // Two handlers run at once: each `pair` waits for the other.
    let (one, two) = tokio::join!(
        client.request("svc.a", "pair"),
        client.request("svc.b", "pair")
    );
    assert_eq!(one.unwrap(), Answer::Reply(Message::new("paired")));
    assert_eq!(two.unwrap(), Answer::Reply(Message::new("paired")));

    server.stop().await;
    server.start_again().await;
    let answer = first_answer(&client, "svc.echo", "again").await;
    assert_eq!(
        answer,
        Answer::Reply(
            Message::new("AGAIN")
                .content_type("text/plain")
                .header("x-subject", "svc.echo")
        )
    );
    assert!(!serving.is_finished(), "serve keeps going");
    serving.abort();
}

#[tokio::test]
async fn serve_returns_when_the_server_refuses_the_processor() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let refused = client
        .serve(ServeOptions::new(["bad subject"]), |_| async {
            Ok(Answer::NoContent)
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument));
    assert!(
        refused
            .status()
            .unwrap()
            .message()
            .contains("attach.subjects[0]"),
        "{refused}"
    );
}

/// Serves `svc.*` with up to 64 requests at once: `hold` never answers (counting the holds in
/// `held`), `fail` fails with NOT_FOUND, anything else is echoed back.
fn serve_echo(client: &Client, held: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        client
            .serve(
                ServeOptions::new(["svc.*"]).concurrency(64),
                move |request| {
                    let held = Arc::clone(&held);
                    async move {
                        match request.message.data.as_slice() {
                            b"hold" => {
                                held.fetch_add(1, Ordering::SeqCst);
                                std::future::pending().await
                            }
                            b"fail" => Err(Failure::new(Code::NotFound, "no such thing")),
                            data => Ok(Answer::Reply(Message::new(data.to_vec()))),
                        }
                    }
                },
            )
            .await
            .ok();
    })
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_answer_and_a_failure_fails_only_its_own() {
    let server = TestServer::start().await;
    // A window smaller than the callers: the rest wait for a slot rather than fail.
    let client = Client::builder()
        .request_window(16)
        .connect(server.url())
        .await
        .unwrap();
    let serving = serve_echo(&client, Arc::default());
    first_answer(&client, "svc.x", "ready").await;

    let calls = (0..200).map(|i| {
        let client = client.clone();
        async move {
            let data = match i {
                50 => "fail".to_owned(),
                _ => format!("request {i}"),
            };
            let subject = if i == 100 { "nobody.home" } else { "svc.x" };
            let timeout = (i == 150).then_some(Duration::from_millis(200));
            let data = if i == 150 { "hold".to_owned() } else { data };
            let result = client
                .request_with(subject, Message::new(data.clone()), timeout)
                .await;
            (i, data, result)
        }
    });
    for (i, data, result) in join_all(calls).await {
        match i {
            50 => {
                let error = result.unwrap_err();
                assert_eq!(error.code(), Some(Code::NotFound), "{error}");
                assert_eq!(error.status().unwrap().message(), "no such thing");
            }
            100 => {
                let error = result.unwrap_err();
                assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
                assert_eq!(
                    error.status().unwrap().message(),
                    "no responder for subject nobody.home"
                );
            }
            150 => {
                let error = result.unwrap_err();
                assert_eq!(error.code(), Some(Code::DeadlineExceeded), "{error}");
            }
            _ => assert_eq!(
                result.unwrap(),
                Answer::Reply(Message::new(data)),
                "request {i}"
            ),
        }
    }
    serving.abort();
}

#[tokio::test]
async fn a_cut_stream_fails_only_the_requests_in_flight_and_the_next_request_opens_another() {
    let server = TestServer::start().await;
    let proxy = TcpProxy::start(server.grpc_addr().port()).await;
    // The processor connects directly; only the requester's connection goes through the proxy.
    let processor = Client::connect(server.url()).await.unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let serving = serve_echo(&processor, Arc::clone(&held));
    let client = Client::connect(proxy.url().replace("nats://", "http://"))
        .await
        .unwrap();
    first_answer(&client, "svc.x", "ready").await;

    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .request_with(
                        "svc.x",
                        Message::new("hold"),
                        Some(Duration::from_secs(600)),
                    )
                    .await
            })
        })
        .collect();
    eventually("the processor holds the three requests", || async {
        (held.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;
    proxy.cut();
    for call in in_flight {
        let error = tokio::time::timeout(crate::RECV_GUARD, call)
            .await
            .expect("failed at once, not after its 600 s timeout")
            .unwrap()
            .unwrap_err();
        assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    }
    // The next request opens a new stream (over a new connection) and is answered.
    let answer = first_answer(&client, "svc.x", "after").await;
    assert_eq!(answer, Answer::Reply(Message::new("after")));
    assert!(proxy.accepted() >= 2, "the cut forced a new connection");
    serving.abort();
}

#[tokio::test]
async fn unary_requests_stay_available() {
    let server = TestServer::start().await;
    let client = Client::builder()
        .shared_request_stream(false)
        .connect(server.url())
        .await
        .unwrap();
    let serving = serve_echo(&client, Arc::default());
    assert_eq!(
        first_answer(&client, "svc.x", "unary").await,
        Answer::Reply(Message::new("unary"))
    );
    let error = client.request("svc.x", "fail").await.unwrap_err();
    assert_eq!(error.code(), Some(Code::NotFound), "{error}");
    serving.abort();
}
