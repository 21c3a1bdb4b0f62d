//! The limits of the two listeners and of what a call may carry: slow and idle connections are
//! closed, connections over a port's cap are refused, request messages and settlements have a size
//! limit, streaming calls a server-wide cap; and a client sending tiny messages at full speed on a
//! PublishStream or an Events stream keeps its connection.

use std::{collections::HashSet, io, net::SocketAddr, time::Duration};

use bytes::Bytes;
use jetway_api::{
    jetway::events::v1::{
        self as api, PublishBatchRequest, PublishStreamRequest, SubscribeRequest,
        publish_event_request, publish_result::Result as Outcome,
    },
    windshift::events::v1alpha1::{
        EventsRequest, events_request, events_response::Response as Resp,
    },
};
use jetway_server::config::Limits;
use jetway_testkit::eventually;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, codegen::http};

use crate::{
    clients::{self, typed},
    harness::{Env, RECV_GUARD, assert_status, subscribe},
};

/// The default limits with `change` applied: small enough for a test to reach them.
fn limits(change: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    change(&mut limits);
    limits
}

/// True once the peer has closed the connection that `try_read` reads (everything it sent read,
/// then its end, or a reset). Never waits.
fn closed(try_read: impl Fn(&mut [u8]) -> io::Result<usize>) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

async fn wait_closed(stream: &TcpStream, what: &str) {
    eventually(what, || async {
        closed(|buf| stream.try_read(buf)).then_some(())
    })
    .await;
}

/// A GET on a fresh connection: the status code, or `None` if the server closed it unanswered.
async fn try_http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    tokio::time::timeout(RECV_GUARD, stream.read_to_string(&mut response))
        .await
        .expect("an answer or the end within the guard")
        .ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A bare HTTP/2 client connection. Its task answers the server's pings and settings, as any
/// client does, and ends when the server closes the connection.
struct H2 {
    send: h2::client::SendRequest<Bytes>,
    connection: JoinHandle<()>,
}

impl H2 {
    /// Connects and shakes hands; `None` if the server closed the connection instead.
    async fn connect(addr: SocketAddr) -> Option<H2> {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let (send, connection) = h2::client::handshake(tcp).await.ok()?;
        let connection = tokio::spawn(async move {
            connection.await.ok();
        });
        // The server's SETTINGS arrive, or the connection ends.
        let send = tokio::time::timeout(RECV_GUARD, send.ready())
            .await
            .expect("ready or closed within the guard")
            .ok()?;
        let h2 = H2 { send, connection };
        // A refused connection ends without a word; one that is served answers a call.
        let mut probe = h2.send.clone();
        let answered = probe.call(HEALTH_CHECK).await.is_ok();
        answered.then_some(h2)
    }

    async fn wait_closed(&self, what: &str) {
        eventually(what, || async {
            self.connection.is_finished().then_some(())
        })
        .await;
    }
}

/// Starts a gRPC call to `path` with an empty request message, and returns the response body once
/// the response headers said 200: the call stays open until the body is dropped.
trait Call {
    async fn call(&mut self, path: &str) -> Result<h2::RecvStream, h2::Error>;
}

impl Call for h2::client::SendRequest<Bytes> {
    async fn call(&mut self, path: &str) -> Result<h2::RecvStream, h2::Error> {
        let request = http::Request::post(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut send = self.clone().ready().await?;
        let (response, mut body) = send.send_request(request, false)?;
        body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)?;
        let response = tokio::time::timeout(RECV_GUARD, response)
            .await
            .expect("response headers within the guard")?;
        assert_eq!(response.status(), 200, "a gRPC response");
        Ok(response.into_body())
    }
}

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

