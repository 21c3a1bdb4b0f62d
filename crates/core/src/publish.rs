//! Publishing: builds the on-stream message (body and `WS-*` headers, `Nats-Msg-Id` for the
//! idempotency key, the expected last subject sequence for optimistic concurrency), publishes it to
//! JetStream, and maps the ack to the event id (the stream sequence). A single publish is sent as a
//! plain NATS message with a reply subject of the connection's publish inbox, where JetStream's
//! ack comes back (as a [`crate::pipeline::Pipeline`] reads its own acks).

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use async_nats::{
    HeaderMap, HeaderName, Subject,
    jetstream::{
        context::{PublishError as JsPublishError, PublishErrorKind as JsPublishErrorKind},
        message::PublishMessage,
    },
};
use bytes::Bytes;
use metrics::{Counter, Histogram};
use tracing::Instrument;

use crate::{
    Error, ErrorKind, Nats,
    connection::PUBLISH_ACK_TIMEOUT,
    format,
    names::validate_subject,
    pipeline::wire::{read_ack, sort_send_error},
    publish_failure::{self, Failure, Target},
    telemetry::{self, TraceContext},
};

/// Longest idempotency key accepted. JetStream keeps every key of the dedupe window in memory.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 1024;

/// One event to publish.
#[derive(Debug, Clone, Default)]
pub struct Publication {
    /// The subject; a stream must capture it.
    pub subject: String,
    /// The full protobuf name of the body's message type (`WS-Data-Type`); may be empty.
    pub data_type: String,
    /// Set for a raw payload: no `WS-Data-Type` is written, and a non-empty value is stored as
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The serialized message, or the raw bytes.
    pub body: Bytes,
    /// Custom headers, stored under their own names (see [`format::validate_headers`]).
    pub headers: Vec<(String, String)>,
    /// When the event happened; `None` means now.
    pub timestamp: Option<SystemTime>,
    /// JetStream deduplicates events with the same key within the stream's window.
    pub idempotency_key: Option<String>,
    /// The sequence of the last event on this subject (0 for none), or the publish fails.
    pub expected_last_id: Option<u64>,
    /// The publisher's W3C trace context, stored as `WS-Trace-Parent` / `WS-Trace-State`.
    pub trace_parent: Option<String>,
    /// See `trace_parent`.
    pub trace_state: Option<String>,
}

/// A stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Its stream sequence: the event id.
    pub id: u64,
    /// The idempotency key was seen before, and `id` is the original event's.
    pub duplicate: bool,
}

/// Publishes events: the one path behind PublishEvent, PublishStream and PublishBatch, so all of
/// them validate, store and report errors alike. Cheap to clone; the metric handles are resolved
/// once here, so the hot path does no registry lookup.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

struct PublisherInner {
    nats: Nats,
    ok: Counter,
    duplicate: Counter,
    conflict: Counter,
    error: Counter,
    duration: Histogram,
}

impl Publisher {
    /// A publisher over `nats`.
    pub fn new(nats: Nats) -> Publisher {
        let outcome = |result: &'static str| metrics::counter!(telemetry::metrics::PUBLISHES, "result" => result);
        Publisher {
            inner: Arc::new(PublisherInner {
                nats,
                ok: outcome("ok"),
                duplicate: outcome("duplicate"),
                conflict: outcome("conflict"),
                error: outcome("error"),
                duration: metrics::histogram!(telemetry::metrics::PUBLISH_DURATION),
            }),
        }
    }

    /// Publishes one event and waits for JetStream to store it. The publish runs inside a
    /// `<subject> publish` span, and waits while the connection's ack window
    /// ([`crate::ConnectSettings::publish_max_pending`]) is full.
    pub async fn publish(&self, event: Publication) -> Result<Published, Error> {
        let (report, prepared) = self.prepare(event);
        let result = match prepared {
            Ok(message) => self.store(message).instrument(report.span.clone()).await,
            Err(err) => Err(err),
        };
        self.finish(report, &result);
        result
    }

