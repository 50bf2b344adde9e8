//! The use cases: the one layer both transports (and the Kafka result consumer) call, and the
//! owner of the ports it needs.
//!
//! Transports convert their wire types into the inputs here and the results back; every rule
//! about jobs (validation, rescheduling, versions, idempotency, results, paging) lives here or
//! in `domain`. Each change is stored first, with its events in the same atomic write, and
//! then its events are handed on.
//!
//! - [`ports`]: the job store, the live event sink and the durable publisher, as traits;
//! - [`route`]: where events go once their change is stored;
//! - [`change`]: the changes an update can make, and `If-Match`;
//! - [`listing`]: filters, page requests and pages;
//! - [`preview`]: schedules' next fire times, and evaluating a new cron expression off the
//!   request threads;
//! - [`claims`]: runs taken by pulling workers and the webhook caller;
//! - [`webhooks`]: the hosts a webhook may call;
//! - [`error`]: what a use case fails with.

pub mod change;
pub mod claims;
pub mod error;
pub mod hints;
pub mod listing;
pub mod ports;
mod preview;
pub mod route;
pub mod webhooks;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use self::hints::DueHints;
use self::ports::{IdempotencyKey, JobStore, Publisher, StoreError};
use self::preview::evaluate;
pub(crate) use self::preview::preview_now;
pub use self::{
    change::{IfMatch, JobChange, JobReplacement, if_match},
    error::{Error, Missing},
    listing::{JobFilter, Page, PageRequest},
    preview::preview,
    route::EventRoute,
};
use crate::domain::{
    Audit, Event, EventKind, Job, JobId, JobInput, JobSpec, Limits, NotClosed, Run, RunId,
    RunResult, Step, name_of,
};
use crate::metrics::{Metrics, runs::Origin};

/// Most fires recorded for one due time of one job.
const MAX_ATTEMPTS_PER_DUE_TIME: u32 = 100;
/// How often a read-modify-write is retried when a concurrent writer won the race.
pub(crate) const WRITE_ATTEMPTS: usize = 8;

/// The refusal of a schedule change whose due time has had every attempt it may have.
pub(crate) fn fired_too_often() -> Error {
    Error::Conflict(format!(
        "the job already fired {MAX_ATTEMPTS_PER_DUE_TIME} times for this due time; choose another"
    ))
}

/// The refusal of a result for a run that finished as `status`, another result.
pub(crate) fn finished_otherwise(status: crate::domain::RunStatus) -> Error {
    Error::Conflict(format!("the run already finished as {}", name_of(&status)))
}

/// Outcome of a create: the job, and whether it was created earlier under the same
/// idempotency key (then nothing was stored now).
#[derive(Debug, Clone)]
pub struct Created {
    /// The job, as stored.
    pub job: Job,
    /// Whether an earlier create with the same key and input made it.
    pub replayed: bool,
}

/// The use cases, over a store and an event route.
#[derive(Clone)]
pub struct Jobs {
    store: Arc<dyn JobStore>,
    events: EventRoute,
    /// Where a stored change's due time goes, for this process's scheduler to fire on time.
    hints: Arc<DueHints>,
    /// The durable event sink, when one is configured: readiness checks it too.
    sink: Option<Arc<dyn Publisher>>,
    /// Bounds of the engine, for the operations that fire (resume, trigger).
    limits: Limits,
    /// Where stored fires and ledger records are counted.
    metrics: Metrics,
    /// The hosts a job's webhook may call.
    webhooks: webhooks::AllowedHosts,
    /// Longest a claim waits for runs, whatever it asks.
    claim_wait_cap: std::time::Duration,
}

/// A result as it was applied: the run it closed, and whether the run was already closed
/// with this very result (then nothing changed).
#[derive(Debug, Clone)]
pub struct Applied {
    /// The run, as recorded.
    pub run: Run,
    /// Whether the same result had been applied before.
    pub duplicate: bool,
}

impl Jobs {
    /// The use cases over `store`, handing events to `events` and waking the scheduler with
    /// `hints` of the due times the changes make.
    pub fn new(store: Arc<dyn JobStore>, events: EventRoute, hints: Arc<DueHints>) -> Self {
        Self {
            store,
            events,
            hints,
            sink: None,
            limits: Limits::default(),
            metrics: Metrics::off(),
            webhooks: webhooks::AllowedHosts::default(),
            claim_wait_cap: std::time::Duration::from_secs(
                crate::domain::delivery::MAX_CLAIM_WAIT_SECONDS.unsigned_abs(),
            ),
        }
    }

