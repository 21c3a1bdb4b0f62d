//! The local nats-server: configuring and starting it, restarting it when it dies, and stopping it
//! gracefully. Used when `NATS_URL` is unset. Finding, configuring, starting, waiting for and
//! stopping the process itself is `jetway-nats-process`'s, shared with the test harness; this module
//! adds what a long-running server needs: checks with actionable errors before the first start,
//! progress logs, crash restarts with backoff, and never outliving Jetway.
//!
//! Everything the server needs lives in one data directory: the generated `nats-server.conf`, the
//! JetStream store, `nats-server.log` (the child's stdout and stderr, appended) and the ports file
//! through which nats-server reports the address it actually listens on.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use jetway_nats_process::{KillReason, Launcher, NatsConfig, Stopped, find_binary, log_tail};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::infra::config::{Config, SyncInterval};

/// How long nats-server may take to write its ports file. A fresh one does in well under a second,
/// but one that recovers a large JetStream store after a crash (kill -9, power loss) writes it only
/// once the recovery is done, which can take minutes; stopping it earlier would only make the next
/// start recover again.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// While waiting, how often to say so in the log.
const READY_NOTICE: Duration = Duration::from_secs(10);
/// How long `nats-server --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// While waiting for nats-server to stop, how often to say so in the log.
const STOP_NOTICE: Duration = Duration::from_secs(5);
/// First delay before a restart; doubles on each quick crash up to [`RESTART_BACKOFF_MAX`].
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between restarts, so a crash loop neither spins nor leaves NATS down for long.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A server that ran this long before dying is restarted with the minimum delay again.
const STABLE_UPTIME: Duration = Duration::from_secs(30);

/// How to run the local nats-server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNatsSettings {
    /// Explicit binary; `None` searches `tools/bin/nats-server` from the working directory, then
    /// from the running executable's directory upwards, then `nats-server` on `PATH`.
    pub bin: Option<PathBuf>,
    /// Client port on 127.0.0.1; 0 lets nats-server pick one, which is then kept across restarts.
    pub port: u16,
    /// Directory for the JetStream store, config file, log file and ports file; created if missing.
    pub data_dir: PathBuf,
    /// JetStream `sync_interval`.
    pub sync_interval: SyncInterval,
    /// How long nats-server may take to exit after SIGTERM (it flushes and closes its JetStream
    /// store) before it is killed.
    pub stop_timeout: Duration,
}

impl LocalNatsSettings {
    /// The local-server settings of a configuration (`NATS_SERVER_BIN`, `NATS_LOCAL_PORT`,
    /// `NATS_DATA_DIR`, `NATS_SYNC_INTERVAL`, `NATS_STOP_TIMEOUT`).
    pub fn from_config(config: &Config) -> Self {
        Self {
            bin: config.nats_server_bin.clone(),
            port: config.nats_local_port,
            data_dir: config.nats_data_dir.clone(),
            sync_interval: config.nats_sync_interval.clone(),
            stop_timeout: config.nats_stop_timeout,
        }
    }
}

/// Why the local nats-server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No usable binary: neither the explicit one nor any in the search path.
    #[error(
        "nats-server not found{}: run scripts/install-nats-server.sh, set NATS_SERVER_BIN, or set NATS_URL to use an existing NATS server",
        .explicit.as_ref().map(|p| format!(" at {:?}", p.display().to_string())).unwrap_or_default()
    )]
    NotFound {
        /// The explicitly configured path, if that is what was missing.
        explicit: Option<PathBuf>,
    },
    /// `nats-server --version` failed, so the binary is not one we can run.
    #[error("could not run `{} --version`: {reason}", .bin.display())]
    Version {
        /// The binary.
        bin: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Something else already listens on the requested port.
    #[error(
        "port {port} is already in use: set NATS_URL=nats://127.0.0.1:{port} to use the server there, or NATS_LOCAL_PORT to pick another port"
    )]
    PortInUse {
        /// The requested port.
        port: u16,
    },
    /// A file-system or socket operation of the checks before the first start failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done, e.g. `create /data/nats`.
        action: String,
        /// The OS error.
        source: io::Error,
    },
    /// Writing the config, spawning or waiting for nats-server failed (it may have exited early,
    /// or not become ready in time: the error quotes its log).
    #[error(transparent)]
    Process(#[from] jetway_nats_process::Error),
}

