//! The NATS connection every operation shares: it reconnects forever, publishes its state on a watch
//! channel (readiness and the delivery engine follow it), and answers "is JetStream usable now?".

use std::{path::PathBuf, sync::Arc, time::Duration};

use async_nats::{
    ConnectOptions, ServerAddr, Subject,
    jetstream::{self, AckKind},
};
use tokio::sync::{Semaphore, watch};

use crate::delivery::Deletions;
use crate::inbox::Inbox;
use crate::telemetry::metrics::NATS_CONNECTED;
use crate::{Error, error::Classify};

/// How long a readiness probe waits for JetStream to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a publish waits for JetStream's ack before it counts as timed out.
pub(crate) const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings for [`Nats::connect`]. Their `Debug` masks the credentials in the URL.
#[derive(Clone)]
pub struct ConnectSettings {
    /// The NATS server URL(s), comma-separated.
    pub url: String,
    /// The client name NATS shows in its monitoring.
    pub name: String,
    /// Most event publishes awaiting their JetStream ack at once, across every publish call; more
    /// wait for a slot. KV writes and dead-letter publishes have a window of the same size of their
    /// own.
    pub publish_max_pending: usize,
    /// Credentials and TLS for the link, beyond credentials in the URL.
    pub security: NatsSecurity,
}

impl std::fmt::Debug for ConnectSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSettings")
            .field("url", &redact_credentials(&self.url))
            .field("name", &self.name)
            .field("publish_max_pending", &self.publish_max_pending)
            .field("security", &self.security)
            .finish()
    }
}

/// A secret (a password, a token): its `Debug` and `Display` show `***`, so it cannot reach a log
/// or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How Jetway authenticates to NATS and secures the link, besides credentials in the URL. At
/// most one way of authenticating is set (the configuration checks it); files are read when
/// connecting, and an unreadable one fails [`Nats::connect`] naming it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsSecurity {
    /// A NATS `.creds` file: a user JWT and its nkey seed.
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A user name, with [`NatsSecurity::password`].
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<Secret>,
    /// A token.
    pub token: Option<Secret>,
    /// CA certificates (PEM) that the NATS servers' certificates must chain to; set, TLS is
    /// required.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for servers that verify clients; set, TLS is required.
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub tls_key_file: Option<PathBuf>,
}

impl NatsSecurity {
    /// True when any way of authenticating is set.
    pub fn authenticates(&self) -> bool {
        self.creds_file.is_some()
            || self.nkey_seed_file.is_some()
            || self.user.is_some()
            || self.token.is_some()
    }

    /// Adds the credentials and TLS settings to `options`. The reason of a failure names the file
    /// and never holds a secret.
    async fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, String> {
        if let Some(path) = &self.creds_file {
            readable("credentials file", path)?;
            options = options.credentials_file(path).await.map_err(|err| {
                format!(
                    "the credentials file {} is not valid: {err}",
                    path.display()
                )
            })?;
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = std::fs::read_to_string(path).map_err(|err| {
                format!("cannot read the nkey seed file {}: {err}", path.display())
            })?;
            let seed = seed.trim();
            // Checked here: async-nats would only fail at each connection attempt, for ever.
            if nkeys::KeyPair::from_seed(seed).is_err() {
                return Err(format!(
                    "the nkey seed file {} holds no valid nkey seed",
                    path.display()
                ));
            }
            options = options.nkey(seed.to_owned());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_owned());
        }
        if let Some(path) = &self.tls_ca_file {
            readable("TLS CA file", path)?;
            options = options
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            readable("TLS certificate file", cert)?;
            readable("TLS key file", key)?;
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    }
}

/// Fails naming `what` and `path` unless the file can be read: async-nats reads it only when it
/// connects, and would retry a broken one for ever.
fn readable(what: &str, path: &std::path::Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|err| format!("cannot read the NATS {what} {}: {err}", path.display()))
}

/// Why [`Nats::connect`] failed. Only a malformed URL fails: an unreachable server is retried.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {reason}")]
pub struct ConnectError {
    url: String,
    reason: String,
}