    /// The same use cases, letting a claim wait for runs at most `cap`.
    pub fn with_claim_wait_cap(mut self, cap: std::time::Duration) -> Self {
        self.claim_wait_cap = cap;
        self
    }

    /// The same use cases, letting webhooks call `hosts`.
    pub fn with_webhook_hosts(mut self, hosts: webhooks::AllowedHosts) -> Self {
        self.webhooks = hosts;
        self
    }

    /// The hosts a webhook may call.
    pub fn webhook_hosts(&self) -> &webhooks::AllowedHosts {
        &self.webhooks
    }

    /// A spec whose webhook (if any) may be called.
    fn callable(&self, spec: JobSpec) -> Result<JobSpec, Error> {
        if let Some(webhook) = &spec.webhook {
            self.webhooks.check(webhook)?;
        }
        Ok(spec)
    }

    /// The same use cases, counting what they store into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same use cases under other engine bounds.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The same use cases, whose readiness also needs `sink` to answer.
    pub fn with_sink(mut self, sink: Arc<dyn Publisher>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Creates a job, by `by`'s actor. With an idempotency key, the same key and input again
    /// return the first job; the same key with another input is an error.
    pub async fn create(
        &self,
        input: JobInput,
        idempotency_key: Option<String>,
        by: &Audit,
    ) -> Result<Created, Error> {
        let spec = evaluate(input.schedule.cron.is_some(), move || Ok(input.parse()?)).await?;
        let spec = self.callable(spec)?;
        let key = match idempotency_key {
            Some(key) => {
                check_idempotency_key(&key)?;
                let key = IdempotencyKey {
                    key,
                    fingerprint: spec.fingerprint(),
                };
                if let Some(created) = self.replay(&key).await? {
                    return Ok(created);
                }
                Some(key)
            }
            None => None,
        };
        let mut job = Job::new(spec, Utc::now());
        job.created_by.clone_from(&by.actor);
        job.updated_by.clone_from(&by.actor);
        job.trace.clone_from(&by.trace);
        let event = Event::new(EventKind::Created, job.clone(), None).attributed(by);
        let stored = self
            .store
            .insert(&job, key.as_ref(), std::slice::from_ref(&event))
            .await;
        match (stored, &key) {
            (Ok(()), _) => {}
            // A concurrent create with the same key won the race.
            (Err(StoreError::DuplicateKey), Some(key)) => {
                return match self.replay(key).await? {
                    Some(created) => Ok(created),
                    None => Err(StoreError::DuplicateKey.into()),
                };
            }
            (Err(e), _) => return Err(e.into()),
        }
        self.hints.offer(job.id, job.due_at());
        self.events.stored([&event]);
        Ok(Created {
            job,
            replayed: false,
        })
    }

    async fn replay(&self, key: &IdempotencyKey) -> Result<Option<Created>, Error> {
        match self.store.find_by_idempotency_key(&key.key).await? {
            Some((job, fingerprint)) if fingerprint == key.fingerprint => Ok(Some(Created {
                job,
                replayed: true,
            })),
            Some(_) => Err(Error::IdempotencyKeyReused),
            None => Ok(None),
        }
    }

    /// One job.
    pub async fn get(&self, id: JobId) -> Result<Job, Error> {
        self.store
            .get(id)
            .await?
            .ok_or(Error::NotFound(Missing::Job))
    }

    /// One page of the jobs `filter` matches, newest first.
    pub async fn list(&self, filter: JobFilter, page: PageRequest) -> Result<Page<Job>, Error> {
        let (jobs, total) = self.store.list(&filter, page).await?;
        Ok(Page::new(jobs, total, page))
    }

    /// Applies a change to the editable fields and reschedules when the schedule changed.
    /// With `if_match`, the stored version must be that one; without it, a concurrent change
    /// is retried over the newer version.
    pub async fn update(
        &self,
        id: JobId,
        change: JobChange,
        if_match: Option<IfMatch>,
        by: &Audit,
    ) -> Result<Job, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.get(id).await?;
            if let Some(expected) = &if_match
                && !expected.allows(current.version)
            {
                return Err(Error::VersionMismatch);
            }
            let before = current.spec();
            let spec = if change.sends_cron() {
                let (change, before) = (change.clone(), before.clone());
                evaluate(true, move || Ok(change.apply(&before)?)).await?
            } else {
                change.apply(&before)?
            };
            // A change that changes nothing stores nothing and tells no one.
            if spec == before {
                return Ok(current);
            }
            // A webhook it keeps is checked again: the allow-list may have changed since.
            let spec = self.callable(spec)?;
            let mut next = current.with_spec(spec, Utc::now());
            next.updated_by.clone_from(&by.actor);
            next.trace.clone_from(&by.trace);
            if next.schedule != current.schedule
                && let Some(due) = next.schedule_time
            {
                next.next_attempt = self.free_attempt(&current, due).await?;
            }
            let event = Event::new(EventKind::Updated, next.clone(), None).attributed(by);
            match self
                .store
                .update(&next, current.version, &[], std::slice::from_ref(&event))
                .await
            {
                Ok(()) => {
                    self.hints.offer(next.id, next.due_at());
                    self.events.stored([&event]);
                    return Ok(next);
                }
                Err(StoreError::VersionConflict) if if_match.is_none() => continue,
                Err(StoreError::VersionConflict) => return Err(Error::VersionMismatch),
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing("being updated"))
    }

