//! Reading events without a consumer of one's own: GetEvent (one event by id), ReadEvents (a range
//! that ends once caught up), and the reader behind both ReadEvents and the live feeds of Subscribe
//! ([`crate::live`]).
//!
//! A reader reads through an ordered consumer of its own: ephemeral, in memory, no
//! acknowledgements. JetStream sends every matching event once and in order, and the consumer is
//! recreated from the last event seen if it loses track (a gap, a NATS restart), so a reader never
//! skips or repeats an event. Each ReadEvents call has its own reader; Subscribe calls share one per
//! stream and subject filter. When the reader is dropped (the call ends, or the client goes away),
//! the consumer is deleted; one that outlives Jetway (a crash) is removed by JetStream 30 s after its
//! last pull.
//!
//! A range read ends at the last event the stream had when the read started, so a busy stream does
//! not keep it going forever.
//!
//! A reader holds at most one and a half pulls of [`READ_BATCH`] events that its caller has not
//! taken yet, so a client slow to read costs the server little memory; the rest waits in JetStream.

use std::{
    pin::Pin,
    time::{Duration, SystemTime},
};

use async_nats::{
    Subscriber,
    jetstream::{
        self, ErrorCode,
        consumer::{DeliverPolicy, pull},
        message::StreamMessage,
        stream::LastRawMessageErrorKind,
    },
};
use futures::{StreamExt, stream::BoxStream};
use tokio::{
    sync::watch,
    time::{Instant, Sleep},
};

use crate::{
    Error, ErrorKind, Nats,
    error::{Classify, api_request, stream_not_found},
    format::{self, Event},
    names::{validate_existing_filter, validate_existing_name},
    streams::StreamPointer,
};

/// How long a range read waits for its next event before it asks the stream whether any of the
/// range is left: a purge, `max_age` or deletes can remove the rest, and then no event would come.
const RANGE_IDLE_CHECK: Duration = Duration::from_secs(2);

/// How often a live read asks JetStream whether its stream still exists (a range read asks when it
/// has waited [`RANGE_IDLE_CHECK`] and JetStream did not say what is left of it). The deletion
/// advisory ends a read at once, but nats-server can lose it (it is sent as the stream stops), and
/// the ordered consumer would then try to recreate itself forever: this bounds how long a read of a
/// deleted stream can go on.
const LIVE_CHECK: Duration = Duration::from_secs(5);

/// How long a reader waits before it tries again to make its consumer after a reconnect.
const RESUME_RETRY: Duration = Duration::from_millis(500);

/// The most events one pull of a reader asks for (the ordered consumer's `max_batch`); a new pull
/// goes out when half of them have been taken.
pub const READ_BATCH: i64 = 32;

/// How the consumers of range reads are named: this, then a UUID without hyphens. Readers need a
/// name no unnamed consumer has (those are counted, see [`crate::consumers::UnnamedLimit`]); this one
/// also tells an operator listing consumers what they are.
pub const READ_PREFIX: &str = "jetway-read-";

/// How the consumers of live feeds are named (see [`READ_PREFIX`] and [`crate::live`]).
pub const LIVE_PREFIX: &str = "jetway-live-";

/// A stream of events (ReadEvents, Subscribe), ending at the first error.
pub type Events = BoxStream<'static, Result<Event, Error>>;

/// A range read, as ReadEvents receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSpec {
    /// The stream.
    pub stream: String,
    /// Where to start; `None` is the first event.
    pub from: Option<StreamPointer>,
    /// Only events on subjects matching this filter; empty is all.
    pub subject: String,
    /// The most events read; `None` reads until caught up.
    pub limit: Option<u64>,
}

/// What a failed call reading `stream` means: "no such stream" names it, and JetStream's refusal
/// of a reader on a work-queue stream says so.
fn about_stream(err: Error, stream: &str) -> Error {
    match err.api_code() {
        Some(ErrorCode::STREAM_NOT_FOUND) => stream_not_found(stream),
        Some(
            ErrorCode::CONSUMER_PULL_REQUIRES_ACK
            | ErrorCode::CONSUMER_WQ_REQUIRES_EXPLICIT_ACK
            | ErrorCode::CONSUMER_WQ_MULTIPLE_UNFILTERED
            | ErrorCode::CONSUMER_WQ_CONSUMER_NOT_UNIQUE
            | ErrorCode::CONSUMER_WQ_CONSUMER_NOT_DELIVER_ALL,
        ) => Error::conflict(format!(
            "stream {stream} is a work-queue stream, which JetStream lets only its own consumers \
             (explicit acks, one per subject) read"
        ))
        .with_resource(format!("stream {stream}")),
        _ => err,
    }
}

