//! Owns bounded polling: the only way a test waits for something to become true.

use std::time::Duration;

/// How long [`eventually`] keeps polling. Generous, because CI machines are slow and a timeout
/// only costs time when a test is already failing.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two polls: short enough to keep passing tests fast, long enough not to spin.
const INTERVAL: Duration = Duration::from_millis(20);

/// Polls `f` every ~20 ms until it returns `Some`, and returns that value.
///
/// Panics with `timed out waiting for: {what}` if `f` has not returned `Some` within 10 s. The bound
/// covers the whole wait, including an `f` that never completes.
///
/// The clock is tokio's, so a test that pauses time makes the bound virtual; tests that talk to a
/// real server should not pause time.
pub async fn eventually<F, Fut, T>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, TIMEOUT, f).await
}

/// [`eventually`] with an explicit bound: for what legitimately takes longer than 10 s (a cluster
/// electing new leaders after a node dies), and to test the timeout path without waiting 10 s.
pub async fn eventually_within<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let poll = async {
        loop {
            if let Some(value) = f().await {
                return value;
            }
            tokio::time::sleep(INTERVAL).await;
        }
    };
    match tokio::time::timeout(timeout, poll).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for: {what} (gave up after {timeout:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        let value = eventually("the third call", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n * 10)
        })
        .await;
        assert_eq!(value, 30);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out waiting for: the impossible")]
    async fn panics_when_the_condition_never_holds() {
        eventually_within("the impossible", Duration::from_millis(100), || async {
            None::<()>
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "timed out waiting for: a hung probe")]
    async fn bounds_a_probe_that_never_completes() {
        eventually_within("a hung probe", Duration::from_millis(100), || {
            std::future::pending::<Option<()>>()
        })
        .await;
    }
}
