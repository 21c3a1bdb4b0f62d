//! Stopping a long-running command (consume, tail, read, kv watch): Ctrl-C (SIGINT) and SIGTERM,
//! which `kill`, process supervisors and container runtimes send, stop it the same way, so it
//! cleans up what it made (`jetway tail` deletes its consumer) before it exits.

/// The stop signals, watched from the moment this is made: a signal that comes while the command
/// is busy elsewhere is kept until [`Interrupt::recv`] is next awaited. Once made, the signals no
/// longer end the process by themselves, so every command that makes one awaits it.
pub(crate) struct Interrupt {
    #[cfg(unix)]
    signals: Vec<tokio::signal::unix::Signal>,
}

impl Interrupt {
    /// Starts watching for Ctrl-C and SIGTERM.
    pub(crate) fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // A signal whose handler cannot be installed keeps its default action: it ends the
            // process, which stops the command all the same.
            let signals = [SignalKind::interrupt(), SignalKind::terminate()]
                .into_iter()
                .filter_map(|kind| signal(kind).ok())
                .collect();
            Interrupt { signals }
        }
        #[cfg(not(unix))]
        Interrupt {}
    }

    /// Waits for the next Ctrl-C or SIGTERM.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.signals.is_empty() {
                return std::future::pending().await;
            }
            let next = self
                .signals
                .iter_mut()
                .map(|signal| Box::pin(signal.recv()));
            futures::future::select_all(next).await;
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
