//! Administration through `jetway.admin.v1`: listing, inspecting, purging and deleting streams
//! ([`Streams`]), finding the stream behind a subject ([`Streams::for_subject`]), and listing and
//! inspecting consumers ([`Consumers`]). These calls see every stream of the NATS account, Jetway's
//! or not: key-value stores (`KV_<store>`), `JETWAY_ADVISORIES`, dead-letter streams. The first two
//! are internal: deleting or purging them needs [`Streams::force_delete`] or [`PurgeOptions::force`].

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use jetway_api::{
    google::protobuf::Timestamp,
    jetway::admin::v1::{
        self as api, DeleteStreamRequest, GetConsumerInfoRequest, GetStreamInfoRequest,
        ListConsumersRequest, ListStreamsRequest, PurgeStreamRequest,
    },
};

use crate::{Consumers, DiscardPolicy, Error, StorageType, Streams, subject};

/// When a stream removes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// At its limits (age, count, size): what Jetway creates.
    Limits,
    /// Once every consumer has acknowledged it.
    Interest,
    /// Once one consumer has acknowledged it.
    WorkQueue,
}

/// A stream's configuration and state, from [`Streams::list`] and [`Streams::info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The name.
    pub name: String,
    /// How it is configured.
    pub config: StreamConfig,
    /// What it holds now.
    pub state: StreamState,
    /// When it was created.
    pub created: Option<SystemTime>,
}

impl StreamInfo {
    /// Whether this is a dead-letter stream, as Jetway makes them: one that captures exactly
    /// `$JW.DLQ.<name>.>`. Its dead letters are read with
    /// [`Client::dead_letters`](crate::Client::dead_letters).
    pub fn is_dead_letter_stream(&self) -> bool {
        self.config.subjects == [format!("$JW.DLQ.{}.>", self.name)]
    }
}

/// A stream's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// The subjects it captures (empty for a mirror or an aggregate).
    pub subjects: Vec<String>,
    /// The stream it mirrors, if it is a mirror.
    pub mirror: Option<String>,
    /// The streams it aggregates.
    pub sources: Vec<String>,
    /// When events are removed.
    pub retention: Retention,
    /// Events older than this are removed.
    pub max_age: Option<Duration>,
    /// Most events kept.
    pub max_events: Option<u64>,
    /// Most events kept per subject.
    pub max_events_per_subject: Option<u64>,
    /// Most bytes kept.
    pub max_bytes: Option<u64>,
    /// What happens at a limit.
    pub discard: DiscardPolicy,
    /// Where events are kept.
    pub storage: StorageType,
    /// Copies kept in a cluster.
    pub replicas: u32,
    /// How long idempotency keys are remembered.
    pub deduplication_window: Duration,
    /// The largest event accepted; `None`: NATS's max payload.
    pub max_event_size: Option<u32>,
    /// A description, or empty.
    pub description: String,
}

/// What a stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamState {
    /// Events stored.
    pub events: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// The id of the first stored event; in an empty stream, `last_id + 1` (or 0 if it never had
    /// an event).
    pub first_id: u64,
    /// When the first stored event was stored; `None` in an empty stream.
    pub first_time: Option<SystemTime>,
    /// The id of the last event stored, even if it was removed since.
    pub last_id: u64,
    /// When the last event was stored; `None` if none ever was.
    pub last_time: Option<SystemTime>,
    /// How many consumers it has.
    pub consumer_count: u32,
    /// How many subjects have events.
    pub subject_count: u64,
    /// Events removed one by one between `first_id` and `last_id`.
    pub deleted_count: u64,
}

/// One stream in detail, from [`Streams::info`]: its info and the event count of each subject.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamDetails {
    /// Configuration and state.
    pub info: StreamInfo,
    /// Events per subject, by subject (at most 1000; see `subjects_truncated`).
    pub subject_counts: BTreeMap<String, u64>,
    /// True if the stream has more (matching) subjects than `subject_counts` lists.
    pub subjects_truncated: bool,
}

