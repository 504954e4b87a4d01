//! The `journald` backend: runs `journalctl -o json -r` for a unit over the
//! range and filters its entries (newest first) until enough matched, then
//! kills it.

use std::borrow::Cow;
use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::config::JournaldConfig;
use super::files::{capped, level_passes};
use super::ignores_case;
use super::{Found, Level, LogError, LogLine, LogSource, Search};

/// The last second journalctl parses (9999-12-31T23:59:59Z).
const MAX_SECS: i64 = 253_402_300_799;
/// How much of journalctl's stderr is kept for an error message.
const STDERR_KEEP: u64 = 4096;

/// Searches one unit's entries through journalctl.
pub struct Journald {
    config: JournaldConfig,
    timeout: Duration,
}

impl Journald {
    /// `timeout` bounds each whole search, journalctl's run included.
    pub fn new(config: JournaldConfig, timeout: Duration) -> Self {
        Self { config, timeout }
    }

    /// journalctl's arguments. The range is widened to whole seconds
    /// (journalctl's `@` takes seconds) and then applied to the ms.
    fn args(&self, search: &Search) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(dir) = &self.config.directory {
            args.extend(["-D".into(), dir.into()]);
        }
        let since = search.from_ms.div_euclid(1000).clamp(0, MAX_SECS);
        let until = (search.to_ms.div_euclid(1000) + 1).clamp(0, MAX_SECS);
        // `--all`: without it, fields over 4096 bytes come out as null.
        for a in ["-u", &self.config.unit, "-o", "json", "--all", "--no-pager", "-q", "-r"] {
            args.push(a.into());
        }
        args.extend(["--since".into(), format!("@{since}").into(), "--until".into(), format!("@{until}").into()]);
        if let Some(level) = search.level {
            args.extend(["-p".into(), max_priority(level).to_string().into()]);
        }
        args
    }

    async fn run(&self, search: &Search, pattern: Option<&regex::Regex>) -> Result<Found, LogError> {
        let program = &self.config.journalctl;
        let mut child = Command::new(program)
            .args(self.args(search))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    LogError::Unavailable(format!("journalctl not found (`{}`)", program.display()))
                }
                _ => LogError::Unavailable(format!("cannot run `{}`: {e}", program.display())),
            })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(LogError::Unavailable("journalctl's output could not be read".into()));
        };
        // Read concurrently, so a chatty stderr cannot fill its pipe and
        // stall journalctl; aborted with this future.
        let stderr = AbortOnDrop(tokio::spawn(first_line(stderr)));
        let want = search.limit.saturating_add(1);
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        let (mut lines, mut malformed) = (Vec::new(), 0usize);
        while lines.len() < want {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| LogError::Unavailable(format!("reading journalctl's output: {e}")))?;
            if n == 0 {
                break;
            }
            if buf.trim_ascii().is_empty() {
                continue;
            }
            match serde_json::from_slice::<Entry>(&buf) {
                Ok(entry) => lines.extend(entry.into_line(search, pattern)),
                Err(_) => malformed += 1,
            }
        }
        if lines.len() >= want {
            // Enough: the rest of its output is not needed.
            let _ = child.start_kill();
            let _ = child.wait().await;
        } else {
            let status = child.wait().await.map_err(|e| LogError::Unavailable(format!("journalctl: {e}")))?;
            if !status.success() {
                let mut stderr = stderr;
                let said = (&mut stderr.0).await.ok().flatten();
                return Err(LogError::Unavailable(said.unwrap_or_else(|| format!("journalctl failed ({status})"))));
            }
        }
        let mut notes = Vec::new();
        if malformed > 0 {
            tracing::info!(unit = %self.config.unit, malformed, "log search: journalctl lines that are not JSON entries");
            notes.push(format!("{malformed} line(s) of journalctl's output were not JSON entries, skipped"));
        }
        let truncated = lines.len() > search.limit;
        lines.truncate(search.limit);
        Ok(Found { lines, truncated, notes })
    }
}

