//! The connections of every listener and what every call costs them: the cap on open connections
//! per port ([`Gate`]), the idle timeout of gRPC connections ([`GrpcConn`]), HTTP/2's receive
//! windows, the server-wide cap on streaming calls and the status of a request over the message
//! size limit ([`CallLayer`]), and the HTTP/1 server of the health port ([`serve_health`]) and of
//! the HTTP API port ([`serve_api`]) with their header-read timeout. The values come from [`Limits`].
//!
//! A connection over a port's cap is accepted and closed at once: the client sees it reset and can
//! retry, instead of hanging in the kernel's backlog until its own timeout, and the warning in the
//! log says which variable to raise.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use prost::Message;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Status,
    body::Body,
    codegen::http,
    transport::server::{Connected, TcpConnectInfo, TlsConnectInfo},
};

use crate::infra::{
    config::Limits,
    locked,
    tls::{self, Accepted, Io, ServerTls, TLS_HANDSHAKE_FAILURES, TLS_HANDSHAKE_TIMEOUT},
};

/// HTTP/2 receive window of one connection. h2 closes a connection with GOAWAY
/// `ENHANCE_YOUR_CALM` ("too_many_data_frames") once the DATA frames it has received and the
/// server has not read yet cost more than half of this window, a frame under 256 bytes costing
/// 256 minus its size (h2's guard against floods of tiny frames). With hyper's adaptive window the
/// connection and stream windows were equal, so a single stream of tiny messages (a PublishStream
/// of small events, an Events stream acking one id at a time) that arrived faster than the server
/// read them broke the whole connection long before flow control slowed the client.
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// HTTP/2 receive window of one stream: 1/64 of the connection's, so that one stream's unread
/// frames stay within h2's budget even when each carries a message of 3 bytes (a frame of 8:
/// 256 KiB / 8 × 248 < 8 MiB). Flow control then holds back a client that sends faster than the
/// server reads, as the protocol intends. It also bounds what one connection can make the server
/// buffer to [`CONNECTION_WINDOW`], as the adaptive window's largest size did.
pub const STREAM_WINDOW: u32 = CONNECTION_WINDOW / 64;

/// How tonic's status for a request message over `max_decoding_message_size` begins; see
/// [`over_message_limit`].
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: ";

/// A listener with a cap on the connections open through it.
pub struct Gate {
    listener: TcpListener,
    slots: Slots,
}

/// The connection slots of one port.
struct Slots {
    permits: Arc<Semaphore>,
    limit: u32,
    /// The variable that sets `limit`, for the warning.
    variable: &'static str,
    /// The port's label on the refused-connections counter.
    port: &'static str,
    /// True from the first refused connection until one is admitted again, so a flood of refused
    /// connections logs one warning rather than one each.
    saturated: AtomicBool,
}

impl Gate {
    /// Admits at most `limit` connections through `listener` at once (`variable` sets `limit`;
    /// `port` names the port in metrics).
    pub fn new(
        listener: TcpListener,
        limit: usize,
        variable: &'static str,
        port: &'static str,
    ) -> Gate {
        // More than u32::MAX connections cannot be open anyway (nor waited for at shutdown).
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        Gate {
            listener,
            slots: Slots {
                permits: Arc::new(Semaphore::new(limit as usize)),
                limit,
                variable,
                port,
                saturated: AtomicBool::new(false),
            },
        }
    }

    /// The next connection within the cap, with the slot it holds until it is dropped. Connections
    /// over the cap are closed as they arrive.
    async fn accept(&self) -> (TcpStream, OwnedSemaphorePermit) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            };
            match self.slots.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    self.slots.saturated.store(false, Ordering::Relaxed);
                    return (stream, permit);
                }
                Err(_) => self.slots.refuse(stream),
            }
        }
    }
}

impl Slots {
    fn refuse(&self, stream: TcpStream) {
        drop(stream);
        metrics::counter!(CONNECTIONS_REFUSED, "port" => self.port).increment(1);
        if !self.saturated.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = self.limit,
                port = self.port,
                "{} connections are open, the most {} allows; new connections are closed until one ends",
                self.limit,
                self.variable,
            );
        }
    }

    /// Resolves once every admitted connection has closed.
    async fn drained(&self) {
        self.permits.acquire_many(self.limit).await.ok();
    }
}

