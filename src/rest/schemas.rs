//! Schemas of the OpenAPI document that a derive cannot state, each saying what the service
//! accepts and nothing it refuses:
//!
//! - a schedule is exactly one of three shapes: a `oneOf` of three closed objects, in a JSON
//!   body and in the query string of a preview alike;
//! - a new job's `jobData` depends on its `jobType`: a `oneOf` of an `EMAIL` and an `SMS` job;
//! - a change is a merge patch, whose fields are all optional and whose schedule merges;
//! - an event stream's message is a Server-Sent Event whose `data` is JSON.

use std::borrow::Cow;

use serde_json::json;
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        KnownFormat, ObjectBuilder, OneOfBuilder, Ref, RefOr, Schema, SchemaFormat,
        schema::{AdditionalProperties, Discriminator, SchemaType, Type},
    },
};

use crate::domain::{
    EventKind, JobInput, JobType, ScheduleInput, name_of, schedule::MAX_INTERVAL_SECONDS,
};

/// Where a schedule is given: a JSON body may send `null` for an optional field it leaves
/// out; a query string has no `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// A JSON body.
    Body,
    /// Query parameters (a preview).
    Query,
}

impl ToSchema for ScheduleInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ScheduleInput")
    }
}

impl PartialSchema for ScheduleInput {
    fn schema() -> RefOr<Schema> {
        schedule(Carrier::Body).into()
    }
}

/// A schedule: exactly one of a one-shot time, a cron expression, or an interval.
pub(crate) fn schedule(carrier: Carrier) -> Schema {
    let optional = |kind: Type| match carrier {
        Carrier::Body => SchemaType::from_iter([kind, Type::Null]),
        Carrier::Query => SchemaType::Type(kind),
    };
    let run_at = ObjectBuilder::new()
        .title(Some("One-shot"))
        .description(Some("Fires once; a past time fires at once."))
        .property(
            "runAt",
            time(Type::String.into(), "RFC 3339 time of the one fire."),
        )
        .required("runAt");
    let cron = ObjectBuilder::new()
        .title(Some("Cron"))
        .description(Some(
            "Fires at every match on the wall clock of `timezone`, daylight saving included.",
        ))
        .property(
            "cron",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::Custom("cron".into())))
                .description(Some(
                    "A cron expression: 5 fields (minute hour day month weekday), or 6 with \
                     seconds first; names (`MON`, `JAN`), `L`, `W` and `#` are understood. One \
                     that never matches a date (31 February) is refused.",
                ))
                .examples([json!("0 9 * * MON")]),
        )
        .required("cron")
        .property(
            "timezone",
            ObjectBuilder::new()
                .schema_type(optional(Type::String))
                .format(Some(SchemaFormat::Custom("iana-time-zone".into())))
                .description(Some("IANA time zone name of `cron`; default `UTC`."))
                .examples([json!("Europe/Berlin")]),
        );
    let interval = ObjectBuilder::new()
        .title(Some("Interval"))
        .description(Some(
            "Fires every `intervalSeconds` from `startAt` (default: one interval after the \
             schedule is set), in UTC, so daylight saving never moves it.",
        ))
        .property(
            "intervalSeconds",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .maximum(Some(MAX_INTERVAL_SECONDS))
                .description(Some("Seconds between fires."))
                .examples([json!(3600)]),
        )
        .required("intervalSeconds")
        .property(
            "startAt",
            time(optional(Type::String), "RFC 3339 time of the first fire."),
        );
    let closed = |kind: ObjectBuilder| {
        kind.additional_properties(Some(AdditionalProperties::FreeForm(false)))
    };
    OneOfBuilder::new()
        .description(Some(
            "When the job fires: exactly one of a one-shot time (`runAt`), a cron expression \
             (`cron`, `timezone`) or an interval (`intervalSeconds`, `startAt`).",
        ))
        .item(closed(run_at))
        .item(closed(cron))
        .item(closed(interval))
        .into()
}

/// A new job (`POST /api/v1/jobs`): its `jobData` depends on its `jobType`, so the body is one
/// of an `EMAIL` job and an `SMS` job, told apart by `jobType`.
pub(crate) enum NewJob {}

impl ToSchema for NewJob {}

