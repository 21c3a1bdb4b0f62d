//! Request/reply (`jetway.requests.v1`): requests from Jetway and plain NATS requesters, answered by
//! processors attached over Respond and by plain NATS responders, and every failure's status: no
//! responder, timeout (and the late answer dropped and counted), a processor leaving, full
//! processors, shutdown, and bad input naming its field.

use std::collections::HashMap;

use async_nats::service::ServiceExt;
use futures::StreamExt;
use jetway_api::jetway::requests::v1::{
    self as api, answer::Result as AnswerResult, request_response::Answer as ResponseAnswer,
    request_service_client::RequestServiceClient, respond_request::Message as Inbound,
    respond_response::Message as Outbound,
};
use jetway_server::config::Limits;
use jetway_testkit::eventually;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming, transport::Channel};

use crate::harness::{Env, RECV_GUARD, assert_status, http_get};

type Client = RequestServiceClient<Channel>;

async fn client(env: &Env) -> Client {
    RequestServiceClient::new(env.jetway.channel().await)
}

/// A processor attached over Respond, as a test drives it.
struct Processor {
    tx: mpsc::Sender<api::RespondRequest>,
    responses: Streaming<api::RespondResponse>,
    attached: api::Attached,
}

fn attach_message(subjects: &[&str], queue_group: Option<&str>, max: u32) -> api::RespondRequest {
    api::RespondRequest {
        message: Some(Inbound::Attach(api::Attach {
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            queue_group: queue_group.map(str::to_owned),
            max_in_flight: max,
        })),
    }
}

/// Opens a Respond stream, sends `first`, and returns the stream once the server answered it.
async fn open(client: &mut Client, first: api::RespondRequest) -> Result<Processor, Status> {
    let (tx, rx) = mpsc::channel(64);
    tx.send(first).await.unwrap();
    let mut responses = client.respond(ReceiverStream::new(rx)).await?.into_inner();
    let first = tokio::time::timeout(RECV_GUARD, responses.message())
        .await
        .expect("the first answer within the guard time")?;
    match first.and_then(|r| r.message) {
        Some(Outbound::Attached(attached)) => Ok(Processor {
            tx,
            responses,
            attached,
        }),
        other => panic!("expected attached, got {other:?}"),
    }
}

async fn attach(
    client: &mut Client,
    subjects: &[&str],
    queue: Option<&str>,
    max: u32,
) -> Processor {
    open(client, attach_message(subjects, queue, max))
        .await
        .expect("attach")
}

