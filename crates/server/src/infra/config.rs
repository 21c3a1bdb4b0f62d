//! Jetway's runtime configuration: every environment variable the server reads, their defaults, and
//! their validation.
//!
//! Each variable is declared once, in [`VARIABLES`]: its name, its default (as it would be written in
//! the environment), the text that documents it, how its value is parsed into [`Config`] and how
//! the effective value is shown at start. The loader, [`KNOWN_VARIABLES`], [`Config::log_summary`]
//! and the configuration table of docs/configuration.md ([`markdown_table`]) are all produced from
//! it, so they cannot drift apart.
//!
//! [`Config`] is the single typed view of the environment, read with envy and then parsed variable by
//! variable against the declarations. Loading reports *every* bad variable in
//! one [`ConfigError`], so an operator fixes a deployment in one round trip instead of one variable
//! per restart. An empty variable counts as unset (container tooling often renders `NAME=` for
//! "not configured"). Variables for the local nats-server are validated even when `NATS_URL` is
//! set, because a malformed value is a mistake either way.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use jetway_core::{
    NatsSecurity, Secret,
    connection::{NatsServers, redact_credentials},
    fetch::FetchLimits,
};
use tracing_subscriber::EnvFilter;

use crate::http::cors::{AllowedOrigins, Cors};

/// async-nats logs every connection event at info, which Jetway already logs in its own words.
const DEFAULT_LOG_FILTER: &str = "info,async_nats=warn";
/// The range of `NATS_STOP_TIMEOUT`: long enough for a store to close, short enough that a hung
/// nats-server cannot hold a shutdown for ever.
const NATS_STOP_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

const PORT_EXPECTED: &str = "is not a port number (0-65535)";
const SYNC_INTERVAL_EXPECTED: &str = r#"is not "always" or a duration like "2m""#;
const COUNT_EXPECTED: &str = "is not a whole number of at least 1";
const TIMEOUT_EXPECTED: &str = r#"is not a positive duration like "10s", "500ms" or "5m""#;

/// Reads a variable into one field of [`Config`] with `parse` (a `fn(&str) -> Result<T, String>`),
/// and shows that field in the summary log.
macro_rules! field {
    ($($path:ident).+, $parse:expr) => {
        Access {
            apply: |config, value| {
                config.$($path).+ = ($parse)(value)?;
                Ok(())
            },
            show: Some(|config| config.$($path).+.summary()),
        }
    };
}

