//! The Windshift on-stream message format (spec section B.4), shared with windshift-go users of the
//! same streams: the body is the event's inner message bytes, and headers carry its type, time,
//! idempotency key and trace context.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// Formats a time as RFC 3339 in UTC with a `Z` and no trailing zeros in the fraction, the way Go's
/// `RFC3339Nano` writes it (e.g. `2024-07-12T10:11:12.1234Z`).
pub fn format_time(time: SystemTime) -> String {
    // The well-known RFC 3339 format already trims trailing zeros and writes `Z` for UTC.
    to_utc(time)
        .and_then(|utc| utc.format(&Rfc3339).ok())
        .unwrap_or_else(|| {
            // Only years outside 0..=9999 cannot be written; clamp rather than fail the publish.
            OffsetDateTime::UNIX_EPOCH
                .format(&Rfc3339)
                .expect("the epoch formats")
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

/// Checks that a start time given by a client can be represented (years 0 to 9999 in practice).
pub(crate) fn validate_time(field: &str, time: SystemTime) -> Result<(), crate::Invalid> {
    match to_utc(time).filter(|t| t.year() <= 9999) {
        Some(_) => Ok(()),
        None => Err(crate::Invalid::new(field, "is outside the years 0 to 9999")),
    }
}

/// Parses an RFC 3339 time with any fraction length and offset.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
            validate_time("from.time", far).unwrap_err().field,
            "from.time"
        );
        assert!(validate_time("from.time", UNIX_EPOCH + Duration::from_secs(1)).is_ok());
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
}
