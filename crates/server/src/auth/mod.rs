//! Authentication and authorization of gRPC calls and HTTP API requests, on when `AUTH_FILE` names
//! a clients file ([`file`]) and off otherwise (every call allowed, as before).
//!
//! [`Access::admit`] serves both protocols: it finds the call in the one table ([`rpcs::RULES`]; a
//! call without an entry is refused), lets open ones through (gRPC health, `/openapi.json`), and
//! otherwise authenticates the call (`authorization: Bearer <token>`, `authorization: Basic
//! base64(id:secret)`, or a client certificate's name) and hands the handler a [`Caller`].
//! [`AuthLayer`] is its gRPC wrapper, [`crate::http::auth`] its HTTP one. Handlers check the
//! resource they decoded with [`Caller::permit`] ([`Caller::check`] in gRPC terms), and filter
//! lists with [`Caller::may`]. Failures answer UNAUTHENTICATED or PERMISSION_DENIED (401 and 403
//! over HTTP), are counted in `/metrics` by reason, and are logged with the client id and peer
//! address; credentials are never logged or echoed.
//!
//! The file is polled each second ([`Access::watch`]); a file that no longer reads keeps the
//! previous version in force and the reason is logged. A new version applies to calls already
//! open too: every check a [`Caller`] makes looks the client up again in the version in force (by
//! the credential it authenticated with), so a removed client or a changed credential answers
//! UNAUTHENTICATED and a narrowed permission PERMISSION_DENIED; and a streaming call holds a
//! [`Grant`], which checks again at each reload what the stream was opened for and ends it when
//! that is gone.

pub mod certificate;
pub mod file;
pub mod limits;
pub mod pattern;
pub mod rpcs;

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use jetway_core::{
    Error, ErrorKind,
    credentials::{SecretHash, TokenHash},
    fetch::ClientQuota,
    streams::{StreamSource, StreamSpec},
};
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Status,
    body::Body,
    codegen::http::{self, header::AUTHORIZATION},
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use crate::{
    auth::{
        file::{Client, Clients},
        limits::{SessionSlot, Usage},
        rpcs::{Need, Rule},
    },
    grpc::status::ToStatus,
};

/// The metric counting refused calls, by `reason`: `no_credentials`, `bad_credentials`,
/// `revoked` (a call open when a reload removed its client or credential), `permission_denied`,
/// `unknown_method`, `limit`.
pub const AUTH_FAILURES: &str = "jetway_auth_failures_total";

/// How often the clients file is looked at for a change (its modification time and length).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// What a client may be allowed to do; the clients file has one allow-list per permission but
/// [`Permission::See`], which any of read, consume and manage grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Publish on a subject.
    Publish,
    /// Answer requests sent on a subject (`jetway.requests.v1` Respond).
    Respond,
    /// Consume from a stream's consumer (`stream/consumer`), or subscribe live to a stream.
    Consume,
    /// Read a stream without a consumer (ranges, single events).
    Read,
    /// Create, change, delete and purge streams and consumers; redrive dead letters.
    Manage,
    /// Read a key-value store.
    StateRead,
    /// Write a key-value store (and create it).
    StateWrite,
    /// Know a stream or consumer exists: any of read, consume and manage on it.
    See,
}

impl Permission {
    /// The name of the allow-list in the clients file.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Publish => "publish",
            Permission::Respond => "respond",
            Permission::Consume => "consume",
            Permission::Read => "read",
            Permission::Manage => "manage",
            Permission::StateRead => "state_read",
            Permission::StateWrite => "state_write",
            Permission::See => "read, consume or manage",
        }
    }
}

/// The clients file in force, shared by the layer, the handlers and the reload task.
#[derive(Clone, Default)]
pub struct Access {
    /// `None`: authentication is off.
    shared: Option<Arc<Shared>>,
}

struct Shared {
    path: PathBuf,
    clients: RwLock<Version>,
    /// The number of the version in force, for streams to hear of reloads.
    reloaded: tokio::sync::watch::Sender<u64>,
    /// Modification time and length of the version read last.
    stamp: Mutex<Option<(SystemTime, u64)>>,
    /// Secrets already verified with argon2, as SHA-256 of the secret, by the stored hash they
    /// matched (so a changed secret never matches an old entry): argon2 is slow on purpose, and a
    /// client sends its secret with every call. Emptied on reload.
    verified: Mutex<HashMap<String, TokenHash>>,
    /// argon2 checks running at once: each takes 19 MiB and a core for tens of milliseconds, so a
    /// flood of wrong secrets waits here instead of taking the memory and every blocking thread.
    argon2: tokio::sync::Semaphore,
    usage: Usage,
}

