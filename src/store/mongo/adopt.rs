//! Adopting the documents of the older service, which kept its jobs in the same shape of
//! database (`jobs` collection) with other fields: `_id`, `name`, `description`,
//! `scheduleTime`, `createdAt`, `updatedAt` (dates), `status` and `jobType` (numbers),
//! `jobData` (JSON text) and `scheduledKey` (its in-memory timer's key).
//!
//! Adoption runs when the store starts (once the server answers), so pointing the service at
//! the older database is the whole switch: no separate step to forget, and a replica that
//! starts later finds nothing left to do. Each document is rewritten by one conditional
//! replace that matches it only while it is still in the older shape, so a document is either
//! the older one or ours, never half of each, whatever dies when; two replicas adopting at once
//! convert each document once. A document that cannot be read (a status or type the older
//! service never wrote, data that is not JSON) is left as it was and logged.
//!
//! What carries over: the id, name, description, type, data, creation and change times. A
//! pending job (PENDING or SCHEDULED) becomes a one-shot at its `scheduleTime` and fires then,
//! or at once if that time has passed; a RUNNING job keeps its run open (the run the older
//! service published, under the id our runs derive from its time), so the executor's result
//! closes it, or its timeout retries or fails it; a finished job keeps its status with nothing
//! due. The older `scheduledKey` is kept beside, under `adopted`, with when adoption happened.

use bson::{Bson, Document, doc};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::Collection;

use super::{
    MongoStore,
    document::{bson_time, chrono_time, new_job},
    map_err,
};
use crate::{
    domain::{
        DEFAULT_RUN_TIMEOUT_SECONDS, Job, JobData, JobId, JobSpec, JobStatus, JobType,
        MisfirePolicy, OverlapPolicy, RetryPolicy, Run, Schedule,
    },
    jobs::ports::StoreError,
};

/// What marks a document as the older service's: its due time without our schedule.
fn older_shape() -> Document {
    doc! { "schedule": { "$exists": false }, "scheduleTime": { "$exists": true } }
}

impl MongoStore {
    /// Adopts every document of the older service in `jobs`; how many it converted.
    pub(super) async fn adopt_older_documents(&self) -> Result<u64, StoreError> {
        adopt_from(&self.jobs).await
    }
}

async fn adopt_from(jobs: &Collection<Document>) -> Result<u64, StoreError> {
    let mut found = jobs.find(older_shape()).await.map_err(map_err)?;
    let (mut adopted, now) = (0, Utc::now());
    while let Some(older) = found.try_next().await.map_err(map_err)? {
        let Some(id) = older.get_object_id("_id").ok() else {
            continue;
        };
        let job = match job_of(&older) {
            Ok(job) => job,
            Err(why) => {
                tracing::warn!(id = %id, %why, "a document of the older service is left as it was");
                continue;
            }
        };
        let mut document = new_job(&job, None, &[])?;
        let mut adopted_from = doc! { "at": bson_time(now) };
        if let Ok(key) = older.get_str("scheduledKey") {
            adopted_from.insert("scheduledKey", key);
        }
        document.insert("adopted", adopted_from);
        let mut still_older = older_shape();
        still_older.insert("_id", id);
        let replaced = jobs
            .replace_one(still_older, document)
            .await
            .map_err(map_err)?;
        adopted += replaced.modified_count;
    }
    if adopted > 0 {
        tracing::info!(adopted, "adopted the jobs of the older service");
    }
    Ok(adopted)
}

/// A number the older service wrote (its driver writes `int` as 32 or 64 bits).
fn number(document: &Document, field: &str) -> Result<i32, String> {
    match document.get(field) {
        Some(Bson::Int32(n)) => Ok(*n),
        Some(Bson::Int64(n)) => i32::try_from(*n).map_err(|_| format!("`{field}` is {n}")),
        other => Err(format!("`{field}` is not a number: {other:?}")),
    }
}

/// A date the older service wrote.
fn date(document: &Document, field: &str) -> Result<Option<DateTime<Utc>>, String> {
    match document.get(field) {
        Some(Bson::DateTime(t)) => Ok(Some(chrono_time(*t))),
        None | Some(Bson::Null) => Ok(None),
        other => Err(format!("`{field}` is not a date: {other:?}")),
    }
}

