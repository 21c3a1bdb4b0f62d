//! Health: HTTP `/healthz` (the process is alive), `/readyz` (NATS is connected and JetStream
//! answers) and `/metrics` (Prometheus) on HEALTH_PORT, and the `grpc.health.v1` status, which
//! follows the same readiness check.

use std::time::Duration;

use axum::{Json, Router, http::StatusCode, routing::get};
use jetway_api::{
    jetway::state::v1::state_service_server::StateServiceServer as ExtStateServiceServer,
    windshift::{
        events::v1alpha1::events_service_server::EventsServiceServer,
        state::v1alpha1::state_service_server::StateServiceServer,
    },
};
use jetway_core::Nats;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    events::Events,
    state::{State, StateExt},
};

/// How often the gRPC health status is re-checked when the connection state does not change.
const RECHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The HTTP health routes. Readiness turns false for good once `shutdown` is cancelled.
pub fn router(nats: Nats, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "up" })) }),
        )
        .route(
            "/readyz",
            get(move || {
                let nats = nats.clone();
                let shutdown = shutdown.clone();
                async move {
                    match readiness(&nats, &shutdown).await {
                        Ok(()) => (StatusCode::OK, Json(json!({ "status": "up" }))),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({ "status": "down", "reason": reason })),
                        ),
                    }
                }
            }),
        )
}

/// The Prometheus text exposition of every metric.
async fn metrics() -> String {
    let handle = crate::telemetry::metrics_handle();
    // Upkeep keeps histogram storage bounded; a scrape is a fine moment for it.
    handle.run_upkeep();
    jetway_core::telemetry::metrics::refresh();
    handle.render()
}

/// Ready means: not shutting down, connected to NATS, and JetStream answering.
async fn readiness(nats: &Nats, shutdown: &CancellationToken) -> Result<(), String> {
    if shutdown.is_cancelled() {
        return Err("shutting down".into());
    }
    nats.check_ready().await.map_err(|err| err.to_string())
}

/// Keeps the `grpc.health.v1` status (overall and for each service) in step with readiness:
/// re-checked whenever the connection goes up or down, and every few seconds. Returns at shutdown,
/// after setting NOT_SERVING.
pub async fn track(nats: Nats, reporter: HealthReporter, shutdown: CancellationToken) {
    let mut connected = nats.connected();
    let mut last = None;
    loop {
        let status = match readiness(&nats, &shutdown).await {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            tracing::info!(?status, "gRPC health");
            set(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = connected.changed() => if changed.is_err() {
                // The connection is gone for good; only the periodic check is left.
                tokio::time::sleep(RECHECK_INTERVAL).await;
            },
            () = tokio::time::sleep(RECHECK_INTERVAL) => {}
        }
    }
    set(&reporter, ServingStatus::NotServing).await;
}

/// Every service that depends on NATS, by its full name.
const SERVICES: [&str; 5] = [
    <EventsServiceServer<Events> as tonic::server::NamedService>::NAME,
    <StateServiceServer<State> as tonic::server::NamedService>::NAME,
    <ExtStateServiceServer<StateExt> as tonic::server::NamedService>::NAME,
    jetway_api::jetway::events::v1::events_service_server::SERVICE_NAME,
    jetway_api::jetway::admin::v1::admin_service_server::SERVICE_NAME,
];

async fn set(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}
