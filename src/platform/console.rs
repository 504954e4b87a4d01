//! The console platform: type messages on stdin, read replies and cards on
//! stdout. Buttons are numbered as they are printed and pressed by typing
//! their number. Lines starting with `:` steer the session (`:user NAME`,
//! `:chat NAME`, `:group`, `:dm`, `:press TOKEN`, `:quit`); a line ending in
//! `\` goes on on the next (one message of several lines). It works in a pipe,
//! so tests drive the real binary through it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{ChannelState, Channels, ChatPlatform, Content, Outbound, PlatformError, Rate, SendLimits, Sent};
use crate::card::{ButtonStyle, Card};
use crate::clock::Clock;
use crate::event::{ChatKind, ChatRef, Event, EventId, EventKind, MessageId, PlatformKind, Sender, UserId};
use crate::pipeline::inbox::{Admission, Inbox};
use crate::status::Settle;

const CHANNEL: &str = "console";

/// State shared by the reader and the sender of one console session.
pub struct Console {
    out: Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Button number → action token, for every button printed so far.
    buttons: StdMutex<HashMap<u64, String>>,
    next_button: AtomicU64,
    next_card: AtomicU64,
    /// Distinguishes this process's event and message ids from earlier runs'.
    boot: String,
    rate: Rate,
    /// Where files sent to the console are saved (a terminal cannot take a file).
    downloads: std::path::PathBuf,
}

impl Console {
    pub fn new(
        out: Box<dyn AsyncWrite + Send + Unpin>,
        rate: Rate,
        clock: &Clock,
        downloads: std::path::PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            out: Mutex::new(out),
            buttons: StdMutex::new(HashMap::new()),
            next_button: AtomicU64::new(1),
            next_card: AtomicU64::new(1),
            boot: format!("{:x}", clock.now_ms()),
            rate,
            downloads,
        })
    }

    /// Saves a file sent to the console under `downloads/`, by its name
    /// without any directory part (a retry writes the same file again).
    async fn save(&self, name: &str, data: &[u8]) -> Result<std::path::PathBuf, PlatformError> {
        let file = std::path::Path::new(name).file_name().map_or_else(|| "download.txt".into(), |f| f.to_owned());
        let path = self.downloads.join(file);
        let (dir, target, data) = (self.downloads.clone(), path.clone(), data.to_vec());
        let written = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&target, data)
        })
        .await
        .map_err(|e| PlatformError::Retryable(format!("saving {name}: {e}")))?;
        written.map_err(|e| PlatformError::Rejected(format!("saving {}: {e}", path.display())))?;
        Ok(path)
    }

    async fn print(&self, text: &str) -> Result<(), std::io::Error> {
        let mut out = self.out.lock().await;
        out.write_all(text.as_bytes()).await?;
        out.flush().await
    }

    fn number_buttons(&self, card: &Card) -> Vec<u64> {
        let mut book = self.buttons.lock().expect("button book lock is never poisoned");
        card.buttons
            .iter()
            .map(|b| {
                let n = self.next_button.fetch_add(1, Ordering::SeqCst);
                book.insert(n, b.target.as_str().to_owned());
                n
            })
            .collect()
    }

    /// Reads `input` until EOF, `:quit` or shutdown, submitting each line as an event.
    pub async fn read_input(
        self: Arc<Self>,
        input: impl tokio::io::AsyncRead + Unpin,
        intake: Intake,
        start: Session,
        shutdown: CancellationToken,
    ) {
        let Intake { inbox, channels, clock, settle } = intake;
        channels.set_state(CHANNEL, ChannelState::Connected);
        let mut lines = BufReader::new(input).lines();
        let mut session = start;
        let mut n_events = 0u64;
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line,
                () = shutdown.cancelled() => break,
            };
            let mut line = match line {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "console input is not readable text; stopping");
                    break;
                }
            };
            // A line ending in `\` goes on on the next one: one message of several lines.
            while let Some(head) = line.strip_suffix('\\') {
                let head = head.to_owned();
                match lines.next_line().await {
                    Ok(Some(next)) => line = format!("{head}\n{next}"),
                    _ => {
                        line = head;
                        break;
                    }
                }
            }
            let kind = match parse_line(&line) {
                Line::Empty => continue,
                Line::Quit => break,
                Line::Meta(note) => {
                    let note = session.apply(note);
                    self.notice(&note).await;
                    continue;
                }
                Line::Press(n) => {
                    let token = self.buttons.lock().expect("button book lock is never poisoned").get(&n).cloned();
                    match token {
                        Some(token) => EventKind::Action { token },
                        None => {
                            self.notice(&format!("no button [{n}] has been shown")).await;
                            continue;
                        }
                    }
                }
                Line::PressToken(token) => EventKind::Action { token },
                Line::Message(text) => EventKind::Message { text, mentions_bot: false, quoted: None },
            };
            n_events += 1;
            let now = clock.now_ms();
            channels.event_seen(CHANNEL, now);
            let event = Event {
                id: EventId::new(PlatformKind::Console, &format!("{}:{n_events}", self.boot)),
                chat: ChatRef::new(PlatformKind::Console, session.chat.clone()),
                chat_kind: session.chat_kind,
                sender: Sender { id: UserId::new(session.user.clone()), display_name: session.user.clone() },
                message_id: Some(MessageId::new(format!("{}:in{n_events}", self.boot))),
                thread: None,
                received_at_ms: now,
                kind,
            };
            match inbox.submit(event).await {
                Ok(Admission::Accepted) => {
                    // Like a person at a prompt, read the next line only after the
                    // answer is shown, so piped scripts can press the buttons they get.
                    if let Some(settle) = &settle {
                        settle.wait().await;
                    }
                }
                Ok(Admission::Duplicate) => {}
                Err(e) => {
                    tracing::error!(error = %e, "console event not accepted");
                    self.notice(&format!("not accepted: {e}")).await;
                }
            }
        }
        channels.set_state(CHANNEL, ChannelState::Closed);
    }

    async fn notice(&self, text: &str) {
        if let Err(e) = self.print(&format!("({text})\n")).await {
            tracing::warn!(error = %e, "console output failed");
        }
    }
}

