//! The `[logs]` section: the services whose logs `/logs` may read, where
//! each one's logs live, and who may read them.
//!
//! ```toml
//! [logs]
//! page = 20              # lines per page (the default of --limit)
//! cap = 5000             # lines at most in one search and in a download
//! default_since = "1h"   # the range when no --since / --from is given
//! max_range = "31d"      # longest range a search may span
//! alert_window = "15m"   # an alert card's Logs button: from this long before its start
//! timeout = "10s"        # per search, unless a service sets its own
//!
//! [logs.services.payments]
//! source = "files"                       # files | journald | loki | elasticsearch
//! paths = ["/var/log/payments/*.log*"]   # globs; rotated (.1) and gzip (.gz) files too
//! timezone = "Asia/Shanghai"             # for timestamps that do not say (default UTC)
//! role = "responder"                     # who may read them (default: anyone allowed in the chat)
//! labels = { service = "payments" }      # alerts with these labels get a Logs button
//!
//! [logs.services.nginx]
//! source = "journald"
//! unit = "nginx.service"
//! directory = "/var/log/journal"         # optional: journal files to read (journalctl -D)
//!
//! [logs.services.api]
//! source = "loki"
//! url = "http://loki:3100"
//! selector = '{app="api", env="prod"}'
//! auth_env = "LOKI_AUTH"                 # the Authorization header's value, from the environment
//! tenant = "ops"                         # X-Scope-OrgID
//! level_label = "level"                  # a label (or parsed field) holding the level
//!
//! [logs.services.search]
//! source = "elasticsearch"               # OpenSearch too
//! url = "https://es:9200"
//! index = "logs-*"
//! timestamp_field = "@timestamp"
//! message_field = "message"
//! level_field = "log.level"
//! filter = 'service.name:"search"'       # query_string ANDed with the user's query
//! auth_env = "ES_AUTH"                   # e.g. "ApiKey …" or "Basic …"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::Role;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    page: Option<usize>,
    cap: Option<usize>,
    default_since: Option<String>,
    max_range: Option<String>,
    alert_window: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    services: BTreeMap<String, RawService>,
}

/// Every backend's keys in one table; `validate` refuses the ones the
/// service's `source` does not use.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    source: String,
    role: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    timeout: Option<String>,
    // files
    paths: Option<Vec<String>>,
    timezone: Option<String>,
    // journald
    unit: Option<String>,
    directory: Option<PathBuf>,
    journalctl: Option<PathBuf>,
    // loki and elasticsearch
    url: Option<String>,
    auth_env: Option<String>,
    // loki
    selector: Option<String>,
    tenant: Option<String>,
    level_label: Option<String>,
    // elasticsearch
    index: Option<String>,
    timestamp_field: Option<String>,
    message_field: Option<String>,
    level_field: Option<String>,
    filter: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub services: BTreeMap<String, ServiceConfig>,
    /// Lines per page when `--limit` is not given.
    pub page: usize,
    /// Lines at most in one search (and so in a download).
    pub cap: usize,
    pub default_since: Duration,
    pub max_range: Duration,
    pub alert_window: Duration,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            services: BTreeMap::new(),
            page: 20,
            cap: 5000,
            default_since: Duration::from_secs(3600),
            max_range: Duration::from_secs(31 * 86400),
            alert_window: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    /// Needed to read this service's logs; `None`: anyone allowed in the chat.
    pub role: Option<Role>,
    /// An alert whose labels include all of these gets a Logs button for this service.
    pub labels: BTreeMap<String, String>,
    /// Longest one search may take.
    pub timeout: Duration,
    pub backend: BackendConfig,
}

#[derive(Debug, Clone)]
pub enum BackendConfig {
    Files(FilesConfig),
    Journald(JournaldConfig),
    Loki(LokiConfig),
    Elastic(ElasticConfig),
}

#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Absolute glob patterns.
    pub paths: Vec<String>,
    /// For timestamps without an offset (syslog, `2026-01-02 03:04:05`).
    pub timezone: jiff::tz::TimeZone,
}

#[derive(Debug, Clone)]
pub struct JournaldConfig {
    pub unit: String,
    /// Read the journal files in this directory instead of the system journal.
    pub directory: Option<PathBuf>,
    /// The program to run (default `journalctl` on the PATH).
    pub journalctl: PathBuf,
}

