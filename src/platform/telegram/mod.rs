//! Telegram: the only code that knows the Bot API's wire formats, spoken
//! through teloxide's typed client.
//!
//! Inbound, [`poll`] long-polls getUpdates with the offset kept in the store,
//! or [`webhook`] serves `/telegram/webhook`; both turn updates into events
//! with [`update`] and put them in the inbox before Telegram may forget them.
//! Outbound, [`Telegram`] implements [`ChatPlatform`]: cards as HTML with an
//! inline keyboard ([`render`]), edited in place; long texts split at line
//! boundaries or sent as a document.
//!
//! The Bot API has no idempotency key: a send that timed out after Telegram
//! stored it is sent again by the outbox's retry (at least once, not exactly once).

pub mod poll;
pub mod render;
pub mod update;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use teloxide::payloads::setters::*;
use teloxide::requests::Requester;
use teloxide::types::{
    AllowedUpdate, BotCommand, CallbackQueryId, ChatId, InputFile, LinkPreviewOptions, MessageId as TgMessageId,
    ParseMode, ReplyParameters, ThreadId as TgThreadId,
};
use teloxide::{ApiError, Bot, RequestError};

use super::{ChatPlatform, Content, Outbound, PlatformError, SendLimits, Sent};
use crate::command::CommandSet;
use crate::event::{ChatRef, MessageId, PlatformKind};
use crate::i18n::{Catalog, Locale, LocaleRules, Msg};

pub const API_URL: &str = "https://api.telegram.org";
pub const CHANNEL: &str = "telegram";
/// The store cursor holding the next getUpdates offset.
pub const OFFSET_CURSOR: &str = "telegram.offset";
/// The lease of the one replica that polls getUpdates.
pub const POLL_LEASE: &str = "telegram.poller";
/// The update kinds we handle; Telegram does not send the others.
pub const ALLOWED_UPDATES: [AllowedUpdate; 2] = [AllowedUpdate::Message, AllowedUpdate::CallbackQuery];

/// Shown at the end of a card cut down to Telegram's 4096-character limit.
const TRUNCATED: &str = "Truncated: the card was over 4096 characters. 内容过长，已截断。";

/// A Bot API client for `api_url`. Requests may take `timeout`, which must
/// exceed the long-poll timeout.
pub fn client(api_url: &str, token: &str, timeout: Duration) -> anyhow::Result<Bot> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .user_agent(concat!("opsclaw/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let url = reqwest::Url::parse(api_url)?;
    Ok(Bot::with_client(token, http).set_api_url(url))
}

/// Asks Telegram who the bot is. Network trouble during a restart is waited
/// out for up to `patience`; a refused token fails at once.
pub async fn whoami(bot: &Bot, patience: Duration) -> anyhow::Result<update::Me> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_secs(1);
    loop {
        let answer = bot.get_me().await;
        // An answer teloxide cannot read whole still names the bot.
        if let Err(RequestError::InvalidJson { raw, source }) = &answer
            && let Some(me) = partial_me(raw)
        {
            tracing::warn!(error = %source, "getMe answer only partly readable; using its id and username");
            return Ok(me);
        }
        match answer {
            Ok(me) => {
                let Some(username) = me.user.username.clone() else {
                    anyhow::bail!("getMe returned a bot without a username");
                };
                return Ok(update::Me { id: me.user.id.0, username });
            }
            Err(e) if platform_error(e.clone()).is_retryable() && tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "asking Telegram who the bot is failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(anyhow::anyhow!("getMe failed: {e}")),
        }
    }
}

fn partial_me(raw: &str) -> Option<update::Me> {
    let body: serde_json::Value = serde_json::from_str(raw).ok()?;
    let user = body.get("result").filter(|_| body["ok"] == true)?;
    Some(update::Me { id: user["id"].as_u64()?, username: user["username"].as_str()?.to_owned() })
}

