//! The API package: Rust types and tonic services generated from `proto/` by the top-level `build.rs`,
//! plus the encoded descriptor set that gRPC reflection serves.
//!
//! The `windshift.*` packages are wire-identical to upstream Windshift; `jetway.*` holds Jetway's own
//! additions. The well-known types are generated here too (see `build.rs`), so this module also
//! carries the small conversions between them and `std::time` that prost-types would otherwise
//! provide.

// Each generated module allows `missing_docs` (prost copies proto comments, and not every proto item has
// one) and `clippy::all` (generated code is not ours to restyle); the hand-written code here is linted.

/// `google.protobuf`: the well-known types used by the API.
pub mod google {
    /// `google.protobuf` messages.
    #[allow(clippy::all, missing_docs)]
    pub mod protobuf {
        include!(concat!(env!("OUT_DIR"), "/google.protobuf.rs"));
    }
}

/// The frozen Windshift packages.
pub mod windshift {
    /// `windshift.events.v1alpha1`: streams, consumers, publishing and the Events stream.
    pub mod events {
        /// Version `v1alpha1`, as upstream.
        #[allow(clippy::all, missing_docs)]
        pub mod v1alpha1 {
            include!(concat!(env!("OUT_DIR"), "/windshift.events.v1alpha1.rs"));
        }
    }
    /// `windshift.state.v1alpha1`: key-value stores.
    pub mod state {
        /// Version `v1alpha1`, as upstream.
        #[allow(clippy::all, missing_docs)]
        pub mod v1alpha1 {
            include!(concat!(env!("OUT_DIR"), "/windshift.state.v1alpha1.rs"));
        }
    }
    /// `windshift.test.v1`: payload messages for tests and load tools.
    pub mod test {
        /// Version `v1`.
        #[allow(clippy::all, missing_docs)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/windshift.test.v1.rs"));
        }
    }
}

/// Jetway's own packages: additions that never change a Windshift message.
pub mod jetway {
    /// `jetway.admin.v1`: stream and consumer administration, and dead letters.
    pub mod admin {
        /// Version `v1`.
        #[allow(clippy::all, missing_docs)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/jetway.admin.v1.rs"));
        }
    }
    /// `jetway.events.v1`: delivery policies, raw payloads and headers, reads, live subscriptions
    /// and unary fetching.
    pub mod events {
        /// Version `v1`.
        #[allow(clippy::all, missing_docs)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/jetway.events.v1.rs"));
        }
    }
    /// `jetway.requests.v1`: request/reply over NATS, requesters and processors.
    pub mod requests {
        /// Version `v1`.
        #[allow(clippy::all, missing_docs)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/jetway.requests.v1.rs"));
        }
    }
    /// `jetway.state.v1`: store options, watching, listing keys and history.
    pub mod state {
        /// Version `v1`.
        #[allow(clippy::all, missing_docs)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/jetway.state.v1.rs"));
        }
    }
}

/// The encoded `FileDescriptorSet` of every file under `proto/`, with imports, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// The codec of every generated service and client: prost, with smaller first buffers.
///
/// tonic allocates an encode and a decode buffer of `buffer_size` for every call when it starts,
/// 8 KiB each by default, and keeps them for the life of the call. For a long-lived stream that is
/// mostly idle (an Events subscription) that was a fifth of what one cost the server. Here the
/// buffers start at [`Codec::BUFFER_SIZE`] and grow with what they carry; a batch of responses
/// still goes out in writes of up to [`Codec::YIELD_THRESHOLD`] (tonic's default).
#[derive(Debug, Clone, Copy)]
pub struct Codec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Codec<T, U> {
    /// Bytes each call's encode and decode buffers start with.
    pub const BUFFER_SIZE: usize = 1024;
    /// Bytes of ready responses encoded into one write before it is handed to HTTP/2.
    pub const YIELD_THRESHOLD: usize = 32 * 1024;

    fn buffer_settings() -> tonic::codec::BufferSettings {
        tonic::codec::BufferSettings::new(Self::BUFFER_SIZE, Self::YIELD_THRESHOLD)
    }
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(Self::buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(Self::buffer_settings())
    }
}

/// The prefix that Windshift puts before a message's full name to make an `Any` type URL.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

use google::protobuf::{Any, Duration, Timestamp};

/// Why a protobuf `Duration` or `Timestamp` has no `std::time` equivalent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeConversionError {
    /// A duration below zero.
    Negative,
    /// `nanos` is outside `0..1_000_000_000`, or (durations) has a different sign than `seconds`.
    InvalidNanos,
    /// A time this platform's clock cannot hold.
    OutOfRange,
}

impl std::fmt::Display for TimeConversionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Negative => f.write_str("must not be negative"),
            Self::InvalidNanos => f.write_str("has nanos outside 0..999999999"),
            Self::OutOfRange => f.write_str("is out of range"),
        }
    }
}

impl std::error::Error for TimeConversionError {}

impl TryFrom<&Duration> for std::time::Duration {
    type Error = TimeConversionError;

