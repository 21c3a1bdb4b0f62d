//! The results: each scenario with its two sides, the ratio, and the issue's goal for it (checked
//! against this run's own numbers, e.g. H0 for the latency bounds); printed as a table or as one
//! JSON object.

use serde_json::{Map, Value, json};

use crate::stats::{PERCENTILES, Side, ratio, round2};

/// E1's rate as a fraction of the direct maximum, where the issue states E1's goal: the default of
/// `--e1-load`, and the only load E1 is judged at.
pub(crate) const E1_GOAL_LOAD: f64 = 0.5;

/// One scenario's results.
pub(crate) struct Scenario {
    /// Its id, e.g. `P1`.
    pub id: String,
    /// What it measures.
    pub title: String,
    /// The async-nats side; `None` for Jetway-only measures.
    pub direct: Option<Side>,
    /// The Jetway side; `None` for measures that are only numbers in `extra`.
    pub jetway: Option<Side>,
    /// Further numbers, e.g. the rate E1 ran at, or memory readings.
    pub extra: Map<String, Value>,
    /// The goal and whether this run met it.
    pub goal: Option<Goal>,
}

/// A goal of the issue, as checked in this run.
pub(crate) struct Goal {
    /// The bound, with this run's numbers filled in.
    pub target: String,
    /// Whether it was met.
    pub met: bool,
}

impl Scenario {
    /// A scenario with both sides, or only Jetway's.
    pub(crate) fn new(
        id: &str,
        title: String,
        direct: Option<Side>,
        jetway: Option<Side>,
    ) -> Scenario {
        Scenario {
            id: id.into(),
            title,
            direct,
            jetway,
            extra: Map::new(),
            goal: None,
        }
    }

    /// Jetway/direct for throughput, direct/Jetway for latency.
    pub(crate) fn ratio(&self) -> Option<f64> {
        ratio(self.direct.as_ref()?, self.jetway.as_ref()?)
    }

    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), json!(self.id));
        out.insert("title".into(), json!(self.title));
        if let Some(direct) = &self.direct {
            out.insert("direct".into(), direct.to_json());
        }
        if let Some(jetway) = &self.jetway {
            out.insert("jetway".into(), jetway.to_json());
        }
        if let Some(ratio) = self.ratio() {
            out.insert("ratio".into(), json!(round2(ratio)));
        }
        for (key, value) in &self.extra {
            out.insert(key.clone(), value.clone());
        }
        if let Some(goal) = &self.goal {
            out.insert(
                "goal".into(),
                json!({"target": goal.target, "met": goal.met}),
            );
        }
        Value::Object(out)
    }
}

