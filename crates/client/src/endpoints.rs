//! Several Jetway endpoints behind one client: [`Endpoints`] is the transport every gRPC stub of a
//! [`Client`](crate::Client) calls through. It spreads calls over the endpoints in turn and steers
//! them away from one whose connection failed, so that while a replica is down calls go to the
//! others.
//!
//! Each endpoint keeps its own tonic [`Channel`] (one HTTP/2 connection, re-established by tonic when
//! it breaks). A call that fails in the transport (connection refused, reset, GOAWAY) marks its
//! endpoint down for [`DOWN_FOR`]; calls skip endpoints marked down while any other is up, and after
//! that time one call probes it again. The failed call itself is not resent here (its body is gone
//! once sent): publishes are retried by [`RetryPolicy`](crate::RetryPolicy), subscriptions
//! reconnect by themselves, and other calls return UNAVAILABLE to the caller.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tonic::{
    body::Body,
    codegen::{BoxFuture, Service, http},
    transport::Channel,
};

/// How long an endpoint whose connection failed is skipped while another endpoint is up. Long
/// enough that a retry with backoff lands elsewhere, short enough that a restarted replica gets
/// calls again soon after it is back.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(2);

/// The channels of every endpoint, shared by the clones of a client.
struct Shared {
    /// The endpoint URLs, for `Debug`.
    urls: Vec<String>,
    /// When each endpoint last failed in the transport; `None` while it answers.
    down_since: Vec<Mutex<Option<Instant>>>,
    /// The round-robin cursor.
    next: AtomicUsize,
}

/// A tower service over one channel per endpoint, picking one per call (see the module docs).
#[derive(Clone)]
pub(crate) struct Endpoints {
    shared: Arc<Shared>,
    /// This clone's handles on the channels: `poll_ready` reserves a slot in the one it picked.
    channels: Vec<Channel>,
    /// The endpoint picked by `poll_ready` for the next `call`.
    picked: Option<usize>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("urls", &self.shared.urls)
            .finish_non_exhaustive()
    }
}

impl Endpoints {
    /// Endpoints from `(url, channel, up)`: `up` is false for one that could not be reached when
    /// connecting, so calls try the others first. `channels` is not empty.
    pub(crate) fn new(channels: Vec<(String, Channel, bool)>) -> Endpoints {
        let now = Instant::now();
        let mut urls = Vec::with_capacity(channels.len());
        let mut down_since = Vec::with_capacity(channels.len());
        let mut handles = Vec::with_capacity(channels.len());
        for (url, channel, up) in channels {
            urls.push(url);
            down_since.push(Mutex::new((!up).then_some(now)));
            handles.push(channel);
        }
        Endpoints {
            shared: Arc::new(Shared {
                urls,
                down_since,
                next: AtomicUsize::new(0),
            }),
            channels: handles,
            picked: None,
        }
    }

    /// The next endpoint in turn that is not marked down; if all are, the next in turn (a probe).
    fn pick(&self) -> usize {
        let count = self.channels.len();
        let start = self.shared.next.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| self.shared.is_up(index))
            .unwrap_or(start)
    }
}

impl Shared {
    fn is_up(&self, index: usize) -> bool {
        match *lock(&self.down_since[index]) {
            None => true,
            Some(since) => since.elapsed() >= DOWN_FOR,
        }
    }

    fn mark(&self, index: usize, up: bool) {
        let mut down_since = lock(&self.down_since[index]);
        if up {
            *down_since = None;
        } else if down_since.is_none_or(|since| since.elapsed() >= DOWN_FOR) {
            // A probe that fails starts a new period; failures within one do not extend it, so
            // an endpoint with calls still failing on its old connection is probed again in time.
            *down_since = Some(Instant::now());
        }
    }
}

/// The lock guards a plain value that no code can leave half-written, so a poisoned lock is used
/// as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Service<http::Request<Body>> for Endpoints {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let index = match self.picked {
            Some(index) => index,
            None => {
                let index = self.pick();
                self.picked = Some(index);
                index
            }
        };
        self.channels[index].poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // tower's contract: `call` follows a successful `poll_ready`, which picked the endpoint.
        let index = self.picked.take().unwrap_or_else(|| self.pick());
        let response = self.channels[index].call(request);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let result = response.await;
            shared.mark(index, result.is_ok());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(up: &[bool]) -> Endpoints {
        let channels = up
            .iter()
            .enumerate()
            .map(|(i, &up)| {
                let url = format!("http://127.0.0.1:{}", 1 + i);
                let channel = Channel::from_shared(url.clone()).unwrap().connect_lazy();
                (url, channel, up)
            })
            .collect();
        Endpoints::new(channels)
    }

    #[tokio::test]
    async fn calls_take_turns_over_the_endpoints_that_are_up() {
        let all = endpoints(&[true, true, true]);
        let picks: Vec<usize> = (0..6).map(|_| all.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);

        let one_down = endpoints(&[true, false, true]);
        let picks: Vec<usize> = (0..4).map(|_| one_down.pick()).collect();
        assert_eq!(picks, [0, 2, 2, 0]);
    }

    #[tokio::test]
    async fn an_endpoint_that_failed_is_skipped_until_it_answers_again() {
        let endpoints = endpoints(&[true, true]);
        endpoints.shared.mark(0, false);
        assert!((0..4).all(|_| endpoints.pick() == 1));
        endpoints.shared.mark(0, true);
        let picks: Vec<usize> = (0..2).map(|_| endpoints.pick()).collect();
        assert!(picks.contains(&0), "{picks:?}");
    }

    #[tokio::test]
    async fn with_every_endpoint_down_calls_still_probe_them() {
        let endpoints = endpoints(&[false, false]);
        let picks: Vec<usize> = (0..2).map(|_| endpoints.pick()).collect();
        assert_eq!(picks, [0, 1]);
    }
}
