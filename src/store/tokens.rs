//! Button action tokens: the server-side half of every card button.

use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::action::{Action, ActionToken, Grant};
use crate::event::{ChatRef, PlatformKind};
use crate::policy::Role;
use crate::reply::CardKey;

#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: ActionToken,
    pub card_key: CardKey,
    pub chat: ChatRef,
    pub grant: Grant,
    pub expires_at_ms: i64,
}

/// A token as looked up when its button is pressed.
#[derive(Debug, Clone)]
pub struct StoredGrant {
    pub grant: Grant,
    pub card_key: CardKey,
    pub chat: ChatRef,
    pub expires_at_ms: i64,
}

pub(super) async fn insert(conn: &mut AnyConnection, tokens: &[&NewToken], now_ms: i64) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO action_tokens (token, card_key, platform, chat_id, action, role, only_keys, created_at, expires_at) \
         VALUES {}",
        super::Params::of(conn).tuples(tokens.len(), 9, 0)
    );
    let mut query = sqlx::query(&sql);
    for t in tokens {
        query = query
            .bind(t.token.as_str())
            .bind(t.card_key.as_str())
            .bind(t.chat.platform.as_str())
            .bind(t.chat.id.as_str())
            .bind(serde_json::to_string(&t.grant.action).expect("actions always serialize"))
            .bind(t.grant.role.as_ref().map(|r| r.as_str().to_owned()))
            .bind(serde_json::to_string(&t.grant.only).expect("strings always serialize"))
            .bind(now_ms)
            .bind(t.expires_at_ms);
    }
    query.execute(conn).await?;
    Ok(())
}

impl Store {
    pub async fn grant(&self, token: &ActionToken) -> Result<Option<StoredGrant>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT card_key, platform, chat_id, action, role, only_keys, expires_at FROM action_tokens WHERE token = $1",
        )
        .bind(token.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let corrupt = |what: String| StoreError::Corrupt(format!("action token: {what}"));
        let action: String = row.try_get("action")?;
        let action: Action = serde_json::from_str(&action).map_err(|e| corrupt(e.to_string()))?;
        let role: Option<String> = row.try_get("role")?;
        let role = role.map(|r| Role::parse(&r)).transpose().map_err(corrupt)?;
        let only: String = row.try_get("only_keys")?;
        let only: Vec<String> = serde_json::from_str(&only).map_err(|e| corrupt(e.to_string()))?;
        let platform: String = row.try_get("platform")?;
        let platform = PlatformKind::parse(&platform).ok_or_else(|| corrupt(format!("platform `{platform}`")))?;
        Ok(Some(StoredGrant {
            grant: Grant { action, role, only },
            card_key: CardKey::new(row.try_get::<String, _>("card_key")?),
            chat: ChatRef::new(platform, row.try_get::<String, _>("chat_id")?),
            expires_at_ms: row.try_get("expires_at")?,
        }))
    }
}