/// Every variable Jetway reads, in the order they are checked, reported and documented. Only these
/// are read: unrelated variables are never inspected, and differently-cased spellings cannot
/// shadow ours.
pub const VARIABLES: &[Variable] = &[
    Variable::new(
        "NATS_URL",
        DefaultValue::Absent("unset"),
        "NATS server URL(s), comma-separated. Credentials go in a URL, \
         `nats://user:password@host:4222` or `nats://token@host:4222` (percent-encode reserved \
         characters, e.g. `@` as `%40`); they apply to every server of the list (entries with \
         different ones are refused) and are masked in every log line. Unset: start and supervise \
         a local nats-server.",
        Access {
            apply: |config, value| {
                NatsServers::parse(value)?;
                config.nats_url = Some(NatsUrl(value.to_owned()));
                Ok(())
            },
            show: Some(|config| {
                config.nats_url.as_ref().map_or_else(
                    || "unset: running a local nats-server".to_owned(),
                    |url| url.0.clone(),
                )
            }),
        },
    )
    .masked(),
    Variable::new(
        "GRPC_PORT",
        DefaultValue::Value("8080"),
        "gRPC port: both EventsServices, both StateServices, AdminService, RequestService, \
         `grpc.health.v1`, reflection.",
        field!(grpc_port, parse_port),
    ),
    Variable::new(
        "HEALTH_PORT",
        DefaultValue::Value("8088"),
        "HTTP `/healthz` and `/readyz`.",
        field!(health_port, parse_port),
    ),
    Variable::new(
        "HEALTH_SERVER_PORT",
        DefaultValue::Absent("unset"),
        "Alias of `HEALTH_PORT` (upstream Windshift's name); set one of the two, or both to the \
         same port.",
        field!(health_port, parse_port),
    )
    .alias_of("HEALTH_PORT"),
    Variable::new(
        "HTTP_PORT",
        DefaultValue::Value("8081"),
        "HTTP/JSON API (`/v1/...`, `/openapi.json`; docs/http-api.md), on a port of its own so \
         gRPC clients and proxies never meet content-type multiplexing and each API has its own \
         connection limits.",
        field!(http_port, parse_port),
    ),
    Variable::new(
        "LISTEN_HOST",
        DefaultValue::Value("0.0.0.0"),
        "Address every listener binds to.",
        field!(listen_host, |value: &str| value.parse::<IpAddr>().map_err(
            |_| "is not an IP address (like 0.0.0.0 or ::1)".to_owned()
        )),
    ),
    Variable::new(
        "AUTH_FILE",
        DefaultValue::Absent("unset: no authentication"),
        "JSON file of clients: their credentials (token hashes, an argon2id secret hash, \
         certificate names), permissions and limits (see \"Securing Jetway\"). Set: every gRPC \
         call but `grpc.health.v1`, and every HTTP API request but `/openapi.json`, must \
         authenticate. Reloaded within a second of a change; a file that \
         does not read keeps the previous one in force.",
        Access {
            apply: |config, value| {
                config.auth_file = Some(PathBuf::from(value));
                Ok(())
            },
            show: Some(|config| {
                config.auth_file.as_ref().map_or_else(
                    || "unset: no authentication".to_owned(),
                    |path| path.display().to_string(),
                )
            }),
        },
    ),
    Variable::new(
        "GRPC_REFLECTION",
        DefaultValue::Value("true"),
        "`false`: the gRPC port does not serve reflection (with `AUTH_FILE`, reflection answers \
         authenticated clients only).",
        field!(grpc_reflection, parse_bool),
    ),
    Variable::new(
        "DEVELOPMENT",
        DefaultValue::Value("false"),
        "`true`: human-readable logs instead of JSON lines.",
        field!(development, parse_bool),
    ),
    Variable::new(
        "RUST_LOG",
        DefaultValue::Value(DEFAULT_LOG_FILTER),
        "Log filter (tracing EnvFilter syntax).",
        field!(log_filter, |value: &str| EnvFilter::builder()
            .parse(value)
            .map(|_| value.to_owned())
            .map_err(|e| format!("is not a valid log filter ({e})"))),
    ),
    Variable::new(
        "NATS_PUBLISH_ASYNC_MAX_PENDING",
        DefaultValue::Value("256"),
        "Most event publishes awaiting their JetStream ack at once, across all calls; more wait. \
         KV writes and dead-letter publishes have a window of this size of their own.",
        field!(nats_publish_async_max_pending, parse_count),
    ),
    Variable::new(
        "FETCH_MAX_IN_FLIGHT_PER_CONSUMER",
        DefaultValue::Value("10000"),
        "Most fetched events (Fetch, not yet acked, rejected or expired) this server holds for one \
         consumer; a Fetch beyond gets RESOURCE_EXHAUSTED. The same bound as an Events stream's \
         `maxProcessingEvents` and one Ack's ids.",
        field!(limits.fetch.per_consumer, parse_count),
    ),
    Variable::new(
        "FETCH_MAX_IN_FLIGHT",
        DefaultValue::Value("1000000"),
        "Most fetched events this server holds over all consumers; it bounds their memory (a few \
         hundred bytes each). A Fetch beyond gets RESOURCE_EXHAUSTED.",
        field!(limits.fetch.total, parse_count),
    ),
    Variable::new(
        "WORKER_THREADS",
        DefaultValue::Absent("half the CPUs"),
        "Threads that serve calls and NATS I/O. Jetway usually shares its machine with \
         nats-server, and fewer threads wake each other less per event (1 runs everything on one \
         thread, with Tokio's current-thread scheduler); on a machine of its own with many busy \
         clients, use one per CPU.",
        Access {
            apply: |config, value| {
                config.worker_threads = Some(parse_count(value)?);
                Ok(())
            },
            show: Some(|config| config.worker_threads().to_string()),
        },
    ),
    Variable::new(
        "GRPC_MAX_CONNECTIONS",
        DefaultValue::Value("1024"),
        "Most connections open on the gRPC port at once. Over it, a new connection is closed as \
         soon as it is accepted (the client sees a reset and retries later), and a warning names \
         this variable. Keep the sum of both ports' caps below `ulimit -n`.",
        field!(limits.grpc_max_connections, parse_count),
    ),
    Variable::new(
        "GRPC_IDLE_TIMEOUT",
        DefaultValue::Value("5m"),
        "A gRPC connection with no call in progress for this long is closed, including one that \
         never sends a call; keepalive pings do not count as calls. The client's next call opens \
         a new connection.",
        field!(limits.grpc_idle_timeout, parse_timeout),
    ),
    Variable::new(
        "GRPC_MAX_STREAMS_PER_CONNECTION",
        DefaultValue::Value("4096"),
        "Most calls open at once on one gRPC connection (HTTP/2 `MAX_CONCURRENT_STREAMS`); a \
         client waits for a free one.",
        field!(limits.grpc_max_streams_per_connection, |value: &str| {
            match value.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err("is not a whole number from 1 to 4294967295".to_owned()),
            }
        }),
    ),
    Variable::new(
        "GRPC_MAX_STREAMING_CALLS",
        DefaultValue::Value("10000"),
        "Most streaming calls open at once on the whole server: Events sessions, PublishStream, \
         ReadEvents, Subscribe, Watch, Keys, History, ListDeadLetters, health Watch, reflection. \
         One connection holds at most an eighth of them (at least one), so a few connections of \
         one client cannot take them all. One more is answered RESOURCE_EXHAUSTED naming this \
         variable.",
        field!(limits.grpc_max_streaming_calls, parse_count),
    ),
    Variable::new(
        "GRPC_MAX_MESSAGE_BYTES",
        // 4 MiB, gRPC's customary limit, holds an event of NATS's default `max_payload` (1 MiB).
        DefaultValue::Value("4194304"),
        "Largest request message any service decodes (4194304 is 4 MiB), checked from its length \
         prefix before it is read; a PublishBatch is one message, so this bounds the whole batch. \
         Over it: RESOURCE_EXHAUSTED naming this variable. At least 1024; raise it with NATS's \
         `max_payload` (1 MiB by default).",
        field!(limits.grpc_max_message_bytes, |value: &str| {
            match value.parse::<usize>() {
                Ok(n) if n >= 1024 => Ok(n),
                _ => Err("is not a whole number of bytes, at least 1024".to_owned()),
            }
        }),
    ),
    Variable::new(
        "HEALTH_MAX_CONNECTIONS",
        DefaultValue::Value("64"),
        "Most connections open on the health port at once; over it, a new connection is closed at \
         once.",
        field!(limits.health_max_connections, parse_count),
    ),
    Variable::new(
        "HEALTH_HEADER_TIMEOUT",
        DefaultValue::Value("10s"),
        "The health port closes a connection whose request headers are not complete this long \
         after it started waiting for them: a request line or headers sent slowly or never \
         finished, or a keep-alive connection idle between requests.",
        field!(limits.health_header_timeout, parse_timeout),
    ),
    Variable::new(
        "HTTP_MAX_CONNECTIONS",
        DefaultValue::Value("1024"),
        "Most connections open on the HTTP API port at once (each live SSE subscription holds \
         one); over it, a new connection is closed at once.",
        field!(limits.http_max_connections, parse_count),
    ),
    Variable::new(
        "HTTP_HEADER_TIMEOUT",
        DefaultValue::Value("10s"),
        "The HTTP API port closes a connection whose request headers are not complete this long \
         after it started waiting for them (slow or unfinished headers, an idle keep-alive \
         connection).",
        field!(limits.http_header_timeout, parse_timeout),
    ),
    Variable::new(
        "HTTP_MAX_BODY_BYTES",
        // The same 4 MiB as GRPC_MAX_MESSAGE_BYTES: one event of NATS's default `max_payload` or a
        // batch of small ones.
        DefaultValue::Value("4194304"),
        "Largest HTTP API request body (4194304 is 4 MiB); a larger one is answered 413 \
         PAYLOAD_TOO_LARGE naming this variable.",
        field!(limits.http_max_body_bytes, |value: &str| {
            match value.parse::<usize>() {
                Ok(n) if n >= 1024 => Ok(n),
                _ => Err("is not a whole number of bytes, at least 1024".to_owned()),
            }
        }),
    ),
    Variable::new(
        "HTTP_CORS_ALLOWED_ORIGINS",
        DefaultValue::Absent("unset: no CORS headers"),
        "Web origins whose pages may call the HTTP API from a browser (CORS), comma-separated, \
         each `scheme://host[:port]` as browsers send it (`https://app.example.com,\
         http://localhost:3000`), or `*` for any. Their preflights are answered with every \
         method and the headers asked for (`authorization`, `Jetway-Header-*`, `ce-*`...); a \
         preflight from another origin gets 403. Unset, no CORS header is sent and browsers keep \
         other origins' pages from reading the answers.",
        field!(http_cors.origins, AllowedOrigins::parse),
    ),
    Variable::new(
        "HTTP_CORS_MAX_AGE",
        DefaultValue::Value("10m"),
        "How long a browser may reuse a CORS preflight answer (`Access-Control-Max-Age`, in whole \
         seconds; browsers cap it, Chromium at 2 hours).",
        field!(http_cors.max_age, parse_timeout),
    ),
    Variable::new(
        "TLS_CERT_FILE",
        DefaultValue::Absent("unset: plain text"),
        "TLS on every port (gRPC, HTTP API, health): the server's certificate chain (PEM, leaf first); needs \
         `TLS_KEY_FILE`. An unreadable file, an expired certificate or a key that is not its own \
         stops the start. Rotated files are loaded for new connections within a second, without a \
         restart; open connections keep theirs.",
        field!(tls.cert_file, parse_file),
    ),
    Variable::new(
        "TLS_KEY_FILE",
        DefaultValue::Absent("unset"),
        "The private key of `TLS_CERT_FILE` (PEM: PKCS#8, PKCS#1 or SEC1).",
        field!(tls.key_file, parse_file),
    ),
    Variable::new(
        "TLS_CLIENT_CA_FILE",
        DefaultValue::Absent("unset: no client certificate asked"),
        "mTLS: the gRPC and HTTP API ports require a client certificate issued by a CA in this \
         file (PEM); others are refused during the handshake. With `AUTH_FILE`, a certificate's \
         name can identify its client. The health port asks for none (probes have none). Needs \
         `TLS_CERT_FILE`.",
        field!(tls.client_ca_file, parse_file),
    ),
    Variable::new(
        "NATS_CREDS_FILE",
        DefaultValue::Absent("unset"),
        "A NATS `.creds` file (user JWT and nkey seed) to authenticate with. One way of \
         authenticating at most: this, `NATS_NKEY_SEED_FILE`, `NATS_USER`, `NATS_TOKEN` or \
         credentials in `NATS_URL`.",
        field!(nats_security.creds_file, parse_file),
    ),
    Variable::new(
        "NATS_NKEY_SEED_FILE",
        DefaultValue::Absent("unset"),
        "A file holding an nkey seed (`SU...`) to authenticate with; checked at start.",
        field!(nats_security.nkey_seed_file, parse_file),
    ),
    Variable::new(
        "NATS_USER",
        DefaultValue::Absent("unset"),
        "User name to authenticate with; needs `NATS_PASSWORD`.",
        field!(nats_security.user, |value: &str| Ok::<_, String>(Some(
            value.to_owned()
        ))),
    ),
    Variable::new(
        "NATS_PASSWORD",
        DefaultValue::Absent("unset"),
        "Password of `NATS_USER`; never logged (shown as `***`).",
        field!(nats_security.password, parse_secret),
    ),
    Variable::new(
        "NATS_TOKEN",
        DefaultValue::Absent("unset"),
        "Token to authenticate with; never logged (shown as `***`).",
        field!(nats_security.token, parse_secret),
    ),
    Variable::new(
        "NATS_TLS_CA_FILE",
        DefaultValue::Absent("unset: the system's roots for `tls://`"),
        "CA certificates (PEM) the NATS servers' certificates must chain to; set, the link to \
         NATS requires TLS.",
        field!(nats_security.tls_ca_file, parse_file),
    ),
    Variable::new(
        "NATS_TLS_CERT_FILE",
        DefaultValue::Absent("unset"),
        "Client certificate (PEM) for NATS servers that verify clients (`verify: true`); needs \
         `NATS_TLS_KEY_FILE`; set, the link requires TLS.",
        field!(nats_security.tls_cert_file, parse_file),
    ),
    Variable::new(
        "NATS_TLS_KEY_FILE",
        DefaultValue::Absent("unset"),
        "The key (PEM) of `NATS_TLS_CERT_FILE`.",
        field!(nats_security.tls_key_file, parse_file),
    ),
    Variable::new(
        "NATS_SERVER_BIN",
        DefaultValue::Absent("unset"),
        "Local default: the nats-server binary (else `tools/bin/nats-server`, from the working \
         directory, then from the executable's directory upwards, then `PATH`).",
        Access {
            apply: |config, value| {
                config.nats_server_bin = Some(PathBuf::from(value));
                Ok(())
            },
            show: Some(|config| {
                config.nats_server_bin.as_ref().map_or_else(
                    || "search tools/bin and PATH".to_owned(),
                    |path| path.display().to_string(),
                )
            }),
        },
    ),
    Variable::new(
        "NATS_LOCAL_PORT",
        DefaultValue::Value("4222"),
        "Local default: client port on 127.0.0.1 (0 picks a free one, kept across restarts).",
        field!(nats_local_port, parse_port),
    ),
    Variable::new(
        "NATS_DATA_DIR",
        DefaultValue::Value("./data/nats"),
        "Local default: JetStream store, generated config, log file and ports file.",
        field!(nats_data_dir, |value: &str| Ok::<_, String>(PathBuf::from(
            value
        ))),
    ),
    Variable::new(
        "NATS_SYNC_INTERVAL",
        DefaultValue::Value("always"),
        "Local default: JetStream fsync policy, `always` or an interval like `2m`.",
        field!(nats_sync_interval, |value: &str| value
            .parse::<SyncInterval>()
            .map_err(|e| e.reason.to_owned())),
    ),
    Variable::new(
        "NATS_STOP_TIMEOUT",
        // With Jetway's own shutdown (2.5 s at most) this fits Kubernetes' default termination
        // grace of 30 s, and gives nats-server time to flush and close a busy JetStream store.
        DefaultValue::Value("25s"),
        "Local default: how long nats-server may take to exit after SIGTERM at shutdown (it \
         flushes and closes its JetStream store) before it is killed; a duration from `1s` to \
         `1h`.",
        field!(nats_stop_timeout, |value: &str| {
            go_duration_nanos(value)
                .map(|nanos| Duration::from_nanos(nanos as u64))
                .filter(|timeout| NATS_STOP_TIMEOUT_RANGE.contains(timeout))
                .ok_or_else(|| r#"is not a duration from 1s to 1h, like "25s""#.to_owned())
        }),
    ),
    Variable::new(
        "MAX_UNNAMED_CONSUMERS_PER_STREAM",
        DefaultValue::Value("500"),
        "Most unnamed consumers (EnsureConsumer without a name, either API) on one stream; more \
         are refused with RESOURCE_EXHAUSTED. Each lives until an hour after its last subscriber. \
         Half of nats-server's default of 1,000 consumers per stream, leaving the rest for named \
         consumers and reads.",
        field!(limits.max_unnamed_consumers_per_stream, parse_count),
    ),
    Variable::new(
        "SUBSCRIBER_BUFFER_EVENTS",
        DefaultValue::Value("1000"),
        "Most events a live subscriber (`jetway.events.v1` Subscribe) may have waiting; one \
         further behind its feed is cut off with RESOURCE_EXHAUSTED. Events are shared between \
         subscribers, so this costs memory only while one lags.",
        field!(limits.subscriber_buffer, parse_count),
    ),
    Variable::new(
        "REQUEST_DEFAULT_TIMEOUT",
        DefaultValue::Value("5s"),
        "How long a `jetway.requests.v1` Request waits for its answer when it sets no `timeout` and \
         the call has no deadline; after it, DEADLINE_EXCEEDED. Also how long a request from a \
         plain NATS requester may wait for a busy processor.",
        field!(limits.request_default_timeout, parse_timeout),
    ),
    Variable::new(
        "REQUEST_MAX_TIMEOUT",
        DefaultValue::Value("1m"),
        "The longest a Request waits for its answer: longer `timeout`s and call deadlines are cut \
         to this.",
        field!(limits.request_max_timeout, parse_timeout),
    ),
    Variable::new(
        "REQUEST_STREAM_MAX_IN_FLIGHT",
        DefaultValue::Value("1000"),
        "Most requests of one RequestStream (`jetway.requests.v1`, which jetway-client's requests \
         share) waiting for their answers at once; a further one is answered RESOURCE_EXHAUSTED. \
         Each waits at most its timeout, so this bounds what one stream holds.",
        field!(limits.request_stream_max_in_flight, parse_count),
    ),
    Variable::new(
        "RESPOND_MAX_IN_FLIGHT",
        DefaultValue::Value("1000"),
        "Most requests one processor (a Respond stream) may hold unanswered, the most its \
         `attach.max_in_flight` may declare; more is refused with RESOURCE_EXHAUSTED.",
        field!(limits.respond_max_in_flight, |value: &str| parse_count(
            value
        )
        .and_then(
            |n| u32::try_from(n).map_err(|_| COUNT_EXPECTED.to_owned())
        )),
    ),
    Variable::new(
        "RESPOND_MAX_WAITING",
        DefaultValue::Value("1000"),
        "Most requests that wait on this server for a processor of one queue group while all of \
         them hold as many as they declared; a request beyond gets RESOURCE_EXHAUSTED. Each waits \
         at most its requester's timeout.",
        field!(limits.respond_max_waiting, parse_count),
    ),
    Variable::new(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        DefaultValue::Absent("unset"),
        "OTLP/gRPC collector for traces, e.g. `http://localhost:4317`; unset: no tracing.",
        Access {
            apply: |config, value| {
                config.telemetry.endpoint = Some(parse_endpoint(value)?);
                Ok(())
            },
            show: Some(|config| {
                config
                    .telemetry
                    .export_endpoint()
                    .unwrap_or("unset: no trace export")
                    .to_owned()
            }),
        },
    )
    .overridden_by("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    Variable::new(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        DefaultValue::Absent("unset"),
        "Overrides the endpoint above for traces.",
        Access {
            apply: |config, value| {
                config.telemetry.endpoint = Some(parse_endpoint(value)?);
                Ok(())
            },
            // Shown as the effective endpoint, above.
            show: None,
        },
    ),
    Variable::new(
        "OTEL_SERVICE_NAME",
        DefaultValue::Value("jetway-server"),
        "The service name on every span.",
        field!(telemetry.service_name, |value: &str| Ok::<_, String>(
            value.to_owned()
        )),
    ),
    // Before OTEL_TRACES_SAMPLER_ARG, which sets the ratio of the sampler this one chose.
    Variable::new(
        "OTEL_TRACES_SAMPLER",
        DefaultValue::Value("parentbased_always_on"),
        "`always_on`, `always_off`, `traceidratio`, or `parentbased_` + one of those.",
        field!(telemetry.sampler, parse_sampler),
    ),
    Variable::new(
        "OTEL_TRACES_SAMPLER_ARG",
        DefaultValue::Value("1.0"),
        "The ratio for `traceidratio`.",
        Access {
            apply: |config, value| {
                let ratio = match value.parse::<f64>() {
                    Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
                    _ => return Err("is not a sampling ratio between 0 and 1".to_owned()),
                };
                if let RootSampler::Ratio(current) = &mut config.telemetry.sampler.root {
                    *current = ratio;
                }
                Ok(())
            },
            show: Some(|config| match config.telemetry.sampler.root {
                RootSampler::Ratio(ratio) => ratio.to_string(),
                _ => "unused".to_owned(),
            }),
        },
    ),
    Variable::new(
        "OTEL_RESOURCE_ATTRIBUTES",
        DefaultValue::Absent("unset"),
        "`key=value,...` added to the trace resource.",
        field!(telemetry.resource_attributes, parse_attributes),
    ),
    Variable::new(
        "OTEL_SDK_DISABLED",
        DefaultValue::Value("false"),
        "`true`: no tracing even with an endpoint.",
        field!(telemetry.disabled, parse_bool),
    ),
];

