//! `jetway-bench`: measures Jetway against async-nats talking directly to the same nats-server, in
//! one run, and prints both side by side with their ratio (higher is better) and the goals.
//!
//! It starts its own nats-server and jetway-server (the one built next to it), or uses the servers
//! given with `--nats-url` and `--jetway-url`. Each scenario runs four rounds in the order direct,
//! Jetway, Jetway, direct, so drift on a noisy machine hits both sides alike, and the two rounds of
//! each side are combined. Progress goes to stderr; the table (or `--json`) to stdout.
//! `--scaling` measures throughput against the in-flight window and the event size instead, and
//! draws them into a PNG; `--growth` measures how cost grows with streams, event size, connections
//! and idle subscriptions (see [`growth`]). See docs/benchmarks.md for the method.

mod growth;
mod http;
mod plot;
mod report;
mod scenarios;
mod setup;
mod stats;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use async_nats::jetstream::stream::StorageType;
use clap::{Parser, ValueEnum};
use serde_json::{Map, Value, json};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    report::Scenario,
    scenarios::{Amount, Bench, KvOp, Path},
    setup::Servers,
    stats::{Round, Side},
};

/// Errors end the run with a message; there is nothing to recover.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The most requests Jetway's PublishStream reads ahead of its answers.
const SERVER_WINDOW: usize = 1024;
/// G2's live subscribers.
const G2_SUBSCRIBERS: usize = 100;
/// G2's publish rate: each event goes to every subscriber, so 200/s is 20,000 deliveries/s.
const G2_RATE: f64 = 200.0;
/// The order of the rounds of a scenario.
const ORDER: [Path; 4] = [Path::Direct, Path::Jetway, Path::Jetway, Path::Direct];

