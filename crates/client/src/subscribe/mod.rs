//! Subscriptions: a [`Subscription`] is a stream of [`Event`]s from one consumer.
//!
//! One background task owns the bidirectional Events stream. It hands events out, sends the
//! settle requests that event handles pass it over a bounded channel, pings every held event each
//! half processing timeout, rejects the events whose handles were dropped unsettled, and reconnects
//! with backoff when the transport fails.
//!
//! The parts, each in its own file:
//! - `options`: [`SubscribeOptions`], what the application asks for;
//! - `subscription`: the [`Subscription`] handle the application reads events from;
//! - `link`: how an [`Event`] handle asks the task to settle it, or tells it that it was dropped;
//! - `task`: the background task and its reconnect loop;
//! - `session`: one Events stream, from the subscribe handshake on;
//! - `book`: what one session holds, and the rules for pings, settles, rejects and confirmations.
//!
//! [`Event`]: crate::Event

mod book;
mod link;
mod options;
mod session;
mod subscription;
mod task;

use jetway_api::windshift::events::v1alpha1::events_request;

pub(crate) use link::{Action, Link, Outcome};
pub use options::{DEFAULT_MAX_PROCESSING_EVENTS, SubscribeOptions};
pub use subscription::Subscription;

use crate::{Client, Error};

impl Client {
    /// Subscribes to `consumer` of `stream` (made with [`Consumers::ensure`](crate::Consumers::ensure))
    /// with the default options. Returns once the server has confirmed the subscription, so an
    /// unknown consumer fails here with NOT_FOUND.
    ///
    /// The subscription then survives transport failures and server restarts: it reconnects with
    /// backoff and subscribes again, and the server redelivers whatever was held when the
    /// connection broke. It ends only when dropped, or with an error the server will not change
    /// its mind about (the consumer or stream was deleted).
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn run(client: jetway_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut events = client.subscribe("orders", "billing").await?;
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{}: {}", event.id(), event.subject());
    ///     event.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, stream: &str, consumer: &str) -> Result<Subscription, Error> {
        self.subscribe_with(stream, consumer, &SubscribeOptions::new())
            .await
    }

    /// [`Client::subscribe`] with options.
    pub async fn subscribe_with(
        &self,
        stream: &str,
        consumer: &str,
        options: &SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let subscribe = events_request::Subscribe {
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            max_processing_events: Some(options.max_processing_events),
        };
        let session = session::Session::open(self, &subscribe).await?;
        Ok(task::spawn(self.clone(), subscribe, session))
    }
}
