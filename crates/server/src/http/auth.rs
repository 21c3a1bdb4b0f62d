//! Authentication and permissions of the HTTP API: the HTTP wrapper of [`Access::admit`], the one
//! authentication gRPC's [`crate::auth::AuthLayer`] wraps too, with the same clients, table
//! ([`rpcs::RULES`], keyed `METHOD /path/{template}`), metrics, logs and audit lines.
//!
//! [`authenticate`] runs on every route (a `route_layer`: a path no route serves still answers
//! 404): it finds the route's entry by its method and matched path template, authenticates the
//! request, checks a [`Need::OnPath`] entry's permissions on the resource its path names (and
//! audits a change that needs manage once it succeeded), and leaves the [`Caller`] for handlers
//! that check more (a batch's subjects, a live stream's stream) to extract. A failure is the API's
//! JSON error: 401 with `WWW-Authenticate` (no or bad credentials), 403 naming the permission and
//! the resource.

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, MatchedPath, Path, Request, State},
    http::{HeaderValue, Method, header::WWW_AUTHENTICATE, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use jetway_core::{Error, ErrorKind};

use crate::{
    auth::{
        Access, Caller, Permission,
        rpcs::{self, Need, Rule},
    },
    http::error::ApiError,
};

/// The challenges a 401 carries: the two `authorization` schemes a client can answer with.
const CHALLENGES: [&str; 2] = [
    "Bearer realm=\"jetway\"",
    "Basic realm=\"jetway\", charset=\"UTF-8\"",
];

/// The middleware of every route; see the module docs.
pub async fn authenticate(State(access): State<Access>, request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        // A route layer always runs on a matched route; without one, nothing names the call.
        None => format!("{} {}", request.method(), request.uri().path()),
    };
    let rule = rpcs::rule_of(&route);
    let caller = match access
        .admit(&route, rule, request.headers(), request.extensions())
        .await
    {
        Ok(caller) => caller,
        Err(err) => return refusal(err),
    };
    let (mut parts, body) = request.into_parts();
    let audited = match on_path(&caller, rule, &mut parts).await {
        Ok(audited) => audited,
        Err(err) => return err.into_response(),
    };
    parts.extensions.insert(caller.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Some(resource) = audited
        && response.status().is_success()
    {
        caller.audit(&route, &resource);
    }
    response
}

/// Checks a [`Need::OnPath`] entry's permissions on the resource its template builds from the
/// path; returns that resource when the request is a change that needs manage (to audit).
async fn on_path(
    caller: &Caller,
    rule: Option<&'static Rule>,
    parts: &mut Parts,
) -> Result<Option<String>, ApiError> {
    let Some(Rule {
        need: Need::OnPath(permissions, template),
        ..
    }) = rule
    else {
        return Ok(None);
    };
    let Path(parameters) = Path::<HashMap<String, String>>::from_request_parts(parts, &())
        .await
        .map_err(|rejection| ApiError::invalid("path", rejection.body_text()))?;
    let resource = rpcs::fill(template, |name| parameters.get(name).map(String::as_str))
        .ok_or_else(|| {
            tracing::error!(
                template,
                "a permission template names a parameter its route does not have"
            );
            ApiError::from(Error::new(
                ErrorKind::PermissionDenied,
                "this route's entry in the permission table does not fit its path",
            ))
        })?;
    for permission in *permissions {
        caller.permit(*permission, &resource)?;
    }
    let change = parts.method != Method::GET && parts.method != Method::HEAD;
    Ok((change && permissions.contains(&Permission::Manage)).then_some(resource))
}

/// The answer to a request [`Access::admit`] refused: 401 with the challenges, or 403.
fn refusal(err: Error) -> Response {
    let unauthenticated = err.kind() == ErrorKind::Unauthenticated;
    let mut response = ApiError::from(err).into_response();
    if unauthenticated {
        for challenge in CHALLENGES {
            response
                .headers_mut()
                .append(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
    }
    response
}

/// A handler's [`Caller`], left by [`authenticate`]. A handler reached without it is refused
/// (fail closed), as gRPC's [`Caller::of`] does.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!("an HTTP request reached its handler without the authentication layer");
            ApiError::from(Error::new(
                ErrorKind::PermissionDenied,
                "the request was not authenticated",
            ))
        })
    }
}