/// Variables that mean nothing without another: `(variable, requires)`.
const REQUIRES: &[(&str, &str)] = &[
    ("TLS_CERT_FILE", "TLS_KEY_FILE"),
    ("TLS_KEY_FILE", "TLS_CERT_FILE"),
    ("TLS_CLIENT_CA_FILE", "TLS_CERT_FILE"),
    ("NATS_USER", "NATS_PASSWORD"),
    ("NATS_PASSWORD", "NATS_USER"),
    ("NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE"),
    ("NATS_TLS_KEY_FILE", "NATS_TLS_CERT_FILE"),
];

/// The ways of authenticating to NATS, of which one at most may be set (with credentials in
/// `NATS_URL`, checked apart).
const NATS_LOGINS: [&str; 4] = [
    "NATS_CREDS_FILE",
    "NATS_NKEY_SEED_FILE",
    "NATS_USER",
    "NATS_TOKEN",
];

/// The names in [`VARIABLES`].
const NAMES: [&str; VARIABLES.len()] = {
    let mut names = [""; VARIABLES.len()];
    let mut i = 0;
    while i < VARIABLES.len() {
        names[i] = VARIABLES[i].name;
        i += 1;
    }
    names
};

/// Every variable the server reads, for checks such as "does the compose file only set variables
/// that exist".
pub const KNOWN_VARIABLES: &[&str] = &NAMES;

