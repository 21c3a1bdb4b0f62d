//! Secure links to NATS: Jetway authenticates with a user and password, a token, an nkey seed
//! file or a `.creds` file (to a nats-server in operator mode), and connects over TLS (server
//! certificate checked against `NATS_TLS_CA_FILE`, and a client certificate for a server that
//! verifies clients), to real nats-servers that require them.

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
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

/// A NATS JWT (v2) for `subject`, with `nats` as its NATS-specific claims, signed by `issuer`.
fn signed_jwt(issuer: &nkeys::KeyPair, subject: &str, nats: serde_json::Value) -> String {
    let encode = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let issued = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        // Any unique id: nats-server does not check how it was made.
        "jti": format!("{subject}-{issued}"),
        "iat": issued,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": subject,
        "nats": nats,
    });
    let unsigned = format!(
        "{}.{}",
        encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(unsigned.as_bytes()).unwrap();
    format!("{unsigned}.{}", encode(&signature))
}

/// A nats-server in operator mode, whose accounts come from their JWTs in its config: a system
/// account and an account with JetStream on. Returns it and a `.creds` file (a user JWT of that
/// account and the user's seed) written in `dir`.
fn operator_mode_server(dir: &std::path::Path) -> (NatsServer, PathBuf) {
    let operator = nkeys::KeyPair::new_operator();
    let (system, account, user) = (
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_user(),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    let mut with_jetstream = unlimited.clone();
    for limit in ["mem_storage", "disk_storage", "streams", "consumer"] {
        with_jetstream[limit] = (-1).into();
    }
    let account_jwt = |key: &nkeys::KeyPair, limits: &serde_json::Value| {
        signed_jwt(
            &operator,
            &key.public_key(),
            serde_json::json!({"type": "account", "version": 2, "limits": limits}),
        )
    };
    let operator_jwt = signed_jwt(
        &operator,
        &operator.public_key(),
        serde_json::json!({"type": "operator", "version": 2,
            "system_account": system.public_key()}),
    );
    let config = format!(
        "operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {system}: {system_jwt}\n  {account}: {account_jwt}\n}}\n",
        system = system.public_key(),
        system_jwt = account_jwt(&system, &unlimited),
        account = account.public_key(),
        account_jwt = account_jwt(&account, &with_jetstream),
    );
    let nats = NatsServer::start_with_config(&[], Some(&config));
    let user_jwt = signed_jwt(
        &account,
        &user.public_key(),
        serde_json::json!({"type": "user", "version": 2, "subs": -1, "data": -1,
            "payload": -1, "pub": {}, "sub": {}}),
    );
    let creds = dir.join("jetway.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    (nats, creds)
}

#[tokio::test]
async fn jetway_authenticates_with_a_creds_file() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, creds) = operator_mode_server(dir.path());
    refuses_anonymous(&nats).await;
    publish_through(
        &nats,
        NatsSecurity {
            creds_file: Some(creds),
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
