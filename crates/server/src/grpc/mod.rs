//! The tonic services, each a set of thin handlers (decode, validate, call core, map the result),
//! and what they share: the error-to-status table, streaming responses and panic containment.

pub mod admin;
pub mod events;
pub mod panic;
pub mod publish_stream;
pub mod request_stream;
pub mod requests;
pub mod state;
pub mod status;
pub mod streaming;
pub mod windshift_events;
pub mod windshift_state;
