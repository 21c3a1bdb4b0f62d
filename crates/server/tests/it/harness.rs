//! The test environment: a real nats-server (from jetway-testkit), the in-process Jetway test server
//! (`jetway_server::testing`) in front of it, a gRPC client, and a direct JetStream context for
//! checking what was stored.
//!
//! Each test gets its own environment: tests then share nothing, and every nats-server is killed when
//! its test ends (a process-wide server would outlive the test binary).

#![allow(dead_code)]

use std::{
    future::IntoFuture,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    pin::Pin,
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::jetstream;
use jetway_api::{
    google::protobuf::{Any, Duration as PbDuration},
    windshift::{
        events::v1alpha1::{
            EnsureConsumerRequest, EnsureStreamRequest, EventsRequest, EventsResponse,
            PublishEventRequest, StreamPointer, ensure_stream_request, events_request,
            events_response::Response as Resp, events_service_client::EventsServiceClient,
            stream_pointer::Pointer,
        },
        test::v1::StringValue,
    },
};
pub(crate) use jetway_server::testing::TestServer;
use jetway_server::{app::Security, auth::Access, config::Limits, testing::TestServerBuilder};
use jetway_testkit::{NatsServer, eventually, eventually_within, free_port};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming, transport::Channel};

/// How long a test waits for one expected message before it fails (a hang guard, not a timing check).
pub(crate) const RECV_GUARD: Duration = Duration::from_secs(10);

/// GETs a path from the HTTP health server and returns the status code.
pub(crate) async fn http_status(addr: SocketAddr, path: &str) -> u16 {
    http_get(addr, path).await.0
}

/// GETs a path from the HTTP health server and returns the status code and body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to health port");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    (status, body.to_owned())
}

/// Waits until `/readyz` on `addr` answers `status`: 503 once Jetway has noticed NATS is away,
/// 200 once it is back.
pub(crate) async fn readyz_until(addr: SocketAddr, status: u16) {
    eventually(&format!("/readyz answers {status}"), || async {
        (http_status(addr, "/readyz").await == status).then_some(())
    })
    .await;
}

/// Everything a test needs.
pub(crate) struct Env {
    pub nats: NatsServer,
    /// The Jetway server, in front of `nats`.
    pub jetway: TestServer,
    pub client: EventsServiceClient<Channel>,
    /// Direct JetStream access, to check what Jetway stored.
    pub js: jetstream::Context,
}

impl Env {
    pub(crate) async fn start() -> Env {
        Env::start_with(Limits::default()).await
    }

    /// An environment whose Jetway server has `limits`.
    pub(crate) async fn start_with(limits: Limits) -> Env {
        Env::start_from(TestServer::builder().limits(limits)).await
    }

    /// An environment whose Jetway server has the options of `server`, in front of a nats-server
    /// of its own.
    pub(crate) async fn start_from(server: TestServerBuilder) -> Env {
        let nats = NatsServer::start();
        let jetway = server.nats_url(nats.url()).start().await;
        let client = EventsServiceClient::new(jetway.channel().await);
        let direct = async_nats::connect(nats.url())
            .await
            .expect("direct nats connection");
        Env {
            nats,
            jetway,
            client,
            js: jetstream::new(direct),
        }
    }

    /// Ensures a stream capturing `subjects`.
    pub(crate) async fn stream(&mut self, name: &str, subjects: &[&str]) {
        self.client
            .ensure_stream(stream_request(name, subjects))
            .await
            .expect("ensure stream");
    }

