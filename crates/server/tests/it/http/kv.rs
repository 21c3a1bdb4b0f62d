//! Key-value stores over HTTP: values with their content type and revision as `ETag`, read back
//! over gRPC and the reverse, `If-Match` / `If-None-Match: *` with their 412s and races, key
//! listings, watches over SSE, and each error's status and field.

use std::net::SocketAddr;

use bytes::Bytes;
use jetway_api::{
    google::protobuf::Any,
    jetway::events::v1::RawPayload,
    windshift::{
        state::v1alpha1::{self as ws, state_service_client::StateServiceClient},
        test::v1::StringValue,
    },
};
use jetway_server::config::Limits;
use prost::Message;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{Reply, SseReader, call, get};
use crate::harness::Env;

async fn kv_env(limits: Limits) -> (Env, SocketAddr, StateServiceClient<Channel>) {
    let env = Env::start_with(limits).await;
    let addr = env.jetway.http_addr();
    let grpc = StateServiceClient::new(env.jetway.channel().await);
    let created = call(addr, "PUT", "/v1/stores/config", &[], Bytes::new()).await;
    assert_eq!(created.status.as_u16(), 201, "{:?}", created.body);
    assert_eq!(created.json(), json!({"created": true}));
    (env, addr, grpc)
}

async fn put(addr: SocketAddr, key: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    call(
        addr,
        "PUT",
        &format!("/v1/stores/config/keys/{key}"),
        headers,
        body.to_owned(),
    )
    .await
}

fn etag(reply: &Reply) -> String {
    reply.headers["etag"].to_str().unwrap().to_owned()
}

