//! [`Logs`]: what handlers and the alert cards use. It holds each configured
//! service's [`LogSource`], runs a [`LogQuery`] page by page (every page reads
//! the same absolute range again, so More shows the next older lines), masks
//! secrets in every line shown or downloaded, and renders the whole capped
//! excerpt as a text file for the Download button.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::{BackendConfig, LogsConfig, ServiceConfig};
use super::{Found, Level, LogError, LogLine, LogSource, Search};
use crate::metrics as m;
use crate::ops::redact::Redactor;

/// A search as a button remembers it: the range is absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    pub service: String,
    pub pattern: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub level: Option<Level>,
    /// Lines per page.
    pub page: usize,
}

/// Longest line on a card; the download has them whole (up to the backend's cut).
const SHOWN_LINE_CHARS: usize = 300;
/// Characters of lines on one card: Telegram's message limit is 4096, and the
/// card has a title, a footer and buttons besides.
const PAGE_CHARS: usize = 3000;
/// The largest download, whatever `logs.cap` allows (Telegram's bot upload
/// limit is 50 MB, Feishu's 30 MB; a chat is not the place for more).
const EXCERPT_BYTES: usize = 8 << 20;

/// One page of lines for a card, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Each line as shown: its time when the backend gives it apart from the
    /// text, then the text, secrets masked and cut to [`SHOWN_LINE_CHARS`].
    pub lines: Vec<String>,
    /// Index of the first line shown, within the whole search.
    pub offset: usize,
    /// Where the next page starts, when there are older lines.
    pub next: Option<usize>,
    pub notes: Vec<String>,
}

/// The whole capped search as a text file, oldest line first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    pub name: String,
    pub text: String,
    pub lines: usize,
    /// The cap (lines or bytes) stopped it.
    pub truncated: bool,
}

pub struct Logs {
    config: LogsConfig,
    sources: BTreeMap<String, Arc<dyn LogSource>>,
    redactor: Redactor,
}

impl Logs {
    /// Builds every service's backend. `secrets`: values to mask besides the
    /// usual credential shapes (the backends' own auth headers are added).
    pub fn new(config: LogsConfig, http: reqwest::Client, secrets: Vec<String>) -> Self {
        let mut values = secrets;
        let mut sources: BTreeMap<String, Arc<dyn LogSource>> = BTreeMap::new();
        for (name, service) in &config.services {
            let timeout = service.timeout;
            let source: Arc<dyn LogSource> = match service.backend.clone() {
                BackendConfig::Files(c) => Arc::new(super::files::Files::new(c, timeout)),
                BackendConfig::Journald(c) => Arc::new(super::journald::Journald::new(c, timeout)),
                BackendConfig::Loki(c) => {
                    values.extend(c.auth.clone());
                    Arc::new(super::loki::Loki::new(c, timeout, http.clone()))
                }
                BackendConfig::Elastic(c) => {
                    values.extend(c.auth.clone());
                    Arc::new(super::elastic::Elastic::new(c, timeout, http.clone()))
                }
            };
            sources.insert(name.clone(), source);
        }
        // An auth header is "Bearer xyz": mask the credential on its own too.
        let parts: Vec<String> =
            values.iter().filter_map(|v| v.split_once(' ').map(|(_, cred)| cred.to_owned())).collect();
        values.extend(parts);
        Self { config, sources, redactor: Redactor::new(values) }
    }

    pub fn config(&self) -> &LogsConfig {
        &self.config
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.config.services.get(name)
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceConfig> {
        self.config.services.values()
    }

    /// The backend kind of a configured service.
    pub fn kind(&self, service: &str) -> Option<&'static str> {
        self.sources.get(service).map(|s| s.kind())
    }

