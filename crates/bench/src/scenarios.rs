//! The measurements. Each runs on one of two paths against the same nats-server:
//!
//! - **direct**: async-nats, as an application that talks to JetStream itself;
//! - **Jetway**: gRPC to jetway-server, which talks to JetStream (the HTTP API's scenarios are in
//!   `http`).
//!
//! Both store the same message: the same body and the same Windshift headers (`WS-Data-Type`,
//! `WS-Published-Time`), so the difference is the gRPC hop and nothing else. Every round starts on a
//! fresh stream.

use std::{
    future::{Future, IntoFuture},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, pull},
        kv,
        message::PublishMessage,
        stream::{self, StorageType},
    },
};
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt, stream::FuturesUnordered};
use hdrhistogram::Histogram;
use jetway_api::{
    google::protobuf::Any,
    jetway::events::v1::{
        self as api, PublishStreamRequest, events_service_client::EventsServiceClient,
        publish_event_request, publish_result,
    },
    windshift::{
        events::v1alpha1::{
            Event, EventsRequest, events_request, events_response::Response as Resp,
            events_service_client::EventsServiceClient as WindshiftEventsClient,
        },
        state::v1alpha1::{GetRequest, SetRequest, state_service_client::StateServiceClient},
    },
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    Result,
    setup::{cpu_time, rss_bytes, wakeups},
    stats::{self, Cpu, Measure, Round},
};

/// The stream every round recreates.
pub(crate) const STREAM: &str = "BENCH";
/// The subject every event goes to.
pub(crate) const SUBJECT: &str = "bench.events";
/// The message type the events claim to be (`WS-Data-Type`).
const TYPE_NAME: &str = "jetway.bench.v1.Payload";
/// The key-value store of K1.
const STORE: &str = "bench";
/// Distinct keys K1 cycles through.
const KEYS: u64 = 100;
/// Requests buffered between a bench task and tonic.
const REQUEST_BUFFER: usize = 256;
/// The most event ids one Ack carries; the bench acks sooner when nothing more is ready.
const ACK_BATCH: usize = 256;
/// How long a round may wait for the last deliveries before it fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which path a round measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// async-nats to nats-server.
    Direct,
    /// gRPC to jetway-server.
    Jetway,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Direct => "direct",
            Path::Jetway => "jetway",
        })
    }
}

/// How much one round does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Amount {
    /// This many events or round trips.
    Count(u64),
    /// As many as fit in this time.
    For(Duration),
}

impl Amount {
    /// Whether to start another, after `done` since `start`.
    fn more(self, done: u64, start: Instant) -> bool {
        match self {
            Amount::Count(n) => done < n,
            Amount::For(time) => start.elapsed() < time,
        }
    }

    /// A duration for the scenarios that run open loop: the duration, or `count` at `rate`.
    pub(crate) fn as_duration(self, rate: f64) -> Duration {
        match self {
            Amount::For(time) => time,
            Amount::Count(n) => Duration::from_secs_f64(n as f64 / rate.max(1.0)),
        }
    }
}

/// The key-value operation of a K1 round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvOp {
    /// Read a key.
    Get,
    /// Write a key.
    Set,
}

/// Connections of their own for the growth curves: `nats` for the direct path, `jetway` for
/// Jetway's; an empty list means the bench's own connection.
#[derive(Default)]
pub(crate) struct Links {
    /// Direct connections to nats-server.
    pub nats: Vec<async_nats::Client>,
    /// gRPC channels to Jetway, each its own HTTP/2 connection.
    pub jetway: Vec<Transport>,
}

impl Links {
    /// `count` connections of each kind, opened `OPENING` at a time.
    pub(crate) async fn open(bench: &Bench, nats_url: &str, count: usize) -> Result<Links> {
        const OPENING: usize = 32;
        let mut links = Links::default();
        let mut opening = FuturesUnordered::new();
        for _ in 0..count {
            if opening.len() >= OPENING
                && let Some(opened) = opening.next().await
            {
                let (nats, jetway): (async_nats::Client, Channel) = opened?;
                links.nats.push(nats);
                links.jetway.push(plain(jetway));
            }
            opening.push(async {
                let nats = async_nats::connect(nats_url).await?;
                let jetway = connect(&bench.jetway_url).await?;
                Result::Ok((nats, jetway))
            });
        }
        while let Some(opened) = opening.next().await {
            let (nats, jetway) = opened?;
            links.nats.push(nats);
            links.jetway.push(plain(jetway));
        }
        Ok(links)
    }

    /// The bench's own connections, one of each.
    pub(crate) fn own(bench: &Bench) -> Links {
        Links {
            nats: vec![bench.nats.clone()],
            jetway: vec![bench.channel.clone()],
        }
    }
}

/// The connections and settings every scenario shares.
#[derive(Clone)]
pub(crate) struct Bench {
    /// The direct NATS connection.
    pub nats: async_nats::Client,
    /// The gRPC channel to Jetway; every call of a round shares it.
    pub channel: Transport,
    /// The plain server's channel as it is, for the SDK's scenario (P2s), which adds its own
    /// metadata and runs against the plain server only.
    pub sdk_channel: Channel,
    /// Stream and store storage.
    pub storage: StorageType,
    /// Event size, in bytes.
    pub size: usize,
    /// Replicas of the benchmark stream and store.
    pub replicas: usize,
    /// Process ids to read CPU time from.
    pub jetway_pid: Option<u32>,
    /// See `jetway_pid`.
    pub nats_pid: Option<u32>,
    /// Round trips run before a latency round starts recording.
    pub warmup: u64,
    /// Jetway's URL, for the extra connections of M1.
    pub jetway_url: String,
    /// The HTTP API's address (G1, G2), when the bench started jetway-server.
    pub http_addr: Option<std::net::SocketAddr>,
}