    async fn store(&self, message: Prepared) -> Result<Published, Error> {
        let nats = &self.inner.nats;
        // Held until JetStream answers, so the window counts acks in flight. The window is never
        // closed, so acquiring cannot fail.
        let _permit = nats.publish_window().acquire().await.ok();
        match send(nats, message.subject, message.message).await {
            Ok(published) => Ok(published),
            Err(err) => Err(message.facts.classify(nats, err).await),
        }
    }

    /// The connection events are published on.
    pub(crate) fn nats(&self) -> &Nats {
        &self.inner.nats
    }

    /// Starts the publish of `event`: opens its span, with the trace context it stores, and builds
    /// its message, or says why it cannot be sent. Every publish path starts here and ends in
    /// [`Publisher::finish`].
    pub(crate) fn prepare(&self, mut event: Publication) -> (Report, Result<Prepared, Error>) {
        let span = telemetry::publish_span(&event.subject);
        let started = Instant::now();
        // The stored trace context is the producer span's, or the caller's when spans are off.
        let trace = TraceContext {
            parent: event.trace_parent.take(),
            state: event.trace_state.take(),
        }
        .forward(&span);
        (event.trace_parent, event.trace_state) = (trace.parent, trace.state);
        let expected = event.expected_last_id;
        let prepared = match build(event) {
            Err(invalid) => Err(invalid),
            Ok(_) if !self.inner.nats.is_connected() => {
                Err(Error::unavailable("not connected to NATS"))
            }
            Ok((subject, message, size)) => Ok(Prepared {
                facts: Facts {
                    subject: subject.clone(),
                    expected,
                    size,
                },
                subject,
                message,
            }),
        };
        (Report { span, started }, prepared)
    }

    /// Ends a publish: records the outcome on its span and in the metrics.
    pub(crate) fn finish(&self, report: Report, result: &Result<Published, Error>) {
        let inner = &self.inner;
        let Report { span, started } = report;
        let counter = match result {
            Ok(published) => {
                span.record("messaging.message.id", published.id);
                telemetry::ok(&span);
                if published.duplicate {
                    &inner.duplicate
                } else {
                    &inner.ok
                }
            }
            Err(err) => {
                telemetry::error(&span, &err.to_string());
                // A publish conflicts only when its expected_last_id is not the last event's.
                if err.kind() == ErrorKind::Conflict {
                    &inner.conflict
                } else {
                    &inner.error
                }
            }
        };
        counter.increment(1);
        inner.duration.record(started.elapsed());
    }
}

/// A publish under way: its span, and when it started.
pub(crate) struct Report {
    /// The `<subject> publish` span; the publish's work runs inside it.
    pub(crate) span: tracing::Span,
    started: Instant,
}

/// A validated event, ready to send.
pub(crate) struct Prepared {
    /// Where it goes.
    pub(crate) subject: Subject,
    /// Its body and headers.
    pub(crate) message: PublishMessage,
    /// What an error report needs.
    pub(crate) facts: Facts,
}

/// What a failed publish's error report needs to know about the message.
pub(crate) struct Facts {
    subject: Subject,
    expected: Option<u64>,
    size: usize,
}

impl Facts {
    /// Sorts `err`, a failed publish of this message (see [`classify`]).
    pub(crate) async fn classify(&self, nats: &Nats, err: JsPublishError) -> Error {
        classify(nats, err, &self.subject, self.expected, self.size).await
    }
}