#[async_trait]
impl LogSource for Journald {
    fn kind(&self) -> &'static str {
        "journald"
    }

    async fn search(&self, search: &Search) -> Result<Found, LogError> {
        let pattern = regex(search.pattern.as_deref())?;
        tokio::time::timeout(self.timeout, self.run(search, pattern.as_ref()))
            .await
            .unwrap_or(Err(LogError::Timeout(self.timeout)))
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The first non-blank line of what a process writes to stderr.
async fn first_line(stderr: impl AsyncRead + Unpin) -> Option<String> {
    let mut kept = Vec::new();
    let mut stderr = stderr.take(STDERR_KEEP);
    stderr.read_to_end(&mut kept).await.ok()?;
    let text = String::from_utf8_lossy(&kept);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
}

/// The user's pattern, with smart case as for files.
fn regex(pattern: Option<&str>) -> Result<Option<regex::Regex>, LogError> {
    let Some(pattern) = pattern.filter(|p| !p.is_empty()) else { return Ok(None) };
    regex::RegexBuilder::new(pattern)
        .case_insensitive(ignores_case(pattern))
        .build()
        .map(Some)
        .map_err(|e| LogError::BadPattern(e.to_string()))
}

/// `-p`: this priority and the more severe ones (lower numbers).
fn max_priority(level: Level) -> u8 {
    match level {
        Level::Fatal => 2,
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// syslog priorities: 0 emerg, 1 alert, 2 crit, 3 err, 4 warning, 5
/// notice, 6 info, 7 debug.
fn level_of_priority(priority: u8) -> Option<Level> {
    Some(match priority {
        0..=2 => Level::Fatal,
        3 => Level::Error,
        4 => Level::Warn,
        5 | 6 => Level::Info,
        7 => Level::Debug,
        _ => return None,
    })
}

/// One entry of `journalctl -o json`, the fields this backend reads.
#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "MESSAGE")]
    message: Option<Field>,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    realtime: Option<Field>,
    #[serde(rename = "PRIORITY")]
    priority: Option<Field>,
    #[serde(rename = "_SYSTEMD_UNIT")]
    unit: Option<Field>,
    #[serde(rename = "SYSLOG_IDENTIFIER")]
    identifier: Option<Field>,
}

/// A field's value: a string; an array of bytes when it is not printable
/// UTF-8; an array of values when the entry has the field more than once.
#[derive(Deserialize)]
#[serde(untagged)]
enum Field {
    Text(String),
    Bytes(Vec<u8>),
    Many(Vec<Field>),
}

impl Field {
    fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Field::Text(s) => Some(Cow::Borrowed(s)),
            Field::Bytes(b) => Some(String::from_utf8_lossy(b)),
            Field::Many(values) => values.first().and_then(Field::text),
        }
    }
}

impl Entry {
    /// The entry as a line, if it is in the range, of the level and matches.
    fn into_line(self, search: &Search, pattern: Option<&regex::Regex>) -> Option<LogLine> {
        let us: i64 = self.realtime.as_ref()?.text()?.parse().ok()?;
        let ts_ms = us.div_euclid(1000);
        if ts_ms < search.from_ms || ts_ms > search.to_ms {
            return None;
        }
        let level =
            self.priority.as_ref().and_then(Field::text).and_then(|p| p.parse().ok()).and_then(level_of_priority);
        if !level_passes(level, search.level) {
            return None;
        }
        let message = self.message.as_ref()?.text()?;
        let text = message.trim_end_matches(['\n', '\r']);
        if pattern.is_some_and(|p| !p.is_match(text)) {
            return None;
        }
        let origin = self.unit.as_ref().or(self.identifier.as_ref()).and_then(Field::text).map(Cow::into_owned);
        Some(LogLine { ts_ms: Some(ts_ms), level, text: capped(text.to_owned()), origin })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn search() -> Search {
        Search { pattern: None, from_ms: 1_000_500, to_ms: 2_000_500, level: None, limit: 10 }
    }

    fn line(json: &str, search: &Search, pattern: Option<&str>) -> Option<LogLine> {
        let pattern = regex(pattern).unwrap();
        serde_json::from_str::<Entry>(json).unwrap().into_line(search, pattern.as_ref())
    }

    #[test]
    fn arguments() {
        let j = Journald::new(
            JournaldConfig {
                unit: "nginx.service".into(),
                directory: Some(PathBuf::from("/j")),
                journalctl: "journalctl".into(),
            },
            Duration::from_secs(1),
        );
        let mut s = search();
        s.level = Some(Level::Warn);
        let args: Vec<String> = j.args(&s).into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            args.join(" "),
            "-D /j -u nginx.service -o json --all --no-pager -q -r --since @1000 --until @2001 -p 4"
        );
        s.level = None;
        (s.from_ms, s.to_ms) = (-5, i64::MAX / 2);
        let args: Vec<String> = j.args(&s).into_iter().map(|a| a.into_string().unwrap()).collect();
        assert!(args.join(" ").ends_with("--since @0 --until @253402300799"), "{args:?}");
    }