/// A consumer's configuration and state, from [`Consumers::list`] and [`Consumers::info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// Its stream.
    pub stream: String,
    /// Its name (an ephemeral consumer's is generated).
    pub name: String,
    /// True if durable (kept for 30 days without a subscriber), false if ephemeral.
    pub durable: bool,
    /// When it was created.
    pub created: Option<SystemTime>,
    /// Subject filters; empty: every subject of the stream.
    pub subjects: Vec<String>,
    /// How long a delivered event may stay unsettled.
    pub processing_timeout: Duration,
    /// The most deliveries of one event; `None`: no limit.
    pub max_deliveries: Option<u32>,
    /// Processing timeouts per delivery, if it has a backoff schedule.
    pub backoff: Vec<Duration>,
    /// Where the events it gives up on go, if anywhere.
    pub dead_letter_stream: Option<String>,
    /// True for a pull consumer, the only kind subscriptions and Fetch serve.
    pub pull: bool,
    /// Events not yet delivered.
    pub pending: u64,
    /// Events delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// Events delivered more than once and not yet acknowledged.
    pub redelivered: u64,
    /// Pull requests waiting for events.
    pub waiting: u64,
    /// The id of the last event delivered.
    pub last_delivered_id: u64,
    /// The id below which every event is settled.
    pub ack_floor_id: u64,
    /// When an event was last delivered; `None` if never.
    pub last_active: Option<SystemTime>,
}

/// Which events a [`Streams::purge_with`] removes.
///
/// ```
/// use jetway_client::PurgeOptions;
///
/// // Of the events on orders.created, keep the newest.
/// let options = PurgeOptions::new().subject("orders.created").keep(1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeOptions {
    subject: Option<String>,
    keep: Option<u64>,
    force: bool,
}

impl PurgeOptions {
    /// Every event.
    pub fn new() -> Self {
        PurgeOptions::default()
    }

    /// Only events on subjects matching this filter (`*` and a last `>` allowed).
    pub fn subject(mut self, filter: impl Into<String>) -> Self {
        self.subject = Some(filter.into());
        self
    }

    /// Keep this many of the newest (matching) events.
    pub fn keep(mut self, count: u64) -> Self {
        self.keep = Some(count);
        self
    }

    /// Purge one of Jetway's internal streams too (`JETWAY_ADVISORIES`, `KV_<store>`), which is
    /// otherwise refused with FAILED_PRECONDITION: advisories not yet made into dead letters, or a
    /// store's keys, are lost.
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }
}

