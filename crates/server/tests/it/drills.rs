//! Fault drills on a 3-node NATS cluster with R3 streams: a fault strikes while events flow through
//! Jetway, and the drill counts what was acknowledged, what is stored, what was lost (must be none),
//! the duplicates delivered, and the longest time without progress. Each prints its figures on
//! stderr, uncaptured, so CI logs keep them.
//!
//! - D1: the stream leader is killed (kill -9) while idempotent events are published at full speed;
//!   publishers retry failures with the same idempotency key.
//! - D2: one of two jetway-server processes serving one durable consumer is killed (kill -9) while
//!   its session holds events; they are redelivered to the other's session.
//! - D3: two jetway-server processes are restarted one at a time (SIGTERM) while SDK clients given
//!   both endpoints publish and consume.
//! - D4: the link between Jetway and its NATS node is down for 10 s while a session consumes.
//! - D5: the stream leader steps down while a session consumes.
//! - D6: every node of a cluster syncing each write (`sync_interval: always`) is killed at once
//!   and restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use futures::StreamExt;
use jetway_api::windshift::events::v1alpha1::{
    EnsureStreamRequest, ensure_stream_request::Storage, events_request,
    events_response::Response as Resp, events_service_client::EventsServiceClient,
    stream_pointer::Pointer,
};
use jetway_testkit::{ClusterOptions, NatsCluster, TcpProxy, eventually_within};
use tokio::task::JoinSet;
use tonic::{Status, transport::Channel};

use crate::harness::{
    EnsureConsumer, JetwayProcess, Session, TestServer, http_status, publish_request, set_up,
    stream_request,
};

/// Leader elections after a node dies take seconds; this bounds each wait for one.
const ELECTION: Duration = Duration::from_secs(60);

/// The processing timeout of a consume drill's consumer, unless the drill is about it.
const PROCESSING_TIMEOUT: Duration = Duration::from_secs(5);

/// A drill's figures, written to stderr past the test harness's capture.
fn report(drill: &str, figures: &[(&str, String)]) {
    let line = figures
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    // On a line of its own: with one test thread, the harness has just written `test <name> ... `.
    let _ = writeln!(std::io::stderr(), "\ndrill {drill}: {line}");
}

fn r3(name: &str, subjects: &[&str]) -> EnsureStreamRequest {
    let mut request = stream_request(name, subjects);
    request.storage = Some(Storage {
        replicas: Some(3),
        ..Default::default()
    });
    request
}

/// A direct JetStream context on every node of `cluster`, to check what is stored.
/// Ensures the drills' R3 stream `drill`, asking again while Jetway answers UNAVAILABLE (see
/// [`set_up`]).
async fn ensure_r3(client: &EventsServiceClient<Channel>) {
    set_up("an R3 stream", ELECTION, || {
        let mut client = client.clone();
        async move { client.ensure_stream(r3("drill", &["drill.>"])).await }
    })
    .await;
}

async fn direct(cluster: &NatsCluster) -> jetstream::Context {
    let servers: Vec<async_nats::ServerAddr> = cluster
        .urls()
        .split(',')
        .map(|url| url.parse().expect("a node URL"))
        .collect();
    jetstream::new(
        async_nats::connect(servers)
            .await
            .expect("connect to the cluster"),
    )
}

/// Every stored event of `stream` by sequence, with its idempotency key (`Nats-Msg-Id`).
async fn stored(js: &jetstream::Context, stream: &str) -> BTreeMap<u64, String> {
    let stream = js.get_stream(stream).await.expect("the stream");
    let expected = stream.cached_info().state.messages;
    let consumer = stream
        .create_consumer(OrderedConfig::default())
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut stored = BTreeMap::new();
    while (stored.len() as u64) < expected {
        let message = tokio::time::timeout(ELECTION, messages.next())
            .await
            .expect("the next stored event in time")
            .expect("the stream goes on")
            .expect("a message");
        let key = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Msg-Id"))
            .map(|key| key.to_string())
            .unwrap_or_default();
        stored.insert(
            message.info().expect("JetStream metadata").stream_sequence,
            key,
        );
    }
    stored
}

/// The longest time between two consecutive instants.
fn longest_gap(mut instants: Vec<Instant>) -> Duration {
    instants.sort();
    instants
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default()
}

/// What a run of idempotent publishes saw.
#[derive(Default)]
struct Published {
    /// The id each key was acknowledged with.
    acked: BTreeMap<u64, u64>,
    /// When each acknowledgement arrived.
    at: Vec<Instant>,
    /// Failed tries, each retried with the same key.
    failures: u64,
}