/// A running, supervised local nats-server.
///
/// It is restarted (same config, same port) whenever it exits unexpectedly. Call
/// [`LocalNats::stop`] to shut it down gracefully; merely dropping the handle asks the supervisor to
/// stop it in the background, and if the runtime is gone too the child is killed (`kill_on_drop`).
/// On Linux the child also receives SIGTERM if Jetway itself dies, even by SIGKILL.
#[derive(Debug)]
pub struct LocalNats {
    url: String,
    pid: Arc<AtomicU32>,
    stop: CancellationToken,
    supervisor: Option<JoinHandle<()>>,
}

impl LocalNats {
    /// Finds the binary, writes the config, starts nats-server and waits (up to 5 minutes, logging
    /// every 10 s) until it reports its address, then supervises it in a background task.
    ///
    /// Must be called inside a Tokio runtime.
    pub async fn start(settings: LocalNatsSettings) -> Result<Self, SupervisorError> {
        let path = std::env::var_os("PATH");
        let bin = find_binary(settings.bin.as_deref(), binary_roots(), path.as_deref()).map_err(
            |not_found| SupervisorError::NotFound {
                explicit: not_found.explicit,
            },
        )?;
        let version = binary_version(&bin).await?;
        let data_dir = prepare_data_dir(&settings.data_dir)?;
        if settings.port != 0 {
            ensure_port_free(settings.port)?;
        }
        let mut config = NatsConfig::new("jetway-local", &data_dir);
        config.port = settings.port;
        config.sync_interval = Some(settings.sync_interval.to_string());
        let local = Local {
            launcher: Launcher::new(
                bin,
                data_dir.join("nats-server.conf"),
                data_dir.clone(),
                data_dir.join("nats-server.log"),
            ),
            stop_timeout: settings.stop_timeout,
        };
        config.write(local.launcher.conf_file())?;
        let child = local.spawn()?;
        let (child, ready) = local.wait_until_ready(child).await;
        let port = match ready {
            Ok(port) => port,
            Err(error) => {
                local.stop_child(child).await;
                return Err(error.into());
            }
        };
        if port != settings.port {
            // Pin the port nats-server picked, so restarts come back at the same URL.
            config.port = port;
            if let Err(error) = config.write(local.launcher.conf_file()) {
                local.stop_child(child).await;
                return Err(error.into());
            }
        }

        let url = format!("nats://127.0.0.1:{port}");
        tracing::info!(
            url = %url,
            bin = %local.launcher.bin().display(),
            version = %version,
            pid = child.id(),
            data_dir = %data_dir.display(),
            config_file = %local.launcher.conf_file().display(),
            log_file = %local.launcher.log_file().display(),
            sync_interval = %settings.sync_interval,
            "local nats-server started"
        );
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(local, child, Arc::clone(&pid), stop.clone()));
        Ok(Self {
            url,
            pid,
            stop,
            supervisor: Some(supervisor),
        })
    }

    /// The client URL, e.g. `nats://127.0.0.1:4222`; stable across restarts.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The current nats-server process id, or `None` while it is being restarted.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|pid| *pid != 0)
    }

    /// Stops supervising and shuts nats-server down: SIGTERM so JetStream can flush and close its
    /// store, SIGKILL if it is still running after the stop timeout (logging every 5 s while it
    /// waits). Returns once the process has exited.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(supervisor) = self.supervisor.take()
            && let Err(error) = supervisor.await
        {
            tracing::error!(%error, "the nats-server supervisor task failed");
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        // Without this, a dropped handle would leave the supervisor restarting the server forever.
        self.stop.cancel();
    }
}