impl Streams<'_> {
    /// Every stream of the account, by name.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// for stream in client.streams().list().await? {
    ///     println!("{}: {} events", stream.name, stream.state.events);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self) -> Result<Vec<StreamInfo>, Error> {
        let mut streams = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListStreamsRequest { page_token };
            let page = self
                .client
                .admin
                .clone()
                .list_streams(self.client.unary(request))
                .await?
                .into_inner();
            for info in page.streams {
                streams.push(stream_info(info)?);
            }
            if page.next_page_token.is_empty() {
                return Ok(streams);
            }
            page_token = page.next_page_token;
        }
    }

    /// Stream `name` in detail: configuration, state, and the event count of every subject (up
    /// to 1000). NOT_FOUND if there is no such stream.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let details = client.streams().info("orders").await?;
    /// println!("{} events, last id {}", details.info.state.events, details.info.state.last_id);
    /// for (subject, count) in &details.subject_counts {
    ///     println!("{subject}: {count}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn info(&self, name: &str) -> Result<StreamDetails, Error> {
        self.info_filtered(name, "").await
    }

    /// [`Streams::info`], counting only the subjects that match `subject_filter` (`*` and a last
    /// `>` allowed; empty: all).
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let paid = client.streams().info_filtered("orders", "orders.paid.*").await?;
    /// println!("{} paid subjects", paid.subject_counts.len());
    /// # Ok(()) }
    /// ```
    pub async fn info_filtered(
        &self,
        name: &str,
        subject_filter: &str,
    ) -> Result<StreamDetails, Error> {
        let request = GetStreamInfoRequest {
            stream: name.to_owned(),
            subject_filter: subject_filter.to_owned(),
        };
        let response = self
            .client
            .admin
            .clone()
            .get_stream_info(self.client.unary(request))
            .await?
            .into_inner();
        let info = response
            .info
            .ok_or_else(|| Error::Protocol("GetStreamInfo answered without info".into()))?;
        Ok(StreamDetails {
            info: stream_info(info)?,
            subject_counts: response.subjects.into_iter().collect(),
            subjects_truncated: response.subjects_truncated,
        })
    }

    /// The names of the streams whose subjects overlap `subject` (a subject, or a filter with
    /// `*` or a last `>`), by name: the stream that captures a subject, or the streams a
    /// consumer filter could read from. JetStream lets no two streams capture the same subject,
    /// so a subject without wildcards has at most one. Mirrors and aggregates capture no
    /// subjects of their own and are never found.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// match client.streams().for_subject("orders.created").await?.as_slice() {
    ///     [] => println!("no stream captures orders.created"),
    ///     [stream] => println!("orders.created is stored in {stream}"),
    ///     several => println!("several streams: {several:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn for_subject(&self, subject: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|stream| {
                stream
                    .config
                    .subjects
                    .iter()
                    .any(|captured| subject::overlaps(captured, subject))
            })
            .map(|stream| stream.name)
            .collect())
    }

    /// Deletes stream `name` with its events and consumers. NOT_FOUND if there is no such stream
    /// (e.g. the second time); FAILED_PRECONDITION for one of Jetway's internal streams
    /// (`JETWAY_ADVISORIES`, `KV_<store>`), which only [`Streams::force_delete`] deletes.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// match client.streams().delete("orders").await {
    ///     Err(e) if e.is_not_found() => println!("already gone"),
    ///     other => other?,
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        self.delete_stream(name, false).await
    }

    /// Deletes stream `name` even if it is one of Jetway's internal streams: deleting
    /// `JETWAY_ADVISORIES` loses the advisories not yet made into dead letters (Jetway makes the
    /// stream again), deleting `KV_<store>` loses the store.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// client.streams().force_delete("KV_scratch").await?;
    /// # Ok(()) }
    /// ```
    pub async fn force_delete(&self, name: &str) -> Result<(), Error> {
        self.delete_stream(name, true).await
    }

    async fn delete_stream(&self, name: &str, force: bool) -> Result<(), Error> {
        let request = DeleteStreamRequest {
            stream: name.to_owned(),
            force,
        };
        self.client
            .admin
            .clone()
            .delete_stream(self.client.unary(request))
            .await?;
        Ok(())
    }

    /// Removes every event of stream `name`, and returns how many there were. The stream, its
    /// consumers and its ids go on (the next event gets the next id).
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let removed = client.streams().purge("orders").await?;
    /// println!("removed {removed} events");
    /// # Ok(()) }
    /// ```
    pub async fn purge(&self, name: &str) -> Result<u64, Error> {
        self.purge_with(name, &PurgeOptions::new()).await
    }

    /// Removes some events of stream `name`: those on some subjects, or all but the newest few;
    /// returns how many were removed.
    ///
    /// ```no_run
    /// use jetway_client::PurgeOptions;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let removed = client
    ///     .streams()
    ///     .purge_with("orders", &PurgeOptions::new().subject("orders.created").keep(1))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn purge_with(&self, name: &str, options: &PurgeOptions) -> Result<u64, Error> {
        let request = PurgeStreamRequest {
            stream: name.to_owned(),
            subject: options.subject.clone().unwrap_or_default(),
            keep: options.keep.unwrap_or_default(),
            force: options.force,
        };
        let response = self
            .client
            .admin
            .clone()
            .purge_stream(self.client.unary(request))
            .await?;
        Ok(response.into_inner().purged)
    }
}

impl Consumers<'_> {
    /// Every consumer of `stream`, by name. NOT_FOUND if there is no such stream.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// for consumer in client.consumers().list("orders").await? {
    ///     println!("{}: {} pending, {} unacked", consumer.name, consumer.pending, consumer.ack_pending);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, stream: &str) -> Result<Vec<ConsumerInfo>, Error> {
        let mut consumers = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListConsumersRequest {
                stream: stream.to_owned(),
                page_token,
            };
            let page = self
                .client
                .admin
                .clone()
                .list_consumers(self.client.unary(request))
                .await?
                .into_inner();
            for info in page.consumers {
                consumers.push(consumer_info(info)?);
            }
            if page.next_page_token.is_empty() {
                return Ok(consumers);
            }
            page_token = page.next_page_token;
        }
    }

    /// Consumer `name` of `stream`: its configuration (delivery policy included) and state.
    /// NOT_FOUND if there is no such consumer or stream.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let info = client.consumers().info("orders", "billing").await?;
    /// println!("dead letters go to {:?}", info.dead_letter_stream);
    /// # Ok(()) }
    /// ```
    pub async fn info(&self, stream: &str, name: &str) -> Result<ConsumerInfo, Error> {
        let request = GetConsumerInfoRequest {
            stream: stream.to_owned(),
            consumer: name.to_owned(),
        };
        let response = self
            .client
            .admin
            .clone()
            .get_consumer_info(self.client.unary(request))
            .await?
            .into_inner();
        let info = response
            .info
            .ok_or_else(|| Error::Protocol("GetConsumerInfo answered without info".into()))?;
        consumer_info(info)
    }
}