/// Where console input goes.
pub struct Intake {
    pub inbox: Inbox,
    pub channels: Channels,
    pub clock: Clock,
    /// When set, each line waits for the previous one's replies.
    pub settle: Option<Settle>,
}

/// Who is typing, and where, in a console session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub chat: String,
    pub chat_kind: ChatKind,
}

enum MetaCommand {
    User(String),
    Chat(String),
    Kind(ChatKind),
    Help,
}

impl Session {
    fn apply(&mut self, meta: MetaCommand) -> String {
        match meta {
            MetaCommand::User(user) => {
                self.user = user;
                format!("you are now {}", self.user)
            }
            MetaCommand::Chat(chat) => {
                self.chat = chat;
                format!("now in chat {}", self.chat)
            }
            MetaCommand::Kind(kind) => {
                self.chat_kind = kind;
                match kind {
                    ChatKind::Group => "this chat is now a group: mention @opsclaw or use /commands".into(),
                    ChatKind::Direct => "this chat is now a direct message".into(),
                }
            }
            MetaCommand::Help => {
                ":user NAME, :chat NAME, :group, :dm, :press TOKEN, :quit; a number presses that button; end a line with \\ to go on on the next".into()
            }
        }
    }
}

enum Line {
    Empty,
    Quit,
    Meta(MetaCommand),
    Press(u64),
    PressToken(String),
    Message(String),
}

fn parse_line(line: &str) -> Line {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Line::Empty;
    }
    if let Ok(n) = trimmed.parse::<u64>() {
        return Line::Press(n);
    }
    let Some(meta) = trimmed.strip_prefix(':') else { return Line::Message(line.to_owned()) };
    let (word, arg) = meta.split_once(char::is_whitespace).map_or((meta, ""), |(w, a)| (w, a.trim()));
    match (word, arg) {
        ("quit" | "q", _) => Line::Quit,
        ("user", name) if !name.is_empty() => Line::Meta(MetaCommand::User(name.to_owned())),
        ("chat", name) if !name.is_empty() => Line::Meta(MetaCommand::Chat(name.to_owned())),
        ("group", _) => Line::Meta(MetaCommand::Kind(ChatKind::Group)),
        ("dm", _) => Line::Meta(MetaCommand::Kind(ChatKind::Direct)),
        ("press", token) if !token.is_empty() => Line::PressToken(token.to_owned()),
        _ => Line::Meta(MetaCommand::Help),
    }
}

