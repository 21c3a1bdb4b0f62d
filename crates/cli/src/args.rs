//! The command line, as clap parses it, and the parsers of its values (start positions,
//! durations and headers).

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use jetway_client::{DEFAULT_URL, StartPosition};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Talk to a Jetway server: manage streams, publish, consume, read, tail, handle dead letters, use
/// key-value stores, and send and answer requests.
#[derive(Debug, Parser)]
#[command(name = "jetway", version)]
pub(crate) struct Cli {
    /// The Jetway server's gRPC URL (https:// for TLS).
    #[arg(long, env = "JETWAY_URL", default_value = DEFAULT_URL, global = true)]
    pub server: String,

    /// A bearer token of the server's AUTH_FILE, sent on every call.
    #[arg(long, env = "JETWAY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// TLS: CA certificate(s) (PEM) that the server's certificate must chain to; needs an
    /// https:// --server. Without it, https:// trusts the system's roots.
    #[arg(long, env = "JETWAY_TLS_CA", global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// mTLS: this client's certificate (PEM), for a server with TLS_CLIENT_CA_FILE; needs
    /// --tls-key.
    #[arg(
        long,
        env = "JETWAY_TLS_CERT",
        global = true,
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// mTLS: the private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "JETWAY_TLS_KEY",
        global = true,
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Declare, list, inspect, purge and delete streams.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Publish a message, or each line of standard input, as windshift.test.v1.StringValue (or as
    /// raw bytes with --raw).
    Publish(PublishArgs),
    /// Read events with a durable consumer, printing and acking each; a known consumer name
    /// resumes where it left off.
    Consume(ConsumeArgs),
    /// Print a stream's stored events, oldest first, and exit once caught up (no consumer, no
    /// acks).
    Read(ReadArgs),
    /// Print the events stored from now on, with a temporary consumer.
    Tail(TailArgs),
    /// List and redrive dead letters: the events consumers gave up on.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Read and write key-value stores.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Make credentials for the server's AUTH_FILE (works offline).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Write a development CA and server and client certificates into a directory, to try TLS
    /// and mTLS locally (not for production).
    DevCerts(DevCertsArgs),
    /// Send a request over NATS and print the reply (exit 2 when nothing answers in time).
    Request(RequestArgs),
    /// Answer the requests of some subjects until stopped, like `nats reply`: echo each request,
    /// or answer with a command's output.
    Reply(ReplyArgs),
}

/// Options of `jetway request`.
#[derive(Debug, Args)]
pub(crate) struct RequestArgs {
    /// The subject to send on (no wildcards).
    pub subject: String,
    /// The payload; without it, the request is empty.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// The media type of the payload, e.g. application/json.
    #[arg(long)]
    pub content_type: Option<String>,
    /// A custom header NAME=VALUE (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// How long to wait for the answer (e.g. 500ms, 5s).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

/// Options of `jetway reply`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("answer").required(true).args(["echo", "command"])))]
pub(crate) struct ReplyArgs {
    /// The subjects to serve, wildcards allowed.
    #[arg(required = true)]
    pub subjects: Vec<String>,
    /// The NATS queue group to join (default: one per subject).
    #[arg(long = "queue")]
    pub queue: Option<String>,
    /// How many requests to handle at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Answer each request with its own payload, content type and headers.
    #[arg(long)]
    pub echo: bool,
    /// Answer each request with the standard output of this shell command, run with the payload
    /// on standard input and the subject in $JETWAY_SUBJECT; a failing command fails the request.
    #[arg(long)]
    pub command: Option<String>,
}

/// Options of `jetway dev-certs`.
#[derive(Debug, Args)]
pub(crate) struct DevCertsArgs {
    /// Where to write the files (created if missing).
    pub dir: PathBuf,
    /// The client certificate's name (its common name and DNS subject alternative name).
    #[arg(long, default_value = "client")]
    pub client_name: String,
}

/// `jetway auth ...`
#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Print a new random token once, and the hash to add to the client's "tokens" in AUTH_FILE.
    Token {
        /// The client the token is for (its "id" in AUTH_FILE).
        client_id: String,
    },
    /// Read a secret from standard input and print its argon2id hash, for the client's "secret"
    /// in AUTH_FILE.
    SecretHash,
}

/// `jetway stream ...`
#[derive(Debug, Subcommand)]
pub(crate) enum StreamCommand {
    /// Create a stream, or update it to exactly these options (an omitted limit is removed).
    Ensure(StreamEnsureArgs),
    /// List every stream: events, bytes, consumers and subjects.
    Ls,
    /// Show a stream's configuration, state and event count per subject.
    Info {
        /// The stream.
        name: String,
        /// Count only the subjects matching this filter.
        #[arg(short = 't', long = "subject")]
        subject: Option<String>,
    },
    /// Delete a stream with its events and consumers.
    Rm {
        /// The stream.
        name: String,
        /// Delete it even if it is internal to Jetway (JETWAY_ADVISORIES, KV_<store>).
        #[arg(long)]
        force: bool,
    },
    /// Remove events from a stream: all, those on some subjects, or all but the newest few.
    Purge {
        /// The stream.
        name: String,
        /// Only events on subjects matching this filter.
        #[arg(short = 't', long = "subject")]
        subject: Option<String>,
        /// Keep this many of the newest (matching) events.
        #[arg(long)]
        keep: Option<u64>,
        /// Purge it even if it is internal to Jetway (JETWAY_ADVISORIES, KV_<store>).
        #[arg(long)]
        force: bool,
    },
}

/// Options of `jetway stream ensure`.
#[derive(Debug, Args)]
pub(crate) struct StreamEnsureArgs {
    /// The stream's name (letters, digits, `_` and `-`).
    pub name: String,
    /// A subject the stream captures, wildcards allowed (repeatable).
    #[arg(long = "subject", short = 't', required = true)]
    pub subjects: Vec<String>,
    /// Remove events older than this (e.g. 90s, 30m, 24h, 7d).
    #[arg(long, value_parser = parse_duration)]
    pub max_age: Option<Duration>,
    /// Keep at most this many events.
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Keep at most this many events per subject.
    #[arg(long)]
    pub max_events_per_subject: Option<u64>,
    /// Keep at most this many bytes.
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// The largest event accepted, in bytes.
    #[arg(long)]
    pub max_event_size: Option<u32>,
    /// Where events are kept; it cannot change after creation.
    #[arg(long, value_enum)]
    pub storage: Option<Storage>,
    /// How many NATS servers keep a copy.
    #[arg(long)]
    pub replicas: Option<u32>,
    /// How long an idempotency key is remembered (default 2m).
    #[arg(long, value_parser = parse_duration)]
    pub dedup_window: Option<Duration>,
}

/// `--storage`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Storage {
    /// On disk.
    File,
    /// In memory.
    Memory,
}

