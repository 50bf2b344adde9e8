//! Query parameters and headers, converted to the use cases' inputs. Query values arrive as
//! text, so a wrong type is reported with the parameter's name like any other mistake.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, header, request::Parts},
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{
    IntoParams,
    openapi::{
        KnownFormat, ObjectBuilder, RefOr, Required, Schema, SchemaFormat,
        path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle},
        schema::Type,
    },
};

use super::schemas::{self, Carrier};

use crate::{
    auth::Caller,
    domain::{
        JOB_ID_EXPECTED, JobId, JobStatus, JobType, MAX_PREVIEW, RunId, ScheduleInput,
        field::Errors, input::json::decode_value, parse_time,
    },
    jobs::{Error, IfMatch, JobFilter, PageRequest, if_match},
};

/// The caller the access guard let through: who handlers record as the actor.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller::of(&parts.extensions))
    }
}

/// The job a path names.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct JobPath {
    /// The job's id: 24 hex digits (a MongoDB ObjectId).
    #[param(pattern = r"^[0-9a-fA-F]{24}$", example = "65f1c0ffee0123456789abcd")]
    id: String,
}

impl JobPath {
    /// The job's id.
    pub(crate) fn parse(self) -> Result<JobId, Error> {
        Ok(JobId::parse(&self.id)?)
    }
}

/// The run of a job a path names.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path)]
pub(crate) struct RunPath {
    /// The job's id: 24 hex digits (a MongoDB ObjectId).
    #[param(pattern = r"^[0-9a-fA-F]{24}$", example = "65f1c0ffee0123456789abcd")]
    id: String,
    /// The run's id: a UUID in its hyphenated form, as the runs and run events give it.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        example = "0b5f6c1e-3f4a-5d2b-9c8e-7a6b5c4d3e2f"
    )]
    run_id: String,
}

impl RunPath {
    /// The job's id and the run's.
    pub(crate) fn parse(self) -> Result<(JobId, RunId), Error> {
        let mut errors = Errors::new();
        let job = errors.take(JobId::parse(&self.id));
        let run = errors.take(RunId::parse(&self.run_id));
        Ok(errors.finish(|| Some((job?, run?)))?)
    }
}

/// Listing filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Page number, 1 to 1000000000 (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000)]
    page: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    size: Option<String>,
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs of this type.
    #[param(value_type = Option<JobType>)]
    job_type: Option<String>,
    /// Only jobs whose name starts with this text.
    name: Option<String>,
    /// Only jobs the scheduler must look at by this time (RFC 3339): their next fire, or an
    /// open run's deadline, is at or before it.
    #[param(value_type = Option<String>, format = DateTime)]
    due_before: Option<String>,
}

impl ListParams {
    /// The filter and the page asked for.
    pub(crate) fn parse(self) -> Result<(JobFilter, PageRequest), Error> {
        let page = page_request(self.page.as_deref(), self.size.as_deref())?;
        let due_before = self
            .due_before
            .as_deref()
            .map(|text| parse_time(text).map_err(|why| Error::invalid("dueBefore", why)))
            .transpose()?;
        let filter = JobFilter {
            status: parse_name("status", self.status.as_deref())?,
            job_type: parse_name("jobType", self.job_type.as_deref())?,
            name_prefix: self.name,
            due_before,
        };
        Ok((filter, page))
    }
}

/// Paging of a job's runs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Page number, 1 to 1000000000 (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000)]
    page: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    size: Option<String>,
}

impl PageParams {
    /// The page asked for.
    pub(crate) fn parse(self) -> Result<PageRequest, Error> {
        page_request(self.page.as_deref(), self.size.as_deref())
    }
}

/// Filter of the event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct EventParams {
    /// Only events of this job (its 24-hex-digit id).
    #[param(pattern = r"^[0-9a-fA-F]{24}$")]
    job_id: Option<String>,
    /// Resume after this event: the `id` of the last event received (a place in the journal,
    /// from 0). The `Last-Event-ID` header, which an `EventSource` sends when it reconnects,
    /// takes precedence. Without either, the stream starts with the next event.
    #[param(pattern = r"^[0-9]{1,19}$")]
    since: Option<String>,
}

/// The header an `EventSource` sends when it reconnects (documented here; read by the handler).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct LastEventId {
    /// The `id` of the last event received: resume after it (takes precedence over `since`);
    /// empty is none.
    #[param(
        rename = "Last-Event-ID",
        required = false,
        pattern = r"^([0-9]{1,19})?$"
    )]
    _last_event_id: String,
}

