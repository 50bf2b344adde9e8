//! Times as the service keeps them: UTC, at millisecond precision (the precision every store
//! keeps), written as RFC 3339.

use chrono::{DateTime, SubsecRound, Utc};

/// What a time that is not RFC 3339 is told.
pub const RFC3339_EXPECTED: &str = "must be an RFC 3339 time, such as 2030-01-01T09:00:00Z";

/// Parses an RFC 3339 time, to millisecond precision.
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| truncate(t.with_timezone(&Utc)))
        .map_err(|_| RFC3339_EXPECTED.to_owned())
}

/// Formats a time as RFC 3339 in UTC with milliseconds.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Drops sub-millisecond precision.
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_kept_in_utc_milliseconds() {
        let t = parse_time("2030-01-01T09:00:00.123456+02:00").unwrap();
        assert_eq!(format_time(t), "2030-01-01T07:00:00.123Z");
        assert_eq!(parse_time("tomorrow").unwrap_err(), RFC3339_EXPECTED);
    }
}
