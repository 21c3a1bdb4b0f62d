//! The HTTP/JSON API on `HTTP_PORT` (docs/http-api.md): thin axum handlers over `jetway-core`,
//! beside the gRPC services and never through them. Routes by resource: [`publish`] (one event,
//! a batch), [`cloudevents`] (the one CloudEvents mapping, in and out), [`reads`] (a range, one event), [`live`] (SSE), [`requests`] (request/reply),
//! [`workers`] (fetch, ack, reject, extend), [`kv`] (key-value stores), [`admin`] (streams,
//! consumers, dead letters), [`consumers`] (declaring one), and [`openapi`] (`/openapi.json`). Every failure answers with
//! [`error`]'s one JSON shape and its one table from error kind to HTTP status.
//! [`auth`] checks every route against `AUTH_FILE` and the one permission table, as gRPC's calls
//! are.
//!
//! Around every route, in [`router`]: [`observe`] (a server span and metrics by route), [`gzip`]
//! (compressed answers) and, when configured, [`cors`] (browser clients of other origins).
//!
//! The port's connections are served by [`crate::infra::transport::serve_api`], with the same
//! connection cap and header timeout as the other ports.

pub mod admin;
pub mod auth;
pub mod cloudevents;
pub mod consumers;
pub mod cors;
pub mod error;
pub mod fields;
pub mod gzip;
pub mod json;
pub mod kv;
pub mod live;
pub mod observe;
pub mod openapi;
pub mod publish;
pub mod reads;
pub mod requests;
pub mod workers;

use std::sync::Arc;

use axum::{
    Router, middleware,
    routing::{get, post, put},
};
use jetway_core::{
    Nats, consumers::UnnamedLimit, fetch::Fetcher, live::LiveFeeds, publish::Publisher,
    requests::Requester,
};
use tokio_util::sync::CancellationToken;

use crate::{auth::Access, infra::config::Limits};

/// What every handler shares ([`ApiParts`]), behind one `Arc`: axum's `State` extractor clones it
/// for every request, and cloning the parts one by one (NATS client handles, a cancellation
/// token) cost about a tenth of the server's CPU per HTTP publish.
#[derive(Clone)]
pub struct ApiState(Arc<ApiParts>);

impl std::ops::Deref for ApiState {
    type Target = ApiParts;

    fn deref(&self) -> &ApiParts {
        &self.0
    }
}

/// The parts of [`ApiState`]; handlers reach them through `Deref`.
pub struct ApiParts {
    nats: Nats,
    publisher: Publisher,
    live: LiveFeeds,
    /// Sends requests as gRPC's Request does, within `REQUEST_DEFAULT_TIMEOUT`/`REQUEST_MAX_TIMEOUT`.
    requester: Requester,
    /// The server's one table of fetched events, shared with gRPC's Fetch, Ack and Reject.
    fetcher: Arc<Fetcher>,
    /// Cancelled at shutdown: live streams and range reads end, so connections can close.
    shutdown: CancellationToken,
    /// `HTTP_MAX_BODY_BYTES`.
    max_body: usize,
    /// `AUTH_FILE`'s clients, shared with gRPC.
    access: Access,
    /// The cap on unnamed consumers, shared with gRPC's EnsureConsumers (HTTP declares only named
    /// ones, so it is never reached from here; core's one call takes it).
    unnamed: Arc<UnnamedLimit>,
    /// `HTTP_CORS_*`; the CORS layer is installed only when it allows some origin.
    cors: Option<Arc<cors::Cors>>,
}

impl ApiParts {
    /// The parts of an API over `nats`, within `limits`, sharing `live` with gRPC's Subscribe and
    /// `fetcher` with gRPC's Fetch (so an event fetched on one API is settled on either, within
    /// one set of limits) and `access` (who may call what) with gRPC; cancelling `shutdown` ends its
    /// streams.
    pub fn new(
        nats: Nats,
        limits: &Limits,
        live: LiveFeeds,
        fetcher: Arc<Fetcher>,
        access: Access,
        unnamed: Arc<UnnamedLimit>,
        shutdown: CancellationToken,
    ) -> ApiParts {
        ApiParts {
            publisher: Publisher::new(nats.clone()),
            requester: Requester::new(nats.clone(), limits.requests()),
            fetcher,
            live,
            nats,
            shutdown,
            max_body: limits.http_max_body_bytes,
            access,
            unnamed,
            cors: None,
        }
    }

    /// The same API, answering browsers of the origins `cors` allows.
    pub fn with_cors(mut self, cors: cors::Cors) -> ApiParts {
        self.cors = cors.enabled().then(|| Arc::new(cors));
        self
    }
}

/// The API's routes.
pub fn router(parts: ApiParts) -> Router {
    let state = ApiState(Arc::new(parts));
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
        .route("/stores/{store}/history/{*key}", get(kv::key_history))
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
            get(admin::consumer_info)
                .put(consumers::ensure_consumer)
                .delete(admin::delete_consumer),
        )
        .route(
            "/dead-letters/{dead_letter_stream}",
            get(admin::list_dead_letters),
        )
        .route(
            "/dead-letters/{dead_letter_stream}/redrive",
            post(admin::redrive_dead_letters),
        )
        .route("/request/{subject}", post(requests::request))
        .merge(workers::routes());
    // Every route needs its line in `auth::rpcs::RULES` (a route without one is refused to every
    // client when `AUTH_FILE` is set).
    let cors = state.cors.clone();
    let api = Router::new()
        .route("/openapi.json", get(openapi::serve))
        .nest("/v1", v1)
        // After every route: a `route_layer` wraps the routes added before it, and only those,
        // so a path no route serves still answers 404.
        .route_layer(middleware::from_fn_with_state(
            state.access.clone(),
            auth::authenticate,
        ))
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
