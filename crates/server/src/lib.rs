//! Jetway's gRPC server, by role: [`auth`] decides who may call what, [`grpc`] holds the tonic services (Windshift's and Jetway's) and
//! the one mapping of core errors to statuses, [`codec`] the conversion of their messages to and from
//! `jetway-core`, [`http`] the HTTP/JSON API beside them, and [`infra`] what runs them (the app, configuration, the local nats-server
//! supervisor, telemetry, health and the transport limits). [`testing`] (feature `testing`) is the
//! in-process test server that the server's, the SDK's and the CLI's tests share.
//!
//! [`app`] and [`config`] are re-exported at the root: they are what a program embedding the server
//! uses.

pub mod auth;
pub mod codec;
pub mod grpc;
pub mod http;
pub mod infra;
#[cfg(feature = "testing")]
pub mod testing;

pub use infra::{app, config};
