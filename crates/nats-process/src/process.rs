//! Running nats-server: spawning it with its output appended to a log, waiting for its ports file,
//! and stopping it gracefully or at once.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, io_error};

/// Written to the log before every start, so that [`log_tail`] quotes only the latest run.
pub const LOG_MARKER: &str = "==== jetway: starting nats-server";

/// Pause between two looks at the ports file or at whether the process has exited.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Lines of the log quoted in [`Error::Exited`] and [`Error::NotReady`].
const LOG_TAIL_LINES: usize = 40;

/// A child process that can be polled and killed without blocking: `std::process::Child`, and with
/// the `tokio` feature `tokio::process::Child`.
pub trait Process {
    /// Its process id; `None` once it has been reaped (where the child type knows that).
    fn pid(&self) -> Option<u32>;
    /// Its exit status if it has exited (reaping it), `None` if it still runs.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>>;
    /// Sends SIGKILL without waiting.
    fn start_kill(&mut self) -> io::Result<()>;
}

impl Process for Child {
    fn pid(&self) -> Option<u32> {
        Some(self.id())
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        Child::try_wait(self)
    }

    fn start_kill(&mut self) -> io::Result<()> {
        self.kill()
    }
}

#[cfg(feature = "tokio")]
impl Process for tokio::process::Child {
    fn pid(&self) -> Option<u32> {
        self.id()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        tokio::process::Child::try_wait(self)
    }

    fn start_kill(&mut self) -> io::Result<()> {
        tokio::process::Child::start_kill(self)
    }
}

/// Where a ready server listens, from its ports file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The client URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The client port.
    pub port: u16,
}

/// How to start one nats-server, again and again: its binary, config file, ports-file directory,
/// log file and extra command-line options.
#[derive(Debug, Clone)]
pub struct Launcher {
    bin: PathBuf,
    conf_file: PathBuf,
    ports_dir: PathBuf,
    log_file: PathBuf,
    args: Vec<OsString>,
}

impl Launcher {
    /// Runs `bin -c conf_file --ports_file_dir ports_dir`, appending its output to `log_file`.
    /// `ports_dir` must exist; any `*.ports` file in it is removed before each start.
    pub fn new(bin: PathBuf, conf_file: PathBuf, ports_dir: PathBuf, log_file: PathBuf) -> Self {
        Self {
            bin,
            conf_file,
            ports_dir,
            log_file,
            args: Vec::new(),
        }
    }

