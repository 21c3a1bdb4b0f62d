//! Owns the lifecycle of one real `nats-server` process with JetStream for a test: finding the
//! binary, starting it on a free loopback port with a private store, restarting it on the same port
//! and store, and killing it when the test is done.
//!
//! Everything here is synchronous (`std::process`) so that `Drop` can kill the server whether or not
//! a tokio runtime is still alive.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a (re)started server gets to report its port. Startup takes milliseconds; the slack is
/// for loaded CI machines.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two looks at the ports file.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How much of the server log a startup failure shows.
const LOG_TAIL_LINES: usize = 40;

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
        let mut files = Files::new(binary(), args);
        let (child, url, port) = files.launch(None);
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
        &self.files.bin
    }

    /// The JetStream store directory (`-sd`); JetStream keeps its data in `jetstream/` under it.
    pub fn store_dir(&self) -> &Path {
        &self.files.store
    }

    /// Kills the server and waits for it to exit, so its port is free when this returns. Does
    /// nothing if it is already stopped.
    ///
    /// This is a crash, not a graceful shutdown: whatever the server had not yet written to its
    /// store is lost, as it would be if the real server died.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child)
                .unwrap_or_else(|e| panic!("cannot stop nats-server (pid {}): {e}", child.id()));
        }
    }

    /// Stops the server (if running) and starts it again on the same port with the same store, so
    /// clients can reconnect to [`NatsServer::url`] and find their streams and consumers. Returns
    /// once the server accepts clients again.
    pub fn restart(&mut self) {
        self.stop();
        let (child, url, _) = self.files.launch(Some(self.port));
        self.child = Some(child);
        self.url = url;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors are ignored: panicking here while a failed test unwinds would abort the whole
            // test binary and hide the original failure.
            let _ = kill_and_reap(&mut child);
        }
    }
}

/// The paths one server uses, all inside a temporary directory that lives as long as the server.
#[derive(Debug)]
struct Files {
    bin: PathBuf,
    /// Options added to every run.
    extra_args: Vec<String>,
    store: PathBuf,
    ports: PathBuf,
    log: PathBuf,
    /// Deletes the directory on drop, unless a startup failure asked to keep it.
    root: TempDir,
}

impl Files {
    fn new(bin: PathBuf, extra_args: &[&str]) -> Files {
        let root = tempfile::Builder::new()
            .prefix("jetway-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for nats-server: {e}"));
        Files {
            bin,
            extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
            store: root.path().join("store"),
            ports: root.path().join("ports"),
            log: root.path().join("nats-server.log"),
            root,
        }
    }

    /// Spawns the server (on `port`, or a free one when `None`) and waits for its ports file.
    /// Returns the child, the client URL and the client port.
    fn launch(&mut self, port: Option<u16>) -> (Child, String, u16) {
        // A server that was killed cannot delete its ports file; clearing the directory means
        // whatever appears next belongs to the new process even if the OS reuses the old pid.
        match fs::remove_dir_all(&self.ports) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot clear {}: {e}", self.ports.display()),
        }
        fs::create_dir_all(&self.ports)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.ports.display()));

        // Appending keeps the log of earlier runs, so a failed restart can be compared with the
        // run before it.
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let stderr = stdout
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let port_arg = port.map_or_else(|| "-1".to_owned(), |port| port.to_string());

        let mut child = Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-n", SERVER_NAME, "-p", &port_arg])
            .arg("-sd")
            .arg(&self.store)
            .arg("--ports_file_dir")
            .arg(&self.ports)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));

        // The server writes its ports file only once its client listener is open, after JetStream
        // has started, so its presence means "ready".
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    self.fail(&format!("nats-server exited during startup ({status})"))
                }
                Err(e) => {
                    let _ = kill_and_reap(&mut child);
                    self.fail(&format!("cannot check on nats-server during startup: {e}"));
                }
            }
            if let Some((url, port)) = read_ports_file(&self.ports, child.id()) {
                return (child, url, port);
            }
            if Instant::now() >= deadline {
                let _ = kill_and_reap(&mut child);
                self.fail(&format!(
                    "nats-server did not report its client port within {STARTUP_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Panics with `what`, how the server was run, and the end of its log. The temporary directory
    /// is kept so the full log and the store can still be inspected after the test has unwound.
    fn fail(&mut self, what: &str) -> ! {
        self.root.disable_cleanup(true);
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        panic!(
            "{what}\nbinary: {} {}\nlog (kept): {}\n--- end of log ---\n{tail}",
            self.bin.display(),
            self.extra_args.join(" "),
            self.log.display(),
        )
    }
}

/// Kills the child and reaps it; once this returns, the process and its listening socket are gone.
pub(crate) fn kill_and_reap(child: &mut Child) -> io::Result<ExitStatus> {
    child.kill()?;
    child.wait()
}

/// Reads the client URL and port from the ports file of process `pid` in `dir`, or `None` if it is
/// not there yet.
fn read_ports_file(dir: &Path, pid: u32) -> Option<(String, u16)> {
    // The file is named `<executable name>_<pid>.ports`; matching on the pid alone keeps this
    // working when NATS_SERVER_BIN points at a binary with another name.
    let suffix = format!("_{pid}.ports");
    let path = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().ends_with(&suffix))
        })?;
    // The server does not write the file atomically, so content that does not parse yet means
    // "not ready", not an error.
    let text = fs::read_to_string(path).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = ports.get("nats")?.get(0)?.as_str()?;
    let port = url.rsplit(':').next()?.parse().ok()?;
    Some((url.to_owned(), port))
}