/// Connections closed at once because their port had its most open (see [`Limits`]).
pub const CONNECTIONS_REFUSED: &str = "jetway_connections_refused_total";

/// Errors of `accept` that concern one connection, which is gone already: the next accept goes on
/// at once. Anything else (out of file descriptors, most likely) would fail again immediately, so
/// the loop waits a moment instead of spinning.
async fn accept_failed(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(%err, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The gRPC port's connections for tonic: within the cap, with Nagle off (`tcp_nodelay` on tonic's
/// builder does not reach a pre-bound listener), each closed after `idle_timeout` with no call.
/// With `tls`, each completes its handshake on a task of its own (a slow one holds up no other)
/// within [`TLS_HANDSHAKE_TIMEOUT`]; a client that speaks plain text is answered as
/// [`tls::refuse_plaintext_grpc`] says. Dropping the stream closes the listener.
pub fn grpc_incoming(
    gate: Gate,
    idle_timeout: Duration,
    tls: Option<ServerTls>,
) -> futures::stream::BoxStream<'static, Result<GrpcConn, Infallible>> {
    use futures::StreamExt as _;
    let Some(tls) = tls else {
        return futures::stream::unfold(gate, move |gate| async move {
            let (stream, permit) = gate.accept().await;
            stream.set_nodelay(true).ok();
            let conn = GrpcConn::new(Io::Plain(stream), permit, idle_timeout);
            Some((Ok(conn), gate))
        })
        .boxed();
    };
    // As many handshakes as connections may be open: the gate bounds both.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let (stream, permit) = tokio::select! {
                () = tx.closed() => break,
                accepted = gate.accept() => accepted,
            };
            stream.set_nodelay(true).ok();
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept_grpc(stream)).await {
                    Ok(Ok(Accepted::Tls(stream))) => {
                        let conn = GrpcConn::new(Io::Tls(stream), permit, idle_timeout);
                        // Fails only when the server has stopped: the connection closes.
                        tx.send(Ok(conn)).await.ok();
                    }
                    Ok(Ok(Accepted::Plaintext(stream))) => {
                        handshake_failed("grpc", &"plain text on the TLS port");
                        tls::refuse_plaintext_grpc(stream).await;
                        drop(permit);
                    }
                    Ok(Err(err)) => handshake_failed("grpc", &err),
                    Err(_) => handshake_failed("grpc", &"timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Counts and logs (at debug: any client can cause it) a connection that did not complete its TLS
/// handshake.
fn handshake_failed(port: &'static str, reason: &dyn std::fmt::Display) {
    metrics::counter!(TLS_HANDSHAKE_FAILURES, "port" => port).increment(1);
    tracing::debug!(port, %reason, "TLS handshake failed");
}

/// The calls in progress on one gRPC connection (streaming ones counted apart too), and since when
/// it has had none.
#[derive(Debug)]
pub struct Activity {
    calls: AtomicUsize,
    streaming: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            calls: AtomicUsize::new(0),
            streaming: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// Counts a streaming call until the guard is dropped, unless the connection already has
    /// `most` open.
    fn start_streaming(self: &Arc<Self>, most: usize) -> Option<StreamingCall> {
        self.streaming
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < most).then_some(open + 1)
            })
            .ok()?;
        Some(StreamingCall(self.clone()))
    }

    /// Counts a call until the guard is dropped.
    fn start(self: &Arc<Self>) -> CallInProgress {
        self.calls.fetch_add(1, Ordering::AcqRel);
        CallInProgress(self.clone())
    }

    /// When the connection's last call ended (or it was opened), or `None` while a call runs.
    fn idle_since(&self) -> Option<Instant> {
        if self.calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = locked(&self.idle_since);
        Some(*idle_since)
    }
}

/// One call in progress on a connection.
#[derive(Debug)]
struct CallInProgress(Arc<Activity>);

