//! Test harness for Jetway: owns starting and stopping a real `nats-server` with JetStream for tests
//! ([`NatsServer`]) or a cluster of them ([`NatsCluster`]), cutting connections to it without
//! stopping it ([`TcpProxy`]), choosing ports that a restarted server can bind again
//! ([`free_port`]), and the one sanctioned way for a test to wait for a condition ([`eventually`]).
//!
//! Tests talk to a real server rather than a mock because the behaviour under test (acks,
//! redelivery, reconnects after a restart) lives in the server.

mod cluster;
mod eventually;
mod nats;
mod ports;
mod proxy;
mod raw;

pub use cluster::{ClusterOptions, NatsCluster};
pub use eventually::{eventually, eventually_within};
pub use nats::NatsServer;
pub use ports::free_port;
pub use proxy::TcpProxy;
