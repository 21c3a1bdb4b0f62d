//! Decoding of Windshift protobuf messages into `jetway-core` requests, and encoding of core results
//! back into protobuf. Anything a client sends that has no core equivalent (a negative duration, an
//! unknown enum value, a missing required field) is rejected here, naming the field.

use std::time::{Duration, SystemTime};

use jetway_api::{
    TYPE_URL_PREFIX,
    google::protobuf::{Any, Duration as PbDuration, Timestamp},
    windshift::events::v1alpha1::{
        EnsureConsumerRequest, EnsureStreamRequest, Event, Headers, PublishEventRequest,
        StreamPointer,
        ensure_stream_request::{self as esr, DiscardPolicy, Source, StorageType},
        events_response,
        stream_pointer::Pointer,
    },
};
use jetway_core::{
    Error,
    consumers::ConsumerSpec,
    delivery::Delivery,
    publish::Publication,
    settle::{Settle, Settled},
    streams::{self, Discard, Retention, SourceSpec, StreamSource, StreamSpec},
};

/// The longest duration accepted anywhere: JetStream carries durations as signed 64-bit nanoseconds,
/// so a longer one would wrap around into a different value (about 292 years).
const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// A protobuf duration as a `std` one.
pub fn duration(field: &str, value: &PbDuration) -> Result<Duration, Error> {
    let duration =
        Duration::try_from(value).map_err(|err| Error::invalid(field, err.to_string()))?;
    if duration > MAX_DURATION {
        return Err(Error::invalid(field, "must be shorter than 292 years"));
    }
    Ok(duration)
}

/// The first second protobuf allows in a `Timestamp`: 0001-01-01T00:00:00Z.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
/// The last second protobuf allows in a `Timestamp`: 9999-12-31T23:59:59Z.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// A protobuf timestamp as a `SystemTime`.
///
/// Timestamps outside the years 1 to 9999 are rejected here, as protobuf defines them invalid: the
/// RFC 3339 header and JetStream's start times cannot hold them.
pub fn timestamp(field: &str, value: &Timestamp) -> Result<SystemTime, Error> {
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&value.seconds) {
        return Err(Error::invalid(
            field,
            "must be within 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        ));
    }
    SystemTime::try_from(value).map_err(|err| Error::invalid(field, err.to_string()))
}

/// An optional protobuf duration as a `std` one.
pub fn optional_duration(
    field: &str,
    value: Option<&PbDuration>,
) -> Result<Option<Duration>, Error> {
    value.map(|v| duration(field, v)).transpose()
}

/// A stream pointer; one with no position set means "the end", as in Windshift.
fn pointer(field: &str, value: &StreamPointer) -> Result<streams::StreamPointer, Error> {
    Ok(match &value.pointer {
        Some(Pointer::Start(_)) => streams::StreamPointer::Start,
        Some(Pointer::End(_)) | None => streams::StreamPointer::End,
        Some(Pointer::Time(time)) => {
            streams::StreamPointer::Time(timestamp(&format!("{field}.time"), time)?)
        }
        Some(Pointer::Offset(offset)) => {
            streams::validate_sequence(&format!("{field}.offset"), *offset)?;
            streams::StreamPointer::Offset(*offset)
        }
    })
}

fn optional_pointer(
    field: &str,
    value: Option<&StreamPointer>,
) -> Result<Option<streams::StreamPointer>, Error> {
    value.map(|v| pointer(field, v)).transpose()
}

fn source(field: &str, value: &esr::StreamSource) -> Result<SourceSpec, Error> {
    Ok(SourceSpec {
        name: value.name.clone(),
        from: optional_pointer(&format!("{field}.from"), value.from.as_ref())?,
        filter_subjects: value.filter_subjects.clone(),
    })
}

/// Decodes EnsureStream.
pub fn stream_spec(request: EnsureStreamRequest) -> Result<StreamSpec, Error> {
    let source = match &request.source {
        None => None,
        Some(Source::Subjects(subjects)) => Some(StreamSource::Subjects(subjects.subjects.clone())),
        Some(Source::Mirror(mirror)) => Some(StreamSource::Mirror(source("mirror", mirror)?)),
        Some(Source::Aggregate(aggregate)) => Some(StreamSource::Aggregate(
            aggregate
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| source(&format!("aggregate.sources[{i}]"), s))
                .collect::<Result<_, _>>()?,
        )),
    };
    let retention = match &request.retention_policy {
        None => Retention::default(),
        Some(policy) => Retention {
            max_age: optional_duration("retention_policy.max_age", policy.max_age.as_ref())?,
            max_events: policy.max_events,
            max_events_per_subject: policy.max_events_per_subject,
            max_bytes: policy.max_bytes,
            discard: match policy.discard_policy.map(DiscardPolicy::try_from) {
                None | Some(Ok(DiscardPolicy::Unspecified | DiscardPolicy::Old)) => Discard::Old,
                Some(Ok(DiscardPolicy::New)) => Discard::New,
                Some(Err(_)) => return Err(unknown_enum("retention_policy.discard_policy")),
            },
            discard_new_per_subject: policy.discard_new_per_subject.unwrap_or(false),
        },
    };
    let storage = request.storage.as_ref();
    Ok(StreamSpec {
        name: request.name,
        source,
        retention,
        storage: match storage.and_then(|s| s.r#type).map(StorageType::try_from) {
            None | Some(Ok(StorageType::Unspecified)) => None,
            Some(Ok(StorageType::File)) => Some(streams::Storage::File),
            Some(Ok(StorageType::Memory)) => Some(streams::Storage::Memory),
            Some(Err(_)) => return Err(unknown_enum("storage.type")),
        },
        replicas: storage.and_then(|s| s.replicas),
        dedupe_window: optional_duration(
            "deduplication_window",
            request.deduplication_window.as_ref(),
        )?,
        max_event_size: request.max_event_size,
    })
}

