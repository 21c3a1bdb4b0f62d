//! Integration tests of jetway-server against a real nats-server: one test binary, a module per area.
//! Every test starts its own nats-server and an in-process Jetway server (see `harness`).

mod consumers;
mod delivery;
mod events;
mod harness;
mod operability;
mod publish;
mod smoke;
mod state;
mod streams;