/// The keys of a listing, sorted (a store lists them in no particular order).
fn sorted(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
    let mut keys: Vec<String> = serde_json::from_value(reply.json()).unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn values_keep_their_content_type_and_etag_and_cross_to_grpc_both_ways() {
    let (_env, addr, mut grpc) = kv_env(Limits::default()).await;
    let json_type = [("content-type", "application/json")];
    let stored = put(addr, "app.color", &json_type, r#"{"c":"blue"}"#).await;
    assert_eq!(stored.status.as_u16(), 200, "{:?}", stored.body);
    let revision = stored.json()["revision"].as_u64().unwrap();
    assert_eq!(etag(&stored), format!("\"{revision}\""));

    let read = get(addr, "/v1/stores/config/keys/app.color").await;
    assert_eq!(read.status.as_u16(), 200);
    assert_eq!(read.headers["content-type"], "application/json");
    assert_eq!(etag(&read), etag(&stored));
    assert_eq!(read.body, Bytes::from(r#"{"c":"blue"}"#));
    let current = etag(&read);
    let unchanged = call(
        addr,
        "GET",
        "/v1/stores/config/keys/app.color",
        &[("if-none-match", &current)],
        Bytes::new(),
    )
    .await;
    assert_eq!(unchanged.status.as_u16(), 304);
    assert!(unchanged.body.is_empty());

    // Written over HTTP, read over gRPC: the body and content type in a RawPayload.
    let value = grpc
        .get(ws::GetRequest {
            store: "config".into(),
            key: "app.color".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(value.revision, revision);
    let raw: RawPayload = value.value.unwrap().unpack().unwrap().unwrap();
    assert_eq!(raw.content_type, "application/json");
    assert_eq!(raw.data, Bytes::from(r#"{"c":"blue"}"#));

    // A protobuf message over HTTP is that message over gRPC.
    let message = StringValue { value: "XL".into() };
    let typed = call(
        addr,
        "PUT",
        "/v1/stores/config/keys/app.size",
        &[(
            "content-type",
            "application/protobuf; proto=windshift.test.v1.StringValue",
        )],
        message.encode_to_vec(),
    )
    .await;
    assert_eq!(typed.status.as_u16(), 200, "{:?}", typed.body);
    let value = grpc
        .get(ws::GetRequest {
            store: "config".into(),
            key: "app.size".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(value.value, Some(Any::pack(&message)));

    // Written over gRPC, read over HTTP: a message, and a RawPayload's bytes and type.
    let set = |key: &str, value: Any| ws::SetRequest {
        store: "config".into(),
        key: key.into(),
        value: Some(value),
        ..Default::default()
    };
    let shade = StringValue {
        value: "navy".into(),
    };
    let revision = grpc
        .set(set("app.shade", Any::pack(&shade)))
        .await
        .unwrap()
        .into_inner()
        .revision;
    let read = get(addr, "/v1/stores/config/keys/app.shade").await;
    assert_eq!(
        read.headers["content-type"],
        "application/protobuf; proto=windshift.test.v1.StringValue"
    );
    assert_eq!(etag(&read), format!("\"{revision}\""));
    assert_eq!(StringValue::decode(read.body).unwrap(), shade);
    let note = RawPayload {
        data: Bytes::from("hello"),
        content_type: "text/plain".into(),
    };
    grpc.set(set("app.note", Any::pack(&note))).await.unwrap();
    let read = get(addr, "/v1/stores/config/keys/app.note").await;
    assert_eq!(read.headers["content-type"], "text/plain");
    assert_eq!(read.body, Bytes::from("hello"));

    // No Content-Type: bytes. A key may hold `/` (raw in the path) and `=`.
    let bare = put(addr, "files/a=1", &[], "\u{1}").await;
    assert_eq!(bare.status.as_u16(), 200, "{:?}", bare.body);
    let read = get(addr, "/v1/stores/config/keys/files/a=1").await;
    assert_eq!(read.headers["content-type"], "application/octet-stream");
    assert_eq!(read.body, Bytes::from("\u{1}"));

    // Listings, all and filtered, as a JSON array or NDJSON.
    let all = get(addr, "/v1/stores/config/keys").await;
    assert_eq!(
        sorted(&all),
        [
            "app.color",
            "app.note",
            "app.shade",
            "app.size",
            "files/a=1"
        ]
    );
    get(addr, "/v1/stores/config/keys?filter=app.s*")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("filter"));
    let some = get(addr, "/v1/stores/config/keys?filter=app.*").await;
    assert_eq!(sorted(&some).len(), 4);
    let ndjson = call(
        addr,
        "GET",
        "/v1/stores/config/keys?filter=files%2Fa%3D1",
        &[("accept", "application/x-ndjson")],
        Bytes::new(),
    )
    .await;
    assert_eq!(ndjson.headers["content-type"], "application/x-ndjson");
    assert_eq!(ndjson.body, Bytes::from("\"files/a=1\"\n"));

    // Delete: the key reads as missing, and leaves the listing.
    let deleted = call(
        addr,
        "DELETE",
        "/v1/stores/config/keys/app.color",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(deleted.status.as_u16(), 204, "{:?}", deleted.body);
    get(addr, "/v1/stores/config/keys/app.color")
        .await
        .assert_error(404, "NOT_FOUND", None);
    assert_eq!(
        sorted(&get(addr, "/v1/stores/config/keys?filter=app.*").await),
        ["app.note", "app.shade", "app.size"]
    );
}

#[tokio::test]
async fn if_match_and_if_none_match_are_compare_and_set_with_412() {
    let (_env, addr, _grpc) = kv_env(Limits::default()).await;
    let create = [("if-none-match", "*")];
    let created = put(addr, "k", &create, "1").await;
    assert_eq!(created.status.as_u16(), 201, "{:?}", created.body);
    let first = etag(&created);
    put(addr, "k", &create, "again").await.assert_error(
        412,
        "ALREADY_EXISTS",
        Some("If-None-Match"),
    );

    let second = put(addr, "k", &[("if-match", &first)], "2").await;
    assert_eq!(second.status.as_u16(), 200, "{:?}", second.body);
    let second = etag(&second);
    let stale = put(addr, "k", &[("if-match", &first)], "3").await;
    let message = stale.assert_error(412, "FAILED_PRECONDITION", Some("If-Match"));
    assert!(message.contains(&first), "{message}");
    assert_eq!(get(addr, "/v1/stores/config/keys/k").await.body, "2");

    // `*`: any current value, so a missing key fails.
    let any = put(addr, "k", &[("if-match", "*")], "4").await;
    assert_eq!(any.status.as_u16(), 200, "{:?}", any.body);
    put(addr, "missing", &[("if-match", "*")], "x")
        .await
        .assert_error(412, "FAILED_PRECONDITION", Some("If-Match"));

    // Deletes take If-Match too; a deleted key can be created again.
    let delete = |tag: String| async move {
        call(
            addr,
            "DELETE",
            "/v1/stores/config/keys/k",
            &[("if-match", &tag)],
            Bytes::new(),
        )
        .await
    };
    delete(second)
        .await
        .assert_error(412, "FAILED_PRECONDITION", Some("If-Match"));
    let current = etag(&get(addr, "/v1/stores/config/keys/k").await);
    assert_eq!(delete(current).await.status.as_u16(), 204);
    assert_eq!(put(addr, "k", &create, "5").await.status.as_u16(), 201);

    // Conditions this API cannot have issued are the client's mistake.
    for (name, value) in [
        ("if-match", "7"),
        ("if-match", "W/\"7\""),
        ("if-match", "\"1\", \"2\""),
        ("if-none-match", "\"7\""),
    ] {
        let field = if name == "if-match" {
            "If-Match"
        } else {
            "If-None-Match"
        };
        put(addr, "k", &[(name, value)], "x").await.assert_error(
            400,
            "INVALID_ARGUMENT",
            Some(field),
        );
    }
    put(addr, "k", &[("if-match", "*"), ("if-none-match", "*")], "x")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("If-Match"));
    call(
        addr,
        "DELETE",
        "/v1/stores/config/keys/k",
        &[("if-none-match", "*")],
        Bytes::new(),
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("If-None-Match"));
}

#[tokio::test]
async fn concurrent_writers_with_one_etag_have_exactly_one_winner() {
    let (_env, addr, _grpc) = kv_env(Limits::default()).await;
    let mut tag = etag(&put(addr, "race", &[], "0").await);
    for round in 0..20 {
        let condition = [("if-match", tag.as_str())];
        let (a, b) = tokio::join!(
            put(addr, "race", &condition, "a"),
            put(addr, "race", &condition, "b"),
        );
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 412], "round {round}");
        let winner = if a.status.as_u16() == 200 { a } else { b };
        tag = etag(&winner);
        assert_eq!(etag(&get(addr, "/v1/stores/config/keys/race").await), tag);
    }
    for round in 0..20 {
        let key = format!("new{round}");
        let (a, b) = tokio::join!(
            put(addr, &key, &[("if-none-match", "*")], "a"),
            put(addr, &key, &[("if-none-match", "*")], "b"),
        );
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 412], "round {round}");
    }
}

#[tokio::test]
async fn kv_errors_have_their_status_and_name_the_field() {
    let limits = Limits {
        http_max_body_bytes: 1024,
        ..Limits::default()
    };
    let (_env, addr, _grpc) = kv_env(limits).await;
    let ensure = |store: &'static str, body: &'static str| async move {
        call(
            addr,
            "PUT",
            &format!("/v1/stores/{store}"),
            &[("content-type", "application/json")],
            body,
        )
        .await
    };
    ensure("bad.name", "{}")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("store"));
    ensure("s", r#"{"ttl":"soon"}"#)
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("ttl"));
    ensure("s", r#"{"ttl":"10ms"}"#)
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("ttl"));
    ensure("s", r#"{"history":"five"}"#).await.assert_error(
        400,
        "INVALID_ARGUMENT",
        Some("history"),
    );
    ensure("s", r#"{"history":65}"#)
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("history"));
    ensure("s", r#"{"storage":"tape"}"#).await.assert_error(
        400,
        "INVALID_ARGUMENT",
        Some("storage"),
    );
    ensure("s", r#"{"colour":"red"}"#)
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("colour"));
    ensure("s", "[1]")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("body"));
    ensure("s", "{")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("body"));
    let small = ensure("small", r#"{"max_value_size":64,"history":3,"ttl":"1h"}"#).await;
    assert_eq!(small.status.as_u16(), 201, "{:?}", small.body);
    ensure("small", r#"{"storage":"memory"}"#)
        .await
        .assert_error(409, "FAILED_PRECONDITION", None);
    let updated = ensure("small", r#"{"max_value_size":64}"#).await;
    assert_eq!(updated.json(), json!({"created": false}));

    call(addr, "PUT", "/v1/stores/small/keys/k", &[], "x".repeat(100))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("value"));
    call(
        addr,
        "PUT",
        "/v1/stores/config/keys/k",
        &[],
        "x".repeat(2000),
    )
    .await
    .assert_error(413, "RESOURCE_EXHAUSTED", None);
    put(addr, "k", &[("content-type", "application/protobuf")], "x")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("Content-Type"));
    put(addr, "bad..key", &[], "x")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("key"));
    get(addr, "/v1/stores/config/keys/a*")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("key"));
    get(addr, "/v1/stores/nothing/keys/k")
        .await
        .assert_error(404, "NOT_FOUND", None);
    call(addr, "PUT", "/v1/stores/nothing/keys/k", &[], "x")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, "/v1/stores/nothing/keys")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, "/v1/stores/config/keys?prefix=a")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("prefix"));
    get(addr, "/v1/stores/config/watch?start=later")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("start"));
    get(
        addr,
        "/v1/stores/config/watch?start=history&after_revision=1",
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("start"));
    call(
        addr,
        "GET",
        "/v1/stores/config/watch",
        &[("last-event-id", "x")],
        Bytes::new(),
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", Some("Last-Event-ID"));
    get(addr, "/v1/stores/config/watch?key=a..b")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("key"));
    get(addr, "/v1/stores/nothing/watch")
        .await
        .assert_error(404, "NOT_FOUND", None);
    call(addr, "POST", "/v1/stores/config/keys/k", &[], "x")
        .await
        .assert_error(405, "UNIMPLEMENTED", None);
}