#[derive(Debug, Clone)]
pub struct LokiConfig {
    /// Up to the host (and a path prefix, if any); `/loki/api/v1/query_range` is appended.
    pub url: String,
    /// The LogQL stream selector, e.g. `{app="api"}`.
    pub selector: String,
    /// The `Authorization` header's value.
    pub auth: Option<String>,
    /// `X-Scope-OrgID`, for multi-tenant Loki.
    pub tenant: Option<String>,
    /// A label or parsed field holding the level; without one, `--level`
    /// filters on the level words in the line.
    pub level_label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ElasticConfig {
    /// Up to the host; `/{index}/_search` is appended.
    pub url: String,
    pub index: String,
    pub timestamp_field: String,
    pub message_field: String,
    pub level_field: Option<String>,
    /// A query_string ANDed with the user's query (e.g. the service's name).
    pub filter: Option<String>,
    /// The `Authorization` header's value.
    pub auth: Option<String>,
}

fn duration(key: &str, value: Option<String>, default: Duration, err: &mut dyn FnMut(String, String)) -> Duration {
    match value {
        None => default,
        Some(v) => match humantime::parse_duration(&v) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                err(key.to_owned(), format!("`{v}` is not a duration; write e.g. 30m"));
                default
            }
        },
    }
}

pub fn validate(
    raw: RawLogs,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    err: &mut dyn FnMut(String, String),
) -> LogsConfig {
    let defaults = LogsConfig::default();
    let page = raw.page.unwrap_or(defaults.page);
    let cap = raw.cap.unwrap_or(defaults.cap);
    if !(1..=200).contains(&page) {
        err("logs.page".into(), "must be between 1 and 200".into());
    }
    if !(1..=100_000).contains(&cap) {
        err("logs.cap".into(), "must be between 1 and 100000".into());
    }
    let timeout = duration("logs.timeout", raw.timeout, Duration::from_secs(10), err);
    let mut config = LogsConfig {
        services: BTreeMap::new(),
        page: page.clamp(1, 200),
        cap: cap.clamp(1, 100_000),
        default_since: duration("logs.default_since", raw.default_since, defaults.default_since, err),
        max_range: duration("logs.max_range", raw.max_range, defaults.max_range, err),
        alert_window: duration("logs.alert_window", raw.alert_window, defaults.alert_window, err),
    };
    for (name, s) in raw.services {
        let key = format!("logs.services.{name}");
        if !valid_name(&name) {
            err(key.clone(), "a service name is lower-case letters, digits, `.`, `_` and `-`".into());
        }
        if let Some(service) = service(&name, &key, s, timeout, base, env, err) {
            config.services.insert(name, service);
        }
    }
    config
}

/// What `/logs SERVICE` accepts.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

