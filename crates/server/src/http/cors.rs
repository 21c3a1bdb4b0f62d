//! CORS for browser clients of the HTTP API: which web origins may call it
//! (`HTTP_CORS_ALLOWED_ORIGINS`) and how long a browser may cache a preflight answer
//! (`HTTP_CORS_MAX_AGE`). Unset, the API sends no CORS header at all, so browsers keep pages of
//! other origins from reading its answers; the layer is then not installed.
//!
//! Preflights are answered here, before routing reaches a handler: an allowed origin gets every
//! method the API has and the request headers it asked for (reflected, because the API reads open
//! families of headers, `Jetway-Header-*` and `ce-*`, that a fixed list cannot name, and because
//! `Access-Control-Allow-Headers: *` does not cover `authorization`). A preflight from another
//! origin is answered 403 in the API's error shape, so the page's developer sees why in the
//! browser's network panel. No `Access-Control-Allow-Credentials`: the API authenticates with an
//! `authorization` header the page sets itself, which needs no cookies.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::Request,
    http::{
        HeaderMap, HeaderValue, Method, StatusCode,
        header::{
            ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
            ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
        },
    },
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::http::error::ApiError;

/// The methods a preflight allows: every method a route of the API takes.
const METHODS: &str = "GET, POST, PUT, DELETE";

/// Response headers a page may read beyond the CORS-safelisted ones: a key's revision (KV).
const EXPOSED: &str = "etag";

/// What a preflight's answer varies with, besides the origin.
const PREFLIGHT_VARY: &str =
    "origin, access-control-request-method, access-control-request-headers";

/// The web origins that may call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// None: no CORS headers are sent (the default).
    #[default]
    None,
    /// Any origin (`*`): for a public, read-only deployment or development.
    Any,
    /// These origins, each `scheme://host[:port]` as a browser sends it in `Origin`.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Parses `HTTP_CORS_ALLOWED_ORIGINS`: `*`, or origins separated by commas.
    pub fn parse(value: &str) -> Result<AllowedOrigins, String> {
        if value.trim() == "*" {
            return Ok(AllowedOrigins::Any);
        }
        let mut origins = Vec::new();
        for origin in value.split(',').map(str::trim) {
            if origin == "*" {
                return Err("mixes `*` with origins; give `*` alone, or only origins".to_owned());
            }
            origins.push(parse_origin(origin)?);
        }
        Ok(AllowedOrigins::List(origins))
    }

    /// The value of `Access-Control-Allow-Origin` for a request from `origin`, if it is allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            AllowedOrigins::None => None,
            AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowedOrigins::List(origins) => {
                let origin = origin.to_str().ok()?;
                origins
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(origin))
                    .then(|| HeaderValue::from_str(origin).ok())
                    .flatten()
            }
        }
    }
}

impl std::fmt::Display for AllowedOrigins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowedOrigins::None => f.write_str("unset: no CORS headers"),
            AllowedOrigins::Any => f.write_str("*"),
            AllowedOrigins::List(origins) => f.write_str(&origins.join(",")),
        }
    }
}

/// One origin, `http(s)://host[:port]` with nothing after it, in lowercase.
fn parse_origin(origin: &str) -> Result<String, String> {
    let bad =
        |why: &str| format!("{origin:?} is not an origin like https://app.example.com: {why}");
    let (scheme, authority) = origin.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(bad("the scheme is not http or https"));
    }
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("an origin has no path, query, user or trailing slash"));
    }
    let port = match authority.rsplit_once(':') {
        // An IPv6 address without a port ends in `]`.
        Some((_, port)) if !authority.ends_with(']') => Some(port),
        _ => None,
    };
    if authority.parse::<axum::http::uri::Authority>().is_err()
        || port.is_some_and(|port| port.parse::<u16>().is_err())
    {
        return Err(bad("the host or port does not parse"));
    }
    Ok(origin.to_ascii_lowercase())
}

/// The CORS settings of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `HTTP_CORS_ALLOWED_ORIGINS`.
    pub origins: AllowedOrigins,
    /// `HTTP_CORS_MAX_AGE`: how long a browser may reuse a preflight answer.
    pub max_age: Duration,
}

impl Default for Cors {
    /// The declared defaults: no origin, and a preflight cached for `HTTP_CORS_MAX_AGE`'s default.
    fn default() -> Self {
        crate::config::Config::default().http_cors
    }
}

impl Cors {
    /// True when any origin is allowed, so the layer is needed.
    pub fn enabled(&self) -> bool {
        self.origins != AllowedOrigins::None
    }
}

/// The CORS layer's middleware: answers preflights, and marks the answers to allowed origins.
pub async fn apply(cors: Arc<Cors>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(ORIGIN).cloned() else {
        // Not a cross-origin request from a browser: nothing to add.
        return next.run(request).await;
    };
    let allowed = cors.origins.allow(&origin);
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(&cors, allowed, request.headers());
    }
    let mut response = next.run(request).await;
    if let Some(allowed) = allowed {
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }
    if matches!(cors.origins, AllowedOrigins::List(_)) {
        // The answer depends on the origin: a cache must not give one origin's to another.
        response
            .headers_mut()
            .append(VARY, HeaderValue::from_static("origin"));
    }
    response
}

/// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`).
fn preflight(cors: &Cors, allowed: Option<HeaderValue>, request: &HeaderMap) -> Response {
    let Some(allowed) = allowed else {
        let mut refused = ApiError::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "this origin may not call the API from a browser; HTTP_CORS_ALLOWED_ORIGINS lists the \
             ones that may",
        )
        .into_response();
        refused
            .headers_mut()
            .insert(VARY, HeaderValue::from_static(PREFLIGHT_VARY));
        return refused;
    };
    let mut answer = StatusCode::NO_CONTENT.into_response();
    let headers = answer.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    // The names the browser asked for, as it sent them: they already passed its own syntax check
    // and hyper's, and a name the API does not read is harmless.
    for asked in request.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.append(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(
        ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age.as_secs()),
    );
    headers.insert(VARY, HeaderValue::from_static(PREFLIGHT_VARY));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_strictly() {
        assert_eq!(AllowedOrigins::parse("*"), Ok(AllowedOrigins::Any));
        assert_eq!(
            AllowedOrigins::parse("https://App.example.com, http://localhost:3000"),
            Ok(AllowedOrigins::List(vec![
                "https://app.example.com".to_owned(),
                "http://localhost:3000".to_owned()
            ]))
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/x",
            "ftp://app.example.com",
            "https://",
            "https://a.example, *",
            "https://user@a.example",
            "https://a.example:port",
        ] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
        }
        for good in ["http://[::1]:8080", "http://[::1]", "http://127.0.0.1:3000"] {
            assert!(AllowedOrigins::parse(good).is_ok(), "{good}");
        }
        assert!(AllowedOrigins::parse("http://[::1]:x").is_err());
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let list = AllowedOrigins::parse("https://a.example").unwrap();
        let allow = |origin: &'static str| list.allow(&HeaderValue::from_static(origin));
        assert_eq!(
            allow("https://A.example"),
            Some(HeaderValue::from_static("https://A.example"))
        );
        assert_eq!(allow("https://b.example"), None);
        assert_eq!(allow("null"), None);
        assert_eq!(
            AllowedOrigins::Any.allow(&HeaderValue::from_static("null")),
            Some(HeaderValue::from_static("*"))
        );
        assert_eq!(
            AllowedOrigins::None.allow(&HeaderValue::from_static("https://a.example")),
            None
        );
    }
}
