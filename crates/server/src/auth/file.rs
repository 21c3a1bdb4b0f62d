//! The clients file named by `AUTH_FILE`: its JSON format, its validation, and what it answers —
//! which client a credential names, and what that client may do.
//!
//! ```json
//! {
//!   "clients": [{
//!     "id": "tenant-a",
//!     "tokens": ["sha256:<64 hex digits>"],
//!     "secret": "$argon2id$v=19$...",
//!     "certificate_names": ["tenant-a.clients.example"],
//!     "permissions": {
//!       "publish": ["tenant-a.>"], "respond": ["tenant-a.rpc.>"], "consume": ["a-*"], "read": ["a-*"], "manage": ["a-*"],
//!       "state_read": ["a-*"], "state_write": ["a-*"]
//!     },
//!     "limits": { "events_sessions": 16, "publish_per_second": 500, "fetched_in_flight": 1000 }
//!   }]
//! }
//! ```
//!
//! Unknown fields are refused (a misspelt `permisions` must not silently grant nothing), and every
//! problem is reported with its place (`clients[1].tokens[0]: ...`), never with a credential's
//! value.

use std::collections::{HashMap, HashSet};

use jetway_core::credentials::{SecretHash, TokenHash};
use serde::Deserialize;

use crate::auth::{
    Permission,
    limits::{ClientLimits, LimitsFile},
    pattern::{ConsumerPattern, NamePattern, SubjectPattern},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    clients: Vec<RawClient>,
    #[serde(default)]
    limits: LimitsFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    id: String,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    certificate_names: Vec<String>,
    #[serde(default)]
    permissions: RawPermissions,
    #[serde(default)]
    limits: LimitsFile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    respond: Vec<String>,
    #[serde(default)]
    consume: Vec<String>,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    manage: Vec<String>,
    #[serde(default)]
    state_read: Vec<String>,
    #[serde(default)]
    state_write: Vec<String>,
}

/// Every client of one version of the file.
#[derive(Debug)]
pub struct Clients {
    clients: Vec<std::sync::Arc<Client>>,
    /// Every token hash with its client, by [`TokenHash::index`]: a call finds its token's client
    /// in one lookup however many clients and tokens the file has, and still compares the whole
    /// hash in constant time.
    tokens: HashMap<u64, Vec<(TokenHash, std::sync::Arc<Client>)>>,
}

/// One client: its id, how it proves it, and what it may do.
#[derive(Debug)]
pub struct Client {
    /// The client's id, as logs and errors name it.
    pub id: String,
    tokens: Vec<TokenHash>,
    secret: Option<SecretHash>,
    certificate_names: Vec<String>,
    permissions: Permissions,
    /// Its limits: the file's defaults with its own overrides.
    pub limits: ClientLimits,
}

/// A client's allow-lists; nothing is allowed that no list allows.
#[derive(Debug, Default)]
struct Permissions {
    publish: Vec<SubjectPattern>,
    respond: Vec<SubjectPattern>,
    consume: Vec<ConsumerPattern>,
    read: Vec<NamePattern>,
    manage: Vec<NamePattern>,
    state_read: Vec<NamePattern>,
    state_write: Vec<NamePattern>,
}

