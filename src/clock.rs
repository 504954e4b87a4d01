//! Wall-clock time for the store and the cards, derived from tokio's clock.
//!
//! Timestamps are read as "the wall time at start plus tokio's elapsed time",
//! so a test that pauses and advances tokio's clock moves expiry, backoff and
//! retention with it, while production reads the real time. This is the only
//! place the process reads the system clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_wall_ms: i64,
    anchor: Instant,
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).expect("system clock is after 1970");
        Self { anchor_wall_ms: wall.as_millis() as i64, anchor: Instant::now() }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.anchor_wall_ms + self.anchor.elapsed().as_millis() as i64
    }

    /// This clock `by` ahead, for tests that move one component's time
    /// without pausing tokio's.
    #[cfg(test)]
    pub fn shifted(self, by: Duration) -> Self {
        Self { anchor_wall_ms: self.anchor_wall_ms + by.as_millis() as i64, anchor: self.anchor }
    }

    pub fn uptime(&self) -> Duration {
        self.anchor.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC with second precision.
pub fn format_ms(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Like [`format_ms`], with milliseconds: `2026-01-02T03:04:05.678Z`.
pub fn format_ms_precise(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Formats a duration for people: `3h 12m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, mins, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{mins}m {s}s"),
        (0, _, _) => format!("{hours}h {mins}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        let check = |secs: u64, expected: &str| assert_eq!(format_duration(Duration::from_secs(secs)), expected);
        check(0, "0s");
        check(45, "45s");
        check(61, "1m 1s");
        check(3 * 3600 + 12 * 60 + 5, "3h 12m");
        check(2 * 86_400 + 3600, "2d 1h");
    }

    #[tokio::test(start_paused = true)]
    async fn paused_clock_moves_wall_time() {
        let clock = Clock::new();
        let before = clock.now_ms();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms() - before, 3_600_000);
    }

    #[test]
    fn formats_epoch_as_rfc3339() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
    }
}
