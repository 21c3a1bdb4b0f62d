//! `jetway dev-certs` and the TLS options: the written certificates serve TLS and mTLS, and the
//! CLI connects with `--tls-ca`, `--tls-cert` and `--tls-key` or their `JETWAY_TLS_*` variables.

use std::path::Path;

use jetway_client::tonic::transport::{Certificate, ClientTlsConfig, Identity};
use jetway_server::{infra::tls::ServerTls, testing::TestServer};

use crate::{finish, jetway, run};

/// Runs `jetway dev-certs <dir>` and serves with mTLS from what it wrote.
async fn mtls_server_from_dev_certs(dir: &Path) -> TestServer {
    let written = finish({
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetway"));
        command
            .args(["dev-certs", dir.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    })
    .await;
    let lines = written.ok();
    assert!(lines[0].starts_with("wrote ca.pem"), "{lines:?}");
    for key in ["ca-key.pem", "server-key.pem", "client-key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is readable by its owner only");
    }
    let file = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let server = ServerTls::load(
        &dir.join("server.pem"),
        &dir.join("server-key.pem"),
        Some(&dir.join("ca.pem")),
    )
    .unwrap();
    let client = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(file("ca.pem")))
        .identity(Identity::from_pem(
            file("client.pem"),
            file("client-key.pem"),
        ));
    TestServer::builder().tls(server, client).start().await
}

#[tokio::test]
async fn dev_certs_serve_mtls_and_the_cli_connects_with_its_tls_options() {
    let dir = tempfile::tempdir().unwrap();
    let server = mtls_server_from_dev_certs(dir.path()).await;
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client-key.pem"));

    let listed = run(
        &server,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "stream",
            "ls",
        ],
    )
    .await;
    listed.ok();

    // The same from the environment.
    let mut command = jetway(&server, &["stream", "ls"]);
    command
        .env("JETWAY_TLS_CA", &ca)
        .env("JETWAY_TLS_CERT", &cert)
        .env("JETWAY_TLS_KEY", &key);
    finish(command).await.ok();

    // No client certificate: the server refuses the handshake (the CLI shows the alert, or the
    // connection it closed, whichever its client saw first).
    run(&server, &["--tls-ca", &ca, "stream", "ls"])
        .await
        .fails(2, "error: ");
    // The system's roots do not know the development CA.
    run(&server, &["stream", "ls"]).await.fails(2, "error");
    // A certificate without its key is a usage error.
    run(
        &server,
        &["--tls-ca", &ca, "--tls-cert", &cert, "stream", "ls"],
    )
    .await
    .fails(1, "--tls-key");
    run(&server, &["--tls-ca", &path("missing.pem"), "stream", "ls"])
        .await
        .fails(1, "--tls-ca");
}
