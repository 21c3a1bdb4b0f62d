//! Publishing: [`Client::publish`] packs a protobuf message into an `Any`, [`Client::publish_raw`]
//! sends a message that is already encoded, [`Client::publish_bytes`] sends bytes that are not a
//! protobuf message (JSON, text, ...) with their content type, and [`PublishOptions`] adds custom
//! headers, an idempotency key, an event time or an optimistic-concurrency check.
//!
//! By default concurrent publishes share one `jetway.events.v1.PublishStream` (see
//! [`ClientBuilder::shared_publish_stream`](crate::ClientBuilder::shared_publish_stream)); without
//! it, each is a `jetway.events.v1.PublishEvent` call. Both store a message exactly as Windshift's
//! PublishEvent does and also take headers and raw bytes.

use std::{collections::BTreeMap, time::SystemTime};

use jetway_api::{
    google::protobuf::Any,
    jetway::events::v1::{
        PublishEventRequest, PublishStreamRequest, RawPayload, publish_event_request::Payload,
    },
};
use prost::bytes::Bytes;

use crate::{Client, Error, retry, trace};

/// Optional settings of one publish.
///
/// ```
/// use jetway_client::PublishOptions;
///
/// let options = PublishOptions::new()
///     .idempotency_key("order-42")
///     .expected_last_id(7)
///     .header("published-by", "checkout");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    idempotency_key: Option<String>,
    timestamp: Option<SystemTime>,
    expected_last_id: Option<u64>,
    headers: BTreeMap<String, String>,
}

impl PublishOptions {
    /// No key, the server's clock as the event time, no concurrency check, no headers.
    pub fn new() -> Self {
        PublishOptions::default()
    }

    /// A custom header, stored with the event and given back by reads, live subscriptions, Fetch
    /// and dead letters ([`StoredEvent::headers`](crate::StoredEvent::headers)). Names are
    /// printable ASCII without spaces or `:`; `Nats-*`, `WS-*`, `JW-*` and `Content-Type` are
    /// reserved (the server refuses them with INVALID_ARGUMENT), and an event has at most 64. The
    /// same name again replaces the value.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Within the stream's deduplication window, a second publish with the same key stores nothing
    /// and returns the first event's id. Retrying with the same key is therefore safe.
    ///
    /// Without a key (or with an empty one) the client generates one per call (a UUID v4), which
    /// makes its own retries safe (see [`RetryPolicy`](crate::RetryPolicy)) but not a second
    /// call by the application: give your own key to deduplicate those.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The time the event happened, delivered as its timestamp. Default: when the server received
    /// it.
    pub fn timestamp(mut self, time: SystemTime) -> Self {
        self.timestamp = Some(time);
        self
    }

    /// Optimistic concurrency, per subject: store the event only if the last event on its subject
    /// has this id (0: no event yet). Otherwise the publish fails with FAILED_PRECONDITION.
    pub fn expected_last_id(mut self, id: u64) -> Self {
        self.expected_last_id = Some(id);
        self
    }
}

