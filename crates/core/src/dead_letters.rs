//! Dead letters: copies of the events a consumer gives up on, kept in a dead-letter stream, and
//! redriven from there.
//!
//! **Capture.** A consumer made with a dead-letter stream carries its name in its metadata
//! ([`METADATA_KEY`]). JetStream announces every event a consumer gives up on with an advisory:
//! `MAX_DELIVERIES` when the processing timeout of its last delivery passed, `MSG_TERMINATED` when a
//! client rejected it permanently. Advisories are plain NATS messages, lost if nobody listens at that
//! moment, so Jetway stores them in a stream of its own, [`ADVISORY_STREAM`] (a work queue that keeps
//! an advisory 7 days), made before any consumer gets a dead-letter stream.
//!
//! **Processing.** The worker ([`run`]) runs in every Jetway server, and all of them share one
//! durable consumer on that stream, so each advisory is handled once, by whichever server is up. For
//! an advisory it reads the dead-letter stream from the consumer's metadata, gets the event by its
//! stream sequence, publishes a copy to the dead-letter stream, and only then acks the advisory. An
//! advisory that arrives while no Jetway runs waits in the stream; one whose processing was cut short
//! (a crash, NATS down) comes back. Storing a copy twice is impossible: its subject is unique to
//! (stream, consumer, sequence), and the publish expects no event on that subject yet.
//!
//! **Layout.** A dead-letter stream captures `$JW.DLQ.<name>.>`, and a dead letter is stored on
//! `$JW.DLQ.<name>.<stream>.<consumer>.<sequence>`: the original body and headers (except
//! JetStream's `Nats-*`), plus `JW-DLQ-*` headers saying where it came from and why.
//!
//! **Redrive** publishes a dead letter on its original subject with the message id
//! `jetway-redrive:<dead-letter stream>:<id>`, then deletes it from the dead-letter stream. A retried
//! redrive finds the dead letter gone, or (within the target stream's deduplication window) its
//! publish deduplicated, so no event is published twice.

use std::{collections::HashSet, time::Duration, time::SystemTime};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind, ErrorCode,
        consumer::{AckPolicy, pull},
        message::{PublishMessage, StreamMessage},
        stream::{self, LastRawMessageErrorKind, RetentionPolicy},
    },
};
use futures::{StreamExt, stream::BoxStream};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, ErrorKind, Nats,
    error::{Classify, about_consumer},
    format::{self, Event},
    names::{validate_existing_name, validate_name},
    publish,
    reads::{Bound, Reader},
    streams::{DEFAULT_DEDUPE_WINDOW, validate_sequence},
};

/// The stream that keeps JetStream's advisories until the worker has processed them.
pub const ADVISORY_STREAM: &str = "JETWAY_ADVISORIES";
/// The durable consumer every Jetway server's worker shares.
const WORKER: &str = "dead-letter-worker";
/// The consumer metadata entry that names a consumer's dead-letter stream.
pub const METADATA_KEY: &str = "jetway.dead_letter_stream";
/// The advisories that mean a consumer gave up on an event.
const ADVISORY_SUBJECTS: [&str; 2] = [
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>",
    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.>",
];
/// How long an unprocessed advisory is kept: Jetway may be down that long without losing one.
const ADVISORY_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How long the worker waits before retrying what failed (an advisory, or reaching NATS).
const RETRY: Duration = Duration::from_secs(2);
/// Advisories the worker pulls at once; each is processed before its 30 s ack wait.
const WORKER_BATCH: usize = 10;
/// The most dead letters one RedriveDeadLetters call with `all` redrives.
pub const MAX_REDRIVE: u32 = 1000;

const H_STREAM: &str = "JW-DLQ-Stream";
const H_CONSUMER: &str = "JW-DLQ-Consumer";
const H_SUBJECT: &str = "JW-DLQ-Subject";
const H_SEQUENCE: &str = "JW-DLQ-Sequence";
const H_ATTEMPTS: &str = "JW-DLQ-Attempts";
const H_REASON: &str = "JW-DLQ-Reason";
/// When the original event was stored.
const H_TIME: &str = "JW-DLQ-Time";
/// The original event's idempotency key (its `Nats-Msg-Id`).
const H_MESSAGE_ID: &str = "JW-DLQ-Msg-Id";

