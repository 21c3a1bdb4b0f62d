//! `--growth`: how Jetway's cost grows with the work, one dimension at a time, each on freshly
//! started servers (so one dimension's memory does not show in the next one's RSS):
//!
//! - **streams**: P1's streaming publish (1,024 in flight) spread over 1 to 1,000 streams, one
//!   subject each, the events going to each stream in turn;
//! - **payload**: P1 with events of 64 B to 1 MiB (at most 32 MiB in flight, as `--scaling`);
//! - **connections**: the same 1,024 publishes in flight split evenly over 1 to 1,000 connections
//!   (a NATS connection each on the direct path, an HTTP/2 connection with its own PublishStream on
//!   Jetway's), so the load stays the same and only its spread changes;
//! - **subscriptions**: jetway-server's RSS with 10 to 10,000 idle Events subscriptions (M1).
//!
//! Each point reports the throughput of both paths and their ratio, jetway-server's CPU per event
//! and its RSS after the point; each dimension is drawn into one PNG, and the goals of issue 23 are
//! checked against the run.

use std::{path::Path as FsPath, sync::Arc};

use async_nats::jetstream::{self, stream};
use futures::{StreamExt, stream::FuturesUnordered};
use serde_json::{Map, Value, json};

use crate::{
    Result, alternate, plot,
    report::Goal,
    scenarios::{Amount, Bench, Links, SUBJECT},
    setup::rss_bytes,
    size_label, size_window,
    stats::{Side, round1, round2},
};

/// What the points of one dimension are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dimension {
    /// Streams published to.
    Streams,
    /// Event size in bytes.
    Payload,
    /// Client connections the publishes are spread over.
    Connections,
    /// Idle Events subscriptions held open.
    Subscriptions,
}

/// Every dimension, in the order they run.
pub(crate) const DIMENSIONS: [Dimension; 4] = [
    Dimension::Subscriptions,
    Dimension::Streams,
    Dimension::Payload,
    Dimension::Connections,
];

