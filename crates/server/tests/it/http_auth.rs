//! The HTTP API under `AUTH_FILE`, with the clients and the permission table gRPC uses: every
//! route with no, wrong, insufficient and sufficient credentials; two tenants isolated by their
//! prefixes; the per-client publish rate; HTTPS and mTLS on the API port.

use std::{net::SocketAddr, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use futures::StreamExt;
use hyper::StatusCode;
use jetway_api::{
    jetway::events::v1::{
        EnsureConsumerRequest, events_service_client::EventsServiceClient as JwEvents,
    },
    windshift::{
        events::v1alpha1::events_service_client::EventsServiceClient as WsEvents,
        state::v1alpha1::{self as wss, state_service_client::StateServiceClient as WsState},
    },
};
use jetway_client::dev_certs::CertAndKey;
use jetway_core::credentials::{secret_hash, token_hash};
use jetway_server::{
    app::Security,
    auth::{
        Access,
        rpcs::{self, Need},
    },
    infra::tls::PLAINTEXT_ON_TLS_PORT,
    testing::TestServer,
};
use jetway_testkit::NatsServer;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    },
};

use crate::{
    auth::{ALL, Auth, NONE, TENANT_A, TENANT_B, secured},
    clients::consumer,
    harness::{publish_request, stream_request, with_clients_file},
    http::{Reply, SseReader, call, open},
    tls::Files,
};

/// A route's key in the table, then the method, path, headers and body of a request to it.
type Route = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

