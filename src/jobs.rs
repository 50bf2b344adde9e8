//! The job use cases: the one layer both transports call.
//!
//! Handlers convert their wire types into the inputs here and the results back; every rule
//! about jobs (validation, rescheduling, versions, idempotency, results) lives here or in
//! `domain`. Each change is stored first and then described by one event.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Notify;

use crate::{
    domain::{Job, JobId, JobInput, Run, RunId, RunResult, ScheduleInput, name_of, parse_time},
    error::{Error, FieldError, decode_value},
    events::{Event, EventKind, EventRoute},
    lifecycle::{Limits, Step},
    outbox::Publisher,
    schedule::{MAX_PREVIEW, Preview},
    store::{IdempotencyKey, JobFilter, JobStore, PageRequest, StoreError},
};

/// Largest page size of a listing.
pub const MAX_PAGE_SIZE: u64 = 100;
/// Largest page number: keeps every offset within what a store can count to.
pub const MAX_PAGE: i64 = 1_000_000_000;
/// Page size when none is given.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Most fires recorded for one due time of one job.
const MAX_ATTEMPTS_PER_DUE_TIME: u32 = 100;
/// How often a read-modify-write is retried when a concurrent writer won the race.
const WRITE_ATTEMPTS: usize = 8;

/// One page of a listing, with the counts a client pages by.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total_count: u64,
    pub total_pages: u64,
    pub page: u64,
    pub size: u64,
    pub has_more: bool,
}

impl<T> Page<T> {
    fn new(items: Vec<T>, total_count: u64, request: PageRequest) -> Self {
        let total_pages = total_count.div_ceil(request.size);
        Self {
            items,
            total_count,
            total_pages,
            page: request.page,
            size: request.size,
            has_more: request.page < total_pages,
        }
    }
}