fn unknown_enum(field: &str) -> Error {
    Error::invalid(field, "unknown enum value")
}

/// Decodes EnsureConsumer.
pub fn consumer_spec(request: EnsureConsumerRequest) -> Result<ConsumerSpec, Error> {
    Ok(ConsumerSpec {
        from: optional_pointer("from", request.from.as_ref())?,
        processing_timeout: optional_duration(
            "processing_timeout",
            request.processing_timeout.as_ref(),
        )?,
        stream: request.stream,
        name: request.name,
        subjects: request.subjects,
        // Windshift has no delivery policy, so an existing one is kept.
        delivery: None,
    })
}

/// Decodes PublishEvent, with the trace context taken from the request metadata.
pub fn publication(
    request: PublishEventRequest,
    trace_parent: Option<String>,
    trace_state: Option<String>,
) -> Result<Publication, Error> {
    let data = request
        .data
        .ok_or_else(|| Error::invalid("data", "is required"))?;
    Ok(Publication {
        data_type: data.message_name().to_owned(),
        body: data.value,
        timestamp: request
            .timestamp
            .as_ref()
            .map(|t| timestamp("timestamp", t))
            .transpose()?,
        subject: request.subject,
        idempotency_key: request.idempotency_key,
        expected_last_id: request.expected_last_id,
        trace_parent,
        trace_state,
        ..Default::default()
    })
}

/// Decodes a reject: for good, or for redelivery after `delay` (`delay_field` names it).
pub fn reject(
    permanently: bool,
    delay: Option<&PbDuration>,
    delay_field: &str,
) -> Result<Settle, Error> {
    if permanently {
        return Ok(Settle::RejectPermanently);
    }
    Settle::reject(delay_field, optional_duration(delay_field, delay)?)
}

/// The `Any` type URL of a message type. Built by hand: `format!` costs more per delivered event.
pub fn type_url(data_type: &str) -> String {
    let mut url = String::with_capacity(TYPE_URL_PREFIX.len() + data_type.len());
    url.push_str(TYPE_URL_PREFIX);
    url.push_str(data_type);
    url
}

