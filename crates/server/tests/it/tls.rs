//! TLS on both ports (`TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CLIENT_CA_FILE`): handshakes with
//! development certificates from the SDK, mTLS and the client certificate a handler sees, refused
//! client certificates, a plain-text client on a TLS port, rotation without a restart, and the
//! start refused for a bad certificate.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{
    Client, StreamOptions,
    dev_certs::{CertAndKey, DevCa},
    tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use jetway_server::{
    config::Limits,
    infra::{
        tls::{PLAINTEXT_ON_TLS_PORT, ServerTls},
        transport::{CallLayer, Gate, grpc_incoming},
    },
    testing::TestServer,
};
use jetway_testkit::eventually;
use time::{Duration as Span, OffsetDateTime};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};
use tonic::{Code, Request, Status};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::harness::jetway_server;

/// A CA and its files written in a temporary directory, as an operator would mount them.
pub(crate) struct Files {
    dir: tempfile::TempDir,
    pub(crate) ca: DevCa,
}

impl Files {
    pub(crate) fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
            ca: DevCa::new().unwrap(),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `pair` as `<name>.pem` and `<name>-key.pem`; returns both paths.
    pub(crate) fn write(&self, name: &str, pair: &CertAndKey) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}-key.pem")),
        );
        std::fs::write(&cert, &pair.cert_pem).unwrap();
        std::fs::write(&key, &pair.key_pem).unwrap();
        (cert, key)
    }

    /// The CA's certificate as a file.
    pub(crate) fn ca_file(&self) -> PathBuf {
        let path = self.path("ca.pem");
        std::fs::write(&path, self.ca.cert_pem()).unwrap();
        path
    }

    /// The server's TLS from a fresh server certificate; with `mtls`, client certificates of this
    /// CA are required.
    pub(crate) fn server_tls(&self, mtls: bool) -> ServerTls {
        let (cert, key) = self.write("server", &self.ca.server().unwrap());
        let ca = mtls.then(|| self.ca_file());
        ServerTls::load(&cert, &key, ca.as_deref()).unwrap()
    }

    /// A client configuration that trusts this CA.
    pub(crate) fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
    }
}

pub(crate) fn identity(pair: &CertAndKey) -> Identity {
    Identity::from_pem(&pair.cert_pem, &pair.key_pem)
}

async fn health_check(channel: Channel) -> Result<(), Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
}

/// A channel to `addr` over TLS with `tls`, connected on its first call.
fn tls_channel(addr: SocketAddr, tls: ClientTlsConfig) -> Channel {
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

/// A channel to `addr` over TLS with `tls`, or the error of its first call.
async fn call_with(addr: SocketAddr, tls: ClientTlsConfig) -> Result<(), Status> {
    health_check(tls_channel(addr, tls)).await
}

/// A server that requires a client certificate of the development CA and knows its clients from
/// the file at `clients`; the harness itself calls it with `pair`'s certificate.
async fn with_certificate_clients(files: &Files, clients: &Path, pair: &CertAndKey) -> TestServer {
    use jetway_server::{app::Security, auth::Access};

    TestServer::builder()
        .tls(
            files.server_tls(true),
            files.client().identity(identity(pair)),
        )
        .security(Security {
            access: Access::load(clients).unwrap(),
            reflection: true,
        })
        .start()
        .await
}

#[tokio::test]
async fn the_sdk_publishes_over_tls_and_a_plain_text_client_is_told_why_it_fails() {
    let files = Files::new();
    let server = TestServer::builder()
        .tls(files.server_tls(false), files.client())
        .start()
        .await;
    assert!(server.url().starts_with("https://"));

    let client = Client::builder()
        .tls(files.client())
        .connect(server.url())
        .await
        .unwrap();
    client
        .streams()
        .ensure(&StreamOptions::new("tls").subjects(["tls.>"]))
        .await
        .unwrap();
    client
        .publish(
            "tls.hello",
            &StringValue {
                value: "over TLS".into(),
            },
        )
        .await
        .unwrap();

    // A client that does not trust the CA refuses the server.
    let untrusting = call_with(server.grpc_addr(), Files::new().client()).await;
    assert_eq!(untrusting.unwrap_err().code(), Code::Unavailable);

    // A plain-text gRPC client gets a status that says what to do.
    let plain = Channel::from_shared(format!("http://{}", server.grpc_addr()))
        .unwrap()
        .connect_lazy();
    let status = health_check(plain).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), PLAINTEXT_ON_TLS_PORT);
}

