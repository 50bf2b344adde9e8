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
    domain::{Job, JobId, JobInput, JobStatus, Run, RunId, RunResult, RunStatus},
    error::{Error, decode_value},
    events::{Event, EventKind, EventRoute},
    outbox::Publisher,
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
}

impl Jobs {
    pub fn new(store: Arc<dyn JobStore>, events: EventRoute, wake: Arc<Notify>) -> Self {
        Self {
            store,
            events,
            wake,
            sink: None,
        }
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
            .insert(&job, key.as_ref(), self.events.outbox(&event))
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
            let mut next = current.with_spec(spec, Utc::now())?;
            if next.schedule != current.schedule
                && let Some(due) = next.schedule_time
            {
                next.next_attempt = self.free_attempt(id, due).await?;
            }
            let event = Event::new(EventKind::Updated, next.clone(), None);
            match self
                .store
                .update(&next, current.version, None, self.events.outbox(&event))
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
    async fn free_attempt(&self, id: JobId, due: DateTime<Utc>) -> Result<u32, Error> {
        for attempt in 1..=MAX_ATTEMPTS_PER_DUE_TIME {
            if self
                .store
                .get_run(id, RunId::derive(id, due, attempt))
                .await?
                .is_none()
            {
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
                .delete(id, version, self.events.outbox(&event))
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

    /// A job's runs, newest first.
    pub async fn list_runs(&self, id: JobId, page: PageRequest) -> Result<Page<Run>, Error> {
        self.get(id).await?;
        let (runs, total) = self.store.list_runs(id, page).await?;
        Ok(Page::new(runs, total, page))
    }

    /// Closes a run with an executor's result; without a run id, the job's open run. The same
    /// result again changes nothing; a different result for a finished run is a conflict.
    pub async fn report_result(
        &self,
        id: JobId,
        run_id: Option<RunId>,
        result: RunResult,
    ) -> Result<Run, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let job = self.get(id).await?;
            let run_id = run_id
                .or(job.open_run)
                .ok_or_else(|| Error::Conflict("the job has no open run".into()))?;
            let mut run = self
                .store
                .get_run(id, run_id)
                .await?
                .ok_or(Error::NotFound("run"))?;
            if run.status.is_finished() {
                return if run.status == result.status {
                    Ok(run)
                } else {
                    Err(Error::Conflict(format!(
                        "the run already finished as {}",
                        status_name(run.status)
                    )))
                };
            }
            let now = Utc::now();
            run.status = result.status;
            run.finished_at = Some(crate::domain::truncate(now));
            run.error = result.error.clone();
            run.output = result.output.clone();
            let mut next = job.clone();
            if job.open_run == Some(run_id) {
                next.open_run = None;
                if job.status == JobStatus::Running {
                    next.status = match result.status {
                        RunStatus::Succeeded => JobStatus::Succeeded,
                        _ => JobStatus::Failed,
                    };
                }
            }
            next.touch(now);
            let event = Event::new(EventKind::Finished, next.clone(), Some(run.clone()));
            match self
                .store
                .update(&next, job.version, Some(&run), self.events.outbox(&event))
                .await
            {
                Ok(()) => {
                    self.events.stored([event]).await;
                    return Ok(run);
                }
                Err(StoreError::VersionConflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(anyhow::anyhow!(
            "the job kept changing while its result was being recorded"
        )))
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

fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "RUNNING",
        RunStatus::Succeeded => "SUCCEEDED",
        RunStatus::Failed => "FAILED",
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
