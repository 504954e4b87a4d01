//! An alert group's card: the `alert` template filled from the stored group
//! and its alerts, with the buttons that apply to its state.

use std::collections::BTreeMap;

use minijinja::{Value, context};

use super::model::{AlertView, GroupView, Severity};
use super::source::AlertStatus;
use crate::action::{Action, Grant};
use crate::card::{CardDraft, CardId, CardSet, CardTemplateError};
use crate::clock::format_ms;
use crate::command::CommandSet;
use crate::i18n::Locale;
use crate::kb::Hit;
use crate::policy::Role;
use crate::reply::CardKey;

pub const TEMPLATE: CardId = CardId::ALERT;

/// Labels every alert has that say nothing on a card of its own group.
const NOISE: [&str; 3] = ["alertname", "severity", "__name__"];

pub fn key(group: i64) -> CardKey {
    CardKey::new(format!("alert-group:{group}"))
}

/// Roles the buttons need: those of `/ack` and `/silence`.
#[derive(Debug, Clone, Default)]
pub struct ButtonRoles {
    pub ack: Option<Role>,
    pub silence: Option<Role>,
}

impl ButtonRoles {
    pub fn from_commands(commands: &CommandSet) -> Self {
        // A command file set without /ack or /silence must not open the buttons to everyone.
        let role = |name: &str| match commands.get(name) {
            Some(command) => command.role.clone(),
            None => Some(Role::parse("responder").expect("a valid role name")),
        };
        Self { ack: role("ack"), silence: role("silence") }
    }
}

/// What a group's card points to besides the group itself.
pub struct Links<'a> {
    /// The runbook found for it ([`runbook_query`]).
    pub runbook: Option<&'a Hit>,
    /// The Logs button of its service ([`logs_button`]).
    pub logs: Option<Grant>,
}

pub fn render(
    cards: &CardSet,
    locale: Locale,
    group: &GroupView,
    alerts: &[AlertView],
    roles: &ButtonRoles,
    links: Links<'_>,
    now_ms: i64,
) -> Result<CardDraft, CardTemplateError> {
    let Links { runbook, logs } = links;
    let silenced = group.silenced_at(now_ms);
    let mut grants: Vec<(&str, Grant)> = Vec::new();
    if let Some(logs) = logs {
        grants.push(("logs", logs));
    }
    if group.firing {
        if group.acked.is_none() {
            grants.push(("ack", Grant::new(Action::AlertAck { group: group.id }, roles.ack.clone())));
        }
        if silenced.is_none() {
            for (id, hours) in [("silence_1h", 1), ("silence_4h", 4), ("silence_24h", 24)] {
                grants.push((id, Grant::new(Action::AlertSilence { group: group.id, hours }, roles.silence.clone())));
            }
        }
        // Sources that send resolutions resolve their own alerts.
        if group.source == "generic" {
            grants.push(("resolve", Grant::new(Action::AlertResolve { group: group.id }, roles.ack.clone())));
        }
    }
    if silenced.is_some() {
        grants.push(("unsilence", Grant::new(Action::AlertUnsilence { group: group.id }, roles.silence.clone())));
    }
    let runbook = runbook.map(|h| {
        context! {
            title => h.title, heading => h.heading, url => h.url, root => h.root, path => h.path,
            excerpt => crate::kb::answer::excerpt(&h.text, 300),
        }
    });
    let values = context! { runbook => runbook, ..values(group, alerts, now_ms) };
    cards.render(TEMPLATE, locale, &values, grants)
}