/// The points of each dimension.
const STREAMS: [usize; 4] = [1, 10, 100, 1000];
const PAYLOADS: [usize; 6] = [64, 1024, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
const CONNECTIONS: [usize; 4] = [1, 10, 100, 1000];
const SUBSCRIPTIONS: [usize; 4] = [10, 100, 1000, 10_000];

/// Stream management requests in flight at once when creating or purging many streams.
const MANAGING: usize = 32;

/// The goals of issue 23 on the growth curves.
const STREAMS_KEPT: f64 = 0.8;
const PAYLOAD_GOAL_SIZE: usize = 64 << 10;
const PAYLOAD_GOAL_RATIO: f64 = 0.9;
const SUBSCRIPTIONS_RSS_MIB: f64 = 300.0;
/// "Linear": a subscription at 10,000 may cost at most this much more than one at 1,000 (noise).
const LINEAR_SLACK: f64 = 1.1;

/// How the growth run is set up.
pub(crate) struct Settings {
    /// Per round.
    pub amount: Amount,
    /// Each point's four rounds run this many times.
    pub repeat: usize,
    /// Publishes in flight in all.
    pub window: usize,
    /// The NATS URL, for the connections of the connections dimension.
    pub nats_url: String,
}

/// One point of a curve.
pub(crate) struct Point {
    /// Its x value (streams, bytes, connections, subscriptions).
    pub x: usize,
    /// The direct path, where there is one.
    pub direct: Option<Side>,
    /// Jetway's path, where it was a throughput.
    pub jetway: Option<Side>,
    /// jetway-server's RSS after the point, in MiB.
    pub rss_mib: Option<f64>,
    /// Further numbers (the subscriptions' memory readings).
    pub extra: Map<String, Value>,
}

impl Point {
    /// A point of a throughput dimension: both paths' rounds, and the RSS after them.
    fn throughput(x: usize, (direct, jetway): (Side, Side), rss_mib: Option<f64>) -> Point {
        Point {
            x,
            direct: Some(direct),
            jetway: Some(jetway),
            rss_mib,
            extra: Map::new(),
        }
    }

    fn rate(side: &Option<Side>) -> Option<f64> {
        side.as_ref()?.msgs_per_s
    }

    fn ratio(&self) -> Option<f64> {
        Some(Point::rate(&self.jetway)? / Point::rate(&self.direct)?.max(1.0))
    }

    fn server_cpu_us(&self) -> Option<f64> {
        Some(self.jetway.as_ref()?.cpu_us_per_event?[1])
    }

    /// nats-server's CPU per event on one path: where a cost grows on both paths alike.
    fn nats_cpu_us(side: &Option<Side>) -> Option<f64> {
        Some(side.as_ref()?.cpu_us_per_event?[2])
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.extra.get(key)?.as_f64()
    }
}

/// One dimension's curve.
pub(crate) struct Curve {
    /// Which dimension.
    pub dimension: Dimension,
    /// Its points, in growing order.
    pub points: Vec<Point>,
    /// Its goal, checked against the points.
    pub goal: Option<Goal>,
}

/// Measures `dimension` on `bench`'s servers.
pub(crate) async fn measure(
    dimension: Dimension,
    bench: &Bench,
    settings: &Settings,
) -> Result<Curve> {
    let mut points = Vec::new();
    match dimension {
        Dimension::Streams => {
            let links = Links::own(bench);
            for count in STREAMS {
                let streams = create_streams(bench, count).await?;
                let subjects: Arc<[String]> = (0..count).map(|i| format!("grow.{i}")).collect();
                let sides = spread(
                    bench,
                    settings,
                    &format!("{count} streams"),
                    &links,
                    &subjects,
                    || purge(&streams),
                )
                .await?;
                let rss_mib = rss(bench);
                delete_streams(bench, count).await?;
                points.push(Point::throughput(count, sides, rss_mib));
            }
        }
        Dimension::Payload => {
            for size in PAYLOADS {
                let window = size_window(settings.window, size);
                let (direct, jetway) = alternate(
                    &format!("{} events", size_label(size)),
                    settings.repeat,
                    |path| bench.stream_publish(path, window, size, settings.amount),
                )
                .await?;
                points.push(Point::throughput(size, (direct, jetway), rss(bench)));
            }
        }
        Dimension::Connections => {
            let subjects: Arc<[String]> = Arc::new([SUBJECT.to_owned()]);
            for count in CONNECTIONS {
                eprintln!("[growth] opening {count} connections of each kind");
                let links = Links::open(bench, &settings.nats_url, count).await?;
                let sides = spread(
                    bench,
                    settings,
                    &format!("{count} connections"),
                    &links,
                    &subjects,
                    || async { bench.reset_stream().await.map(drop) },
                )
                .await?;
                points.push(Point::throughput(count, sides, rss(bench)));
            }
        }
        Dimension::Subscriptions => {
            for count in SUBSCRIPTIONS {
                eprintln!("[growth] {count} idle Events subscriptions");
                let Value::Object(extra) = bench.idle_subscriptions(count, settings.window).await?
                else {
                    return Err("idle subscriptions reported no numbers".into());
                };
                let rss_mib = extra.get("rss_after_mib").and_then(Value::as_f64);
                eprintln!(
                    "[growth] {count} subscriptions: {} MiB, {} KiB each",
                    rss_mib.unwrap_or_default(),
                    extra
                        .get("kib_per_subscription")
                        .and_then(Value::as_f64)
                        .unwrap_or_default()
                );
                points.push(Point {
                    x: count,
                    direct: None,
                    jetway: None,
                    rss_mib,
                    extra,
                });
            }
        }
    }
    let goal = goal(dimension, &points);
    Ok(Curve {
        dimension,
        points,
        goal,
    })
}

/// Both paths' rounds of P1's publish spread over `links` and `subjects` (the streams and
/// connections dimensions); `empty` runs before each round, so every round starts on empty streams.
async fn spread<E, Fut>(
    bench: &Bench,
    settings: &Settings,
    id: &str,
    links: &Links,
    subjects: &Arc<[String]>,
    empty: E,
) -> Result<(Side, Side)>
where
    E: Fn() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    alternate(id, settings.repeat, |path| {
        let empty = &empty;
        async move {
            empty().await?;
            bench
                .spread_publish(path, links, subjects, settings.window, settings.amount)
                .await
        }
    })
    .await
}