/// One version of the clients file, numbered from 0 in the order they were put in force.
#[derive(Clone)]
struct Version {
    number: u64,
    clients: Arc<Clients>,
}

impl Access {
    /// Authentication off: every call is allowed.
    pub fn open() -> Access {
        Access::default()
    }

    /// Authentication on, with the clients file at `path`; an unreadable or invalid file is an
    /// error (at start, Jetway stops with it).
    pub fn load(path: &Path) -> Result<Access, String> {
        let stamp = stamp(path);
        let clients = read(path)?;
        Ok(Access {
            shared: Some(Arc::new(Shared {
                path: path.to_owned(),
                clients: RwLock::new(Version {
                    number: 0,
                    clients: Arc::new(clients),
                }),
                reloaded: tokio::sync::watch::Sender::new(0),
                stamp: Mutex::new(stamp),
                verified: Mutex::default(),
                argon2: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(1, usize::from),
                ),
                usage: Usage::default(),
            })),
        })
    }

    /// True when calls must authenticate.
    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Reloads the file whenever its modification time or length changes, until `shutdown`.
    pub async fn watch(self, shutdown: CancellationToken) {
        let Some(shared) = self.shared else { return };
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            shared.reload_if_changed();
        }
    }

    fn version(shared: &Shared) -> Version {
        shared
            .clients
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Who the credentials name (`Ok(None)` when authentication is off): the `authorization`
    /// header, else the client certificate's names.
    async fn authenticate(
        &self,
        header: Option<http::HeaderValue>,
        certificate: Option<PeerCertificateNames>,
    ) -> Result<Option<Authenticated>, Failure> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let Version { number, clients } = Access::version(shared);
        let found = |client: &Arc<Client>, proof: Proof| Authenticated {
            client: client.clone(),
            proof: Arc::new(proof),
            version: number,
        };
        if let Some(header) = header {
            let header = header.to_str().map_err(|_| Failure::Bad)?;
            let (scheme, value) = header.split_once(' ').ok_or(Failure::Bad)?;
            let value = value.trim();
            if scheme.eq_ignore_ascii_case("bearer") {
                let presented = TokenHash::of(value);
                return clients
                    .by_token_hash(&presented)
                    .map(|client| Some(found(client, Proof::Token(presented.clone()))))
                    .ok_or(Failure::Bad);
            }
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = STANDARD.decode(value).map_err(|_| Failure::Bad)?;
                let decoded = String::from_utf8(decoded).map_err(|_| Failure::Bad)?;
                let (id, secret) = decoded.split_once(':').ok_or(Failure::Bad)?;
                let Some((client, hash)) = clients.with_secret(id) else {
                    // The same argon2 work as a wrong secret, so the answer's timing does not
                    // tell which client ids exist. Never remembered: its result means nothing.
                    argon2(shared, SecretHash::stand_in(), secret).await;
                    return Err(Failure::Bad);
                };
                return if verify_secret(shared, hash, secret).await {
                    Ok(Some(found(client, Proof::Secret(hash.to_string()))))
                } else {
                    Err(Failure::Bad)
                };
            }
            return Err(Failure::Bad);
        }
        if let Some(PeerCertificateNames(names)) = certificate {
            return clients
                .by_certificate(&names)
                .map(|client| Some(found(client, Proof::Certificate(names.clone()))))
                .ok_or(Failure::Bad);
        }
        Err(Failure::Missing)
    }
}

/// A client found by its credentials, and how.
struct Authenticated {
    client: Arc<Client>,
    proof: Arc<Proof>,
    /// The number of the file version it was found in.
    version: u64,
}

/// The credential a call authenticated with, kept (never the secret itself) so that the call can
/// find its client again in a reloaded file, and only while the credential still names it.
#[derive(Debug)]
enum Proof {
    /// The hash of the bearer token.
    Token(TokenHash),
    /// The stored hash of the client's secret that the presented one matched: a changed secret
    /// no longer matches.
    Secret(String),
    /// The names of the client certificate.
    Certificate(Arc<Vec<String>>),
}

/// The names of the client certificate the connection presented (its DNS subject alternative
/// names and subject common name), when the TLS listener verified one; read from the TLS
/// connection info that `CallLayer` leaves on each request.
#[derive(Debug, Clone)]
pub struct PeerCertificateNames(pub Arc<Vec<String>>);

