//! When jobs fire: one-shot times, cron expressions in an IANA time zone, fixed intervals.
//!
//! Cron expressions are parsed by `croner` (5 fields, or 6 with seconds first) and evaluated
//! on the zone's *local wall clock*; each local time is then turned into an instant with
//! `chrono-tz`, by the rules users are promised:
//! - a local time that does not exist (the clock jumps forward over it) fires once, at the first
//!   valid instant after it: the moment of the jump;
//! - a local time that occurs twice (the clock falls back) fires once, at its first occurrence;
//! - several local times that land on the same instant fire once.
//!
//! Interval schedules count whole intervals from their start, in UTC, so DST never moves them.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

use serde::{Deserialize, Serialize};

use crate::domain::{format_time, truncate};

/// Longest interval: one year of seconds.
pub const MAX_INTERVAL_SECONDS: u64 = 366 * 24 * 3600;
/// Most local times looked at for one next fire; ends the search for expressions that
/// (almost) never match, such as 30 February.
const MAX_CANDIDATES: usize = 20_000;

/// A parsed cron expression in its time zone.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    zone: Tz,
    cron: Cron,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?} in {})", self.expression, self.zone)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.zone == other.zone
    }
}

/// How a fire time relates to daylight-saving changes of its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstShift {
    /// The local time exists once: no shift.
    None,
    /// The local time does not exist; the fire moved to the first valid instant after it.
    Skipped,
    /// The local time occurs twice; the fire is at its first occurrence only.
    Repeated,
}

impl DstShift {
    /// The contract's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Skipped => "SKIPPED",
            Self::Repeated => "REPEATED",
        }
    }
}

/// Most fire times one preview lists.
pub const MAX_PREVIEW: usize = 100;

/// The next fire times of a schedule, for users to check it before they use it.
#[derive(Debug, Clone)]
pub struct Preview {
    pub schedule: Schedule,
    pub times: Vec<FireTime>,
}

impl Preview {
    /// Up to `count` fires of `schedule` after `from`.
    pub fn new(schedule: Schedule, from: DateTime<Utc>, count: usize) -> Self {
        let schedule = schedule.anchored(from);
        let mut times = Vec::with_capacity(count);
        let mut after = from - Duration::milliseconds(1);
        if let Schedule::RunAt(at) = schedule {
            times.push(FireTime {
                at,
                local: at.naive_utc(),
                shift: DstShift::None,
            });
        }
        while times.len() < count {
            let Some(fire) = schedule.next_fire_after(after) else {
                break;
            };
            after = fire.at;
            times.push(fire);
        }
        Self { schedule, times }
    }

