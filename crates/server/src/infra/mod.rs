//! What runs the services: the app that serves them, configuration, the local nats-server
//! supervisor, telemetry, health and readiness, the health-check client, TLS, and the transport limits.

pub mod app;
pub mod config;
pub mod health;
pub mod probe;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod transport;