impl EventParams {
    /// The one job whose events are asked for, if any, and the cursor to resume after: the
    /// `Last-Event-ID` header's, else `since`'s.
    pub(crate) fn parse(
        self,
        last_event_id: Option<&HeaderValue>,
    ) -> Result<(Option<JobId>, Option<u64>), Error> {
        let mut errors = Errors::new();
        // Named as the query names it, not as a path's `id`.
        let only = match self.job_id.as_deref().map(JobId::parse_text) {
            Some(None) => {
                errors.push("jobId", JOB_ID_EXPECTED);
                None
            }
            Some(found) => found,
            None => None,
        };
        let cursor = |field: &str, raw: Option<&str>, errors: &mut Errors| match raw {
            None => None,
            Some(raw) => {
                let digits = raw.bytes().all(|b| b.is_ascii_digit());
                let parsed = raw.parse::<u64>().ok().filter(|_| digits);
                if parsed.is_none() {
                    errors.push(field, CURSOR_EXPECTED);
                }
                parsed
            }
        };
        // Both are checked; the header, when it is there, wins. An empty Last-Event-ID is none
        // (what a client that has seen no event yet sends).
        let since = cursor("since", self.since.as_deref(), &mut errors);
        let header = last_event_id.filter(|h| !h.as_bytes().trim_ascii().is_empty());
        let since = match header {
            Some(header) => {
                let text = header.to_str().ok().or(Some("?"));
                cursor("Last-Event-ID", text, &mut errors)
            }
            None => since,
        };
        errors.finish(|| Some((only, since))).map_err(Error::from)
    }
}

/// What a cursor must be.
const CURSOR_EXPECTED: &str =
    "must be the id of an event received: a whole number from 0 to 18446744073709551615";

/// A schedule to preview: one of `cron` (with `timezone`), `intervalSeconds` (with `startAt`)
/// or `runAt`; `count` fire times (1 to 100, default 10) after `from` (default now). Its
/// parameters are documented by hand (below): the schedule's fields are one object, exactly
/// one of three shapes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PreviewParams {
    cron: Option<String>,
    timezone: Option<String>,
    interval_seconds: Option<String>,
    start_at: Option<String>,
    run_at: Option<String>,
    count: Option<String>,
    from: Option<String>,
}

impl IntoParams for PreviewParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let query = |name: &str, description: &str, schema: RefOr<Schema>| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .description(Some(description))
                .schema(Some(schema))
        };
        vec![
            // An object exploded into the query string: its fields are the parameters.
            query(
                "schedule",
                "The schedule, as in a job: `runAt`; or `cron` and `timezone`; or \
                 `intervalSeconds` and `startAt`.",
                schemas::schedule(Carrier::Query).into(),
            )
            .required(Required::True)
            .style(Some(ParameterStyle::Form))
            .explode(Some(true))
            .build(),
            query(
                "count",
                "How many fire times, 1 to 100 (default 10).",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(1))
                    .maximum(Some(MAX_PREVIEW))
                    .into(),
            )
            .build(),
            query(
                "from",
                &format!(
                    "RFC 3339: list fires after this time (default now). {}",
                    schemas::TIME_RANGE
                ),
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .into(),
            )
            .build(),
        ]
    }
}

impl PreviewParams {
    /// The schedule, the count and the start asked for.
    pub(crate) fn parse(self) -> Result<(ScheduleInput, Option<i64>, Option<String>), Error> {
        let Self {
            cron,
            timezone,
            interval_seconds,
            start_at,
            run_at,
            count,
            from,
        } = self;
        let schedule = ScheduleInput {
            run_at,
            cron,
            timezone,
            interval_seconds: parse_int("intervalSeconds", interval_seconds.as_deref())?,
            start_at,
        };
        Ok((schedule, parse_int("count", count.as_deref())?, from))
    }
}

/// The page asked for by the `page` and `size` query parameters.
fn page_request(page: Option<&str>, size: Option<&str>) -> Result<PageRequest, Error> {
    Ok(PageRequest::parse(
        parse_int("page", page)?,
        parse_int("size", size)?,
    )?)
}

fn parse_int(field: &str, raw: Option<&str>) -> Result<Option<i64>, Error> {
    raw.map(|v| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| Error::invalid(field, "must be an integer"))
    })
    .transpose()
}

/// Parses an enum from its query-string name (`SCHEDULED`, `email`).
fn parse_name<T: serde::de::DeserializeOwned>(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<T>, Error> {
    raw.map(|v| {
        decode_value::<T>(Value::String(v.trim().to_ascii_uppercase()))
            .map_err(|_| Error::invalid(field, format!("`{v}` is not a known value")))
    })
    .transpose()
}

/// The `Idempotency-Key` header, if sent.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| Error::invalid("Idempotency-Key", "must be visible ASCII"))
        })
        .transpose()
}

/// The version the `If-Match` header makes a change conditional on, if any.
pub(crate) fn version_precondition(headers: &HeaderMap) -> Result<Option<IfMatch>, Error> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(value) => if_match(
            value
                .to_str()
                .map_err(|_| Error::invalid("If-Match", "must be visible ASCII"))?,
        ),
    }
}