/// Options of `jetway publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The subject to publish on.
    #[arg(short = 't', long = "subject")]
    pub subject: String,
    /// The message; without it, each line of standard input is published.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Idempotency key; with standard input, line N gets `<key>-<N>`.
    #[arg(long)]
    pub key: Option<String>,
    /// Publish the bytes as they are (not as a StringValue), with --content-type.
    #[arg(long)]
    pub raw: bool,
    /// With --raw, the media type of the bytes, e.g. application/json.
    #[arg(long, requires = "raw")]
    pub content_type: Option<String>,
    /// A custom header NAME=VALUE, stored with the event (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// With --create, the stream to create.
    #[command(flatten)]
    pub target: StreamTarget,
}

/// Options of `jetway consume`.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// The durable consumer's name: a new name starts at --from, a known one resumes.
    #[arg(short = 'n', long = "name")]
    pub consumer: String,
    /// The subject to read, wildcards allowed.
    #[arg(short = 't', long = "subject")]
    pub subject: String,
    /// Where a new consumer starts: start, end, seq:ID (an event id) or time:TIME (RFC 3339).
    #[arg(long, default_value = "start", value_parser = parse_start)]
    pub from: StartPosition,
    /// Exit after this many events (0: only create or update the consumer).
    #[arg(long)]
    pub count: Option<u64>,
    /// Delivery policy: deliver an event at most this many times.
    #[arg(long)]
    pub max_deliveries: Option<u32>,
    /// Delivery policy: processing timeouts per delivery, e.g. 1s,5s,30s (the last repeats).
    #[arg(long, value_delimiter = ',', value_parser = parse_duration)]
    pub backoff: Vec<Duration>,
    /// Delivery policy: the stream for events given up on (made if missing).
    #[arg(long = "dead-letter", value_name = "STREAM")]
    pub dead_letter: Option<String>,
    /// The stream to read.
    #[command(flatten)]
    pub target: StreamTarget,
}

/// Which stream holds a subject's events.
#[derive(Debug, Args)]
pub(crate) struct StreamTarget {
    /// The stream that captures the subject (default: the stream whose subjects match it).
    #[arg(long)]
    pub stream: Option<String>,
    /// If no stream captures the subject, create one named --stream, or after the subject's first
    /// token, capturing `<token>` and `<token>.>`.
    #[arg(long)]
    pub create: bool,
}

/// Options of `jetway read`.
#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The stream to read.
    pub stream: String,
    /// Where to start: start, end, seq:ID (an event id) or time:TIME (RFC 3339).
    #[arg(long, default_value = "start", value_parser = parse_start)]
    pub from: StartPosition,
    /// Only events on subjects matching this.
    #[arg(short = 't', long = "subject")]
    pub subject: Option<String>,
    /// Print at most this many events.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

/// `jetway dlq ...`
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters, oldest first.
    Ls(DlqLsArgs),
    /// Publish dead letters again on their original subjects, and remove them.
    Redrive(DlqRedriveArgs),
}

