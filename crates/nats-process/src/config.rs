//! nats-server's config file: a server on 127.0.0.1 with JetStream, optionally with a monitoring
//! port and a cluster whose routes are other servers on loopback.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{Error, io_error};

/// What goes into a nats-server config file. Every listener binds 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// `server_name`: how the server names itself in logs and, in a cluster, as a stream's leader.
    pub server_name: String,
    /// Client port; 0 lets nats-server pick a free one (its "random port", -1).
    pub port: u16,
    /// JetStream `store_dir`; it must be absolute, as nats-server resolves relative paths against
    /// its own working directory.
    pub store_dir: PathBuf,
    /// JetStream `sync_interval` (e.g. `always`, `2m`); `None` keeps nats-server's default.
    pub sync_interval: Option<String>,
    /// HTTP monitoring port (`/healthz`, `/jsz`), if any.
    pub monitor_port: Option<u16>,
    /// Cluster membership, if any.
    pub cluster: Option<ClusterConfig>,
    /// Further config text, appended as it is (tests: an `authorization` block with nkey users).
    pub extra: Option<String>,
}

/// A cluster on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster name every node shares.
    pub name: String,
    /// This node's route port.
    pub port: u16,
    /// The route ports of the other nodes.
    pub routes: Vec<u16>,
}

impl NatsConfig {
    /// A server named `server_name` with JetStream storing under `store_dir`, on a free client port,
    /// without monitoring or cluster.
    pub fn new(server_name: impl Into<String>, store_dir: impl Into<PathBuf>) -> Self {
        Self {
            server_name: server_name.into(),
            port: 0,
            store_dir: store_dir.into(),
            sync_interval: None,
            monitor_port: None,
            cluster: None,
            extra: None,
        }
    }

    /// The config file's text.
    pub fn render(&self) -> Result<String, Error> {
        let store_dir = self
            .store_dir
            .to_str()
            .ok_or_else(|| Error::NonUnicodePath {
                path: self.store_dir.clone(),
            })?;
        let port = if self.port == 0 {
            -1
        } else {
            i32::from(self.port)
        };
        let mut text = format!(
            "# Written by Jetway each time it starts this nats-server: edits are overwritten.\n\
             server_name: \"{}\"\n\
             host: \"127.0.0.1\"\n\
             port: {port}\n",
            escape(&self.server_name),
        );
        if let Some(monitor_port) = self.monitor_port {
            let _ = writeln!(text, "http: \"127.0.0.1:{monitor_port}\"");
        }
        let _ = writeln!(text, "jetstream {{\n  store_dir: \"{}\"", escape(store_dir));
        if let Some(sync_interval) = &self.sync_interval {
            let _ = writeln!(text, "  sync_interval: \"{}\"", escape(sync_interval));
        }
        text.push_str("}\n");
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> = cluster
                .routes
                .iter()
                .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
                .collect();
            // Nodes do not advertise their client URLs, so a client reaches only the nodes it is
            // given.
            let _ = write!(
                text,
                "cluster {{\n  name: \"{}\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n  no_advertise: true\n}}\n",
                escape(&cluster.name),
                cluster.port,
                routes.join(", "),
            );
        }
        if let Some(extra) = &self.extra {
            text.push_str(extra);
            text.push('\n');
        }
        Ok(text)
    }

    /// Writes the config file to `path`, replacing any earlier one.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, self.render()?).map_err(io_error(format!("write {}", path.display())))
    }
}

/// Quotes text for a double-quoted string in nats-server's config syntax.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(escape(r#"/a"b\c"#), r#"/a\"b\\c"#);
    }

    #[test]
    fn a_single_server() {
        let mut config = NatsConfig::new("local", "/data/x\"y");
        config.sync_interval = Some("always".to_owned());
        assert_eq!(
            config.render().unwrap(),
            "# Written by Jetway each time it starts this nats-server: edits are overwritten.\n\
             server_name: \"local\"\nhost: \"127.0.0.1\"\nport: -1\n\
             jetstream {\n  store_dir: \"/data/x\\\"y\"\n  sync_interval: \"always\"\n}\n"
        );
    }

    #[test]
    fn a_cluster_node_with_monitoring() {
        let mut config = NatsConfig::new("n1", "/s");
        config.port = 4222;
        config.monitor_port = Some(8222);
        config.cluster = Some(ClusterConfig {
            name: "c".to_owned(),
            port: 6222,
            routes: vec![6223, 6224],
        });
        let text = config.render().unwrap();
        assert!(
            text.contains("port: 4222\nhttp: \"127.0.0.1:8222\"\n"),
            "{text}"
        );
        assert!(text.ends_with(
            "cluster {\n  name: \"c\"\n  listen: \"127.0.0.1:6222\"\n  routes: [\"nats-route://127.0.0.1:6223\", \"nats-route://127.0.0.1:6224\"]\n  no_advertise: true\n}\n"
        ), "{text}");
    }

    #[test]
    fn a_non_unicode_store_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::ffi::OsStr::from_bytes(b"/data/\xff");
        let error = NatsConfig::new("x", dir).render().unwrap_err();
        assert!(matches!(error, Error::NonUnicodePath { .. }), "{error}");
    }
}
