//! Event-time parsing: RFC 3339 strings and epoch milliseconds.

use chrono::DateTime;

/// The largest accepted epoch-millisecond value (9999-12-31T23:59:59.999Z).
pub const MAX_EPOCH_MILLIS: i64 = 253_402_300_799_999;

/// Parses an RFC 3339 timestamp (any offset) to epoch milliseconds, UTC.
/// Returns `None` for anything else, or a time before 1970 or after 9999.
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let ms = DateTime::parse_from_rfc3339(text).ok()?.timestamp_millis();
    (0..=MAX_EPOCH_MILLIS).contains(&ms).then_some(ms)
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
}
