//! The HTTP/JSON API on `HTTP_PORT` (docs/http-api.md): thin axum handlers over `jetway-core`,
//! beside the gRPC services and never through them. Routes by resource: [`publish`] (one event,
//! a batch), [`reads`] (a range, one event), [`live`] (SSE), [`kv`] (key-value stores), [`admin`] (streams, consumers, dead
//! letters), and [`openapi`] (`/openapi.json`). Every failure answers with
//! [`error`]'s one JSON shape and its one table from error kind to HTTP status.
//!
//! The port's connections are served by [`crate::infra::transport::serve_api`], with the same
//! connection cap and header timeout as the other ports.

pub mod admin;
pub mod error;
pub mod fields;
pub mod json;
pub mod kv;
pub mod live;
pub mod openapi;
pub mod publish;
pub mod reads;

use axum::{
    Router,
    routing::{get, post, put},
};
use jetway_core::{Nats, live::LiveFeeds, publish::Publisher};
use tokio_util::sync::CancellationToken;

use crate::infra::config::Limits;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    nats: Nats,
    publisher: Publisher,
    live: LiveFeeds,
    /// Cancelled at shutdown: live streams and range reads end, so connections can close.
    shutdown: CancellationToken,
    /// `HTTP_MAX_BODY_BYTES`.
    max_body: usize,
}

impl ApiState {
    /// The state of an API over `nats`, within `limits`, sharing `live` with gRPC's Subscribe;
    /// cancelling `shutdown` ends its streams.
    pub fn new(
        nats: Nats,
        limits: &Limits,
        live: LiveFeeds,
        shutdown: CancellationToken,
    ) -> ApiState {
        ApiState {
            publisher: Publisher::new(nats.clone()),
            live,
            nats,
            shutdown,
            max_body: limits.http_max_body_bytes,
        }
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/publish", post(publish::publish_batch))
        .route("/publish/{subject}", post(publish::publish_one))
        .route("/streams/{stream}/events", get(reads::read_events))
        .route("/streams/{stream}/events/{id}", get(reads::get_event))
        .route("/subscribe/{subject}", get(live::subscribe))
        .route("/stores/{store}", put(kv::ensure_store))
        .route("/stores/{store}/keys", get(kv::list_keys))
        .route(
            "/stores/{store}/keys/{*key}",
            get(kv::get_value)
                .put(kv::put_value)
                .delete(kv::delete_value),
        )
        .route("/stores/{store}/watch", get(kv::watch))
        .route("/streams", get(admin::list_streams))
        .route(
            "/streams/{stream}",
            get(admin::stream_info)
                .put(admin::ensure_stream)
                .delete(admin::delete_stream),
        )
        .route("/streams/{stream}/purge", post(admin::purge_stream))
        .route("/streams/{stream}/consumers", get(admin::list_consumers))
        .route(
            "/streams/{stream}/consumers/{consumer}",
            get(admin::consumer_info).delete(admin::delete_consumer),
        )
        .route(
            "/dead-letters/{dead_letter_stream}",
            get(admin::list_dead_letters),
        )
        .route(
            "/dead-letters/{dead_letter_stream}/redrive",
            post(admin::redrive_dead_letters),
        );
    // Request/reply (`POST /v1/request/{subject}`) joins `v1` here once core has it, and
    // authentication and permissions wrap `v1` as one `route_layer`, so every route is checked
    // the same way and unknown paths still answer 404.
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        .nest("/v1", v1)
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .with_state(state)
}