/// One request of each route.
/// Stream `s-x` captures `s.>`, event 1 exists, consumer `c` works it; streams `s-x-dead` and
/// `s-x-gone` exist, and `req.s.x` is answered; store `s-x` has key `a/b.c`.
fn routes() -> Vec<Route> {
    vec![
        (
            "POST /v1/publish/{subject}",
            "POST",
            "/v1/publish/s.x",
            vec![("content-type", "text/plain")],
            "v",
        ),
        (
            "POST /v1/publish",
            "POST",
            "/v1/publish",
            vec![("content-type", "application/json")],
            r#"[{"subject": "s.x", "data": 1}]"#,
        ),
        (
            "GET /v1/streams/{stream}/events",
            "GET",
            "/v1/streams/s-x/events",
            vec![],
            "",
        ),
        (
            "GET /v1/streams/{stream}/events/{id}",
            "GET",
            "/v1/streams/s-x/events/1",
            vec![],
            "",
        ),
        (
            "GET /v1/subscribe/{subject}",
            "GET",
            "/v1/subscribe/s.%3E",
            vec![],
            "",
        ),
        (
            "PUT /v1/stores/{store}",
            "PUT",
            "/v1/stores/s-x",
            vec![("content-type", "application/json")],
            "{}",
        ),
        (
            "PUT /v1/stores/{store}/keys/{key}",
            "PUT",
            "/v1/stores/s-x/keys/k/1",
            vec![("content-type", "text/plain")],
            "v",
        ),
        (
            "GET /v1/stores/{store}/keys/{key}",
            "GET",
            "/v1/stores/s-x/keys/k/1",
            vec![],
            "",
        ),
        (
            "GET /v1/stores/{store}/keys",
            "GET",
            "/v1/stores/s-x/keys",
            vec![],
            "",
        ),
        (
            "GET /v1/stores/{store}/watch",
            "GET",
            "/v1/stores/s-x/watch",
            vec![],
            "",
        ),
        (
            "DELETE /v1/stores/{store}/keys/{key}",
            "DELETE",
            "/v1/stores/s-x/keys/k/1",
            vec![],
            "",
        ),
        ("GET /v1/streams", "GET", "/v1/streams", vec![], ""),
        (
            "GET /v1/streams/{stream}",
            "GET",
            "/v1/streams/s-x",
            vec![],
            "",
        ),
        (
            "PUT /v1/streams/{stream}",
            "PUT",
            "/v1/streams/s-x",
            vec![("content-type", "application/json")],
            r#"{"subjects": ["s.>"]}"#,
        ),
        (
            "PUT /v1/streams/{stream}/consumers/{consumer}",
            "PUT",
            "/v1/streams/s-x/consumers/c-x",
            vec![("content-type", "application/json")],
            r#"{"subjects": ["s.>"]}"#,
        ),
        (
            "POST /v1/streams/{stream}/purge",
            "POST",
            "/v1/streams/s-x/purge",
            vec![("content-type", "application/json")],
            r#"{"subject": "s.none"}"#,
        ),
        (
            "GET /v1/streams/{stream}/consumers",
            "GET",
            "/v1/streams/s-x/consumers",
            vec![],
            "",
        ),
        (
            "GET /v1/streams/{stream}/consumers/{consumer}",
            "GET",
            "/v1/streams/s-x/consumers/c",
            vec![],
            "",
        ),
        (
            "POST /v1/streams/{stream}/consumers/{consumer}/fetch",
            "POST",
            "/v1/streams/s-x/consumers/c/fetch?max_events=1",
            vec![],
            "",
        ),
        (
            "POST /v1/streams/{stream}/consumers/{consumer}/extend",
            "POST",
            "/v1/streams/s-x/consumers/c/extend",
            vec![("content-type", "application/json")],
            r#"{"ids": [1]}"#,
        ),
        (
            "POST /v1/streams/{stream}/consumers/{consumer}/reject",
            "POST",
            "/v1/streams/s-x/consumers/c/reject",
            vec![("content-type", "application/json")],
            r#"{"ids": [1]}"#,
        ),
        (
            "POST /v1/streams/{stream}/consumers/{consumer}/ack",
            "POST",
            "/v1/streams/s-x/consumers/c/ack",
            vec![("content-type", "application/json")],
            r#"{"ids": [1]}"#,
        ),
        (
            "DELETE /v1/streams/{stream}/consumers/{consumer}",
            "DELETE",
            "/v1/streams/s-x/consumers/c",
            vec![],
            "",
        ),
        (
            "GET /v1/dead-letters/{dead_letter_stream}",
            "GET",
            "/v1/dead-letters/s-x-dead",
            vec![],
            "",
        ),
        (
            "POST /v1/dead-letters/{dead_letter_stream}/redrive",
            "POST",
            "/v1/dead-letters/s-x-dead/redrive",
            vec![("content-type", "application/json")],
            r#"{"ids": [1]}"#,
        ),
        (
            "DELETE /v1/streams/{stream}",
            "DELETE",
            "/v1/streams/s-x-gone",
            vec![],
            "",
        ),
        (
            "POST /v1/request/{subject}",
            "POST",
            "/v1/request/req.s.x",
            vec![("content-type", "text/plain")],
            "v",
        ),
        (
            "GET /v1/stores/{store}/history/{key}",
            "GET",
            "/v1/stores/s-x/history/a/b.c",
            vec![],
            "",
        ),
        ("GET /openapi.json", "GET", "/openapi.json", vec![], ""),
    ]
}

/// Answers every request on `subject` with `ok`, straight over NATS, until the test ends.
async fn responder(nats_url: &str, subject: &'static str) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let mut requests = client.subscribe(subject).await.unwrap();
    client.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                client.publish(reply, "ok".into()).await.unwrap();
            }
        }
    });
}

