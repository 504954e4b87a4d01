//! Alert webhook bodies → [`IncomingBatch`]. Three formats are read:
//! Alertmanager's webhook payload version 4, Grafana's unified-alerting
//! webhook payload (version 1, which extends Alertmanager's template data) and
//! our own generic format (`docs/alerts-generic.md`). Every alert leaves here
//! with a fingerprint, an `alertname` label, string labels and annotations and
//! millisecond timestamps, so nothing downstream looks at a source's JSON
//! again. Errors are written for the person who sent the body: the HTTP
//! endpoint returns them as they are in a 400 response. This module does no
//! IO and knows nothing about HTTP, authentication or storage.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::error::Category;
use sha2::{Digest, Sha256};

/// The most alerts one body may carry. It bounds the work (store rows, card
/// updates) one request causes; the HTTP layer's body size limit bounds the
/// memory parsing takes.
pub const MAX_ALERTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Alertmanager,
    Grafana,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert, checked and in our terms.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingAlert {
    /// Identifies the alert across notifications: the source's own when it
    /// sends one, otherwise computed from the labels (see `label_fingerprint`).
    pub fingerprint: String,
    pub status: AlertStatus,
    /// Always has a non-empty `alertname`; no label name is empty.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Unix milliseconds; `None` when absent or Go's zero time `0001-01-01T00:00:00Z`.
    pub starts_at_ms: Option<i64>,
    /// Unix milliseconds; `None` when absent or Go's zero time (a firing alert's usual end).
    pub ends_at_ms: Option<i64>,
    pub generator_url: Option<String>,
    /// Extra links the source gives (Grafana: dashboardURL, panelURL, silenceURL), as (label, url).
    pub links: Vec<(String, String)>,
}

/// The alerts of one webhook body, at least one and at most [`MAX_ALERTS`].
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingBatch {
    pub source: SourceKind,
    /// The source's own group key (Alertmanager `groupKey`, Grafana `groupKey`, generic `group_key`), if any.
    pub group_key: Option<String>,
    /// The labels the source grouped by (Alertmanager/Grafana `groupLabels`), possibly empty.
    pub group_labels: BTreeMap<String, String>,
    pub external_url: Option<String>,
    /// How many alerts of the group the source left out of this body
    /// (Alertmanager and Grafana `truncatedAlerts`, set by their `max_alerts`).
    pub truncated_alerts: u64,
    pub alerts: Vec<IncomingAlert>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not UTF-8: {0}")]
    NotUtf8(String),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not in the source's format: serde's message names the field and its place.
    #[error("body is not a valid {kind} webhook payload: {message}")]
    Shape { kind: SourceKind, message: String },
    #[error("{kind} webhook payload version {found:?} is not supported; expected {expected:?}")]
    UnsupportedVersion { kind: SourceKind, found: String, expected: &'static str },
    #[error("no alerts: the `alerts` array is empty")]
    NoAlerts,
    #[error("{count} alerts in one body; at most {limit} are accepted", limit = MAX_ALERTS)]
    TooManyAlerts { count: usize },
    #[error("alerts[{index}]: {problem}")]
    Alert { index: usize, problem: AlertProblem },
}

/// What is wrong with one alert of a body; [`PayloadError::Alert`] says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertProblem {
    #[error("no `alertname` label, or it is empty; every alert needs one")]
    MissingAlertname,
    #[error("a label has an empty name")]
    EmptyLabelName,
    #[error("{field}.{key} is {found}, not a string")]
    NotAString { field: &'static str, key: String, found: &'static str },
    #[error("{field} {value:?} is not an RFC 3339 timestamp: {reason}")]
    BadTimestamp { field: &'static str, value: String, reason: String },
    #[error("status {value:?} is neither \"firing\" nor \"resolved\"")]
    BadStatus { value: String },
    #[error("no `fingerprint`; Alertmanager sends one with every alert")]
    MissingFingerprint,
    #[error("`fingerprint` is empty; leave it out to have one computed from the labels")]
    EmptyFingerprint,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Alertmanager => "alertmanager",
            SourceKind::Grafana => "grafana",
            SourceKind::Generic => "generic",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Parses one webhook body sent by a `kind` source.
pub fn parse(kind: SourceKind, body: &[u8]) -> Result<IncomingBatch, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|e| PayloadError::NotUtf8(e.to_string()))?;
    match kind {
        SourceKind::Alertmanager | SourceKind::Grafana => webhook(kind, text),
        SourceKind::Generic => generic(text),
    }
}

