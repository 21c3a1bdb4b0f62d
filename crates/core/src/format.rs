//! The Windshift on-stream message format (spec section B.4), shared with windshift-go users of the
//! same streams: the body is the event's inner message bytes, and headers carry its type, time,
//! idempotency key and trace context.
//!
//! Jetway extends it without changing it. A raw payload (bytes that are not a protobuf message) has
//! no `WS-Data-Type` header; its media type, if any, is the `Content-Type` header. Custom headers are
//! stored as NATS headers under their own names. Names that JetStream, Windshift or Jetway give a
//! meaning (`Nats-*`, `WS-*`, `JW-*`, `Content-Type`, and the W3C `traceparent` and `tracestate`
//! that a message published straight to NATS may carry, in any case) are reserved, so a custom header
//! can never change how an event is stored or read.

use std::time::{Duration, SystemTime};

use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Error;

/// The event's message type: the full protobuf name, e.g. `windshift.test.v1.StringValue`.
pub const DATA_TYPE: &str = "WS-Data-Type";
/// When the event happened, in RFC 3339.
pub const PUBLISHED_TIME: &str = "WS-Published-Time";
/// The publisher's W3C `traceparent`.
pub const TRACE_PARENT: &str = "WS-Trace-Parent";
/// The publisher's W3C `tracestate`.
pub const TRACE_STATE: &str = "WS-Trace-State";
/// The idempotency key, which JetStream uses for deduplication.
pub const MESSAGE_ID: &str = "Nats-Msg-Id";
/// The media type of a raw payload.
pub const CONTENT_TYPE: &str = "Content-Type";

/// Header names reserved whole, compared without case: a raw payload's media type, and the W3C
/// trace context the delivery side honours on messages published straight to NATS.
const RESERVED_NAMES: [&str; 3] = ["content-type", "traceparent", "tracestate"];
/// Header name prefixes reserved for JetStream, Windshift and Jetway, compared without case.
const RESERVED_PREFIXES: [&str; 3] = ["nats-", "ws-", "jw-"];
/// Most custom headers on one event.
pub const MAX_HEADERS: usize = 64;
/// Longest header name or content type accepted.
const MAX_HEADER_NAME_LEN: usize = 256;

/// A stored event, decoded from its message: the body and what the headers say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The stream sequence: the event id.
    pub id: u64,
    /// The subject it was published on.
    pub subject: String,
    /// The message type (`WS-Data-Type`); empty for a raw payload.
    pub data_type: String,
    /// The media type of a raw payload (`Content-Type`).
    pub content_type: Option<String>,
    /// The body: the serialized message, or the raw bytes.
    pub body: Bytes,
    /// When the event happened (`WS-Published-Time`), or when it was stored.
    pub timestamp: SystemTime,
    /// The idempotency key it was published with.
    pub idempotency_key: Option<String>,
    /// The publisher's W3C trace context.
    pub trace_parent: Option<String>,
    /// See `trace_parent`.
    pub trace_state: Option<String>,
    /// The custom headers, in stored order (the first value of each).
    pub headers: Vec<(String, String)>,
}

