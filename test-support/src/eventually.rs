use std::future::Future;
use std::panic::Location;
use std::time::Duration;

/// How often [`eventually`] polls its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Some`, and returns that value;
/// fails the test once `deadline` has passed, naming the call site that waited.
///
/// The deadline is measured on tokio's clock, so under paused time the wait advances the clock
/// instead of the wall.
#[track_caller]
pub fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let awaited_at = Location::caller();
    async move {
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "the condition awaited at {awaited_at} was not met within {deadline:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Proves `eventually` returns the first value the condition yields, after polling again.
    #[tokio::test(start_paused = true)]
    async fn returns_the_first_value_once_the_condition_holds() {
        let num_polls = AtomicU32::new(0);
        let value = eventually(Duration::from_secs(1), || async {
            let num_polled = num_polls.fetch_add(1, Ordering::SeqCst) + 1;
            (num_polled == 3).then_some(num_polled)
        })
        .await;
        assert_eq!(value, 3);
    }

    /// Proves a condition that never holds fails the test at its deadline, with a message
    /// naming the call site that waited.
    #[tokio::test(start_paused = true)]
    async fn names_the_awaited_call_site_at_the_deadline() {
        let waited = tokio::spawn(eventually(Duration::from_millis(50), || async {
            None::<()>
        }));
        let panic = waited.await.expect_err("the wait fails").into_panic();
        let message = panic
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(message.contains(file!()), "{message}");
        assert!(message.contains("within 50ms"), "{message}");
    }
}
