//! When jobs fire: one-shot times, cron expressions in an IANA time zone ([`cron`], with its
//! DST rules), fixed intervals; and previews of the next fires ([`preview`]).
//!
//! Interval schedules count whole intervals from their start, in UTC, so DST never moves them.

pub mod cron;
pub mod preview;

use chrono::{DateTime, Duration, Utc};

use self::cron::{CronSchedule, DstShift, FireTime};
use crate::domain::time::{in_range, truncate};

/// Longest interval: one year of seconds.
pub const MAX_INTERVAL_SECONDS: u64 = 366 * 24 * 3600;

/// When a job fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Once at this time; a past time fires at once.
    RunAt(DateTime<Utc>),
    /// At every match of a cron expression in a time zone.
    Cron(Box<CronSchedule>),
    /// Every `seconds`, counted from `start_at` (or from when the schedule was set).
    Interval {
        /// Seconds between fires: 1 to [`MAX_INTERVAL_SECONDS`].
        seconds: u64,
        /// The first fire; `None` only before the schedule is anchored to its creation.
        start_at: Option<DateTime<Utc>>,
    },
}

/// A schedule taken apart: the fields of its kind only. What the views and the stores show of
/// it, and what a stored schedule is loaded from.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScheduleFields {
    /// The one fire of a one-shot.
    pub run_at: Option<DateTime<Utc>>,
    /// A cron expression.
    pub cron: Option<String>,
    /// The IANA zone of `cron`.
    pub timezone: Option<String>,
    /// Seconds between interval fires.
    pub interval_seconds: Option<u64>,
    /// The first interval fire.
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
                cron: Some(cron.expression().to_owned()),
                timezone: Some(cron.zone().name().to_owned()),
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

    /// A stored schedule, loaded without the checks a new one gets.
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

impl Schedule {
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
                // The last fire is the last one the wires can carry (year 9999).
                let at = DateTime::from_timestamp_millis(at).filter(|t| in_range(*t))?;
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

    #[test]
    fn an_interval_stops_with_its_last_fire_in_year_9999() {
        let every = Schedule::Interval {
            seconds: 3600,
            start_at: Some(utc("2030-01-01T00:00:00Z")),
        };
        let last = utc("9999-12-31T23:00:00Z");
        assert_eq!(every.next_after(utc("9999-12-31T22:30:00Z")), Some(last));
        assert_eq!(every.next_after(last), None);
    }
}