/// Encodes a delivered event. The body moves into the `Any` without a copy.
pub fn event(delivery: Delivery) -> Event {
    let event = delivery.event;
    Event {
        id: event.id,
        subject: event.subject,
        headers: Some(Headers {
            timestamp: Some(event.timestamp.into()),
            idempotency_key: event.idempotency_key,
            trace_parent: event.trace_parent,
            trace_state: event.trace_state,
        }),
        data: Some(Any {
            type_url: type_url(&event.data_type),
            value: event.body,
        }),
        delivery_attempt: delivery.delivery_attempt,
    }
}

/// Encodes the outcome of an Ack.
pub fn ack_confirmation(settled: Settled) -> events_response::AckConfirmation {
    events_response::AckConfirmation {
        ids: settled.ids,
        invalid_ids: settled.invalid_ids,
        temporary_failed_ids: settled.temporary_failed_ids,
    }
}

/// Encodes the outcome of a Reject.
pub fn reject_confirmation(settled: Settled) -> events_response::RejectConfirmation {
    events_response::RejectConfirmation {
        ids: settled.ids,
        invalid_ids: settled.invalid_ids,
        temporary_failed_ids: settled.temporary_failed_ids,
    }
}

/// Encodes the outcome of a Ping.
pub fn ping_confirmation(settled: Settled) -> events_response::PingConfirmation {
    events_response::PingConfirmation {
        ids: settled.ids,
        invalid_ids: settled.invalid_ids,
        temporary_failed_ids: settled.temporary_failed_ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetway_api::windshift::events::v1alpha1::ensure_stream_request::{
        RetentionPolicy, Storage, Subjects,
    };

    #[test]
    fn bad_values_name_their_field() {
        let request = EnsureStreamRequest {
            name: "s".into(),
            source: Some(Source::Subjects(Subjects {
                subjects: vec!["a".into()],
            })),
            retention_policy: Some(RetentionPolicy {
                max_age: Some(PbDuration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            stream_spec(request.clone()).unwrap_err().field(),
            Some("retention_policy.max_age")
        );
        let request = EnsureStreamRequest {
            retention_policy: None,
            storage: Some(Storage {
                r#type: Some(42),
                replicas: None,
            }),
            ..request
        };
        assert_eq!(
            stream_spec(request).unwrap_err().field(),
            Some("storage.type")
        );
        let publish = PublishEventRequest {
            subject: "a".into(),
            ..Default::default()
        };
        assert_eq!(
            publication(publish, None, None).unwrap_err().field(),
            Some("data")
        );
    }

    #[test]
    fn durations_that_would_wrap_in_nanoseconds_are_invalid() {
        let longest = PbDuration {
            seconds: 9_223_372_036,
            nanos: 0,
        };
        assert!(duration("wait", &longest).is_ok());
        let longer = PbDuration {
            seconds: 9_223_372_037,
            nanos: 0,
        };
        assert_eq!(duration("wait", &longer).unwrap_err().field(), Some("wait"));
    }

    #[test]
    fn timestamps_outside_years_1_to_9999_are_invalid() {
        let before = Timestamp {
            seconds: MIN_TIMESTAMP_SECONDS - 1,
            nanos: 0,
        };
        assert_eq!(
            timestamp("timestamp", &before).unwrap_err().field(),
            Some("timestamp")
        );
        let last = Timestamp {
            seconds: MAX_TIMESTAMP_SECONDS,
            nanos: 999_999_999,
        };
        assert!(timestamp("timestamp", &last).is_ok());
        let after = Timestamp {
            seconds: MAX_TIMESTAMP_SECONDS + 1,
            nanos: 0,
        };
        assert_eq!(
            timestamp("timestamp", &after).unwrap_err().field(),
            Some("timestamp")
        );
    }

    #[test]
    fn an_empty_pointer_means_the_end() {
        assert_eq!(
            pointer("from", &StreamPointer { pointer: None }).unwrap(),
            streams::StreamPointer::End
        );
    }
}