/// The Logs button of a group whose labels (its own, then its first
/// alert's) map to a configured log service: the first page of that
/// service's logs from `logs.alert_window` before the group's first start
/// to as long after it.
pub fn logs_button(logs: &crate::logs::service::Logs, group: &GroupView, alerts: &[AlertView]) -> Option<Grant> {
    let mut labels = group.labels.clone();
    if let Some(first) = alerts.first() {
        for (k, v) in &first.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let service = logs.for_labels(&labels)?;
    let start = alerts.iter().filter_map(|a| a.starts_at).min().unwrap_or(group.created_at);
    let window = i64::try_from(logs.config().alert_window.as_millis()).unwrap_or(i64::MAX / 4);
    let query = crate::logs::service::LogQuery {
        service: service.name.clone(),
        pattern: None,
        from_ms: start.saturating_sub(window),
        to_ms: start.saturating_add(window),
        level: None,
        page: logs.config().page,
    };
    Some(Grant::new(Action::LogsPage { query, offset: 0 }, service.role.clone()))
}

/// What a group's runbook is looked up by ([`crate::kb::Kb::runbook`]): the
/// first `runbook_url`, the alert names, and the words of its alerts (names,
/// summaries, descriptions, label values).
pub fn runbook_query(group: &GroupView, alerts: &[AlertView]) -> (Option<String>, Vec<String>, String) {
    let url = alerts.iter().find_map(|a| a.annotations.get("runbook_url").or_else(|| a.annotations.get("runbook")));
    let mut names: Vec<String> = alerts.iter().map(|a| a.alertname.clone()).collect();
    names.extend(group.labels.get("alertname").cloned());
    names.dedup();
    let mut text = names.join(" ");
    for a in alerts {
        for key in ["summary", "message", "title", "description"] {
            if let Some(v) = a.annotations.get(key) {
                text.push(' ');
                text.push_str(v);
            }
        }
        for (k, v) in &a.labels {
            if !NOISE.contains(&k.as_str()) && k != "alertname" {
                text.push(' ');
                text.push_str(v);
            }
        }
    }
    (url.cloned(), names, text)
}

/// The template context. Public for `/alerts`, which lists groups with the same fields.
pub fn values(group: &GroupView, alerts: &[AlertView], now_ms: i64) -> Value {
    // Labels all shown alerts share go in the header; each alert lists only its own.
    let common: BTreeMap<&String, &String> = match alerts.split_first() {
        Some((first, rest)) => {
            first.labels.iter().filter(|(k, v)| rest.iter().all(|a| a.labels.get(*k) == Some(*v))).collect()
        }
        None => group.labels.iter().collect(),
    };
    let shown_common: Vec<Value> = common
        .iter()
        .filter(|(k, _)| !NOISE.contains(&k.as_str()))
        .map(|(k, v)| context! { name => k, value => v })
        .collect();
    let alert_values: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let own: Vec<Value> = a
                .labels
                .iter()
                .filter(|(k, v)| !NOISE.contains(&k.as_str()) && common.get(k) != Some(v))
                .map(|(k, v)| context! { name => k, value => v })
                .collect();
            let mut links: Vec<Value> = a.links.iter().map(|(label, url)| context! { label => label, url => url }).collect();
            if let Some(url) = a.annotations.get("runbook_url").or_else(|| a.annotations.get("runbook")) {
                links.push(context! { label => "runbook", url => url });
            }
            context! {
                name => a.alertname,
                severity => a.severity.as_str(),
                firing => a.status == AlertStatus::Firing,
                summary => a.annotations.get("summary").or_else(|| a.annotations.get("message")).or_else(|| a.annotations.get("title")),
                description => a.annotations.get("description"),
                labels => own,
                links => links,
                since => Some(format_ms(a.starts_at.unwrap_or(a.first_seen))),
                ended => a.ends_at.filter(|_| a.status == AlertStatus::Resolved).map(format_ms),
            }
        })
        .collect();
    let title = alerts
        .first()
        .map(|a| a.alertname.clone())
        .or_else(|| group.labels.get("alertname").cloned())
        .unwrap_or_else(|| group.key.clone());
    let silenced = group.silenced_at(now_ms);
    context! {
        id => group.id,
        title => title,
        firing => group.firing,
        severity => group.severity.as_str(),
        color => color(group),
        n_firing => group.n_firing,
        n_total => group.n_total,
        more => (group.n_total - alerts.len() as i64).max(0),
        labels => shown_common,
        alerts => alert_values,
        acked_by => group.acked.as_ref().map(|(by, _)| by.clone()),
        acked_at => group.acked.as_ref().map(|(_, at)| format_ms(*at)),
        silenced_by => silenced.map(|s| s.by.clone()),
        silenced_until => silenced.map(|s| format_ms(s.until_ms)),
        resolved_by => group.resolved_by,
        escalated_to => group.escalated_to,
        error => group.last_error,
        source => group.source,
        external_url => group.external_url,
        updated => format_ms(group.updated_at),
    }
}

fn color(group: &GroupView) -> &'static str {
    if !group.firing {
        return "green";
    }
    match group.severity {
        Severity::Critical => "red",
        Severity::Warning => "orange",
        Severity::Info => "blue",
        Severity::None => "grey",
    }
}