/// Publishes keys `0..total` to `subject` with `publishers` concurrent callers, each retrying a
/// failed publish with the same idempotency key until it is acknowledged (for at most a minute).
async fn publish_idempotently(
    channel: Channel,
    subject: &str,
    prefix: &str,
    total: u64,
    publishers: u64,
    published: Arc<Mutex<Published>>,
) {
    let mut tasks = JoinSet::new();
    for publisher in 0..publishers {
        let mut client = EventsServiceClient::new(channel.clone());
        let published = published.clone();
        let (subject, prefix) = (subject.to_owned(), prefix.to_owned());
        tasks.spawn(async move {
            for key in (publisher..total).step_by(publishers as usize) {
                let deadline = Instant::now() + ELECTION;
                loop {
                    let mut request = publish_request(&subject, &format!("event {key}"));
                    request.idempotency_key = Some(format!("{prefix}-{key}"));
                    match client.publish_event(request).await {
                        Ok(response) => {
                            let mut published = published.lock().unwrap();
                            published.acked.insert(key, response.into_inner().id);
                            published.at.push(Instant::now());
                            break;
                        }
                        Err(status) => {
                            assert!(
                                Instant::now() < deadline,
                                "key {key} never published: {status:?}"
                            );
                            published.lock().unwrap().failures += 1;
                            // A publisher's retry pause, not a test's wait for a condition.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("a publisher");
    }
}

/// D1: 10,000 idempotent publishes through Jetway at full speed; the stream leader is killed (kill
/// -9) a quarter of the way in and comes back after. Exactly 10,000 are stored, every acknowledged
/// one among them.
#[tokio::test(flavor = "multi_thread")]
async fn d1_stream_leader_killed_under_idempotent_publishing() {
    const TOTAL: u64 = 10_000;
    let mut cluster = NatsCluster::start(3);
    let jetway = TestServer::builder().nats_url(cluster.urls()).start().await;
    let channel = jetway.channel().await;
    ensure_r3(&EventsServiceClient::new(channel.clone())).await;
    let leader = eventually_within("the stream has a leader", ELECTION, || {
        let leader = cluster.stream_leader("drill");
        async move { leader }
    })
    .await;

    let published = Arc::new(Mutex::new(Published::default()));
    let publishing = tokio::spawn(publish_idempotently(
        channel,
        "drill.e",
        "d1",
        TOTAL,
        16,
        published.clone(),
    ));
    eventually_within("a quarter is acknowledged", ELECTION, || {
        let quarter = published.lock().unwrap().acked.len() as u64 >= TOTAL / 4;
        async move { quarter.then_some(()) }
    })
    .await;
    cluster.kill(leader);
    publishing.await.expect("the publishers");
    cluster.restart(leader);

    let js = direct(&cluster).await;
    let stored = stored(&js, "drill").await;
    let published = published.lock().unwrap();
    let lost: Vec<_> = published
        .acked
        .iter()
        .filter(|(key, id)| stored.get(id) != Some(&format!("d1-{key}")))
        .collect();
    let keys: BTreeSet<&String> = stored.values().collect();
    report(
        "D1",
        &[
            ("acknowledged", published.acked.len().to_string()),
            ("stored", stored.len().to_string()),
            ("lost", lost.len().to_string()),
            ("duplicates", (stored.len() - keys.len()).to_string()),
            ("failed_tries", published.failures.to_string()),
            (
                "longest_recovery",
                format!("{:?}", longest_gap(published.at.clone())),
            ),
        ],
    );
    assert_eq!(published.acked.len() as u64, TOTAL);
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert_eq!(stored.len() as u64, TOTAL, "each event stored exactly once");
    assert_eq!(keys.len() as u64, TOTAL);
}

/// One event a session received.
struct Delivery {
    id: u64,
    /// 1 for a first delivery, more for a redelivery.
    attempt: u64,
    at: Instant,
}

/// What one session of a consume drill has seen, shared with the fault running beside it.
#[derive(Default)]
struct Consumed {
    /// Every delivery, in order.
    deliveries: Vec<Delivery>,
    /// The ids whose acknowledgement the session confirmed.
    acked: BTreeSet<u64>,
}

/// Consumes from `session`, recording what it sees in `seen`, until `done` holds for it. An event
/// is acknowledged on arrival if `ack` holds for what has been seen with it; the others are held,
/// as a busy worker holds them. Returns the status the session ended with, if it ends first.
async fn consume(
    session: &mut Session,
    seen: &Mutex<Consumed>,
    ack: impl Fn(&Consumed) -> bool,
    done: impl Fn(&Consumed) -> bool,
) -> Result<(), Status> {
    let deadline = Instant::now() + ELECTION * 2;
    loop {
        {
            let seen = seen.lock().unwrap();
            if done(&seen) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "stuck: {} delivered, {} acked",
                seen.deliveries.len(),
                seen.acked.len()
            );
        }
        let response = tokio::time::timeout(ELECTION, session.try_next())
            .await
            .expect("the session moves on")?
            .ok_or_else(|| Status::unavailable("the events stream ended"))?;
        match response {
            Resp::Event(event) => {
                let acking = {
                    let mut seen = seen.lock().unwrap();
                    seen.deliveries.push(Delivery {
                        id: event.id,
                        attempt: event.delivery_attempt,
                        at: Instant::now(),
                    });
                    ack(&seen)
                };
                if acking {
                    session
                        .send(events_request::Request::Ack(events_request::Ack {
                            ids: vec![event.id],
                        }))
                        .await;
                }
            }
            Resp::AckConfirmation(confirmation) => {
                seen.lock().unwrap().acked.extend(confirmation.ids)
            }
            _ => {}
        }
    }
}

/// Consumes from `session` until every id in `expected` has been acknowledged, acking each event as
/// it arrives and recording it in `seen`, for a fault running alongside to wait on. Returns the
/// longest time without a delivery.
async fn consume_all(
    session: &mut Session,
    expected: &BTreeSet<u64>,
    seen: &Mutex<Consumed>,
) -> Duration {
    let start = Instant::now();
    consume(
        session,
        seen,
        |_| true,
        |seen| expected.is_subset(&seen.acked),
    )
    .await
    .expect("the session goes on");
    let seen = seen.lock().unwrap();
    longest_gap(
        std::iter::once(start)
            .chain(seen.deliveries.iter().map(|delivery| delivery.at))
            .collect(),
    )
}

/// Waits until `seen` holds `count` deliveries: when a fault running beside [`consume_all`] strikes.
async fn after_deliveries(seen: &Mutex<Consumed>, count: usize) {
    eventually_within("enough deliveries before the fault", ELECTION, || {
        let reached = seen.lock().unwrap().deliveries.len() >= count;
        async move { reached.then_some(()) }
    })
    .await;
}

/// How many events `stream` holds, read directly from the cluster.
async fn event_count(js: &jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("the stream");
    stream.info().await.expect("stream info").state.messages
}

/// Sets up a consume drill: an R3 stream `drill`, a durable consumer `worker` with
/// `processing_timeout`, the first half of `total` events published, and a session subscribed. The
/// drill's fault publishes the second half with [`publish_second_half`], so the session consumes
/// across the fault.
async fn consume_drill(channel: &Channel, total: u64, processing_timeout: Duration) -> Session {
    let mut client = EventsServiceClient::new(channel.clone());
    ensure_r3(&client).await;
    EnsureConsumer::on(&mut client, "drill")
        .named("worker")
        .subjects(&["drill.>"])
        .from(Pointer::Start(true))
        .timeout(processing_timeout)
        .ensure_within(ELECTION)
        .await;
    let published = Arc::default();
    publish_idempotently(channel.clone(), "drill.e", "first", total / 2, 4, published).await;
    // Opening the subscription reads the R3 consumer, which can time out like its setup.
    set_up("a subscribed session", ELECTION, || {
        let mut client = client.clone();
        async move {
            let (session, first) = Session::subscribe(&mut client, "drill", "worker")
                .max(50)
                .raw()
                .await;
            match first? {
                Some(Resp::Subscribed(_)) => Ok::<_, Status>(session),
                other => panic!("expected Subscribed, got {other:?}"),
            }
        }
    })
    .await
}

/// Publishes the second half of a consume drill's events, retrying through the fault.
async fn publish_second_half(channel: &Channel, total: u64) {
    let published = Arc::default();
    publish_idempotently(
        channel.clone(),
        "drill.e",
        "second",
        total - total / 2,
        4,
        published,
    )
    .await;
}

/// D5: the stream leader steps down while a session consumes a durable consumer: every event is
/// acknowledged, none is lost, and the session does not get stuck.
#[tokio::test(flavor = "multi_thread")]
async fn d5_stream_leader_steps_down_during_consume() {
    const TOTAL: u64 = 1_000;
    let cluster = NatsCluster::start(3);
    let jetway = TestServer::builder().nats_url(cluster.urls()).start().await;
    let channel = jetway.channel().await;
    let mut session = consume_drill(&channel, TOTAL, PROCESSING_TIMEOUT).await;
    // A fresh stream: the ids are the stream sequences 1 to TOTAL, each event stored once.
    let expected: BTreeSet<u64> = (1..=TOTAL).collect();

    let seen = Mutex::default();
    let step_down = async {
        after_deliveries(&seen, TOTAL as usize / 4).await;
        eventually_within("the stream has a leader", ELECTION, || {
            let leader = cluster.stream_leader("drill");
            async move { leader }
        })
        .await;
        cluster.step_down("drill");
        publish_second_half(&channel, TOTAL).await;
    };
    let (longest, ()) = tokio::join!(consume_all(&mut session, &expected, &seen), step_down);
    let deliveries = seen.lock().unwrap().deliveries.len() as u64;
    let stored = event_count(&direct(&cluster).await, "drill").await;
    report(
        "D5",
        &[
            ("acknowledged", expected.len().to_string()),
            ("stored", stored.to_string()),
            ("lost", TOTAL.saturating_sub(stored).to_string()),
            ("duplicates", (deliveries - TOTAL).to_string()),
            ("longest_recovery", format!("{longest:?}")),
        ],
    );
    assert_eq!(stored, TOTAL);
}

/// D4: Jetway reaches the NATS nodes through links, and the link it is connected through goes down
/// for 10 s (connections through it cut and refused): Jetway reconnects through another node, the
/// session resumes, and nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn d4_the_link_to_the_nats_node_is_down_for_10_s() {
    const TOTAL: u64 = 600;
    let cluster = NatsCluster::start(3);
    let mut links = Vec::new();
    for node in 0..cluster.size() {
        links.push(TcpProxy::start(cluster.port(node)).await);
    }
    let urls: Vec<String> = links.iter().map(TcpProxy::url).collect();
    let jetway = TestServer::builder().nats_url(urls.join(",")).start().await;
    let channel = jetway.channel().await;
    let mut session = consume_drill(&channel, TOTAL, PROCESSING_TIMEOUT).await;
    // A fresh stream: the ids are the stream sequences 1 to TOTAL, each event stored once.
    let expected: BTreeSet<u64> = (1..=TOTAL).collect();
    let link = links
        .iter()
        .position(|link| link.accepted() > 0)
        .expect("Jetway is connected through one link");

    let health = jetway.health_addr();
    let unready = Arc::new(Mutex::new(0));
    let seen = Mutex::default();
    let outage = async {
        after_deliveries(&seen, TOTAL as usize / 4).await;
        let down_since = Instant::now();
        links[link].block();
        eventually_within("Jetway reconnects through another link", ELECTION, || {
            let other = links
                .iter()
                .enumerate()
                .any(|(i, other)| i != link && other.accepted() > 0);
            async move { other.then_some(()) }
        })
        .await;
        eventually_within("readiness is up through another node", ELECTION, || {
            let unready = unready.clone();
            async move {
                let status = http_status(health, "/readyz").await;
                if status != 200 {
                    *unready.lock().unwrap() += 1;
                }
                (status == 200).then_some(())
            }
        })
        .await;
        publish_second_half(&channel, TOTAL).await;
        // The link stays down for 10 s in all, while the session goes on through another node.
        tokio::time::sleep(Duration::from_secs(10).saturating_sub(down_since.elapsed())).await;
        links[link].unblock();
    };
    let (longest, ()) = tokio::join!(consume_all(&mut session, &expected, &seen), outage);
    let deliveries = seen.lock().unwrap().deliveries.len() as u64;
    let stored = event_count(&direct(&cluster).await, "drill").await;
    report(
        "D4",
        &[
            ("acknowledged", expected.len().to_string()),
            ("stored", stored.to_string()),
            ("lost", TOTAL.saturating_sub(stored).to_string()),
            ("duplicates", (deliveries - TOTAL).to_string()),
            ("unready_answers", unready.lock().unwrap().to_string()),
            ("longest_recovery", format!("{longest:?}")),
        ],
    );
    assert_eq!(stored, TOTAL);
    assert_eq!(http_status(health, "/readyz").await, 200);
}

/// D2: two jetway-server processes serve one durable consumer with a 2 s processing timeout, with
/// an Events session on each. One session acknowledges its first events and then holds the rest,
/// and its Jetway is killed (kill -9): every event is acknowledged at least once, none is lost, and
/// the held events are redelivered to the surviving session once the processing timeout has passed.
#[tokio::test(flavor = "multi_thread")]
async fn d2_a_jetway_process_is_killed_mid_consume() {
    const TOTAL: u64 = 1_000;
    /// How many events the doomed session acknowledges before it holds the rest.
    const ACKED_FIRST: usize = 20;
    /// How many events, at least, it holds when its Jetway is killed.
    const HELD: usize = 10;
    let cluster = NatsCluster::start(3);
    let mut doomed = JetwayProcess::spawn(&cluster.urls()).await;
    let survivor = JetwayProcess::spawn(&cluster.urls()).await;
    let channel = survivor.channel().await;
    let mut doomed_session =
        consume_drill(&doomed.channel().await, TOTAL, Duration::from_secs(2)).await;
    let mut survivor_session = Session::subscribe(
        &mut EventsServiceClient::new(channel.clone()),
        "drill",
        "worker",
    )
    .max(50)
    .await;
    // A fresh stream: the ids are the stream sequences 1 to TOTAL, each event stored once.
    let expected: BTreeSet<u64> = (1..=TOTAL).collect();

    let doomed_seen = Mutex::<Consumed>::default();
    let survivor_seen = Mutex::<Consumed>::default();
    let doomed_consumes = async {
        let ended = consume(
            &mut doomed_session,
            &doomed_seen,
            |seen| seen.deliveries.len() <= ACKED_FIRST,
            |_| false,
        )
        .await;
        ended.expect_err("the session ends with its Jetway");
    };
    let survivor_consumes = async {
        let start = Instant::now();
        let all_acked = |seen: &Consumed| {
            let doomed = doomed_seen.lock().unwrap();
            expected
                .iter()
                .all(|id| seen.acked.contains(id) || doomed.acked.contains(id))
        };
        consume(&mut survivor_session, &survivor_seen, |_| true, all_acked)
            .await
            .expect("the surviving session goes on");
        start
    };
    let fault = async {
        eventually_within("the doomed session holds events", ELECTION, || {
            let seen = doomed_seen.lock().unwrap();
            let holding =
                seen.acked.len() == ACKED_FIRST && seen.deliveries.len() >= ACKED_FIRST + HELD;
            async move { holding.then_some(()) }
        })
        .await;
        doomed.kill();
        let killed_at = Instant::now();
        publish_second_half(&channel, TOTAL).await;
        killed_at
    };
    let ((), start, killed_at) = tokio::join!(doomed_consumes, survivor_consumes, fault);

    let doomed_seen = doomed_seen.into_inner().unwrap();
    let survivor_seen = survivor_seen.into_inner().unwrap();
    let held: BTreeSet<u64> = doomed_seen
        .deliveries
        .iter()
        .map(|delivery| delivery.id)
        .filter(|id| !doomed_seen.acked.contains(id))
        .collect();
    let acked: BTreeSet<u64> = doomed_seen
        .acked
        .union(&survivor_seen.acked)
        .copied()
        .collect();
    let redelivered: Vec<&Delivery> = survivor_seen
        .deliveries
        .iter()
        .filter(|delivery| delivery.attempt > 1)
        .collect();
    // When the survivor first received each held event after the kill.
    let held_back_after = held
        .iter()
        .filter_map(|id| {
            redelivered
                .iter()
                .find(|delivery| delivery.id == *id)
                .map(|delivery| delivery.at - killed_at)
        })
        .max()
        .unwrap_or_default();
    let deliveries = doomed_seen.deliveries.len() + survivor_seen.deliveries.len();
    let js = direct(&cluster).await;
    let stored = event_count(&js, "drill").await;
    report(
        "D2",
        &[
            ("acknowledged", acked.len().to_string()),
            ("stored", stored.to_string()),
            ("lost", expected.difference(&acked).count().to_string()),
            ("duplicates", (deliveries as u64 - TOTAL).to_string()),
            ("held_by_the_killed_jetway", held.len().to_string()),
            ("redelivered_to_the_survivor", redelivered.len().to_string()),
            ("held_redelivered_after", format!("{held_back_after:?}")),
            (
                "longest_recovery",
                format!(
                    "{:?}",
                    longest_gap(
                        std::iter::once(start)
                            .chain(survivor_seen.deliveries.iter().map(|delivery| delivery.at))
                            .collect()
                    )
                ),
            ),
        ],
    );
    assert_eq!(acked, expected);
    assert_eq!(stored, TOTAL);
    assert!(held.len() >= HELD, "{held:?}");
    let not_back: Vec<&u64> = held
        .iter()
        .filter(|id| {
            !survivor_seen.acked.contains(id)
                || !redelivered.iter().any(|delivery| delivery.id == **id)
        })
        .collect();
    assert!(
        not_back.is_empty(),
        "held by the killed Jetway, not redelivered to the survivor and acknowledged there: \
         {not_back:?}"
    );
    // NATS agrees: the durable consumer has nothing left to deliver or to wait for.
    let consumer = js
        .get_stream("drill")
        .await
        .expect("the stream")
        .get_consumer::<jetstream::consumer::pull::Config>("worker")
        .await
        .expect("the consumer");
    eventually_within("the consumer's ack floor reaches the end", ELECTION, || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.ok()?;
            (info.ack_floor.stream_sequence == TOTAL && info.num_ack_pending == 0).then_some(())
        }
    })
    .await;
}

/// D6: events are published through Jetway to an R3 stream on a cluster whose nodes sync every
/// write (`sync_interval: always`), every node is killed (kill -9) at once, and all are started
/// again: every acknowledged event is stored exactly once, and publishing through the same Jetway
/// resumes.
#[tokio::test(flavor = "multi_thread")]
async fn d6_the_whole_cluster_is_killed_and_restarted() {
    const BEFORE: u64 = 2_000;
    const AFTER: u64 = 100;
    let options = ClusterOptions {
        sync_interval: Some("always".into()),
    };
    let mut cluster = NatsCluster::start_with(3, &options);
    let jetway = TestServer::builder().nats_url(cluster.urls()).start().await;
    let channel = jetway.channel().await;
    ensure_r3(&EventsServiceClient::new(channel.clone())).await;
    let before = Arc::new(Mutex::new(Published::default()));
    publish_idempotently(
        channel.clone(),
        "drill.e",
        "before",
        BEFORE,
        8,
        before.clone(),
    )
    .await;

    cluster.kill_all();
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| cluster.start_stopped());
    let restarted_in = killed_at.elapsed();
    let after = Arc::new(Mutex::new(Published::default()));
    publish_idempotently(channel, "drill.e", "after", AFTER, 8, after.clone()).await;

    let stored = stored(&direct(&cluster).await, "drill").await;
    let (before, after) = (before.lock().unwrap(), after.lock().unwrap());
    let lost: Vec<String> = [("before", &before), ("after", &after)]
        .iter()
        .flat_map(|(prefix, published)| {
            published
                .acked
                .iter()
                .map(move |(key, id)| (format!("{prefix}-{key}"), id))
        })
        .filter(|(key, id)| stored.get(id) != Some(key))
        .map(|(key, _)| key)
        .collect();
    let keys: BTreeSet<&String> = stored.values().collect();
    let first_after = after.at.iter().min().copied().expect("an acknowledgement");
    report(
        "D6",
        &[
            (
                "acknowledged",
                (before.acked.len() + after.acked.len()).to_string(),
            ),
            ("stored", stored.len().to_string()),
            ("lost", lost.len().to_string()),
            ("duplicates", (stored.len() - keys.len()).to_string()),
            ("cluster_healthy_after", format!("{restarted_in:?}")),
            ("longest_recovery", format!("{:?}", first_after - killed_at)),
        ],
    );
    assert_eq!(before.acked.len() as u64, BEFORE);
    assert_eq!(after.acked.len() as u64, AFTER);
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert_eq!(
        stored.len() as u64,
        BEFORE + AFTER,
        "each event stored once"
    );
    assert_eq!(keys.len(), stored.len());
}

/// What drill D3's SDK publishers saw.
#[derive(Default)]
struct SdkPublished {
    /// The id of each acknowledged publish.
    acked: BTreeSet<u64>,
    /// When each acknowledgement arrived.
    at: Vec<Instant>,
    /// The errors the application saw (must stay empty).
    failed: Vec<String>,
    /// Set once every publisher has stopped.
    done: bool,
}

/// Where drill D3 stands, and what it has seen so far: written to stderr if the drill panics
/// before its report, so a failure says in which phase it came and what the SDK had seen.
struct D3Scene<'a> {
    phase: &'a Mutex<String>,
    published: &'a Mutex<SdkPublished>,
    seen: &'a Mutex<Consumed>,
    /// Events whose ack the SDK could not confirm (see `consuming` in the drill).
    unsure: &'a Mutex<BTreeSet<u64>>,
}

