//! The `loki` backend: one `GET /loki/api/v1/query_range` per search, the
//! LogQL built from the service's stream selector, the user's pattern as a
//! line filter regex, and the level as a label filter (or, without a level
//! label, a line filter on the level words).
//!

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::config::LokiConfig;
use super::remote::{exchange, first_line, status_error};
use super::{Found, Level, LogError, LogLine, LogSource, Search, line};

/// Loki's default `max_entries_limit_per_query`: asking for more is a 400,
/// so a search for this many lines or more asks for exactly this many.
const MAX_ENTRIES: usize = 5000;

/// A service whose logs are in Loki, under the configured stream selector.
pub struct Loki {
    config: LokiConfig,
    timeout: Duration,
    http: reqwest::Client,
}

impl Loki {
    /// A backend that asks the Loki at `config.url`, each search bounded by `timeout`.
    pub fn new(config: LokiConfig, timeout: Duration, http: reqwest::Client) -> Self {
        Self { config, timeout, http }
    }

    async fn query(&self, search: &Search) -> Result<Found, LogError> {
        let asked = (search.limit + 1).min(MAX_ENTRIES);
        let query =
            logql(&self.config.selector, search.pattern.as_deref(), search.level, self.config.level_label.as_deref());
        let (start, end) = range_ns(search.from_ms, search.to_ms);
        let mut request = self.http.get(format!("{}/loki/api/v1/query_range", self.config.url)).query(&[
            ("query", query),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("limit", asked.to_string()),
            ("direction", "backward".to_owned()),
        ]);
        if let Some(auth) = &self.config.auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some(tenant) = &self.config.tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        let (status, body) = exchange(request, self.timeout).await?;
        if !status.is_success() {
            let reason = first_line(&body);
            return Err(if status == StatusCode::BAD_REQUEST {
                LogError::BadQuery(reason.unwrap_or_else(|| "HTTP 400".into()))
            } else {
                status_error(status, reason)
            });
        }
        let mut entries = entries(&body, &self.level_labels())?;
        // Loki's limit is over all streams, but each stream comes in its own
        // order: the merge is by time across them.
        entries.sort_by_key(|e| std::cmp::Reverse(e.ns));
        let truncated = entries.len() > search.limit || (asked <= search.limit && entries.len() >= asked);
        entries.truncate(search.limit);
        let lines = entries.into_iter().map(Entry::into_line).collect();
        Ok(Found { lines, truncated, notes: Vec::new() })
    }

    /// The labels that may hold a line's level: the configured one, else the
    /// names Loki and its agents use.
    fn level_labels(&self) -> Vec<&str> {
        match &self.config.level_label {
            Some(label) => vec![label.as_str()],
            None => vec!["level", "detected_level"],
        }
    }
}

#[async_trait]
impl LogSource for Loki {
    fn kind(&self) -> &'static str {
        "loki"
    }

    async fn search(&self, search: &Search) -> Result<Found, LogError> {
        tokio::time::timeout(self.timeout, self.query(search)).await.map_err(|_| LogError::Timeout(self.timeout))?
    }
}

/// The LogQL for a search: the selector, the user's pattern as a line
/// filter regex (smart case), then the level filter.
fn logql(selector: &str, pattern: Option<&str>, level: Option<Level>, level_label: Option<&str>) -> String {
    let mut query = selector.trim().to_owned();
    if let Some(pattern) = pattern.filter(|p| !p.trim().is_empty()) {
        let regex = if super::ignores_case(pattern) { format!("(?i){pattern}") } else { pattern.to_owned() };
        query.push_str(" |~ ");
        query.push_str(&quote(&regex));
    }
    if let Some(level) = level {
        let names = level.names_at_and_above().join("|");
        match level_label {
            // Label matchers are anchored, so the alternatives match whole values.
            Some(label) => query.push_str(&format!(" | {label}=~{}", quote(&format!("(?i)({names})")))),
            None => query.push_str(&format!(" |~ {}", quote(&format!(r"(?i)\b({names})\b")))),
        }
    }
    query
}