/// Alertmanager's webhook message; Grafana's is the same with more fields.
/// Only the fields we use are named: both sources add fields over time, and
/// those are ignored (`receiver`, `status`, `commonLabels`, `title`, …).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookMessage {
    version: String,
    group_key: Option<String>,
    #[serde(default)]
    truncated_alerts: u64,
    #[serde(default)]
    group_labels: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: Option<String>,
    alerts: Vec<WebhookAlert>,
}

/// Labels and annotations are read as any JSON value so that a non-string
/// one is reported with its key, which serde's own message would not name.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert {
    status: String,
    labels: BTreeMap<String, Value>,
    #[serde(default)]
    annotations: BTreeMap<String, Value>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    generator_url: Option<String>,
    fingerprint: Option<String>,
    // Grafana only; it sends "" when it has no such link.
    #[serde(rename = "dashboardURL")]
    dashboard_url: Option<String>,
    #[serde(rename = "panelURL")]
    panel_url: Option<String>,
    #[serde(rename = "silenceURL")]
    silence_url: Option<String>,
}

/// Our own format. Unknown fields are errors so that a typo fails loudly
/// instead of silently dropping what the sender meant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericBody {
    group_key: Option<String>,
    alerts: Vec<GenericAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericAlert {
    labels: BTreeMap<String, Value>,
    #[serde(default)]
    annotations: BTreeMap<String, Value>,
    status: Option<String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    generator_url: Option<String>,
    fingerprint: Option<String>,
}

/// Go's `time.Time{}`, which Alertmanager and Grafana send for "no time"
/// (the `endsAt` of a firing alert).
const GO_ZERO_TIME: Timestamp = Timestamp::constant(-62_135_596_800, 0);

fn webhook(kind: SourceKind, text: &str) -> Result<IncomingBatch, PayloadError> {
    let message: WebhookMessage = from_json(kind, text)?;
    let expected = if kind == SourceKind::Grafana { "1" } else { "4" };
    if message.version != expected {
        return Err(PayloadError::UnsupportedVersion { kind, found: message.version, expected });
    }
    check_count(message.alerts.len())?;
    let alerts = message
        .alerts
        .into_iter()
        .enumerate()
        .map(|(index, alert)| webhook_alert(kind, alert).map_err(|problem| PayloadError::Alert { index, problem }))
        .collect::<Result<_, _>>()?;
    Ok(IncomingBatch {
        source: kind,
        group_key: non_empty(message.group_key),
        group_labels: message.group_labels,
        external_url: non_empty(message.external_url),
        truncated_alerts: message.truncated_alerts,
        alerts,
    })
}

fn webhook_alert(kind: SourceKind, alert: WebhookAlert) -> Result<IncomingAlert, AlertProblem> {
    let labels = labels(alert.labels)?;
    let fingerprint = match non_empty(alert.fingerprint) {
        Some(fingerprint) => fingerprint,
        // Alertmanager fingerprints every alert; without one the body was
        // not written by its webhook notifier, and a fingerprint of our own
        // would not match the one its other notifications carry.
        None if kind == SourceKind::Alertmanager => return Err(AlertProblem::MissingFingerprint),
        None => label_fingerprint(&labels),
    };
    let links = [("dashboard", alert.dashboard_url), ("panel", alert.panel_url), ("silence", alert.silence_url)]
        .into_iter()
        .filter_map(|(label, url)| Some((label.to_owned(), non_empty(url)?)))
        .collect();
    Ok(IncomingAlert {
        fingerprint,
        status: status(&alert.status)?,
        labels,
        annotations: strings("annotations", alert.annotations)?,
        starts_at_ms: timestamp("startsAt", alert.starts_at)?,
        ends_at_ms: timestamp("endsAt", alert.ends_at)?,
        generator_url: non_empty(alert.generator_url),
        links,
    })
}

fn generic(text: &str) -> Result<IncomingBatch, PayloadError> {
    let body: GenericBody = from_json(SourceKind::Generic, text)?;
    check_count(body.alerts.len())?;
    let alerts = body
        .alerts
        .into_iter()
        .enumerate()
        .map(|(index, alert)| generic_alert(alert).map_err(|problem| PayloadError::Alert { index, problem }))
        .collect::<Result<_, _>>()?;
    Ok(IncomingBatch {
        source: SourceKind::Generic,
        group_key: non_empty(body.group_key),
        group_labels: BTreeMap::new(),
        external_url: None,
        truncated_alerts: 0,
        alerts,
    })
}