/// What one look at the clients file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reload {
    /// Same modification time and length as the version in force.
    Unchanged,
    /// The new version is in force.
    Reloaded,
    /// The new version does not read; the previous one stays in force.
    Kept,
}

impl Shared {
    fn reload_if_changed(&self) -> Reload {
        let now = stamp(&self.path);
        let mut last = lock(&self.stamp);
        if now == *last {
            return Reload::Unchanged;
        }
        *last = now;
        drop(last);
        match read(&self.path) {
            Ok(clients) => {
                let number = {
                    let mut version = self
                        .clients
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    *version = Version {
                        number: version.number + 1,
                        clients: Arc::new(clients),
                    };
                    version.number
                };
                lock(&self.verified).clear();
                self.reloaded.send_replace(number);
                tracing::info!(path = %self.path.display(), "AUTH_FILE reloaded");
                Reload::Reloaded
            }
            Err(why) => {
                tracing::error!(
                    path = %self.path.display(),
                    %why,
                    "AUTH_FILE could not be reloaded; the previous version stays in force"
                );
                Reload::Kept
            }
        }
    }
}

/// The peer address as logs show it.
fn shown(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "-".to_owned(), |peer| peer.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<Clients, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("AUTH_FILE {}: cannot be read: {e}", path.display()))?;
    Clients::parse(&text).map_err(|why| format!("AUTH_FILE {}: {why}", path.display()))
}

/// Checks `secret` against `hash`: once with argon2 (off the async threads), then against the
/// remembered SHA-256 of the secret that passed, in constant time.
async fn verify_secret(shared: &Arc<Shared>, hash: &SecretHash, secret: &str) -> bool {
    let presented = TokenHash::of(secret);
    let stored = hash.to_string();
    if lock(&shared.verified)
        .get(&stored)
        .is_some_and(|known| known.matches(&presented))
    {
        return true;
    }
    let ok = argon2(shared, hash, secret).await;
    if ok {
        lock(&shared.verified).insert(stored, presented);
    }
    ok
}

/// Checks `secret` against `hash` with argon2, within the limit of checks at once and off the
/// async threads.
async fn argon2(shared: &Shared, hash: &SecretHash, secret: &str) -> bool {
    let Ok(_permit) = shared.argon2.acquire().await else {
        return false;
    };
    let (hash, secret) = (hash.clone(), secret.to_owned());
    tokio::task::spawn_blocking(move || hash.verify(&secret))
        .await
        .unwrap_or(false)
}

/// Why a call did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Missing,
    /// Any credentials that name no client: an unknown token, an unknown client id and a wrong
    /// secret all get the same answer.
    Bad,
}

impl Failure {
    /// Its reason in `/metrics` and the message the client gets.
    fn explained(self) -> (&'static str, &'static str) {
        match self {
            Failure::Missing => (
                "no_credentials",
                "no credentials: send `authorization: Bearer <token>` or `authorization: \
                 Basic base64(<client id>:<secret>)`",
            ),
            Failure::Bad => ("bad_credentials", "the credentials name no client"),
        }
    }
}

/// UNAUTHENTICATED for a call whose client a reload of the file removed, or whose credential no
/// longer names it; logged and counted.
fn revoked(id: &str, peer: Option<SocketAddr>) -> Error {
    metrics::counter!(AUTH_FAILURES, "reason" => "revoked").increment(1);
    tracing::warn!(client = id, peer = %shown(peer), "a reloaded AUTH_FILE no longer authenticates an open call");
    Error::new(
        ErrorKind::Unauthenticated,
        format!(
            "client {id:?} no longer authenticates with these credentials: AUTH_FILE changed; \
             call again with valid credentials"
        ),
    )
}

/// The client making a call, as handlers see it: put in the request's extensions by
/// [`AuthLayer`].
#[derive(Clone)]
pub struct Caller {
    /// `None`: authentication is off (or the call is open to all).
    client: Option<Arc<Client>>,
    /// How the client authenticated, to find it again after a reload; with `client`.
    proof: Option<Arc<Proof>>,
    /// The number of the file version `client` is from.
    version: u64,
    rule: Option<&'static Rule>,
    peer: Option<SocketAddr>,
    access: Access,
}

