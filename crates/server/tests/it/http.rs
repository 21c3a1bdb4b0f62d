//! The HTTP/JSON API through a real HTTP client (hyper's) against a real nats-server: publishing
//! one event and batches, range reads and one event by id, live SSE with a resume after a dropped
//! connection, and the error shape and status of each failure; CORS, gzip both ways, trace context
//! and request metrics around every route.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, body::Incoming, header::HeaderMap};
use hyper_util::rt::TokioIo;
use jetway_server::{
    config::Limits,
    http::cors::{AllowedOrigins, Cors},
};
use serde_json::{Value, json};

use crate::harness::{Env, RECV_GUARD, TestServer};

mod admin;
mod consumers;
mod kv;
mod requests;
mod workers;

/// A complete answer.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the error shape, status, code and field.
    pub(crate) fn assert_error(&self, status: u16, code: &str, field: Option<&str>) -> String {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(
            self.headers["content-type"], "application/json",
            "errors are JSON"
        );
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["field"].as_str(), field, "{body}");
        body["error"]["message"].as_str().unwrap().to_owned()
    }
}

/// Sends one request on a new connection and returns the response with its body unread.
pub(crate) async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> hyper::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).unwrap();
    tokio::time::timeout(RECV_GUARD, sender.send_request(request))
        .await
        .expect("an answer in time")
        .unwrap()
}

/// Sends one request and reads the whole answer.
pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let response = open(addr, method, path, headers, body).await;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(RECV_GUARD, body.collect())
        .await
        .expect("the whole body in time")
        .unwrap()
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, "GET", path, &[], Bytes::new()).await
}