    /// The first service (by name) whose `labels` all appear in `labels`.
    pub fn for_labels(&self, labels: &BTreeMap<String, String>) -> Option<&ServiceConfig> {
        self.services().find(|s| s.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// The lines of `query` from `offset` on, one card's worth.
    pub async fn page(&self, query: &LogQuery, offset: usize) -> Result<Page, LogError> {
        let want = (offset + query.page).min(self.config.cap);
        let found = self.search(query, want).await?;
        let files = self.kind(&query.service) == Some("files");
        let mut lines = Vec::new();
        let mut chars = 0;
        for line in found.lines.iter().skip(offset).take(query.page) {
            let shown = self.shown(line, files);
            chars += shown.chars().count() + 1;
            // Always one line, however long; then as many as fit.
            if !lines.is_empty() && chars > PAGE_CHARS {
                break;
            }
            lines.push(shown);
        }
        let end = offset + lines.len();
        let older = end < found.lines.len() || found.truncated;
        let next = (older && end < self.config.cap && !lines.is_empty()).then_some(end);
        Ok(Page { lines, offset, next, notes: found.notes })
    }

    /// The whole search, up to `logs.cap` lines, as a file.
    pub async fn excerpt(&self, query: &LogQuery, now_ms: i64) -> Result<Excerpt, LogError> {
        let found = self.search(query, self.config.cap).await?;
        let mut body = String::new();
        let mut lines = 0;
        let mut truncated = found.truncated;
        // A file reads oldest first; the cap keeps the newest lines.
        for line in found.lines.iter().rev() {
            let text = self.redactor.redact(&line.text);
            let time = line.ts_ms.map(crate::clock::format_ms_precise).unwrap_or_else(|| "-".to_owned());
            let origin = line.origin.as_deref().unwrap_or("-");
            let entry = format!("{time} {origin} {text}\n");
            if body.len() + entry.len() > EXCERPT_BYTES {
                truncated = true;
                break;
            }
            body.push_str(&entry);
            lines += 1;
        }
        let mut header = format!(
            "# opsclaw /logs {}{} from {} to {}{} — {} lines, oldest first{}\n",
            query.service,
            query.pattern.as_deref().map(|p| format!(" {p:?}")).unwrap_or_default(),
            crate::clock::format_ms(query.from_ms),
            crate::clock::format_ms(query.to_ms),
            query.level.map(|l| format!(", level ≥ {}", l.as_str())).unwrap_or_default(),
            lines,
            if truncated { " (capped: older lines left out)" } else { "" },
        );
        for note in &found.notes {
            header.push_str(&format!("# {note}\n"));
        }
        header.push_str(&format!("# written {}\n", crate::clock::format_ms(now_ms)));
        let stamp = crate::clock::format_ms(query.to_ms).replace([':', '-'], "");
        let name = format!("{}-logs-{}.txt", query.service, stamp.trim_end_matches('Z'));
        Ok(Excerpt { name, text: header + &body, lines, truncated })
    }

    async fn search(&self, query: &LogQuery, limit: usize) -> Result<Found, LogError> {
        let source = self
            .sources
            .get(&query.service)
            .ok_or_else(|| LogError::Unavailable(format!("service `{}` is not configured", query.service)))?;
        let search = Search {
            pattern: query.pattern.clone(),
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            level: query.level,
            limit: limit.max(1),
        };
        let started = Instant::now();
        let result = source.search(&search).await;
        let kind = source.kind();
        metrics::histogram!(m::LOG_SEARCH_SECONDS, "source" => kind).record(started.elapsed().as_secs_f64());
        match &result {
            Ok(found) => tracing::info!(
                service = query.service,
                source = kind,
                lines = found.lines.len(),
                truncated = found.truncated,
                ms = started.elapsed().as_millis() as u64,
                "log search"
            ),
            Err(e) => {
                metrics::counter!(m::LOG_SEARCH_ERRORS, "source" => kind).increment(1);
                tracing::warn!(service = query.service, source = kind, error = %e, "log search failed");
            }
        }
        result
    }

    fn shown(&self, line: &LogLine, files: bool) -> String {
        let text = self.redactor.redact(&line.text);
        let text = super::cut(text.into_owned(), SHOWN_LINE_CHARS);
        // A file's line carries its own timestamp; other backends give it apart.
        match line.ts_ms {
            Some(ts) if !files => format!("{} {text}", crate::clock::format_ms(ts)),
            _ => text,
        }
    }
}