/// Checks the issue's goals against this run, where the run has what a goal needs.
pub(crate) fn evaluate(scenarios: &mut [Scenario]) {
    let find = |id: &str| scenarios.iter().find(|s| s.id == id);
    let floor = |q: f64| find("H0")?.jetway.as_ref()?.percentile_us(q);
    let (h0_p50, h0_p99) = (floor(0.5), floor(0.99));
    let unary_p50 = find("P3").and_then(|s| s.jetway.as_ref()?.percentile_us(0.5));
    let cpu_total = ["P1", "C1"]
        .iter()
        .map(|id| Some(find(id)?.jetway.as_ref()?.cpu_us_per_event?[1]))
        .sum::<Option<f64>>();
    for scenario in scenarios.iter_mut() {
        let ratio_goal = |min: f64| {
            scenario.ratio().map(|r| Goal {
                target: format!("ratio >= {min:.2}"),
                met: r >= min,
            })
        };
        let goal = match scenario.id.as_str() {
            "P1" => ratio_goal(0.90),
            "P2" => ratio_goal(0.50),
            "P2s" => ratio_goal(0.80),
            "C1" => ratio_goal(0.85),
            "G1" => number(scenario, "ratio_to_p2").map(|ratio| Goal {
                target: "HTTP publish >= 0.80x P2's gRPC PublishEvent".into(),
                met: ratio >= 0.80,
            }),
            "P3" => latency_goal(scenario, &[(0.5, h0_p50, 30.0), (0.99, h0_p99, 150.0)]),
            "P3s" => unary_p50
                .zip(scenario.jetway.as_ref().and_then(|j| j.percentile_us(0.5)))
                .map(|(unary, sdk)| Goal {
                    target: format!(
                        "p50 <= unary PublishEvent (P3) p50 + {SDK_LATENCY_SLACK_US:.0} = {:.0} us",
                        unary + SDK_LATENCY_SLACK_US
                    ),
                    met: sdk <= unary + SDK_LATENCY_SLACK_US,
                }),
            "P2-ceiling" => number(scenario, "share_of_ceiling").map(|share| Goal {
                target: format!("P2 >= {P2_CEILING_SHARE:.2} of its ceiling"),
                met: share >= P2_CEILING_SHARE,
            }),
            // Other loads explore where the queues start; the goal is not theirs.
            "E1" if number(scenario, "load") == Some(E1_GOAL_LOAD) => {
                latency_goal(scenario, &[(0.99, h0_p99, 250.0)])
            }
            "CPU" => cpu_total.map(|total| Goal {
                target: "jetway-server CPU <= 10 us per event (publish + deliver + ack)".into(),
                met: total <= 10.0,
            }),
            "M1" => number(scenario, "rss_after_mib").map(|rss| Goal {
                target: "RSS < 150 MiB".into(),
                met: rss < 150.0,
            }),
            "M2" => number(scenario, "rss_start_mib")
                .zip(number(scenario, "rss_peak_mib"))
                .map(|(start, peak)| Goal {
                    target: "flat RSS: peak <= start + 16 MiB".into(),
                    met: peak <= start + 16.0,
                }),
            _ => None,
        };
        scenario.goal = goal;
    }
}

/// How much later than a unary PublishEvent (P3) one caller's publish through jetway-client (P3s)
/// may be answered, at p50.
const SDK_LATENCY_SLACK_US: f64 = 10.0;

/// The share of its ceiling P2 must reach.
const P2_CEILING_SHARE: f64 = 0.85;

/// P2 beside its ceiling, given `h1`, H1's rounds measured beside P2's: a unary publish costs at
/// least an empty unary call on the same channel (H1) plus what the JetStream publish costs on its
/// own (P2's direct side). With the machine saturated, their times per operation add, so the
/// ceiling is `1 / (1/H1 + 1/direct)` calls per second. The goal is judged on these rates; the CPU
/// time per call of the same rounds is reported beside them.
pub(crate) fn p2_ceiling(h1_side: &Side, p2: &Scenario) -> Option<Scenario> {
    let rate = |side: Option<&Side>| side?.msgs_per_s.filter(|&r| r > 0.0);
    let (h1, direct, unary) = (
        rate(Some(h1_side))?,
        rate(p2.direct.as_ref())?,
        rate(p2.jetway.as_ref())?,
    );
    let ceiling = 1.0 / (1.0 / h1 + 1.0 / direct);
    let mut scenario = Scenario::new(
        "P2-ceiling",
        "unary publish against its ceiling, 1 / (1/H1 + 1/direct P2), H1 beside P2".into(),
        None,
        None,
    );
    for (key, value) in [
        ("h1_msgs_per_s", h1.round()),
        ("direct_msgs_per_s", direct.round()),
        ("ceiling_msgs_per_s", ceiling.round()),
        ("p2_msgs_per_s", unary.round()),
        ("share_of_ceiling", round2(unary / ceiling)),
    ] {
        scenario.extra.insert(key.into(), json!(value));
    }
    // The same comparison in CPU time per call over the three processes, which other work on
    // the machine disturbs less than rates: (H1's + the direct publish's) / P2's.
    let cpu = |side: Option<&Side>| Some(side?.cpu_us_per_event?.iter().sum::<f64>());
    if let (Some(h1), Some(direct), Some(unary)) = (
        cpu(Some(h1_side)),
        cpu(p2.direct.as_ref()),
        cpu(p2.jetway.as_ref()),
    ) && unary > 0.0
    {
        // By process, so the gap can be placed: H1's calls cost the three processes what P2's
        // calls cost them beyond a publish.
        if let Some([client, jetway, nats]) = h1_side.cpu_us_per_event {
            for (key, value) in [
                ("h1_bench_cpu_us_per_call", client),
                ("h1_jetway_cpu_us_per_call", jetway),
                ("h1_nats_cpu_us_per_call", nats),
            ] {
                scenario.extra.insert(key.into(), json!(round2(value)));
            }
        }
        for (key, value) in [
            ("ceiling_cpu_us_per_call", round2(h1 + direct)),
            ("p2_cpu_us_per_call", round2(unary)),
            ("cpu_share_of_ceiling", round2((h1 + direct) / unary)),
        ] {
            scenario.extra.insert(key.into(), json!(value));
        }
    }
    Some(scenario)
}

