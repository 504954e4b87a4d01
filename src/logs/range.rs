//! The time range of a `/logs` search, from what the user typed: `--since
//! 30m`, or `--from` / `--to` as a date and time (UTC unless it says),
//! a time of day (today, or yesterday when that is still to come), or a
//! duration meaning "that long ago". The result is absolute, so later pages
//! of the same search read the same range.

use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};
use jiff::{Timestamp, tz::TimeZone};

/// Why a range was refused; each has its sentence in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeError {
    /// `--since` together with `--from`.
    SinceAndFrom,
    /// A `--from` / `--to` value that is not a time.
    BadTime(String),
    /// `--from` is after `--to`.
    Backwards { from_ms: i64, to_ms: i64 },
    /// The range starts in the future.
    Future { from_ms: i64 },
    /// Longer than `logs.max_range`.
    TooLong { max: Duration },
}

/// Grace for clocks a little ahead: a `--to` slightly in the future is fine.
const FUTURE_SLACK_MS: i64 = 60_000;

/// The inclusive range `(from_ms, to_ms)` the user asked for.
pub fn resolve(
    since: Option<Duration>,
    from: Option<&str>,
    to: Option<&str>,
    now_ms: i64,
    default_since: Duration,
    max_range: Duration,
) -> Result<(i64, i64), RangeError> {
    if since.is_some() && from.is_some() {
        return Err(RangeError::SinceAndFrom);
    }
    let to_ms = match to {
        Some(t) => parse_time(t, now_ms).ok_or_else(|| RangeError::BadTime(t.to_owned()))?,
        None => now_ms,
    };
    let from_ms = match (from, since) {
        (Some(f), _) => parse_time(f, now_ms).ok_or_else(|| RangeError::BadTime(f.to_owned()))?,
        (None, Some(since)) => to_ms.saturating_sub(millis(since)),
        (None, None) => to_ms.saturating_sub(millis(default_since)),
    };
    if from_ms > to_ms {
        return Err(RangeError::Backwards { from_ms, to_ms });
    }
    if from_ms > now_ms + FUTURE_SLACK_MS {
        return Err(RangeError::Future { from_ms });
    }
    if to_ms - from_ms > millis(max_range) {
        return Err(RangeError::TooLong { max: max_range });
    }
    Ok((from_ms, to_ms))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One `--from` / `--to` value, in ms since the epoch.
fn parse_time(text: &str, now_ms: i64) -> Option<i64> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Some(now_ms);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Some(now_ms.saturating_sub(millis(ago)));
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let utc = |dt: DateTime| dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp().as_millisecond());
    if let Ok(dt) = text.replacen(' ', "T", 1).parse::<DateTime>() {
        return utc(dt);
    }
    if let Ok(date) = text.parse::<Date>() {
        return utc(date.to_datetime(Time::midnight()));
    }
    if let Ok(time) = text.parse::<Time>() {
        let now = Timestamp::from_millisecond(now_ms).ok()?.to_zoned(TimeZone::UTC);
        let today = utc(now.date().to_datetime(time))?;
        // A time of day still to come means yesterday's.
        return Some(if today > now_ms + FUTURE_SLACK_MS { today - 86_400_000 } else { today });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02T03:00:00Z
    const NOW: i64 = 1_796_180_400_000;
    const HOUR: Duration = Duration::from_secs(3600);
    const MONTH: Duration = Duration::from_secs(31 * 86400);

    fn range(since: Option<&str>, from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), RangeError> {
        let since = since.map(|s| humantime::parse_duration(s).unwrap());
        resolve(since, from, to, NOW, HOUR, MONTH)
    }

    #[test]
    fn since_from_and_to_become_an_absolute_range() {
        assert_eq!(range(None, None, None), Ok((NOW - 3_600_000, NOW)));
        assert_eq!(range(Some("30m"), None, None), Ok((NOW - 1_800_000, NOW)));
        assert_eq!(range(None, Some("2026-12-02T01:00:00Z"), None), Ok((NOW - 7_200_000, NOW)));
        assert_eq!(
            range(None, Some("2026-12-02 01:00"), Some("2026-12-02T02:00")),
            Ok((NOW - 7_200_000, NOW - 3_600_000))
        );
        assert_eq!(range(None, Some("2026-12-02T09:00+08:00"), None), Ok((NOW - 7_200_000, NOW)));
        assert_eq!(range(None, Some("2026-12-01"), None), Ok((NOW - 27 * 3_600_000, NOW)));
        assert_eq!(range(None, Some("2h"), Some("1h")), Ok((NOW - 7_200_000, NOW - 3_600_000)));
        // A time of day: today's, or yesterday's when today's is still to come.
        assert_eq!(range(None, Some("02:30"), None), Ok((NOW - 1_800_000, NOW)));
        assert_eq!(range(None, Some("23:00"), None), Ok((NOW - 4 * 3_600_000, NOW)));
        // --to with --since: the range ends there.
        assert_eq!(range(Some("1h"), None, Some("1h")), Ok((NOW - 7_200_000, NOW - 3_600_000)));
    }

    #[test]
    fn backwards_absurd_and_garbled_ranges_are_refused() {
        assert_eq!(range(Some("1h"), Some("2h"), None), Err(RangeError::SinceAndFrom));
        assert_eq!(range(None, Some("yesterday-ish"), None), Err(RangeError::BadTime("yesterday-ish".into())));
        assert_eq!(
            range(None, Some("1h"), Some("2h")),
            Err(RangeError::Backwards { from_ms: NOW - 3_600_000, to_ms: NOW - 7_200_000 })
        );
        assert_eq!(range(Some("1000d"), None, None), Err(RangeError::TooLong { max: MONTH }));
        assert_eq!(
            range(None, Some("2027-01-01"), Some("2027-01-02")),
            Err(RangeError::Future { from_ms: 1_798_761_600_000 })
        );
    }
}