#[tokio::test]
async fn the_health_port_speaks_https_and_tells_a_plain_text_client_why_not() {
    let files = Files::new();
    let server = TestServer::builder()
        .tls(
            files.server_tls(true),
            files
                .client()
                .identity(identity(&files.ca.client("probe").unwrap())),
        )
        .start()
        .await;

    // No client certificate needed on the health port, even with mTLS on the gRPC port.
    let (_, answer) = https_get(server.health_addr(), &[files.ca.cert_pem()], "/readyz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"status":"up"}"#), "{answer}");

    let mut plain = TcpStream::connect(server.health_addr()).await.unwrap();
    plain
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(PLAINTEXT_ON_TLS_PORT), "{answer}");
}

#[tokio::test]
async fn mtls_requires_a_current_client_certificate_of_the_trusted_ca() {
    let files = Files::new();
    let alice = files.ca.client("alice").unwrap();
    let server = TestServer::builder()
        .tls(
            files.server_tls(true),
            files.client().identity(identity(&alice)),
        )
        .start()
        .await;
    let addr = server.grpc_addr();

    call_with(addr, files.client().identity(identity(&alice)))
        .await
        .expect("a client certificate of the CA is accepted");

    let refused = [
        (
            "no client certificate",
            files.client(),
            "CertificateRequired",
        ),
        (
            "a certificate of another CA",
            files.client().identity(identity(
                &DevCa::named("Another CA")
                    .unwrap()
                    .client("mallory")
                    .unwrap(),
            )),
            "UnknownCA",
        ),
        (
            "an expired certificate",
            files.client().identity(identity(
                &files
                    .ca
                    .client_between(
                        "late",
                        OffsetDateTime::now_utc() - Span::days(30),
                        OffsetDateTime::now_utc() - Span::days(1),
                    )
                    .unwrap(),
            )),
            "CertificateExpired",
        ),
    ];
    for (what, tls, alert) in refused {
        let status = call_with(addr, tls).await.expect_err(what);
        // With TLS 1.3 the server's verdict arrives after the client's side of the handshake, on
        // the first call: as the server's alert, or, when the client's write meets the closed
        // connection first, as that.
        let error = format!("{status:?}");
        assert!(
            error.contains(&format!("received fatal alert: {alert}"))
                || (!error.contains("alert") && error.contains("connection")),
            "{what}: {error}"
        );
    }
    // The server still serves the good client.
    call_with(addr, files.client().identity(identity(&alice)))
        .await
        .unwrap();
}

/// What the authentication layer relies on: a call on an mTLS connection carries the client's
/// certificate where tonic's `Request::peer_certs` finds it, and its address for
/// `Request::remote_addr`, through Jetway's own connection handling.
#[tokio::test]
async fn a_handler_sees_the_client_certificate_and_address() {
    let files = Files::new();
    let tls = files.server_tls(true);
    // Each call's leaf client certificate (DER) and peer address.
    type Seen = Vec<(Option<Vec<u8>>, Option<SocketAddr>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = {
        let seen = seen.clone();
        move |request: Request<()>| {
            let leaf = request
                .peer_certs()
                .and_then(|certs| certs.first().map(|cert| cert.to_vec()));
            seen.lock().unwrap().push((leaf, request.remote_addr()));
            Ok(request)
        }
    };
    let (_, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = grpc_incoming(
        Gate::new(listener, 8, "GRPC_MAX_CONNECTIONS", "grpc"),
        Duration::from_secs(60),
        Some(tls),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(CallLayer::new(HashSet::new(), &Limits::default()))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                health, record,
            ))
            .serve_with_incoming(incoming),
    );

    let alice = files.ca.client("alice").unwrap();
    call_with(addr, files.client().identity(identity(&alice)))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let expected = CertificateDer::from_pem_slice(alice.cert_pem.as_bytes()).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.as_deref(), Some(expected.as_ref()));
    assert!(
        seen[0].1.is_some_and(|peer| peer.ip().is_loopback()),
        "{:?}",
        seen[0].1
    );
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_and_open_ones_stay() {
    let files = Files::new();
    let (cert, key) = files.write("server", &files.ca.server().unwrap());
    let tls = ServerTls::load(&cert, &key, None).unwrap();
    let server = TestServer::builder().tls(tls, files.client()).start().await;
    // Trusts the first CA only: if its connection were dropped, it could not connect again.
    let open = server.channel().await;
    health_check(open.clone()).await.unwrap();

    let next_ca = DevCa::new().unwrap();
    let next = next_ca.server().unwrap();
    let next_der = CertificateDer::from_pem_slice(next.cert_pem.as_bytes()).unwrap();
    // The key first: a moment with the new key and the old certificate is refused, logged, and
    // retried once the certificate changes too.
    std::fs::write(&key, &next.key_pem).unwrap();
    std::fs::write(&cert, &next.cert_pem).unwrap();
    let roots = [files.ca.cert_pem(), next_ca.cert_pem()];
    eventually("new connections get the rotated certificate", || async {
        let (presented, _) = https_get(server.grpc_addr(), &roots, "").await;
        (presented == next_der.as_ref()).then_some(())
    })
    .await;

    health_check(open)
        .await
        .expect("the open connection still serves");
}

