//! Polling waits with deadlines: the only way tests synchronise with a server.

use std::future::Future;
use std::time::{Duration, Instant};

/// Pause between two polls.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Ok`, and returns that value. Panics once `deadline` has
/// passed, with `what` (the condition waited for) and the last error in the message.
pub fn eventually<T>(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<T>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if start.elapsed() >= deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last error: {e:#}")
            }
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// Async form of [`eventually`]: awaits `check()` until it returns `Ok`, panics after `deadline`.
pub async fn eventually_async<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let start = Instant::now();
    loop {
        let remaining = deadline.saturating_sub(start.elapsed());
        let res = match tokio::time::timeout(remaining.max(POLL_INTERVAL), check()).await {
            Ok(res) => res,
            Err(_) => Err(anyhow::anyhow!("check did not finish before the deadline")),
        };
        match res {
            Ok(v) => return v,
            Err(e) if start.elapsed() >= deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last error: {e:#}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_check_passes() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "third poll", || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                anyhow::bail!("n = {n}")
            }
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible; last error: never")]
    fn panics_with_what_and_last_error() {
        eventually::<()>(Duration::from_millis(50), "the impossible", || {
            anyhow::bail!("never")
        });
    }
}
