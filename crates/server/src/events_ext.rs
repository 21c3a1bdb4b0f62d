//! `jetway.events.v1.EventsService`: thin handlers over `jetway_core` for consumers with a delivery
//! policy, publishing raw payloads and custom headers (one event, a stream of them, or a batch),
//! reads without a consumer (GetEvent, ReadEvents), live subscriptions, and unary Fetch, Ack and
//! Reject.
//!
//! PublishStream runs in [`crate::publish_stream`]; the read streams go through
//! [`crate::streaming::forward`]. Fetched events are held in flight
//! by one [`Fetcher`] per server, so Ack and Reject must reach the server that did the Fetch.

use std::sync::Arc;

use jetway_api::{
    google::protobuf::Any,
    jetway::events::v1::{
        self as api,
        events_service_server::{EventsService, EventsServiceServer},
        publish_event_request,
        stream_pointer::Pointer,
    },
};
use jetway_core::{
    Invalid, Nats,
    consumers::{self, ConsumerSpec, DeliveryPolicy, UnnamedLimit},
    delivery::{Settle, Settled},
    fetch::{FetchSpec, Fetcher},
    format::Event,
    live::{LiveFeeds, LiveSpec},
    pipeline::{self, Outcome},
    publish::{Publication, Publisher},
    reads::{self, ReadSpec},
    streams::{self, StreamPointer},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    config::Limits,
    convert,
    publish_stream::{self, Trace},
    status::ToStatus,
    streaming::{Responses, forward},
};

/// Jetway's events service.
#[derive(Clone)]
pub struct EventsExt {
    nats: Nats,
    publisher: Publisher,
    fetcher: Arc<Fetcher>,
    live: LiveFeeds,
    unnamed: Arc<UnnamedLimit>,
    shutdown: CancellationToken,
}

impl EventsExt {
    /// A service over `nats`, within `limits` (fetched events in flight, live subscribers' buffers),
    /// sharing the cap on unnamed consumers with Windshift's EnsureConsumer. Cancelling `shutdown`
    /// ends every ReadEvents and Subscribe stream with UNAVAILABLE, and every PublishStream once it
    /// answered what it read. Call it inside the Tokio runtime.
    pub fn new(
        nats: Nats,
        limits: &Limits,
        unnamed: Arc<UnnamedLimit>,
        shutdown: CancellationToken,
    ) -> Self {
        EventsExt {
            publisher: Publisher::new(nats.clone()),
            fetcher: Fetcher::start(nats.clone(), limits.fetch, shutdown.clone()),
            live: LiveFeeds::new(nats.clone(), limits.subscriber_buffer),
            unnamed,
            nats,
            shutdown,
        }
    }

    /// The tonic service, ready to add to a server.
    pub fn service(
        nats: Nats,
        limits: &Limits,
        unnamed: Arc<UnnamedLimit>,
        shutdown: CancellationToken,
    ) -> EventsServiceServer<EventsExt> {
        EventsServiceServer::new(EventsExt::new(nats, limits, unnamed, shutdown))
    }
}

