//! Jetway's runtime configuration: every environment variable the server reads, their defaults, and
//! their validation.
//!
//! [`Config`] is the single typed view of the environment. Loading reports *every* bad variable in
//! one [`ConfigError`], so an operator fixes a deployment in one round trip instead of one variable
//! per restart. An empty variable counts as unset (container tooling often renders `NAME=` for
//! "not configured"). Variables for the local nats-server are validated even when `NATS_URL` is
//! set, because a malformed value is a mistake either way.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use jetway_core::{
    connection::{NatsServers, redact_credentials},
    consumers::DEFAULT_MAX_UNNAMED_PER_STREAM,
    fetch::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_PER_CONSUMER, FetchLimits},
    live::DEFAULT_SUBSCRIBER_BUFFER,
};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

const DEFAULT_GRPC_PORT: u16 = 8080;
const DEFAULT_HEALTH_PORT: u16 = 8088;
const DEFAULT_LISTEN_HOST: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// async-nats logs every connection event at info, which Jetway already logs in its own words.
const DEFAULT_LOG_FILTER: &str = "info,async_nats=warn";
const DEFAULT_PUBLISH_ASYNC_MAX_PENDING: usize = 256;
const DEFAULT_NATS_LOCAL_PORT: u16 = 4222;
const DEFAULT_NATS_DATA_DIR: &str = "./data/nats";
/// With Jetway's own shutdown (2.5 s at most) this fits Kubernetes' default termination grace of
/// 30 s, and gives nats-server time to flush and close a busy JetStream store.
const DEFAULT_NATS_STOP_TIMEOUT: Duration = Duration::from_secs(25);
/// The range of `NATS_STOP_TIMEOUT`: long enough for a store to close, short enough that a hung
/// nats-server cannot hold a shutdown for ever.
const NATS_STOP_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// The variables Jetway reads. Only these are handed to envy: unrelated variables are never
/// inspected, and differently-cased spellings (envy lowercases names) cannot shadow ours.
const VARIABLES: [&str; 32] = [
    "NATS_URL",
    "GRPC_PORT",
    "HEALTH_PORT",
    "HEALTH_SERVER_PORT",
    "LISTEN_HOST",
    "DEVELOPMENT",
    "RUST_LOG",
    "NATS_PUBLISH_ASYNC_MAX_PENDING",
    "WORKER_THREADS",
    "FETCH_MAX_IN_FLIGHT_PER_CONSUMER",
    "FETCH_MAX_IN_FLIGHT",
    "NATS_SERVER_BIN",
    "NATS_LOCAL_PORT",
    "NATS_DATA_DIR",
    "NATS_SYNC_INTERVAL",
    "NATS_STOP_TIMEOUT",
    "MAX_UNNAMED_CONSUMERS_PER_STREAM",
    "SUBSCRIBER_BUFFER_EVENTS",
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "GRPC_MAX_CONNECTIONS",
    "GRPC_IDLE_TIMEOUT",
    "GRPC_MAX_STREAMS_PER_CONNECTION",
    "GRPC_MAX_STREAMING_CALLS",
    "GRPC_MAX_MESSAGE_BYTES",
    "HEALTH_MAX_CONNECTIONS",
    "HEALTH_HEADER_TIMEOUT",
];

/// Every variable the server reads, for checks such as "does the compose file only set variables
/// that exist".
pub const KNOWN_VARIABLES: &[&str] = &VARIABLES;

const PORT_EXPECTED: &str = "is not a port number (0-65535)";
const SYNC_INTERVAL_EXPECTED: &str = r#"is not "always" or a duration like "2m""#;
const COUNT_EXPECTED: &str = "is not a whole number of at least 1";
const TIMEOUT_EXPECTED: &str = r#"is not a positive duration like "10s", "500ms" or "5m""#;

/// Jetway's effective configuration, loaded from the environment by [`Config::from_env`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `NATS_URL`: the NATS server(s) to connect to, comma-separated (for example
    /// `nats://host:4222,tls://other:4222`). A URL may carry credentials, `user:password@` or
    /// `token@` (percent-encoded where a URL needs it); they apply to every server, so entries that
    /// carry different ones are refused. Default: unset, which makes Jetway run and supervise a
    /// local nats-server (see the `NATS_*` local settings below).
    pub nats_url: Option<String>,
    /// `GRPC_PORT`: TCP port of the gRPC listener. Default: 8080.
    pub grpc_port: u16,
    /// `HEALTH_PORT` (alias `HEALTH_SERVER_PORT`, upstream Windshift's name): TCP port of the HTTP
    /// health listener. Setting both to different ports is an error. Default: 8088.
    pub health_port: u16,
    /// `LISTEN_HOST`: IP address both listeners bind to. Default: `0.0.0.0` (all IPv4 interfaces).
    pub listen_host: IpAddr,
    /// `DEVELOPMENT`: `true`/`false`/`1`/`0` (any case); true switches logs from JSON lines to
    /// human-readable output. Default: false.
    pub development: bool,
    /// `RUST_LOG`: log filter in tracing's `EnvFilter` syntax (for example
    /// `info,jetway_core=debug`), checked to parse. Default: `info,async_nats=warn`.
    pub log_filter: String,
    /// `NATS_PUBLISH_ASYNC_MAX_PENDING`: the most event publishes awaiting their JetStream ack at
    /// once (KV writes and dead letters have a window of this size of their own); must be at least 1.
    /// Default: 256.
    pub nats_publish_async_max_pending: usize,
    /// `WORKER_THREADS`: threads that run gRPC calls and NATS I/O; at least 1. Default: unset, which
    /// means half the CPUs, rounded up (see [`Config::worker_threads`]).
    pub worker_threads: Option<usize>,
    /// `NATS_SERVER_BIN` (local nats-server only): path of the nats-server binary. Default: unset,
    /// which searches `tools/bin/nats-server` (from the working directory, then from the
    /// executable's directory upwards) and then `PATH`.
    pub nats_server_bin: Option<PathBuf>,
    /// `NATS_LOCAL_PORT` (local nats-server only): client port on 127.0.0.1; 0 picks a free port
    /// (kept across restarts). Default: 4222.
    pub nats_local_port: u16,
    /// `NATS_DATA_DIR` (local nats-server only): directory for JetStream storage, the generated
    /// config file, the server log and the ports file. Default: `./data/nats`.
    pub nats_data_dir: PathBuf,
    /// `NATS_SYNC_INTERVAL` (local nats-server only): JetStream `sync_interval`, either `always`
    /// (fsync every write) or a Go duration such as `100ms`, `30s`, `2m`, `1h`. Default: `always`.
    pub nats_sync_interval: SyncInterval,
    /// `NATS_STOP_TIMEOUT` (local nats-server only): how long nats-server may take to exit after
    /// SIGTERM at shutdown (it flushes and closes its JetStream store) before it is killed; a Go
    /// duration from `1s` to `1h`. Default: 25 s.
    pub nats_stop_timeout: Duration,
    /// OpenTelemetry trace export, from the standard `OTEL_*` variables.
    pub telemetry: TelemetryConfig,
    /// What one client, or all of them together, may hold of the server.
    pub limits: Limits,
}

