//! Telegram updates → [`Event`]s. Commands addressed to another bot are
//! ignored, `/cmd@ourbot` and `@ourbot` mentions mark the bot as addressed
//! and are removed from the text, and entity offsets are read in UTF-16 code
//! units (converted without trusting them: a bad offset is skipped, never a
//! panic). Event ids are the chat and message id, or the callback query id,
//! so an update fetched twice (restart, webhook retry) is the same event. A
//! reply carries the replied-to message's text along, except where Telegram
//! fills `reply_to_message` with a forum topic's creation message.

use std::ops::Range;

use teloxide::types::{
    CallbackQuery, CallbackQueryId, ChatKind as TgChatKind, Message, MessageEntityKind, PublicChatKind, Update,
    UpdateKind, User,
};

use crate::event::{
    ChatKind, ChatRef, Event, EventId, EventKind, MessageId, PlatformKind, Quoted, Sender, ThreadId, UserId,
};

/// Who the bot is, from getMe.
#[derive(Debug, Clone)]
pub struct Me {
    pub id: u64,
    pub username: String,
}

#[derive(Debug)]
pub enum Inbound {
    /// An event for the inbox; a button press carries the query to answer.
    Event(Box<Event>, Option<CallbackQueryId>),
    /// Nothing to do, and why (logged at debug).
    Ignored(String),
    /// An update we could not read (logged once, at warn): its start.
    Malformed(String),
}

pub fn parse(update: &Update, me: &Me, now_ms: i64) -> Inbound {
    match &update.kind {
        UpdateKind::Message(msg) => message(msg, me, now_ms),
        UpdateKind::CallbackQuery(q) => callback(q, now_ms),
        UpdateKind::Error(raw) => Inbound::Malformed(raw.to_string().chars().take(300).collect()),
        _ => Inbound::Ignored("an update kind we do not subscribe to".into()),
    }
}

fn message(msg: &Message, me: &Me, now_ms: i64) -> Inbound {
    let chat_kind = match &msg.chat.kind {
        TgChatKind::Private(_) => ChatKind::Direct,
        TgChatKind::Public(p) if matches!(p.kind, PublicChatKind::Group | PublicChatKind::Supergroup(_)) => {
            ChatKind::Group
        }
        TgChatKind::Public(_) => return Inbound::Ignored("a channel post".into()),
    };
    let Some(from) = &msg.from else { return Inbound::Ignored("a message without a sender".into()) };
    if from.is_bot {
        return Inbound::Ignored("a message from a bot".into());
    }
    let (Some(text), entities) = (msg.text().or(msg.caption()), msg.entities().or(msg.caption_entities())) else {
        return Inbound::Ignored("a message without text".into());
    };
    let mut addressed = replied_to(msg).and_then(|r| r.from.as_ref()).is_some_and(|u| u.id.0 == me.id);
    // Byte ranges to cut out of the text: our own name wherever it addresses us.
    let mut cuts: Vec<Range<usize>> = Vec::new();
    for entity in entities.unwrap_or_default() {
        let Some(range) = byte_range(text, entity.offset, entity.length) else { continue };
        let part = &text[range.clone()];
        match &entity.kind {
            MessageEntityKind::BotCommand if range.start == 0 => {
                if let Some((_, bot)) = part.split_once('@') {
                    if !bot.eq_ignore_ascii_case(&me.username) {
                        return Inbound::Ignored(format!("a command for @{bot}"));
                    }
                    addressed = true;
                    cuts.push(range.end - bot.len() - 1..range.end);
                }
            }
            MessageEntityKind::Mention
                if part.strip_prefix('@').is_some_and(|name| name.eq_ignore_ascii_case(&me.username)) =>
            {
                addressed = true;
                cuts.push(range);
            }
            MessageEntityKind::TextMention { user } if user.id.0 == me.id => {
                addressed = true;
                cuts.push(range);
            }
            _ => {}
        }
    }
    let mut text = text.to_owned();
    cuts.sort_by_key(|r| std::cmp::Reverse(r.start));
    for cut in cuts {
        text.replace_range(cut, "");
    }
    let chat = ChatRef::new(PlatformKind::Telegram, msg.chat.id.0.to_string());
    let event = Event {
        id: EventId::new(PlatformKind::Telegram, &format!("m:{}:{}", msg.chat.id.0, msg.id.0)),
        chat,
        chat_kind,
        sender: sender(from),
        message_id: Some(MessageId::new(msg.id.0.to_string())),
        thread: topic(msg),
        received_at_ms: now_ms,
        kind: EventKind::Message { text: text.trim().to_owned(), mentions_bot: addressed, quoted: quoted(msg) },
    };
    Inbound::Event(Box::new(event), None)
}

