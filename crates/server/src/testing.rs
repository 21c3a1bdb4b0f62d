//! The in-process Jetway server that tests run against (behind the `testing` feature): the server's,
//! the SDK's and the CLI's integration tests all start, stop and restart it the same way.
//!
//! A [`TestServer`] serves [`app::serve`] on loopback ports inside the test's process, in front of a
//! real nats-server: one it starts itself (from `jetway-testkit`, killed with the last server using
//! it), or one the test already runs (a cluster, a proxy, a server the test stops and restarts). It
//! keeps its ports across [`TestServer::stop`] and [`TestServer::start_again`], the way a deployment
//! restarts a server, so clients given its URL find it again.
//!
//! A failed step panics: in a test harness a panic is the failed test, with its message.
#![expect(
    clippy::expect_used,
    reason = "a test harness: a step that fails fails the test, and its panic message says which"
)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use jetway_core::{ConnectSettings, Nats, NatsSecurity};
use jetway_testkit::{NatsServer, eventually};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    app::{self, Listeners, Security},
    config::Limits,
    http::cors::Cors,
    infra::tls::ServerTls,
};

/// How long [`TestServer::stop`] waits for a graceful shutdown before it fails the test (a hang
/// guard, not a timing check).
const STOP_GUARD: Duration = Duration::from_secs(10);

/// A Jetway server served in this process on loopback ports, in front of a real nats-server.
/// Dropping it shuts it down (without waiting).
pub struct TestServer {
    /// The nats-server this server started, shared with the replicas started [`TestServer::beside`]
    /// it and killed with the last of them; `None` when it serves in front of the test's own.
    nats: Option<Arc<NatsServer>>,
    nats_url: String,
    /// The options it was started with; a replica and a restart reuse them.
    options: TestServerBuilder,
    grpc_addr: SocketAddr,
    health_addr: SocketAddr,
    http_addr: SocketAddr,
    running: Option<Running>,
}

/// Options for a [`TestServer`]; [`TestServerBuilder::start`] starts it.
#[derive(Clone, Default)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct TestServerBuilder {
    nats_url: Option<String>,
    nats_security: NatsSecurity,
    limits: Limits,
    security: Security,
    tls: Option<TestTls>,
    cors: Cors,
}

/// The server's TLS, and how the harness's own clients connect to it.
#[derive(Debug, Clone)]
struct TestTls {
    server: ServerTls,
    client: ClientTlsConfig,
}

/// One run of the server, from a start to a stop.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), app::ServeError>>,
}

impl TestServer {
    /// Options for a server: by default it starts its own nats-server and has the default limits.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// Starts a nats-server and a Jetway server with the default limits in front of it, and returns
    /// once Jetway reports SERVING.
    pub async fn start() -> TestServer {
        TestServer::builder().start().await
    }

    /// Starts another Jetway server with the same options on other free ports, in front of the
    /// same nats-server: a replica.
    pub async fn beside(&self) -> TestServer {
        TestServer::serve(
            self.nats.clone(),
            self.nats_url.clone(),
            self.options.clone(),
            free_listeners().await,
        )
        .await
    }

    async fn serve(
        nats: Option<Arc<NatsServer>>,
        nats_url: String,
        options: TestServerBuilder,
        listeners: Listeners,
    ) -> TestServer {
        let grpc_addr = listeners.grpc.local_addr().expect("the gRPC port");
        let health_addr = listeners.health.local_addr().expect("the health port");
        let http_addr = listeners.http.local_addr().expect("the HTTP API port");
        let mut server = TestServer {
            nats,
            nats_url,
            options,
            grpc_addr,
            health_addr,
            http_addr,
            running: None,
        };
        server.run(listeners).await;
        server
    }

    /// Serves on `listeners` and returns once the server reports SERVING.
    async fn run(&mut self, listeners: Listeners) {
        let settings = ConnectSettings {
            url: self.nats_url.clone(),
            name: "jetway-test".into(),
            publish_max_pending: 256,
            security: self.options.nats_security.clone(),
        };
        let nats = Nats::connect(&settings).await.expect("connect to nats");
        let shutdown = CancellationToken::new();
        let tls = self.options.tls.as_ref().map(|tls| tls.server.clone());
        let task = tokio::spawn(app::serve(
            nats,
            listeners,
            self.options.limits,
            self.options.security.clone(),
            tls,
            self.options.cors.clone(),
            shutdown.clone(),
        ));
        self.running = Some(Running { shutdown, task });
        self.wait_serving().await;
    }

