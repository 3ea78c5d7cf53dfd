//! Timestamps: parsing RFC 3339 and epoch numbers, formatting RFC 3339, minute arithmetic.
//!
//! Every timestamp inside Merchant Monitor is an `i64` count of microseconds since the Unix
//! epoch (UTC). Windows are whole UTC minutes, numbered by `minute_of(ts)`.

use thiserror::Error;

/// Microseconds in one millisecond.
pub const MICROS_PER_MILLI: i64 = 1_000;
/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one minute: the width of every window.
pub const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;

/// Epoch numbers at or above this magnitude are read as microseconds, below it as milliseconds.
/// 1e14 ms would be the year 5138; 1e14 µs is 1973, so the split is unambiguous for real data.
const MICROS_THRESHOLD: i64 = 100_000_000_000_000;

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimeError {
    #[error("not an RFC 3339 timestamp (expected e.g. 2026-11-21T15:04:05.123Z): {0}")]
    Rfc3339(&'static str),
    #[error("epoch number out of range")]
    OutOfRange,
}

/// The minute (window number) that contains `ts_micros`.
pub fn minute_of(ts_micros: i64) -> i64 {
    ts_micros.div_euclid(MICROS_PER_MINUTE)
}

/// First microsecond of `minute`.
pub fn minute_start(minute: i64) -> i64 {
    minute * MICROS_PER_MINUTE
}

/// Reads an epoch number: milliseconds, or microseconds when the magnitude says so.
pub fn from_epoch_number(value: i64) -> Result<i64, TimeError> {
    if value.unsigned_abs() >= MICROS_THRESHOLD as u64 {
        Ok(value)
    } else {
        value
            .checked_mul(MICROS_PER_MILLI)
            .ok_or(TimeError::OutOfRange)
    }
}

/// Reads a fractional epoch number (milliseconds, or microseconds when large).
pub fn from_epoch_float(value: f64) -> Result<i64, TimeError> {
    if !value.is_finite() || value.abs() > 9.0e18 {
        return Err(TimeError::OutOfRange);
    }
    if value.abs() >= MICROS_THRESHOLD as f64 {
        Ok(value.round() as i64)
    } else {
        Ok((value * MICROS_PER_MILLI as f64).round() as i64)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(bytes: &[u8], start: usize, count: usize) -> Result<i64, TimeError> {
    let slice = bytes
        .get(start..start + count)
        .ok_or(TimeError::Rfc3339("too short"))?;
    let mut value = 0i64;
    for byte in slice {
        if !byte.is_ascii_digit() {
            return Err(TimeError::Rfc3339("expected a digit"));
        }
        value = value * 10 + i64::from(byte - b'0');
    }
    Ok(value)
}

fn expect(bytes: &[u8], at: usize, wanted: &[u8]) -> Result<(), TimeError> {
    match bytes.get(at) {
        Some(byte) if wanted.contains(byte) => Ok(()),
        _ => Err(TimeError::Rfc3339("unexpected separator")),
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-21T15:04:05Z`, optional fraction of up to 9 digits,
/// `Z` or a `±HH:MM` offset; `t`, `z` and a space separator are accepted too) to epoch µs.
pub fn parse_rfc3339(text: &str) -> Result<i64, TimeError> {
    let bytes = text.as_bytes();
    let year = digits(bytes, 0, 4)?;
    expect(bytes, 4, b"-")?;
    let month = digits(bytes, 5, 2)?;
    expect(bytes, 7, b"-")?;
    let day = digits(bytes, 8, 2)?;
    expect(bytes, 10, b"Tt ")?;
    let hour = digits(bytes, 11, 2)?;
    expect(bytes, 13, b":")?;
    let minute = digits(bytes, 14, 2)?;
    expect(bytes, 16, b":")?;
    let second = digits(bytes, 17, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(TimeError::Rfc3339("date out of range"));
    }
    // A leap second (:60) is read as the last microsecond of its minute.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimeError::Rfc3339("time of day out of range"));
    }
    let mut at = 19;
    let mut micros = 0i64;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let fraction_start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            if at - fraction_start < 6 {
                micros = micros * 10 + i64::from(bytes[at] - b'0');
            }
            at += 1;
        }
        let fraction_digits = at - fraction_start;
        if fraction_digits == 0 || fraction_digits > 9 {
            return Err(TimeError::Rfc3339("fraction must have 1 to 9 digits"));
        }
        for _ in fraction_digits..6 {
            micros *= 10;
        }
    }
    let offset_seconds = match bytes.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let offset_hours = digits(bytes, at + 1, 2)?;
            expect(bytes, at + 3, b":")?;
            let offset_minutes = digits(bytes, at + 4, 2)?;
            if offset_hours > 23 || offset_minutes > 59 {
                return Err(TimeError::Rfc3339("offset out of range"));
            }
            let magnitude = offset_hours * 3600 + offset_minutes * 60;
            at += 6;
            if *sign == b'-' { -magnitude } else { magnitude }
        }
        _ => return Err(TimeError::Rfc3339("missing time zone (Z or ±HH:MM)")),
    };
    if at != bytes.len() {
        return Err(TimeError::Rfc3339("trailing characters"));
    }
    let (second, micros) = if second == 60 {
        (59, 999_999)
    } else {
        (second, micros)
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Ok(seconds * MICROS_PER_SECOND + micros)
}

/// Appends `ts_micros` as RFC 3339 in UTC with millisecond precision, or microsecond
/// precision when the value has sub-millisecond digits (`2026-11-21T15:04:05.123Z`).
pub fn write_rfc3339(ts_micros: i64, out: &mut String) {
    let seconds = ts_micros.div_euclid(MICROS_PER_SECOND);
    let micros = ts_micros.rem_euclid(MICROS_PER_SECOND);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let hour = second_of_day / 3600;
    let minute = (second_of_day % 3600) / 60;
    let second = second_of_day % 60;
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
    );
    if micros % 1000 == 0 {
        let _ = write!(out, ".{:03}Z", micros / 1000);
    } else {
        let _ = write!(out, ".{micros:06}Z");
    }
}

/// `ts_micros` as an RFC 3339 string (see [`write_rfc3339`]).
pub fn format_rfc3339(ts_micros: i64) -> String {
    let mut out = String::with_capacity(30);
    write_rfc3339(ts_micros, &mut out);
    out
}

/// Reads a time given in a query parameter: RFC 3339, or epoch milliseconds.
pub fn parse_param(text: &str) -> Result<i64, TimeError> {
    let trimmed = text.trim();
    if !trimmed.is_empty()
        && trimmed
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'-')
    {
        let value: i64 = trimmed.parse().map_err(|_| TimeError::OutOfRange)?;
        return value
            .checked_mul(MICROS_PER_MILLI)
            .ok_or(TimeError::OutOfRange);
    }
    parse_rfc3339(trimmed)
}

/// The wall clock in µs since the epoch. Only the adapters read it (ingest, the pipelines,
/// tools); the pure crates are handed the time.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339("2026-11-21T15:04:05.123Z"),
            Ok(1_795_273_445_123_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-21T16:04:05.123+01:00"),
            parse_rfc3339("2026-11-21T15:04:05.123Z")
        );
        assert_eq!(
            parse_rfc3339("2026-11-21 15:04:05.123456789z"),
            Ok(1_795_273_445_123_456)
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2026-11-21",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-21T25:00:00Z",
            "2026-11-21T15:04:05",
            "2026-11-21T15:04:05.Z",
            "2026-11-21T15:04:05Zjunk",
            "yesterday",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn epoch_numbers_pick_their_unit() {
        assert_eq!(
            from_epoch_number(1_795_273_445_123),
            Ok(1_795_273_445_123_000)
        );
        assert_eq!(
            from_epoch_number(1_795_273_445_123_456),
            Ok(1_795_273_445_123_456)
        );
        assert_eq!(
            from_epoch_float(1_795_273_445_123.5),
            Ok(1_795_273_445_123_500)
        );
    }

    #[test]
    fn query_params_accept_both_forms() {
        assert_eq!(parse_param("1795273445123"), Ok(1_795_273_445_123_000));
        assert_eq!(
            parse_param("2026-11-21T15:04:05.123Z"),
            Ok(1_795_273_445_123_000)
        );
        assert!(parse_param("soon").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ts in -62_000_000_000_000_000i64..250_000_000_000_000_000i64) {
            let text = format_rfc3339(ts);
            prop_assert_eq!(parse_rfc3339(&text), Ok(ts));
        }

        #[test]
        fn minutes_partition_time(ts in any::<i32>().prop_map(|v| i64::from(v) * 1_000)) {
            let minute = minute_of(ts);
            prop_assert!(minute_start(minute) <= ts && ts < minute_start(minute + 1));
        }
    }
}

/// Why a configured duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("duration {0:?} must start with a whole number")]
    NoNumber(String),
    #[error("duration {text:?} has unknown unit {unit:?} (use ms, s, m, h or d)")]
    UnknownUnit { text: String, unit: String },
}

/// Reads a configured duration: `30d`, `3m`, `10s`, `500ms`, `2h` (one whole number and one
/// unit; a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| DurationError::NoNumber(text.to_owned()))?;
    let seconds = match unit.trim() {
        "ms" => return Ok(std::time::Duration::from_millis(value)),
        "s" | "" => value,
        "m" => value.saturating_mul(60),
        "h" => value.saturating_mul(3600),
        "d" => value.saturating_mul(86_400),
        other => {
            return Err(DurationError::UnknownUnit {
                text: text.to_owned(),
                unit: other.to_owned(),
            });
        }
    };
    Ok(std::time::Duration::from_secs(seconds))
}