impl D3Scene<'_> {
    fn phase(&self) -> String {
        self.phase
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The phase and the figures so far, on one line.
    fn describe(&self) -> String {
        let published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let unsure = self.unsure.lock().unwrap_or_else(PoisonError::into_inner);
        let missing: Vec<&u64> = published
            .acked
            .iter()
            .filter(|id| !seen.acked.contains(id) && !unsure.contains(id))
            .collect();
        format!(
            "phase: {}; publishes acknowledged: {}, failed: {} (first: {:?}); deliveries: {}, \
             acked by the subscriber: {}, acks with an unknown outcome: {}; acknowledged \
             publishes not yet acked by the subscriber: {} (first: {:?})",
            self.phase(),
            published.acked.len(),
            published.failed.len(),
            published.failed.iter().take(3).collect::<Vec<_>>(),
            seen.deliveries.len(),
            seen.acked.len(),
            unsure.len(),
            missing.len(),
            missing.iter().take(10).collect::<Vec<_>>(),
        )
    }
}

impl Drop for D3Scene<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "\ndrill D3 failed before its report; {}",
                self.describe()
            );
        }
    }
}

/// D3: a rolling restart of two jetway-server processes (the real binary), each stopped with
/// SIGTERM and started again on the same ports once it has exited, one at a time, while SDK clients
/// given both endpoints publish (with generated idempotency keys and the default retry policy) and
/// consume a durable consumer. The application sees no failed publish and no lost event: every
/// publish returns Ok, every published event is acknowledged by the subscriber at least once, and
/// the stream holds each exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn d3_rolling_restart_of_jetway_under_sdk_load() {
    use jetway_api::windshift::test::v1::StringValue;
    use jetway_client::{Client, ConsumerOptions, SettleError, StartPosition, StreamOptions};

    /// Concurrent publishers.
    const PUBLISHERS: u64 = 4;
    /// Acknowledged publishes before the first restart, between the two, and after the second.
    const BETWEEN: usize = 300;

    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let mut jetways = [
        JetwayProcess::spawn(&urls).await,
        JetwayProcess::spawn(&urls).await,
    ];
    let endpoints: Vec<String> = jetways
        .iter()
        .map(|jetway| format!("http://{}", jetway.grpc_addr))
        .collect();
    let client = Client::connect_many(endpoints.clone())
        .await
        .expect("the SDK connects");
    let stream = StreamOptions::new("drill")
        .subjects(["drill.>"])
        .replicas(3);
    set_up("an R3 stream", ELECTION, || {
        let (client, stream) = (&client, &stream);
        async move { client.streams().ensure(stream).await }
    })
    .await;
    let consumer = ConsumerOptions::durable("worker")
        .subject("drill.>")
        .from(StartPosition::Start)
        .processing_timeout(PROCESSING_TIMEOUT);
    set_up("a durable consumer", ELECTION, || {
        let (client, consumer) = (&client, &consumer);
        async move { client.consumers().ensure("drill", consumer).await }
    })
    .await;
    let mut events = set_up("a subscription", ELECTION, || {
        let client = &client;
        async move { client.subscribe("drill", "worker").await }
    })
    .await;
    let js = direct(&cluster).await;

    let published = Arc::new(Mutex::new(SdkPublished::default()));
    let seen = Mutex::<Consumed>::default();
    let unsure = Mutex::<BTreeSet<u64>>::default();
    let phase = Mutex::new(String::from("publishing before the first restart"));
    let scene = D3Scene {
        phase: &phase,
        published: &published,
        seen: &seen,
        unsure: &unsure,
    };
    let set_phase = |now: String| *phase.lock().unwrap() = now;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = JoinSet::new();
    for publisher in 0..PUBLISHERS {
        // Each publisher is its own application instance, with its own SDK client.
        let client = Client::connect_many(endpoints.clone())
            .await
            .expect("the SDK connects");
        let (published, stop) = (published.clone(), stop.clone());
        publishers.spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let event = StringValue {
                    value: format!("publisher {publisher} event {n}"),
                };
                let outcome = client.publish("drill.e", &event).await;
                let mut published = published.lock().unwrap();
                match outcome {
                    Ok(id) => {
                        published.acked.insert(id);
                        published.at.push(Instant::now());
                    }
                    Err(error) => published.failed.push(format!("{}: {error:?}", event.value)),
                }
                n += 1;
            }
        });
    }
    let publishing = {
        let published = published.clone();
        async move {
            while let Some(result) = publishers.join_next().await {
                result.expect("a publisher");
            }
            published.lock().unwrap().done = true;
        }
    };

    // Whether every event is acked on JetStream's side: nothing left to deliver or unacked.
    let consumer_drained = || async {
        let stream = js.get_stream("drill").await.expect("the stream");
        let info = stream.consumer_info("worker").await.expect("consumer info");
        (info.num_pending, info.num_ack_pending)
    };
    let consuming = async {
        let start = Instant::now();
        let deadline = start + ELECTION * 3;
        loop {
            let all_settled = {
                let published = published.lock().unwrap();
                let (seen, unsure) = (seen.lock().unwrap(), unsure.lock().unwrap());
                published.done
                    && published
                        .acked
                        .iter()
                        .all(|id| seen.acked.contains(id) || unsure.contains(id))
            };
            // An ack whose outcome is unknown either took effect or the event comes again: only
            // JetStream can tell which, so the drill ends once it has nothing left to deliver.
            if all_settled && consumer_drained().await == (0, 0) {
                return start;
            }
            assert!(
                Instant::now() < deadline,
                "the subscriber is stuck: after {:?}, {}",
                ELECTION * 3,
                scene.describe()
            );
            // Short slices, so that the end of publishing is noticed while nothing arrives.
            let Ok(event) = tokio::time::timeout(Duration::from_millis(100), events.next()).await
            else {
                continue;
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(error)) => panic!(
                    "the subscription ended with {error:?} (the SDK gave up on it); {}",
                    scene.describe()
                ),
                None => panic!(
                    "the subscription ended without an error (its task stopped); {}",
                    scene.describe()
                ),
            };
            let id = event.id();
            seen.lock().unwrap().deliveries.push(Delivery {
                id,
                attempt: event.delivery_attempt(),
                at: Instant::now(),
            });
            match event.ack().await {
                Ok(()) => {
                    seen.lock().unwrap().acked.insert(id);
                }
                // The connection broke after the ack may have been sent: if it took effect the
                // event never comes again, if not it is redelivered (at-least-once).
                Err(SettleError::ConnectionLost { .. }) => {
                    unsure.lock().unwrap().insert(id);
                }
                // Not held any more: it is redelivered.
                Err(_) => {}
            }
        }
    };

    let acked_at_least = |count: usize| {
        let published = published.clone();
        let what = format!("{count} publishes acknowledged ({})", scene.phase());
        async move {
            eventually_within(&what, ELECTION, || {
                let reached = published.lock().unwrap().acked.len() >= count;
                async move { reached.then_some(()) }
            })
            .await
        }
    };
    let rolling_restart = async {
        for (step, jetway) in jetways.iter_mut().enumerate() {
            acked_at_least((step + 1) * BETWEEN).await;
            let (grpc, health) = (jetway.grpc_addr.port(), jetway.health_addr.port());
            set_phase(format!("stopping jetway {step} (SIGTERM)"));
            let exit = jetway.terminate().await;
            if !exit.success() {
                panic!(
                    "jetway-server {step} exits 0 on SIGTERM, not {exit}; its log:\n{}",
                    jetway.rest_of_log().await.join("\n")
                );
            }
            set_phase(format!("starting jetway {step} again on its ports"));
            *jetway = JetwayProcess::spawn_on(&urls, grpc, health).await;
            set_phase(format!("publishing after jetway {step} restarted"));
        }
        acked_at_least(3 * BETWEEN).await;
        set_phase("publishers stopped, consuming the rest".into());
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let ((), start, ()) = tokio::join!(publishing, consuming, rolling_restart);
    drop(scene);

    let stored = stored(&js, "drill").await;
    let keys: BTreeSet<&String> = stored.values().collect();
    let published = published.lock().unwrap();
    let seen = seen.lock().unwrap();
    let unsure = unsure.lock().unwrap();
    let lost: Vec<&u64> = published
        .acked
        .iter()
        .filter(|id| !stored.contains_key(id) || !(seen.acked.contains(id) || unsure.contains(id)))
        .collect();
    let distinct: BTreeSet<u64> = seen.deliveries.iter().map(|delivery| delivery.id).collect();
    let longest_publish_pause = longest_gap(published.at.clone());
    let longest_delivery_pause = longest_gap(
        std::iter::once(start)
            .chain(seen.deliveries.iter().map(|delivery| delivery.at))
            .collect(),
    );
    report(
        "D3",
        &[
            ("acknowledged", published.acked.len().to_string()),
            ("stored", stored.len().to_string()),
            ("failed_publishes", published.failed.len().to_string()),
            ("lost", lost.len().to_string()),
            (
                "duplicates",
                (seen.deliveries.len() - distinct.len()).to_string(),
            ),
            ("acks_unconfirmed", unsure.len().to_string()),
            (
                "longest_publish_pause",
                format!("{longest_publish_pause:?}"),
            ),
            (
                "longest_delivery_pause",
                format!("{longest_delivery_pause:?}"),
            ),
        ],
    );
    assert!(
        published.failed.is_empty(),
        "the application saw failed publishes: {:?}",
        published.failed
    );
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    assert_eq!(
        stored.len(),
        published.acked.len(),
        "each event stored exactly once"
    );
    assert_eq!(keys.len(), stored.len(), "each idempotency key stored once");
    assert!(
        keys.iter().all(|key| !key.is_empty()),
        "every SDK publish carries a generated idempotency key"
    );
}