/// The status of one request, and the body of an error (a live stream's body is never read).
async fn status_of(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (StatusCode, Option<Reply>) {
    let response = open(
        addr,
        method,
        path,
        headers,
        Bytes::from_static(body.as_bytes()),
    )
    .await;
    let status = response.status();
    if status.is_success() {
        return (status, None);
    }
    (
        status,
        Some(
            call(
                addr,
                method,
                path,
                headers,
                Bytes::from_static(body.as_bytes()),
            )
            .await,
        ),
    )
}

/// `headers` and, if set, `authorization`.
fn with_authorization<'a>(
    headers: &[(&'a str, &'a str)],
    authorization: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut headers = headers.to_vec();
    headers.extend(authorization.map(|value| ("authorization", value)));
    headers
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// Every route: no credentials and wrong ones (bearer, Basic) → 401 with `WWW-Authenticate` and
/// UNAUTHENTICATED; a client without the permission → 403 PERMISSION_DENIED naming it; a client
/// with it → neither. `/openapi.json` answers everyone. A route the table has must have a case
/// here, and a case a route in the table.
#[tokio::test]
async fn every_http_route_refuses_who_may_not_call_it() {
    let env = secured().await;
    WsEvents::with_interceptor(env.jetway.channel().await, Auth::bearer(ALL))
        .ensure_stream(stream_request("s-x", &["s.>"]))
        .await
        .unwrap();
    WsEvents::with_interceptor(env.jetway.channel().await, Auth::bearer(ALL))
        .publish_event(publish_request("s.x", "v"))
        .await
        .unwrap();
    WsEvents::with_interceptor(env.jetway.channel().await, Auth::bearer(ALL))
        .ensure_stream(stream_request("s-x-gone", &["gone.>"]))
        .await
        .unwrap();
    JwEvents::with_interceptor(env.jetway.channel().await, Auth::bearer(ALL))
        .ensure_consumer(EnsureConsumerRequest {
            max_deliveries: Some(3),
            dead_letter_stream: Some("s-x-dead".into()),
            ..consumer("s-x", "c", &["s.>"])
        })
        .await
        .unwrap();
    responder(&env.nats.url(), "req.s.x").await;
    let mut store = WsState::with_interceptor(env.jetway.channel().await, Auth::bearer(ALL));
    store
        .ensure_store(wss::EnsureStoreRequest {
            store: "s-x".into(),
        })
        .await
        .unwrap();
    store
        .set(crate::state::set_request("s-x", "a/b.c", "v"))
        .await
        .unwrap();
    let addr = env.jetway.http_addr();
    let cases: Vec<&str> = routes().iter().map(|(key, ..)| *key).collect();
    let table: Vec<&str> = rpcs::RULES
        .iter()
        .map(|rule| rule.method)
        .filter(|method| !method.starts_with('/'))
        .collect();
    assert_eq!(cases.len(), table.len(), "{cases:?} vs {table:?}");
    let (all, none) = (format!("Bearer {ALL}"), format!("Bearer {NONE}"));
    for (key, method, path, headers, body) in routes() {
        let rule = rpcs::rule_of(key).unwrap_or_else(|| panic!("{key} has no entry"));
        let with = |authorization| with_authorization(&headers, authorization);
        let (status, _) = status_of(addr, method, path, &with(Some(&all)), body).await;
        assert!(
            ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
            "{key} with every permission: {status}"
        );
        assert!(status.is_success(), "{key} with every permission: {status}");
        let wrong = basic("all", "not-its-secret");
        for authorization in [None, Some("Bearer not-a-token"), Some(wrong.as_str())] {
            let (status, reply) = status_of(addr, method, path, &with(authorization), body).await;
            if rule.need == Need::Open {
                assert!(status.is_success(), "{key} is open: {status}");
                continue;
            }
            let reply = reply.unwrap();
            let message = reply.assert_error(401, "UNAUTHENTICATED", None);
            let challenges: Vec<_> = reply.headers.get_all("www-authenticate").iter().collect();
            assert!(
                challenges
                    .iter()
                    .any(|c| c.to_str().unwrap().starts_with("Bearer"))
                    && challenges
                        .iter()
                        .any(|c| c.to_str().unwrap().starts_with("Basic")),
                "{key}: {challenges:?}"
            );
            assert!(!message.contains("not-a-token"), "{message}");
        }
        if key == "GET /v1/streams" {
            // A list: a client that may see no stream sees an empty one.
            let reply = call(addr, method, path, &with(Some(&none)), body).await;
            assert_eq!(reply.status, StatusCode::OK, "{key}");
            assert_eq!(reply.json()["streams"], json!([]), "{key}");
            continue;
        }
        let (status, reply) = status_of(addr, method, path, &with(Some(&none)), body).await;
        if rule.need == Need::Open {
            assert!(status.is_success(), "{key} is open: {status}");
            continue;
        }
        let message = reply.unwrap().assert_error(403, "PERMISSION_DENIED", None);
        let (Need::Permissions(permissions, _) | Need::OnPath(permissions, _)) = rule.need else {
            panic!("{key}: {:?}", rule.need);
        };
        assert!(
            message.contains("\"none\"") && message.contains(permissions[0].name()),
            "{key}: {message}"
        );
        assert!(
            message.contains("s-x") || message.contains("s.x"),
            "{key} names the resource: {message}"
        );
        assert!(!message.contains(NONE), "{message}");
    }
    // HEAD is the GET without its body, and needs what the GET needs.
    for (authorization, expected) in [
        (Some(all.as_str()), StatusCode::OK),
        (Some(none.as_str()), StatusCode::FORBIDDEN),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let headers = with_authorization(&[], authorization);
        let head = open(addr, "HEAD", "/v1/streams/s-x", &headers, Bytes::new()).await;
        assert_eq!(head.status(), expected, "HEAD with {authorization:?}");
    }
}

/// Two tenants share the server: over HTTP, tenant a publishes, reads and follows only under its
/// own prefixes (`a.>`, `a-*`); b's stream is neither read nor followed, by name or by subject,
/// and a batch with one of b's subjects publishes nothing.
#[tokio::test]
async fn tenants_are_isolated_over_http() {
    let env = secured().await;
    let channel = env.jetway.channel().await;
    WsEvents::with_interceptor(channel.clone(), Auth::bearer(TENANT_A))
        .ensure_stream(stream_request("a-orders", &["a.orders.>"]))
        .await
        .unwrap();
    WsEvents::with_interceptor(channel.clone(), Auth::bearer(TENANT_B))
        .ensure_stream(stream_request("b-orders", &["b.orders.>"]))
        .await
        .unwrap();
    let addr = env.jetway.http_addr();
    let (a, b) = (format!("Bearer {TENANT_A}"), format!("Bearer {TENANT_B}"));
    let as_client = |token: &str| {
        vec![
            ("authorization", token.to_owned()),
            ("content-type", "application/json".to_owned()),
        ]
    };
    let request = |who: &str, method: &'static str, path: String, body: &'static str| {
        let headers = as_client(who);
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(
                addr,
                method,
                &path,
                &headers,
                Bytes::from_static(body.as_bytes()),
            )
            .await
        }
    };

    let published = request(&b, "POST", "/v1/publish/b.orders.1".into(), r#"{"n":1}"#).await;
    assert_eq!(
        published.status,
        StatusCode::CREATED,
        "{:?}",
        published.body
    );
    let own = request(&a, "POST", "/v1/publish/a.orders.1".into(), r#"{"n":1}"#).await;
    assert_eq!(own.status, StatusCode::CREATED, "{:?}", own.body);
    let read = request(&a, "GET", "/v1/streams/a-orders/events".into(), "").await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(read.json().as_array().unwrap().len(), 1);

    for (method, path, body, permission) in [
        ("GET", "/v1/streams/b-orders/events", "", "read"),
        ("GET", "/v1/streams/b-orders/events/1", "", "read"),
        ("POST", "/v1/publish/b.orders.2", "{}", "publish"),
        (
            "GET",
            "/v1/subscribe/b.orders.%3E?stream=b-orders",
            "",
            "consume",
        ),
        // The stream that captures the subject is b's.
        ("GET", "/v1/subscribe/b.orders.%3E", "", "consume"),
    ] {
        let reply = request(&a, method, path.into(), body).await;
        let message = reply.assert_error(403, "PERMISSION_DENIED", None);
        assert!(
            message.contains(permission) && message.contains("\"a\""),
            "{path}: {message}"
        );
    }
    let batch = r#"[{"subject": "a.orders.2", "data": 2}, {"subject": "b.orders.2", "data": 2}]"#;
    let reply = request(&a, "POST", "/v1/publish".into(), batch).await;
    let message = reply.assert_error(403, "PERMISSION_DENIED", None);
    assert!(message.contains("b.orders.2"), "{message}");
    let read = request(&a, "GET", "/v1/streams/a-orders/events".into(), "").await;
    assert_eq!(
        read.json().as_array().unwrap().len(),
        1,
        "nothing of the refused batch is published"
    );
}

/// Over `publish_per_second`, an HTTP publish answers 429 RESOURCE_EXHAUSTED naming the limit, as
/// gRPC's PublishEvent does; Basic authentication (client id and secret) works over HTTP.
#[tokio::test]
async fn the_publish_rate_of_a_client_holds_over_http() {
    const SECRET: &str = "the-secret-of-small";
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let text = json!({"clients": [{
        "id": "small", "tokens": [token_hash(ALL)], "secret": secret_hash(SECRET).unwrap(),
        "permissions": {"publish": [">"], "manage": [">"]},
        "limits": {"publish_per_second": 1, "publish_burst": 3}}]});
    std::fs::write(&path, text.to_string()).unwrap();
    let jetway = with_clients_file(&nats, &path).await;
    let mut grpc = WsEvents::with_interceptor(jetway.channel().await, Auth::bearer(ALL));
    grpc.ensure_stream(stream_request("orders", &["orders.>"]))
        .await
        .unwrap();
    grpc.publish_event(publish_request("orders.created", "v"))
        .await
        .unwrap();
    let basic = basic("small", SECRET);
    let headers = [
        ("authorization", basic.as_str()),
        ("content-type", "text/plain"),
    ];
    // The burst (3, one spent over gRPC) goes first; one more comes back each second, so the
    // refusal comes within a few requests however slow they are.
    let mut answers = Vec::new();
    let over = loop {
        let reply = call(
            jetway.http_addr(),
            "POST",
            "/v1/publish/orders.created",
            &headers,
            "v",
        )
        .await;
        if reply.status != StatusCode::CREATED {
            break reply;
        }
        answers.push(reply.status);
        assert!(answers.len() < 100, "never over the rate");
    };
    let message = over.assert_error(429, "RESOURCE_EXHAUSTED", None);
    assert!(message.contains("publish_per_second"), "{message}");
    assert!(message.contains("\"small\""), "{message}");
    // A batch larger than the burst is refused whole, whatever has come back meanwhile.
    let items: Vec<_> = (0..5)
        .map(|n| json!({"subject": "orders.created", "data": n}))
        .collect();
    let batch = call(
        jetway.http_addr(),
        "POST",
        "/v1/publish",
        &[
            ("authorization", basic.as_str()),
            ("content-type", "application/json"),
        ],
        serde_json::to_string(&items).unwrap(),
    )
    .await;
    let message = batch.assert_error(429, "RESOURCE_EXHAUSTED", None);
    assert!(message.contains("publish_per_second"), "{message}");
}

/// Sends `request` (a whole HTTP/1.1 request) over TLS to `addr`, trusting `ca`, presenting
/// `identity` if any; the answer, or the I/O error of the handshake or the exchange.
async fn https(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&CertAndKey>,
    request: &str,
) -> std::io::Result<String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => config.with_no_client_auth(),
        Some(pair) => config
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    tls.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

fn get_request(path: &str, authorization: Option<&str>) -> String {
    let authorization = authorization
        .map(|value| format!("authorization: {value}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{authorization}connection: close\r\n\r\n")
}

/// The API port speaks HTTPS with the development certificates and tells a plain-text client
/// why not; with TLS_CLIENT_CA_FILE it requires a client certificate, as the gRPC port does, and
/// a certificate named in the clients file identifies its client without a header.
#[tokio::test]
async fn the_api_port_speaks_https_and_mtls() {
    let files = Files::new();
    let server = TestServer::builder()
        .tls(files.server_tls(false), files.client())
        .start()
        .await;
    let answer = https(
        server.http_addr(),
        files.ca.cert_pem(),
        None,
        &get_request("/openapi.json", None),
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"openapi\""), "{answer}");
    let mut plain = TcpStream::connect(server.http_addr()).await.unwrap();
    plain
        .write_all(get_request("/openapi.json", None).as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(PLAINTEXT_ON_TLS_PORT), "{answer}");
    drop(server);

    let alice = files.ca.client("alice").unwrap();
    let clients = files.path("clients.json");
    std::fs::write(
        &clients,
        json!({"clients": [
            {"id": "alice", "certificate_names": ["alice"], "permissions": {"read": ["alice-*"]}},
            {"id": "ops", "tokens": [token_hash(ALL)], "permissions": {"read": [">"]}}]})
        .to_string(),
    )
    .unwrap();
    let server = TestServer::builder()
        .tls(
            files.server_tls(true),
            files.client().identity(crate::tls::identity(&alice)),
        )
        .security(Security {
            access: Access::load(&clients).unwrap(),
            reflection: true,
        })
        .start()
        .await;
    let addr = server.http_addr();
    let ca = files.ca.cert_pem();
    let no_certificate = https(addr, ca, None, &get_request("/openapi.json", None)).await;
    assert!(
        no_certificate.is_err(),
        "no client certificate: {no_certificate:?}"
    );
    // Alice's certificate names her: her own streams (none exists: 404), not another's (403).
    let own = https(
        addr,
        ca,
        Some(&alice),
        &get_request("/v1/streams/alice-x/events", None),
    )
    .await
    .unwrap();
    assert!(own.starts_with("HTTP/1.1 404"), "{own}");
    let other = https(
        addr,
        ca,
        Some(&alice),
        &get_request("/v1/streams/bob-x/events", None),
    )
    .await
    .unwrap();
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");
    assert!(other.contains("\\\"alice\\\""), "{other}");
    // A header wins over the certificate.
    let bearer = format!("Bearer {ALL}");
    let ops = https(
        addr,
        ca,
        Some(&alice),
        &get_request("/v1/streams/bob-x/events", Some(&bearer)),
    )
    .await
    .unwrap();
    assert!(ops.starts_with("HTTP/1.1 404"), "{ops}");
    // A certificate of the CA that no client names is not a client.
    let mallory = files.ca.client("mallory").unwrap();
    let stranger = https(
        addr,
        ca,
        Some(&mallory),
        &get_request("/v1/streams/alice-x/events", None),
    )
    .await
    .unwrap();
    assert!(stranger.starts_with("HTTP/1.1 401"), "{stranger}");
}

/// Lists show a client only what it may see, as gRPC's do: tenant a lists its streams, not b's;
/// a client that may consume only some of a stream's consumers lists only those.
#[tokio::test]
async fn http_lists_leave_out_what_the_client_may_not_see() {
    let env = secured().await;
    let channel = env.jetway.channel().await;
    WsEvents::with_interceptor(channel.clone(), Auth::bearer(TENANT_A))
        .ensure_stream(stream_request("a-orders", &["a.orders.>"]))
        .await
        .unwrap();
    WsEvents::with_interceptor(channel.clone(), Auth::bearer(TENANT_B))
        .ensure_stream(stream_request("b-orders", &["b.orders.>"]))
        .await
        .unwrap();
    let addr = env.jetway.http_addr();
    let names = |reply: Reply, list: &str| -> Vec<String> {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.json()[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (a, all) = (format!("Bearer {TENANT_A}"), format!("Bearer {ALL}"));
    let listed = call(addr, "GET", "/v1/streams", &[("authorization", &a)], "").await;
    assert_eq!(names(listed, "streams"), ["a-orders"]);
    let listed = call(addr, "GET", "/v1/streams", &[("authorization", &all)], "").await;
    let mut every = names(listed, "streams");
    every.sort();
    assert_eq!(every, ["a-orders", "b-orders"]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let text = json!({"clients": [
        {"id": "all", "tokens": [token_hash(ALL)],
         "permissions": {"publish": [">"], "manage": [">"], "consume": [">"]}},
        {"id": "w", "tokens": [token_hash(TENANT_A)],
         "permissions": {"consume": ["shared/w-*"]}}]});
    std::fs::write(&path, text.to_string()).unwrap();
    let nats = NatsServer::start();
    let jetway = with_clients_file(&nats, &path).await;
    let channel = jetway.channel().await;
    WsEvents::with_interceptor(channel.clone(), Auth::bearer(ALL))
        .ensure_stream(stream_request("shared", &["shared.>"]))
        .await
        .unwrap();
    for name in ["w-1", "x-1"] {
        JwEvents::with_interceptor(channel.clone(), Auth::bearer(ALL))
            .ensure_consumer(consumer("shared", name, &["shared.>"]))
            .await
            .unwrap();
    }
    let addr = jetway.http_addr();
    let path = "/v1/streams/shared/consumers";
    let listed = call(addr, "GET", path, &[("authorization", &a)], "").await;
    assert_eq!(names(listed, "consumers"), ["w-1"]);
    let listed = call(addr, "GET", path, &[("authorization", &all)], "").await;
    let mut every = names(listed, "consumers");
    every.sort();
    assert_eq!(every, ["w-1", "x-1"]);
}

/// Over `fetched_in_flight`, an HTTP fetch answers 429 RESOURCE_EXHAUSTED naming the limit and
/// the client, as gRPC's Fetch does: the events the client fetched over HTTP count.
#[tokio::test]
async fn the_fetch_limit_of_a_client_holds_over_http() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let text = json!({"clients": [{
        "id": "small", "tokens": [token_hash(ALL)],
        "permissions": {"publish": [">"], "consume": [">"], "manage": [">"]},
        "limits": {"fetched_in_flight": 1}}]});
    std::fs::write(&path, text.to_string()).unwrap();
    let jetway = with_clients_file(&nats, &path).await;
    let channel = jetway.channel().await;
    WsEvents::with_interceptor(channel.clone(), Auth::bearer(ALL))
        .ensure_stream(stream_request("orders", &["orders.>"]))
        .await
        .unwrap();
    let mut grpc = JwEvents::with_interceptor(channel, Auth::bearer(ALL));
    grpc.ensure_consumer(consumer("orders", "worker", &["orders.>"]))
        .await
        .unwrap();
    let bearer = format!("Bearer {ALL}");
    let headers = [("authorization", bearer.as_str())];
    for n in 0..2 {
        WsEvents::with_interceptor(jetway.channel().await, Auth::bearer(ALL))
            .publish_event(publish_request("orders.created", &n.to_string()))
            .await
            .unwrap();
    }
    let fetch = "/v1/streams/orders/consumers/worker/fetch?max_events=1";
    let first = call(jetway.http_addr(), "POST", fetch, &headers, "").await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.json()["events"].as_array().unwrap().len(), 1);
    let over = call(jetway.http_addr(), "POST", fetch, &headers, "").await;
    let message = over.assert_error(429, "RESOURCE_EXHAUSTED", None);
    assert!(message.contains("fetched_in_flight"), "{message}");
    assert!(message.contains("\"small\""), "{message}");
}

/// A reloaded clients file ends the SSE streams it takes away, with a last `failure` event: a
/// client that lost its consume permission gets PERMISSION_DENIED, one whose secret changed
/// UNAUTHENTICATED.
#[tokio::test]
async fn a_reloaded_clients_file_ends_the_sse_streams_it_takes_away() {
    const SECRET: &str = "the-secret-of-the-follower";
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let file = |consume: &[&str], secret: &str| {
        json!({"clients": [
            {"id": "admin", "tokens": [token_hash(ALL)],
             "permissions": {"manage": [">"], "publish": [">"]}},
            {"id": "worker", "tokens": [token_hash(TENANT_A)],
             "permissions": {"consume": consume}},
            {"id": "follower", "secret": secret_hash(secret).unwrap(),
             "permissions": {"consume": ["a-*"]}}]})
        .to_string()
    };
    std::fs::write(&path, file(&["a-*"], SECRET)).unwrap();
    let jetway = with_clients_file(&nats, &path).await;
    WsEvents::with_interceptor(jetway.channel().await, Auth::bearer(ALL))
        .ensure_stream(stream_request("a-orders", &["a.>"]))
        .await
        .unwrap();
    let addr = jetway.http_addr();
    let (worker, follower) = (format!("Bearer {TENANT_A}"), basic("follower", SECRET));
    let follow = "/v1/subscribe/a.%3E?stream=a-orders";
    let mut by_worker = SseReader::open(addr, follow, &[("authorization", &worker)]).await;
    let mut by_follower = SseReader::open(addr, follow, &[("authorization", &follower)]).await;

    std::fs::write(&path, file(&["b-*", "c-*"], "a-changed-secret")).unwrap();
    for (reader, code) in [
        (&mut by_worker, "PERMISSION_DENIED"),
        (&mut by_follower, "UNAUTHENTICATED"),
    ] {
        let last = reader.next().await.expect("a failure event");
        assert_eq!(last.event.as_deref(), Some("failure"), "{last:?}");
        assert_eq!(last.data["error"]["code"], code, "{last:?}");
        assert!(reader.next().await.is_none(), "the stream ends after it");
    }
}