/// One environment variable: everything about it, in one place.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    name: &'static str,
    default: DefaultValue,
    doc: &'static str,
    access: Access,
    masked: bool,
    alias_of: Option<&'static str>,
    overridden_by: Option<&'static str>,
}

/// What an unset (or empty) variable means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// The variable takes this value, written as it would be in the environment.
    Value(&'static str),
    /// The setting is absent; the text says what that means, for the documentation.
    Absent(&'static str),
}

/// How a variable's value reaches [`Config`], and how the result is shown in the summary log.
#[derive(Debug, Clone, Copy)]
struct Access {
    /// Parses the value and stores it; the error completes `NAME="value" ...`.
    apply: fn(&mut Config, &str) -> Result<(), String>,
    /// The effective value, for [`Config::log_summary`]; `None` when another variable shows it.
    show: Option<fn(&Config) -> String>,
}

impl Variable {
    const fn new(
        name: &'static str,
        default: DefaultValue,
        doc: &'static str,
        access: Access,
    ) -> Self {
        Self {
            name,
            default,
            doc,
            access,
            masked: false,
            alias_of: None,
            overridden_by: None,
        }
    }

    /// Values may carry credentials: they are masked in error messages and in the log.
    const fn masked(mut self) -> Self {
        self.masked = true;
        self
    }

    /// Another name for `primary`: either may be set, both only if they mean the same.
    const fn alias_of(mut self, primary: &'static str) -> Self {
        self.alias_of = Some(primary);
        self.access.show = None;
        self
    }

    /// Ignored, not even checked, when `other` is set.
    const fn overridden_by(mut self, other: &'static str) -> Self {
        self.overridden_by = Some(other);
        self
    }

    /// The variable's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What an unset variable means.
    pub fn default_value(&self) -> DefaultValue {
        self.default
    }

    /// What the variable does, as the configuration table of docs/configuration.md says it
    /// (markdown).
    pub fn doc(&self) -> &'static str {
        self.doc
    }

    /// The value as it may appear in a message or the log.
    fn shown(&self, value: &str) -> String {
        if self.masked {
            redact_credentials(value)
        } else {
            value.to_owned()
        }
    }
}

