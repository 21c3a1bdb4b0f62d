//! Per-client limits: their defaults, how the clients file overrides them (file-wide `limits`, then
//! each client's own), and the counters that enforce them. The counters are kept by client id, so
//! a reload of the file changes a limit without resetting what a client holds.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use serde::Deserialize;

/// Default of `events_sessions`: open Windshift Events streams per client. A session holds a pull
/// consumer's events and a streaming slot of the server (`GRPC_MAX_STREAMING_CALLS`, 10,000 by
/// default); 256 lets a client run a large worker pool while many clients share one server.
pub const DEFAULT_EVENTS_SESSIONS: usize = 256;

/// Default of `publish_per_second`: 0, no limit, so turning authentication on does not slow down
/// an existing deployment; set one per tenant to share a server fairly.
pub const DEFAULT_PUBLISH_PER_SECOND: u32 = 0;

/// Default of `fetched_in_flight`: events a client may hold fetched and not yet settled, over all
/// consumers, on one server. A tenth of `FETCH_MAX_IN_FLIGHT`'s default, so no one client fills the
/// server's table, and still ten consumers at `FETCH_MAX_IN_FLIGHT_PER_CONSUMER`'s default.
pub const DEFAULT_FETCHED_IN_FLIGHT: usize = 100_000;

/// How a refused Fetch names `fetched_in_flight`.
pub const FETCHED_IN_FLIGHT: &str = "AUTH_FILE limits.fetched_in_flight";

/// A client's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// The most Windshift Events streams the client may have open at once.
    pub events_sessions: usize,
    /// The most fetched events the client may hold in flight (fetched, neither settled nor
    /// expired), over all consumers.
    pub fetched_in_flight: usize,
    /// Events per second the client may publish, on average (0: no limit).
    pub publish_per_second: u32,
    /// Events the client may publish at once above the average: the token bucket's size
    /// (default: one second's worth).
    pub publish_burst: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            events_sessions: DEFAULT_EVENTS_SESSIONS,
            fetched_in_flight: DEFAULT_FETCHED_IN_FLIGHT,
            publish_per_second: DEFAULT_PUBLISH_PER_SECOND,
            publish_burst: 0,
        }
    }
}

impl ClientLimits {
    /// Refuses limits that would lock a client out; the error starts with the field's name.
    pub fn check(&self) -> Result<(), String> {
        if self.events_sessions == 0 {
            return Err("events_sessions: must be at least 1".to_owned());
        }
        if self.fetched_in_flight == 0 {
            return Err("fetched_in_flight: must be at least 1".to_owned());
        }
        Ok(())
    }

    fn burst(&self) -> f64 {
        f64::from(if self.publish_burst == 0 {
            self.publish_per_second
        } else {
            self.publish_burst
        })
    }
}

/// `limits` as written in the file: what is absent is inherited.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    events_sessions: Option<usize>,
    fetched_in_flight: Option<usize>,
    publish_per_second: Option<u32>,
    publish_burst: Option<u32>,
}

impl LimitsFile {
    /// These limits over `inherited`.
    pub fn over(&self, inherited: &ClientLimits) -> ClientLimits {
        ClientLimits {
            events_sessions: self.events_sessions.unwrap_or(inherited.events_sessions),
            fetched_in_flight: self
                .fetched_in_flight
                .unwrap_or(inherited.fetched_in_flight),
            publish_per_second: self
                .publish_per_second
                .unwrap_or(inherited.publish_per_second),
            publish_burst: self.publish_burst.unwrap_or(inherited.publish_burst),
        }
    }
}

/// What each client holds, by client id.
#[derive(Debug, Default)]
pub struct Usage {
    clients: Mutex<HashMap<String, Arc<ClientUsage>>>,
}

/// What one client holds.
#[derive(Debug)]
pub struct ClientUsage {
    events_sessions: AtomicUsize,
    /// Publish tokens left and when they were last counted.
    bucket: Mutex<(f64, Instant)>,
}

impl Usage {
    /// The counters of client `id`.
    pub fn of(&self, id: &str) -> Arc<ClientUsage> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Looked up before `entry`, which would copy the id on every call.
        if let Some(usage) = clients.get(id) {
            return usage.clone();
        }
        clients
            .entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(ClientUsage {
                    events_sessions: AtomicUsize::new(0),
                    bucket: Mutex::new((f64::MAX, Instant::now())),
                })
            })
            .clone()
    }
}

/// One open Events session of a client, counted until dropped.
#[derive(Debug)]
pub struct SessionSlot(Arc<ClientUsage>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.events_sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientUsage {
    /// A session slot, or `None` when the client has `limit` open.
    pub fn open_session(self: &Arc<Self>, limit: usize) -> Option<SessionSlot> {
        self.events_sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()
            .map(|_| SessionSlot(self.clone()))
    }

    /// Takes `events` publish tokens from the client's bucket, refilled at `limits`'s rate up to
    /// its burst; false (and nothing taken) when there are not enough.
    pub fn take_publishes(&self, limits: &ClientLimits, events: u32) -> bool {
        if limits.publish_per_second == 0 {
            return true;
        }
        let burst = limits.burst();
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let refill =
            now.duration_since(bucket.1).as_secs_f64() * f64::from(limits.publish_per_second);
        let available = (bucket.0.min(burst) + refill).min(burst);
        bucket.1 = now;
        if available >= f64::from(events) {
            bucket.0 = available - f64::from(events);
            true
        } else {
            bucket.0 = available;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_counted_until_their_slot_drops() {
        let usage = Usage::default().of("a");
        let first = usage.open_session(2).unwrap();
        let _second = usage.open_session(2).unwrap();
        assert!(usage.open_session(2).is_none());
        drop(first);
        assert!(usage.open_session(2).is_some());
    }

    #[test]
    fn the_bucket_allows_its_burst_then_refuses() {
        let limits = ClientLimits {
            publish_per_second: 1,
            publish_burst: 3,
            ..ClientLimits::default()
        };
        let usage = Usage::default().of("a");
        assert!(usage.take_publishes(&limits, 2));
        assert!(usage.take_publishes(&limits, 1));
        // One per second refills: far from the 3 asked within this test's run.
        assert!(!usage.take_publishes(&limits, 3));
        assert!(usage.take_publishes(&ClientLimits::default(), 1_000_000));
    }

    #[test]
    fn file_limits_override_what_they_name() {
        let file: LimitsFile =
            serde_json::from_str(r#"{"events_sessions": 2, "fetched_in_flight": 5}"#).unwrap();
        let limits = file.over(&ClientLimits::default());
        assert_eq!(limits.events_sessions, 2);
        assert_eq!(limits.fetched_in_flight, 5);
        assert_eq!(limits.publish_per_second, DEFAULT_PUBLISH_PER_SECOND);
    }
}