impl PartialSchema for NewJob {
    fn schema() -> RefOr<Schema> {
        let mapping = [
            ("EMAIL", EmailJobInput::name()),
            ("SMS", SmsJobInput::name()),
        ]
        .map(|(tag, name)| (tag.to_owned(), format!("#/components/schemas/{name}")));
        OneOfBuilder::new()
            .description(Some("A new job; `jobType` says which of the shapes it is."))
            .item(Ref::from_schema_name(EmailJobInput::name()))
            .item(Ref::from_schema_name(SmsJobInput::name()))
            .discriminator(Some(Discriminator::with_mapping("jobType", mapping)))
            .into()
    }
}

/// An `EMAIL` job: `jobData` holds the addresses, the subject and the message.
pub(crate) enum EmailJobInput {}

impl ToSchema for EmailJobInput {}

impl PartialSchema for EmailJobInput {
    fn schema() -> RefOr<Schema> {
        job_of_type(
            JobType::Email,
            "An `EMAIL` job.",
            Ref::from_schema_name(EmailJobData::name()).into(),
        )
    }
}

/// An `SMS` job: `jobData` is any object.
pub(crate) enum SmsJobInput {}

impl ToSchema for SmsJobInput {}

impl PartialSchema for SmsJobInput {
    fn schema() -> RefOr<Schema> {
        job_of_type(
            JobType::Sms,
            "An `SMS` job.",
            job_data_object()
                .description(Some(job_data_description(
                    "What the executors of `SMS` jobs need",
                )))
                .into(),
        )
    }
}

/// What an `EMAIL` job's executors need; other members are kept as given.
pub(crate) enum EmailJobData {}

impl ToSchema for EmailJobData {}

impl PartialSchema for EmailJobData {
    fn schema() -> RefOr<Schema> {
        let text = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        let address = |description: &str| {
            text(description).format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        };
        job_data_object()
            .description(Some(job_data_description(
                "What the executors of `EMAIL` jobs need",
            )))
            .property("SourceAddress", address("The sender's address."))
            .required("SourceAddress")
            .property("DestinationAddress", address("The recipient's address."))
            .required("DestinationAddress")
            .property("Subject", text("The subject line."))
            .required("Subject")
            .property("Message", text("The body of the message."))
            .required("Message")
            .examples([json!({
                "SourceAddress": "reports@example.com",
                "DestinationAddress": "team@example.com",
                "Subject": "Weekly report",
                "Message": "The report is attached."
            })])
            .into()
    }
}

/// A change to a job (`PATCH /api/v1/jobs/{id}`): an RFC 7396 merge patch of its editable
/// fields. Every field is optional; `null` removes one, which the fields every job needs cannot
/// be; objects (`schedule`, `retry`, `jobData`) merge into the stored ones.
pub(crate) enum JobPatch {}

impl ToSchema for JobPatch {}

impl PartialSchema for JobPatch {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut patch)) = JobInput::schema() else {
            return JobInput::schema();
        };
        patch.title = Some("Job patch".to_owned());
        patch.description = Some(
            "An RFC 7396 merge patch of a job's editable fields: a field given replaces the \
             stored one, objects (`schedule`, `retry`, `jobData`) merge into the stored ones, \
             `null` removes a field (back to its default). The job after the change must be \
             valid as a whole: one kind of schedule (set the other kind's fields to `null` to \
             switch), and the data its type needs."
                .to_owned(),
        );
        patch.required.clear();
        let nullable = |kind: Type| SchemaType::from_iter([kind, Type::Null]);
        let schedule = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Merged into the stored schedule; `null` removes a field.",
            ))
            .property(
                "runAt",
                time(nullable(Type::String), "RFC 3339 time of a one-shot fire."),
            )
            .property(
                "cron",
                ObjectBuilder::new()
                    .schema_type(nullable(Type::String))
                    .format(Some(SchemaFormat::Custom("cron".into())))
                    .description(Some("A cron expression (see `ScheduleInput`).")),
            )
            .property(
                "timezone",
                ObjectBuilder::new()
                    .schema_type(nullable(Type::String))
                    .format(Some(SchemaFormat::Custom("iana-time-zone".into())))
                    .description(Some("IANA time zone name of `cron`.")),
            )
            .property(
                "intervalSeconds",
                ObjectBuilder::new()
                    .schema_type(nullable(Type::Integer))
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(1))
                    .maximum(Some(MAX_INTERVAL_SECONDS))
                    .description(Some("Seconds between fires.")),
            )
            .property(
                "startAt",
                time(
                    nullable(Type::String),
                    "RFC 3339 time of the first interval fire.",
                ),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        patch
            .properties
            .insert("schedule".to_owned(), schedule.into());
        patch.properties.insert(
            "jobData".to_owned(),
            job_data_object()
                .description(Some(
                    "Merged into the stored data; an `EMAIL` job's must keep its addresses, \
                     subject and message.",
                ))
                .into(),
        );
        Schema::Object(patch).into()
    }
}