impl Caller {
    /// The caller of `request`. A request that did not pass [`AuthLayer`] has none and is refused
    /// (fail closed).
    pub fn of<T>(request: &Request<T>) -> Result<Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!("a call reached its handler without the authentication layer");
                Status::permission_denied("the call was not authenticated")
            })
    }

    /// The client's id, if authentication is on.
    pub fn id(&self) -> Option<&str> {
        self.client.as_deref().map(|client| client.id.as_str())
    }

    /// The client as the file in force describes it: the one the call authenticated as, or, after
    /// a reload, the entry its credential names now. UNAUTHENTICATED when that is no entry, or
    /// another client's.
    fn current(&self) -> Result<Option<Arc<Client>>, Error> {
        let (Some(client), Some(proof), Some(shared)) =
            (&self.client, &self.proof, &self.access.shared)
        else {
            return Ok(self.client.clone());
        };
        let Version { number, clients } = Access::version(shared);
        if number == self.version {
            return Ok(Some(client.clone()));
        }
        let now = match proof.as_ref() {
            Proof::Token(hash) => clients.by_token_hash(hash),
            Proof::Secret(stored) => clients
                .with_secret(&client.id)
                .filter(|(_, hash)| hash.to_string() == *stored)
                .map(|(now, _)| now),
            Proof::Certificate(names) => clients.by_certificate(names),
        };
        match now {
            Some(now) if now.id == client.id => Ok(Some(now.clone())),
            _ => Err(revoked(&client.id, self.peer)),
        }
    }

    /// The number of the file version in force; 0 without authentication.
    fn version_now(&self) -> u64 {
        self.access
            .shared
            .as_ref()
            .map_or(0, |shared| *shared.reloaded.borrow())
    }

    /// True if the caller may use `permission` on `resource` (without logging: for filtering
    /// lists).
    pub fn may(&self, permission: Permission, resource: &str) -> bool {
        match self.current() {
            Err(_) => false,
            Ok(None) => true,
            Ok(Some(client)) => self.declares(permission) && client.allows(permission, resource),
        }
    }

    fn declares(&self, permission: Permission) -> bool {
        matches!(self.rule, Some(Rule { need: Need::Permissions(needed, _) | Need::OnPath(needed, _), .. }) if needed.contains(&permission))
            || matches!(
                self.rule,
                Some(Rule {
                    need: Need::Authenticated,
                    ..
                })
            )
    }

    /// PERMISSION_DENIED naming `permission` and `resource`, unless the caller may; each denial is
    /// logged and counted. For gRPC handlers: [`Caller::permit`] as a [`Status`].
    pub fn check(&self, permission: Permission, resource: &str) -> Result<(), Status> {
        self.permit(permission, resource).map_err(|e| e.to_status())
    }

    /// A PERMISSION_DENIED error naming `permission` and `resource`, unless the caller may; each
    /// denial is logged and counted. Both APIs' one check.
    pub fn permit(&self, permission: Permission, resource: &str) -> Result<(), Error> {
        // A client a reload removed is told so, not that it lacks a permission.
        self.current()?;
        if self.may(permission, resource) {
            return Ok(());
        }
        let id = self.id().unwrap_or_default();
        if !self.declares(permission) {
            tracing::error!(
                method = self.rule.map(|r| r.method),
                permission = permission.name(),
                "a handler checked a permission its entry in auth::rpcs::RULES does not declare"
            );
        }
        Err(denied(
            id,
            self.peer,
            format!(
                "client {id:?} lacks the {} permission on {resource:?}",
                permission.name()
            ),
        ))
    }

    /// A [`Grant`] of `permission` on `resource` for a streaming call: checked now (as
    /// [`Caller::check`]) and again at each reload of the clients file.
    pub fn hold(&self, permission: Permission, resource: &str) -> Result<Grant, Status> {
        Grant::new(self, [(permission, resource.to_owned())]).map_err(|e| e.to_status())
    }

    /// [`Caller::check`] for a call that checks many resources, most of them the same (a
    /// PublishStream's subjects): a resource equal to the last one allowed, under the same version
    /// of the clients file, is let through without matching the allow-lists again; after a reload
    /// the next one is checked in full. `last` lives no longer than the call, and keeps its buffer:
    /// a stream that rotates over many subjects allocates nothing per event here.
    pub fn check_repeated(
        &self,
        permission: Permission,
        resource: &str,
        last: &mut Allowed,
    ) -> Result<(), Status> {
        // Read before the check: a reload during it leaves an older number, which checks again.
        let version = self.version_now();
        if last
            .0
            .as_ref()
            .is_some_and(|(v, p, r)| *v == version && *p == permission && r == resource)
        {
            return Ok(());
        }
        self.check(permission, resource)?;
        match &mut last.0 {
            Some((v, p, r)) => {
                (*v, *p) = (version, permission);
                r.clear();
                r.push_str(resource);
            }
            None => last.0 = Some((version, permission, resource.to_owned())),
        }
        Ok(())
    }

    /// EnsureStream's check, on both APIs: manage on the stream, publish on each subject it
    /// captures (on its name when it captures none), read on the stream it mirrors or each it
    /// aggregates, so a client cannot make a stream that captures or copies what it may not see.
    pub fn permit_stream(&self, spec: &StreamSpec) -> Result<(), Error> {
        self.permit(Permission::Manage, &spec.name)?;
        match &spec.source {
            Some(StreamSource::Subjects(subjects)) if subjects.is_empty() => {
                self.permit(Permission::Publish, &spec.name)
            }
            Some(StreamSource::Subjects(subjects)) => subjects
                .iter()
                .try_for_each(|subject| self.permit(Permission::Publish, subject)),
            Some(StreamSource::Mirror(source)) => self.permit(Permission::Read, &source.name),
            Some(StreamSource::Aggregate(sources)) => sources
                .iter()
                .try_for_each(|source| self.permit(Permission::Read, &source.name)),
            None => Ok(()),
        }
    }

    /// Logs an audit line for a management action that succeeded.
    pub fn audit(&self, action: &str, resource: &str) {
        tracing::info!(
            target: "jetway::audit",
            client = self.id().unwrap_or("-"),
            peer = %shown(self.peer),
            action,
            resource,
            "audit"
        );
    }

    /// One of the client's Events sessions, or RESOURCE_EXHAUSTED naming `events_sessions` when it
    /// has its limit open.
    pub fn open_events_session(&self) -> Result<Option<SessionSlot>, Status> {
        let (Some(client), Some(shared)) = (&self.client, &self.access.shared) else {
            return Ok(None);
        };
        let limit = client.limits.events_sessions;
        match shared.usage.of(&client.id).open_session(limit) {
            Some(slot) => Ok(Some(slot)),
            None => {
                metrics::counter!(AUTH_FAILURES, "reason" => "limit").increment(1);
                Err(Error::new(
                    ErrorKind::LimitReached,
                    format!(
                        "client {:?} has {limit} Events streams open, its events_sessions limit \
                         in AUTH_FILE; close one or raise the limit",
                        client.id
                    ),
                )
                .to_status())
            }
        }
    }

    /// The client's `fetched_in_flight` quota, for Fetch to reserve within; `None` without
    /// authentication. Over it, Fetch answers RESOURCE_EXHAUSTED naming it.
    pub fn fetch_quota(&self) -> Option<ClientQuota> {
        let client = self.client.as_ref()?;
        Some(ClientQuota {
            id: client.id.as_str().into(),
            max_in_flight: client.limits.fetched_in_flight,
            limit: limits::FETCHED_IN_FLIGHT,
        })
    }

    /// Counts a Fetch refused for the client's `fetched_in_flight` among the failures, as the
    /// other limits are; passes every error on.
    pub fn counted(err: Error) -> Error {
        if err.limit() == Some(limits::FETCHED_IN_FLIGHT) {
            metrics::counter!(AUTH_FAILURES, "reason" => "limit").increment(1);
        }
        err
    }

    /// Takes `events` from the client's publish rate, or RESOURCE_EXHAUSTED naming
    /// `publish_per_second` when it is spent. For gRPC handlers: [`Caller::spend_publishes`] as a
    /// [`Status`].
    pub fn take_publishes(&self, events: usize) -> Result<(), Status> {
        self.spend_publishes(events).map_err(|e| e.to_status())
    }

    /// Takes `events` from the client's publish rate, or a RESOURCE_EXHAUSTED error naming
    /// `publish_per_second` when it is spent. Both APIs' one limit.
    pub fn spend_publishes(&self, events: usize) -> Result<(), Error> {
        let (Some(client), Some(shared)) = (&self.client, &self.access.shared) else {
            return Ok(());
        };
        // Without a rate there is nothing to count: PublishStream asks for every event.
        if client.limits.publish_per_second == 0 {
            return Ok(());
        }
        let events = u32::try_from(events).unwrap_or(u32::MAX);
        if shared
            .usage
            .of(&client.id)
            .take_publishes(&client.limits, events)
        {
            return Ok(());
        }
        metrics::counter!(AUTH_FAILURES, "reason" => "limit").increment(1);
        Err(Error::new(
            ErrorKind::LimitReached,
            format!(
                "client {:?} is over its publish_per_second limit in AUTH_FILE ({} events per \
                 second); retry later",
                client.id, client.limits.publish_per_second
            ),
        ))
    }
}