#[derive(Parser, Debug)]
#[command(
    name = "jetway-bench",
    about = "Measures Jetway against direct JetStream (async-nats) on the same nats-server"
)]
struct Args {
    /// Event (and key-value value) size in bytes, at least 16.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Events or round trips per round, instead of --duration.
    #[arg(long)]
    count: Option<u64>,
    /// Seconds per round.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Concurrent callers of P2, of P2s, of H1 and of the key-value throughput rounds.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Publishes in flight in P1, and events in flight per consumer in C1, E1 and M1/M2 (1 to 1024).
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Storage of the benchmark stream and store.
    #[arg(long, value_enum, default_value_t = Storage::File)]
    storage: Storage,
    /// Every scenario in a few seconds: proves the bench works, measures little.
    #[arg(long)]
    quick: bool,
    /// E1's publish rate, as a fraction of the direct path's own end-to-end maximum (above 0, at
    /// most 1). The goal is stated at 0.5.
    #[arg(long, default_value_t = report::E1_GOAL_LOAD)]
    e1_load: f64,
    /// Run each scenario's four rounds (direct, Jetway, Jetway, direct) this many times, and
    /// combine them: more rounds, a steadier ratio on a noisy machine.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Measure throughput against in-flight window and event size, and write a PNG plot.
    #[arg(long)]
    scaling: bool,
    /// Where --scaling writes its plot.
    #[arg(long, default_value = "jetway-scaling.png")]
    plot: PathBuf,
    /// Measure how cost grows with streams, event size, client connections and idle
    /// subscriptions, each dimension on fresh servers, and write a PNG per dimension.
    #[arg(long, conflicts_with_all = ["scaling", "nats_url", "cluster"])]
    growth: bool,
    /// Where --growth writes its plots (growth-<dimension>.png); made if missing.
    #[arg(long, default_value = ".")]
    plot_dir: PathBuf,
    /// Only these scenarios, comma-separated (e.g. P1,P3; K1 selects every K1 measure); with
    /// --growth, only these dimensions (e.g. subscriptions).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Start a cluster of this many nats-server nodes (at least 2) instead of one server; Jetway
    /// and the direct side are given every node.
    #[arg(long, conflicts_with = "nats_url")]
    cluster: Option<usize>,
    /// Replicas of the benchmark stream and store (more than 1 needs --cluster or a clustered
    /// --nats-url).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Use this NATS server instead of starting one.
    #[arg(long)]
    nats_url: Option<String>,
    /// Use this Jetway server (connected to --nats-url) instead of starting one; server CPU and
    /// memory are then not measured.
    #[arg(long, requires = "nats_url")]
    jetway_url: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Storage {
    File,
    Memory,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // On Ctrl-C or SIGTERM the run is dropped, and with it the servers it started.
    let result = tokio::select! {
        result = run(args) => result,
        () = interrupted() => Err("interrupted".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jetway-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        // Without signal handlers the default applies: the process ends at once.
        _ => std::future::pending().await,
    }
}

async fn run(args: Args) -> Result<()> {
    if args.size < 16 {
        return Err("--size must be at least 16 (E1 stamps the send time into the body)".into());
    }
    if !(1..=SERVER_WINDOW).contains(&args.window) {
        return Err(format!("--window must be 1 to {SERVER_WINDOW}").into());
    }
    if !(args.e1_load > 0.0 && args.e1_load <= 1.0) {
        return Err("--e1-load must be above 0 and at most 1".into());
    }
    if args.concurrency == 0 || args.repeat == 0 || args.duration.is_nan() || args.duration <= 0.0 {
        return Err("--concurrency, --repeat and --duration must be above 0".into());
    }
    if args.cluster.is_some_and(|nodes| nodes < 2) || args.replicas == 0 {
        return Err("--cluster must be at least 2 and --replicas at least 1".into());
    }
    if args.growth {
        return grow(&args).await;
    }
    let (servers, bench) = start(&args, false).await?;
    let nats = bench.nats.clone();
    let mut header = Map::new();
    header.insert("machine".into(), setup::machine());
    header.insert(
        "nats_server_version".into(),
        json!(nats.server_info().version),
    );
    header.insert("git_sha".into(), json!(setup::git_sha()));
    header.insert(
        "params".into(),
        json!({
            "size": args.size,
            "count": args.count,
            "duration_s": round_duration(&args).as_secs_f64(),
            "concurrency": args.concurrency,
            "window": args.window,
            "storage": format!("{:?}", args.storage).to_lowercase(),
            "cluster_nodes": args.cluster.unwrap_or(1),
            "replicas": args.replicas,
            "quick": args.quick,
            "rounds": "direct, jetway, jetway, direct",
            "repeat": args.repeat,
        }),
    );
    // The TLS server's bench: the same connections but Jetway's, which goes through TLS.
    let tls_bench = match &servers.jetway_tls {
        Some(tls) if !args.scaling => {
            let channel = scenarios::connect_tls(&tls.url, &tls.ca_pem, &tls.token).await?;
            wait_serving(&channel).await?;
            Some(Bench {
                channel,
                jetway_pid: Some(tls.pid),
                jetway_url: tls.url.clone(),
                ..bench.clone()
            })
        }
        _ => None,
    };
    if args.scaling {
        scaling(&bench, &args, header).await
    } else {
        full(&bench, tls_bench.as_ref(), &args, header).await
    }
}

/// Starts the servers (or finds those given) and connects the bench to them. The servers stop
/// when the returned [`Servers`] is dropped.
async fn start(args: &Args, growth: bool) -> Result<(Servers, Bench)> {
    // Jetway gets the ack window the direct side has, so both keep the same number in flight.
    let max_pending = SERVER_WINDOW.max(args.concurrency);
    let (nats_url, jetway_url, cluster) =
        (args.nats_url.clone(), args.jetway_url.clone(), args.cluster);
    eprintln!("starting the servers");
    let servers = tokio::task::spawn_blocking(move || {
        Servers::start(nats_url, jetway_url, cluster, max_pending, growth)
    })
    .await??;
    // A comma-separated list, as Jetway takes it: the direct side gets every node too.
    let addrs = servers
        .nats_url
        .split(',')
        .map(|url| url.trim().parse())
        .collect::<std::result::Result<Vec<async_nats::ServerAddr>, _>>()?;
    let nats = async_nats::connect(addrs).await?;
    let sdk_channel = scenarios::connect(&servers.jetway_url).await?;
    let channel = scenarios::plain(sdk_channel.clone());
    wait_serving(&channel).await?;
    let bench = Bench {
        nats,
        channel,
        sdk_channel,
        storage: match args.storage {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        },
        size: args.size,
        replicas: args.replicas,
        jetway_pid: servers.jetway_pid,
        nats_pid: servers.nats_pid,
        warmup: if args.quick { 20 } else { 200 },
        jetway_url: servers.jetway_url.clone(),
        http_addr: servers.jetway_http,
    };
    Ok((servers, bench))
}

/// `--growth`: every dimension of [`growth`] on servers of its own, then the tables (or JSON) and
/// a plot per dimension.
async fn grow(args: &Args) -> Result<()> {
    // Before measuring, so a plot directory that cannot be made fails in a second, not at the end.
    std::fs::create_dir_all(&args.plot_dir)?;
    let mut curves = Vec::new();
    let mut header = Map::new();
    let dimensions = growth::DIMENSIONS
        .into_iter()
        .filter(|dimension| selected(args, dimension.name()));
    for dimension in dimensions {
        let (servers, bench) = start(args, true).await?;
        if header.is_empty() {
            header.insert("machine".into(), setup::machine());
            header.insert(
                "nats_server_version".into(),
                json!(bench.nats.server_info().version),
            );
            header.insert("git_sha".into(), json!(setup::git_sha()));
            header.insert(
                "params".into(),
                json!({
                    "duration_s": round_duration(args).as_secs_f64(),
                    "count": args.count,
                    "window": args.window,
                    "storage": format!("{:?}", args.storage).to_lowercase(),
                    "rounds": "direct, jetway, jetway, direct",
                    "repeat": args.repeat,
                }),
            );
        }
        let settings = growth::Settings {
            amount: amount(args),
            repeat: args.repeat,
            window: args.window,
            nats_url: servers.nats_url.clone(),
        };
        curves.push(growth::measure(dimension, &bench, &settings).await?);
        // The next dimension starts on fresh servers.
        drop(bench);
        drop(servers);
    }
    for curve in &curves {
        let path = growth::plot(curve, &args.plot_dir)?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        header.insert("growth".into(), growth::json(&curves));
        println!("{}", serde_json::to_string_pretty(&Value::Object(header))?);
    } else {
        print!("{}", growth::table(&curves));
    }
    Ok(())
}

/// Prints the share of `id`'s plain-text Jetway throughput that TLS keeps, when both were measured.
fn tls_cost(id: &str, plain: Option<f64>, tls: Option<f64>) {
    if let (Some(plain), Some(tls)) = (plain, tls)
        && plain > 0.0
    {
        eprintln!(
            "[{id}-tls] TLS keeps {:.1}% of {id}'s Jetway throughput ({tls:.0} vs {plain:.0} msgs/s)",
            100.0 * tls / plain
        );
    }
}

/// Waits until Jetway answers its health check with SERVING.
async fn wait_serving(channel: &scenarios::Transport) -> Result<()> {
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..100 {
        if let Ok(response) = health.check(HealthCheckRequest::default()).await
            && response.into_inner().status == 1
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("Jetway did not report SERVING within 10 s".into())
}

/// How long one round runs.
fn round_duration(args: &Args) -> Duration {
    if args.quick {
        Duration::from_millis(250)
    } else {
        Duration::from_secs_f64(args.duration)
    }
}

/// How much one round does: --count, else the round duration.
fn amount(args: &Args) -> Amount {
    match args.count {
        Some(n) => Amount::Count(if args.quick { n.min(2_000) } else { n }),
        None => Amount::For(round_duration(args)),
    }
}

fn selected(args: &Args, id: &str) -> bool {
    args.only.is_empty()
        || args
            .only
            .iter()
            .any(|only| id == only || id.starts_with(&format!("{only}-")))
}

/// Runs `round` in the order direct, Jetway, Jetway, direct, `repeat` times, and combines each
/// side.
async fn alternate<F, Fut>(id: &str, repeat: usize, mut round: F) -> Result<(Side, Side)>
where
    F: FnMut(Path) -> Fut,
    Fut: Future<Output = Result<Round>>,
{
    let (mut direct, mut jetway) = (Vec::new(), Vec::new());
    let rounds = ORDER.len() * repeat;
    for (i, path) in ORDER.into_iter().cycle().take(rounds).enumerate() {
        eprint!("[{id}] round {}/{rounds} {path} ... ", i + 1);
        let result = round(path).await?;
        eprintln!("{}", describe(&result));
        match path {
            Path::Direct => direct.push(result),
            Path::Jetway => jetway.push(result),
        }
    }
    Ok((Side::combine(&direct), Side::combine(&jetway)))
}

/// One round's headline, for progress.
fn describe(round: &Round) -> String {
    match &round.measure {
        stats::Measure::Throughput { events, elapsed } => format!(
            "{events} in {:.2} s: {:.0} msgs/s",
            elapsed.as_secs_f64(),
            *events as f64 / elapsed.as_secs_f64()
        ),
        stats::Measure::Latency(h) => format!(
            "{} samples, p50 {:.1} us, p99 {:.1} us",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        ),
    }
}

async fn full(
    bench: &Bench,
    tls: Option<&Bench>,
    args: &Args,
    header: Map<String, Value>,
) -> Result<()> {
    let amount = amount(args);
    let window = args.window;
    let mut results = Vec::new();

    // First, while the server's memory is fresh: the cost of idle subscriptions.
    if selected(args, "M1") && bench.jetway_pid.is_some() {
        let count = if args.quick { 100 } else { 1000 };
        eprintln!("[M1] {count} idle Events subscriptions");
        let mut m1 = Scenario::new(
            "M1",
            format!("jetway-server RSS, {count} idle Events subscriptions"),
            None,
            None,
        );
        m1.extra = as_map(bench.idle_subscriptions(count, window).await?);
        results.push(m1);
    }
    if selected(args, "H0") {
        let rounds = [
            bench.health_latency(amount).await?,
            bench.health_latency(amount).await?,
        ];
        eprintln!("[H0] {}", describe(&rounds[0]));
        results.push(Scenario::new(
            "H0",
            "gRPC hop floor: grpc.health.v1 Check, 1 in flight".into(),
            None,
            Some(Side::combine(&rounds)),
        ));
    }
    if selected(args, "H1") {
        let c = args.concurrency;
        let rounds = [
            bench.health_throughput(c, amount).await?,
            bench.health_throughput(c, amount).await?,
        ];
        eprintln!("[H1] {}", describe(&rounds[0]));
        results.push(Scenario::new(
            "H1",
            format!("gRPC unary ceiling: grpc.health.v1 Check, {c} concurrent callers"),
            None,
            Some(Side::combine(&rounds)),
        ));
    }
    if selected(args, "P3") {
        let (d, j) = alternate("P3", args.repeat, |path| {
            bench.publish_latency(path, amount, false)
        })
        .await?;
        results.push(Scenario::new(
            "P3",
            "publish latency, 1 in flight".into(),
            Some(d),
            Some(j),
        ));
    }
    if selected(args, "P3s") {
        let (d, j) = alternate("P3s", args.repeat, |path| {
            bench.publish_latency(path, amount, true)
        })
        .await?;
        results.push(Scenario::new(
            "P3s",
            "jetway-client publish latency, 1 in flight".into(),
            Some(d),
            Some(j),
        ));
    }
    if selected(args, "R1") {
        let (d, j) = alternate("R1", args.repeat, |path| {
            bench.request_latency(path, amount)
        })
        .await?;
        results.push(Scenario::new(
            "R1",
            "request/reply latency, 1 in flight (Jetway: jetway-client requester, processor over \
             Respond)"
                .into(),
            Some(d),
            Some(j),
        ));
    }
    if selected(args, "R64") {
        let (d, j) = alternate("R64", args.repeat, |path| {
            bench.request_throughput(path, 64, amount, false)
        })
        .await?;
        results.push(Scenario::new(
            "R64",
            "request/reply throughput, 64 in flight (Jetway: jetway-client, one RequestStream)"
                .into(),
            Some(d),
            Some(j),
        ));
    }
    if selected(args, "R64u") {
        let (d, j) = alternate("R64u", args.repeat, |path| {
            bench.request_throughput(path, 64, amount, true)
        })
        .await?;
        results.push(Scenario::new(
            "R64u",
            "request/reply throughput, 64 in flight (Jetway: a unary Request call each)".into(),
            Some(d),
            Some(j),
        ));
    }
    let mut direct_rate = None;
    if selected(args, "P1") {
        let (d, j) = alternate("P1", args.repeat, |path| {
            bench.stream_publish(path, window, args.size, amount)
        })
        .await?;
        direct_rate = d.msgs_per_s;
        results.push(Scenario::new(
            "P1",
            format!("streaming publish, {window} in flight"),
            Some(d),
            Some(j),
        ));
    }
    if selected(args, "P2") {
        let c = args.concurrency;
        // P2's ceiling needs H1 measured beside it: an H1 round before each Jetway round, so
        // the machine's drift hits both alike.
        let h1_rounds = std::cell::RefCell::new(Vec::new());
        let (d, j) = alternate("P2", args.repeat, |path| {
            let h1_rounds = &h1_rounds;
            async move {
                if path == Path::Jetway {
                    let h1 = bench.health_throughput(c, amount).await?;
                    eprint!("(H1 {}) ", describe(&h1));
                    h1_rounds.borrow_mut().push(h1);
                }
                bench.unary_publish(path, c, amount, false).await
            }
        })
        .await?;
        let p2 = Scenario::new(
            "P2",
            format!("unary publish, {c} concurrent callers"),
            Some(d),
            Some(j),
        );
        let ceiling = report::p2_ceiling(&Side::combine(&h1_rounds.into_inner()), &p2);
        results.push(p2);
        results.extend(ceiling);
    }
    // What TLS costs: P1 and P2 again, Jetway's rounds through a second jetway-server with TLS on
    // (only when the bench started the servers itself).
    if let Some(tls) = tls {
        let plain_rate = |id: &str| {
            results
                .iter()
                .find(|scenario: &&Scenario| scenario.id == id)
                .and_then(|scenario| scenario.jetway.as_ref()?.msgs_per_s)
        };
        let (plain_p1, plain_p2) = (plain_rate("P1"), plain_rate("P2"));
        if selected(args, "P1-tls") {
            let (d, j) = alternate("P1-tls", args.repeat, |path| {
                tls.stream_publish(path, window, args.size, amount)
            })
            .await?;
            tls_cost("P1", plain_p1, j.msgs_per_s);
            results.push(Scenario::new(
                "P1-tls",
                format!("streaming publish, {window} in flight, TLS to Jetway"),
                Some(d),
                Some(j),
            ));
        }
        if selected(args, "P2-tls") {
            let c = args.concurrency;
            let (d, j) = alternate("P2-tls", args.repeat, |path| {
                tls.unary_publish(path, c, amount, false)
            })
            .await?;
            tls_cost("P2", plain_p2, j.msgs_per_s);
            results.push(Scenario::new(
                "P2-tls",
                format!("unary publish, {c} concurrent callers, TLS to Jetway"),
                Some(d),
                Some(j),
            ));
        }
    }
    // The HTTP API beside gRPC: G1 is judged against P2's gRPC rate of the same run.
    if selected(args, "G1") {
        let c = args.concurrency;
        let (d, j) = alternate("G1", args.repeat, |path| {
            bench.http_publish(path, c, amount)
        })
        .await?;
        let mut g1 = Scenario::new(
            "G1",
            format!("HTTP API publish, {c} keep-alive connections"),
            Some(d),
            Some(j),
        );
        let grpc = results
            .iter()
            .find(|scenario| scenario.id == "P2")
            .and_then(|p2| p2.jetway.as_ref()?.msgs_per_s);
        if let (Some(grpc), Some(http)) = (grpc, g1.jetway.as_ref().and_then(|j| j.msgs_per_s)) {
            g1.extra
                .insert("p2_jetway_msgs_per_s".into(), json!(grpc.round()));
            g1.extra
                .insert("ratio_to_p2".into(), json!(stats::round2(http / grpc)));
        }
        results.push(g1);
    }
    if selected(args, "G2") {
        let (subscribers, rate) = (G2_SUBSCRIBERS, G2_RATE);
        let duration = amount.as_duration(rate);
        let (d, j) = alternate("G2", args.repeat, |path| {
            bench.fan_out(path, subscribers, rate, duration)
        })
        .await?;
        let mut g2 = Scenario::new(
            "G2",
            format!(
                "live fan-out to {subscribers} subscribers: SSE (jetway) against gRPC Subscribe (direct column)"
            ),
            Some(d),
            Some(j),
        );
        g2.extra.insert("subscribers".into(), json!(subscribers));
        g2.extra.insert("rate_msgs_per_s".into(), json!(rate));
        results.push(g2);
    }
    if selected(args, "P2s") {
        let c = args.concurrency;
        let (d, j) = alternate("P2s", args.repeat, |path| {
            bench.unary_publish(path, c, amount, true)
        })
        .await?;
        results.push(Scenario::new(
            "P2s",
            format!("jetway-client publish, {c} concurrent callers"),
            Some(d),
            Some(j),
        ));
    }
    let seconds = round_duration(args).as_secs_f64();
    if selected(args, "C1") {
        let count = match args.count {
            Some(n) => n,
            None => (direct_rate.unwrap_or(100_000.0) * seconds) as u64,
        }
        .max(1_000);
        let (d, j) =
            alternate("C1", args.repeat, |path| bench.consume(path, window, count)).await?;
        let mut c1 = Scenario::new(
            "C1",
            format!("consume + ack, {window} in flight"),
            Some(d),
            Some(j),
        );
        c1.extra.insert("events_per_round".into(), json!(count));
        results.push(c1);
    }
    if selected(args, "E1") {
        // The direct path's own end-to-end maximum: publishing as fast as it goes while one
        // consumer receives and acks, until every event is delivered.
        eprint!("[E1] measuring the direct end-to-end maximum rate ... ");
        let started = std::time::Instant::now();
        let probe = bench
            .end_to_end(Path::Direct, window, f64::INFINITY, round_duration(args))
            .await?;
        let max = probe.events as f64 / started.elapsed().as_secs_f64();
        eprintln!("{max:.0} msgs/s");
        let rate = (max * args.e1_load).round();
        let duration = amount.as_duration(rate);
        let (d, j) = alternate("E1", args.repeat, |path| {
            bench.end_to_end(path, window, rate, duration)
        })
        .await?;
        let mut e1 = Scenario::new(
            "E1",
            "publish-to-delivery latency, open loop".into(),
            Some(d),
            Some(j),
        );
        e1.extra
            .insert("direct_max_msgs_per_s".into(), json!(max.round()));
        e1.extra.insert("rate_msgs_per_s".into(), json!(rate));
        e1.extra.insert("load".into(), json!(args.e1_load));
        results.push(e1);
    }
    if args.only.is_empty() || args.only.iter().any(|o| o.starts_with("K1")) {
        bench.prepare_store().await?;
        for (op, name) in [(KvOp::Set, "set"), (KvOp::Get, "get")] {
            let id = format!("K1-{name}-lat");
            if selected(args, &id) {
                let (d, j) =
                    alternate(&id, args.repeat, |path| bench.kv(path, op, 1, amount)).await?;
                results.push(Scenario::new(
                    &id,
                    format!("key-value {name} latency, 1 in flight"),
                    Some(d),
                    Some(j),
                ));
            }
            let id = format!("K1-{name}-tput");
            if selected(args, &id) {
                let c = args.concurrency;
                let (d, j) =
                    alternate(&id, args.repeat, |path| bench.kv(path, op, c, amount)).await?;
                results.push(Scenario::new(
                    &id,
                    format!("key-value {name} throughput, {c} concurrent"),
                    Some(d),
                    Some(j),
                ));
            }
        }
    }
    if selected(args, "M2") && bench.jetway_pid.is_some() {
        let events = match args.count {
            Some(n) => n,
            None if args.quick => 5_000,
            None => 100_000,
        };
        eprintln!("[M2] {events} events published at full speed, one slow consumer");
        let mut m2 = Scenario::new(
            "M2",
            "jetway-server RSS while a slow consumer's backlog builds".into(),
            None,
            None,
        );
        m2.extra = as_map(bench.slow_consumer(window, events).await?);
        results.push(m2);
    }
    // The server's CPU per event across publish (P1) and deliver + ack (C1).
    let server_cpu = |id: &str| {
        results
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.jetway.as_ref()?.cpu_us_per_event)
            .map(|cpu| cpu[1])
    };
    if let (Some(publish), Some(deliver)) = (server_cpu("P1"), server_cpu("C1")) {
        let mut cpu = Scenario::new("CPU", "jetway-server CPU per event".into(), None, None);
        cpu.extra
            .insert("publish_us".into(), json!(stats::round2(publish)));
        cpu.extra
            .insert("deliver_ack_us".into(), json!(stats::round2(deliver)));
        cpu.extra
            .insert("total_us".into(), json!(stats::round2(publish + deliver)));
        results.push(cpu);
    }
    report::evaluate(&mut results);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::json(header, &results))?
        );
    } else {
        print!("{}", report::table(&results));
    }
    Ok(())
}