    /// An instant on the schedule's wall clock, RFC 3339 with its offset.
    pub fn local_time(&self, at: DateTime<Utc>) -> String {
        match &self.schedule {
            Schedule::Cron(cron) => at
                .with_timezone(&cron.zone)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            _ => at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// One computed fire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FireTime {
    pub at: DateTime<Utc>,
    /// The local wall-clock time the expression asked for.
    pub local: NaiveDateTime,
    pub shift: DstShift,
}

impl CronSchedule {
    /// Parses a 5- or 6-field expression and an IANA zone name; errors name the field at fault.
    pub fn parse(expression: &str, zone: &str) -> Result<Self, (&'static str, String)> {
        let expression = expression.split_whitespace().collect::<Vec<_>>().join(" ");
        let fields = expression.split(' ').filter(|f| !f.is_empty()).count();
        if !(5..=6).contains(&fields) {
            return Err((
                "schedule.cron",
                format!(
                    "must have 5 fields (minute hour day month weekday) or 6 (seconds first); got {fields}"
                ),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&expression)
            .map_err(|e| {
                (
                    "schedule.cron",
                    format!("is not a valid cron expression: {e}"),
                )
            })?;
        let zone = Tz::from_str(zone).map_err(|_| {
            (
                "schedule.timezone",
                "must be an IANA time zone name, such as Europe/Berlin or UTC".to_owned(),
            )
        })?;
        let schedule = Self {
            expression,
            zone,
            cron,
        };
        // An expression that never matches (31 February) would leave the job with no fire.
        if schedule.next_after(Utc::now()).is_none() {
            return Err((
                "schedule.cron",
                "never matches a date: check the day and month fields".to_owned(),
            ));
        }
        Ok(schedule)
    }

    /// A stored expression, parsed again without the checks a new one gets.
    fn load(expression: &str, zone: &str) -> Result<Self, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| e.to_string())?;
        let zone = Tz::from_str(zone).map_err(|e| e.to_string())?;
        Ok(Self {
            expression: expression.to_owned(),
            zone,
            cron,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<FireTime> {
        // Start from the earliest local reading `after` could have near a transition, so a
        // local time repeated after a fall-back is still seen as already past.
        let local = after.with_timezone(&self.zone).naive_local();
        // Whole seconds: cron times are, and croner keeps the fraction of its start.
        let start = (local - Duration::hours(3))
            .with_nanosecond(0)
            .unwrap_or(local);
        let mut cursor = Utc.from_utc_datetime(&start);
        for _ in 0..MAX_CANDIDATES {
            let next = self.cron.find_next_occurrence(&cursor, false).ok()?;
            cursor = next;
            let wanted = next.naive_utc();
            let fire = self.resolve(wanted);
            if fire.at > after {
                return Some(fire);
            }
        }
        None
    }

    /// The instant of a local wall-clock time, by the DST rules above.
    fn resolve(&self, local: NaiveDateTime) -> FireTime {
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(t) => FireTime {
                at: t.with_timezone(&Utc),
                local,
                shift: DstShift::None,
            },
            LocalResult::Ambiguous(first, _) => FireTime {
                at: first.with_timezone(&Utc),
                local,
                shift: DstShift::Repeated,
            },
            LocalResult::None => {
                // Walk forward to the first minute that exists: gaps start and end on whole
                // minutes in every zone, so that minute is the jump itself.
                let mut probe = local
                    .with_second(0)
                    .and_then(|t| t.with_nanosecond(0))
                    .unwrap_or(local);
                for _ in 0..(24 * 60) {
                    probe += Duration::minutes(1);
                    if let Some(t) = self.zone.from_local_datetime(&probe).earliest() {
                        return FireTime {
                            at: t.with_timezone(&Utc),
                            local,
                            shift: DstShift::Skipped,
                        };
                    }
                }
                FireTime {
                    at: Utc.from_utc_datetime(&local),
                    local,
                    shift: DstShift::Skipped,
                }
            }
        }
    }
}

/// When a job fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Once at this time; a past time fires at once.
    RunAt(DateTime<Utc>),
    /// At every match of a cron expression in a time zone.
    Cron(Box<CronSchedule>),
    /// Every `seconds`, counted from `start_at` (or from when the schedule was set).
    Interval {
        seconds: u64,
        start_at: Option<DateTime<Utc>>,
    },
}

/// The stored and wire shape of a schedule: the fields of its kind only.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
}

impl From<&Schedule> for ScheduleFields {
    fn from(schedule: &Schedule) -> Self {
        match schedule {
            Schedule::RunAt(at) => Self {
                run_at: Some(*at),
                ..Self::default()
            },
            Schedule::Cron(cron) => Self {
                cron: Some(cron.expression.clone()),
                timezone: Some(cron.zone.name().to_owned()),
                ..Self::default()
            },
            Schedule::Interval { seconds, start_at } => Self {
                interval_seconds: Some(*seconds),
                start_at: *start_at,
                ..Self::default()
            },
        }
    }
}

impl TryFrom<ScheduleFields> for Schedule {
    type Error = String;

    fn try_from(fields: ScheduleFields) -> Result<Self, String> {
        if let Some(at) = fields.run_at {
            Ok(Self::RunAt(at))
        } else if let Some(cron) = fields.cron {
            CronSchedule::load(&cron, fields.timezone.as_deref().unwrap_or("UTC"))
                .map(|cron| Self::Cron(Box::new(cron)))
        } else if let Some(seconds) = fields.interval_seconds.filter(|s| *s > 0) {
            Ok(Self::Interval {
                seconds,
                start_at: fields.start_at,
            })
        } else {
            Err("a stored schedule has none of runAt, cron, intervalSeconds".into())
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ScheduleFields::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = ScheduleFields::deserialize(deserializer)?;
        Self::try_from(fields).map_err(serde::de::Error::custom)
    }
}

impl Schedule {
    /// The schedule in its REST shape.
    pub fn document(&self) -> serde_json::Value {
        let fields = ScheduleFields::from(self);
        let mut doc = serde_json::Map::new();
        if let Some(at) = fields.run_at {
            doc.insert("runAt".into(), format_time(at).into());
        }
        if let Some(cron) = fields.cron {
            doc.insert("cron".into(), cron.into());
        }
        if let Some(zone) = fields.timezone {
            doc.insert("timezone".into(), zone.into());
        }
        if let Some(seconds) = fields.interval_seconds {
            doc.insert("intervalSeconds".into(), seconds.into());
        }
        if let Some(start) = fields.start_at {
            doc.insert("startAt".into(), format_time(start).into());
        }
        serde_json::Value::Object(doc)
    }

    /// The schedule as stored for a job set at `now`: an interval without a start counts from
    /// one interval after now, so its fires stay on one grid across restarts.
    pub fn anchored(self, now: DateTime<Utc>) -> Self {
        match self {
            Self::Interval {
                seconds,
                start_at: None,
            } => Self::Interval {
                seconds,
                start_at: Some(truncate(now) + secs(seconds)),
            },
            other => other,
        }
    }

    /// A schedule that fires more than once.
    pub fn is_recurring(&self) -> bool {
        !matches!(self, Self::RunAt(_))
    }

    /// The first fire of a schedule set at `now`: the one-shot time itself (even if past), the
    /// first cron match after now, or the first interval boundary at or after now (one
    /// interval after now when no start is given).
    pub fn first_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::RunAt(at) => Some(*at),
            Self::Cron(cron) => cron.next_after(now).map(|f| f.at),
            Self::Interval { seconds, start_at } => {
                let start = start_at.unwrap_or_else(|| truncate(now) + secs(*seconds));
                if start >= now {
                    Some(start)
                } else {
                    self.next_after(now - Duration::milliseconds(1))
                }
            }
        }
    }

    /// The first fire strictly after `after`; none for a one-shot.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_fire_after(after).map(|f| f.at)
    }

