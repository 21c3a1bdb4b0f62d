//! Key-value state: ensure, get, set, create, compare-and-set, delete, and watching changes.

use futures::StreamExt;
use jetway_api::windshift::test::v1::StringValue;
use jetway_client::{Client, Operation, WatchStart, tonic::Code};

use crate::{RECV_GUARD, TestServer, text};

#[tokio::test]
async fn values_are_set_read_compared_and_deleted() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let store = client.store("config");
    assert_eq!(store.name(), "config");
    let missing_store = store.get("app.color").await.unwrap_err();
    assert!(missing_store.is_not_found(), "{missing_store}");
    store.ensure().await.expect("ensure");
    store.ensure().await.expect("ensure again");

    let missing = store.get("app.color").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    let first = store.set("app.color", &text("blue")).await.unwrap();
    let entry = store.get("app.color").await.unwrap();
    assert_eq!(entry.revision(), first);
    assert_eq!(entry.decode::<StringValue>().unwrap().value, "blue");
    assert_eq!(
        entry.value().message_name(),
        "windshift.test.v1.StringValue"
    );
    assert!(entry.last_updated().is_some());

    let exists = store.create("app.color", &text("red")).await.unwrap_err();
    assert_eq!(exists.code(), Some(Code::AlreadyExists));
    let stale = store
        .update("app.color", &text("red"), first + 100)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Some(Code::FailedPrecondition));
    let second = store
        .update("app.color", &text("green"), first)
        .await
        .expect("compare-and-set from the latest revision");
    assert!(second > first);
    assert_eq!(
        store
            .get("app.color")
            .await
            .unwrap()
            .decode::<StringValue>()
            .unwrap()
            .value,
        "green"
    );

    let wrong = store
        .delete_if_revision("app.color", first)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Some(Code::FailedPrecondition));
    store
        .delete_if_revision("app.color", second)
        .await
        .expect("delete at the latest revision");
    assert!(store.get("app.color").await.unwrap_err().is_not_found());
    store
        .delete("app.color")
        .await
        .expect("deleting again succeeds");
    store
        .create("app.color", &text("again"))
        .await
        .expect("a deleted key can be created again");
}

#[tokio::test]
async fn a_watch_streams_changes_in_revision_order() {
    let server = TestServer::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let store = client.store("config");
    store.ensure().await.unwrap();
    let before = store.set("app.size", &text("XL")).await.unwrap();
    store.set("other.key", &text("ignored")).await.unwrap();

    let mut watch = store.watch("app.>", WatchStart::Latest).await.unwrap();
    let blue = store.set("app.color", &text("blue")).await.unwrap();
    store.delete("app.color").await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..3 {
        let entry = tokio::time::timeout(RECV_GUARD, watch.next())
            .await
            .unwrap_or_else(|_| panic!("no entry within the guard after {seen:?}"))
            .expect("the watch goes on")
            .expect("an entry");
        seen.push((
            entry.key().to_owned(),
            entry.revision(),
            entry.operation(),
            entry
                .decode::<StringValue>()
                .map(|value| value.unwrap().value),
        ));
        assert!(entry.time().is_some());
        assert_eq!(entry.value().is_some(), entry.operation() == Operation::Put);
    }
    assert_eq!(
        seen[0],
        ("app.size".into(), before, Operation::Put, Some("XL".into()))
    );
    assert_eq!(
        seen[1],
        (
            "app.color".into(),
            blue,
            Operation::Put,
            Some("blue".into())
        )
    );
    assert_eq!(
        (seen[2].0.as_str(), seen[2].2, seen[2].3.clone()),
        ("app.color", Operation::Delete, None)
    );

    // Resuming after a revision repeats nothing before it.
    let mut resumed = store
        .watch("app.>", WatchStart::AfterRevision(blue))
        .await
        .unwrap();
    let entry = tokio::time::timeout(RECV_GUARD, resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.key(), entry.operation()),
        ("app.color", Operation::Delete)
    );
}
