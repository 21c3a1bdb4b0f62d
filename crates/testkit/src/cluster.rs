//! Owns an N-node nats-server cluster for tests: every node on loopback with JetStream, routed to
//! every other node, with a store of its own in one temporary directory. A test can kill a node
//! (kill -9), stop it (SIGTERM), restart it on the same ports and store, kill every node at once and
//! start them again, find which node leads a stream, and ask a stream's leader to step down.
//! [`ClusterOptions`] set what a test needs beyond the defaults, such as the sync interval. To cut one client's link to a node while the node
//! stays up, put a [`crate::TcpProxy`] in front of [`NatsCluster::port`].
//!
//! Like [`crate::NatsServer`], everything here is synchronous so that `Drop` can kill the nodes
//! whether or not a tokio runtime is still alive, and each node's process is run through
//! `jetway-nats-process`.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use jetway_nats_process::{ClusterConfig, Launcher, NatsConfig, kill, log_tail, terminate};
use tempfile::TempDir;

use crate::nats::binary;
use crate::ports::free_port;
use crate::raw::RawClient;

/// How long a cluster gets to elect its JetStream meta leader after a (re)start. Elections take a
/// few seconds; the slack is for loaded CI machines.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopped node gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two looks at a node's state.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The cluster name every node shares.
const CLUSTER_NAME: &str = "jetway-testkit";

/// How a [`NatsCluster`]'s nodes are configured beyond what every test needs.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// NATS's `jetstream.sync_interval`: how often a node flushes its store to disk with fsync, e.g.
    /// `always` (on every write) or `10s`. `None` keeps NATS's default of 2 minutes.
    pub sync_interval: Option<String>,
}

/// A running cluster of nats-server nodes with JetStream on loopback. Every node is killed when this
/// value is dropped.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    /// Holds every node's store, config and log; deleted on drop unless a startup failure kept it.
    root: TempDir,
}

