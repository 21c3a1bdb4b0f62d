//! Dead letters: the events a consumer with a dead-letter stream gave up on (see
//! [`ConsumerOptions::dead_letter_stream`](crate::ConsumerOptions::dead_letter_stream)). A
//! [`DeadLetters`] handle lists them and redrives them: publishes them again on their original
//! subjects, each once, even when a call is retried.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::SystemTime,
};

use futures::{Stream, StreamExt, stream::BoxStream};
use jetway_api::jetway::admin::v1::{
    self as api, DeadLetterReason as PbReason, ListDeadLettersRequest, RedriveDeadLettersRequest,
};

use crate::{Client, Error, StoredEvent};

/// A dead-letter stream, from [`Client::dead_letters`].
///
/// ```no_run
/// use futures::TryStreamExt;
/// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
/// let dead = client.dead_letters("orders-dead");
/// let letters: Vec<_> = dead.list().await?.try_collect().await?;
/// for letter in &letters {
///     println!("{} gave up on #{} ({:?})", letter.consumer, letter.event.id(), letter.reason);
/// }
/// let ids: Vec<u64> = letters.iter().map(|letter| letter.id).collect();
/// dead.redrive(&ids).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DeadLetters {
    client: Client,
    name: String,
}

/// Why a consumer gave up on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// It was delivered the consumer's max deliveries times without being settled.
    MaxDeliveries,
    /// A client rejected it permanently.
    Rejected,
}

/// An event a consumer gave up on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter stream, which [`DeadLetters::redrive`] takes.
    pub id: u64,
    /// The stream the event came from.
    pub stream: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// Why.
    pub reason: DeadLetterReason,
    /// How many times the consumer delivered it.
    pub attempts: u64,
    /// When it was dead-lettered.
    pub time: Option<SystemTime>,
    /// The event as it was stored: its id in the original stream, subject, headers and payload.
    pub event: StoredEvent,
}

/// Reads a dead letter off the wire.
fn dead_letter(letter: api::DeadLetter) -> Result<DeadLetter, Error> {
    let reason = match PbReason::try_from(letter.reason) {
        Ok(PbReason::MaxDeliveries) => DeadLetterReason::MaxDeliveries,
        Ok(PbReason::Rejected) => DeadLetterReason::Rejected,
        _ => {
            return Err(Error::Protocol(format!(
                "dead letter {} with reason {}",
                letter.id, letter.reason
            )));
        }
    };
    Ok(DeadLetter {
        id: letter.id,
        stream: letter.stream,
        consumer: letter.consumer,
        reason,
        attempts: letter.attempts,
        time: letter.time.and_then(|t| SystemTime::try_from(&t).ok()),
        event: StoredEvent::from_proto(letter.event, "ListDeadLetters")?,
    })
}

/// Optional settings of a [`DeadLetters::list_with`].
///
/// ```
/// use jetway_client::DeadLetterListOptions;
///
/// let options = DeadLetterListOptions::new().stream("orders").consumer("billing").limit(20);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterListOptions {
    stream: Option<String>,
    consumer: Option<String>,
    from_id: Option<u64>,
    limit: Option<u32>,
}

impl DeadLetterListOptions {
    /// Every dead letter, from the first.
    pub fn new() -> Self {
        DeadLetterListOptions::default()
    }

    /// Only dead letters of events from this stream.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Only dead letters from this consumer.
    pub fn consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = Some(consumer.into());
        self
    }

    /// Start at this dead-letter id.
    pub fn from_id(mut self, id: u64) -> Self {
        self.from_id = Some(id);
        self
    }

    /// At most this many.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// Which dead letters a [`DeadLetters::redrive_all`] takes: those stored when the call starts,
/// oldest first, up to 1000 a call.
///
/// ```
/// use jetway_client::RedriveOptions;
///
/// let options = RedriveOptions::new().stream("orders").consumer("billing").limit(100);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveOptions {
    stream: Option<String>,
    consumer: Option<String>,
    limit: Option<u32>,
}

impl RedriveOptions {
    /// Every dead letter (up to 1000).
    pub fn new() -> Self {
        RedriveOptions::default()
    }

    /// Only dead letters of events from this stream.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Only dead letters from this consumer.
    pub fn consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = Some(consumer.into());
        self
    }

    /// At most this many (up to 1000). Default: 1000.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// A dead letter that was published again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Redriven {
    /// The dead letter's id; it is no longer in the dead-letter stream.
    pub id: u64,
    /// The id of the new event, in the stream that captures its subject.
    pub event_id: u64,
}