/// Publishes `message` to `subject` with a reply subject of the connection's publish inbox, and
/// reads JetStream's ack: at most `PUBLISH_ACK_TIMEOUT` (5 s) for the send and the ack together,
/// as `jetstream::Context::send_publish` bounds each. The error is still to be sorted. Cancel-safe:
/// a cancelled publish leaves the inbox's table.
async fn send(
    nats: &Nats,
    subject: Subject,
    message: PublishMessage,
) -> Result<Published, JsPublishError> {
    let mut waiter = nats
        .acks()
        .wait()
        .await
        .map_err(|err| JsPublishError::with_source(JsPublishErrorKind::BrokenPipe, err))?;
    let message = message.outbound_message(subject);
    let exchange = async {
        nats.client()
            .publish_with_reply_and_headers(
                message.subject,
                waiter.reply(),
                message.headers.unwrap_or_default(),
                message.payload,
            )
            .await
            .map_err(|err| sort_send_error(&err))?;
        // None: the inbox's subscription ended (the client was closed).
        waiter
            .answer()
            .await
            .ok_or_else(|| JsPublishError::new(JsPublishErrorKind::BrokenPipe))
    };
    let reply = tokio::time::timeout(PUBLISH_ACK_TIMEOUT, exchange)
        .await
        .map_err(|_| JsPublishError::new(JsPublishErrorKind::TimedOut))??;
    read_ack(&reply)
}

/// Builds the message, and returns it with its subject and its size (body and headers) for error
/// reports.
fn build(mut event: Publication) -> Result<(Subject, PublishMessage, usize), Error> {
    validate_subject("subject", &event.subject)?;
    let subject = Subject::from(std::mem::take(&mut event.subject));
    if !is_header_safe(&event.data_type) {
        return Err(Error::invalid(
            "data.type_url",
            "must be printable ASCII without spaces",
        ));
    }
    format::validate_headers("headers", &event.headers)?;
    let mut headers = HeaderMap::new();
    let mut size = event.body.len();
    // Each header line is `Name: value\r\n`. Our own names are static and the values are moved
    // in, so nothing is validated or copied twice.
    let mut insert = |name: HeaderName, value: String| {
        size += AsRef::<str>::as_ref(&name).len() + value.len() + 4;
        headers.insert(name, value);
    };
    match event.content_type {
        None => insert(HeaderName::from_static(format::DATA_TYPE), event.data_type),
        Some(content_type) => {
            format::validate_content_type("raw.content_type", &content_type)?;
            if !content_type.is_empty() {
                insert(HeaderName::from_static(format::CONTENT_TYPE), content_type);
            }
        }
    }
    for (name, value) in event.headers {
        // Checked by `validate_headers` above, so this does not fail.
        let name =
            HeaderName::try_from(name).map_err(|err| Error::invalid("headers", err.to_string()))?;
        insert(name, value);
    }
    let time = event.timestamp.unwrap_or_else(SystemTime::now);
    insert(
        HeaderName::from_static(format::PUBLISHED_TIME),
        format::format_time(time),
    );
    if let Some(parent) = event
        .trace_parent
        .filter(|v| is_header_safe(v) && !v.is_empty())
    {
        insert(HeaderName::from_static(format::TRACE_PARENT), parent);
        if let Some(state) = event
            .trace_state
            .filter(|v| format::is_header_value(v) && !v.is_empty())
        {
            insert(HeaderName::from_static(format::TRACE_STATE), state);
        }
    }
    if let Some(key) = event
        .idempotency_key
        .as_deref()
        .filter(|key| !key.is_empty())
    {
        size += format::MESSAGE_ID.len() + key.len() + 4;
    }
    // `headers()` replaces the whole map, so the message id and expectations come after it.
    let mut message = PublishMessage::build().payload(event.body).headers(headers);
    if let Some(key) = event.idempotency_key.filter(|key| !key.is_empty()) {
        if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Error::invalid(
                "idempotency_key",
                format!("must be at most {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
            ));
        }
        if !format::is_header_value(&key) {
            return Err(Error::invalid(
                "idempotency_key",
                "must not contain control characters",
            ));
        }
        message = message.message_id(key);
    }
    if let Some(expected) = event.expected_last_id {
        message = message.expected_last_subject_sequence(expected);
    }
    Ok((subject, message, size))
}

