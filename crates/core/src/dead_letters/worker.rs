//! The dead-letter worker: turns each stored advisory into a copy of the event in its consumer's
//! dead-letter stream, then acks the advisory.

use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind, ErrorCode,
    consumer::{AckPolicy, pull},
    message::{PublishMessage, StreamMessage},
    stream::LastRawMessageErrorKind,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    ADVISORY_STREAM, H_ATTEMPTS, H_CONSUMER, H_MESSAGE_ID, H_REASON, H_SEQUENCE, H_STREAM,
    H_SUBJECT, H_TIME, METADATA_KEY, RETRY, Reason, WORKER, WORKER_BATCH, forwardable,
    provision::{ensure_advisory_stream, ensure_dead_letter_stream},
    subject,
};
use crate::{Error, ErrorKind, Nats, error::Classify, format, publish};

/// The dead-letter worker: processes advisories until `shutdown` is cancelled. It starts once the
/// advisory stream exists (the first consumer with a dead-letter stream makes it; the worker hears
/// so, or finds out within 5 s), and reopens its consumer whenever that fails. Once it has run, it
/// makes the advisory stream again if it is deleted (only a forced DeleteStream does that), so that
/// later advisories are kept. See the module docs.
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
                // Nothing to do until a consumer gets a dead-letter stream. The advisory that it
                // was made is not enough to go by (see WAITING_CHECK), so look again now and then.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = created.next() => continue,
                    () = tokio::time::sleep(WAITING_CHECK) => continue,
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

/// How often a worker waiting for the advisory stream looks for it again. It hears when the stream
/// is made, but nats-server announces a stream just before its lookups find it (and can lose the
/// announcement): a worker that looked too early, or heard nothing, would otherwise wait for good
/// while advisories pile up unprocessed.
const WAITING_CHECK: Duration = Duration::from_secs(5);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnectSettings;
    use crate::dead_letters::decode;
    use async_nats::HeaderMap;
    use bytes::Bytes;
    use futures::FutureExt;
    use jetway_testkit::{NatsServer, eventually};

    /// A waiting worker starts once the advisory stream exists even when the advisory that
    /// announced the stream told it nothing: nats-server sends it just before its lookups find the
    /// stream (a worker that looked then waited for good), and can lose it. Here the worker's user
    /// may not hear stream advisories, and the stream is made only after the worker looked for it.
    #[tokio::test]
    async fn a_waiting_worker_starts_once_the_advisory_stream_exists_unannounced() {
        let server = NatsServer::start_with_config(
            &[],
            Some(
                r#"authorization { users = [
                    { user: worker, password: pw, permissions: { subscribe: { deny: "$JS.EVENT.ADVISORY.STREAM.>" } } }
                    { user: admin, password: pw }
                ] }"#,
            ),
        );
        let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), "pw".into())
            .connect(server.url())
            .await
            .unwrap();
        let mut audits = admin.subscribe("$JS.EVENT.ADVISORY.API").await.unwrap();
        admin.flush().await.unwrap();
        let nats = Nats::connect(&ConnectSettings {
            url: format!("nats://worker:pw@127.0.0.1:{}", server.port()),
            name: "dead-letter-worker-test".into(),
            publish_max_pending: 64,
            security: Default::default(),
        })
        .await
        .unwrap();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run(nats.clone(), shutdown.clone()));

        // JetStream's audit of the worker's lookup: the worker has been told there is no stream.
        let lookup = format!("$JS.API.STREAM.INFO.{ADVISORY_STREAM}");
        eventually("the worker looked for the advisory stream", || {
            let looked =
                std::iter::from_fn(|| audits.next().now_or_never().flatten()).any(|audit| {
                    let audit: serde_json::Value = serde_json::from_slice(&audit.payload).unwrap();
                    audit["subject"] == lookup.as_str()
                });
            async move { looked.then_some(()) }
        })
        .await;
        ensure_advisory_stream(&nats).await.unwrap();

        let js = jetstream::new(admin);
        eventually("the worker pulls advisories", || async {
            let stream = js.get_stream(ADVISORY_STREAM).await.ok()?;
            let info = stream.consumer_info(WORKER).await.ok()?;
            (info.num_waiting > 0).then_some(())
        })
        .await;
        shutdown.cancel();
        worker.await.unwrap();
    }

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