/// Publishes `body` as JSON to `subject` and returns the id.
async fn publish(addr: SocketAddr, subject: &str, body: Value) -> u64 {
    let reply = call(
        addr,
        "POST",
        &format!("/v1/publish/{subject}"),
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.json()["id"].as_u64().unwrap()
}

async fn env(limits: Limits) -> (Env, SocketAddr) {
    let mut env = Env::start_with(limits).await;
    env.stream("orders", &["orders.>"]).await;
    let addr = env.jetway.http_addr();
    (env, addr)
}

#[tokio::test]
async fn publish_keeps_the_payload_its_content_type_and_headers() {
    let (_env, addr) = env(Limits::default()).await;
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", "order-7"),
        ("jetway-header-tenant", "acme"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ];
    let first = call(
        addr,
        "POST",
        "/v1/publish/orders.new",
        &headers,
        r#"{"n":7}"#,
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json(), json!({"id": 1, "duplicate": false}));
    let again = call(
        addr,
        "POST",
        "/v1/publish/orders.new",
        &headers,
        r#"{"n":7}"#,
    )
    .await;
    assert_eq!(again.json(), json!({"id": 1, "duplicate": true}));

    let event = get(addr, "/v1/streams/orders/events/1").await;
    assert_eq!(event.status, StatusCode::OK);
    let event = event.json();
    assert_eq!(event["subject"], "orders.new");
    assert_eq!(event["content_type"], "application/json");
    assert_eq!(event["data"], json!({"n": 7}));
    assert_eq!(event["headers"], json!({"tenant": "acme"}));
    assert_eq!(event["idempotency_key"], "order-7");
    assert_eq!(
        event["trace_parent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );

    // Bytes that are neither JSON nor text come back in base64, unchanged.
    let binary = call(
        addr,
        "POST",
        "/v1/publish/orders.blob",
        &[("content-type", "application/octet-stream")],
        vec![0u8, 255],
    )
    .await;
    assert_eq!(binary.json()["id"], 2);
    let event = get(addr, "/v1/streams/orders/events/2").await.json();
    assert_eq!(event["data_base64"], "AP8=");
}

#[tokio::test]
async fn publish_errors_have_their_status_and_name_the_field() {
    let limits = Limits {
        http_max_body_bytes: 1024,
        ..Limits::default()
    };
    let (_env, addr) = env(limits).await;
    publish(addr, "orders.new", json!(1)).await;

    let stale = call(
        addr,
        "POST",
        "/v1/publish/orders.new",
        &[("expected-last-id", "5")],
        "x",
    )
    .await;
    stale.assert_error(409, "FAILED_PRECONDITION", Some("expected_last_id"));
    let bad = call(
        addr,
        "POST",
        "/v1/publish/orders.new",
        &[("expected-last-id", "five")],
        "x",
    )
    .await;
    bad.assert_error(400, "INVALID_ARGUMENT", Some("Expected-Last-Id"));
    let nowhere = call(addr, "POST", "/v1/publish/nobody.here", &[], "x").await;
    nowhere.assert_error(404, "NOT_FOUND", None);
    let bad_subject = call(addr, "POST", "/v1/publish/orders..x", &[], "x").await;
    bad_subject.assert_error(400, "INVALID_ARGUMENT", Some("subject"));
    let big = call(
        addr,
        "POST",
        "/v1/publish/orders.new",
        &[],
        vec![b'x'; 1025],
    )
    .await;
    let message = big.assert_error(413, "RESOURCE_EXHAUSTED", None);
    assert!(message.contains("HTTP_MAX_BODY_BYTES"), "{message}");
    let bad_path = call(addr, "POST", "/v1/publish/orders.%FF", &[], "x").await;
    bad_path.assert_error(400, "INVALID_ARGUMENT", Some("path"));

    get(addr, "/v1/nothing")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, "/v1/publish/orders.new")
        .await
        .assert_error(405, "UNIMPLEMENTED", None);
    // Nothing but the first event was stored.
    let stored = get(addr, "/v1/streams/orders/events").await.json();
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored}");
}

#[tokio::test]
async fn a_batch_answers_one_result_per_item_as_json_or_ndjson() {
    let (_env, addr) = env(Limits::default()).await;
    let items = json!([
        {"subject": "orders.a", "data": {"n": 1}},
        {"data": 2},
        {"subject": "orders.b", "data": "hi", "content_type": "text/plain", "headers": {"k": "v"}},
        {"subject": "nobody.here", "data": 3},
    ]);
    let reply = call(
        addr,
        "POST",
        "/v1/publish",
        &[("content-type", "application/json")],
        items.to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let results = reply.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0], json!({"id": 1, "duplicate": false}));
    assert_eq!(results[1]["error"]["status"], 400);
    assert_eq!(results[1]["error"]["field"], "items[1].subject");
    assert_eq!(results[2], json!({"id": 2, "duplicate": false}));
    assert_eq!(results[3]["error"]["status"], 404);
    let text = get(addr, "/v1/streams/orders/events/2").await.json();
    assert_eq!(text["data"], "hi");
    assert_eq!(text["headers"], json!({"k": "v"}));

    let ndjson = "{\"subject\":\"orders.c\",\"data_base64\":\"AP8=\"}\n\n{\"subject\":\"orders.c\",\"data\":[1]}\n";
    let reply = call(
        addr,
        "POST",
        "/v1/publish",
        &[("content-type", "application/x-ndjson")],
        ndjson,
    )
    .await;
    assert_eq!(
        reply.json(),
        json!({"results": [{"id": 3, "duplicate": false}, {"id": 4, "duplicate": false}]})
    );

    let form = call(
        addr,
        "POST",
        "/v1/publish",
        &[("content-type", "text/plain")],
        "[]",
    )
    .await;
    form.assert_error(400, "INVALID_ARGUMENT", Some("Content-Type"));
    let broken = call(
        addr,
        "POST",
        "/v1/publish",
        &[("content-type", "application/json")],
        "[{",
    )
    .await;
    broken.assert_error(400, "INVALID_ARGUMENT", Some("items"));
    let broken_line = call(
        addr,
        "POST",
        "/v1/publish",
        &[("content-type", "application/x-ndjson")],
        "{}\n{",
    )
    .await;
    broken_line.assert_error(400, "INVALID_ARGUMENT", Some("items[1]"));
    let empty = call(
        addr,
        "POST",
        "/v1/publish",
        &[("content-type", "application/json")],
        "[]",
    )
    .await;
    empty.assert_error(400, "INVALID_ARGUMENT", Some("items"));
}

#[tokio::test]
async fn range_reads_answer_a_json_array_or_ndjson() {
    let (_env, addr) = env(Limits::default()).await;
    for n in 1..=5 {
        publish(
            addr,
            if n % 2 == 0 {
                "orders.even"
            } else {
                "orders.odd"
            },
            json!(n),
        )
        .await;
    }
    let ids = |reply: &Reply| -> Vec<u64> {
        reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["id"].as_u64().unwrap())
            .collect()
    };
    let all = get(addr, "/v1/streams/orders/events").await;
    assert_eq!(all.headers["content-type"], "application/json");
    assert_eq!(ids(&all), [1, 2, 3, 4, 5]);
    let page = get(addr, "/v1/streams/orders/events?from=2&limit=2").await;
    assert_eq!(ids(&page), [2, 3]);
    let odd = get(addr, "/v1/streams/orders/events?subject=orders.odd").await;
    assert_eq!(ids(&odd), [1, 3, 5]);
    let none = get(addr, "/v1/streams/orders/events?from=end").await;
    assert_eq!(none.json(), json!([]));

    let ndjson = call(
        addr,
        "GET",
        "/v1/streams/orders/events?from=4",
        &[("accept", "application/x-ndjson")],
        Bytes::new(),
    )
    .await;
    assert_eq!(ndjson.headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = String::from_utf8(ndjson.body.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], 4);
    assert_eq!(lines[1]["data"], 5);

    get(addr, "/v1/streams/orders/events?from=0")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("from"));
    get(addr, "/v1/streams/orders/events?from=soon")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("from"));
    get(addr, "/v1/streams/orders/events?limit=0")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("limit"));
    get(addr, "/v1/streams/orders/events?size=1")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("size"));
    get(addr, "/v1/streams/nothing/events")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, "/v1/streams/orders/events/99")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, "/v1/streams/orders/events/x").await.assert_error(
        400,
        "INVALID_ARGUMENT",
        Some("id"),
    );
}

