//! `jetway.events.v1` messages to and from `jetway-core`: stream pointers, consumer declarations,
//! publications and their results, events and settlements. A client input with no core equivalent is
//! rejected here, naming the field.

use jetway_api::{
    google::protobuf::Any,
    jetway::events::v1::{self as api, publish_event_request, stream_pointer::Pointer},
};
use jetway_core::{
    Error,
    consumers::{ConsumerSpec, DeliveryPolicy},
    format::Event,
    pipeline::Outcome,
    publish::Publication,
    settle::Settled,
    streams::{self, StreamPointer},
};

use crate::{codec::windshift, grpc::status::ToStatus};

/// A stream pointer. Ids start at 1, and exactly one position must be set.
pub(crate) fn optional_pointer(
    field: &str,
    value: Option<&api::StreamPointer>,
) -> Result<Option<StreamPointer>, Error> {
    let Some(value) = value else {
        return Ok(None);
    };
    Ok(Some(match &value.pointer {
        Some(Pointer::Start(_)) => StreamPointer::Start,
        Some(Pointer::End(_)) => StreamPointer::End,
        Some(Pointer::Time(time)) => {
            StreamPointer::Time(windshift::timestamp(&format!("{field}.time"), time)?)
        }
        Some(Pointer::Id(0)) => {
            return Err(Error::invalid(
                format!("{field}.id"),
                "must be at least 1 (ids start at 1)",
            ));
        }
        Some(Pointer::Id(id)) => {
            streams::validate_sequence(&format!("{field}.id"), *id)?;
            StreamPointer::Offset(*id)
        }
        None => {
            return Err(Error::invalid(
                field,
                "set one of start, end, time or id, or leave it out",
            ));
        }
    }))
}

/// Decodes EnsureConsumer; its delivery policy is always written in full.
pub(crate) fn consumer_spec(request: api::EnsureConsumerRequest) -> Result<ConsumerSpec, Error> {
    let backoff = request
        .backoff
        .iter()
        .enumerate()
        .map(|(i, d)| windshift::duration(&format!("backoff[{i}]"), d))
        .collect::<Result<_, _>>()?;
    Ok(ConsumerSpec {
        from: optional_pointer("from", request.from.as_ref())?,
        processing_timeout: windshift::optional_duration(
            "processing_timeout",
            request.processing_timeout.as_ref(),
        )?,
        delivery: Some(DeliveryPolicy {
            max_deliveries: request.max_deliveries,
            backoff,
            dead_letter_stream: request.dead_letter_stream.filter(|s| !s.is_empty()),
        }),
        stream: request.stream,
        name: request.name,
        subjects: request.subjects,
    })
}

/// Encodes the outcome of one publish of a stream or batch: the id, or the status PublishEvent
/// would have failed with.
pub(crate) fn publish_result(outcome: Outcome) -> api::PublishResult {
    use api::publish_result::Result as R;
    let result = match outcome {
        Ok(published) => R::Published(api::PublishEventResponse {
            id: published.id,
            duplicate: published.duplicate,
        }),
        Err(err) => {
            let status = err.to_status();
            R::Error(api::ItemError {
                code: status.code() as i32,
                message: status.message().to_owned(),
            })
        }
    };
    api::PublishResult {
        result: Some(result),
    }
}

/// Decodes PublishEvent, with the trace context taken from the request metadata.
pub(crate) fn publication(
    request: api::PublishEventRequest,
    trace_parent: Option<String>,
    trace_state: Option<String>,
) -> Result<Publication, Error> {
    let (data_type, content_type, body) = match request.payload {
        Some(publish_event_request::Payload::Data(data)) => {
            (data.message_name().to_owned(), None, data.value)
        }
        Some(publish_event_request::Payload::Raw(raw)) => {
            (String::new(), Some(raw.content_type), raw.data)
        }
        None => return Err(Error::invalid("payload", "set data or raw")),
    };
    let mut headers: Vec<(String, String)> = request.headers.into_iter().collect();
    // A map has no order; sorted, the stored headers do not depend on the client's.
    headers.sort();
    Ok(Publication {
        subject: request.subject,
        data_type,
        content_type,
        body,
        headers,
        timestamp: request
            .timestamp
            .as_ref()
            .map(|t| windshift::timestamp("timestamp", t))
            .transpose()?,
        idempotency_key: request.idempotency_key,
        expected_last_id: request.expected_last_id,
        trace_parent,
        trace_state,
    })
}

