//! Integration tests of jetway-server against a real nats-server: one test binary, a module per area.
//! Every test starts its own nats-server and an in-process Jetway server (see `harness`).

mod admin;
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
mod operability;
mod publish;
mod publish_stream;
mod reads;
mod smoke;
mod state;
mod streams;
mod transport;
