//! Publishing: [`Client::publish`] packs a protobuf message into an `Any`, [`Client::publish_raw`]
//! sends bytes that are already encoded, and [`PublishOptions`] adds an idempotency key, an event
//! time or an optimistic-concurrency check.

use std::time::SystemTime;

use jetway_api::{google::protobuf::Any, windshift::events::v1alpha1::PublishEventRequest};
use prost::bytes::Bytes;

use crate::{Client, Error};

/// Optional settings of one publish.
///
/// ```
/// use jetway_client::PublishOptions;
///
/// let options = PublishOptions::new().idempotency_key("order-42").expected_last_id(7);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    idempotency_key: Option<String>,
    timestamp: Option<SystemTime>,
    expected_last_id: Option<u64>,
}

impl PublishOptions {
    /// No key, the server's clock as the event time, no concurrency check.
    pub fn new() -> Self {
        PublishOptions::default()
    }

    /// Within the stream's deduplication window, a second publish with the same key stores nothing
    /// and returns the first event's id. Retrying with the same key is therefore safe.
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
        self.publish_any(subject, Any::pack(message), options).await
    }

    /// Publishes bytes that are already an encoded message of type `type_name` (its full protobuf
    /// name, e.g. `shop.v1.Order`), without decoding them.
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
        self.publish_any(subject, any, options).await
    }

    async fn publish_any(
        &self,
        subject: &str,
        data: Any,
        options: &PublishOptions,
    ) -> Result<u64, Error> {
        let request = PublishEventRequest {
            subject: subject.to_owned(),
            data: Some(data),
            timestamp: options.timestamp.map(Into::into),
            idempotency_key: options.idempotency_key.clone(),
            expected_last_id: options.expected_last_id,
        };
        let response = self
            .events
            .clone()
            .publish_event(self.request(request))
            .await?;
        Ok(response.into_inner().id)
    }
}