/// What a redrive did with each dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveOutcome {
    /// Published again and removed, in order.
    pub redriven: Vec<Redriven>,
    /// Not in the dead-letter stream: already redriven (a retried call), purged, or never there.
    pub invalid_ids: Vec<u64>,
    /// Could not be published now (e.g. no stream captures the subject any more); they stay, and
    /// may be redriven again later.
    pub temporary_failed_ids: Vec<u64>,
}

/// The dead letters of a [`DeadLetters::list`], oldest first; it ends once caught up with the
/// last one stored when the call started.
pub struct DeadLetterStream {
    inner: BoxStream<'static, Result<DeadLetter, Error>>,
}

impl std::fmt::Debug for DeadLetterStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterStream").finish_non_exhaustive()
    }
}

impl Stream for DeadLetterStream {
    type Item = Result<DeadLetter, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl DeadLetters {
    /// Dead-letter stream `name`, reached through `client`.
    pub(crate) fn new(client: Client, name: String) -> Self {
        DeadLetters { client, name }
    }

    /// The dead-letter stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every dead letter, oldest first. NOT_FOUND if the stream does not exist (the server
    /// makes it with the first consumer that names it).
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let letters: Vec<_> = client.dead_letters("orders-dead").list().await?.try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub async fn list(&self) -> Result<DeadLetterStream, Error> {
        self.list_with(&DeadLetterListOptions::new()).await
    }

    /// [`DeadLetters::list`], narrowed.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use jetway_client::DeadLetterListOptions;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let options = DeadLetterListOptions::new().consumer("billing");
    /// let mut letters = client.dead_letters("orders-dead").list_with(&options).await?;
    /// while let Some(letter) = letters.next().await {
    ///     println!("{:?}", letter?.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_with(
        &self,
        options: &DeadLetterListOptions,
    ) -> Result<DeadLetterStream, Error> {
        let request = ListDeadLettersRequest {
            dead_letter_stream: self.name.clone(),
            stream: options.stream.clone().unwrap_or_default(),
            consumer: options.consumer.clone().unwrap_or_default(),
            from_id: options.from_id.unwrap_or_default(),
            limit: options.limit.unwrap_or_default(),
        };
        // No deadline, as for any read that ends once caught up.
        let responses = self
            .client
            .admin
            .clone()
            .list_dead_letters(tonic::Request::new(request))
            .await?
            .into_inner();
        Ok(DeadLetterStream {
            inner: responses
                .map(|response| {
                    let letter = response?.dead_letter.ok_or_else(|| {
                        Error::Protocol("ListDeadLetters answered without a dead letter".into())
                    })?;
                    dead_letter(letter)
                })
                .boxed(),
        })
    }

    /// Publishes the dead letters `ids` again on their original subjects, with their payload and
    /// headers, and removes them. Retrying is safe: a dead letter already redriven comes back in
    /// [`RedriveOutcome::invalid_ids`], and is not published twice.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let outcome = client.dead_letters("orders-dead").redrive(&[1, 2]).await?;
    /// for redriven in &outcome.redriven {
    ///     println!("dead letter {} is event {} again", redriven.id, redriven.event_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn redrive(&self, ids: &[u64]) -> Result<RedriveOutcome, Error> {
        self.send_redrive(RedriveDeadLettersRequest {
            dead_letter_stream: self.name.clone(),
            ids: ids.to_vec(),
            ..Default::default()
        })
        .await
    }

    /// Redrives the dead letters stored when the call starts (up to 1000), oldest first, as
    /// [`DeadLetters::redrive`] does. Call again while it redrives any, to drain a larger
    /// backlog.
    ///
    /// ```no_run
    /// use jetway_client::RedriveOptions;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let outcome = client
    ///     .dead_letters("orders-dead")
    ///     .redrive_all(&RedriveOptions::new().consumer("billing"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn redrive_all(&self, options: &RedriveOptions) -> Result<RedriveOutcome, Error> {
        self.send_redrive(RedriveDeadLettersRequest {
            dead_letter_stream: self.name.clone(),
            ids: Vec::new(),
            all: true,
            stream: options.stream.clone().unwrap_or_default(),
            consumer: options.consumer.clone().unwrap_or_default(),
            limit: options.limit.unwrap_or_default(),
        })
        .await
    }

    async fn send_redrive(
        &self,
        request: RedriveDeadLettersRequest,
    ) -> Result<RedriveOutcome, Error> {
        let response = self
            .client
            .admin
            .clone()
            .redrive_dead_letters(self.client.unary(request))
            .await?
            .into_inner();
        Ok(RedriveOutcome {
            redriven: response
                .redriven
                .into_iter()
                .map(|r| Redriven {
                    id: r.id,
                    event_id: r.event_id,
                })
                .collect(),
            invalid_ids: response.invalid_ids,
            temporary_failed_ids: response.temporary_failed_ids,
        })
    }
}
