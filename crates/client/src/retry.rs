//! Safe, bounded retries of publishes: [`RetryPolicy`] (how many attempts, what backoff) and the
//! one mechanism every publish path goes through, unary and over the shared stream:
//! [`keyed`] gives a publish without a caller key a generated idempotency key, so that sending it
//! again cannot store it twice within the stream's duplicate window, and [`RetryPolicy::run`]
//! repeats an attempt after a transient failure, within the call's deadline.

use std::{future::Future, time::Duration};

use jetway_api::jetway::events::v1::PublishEventRequest;
use tokio::time::Instant;
use tonic::Code;

use crate::Error;

/// The default number of attempts of one publish, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The default pause before the first retry; each further pause doubles, up to
/// [`DEFAULT_MAX_BACKOFF`].
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The default longest pause between two attempts.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How a publish is retried after a transient failure: a broken or refused connection
/// (UNAVAILABLE, UNKNOWN, CANCELLED), a server that could not complete it (INTERNAL, ABORTED).
/// Errors that another attempt would only repeat are returned at once: INVALID_ARGUMENT,
/// FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS, RESOURCE_EXHAUSTED, PERMISSION_DENIED,
/// UNAUTHENTICATED, DEADLINE_EXCEEDED and the rest.
///
/// Every attempt sends the same idempotency key (the caller's, or one generated for the call), so
/// an event whose first attempt was stored but not acknowledged is stored once: JetStream
/// answers the retry with the first event's id.
///
/// Retries stay within the client's request timeout ([`ClientBuilder::request_timeout`]): it
/// bounds the whole call, attempts and pauses together, and a pause that would end past it is
/// not taken.
///
/// Defaults: [`DEFAULT_MAX_ATTEMPTS`] attempts, pauses from [`DEFAULT_INITIAL_BACKOFF`] doubling
/// up to [`DEFAULT_MAX_BACKOFF`] (0.1 + 0.2 + 0.4 + 0.8 s between five attempts): enough to ride
/// out a replica restart behind a load balancer or a failover to another endpoint.
///
/// ```
/// use std::time::Duration;
/// use jetway_client::RetryPolicy;
///
/// let patient = RetryPolicy::new()
///     .max_attempts(10)
///     .backoff(Duration::from_millis(50), Duration::from_secs(1));
/// let once = RetryPolicy::never();
/// ```
///
/// [`ClientBuilder::request_timeout`]: crate::ClientBuilder::request_timeout
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new()
    }
}

impl RetryPolicy {
    /// The defaults (see the type's docs).
    pub fn new() -> RetryPolicy {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// One attempt, no retry: the caller sees every failure.
    pub fn never() -> RetryPolicy {
        RetryPolicy::new().max_attempts(1)
    }

    /// How many attempts a publish gets, the first included; 0 counts as 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The pause before the first retry, and the longest pause: each pause doubles the previous
    /// one up to `max`. A `max` below `initial` is raised to it.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The pause after failed attempt `attempt` (1 for the first).
    fn pause(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// Runs `attempt` until it succeeds, fails for good, the attempts are spent, or the next
    /// pause would end past `timeout` from now. `attempt` gets the time left for it (`None`: no
    /// deadline), to send as the call's own deadline. Returns the last error.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        timeout: Option<Duration>,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Option<Duration>) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut number = 1;
        loop {
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            let error = match attempt(left).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if number >= self.max_attempts || !is_retryable(&error) {
                return Err(error);
            }
            let resume = Instant::now() + self.pause(number);
            if deadline.is_some_and(|deadline| resume >= deadline) {
                return Err(error);
            }
            tracing::debug!(attempt = number, %error, "retrying a publish");
            tokio::time::sleep_until(resume).await;
            number += 1;
        }
    }
}

/// Whether another attempt of the same publish may succeed (see [`RetryPolicy`]).
fn is_retryable(error: &Error) -> bool {
    match error {
        Error::Status(status) => matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal | Code::Aborted
        ),
        Error::Connect { .. } => true,
        Error::InvalidUrl { .. } | Error::InvalidMetadata { .. } | Error::Protocol(_) => false,
    }
}

/// `request` with an idempotency key: the caller's, or a generated UUID (v4) when it has none, so
/// that every attempt of it is the same event to JetStream.
pub(crate) fn keyed(mut request: PublishEventRequest) -> PublishEventRequest {
    if request.idempotency_key.as_deref().is_none_or(str::is_empty) {
        request.idempotency_key = Some(uuid::Uuid::new_v4().to_string());
    }
    request
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn status(code: Code) -> Error {
        tonic::Status::new(code, "test").into()
    }

    /// Runs `policy` over attempts that fail with `codes` in turn, then succeed; returns the
    /// result and how many attempts were made.
    async fn attempts(
        policy: RetryPolicy,
        timeout: Option<Duration>,
        codes: &[Code],
    ) -> (Result<(), Error>, u32) {
        let made = AtomicU32::new(0);
        let result = policy
            .run(timeout, |_| {
                let index = made.fetch_add(1, Ordering::SeqCst) as usize;
                let outcome = codes.get(index).map_or(Ok(()), |&code| Err(status(code)));
                async move { outcome }
            })
            .await;
        (result, made.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_up_to_the_attempts() {
        let policy = RetryPolicy::new();
        let (result, made) = attempts(
            policy,
            None,
            &[Code::Unavailable, Code::Unknown, Code::Internal],
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(made, 4);

        let (result, made) = attempts(policy, None, &[Code::Unavailable; 9]).await;
        assert_eq!(result.unwrap_err().code(), Some(Code::Unavailable));
        assert_eq!(made, DEFAULT_MAX_ATTEMPTS);

        let (result, made) = attempts(RetryPolicy::never(), None, &[Code::Unavailable]).await;
        assert!(result.is_err());
        assert_eq!(made, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_never_retried() {
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::NotFound,
            Code::AlreadyExists,
            Code::ResourceExhausted,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::DeadlineExceeded,
        ] {
            let (result, made) = attempts(RetryPolicy::new(), None, &[code]).await;
            assert_eq!(result.unwrap_err().code(), Some(code));
            assert_eq!(made, 1, "{code:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_deadline() {
        // Pauses of 0.1, 0.2, 0.4 s: the third would end past 0.5 s, so three attempts are made.
        let (result, made) = attempts(
            RetryPolicy::new().max_attempts(10),
            Some(Duration::from_millis(500)),
            &[Code::Unavailable; 10],
        )
        .await;
        assert!(result.is_err());
        assert_eq!(made, 3);
    }

    #[test]
    fn pauses_double_up_to_the_cap() {
        let policy =
            RetryPolicy::new().backoff(Duration::from_millis(100), Duration::from_millis(500));
        let pauses: Vec<u128> = (1..=5).map(|n| policy.pause(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500]);
        assert_eq!(RetryPolicy::new().pause(u32::MAX), DEFAULT_MAX_BACKOFF);
    }

    #[test]
    fn a_publish_keeps_its_key_or_gets_a_new_one() {
        let own = keyed(PublishEventRequest {
            idempotency_key: Some("order-42".into()),
            ..Default::default()
        });
        assert_eq!(own.idempotency_key.as_deref(), Some("order-42"));
        let first = keyed(PublishEventRequest::default())
            .idempotency_key
            .unwrap();
        let second = keyed(PublishEventRequest {
            idempotency_key: Some(String::new()),
            ..Default::default()
        })
        .idempotency_key
        .unwrap();
        assert_ne!(first, second);
        assert!(uuid::Uuid::parse_str(&first).is_ok());
    }
}