fn as_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => Map::from_iter([("value".to_owned(), other)]),
    }
}

/// Throughput of streaming publishes against the in-flight window and the event size.
async fn scaling(bench: &Bench, args: &Args, header: Map<String, Value>) -> Result<()> {
    const WINDOWS: [usize; 5] = [1, 8, 64, 256, 1024];
    const SIZES: [usize; 4] = [128, 1024, 16 * 1024, 256 * 1024];
    let amount = amount(args);
    let mut by_window = Vec::new();
    for window in WINDOWS {
        let id = format!("window {window}");
        let (d, j) = alternate(&id, args.repeat, |path| {
            bench.stream_publish(path, window, args.size, amount)
        })
        .await?;
        by_window.push((window, d, j));
    }
    let mut by_size = Vec::new();
    for size in SIZES {
        let id = format!("size {}", size_label(size));
        let window = size_window(args.window, size);
        let (d, j) = alternate(&id, args.repeat, |path| {
            bench.stream_publish(path, window, size, amount)
        })
        .await?;
        by_size.push((size, d, j));
    }
    let rate = |side: &Side| side.msgs_per_s.unwrap_or(0.0);
    let mib = |side: &Side, size: usize| rate(side) * size as f64 / (1024.0 * 1024.0);
    let panels = [
        plot::Panel {
            title: format!("STREAMING PUBLISH, {} EVENTS", size_label(args.size)),
            x_labels: WINDOWS.iter().map(|w| w.to_string()).collect(),
            x_title: "PUBLISHES IN FLIGHT".into(),
            y_title: "MSGS/S".into(),
            series: vec![
                plot::Series {
                    name: "DIRECT (ASYNC-NATS)".into(),
                    values: by_window.iter().map(|(_, d, _)| rate(d)).collect(),
                },
                plot::Series {
                    name: "JETWAY (PUBLISHSTREAM)".into(),
                    values: by_window.iter().map(|(_, _, j)| rate(j)).collect(),
                },
            ],
        },
        plot::Panel {
            title: format!(
                "STREAMING PUBLISH, {} IN FLIGHT (AT MOST 32 MIB)",
                args.window
            ),
            x_labels: SIZES.iter().map(|&s| size_label(s)).collect(),
            x_title: "EVENT SIZE".into(),
            y_title: "MIB/S".into(),
            series: vec![
                plot::Series {
                    name: "DIRECT (ASYNC-NATS)".into(),
                    values: by_size.iter().map(|(s, d, _)| mib(d, *s)).collect(),
                },
                plot::Series {
                    name: "JETWAY (PUBLISHSTREAM)".into(),
                    values: by_size.iter().map(|(s, _, j)| mib(j, *s)).collect(),
                },
            ],
        },
    ];
    plot::write(&args.plot, &panels)?;
    eprintln!("wrote {}", args.plot.display());
    let point = |label: (&str, Value), d: &Side, j: &Side, size: usize| {
        json!({
            label.0: label.1,
            "direct": {"msgs_per_s": rate(d).round(), "mib_per_s": stats::round1(mib(d, size))},
            "jetway": {"msgs_per_s": rate(j).round(), "mib_per_s": stats::round1(mib(j, size))},
            "ratio": stats::round2(rate(j) / rate(d).max(1.0)),
        })
    };
    let windows: Vec<Value> = by_window
        .iter()
        .map(|(w, d, j)| point(("window", json!(w)), d, j, args.size))
        .collect();
    let sizes: Vec<Value> = by_size
        .iter()
        .map(|(s, d, j)| point(("size", json!(s)), d, j, *s))
        .collect();
    if args.json {
        let mut out = header;
        out.insert(
            "scaling".into(),
            json!({"by_window": windows, "by_size": sizes}),
        );
        println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
        return Ok(());
    }
    println!(
        "throughput against publishes in flight ({} events)",
        size_label(args.size)
    );
    println!(
        "{:>8} {:>12} {:>12} {:>6}",
        "window", "direct/s", "jetway/s", "ratio"
    );
    for (w, d, j) in &by_window {
        println!(
            "{w:>8} {:>12.0} {:>12.0} {:>6.2}",
            rate(d),
            rate(j),
            rate(j) / rate(d).max(1.0)
        );
    }
    println!(
        "\nthroughput against event size ({} in flight, at most 32 MiB)",
        args.window
    );
    println!(
        "{:>8} {:>12} {:>12} {:>10} {:>10} {:>6}",
        "size", "direct/s", "jetway/s", "direct MiB/s", "jetway MiB/s", "ratio"
    );
    for (s, d, j) in &by_size {
        println!(
            "{:>8} {:>12.0} {:>12.0} {:>10.1} {:>10.1} {:>6.2}",
            size_label(*s),
            rate(d),
            rate(j),
            mib(d, *s),
            mib(j, *s),
            rate(j) / rate(d).max(1.0)
        );
    }
    Ok(())
}

/// Most bytes in flight in the size curve: nats-server refuses publishes with "too many requests"
/// (429) when a stream has much more than this waiting to be stored.
const MAX_BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;

/// The in-flight window for events of `size`: `window`, or less to stay within
/// [`MAX_BYTES_IN_FLIGHT`].
fn size_window(window: usize, size: usize) -> usize {
    window.min(MAX_BYTES_IN_FLIGHT / size).max(1)
}

/// 128 B, 1 KiB, 16 KiB, 256 KiB, 1 MiB.
fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MIB", size >> 20)
    } else if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KIB", size / 1024)
    } else {
        format!("{size} B")
    }
}
