//! Jetway's gRPC server, by role: [`grpc`] holds the tonic services (Windshift's and Jetway's) and
//! the one mapping of core errors to statuses, [`codec`] the conversion of their messages to and from
//! `jetway-core`, and [`infra`] what runs them (the app, configuration, the local nats-server
//! supervisor, telemetry, health and the transport limits).
//!
//! [`app`] and [`config`] are re-exported at the root: they are what a program embedding the server
//! uses.

pub mod codec;
pub mod grpc;
pub mod infra;

pub use infra::{app, config};