impl Processor {
    /// The next request handed to the processor.
    async fn request(&mut self) -> api::IncomingRequest {
        let next = tokio::time::timeout(RECV_GUARD, self.responses.message())
            .await
            .expect("a request within the guard time")
            .expect("the stream did not fail")
            .expect("the stream did not end");
        match next.message {
            Some(Outbound::Request(request)) => request,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    async fn answer(&self, id: u64, result: AnswerResult) {
        self.tx
            .send(api::RespondRequest {
                message: Some(Inbound::Answer(api::Answer {
                    id,
                    result: Some(result),
                })),
            })
            .await
            .unwrap();
    }

    async fn reply(&self, id: u64, data: &[u8]) {
        self.answer(
            id,
            AnswerResult::Reply(api::Reply {
                data: data.to_vec().into(),
                ..Default::default()
            }),
        )
        .await;
    }

    /// How the stream ended, reading past anything still sent.
    async fn end(mut self) -> Result<(), Status> {
        drop(self.tx);
        loop {
            match tokio::time::timeout(RECV_GUARD, self.responses.message())
                .await
                .expect("the end within the guard time")?
            {
                Some(_) => continue,
                None => return Ok(()),
            }
        }
    }
}

fn request(subject: &str, data: &[u8]) -> api::RequestRequest {
    api::RequestRequest {
        subject: subject.into(),
        data: data.to_vec().into(),
        timeout: Some(std::time::Duration::from_secs(60).into()),
        ..Default::default()
    }
}

fn timeout(request: api::RequestRequest, timeout: std::time::Duration) -> api::RequestRequest {
    api::RequestRequest {
        timeout: Some(timeout.into()),
        ..request
    }
}

/// Sends a request from a task of its own; the handle gives its outcome.
fn send(
    client: &Client,
    request: api::RequestRequest,
) -> JoinHandle<Result<api::RequestResponse, Status>> {
    let mut client = client.clone();
    tokio::spawn(async move { client.request(request).await.map(|r| r.into_inner()) })
}

/// The outcome of a sent request, within the guard time: a hang is a failure, not a slow answer.
async fn outcome(
    handle: JoinHandle<Result<api::RequestResponse, Status>>,
) -> Result<api::RequestResponse, Status> {
    tokio::time::timeout(RECV_GUARD, handle)
        .await
        .expect("an answer within the guard time")
        .unwrap()
}

#[track_caller]
fn reply_of(response: Result<api::RequestResponse, Status>) -> api::Reply {
    match response.expect("an answer").answer {
        Some(ResponseAnswer::Reply(reply)) => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_processor_answers_with_a_reply_no_content_or_a_status() {
    let env = Env::start().await;
    let mut client = client(&env).await;
    let mut processor = attach(&mut client, &["svc.*"], None, 4).await;
    assert_eq!(processor.attached.queue_group, "svc.*");
    assert_eq!(processor.attached.max_in_flight, 4);

    let asked = send(
        &client,
        api::RequestRequest {
            content_type: "text/plain".into(),
            headers: headers(&[("x-tenant", "acme")]),
            ..request("svc.echo", b"ping")
        },
    );
    let incoming = processor.request().await;
    assert_eq!(incoming.subject, "svc.echo");
    assert_eq!(&incoming.data[..], b"ping");
    assert_eq!(incoming.content_type, "text/plain");
    assert_eq!(incoming.headers, headers(&[("x-tenant", "acme")]));
    let left = incoming.timeout.expect("the requester's timeout");
    assert!(left.seconds <= 60, "{left:?}");
    processor
        .answer(
            incoming.id,
            AnswerResult::Reply(api::Reply {
                data: b"pong".to_vec().into(),
                content_type: "text/plain".into(),
                headers: headers(&[("x-served-by", "p1")]),
            }),
        )
        .await;
    let reply = reply_of(outcome(asked).await);
    assert_eq!(&reply.data[..], b"pong");
    assert_eq!(reply.content_type, "text/plain");
    assert_eq!(reply.headers, headers(&[("x-served-by", "p1")]));

    let asked = send(&client, request("svc.store", b"x"));
    let incoming = processor.request().await;
    processor
        .answer(incoming.id, AnswerResult::NoContent(api::NoContent {}))
        .await;
    let answer = outcome(asked).await.unwrap().answer;
    assert_eq!(answer, Some(ResponseAnswer::NoContent(api::NoContent {})));

    let asked = send(&client, request("svc.lookup", b"order-9"));
    let incoming = processor.request().await;
    processor
        .answer(
            incoming.id,
            AnswerResult::Error(api::AnswerError {
                code: Code::NotFound as i32,
                message: "no order order-9".into(),
            }),
        )
        .await;
    assert_status(outcome(asked).await, Code::NotFound, "no order order-9");
}

#[tokio::test]
async fn no_responder_is_unavailable_at_once() {
    let env = Env::start().await;
    let client = client(&env).await;
    // The timeout is far beyond the guard time: only NATS's no-responders answer ends this call.
    let asked = send(
        &client,
        timeout(
            request("nobody.home", b"?"),
            std::time::Duration::from_secs(600),
        ),
    );
    assert_status(
        outcome(asked).await,
        Code::Unavailable,
        "no responder for subject nobody.home",
    );
}

/// The value of `name` (a series without labels) on `/metrics`.
async fn metric(env: &Env, name: &str) -> f64 {
    let (_, metrics) = http_get(env.jetway.health_addr(), "/metrics").await;
    metrics
        .lines()
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_timeout_is_deadline_exceeded_and_the_late_answer_is_dropped_and_counted() {
    let env = Env::start().await;
    let mut client = client(&env).await;
    let mut processor = attach(&mut client, &["slow"], None, 1).await;
    let asked = send(
        &client,
        timeout(request("slow", b"1"), std::time::Duration::from_millis(200)),
    );
    let incoming = processor.request().await;
    assert_status(
        outcome(asked).await,
        Code::DeadlineExceeded,
        "no answer on subject slow",
    );

    // The call's own deadline bounds the wait too, when it sets no timeout.
    let mut call = tonic::Request::new(api::RequestRequest {
        timeout: None,
        ..request("slow", b"2")
    });
    call.set_timeout(std::time::Duration::from_secs(1));
    let mut deadline_client = client.clone();
    let result = tokio::time::timeout(RECV_GUARD, deadline_client.request(call))
        .await
        .expect("an answer within the guard time");
    assert_eq!(result.unwrap_err().code(), Code::DeadlineExceeded);

    let late_before = metric(&env, "jetway_request_late_replies_total").await;
    processor.reply(incoming.id, b"too late").await;
    eventually("the late answer is counted", || async {
        (metric(&env, "jetway_request_late_replies_total").await > late_before).then_some(())
    })
    .await;
    // The processor is still usable: it answers the next request. The second request above waited
    // in the group for a free slot; once expired it is dropped, but it may still be handed over
    // first if its wait has not quite run out.
    let asked = send(&client, request("slow", b"3"));
    let incoming = loop {
        let incoming = processor.request().await;
        if &incoming.data[..] == b"3" {
            break incoming;
        }
        processor.reply(incoming.id, b"late too").await;
    };
    processor.reply(incoming.id, b"on time").await;
    assert_eq!(&reply_of(outcome(asked).await).data[..], b"on time");
}

#[tokio::test]
async fn a_processor_that_leaves_fails_its_held_requests_at_once() {
    let env = Env::start().await;
    let mut client = client(&env).await;
    let mut processor = attach(&mut client, &["held.*"], None, 2).await;
    let first = send(&client, request("held.a", b"1"));
    let second = send(&client, request("held.b", b"2"));
    processor.request().await;
    processor.request().await;
    // The client goes away without a word: its stream is dropped, not closed.
    drop(processor);
    // Each request waits up to 60 s; only the processor leaving ends them within the guard time.
    for asked in [first, second] {
        assert_status(outcome(asked).await, Code::Unavailable, "processor");
    }
    // Nobody serves the subject any more.
    assert_status(
        outcome(send(&client, request("held.c", b"3"))).await,
        Code::Unavailable,
        "no responder for subject held.c",
    );
}

#[tokio::test]
async fn a_full_processor_takes_no_more_and_its_group_shares_the_work() {
    // One request may wait for the group: that makes "takes no more" visible, as a refusal.
    let env = Env::start_with(Limits {
        respond_max_waiting: 1,
        ..Limits::default()
    })
    .await;
    let mut client = client(&env).await;
    let mut one = attach(&mut client, &["work"], None, 1).await;
    let mut two = attach(&mut client, &["work"], None, 1).await;

    let first = send(&client, request("work", b"first"));
    // Whichever processor took the first request is full: the second goes to the other one.
    let second = send(&client, request("work", b"second"));
    let (a, b) = tokio::join!(one.request(), two.request());
    let mut data = [a.data.clone(), b.data.clone()];
    data.sort();
    assert_eq!(data, [&b"first"[..], &b"second"[..]]);

    // Both are full, so neither takes a third or fourth request: one of them waits for a free
    // slot, and the other finds the wait queue (of one) full.
    let (third, fourth) = (
        send(&client, request("work", b"more")),
        send(&client, request("work", b"more")),
    );
    let first_done = tokio::time::timeout(RECV_GUARD, futures::future::select(third, fourth))
        .await
        .expect("one of them is refused within the guard time");
    let (refused, waiting) = match first_done {
        futures::future::Either::Left((refused, fourth)) => (refused, fourth),
        futures::future::Either::Right((refused, third)) => (refused, third),
    };
    assert_status(
        refused.unwrap(),
        Code::ResourceExhausted,
        "RESPOND_MAX_WAITING",
    );
    // The waiting one goes to the first processor with a free slot.
    one.reply(a.id, b"done").await;
    let c = one.request().await;
    assert_eq!(&c.data[..], b"more");
    two.reply(b.id, b"done").await;
    one.reply(c.id, b"done").await;
    for asked in [first, second, waiting] {
        assert_eq!(&reply_of(outcome(asked).await).data[..], b"done");
    }
}

#[tokio::test]
async fn requests_beyond_the_wait_bound_are_resource_exhausted() {
    let env = Env::start_with(Limits {
        respond_max_waiting: 1,
        ..Limits::default()
    })
    .await;
    let mut client = client(&env).await;
    let mut processor = attach(&mut client, &["busy"], Some("workers"), 1).await;
    let held = send(&client, request("busy", b"held"));
    let incoming = processor.request().await;
    // The processor is full; one of these two waits, the other finds the wait queue full.
    let (one, two) = (
        send(&client, request("busy", b"one")),
        send(&client, request("busy", b"two")),
    );
    let first_done = tokio::time::timeout(RECV_GUARD, futures::future::select(one, two))
        .await
        .expect("one of them is refused within the guard time");
    let (refused, waiting) = match first_done {
        futures::future::Either::Left((refused, two)) => (refused, two),
        futures::future::Either::Right((refused, one)) => (refused, one),
    };
    assert_status(
        refused.unwrap(),
        Code::ResourceExhausted,
        "RESPOND_MAX_WAITING",
    );
    processor.reply(incoming.id, b"1").await;
    assert_eq!(&reply_of(outcome(held).await).data[..], b"1");
    let next = processor.request().await;
    processor.reply(next.id, b"2").await;
    assert_eq!(&reply_of(outcome(waiting).await).data[..], b"2");
}

#[tokio::test]
async fn at_shutdown_held_requests_are_answered_or_fail_and_the_stream_ends_unavailable() {
    let env = Env::start().await;
    let mut client = client(&env).await;
    let mut processor = attach(&mut client, &["closing.*"], None, 2).await;
    // The requester is a plain NATS client: the Jetway server's own unary calls end with it.
    let nats = async_nats::connect(env.nats.url()).await.unwrap();
    let ask = |subject: &'static str| {
        let nats = nats.clone();
        tokio::spawn(async move {
            let request = async_nats::Request::new()
                .payload("x".into())
                .timeout(Some(std::time::Duration::from_secs(60)));
            nats.send_request(subject, request).await
        })
    };
    let answered = ask("closing.answered");
    let abandoned = ask("closing.abandoned");
    let (a, b) = (processor.request().await, processor.request().await);
    let answer_id = if a.subject == "closing.answered" {
        a.id
    } else {
        b.id
    };
    env.jetway.begin_shutdown();
    processor.reply(answer_id, b"in time").await;
    let reply = tokio::time::timeout(RECV_GUARD, answered)
        .await
        .unwrap()
        .unwrap()
        .expect("the answered request gets its reply");
    assert_eq!(&reply.payload[..], b"in time");
    let failed = tokio::time::timeout(RECV_GUARD, abandoned)
        .await
        .unwrap()
        .unwrap()
        .expect("an answer");
    let headers = failed.headers.expect("error headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").unwrap().as_str(),
        "14"
    );
    let end = processor.end().await;
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let env = Env::start().await;
    let mut client = client(&env).await;
    let _processor = attach(&mut client, &["big"], None, 1).await;
    assert_status(
        client.request(request("big", &vec![0; 2 << 20])).await,
        Code::InvalidArgument,
        "data: ",
    );
    assert_status(
        client.request(request("bad..subject", b"")).await,
        Code::InvalidArgument,
        "subject: ",
    );
    assert_status(
        client.request(request("wild.*", b"")).await,
        Code::InvalidArgument,
        "subject: ",
    );
    assert_status(
        client
            .request(api::RequestRequest {
                headers: headers(&[("Nats-Msg-Id", "1")]),
                ..request("big", b"")
            })
            .await,
        Code::InvalidArgument,
        "headers[\"Nats-Msg-Id\"]",
    );
    assert_status(
        open(&mut client, attach_message(&[], None, 1))
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "attach.subjects",
    );
    assert_status(
        open(&mut client, attach_message(&["ok", "bad subject"], None, 1))
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "attach.subjects[1]",
    );
    assert_status(
        open(&mut client, attach_message(&["ok"], None, 1_000_000))
            .await
            .map(|_| ()),
        Code::ResourceExhausted,
        "RESPOND_MAX_IN_FLIGHT",
    );
    let answer_first = api::RespondRequest {
        message: Some(Inbound::Answer(api::Answer {
            id: 1,
            result: Some(AnswerResult::NoContent(api::NoContent {})),
        })),
    };
    assert_status(
        open(&mut client, answer_first).await.map(|_| ()),
        Code::InvalidArgument,
        "attach",
    );
    // A status code a processor may not send ends its stream, naming the field.
    let mut processor = attach(&mut client, &["codes"], None, 1).await;
    let asked = send(&client, request("codes", b""));
    let incoming = processor.request().await;
    processor
        .answer(
            incoming.id,
            AnswerResult::Error(api::AnswerError {
                code: Code::DeadlineExceeded as i32,
                message: "no".into(),
            }),
        )
        .await;
    assert_status(
        processor.end().await,
        Code::InvalidArgument,
        "answer.error.code",
    );
    assert_status(outcome(asked).await, Code::Unavailable, "processor");
}

#[tokio::test]
async fn a_plain_nats_requester_reaches_a_jetway_processor_with_headers_both_ways() {
    let env = Env::start().await;
    let mut client = client(&env).await;
    let mut processor = attach(&mut client, &["interop.>"], None, 1).await;
    let nats = async_nats::connect(env.nats.url()).await.unwrap();
    let asked = tokio::spawn({
        let nats = nats.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("x-from", "nats");
            headers.insert("Content-Type", "application/json");
            nats.request_with_headers("interop.a.b", headers, "{}".into())
                .await
        }
    });
    let incoming = processor.request().await;
    assert_eq!(incoming.subject, "interop.a.b");
    assert_eq!(incoming.content_type, "application/json");
    assert_eq!(incoming.headers, headers(&[("x-from", "nats")]));
    // A plain requester says nothing about its timeout.
    assert_eq!(incoming.timeout, None);
    processor
        .answer(
            incoming.id,
            AnswerResult::Reply(api::Reply {
                data: b"[]".to_vec().into(),
                content_type: "application/json".into(),
                headers: headers(&[("x-from", "jetway")]),
            }),
        )
        .await;
    let reply = tokio::time::timeout(RECV_GUARD, asked)
        .await
        .unwrap()
        .unwrap()
        .expect("a reply");
    assert_eq!(&reply.payload[..], b"[]");
    let reply_headers = reply.headers.expect("headers");
    assert_eq!(reply_headers.get("x-from").unwrap().as_str(), "jetway");
    assert_eq!(
        reply_headers.get("Content-Type").unwrap().as_str(),
        "application/json"
    );
}

#[tokio::test]
async fn a_jetway_requester_reaches_plain_nats_responders_and_services() {
    let env = Env::start().await;
    let client = client(&env).await;
    let nats = async_nats::connect(env.nats.url()).await.unwrap();

    // A plain responder: subscribes and answers with headers.
    let mut subscriber = nats.subscribe("plain.echo").await.unwrap();
    let responder = tokio::spawn({
        let nats = nats.clone();
        async move {
            let message = subscriber.next().await.unwrap();
            let seen = message.headers.clone().unwrap();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("x-seen", seen.get("x-from").unwrap().as_str());
            nats.publish_with_headers(message.reply.unwrap(), headers, message.payload)
                .await
                .unwrap();
        }
    });
    let reply = eventually("the plain responder answers", || {
        let asked = send(
            &client,
            api::RequestRequest {
                headers: headers(&[("x-from", "jetway")]),
                ..request("plain.echo", b"hello")
            },
        );
        async move { outcome(asked).await.ok() }
    })
    .await;
    responder.await.unwrap();
    let reply = match reply.answer {
        Some(ResponseAnswer::Reply(reply)) => reply,
        other => panic!("expected a reply, got {other:?}"),
    };
    assert_eq!(&reply.data[..], b"hello");
    assert_eq!(reply.headers, headers(&[("x-seen", "jetway")]));

    // A NATS services endpoint: a reply, and an error in the services convention.
    let service = nats
        .service_builder()
        .start("calculator", "1.0.0")
        .await
        .unwrap();
    let mut endpoint = service.endpoint("calc.double").await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let response = match std::str::from_utf8(&request.message.payload)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
            {
                Some(n) => Ok((n * 2).to_string().into()),
                None => Err(async_nats::service::error::Error {
                    status: "not a number".into(),
                    code: 400,
                }),
            };
            request.respond(response).await.unwrap();
        }
    });
    let reply = eventually("the service answers", || {
        let asked = send(&client, request("calc.double", b"21"));
        async move { outcome(asked).await.ok() }
    })
    .await;
    match reply.answer {
        Some(ResponseAnswer::Reply(reply)) => assert_eq!(&reply.data[..], b"42"),
        other => panic!("expected a reply, got {other:?}"),
    }
    assert_status(
        outcome(send(&client, request("calc.double", b"x"))).await,
        Code::Unknown,
        "the responder failed with code 400: not a number",
    );
}