/// CPU times and wake-ups at the start of a round.
pub(crate) struct Mark {
    client: Option<Usage>,
    jetway: Option<Usage>,
    nats: Option<Usage>,
}

/// What a process has used so far.
#[derive(Clone, Copy)]
struct Usage {
    cpu: Duration,
    wakeups: u64,
}

impl Usage {
    fn of(pid: u32) -> Option<Usage> {
        Some(Usage {
            cpu: cpu_time(pid)?,
            wakeups: wakeups(pid)?,
        })
    }
}

impl Bench {
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            client: Usage::of(std::process::id()),
            jetway: self.jetway_pid.and_then(Usage::of),
            nats: self.nats_pid.and_then(Usage::of),
        }
    }

    /// CPU used and wake-ups since `mark`; `None` when a process could not be read.
    pub(crate) fn since(&self, mark: &Mark, path: Path) -> Option<Cpu> {
        let now = self.mark();
        let delta = |a: Option<Usage>, b: Option<Usage>| {
            let (a, b) = (a?, b?);
            Some(Usage {
                cpu: b.cpu.saturating_sub(a.cpu),
                wakeups: b.wakeups.saturating_sub(a.wakeups),
            })
        };
        let client = delta(mark.client, now.client)?;
        // The direct path does not use Jetway; its idle CPU is not charged to it.
        let jetway = match path {
            Path::Direct => Usage {
                cpu: Duration::ZERO,
                wakeups: 0,
            },
            Path::Jetway => delta(mark.jetway, now.jetway)?,
        };
        let nats = delta(mark.nats, now.nats)?;
        Some(Cpu {
            client: client.cpu,
            jetway: jetway.cpu,
            nats: nats.cpu,
            wakeups: [client.wakeups, jetway.wakeups, nats.wakeups],
        })
    }

    fn js(&self, max_ack_inflight: usize) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .max_ack_inflight(max_ack_inflight.max(1))
            .build(self.nats.clone())
    }

    /// Deletes and creates the benchmark stream, so every round starts empty.
    pub(crate) async fn reset_stream(&self) -> Result<stream::Stream> {
        let js = jetstream::new(self.nats.clone());
        // A missing stream is what we want; anything else shows up when creating it.
        js.delete_stream(STREAM).await.ok();
        Ok(js
            .create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["bench.>".into()],
                storage: self.storage,
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await?)
    }

    /// A durable pull consumer on the benchmark stream: explicit acks, `window` unacked at most.
    async fn consumer(
        &self,
        stream: &stream::Stream,
        name: &str,
        window: usize,
    ) -> Result<jetstream::consumer::PullConsumer> {
        Ok(stream
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                max_ack_pending: window as i64,
                ..Default::default()
            })
            .await?)
    }

    /// P1 and the scaling curves: publishing with `window` publishes in flight.
    pub(crate) async fn stream_publish(
        &self,
        path: Path,
        window: usize,
        size: usize,
        amount: Amount,
    ) -> Result<Round> {
        self.reset_stream().await?;
        let body = payload(size);
        let mark = self.mark();
        let start = Instant::now();
        let sent = match path {
            Path::Direct => {
                let js = self.js(window);
                let mut acks = FuturesUnordered::new();
                let mut sent = 0;
                while amount.more(sent, start) {
                    if acks.len() >= window
                        && let Some(ack) = acks.next().await
                    {
                        ack?;
                    }
                    acks.push(
                        js.send_publish(SUBJECT, direct_message(&body))
                            .await?
                            .into_future(),
                    );
                    sent += 1;
                }
                while let Some(ack) = acks.next().await {
                    ack?;
                }
                sent
            }
            Path::Jetway => {
                let subjects = [SUBJECT.to_owned()];
                publish_stream(
                    self.channel.clone(),
                    window,
                    &body,
                    &subjects,
                    amount,
                    start,
                )
                .await?
            }
        };
        Ok(throughput(sent, start.elapsed(), self.since(&mark, path)))
    }

    /// The growth curves' publishing: `window` publishes in flight in all, split evenly over the
    /// connections of `links` (on the Jetway path one PublishStream each), each connection sending
    /// to `subjects` (at least one) in turn. The caller resets the streams between rounds.
    pub(crate) async fn spread_publish(
        &self,
        path: Path,
        links: &Links,
        subjects: &Arc<[String]>,
        window: usize,
        amount: Amount,
    ) -> Result<Round> {
        let body = payload(self.size);
        let count = match path {
            Path::Direct => links.nats.len(),
            Path::Jetway => links.jetway.len(),
        }
        .max(1);
        let per_link = (window / count).max(1);
        let amount = match amount {
            Amount::Count(n) => Amount::Count(n.div_ceil(count as u64)),
            other => other,
        };
        let mark = self.mark();
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(count);
        for i in 0..count {
            let (body, subjects) = (body.clone(), subjects.clone());
            tasks.push(match path {
                Path::Direct => {
                    let js = jetstream::ContextBuilder::new()
                        .max_ack_inflight(per_link)
                        .build(links.nats[i].clone());
                    tokio::spawn(async move {
                        let subjects: Vec<async_nats::Subject> =
                            subjects.iter().map(|s| s.as_str().into()).collect();
                        let mut acks = FuturesUnordered::new();
                        let mut sent = 0;
                        while amount.more(sent, start) {
                            if acks.len() >= per_link
                                && let Some(ack) = acks.next().await
                            {
                                ack?;
                            }
                            let subject = subjects[sent as usize % subjects.len()].clone();
                            // Awaited before the push: `acks` is not `Sync`, so it may not be
                            // borrowed across an await in a spawned task.
                            let ack = js.send_publish(subject, direct_message(&body)).await?;
                            acks.push(ack.into_future());
                            sent += 1;
                        }
                        while let Some(ack) = acks.next().await {
                            ack?;
                        }
                        Result::Ok(sent)
                    })
                }
                Path::Jetway => {
                    let channel = links.jetway[i].clone();
                    tokio::spawn(async move {
                        publish_stream(channel, per_link, &body, &subjects, amount, start).await
                    })
                }
            });
        }
        let mut sent = 0;
        for task in tasks {
            sent += task.await??;
        }
        Ok(throughput(sent, start.elapsed(), self.since(&mark, path)))
    }

    /// P2 and P2s: `concurrency` callers, each publishing and waiting for the answer before the
    /// next. On the Jetway path P2 calls PublishEvent itself; P2s (`sdk`) calls jetway-client's
    /// `publish_raw`, which carries concurrent publishes over its one shared PublishStream.
    pub(crate) async fn unary_publish(
        &self,
        path: Path,
        concurrency: usize,
        amount: Amount,
        sdk: bool,
    ) -> Result<Round> {
        self.reset_stream().await?;
        let body = payload(self.size);
        let js = Arc::new(self.js(concurrency));
        let client = EventsServiceClient::new(self.channel.clone());
        let sdk = sdk.then(|| jetway_client::Client::from_channel(self.sdk_channel.clone()));
        let mark = self.mark();
        let (done, elapsed) = concurrent(concurrency, amount, move |_| {
            let (js, mut client, sdk, body) =
                (js.clone(), client.clone(), sdk.clone(), body.clone());
            async move { publish_acked(path, &js, &mut client, sdk.as_ref(), &body).await }
        })
        .await?;
        Ok(throughput(done, elapsed, self.since(&mark, path)))
    }

    /// P3 and P3s: publish latency, one at a time. On the Jetway path P3 calls PublishEvent
    /// itself; P3s (`sdk`) calls jetway-client's `publish_raw`, whose one caller's publishes go
    /// over the client's shared PublishStream (opened during the warmup).
    pub(crate) async fn publish_latency(
        &self,
        path: Path,
        amount: Amount,
        sdk: bool,
    ) -> Result<Round> {
        self.reset_stream().await?;
        let body = payload(self.size);
        let js = self.js(1);
        let client = EventsServiceClient::new(self.channel.clone());
        let sdk = sdk.then(|| jetway_client::Client::from_channel(self.sdk_channel.clone()));
        let mark = self.mark();
        let (histogram, done) = timed(amount, self.warmup, || {
            let (js, mut client, sdk, body) = (&js, client.clone(), &sdk, &body);
            async move { publish_acked(path, js, &mut client, sdk.as_ref(), body).await }
        })
        .await?;
        Ok(latency(histogram, done, self.since(&mark, path)))
    }

    /// H0: the round trip of `grpc.health.v1.Health/Check` on the same channel.
    pub(crate) async fn health_latency(&self, amount: Amount) -> Result<Round> {
        let health = HealthClient::new(self.channel.clone());
        let mark = self.mark();
        let (histogram, done) = timed(amount, self.warmup, || check(health.clone())).await?;
        Ok(latency(histogram, done, self.since(&mark, Path::Jetway)))
    }

    /// H1: the most unary calls per second the channel carries: `concurrency` callers of
    /// `grpc.health.v1.Health/Check`, which does no work and touches no NATS. A unary publish (P2)
    /// does all of that and more, so it cannot go faster.
    pub(crate) async fn health_throughput(
        &self,
        concurrency: usize,
        amount: Amount,
    ) -> Result<Round> {
        let health = HealthClient::new(self.channel.clone());
        let mark = self.mark();
        let (done, elapsed) =
            concurrent(concurrency, amount, move |_| check(health.clone())).await?;
        Ok(throughput(done, elapsed, self.since(&mark, Path::Jetway)))
    }

    /// C1: `count` stored events consumed and acked, `window` unacked at most.
    pub(crate) async fn consume(&self, path: Path, window: usize, count: u64) -> Result<Round> {
        let stream = self.reset_stream().await?;
        self.fill(count).await?;
        let consumer = self.consumer(&stream, "c1", window).await?;
        let mark = self.mark();
        let start = Instant::now();
        match path {
            Path::Direct => {
                let mut messages = consumer
                    .stream()
                    .max_messages_per_batch(window)
                    .messages()
                    .await?;
                for _ in 0..count {
                    let message = messages.next().await.ok_or("the pull stream ended")??;
                    message.ack().await?;
                }
                self.nats.flush().await?;
            }
            Path::Jetway => {
                let target = Target::fixed(count);
                consume_events(self.channel.clone(), "c1", window, target, |_| {}).await?;
            }
        }
        Ok(throughput(count, start.elapsed(), self.since(&mark, path)))
    }

    /// Stores `count` events the fast way, before a consume round.
    async fn fill(&self, count: u64) -> Result<()> {
        let js = self.js(1024);
        let body = payload(self.size);
        let mut acks = FuturesUnordered::new();
        for _ in 0..count {
            if acks.len() >= 1024
                && let Some(ack) = acks.next().await
            {
                ack?;
            }
            acks.push(
                js.send_publish(SUBJECT, direct_message(&body))
                    .await?
                    .into_future(),
            );
        }
        while let Some(ack) = acks.next().await {
            ack?;
        }
        Ok(())
    }

    /// E1: the time from handing an event to the client library until a consumer receives it,
    /// publishing open loop at `rate` events per second for `duration`. The first tenth is warmup.
    /// An infinite rate publishes as fast as the path takes events.
    pub(crate) async fn end_to_end(
        &self,
        path: Path,
        window: usize,
        rate: f64,
        duration: Duration,
    ) -> Result<Round> {
        let stream = self.reset_stream().await?;
        let consumer = self.consumer(&stream, "e1", window).await?;
        let epoch = Instant::now();
        let warmup_until = (duration / 10).as_nanos() as u64;
        let (set_target, target) = watch::channel(u64::MAX);
        let record = move |histogram: &mut Histogram<u64>, body: &[u8]| {
            #[expect(
                clippy::expect_used,
                reason = "every payload the bench sends starts with its 8-byte send time"
            )]
            let sent = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
            if sent >= warmup_until {
                let now = epoch.elapsed().as_nanos() as u64;
                stats::record(histogram, Duration::from_nanos(now.saturating_sub(sent)));
            }
        };
        let receiver = match path {
            Path::Direct => {
                let mut target = Target(target);
                let nats = self.nats.clone();
                tokio::spawn(async move {
                    let mut histogram = stats::histogram();
                    let mut messages = consumer
                        .stream()
                        .max_messages_per_batch(window)
                        .messages()
                        .await?;
                    let mut received = 0;
                    while received < target.get() {
                        let message = tokio::select! {
                            message = messages.next() => message.ok_or("the pull stream ended")??,
                            () = target.changed() => continue,
                            () = tokio::time::sleep(DRAIN_TIMEOUT) => return Err("E1: deliveries stopped".into()),
                        };
                        record(&mut histogram, &message.payload);
                        message.ack().await?;
                        received += 1;
                    }
                    nats.flush().await?;
                    Result::Ok(histogram)
                })
            }
            Path::Jetway => {
                let (channel, target) = (self.channel.clone(), Target(target));
                tokio::spawn(async move {
                    let mut histogram = stats::histogram();
                    consume_events(channel, "e1", window, target, |event| {
                        if let Some(data) = &event.data {
                            record(&mut histogram, &data.value);
                        }
                    })
                    .await?;
                    Result::Ok(histogram)
                })
            }
        };
        let base = payload(self.size);
        let stamped = move || {
            let mut body = BytesMut::from(&base[..]);
            body[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
            body.freeze()
        };
        let mark = self.mark();
        let start = Instant::now();
        // Paced in 1 ms ticks: every tick sends what is due by then, whatever came back.
        let due = move || (start.elapsed().as_secs_f64() * rate) as u64;
        let mut ticks = tokio::time::interval(Duration::from_millis(1));
        let sent = match path {
            Path::Direct => {
                let js = self.js(window.max(4096));
                let mut sent = 0;
                while start.elapsed() < duration {
                    ticks.tick().await;
                    while sent < due() && start.elapsed() < duration {
                        // The ack is not awaited: async-nats settles it in the background.
                        drop(js.send_publish(SUBJECT, direct_message(&stamped())).await?);
                        sent += 1;
                    }
                }
                sent
            }
            Path::Jetway => {
                let mut client = EventsServiceClient::new(self.channel.clone());
                let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
                let mut answers = client
                    .publish_stream(ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                let answered = tokio::spawn(async move {
                    let mut answered = 0u64;
                    while let Some(answer) = answers.message().await? {
                        check_answer(&answer)?;
                        answered += 1;
                    }
                    Result::Ok(answered)
                });
                let mut sent = 0;
                while start.elapsed() < duration {
                    ticks.tick().await;
                    while sent < due() && start.elapsed() < duration {
                        let event = jetway_event(&stamped());
                        tx.send(PublishStreamRequest {
                            correlation_id: sent,
                            event: Some(event),
                        })
                        .await?;
                        sent += 1;
                    }
                }
                drop(tx);
                if answered.await?? != sent {
                    return Err("E1: not every publish was answered".into());
                }
                sent
            }
        };
        set_target.send_replace(sent);
        let histogram = tokio::time::timeout(DRAIN_TIMEOUT, receiver)
            .await
            .map_err(|_| "E1: not every event was delivered")???;
        Ok(latency(histogram, sent, self.since(&mark, path)))
    }

    /// K1 setup: the store, and the keys the reads read, written through Jetway.
    pub(crate) async fn prepare_store(&self) -> Result<()> {
        let js = jetstream::new(self.nats.clone());
        js.delete_key_value(STORE).await.ok();
        js.create_key_value(kv::Config {
            bucket: STORE.into(),
            history: 1,
            storage: self.storage,
            num_replicas: self.replicas,
            ..Default::default()
        })
        .await?;
        let mut client = StateServiceClient::new(self.channel.clone());
        let body = payload(self.size);
        for i in 0..KEYS {
            client.set(set_request(&format!("get.{i}"), &body)).await?;
        }
        Ok(())
    }

    /// K1: key-value reads or writes, by `concurrency` callers; one caller measures latency,
    /// several measure throughput.
    pub(crate) async fn kv(
        &self,
        path: Path,
        op: KvOp,
        concurrency: usize,
        amount: Amount,
    ) -> Result<Round> {
        let store = jetstream::new(self.nats.clone())
            .get_key_value(STORE)
            .await?;
        let client = StateServiceClient::new(self.channel.clone());
        let body = payload(self.size);
        let key = move |i: u64| match op {
            KvOp::Get => format!("get.{}", i % KEYS),
            KvOp::Set => format!("set.{}", i % KEYS),
        };
        let operation = move |store: kv::Store,
                              mut client: StateServiceClient<Transport>,
                              body: Bytes,
                              i: u64| async move {
            match (path, op) {
                (Path::Direct, KvOp::Get) => {
                    store.get(key(i)).await?.ok_or("K1: a key is missing")?;
                }
                (Path::Direct, KvOp::Set) => {
                    store.put(key(i), body).await?;
                }
                (Path::Jetway, KvOp::Get) => {
                    client
                        .get(GetRequest {
                            store: STORE.into(),
                            key: key(i),
                        })
                        .await?;
                }
                (Path::Jetway, KvOp::Set) => {
                    client.set(set_request(&key(i), &body)).await?;
                }
            }
            Result::Ok(())
        };
        let mark = self.mark();
        if concurrency <= 1 {
            let mut i = 0;
            let (histogram, done) = timed(amount, self.warmup, || {
                i += 1;
                operation(store.clone(), client.clone(), body.clone(), i)
            })
            .await?;
            return Ok(latency(histogram, done, self.since(&mark, path)));
        }
        let (done, elapsed) = concurrent(concurrency, amount, move |i| {
            operation(store.clone(), client.clone(), body.clone(), i)
        })
        .await?;
        Ok(throughput(done, elapsed, self.since(&mark, path)))
    }

    /// M1: Jetway's resident memory before and after opening `count` idle Events subscriptions
    /// that may each hold `window` events.
    pub(crate) async fn idle_subscriptions(
        &self,
        count: usize,
        window: usize,
    ) -> Result<serde_json::Value> {
        let pid = self
            .jetway_pid
            .ok_or("needs a jetway-server started by the bench")?;
        let stream = self.reset_stream().await?;
        // Ten subscriptions per consumer share it, as replicas of one service would.
        let consumers = count.div_ceil(10);
        for i in 0..consumers {
            self.consumer(&stream, &format!("m1-{i}"), window).await?;
        }
        let before = rss_bytes(pid).ok_or("cannot read jetway-server's memory")?;
        // A hundred subscriptions per connection, and at least ten connections, so no HTTP/2
        // connection nears its limits of concurrent streams.
        let mut channels = Vec::new();
        for _ in 0..(count / 100).max(10) {
            channels.push(plain(connect(&self.jetway_url).await?));
        }
        let mut opening = FuturesUnordered::new();
        let mut open = Vec::new();
        for i in 0..count {
            if opening.len() >= 50
                && let Some(opened) = opening.next().await
            {
                open.push(opened?);
            }
            let channel = channels[i % channels.len()].clone();
            opening.push(subscribe(channel, format!("m1-{}", i % consumers), window));
        }
        while let Some(session) = opening.next().await {
            open.push(session?);
        }
        // Let pull requests and buffers settle before reading.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_bytes(pid).ok_or("cannot read jetway-server's memory")?;
        drop(open);
        Ok(serde_json::json!({
            "subscriptions": count,
            "max_processing_events": window,
            "rss_before_mib": stats::round1(mib(before)),
            "rss_after_mib": stats::round1(mib(after)),
            "kib_per_subscription": stats::round1((after.saturating_sub(before)) as f64 / 1024.0 / count as f64),
        }))
    }

    /// M2: Jetway's resident memory while `events` are published as fast as possible and one
    /// subscriber consumes slowly, so a backlog builds up in the stream.
    pub(crate) async fn slow_consumer(
        &self,
        window: usize,
        events: u64,
    ) -> Result<serde_json::Value> {
        let pid = self
            .jetway_pid
            .ok_or("needs a jetway-server started by the bench")?;
        let stream = self.reset_stream().await?;
        self.consumer(&stream, "m2", window).await?;
        let consumed = Arc::new(AtomicU64::new(0));
        let reader = {
            let (channel, consumed) = (self.channel.clone(), consumed.clone());
            tokio::spawn(async move {
                // About 10,000 events a second at most: far slower than the publisher.
                let mut session = subscribe(channel, "m2".into(), window).await?;
                let mut ids = Vec::new();
                while let Some(response) = session.responses.message().await? {
                    if let Some(Resp::Event(event)) = response.response {
                        ids.push(event.id);
                        consumed.fetch_add(1, Ordering::Relaxed);
                    }
                    if ids.len() == 100 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        session.ack(std::mem::take(&mut ids)).await?;
                    }
                }
                Result::Ok(())
            })
        };
        let start_rss = rss_bytes(pid).ok_or("cannot read jetway-server's memory")?;
        let peak = Arc::new(AtomicU64::new(start_rss));
        let sampling = {
            let peak = peak.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_millis(50));
                loop {
                    ticks.tick().await;
                    if let Some(rss) = rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                }
            })
        };
        let start = Instant::now();
        let published = publish_stream(
            self.channel.clone(),
            window,
            &payload(self.size),
            &[SUBJECT.to_owned()],
            Amount::Count(events),
            start,
        )
        .await?;
        let publish_time = start.elapsed();
        // The consumer goes on for a while after the publisher stopped; memory must not grow.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let end_rss = rss_bytes(pid).ok_or("cannot read jetway-server's memory")?;
        sampling.abort();
        reader.abort();
        let consumed = consumed.load(Ordering::Relaxed);
        Ok(serde_json::json!({
            "published": published,
            "publish_msgs_per_s": (published as f64 / publish_time.as_secs_f64()).round(),
            "consumed": consumed,
            "backlog": published.saturating_sub(consumed),
            "rss_start_mib": stats::round1(mib(start_rss)),
            "rss_peak_mib": stats::round1(mib(peak.load(Ordering::Relaxed))),
            "rss_end_mib": stats::round1(mib(end_rss)),
        }))
    }
}

