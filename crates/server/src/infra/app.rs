//! Wiring and lifecycle: binds the listeners, serves gRPC (events, state, requests, health,
//! reflection), the HTTP API and HTTP health, and shuts down in order when asked.
//!
//! Shutdown: readiness turns false, every Events session naks its in-flight events and ends (and so
//! do Watch, Keys and History streams, and the HTTP API's live streams and range reads; Respond
//! streams stop taking requests and end once their held requests are answered or failed), the
//! listeners stop accepting while in-flight calls
//! (publishes) finish, and the NATS connection is drained so no ack or publish is left in a buffer.
//! Calls still running after [`SHUTDOWN_GRACE`] are cut off (their clients see an error, so nothing
//! they were told succeeded is lost), and the drain always runs, within [`DRAIN_GRACE`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use jetway_api::{
    jetway::state::v1::state_service_server::StateServiceServer as ExtStateServiceServer,
    windshift::{
        events::v1alpha1::events_service_server::EventsServiceServer,
        state::v1alpha1::state_service_server::StateServiceServer,
    },
};
use jetway_core::{Nats, consumers::UnnamedLimit, fetch::Fetcher, live::LiveFeeds};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::{
    auth::{Access, AuthLayer},
    grpc::{
        admin::Admin, events::JetwayEvents, panic::CatchPanicLayer, requests::Requests,
        state::JetwayState, windshift_events::WindshiftEvents, windshift_state::WindshiftState,
    },
    http::{self, cors::Cors},
    infra::{
        config::{Config, Limits},
        health, telemetry,
        tls::ServerTls,
        transport::{self, CallLayer, Gate},
    },
};

/// How long in-flight calls get to finish at shutdown before they are cut off.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long the NATS drain may take after that. Jetway's own part of a shutdown, the trace flush
/// included, stays under 5 s; the local nats-server then gets up to `NATS_STOP_TIMEOUT` to stop.
pub const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// An HTTP/2 connection that has sent nothing for this long gets a ping...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// ...and is closed when the answer takes longer than this: a client that vanished without closing
/// its connection (a host gone, a cable pulled) would otherwise keep its streams, their consumers and
/// the events they hold until the server restarts.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The three bound listeners.
pub struct Listeners {
    /// gRPC (events, state, health, reflection).
    pub grpc: TcpListener,
    /// HTTP health.
    pub health: TcpListener,
    /// The HTTP API.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds GRPC_PORT, HEALTH_PORT and HTTP_PORT on LISTEN_HOST.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let grpc = bind(
            SocketAddr::new(config.listen_host, config.grpc_port),
            "GRPC_PORT",
        )
        .await?;
        let health = bind(
            SocketAddr::new(config.listen_host, config.health_port),
            "HEALTH_PORT",
        )
        .await?;
        let http = bind(
            SocketAddr::new(config.listen_host, config.http_port),
            "HTTP_PORT",
        )
        .await?;
        Ok(Listeners { grpc, health, http })
    }
}

async fn bind(addr: SocketAddr, variable: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("cannot listen on {addr} ({variable}): {err}"),
        )
    })
}

/// Who may call what: authentication and its allow-lists ([`Access::open`]: anyone, anything),
/// and whether reflection is served.
#[derive(Clone)]
pub struct Security {
    /// The clients file in force (`AUTH_FILE`), or none.
    pub access: Access,
    /// `GRPC_REFLECTION`.
    pub reflection: bool,
}

impl Default for Security {
    /// No authentication, reflection on: the zero-config default.
    fn default() -> Self {
        Security {
            access: Access::open(),
            reflection: true,
        }
    }
}