impl Drop for CallInProgress {
    fn drop(&mut self) {
        // The time first: whoever sees the count reach zero must see when it did.
        let mut idle_since = locked(&self.0.idle_since);
        *idle_since = Instant::now();
        drop(idle_since);
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One streaming call in progress on a connection.
#[derive(Debug)]
struct StreamingCall(Arc<Activity>);

impl Drop for StreamingCall {
    fn drop(&mut self) {
        self.0.streaming.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request learns about its connection: tonic's TCP details, its TLS details on a TLS
/// connection, and the connection's [`Activity`].
#[derive(Debug, Clone)]
pub struct ConnInfo {
    tcp: TcpConnectInfo,
    tls: Option<TlsConnectInfo<TcpConnectInfo>>,
    activity: Arc<Activity>,
}

/// A gRPC connection that reads as closed once it has had no call in progress for the idle
/// timeout. A new call starts on the connection's own task, in the same poll that reads its
/// headers, so a call that has arrived is always counted before the connection can look idle; only
/// a call still on the wire when the connection closes is lost, and its client sees UNAVAILABLE.
/// Keepalive pings and their answers are not calls: they keep nothing open.
pub struct GrpcConn {
    io: Io,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    closed: bool,
    _slot: OwnedSemaphorePermit,
}

impl GrpcConn {
    fn new(io: Io, slot: OwnedSemaphorePermit, idle_timeout: Duration) -> GrpcConn {
        GrpcConn {
            io,
            activity: Arc::new(Activity::new()),
            idle_timeout,
            timer: Box::pin(tokio::time::sleep(idle_timeout)),
            closed: false,
            _slot: slot,
        }
    }

    /// True once the connection has had no call for the idle timeout. Otherwise the timer is set
    /// for the moment that would be, or, while a call runs, for one idle timeout from now: a call's
    /// end does not wake the connection, so the timer looks again then.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let deadline = match self.activity.idle_since() {
                Some(since) if since + self.idle_timeout <= now => return true,
                Some(since) => since + self.idle_timeout,
                None => now + self.idle_timeout,
            };
            self.timer.as_mut().reset(deadline);
        }
        false
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            // What the client sent comes first: it may be the next call.
            if let Poll::Ready(read) = Pin::new(&mut this.io).poll_read(cx, buf) {
                return Poll::Ready(read);
            }
            if !this.idle_expired(cx) {
                return Poll::Pending;
            }
            tracing::debug!(timeout = ?this.idle_timeout, "closing a gRPC connection without calls");
            this.closed = true;
        }
        // The end of the stream: HTTP/2 closes the connection, which has no call to cut off.
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.io.tcp_info(),
            tls: self.io.tls_info(),
            activity: self.activity.clone(),
        }
    }
}

/// The full names (`/package.Service/Method`) of the methods in `descriptor_sets` whose request
/// or response streams.
pub fn streaming_methods(descriptor_sets: &[&[u8]]) -> Result<HashSet<String>, prost::DecodeError> {
    let mut methods = HashSet::new();
    for set in descriptor_sets {
        for file in prost_types::FileDescriptorSet::decode(*set)?.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    if method.client_streaming() || method.server_streaming() {
                        let service = match package {
                            "" => service.name().to_owned(),
                            package => format!("{package}.{}", service.name()),
                        };
                        methods.insert(format!("/{service}/{}", method.name()));
                    }
                }
            }
        }
    }
    Ok(methods)
}

/// The tower layer over every gRPC call: counts the call on its connection (see [`GrpcConn`])
/// until its response ends, holds one of the server's streaming-call slots for a streaming method,
/// and answers a request over the message size limit as [`over_message_limit`] says.
#[derive(Clone)]
pub struct CallLayer {
    calls: Arc<Calls>,
}

struct Calls {
    streaming: HashSet<String>,
    slots: Arc<Semaphore>,
    max_streaming: usize,
    /// The most streaming calls one connection may hold: see [`STREAMING_SHARE_OF_ONE_CONNECTION`].
    max_streaming_per_connection: usize,
}

/// One connection may hold at most this fraction (1/N) of `GRPC_MAX_STREAMING_CALLS`, at least one
/// call: a few connections of one client cannot take every streaming slot of the server (cheap
/// calls such as health Watch would otherwise lock every Events session out).
pub const STREAMING_SHARE_OF_ONE_CONNECTION: usize = 8;