/// Masks the user-info part (`user:pass@`, `token@`) of each URL in a comma-separated NATS URL
/// list, for whatever shows a URL: logs and error messages end up in log storage.
///
/// The list is not split on `,` or `/` first: a password may hold either (unencoded, which also
/// makes the URL invalid, and an invalid URL is exactly what an error message shows). Each URL's
/// user info runs from its `://` (or the start of a list without schemes) to the last `@` before the
/// next URL's `://`, and all of it is masked; a path holding `@` is masked too, which costs nothing.
pub fn redact_credentials(urls: &str) -> String {
    let mut starts: Vec<usize> = urls.match_indices("://").map(|(i, _)| i + 3).collect();
    if starts.is_empty() {
        starts.push(0);
    }
    let mut masked = String::with_capacity(urls.len());
    let mut copied = 0;
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(urls.len(), |&next| next - 3);
        if let Some(at) = urls[start..end].rfind('@') {
            masked.push_str(&urls[copied..start]);
            masked.push_str("***");
            copied = start + at;
        }
    }
    masked.push_str(&urls[copied..]);
    masked
}

/// The servers of a NATS URL list, and the credentials their URLs carry.
///
/// async-nats ignores credentials in a URL (it authenticates only with what its options say) and
/// logs the server address, credentials and all, at debug level. So the credentials are taken out
/// of the URLs here and handed to async-nats as options: every server, discovered ones included,
/// gets them, and no address it logs holds a secret.
#[derive(Debug, Clone)]
pub struct NatsServers {
    /// The servers, without credentials.
    pub addrs: Vec<ServerAddr>,
    credentials: Option<Credentials>,
}

/// What a URL's user-info part means, as in the NATS clients: `user:password@`, or `token@`.
#[derive(Clone, PartialEq, Eq)]
enum Credentials {
    UserPassword { user: String, password: String },
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Credentials::Token(_) => f.write_str("Token(***)"),
        }
    }
}

impl NatsServers {
    /// Reads a comma-separated NATS URL list, as [`Nats::connect`] does; a configuration can check
    /// one with it and report a bad one with its other problems. Entries with credentials must all
    /// carry the same ones, which then apply to every entry. The reason never repeats the URL (it
    /// may hold credentials).
    pub fn parse(urls: &str) -> Result<NatsServers, String> {
        let mut addrs = Vec::new();
        let mut credentials: Option<(usize, Credentials)> = None;
        for (i, url) in urls.split(',').enumerate() {
            let entry = i + 1;
            let (addr, found) = split_credentials(url.trim())
                .map_err(|reason| format!("is not a NATS URL list (like nats://host:4222,nats://other:4222): entry {entry}: {reason}"))?;
            addrs.push(addr);
            match (&credentials, found) {
                (_, None) => {}
                (None, Some(found)) => credentials = Some((entry, found)),
                (Some((_, known)), Some(found)) if *known == found => {}
                (Some((first, _)), Some(_)) => {
                    return Err(format!(
                        "entry {entry} carries other credentials than entry {first}: Jetway authenticates to every server alike"
                    ));
                }
            }
        }
        Ok(NatsServers {
            addrs,
            credentials: credentials.map(|(_, credentials)| credentials),
        })
    }

    /// True when the URLs carry credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Adds the credentials, if any, to `options`.
    fn authenticate(&self, options: ConnectOptions) -> ConnectOptions {
        match self.credentials.clone() {
            Some(Credentials::UserPassword { user, password }) => {
                options.user_and_password(user, password)
            }
            Some(Credentials::Token(token)) => options.token(token),
            None => options,
        }
    }
}

/// Parses one URL and takes its credentials out.
fn split_credentials(url: &str) -> Result<(ServerAddr, Option<Credentials>), String> {
    let addr = url.parse::<ServerAddr>().map_err(|err| err.to_string())?;
    if addr.username().is_none() && addr.password().is_none() {
        return Ok((addr, None));
    }
    let mut url = addr.into_inner();
    let decode = |part: &str, what: &str| {
        percent_decode(part).ok_or_else(|| format!("its {what} is not UTF-8 once percent-decoded"))
    };
    let credentials = match (url.username(), url.password()) {
        ("", _) => return Err("it has a password but no user name".to_owned()),
        (token, None) => Credentials::Token(decode(token, "token")?),
        (user, Some(password)) => Credentials::UserPassword {
            user: decode(user, "user name")?,
            password: decode(password, "password")?,
        },
    };
    url.set_username("")
        .and_then(|()| url.set_password(None))
        .map_err(|()| "its credentials cannot be separated from the address".to_owned())?;
    let addr = ServerAddr::from_url(url).map_err(|err| err.to_string())?;
    Ok((addr, Some(credentials)))
}