/// Why an event was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It was delivered as often as the consumer allows, and never settled.
    MaxDeliveries,
    /// A client rejected it permanently.
    Rejected,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::MaxDeliveries => "max_deliveries",
            Reason::Rejected => "rejected",
        }
    }

    fn parse(text: &str) -> Option<Reason> {
        [Reason::MaxDeliveries, Reason::Rejected]
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream.
    pub id: u64,
    /// The stream the event came from.
    pub stream: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// Why.
    pub reason: Reason,
    /// How many times the consumer delivered it.
    pub attempts: u64,
    /// When it was dead-lettered.
    pub time: SystemTime,
    /// The original event, with its id in the original stream.
    pub event: Event,
}

/// A stream of dead letters, ending at the first error.
pub type DeadLetters = BoxStream<'static, Result<DeadLetter, Error>>;

/// Which dead letters ListDeadLetters sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSpec {
    /// The dead-letter stream.
    pub dead_letter_stream: String,
    /// Only those from this stream; empty is any.
    pub stream: String,
    /// Only those from this consumer; empty is any.
    pub consumer: String,
    /// Start at this id; 0 is the first.
    pub from_id: u64,
    /// The most sent; `None` until caught up.
    pub limit: Option<u64>,
}

/// Which dead letters RedriveDeadLetters takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These ids.
    Ids(Vec<u64>),
    /// Every one stored now, oldest first, narrowed by stream and consumer (empty: any), up to
    /// `limit` (0: [`MAX_REDRIVE`]).
    All {
        /// Only those from this stream.
        stream: String,
        /// Only those from this consumer.
        consumer: String,
        /// The most redriven.
        limit: u32,
    },
}

/// What RedriveDeadLetters did. Every id is in exactly one list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redriven {
    /// Redriven: (dead letter id, id of the event published again).
    pub redriven: Vec<(u64, u64)>,
    /// Not in the dead-letter stream, not a dead letter, or repeated.
    pub invalid_ids: Vec<u64>,
    /// Could not be published now; still in the dead-letter stream.
    pub temporary_failed_ids: Vec<u64>,
}

/// The subjects of a dead-letter stream.
fn subjects(dead_letters: &str) -> String {
    format!("$JW.DLQ.{dead_letters}.>")
}

/// Where the dead letters of a stream and consumer are (`*` for any), and of one event.
fn subject(dead_letters: &str, stream: &str, consumer: &str, sequence: &str) -> String {
    format!("$JW.DLQ.{dead_letters}.{stream}.{consumer}.{sequence}")
}