    /// A consumer on `stream` to ensure through the environment's client (see [`EnsureConsumer`]).
    pub(crate) fn consumer(&mut self, stream: &str) -> EnsureConsumer<'_> {
        EnsureConsumer::on(&mut self.client, stream)
    }

    /// Publishes a StringValue and returns the event id.
    pub(crate) async fn publish(&mut self, subject: &str, value: &str) -> u64 {
        self.client
            .publish_event(publish_request(subject, value))
            .await
            .expect("publish")
            .into_inner()
            .id
    }

    /// An Events stream to open on the environment's client and subscribe to `consumer` on
    /// `stream` (see [`Subscribing`]).
    pub(crate) fn subscribe(&mut self, stream: &str, consumer: &str) -> Subscribing<'_> {
        Session::subscribe(&mut self.client, stream, consumer)
    }

    /// Opens an Events stream without sending anything.
    pub(crate) async fn open_events(&mut self) -> Session {
        Session::open(&mut self.client).await
    }

    /// How many events `stream` holds, read directly from JetStream.
    pub(crate) async fn event_count(&self, stream: &str) -> u64 {
        self.stream_info(stream).await.state.messages
    }

    /// Stream info read directly from JetStream.
    pub(crate) async fn stream_info(&self, name: &str) -> jetstream::stream::Info {
        self.js
            .get_stream(name)
            .await
            .expect("stream exists")
            .cached_info()
            .clone()
    }

    /// Consumer info read directly from JetStream.
    pub(crate) async fn consumer_info(
        &self,
        stream: &str,
        consumer: &str,
    ) -> jetstream::consumer::Info {
        let stream = self.js.get_stream(stream).await.expect("stream exists");
        stream
            .consumer_info(consumer)
            .await
            .expect("consumer exists")
    }
}

/// One Events stream seen from the client.
pub(crate) struct Session {
    pub tx: Option<mpsc::Sender<EventsRequest>>,
    pub responses: Streaming<EventsResponse>,
}

impl Session {
    /// Opens an Events stream on `client` without sending anything.
    pub(crate) async fn open(client: &mut EventsServiceClient<Channel>) -> Session {
        let (tx, rx) = mpsc::channel(64);
        let responses = client
            .events(ReceiverStream::new(rx))
            .await
            .expect("open events")
            .into_inner();
        Session {
            tx: Some(tx),
            responses,
        }
    }

    /// An Events stream to open on `client` and subscribe to `consumer` on `stream` (see
    /// [`Subscribing`]).
    pub(crate) fn subscribe<'a>(
        client: &'a mut EventsServiceClient<Channel>,
        stream: &str,
        consumer: &str,
    ) -> Subscribing<'a> {
        Subscribing {
            client,
            subscribe: subscribe(stream, consumer),
        }
    }

    pub(crate) async fn send(&mut self, request: impl Into<events_request::Request>) {
        let tx = self.tx.as_ref().expect("the client half is still open");
        tx.send(EventsRequest {
            request: Some(request.into()),
        })
        .await
        .expect("send on events stream");
    }

    /// Half-closes: the client sends nothing more.
    pub(crate) fn close_send(&mut self) {
        self.tx = None;
    }

    /// The next response; panics if the stream ends or fails, or nothing comes within the guard.
    pub(crate) async fn next(&mut self) -> Resp {
        match self.try_next().await {
            Ok(Some(response)) => response,
            Ok(None) => panic!("the events stream ended"),
            Err(status) => panic!("the events stream failed: {status:?}"),
        }
    }

    /// The next response, the end of the stream (`Ok(None)`), or its error status.
    pub(crate) async fn try_next(&mut self) -> Result<Option<Resp>, Status> {
        let message = tokio::time::timeout(RECV_GUARD, self.responses.message())
            .await
            .expect("a response within the guard time")?;
        Ok(message.map(|m| m.response.expect("a response is set")))
    }

    /// Reads responses until the stream ends with an error, and returns that status.
    pub(crate) async fn expect_error(&mut self) -> Status {
        loop {
            match self.try_next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the events stream ended without an error"),
                Err(status) => return status,
            }
        }
    }

    /// The next event, skipping nothing: panics if the next response is not an event.
    pub(crate) async fn event(&mut self) -> jetway_api::windshift::events::v1alpha1::Event {
        match self.next().await {
            Resp::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    pub(crate) async fn ack(
        &mut self,
        ids: &[u64],
    ) -> jetway_api::windshift::events::v1alpha1::events_response::AckConfirmation {
        self.send(events_request::Request::Ack(events_request::Ack {
            ids: ids.to_vec(),
        }))
        .await;
        match self.next().await {
            Resp::AckConfirmation(c) => c,
            other => panic!("expected an AckConfirmation, got {other:?}"),
        }
    }

    /// A Reject of `ids` to send (see [`Rejecting`]).
    pub(crate) fn reject(&mut self, ids: &[u64]) -> Rejecting<'_> {
        Rejecting {
            session: self,
            reject: events_request::Reject {
                ids: ids.to_vec(),
                ..Default::default()
            },
        }
    }

    pub(crate) async fn ping(
        &mut self,
        ids: &[u64],
    ) -> jetway_api::windshift::events::v1alpha1::events_response::PingConfirmation {
        self.send(events_request::Request::Ping(events_request::Ping {
            ids: ids.to_vec(),
        }))
        .await;
        match self.next().await {
            Resp::PingConfirmation(c) => c,
            other => panic!("expected a PingConfirmation, got {other:?}"),
        }
    }
}