    /// The first fire strictly after `after`, with its DST detail.
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<FireTime> {
        match self {
            Self::RunAt(_) => None,
            Self::Cron(cron) => cron.next_after(after),
            Self::Interval { seconds, start_at } => {
                let step = (*seconds as i64) * 1000;
                let start = start_at.unwrap_or(after).timestamp_millis();
                let after_ms = after.timestamp_millis();
                let at = if after_ms < start {
                    start
                } else {
                    start + ((after_ms - start) / step + 1) * step
                };
                let at = DateTime::from_timestamp_millis(at)?;
                Some(FireTime {
                    at,
                    local: at.naive_utc(),
                    shift: DstShift::None,
                })
            }
        }
    }
}

fn secs(seconds: u64) -> Duration {
    Duration::seconds(seconds as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(cron: &CronSchedule, from: &str, n: usize) -> Vec<(String, DstShift)> {
        let mut at = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            let fire = cron.next_after(at).unwrap();
            out.push((
                fire.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                fire.shift,
            ));
            at = fire.at;
        }
        out
    }

    #[test]
    fn a_local_time_skipped_by_spring_forward_fires_once_at_the_jump() {
        // Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let cron = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let got = fires(&cron, "2026-03-27T12:00:00Z", 3);
        assert_eq!(
            got,
            vec![
                ("2026-03-28T01:30:00Z".into(), DstShift::None),
                ("2026-03-29T01:00:00Z".into(), DstShift::Skipped),
                ("2026-03-30T00:30:00Z".into(), DstShift::None),
            ]
        );
    }

    #[test]
    fn every_quarter_hour_in_the_gap_collapses_into_one_fire() {
        let cron = CronSchedule::parse("*/15 * * * *", "Europe/Berlin").unwrap();
        let got = fires(&cron, "2026-03-29T00:40:00Z", 4);
        assert_eq!(
            got,
            vec![
                ("2026-03-29T00:45:00Z".into(), DstShift::None),
                // 02:00, 02:15, 02:30, 02:45 do not exist: one fire at 03:00 CEST.
                ("2026-03-29T01:00:00Z".into(), DstShift::Skipped),
                ("2026-03-29T01:15:00Z".into(), DstShift::None),
                ("2026-03-29T01:30:00Z".into(), DstShift::None),
            ]
        );
    }

    #[test]
    fn a_local_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() {
        // Berlin, 25 October 2026: 03:00 CEST falls back to 02:00 CET (01:00 UTC).
        let cron = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let got = fires(&cron, "2026-10-24T12:00:00Z", 2);
        assert_eq!(
            got,
            vec![
                ("2026-10-25T00:30:00Z".into(), DstShift::Repeated),
                ("2026-10-26T01:30:00Z".into(), DstShift::None),
            ]
        );
        // Asked from inside the repeated hour, the second 02:30 is not a new fire.
        let after = cron.next_after(utc("2026-10-25T01:10:00Z")).unwrap();
        assert_eq!(after.at, utc("2026-10-26T01:30:00Z"));
    }

    #[test]
    fn six_fields_put_seconds_first_and_zones_default_nowhere() {
        let cron = CronSchedule::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            cron.next_after(utc("2030-01-01T00:00:01Z")).unwrap().at,
            utc("2030-01-01T00:00:10Z")
        );
        assert_eq!(
            CronSchedule::parse("* * * *", "UTC").unwrap_err().0,
            "schedule.cron"
        );
        assert_eq!(
            CronSchedule::parse("0 0 * * * * 2030", "UTC")
                .unwrap_err()
                .0,
            "schedule.cron"
        );
        assert_eq!(
            CronSchedule::parse("61 * * * *", "UTC").unwrap_err().0,
            "schedule.cron"
        );
        assert_eq!(
            CronSchedule::parse("0 0 31 2 *", "UTC").unwrap_err().0,
            "schedule.cron"
        );
        assert_eq!(
            CronSchedule::parse("0 9 * * MON", "Mars/Olympus")
                .unwrap_err()
                .0,
            "schedule.timezone"
        );
    }

    #[test]
    fn intervals_count_whole_steps_from_their_start() {
        let start = utc("2030-01-01T00:00:00Z");
        let every = Schedule::Interval {
            seconds: 60,
            start_at: Some(start),
        };
        assert_eq!(every.first_due(utc("2029-12-31T00:00:00Z")), Some(start));
        assert_eq!(
            every.first_due(utc("2030-01-01T00:01:30Z")),
            Some(utc("2030-01-01T00:02:00Z"))
        );
        assert_eq!(
            every.next_after(utc("2030-01-01T00:02:00Z")),
            Some(utc("2030-01-01T00:03:00Z"))
        );
        let unanchored = Schedule::Interval {
            seconds: 5,
            start_at: None,
        };
        let now = utc("2030-01-01T00:00:00Z");
        assert_eq!(unanchored.first_due(now), Some(utc("2030-01-01T00:00:05Z")));
    }
}