/// Every limit a client can reach, in one place: on the two listeners (connections, idle and slow
/// connections, calls, request sizes), unnamed consumers, live subscribers and fetched events. Each is documented in the README's configuration table
/// and answered as that table says. Durations are Go durations (`500ms`, `10s`, `5m`), as in
/// `NATS_SYNC_INTERVAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `GRPC_MAX_CONNECTIONS`: the most connections open on the gRPC port at once. Over it, a new
    /// connection is closed as soon as it is accepted (the client sees it reset and retries), so a
    /// flood of connections cannot use up the process's file descriptors. Default: 1024.
    pub grpc_max_connections: usize,
    /// `GRPC_IDLE_TIMEOUT`: a gRPC connection with no call in progress for this long is closed,
    /// including one that never sends a call (keepalive pings alone close only peers that stop
    /// answering them). A client opens a new connection for its next call. Default: 5 minutes.
    pub grpc_idle_timeout: Duration,
    /// `GRPC_MAX_STREAMS_PER_CONNECTION`: the most calls open at once on one connection (HTTP/2's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`; a client waits for a free one). Default: 4096.
    pub grpc_max_streams_per_connection: u32,
    /// `GRPC_MAX_STREAMING_CALLS`: the most streaming calls (Events sessions, PublishStream,
    /// ReadEvents, Subscribe, Watch, Keys, History, ListDeadLetters, health Watch, reflection) open
    /// at once on the whole server; one more is answered RESOURCE_EXHAUSTED. Each holds a task and
    /// usually a JetStream consumer. Default: 10,000.
    pub grpc_max_streaming_calls: usize,
    /// `GRPC_MAX_MESSAGE_BYTES`: the largest request message the server decodes, on every service
    /// (a PublishBatch counts as one message); checked from the message's length prefix before it
    /// is read, and answered RESOURCE_EXHAUSTED. At least 1024. Default: 4 MiB (gRPC's customary
    /// limit), which holds an event of NATS's default `max_payload` of 1 MiB.
    pub grpc_max_message_bytes: usize,
    /// `HEALTH_MAX_CONNECTIONS`: the most connections open on the health port at once; over it,
    /// as on the gRPC port, a new connection is closed at once. Default: 64.
    pub health_max_connections: usize,
    /// `HEALTH_HEADER_TIMEOUT`: how long the health port waits for a request's complete headers,
    /// from the moment it starts waiting for them (so also between two requests of one keep-alive
    /// connection); then it closes the connection. Default: 10 seconds.
    pub health_header_timeout: Duration,
    /// `MAX_UNNAMED_CONSUMERS_PER_STREAM`: the most unnamed consumers (EnsureConsumer without a
    /// name, both APIs) one stream may have; at least 1. Each lives until an hour after its last
    /// subscriber, and nats-server allows a stream 1,000 consumers by default, which reads, live
    /// feeds and named consumers need too. Default: 500.
    pub max_unnamed_consumers_per_stream: usize,
    /// `SUBSCRIBER_BUFFER_EVENTS`: the most events a live subscriber (`jetway.events.v1`
    /// Subscribe) may have waiting; one that falls further behind its feed is cut off. At least
    /// 1. Default: 1,000.
    pub subscriber_buffer: usize,
    /// Fetched events in flight. `FETCH_MAX_IN_FLIGHT_PER_CONSUMER` (`per_consumer`): the most
    /// fetched events (Fetch, then Ack or Reject) this server holds in flight for one consumer; a
    /// Fetch beyond gets RESOURCE_EXHAUSTED. At least 1. Default: 10000, the most one Events stream
    /// may hold and one Ack may settle. `FETCH_MAX_IN_FLIGHT` (`total`): the most over all
    /// consumers, which bounds the memory they take (a few hundred bytes each). At least 1.
    /// Default: 1000000.
    pub fetch: FetchLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            grpc_max_connections: 1024,
            grpc_idle_timeout: Duration::from_secs(5 * 60),
            grpc_max_streams_per_connection: 4096,
            grpc_max_streaming_calls: 10_000,
            grpc_max_message_bytes: 4 << 20,
            health_max_connections: 64,
            health_header_timeout: Duration::from_secs(10),
            max_unnamed_consumers_per_stream: DEFAULT_MAX_UNNAMED_PER_STREAM,
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
            fetch: FetchLimits {
                per_consumer: DEFAULT_MAX_IN_FLIGHT_PER_CONSUMER,
                total: DEFAULT_MAX_IN_FLIGHT,
            },
        }
    }
}

/// OpenTelemetry settings. Export is on only when an OTLP endpoint is set and the SDK is not
/// disabled; without it the server records no spans at all.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `OTEL_SDK_DISABLED`: `true` turns tracing off even with an endpoint. Default: false.
    pub disabled: bool,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`: the OTLP/gRPC
    /// collector, e.g. `http://jaeger:4317`. Default: unset (no export).
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`. Default: `jetway-server`.
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`. Default: `parentbased_always_on`.
    pub sampler: Sampler,
    /// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs, comma-separated, added to every span's
    /// resource. Default: none.
    pub resource_attributes: Vec<(String, String)>,
}

impl TelemetryConfig {
    /// The collector endpoint, if traces are to be exported.
    pub fn export_endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref().filter(|_| !self.disabled)
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            disabled: false,
            endpoint: None,
            service_name: "jetway-server".to_owned(),
            sampler: Sampler {
                parent_based: true,
                root: RootSampler::AlwaysOn,
            },
            resource_attributes: Vec::new(),
        }
    }
}

/// Which traces are recorded, as the OpenTelemetry sampler variables describe it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Follow the caller's sampling decision when there is a parent span (`parentbased_*`).
    pub parent_based: bool,
    /// The decision for traces that start here.
    pub root: RootSampler,
}

/// The sampling decision for a new trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampler {
    /// Record every trace.
    AlwaysOn,
    /// Record none.
    AlwaysOff,
    /// Record this fraction of traces (0.0 to 1.0).
    Ratio(f64),
}

