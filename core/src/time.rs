use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// Returns the current wall-clock time in Unix milliseconds. Leases compare these across nodes,
/// so nodes sharing a database need synchronized clocks.
pub fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Parses an RFC 3339 time (any offset) into Unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|error| format!("`{text}` is not an RFC 3339 time: {error}"))
}

/// Formats a Unix-millisecond time as RFC 3339 in UTC with milliseconds, e.g.
/// `2026-11-24T20:30:25.123Z`; a time chrono cannot represent is written as its number.
pub fn format_rfc3339_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves RFC 3339 formatting against known instants, including a leap day.
    #[test]
    fn formats_rfc3339() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_795_552_225_000),
            "2026-11-24T20:30:25.000Z"
        );
    }

    /// Proves a formatted time parses back to the same millisecond, that other offsets are
    /// converted to UTC, and that text that is not RFC 3339 is refused with the text quoted.
    #[test]
    fn parses_rfc3339_back() {
        let ms = 1_795_552_225_123;
        assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)).unwrap(), ms);
        assert_eq!(
            parse_rfc3339_ms("2026-11-24T21:30:25.123+01:00").unwrap(),
            ms
        );
        let error = parse_rfc3339_ms("yesterday").unwrap_err();
        assert!(error.starts_with("`yesterday`"), "{error}");
    }

    /// Proves the clock reads after 2020 and does not run backwards between two reads.
    #[test]
    fn now_is_unix_milliseconds() {
        let first = now_ms();
        assert!(first > 1_577_836_800_000, "{first}");
        assert!(now_ms() >= first);
    }
}
