//! What one round measures, and how the rounds of one side combine: throughput over all rounds
//! (events / time), latency as the percentiles of the merged histograms, CPU as time per event.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// A latency histogram in nanoseconds, from 1 ns to 100 s with 3 significant digits.
#[expect(clippy::expect_used, reason = "the bounds are constants and valid")]
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

/// Records `elapsed` into `histogram`, clamped to its range.
pub(crate) fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(nanos.max(1));
}

/// CPU time used during a round, by process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    /// The bench itself (the clients).
    pub client: Duration,
    /// jetway-server (zero on the direct side).
    pub jetway: Duration,
    /// nats-server.
    pub nats: Duration,
    /// Wake-ups (voluntary context switches) of the same three processes, in the same order.
    pub wakeups: [u64; 3],
}

/// What one round measured.
#[derive(Debug, Clone)]
pub(crate) enum Measure {
    /// `events` completed in `elapsed`.
    Throughput { events: u64, elapsed: Duration },
    /// Round trips or deliveries, in nanoseconds.
    Latency(Histogram<u64>),
}

/// One round of one side.
#[derive(Debug, Clone)]
pub(crate) struct Round {
    /// The measurement.
    pub measure: Measure,
    /// Events the CPU time is spread over.
    pub events: u64,
    /// CPU time used, when the processes could be read.
    pub cpu: Option<Cpu>,
}

/// The rounds of one side, combined.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    /// Events per second over all rounds, for throughput.
    pub msgs_per_s: Option<f64>,
    /// Merged latencies.
    pub latency: Option<Histogram<u64>>,
    /// CPU time per event over all rounds, in microseconds: client, jetway-server, nats-server.
    pub cpu_us_per_event: Option<[f64; 3]>,
    /// Wake-ups per event over all rounds, by process as `cpu_us_per_event`.
    pub wakeups_per_event: Option<[f64; 3]>,
    /// msgs/s of each round, or its p50 in µs, to show the spread.
    pub rounds: Vec<f64>,
}

impl Side {
    /// Combines rounds of one kind.
    pub(crate) fn combine(rounds: &[Round]) -> Side {
        let mut events = 0;
        let mut elapsed = Duration::ZERO;
        let mut latency: Option<Histogram<u64>> = None;
        let mut per_round = Vec::new();
        for round in rounds {
            match &round.measure {
                Measure::Throughput {
                    events: n,
                    elapsed: t,
                } => {
                    events += n;
                    elapsed += *t;
                    per_round.push(*n as f64 / t.as_secs_f64());
                }
                Measure::Latency(h) => {
                    per_round.push(h.value_at_quantile(0.5) as f64 / 1000.0);
                    match &mut latency {
                        #[expect(
                            clippy::expect_used,
                            reason = "every histogram comes from `histogram()`, so the bounds match"
                        )]
                        Some(merged) => merged.add(h).expect("same bounds"),
                        None => latency = Some(h.clone()),
                    }
                }
            }
        }
        let cpu_events: u64 = rounds.iter().map(|r| r.events).sum();
        let cpus = rounds
            .iter()
            .map(|r| r.cpu)
            .collect::<Option<Vec<Cpu>>>()
            .filter(|_| cpu_events > 0);
        // An amount per event over all rounds, by process (the bench, jetway-server, nats-server).
        let per_event = |amount: fn(&Cpu) -> [f64; 3]| {
            let mut sum = [0.0; 3];
            for cpu in cpus.as_ref()? {
                for (total, value) in sum.iter_mut().zip(amount(cpu)) {
                    *total += value;
                }
            }
            Some(sum.map(|total| total / cpu_events as f64))
        };
        Side {
            msgs_per_s: (elapsed > Duration::ZERO).then(|| events as f64 / elapsed.as_secs_f64()),
            latency,
            cpu_us_per_event: per_event(|c| {
                [c.client, c.jetway, c.nats].map(|time| time.as_secs_f64() * 1e6)
            }),
            wakeups_per_event: per_event(|c| c.wakeups.map(|n| n as f64)),
            rounds: per_round,
        }
    }

    /// A latency percentile in microseconds.
    pub(crate) fn percentile_us(&self, quantile: f64) -> Option<f64> {
        let h = self.latency.as_ref()?;
        Some(h.value_at_quantile(quantile) as f64 / 1000.0)
    }

    /// The JSON form: `msgs_per_s` or `p50_us`..`p999_us`, CPU per event, and the rounds.
    pub(crate) fn to_json(&self) -> Value {
        let mut out = Map::new();
        if let Some(rate) = self.msgs_per_s {
            out.insert("msgs_per_s".into(), json!(rate.round()));
        }
        if self.latency.is_some() {
            for (name, q) in PERCENTILES {
                out.insert(
                    name.into(),
                    json!(round1(self.percentile_us(q).unwrap_or(0.0))),
                );
            }
        }
        if let Some([client, jetway, nats]) = self.cpu_us_per_event {
            out.insert(
                "cpu_us_per_event".into(),
                json!({"client": round2(client), "jetway": round2(jetway), "nats": round2(nats)}),
            );
        }
        if let Some([client, jetway, nats]) = self.wakeups_per_event {
            out.insert(
                "wakeups_per_event".into(),
                json!({"client": round3(client), "jetway": round3(jetway), "nats": round3(nats)}),
            );
        }
        out.insert(
            "rounds".into(),
            Value::from(self.rounds.iter().map(|r| round1(*r)).collect::<Vec<_>>()),
        );
        Value::Object(out)
    }
}

