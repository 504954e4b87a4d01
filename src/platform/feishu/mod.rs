//! Feishu / Lark: the only code that knows Feishu's wire formats.
//!
//! Inbound, [`callback`] serves `/feishu/events` (HTTP callback mode): URL
//! challenges, decryption, signatures, verification tokens, a replay window,
//! and [`event`] turns bodies into events for the inbox. Outbound, [`Feishu`]
//! implements [`ChatPlatform`] over the Open API client in [`api`], rendering
//! cards and texts with [`card`], and reads replied-to messages back (events
//! name them only by `parent_id`).

pub mod api;
pub mod callback;
pub mod card;
pub mod crypto;
pub mod event;
pub mod ws;

use std::time::Duration;

use async_trait::async_trait;

use self::api::{ApiError, MsgType, OpenApi};
use super::{ChatPlatform, Content, Outbound, PlatformError, SendLimits, Sent};
use crate::event::{ChatRef, Event, EventKind, MessageId, PlatformKind};
use crate::i18n::{Catalog, LocaleRules, Msg};

/// Shown at the end of a card cut down to Feishu's 30 KB limit.
const TRUNCATED: &str = "内容超过 30 KB，已截断。Truncated: the card was over 30 KB.";

/// The body a card click is answered with at once, over either transport: a
/// toast in the chat's language. `None` for events that are not clicks. The
/// card itself is updated through the API after the handler ran.
pub fn click_response(catalog: &Catalog, locales: &LocaleRules, event: &Event) -> Option<serde_json::Value> {
    let EventKind::Action { .. } = event.kind else { return None };
    let toast = catalog.text(locales.for_chat(&event.chat), Msg::ButtonReceived, &[]);
    Some(serde_json::json!({"toast": {"type": "info", "content": toast}}))
}

/// How long Open API calls may take before they count as failed.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the Feishu or Lark Open Platform lives.
pub const FEISHU_DOMAIN: &str = "https://open.feishu.cn";
pub const LARK_DOMAIN: &str = "https://open.larksuite.com";

/// Sends replies through the Open API.
pub struct Feishu {
    api: OpenApi,
    limits: SendLimits,
}

impl Feishu {
    pub fn new(api: OpenApi, limits: SendLimits) -> Self {
        Self { api, limits }
    }
}

#[async_trait]
impl ChatPlatform for Feishu {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Feishu
    }

    /// From `[feishu.limits]`; the defaults keep under Feishu's documented limits.
    fn limits(&self) -> SendLimits {
        self.limits
    }

    async fn send(&self, msg: &Outbound<'_>) -> Result<Sent, PlatformError> {
        let in_thread = msg.thread.is_some();
        let deliver = |msg_type: MsgType, content: String, key: String| async move {
            match msg.reply_to {
                Some(parent) => self.api.reply(parent, msg_type, &content, &key, in_thread).await,
                None => self.api.send(msg.chat.id.as_str(), msg_type, &content, &key).await,
            }
        };
        match &msg.content {
            Content::Text(text) => {
                // Each part has its own idempotency key, so a retry after a partial
                // send repeats only what Feishu has not stored yet.
                let mut first = None;
                for (i, part) in card::render_text(text).into_iter().enumerate() {
                    let key = if i == 0 { msg.key.to_owned() } else { format!("{}.{i}", msg.key) };
                    let id = deliver(MsgType::Post, part, key).await?;
                    first.get_or_insert(id);
                }
                Ok(Sent { message_id: first })
            }
            Content::Mention { text, people } => {
                let id = deliver(MsgType::Post, card::render_mention(text, people), msg.key.to_owned()).await?;
                Ok(Sent { message_id: Some(id) })
            }
            Content::NewCard(c) => {
                let id = deliver(MsgType::Interactive, card::render_card(c, TRUNCATED), msg.key.to_owned()).await?;
                Ok(Sent { message_id: Some(id) })
            }
            // A Feishu file message has no caption; the file's name says what it is.
            Content::File { name, data, caption: _ } => {
                let file_key = self.api.upload_file(name, data).await?;
                let content = serde_json::json!({ "file_key": file_key }).to_string();
                let id = deliver(MsgType::File, content, msg.key.to_owned()).await?;
                Ok(Sent { message_id: Some(id) })
            }
            Content::UpdateCard { message, card: c } => {
                self.api.patch(message, &card::render_card(c, TRUNCATED)).await?;
                Ok(Sent { message_id: None })
            }
        }
    }

    /// GET /open-apis/im/v1/messages/:message_id: needs the scope to read
    /// messages (`im:message:readonly`, and `im:message.group_msg` in groups).
    async fn message_text(&self, _chat: &ChatRef, message: &MessageId) -> Result<Option<String>, PlatformError> {
        let item = self.api.message(message).await?;
        Ok(event::fetched_text(&item).map_err(ApiError::Malformed)?)
    }
}