    fn try_from(value: &Duration) -> Result<Self, Self::Error> {
        let seconds = u64::try_from(value.seconds).map_err(|_| TimeConversionError::Negative)?;
        let nanos = u32::try_from(value.nanos).map_err(|_| TimeConversionError::Negative)?;
        if nanos >= 1_000_000_000 {
            return Err(TimeConversionError::InvalidNanos);
        }
        Ok(std::time::Duration::new(seconds, nanos))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Duration {
            // Durations beyond i64 seconds (292 billion years) saturate.
            seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
            nanos: value.subsec_nanos() as i32,
        }
    }
}

impl TryFrom<&Timestamp> for std::time::SystemTime {
    type Error = TimeConversionError;

    /// Times before 1970 count `seconds` down and `nanos` up, as protobuf defines them.
    fn try_from(value: &Timestamp) -> Result<Self, Self::Error> {
        let nanos = u32::try_from(value.nanos)
            .ok()
            .filter(|nanos| *nanos < 1_000_000_000)
            .ok_or(TimeConversionError::InvalidNanos)?;
        let whole = std::time::Duration::from_secs(value.seconds.unsigned_abs());
        let second = if value.seconds >= 0 {
            std::time::UNIX_EPOCH.checked_add(whole)
        } else {
            std::time::UNIX_EPOCH.checked_sub(whole)
        };
        second
            .and_then(|second| second.checked_add(std::time::Duration::from_nanos(nanos.into())))
            .ok_or(TimeConversionError::OutOfRange)
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(value: std::time::SystemTime) -> Self {
        match value.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => {
                let d = Duration::from(since);
                Timestamp {
                    seconds: d.seconds,
                    nanos: d.nanos,
                }
            }
            Err(before) => {
                // Timestamps before 1970 count seconds down and nanos up, as protobuf defines them.
                let before = before.duration();
                let mut seconds = -i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                let mut nanos = before.subsec_nanos() as i32;
                if nanos > 0 {
                    seconds -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Timestamp { seconds, nanos }
            }
        }
    }
}

impl Any {
    /// Packs a message into an `Any` with the `type.googleapis.com/` prefix, as Windshift does.
    pub fn pack<M: prost::Name>(message: &M) -> Any {
        Any {
            type_url: format!("{TYPE_URL_PREFIX}{}", M::full_name()),
            value: message.encode_to_vec().into(),
        }
    }

    /// Decodes the message inside, if the type URL names `M`.
    pub fn unpack<M: prost::Name + Default>(&self) -> Option<Result<M, prost::DecodeError>> {
        (self.message_name() == M::full_name()).then(|| M::decode(self.value.clone()))
    }

    /// The message's full name: the part of the type URL after the last `/`.
    pub fn message_name(&self) -> &str {
        self.type_url.rsplit('/').next().unwrap_or_default()
    }
}

/// The canonical gRPC name of a code (`NOT_FOUND`), which reads better in a one-line message than
/// tonic's sentence-long description.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

    #[test]
    fn durations_convert_both_ways_and_reject_bad_values() {
        let d = Duration {
            seconds: 3,
            nanos: 5,
        };
        assert_eq!(StdDuration::try_from(&d), Ok(StdDuration::new(3, 5)));
        assert_eq!(Duration::from(StdDuration::new(3, 5)), d);
        let negative = Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(
            StdDuration::try_from(&negative),
            Err(TimeConversionError::Negative)
        );
        let bad_nanos = Duration {
            seconds: 0,
            nanos: 1_000_000_000,
        };
        assert_eq!(
            StdDuration::try_from(&bad_nanos),
            Err(TimeConversionError::InvalidNanos)
        );
    }

    #[test]
    fn timestamps_convert_both_ways() {
        let t = UNIX_EPOCH + StdDuration::new(1_700_000_000, 123);
        let ts = Timestamp::from(t);
        assert_eq!(
            ts,
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 123
            }
        );
        assert_eq!(SystemTime::try_from(&ts), Ok(t));
        let before = Timestamp::from(UNIX_EPOCH - StdDuration::new(1, 250_000_000));
        assert_eq!(
            before,
            Timestamp {
                seconds: -2,
                nanos: 750_000_000
            }
        );
        assert_eq!(
            SystemTime::try_from(&before),
            Ok(UNIX_EPOCH - StdDuration::new(1, 250_000_000))
        );
        let bad_nanos = Timestamp {
            seconds: -1,
            nanos: -1,
        };
        assert_eq!(
            SystemTime::try_from(&bad_nanos),
            Err(TimeConversionError::InvalidNanos)
        );
    }

    #[test]
    fn any_packs_with_the_windshift_prefix() {
        let value = windshift::test::v1::StringValue {
            value: "abc".into(),
        };
        let any = Any::pack(&value);
        assert_eq!(
            any.type_url,
            "type.googleapis.com/windshift.test.v1.StringValue"
        );
        assert_eq!(any.message_name(), "windshift.test.v1.StringValue");
        assert_eq!(
            any.unpack::<windshift::test::v1::StringValue>()
                .unwrap()
                .unwrap(),
            value
        );
    }
}