/// No stream captures `subject`.
pub(crate) fn no_stream(subject: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no stream captures subject {subject}"),
    )
    .with_resource(format!("subject {subject}"))
}

/// GetEvent: the event with this id.
pub async fn get_event(nats: &Nats, stream: &str, id: u64) -> Result<Event, Error> {
    validate_existing_name("stream", stream)?;
    if id == 0 {
        return Err(Error::invalid("id", "must be at least 1"));
    }
    let handle = nats
        .jetstream()
        .get_stream_no_info(stream)
        .await
        .map_err(|err| about_stream(err.classify(), stream))?;
    match handle.get_raw_message(id).await {
        Ok(message) => Ok(event_of(message)),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Err(Error::new(
            ErrorKind::NotFound,
            format!("stream {stream} has no event with id {id}"),
        )
        .with_resource(format!("event {id}"))),
        Err(err) => Err(about_stream(err.classify(), stream)),
    }
}

/// Decodes a stored message into an event.
pub(crate) fn event_of(message: StreamMessage) -> Event {
    format::decode(
        message.sequence,
        message.subject.to_string(),
        Some(&message.headers),
        message.payload,
        SystemTime::from(message.time),
    )
}

/// ReadEvents: the stored events from `spec.from`, up to the last one stored now.
pub async fn read_events(nats: &Nats, spec: &ReadSpec) -> Result<Events, Error> {
    validate_existing_name("stream", &spec.stream)?;
    if !spec.subject.is_empty() {
        validate_existing_filter("subject", &spec.subject)?;
    }
    let from = deliver_policy("from", spec.from)?;
    let reader = Reader::open(
        nats,
        &spec.stream,
        from,
        &spec.subject,
        Bound::CaughtUp(spec.limit),
    )
    .await?;
    Ok(reader.events())
}