fn generic_alert(alert: GenericAlert) -> Result<IncomingAlert, AlertProblem> {
    let labels = labels(alert.labels)?;
    let fingerprint = match alert.fingerprint {
        Some(fingerprint) if fingerprint.is_empty() => return Err(AlertProblem::EmptyFingerprint),
        Some(fingerprint) => fingerprint,
        None => label_fingerprint(&labels),
    };
    Ok(IncomingAlert {
        fingerprint,
        status: alert.status.as_deref().map_or(Ok(AlertStatus::Firing), status)?,
        labels,
        annotations: strings("annotations", alert.annotations)?,
        starts_at_ms: timestamp("starts_at", alert.starts_at)?,
        ends_at_ms: timestamp("ends_at", alert.ends_at)?,
        generator_url: non_empty(alert.generator_url),
        links: Vec::new(),
    })
}

/// Reads `text` as `T`, telling a body that is not JSON at all from JSON in
/// the wrong shape; both messages keep serde's line and column.
fn from_json<T: DeserializeOwned>(kind: SourceKind, text: &str) -> Result<T, PayloadError> {
    serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Data => PayloadError::Shape { kind, message: e.to_string() },
        Category::Syntax | Category::Eof | Category::Io => PayloadError::NotJson(e.to_string()),
    })
}

fn check_count(n_alerts: usize) -> Result<(), PayloadError> {
    match n_alerts {
        0 => Err(PayloadError::NoAlerts),
        count if count > MAX_ALERTS => Err(PayloadError::TooManyAlerts { count }),
        _ => Ok(()),
    }
}

fn labels(raw: BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, AlertProblem> {
    let labels = strings("labels", raw)?;
    if labels.contains_key("") {
        return Err(AlertProblem::EmptyLabelName);
    }
    if labels.get("alertname").is_none_or(String::is_empty) {
        return Err(AlertProblem::MissingAlertname);
    }
    Ok(labels)
}

/// `field`'s values, each of which must be a JSON string.
fn strings(field: &'static str, raw: BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, AlertProblem> {
    raw.into_iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key, text)),
            other => Err(AlertProblem::NotAString { field, key, found: json_kind(&other) }),
        })
        .collect()
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn status(value: &str) -> Result<AlertStatus, AlertProblem> {
    match value {
        "firing" => Ok(AlertStatus::Firing),
        "resolved" => Ok(AlertStatus::Resolved),
        other => Err(AlertProblem::BadStatus { value: other.to_owned() }),
    }
}

/// Unix milliseconds of an RFC 3339 timestamp with any offset and fraction.
fn timestamp(field: &'static str, value: Option<String>) -> Result<Option<i64>, AlertProblem> {
    let Some(text) = value else { return Ok(None) };
    let at: Timestamp = text.parse().map_err(|e: jiff::Error| AlertProblem::BadTimestamp {
        field,
        reason: e.to_string(),
        value: text,
    })?;
    Ok(Some(at).filter(|at| *at != GO_ZERO_TIME).map(|at| at.as_millisecond()))
}

/// Go sources write "" for a string they do not have.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|text| !text.is_empty())
}

