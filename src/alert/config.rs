//! The `[alerts]` config section: intake sources with their authentication,
//! the Alertmanager to silence through, and routing rules.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use super::model::Severity;
use super::oncall::{Override, Rotation, Schedule};
use super::route::{Matcher, Route, TimeWindow};
use super::source::SourceKind;
use crate::policy::ChatPattern;
use crate::store::StormLimit;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    alertmanager: Option<RawAlertmanager>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    shown_alerts: Option<usize>,
    #[serde(default)]
    storm: RawStorm,
    #[serde(default)]
    oncall: Vec<RawSchedule>,
    #[serde(default)]
    policy: BTreeMap<String, RawPolicy>,
    retention: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: String,
    rotation: String,
    people: Vec<String>,
    handover: String,
    timezone: Option<String>,
    #[serde(default)]
    overrides: Vec<RawOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    person: String,
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    schedule: Option<String>,
    #[serde(default)]
    mention_oncall: bool,
    #[serde(default)]
    escalate: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorm {
    max_cards_per_chat: Option<i64>,
    window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    auth: String,
    token_env: Option<String>,
    hmac_secret_env: Option<String>,
    hmac_header: Option<String>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    group_by: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    url: String,
    token_env: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default, rename = "match")]
    matchers: Vec<String>,
    chats: Vec<String>,
    #[serde(default)]
    days: Vec<String>,
    hours: Option<String>,
    timezone: Option<String>,
    #[serde(default, rename = "continue")]
    continue_matching: bool,
}

/// A local date-time such as `2026-01-05T09:00`, or an error under `key`.
fn local(key: &str, value: &str, err: &mut dyn FnMut(String, String)) -> Option<DateTime> {
    value
        .parse::<DateTime>()
        .map_err(|e| err(key.to_owned(), format!("`{value}` is not a local date-time like 2026-01-05T09:00 ({e})")))
        .ok()
}

fn yes() -> bool {
    true
}

/// How a webhook proves it comes from the source.
#[derive(Clone, PartialEq, Eq)]
pub enum HookAuth {
    /// Only allowed when the HTTP server listens on loopback.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// Hex HMAC-SHA256 of the raw body in `header` (optionally prefixed `sha256=`).
    Hmac { secret: String, header: String },
}

impl std::fmt::Debug for HookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Bearer(_) => f.write_str("Bearer(***)"),
            Self::Hmac { header, .. } => write!(f, "Hmac({header}, ***)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub auth: HookAuth,
    pub max_body_bytes: usize,
    /// Labels to group by instead of the source's own group key.
    pub group_by: Vec<String>,
}

#[derive(Clone)]
pub struct AlertmanagerConfig {
    pub url: String,
    pub token: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for AlertmanagerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerConfig").field("url", &self.url).field("timeout", &self.timeout).finish()
    }
}

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub sources: HashMap<SourceKind, SourceConfig>,
    pub alertmanager: Option<AlertmanagerConfig>,
    pub routes: Vec<Route>,
    /// Alerts listed on a group's card; the rest are counted.
    pub shown_alerts: usize,
    /// New group cards a chat gets per window; more groups go to its digest card.
    pub storm: StormLimit,
    pub oncall: Vec<Schedule>,
    /// What a group of each severity does beyond its card; severities without one only get the card.
    pub policies: HashMap<Severity, Policy>,
    /// How long a resolved group (its alerts and history) is kept.
    pub retention: Duration,
}

/// The notification policy of a severity.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The on-call schedule (an index into `AlertsConfig::oncall`).
    pub schedule: usize,
    /// Mention who is on call when the group starts firing.
    pub mention_oncall: bool,
    /// Delays after the group started firing: at the first, the on-call is
    /// mentioned again; at each later one, the next person in the schedule.
    pub escalate: Vec<Duration>,
}

impl AlertsConfig {
    pub fn policy(&self, severity: Severity) -> Option<&Policy> {
        self.policies.get(&severity)
    }
}

pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// Validates `raw`; every problem goes to `err` with its key below `alerts.`.
/// `None` when the section is disabled.
pub fn validate(
    raw: RawAlerts,
    principals: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    err: &mut dyn FnMut(String, String),
) -> Option<AlertsConfig> {
    if !raw.enabled {
        return None;
    }
    let mut sources = HashMap::new();
    for (name, source) in raw.sources {
        let key = format!("alerts.sources.{name}");
        let kind = match name.as_str() {
            "alertmanager" => SourceKind::Alertmanager,
            "grafana" => SourceKind::Grafana,
            "generic" => SourceKind::Generic,
            other => {
                err(key, format!("unknown source `{other}` (alertmanager, grafana, generic)"));
                continue;
            }
        };
        let mut secret = |field: &str, var: &Option<String>| -> Option<String> {
            let Some(var) = var else {
                err(format!("{key}.{field}"), "required for this auth".into());
                return None;
            };
            let value = env(var).filter(|v| !v.is_empty());
            if value.is_none() {
                err(format!("{key}.{field}"), format!("environment variable `{var}` is not set"));
            }
            value
        };
        let auth = match source.auth.as_str() {
            "none" => HookAuth::None,
            "bearer" => HookAuth::Bearer(secret("token_env", &source.token_env).unwrap_or_default()),
            "hmac" => HookAuth::Hmac {
                secret: secret("hmac_secret_env", &source.hmac_secret_env).unwrap_or_default(),
                header: source.hmac_header.unwrap_or_else(|| "X-Opsclaw-Signature".into()),
            },
            other => {
                err(format!("{key}.auth"), format!("unknown auth `{other}` (bearer, hmac, none)"));
                HookAuth::None
            }
        };
        let max_body_bytes = source.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if max_body_bytes == 0 {
            err(format!("{key}.max_body_bytes"), "must be greater than 0".into());
        }
        sources.insert(kind, SourceConfig { auth, max_body_bytes, group_by: source.group_by });
    }
    let alertmanager = raw.alertmanager.map(|am| {
        if !(am.url.starts_with("http://") || am.url.starts_with("https://")) {
            err("alerts.alertmanager.url".into(), format!("`{}` must be an http:// or https:// URL", am.url));
        }
        let token = am.token_env.as_ref().and_then(|var| {
            let value = env(var).filter(|v| !v.is_empty());
            if value.is_none() {
                err("alerts.alertmanager.token_env".into(), format!("environment variable `{var}` is not set"));
            }
            value
        });
        let timeout = match am.timeout.as_deref().map(humantime::parse_duration) {
            None => Duration::from_secs(5),
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                err("alerts.alertmanager.timeout".into(), format!("not a duration ({e})"));
                Duration::from_secs(5)
            }
        };
        AlertmanagerConfig { url: am.url, token, timeout }
    });
    let mut routes = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let key = format!("alerts.routes[{i}]");
        let matchers: Vec<Matcher> = r
            .matchers
            .iter()
            .filter_map(|m| Matcher::parse(m).map_err(|e| err(format!("{key}.match"), e)).ok())
            .collect();
        let mut chats = Vec::new();
        for c in &r.chats {
            match ChatPattern::parse(c) {
                Ok(ChatPattern::Exact(chat)) => chats.push(chat),
                Ok(ChatPattern::AnyOn(_)) => err(format!("{key}.chats"), format!("`{c}`: a route names exact chats")),
                Err(e) => err(format!("{key}.chats"), e),
            }
        }
        if chats.is_empty() {
            err(format!("{key}.chats"), "a route needs at least one chat".into());
        }
        let window = if r.days.is_empty() && r.hours.is_none() && r.timezone.is_none() {
            None
        } else {
            TimeWindow::parse(&r.days, r.hours.as_deref(), r.timezone.as_deref())
                .map_err(|e| err(format!("{key}.days/hours/timezone"), e))
                .ok()
        };
        routes.push(Route { matchers, window, chats, continue_matching: r.continue_matching });
    }
    let shown_alerts = raw.shown_alerts.unwrap_or(5).clamp(1, 50);
    let max_cards = raw.storm.max_cards_per_chat.unwrap_or(10);
    if max_cards < 1 {
        err("alerts.storm.max_cards_per_chat".into(), "must be at least 1".into());
    }
    let window = match raw.storm.window.as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(60),
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            err("alerts.storm.window".into(), "must be longer than 0s".into());
            Duration::from_secs(60)
        }
        Some(Err(e)) => {
            err("alerts.storm.window".into(), format!("not a duration ({e})"));
            Duration::from_secs(60)
        }
    };
    let storm = StormLimit { max_cards, window_ms: window.as_millis() as i64 };
    let mut oncall: Vec<Schedule> = Vec::new();
    for (i, raw) in raw.oncall.into_iter().enumerate() {
        let key = format!("alerts.oncall[{i}]");
        if oncall.iter().any(|s| s.name == raw.name) {
            err(format!("{key}.name"), format!("duplicate schedule name `{}`", raw.name));
        }
        let rotation = match raw.rotation.as_str() {
            "daily" => Rotation::Daily,
            "weekly" => Rotation::Weekly,
            other => {
                err(format!("{key}.rotation"), format!("unknown rotation `{other}` (daily, weekly)"));
                Rotation::Weekly
            }
        };
        if raw.people.is_empty() {
            err(format!("{key}.people"), "a schedule needs at least one person".into());
        }
        let named = raw
            .people
            .iter()
            .map(|p| ("people", p))
            .chain(raw.overrides.iter().map(|o| ("overrides.person", &o.person)));
        for (field, person) in named {
            if !principals.iter().any(|p| p == person) {
                err(format!("{key}.{field}"), format!("`{person}` is not a name in [[principals]]"));
            }
        }
        let tz = match raw.timezone.as_deref().map(TimeZone::get) {
            None => TimeZone::UTC,
            Some(Ok(tz)) => tz,
            Some(Err(e)) => {
                err(format!("{key}.timezone"), format!("unknown time zone: {e}"));
                TimeZone::UTC
            }
        };
        let handover = local(&format!("{key}.handover"), &raw.handover, err).unwrap_or_default();
        let mut overrides = Vec::new();
        for (j, o) in raw.overrides.iter().enumerate() {
            let at = |t: DateTime| t.to_zoned(tz.clone()).map(|z| z.timestamp()).ok();
            let from = local(&format!("{key}.overrides[{j}].from"), &o.from, err).and_then(at);
            let to = local(&format!("{key}.overrides[{j}].to"), &o.to, err).and_then(at);
            match (from, to) {
                (Some(from), Some(to)) if from < to => overrides.push(Override { person: o.person.clone(), from, to }),
                (Some(_), Some(_)) => err(format!("{key}.overrides[{j}]"), "`from` must be before `to`".into()),
                _ => {}
            }
        }
        oncall.push(Schedule { name: raw.name, rotation, people: raw.people, handover, tz, overrides });
    }
    let mut policies = HashMap::new();
    for (name, raw) in raw.policy {
        let key = format!("alerts.policy.{name}");
        let Some(severity) = Severity::parse(&name) else {
            err(key, "unknown severity (critical, warning, info, none)".into());
            continue;
        };
        let schedule = match raw.schedule.as_deref() {
            Some(name) => oncall.iter().position(|s| s.name == name).or_else(|| {
                err(format!("{key}.schedule"), format!("no [[alerts.oncall]] schedule is named `{name}`"));
                None
            }),
            None => {
                err(format!("{key}.schedule"), "a policy names the on-call schedule it mentions".into());
                None
            }
        };
        let mut escalate = Vec::new();
        for value in &raw.escalate {
            match humantime::parse_duration(value) {
                Ok(d) if escalate.last().is_none_or(|last| d > *last) => escalate.push(d),
                Ok(_) => err(
                    format!("{key}.escalate"),
                    "delays count from when the group started firing: each must be longer than the one before".into(),
                ),
                Err(e) => err(format!("{key}.escalate"), format!("`{value}` is not a duration ({e})")),
            }
        }
        if let Some(schedule) = schedule {
            policies.insert(severity, Policy { schedule, mention_oncall: raw.mention_oncall, escalate });
        }
    }
    let retention = match raw.retention.as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(90 * 86_400),
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            err("alerts.retention".into(), format!("not a duration ({e})"));
            Duration::from_secs(90 * 86_400)
        }
    };
    Some(AlertsConfig { sources, alertmanager, routes, shown_alerts, storm, oncall, policies, retention })
}