/// Before a permanent reject: makes sure its dead letter will be made. The termination advisory
/// that JetStream publishes is lost unless the advisory stream captures it, so for a consumer with
/// a dead-letter stream that stream is made again if it was deleted. An error means the reject must
/// not be sent (the event stays in flight); a consumer that no longer exists needs nothing.
pub(crate) async fn prepare_reject(nats: &Nats, stream: &str, consumer: &str) -> Result<(), Error> {
    // Refused at once, as the reject itself would be, instead of waiting out two request timeouts.
    if !nats.is_connected() {
        return Err(Error::unavailable("NATS is not connected"));
    }
    let info = async {
        nats.jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|err| err.classify())?
            .consumer_info(consumer)
            .await
            .map_err(|err| err.classify())
    };
    match info.await {
        Ok(info) if info.config.metadata.contains_key(METADATA_KEY) => {
            ensure_advisory_stream(nats).await
        }
        Ok(_) => Ok(()),
        Err(err)
            if matches!(
                err.api_code(),
                Some(ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND)
            ) =>
        {
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Makes what a consumer with a dead-letter stream needs: the advisory stream and the dead-letter
/// stream itself.
pub(crate) async fn prepare(nats: &Nats, dead_letters: &str) -> Result<(), Error> {
    ensure_advisory_stream(nats).await?;
    ensure_dead_letter_stream(nats, dead_letters).await
}

async fn ensure_advisory_stream(nats: &Nats) -> Result<(), Error> {
    let config = stream::Config {
        name: ADVISORY_STREAM.to_owned(),
        description: Some(
            "Jetway: consumer advisories waiting to be turned into dead letters".into(),
        ),
        subjects: ADVISORY_SUBJECTS.map(str::to_owned).to_vec(),
        retention: RetentionPolicy::WorkQueue,
        max_age: ADVISORY_MAX_AGE,
        max_messages: -1,
        max_bytes: -1,
        max_consumers: -1,
        duplicate_window: DEFAULT_DEDUPE_WINDOW,
        ..Default::default()
    };
    match nats.jetstream().create_stream(config).await {
        Ok(_) => Ok(()),
        Err(err) => match err.classify() {
            // It exists (a create with the same configuration succeeds, so it was changed since).
            e if e.api_code() == Some(ErrorCode::STREAM_NAME_EXIST) => Ok(()),
            e => Err(e),
        },
    }
}

async fn ensure_dead_letter_stream(nats: &Nats, dead_letters: &str) -> Result<(), Error> {
    let js = nats.jetstream();
    let config = stream::Config {
        name: dead_letters.to_owned(),
        description: Some("Jetway: dead letters".into()),
        subjects: vec![subjects(dead_letters)],
        max_messages: -1,
        max_bytes: -1,
        max_consumers: -1,
        duplicate_window: DEFAULT_DEDUPE_WINDOW,
        ..Default::default()
    };
    let created = match js.create_stream(config).await {
        Ok(_) => true,
        Err(err) => match err.classify() {
            e if e.api_code() == Some(ErrorCode::STREAM_NAME_EXIST) => false,
            e => return Err(about_consumer(e, dead_letters, "")),
        },
    };
    if !created {
        check_dead_letter_stream(nats, dead_letters)
            .await
            .map_err(|err| match err.kind() {
                ErrorKind::Conflict => Error::conflict(format!(
                    "{err}: it does not capture {}",
                    subjects(dead_letters)
                ))
                .with_field("dead_letter_stream"),
                _ => err,
            })?;
    }
    Ok(())
}

/// Checks that a stream exists and is a dead-letter stream.
async fn check_dead_letter_stream(nats: &Nats, dead_letters: &str) -> Result<(), Error> {
    let stream = nats
        .jetstream()
        .get_stream(dead_letters)
        .await
        .map_err(|err| about_consumer(err.classify(), dead_letters, ""))?;
    if stream
        .cached_info()
        .config
        .subjects
        .contains(&subjects(dead_letters))
    {
        Ok(())
    } else {
        Err(Error::conflict(format!(
            "dead_letter_stream: stream {dead_letters} is not a dead-letter stream"
        ))
        .with_field("dead_letter_stream"))
    }
}

/// The dead-letter worker: processes advisories until `shutdown` is cancelled. It starts once the
/// advisory stream exists (the first consumer with a dead-letter stream makes it), and reopens its
/// consumer whenever that fails. Once it has run, it makes the advisory stream again if it is
/// deleted (only a forced DeleteStream does that), so that later advisories are kept. See the module
/// docs.
pub async fn run(nats: Nats, shutdown: CancellationToken) {
    let mut failing = false;
    let mut has_run = false;
    loop {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            opened = open_worker(&nats, has_run) => opened,
        };
        let failure = match opened {
            Ok(Worker::Waiting(mut created)) => {
                failing = false;
                // Nothing to do until a consumer gets a dead-letter stream.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = created.next() => continue,
                }
            }
            Ok(Worker::Running(mut advisories)) => {
                has_run = true;
                if failing {
                    tracing::info!("the dead-letter worker is processing advisories again");
                }
                failing = false;
                loop {
                    let next = tokio::select! {
                        () = shutdown.cancelled() => return,
                        next = advisories.next() => next,
                    };
                    match next {
                        Some(Ok(advisory)) => {
                            // Cut short at shutdown, the advisory comes back to the next worker.
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = handle(&nats, advisory) => {}
                            }
                        }
                        // NATS went quiet; the pull stream carries on after a reconnect.
                        Some(Err(err))
                            if err.kind() == pull::MessagesErrorKind::MissingHeartbeat => {}
                        Some(Err(err)) => break err.to_string(),
                        None => break "the advisory consumer ended".to_owned(),
                    }
                }
            }
            Err(err) => err.to_string(),
        };
        // Logged once per outage, not on every retry.
        if !failing {
            tracing::warn!(err = %failure, "the dead-letter worker stopped; retrying");
            failing = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// The worker's state: waiting for the advisory stream to be made, or pulling from it.
enum Worker {
    /// The advisory stream does not exist; this hears when it is made.
    Waiting(async_nats::Subscriber),
    /// Advisories to process (boxed: the pull stream is large, and made once per outage).
    Running(Box<pull::Stream>),
}

/// Opens the worker's consumer; if the advisory stream does not exist, makes it when `recreate`,
/// else waits for it.
async fn open_worker(nats: &Nats, recreate: bool) -> Result<Worker, Error> {
    // Subscribed before the lookup, so a stream made right after it is not missed.
    let created = nats
        .client()
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.STREAM.CREATED.{ADVISORY_STREAM}"
        ))
        .await
        .map_err(Error::unavailable)?;
    let js = nats.jetstream();
    let stream = js
        .get_stream_no_info(ADVISORY_STREAM)
        .await
        .map_err(|err| err.classify())?;
    if let Err(err) = stream.get_info().await {
        match err.classify() {
            e if e.api_code() == Some(ErrorCode::STREAM_NOT_FOUND) && recreate => {
                tracing::warn!(
                    stream = ADVISORY_STREAM,
                    "the advisory stream was deleted; making it again"
                );
                ensure_advisory_stream(nats).await?;
            }
            e if e.api_code() == Some(ErrorCode::STREAM_NOT_FOUND) => {
                return Ok(Worker::Waiting(created));
            }
            e => return Err(e),
        }
    }
    let config = pull::Config {
        durable_name: Some(WORKER.to_owned()),
        description: Some("Jetway: turns advisories into dead letters".into()),
        ack_policy: AckPolicy::Explicit,
        ..Default::default()
    };
    let consumer = js
        .create_consumer_on_stream(config, ADVISORY_STREAM)
        .await
        .map_err(|err| err.classify())?;
    let advisories = consumer
        .stream()
        .max_messages_per_batch(WORKER_BATCH)
        .messages()
        .await
        .map_err(|err| Error::unavailable(format!("pulling advisories: {err}")))?;
    Ok(Worker::Running(Box::new(advisories)))
}