impl CallLayer {
    /// A layer for a server whose streaming methods are `streaming` (see [`streaming_methods`]).
    pub fn new(streaming: HashSet<String>, limits: &Limits) -> CallLayer {
        // Past the semaphore's own maximum (2^61 on 64 bits) the cap could never be reached.
        let max_streaming = limits.grpc_max_streaming_calls.min(Semaphore::MAX_PERMITS);
        CallLayer {
            calls: Arc::new(Calls {
                streaming,
                slots: Arc::new(Semaphore::new(max_streaming)),
                max_streaming,
                max_streaming_per_connection: (max_streaming / STREAMING_SHARE_OF_ONE_CONNECTION)
                    .max(1),
            }),
        }
    }
}

impl<S> tower::Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> CallService<S> {
        CallService {
            inner,
            calls: self.calls.clone(),
        }
    }
}

/// The service of [`CallLayer`].
#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    calls: Arc<Calls>,
}

/// What a call holds until its response ends.
#[derive(Default)]
struct Held {
    _call: Option<CallInProgress>,
    _streaming: Option<StreamingCall>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl<S, B> tower::Service<http::Request<B>> for CallService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let mut held = Held::default();
        let streaming = self.calls.streaming.contains(request.uri().path());
        if let Some(info) = request.extensions_mut().remove::<ConnInfo>() {
            held._call = Some(info.activity.start());
            if streaming {
                let most = self.calls.max_streaming_per_connection;
                match info.activity.start_streaming(most) {
                    Some(call) => held._streaming = Some(call),
                    None => {
                        let status = Status::resource_exhausted(format!(
                            "this connection has {most} streaming calls open, the most one \
                             connection may hold (1/{STREAMING_SHARE_OF_ONE_CONNECTION} of \
                             GRPC_MAX_STREAMING_CALLS); retry once one has ended, or use another \
                             connection"
                        ));
                        return Box::pin(std::future::ready(Ok(status.into_http())));
                    }
                }
            }
            // Where tonic's `Request::remote_addr` and `Request::peer_certs` look for them.
            match info.tls {
                Some(tls) => {
                    request.extensions_mut().insert(tls);
                }
                None => {
                    request.extensions_mut().insert(info.tcp);
                }
            }
        }
        if streaming {
            match self.calls.slots.clone().try_acquire_owned() {
                Ok(slot) => held._slot = Some(slot),
                Err(_) => {
                    let status = Status::resource_exhausted(format!(
                        "{} streaming calls are open on this server, the most GRPC_MAX_STREAMING_CALLS \
                         allows; retry once one has ended",
                        self.calls.max_streaming
                    ));
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // A status in the headers is a call that failed before its handler ran (tonic could
            // not decode the request, say).
            let response = match Status::from_header_map(response.headers()) {
                Some(status) if status.code() == Code::OutOfRange => {
                    over_message_limit(status).into_http()
                }
                _ => response,
            };
            Ok(response.map(|body| Body::new(HeldBody { body, _held: held })))
        })
    }
}

/// A response body that keeps what its call holds until it ends or is dropped.
struct HeldBody {
    body: Body,
    _held: Held,
}

impl hyper::body::Body for HeldBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// tonic answers a request message over the service's `max_decoding_message_size` (checked from
/// its length prefix, before the message is read) with OUT_OF_RANGE in words of its own; Jetway
/// answers RESOURCE_EXHAUSTED naming the variable that sets the limit, as for its other limits.
/// Every other status is returned as it is.
pub fn over_message_limit(status: Status) -> Status {
    if status.code() != Code::OutOfRange {
        return status;
    }
    match status.message().strip_prefix(TONIC_TOO_LARGE) {
        Some(sizes) => Status::resource_exhausted(format!(
            "request: the message is over GRPC_MAX_MESSAGE_BYTES ({sizes})"
        )),
        None => status,
    }
}

/// The most connections one address may have open on the health port, whatever
/// `HEALTH_MAX_CONNECTIONS` allows in all: probes (the kubelet) and scrapers (Prometheus) need one or
/// two each, and one address cannot fill the port and so fail the others' probes.
pub const HEALTH_MAX_CONNECTIONS_PER_ADDRESS: usize = 8;

/// How long a health connection may live, in header timeouts (60 s with the default of 10 s): a
/// client that pipelines requests and never reads the answers is not held by the header timeout,
/// which runs only while headers are read.
pub const HEALTH_CONNECTION_LIFETIME_IN_HEADER_TIMEOUTS: u32 = 6;