/// The value of one series on `/metrics`, written exactly as the exporter writes it.
async fn series(env: &Env, series: &str) -> f64 {
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
async fn metrics_count_requests_by_outcome_and_processors_by_subject() {
    let env = Env::start().await;
    let mut client = client(&env).await;
    let active = r#"jetway_request_processors_active{subject="metered.*"}"#;
    let outcomes = ["ok", "no_responders", "timeout", "error"];
    let mut before = Vec::new();
    for outcome in outcomes {
        before.push(
            series(
                &env,
                &format!(r#"jetway_requests_total{{outcome="{outcome}"}}"#),
            )
            .await,
        );
    }
    let latencies = series(&env, "jetway_request_duration_seconds_count").await;

    let mut one = attach(&mut client, &["metered.*"], None, 1).await;
    let two = attach(&mut client, &["metered.*"], None, 1).await;
    assert_eq!(series(&env, active).await, 2.0);

    drop(two);
    eventually("one processor left on the subject", || async {
        (series(&env, active).await == 1.0).then_some(())
    })
    .await;
    let asked = send(&client, request("metered.ok", b""));
    let incoming = one.request().await;
    one.reply(incoming.id, b"").await;
    reply_of(outcome(asked).await);
    let asked = send(&client, request("metered.error", b""));
    let incoming = one.request().await;
    one.answer(
        incoming.id,
        AnswerResult::Error(api::AnswerError {
            code: Code::Aborted as i32,
            message: "no".into(),
        }),
    )
    .await;
    assert_status(outcome(asked).await, Code::Aborted, "no");
    let asked = send(
        &client,
        timeout(
            request("metered.slow", b""),
            std::time::Duration::from_millis(100),
        ),
    );
    one.request().await;
    assert_eq!(
        outcome(asked).await.unwrap_err().code(),
        Code::DeadlineExceeded
    );
    drop(one);
    eventually("no processor left on the subject", || async {
        (series(&env, active).await == 0.0).then_some(())
    })
    .await;
    // NATS answers "no responders" once it has handled the unsubscription.
    eventually("no responder for the subject", || {
        let asked = send(&client, request("metered.gone", b""));
        async move {
            let status = outcome(asked).await.unwrap_err();
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            (status.message() == "no responder for subject metered.gone").then_some(())
        }
    })
    .await;

    for (outcome, before) in outcomes.into_iter().zip(before) {
        let now = series(
            &env,
            &format!(r#"jetway_requests_total{{outcome="{outcome}"}}"#),
        )
        .await;
        assert!(now > before, "{outcome}: {before} -> {now}");
    }
    assert!(series(&env, "jetway_request_duration_seconds_count").await >= latencies + 4.0);
}

/// A RequestStream, as a test drives it.
struct RequestStream {
    tx: mpsc::Sender<api::RequestStreamRequest>,
    answers: Streaming<api::RequestStreamResponse>,
}

impl RequestStream {
    async fn open(client: &mut Client) -> RequestStream {
        let (tx, rx) = mpsc::channel(64);
        let answers = client
            .request_stream(ReceiverStream::new(rx))
            .await
            .expect("RequestStream opens")
            .into_inner();
        RequestStream { tx, answers }
    }

    async fn send(&self, id: u64, request: Option<api::RequestRequest>) {
        self.tx
            .send(api::RequestStreamRequest {
                id,
                request,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// The next answer: its id, and the answer or the status.
    async fn next(&mut self) -> (u64, Result<api::RequestResponse, Status>) {
        let answer = tokio::time::timeout(RECV_GUARD, self.answers.message())
            .await
            .expect("an answer within the guard time")
            .expect("the stream did not fail")
            .expect("the stream did not end");
        let result = match answer.result {
            Some(api::request_stream_response::Result::Answer(answer)) => Ok(answer),
            Some(api::request_stream_response::Result::Error(error)) => {
                Err(Status::new(Code::from_i32(error.code), error.message))
            }
            None => panic!("an answer without a result"),
        };
        (answer.id, result)
    }

    /// Half-closes the stream; how it ended, reading past any answer still sent.
    async fn end(self) -> Result<(), Status> {
        let RequestStream { tx, mut answers } = self;
        drop(tx);
        loop {
            match tokio::time::timeout(RECV_GUARD, answers.message())
                .await
                .expect("the end within the guard time")?
            {
                Some(_) => continue,
                None => return Ok(()),
            }
        }
    }
}

#[tokio::test]
async fn a_request_stream_answers_each_request_by_its_id_and_a_failure_fails_only_its_own() {
    let env = Env::start().await;
    let mut client = client(&env).await;
    let mut processor = attach(&mut client, &["svc.*"], None, 16).await;
    let mut stream = RequestStream::open(&mut client).await;
    let invalid_before = series(&env, r#"jetway_requests_total{outcome="invalid"}"#).await;

    // Five requests in flight together, answered by the processor in reverse order.
    for id in 1..=5u64 {
        stream
            .send(id, Some(request("svc.echo", format!("r{id}").as_bytes())))
            .await;
    }
    let mut incoming = Vec::new();
    for _ in 0..5 {
        incoming.push(processor.request().await);
    }
    // Failures among them: no responder, a processor's error, a timeout, bad input, no request.
    stream.send(6, Some(request("nobody.home", b"?"))).await;
    stream
        .send(7, Some(request("svc.lookup", b"order-9")))
        .await;
    let failing = processor.request().await;
    stream
        .send(
            8,
            Some(timeout(
                request("svc.slow", b"late"),
                std::time::Duration::from_millis(200),
            )),
        )
        .await;
    let slow = processor.request().await;
    stream.send(9, Some(request("bad..subject", b""))).await;
    stream.send(10, None).await;
    processor
        .answer(
            failing.id,
            AnswerResult::Error(api::AnswerError {
                code: Code::NotFound as i32,
                message: "no order order-9".into(),
            }),
        )
        .await;
    for request in incoming.iter().rev() {
        let mut data = b"re: ".to_vec();
        data.extend_from_slice(&request.data);
        processor.reply(request.id, &data).await;
    }

    let mut answers = HashMap::new();
    for _ in 0..10 {
        let (id, result) = stream.next().await;
        assert!(answers.insert(id, result).is_none(), "{id} answered twice");
    }
    for id in 1..=5u64 {
        let reply = reply_of(answers.remove(&id).unwrap());
        assert_eq!(
            reply.data,
            format!("re: r{id}").into_bytes(),
            "request {id}"
        );
    }
    // The statuses unary Request gives, word for word.
    let unary = client.request(request("nobody.home", b"?")).await;
    assert_eq!(
        unary.as_ref().unwrap_err().message(),
        "no responder for subject nobody.home"
    );
    assert_status(
        answers.remove(&6).unwrap(),
        Code::Unavailable,
        unary.unwrap_err().message(),
    );
    assert_status(
        answers.remove(&7).unwrap(),
        Code::NotFound,
        "no order order-9",
    );
    assert_status(
        answers.remove(&8).unwrap(),
        Code::DeadlineExceeded,
        "no answer on subject svc.slow",
    );
    let unary = client.request(request("bad..subject", b"")).await;
    let invalid = answers.remove(&9).unwrap().unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(invalid.message(), unary.unwrap_err().message());
    assert!(invalid.message().starts_with("subject: "), "{invalid:?}");
    assert_status(
        answers.remove(&10).unwrap(),
        Code::InvalidArgument,
        "request: ",
    );
    // Counted as unary requests are: two invalid ones here.
    assert!(
        series(&env, r#"jetway_requests_total{outcome="invalid"}"#).await >= invalid_before + 2.0
    );

    // The stream goes on after its failures, and the late answer is dropped.
    processor.reply(slow.id, b"too late").await;
    stream.send(11, Some(request("svc.echo", b"again"))).await;
    let next = processor.request().await;
    processor.reply(next.id, b"again").await;
    let (id, result) = stream.next().await;
    assert_eq!(id, 11);
    assert_eq!(&reply_of(result).data[..], b"again");
    stream.end().await.expect("a half-closed stream ends OK");
}

#[tokio::test]
async fn a_request_stream_refuses_requests_beyond_its_in_flight_limit() {
    let env = Env::start_with(Limits {
        request_stream_max_in_flight: 2,
        ..Limits::default()
    })
    .await;
    let mut client = client(&env).await;
    let mut processor = attach(&mut client, &["held"], None, 8).await;
    let mut stream = RequestStream::open(&mut client).await;
    stream.send(1, Some(request("held", b"1"))).await;
    stream.send(2, Some(request("held", b"2"))).await;
    let first = processor.request().await;
    processor.request().await;
    stream.send(3, Some(request("held", b"3"))).await;
    let (id, refused) = stream.next().await;
    assert_eq!(id, 3);
    assert_status(
        refused,
        Code::ResourceExhausted,
        "2 requests of this stream are in flight already (REQUEST_STREAM_MAX_IN_FLIGHT)",
    );
    // An answer makes room again.
    processor.reply(first.id, b"one").await;
    let (id, answer) = stream.next().await;
    assert_eq!((id, &reply_of(answer).data[..]), (1, &b"one"[..]));
    stream.send(4, Some(request("held", b"4"))).await;
    let fourth = processor.request().await;
    assert_eq!(&fourth.data[..], b"4");
    processor.reply(fourth.id, b"four").await;
    let (id, answer) = stream.next().await;
    assert_eq!((id, &reply_of(answer).data[..]), (4, &b"four"[..]));
}

#[tokio::test]
async fn a_request_stream_reusing_an_id_in_flight_ends_invalid_naming_it() {
    let env = Env::start().await;
    let mut client = client(&env).await;
    let mut processor = attach(&mut client, &["dup"], None, 4).await;
    let mut stream = RequestStream::open(&mut client).await;
    stream.send(1, Some(request("dup", b"a"))).await;
    let held = processor.request().await;
    stream.send(1, Some(request("dup", b"b"))).await;
    // What was read is still answered, then the stream ends.
    processor.reply(held.id, b"a").await;
    let (id, answer) = stream.next().await;
    assert_eq!((id, &reply_of(answer).data[..]), (1, &b"a"[..]));
    assert_status(
        stream.end().await,
        Code::InvalidArgument,
        "id: 1 is the id of a request still in flight",
    );
}
