//! Jetway's domain logic over NATS JetStream, free of any transport: validation of names, the
//! mapping of stream and consumer declarations onto JetStream, publishing in the Windshift on-stream
//! format (one event at a time, or many with their acks in flight), the delivery engine behind an
//! Events subscription, unary fetching, reads without a consumer, live feeds shared by their
//! subscribers, dead letters, stream administration, and key-value stores.
//!
//! Every operation fails with the one [`Error`], whose [`ErrorKind`] says what the caller can do
//! about it; JetStream's error codes are read once, in [`error`]. The server maps the kind to a gRPC
//! code by one table.

pub mod admin;
pub mod connection;
pub mod consumers;
pub mod credentials;
pub mod dead_letters;
pub mod delivery;
pub mod error;
mod expiry;
pub mod fetch;
pub mod format;
mod inbox;
pub mod info;
pub mod live;
pub mod names;
pub mod pipeline;
pub mod publish;
mod publish_failure;
pub mod reads;
pub mod requests;
pub mod settle;
pub mod state;
pub mod streams;
pub mod telemetry;

pub use connection::{ConnectSettings, Nats, NatsSecurity, Secret};
pub use error::{Error, ErrorKind, Result};