/// Like [`format::is_header_value`], and also no whitespace: type names and trace parents have none.
fn is_header_safe(value: &str) -> bool {
    value.bytes().all(|b| b.is_ascii_graphic())
}

/// Sorts a failed JetStream publish to `subject` (`expected` and `size` as the message had them;
/// see [`publish_failure::sort`]).
pub(crate) async fn classify(
    nats: &Nats,
    err: JsPublishError,
    subject: &str,
    expected: Option<u64>,
    size: usize,
) -> Error {
    match publish_failure::sort(nats, &err, Target::Subject(subject)).await {
        Failure::WrongLastSequence => Error::conflict(format!(
            "expected_last_id {} does not match the last event on subject {subject}",
            expected.unwrap_or_default()
        ))
        .with_field("expected_last_id"),
        Failure::NoStream => Error::new(
            ErrorKind::NotFound,
            format!("no stream is bound to subject {subject}"),
        )
        .with_resource(format!("subject {subject}")),
        Failure::Unanswered { stream } => {
            Error::unavailable(format!("stream {stream} did not answer the publish"))
        }
        Failure::TimedOut => Error::new(
            ErrorKind::TimedOut,
            "publish timed out waiting for JetStream",
        ),
        Failure::Disconnected(cause) => {
            Error::unavailable(format!("publishing to {subject}: {cause}"))
        }
        Failure::TooLarge { limit } => Error::invalid(
            "data",
            format!("the event is {size} bytes, over the limit of {limit} bytes"),
        ),
        Failure::HeadersTooLarge(_) => Error::invalid(
            "headers",
            "the event's headers (custom headers, the data type, idempotency key and trace \
             context together) exceed JetStream's limit of 64 KiB",
        ),
        Failure::StreamFull(api) => publish_failure::full("the stream refuses new events", &api),
        Failure::Api(err) | Failure::Nats(err) => err,
    }
}

#[cfg(test)]
mod tests {
    use jetway_testkit::NatsServer;

    use super::*;

    fn event() -> Publication {
        Publication {
            subject: "orders.created".into(),
            data_type: "windshift.test.v1.StringValue".into(),
            body: Bytes::from_static(b"\x0a\x03abc"),
            ..Default::default()
        }
    }

