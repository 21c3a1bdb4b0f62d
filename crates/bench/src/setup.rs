//! What the bench runs against: its own nats-server (jetway-testkit's) and its own jetway-server as a
//! child process, or servers given by URL; and what it reads about processes and the machine from
//! `/proc` (CPU time, resident memory, CPU model).

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use jetway_testkit::{NatsCluster, NatsServer};

use crate::Result;

/// nats-server's `max_payload` in growth runs: a 1 MiB event and its headers.
const GROWTH_MAX_PAYLOAD: usize = 2 << 20;

/// How long jetway-server gets to log that it is serving.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The servers under test, stopped when dropped.
pub(crate) struct Servers {
    /// The NATS URL both paths use.
    pub nats_url: String,
    /// The Jetway URL (`http://host:port`).
    pub jetway_url: String,
    /// The address of its HTTP API, when the bench started it.
    pub jetway_http: Option<std::net::SocketAddr>,
    /// nats-server's process id, when the bench started it.
    pub nats_pid: Option<u32>,
    /// jetway-server's process id, when the bench started it.
    pub jetway_pid: Option<u32>,
    /// A second jetway-server, with TLS on, when the bench started the first: the P1-tls and
    /// P2-tls scenarios measure what TLS costs.
    pub jetway_tls: Option<TlsJetway>,
    // Held for their Drop, which stops the processes; the Jetway children go first.
    _jetway: Option<JetwayProcess>,
    _nats: Option<NatsServer>,
    _cluster: Option<NatsCluster>,
}

impl Servers {
    /// Starts what is not given: a nats-server on a free port with a temporary store (or a cluster
    /// of `cluster` nodes, whose CPU time is then not measured), and a jetway-server next to this
    /// executable (so it comes from the same build), configured through its environment.
    /// `max_pending` is the server's JetStream ack window. For the growth curves (`growth`) the
    /// servers take more than their defaults allow: events of 1 MiB plus headers (nats-server's
    /// `max_payload` 2 MiB), 10,000 idle Events sessions and 1,000 connections; the TLS server
    /// is not started.
    pub(crate) fn start(
        nats_url: Option<String>,
        jetway_url: Option<String>,
        cluster: Option<usize>,
        max_pending: usize,
        growth: bool,
    ) -> Result<Servers> {
        let cluster = cluster.map(NatsCluster::start);
        let nats = match (&nats_url, &cluster) {
            (None, None) if growth => Some(NatsServer::start_with_config(
                &[],
                Some(&format!("max_payload: {GROWTH_MAX_PAYLOAD}")),
            )),
            (None, None) => Some(NatsServer::start()),
            _ => None,
        };
        let nats_url = match (nats_url, &cluster, &nats) {
            (Some(url), _, _) => url,
            (None, Some(cluster), _) => cluster.urls(),
            #[expect(
                clippy::expect_used,
                reason = "without a URL or a cluster, a server was started above"
            )]
            (None, None, nats) => nats.as_ref().expect("started").url(),
        };
        let nats_pid = nats.as_ref().and_then(NatsServer::pid);
        let jetway_http;
        let (jetway, jetway_url, jetway_tls) = match jetway_url {
            Some(url) => {
                jetway_http = None;
                (None, url, None)
            }
            None if growth => {
                let process = JetwayProcess::start(
                    &nats_url,
                    max_pending,
                    &[
                        ("GRPC_MAX_STREAMING_CALLS", "20000"),
                        ("GRPC_MAX_CONNECTIONS", "4096"),
                    ],
                )?;
                let url = format!("http://{}", process.grpc_addr);
                jetway_http = process.http_addr.parse().ok();
                (Some(process), url, None)
            }
            None => {
                let process = JetwayProcess::start(&nats_url, max_pending, &[])?;
                let url = format!("http://{}", process.grpc_addr);
                jetway_http = process.http_addr.parse().ok();
                (
                    Some(process),
                    url,
                    Some(TlsJetway::start(&nats_url, max_pending)?),
                )
            }
        };
        Ok(Servers {
            nats_url,
            jetway_url,
            jetway_http,
            nats_pid,
            jetway_pid: jetway.as_ref().map(|j| j.child.id()),
            jetway_tls,
            _jetway: jetway,
            _nats: nats,
            _cluster: cluster,
        })
    }
}

/// A jetway-server with TLS and authentication on (development certificates and an AUTH_FILE of
/// its own), as a deployment on a shared network runs it.
pub(crate) struct TlsJetway {
    /// Its URL (`https://127.0.0.1:port`).
    pub url: String,
    /// Its process id.
    pub pid: u32,
    /// The CA its certificate chains to (PEM).
    pub ca_pem: String,
    /// The token of the one client its AUTH_FILE lets in (allowed everything).
    pub token: String,
    _process: JetwayProcess,
    // The certificate files, removed on drop.
    _certs: tempfile::TempDir,
}

impl TlsJetway {
    fn start(nats_url: &str, max_pending: usize) -> Result<TlsJetway> {
        let certs = tempfile::tempdir()?;
        jetway_client::dev_certs::write_dev_certs(certs.path(), "bench")?;
        let path = |name: &str| certs.path().join(name).display().to_string();
        let (cert, key) = (path("server.pem"), path("server-key.pem"));
        let token = jetway_core::credentials::new_token()?;
        let clients = path("clients.json");
        std::fs::write(
            &clients,
            serde_json::json!({"clients": [{
                "id": "bench",
                "tokens": [jetway_core::credentials::token_hash(&token)],
                "permissions": {"publish": [">"], "consume": [">"], "read": [">"], "manage": [">"]},
            }]})
            .to_string(),
        )?;
        let process = JetwayProcess::start(
            nats_url,
            max_pending,
            &[
                ("TLS_CERT_FILE", &cert),
                ("TLS_KEY_FILE", &key),
                ("AUTH_FILE", &clients),
            ],
        )?;
        Ok(TlsJetway {
            url: format!("https://{}", process.grpc_addr),
            pid: process.child.id(),
            ca_pem: std::fs::read_to_string(certs.path().join("ca.pem"))?,
            token,
            _process: process,
            _certs: certs,
        })
    }
}