/// The message `msg` replies to. In a forum topic Telegram sets
/// `reply_to_message` to the topic's creation message (a service message
/// whose id is the topic's id) on every message that replies to nothing in
/// particular; that is where the message was written, not a reply.
fn replied_to(msg: &Message) -> Option<&Message> {
    let replied = msg.reply_to_message()?;
    let topic_root = replied.forum_topic_created().is_some()
        || (msg.is_topic_message && msg.thread_id.is_some_and(|t| t.0 == replied.id));
    (!topic_root).then_some(replied)
}

/// What the user replied to: the part they picked out of it (Telegram's
/// `quote`) if any, else its text or caption, empty when it has neither.
fn quoted(msg: &Message) -> Option<Quoted> {
    let replied = replied_to(msg)?;
    let text = msg.quote().map(|q| q.text.as_str()).or(replied.text()).or(replied.caption()).unwrap_or_default();
    Some(Quoted::Text(text.to_owned()))
}

fn callback(q: &CallbackQuery, now_ms: i64) -> Inbound {
    let Some(token) = &q.data else { return Inbound::Ignored("a callback query without data".into()) };
    // Inline-mode messages have no chat; the bot never sends any.
    let Some(card) = &q.message else { return Inbound::Ignored("a callback query without a message".into()) };
    let chat = card.chat();
    let chat_kind = if chat.is_private() { ChatKind::Direct } else { ChatKind::Group };
    let event = Event {
        id: EventId::new(PlatformKind::Telegram, &format!("cb:{}", q.id.0)),
        chat: ChatRef::new(PlatformKind::Telegram, chat.id.0.to_string()),
        chat_kind,
        sender: sender(&q.from),
        message_id: Some(MessageId::new(card.id().0.to_string())),
        thread: card.regular_message().and_then(topic),
        received_at_ms: now_ms,
        kind: EventKind::Action { token: token.clone() },
    };
    Inbound::Event(Box::new(event), Some(q.id.clone()))
}

fn sender(user: &User) -> Sender {
    let name = match &user.last_name {
        Some(last) => format!("{} {last}", user.first_name),
        None => user.first_name.clone(),
    };
    Sender { id: UserId::new(user.id.0.to_string()), display_name: name }
}

/// The forum topic a message is in. Replies to other messages also carry a
/// thread id in supergroups; only a real topic must be echoed back.
fn topic(msg: &Message) -> Option<ThreadId> {
    msg.thread_id.filter(|_| msg.is_topic_message).map(|t| ThreadId::new(t.0.0.to_string()))
}

/// Reads an update from a JSON value. teloxide reads updates from text only:
/// from a `Value` every update comes out as an unknown kind.
pub fn from_value(value: &serde_json::Value) -> Option<Update> {
    value.get("update_id")?;
    serde_json::from_str(&value.to_string()).ok()
}

