//! Alert groups, alerts and their history. Ingest and every action on a
//! group run inside the journal's transaction, so a webhook or a click is
//! applied whole or not at all, and concurrent actions are decided by
//! conditional updates (one Ack wins; the other learns who was first).

use std::collections::{BTreeMap, HashMap};

use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::alert::model::{AlertView, GroupView, GroupedAlerts, HistoryEntry, Ingest, Severity, Silenced};
use crate::alert::source::{AlertStatus, IncomingAlert};

/// Something a person (or the escalation timer) does to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOp {
    Ack {
        group: i64,
        by: String,
    },
    /// Takes the right to silence `group` until `until_ms`, so that two clicks
    /// create one silence; confirmed by `SilenceDone` or undone by `SilenceFailed`.
    SilenceClaim {
        group: i64,
        by: String,
        until_ms: i64,
    },
    SilenceDone {
        group: i64,
        by: String,
        ids: Vec<String>,
    },
    SilenceFailed {
        group: i64,
        by: String,
        error: String,
    },
    /// Something asked for failed (Alertmanager refused to expire a silence): shown on the card.
    Failed {
        group: i64,
        by: String,
        error: String,
    },
    Unsilence {
        group: i64,
        by: String,
    },
    /// Closes a group by hand (sources that never send a resolution).
    Resolve {
        group: i64,
        by: String,
    },
}

/// Takes escalation step `level` (1-based) of `group`, calling `to`, unless
/// the group was acked, resolved or already past that step meanwhile. The
/// first mention of the on-call (`initial`) is not shown on the card; an
/// escalation is ("Escalated to …").
pub(super) async fn escalate(
    conn: &mut AnyConnection,
    group: i64,
    level: i64,
    to: &str,
    initial: bool,
    now_ms: i64,
) -> Result<OpOutcome, StoreError> {
    // Replicas run the same timer: one that finds the group locked by another
    // replica's claim skips it instead of waiting for it (that one takes the step).
    if conn.backend_name() == "PostgreSQL" {
        let free = sqlx::query("SELECT id FROM alert_groups WHERE id = $1 FOR UPDATE SKIP LOCKED")
            .bind(group)
            .fetch_optional(&mut *conn)
            .await?;
        if free.is_none() {
            return Ok(OpOutcome::Unchanged);
        }
    }
    let claim = if initial {
        sqlx::query(
            "UPDATE alert_groups SET escalation_level = $1 WHERE id = $2 AND escalation_level = $3 \
             AND state = 'firing' AND acked_by IS NULL",
        )
        .bind(level)
    } else {
        sqlx::query(
            "UPDATE alert_groups SET escalation_level = $1, escalated_to = $2, version = version + 1, dirty = 1, \
             updated_at = $3 WHERE id = $4 AND escalation_level = $5 AND state = 'firing' AND acked_by IS NULL",
        )
        .bind(level)
        .bind(to)
        .bind(now_ms)
    };
    let done = claim.bind(group).bind(level - 1).execute(&mut *conn).await?.rows_affected();
    if done == 0 {
        return Ok(OpOutcome::Unchanged);
    }
    let kind = if initial { "notified" } else { "escalated" };
    group_event(conn, group, kind, to, Some(format!("step {level}")), now_ms).await?;
    Ok(OpOutcome::Done)
}

/// A firing, unacknowledged, unsilenced group the escalation timer looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationCandidate {
    pub group: i64,
    pub severity: Severity,
    pub firing_since: i64,
    /// Steps taken so far.
    pub level: i64,
}

/// What an [`AlertOp`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// Applied; the group's card must be shown again.
    Done,
    /// Someone else did it first.
    Already {
        by: String,
        at_ms: i64,
    },
    /// The group is resolved: nothing to acknowledge or resolve.
    Resolved,
    /// Nothing to undo (unsilencing a group that is not silenced).
    Unchanged,
    NotFound,
}

