//! How results are printed: one line each, as text or (with `--json`) as a JSON object.
//!
//! Payloads are shown as text when they are a `windshift.test.v1.StringValue`, the type this CLI
//! publishes; any other type is shown by name and size, since the CLI has no schema for it.

use std::{
    io::{self, Write},
    time::SystemTime,
};

use jetway_api::{google::protobuf::Any, windshift::test::v1::StringValue};
use jetway_client::{Entry, Event, Operation, WatchEntry};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Where and how lines are printed.
pub struct Output {
    json: bool,
    stdout: io::Stdout,
}

impl Output {
    /// Text, or JSON lines with `json`.
    pub fn new(json: bool) -> Output {
        Output {
            json,
            stdout: io::stdout(),
        }
    }

    /// Whether lines are JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `text` or `object`, whichever the mode asks for, as one line.
    pub fn line(
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
    pub fn event(&self, event: &Event) -> io::Result<()> {
        let (text, data) = payload(event.data());
        self.line(
            || {
                format!(
                    "#{} {} {} {text}",
                    event.id(),
                    event.subject(),
                    timestamp(event.timestamp())
                )
            },
            || {
                json!({
                    "id": event.id(),
                    "subject": event.subject(),
                    "timestamp": event.timestamp().map(rfc3339),
                    "type": event.data().message_name(),
                    "data": data,
                    "delivery_attempt": event.delivery_attempt(),
                })
            },
        )
    }

    /// A key's value, from `kv get`.
    pub fn entry(&self, key: &str, entry: &Entry) -> io::Result<()> {
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
    pub fn change(&self, change: &WatchEntry) -> io::Result<()> {
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
fn payload(any: &Any) -> (String, Value) {
    match any.unpack::<StringValue>() {
        Some(Ok(value)) => (value.value.clone(), Value::String(value.value)),
        _ => (
            format!("<{}, {} bytes>", any.message_name(), any.value.len()),
            json!({ "type": any.message_name(), "size": any.value.len() }),
        ),
    }
}

fn timestamp(time: Option<SystemTime>) -> String {
    time.map_or_else(|| "-".to_owned(), rfc3339)
}

/// RFC 3339 in UTC, e.g. `2024-07-12T10:11:12.5Z`.
pub fn rfc3339(time: SystemTime) -> String {
    OffsetDateTime::from(time)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn times_are_rfc3339_utc() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_720_779_072_500);
        assert_eq!(rfc3339(time), "2024-07-12T10:11:12.5Z");
    }
}
