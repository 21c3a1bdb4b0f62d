//! Credentials: a token and a client id + secret reach a server with AUTH_FILE; none, or wrong
//! ones, are refused with UNAUTHENTICATED.

use jetway_client::{Client, tonic::Code};
use jetway_core::credentials::{secret_hash, token_hash};
use jetway_server::{app::Security, auth::Access};

use jetway_server::testing::TestServer;

const TOKEN: &str = "a-token-for-the-sdk-test";
const SECRET: &str = "a secret for the sdk test";

async fn secured() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let file = format!(
        r#"{{"clients": [{{"id": "svc", "tokens": ["{}"], "secret": "{}",
            "permissions": {{"read": [">"]}}}}]}}"#,
        token_hash(TOKEN),
        secret_hash(SECRET).unwrap()
    );
    std::fs::write(&path, file).unwrap();
    let security = Security {
        access: Access::load(&path).unwrap(),
        reflection: true,
    };
    (TestServer::builder().security(security).start().await, dir)
}

#[tokio::test]
async fn a_token_or_a_client_secret_authenticates_the_client() {
    let (server, _dir) = secured().await;
    let listed = |client: Client| async move { client.streams().list().await };

    let anonymous = Client::connect(server.url()).await.unwrap();
    let refused = listed(anonymous).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::Unauthenticated), "{refused:?}");

    for builder in [
        Client::builder().auth_token(TOKEN),
        Client::builder().client_secret("svc", SECRET),
    ] {
        let client = builder.connect(server.url()).await.unwrap();
        listed(client).await.unwrap();
    }
    for builder in [
        Client::builder().auth_token("not-the-token"),
        Client::builder().client_secret("svc", "not the secret"),
        Client::builder().client_secret("nobody", SECRET),
    ] {
        let client = builder.connect(server.url()).await.unwrap();
        let refused = listed(client).await.unwrap_err();
        assert_eq!(refused.code(), Some(Code::Unauthenticated), "{refused:?}");
    }
}