/// Applies one webhook; returns the groups whose card changed.
pub(super) async fn ingest(conn: &mut AnyConnection, ingest: &Ingest, now_ms: i64) -> Result<Vec<i64>, StoreError> {
    let mut changed = Vec::new();
    for group in &ingest.groups {
        if let Some(id) = ingest_group(conn, ingest, group, now_ms).await? {
            changed.push(id);
        }
    }
    Ok(changed)
}

struct Existing {
    status: String,
    group_id: i64,
    annotations: String,
}

async fn ingest_group(
    conn: &mut AnyConnection,
    ingest: &Ingest,
    group: &GroupedAlerts,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let source = ingest.source.as_str();
    let row = sqlx::query(
        "INSERT INTO alert_groups (group_key, source, labels, state, severity, external_url, version, dirty, created_at, updated_at) \
         VALUES ($1, $2, $3, 'resolved', 'none', $4, 0, 1, $5, $5) \
         ON CONFLICT (group_key) DO UPDATE SET external_url = COALESCE(excluded.external_url, alert_groups.external_url) \
         RETURNING id, state, severity, firing, total, version",
    )
    .bind(group.key.as_str())
    .bind(source)
    .bind(json(&group.labels))
    .bind(ingest.external_url.clone())
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await?;
    let group_id: i64 = row.try_get("id")?;
    let was_firing = row.try_get::<String, _>("state")? == "firing";
    let before = (
        was_firing,
        row.try_get::<String, _>("severity")?,
        row.try_get::<i64, _>("firing")?,
        row.try_get::<i64, _>("total")?,
    );
    let is_new = row.try_get::<i64, _>("version")? == 0;

    // A webhook may name one alert twice; the last mention wins.
    let mut alerts: Vec<&IncomingAlert> = Vec::with_capacity(group.alerts.len());
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(group.alerts.len());
    for alert in &group.alerts {
        match position.get(alert.fingerprint.as_str()) {
            Some(&i) => alerts[i] = alert,
            None => {
                position.insert(&alert.fingerprint, alerts.len());
                alerts.push(alert);
            }
        }
    }
    let mut existing = HashMap::with_capacity(alerts.len());
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(alerts.len());
    // Chunked: one group may hold thousands of alerts, past the databases' parameter limits.
    for chunk in alerts.chunks(super::CHUNK) {
        existing.extend(existing_alerts(conn, source, chunk).await?);
        ids.extend(upsert_alerts(conn, source, group_id, chunk, now_ms).await?);
    }

    // History: what is new, what changed status, what changed content. A
    // repeated notification of an unchanged alert is not history.
    let mut history: Vec<(i64, &'static str, Option<String>)> = Vec::new();
    for alert in &alerts {
        let id = ids[&alert.fingerprint];
        let kind = match existing.get(&alert.fingerprint) {
            None => Some(alert.status.as_str()),
            Some(old) if old.status != alert.status.as_str() => Some(alert.status.as_str()),
            Some(old) if old.group_id != group_id || old.annotations != json(&alert.annotations) => Some("updated"),
            Some(_) => None,
        };
        if let Some(kind) = kind {
            history.push((id, kind, None));
        }
    }
    insert_history(conn, group_id, &history, None, now_ms).await?;

    let (firing, total, severity) = aggregate(conn, group_id).await?;
    let now_firing = firing > 0;
    let after = (now_firing, severity.as_str().to_owned(), firing, total);
    if history.is_empty() && after == before && !is_new {
        return Ok(None);
    }
    // A group that fires again after resolving is a new incident: the old
    // acknowledgement and escalation no longer apply.
    let refire = now_firing && !was_firing && !is_new;
    // Escalation counts from when the group started firing.
    let started = now_firing && (!was_firing || is_new);
    sqlx::query(&format!(
        "UPDATE alert_groups SET state = $1, severity = $2, firing = $3, total = $4, version = version + 1, dirty = 1, \
         updated_at = $5{}{} WHERE id = $6",
        if started { ", firing_since = $5" } else { "" },
        if refire {
            ", acked_by = NULL, acked_at = NULL, resolved_by = NULL, last_error = NULL, escalation_level = 0, \
             escalated_to = NULL, next_escalation_at = NULL"
        } else {
            ""
        }
    ))
    .bind(if now_firing { "firing" } else { "resolved" })
    .bind(severity.as_str())
    .bind(firing)
    .bind(total)
    .bind(now_ms)
    .bind(group_id)
    .execute(&mut *conn)
    .await?;
    Ok(Some(group_id))
}

/// Inserts or updates `alerts` (one group's, at most a chunk); returns their ids by fingerprint.
async fn upsert_alerts(
    conn: &mut AnyConnection,
    source: &str,
    group_id: i64,
    alerts: &[&IncomingAlert],
    now_ms: i64,
) -> Result<HashMap<String, i64>, StoreError> {
    let params = super::Params::of(conn);
    let sql = format!(
        "INSERT INTO alerts (source, fingerprint, group_id, alertname, severity, status, labels, annotations, links, \
         starts_at, ends_at, first_seen, last_seen) VALUES {} \
         ON CONFLICT (source, fingerprint) DO UPDATE SET group_id = excluded.group_id, alertname = excluded.alertname, \
         severity = excluded.severity, status = excluded.status, labels = excluded.labels, \
         annotations = excluded.annotations, links = excluded.links, \
         starts_at = COALESCE(excluded.starts_at, alerts.starts_at), ends_at = excluded.ends_at, \
         last_seen = excluded.last_seen, received = alerts.received + 1 \
         RETURNING id, fingerprint",
        params.tuples(alerts.len(), 13, 0)
    );
    let mut query = sqlx::query(&sql);
    for alert in alerts {
        let links: Vec<(String, String)> = alert
            .generator_url
            .iter()
            .map(|u| ("source".to_owned(), u.clone()))
            .chain(alert.links.iter().cloned())
            .collect();
        query = query
            .bind(source)
            .bind(alert.fingerprint.as_str())
            .bind(group_id)
            .bind(alert.labels.get("alertname").cloned().unwrap_or_default())
            .bind(Severity::from_label(alert.labels.get("severity").map(String::as_str)).as_str())
            .bind(alert.status.as_str())
            .bind(json(&alert.labels))
            .bind(json(&alert.annotations))
            .bind(serde_json::to_string(&links).expect("links always serialize"))
            .bind(alert.starts_at_ms)
            .bind(alert.ends_at_ms)
            .bind(now_ms)
            .bind(now_ms);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    Ok(rows
        .iter()
        .map(|r| Ok((r.try_get::<String, _>("fingerprint")?, r.try_get::<i64, _>("id")?)))
        .collect::<Result<_, sqlx::Error>>()?)
}

async fn existing_alerts(
    conn: &mut AnyConnection,
    source: &str,
    alerts: &[&IncomingAlert],
) -> Result<HashMap<String, Existing>, StoreError> {
    let params = super::Params::of(conn);
    let sql = format!(
        "SELECT fingerprint, status, group_id, annotations FROM alerts WHERE source = {} AND fingerprint IN ({})",
        if params == super::Params::Numbered { "$1" } else { "?" },
        params.list(alerts.len(), 1)
    );
    let mut query = sqlx::query(&sql).bind(source);
    for alert in alerts {
        query = query.bind(alert.fingerprint.as_str());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>("fingerprint")?,
                Existing {
                    status: r.try_get("status")?,
                    group_id: r.try_get("group_id")?,
                    annotations: r.try_get("annotations")?,
                },
            ))
        })
        .collect()
}

