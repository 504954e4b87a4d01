//! Reading a log line's timestamp and level, in the common formats.
//!
//! Both functions run once per matched line (and the level once per line
//! under a `--level` filter), so they look only at the start of a line, or at
//! a few known keys, with byte-level scanning: no regex, no JSON parser, no
//! allocation.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use memchr::memmem;

use super::Level;

/// How far into a line bare level words (`ERROR`, `[warn]`) are looked for:
/// past the timestamp, host and logger, before the message proper.
const WORD_SPAN: usize = 120;
/// How far into a line `key=value` and JSON keys are looked for.
const KEY_SPAN: usize = 1024;
/// A syslog or klog date is at most this far ahead of the clock (a sender's
/// skew, a time zone); anything later belongs to the previous year.
const FUTURE_SLACK_MS: i64 = 86_400_000;

/// The level a line states (`ERROR`, `level=warn`, `"level":"error"`, klog's
/// `E1202`…). Lower-case words count only as a value (`level=error`,
/// `"severity":"error"`, `[error]`), so "no error" in a message body does
/// not make the line an error.
pub fn level_of(text: &str) -> Option<Level> {
    let b = text.trim_start().as_bytes();
    let head = &b[..b.len().min(KEY_SPAN)];
    if head.first() == Some(&b'{') {
        return json_level(head);
    }
    if let Some(level) = klog_level(b) {
        return Some(level);
    }
    // Whichever comes first: `level=info msg="WARN ..."` is info, and
    // `INFO set level=debug` is info too.
    let word = bare_word_level(&b[..b.len().min(WORD_SPAN)]);
    let keyed = logfmt_level(head);
    match (word, keyed) {
        (Some((wp, wl)), Some((kp, kl))) => Some(if wp <= kp { wl } else { kl }),
        (w, k) => w.or(k).map(|(_, l)| l),
    }
}

/// When a line says it was written (ms since the epoch). `tz` is for
/// timestamps without an offset; `now_ms` dates formats without a year
/// (syslog, klog) to the latest year that is not more than a day ahead of it.
pub fn timestamp_of(text: &str, tz: &TimeZone, now_ms: i64) -> Option<i64> {
    let b = text.trim_start().as_bytes();
    let first = *b.first()?;
    let found = match first {
        b'0'..=b'9' => iso_at(b, tz),
        b'[' => iso_at(&b[1..], tz),
        b'{' => json_time(&b[..b.len().min(KEY_SPAN)], tz),
        b'<' => syslog_with_pri(b, tz, now_ms),
        b'I' | b'W' | b'E' | b'F' if b.get(1).is_some_and(u8::is_ascii_digit) => klog_time(b, tz, now_ms),
        b'A'..=b'Z' => syslog_time(b, tz, now_ms),
        _ => None,
    };
    found.or_else(|| clf_time(&b[..b.len().min(KEY_SPAN)])).or_else(|| logfmt_time(&b[..b.len().min(KEY_SPAN)], tz))
}

// ---------------------------------------------------------------- levels

/// A level's name in any case (`error`, `ERR`, `Warning`, `notice`…).
fn level_name(word: &[u8]) -> Option<Level> {
    std::str::from_utf8(word).ok().and_then(Level::named)
}

