//! One `nats-server` process, from binary to exit: finding the binary ([`find_binary`]), writing its
//! config file ([`NatsConfig`]), starting it with its output appended to a log ([`Launcher`]),
//! waiting until it reports its client port in its ports file ([`Launcher::wait_ready`]), and
//! stopping it ([`terminate`]: SIGTERM with a grace, then SIGKILL; [`kill`]: SIGKILL at once).
//!
//! Jetway's server (the local nats-server it supervises when `NATS_URL` is unset) and the test
//! harness both start nats-servers through this crate, so the two cannot drift apart.
//!
//! Everything is synchronous: the test harness must be able to kill its servers in `Drop`, with or
//! without a tokio runtime. Async callers run the waits on a blocking thread; with the `tokio`
//! feature a `tokio::process::Child` is a [`Process`] too.

mod binary;
mod config;
mod process;

pub use binary::{BINARY_NAME, NotFound, find_binary};
pub use config::{ClusterConfig, NatsConfig};
pub use process::{
    KillReason, LOG_MARKER, Launcher, Process, Ready, Stopped, kill, log_tail, terminate,
};

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a nats-server could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path that must be written into nats-server's config file is not valid UTF-8.
    #[error("{} is not valid UTF-8, which nats-server's config file cannot express", .path.display())]
    NonUnicodePath {
        /// The path.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done, e.g. `write /data/nats-server.conf`.
        action: String,
        /// The OS error.
        source: io::Error,
    },
    /// The process could not be spawned.
    #[error("could not start {}: {source}", .bin.display())]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// nats-server exited before it was ready.
    #[error("nats-server exited ({status}) before it was ready; end of {}:\n{tail}", .log_file.display())]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its log file.
        log_file: PathBuf,
        /// The last lines it logged in this run.
        tail: String,
    },
    /// nats-server did not report its address in time.
    #[error("nats-server did not become ready within {timeout:?}; end of {}:\n{tail}", .log_file.display())]
    NotReady {
        /// How long we waited.
        timeout: Duration,
        /// Its log file.
        log_file: PathBuf,
        /// The last lines it logged in this run.
        tail: String,
    },
}

/// Wraps an I/O error with what was being done.
fn io_error(action: String) -> impl Fn(io::Error) -> Error {
    move |source| Error::Io {
        action: action.clone(),
        source,
    }
}