/// A job of one type: the fields of `JobInput`, with `jobType` fixed and `jobData` as that
/// type needs it.
fn job_of_type(job_type: JobType, description: &str, data: RefOr<Schema>) -> RefOr<Schema> {
    let RefOr::T(Schema::Object(mut job)) = JobInput::schema() else {
        return JobInput::schema();
    };
    job.title = Some(description.trim_end_matches('.').to_owned());
    job.description = Some(description.to_owned());
    job.properties.insert(
        "jobType".to_owned(),
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([name_of(&job_type)]))
            .into(),
    );
    job.properties.insert("jobData".to_owned(), data);
    Schema::Object(job).into()
}

/// A job's data: an object whose members are [`JsonValue`]s.
fn job_data_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(
            Ref::from_schema_name(JsonValue::name()).into(),
        )))
}

/// Any JSON value a job's data may hold. An integer must lie in the signed 64-bit range, which
/// every store and wire of the service keeps exactly (a bigger one is refused: send it as a
/// string). The schema bounds every number so, though a double written with a fraction or an
/// exponent is accepted beyond it: JSON Schema cannot tell `1e30` from an integer.
pub(crate) enum JsonValue {}

impl ToSchema for JsonValue {}

impl PartialSchema for JsonValue {
    fn schema() -> RefOr<Schema> {
        let value = json!({"$ref": format!("#/components/schemas/{}", JsonValue::name())});
        serde_json::from_value(json!({
            "description": "A JSON value; an integer lies in the signed 64-bit range (send bigger ones as strings).",
            "anyOf": [
                {"type": ["null", "boolean", "string"]},
                {"type": "number", "minimum": i64::MIN, "maximum": i64::MAX},
                {"type": "array", "items": value},
                {"type": "object", "additionalProperties": value}
            ]
        }))
        .expect("the JSON value schema is a schema")
    }
}

fn job_data_description(what: &str) -> String {
    format!("{what}: a JSON object of at most 64 KiB.")
}

/// What every time a client sends must be (`domain::time::check_time`).
pub(crate) const TIME_RANGE: &str =
    "Years 0001 to 9999 once converted to UTC, seconds 0 to 59 (no leap seconds).";

/// A date-time string a client sends.
fn time(kind: SchemaType, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(kind)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .description(Some(format!("{description} {TIME_RANGE}")))
        .examples([json!("2030-01-01T09:00:00Z")])
}

/// One message of the event stream (`GET /api/v1/events`), as Server-Sent Events carry it.
pub(crate) enum EventMessage {}

impl ToSchema for EventMessage {}

impl PartialSchema for EventMessage {
    fn schema() -> RefOr<Schema> {
        let kinds = EventKind::ALL
            .iter()
            .map(|kind| kind.ce_type())
            .chain(["gap", "lagged"]);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A Server-Sent Event: `event` is the event's type, `data` its JSON (an \
                 `EventView`), `id` its place in the journal. A cursor older than the journal \
                 keeps gets a `gap` event first, whose `data` is `{\"after\": n, \
                 \"resumesAfter\": m, \"detail\": ...}`: read the state again. A client that \
                 fell too far behind gets a `lagged` event whose `data` is `{\"missed\": n}`, \
                 and should reconnect from its last event's id.",
            ))
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "The event's place in the journal, to resume after (`Last-Event-ID`); \
                         none on `lagged`.",
                    )),
            )
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(kinds)),
            )
            .required("event")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .description(Some(
                        "An `EventView`; on `gap` `{\"after\", \"resumesAfter\", \"detail\"}`; \
                         on `lagged` `{\"missed\": n}`.",
                    )),
            )
            .required("data")
            .into()
    }
}
