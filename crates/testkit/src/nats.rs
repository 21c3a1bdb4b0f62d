//! Owns the lifecycle of one real `nats-server` process with JetStream for a test: starting it on a
//! free loopback port with a private store, restarting it on the same port and store, and killing it
//! when the test is done. Finding, configuring, starting and stopping the process is
//! `jetway-nats-process`'s, shared with the server's supervisor.
//!
//! Everything here is synchronous (`std::process`) so that `Drop` can kill the server whether or not
//! a tokio runtime is still alive.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use jetway_nats_process::{Launcher, NatsConfig, find_binary, kill};
use tempfile::TempDir;

use crate::ports::free_port;

/// How long a (re)started server gets to report its port. Startup takes milliseconds; the slack is
/// for loaded CI machines.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Fixed so log lines from different runs of the same test read the same.
const SERVER_NAME: &str = "jetway-testkit";

const NOT_FOUND: &str = "nats-server not found: run scripts/install-nats-server.sh (installs the pinned version into tools/bin)";

/// A running `nats-server` with JetStream, listening on a free port on 127.0.0.1, whose store, ports
/// file and log live in a temporary directory it owns.
///
/// The process is killed when this value is dropped.
#[derive(Debug)]
pub struct NatsServer {
    files: Files,
    /// `None` between [`NatsServer::stop`] and the next [`NatsServer::restart`].
    child: Option<Child>,
    url: String,
    port: u16,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh, empty JetStream store and waits until it accepts
    /// clients.
    ///
    /// The binary is `$NATS_SERVER_BIN` if set, else `tools/bin/nats-server` in the workspace, else
    /// `nats-server` on `PATH`. Panics if none is found or the server does not come up; the panic
    /// message carries the end of the server log.
    pub fn start() -> NatsServer {
        NatsServer::start_with_args(&[])
    }

    /// Starts a server as [`NatsServer::start`] does, with extra nats-server command-line options,
    /// which every [`NatsServer::restart`] keeps: e.g. `["--user", "alice", "--pass", "pw"]` or
    /// `["--auth", "token"]` to make clients authenticate. [`NatsServer::url`] carries no
    /// credentials.
    pub fn start_with_args(args: &[&str]) -> NatsServer {
        NatsServer::start_with_config(args, None)
    }