/// A consumer to ensure: unnamed (ephemeral), on every subject of its stream, starting where the
/// server starts one and with the server's processing timeout, unless a setter says otherwise.
/// [`EnsureConsumer::ensure`] sends it.
#[must_use = "nothing is ensured until `ensure` is awaited"]
pub(crate) struct EnsureConsumer<'a> {
    client: &'a mut EventsServiceClient<Channel>,
    request: EnsureConsumerRequest,
}

impl<'a> EnsureConsumer<'a> {
    /// A consumer on `stream`, to ensure through `client`.
    pub(crate) fn on(client: &'a mut EventsServiceClient<Channel>, stream: &str) -> Self {
        EnsureConsumer {
            client,
            request: EnsureConsumerRequest {
                stream: stream.into(),
                ..Default::default()
            },
        }
    }

    /// A durable consumer called `name`.
    pub(crate) fn named(mut self, name: &str) -> Self {
        self.request.name = Some(name.into());
        self
    }

    /// Only events on these subjects.
    pub(crate) fn subjects(mut self, subjects: &[&str]) -> Self {
        self.request.subjects = subjects.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Starts at `pointer`.
    pub(crate) fn from(mut self, pointer: Pointer) -> Self {
        self.request.from = Some(StreamPointer {
            pointer: Some(pointer),
        });
        self
    }

    /// Redelivers an event not settled within `timeout`.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.request.processing_timeout = Some(PbDuration::from(timeout));
        self
    }

    /// Ensures the consumer and returns its id, asking again while Jetway answers UNAVAILABLE, for
    /// at most `within` (see [`set_up`]): for a replicated consumer on a cluster.
    pub(crate) async fn ensure_within(self, within: Duration) -> String {
        let EnsureConsumer { client, request } = self;
        set_up("ensure consumer", within, || {
            let (mut client, request) = (client.clone(), request.clone());
            async move { client.ensure_consumer(request).await }
        })
        .await
        .into_inner()
        .id
    }

    /// Ensures the consumer and returns its id.
    pub(crate) async fn ensure(self) -> String {
        self.client
            .ensure_consumer(self.request)
            .await
            .expect("ensure consumer")
            .into_inner()
            .id
    }
}

/// An error of a setup call that says to try again later.
pub(crate) trait Unavailable: std::fmt::Debug {
    fn unavailable(&self) -> bool;
}

impl Unavailable for Status {
    fn unavailable(&self) -> bool {
        self.code() == Code::Unavailable
    }
}

impl Unavailable for jetway_client::Error {
    fn unavailable(&self) -> bool {
        self.code() == Some(Code::Unavailable)
    }
}