fn rss(bench: &Bench) -> Option<f64> {
    Some(round1(
        rss_bytes(bench.jetway_pid?)? as f64 / (1024.0 * 1024.0),
    ))
}

fn stream_name(i: usize) -> String {
    format!("GROW-{i}")
}

/// Creates streams `GROW-0`.. with one subject each (`grow.<i>`), a few at a time.
async fn create_streams(bench: &Bench, count: usize) -> Result<Vec<stream::Stream>> {
    eprintln!("[growth] creating {count} streams");
    let js = jetstream::new(bench.nats.clone());
    let mut creating = FuturesUnordered::new();
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        if creating.len() >= MANAGING
            && let Some(created) = creating.next().await
        {
            streams.push(created?);
        }
        let js = js.clone();
        creating.push(async move {
            let name = stream_name(i);
            // Left over from an interrupted run, or absent: either way it is made anew.
            js.delete_stream(&name).await.ok();
            let created = js
                .create_stream(stream::Config {
                    name,
                    subjects: vec![format!("grow.{i}")],
                    storage: bench.storage,
                    num_replicas: bench.replicas,
                    ..Default::default()
                })
                .await?;
            Result::Ok(created)
        });
    }
    while let Some(created) = creating.next().await {
        streams.push(created?);
    }
    Ok(streams)
}

/// Empties `streams`, so every round starts on empty ones.
async fn purge(streams: &[stream::Stream]) -> Result<()> {
    let mut purging = FuturesUnordered::new();
    for stream in streams {
        if purging.len() >= MANAGING
            && let Some(purged) = purging.next().await
        {
            purged?;
        }
        purging.push(async move { stream.purge().await.map(drop) });
    }
    while let Some(purged) = purging.next().await {
        purged?;
    }
    Ok(())
}

async fn delete_streams(bench: &Bench, count: usize) -> Result<()> {
    let js = jetstream::new(bench.nats.clone());
    let mut deleting = FuturesUnordered::new();
    for i in 0..count {
        if deleting.len() >= MANAGING
            && let Some(deleted) = deleting.next().await
        {
            deleted?;
        }
        let js = js.clone();
        deleting.push(async move { js.delete_stream(stream_name(i)).await.map(drop) });
    }
    while let Some(deleted) = deleting.next().await {
        deleted?;
    }
    Ok(())
}

/// The goal of issue 23 for `dimension`, when the points have what it needs.
fn goal(dimension: Dimension, points: &[Point]) -> Option<Goal> {
    let at = |x: usize| points.iter().find(|p| p.x == x);
    match dimension {
        Dimension::Streams => {
            let (one, many) = (at(1)?, at(1000)?);
            let kept = Point::rate(&many.jetway)? / Point::rate(&one.jetway)?.max(1.0);
            Some(Goal {
                target: format!(
                    "Jetway with 1000 streams >= {STREAMS_KEPT:.1} x with one (kept {kept:.2})"
                ),
                met: kept >= STREAMS_KEPT,
            })
        }
        Dimension::Payload => {
            let ratio = at(PAYLOAD_GOAL_SIZE)?.ratio()?;
            Some(Goal {
                target: format!(
                    "ratio at {} >= {PAYLOAD_GOAL_RATIO:.1} (got {ratio:.2})",
                    size_label(PAYLOAD_GOAL_SIZE)
                ),
                met: ratio >= PAYLOAD_GOAL_RATIO,
            })
        }
        Dimension::Subscriptions => {
            let (thousand, most) = (at(1000)?, at(10_000)?);
            let rss = most.rss_mib?;
            let (each_at_1000, each_at_10000) = (
                thousand.number("kib_per_subscription")?,
                most.number("kib_per_subscription")?,
            );
            Some(Goal {
                target: format!(
                    "RSS with 10000 <= {SUBSCRIPTIONS_RSS_MIB:.0} MiB (got {rss:.1}), and linear: \
                     KiB each at 10000 <= {LINEAR_SLACK} x at 1000 ({each_at_10000:.1} vs {each_at_1000:.1})"
                ),
                met: rss <= SUBSCRIPTIONS_RSS_MIB && each_at_10000 <= LINEAR_SLACK * each_at_1000,
            })
        }
        Dimension::Connections => None,
    }
}