/// A body of `size` bytes.
/// The subject of the request/reply rounds (core NATS: no stream captures it).
const REQUEST_SUBJECT: &str = "bench.request";

/// The responder of a request/reply round, echoing every request; it stops when dropped.
struct Responder(tokio::task::JoinHandle<()>);

impl Drop for Responder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Bench {
    /// Starts the responder of `path`: an async-nats subscription that echoes (direct), or a
    /// processor attached over Respond with `window` requests in flight (Jetway).
    async fn responder(&self, path: Path, window: u32) -> Result<Responder> {
        use jetway_api::jetway::requests::v1::{
            self as requests, request_service_client::RequestServiceClient,
            respond_request::Message as Inbound, respond_response::Message as Outbound,
        };
        match path {
            Path::Direct => {
                let mut subscriber = self.nats.subscribe(REQUEST_SUBJECT).await?;
                let nats = self.nats.clone();
                // The requester uses the same connection, so the subscription is in place.
                Ok(Responder(tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        if let Some(reply) = message.reply {
                            nats.publish(reply, message.payload).await.ok();
                        }
                    }
                })))
            }
            Path::Jetway => {
                let (tx, rx) = mpsc::channel(window as usize + 1);
                tx.send(requests::RespondRequest {
                    message: Some(Inbound::Attach(requests::Attach {
                        subjects: vec![REQUEST_SUBJECT.into()],
                        queue_group: None,
                        max_in_flight: window,
                    })),
                })
                .await?;
                let mut responses = RequestServiceClient::new(self.channel.clone())
                    .respond(ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                match responses.message().await?.and_then(|r| r.message) {
                    Some(Outbound::Attached(_)) => {}
                    other => return Err(format!("expected attached, got {other:?}").into()),
                }
                Ok(Responder(tokio::spawn(async move {
                    while let Ok(Some(response)) = responses.message().await {
                        let Some(Outbound::Request(request)) = response.message else {
                            continue;
                        };
                        let answer = requests::RespondRequest {
                            message: Some(Inbound::Answer(requests::Answer {
                                id: request.id,
                                result: Some(requests::answer::Result::Reply(requests::Reply {
                                    data: request.data,
                                    ..Default::default()
                                })),
                            })),
                        };
                        if tx.send(answer).await.is_err() {
                            return;
                        }
                    }
                })))
            }
        }
    }

    /// The Jetway requester of a request/reply round: jetway-client (whose concurrent requests
    /// share one RequestStream), or unary Request calls (`unary`).
    fn requester(&self, unary: bool) -> Requester {
        if unary {
            Requester::Unary(
                jetway_api::jetway::requests::v1::request_service_client::RequestServiceClient::new(
                    self.channel.clone(),
                ),
            )
        } else {
            Requester::Sdk(Box::new(jetway_client::Client::from_channel(
                self.sdk_channel.clone(),
            )))
        }
    }

    /// One request and its answer: async-nats `request`, or Jetway's.
    async fn request_once(
        path: Path,
        nats: &async_nats::Client,
        requester: &Requester,
        body: &Bytes,
    ) -> Result<()> {
        match (path, requester) {
            (Path::Direct, _) => {
                nats.request(REQUEST_SUBJECT, body.clone()).await?;
            }
            (Path::Jetway, Requester::Sdk(client)) => {
                client.request(REQUEST_SUBJECT, body.to_vec()).await?;
            }
            (Path::Jetway, Requester::Unary(client)) => {
                client
                    .clone()
                    .request(jetway_api::jetway::requests::v1::RequestRequest {
                        subject: REQUEST_SUBJECT.into(),
                        data: body.clone(),
                        ..Default::default()
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// R1: request latency, one at a time, requester and responder on the same path.
    pub(crate) async fn request_latency(&self, path: Path, amount: Amount) -> Result<Round> {
        let _responder = self.responder(path, 1).await?;
        let body = payload(self.size);
        let requester = self.requester(false);
        let mark = self.mark();
        let (histogram, done) = timed(amount, self.warmup, || {
            let (nats, requester, body) = (&self.nats, &requester, &body);
            async move { Bench::request_once(path, nats, requester, body).await }
        })
        .await?;
        Ok(latency(histogram, done, self.since(&mark, path)))
    }

    /// R64 (and R64u, `unary`): request throughput with `window` requests in flight (the responder
    /// takes as many).
    pub(crate) async fn request_throughput(
        &self,
        path: Path,
        window: usize,
        amount: Amount,
        unary: bool,
    ) -> Result<Round> {
        let _responder = self
            .responder(path, u32::try_from(window).unwrap_or(u32::MAX))
            .await?;
        let body = payload(self.size);
        let nats = self.nats.clone();
        let requester = Arc::new(self.requester(unary));
        let mark = self.mark();
        let (done, elapsed) = concurrent(window, amount, move |_| {
            let (nats, requester, body) = (nats.clone(), requester.clone(), body.clone());
            async move { Bench::request_once(path, &nats, &requester, &body).await }
        })
        .await?;
        Ok(throughput(done, elapsed, self.since(&mark, path)))
    }
}

/// Who sends Jetway's requests in a request/reply round.
enum Requester {
    /// jetway-client's `request`: concurrent requests share one RequestStream.
    Sdk(Box<jetway_client::Client>),
    /// A unary Request call each.
    Unary(
        jetway_api::jetway::requests::v1::request_service_client::RequestServiceClient<Transport>,
    ),
}

pub(crate) fn payload(size: usize) -> Bytes {
    Bytes::from(vec![0x5a; size])
}

/// One publish of P2 and P3, waiting for its acknowledgement: straight to JetStream, through
/// PublishEvent, or (`sdk`) through jetway-client's `publish_raw`.
async fn publish_acked(
    path: Path,
    js: &jetstream::Context,
    client: &mut EventsServiceClient<Transport>,
    sdk: Option<&jetway_client::Client>,
    body: &Bytes,
) -> Result<()> {
    match (path, sdk) {
        (Path::Direct, _) => {
            js.send_publish(SUBJECT, direct_message(body))
                .await?
                .await?;
        }
        (Path::Jetway, None) => {
            client.publish_event(jetway_event(body)).await?;
        }
        (Path::Jetway, Some(sdk)) => {
            sdk.publish_raw(SUBJECT, TYPE_NAME, body.clone(), &Default::default())
                .await?;
        }
    }
    Ok(())
}

/// The message a direct publisher stores: the body with the Windshift headers Jetway adds.
fn direct_message(body: &Bytes) -> PublishMessage {
    let mut headers = HeaderMap::new();
    headers.insert("WS-Data-Type", TYPE_NAME);
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    headers.insert("WS-Published-Time", now.as_str());
    PublishMessage::build()
        .payload(body.clone())
        .headers(headers)
}

/// The same event as a Jetway publish.
fn jetway_event(body: &Bytes) -> api::PublishEventRequest {
    api::PublishEventRequest {
        subject: SUBJECT.into(),
        payload: Some(publish_event_request::Payload::Data(Any {
            type_url: format!("{}{TYPE_NAME}", jetway_api::TYPE_URL_PREFIX),
            value: body.clone(),
        })),
        ..Default::default()
    }
}

fn set_request(key: &str, body: &Bytes) -> SetRequest {
    SetRequest {
        store: STORE.into(),
        key: key.into(),
        value: Some(Any {
            type_url: format!("{}{TYPE_NAME}", jetway_api::TYPE_URL_PREFIX),
            value: body.clone(),
        }),
        ..Default::default()
    }
}

pub(crate) fn throughput(events: u64, elapsed: Duration, cpu: Option<Cpu>) -> Round {
    Round {
        measure: Measure::Throughput { events, elapsed },
        events,
        cpu,
    }
}

pub(crate) fn latency(histogram: Histogram<u64>, events: u64, cpu: Option<Cpu>) -> Round {
    Round {
        measure: Measure::Latency(histogram),
        events,
        cpu,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One `grpc.health.v1.Health/Check`: the cheapest call jetway-server answers.
async fn check(mut health: HealthClient<Transport>) -> Result<()> {
    health.check(HealthCheckRequest::default()).await?;
    Ok(())
}

/// Runs `concurrency` callers until `amount` is done; each starts its next operation (given the
/// operation's number) when its last one has ended. Returns the operations done and the time taken.
pub(crate) async fn concurrent<F, Fut>(
    concurrency: usize,
    amount: Amount,
    operation: F,
) -> Result<(u64, Duration)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let operation = Arc::new(operation);
    let claimed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (operation, claimed) = (operation.clone(), claimed.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                loop {
                    let i = claimed.fetch_add(1, Ordering::Relaxed);
                    if !amount.more(i, start) {
                        return Result::Ok(done);
                    }
                    operation(i).await?;
                    done += 1;
                }
            })
        })
        .collect();
    let mut done = 0;
    for caller in callers {
        done += caller.await??;
    }
    Ok((done, start.elapsed()))
}

/// Runs `operation` one at a time, `warmup` times unrecorded and then for `amount`, and returns
/// the latencies and how many were recorded.
async fn timed<F, Fut>(
    amount: Amount,
    warmup: u64,
    mut operation: F,
) -> Result<(Histogram<u64>, u64)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    for _ in 0..warmup {
        operation().await?;
    }
    let mut histogram = stats::histogram();
    let start = Instant::now();
    let mut done = 0;
    while amount.more(done, start) {
        let began = Instant::now();
        operation().await?;
        stats::record(&mut histogram, began.elapsed());
        done += 1;
    }
    Ok((histogram, done))
}

/// Connects a gRPC channel to Jetway. It accepts HTTP/2 frames up to 1 MiB, as jetway-client's
/// channels do: h2 writes one frame at a time, so frames of the default 16 KiB mean many small writes
/// for a busy Events stream.
pub(crate) async fn connect(url: &str) -> Result<Channel> {
    Ok(Channel::from_shared(url.to_owned())?
        .max_frame_size(1 << 20)
        .connect()
        .await?)
}

/// `channel` as the bench's transport, without credentials.
pub(crate) fn plain(channel: Channel) -> Transport {
    InterceptedService::new(channel, Bearer(None))
}

/// A channel as [`connect`] makes, over TLS, trusting `ca_pem`, and sending `token` on every
/// call.
pub(crate) async fn connect_tls(url: &str, ca_pem: &str, token: &str) -> Result<Transport> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
    let channel = Channel::from_shared(url.to_owned())?
        .max_frame_size(1 << 20)
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(InterceptedService::new(
        channel,
        Bearer(Some(format!("Bearer {token}").parse()?)),
    ))
}

