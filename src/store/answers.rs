//! Answers a model is writing: recorded with their first card, forgotten
//! with their last, so the answers a crash cut off can be finished at the
//! next start. Nothing here knows how an answer is written.

use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::event::{ChatRef, MessageId, PlatformKind, ThreadId};
use crate::i18n::Locale;
use crate::reply::CardKey;

/// A model's answer being written: the question, and where its card goes
/// (`key` is the card's, `reply_to` the question's message). Pending until
/// its final card is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAnswer {
    pub key: CardKey,
    pub chat: ChatRef,
    pub reply_to: Option<MessageId>,
    pub thread: Option<ThreadId>,
    pub locale: Locale,
    pub question: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerOp {
    /// The "writing" card is queued: the answer is pending.
    Start(PendingAnswer),
    /// The final card is queued.
    Finish(CardKey),
}

/// `owner` is the replica writing the answer.
pub(super) async fn apply(tx: &mut AnyConnection, op: &AnswerOp, owner: &str, now_ms: i64) -> Result<(), StoreError> {
    match op {
        AnswerOp::Start(a) => {
            // A replayed question finds its row there already: one answer per card.
            sqlx::query(
                "INSERT INTO answers (card_key, chat_platform, chat_id, reply_to, thread_id, locale, question, created_at, \
                 owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (card_key) DO NOTHING",
            )
            .bind(a.key.as_str())
            .bind(a.chat.platform.as_str())
            .bind(a.chat.id.as_str())
            .bind(a.reply_to.as_ref().map(MessageId::as_str))
            .bind(a.thread.as_ref().map(ThreadId::as_str))
            .bind(a.locale.as_str())
            .bind(a.question.as_str())
            .bind(now_ms)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        }
        AnswerOp::Finish(key) => {
            sqlx::query("DELETE FROM answers WHERE card_key = $1").bind(key.as_str()).execute(&mut *tx).await?;
        }
    }
    Ok(())
}

impl Store {
    /// Takes over the answers still being written by a replica that is gone
    /// (a crash cut them off), oldest first: this replica writes them again.
    pub async fn take_over_answers(&self, now_ms: i64) -> Result<Vec<PendingAnswer>, StoreError> {
        if !self.any_gone("answers", "TRUE", now_ms).await? {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE answers SET owner = $1 WHERE card_key IN (SELECT card_key FROM answers WHERE {}{}) \
             RETURNING card_key, chat_platform, chat_id, reply_to, thread_id, locale, question, created_at",
            Store::owner_is_gone(2),
            self.skip_locked()
        );
        let mut rows =
            sqlx::query(&sql).bind(self.replica()).bind(now_ms - self.lease_ms()).fetch_all(&self.pool).await?;
        // RETURNING follows no order.
        rows.sort_by_cached_key(|r| {
            (
                r.try_get::<i64, _>("created_at").unwrap_or_default(),
                r.try_get::<String, _>("card_key").unwrap_or_default(),
            )
        });
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let (platform, locale): (String, String) = (r.try_get("chat_platform")?, r.try_get("locale")?);
            let (Some(platform), Some(locale)) = (PlatformKind::parse(&platform), Locale::parse(&locale)) else {
                tracing::warn!(platform, locale, "a pending answer names an unknown platform or locale; left alone");
                continue;
            };
            out.push(PendingAnswer {
                key: CardKey::new(r.try_get::<String, _>("card_key")?),
                chat: ChatRef::new(platform, r.try_get::<String, _>("chat_id")?),
                reply_to: r.try_get::<Option<String>, _>("reply_to")?.map(MessageId::new),
                thread: r.try_get::<Option<String>, _>("thread_id")?.map(ThreadId::new),
                locale,
                question: r.try_get("question")?,
            });
        }
        Ok(out)
    }
}