/// Jetway's latency at each quantile must stay within direct + H0 + slack.
fn latency_goal(scenario: &Scenario, bounds: &[(f64, Option<f64>, f64)]) -> Option<Goal> {
    let (direct, jetway) = (scenario.direct.as_ref()?, scenario.jetway.as_ref()?);
    let mut targets = Vec::new();
    let mut met = true;
    for &(q, floor, slack) in bounds {
        let (d, j, h) = (direct.percentile_us(q)?, jetway.percentile_us(q)?, floor?);
        let bound = d + h + slack;
        targets.push(format!(
            "p{} <= {:.0}+{:.0}+{slack:.0} = {bound:.0} us",
            quantile_name(q),
            d,
            h
        ));
        met &= j <= bound;
    }
    Some(Goal {
        target: targets.join("; "),
        met,
    })
}

fn number(scenario: &Scenario, key: &str) -> Option<f64> {
    scenario.extra.get(key)?.as_f64()
}

fn quantile_name(q: f64) -> String {
    let text = format!("{}", q * 100.0);
    text.replace('.', "")
}

/// The whole run as one JSON object.
pub(crate) fn json(header: Map<String, Value>, scenarios: &[Scenario]) -> Value {
    let mut out = header;
    out.insert(
        "scenarios".into(),
        Value::from(scenarios.iter().map(Scenario::to_json).collect::<Vec<_>>()),
    );
    Value::Object(out)
}

/// The human table: per scenario a title line with the goal, then a line per measure with both
/// sides and the ratio.
pub(crate) fn table(scenarios: &[Scenario]) -> String {
    let mut out = format!(
        "{:<26} {:>12} {:>12} {:>7}\n",
        "measure", "direct", "jetway", "ratio"
    );
    for s in scenarios {
        let goal = s
            .goal
            .as_ref()
            .map(|g| {
                format!(
                    "  [{}: {}]",
                    if g.met { "goal met" } else { "goal NOT met" },
                    g.target
                )
            })
            .unwrap_or_default();
        out.push_str(&format!("\n{} {}{goal}\n", s.id, s.title));
        let side = |side: &Option<Side>, value: Option<f64>, digits: usize| match (side, value) {
            (Some(_), Some(v)) => group(v, digits),
            _ => "-".into(),
        };
        let mut row = |measure: &str, direct: String, jetway: String, ratio: String| {
            out.push_str(&format!(
                "  {measure:<24} {direct:>12} {jetway:>12} {ratio:>7}\n"
            ));
        };
        let rate = |x: &Option<Side>| x.as_ref().and_then(|x| x.msgs_per_s);
        if rate(&s.direct).is_some() || rate(&s.jetway).is_some() {
            row(
                "msgs/s",
                side(&s.direct, rate(&s.direct), 0),
                side(&s.jetway, rate(&s.jetway), 0),
                s.ratio().map(|r| format!("{r:.2}")).unwrap_or_default(),
            );
        }
        let percentile = |x: &Option<Side>, q: f64| x.as_ref().and_then(|x| x.percentile_us(q));
        if percentile(&s.direct, 0.5).is_some() || percentile(&s.jetway, 0.5).is_some() {
            for (name, q) in PERCENTILES {
                let (d, j) = (percentile(&s.direct, q), percentile(&s.jetway, q));
                row(
                    &format!(
                        "{} us",
                        name.trim_end_matches("_us").replace("p999", "p99.9")
                    ),
                    side(&s.direct, d, 1),
                    side(&s.jetway, j, 1),
                    d.zip(j)
                        .map(|(d, j)| format!("{:.2}", d / j))
                        .unwrap_or_default(),
                );
            }
        }
        for (key, value) in &s.extra {
            row(key, String::new(), value.to_string(), String::new());
        }
    }
    by_process(
        &mut out,
        scenarios,
        "CPU per event (us), by process: the bench (clients), jetway-server, nats-server",
        |side| {
            side.cpu_us_per_event
                .map(|v| v.map(|us| format!("{us:.2}")))
        },
    );
    by_process(
        &mut out,
        scenarios,
        "Wake-ups per event (voluntary context switches), by process",
        |side| side.wakeups_per_event.map(|v| v.map(|n| format!("{n:.3}"))),
    );
    out
}