/// A LogQL string literal: a backtick raw string when that can say it
/// (no backtick; no control character, as Go drops `\r` from raw strings),
/// else a double-quoted one with Go's escapes.
fn quote(s: &str) -> String {
    if !s.contains('`') && !s.chars().any(char::is_control) {
        return format!("`{s}`");
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `start` and `end` in ns. Loki's `end` is exclusive; the search's `to_ms`
/// is inclusive, so the whole of that millisecond is in.
fn range_ns(from_ms: i64, to_ms: i64) -> (i64, i64) {
    (from_ms.saturating_mul(1_000_000), to_ms.saturating_add(1).saturating_mul(1_000_000))
}

#[derive(Deserialize)]
struct QueryResponse {
    status: String,
    data: Option<QueryData>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Stream>,
}

#[derive(Deserialize)]
struct Stream {
    stream: BTreeMap<String, String>,
    values: Vec<Value>,
}

/// One line of a stream, with what the stream says about it.
struct Entry {
    ns: i64,
    text: String,
    level: Option<Level>,
    origin: String,
}

impl Entry {
    fn into_line(self) -> LogLine {
        LogLine {
            ts_ms: Some(self.ns.div_euclid(1_000_000)),
            level: self.level.or_else(|| line::level_of(&self.text)),
            text: self.text,
            origin: Some(self.origin),
        }
    }
}

/// Every line of a `streams` answer, in the order given.
fn entries(body: &[u8], level_labels: &[&str]) -> Result<Vec<Entry>, LogError> {
    let response: QueryResponse =
        serde_json::from_slice(body).map_err(|e| LogError::Garbage(format!("not a Loki answer: {e}")))?;
    if response.status != "success" {
        let error = response.error.unwrap_or_default();
        return Err(LogError::Garbage(format!("Loki answered status `{}` {error}", response.status)));
    }
    let data = response.data.ok_or_else(|| LogError::Garbage("Loki's answer has no data".into()))?;
    if data.result_type != "streams" {
        return Err(LogError::Garbage(format!("Loki answered `{}`, not streams", data.result_type)));
    }
    let mut entries = Vec::new();
    for stream in data.result {
        let origin = render_labels(&stream.stream);
        let stream_level = level_labels.iter().find_map(|l| stream.stream.get(*l)).and_then(|v| Level::named(v));
        for value in stream.values {
            let (ns, text, metadata) = value_parts(&value)?;
            let level = stream_level.or_else(|| metadata.and_then(|m| metadata_level(m, level_labels)));
            entries.push(Entry { ns, text: text.to_owned(), level, origin: origin.clone() });
        }
    }
    Ok(entries)
}

/// `["<ns>", "<line>"]`, or with a third element: the line's structured
/// metadata (and parsed labels), when Loki is asked to categorize labels.
fn value_parts(value: &Value) -> Result<(i64, &str, Option<&Value>), LogError> {
    let garbage = || {
        let shown: String = value.to_string().chars().take(80).collect();
        LogError::Garbage(format!("a Loki value is not [\"<ns>\", \"<line>\"]: {shown}"))
    };
    let parts = value.as_array().filter(|a| (2..=3).contains(&a.len())).ok_or_else(garbage)?;
    let ns = parts[0].as_str().and_then(|s| s.parse().ok()).ok_or_else(garbage)?;
    let text = parts[1].as_str().ok_or_else(garbage)?;
    Ok((ns, text, parts.get(2)))
}

fn metadata_level(metadata: &Value, labels: &[&str]) -> Option<Level> {
    ["structuredMetadata", "parsed"]
        .iter()
        .filter_map(|group| metadata.get(group))
        .find_map(|group| labels.iter().find_map(|l| group.get(l)?.as_str()))
        .and_then(Level::named)
}

/// `{app="api", pod="x"}`, in label order, values quoted as LogQL does.
fn render_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> =
        labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', r"\\").replace('"', "\\\""))).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_alone_without_pattern_or_level() {
        assert_eq!(logql(r#" {app="api"} "#, None, None, None), r#"{app="api"}"#);
        assert_eq!(logql(r#"{app="api"}"#, Some("  "), None, None), r#"{app="api"}"#);
    }

    #[test]
    fn pattern_is_a_smart_case_regex_line_filter() {
        assert_eq!(logql(r#"{app="api"}"#, Some("timeout"), None, None), r#"{app="api"} |~ `(?i)timeout`"#);
        assert_eq!(logql(r#"{app="api"}"#, Some("Timeout"), None, None), r#"{app="api"} |~ `Timeout`"#);
    }

    #[test]
    fn level_with_a_label_is_an_anchored_label_filter() {
        assert_eq!(
            logql(r#"{app="api"}"#, Some("db"), Some(Level::Error), Some("level")),
            r#"{app="api"} |~ `(?i)db` | level=~`(?i)(error|err|severe|fatal|critical|crit|panic|emerg|emergency|alert)`"#
        );
    }

    #[test]
    fn level_without_a_label_filters_on_the_words() {
        assert_eq!(
            logql(r#"{app="api"}"#, None, Some(Level::Fatal), None),
            r#"{app="api"} |~ `(?i)\b(fatal|critical|crit|panic|emerg|emergency|alert)\b`"#
        );
    }

    #[test]
    fn quoting_prefers_raw_strings() {
        assert_eq!(quote(r#"a\d+"b"#), r#"`a\d+"b`"#);
    }

    #[test]
    fn quoting_escapes_when_a_backtick_or_control_char_is_in() {
        assert_eq!(quote(r#"`a\d"b`"#), r#""`a\\d\"b`""#);
        assert_eq!(quote("a\r\nb\u{1}"), r#""a\r\nb\u0001""#);
    }

    #[test]
    fn end_covers_the_whole_last_millisecond() {
        assert_eq!(range_ns(1, 2), (1_000_000, 3_000_000));
        assert_eq!(range_ns(i64::MIN, i64::MAX), (i64::MIN, i64::MAX));
    }

    #[test]
    fn streams_merge_with_levels_from_labels_or_metadata() {
        let body = serde_json::json!({
            "status": "success",
            "data": { "resultType": "streams", "result": [
                { "stream": { "pod": "b", "app": "api", "level": "warn" }, "values": [["3000000", "three"]] },
                { "stream": { "app": "api" }, "values": [
                    ["5000000", "five", { "structuredMetadata": { "level": "ERROR" } }],
                    ["1999999", "one"],
                ] },
            ] },
            "stats": {},
        });
        let entries = entries(body.to_string().as_bytes(), &["level"]).unwrap();
        let got: Vec<_> = entries.into_iter().map(Entry::into_line).collect();
        assert_eq!(got[0].origin.as_deref(), Some(r#"{app="api", level="warn", pod="b"}"#));
        assert_eq!(got[0].level, Some(Level::Warn));
        assert_eq!(got[1].level, Some(Level::Error));
        assert_eq!(got[2].ts_ms, Some(1));
    }

    #[test]
    fn other_shapes_are_garbage() {
        for body in [
            "<html>",
            r#"{"status":"error","error":"boom"}"#,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"streams","result":[{"stream":{},"values":[["x","y"]]}]}}"#,
            r#"{"status":"success","data":{"resultType":"streams","result":[{"stream":{},"values":[["1"]]}]}}"#,
        ] {
            assert!(matches!(entries(body.as_bytes(), &[]), Err(LogError::Garbage(_))), "{body}");
        }
    }
}
