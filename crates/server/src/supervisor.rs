//! The local nats-server: finding the binary, configuring and starting it, restarting it when it
//! dies, and stopping it gracefully. Used when `NATS_URL` is unset.
//!
//! Everything the server needs lives in one data directory: the generated `nats-server.conf`, the
//! JetStream store, `nats-server.log` (the child's stdout and stderr, appended) and the ports file
//! through which nats-server reports the address it actually listens on.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SyncInterval};

/// How long nats-server may take to write its ports file. A fresh one does in well under a second,
/// but one that recovers a large JetStream store after a crash (kill -9, power loss) writes it only
/// once the recovery is done, which can take minutes; stopping it earlier would only make the next
/// start recover again.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// While waiting, how often to say so in the log.
const READY_NOTICE: Duration = Duration::from_secs(10);
/// How often to look for the ports file while waiting.
const READY_POLL: Duration = Duration::from_millis(25);
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
/// Lines of the server log quoted in startup errors.
const LOG_TAIL_LINES: usize = 20;
/// Written to the log before every start, so errors quote only the latest run.
const LOG_MARKER: &str = "==== jetway: starting nats-server";
/// Name of the binary, both under `tools/bin` and on `PATH`.
const BINARY_NAME: &str = "nats-server";

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
    /// A path that must be written into nats-server's config file is not valid UTF-8.
    #[error("{} is not valid UTF-8, which nats-server's config file cannot express", .path.display())]
    NonUnicodePath {
        /// The path.
        path: PathBuf,
    },
    /// A file-system or socket operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done, e.g. `create /data/nats`.
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
        /// The last lines it logged.
        tail: String,
    },
    /// nats-server did not report its address in time.
    #[error("nats-server did not become ready within {timeout:?}; end of {}:\n{tail}", .log_file.display())]
    NotReady {
        /// How long we waited.
        timeout: Duration,
        /// Its log file.
        log_file: PathBuf,
        /// The last lines it logged.
        tail: String,
    },
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
        let bin = find_binary(settings.bin.as_deref())?;
        let version = binary_version(&bin).await?;
        let data_dir = prepare_data_dir(&settings.data_dir)?;
        if settings.port != 0 {
            ensure_port_free(settings.port)?;
        }
        let launch = Launch {
            conf_file: data_dir.join("nats-server.conf"),
            log_file: data_dir.join("nats-server.log"),
            bin,
            data_dir,
            sync_interval: settings.sync_interval,
            stop_timeout: settings.stop_timeout,
        };
        launch.write_config(settings.port)?;
        let mut child = launch.spawn()?;
        let port = match launch.wait_until_ready(&mut child).await {
            Ok(port) => port,
            Err(error) => {
                launch.stop_child(&mut child).await;
                return Err(error);
            }
        };
        if port != settings.port {
            // Pin the port nats-server picked, so restarts come back at the same URL.
            if let Err(error) = launch.write_config(port) {
                launch.stop_child(&mut child).await;
                return Err(error);
            }
        }

        let url = format!("nats://127.0.0.1:{port}");
        tracing::info!(
            url = %url,
            bin = %launch.bin.display(),
            version = %version,
            pid = child.id(),
            data_dir = %launch.data_dir.display(),
            config_file = %launch.conf_file.display(),
            log_file = %launch.log_file.display(),
            sync_interval = %launch.sync_interval,
            "local nats-server started"
        );
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(launch, child, Arc::clone(&pid), stop.clone()));
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
struct Launch {
    bin: PathBuf,
    data_dir: PathBuf,
    conf_file: PathBuf,
    log_file: PathBuf,
    sync_interval: SyncInterval,
    stop_timeout: Duration,
}

impl Launch {
    /// Writes `nats-server.conf`; port 0 becomes nats-server's "random port" (-1).
    fn write_config(&self, port: u16) -> Result<(), SupervisorError> {
        let store_dir = self
            .data_dir
            .to_str()
            .ok_or_else(|| SupervisorError::NonUnicodePath {
                path: self.data_dir.clone(),
            })?;
        let port = if port == 0 { -1 } else { i32::from(port) };
        let conf = format!(
            "# Written by Jetway each time it starts the local nats-server: edits are overwritten.\n\
             server_name: \"jetway-local\"\n\
             host: \"127.0.0.1\"\n\
             port: {port}\n\
             jetstream {{\n  \
               store_dir: \"{}\"\n  \
               sync_interval: \"{}\"\n\
             }}\n",
            conf_escape(store_dir),
            self.sync_interval,
        );
        std::fs::write(&self.conf_file, conf)
            .map_err(io_error(format!("write {}", self.conf_file.display())))
    }

