//! Unary consuming for code that cannot hold a subscription open (a cron job, a serverless
//! function): a [`Fetcher`] takes events from a consumer with `jetway.events.v1.Fetch`, then acks
//! or rejects them by id.
//!
//! The server that answered the Fetch holds the fetched events until they are settled or their
//! processing timeout passes (then JetStream redelivers them), so with several Jetway servers the
//! settling calls must reach the same one. Nothing is pinged: settle within the processing
//! timeout ([`Fetched::processing_timeout`]).

use std::time::Duration;

use jetway_api::jetway::events::v1::{self as api, AckRequest, FetchRequest, RejectRequest};

use crate::{Client, Error, StoredEvent};

/// Fetching from one consumer, from [`Client::fetcher`].
///
/// ```no_run
/// use std::time::Duration;
/// use jetway_client::FetchOptions;
/// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
/// let fetcher = client.fetcher("orders", "billing");
/// let fetched = fetcher.fetch_with(&FetchOptions::new().max_events(100).wait(Duration::from_secs(5))).await?;
/// let ids: Vec<u64> = fetched.events.iter().map(|event| event.id()).collect();
/// // ... process them within fetched.processing_timeout ...
/// let settled = fetcher.ack(&ids).await?;
/// assert!(settled.invalid_ids.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: Client,
    stream: String,
    consumer: String,
}

/// What a fetch returned.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Fetched {
    /// The events, oldest first, in flight until settled or past the processing timeout.
    pub events: Vec<StoredEvent>,
    /// The consumer's processing timeout (of a first delivery, with a backoff schedule).
    pub processing_timeout: Duration,
}

/// What happened to each id of an ack or a reject: every id is in exactly one list, in the order
/// given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settled {
    /// Settled.
    pub ids: Vec<u64>,
    /// Not in flight on this server: never fetched here, already settled, past the processing
    /// timeout (JetStream redelivers it), or given twice.
    pub invalid_ids: Vec<u64>,
    /// The server could not reach NATS; still in flight, so try again.
    pub temporary_failed_ids: Vec<u64>,
}

/// Reads an Ack or Reject answer; one without the outcome settled nothing.
fn settled(settled: Option<api::Settled>) -> Settled {
    let settled = settled.unwrap_or_default();
    Settled {
        ids: settled.ids,
        invalid_ids: settled.invalid_ids,
        temporary_failed_ids: settled.temporary_failed_ids,
    }
}

/// Optional settings of a [`Fetcher::fetch_with`].
///
/// ```
/// use std::time::Duration;
/// use jetway_client::FetchOptions;
///
/// let options = FetchOptions::new().max_events(50).wait(Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchOptions {
    max_events: Option<u32>,
    wait: Option<Duration>,
}

impl FetchOptions {
    /// Up to 10 events, without waiting.
    pub fn new() -> Self {
        FetchOptions::default()
    }

    /// At most this many events, up to 1000 (fewer come back when more would exceed 3 MiB).
    /// Default: 10.
    pub fn max_events(mut self, max: u32) -> Self {
        self.max_events = Some(max);
        self
    }

    /// When there is no event, wait up to this long (at most 60 s) for the first one. Default:
    /// return at once. Keep it below the client's request timeout.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }
}

impl Fetcher {
    /// Fetching from `consumer` of `stream` through `client`.
    pub(crate) fn new(client: Client, stream: String, consumer: String) -> Self {
        Fetcher {
            client,
            stream,
            consumer,
        }
    }

    /// Up to 10 events that are there now. NOT_FOUND for an unknown consumer; FAILED_PRECONDITION
    /// for one that is not a pull consumer with explicit acks.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let fetched = client.fetcher("orders", "billing").fetch().await?;
    /// println!("{} events, settle within {:?}", fetched.events.len(), fetched.processing_timeout);
    /// # Ok(()) }
    /// ```
    pub async fn fetch(&self) -> Result<Fetched, Error> {
        self.fetch_with(&FetchOptions::new()).await
    }

    /// [`Fetcher::fetch`] with more events, or waiting for the first one.
    pub async fn fetch_with(&self, options: &FetchOptions) -> Result<Fetched, Error> {
        let request = FetchRequest {
            stream: self.stream.clone(),
            consumer: self.consumer.clone(),
            max_events: options.max_events.unwrap_or_default(),
            wait: options.wait.map(Into::into),
        };
        let response = self
            .client
            .events_ext
            .clone()
            .fetch(self.client.unary(request))
            .await?
            .into_inner();
        let events = response
            .events
            .into_iter()
            .map(|event| StoredEvent::from_proto(Some(event), "Fetch"))
            .collect::<Result<_, _>>()?;
        let processing_timeout = response
            .processing_timeout
            .and_then(|d| Duration::try_from(&d).ok())
            .ok_or_else(|| Error::Protocol("Fetch answered without a processing timeout".into()))?;
        Ok(Fetched {
            events,
            processing_timeout,
        })
    }

    /// Done: the events leave the consumer for good.
    pub async fn ack(&self, ids: &[u64]) -> Result<Settled, Error> {
        let request = AckRequest {
            stream: self.stream.clone(),
            consumer: self.consumer.clone(),
            ids: ids.to_vec(),
        };
        let response = self
            .client
            .events_ext
            .clone()
            .ack(self.client.unary(request))
            .await?;
        Ok(settled(response.into_inner().settled))
    }

    /// Failed: JetStream redelivers the events at once.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn run(fetcher: jetway_client::Fetcher) -> Result<(), jetway_client::Error> {
    /// fetcher.reject(&[1]).await?; // again now
    /// fetcher.reject_after(&[2], Duration::from_secs(30)).await?; // again in 30 s
    /// fetcher.reject_permanently(&[3]).await?; // never again (dead-lettered, with a policy)
    /// # Ok(()) }
    /// ```
    pub async fn reject(&self, ids: &[u64]) -> Result<Settled, Error> {
        self.send_reject(ids, false, None).await
    }

    /// Failed: JetStream redelivers the events after `delay` (zero: at once). The server raises a
    /// delay under a second to one second, and refuses one over 7 days (the longest processing
    /// timeout) with an INVALID_ARGUMENT [`Error::Status`](crate::Error::Status).
    pub async fn reject_after(&self, ids: &[u64], delay: Duration) -> Result<Settled, Error> {
        self.send_reject(ids, false, Some(delay)).await
    }

    /// Failed for good: the events leave the consumer, and go to its dead-letter stream if it has
    /// one.
    pub async fn reject_permanently(&self, ids: &[u64]) -> Result<Settled, Error> {
        self.send_reject(ids, true, None).await
    }

    async fn send_reject(
        &self,
        ids: &[u64],
        permanently: bool,
        delay: Option<Duration>,
    ) -> Result<Settled, Error> {
        let request = RejectRequest {
            stream: self.stream.clone(),
            consumer: self.consumer.clone(),
            ids: ids.to_vec(),
            permanently,
            delay: delay.map(Into::into),
        };
        let response = self
            .client
            .events_ext
            .clone()
            .reject(self.client.unary(request))
            .await?;
        Ok(settled(response.into_inner().settled))
    }
}
