//! What a card button does. A button carries a typed [`Action`] while the
//! handler builds the card; when the reply is persisted the action is stored
//! server-side behind a short random token, and only the token travels to
//! the platform (Telegram allows 64 bytes of callback data).

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::policy::Role;

/// A button's effect. Stored as JSON in `action_tokens`, so variants are only
/// ever added, and old rows must keep deserializing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Re-render the `/status` card in place.
    RefreshStatus,
    /// Acknowledge an alert group (stops its escalation).
    AlertAck {
        group: i64,
    },
    /// Silence an alert group for `hours` (in Alertmanager when it came from there).
    AlertSilence {
        group: i64,
        hours: u32,
    },
    AlertUnsilence {
        group: i64,
    },
    /// Close an alert group by hand (generic sources).
    AlertResolve {
        group: i64,
    },
    /// Approve a pending ops run (not the requester's own; the approver role is checked on press).
    RunApprove {
        run: i64,
    },
    RunReject {
        run: i64,
    },
    /// The requester withdraws a pending run.
    RunCancel {
        run: i64,
    },
    /// The requester starts a run that needs no approval.
    RunStart {
        run: i64,
    },
    /// Undo a finished run (through approval when its command asks for it).
    RunRollback {
        run: i64,
    },
    /// A page of a log search: More on a `/logs` card (`offset` > 0), or
    /// Logs on an alert card (the first page around the alert's start).
    LogsPage {
        query: crate::logs::service::LogQuery,
        offset: usize,
    },
    /// The whole capped excerpt of a log search, as a file.
    LogsDownload {
        query: crate::logs::service::LogQuery,
    },
}

/// An action together with who may trigger it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub action: Action,
    /// Role needed to press; checked again at press time against current config.
    pub role: Option<Role>,
    /// Principal keys allowed to press; empty means anyone with the role.
    pub only: Vec<String>,
}

impl Grant {
    pub fn new(action: Action, role: Option<Role>) -> Self {
        Self { action, role, only: Vec::new() }
    }
}

/// The opaque token a platform button carries: 16 random bytes, URL-safe base64.
/// Serialized as a plain string inside persisted cards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionToken(String);

impl ActionToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Wraps a token as it came back from a platform; it is only ever looked up.
    pub fn from_wire(s: &str) -> Self {
        Self(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_short_and_distinct() {
        let a = ActionToken::generate();
        let b = ActionToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 22);
        assert!(a.as_str().len() <= 64);
    }

    #[test]
    fn stored_action_shape_is_stable() {
        assert_eq!(serde_json::to_string(&Action::RefreshStatus).unwrap(), r#"{"kind":"refresh_status"}"#);
    }
}