/// Options of `jetway dlq ls`.
#[derive(Debug, Args)]
pub(crate) struct DlqLsArgs {
    /// The dead-letter stream (default: every dead-letter stream).
    #[arg(long)]
    pub dlq: Option<String>,
    /// Only dead letters of events from this stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only dead letters from this consumer.
    #[arg(long)]
    pub consumer: Option<String>,
    /// At most this many per dead-letter stream.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

/// Options of `jetway dlq redrive`: ids or `--all`, one of them.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").args(["ids", "all"]).required(true)))]
pub(crate) struct DlqRedriveArgs {
    /// The dead letters, by id (as `jetway dlq ls` shows them).
    pub ids: Vec<u64>,
    /// Every dead letter (narrowed by --stream and --consumer).
    #[arg(long)]
    pub all: bool,
    /// The dead-letter stream (default: the only one; with --all, every one).
    #[arg(long)]
    pub dlq: Option<String>,
    // These narrow --all; ids are exact already. (`requires = "all"` would not do: a flag's
    // implicit `false` satisfies it.)
    /// With --all, only dead letters of events from this stream.
    #[arg(long, conflicts_with = "ids")]
    pub stream: Option<String>,
    /// With --all, only dead letters from this consumer.
    #[arg(long, conflicts_with = "ids")]
    pub consumer: Option<String>,
    /// With --all, at most this many per dead-letter stream.
    #[arg(long, conflicts_with = "ids", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

/// Options of `jetway tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The stream to read.
    pub stream: String,
    /// Only events on subjects matching this.
    #[arg(short = 't', long = "subject", default_value = ">")]
    pub subject: String,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

/// `jetway kv ...`; values are windshift.test.v1.StringValue.
#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Print the value of a key.
    Get {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// Store a value (the store is created if it does not exist).
    Set {
        /// The store.
        store: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Only if the key has no value.
        #[arg(long, conflicts_with = "revision")]
        create_only: bool,
        /// Only if this is the key's latest revision (compare-and-set; 0: never written).
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Delete a key.
    Del {
        /// The store.
        store: String,
        /// The key.
        key: String,
        /// Only if this is the key's latest revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Print changes as they happen, starting with the latest value of each matching key.
    Watch {
        /// The store.
        store: String,
        /// Keys to watch: `*` matches one token, a last `>` the rest; none means every key.
        #[arg(default_value = "")]
        pattern: String,
        /// Start with every stored revision instead of the latest.
        #[arg(long, conflicts_with = "after")]
        history: bool,
        /// Start after this revision (to resume).
        #[arg(long)]
        after: Option<u64>,
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Parses `--from`: `start`, `end`, `seq:<id>` or `time:<RFC 3339>`.
pub(crate) fn parse_start(value: &str) -> Result<StartPosition, String> {
    match value.split_once(':') {
        None if value == "start" => Ok(StartPosition::Start),
        None if value == "end" => Ok(StartPosition::End),
        Some(("seq", id)) => id
            .parse()
            .map(StartPosition::Offset)
            .map_err(|_| format!("seq:{id} needs an event id (a positive integer)")),
        Some(("time", time)) => OffsetDateTime::parse(time, &Rfc3339)
            .map(|time| StartPosition::Time(SystemTime::from(time)))
            .map_err(|e| format!("time:{time} is not an RFC 3339 time: {e}")),
        _ => Err(format!(
            "{value:?} is not start, end, seq:<id> or time:<RFC 3339>"
        )),
    }
}

/// Parses a duration: a whole number and a unit, `ms`, `s`, `m`, `h` or `d` (e.g. `90s`, `7d`).
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{value:?} needs a unit: ms, s, m, h or d"))?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} does not start with a number"))?;
    let seconds_per_unit = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{value:?} has unit {unit:?}; use ms, s, m, h or d")),
    };
    number
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{value:?} is too long"))
}

/// Parses `--header`: `NAME=VALUE`, split at the first `=`. The server checks the name.
pub(crate) fn parse_header(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{value:?} is not NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("start"), Ok(StartPosition::Start));
        assert_eq!(parse_start("end"), Ok(StartPosition::End));
        assert_eq!(parse_start("seq:42"), Ok(StartPosition::Offset(42)));
        assert_eq!(
            parse_start("time:2024-07-12T10:11:12Z"),
            Ok(StartPosition::Time(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_720_779_072)
            ))
        );
        assert!(parse_start("seq:x").is_err());
        assert!(parse_start("time:yesterday").is_err());
        assert!(parse_start("middle").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn headers_parse_at_the_first_equals_sign() {
        assert_eq!(
            parse_header("published-by=checkout"),
            Ok(("published-by".into(), "checkout".into()))
        );
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_header("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_header("=value").is_err());
        assert!(parse_header("no-value").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