impl Default for Config {
    /// The configuration of an empty environment; equal to `Config::from_iter([])`.
    fn default() -> Self {
        Self {
            nats_url: None,
            grpc_port: DEFAULT_GRPC_PORT,
            health_port: DEFAULT_HEALTH_PORT,
            listen_host: DEFAULT_LISTEN_HOST,
            development: false,
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            nats_publish_async_max_pending: DEFAULT_PUBLISH_ASYNC_MAX_PENDING,
            worker_threads: None,
            nats_server_bin: None,
            nats_local_port: DEFAULT_NATS_LOCAL_PORT,
            nats_data_dir: PathBuf::from(DEFAULT_NATS_DATA_DIR),
            nats_sync_interval: SyncInterval::default(),
            nats_stop_timeout: DEFAULT_NATS_STOP_TIMEOUT,
            telemetry: TelemetryConfig::default(),
            limits: Limits::default(),
        }
    }
}

/// Every variable as raw text, exactly as envy finds it. Typed parsing happens afterwards, field
/// by field, because envy stops at the first bad value and we want to report all of them.
#[derive(Deserialize)]
struct RawVars {
    nats_url: Option<String>,
    grpc_port: Option<String>,
    health_port: Option<String>,
    health_server_port: Option<String>,
    listen_host: Option<String>,
    development: Option<String>,
    rust_log: Option<String>,
    nats_publish_async_max_pending: Option<String>,
    worker_threads: Option<String>,
    fetch_max_in_flight_per_consumer: Option<String>,
    fetch_max_in_flight: Option<String>,
    nats_server_bin: Option<String>,
    nats_local_port: Option<String>,
    nats_data_dir: Option<String>,
    nats_sync_interval: Option<String>,
    nats_stop_timeout: Option<String>,
    max_unnamed_consumers_per_stream: Option<String>,
    subscriber_buffer_events: Option<String>,
    otel_sdk_disabled: Option<String>,
    otel_exporter_otlp_endpoint: Option<String>,
    otel_exporter_otlp_traces_endpoint: Option<String>,
    otel_service_name: Option<String>,
    otel_traces_sampler: Option<String>,
    otel_traces_sampler_arg: Option<String>,
    otel_resource_attributes: Option<String>,
    grpc_max_connections: Option<String>,
    grpc_idle_timeout: Option<String>,
    grpc_max_streams_per_connection: Option<String>,
    grpc_max_streaming_calls: Option<String>,
    grpc_max_message_bytes: Option<String>,
    health_max_connections: Option<String>,
    health_header_timeout: Option<String>,
}

impl Config {
    /// Loads the configuration from the process environment.
    ///
    /// Unlike `std::env::vars()`, this does not panic on non-UTF-8 variables: unrelated ones are
    /// ignored and one of Jetway's is reported as a [`ConfigProblem::NotUnicode`].
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut vars = Vec::new();
        let mut problems = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(variable) = key.to_str().and_then(known_variable) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => vars.push((variable.to_owned(), value)),
                Err(_) => problems.push(ConfigProblem::NotUnicode { variable }),
            }
        }
        Self::load(vars, problems)
    }

    /// Loads the configuration from the given `(name, value)` pairs instead of the process
    /// environment, so tests can inject values. Names other than Jetway's are ignored; when a name
    /// repeats, the last value wins.
    #[expect(
        clippy::should_implement_trait,
        reason = "loading can fail, which `FromIterator` cannot express; mirrors `envy::from_iter`"
    )]
    pub fn from_iter<I: IntoIterator<Item = (String, String)>>(
        vars: I,
    ) -> Result<Self, ConfigError> {
        Self::load(vars, Vec::new())
    }

    fn load<I: IntoIterator<Item = (String, String)>>(
        vars: I,
        mut problems: Vec<ConfigProblem>,
    ) -> Result<Self, ConfigError> {
        // The map drops unrelated names and deduplicates: envy would reject a repeated field.
        let ours: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(name, value)| known_variable(name).is_some() && !value.is_empty())
            .collect();
        let raw: RawVars = match envy::from_iter(ours) {
            Ok(raw) => raw,
            Err(error) => {
                problems.push(ConfigProblem::Unreadable {
                    reason: error.to_string(),
                });
                return Err(ConfigError { problems });
            }
        };

        let defaults = Self::default();
        let mut check = Checker { problems };
        let telemetry = check.telemetry(&raw, defaults.telemetry.clone());
        let limits = check.limits(&raw, &defaults.limits);
        let grpc_port = check.field("GRPC_PORT", raw.grpc_port, defaults.grpc_port, parse_port);
        let health_port = check.health_port(
            raw.health_port,
            raw.health_server_port,
            defaults.health_port,
        );
        let listen_host = check.field("LISTEN_HOST", raw.listen_host, defaults.listen_host, |v| {
            v.parse()
                .map_err(|_| "is not an IP address (like 0.0.0.0 or ::1)".to_owned())
        });
        let development = check.field(
            "DEVELOPMENT",
            raw.development,
            defaults.development,
            parse_bool,
        );
        let log_filter = check.field("RUST_LOG", raw.rust_log, defaults.log_filter, |v| {
            EnvFilter::builder()
                .parse(v)
                .map(|_| v.to_owned())
                .map_err(|e| format!("is not a valid log filter ({e})"))
        });
        let nats_publish_async_max_pending = check.field(
            "NATS_PUBLISH_ASYNC_MAX_PENDING",
            raw.nats_publish_async_max_pending,
            defaults.nats_publish_async_max_pending,
            parse_count,
        );
        let worker_threads = check.field("WORKER_THREADS", raw.worker_threads, None, |v| {
            parse_count(v).map(Some)
        });
        let nats_local_port = check.field(
            "NATS_LOCAL_PORT",
            raw.nats_local_port,
            defaults.nats_local_port,
            parse_port,
        );
        let nats_sync_interval = check.field(
            "NATS_SYNC_INTERVAL",
            raw.nats_sync_interval,
            defaults.nats_sync_interval,
            |v| v.parse::<SyncInterval>().map_err(|e| e.reason.to_owned()),
        );
        let nats_stop_timeout = check.field(
            "NATS_STOP_TIMEOUT",
            raw.nats_stop_timeout,
            defaults.nats_stop_timeout,
            |v| {
                go_duration_nanos(v)
                    .map(|nanos| Duration::from_nanos(nanos as u64))
                    .filter(|timeout| NATS_STOP_TIMEOUT_RANGE.contains(timeout))
                    .ok_or_else(|| r#"is not a duration from 1s to 1h, like "25s""#.to_owned())
            },
        );
        let nats_url = raw.nats_url.filter(|url| match NatsServers::parse(url) {
            Ok(_) => true,
            Err(reason) => {
                check.problems.push(ConfigProblem::Invalid {
                    variable: "NATS_URL",
                    value: redact_credentials(url),
                    reason,
                });
                false
            }
        });
        if !check.problems.is_empty() {
            return Err(ConfigError {
                problems: check.problems,
            });
        }
        Ok(Self {
            nats_url,
            grpc_port,
            health_port,
            listen_host,
            development,
            log_filter,
            nats_publish_async_max_pending,
            worker_threads,
            nats_server_bin: raw.nats_server_bin.map(PathBuf::from),
            nats_local_port,
            nats_data_dir: raw
                .nats_data_dir
                .map_or(defaults.nats_data_dir, PathBuf::from),
            nats_sync_interval,
            nats_stop_timeout,
            telemetry,
            limits,
        })
    }

    /// The runtime's worker threads: `WORKER_THREADS`, else half the CPUs, rounded up.
    ///
    /// Not all of them by default: Jetway shares its machine with nats-server (its own, when
    /// `NATS_URL` is unset), and each event crosses several tasks (the HTTP/2 connection, the call,
    /// the NATS connection); on fewer threads those hand-offs wake no other thread. On 2 CPUs, one
    /// worker cut the server's CPU per published event by about a quarter, and running that one
    /// thread as Tokio's current-thread scheduler cut the CPU per delivered event again by about a
    /// tenth (docs/benchmarks.md). A machine of its own with many busy clients may want one per CPU.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |cpus| cpus.get().div_ceil(2))
        })
    }

    /// Logs every effective value (one `info` event) so an operator can see what the server runs
    /// with. Credentials in `NATS_URL` are masked.
    pub fn log_summary(&self) {
        let nats = match &self.nats_url {
            Some(url) => redact_credentials(url),
            None => "unset: running a local nats-server".to_owned(),
        };
        tracing::info!(
            nats_url = %nats,
            grpc_port = self.grpc_port,
            health_port = self.health_port,
            listen_host = %self.listen_host,
            development = self.development,
            log_filter = %self.log_filter,
            nats_publish_async_max_pending = self.nats_publish_async_max_pending,
            worker_threads = self.worker_threads(),
            fetch_max_in_flight_per_consumer = self.limits.fetch.per_consumer,
            fetch_max_in_flight = self.limits.fetch.total,
            nats_server_bin = %self
                .nats_server_bin
                .as_ref()
                .map_or_else(|| "search tools/bin and PATH".to_owned(), |p| p.display().to_string()),
            nats_local_port = self.nats_local_port,
            nats_data_dir = %self.nats_data_dir.display(),
            nats_sync_interval = %self.nats_sync_interval,
            nats_stop_timeout = ?self.nats_stop_timeout,
            max_unnamed_consumers_per_stream = self.limits.max_unnamed_consumers_per_stream,
            subscriber_buffer_events = self.limits.subscriber_buffer,
            otel_endpoint = self.telemetry.export_endpoint().unwrap_or("unset: no trace export"),
            otel_service_name = %self.telemetry.service_name,
            grpc_max_connections = self.limits.grpc_max_connections,
            grpc_idle_timeout = ?self.limits.grpc_idle_timeout,
            grpc_max_streams_per_connection = self.limits.grpc_max_streams_per_connection,
            grpc_max_streaming_calls = self.limits.grpc_max_streaming_calls,
            grpc_max_message_bytes = self.limits.grpc_max_message_bytes,
            health_max_connections = self.limits.health_max_connections,
            health_header_timeout = ?self.limits.health_header_timeout,
            "configuration"
        );
    }
}