    /// Adds command-line options to every start, after the config file (so they override it).
    pub fn with_args<I: Into<OsString>>(mut self, args: impl IntoIterator<Item = I>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The config file.
    pub fn conf_file(&self) -> &Path {
        &self.conf_file
    }

    /// The log file, holding every run's output.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The extra command-line options.
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// Prepares a start: removes the ports files of earlier runs (a killed server cannot remove
    /// its own, and the OS may give the new process the old pid), writes [`LOG_MARKER`] to the log,
    /// and returns the command, for a caller that adds options of its own before spawning.
    pub fn command(&self) -> Result<Command, Error> {
        self.remove_ports_files()?;
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
            .arg(&self.ports_dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        Ok(command)
    }

    /// Starts the server as [`Launcher::command`] prepares it.
    pub fn spawn(&self) -> Result<Child, Error> {
        self.command()?
            .spawn()
            .map_err(|source| self.spawn_error(source))
    }

    /// The error for a failed spawn of this launcher's binary.
    pub fn spawn_error(&self, source: io::Error) -> Error {
        Error::Spawn {
            bin: self.bin.clone(),
            source,
        }
    }

    /// Waits until `child` writes its ports file, which nats-server does once its client listener
    /// is open, after JetStream has started (and after it has recovered its store, which can take
    /// minutes after a crash). Calls `on_notice` with the time waited every `notice_every`.
    ///
    /// Fails if the child exits first or `timeout` passes; the child is left as it is.
    pub fn wait_ready(
        &self,
        child: &mut impl Process,
        timeout: Duration,
        notice_every: Duration,
        mut on_notice: impl FnMut(Duration),
    ) -> Result<Ready, Error> {
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let mut notice = start.checked_add(notice_every);
        loop {
            let exited = child
                .try_wait()
                .map_err(io_error("wait for nats-server".to_owned()))?;
            if let Some(status) = exited {
                return Err(Error::Exited {
                    status,
                    log_file: self.log_file.clone(),
                    tail: log_tail(&self.log_file, LOG_TAIL_LINES),
                });
            }
            if let Some(ready) = child.pid().and_then(|pid| self.read_ports_file(pid)) {
                return Ok(ready);
            }
            let now = Instant::now();
            if deadline.is_some_and(|deadline| now >= deadline) {
                return Err(Error::NotReady {
                    timeout,
                    log_file: self.log_file.clone(),
                    tail: log_tail(&self.log_file, LOG_TAIL_LINES),
                });
            }
            if notice.is_some_and(|notice| now >= notice) {
                notice = now.checked_add(notice_every);
                on_notice(now - start);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The address in process `pid`'s ports file; `None` until it exists and parses.
    fn read_ports_file(&self, pid: u32) -> Option<Ready> {
        // The file is named `<executable name>_<pid>.ports`; matching on the pid alone keeps this
        // working for a binary under another name (a symlink, a versioned copy).
        let suffix = format!("_{pid}.ports");
        let path = std::fs::read_dir(&self.ports_dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().ends_with(&suffix))
            })?;
        // nats-server does not write the file atomically, so content that does not parse yet means
        // "not ready", not an error.
        let text = std::fs::read_to_string(path).ok()?;
        let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
        let url = ports.get("nats")?.get(0)?.as_str()?;
        let port = url.rsplit_once(':')?.1.parse().ok()?;
        Some(Ready {
            url: url.to_owned(),
            port,
        })
    }

    fn remove_ports_files(&self) -> Result<(), Error> {
        let entries = std::fs::read_dir(&self.ports_dir)
            .map_err(io_error(format!("list {}", self.ports_dir.display())))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".ports") {
                let path = entry.path();
                std::fs::remove_file(&path)
                    .map_err(io_error(format!("remove {}", path.display())))?;
            }
        }
        Ok(())
    }
}

/// How [`terminate`] ended.
#[derive(Debug)]
pub enum Stopped {
    /// The process exited by itself after SIGTERM (or had already exited).
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// How long it took.
        waited: Duration,
    },
    /// The process was killed.
    Killed {
        /// Why it was not left to exit by itself.
        reason: KillReason,
        /// The outcome of killing and reaping it.
        result: io::Result<ExitStatus>,
    },
}

/// Why [`terminate`] killed the process.
#[derive(Debug)]
pub enum KillReason {
    /// It still ran when its grace period ended.
    Timeout,
    /// SIGTERM could not be sent.
    SigtermFailed(io::Error),
    /// Whether it had exited could not be checked.
    WaitFailed(io::Error),
}

/// Stops `child` gracefully: SIGTERM (nats-server then flushes and closes its JetStream store), and
/// SIGKILL if it still runs after `grace`. Calls `on_notice` with the time waited every
/// `notice_every`. Returns once the process has exited.
pub fn terminate(
    child: &mut impl Process,
    grace: Duration,
    notice_every: Duration,
    on_notice: impl FnMut(Duration),
) -> Stopped {
    match ask_to_exit(child, grace, notice_every, on_notice) {
        Ok((status, waited)) => Stopped::Exited { status, waited },
        Err(reason) => Stopped::Killed {
            reason,
            result: kill(child),
        },
    }
}