    #[test]
    fn builds_the_windshift_headers() {
        let mut e = event();
        e.timestamp =
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_720_779_072_100));
        e.idempotency_key = Some("k-1".into());
        e.expected_last_id = Some(0);
        e.trace_parent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let (_, m, size) = build(e).unwrap();
        assert!(size > 5);
        let m = m.outbound_message("orders.created");
        let h = m.headers.as_ref().unwrap();
        assert_eq!(
            h.get(format::DATA_TYPE).unwrap().as_str(),
            "windshift.test.v1.StringValue"
        );
        assert_eq!(
            h.get(format::PUBLISHED_TIME).unwrap().as_str(),
            "2024-07-12T10:11:12.1Z"
        );
        assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), "k-1");
        assert_eq!(
            h.get("Nats-Expected-Last-Subject-Sequence")
                .unwrap()
                .as_str(),
            "0"
        );
        assert!(h.get(format::TRACE_PARENT).is_some());
        assert!(h.get(format::TRACE_STATE).is_none());
        assert_eq!(m.payload, Bytes::from_static(b"\x0a\x03abc"));
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        let field = |e: Publication| {
            let err = build(e).map(drop).unwrap_err();
            err.field().unwrap_or_default().to_owned()
        };
        let mut e = event();
        e.subject = "orders.*".into();
        assert_eq!(field(e), "subject");
        let mut e = event();
        e.idempotency_key = Some("a\r\nb".into());
        assert_eq!(field(e), "idempotency_key");
        let mut e = event();
        e.idempotency_key = Some("k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1));
        assert_eq!(field(e), "idempotency_key");
        let mut e = event();
        e.data_type = "bad type".into();
        assert_eq!(field(e), "data.type_url");
        let mut e = event();
        e.headers = vec![("WS-Data-Type".into(), "x".into())];
        assert_eq!(field(e), "headers[\"WS-Data-Type\"]");
        let mut e = event();
        e.content_type = Some("text/plain\n".into());
        assert_eq!(field(e), "raw.content_type");
    }

    #[test]
    fn raw_payloads_carry_a_content_type_and_custom_headers_instead_of_a_data_type() {
        let e = Publication {
            data_type: String::new(),
            content_type: Some("application/json".into()),
            body: Bytes::from_static(b"{}"),
            headers: vec![("published-by".into(), "billing".into())],
            ..event()
        };
        let (_, m, _) = build(e).unwrap();
        let m = m.outbound_message("orders.created");
        let h = m.headers.as_ref().unwrap();
        assert!(h.get(format::DATA_TYPE).is_none());
        assert_eq!(
            h.get(format::CONTENT_TYPE).unwrap().as_str(),
            "application/json"
        );
        assert_eq!(h.get("published-by").unwrap().as_str(), "billing");
        let untyped = Publication {
            content_type: Some(String::new()),
            ..event()
        };
        let (_, m, _) = build(untyped).unwrap();
        let h = m.outbound_message("orders.created").headers.unwrap();
        assert!(h.get(format::CONTENT_TYPE).is_none() && h.get(format::DATA_TYPE).is_none());
    }

    /// A connection to `server` with stream `s` on `s.>`, and a subscriber on `quiet.>` that keeps
    /// quiet: no stream captures those subjects, but NATS sees a subscriber, so only the ack
    /// timeout answers a publish there.
    async fn connect(server: &NatsServer) -> (Nats, async_nats::Subscriber) {
        let nats = crate::pipeline::tests::connect(server, 64).await;
        let quiet = crate::pipeline::tests::silence(&nats).await;
        (nats, quiet)
    }

    fn on(subject: &str) -> Publication {
        Publication {
            subject: subject.into(),
            ..event()
        }
    }

    #[tokio::test]
    async fn concurrent_single_publishes_each_get_their_own_ack_through_the_inbox() {
        let server = NatsServer::start();
        let (nats, _quiet) = connect(&server).await;
        let publisher = Publisher::new(nats.clone());
        let mut ids: Vec<u64> =
            futures::future::join_all((0..50).map(|_| publisher.publish(on("s.a"))))
                .await
                .into_iter()
                .map(|published| published.unwrap().id)
                .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=50).collect::<Vec<_>>());
        assert_eq!(nats.acks().waiting(), 0, "every publish left the inbox");
    }

    #[tokio::test]
    async fn an_unanswered_publish_times_out_and_leaves_the_inbox() {
        let server = NatsServer::start();
        let (nats, _quiet) = connect(&server).await;
        let err = Publisher::new(nats.clone())
            .publish(on("quiet.a"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert_eq!(nats.acks().waiting(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_publish_leaves_the_inbox_and_its_window_permit() {
        let server = NatsServer::start();
        let (nats, mut quiet) = connect(&server).await;
        let publisher = Publisher::new(nats.clone());
        let mut publish = Box::pin(publisher.publish(on("quiet.a")));
        let sent = tokio::select! {
            _ = &mut publish => panic!("nobody answers quiet.a"),
            sent = futures::StreamExt::next(&mut quiet) => sent.unwrap(),
        };
        assert_eq!(nats.acks().waiting(), 1);
        assert_eq!(nats.publish_window().available_permits(), 63);
        drop(publish);
        assert_eq!(nats.acks().waiting(), 0, "the caller went away");
        assert_eq!(nats.publish_window().available_permits(), 64);
        // An ack for it, arriving late, is dropped; the next publish gets its own.
        nats.client()
            .publish(sent.reply.unwrap(), r#"{"stream":"s","seq":99}"#.into())
            .await
            .unwrap();
        let published = publisher.publish(on("s.a")).await.unwrap();
        assert_eq!(published.id, 1);
    }
}