/// An advisory that a consumer gave up on an event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Advisory {
    reason: Reason,
    stream: String,
    consumer: String,
    sequence: u64,
    deliveries: u64,
}

impl Advisory {
    fn parse(payload: &[u8]) -> Option<Advisory> {
        let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let reason = match value["type"].as_str()? {
            "io.nats.jetstream.advisory.v1.max_deliver" => Reason::MaxDeliveries,
            "io.nats.jetstream.advisory.v1.terminated" => Reason::Rejected,
            _ => return None,
        };
        Some(Advisory {
            reason,
            stream: value["stream"].as_str()?.to_owned(),
            consumer: value["consumer"].as_str()?.to_owned(),
            sequence: value["stream_seq"].as_u64()?,
            deliveries: value["deliveries"].as_u64().unwrap_or_default(),
        })
    }
}

/// Whether an advisory is done with, or must come back later.
enum Outcome {
    Done,
    Retry,
}

async fn handle(nats: &Nats, message: jetstream::Message) {
    let outcome = match Advisory::parse(&message.payload) {
        Some(advisory) => dead_letter(nats, &advisory).await,
        None => {
            tracing::warn!(subject = %message.subject, "ignoring an advisory that cannot be read");
            Outcome::Done
        }
    };
    let ack = match outcome {
        Outcome::Done => AckKind::Ack,
        Outcome::Retry => AckKind::Nak(Some(RETRY)),
    };
    if let Err(err) = message.ack_with(ack).await {
        // Not acked: it comes back after the ack wait, and a second copy is never stored.
        tracing::warn!(%err, "could not settle an advisory");
    }
}

