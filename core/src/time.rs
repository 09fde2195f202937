use std::sync::{PoisonError, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// The shared clock this process follows once it has read one: the shared clock's time at a
/// monotonic instant.
#[derive(Debug, Clone, Copy)]
struct Reference {
    at: Instant,
    reference_ms: i64,
}

static REFERENCE: RwLock<Option<Reference>> = RwLock::new(None);

/// How far this process's clock may drift from the shared clock before it steps to it again;
/// below this, a reading's round trip would only make the clock wobble.
pub const CLOCK_TOLERANCE_MS: i64 = 50;

/// Returns the current time in Unix milliseconds. Leases and run times are compared across
/// nodes with it. Once [`follow_shared_clock`] was called (the node membership does, with the
/// database's clock), it is the shared clock's time plus the monotonic time since it was read,
/// so a step of this machine's wall clock (NTP, an operator, a resumed VM) does not move it;
/// before that, the wall clock.
pub fn now_ms() -> i64 {
    let reference_opt = *REFERENCE.read().unwrap_or_else(PoisonError::into_inner);
    match reference_opt {
        Some(reference) => reference
            .reference_ms
            .saturating_add(i64::try_from(reference.at.elapsed().as_millis()).unwrap_or(i64::MAX)),
        None => wall_clock_ms(),
    }
}

/// Returns this machine's wall-clock time in Unix milliseconds.
pub fn wall_clock_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Makes [`now_ms`] follow a shared clock that read `reference_ms` at `at`, give or take
/// `uncertainty_ms` (half the reading's round trip). The first reading is taken as is; later ones
/// step the clock only when it drifted by more than [`CLOCK_TOLERANCE_MS`] plus the
/// uncertainty. Returns the step applied (0 when none).
pub fn follow_shared_clock(at: Instant, reference_ms: i64, uncertainty_ms: i64) -> i64 {
    let mut current = REFERENCE.write().unwrap_or_else(PoisonError::into_inner);
    let step = match *current {
        Some(reference) => {
            let ours_at = reference.reference_ms.saturating_add(
                i64::try_from(at.saturating_duration_since(reference.at).as_millis())
                    .unwrap_or(i64::MAX),
            );
            reference_ms.saturating_sub(ours_at)
        }
        None => i64::MAX,
    };
    if step.saturating_abs() <= CLOCK_TOLERANCE_MS.saturating_add(uncertainty_ms.max(0)) {
        return 0;
    }
    *current = Some(Reference { at, reference_ms });
    if step == i64::MAX { 0 } else { step }
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

    /// Proves the clock follows the shared clock once read, whatever the wall clock says: a
    /// reading an hour ahead moves it an hour ahead, a reading within the tolerance does not
    /// move it, and it keeps running on the monotonic clock between readings.
    #[test]
    fn follows_the_shared_clock() {
        let wall = wall_clock_ms();
        follow_shared_clock(Instant::now(), wall + 3_600_000, 0);
        let ahead = now_ms() - wall;
        assert!((3_600_000..3_610_000).contains(&ahead), "{ahead}");
        let before = now_ms();
        assert_eq!(
            follow_shared_clock(Instant::now(), before + CLOCK_TOLERANCE_MS + 10, 20),
            0,
            "within the tolerance and the reading's uncertainty: no step"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(now_ms() >= before + 20, "runs on between readings");
        let step = follow_shared_clock(Instant::now(), wall_clock_ms(), 0);
        assert!(step <= -3_599_000, "stepped back: {step}");
        assert!((now_ms() - wall_clock_ms()).abs() < 1_000);
    }

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