impl Clients {
    /// Reads and checks a whole file; the error lists every problem found.
    pub fn parse(text: &str) -> Result<Clients, String> {
        let raw: RawFile = serde_json::from_str(text).map_err(|e| format!("not valid: {e}"))?;
        let mut problems = Vec::new();
        let defaults = raw.limits.over(&ClientLimits::default());
        let mut ids = HashSet::new();
        let mut tokens = HashSet::new();
        let mut clients = Vec::new();
        for (i, raw) in raw.clients.into_iter().enumerate() {
            let at = format!("clients[{i}]");
            if raw.id.trim().is_empty() {
                problems.push(format!("{at}.id: is empty"));
            } else if !ids.insert(raw.id.clone()) {
                problems.push(format!("{at}.id: {:?} appears twice", raw.id));
            }
            let mut client = Client {
                id: raw.id,
                tokens: Vec::new(),
                secret: None,
                certificate_names: raw.certificate_names,
                permissions: Permissions::default(),
                limits: raw.limits.over(&defaults),
            };
            for (j, stored) in raw.tokens.iter().enumerate() {
                match TokenHash::parse(stored) {
                    Ok(hash) if !tokens.insert(hash.to_string()) => {
                        problems.push(format!(
                            "{at}.tokens[{j}]: the same token hash appears twice"
                        ));
                    }
                    Ok(hash) => client.tokens.push(hash),
                    Err(why) => problems.push(format!(
                        "{at}.tokens[{j}]: {why} (write it with `jetway auth token`)"
                    )),
                }
            }
            if let Some(stored) = &raw.secret {
                match SecretHash::parse(stored) {
                    Ok(hash) => client.secret = Some(hash),
                    Err(why) => problems.push(format!(
                        "{at}.secret: {why} (write it with `jetway auth secret-hash`)"
                    )),
                }
            }
            if client.tokens.is_empty()
                && client.secret.is_none()
                && client.certificate_names.is_empty()
            {
                problems.push(format!(
                    "{at}: has no tokens, secret or certificate_names, so nothing can authenticate as it"
                ));
            }
            let p = &raw.permissions;
            let perms = &mut client.permissions;
            perms.publish = patterns(
                &p.publish,
                &format!("{at}.permissions.publish"),
                SubjectPattern::parse,
                &mut problems,
            );
            perms.respond = patterns(
                &p.respond,
                &format!("{at}.permissions.respond"),
                SubjectPattern::parse,
                &mut problems,
            );
            perms.consume = patterns(
                &p.consume,
                &format!("{at}.permissions.consume"),
                ConsumerPattern::parse,
                &mut problems,
            );
            perms.read = patterns(
                &p.read,
                &format!("{at}.permissions.read"),
                NamePattern::parse,
                &mut problems,
            );
            perms.manage = patterns(
                &p.manage,
                &format!("{at}.permissions.manage"),
                NamePattern::parse,
                &mut problems,
            );
            perms.state_read = patterns(
                &p.state_read,
                &format!("{at}.permissions.state_read"),
                NamePattern::parse,
                &mut problems,
            );
            perms.state_write = patterns(
                &p.state_write,
                &format!("{at}.permissions.state_write"),
                NamePattern::parse,
                &mut problems,
            );
            if let Err(why) = client.limits.check() {
                problems.push(format!("{at}.limits.{why}"));
            }
            clients.push(std::sync::Arc::new(client));
        }
        if let Err(why) = defaults.check() {
            problems.push(format!("limits.{why}"));
        }
        if problems.is_empty() {
            let mut tokens: HashMap<u64, Vec<_>> = HashMap::new();
            for client in &clients {
                for hash in &client.tokens {
                    tokens
                        .entry(hash.index())
                        .or_default()
                        .push((hash.clone(), client.clone()));
                }
            }
            Ok(Clients { clients, tokens })
        } else {
            Err(problems.join("; "))
        }
    }

    /// The client holding this token, if any: the stored hashes that share the presented
    /// hash's [`TokenHash::index`] are compared with it, each in constant time.
    pub fn by_token(&self, token: &str) -> Option<&std::sync::Arc<Client>> {
        self.by_token_hash(&TokenHash::of(token))
    }

    /// [`Clients::by_token`] for a token already hashed.
    pub fn by_token_hash(&self, presented: &TokenHash) -> Option<&std::sync::Arc<Client>> {
        self.tokens
            .get(&presented.index())?
            .iter()
            .find(|(stored, _)| stored.matches(presented))
            .map(|(_, client)| client)
    }

    /// The client with this id and a secret, if any (its secret is checked by the caller).
    pub fn with_secret(&self, id: &str) -> Option<(&std::sync::Arc<Client>, &SecretHash)> {
        self.clients
            .iter()
            .find(|client| client.id == id)
            .and_then(|client| Some((client, client.secret.as_ref()?)))
    }

    /// The client one of whose certificate names is among `names` (a certificate's subject
    /// common name and DNS names).
    pub fn by_certificate(&self, names: &[String]) -> Option<&std::sync::Arc<Client>> {
        self.clients.iter().find(|client| {
            client
                .certificate_names
                .iter()
                .any(|name| names.iter().any(|presented| presented == name))
        })
    }
}

fn patterns<P>(
    list: &[String],
    at: &str,
    parse: fn(&str) -> Result<P, String>,
    problems: &mut Vec<String>,
) -> Vec<P> {
    let mut parsed = Vec::new();
    for (i, pattern) in list.iter().enumerate() {
        match parse(pattern) {
            Ok(p) => parsed.push(p),
            Err(why) => problems.push(format!("{at}[{i}]: {pattern:?} {why}")),
        }
    }
    parsed
}

