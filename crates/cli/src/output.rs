//! How results are printed: one line each, as text or (with `--json`) as a JSON object.
//!
//! Payloads are shown as text when they are a `windshift.test.v1.StringValue`, the type this CLI
//! publishes, or raw bytes that are UTF-8; any other type is shown by name and size, and other
//! bytes by size, since the CLI has no schema for them.

use std::{
    io::{self, Write},
    time::{Duration, SystemTime},
};

use jetway_api::{TYPE_URL_PREFIX, google::protobuf::Any, windshift::test::v1::StringValue};
use jetway_client::{
    DeadLetter, DeadLetterReason, Entry, Event, Operation, Payload, StoredEvent, WatchEntry,
};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Where and how lines are printed.
pub(crate) struct Output {
    json: bool,
    stdout: io::Stdout,
}

impl Output {
    /// Text, or JSON lines with `json`.
    pub(crate) fn new(json: bool) -> Output {
        Output {
            json,
            stdout: io::stdout(),
        }
    }

    /// Whether lines are JSON.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `text` or `object`, whichever the mode asks for, as one line.
    pub(crate) fn line(
        &self,
        text: impl FnOnce() -> String,
        object: impl FnOnce() -> Value,
    ) -> io::Result<()> {
        let line = if self.json {
            object().to_string()
        } else {
            text()
        };
        // Locked and flushed per line, so a reader of a pipe sees each event as it is handled.
        let mut out = self.stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()
    }

    /// One received event: id, subject, timestamp and data.
    pub(crate) fn event(&self, event: &Event) -> io::Result<()> {
        let data = event.data();
        self.delivered(
            (event.id(), event.subject(), event.timestamp()),
            payload(data),
            data.message_name(),
            event.delivery_attempt(),
        )
    }

    /// One fetched event, printed as [`Output::event`] prints a received one (a raw payload has
    /// an empty type, as the Events stream delivers it).
    pub(crate) fn fetched(&self, event: &StoredEvent) -> io::Result<()> {
        let type_name = match event.payload() {
            Payload::Message(any) => any.message_name(),
            Payload::Raw { .. } => "",
        };
        self.delivered(
            (event.id(), event.subject(), event.timestamp()),
            stored_payload(event.payload()),
            type_name,
            event.delivery_attempt(),
        )
    }

    fn delivered(
        &self,
        (id, subject, time): (u64, &str, Option<SystemTime>),
        (text, data): (String, Value),
        type_name: &str,
        delivery_attempt: u64,
    ) -> io::Result<()> {
        self.line(
            || format!("#{id} {subject} {} {text}", timestamp(time)),
            || {
                json!({
                    "id": id,
                    "subject": subject,
                    "timestamp": time.map(rfc3339),
                    "type": type_name,
                    "data": data,
                    "delivery_attempt": delivery_attempt,
                })
            },
        )
    }

    /// A stored event, from `read`: id, subject, timestamp and data, and in JSON its headers too.
    pub(crate) fn stored_event(&self, event: &StoredEvent) -> io::Result<()> {
        let (text, _) = stored_payload(event.payload());
        self.line(
            || {
                format!(
                    "#{} {} {} {text}",
                    event.id(),
                    event.subject(),
                    timestamp(event.timestamp())
                )
            },
            || stored_event_json(event),
        )
    }

    /// A dead letter, from `dlq ls`: where it is, where it came from, why, and the event.
    pub(crate) fn dead_letter(
        &self,
        dead_letter_stream: &str,
        letter: &DeadLetter,
    ) -> io::Result<()> {
        let reason = match letter.reason {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::MaxDeliveries => "max_deliveries",
        };
        let event = &letter.event;
        self.line(
            || {
                let (text, _) = stored_payload(event.payload());
                format!(
                    "{dead_letter_stream} {} {}/{} {reason} after {}: #{} {} {} {text}",
                    letter.id,
                    letter.stream,
                    letter.consumer,
                    count(letter.attempts, "delivery", "deliveries"),
                    event.id(),
                    event.subject(),
                    timestamp(event.timestamp()),
                )
            },
            || {
                json!({
                    "dead_letter_stream": dead_letter_stream,
                    "id": letter.id,
                    "stream": letter.stream,
                    "consumer": letter.consumer,
                    "reason": reason,
                    "attempts": letter.attempts,
                    "time": letter.time.map(rfc3339),
                    "event": stored_event_json(event),
                })
            },
        )
    }

    /// A key's value, from `kv get`.
    pub(crate) fn entry(&self, key: &str, entry: &Entry) -> io::Result<()> {
        let (text, data) = payload(entry.value());
        self.line(
            || format!("{text} (revision {})", entry.revision()),
            || {
                json!({
                    "key": key,
                    "revision": entry.revision(),
                    "updated": entry.last_updated().map(rfc3339),
                    "type": entry.value().message_name(),
                    "value": data,
                })
            },
        )
    }

    /// A change, from `kv watch`.
    pub(crate) fn change(&self, change: &WatchEntry) -> io::Result<()> {
        let operation = match change.operation() {
            Operation::Put => "put",
            Operation::Delete => "delete",
            Operation::Purge => "purge",
        };
        let value = change.value().map(payload);
        self.line(
            || match &value {
                Some((text, _)) => format!(
                    "{} {operation} {} = {text}",
                    change.revision(),
                    change.key()
                ),
                None => format!("{} {operation} {}", change.revision(), change.key()),
            },
            || {
                json!({
                    "key": change.key(),
                    "revision": change.revision(),
                    "operation": operation,
                    "time": change.time().map(rfc3339),
                    "value": value.as_ref().map(|(_, data)| data),
                })
            },
        )
    }
}

