//! Reading events without a consumer of one's own, through `jetway.events.v1`: one event by id
//! ([`Client::get_event`]), a range that ends once caught up ([`Client::read`]), and a live feed of
//! new events ([`Client::subscribe_live`]). They hand out [`StoredEvent`]s, which Fetch and dead
//! letters use too: an event as stored, with its payload (a protobuf message or raw bytes) and its
//! custom headers.

use std::{
    collections::BTreeMap,
    pin::Pin,
    task::{Context, Poll},
    time::SystemTime,
};

use futures::{Stream, StreamExt, stream::BoxStream};
use jetway_api::{
    google::protobuf::Any,
    jetway::events::v1::{
        self as api, GetEventRequest, ReadEventsRequest, SubscribeRequest, event::Payload as Pb,
    },
};
use prost::bytes::Bytes;

use crate::{Client, DecodeError, Error, StartPosition, error::decode_any};

/// The body of a [`StoredEvent`].
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A protobuf message, published with [`Client::publish`] (or by any Windshift client).
    Message(Any),
    /// Bytes that are not a protobuf message, published with [`Client::publish_bytes`].
    Raw {
        /// The bytes as published.
        data: Bytes,
        /// Their media type, e.g. `application/json`, if the publisher gave one.
        content_type: Option<String>,
    },
}

/// An event as it is stored: from [`Client::get_event`], [`Client::read`],
/// [`Client::subscribe_live`], a [`Fetcher`](crate::Fetcher), or inside a
/// [`DeadLetter`](crate::DeadLetter). Unlike a subscription's [`Event`](crate::Event) it settles
/// nothing, and it carries the custom headers and raw payloads that only `jetway.events.v1` gives
/// back.
///
/// ```no_run
/// use jetway_client::Payload;
/// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
/// let event = client.get_event("orders", 1).await?;
/// if let Payload::Raw { data, content_type } = event.payload() {
///     println!("{} bytes of {content_type:?}", data.len());
/// }
/// println!("published by {:?}", event.headers().get("published-by"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    id: u64,
    subject: String,
    timestamp: Option<SystemTime>,
    payload: Payload,
    headers: BTreeMap<String, String>,
    idempotency_key: Option<String>,
    trace_parent: Option<String>,
    trace_state: Option<String>,
    delivery_attempt: u64,
}

impl StoredEvent {
    /// Reads the wire form; `what` names the call for the error if the server left the event out.
    pub(crate) fn from_proto(event: Option<api::Event>, what: &str) -> Result<StoredEvent, Error> {
        let event =
            event.ok_or_else(|| Error::Protocol(format!("{what} answered without an event")))?;
        let payload = match event.payload {
            Some(Pb::Data(any)) => Payload::Message(any),
            Some(Pb::Raw(raw)) => Payload::Raw {
                data: raw.data,
                content_type: Some(raw.content_type).filter(|t| !t.is_empty()),
            },
            None => {
                return Err(Error::Protocol(format!(
                    "{what} answered with event {} without a payload",
                    event.id
                )));
            }
        };
        Ok(StoredEvent {
            id: event.id,
            subject: event.subject,
            timestamp: event.timestamp.and_then(|t| SystemTime::try_from(&t).ok()),
            payload,
            headers: event.headers.into_iter().collect(),
            idempotency_key: event.idempotency_key,
            trace_parent: event.trace_parent,
            trace_state: event.trace_state,
            delivery_attempt: event.delivery_attempt,
        })
    }

    /// The id: the event's stream sequence.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The subject it was published on.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When it happened: the publisher's timestamp, else when it was stored.
    pub fn timestamp(&self) -> Option<SystemTime> {
        self.timestamp
    }

    /// The body: a protobuf message or raw bytes.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The custom headers it was published with (see [`PublishOptions::header`]), by name.
    ///
    /// [`PublishOptions::header`]: crate::PublishOptions::header
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// The idempotency key it was published with.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The W3C `traceparent` of the publisher.
    pub fn trace_parent(&self) -> Option<&str> {
        self.trace_parent.as_deref()
    }

    /// The W3C `tracestate` of the publisher.
    pub fn trace_state(&self) -> Option<&str> {
        self.trace_state.as_deref()
    }

    /// For a fetched event, 1 on the first delivery and counting up with each redelivery; 0 where
    /// no consumer delivered it (reads, live subscriptions, dead letters).
    pub fn delivery_attempt(&self) -> u64 {
        self.delivery_attempt
    }

    /// The message decoded as `M`; fails if the event holds another type or raw bytes.
    pub fn decode<M: prost::Name + Default>(&self) -> Result<M, DecodeError> {
        match &self.payload {
            Payload::Message(any) => decode_any(any),
            Payload::Raw { .. } => Err(DecodeError::Raw {
                expected: M::full_name(),
            }),
        }
    }
}

