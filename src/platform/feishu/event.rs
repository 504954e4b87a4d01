//! Feishu event bodies → [`Event`]. Handles the schema 2.0 envelope (events
//! and `card.action.trigger`), the v1 envelope, URL-verification challenges and
//! old-style card callbacks. Message text comes from `text` and `post`
//! messages; @-mention placeholders (`@_user_1`) are resolved: the bot's own
//! mention is removed and flagged, others become `@Name`.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::{
    ChatKind, ChatRef, Event, EventId, EventKind, MessageId, PlatformKind, Quoted, Sender, ThreadId, UserId,
};

/// What a callback body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Challenge {
        challenge: String,
    },
    Event(Box<Event>),
    /// A well-formed body we do not act on (other event types, non-text messages).
    Ignored {
        what: String,
    },
}

/// A parsed body with the verification token it carried, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub token: Option<String>,
    pub inbound: Inbound,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    Json(String),
    #[error("body is not a Feishu event, challenge or card callback")]
    Unknown,
    #[error("{event_type}: {message}")]
    Malformed { event_type: String, message: String },
}

/// The bot's own identity, to recognize its mentions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentity {
    pub open_id: String,
}

/// Parses a (decrypted) callback body received at `now_ms`.
pub fn parse(body: &str, bot: &BotIdentity, now_ms: i64) -> Result<Parsed, ParseError> {
    let value: Value = serde_json::from_str(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let token_at = |v: &Value| v.get("token").and_then(Value::as_str).map(str::to_owned);
    if value.get("type").and_then(Value::as_str) == Some("url_verification") {
        let challenge = value.get("challenge").and_then(Value::as_str).ok_or(ParseError::Unknown)?;
        return Ok(Parsed { token: token_at(&value), inbound: Inbound::Challenge { challenge: challenge.to_owned() } });
    }
    if value.get("schema").and_then(Value::as_str) == Some("2.0") {
        let envelope: EnvelopeV2 = from_value(value, "schema 2.0 envelope")?;
        let token = Some(envelope.header.token.clone()).filter(|t| !t.is_empty());
        return Ok(Parsed { token, inbound: v2(envelope, bot, now_ms)? });
    }
    if value.get("uuid").is_some() {
        let envelope: EnvelopeV1 = from_value(value, "v1 envelope")?;
        let token = Some(envelope.token.clone()).filter(|t| !t.is_empty());
        return Ok(Parsed { token, inbound: v1(envelope, now_ms)? });
    }
    if value.get("action").is_some() && value.get("open_message_id").is_some() {
        // Old-style card callback: its `token` is a card-update token, not the verification token.
        let card: CardV1 = from_value(value, "card.action.trigger_v1")?;
        return Ok(Parsed { token: None, inbound: card_v1(card, body, now_ms)? });
    }
    Err(ParseError::Unknown)
}

fn from_value<T: for<'de> Deserialize<'de>>(value: Value, what: &str) -> Result<T, ParseError> {
    serde_json::from_value(value)
        .map_err(|e| ParseError::Malformed { event_type: what.to_owned(), message: e.to_string() })
}

#[derive(Deserialize)]
struct EnvelopeV2 {
    header: HeaderV2,
    event: Value,
}

#[derive(Deserialize)]
struct HeaderV2 {
    event_id: String,
    event_type: String,
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
struct EnvelopeV1 {
    uuid: String,
    #[serde(default)]
    token: String,
    event: Value,
}

#[derive(Deserialize)]
struct MessageEvent {
    sender: MessageSender,
    message: Message,
}

#[derive(Deserialize)]
struct MessageSender {
    sender_id: OpenIds,
    #[serde(default)]
    sender_type: String,
}

#[derive(Deserialize, Default)]
struct OpenIds {
    #[serde(default)]
    open_id: String,
}

#[derive(Deserialize)]
struct Message {
    message_id: String,
    #[serde(default)]
    thread_id: Option<String>,
    /// The message this one replies to (in a thread: the thread's first message).
    #[serde(default)]
    parent_id: Option<String>,
    chat_id: String,
    chat_type: String,
    message_type: String,
    content: String,
    #[serde(default)]
    mentions: Vec<Mention>,
}

#[derive(Deserialize)]
struct Mention {
    key: String,
    #[serde(default)]
    id: OpenIds,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct CardActionEvent {
    operator: OpenIds,
    action: CardAction,
    context: CardContext,
}

#[derive(Deserialize)]
struct CardAction {
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct CardContext {
    open_message_id: String,
    open_chat_id: String,
}

#[derive(Deserialize)]
struct CardV1 {
    open_id: String,
    open_message_id: String,
    #[serde(default)]
    open_chat_id: String,
    action: CardAction,
}

#[derive(Deserialize)]
struct MessageV1 {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    open_chat_id: String,
    #[serde(default)]
    chat_type: String,
    #[serde(default)]
    msg_type: String,
    #[serde(default)]
    open_id: String,
    #[serde(default)]
    open_message_id: String,
    #[serde(default)]
    parent_id: String,
    #[serde(default)]
    is_mention: bool,
    #[serde(default)]
    text_without_at_bot: String,
}

fn v2(envelope: EnvelopeV2, bot: &BotIdentity, now_ms: i64) -> Result<Inbound, ParseError> {
    let HeaderV2 { event_id, event_type, .. } = envelope.header;
    let malformed =
        |e: serde_json::Error| ParseError::Malformed { event_type: event_type.clone(), message: e.to_string() };
    match event_type.as_str() {
        "im.message.receive_v1" => {
            let body: MessageEvent = serde_json::from_value(envelope.event).map_err(malformed)?;
            message(&event_id, body, bot, now_ms)
        }
        "card.action.trigger" => {
            let body: CardActionEvent = serde_json::from_value(envelope.event).map_err(malformed)?;
            let Some(token) = action_token(&body.action.value) else {
                return Ok(Inbound::Ignored { what: "card action without an opsclaw token".into() });
            };
            Ok(Inbound::Event(Box::new(action_event(
                &event_id,
                &body.context.open_chat_id,
                &body.operator.open_id,
                &body.context.open_message_id,
                token,
                now_ms,
            ))))
        }
        other => Ok(Inbound::Ignored { what: format!("event type {other}") }),
    }
}

fn v1(envelope: EnvelopeV1, now_ms: i64) -> Result<Inbound, ParseError> {
    let body: MessageV1 = serde_json::from_value(envelope.event)
        .map_err(|e| ParseError::Malformed { event_type: "v1 event".into(), message: e.to_string() })?;
    if body.kind != "message" {
        return Ok(Inbound::Ignored { what: format!("v1 event type {}", body.kind) });
    }
    if body.msg_type != "text" {
        return Ok(Inbound::Ignored { what: format!("v1 message of type {}", body.msg_type) });
    }
    let chat_kind = if body.chat_type == "private" { ChatKind::Direct } else { ChatKind::Group };
    Ok(Inbound::Event(Box::new(Event {
        id: EventId::new(PlatformKind::Feishu, &envelope.uuid),
        chat: ChatRef::new(PlatformKind::Feishu, body.open_chat_id),
        chat_kind,
        sender: Sender { id: UserId::new(body.open_id.clone()), display_name: body.open_id },
        message_id: Some(MessageId::new(body.open_message_id)),
        thread: None,
        received_at_ms: now_ms,
        kind: EventKind::Message {
            text: body.text_without_at_bot.trim().to_owned(),
            mentions_bot: body.is_mention,
            quoted: parent(Some(body.parent_id)),
        },
    })))
}

fn card_v1(card: CardV1, raw_body: &str, now_ms: i64) -> Result<Inbound, ParseError> {
    let Some(token) = action_token(&card.action.value) else {
        return Ok(Inbound::Ignored { what: "card action without an opsclaw token".into() });
    };
    // Old callbacks carry no event id; each click's body differs (it holds a fresh
    // card-update token), so its hash identifies the click.
    let digest = Sha256::digest(raw_body.as_bytes());
    let id: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    Ok(Inbound::Event(Box::new(action_event(
        &format!("cardv1-{id}"),
        &card.open_chat_id,
        &card.open_id,
        &card.open_message_id,
        token,
        now_ms,
    ))))
}

/// Buttons carry `{"t": "<action token>"}` as their callback value.
fn action_token(value: &Value) -> Option<String> {
    let value = match value {
        // Some clients deliver the value as a JSON string.
        Value::String(s) => serde_json::from_str::<Value>(s).ok()?,
        other => other.clone(),
    };
    value.get("t").and_then(Value::as_str).map(str::to_owned)
}

fn action_event(event_id: &str, chat: &str, user: &str, message: &str, token: String, now_ms: i64) -> Event {
    Event {
        id: EventId::new(PlatformKind::Feishu, event_id),
        chat: ChatRef::new(PlatformKind::Feishu, chat),
        chat_kind: ChatKind::Group,
        sender: Sender { id: UserId::new(user), display_name: user.to_owned() },
        message_id: Some(MessageId::new(message)),
        thread: None,
        received_at_ms: now_ms,
        kind: EventKind::Action { token },
    }
}

fn message(event_id: &str, body: MessageEvent, bot: &BotIdentity, now_ms: i64) -> Result<Inbound, ParseError> {
    let MessageEvent { sender, message } = body;
    if sender.sender_type != "user" && !sender.sender_type.is_empty() {
        return Ok(Inbound::Ignored { what: format!("message from a {}", sender.sender_type) });
    }
    let malformed = |m: String| ParseError::Malformed { event_type: "im.message.receive_v1".into(), message: m };
    let content: Value = serde_json::from_str(&message.content).map_err(|e| malformed(format!("content: {e}")))?;
    let (text, mentions_bot) = match message.message_type.as_str() {
        "text" => {
            let text =
                content.get("text").and_then(Value::as_str).ok_or_else(|| malformed("text without text".into()))?;
            resolve_mentions(text, &message.mentions, Some(bot))
        }
        "post" => post_text(&content, &message.mentions, Some(bot)),
        other => return Ok(Inbound::Ignored { what: format!("message of type {other}") }),
    };
    let chat_kind = if message.chat_type == "p2p" { ChatKind::Direct } else { ChatKind::Group };
    Ok(Inbound::Event(Box::new(Event {
        id: EventId::new(PlatformKind::Feishu, event_id),
        chat: ChatRef::new(PlatformKind::Feishu, message.chat_id),
        chat_kind,
        sender: Sender { id: UserId::new(sender.sender_id.open_id.clone()), display_name: sender.sender_id.open_id },
        message_id: Some(MessageId::new(message.message_id)),
        thread: message.thread_id.filter(|t| !t.is_empty()).map(ThreadId::new),
        received_at_ms: now_ms,
        kind: EventKind::Message { text: text.trim().to_owned(), mentions_bot, quoted: parent(message.parent_id) },
    })))
}

/// Feishu names the replied-to message only by id; the handler that needs its
/// text reads it later (off the acknowledgement path). Absent and `""` both mean
/// "not a reply".
fn parent(parent_id: Option<String>) -> Option<Quoted> {
    parent_id.filter(|id| !id.is_empty()).map(|id| Quoted::Id(MessageId::new(id)))
}

/// Replaces mention placeholders; the bot's own mention (when `bot` is given)
/// is removed and reported, every other one becomes `@Name`.
fn resolve_mentions(text: &str, mentions: &[Mention], bot: Option<&BotIdentity>) -> (String, bool) {
    let mut sorted: Vec<&Mention> = mentions.iter().collect();
    // `@_user_10` must be replaced before `@_user_1`.
    sorted.sort_by_key(|m| std::cmp::Reverse(m.key.len()));
    let mut text = text.to_owned();
    let mut mentions_bot = false;
    for m in sorted {
        if !text.contains(&m.key) {
            continue;
        }
        if bot.is_some_and(|bot| m.id.open_id == bot.open_id) {
            mentions_bot = true;
            text = text.replace(&m.key, "");
        } else {
            text = text.replace(&m.key, &format!("@{}", m.name));
        }
    }
    (text, mentions_bot)
}

/// The text of a rich-text (`post`) message: paragraphs joined by newlines.
fn post_text(content: &Value, mentions: &[Mention], bot: Option<&BotIdentity>) -> (String, bool) {
    // Received posts are either {title, content} or wrapped in a locale key.
    let post = if content.get("content").is_some() {
        content
    } else {
        content.as_object().and_then(|o| o.values().next()).unwrap_or(&Value::Null)
    };
    let mut lines = Vec::new();
    let mut mentions_bot = false;
    for paragraph in post.get("content").and_then(Value::as_array).into_iter().flatten() {
        let mut line = String::new();
        for element in paragraph.as_array().into_iter().flatten() {
            match element.get("tag").and_then(Value::as_str) {
                Some("text" | "a" | "code_block" | "md") => {
                    line.push_str(element.get("text").and_then(Value::as_str).unwrap_or_default())
                }
                Some("at") => {
                    let user = element.get("user_id").and_then(Value::as_str).unwrap_or_default();
                    let by_key = mentions.iter().find(|m| m.key == user);
                    let open_id = by_key.map_or(user, |m| m.id.open_id.as_str());
                    if bot.is_some_and(|bot| open_id == bot.open_id) {
                        mentions_bot = true;
                    } else {
                        let name = by_key
                            .map(|m| m.name.as_str())
                            .or_else(|| element.get("user_name").and_then(Value::as_str))
                            .unwrap_or(user);
                        line.push('@');
                        line.push_str(name);
                    }
                }
                _ => {}
            }
        }
        lines.push(line);
    }
    (lines.join("\n"), mentions_bot)
}

/// The text of a message read back by id (`data.items[0]` of `GET
/// /open-apis/im/v1/messages/:message_id`): `text` and `post` bodies, with
/// every mention as `@Name`, since the text is quoted content and no longer
/// addresses the bot. `None` for messages without text (images, files, cards)
/// and for recalled ones, whose body Feishu replaces with a notice.
pub fn fetched_text(item: &Value) -> Result<Option<String>, String> {
    let message: FetchedMessage = serde_json::from_value(item.clone()).map_err(|e| format!("message: {e}"))?;
    if message.deleted || !matches!(message.msg_type.as_str(), "text" | "post") {
        return Ok(None);
    }
    let content: Value =
        serde_json::from_str(&message.body.content).map_err(|e| format!("body.content is not JSON: {e}"))?;
    // Mentions in a fetched message name the user by a plain id string, not an id object.
    let mentions: Vec<Mention> = message
        .mentions
        .into_iter()
        .map(|m| Mention { key: m.key, id: OpenIds { open_id: m.id }, name: m.name })
        .collect();
    let (text, _) = match message.msg_type.as_str() {
        "text" => {
            let text = content.get("text").and_then(Value::as_str).ok_or("a text message without text")?;
            resolve_mentions(text, &mentions, None)
        }
        _ => post_text(&content, &mentions, None),
    };
    Ok(Some(text.trim().to_owned()))
}

/// A message object as the message API returns it (not as events carry it).
#[derive(Deserialize)]
struct FetchedMessage {
    msg_type: String,
    #[serde(default)]
    deleted: bool,
    body: FetchedBody,
    #[serde(default)]
    mentions: Vec<FetchedMention>,
}

#[derive(Deserialize)]
struct FetchedBody {
    content: String,
}

#[derive(Deserialize)]
struct FetchedMention {
    key: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn bot() -> BotIdentity {
        BotIdentity { open_id: "ou_bot".into() }
    }

    fn event(body: &str) -> Event {
        match parse(body, &bot(), NOW).unwrap().inbound {
            Inbound::Event(e) => *e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn text_of(e: &Event) -> (&str, bool) {
        match &e.kind {
            EventKind::Message { text, mentions_bot, .. } => (text, *mentions_bot),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    // The reference's group @-mention example (shared/ref/feishu.md §2.4).
    const GROUP_MENTION: &str = r#"{"schema":"2.0","header":{"event_id":"5e3702a84e847582be8db7fb73283c02","event_type":"im.message.receive_v1","create_time":"1700000000123","token":"vtok","app_id":"cli_a1b2c3d4e5f60718","tenant_key":"2f3a4b5c6d7e8f90"},"event":{"sender":{"sender_id":{"open_id":"ou_user1","union_id":"on_user1","user_id":"u1"},"sender_type":"user","tenant_key":"2f3a4b5c6d7e8f90"},"message":{"message_id":"om_msg1","chat_id":"oc_chat1","chat_type":"group","message_type":"text","create_time":"1700000000100","update_time":"1700000000100","content":"{\"text\":\"@_user_1 /ack ALERT-7\"}","mentions":[{"key":"@_user_1","id":{"open_id":"ou_bot","union_id":"on_bot","user_id":""},"name":"OpsBot","tenant_key":"2f3a4b5c6d7e8f90"}]}}}"#;

    #[test]
    fn group_text_with_bot_mention() {
        let parsed = parse(GROUP_MENTION, &bot(), NOW).unwrap();
        assert_eq!(parsed.token.as_deref(), Some("vtok"));
        let e = event(GROUP_MENTION);
        assert_eq!(e.id.as_str(), "feishu:5e3702a84e847582be8db7fb73283c02");
        assert_eq!(e.chat, ChatRef::new(PlatformKind::Feishu, "oc_chat1"));
        assert_eq!(e.chat_kind, ChatKind::Group);
        assert_eq!(e.sender.id.as_str(), "ou_user1");
        assert_eq!(e.message_id, Some(MessageId::new("om_msg1")));
        assert_eq!(text_of(&e), ("/ack ALERT-7", true));
    }

    #[test]
    fn other_mentions_become_names_and_long_keys_resolve_first() {
        let mentions: Vec<Mention> = (1..=10)
            .map(|n| Mention {
                key: format!("@_user_{n}"),
                id: OpenIds { open_id: format!("ou_{n}") },
                name: format!("U{n}"),
            })
            .collect();
        assert_eq!(
            resolve_mentions("hi @_user_10 and @_user_1", &mentions, Some(&bot())),
            ("hi @U10 and @U1".into(), false)
        );
    }

    #[test]
    fn post_messages_become_text() {
        let content = r#"{\"title\":\"\",\"content\":[[{\"tag\":\"at\",\"user_id\":\"@_user_1\",\"user_name\":\"OpsBot\"},{\"tag\":\"text\",\"text\":\" /logs payments\"}],[{\"tag\":\"text\",\"text\":\"second line \"},{\"tag\":\"at\",\"user_id\":\"@_user_2\"}]]}"#;
        let body = GROUP_MENTION
            .replace(r#""message_type":"text""#, r#""message_type":"post""#)
            .replace(r#""content":"{\"text\":\"@_user_1 /ack ALERT-7\"}""#, &format!(r#""content":"{content}""#))
            .replace(
                r#""tenant_key":"2f3a4b5c6d7e8f90"}]}}}"#,
                r#""tenant_key":"2f3a4b5c6d7e8f90"},{"key":"@_user_2","id":{"open_id":"ou_zs"},"name":"张三"}]}}}"#,
            );
        assert_eq!(text_of(&event(&body)), ("/logs payments\nsecond line @张三", true));
    }

    #[test]
    fn p2p_threads_and_other_types() {
        let p2p = GROUP_MENTION.replace(r#""chat_type":"group""#, r#""chat_type":"p2p","thread_id":"omt_1""#);
        let e = event(&p2p);
        assert_eq!(e.chat_kind, ChatKind::Direct);
        assert_eq!(e.thread, Some(ThreadId::new("omt_1")));
        let image = GROUP_MENTION.replace(r#""message_type":"text""#, r#""message_type":"image""#);
        assert!(matches!(parse(&image, &bot(), NOW).unwrap().inbound, Inbound::Ignored { .. }));
        let other = GROUP_MENTION.replace("im.message.receive_v1", "im.chat.member.bot.added_v1");
        assert!(matches!(parse(&other, &bot(), NOW).unwrap().inbound, Inbound::Ignored { .. }));
    }

    fn quoted_of(e: &Event) -> Option<&Quoted> {
        match &e.kind {
            EventKind::Message { quoted, .. } => quoted.as_ref(),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn replies_name_the_parent_message() {
        assert_eq!(quoted_of(&event(GROUP_MENTION)), None);
        let reply = GROUP_MENTION.replace(
            r#""message_id":"om_msg1","#,
            r#""message_id":"om_msg1","root_id":"om_root","parent_id":"om_parent","#,
        );
        assert_eq!(quoted_of(&event(&reply)), Some(&Quoted::Id(MessageId::new("om_parent"))));
        let empty = GROUP_MENTION.replace(r#""message_id":"om_msg1","#, r#""message_id":"om_msg1","parent_id":"","#);
        assert_eq!(quoted_of(&event(&empty)), None, "an empty parent_id is no reply");
        let v1 = r#"{"uuid":"u-2","token":"vtok","type":"event_callback","event":{"type":"message","open_chat_id":"oc_1","chat_type":"group","msg_type":"text","open_id":"ou_u","open_message_id":"om_2","parent_id":"om_1","is_mention":true,"text_without_at_bot":"/kb add T"}}"#;
        assert_eq!(quoted_of(&event(v1)), Some(&Quoted::Id(MessageId::new("om_1"))));
    }

    /// `data.items[0]` of a GET /open-apis/im/v1/messages/:message_id response.
    fn fetched(msg_type: &str, content: &str, mentions: serde_json::Value) -> Result<Option<String>, String> {
        let item = serde_json::json!({
            "message_id": "om_parent", "root_id": "", "parent_id": "", "thread_id": "", "msg_type": msg_type,
            "create_time": "1700000000100", "update_time": "1700000000100", "deleted": false, "updated": false,
            "chat_id": "oc_chat1", "upper_message_id": "",
            "sender": {"id": "ou_user1", "id_type": "open_id", "sender_type": "user", "tenant_key": "t1"},
            "body": {"content": content}, "mentions": mentions,
        });
        fetched_text(&item)
    }

    #[test]
    fn fetched_text_messages_keep_every_mention_as_a_name() {
        let mentions = serde_json::json!([
            {"key": "@_user_1", "id": "ou_bot", "id_type": "open_id", "name": "OpsBot", "tenant_key": "t1"},
            {"key": "@_user_2", "id": "ou_zs", "id_type": "open_id", "name": "张三", "tenant_key": "t1"},
        ]);
        let content = r#"{"text":"@_user_1 restart with @_user_2:\n1. drain\n2. restart "}"#;
        let expected = "@OpsBot restart with @张三:\n1. drain\n2. restart";
        assert_eq!(fetched("text", content, mentions), Ok(Some(expected.into())));
    }

    #[test]
    fn fetched_posts_keep_their_text_elements_by_paragraph() {
        let content = r#"{"title":"Failover","content":[[{"tag":"text","text":"Promote the replica: "},{"tag":"code_block","language":"shell","text":"REPLICAOF NO ONE"}],[{"tag":"img","image_key":"img_1"}],[{"tag":"a","text":"runbook","href":"https://x"},{"tag":"text","text":" then tell "},{"tag":"at","user_id":"@_user_1","user_name":"Li"}]]}"#;
        let mentions = serde_json::json!([{"key": "@_user_1", "id": "ou_li", "id_type": "open_id", "name": "Li"}]);
        assert_eq!(
            fetched("post", content, mentions),
            Ok(Some(
                "Promote the replica: REPLICAOF NO ONE

runbook then tell @Li"
                    .into()
            ))
        );
    }

    #[test]
    fn fetched_messages_without_text_and_broken_ones() {
        assert_eq!(fetched("image", r#"{"image_key":"img_1"}"#, serde_json::json!([])), Ok(None));
        assert_eq!(fetched("interactive", r#"{"elements":[]}"#, serde_json::json!([])), Ok(None));
        let recalled =
            serde_json::json!({"msg_type": "text", "deleted": true, "body": {"content": "This message was recalled"}});
        assert_eq!(fetched_text(&recalled), Ok(None));
        assert!(fetched("text", "not json", serde_json::json!([])).is_err());
        assert!(fetched("text", r#"{"title":"x"}"#, serde_json::json!([])).is_err());
        assert!(fetched_text(&serde_json::json!({"msg_type": "text"})).is_err(), "no body");
    }

    #[test]
    fn card_action_trigger_carries_the_token() {
        let body = r#"{"schema":"2.0","header":{"event_id":"ev_card1","event_type":"card.action.trigger","create_time":"1603977298000000","token":"vtok","app_id":"cli_a","tenant_key":"t"},"event":{"operator":{"open_id":"ou_user1"},"token":"c-abc","action":{"value":{"t":"AbCdEf"},"tag":"button"},"host":"im_message","context":{"open_message_id":"om_card","open_chat_id":"oc_chat1"}}}"#;
        let e = event(body);
        assert_eq!(e.kind, EventKind::Action { token: "AbCdEf".into() });
        assert_eq!(e.message_id, Some(MessageId::new("om_card")));
        assert_eq!(e.sender.id.as_str(), "ou_user1");
        let string_value = body.replace(r#"{"t":"AbCdEf"}"#, r#""{\"t\":\"AbCdEf\"}""#);
        assert_eq!(event(&string_value).kind, EventKind::Action { token: "AbCdEf".into() });
        let foreign = body.replace(r#"{"t":"AbCdEf"}"#, r#"{"op":"x"}"#);
        assert!(matches!(parse(&foreign, &bot(), NOW).unwrap().inbound, Inbound::Ignored { .. }));
    }

    #[test]
    fn old_card_callbacks_and_v1_messages() {
        let card = r#"{"open_id":"ou_user1","open_message_id":"om_msg1","open_chat_id":"oc_chat1","tenant_key":"t1","token":"c-abc","action":{"value":{"t":"tok"},"tag":"button"}}"#;
        let parsed = parse(card, &bot(), NOW).unwrap();
        assert_eq!(parsed.token, None, "an old card's `token` is not the verification token");
        let Inbound::Event(e) = parsed.inbound else { panic!() };
        assert!(e.id.as_str().starts_with("feishu:cardv1-"));
        let v1 = r#"{"ts":"1700000000.1","uuid":"u-1","token":"vtok","type":"event_callback","event":{"type":"message","open_chat_id":"oc_1","chat_type":"private","msg_type":"text","open_id":"ou_u","open_message_id":"om_1","is_mention":false,"text":"/ping","text_without_at_bot":"/ping"}}"#;
        let e = event(v1);
        assert_eq!((e.id.as_str(), e.chat_kind), ("feishu:u-1", ChatKind::Direct));
        assert_eq!(text_of(&e), ("/ping", false));
    }

    #[test]
    fn challenges_and_bad_bodies() {
        let parsed =
            parse(r#"{"challenge":"ajls384kdj","token":"vtok","type":"url_verification"}"#, &bot(), NOW).unwrap();
        assert_eq!(parsed.inbound, Inbound::Challenge { challenge: "ajls384kdj".into() });
        assert_eq!(parsed.token.as_deref(), Some("vtok"));
        assert!(matches!(parse("{nope", &bot(), NOW), Err(ParseError::Json(_))));
        assert_eq!(parse(r#"{"hello":1}"#, &bot(), NOW), Err(ParseError::Unknown));
        let broken = GROUP_MENTION.replace(r#""chat_id":"oc_chat1","#, "");
        assert!(matches!(parse(&broken, &bot(), NOW), Err(ParseError::Malformed { .. })));
        let bad_content = GROUP_MENTION.replace(r#"{\"text\":\"@_user_1 /ack ALERT-7\"}"#, "not json");
        assert!(matches!(parse(&bad_content, &bot(), NOW), Err(ParseError::Malformed { .. })));
    }
}