fn service(
    name: &str,
    key: &str,
    s: RawService,
    timeout: Duration,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    err: &mut dyn FnMut(String, String),
) -> Option<ServiceConfig> {
    let role = s.role.as_deref().and_then(|r| Role::parse(r).map_err(|m| err(format!("{key}.role"), m)).ok());
    let timeout = duration(&format!("{key}.timeout"), s.timeout.clone(), timeout, err);
    let labels =
        if s.labels.is_empty() { BTreeMap::from([("service".to_owned(), name.to_owned())]) } else { s.labels.clone() };
    // Which keys each source uses; any other one set is a mistake worth reporting.
    let used: &[&str] = match s.source.as_str() {
        "files" => &["paths", "timezone"],
        "journald" => &["unit", "directory", "journalctl"],
        "loki" => &["url", "auth_env", "selector", "tenant", "level_label"],
        "elasticsearch" | "opensearch" => {
            &["url", "auth_env", "index", "timestamp_field", "message_field", "level_field", "filter"]
        }
        other => {
            err(format!("{key}.source"), format!("unknown source `{other}` (files, journald, loki, elasticsearch)"));
            return None;
        }
    };
    let set = [
        ("paths", s.paths.is_some()),
        ("timezone", s.timezone.is_some()),
        ("unit", s.unit.is_some()),
        ("directory", s.directory.is_some()),
        ("journalctl", s.journalctl.is_some()),
        ("url", s.url.is_some()),
        ("auth_env", s.auth_env.is_some()),
        ("selector", s.selector.is_some()),
        ("tenant", s.tenant.is_some()),
        ("level_label", s.level_label.is_some()),
        ("index", s.index.is_some()),
        ("timestamp_field", s.timestamp_field.is_some()),
        ("message_field", s.message_field.is_some()),
        ("level_field", s.level_field.is_some()),
        ("filter", s.filter.is_some()),
    ];
    for (field, present) in set {
        if present && !used.contains(&field) {
            err(format!("{key}.{field}"), format!("not used by source `{}`", s.source));
        }
    }
    let mut required = |field: &str, value: Option<String>| -> String {
        match value.filter(|v| !v.trim().is_empty()) {
            Some(v) => v,
            None => {
                err(format!("{key}.{field}"), format!("source `{}` needs it", s.source));
                String::new()
            }
        }
    };
    let auth = |field: &str, var: Option<String>, err: &mut dyn FnMut(String, String)| {
        var.and_then(|var| {
            let value = env(&var).filter(|v| !v.is_empty());
            if value.is_none() {
                err(format!("{key}.{field}"), format!("environment variable `{var}` is not set"));
            }
            value
        })
    };
    let url = |value: String, err: &mut dyn FnMut(String, String)| {
        let http = value.starts_with("http://") || value.starts_with("https://");
        if !value.is_empty() && !http {
            err(format!("{key}.url"), format!("`{value}` is not an http(s) address"));
        }
        value.trim_end_matches('/').to_owned()
    };
    let backend = match s.source.as_str() {
        "files" => {
            let paths = s.paths.unwrap_or_default();
            if paths.is_empty() {
                err(format!("{key}.paths"), "source `files` needs at least one glob".into());
            }
            let paths = paths
                .into_iter()
                .map(|p| {
                    let path = PathBuf::from(&p);
                    let path = if path.is_absolute() { path } else { base.join(path) };
                    let glob = path.display().to_string();
                    if let Err(e) = globset::Glob::new(&glob) {
                        err(format!("{key}.paths"), format!("`{p}`: {e}"));
                    }
                    glob
                })
                .collect();
            let timezone = match s.timezone.as_deref() {
                None => jiff::tz::TimeZone::UTC,
                Some(tz) => jiff::tz::TimeZone::get(tz).unwrap_or_else(|e| {
                    err(format!("{key}.timezone"), format!("`{tz}`: {e}"));
                    jiff::tz::TimeZone::UTC
                }),
            };
            BackendConfig::Files(FilesConfig { paths, timezone })
        }
        "journald" => BackendConfig::Journald(JournaldConfig {
            unit: required("unit", s.unit),
            directory: s.directory.map(|d| if d.is_absolute() { d } else { base.join(d) }),
            journalctl: s.journalctl.unwrap_or_else(|| PathBuf::from("journalctl")),
        }),
        "loki" => {
            let url_value = required("url", s.url);
            let selector = required("selector", s.selector);
            let braced = selector.trim_start().starts_with('{') && selector.trim_end().ends_with('}');
            if !selector.is_empty() && !braced {
                err(
                    format!("{key}.selector"),
                    format!("`{selector}` is not a LogQL stream selector like {{app=\"api\"}}"),
                );
            }
            BackendConfig::Loki(LokiConfig {
                url: url(url_value, err),
                selector,
                auth: auth("auth_env", s.auth_env, err),
                tenant: s.tenant,
                level_label: s.level_label,
            })
        }
        _ => {
            let url_value = required("url", s.url);
            let index = required("index", s.index);
            BackendConfig::Elastic(ElasticConfig {
                url: url(url_value, err),
                index,
                timestamp_field: s.timestamp_field.unwrap_or_else(|| "@timestamp".into()),
                message_field: s.message_field.unwrap_or_else(|| "message".into()),
                level_field: s.level_field,
                filter: s.filter,
                auth: auth("auth_env", s.auth_env, err),
            })
        }
    };
    Some(ServiceConfig { name: name.to_owned(), role, labels, timeout, backend })
}