/// The configuration table of docs/configuration.md, one row per variable of [`VARIABLES`], in
/// markdown.
pub fn markdown_table() -> String {
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for variable in VARIABLES {
        let default = match variable.default {
            DefaultValue::Value(value) => format!("`{value}`"),
            DefaultValue::Absent(meaning) => meaning.to_owned(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            table,
            "| `{}` | {default} | {} |",
            variable.name, variable.doc
        );
    }
    table
}

/// Jetway's effective configuration, loaded from the environment by [`Config::from_env`]. Each
/// field names the variable it comes from; [`VARIABLES`] documents them.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `NATS_URL`: the NATS server(s) to connect to; `None` runs and supervises a local
    /// nats-server (see the `NATS_*` local settings below).
    pub nats_url: Option<NatsUrl>,
    /// `NATS_CREDS_FILE`, `NATS_NKEY_SEED_FILE`, `NATS_USER`, `NATS_PASSWORD`, `NATS_TOKEN` and
    /// `NATS_TLS_*`: how Jetway authenticates to NATS and secures the link.
    pub nats_security: NatsSecurity,
    /// `GRPC_PORT`: TCP port of the gRPC listener.
    pub grpc_port: u16,
    /// `HEALTH_PORT` (alias `HEALTH_SERVER_PORT`): TCP port of the HTTP health listener.
    pub health_port: u16,
    /// `HTTP_PORT`: TCP port of the HTTP/JSON API listener.
    pub http_port: u16,
    /// `HTTP_CORS_ALLOWED_ORIGINS` and `HTTP_CORS_MAX_AGE`: the browser origins that may call the
    /// HTTP API.
    pub http_cors: Cors,
    /// `LISTEN_HOST`: IP address every listener binds to.
    pub listen_host: IpAddr,
    /// `AUTH_FILE`: the clients file; `None` turns authentication off.
    pub auth_file: Option<PathBuf>,
    /// `GRPC_REFLECTION`: serve gRPC reflection.
    pub grpc_reflection: bool,
    /// `DEVELOPMENT`: human-readable logs instead of JSON lines.
    pub development: bool,
    /// `RUST_LOG`: log filter in tracing's `EnvFilter` syntax, checked to parse.
    pub log_filter: String,
    /// `NATS_PUBLISH_ASYNC_MAX_PENDING`: the most event publishes awaiting their JetStream ack.
    pub nats_publish_async_max_pending: usize,
    /// `WORKER_THREADS`, if set (see [`Config::worker_threads`]).
    pub worker_threads: Option<usize>,
    /// `NATS_SERVER_BIN` (local nats-server only): path of the nats-server binary; `None` searches.
    pub nats_server_bin: Option<PathBuf>,
    /// `NATS_LOCAL_PORT` (local nats-server only): client port on 127.0.0.1; 0 picks a free port.
    pub nats_local_port: u16,
    /// `NATS_DATA_DIR` (local nats-server only): JetStream storage, config, log and ports file.
    pub nats_data_dir: PathBuf,
    /// `NATS_SYNC_INTERVAL` (local nats-server only): JetStream `sync_interval`.
    pub nats_sync_interval: SyncInterval,
    /// `NATS_STOP_TIMEOUT` (local nats-server only): how long nats-server may take to exit after
    /// SIGTERM at shutdown before it is killed.
    pub nats_stop_timeout: Duration,
    /// OpenTelemetry trace export, from the standard `OTEL_*` variables.
    pub telemetry: TelemetryConfig,
    /// TLS on both listeners.
    pub tls: TlsConfig,
    /// What one client, or all of them together, may hold of the server.
    pub limits: Limits,
}

/// Every limit a client can reach, in one place: on the two listeners (connections, idle and slow
/// connections, calls, request sizes), unnamed consumers, live subscribers and fetched events. Each
/// is documented in the configuration table of docs/configuration.md (from [`VARIABLES`]) and
/// answered as that table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `GRPC_MAX_CONNECTIONS`: the most connections open on the gRPC port at once.
    pub grpc_max_connections: usize,
    /// `GRPC_IDLE_TIMEOUT`: a gRPC connection with no call in progress for this long is closed.
    pub grpc_idle_timeout: Duration,
    /// `GRPC_MAX_STREAMS_PER_CONNECTION`: the most calls open at once on one connection.
    pub grpc_max_streams_per_connection: u32,
    /// `GRPC_MAX_STREAMING_CALLS`: the most streaming calls open at once on the whole server.
    pub grpc_max_streaming_calls: usize,
    /// `GRPC_MAX_MESSAGE_BYTES`: the largest request message the server decodes.
    pub grpc_max_message_bytes: usize,
    /// `HEALTH_MAX_CONNECTIONS`: the most connections open on the health port at once.
    pub health_max_connections: usize,
    /// `HEALTH_HEADER_TIMEOUT`: how long the health port waits for a request's complete headers.
    pub health_header_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: the most connections open on the HTTP API port at once.
    pub http_max_connections: usize,
    /// `HTTP_HEADER_TIMEOUT`: how long the HTTP API port waits for a request's complete headers.
    pub http_header_timeout: Duration,
    /// `HTTP_MAX_BODY_BYTES`: the largest HTTP API request body.
    pub http_max_body_bytes: usize,
    /// `MAX_UNNAMED_CONSUMERS_PER_STREAM`: the most unnamed consumers one stream may have.
    pub max_unnamed_consumers_per_stream: usize,
    /// `SUBSCRIBER_BUFFER_EVENTS`: the most events a live subscriber may have waiting.
    pub subscriber_buffer: usize,
    /// Fetched events in flight: `FETCH_MAX_IN_FLIGHT_PER_CONSUMER` (`per_consumer`) and
    /// `FETCH_MAX_IN_FLIGHT` (`total`).
    pub fetch: FetchLimits,
    /// `REQUEST_DEFAULT_TIMEOUT`: how long a request waits when neither it nor its call says.
    pub request_default_timeout: Duration,
    /// `REQUEST_MAX_TIMEOUT`: the longest a request waits.
    pub request_max_timeout: Duration,
    /// `REQUEST_STREAM_MAX_IN_FLIGHT`: the most requests of one RequestStream in flight.
    pub request_stream_max_in_flight: usize,
    /// `RESPOND_MAX_IN_FLIGHT`: the most requests one processor may hold.
    pub respond_max_in_flight: u32,
    /// `RESPOND_MAX_WAITING`: the most requests waiting for a busy queue group on this server.
    pub respond_max_waiting: usize,
}

impl Limits {
    /// The requesters' limits, as core takes them.
    pub fn requests(&self) -> jetway_core::requests::RequestLimits {
        jetway_core::requests::RequestLimits {
            default_timeout: self.request_default_timeout,
            max_timeout: self.request_max_timeout,
        }
    }

    /// The processors' limits, as core takes them.
    pub fn responders(&self) -> jetway_core::requests::ResponderLimits {
        jetway_core::requests::ResponderLimits {
            max_in_flight: self.respond_max_in_flight,
            max_waiting: self.respond_max_waiting,
            default_timeout: self.request_default_timeout,
        }
    }
}

impl Default for Limits {
    /// The declared defaults.
    fn default() -> Self {
        Config::default().limits
    }
}

/// `NATS_URL`'s value. Shown (`Debug`, `Display`) with its credentials masked; [`NatsUrl::as_str`]
/// is the value itself, for the connection.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrl(String);

impl NatsUrl {
    /// The URL list as configured, credentials included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for NatsUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_credentials(&self.0))
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_credentials(&self.0))
    }
}

/// TLS on every listener (see `infra::tls`): off unless a certificate and its key are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `TLS_CERT_FILE`: the server's certificate chain, PEM.
    pub cert_file: Option<PathBuf>,
    /// `TLS_KEY_FILE`: its private key, PEM.
    pub key_file: Option<PathBuf>,
    /// `TLS_CLIENT_CA_FILE`: the CA certificates that issue client certificates; set, the gRPC and
    /// HTTP API ports require one (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// OpenTelemetry settings. Export is on only when an OTLP endpoint is set and the SDK is not
