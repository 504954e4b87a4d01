//! Reading a log line's timestamp and level, in the common formats.

use super::Level;

/// The level a line states (`ERROR`, `level=warn`, `"level":"error"`, klog's `E1202`…).
pub fn level_of(_text: &str) -> Option<Level> {
    None
}

/// When a line says it was written (ms since the epoch). `tz` is for
/// timestamps without an offset; `now_ms` dates formats without a year
/// (syslog) to the latest year not in the future.
pub fn timestamp_of(_text: &str, _tz: &jiff::tz::TimeZone, _now_ms: i64) -> Option<i64> {
    None
}