impl Security {
    /// From the configuration; an `AUTH_FILE` that does not read is an error.
    pub fn from_config(config: &Config) -> Result<Security, String> {
        Ok(Security {
            access: match &config.auth_file {
                Some(path) => Access::load(path)?,
                None => Access::open(),
            },
            reflection: config.grpc_reflection,
        })
    }
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP health server failed.
    #[error("health server: {0}")]
    Health(#[from] std::io::Error),
    /// The reflection service could not load the descriptors (a build problem).
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The descriptors compiled into the binary do not decode (a build problem).
    #[error("descriptors: {0}")]
    Descriptors(#[from] prost::DecodeError),
}

/// Serves until `shutdown` is cancelled, then shuts down gracefully (see the module docs), within
/// `limits`, to the clients `security` allows; with `tls`, both listeners speak TLS; the HTTP API
/// answers browsers of the origins `cors` allows.
pub async fn serve(
    nats: Nats,
    listeners: Listeners,
    limits: Limits,
    security: Security,
    tls: Option<ServerTls>,
    cors: Cors,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    // Installed before anything records, so no early metric is lost.
    telemetry::metrics_handle();
    let grpc_addr = listeners.grpc.local_addr()?;
    let health_addr = listeners.health.local_addr()?;
    let http_addr = listeners.http.local_addr()?;

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let (readiness, probe) = health::probe(nats.clone(), shutdown.clone());
    let probe_task = tokio::spawn(probe);
    let health_task = tokio::spawn(health::track(readiness.clone(), reporter));
    let descriptors = [
        jetway_api::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ];
    let streaming = transport::streaming_methods(&[
        jetway_api::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])?;
    let max_message = limits.grpc_max_message_bytes;
    let mut reflection_v1 = tonic_reflection::server::Builder::configure();
    let mut reflection_v1alpha = tonic_reflection::server::Builder::configure();
    for set in descriptors {
        reflection_v1 = reflection_v1.register_encoded_file_descriptor_set(set);
        reflection_v1alpha = reflection_v1alpha.register_encoded_file_descriptor_set(set);
    }
    let (reflection_v1, reflection_v1alpha) = if security.reflection {
        (
            Some(reflection_v1.build_v1()?),
            Some(reflection_v1alpha.build_v1alpha()?),
        )
    } else {
        (None, None)
    };
    // Reloads AUTH_FILE when it changes.
    tokio::spawn(security.access.clone().watch(shutdown.clone()));

    // The streaming services get their own token, cancelled first, so sessions and streams end
    // before the listener stops waiting for them.
    // Every service decodes requests up to the same explicit size; see `Limits`.
    let sessions = CancellationToken::new();
    // Both EnsureConsumers create unnamed consumers, counted against one cap.
    let unnamed = Arc::new(UnnamedLimit::new(limits.max_unnamed_consumers_per_stream));
    let events = EventsServiceServer::new(WindshiftEvents::new(
        nats.clone(),
        Arc::clone(&unnamed),
        sessions.clone(),
    ))
    .max_decoding_message_size(max_message);
    let state = StateServiceServer::new(WindshiftState::new(nats.clone()))
        .max_decoding_message_size(max_message);
    let state_ext = ExtStateServiceServer::new(JetwayState::new(nats.clone(), sessions.clone()))
        .max_decoding_message_size(max_message);
    // gRPC Subscribe and the HTTP API's SSE share the live feeds: one per stream and filter.
    let live = LiveFeeds::new(nats.clone(), limits.subscriber_buffer);
    // gRPC Fetch and the HTTP API's fetch share the fetched events in flight, and their limits.
    let fetcher = Fetcher::start(nats.clone(), limits.fetch, sessions.clone());
    let events_ext = JetwayEvents::service(
        nats.clone(),
        Arc::clone(&unnamed),
        live.clone(),
        Arc::clone(&fetcher),
        sessions.clone(),
    )
    .max_decoding_message_size(max_message);
    let admin =
        Admin::service(nats.clone(), sessions.clone()).max_decoding_message_size(max_message);
    let requests = Requests::service(nats.clone(), &limits, sessions.clone())
        .max_decoding_message_size(max_message);
    let grpc = Server::builder()
        // Fixed windows, not hyper's adaptive ones: see `transport::STREAM_WINDOW`.
        .http2_adaptive_window(Some(false))
        .initial_connection_window_size(transport::CONNECTION_WINDOW)
        .initial_stream_window_size(transport::STREAM_WINDOW)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(limits.grpc_max_streams_per_connection)
        // HTTP/2 sends one frame per write: larger frames let a client's busy PublishStream go out
        // in fewer, larger writes (frames of the default 16 KiB split it).
        .max_frame_size(Some(1 << 20))
        .layer(CallLayer::new(streaming, &limits))
        .layer(CatchPanicLayer)
        // Inside `CallLayer`, which puts the peer's address where this layer logs it from.
        .layer(AuthLayer::new(security.access.clone()))
        .trace_fn(telemetry::grpc_span)
        .add_service(health_service.max_decoding_message_size(max_message))
        .add_optional_service(reflection_v1.map(|r| r.max_decoding_message_size(max_message)))
        .add_optional_service(reflection_v1alpha.map(|r| r.max_decoding_message_size(max_message)))
        .add_service(events)
        .add_service(state)
        .add_service(state_ext)
        .add_service(events_ext)
        .add_service(admin)
        .add_service(requests)
        .serve_with_incoming_shutdown(
            transport::grpc_incoming(
                Gate::new(
                    listeners.grpc,
                    limits.grpc_max_connections,
                    "GRPC_MAX_CONNECTIONS",
                    "grpc",
                ),
                limits.grpc_idle_timeout,
                tls.clone(),
            ),
            shutdown.clone().cancelled_owned(),
        );
    let http = transport::serve_health(
        Gate::new(
            listeners.health,
            limits.health_max_connections,
            "HEALTH_MAX_CONNECTIONS",
            "health",
        ),
        health::router(readiness),
        limits.health_header_timeout,
        tls.clone(),
        shutdown.clone(),
    );
    let api = transport::serve_api(
        Gate::new(
            listeners.http,
            limits.http_max_connections,
            "HTTP_MAX_CONNECTIONS",
            "http",
        ),
        http::router(
            http::ApiParts::new(
                nats.clone(),
                &limits,
                live,
                fetcher,
                security.access.clone(),
                unnamed,
                sessions.clone(),
            )
            .with_cors(cors),
        ),
        limits.http_header_timeout,
        tls.clone(),
        shutdown.clone(),
    );
    let security = match &tls {
        None => "plain text",
        Some(tls) if tls.mtls() => "TLS, client certificates required on gRPC and the HTTP API",
        Some(_) => "TLS",
    };
    tracing::info!(%grpc_addr, %health_addr, %http_addr, security, "serving");

    let grpc = tokio::spawn(grpc);
    let http = tokio::spawn(async move {
        tokio::join!(http, api);
        Ok::<(), std::io::Error>(())
    });
    // Turns advisories into dead letters; stops with the sessions (see `jetway_core::dead_letters`).
    let dead_letters = tokio::spawn(jetway_core::dead_letters::run(
        nats.clone(),
        sessions.clone(),
    ));
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    sessions.cancel();

    let (grpc_abort, http_abort) = (grpc.abort_handle(), http.abort_handle());
    let servers = async {
        let grpc_result = grpc.await;
        let http_result = http.await;
        health_task.await.ok();
        probe_task.await.ok();
        dead_letters.await.ok();
        (grpc_result, http_result)
    };
    let results = tokio::time::timeout(SHUTDOWN_GRACE, servers).await;
    if results.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "calls still running at shutdown were cut off");
        grpc_abort.abort();
        http_abort.abort();
    }
    // Whatever happened above, acks and publishes still buffered in the client go out now.
    if tokio::time::timeout(DRAIN_GRACE, nats.drain())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?DRAIN_GRACE, "the NATS drain did not finish in time");
    }
    if let Ok((grpc_result, http_result)) = results {
        flatten(grpc_result)?;
        flatten(http_result)?;
        tracing::info!("shutdown complete");
    }
    Ok(())
}

fn flatten<E: Into<ServeError>>(
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match result {
        Ok(inner) => inner.map_err(Into::into),
        Err(join) => {
            tracing::error!(%join, "a server task failed");
            Ok(())
        }
    }
}
