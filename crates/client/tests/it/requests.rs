//! Request/reply through the SDK: `Client::request` against a processor served by `Client::serve`,
//! with replies, no content and failures, handlers running concurrently, and the processor
//! attaching again by itself after the server restarts.

use std::sync::Arc;

use jetway_client::{Answer, Client, Failure, Message, ServeOptions, tonic::Code};
use jetway_testkit::eventually;
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
