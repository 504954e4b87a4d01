//! Inbox rows: every accepted event, kept after handling for deduplication
//! (Feishu redelivers for hours) and replayed at startup while still pending.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::event::{
    ChatKind, ChatRef, Event, EventId, EventKind, MessageId, PlatformKind, Quoted, Sender, ThreadId, UserId,
};

/// The stored form of an [`Event`]. Fields are only ever added.
#[derive(Serialize, Deserialize)]
struct EventRow {
    platform: String,
    chat_id: String,
    direct: bool,
    sender_id: String,
    sender_name: String,
    message_id: Option<String>,
    thread: Option<String>,
    received_at_ms: i64,
    #[serde(flatten)]
    kind: KindRow,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum KindRow {
    Message {
        text: String,
        mentions_bot: bool,
        // Absent in rows written before replies were kept, and left out when
        // there is none, so those rows read back unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quoted: Option<QuotedRow>,
    },
    Action {
        token: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum QuotedRow {
    Text(String),
    Id(String),
}

/// Inserts `events`, skipping ids already present; returns the ids inserted.
/// `owner` is the replica that will handle them.
pub(super) async fn insert(
    conn: &mut AnyConnection,
    events: &[&Event],
    owner: &str,
) -> Result<HashSet<String>, StoreError> {
    let sql = format!(
        "INSERT INTO inbox (event_id, platform, chat_id, payload, state, received_at, owner) VALUES {} \
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        super::Params::of(conn).tuples(events.len(), 7, 0)
    );
    let mut query = sqlx::query(&sql);
    for event in events {
        query = query
            .bind(event.id.as_str())
            .bind(event.chat.platform.as_str())
            .bind(event.chat.id.as_str())
            .bind(encode(event))
            .bind(0_i64)
            .bind(event.received_at_ms)
            .bind(owner);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>("event_id")?)).collect()
}

pub(super) async fn mark_done(conn: &mut AnyConnection, events: &[&EventId], now_ms: i64) -> Result<(), StoreError> {
    let params = super::Params::of(conn);
    let sql = format!(
        "UPDATE inbox SET state = 1, done_at = {} WHERE event_id IN ({})",
        params.list(1, 0),
        params.list(events.len(), 1)
    );
    let mut query = sqlx::query(&sql).bind(now_ms);
    for event in events {
        query = query.bind(event.as_str());
    }
    query.execute(conn).await?;
    Ok(())
}

fn encode(event: &Event) -> String {
    let row = EventRow {
        platform: event.chat.platform.as_str().to_owned(),
        chat_id: event.chat.id.as_str().to_owned(),
        direct: event.chat_kind == ChatKind::Direct,
        sender_id: event.sender.id.as_str().to_owned(),
        sender_name: event.sender.display_name.clone(),
        message_id: event.message_id.as_ref().map(|m| m.as_str().to_owned()),
        thread: event.thread.as_ref().map(|t| t.as_str().to_owned()),
        received_at_ms: event.received_at_ms,
        kind: match &event.kind {
            EventKind::Message { text, mentions_bot, quoted } => KindRow::Message {
                text: text.clone(),
                mentions_bot: *mentions_bot,
                quoted: quoted.as_ref().map(|q| match q {
                    Quoted::Text(text) => QuotedRow::Text(text.clone()),
                    Quoted::Id(id) => QuotedRow::Id(id.as_str().to_owned()),
                }),
            },
            EventKind::Action { token } => KindRow::Action { token: token.clone() },
        },
    };
    serde_json::to_string(&row).expect("event rows always serialize")
}

impl Store {
    /// Takes over events accepted but not yet handled whose replica is gone
    /// (a crash, or handed back at shutdown), oldest first: this replica
    /// handles them now. At startup on SQLite that is every pending event.
    pub async fn take_over_events(&self, now_ms: i64) -> Result<Vec<Event>, StoreError> {
        const PAGE: usize = 500;
        if !self.any_gone("inbox", "state = 0", now_ms).await? {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE inbox SET owner = $1 WHERE event_id IN (SELECT event_id FROM inbox WHERE state = 0 AND seq > $3 \
             AND {} ORDER BY seq LIMIT {PAGE}{}) RETURNING seq, event_id, payload",
            Store::owner_is_gone(2),
            self.skip_locked()
        );
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let rows = sqlx::query(&sql)
                .bind(self.replica())
                .bind(now_ms - self.lease_ms())
                .bind(after)
                .fetch_all(&self.pool)
                .await?;
            let mut page = rows
                .iter()
                .map(|r| Ok((r.try_get::<i64, _>("seq")?, decode(r.try_get("event_id")?, r.try_get("payload")?)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            // RETURNING follows no order.
            page.sort_by_key(|(seq, _)| *seq);
            let full = page.len() == PAGE;
            after = page.last().map_or(after, |(seq, _)| *seq);
            events.extend(page.into_iter().map(|(_, e)| e));
            if !full {
                return Ok(events);
            }
        }
    }

    pub async fn inbox_pending_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM inbox WHERE state = 0").fetch_one(&self.pool).await?.try_get("n")?)
    }
}

fn decode(event_id: String, payload: String) -> Result<Event, StoreError> {
    let row: EventRow =
        serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt(format!("inbox {event_id}: {e}")))?;
    let platform = PlatformKind::parse(&row.platform)
        .ok_or_else(|| StoreError::Corrupt(format!("inbox {event_id}: platform `{}`", row.platform)))?;
    Ok(Event {
        id: EventId::from_stored(event_id),
        chat: ChatRef::new(platform, row.chat_id),
        chat_kind: if row.direct { ChatKind::Direct } else { ChatKind::Group },
        sender: Sender { id: UserId::new(row.sender_id), display_name: row.sender_name },
        message_id: row.message_id.map(MessageId::new),
        thread: row.thread.map(ThreadId::new),
        received_at_ms: row.received_at_ms,
        kind: match row.kind {
            KindRow::Message { text, mentions_bot, quoted } => EventKind::Message {
                text,
                mentions_bot,
                quoted: quoted.map(|q| match q {
                    QuotedRow::Text(text) => Quoted::Text(text),
                    QuotedRow::Id(id) => Quoted::Id(MessageId::new(id)),
                }),
            },
            KindRow::Action { token } => EventKind::Action { token },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(quoted: Option<Quoted>) -> Event {
        Event {
            id: EventId::new(PlatformKind::Feishu, "ev1"),
            chat: ChatRef::new(PlatformKind::Feishu, "oc_1"),
            chat_kind: ChatKind::Group,
            sender: Sender { id: UserId::new("ou_1"), display_name: "张三".into() },
            message_id: Some(MessageId::new("om_1")),
            thread: None,
            received_at_ms: 1,
            kind: EventKind::Message { text: "/kb add T".into(), mentions_bot: true, quoted },
        }
    }

    fn check(event: Event) {
        let payload = encode(&event);
        assert_eq!(decode(event.id.as_str().to_owned(), payload).unwrap(), event);
    }

    #[test]
    fn quotes_survive_the_inbox() {
        check(message(None));
        check(message(Some(Quoted::Id(MessageId::new("om_parent")))));
        check(message(Some(Quoted::Text("Promote the replica.".into()))));
        check(message(Some(Quoted::Text(String::new()))));
    }

    #[test]
    fn rows_written_before_quotes_read_back_unchanged() {
        let old = r#"{"platform":"feishu","chat_id":"oc_1","direct":false,"sender_id":"ou_1","sender_name":"张三","message_id":"om_1","thread":null,"received_at_ms":1,"kind":"message","text":"/kb add T","mentions_bot":true}"#;
        assert_eq!(decode("feishu:ev1".into(), old.into()).unwrap(), message(None));
        assert_eq!(encode(&message(None)), old, "no quote, no new field");
    }
}
