//! Event-time parsing: RFC 3339 strings and epoch milliseconds.
//!
//! The common form, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, is read by hand;
//! anything else (offsets, leap seconds, odd forms) goes to chrono.

use chrono::DateTime;

/// The largest accepted epoch-millisecond value (9999-12-31T23:59:59.999Z).
pub const MAX_EPOCH_MILLIS: i64 = 253_402_300_799_999;

/// Parses an RFC 3339 timestamp (any offset) to epoch milliseconds, UTC.
/// Returns `None` for anything else, or a time before 1970 or after 9999.
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let ms = match parse_utc_fast(text.as_bytes()) {
        Some(ms) => ms,
        None => DateTime::parse_from_rfc3339(text).ok()?.timestamp_millis(),
    };
    (0..=MAX_EPOCH_MILLIS).contains(&ms).then_some(ms)
}

/// `YYYY-MM-DD(T|t| )HH:MM:SS[.d{1,9}](Z|z)` to epoch milliseconds, or
/// `None` when the text has another form or an impossible date (the
/// caller then asks chrono, which rejects or reads it).
fn parse_utc_fast(b: &[u8]) -> Option<i64> {
    let (&last, b) = b.split_last()?;
    if b.len() < 19
        || !matches!(last, b'Z' | b'z')
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    let millis = match &b[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            let mut padded = [b'0'; 3];
            let kept = fraction.len().min(3);
            padded[..kept].copy_from_slice(&fraction[..kept]);
            digits(&fraction[kept..])?;
            digits(&padded)?
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1_000 + millis)
}

/// The value of a run of ASCII digits (an empty run is 0); `None` for any
/// other byte.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0_i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            parse_rfc3339_millis("1970-01-01T01:00:01.5+01:00"),
            Some(1500)
        );
        assert_eq!(
            parse_rfc3339_millis("2026-01-02 03:04:05Z"),
            Some(1_767_323_045_000)
        );
    }

    #[test]
    fn rejects_non_rfc3339_and_pre_epoch() {
        assert_eq!(parse_rfc3339_millis("2026-01-02"), None);
        assert_eq!(parse_rfc3339_millis("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339_millis(""), None);
    }

    #[test]
    fn the_fast_path_reads_utc_forms_and_leaves_the_rest() {
        // 2024-02-29 is day 19,782 since 1970-01-01 (54 years, 13 leap days).
        let leap_day = 19_782 * 86_400_000;
        assert_eq!(
            parse_utc_fast(b"2024-02-29T12:34:56.789Z"),
            Some(leap_day + 45_296_789)
        );
        assert_eq!(
            parse_utc_fast(b"2024-02-29t12:34:56.7891234z"),
            Some(leap_day + 45_296_789)
        );
        assert_eq!(
            parse_utc_fast(b"2024-02-29T00:00:00.5Z"),
            Some(leap_day + 500)
        );
        assert_eq!(parse_utc_fast(b"2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_utc_fast(b"2024-02-29T00:00:60Z"), None);
        assert_eq!(parse_utc_fast(b"2024-02-29T00:00:00+00:00"), None);
        assert_eq!(parse_utc_fast(b"2024-02-29T00:00:00.Z"), None);
        assert_eq!(parse_utc_fast(b"2024-02-29T00:00:00.1234567890Z"), None);
        assert_eq!(parse_utc_fast(b"2024-2-29T00:00:00Z"), None);
        assert_eq!(parse_utc_fast(b"+024-02-29T00:00:00Z"), None);
    }
}
