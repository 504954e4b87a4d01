//! The boundary to chat platforms. Each platform lives in its own submodule
//! and is the only code that knows its wire format: adapters turn platform
//! input into [`crate::event::Event`]s, and a [`ChatPlatform`] turns persisted
//! replies into platform messages. [`Reader`] is the read-only view of the
//! platforms that handlers get: it fetches what an event only names (the
//! text of a replied-to message), and cannot send.
//!
//! [`Channels`] is the shared record of every inbound channel's health, read
//! by `/status`, `/readyz` and `/metrics`.

pub mod console;
pub mod feishu;
pub mod telegram;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::card::Card;
use crate::event::{ChatRef, MessageId, PlatformKind, Quoted, ThreadId};

/// Sends replies to one platform.
#[async_trait]
pub trait ChatPlatform: Send + Sync + 'static {
    fn kind(&self) -> PlatformKind;

    /// How fast this platform lets us send.
    fn limits(&self) -> SendLimits;

    /// Whether `chat` is a group, for [`SendLimits::per_group`]. Only
    /// platforms whose chat ids tell (Telegram's are negative) override it.
    fn is_group(&self, _chat: &ChatRef) -> bool {
        false
    }

    /// Delivers one message. `msg.key` is stable across retries and restarts;
    /// platforms that support idempotency keys must pass it on.
    async fn send(&self, msg: &Outbound<'_>) -> Result<Sent, PlatformError>;

    /// The text of `message` in `chat`, for platforms whose events name a
    /// replied-to message only by id. `None` when it has no text (an image, a
    /// card); platforms that send replied-to messages along keep the default.
    async fn message_text(&self, _chat: &ChatRef, _message: &MessageId) -> Result<Option<String>, PlatformError> {
        Ok(None)
    }
}

/// How long reading a message back may take: the handler waits for it, and
/// the chat's next events wait for the handler.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The platforms as handlers see them: able to read a message an event
/// quotes, unable to send (sending is the outbox's alone).
#[derive(Clone)]
pub struct Reader {
    platforms: Arc<HashMap<PlatformKind, Arc<dyn ChatPlatform>>>,
}

impl Reader {
    pub fn new(platforms: &[Arc<dyn ChatPlatform>]) -> Self {
        Self { platforms: Arc::new(platforms.iter().map(|p| (p.kind(), p.clone())).collect()) }
    }

    /// The text of the message an event in `chat` replies to, read from the
    /// platform when the event carried only its id (within [`READ_TIMEOUT`]).
    /// `None` when that message has no text.
    pub async fn quoted_text(&self, chat: &ChatRef, quoted: &Quoted) -> Result<Option<String>, PlatformError> {
        let text = match quoted {
            Quoted::Text(text) => Some(text.clone()),
            Quoted::Id(message) => {
                let Some(platform) = self.platforms.get(&chat.platform) else {
                    return Err(PlatformError::Rejected(format!("platform {} is not enabled", chat.platform)));
                };
                match tokio::time::timeout(READ_TIMEOUT, platform.message_text(chat, message)).await {
                    Ok(result) => result?,
                    Err(_) => return Err(PlatformError::Retryable(format!("no answer within {READ_TIMEOUT:?}"))),
                }
            }
        };
        Ok(text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
    }
}

#[derive(Debug)]
pub struct Outbound<'a> {
    pub key: &'a str,
    pub chat: &'a ChatRef,
    pub reply_to: Option<&'a MessageId>,
    pub thread: Option<&'a ThreadId>,
    pub content: Content<'a>,
}

#[derive(Debug)]
pub enum Content<'a> {
    Text(&'a str),
    /// A text, then each person mentioned so the platform notifies them.
    Mention {
        text: &'a str,
        people: &'a [crate::reply::Mention],
    },
    NewCard(&'a Card),
    /// A file to download (a log excerpt), with a caption.
    File {
        name: &'a str,
        data: &'a [u8],
        caption: &'a str,
    },
    /// Replace the card previously posted as `message`.
    UpdateCard {
        message: &'a MessageId,
        card: &'a Card,
    },
}

/// What the platform said it stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub message_id: Option<MessageId>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// Network trouble, timeouts, 5xx: try again later.
    #[error("temporary failure: {0}")]
    Retryable(String),
    /// The platform asked us to slow down.
    #[error("rate limited for {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// The platform refused the message; sending it again will not help.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl PlatformError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PlatformError::Rejected(_))
    }
}

/// Token-bucket rates: `per_chat` for each chat, `per_group` in addition for
/// group chats (see [`ChatPlatform::is_group`]), `global` across the platform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendLimits {
    pub per_chat: Rate,
    pub per_group: Option<Rate>,
    pub global: Option<Rate>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// The state of one inbound channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelState {
    Connecting,
    Connected,
    Reconnecting,
    Failed(String),
    /// Another client holds the platform's single connection slot (Telegram's
    /// getUpdates); we keep retrying with backoff.
    Conflict(String),
    /// Another replica holds the channel's single slot (Telegram's poller
    /// lease); this one takes over when that one stops. Healthy.
    Standby(String),
    /// Ended on purpose (console input closed, shutdown).
    Closed,
}

impl ChannelState {
    /// Why the channel is down, when it says.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Failed(why) | Self::Conflict(why) | Self::Standby(why) => Some(why),
            _ => None,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
            Self::Failed(_) => "failed",
            Self::Conflict(_) => "conflict",
            Self::Standby(_) => "standby",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStatus {
    pub state: ChannelState,
    pub last_event_ms: Option<i64>,
    pub reconnects: u64,
}

/// Health of every inbound channel, by name (`console`, `feishu`, …).
#[derive(Debug, Clone, Default)]
pub struct Channels(Arc<Mutex<BTreeMap<String, ChannelStatus>>>);

impl Channels {
    pub fn register(&self, name: &str) {
        self.update(name, |s| s.state = ChannelState::Connecting);
    }

    pub fn set_state(&self, name: &str, state: ChannelState) {
        self.update(name, |s| {
            if state == ChannelState::Reconnecting {
                s.reconnects += 1;
            }
            s.state = state;
        });
    }

    pub fn event_seen(&self, name: &str, now_ms: i64) {
        self.update(name, |s| s.last_event_ms = Some(now_ms));
    }

    pub fn snapshot(&self) -> Vec<(String, ChannelStatus)> {
        let map = self.0.lock().expect("channel map lock is never poisoned");
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Names of channels that are not connected (or standing by), for `/readyz`.
    pub fn not_ready(&self) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter(|(_, s)| !matches!(s.state, ChannelState::Connected | ChannelState::Standby(_)))
            .map(|(name, s)| match s.state.detail() {
                Some(why) => format!("{name} is {}: {why}", s.state.label()),
                None => format!("{name} is {}", s.state.label()),
            })
            .collect()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut ChannelStatus)) {
        let mut map = self.0.lock().expect("channel map lock is never poisoned");
        let status = map.entry(name.to_owned()).or_insert(ChannelStatus {
            state: ChannelState::Connecting,
            last_event_ms: None,
            reconnects: 0,
        });
        f(status);
    }
}
