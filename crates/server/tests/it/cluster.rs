//! Jetway on a 3-node NATS cluster (jetway-testkit's `NatsCluster`): replicated streams and stores
//! through the API, a clear error when more replicas are asked for than there are nodes, and a Jetway
//! given every node's URL that carries on when the node under it dies.

use std::time::Duration;

use async_nats::jetstream;
use jetway_api::{
    jetway::state::v1::{EnsureStoreRequest, state_service_client::StateServiceClient},
    windshift::events::v1alpha1::{
        ensure_stream_request::Storage, events_service_client::EventsServiceClient,
    },
};
use jetway_testkit::{NatsCluster, eventually_within};
use tonic::Code;

use crate::harness::{TestServer, http_status, publish_request, stream_request};

/// Leader elections after a node dies take seconds; this bounds each wait for one.
const ELECTION: Duration = Duration::from_secs(60);

fn replicated(
    name: &str,
    subjects: &[&str],
    replicas: u32,
) -> jetway_api::windshift::events::v1alpha1::EnsureStreamRequest {
    let mut request = stream_request(name, subjects);
    request.storage = Some(Storage {
        replicas: Some(replicas),
        ..Default::default()
    });
    request
}

async fn direct(cluster: &NatsCluster) -> jetstream::Context {
    jetstream::new(
        async_nats::connect(
            cluster
                .urls()
                .split(',')
                .map(|url| url.parse().expect("a node URL"))
                .collect::<Vec<async_nats::ServerAddr>>(),
        )
        .await
        .expect("direct connection to the cluster"),
    )
}

/// EnsureStream and EnsureStore with three replicas place them on all three nodes; five replicas on
/// three nodes is FAILED_PRECONDITION naming `storage.replicas`, with NATS's reason.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_are_placed_on_the_cluster_and_too_many_are_refused_by_name() {
    let cluster = NatsCluster::start(3);
    let jetway = TestServer::builder().nats_url(cluster.urls()).start().await;
    let mut events = EventsServiceClient::new(jetway.channel().await);
    let js = direct(&cluster).await;

    events
        .ensure_stream(replicated("orders", &["orders.>"], 3))
        .await
        .expect("an R3 stream");
    let info = js.get_stream("orders").await.unwrap().cached_info().clone();
    assert_eq!(info.config.num_replicas, 3);
    let placement = info.cluster.expect("cluster info");
    assert_eq!(placement.replicas.len(), 2, "a leader and two followers");
    let id = events
        .publish_event(publish_request("orders.created", "one"))
        .await
        .expect("publish to the R3 stream")
        .into_inner()
        .id;
    assert_eq!(id, 1);

    let status = events
        .ensure_stream(replicated("wide", &["wide.>"], 5))
        .await
        .expect_err("five replicas on three nodes");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with("storage.replicas: "),
        "{status:?}"
    );
    assert!(status.message().contains("5"), "{status:?}");
    assert!(
        status.message().contains("no suitable peers"),
        "NATS's reason: {status:?}"
    );

    let mut state = StateServiceClient::new(jetway.channel().await);
    state
        .ensure_store(EnsureStoreRequest {
            store: "config".into(),
            replicas: Some(3),
            ..Default::default()
        })
        .await
        .expect("an R3 store");
    let store = js
        .get_stream("KV_config")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(store.config.num_replicas, 3);
    let status = state
        .ensure_store(EnsureStoreRequest {
            store: "wide".into(),
            replicas: Some(4),
            ..Default::default()
        })
        .await
        .expect_err("four replicas on three nodes");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().starts_with("replicas: "), "{status:?}");
    assert!(status.message().contains("no suitable peers"), "{status:?}");
}

/// With every node in `NATS_URL`, Jetway publishes on through the death of each node in turn (one at
/// a time, so the R3 stream keeps its quorum): whichever node it was connected to, it fails over.
#[tokio::test(flavor = "multi_thread")]
async fn jetway_fails_over_between_the_nodes_of_its_nats_url() {
    let mut cluster = NatsCluster::start(3);
    let jetway = TestServer::builder().nats_url(cluster.urls()).start().await;
    let mut events = EventsServiceClient::new(jetway.channel().await);
    events
        .ensure_stream(replicated("orders", &["orders.>"], 3))
        .await
        .expect("an R3 stream");

    let mut acknowledged = Vec::new();
    for node in 0..cluster.size() {
        cluster.kill(node);
        let id = eventually_within(
            &format!("a publish succeeds with node {} down", cluster.name(node)),
            ELECTION,
            || {
                let mut events = events.clone();
                async move {
                    let mut request = publish_request("orders.created", "during");
                    // The same key on every try: a retried publish that did land is not stored twice.
                    request.idempotency_key = Some(format!("down-{node}"));
                    events
                        .publish_event(request)
                        .await
                        .ok()
                        .map(|r| r.into_inner().id)
                }
            },
        )
        .await;
        acknowledged.push(id);
        cluster.restart(node);
    }

    let js = direct(&cluster).await;
    let stream = js.get_stream("orders").await.unwrap();
    for id in acknowledged {
        let message = stream.get_raw_message(id).await;
        assert!(
            message.is_ok(),
            "acknowledged event {id} is stored: {message:?}"
        );
    }
    assert_eq!(
        stream.cached_info().state.messages,
        3,
        "each publish stored once"
    );
}

/// Readiness follows this replica, not the JetStream meta leader: while the cluster elects a new meta
/// leader after its node dies (no account-info request is answered meanwhile, but existing streams
/// take publishes again), a Jetway on another node stays ready, and it publishes on.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_holds_through_a_meta_leader_election() {
    let mut cluster = NatsCluster::start(3);
    let meta = eventually_within("a meta leader", ELECTION, || {
        let leader = cluster.meta_leader();
        async move { leader }
    })
    .await;
    let home = (meta + 1) % cluster.size();
    let jetway = TestServer::builder()
        .nats_url(cluster.url(home))
        .start()
        .await;
    let mut events = EventsServiceClient::new(jetway.channel().await);
    events
        .ensure_stream(replicated("orders", &["orders.>"], 3))
        .await
        .expect("an R3 stream");
    assert_eq!(http_status(jetway.health_addr(), "/readyz").await, 200);

    cluster.kill(meta);
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    eventually_within("a new meta leader", ELECTION, || {
        let leader = cluster.meta_leader();
        let health = jetway.health_addr();
        let answers = answers.clone();
        async move {
            let status = http_status(health, "/readyz").await;
            answers.lock().unwrap().push(status);
            leader
        }
    })
    .await;
    let answers = answers.lock().unwrap().clone();
    assert!(answers.len() > 1, "readiness was asked during the election");
    assert!(
        answers.iter().all(|&status| status == 200),
        "/readyz during the election: {answers:?}"
    );
    eventually_within("a publish after the election", ELECTION, || {
        let mut events = events.clone();
        async move {
            let mut request = publish_request("orders.created", "after");
            request.idempotency_key = Some("after-election".into());
            events.publish_event(request).await.ok()
        }
    })
    .await;
    assert_eq!(http_status(jetway.health_addr(), "/readyz").await, 200);
}