impl Dimension {
    /// Its name, as `--only` selects it and its plot is named.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dimension::Streams => "streams",
            Dimension::Payload => "payload",
            Dimension::Connections => "connections",
            Dimension::Subscriptions => "subscriptions",
        }
    }

    fn label(self, x: usize) -> String {
        match self {
            Dimension::Payload => size_label(x),
            _ if x >= 1000 && x.is_multiple_of(1000) => format!("{}K", x / 1000),
            _ => x.to_string(),
        }
    }

    fn x_title(self) -> &'static str {
        match self {
            Dimension::Streams => "STREAMS (1024 IN FLIGHT)",
            Dimension::Payload => "EVENT SIZE (1024 IN FLIGHT, AT MOST 32 MIB)",
            Dimension::Connections => "CONNECTIONS (1024 IN FLIGHT IN ALL)",
            Dimension::Subscriptions => "IDLE EVENTS SUBSCRIPTIONS",
        }
    }
}

/// Writes `<dir>/growth-<dimension>.png`: throughput of both paths (MiB/s for the payload curve),
/// jetway-server's CPU per event and its RSS; for subscriptions, RSS and KiB per subscription.
pub(crate) fn plot(curve: &Curve, dir: &FsPath) -> Result<std::path::PathBuf> {
    let dimension = curve.dimension;
    let x_labels: Vec<String> = curve.points.iter().map(|p| dimension.label(p.x)).collect();
    let panel = |title: &str, y_title: &str, series: Vec<plot::Series>| plot::Panel {
        title: title.into(),
        x_labels: x_labels.clone(),
        x_title: dimension.x_title().into(),
        y_title: y_title.into(),
        series,
    };
    let series = |name: &str, value: &dyn Fn(&Point) -> Option<f64>| plot::Series {
        name: name.into(),
        values: curve
            .points
            .iter()
            .map(|p| value(p).unwrap_or(0.0))
            .collect(),
    };
    let rss = panel(
        "JETWAY-SERVER RSS",
        "MIB",
        vec![series("RSS AFTER THE POINT", &|p| p.rss_mib)],
    );
    let panels = match dimension {
        Dimension::Subscriptions => vec![
            rss,
            panel(
                "MEMORY PER SUBSCRIPTION",
                "KIB",
                vec![series("KIB EACH", &|p| p.number("kib_per_subscription"))],
            ),
        ],
        _ => {
            let (title, unit, scale): (&str, &str, fn(&Point, f64) -> f64) =
                if dimension == Dimension::Payload {
                    ("PUBLISH THROUGHPUT", "MIB/S", |p, rate| {
                        rate * p.x as f64 / (1024.0 * 1024.0)
                    })
                } else {
                    ("PUBLISH THROUGHPUT", "MSGS/S", |_, rate| rate)
                };
            vec![
                panel(
                    title,
                    unit,
                    vec![
                        series("DIRECT (ASYNC-NATS)", &|p| {
                            Point::rate(&p.direct).map(|r| scale(p, r))
                        }),
                        series("JETWAY (PUBLISHSTREAM)", &|p| {
                            Point::rate(&p.jetway).map(|r| scale(p, r))
                        }),
                    ],
                ),
                panel(
                    "JETWAY-SERVER CPU PER EVENT",
                    "US",
                    vec![series("JETWAY-SERVER", &Point::server_cpu_us)],
                ),
                rss,
            ]
        }
    };
    let path = dir.join(format!("growth-{}.png", dimension.name()));
    plot::write(&path, &panels)?;
    Ok(path)
}