#[tonic::async_trait]
impl EventsService for EventsExt {
    async fn ensure_consumer(
        &self,
        request: Request<api::EnsureConsumerRequest>,
    ) -> Result<Response<api::EnsureConsumerResponse>, Status> {
        let spec = consumer_spec(request.into_inner()).map_err(|e| e.to_status())?;
        let id = consumers::ensure_consumer(&self.nats, &spec, &self.unnamed)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::EnsureConsumerResponse { id }))
    }

    async fn publish_event(
        &self,
        request: Request<api::PublishEventRequest>,
    ) -> Result<Response<api::PublishEventResponse>, Status> {
        let trace = Trace::of(request.metadata());
        let publication = publication(request.into_inner(), trace.parent, trace.state)
            .map_err(|e| e.to_status())?;
        let published = self
            .publisher
            .publish(publication)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::PublishEventResponse {
            id: published.id,
            duplicate: published.duplicate,
        }))
    }

    type PublishStreamStream = Responses<api::PublishStreamResponse>;

    async fn publish_stream(
        &self,
        request: Request<tonic::Streaming<api::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let trace = Trace::of(request.metadata());
        Ok(Response::new(publish_stream::spawn(
            self.publisher.clone(),
            request.into_inner(),
            trace,
            self.shutdown.clone(),
        )))
    }

    async fn publish_batch(
        &self,
        request: Request<api::PublishBatchRequest>,
    ) -> Result<Response<api::PublishBatchResponse>, Status> {
        let trace = Trace::of(request.metadata());
        let events = request
            .into_inner()
            .events
            .into_iter()
            .map(|event| publication(event, trace.parent.clone(), trace.state.clone()))
            .collect();
        let outcomes = pipeline::publish_batch(&self.publisher, events)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::PublishBatchResponse {
            results: outcomes.into_iter().map(publish_result).collect(),
        }))
    }

    async fn get_event(
        &self,
        request: Request<api::GetEventRequest>,
    ) -> Result<Response<api::GetEventResponse>, Status> {
        let request = request.into_inner();
        let event = reads::get_event(&self.nats, &request.stream, request.id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::GetEventResponse {
            event: Some(encode_event(event, 0)),
        }))
    }

    type ReadEventsStream = Responses<api::ReadEventsResponse>;

    async fn read_events(
        &self,
        request: Request<api::ReadEventsRequest>,
    ) -> Result<Response<Self::ReadEventsStream>, Status> {
        let request = request.into_inner();
        let spec = ReadSpec {
            from: optional_pointer("from", request.from.as_ref()).map_err(|e| e.to_status())?,
            limit: (request.limit > 0).then_some(request.limit.into()),
            stream: request.stream,
            subject: request.subject,
        };
        let events = reads::read_events(&self.nats, &spec)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(forward(
            events,
            |event| {
                Ok(api::ReadEventsResponse {
                    event: Some(encode_event(event, 0)),
                })
            },
            self.shutdown.clone(),
            "read again from the id after the last one received",
        )))
    }

    type SubscribeStream = Responses<api::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<api::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let spec = LiveSpec {
            subject: request.subject,
            stream: request.stream,
        };
        // The feed is open once this returns, so every event stored after the response headers
        // reach the client is sent.
        let events = self
            .live
            .subscribe(&spec)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(forward(
            events,
            |event| {
                Ok(api::SubscribeResponse {
                    event: Some(encode_event(event, 0)),
                })
            },
            self.shutdown.clone(),
            "subscribe again",
        )))
    }

    async fn fetch(
        &self,
        request: Request<api::FetchRequest>,
    ) -> Result<Response<api::FetchResponse>, Status> {
        let request = request.into_inner();
        let spec = FetchSpec {
            wait: convert::optional_duration("wait", request.wait.as_ref())
                .map_err(|e| e.to_status())?,
            stream: request.stream,
            consumer: request.consumer,
            max_events: request.max_events,
        };
        let fetched = self.fetcher.fetch(&spec).await.map_err(|e| e.to_status())?;
        Ok(Response::new(api::FetchResponse {
            events: fetched
                .events
                .into_iter()
                .map(|f| encode_event(f.event, f.delivery_attempt))
                .collect(),
            processing_timeout: Some(fetched.processing_timeout.into()),
        }))
    }

    async fn ack(
        &self,
        request: Request<api::AckRequest>,
    ) -> Result<Response<api::AckResponse>, Status> {
        let request = request.into_inner();
        let settled = self
            .fetcher
            .settle(
                &request.stream,
                &request.consumer,
                &request.ids,
                Settle::Ack,
            )
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::AckResponse {
            settled: Some(encode_settled(settled)),
        }))
    }

    async fn reject(
        &self,
        request: Request<api::RejectRequest>,
    ) -> Result<Response<api::RejectResponse>, Status> {
        let request = request.into_inner();
        let how = convert::reject(request.permanently, request.delay.as_ref(), "delay")
            .map_err(|e| e.to_status())?;
        let settled = self
            .fetcher
            .settle(&request.stream, &request.consumer, &request.ids, how)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(api::RejectResponse {
            settled: Some(encode_settled(settled)),
        }))
    }
}

/// A stream pointer. Ids start at 1, and exactly one position must be set.
fn optional_pointer(
    field: &str,
    value: Option<&api::StreamPointer>,
) -> Result<Option<StreamPointer>, Invalid> {
    let Some(value) = value else {
        return Ok(None);
    };
    Ok(Some(match &value.pointer {
        Some(Pointer::Start(_)) => StreamPointer::Start,
        Some(Pointer::End(_)) => StreamPointer::End,
        Some(Pointer::Time(time)) => {
            StreamPointer::Time(convert::timestamp(&format!("{field}.time"), time)?)
        }
        Some(Pointer::Id(0)) => {
            return Err(Invalid::new(
                format!("{field}.id"),
                "must be at least 1 (ids start at 1)",
            ));
        }
        Some(Pointer::Id(id)) => {
            streams::validate_sequence(&format!("{field}.id"), *id)?;
            StreamPointer::Offset(*id)
        }
        None => {
            return Err(Invalid::new(
                field,
                "set one of start, end, time or id, or leave it out",
            ));
        }
    }))
}

/// Decodes EnsureConsumer; its delivery policy is always written in full.
fn consumer_spec(request: api::EnsureConsumerRequest) -> Result<ConsumerSpec, Invalid> {
    let backoff = request
        .backoff
        .iter()
        .enumerate()
        .map(|(i, d)| convert::duration(&format!("backoff[{i}]"), d))
        .collect::<Result<_, _>>()?;
    Ok(ConsumerSpec {
        from: optional_pointer("from", request.from.as_ref())?,
        processing_timeout: convert::optional_duration(
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
) -> Result<Publication, Invalid> {
    let (data_type, content_type, body) = match request.payload {
        Some(publish_event_request::Payload::Data(data)) => {
            (data.message_name().to_owned(), None, data.value)
        }
        Some(publish_event_request::Payload::Raw(raw)) => {
            (String::new(), Some(raw.content_type), raw.data)
        }
        None => return Err(Invalid::new("payload", "set data or raw")),
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
            .map(|t| convert::timestamp("timestamp", t))
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
            type_url: convert::type_url(&event.data_type),
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

fn encode_settled(settled: Settled) -> api::Settled {
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
        assert_eq!(pointer(None).unwrap_err().field, "from");
        assert_eq!(pointer(Some(Pointer::Id(0))).unwrap_err().field, "from.id");
        assert_eq!(
            pointer(Some(Pointer::Id(3))).unwrap(),
            Some(StreamPointer::Offset(3))
        );
        let bad_time = Pointer::Time(Timestamp {
            seconds: 0,
            nanos: -1,
        });
        assert_eq!(pointer(Some(bad_time)).unwrap_err().field, "from.time");
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
        assert_eq!(publication(none, None, None).unwrap_err().field, "payload");

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