/// The next watched entry: its SSE id is its revision.
async fn next_entry(watch: &mut SseReader) -> Value {
    let message = watch.next().await.expect("an entry");
    assert_eq!(message.event, None, "{message:?}");
    assert_eq!(message.data["revision"].as_u64(), message.id);
    message.data
}

#[tokio::test]
async fn watches_stream_entries_resume_after_a_revision_and_end_at_shutdown() {
    let (mut env, addr, _grpc) = kv_env(Limits::default()).await;
    let json_type = [("content-type", "application/json")];
    put(addr, "app.color", &json_type, r#""blue""#).await;
    put(addr, "other", &json_type, "1").await;
    let mut watch = SseReader::open(addr, "/v1/stores/config/watch?key=app.%3E", &[]).await;
    let first = next_entry(&mut watch).await;
    assert_eq!(first["key"], "app.color");
    assert_eq!(first["operation"], "put");
    assert_eq!(first["data"], "blue");
    assert_eq!(first["content_type"], "application/json");
    put(addr, "app.size", &[("content-type", "text/plain")], "XL").await;
    let size = next_entry(&mut watch).await;
    assert_eq!(
        (size["key"].clone(), size["data"].clone()),
        (json!("app.size"), json!("XL"))
    );
    call(
        addr,
        "DELETE",
        "/v1/stores/config/keys/app.color",
        &[],
        Bytes::new(),
    )
    .await;
    let deleted = next_entry(&mut watch).await;
    assert_eq!(deleted["operation"], "delete");
    assert!(deleted.get("data").is_none(), "{deleted}");
    let seen = deleted["revision"].as_u64().unwrap();
    drop(watch);

    // Changed while the client was away: resumed after the last revision it saw.
    put(addr, "app.color", &[], "\u{0}").await;
    let last = seen.to_string();
    let mut resumed = SseReader::open(
        addr,
        "/v1/stores/config/watch?key=app.%3E",
        &[("last-event-id", &last)],
    )
    .await;
    let missed = next_entry(&mut resumed).await;
    assert_eq!(missed["key"], "app.color");
    assert_eq!(missed["data_base64"], "AA==");
    assert!(missed["revision"].as_u64().unwrap() > seen);

    // Only updates; every key.
    let mut updates = SseReader::open(addr, "/v1/stores/config/watch?start=updates", &[]).await;
    put(addr, "other", &json_type, "2").await;
    assert_eq!(next_entry(&mut updates).await["key"], "other");

    env.jetway.stop().await;
    assert!(
        updates.next().await.is_none(),
        "the stream ends, not cut off"
    );
}

#[tokio::test]
async fn a_keys_history_lists_every_entry_oldest_first() {
    let env = Env::start_with(Limits::default()).await;
    let addr = env.jetway.http_addr();
    let reply = call(
        addr,
        "PUT",
        "/v1/stores/config",
        &[("content-type", "application/json")],
        json!({"history": 5}).to_string(),
    )
    .await;
    assert!(reply.status.is_success(), "{:?}", reply.body);
    // A key with a `/`: the history route is not under `/keys/`, so it reads as the key.
    let key = "app/ui.color";
    for value in ["red", "blue"] {
        let path = format!("/v1/stores/config/keys/{key}");
        let reply = call(addr, "PUT", &path, &[("content-type", "text/plain")], value).await;
        assert!(reply.status.is_success(), "{:?}", reply.body);
    }
    let path = format!("/v1/stores/config/keys/{key}");
    let reply = call(addr, "DELETE", &path, &[], Bytes::new()).await;
    assert!(reply.status.is_success(), "{:?}", reply.body);

    let history = get(addr, &format!("/v1/stores/config/history/{key}")).await;
    assert_eq!(history.status.as_u16(), 200, "{:?}", history.body);
    let history = history.json();
    let seen: Vec<(&str, u64, Option<&str>)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            assert_eq!(entry["key"], key);
            (
                entry["operation"].as_str().unwrap(),
                entry["revision"].as_u64().unwrap(),
                entry["data"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("put", 1, Some("red")),
            ("put", 2, Some("blue")),
            ("delete", 3, None)
        ]
    );
    let ndjson = call(
        addr,
        "GET",
        &format!("/v1/stores/config/history/{key}"),
        &[("accept", "application/x-ndjson")],
        Bytes::new(),
    )
    .await;
    assert_eq!(ndjson.headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = std::str::from_utf8(&ndjson.body)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(Value::Array(lines), history);

    get(addr, "/v1/stores/config/history/never.set")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, "/v1/stores/config/history/bad..key")
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("key"));
    get(addr, "/v1/stores/nowhere/history/a")
        .await
        .assert_error(404, "NOT_FOUND", None);
    get(addr, &format!("/v1/stores/config/history/{key}?limit=1"))
        .await
        .assert_error(400, "INVALID_ARGUMENT", Some("limit"));
}

/// A full store refuses a write over HTTP as over gRPC: RESOURCE_EXHAUSTED (429) naming the limit.
#[tokio::test]
async fn a_full_store_refuses_a_write_with_429_naming_the_limit() {
    let (env, addr, _grpc) = kv_env(Limits::default()).await;
    let mut config = env
        .js
        .get_stream("KV_config")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.max_messages = 1;
    env.js.update_stream(config).await.unwrap();
    let stored = put(addr, "first", &[], "x").await;
    assert_eq!(stored.status.as_u16(), 200, "{:?}", stored.body);
    let message = put(addr, "second", &[], "y")
        .await
        .assert_error(429, "RESOURCE_EXHAUSTED", None);
    assert!(message.contains("maximum messages"), "{message}");
}