/// Collects problems while parsing fields, so one bad field does not hide the next.
struct Checker {
    problems: Vec<ConfigProblem>,
}

impl Checker {
    /// Parses one variable, recording a problem and yielding the default when its value is bad
    /// (the default is never used: any problem fails the whole load).
    fn field<T>(
        &mut self,
        variable: &'static str,
        value: Option<String>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        let Some(value) = value else {
            return default;
        };
        parse(&value).unwrap_or_else(|reason| {
            self.problems.push(ConfigProblem::Invalid {
                variable,
                value,
                reason,
            });
            default
        })
    }

    /// `HEALTH_PORT` and its alias `HEALTH_SERVER_PORT`: either may be set, both only if they
    /// agree.
    fn health_port(&mut self, primary: Option<String>, alias: Option<String>, default: u16) -> u16 {
        let before = self.problems.len();
        let primary_port = self.field("HEALTH_PORT", primary.clone(), None, |v| {
            parse_port(v).map(Some)
        });
        let alias_port = self.field("HEALTH_SERVER_PORT", alias.clone(), None, |v| {
            parse_port(v).map(Some)
        });
        if self.problems.len() > before {
            return default;
        }
        match (primary_port, alias_port) {
            (Some(p), Some(a)) if p != a => {
                self.problems.push(ConfigProblem::Conflict {
                    variable: "HEALTH_PORT",
                    value: primary.unwrap_or_default(),
                    alias: "HEALTH_SERVER_PORT",
                    alias_value: alias.unwrap_or_default(),
                });
                default
            }
            (Some(port), _) | (None, Some(port)) => port,
            (None, None) => default,
        }
    }
}

