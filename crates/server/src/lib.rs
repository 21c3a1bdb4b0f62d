//! Jetway's gRPC server: configuration, the local nats-server supervisor, logging, health, and the
//! tonic services (events and state) over `jetway-core`.

pub mod app;
pub mod config;
pub mod convert;
pub mod events;
pub mod health;
pub mod logging;
pub mod panic;
pub mod state;
pub mod status;
pub mod supervisor;
