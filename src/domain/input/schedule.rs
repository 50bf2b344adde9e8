//! A schedule as a client gives it, and its checks.

use serde::{Deserialize, Serialize};

use crate::domain::{
    field::{Errors, Invalid},
    schedule::{MAX_INTERVAL_SECONDS, Schedule, ScheduleFields, cron::CronSchedule},
    time::{format_time, parse_time},
};

/// When the job fires; exactly one of: `{"runAt"}` (once; a past time fires at once),
/// `{"cron", "timezone"?}` (5 fields, or 6 with seconds first; IANA zone, default UTC), or
/// `{"intervalSeconds", "startAt"?}` (every n seconds from `startAt`, default one interval
/// from now). Its OpenAPI schema, a `oneOf` of the three, is written by hand with the REST
/// document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleInput {
    /// RFC 3339 time of the one fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// A cron expression, evaluated on the wall clock of `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA zone of `cron`; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Seconds between fires: 1 to 31622400.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::json::optional_integer"
    )]
    pub interval_seconds: Option<i64>,
    /// RFC 3339 time of the first interval fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
}

impl ScheduleInput {
    /// The checked schedule, or the errors of its fields (`schedule.runAt`, ...).
    pub fn parse(&self) -> Result<Schedule, Invalid> {
        let kinds = [
            self.run_at.is_some(),
            self.cron.is_some(),
            self.interval_seconds.is_some(),
        ];
        match kinds.iter().filter(|given| **given).count() {
            1 => {}
            0 => {
                return Err(Invalid::field(
                    "schedule",
                    "needs one of runAt, cron or intervalSeconds",
                ));
            }
            _ => return Err(Self::more_than_one()),
        }
        let mut errors = Errors::new();
        if self.timezone.is_some() && self.cron.is_none() {
            errors.push("schedule.timezone", "is only for cron schedules");
        }
        if self.start_at.is_some() && self.interval_seconds.is_none() {
            errors.push("schedule.startAt", "is only for interval schedules");
        }
        let time = |field: &str, raw: &str| parse_time(raw).map_err(|m| Invalid::field(field, m));
        let schedule = if let Some(run_at) = &self.run_at {
            errors.take(time("schedule.runAt", run_at).map(Schedule::RunAt))
        } else if let Some(cron) = &self.cron {
            let zone = self.timezone.as_deref().unwrap_or("UTC");
            errors.take(CronSchedule::parse(cron, zone).map(|cron| Schedule::Cron(Box::new(cron))))
        } else {
            let start_at = self
                .start_at
                .as_deref()
                .map(|raw| errors.take(time("schedule.startAt", raw)));
            let seconds = self
                .interval_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| (1..=MAX_INTERVAL_SECONDS).contains(s));
            if seconds.is_none() {
                errors.push(
                    "schedule.intervalSeconds",
                    format!("must be between 1 and {MAX_INTERVAL_SECONDS}"),
                );
            }
            match (seconds, start_at) {
                (Some(seconds), None) => Some(Schedule::Interval {
                    seconds,
                    start_at: None,
                }),
                (Some(seconds), Some(Some(start_at))) => Some(Schedule::Interval {
                    seconds,
                    start_at: Some(start_at),
                }),
                _ => None,
            }
        };
        errors.finish(|| schedule)
    }

    /// The one schedule of a request that can give it in two places (gRPC's `schedule_time`,
    /// the older clients' one-shot time, beside its `schedule` message): at most one may be
    /// given, by the same rule as within one schedule.
    pub fn either(first: Option<Self>, second: Option<Self>) -> Result<Option<Self>, Invalid> {
        match (first, second) {
            (Some(_), Some(_)) => Err(Self::more_than_one()),
            (first, second) => Ok(first.or(second)),
        }
    }

    fn more_than_one() -> Invalid {
        Invalid::field(
            "schedule",
            "must have only one of runAt, cron or intervalSeconds",
        )
    }
}

impl From<&Schedule> for ScheduleInput {
    /// The schedule as a client would give it again.
    fn from(schedule: &Schedule) -> Self {
        let fields = ScheduleFields::from(schedule);
        Self {
            run_at: fields.run_at.map(format_time),
            cron: fields.cron,
            timezone: fields.timezone,
            interval_seconds: fields.interval_seconds.and_then(|s| i64::try_from(s).ok()),
            start_at: fields.start_at.map(format_time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(value: serde_json::Value) -> ScheduleInput {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn each_bad_schedule_names_its_fields() {
        let table = [
            (serde_json::json!({}), vec!["schedule"]),
            (
                serde_json::json!({"runAt": "2030-01-01T00:00:00Z", "cron": "* * * * *"}),
                vec!["schedule"],
            ),
            (serde_json::json!({"runAt": "soon"}), vec!["schedule.runAt"]),
            (
                serde_json::json!({"runAt": "soon", "timezone": "UTC"}),
                vec!["schedule.runAt", "schedule.timezone"],
            ),
            (
                serde_json::json!({"intervalSeconds": -5, "startAt": "soon"}),
                vec!["schedule.intervalSeconds", "schedule.startAt"],
            ),
            (
                serde_json::json!({"intervalSeconds": 40_000_000}),
                vec!["schedule.intervalSeconds"],
            ),
            (
                serde_json::json!({"cron": "0 9 * * *", "startAt": "2030-01-01T00:00:00Z"}),
                vec!["schedule.startAt"],
            ),
        ];
        let mut wrong = Vec::new();
        for (given, expected) in table {
            let fields: Vec<String> = match input(given.clone()).parse() {
                Ok(schedule) => vec![format!("accepted as {schedule:?}")],
                Err(Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            };
            if fields != expected {
                wrong.push(format!("{given}: {fields:?} instead of {expected:?}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn a_schedule_given_twice_is_refused_by_the_same_rule() {
        let at = ScheduleInput {
            run_at: Some("2030-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            ScheduleInput::either(Some(at.clone()), None),
            Ok(Some(at.clone()))
        );
        assert_eq!(ScheduleInput::either(None, None), Ok(None));
        assert_eq!(
            ScheduleInput::either(Some(at.clone()), Some(at)).unwrap_err(),
            ScheduleInput::more_than_one()
        );
    }

    #[test]
    fn a_schedule_reads_back_as_the_input_it_came_from() {
        for given in [
            serde_json::json!({"runAt": "2030-01-01T09:00:00.000Z"}),
            serde_json::json!({"cron": "0 9 * * MON", "timezone": "Europe/Berlin"}),
            serde_json::json!({"intervalSeconds": 60, "startAt": "2030-01-01T09:00:00.000Z"}),
        ] {
            let schedule = input(given.clone()).parse().unwrap();
            let again = serde_json::to_value(ScheduleInput::from(&schedule)).unwrap();
            assert_eq!(again, given);
        }
    }
}
