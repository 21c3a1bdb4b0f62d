//! Health: HTTP `/healthz` (the process is alive), `/readyz` (this replica can serve) and `/metrics`
//! (Prometheus) on HEALTH_PORT, and the `grpc.health.v1` status, which follows the same readiness.
//!
//! Readiness is probed in the background ([`probe`]) and read from its last verdict, so `/readyz`
//! answers at once instead of waiting on JetStream. It says whether *this* replica can serve: its NATS
//! connection is up and JetStream answered within [`PROBE_GRACE`]. A JetStream meta-leader election,
//! during which no account-info request is answered for seconds but existing streams take publishes
//! again, does not take every replica out of a load balancer at once.

use std::time::{Duration, Instant};

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
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    grpc::{
        state::JetwayState, windshift_events::WindshiftEvents, windshift_state::WindshiftState,
    },
    infra::telemetry,
};

/// How often a connected replica probes JetStream.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long JetStream may leave probes unanswered before a replica whose NATS connection is up counts
/// as not ready: longer than a JetStream meta-leader election (about 8 s seen on a 3-node cluster).
pub const PROBE_GRACE: Duration = Duration::from_secs(15);

/// The readiness verdict: `Err` says why this replica cannot serve.
type Verdict = Result<(), String>;

/// The last readiness verdict, kept by [`probe`]; cheap to clone and to read.
#[derive(Debug, Clone)]
pub struct Readiness {
    verdict: watch::Receiver<Verdict>,
    shutdown: CancellationToken,
}

impl Readiness {
    /// Whether this replica can serve now. Not ready for good once `shutdown` is cancelled.
    pub fn check(&self) -> Verdict {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        self.verdict.borrow().clone()
    }
}

/// Probes readiness in the background until `shutdown`: returns the verdict's reader and the task
/// that keeps it, to be spawned.
pub fn probe(
    nats: Nats,
    shutdown: CancellationToken,
) -> (Readiness, impl Future<Output = ()> + Send + 'static) {
    let (tx, verdict) = watch::channel(Err("starting".to_owned()));
    let readiness = Readiness {
        verdict,
        shutdown: shutdown.clone(),
    };
    let task = async move {
        let mut connected = nats.connected();
        // The last answer from JetStream on the current connection.
        let mut last_answer: Option<Instant> = None;
        loop {
            let verdict = tokio::select! {
                () = shutdown.cancelled() => break,
                verdict = probe_once(&nats, &mut last_answer) => verdict,
            };
            tx.send_if_modified(|current| {
                let changed = *current != verdict;
                *current = verdict;
                changed
            });
            tokio::select! {
                () = shutdown.cancelled() => break,
                // A change of the connection is probed at once, and what JetStream answered on
                // the old connection forgives nothing on the new one.
                changed = connected.changed() => {
                    last_answer = None;
                    if changed.is_err() {
                        // The connection is gone for good; only the periodic probe is left.
                        tokio::time::sleep(PROBE_INTERVAL).await;
                    }
                }
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    };
    (readiness, task)
}

/// Probes once: not ready without a connection; else JetStream's answer, a failure forgiven within
/// the grace. `last_answer` is when JetStream last answered on the current connection.
async fn probe_once(nats: &Nats, last_answer: &mut Option<Instant>) -> Verdict {
    if !nats.is_connected() {
        *last_answer = None;
        return Err("not connected to NATS".to_owned());
    }
    match nats.check_ready().await {
        Ok(()) => {
            *last_answer = Some(Instant::now());
            Ok(())
        }
        Err(err) => after_failed_probe(*last_answer, Instant::now(), err.to_string()),
    }
}

/// The verdict after a failed probe on a live connection: still ready while JetStream answered within
/// [`PROBE_GRACE`], else not ready for `reason`.
fn after_failed_probe(last_answer: Option<Instant>, now: Instant, reason: String) -> Verdict {
    match last_answer {
        Some(at) if now.saturating_duration_since(at) <= PROBE_GRACE => {
            tracing::debug!(%reason, "JetStream probe failed; still ready within the grace");
            Ok(())
        }
        _ => Err(reason),
    }
}

/// The HTTP health routes.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "up" })) }),
        )
        .route(
            "/readyz",
            get(move || {
                let verdict = readiness.check();
                async move {
                    match verdict {
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
    let handle = telemetry::metrics_handle();
    // Upkeep keeps histogram storage bounded; a scrape is a fine moment for it.
    handle.run_upkeep();
    jetway_core::telemetry::metrics::refresh();
    handle.render()
}

/// Keeps the `grpc.health.v1` status (overall and for each service) in step with readiness. Returns
/// at shutdown, after setting NOT_SERVING.
pub async fn track(readiness: Readiness, reporter: HealthReporter) {
    let mut verdict = readiness.verdict.clone();
    let mut last = None;
    loop {
        let status = match readiness.check() {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            tracing::info!(?status, "gRPC health");
            set(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            () = readiness.shutdown.cancelled() => break,
            changed = verdict.changed() => if changed.is_err() {
                break;
            },
        }
    }
    set(&reporter, ServingStatus::NotServing).await;
}

/// Every service that depends on NATS, by its full name.
const SERVICES: [&str; 5] = [
    <EventsServiceServer<WindshiftEvents> as tonic::server::NamedService>::NAME,
    <StateServiceServer<WindshiftState> as tonic::server::NamedService>::NAME,
    <ExtStateServiceServer<JetwayState> as tonic::server::NamedService>::NAME,
    jetway_api::jetway::events::v1::events_service_server::SERVICE_NAME,
    jetway_api::jetway::admin::v1::admin_service_server::SERVICE_NAME,
];

async fn set(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed probe keeps a replica ready only while JetStream answered within the grace, and never
    /// one that has not been answered on its connection yet.
    #[test]
    fn a_failed_probe_is_forgiven_only_within_the_grace() {
        let now = Instant::now();
        let failed = |last| after_failed_probe(last, now, "no answer".into());
        assert_eq!(failed(None), Err("no answer".into()));
        assert_eq!(failed(Some(now)), Ok(()));
        assert_eq!(failed(Some(now - PROBE_GRACE)), Ok(()));
        assert_eq!(
            failed(Some(now - PROBE_GRACE - Duration::from_millis(1))),
            Err("no answer".into())
        );
    }
}