    /// Starts a server as [`NatsServer::start_with_args`] does, with `extra` appended to its config
    /// file: what has no command-line option, such as `authorization { users = [{nkey: U...}] }`.
    pub fn start_with_config(args: &[&str], extra: Option<&str>) -> NatsServer {
        let mut files = Files::new(binary(), args);
        files.config.extra = extra.map(str::to_owned);
        // Not the kernel's choice: see `free_port` for why a port the server restarts on must not be.
        let (child, url, port) = files.launch(free_port());
        NatsServer {
            files,
            child: Some(child),
            url,
            port,
        }
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`. Unchanged by [`NatsServer::restart`].
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The client port. Unchanged by [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server, e.g. to read its CPU time from `/proc`; `None` while
    /// stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The nats-server binary this server runs.
    pub fn binary(&self) -> &Path {
        self.files.launcher.bin()
    }

    /// The JetStream store directory; JetStream keeps its data in `jetstream/` under it.
    pub fn store_dir(&self) -> &Path {
        &self.files.config.store_dir
    }

    /// Kills the server and waits for it to exit, so its port is free when this returns. Does
    /// nothing if it is already stopped.
    ///
    /// This is a crash, not a graceful shutdown: whatever the server had not yet written to its
    /// store is lost, as it would be if the real server died.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child)
                .unwrap_or_else(|e| panic!("cannot stop nats-server (pid {}): {e}", child.id()));
        }
    }

    /// Stops the server (if running) and starts it again on the same port with the same store, so
    /// clients can reconnect to [`NatsServer::url`] and find their streams and consumers. Returns
    /// once the server accepts clients again.
    pub fn restart(&mut self) {
        self.stop();
        let (child, url, _) = self.files.launch(self.port);
        self.child = Some(child);
        self.url = url;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors are ignored: panicking here while a failed test unwinds would abort the whole
            // test binary and hide the original failure.
            let _ = kill(&mut child);
        }
    }
}

/// How one server runs, with every file inside a temporary directory that lives as long as the
/// server.
#[derive(Debug)]
struct Files {
    config: NatsConfig,
    launcher: Launcher,
    /// Deletes the directory on drop, unless a startup failure asked to keep it.
    root: TempDir,
}

impl Files {
    fn new(bin: PathBuf, extra_args: &[&str]) -> Files {
        let root = tempfile::Builder::new()
            .prefix("jetway-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for nats-server: {e}"));
        let ports = root.path().join("ports");
        std::fs::create_dir(&ports)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", ports.display()));
        let launcher = Launcher::new(
            bin,
            root.path().join("nats-server.conf"),
            ports,
            root.path().join("nats-server.log"),
        )
        .with_args(extra_args.iter().copied());
        Files {
            config: NatsConfig::new(SERVER_NAME, root.path().join("store")),
            launcher,
            root,
        }
    }

    /// Spawns the server on `port` and waits for its ports file. Returns the child,
    /// the client URL and the client port.
    fn launch(&mut self, port: u16) -> (Child, String, u16) {
        self.config.port = port;
        let started = self
            .config
            .write(self.launcher.conf_file())
            .and_then(|()| self.launcher.spawn());
        let mut child = started.unwrap_or_else(|e| self.fail(&e.to_string()));
        match self
            .launcher
            .wait_ready(&mut child, STARTUP_TIMEOUT, Duration::MAX, |_| {})
        {
            Ok(ready) => (child, ready.url, ready.port),
            Err(e) => {
                let _ = kill(&mut child);
                self.fail(&e.to_string())
            }
        }
    }

    /// Panics with `what`, how the server was run, and where its log is. The temporary directory is
    /// kept so the full log and the store can still be inspected after the test has unwound.
    fn fail(&mut self, what: &str) -> ! {
        self.root.disable_cleanup(true);
        let args: Vec<_> = self
            .launcher
            .args()
            .iter()
            .map(|a| a.to_string_lossy())
            .collect();
        panic!(
            "{what}\nbinary: {} {}\nlog (kept): {}",
            self.launcher.bin().display(),
            args.join(" "),
            self.launcher.log_file().display(),
        )
    }
}

/// The workspace root: the testkit crate lives at `<root>/crates/testkit`.
#[expect(
    clippy::expect_used,
    reason = "the testkit crate always lives two levels below the workspace root"
)]
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the testkit crate lives two levels below the workspace root")
        .to_path_buf()
}

/// The nats-server binary tests run: `$NATS_SERVER_BIN` (empty counts as unset), else the
/// workspace's `tools/bin/nats-server`, else `nats-server` on `PATH`. Panics, saying what to
/// install, if there is none.
pub(crate) fn binary() -> PathBuf {
    let explicit = std::env::var_os("NATS_SERVER_BIN").filter(|value| !value.is_empty());
    let path = std::env::var_os("PATH");
    find_binary(
        explicit.as_deref().map(Path::new),
        [workspace_root()],
        path.as_deref(),
    )
    .unwrap_or_else(|not_found| match not_found.explicit {
        Some(explicit) => panic!(
            "NATS_SERVER_BIN is set to {}, which is not an executable file",
            explicit.display()
        ),
        None => panic!("{NOT_FOUND}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawClient;
    use std::io;
    use std::net::TcpStream;

    fn assert_refused(port: u16) {
        let result = TcpStream::connect(("127.0.0.1", port));
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused),
            "expected port {port} to be closed, got {result:?}"
        );
    }

    #[test]
    fn starts_a_live_server_with_jetstream() {
        let server = NatsServer::start();
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
        let client = RawClient::connect(server.port());
        assert_eq!(client.info["jetstream"], true, "INFO: {}", client.info);
        assert!(server.store_dir().join("jetstream").is_dir());
    }

    #[test]
    fn restart_keeps_the_port_and_the_stream_data() {
        let mut server = NatsServer::start();
        let port = server.port();
        let url = server.url();
        let mut client = RawClient::connect(port);
        let created = client.request(
            "$JS.API.STREAM.CREATE.ORDERS",
            r#"{"name":"ORDERS","subjects":["orders.>"],"storage":"file"}"#,
        );
        assert!(
            created.get("error").is_none(),
            "stream create failed: {created}"
        );
        let ack = client.request("orders.1", "hello");
        assert_eq!(ack["seq"], 1, "publish failed: {ack}");

        server.restart();

        assert_eq!(server.port(), port);
        assert_eq!(server.url(), url);
        let mut client = RawClient::connect(port);
        assert_eq!(client.info["jetstream"], true, "INFO: {}", client.info);
        let info = client.request("$JS.API.STREAM.INFO.ORDERS", "");
        assert_eq!(info["state"]["messages"], 1, "stream info: {info}");
    }

    #[test]
    fn stop_releases_the_port_and_can_be_repeated() {
        let mut server = NatsServer::start();
        let port = server.port();
        server.stop();
        assert_refused(port);
        server.stop();
    }

    #[test]
    fn drop_kills_the_server() {
        let server = NatsServer::start();
        let port = server.port();
        drop(server);
        assert_refused(port);
    }
}