/// Encodes an event: a protobuf message when it has a type, raw bytes otherwise. The body moves into
/// the response without a copy.
pub(crate) fn encode_event(event: Event, delivery_attempt: u64) -> api::Event {
    let payload = if event.data_type.is_empty() {
        api::event::Payload::Raw(api::RawPayload {
            data: event.body,
            content_type: event.content_type.unwrap_or_default(),
        })
    } else {
        api::event::Payload::Data(Any {
            type_url: windshift::type_url(&event.data_type),
            value: event.body,
        })
    };
    api::Event {
        id: event.id,
        subject: event.subject,
        timestamp: Some(event.timestamp.into()),
        payload: Some(payload),
        headers: event.headers.into_iter().collect(),
        idempotency_key: event.idempotency_key,
        trace_parent: event.trace_parent,
        trace_state: event.trace_state,
        delivery_attempt,
    }
}

/// Encodes what an Ack or Reject settled.
pub(crate) fn encode_settled(settled: Settled) -> api::Settled {
    api::Settled {
        ids: settled.ids,
        invalid_ids: settled.invalid_ids,
        temporary_failed_ids: settled.temporary_failed_ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetway_api::{google::protobuf::Timestamp, windshift::test::v1::StringValue};

    #[test]
    fn pointers_need_a_position_and_ids_start_at_one() {
        let pointer =
            |p: Option<Pointer>| optional_pointer("from", Some(&api::StreamPointer { pointer: p }));
        assert_eq!(pointer(None).unwrap_err().field(), Some("from"));
        assert_eq!(
            pointer(Some(Pointer::Id(0))).unwrap_err().field(),
            Some("from.id")
        );
        assert_eq!(
            pointer(Some(Pointer::Id(3))).unwrap(),
            Some(StreamPointer::Offset(3))
        );
        let bad_time = Pointer::Time(Timestamp {
            seconds: 0,
            nanos: -1,
        });
        assert_eq!(
            pointer(Some(bad_time)).unwrap_err().field(),
            Some("from.time")
        );
        assert_eq!(optional_pointer("from", None).unwrap(), None);
    }

    #[test]
    fn publications_take_data_or_raw_and_sorted_headers() {
        let request = api::PublishEventRequest {
            subject: "a".into(),
            payload: Some(publish_event_request::Payload::Raw(api::RawPayload {
                data: bytes::Bytes::from_static(b"{}"),
                content_type: "application/json".into(),
            })),
            headers: [("b".to_owned(), "2".to_owned()), ("a".into(), "1".into())].into(),
            ..Default::default()
        };
        let raw = publication(request.clone(), None, None).unwrap();
        assert_eq!(raw.content_type.as_deref(), Some("application/json"));
        assert_eq!(raw.data_type, "");
        assert_eq!(raw.headers[0].0, "a");
        let none = api::PublishEventRequest {
            payload: None,
            ..request
        };
        assert_eq!(
            publication(none, None, None).unwrap_err().field(),
            Some("payload")
        );

        let any = Any::pack(&StringValue { value: "v".into() });
        let event = Event {
            id: 1,
            subject: "a".into(),
            data_type: "windshift.test.v1.StringValue".into(),
            content_type: None,
            body: any.value.clone(),
            timestamp: std::time::UNIX_EPOCH,
            idempotency_key: None,
            trace_parent: None,
            trace_state: None,
            headers: vec![],
        };
        let encoded = encode_event(event.clone(), 2);
        assert_eq!(encoded.payload, Some(api::event::Payload::Data(any)));
        let raw = encode_event(
            Event {
                data_type: String::new(),
                ..event
            },
            0,
        );
        assert!(matches!(raw.payload, Some(api::event::Payload::Raw(_))));
    }
}