/// Stores the dead letter an advisory announces, if its consumer has a dead-letter stream.
async fn dead_letter(nats: &Nats, advisory: &Advisory) -> Outcome {
    let Advisory {
        stream, consumer, ..
    } = advisory;
    let sequence = advisory.sequence;
    let source = match nats.jetstream().get_stream_no_info(stream).await {
        Ok(source) => source,
        Err(err) => {
            tracing::warn!(%err, %stream, "an advisory names an invalid stream");
            return Outcome::Done;
        }
    };
    let gone = |err: &Error| {
        matches!(
            err.api_code(),
            Some(ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND)
        )
    };
    let dead_letters = match source.consumer_info(consumer).await {
        Ok(info) => match info.config.metadata.get(METADATA_KEY) {
            Some(dead_letters) => dead_letters.clone(),
            // Not a consumer with a dead-letter stream: nothing to do.
            None => return Outcome::Done,
        },
        Err(err) => {
            let err = err.classify();
            if gone(&err) {
                tracing::warn!(%stream, %consumer, sequence, "cannot dead-letter an event: its consumer was deleted before the advisory was processed");
                return Outcome::Done;
            }
            tracing::warn!(%err, %stream, %consumer, sequence, "cannot read the consumer of an advisory; retrying");
            return Outcome::Retry;
        }
    };
    let original = match source.get_raw_message(sequence).await {
        Ok(original) => original,
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {
            tracing::warn!(%stream, %consumer, sequence, "cannot dead-letter an event: it is no longer in its stream");
            return Outcome::Done;
        }
        Err(err) => {
            let err = err.classify();
            if gone(&err) {
                return Outcome::Done;
            }
            tracing::warn!(%err, %stream, sequence, "cannot read a dead-lettered event; retrying");
            return Outcome::Retry;
        }
    };
    let subject = subject(&dead_letters, stream, consumer, &sequence.to_string());
    let (message, size) = copy(advisory, original);
    let result = match nats
        .jetstream()
        .send_publish(subject.clone(), message)
        .await
    {
        Ok(ack) => ack.await,
        Err(err) => Err(err),
    };
    let err = match result {
        Ok(_) => {
            tracing::info!(%stream, %consumer, sequence, %dead_letters, reason = advisory.reason.as_str(), "event dead-lettered");
            return Outcome::Done;
        }
        Err(err) => publish::classify(nats, err, &subject, Some(0), size).await,
    };
    match err.kind() {
        // Stored before: this advisory was processed once already.
        ErrorKind::Conflict => Outcome::Done,
        ErrorKind::NotFound => {
            // The dead-letter stream was deleted; make it again and retry.
            if let Err(err) = ensure_dead_letter_stream(nats, &dead_letters).await {
                tracing::warn!(%err, %dead_letters, "cannot recreate a dead-letter stream");
            }
            Outcome::Retry
        }
        // The copy is too large, or its headers are: it never will be stored.
        ErrorKind::Invalid => {
            tracing::error!(%err, %stream, sequence, %dead_letters, "cannot dead-letter an event: the copy is too large; the event stays in its stream");
            Outcome::Done
        }
        _ => {
            tracing::warn!(%err, %dead_letters, "cannot store a dead letter; retrying");
            Outcome::Retry
        }
    }
}