    /// The first attempt number with no run recorded for the job's fire due at `due`: a job
    /// moved back to a time it already fired for numbers its attempts on from those its ledger
    /// still holds. Only for the numbering: the run id's uniqueness does not rest on the
    /// ledger, which is trimmed, but on `Job::reschedules`.
    async fn free_attempt(&self, job: &Job, due: DateTime<Utc>) -> Result<u32, Error> {
        let history = self.store.run_history(job.id).await?;
        let taken = |attempt: u32| {
            job.open_runs
                .iter()
                .chain(history.iter())
                .any(|r| r.scheduled_for == due && r.attempt == attempt)
        };
        (1..=MAX_ATTEMPTS_PER_DUE_TIME)
            .find(|attempt| !taken(*attempt))
            .ok_or_else(fired_too_often)
    }

    /// Deletes a job and its runs; a pending fire never happens.
    pub async fn delete(&self, id: JobId, by: &Audit) -> Result<(), Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let job = self.get(id).await?;
            let version = job.version;
            let event = Event::new(EventKind::Deleted, job, None).attributed(by);
            match self
                .store
                .delete(id, version, std::slice::from_ref(&event))
                .await
            {
                Ok(()) => {
                    self.events.stored([&event]);
                    return Ok(());
                }
                Err(StoreError::VersionConflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing("being deleted"))
    }

    /// A job's runs, open and recorded, newest first (by due time, then attempt).
    pub async fn list_runs(&self, id: JobId, page: PageRequest) -> Result<Page<Run>, Error> {
        let job = self.get(id).await?;
        let mut runs = self.store.run_history(id).await?;
        runs.extend(job.open_runs);
        runs.sort_by(|a, b| {
            (b.scheduled_for, b.attempt, b.fired_at).cmp(&(a.scheduled_for, a.attempt, a.fired_at))
        });
        let total = runs.len() as u64;
        let items = runs
            .into_iter()
            .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
            .take(usize::try_from(page.size).unwrap_or(usize::MAX))
            .collect();
        Ok(Page::new(items, total, page))
    }

    /// Closes a run with an executor's result; without a run id, the job's oldest open run. The
    /// same result again changes nothing; a different result for a finished run (one that
    /// timed out, was cancelled, or already has a result) is a conflict.
    pub async fn report_result(
        &self,
        id: JobId,
        run_id: Option<RunId>,
        result: RunResult,
    ) -> Result<Run, Error> {
        Ok(self.apply_result(id, run_id, result).await?.run)
    }

    /// [`Jobs::report_result`], saying whether the result had been applied before.
    pub async fn apply_result(
        &self,
        id: JobId,
        run_id: Option<RunId>,
        result: RunResult,
    ) -> Result<Applied, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let job = self.get(id).await?;
            let step = match job.finish_run(run_id, &result, Utc::now(), rand::random()) {
                Ok(step) => step,
                Err(NotClosed::NoOpenRun) => {
                    return Err(Error::Conflict(NotClosed::NoOpenRun.to_string()));
                }
                Err(NotClosed::NotOpen(run_id)) => {
                    let run = self.recorded_result(id, run_id, &result).await?;
                    return Ok(Applied {
                        run,
                        duplicate: true,
                    });
                }
            };
            let Some(run) = step.finished.first().cloned() else {
                return Err(Error::Internal(anyhow::anyhow!(
                    "closing a run finished no run"
                )));
            };
            match self.store_step(&job, step, Origin::Operation).await {
                Ok(_) => {
                    return Ok(Applied {
                        run,
                        duplicate: false,
                    });
                }
                Err(StoreError::VersionConflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing("its result was being recorded"))
    }