/// Everything needed to (re)start the same server.
struct Local {
    launcher: Launcher,
    stop_timeout: Duration,
}

impl Local {
    /// Spawns nats-server as a supervised child: in its own process group, killed when dropped,
    /// and (on Linux) signalled when Jetway dies.
    fn spawn(&self) -> Result<Child, SupervisorError> {
        let mut command = self.launcher.command()?;
        // Its own process group keeps a terminal's Ctrl-C away from nats-server: Jetway stops it
        // after draining, instead of losing NATS mid-shutdown and racing a restart.
        command.process_group(0);
        die_with_parent(&mut command);
        let mut command = Command::from(command);
        command.kill_on_drop(true);
        command
            .spawn()
            .map_err(|source| self.launcher.spawn_error(source).into())
    }

    /// Waits for the child's ports file and returns the port it listens on, logging every 10 s
    /// while nats-server recovers its store.
    async fn wait_until_ready(
        &self,
        mut child: Child,
    ) -> (Child, Result<u16, jetway_nats_process::Error>) {
        let launcher = self.launcher.clone();
        on_blocking_thread(move || {
            let log_file = launcher.log_file();
            let ready = launcher.wait_ready(&mut child, READY_TIMEOUT, READY_NOTICE, |waited| {
                tracing::info!(
                    ?waited,
                    log_file = %log_file.display(),
                    last_log_line = %log_tail(log_file, 1),
                    "nats-server is still starting (recovering its JetStream store takes a while)"
                );
            });
            (child, ready.map(|ready| ready.port))
        })
        .await
    }

    /// Stops the child: SIGTERM first (it may be writing its store), SIGKILL after the stop
    /// timeout; logs every 5 s while it waits. Returns once the child has exited.
    async fn stop_child(&self, mut child: Child) {
        let pid = child.id();
        let log_file = self.launcher.log_file().to_owned();
        let grace = self.stop_timeout;
        let notice_log_file = log_file.clone();
        let stopped = on_blocking_thread(move || {
            jetway_nats_process::terminate(&mut child, grace, STOP_NOTICE, |waited| {
                tracing::info!(
                    pid,
                    ?waited,
                    ?grace,
                    log_file = %notice_log_file.display(),
                    "waiting for nats-server to stop (it flushes and closes its JetStream store)"
                );
            })
        })
        .await;
        let (reason, result) = match stopped {
            Stopped::Exited { status, waited } => {
                tracing::info!(%status, pid, ?waited, "local nats-server stopped");
                return;
            }
            Stopped::Killed { reason, result } => (reason, result),
        };
        match reason {
            KillReason::Timeout => tracing::warn!(
                pid,
                log_file = %log_file.display(),
                ?grace,
                "nats-server did not stop within its stop timeout (NATS_STOP_TIMEOUT); killing it"
            ),
            KillReason::WaitFailed(error) => {
                tracing::warn!(%error, pid, "could not wait for nats-server to stop; killing it");
            }
            KillReason::SigtermFailed(error) => {
                tracing::warn!(%error, pid, "could not send SIGTERM to nats-server; killing it");
            }
        }
        if let Err(error) = result {
            tracing::warn!(%error, pid, "could not kill nats-server");
        }
    }
}

/// Runs a blocking wait on the blocking pool, so that polling the child for up to minutes keeps no
/// runtime worker busy.
async fn on_blocking_thread<T: Send + 'static>(wait: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(wait).await {
        Ok(value) => value,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime that is shutting down cancels a blocking task; the child was dropped
            // with it and so killed.
            Err(error) => panic!("the wait for nats-server was cancelled: {error}"),
        },
    }
}