#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    launcher: Launcher,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `size` nodes (at least 2) and returns once each of them reports healthy, which in a
    /// cluster means a JetStream meta leader has been elected and the node is current with it.
    /// Panics, with the end of the failing node's log, if that does not happen in time.
    pub fn start(size: usize) -> NatsCluster {
        NatsCluster::start_with(size, &ClusterOptions::default())
    }

    /// Like [`NatsCluster::start`], with every node configured by `options`.
    pub fn start_with(size: usize, options: &ClusterOptions) -> NatsCluster {
        // nats-server refuses clustered JetStream without routes: one node would never be healthy.
        assert!(
            size >= 2,
            "a cluster needs at least two nodes; use NatsServer for one"
        );
        let root = tempfile::Builder::new()
            .prefix("jetway-nats-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for the cluster: {e}"));
        // Every port is chosen before any node starts, because each node's routes name the others.
        // Nodes do not advertise their client URLs, so a client reaches only the nodes it is given,
        // and a link cut with a proxy is not bypassed through a discovered URL.
        let ports: Vec<[u16; 3]> = (0..size)
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();
        let bin = binary();
        let nodes = (0..size)
            .map(|i| {
                let name = format!("n{}", i + 1);
                let dir = root.path().join(&name);
                fs::create_dir_all(&dir)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
                let [client_port, cluster_port, monitor_port] = ports[i];
                let mut config = NatsConfig::new(&name, dir.join("store"));
                config.port = client_port;
                config.monitor_port = Some(monitor_port);
                config.sync_interval = options.sync_interval.clone();
                config.cluster = Some(ClusterConfig {
                    name: CLUSTER_NAME.to_owned(),
                    port: cluster_port,
                    routes: (ports.iter().enumerate())
                        .filter(|&(j, _)| j != i)
                        .map(|(_, other)| other[1])
                        .collect(),
                });
                let launcher = Launcher::new(
                    bin.clone(),
                    dir.join("nats-server.conf"),
                    dir.clone(),
                    dir.join("nats-server.log"),
                );
                config
                    .write(launcher.conf_file())
                    .unwrap_or_else(|e| panic!("{e}"));
                Node {
                    name,
                    client_port,
                    monitor_port,
                    launcher,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster { nodes, root };
        for i in 0..size {
            cluster.launch(i);
        }
        cluster.wait_healthy();
        cluster
    }

    /// How many nodes the cluster has, running or not.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The client URL of node `i`, e.g. `nats://127.0.0.1:41234`; unchanged by restarts.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Every node's client URL, comma-separated, as `NATS_URL` takes them.
    pub fn urls(&self) -> String {
        (0..self.size())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client port of node `i`; unchanged by restarts.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].client_port
    }

    /// The server name of node `i` (`n1`, `n2`, ...), as NATS reports it, e.g. as a stream's leader.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Whether node `i` is running (not killed or stopped).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Kills node `i` with SIGKILL and reaps it: a crash, losing whatever it had not written to its
    /// store. Does nothing if it is not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            kill(&mut child)
                .unwrap_or_else(|e| panic!("cannot kill node {}: {e}", self.nodes[i].name));
        }
    }

    /// Kills every running node with SIGKILL at once, each signalled before any is reaped: a crash of
    /// the whole cluster, as in a power loss of its machines, except that what the nodes wrote but
    /// did not sync is still in the operating system's page cache.
    pub fn kill_all(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|node| node.child.take())
            .collect();
        for child in &mut children {
            // An error means it has already exited, which is what is asked for.
            let _ = child.kill();
        }
        for child in &mut children {
            let _ = child.wait();
        }
    }

    /// Starts every node that is not running on its own ports and store, and returns once every
    /// node is healthy: how a cluster comes back after [`NatsCluster::kill_all`].
    pub fn start_stopped(&mut self) {
        for i in 0..self.size() {
            if !self.is_running(i) {
                self.launch(i);
            }
        }
        self.wait_healthy();
    }

    /// Stops node `i` gracefully with SIGTERM and waits for it to exit (killing it after 30 s). Does
    /// nothing if it is not running.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            terminate(&mut child, STOP_TIMEOUT, Duration::MAX, |_| {});
        }
    }

    /// Starts node `i` again (stopping it first if it runs) on the same ports with the same store,
    /// and returns once every running node is healthy again.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.launch(i);
        self.wait_healthy();
    }

    /// The index of the node that leads `stream` (in the default account), as the running nodes
    /// report it; `None` while no running node knows of a leader.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        (0..self.size())
            .filter(|&i| self.is_running(i))
            .find_map(|i| {
                let jsz = self.monitor(i, "/jsz?accounts=true&streams=true")?;
                let accounts = jsz.get("account_details")?.as_array()?;
                let leader = accounts
                    .iter()
                    .filter_map(|account| account.get("stream_detail")?.as_array())
                    .flatten()
                    .find(|detail| detail.get("name").and_then(|n| n.as_str()) == Some(stream))?
                    .get("cluster")?
                    .get("leader")?
                    .as_str()?
                    .to_owned();
                self.nodes.iter().position(|node| node.name == leader)
            })
    }

    /// The index of the node that leads the JetStream meta group (stream and consumer placement,
    /// account info), as the running nodes report it; `None` during an election.
    pub fn meta_leader(&self) -> Option<usize> {
        (0..self.size())
            .filter(|&i| self.is_running(i))
            .find_map(|i| {
                let jsz = self.monitor(i, "/jsz")?;
                let leader = jsz.get("meta_cluster")?.get("leader")?.as_str()?.to_owned();
                self.nodes
                    .iter()
                    .position(|node| node.name == leader)
                    .filter(|&leader| self.is_running(leader))
            })
    }

    /// Asks the leader of `stream` to step down, through the first running node, so the others
    /// elect a new one. Panics if JetStream refuses.
    #[expect(
        clippy::expect_used,
        reason = "test support: documented to panic, which fails the test that asked for a step-down"
    )]
    pub fn step_down(&self, stream: &str) {
        let i = (0..self.size())
            .find(|&i| self.is_running(i))
            .expect("a running node");
        let answer = RawClient::connect(self.port(i))
            .request(&format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"), "");
        assert_eq!(
            answer.get("success").and_then(|s| s.as_bool()),
            Some(true),
            "step-down of {stream} refused: {answer}"
        );
    }

    /// Waits until every running node answers its health check (JetStream current with the meta
    /// leader). Panics, with the end of an unhealthy node's log, after a minute.
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        let running: Vec<usize> = (0..self.size()).filter(|&i| self.is_running(i)).collect();
        for i in running {
            while self.monitor_status(i, "/healthz") != Some(200) {
                if Instant::now() >= deadline {
                    self.fail(i, "did not report healthy in time");
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }

    /// Spawns node `i` from its config file, appending to its log.
    fn launch(&mut self, i: usize) {
        match self.nodes[i].launcher.spawn() {
            Ok(child) => self.nodes[i].child = Some(child),
            Err(e) => self.fail(i, &format!("could not start: {e}")),
        }
    }

    /// GETs `path` from node `i`'s monitoring port and returns the status code.
    fn monitor_status(&self, i: usize, path: &str) -> Option<u16> {
        let (status, _) = http_get(self.nodes[i].monitor_port, path)?;
        Some(status)
    }

    /// GETs `path` from node `i`'s monitoring port and returns the JSON body of a 200 answer.
    fn monitor(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        match http_get(self.nodes[i].monitor_port, path)? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Panics with `what` and the end of node `i`'s log, keeping the cluster's directory.
    fn fail(&mut self, i: usize, what: &str) -> ! {
        let log_file = self.nodes[i].launcher.log_file();
        let tail = log_tail(log_file, 40);
        self.root.disable_cleanup(true);
        panic!(
            "node {} {what}\nlog (kept): {}\n--- end of log ---\n{tail}",
            self.nodes[i].name,
            log_file.display(),
        )
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // Errors are ignored: panicking while a failed test unwinds would hide its failure.
                let _ = kill(&mut child);
            }
        }
    }
}

/// A minimal HTTP/1.0 GET on loopback: the status code and the body, or `None` if nothing answered.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventually_within;

    fn publish(cluster: &NatsCluster, node: usize, subject: &str) -> Option<u64> {
        let answer = RawClient::try_connect(cluster.port(node))
            .ok()?
            .try_request(subject, "x")
            .ok()?;
        answer.get("seq")?.as_u64()
    }

    /// Whether node `i` syncs its store on every write, as its monitoring port reports it.
    fn syncs_always(cluster: &NatsCluster, i: usize) -> bool {
        let varz = cluster.monitor(i, "/varz").expect("varz");
        varz["jetstream"]["config"]["sync_always"] == true
    }

    /// Options reach every node's configuration: `sync_interval: always` makes each node sync every
    /// write, which NATS does not do by default.
    #[test]
    fn options_set_the_sync_interval_of_every_node() {
        let always = ClusterOptions {
            sync_interval: Some("always".into()),
        };
        let cluster = NatsCluster::start_with(2, &always);
        assert!((0..2).all(|i| syncs_always(&cluster, i)));
        let cluster = NatsCluster::start(2);
        assert!((0..2).all(|i| !syncs_always(&cluster, i)));
    }

    /// A replicated stream keeps its data and takes publishes through a leader crash, a restart of
    /// that node and a step-down, and each is seen in who leads it.
    #[tokio::test]
    async fn a_replicated_stream_survives_its_leader_crashing_and_stepping_down() {
        let mut cluster = NatsCluster::start(3);
        assert_eq!(cluster.size(), 3);
        assert_eq!(cluster.urls().split(',').count(), 3);
        let created = RawClient::connect(cluster.port(0)).request(
            "$JS.API.STREAM.CREATE.R3",
            r#"{"name":"R3","subjects":["r3.>"],"storage":"file","num_replicas":3}"#,
        );
        assert!(created.get("error").is_none(), "{created}");
        assert_eq!(created["config"]["num_replicas"], 3, "{created}");
        assert_eq!(publish(&cluster, 0, "r3.a"), Some(1));

        let leader = |cluster: &NatsCluster, not: Option<usize>| {
            let found = cluster.stream_leader("R3").filter(|&l| Some(l) != not);
            async move { found }
        };
        let first = eventually_within("R3 has a leader", HEALTHY_TIMEOUT, || {
            leader(&cluster, None)
        })
        .await;
        cluster.kill(first);
        assert!(!cluster.is_running(first));
        eventually_within("another node leads R3", HEALTHY_TIMEOUT, || {
            leader(&cluster, Some(first))
        })
        .await;
        let other = (first + 1) % 3;
        let seq = eventually_within(
            "a publish succeeds without the old leader",
            HEALTHY_TIMEOUT,
            || {
                let seq = publish(&cluster, other, "r3.b");
                async move { seq }
            },
        )
        .await;
        assert_eq!(seq, 2);

        cluster.restart(first);
        assert!(cluster.is_running(first));
        let info = eventually_within(
            "the restarted node has both events",
            HEALTHY_TIMEOUT,
            || {
                let info = RawClient::try_connect(cluster.port(first))
                    .ok()
                    .and_then(|mut client| client.try_request("$JS.API.STREAM.INFO.R3", "").ok())
                    .filter(|info| info["state"]["messages"] == 2);
                async move { info }
            },
        )
        .await;
        assert_eq!(info["state"]["last_seq"], 2, "{info}");

        let before = eventually_within("R3 has a leader", HEALTHY_TIMEOUT, || {
            leader(&cluster, None)
        })
        .await;
        cluster.step_down("R3");
        eventually_within(
            "another node leads R3 after the step-down",
            HEALTHY_TIMEOUT,
            || leader(&cluster, Some(before)),
        )
        .await;

        cluster.stop(before);
        assert!(!cluster.is_running(before));
    }
}
