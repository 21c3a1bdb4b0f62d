//! `jetway auth token` and `jetway auth secret-hash` write what AUTH_FILE reads; `--token` and
//! `JETWAY_TOKEN` authenticate the CLI.

use jetway_core::credentials::{SecretHash, TokenHash};
use jetway_server::{app::Security, auth::Access};

use jetway_server::testing::TestServer;

use crate::{finish, jetway, run, run_with_input};

#[tokio::test]
async fn a_new_token_authenticates_through_the_flag_and_the_variable() {
    // The offline commands need no server; the URL is never dialled.
    let offline = TestServer::start().await;
    let made = run(&offline, &["--json", "auth", "token", "ops"])
        .await
        .json();
    let token = made[0]["token"].as_str().unwrap().to_owned();
    let hash = made[0]["token_hash"].as_str().unwrap().to_owned();
    assert!(
        TokenHash::parse(&hash)
            .unwrap()
            .matches(&TokenHash::of(&token))
    );
    let text = run(&offline, &["auth", "token", "ops"]).await;
    assert!(text.stdout.contains("\"sha256:"), "{text:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let file = format!(
        r#"{{"clients": [{{"id": "ops", "tokens": ["{hash}"],
            "permissions": {{"manage": [">"], "publish": [">"], "read": [">"]}}}}]}}"#
    );
    std::fs::write(&path, file).unwrap();
    let server = TestServer::builder()
        .security(Security {
            access: Access::load(&path).unwrap(),
            reflection: true,
        })
        .start()
        .await;
    run(&server, &["stream", "ls"])
        .await
        .fails(2, "UNAUTHENTICATED");
    run(
        &server,
        &[
            "--token", &token, "stream", "ensure", "orders", "-t", "orders.>",
        ],
    )
    .await
    .ok();
    let mut command = jetway(&server, &["stream", "ls"]);
    command.env("JETWAY_TOKEN", &token);
    let listed = finish(command).await;
    assert!(listed.stdout.contains("orders"), "{listed:?}");
}

#[tokio::test]
async fn secret_hash_reads_the_secret_from_standard_input() {
    let offline = TestServer::start().await;
    let run = run_with_input(
        &offline,
        &["--json", "auth", "secret-hash"],
        "s3cret words\n",
    )
    .await;
    let hash = run.json()[0]["secret_hash"].as_str().unwrap().to_owned();
    let parsed = SecretHash::parse(&hash).unwrap();
    assert!(parsed.verify("s3cret words"));
    assert!(!parsed.verify("s3cret words\n"));
}