    /// A result for a run that is not open: the recorded run if it ended the same way, else a
    /// conflict.
    async fn recorded_result(
        &self,
        id: JobId,
        run_id: RunId,
        result: &RunResult,
    ) -> Result<Run, Error> {
        let history = self.store.run_history(id).await?;
        let run = history
            .into_iter()
            .find(|r| r.run_id == run_id)
            .ok_or(Error::NotFound(Missing::Run))?;
        if run.status == result.status {
            Ok(run)
        } else {
            Err(finished_otherwise(run.status))
        }
    }

    /// Pauses a job: nothing fires until it is resumed.
    pub async fn pause(&self, id: JobId, by: &Audit) -> Result<Job, Error> {
        self.transition(id, by, Origin::Operation, |job, now| Ok(job.pause(now)?))
            .await
    }

    /// Resumes a paused job; the times it passed while paused go through its misfire policy.
    pub async fn resume(&self, id: JobId, by: &Audit) -> Result<Job, Error> {
        let limits = self.limits;
        // Every time that passed while paused is a misfire, so a catch-up fire of one counts
        // as a misfire as the scheduler's late fires do: a threshold of zero.
        let origin = Origin::Scheduler {
            misfire_threshold: chrono::Duration::zero(),
        };
        self.transition(id, by, origin, move |job, now| {
            Ok(job.resume(now, &limits, rand::random())?)
        })
        .await
    }

    /// Fires an extra run now; the schedule stays where it is.
    pub async fn trigger(&self, id: JobId, by: &Audit) -> Result<Job, Error> {
        let limits = self.limits;
        self.transition(id, by, Origin::Trigger, move |job, now| {
            Ok(job.trigger(now, &limits)?)
        })
        .await
    }

    /// Cancels a job: its open runs and waiting retries are cancelled, nothing fires again.
    pub async fn cancel(&self, id: JobId, by: &Audit) -> Result<Job, Error> {
        self.transition(id, by, Origin::Operation, |job, now| Ok(job.cancel(now)?))
            .await
    }

    /// Applies an operation to the current job and stores its step, attributed to `by`, again
    /// over a newer version if a concurrent change (a scheduler step) won the race.
    async fn transition(
        &self,
        id: JobId,
        by: &Audit,
        origin: Origin,
        operation: impl Fn(&Job, DateTime<Utc>) -> Result<Step, Error>,
    ) -> Result<Job, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let job = self.get(id).await?;
            let step = operation(&job, Utc::now())?.attributed(by);
            match self.store_step(&job, step, origin).await {
                Ok(job) => return Ok(job),
                Err(StoreError::VersionConflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(kept_changing("the operation was being applied"))
    }

    /// Stores a step over the job as it was (`before`), then counts it, hands on its events and
    /// hints its due time to the scheduler (the step may have brought it closer).
    async fn store_step(
        &self,
        before: &Job,
        step: Step,
        origin: Origin,
    ) -> Result<Job, StoreError> {
        let events = step.events();
        self.store
            .update(&step.job, before.version, &step.finished, &events)
            .await?;
        self.metrics.stored(before, &events, origin);
        self.hints.offer(step.job.id, step.job.due_at());
        self.events.stored(&events);
        Ok(step.job)
    }

    /// Succeeds when the store answers.
    pub async fn ready(&self) -> Result<(), Error> {
        Ok(self.store.ping().await?)
    }

    /// Succeeds when the durable event sink answers, or when there is none.
    pub async fn sink_ready(&self) -> Result<(), Error> {
        match &self.sink {
            Some(sink) => sink.ping().await.map_err(Error::Unavailable),
            None => Ok(()),
        }
    }
}

/// A read-modify-write that lost the race every time: the job is busy; try again.
pub(crate) fn kept_changing(while_: &str) -> Error {
    Error::Unavailable(anyhow::anyhow!("the job kept changing while {while_}"))
}

/// An idempotency key is 1 to 255 visible ASCII characters.
fn check_idempotency_key(key: &str) -> Result<(), Error> {
    if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Error::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ))
    }
}

/// How a store failure reaches a caller: the use cases turn the conflicts they expect into
/// retries or their own errors first, so what remains is an outage, a taken key, a missing
/// job, or a fault.
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => Self::Unavailable(e),
            StoreError::DuplicateKey => Self::AlreadyExists("the job exists already".into()),
            StoreError::VersionConflict => Self::Internal(anyhow::anyhow!(
                "unhandled version conflict in the job store"
            )),
            StoreError::NotFound => Self::NotFound(Missing::Job),
            StoreError::Internal(e) => Self::Internal(e),
        }
    }
}
