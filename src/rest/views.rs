//! What the REST API shows: jobs, runs, pages, previews and events as JSON, each converted
//! from the domain in one place.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    domain::{
        Delivery, Event, Job, JobData, JobStatus, JobType, MisfirePolicy, OverlapPolicy, Preview,
        RetryPolicy, Run, RunStatus, Schedule, ScheduleFields, Webhook, format_time,
    },
    jobs::Page,
};

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobView {
    /// 24-hex-digit ObjectId.
    #[schema(example = "65f1c0ffee0123456789abcd")]
    id: String,
    name: String,
    description: String,
    job_type: JobType,
    #[schema(value_type = Object)]
    job_data: JobData,
    schedule: ScheduleView,
    retry: RetryPolicy,
    run_timeout_seconds: u32,
    misfire_policy: MisfirePolicy,
    overlap_policy: OverlapPolicy,
    /// Where its runs go, when the job chose; absent: its webhook if it has one, else Kafka
    /// when brokers are configured, else pulling workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery: Option<Delivery>,
    /// Where its runs are POSTed; header values and the secret are never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookView>,
    /// The next fire (regular or retry); null when nothing is due. While paused, where the
    /// schedule stands.
    schedule_time: Option<String>,
    status: JobStatus,
    created_at: String,
    updated_at: String,
    /// Increases on every change; sent as `ETag`, honoured in `If-Match`.
    version: u64,
    /// The subject of the token that created it; absent without access control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    /// The subject of the token that last changed it through the API (an update or an
    /// operation); absent without access control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_by: Option<String>,
}

/// A job's webhook as the API shows it: what was written, but header values and the secret,
/// which may be credentials.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookView {
    #[schema(example = "https://hooks.example.com/scheduler")]
    url: String,
    /// The names of the headers each call carries.
    header_names: Vec<String>,
    /// Whether calls are signed (the job has a secret).
    signed: bool,
}

impl From<&Webhook> for WebhookView {
    fn from(webhook: &Webhook) -> Self {
        Self {
            url: webhook.url.clone(),
            header_names: webhook.headers.keys().cloned().collect(),
            signed: webhook.secret.is_some(),
        }
    }
}

/// When the job fires: the fields of its kind only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScheduleView {
    /// The one fire of a one-shot job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval_seconds: Option<u64>,
    /// The interval's first fire (set from the creation time when none was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_at: Option<String>,
}

impl From<&Schedule> for ScheduleView {
    fn from(schedule: &Schedule) -> Self {
        let ScheduleFields {
            run_at,
            cron,
            timezone,
            interval_seconds,
            start_at,
        } = ScheduleFields::from(schedule);
        Self {
            run_at: run_at.map(format_time),
            cron,
            timezone,
            interval_seconds,
            start_at: start_at.map(format_time),
        }
    }
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id.to_string(),
            name: job.name.clone(),
            description: job.description.clone(),
            job_type: job.job_type,
            job_data: job.job_data.clone(),
            schedule: ScheduleView::from(&job.schedule),
            retry: job.retry,
            run_timeout_seconds: job.run_timeout_seconds,
            misfire_policy: job.misfire_policy,
            overlap_policy: job.overlap_policy,
            delivery: job.delivery,
            webhook: job.webhook.as_ref().map(WebhookView::from),
            schedule_time: job.next_fire().map(format_time),
            status: job.status,
            created_at: format_time(job.created_at),
            updated_at: format_time(job.updated_at),
            version: job.version,
            created_by: job.created_by.clone(),
            updated_by: job.updated_by.clone(),
        }
    }
}

/// One execution of a job, or an expected fire that did not happen.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunView {
    /// Deterministic from job id, due time and attempt.
    run_id: String,
    job_id: String,
    scheduled_for: String,
    /// Null for `SKIPPED`, `MISSED`, and retries `CANCELLED` before they fired.
    fired_at: Option<String>,
    attempt: u32,
    status: RunStatus,
    finished_at: Option<String>,
    error: Option<String>,
    output: Option<String>,
    /// Who made the record through an operation (trigger, cancel, resume); absent for the
    /// scheduler's own records and without access control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    /// Why, as that caller said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// How it reaches its executor: `webhook`, `kafka` or `pull`; absent for runs fired
    /// before there was a choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery: Option<Delivery>,
    /// While open and held by a worker (or the webhook caller): when the hold lapses and the
    /// run is offered again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_until: Option<String>,
}

impl From<&Run> for RunView {
    fn from(run: &Run) -> Self {
        Self {
            run_id: run.run_id.to_string(),
            job_id: run.job_id.to_string(),
            scheduled_for: format_time(run.scheduled_for),
            fired_at: run.fired_at.map(format_time),
            attempt: run.attempt,
            status: run.status,
            finished_at: run.finished_at.map(format_time),
            error: run.error.clone(),
            output: run.output.clone(),
            actor: run.actor.clone(),
            reason: run.reason.clone(),
            delivery: run.delivery,
            lease_until: run
                .lease
                .as_ref()
                .filter(|_| run.status == RunStatus::Running)
                .map(|lease| format_time(lease.until)),
        }
    }
}