/// Appends a table of `title` with one row per scenario and side that `value` reads something
/// from: the bench, jetway-server and nats-server.
fn by_process(
    out: &mut String,
    scenarios: &[Scenario],
    title: &str,
    value: fn(&Side) -> Option<[String; 3]>,
) {
    let rows: Vec<_> = scenarios
        .iter()
        .flat_map(|s| {
            [("direct", &s.direct), ("jetway", &s.jetway)]
                .into_iter()
                .filter_map(move |(name, side)| Some((&s.id, name, value(side.as_ref()?)?)))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str(&format!("\n{title}\n"));
    out.push_str(&format!(
        "{:<12} {:<7} {:>8} {:>8} {:>8}\n",
        "scenario", "path", "bench", "jetway", "nats"
    ));
    for (id, name, [client, jetway, nats]) in rows {
        out.push_str(&format!(
            "{id:<12} {name:<7} {client:>8} {jetway:>8} {nats:>8}\n"
        ));
    }
}

/// A number with thousands separators and `digits` decimals.
fn group(value: f64, digits: usize) -> String {
    let text = format!("{value:.digits$}");
    let (whole, fraction) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(w, f)| (w, Some(f)));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match fraction {
        Some(f) => format!("{grouped}.{f}"),
        None => grouped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Measure, Round};
    use std::time::Duration;

    fn rate(events: u64) -> Side {
        Side::combine(&[Round {
            measure: Measure::Throughput {
                events,
                elapsed: Duration::from_secs(1),
            },
            events,
            cpu: None,
        }])
    }

    fn latency(us: u64) -> Side {
        let mut histogram = crate::stats::histogram();
        crate::stats::record(&mut histogram, Duration::from_micros(us));
        Side::combine(&[Round {
            measure: Measure::Latency(histogram),
            events: 1,
            cpu: None,
        }])
    }

    #[test]
    fn e1_is_judged_only_at_the_load_the_goal_names() {
        let e1 = |load: f64, jetway_us: u64| {
            let mut e1 = Scenario::new(
                "E1",
                "end to end".into(),
                Some(latency(5_000)),
                Some(latency(jetway_us)),
            );
            e1.extra.insert("load".into(), json!(load));
            e1
        };
        let mut scenarios = vec![
            Scenario::new("H0", "hop".into(), None, Some(latency(200))),
            e1(E1_GOAL_LOAD, 5_400),
            e1(E1_GOAL_LOAD, 5_500),
            e1(0.3, 5_400),
        ];
        evaluate(&mut scenarios);
        let judged = |i: usize| scenarios[i].goal.as_ref().map(|goal| goal.met);
        // The bound is direct + H0 + 250 us = 5,450 us at p99.
        assert_eq!(judged(1), Some(true));
        assert_eq!(judged(2), Some(false));
        assert_eq!(judged(3), None);
    }

    #[test]
    fn p2_is_judged_against_h1_and_its_direct_side() {
        let h1 = rate(60_000);
        let p2 = |jetway: u64| {
            Scenario::new("P2", "unary".into(), Some(rate(60_000)), Some(rate(jetway)))
        };
        let ceiling = p2_ceiling(&h1, &p2(26_000)).unwrap();
        // 1 / (1/60,000 + 1/60,000) = 30,000 calls/s; 26,000 is 0.87 of it.
        assert_eq!(ceiling.extra["ceiling_msgs_per_s"], 30_000.0);
        assert_eq!(ceiling.extra["share_of_ceiling"], 0.87);
        let mut scenarios = vec![ceiling, p2_ceiling(&h1, &p2(24_000)).unwrap()];
        evaluate(&mut scenarios);
        let met = |i: usize| scenarios[i].goal.as_ref().map(|goal| goal.met);
        assert_eq!((met(0), met(1)), (Some(true), Some(false)));
        let no_h1 = Side::combine(&[]);
        assert!(
            p2_ceiling(&no_h1, &p2(26_000)).is_none(),
            "no H1, no ceiling"
        );
    }

    #[test]
    fn p2_ceiling_places_h1_cpu_by_process() {
        // 1,000 calls that cost the bench 20 ms, jetway-server 10 ms and nats-server 1 ms.
        let cpu = |client, jetway, nats| crate::stats::Cpu {
            client: Duration::from_millis(client),
            jetway: Duration::from_millis(jetway),
            nats: Duration::from_millis(nats),
            wakeups: [0; 3],
        };
        let side = |cpu| {
            Side::combine(&[Round {
                measure: Measure::Throughput {
                    events: 1_000,
                    elapsed: Duration::from_secs(1),
                },
                events: 1_000,
                cpu: Some(cpu),
            }])
        };
        let p2 = Scenario::new(
            "P2",
            "unary".into(),
            Some(side(cpu(10, 0, 14))),
            Some(side(cpu(33, 22, 17))),
        );
        let ceiling = p2_ceiling(&side(cpu(20, 10, 1)), &p2).unwrap();
        assert_eq!(ceiling.extra["h1_bench_cpu_us_per_call"], 20.0);
        assert_eq!(ceiling.extra["h1_jetway_cpu_us_per_call"], 10.0);
        assert_eq!(ceiling.extra["h1_nats_cpu_us_per_call"], 1.0);
        // (31 + 24) / 72.
        assert_eq!(ceiling.extra["ceiling_cpu_us_per_call"], 55.0);
        assert_eq!(ceiling.extra["cpu_share_of_ceiling"], 0.76);
    }

    #[test]
    fn the_sdk_latency_is_judged_against_unary_publishes() {
        let mut scenarios = vec![
            Scenario::new("P3", "unary".into(), Some(latency(150)), Some(latency(300))),
            Scenario::new("P3s", "sdk".into(), Some(latency(150)), Some(latency(309))),
            Scenario::new("P3s", "sdk".into(), Some(latency(150)), Some(latency(312))),
        ];
        evaluate(&mut scenarios);
        let met = |i: usize| scenarios[i].goal.as_ref().map(|goal| goal.met);
        assert_eq!((met(1), met(2)), (Some(true), Some(false)));
        let mut alone = vec![Scenario::new(
            "P3s",
            "sdk".into(),
            Some(latency(150)),
            Some(latency(309)),
        )];
        evaluate(&mut alone);
        assert!(
            alone[0].goal.is_none(),
            "no P3 in the run, nothing to judge by"
        );
    }

    #[test]
    fn goals_and_json_follow_the_issue_shape() {
        let mut scenarios = vec![Scenario::new(
            "P1",
            "streaming publish".into(),
            Some(rate(1000)),
            Some(rate(930)),
        )];
        evaluate(&mut scenarios);
        let goal = scenarios[0].goal.as_ref().unwrap();
        assert!(goal.met, "0.93 >= 0.90");
        let mut header = Map::new();
        header.insert("git_sha".into(), json!("abc"));
        let out = json(header, &scenarios);
        assert_eq!(out["scenarios"][0]["id"], "P1");
        assert_eq!(out["scenarios"][0]["ratio"], 0.93);
        assert_eq!(out["scenarios"][0]["direct"]["msgs_per_s"], 1000.0);
        assert!(table(&scenarios).contains("goal met: ratio >= 0.90"));
        assert_eq!(group(1234567.0, 0), "1,234,567");
        assert_eq!(group(166.04, 1), "166.0");
    }
}
