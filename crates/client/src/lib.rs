//! An async Rust client for [Jetway](https://github.com/jetway-dev/jetway), the gRPC event framework
//! in front of NATS JetStream.
//!
//! It wraps the generated stubs (the Windshift services and Jetway's `jetway.events.v1`,
//! `jetway.admin.v1`, `jetway.state.v1` and `jetway.requests.v1`) in an API that does the protocol work for you:
//!
//! - [`Client::streams`] and [`Client::consumers`] declare streams and consumers at startup, with
//!   typed options ([`StreamOptions`], [`ConsumerOptions`], delivery policies with max
//!   deliveries, backoff and a dead-letter stream) and the server's defaults; they also list,
//!   inspect, purge and delete them, and find the stream behind a subject
//!   ([`Streams::for_subject`]);
//! - [`Client::publish`] packs any protobuf message into an `Any`, and [`Client::publish_bytes`]
//!   sends raw bytes with a content type, with optional custom headers, idempotency key, event
//!   time or expected last id ([`PublishOptions`]);
//! - [`Client::subscribe`] is a [`Stream`](futures::Stream) of [`Event`] handles. Each is
//!   settled with [`Event::ack`] or a reject; a handle held for long is pinged automatically, a
//!   dropped one is rejected (so it is redelivered), flow control follows
//!   [`SubscribeOptions::max_processing_events`], and the subscription reconnects by itself;
//! - [`Client::fetcher`] consumes without a stream open: fetch, then ack or reject by id;
//! - [`Client::get_event`], [`Client::read`] (a range that ends once caught up) and
//!   [`Client::subscribe_live`] (new events, no acks) read [`StoredEvent`]s without a consumer;
//! - [`Client::dead_letters`] lists and redrives the events consumers gave up on;
//! - [`Client::store`] reads and writes key-value state, with compare-and-set ([`Store`]);
//! - [`Client::request`] sends a request over NATS and waits for its answer, and [`Client::serve`]
//!   answers requests with an async handler (request/reply, `jetway.requests.v1`).
//!
//! Every call carries the auth token and metadata of the [`ClientBuilder`], and the W3C trace
//! context of the current `tracing` span (when the application uses `tracing-opentelemetry`), so
//! consumers see the publisher's trace in [`Event::trace_parent`].
//!
//! ```no_run
//! use futures::StreamExt;
//! use jetway_api::windshift::test::v1::StringValue;
//! use jetway_client::{Client, ConsumerOptions, PublishOptions, StartPosition, StreamOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("http://localhost:8080").await?;
//! client.streams().ensure(&StreamOptions::new("orders").subjects(["orders.>"])).await?;
//! client
//!     .consumers()
//!     .ensure("orders", &ConsumerOptions::durable("billing").subject("orders.>").from(StartPosition::Start))
//!     .await?;
//!
//! let order = StringValue { value: "order 42".into() };
//! let options = PublishOptions::new().idempotency_key("order-42");
//! client.publish_with("orders.created", &order, &options).await?;
//!
//! let mut events = client.subscribe("orders", "billing").await?;
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     let order: StringValue = event.decode()?;
//!     println!("#{} {}: {}", event.id(), event.subject(), order.value);
//!     event.ack().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Messages are any `prost` type that implements [`prost::Name`] (generate them with
//! `enable_type_names()`); `jetway_api` has the test message `StringValue` used above.

mod admin;
mod client;
mod consumers;
mod dead_letters;
#[cfg(feature = "dev-certs")]
pub mod dev_certs;
mod endpoints;
mod error;
mod event;
mod fetch;
mod interceptor;
mod publish;
mod reads;
mod requests;
mod retry;
mod shared_stream;
mod state;
mod streams;
mod subject;
mod subscribe;
mod trace;

pub use admin::{
    ConsumerInfo, PurgeOptions, Retention, StreamConfig, StreamDetails, StreamInfo, StreamState,
};
pub use client::{
    Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_URL,
};
pub use consumers::{ConsumerOptions, Consumers};
pub use dead_letters::{
    DeadLetter, DeadLetterListOptions, DeadLetterReason, DeadLetterStream, DeadLetters,
    RedriveOptions, RedriveOutcome, Redriven,
};
pub use error::{DecodeError, Error, SettleError};
pub use event::Event;
pub use fetch::{FetchOptions, Fetched, Fetcher, Settled};
pub use jetway_api::code_name;
pub use publish::PublishOptions;
pub use reads::{EventStream, Payload, ReadOptions, StoredEvent};
pub use requests::{Answer, Failure, Message, Request, ServeOptions};
pub use retry::{DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF, RetryPolicy};
pub use shared_stream::{DEFAULT_PUBLISH_WINDOW, DEFAULT_REQUEST_WINDOW};
pub use state::{Entry, Operation, Store, Watch, WatchEntry, WatchStart};
pub use streams::{
    DiscardPolicy, StartPosition, StorageType, StreamOptions, StreamSource, Streams,
};
pub use subscribe::{DEFAULT_MAX_PROCESSING_EVENTS, SubscribeOptions, Subscription};

/// The tonic version this client is built on, for [`Client::from_channel`] and
/// [`ClientBuilder::tls`] (`tonic::transport::{Channel, ClientTlsConfig, Certificate, Identity}`).
pub use tonic;
