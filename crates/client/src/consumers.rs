//! Declaring consumers: [`ConsumerOptions`] describes a durable or ephemeral consumer,
//! [`Consumers::ensure`] creates or updates it and returns the id to subscribe with.

use std::time::Duration;

use jetway_api::windshift::events::v1alpha1::{DeleteConsumerRequest, EnsureConsumerRequest};

use crate::{Client, Error, StartPosition};

/// Consumer declarations, from [`Client::consumers`].
#[derive(Debug, Clone, Copy)]
pub struct Consumers<'a> {
    client: &'a Client,
}

impl<'a> Consumers<'a> {
    /// Declarations through `client`.
    pub(crate) fn new(client: &'a Client) -> Self {
        Consumers { client }
    }

    /// Creates the consumer on `stream`, or updates a durable one, and returns its id: the durable
    /// name, or a new UUID for an ephemeral consumer.
    ///
    /// Re-ensuring a durable consumer keeps its position (its start position only applies on
    /// creation), and an update without a processing timeout keeps the current one.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use jetway_client::{Client, ConsumerOptions, StartPosition};
    /// # async fn run(client: Client) -> Result<(), jetway_client::Error> {
    /// let id = client
    ///     .consumers()
    ///     .ensure(
    ///         "orders",
    ///         &ConsumerOptions::durable("billing")
    ///             .subject("orders.>")
    ///             .from(StartPosition::Start)
    ///             .processing_timeout(Duration::from_secs(10)),
    ///     )
    ///     .await?;
    /// assert_eq!(id, "billing");
    /// # Ok(()) }
    /// ```
    pub async fn ensure(&self, stream: &str, options: &ConsumerOptions) -> Result<String, Error> {
        let request = EnsureConsumerRequest {
            stream: stream.to_owned(),
            name: options.name.clone(),
            subjects: options.subjects.clone(),
            from: options.from.map(StartPosition::to_pointer),
            processing_timeout: options.processing_timeout.map(Into::into),
        };
        let response = self
            .client
            .events
            .clone()
            .ensure_consumer(self.client.request(request))
            .await?;
        Ok(response.into_inner().id)
    }

    /// Deletes consumer `id` from `stream`. An unknown consumer is NOT_FOUND.
    pub async fn delete(&self, stream: &str, id: &str) -> Result<(), Error> {
        let request = DeleteConsumerRequest {
            stream: stream.to_owned(),
            id: id.to_owned(),
        };
        self.client
            .events
            .clone()
            .delete_consumer(self.client.request(request))
            .await?;
        Ok(())
    }
}

/// A consumer declaration for [`Consumers::ensure`].
///
/// ```
/// use std::time::Duration;
/// use jetway_client::{ConsumerOptions, StartPosition};
///
/// let durable = ConsumerOptions::durable("billing").subject("orders.>").from(StartPosition::Start);
/// let ephemeral = ConsumerOptions::ephemeral().subjects(["orders.created", "orders.paid"]);
/// assert_eq!(durable.name(), Some("billing"));
/// assert_eq!(ephemeral.name(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    name: Option<String>,
    subjects: Vec<String>,
    from: Option<StartPosition>,
    processing_timeout: Option<Duration>,
}

impl ConsumerOptions {
    /// A durable consumer called `name`: it keeps its position while nobody is subscribed (it is
    /// removed after 30 days without a subscriber).
    pub fn durable(name: impl Into<String>) -> Self {
        ConsumerOptions {
            name: Some(name.into()),
            ..ConsumerOptions::ephemeral()
        }
    }

    /// An ephemeral consumer: the server names it with a UUID and removes it after an hour without
    /// a subscriber.
    pub fn ephemeral() -> Self {
        ConsumerOptions {
            name: None,
            subjects: Vec::new(),
            from: None,
            processing_timeout: None,
        }
    }

    /// The durable name, or `None` for an ephemeral consumer.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Adds a subject to receive (wildcards allowed). At least one is required.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subjects.push(subject.into());
        self
    }

    /// Adds several subjects to receive.
    pub fn subjects<I, S>(mut self, subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subjects.extend(subjects.into_iter().map(Into::into));
        self
    }

    /// Where a new consumer starts. Default: [`StartPosition::End`] (new events only). Ignored
    /// when a durable consumer already exists.
    pub fn from(mut self, position: StartPosition) -> Self {
        self.from = Some(position);
        self
    }

    /// How long a subscriber may hold an event before JetStream redelivers it. Default: 30 s.
    /// [`Subscription`](crate::Subscription)s ping held events, so this bounds how long a crashed
    /// subscriber delays its events, not how long work may take.
    pub fn processing_timeout(mut self, timeout: Duration) -> Self {
        self.processing_timeout = Some(timeout);
        self
    }
}