/// pino / bunyan numeric levels.
fn numeric_level(n: &[u8]) -> Option<Level> {
    Some(match n {
        b"10" => Level::Trace,
        b"20" => Level::Debug,
        b"30" => Level::Info,
        b"40" => Level::Warn,
        b"50" => Level::Error,
        b"60" => Level::Fatal,
        _ => return None,
    })
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The first level word among `head`'s words, with its position: an
/// upper-case one (`ERROR`, `WARN:`, Python's `ERROR:root:`) or one in
/// brackets in any case (`[ERROR]`, nginx's `[error]`).
fn bare_word_level(head: &[u8]) -> Option<(usize, Level)> {
    let mut i = 0;
    while i < head.len() {
        if !head[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let start = i;
        while i < head.len() && head[i].is_ascii_alphabetic() {
            i += 1;
        }
        let before = start.checked_sub(1).map(|p| head[p]);
        let after = head.get(i).copied();
        // A word cut by the span is not known to end there.
        let cut = i == head.len() && head.len() == WORD_SPAN;
        if cut || before.is_some_and(is_word_byte) || after.is_some_and(is_word_byte) {
            continue;
        }
        let word = &head[start..i];
        let bracketed = before == Some(b'[') && after == Some(b']');
        if (bracketed || word.iter().all(u8::is_ascii_uppercase))
            && let Some(level) = level_name(word)
        {
            return Some((start, level));
        }
    }
    None
}

/// `level=error`, `lvl=warn`, `severity="info"`, at a word start.
fn logfmt_level(head: &[u8]) -> Option<(usize, Level)> {
    [&b"level="[..], b"lvl=", b"severity="]
        .into_iter()
        .filter_map(|key| {
            let at = key_at(head, key)?;
            let value = head[at + key.len()..].strip_prefix(b"\"").unwrap_or(&head[at + key.len()..]);
            let end = value.iter().position(|c| !c.is_ascii_alphabetic()).unwrap_or(value.len());
            level_name(&value[..end]).map(|l| (at, l))
        })
        .min_by_key(|(at, _)| *at)
}

/// Where `key` first appears at the start of a word (the line's start or
/// after a space).
fn key_at(hay: &[u8], key: &[u8]) -> Option<usize> {
    memmem::find_iter(hay, key).find(|&at| at == 0 || hay[at - 1] == b' ' || hay[at - 1] == b'\t')
}

fn json_level(head: &[u8]) -> Option<Level> {
    for key in ["level", "lvl", "severity", "log.level"] {
        match json_value(head, key) {
            Some(JsonValue::Str(s)) => {
                if let Some(level) = level_name(s) {
                    return Some(level);
                }
            }
            Some(JsonValue::Num(n)) => {
                if let Some(level) = numeric_level(n) {
                    return Some(level);
                }
            }
            None => {}
        }
    }
    None
}

/// klog / glog: `E1202 03:04:05.123456 ...`.
fn klog_level(b: &[u8]) -> Option<Level> {
    let level = match b.first()? {
        b'I' => Level::Info,
        b'W' => Level::Warn,
        b'E' => Level::Error,
        b'F' => Level::Fatal,
        _ => return None,
    };
    klog_shape(b).then_some(level)
}

/// `X` + `MMDD hh:mm:ss` at the start.
fn klog_shape(b: &[u8]) -> bool {
    let mut c = Cursor::new(b.get(1..).unwrap_or_default());
    c.digits(4).is_some() && c.byte(b' ') && c.digits(2).is_some() && c.byte(b':')
}

// ---------------------------------------------------------------- JSON

enum JsonValue<'a> {
    Str(&'a [u8]),
    Num(&'a [u8]),
}

/// The value of `"key": ...` in a JSON line, a string (without escapes
/// decoded) or a number. A key is what is followed by a colon; the same
/// word as a value (`"t"` in `"x":"t"`) is not.
fn json_value<'a>(hay: &'a [u8], key: &str) -> Option<JsonValue<'a>> {
    let mut quoted = [0u8; 16];
    let k = key.as_bytes();
    quoted[0] = b'"';
    quoted[1..=k.len()].copy_from_slice(k);
    quoted[k.len() + 1] = b'"';
    let needle = &quoted[..k.len() + 2];
    for at in memmem::find_iter(hay, needle) {
        let rest = skip_ws(&hay[at + needle.len()..]);
        let Some(rest) = rest.strip_prefix(b":") else { continue };
        let rest = skip_ws(rest);
        if let Some(s) = rest.strip_prefix(b"\"") {
            let end = s.iter().position(|&c| c == b'"')?;
            return Some(JsonValue::Str(&s[..end]));
        }
        let end = rest.iter().position(|c| !(c.is_ascii_digit() || *c == b'.' || *c == b'-')).unwrap_or(rest.len());
        return (end > 0).then(|| JsonValue::Num(&rest[..end]));
    }
    None
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn json_time(head: &[u8], tz: &TimeZone) -> Option<i64> {
    ["time", "ts", "timestamp", "@timestamp", "t"].into_iter().find_map(|key| match json_value(head, key)? {
        JsonValue::Str(s) => iso_at(s, tz).or_else(|| epoch_ms(s)),
        JsonValue::Num(n) => epoch_ms(n),
    })
}

/// Epoch seconds, milliseconds, microseconds or nanoseconds, told apart by
/// magnitude (seconds stay below 1e11 until the year 5138).
fn epoch_ms(n: &[u8]) -> Option<i64> {
    let (int, frac) = match n.iter().position(|&c| c == b'.') {
        Some(dot) => (&n[..dot], &n[dot + 1..]),
        None => (n, &b""[..]),
    };
    if int.is_empty() || int.len() > 19 || !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: i64 = std::str::from_utf8(int).ok()?.parse().ok()?;
    Some(match v {
        0..100_000_000_000 => {
            let mut ms = 0;
            for i in 0..3 {
                ms = ms * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
            }
            v * 1000 + ms
        }
        100_000_000_000..100_000_000_000_000 => v,
        100_000_000_000_000..100_000_000_000_000_000 => v / 1000,
        _ => v / 1_000_000,
    })
}

// ---------------------------------------------------------------- dates

/// A tiny reader of fixed-width date fields.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, i: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<i32> {
        let field = self.b.get(self.i..self.i + n)?;
        let mut v = 0i32;
        for &c in field {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i32::from(c - b'0');
        }
        self.i += n;
        Some(v)
    }

    fn byte(&mut self, c: u8) -> bool {
        let ok = self.peek() == Some(c);
        self.i += usize::from(ok);
        ok
    }

    fn one_of(&mut self, set: &[u8]) -> Option<u8> {
        let c = self.peek().filter(|c| set.contains(c))?;
        self.i += 1;
        Some(c)
    }

    /// `.123` or `,123456`: nanoseconds (digits past the ninth ignored).
    fn fraction(&mut self) -> i32 {
        if self.one_of(b".,").is_none() {
            return 0;
        }
        let (mut ns, mut scale) = (0i32, 100_000_000i32);
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            ns += i32::from(c - b'0') * scale;
            scale /= 10;
            self.i += 1;
        }
        ns
    }

    /// `hh:mm:ss` with an optional fraction.
    fn time(&mut self) -> Option<(i8, i8, i8, i32)> {
        let h = self.digits(2)?;
        self.byte(b':').then_some(())?;
        let m = self.digits(2)?;
        self.byte(b':').then_some(())?;
        let s = self.digits(2)?;
        Some((h as i8, m as i8, s as i8, self.fraction()))
    }

    /// `Z`, `+08:00`, `-0500`, optionally after one space.
    fn offset(&mut self) -> Option<Offset> {
        let save = self.i;
        self.byte(b' ');
        if self.one_of(b"Zz").is_some() {
            return Some(Offset::UTC);
        }
        let parsed = (|| {
            let sign = if self.one_of(b"+-")? == b'-' { -1 } else { 1 };
            let h = self.digits(2)?;
            self.byte(b':');
            let m = self.digits(2).unwrap_or(0);
            Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
        })();
        if parsed.is_none() {
            self.i = save;
        }
        parsed
    }
}

