//! The test environment: a real nats-server (from jetway-testkit) and a Jetway server served in this
//! process on a loopback port, which a test can stop and start again on the same port, the way a
//! deployment restarts it.
//!
//! The CLI's tests include this file too (`#[path]`), so both crates start servers the same way.

use std::{net::SocketAddr, sync::Arc};

use jetway_client::tonic::transport::Channel;
use jetway_core::{ConnectSettings, Nats};
use jetway_server::{
    app::{self, Listeners, Security},
    config::Limits,
};
use jetway_testkit::{NatsServer, eventually};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A nats-server and a Jetway server in front of it.
pub(crate) struct TestServer {
    /// Kept alive for as long as the test runs (shared with the Jetway servers started
    /// [`TestServer::beside`] this one); killed on the last drop.
    nats: Arc<NatsServer>,
    nats_url: String,
    grpc_addr: SocketAddr,
    running: Option<Running>,
}

/// One run of the in-process Jetway server.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), app::ServeError>>,
}

impl TestServer {
    /// Starts a nats-server and a Jetway server on a free loopback port, and waits until Jetway
    /// reports SERVING.
    pub(crate) async fn start() -> TestServer {
        TestServer::start_secured(Security::default()).await
    }

    /// A server that lets in the clients `security` allows.
    pub(crate) async fn start_secured(security: Security) -> TestServer {
        let nats = NatsServer::start();
        let nats_url = nats.url();
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
        let grpc_addr = grpc.local_addr().unwrap();
        let running = Running::start(&nats_url, grpc, security).await;
        TestServer {
            nats: Arc::new(nats),
            nats_url,
            grpc_addr,
            running: Some(running),
        }
    }

    /// Starts a second Jetway server on another free port, in front of the same nats-server: a
    /// replica.
    #[allow(
        dead_code,
        reason = "the CLI's tests include this file and run one Jetway at a time"
    )]
    pub(crate) async fn beside(&self) -> TestServer {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
        let grpc_addr = grpc.local_addr().unwrap();
        let running = Running::start(&self.nats_url, grpc, Security::default()).await;
        TestServer {
            nats: Arc::clone(&self.nats),
            nats_url: self.nats_url.clone(),
            grpc_addr,
            running: Some(running),
        }
    }

    /// The server's URL, e.g. `http://127.0.0.1:41234`. Unchanged across a restart.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The nats-server's URL, to check what Jetway stored.
    #[allow(
        dead_code,
        reason = "the CLI's tests include this file and do not read JetStream directly"
    )]
    pub(crate) fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// Shuts Jetway down gracefully (its Events streams end with UNAVAILABLE and give their events
    /// back) and waits until it has stopped; nats-server keeps running.
    pub(crate) async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown.cancel();
            running
                .task
                .await
                .expect("the server task")
                .expect("a clean shutdown");
        }
    }

    /// Starts Jetway again on the same port.
    pub(crate) async fn start_again(&mut self) {
        assert!(self.running.is_none(), "stop the server first");
        let addr = self.grpc_addr;
        // The old listener is closed once `stop` returns; the retry only covers a slow kernel.
        let grpc = eventually("the gRPC port to be free again", || async move {
            TcpListener::bind(addr).await.ok()
        })
        .await;
        self.running = Some(Running::start(&self.nats_url, grpc, Security::default()).await);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown.cancel();
        }
    }
}

impl Running {
    async fn start(nats_url: &str, grpc: TcpListener, security: Security) -> Running {
        let settings = ConnectSettings {
            url: nats_url.to_owned(),
            name: "jetway-client-test".into(),
            publish_max_pending: 256,
        };
        let nats = Nats::connect(&settings).await.expect("connect to nats");
        let listeners = Listeners {
            grpc,
            health: TcpListener::bind("127.0.0.1:0").await.expect("bind health"),
        };
        let url = format!("http://{}", listeners.grpc.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app::serve(
            nats,
            listeners,
            Limits::default(),
            security,
            shutdown.clone(),
        ));
        wait_serving(&url).await;
        Running { shutdown, task }
    }
}

/// Waits until `grpc.health.v1` says SERVING: a bound listener alone does not mean NATS is ready.
async fn wait_serving(url: &str) {
    let channel = Channel::from_shared(url.to_owned()).unwrap().connect_lazy();
    eventually("jetway reports SERVING", || {
        let mut health = HealthClient::new(channel.clone());
        async move {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            let status = health.check(request).await.ok()?.into_inner().status;
            (status == ServingStatus::Serving as i32).then_some(())
        }
    })
    .await;
}