fn time(timestamp: Option<Timestamp>) -> Option<SystemTime> {
    timestamp.and_then(|t| SystemTime::try_from(&t).ok())
}

fn duration(
    value: Option<&jetway_api::google::protobuf::Duration>,
    what: &str,
) -> Result<Duration, Error> {
    value
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(|| Error::Protocol(format!("{what} is missing or invalid")))
}

fn stream_info(info: api::StreamInfo) -> Result<StreamInfo, Error> {
    let name = info.name;
    let config = info
        .config
        .ok_or_else(|| Error::Protocol(format!("stream {name} without a configuration")))?;
    let unknown =
        |what: &str, value: i32| Error::Protocol(format!("stream {name} with {what} {value}"));
    let retention = match api::RetentionPolicy::try_from(config.retention) {
        Ok(api::RetentionPolicy::Limits) => Retention::Limits,
        Ok(api::RetentionPolicy::Interest) => Retention::Interest,
        Ok(api::RetentionPolicy::WorkQueue) => Retention::WorkQueue,
        _ => return Err(unknown("retention", config.retention)),
    };
    let discard = match api::DiscardPolicy::try_from(config.discard_policy) {
        Ok(api::DiscardPolicy::Old) => DiscardPolicy::Old,
        Ok(api::DiscardPolicy::New) => DiscardPolicy::New,
        _ => return Err(unknown("discard policy", config.discard_policy)),
    };
    let storage = match api::StorageType::try_from(config.storage) {
        Ok(api::StorageType::File) => StorageType::File,
        Ok(api::StorageType::Memory) => StorageType::Memory,
        _ => return Err(unknown("storage", config.storage)),
    };
    let state = info.state.unwrap_or_default();
    Ok(StreamInfo {
        config: StreamConfig {
            subjects: config.subjects,
            mirror: config.mirror,
            sources: config.sources,
            retention,
            max_age: config
                .max_age
                .as_ref()
                .map(|d| duration(Some(d), &format!("the max age of stream {name}")))
                .transpose()?,
            max_events: config.max_events,
            max_events_per_subject: config.max_events_per_subject,
            max_bytes: config.max_bytes,
            discard,
            storage,
            replicas: config.replicas,
            deduplication_window: duration(
                config.deduplication_window.as_ref(),
                &format!("the deduplication window of stream {name}"),
            )?,
            max_event_size: config.max_event_size,
            description: config.description,
        },
        state: StreamState {
            events: state.events,
            bytes: state.bytes,
            first_id: state.first_id,
            first_time: time(state.first_time),
            last_id: state.last_id,
            last_time: time(state.last_time),
            consumer_count: state.consumer_count,
            subject_count: state.subject_count,
            deleted_count: state.deleted_count,
        },
        created: time(info.created),
        name,
    })
}

fn consumer_info(info: api::ConsumerInfo) -> Result<ConsumerInfo, Error> {
    let processing_timeout = duration(
        info.processing_timeout.as_ref(),
        &format!("the processing timeout of consumer {}", info.name),
    )?;
    let backoff = info
        .backoff
        .iter()
        .map(|d| duration(Some(d), &format!("the backoff of consumer {}", info.name)))
        .collect::<Result<_, _>>()?;
    Ok(ConsumerInfo {
        processing_timeout,
        backoff,
        created: time(info.created),
        last_active: time(info.last_active),
        stream: info.stream,
        name: info.name,
        durable: info.durable,
        subjects: info.subjects,
        max_deliveries: info.max_deliveries,
        dead_letter_stream: info.dead_letter_stream,
        pull: info.pull,
        pending: info.pending,
        ack_pending: info.ack_pending,
        redelivered: info.redelivered,
        waiting: info.waiting,
        last_delivered_id: info.last_delivered_id,
        ack_floor_id: info.ack_floor_id,
    })
}