fn ask_to_exit(
    child: &mut impl Process,
    grace: Duration,
    notice_every: Duration,
    mut on_notice: impl FnMut(Duration),
) -> Result<(ExitStatus, Duration), KillReason> {
    let start = Instant::now();
    // Checked first: only an unreaped child's pid is sure not to belong to another process.
    if let Some(status) = child.try_wait().map_err(KillReason::WaitFailed)? {
        return Ok((status, Duration::ZERO));
    }
    let pid = child
        .pid()
        .ok_or_else(|| KillReason::WaitFailed(io::Error::other("the process has no pid")))?;
    send_sigterm(pid).map_err(KillReason::SigtermFailed)?;
    let deadline = start.checked_add(grace);
    let mut notice = start.checked_add(notice_every);
    loop {
        if let Some(status) = child.try_wait().map_err(KillReason::WaitFailed)? {
            return Ok((status, start.elapsed()));
        }
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            return Err(KillReason::Timeout);
        }
        if notice.is_some_and(|notice| now >= notice) {
            notice = now.checked_add(notice_every);
            on_notice(now - start);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Kills `child` with SIGKILL and reaps it: a crash, losing whatever it had not yet written. Once
/// this returns, the process and its listening sockets are gone.
pub fn kill(child: &mut impl Process) -> io::Result<ExitStatus> {
    child.start_kill()?;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(POLL_INTERVAL);
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

/// The last `lines` lines of the log since the latest [`LOG_MARKER`], for error messages. Reads
/// only the end of the file, which grows across runs.
pub fn log_tail(log_file: &Path, lines: usize) -> String {
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
            let run: Vec<&str> = latest_run.lines().skip(1).collect();
            run[run.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(could not read the log: {error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NatsConfig;
    use std::path::Path;

    fn nats_server_bin() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/nats-server")
    }

    /// A launcher for a JetStream server in `dir`, run through `bin`.
    fn launcher(dir: &Path, bin: PathBuf) -> Launcher {
        let conf_file = dir.join("nats-server.conf");
        NatsConfig::new("test", dir.join("store"))
            .write(&conf_file)
            .unwrap();
        Launcher::new(
            bin,
            conf_file,
            dir.to_path_buf(),
            dir.join("nats-server.log"),
        )
    }

    /// nats-server names its ports file after the name it was run under; a binary under another
    /// name is found ready all the same.
    #[test]
    fn a_binary_under_another_name_becomes_ready() {
        let dir = tempfile::tempdir().unwrap();
        let renamed = dir.path().join("my-nats");
        std::os::unix::fs::symlink(std::path::absolute(nats_server_bin()).unwrap(), &renamed)
            .unwrap();
        let launcher = launcher(dir.path(), renamed);
        let mut child = launcher.spawn().unwrap();
        let ready = launcher.wait_ready(&mut child, Duration::from_secs(60), Duration::MAX, |_| {});
        // A server that stops gracefully removes its ports file, so look before stopping it.
        let named_after_the_link = std::fs::read_dir(dir.path()).unwrap().any(|entry| {
            entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("my-nats_")
        });
        let stopped = terminate(&mut child, Duration::from_secs(30), Duration::MAX, |_| {});
        let ready = ready.unwrap();
        assert_eq!(ready.url, format!("nats://127.0.0.1:{}", ready.port));
        assert!(
            named_after_the_link,
            "the ports file is named after the link"
        );
        assert!(
            matches!(stopped, Stopped::Exited { status, .. } if status.success()),
            "{stopped:?}"
        );
    }

    #[test]
    fn an_early_exit_quotes_this_run_of_the_log() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken-nats");
        std::fs::write(&broken, "#!/bin/sh\necho broken\nexit 3\n").unwrap();
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
        let launcher = launcher(dir.path(), broken);
        std::fs::write(launcher.log_file(), "an earlier run\n").unwrap();
        std::fs::write(dir.path().join("nats-server_1.ports"), "stale").unwrap();
        let mut child = launcher.spawn().unwrap();
        let error = launcher
            .wait_ready(&mut child, Duration::from_secs(60), Duration::MAX, |_| {})
            .unwrap_err();
        assert!(
            matches!(error, Error::Exited { ref tail, .. } if tail == "broken"),
            "{error}"
        );
        assert!(!dir.path().join("nats-server_1.ports").exists());
    }

    #[test]
    fn kill_reaps_a_process_that_ignores_sigterm() {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new("/bin/sh")
            .args(["-c", "trap '' TERM; echo armed; while :; do sleep 1; done"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // SIGTERM before the trap is set would end the shell.
        let mut armed = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut armed)
            .unwrap();
        assert_eq!(armed, "armed\n");
        let stopped = terminate(
            &mut child,
            Duration::from_millis(200),
            Duration::MAX,
            |_| {},
        );
        assert!(
            matches!(
                stopped,
                Stopped::Killed {
                    reason: KillReason::Timeout,
                    result: Ok(_)
                }
            ),
            "{stopped:?}"
        );
    }

    #[test]
    fn log_tail_keeps_the_latest_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("nats-server.log");
        std::fs::write(
            &log,
            format!("{LOG_MARKER} 1 ====\nold\n{LOG_MARKER} 2 ====\nnew 1\nnew 2\nnew 3\n"),
        )
        .unwrap();
        assert_eq!(log_tail(&log, 2), "new 2\nnew 3");
    }
}
