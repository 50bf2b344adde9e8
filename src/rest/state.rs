//! What every REST handler may use.

use std::{ops::Deref, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    events::EventStreams,
    jobs::Jobs,
    metrics::{Metrics, scrape::Recount},
    throttle::StreamLimit,
};

/// The handlers' shared state. The router clones it for every request, so it is one shared
/// allocation: a clone is one reference count, not one per part (a cancellation token's clone
/// takes a lock).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What the handlers share.
pub struct Shared {
    /// The use cases.
    pub jobs: Jobs,
    /// The events for the SSE stream: the journal, then live.
    pub events: EventStreams,
    /// Ends open event streams when the service shuts down.
    pub shutdown: CancellationToken,
    /// The bound on open event streams, shared with the gRPC watch.
    pub streams: StreamLimit,
    /// What `GET /metrics` renders; off, there is no such route.
    pub metrics: Metrics,
    /// What a scrape refreshes first (the store's gauges), when metrics are on.
    pub recount: Option<Arc<dyn Recount>>,
}

/// REST limits.
#[derive(Debug, Clone)]
pub struct RestSettings {
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Longest a request may take; slower ones get 408 (the event stream is exempt).
    pub request_timeout: Duration,
}
