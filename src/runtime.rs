//! Plumbing the background loops share: waits that grow through an outage ([`Backoff`]), one
//! log line when failures start and one when they end ([`Outage`]), and the supervision that
//! stops the service when a background task dies ([`Supervisor`]): a half-alive scheduler is
//! worse than a restart.

use std::{collections::HashMap, fmt, future::Future, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::{task::JoinSet, time::Instant};

/// Exponential waits: `first`, doubling with each further failure, capped at `max`.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        let max = max.max(first);
        let builder = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(max)
            .without_max_times();
        Self {
            delays: builder.build(),
            builder,
            max,
        }
    }

    /// How long to wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        // Without a bound on the number of times, the delays never run out.
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts again from the first wait.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

/// How a background loop rides out an outage of something it depends on: waits that grow with
/// each consecutive failure, an error logged when the failures start, and a line when they end.
#[derive(Debug)]
pub struct Outage {
    /// Logged at ERROR, with the error, on the first failure of a run of failures.
    failing: &'static str,
    /// Logged at INFO when a run of failures ends.
    recovered: &'static str,
    backoff: Backoff,
    /// Consecutive failures so far, and when the first of them happened.
    failures: Option<(u32, Instant)>,
}

impl Outage {
    /// An outage tracker that logs `failing` when failures start and `recovered` when they end.
    pub fn new(failing: &'static str, recovered: &'static str, backoff: Backoff) -> Self {
        Self {
            failing,
            recovered,
            backoff,
            failures: None,
        }
    }

    /// Records a failure, logging it if it is the first of a run; returns how long to wait
    /// before trying again.
    pub fn failed(&mut self, error: &dyn fmt::Debug) -> Duration {
        match &mut self.failures {
            Some((count, _)) => *count += 1,
            None => {
                tracing::error!(error = ?error, "{}", self.failing);
                self.failures = Some((1, Instant::now()));
            }
        }
        self.backoff.next_delay()
    }

    /// Records a success, logging the end of a run of failures.
    pub fn recovered(&mut self) {
        if let Some((failures, since)) = self.failures.take() {
            let seconds = since.elapsed().as_secs_f64();
            tracing::info!(failures, seconds, "{}", self.recovered);
            self.backoff.reset();
        }
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failures.is_some()
    }
}

/// The background tasks of the service, each meant to run until shutdown.
#[derive(Default)]
pub struct Supervisor {
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<tokio::task::Id, &'static str>,
}

/// How a background task ended.
#[derive(Debug)]
pub struct Exit {
    /// The name it was spawned under.
    pub name: &'static str,
    /// `Ok` when it returned normally; its error, or its panic, otherwise.
    pub outcome: anyhow::Result<()>,
}

impl Exit {
    /// What is wrong with this exit: any error or panic, and a normal return unless the
    /// service was `stopping` (every task is meant to run until shutdown).
    pub fn failure(self, stopping: bool) -> Option<anyhow::Error> {
        match self.outcome {
            Err(error) => Some(error),
            Ok(()) if stopping => None,
            Ok(()) => Some(anyhow::anyhow!(
                "the {} task stopped before shutdown",
                self.name
            )),
        }
    }
}

impl Supervisor {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` in the background under `name`.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// Waits until a task ends and says which and how; never resolves while none runs.
    pub async fn next_exit(&mut self) -> Exit {
        match self.tasks.join_next_with_id().await {
            Some(joined) => self.exit(joined),
            None => std::future::pending().await,
        }
    }

    /// Waits for every task after shutdown; the first that failed (an error or a panic) is the
    /// result.
    pub async fn join_all(mut self) -> anyhow::Result<()> {
        let mut first = None;
        while let Some(joined) = self.tasks.join_next_with_id().await {
            if let Some(error) = self.exit(joined).failure(true) {
                tracing::error!(error = ?error, "a background task failed while stopping");
                first.get_or_insert(error);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn exit(
        &mut self,
        joined: Result<(tokio::task::Id, anyhow::Result<()>), tokio::task::JoinError>,
    ) -> Exit {
        match joined {
            Ok((id, outcome)) => {
                let name = self.names.remove(&id).unwrap_or("background");
                Exit {
                    name,
                    outcome: outcome.map_err(|e| e.context(format!("the {name} task failed"))),
                }
            }
            Err(error) => {
                let name = self.names.remove(&error.id()).unwrap_or("background");
                let why = if error.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                Exit {
                    name,
                    outcome: Err(anyhow::anyhow!("the {name} task {why}: {error}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_their_cap_and_start_again_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay().as_millis(), 100);
    }

    #[test]
    fn an_outage_starts_at_the_first_failure_and_ends_at_the_next_success() {
        let mut outage = Outage::new(
            "failing",
            "recovered",
            Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
        );
        assert!(!outage.is_failing());
        assert_eq!(outage.failed(&"down").as_millis(), 10);
        assert_eq!(outage.failed(&"down").as_millis(), 20);
        assert!(outage.is_failing());
        outage.recovered();
        assert!(!outage.is_failing());
        assert_eq!(outage.failed(&"down again").as_millis(), 10);
    }

    #[tokio::test]
    async fn a_panicking_task_is_named_and_is_a_failure() {
        let mut tasks = Supervisor::new();
        tasks.spawn("steady", async {
            std::future::pending::<()>().await;
            Ok(())
        });
        tasks.spawn("fragile", async { panic!("boom") });
        let exit = tasks.next_exit().await;
        assert_eq!(exit.name, "fragile");
        let error = exit
            .failure(true)
            .expect("a panic is a failure")
            .to_string();
        assert!(error.contains("fragile task panicked"), "{error}");
    }

    #[tokio::test]
    async fn a_task_that_returns_before_shutdown_or_fails_is_a_failure() {
        let mut tasks = Supervisor::new();
        tasks.spawn("quitter", async { Ok(()) });
        let error = tasks
            .next_exit()
            .await
            .failure(false)
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("the quitter task stopped before shutdown")
        );
        tasks.spawn("stopping", async { Ok(()) });
        assert!(
            tasks.next_exit().await.failure(true).is_none(),
            "a return at shutdown"
        );
        let mut tasks = Supervisor::new();
        tasks.spawn("failing", async { Err(anyhow::anyhow!("no brokers")) });
        tasks.spawn("fine", async { Ok(()) });
        let error = format!("{:#}", tasks.join_all().await.unwrap_err());
        assert_eq!(error, "the failing task failed: no brokers");
    }
}