/// Waits on the child and restarts it whenever it exits, until `stop` is cancelled.
async fn supervise(local: Local, mut child: Child, pid: Arc<AtomicU32>, stop: CancellationToken) {
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut started = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                local.stop_child(child).await;
                pid.store(0, Ordering::SeqCst);
                return;
            }
            status = child.wait() => {
                pid.store(0, Ordering::SeqCst);
                match status {
                    Ok(status) => tracing::error!(
                        %status, log_file = %local.launcher.log_file().display(),
                        "local nats-server exited unexpectedly; restarting it"
                    ),
                    Err(error) => {
                        tracing::error!(
                            %error,
                            "lost track of the local nats-server; killing and restarting it"
                        );
                        local.stop_child(child).await;
                    }
                }
            }
        }
        if started.elapsed() >= STABLE_UPTIME {
            backoff = RESTART_BACKOFF_MIN;
        }
        child = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            match local.spawn() {
                Ok(child) => break child,
                Err(error) => {
                    tracing::error!(
                        %error,
                        retry_in = ?backoff,
                        "could not restart the local nats-server"
                    )
                }
            }
        };
        started = Instant::now();
        pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        tracing::info!(pid = child.id(), "local nats-server restarted");
    }
}

/// Arranges for the child to get SIGTERM when Jetway dies, even by SIGKILL where `kill_on_drop`
/// never runs, so a crashed Jetway does not leave a nats-server holding the port and the store.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut std::process::Command) {
    // Linux pids are positive `pid_t`s, so this conversion is lossless.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe code
    // is allowed: it makes two syscalls and builds errors from raw OS codes, allocating nothing.
    // The death signal follows the *thread* that forks. Tokio's main and worker threads live as
    // long as the runtime, so this is only weaker if `start` runs on a short-lived blocking thread.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Jetway may have died between fork and prctl, before the signal was armed.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Elsewhere only `kill_on_drop` applies.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut std::process::Command) {}

/// Where to look for `tools/bin/nats-server`: the working directory, then the executable's
/// directory upwards, so a release binary run from elsewhere (`target/release/jetway-server`)
/// still finds the repository's copy.
fn binary_roots() -> impl Iterator<Item = PathBuf> {
    let exe = std::env::current_exe().ok();
    let exe_dirs: Vec<PathBuf> = exe
        .iter()
        .flat_map(|exe| exe.ancestors().skip(1))
        .map(Path::to_path_buf)
        .collect();
    std::env::current_dir().ok().into_iter().chain(exe_dirs)
}