/// Runs `call`, an idempotent setup step (ensuring a stream or a consumer), until it succeeds, for
/// at most `within`. On a busy machine JetStream can take longer than Jetway's request timeout to
/// place a replicated stream or consumer on a cluster; Jetway then answers UNAVAILABLE ("timed
/// out"), which asks the caller to try again. Any other error fails the test, naming `what`.
pub(crate) async fn set_up<T, E, F, Fut>(what: &str, within: Duration, mut call: F) -> T
where
    E: Unavailable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let outcome = eventually_within(what, within, || {
        let attempt = call();
        async move {
            match attempt.await {
                Ok(value) => Some(Ok(value)),
                Err(error) if error.unavailable() => None,
                Err(error) => Some(Err(error)),
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|error| panic!("{what}: {error:?}"))
}

/// A Subscribe request to `consumer` on `stream`; `max_processing_events` is left to the server
/// unless [`Subscribe::max`] sets it.
#[derive(Debug, Clone)]
pub(crate) struct Subscribe(events_request::Subscribe);

/// A Subscribe request to `consumer` on `stream` (see [`Subscribe`]).
pub(crate) fn subscribe(stream: &str, consumer: &str) -> Subscribe {
    Subscribe(events_request::Subscribe {
        stream: stream.into(),
        consumer: consumer.into(),
        max_processing_events: None,
    })
}

impl Subscribe {
    /// At most `max` events in processing at once.
    pub(crate) fn max(mut self, max: u64) -> Self {
        self.0.max_processing_events = Some(max);
        self
    }
}

impl From<Subscribe> for events_request::Request {
    fn from(subscribe: Subscribe) -> Self {
        events_request::Request::Subscribe(subscribe.0)
    }
}

/// An Events stream to open and subscribe on. Awaiting it returns the session once its
/// `Subscribed` came (and panics on any other answer); [`Subscribing::raw`] returns whatever came
/// first.
#[must_use = "nothing is sent until it is awaited"]
pub(crate) struct Subscribing<'a> {
    client: &'a mut EventsServiceClient<Channel>,
    subscribe: Subscribe,
}

impl Subscribing<'_> {
    /// At most `max` events in processing at once.
    pub(crate) fn max(mut self, max: u64) -> Self {
        self.subscribe = self.subscribe.max(max);
        self
    }

    /// Opens the stream, sends the Subscribe, and returns the session with the first response.
    pub(crate) async fn raw(self) -> (Session, Result<Option<Resp>, Status>) {
        let mut session = Session::open(self.client).await;
        session.send(self.subscribe).await;
        let first = session.try_next().await;
        (session, first)
    }

    async fn subscribed(self) -> Session {
        let mut session = Session::open(self.client).await;
        session.send(self.subscribe).await;
        match session.next().await {
            Resp::Subscribed(_) => session,
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }
}

impl<'a> IntoFuture for Subscribing<'a> {
    type Output = Session;
    type IntoFuture = Pin<Box<dyn Future<Output = Session> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.subscribed())
    }
}

/// A Reject to send on a session: the events come again after the consumer's backoff, unless a
/// setter says otherwise. Awaiting it returns the `RejectConfirmation`.
#[must_use = "nothing is sent until it is awaited"]
pub(crate) struct Rejecting<'a> {
    session: &'a mut Session,
    reject: events_request::Reject,
}

impl Rejecting<'_> {
    /// For good: the events are not delivered again.
    pub(crate) fn permanently(mut self) -> Self {
        self.reject.permanently = Some(true);
        self
    }

    /// The events come again after `delay`.
    pub(crate) fn delay(mut self, delay: Duration) -> Self {
        self.reject.delay = Some(PbDuration::from(delay));
        self
    }

    async fn confirmed(
        self,
    ) -> jetway_api::windshift::events::v1alpha1::events_response::RejectConfirmation {
        self.session
            .send(events_request::Request::Reject(self.reject))
            .await;
        match self.session.next().await {
            Resp::RejectConfirmation(c) => c,
            other => panic!("expected a RejectConfirmation, got {other:?}"),
        }
    }
}

