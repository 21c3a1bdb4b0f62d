//! The NATS connection every operation shares: it reconnects forever, publishes its state on a watch
//! channel (readiness and the delivery engine follow it), and answers "is JetStream usable now?".

use std::{sync::Arc, time::Duration};

use async_nats::{
    ConnectOptions, ServerAddr, Subject,
    jetstream::{self, AckKind},
};
use tokio::sync::{Semaphore, watch};

use crate::error::{Classify, NatsError};
use crate::telemetry::metrics::NATS_CONNECTED;

/// How long a readiness probe waits for JetStream to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a publish waits for JetStream's ack before it counts as timed out.
pub(crate) const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings for [`Nats::connect`].
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// The NATS server URL(s), comma-separated.
    pub url: String,
    /// The client name NATS shows in its monitoring.
    pub name: String,
    /// Most event publishes awaiting their JetStream ack at once, across every publish call; more
    /// wait for a slot. KV writes and dead-letter publishes have a window of the same size of their
    /// own.
    pub publish_max_pending: usize,
}

/// Why [`Nats::connect`] failed. Only a malformed URL fails: an unreachable server is retried.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {reason}")]
pub struct ConnectError {
    url: String,
    reason: String,
}

/// Masks the user-info part (`user:pass@`, `token@`) of each URL in a comma-separated NATS URL
/// list, for whatever shows a URL: logs and error messages end up in log storage.
pub fn redact_credentials(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let authority_start = url.find("://").map_or(0, |i| i + 3);
            let authority_end = url[authority_start..]
                .find('/')
                .map_or(url.len(), |i| authority_start + i);
            match url[authority_start..authority_end].rfind('@') {
                Some(at) => format!(
                    "{}***{}",
                    &url[..authority_start],
                    &url[authority_start + at..]
                ),
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a comma-separated NATS URL list, as [`Nats::connect`] does; a configuration can check one
/// with it and report a bad one with its other problems. The reason never repeats the URL (it may
/// hold credentials).
pub fn server_addrs(urls: &str) -> Result<Vec<ServerAddr>, String> {
    urls.split(',')
        .enumerate()
        .map(|(i, url)| {
            url.trim().parse::<ServerAddr>().map_err(|err| {
                format!(
                    "is not a NATS URL list (like nats://host:4222,nats://other:4222): entry {}: {err}",
                    i + 1
                )
            })
        })
        .collect()
}

/// A shared handle on the NATS connection and its JetStream context. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Nats {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    connected: watch::Receiver<bool>,
    /// One permit per publish ack awaited; see [`ConnectSettings::publish_max_pending`].
    publish_window: Arc<Semaphore>,
}

impl Nats {
    /// Connects to NATS. Returns at once, even when the server is down: the client keeps retrying in
    /// the background, forever, and [`Nats::connected`] follows the connection state.
    pub async fn connect(settings: &ConnectSettings) -> Result<Nats, ConnectError> {
        let (state_tx, connected) = watch::channel(false);
        let options = ConnectOptions::new()
            .name(&settings.name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let state_tx = state_tx.clone();
                async move {
                    match &event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            metrics::gauge!(NATS_CONNECTED).set(1.0);
                            state_tx.send_replace(true);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("lost the NATS connection; reconnecting");
                            metrics::gauge!(NATS_CONNECTED).set(0.0);
                            state_tx.send_replace(false);
                        }
                        async_nats::Event::Closed => {
                            tracing::info!("NATS connection closed");
                            metrics::gauge!(NATS_CONNECTED).set(0.0);
                            state_tx.send_replace(false);
                        }
                        async_nats::Event::SlowConsumer(_) => tracing::warn!(%event, "NATS"),
                        _ => tracing::info!(%event, "NATS"),
                    }
                }
            });
        let failed = |reason: String| ConnectError {
            url: redact_credentials(&settings.url),
            reason,
        };
        let servers = server_addrs(&settings.url).map_err(failed)?;
        let client = options
            .connect(servers)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let window = settings.publish_max_pending.max(1);
        // Event publishes hold a permit of `publish_window`, which they share with the pipelines'
        // publishes that bypass the context; the context's own window bounds the rest (KV writes,
        // dead letters).
        let jetstream = jetstream::ContextBuilder::new()
            .max_ack_inflight(window)
            .backpressure_on_inflight(true)
            .timeout(PUBLISH_ACK_TIMEOUT)
            .build(client.clone());
        Ok(Nats {
            client,
            jetstream,
            connected,
            publish_window: Arc::new(Semaphore::new(window)),
        })
    }

    /// The core NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The window of event publishes awaiting their JetStream ack, shared by every publish path.
    pub(crate) fn publish_window(&self) -> &Arc<Semaphore> {
        &self.publish_window
    }

    /// Sends one acknowledgement (ack, nak, progress, term) of a delivery to JetStream. Refused at
    /// once while the connection is down: async-nats queues commands until it reconnects, and once
    /// its queue is full a publish waits for NATS, holding up the caller (a session, and with it
    /// its shutdown). Callers report a refusal as a temporary failure; the event stays in flight.
    pub(crate) async fn send_ack(&self, reply: Subject, kind: AckKind) -> Result<(), NatsError> {
        if !self.is_connected() {
            return Err(NatsError::Unavailable("NATS is not connected".into()));
        }
        self.client
            .publish(reply, kind.into())
            .await
            .map_err(|err| NatsError::Unavailable(err.to_string()))
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A receiver that changes whenever the connection goes up or down from now on. The current
    /// state counts as seen: a clone of the kept receiver would otherwise report the first
    /// `Connected` (sent after this handle was made, and never seen by it) as a fresh change, and
    /// the delivery engine would take it for a reconnect and pull a second window.
    pub fn connected(&self) -> watch::Receiver<bool> {
        let mut connected = self.connected.clone();
        connected.mark_unchanged();
        connected
    }

    /// Checks that NATS is connected and JetStream answers an account-info request.
    pub async fn check_ready(&self) -> Result<(), NatsError> {
        if !self.is_connected() {
            return Err(NatsError::Unavailable("not connected to NATS".into()));
        }
        match tokio::time::timeout(READY_TIMEOUT, self.jetstream.query_account()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.classify()),
            Err(_) => Err(NatsError::Unavailable(
                "JetStream did not answer in time".into(),
            )),
        }
    }

    /// Flushes what is buffered and closes the connection after in-flight requests finish.
    pub async fn drain(&self) {
        if let Err(err) = self.client.drain().await {
            tracing::warn!(%err, "draining the NATS connection failed");
        }
    }

    /// The largest message the server accepts, headers included.
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_masked_in_the_summary() {
        assert_eq!(
            redact_credentials("nats://user:secret@a:4222,tls://token@b:4223,nats://c:4224"),
            "nats://***@a:4222,tls://***@b:4223,nats://c:4224"
        );
        assert_eq!(redact_credentials("u:p@host:4222"), "***@host:4222");
        assert_eq!(
            redact_credentials("nats://host/path@x"),
            "nats://host/path@x"
        );
    }

    #[test]
    fn url_lists_are_read_entry_by_entry_without_repeating_them() {
        let servers = server_addrs("nats://a:4222, tls://u:p@b:4223,c").expect("a valid list");
        assert_eq!(servers.len(), 3);
        let reason = server_addrs("nats://app:s3cret@host:42220x").unwrap_err();
        assert!(reason.contains("entry 1"), "{reason}");
        assert!(!reason.contains("s3cret"), "{reason}");
        assert!(
            server_addrs("nats://a:4222,nats://b:x")
                .unwrap_err()
                .contains("entry 2")
        );
    }
}