#[async_trait]
impl ChatPlatform for Console {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Console
    }

    fn limits(&self) -> SendLimits {
        SendLimits { per_chat: self.rate, per_group: None, global: None }
    }

    async fn send(&self, msg: &Outbound<'_>) -> Result<Sent, PlatformError> {
        let (text, message_id) = match &msg.content {
            Content::Text(text) => (render_text(text), None),
            Content::Mention { text, people } => {
                let names: Vec<String> = people.iter().map(|p| format!("@{}", p.name)).collect();
                (render_text(&format!("{text} {}", names.join(" "))), None)
            }
            Content::NewCard(card) => {
                let n = self.next_card.fetch_add(1, Ordering::SeqCst);
                let numbers = self.number_buttons(card);
                let id = MessageId::new(format!("{}:card{n}", self.boot));
                (render_card(card, &numbers, &format!("card #{n}")), Some(id))
            }
            Content::File { name, data, caption } => {
                let path = self.save(name, data).await?;
                let text = format!("📎 {caption}\n{} ({} bytes)", path.display(), data.len());
                (render_text(&text), None)
            }
            Content::UpdateCard { message, card } => {
                let n = message.as_str().rsplit_once(":card").map_or("?", |(_, n)| n);
                let numbers = self.number_buttons(card);
                (render_card(card, &numbers, &format!("card #{n} updated")), None)
            }
        };
        self.print(&text).await.map_err(|e| PlatformError::Retryable(format!("console output: {e}")))?;
        Ok(Sent { message_id })
    }
}

const PREFIX: &str = "opsclaw> ";
const INDENT: &str = "         ";

fn render_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.lines().enumerate() {
        out.push_str(if i == 0 { PREFIX } else { INDENT });
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str(PREFIX);
        out.push('\n');
    }
    out
}

/// A card as plain text: a header with its color, fields, body, footer and numbered buttons.
fn render_card(card: &Card, numbers: &[u64], label: &str) -> String {
    let mut out = format!("{PREFIX}┌ {} [{}] ({label})\n", card.title, card.color.as_str());
    let mut line = |text: &str| {
        out.push_str(INDENT);
        out.push_str("│ ");
        out.push_str(text);
        out.push('\n');
    };
    for field in &card.fields {
        line(&format!("{}: {}", field.label, field.value));
    }
    let body = card.body.trim();
    if !body.is_empty() {
        if !card.fields.is_empty() {
            line("");
        }
        for body_line in body.lines() {
            line(body_line);
        }
    }
    if let Some(footer) = &card.footer {
        line(&format!("— {footer}"));
    }
    let buttons: Vec<String> = card
        .buttons
        .iter()
        .zip(numbers)
        .map(|(b, n)| {
            let mark = match b.style {
                ButtonStyle::Danger => "!",
                ButtonStyle::Primary | ButtonStyle::Default => "",
            };
            match &b.confirm {
                Some(confirm) => format!("[{n}] {}{mark} (confirms: {confirm})", b.label),
                None => format!("[{n}] {}{mark}", b.label),
            }
        })
        .collect();
    out.push_str(INDENT);
    out.push('└');
    if !buttons.is_empty() {
        out.push(' ');
        out.push_str(&buttons.join("  "));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::ActionToken;
    use crate::card::{Button, CardOf, Color, Field};

    #[test]
    fn cards_render_as_text_with_numbered_buttons() {
        let card: Card = CardOf {
            title: "Status".into(),
            color: Color::Green,
            fields: vec![Field { label: "Version".into(), value: "0.1.0".into(), short: true }],
            body: "- console: connected\n".into(),
            buttons: vec![
                Button {
                    label: "Refresh".into(),
                    style: ButtonStyle::Primary,
                    confirm: None,
                    target: ActionToken::from_wire("t1"),
                },
                Button {
                    label: "Resolve".into(),
                    style: ButtonStyle::Danger,
                    confirm: Some("Sure?".into()),
                    target: ActionToken::from_wire("t2"),
                },
            ],
            footer: Some("Updated now".into()),
        };
        let expected = "opsclaw> ┌ Status [green] (card #1)\n\
                        \x20        │ Version: 0.1.0\n\
                        \x20        │ \n\
                        \x20        │ - console: connected\n\
                        \x20        │ — Updated now\n\
                        \x20        └ [4] Refresh  [5] Resolve! (confirms: Sure?)\n";
        assert_eq!(render_card(&card, &[4, 5], "card #1"), expected);
    }

    #[test]
    fn multi_line_text_is_indented() {
        assert_eq!(render_text("a\nb"), "opsclaw> a\n         b\n");
    }

    #[test]
    fn input_lines() {
        assert!(matches!(parse_line("  "), Line::Empty));
        assert!(matches!(parse_line("12"), Line::Press(12)));
        assert!(matches!(parse_line(":user bob"), Line::Meta(MetaCommand::User(u)) if u == "bob"));
        assert!(matches!(parse_line(":press abc"), Line::PressToken(t) if t == "abc"));
        assert!(matches!(parse_line(":quit"), Line::Quit));
        assert!(matches!(parse_line(":what"), Line::Meta(MetaCommand::Help)));
        assert!(matches!(parse_line("/ping 1"), Line::Message(m) if m == "/ping 1"));
    }
}