/// Registers the command menu: every command Telegram accepts, with English
/// descriptions by default and Chinese for Chinese-speaking users.
pub async fn set_commands(bot: &Bot, commands: &CommandSet) -> Result<(), RequestError> {
    let valid = |name: &str| {
        (1..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let menu = |locale: Locale| -> Vec<BotCommand> {
        commands
            .iter()
            .filter(|c| valid(&c.name))
            .take(100)
            .map(|c| {
                let summary: String = c.summary.get(locale).chars().take(256).collect();
                BotCommand::new(c.name.clone(), if summary.is_empty() { c.name.clone() } else { summary })
            })
            .collect()
    };
    for c in commands.iter().filter(|c| !valid(&c.name)) {
        tracing::warn!(command = %c.name, "not in Telegram's command menu: names there are 1-32 of a-z, 0-9 and _");
    }
    bot.set_my_commands(menu(Locale::En)).await?;
    bot.set_my_commands(menu(Locale::ZhCn)).language_code("zh").await?;
    Ok(())
}

/// Answers a button press with a toast in the chat's language. A late or
/// repeated answer is refused by Telegram and only logged: the press itself
/// is already in the inbox.
pub fn answer_click(bot: &Bot, query: CallbackQueryId, chat: &ChatRef, catalog: &Catalog, locales: &LocaleRules) {
    let toast = catalog.text(locales.for_chat(chat), Msg::ButtonReceived, &[]);
    let bot = bot.clone();
    tokio::spawn(async move {
        if let Err(e) = bot.answer_callback_query(query).text(toast).await {
            tracing::debug!(error = %e, "answering a button press failed");
        }
    });
}

/// Sends replies through the Bot API.
pub struct Telegram {
    bot: Bot,
    limits: SendLimits,
    document_over_chars: usize,
    /// Parts of split texts already sent, by outbox key: a retry (after a 429
    /// on the third part, say) resumes where it stopped instead of showing
    /// the first parts again. Kept in memory; after a restart a text starts over.
    parts_sent: std::sync::Mutex<std::collections::HashMap<String, PartsSent>>,
}

#[derive(Debug, Clone, Default)]
struct PartsSent {
    n: usize,
    first: Option<MessageId>,
}

impl Telegram {
    pub fn new(bot: Bot, limits: SendLimits, document_over_chars: usize) -> Arc<Self> {
        Arc::new(Self { bot, limits, document_over_chars, parts_sent: Default::default() })
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, PartsSent>> {
        self.parts_sent.lock().expect("the parts map lock is never poisoned")
    }

    async fn send_text(&self, msg: &Outbound<'_>, chat: ChatId, text: &str) -> Result<Sent, PlatformError> {
        let len = text.encode_utf16().count();
        if len > self.document_over_chars {
            // Long outputs read better as a file than as a wall of messages.
            let caption: String = text.lines().next().unwrap_or_default().chars().take(200).collect();
            let file = InputFile::memory(text.as_bytes().to_vec()).file_name("reply.txt");
            let mut request = self.bot.send_document(chat, file).caption(format!("{caption} … ({len} characters)"));
            if let Some(thread) = thread(msg)? {
                request = request.message_thread_id(thread);
            }
            if let Some(parent) = parent(msg)? {
                request = request.reply_parameters(parent);
            }
            return Ok(Sent { message_id: stored(request.await)? });
        }
        let parts = render::split_text(text, render::MAX_TEXT);
        let mut done = self.progress().get(msg.key).cloned().unwrap_or_default();
        for part in parts.into_iter().skip(done.n) {
            let mut request = self.bot.send_message(chat, part).link_preview_options(no_preview());
            if let Some(thread) = thread(msg)? {
                request = request.message_thread_id(thread);
            }
            // Only the first part quotes the message it answers.
            if done.n == 0
                && let Some(parent) = parent(msg)?
            {
                request = request.reply_parameters(parent);
            }
            match stored(request.await) {
                Ok(id) => {
                    if done.n == 0 {
                        done.first = id;
                    }
                    done.n += 1;
                }
                Err(e) => {
                    let mut progress = self.progress();
                    // A refused part ends the delivery for good; nothing will resume it.
                    if e.is_retryable() && done.n > 0 {
                        progress.insert(msg.key.to_owned(), done);
                    } else {
                        progress.remove(msg.key);
                    }
                    return Err(e);
                }
            }
        }
        self.progress().remove(msg.key);
        Ok(Sent { message_id: done.first })
    }
}

#[async_trait]
impl ChatPlatform for Telegram {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Telegram
    }

    /// From `[telegram.limits]`; the defaults are Telegram's documented limits.
    fn limits(&self) -> SendLimits {
        self.limits
    }

    /// Group and supergroup ids are negative; private chats are users' ids.
    fn is_group(&self, chat: &ChatRef) -> bool {
        chat.id.as_str().starts_with('-')
    }

    async fn send(&self, msg: &Outbound<'_>) -> Result<Sent, PlatformError> {
        let chat = ChatId(
            msg.chat
                .id
                .as_str()
                .parse()
                .map_err(|_| PlatformError::Rejected(format!("bad chat id {}", msg.chat.id)))?,
        );
        match &msg.content {
            Content::Text(text) => self.send_text(msg, chat, text).await,
            Content::Mention { text, people } => {
                let (text, entities) = render::mention(text, people);
                let mut request =
                    self.bot.send_message(chat, text).entities(entities).link_preview_options(no_preview());
                if let Some(thread) = thread(msg)? {
                    request = request.message_thread_id(thread);
                }
                Ok(Sent { message_id: stored(request.await)? })
            }
            Content::NewCard(card) => {
                let mut request = self
                    .bot
                    .send_message(chat, render::card_html(card, TRUNCATED))
                    .parse_mode(ParseMode::Html)
                    .link_preview_options(no_preview());
                if let Some(keyboard) = render::keyboard(card) {
                    request = request.reply_markup(keyboard);
                }
                if let Some(thread) = thread(msg)? {
                    request = request.message_thread_id(thread);
                }
                if let Some(parent) = parent(msg)? {
                    request = request.reply_parameters(parent);
                }
                Ok(Sent { message_id: stored(request.await)? })
            }
            Content::File { name, data, caption } => {
                let file = InputFile::memory(data.to_vec()).file_name(name.to_string());
                // A caption is at most 1024 characters.
                let caption: String = caption.chars().take(1000).collect();
                let mut request = self.bot.send_document(chat, file).caption(caption);
                if let Some(thread) = thread(msg)? {
                    request = request.message_thread_id(thread);
                }
                if let Some(parent) = parent(msg)? {
                    request = request.reply_parameters(parent);
                }
                Ok(Sent { message_id: stored(request.await)? })
            }
            Content::UpdateCard { message, card } => {
                let id = TgMessageId(number(message.as_str())?);
                // Without `reply_markup` Telegram removes the keyboard, which is
                // right for a card that no longer has buttons.
                let mut request = self
                    .bot
                    .edit_message_text(chat, id, render::card_html(card, TRUNCATED))
                    .parse_mode(ParseMode::Html)
                    .link_preview_options(no_preview());
                if let Some(keyboard) = render::keyboard(card) {
                    request = request.reply_markup(keyboard);
                }
                match request.await {
                    // A double click renders the same card twice: nothing to change is success.
                    Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(Sent { message_id: None }),
                    result => stored(result).map(|_| Sent { message_id: None }),
                }
            }
        }
    }
}

/// The id of the message a send or edit stored. When Telegram said `ok` but
/// its `result` is not a Message teloxide can read, the message was still
/// stored: sending it again would show it twice, so it counts as sent, with
/// the id read from the raw answer where there is one.
fn stored(result: Result<teloxide::types::Message, RequestError>) -> Result<Option<MessageId>, PlatformError> {
    match result {
        Ok(message) => Ok(Some(MessageId::new(message.id.0.to_string()))),
        Err(RequestError::InvalidJson { raw, source }) => {
            let body: serde_json::Value = serde_json::from_str(&raw).unwrap_or_default();
            if body["ok"] != true {
                return Err(platform_error(RequestError::InvalidJson { raw, source }));
            }
            tracing::warn!(error = %source, "the Bot API said ok with a result we cannot read; counted as sent");
            Ok(body["result"]["message_id"].as_i64().map(|id| MessageId::new(id.to_string())))
        }
        Err(e) => Err(platform_error(e)),
    }
}

fn no_preview() -> LinkPreviewOptions {
    LinkPreviewOptions {
        is_disabled: true,
        url: None,
        prefer_small_media: false,
        prefer_large_media: false,
        show_above_text: false,
    }
}

fn number(id: &str) -> Result<i32, PlatformError> {
    id.parse().map_err(|_| PlatformError::Rejected(format!("`{id}` is not a Telegram message id")))
}

fn thread(msg: &Outbound<'_>) -> Result<Option<TgThreadId>, PlatformError> {
    msg.thread.map(|t| Ok(TgThreadId(TgMessageId(number(t.as_str())?)))).transpose()
}

fn parent(msg: &Outbound<'_>) -> Result<Option<ReplyParameters>, PlatformError> {
    // The message may be gone by the time the reply leaves; answer anyway.
    msg.reply_to
        .map(|m| Ok(ReplyParameters::new(TgMessageId(number(m.as_str())?)).allow_sending_without_reply()))
        .transpose()
}

/// What the outbox should do about a failed request.
pub fn platform_error(e: RequestError) -> PlatformError {
    match e {
        RequestError::RetryAfter(after) => PlatformError::RateLimited { retry_after: after.duration() },
        RequestError::Network(_) | RequestError::Io(_) => PlatformError::Retryable(e.to_string()),
        // A 5xx body, or a proxy's error page: the server is having trouble.
        RequestError::InvalidJson { .. } => PlatformError::Retryable(e.to_string()),
        RequestError::Api(ApiError::Unknown(ref text)) if text.starts_with("Internal Server Error") => {
            PlatformError::Retryable(e.to_string())
        }
        // Messages from the supergroup arrive with its new id, so conversations
        // follow on their own; configured chats (alert routes) must be updated.
        RequestError::MigrateToChatId(to) => {
            PlatformError::Rejected(format!("the group was upgraded to supergroup {to}: configure it as telegram:{to}"))
        }
        RequestError::Api(_) => PlatformError::Rejected(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ok_answer_counts_as_sent_even_when_unreadable() {
        let invalid = |raw: &str| RequestError::InvalidJson {
            source: std::sync::Arc::new(serde_json::from_str::<u8>("x").unwrap_err()),
            raw: raw.into(),
        };
        let id = stored(Err(invalid(r#"{"ok":true,"result":{"message_id":9,"weird":1}}"#))).unwrap();
        assert_eq!(id, Some(MessageId::new("9")));
        assert_eq!(stored(Err(invalid(r#"{"ok":true,"result":true}"#))).unwrap(), None);
        assert!(matches!(stored(Err(invalid("<html>bad gateway</html>"))), Err(PlatformError::Retryable(_))));
    }

    #[test]
    fn a_partly_readable_get_me_still_names_the_bot() {
        let me =
            partial_me(r#"{"ok":true,"result":{"id":7,"is_bot":true,"first_name":"B","username":"b_bot"}}"#).unwrap();
        assert_eq!((me.id, me.username.as_str()), (7, "b_bot"));
        assert!(partial_me(r#"{"ok":false,"description":"Unauthorized"}"#).is_none());
        assert!(partial_me("<html>").is_none());
    }

    #[test]
    fn errors_map_to_what_the_outbox_does() {
        use teloxide::types::Seconds;
        assert_eq!(
            platform_error(RequestError::RetryAfter(Seconds::from_seconds(3))),
            PlatformError::RateLimited { retry_after: Duration::from_secs(3) }
        );
        assert!(matches!(platform_error(RequestError::Api(ApiError::BotBlocked)), PlatformError::Rejected(_)));
        assert!(matches!(
            platform_error(RequestError::Api(ApiError::Unknown("Internal Server Error".into()))),
            PlatformError::Retryable(_)
        ));
    }
}
