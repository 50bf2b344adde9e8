//! Times as the service keeps them: UTC, at millisecond precision (the precision every store
//! keeps), written as RFC 3339, and within the range both wires can carry.
//!
//! RFC 3339 writes four-digit years and protobuf's `Timestamp` spans 0001-01-01T00:00:00Z to
//! 9999-12-31T23:59:59.999999999Z, so a time is accepted only when, converted to UTC, it lies
//! in years 0001 to 9999, with seconds 0 to 59 (no leap seconds: chrono would read `:60` at any
//! minute as a fraction of 1e9 nanoseconds or more, which no wire can carry). Every time that
//! comes in, as text ([`parse_time`]) or as a protobuf timestamp ([`from_timestamp`]), passes
//! through [`check_time`], so the rule is stated once.

use chrono::{DateTime, Datelike, SubsecRound, Timelike, Utc};

/// What a time that is not RFC 3339 is told.
pub const RFC3339_EXPECTED: &str = "must be an RFC 3339 time, such as 2030-01-01T09:00:00Z";

/// What a time outside years 0001 to 9999 (in UTC) is told.
pub const RANGE_EXPECTED: &str =
    "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z once converted to UTC";

/// What a leap second (`:60`) is told.
pub const LEAP_SECOND_REFUSED: &str = "must have seconds 0 to 59 (leap seconds are not accepted)";

/// What a protobuf timestamp with `nanos` outside 0 to 999999999 is told.
pub const NANOS_EXPECTED: &str = "must have nanos between 0 and 999999999";

/// The first year a time may have, in UTC.
pub const FIRST_YEAR: i32 = 1;

/// The last year a time may have, in UTC.
pub const LAST_YEAR: i32 = 9999;

/// Parses an RFC 3339 time, to millisecond precision, within [`check_time`]'s range.
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(raw).map_err(|_| RFC3339_EXPECTED.to_owned())?;
    check_time(t.with_timezone(&Utc))
}

/// A protobuf timestamp (`seconds`, `nanos` since the epoch), to millisecond precision, within
/// [`check_time`]'s range; `nanos` must be 0 to 999999999, as protobuf defines it.
pub fn from_timestamp(seconds: i64, nanos: i32) -> Result<DateTime<Utc>, String> {
    let nanos = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| NANOS_EXPECTED.to_owned())?;
    let t = DateTime::from_timestamp(seconds, nanos).ok_or_else(|| RANGE_EXPECTED.to_owned())?;
    check_time(t)
}

/// The time truncated to milliseconds, if it is one the service accepts: years 0001 to 9999
/// in UTC, no leap second.
pub fn check_time(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if !(FIRST_YEAR..=LAST_YEAR).contains(&t.year()) {
        return Err(RANGE_EXPECTED.to_owned());
    }
    if t.nanosecond() >= 1_000_000_000 {
        return Err(LEAP_SECOND_REFUSED.to_owned());
    }
    Ok(truncate(t))
}

/// Whether a computed time (a schedule's next fire) is one the wires can carry.
pub fn in_range(t: DateTime<Utc>) -> bool {
    check_time(t).is_ok()
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

    #[test]
    fn only_times_of_years_1_to_9999_in_utc_without_leap_seconds_are_accepted() {
        let table = [
            ("9999-12-31T23:59:59.999-23:59", Err(RANGE_EXPECTED)),
            ("0000-01-01T00:00:00+23:59", Err(RANGE_EXPECTED)),
            ("0000-01-01T00:00:00Z", Err(RANGE_EXPECTED)),
            ("2030-01-01T00:07:60.5Z", Err(LEAP_SECOND_REFUSED)),
            ("2030-06-30T23:59:60Z", Err(LEAP_SECOND_REFUSED)),
            ("9999-12-31T23:59:59.999Z", Ok("9999-12-31T23:59:59.999Z")),
            ("0001-01-01T00:00:00Z", Ok("0001-01-01T00:00:00.000Z")),
            ("0001-01-01T23:59:00+23:59", Ok("0001-01-01T00:00:00.000Z")),
        ];
        for (given, expected) in table {
            let got = parse_time(given).map(format_time);
            assert_eq!(got.as_deref().map_err(String::as_str), expected, "{given}");
        }
    }

    #[test]
    fn protobuf_timestamps_keep_to_their_range_and_nanos() {
        assert_eq!(
            from_timestamp(0, 1_500_000_000).unwrap_err(),
            NANOS_EXPECTED
        );
        assert_eq!(from_timestamp(0, -1).unwrap_err(), NANOS_EXPECTED);
        // 10000-01-01T00:00:00Z and 0000-12-31T23:59:59Z.
        assert_eq!(
            from_timestamp(253_402_300_800, 0).unwrap_err(),
            RANGE_EXPECTED
        );
        assert_eq!(
            from_timestamp(-62_135_596_801, 0).unwrap_err(),
            RANGE_EXPECTED
        );
        assert_eq!(from_timestamp(i64::MAX, 0).unwrap_err(), RANGE_EXPECTED);
        assert_eq!(
            format_time(from_timestamp(253_402_300_799, 999_999_999).unwrap()),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