/// The byte range of `length` UTF-16 units at `offset`, if both ends fall on
/// character boundaries inside `text`.
pub fn byte_range(text: &str, offset: usize, length: usize) -> Option<Range<usize>> {
    let end_units = offset.checked_add(length)?;
    let (mut start, mut units) = (None, 0usize);
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), '\0'))) {
        if units == offset {
            start = Some(i);
        }
        if units == end_units {
            return Some(start?..i);
        }
        if units > end_units {
            return None;
        }
        units += c.len_utf16();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Me {
        Me { id: 777, username: "ops_bot".into() }
    }

    fn update(body: serde_json::Value) -> Update {
        from_value(&body).expect("a valid update")
    }

    fn msg(chat: serde_json::Value, text: &str, entities: serde_json::Value) -> Update {
        update(json!({"update_id": 1, "message": {
            "message_id": 10, "date": 1750000000, "chat": chat,
            "from": {"id": 42, "is_bot": false, "first_name": "Alice", "last_name": "Liddell"},
            "text": text, "entities": entities,
        }}))
    }

    fn group() -> serde_json::Value {
        json!({"id": -1001234567890_i64, "type": "supergroup", "title": "ops"})
    }

    fn text_of(inbound: Inbound) -> (String, bool) {
        match inbound {
            Inbound::Event(e, None) => match e.kind {
                EventKind::Message { text, mentions_bot, .. } => (text, mentions_bot),
                other => panic!("not a message: {other:?}"),
            },
            other => panic!("not a message event: {other:?}"),
        }
    }

    #[test]
    fn commands_for_us_are_addressed_and_for_others_ignored() {
        let cmd = |text: &str, len: usize| {
            parse(&msg(group(), text, json!([{"type": "bot_command", "offset": 0, "length": len}])), &me(), 0)
        };
        assert_eq!(text_of(cmd("/ping@Ops_Bot hi", 13)), ("/ping hi".into(), true));
        assert_eq!(text_of(cmd("/ping hi", 5)), ("/ping hi".into(), false));
        assert!(matches!(cmd("/ping@other_bot", 15), Inbound::Ignored(why) if why.contains("@other_bot")));
    }

    #[test]
    fn mentions_are_found_by_utf16_offsets() {
        // "🔥" is two UTF-16 units: the mention starts at unit 3, byte 5.
        let text = "🔥 @ops_bot /status";
        let inbound = parse(&msg(group(), text, json!([{"type": "mention", "offset": 3, "length": 8}])), &me(), 0);
        assert_eq!(text_of(inbound), ("🔥  /status".into(), true));
        assert_eq!(byte_range("🔥 @x", 3, 2), Some(5..7));
        assert_eq!(byte_range("🔥 @x", 1, 2), None, "inside a surrogate pair");
        assert_eq!(byte_range("ab", 1, 5), None, "past the end");
        assert_eq!(byte_range("ab", usize::MAX, 5), None);
    }

    #[test]
    fn bad_entities_are_skipped_not_fatal() {
        let inbound =
            parse(&msg(group(), "/ping", json!([{"type": "bot_command", "offset": 40, "length": 9}])), &me(), 0);
        assert_eq!(text_of(inbound), ("/ping".into(), false));
    }

    #[test]
    fn ids_threads_and_senders() {
        let body = json!({"update_id": 5, "message": {
            "message_id": 77, "date": 1750000000, "chat": {"id": -100777, "type": "supergroup", "title": "t", "is_forum": true},
            "message_thread_id": 12, "is_topic_message": true,
            "from": {"id": 42, "is_bot": false, "first_name": "Alice"}, "text": "/ping",
        }});
        let Inbound::Event(e, _) = parse(&update(body), &me(), 9) else { panic!() };
        assert_eq!(e.id.as_str(), "telegram:m:-100777:77");
        assert_eq!(e.thread.as_ref().map(ThreadId::as_str), Some("12"));
        assert_eq!(e.sender.display_name, "Alice");
        assert_eq!(e.chat_kind, ChatKind::Group);
        // A reply thread in a non-forum group is not a topic.
        let body = json!({"update_id": 6, "message": {
            "message_id": 78, "date": 1750000000, "chat": {"id": 42, "type": "private", "first_name": "A"},
            "message_thread_id": 12, "from": {"id": 42, "is_bot": false, "first_name": "A"}, "text": "hi",
        }});
        let Inbound::Event(e, _) = parse(&update(body), &me(), 9) else { panic!() };
        assert_eq!((e.thread, e.chat_kind), (None, ChatKind::Direct));
    }

    fn quoted_of(body: serde_json::Value) -> Option<Quoted> {
        match parse(&update(body), &me(), 0) {
            Inbound::Event(e, None) => match e.kind {
                EventKind::Message { quoted, .. } => quoted,
                other => panic!("not a message: {other:?}"),
            },
            other => panic!("not a message event: {other:?}"),
        }
    }

    fn alice() -> serde_json::Value {
        json!({"id": 42, "is_bot": false, "first_name": "Alice"})
    }

    #[test]
    fn replies_carry_the_replied_to_text_or_caption() {
        let earlier = json!({"message_id": 9, "date": 1750000000, "chat": group(), "from": alice(),
            "text": "Promote the replica with REPLICAOF NO ONE."});
        let reply = |replied: serde_json::Value| {
            json!({"update_id": 1, "message": {"message_id": 10, "date": 1750000000, "chat": group(),
                "from": alice(), "text": "/kb add Redis failover", "reply_to_message": replied}})
        };
        assert_eq!(
            quoted_of(reply(earlier.clone())),
            Some(Quoted::Text("Promote the replica with REPLICAOF NO ONE.".into()))
        );
        let photo = json!({"message_id": 9, "date": 1750000000, "chat": group(), "from": alice(),
            "photo": [{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}], "caption": "the dashboard"});
        assert_eq!(quoted_of(reply(photo)), Some(Quoted::Text("the dashboard".into())));
        let sticker = json!({"message_id": 9, "date": 1750000000, "chat": group(), "from": alice(),
            "sticker": {"file_id": "f", "file_unique_id": "u", "type": "regular", "width": 1, "height": 1, "is_animated": false, "is_video": false}});
        assert_eq!(quoted_of(reply(sticker)), Some(Quoted::Text(String::new())), "a reply, without text");
        // A part picked out of the replied-to message is what the user meant.
        let mut picked = reply(earlier);
        picked["message"]["quote"] = json!({"text": "REPLICAOF NO ONE", "position": 25, "is_manual": true});
        assert_eq!(quoted_of(picked), Some(Quoted::Text("REPLICAOF NO ONE".into())));
        assert_eq!(
            quoted_of(json!({"update_id": 1, "message": {"message_id": 10, "date": 1750000000,
            "chat": group(), "from": alice(), "text": "/kb add T"}})),
            None
        );
    }

    #[test]
    fn a_forum_topic_message_does_not_quote_the_topic() {
        let forum = json!({"id": -100777, "type": "supergroup", "title": "t", "is_forum": true});
        let created = json!({"message_id": 12, "date": 1750000000, "chat": forum, "from": alice(),
            "message_thread_id": 12, "is_topic_message": true,
            "forum_topic_created": {"name": "Incidents", "icon_color": 7322096}});
        let in_topic = |replied: serde_json::Value| {
            json!({"update_id": 5, "message": {"message_id": 77, "date": 1750000000, "chat": forum,
                "message_thread_id": 12, "is_topic_message": true, "from": alice(), "text": "/kb add T",
                "reply_to_message": replied}})
        };
        assert_eq!(quoted_of(in_topic(created)), None);
        // A reply inside the topic to a real message is a quote.
        let earlier = json!({"message_id": 40, "date": 1750000000, "chat": forum, "from": alice(),
            "message_thread_id": 12, "is_topic_message": true, "text": "drain the node first"});
        assert_eq!(quoted_of(in_topic(earlier)), Some(Quoted::Text("drain the node first".into())));
        // A topic the bot created does not make every message in it addressed to the bot.
        let by_bot = json!({"message_id": 12, "date": 1750000000, "chat": forum,
            "from": {"id": 777, "is_bot": true, "first_name": "Ops", "username": "ops_bot"},
            "message_thread_id": 12, "is_topic_message": true,
            "forum_topic_created": {"name": "Incidents", "icon_color": 7322096}});
        let Inbound::Event(e, None) = parse(&update(in_topic(by_bot)), &me(), 0) else { panic!() };
        assert!(matches!(e.kind, EventKind::Message { mentions_bot: false, quoted: None, .. }), "{:?}", e.kind);
    }

    #[test]
    fn callback_queries_become_actions() {
        let body = json!({"update_id": 7, "callback_query": {
            "id": "998877", "from": {"id": 42, "is_bot": false, "first_name": "A"}, "chat_instance": "-5",
            "data": "tok123",
            "message": {"message_id": 3, "date": 1750000000, "chat": group(),
                        "from": {"id": 777, "is_bot": true, "first_name": "Ops", "username": "ops_bot"}, "text": "card"},
        }});
        let Inbound::Event(e, Some(query)) = parse(&update(body), &me(), 9) else { panic!() };
        assert_eq!((e.id.as_str(), query.0.as_str()), ("telegram:cb:998877", "998877"));
        assert_eq!(e.kind, EventKind::Action { token: "tok123".into() });
        assert_eq!(e.message_id.as_ref().map(MessageId::as_str), Some("3"));
    }

    #[test]
    fn what_we_do_not_handle_is_ignored() {
        let from_bot = json!({"update_id": 8, "message": {"message_id": 1, "date": 1750000000,
            "chat": group(), "from": {"id": 5, "is_bot": true, "first_name": "B"}, "text": "/ping"}});
        assert!(matches!(parse(&update(from_bot), &me(), 0), Inbound::Ignored(_)));
        let sticker = json!({"update_id": 9, "message": {"message_id": 1, "date": 1750000000,
            "chat": group(), "from": {"id": 5, "is_bot": false, "first_name": "B"}}});
        assert!(matches!(parse(&update(sticker), &me(), 0), Inbound::Ignored(_)));
        let poll = json!({"update_id": 10, "poll_answer": {"poll_id": "1", "option_ids": [0],
            "user": {"id": 5, "is_bot": false, "first_name": "B"}}});
        assert!(matches!(parse(&update(poll), &me(), 0), Inbound::Ignored(_)));
    }
}