/// Serves the HTTP health routes on `gate` until `shutdown` is cancelled, then closes the listener
/// and waits for the open connections to finish their requests.
///
/// HTTP/1.1 only (probes and Prometheus speak it); with `tls`, over TLS, the handshake within one
/// header timeout (a plain-text client is answered as [`tls::refuse_plaintext_http`] says). A
/// connection whose request headers are not
/// complete `header_timeout` after the server started waiting for them is closed: this bounds a
/// request line or headers sent slowly or never finished, and an idle keep-alive connection. Every
/// connection is closed after [`HEALTH_CONNECTION_LIFETIME_IN_HEADER_TIMEOUTS`] header timeouts (its
/// request in progress first given one more to finish), and one address holds at most
/// [`HEALTH_MAX_CONNECTIONS_PER_ADDRESS`] of the port's connections.
pub async fn serve_health(
    gate: Gate,
    router: axum::Router,
    header_timeout: Duration,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) {
    let rules = Http1Rules {
        header_timeout,
        lifetime: Some(
            header_timeout.saturating_mul(HEALTH_CONNECTION_LIFETIME_IN_HEADER_TIMEOUTS),
        ),
        per_address: Some(HEALTH_MAX_CONNECTIONS_PER_ADDRESS),
        client_certificates: false,
    };
    serve_http1(gate, router, rules, tls, shutdown).await;
}

/// Serves the HTTP API's routes on `gate` until `shutdown` is cancelled, then closes the listener
/// and waits for the open connections to finish their requests (the API's live streams end on
/// their own at shutdown).
///
/// HTTP/1.1, with the same header timeout as the health port, but no connection lifetime (a live
/// SSE subscription holds its connection for as long as the client follows it) and no cap per
/// address (many clients may share one behind a proxy or NAT): only the port's cap. With
/// `TLS_CLIENT_CA_FILE`, client certificates are required as on the gRPC port; each request
/// carries its connection's address and TLS details where the authentication looks for them.
pub async fn serve_api(
    gate: Gate,
    router: axum::Router,
    header_timeout: Duration,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) {
    let rules = Http1Rules {
        header_timeout,
        lifetime: None,
        per_address: None,
        client_certificates: true,
    };
    serve_http1(gate, router, rules, tls, shutdown).await;
}

/// What an HTTP/1 port enforces on each connection.
struct Http1Rules {
    header_timeout: Duration,
    /// Each connection is closed this long after it opened (its request in progress first given
    /// one more header timeout).
    lifetime: Option<Duration>,
    /// The most connections one peer address may hold.
    per_address: Option<usize>,
    /// Whether the TLS handshake asks for client certificates as the gRPC port's does (the API)
    /// or for none (health: probes have none).
    client_certificates: bool,
}

