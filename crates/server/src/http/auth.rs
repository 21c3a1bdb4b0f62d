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
    authenticate_by(&access, rpcs::rule_of, request, next).await
}

/// [`authenticate`] with the entries `rule_of` finds (the table's, but in tests).
async fn authenticate_by(
    access: &Access,
    rule_of: fn(&str) -> Option<&'static Rule>,
    request: Request,
    next: Next,
) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        // A catch-all `{*key}` is `{key}` in the table, as `/openapi.json` spells it.
        Some(path) => format!("{} {}", request.method(), path.as_str().replace("{*", "{")),
        // A route layer always runs on a matched route; without one, nothing names the call.
        None => format!("{} {}", request.method(), request.uri().path()),
    };
    let rule = rule_of(&route);
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::{Router, body::Body, http::StatusCode, routing::delete};
    use tower::ServiceExt;

    use super::*;

    /// Two routes whose resource is their path, one a change that needs manage.
    static RULES: &[Rule] = &[
        Rule {
            method: "DELETE /x/{stream}",
            need: Need::OnPath(&[Permission::Manage], "{stream}"),
        },
        Rule {
            method: "GET /x/{stream}",
            need: Need::OnPath(&[Permission::Manage], "{stream}"),
        },
    ];

    fn rule_of(method: &str) -> Option<&'static Rule> {
        RULES.iter().find(|rule| rule.method == method)
    }

    /// What the log received.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_path_resource_is_checked_and_a_managed_change_audited_once_it_succeeded() {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"clients": [{{"id": "ops", "tokens": ["{}"],
                    "permissions": {{"manage": ["a-*"]}}}}]}}"#,
                jetway_core::credentials::token_hash("ops-token")
            ),
        )
        .unwrap();
        let access = Access::load(&path).unwrap();
        let router = Router::new()
            .route(
                "/x/{stream}",
                delete(|Path(stream): Path<String>| async move {
                    if stream.ends_with("missing") {
                        StatusCode::NOT_FOUND
                    } else {
                        StatusCode::NO_CONTENT
                    }
                })
                .get(|| async { StatusCode::OK }),
            )
            .route_layer(axum::middleware::from_fn(move |request, next| {
                let access = access.clone();
                async move { authenticate_by(&access, rule_of, request, next).await }
            }));
        let send = |method: &str, path: &str| {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", "Bearer ops-token")
                .body(Body::empty())
                .unwrap();
            router.clone().oneshot(request)
        };
        let audits = || {
            let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
            log.lines()
                .filter(|line| line.contains("jetway::audit"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };

        let deleted = send("DELETE", "/x/a-1").await.unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        let lines = audits();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("client=\"ops\"")
                && lines[0].contains("DELETE /x/{stream}")
                && lines[0].contains("a-1"),
            "{lines:?}"
        );

        let refused = send("DELETE", "/x/b-1").await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(refused.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("manage") && body.contains("b-1") && !body.contains("ops-token"),
            "{body}"
        );
        // Neither a failed change nor a read is audited.
        assert_eq!(
            send("DELETE", "/x/a-missing").await.unwrap().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            send("GET", "/x/a-2").await.unwrap().status(),
            StatusCode::OK
        );
        assert_eq!(audits().len(), 1, "{:?}", audits());
    }
}