impl<'a> IntoFuture for Rejecting<'a> {
    type Output = jetway_api::windshift::events::v1alpha1::events_response::RejectConfirmation;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.confirmed())
    }
}

pub(crate) fn stream_request(name: &str, subjects: &[&str]) -> EnsureStreamRequest {
    EnsureStreamRequest {
        name: name.into(),
        source: Some(ensure_stream_request::Source::Subjects(
            ensure_stream_request::Subjects {
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
            },
        )),
        ..Default::default()
    }
}

pub(crate) fn publish_request(subject: &str, value: &str) -> PublishEventRequest {
    PublishEventRequest {
        subject: subject.into(),
        data: Some(Any::pack(&StringValue {
            value: value.into(),
        })),
        ..Default::default()
    }
}

/// A valid `jetway.events.v1` event on `s.x` with a raw body.
pub(crate) fn raw_event() -> jetway_api::jetway::events::v1::PublishEventRequest {
    use jetway_api::jetway::events::v1::{self as jw, publish_event_request::Payload};

    jw::PublishEventRequest {
        subject: "s.x".into(),
        payload: Some(Payload::Raw(jw::RawPayload {
            data: b"v".to_vec().into(),
            content_type: String::new(),
        })),
        ..Default::default()
    }
}

/// A PublishStream request tagged `correlation_id`: [`raw_event`] on `subject`.
pub(crate) fn raw_stream_item(
    correlation_id: u64,
    subject: &str,
) -> jetway_api::jetway::events::v1::PublishStreamRequest {
    jetway_api::jetway::events::v1::PublishStreamRequest {
        correlation_id,
        event: Some(jetway_api::jetway::events::v1::PublishEventRequest {
            subject: subject.into(),
            ..raw_event()
        }),
    }
}

/// The StringValue inside an event.
pub(crate) fn value_of(event: &jetway_api::windshift::events::v1alpha1::Event) -> String {
    event
        .data
        .as_ref()
        .expect("event data")
        .unpack::<StringValue>()
        .expect("a StringValue")
        .expect("decodes")
        .value
}

/// Asserts that a call failed with `code` and a message mentioning `needle` (e.g. the field name).
#[track_caller]
pub(crate) fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    needle: &str,
) {
    match result {
        Ok(value) => panic!("expected {code:?} mentioning {needle:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "status: {status:?}");
            assert!(
                status.message().contains(needle),
                "message {:?} should mention {needle:?}",
                status.message()
            );
        }
    }
}

impl Env {
    /// Polls JetStream's view of a consumer until `check` holds, and returns that view. The way to
    /// wait for an ack, nak or pull to reach JetStream (settlements are fire-and-forget publishes).
    pub(crate) async fn consumer_info_until(
        &self,
        stream: &str,
        consumer: &str,
        what: &str,
        check: impl Fn(&jetstream::consumer::Info) -> bool,
    ) -> jetstream::consumer::Info {
        let check = &check;
        eventually(what, move || async move {
            let info = self.consumer_info(stream, consumer).await;
            check(&info).then_some(info)
        })
        .await
    }
}

impl Session {
    /// Sends a request exactly as given, e.g. one with no oneof case set.
    pub(crate) async fn send_raw(&mut self, request: EventsRequest) {
        let tx = self.tx.as_ref().expect("the client half is still open");
        tx.send(request).await.expect("send on events stream");
    }
}