/// Decodes a stored message: the one decoder of every read path (Events, Fetch, GetEvent, ReadEvents,
/// Subscribe, dead letters), so all of them read an event alike. `stored` is JetStream's time for
/// it, used when the publisher gave none or an unparsable one.
///
/// Each header Windshift or Jetway gives a meaning to is the first non-empty value under exactly
/// that name; the rest that are not reserved are the custom headers. One pass over the headers beats
/// a lookup per name: `HeaderMap::get` builds a `HeaderName` from the `&str` (checking and copying
/// it) and hashes it, for every name asked, on every delivered event.
///
/// The trace context is Windshift's `WS-Trace-Parent` and `WS-Trace-State`, or else the W3C
/// `traceparent` and `tracestate` that a message published straight to NATS may carry.
pub fn decode(
    id: u64,
    subject: String,
    headers: Option<&HeaderMap>,
    body: Bytes,
    stored: SystemTime,
) -> Event {
    let mut data_type = None;
    let mut content_type = None;
    let mut published_time = None;
    let mut message_id = None;
    let mut trace = [None; 2];
    let mut w3c_trace = [None; 2];
    let mut custom = Vec::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        let slot = match name {
            DATA_TYPE => &mut data_type,
            CONTENT_TYPE => &mut content_type,
            PUBLISHED_TIME => &mut published_time,
            MESSAGE_ID => &mut message_id,
            TRACE_PARENT => &mut trace[0],
            TRACE_STATE => &mut trace[1],
            "traceparent" => &mut w3c_trace[0],
            "tracestate" => &mut w3c_trace[1],
            _ => {
                if let Some(value) = values.first()
                    && !is_reserved(name)
                {
                    custom.push((name.to_owned(), value.as_str().to_owned()));
                }
                continue;
            }
        };
        *slot = values
            .first()
            .map(HeaderValue::as_str)
            .filter(|v| !v.is_empty());
    }
    // The state belongs to the parent it came with, and means nothing without one.
    let [trace_parent, trace_state] = if trace[0].is_some() { trace } else { w3c_trace };
    let trace_state = trace_parent.and(trace_state);
    let owned = |value: Option<&str>| value.map(str::to_owned);
    Event {
        id,
        subject,
        data_type: data_type.unwrap_or_default().to_owned(),
        content_type: owned(content_type),
        body,
        timestamp: published_time.and_then(parse_time).unwrap_or(stored),
        idempotency_key: owned(message_id),
        trace_parent: owned(trace_parent),
        trace_state: owned(trace_state),
        headers: custom,
    }
}

/// Whether a header name is reserved: JetStream, Windshift or Jetway give it a meaning.
pub fn is_reserved(name: &str) -> bool {
    // Compared in place: lowercasing a copy would allocate for every header of every event.
    RESERVED_NAMES
        .iter()
        .any(|reserved| name.eq_ignore_ascii_case(reserved))
        || RESERVED_PREFIXES.iter().any(|prefix| {
            name.get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        })
}

/// Checks the custom headers of a publish: at most [`MAX_HEADERS`], names NATS accepts and nobody
/// reserved, values without line breaks or other control characters.
pub fn validate_headers(field: &str, headers: &[(String, String)]) -> Result<(), Error> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_HEADERS} headers are allowed"),
        ));
    }
    for (name, value) in headers {
        let invalid = |why: &str| Error::invalid(format!("{field}[{name:?}]"), why);
        if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN {
            return Err(invalid(&format!(
                "a header name must be 1 to {MAX_HEADER_NAME_LEN} characters"
            )));
        }
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(invalid(
                "a header name must be printable ASCII without spaces or ':'",
            ));
        }
        if is_reserved(name) {
            return Err(invalid(
                "the name is reserved: Nats-*, WS-*, JW-*, Content-Type, traceparent and tracestate are set by JetStream, Windshift or Jetway",
            ));
        }
        if !is_header_value(value) {
            return Err(invalid("the value must not contain control characters"));
        }
    }
    Ok(())
}