/// Optional settings of a [`Client::read_with`].
///
/// ```
/// use jetway_client::{ReadOptions, StartPosition};
///
/// let options = ReadOptions::new().from(StartPosition::Offset(100)).subject("orders.created").limit(10);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    from: Option<StartPosition>,
    subject: Option<String>,
    limit: Option<u32>,
}

impl ReadOptions {
    /// From the first event, every subject, until caught up.
    pub fn new() -> Self {
        ReadOptions::default()
    }

    /// Where the read starts. Default: [`StartPosition::Start`]. With [`StartPosition::End`] it
    /// ends at once; an offset is an event id, from 1.
    pub fn from(mut self, position: StartPosition) -> Self {
        self.from = Some(position);
        self
    }

    /// Only events on subjects matching this filter (`*` and a last `>` allowed). Default: all.
    pub fn subject(mut self, filter: impl Into<String>) -> Self {
        self.subject = Some(filter.into());
        self
    }

    /// At most this many events. Default: until caught up.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// Events from [`Client::read`] or [`Client::subscribe_live`], oldest first. A read ends once it
/// has caught up; a live subscription runs until dropped, or ends with an error (NOT_FOUND when
/// the stream is deleted, UNAVAILABLE when the server shuts down). Neither reconnects: to go on
/// after an error, read again from the id after the last event received.
pub struct EventStream {
    inner: BoxStream<'static, Result<StoredEvent, Error>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Result<StoredEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Client {
    /// The event `id` of `stream`. NOT_FOUND if the stream has no event with this id (it was
    /// never stored, or was removed).
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let event = client.get_event("orders", 1).await?;
    /// println!("#{} {}", event.id(), event.subject());
    /// # Ok(()) }
    /// ```
    pub async fn get_event(&self, stream: &str, id: u64) -> Result<StoredEvent, Error> {
        let request = GetEventRequest {
            stream: stream.to_owned(),
            id,
        };
        let response = self
            .events_ext
            .clone()
            .get_event(self.unary(request))
            .await?;
        StoredEvent::from_proto(response.into_inner().event, "GetEvent")
    }

    /// Every event of `stream`, oldest first, up to the last one stored when the read started:
    /// replay and inspection, with no consumer to set up and nothing acknowledged.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let mut events = client.read("orders").await?;
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("#{} {}", event.id(), event.subject());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read(&self, stream: &str) -> Result<EventStream, Error> {
        self.read_with(stream, &ReadOptions::new()).await
    }

    /// [`Client::read`] from a position, of some subjects, or of a few events. A range past the
    /// last event ends at once, with nothing.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use jetway_client::{ReadOptions, StartPosition};
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let options = ReadOptions::new().from(StartPosition::Offset(2)).limit(10);
    /// let events: Vec<_> = client.read_with("orders", &options).await?.try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_with(
        &self,
        stream: &str,
        options: &ReadOptions,
    ) -> Result<EventStream, Error> {
        let request = ReadEventsRequest {
            stream: stream.to_owned(),
            from: options.from.map(StartPosition::to_ext_pointer),
            subject: options.subject.clone().unwrap_or_default(),
            limit: options.limit.unwrap_or_default(),
        };
        // No deadline: a read of a long stream takes as long as it takes.
        let responses = self
            .events_ext
            .clone()
            .read_events(tonic::Request::new(request))
            .await?
            .into_inner();
        Ok(EventStream {
            inner: responses
                .map(|response| StoredEvent::from_proto(response?.event, "ReadEvents"))
                .boxed(),
        })
    }

    /// The events stored from now on whose subjects match `subject` (a subject or a filter), in
    /// the one stream whose subjects overlap it (INVALID_ARGUMENT if several do, NOT_FOUND if
    /// none does). A live feed without acks: every subscriber gets every event, once (at most
    /// once). It returns once the server is reading, so every event stored after that arrives.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let mut events = client.subscribe_live("orders.>").await?;
    /// while let Some(event) = events.next().await {
    ///     println!("{}", event?.subject());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_live(&self, subject: &str) -> Result<EventStream, Error> {
        self.live(String::new(), subject).await
    }

    /// [`Client::subscribe_live`] on a given stream, e.g. a mirror, or one of several streams
    /// that overlap `subject`.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let events = client.subscribe_live_in("orders-mirror", "orders.paid").await?;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_live_in(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<EventStream, Error> {
        self.live(stream.to_owned(), subject).await
    }

    async fn live(&self, stream: String, subject: &str) -> Result<EventStream, Error> {
        let request = SubscribeRequest {
            subject: subject.to_owned(),
            stream,
        };
        // No deadline: a live feed runs until the caller drops it.
        let responses = self
            .events_ext
            .clone()
            .subscribe(tonic::Request::new(request))
            .await?
            .into_inner();
        Ok(EventStream {
            inner: responses
                .map(|response| StoredEvent::from_proto(response?.event, "Subscribe"))
                .boxed(),
        })
    }
}