/// One message of an SSE stream.
#[derive(Debug)]
pub(crate) struct Sse {
    pub(crate) id: Option<u64>,
    pub(crate) event: Option<String>,
    pub(crate) data: Value,
}

/// Reads an SSE body message by message.
pub(crate) struct SseReader {
    body: Incoming,
    buffer: BytesMut,
}

impl SseReader {
    pub(crate) async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseReader {
        let response = open(addr, "GET", path, headers, Bytes::new()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader {
            body: response.into_body(),
            buffer: BytesMut::new(),
        }
    }

    /// The next message (comments skipped), or `None` when the stream ended.
    pub(crate) async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
                let block = self.buffer.split_to(end + 2);
                let text = String::from_utf8(block.to_vec()).unwrap();
                let mut message = Sse {
                    id: None,
                    event: None,
                    data: Value::Null,
                };
                let mut comment_only = true;
                for line in text.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        message.id = Some(id.trim().parse().unwrap());
                    } else if let Some(event) = line.strip_prefix("event:") {
                        message.event = Some(event.trim().to_owned());
                    } else if let Some(data) = line.strip_prefix("data:") {
                        message.data = serde_json::from_str(data.trim()).unwrap();
                    } else {
                        continue;
                    }
                    comment_only = false;
                }
                if comment_only {
                    continue;
                }
                return Some(message);
            }
            let frame = tokio::time::timeout(RECV_GUARD, self.body.frame())
                .await
                .expect("an SSE message in time")?
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    async fn next_id(&mut self) -> u64 {
        let message = self.next().await.expect("an event");
        assert_eq!(message.event, None, "{message:?}");
        assert_eq!(message.data["id"].as_u64(), message.id);
        message.id.unwrap()
    }
}

#[tokio::test]
async fn sse_resumes_after_a_dropped_connection_without_gaps_or_repeats() {
    let (_env, addr) = env(Limits::default()).await;
    publish(addr, "orders.new", json!(0)).await;
    let mut live = SseReader::open(addr, "/v1/subscribe/orders.%3E", &[]).await;
    // Only events stored from now on.
    publish(addr, "orders.new", json!(1)).await;
    publish(addr, "orders.new", json!(2)).await;
    assert_eq!(live.next_id().await, 2);
    let message = live.next().await.unwrap();
    assert_eq!(message.id, Some(3));
    assert_eq!(message.data["data"], 2);
    drop(live);

    // Stored while the client was away.
    publish(addr, "orders.new", json!(3)).await;
    publish(addr, "orders.old", json!(4)).await;
    let mut resumed =
        SseReader::open(addr, "/v1/subscribe/orders.%3E", &[("last-event-id", "3")]).await;
    assert_eq!(resumed.next_id().await, 4);
    assert_eq!(resumed.next_id().await, 5);
    publish(addr, "orders.new", json!(5)).await;
    assert_eq!(resumed.next_id().await, 6, "then live, nothing repeated");

    // The query parameter does the same for clients that cannot set headers, and a filter holds
    // across the replay.
    let mut filtered = SseReader::open(
        addr,
        "/v1/subscribe/orders.old?stream=orders&last_event_id=1",
        &[],
    )
    .await;
    assert_eq!(filtered.next_id().await, 5);
    publish(addr, "orders.old", json!(6)).await;
    assert_eq!(filtered.next_id().await, 7);

    // Resuming from the latest id replays nothing and goes live.
    let mut caught_up =
        SseReader::open(addr, "/v1/subscribe/orders.%3E", &[("last-event-id", "7")]).await;
    publish(addr, "orders.new", json!(7)).await;
    assert_eq!(caught_up.next_id().await, 8);
}

#[tokio::test]
async fn sse_errors_come_before_the_stream() {
    let (_env, addr) = env(Limits::default()).await;
    get(addr, "/v1/subscribe/orders..x").await.assert_error(
        400,
        "INVALID_ARGUMENT",
        Some("subject"),
    );
    get(addr, "/v1/subscribe/nobody.%3E")
        .await
        .assert_error(404, "NOT_FOUND", None);
    call(
        addr,
        "GET",
        "/v1/subscribe/orders.%3E",
        &[("last-event-id", "three")],
        Bytes::new(),
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("Last-Event-ID"));
    get(
        addr,
        "/v1/subscribe/orders.%3E?last_event_id=18446744073709551615",
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("last_event_id"));
    get(addr, "/v1/subscribe/orders.%3E?stream=nothing")
        .await
        .assert_error(404, "NOT_FOUND", None);
}