/// Runs the real `jetway-server` binary with the given environment (and nothing inherited but PATH).
pub(crate) fn jetway_server(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jetway-server"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// The log lines of a [`jetway_server`] child, as they come; the channel closes when it exits.
pub(crate) fn log_lines(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let (lines_tx, lines) = mpsc::unbounded_channel();
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The next log line of a [`jetway_server`] child, or `None` once it has exited.
pub(crate) async fn next_line(lines: &mut mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(RECV_GUARD, lines.recv())
        .await
        .expect("a log line or the end of the log")
}

/// A server against `nats` whose clients are those of the file at `path`, reloaded when it
/// changes; reflection stays on.
pub(crate) async fn with_clients_file(nats: &NatsServer, path: &Path) -> TestServer {
    TestServer::builder()
        .nats_url(nats.url())
        .security(Security {
            access: Access::load(path).unwrap(),
            reflection: true,
        })
        .start()
        .await
}

/// A `jetway-server` process (the real binary) serving on free loopback ports against a NATS URL.
/// It is killed (SIGKILL) when dropped.
pub(crate) struct JetwayProcess {
    child: Child,
    pub grpc_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// Its log, kept open so that its writes to stderr never fail.
    log: mpsc::UnboundedReceiver<String>,
}

impl JetwayProcess {
    /// Runs the binary against `nats_url` on free ports and returns once `/readyz` answers 200.
    pub(crate) async fn spawn(nats_url: &str) -> JetwayProcess {
        // Not the kernel's choice of ports: a drill may restart it on them (see `free_port`).
        JetwayProcess::spawn_on(nats_url, free_port(), free_port()).await
    }

    /// Runs the binary against `nats_url` on the given gRPC and health ports and
    /// returns once `/readyz` answers 200.
    pub(crate) async fn spawn_on(
        nats_url: &str,
        grpc_port: u16,
        health_port: u16,
    ) -> JetwayProcess {
        let (grpc_port, health_port) = (grpc_port.to_string(), health_port.to_string());
        let mut child = jetway_server(&[
            ("NATS_URL", nats_url),
            ("GRPC_PORT", &grpc_port),
            ("HEALTH_PORT", &health_port),
            // Replicas and restarts run side by side: never the fixed default.
            ("HTTP_PORT", "0"),
            ("LISTEN_HOST", "127.0.0.1"),
        ])
        .spawn()
        .expect("run jetway-server");
        let mut log = log_lines(&mut child);
        // The server logs where it listens once both ports are bound.
        let mut seen = Vec::new();
        let (grpc_addr, health_addr) = loop {
            let Some(line) = next_line(&mut log).await else {
                panic!(
                    "jetway-server exited at startup; its log:\n{}",
                    seen.join("\n")
                );
            };
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!(
                    "jetway-server wrote a log line that is not JSON ({e}): {line}\nbefore it:\n{}",
                    seen.join("\n")
                )
            });
            seen.push(line);
            if entry["message"] == "serving" {
                let addr = |key: &str| {
                    entry[key]
                        .as_str()
                        .and_then(|addr| addr.parse().ok())
                        .expect("a listening address")
                };
                break (addr("grpc_addr"), addr("health_addr"));
            }
        };
        eventually("jetway-server is ready", || async {
            (http_status(health_addr, "/readyz").await == 200).then_some(())
        })
        .await;
        JetwayProcess {
            child,
            grpc_addr,
            health_addr,
            log,
        }
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to jetway-server")
    }

    /// Stops the process with SIGTERM (a graceful shutdown, as an orchestrator's rolling restart
    /// does) and waits for it to exit; returns its exit status.
    pub(crate) async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a valid signal touches no memory; the child is not reaped yet, so
        // its pid cannot belong to another process.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "send SIGTERM to jetway-server");
        let child = &mut self.child;
        eventually("jetway-server exits after SIGTERM", || {
            let exited = child.try_wait().expect("the child's status");
            async move { exited }
        })
        .await
    }

    /// The log lines not read yet, up to the end of the log: call once the process has exited.
    pub(crate) async fn rest_of_log(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut self.log).await {
            lines.push(line);
        }
        lines
    }

    /// Kills the process with SIGKILL (a crash: nothing is drained or nak'ed) and reaps it.
    pub(crate) fn kill(&mut self) {
        // An error means it has already exited, which is what is asked for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for JetwayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