#[tokio::test]
async fn slow_and_idle_connections_on_the_health_port_are_closed() {
    let env = Env::start_with(limits(|l| {
        l.health_header_timeout = Duration::from_millis(300);
    }))
    .await;
    let addr = env.jetway.health_addr;

    // A header that grows by a byte every 50 ms, for as long as the connection lasts.
    let (slow, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
    let dripping = tokio::spawn(async move {
        writer
            .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            .await
            .ok();
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticks.tick().await;
            if writer.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    // A request line that never ends.
    let mut unfinished = TcpStream::connect(addr).await.unwrap();
    unfinished.write_all(b"GET /heal").await.unwrap();
    // A keep-alive connection that asks once, then says nothing.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the first request is answered");

    eventually("the dripping header is cut off", || async {
        closed(|buf| slow.try_read(buf)).then_some(())
    })
    .await;
    wait_closed(&unfinished, "the unfinished request line is closed").await;
    wait_closed(&idle, "the idle keep-alive connection is closed").await;
    eventually("the dripping client notices", || async {
        dripping.is_finished().then_some(())
    })
    .await;
    assert_eq!(
        try_http_status(addr, "/healthz").await,
        Some(200),
        "the port still serves"
    );
}

/// One address cannot hold more than its share of the health port, and a client that keeps a
/// connection busy (pipelining requests without reading answers, which the header timeout does not
/// bound) is closed after the connection lifetime.
#[tokio::test]
async fn one_address_holds_a_share_of_the_health_port_and_connections_live_a_bounded_time() {
    let env = Env::start_with(limits(|l| {
        l.health_header_timeout = Duration::from_millis(200);
    }))
    .await;
    let addr = env.jetway.health_addr;

    // A connection that pipelines requests and reads nothing, for as long as it lasts.
    let (hog, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
    let pipelining = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        loop {
            ticks.tick().await;
            let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
            if writer.write_all(request).await.is_err() {
                return;
            }
        }
    });
    eventually(
        "the busy connection is closed after its lifetime",
        || async { closed(|buf| hog.try_read(buf)).then_some(()) },
    )
    .await;
    pipelining.abort();

    // Loopback is one address: its share of idle connections fills, the next is refused although
    // the port as a whole has room, and a freed place is used again.
    let mut held = Vec::new();
    for _ in 0..jetway_server::infra::transport::HEALTH_MAX_CONNECTIONS_PER_ADDRESS {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        held.push(stream);
    }
    eventually(
        "one more connection from the address is refused",
        || async {
            try_http_status(addr, "/healthz")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    held.pop();
    eventually("a freed place is used again", || async {
        (try_http_status(addr, "/healthz").await == Some(200)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_grpc_connection_without_calls_is_closed_and_one_with_a_call_is_kept() {
    let env = Env::start_with(limits(|l| {
        l.grpc_idle_timeout = Duration::from_millis(300);
    }))
    .await;
    let addr = env.jetway.grpc_addr;

    // A call that stays open (a health Watch) on one connection...
    let mut busy = H2::connect(addr).await.expect("a connection");
    let watch = busy.send.call(HEALTH_WATCH).await.expect("a Watch call");
    // ...then a connection that shakes hands, answers pings, and never calls.
    let tcp = TcpStream::connect(addr).await.unwrap();
    // Held: an h2 client with no handle left closes its connection itself.
    let (_idle_handle, connection) = h2::client::handshake(tcp).await.unwrap();
    let idle = tokio::spawn(async move {
        connection.await.ok();
    });
    eventually("the connection without calls is closed", || async {
        idle.is_finished().then_some(())
    })
    .await;

    // The idle timeout has passed for the busy connection too, but its call keeps it open.
    assert!(
        !busy.connection.is_finished(),
        "a connection with a call stays"
    );
    let mut check = busy
        .send
        .call(HEALTH_CHECK)
        .await
        .expect("the busy connection still takes calls");
    let answer = tokio::time::timeout(RECV_GUARD, check.data()).await;
    assert!(matches!(answer, Ok(Some(Ok(_)))), "{answer:?}");
    // Once its last call ends, it is idle too.
    drop(watch);
    busy.wait_closed("the connection whose call ended is closed")
        .await;
}

#[tokio::test]
async fn connections_over_a_port_s_cap_are_closed_at_once() {
    let mut env = Env::start_with(limits(|l| {
        l.grpc_max_connections = 2;
        l.health_max_connections = 2;
    }))
    .await;

    // Health: two idle connections fill the port; a third is closed without an answer.
    let health = env.jetway.health_addr;
    let first = TcpStream::connect(health).await.unwrap();
    let second = TcpStream::connect(health).await.unwrap();
    eventually("a third health connection is refused", || async {
        (try_http_status(health, "/healthz").await.is_none()).then_some(())
    })
    .await;
    drop(first);
    eventually("a freed slot is used again", || async {
        (try_http_status(health, "/healthz").await == Some(200)).then_some(())
    })
    .await;
    drop(second);

    // gRPC: the environment's client holds one connection; one more fills the port.
    let grpc = env.jetway.grpc_addr;
    let held = eventually("the second gRPC connection is served", || H2::connect(grpc)).await;
    let refused = H2::connect(grpc).await;
    assert!(refused.is_none(), "a third gRPC connection is refused");
    env.stream("held", &["held.>"]).await;
    drop(held);
    eventually("a freed gRPC slot is used again", || H2::connect(grpc)).await;
}

/// A publish of `size` raw bytes.
fn raw_event(subject: &str, size: usize) -> api::PublishEventRequest {
    api::PublishEventRequest {
        subject: subject.into(),
        payload: Some(publish_event_request::Payload::Raw(api::RawPayload {
            data: vec![b'x'; size].into(),
            content_type: "text/plain".into(),
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn requests_over_the_message_size_limit_are_refused_naming_it() {
    let mut env = Env::start_with(limits(|l| l.grpc_max_message_bytes = 64 << 10)).await;
    env.stream("big", &["big.>"]).await;
    let mut client = clients::events(&env).await;

    // A batch of small events that is too large as a whole is refused before it is decoded.
    let batch = PublishBatchRequest {
        events: (0..100).map(|_| raw_event("big.batch", 1024)).collect(),
    };
    assert_status(
        client.publish_batch(batch).await,
        Code::ResourceExhausted,
        "GRPC_MAX_MESSAGE_BYTES",
    );
    assert_status(
        client.publish_event(raw_event("big.one", 65 << 10)).await,
        Code::ResourceExhausted,
        "GRPC_MAX_MESSAGE_BYTES",
    );
    // On a stream, the call ends with the same status.
    let requests = vec![PublishStreamRequest {
        correlation_id: 1,
        event: Some(raw_event("big.stream", 65 << 10)),
    }];
    let outcome = async {
        let mut responses = client
            .publish_stream(tokio_stream::iter(requests))
            .await?
            .into_inner();
        while responses.message().await?.is_some() {}
        Ok::<_, Status>(())
    };
    assert_status(
        outcome.await,
        Code::ResourceExhausted,
        "GRPC_MAX_MESSAGE_BYTES",
    );
    let mut session = env.open_events().await;
    session
        .send(events_request::Request::Ack(events_request::Ack {
            // About 100 KiB of ids.
            ids: (1..40_000).collect(),
        }))
        .await;
    assert_status(
        Err::<(), _>(session.expect_error().await),
        Code::ResourceExhausted,
        "GRPC_MAX_MESSAGE_BYTES",
    );

    // Under the limit, all is well.
    let batch = PublishBatchRequest {
        events: (0..10).map(|_| raw_event("big.batch", 1024)).collect(),
    };
    let results = client
        .publish_batch(batch)
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 10);
    assert_eq!(env.event_count("big").await, 10);
}

#[tokio::test]
async fn one_settlement_takes_at_most_10000_ids() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let consumer = env
        .consumer("orders", None, &["orders.>"], None, None)
        .await;
    let too_many: Vec<u64> = (1..=10_001).collect();
    let requests = [
        (
            "ack.ids",
            events_request::Request::Ack(events_request::Ack {
                ids: too_many.clone(),
            }),
        ),
        (
            "reject.ids",
            events_request::Request::Reject(events_request::Reject {
                ids: too_many.clone(),
                ..Default::default()
            }),
        ),
        (
            "ping.ids",
            events_request::Request::Ping(events_request::Ping {
                ids: too_many.clone(),
            }),
        ),
    ];
    for (field, request) in requests {
        let mut session = env.subscribe("orders", &consumer, None).await;
        session.send(request).await;
        assert_status(
            Err::<(), _>(session.expect_error().await),
            Code::InvalidArgument,
            &format!("{field}: must list at most 10000 ids"),
        );
    }
    // 10,000 is fine.
    let mut session = env.subscribe("orders", &consumer, None).await;
    let id = env.publish("orders.created", "one").await;
    assert_eq!(session.event().await.id, id);
    let mut ids: Vec<u64> = (100_000..109_999).collect();
    ids.push(id);
    let confirmation = session.ack(&ids).await;
    assert_eq!(confirmation.ids, vec![id]);
    assert_eq!(confirmation.invalid_ids.len(), 9_999);
}

#[tokio::test]
async fn streaming_calls_over_the_server_s_cap_are_refused_naming_it() {
    let mut env = Env::start_with(limits(|l| l.grpc_max_streaming_calls = 2)).await;
    env.stream("orders", &["orders.>"]).await;
    let consumer = env
        .consumer("orders", None, &["orders.>"], None, None)
        .await;
    let first = env.subscribe("orders", &consumer, None).await;
    // Another connection: the cap is the server's, not the connection's.
    let mut other = clients::events(&env).await;
    let live = other
        .subscribe(SubscribeRequest {
            subject: "orders.>".into(),
            stream: "orders".into(),
        })
        .await
        .expect("the second streaming call");

    let (tx, rx) = mpsc::channel(1);
    tx.send(EventsRequest {
        request: Some(subscribe("orders", &consumer, None)),
    })
    .await
    .unwrap();
    assert_status(
        env.client.events(ReceiverStream::new(rx)).await,
        Code::ResourceExhausted,
        "GRPC_MAX_STREAMING_CALLS",
    );
    assert_status(
        other
            .read_events(api::ReadEventsRequest {
                stream: "orders".into(),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "GRPC_MAX_STREAMING_CALLS",
    );
    // Unary calls are not streaming calls.
    env.publish("orders.created", "still served").await;

    drop(live);
    drop(first);
    eventually("a freed streaming slot is used again", || {
        let mut env_client = env.client.clone();
        let consumer = consumer.clone();
        async move {
            let (tx, rx) = mpsc::channel(1);
            tx.send(EventsRequest {
                request: Some(subscribe("orders", &consumer, None)),
            })
            .await
            .ok()?;
            let mut responses = env_client
                .events(ReceiverStream::new(rx))
                .await
                .ok()?
                .into_inner();
            match responses.message().await {
                Ok(Some(message)) => {
                    matches!(message.response, Some(Resp::Subscribed(_))).then_some(())
                }
                _ => None,
            }
        }
    })
    .await;
}

/// One connection holds at most its share (1/8) of the server's streaming calls: a client's few
/// connections cannot take every slot, and another connection is still served.
#[tokio::test]
async fn one_connection_holds_at_most_its_share_of_streaming_calls() {
    let mut env = Env::start_with(limits(|l| l.grpc_max_streaming_calls = 16)).await;
    let share = 16 / jetway_server::infra::transport::STREAMING_SHARE_OF_ONE_CONNECTION;
    env.stream("orders", &["orders.>"]).await;
    let mut first = clients::events(&env).await;
    let live = || SubscribeRequest {
        subject: "orders.>".into(),
        stream: "orders".into(),
    };
    let mut held = Vec::new();
    for _ in 0..share {
        held.push(first.subscribe(live()).await.expect("within the share"));
    }
    assert_status(
        first.subscribe(live()).await,
        Code::ResourceExhausted,
        "the most one connection may hold",
    );
    let mut second = clients::events(&env).await;
    second
        .subscribe(live())
        .await
        .expect("another connection is served");
    held.pop();
    eventually("a freed place on the connection is used again", || {
        let mut first = first.clone();
        async move { first.subscribe(live()).await.ok().map(drop) }
    })
    .await;
}

/// A publish of 8 raw bytes: the smallest event that is not empty.
fn tiny(i: u64) -> PublishStreamRequest {
    PublishStreamRequest {
        correlation_id: i,
        event: Some(api::PublishEventRequest {
            subject: "tiny.x".into(),
            payload: Some(publish_event_request::Payload::Raw(api::RawPayload {
                data: i.to_le_bytes().to_vec().into(),
                content_type: String::new(),
            })),
            ..Default::default()
        }),
    }
}

// Two worker threads: the client writes while the server reads, as between two processes. On one
// thread they would take turns, and the server would never fall behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_stream_of_10000_tiny_events_at_full_speed_is_answered_in_full() {
    let mut env = Env::start().await;
    env.stream("tiny", &["tiny.>"]).await;
    let mut client = clients::events(&env).await;
    let total = 10_000u64;
    // One request at a time, as a client sends them when it has them: each goes out in an HTTP/2
    // frame of its own (tonic packs requests that are ready together into one).
    let (tx, rx) = mpsc::channel(1);
    let producer = tokio::spawn(async move {
        for i in 0..total {
            if tx.send(tiny(i)).await.is_err() {
                break;
            }
        }
    });
    let mut responses = client
        .publish_stream(ReceiverStream::new(rx))
        .await
        .expect("open a PublishStream")
        .into_inner();
    let mut answered = HashSet::new();
    loop {
        let message = tokio::time::timeout(RECV_GUARD, responses.message())
            .await
            .expect("an answer within the guard");
        match message {
            Ok(Some(response)) => {
                let outcome = response.result.and_then(|r| r.result);
                assert!(
                    matches!(outcome, Some(Outcome::Published(_))),
                    "{outcome:?}"
                );
                answered.insert(response.correlation_id);
            }
            Ok(None) => break,
            Err(status) => panic!(
                "the stream failed after {} answers: {status:?}",
                answered.len()
            ),
        }
    }
    producer.await.unwrap();
    assert_eq!(answered.len() as u64, total, "every request is answered");
    assert_eq!(env.event_count("tiny").await, total);
    // The connection is the one the stream used, still up.
    clients::publish(&mut client, typed("tiny.after", "after")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_5000_events_one_at_a_time_as_they_arrive_keeps_the_stream() {
    let mut env = Env::start().await;
    env.stream("tiny", &["tiny.>"]).await;
    let consumer = env.consumer("tiny", None, &["tiny.>"], None, None).await;
    let total = 5_000u64;
    let mut client = clients::events(&env).await;
    let mut published = client
        .publish_stream(tokio_stream::iter((0..total).map(tiny)))
        .await
        .unwrap()
        .into_inner();
    while published.message().await.unwrap().is_some() {}

    let (tx, rx) = mpsc::channel(1);
    tx.send(EventsRequest {
        request: Some(subscribe("tiny", &consumer, Some(1000))),
    })
    .await
    .unwrap();
    let mut responses = env
        .client
        .events(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let (mut delivered, mut acked) = (HashSet::new(), HashSet::new());
    while (acked.len() as u64) < total {
        let message = tokio::time::timeout(RECV_GUARD, responses.message())
            .await
            .expect("a response within the guard");
        match message.map(|m| m.and_then(|m| m.response)) {
            Ok(Some(Resp::Subscribed(_))) => {}
            Ok(Some(Resp::Event(event))) => {
                delivered.insert(event.id);
                let ack = events_request::Ack {
                    ids: vec![event.id],
                };
                tx.send(EventsRequest {
                    request: Some(events_request::Request::Ack(ack)),
                })
                .await
                .expect("the stream takes the ack");
            }
            Ok(Some(Resp::AckConfirmation(confirmation))) => {
                assert!(confirmation.invalid_ids.is_empty(), "{confirmation:?}");
                assert!(
                    confirmation.temporary_failed_ids.is_empty(),
                    "{confirmation:?}"
                );
                acked.extend(confirmation.ids);
            }
            other => panic!(
                "after {} events and {} acks: {other:?}",
                delivered.len(),
                acked.len()
            ),
        }
    }
    assert_eq!(
        delivered.len() as u64,
        total,
        "every event was delivered once"
    );
    env.consumer_info_until("tiny", &consumer, "every ack reached JetStream", |info| {
        info.ack_floor.stream_sequence == total && info.num_ack_pending == 0
    })
    .await;
}
