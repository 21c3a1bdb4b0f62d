//! What JetStream's ack subject of a delivered message says ([`AckMetadata`]): the event id, the
//! delivery attempt and when the event was stored. Events streams and Fetch read it.

use std::time::{Duration, SystemTime};

use async_nats::Subject;

/// What JetStream says about a delivery in its ack subject. Events streams and Fetch read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckMetadata {
    /// The event id.
    pub stream_sequence: u64,
    /// The delivery attempt, from 1.
    pub delivered: u64,
    /// When JetStream stored the event.
    pub stored: SystemTime,
}

impl AckMetadata {
    /// Takes the ack subject out of a delivered message, with what it says. `None`, with a
    /// warning and the message left as it was, for a message without one: there is no id to settle
    /// it by, and JetStream redelivers it later.
    ///
    /// The subject is moved rather than cloned: async-nats reads it into a buffer of its own, and
    /// the first clone of such a buffer allocates.
    pub(crate) fn take(message: &mut async_nats::Message) -> Option<(Subject, AckMetadata)> {
        let Some(metadata) = message.reply.as_deref().and_then(AckMetadata::parse) else {
            tracing::warn!(subject = %message.subject, reply = ?message.reply, "dropping a message without JetStream metadata");
            return None;
        };
        Some((message.reply.take()?, metadata))
    }

    /// Reads a JetStream ack subject (ADR-15): `$JS.ACK.<stream>.<consumer>.<delivered>.<stream
    /// seq>.<consumer seq>.<timestamp ns>.<pending>`, or the newer form with `<domain>.<account
    /// hash>.` before the stream and possibly more tokens after `<pending>`.
    ///
    /// Parsed here rather than through `jetstream::Message::info`, which needs a JetStream context
    /// cloned into every message and converts the timestamp to a calendar date. One pass over the
    /// bytes finds the dots and reads the numbers: it runs for every delivered event, and `split`
    /// with `str::parse` per token cost several times as much. A number is ASCII digits only.
    fn parse(reply: &str) -> Option<AckMetadata> {
        let tokens = reply.strip_prefix("$JS.ACK.")?.as_bytes();
        // Where each of the first 9 tokens starts and ends; a 10th and later are never read.
        let mut bounds = [(0, 0); 9];
        let mut count = 0;
        let mut start = 0;
        for (at, &byte) in tokens.iter().enumerate() {
            if byte == b'.' {
                bounds[count] = (start, at);
                count += 1;
                start = at + 1;
                if count == bounds.len() {
                    break;
                }
            }
        }
        if count < bounds.len() {
            bounds[count] = (start, tokens.len());
            count += 1;
        }
        // The old form has exactly 7 tokens after the prefix; the new one at least 9, of which the
        // first two are the domain and the account hash.
        let fields = match count {
            7 => &bounds[2..7],
            9 => &bounds[4..9],
            _ => return None,
        };
        let number = |(start, end): (usize, usize)| digits(&tokens[start..end]);
        Some(AckMetadata {
            delivered: number(fields[0])?.max(1),
            stream_sequence: number(fields[1])?,
            stored: SystemTime::UNIX_EPOCH + Duration::from_nanos(number(fields[3])?),
        })
    }
}

/// A decimal number of ASCII digits that fits in a `u64`.
fn digits(token: &[u8]) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    token.iter().try_fold(0u64, |n, &byte| {
        let digit = byte.wrapping_sub(b'0');
        (digit <= 9).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms_of_the_ack_subject() {
        let expected = AckMetadata {
            stream_sequence: 42,
            delivered: 3,
            stored: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
        };
        assert_eq!(
            AckMetadata::parse("$JS.ACK.orders.billing.3.42.7.1700000000123456789.0"),
            Some(expected)
        );
        assert_eq!(
            AckMetadata::parse(
                "$JS.ACK.hub.ACCHASH.orders.billing.3.42.7.1700000000123456789.0.rnd"
            ),
            Some(expected)
        );
    }

    #[test]
    fn a_first_delivery_counts_as_attempt_one_and_garbage_is_refused() {
        let first = AckMetadata::parse("$JS.ACK.s.c.0.1.1.0.0").map(|m| m.delivered);
        assert_eq!(first, Some(1));
        let largest = AckMetadata::parse("$JS.ACK.s.c.1.18446744073709551615.1.0.0");
        assert_eq!(largest.map(|m| m.stream_sequence), Some(u64::MAX));
        for bad in [
            "",
            "_INBOX.abc",
            "$JS.ACK.s.c.1.2.3.4",
            "$JS.ACK.s.c.1.x.3.4.0",
            "$JS.ACK.d.h.s.c.1.2.3.-4.0",
            "$JS.ACK.s.c.1.2.3.4.5.6",
            "$JS.ACK.s.c.1..3.4.0",
            "$JS.ACK.s.c.1.+2.3.4.0",
            "$JS.ACK.s.c.1.18446744073709551616.3.4.0",
        ] {
            assert_eq!(AckMetadata::parse(bad), None, "{bad:?}");
        }
    }
}