/// The fingerprint of an alert whose source gave none: SHA-256 over the
/// labels in name order, each as name, 0xff, value, 0xff (0xff never occurs
/// in UTF-8, so no two label sets hash the same input), as the hex of its
/// first 8 bytes. It depends only on the labels, so it is the same across
/// restarts, versions and the order the sender wrote the labels in.
fn label_fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    for (name, value) in labels {
        hash.update(name.as_bytes());
        hash.update([0xff]);
        hash.update(value.as_bytes());
        hash.update([0xff]);
    }
    hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alertmanager 0.27's webhook notifier writes this on one line; the key
    /// order, Go's escaping of `&` as `\u0026`, the nanosecond start with an
    /// offset and the zero `endsAt` of a firing alert are as it writes them.
    const ALERTMANAGER: &str = r#"{
        "receiver": "opsclaw",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "instance": "db1:9100", "severity": "critical", "team": "db"},
                "annotations": {"runbook_url": "https://runbooks.example.com/disk-full", "summary": "db1 has 2% disk left"},
                "startsAt": "2024-05-01T10:00:00.123456789+08:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus-0:9090/graph?g0.expr=node_filesystem_avail_bytes+%3C+1e9\u0026g0.tab=1",
                "fingerprint": "1b3c5d7e9fa0b2c4"
            },
            {
                "status": "resolved",
                "labels": {"alertname": "DiskFull", "instance": "db2:9100", "severity": "critical", "team": "db"},
                "annotations": {},
                "startsAt": "2024-05-01T01:58:30.5Z",
                "endsAt": "2024-05-01T02:05:00Z",
                "generatorURL": "",
                "fingerprint": "0a2b4c6d8e0f1a3b"
            }
        ],
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull", "severity": "critical", "team": "db"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager-0:9093",
        "version": "4",
        "groupKey": "{}/{team=\"db\"}:{alertname=\"DiskFull\"}",
        "truncatedAlerts": 2
    }"#;

    /// Grafana 11's webhook contact point, in its key order, with the
    /// `values`, `valueString` and `orgId` fields we do not read.
    const GRAFANA: &str = r#"{
        "receiver": "ops webhook",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "High CPU usage", "grafana_folder": "infra", "team": "blue", "zone": "eu-1"},
                "annotations": {"description": "The system has high CPU usage", "summary": "CPU above 90% in eu-1"},
                "startsAt": "2021-10-12T09:56:03.157076+02:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://grafana.example.com/alerting/grafana/d1rdpdv7k/view?orgId=1",
                "fingerprint": "bc97ff14869b13e3",
                "silenceURL": "https://grafana.example.com/alerting/silence/new?alertmanager=grafana\u0026matcher=__alert_rule_uid__%3Dd1rdpdv7k\u0026orgId=1",
                "dashboardURL": "https://grafana.example.com/d/node?from=1634021763157\u0026orgId=1\u0026to=1634025963157",
                "panelURL": "https://grafana.example.com/d/node?from=1634021763157\u0026orgId=1\u0026to=1634025963157\u0026viewPanel=4",
                "values": {"B": 93.7, "C": 1},
                "valueString": "[ var='B' labels={zone=eu-1} value=93.7 ], [ var='C' labels={zone=eu-1} value=1 ]",
                "orgId": 1
            }
        ],
        "groupLabels": {"alertname": "High CPU usage", "grafana_folder": "infra"},
        "commonLabels": {"alertname": "High CPU usage", "grafana_folder": "infra", "team": "blue", "zone": "eu-1"},
        "commonAnnotations": {"description": "The system has high CPU usage", "summary": "CPU above 90% in eu-1"},
        "externalURL": "https://grafana.example.com/",
        "version": "1",
        "groupKey": "{}/{__grafana_autogenerated__=\"true\"}/{__grafana_receiver__=\"ops webhook\"}:{alertname=\"High CPU usage\", grafana_folder=\"infra\"}",
        "truncatedAlerts": 0,
        "orgId": 1,
        "title": "[FIRING:1] High CPU usage infra (blue eu-1)",
        "state": "alerting",
        "message": "**Firing**\n\nValue: B=93.7, C=1\n"
    }"#;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn check(kind: SourceKind, body: &str, expected: IncomingBatch) {
        assert_eq!(parse(kind, body.as_bytes()), Ok(expected));
    }

    /// A generic body with one alert made of `alert`'s fields.
    fn generic_body(alert: &str) -> String {
        format!(r#"{{"alerts": [{alert}]}}"#)
    }

    fn only_alert(kind: SourceKind, body: &str) -> IncomingAlert {
        let batch = parse(kind, body.as_bytes()).expect("a valid body");
        let [alert] = <[IncomingAlert; 1]>::try_from(batch.alerts).expect("one alert");
        alert
    }

    #[test]
    fn reads_alertmanager_v4() {
        let labels = |instance| {
            map(&[("alertname", "DiskFull"), ("instance", instance), ("severity", "critical"), ("team", "db")])
        };
        check(
            SourceKind::Alertmanager,
            ALERTMANAGER,
            IncomingBatch {
                source: SourceKind::Alertmanager,
                group_key: Some(r#"{}/{team="db"}:{alertname="DiskFull"}"#.into()),
                group_labels: map(&[("alertname", "DiskFull")]),
                external_url: Some("http://alertmanager-0:9093".into()),
                truncated_alerts: 2,
                alerts: vec![
                    IncomingAlert {
                        fingerprint: "1b3c5d7e9fa0b2c4".into(),
                        status: AlertStatus::Firing,
                        labels: labels("db1:9100"),
                        annotations: map(&[
                            ("runbook_url", "https://runbooks.example.com/disk-full"),
                            ("summary", "db1 has 2% disk left"),
                        ]),
                        // 02:00:00.123456789 UTC, cut to the millisecond.
                        starts_at_ms: Some(1_714_528_800_123),
                        ends_at_ms: None,
                        generator_url: Some(
                            "http://prometheus-0:9090/graph?g0.expr=node_filesystem_avail_bytes+%3C+1e9&g0.tab=1"
                                .into(),
                        ),
                        links: vec![],
                    },
                    IncomingAlert {
                        fingerprint: "0a2b4c6d8e0f1a3b".into(),
                        status: AlertStatus::Resolved,
                        labels: labels("db2:9100"),
                        annotations: BTreeMap::new(),
                        starts_at_ms: Some(1_714_528_710_500),
                        ends_at_ms: Some(1_714_529_100_000),
                        generator_url: None,
                        links: vec![],
                    },
                ],
            },
        );
    }

    #[test]
    fn reads_grafana() {
        let url = "https://grafana.example.com";
        check(
            SourceKind::Grafana,
            GRAFANA,
            IncomingBatch {
                source: SourceKind::Grafana,
                group_key: Some(
                    r#"{}/{__grafana_autogenerated__="true"}/{__grafana_receiver__="ops webhook"}:{alertname="High CPU usage", grafana_folder="infra"}"#
                        .into(),
                ),
                group_labels: map(&[("alertname", "High CPU usage"), ("grafana_folder", "infra")]),
                external_url: Some(format!("{url}/")),
                truncated_alerts: 0,
                alerts: vec![IncomingAlert {
                    fingerprint: "bc97ff14869b13e3".into(),
                    status: AlertStatus::Firing,
                    labels: map(&[
                        ("alertname", "High CPU usage"),
                        ("grafana_folder", "infra"),
                        ("team", "blue"),
                        ("zone", "eu-1"),
                    ]),
                    annotations: map(&[
                        ("description", "The system has high CPU usage"),
                        ("summary", "CPU above 90% in eu-1"),
                    ]),
                    starts_at_ms: Some(1_634_025_363_157),
                    ends_at_ms: None,
                    generator_url: Some(format!("{url}/alerting/grafana/d1rdpdv7k/view?orgId=1")),
                    links: vec![
                        ("dashboard".into(), format!("{url}/d/node?from=1634021763157&orgId=1&to=1634025963157")),
                        (
                            "panel".into(),
                            format!("{url}/d/node?from=1634021763157&orgId=1&to=1634025963157&viewPanel=4"),
                        ),
                        (
                            "silence".into(),
                            format!(
                                "{url}/alerting/silence/new?alertmanager=grafana&matcher=__alert_rule_uid__%3Dd1rdpdv7k&orgId=1"
                            ),
                        ),
                    ],
                }],
            },
        );
    }

    #[test]
    fn grafana_without_fingerprint_or_links_gets_the_label_fingerprint() {
        let body = GRAFANA
            .replace(r#""fingerprint": "bc97ff14869b13e3","#, "")
            .replace(r#""dashboardURL": "https"#, r#""dashboardURL": "", "x": "https"#)
            .replace(r#""panelURL": "https"#, r#""x2": "https"#);
        let alert = only_alert(SourceKind::Grafana, &body);
        assert_eq!(alert.fingerprint, label_fingerprint(&alert.labels));
        assert_eq!(alert.fingerprint.len(), 16);
        assert_eq!(alert.links.iter().map(|(label, _)| label.as_str()).collect::<Vec<_>>(), ["silence"]);
    }

    #[test]
    fn reads_generic() {
        let body = r#"{
            "group_key": "db-disks",
            "alerts": [
                {
                    "labels": {"alertname": "DiskFull", "host": "db1"},
                    "annotations": {"summary": "2% left"},
                    "status": "resolved",
                    "starts_at": "2024-05-01T10:00:00+08:00",
                    "ends_at": "2024-05-01T02:05:00.000Z",
                    "generator_url": "https://cron.example.com/jobs/7",
                    "fingerprint": "disk-db1"
                },
                {"labels": {"host": "db1", "alertname": "DiskFull"}}
            ]
        }"#;
        let alert = |fingerprint: &str| IncomingAlert {
            fingerprint: fingerprint.into(),
            status: AlertStatus::Firing,
            labels: map(&[("alertname", "DiskFull"), ("host", "db1")]),
            annotations: BTreeMap::new(),
            starts_at_ms: None,
            ends_at_ms: None,
            generator_url: None,
            links: vec![],
        };
        check(
            SourceKind::Generic,
            body,
            IncomingBatch {
                source: SourceKind::Generic,
                group_key: Some("db-disks".into()),
                group_labels: BTreeMap::new(),
                external_url: None,
                truncated_alerts: 0,
                alerts: vec![
                    IncomingAlert {
                        status: AlertStatus::Resolved,
                        annotations: map(&[("summary", "2% left")]),
                        starts_at_ms: Some(1_714_528_800_000),
                        ends_at_ms: Some(1_714_529_100_000),
                        generator_url: Some("https://cron.example.com/jobs/7".into()),
                        ..alert("disk-db1")
                    },
                    // Worked out by hand from the documented recipe, so a
                    // change to it (which would split every stored group) fails here.
                    alert("0e327fcc6a7f35b6"),
                ],
            },
        );
    }

    #[test]
    fn label_fingerprints_ignore_label_order_and_differ_by_value() {
        let fingerprint = |labels: &str| only_alert(SourceKind::Generic, &generic_body(labels)).fingerprint;
        let a = fingerprint(r#"{"labels": {"alertname": "DiskFull", "host": "db1", "mount": "/"}}"#);
        let b = fingerprint(r#"{"labels": {"mount": "/", "host": "db1", "alertname": "DiskFull"}}"#);
        let c = fingerprint(r#"{"labels": {"alertname": "DiskFull", "host": "db2", "mount": "/"}}"#);
        // The separators keep a name or value from running into the next one.
        let d = fingerprint(r#"{"labels": {"alertname": "DiskFull", "host": "db", "mount": "1/"}}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert!(a.len() == 16 && a.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn the_limit_itself_is_accepted() {
        let alerts = vec![r#"{"labels": {"alertname": "A"}}"#; MAX_ALERTS].join(",");
        let batch = parse(SourceKind::Generic, format!(r#"{{"alerts": [{alerts}]}}"#).as_bytes());
        assert_eq!(batch.map(|b| b.alerts.len()), Ok(MAX_ALERTS));
    }

    #[test]
    fn errors() {
        use SourceKind::{Alertmanager as Am, Generic, Grafana};
        let too_many = generic_body(&vec![r#"{"labels": {"alertname": "A"}}"#; MAX_ALERTS + 1].join(","));
        let cases: &[(SourceKind, &str, &str)] = &[
            (Am, "", "body is not JSON: EOF while parsing a value at line 1 column 0"),
            (Am, "alerts: []", "body is not JSON: expected value at line 1 column 1"),
            (Generic, r#"{"alerts": [}"#, "body is not JSON: expected value at line 1 column 13"),
            (
                Am,
                r#"{"version": "4", "alerts": {}}"#,
                "body is not a valid alertmanager webhook payload: \
                 invalid type: map, expected a sequence at line 1 column 27",
            ),
            (
                Am,
                &ALERTMANAGER.replace(r#""version": "4""#, r#""version": "3""#),
                r#"alertmanager webhook payload version "3" is not supported; expected "4""#,
            ),
            (Grafana, ALERTMANAGER, r#"grafana webhook payload version "4" is not supported; expected "1""#),
            (
                Am,
                &ALERTMANAGER.replace(r#""fingerprint": "0a2b4c6d8e0f1a3b""#, r#""fingerprint": """#),
                "alerts[1]: no `fingerprint`; Alertmanager sends one with every alert",
            ),
            (
                Am,
                &ALERTMANAGER
                    .replace(r#"{"alertname": "DiskFull", "instance": "db2:9100""#, r#"{"instance": "db2:9100""#),
                "alerts[1]: no `alertname` label, or it is empty; every alert needs one",
            ),
            (
                Grafana,
                &GRAFANA.replace(r#""labels": {"alertname": "High CPU usage", "#, r#""labels": {"#),
                "alerts[0]: no `alertname` label, or it is empty; every alert needs one",
            ),
            (
                Generic,
                &generic_body(r#"{"labels": {"alertname": ""}}"#),
                "alerts[0]: no `alertname` label, or it is empty; every alert needs one",
            ),
            (
                Generic,
                &generic_body(r#"{"labels": {}}"#),
                "alerts[0]: no `alertname` label, or it is empty; every alert needs one",
            ),
            (
                Generic,
                &generic_body(r#"{"labels": {"alertname": "A", "": "x"}}"#),
                "alerts[0]: a label has an empty name",
            ),
            (
                Generic,
                &generic_body(r#"{"labels": {"alertname": "A"}, "statsu": "resolved"}"#),
                "body is not a valid generic webhook payload: unknown field `statsu`, expected one of `labels`, \
                 `annotations`, `status`, `starts_at`, `ends_at`, `generator_url`, `fingerprint` at line 1 column 51",
            ),
            (
                Generic,
                r#"{"group": "x", "alerts": []}"#,
                "body is not a valid generic webhook payload: \
                 unknown field `group`, expected `group_key` or `alerts` at line 1 column 8",
            ),
            (
                Generic,
                &generic_body(r#"{"annotations": {}}"#),
                "body is not a valid generic webhook payload: missing field `labels` at line 1 column 31",
            ),
            (
                Generic,
                &generic_body(r#"{"labels": {"alertname": "A"}, "starts_at": "2024-05-01 10:00:00"}"#),
                "alerts[0]: starts_at \"2024-05-01 10:00:00\" is not an RFC 3339 timestamp: \
                 failed to find offset component, which is required for parsing a timestamp",
            ),
            (
                Am,
                &ALERTMANAGER.replace("2024-05-01T02:05:00Z", "yesterday"),
                "alerts[1]: endsAt \"yesterday\" is not an RFC 3339 timestamp: \
                 failed to parse four digit integer as year: invalid digit, expected 0-9 but got y",
            ),
            (
                Generic,
                &generic_body(r#"{"labels": {"alertname": "A", "port": 8080}}"#),
                "alerts[0]: labels.port is a number, not a string",
            ),
            (
                Grafana,
                &GRAFANA.replace(r#""summary": "CPU above 90% in eu-1"}"#, r#""summary": null}"#),
                "alerts[0]: annotations.summary is null, not a string",
            ),
            (
                Generic,
                &generic_body(r#"{"labels": {"alertname": "A"}, "status": "pending"}"#),
                r#"alerts[0]: status "pending" is neither "firing" nor "resolved""#,
            ),
            (
                Generic,
                &generic_body(r#"{"labels": {"alertname": "A"}, "fingerprint": ""}"#),
                "alerts[0]: `fingerprint` is empty; leave it out to have one computed from the labels",
            ),
            (Generic, r#"{"alerts": []}"#, "no alerts: the `alerts` array is empty"),
            (
                Am,
                &ALERTMANAGER.replace(r#""alerts": ["#, r#""alerts": [], "x": ["#),
                "no alerts: the `alerts` array is empty",
            ),
            (Generic, &too_many, "10001 alerts in one body; at most 10000 are accepted"),
        ];
        // Every mismatch is listed at once: a message change usually touches several.
        let mismatches: Vec<String> = cases
            .iter()
            .filter_map(|(kind, body, expected)| match parse(*kind, body.as_bytes()) {
                Err(e) if e.to_string() == *expected => None,
                got => Some(format!(
                    "{kind} body {:?}\n  got:      {got:?}\n  expected: {expected}",
                    &body[..body.len().min(80)]
                )),
            })
            .collect();
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
        assert_eq!(
            parse(Generic, b"{\"alerts\": [\xff]}").map_err(|e| e.to_string()),
            Err("body is not UTF-8: invalid utf-8 sequence of 1 bytes from index 12".into())
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            [SourceKind::Alertmanager, SourceKind::Grafana, SourceKind::Generic].map(SourceKind::as_str),
            ["alertmanager", "grafana", "generic"]
        );
        assert_eq!([AlertStatus::Firing, AlertStatus::Resolved].map(AlertStatus::as_str), ["firing", "resolved"]);
        assert_eq!("0001-01-01T00:00:00Z".parse::<Timestamp>().ok(), Some(GO_ZERO_TIME));
    }
}