/// The curves as JSON: per dimension its points and goal.
pub(crate) fn json(curves: &[Curve]) -> Value {
    Value::from(
        curves
            .iter()
            .map(|curve| {
                let points: Vec<Value> = curve
                    .points
                    .iter()
                    .map(|p| {
                        let mut out = Map::new();
                        out.insert(curve.dimension.name().into(), json!(p.x));
                        if let Some(rate) = Point::rate(&p.direct) {
                            out.insert("direct_msgs_per_s".into(), json!(rate.round()));
                        }
                        if let Some(rate) = Point::rate(&p.jetway) {
                            out.insert("jetway_msgs_per_s".into(), json!(rate.round()));
                        }
                        if let Some(ratio) = p.ratio() {
                            out.insert("ratio".into(), json!(round2(ratio)));
                        }
                        if let Some(cpu) = p.server_cpu_us() {
                            out.insert("jetway_cpu_us_per_event".into(), json!(round2(cpu)));
                        }
                        for (key, side) in [
                            ("direct_nats_cpu_us_per_event", &p.direct),
                            ("jetway_nats_cpu_us_per_event", &p.jetway),
                        ] {
                            if let Some(cpu) = Point::nats_cpu_us(side) {
                                out.insert(key.into(), json!(round2(cpu)));
                            }
                        }
                        if let Some(rss) = p.rss_mib {
                            out.insert("rss_mib".into(), json!(rss));
                        }
                        for (key, value) in &p.extra {
                            out.insert(key.clone(), value.clone());
                        }
                        Value::Object(out)
                    })
                    .collect();
                let mut out = Map::new();
                out.insert("dimension".into(), json!(curve.dimension.name()));
                out.insert("points".into(), Value::from(points));
                if let Some(goal) = &curve.goal {
                    out.insert(
                        "goal".into(),
                        json!({"target": goal.target, "met": goal.met}),
                    );
                }
                Value::Object(out)
            })
            .collect::<Vec<_>>(),
    )
}

