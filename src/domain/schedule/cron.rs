//! Cron expressions in an IANA time zone, and the DST rules their fires follow.
//!
//! Expressions are parsed by `croner` (5 fields, or 6 with seconds first) and evaluated on the
//! zone's *local wall clock*; each local time is then turned into an instant with `chrono-tz`,
//! by the rules users are promised:
//! - a local time that does not exist (the clock jumps forward over it) fires once, at the first
//!   valid instant after it: the moment of the jump;
//! - a local time that occurs twice (the clock falls back) fires once, at its first occurrence;
//! - several local times that land on the same instant fire once.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

use crate::domain::field::Invalid;

/// Most candidates looked at for one next fire. By the reasoning in `next_after` the first is
/// always the answer; the bound only keeps a mistake in that reasoning from looping.
const MAX_CANDIDATES: usize = 4;

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
    cron: Arc<Cron>,
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
    ///
    /// One croner search from the right local start, then the DST rules on the one local time
    /// it finds: the instant of a matching local time never decreases as the local time grows
    /// (a skipped time moves to the jump, a repeated one to its first occurrence), so the
    /// first match at or after [`Self::local_start`] is the answer. Costs microseconds for any
    /// expression that matches at least once a year or so.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<FireTime> {
        let (start, mut inclusive) = self.local_start(after);
        // croner reads a `DateTime<Utc>` as a plain wall clock: no DST of its own.
        let mut cursor = Utc.from_utc_datetime(&start);
        // The first candidate is the answer; the loop only guards that reasoning.
        for _ in 0..MAX_CANDIDATES {
            let next = self.cron.find_next_occurrence(&cursor, inclusive).ok()?;
            let wanted = next.naive_utc();
            if wanted.year() > LAST_CRON_YEAR {
                return None;
            }
            let fire = self.resolve(wanted);
            if fire.at > after {
                return Some(fire);
            }
            cursor = next;
            inclusive = false;
        }
        None
    }

    /// Where on the wall clock the fires after `after` begin, and whether that local time
    /// itself may fire: every local time after `after`'s own reading, except while the clock
    /// reads a repeated hour the second time, when the repeated local times have fired already
    /// (at their first occurrence) and fires begin where the repetition ends.
    fn local_start(&self, after: DateTime<Utc>) -> (NaiveDateTime, bool) {
        let here = after.with_timezone(&self.zone);
        let local = here.naive_local();
        if let LocalResult::Ambiguous(first, _) = self.zone.from_local_datetime(&local)
            && first.offset().fix() != here.offset().fix()
        {
            return (self.repetition_end(first.with_timezone(&Utc), after), true);
        }
        // Whole seconds: cron times are, and croner keeps the fraction of its start.
        (local.with_nanosecond(0).unwrap_or(local), false)
    }

    /// The local time at which a repeated stretch of the wall clock ends, given the instants
    /// of one local time's first and second occurrence: the transition between them is found
    /// by halving (offsets change on whole seconds), and read on the clock before it.
    fn repetition_end(&self, first: DateTime<Utc>, second: DateTime<Utc>) -> NaiveDateTime {
        let offset_at = |s: i64| {
            DateTime::from_timestamp(s, 0).map(|t| t.with_timezone(&self.zone).offset().fix())
        };
        let later = offset_at(second.timestamp());
        let (mut before, mut at) = (first.timestamp(), second.timestamp());
        while at - before > 1 {
            let mid = before + (at - before) / 2;
            if offset_at(mid) == later {
                at = mid;
            } else {
                before = mid;
            }
        }
        let last_before = DateTime::from_timestamp(at - 1, 0).unwrap_or(first);
        last_before.with_timezone(&self.zone).naive_local() + Duration::seconds(1)
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

/// Distinct expressions kept compiled; past this many the cache starts again empty.
const COMPILED_CACHE: usize = 4096;

/// The compiled `expression`: from the cache of those compiled before, else through the parser
/// every expression goes through (seconds optional, first of six; no year field). A stored job
/// is read, and its expression loaded, on every claim and every call; compiling a per-second
/// expression costs more than the fire it is loaded for, and few jobs have distinct ones.
fn compile(expression: &str) -> Result<Arc<Cron>, croner::errors::CronError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Cron>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    // The map is consistent after every step, so a panic elsewhere does not spoil it.
    if let Some(cron) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(expression)
    {
        return Ok(cron.clone());
    }
    let cron = Arc::new(
        CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)?,
    );
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= COMPILED_CACHE {
        cache.clear();
    }
    cache.insert(expression.to_owned(), cron.clone());
    Ok(cron)
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

    /// The former search, kept as the reference: rewind three hours (more than any offset
    /// change) and walk every match until one resolves after `after`.
    fn brute_next_after(cron: &CronSchedule, after: DateTime<Utc>) -> Option<FireTime> {
        let local = after.with_timezone(&cron.zone).naive_local();
        let start = (local - Duration::hours(3)).with_nanosecond(0).unwrap();
        let mut cursor = Utc.from_utc_datetime(&start);
        for _ in 0..20_000 {
            let next = cron.cron.find_next_occurrence(&cursor, false).ok()?;
            cursor = next;
            let fire = cron.resolve(next.naive_utc());
            if fire.at > after {
                return Some(fire);
            }
        }
        None
    }

    #[test]
    fn the_direct_search_finds_what_walking_every_match_finds_around_dst_changes() {
        let crons = [
            "*/7 * * * * *",
            "30 * * * * *",
            "0-59 0-59 0-23 1-31 1-12 0-6",
            "*/15 * * * *",
            "0,30 * * * *",
            "45 * * * *",
            "30 2 * * *",
            "0 2 * * *",
            "15 1 * * *",
            "59 1 * * *",
            "0 3 * * *",
            "30 1,2 * * *",
            "0 0 * * *",
            "10 2 * * SUN",
            "0 9 1 * *",
        ];
        // Each zone with instants around its spring-forward and fall-back changes.
        let zones = [
            (
                "Europe/Berlin",
                ["2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z"],
            ),
            (
                "America/New_York",
                ["2026-03-08T07:00:00Z", "2026-11-01T06:00:00Z"],
            ),
            // A 30-minute change: 02:00 to 02:30 in October, 02:00 back to 01:30 in April.
            (
                "Australia/Lord_Howe",
                ["2026-10-03T15:30:00Z", "2026-04-04T15:00:00Z"],
            ),
            ("UTC", ["2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z"]),
        ];
        // Offsets from each change, in seconds: hours before, inside, the edges, after.
        let offsets: [i64; 15] = [
            -3 * 3600 - 1,
            -3601,
            -61,
            -1,
            0,
            1,
            60,
            899,
            1799,
            2699,
            3599,
            3601,
            5399,
            7201,
            26 * 3600,
        ];
        let mut compared = 0;
        for (zone, changes) in zones {
            for expression in crons {
                let cron = CronSchedule::parse(expression, zone).unwrap();
                for change in changes {
                    for offset in &offsets {
                        for millis in [0, 500] {
                            let after = utc(change)
                                + Duration::seconds(*offset)
                                + Duration::milliseconds(millis);
                            assert_eq!(
                                cron.next_after(after),
                                brute_next_after(&cron, after),
                                "{expression} in {zone} after {after}"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert!(compared > 3_000);
    }

    #[test]
    fn chains_of_fires_through_a_change_match_the_walk_one_by_one() {
        for (zone, from) in [
            ("Europe/Berlin", "2026-10-24T23:00:00Z"),
            ("Europe/Berlin", "2026-03-28T23:00:00Z"),
            ("America/New_York", "2026-11-01T04:00:00Z"),
            ("Australia/Lord_Howe", "2026-04-04T13:00:00Z"),
            ("Australia/Lord_Howe", "2026-10-03T13:00:00Z"),
        ] {
            for expression in ["*/10 * * * * *", "*/5 * * * *", "30 * * * *"] {
                let cron = CronSchedule::parse(expression, zone).unwrap();
                let (mut fast, mut slow) = (utc(from), utc(from));
                for _ in 0..500 {
                    let (a, b) = (cron.next_after(fast), brute_next_after(&cron, slow));
                    assert_eq!(a, b, "{expression} in {zone} after {fast}");
                    (fast, slow) = (a.unwrap().at, b.unwrap().at);
                }
            }
        }
    }

    #[test]
    fn a_half_hour_change_collapses_and_repeats_by_the_same_rules() {
        // Lord Howe, 4 October 2026: 02:00 jumps to 02:30 (15:30 UTC the day before).
        let cron = CronSchedule::parse("*/15 * * * *", "Australia/Lord_Howe").unwrap();
        let got = fires(&cron, "2026-10-03T15:10:00Z", 3);
        assert_eq!(
            got,
            vec![
                ("2026-10-03T15:15:00Z".into(), DstShift::None),
                ("2026-10-03T15:30:00Z".into(), DstShift::Skipped),
                ("2026-10-03T15:45:00Z".into(), DstShift::None),
            ]
        );
        // 5 April 2026: 02:00 falls back to 01:30 (15:00 UTC the day before); 01:45 fires
        // once, and the clock's second pass through 01:30-02:00 fires nothing.
        let got = fires(&cron, "2026-04-04T14:40:00Z", 3);
        assert_eq!(
            got,
            vec![
                ("2026-04-04T14:45:00Z".into(), DstShift::Repeated),
                ("2026-04-04T15:30:00Z".into(), DstShift::None),
                ("2026-04-04T15:45:00Z".into(), DstShift::None),
            ]
        );
        let inside = cron.next_after(utc("2026-04-04T15:05:00Z")).unwrap();
        assert_eq!(inside.at, utc("2026-04-04T15:30:00Z"));
    }
}
