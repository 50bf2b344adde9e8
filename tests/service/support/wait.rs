//! Waiting for the service, bounded so that what never happens fails the test.

use std::{future::Future, time::Duration};

/// How long `eventually` waits.
const PATIENCE: Duration = Duration::from_secs(20);

/// RFC 3339 for now plus `millis` (may be negative).
pub fn in_millis(millis: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(millis))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Polls `check` until it returns `Some`, for up to 20 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