    /// Spawns nats-server with its output appended to the log file.
    fn spawn(&self) -> Result<Child, SupervisorError> {
        remove_stale_ports_files(&self.data_dir)?;
        let open_log = io_error(format!("open {}", self.log_file.display()));
        let mut stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(&open_log)?;
        let started_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "an unknown time".to_owned());
        writeln!(stdout, "{LOG_MARKER} at {started_at} ====").map_err(&open_log)?;
        let stderr = stdout.try_clone().map_err(&open_log)?;

        let mut command = Command::new(&self.bin);
        command
            .arg("-c")
            .arg(&self.conf_file)
            .arg("--ports_file_dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group keeps a terminal's Ctrl-C away from nats-server: Jetway stops it
            // after draining, instead of losing NATS mid-shutdown and racing a restart.
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut command);
        command.spawn().map_err(|source| SupervisorError::Spawn {
            bin: self.bin.clone(),
            source,
        })
    }

    /// Polls for the child's ports file and returns the port it listens on.
    async fn wait_until_ready(&self, child: &mut Child) -> Result<u16, SupervisorError> {
        let start = Instant::now();
        let deadline = start + READY_TIMEOUT;
        let mut notice = start + READY_NOTICE;
        loop {
            let exited = child
                .try_wait()
                .map_err(io_error("wait for nats-server".to_owned()))?;
            if let Some(status) = exited {
                return Err(SupervisorError::Exited {
                    status,
                    log_file: self.log_file.clone(),
                    tail: log_tail(&self.log_file),
                });
            }
            if let Some(port) = child.id().and_then(|pid| self.read_ports_file(pid)) {
                return Ok(port);
            }
            let now = Instant::now();
            if now >= notice {
                notice = now + READY_NOTICE;
                tracing::info!(
                    waited = ?now - start,
                    log_file = %self.log_file.display(),
                    last_log_line = %log_tail(&self.log_file).lines().last().unwrap_or_default(),
                    "nats-server is still starting (recovering its JetStream store takes a while)"
                );
            }
            if now >= deadline {
                return Err(SupervisorError::NotReady {
                    timeout: READY_TIMEOUT,
                    log_file: self.log_file.clone(),
                    tail: log_tail(&self.log_file),
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The client port from `nats-server_<pid>.ports`; `None` until it exists and parses (it is not
    /// written atomically, so a half-written file is simply read again later).
    fn read_ports_file(&self, pid: u32) -> Option<u16> {
        #[derive(Deserialize)]
        struct Ports {
            nats: Vec<String>,
        }
        let text =
            std::fs::read_to_string(self.data_dir.join(format!("{BINARY_NAME}_{pid}.ports")))
                .ok()?;
        let ports: Ports = serde_json::from_str(&text).ok()?;
        let (_, port) = ports.nats.first()?.rsplit_once(':')?;
        port.parse().ok()
    }

    /// Stops the child: SIGTERM first (it may be writing its store), SIGKILL after the stop
    /// timeout.
    async fn stop_child(&self, child: &mut Child) {
        terminate(child, &self.log_file, self.stop_timeout).await;
    }
}

/// Waits on the child and restarts it whenever it exits, until `stop` is cancelled.
async fn supervise(launch: Launch, mut child: Child, pid: Arc<AtomicU32>, stop: CancellationToken) {
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut started = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                launch.stop_child(&mut child).await;
                pid.store(0, Ordering::SeqCst);
                return;
            }
            status = child.wait() => {
                pid.store(0, Ordering::SeqCst);
                match status {
                    Ok(status) => tracing::error!(
                        %status, log_file = %launch.log_file.display(),
                        "local nats-server exited unexpectedly; restarting it"
                    ),
                    Err(error) => {
                        tracing::error!(
                            %error,
                            "lost track of the local nats-server; killing and restarting it"
                        );
                        launch.stop_child(&mut child).await;
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
            match launch.spawn() {
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

/// SIGTERM, then SIGKILL if the child still runs after `grace`; returns once it has exited.
async fn terminate(child: &mut Child, log_file: &Path, grace: Duration) {
    // `id()` is `None` once the child has been reaped; until then its pid cannot be reused, so
    // signalling it cannot hit an unrelated process.
    let Some(pid) = child.id() else {
        return;
    };
    let log_file = log_file.display();
    let start = Instant::now();
    let deadline = start + grace;
    match send_sigterm(pid) {
        Ok(()) => loop {
            let notice = (Instant::now() + STOP_NOTICE).min(deadline);
            match tokio::time::timeout_at(notice, child.wait()).await {
                Ok(Ok(status)) => {
                    let waited = start.elapsed();
                    tracing::info!(%status, pid, ?waited, "local nats-server stopped");
                    return;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, pid, "could not wait for nats-server to stop; killing it");
                    break;
                }
                Err(_) if Instant::now() >= deadline => {
                    tracing::warn!(pid, %log_file, ?grace, "nats-server did not stop within its stop timeout (NATS_STOP_TIMEOUT); killing it");
                    break;
                }
                Err(_) => tracing::info!(
                    pid,
                    waited = ?start.elapsed(),
                    ?grace,
                    %log_file,
                    "waiting for nats-server to stop (it flushes and closes its JetStream store)"
                ),
            }
        },
        Err(error) => {
            tracing::warn!(%error, pid, "could not send SIGTERM to nats-server; killing it");
        }
    }
    if let Err(error) = child.kill().await {
        tracing::warn!(%error, pid, "could not kill nats-server");
    }
}

fn send_sigterm(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) only takes integers and touches no memory of ours.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Arranges for the child to get SIGTERM when Jetway dies, even by SIGKILL where `kill_on_drop`
/// never runs, so a crashed Jetway does not leave a nats-server holding the port and the store.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
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
fn die_with_parent(_command: &mut Command) {}

/// The explicit binary if given (it must exist), else the first `tools/bin/nats-server` above the
/// working directory or the executable, else `nats-server` on `PATH`.
fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, SupervisorError> {
    if let Some(path) = explicit {
        return if is_executable_file(path) {
            Ok(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
        } else {
            Err(SupervisorError::NotFound {
                explicit: Some(path.to_path_buf()),
            })
        };
    }
    let in_tools = Path::new("tools").join("bin").join(BINARY_NAME);
    let from_cwd = std::env::current_dir().ok().map(|cwd| cwd.join(&in_tools));
    // A release binary run from elsewhere (`target/release/jetway-server`) still finds the repo's
    // copy.
    let exe = std::env::current_exe().ok();
    let from_exe = exe
        .iter()
        .flat_map(|exe| exe.ancestors().skip(1))
        .map(|dir| dir.join(&in_tools));
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path_var).map(|dir| dir.join(BINARY_NAME));
    from_cwd
        .into_iter()
        .chain(from_exe)
        .chain(on_path)
        .find(|candidate| is_executable_file(candidate))
        .ok_or(SupervisorError::NotFound { explicit: None })
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
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
    std::fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
    std::fs::canonicalize(dir).map_err(io_error(format!("resolve {}", dir.display())))
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

/// Removes ports files of earlier runs (a killed server leaves its file behind), so the directory
/// only ever holds the current one.
fn remove_stale_ports_files(data_dir: &Path) -> Result<(), SupervisorError> {
    let entries =
        std::fs::read_dir(data_dir).map_err(io_error(format!("list {}", data_dir.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!("{BINARY_NAME}_")) && name.ends_with(".ports") {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_error(format!("remove {}", path.display())))?;
        }
    }
    Ok(())
}

/// The last lines of the log since the latest start marker, for error messages. Reads only the end
/// of the file, which grows across runs.
fn log_tail(log_file: &Path) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read_end = || -> io::Result<String> {
        let mut file = File::open(log_file)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read_end() {
        Ok(text) => {
            let latest_run = text
                .rfind(LOG_MARKER)
                .map_or(text.as_str(), |at| &text[at..]);
            let lines: Vec<&str> = latest_run.lines().skip(1).collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(could not read the log: {error})"),
    }
}

/// Quotes text for a double-quoted string in nats-server's config syntax.
fn conf_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn io_error(action: String) -> impl Fn(io::Error) -> SupervisorError {
    move |source| SupervisorError::Io {
        action: action.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(matches!(error, SupervisorError::Exited { .. }), "{error}");
        assert!(
            !error.to_string().contains(LOG_MARKER),
            "only the child's own lines: {error}"
        );
    }

    #[test]
    fn log_tail_keeps_the_latest_run_only() {
        let dir = tempfile::TempDir::new().unwrap();
        let log = dir.path().join("nats-server.log");
        std::fs::write(
            &log,
            format!("{LOG_MARKER} 1 ====\nold\n{LOG_MARKER} 2 ====\nnew 1\nnew 2\n"),
        )
        .unwrap();
        assert_eq!(log_tail(&log), "new 1\nnew 2");
    }

    #[test]
    fn config_strings_are_escaped() {
        assert_eq!(conf_escape(r#"/a"b\c"#), r#"/a\"b\\c"#);
    }
}