fn civil(y: i32, mo: i32, d: i32, (h, mi, s, ns): (i8, i8, i8, i32)) -> Option<DateTime> {
    DateTime::new(i16::try_from(y).ok()?, mo as i8, d as i8, h, mi, s, ns).ok()
}

fn to_ms(dt: DateTime, offset: Option<Offset>, tz: &TimeZone) -> Option<i64> {
    let ts = match offset {
        Some(o) => o.to_timestamp(dt).ok()?,
        None => tz.to_timestamp(dt).ok()?,
    };
    Some(ts.as_millisecond())
}

/// RFC 3339 / ISO 8601 at the start of `b`: `2026-12-02T03:04:05.123Z`,
/// `2026-12-02 03:04:05,123` (log4j, Python), `2026/12/02 03:04:05` (nginx).
fn iso_at(b: &[u8], tz: &TimeZone) -> Option<i64> {
    let mut c = Cursor::new(b);
    let y = c.digits(4)?;
    let sep = c.one_of(b"-/")?;
    let mo = c.digits(2)?;
    c.byte(sep).then_some(())?;
    let d = c.digits(2)?;
    c.one_of(b"Tt ")?;
    let time = c.time()?;
    let offset = c.offset();
    to_ms(civil(y, mo, d, time)?, offset, tz)
}

fn month(name: &[u8]) -> Option<i32> {
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    MONTHS.iter().position(|m| m[..] == *name).map(|i| i as i32 + 1)
}

