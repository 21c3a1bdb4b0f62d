//! Secure links to NATS: Jetway authenticates with a user and password, a token or an nkey seed
//! file, and connects over TLS (server certificate checked against `NATS_TLS_CA_FILE`, and a client
//! certificate for a server that verifies clients), to real nats-servers that require them.

use std::path::PathBuf;

use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{Client, StreamOptions, dev_certs::DevCa};
use jetway_core::{ConnectSettings, Nats, NatsSecurity, Secret};
use jetway_server::testing::TestServer;
use jetway_testkit::NatsServer;

/// Serves in front of `nats` with `security`, and publishes one event through Jetway.
async fn publish_through(nats: &NatsServer, security: NatsSecurity) {
    let jetway = TestServer::builder()
        .nats_url(nats.url())
        .nats_security(security)
        .start()
        .await;
    let client = Client::from_channel(jetway.channel().await);
    client
        .streams()
        .ensure(&StreamOptions::new("links").subjects(["links.>"]))
        .await
        .unwrap();
    client
        .publish("links.one", &StringValue { value: "x".into() })
        .await
        .unwrap();
}

/// The server refuses a client without credentials (or without TLS): what the test gives Jetway is
/// what makes it work.
async fn refuses_anonymous(nats: &NatsServer) {
    let anonymous = async_nats::connect(nats.url()).await;
    assert!(
        anonymous.is_err(),
        "the server requires credentials: {anonymous:?}"
    );
}

#[tokio::test]
async fn jetway_authenticates_with_a_user_and_password_or_a_token() {
    let nats = NatsServer::start_with_args(&["--user", "alice", "--pass", "p@ss w0rd"]);
    refuses_anonymous(&nats).await;
    publish_through(
        &nats,
        NatsSecurity {
            user: Some("alice".into()),
            password: Some(Secret::new("p@ss w0rd")),
            ..NatsSecurity::default()
        },
    )
    .await;

    let nats = NatsServer::start_with_args(&["--auth", "s3cretTOKEN"]);
    refuses_anonymous(&nats).await;
    publish_through(
        &nats,
        NatsSecurity {
            token: Some(Secret::new("s3cretTOKEN")),
            ..NatsSecurity::default()
        },
    )
    .await;
}

#[tokio::test]
async fn jetway_authenticates_with_an_nkey_seed_file() {
    let user = nkeys::KeyPair::new_user();
    let nats = NatsServer::start_with_config(
        &[],
        Some(&format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
            user.public_key()
        )),
    );
    refuses_anonymous(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("jetway.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().unwrap())).unwrap();
    publish_through(
        &nats,
        NatsSecurity {
            nkey_seed_file: Some(seed_file),
            ..NatsSecurity::default()
        },
    )
    .await;
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, written in `dir`.
fn nats_certs(dir: &std::path::Path) -> [PathBuf; 5] {
    let ca = DevCa::named("NATS test CA").unwrap();
    let server = ca.server().unwrap();
    let client = ca.client("jetway").unwrap();
    let files = [
        ("ca.pem", ca.cert_pem().to_owned()),
        ("server.pem", server.cert_pem),
        ("server-key.pem", server.key_pem),
        ("client.pem", client.cert_pem),
        ("client-key.pem", client.key_pem),
    ];
    files.map(|(name, contents)| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    })
}

#[tokio::test]
async fn jetway_connects_over_tls_and_presents_a_client_certificate_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, server_cert, server_key, client_cert, client_key] = nats_certs(dir.path());
    let path = |path: &PathBuf| path.to_str().unwrap().to_owned();

    // TLS, the server's certificate checked against the CA.
    let (cert, key) = (path(&server_cert), path(&server_key));
    let nats = NatsServer::start_with_args(&["--tls", "--tlscert", &cert, "--tlskey", &key]);
    refuses_anonymous(&nats).await;
    publish_through(
        &nats,
        NatsSecurity {
            tls_ca_file: Some(ca.clone()),
            ..NatsSecurity::default()
        },
    )
    .await;

    // The server verifies clients and requires a token too.
    let ca_arg = path(&ca);
    let nats = NatsServer::start_with_args(&[
        "--tlsverify",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlscacert",
        &ca_arg,
        "--auth",
        "s3cretTOKEN",
    ]);
    refuses_anonymous(&nats).await;
    publish_through(
        &nats,
        NatsSecurity {
            token: Some(Secret::new("s3cretTOKEN")),
            tls_ca_file: Some(ca),
            tls_cert_file: Some(client_cert),
            tls_key_file: Some(client_key),
            ..NatsSecurity::default()
        },
    )
    .await;
}

#[tokio::test]
async fn a_missing_file_or_a_bad_seed_fails_the_connection_naming_it_without_the_secret() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("bad.nk");
    std::fs::write(&seed_file, "SUNOTASEEDs3cret").unwrap();
    let cases = [
        (
            NatsSecurity {
                tls_ca_file: Some(dir.path().join("missing-ca.pem")),
                ..NatsSecurity::default()
            },
            "cannot read the NATS TLS CA file",
        ),
        (
            NatsSecurity {
                creds_file: Some(dir.path().join("missing.creds")),
                ..NatsSecurity::default()
            },
            "cannot read the NATS credentials file",
        ),
        (
            NatsSecurity {
                nkey_seed_file: Some(seed_file),
                ..NatsSecurity::default()
            },
            "holds no valid nkey seed",
        ),
    ];
    for (security, expected) in cases {
        let settings = ConnectSettings {
            url: nats.url(),
            name: "links-test".into(),
            publish_max_pending: 16,
            security,
        };
        let error = Nats::connect(&settings).await.unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }
}
