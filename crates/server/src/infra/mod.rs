//! What runs the services: the app that serves them, configuration, the local nats-server
//! supervisor, telemetry, health and readiness, the health-check client, TLS, and the transport limits.

pub mod app;
pub mod config;
pub mod health;
pub mod probe;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod transport;

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, a lock of the transport or TLS state. No code panics while holding one of these,
/// so none is ever poisoned, and `expect` states that once for all of them.
#[expect(
    clippy::expect_used,
    reason = "no code panics while holding this lock, so it is never poisoned"
)]
pub(crate) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("the lock is never poisoned")
}
