//! Tracing end to end, against an in-process OTLP receiver: one trace carries from the publishing
//! client's `traceparent` through the server span and the producer span to the consumer span and the
//! delivered event's headers. A separate test binary, because telemetry installs the process-wide
//! tracing subscriber.

// Test code may panic on unwrap/expect: a panic here is a failed test with its message. clippy's
// allow-*-in-tests covers `#[test]` functions only, not the helpers they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "it/harness.rs"]
mod harness;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use async_nats::HeaderMap;
use harness::{Env, publish_request};
use jetway_api::{
    jetway::events::v1::{self as api, events_service_client::EventsServiceClient},
    windshift::events::v1alpha1::stream_pointer::Pointer,
};
use jetway_server::{config::Config, infra::telemetry::Telemetry};
use jetway_testkit::eventually;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tokio_stream::wrappers::TcpListenerStream;

/// Spans received, with the resource's `service.name`.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, addr)
    }

    fn find(&self, name: &str, trace_id: &[u8]) -> Option<(String, Span)> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .find(|(_, s)| s.name == name && s.trace_id == trace_id)
            .cloned()
    }

    /// The spans named `name` in the trace whose `key` attribute is `value`.
    fn find_all(&self, name: &str, trace_id: &[u8], key: &str, value: &str) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|(_, s)| {
                s.name == name
                    && s.trace_id == trace_id
                    && string_attribute(&s.attributes, key).as_deref() == Some(value)
            })
            .map(|(_, s)| s.clone())
            .collect()
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(Value::StringValue(s)),
            }) => Some(s.clone()),
            Some(AnyValue {
                value: Some(Value::IntValue(i)),
            }) => Some(i.to_string()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// On a current-thread runtime, as jetway-server runs with one worker thread: the batch exporter's
/// own thread must still get its spans out through a runtime it does not drive.
#[tokio::test]
async fn one_trace_runs_from_the_publisher_to_the_consumer() {
    let (receiver, addr) = Receiver::start().await;
    let config = Config::from_iter([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            format!("http://{addr}"),
        ),
        (
            "OTEL_SERVICE_NAME".to_owned(),
            "jetway-under-test".to_owned(),
        ),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ])
    .unwrap();
    let telemetry = Telemetry::init(&config).unwrap();

    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("billing")
        .subjects(&["orders.>"])
        .from(Pointer::Start(true))
        .ensure()
        .await;

    // The publishing client's own span.
    let (trace_id, client_span_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut request = tonic::Request::new(publish_request("orders.created", "traced"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{client_span_id}-01")
            .parse()
            .unwrap(),
    );
    let id = env
        .client
        .publish_event(request)
        .await
        .unwrap()
        .into_inner()
        .id;

    // A message published straight to NATS with a W3C header is honoured the same way.
    let (direct_trace, direct_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{direct_trace}-{direct_span}-01").as_str(),
    );
    env.js
        .publish_with_headers("orders.direct", headers, "".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let mut session = env.subscribe("orders", "billing").await;
    let event = session.event().await;
    assert_eq!(event.id, id);
    let delivered_parent = event
        .headers
        .as_ref()
        .and_then(|h| h.trace_parent.clone())
        .expect("trace_parent");
    assert!(delivered_parent.contains(trace_id), "{delivered_parent}");
    let direct = session.event().await;
    let direct_parent = direct
        .headers
        .as_ref()
        .and_then(|h| h.trace_parent.clone())
        .expect("trace_parent");
    assert!(direct_parent.contains(direct_trace), "{direct_parent}");
    session.ack(&[event.id, direct.id]).await;
    // The other paths act now and are checked below, so all their spans come in one export.
    let fetched = fetch_and_read(&mut env, id).await;
    let streamed = publish_stream(&mut env).await;
    let processed = request_reply(&env).await;
    let http_published = http_publish(&env).await;

    let trace = unhex(trace_id);
    let find = |name: &'static str, trace: Vec<u8>| {
        let receiver = receiver.clone();
        move || {
            let found = receiver.find(name, &trace);
            async move { found }
        }
    };
    let (service, server) = eventually(
        "the server span",
        find(
            "windshift.events.v1alpha1.EventsService/PublishEvent",
            trace.clone(),
        ),
    )
    .await;
    assert_eq!(service, "jetway-under-test");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(hex(&server.parent_span_id), client_span_id);
    assert_eq!(
        string_attribute(&server.attributes, "rpc.system").as_deref(),
        Some("grpc")
    );

    let (_, producer) = eventually(
        "the producer span",
        find("orders.created publish", trace.clone()),
    )
    .await;
    assert_eq!(producer.kind, SpanKind::Producer as i32);
    assert_eq!(producer.parent_span_id, server.span_id);
    assert_eq!(
        string_attribute(&producer.attributes, "messaging.system").as_deref(),
        Some("nats")
    );
    assert_eq!(
        string_attribute(&producer.attributes, "messaging.destination.name").as_deref(),
        Some("orders.created")
    );
    assert_eq!(
        string_attribute(&producer.attributes, "messaging.message.id"),
        Some(id.to_string())
    );

    let (_, consumer) = eventually(
        "the consumer span",
        find("orders.created receive", trace.clone()),
    )
    .await;
    assert_eq!(consumer.kind, SpanKind::Consumer as i32);
    assert_eq!(
        consumer.parent_span_id, producer.span_id,
        "the receive span is the publish span's child"
    );
    assert_eq!(
        string_attribute(&consumer.attributes, "messaging.operation").as_deref(),
        Some("receive")
    );
    assert_eq!(
        consumer.status.as_ref().map(|s| s.code),
        Some(StatusCode::Ok as i32),
        "acked"
    );
    assert_eq!(
        delivered_parent,
        format!("00-{trace_id}-{}-01", hex(&consumer.span_id))
    );

    let (_, direct_consumer) = eventually(
        "the direct message's consumer span",
        find("orders.direct receive", unhex(direct_trace)),
    )
    .await;
    assert_eq!(hex(&direct_consumer.parent_span_id), direct_span);

    fetch_and_reads_carry_the_trace(&receiver, trace_id, &producer, fetched).await;
    publish_stream_keeps_the_callers_trace(&receiver, streamed).await;
    let (unary, streamed) = processed;
    one_trace_runs_from_the_requester_to_the_processor(
        &receiver,
        unary,
        REQUEST_TRACE,
        "jetway.requests.v1.RequestService/Request",
    )
    .await;
    one_trace_runs_from_the_requester_to_the_processor(
        &receiver,
        streamed,
        STREAM_REQUEST_TRACE,
        "jetway.requests.v1.RequestService/RequestStream",
    )
    .await;
    an_http_publish_continues_the_callers_trace(&receiver, http_published).await;

    telemetry.shutdown().await;
}

/// The trace context that Fetch, ReadEvents and GetEvent gave the traced event.
struct Fetched {
    fetched: Option<String>,
    read: Option<String>,
    got: Option<String>,
}

/// Fetches and acks the traced event `id` on a consumer of its own, and reads it.
async fn fetch_and_read(env: &mut Env, id: u64) -> Fetched {
    let mut client = EventsServiceClient::new(env.jetway.channel().await);
    client
        .ensure_consumer(api::EnsureConsumerRequest {
            stream: "orders".into(),
            name: Some("fetcher".into()),
            subjects: vec!["orders.created".into()],
            from: Some(api::StreamPointer {
                pointer: Some(api::stream_pointer::Pointer::Start(true)),
            }),
            ..Default::default()
        })
        .await
        .expect("ensure the fetch consumer");
    let fetched = client
        .fetch(api::FetchRequest {
            stream: "orders".into(),
            consumer: "fetcher".into(),
            max_events: 1,
            wait: None,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].id, id);
    let settled = client
        .ack(api::AckRequest {
            stream: "orders".into(),
            consumer: "fetcher".into(),
            ids: vec![id],
        })
        .await
        .unwrap()
        .into_inner()
        .settled
        .expect("settled");
    assert_eq!(settled.ids, [id]);
    let read = client
        .read_events(api::ReadEventsRequest {
            stream: "orders".into(),
            subject: "orders.created".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .and_then(|r| r.event)
        .expect("an event");
    assert_eq!(read.id, id);
    let got = client
        .get_event(api::GetEventRequest {
            stream: "orders".into(),
            id,
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .expect("an event");
    Fetched {
        fetched: fetched[0].trace_parent.clone(),
        read: read.trace_parent,
        got: got.trace_parent,
    }
}

/// Issue 17 #14: Fetch hands out each event with its receive span's context, a child of the publish
/// span, as the Events path does, and ReadEvents and GetEvent give the stored context.
async fn fetch_and_reads_carry_the_trace(
    receiver: &Receiver,
    trace_id: &str,
    producer: &Span,
    seen: Fetched,
) {
    let trace = unhex(trace_id);
    let receive = eventually("the fetch's receive span", || {
        let spans = receiver.find_all(
            "orders.created receive",
            &trace,
            "messaging.consumer.group.name",
            "fetcher",
        );
        async move { spans.into_iter().next() }
    })
    .await;
    assert_eq!(receive.kind, SpanKind::Consumer as i32);
    assert_eq!(
        receive.parent_span_id, producer.span_id,
        "the receive span is the publish span's child"
    );
    assert_eq!(
        receive.status.as_ref().map(|s| s.code),
        Some(StatusCode::Ok as i32),
        "acked"
    );
    assert_eq!(
        seen.fetched,
        Some(format!("00-{trace_id}-{}-01", hex(&receive.span_id))),
        "Fetch hands out the receive span's context, as Events does"
    );

    // A read is no delivery: it gives the context stored with the event, the publish span's.
    let stored = Some(format!("00-{trace_id}-{}-01", hex(&producer.span_id)));
    assert_eq!(seen.read, stored, "ReadEvents");
    assert_eq!(seen.got, stored, "GetEvent");
}

/// The trace id and parent span id a PublishStream call carries.
const STREAM_TRACE: (&str, &str) = ("5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8");

/// Publishes two events on one PublishStream call that carries `STREAM_TRACE`; returns their ids.
async fn publish_stream(env: &mut Env) -> Vec<u64> {
    let (trace_id, client_span_id) = STREAM_TRACE;
    let requests: Vec<_> = (1..=2)
        .map(|n| api::PublishStreamRequest {
            correlation_id: n,
            event: Some(api::PublishEventRequest {
                subject: "orders.streamed".into(),
                payload: Some(api::publish_event_request::Payload::Raw(api::RawPayload {
                    data: format!("streamed {n}").into_bytes().into(),
                    content_type: String::new(),
                })),
                ..Default::default()
            }),
        })
        .collect();
    let mut request = tonic::Request::new(tokio_stream::iter(requests));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{client_span_id}-01")
            .parse()
            .unwrap(),
    );
    let mut client = EventsServiceClient::new(env.jetway.channel().await);
    let mut answers = client.publish_stream(request).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        match answer.result.and_then(|r| r.result) {
            Some(api::publish_result::Result::Published(published)) => ids.push(published.id),
            other => panic!("expected a published event, got {other:?}"),
        }
    }
    assert_eq!(ids.len(), 2);
    ids
}

/// Issue 17 #16: every event of a PublishStream continues the call's trace, as PublishEvent does.
async fn publish_stream_keeps_the_callers_trace(receiver: &Receiver, ids: Vec<u64>) {
    let (trace_id, client_span_id) = STREAM_TRACE;
    let trace = unhex(trace_id);
    let server = eventually("the PublishStream server span", || {
        let found = receiver.find("jetway.events.v1.EventsService/PublishStream", &trace);
        async move { found }
    })
    .await
    .1;
    assert_eq!(hex(&server.parent_span_id), client_span_id);
    for id in ids {
        let producer = eventually("the producer span of a streamed event", || {
            let spans = receiver.find_all(
                "orders.streamed publish",
                &trace,
                "messaging.message.id",
                &id.to_string(),
            );
            async move { spans.into_iter().next() }
        })
        .await;
        assert_eq!(producer.kind, SpanKind::Producer as i32);
        assert_eq!(
            producer.parent_span_id, server.span_id,
            "each publish span is the call's child"
        );
    }
}

/// The trace id and parent span id a Request call carries.
const REQUEST_TRACE: (&str, &str) = ("6bf92f3577b34da6a3ce929d0e0e4738", "20f067aa0ba902b9");

/// The trace id and parent span id one request of a RequestStream carries.
const STREAM_REQUEST_TRACE: (&str, &str) = ("6bf92f3577b34da6a3ce929d0e0e4739", "20f067aa0ba902ba");

/// Sends a request that carries `REQUEST_TRACE` to a processor attached over Respond, which
/// answers it, then one over a RequestStream that carries `STREAM_REQUEST_TRACE`; returns the
/// trace context the processor was handed with each.
async fn request_reply(env: &Env) -> (Option<String>, Option<String>) {
    use jetway_api::jetway::requests::v1::{
        self as requests, request_service_client::RequestServiceClient,
        respond_request::Message as Inbound, respond_response::Message as Outbound,
    };
    let (trace_id, client_span_id) = REQUEST_TRACE;
    let mut client = RequestServiceClient::new(env.jetway.channel().await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(requests::RespondRequest {
        message: Some(Inbound::Attach(requests::Attach {
            subjects: vec!["svc.traced".into()],
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut processor = client
        .respond(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let attached = processor.message().await.unwrap().unwrap().message;
    assert!(
        matches!(attached, Some(Outbound::Attached(_))),
        "{attached:?}"
    );
    let mut request = tonic::Request::new(requests::RequestRequest {
        subject: "svc.traced".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{client_span_id}-01")
            .parse()
            .unwrap(),
    );
    let mut requester = client.clone();
    let asked = tokio::spawn(async move { requester.request(request).await });
    let incoming = match processor.message().await.unwrap().unwrap().message {
        Some(Outbound::Request(incoming)) => incoming,
        other => panic!("expected a request, got {other:?}"),
    };
    tx.send(requests::RespondRequest {
        message: Some(Inbound::Answer(requests::Answer {
            id: incoming.id,
            result: Some(requests::answer::Result::NoContent(requests::NoContent {})),
        })),
    })
    .await
    .unwrap();
    asked.await.unwrap().expect("the request is answered");

    let (trace_id, client_span_id) = STREAM_REQUEST_TRACE;
    let (stream_tx, stream_rx) = tokio::sync::mpsc::channel(4);
    stream_tx
        .send(requests::RequestStreamRequest {
            id: 7,
            request: Some(requests::RequestRequest {
                subject: "svc.traced".into(),
                ..Default::default()
            }),
            trace_parent: Some(format!("00-{trace_id}-{client_span_id}-01")),
            trace_state: None,
        })
        .await
        .unwrap();
    let mut answers = client
        .request_stream(tokio_stream::wrappers::ReceiverStream::new(stream_rx))
        .await
        .unwrap()
        .into_inner();
    let streamed = match processor.message().await.unwrap().unwrap().message {
        Some(Outbound::Request(incoming)) => incoming,
        other => panic!("expected a request, got {other:?}"),
    };
    tx.send(requests::RespondRequest {
        message: Some(Inbound::Answer(requests::Answer {
            id: streamed.id,
            result: Some(requests::answer::Result::NoContent(requests::NoContent {})),
        })),
    })
    .await
    .unwrap();
    let answer = answers.message().await.unwrap().unwrap();
    assert_eq!(answer.id, 7);
    assert!(
        matches!(
            answer.result,
            Some(requests::request_stream_response::Result::Answer(_))
        ),
        "{answer:?}"
    );
    (incoming.trace_parent, streamed.trace_parent)
}

/// Issue 20 #4: one trace runs from the requester's call (`server_span`: a Request call, or one
/// request of a RequestStream) through the request span over NATS to the processing span, whose
/// context the processor is handed.
async fn one_trace_runs_from_the_requester_to_the_processor(
    receiver: &Receiver,
    processed: Option<String>,
    (trace_id, client_span_id): (&str, &str),
    server_span: &'static str,
) {
    let trace = unhex(trace_id);
    let found = |name: &'static str| {
        let trace = trace.clone();
        move || {
            let found = receiver.find(name, &trace).map(|(_, span)| span);
            async move { found }
        }
    };
    let server = eventually("the requester's server span", found(server_span)).await;
    assert_eq!(hex(&server.parent_span_id), client_span_id);
    let send = eventually("the request span", found("svc.traced send")).await;
    assert_eq!(send.kind, SpanKind::Client as i32);
    assert_eq!(send.parent_span_id, server.span_id);
    assert_eq!(
        string_attribute(&send.attributes, "messaging.system").as_deref(),
        Some("nats")
    );
    assert_eq!(
        string_attribute(&send.attributes, "messaging.destination.name").as_deref(),
        Some("svc.traced")
    );
    assert_eq!(
        send.status.as_ref().map(|s| s.code),
        Some(StatusCode::Ok as i32)
    );
    let process = eventually("the processing span", found("svc.traced process")).await;
    assert_eq!(process.kind, SpanKind::Server as i32);
    assert_eq!(
        process.parent_span_id, send.span_id,
        "the processing span is the request span's child, across NATS"
    );
    assert_eq!(
        string_attribute(&process.attributes, "messaging.operation").as_deref(),
        Some("process")
    );
    assert_eq!(
        processed,
        Some(format!("00-{trace_id}-{}-01", hex(&process.span_id))),
        "the processor continues the processing span"
    );
}

/// The trace id and parent span id an HTTP API publish carries.
const HTTP_TRACE: (&str, &str) = ("7bf92f3577b34da6a3ce929d0e0e4739", "30f067aa0ba902ba");

/// Sends one HTTP/1.1 request to the HTTP API and returns its status and body.
async fn http_call(
    env: &Env,
    method: &str,
    path: &str,
    traceparent: Option<&str>,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(env.jetway.http_addr())
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = sender
        .send_request(
            request
                .body(Full::new(bytes::Bytes::from("traced")))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Publishes over the HTTP API with `HTTP_TRACE`'s context; returns the event id and the trace
/// context a read gives it back with.
async fn http_publish(env: &Env) -> (u64, String) {
    let (trace_id, client_span_id) = HTTP_TRACE;
    let parent = format!("00-{trace_id}-{client_span_id}-01");
    let (status, body) = http_call(env, "POST", "/v1/publish/orders.http", Some(&parent)).await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let (status, body) =
        http_call(env, "GET", &format!("/v1/streams/orders/events/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    let stored = serde_json::from_str::<serde_json::Value>(&body).unwrap()["trace_parent"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, stored)
}

/// Issue 21 #5: an HTTP API request has a server span, child of the caller's `traceparent` and
/// named by its route, and the event it publishes continues that trace, as over gRPC.
async fn an_http_publish_continues_the_callers_trace(
    receiver: &Receiver,
    published: (u64, String),
) {
    let (trace_id, client_span_id) = HTTP_TRACE;
    let trace = unhex(trace_id);
    let (id, stored) = published;
    let server = eventually("the HTTP server span", || {
        let found = receiver.find("POST /v1/publish/{subject}", &trace);
        async move { found }
    })
    .await
    .1;
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(hex(&server.parent_span_id), client_span_id);
    assert_eq!(
        string_attribute(&server.attributes, "http.route").as_deref(),
        Some("/v1/publish/{subject}")
    );
    assert_eq!(
        string_attribute(&server.attributes, "http.response.status_code").as_deref(),
        Some("201")
    );
    let producer = eventually("the HTTP publish's producer span", || {
        let spans = receiver.find_all(
            "orders.http publish",
            &trace,
            "messaging.message.id",
            &id.to_string(),
        );
        async move { spans.into_iter().next() }
    })
    .await;
    assert_eq!(
        producer.parent_span_id, server.span_id,
        "the publish span is the request's child"
    );
    assert_eq!(
        stored,
        format!("00-{trace_id}-{}-01", hex(&producer.span_id)),
        "the event stores the caller's trace"
    );
}