#[tokio::test]
async fn sse_streams_end_cleanly_at_shutdown() {
    let (mut env, addr) = env(Limits::default()).await;
    let mut live = SseReader::open(addr, "/v1/subscribe/orders.%3E", &[]).await;
    publish(addr, "orders.new", json!(1)).await;
    assert_eq!(live.next_id().await, 1);
    env.jetway.stop().await;
    assert!(live.next().await.is_none(), "the stream ends, not cut off");
}

#[tokio::test]
async fn the_openapi_document_is_served_and_lists_every_route() {
    let (_env, addr) = env(Limits::default()).await;
    let served = get(addr, "/openapi.json").await;
    assert_eq!(served.status, StatusCode::OK);
    let served = served.json();
    assert_eq!(served["openapi"], "3.1.0");
    // The same document `jetway-server openapi` prints for CI's validator.
    let printed = serde_json::to_value(jetway_server::http::openapi::document()).unwrap();
    assert_eq!(served, printed);
    let paths: Vec<&str> = served["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paths,
        [
            "/v1/dead-letters/{dead_letter_stream}",
            "/v1/dead-letters/{dead_letter_stream}/redrive",
            "/v1/publish",
            "/v1/publish/{subject}",
            "/v1/request/{subject}",
            "/v1/stores/{store}",
            "/v1/stores/{store}/history/{key}",
            "/v1/stores/{store}/keys",
            "/v1/stores/{store}/keys/{key}",
            "/v1/stores/{store}/watch",
            "/v1/streams",
            "/v1/streams/{stream}",
            "/v1/streams/{stream}/consumers",
            "/v1/streams/{stream}/consumers/{consumer}",
            "/v1/streams/{stream}/consumers/{consumer}/ack",
            "/v1/streams/{stream}/consumers/{consumer}/extend",
            "/v1/streams/{stream}/consumers/{consumer}/fetch",
            "/v1/streams/{stream}/consumers/{consumer}/reject",
            "/v1/streams/{stream}/events",
            "/v1/streams/{stream}/events/{id}",
            "/v1/streams/{stream}/purge",
            "/v1/subscribe/{subject}",
        ]
    );
    for schema in ["EventJson", "ErrorBody", "BatchItem", "BatchResults"] {
        assert!(
            served["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
}

#[tokio::test]
async fn cloudevents_in_binary_and_structured_mode_keep_their_attributes() {
    let (_env, addr) = env(Limits::default()).await;
    let binary = [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "evt-1"),
        ("ce-source", "/shop"),
        ("ce-type", "order.created"),
    ];
    let first = call(addr, "POST", "/v1/publish/orders.ce", &binary, r#"{"n":1}"#).await;
    assert_eq!(first.json(), json!({"id": 1, "duplicate": false}));
    let again = call(addr, "POST", "/v1/publish/orders.ce", &binary, r#"{"n":1}"#).await;
    assert_eq!(
        again.json(),
        json!({"id": 1, "duplicate": true}),
        "ce-id is the idempotency key"
    );
    let event = get(addr, "/v1/streams/orders/events/1").await.json();
    assert_eq!(event["idempotency_key"], "evt-1");
    assert_eq!(event["data"], json!({"n": 1}));
    assert_eq!(event["headers"]["ce-type"], "order.created");
    assert_eq!(event["headers"]["ce-source"], "/shop");

    let structured = json!({
        "specversion": "1.0", "id": "evt-2", "source": "/shop", "type": "order.paid",
        "datacontenttype": "text/plain", "data": "paid", "attempt": 2,
    });
    let reply = call(
        addr,
        "POST",
        "/v1/publish/orders.ce",
        &[("content-type", "application/cloudevents+json")],
        structured.to_string(),
    )
    .await;
    assert_eq!(reply.json(), json!({"id": 2, "duplicate": false}));
    let event = get(addr, "/v1/streams/orders/events/2").await.json();
    assert_eq!(event["content_type"], "text/plain");
    assert_eq!(event["data"], "paid");
    assert_eq!(event["idempotency_key"], "evt-2");
    assert_eq!(event["headers"]["ce-type"], "order.paid");
    assert_eq!(event["headers"]["ce-attempt"], "2");

    let incomplete = call(
        addr,
        "POST",
        "/v1/publish/orders.ce",
        &[("ce-id", "evt-3")],
        "x",
    )
    .await;
    incomplete.assert_error(400, "INVALID_ARGUMENT", Some("ce-specversion"));
    let untyped = call(
        addr,
        "POST",
        "/v1/publish/orders.ce",
        &[("content-type", "application/cloudevents+json")],
        json!({"specversion": "1.0", "id": "x", "source": "/s"}).to_string(),
    )
    .await;
    untyped.assert_error(400, "INVALID_ARGUMENT", Some("type"));
    let two_keys = [("idempotency-key", "other")];
    let both: Vec<(&str, &str)> = binary.iter().copied().chain(two_keys).collect();
    call(addr, "POST", "/v1/publish/orders.ce", &both, "x")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("Idempotency-Key"));
}

#[tokio::test]
async fn cloudevents_read_back_as_cloudevents_with_their_attributes() {
    let (_env, addr) = env(Limits::default()).await;
    // Binary mode: every attribute a `ce-` header, the data's type the Content-Type.
    let binary = json!({
        "specversion": "1.0", "id": "evt-b", "source": "/shop", "type": "order.created",
        "subject": "o-1", "time": "2026-01-02T03:04:05Z", "tenant": "acme",
        "datacontenttype": "application/json", "data": {"n": 1},
    });
    let headers: Vec<(String, String)> = binary
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "data" && *name != "datacontenttype")
        .map(|(name, value)| (format!("ce-{name}"), value.as_str().unwrap().to_owned()))
        .chain([("content-type".to_owned(), "application/json".to_owned())])
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let reply = call(
        addr,
        "POST",
        "/v1/publish/orders.ce",
        &headers,
        r#"{"n":1}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let structured = json!({
        "specversion": "1.0", "id": "evt-s", "source": "/shop", "type": "order.paid",
        "subject": "o-1", "time": "2026-01-02T03:04:06Z", "tenant": "acme",
        "datacontenttype": "application/octet-stream", "data_base64": "AAH/",
    });
    let reply = call(
        addr,
        "POST",
        "/v1/publish/orders.ce",
        &[("content-type", "application/cloudevents+json")],
        structured.to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let plain = publish(addr, "orders.plain", json!({"p": true})).await;
    // What was published, plus the event's id in the stream; the plain event by the default mapping.
    let with_id = |mut event: Value, id: &str| {
        event["jetwayid"] = json!(id);
        event
    };
    let expected = [
        with_id(binary, "1"),
        with_id(structured, "2"),
        json!({
            "specversion": "1.0", "id": "3", "source": "/jetway/streams/orders",
            "type": "orders.plain", "jetwayid": "3",
            "datacontenttype": "application/json", "data": {"p": true},
        }),
    ];

    let one = [("accept", "application/cloudevents+json")];
    for (id, expected) in expected.iter().enumerate() {
        let path = format!("/v1/streams/orders/events/{}", id + 1);
        let reply = call(addr, "GET", &path, &one, Bytes::new()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers["content-type"],
            "application/cloudevents+json"
        );
        let mut read = reply.json();
        if id + 1 == plain as usize {
            // The time it was stored: a time, not a fixed one.
            let time = read.as_object_mut().unwrap().remove("time").unwrap();
            assert!(time.as_str().unwrap().ends_with('Z'), "{time}");
        }
        assert_eq!(&read, expected);
    }
    let batch = [("accept", "application/cloudevents-batch+json")];
    let reply = call(
        addr,
        "GET",
        "/v1/streams/orders/events?limit=2",
        &batch,
        Bytes::new(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["content-type"],
        "application/cloudevents-batch+json"
    );
    assert_eq!(reply.json(), json!(expected[..2]));

    let path = "/v1/subscribe/orders.ce?stream=orders&format=cloudevents&last_event_id=0";
    let mut sse = SseReader::open(addr, path, &[]).await;
    for (id, expected) in expected[..2].iter().enumerate() {
        let message = sse.next().await.expect("an event");
        assert_eq!(message.id, Some(id as u64 + 1));
        assert_eq!(&message.data, expected);
    }
    get(addr, "/v1/subscribe/orders.ce?format=xml")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("format"));
}

#[tokio::test]
async fn sse_and_grpc_subscribers_share_one_live_feed() {
    let (env, addr) = env(Limits::default()).await;
    let mut client = crate::clients::events(&env).await;
    let mut grpc = client
        .subscribe(jetway_api::jetway::events::v1::SubscribeRequest {
            subject: "orders.>".into(),
            stream: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut sse = SseReader::open(addr, "/v1/subscribe/orders.%3E?stream=orders", &[]).await;
    // One consumer for the one stream and filter, whichever API subscribed.
    assert_eq!(env.stream_info("orders").await.state.consumer_count, 1);
    let id = publish(addr, "orders.new", json!(1)).await;
    assert_eq!(sse.next_id().await, id);
    assert_eq!(crate::clients::next(&mut grpc).await.event.unwrap().id, id);
}

#[tokio::test]
async fn a_range_read_cut_short_by_shutdown_ends_with_an_error() {
    let (mut env, addr) = env(Limits::default()).await;
    // More than loopback's socket buffers hold, so the read is still going when shutdown comes.
    let payload = "x".repeat(4000);
    for _ in 0..4 {
        let items: Vec<Value> = (0..500)
            .map(|_| json!({"subject": "orders.big", "data": payload}))
            .collect();
        let reply = call(
            addr,
            "POST",
            "/v1/publish",
            &[("content-type", "application/json")],
            Value::Array(items).to_string(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let response = open(
        addr,
        "GET",
        "/v1/streams/orders/events",
        &[("accept", "application/x-ndjson")],
        Bytes::new(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    env.jetway.begin_shutdown();
    let body = tokio::time::timeout(RECV_GUARD, response.into_body().collect())
        .await
        .expect("the body ends in time")
        .unwrap()
        .to_bytes();
    let lines: Vec<Value> = String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(lines.len() < 2000, "cut short: {} lines", lines.len());
    let last = lines.last().unwrap();
    assert_eq!(last["error"]["code"], "UNAVAILABLE", "{last}");
    env.jetway.stop().await;
}

/// gzip-compresses `data`, as a client would before sending it with `Content-Encoding: gzip`.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// An environment whose server answers browsers of `origins`.
async fn cors_env(origins: &str) -> (Env, SocketAddr) {
    let cors = Cors {
        origins: AllowedOrigins::parse(origins).unwrap(),
        max_age: std::time::Duration::from_secs(600),
    };
    let mut env = Env::start_from(TestServer::builder().cors(cors)).await;
    env.stream("orders", &["orders.>"]).await;
    let addr = env.jetway.http_addr();
    (env, addr)
}

/// Issue 21 #5: a page of a listed origin may publish and follow events from a browser, sending
/// `authorization` and the API's own headers; a page of any other origin may not.
#[tokio::test]
async fn cors_lets_pages_of_the_listed_origins_call_the_api() {
    let (_env, addr) = cors_env("https://app.example").await;
    let app = ("origin", "https://app.example");
    let asked = "authorization, content-type, idempotency-key, jetway-header-tenant, ce-id, \
                 traceparent, last-event-id";
    let preflight = call(
        addr,
        "OPTIONS",
        "/v1/publish/orders.new",
        &[
            app,
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", asked),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        preflight.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        preflight.body
    );
    let header = |reply: &Reply, name: &str| {
        reply
            .headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        "https://app.example"
    );
    let methods = header(&preflight, "access-control-allow-methods");
    for method in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = header(&preflight, "access-control-allow-headers");
    for name in asked.split(", ") {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }
    assert_eq!(header(&preflight, "access-control-max-age"), "600");
    assert!(header(&preflight, "vary").contains("origin"));

    // The call itself: its answer is marked for the page, which may read the ETag too.
    let published = call(
        addr,
        "POST",
        "/v1/publish/orders.new",
        &[app, ("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(published.status, StatusCode::CREATED);
    assert_eq!(
        header(&published, "access-control-allow-origin"),
        "https://app.example"
    );
    assert!(header(&published, "access-control-expose-headers").contains("etag"));
    assert!(header(&published, "vary").contains("origin"));
    let error = call(
        addr,
        "GET",
        "/v1/streams/orders/events/99",
        &[app],
        Bytes::new(),
    )
    .await;
    error.assert_error(404, "NOT_FOUND", None);
    assert_eq!(
        header(&error, "access-control-allow-origin"),
        "https://app.example"
    );
    let live = open(
        addr,
        "GET",
        "/v1/subscribe/orders.%3E",
        &[app],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        live.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    // Another origin: its preflight is refused, saying which variable lists the origins, and
    // its answers carry no CORS header, so its page cannot read them.
    let evil = ("origin", "https://evil.example");
    let refused = call(
        addr,
        "OPTIONS",
        "/v1/publish/orders.new",
        &[evil, ("access-control-request-method", "POST")],
        Bytes::new(),
    )
    .await;
    let message = refused.assert_error(403, "PERMISSION_DENIED", None);
    assert!(message.contains("HTTP_CORS_ALLOWED_ORIGINS"), "{message}");
    assert!(!refused.headers.contains_key("access-control-allow-origin"));
    let unmarked = call(
        addr,
        "GET",
        "/v1/streams/orders/events",
        &[evil],
        Bytes::new(),
    )
    .await;
    assert_eq!(unmarked.status, StatusCode::OK);
    assert!(!unmarked.headers.contains_key("access-control-allow-origin"));
}

/// `*` lets every origin in; unset (the default), no CORS header is ever sent and a preflight is
/// an OPTIONS request like any other (405).
#[tokio::test]
async fn cors_is_off_by_default_and_open_with_a_star() {
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
    ];
    let (_env, addr) = env(Limits::default()).await;
    let off = call(
        addr,
        "OPTIONS",
        "/v1/publish/orders.new",
        &preflight,
        Bytes::new(),
    )
    .await;
    off.assert_error(405, "UNIMPLEMENTED", None);
    assert!(!off.headers.contains_key("access-control-allow-origin"));
    let plain = call(
        addr,
        "GET",
        "/v1/streams/orders/events",
        &preflight[..1],
        Bytes::new(),
    )
    .await;
    assert!(!plain.headers.contains_key("access-control-allow-origin"));

    let (_open_env, open_addr) = cors_env("*").await;
    let star = call(
        open_addr,
        "OPTIONS",
        "/v1/publish/orders.new",
        &preflight,
        Bytes::new(),
    )
    .await;
    assert_eq!(star.status, StatusCode::NO_CONTENT);
    assert_eq!(star.headers["access-control-allow-origin"], "*");
}

/// Issue 21 #5: answers are gzip-compressed for clients that take it (range reads as they stream,
/// in JSON and NDJSON), short ones and SSE streams are not, and the SSE events still arrive one
/// by one.
#[tokio::test]
async fn answers_are_gzipped_for_clients_that_take_gzip() {
    let (_env, addr) = env(Limits::default()).await;
    let items: Vec<Value> = (0..50)
        .map(|n| json!({"subject": "orders.new", "data": {"n": n, "text": "a repetitive payload"}}))
        .collect();
    let batch = call(
        addr,
        "POST",
        "/v1/publish",
        &[("content-type", "application/json")],
        Value::Array(items).to_string(),
    )
    .await;
    assert_eq!(batch.status, StatusCode::OK);

    for accept in ["application/json", "application/x-ndjson"] {
        let plain = call(
            addr,
            "GET",
            "/v1/streams/orders/events",
            &[("accept", accept)],
            Bytes::new(),
        )
        .await;
        assert!(!plain.headers.contains_key("content-encoding"));
        assert_eq!(
            plain.headers["vary"], "accept-encoding",
            "either answer may be cached"
        );
        let zipped = call(
            addr,
            "GET",
            "/v1/streams/orders/events",
            &[("accept", accept), ("accept-encoding", "br, gzip")],
            Bytes::new(),
        )
        .await;
        assert_eq!(zipped.status, StatusCode::OK);
        assert_eq!(zipped.headers["content-encoding"], "gzip");
        assert!(
            zipped.headers["vary"]
                .to_str()
                .unwrap()
                .contains("accept-encoding")
        );
        assert_eq!(
            zipped.headers["content-type"],
            plain.headers["content-type"]
        );
        assert!(
            zipped.body.len() < plain.body.len() / 3,
            "{} bytes",
            zipped.body.len()
        );
        assert_eq!(gunzip(&zipped.body), plain.body.to_vec(), "{accept}");
    }
    // A short answer is not worth a compressor, and `q=0` refuses gzip.
    let short = call(
        addr,
        "GET",
        "/v1/streams/orders/events/1",
        &[("accept-encoding", "gzip")],
        Bytes::new(),
    )
    .await;
    assert!(!short.headers.contains_key("content-encoding"));
    assert_eq!(short.json()["id"], 1);
    let refused = call(
        addr,
        "GET",
        "/v1/streams/orders/events",
        &[("accept-encoding", "gzip;q=0")],
        Bytes::new(),
    )
    .await;
    assert!(!refused.headers.contains_key("content-encoding"));

    let mut live = SseReader::open(
        addr,
        "/v1/subscribe/orders.%3E",
        &[("accept-encoding", "gzip")],
    )
    .await;
    let id = publish(addr, "orders.new", json!("live")).await;
    assert_eq!(
        live.next_id().await,
        id,
        "the event arrives on its own, uncompressed"
    );
}

/// Issue 21 #5: a request body sent with `Content-Encoding: gzip` is decompressed, and
/// HTTP_MAX_BODY_BYTES bounds what it decompresses to: a small body that inflates past it (a zip
/// bomb) is 413 naming the variable. A body that is not gzip, or another coding, is refused.
#[tokio::test]
async fn gzip_request_bodies_are_decompressed_within_the_body_limit() {
    let limits = Limits {
        http_max_body_bytes: 4096,
        ..Limits::default()
    };
    let (_env, addr) = env(limits).await;
    let gz = ("content-encoding", "gzip");
    let json_type = ("content-type", "application/json");
    let one = call(
        addr,
        "POST",
        "/v1/publish/orders.new",
        &[gz, json_type],
        gzip(br#"{"n":1}"#),
    )
    .await;
    assert_eq!(one.status, StatusCode::CREATED, "{:?}", one.body);
    let stored = get(addr, "/v1/streams/orders/events/1").await.json();
    assert_eq!(stored["data"], json!({"n": 1}));
    let ndjson = "{\"subject\":\"orders.a\",\"data\":2}\n{\"subject\":\"orders.b\",\"data\":3}\n";
    let batch = call(
        addr,
        "POST",
        "/v1/publish",
        &[gz, ("content-type", "application/x-ndjson")],
        gzip(ndjson.as_bytes()),
    )
    .await;
    assert_eq!(batch.json()["results"].as_array().unwrap().len(), 2);

    // 2 MiB of zeros is about 2 KiB of gzip: under the limit as sent, far over it inflated.
    let bomb = gzip(&vec![0; 2 << 20]);
    assert!(bomb.len() < 4096, "{} bytes", bomb.len());
    let refused = call(addr, "POST", "/v1/publish/orders.new", &[gz], bomb).await;
    let message = refused.assert_error(413, "RESOURCE_EXHAUSTED", None);
    assert!(message.contains("HTTP_MAX_BODY_BYTES"), "{message}");
    let broken = call(addr, "POST", "/v1/publish/orders.new", &[gz], "not gzip").await;
    broken.assert_error(400, "INVALID_ARGUMENT", Some("Content-Encoding"));
    let brotli = [("content-encoding", "br")];
    let unknown = call(addr, "POST", "/v1/publish/orders.new", &brotli, "x").await;
    unknown.assert_error(415, "INVALID_ARGUMENT", Some("Content-Encoding"));
    // Only the three good events were stored.
    let all = get(addr, "/v1/streams/orders/events").await.json();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
}

/// Issue 21 #5: an event published over HTTP with a W3C `traceparent` reaches a gRPC subscriber
/// with the same trace id (`tests/otel.rs` checks the server span itself, with export on).
#[tokio::test]
async fn an_http_publish_keeps_the_callers_trace_to_the_subscriber() {
    let (env, addr) = env(Limits::default()).await;
    let mut client = crate::clients::events(&env).await;
    let mut grpc = client
        .subscribe(jetway_api::jetway::events::v1::SubscribeRequest {
            subject: "orders.>".into(),
            stream: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let published = call(
        addr,
        "POST",
        "/v1/publish/orders.traced",
        &[("traceparent", parent.as_str()), ("tracestate", "vendor=1")],
        "x",
    )
    .await;
    assert_eq!(published.status, StatusCode::CREATED);
    let event = crate::clients::next(&mut grpc).await.event.unwrap();
    let delivered = event.trace_parent.unwrap();
    assert_eq!(delivered.split('-').nth(1), Some(trace_id), "{delivered}");
}

/// Issue 21 #5: `/metrics` counts HTTP API requests by route template, method and status, with a
/// latency histogram; a path is never a label (ids and subjects would grow it without bound).
#[tokio::test]
async fn metrics_count_http_requests_by_route_and_status() {
    use crate::{harness::http_get, operability::series};
    let (env, addr) = env(Limits::default()).await;
    let route = "/v1/streams/{stream}/events/{id}";
    let missing =
        format!(r#"jetway_http_requests_total{{method="GET",route="{route}",status="404"}}"#);
    let latency =
        format!(r#"jetway_http_request_duration_seconds_count{{method="GET",route="{route}"}}"#);
    let unmatched = r#"jetway_http_requests_total{method="other",route="unmatched",status="404"}"#;
    let scrape = || async { http_get(env.jetway.health_addr(), "/metrics").await.1 };
    let before = scrape().await;
    let count = |metrics: &str, selector: &str| series(metrics, selector).unwrap_or(0.0);
    for id in [1, 2, 3] {
        get(addr, &format!("/v1/streams/orders/events/{id}"))
            .await
            .assert_error(404, "NOT_FOUND", None);
    }
    let odd = call(addr, "BREW", "/v1/no/such/route-77", &[], Bytes::new()).await;
    assert_eq!(odd.status, StatusCode::NOT_FOUND);
    let after = scrape().await;
    // Other tests of this binary share the registry: theirs can only add to the counts.
    assert!(
        count(&after, &missing) >= count(&before, &missing) + 3.0,
        "{after}"
    );
    assert!(
        count(&after, &latency) >= count(&before, &latency) + 3.0,
        "{after}"
    );
    assert!(
        count(&after, unmatched) >= count(&before, unmatched) + 1.0,
        "{after}"
    );
    let bucket = format!(
        r#"jetway_http_request_duration_seconds_bucket{{method="GET",route="{route}",le="+Inf"}}"#
    );
    assert!(
        series(&after, &bucket).is_some(),
        "a histogram, with buckets: {after}"
    );
    for raw in ["/v1/streams/orders/", "route-77", "BREW"] {
        assert!(!after.contains(raw), "{raw} became a label:\n{after}");
    }
}
