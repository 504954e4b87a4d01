//! Outbox rows: replies waiting for (or done with) delivery, and the card
//! posts that let a later update find every copy of a card.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::card::Card;
use crate::event::{ChatRef, MessageId, PlatformKind, ThreadId};
use crate::reply::{CardKey, CardMode, Mention, QueuedBody, QueuedReply};

/// A reply ready to be enqueued.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub key: String,
    pub chat: ChatRef,
    pub reply_to: Option<MessageId>,
    pub thread: Option<ThreadId>,
    pub body: QueuedBody,
}

/// The stored form of a reply. Fields are only ever added.
#[derive(Serialize, Deserialize)]
struct PayloadRow {
    reply_to: Option<String>,
    thread: Option<String>,
    #[serde(flatten)]
    body: BodyRow,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BodyRow {
    Text { text: String },
    Mention { text: String, people: Vec<Mention> },
    Card { card: Card, update: bool },
    File { name: String, text: String, caption: String },
}

/// Enqueues `deliveries`, skipping idempotency keys already present; returns
/// the ids of the rows inserted, by idempotency key. `owner` is the replica
/// that delivers them.
pub(super) async fn insert(
    conn: &mut AnyConnection,
    deliveries: &[&NewDelivery],
    owner: &str,
    now_ms: i64,
) -> Result<HashMap<String, i64>, StoreError> {
    let sql = format!(
        "INSERT INTO outbox (idem_key, platform, chat_id, card_key, card_update, payload, state, attempts, \
         next_attempt_at, created_at, owner) VALUES {} ON CONFLICT (idem_key) DO NOTHING RETURNING id, idem_key",
        super::Params::of(conn).tuples(deliveries.len(), 11, 0)
    );
    let mut query = sqlx::query(&sql);
    for d in deliveries {
        let (body, card_key, update) = match &d.body {
            QueuedBody::Text(text) => (BodyRow::Text { text: text.clone() }, None, false),
            QueuedBody::Mention { text, people } => {
                (BodyRow::Mention { text: text.clone(), people: people.clone() }, None, false)
            }
            QueuedBody::File { name, text, caption } => {
                (BodyRow::File { name: name.clone(), text: text.clone(), caption: caption.clone() }, None, false)
            }
            QueuedBody::Card { key, card, mode } => {
                let update = *mode == CardMode::Update;
                (BodyRow::Card { card: card.clone(), update }, Some(key.as_str().to_owned()), update)
            }
        };
        let payload = PayloadRow {
            reply_to: d.reply_to.as_ref().map(|m| m.as_str().to_owned()),
            thread: d.thread.as_ref().map(|t| t.as_str().to_owned()),
            body,
        };
        query = query
            .bind(d.key.as_str())
            .bind(d.chat.platform.as_str())
            .bind(d.chat.id.as_str())
            .bind(card_key)
            .bind(i64::from(update))
            .bind(serde_json::to_string(&payload).expect("outbox rows always serialize"))
            .bind(0_i64)
            .bind(0_i64)
            .bind(now_ms)
            .bind(now_ms)
            .bind(owner);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(|r| Ok((r.try_get::<String, _>("idem_key")?, r.try_get::<i64, _>("id")?))).collect()
}

pub(super) async fn mark_sent(conn: &mut AnyConnection, ids: &[i64], now_ms: i64) -> Result<(), StoreError> {
    let params = super::Params::of(conn);
    let sql = format!(
        "UPDATE outbox SET state = 1, finished_at = {} WHERE id IN ({})",
        params.list(1, 0),
        params.list(ids.len(), 1)
    );
    let mut query = sqlx::query(&sql).bind(now_ms);
    for id in ids {
        query = query.bind(*id);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Records where new cards were posted, so later updates find every copy.
pub(super) async fn record_posts(
    conn: &mut AnyConnection,
    posts: &[&(CardKey, ChatRef, MessageId)],
    now_ms: i64,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO card_posts (card_key, platform, chat_id, message_id, posted_at) VALUES {} ON CONFLICT DO NOTHING",
        super::Params::of(conn).tuples(posts.len(), 5, 0)
    );
    let mut query = sqlx::query(&sql);
    for (key, chat, message) in posts {
        query = query
            .bind(key.as_str())
            .bind(chat.platform.as_str())
            .bind(chat.id.as_str())
            .bind(message.as_str())
            .bind(now_ms);
    }
    query.execute(conn).await?;
    Ok(())
}

pub(super) async fn mark_retry(
    conn: &mut AnyConnection,
    id: i64,
    attempts: u32,
    next_attempt_at: i64,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET attempts = $1, next_attempt_at = $2, last_error = $3 WHERE id = $4")
        .bind(i64::from(attempts))
        .bind(next_attempt_at)
        .bind(error)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn mark_failed(
    conn: &mut AnyConnection,
    id: i64,
    attempts: u32,
    error: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET state = 2, attempts = $1, last_error = $2, finished_at = $3 WHERE id = $4")
        .bind(i64::from(attempts))
        .bind(error)
        .bind(now_ms)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// This replica's pending replies with an id above `after_id` created at
    /// or before `created_by_ms`, in id order.
    pub async fn outbox_pending(
        &self,
        after_id: i64,
        created_by_ms: i64,
        limit: u32,
    ) -> Result<Vec<QueuedReply>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE state = 0 AND owner = $1 AND id > $2 AND created_at <= $3 \
             ORDER BY id LIMIT $4"
        ))
        .bind(self.replica())
        .bind(after_id)
        .bind(created_by_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Claims up to `limit` pending replies with an id above `after_id` whose
    /// replica is gone (crashed, or handed them back at shutdown), in id
    /// order: this replica delivers them now. Rows another replica is
    /// claiming at the same moment are skipped, not waited for.
    pub async fn take_over_outbox(
        &self,
        after_id: i64,
        limit: u32,
        now_ms: i64,
    ) -> Result<Vec<QueuedReply>, StoreError> {
        if !self.any_gone("outbox", "state = 0", now_ms).await? {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE outbox SET owner = $1 WHERE id IN (SELECT id FROM outbox WHERE state = 0 AND id > $3 AND {} \
             ORDER BY id LIMIT $4{}) RETURNING {COLUMNS}",
            Store::owner_is_gone(2),
            self.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(self.replica())
            .bind(now_ms - self.lease_ms())
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut rows = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        // RETURNING follows no order.
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Whether row `id` still waits for delivery.
    pub async fn outbox_is_pending(&self, id: i64) -> Result<bool, StoreError> {
        let state: Option<i64> = sqlx::query("SELECT state FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get("state"))
            .transpose()?;
        Ok(state == Some(0))
    }

    pub async fn outbox_pending_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE state = 0").fetch_one(&self.pool).await?.try_get("n")?)
    }

    /// Pending replies this replica delivers (what its shutdown drains).
    pub async fn outbox_owned_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE state = 0 AND owner = $1")
            .bind(self.replica())
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// Where card `key` was posted in `chat`, oldest first.
    /// Whether a later update of the same card to the same chat is waiting:
    /// then this one need not be sent, since the later one replaces it whole.
    pub async fn card_update_superseded(&self, id: i64, key: &CardKey, chat: &ChatRef) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM outbox WHERE card_key = $1 AND state = 0 AND card_update = 1 AND platform = $2 \
             AND chat_id = $3 AND id > $4 LIMIT 1",
        )
        .bind(key.as_str())
        .bind(chat.platform.as_str())
        .bind(chat.id.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Every chat where the card `key` was posted.
    pub async fn card_post_chats(&self, key: &CardKey) -> Result<Vec<ChatRef>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT platform, chat_id FROM card_posts WHERE card_key = $1")
            .bind(key.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .filter_map(|r| {
                let platform: String = r.try_get("platform").ok()?;
                Some(Ok(ChatRef::new(PlatformKind::parse(&platform)?, r.try_get::<String, _>("chat_id").ok()?)))
            })
            .collect()
    }

    pub async fn card_posts(&self, key: &CardKey, chat: &ChatRef) -> Result<Vec<MessageId>, StoreError> {
        let rows = sqlx::query(
            "SELECT message_id FROM card_posts WHERE card_key = $1 AND platform = $2 AND chat_id = $3 ORDER BY posted_at",
        )
        .bind(key.as_str())
        .bind(chat.platform.as_str())
        .bind(chat.id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(MessageId::new(r.try_get::<String, _>("message_id")?))).collect()
    }
}

const COLUMNS: &str = "id, idem_key, platform, chat_id, card_key, payload, attempts, next_attempt_at";

fn decode(row: &sqlx::any::AnyRow) -> Result<QueuedReply, StoreError> {
    let id: i64 = row.try_get("id")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("outbox {id}: {what}"));
    let platform: String = row.try_get("platform")?;
    let platform = PlatformKind::parse(&platform).ok_or_else(|| corrupt(format!("platform `{platform}`")))?;
    let payload: String = row.try_get("payload")?;
    let payload: PayloadRow = serde_json::from_str(&payload).map_err(|e| corrupt(e.to_string()))?;
    let body = match payload.body {
        BodyRow::Text { text } => QueuedBody::Text(text),
        BodyRow::Mention { text, people } => QueuedBody::Mention { text, people },
        BodyRow::File { name, text, caption } => QueuedBody::File { name, text, caption },
        BodyRow::Card { card, update } => {
            let key: Option<String> = row.try_get("card_key")?;
            let key = key.ok_or_else(|| corrupt("card without card_key".into()))?;
            QueuedBody::Card {
                key: CardKey::new(key),
                card,
                mode: if update { CardMode::Update } else { CardMode::New },
            }
        }
    };
    let attempts: i64 = row.try_get("attempts")?;
    Ok(QueuedReply {
        id,
        key: row.try_get("idem_key")?,
        chat: ChatRef::new(platform, row.try_get::<String, _>("chat_id")?),
        reply_to: payload.reply_to.map(MessageId::new),
        thread: payload.thread.map(ThreadId::new),
        body,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        not_before_ms: row.try_get("next_attempt_at")?,
    })
}