/// The dead letter of an event: its body and headers, where it came from and why. Returns the
/// message with its size (body and headers), and the publish expects its subject to be empty.
fn copy(advisory: &Advisory, original: StreamMessage) -> (PublishMessage, usize) {
    let mut headers = forwardable(&original.headers);
    let mut add = |name: &'static str, value: String| headers.insert(name, value);
    add(H_STREAM, advisory.stream.clone());
    add(H_CONSUMER, advisory.consumer.clone());
    add(H_SUBJECT, original.subject.to_string());
    add(H_SEQUENCE, advisory.sequence.to_string());
    add(H_ATTEMPTS, advisory.deliveries.to_string());
    add(H_REASON, advisory.reason.as_str().to_owned());
    add(H_TIME, format::format_time(original.time.into()));
    if let Some(id) = original.headers.get(format::MESSAGE_ID) {
        add(H_MESSAGE_ID, id.as_str().to_owned());
    }
    let size = original.payload.len() + format::header_size(&headers);
    let message = PublishMessage::build()
        .payload(original.payload)
        .headers(headers)
        .message_id(format!(
            "jetway-dead-letter:{}:{}:{}",
            advisory.stream, advisory.consumer, advisory.sequence
        ))
        .expected_last_subject_sequence(0);
    (message, size)
}

/// The headers of a stored event that travel with it: all but JetStream's (`Nats-*`) and
/// Jetway's dead-letter bookkeeping (`JW-*`).
fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, values) in headers.iter() {
        let lower = AsRef::<str>::as_ref(name).to_ascii_lowercase();
        if lower.starts_with("nats-") || lower.starts_with("jw-") {
            continue;
        }
        for value in values {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// Decodes a message of a dead-letter stream; `None` if it is not a dead letter.
fn decode(message: StreamMessage) -> Option<DeadLetter> {
    let headers = &message.headers;
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let reason = Reason::parse(&header(H_REASON)?)?;
    let sequence = header(H_SEQUENCE)?.parse().ok()?;
    let dead_lettered = SystemTime::from(message.time);
    let stored = header(H_TIME)
        .and_then(|time| format::parse_time(&time))
        .unwrap_or(dead_lettered);
    let mut event = format::decode(
        sequence,
        header(H_SUBJECT)?,
        Some(headers),
        message.payload,
        stored,
    );
    event.idempotency_key = header(H_MESSAGE_ID);
    Some(DeadLetter {
        id: message.sequence,
        stream: header(H_STREAM)?,
        consumer: header(H_CONSUMER)?,
        reason,
        attempts: header(H_ATTEMPTS).and_then(|n| n.parse().ok()).unwrap_or(0),
        time: dead_lettered,
        event,
    })
}

fn validate_filters(stream: &str, consumer: &str) -> Result<(), Error> {
    if !stream.is_empty() {
        validate_existing_name("stream", stream)?;
    }
    if !consumer.is_empty() {
        validate_existing_name("consumer", consumer)?;
    }
    Ok(())
}

/// Opens a read of the dead letters matching the filters (empty: any).
async fn read(
    nats: &Nats,
    dead_letters: &str,
    stream: &str,
    consumer: &str,
    from_id: u64,
    limit: Option<u64>,
) -> Result<Reader, Error> {
    validate_name("dead_letter_stream", dead_letters)?;
    validate_filters(stream, consumer)?;
    validate_sequence("from_id", from_id)?;
    check_dead_letter_stream(nats, dead_letters).await?;
    let any = |name: &str| if name.is_empty() { "*" } else { name }.to_owned();
    let filter = subject(dead_letters, &any(stream), &any(consumer), "*");
    let from = match from_id {
        0 => jetstream::consumer::DeliverPolicy::All,
        start_sequence => jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence },
    };
    Reader::open(nats, dead_letters, from, &filter, Bound::CaughtUp(limit)).await
}

/// ListDeadLetters: the dead letters matching `spec`, oldest first, up to the last one stored now.
pub async fn list(nats: &Nats, spec: &ListSpec) -> Result<DeadLetters, Error> {
    let reader = read(
        nats,
        &spec.dead_letter_stream,
        &spec.stream,
        &spec.consumer,
        spec.from_id,
        spec.limit,
    )
    .await?;
    Ok(futures::stream::unfold(reader, |mut reader| async move {
        loop {
            match reader.next().await? {
                Ok(message) => match decode(message) {
                    Some(dead_letter) => return Some((Ok(dead_letter), reader)),
                    // Something else stored on a dead-letter subject: not a dead letter.
                    None => continue,
                },
                Err(err) => return Some((Err(err), reader)),
            }
        }
    })
    .boxed())
}

/// RedriveDeadLetters: publishes the selected dead letters again on their original subjects and
/// removes them from the dead-letter stream. Stops at the first NATS failure (a retry is safe).
pub async fn redrive(
    nats: &Nats,
    dead_letters: &str,
    selection: &Selection,
) -> Result<Redriven, Error> {
    let mut result = Redriven::default();
    match selection {
        Selection::Ids(ids) => {
            validate_name("dead_letter_stream", dead_letters)?;
            if ids.is_empty() {
                return Err(Error::invalid("ids", "list ids, or set all"));
            }
            if ids.len() > MAX_REDRIVE as usize {
                return Err(Error::invalid(
                    "ids",
                    format!("must list at most {MAX_REDRIVE}"),
                ));
            }
            check_dead_letter_stream(nats, dead_letters).await?;
            let stream = nats
                .jetstream()
                .get_stream_no_info(dead_letters)
                .await
                .map_err(|err| err.classify())?;
            let mut seen = HashSet::new();
            for &id in ids {
                if !seen.insert(id) || id == 0 {
                    result.invalid_ids.push(id);
                    continue;
                }
                match stream.get_raw_message(id).await {
                    Ok(message) => redrive_one(nats, dead_letters, message, &mut result).await?,
                    Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        result.invalid_ids.push(id);
                    }
                    Err(err) => return Err(err.classify()),
                }
            }
        }
        Selection::All {
            stream,
            consumer,
            limit,
        } => {
            if *limit > MAX_REDRIVE {
                return Err(Error::invalid(
                    "limit",
                    format!("must be at most {MAX_REDRIVE}"),
                ));
            }
            let limit = match limit {
                0 => MAX_REDRIVE,
                n => *n,
            };
            let mut reader =
                read(nats, dead_letters, stream, consumer, 0, Some(limit.into())).await?;
            while let Some(message) = reader.next().await {
                redrive_one(nats, dead_letters, message?, &mut result).await?;
            }
        }
    }
    Ok(result)
}