/// The curves as text tables.
pub(crate) fn table(curves: &[Curve]) -> String {
    let mut out = String::new();
    for curve in curves {
        let dimension = curve.dimension;
        out.push_str(&format!("\ngrowth: {}\n", dimension.name()));
        if let Some(goal) = &curve.goal {
            out.push_str(&format!(
                "  [{}: {}]\n",
                if goal.met { "goal met" } else { "goal NOT met" },
                goal.target
            ));
        }
        if dimension == Dimension::Subscriptions {
            out.push_str(&format!(
                "{:>14} {:>12} {:>12} {:>10}\n",
                "subscriptions", "before MiB", "after MiB", "KiB each"
            ));
            for p in &curve.points {
                let n = |key: &str| p.number(key).unwrap_or(0.0);
                out.push_str(&format!(
                    "{:>14} {:>12.1} {:>12.1} {:>10.1}\n",
                    p.x,
                    n("rss_before_mib"),
                    n("rss_after_mib"),
                    n("kib_per_subscription")
                ));
            }
            continue;
        }
        out.push_str(&format!(
            "{:>12} {:>12} {:>12} {:>6} {:>14} {:>16} {:>10}\n",
            dimension.name(),
            "direct/s",
            "jetway/s",
            "ratio",
            "server us/ev",
            "nats us/ev d/j",
            "RSS MiB"
        ));
        for p in &curve.points {
            let nats = |side| Point::nats_cpu_us(side).unwrap_or(0.0);
            out.push_str(&format!(
                "{:>12} {:>12.0} {:>12.0} {:>6.2} {:>14.2} {:>16} {:>10.1}\n",
                dimension.label(p.x),
                Point::rate(&p.direct).unwrap_or(0.0),
                Point::rate(&p.jetway).unwrap_or(0.0),
                p.ratio().unwrap_or(0.0),
                p.server_cpu_us().unwrap_or(0.0),
                format!("{:.1}/{:.1}", nats(&p.direct), nats(&p.jetway)),
                p.rss_mib.unwrap_or(0.0)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::{Measure, Round};

    fn rate(events: u64) -> Option<Side> {
        Some(Side::combine(&[Round {
            measure: Measure::Throughput {
                events,
                elapsed: Duration::from_secs(1),
            },
            events,
            cpu: None,
        }]))
    }

    fn point(x: usize, direct: u64, jetway: u64) -> Point {
        Point {
            x,
            direct: rate(direct),
            jetway: rate(jetway),
            rss_mib: Some(50.0),
            extra: Map::new(),
        }
    }

    fn idle(x: usize, rss: f64, each: f64) -> Point {
        let mut extra = Map::new();
        extra.insert("kib_per_subscription".into(), json!(each));
        Point {
            x,
            direct: None,
            jetway: None,
            rss_mib: Some(rss),
            extra,
        }
    }

    #[test]
    fn goals_follow_the_issue() {
        let met = |d: Dimension, points: &[Point]| goal(d, points).map(|g| g.met);
        let streams = |many: u64| [point(1, 100, 100), point(1000, 90, many)];
        assert_eq!(met(Dimension::Streams, &streams(80)), Some(true));
        assert_eq!(met(Dimension::Streams, &streams(79)), Some(false));
        assert_eq!(met(Dimension::Streams, &streams(80)[..1]), None);
        let payload = |jetway: u64| [point(1024, 100, 50), point(64 << 10, 100, jetway)];
        assert_eq!(met(Dimension::Payload, &payload(90)), Some(true));
        assert_eq!(met(Dimension::Payload, &payload(89)), Some(false));
        let subs = |rss: f64, each: f64| [idle(1000, 80.0, 60.0), idle(10_000, rss, each)];
        assert_eq!(
            met(Dimension::Subscriptions, &subs(290.0, 60.0)),
            Some(true)
        );
        assert_eq!(
            met(Dimension::Subscriptions, &subs(310.0, 30.0)),
            Some(false)
        );
        assert_eq!(
            met(Dimension::Subscriptions, &subs(290.0, 70.0)),
            Some(false),
            "worse than linear"
        );
        assert_eq!(met(Dimension::Connections, &streams(80)), None);
    }

    #[test]
    fn reports_every_point() {
        let curve = Curve {
            dimension: Dimension::Payload,
            points: vec![point(64, 100, 120), point(1 << 20, 10, 9)],
            goal: None,
        };
        let json = json(std::slice::from_ref(&curve));
        assert_eq!(json[0]["dimension"], "payload");
        assert_eq!(json[0]["points"][1]["payload"], 1 << 20);
        assert_eq!(json[0]["points"][0]["ratio"], 1.2);
        let text = table(&[curve]);
        assert!(text.contains("1 MIB") && text.contains("64 B"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let curves = [
            Curve {
                dimension: Dimension::Streams,
                points: vec![point(1, 100, 90), point(1000, 80, 70)],
                goal: None,
            },
            Curve {
                dimension: Dimension::Subscriptions,
                points: vec![idle(10, 30.0, 70.0), idle(10_000, 700.0, 69.0)],
                goal: None,
            },
        ];
        for curve in &curves {
            let path = plot(curve, dir.path()).unwrap();
            assert_eq!(&std::fs::read(path).unwrap()[..4], b"\x89PNG");
        }
    }
}
