//! The platform-neutral card: title, color, fields, markdown body, buttons.
//!
//! Handlers build a [`CardDraft`], whose buttons carry typed [`Grant`]s. When
//! the reply is persisted each grant is stored behind an [`ActionToken`] and
//! the card becomes a [`Card`], which is what platform senders render. This
//! module does not know any platform's card format.

pub mod template;

use serde::{Deserialize, Serialize};

use crate::action::{ActionToken, Grant};

pub use template::{CardId, CardSet, CardTemplateError};

/// Header color; platforms map it to their palette.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Color {
    Blue,
    Green,
    Yellow,
    Orange,
    Red,
    Grey,
    Purple,
}

impl Color {
    const ALL: [(&'static str, Color); 7] = [
        ("blue", Self::Blue),
        ("green", Self::Green),
        ("yellow", Self::Yellow),
        ("orange", Self::Orange),
        ("red", Self::Red),
        ("grey", Self::Grey),
        ("purple", Self::Purple),
    ];

    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|(_, c)| *c)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, c)| *c == self).map(|(n, _)| *n).expect("every color is listed")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonStyle {
    Default,
    Primary,
    Danger,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub label: String,
    pub value: String,
    /// Short fields may sit side by side.
    pub short: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button<B> {
    pub label: String,
    pub style: ButtonStyle,
    /// Text of a confirmation dialog shown before the press counts.
    pub confirm: Option<String>,
    pub target: B,
}

/// A card. `B` is what a button carries: a [`Grant`] in a draft, an
/// [`ActionToken`] once persisted. Serialized into the outbox, so fields
/// are only ever added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardOf<B> {
    pub title: String,
    pub color: Color,
    pub fields: Vec<Field>,
    /// Markdown body (a common subset: bold, italics, code, links, lists).
    pub body: String,
    pub buttons: Vec<Button<B>>,
    pub footer: Option<String>,
}

pub type CardDraft = CardOf<Grant>;
pub type Card = CardOf<ActionToken>;

impl CardDraft {
    /// Replaces each grant with a token, handing the pairs to `store`.
    pub fn mint(self, mut store: impl FnMut(ActionToken, Grant)) -> Card {
        let buttons = self
            .buttons
            .into_iter()
            .map(|b| {
                let token = ActionToken::generate();
                store(token.clone(), b.target);
                Button { label: b.label, style: b.style, confirm: b.confirm, target: token }
            })
            .collect();
        CardOf {
            title: self.title,
            color: self.color,
            fields: self.fields,
            body: self.body,
            buttons,
            footer: self.footer,
        }
    }
}