/// disabled; without it the server records no spans at all.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `OTEL_SDK_DISABLED`: `true` turns tracing off even with an endpoint.
    pub disabled: bool,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`: the OTLP/gRPC
    /// collector, e.g. `http://jaeger:4317`.
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: Sampler,
    /// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs added to every span's resource.
    pub resource_attributes: Vec<(String, String)>,
}

impl TelemetryConfig {
    /// The collector endpoint, if traces are to be exported.
    pub fn export_endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref().filter(|_| !self.disabled)
    }
}

impl Default for TelemetryConfig {
    /// The declared defaults.
    fn default() -> Self {
        Config::default().telemetry
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
    /// The configuration of an empty environment: every declared default.
    fn default() -> Self {
        // Every test that loads a configuration checks that the declared defaults parse.
        Self::from_iter([]).unwrap_or_else(|error| panic!("a declared default is invalid: {error}"))
    }
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
        reason = "loading can fail, which `FromIterator` cannot express"
    )]
    pub fn from_iter<I: IntoIterator<Item = (String, String)>>(
        vars: I,
    ) -> Result<Self, ConfigError> {
        Self::load(vars, Vec::new())
    }

    /// Applies every variable of [`VARIABLES`] in order, its value or else its default, to a
    /// configuration with every field at zero.
    fn load<I: IntoIterator<Item = (String, String)>>(
        vars: I,
        mut problems: Vec<ConfigProblem>,
    ) -> Result<Self, ConfigError> {
        // envy reads the pairs as it reads an environment; only Jetway's own names, spelled
        // exactly, are handed to it, so unrelated variables are never inspected and a
        // differently-cased spelling (envy lowercases names) cannot shadow ours.
        let ours = vars
            .into_iter()
            .filter(|(name, value)| !value.is_empty() && known_variable(name).is_some());
        let read: BTreeMap<String, String> = match envy::from_iter(ours) {
            Ok(read) => read,
            Err(error) => {
                problems.push(ConfigProblem::Unreadable {
                    reason: error.to_string(),
                });
                return Err(ConfigError { problems });
            }
        };
        let given: BTreeMap<&'static str, String> = read
            .into_iter()
            .filter_map(|(name, value)| Some((known_variable(&name.to_ascii_uppercase())?, value)))
            .collect();
        let mut config = Self::zero();
        let mut rejected = Vec::new();
        for variable in VARIABLES {
            let value = given.get(variable.name).filter(|_| {
                !variable
                    .overridden_by
                    .is_some_and(|o| given.contains_key(o))
            });
            let Some(value) = value.map(String::as_str).or(match variable.default {
                DefaultValue::Value(value) => Some(value),
                DefaultValue::Absent(_) => None,
            }) else {
                continue;
            };
            // Only an alias needs to know whether it changed what its primary set.
            let before = variable.alias_of.map(|_| config.clone());
            if let Err(reason) = (variable.access.apply)(&mut config, value) {
                rejected.push(variable.name);
                problems.push(ConfigProblem::Invalid {
                    variable: variable.name,
                    value: variable.shown(value),
                    reason,
                });
            } else if let Some(primary) = variable.alias_of
                && let Some(primary_value) = given.get(primary)
                && !rejected.contains(&primary)
                && before.is_some_and(|before| before != config)
            {
                problems.push(ConfigProblem::Conflict {
                    variable: primary,
                    value: primary_value.clone(),
                    alias: variable.name,
                    alias_value: value.to_owned(),
                });
            }
        }
        for (variable, requires) in REQUIRES {
            if given.contains_key(variable) && !given.contains_key(requires) {
                problems.push(ConfigProblem::Requires { variable, requires });
            }
        }
        let mut logins = NATS_LOGINS.iter().filter(|name| given.contains_key(*name));
        let url_login = config
            .nats_url
            .as_ref()
            .and_then(|url| NatsServers::parse(&url.0).ok())
            .is_some_and(|servers| servers.has_credentials())
            .then_some("NATS_URL");
        if let (Some(first), Some(second)) =
            (url_login.or_else(|| logins.next().copied()), logins.next())
        {
            problems.push(ConfigProblem::Exclusive { first, second });
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Every field at zero or empty, for [`VARIABLES`] to fill in.
    fn zero() -> Self {
        Self {
            nats_url: None,
            nats_security: NatsSecurity::default(),
            grpc_port: 0,
            health_port: 0,
            http_port: 0,
            http_cors: Cors {
                origins: AllowedOrigins::None,
                max_age: Duration::ZERO,
            },
            listen_host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            auth_file: None,
            grpc_reflection: false,
            development: false,
            log_filter: String::new(),
            nats_publish_async_max_pending: 0,
            worker_threads: None,
            nats_server_bin: None,
            nats_local_port: 0,
            nats_data_dir: PathBuf::new(),
            nats_sync_interval: SyncInterval::default(),
            nats_stop_timeout: Duration::ZERO,
            telemetry: TelemetryConfig {
                disabled: false,
                endpoint: None,
                service_name: String::new(),
                sampler: Sampler {
                    parent_based: false,
                    root: RootSampler::AlwaysOff,
                },
                resource_attributes: Vec::new(),
            },
            tls: TlsConfig::default(),
            limits: Limits {
                grpc_max_connections: 0,
                grpc_idle_timeout: Duration::ZERO,
                grpc_max_streams_per_connection: 0,
                grpc_max_streaming_calls: 0,
                grpc_max_message_bytes: 0,
                health_max_connections: 0,
                health_header_timeout: Duration::ZERO,
                http_max_connections: 0,
                http_header_timeout: Duration::ZERO,
                http_max_body_bytes: 0,
                max_unnamed_consumers_per_stream: 0,
                subscriber_buffer: 0,
                fetch: FetchLimits {
                    per_consumer: 0,
                    total: 0,
                },
                request_default_timeout: Duration::ZERO,
                request_max_timeout: Duration::ZERO,
                request_stream_max_in_flight: 0,
                respond_max_in_flight: 0,
                respond_max_waiting: 0,
            },
        }
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

    /// Logs every effective value in one `info` event, `NAME="value"` for each variable of
    /// [`VARIABLES`], so an operator can see what the server runs with. Credentials in `NATS_URL`
    /// are masked.
    pub fn log_summary(&self) {
        tracing::info!(values = %self.summary(), "configuration");
    }

    fn summary(&self) -> String {
        VARIABLES
            .iter()
            .filter_map(|variable| {
                let shown = variable.shown(&(variable.access.show?)(self));
                Some(format!("{}={shown:?}", variable.name))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A configuration value as the summary log shows it.
trait Summary {
    fn summary(&self) -> String;
}

macro_rules! summary_by_display {
    ($($type:ty),*) => {
        $(impl Summary for $type {
            fn summary(&self) -> String {
                self.to_string()
            }
        })*
    };
}
summary_by_display!(
    u16,
    u32,
    usize,
    bool,
    String,
    IpAddr,
    SyncInterval,
    AllowedOrigins
);

impl Summary for Duration {
    fn summary(&self) -> String {
        format!("{self:?}")
    }
}

impl Summary for Option<Secret> {
    fn summary(&self) -> String {
        match self {
            Some(_) => "***".to_owned(),
            None => "unset".to_owned(),
        }
    }
}

impl Summary for Option<String> {
    fn summary(&self) -> String {
        self.clone().unwrap_or_else(|| "unset".to_owned())
    }
}

impl Summary for Option<PathBuf> {
    fn summary(&self) -> String {
        self.as_ref()
            .map_or_else(|| "unset".to_owned(), |path| path.display().to_string())
    }
}

impl Summary for PathBuf {
    fn summary(&self) -> String {
        self.display().to_string()
    }
}

impl Summary for Sampler {
    fn summary(&self) -> String {
        let root = match self.root {
            RootSampler::AlwaysOn => "always_on",
            RootSampler::AlwaysOff => "always_off",
            RootSampler::Ratio(_) => "traceidratio",
        };
        let prefix = if self.parent_based {
            "parentbased_"
        } else {
            ""
        };
        format!("{prefix}{root}")
    }
}

impl Summary for Vec<(String, String)> {
    fn summary(&self) -> String {
        self.iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn known_variable(name: &str) -> Option<&'static str> {
    KNOWN_VARIABLES.iter().copied().find(|known| *known == name)
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

/// A secret; the summary shows it as `***`.
fn parse_secret(value: &str) -> Result<Option<Secret>, String> {
    Ok(Some(Secret::new(value)))
}

/// A file's path; whether the file can be read is checked where it is loaded.
fn parse_file(value: &str) -> Result<Option<PathBuf>, String> {
    Ok(Some(PathBuf::from(value)))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("is not a boolean (true, false, 1 or 0)".to_owned()),
    }
}

fn parse_endpoint(value: &str) -> Result<String, String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value.to_owned())
    } else {
        Err("is not an http:// or https:// URL of an OTLP/gRPC collector".to_owned())
    }
}

/// An `OTEL_TRACES_SAMPLER` name; `traceidratio` starts at a ratio of 1, which
/// `OTEL_TRACES_SAMPLER_ARG` then sets.
fn parse_sampler(value: &str) -> Result<Sampler, String> {
    let (parent_based, root) = match value.strip_prefix("parentbased_") {
        Some(root) => (true, root),
        None => (false, value),
    };
    let root = match root {
        "always_on" => RootSampler::AlwaysOn,
        "always_off" => RootSampler::AlwaysOff,
        "traceidratio" => RootSampler::Ratio(1.0),
        _ => {
            return Err(
                "is not one of always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off, parentbased_traceidratio"
                    .to_owned(),
            );
        }
    };
    Ok(Sampler { parent_based, root })
}

fn parse_attributes(value: &str) -> Result<Vec<(String, String)>, String> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err("is not a comma-separated list of key=value pairs".to_owned()),
        })
        .collect()
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
pub(crate) fn go_duration_nanos(text: &str) -> Option<f64> {
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
    /// A variable set without another one it needs.
    #[error("{variable} is set but {requires} is not: set both")]
    Requires {
        /// The variable that is set.
        variable: &'static str,
        /// The one it needs.
        requires: &'static str,
    },
    /// Two ways of authenticating to NATS.
    #[error(
        "{first} and {second} both authenticate to NATS: set one (credentials in NATS_URL count as one)"
    )]
    Exclusive {
        /// The first one set.
        first: &'static str,
        /// Another one set.
        second: &'static str,
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
        assert_eq!(config.http_cors.origins, AllowedOrigins::None);
        assert_eq!(config.http_cors.max_age, Duration::from_secs(600));
    }

    #[test]
    fn declared_defaults_are_core_defaults() {
        use jetway_core::{
            consumers::DEFAULT_MAX_UNNAMED_PER_STREAM,
            fetch::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_PER_CONSUMER},
            live::DEFAULT_SUBSCRIBER_BUFFER,
        };
        let limits = Limits::default();
        assert_eq!(
            limits.max_unnamed_consumers_per_stream,
            DEFAULT_MAX_UNNAMED_PER_STREAM
        );
        assert_eq!(limits.subscriber_buffer, DEFAULT_SUBSCRIBER_BUFFER);
        assert_eq!(
            limits.fetch.per_consumer,
            DEFAULT_MAX_IN_FLIGHT_PER_CONSUMER
        );
        assert_eq!(limits.fetch.total, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(TelemetryConfig::default(), Config::default().telemetry);
        assert_eq!(TelemetryConfig::default().service_name, "jetway-server");
    }

    #[test]
    fn names_are_declared_once() {
        let names: std::collections::BTreeSet<_> = KNOWN_VARIABLES.iter().collect();
        assert_eq!(names.len(), VARIABLES.len());
        assert_eq!(KNOWN_VARIABLES.len(), VARIABLES.len());
        for variable in VARIABLES {
            for other in [variable.alias_of, variable.overridden_by]
                .into_iter()
                .flatten()
            {
                assert!(KNOWN_VARIABLES.contains(&other), "{other}");
            }
        }
    }

    #[test]
    fn the_traces_endpoint_overrides_the_generic_one_unchecked() {
        let config = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ])
        .unwrap();
        assert_eq!(
            config.telemetry.export_endpoint(),
            Some("http://traces:4317")
        );
        let message = error_message(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "traces:4317")]);
        assert!(
            message.contains(r#"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="traces:4317" is not an http"#),
            "{message}"
        );
    }

    #[test]
    fn the_sampler_ratio_applies_to_traceidratio_only() {
        let ratio = load(&[
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ])
        .unwrap();
        assert_eq!(
            ratio.telemetry.sampler,
            Sampler {
                parent_based: false,
                root: RootSampler::Ratio(0.5)
            }
        );
        let unset = load(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")]).unwrap();
        assert_eq!(unset.telemetry.sampler.root, RootSampler::Ratio(1.0));
        let other = load(&[
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ])
        .unwrap();
        assert_eq!(other.telemetry.sampler.root, RootSampler::AlwaysOff);
    }

    #[test]
    fn the_summary_shows_every_variable_with_credentials_masked() {
        let config = load(&[
            ("NATS_URL", "nats://app:s3cret@host:4222"),
            ("GRPC_IDLE_TIMEOUT", "90s"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ])
        .unwrap();
        let summary = config.summary();
        assert!(!summary.contains("s3cret"), "{summary}");
        for expected in [
            r#"NATS_URL="nats://***@host:4222""#,
            r#"GRPC_PORT="8080""#,
            r#"GRPC_IDLE_TIMEOUT="90s""#,
            r#"RUST_LOG="info,async_nats=warn""#,
            r#"OTEL_EXPORTER_OTLP_ENDPOINT="http://traces:4317""#,
            r#"OTEL_TRACES_SAMPLER="parentbased_always_on""#,
            r#"OTEL_TRACES_SAMPLER_ARG="unused""#,
        ] {
            assert!(
                summary.contains(expected),
                "{expected} missing from {summary}"
            );
        }
        let shown = summary.split("=\"").count() - 1;
        let hidden = ["HEALTH_SERVER_PORT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];
        assert_eq!(shown, VARIABLES.len() - hidden.len(), "{summary}");
        for name in hidden {
            assert!(!summary.contains(&format!("{name}=")), "{summary}");
        }
    }

    #[test]
    fn the_markdown_table_has_a_row_per_variable() {
        let table = markdown_table();
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), VARIABLES.len());
        assert!(
            rows[1].starts_with("| `GRPC_PORT` | `8080` | gRPC port"),
            "{table}"
        );
        assert!(rows[0].starts_with("| `NATS_URL` | unset | "), "{table}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let vars: Vec<(&str, &str)> = KNOWN_VARIABLES.iter().map(|v| (*v, "")).collect();
        assert_eq!(load(&vars).unwrap(), Config::default());
    }

    #[test]
    fn every_variable_is_parsed() {
        let config = load(&[
            ("NATS_USER", "jetway"),
            ("NATS_PASSWORD", "pw"),
            ("NATS_TLS_CA_FILE", "/certs/nats-ca.pem"),
            ("NATS_TLS_CERT_FILE", "/certs/nats.pem"),
            ("NATS_TLS_KEY_FILE", "/certs/nats-key.pem"),
            ("TLS_CERT_FILE", "/certs/server.pem"),
            ("TLS_KEY_FILE", "/certs/server-key.pem"),
            ("TLS_CLIENT_CA_FILE", "/certs/ca.pem"),
            ("NATS_URL", "nats://nats.example:4223"),
            ("GRPC_PORT", "9090"),
            ("HEALTH_PORT", "9091"),
            ("LISTEN_HOST", "::1"),
            ("AUTH_FILE", "/etc/jetway/clients.json"),
            ("GRPC_REFLECTION", "false"),
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
            ("HTTP_PORT", "9092"),
            ("HTTP_MAX_CONNECTIONS", "4"),
            ("HTTP_HEADER_TIMEOUT", "2s"),
            ("HTTP_MAX_BODY_BYTES", "2048"),
            (
                "HTTP_CORS_ALLOWED_ORIGINS",
                "https://app.example.com, http://localhost:3000",
            ),
            ("HTTP_CORS_MAX_AGE", "1h"),
            ("REQUEST_DEFAULT_TIMEOUT", "2s"),
            ("REQUEST_MAX_TIMEOUT", "30s"),
            ("REQUEST_STREAM_MAX_IN_FLIGHT", "7"),
            ("RESPOND_MAX_IN_FLIGHT", "8"),
            ("RESPOND_MAX_WAITING", "9"),
        ])
        .unwrap();
        assert_eq!(
            config,
            Config {
                nats_url: Some(NatsUrl("nats://nats.example:4223".to_owned())),
                nats_security: NatsSecurity {
                    user: Some("jetway".into()),
                    password: Some(Secret::new("pw")),
                    tls_ca_file: Some("/certs/nats-ca.pem".into()),
                    tls_cert_file: Some("/certs/nats.pem".into()),
                    tls_key_file: Some("/certs/nats-key.pem".into()),
                    ..NatsSecurity::default()
                },
                grpc_port: 9090,
                health_port: 9091,
                http_port: 9092,
                http_cors: Cors {
                    origins: AllowedOrigins::List(vec![
                        "https://app.example.com".to_owned(),
                        "http://localhost:3000".to_owned(),
                    ]),
                    max_age: Duration::from_secs(3600),
                },
                listen_host: "::1".parse().unwrap(),
                auth_file: Some(PathBuf::from("/etc/jetway/clients.json")),
                grpc_reflection: false,
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
                tls: TlsConfig {
                    cert_file: Some("/certs/server.pem".into()),
                    key_file: Some("/certs/server-key.pem".into()),
                    client_ca_file: Some("/certs/ca.pem".into()),
                },
                limits: Limits {
                    grpc_max_connections: 10,
                    grpc_idle_timeout: Duration::from_secs(90),
                    grpc_max_streams_per_connection: 100,
                    grpc_max_streaming_calls: 20,
                    grpc_max_message_bytes: 65536,
                    health_max_connections: 3,
                    health_header_timeout: Duration::from_millis(250),
                    http_max_connections: 4,
                    http_header_timeout: Duration::from_secs(2),
                    http_max_body_bytes: 2048,
                    max_unnamed_consumers_per_stream: 20,
                    subscriber_buffer: 1,
                    fetch: FetchLimits {
                        per_consumer: 50,
                        total: 200,
                    },
                    request_default_timeout: Duration::from_secs(2),
                    request_max_timeout: Duration::from_secs(30),
                    request_stream_max_in_flight: 7,
                    respond_max_in_flight: 8,
                    respond_max_waiting: 9,
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
                "HTTP_CORS_ALLOWED_ORIGINS",
                "https://a.example/",
                r#"HTTP_CORS_ALLOWED_ORIGINS="https://a.example/" "https://a.example/" is not an origin"#,
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
    fn a_tls_file_without_its_partner_is_refused_naming_both() {
        let cert_only = error_message(&[("TLS_CERT_FILE", "/certs/server.pem")]);
        assert!(
            cert_only.contains("TLS_CERT_FILE is set but TLS_KEY_FILE is not"),
            "{cert_only}"
        );
        let key_only = error_message(&[("TLS_KEY_FILE", "/certs/server-key.pem")]);
        assert!(
            key_only.contains("TLS_KEY_FILE is set but TLS_CERT_FILE is not"),
            "{key_only}"
        );
        let ca_only = error_message(&[("TLS_CLIENT_CA_FILE", "/certs/ca.pem")]);
        assert!(
            ca_only.contains("TLS_CLIENT_CA_FILE is set but TLS_CERT_FILE is not"),
            "{ca_only}"
        );
        let both = load(&[
            ("TLS_CERT_FILE", "/certs/server.pem"),
            ("TLS_KEY_FILE", "/certs/server-key.pem"),
        ])
        .unwrap();
        assert_eq!(
            both.tls,
            TlsConfig {
                cert_file: Some("/certs/server.pem".into()),
                key_file: Some("/certs/server-key.pem".into()),
                client_ca_file: None,
            }
        );
        assert_eq!(
            Config::default().tls,
            TlsConfig::default(),
            "off by default"
        );
    }

    #[test]
    fn one_way_of_authenticating_to_nats_at_most_and_secrets_never_shown() {
        let two = error_message(&[("NATS_TOKEN", "t0ken"), ("NATS_CREDS_FILE", "/a.creds")]);
        assert!(
            two.contains("NATS_CREDS_FILE and NATS_TOKEN both authenticate to NATS"),
            "{two}"
        );
        let url = error_message(&[
            ("NATS_URL", "nats://alice:s3cret@host:4222"),
            ("NATS_NKEY_SEED_FILE", "/seed"),
        ]);
        assert!(
            url.contains("NATS_URL and NATS_NKEY_SEED_FILE both authenticate"),
            "{url}"
        );
        let user_only = error_message(&[("NATS_USER", "alice")]);
        assert!(
            user_only.contains("NATS_USER is set but NATS_PASSWORD is not"),
            "{user_only}"
        );
        let config = load(&[
            ("NATS_URL", "nats://alice:s3cret@host:4222"),
            ("NATS_TLS_CA_FILE", "/ca.pem"),
        ])
        .unwrap();
        let token = load(&[("NATS_TOKEN", "t0ken")]).unwrap();
        let user = load(&[("NATS_USER", "alice"), ("NATS_PASSWORD", "pa55word")]).unwrap();
        for shown in [
            format!("{config:?}"),
            config.summary(),
            format!("{token:?}"),
            token.summary(),
            format!("{user:?}"),
            user.summary(),
        ] {
            for secret in ["s3cret", "t0ken", "pa55word"] {
                assert!(!shown.contains(secret), "{secret} shown: {shown}");
            }
        }
        assert_eq!(token.nats_security.token, Some(Secret::new("t0ken")));
        assert!(token.summary().contains(r#"NATS_TOKEN="***""#));
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