/// Checks a page request: page ≥ 1 and 1 ≤ size ≤ 100; absent values take the defaults.
pub fn page_request(page: Option<i64>, size: Option<i64>) -> Result<PageRequest, Error> {
    let mut errors = Vec::new();
    let page = page.unwrap_or(1);
    let size = size.unwrap_or(DEFAULT_PAGE_SIZE as i64);
    if page < 1 {
        errors.push(crate::error::FieldError::new("page", "must be at least 1"));
    } else if page > MAX_PAGE {
        errors.push(crate::error::FieldError::new(
            "page",
            format!("must be at most {MAX_PAGE}"),
        ));
    }
    if !(1..=MAX_PAGE_SIZE as i64).contains(&size) {
        errors.push(crate::error::FieldError::new(
            "size",
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    if errors.is_empty() {
        Ok(PageRequest {
            page: page as u64,
            size: size as u64,
        })
    } else {
        Err(Error::Invalid(errors))
    }
}

/// The next fire times of a schedule as a client gives it: `count` (1 to 100, default 10)
/// after `from` (RFC 3339, default now).
pub fn preview(
    schedule: &ScheduleInput,
    count: Option<i64>,
    from: Option<&str>,
) -> Result<Preview, Error> {
    let mut errors = Vec::new();
    let count = count.unwrap_or(10);
    if !(1..=MAX_PREVIEW as i64).contains(&count) {
        errors.push(FieldError::new(
            "count",
            format!("must be between 1 and {MAX_PREVIEW}"),
        ));
    }
    let from = from
        .map(parse_time)
        .transpose()
        .map_err(|m| errors.push(FieldError::new("from", m)))
        .ok()
        .flatten();
    let parsed = schedule.parse().map_err(|mut e| errors.append(&mut e));
    match parsed {
        Ok(schedule) if errors.is_empty() => Ok(Preview::new(
            schedule,
            from.unwrap_or_else(Utc::now),
            count as usize,
        )),
        _ => Err(Error::Invalid(errors)),
    }
}

/// A change to a job's editable fields.
#[derive(Debug, Clone)]
pub enum JobChange {
    /// An RFC 7396 JSON merge patch over the REST shape of the editable fields. gRPC's
    /// UpdateJob is expressed as one too, so both transports share one update path.
    MergePatch(Value),
    /// The given top-level fields replace the stored ones whole; the others keep their values.
    /// This is gRPC's UpdateJob, which carries five fields.
    Replace(serde_json::Map<String, Value>),
}

/// Outcome of a create: the job, and whether it was created earlier under the same
/// idempotency key (then nothing was stored now).
#[derive(Debug, Clone)]
pub struct Created {
    pub job: Job,
    pub replayed: bool,
}

/// The use cases, over a store and an event sink.
#[derive(Clone)]
pub struct Jobs {
    store: Arc<dyn JobStore>,
    events: EventRoute,
    /// Wakes the scheduler loop when a change may bring an earlier due time.
    wake: Arc<Notify>,
    /// The durable event sink, when one is configured: readiness checks it too.
    sink: Option<Arc<dyn Publisher>>,
    /// Bounds of the engine, for the operations that fire (resume, trigger).
    limits: Limits,
}

impl Jobs {
    pub fn new(store: Arc<dyn JobStore>, events: EventRoute, wake: Arc<Notify>) -> Self {
        Self {
            store,
            events,
            wake,
            sink: None,
            limits: Limits::default(),
        }
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

    /// Creates a job. With an idempotency key, the same key and input again return the first
    /// job; the same key with another input is an error.
    pub async fn create(
        &self,
        input: JobInput,
        idempotency_key: Option<String>,
    ) -> Result<Created, Error> {
        let spec = input.parse()?;
        let key = idempotency_key
            .map(|key| check_idempotency_key(&key).map(|()| key))
            .transpose()?
            .map(|key| IdempotencyKey {
                key,
                fingerprint: spec.fingerprint(),
            });
        if let Some(key) = &key
            && let Some(created) = self.replay(key).await?
        {
            return Ok(created);
        }
        let job = Job::new(spec, Utc::now());
        let event = Event::new(EventKind::Created, job.clone(), None);
        match self
            .store
            .insert(
                &job,
                key.as_ref(),
                self.events.outbox(std::slice::from_ref(&event)),
            )
            .await
        {
            Ok(()) => {}
            // A concurrent create with the same key won the race.
            Err(StoreError::DuplicateKey) if key.is_some() => {
                if let Some(created) = self.replay(key.as_ref().expect("checked")).await? {
                    return Ok(created);
                }
                return Err(StoreError::DuplicateKey.into());
            }
            Err(e) => return Err(e.into()),
        }
        self.wake.notify_one();
        self.events.stored([event]).await;
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

    pub async fn get(&self, id: JobId) -> Result<Job, Error> {
        self.store.get(id).await?.ok_or(Error::NotFound("job"))
    }

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
        if_match: Option<u64>,
    ) -> Result<Job, Error> {
        if let JobChange::MergePatch(patch) = &change
            && !patch.is_object()
        {
            return Err(Error::invalid(
                "body",
                "must be a JSON object (a merge patch)",
            ));
        }
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.get(id).await?;
            if let Some(expected) = if_match
                && expected != current.version
            {
                return Err(Error::VersionMismatch);
            }
            let mut document = current.spec().document();
            match &change {
                JobChange::MergePatch(patch) => merge_patch(&mut document, patch),
                JobChange::Replace(fields) => {
                    let target = document
                        .as_object_mut()
                        .expect("a spec document is an object");
                    target.extend(fields.clone());
                }
            }
            let spec = decode_value::<JobInput>(document)?.parse()?;
            let mut next = current.with_spec(spec, Utc::now());
            if next.schedule != current.schedule
                && let Some(due) = next.schedule_time
            {
                next.next_attempt = self.free_attempt(&current, due).await?;
            }
            let event = Event::new(EventKind::Updated, next.clone(), None);
            match self
                .store
                .update(
                    &next,
                    current.version,
                    &[],
                    self.events.outbox(std::slice::from_ref(&event)),
                )
                .await
            {
                Ok(()) => {
                    self.wake.notify_one();
                    self.events.stored([event]).await;
                    return Ok(next);
                }
                Err(StoreError::VersionConflict) if if_match.is_none() => continue,
                Err(StoreError::VersionConflict) => return Err(Error::VersionMismatch),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(anyhow::anyhow!(
            "the job kept changing while it was being updated"
        )))
    }

    /// The first attempt number with no run recorded for the job's fire due at `due`: a job
    /// moved back to a time it already fired for records a new attempt, not over the old run.
    async fn free_attempt(&self, job: &Job, due: DateTime<Utc>) -> Result<u32, Error> {
        let history = self.store.run_history(job.id).await?;
        let taken =
            |id: RunId| job.open_run(id).is_some() || history.iter().any(|r| r.run_id == id);
        for attempt in 1..=MAX_ATTEMPTS_PER_DUE_TIME {
            if !taken(RunId::derive(job.id, due, attempt)) {
                return Ok(attempt);
            }
        }
        Err(Error::Conflict(format!(
            "the job already fired {MAX_ATTEMPTS_PER_DUE_TIME} times for this due time; choose another"
        )))
    }

    /// Deletes a job and its runs; a pending fire never happens.
    pub async fn delete(&self, id: JobId) -> Result<(), Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let job = self.get(id).await?;
            let version = job.version;
            let event = Event::new(EventKind::Deleted, job, None);
            match self
                .store
                .delete(
                    id,
                    version,
                    self.events.outbox(std::slice::from_ref(&event)),
                )
                .await
            {
                Ok(()) => {
                    self.events.stored([event]).await;
                    return Ok(());
                }
                Err(StoreError::VersionConflict) => continue,
                Err(StoreError::NotFound) => return Err(Error::NotFound("job")),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(anyhow::anyhow!(
            "the job kept changing while it was being deleted"
        )))
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
            .take(page.size as usize)
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
        for _ in 0..WRITE_ATTEMPTS {
            let job = self.get(id).await?;
            let step = match job.finish_run(run_id, &result, Utc::now(), rand::random()) {
                Ok(step) => step,
                Err(Some(error)) => return Err(error),
                Err(None) => {
                    let run_id = run_id.expect("only a named run can be missing");
                    let history = self.store.run_history(id).await?;
                    let run = history
                        .into_iter()
                        .find(|r| r.run_id == run_id)
                        .ok_or(Error::NotFound("run"))?;
                    return if run.status == result.status {
                        Ok(run)
                    } else {
                        Err(Error::Conflict(format!(
                            "the run already finished as {}",
                            name_of(&run.status)
                        )))
                    };
                }
            };
            let run = step.finished[0].clone();
            match self.store_step(job.version, step).await {
                Ok(_) => return Ok(run),
                Err(StoreError::VersionConflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(anyhow::anyhow!(
            "the job kept changing while its result was being recorded"
        )))
    }

    /// Pauses a job: nothing fires until it is resumed.
    pub async fn pause(&self, id: JobId) -> Result<Job, Error> {
        self.transition(id, |job, now| job.pause(now)).await
    }

    /// Resumes a paused job; the times it passed while paused go through its misfire policy.
    pub async fn resume(&self, id: JobId) -> Result<Job, Error> {
        let limits = self.limits;
        self.transition(id, move |job, now| job.resume(now, &limits, rand::random()))
            .await
    }

    /// Fires an extra run now; the schedule stays where it is.
    pub async fn trigger(&self, id: JobId) -> Result<Job, Error> {
        let limits = self.limits;
        self.transition(id, move |job, now| job.trigger(now, &limits))
            .await
    }

    /// Cancels a job: its open runs and waiting retries are cancelled, nothing fires again.
    pub async fn cancel(&self, id: JobId) -> Result<Job, Error> {
        self.transition(id, |job, now| job.cancel(now)).await
    }

    /// Applies an operation to the current job and stores its step, again over a newer
    /// version if a concurrent change (a scheduler step) won the race.
    async fn transition(
        &self,
        id: JobId,
        operation: impl Fn(&Job, DateTime<Utc>) -> Result<Step, Error>,
    ) -> Result<Job, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let job = self.get(id).await?;
            let step = operation(&job, Utc::now())?;
            match self.store_step(job.version, step).await {
                Ok(job) => return Ok(job),
                Err(StoreError::VersionConflict) => continue,
                Err(StoreError::NotFound) => return Err(Error::NotFound("job")),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(anyhow::anyhow!(
            "the job kept changing while the operation was being applied"
        )))
    }

    /// Stores a step over the job's `version`, then hands on its events and wakes the
    /// scheduler (the step may have brought a due time closer).
    async fn store_step(&self, version: u64, step: Step) -> Result<Job, StoreError> {
        let events = step.events();
        self.store
            .update(
                &step.job,
                version,
                &step.finished,
                self.events.outbox(&events),
            )
            .await?;
        self.wake.notify_one();
        self.events.stored(events).await;
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

/// RFC 7396: objects merge recursively, `null` removes a member, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(target) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn page_requests_are_bounded() {
        assert!(page_request(Some(0), None).is_err());
        assert!(page_request(Some(i64::MAX), Some(100)).is_err());
        assert!(page_request(Some(MAX_PAGE), Some(100)).is_ok());
        assert!(page_request(None, Some(0)).is_err());
        assert!(page_request(None, Some(1000)).is_err());
        assert_eq!(
            page_request(None, None).unwrap(),
            PageRequest { page: 1, size: 20 }
        );
    }

    #[test]
    fn pages_count_the_whole_listing() {
        let page = Page::new(vec![1, 2], 5, PageRequest { page: 2, size: 2 });
        assert_eq!((page.total_pages, page.has_more), (3, true));
        let last = Page::new(vec![5], 5, PageRequest { page: 3, size: 2 });
        assert!(!last.has_more);
    }
}
