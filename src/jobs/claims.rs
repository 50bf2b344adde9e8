//! Runs taken by who does the work: workers that pull (`POST /api/v1/runs:claim` and its gRPC
//! twin) and the webhook caller.
//!
//! A claim takes the open runs offered to its way of delivery (nobody holds them), holding
//! each for the lease asked for, by a conditional write of its job, so no two takers hold one
//! run at once; a run whose taker vanished is offered again when its hold lapses, with the
//! same run id, until the job's run timeout times it out. A claim that finds nothing waits up
//! to the time asked for: woken when this process fires a run, and looking again every
//! [`LOOK_AGAIN`] for the fires of other processes and holds that lapse.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{Error, Jobs, WRITE_ATTEMPTS, ports::StoreError};
use crate::domain::{
    Delivery, Job, JobId, JobType, Run, RunId, delivery::MAX_CLAIM_WAIT_SECONDS, field::Errors,
};

/// How often a waiting claim looks for runs fired by other processes or whose hold lapsed.
const LOOK_AGAIN: Duration = Duration::from_millis(500);
/// Most runs one claim takes.
pub const MAX_CLAIM: i64 = 100;
/// Longest hold a claim asks for, in seconds.
pub const MAX_LEASE_SECONDS: i64 = 3600;

/// What a worker asks for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    /// Only runs of jobs of these types; any type when empty.
    pub job_types: Vec<JobType>,
    /// Most runs to take: 1 to [`MAX_CLAIM`].
    pub max: usize,
    /// How long to wait when none is offered: up to [`MAX_CLAIM_WAIT_SECONDS`].
    pub wait: Duration,
    /// How long each run taken is held: 1 s to [`MAX_LEASE_SECONDS`].
    pub lease: Duration,
}

impl ClaimRequest {
    /// Checks a claim as a client gives it (defaults: any type, one run, no wait, a 60 s
    /// hold), naming each field at fault.
    pub fn parse(
        job_types: Vec<JobType>,
        max: Option<i64>,
        wait_seconds: Option<i64>,
        lease_seconds: Option<i64>,
    ) -> Result<Self, Error> {
        let mut errors = Errors::new();
        let mut bounded = |field: &str, value: Option<i64>, default: i64, range: (i64, i64)| {
            let value = value.unwrap_or(default);
            if (range.0..=range.1).contains(&value) {
                value.unsigned_abs()
            } else {
                errors.push(
                    field,
                    format!("must be between {} and {}", range.0, range.1),
                );
                0
            }
        };
        let max = bounded("max", max, 1, (1, MAX_CLAIM));
        let wait = bounded("waitSeconds", wait_seconds, 0, (0, MAX_CLAIM_WAIT_SECONDS));
        let lease = bounded("leaseSeconds", lease_seconds, 60, (1, MAX_LEASE_SECONDS));
        let mut job_types = job_types;
        job_types.sort_by_key(|t| t.code());
        job_types.dedup();
        Ok(errors.finish(|| {
            Some(Self {
                job_types,
                max: max as usize,
                wait: Duration::from_secs(wait),
                lease: Duration::from_secs(lease),
            })
        })?)
    }
}

/// A run taken, with what its taker needs to do the work.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The run, with its hold.
    pub run: Run,
    /// Its job, as it was when the run was taken.
    pub job: Job,
}

impl Jobs {
    /// Takes up to `request.max` runs offered to `delivery`, held by `holder`; waits up to
    /// `request.wait` (at most the configured cap) when none is offered, or until `shutdown`.
    /// An empty list when none came.
    pub async fn claim_runs(
        &self,
        delivery: Delivery,
        request: &ClaimRequest,
        holder: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<ClaimedRun>, Error> {
        let deadline = tokio::time::Instant::now() + request.wait.min(self.claim_wait_cap);
        loop {
            // Registered before looking, so a fire in between is not missed.
            let fired = self.events.runs_fired();
            let taken = self.take_offered(delivery, request, holder).await?;
            let now = tokio::time::Instant::now();
            if !taken.is_empty() || now >= deadline {
                return Ok(taken);
            }
            tokio::select! {
                () = fired => {}
                () = tokio::time::sleep(LOOK_AGAIN.min(deadline - now)) => {}
                () = shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    /// One look: the offered runs, each job's taken by one conditional write.
    async fn take_offered(
        &self,
        delivery: Delivery,
        request: &ClaimRequest,
        holder: Option<&str>,
    ) -> Result<Vec<ClaimedRun>, Error> {
        let now = Utc::now();
        let until = now
            + chrono::Duration::from_std(request.lease).unwrap_or(chrono::Duration::seconds(60));
        let jobs = self
            .store
            .offered(delivery, now, &request.job_types, request.max)
            .await?;
        let mut taken = Vec::new();
        for mut job in jobs {
            let left = request.max - taken.len();
            if left == 0 {
                break;
            }
            for _ in 0..WRITE_ATTEMPTS {
                let Some((held, runs)) = job.lease_runs(delivery, now, until, holder, left) else {
                    break;
                };
                match self.store.update(&held, job.version, &[], &[]).await {
                    Ok(()) => {
                        taken.extend(runs.into_iter().map(|run| ClaimedRun {
                            run,
                            job: held.clone(),
                        }));
                        break;
                    }
                    // Another taker (or a step of the scheduler) changed it: look again.
                    Err(StoreError::VersionConflict) => match self.store.get(job.id).await? {
                        Some(current) => job = current,
                        None => break,
                    },
                    Err(StoreError::NotFound) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(taken)
    }

    /// Holds open run `run_id` of job `id` until `until` (a webhook target took it and reports
    /// later); nothing when the run is no longer open.
    pub async fn hold_run(
        &self,
        id: JobId,
        run_id: RunId,
        until: chrono::DateTime<Utc>,
    ) -> Result<(), Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let job = self.get(id).await?;
            let Some(held) = job.hold_run(run_id, until) else {
                return Ok(());
            };
            match self.store.update(&held, job.version, &[], &[]).await {
                Ok(()) => return Ok(()),
                Err(StoreError::VersionConflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(super::kept_changing("its run was being held"))
    }
}