/// The next fire times of a schedule.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviewView {
    schedule: ScheduleView,
    times: Vec<FireTimeView>,
}

/// One previewed fire.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FireTimeView {
    /// The instant, UTC.
    #[schema(example = "2026-03-29T01:00:00.000Z")]
    time: String,
    /// The same instant on the schedule's wall clock, with its offset.
    #[schema(example = "2026-03-29T03:00:00+02:00")]
    local_time: String,
    /// True when the asked-for local time does not exist (the clock jumps over it), so the fire
    /// moved to the first valid instant after it.
    dst_shifted: bool,
    /// `NONE`, `SKIPPED` (moved past a jump), or `REPEATED` (a local time that occurs twice:
    /// fires at its first occurrence only).
    #[schema(example = "SKIPPED")]
    dst: String,
    /// The local time the schedule asked for.
    #[schema(example = "2026-03-29T02:30:00")]
    requested_local_time: String,
}

impl From<&Preview> for PreviewView {
    fn from(preview: &Preview) -> Self {
        Self {
            schedule: ScheduleView::from(&preview.schedule),
            times: preview
                .times
                .iter()
                .map(|fire| FireTimeView {
                    time: format_time(fire.at),
                    local_time: preview.local_time(fire.at),
                    dst_shifted: fire.dst_shifted(),
                    dst: fire.shift.name().to_owned(),
                    requested_local_time: fire.requested_local_time(),
                })
                .collect(),
        }
    }
}

/// A page of a listing as the API shows it: the counts, then the items under `$items`.
macro_rules! page_view {
    ($(#[$meta:meta])* $name:ident { $items:ident: $view:ident }) => {
        $(#[$meta])*
        #[derive(Debug, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub(crate) struct $name {
            total_count: u64,
            total_pages: u64,
            page: u64,
            size: u64,
            has_more: bool,
            /// True when the page holds only its first items, because all of them would exceed
            /// the response size limit (1 MiB): ask for a smaller `size` to see the rest.
            #[serde(default)]
            truncated: bool,
            $items: Vec<$view>,
        }

        impl<T> From<Page<T>> for $name
        where
            for<'a> $view: From<&'a T>,
        {
            fn from(page: Page<T>) -> Self {
                Self {
                    $items: page.items.iter().map($view::from).collect(),
                    total_count: page.total_count,
                    total_pages: page.total_pages,
                    page: page.page,
                    size: page.size,
                    has_more: page.has_more,
                    truncated: page.truncated,
                }
            }
        }
    };
}

page_view! {
    /// A page of jobs.
    JobPage { jobs: JobView }
}

page_view! {
    /// A page of runs, newest first.
    RunPage { runs: RunView }
}

/// An event as the SSE stream carries it in `data`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventView {
    /// Unique per event.
    id: String,
    /// `scheduler.job.` and what happened: `created`, `updated`, `deleted`, `run`,
    /// `finished`, `paused`, `resumed` or `cancelled`.
    #[serde(rename = "type")]
    kind: String,
    time: String,
    job_id: String,
    job: JobView,
    run: Option<RunView>,
    /// Who caused it through the API; absent for the scheduler's own events and without
    /// access control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    /// Why, as that caller said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<&Event> for EventView {
    fn from(event: &Event) -> Self {
        Self {
            id: event.id.to_string(),
            kind: event.kind.ce_type().to_owned(),
            time: format_time(event.time),
            job_id: event.job.id.to_string(),
            job: JobView::from(&event.job),
            run: event.run.as_ref().map(RunView::from),
            actor: event.actor.clone(),
            reason: event.reason.clone(),
        }
    }
}

/// An executor's report of how a run ended.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ResultInput {
    /// How the run ended.
    pub(crate) status: ResultStatus,
    /// Why it failed; at most 4 KiB.
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// What it produced; at most 16 KiB.
    #[serde(default)]
    pub(crate) output: Option<String>,
}

/// The statuses an executor may report: the other run statuses are the service's to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ResultStatus {
    /// The run did its work.
    Succeeded,
    /// The run failed; it is retried while attempts remain.
    Failed,
}

impl From<ResultStatus> for RunStatus {
    fn from(status: ResultStatus) -> Self {
        match status {
            ResultStatus::Succeeded => Self::Succeeded,
            ResultStatus::Failed => Self::Failed,
        }
    }
}

/// Why an operation (pause, resume, trigger, cancel) is made: recorded with its actor on the
/// job's events and the ledger records it makes. The body is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OperationInput {
    /// Up to 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) reason: Option<String>,
}