/// jetway-server as a child process, so its CPU time and memory can be read on their own.
struct JetwayProcess {
    child: Child,
    grpc_addr: String,
    http_addr: String,
}

impl JetwayProcess {
    fn start(nats_url: &str, max_pending: usize, env: &[(&str, &str)]) -> Result<JetwayProcess> {
        let binary = server_binary()?;
        let mut child = Command::new(&binary)
            .envs(env.iter().copied())
            .env("NATS_URL", nats_url)
            .env("GRPC_PORT", "0")
            .env("HEALTH_PORT", "0")
            .env("HTTP_PORT", "0")
            .env("LISTEN_HOST", "127.0.0.1")
            .env("DEVELOPMENT", "false")
            .env("RUST_LOG", "info,async_nats=warn")
            .env("NATS_PUBLISH_ASYNC_MAX_PENDING", max_pending.to_string())
            // Traces are off, as on a server without a collector; nothing tries to reach one.
            .env("OTEL_SDK_DISABLED", "true")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
        #[expect(clippy::expect_used, reason = "stderr is piped just above")]
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        // Reads the log for the listening address, then keeps draining it so the server never
        // blocks on a full pipe; what it logs later is dropped.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut lines = Vec::new();
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::io::Result::ok)
            {
                let Some(sender) = &tx else { continue };
                match serving_address(&line) {
                    Some(addr) => {
                        sender.send(Ok(addr)).ok();
                        tx = None;
                    }
                    None => lines.push(line),
                }
            }
            if let Some(sender) = tx {
                sender.send(Err(lines.join("\n"))).ok();
            }
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok((grpc_addr, http_addr))) => Ok(JetwayProcess {
                child,
                grpc_addr,
                http_addr,
            }),
            Ok(Err(log)) => {
                child.wait().ok();
                Err(format!("jetway-server exited before serving:\n{log}").into())
            }
            Err(_) => {
                child.kill().ok();
                child.wait().ok();
                Err(
                    format!("jetway-server did not start serving within {STARTUP_TIMEOUT:?}")
                        .into(),
                )
            }
        }
    }
}

impl Drop for JetwayProcess {
    fn drop(&mut self) {
        // SIGTERM, so the server shuts down as in production; it exits within its 5 s bound.
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait().ok();
    }
}

/// The jetway-server binary of the same build as this bench (the same target directory).
fn server_binary() -> Result<PathBuf> {
    let binary = std::env::current_exe()?.with_file_name("jetway-server");
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --release --locked -p jetway-server -p jetway-bench), \
             or pass --nats-url and --jetway-url",
            binary.display()
        )
        .into())
    }
}

/// The gRPC and HTTP API addresses of the server's JSON `serving` log line.
fn serving_address(line: &str) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("message")?.as_str()? != "serving" {
        return None;
    }
    let addr = |name: &str| Some(value.get(name)?.as_str()?.to_owned());
    Some((addr("grpc_addr")?, addr("http_addr")?))
}

/// CPU time (user + system) a process has used so far.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it are plain. utime and stime are
    // fields 14 and 15 of the whole line, so 11 and 12 after the name.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// Times the threads of a process have gone to sleep and been woken since they started: the sum
/// of `voluntary_ctxt_switches` over its threads. A thread that has exited no longer counts, so
/// read it around work during which the process keeps its threads (Tokio keeps idle ones 10 s).
pub(crate) fn wakeups(pid: u32) -> Option<u64> {
    let mut total = 0;
    for thread in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        // A thread that ends between the listing and the read is skipped.
        let Ok(status) = std::fs::read_to_string(thread.ok()?.path().join("status")) else {
            continue;
        };
        let line = status
            .lines()
            .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
        total += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Resident memory of a process, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the numbers were measured on.
pub(crate) fn machine() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_default();
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu_model,
        "memory_mib": memory_kib / 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// The checked-out commit, with `-dirty` when the work tree has changes; `unknown` outside git.
pub(crate) fn git_sha() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(sha) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{sha}-dirty"),
            _ => sha,
        },
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_serving_line() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"serving","grpc_addr":"127.0.0.1:4100","health_addr":"127.0.0.1:4101","http_addr":"127.0.0.1:4102","target":"jetway_server::app"}"#;
        assert_eq!(
            serving_address(line),
            Some(("127.0.0.1:4100".to_owned(), "127.0.0.1:4102".to_owned()))
        );
        assert_eq!(
            serving_address(r#"{"message":"NATS client started"}"#),
            None
        );
        assert_eq!(serving_address("not json"), None);
    }

    #[test]
    fn reads_its_own_process() {
        let pid = std::process::id();
        assert!(cpu_time(pid).is_some());
        assert!(rss_bytes(pid).unwrap() > 0);
        let before = wakeups(pid).unwrap();
        // A sleeping thread is switched out voluntarily, and counted when it is woken.
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(wakeups(pid).unwrap() > before);
    }
}