    /// The gRPC URL, e.g. `http://127.0.0.1:41234` (`https://` with TLS). Unchanged across a
    /// restart.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.grpc_addr)
    }

    /// The gRPC address. Unchanged across a restart.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The HTTP health address (`/livez`, `/readyz`, `/metrics`). Unchanged across a restart.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The HTTP API address (`/v1/...`). Unchanged across a restart.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The HTTP API's base URL, e.g. `http://127.0.0.1:41235`. Unchanged across a restart.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The URL(s) of the nats-server this server is in front of, to check what Jetway stored.
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// A connected gRPC channel to the server.
    pub async fn channel(&self) -> Channel {
        self.endpoint().connect().await.expect("connect to jetway")
    }

    /// A channel whose streams have a 1 KiB receive window: the server can send only a few
    /// responses ahead of a client that does not read them.
    pub async fn slow_reader_channel(&self) -> Channel {
        self.endpoint()
            .initial_stream_window_size(Some(1024))
            .connect()
            .await
            .expect("connect to jetway")
    }

    fn endpoint(&self) -> tonic::transport::Endpoint {
        let endpoint = Channel::from_shared(self.url()).expect("a valid URL");
        match &self.options.tls {
            None => endpoint,
            Some(tls) => endpoint
                .tls_config(tls.client.clone())
                .expect("a valid client TLS configuration"),
        }
    }

    /// Waits until `grpc.health.v1` says SERVING: a bound listener alone does not mean ready.
    pub async fn wait_serving(&self) {
        let channel = self.endpoint().connect_lazy();
        eventually("jetway reports SERVING", || {
            let mut health = HealthClient::new(channel.clone());
            async move {
                (grpc_health(&mut health).await == Some(ServingStatus::Serving)).then_some(())
            }
        })
        .await;
    }

    /// Starts a graceful shutdown and returns at once, so that a test can watch what its clients
    /// see meanwhile; [`TestServer::stop`] waits for it to finish.
    pub fn begin_shutdown(&self) {
        if let Some(running) = &self.running {
            running.shutdown.cancel();
        }
    }

    /// Shuts the server down gracefully (its Events streams end with UNAVAILABLE and give their
    /// events back) and waits until it has stopped; the nats-server keeps running. Fails the test
    /// if the server panicked, stopped with an error, or did not stop within the guard time.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown.cancel();
            tokio::time::timeout(STOP_GUARD, running.task)
                .await
                .expect("the server stops within the guard time")
                .expect("the server task does not panic")
                .expect("a clean shutdown");
        }
    }

    /// Starts the server again, on the same ports, after [`TestServer::stop`].
    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "stop the server first");
        let (grpc, health, http) = (self.grpc_addr, self.health_addr, self.http_addr);
        // The old listeners are closed once `stop` returns; the retry only covers a slow kernel.
        let listeners = eventually("the server's ports to be free again", || async move {
            Some(Listeners {
                grpc: TcpListener::bind(grpc).await.ok()?,
                health: TcpListener::bind(health).await.ok()?,
                http: TcpListener::bind(http).await.ok()?,
            })
        })
        .await;
        self.run(listeners).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

impl TestServerBuilder {
    /// Serves in front of the nats-server(s) at `url` (comma-separated URLs for a cluster) that
    /// the test runs itself, instead of starting one.
    pub fn nats_url(mut self, url: impl Into<String>) -> Self {
        self.nats_url = Some(url.into());
        self
    }

    /// Authenticates to NATS and secures the link with `security` (its nats-server is the test's
    /// own, given with [`TestServerBuilder::nats_url`]).
    pub fn nats_security(mut self, security: NatsSecurity) -> Self {
        self.nats_security = security;
        self
    }

    /// Serves within `limits` instead of the defaults.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Lets in only the clients `security` allows (by default anyone, as without `AUTH_FILE`).
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Answers browsers of the origins `cors` allows on the HTTP API (by default none, as without
    /// `HTTP_CORS_ALLOWED_ORIGINS`).
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = cors;
        self
    }

    /// Serves both ports over `server`'s TLS; the harness's own clients (readiness,
    /// [`TestServer::channel`]) connect with `client`.
    pub fn tls(mut self, server: ServerTls, client: ClientTlsConfig) -> Self {
        self.tls = Some(TestTls { server, client });
        self
    }

    /// Starts the server on free loopback ports and returns once it reports SERVING.
    pub async fn start(self) -> TestServer {
        let (nats, nats_url) = match self.nats_url.clone() {
            Some(url) => (None, url),
            None => {
                let nats = NatsServer::start();
                let url = nats.url();
                (Some(Arc::new(nats)), url)
            }
        };
        TestServer::serve(nats, nats_url, self, free_listeners().await).await
    }
}

/// Listeners on free loopback ports.
async fn free_listeners() -> Listeners {
    Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC"),
        health: TcpListener::bind("127.0.0.1:0").await.expect("bind health"),
        http: TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the HTTP API"),
    }
}

/// The overall `grpc.health.v1` status, or `None` if the call failed.
pub async fn grpc_health(health: &mut HealthClient<Channel>) -> Option<ServingStatus> {
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}