/// The last permission and resource one call was allowed, and under which version of the clients
/// file, for [`Caller::check_repeated`].
#[derive(Debug, Default)]
pub struct Allowed(Option<(u64, Permission, String)>);

/// What a streaming call was opened for, checked again each time the clients file is reloaded:
/// the stream ends when its client no longer authenticates or has lost one of these permissions.
pub struct Grant {
    caller: Caller,
    needs: Vec<(Permission, String)>,
    /// `None` without authentication: nothing is ever taken away.
    reloads: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Grant {
    /// Checks that `caller` may use each permission on its resource now (as [`Caller::permit`]),
    /// and keeps them for [`Grant::revoked`]. With no `needs`, only that the client still
    /// authenticates is checked again.
    pub fn new(
        caller: &Caller,
        needs: impl IntoIterator<Item = (Permission, String)>,
    ) -> Result<Grant, Error> {
        // Listening first: a reload between the check and the first wait is still heard.
        let reloads = caller
            .access
            .shared
            .as_ref()
            .map(|shared| shared.reloaded.subscribe());
        let grant = Grant {
            caller: caller.clone(),
            needs: needs.into_iter().collect(),
            reloads,
        };
        grant.check()?;
        Ok(grant)
    }

    fn check(&self) -> Result<(), Error> {
        self.caller.current()?;
        self.needs
            .iter()
            .try_for_each(|(permission, resource)| self.caller.permit(*permission, resource))
    }

    /// Waits for a reload of the clients file that takes the grant away, and answers why
    /// (UNAUTHENTICATED or PERMISSION_DENIED); never returns while it holds. Cancel-safe, for a
    /// `select!` in the stream's loop.
    pub async fn revoked(&mut self) -> Error {
        loop {
            let heard = match &mut self.reloads {
                Some(reloads) => reloads.changed().await.is_ok(),
                None => false,
            };
            if !heard {
                // No authentication, or the access is gone with the server.
                return std::future::pending().await;
            }
            if let Err(err) = self.check() {
                return err;
            }
        }
    }
}

fn denied(id: &str, peer: Option<SocketAddr>, message: String) -> Error {
    metrics::counter!(AUTH_FAILURES, "reason" => "permission_denied").increment(1);
    tracing::warn!(client = id, peer = %shown(peer), %message, "permission denied");
    Error::new(ErrorKind::PermissionDenied, message)
}

/// The tower layer that authenticates every gRPC call; see the module docs.
#[derive(Clone)]
pub struct AuthLayer {
    access: Access,
}

impl AuthLayer {
    /// A layer over `access`.
    pub fn new(access: Access) -> AuthLayer {
        AuthLayer { access }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            access: self.access.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    access: Access,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was ready serves this call (tower's rule for services moved into a
        // future); the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let access = self.access.clone();
        Box::pin(async move {
            let method = request.uri().path();
            let admitted = access
                .admit(
                    method,
                    rpcs::rule_of(method),
                    request.headers(),
                    request.extensions(),
                )
                .await;
            match admitted {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(err) => Ok(err.to_status().into_http()),
            }
        })
    }
}

impl Access {
    /// Authenticates a request (its `headers` and `extensions`), a call to `call` (an RPC's path,
    /// or an HTTP route's `METHOD /path`) whose entry in the table is `rule`, and returns its
    /// [`Caller`], or the
    /// UNAUTHENTICATED or PERMISSION_DENIED error that answers it. The one authentication of
    /// both APIs: the caller's protocol only wraps the error.
    ///
    /// The transport leaves the connection's info where tonic looks for it (gRPC's `CallLayer`,
    /// the HTTP API's server): the TLS info on a TLS connection, the TCP info on a plain one.
    pub async fn admit(
        &self,
        call: &str,
        rule: Option<&'static Rule>,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Caller, Error> {
        let tls = extensions.get::<TlsConnectInfo<TcpConnectInfo>>().cloned();
        let peer = match &tls {
            Some(tls) => tls.get_ref().remote_addr(),
            None => extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr),
        };
        if rule.is_some_and(|rule| rule.need == Need::Open) || !self.enabled() {
            return Ok(Caller {
                client: None,
                proof: None,
                version: 0,
                rule,
                peer,
                access: self.clone(),
            });
        }
        let header = headers.get(AUTHORIZATION).cloned();
        // An `authorization` header wins over the certificate, which is parsed only when there is none.
        let certificate = header
            .is_none()
            .then(|| tls.as_ref().and_then(TlsConnectInfo::peer_certs))
            .flatten()
            .and_then(|chain| PeerCertificateNames::of(&chain));
        let authenticated = match self.authenticate(header, certificate).await {
            Ok(authenticated) => authenticated,
            Err(failure) => {
                let (reason, message) = failure.explained();
                metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
                tracing::warn!(peer = %shown(peer), reason, "unauthenticated call");
                return Err(Error::new(ErrorKind::Unauthenticated, message));
            }
        };
        let id = authenticated
            .as_ref()
            .map_or("", |authenticated| authenticated.client.id.as_str());
        let Some(rule) = rule else {
            metrics::counter!(AUTH_FAILURES, "reason" => "unknown_method").increment(1);
            tracing::warn!(client = id, peer = %shown(peer), method = call, "permission denied: the method has no entry in the permission table");
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{call} has no entry in Jetway's permission table, so no client may call it"
                ),
            ));
        };
        let (client, proof, version) = match authenticated {
            Some(Authenticated {
                client,
                proof,
                version,
            }) => (Some(client), Some(proof), version),
            None => (None, None, 0),
        };
        Ok(Caller {
            client,
            proof,
            version,
            rule: Some(rule),
            peer,
            access: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_client(id: &str, token: &str) -> String {
        format!(
            r#"{{"clients": [{{"id": "{id}", "tokens": ["{}"]}}]}}"#,
            jetway_core::credentials::token_hash(token)
        )
    }

    #[test]
    fn a_broken_file_keeps_the_previous_version_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.json");
        std::fs::write(&path, one_client("first", "t1")).unwrap();
        let access = Access::load(&path).unwrap();
        let shared = access.shared.as_ref().unwrap();
        assert_eq!(shared.reload_if_changed(), Reload::Unchanged);

        std::fs::write(&path, r#"{"clients": [{"id": "first""#).unwrap();
        assert_eq!(shared.reload_if_changed(), Reload::Kept);
        assert_eq!(
            Access::version(shared).clients.by_token("t1").unwrap().id,
            "first"
        );

        std::fs::write(&path, one_client("second", "t2")).unwrap();
        assert_eq!(shared.reload_if_changed(), Reload::Reloaded);
        let clients = Access::version(shared).clients;
        assert!(clients.by_token("t1").is_none());
        assert_eq!(clients.by_token("t2").unwrap().id, "second");

        std::fs::remove_file(&path).unwrap();
        assert_eq!(shared.reload_if_changed(), Reload::Kept);
        assert_eq!(
            Access::version(shared).clients.by_token("t2").unwrap().id,
            "second"
        );
    }

    #[tokio::test]
    async fn a_secret_is_checked_by_its_hash_and_a_changed_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.json");
        let with_secret = |secret: &str| {
            format!(
                r#"{{"clients": [{{"id": "svc", "secret": "{}"}}]}}"#,
                jetway_core::credentials::secret_hash(secret).unwrap()
            )
        };
        std::fs::write(&path, with_secret("first secret")).unwrap();
        let access = Access::load(&path).unwrap();
        let shared = access.shared.as_ref().unwrap();
        let basic = |id: &str, secret: &str| {
            let value = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
            Some(http::HeaderValue::from_str(&value).unwrap())
        };
        let who = |header| async {
            access
                .authenticate(header, None)
                .await
                .map(|c| c.unwrap().client.id.clone())
        };
        // Twice: by argon2, then by the remembered hash.
        for _ in 0..2 {
            assert_eq!(who(basic("svc", "first secret")).await.unwrap(), "svc");
        }
        assert!(who(basic("svc", "wrong")).await.is_err());
        assert!(who(basic("other", "first secret")).await.is_err());

        std::fs::write(&path, with_secret("second secret!")).unwrap();
        assert_eq!(shared.reload_if_changed(), Reload::Reloaded);
        assert!(who(basic("svc", "first secret")).await.is_err());
        assert_eq!(who(basic("svc", "second secret!")).await.unwrap(), "svc");
    }

    #[tokio::test]
    async fn an_unknown_client_id_waits_for_argon2_like_a_wrong_secret() {
        use futures::FutureExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"clients": [{{"id": "svc", "secret": "{}"}}, {{"id": "tok", "tokens": ["{}"]}}]}}"#,
                jetway_core::credentials::secret_hash("the secret").unwrap(),
                jetway_core::credentials::token_hash("t"),
            ),
        )
        .unwrap();
        let access = Access::load(&path).unwrap();
        let shared = access.shared.as_ref().unwrap();
        let basic = |id: &str| {
            let value = format!("Basic {}", STANDARD.encode(format!("{id}:wrong")));
            Some(http::HeaderValue::from_str(&value).unwrap())
        };
        // With every argon2 check taken, an attempt that runs argon2 cannot be answered yet: a
        // known id with a wrong secret, an unknown id, and an id without a secret alike.
        let every_check = u32::try_from(shared.argon2.available_permits()).unwrap();
        let taken = shared.argon2.acquire_many(every_check).await.unwrap();
        let mut attempts: Vec<_> = ["svc", "nobody", "tok"]
            .into_iter()
            .map(|id| (id, access.authenticate(basic(id), None).boxed()))
            .collect();
        for (id, attempt) in &mut attempts {
            assert!(
                attempt.now_or_never().is_none(),
                "{id} was answered before argon2 ran"
            );
        }
        drop(taken);
        for (id, attempt) in attempts {
            // One failure, so one status code and message for all three.
            assert!(matches!(attempt.await, Err(Failure::Bad)), "{id}");
        }
    }

    /// A PublishStream caller that is `client` (`None`: authentication is off), without a file.
    fn publish_stream_caller(client: Option<Arc<Client>>) -> Caller {
        Caller {
            client,
            proof: None,
            version: 0,
            rule: rpcs::rule_of("/jetway.events.v1.EventsService/PublishStream"),
            peer: None,
            access: Access::open(),
        }
    }

    #[test]
    fn a_repeated_check_lets_through_only_the_last_resource_allowed() {
        let clients = Clients::parse(&format!(
            r#"{{"clients": [{{"id": "a", "tokens": ["{}"], "permissions": {{"publish": ["a.>"]}}}}]}}"#,
            jetway_core::credentials::token_hash("t")
        ))
        .unwrap();
        let caller = publish_stream_caller(clients.by_token("t").cloned());
        let mut last = Allowed::default();
        for subject in ["a.x", "a.x", "a.y", "a.x"] {
            caller
                .check_repeated(Permission::Publish, subject, &mut last)
                .unwrap();
        }
        for _ in 0..2 {
            let denied = caller
                .check_repeated(Permission::Publish, "b.x", &mut last)
                .unwrap_err();
            assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        }
        // What was allowed last stays the only shortcut: a different permission is checked.
        assert!(
            caller
                .check_repeated(Permission::Respond, "a.x", &mut last)
                .is_err()
        );
    }

    #[test]
    fn a_repeated_check_keeps_its_buffer_across_subjects() {
        let caller = publish_stream_caller(None);
        let mut last = Allowed::default();
        let buffer = |last: &Allowed| last.0.as_ref().map(|(_, _, r)| (r.as_ptr(), r.clone()));
        caller
            .check_repeated(Permission::Publish, "grow.999", &mut last)
            .unwrap();
        let (first, _) = buffer(&last).unwrap();
        // A stream rotating over many subjects: each one differs from the last.
        for subject in ["grow.0", "grow.1", "grow.998"] {
            caller
                .check_repeated(Permission::Publish, subject, &mut last)
                .unwrap();
            assert_eq!(buffer(&last), Some((first, subject.to_owned())));
        }
    }

    #[test]
    fn a_start_with_a_broken_file_is_one_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.json");
        let err = Access::load(&path).err().unwrap();
        assert!(
            err.starts_with("AUTH_FILE ") && err.contains("cannot be read"),
            "{err}"
        );
        std::fs::write(&path, r#"{"clients": [{"id": ""}]}"#).unwrap();
        let err = Access::load(&path).err().unwrap();
        assert!(err.contains("clients[0].id: is empty"), "{err}");
    }

    #[test]
    fn every_permission_of_the_table_has_a_name_and_methods_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for rule in rpcs::RULES {
            assert!(seen.insert(rule.method), "{} twice", rule.method);
            if let Need::Permissions(permissions, resource) | Need::OnPath(permissions, resource) =
                rule.need
            {
                assert!(
                    !permissions.is_empty() && !resource.is_empty(),
                    "{}",
                    rule.method
                );
            }
        }
    }
}
