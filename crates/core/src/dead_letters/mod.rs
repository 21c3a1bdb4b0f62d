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

mod listing;
mod provision;
mod redrive;
mod worker;

pub use listing::list;
pub(crate) use provision::{prepare, prepare_reject};
pub use redrive::redrive;
pub use worker::run;

use std::{time::Duration, time::SystemTime};

use async_nats::{HeaderMap, jetstream::message::StreamMessage};
use futures::stream::BoxStream;

use crate::{
    Error,
    format::{self, Event},
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

/// The headers of a stored event that travel with it: all but JetStream's (`Nats-*`) and
/// Jetway's dead-letter bookkeeping (`JW-*`).
pub(super) fn forwardable(headers: &HeaderMap) -> HeaderMap {
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
pub(super) fn decode(message: StreamMessage) -> Option<DeadLetter> {
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
