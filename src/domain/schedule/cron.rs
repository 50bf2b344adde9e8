//! Cron expressions in an IANA time zone, and the DST rules their fires follow.
//!
//! Expressions are parsed by `croner` (5 fields, or 6 with seconds first) and evaluated on the
//! zone's *local wall clock*; each local time is then turned into an instant with `chrono-tz`,
//! by the rules users are promised:
//! - a local time that does not exist (the clock jumps forward over it) fires once, at the first
//!   valid instant after it: the moment of the jump;
//! - a local time that occurs twice (the clock falls back) fires once, at its first occurrence;
//! - several local times that land on the same instant fire once.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

use crate::domain::field::Invalid;

/// Most local times looked at for one next fire; ends the search for expressions that
/// (almost) never match, such as 30 February.
const MAX_CANDIDATES: usize = 20_000;

/// The last local year a cron fires in. `croner` 3 refuses to search forward from year 5000
/// (`YEAR_UPPER_LIMIT`) but may still return a match early in 5000 when the search crosses into
/// it; stopping at 4999 makes the end of every cron schedule the same, whatever its expression:
/// no next fire, as after a one-shot's.
pub const LAST_CRON_YEAR: i32 = 4999;

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
    /// The contract's name: `NONE`, `SKIPPED` or `REPEATED`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Skipped => "SKIPPED",
            Self::Repeated => "REPEATED",
        }
    }
}

/// One computed fire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FireTime {
    /// The instant it fires.
    pub at: DateTime<Utc>,
    /// The local wall-clock time the expression asked for.
    pub local: NaiveDateTime,
    /// What daylight saving did to it.
    pub shift: DstShift,
}

impl FireTime {
    /// Whether the asked-for local time does not exist, so the fire moved past the jump.
    pub fn dst_shifted(&self) -> bool {
        self.shift == DstShift::Skipped
    }

    /// The local time the expression asked for, `2026-03-29T02:30:00`.
    pub fn requested_local_time(&self) -> String {
        self.local.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

impl CronSchedule {
    /// Parses a 5- or 6-field expression and an IANA zone name; errors name the field at fault
    /// (`schedule.cron`, `schedule.timezone`).
    pub fn parse(expression: &str, zone: &str) -> Result<Self, Invalid> {
        let expression = expression.split_whitespace().collect::<Vec<_>>().join(" ");
        let fields = expression.split(' ').filter(|f| !f.is_empty()).count();
        if !(5..=6).contains(&fields) {
            return Err(Invalid::field(
                "schedule.cron",
                format!(
                    "must have 5 fields (minute hour day month weekday) or 6 (seconds first); got {fields}"
                ),
            ));
        }
        let cron = compile(&expression).map_err(|e| {
            Invalid::field(
                "schedule.cron",
                format!("is not a valid cron expression: {e}"),
            )
        })?;
        let zone = Tz::from_str(zone).map_err(|_| {
            Invalid::field(
                "schedule.timezone",
                "must be an IANA time zone name, such as Europe/Berlin or UTC",
            )
        })?;
        let schedule = Self {
            expression,
            zone,
            cron,
        };
        // An expression that never matches (31 February) would leave the job with no fire.
        if schedule.next_after(Utc::now()).is_none() {
            return Err(Invalid::field(
                "schedule.cron",
                "never matches a date: check the day and month fields",
            ));
        }
        Ok(schedule)
    }

    /// A stored expression, parsed again without the checks a new one gets.
    pub fn load(expression: &str, zone: &str) -> Result<Self, String> {
        let cron = compile(expression).map_err(|e| e.to_string())?;
        let zone = Tz::from_str(zone).map_err(|e| e.to_string())?;
        Ok(Self {
            expression: expression.to_owned(),
            zone,
            cron,
        })
    }

    /// The expression, its fields separated by single spaces.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The zone whose wall clock the expression is evaluated on.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire strictly after `after`; `None` past [`LAST_CRON_YEAR`].
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
            if wanted.year() > LAST_CRON_YEAR {
                return None;
            }
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

/// The parser every expression goes through: seconds optional (first of six), no year field.
fn compile(expression: &str) -> Result<Cron, croner::errors::CronError> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn field_of(parsed: Result<CronSchedule, Invalid>) -> String {
        parsed.unwrap_err().0[0].field.clone()
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
            field_of(CronSchedule::parse("* * * *", "UTC")),
            "schedule.cron"
        );
        assert_eq!(
            field_of(CronSchedule::parse("0 0 * * * * 2030", "UTC")),
            "schedule.cron"
        );
        assert_eq!(
            field_of(CronSchedule::parse("61 * * * *", "UTC")),
            "schedule.cron"
        );
        assert_eq!(
            field_of(CronSchedule::parse("0 0 31 2 *", "UTC")),
            "schedule.cron"
        );
        assert_eq!(
            field_of(CronSchedule::parse("0 9 * * MON", "Mars/Olympus")),
            "schedule.timezone"
        );
    }

    #[test]
    fn a_cron_stops_with_its_last_fire_in_year_4999() {
        let cron = CronSchedule::parse("0 0 1 1 *", "Pacific/Kiritimati").unwrap();
        let last = cron.next_after(utc("4998-06-01T00:00:00Z")).unwrap();
        assert_eq!(last.local.to_string(), "4999-01-01 00:00:00");
        assert!(cron.next_after(last.at).is_none());
        assert!(cron.next_after(utc("6000-01-01T00:00:00Z")).is_none());
    }
}