/// A date without a year, in the latest year that puts it no more than a
/// day ahead of `now_ms` (a December line read in January is last year's).
fn without_year(mo: i32, d: i32, time: (i8, i8, i8, i32), tz: &TimeZone, now_ms: i64) -> Option<i64> {
    let now_year = i32::from(tz.to_datetime(Timestamp::from_millisecond(now_ms).ok()?).year());
    // Eight years back reaches a leap year for 29 February.
    (now_year - 8..=now_year + 1)
        .rev()
        .filter_map(|y| to_ms(civil(y, mo, d, time)?, None, tz))
        .find(|&ms| ms <= now_ms + FUTURE_SLACK_MS)
}

/// BSD syslog: `Dec  2 03:07:32`, `Dec 02 03:07:32`.
fn syslog_time(b: &[u8], tz: &TimeZone, now_ms: i64) -> Option<i64> {
    let mo = month(b.get(..3)?)?;
    let mut c = Cursor::new(&b[3..]);
    c.byte(b' ').then_some(())?;
    let d = if c.byte(b' ') { c.digits(1)? } else { c.digits(2).or_else(|| c.digits(1))? };
    c.byte(b' ').then_some(())?;
    let time = c.time()?;
    without_year(mo, d, time, tz, now_ms)
}

/// `<34>1 2026-12-02T03:04:05Z host ...` (RFC 5424) or `<34>Dec  2 ...`.
fn syslog_with_pri(b: &[u8], tz: &TimeZone, now_ms: i64) -> Option<i64> {
    let close = b.iter().take(5).position(|&c| c == b'>')?;
    let rest = &b[close + 1..];
    match rest.strip_prefix(b"1 ") {
        Some(v1) => iso_at(v1, tz),
        None => syslog_time(rest, tz, now_ms).or_else(|| iso_at(rest, tz)),
    }
}

/// klog / glog: `I1202 03:04:05.123456`.
fn klog_time(b: &[u8], tz: &TimeZone, now_ms: i64) -> Option<i64> {
    let mut c = Cursor::new(&b[1..]);
    let mo = c.digits(2)?;
    let d = c.digits(2)?;
    c.byte(b' ').then_some(())?;
    let time = c.time()?;
    without_year(mo, d, time, tz, now_ms)
}

/// Common / combined log format: `1.2.3.4 - - [02/Dec/2026:03:07:32 +0000] "GET ..."`.
fn clf_time(head: &[u8]) -> Option<i64> {
    memchr::memchr_iter(b'[', head).find_map(|at| {
        let mut c = Cursor::new(&head[at + 1..]);
        let d = c.digits(2)?;
        c.byte(b'/').then_some(())?;
        let mo = month(c.b.get(c.i..c.i + 3)?)?;
        c.i += 3;
        c.byte(b'/').then_some(())?;
        let y = c.digits(4)?;
        c.byte(b':').then_some(())?;
        let time = c.time()?;
        let offset = c.offset()?;
        to_ms(civil(y, mo, d, time)?, Some(offset), &TimeZone::UTC)
    })
}