    #[test]
    fn entries_become_lines() {
        let s = search();
        let l = line(
            r#"{"MESSAGE":"GET / 502\n","__REALTIME_TIMESTAMP":"1500000000","PRIORITY":"3","_SYSTEMD_UNIT":"nginx.service","SYSLOG_IDENTIFIER":"nginx"}"#,
            &s,
            None,
        )
        .unwrap();
        assert_eq!(
            l,
            LogLine {
                ts_ms: Some(1_500_000),
                level: Some(Level::Error),
                text: "GET / 502".into(),
                origin: Some("nginx.service".into())
            }
        );
        // Bytes for a message that is not printable UTF-8; the identifier when no unit.
        let l = line(
            r#"{"MESSAGE":[104,105,0,255],"__REALTIME_TIMESTAMP":"1500000000","SYSLOG_IDENTIFIER":"kernel"}"#,
            &s,
            None,
        )
        .unwrap();
        assert_eq!((l.text.as_str(), l.origin.as_deref(), l.level), ("hi\0\u{fffd}", Some("kernel"), None));
        // A field given twice: the first.
        let l = line(r#"{"MESSAGE":["one","two"],"__REALTIME_TIMESTAMP":"1500000000"}"#, &s, None).unwrap();
        assert_eq!(l.text, "one");
        // Outside the range by a millisecond, no message, no timestamp, null message.
        for json in [
            r#"{"MESSAGE":"x","__REALTIME_TIMESTAMP":"1000499999"}"#,
            r#"{"MESSAGE":"x","__REALTIME_TIMESTAMP":"2000501000"}"#,
            r#"{"__REALTIME_TIMESTAMP":"1500000000"}"#,
            r#"{"MESSAGE":"x"}"#,
            r#"{"MESSAGE":null,"__REALTIME_TIMESTAMP":"1500000000"}"#,
        ] {
            assert_eq!(line(json, &s, None), None, "{json}");
        }
        assert!(line(r#"{"MESSAGE":"x","__REALTIME_TIMESTAMP":"1000500000"}"#, &s, None).is_some());
        assert!(line(r#"{"MESSAGE":"x","__REALTIME_TIMESTAMP":"2000500999"}"#, &s, None).is_some());
    }

    #[test]
    fn pattern_level_and_smart_case() {
        let s = search();
        let e = r#"{"MESSAGE":"Connection Refused","__REALTIME_TIMESTAMP":"1500000000","PRIORITY":"4"}"#;
        assert!(line(e, &s, Some("connection refused")).is_some());
        assert!(line(e, &s, Some("Connection Refused")).is_some());
        assert!(line(e, &s, Some("connection Refused")).is_none());
        let mut warn = search();
        warn.level = Some(Level::Warn);
        assert!(line(e, &warn, None).is_some());
        warn.level = Some(Level::Error);
        assert!(line(e, &warn, None).is_none());
        warn.level = Some(Level::Info);
        assert!(line(r#"{"MESSAGE":"x","__REALTIME_TIMESTAMP":"1500000000"}"#, &warn, None).is_none());
        assert!(matches!(regex(Some("a(")), Err(LogError::BadPattern(_))));
    }

    #[test]
    fn priorities() {
        let levels: Vec<Option<Level>> = (0..=8).map(level_of_priority).collect();
        use Level::*;
        assert_eq!(
            levels,
            [Some(Fatal), Some(Fatal), Some(Fatal), Some(Error), Some(Warn), Some(Info), Some(Info), Some(Debug), None]
        );
        assert!(Level::ALL.into_iter().all(|l| level_of_priority(max_priority(l)).is_some_and(|p| p >= l)));
    }
}
