//! The normalized inbound `Event` every platform adapter produces, and the
//! identifier newtypes that travel with it. Nothing here knows a wire format.

use std::fmt;

/// The chat platforms opsclaw speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlatformKind {
    Console,
    Feishu,
    Telegram,
}

impl PlatformKind {
    pub const ALL: [PlatformKind; 3] = [Self::Console, Self::Feishu, Self::Telegram];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Feishu => "feishu",
            Self::Telegram => "telegram",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for PlatformKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A chat (group, DM, console session) as the platform names it.
    ChatId
);
string_id!(
    /// A user as the platform names it (Feishu open_id, Telegram user id).
    UserId
);
string_id!(
    /// A message the platform has stored, used to reply in thread or patch a card.
    MessageId
);
string_id!(
    /// A thread or forum topic inside a chat.
    ThreadId
);

/// Globally unique event key: the platform's own event id, prefixed with the
/// platform so ids from two platforms never collide in the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn new(platform: PlatformKind, raw: &str) -> Self {
        Self(format!("{platform}:{raw}"))
    }

    /// Rebuilds a key read back from the store, where it was written whole.
    pub fn from_stored(key: String) -> Self {
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chat on a given platform: the address replies go to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChatRef {
    pub platform: PlatformKind,
    pub id: ChatId,
}

impl ChatRef {
    pub fn new(platform: PlatformKind, id: impl Into<String>) -> Self {
        Self { platform, id: ChatId::new(id) }
    }
}

impl fmt::Display for ChatRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.id)
    }
}

/// Whether a chat is one person talking to the bot or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatKind {
    Direct,
    Group,
}

/// Who sent an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub id: UserId,
    pub display_name: String,
}

/// One inbound thing the bot must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub chat: ChatRef,
    pub chat_kind: ChatKind,
    pub sender: Sender,
    /// The platform message this event came from, for replies in thread.
    pub message_id: Option<MessageId>,
    pub thread: Option<ThreadId>,
    /// Milliseconds since the Unix epoch, by the opsclaw clock.
    pub received_at_ms: i64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A text message. `mentions_bot` is set by the adapter when the platform
    /// marked the bot as mentioned; the router still strips a typed `@name`.
    /// `quoted` is the message this one replies to, when the user replied to one.
    Message { text: String, mentions_bot: bool, quoted: Option<Quoted> },
    /// A button press carrying the opaque action token the card was sent with.
    Action { token: String },
}

/// The message an event replies to, as far as the platform told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quoted {
    /// The platform sent the replied-to message along (Telegram): its text or
    /// caption, empty when it has none (a sticker, a photo without caption).
    Text(String),
    /// The platform sent only its id (Feishu's `parent_id`). Reading its text
    /// is a call to the platform, which must not happen before the event is
    /// acknowledged, so the handler that needs it asks
    /// [`crate::platform::Reader`].
    Id(MessageId),
}

impl EventKind {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Message { .. } => "message",
            Self::Action { .. } => "action",
        }
    }
}