/// logfmt: `ts=2026-12-02T03:04:05Z`, `time="2026-12-02 03:04:05"`.
fn logfmt_time(head: &[u8], tz: &TimeZone) -> Option<i64> {
    [&b"ts="[..], b"time=", b"timestamp=", b"t="].into_iter().find_map(|key| {
        let at = key_at(head, key)?;
        let value = &head[at + key.len()..];
        iso_at(value.strip_prefix(b"\"").unwrap_or(value), tz)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02T03:04:05Z.
    const T: i64 = 1_796_180_645_000;

    fn utc(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn timestamps_in_the_common_formats() {
        let shanghai = TimeZone::get("Asia/Shanghai").unwrap();
        let now = utc("2026-12-10T00:00:00Z");
        let cases: &[(&str, &TimeZone, Option<i64>)] = &[
            ("2026-12-02T03:04:05Z started", &TimeZone::UTC, Some(T)),
            ("2026-12-02T03:04:05.123Z x", &TimeZone::UTC, Some(T + 123)),
            ("2026-12-02T03:04:05.123456789+00:00 x", &TimeZone::UTC, Some(T + 123)),
            ("2026-12-02T11:04:05+08:00 x", &TimeZone::UTC, Some(T)),
            ("2026-12-02T03:04:05-0500 x", &TimeZone::UTC, Some(T + 5 * 3_600_000)),
            ("2026-12-02 03:04:05,123 INFO x", &TimeZone::UTC, Some(T + 123)),
            ("2026-12-02 11:04:05,123 INFO x", &shanghai, Some(T + 123)),
            ("2026-12-02 03:04:05 +0000 x", &shanghai, Some(T)),
            ("2026-12-02 03:04:05 - x", &TimeZone::UTC, Some(T)),
            ("[2026-12-02 03:04:05] x", &TimeZone::UTC, Some(T)),
            ("2026/12/02 03:04:05 [error] 12#0: x", &TimeZone::UTC, Some(T)),
            ("  2026-12-02T03:04:05Z indented", &TimeZone::UTC, Some(T)),
            ("Dec  2 03:04:05 host sshd[1]: x", &TimeZone::UTC, Some(T)),
            ("Dec 02 03:04:05 host x", &TimeZone::UTC, Some(T)),
            ("Dec 2 11:04:05 host x", &shanghai, Some(T)),
            ("<34>1 2026-12-02T03:04:05.000Z host app - - x", &TimeZone::UTC, Some(T)),
            ("<13>Dec  2 03:04:05 host x", &TimeZone::UTC, Some(T)),
            (r#"10.0.0.1 - - [02/Dec/2026:03:04:05 +0000] "GET / HTTP/1.1" 200 5"#, &shanghai, Some(T)),
            (r#"::1 - bob [02/Dec/2026:11:04:05 +0800] "GET / HTTP/1.1" 200 5 "-" "curl""#, &TimeZone::UTC, Some(T)),
            (r#"{"time":"2026-12-02T03:04:05Z","msg":"x"}"#, &TimeZone::UTC, Some(T)),
            (r#"{"level":"info","ts":1796180645.25,"msg":"x"}"#, &TimeZone::UTC, Some(T + 250)),
            (r#"{"msg":"x","timestamp":1796180645000}"#, &TimeZone::UTC, Some(T)),
            (r#"{"@timestamp":"2026-12-02T03:04:05.000Z"}"#, &TimeZone::UTC, Some(T)),
            (r#"{"t":"2026-12-02 11:04:05"}"#, &shanghai, Some(T)),
            (r#"{"x":"t","time": 1796180645000000}"#, &TimeZone::UTC, Some(T)),
            ("I1202 03:04:05.123456    1 main.go:10] x", &TimeZone::UTC, Some(T + 123)),
            ("E1202 03:04:05.000000 1 x", &TimeZone::UTC, Some(T)),
            ("ts=2026-12-02T03:04:05Z level=info msg=x", &TimeZone::UTC, Some(T)),
            ("level=info time=\"2026-12-02T03:04:05Z\" msg=x", &TimeZone::UTC, Some(T)),
            ("    at com.example.Foo.bar(Foo.java:10)", &TimeZone::UTC, None),
            ("ERROR:root:no timestamp", &TimeZone::UTC, None),
            ("2026-13-02T03:04:05Z bad month", &TimeZone::UTC, None),
            ("2026-02-30 03:04:05 bad day", &TimeZone::UTC, None),
            ("Foo  2 03:04:05 not a month", &TimeZone::UTC, None),
            ("", &TimeZone::UTC, None),
            ("{", &TimeZone::UTC, None),
            (r#"{"time":"#, &TimeZone::UTC, None),
            ("<999999", &TimeZone::UTC, None),
            ("2026-12-02T", &TimeZone::UTC, None),
        ];
        for (line, tz, want) in cases {
            assert_eq!(timestamp_of(line, tz, now), *want, "{line}");
        }
    }

    #[test]
    fn a_date_without_a_year_is_not_in_the_future() {
        // Read on 1 January 2027, a December line is from 2026.
        let jan = utc("2027-01-01T00:10:00Z");
        assert_eq!(timestamp_of("Dec  2 03:04:05 host x", &TimeZone::UTC, jan), Some(T));
        // Up to a day ahead of the clock stays in the current year (skew, zones).
        let dec1 = utc("2026-12-01T04:00:00Z");
        assert_eq!(timestamp_of("Dec  2 03:04:05 host x", &TimeZone::UTC, dec1), Some(T));
        let nov = utc("2026-11-01T00:00:00Z");
        assert_eq!(timestamp_of("I1202 03:04:05.000000 x", &TimeZone::UTC, nov), Some(utc("2025-12-02T03:04:05Z")));
        // 29 February goes back to the last leap year.
        assert_eq!(timestamp_of("Feb 29 00:00:00 h x", &TimeZone::UTC, jan), Some(utc("2024-02-29T00:00:00Z")));
    }

    #[test]
    fn levels_in_the_common_forms() {
        let cases: &[(&str, Option<Level>)] = &[
            (r#"{"level":"error","msg":"x"}"#, Some(Level::Error)),
            (r#"{"lvl":"WARN"}"#, Some(Level::Warn)),
            (r#"{"severity":"WARNING","message":"x"}"#, Some(Level::Warn)),
            (r#"{"log.level":"Info"}"#, Some(Level::Info)),
            (r#"{"log":{"level":"debug"}}"#, Some(Level::Debug)),
            (r#"{"level":50,"msg":"x"}"#, Some(Level::Error)),
            (r#"{"msg":"an error happened"}"#, None),
            ("ts=1 level=error msg=x", Some(Level::Error)),
            ("lvl=warn msg=x", Some(Level::Warn)),
            (r#"time=x level="info" msg="WARN: disk""#, Some(Level::Info)),
            ("2026-12-02 03:04:05 INFO set level=debug", Some(Level::Info)),
            ("2026-12-02 03:04:05 [ERROR] x", Some(Level::Error)),
            ("2026/12/02 03:04:05 [error] 12#0: x", Some(Level::Error)),
            ("2026-12-02T03:04:05Z WARN x", Some(Level::Warn)),
            ("2026-12-02T03:04:05Z WARNING: x", Some(Level::Warn)),
            ("2026-12-02T03:04:05Z ERR x", Some(Level::Error)),
            ("2026-12-02T03:04:05Z FATAL x", Some(Level::Fatal)),
            ("2026-12-02T03:04:05Z CRITICAL x", Some(Level::Fatal)),
            ("2026-12-02T03:04:05Z CRIT x", Some(Level::Fatal)),
            ("2026-12-02T03:04:05Z PANIC x", Some(Level::Fatal)),
            ("2026-12-02T03:04:05Z EMERG x", Some(Level::Fatal)),
            ("2026-12-02T03:04:05Z ALERT x", Some(Level::Fatal)),
            ("2026-12-02T03:04:05Z NOTICE x", Some(Level::Info)),
            ("2026-12-02T03:04:05Z SEVERE x", Some(Level::Error)),
            ("2026-12-02T03:04:05Z DEBUG x", Some(Level::Debug)),
            ("2026-12-02T03:04:05Z TRACE x", Some(Level::Trace)),
            ("ERROR:root:x", Some(Level::Error)),
            ("WARNING:urllib3:x", Some(Level::Warn)),
            ("E1202 03:04:05.123456 1 x.go:1] x", Some(Level::Error)),
            ("W1202 03:04:05.123456 1 x.go:1] x", Some(Level::Warn)),
            ("I1202 03:04:05.123456 1 x.go:1] ERROR in body", Some(Level::Info)),
            ("F1202 03:04:05.123456 1 x.go:1] x", Some(Level::Fatal)),
            ("2026-12-02T03:04:05Z request failed with error", None),
            ("2026-12-02T03:04:05Z Error: lower case in a body", None),
            ("2026-12-02T03:04:05Z HTTP_ERROR ERRORS ERROR_CODE x", None),
            ("Everything fine", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(level_of(line), *want, "{line}");
        }
    }

    #[test]
    fn level_words_are_looked_for_near_the_start_only() {
        let late = format!("2026-12-02T03:04:05Z {} ERROR", "x".repeat(WORD_SPAN));
        assert_eq!(level_of(&late), None);
        // A word cut by the span is not taken for a whole word.
        let cut = format!("{}ERR", " ".repeat(WORD_SPAN - 3));
        assert_eq!(level_of(&format!("{cut}ORS")), None);
    }

    #[test]
    fn garbage_does_not_panic() {
        let now = utc("2026-12-10T00:00:00Z");
        for line in ["\u{feff}x", "é2026-", "[", "<1>", "<1>1 ", "{\"t\":\"\u{1F600}", "I12", "Dec", "[02/Dec/2026:"] {
            let _ = timestamp_of(line, &TimeZone::UTC, now);
            let _ = level_of(line);
        }
        assert_eq!(epoch_ms(b"99999999999999999999"), None);
        assert_eq!(epoch_ms(b"-1"), None);
    }
}