/// Firing count, total and the group's severity: the highest among firing
/// alerts, or among all when none fires.
async fn aggregate(conn: &mut AnyConnection, group_id: i64) -> Result<(i64, i64, Severity), StoreError> {
    let rows =
        sqlx::query("SELECT status, severity, COUNT(*) AS n FROM alerts WHERE group_id = $1 GROUP BY status, severity")
            .bind(group_id)
            .fetch_all(&mut *conn)
            .await?;
    let (mut firing, mut total) = (0, 0);
    let (mut sev_firing, mut sev_any) = (Severity::None, Severity::None);
    for row in rows {
        let n: i64 = row.try_get("n")?;
        let severity = Severity::parse(&row.try_get::<String, _>("severity")?).unwrap_or(Severity::None);
        total += n;
        sev_any = sev_any.max(severity);
        if row.try_get::<String, _>("status")? == "firing" {
            firing += n;
            sev_firing = sev_firing.max(severity);
        }
    }
    Ok((firing, total, if firing > 0 { sev_firing } else { sev_any }))
}

async fn insert_history(
    conn: &mut AnyConnection,
    group_id: i64,
    rows: &[(i64, &str, Option<String>)],
    actor: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(super::CHUNK) {
        let sql = format!(
            "INSERT INTO alert_history (group_id, alert_id, at, kind, actor, detail) VALUES {}",
            super::Params::of(conn).tuples(chunk.len(), 6, 0)
        );
        let mut query = sqlx::query(&sql);
        for (alert_id, kind, detail) in chunk {
            query = query
                .bind(group_id)
                .bind(*alert_id)
                .bind(now_ms)
                .bind(*kind)
                .bind(actor.map(str::to_owned))
                .bind(detail.clone());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

async fn group_event(
    conn: &mut AnyConnection,
    group_id: i64,
    kind: &str,
    actor: &str,
    detail: Option<String>,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO alert_history (group_id, alert_id, at, kind, actor, detail) VALUES ($1, NULL, $2, $3, $4, $5)",
    )
    .bind(group_id)
    .bind(now_ms)
    .bind(kind)
    .bind(actor)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies `op`. Each op is one conditional update, so of two concurrent
/// clicks exactly one changes the row; the other is told who was first.
pub(super) async fn apply_op(conn: &mut AnyConnection, op: &AlertOp, now_ms: i64) -> Result<OpOutcome, StoreError> {
    const BUMP: &str = "version = version + 1, dirty = 1, updated_at = $1";
    match op {
        AlertOp::Ack { group, by } => {
            let done = sqlx::query(&format!(
                "UPDATE alert_groups SET acked_by = $2, acked_at = $1, next_escalation_at = NULL, {BUMP} \
                 WHERE id = $3 AND state = 'firing' AND acked_by IS NULL"
            ))
            .bind(now_ms)
            .bind(by.as_str())
            .bind(*group)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if done == 1 {
                group_event(conn, *group, "acked", by, None, now_ms).await?;
                return Ok(OpOutcome::Done);
            }
            refusal(conn, *group, "acked_by", "acked_at", true).await
        }
        AlertOp::SilenceClaim { group, by, until_ms } => {
            let done = sqlx::query(
                "UPDATE alert_groups SET silenced_by = $2, silenced_at = $1, silenced_until = $3, silence_ids = NULL \
                 WHERE id = $4 AND (silenced_until IS NULL OR silenced_until <= $1)",
            )
            .bind(now_ms)
            .bind(by.as_str())
            .bind(*until_ms)
            .bind(*group)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if done == 1 {
                Ok(OpOutcome::Done)
            } else {
                refusal(conn, *group, "silenced_by", "silenced_at", false).await
            }
        }
        AlertOp::SilenceDone { group, by, ids } => {
            let row = sqlx::query(&format!(
                "UPDATE alert_groups SET silence_ids = $2, last_error = NULL, {BUMP} WHERE id = $3 AND silenced_by = $4 \
                 RETURNING silenced_until"
            ))
            .bind(now_ms)
            .bind(serde_json::to_string(ids).expect("strings always serialize"))
            .bind(*group)
            .bind(by.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else { return Ok(OpOutcome::NotFound) };
            let until: i64 = row.try_get("silenced_until")?;
            let detail = format!("until {} ({} silences)", crate::clock::format_ms(until), ids.len());
            group_event(conn, *group, "silenced", by, Some(detail), now_ms).await?;
            Ok(OpOutcome::Done)
        }
        AlertOp::SilenceFailed { group, by, error } => {
            sqlx::query(&format!(
                "UPDATE alert_groups SET silenced_by = NULL, silenced_at = NULL, silenced_until = NULL, silence_ids = NULL, \
                 last_error = $2, {BUMP} WHERE id = $3"
            ))
            .bind(now_ms)
            .bind(error.as_str())
            .bind(*group)
            .execute(&mut *conn)
            .await?;
            group_event(conn, *group, "refused", by, Some(error.clone()), now_ms).await?;
            Ok(OpOutcome::Done)
        }
        AlertOp::Failed { group, by, error } => {
            sqlx::query(&format!("UPDATE alert_groups SET last_error = $2, {BUMP} WHERE id = $3"))
                .bind(now_ms)
                .bind(error.as_str())
                .bind(*group)
                .execute(&mut *conn)
                .await?;
            group_event(conn, *group, "refused", by, Some(error.clone()), now_ms).await?;
            Ok(OpOutcome::Done)
        }
        AlertOp::Unsilence { group, by } => {
            let done = sqlx::query(&format!(
                "UPDATE alert_groups SET silenced_by = NULL, silenced_at = NULL, silenced_until = NULL, silence_ids = NULL, \
                 last_error = NULL, {BUMP} WHERE id = $2 AND silenced_until > $1"
            ))
            .bind(now_ms)
            .bind(*group)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if done == 1 {
                group_event(conn, *group, "unsilenced", by, None, now_ms).await?;
                return Ok(OpOutcome::Done);
            }
            exists(conn, *group).await
        }
        AlertOp::Resolve { group, by } => {
            let done = sqlx::query(&format!(
                "UPDATE alert_groups SET state = 'resolved', firing = 0, resolved_by = $2, next_escalation_at = NULL, \
                 {BUMP} WHERE id = $3 AND state = 'firing'"
            ))
            .bind(now_ms)
            .bind(by.as_str())
            .bind(*group)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if done == 0 {
                return match exists(conn, *group).await? {
                    OpOutcome::NotFound => Ok(OpOutcome::NotFound),
                    _ => Ok(OpOutcome::Resolved),
                };
            }
            let rows = sqlx::query(
                "UPDATE alerts SET status = 'resolved', ends_at = $1 WHERE group_id = $2 AND status = 'firing' RETURNING id",
            )
            .bind(now_ms)
            .bind(*group)
            .fetch_all(&mut *conn)
            .await?;
            let history: Vec<(i64, &str, Option<String>)> = rows
                .iter()
                .map(|r| Ok((r.try_get::<i64, _>("id")?, "resolved", None)))
                .collect::<Result<_, sqlx::Error>>()?;
            insert_history(conn, *group, &history, Some(by), now_ms).await?;
            Ok(OpOutcome::Done)
        }
    }
}

/// Why a conditional update changed nothing: gone, resolved (when that
/// stops the op, as for an ack), or someone was first.
async fn refusal(
    conn: &mut AnyConnection,
    group: i64,
    by_col: &str,
    at_col: &str,
    resolved_refuses: bool,
) -> Result<OpOutcome, StoreError> {
    let row = sqlx::query(&format!("SELECT state, {by_col} AS who, {at_col} AS at FROM alert_groups WHERE id = $1"))
        .bind(group)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(OpOutcome::NotFound) };
    let resolved = row.try_get::<String, _>("state")? == "resolved";
    match (row.try_get::<Option<String>, _>("who")?, row.try_get::<Option<i64>, _>("at")?) {
        _ if resolved && resolved_refuses => Ok(OpOutcome::Resolved),
        (Some(by), Some(at_ms)) => Ok(OpOutcome::Already { by, at_ms }),
        _ if resolved => Ok(OpOutcome::Resolved),
        _ => Ok(OpOutcome::NotFound),
    }
}

/// `Unchanged` when the group exists, else `NotFound`.
async fn exists(conn: &mut AnyConnection, group: i64) -> Result<OpOutcome, StoreError> {
    let row = sqlx::query("SELECT id FROM alert_groups WHERE id = $1").bind(group).fetch_optional(&mut *conn).await?;
    Ok(if row.is_some() { OpOutcome::Unchanged } else { OpOutcome::NotFound })
}

/// How many new group cards a chat gets per window before groups are folded into its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormLimit {
    pub max_cards: i64,
    pub window_ms: i64,
}

/// Where `group` is shown in each of `chats`, decided once per chat: its own
/// card while the chat has had fewer than `max_cards` new cards in the
/// window, else the chat's current digest (one that took a group within the
/// window), or a new digest. Later updates keep the placement.
pub(super) async fn place(
    conn: &mut AnyConnection,
    group: i64,
    chats: &[crate::event::ChatRef],
    storm: StormLimit,
    now_ms: i64,
) -> Result<Vec<(crate::event::ChatRef, Option<i64>)>, StoreError> {
    let since = now_ms - storm.window_ms;
    let mut out = Vec::with_capacity(chats.len());
    for chat in chats {
        let (platform, chat_id) = (chat.platform.as_str(), chat.id.as_str());
        let placed = sqlx::query(
            "SELECT digest_id FROM alert_placements WHERE group_id = $1 AND platform = $2 AND chat_id = $3",
        )
        .bind(group)
        .bind(platform)
        .bind(chat_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = placed {
            out.push((chat.clone(), row.try_get::<Option<i64>, _>("digest_id")?));
            continue;
        }
        let recent: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM alert_placements WHERE platform = $1 AND chat_id = $2 \
             AND digest_id IS NULL AND placed_at > $3",
        )
        .bind(platform)
        .bind(chat_id)
        .bind(since)
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
        let digest = if recent < storm.max_cards {
            None
        } else {
            let current = sqlx::query(
                "SELECT id FROM alert_digests WHERE platform = $1 AND chat_id = $2 AND updated_at > $3 \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(platform)
            .bind(chat_id)
            .bind(since)
            .fetch_optional(&mut *conn)
            .await?;
            let id: i64 = match current {
                Some(row) => row.try_get("id")?,
                None => sqlx::query(
                    "INSERT INTO alert_digests (platform, chat_id, opened_at, updated_at) VALUES ($1, $2, $3, $3) \
                     RETURNING id",
                )
                .bind(platform)
                .bind(chat_id)
                .bind(now_ms)
                .fetch_one(&mut *conn)
                .await?
                .try_get("id")?,
            };
            sqlx::query("UPDATE alert_digests SET updated_at = $1 WHERE id = $2")
                .bind(now_ms)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            Some(id)
        };
        sqlx::query(
            "INSERT INTO alert_placements (group_id, platform, chat_id, digest_id, placed_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(group)
        .bind(platform)
        .bind(chat_id)
        .bind(digest)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        out.push((chat.clone(), digest));
    }
    Ok(out)
}

/// Marks `group`'s card of `version` as queued; a newer version stays dirty.
pub(super) async fn mark_notified(conn: &mut AnyConnection, group: i64, version: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE alert_groups SET dirty = 0 WHERE id = $1 AND version = $2")
        .bind(group)
        .bind(version)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("string maps always serialize")
}

const GROUP_COLUMNS: &str = "id, group_key, source, labels, state, severity, firing, total, external_url, acked_by, \
    acked_at, silenced_by, silenced_at, silenced_until, silence_ids, resolved_by, last_error, escalation_level, escalated_to, \
    next_escalation_at, version, created_at, updated_at";

impl Store {
    pub async fn alert_group(&self, id: i64) -> Result<Option<GroupView>, StoreError> {
        let row = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM alert_groups WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_group).transpose()
    }

    /// Firing groups, most severe first, then newest.
    pub async fn firing_alert_groups(&self, limit: i64) -> Result<Vec<GroupView>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM alert_groups WHERE state = 'firing' ORDER BY \
             CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 WHEN 'info' THEN 2 ELSE 3 END, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_group).collect()
    }

    pub async fn count_firing_alert_groups(&self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM alert_groups WHERE state = 'firing'").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// Groups whose latest card is not queued yet (after a crash, or behind a busy notifier).
    pub async fn dirty_alert_groups(&self, limit: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT id FROM alert_groups WHERE dirty = 1 ORDER BY id LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// The group's alerts, firing first, then most severe, then oldest.
    pub async fn group_alerts(&self, group: i64, limit: i64) -> Result<Vec<AlertView>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, fingerprint, alertname, severity, status, labels, annotations, links, starts_at, ends_at, \
             first_seen, last_seen, received FROM alerts WHERE group_id = $1 ORDER BY \
             CASE status WHEN 'firing' THEN 0 ELSE 1 END, \
             CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 WHEN 'info' THEN 2 ELSE 3 END, id LIMIT $2",
        )
        .bind(group)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_alert).collect()
    }

    /// The group's recorded changes, newest last (the last `limit`).
    pub async fn alert_history(&self, group: i64, limit: i64) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT h.id, h.at, h.kind, h.actor, h.detail, a.alertname, a.fingerprint FROM alert_history h \
             LEFT JOIN alerts a ON a.id = h.alert_id WHERE h.group_id = $1 ORDER BY h.id DESC LIMIT $2",
        )
        .bind(group)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut entries = rows
            .iter()
            .map(|r| {
                let name: Option<String> = r.try_get("alertname")?;
                let fingerprint: Option<String> = r.try_get("fingerprint")?;
                Ok(HistoryEntry {
                    at_ms: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    alert: name.zip(fingerprint),
                    actor: r.try_get("actor")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        entries.reverse();
        Ok(entries)
    }

    /// The groups folded into `digest`, firing first, most severe first; and how many there are.
    pub async fn digest_groups(&self, digest: i64, limit: i64) -> Result<(Vec<GroupView>, i64), StoreError> {
        let columns = GROUP_COLUMNS.split(", ").map(|c| format!("g.{}", c.trim())).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM alert_groups g JOIN alert_placements p ON p.group_id = g.id WHERE p.digest_id = $1 \
             ORDER BY CASE g.state WHEN 'firing' THEN 0 ELSE 1 END, \
             CASE g.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 WHEN 'info' THEN 2 ELSE 3 END, g.id LIMIT $2"
        ))
        .bind(digest)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let groups = rows.iter().map(decode_group).collect::<Result<Vec<_>, _>>()?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM alert_placements WHERE digest_id = $1")
            .bind(digest)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok((groups, n))
    }

    /// Groups that may be due an escalation step at `now_ms`: firing, not
    /// acknowledged, not silenced, and with their latest card queued (so a
    /// mention never arrives before the card it is about).
    /// A page of them: ids above `after`, in id order.
    pub async fn escalation_candidates(
        &self,
        now_ms: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EscalationCandidate>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, severity, firing_since, escalation_level FROM alert_groups WHERE state = 'firing' \
             AND acked_by IS NULL AND firing_since IS NOT NULL AND dirty = 0 \
             AND (silenced_until IS NULL OR silenced_until <= $1) AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(now_ms)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let severity: String = r.try_get("severity")?;
                Ok(EscalationCandidate {
                    group: r.try_get("id")?,
                    severity: Severity::parse(&severity).unwrap_or(Severity::None),
                    firing_since: r.try_get("firing_since")?,
                    level: r.try_get("escalation_level")?,
                })
            })
            .collect()
    }

    /// Forgets alert groups resolved before `cut_ms`, with their alerts, history and placements.
    pub async fn cleanup_alerts(&self, cut_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let old = "SELECT id FROM alert_groups WHERE state = 'resolved' AND updated_at < $1";
        let mut n = 0;
        for table in ["alert_history", "alert_placements", "alerts"] {
            n += sqlx::query(&format!("DELETE FROM {table} WHERE group_id IN ({old})"))
                .bind(cut_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        n += sqlx::query("DELETE FROM alert_groups WHERE state = 'resolved' AND updated_at < $1")
            .bind(cut_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    pub async fn count_alerts(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM alerts").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }
}

fn decode_group(row: &sqlx::any::AnyRow) -> Result<GroupView, StoreError> {
    let id: i64 = row.try_get("id")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("alert group {id}: {what}"));
    let labels: String = row.try_get("labels")?;
    let labels = serde_json::from_str(&labels).map_err(|e| corrupt(e.to_string()))?;
    let acked = match (row.try_get::<Option<String>, _>("acked_by")?, row.try_get::<Option<i64>, _>("acked_at")?) {
        (Some(by), Some(at)) => Some((by, at)),
        _ => None,
    };
    let silenced = match (
        row.try_get::<Option<String>, _>("silenced_by")?,
        row.try_get::<Option<i64>, _>("silenced_at")?,
        row.try_get::<Option<i64>, _>("silenced_until")?,
        row.try_get::<Option<String>, _>("silence_ids")?,
    ) {
        // Without ids the silence is still being created: not shown yet.
        (Some(by), Some(at_ms), Some(until_ms), Some(ids)) => {
            Some(Silenced { by, at_ms, until_ms, ids: serde_json::from_str(&ids).map_err(|e| corrupt(e.to_string()))? })
        }
        _ => None,
    };
    let severity: String = row.try_get("severity")?;
    Ok(GroupView {
        id,
        key: row.try_get("group_key")?,
        source: row.try_get("source")?,
        labels,
        firing: row.try_get::<String, _>("state")? == "firing",
        severity: Severity::parse(&severity).ok_or_else(|| corrupt(format!("severity `{severity}`")))?,
        n_firing: row.try_get("firing")?,
        n_total: row.try_get("total")?,
        external_url: row.try_get("external_url")?,
        acked,
        silenced,
        resolved_by: row.try_get("resolved_by")?,
        last_error: row.try_get("last_error")?,
        escalation_level: row.try_get("escalation_level")?,
        escalated_to: row.try_get("escalated_to")?,
        next_escalation_at: row.try_get("next_escalation_at")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn decode_alert(row: &sqlx::any::AnyRow) -> Result<AlertView, StoreError> {
    let id: i64 = row.try_get("id")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("alert {id}: {what}"));
    let text = |col: &str| -> Result<String, StoreError> { Ok(row.try_get::<String, _>(col)?) };
    let severity = text("severity")?;
    Ok(AlertView {
        id,
        fingerprint: text("fingerprint")?,
        alertname: text("alertname")?,
        severity: Severity::parse(&severity).ok_or_else(|| corrupt(format!("severity `{severity}`")))?,
        status: if text("status")? == "firing" { AlertStatus::Firing } else { AlertStatus::Resolved },
        labels: serde_json::from_str(&text("labels")?).map_err(|e| corrupt(e.to_string()))?,
        annotations: serde_json::from_str(&text("annotations")?).map_err(|e| corrupt(e.to_string()))?,
        links: serde_json::from_str(&text("links")?).map_err(|e| corrupt(e.to_string()))?,
        starts_at: row.try_get("starts_at")?,
        ends_at: row.try_get("ends_at")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        received: row.try_get("received")?,
    })
}