/// The HTTP/1 server of the health and API ports; with `tls`, over TLS (HTTP/1.1 by ALPN), the
/// handshake within one header timeout. Each request carries its connection's tonic TCP or TLS
/// details, as gRPC calls do, for the authentication to read.
async fn serve_http1(
    gate: Gate,
    router: axum::Router,
    rules: Http1Rules,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) {
    let Http1Rules {
        header_timeout,
        lifetime,
        per_address,
        client_certificates,
    } = rules;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let addresses = Arc::new(PerAddress::default());
    loop {
        let (stream, slot) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = gate.accept() => accepted,
        };
        let address_slot = match per_address {
            None => None,
            Some(most) => match addresses.admit(&stream, most) {
                Some(address_slot) => Some(address_slot),
                None => {
                    // Not the port's cap (its warning would name the wrong variable): one
                    // address's share.
                    tracing::debug!(peer = ?stream.peer_addr().ok(), port = gate.slots.port, "a connection over its address's share is closed");
                    metrics::counter!(CONNECTIONS_REFUSED, "port" => gate.slots.port).increment(1);
                    continue;
                }
            },
        };
        stream.set_nodelay(true).ok();
        let (http, router, shutdown, tls) =
            (http.clone(), router.clone(), shutdown.clone(), tls.clone());
        let port = gate.slots.port;
        tokio::spawn(async move {
            let io = match tls {
                None => Io::Plain(stream),
                Some(tls) => {
                    let accepting = async {
                        if client_certificates {
                            tls.accept_api(stream).await
                        } else {
                            tls.accept_health(stream).await
                        }
                    };
                    match tokio::time::timeout(header_timeout, accepting).await {
                        Ok(Ok(Accepted::Tls(stream))) => Io::Tls(stream),
                        Ok(Ok(Accepted::Plaintext(stream))) => {
                            handshake_failed(port, &"plain text on the TLS port");
                            tls::refuse_plaintext_http(stream).await;
                            return;
                        }
                        Ok(Err(err)) => return handshake_failed(port, &err),
                        Err(_) => return handshake_failed(port, &"timed out"),
                    }
                }
            };
            let (tcp, tls) = (io.tcp_info(), io.tls_info());
            // Where the gRPC port's `CallLayer` puts them: the TLS info on a TLS connection (it
            // holds the TCP info), the TCP info on a plain one.
            let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
                if let Some(tls) = &tls {
                    request.extensions_mut().insert(tls.clone());
                } else {
                    request.extensions_mut().insert(tcp.clone());
                }
                tower::Service::call(&mut router.clone(), request)
            });
            let connection = http.serve_connection(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            let expired = async {
                match lifetime {
                    Some(lifetime) => tokio::time::sleep(lifetime).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                () = expired => {
                    connection.as_mut().graceful_shutdown();
                    // A request in progress gets one more header timeout, then the connection goes.
                    tokio::time::timeout(header_timeout, connection)
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(err) = result {
                tracing::debug!(%err, port, "HTTP connection ended");
            }
            drop((slot, address_slot));
        });
    }
    let Gate { listener, slots } = gate;
    drop(listener);
    slots.drained().await;
}

/// The connections open per peer address (see [`HEALTH_MAX_CONNECTIONS_PER_ADDRESS`]).
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// A slot for `stream`'s peer, or `None` if that address has `most` open, or the peer is gone
    /// already.
    fn admit(self: &Arc<Self>, stream: &TcpStream, most: usize) -> Option<AddressSlot> {
        let address = stream.peer_addr().ok()?.ip();
        let mut open = locked(&self.open);
        let count = open.entry(address).or_default();
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: Arc::clone(self),
            address,
        })
    }
}

/// One connection's place in [`PerAddress`], given back on drop.
struct AddressSlot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = locked(&self.table.open);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_methods_come_from_the_descriptors() {
        let methods = streaming_methods(&[
            jetway_api::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
        .unwrap();
        for method in [
            "/windshift.events.v1alpha1.EventsService/Events",
            "/jetway.events.v1.EventsService/PublishStream",
            "/jetway.events.v1.EventsService/ReadEvents",
            "/jetway.events.v1.EventsService/Subscribe",
            "/jetway.state.v1.StateService/Watch",
            "/jetway.admin.v1.AdminService/ListDeadLetters",
            "/grpc.health.v1.Health/Watch",
        ] {
            assert!(
                methods.contains(method),
                "{method} missing from {methods:?}"
            );
        }
        for unary in [
            "/windshift.events.v1alpha1.EventsService/PublishEvent",
            "/jetway.events.v1.EventsService/PublishBatch",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(!methods.contains(unary), "{unary} is unary");
        }
    }

    #[test]
    fn tonic_s_message_size_status_names_the_variable() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 5000 bytes, the limit is: 4096 bytes",
        );
        let status = over_message_limit(tonic);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "request: the message is over GRPC_MAX_MESSAGE_BYTES (found 5000 bytes, the limit is: 4096 bytes)"
        );
        let other = over_message_limit(Status::out_of_range("from.id: past the end"));
        assert_eq!(other.code(), Code::OutOfRange);
        assert_eq!(
            over_message_limit(Status::not_found("x")).code(),
            Code::NotFound
        );
    }

    #[tokio::test]
    async fn a_connection_idles_only_without_calls() {
        let activity = Arc::new(Activity::new());
        assert!(
            activity.idle_since().is_some(),
            "a new connection has no call"
        );
        let call = activity.start();
        let other = activity.start();
        assert_eq!(activity.idle_since(), None);
        drop(call);
        assert_eq!(activity.idle_since(), None, "one call is still in progress");
        let before = Instant::now();
        drop(other);
        let since = activity.idle_since().expect("idle again");
        assert!(since >= before, "idle from the end of the last call");
    }
}
