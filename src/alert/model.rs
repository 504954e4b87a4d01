//! The alert model the store, cards and handlers share: severities, how a
//! batch is cut into groups, and the stored views of groups, alerts and
//! their history.

use std::collections::BTreeMap;

use super::source::{AlertStatus, IncomingAlert, IncomingBatch, SourceKind};

/// How urgent an alert is, from its `severity` label. Ordered: the highest
/// severity among a group's firing alerts colors its card and picks its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    None,
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Self::Critical, Self::Warning, Self::Info, Self::None];

    /// Reads the usual spellings; anything else is `None` (shown as given in the labels).
    pub fn from_label(value: Option<&str>) -> Self {
        let Some(value) = value else { return Self::None };
        match value.trim().to_ascii_lowercase().as_str() {
            "critical" | "crit" | "page" | "p0" | "p1" | "sev0" | "sev1" | "fatal" | "emergency" | "disaster"
            | "high" => Self::Critical,
            "warning" | "warn" | "error" | "err" | "major" | "p2" | "sev2" | "medium" | "average" => Self::Warning,
            "info" | "information" | "informational" | "notice" | "low" | "minor" | "p3" | "p4" | "sev3" | "sev4" => {
                Self::Info
            }
            _ => Self::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The alerts of one batch that belong to one group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupedAlerts {
    /// `<source>:<key>`, unique across sources.
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub alerts: Vec<IncomingAlert>,
}

/// A parsed webhook, cut into groups, ready for one store write.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingest {
    pub source: SourceKind,
    pub external_url: Option<String>,
    pub groups: Vec<GroupedAlerts>,
}

impl Ingest {
    /// Groups by `group_by` labels when configured, else by the source's own
    /// group key (all of a webhook's alerts share it), else by `alertname`.
    pub fn new(batch: IncomingBatch, group_by: &[String]) -> Self {
        let source = batch.source;
        let mut groups: Vec<GroupedAlerts> = Vec::new();
        for alert in batch.alerts {
            let (key, labels) = match (&batch.group_key, group_by.is_empty()) {
                (Some(source_key), true) => (source_key.clone(), batch.group_labels.clone()),
                (_, by_labels) => {
                    let names: &[String] = if by_labels { &[] } else { group_by };
                    let labels: BTreeMap<String, String> = if names.is_empty() {
                        alert
                            .labels
                            .iter()
                            .filter(|(k, _)| *k == "alertname")
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    } else {
                        names.iter().filter_map(|n| alert.labels.get(n).map(|v| (n.clone(), v.clone()))).collect()
                    };
                    (label_key(&labels), labels)
                }
            };
            let key = format!("{}:{key}", source.as_str());
            match groups.iter_mut().find(|g| g.key == key) {
                Some(group) => group.alerts.push(alert),
                None => groups.push(GroupedAlerts { key, labels, alerts: vec![alert] }),
            }
        }
        Self { source, external_url: batch.external_url, groups }
    }

    pub fn alert_count(&self) -> usize {
        self.groups.iter().map(|g| g.alerts.len()).sum()
    }
}

/// `{alertname="X",team="y"}`, the way Alertmanager writes a label set.
fn label_key(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// A group as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    pub id: i64,
    pub key: String,
    pub source: String,
    pub labels: BTreeMap<String, String>,
    pub firing: bool,
    pub severity: Severity,
    pub n_firing: i64,
    pub n_total: i64,
    pub external_url: Option<String>,
    pub acked: Option<(String, i64)>,
    /// Who silenced it, when, and until when.
    pub silenced: Option<Silenced>,
    pub resolved_by: Option<String>,
    pub last_error: Option<String>,
    pub escalation_level: i64,
    /// Whom the last escalation step called.
    pub escalated_to: Option<String>,
    pub next_escalation_at: Option<i64>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Silenced {
    pub by: String,
    pub at_ms: i64,
    pub until_ms: i64,
    /// Alertmanager's silence ids; empty for sources silenced only here.
    pub ids: Vec<String>,
}

impl GroupView {
    /// Silenced now (a silence past its end no longer counts).
    pub fn silenced_at(&self, now_ms: i64) -> Option<&Silenced> {
        self.silenced.as_ref().filter(|s| s.until_ms > now_ms)
    }
}

/// One alert as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    pub id: i64,
    pub fingerprint: String,
    pub alertname: String,
    pub severity: Severity,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub links: Vec<(String, String)>,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub received: i64,
}

/// One recorded state change.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub at_ms: i64,
    pub kind: String,
    /// The alert it concerns (`alertname` and fingerprint), or none for the whole group.
    pub alert: Option<(String, String)>,
    pub actor: Option<String>,
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, extra: &[(&str, &str)]) -> IncomingAlert {
        let mut labels: BTreeMap<String, String> = extra.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        labels.insert("alertname".into(), name.into());
        IncomingAlert {
            fingerprint: format!("fp-{name}-{}", extra.len()),
            status: AlertStatus::Firing,
            labels,
            annotations: BTreeMap::new(),
            starts_at_ms: None,
            ends_at_ms: None,
            generator_url: None,
            links: Vec::new(),
        }
    }

    fn batch(group_key: Option<&str>, alerts: Vec<IncomingAlert>) -> IncomingBatch {
        IncomingBatch {
            source: SourceKind::Generic,
            group_key: group_key.map(str::to_owned),
            group_labels: BTreeMap::new(),
            external_url: None,
            truncated_alerts: 0,
            alerts,
        }
    }

    #[test]
    fn severities_read_common_spellings() {
        for (label, expected) in [
            (Some("critical"), Severity::Critical),
            (Some(" Page "), Severity::Critical),
            (Some("warning"), Severity::Warning),
            (Some("error"), Severity::Warning),
            (Some("info"), Severity::Info),
            (Some("whatever"), Severity::None),
            (None, Severity::None),
        ] {
            assert_eq!(Severity::from_label(label), expected, "{label:?}");
        }
        assert!(Severity::Critical > Severity::Warning && Severity::Warning > Severity::Info);
    }

    #[test]
    fn batches_group_by_source_key_then_configured_labels_then_alertname() {
        let alerts = || vec![alert("A", &[("team", "x")]), alert("B", &[("team", "x")]), alert("A", &[])];
        let by_source = Ingest::new(batch(Some("{}:{team=\"x\"}"), alerts()), &[]);
        assert_eq!(by_source.groups.len(), 1);
        assert_eq!(by_source.groups[0].key, "generic:{}:{team=\"x\"}");
        assert_eq!(by_source.alert_count(), 3);

        let by_name = Ingest::new(batch(None, alerts()), &[]);
        let keys: Vec<_> = by_name.groups.iter().map(|g| (g.key.as_str(), g.alerts.len())).collect();
        assert_eq!(keys, [("generic:{alertname=\"A\"}", 2), ("generic:{alertname=\"B\"}", 1)]);

        let by_team = Ingest::new(batch(Some("ignored"), alerts()), &["team".to_owned()]);
        let keys: Vec<_> = by_team.groups.iter().map(|g| (g.key.as_str(), g.alerts.len())).collect();
        assert_eq!(keys, [("generic:{team=\"x\"}", 2), ("generic:{}", 1)]);
    }
}