/// A payload as text and as a JSON value: the string of a StringValue, else its type and size.
/// Windshift's Events stream delivers raw bytes with a bare type URL prefix; they are shown as
/// raw bytes.
fn payload(any: &Any) -> (String, Value) {
    if any.type_url == TYPE_URL_PREFIX {
        return raw(&any.value);
    }
    match any.unpack::<StringValue>() {
        Some(Ok(value)) => (value.value.clone(), Value::String(value.value)),
        _ => (
            format!("<{}, {} bytes>", any.message_name(), any.value.len()),
            json!({ "type": any.message_name(), "size": any.value.len() }),
        ),
    }
}

/// Raw bytes as text and as a JSON value: the text if they are UTF-8, else their size.
fn raw(data: &[u8]) -> (String, Value) {
    match std::str::from_utf8(data) {
        Ok(text) => (text.to_owned(), Value::String(text.to_owned())),
        Err(_) => (
            format!("<{} bytes>", data.len()),
            json!({ "size": data.len() }),
        ),
    }
}

fn stored_payload(body: &Payload) -> (String, Value) {
    match body {
        Payload::Message(any) => payload(any),
        Payload::Raw { data, .. } => raw(data),
    }
}

/// A stored event as JSON: what `consume --json` prints, plus the content type of raw bytes, the
/// custom headers and the idempotency key.
fn stored_event_json(event: &StoredEvent) -> Value {
    let (_, data) = stored_payload(event.payload());
    let mut object = json!({
        "id": event.id(),
        "subject": event.subject(),
        "timestamp": event.timestamp().map(rfc3339),
        "data": data,
        "headers": event.headers(),
        "idempotency_key": event.idempotency_key(),
    });
    match event.payload() {
        Payload::Message(any) => object["type"] = json!(any.message_name()),
        Payload::Raw { content_type, .. } => object["content_type"] = json!(content_type),
    }
    object
}

/// `1 delivery`, `2 deliveries`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration the way the CLI takes it: the largest whole unit of d, h, m, s or ms (`7d`, `90s`).
pub(crate) fn duration(value: Duration) -> String {
    let millis = value.as_millis();
    if !millis.is_multiple_of(1000) || millis == 0 {
        return format!("{millis}ms");
    }
    let seconds = millis / 1000;
    [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(unit, _)| seconds.is_multiple_of(*unit))
        .map_or_else(
            || format!("{seconds}s"),
            |(unit, name)| format!("{}{name}", seconds / unit),
        )
}

/// A time for text output, `-` when there is none.
pub(crate) fn timestamp(time: Option<SystemTime>) -> String {
    time.map_or_else(|| "-".to_owned(), rfc3339)
}

/// RFC 3339 in UTC, e.g. `2024-07-12T10:11:12.5Z`; `-` for a time RFC 3339 cannot show (past
/// year 9999, which an event published straight to NATS may carry). Checked all the way:
/// `OffsetDateTime::from` panics on such a time.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since_epoch = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => time::Duration::try_from(after).ok(),
        Err(before) => time::Duration::try_from(before.duration())
            .ok()
            .and_then(|d| d.checked_neg()),
    };
    since_epoch
        .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_add(d))
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_rfc3339_cannot_show_print_as_a_dash() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            rfc3339(epoch + Duration::from_millis(1_720_779_072_500)),
            "2024-07-12T10:11:12.5Z"
        );
        assert_eq!(
            rfc3339(epoch - Duration::from_secs(86_400)),
            "1969-12-31T00:00:00Z"
        );
        // 10000-01-01: valid in a `WS-Published-Time` header, past what RFC 3339 can show.
        assert_eq!(rfc3339(epoch + Duration::from_secs(253_402_300_800)), "-");
        assert_eq!(timestamp(Some(epoch + Duration::from_secs(1 << 50))), "-");
    }

    #[test]
    fn payloads_show_strings_and_name_other_types() {
        let text = Any::pack(&StringValue {
            value: "hello".into(),
        });
        assert_eq!(payload(&text), ("hello".into(), json!("hello")));
        let other = Any::pack(&jetway_api::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        });
        assert_eq!(
            payload(&other),
            (
                "<google.protobuf.Duration, 2 bytes>".into(),
                json!({"type": "google.protobuf.Duration", "size": 2})
            )
        );
    }

    #[test]
    fn raw_bytes_show_as_text_when_they_are_utf8() {
        let windshift_raw = Any {
            type_url: TYPE_URL_PREFIX.into(),
            value: b"{}".to_vec().into(),
        };
        assert_eq!(payload(&windshift_raw), ("{}".into(), json!("{}")));
        assert_eq!(raw(&[0xff, 0]), ("<2 bytes>".into(), json!({"size": 2})));
    }

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        assert_eq!(duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0ms");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_720_779_072_500);
        assert_eq!(rfc3339(time), "2024-07-12T10:11:12.5Z");
    }
}
