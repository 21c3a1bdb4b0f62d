//! Conversion between the API's protobuf messages and `jetway-core`'s types, one module per API
//! package. A client input with no core equivalent (a negative duration, an unknown enum value, a
//! missing required field) is rejected here, naming the field.

pub mod admin;
pub mod events;
pub mod requests;
pub mod state;
pub mod windshift;
