//! Declaring consumers: [`ConsumerOptions`] describes a durable or ephemeral consumer, with an
//! optional delivery policy (max deliveries, backoff, a dead-letter stream), and
//! [`Consumers::ensure`] creates or updates it and returns the id to subscribe with. (Listing and
//! inspecting consumers is in `admin`.)

use std::time::Duration;

use jetway_api::{
    jetway::events::v1::EnsureConsumerRequest as PolicyRequest,
    windshift::events::v1alpha1::{DeleteConsumerRequest, EnsureConsumerRequest},
};

use crate::{Client, Error, StartPosition};

/// Consumer declarations and administration, from [`Client::consumers`].
#[derive(Debug, Clone, Copy)]
pub struct Consumers<'a> {
    pub(crate) client: &'a Client,
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
    /// Without a delivery policy (see [`ConsumerOptions::max_deliveries`],
    /// [`ConsumerOptions::backoff`] and [`ConsumerOptions::dead_letter_stream`]) an existing
    /// consumer keeps the policy it has. With any part of one, the whole policy is written: the
    /// parts not set are removed.
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
        if !options.has_policy() {
            // Windshift's EnsureConsumer leaves an existing policy alone, which is what a
            // declaration without one means.
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
                .ensure_consumer(self.client.unary(request))
                .await?;
            return Ok(response.into_inner().id);
        }
        let request = PolicyRequest {
            stream: stream.to_owned(),
            name: options.name.clone(),
            subjects: options.subjects.clone(),
            from: options.from.map(StartPosition::to_ext_pointer),
            processing_timeout: options.processing_timeout.map(Into::into),
            max_deliveries: options.max_deliveries,
            backoff: options.backoff.iter().copied().map(Into::into).collect(),
            dead_letter_stream: options.dead_letter_stream.clone(),
        };
        let response = self
            .client
            .events_ext
            .clone()
            .ensure_consumer(self.client.unary(request))
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
            .delete_consumer(self.client.unary(request))
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
///
/// // At most 3 deliveries, each settled within 1 s, 10 s, then 60 s; then off to orders-dead.
/// let retrying = ConsumerOptions::durable("retry")
///     .subject("orders.>")
///     .max_deliveries(3)
///     .backoff([Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(60)])
///     .dead_letter_stream("orders-dead");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    name: Option<String>,
    subjects: Vec<String>,
    from: Option<StartPosition>,
    processing_timeout: Option<Duration>,
    max_deliveries: Option<u32>,
    backoff: Vec<Duration>,
    dead_letter_stream: Option<String>,
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
            max_deliveries: None,
            backoff: Vec::new(),
            dead_letter_stream: None,
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

    /// How long a subscriber may hold an event before JetStream redelivers it: 1 s to 7 days
    /// (outside that the server answers INVALID_ARGUMENT). Default: 30 s.
    /// [`Subscription`](crate::Subscription)s ping held events, so this bounds how long a crashed
    /// subscriber delays its events, not how long work may take.
    pub fn processing_timeout(mut self, timeout: Duration) -> Self {
        self.processing_timeout = Some(timeout);
        self
    }

    /// Delivery policy: deliver an event at most this many times. After the last delivery's
    /// processing timeout it is not delivered again, and goes to the
    /// [dead-letter stream](ConsumerOptions::dead_letter_stream) if there is one. Default: no
    /// limit.
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = Some(deliveries);
        self
    }

    /// Delivery policy: processing timeouts per delivery (JetStream's BackOff). The n-th delivery
    /// of an event must be settled within the n-th entry (the last one repeats), else it is
    /// redelivered. Each entry is 1 s to 7 days, as a processing timeout is. It replaces
    /// [`ConsumerOptions::processing_timeout`] (setting both is
    /// INVALID_ARGUMENT), and may not have more entries than
    /// [`ConsumerOptions::max_deliveries`]. A reject without a delay is still redelivered at once.
    /// Default: none.
    pub fn backoff(mut self, timeouts: impl IntoIterator<Item = Duration>) -> Self {
        self.backoff = timeouts.into_iter().collect();
        self
    }

    /// Delivery policy: where the events this consumer gives up on go, those that run out of
    /// deliveries and those rejected permanently (see [`DeadLetters`](crate::DeadLetters)). The
    /// server creates the stream if it does not exist. Default: such events are dropped.
    pub fn dead_letter_stream(mut self, stream: impl Into<String>) -> Self {
        self.dead_letter_stream = Some(stream.into());
        self
    }

    /// Whether any part of a delivery policy is set.
    fn has_policy(&self) -> bool {
        self.max_deliveries.is_some()
            || !self.backoff.is_empty()
            || self.dead_letter_stream.is_some()
    }
}
