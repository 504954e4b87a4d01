//! What handlers return: a [`Reply`] is a text or a card for one chat, new or
//! replacing an earlier card in place. Handlers never send; the outbox does.

use std::fmt;

use crate::card::CardDraft;
use crate::event::{ChatRef, Event, MessageId, ThreadId};

/// Names a card across its updates, e.g. `status:<event id>` or `alert-group:42`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CardKey(String);

impl CardKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardMode {
    /// Post a new message.
    New,
    /// Replace every copy of the card already posted in this chat; post it
    /// when there is none yet.
    Update,
}

/// Someone a text calls out by name, so the platform notifies them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mention {
    /// Shown in the text (the principal's name).
    pub name: String,
    /// Their user id on the chat's platform (Feishu open_id, Telegram user id).
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    Text(String),
    /// A text followed by mentions of `people`.
    Mention {
        text: String,
        people: Vec<Mention>,
    },
    Card {
        key: CardKey,
        card: CardDraft,
        mode: CardMode,
    },
    /// A text file (a log excerpt), with a short caption.
    File {
        name: String,
        text: String,
        caption: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub chat: ChatRef,
    /// Answer this message (quoted or threaded, as the platform does it).
    pub reply_to: Option<MessageId>,
    pub thread: Option<ThreadId>,
    pub body: ReplyBody,
}

impl Reply {
    /// A reply into the chat and thread the event came from.
    pub fn to(event: &Event, body: ReplyBody) -> Self {
        Self { chat: event.chat.clone(), reply_to: event.message_id.clone(), thread: event.thread.clone(), body }
    }

    pub fn text(event: &Event, text: impl Into<String>) -> Self {
        Self::to(event, ReplyBody::Text(text.into()))
    }

    pub fn card(event: &Event, key: CardKey, card: CardDraft, mode: CardMode) -> Self {
        Self::to(event, ReplyBody::Card { key, card, mode })
    }
}

/// A reply as the outbox holds it: persisted, buttons already tokenized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedReply {
    pub id: i64,
    /// Idempotency key: the same reply is never enqueued or delivered twice.
    pub key: String,
    pub chat: ChatRef,
    pub reply_to: Option<MessageId>,
    pub thread: Option<ThreadId>,
    pub body: QueuedBody,
    pub attempts: u32,
    pub not_before_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueuedBody {
    Text(String),
    Mention { text: String, people: Vec<Mention> },
    Card { key: CardKey, card: crate::card::Card, mode: CardMode },
    File { name: String, text: String, caption: String },
}