impl Checker {
    /// The [`Limits`] variables.
    fn limits(&mut self, raw: &RawVars, default: &Limits) -> Limits {
        Limits {
            grpc_max_connections: self.field(
                "GRPC_MAX_CONNECTIONS",
                raw.grpc_max_connections.clone(),
                default.grpc_max_connections,
                parse_count,
            ),
            grpc_idle_timeout: self.field(
                "GRPC_IDLE_TIMEOUT",
                raw.grpc_idle_timeout.clone(),
                default.grpc_idle_timeout,
                parse_timeout,
            ),
            grpc_max_streams_per_connection: self.field(
                "GRPC_MAX_STREAMS_PER_CONNECTION",
                raw.grpc_max_streams_per_connection.clone(),
                default.grpc_max_streams_per_connection,
                |v| match v.parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(n),
                    _ => Err("is not a whole number from 1 to 4294967295".to_owned()),
                },
            ),
            grpc_max_streaming_calls: self.field(
                "GRPC_MAX_STREAMING_CALLS",
                raw.grpc_max_streaming_calls.clone(),
                default.grpc_max_streaming_calls,
                parse_count,
            ),
            grpc_max_message_bytes: self.field(
                "GRPC_MAX_MESSAGE_BYTES",
                raw.grpc_max_message_bytes.clone(),
                default.grpc_max_message_bytes,
                |v| match v.parse::<usize>() {
                    Ok(n) if n >= 1024 => Ok(n),
                    _ => Err("is not a whole number of bytes, at least 1024".to_owned()),
                },
            ),
            health_max_connections: self.field(
                "HEALTH_MAX_CONNECTIONS",
                raw.health_max_connections.clone(),
                default.health_max_connections,
                parse_count,
            ),
            health_header_timeout: self.field(
                "HEALTH_HEADER_TIMEOUT",
                raw.health_header_timeout.clone(),
                default.health_header_timeout,
                parse_timeout,
            ),
            max_unnamed_consumers_per_stream: self.field(
                "MAX_UNNAMED_CONSUMERS_PER_STREAM",
                raw.max_unnamed_consumers_per_stream.clone(),
                default.max_unnamed_consumers_per_stream,
                parse_count,
            ),
            subscriber_buffer: self.field(
                "SUBSCRIBER_BUFFER_EVENTS",
                raw.subscriber_buffer_events.clone(),
                default.subscriber_buffer,
                parse_count,
            ),
            fetch: FetchLimits {
                per_consumer: self.field(
                    "FETCH_MAX_IN_FLIGHT_PER_CONSUMER",
                    raw.fetch_max_in_flight_per_consumer.clone(),
                    default.fetch.per_consumer,
                    parse_count,
                ),
                total: self.field(
                    "FETCH_MAX_IN_FLIGHT",
                    raw.fetch_max_in_flight.clone(),
                    default.fetch.total,
                    parse_count,
                ),
            },
        }
    }

    /// The `OTEL_*` variables. Only what Jetway itself acts on is read here; the OTLP exporter also
    /// honours its own `OTEL_EXPORTER_OTLP_*` settings (headers, timeout, compression).
    fn telemetry(&mut self, raw: &RawVars, default: TelemetryConfig) -> TelemetryConfig {
        let disabled = self.field(
            "OTEL_SDK_DISABLED",
            raw.otel_sdk_disabled.clone(),
            default.disabled,
            parse_bool,
        );
        let endpoint_variable = if raw.otel_exporter_otlp_traces_endpoint.is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        } else {
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        };
        let endpoint_value = raw
            .otel_exporter_otlp_traces_endpoint
            .clone()
            .or_else(|| raw.otel_exporter_otlp_endpoint.clone());
        let endpoint = self.field(endpoint_variable, endpoint_value, None, |v| {
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(Some(v.to_owned()))
            } else {
                Err("is not an http:// or https:// URL of an OTLP/gRPC collector".to_owned())
            }
        });
        let ratio = self.field(
            "OTEL_TRACES_SAMPLER_ARG",
            raw.otel_traces_sampler_arg.clone(),
            1.0,
            |v| match v.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err("is not a sampling ratio between 0 and 1".to_owned()),
            },
        );
        let sampler = self.field("OTEL_TRACES_SAMPLER", raw.otel_traces_sampler.clone(), default.sampler, |v| {
            let (parent_based, root) = match v.strip_prefix("parentbased_") {
                Some(root) => (true, root),
                None => (false, v),
            };
            let root = match root {
                "always_on" => RootSampler::AlwaysOn,
                "always_off" => RootSampler::AlwaysOff,
                "traceidratio" => RootSampler::Ratio(ratio),
                _ => {
                    return Err("is not one of always_on, always_off, traceidratio, parentbased_always_on, \
                                parentbased_always_off, parentbased_traceidratio"
                        .to_owned());
                }
            };
            Ok(Sampler { parent_based, root })
        });
        let resource_attributes = self.field(
            "OTEL_RESOURCE_ATTRIBUTES",
            raw.otel_resource_attributes.clone(),
            default.resource_attributes,
            |v| {
                v.split(',')
                    .filter(|pair| !pair.trim().is_empty())
                    .map(|pair| match pair.split_once('=') {
                        Some((key, value)) if !key.trim().is_empty() => {
                            Ok((key.trim().to_owned(), value.trim().to_owned()))
                        }
                        _ => Err("is not a comma-separated list of key=value pairs".to_owned()),
                    })
                    .collect()
            },
        );
        TelemetryConfig {
            disabled,
            endpoint,
            service_name: raw
                .otel_service_name
                .clone()
                .unwrap_or(default.service_name),
            sampler,
            resource_attributes,
        }
    }
}

fn known_variable(name: &str) -> Option<&'static str> {
    VARIABLES.iter().copied().find(|known| *known == name)
}

fn parse_port(value: &str) -> Result<u16, String> {
    value.parse().map_err(|_| PORT_EXPECTED.to_owned())
}

/// A count of things, at least 1 (a limit of 0 would refuse everything).
fn parse_count(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(COUNT_EXPECTED.to_owned()),
    }
}

/// A positive Go duration, as `NATS_SYNC_INTERVAL` takes.
fn parse_timeout(value: &str) -> Result<Duration, String> {
    match go_duration_nanos(value) {
        // Whole nanoseconds: the fraction of a nanosecond Go would drop too.
        Some(nanos) if nanos >= 1.0 => Ok(Duration::from_nanos(nanos as u64)),
        _ => Err(TIMEOUT_EXPECTED.to_owned()),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("is not a boolean (true, false, 1 or 0)".to_owned()),
    }
}

/// JetStream's `sync_interval`: how often the local nats-server fsyncs its stores.
///
/// Either `always` (fsync every write) or a positive Go duration such as `100ms`, `30s`, `2m`,
/// `1h30m`. `always` is the default because the Jepsen analysis of NATS 2.12.1 showed that lazy
/// fsync loses acknowledged writes when a node crashes. Parsing validates the text, so it can be
/// written into nats-server's configuration as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncInterval(String);

impl SyncInterval {
    /// The value as nats-server expects it: `always` or the duration as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `always`: every write is fsynced before it is acknowledged.
    pub fn is_always(&self) -> bool {
        self.0 == "always"
    }
}

impl Default for SyncInterval {
    /// `always`, the crash-safe setting.
    fn default() -> Self {
        Self("always".to_owned())
    }
}

impl fmt::Display for SyncInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SyncInterval {
    type Err = InvalidSyncInterval;