/// The latency percentiles reported, by JSON name.
pub(crate) const PERCENTILES: [(&str, f64); 4] = [
    ("p50_us", 0.5),
    ("p90_us", 0.9),
    ("p99_us", 0.99),
    ("p999_us", 0.999),
];

/// Higher is better: Jetway/direct for throughput, direct/Jetway for latency (at p50).
pub(crate) fn ratio(direct: &Side, jetway: &Side) -> Option<f64> {
    match (direct.msgs_per_s, jetway.msgs_per_s) {
        (Some(d), Some(j)) if d > 0.0 => Some(j / d),
        _ => {
            let (d, j) = (direct.percentile_us(0.5)?, jetway.percentile_us(0.5)?);
            (j > 0.0).then(|| d / j)
        }
    }
}

/// Rounded to one decimal, for output.
pub(crate) fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Rounded to two decimals, for output.
pub(crate) fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Rounded to three decimals, for output.
pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throughput(events: u64, millis: u64) -> Round {
        Round {
            measure: Measure::Throughput {
                events,
                elapsed: Duration::from_millis(millis),
            },
            events,
            cpu: Some(Cpu {
                client: Duration::from_millis(10),
                jetway: Duration::from_millis(20),
                nats: Duration::ZERO,
                wakeups: [100, 40, 0],
            }),
        }
    }

    fn latency(micros: &[u64]) -> Round {
        let mut h = histogram();
        for &us in micros {
            record(&mut h, Duration::from_micros(us));
        }
        Round {
            measure: Measure::Latency(h),
            events: micros.len() as u64,
            cpu: None,
        }
    }

    #[test]
    fn throughput_combines_over_total_time_and_cpu_per_event() {
        let side = Side::combine(&[throughput(1000, 1000), throughput(3000, 1000)]);
        assert_eq!(side.msgs_per_s, Some(2000.0));
        let [client, jetway, nats] = side.cpu_us_per_event.unwrap();
        assert_eq!((client, jetway, nats), (5.0, 10.0, 0.0));
        assert_eq!(side.wakeups_per_event, Some([0.05, 0.02, 0.0]));
        assert_eq!(
            side.to_json()["wakeups_per_event"],
            json!({"client": 0.05, "jetway": 0.02, "nats": 0.0})
        );
        assert_eq!(side.rounds, vec![1000.0, 3000.0]);
        let faster = Side::combine(&[throughput(3000, 1000)]);
        assert_eq!(ratio(&side, &faster), Some(1.5));
    }

    #[test]
    fn latency_merges_histograms_and_the_ratio_is_inverted() {
        let direct = Side::combine(&[latency(&[100, 100, 100]), latency(&[100])]);
        let jetway = Side::combine(&[latency(&[200, 200, 200, 200])]);
        assert_eq!(direct.latency.as_ref().unwrap().len(), 4);
        let p50 = jetway.percentile_us(0.5).unwrap();
        assert!((199.0..=201.0).contains(&p50), "{p50}");
        let r = ratio(&direct, &jetway).unwrap();
        assert!((0.49..=0.51).contains(&r), "{r}");
        assert!(direct.cpu_us_per_event.is_none() && direct.wakeups_per_event.is_none());
        let json = jetway.to_json();
        assert!(json.get("p999_us").is_some() && json.get("msgs_per_s").is_none());
    }
}