/// Connects to `addr` over TLS trusting `roots` and, unless `path` is empty, sends an HTTP/1.1 GET
/// for it: the server's leaf certificate (DER) and the answer.
async fn https_get(addr: SocketAddr, roots: &[&str], path: &str) -> (Vec<u8>, String) {
    let mut store = RootCertStore::empty();
    for pem in roots {
        store
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let mut answer = String::new();
    if !path.is_empty() {
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        tls.read_to_string(&mut answer).await.unwrap();
    }
    (leaf, answer)
}

/// Starts the binary with `vars` and returns its exit code and stderr.
fn start_refused(vars: &[(&str, &Path)]) -> (Option<i32>, String) {
    let vars: Vec<(&str, &str)> = vars
        .iter()
        .map(|(name, path)| (*name, path.to_str().unwrap()))
        .collect();
    let output = jetway_server(&vars).output().unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn the_start_is_refused_in_one_line_for_a_bad_certificate_or_key() {
    let files = Files::new();
    let (cert, key) = files.write("server", &files.ca.server().unwrap());
    let (_, other_key) = files.write("other", &files.ca.server().unwrap());
    let (expired, expired_key) = files.write(
        "expired",
        &files
            .ca
            .server_between(
                OffsetDateTime::now_utc() - Span::days(10),
                OffsetDateTime::now_utc() - Span::days(1),
            )
            .unwrap(),
    );
    let missing = files.path("missing.pem");
    // What is wrong, the variables, what the line says.
    type Case<'a> = (&'a str, [(&'a str, &'a Path); 2], &'a str);
    let cases: [Case; 4] = [
        (
            "a key of another certificate",
            [("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &other_key)],
            "is not the key of the certificate in TLS_CERT_FILE",
        ),
        (
            "an expired certificate",
            [("TLS_CERT_FILE", &expired), ("TLS_KEY_FILE", &expired_key)],
            "holds a certificate that expired on",
        ),
        (
            "a missing file",
            [("TLS_CERT_FILE", &missing), ("TLS_KEY_FILE", &key)],
            "cannot be read",
        ),
        (
            "a key file that holds a certificate",
            [("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &cert)],
            "TLS_KEY_FILE",
        ),
    ];
    for (what, vars, expected) in cases {
        let (code, stderr) = start_refused(&vars);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
    }
}

/// `jetway-server healthcheck` (the container's probe) speaks TLS to the health port when
/// `TLS_CERT_FILE` is set, accepting the server's own certificate.
#[tokio::test]
async fn the_healthcheck_probes_over_tls() {
    let files = Files::new();
    let (cert, key) = files.write("server", &files.ca.server().unwrap());
    let tls = ServerTls::load(&cert, &key, None).unwrap();
    let server = TestServer::builder().tls(tls, files.client()).start().await;
    let port = server.health_addr().port().to_string();
    let probe = |with_tls: bool| {
        let mut vars = vec![
            ("HEALTH_PORT", port.clone()),
            ("LISTEN_HOST", "127.0.0.1".to_owned()),
        ];
        if with_tls {
            vars.push(("TLS_CERT_FILE", cert.to_str().unwrap().to_owned()));
            vars.push(("TLS_KEY_FILE", key.to_str().unwrap().to_owned()));
        }
        // The server runs on this test's runtime: the probe waits on a thread of its own.
        tokio::task::spawn_blocking(move || {
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut command = jetway_server(&vars);
            command.arg("healthcheck");
            command.output().unwrap()
        })
    };
    let ok = probe(true).await.unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let plain = probe(false).await.unwrap();
    assert_eq!(plain.status.code(), Some(1), "{plain:?}");
    let stderr = String::from_utf8(plain.stderr).unwrap();
    assert!(stderr.contains("400"), "{stderr}");
}

/// With `AUTH_FILE` and mTLS, a client is let in by the names of its certificate alone, and does
/// what its allow-lists permit; a certificate of the same CA that no client names is not let in.
#[tokio::test]
async fn a_client_certificate_named_in_the_clients_file_authenticates_the_client() {
    use jetway_api::windshift::events::v1alpha1::events_service_client::EventsServiceClient;

    use crate::harness::stream_request;

    let files = Files::new();
    let alice = files.ca.client("alice").unwrap();
    let clients = files.path("clients.json");
    std::fs::write(
        &clients,
        r#"{"clients": [{"id": "alice", "certificate_names": ["alice"],
            "permissions": {"manage": ["alice-*"], "publish": ["alice.>"]}}]}"#,
    )
    .unwrap();
    let server = with_certificate_clients(&files, &clients, &alice).await;
    let channel = |pair: &CertAndKey| {
        tls_channel(server.grpc_addr(), files.client().identity(identity(pair)))
    };

    let mut as_alice = EventsServiceClient::new(channel(&alice));
    as_alice
        .ensure_stream(stream_request("alice-orders", &["alice.orders.>"]))
        .await
        .expect("alice's certificate lets her manage her streams");
    let denied = as_alice
        .ensure_stream(stream_request("bob-orders", &["bob.orders.>"]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("alice"), "{denied:?}");

    let stranger = files.ca.client("mallory").unwrap();
    let refused = EventsServiceClient::new(channel(&stranger))
        .ensure_stream(stream_request("alice-spy", &["alice.>"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// A client known by its certificate is looked up again by the certificate's names when the
/// clients file changes: a narrowed permission is denied on the same connection while what is
/// still allowed goes on, and once no client has the certificate's name its calls are refused as
/// unauthenticated, the open PublishStream's next request among them.
#[tokio::test]
async fn a_reloaded_clients_file_applies_to_a_client_known_by_its_certificate() {
    use jetway_api::{
        jetway::events::v1::{self as jw, events_service_client::EventsServiceClient as JwEvents},
        windshift::events::v1alpha1::events_service_client::EventsServiceClient,
    };
    use tonic::Code;

    use crate::harness::{RECV_GUARD, raw_stream_item, stream_request};

    let files = Files::new();
    let alice = files.ca.client("alice").unwrap();
    let clients = files.path("clients.json");
    // Each version differs in length, so a reload within the file system's time resolution is seen.
    let file = |name: &str, manage: &str| {
        format!(
            r#"{{"clients": [{{"id": "alice", "certificate_names": ["{name}"],
                "permissions": {{"manage": ["{manage}"], "publish": ["alice.>"]}}}}]}}"#
        )
    };
    std::fs::write(&clients, file("alice", "alice-*")).unwrap();
    let server = with_certificate_clients(&files, &clients, &alice).await;
    let channel = tls_channel(
        server.grpc_addr(),
        files.client().identity(identity(&alice)),
    );
    let windshift = EventsServiceClient::new(channel.clone());
    let ensure = || {
        let mut windshift = windshift.clone();
        async move {
            windshift
                .ensure_stream(stream_request("alice-orders", &["alice.orders.>"]))
                .await
        }
    };
    ensure()
        .await
        .expect("alice's certificate lets her manage her streams");
    let (publishes, requests) = tokio::sync::mpsc::channel(4);
    let mut answers = JwEvents::new(channel)
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .unwrap()
        .into_inner();
    let publish = |correlation_id| raw_stream_item(correlation_id, "alice.orders.created");
    let answer = async |answers: &mut tonic::Streaming<jw::PublishStreamResponse>| {
        tokio::time::timeout(RECV_GUARD, answers.message())
            .await
            .expect("an answer or the end of the stream")
    };
    publishes.send(publish(1)).await.unwrap();
    let first = answer(&mut answers).await.unwrap().unwrap();
    assert_eq!(first.correlation_id, 1);

    std::fs::write(&clients, file("alice", "alice-archive-*")).unwrap();
    eventually("the narrowed permission is in force", || async {
        let denied = ensure().await.err()?;
        (denied.code() == Code::PermissionDenied).then_some(())
    })
    .await;
    let denied = ensure().await.unwrap_err();
    assert!(denied.message().contains("alice"), "{denied:?}");
    publishes.send(publish(2)).await.unwrap();
    let still = answer(&mut answers).await.unwrap().unwrap();
    assert_eq!(still.correlation_id, 2);
    assert!(
        matches!(
            still.result.and_then(|r| r.result),
            Some(jw::publish_result::Result::Published(_))
        ),
        "publishing is still allowed"
    );

    std::fs::write(&clients, file("alice-old", "alice-*")).unwrap();
    eventually("the certificate's name is no longer a client", || async {
        let refused = ensure().await.err()?;
        (refused.code() == Code::Unauthenticated).then_some(())
    })
    .await;
    publishes.send(publish(3)).await.unwrap();
    let refused = answer(&mut answers).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}