impl Client {
    /// True if this client's permissions allow `permission` on `resource`. Consume resources are
    /// `stream` or `stream/consumer`; [`Permission::See`] is any of read, consume (any consumer)
    /// and manage on the stream, or on `stream/consumer` that consumer.
    pub fn allows(&self, permission: Permission, resource: &str) -> bool {
        let p = &self.permissions;
        let names = |list: &[NamePattern], name: &str| list.iter().any(|n| n.matches(name));
        let (stream, consumer) = match resource.split_once('/') {
            Some((stream, consumer)) => (stream, Some(consumer)),
            None => (resource, None),
        };
        match permission {
            Permission::Publish => p.publish.iter().any(|s| s.covers(resource)),
            Permission::Respond => p.respond.iter().any(|s| s.covers(resource)),
            Permission::Consume => p.consume.iter().any(|c| c.matches(stream, consumer)),
            Permission::Read => names(&p.read, resource),
            Permission::Manage => names(&p.manage, resource),
            Permission::StateRead => names(&p.state_read, resource),
            Permission::StateWrite => names(&p.state_write, resource),
            Permission::See => {
                names(&p.read, stream)
                    || names(&p.manage, stream)
                    || p.consume.iter().any(|c| match consumer {
                        Some(consumer) => c.matches(stream, Some(consumer)),
                        // A stream is visible to a client that may consume any of its consumers.
                        None => c.stream_matches(stream),
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(client: &str) -> String {
        format!(r#"{{"clients": [{client}]}}"#)
    }

    #[test]
    fn permissions_allow_what_their_lists_say_and_nothing_else() {
        let token = jetway_core::credentials::token_hash("t");
        let clients = Clients::parse(&file(&format!(
            r#"{{"id": "a", "tokens": ["{token}"], "permissions": {{
                "publish": ["a.>"], "respond": ["a.rpc.*"], "consume": ["a-orders/billing"], "read": ["a-*"],
                "manage": ["a-admin"], "state_read": ["a-*"], "state_write": ["a-cart"]}}}}"#
        )))
        .unwrap();
        let a = clients.by_token("t").unwrap();
        assert!(a.allows(Permission::Publish, "a.orders"));
        assert!(!a.allows(Permission::Publish, "b.orders"));
        assert!(a.allows(Permission::Respond, "a.rpc.price"));
        assert!(!a.allows(Permission::Respond, "a.orders"));
        assert!(a.allows(Permission::Consume, "a-orders/billing"));
        assert!(!a.allows(Permission::Consume, "a-orders/other"));
        assert!(!a.allows(Permission::Consume, "a-orders"));
        assert!(a.allows(Permission::Read, "a-orders"));
        assert!(!a.allows(Permission::Read, "b-orders"));
        assert!(a.allows(Permission::Manage, "a-admin"));
        assert!(!a.allows(Permission::Manage, "a-orders"));
        assert!(a.allows(Permission::StateRead, "a-cart"));
        assert!(a.allows(Permission::StateWrite, "a-cart"));
        assert!(!a.allows(Permission::StateWrite, "a-other"));
        assert!(a.allows(Permission::See, "a-orders"));
        assert!(!a.allows(Permission::See, "b-orders"));
        assert!(clients.by_token("u").is_none());
    }

    #[test]
    fn each_token_of_many_clients_names_its_own_client() {
        let clients: Vec<String> = (0..300)
            .map(|i| {
                format!(
                    r#"{{"id": "c{i}", "tokens": ["{}", "{}"]}}"#,
                    jetway_core::credentials::token_hash(&format!("first {i}")),
                    jetway_core::credentials::token_hash(&format!("second {i}")),
                )
            })
            .collect();
        let clients = Clients::parse(&file(&clients.join(","))).unwrap();
        for i in 0..300 {
            for token in [format!("first {i}"), format!("second {i}")] {
                assert_eq!(clients.by_token(&token).unwrap().id, format!("c{i}"));
            }
        }
        assert!(clients.by_token("first 300").is_none());
        assert!(clients.by_token("").is_none());
    }

    #[test]
    fn every_problem_is_named_by_its_place_without_the_value() {
        let err = Clients::parse(&file(
            r#"{"id": "a", "tokens": ["sha256:secretish"], "permissions": {"publish": ["a.>.b"]}},
               {"id": "a", "secret": "hunter2"}, {"id": "c"}"#,
        ))
        .unwrap_err();
        assert!(err.contains("clients[0].tokens[0]"), "{err}");
        assert!(err.contains("clients[0].permissions.publish[0]"), "{err}");
        assert!(err.contains("clients[1].id"), "{err}");
        assert!(err.contains("clients[1].secret"), "{err}");
        assert!(err.contains("clients[2]: has no tokens"), "{err}");
        assert!(
            !err.contains("hunter2") && !err.contains("secretish"),
            "{err}"
        );
        assert!(Clients::parse(r#"{"clients": [], "permisions": 1}"#).is_err());
    }
}