    /// Accepts `always` (any case) or a positive Go duration: one or more `<number><unit>` groups,
    /// the number optionally fractional, the unit one of `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.eq_ignore_ascii_case("always") {
            return Ok(Self::default());
        }
        match go_duration_nanos(value) {
            Some(nanos) if nanos > 0.0 => Ok(Self(value.to_owned())),
            Some(_) => Err(InvalidSyncInterval {
                value: value.to_owned(),
                reason: r#"is a zero duration: use "always" or a positive duration like "2m""#,
            }),
            None => Err(InvalidSyncInterval {
                value: value.to_owned(),
                reason: SYNC_INTERVAL_EXPECTED,
            }),
        }
    }
}

/// A string that is neither `always` nor a positive Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sync interval {value:?} {reason}")]
pub struct InvalidSyncInterval {
    value: String,
    reason: &'static str,
}

/// Parses a Go `time.ParseDuration` string without sign into nanoseconds; `None` if malformed or
/// beyond Go's limit (`i64::MAX` nanoseconds), since nats-server would reject either.
fn go_duration_nanos(text: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 8] = [
        ("ns", 1.0),
        ("us", 1e3),
        ("\u{b5}s", 1e3),
        ("\u{3bc}s", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
        ("h", 3600e9),
    ];
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        // Rust reads "1." and ".5" as Go does.
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (_, scale) = UNITS.iter().find(|(unit, _)| *unit == &rest[..unit_len])?;
        total += value * scale;
        rest = &rest[unit_len..];
    }
    (total <= i64::MAX as f64).then_some(total)
}

/// One problem with one variable (or a pair of them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A value that does not parse or is out of range.
    #[error("{variable}={value:?} {reason}")]
    Invalid {
        /// The variable's name.
        variable: &'static str,
        /// The value as found.
        value: String,
        /// What is wrong and what is expected, e.g. `is not a port number (0-65535)`.
        reason: String,
    },
    /// A variable and its alias set to different values.
    #[error(
        "{variable}={value:?} and {alias}={alias_value:?} disagree ({alias} is an alias of {variable}): set only one"
    )]
    Conflict {
        /// The variable's own name.
        variable: &'static str,
        /// Its value.
        value: String,
        /// The alias's name.
        alias: &'static str,
        /// The alias's value.
        alias_value: String,
    },
    /// A variable whose value is not valid UTF-8.
    #[error("{variable} is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        variable: &'static str,
    },
    /// envy could not read the variables at all.
    #[error("the environment could not be read: {reason}")]
    Unreadable {
        /// envy's explanation.
        reason: String,
    },
}

/// Every problem found while loading the configuration. Displays as one line:
/// `invalid configuration: GRPC_PORT="abc" is not a port number (0-65535); ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", join_problems(.problems))]
pub struct ConfigError {
    problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// The individual problems, in variable order.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }
}