/// Checks a raw payload's content type: a header value of sane length.
pub fn validate_content_type(field: &str, content_type: &str) -> Result<(), Error> {
    if content_type.len() > MAX_HEADER_NAME_LEN || !is_header_value(content_type) {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_HEADER_NAME_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

/// Header values must not break the NATS header block: no control characters (CR, LF, ...).
pub(crate) fn is_header_value(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

/// The size NATS counts for a header block: `NATS/1.0\r\n`, a `Name: value\r\n` line per value, and
/// a closing `\r\n`; nothing when there are no headers.
pub(crate) fn header_size(headers: &HeaderMap) -> usize {
    if headers.is_empty() {
        return 0;
    }
    let lines: usize = headers
        .iter()
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(move |value| name.len() + value.as_str().len() + 4)
        })
        .sum();
    "NATS/1.0\r\n".len() + lines + 2
}

/// Formats a time as RFC 3339 in UTC with a `Z` and no trailing zeros in the fraction, the way Go's
/// `RFC3339Nano` writes it (e.g. `2024-07-12T10:11:12.1234Z`).
pub fn format_time(time: SystemTime) -> String {
    // The well-known RFC 3339 format already trims trailing zeros and writes `Z` for UTC.
    to_utc(time)
        .and_then(|utc| utc.format(&Rfc3339).ok())
        .unwrap_or_else(|| {
            // Only years outside 0..=9999 cannot be written; clamp rather than fail the publish.
            String::from("1970-01-01T00:00:00Z")
        })
}

/// Converts without `OffsetDateTime::from`, which panics for times beyond the years `time` supports.
pub(crate) fn to_utc(time: SystemTime) -> Option<OffsetDateTime> {
    let epoch = OffsetDateTime::UNIX_EPOCH;
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => epoch.checked_add(after.try_into().ok()?),
        Err(before) => epoch.checked_sub(before.duration().try_into().ok()?),
    }
}

/// The last whole second JetStream can compare: it counts times in signed 64-bit nanoseconds since
/// 1970, which end on 2262-04-11.
const LAST_COUNTABLE_SECOND: u64 = i64::MAX as u64 / 1_000_000_000;

/// A start time (of a consumer, a read or a stream source) as JetStream gets it: within the times it
/// can count. JetStream compares start times in signed 64-bit nanoseconds since 1970, so a time after
/// 2262 would wrap around and mean "from the beginning", and one before 1678 "nothing". Clamped
/// instead, both keep their meaning: nothing is stored before 1970 (JetStream stamps events with
/// its own clock), so an earlier start means everything, as 1970 does; and nothing is stored after
/// 2262, so a later start means nothing yet, as 2262 does.
pub(crate) fn start_time(time: SystemTime) -> OffsetDateTime {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .min(Duration::from_secs(LAST_COUNTABLE_SECOND));
    OffsetDateTime::UNIX_EPOCH + since_epoch
}

/// Checks that a start time given by a client can be represented (years 0 to 9999 in practice).
pub(crate) fn validate_time(field: &str, time: SystemTime) -> Result<(), Error> {
    match to_utc(time).filter(|t| t.year() <= 9999) {
        Some(_) => Ok(()),
        None => Err(Error::invalid(field, "is outside the years 0 to 9999")),
    }
}

/// Parses an RFC 3339 time with any fraction length and offset.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    parse_utc(text.as_bytes()).or_else(|| {
        OffsetDateTime::parse(text.trim(), &Rfc3339)
            .ok()
            .map(SystemTime::from)
    })
}