/// The workspace root: the testkit crate lives at `<root>/crates/testkit`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the testkit crate lives two levels below the workspace root")
        .to_path_buf()
}

/// The nats-server binary tests run: see [`NatsServer::start`]. Panics, saying what to install, if
/// there is none.
pub(crate) fn binary() -> PathBuf {
    find_binary(
        std::env::var_os("NATS_SERVER_BIN"),
        &workspace_root(),
        std::env::var_os("PATH"),
    )
    .unwrap_or_else(|message| panic!("{message}"))
}

/// Picks the nats-server binary: `explicit` (the value of `NATS_SERVER_BIN`; empty counts as
/// unset), else `<root>/tools/bin/nats-server`, else `nats-server` in one of the `path`
/// directories. Takes the environment as arguments so tests need not change the process
/// environment.
fn find_binary(
    explicit: Option<OsString>,
    root: &Path,
    path: Option<OsString>,
) -> Result<PathBuf, String> {
    if let Some(explicit) = explicit.filter(|value| !value.is_empty()) {
        let explicit = PathBuf::from(explicit);
        return if explicit.is_file() {
            Ok(explicit)
        } else {
            Err(format!(
                "NATS_SERVER_BIN is set to {}, which is not a file",
                explicit.display()
            ))
        };
    }
    let pinned = root.join("tools/bin/nats-server");
    if pinned.is_file() {
        return Ok(pinned);
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| NOT_FOUND.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawClient;
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

    #[test]
    fn binary_lookup_order() {
        let root = tempfile::tempdir().unwrap();
        let path_dir = tempfile::tempdir().unwrap();
        let explicit = root.path().join("my-nats");
        let pinned = root.path().join("tools/bin/nats-server");
        let on_path = path_dir.path().join("nats-server");
        let path =
            Some(std::env::join_paths([Path::new("/nonexistent"), path_dir.path()]).unwrap());

        assert_eq!(
            find_binary(None, root.path(), path.clone()),
            Err(NOT_FOUND.to_owned())
        );

        fs::write(&on_path, "").unwrap();
        assert_eq!(
            find_binary(None, root.path(), path.clone()),
            Ok(on_path.clone())
        );

        fs::create_dir_all(pinned.parent().unwrap()).unwrap();
        fs::write(&pinned, "").unwrap();
        assert_eq!(
            find_binary(None, root.path(), path.clone()),
            Ok(pinned.clone())
        );
        assert_eq!(
            find_binary(Some(OsString::new()), root.path(), path.clone()),
            Ok(pinned.clone())
        );

        let missing = find_binary(Some(explicit.clone().into()), root.path(), path.clone());
        assert!(missing.unwrap_err().contains("NATS_SERVER_BIN"));
        fs::write(&explicit, "").unwrap();
        assert_eq!(
            find_binary(Some(explicit.clone().into()), root.path(), path),
            Ok(explicit)
        );
    }
}