/// `nats-server --version`, e.g. `v2.12.1`; also proves the binary runs on this machine.
async fn binary_version(bin: &Path) -> Result<String, SupervisorError> {
    let version_error = |reason: String| SupervisorError::Version {
        bin: bin.to_path_buf(),
        reason,
    };
    let output = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(VERSION_TIMEOUT, output)
        .await
        .map_err(|_| version_error(format!("no answer within {VERSION_TIMEOUT:?}")))?
        .map_err(|error| version_error(error.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(version_error(format!(
            "{} {}",
            output.status,
            stderr.trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stdout = stdout.trim();
    Ok(stdout
        .strip_prefix("nats-server:")
        .map_or(stdout, str::trim)
        .to_owned())
}

/// Creates the data directory and returns it absolute, because nats-server resolves relative paths
/// in its config file against its own working directory.
fn prepare_data_dir(dir: &Path) -> Result<PathBuf, SupervisorError> {
    let io_error = |action: &str| {
        let action = format!("{action} {}", dir.display());
        move |source| SupervisorError::Io { action, source }
    };
    std::fs::create_dir_all(dir).map_err(io_error("create"))?;
    std::fs::canonicalize(dir).map_err(io_error("resolve"))
}

/// Fails early with an actionable message instead of letting nats-server die on a busy port.
fn ensure_port_free(port: u16) -> Result<(), SupervisorError> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(_probe) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
            Err(SupervisorError::PortInUse { port })
        }
        Err(source) => Err(SupervisorError::Io {
            action: format!("listen on 127.0.0.1:{port}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetway_nats_process::{BINARY_NAME, LOG_MARKER};
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;

    fn nats_server_bin() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/nats-server")
    }

    fn settings(data_dir: &Path, port: u16) -> LocalNatsSettings {
        LocalNatsSettings {
            bin: Some(nats_server_bin()),
            port,
            data_dir: data_dir.to_path_buf(),
            sync_interval: SyncInterval::default(),
            stop_timeout: Duration::from_secs(25),
        }
    }

    fn port_of(url: &str) -> u16 {
        url.rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .expect("url ends with a port")
    }

    /// Connects and reads the greeting; a NATS server always opens with an `INFO {...}` line.
    fn read_info_line(port: u16) -> io::Result<String> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line)
    }

    fn process_exists(pid: u32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    /// Polls `check` for up to 10 s.
    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn starts_restarts_on_the_same_port_and_stops() {
        let data_dir = tempfile::TempDir::new().unwrap();
        let nats = LocalNats::start(settings(data_dir.path(), 0))
            .await
            .unwrap();
        let port = port_of(nats.url());
        assert_ne!(port, 0);
        assert!(read_info_line(port).unwrap().starts_with("INFO "));

        let conf = std::fs::read_to_string(data_dir.path().join("nats-server.conf")).unwrap();
        assert!(
            conf.contains(&format!("port: {port}\n")),
            "port is pinned for restarts:\n{conf}"
        );
        assert!(conf.contains("sync_interval: \"always\""), "{conf}");
        assert!(data_dir.path().join("nats-server.log").exists());

        let first = nats.pid().unwrap();
        // SAFETY: plain syscall on a pid we own.
        assert_eq!(
            unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) },
            0
        );
        eventually("nats-server is restarted", || {
            nats.pid().is_some_and(|pid| pid != first)
                && read_info_line(port).is_ok_and(|line| line.starts_with("INFO "))
        })
        .await;
        assert_eq!(port_of(nats.url()), port);

        let second = nats.pid().unwrap();
        nats.stop().await;
        assert!(
            !process_exists(second),
            "nats-server {second} still runs after stop()"
        );
        assert!(!process_exists(first));
        assert!(
            read_info_line(port).is_err(),
            "nothing listens after stop()"
        );
    }

    /// nats-server names its ports file after the name it runs under: a `NATS_SERVER_BIN` under
    /// another name (here a symlink) starts as quickly as the original instead of waiting out the
    /// 5-minute ready timeout.
    #[tokio::test]
    async fn a_binary_under_another_name_starts() {
        let bin_dir = tempfile::TempDir::new().unwrap();
        let data_dir = tempfile::TempDir::new().unwrap();
        let renamed = bin_dir.path().join("nats-server-pinned");
        std::os::unix::fs::symlink(std::path::absolute(nats_server_bin()).unwrap(), &renamed)
            .unwrap();
        let mut settings = settings(data_dir.path(), 0);
        settings.bin = Some(renamed);
        let nats = tokio::time::timeout(Duration::from_secs(60), LocalNats::start(settings))
            .await
            .expect("started well before the ready timeout")
            .unwrap();
        assert!(
            read_info_line(port_of(nats.url()))
                .unwrap()
                .starts_with("INFO ")
        );
        nats.stop().await;
    }

    /// A stand-in for nats-server: answers `--version`, reports port 4 in its ports file, and runs
    /// the shell command `on_term` when it gets SIGTERM (an empty one ignores SIGTERM).
    fn fake_nats_server(dir: &Path, on_term: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = format!(
            r#"#!/bin/sh
if [ "$1" = --version ]; then echo "nats-server: v0.0.0-fake"; exit 0; fi
while [ $# -gt 0 ]; do [ "$1" = --ports_file_dir ] && dir=$2; shift; done
trap '{on_term}' TERM
echo '{{"nats":["nats://127.0.0.1:4"]}}' > "$dir/{BINARY_NAME}_$$.ports"
while :; do sleep 1 & wait $!; done
"#
        );
        let path = dir.join(BINARY_NAME);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A nats-server that takes longer than a second to close its store after SIGTERM (here: 2 s)
    /// is waited for, within the stop timeout, not killed.
    #[tokio::test]
    async fn stop_waits_for_a_slow_store_within_the_stop_timeout() {
        let bin_dir = tempfile::TempDir::new().unwrap();
        let data_dir = tempfile::TempDir::new().unwrap();
        let closed = data_dir.path().join("store-closed");
        let mut slow = settings(data_dir.path(), 0);
        slow.bin = Some(fake_nats_server(
            bin_dir.path(),
            &format!("sleep 2; touch {}; exit 0", closed.display()),
        ));
        slow.stop_timeout = Duration::from_secs(120);
        let nats = LocalNats::start(slow).await.unwrap();
        let pid = nats.pid().unwrap();
        nats.stop().await;
        assert!(
            closed.exists(),
            "nats-server was killed before it closed its store"
        );
        assert!(!process_exists(pid));
    }

    /// One that ignores SIGTERM is killed once the stop timeout has passed.
    #[tokio::test]
    async fn stop_kills_a_server_that_outlives_the_stop_timeout() {
        let bin_dir = tempfile::TempDir::new().unwrap();
        let data_dir = tempfile::TempDir::new().unwrap();
        let mut stuck = settings(data_dir.path(), 0);
        stuck.bin = Some(fake_nats_server(bin_dir.path(), ""));
        stuck.stop_timeout = Duration::from_millis(200);
        let nats = LocalNats::start(stuck).await.unwrap();
        let pid = nats.pid().unwrap();
        nats.stop().await;
        assert!(!process_exists(pid), "nats-server {pid} still runs");
    }

    #[tokio::test]
    async fn missing_binary_is_not_found() {
        let data_dir = tempfile::TempDir::new().unwrap();
        let mut missing = settings(data_dir.path(), 0);
        missing.bin = Some(data_dir.path().join("no-such-nats-server"));
        let error = LocalNats::start(missing).await.unwrap_err();
        assert!(
            matches!(error, SupervisorError::NotFound { explicit: Some(_) }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .ends_with(": run scripts/install-nats-server.sh, set NATS_SERVER_BIN, or set NATS_URL to use an existing NATS server"),
            "{error}"
        );
    }

    #[test]
    fn not_found_without_explicit_binary_says_what_to_do() {
        assert_eq!(
            SupervisorError::NotFound { explicit: None }.to_string(),
            "nats-server not found: run scripts/install-nats-server.sh, set NATS_SERVER_BIN, or set NATS_URL to use an existing NATS server"
        );
    }

    #[tokio::test]
    async fn busy_port_is_reported_before_spawning() {
        let data_dir = tempfile::TempDir::new().unwrap();
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = busy.local_addr().unwrap().port();
        let error = LocalNats::start(settings(data_dir.path(), port))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "port {port} is already in use: set NATS_URL=nats://127.0.0.1:{port} to use the server there, or NATS_LOCAL_PORT to pick another port"
            )
        );
        assert!(
            !data_dir.path().join("nats-server.log").exists(),
            "nothing was spawned"
        );
    }

    #[tokio::test]
    async fn early_exit_quotes_the_log() {
        let data_dir = tempfile::TempDir::new().unwrap();
        // A regular file where the store must go makes nats-server exit at once.
        let store = data_dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("jetstream"), "not a directory").unwrap();
        let error = LocalNats::start(settings(&store, 0)).await.unwrap_err();
        assert!(
            matches!(
                error,
                SupervisorError::Process(jetway_nats_process::Error::Exited { .. })
            ),
            "{error}"
        );
        assert!(
            !error.to_string().contains(LOG_MARKER),
            "only the child's own lines: {error}"
        );
    }
}