/// The form publishers write ([`format_time`], Go's `RFC3339Nano`) read directly:
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, a year from 1970, at most 9 fraction digits. Every delivery
/// reads one, and the general parser cost about 1 % of the server's CPU per delivered event. `None`
/// for anything else, which [`parse_time`] gives to the general parser; so this accepts only what
/// that parser reads the same way.
fn parse_utc(text: &[u8]) -> Option<SystemTime> {
    let (date, rest) = text.split_at_checked(19)?;
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, byte)| date[at] != byte) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u64> {
        date[from..to].iter().try_fold(0, |n, &byte| {
            byte.is_ascii_digit()
                .then(|| n * 10 + u64::from(byte - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if year < 1970 || !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = match rest {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            let value = fraction.iter().try_fold(0u32, |n, &byte| {
                byte.is_ascii_digit()
                    .then(|| n * 10 + u32::from(byte - b'0'))
            })?;
            value * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date, counting years from March so that the
    // leap day comes last.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let (era, year_of_era) = (y / 400, y % 400);
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// The direct reading of the usual form agrees with the general RFC 3339 parser: on times
    /// written by `format_time` across the years and fraction lengths, and on edge cases it must
    /// hand over (offsets, lowercase, leap days that do not exist, years before 1970).
    #[test]
    fn the_usual_form_is_read_as_the_general_parser_reads_it() {
        let general = |text: &str| {
            OffsetDateTime::parse(text, &Rfc3339)
                .ok()
                .map(SystemTime::from)
        };
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Up to the year 9999, with every fraction length from none to 9 digits.
            let seconds = state % 253_402_300_800;
            let nanos = (state >> 20) as u32 % 1_000_000_000 / 10u32.pow((state >> 60) as u32 % 10);
            let text = format_time(UNIX_EPOCH + Duration::new(seconds, nanos));
            assert_eq!(parse_utc(text.as_bytes()), general(&text), "{text}");
        }
        for text in [
            "2024-02-29T23:59:59.999999999Z",
            "2000-02-29T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "2024-12-31T23:59:59.5Z",
        ] {
            assert_eq!(parse_utc(text.as_bytes()), general(text), "{text}");
            assert!(parse_utc(text.as_bytes()).is_some(), "{text}");
        }
        for handed_over in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-07-12T10:11:12+02:00",
            "2024-07-12t10:11:12z",
            "2024-07-12T10:11:12.Z",
            "2024-07-12T10:11:12.1234567891Z",
            "2024-07-12T24:00:00Z",
            "2024-07-12T10:11:60Z",
            "2024-13-12T10:11:12Z",
            "2024-00-12T10:11:12Z",
            "2024-07-00T10:11:12Z",
            "+024-07-12T10:11:12Z",
            " 2024-07-12T10:11:12Z",
        ] {
            assert_eq!(parse_utc(handed_over.as_bytes()), None, "{handed_over}");
        }
        assert_eq!(
            parse_time(" 2024-07-12T10:11:12Z"),
            general("2024-07-12T10:11:12Z")
        );
    }

    #[test]
    fn formats_like_go_rfc3339_nano() {
        let t = UNIX_EPOCH + Duration::new(1_720_779_072, 123_400_000);
        assert_eq!(format_time(t), "2024-07-12T10:11:12.1234Z");
        let whole = UNIX_EPOCH + Duration::from_secs(1_720_779_072);
        assert_eq!(format_time(whole), "2024-07-12T10:11:12Z");
        let nanos = UNIX_EPOCH + Duration::new(1_720_779_072, 1);
        assert_eq!(format_time(nanos), "2024-07-12T10:11:12.000000001Z");
    }

    #[test]
    fn times_beyond_year_9999_clamp_to_the_epoch_instead_of_panicking() {
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(format_time(far), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn start_times_beyond_year_9999_are_invalid() {
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(
            validate_time("from.time", far).unwrap_err().field(),
            Some("from.time")
        );
        assert!(validate_time("from.time", UNIX_EPOCH + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn start_times_stay_within_what_jetstream_counts() {
        let nanos = |time: SystemTime| start_time(time).unix_timestamp_nanos();
        let year_3000 = UNIX_EPOCH + Duration::from_secs(32_503_680_000);
        assert_eq!(
            nanos(year_3000),
            i128::from(i64::MAX) / 1_000_000_000 * 1_000_000_000
        );
        let year_1600 = UNIX_EPOCH - Duration::from_secs(11_676_096_000);
        assert_eq!(nanos(year_1600), 0);
        let t = UNIX_EPOCH + Duration::new(1_720_779_072, 123_400_000);
        assert_eq!(
            nanos(t),
            1_720_779_072_123_400_000,
            "a time in range is kept"
        );
    }

    #[test]
    fn parses_any_fraction_and_offset() {
        let t = UNIX_EPOCH + Duration::new(1_720_779_072, 123_400_000);
        assert_eq!(parse_time("2024-07-12T10:11:12.1234Z"), Some(t));
        assert_eq!(parse_time("2024-07-12T12:11:12.123400000+02:00"), Some(t));
        assert_eq!(
            parse_time("2024-07-12T10:11:12Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_720_779_072))
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(
            format_time(parse_time("2024-07-12T10:11:12.5-01:00").unwrap()),
            "2024-07-12T11:11:12.5Z"
        );
    }

    #[test]
    fn decodes_windshift_headers_and_keeps_only_custom_ones_as_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(DATA_TYPE, "windshift.test.v1.StringValue");
        headers.insert(PUBLISHED_TIME, "2024-07-12T10:11:12.1234Z");
        headers.insert(MESSAGE_ID, "k-1");
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        headers.insert("published-by", "billing");
        let stored = UNIX_EPOCH + Duration::from_secs(5);
        let event = decode(
            7,
            "orders.created".into(),
            Some(&headers),
            Bytes::from_static(b"x"),
            stored,
        );
        assert_eq!(event.data_type, "windshift.test.v1.StringValue");
        assert_eq!(event.content_type, None);
        assert_eq!(
            event.timestamp,
            UNIX_EPOCH + Duration::new(1_720_779_072, 123_400_000)
        );
        assert_eq!(event.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(
            event.headers,
            vec![("published-by".to_owned(), "billing".to_owned())]
        );

        let bare = decode(8, "a".into(), None, Bytes::new(), stored);
        assert_eq!((bare.data_type.as_str(), bare.timestamp), ("", stored));
        assert!(bare.headers.is_empty());
    }

    #[test]
    fn the_trace_context_is_windshifts_or_else_the_w3c_one() {
        let stored = UNIX_EPOCH;
        let decoded = |pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, *value);
            }
            let event = decode(1, "a".into(), Some(&headers), Bytes::new(), stored);
            (event.trace_parent, event.trace_state)
        };
        let some = |v: &str| Some(v.to_owned());
        assert_eq!(
            decoded(&[("traceparent", "w3c"), ("tracestate", "w3c-state")]),
            (some("w3c"), some("w3c-state"))
        );
        assert_eq!(
            decoded(&[
                (TRACE_PARENT, "ws"),
                ("traceparent", "w3c"),
                ("tracestate", "w3c-state")
            ]),
            (some("ws"), None),
            "Windshift's wins, with its own state"
        );
        assert_eq!(decoded(&[("tracestate", "alone")]), (None, None));
    }

    #[test]
    fn header_size_counts_the_whole_block() {
        assert_eq!(header_size(&HeaderMap::new()), 0);
        let mut headers = HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        // "NATS/1.0\r\n" + "KV-Operation: DEL\r\n" + "\r\n"
        assert_eq!(header_size(&headers), 10 + 19 + 2);
    }

    #[test]
    fn reserved_and_malformed_header_names_are_rejected_by_name() {
        for reserved in [
            "Nats-Msg-Id",
            "nats-anything",
            "WS-Data-Type",
            "ws-x",
            "JW-DLQ-Reason",
            "content-type",
            "traceparent",
            "TraceState",
        ] {
            assert!(is_reserved(reserved), "{reserved}");
            let err = validate_headers("headers", &[(reserved.into(), "v".into())]).unwrap_err();
            assert_eq!(err.field(), Some(format!("headers[{reserved:?}]").as_str()));
        }
        for bad in ["", "a b", "a:b", "ä"] {
            assert!(
                validate_headers("headers", &[(bad.into(), "v".into())]).is_err(),
                "{bad:?}"
            );
        }
        assert!(validate_headers("headers", &[("ok".into(), "a\r\nb".into())]).is_err());
        let many: Vec<_> = (0..=MAX_HEADERS)
            .map(|i| (format!("h{i}"), String::new()))
            .collect();
        assert!(validate_headers("headers", &many).is_err());
        assert!(
            validate_headers("headers", &[("published-by".into(), "billing team".into())]).is_ok()
        );
    }
}