fn join_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_iter(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    fn error_message(vars: &[(&str, &str)]) -> String {
        load(vars)
            .expect_err("configuration should be rejected")
            .to_string()
    }

    #[test]
    fn empty_environment_gives_defaults() {
        let config = Config::from_iter([]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.nats_url, None);
        assert_eq!(config.grpc_port, 8080);
        assert_eq!(config.health_port, 8088);
        assert_eq!(config.listen_host, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert!(!config.development);
        assert_eq!(config.log_filter, DEFAULT_LOG_FILTER);
        assert_eq!(config.nats_publish_async_max_pending, 256);
        assert_eq!(config.worker_threads, None);
        assert!(config.worker_threads() >= 1);
        assert_eq!(config.limits.fetch, FetchLimits::default());
        assert_eq!(config.limits.fetch.per_consumer, 10_000);
        assert_eq!(config.limits.fetch.total, 1_000_000);
        assert_eq!(config.nats_server_bin, None);
        assert_eq!(config.nats_local_port, 4222);
        assert_eq!(config.nats_data_dir, PathBuf::from("./data/nats"));
        assert_eq!(config.nats_sync_interval.as_str(), "always");
        assert!(config.nats_sync_interval.is_always());
        assert_eq!(config.nats_stop_timeout, Duration::from_secs(25));
        assert_eq!(config.limits.max_unnamed_consumers_per_stream, 500);
        assert_eq!(config.limits.subscriber_buffer, 1000);
        let limits = config.limits;
        assert_eq!(limits.grpc_max_connections, 1024);
        assert_eq!(limits.grpc_idle_timeout, Duration::from_secs(300));
        assert_eq!(limits.grpc_max_streams_per_connection, 4096);
        assert_eq!(limits.grpc_max_streaming_calls, 10_000);
        assert_eq!(limits.grpc_max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(limits.health_max_connections, 64);
        assert_eq!(limits.health_header_timeout, Duration::from_secs(10));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let vars: Vec<(&str, &str)> = VARIABLES.iter().map(|v| (*v, "")).collect();
        assert_eq!(load(&vars).unwrap(), Config::default());
    }

    #[test]
    fn every_variable_is_parsed() {
        let config = load(&[
            ("NATS_URL", "nats://nats.example:4223"),
            ("GRPC_PORT", "9090"),
            ("HEALTH_PORT", "9091"),
            ("LISTEN_HOST", "::1"),
            ("DEVELOPMENT", "TRUE"),
            ("RUST_LOG", "warn,jetway_core=debug"),
            ("NATS_PUBLISH_ASYNC_MAX_PENDING", "1"),
            ("WORKER_THREADS", "3"),
            ("FETCH_MAX_IN_FLIGHT_PER_CONSUMER", "50"),
            ("FETCH_MAX_IN_FLIGHT", "200"),
            ("NATS_SERVER_BIN", "/opt/nats/nats-server"),
            ("NATS_LOCAL_PORT", "0"),
            ("NATS_DATA_DIR", "/var/lib/jetway"),
            ("NATS_SYNC_INTERVAL", "1h30m"),
            ("NATS_STOP_TIMEOUT", "1m30s"),
            ("MAX_UNNAMED_CONSUMERS_PER_STREAM", "20"),
            ("SUBSCRIBER_BUFFER_EVENTS", "1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces:4317"),
            ("OTEL_SERVICE_NAME", "orders"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=dev, team = shop",
            ),
            ("OTEL_SDK_DISABLED", "false"),
            ("GRPC_MAX_CONNECTIONS", "10"),
            ("GRPC_IDLE_TIMEOUT", "1m30s"),
            ("GRPC_MAX_STREAMS_PER_CONNECTION", "100"),
            ("GRPC_MAX_STREAMING_CALLS", "20"),
            ("GRPC_MAX_MESSAGE_BYTES", "65536"),
            ("HEALTH_MAX_CONNECTIONS", "3"),
            ("HEALTH_HEADER_TIMEOUT", "250ms"),
        ])
        .unwrap();
        assert_eq!(
            config,
            Config {
                nats_url: Some("nats://nats.example:4223".to_owned()),
                grpc_port: 9090,
                health_port: 9091,
                listen_host: "::1".parse().unwrap(),
                development: true,
                log_filter: "warn,jetway_core=debug".to_owned(),
                nats_publish_async_max_pending: 1,
                worker_threads: Some(3),
                nats_server_bin: Some(PathBuf::from("/opt/nats/nats-server")),
                nats_local_port: 0,
                nats_data_dir: PathBuf::from("/var/lib/jetway"),
                nats_sync_interval: "1h30m".parse().unwrap(),
                nats_stop_timeout: Duration::from_secs(90),
                telemetry: TelemetryConfig {
                    disabled: false,
                    endpoint: Some("https://traces:4317".to_owned()),
                    service_name: "orders".to_owned(),
                    sampler: Sampler {
                        parent_based: true,
                        root: RootSampler::Ratio(0.25)
                    },
                    resource_attributes: vec![
                        ("deployment.environment".to_owned(), "dev".to_owned()),
                        ("team".to_owned(), "shop".to_owned()),
                    ],
                },
                limits: Limits {
                    grpc_max_connections: 10,
                    grpc_idle_timeout: Duration::from_secs(90),
                    grpc_max_streams_per_connection: 100,
                    grpc_max_streaming_calls: 20,
                    grpc_max_message_bytes: 65536,
                    health_max_connections: 3,
                    health_header_timeout: Duration::from_millis(250),
                    max_unnamed_consumers_per_stream: 20,
                    subscriber_buffer: 1,
                    fetch: FetchLimits {
                        per_consumer: 50,
                        total: 200,
                    },
                },
            }
        );
    }

    #[test]
    fn telemetry_is_off_without_an_endpoint_or_when_disabled() {
        assert_eq!(
            Config::from_iter([]).unwrap().telemetry.export_endpoint(),
            None
        );
        let disabled = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(disabled.unwrap().telemetry.export_endpoint(), None);
        let on = load(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap();
        assert_eq!(on.telemetry.export_endpoint(), Some("http://c:4317"));
        assert_eq!(
            on.telemetry.sampler,
            Sampler {
                parent_based: true,
                root: RootSampler::AlwaysOn
            }
        );
    }

    #[test]
    fn bad_telemetry_variables_are_reported_together() {
        let message = error_message(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
        ]);
        for variable in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_TRACES_SAMPLER=",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_RESOURCE_ATTRIBUTES",
        ] {
            assert!(
                message.contains(variable),
                "{variable} missing from {message}"
            );
        }
    }

    #[test]
    fn unrelated_and_differently_cased_names_are_ignored() {
        let config = load(&[("grpc_port", "abc"), ("PATH", "/bin"), ("GRPC_PORT", "1")]).unwrap();
        assert_eq!(config.grpc_port, 1);
    }

    #[test]
    fn booleans_accept_words_and_digits_in_any_case() {
        for (text, expected) in [("true", true), ("False", false), ("1", true), ("0", false)] {
            assert_eq!(
                load(&[("DEVELOPMENT", text)]).unwrap().development,
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn sync_interval_accepts_always_and_go_durations() {
        for text in [
            "always", "ALWAYS", "100ms", "30s", "2m", "1h", "1.5s", "1h30m", "250us", "1.s", ".5h",
        ] {
            assert!(
                text.parse::<SyncInterval>().is_ok(),
                "{text} should be accepted"
            );
        }
        assert_eq!("Always".parse::<SyncInterval>().unwrap().as_str(), "always");
        assert_eq!("30s".parse::<SyncInterval>().unwrap().to_string(), "30s");
    }

    #[test]
    fn go_durations_have_their_value() {
        for (text, seconds) in [
            ("25s", 25.0),
            ("1m30s", 90.0),
            ("1.5s", 1.5),
            ("1.s", 1.0),
            (".5h", 1800.0),
            ("100ms", 0.1),
            ("2562047h", 2562047.0 * 3600.0),
            ("1.5us", 1.5e-6),
            ("1h30m", 5400.0),
        ] {
            assert_eq!(go_duration_nanos(text), Some(seconds * 1e9), "{text}");
        }
        assert_eq!(go_duration_nanos("2562048h"), None);
    }

    #[test]
    fn sync_interval_rejects_other_text() {
        for text in [
            "2x", "2", "m", "-1s", "+1s", "1..5s", ".s", "1 s", "never", "3000000h", "1d",
        ] {
            assert!(
                text.parse::<SyncInterval>().is_err(),
                "{text} should be rejected"
            );
        }
        let zero = "0s".parse::<SyncInterval>().unwrap_err();
        assert!(zero.to_string().contains("zero duration"), "{zero}");
    }

    #[test]
    fn each_kind_of_bad_value_is_explained() {
        let cases = [
            (
                "GRPC_PORT",
                "abc",
                r#"GRPC_PORT="abc" is not a port number (0-65535)"#,
            ),
            (
                "GRPC_PORT",
                "65536",
                r#"GRPC_PORT="65536" is not a port number (0-65535)"#,
            ),
            (
                "HEALTH_PORT",
                "-1",
                r#"HEALTH_PORT="-1" is not a port number (0-65535)"#,
            ),
            (
                "HEALTH_SERVER_PORT",
                "x",
                r#"HEALTH_SERVER_PORT="x" is not a port number (0-65535)"#,
            ),
            (
                "NATS_LOCAL_PORT",
                "4222a",
                r#"NATS_LOCAL_PORT="4222a" is not a port number (0-65535)"#,
            ),
            (
                "LISTEN_HOST",
                "localhost",
                r#"LISTEN_HOST="localhost" is not an IP address"#,
            ),
            (
                "DEVELOPMENT",
                "yes",
                r#"DEVELOPMENT="yes" is not a boolean (true, false, 1 or 0)"#,
            ),
            (
                "RUST_LOG",
                "info,foo=loud",
                r#"RUST_LOG="info,foo=loud" is not a valid log filter ("#,
            ),
            (
                "NATS_PUBLISH_ASYNC_MAX_PENDING",
                "0",
                r#"NATS_PUBLISH_ASYNC_MAX_PENDING="0" is not a whole number"#,
            ),
            (
                "NATS_PUBLISH_ASYNC_MAX_PENDING",
                "many",
                r#"NATS_PUBLISH_ASYNC_MAX_PENDING="many" is not a whole"#,
            ),
            (
                "WORKER_THREADS",
                "0",
                r#"WORKER_THREADS="0" is not a whole number of at least 1"#,
            ),
            (
                "FETCH_MAX_IN_FLIGHT_PER_CONSUMER",
                "0",
                r#"FETCH_MAX_IN_FLIGHT_PER_CONSUMER="0" is not a whole number of at least 1"#,
            ),
            (
                "FETCH_MAX_IN_FLIGHT",
                "lots",
                r#"FETCH_MAX_IN_FLIGHT="lots" is not a whole number of at least 1"#,
            ),
            (
                "NATS_SYNC_INTERVAL",
                "2x",
                r#"NATS_SYNC_INTERVAL="2x" is not "always" or a duration like "2m""#,
            ),
            (
                "NATS_SYNC_INTERVAL",
                "0s",
                r#"NATS_SYNC_INTERVAL="0s" is a zero duration"#,
            ),
            (
                "NATS_STOP_TIMEOUT",
                "30",
                r#"NATS_STOP_TIMEOUT="30" is not a duration from 1s to 1h, like "25s""#,
            ),
            (
                "NATS_STOP_TIMEOUT",
                "500ms",
                r#"NATS_STOP_TIMEOUT="500ms" is not a duration from 1s to 1h"#,
            ),
            (
                "NATS_STOP_TIMEOUT",
                "2h",
                r#"NATS_STOP_TIMEOUT="2h" is not a duration from 1s to 1h"#,
            ),
            (
                "MAX_UNNAMED_CONSUMERS_PER_STREAM",
                "0",
                r#"MAX_UNNAMED_CONSUMERS_PER_STREAM="0" is not a whole number of at least 1"#,
            ),
            (
                "SUBSCRIBER_BUFFER_EVENTS",
                "-5",
                r#"SUBSCRIBER_BUFFER_EVENTS="-5" is not a whole number of at least 1"#,
            ),
            (
                "GRPC_MAX_CONNECTIONS",
                "0",
                r#"GRPC_MAX_CONNECTIONS="0" is not a whole number of at least 1"#,
            ),
            (
                "GRPC_IDLE_TIMEOUT",
                "0s",
                r#"GRPC_IDLE_TIMEOUT="0s" is not a positive duration like "10s""#,
            ),
            (
                "GRPC_IDLE_TIMEOUT",
                "30",
                r#"GRPC_IDLE_TIMEOUT="30" is not a positive duration"#,
            ),
            (
                "GRPC_MAX_STREAMS_PER_CONNECTION",
                "4294967296",
                r#"GRPC_MAX_STREAMS_PER_CONNECTION="4294967296" is not a whole number from 1"#,
            ),
            (
                "GRPC_MAX_STREAMING_CALLS",
                "lots",
                r#"GRPC_MAX_STREAMING_CALLS="lots" is not a whole number of at least 1"#,
            ),
            (
                "GRPC_MAX_MESSAGE_BYTES",
                "1023",
                r#"GRPC_MAX_MESSAGE_BYTES="1023" is not a whole number of bytes, at least 1024"#,
            ),
            (
                "HEALTH_MAX_CONNECTIONS",
                "-1",
                r#"HEALTH_MAX_CONNECTIONS="-1" is not a whole number of at least 1"#,
            ),
            (
                "HEALTH_HEADER_TIMEOUT",
                "10",
                r#"HEALTH_HEADER_TIMEOUT="10" is not a positive duration"#,
            ),
        ];
        for (variable, value, expected) in cases {
            let message = error_message(&[(variable, value)]);
            assert!(
                message.starts_with(&format!("invalid configuration: {expected}")),
                "{variable}={value}: {message}"
            );
        }
    }

    #[test]
    fn all_bad_values_are_reported_together_on_one_line() {
        let error = load(&[
            ("GRPC_PORT", "abc"),
            ("HEALTH_PORT", "99999"),
            ("DEVELOPMENT", "maybe"),
            ("NATS_SYNC_INTERVAL", "2x"),
            ("LISTEN_HOST", "0.0.0.0"),
        ])
        .unwrap_err();
        assert_eq!(error.problems().len(), 4);
        assert_eq!(
            error.to_string(),
            "invalid configuration: GRPC_PORT=\"abc\" is not a port number (0-65535); \
             HEALTH_PORT=\"99999\" is not a port number (0-65535); \
             DEVELOPMENT=\"maybe\" is not a boolean (true, false, 1 or 0); \
             NATS_SYNC_INTERVAL=\"2x\" is not \"always\" or a duration like \"2m\""
        );
    }

    #[test]
    fn a_bad_nats_url_is_reported_with_the_rest_and_its_credentials_masked() {
        let error = load(&[
            ("NATS_URL", "nats://app:s3cret@host:42220x"),
            ("GRPC_PORT", "abc"),
        ])
        .unwrap_err();
        assert_eq!(error.problems().len(), 2);
        let message = error.to_string();
        assert!(message.contains("GRPC_PORT=\"abc\""), "{message}");
        assert!(
            message.contains("NATS_URL=\"nats://***@host:42220x\" is not a NATS URL list"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        let message = error_message(&[("NATS_URL", "nats://app:s3cret@a,nats://app:other@b")]);
        assert!(
            message.contains("entry 2 carries other credentials than entry 1"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        // A list is read entry by entry, as the connection reads it.
        let config = load(&[("NATS_URL", "nats://a:4222,nats://b:4222")]).unwrap();
        assert_eq!(
            config.nats_url.as_deref(),
            Some("nats://a:4222,nats://b:4222")
        );
    }

    #[test]
    fn values_with_line_breaks_stay_on_one_line() {
        assert!(!error_message(&[("GRPC_PORT", "80\n80")]).contains('\n'));
    }

    #[test]
    fn health_server_port_is_an_alias_of_health_port() {
        assert_eq!(
            load(&[("HEALTH_SERVER_PORT", "9000")]).unwrap().health_port,
            9000
        );
        assert_eq!(
            load(&[("HEALTH_PORT", "9000"), ("HEALTH_SERVER_PORT", "9000")])
                .unwrap()
                .health_port,
            9000
        );
        // Same port, different spelling: they agree.
        assert_eq!(
            load(&[("HEALTH_PORT", "9000"), ("HEALTH_SERVER_PORT", "09000")])
                .unwrap()
                .health_port,
            9000
        );
    }

    #[test]
    fn conflicting_health_ports_are_rejected_naming_both() {
        let message = error_message(&[("HEALTH_PORT", "9000"), ("HEALTH_SERVER_PORT", "9001")]);
        assert_eq!(
            message,
            "invalid configuration: HEALTH_PORT=\"9000\" and HEALTH_SERVER_PORT=\"9001\" disagree \
             (HEALTH_SERVER_PORT is an alias of HEALTH_PORT): set only one"
        );
    }
}
