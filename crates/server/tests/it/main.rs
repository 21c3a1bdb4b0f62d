//! Integration tests of jetway-server against a real nats-server: one test binary, a module per area.
//! Every test starts its own nats-server and an in-process Jetway server (see `harness`).

// Test code may panic on unwrap/expect: a panic here is a failed test with its message. clippy's
// allow-*-in-tests covers `#[test]` functions only, not the helpers they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod auth;
mod clients;
mod cluster;
mod consumers;
mod dead_letters;
mod delivery;
mod deployment;
mod drills;
mod events;
mod fetch;
mod harness;
mod http;
mod http_auth;
mod nats_links;
mod operability;
mod publish;
mod publish_stream;
mod reads;
mod requests;
mod smoke;
mod state;
mod streams;
mod tls;
mod transport;
