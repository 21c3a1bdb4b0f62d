//! Jetway's gRPC server: configuration, the local nats-server supervisor, telemetry, health, and the
//! tonic services (events, state and administration) over `jetway-core`.

pub mod admin;
pub mod app;
pub mod config;
pub mod convert;
pub mod events;
pub mod events_ext;
pub mod health;
pub mod panic;
pub mod probe;
pub mod publish_stream;
pub mod state;
pub mod status;
pub mod streaming;
pub mod supervisor;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;
