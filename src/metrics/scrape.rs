//! What a scrape refreshes before `GET /metrics` renders: gauges counted from elsewhere (the
//! store's census), which cost a query and so are counted only when someone asks for them,
//! and at most once per refresh interval however often they are asked.

use async_trait::async_trait;

use super::Metrics;

/// What refreshes some gauges before a scrape renders them.
#[async_trait]
pub trait Recount: Send + Sync {
    /// Refreshes its gauges of `metrics` if they are older than its interval; a failed
    /// count keeps the last values.
    async fn recount(&self, metrics: &Metrics);
}
