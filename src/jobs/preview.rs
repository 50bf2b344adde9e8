//! Schedules' next fire times, and the evaluation of a new cron expression, which can take
//! long, off the threads that serve requests.

use std::time::Duration;

use chrono::Utc;

use super::error::Error;
use crate::domain::{MAX_PREVIEW, Preview, ScheduleInput, field::Errors, parse_time};

/// Longest the evaluation of a new cron expression may take. Every next fire is one search,
/// but refusing an expression that never matches searches to the year 5000 (tens of
/// milliseconds), so a new cron is evaluated on the blocking pool, never on the threads that
/// serve requests, and a call whose evaluation takes longer than this is refused.
const EVALUATION_DEADLINE: Duration = Duration::from_secs(2);

/// Runs `work`, which evaluates a new cron expression when `cron` is true, off the request
/// threads and within [`EVALUATION_DEADLINE`]; anything else runs at once.
pub(super) async fn evaluate<T: Send + 'static>(
    cron: bool,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if !cron {
        return work();
    }
    match tokio::time::timeout(EVALUATION_DEADLINE, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(failed)) => Err(Error::Internal(anyhow::anyhow!(
            "evaluating a schedule failed: {failed}"
        ))),
        Err(_) => Err(Error::from(crate::domain::Invalid::field(
            "schedule.cron",
            format!(
                "takes longer than {} s to evaluate",
                EVALUATION_DEADLINE.as_secs()
            ),
        ))),
    }
}

/// The next fire times of a schedule as a client gives it: `count` (1 to 100, default 10)
/// after `from` (RFC 3339, default now). A cron expression is evaluated off the request
/// threads.
pub async fn preview(
    schedule: ScheduleInput,
    count: Option<i64>,
    from: Option<String>,
) -> Result<Preview, Error> {
    evaluate(schedule.cron.is_some(), move || {
        preview_now(&schedule, count, from.as_deref())
    })
    .await
}

/// The preview of `schedule` now, on the calling thread (the OpenAPI examples take its
/// refusals).
pub(crate) fn preview_now(
    schedule: &ScheduleInput,
    count: Option<i64>,
    from: Option<&str>,
) -> Result<Preview, Error> {
    let mut errors = Errors::new();
    let count = count.unwrap_or(10);
    let count = usize::try_from(count)
        .ok()
        .filter(|n| (1..=MAX_PREVIEW).contains(n));
    if count.is_none() {
        errors.push("count", format!("must be between 1 and {MAX_PREVIEW}"));
    }
    let from = match from.map(parse_time) {
        Some(Err(message)) => {
            errors.push("from", message);
            None
        }
        Some(Ok(from)) => Some(from),
        None => Some(Utc::now()),
    };
    let schedule = errors.take(schedule.parse());
    let preview = errors.finish(|| Some(Preview::new(schedule?, from?, count?)))?;
    Ok(preview)
}