/// The one stream whose subjects overlap `subject`.
pub async fn stream_of(nats: &Nats, subject: &str) -> Result<String, Error> {
    let answer = api_request(
        nats,
        "STREAM.NAMES".into(),
        serde_json::json!({ "subject": subject }),
    )
    .await?;
    let mut names: Vec<String> = answer["streams"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|name| name.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    match names.len() {
        0 => Err(no_stream(subject)),
        1 => Ok(names.remove(0)),
        _ => {
            names.sort();
            Err(Error::invalid(
                "stream",
                format!(
                    "subject {subject} overlaps the streams {}; name one",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// Where a read starts, as a deliver policy: the first event when unset. A start time must be
/// representable.
fn deliver_policy(field: &str, from: Option<StreamPointer>) -> Result<DeliverPolicy, Error> {
    Ok(match from {
        None | Some(StreamPointer::Start) => DeliverPolicy::All,
        Some(StreamPointer::End | StreamPointer::Offset(0)) => DeliverPolicy::New,
        Some(StreamPointer::Offset(start_sequence)) => {
            DeliverPolicy::ByStartSequence { start_sequence }
        }
        Some(StreamPointer::Time(time)) => {
            format::validate_time(&format!("{field}.time"), time)?;
            DeliverPolicy::ByStartTime {
                start_time: format::start_time(time),
            }
        }
    })
}

/// When a reader ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bound {
    /// At the last event stored when it opened, or after this many events.
    CaughtUp(Option<u64>),
    /// Never: a live feed.
    Live,
}

/// One read through an ordered consumer; see the module docs.
pub(crate) struct Reader {
    nats: Nats,
    stream: String,
    /// The consumer's first name, once it is created. A consumer the ordered consumer recreates
    /// itself gets `<name>_<n>`; only the first name is deleted (on drop or resume), and recreated
    /// ones expire by their inactive threshold.
    consumer: Option<String>,
    messages: Option<pull::Ordered>,
    /// Changes when the NATS connection goes down or up.
    connected: watch::Receiver<bool>,
    /// Set by a reconnect: the consumer is made again from the event after the last one read.
    /// The ordered consumer would recreate itself too, but only after missing two heartbeats
    /// (about 30 s) when nats-server restarted and lost it.
    reconnected: bool,
    /// JetStream's advisory that the stream was deleted: the ordered consumer would otherwise try
    /// to recreate itself forever.
    deleted: Subscriber,
    /// The last stream sequence to read, for a range read.
    last: Option<u64>,
    /// How many more events may be read.
    remaining: Option<u64>,
    /// The subject filter (empty: all), for asking what is left of a range.
    filter: String,
    /// The stream sequence of the last event read (0: none yet).
    read_up_to: u64,
    /// When the caller last asked for an event; a range read that waits [`RANGE_IDLE_CHECK`] for
    /// one asks what is left of its range. One timer per reader, moved only when it fires, so
    /// events cost no timer work.
    progress: Instant,
    idle: Pin<Box<Sleep>>,
}

impl Reader {
    /// Opens a read of `stream` from `from`, filtered by `filter` (empty: all).
    pub(crate) async fn open(
        nats: &Nats,
        stream: &str,
        from: DeliverPolicy,
        filter: &str,
        bound: Bound,
    ) -> Result<Reader, Error> {
        // Subscribed before the lookup, so a deletion right after it is not missed.
        let deleted = nats
            .client()
            .subscribe(format!("$JS.EVENT.ADVISORY.STREAM.DELETED.{stream}"))
            .await
            .map_err(|err| {
                Error::unavailable(format!("subscribing to deletion advisories: {err}"))
            })?;
        let js = nats.jetstream();
        let handle = js
            .get_stream(stream)
            .await
            .map_err(|err| about_stream(err.classify(), stream))?;
        let (last, remaining) = match bound {
            Bound::CaughtUp(limit) => (Some(handle.cached_info().state.last_sequence), limit),
            Bound::Live => (None, None),
        };
        let mut reader = Reader {
            nats: nats.clone(),
            stream: stream.to_owned(),
            consumer: None,
            messages: None,
            connected: nats.connected(),
            reconnected: false,
            deleted,
            last,
            remaining,
            filter: filter.to_owned(),
            read_up_to: 0,
            progress: Instant::now(),
            idle: Box::pin(tokio::time::sleep(match bound {
                Bound::CaughtUp(_) => RANGE_IDLE_CHECK,
                Bound::Live => LIVE_CHECK,
            })),
        };
        let empty_range = last == Some(0)
            || remaining == Some(0)
            || matches!(from, DeliverPolicy::ByStartSequence { start_sequence }
                if last.is_some_and(|last| start_sequence > last));
        if empty_range {
            return Ok(reader);
        }
        let consumer = reader.create(&handle, from).await?;
        // Where the read starts, whatever the start position: JetStream reports the sequence before
        // the first event it will deliver.
        reader.read_up_to = consumer.cached_info().delivered.stream_sequence;
        if last.is_some() && consumer.cached_info().num_pending == 0 {
            // Nothing to read; the consumer goes when the reader does.
            return Ok(reader);
        }
        reader.messages = Some(pull(consumer, stream).await?);
        Ok(reader)
    }

    /// Creates the reader's ordered consumer, starting at `from`, and deletes the one it replaces.
    async fn create(
        &mut self,
        handle: &jetstream::stream::Stream<impl Send + Sync>,
        from: DeliverPolicy,
    ) -> Result<jetstream::consumer::Consumer<pull::OrderedConfig>, Error> {
        let prefix = if self.last.is_some() {
            READ_PREFIX
        } else {
            LIVE_PREFIX
        };
        let name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        let config = pull::OrderedConfig {
            name: Some(name.clone()),
            deliver_policy: from,
            filter_subject: self.filter.clone(),
            max_batch: READ_BATCH,
            ..Default::default()
        };
        // A filter outside the stream's subjects is accepted: a mirror or an aggregate has no
        // subjects of its own, and its events keep theirs. It just matches nothing.
        let consumer = handle
            .create_consumer(config)
            .await
            .map_err(|err| about_stream(err.classify(), &self.stream))?;
        if let Some(old) = self.consumer.replace(name) {
            self.delete_later(old);
        }
        Ok(consumer)
    }

    /// Makes the consumer again, from the event after the last one read (see `reconnected`).
    async fn resume(&mut self) -> Result<(), Error> {
        // Stop pulling first, so the old ordered consumer does not recreate itself meanwhile.
        self.messages = None;
        let handle = self
            .nats
            .jetstream()
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|err| about_stream(err.classify(), &self.stream))?;
        let from = DeliverPolicy::ByStartSequence {
            start_sequence: self.read_up_to + 1,
        };
        let consumer = self.create(&handle, from).await?;
        self.messages = Some(pull(consumer, &self.stream).await?);
        tracing::debug!(stream = %self.stream, after = self.read_up_to, "reader resumed after a reconnect");
        Ok(())
    }

    /// Deletes `consumer` in the background. Best effort: a consumer left behind expires by itself.
    fn delete_later(&self, consumer: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let js = self.nats.jetstream().clone();
        let stream = self.stream.clone();
        runtime.spawn(async move {
            if let Err(err) = js.delete_consumer_from_stream(&consumer, &stream).await
                && err.classify().api_code() != Some(ErrorCode::CONSUMER_NOT_FOUND)
            {
                tracing::debug!(%err, %stream, %consumer, "could not delete a reader's consumer");
            }
        });
    }

    /// The reader as a stream of events.
    fn events(self) -> Events {
        futures::stream::unfold(self, |mut reader| async move {
            let item = reader.next().await?.map(event_of);
            Some((item, reader))
        })
        .boxed()
    }

    /// The next stored message, `None` once the read is complete.
    pub(crate) async fn next(&mut self) -> Option<Result<StreamMessage, Error>> {
        // A range read's quiet time counts from here: a caller slow to ask for the next event
        // (its client reads slowly) is not a quiet range.
        if self.last.is_some() {
            self.progress = Instant::now();
        }
        loop {
            if self.reconnected {
                match self.resume().await {
                    Ok(()) => self.reconnected = false,
                    // The stream is gone, or refuses readers: trying again cannot help.
                    Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Conflict) => {
                        self.reconnected = false;
                        return Some(Err(err));
                    }
                    Err(err) => {
                        // JetStream is not back yet (it may be recovering its store), or the
                        // connection went again: try once more after a pause, or at the next
                        // reconnect.
                        tracing::debug!(stream = %self.stream, %err, "resuming a reader failed; retrying");
                        tokio::select! {
                            Some(_) = self.deleted.next() => {
                                self.reconnected = false;
                                return Some(Err(stream_not_found(&self.stream)));
                            }
                            () = tokio::time::sleep(RESUME_RETRY) => {}
                            Ok(()) = self.connected.changed() => {}
                        }
                        continue;
                    }
                }
            }
            let messages = self.messages.as_mut()?;
            let message = tokio::select! {
                // What is already there goes first: an event taken is sent before any check.
                biased;
                Some(_) = self.deleted.next() => {
                    self.messages = None;
                    return Some(Err(stream_not_found(&self.stream)));
                }
                message = messages.next() => message,
                Ok(()) = self.connected.changed() => {
                    self.reconnected = *self.connected.borrow_and_update();
                    continue;
                }
                () = &mut self.idle => {
                    let quiet_until = self.progress + RANGE_IDLE_CHECK;
                    let next_check = if self.last.is_some() && Instant::now() < quiet_until {
                        quiet_until
                    } else {
                        // Not while NATS is away: the checks would only queue up in async-nats.
                        if self.nats.is_connected() {
                            // A range read asks what is left of it; whether the stream exists is
                            // asked only when that gets no answer, and by a live read.
                            let gone = match self.last {
                                Some(_) => self.range_left().gone().await,
                                None => None,
                            };
                            if gone == Some(true) {
                                self.messages = None;
                                return None;
                            }
                            let js = self.nats.jetstream().clone();
                            if gone.is_none() && stream_deleted(js, self.stream.clone()).await {
                                self.messages = None;
                                return Some(Err(stream_not_found(&self.stream)));
                            }
                        }
                        let every = match self.last {
                            Some(_) => RANGE_IDLE_CHECK,
                            None => LIVE_CHECK,
                        };
                        // From the checks' end, which may have waited for JetStream.
                        Instant::now() + every
                    };
                    self.idle.as_mut().reset(next_check);
                    continue;
                }
            };
            let message = match message {
                None => {
                    self.messages = None;
                    return None;
                }
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    self.messages = None;
                    return Some(Err(Error::unavailable(format!(
                        "reading stream {}: {err}",
                        self.stream
                    ))));
                }
            };
            let Ok(info) = message.info() else {
                // The ordered consumer checks every message's metadata before handing it out.
                continue;
            };
            let (sequence, pending, time) = (info.stream_sequence, info.pending, info.published);
            self.read_up_to = sequence;
            if self.last.is_some_and(|last| sequence > last) {
                self.messages = None;
                return None;
            }
            // Done after this one: the last event of the range, the limit, or nothing left that
            // matches (then nothing up to the last sequence is left either).
            self.remaining = self.remaining.map(|n| n - 1);
            if self
                .last
                .is_some_and(|last| sequence == last || pending == 0)
                || self.remaining == Some(0)
            {
                self.messages = None;
            }
            let message = message.message;
            return Some(Ok(StreamMessage {
                subject: message.subject,
                sequence,
                headers: message.headers.unwrap_or_default(),
                payload: message.payload,
                time,
            }));
        }
    }

    /// What is left of this range read, as an owned request (the reader itself is not `Sync`).
    fn range_left(&self) -> RangeLeft {
        RangeLeft {
            js: self.nats.jetstream().clone(),
            stream: self.stream.clone(),
            filter: self.filter.clone(),
            after: self.read_up_to,
            last: self.last.unwrap_or_default(),
        }
    }
}

/// Whether JetStream says `stream` does not exist. When unsure (NATS down, a timeout), no. Owned
/// arguments, as [`RangeLeft`]: the reader itself is not `Sync`.
async fn stream_deleted(js: jetstream::Context, stream: String) -> bool {
    let Ok(handle) = js.get_stream_no_info(&stream).await else {
        return false;
    };
    match handle.get_info().await {
        Ok(_) => false,
        Err(err) => err.classify().api_code() == Some(ErrorCode::STREAM_NOT_FOUND),
    }
}

/// Starts pulling from a reader's `consumer` on `stream`.
async fn pull(
    consumer: jetstream::consumer::Consumer<pull::OrderedConfig>,
    stream: &str,
) -> Result<pull::Ordered, Error> {
    consumer
        .messages()
        .await
        .map_err(|err| Error::unavailable(format!("reading stream {stream}: {err}")))
}

/// What a range read has left: events on `filter` after `after`, up to `last`.
struct RangeLeft {
    js: jetstream::Context,
    stream: String,
    filter: String,
    after: u64,
    last: u64,
}

impl RangeLeft {
    /// Whether none is left in the stream (purged, expired or deleted), by asking JetStream for
    /// the next event on the filter; `None` when JetStream did not say (NATS down, or the stream
    /// itself is gone).
    async fn gone(self) -> Option<bool> {
        let stream = self.js.get_stream_no_info(&self.stream).await.ok()?;
        let filter = if self.filter.is_empty() {
            ">"
        } else {
            &self.filter
        };
        match stream
            .raw_message_builder()
            .sequence(self.after + 1)
            .next_by_subject(filter)
            .send()
            .await
        {
            Ok(next) => Some(next.sequence > self.last),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Some(true),
            Err(_) => None,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Stop pulling first, so the ordered consumer does not recreate what is deleted here.
        self.messages = None;
        if let Some(consumer) = self.consumer.take() {
            self.delete_later(consumer);
        }
    }
}

#[cfg(test)]
mod tests {
    use jetway_testkit::NatsServer;

    use super::*;
    use crate::pipeline::tests::connect;

    /// nats-server can lose the advisory that a stream was deleted (it is sent as the stream
    /// stops); a live read then learns it from its own check and ends with NOT_FOUND rather than
    /// waiting forever while the ordered consumer tries to recreate itself.
    #[tokio::test]
    async fn a_live_read_ends_when_its_stream_is_deleted_without_an_advisory() {
        let server = NatsServer::start();
        let nats = connect(&server, 64).await;
        let mut reader = Reader::open(&nats, "s", DeliverPolicy::New, "", Bound::Live)
            .await
            .unwrap();
        // As if the advisory were lost: the reader listens where none comes.
        reader.deleted = nats.client().subscribe("advisory.lost").await.unwrap();
        nats.jetstream().delete_stream("s").await.unwrap();
        // A guard against a hang, not a timing assertion: the check runs every LIVE_CHECK.
        let ended = tokio::time::timeout(LIVE_CHECK * 6, reader.next())
            .await
            .expect("the read ends")
            .expect("with an error")
            .unwrap_err();
        assert_eq!(ended.kind(), ErrorKind::NotFound, "{ended:?}");
        assert!(ended.to_string().contains("stream s "), "{ended:?}");
    }
}
