//! The router: a pure function from an [`Event`] to a [`Route`].
//!
//! It strips a leading `@bot` mention and `/cmd@bot` suffixes, accepts the
//! full-width `／`, looks the command up by name or alias, and binds its typed
//! arguments. It does no IO and knows no platform: everything it needs is in
//! [`RouterConfig`] and the [`CommandSet`].

use std::sync::Arc;

use crate::action::ActionToken;
use crate::command::{ArgError, Args, CommandSet, CommandSpec, args};
use crate::event::{ChatKind, Event, EventKind};

/// Longest message the router will look at; longer ones are refused whole.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Names the bot answers to when mentioned (`@opsclaw`) or addressed
    /// (`/ping@opsclaw`), compared case-insensitively.
    pub bot_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Invoke(Invocation),
    Action(ActionToken),
    /// Free text addressed to the bot (a DM, or a mention in a group).
    Chat(String),
    /// Something the user must be told was refused.
    Reject(Rejection),
    Ignore(IgnoreReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Arc<CommandSpec>,
    pub args: Args,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    UnknownCommand { name: String, suggestion: Option<String> },
    BadArguments { command: Arc<CommandSpec>, error: ArgError },
    TooLong { bytes: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Group chatter that neither mentions the bot nor is a command.
    NotAddressed,
    Empty,
    /// A `/cmd@otherbot` meant for another bot in the same group.
    OtherBot,
}

pub fn route(config: &RouterConfig, commands: &CommandSet, event: &Event) -> Route {
    let (text, platform_mention) = match &event.kind {
        EventKind::Action { token } => return Route::Action(ActionToken::from_wire(token)),
        EventKind::Message { text, mentions_bot, .. } => (text.as_str(), *mentions_bot),
    };
    if text.len() > MAX_MESSAGE_BYTES {
        return Route::Reject(Rejection::TooLong { bytes: text.len() });
    }
    let (text, typed_mention) = strip_mention(config, text.trim());
    let addressed = platform_mention || typed_mention || event.chat_kind == ChatKind::Direct;
    let Some(command_text) = text.strip_prefix('/').or_else(|| text.strip_prefix('／')) else {
        if text.is_empty() {
            return Route::Ignore(if addressed { IgnoreReason::Empty } else { IgnoreReason::NotAddressed });
        }
        return if addressed { Route::Chat(text.to_owned()) } else { Route::Ignore(IgnoreReason::NotAddressed) };
    };
    let split = command_text.find(char::is_whitespace).unwrap_or(command_text.len());
    let (word, rest) = command_text.split_at(split);
    let name = match word.split_once('@') {
        Some((name, bot)) if is_bot_name(config, bot) => name,
        Some(_) => return Route::Ignore(IgnoreReason::OtherBot),
        None => word,
    };
    if name.is_empty() {
        return Route::Ignore(IgnoreReason::Empty);
    }
    let Some(command) = commands.get(name) else {
        // In a group, an unknown slash word not addressed to us may be for another bot.
        if !addressed {
            return Route::Ignore(IgnoreReason::NotAddressed);
        }
        let suggestion = commands.closest(name).map(str::to_owned);
        return Route::Reject(Rejection::UnknownCommand { name: name.to_owned(), suggestion });
    };
    match args::bind(command, rest) {
        Ok(args) => Route::Invoke(Invocation { command: command.clone(), args }),
        Err(error) => Route::Reject(Rejection::BadArguments { command: command.clone(), error }),
    }
}

fn is_bot_name(config: &RouterConfig, name: &str) -> bool {
    config.bot_names.iter().any(|b| b.eq_ignore_ascii_case(name))
}

/// Removes a leading `@botname` (ASCII or full-width `＠`); says whether one was there.
fn strip_mention<'a>(config: &RouterConfig, text: &'a str) -> (&'a str, bool) {
    let Some(after) = text.strip_prefix('@').or_else(|| text.strip_prefix('＠')) else { return (text, false) };
    let end = after.find(char::is_whitespace).unwrap_or(after.len());
    if is_bot_name(config, &after[..end]) { (after[end..].trim_start(), true) } else { (text, false) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChatRef, EventId, PlatformKind, Sender, UserId};

    fn event(text: &str, chat_kind: ChatKind, mentions_bot: bool) -> Event {
        Event {
            id: EventId::new(PlatformKind::Console, "1"),
            chat: ChatRef::new(PlatformKind::Console, "c"),
            chat_kind,
            sender: Sender { id: UserId::new("u"), display_name: "u".into() },
            message_id: None,
            thread: None,
            received_at_ms: 0,
            kind: EventKind::Message { text: text.to_owned(), mentions_bot, quoted: None },
        }
    }

    /// What a route looks like, reduced to what a table can state.
    fn summary(route: &Route) -> String {
        match route {
            Route::Invoke(inv) => {
                let args: Vec<String> = inv.args.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("invoke {} {}", inv.command.name, args.join(" ")).trim_end().to_owned()
            }
            Route::Action(t) => format!("action {}", t.as_str()),
            Route::Chat(t) => format!("chat {t}"),
            Route::Reject(Rejection::UnknownCommand { name, suggestion }) => format!("unknown {name} {suggestion:?}"),
            Route::Reject(Rejection::BadArguments { command, error }) => format!("bad {} {error:?}", command.name),
            Route::Reject(Rejection::TooLong { bytes }) => format!("too long {bytes}"),
            Route::Ignore(r) => format!("ignore {r:?}"),
        }
    }

    fn check(text: &str, chat_kind: ChatKind, mentions_bot: bool, expected: &str) {
        let config = RouterConfig { bot_names: vec!["opsclaw".into(), "opsclaw_bot".into()] };
        let commands = CommandSet::embedded().unwrap();
        let got = summary(&route(&config, &commands, &event(text, chat_kind, mentions_bot)));
        assert_eq!(got, expected, "input {text:?} in {chat_kind:?}");
    }

    use ChatKind::{Direct as Dm, Group};

    #[test]
    fn routing_table() {
        check("/ping", Dm, false, "invoke ping");
        check("  /PING  ", Dm, false, "invoke ping");
        check("／ping", Dm, false, "invoke ping");
        check("/ping hello there", Dm, false, r#"invoke ping text=Str("hello there")"#);
        check("/ping@opsclaw_bot", Group, false, "invoke ping");
        check("/ping@OpsClaw", Group, false, "invoke ping");
        check("/ping@otherbot", Group, false, "ignore OtherBot");
        check("@opsclaw /ping", Group, false, "invoke ping");
        check("＠opsclaw /ping", Group, false, "invoke ping");
        check("@opsclaw", Group, false, "ignore Empty");
        check("@someone /ping", Group, false, "ignore NotAddressed");
        check("/ping", Group, false, "invoke ping");
        check("/h", Dm, false, "invoke help");
        check("/help status", Dm, false, r#"invoke help command=Str("status")"#);
        check("/stauts", Dm, false, r#"unknown stauts Some("status")"#);
        check("/restart", Dm, false, "unknown restart None");
        check("/restart", Group, false, "ignore NotAddressed");
        check("/restart", Group, true, "unknown restart None");
        check("/help a b", Dm, false, r#"bad help TooMany { value: "b" }"#);
        check("/help \"unclosed", Dm, false, "bad help UnterminatedQuote");
        check("/", Dm, false, "ignore Empty");
        check("", Dm, false, "ignore Empty");
        check("disk is full", Dm, false, "chat disk is full");
        check("disk is full", Group, false, "ignore NotAddressed");
        check("disk is full", Group, true, "chat disk is full");
        check("@opsclaw 磁盘满了怎么处理", Group, false, "chat 磁盘满了怎么处理");
    }

    #[test]
    fn over_long_messages_are_refused_whole() {
        let long = format!("/ping {}", "x".repeat(MAX_MESSAGE_BYTES));
        check(&long, Dm, false, &format!("too long {}", long.len()));
    }

    #[test]
    fn actions_pass_their_token_through() {
        let config = RouterConfig { bot_names: vec![] };
        let mut e = event("", Dm, false);
        e.kind = EventKind::Action { token: "tok".into() };
        assert_eq!(route(&config, &CommandSet::default(), &e), Route::Action(ActionToken::from_wire("tok")));
    }
}