/// Redrives one message of the dead-letter stream, recording the outcome in `result`.
async fn redrive_one(
    nats: &Nats,
    dead_letters: &str,
    message: StreamMessage,
    result: &mut Redriven,
) -> Result<(), Error> {
    let id = message.sequence;
    let Some(subject) = message
        .headers
        .get(H_SUBJECT)
        .map(|s| s.as_str().to_owned())
    else {
        result.invalid_ids.push(id);
        return Ok(());
    };
    let headers = forwardable(&message.headers);
    let size = message.payload.len() + format::header_size(&headers);
    let publication = PublishMessage::build()
        .payload(message.payload)
        .headers(headers)
        .message_id(format!("jetway-redrive:{dead_letters}:{id}"));
    let published = match nats
        .jetstream()
        .send_publish(subject.clone(), publication)
        .await
    {
        Ok(ack) => ack.await,
        Err(err) => Err(err),
    };
    let event_id = match published {
        Ok(ack) => ack.sequence,
        Err(err) => {
            let err = publish::classify(nats, err, &subject, None, size).await;
            return match err.kind() {
                // No stream takes it now, it is too large for the one that does, or that one is
                // full: it stays a dead letter.
                ErrorKind::NotFound | ErrorKind::Invalid | ErrorKind::LimitReached => {
                    tracing::warn!(%err, id, %dead_letters, "cannot redrive a dead letter");
                    result.temporary_failed_ids.push(id);
                    Ok(())
                }
                // It may have been stored; redriving again is safe, as each dead letter is
                // published under the same message id every time.
                ErrorKind::TimedOut => Err(Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "JetStream did not acknowledge the redriven event {id} in time; redrive again"
                    ),
                )),
                _ => Err(err),
            };
        }
    };
    let stream = nats
        .jetstream()
        .get_stream_no_info(dead_letters)
        .await
        .map_err(|err| err.classify())?;
    match stream.delete_message(id).await {
        Ok(_) => {}
        // Removed meanwhile (a concurrent redrive of the same dead letter).
        Err(err) if err.classify().api_code() == Some(ErrorCode::NO_MESSAGE_FOUND) => {}
        Err(err) => return Err(err.classify()),
    }
    tracing::info!(id, event_id, %subject, %dead_letters, "dead letter redriven");
    result.redriven.push((id, event_id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn advisories_parse_both_kinds_and_ignore_others() {
        let max = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"orders","consumer":"w","stream_seq":2,"deliveries":3}"#;
        assert_eq!(
            Advisory::parse(max),
            Some(Advisory {
                reason: Reason::MaxDeliveries,
                stream: "orders".into(),
                consumer: "w".into(),
                sequence: 2,
                deliveries: 3
            })
        );
        let term = br#"{"type":"io.nats.jetstream.advisory.v1.terminated","stream":"orders","consumer":"w","consumer_seq":1,"stream_seq":1,"deliveries":1}"#;
        assert_eq!(Advisory::parse(term).unwrap().reason, Reason::Rejected);
        assert_eq!(
            Advisory::parse(br#"{"type":"io.nats.jetstream.advisory.v1.nak"}"#),
            None
        );
        assert_eq!(Advisory::parse(b"not json"), None);
    }

    #[test]
    fn a_copy_keeps_the_event_and_says_where_it_came_from() {
        let mut headers = HeaderMap::new();
        headers.insert(format::DATA_TYPE, "windshift.test.v1.StringValue");
        headers.insert(format::MESSAGE_ID, "order-42");
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        headers.insert("published-by", "billing");
        let original = StreamMessage {
            subject: "orders.created".into(),
            sequence: 5,
            headers,
            payload: Bytes::from_static(b"body"),
            time: time::OffsetDateTime::UNIX_EPOCH,
        };
        let advisory = Advisory {
            reason: Reason::Rejected,
            stream: "orders".into(),
            consumer: "billing".into(),
            sequence: 5,
            deliveries: 2,
        };
        let (message, size) = copy(&advisory, original);
        assert!(size > 4);
        let outbound = message.outbound_message("x");
        let stored = StreamMessage {
            subject: "$JW.DLQ.dead.orders.billing.5".into(),
            sequence: 9,
            headers: outbound.headers.unwrap(),
            payload: outbound.payload,
            time: time::OffsetDateTime::UNIX_EPOCH,
        };
        // The copy is stored only if its subject has no event yet.
        assert!(
            stored
                .headers
                .get("Nats-Expected-Last-Subject-Sequence")
                .is_some()
        );
        let dead = decode(stored).unwrap();
        assert_eq!(
            (dead.id, dead.stream.as_str(), dead.consumer.as_str()),
            (9, "orders", "billing")
        );
        assert_eq!((dead.reason, dead.attempts), (Reason::Rejected, 2));
        assert_eq!(
            (dead.event.id, dead.event.subject.as_str()),
            (5, "orders.created")
        );
        assert_eq!(dead.event.idempotency_key.as_deref(), Some("order-42"));
        assert_eq!(dead.event.data_type, "windshift.test.v1.StringValue");
        assert_eq!(
            dead.event.headers,
            vec![("published-by".to_owned(), "billing".to_owned())]
        );
        assert_eq!(dead.event.body, Bytes::from_static(b"body"));
    }
}