/// The job an older document describes.
fn job_of(older: &Document) -> Result<Job, String> {
    let id = older
        .get_object_id("_id")
        .map(JobId::from_object_id)
        .map_err(|_| "`_id` is not an ObjectId".to_owned())?;
    let text = |field: &str| older.get_str(field).unwrap_or_default().to_owned();
    let job_type = JobType::from_code(number(older, "jobType")?)
        .ok_or_else(|| "`jobType` is none of EMAIL (0) and SMS (1)".to_owned())?;
    let data = text("jobData");
    let job_data = if data.trim().is_empty() {
        JobData::from_map(&serde_json::Map::new())
    } else {
        JobData::parse(&data).map_err(|e| format!("`jobData` is not a JSON object: {e}"))?
    };
    let due = date(older, "scheduleTime")?;
    let created_at = date(older, "createdAt")?.or(due).unwrap_or_else(Utc::now);
    let updated_at = date(older, "updatedAt")?.unwrap_or(created_at);
    let status = JobStatus::from_code(number(older, "status")?)
        .ok_or_else(|| "`status` is not a job status".to_owned())?;
    let run_at = due.unwrap_or(created_at);
    let spec = JobSpec {
        name: text("name"),
        description: text("description"),
        job_type,
        job_data,
        schedule: Schedule::RunAt(run_at),
        retry: RetryPolicy::default(),
        run_timeout_seconds: DEFAULT_RUN_TIMEOUT_SECONDS,
        misfire_policy: MisfirePolicy::default(),
        overlap_policy: OverlapPolicy::default(),
        delivery: None,
        webhook: None,
    };
    // As the older service made it, with its id, times and status; nothing due unless below.
    let mut job = Job::new(spec, created_at);
    job.id = id;
    job.updated_at = updated_at;
    job.status = status;
    job.schedule_time = None;
    match status {
        // Still to fire: at its time, or at once if that has passed.
        JobStatus::Pending | JobStatus::Scheduled => {
            job.status = JobStatus::Scheduled;
            job.schedule_time = Some(run_at);
        }
        // Fired, its result not yet in: the run stays open for it.
        JobStatus::Running => {
            let fired_at = updated_at.max(run_at);
            let run = Run::running(job.run_id(run_at, 1), id, run_at, 1, fired_at);
            job.open_runs.push(run);
            job.next_attempt = 2;
        }
        // Finished, paused or cancelled: nothing due.
        _ => {}
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;

    use super::*;

    fn older(status: i32, due: &str) -> Document {
        let due = bson::DateTime::parse_rfc3339_str(due).unwrap();
        doc! {
            "_id": ObjectId::new(),
            "name": "report",
            "description": "",
            "scheduleTime": due,
            "createdAt": due,
            "updatedAt": due,
            "status": status,
            "jobType": 1_i64,
            "jobData": r#"{"To": "+100"}"#,
            "scheduledKey": "k",
        }
    }

    #[test]
    fn each_older_status_maps_to_what_is_still_to_happen() {
        let due: DateTime<Utc> = "2030-01-01T09:00:00Z".parse().unwrap();
        for (code, status, next) in [
            (1, JobStatus::Scheduled, Some(due)),
            (2, JobStatus::Scheduled, Some(due)),
            (4, JobStatus::Succeeded, None),
            (5, JobStatus::Failed, None),
        ] {
            let job = job_of(&older(code, "2030-01-01T09:00:00Z")).unwrap();
            assert_eq!((job.status, job.next_fire()), (status, next), "{code}");
        }
        let running = job_of(&older(3, "2030-01-01T09:00:00Z")).unwrap();
        assert_eq!(running.status, JobStatus::Running);
        assert_eq!(running.open_runs.len(), 1);
        assert_eq!(running.next_fire(), None);
    }

    #[test]
    fn a_document_the_older_service_never_wrote_is_not_adopted() {
        let mut bad_type = older(2, "2030-01-01T09:00:00Z");
        bad_type.insert("jobType", 7);
        let mut bad_data = older(2, "2030-01-01T09:00:00Z");
        bad_data.insert("jobData", "not json");
        let mut bad_status = older(2, "2030-01-01T09:00:00Z");
        bad_status.insert("status", 99);
        for document in [bad_type, bad_data, bad_status] {
            assert!(job_of(&document).is_err(), "{document}");
        }
    }
}
