//! Log search: one [`LogSource`] per configured service, asked for the newest
//! lines that match a [`Search`] (a pattern, a time range, a minimum level,
//! a count). Backends: `files` (globs over plain, rotated and gzip files,
//! searched with ripgrep's crates), `journald` (journalctl's JSON output),
//! `loki` (query_range) and `elasticsearch` / OpenSearch (`_search`).
//!
//! Every backend bounds its work by the search's `limit` and its configured
//! timeout, and reports failures as a typed [`LogError`] that the handler
//! turns into a sentence for the chat. Lines come back newest first, with
//! their timestamp when one could be read; redaction happens in the handler,
//! once, for every backend alike.

pub mod config;
pub mod elastic;
pub mod files;
pub mod journald;
pub mod line;
pub mod loki;
pub mod range;
mod remote;
pub mod service;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Severity, in increasing order; a search for `Warn` also returns errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    pub const ALL: [Level; 6] = [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error, Level::Fatal];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// The names `/logs --level` accepts.
    pub fn parse(s: &str) -> Option<Level> {
        Self::ALL.into_iter().find(|l| l.as_str().eq_ignore_ascii_case(s))
    }

    /// This level and every more severe one.
    pub fn and_above(self) -> impl Iterator<Item = Level> {
        Self::ALL.into_iter().filter(move |l| *l >= self)
    }

    /// The names a level goes by in labels and fields, lower-case.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Level::Trace => &["trace"],
            Level::Debug => &["debug"],
            Level::Info => &["info", "information", "informational", "notice"],
            Level::Warn => &["warn", "warning"],
            Level::Error => &["error", "err", "severe"],
            Level::Fatal => &["fatal", "critical", "crit", "panic", "emerg", "emergency", "alert"],
        }
    }

    /// Every name of `level` and the levels more severe.
    pub fn names_at_and_above(self) -> Vec<&'static str> {
        self.and_above().flat_map(Level::aliases).copied().collect()
    }

    /// The level a label or field value names, in any case.
    pub fn named(value: &str) -> Option<Level> {
        let value = value.trim();
        Level::ALL.into_iter().find(|l| l.aliases().iter().any(|a| a.eq_ignore_ascii_case(value)))
    }
}

/// One log line as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When it was written (ms since the epoch), when the line (or the
    /// backend) says.
    pub ts_ms: Option<i64>,
    pub level: Option<Level>,
    /// The line as written, without its line ending, lossily decoded as UTF-8.
    pub text: String,
    /// Where it came from: a file name, a unit, a stream's labels, an index.
    pub origin: Option<String>,
}

/// What to look for. The range is absolute (fixed when the user asked), so
/// the next page of the same search reads the same lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// The user's query in the backend's language: a regular expression for
    /// files and journald (case-insensitive unless it has an upper-case
    /// letter), a LogQL line filter regex for Loki, a query_string query for
    /// Elasticsearch. `None`: every line.
    pub pattern: Option<String>,
    /// Inclusive start, ms since the epoch.
    pub from_ms: i64,
    /// Inclusive end, ms since the epoch.
    pub to_ms: i64,
    /// Only lines of this level or a more severe one.
    pub level: Option<Level>,
    /// At most this many lines, the newest.
    pub limit: usize,
}

/// What a backend found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Newest first, at most `Search::limit`.
    pub lines: Vec<LogLine>,
    /// More lines matched than `limit` (or the backend's own cap stopped it).
    pub truncated: bool,
    /// Things the user should know that did not stop the search, e.g. a
    /// binary or unreadable file that was skipped. Each was logged once.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The user's pattern is not a valid regular expression (files, journald).
    #[error("invalid pattern: {0}")]
    BadPattern(String),
    /// The backend refused the query (Loki's or Elasticsearch's parse error, a 400).
    #[error("the query was refused: {0}")]
    BadQuery(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, DNS, TLS, or a 5xx.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// 401 / 403 from the backend.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// The backend answered something that is not its API's shape.
    #[error("unexpected answer: {0}")]
    Garbage(String),
    /// Local trouble: no file matches, journalctl missing, an IO error.
    #[error("{0}")]
    Unavailable(String),
}

/// A service's logs, wherever they live.
#[async_trait]
pub trait LogSource: Send + Sync + 'static {
    /// `files`, `journald`, `loki` or `elasticsearch`, for messages and metrics.
    fn kind(&self) -> &'static str;

    /// The newest lines matching `search`, within the backend's timeout.
    async fn search(&self, search: &Search) -> Result<Found, LogError>;
}

/// Smart case, as ripgrep's `-S`: a pattern with no upper-case letter
/// ignores case. Escapes (`\S`, `\W`, `\p{Lu}`) are not letters of the text.
pub fn ignores_case(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some('p' | 'P') = chars.next()
                    && chars.clone().next() == Some('{')
                {
                    chars.by_ref().find(|&c| c == '}');
                }
            }
            c if c.is_uppercase() => return false,
            _ => {}
        }
    }
    true
}

/// `text` cut to `max` characters, with `…` where it was cut: for lines a
/// backend keeps and lines a card shows.
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_and_aliases() {
        assert_eq!(Level::named("WARNING"), Some(Level::Warn));
        assert_eq!(Level::named(" crit "), Some(Level::Fatal));
        assert_eq!(Level::named("unknown"), None);
        assert_eq!(Level::Warn.names_at_and_above()[..3], ["warn", "warning", "error"]);
    }
}