/// Decodes `%XX` escapes, as URLs carry reserved characters in credentials; `None` if the result
/// is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            }
            _ => None,
        };
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// A shared handle on the NATS connection and its JetStream context. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Nats {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    connected: watch::Receiver<bool>,
    /// One permit per publish ack awaited; see [`ConnectSettings::publish_max_pending`].
    publish_window: Arc<Semaphore>,
    /// The deletion advisories every delivery subscription of this connection watches.
    deletions: Deletions,
    /// Where JetStream's acks of single event publishes arrive.
    acks: Inbox,
}

impl Nats {
    /// Connects to NATS. Returns at once, even when the server is down: the client keeps retrying in
    /// the background, forever, and [`Nats::connected`] follows the connection state.
    pub async fn connect(settings: &ConnectSettings) -> Result<Nats, ConnectError> {
        let (state_tx, connected) = watch::channel(false);
        let options = ConnectOptions::new()
            .name(&settings.name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let state_tx = state_tx.clone();
                async move {
                    match &event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            metrics::gauge!(NATS_CONNECTED).set(1.0);
                            state_tx.send_replace(true);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("lost the NATS connection; reconnecting");
                            metrics::gauge!(NATS_CONNECTED).set(0.0);
                            state_tx.send_replace(false);
                        }
                        async_nats::Event::Closed => {
                            tracing::info!("NATS connection closed");
                            metrics::gauge!(NATS_CONNECTED).set(0.0);
                            state_tx.send_replace(false);
                        }
                        async_nats::Event::SlowConsumer(_) => tracing::warn!(%event, "NATS"),
                        _ => tracing::info!(%event, "NATS"),
                    }
                }
            });
        let failed = |reason: String| ConnectError {
            url: redact_credentials(&settings.url),
            reason,
        };
        let servers = NatsServers::parse(&settings.url).map_err(failed)?;
        let options = settings.security.apply(options).await.map_err(failed)?;
        let client = servers
            .authenticate(options)
            .connect(servers.addrs)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let window = settings.publish_max_pending.max(1);
        // Event publishes, single and pipelined, bypass the context and hold a permit of
        // `publish_window`; the context's own window bounds the rest (KV writes, dead letters).
        let jetstream = jetstream::ContextBuilder::new()
            .max_ack_inflight(window)
            .backpressure_on_inflight(true)
            .timeout(PUBLISH_ACK_TIMEOUT)
            .build(client.clone());
        Ok(Nats {
            deletions: Deletions::new(client.clone()),
            acks: Inbox::new(client.clone(), metrics::Counter::noop()),
            client,
            jetstream,
            connected,
            publish_window: Arc::new(Semaphore::new(window)),
        })
    }

    /// The core NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The deletion advisories of this connection, shared by its delivery subscriptions.
    pub(crate) fn deletions(&self) -> &Deletions {
        &self.deletions
    }

    /// The inbox of this connection's single event publishes.
    pub(crate) fn acks(&self) -> &Inbox {
        &self.acks
    }

    /// The window of event publishes awaiting their JetStream ack, shared by every publish path.
    pub(crate) fn publish_window(&self) -> &Arc<Semaphore> {
        &self.publish_window
    }

    /// Sends one acknowledgement (ack, nak, progress, term) of a delivery to JetStream. Refused at
    /// once while the connection is down: async-nats queues commands until it reconnects, and once
    /// its queue is full a publish waits for NATS, holding up the caller (a session, and with it
    /// its shutdown). Callers report a refusal as a temporary failure; the event stays in flight.
    pub(crate) async fn send_ack(&self, reply: Subject, kind: AckKind) -> Result<(), Error> {
        if !self.is_connected() {
            return Err(Error::unavailable("NATS is not connected"));
        }
        self.client
            .publish(reply, kind.into())
            .await
            .map_err(Error::unavailable)
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A receiver that changes whenever the connection goes up or down from now on. The current
    /// state counts as seen: a clone of the kept receiver would otherwise report the first
    /// `Connected` (sent after this handle was made, and never seen by it) as a fresh change, and
    /// the delivery engine would take it for a reconnect and pull a second window.
    pub fn connected(&self) -> watch::Receiver<bool> {
        let mut connected = self.connected.clone();
        connected.mark_unchanged();
        connected
    }

    /// Checks that NATS is connected and JetStream answers an account-info request.
    pub async fn check_ready(&self) -> Result<(), Error> {
        if !self.is_connected() {
            return Err(Error::unavailable("not connected to NATS"));
        }
        match tokio::time::timeout(READY_TIMEOUT, self.jetstream.query_account()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.classify()),
            Err(_) => Err(Error::unavailable("JetStream did not answer in time")),
        }
    }

    /// Flushes what is buffered and closes the connection after in-flight requests finish.
    pub async fn drain(&self) {
        if let Err(err) = self.client.drain().await {
            tracing::warn!(%err, "draining the NATS connection failed");
        }
    }

    /// The largest message the server accepts, headers included.
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_masked_in_the_summary() {
        assert_eq!(
            redact_credentials("nats://user:secret@a:4222,tls://token@b:4223,nats://c:4224"),
            "nats://***@a:4222,tls://***@b:4223,nats://c:4224"
        );
        assert_eq!(redact_credentials("u:p@host:4222"), "***@host:4222");
        // Unencoded `/` and `,` in a password (an invalid URL, shown in the error about it).
        assert_eq!(
            redact_credentials("nats://alice:pa/ss@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(
            redact_credentials("nats://alice:pa,ss@host:4222,nats://bob:x,y/z@other:4222"),
            "nats://***@host:4222,nats://***@other:4222"
        );
        assert_eq!(
            redact_credentials("nats://a:4222,nats://b:4222"),
            "nats://a:4222,nats://b:4222"
        );
    }

    #[test]
    fn url_lists_are_read_entry_by_entry_without_repeating_them() {
        let servers = NatsServers::parse("nats://a:4222, tls://b:4223,c").expect("a valid list");
        assert_eq!(servers.addrs.len(), 3);
        assert_eq!(servers.credentials, None);
        let reason = NatsServers::parse("nats://app:s3cret@host:42220x").unwrap_err();
        assert!(reason.contains("entry 1"), "{reason}");
        assert!(!reason.contains("s3cret"), "{reason}");
        assert!(
            NatsServers::parse("nats://a:4222,nats://b:x")
                .unwrap_err()
                .contains("entry 2")
        );
    }

    #[test]
    fn credentials_leave_the_addresses_and_apply_to_every_server() {
        let servers = NatsServers::parse(
            "nats://alice:p%40ss%2Fw%3Ard@a:4222,nats://b:4223,alice:p%40ss%2Fw%3Ard@c",
        )
        .expect("a valid list");
        assert_eq!(
            servers.credentials,
            Some(Credentials::UserPassword {
                user: "alice".into(),
                password: "p@ss/w:rd".into()
            })
        );
        let addrs: Vec<&str> = servers.addrs.iter().map(ServerAddr::as_url_str).collect();
        assert_eq!(addrs, ["nats://a:4222", "nats://b:4223", "nats://c"]);
        assert!(!format!("{servers:?}").contains("p@ss"), "{servers:?}");

        let token = NatsServers::parse("tls://s3cr%C3%A9t@a:4222").expect("a token URL");
        assert_eq!(
            token.credentials,
            Some(Credentials::Token("s3cr\u{e9}t".into()))
        );
        assert_eq!(token.addrs[0].as_url_str(), "tls://a:4222");
        assert!(!format!("{token:?}").contains("s3cr"), "{token:?}");
    }

    #[test]
    fn conflicting_or_broken_credentials_are_refused_without_repeating_them() {
        for (urls, expected) in [
            (
                "nats://alice:one@a,nats://alice:two@b",
                "entry 2 carries other credentials than entry 1",
            ),
            (
                "nats://a,nats://tok@b,nats://alice:tok@c",
                "entry 3 carries other credentials than entry 2",
            ),
            (
                "nats://:s3cret@a",
                "entry 1: it has a password but no user name",
            ),
            (
                "nats://alice:s3cret%FF@a",
                "entry 1: its password is not UTF-8",
            ),
        ] {
            let reason = NatsServers::parse(urls).unwrap_err();
            assert!(reason.contains(expected), "{urls}: {reason}");
            assert!(
                !reason.contains("s3cret") && !reason.contains("tok"),
                "{reason}"
            );
        }
        assert_eq!(percent_decode("a%2"), Some("a%2".into()));
        assert_eq!(percent_decode("%zz%41"), Some("%zzA".into()));
    }
}
