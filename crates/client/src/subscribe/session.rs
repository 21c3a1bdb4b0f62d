//! One Events stream of a subscription: opening it (subscribe, then wait for the server's
//! `Subscribed`), and its two directions, next to the [`Book`] of what it holds. A reconnect opens a
//! new session.

use std::time::Duration;

use jetway_api::windshift::events::v1alpha1::{
    EventsRequest, EventsResponse,
    events_request::{self, Request},
    events_response::Response,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::book::Book;
use crate::{Client, Error};

/// Used when the server's `Subscribed` carries no processing timeout (the spec's default).
const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests queued for tonic to send. Small: the book's outbox holds the rest.
const OUTBOUND_BUFFER: usize = 16;

/// One Events stream and what it holds.
pub(super) struct Session {
    pub(super) outbound: mpsc::Sender<EventsRequest>,
    pub(super) inbound: tonic::Streaming<EventsResponse>,
    pub(super) book: Book,
}

impl Session {
    /// Opens the Events stream, subscribes, and waits for `Subscribed` (bounded by the client's
    /// request timeout).
    pub(super) async fn open(
        client: &Client,
        subscribe: &events_request::Subscribe,
    ) -> Result<Session, Error> {
        let (outbound, requests) = mpsc::channel(OUTBOUND_BUFFER);
        let first = EventsRequest {
            request: Some(Request::Subscribe(subscribe.clone())),
        };
        outbound
            .try_send(first)
            .map_err(|_| Error::Protocol("cannot queue the subscribe request".into()))?;
        let mut events = client.events.clone();
        let handshake = async move {
            // No deadline on the call itself: the stream lives as long as the subscription.
            let mut inbound = events
                .events(ReceiverStream::new(requests))
                .await?
                .into_inner();
            let first = inbound.message().await?;
            Ok::<_, Error>((inbound, first))
        };
        let (inbound, first) = match client.request_timeout() {
            Some(limit) => tokio::time::timeout(limit, handshake).await.map_err(|_| {
                tonic::Status::deadline_exceeded(format!(
                    "the server did not confirm the subscription within {limit:?}"
                ))
            })??,
            None => handshake.await?,
        };
        let processing_timeout = match first.map(|m| m.response) {
            Some(Some(Response::Subscribed(subscribed))) => subscribed
                .processing_timeout
                .and_then(|d| Duration::try_from(&d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_PROCESSING_TIMEOUT),
            None => {
                return Err(tonic::Status::unavailable(
                    "the server ended the events stream before confirming the subscription",
                )
                .into());
            }
            Some(other) => {
                return Err(Error::Protocol(format!(
                    "expected Subscribed first, got {other:?}"
                )));
            }
        };
        Ok(Session {
            outbound,
            inbound,
            book: Book::new(processing_timeout / 2),
        })
    }
}
