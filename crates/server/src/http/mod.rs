//! The HTTP/JSON API on `HTTP_PORT` (docs/http-api.md): thin axum handlers over `jetway-core`,
//! beside the gRPC services and never through them. Routes by resource: [`publish`] (one event,
//! a batch), [`reads`] (a range, one event), [`live`] (SSE), and [`openapi`] (`/openapi.json`). Every failure answers with
//! [`error`]'s one JSON shape and its one table from error kind to HTTP status.
//!
//! Around every route, in [`router`]: [`observe`] (a server span and metrics by route), [`gzip`]
//! (compressed answers) and, when configured, [`cors`] (browser clients of other origins).
//!
//! The port's connections are served by [`crate::infra::transport::serve_api`], with the same
//! connection cap and header timeout as the other ports.

pub mod cors;
pub mod error;
pub mod gzip;
pub mod json;
pub mod live;
pub mod observe;
pub mod openapi;
pub mod publish;
pub mod reads;

use std::sync::Arc;

use axum::{
    Router, middleware,
    routing::{get, post},
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
    /// `HTTP_CORS_*`; the CORS layer is installed only when it allows some origin.
    cors: Option<Arc<cors::Cors>>,
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
            cors: None,
        }
    }

    /// The same API, answering browsers of the origins `cors` allows.
    pub fn with_cors(mut self, cors: cors::Cors) -> ApiState {
        self.cors = cors.enabled().then(|| Arc::new(cors));
        self
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/publish", post(publish::publish_batch))
        .route("/publish/{subject}", post(publish::publish_one))
        .route("/streams/{stream}/events", get(reads::read_events))
        .route("/streams/{stream}/events/{id}", get(reads::get_event))
        .route("/subscribe/{subject}", get(live::subscribe));
    // Request/reply (`POST /v1/request/{subject}`) joins `v1` here once core has it, and
    // authentication and permissions wrap `v1` as one `route_layer`, so every route is checked
    // the same way and unknown paths still answer 404.
    let cors = state.cors.clone();
    let api = Router::new()
        .route("/openapi.json", get(openapi::serve))
        .nest("/v1", v1)
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .with_state(state);
    // Every layer of the API is added here, innermost first; `Router::layer` runs them after
    // routing, so they see the matched route's template.
    let api = match cors {
        Some(cors) => api.layer(middleware::from_fn(move |request, next| {
            cors::apply(Arc::clone(&cors), request, next)
        })),
        None => api,
    };
    api.layer(middleware::from_fn(gzip::compress))
        .layer(middleware::from_fn(observe::observe))
}