/// The bench's gRPC transport: a channel, with the token of an authenticating server, if any.
pub(crate) type Transport = InterceptedService<Channel, Bearer>;

/// Adds `authorization` to every call when set.
#[derive(Clone)]
pub(crate) struct Bearer(Option<AsciiMetadataValue>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// Fails on an item error: the bench counts only stored events.
fn check_answer(answer: &api::PublishStreamResponse) -> Result<()> {
    match answer.result.as_ref().and_then(|r| r.result.as_ref()) {
        Some(publish_result::Result::Published(_)) => Ok(()),
        Some(publish_result::Result::Error(error)) => {
            Err(format!("a publish failed: code {} {}", error.code, error.message).into())
        }
        None => Err("an answer without a result".into()),
    }
}

/// Publishes `body` over one PublishStream, to each of `subjects` (at least one) in turn, keeping at most `window`
/// unanswered, until `amount`; returns how many were published.
async fn publish_stream(
    channel: Transport,
    window: usize,
    body: &Bytes,
    subjects: &[String],
    amount: Amount,
    start: Instant,
) -> Result<u64> {
    let mut client = EventsServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    let permits = Arc::new(Semaphore::new(window));
    let mut answers = client
        .publish_stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let sender = {
        let permits = permits.clone();
        let events: Vec<_> = subjects
            .iter()
            .map(|subject| api::PublishEventRequest {
                subject: subject.clone(),
                ..jetway_event(body)
            })
            .collect();
        tokio::spawn(async move {
            let mut sent = 0;
            while amount.more(sent, start) {
                #[expect(clippy::expect_used, reason = "nothing closes the semaphore")]
                let permit = permits.acquire().await.expect("never closed");
                permit.forget();
                let request = PublishStreamRequest {
                    correlation_id: sent,
                    event: Some(events[sent as usize % events.len()].clone()),
                };
                if tx.send(request).await.is_err() {
                    break;
                }
                sent += 1;
            }
            // Dropping the sender half-closes the stream; the server then answers the rest and ends.
            sent
        })
    };
    let mut answered = 0;
    while let Some(answer) = answers.message().await? {
        check_answer(&answer)?;
        answered += 1;
        permits.add_permits(1);
    }
    let sent = sender.await?;
    if answered != sent {
        return Err(format!("{sent} published, {answered} answered").into());
    }
    Ok(sent)
}

/// One Events stream of the Windshift API, subscribed.
struct Session {
    tx: mpsc::Sender<EventsRequest>,
    responses: tonic::Streaming<jetway_api::windshift::events::v1alpha1::EventsResponse>,
}

impl Session {
    async fn ack(&mut self, ids: Vec<u64>) -> Result<()> {
        let request = EventsRequest {
            request: Some(events_request::Request::Ack(events_request::Ack { ids })),
        };
        self.tx
            .send(request)
            .await
            .map_err(|_| "the Events stream closed")?;
        Ok(())
    }
}

/// Opens an Events stream on `consumer` of the benchmark stream and waits for `Subscribed`.
async fn subscribe(channel: Transport, consumer: String, window: usize) -> Result<Session> {
    let (tx, rx) = mpsc::channel(64);
    let subscribe = events_request::Subscribe {
        stream: STREAM.into(),
        consumer,
        max_processing_events: Some(window as u64),
    };
    tx.send(EventsRequest {
        request: Some(events_request::Request::Subscribe(subscribe)),
    })
    .await?;
    let mut responses = WindshiftEventsClient::new(channel)
        .events(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match responses.message().await?.and_then(|r| r.response) {
        Some(Resp::Subscribed(_)) => Ok(Session { tx, responses }),
        other => Err(format!("expected Subscribed, got {other:?}").into()),
    }
}

/// Consumes through Jetway's Events stream until `target` events were received and acked. Events
/// read together are acked together: one Ack whenever nothing more is ready (or every
/// [`ACK_BATCH`] events), as a client that keeps up would. `on_event` sees every event.
async fn consume_events(
    channel: Transport,
    consumer: &str,
    window: usize,
    mut target: Target,
    mut on_event: impl FnMut(&Event),
) -> Result<u64> {
    let mut session = subscribe(channel, consumer.into(), window).await?;
    let mut received = 0u64;
    let mut unacked = Vec::new();
    let mut unconfirmed = 0u64;
    loop {
        let done = received >= target.get();
        if done && unacked.is_empty() && unconfirmed == 0 {
            return Ok(received);
        }
        let next = match session.responses.message().now_or_never() {
            Some(next) => next,
            None => {
                if !unacked.is_empty() {
                    session.ack(std::mem::take(&mut unacked)).await?;
                    unconfirmed += 1;
                }
                tokio::select! {
                    next = session.responses.message() => next,
                    () = target.changed() => continue,
                    () = tokio::time::sleep(DRAIN_TIMEOUT) => return Err("deliveries stopped".into()),
                }
            }
        };
        match next?.and_then(|r| r.response) {
            Some(Resp::Event(event)) => {
                on_event(&event);
                unacked.push(event.id);
                received += 1;
                if unacked.len() >= ACK_BATCH {
                    session.ack(std::mem::take(&mut unacked)).await?;
                    unconfirmed += 1;
                }
            }
            Some(Resp::AckConfirmation(confirmation)) => {
                if !confirmation.invalid_ids.is_empty()
                    || !confirmation.temporary_failed_ids.is_empty()
                {
                    return Err(format!("acks failed: {confirmation:?}").into());
                }
                unconfirmed -= 1;
            }
            other => return Err(format!("unexpected on the Events stream: {other:?}").into()),
        }
    }
}

/// How many events a consumer waits for: known up front, or set once the publisher is done.
struct Target(watch::Receiver<u64>);

impl Target {
    /// A target known up front.
    fn fixed(count: u64) -> Target {
        // The sender is dropped: the value never changes, and `changed` waits forever.
        Target(watch::channel(count).1)
    }

    fn get(&self) -> u64 {
        *self.0.borrow()
    }

    /// Returns once the target changes; never, once it can no longer change.
    async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