impl Client {
    /// Publishes `message` on `subject` and returns the event's id (its stream sequence), once
    /// JetStream has stored it.
    ///
    /// Every publish carries an idempotency key (the caller's, see
    /// [`PublishOptions::idempotency_key`], or one generated for the call), and a publish that
    /// fails in a transient way (a broken connection, a replica going away) is sent again with
    /// the same key by the client's [`RetryPolicy`](crate::RetryPolicy), within its request
    /// timeout. An event is therefore stored at least once, and once only within the stream's
    /// deduplication window.
    ///
    /// Concurrent publishes share one stream (see
    /// [`ClientBuilder::shared_publish_stream`](crate::ClientBuilder::shared_publish_stream)):
    /// each still gets its own id or error (a FAILED_PRECONDITION fails only its own call), but
    /// publishes that are in flight together may be stored in any order; await one publish
    /// before the next where order matters.
    ///
    /// ```no_run
    /// use jetway_api::windshift::test::v1::StringValue;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let id = client
    ///     .publish("orders.created", &StringValue { value: "order 42".into() })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish<M: prost::Name>(&self, subject: &str, message: &M) -> Result<u64, Error> {
        self.publish_with(subject, message, &PublishOptions::new())
            .await
    }

    /// [`Client::publish`] with options.
    ///
    /// ```no_run
    /// use jetway_api::windshift::test::v1::StringValue;
    /// use jetway_client::PublishOptions;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let message = StringValue { value: "order 42".into() };
    /// let options = PublishOptions::new().idempotency_key("order-42");
    /// let first = client.publish_with("orders.created", &message, &options).await?;
    /// let again = client.publish_with("orders.created", &message, &options).await?;
    /// assert_eq!(first, again);
    /// # Ok(()) }
    /// ```
    pub async fn publish_with<M: prost::Name>(
        &self,
        subject: &str,
        message: &M,
        options: &PublishOptions,
    ) -> Result<u64, Error> {
        self.send(subject, Payload::Data(Any::pack(message)), options)
            .await
    }

    /// Publishes bytes that are already an encoded message of type `type_name` (its full protobuf
    /// name, e.g. `shop.v1.Order`), without decoding them. For bytes that are not a protobuf
    /// message, see [`Client::publish_bytes`].
    pub async fn publish_raw(
        &self,
        subject: &str,
        type_name: &str,
        data: impl Into<Bytes>,
        options: &PublishOptions,
    ) -> Result<u64, Error> {
        let any = Any {
            type_url: format!("{}{type_name}", jetway_api::TYPE_URL_PREFIX),
            value: data.into(),
        };
        self.send(subject, Payload::Data(any), options).await
    }

    /// Publishes bytes that are not a protobuf message (JSON, text, an image, ...), stored as
    /// they are with `content_type` (e.g. `application/json`; empty: none), and returns the
    /// event's id. Readers get them back as [`Payload::Raw`](crate::Payload::Raw); Windshift's
    /// Events stream delivers them with the type URL `type.googleapis.com/`.
    ///
    /// ```no_run
    /// use jetway_client::PublishOptions;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let options = PublishOptions::new().header("published-by", "checkout");
    /// let id = client
    ///     .publish_bytes("orders.created", r#"{"order":42}"#, "application/json", &options)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_bytes(
        &self,
        subject: &str,
        data: impl Into<Bytes>,
        content_type: &str,
        options: &PublishOptions,
    ) -> Result<u64, Error> {
        let raw = RawPayload {
            data: data.into(),
            content_type: content_type.to_owned(),
        };
        self.send(subject, Payload::Raw(raw), options).await
    }

    async fn send(
        &self,
        subject: &str,
        payload: Payload,
        options: &PublishOptions,
    ) -> Result<u64, Error> {
        // One key for every attempt: a retry of an event that was stored is answered with its id.
        let request = retry::keyed(PublishEventRequest {
            subject: subject.to_owned(),
            payload: Some(payload),
            headers: options
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            timestamp: options.timestamp.map(Into::into),
            idempotency_key: options.idempotency_key.clone(),
            expected_last_id: options.expected_last_id,
        });
        // A traced caller goes unary: the shared stream carries no one caller's trace context.
        let shared = self
            .shared_stream
            .as_deref()
            .filter(|_| trace::current().is_none());
        self.retry
            .run(self.request_timeout(), |left| {
                let mut events = self.events_ext.clone();
                let request = request.clone();
                async move {
                    match shared {
                        Some(stream) => {
                            let request = PublishStreamRequest {
                                correlation_id: 0,
                                event: Some(request),
                            };
                            stream.call(&events, request, left).await
                        }
                        None => {
                            let request = self.request_within(request, left);
                            Ok(events.publish_event(request).await?.into_inner().id)
                        }
                    }
                }
            })
            .await
    }
}
