//! A fake Telegram Bot API server on 127.0.0.1 for the integration tests and
//! the load driver, following shared/ref/telegram.md: the HTTP shape and
//! error envelope of §1 (method names case-insensitive; query string, form,
//! JSON and multipart parameters; `attach://` uploads), getUpdates long
//! polling with offsets, sticky `allowed_updates` and 409 conflicts (§2), the
//! objects of §3, the methods of §4 with the real server's limits and error
//! texts (HTML `parse_mode` validation of §4.1 included), the flood limits of
//! §5.1 as an opt-in knob, and the checklist of §8. teloxide 0.17 talks to it
//! unchanged: point the bot's API URL at [`FakeTelegram::url`].
//!
//! State lives in one `Mutex` that is never held across an `.await`; long
//! polls wait on a `watch` channel bumped by every push, never by sleeping.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};
use tokio::sync::{oneshot, watch};

pub const TOKEN: &str = "123456:TEST-token_abcdefghijklmnopqrstuvwx";
pub const BOT_ID: i64 = 777000111;
pub const BOT_USERNAME: &str = "ops_test_bot";
const BOT_FIRST_NAME: &str = "OpsBot";

/// The cloud's 50 MB upload limit (§4 sendDocument) plus room for the other parts.
const MAX_BODY: usize = 50 * 1024 * 1024 + 64 * 1024;
/// The open-source server clamps `timeout` to this (§2).
const LONG_POLL_MAX_TIMEOUT: i64 = 50;

const TERMINATED_BY_OTHER: &str =
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
const TERMINATED_BY_SET_WEBHOOK: &str = "Conflict: terminated by setWebhook request";
const WEBHOOK_ACTIVE: &str =
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";
const QUERY_TOO_OLD: &str = "query is too old and response timeout expired or query ID is invalid";
const NOT_MODIFIED: &str = "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";

/// Methods the fake implements, lower-cased (the real server lower-cases before lookup, §1.1).
const METHODS: &[&str] = &[
    "getme",
    "getupdates",
    "setwebhook",
    "deletewebhook",
    "getwebhookinfo",
    "sendmessage",
    "editmessagetext",
    "editmessagereplymarkup",
    "answercallbackquery",
    "setmycommands",
    "getmycommands",
    "deletemycommands",
    "senddocument",
    "deletemessage",
    "sendchataction",
];
/// Calls that `rate_limit_chat` refuses.
const SEND_OR_EDIT: &[&str] = &["sendmessage", "senddocument", "editmessagetext", "editmessagereplymarkup"];
/// Calls the §5.1 flood limits apply to.
const SENDS: &[&str] = &["sendmessage", "senddocument"];

/// In form, multipart and query encodings these come as JSON text (§1.1).
const JSON_PARAMS: &[&str] = &[
    "reply_markup",
    "allowed_updates",
    "commands",
    "scope",
    "reply_parameters",
    "link_preview_options",
    "entities",
    "caption_entities",
];
/// Integer parameters, turned into numbers so `Call::params` looks the same whatever the encoding.
const INT_PARAMS: &[&str] =
    &["chat_id", "message_id", "offset", "limit", "timeout", "message_thread_id", "max_connections", "cache_time"];
const BOOL_PARAMS: &[&str] = &[
    "disable_notification",
    "show_alert",
    "drop_pending_updates",
    "protect_content",
    "disable_content_type_detection",
    "allow_sending_without_reply",
];

/// One request that reached `/bot<token>/<method>`, failed ones included.
#[derive(Debug, Clone)]
pub struct Call {
    /// Lower-cased, e.g. "sendmessage".
    pub method: String,
    /// Query string, form, JSON or multipart text parts merged into one object.
    pub params: Value,
    /// Multipart file parts: (part name, file name, bytes).
    pub files: Vec<(String, String, Vec<u8>)>,
    /// The HTTP status answered. A long poll is recorded when it starts to wait,
    /// with 0 until it is answered, and 499 if the client went away first.
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

/// A message the bot created, in its current (edited) state.
#[derive(Debug, Clone)]
pub struct Sent {
    pub chat_id: i64,
    pub message_id: i64,
    /// The visible text (tags stripped, entities decoded), or the caption of a document.
    pub text: String,
    pub parse_mode: Option<String>,
    /// `None` when there is no keyboard (an empty `inline_keyboard` counts as none).
    pub reply_markup: Option<Value>,
    pub thread_id: Option<i64>,
    /// `reply_parameters.message_id`.
    pub reply_to: Option<i64>,
    /// (file name, bytes); for a document sent by file_id or URL, (that string, no bytes).
    pub document: Option<(String, Vec<u8>)>,
    /// How many times it was edited.
    pub edits: usize,
    /// Deleted with deleteMessage.
    pub deleted: bool,
    /// When it was created.
    pub at: Instant,
}

struct Stored {
    sent: Sent,
    /// Entities of the text or caption, as the real server would return them.
    entities: Vec<Value>,
    date: i64,
    edit_date: Option<i64>,
    /// The `document` object of the Message, for documents.
    document: Option<Value>,
}

struct ChatLog {
    next_id: i64,
    /// Index = message_id - 1.
    messages: Vec<Stored>,
}

struct Webhook {
    url: String,
    secret: Option<String>,
    max_connections: i64,
    has_certificate: bool,
}

struct PendingPoll {
    id: u64,
    abort: oneshot::Sender<&'static str>,
}

#[derive(Default)]
struct Flood {
    /// Per chat: a token bucket of 3 refilled at 1/s, and when it was last refilled.
    buckets: HashMap<i64, (f64, Instant)>,
    /// Per group: sends in the last minute.
    groups: HashMap<i64, VecDeque<Instant>>,
    /// All sends in the last second.
    overall: VecDeque<Instant>,
}

struct Inner {
    calls: Vec<Call>,
    /// Unconfirmed updates in creation order.
    queue: VecDeque<Value>,
    next_update_id: i64,
    confirmed_offset: i64,
    /// Sticky across getUpdates calls; `None` = never set.
    allowed_updates: Option<Vec<String>>,
    poll_cap: Duration,
    pending_poll: Option<PendingPoll>,
    next_poll_id: u64,
    webhook: Option<Webhook>,
    /// setMyCommands by scope and language.
    commands: HashMap<String, Value>,
    last_commands: Option<(String, Value)>,
    chats: HashMap<i64, ChatLog>,
    /// (chat, message id) of every message the bot created, in creation order.
    sent_order: Vec<(i64, i64)>,
    /// Chat objects seen in pushed updates, echoed back in the bot's messages.
    known_chats: HashMap<i64, Value>,
    /// Messages seen in pushed updates, by (chat, message id), for `reply_to_message` and deleteMessage.
    user_messages: HashMap<(i64, i64), Value>,
    /// Callback query ids that were pushed, and those answered.
    callback_ids: HashSet<String>,
    answered: HashSet<String>,
    rate_limits: HashMap<i64, (usize, u64)>,
    fail_next: HashMap<String, (usize, u16)>,
    flood_on: bool,
    flood: Flood,
    flood_violations: usize,
    next_file: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped on every queued update; long polls wait on it.
    updates: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock must not hide its own failure behind a PoisonError.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fake server; dropping it stops the server.
pub struct FakeTelegram {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeTelegram {
    /// Binds 127.0.0.1 on a free port and serves until dropped.
    pub async fn start() -> FakeTelegram {
        let (updates, _) = watch::channel(0);
        let shared = Arc::new(Shared { inner: Mutex::new(Inner::new()), updates });
        let app = Router::new()
            .route("/{head}/{method}", any(api))
            .fallback(|| async { error_response(ApiError::new(404, "Not Found")) })
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("fake Telegram serves") });
        // Loopback only: never go through a proxy from the environment.
        let client =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("reqwest client");
        FakeTelegram { addr, shared, client, server }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash (teloxide would double it, §1.1).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues `{"update_id": n, kind: payload}` and wakes a waiting long poll; returns n.
    /// Like the real server, an update of a kind the sticky `allowed_updates` excludes is
    /// never created (§2: the setting does not affect updates created before it): its id
    /// is used up but nothing is queued.
    pub fn push(&self, kind: &str, payload: Value) -> i64 {
        let mut inner = self.shared.lock();
        let id = inner.next_update_id;
        inner.next_update_id += 1;
        let mut update = Map::new();
        update.insert("update_id".into(), id.into());
        update.insert(kind.into(), payload);
        let update = Value::Object(update);
        if inner.allows(kind) {
            inner.track(&update);
            inner.queue.push_back(update);
            drop(inner);
            self.shared.updates.send_modify(|n| *n += 1);
        }
        id
    }

    /// Queues an arbitrary (possibly malformed) update as is, bypassing `allowed_updates`;
    /// inserts `update_id` only if absent. Returns the id it carries (or the next one).
    pub fn push_raw(&self, update: Value) -> i64 {
        let mut update = update;
        let mut inner = self.shared.lock();
        let next = inner.next_update_id;
        let id = match update.get("update_id") {
            Some(existing) => existing.as_i64().unwrap_or(next),
            None => {
                if let Some(object) = update.as_object_mut() {
                    object.insert("update_id".into(), next.into());
                }
                next
            }
        };
        inner.next_update_id = inner.next_update_id.max(id + 1);
        inner.track(&update);
        inner.queue.push_back(update);
        drop(inner);
        self.shared.updates.send_modify(|n| *n += 1);
        id
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// Calls of `method`, matched case-insensitively.
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        let method = method.to_ascii_lowercase();
        self.shared.lock().calls.iter().filter(|c| c.method == method).cloned().collect()
    }

    pub fn n_calls_to(&self, method: &str) -> usize {
        let method = method.to_ascii_lowercase();
        self.shared.lock().calls.iter().filter(|c| c.method == method).count()
    }

    /// Messages the bot created in `chat_id`, in creation order, as they are now.
    pub fn sent(&self, chat_id: i64) -> Vec<Sent> {
        let inner = self.shared.lock();
        inner.chats.get(&chat_id).map(|log| log.messages.iter().map(|s| s.sent.clone()).collect()).unwrap_or_default()
    }

    /// Every message the bot created, in creation order.
    pub fn all_sent(&self) -> Vec<Sent> {
        let inner = self.shared.lock();
        inner.sent_order.iter().filter_map(|&(chat, id)| inner.stored(chat, id)).map(|s| s.sent.clone()).collect()
    }

    /// How many messages the bot created (no copying, for a load driver).
    pub fn n_sent(&self) -> usize {
        self.shared.lock().sent_order.len()
    }

    /// The highest positive offset any getUpdates sent; updates below it are forgotten.
    pub fn confirmed_offset(&self) -> i64 {
        self.shared.lock().confirmed_offset
    }

    /// (url, secret_token) set by setWebhook.
    pub fn webhook(&self) -> Option<(String, Option<String>)> {
        self.shared.lock().webhook.as_ref().map(|w| (w.url.clone(), w.secret.clone()))
    }

    /// The `commands` of the last setMyCommands (any scope), normalised without a leading '/';
    /// `None` before any, or after deleteMyCommands for that scope.
    pub fn commands(&self) -> Option<Value> {
        self.shared.lock().last_commands.as_ref().map(|(_, commands)| commands.clone())
    }

    /// The next `times` send/edit calls for `chat_id` get 429 with `retry_after`.
    pub fn rate_limit_chat(&self, chat_id: i64, times: usize, retry_after_secs: u64) {
        self.shared.lock().rate_limits.insert(chat_id, (times, retry_after_secs));
    }

    /// The next `times` calls of `method` (case-insensitive) get `status` and
    /// "Internal Server Error". teloxide waits 10 s after any 5xx (§1.3).
    pub fn fail_next(&self, method: &str, times: usize, status: u16) {
        self.shared.lock().fail_next.insert(method.to_ascii_lowercase(), (times, status));
    }

    /// The longest a getUpdates is held whatever its `timeout` (default 2 s).
    pub fn set_poll_cap(&self, cap: Duration) {
        self.shared.lock().poll_cap = cap;
    }

    /// Enforce §5.1 on sendMessage/sendDocument (default off): per chat 1/s with a
    /// burst of 3, per group (chat_id < 0) 20/min, overall 30/s; a send over a limit
    /// gets 429 and counts in [`FakeTelegram::flood_violations`].
    pub fn set_flood_limits(&self, on: bool) {
        let mut inner = self.shared.lock();
        inner.flood_on = on;
        inner.flood = Flood::default();
    }

    pub fn flood_violations(&self) -> usize {
        self.shared.lock().flood_violations
    }

    /// POSTs one Update (a fresh update_id, `update_kind: payload`) as JSON to the URL
    /// set by setWebhook, with `X-Telegram-Bot-Api-Secret-Token` when `secret` is given,
    /// as the real server delivers (§6.4). Returns the HTTP status, or 0 if the
    /// connection failed. Panics if no webhook is set.
    pub async fn deliver_webhook(&self, update_kind: &str, payload: Value, secret: Option<&str>) -> u16 {
        let (url, update) = {
            let mut inner = self.shared.lock();
            let url = inner.webhook.as_ref().map(|w| w.url.clone()).expect("deliver_webhook: no webhook is set");
            let id = inner.next_update_id;
            inner.next_update_id += 1;
            let mut update = Map::new();
            update.insert("update_id".into(), id.into());
            update.insert(update_kind.into(), payload);
            let update = Value::Object(update);
            inner.track(&update);
            (url, update)
        };
        let mut request = self.client.post(&url).json(&update);
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        match request.send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    // ---- builders for realistic payloads (§3, §8.6-8.8) ----

    pub fn user(id: i64, first_name: &str, username: Option<&str>) -> Value {
        let mut user = json!({"id": id, "is_bot": false, "first_name": first_name, "language_code": "en"});
        if let Some(username) = username {
            user["username"] = username.into();
        }
        user
    }

    /// A private chat's id is the user's id (§3.4).
    pub fn private_chat(user_id: i64, first_name: &str) -> Value {
        json!({"id": user_id, "type": "private", "first_name": first_name})
    }

    pub fn group_chat(id: i64, title: &str, supergroup: bool, forum: bool) -> Value {
        let mut chat = json!({"id": id, "type": if supergroup { "supergroup" } else { "group" }, "title": title});
        if forum {
            chat["is_forum"] = true.into();
        }
        chat
    }

    /// A text Message dated now, with a `bot_command` entity when `text` starts with a
    /// command and a `mention` for each @word, offsets in UTF-16 units (§3.5).
    /// `thread_id` makes it a forum topic message.
    /// Like the real server, a topic message replies to the topic's creation
    /// message (a `forum_topic_created` service message whose id is the
    /// topic's) unless it replies to another message ([`FakeTelegram::replying_to`]).
    pub fn text_message(message_id: i64, chat: Value, from: Value, text: &str, thread_id: Option<i64>) -> Value {
        let mut message =
            json!({"message_id": message_id, "date": unix_now(), "chat": chat, "from": from, "text": text});
        let entities = text_entities(text);
        if !entities.is_empty() {
            message["entities"] = Value::Array(entities);
        }
        if let Some(thread) = thread_id {
            message["message_thread_id"] = thread.into();
            message["is_topic_message"] = true.into();
            message["reply_to_message"] = json!({
                "message_id": thread, "date": unix_now(), "chat": message["chat"], "from": message["from"],
                "message_thread_id": thread, "is_topic_message": true,
                "forum_topic_created": {"name": format!("Topic {thread}"), "icon_color": 7322096},
            });
        }
        message
    }

    /// `message` as a reply to message `replied_id` of its chat (a user message
    /// pushed earlier, or one the bot sent), carrying it as `reply_to_message`
    /// the way the server does: one level deep. Panics if there is none.
    pub fn replying_to(&self, mut message: Value, replied_id: i64) -> Value {
        let chat_id = message["chat"]["id"].as_i64().expect("a message with a chat");
        let inner = self.shared.lock();
        let mut replied = match inner.user_messages.get(&(chat_id, replied_id)) {
            Some(pushed) => pushed.clone(),
            None if inner.stored(chat_id, replied_id).is_some() => inner.message_json(chat_id, replied_id, false),
            None => panic!("no message {replied_id} in chat {chat_id} to reply to"),
        };
        if let Some(fields) = replied.as_object_mut() {
            fields.remove("reply_to_message");
        }
        message["reply_to_message"] = replied;
        message
    }

    /// A CallbackQuery for a press on `message` (use [`FakeTelegram::sent_message_json`]).
    pub fn callback_query(id: &str, from: Value, message: Value, data: &str) -> Value {
        let chat_id = message["chat"]["id"].as_i64().unwrap_or(0);
        // Opaque but stable per chat, numeric and negative like the real ones.
        let chat_instance = format!("-{}", 4_000_000_000_000_000_000u64 + chat_id.unsigned_abs());
        json!({"id": id, "from": from, "message": message, "chat_instance": chat_instance, "data": data})
    }

    /// The bot's stored message as a Message object (from = the bot, with reply_markup);
    /// a deleted one as an InaccessibleMessage (`date` 0, §3.6). Panics if there is none.
    pub fn sent_message_json(&self, chat_id: i64, message_id: i64) -> Value {
        let inner = self.shared.lock();
        match inner.stored(chat_id, message_id) {
            Some(s) if s.sent.deleted => {
                json!({"chat": inner.chat_json(chat_id), "message_id": message_id, "date": 0})
            }
            Some(_) => inner.message_json(chat_id, message_id, true),
            None => panic!("the bot has no message {message_id} in chat {chat_id}"),
        }
    }
}

// ---- HTTP ----

/// An error answer: status, description, and `retry_after` for 429s.
#[derive(Debug)]
struct ApiError {
    status: u16,
    description: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: u16, description: impl Into<String>) -> Self {
        ApiError { status, description: description.into(), retry_after: None }
    }

    fn too_many(retry_after: u64) -> Self {
        ApiError {
            status: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            retry_after: Some(retry_after),
        }
    }
}

fn bad(description: impl std::fmt::Display) -> ApiError {
    ApiError::new(400, format!("Bad Request: {description}"))
}

/// A result and the optional `description` some methods add on success.
type ApiResult = Result<(Value, Option<&'static str>), ApiError>;

fn ok_response(result: Value, description: Option<&str>) -> Response {
    let mut body = json!({"ok": true, "result": result});
    if let Some(description) = description {
        body["description"] = description.into();
    }
    Json(body).into_response()
}

fn error_response(error: ApiError) -> Response {
    let mut body = json!({"ok": false, "error_code": error.status, "description": error.description});
    if let Some(secs) = error.retry_after {
        body["parameters"] = json!({"retry_after": secs});
    }
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if let Some(secs) = error.retry_after {
        response.headers_mut().insert("retry-after", secs.into());
    }
    response
}

/// Marks a response whose call the handler already recorded (long polls record on arrival).
#[derive(Clone)]
struct Recorded;

async fn api(
    State(shared): State<Arc<Shared>>,
    Path((head, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let at = Instant::now();
    let Some(token) = head.strip_prefix("bot") else {
        return error_response(ApiError::new(404, "Not Found"));
    };
    let (parts, body) = request.into_parts();
    let method = method.to_ascii_lowercase();
    let (params, files, problem) = match axum::body::to_bytes(body, MAX_BODY).await {
        Err(_) => (json!({}), Vec::new(), Some(ApiError::new(413, "Request Entity Too Large"))),
        Ok(bytes) => match parse_params(parts.uri.query(), &parts.headers, &bytes) {
            Ok((params, files)) => (params, files, None),
            Err(reason) => (json!({}), Vec::new(), Some(bad(reason))),
        },
    };
    let call = Call { method, params, files, status: 0, at };
    let response = if token != TOKEN {
        error_response(ApiError::new(401, "Unauthorized"))
    } else if !METHODS.contains(&call.method.as_str()) {
        error_response(ApiError::new(404, "Not Found: method not found"))
    } else if let Some(problem) = problem {
        error_response(problem)
    } else {
        handle(&shared, &call).await
    };
    if response.extensions().get::<Recorded>().is_none() {
        let mut call = call;
        call.status = response.status().as_u16();
        shared.lock().calls.push(call);
    }
    response
}

async fn handle(shared: &Arc<Shared>, call: &Call) -> Response {
    {
        let mut inner = shared.lock();
        // Scripted failures come first: they stand for trouble before the method runs.
        if let Some(status) = take(&mut inner.fail_next, &call.method).map(|(_, status)| status) {
            return error_response(ApiError::new(status, "Internal Server Error"));
        }
        if SEND_OR_EDIT.contains(&call.method.as_str()) {
            let chat = p_i64(&call.params, "chat_id").unwrap_or(0);
            if let Some((_, secs)) = take(&mut inner.rate_limits, &chat) {
                return error_response(ApiError::too_many(secs));
            }
        }
    }
    if call.method == "getupdates" {
        return get_updates(shared, call).await;
    }
    let result = shared.lock().dispatch(call);
    match result {
        Ok((result, description)) => ok_response(result, description),
        Err(error) => error_response(error),
    }
}

/// Counts one use of a knob; returns it if it was armed.
fn take<K: std::hash::Hash + Eq, V: Copy>(knobs: &mut HashMap<K, (usize, V)>, key: &K) -> Option<(usize, V)> {
    let knob = knobs.get_mut(key)?;
    if knob.0 == 0 {
        return None;
    }
    knob.0 -= 1;
    Some(*knob)
}

/// getUpdates (§2): confirm by offset, answer at once when something is queued or
/// `timeout` is 0, else hold until a push, a newer poll or setWebhook, or the deadline.
async fn get_updates(shared: &Arc<Shared>, call: &Call) -> Response {
    let p = &call.params;
    let limit = p_i64(p, "limit").unwrap_or(100).clamp(1, 100) as usize;
    let (poll_id, mut abort, mut updates, wait, index) = {
        let mut inner = shared.lock();
        if inner.webhook.is_some() {
            return error_response(ApiError::new(409, WEBHOOK_ACTIVE));
        }
        // Any newer getUpdates terminates a pending long poll (tba-server abort_long_poll).
        if let Some(older) = inner.pending_poll.take() {
            let _ = older.abort.send(TERMINATED_BY_OTHER);
        }
        if let Some(kinds) = p.get("allowed_updates").and_then(Value::as_array) {
            inner.allowed_updates = Some(kinds.iter().filter_map(Value::as_str).map(str::to_owned).collect());
        }
        inner.confirm(p_i64(p, "offset").unwrap_or(0));
        let timeout = p_i64(p, "timeout").unwrap_or(0).clamp(0, LONG_POLL_MAX_TIMEOUT) as u64;
        let ready = inner.batch(limit);
        if !ready.is_empty() || timeout == 0 {
            return ok_response(Value::Array(ready), None);
        }
        let poll_id = inner.next_poll_id;
        inner.next_poll_id += 1;
        let (abort_tx, abort_rx) = oneshot::channel();
        inner.pending_poll = Some(PendingPoll { id: poll_id, abort: abort_tx });
        // Subscribing under the lock: any push after the empty check above bumps the version.
        let updates = shared.updates.subscribe();
        // Recorded now so a test can see the poll is pending (status 0).
        inner.calls.push(call.clone());
        let index = inner.calls.len() - 1;
        (poll_id, abort_rx, updates, Duration::from_secs(timeout).min(inner.poll_cap), index)
    };
    let mut guard = PollGuard { shared: shared.clone(), poll_id, index, status: 499 };
    let deadline = tokio::time::Instant::now() + wait;
    let mut response = loop {
        tokio::select! {
            reason = &mut abort => break error_response(ApiError::new(409, reason.unwrap_or(TERMINATED_BY_OTHER))),
            changed = updates.changed() => {
                let batch = shared.lock().batch(limit);
                if !batch.is_empty() {
                    break ok_response(Value::Array(batch), None);
                }
                if changed.is_err() {
                    // The sender lives as long as the server; nothing more can arrive.
                    tokio::time::sleep_until(deadline).await;
                    break ok_response(json!([]), None);
                }
            }
            () = tokio::time::sleep_until(deadline) => break ok_response(Value::Array(shared.lock().batch(limit)), None),
        }
    };
    guard.status = response.status().as_u16();
    response.extensions_mut().insert(Recorded);
    response
}

/// Clears the pending poll and records the answered status, also when the
/// client went away and the handler future was dropped mid-wait.
struct PollGuard {
    shared: Arc<Shared>,
    poll_id: u64,
    index: usize,
    status: u16,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if inner.pending_poll.as_ref().is_some_and(|p| p.id == self.poll_id) {
            inner.pending_poll = None;
        }
        if let Some(call) = inner.calls.get_mut(self.index) {
            call.status = self.status;
        }
    }
}

// ---- the methods ----

impl Inner {
    fn new() -> Self {
        Inner {
            calls: Vec::new(),
            queue: VecDeque::new(),
            next_update_id: 1,
            confirmed_offset: 0,
            allowed_updates: None,
            poll_cap: Duration::from_secs(2),
            pending_poll: None,
            next_poll_id: 1,
            webhook: None,
            commands: HashMap::new(),
            last_commands: None,
            chats: HashMap::new(),
            sent_order: Vec::new(),
            known_chats: HashMap::new(),
            user_messages: HashMap::new(),
            callback_ids: HashSet::new(),
            answered: HashSet::new(),
            rate_limits: HashMap::new(),
            fail_next: HashMap::new(),
            flood_on: false,
            flood: Flood::default(),
            flood_violations: 0,
            next_file: 1,
        }
    }

    fn dispatch(&mut self, call: &Call) -> ApiResult {
        let p = &call.params;
        match call.method.as_str() {
            "getme" => Ok((me_json(), None)),
            "getwebhookinfo" => Ok((self.webhook_info(), None)),
            "setwebhook" => self.set_webhook(p, &call.files),
            "deletewebhook" => self.delete_webhook(p),
            "sendmessage" => self.send_message(p),
            "editmessagetext" => self.edit_message_text(p),
            "editmessagereplymarkup" => self.edit_message_reply_markup(p),
            "answercallbackquery" => self.answer_callback_query(p),
            "setmycommands" => self.set_my_commands(p),
            "getmycommands" => Ok((self.commands.get(&scope_key(p)).cloned().unwrap_or_else(|| json!([])), None)),
            "deletemycommands" => self.delete_my_commands(p),
            "senddocument" => self.send_document(p, &call.files),
            "deletemessage" => self.delete_message(p),
            "sendchataction" => self.resolve_chat(p).map(|_| (json!(true), None)),
            _ => Err(ApiError::new(404, "Not Found: method not found")),
        }
    }

    // -- updates --

    /// Whether a new update of `kind` is created under the sticky `allowed_updates`:
    /// unset or `[]` means everything but chat_member and reactions (§2).
    fn allows(&self, kind: &str) -> bool {
        match &self.allowed_updates {
            Some(kinds) if !kinds.is_empty() => kinds.iter().any(|k| k == kind),
            _ => !matches!(kind, "chat_member" | "message_reaction" | "message_reaction_count"),
        }
    }

    /// Forgets what an offset confirms: ids below a positive one, all but the last N for -N.
    fn confirm(&mut self, offset: i64) {
        if offset > 0 {
            self.queue.retain(|u| u["update_id"].as_i64().is_none_or(|id| id >= offset));
            self.confirmed_offset = self.confirmed_offset.max(offset);
        } else if offset < 0 {
            let keep = offset.unsigned_abs() as usize;
            while self.queue.len() > keep {
                self.queue.pop_front();
            }
        }
    }

    /// The first `limit` queued updates; they stay queued until an offset confirms them.
    fn batch(&self, limit: usize) -> Vec<Value> {
        self.queue.iter().take(limit).cloned().collect()
    }

    /// Remembers chats, user messages and callback ids that an update introduces.
    fn track(&mut self, update: &Value) {
        let Some((kind, payload)) = update.as_object().and_then(|o| o.iter().find(|(k, _)| *k != "update_id")) else {
            return;
        };
        let chat = payload.get("chat").or_else(|| payload.get("message").and_then(|m| m.get("chat")));
        if let Some(chat) = chat
            && let Some(id) = chat["id"].as_i64()
            && chat.get("type").is_some()
        {
            self.known_chats.insert(id, chat.clone());
        }
        match kind.as_str() {
            "message" | "edited_message" | "channel_post" | "edited_channel_post" | "business_message" => {
                if let (Some(chat), Some(id)) = (payload["chat"]["id"].as_i64(), payload["message_id"].as_i64()) {
                    self.user_messages.insert((chat, id), payload.clone());
                }
            }
            "callback_query" => {
                if let Some(id) = id_string(&payload["id"]) {
                    self.callback_ids.insert(id);
                }
            }
            _ => {}
        }
    }

    // -- webhooks --

    fn webhook_info(&self) -> Value {
        let mut info = json!({
            "url": self.webhook.as_ref().map(|w| w.url.as_str()).unwrap_or(""),
            "has_custom_certificate": self.webhook.as_ref().is_some_and(|w| w.has_certificate),
            "pending_update_count": self.queue.len(),
        });
        if let Some(webhook) = &self.webhook {
            info["max_connections"] = webhook.max_connections.into();
        }
        info
    }

    fn set_webhook(&mut self, p: &Value, files: &[(String, String, Vec<u8>)]) -> ApiResult {
        let url = p_str(p, "url").unwrap_or("");
        if url.is_empty() {
            return self.delete_webhook(p);
        }
        // Local-mode server rules: any port, plain HTTP allowed (§4).
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("bad webhook: An HTTPS URL must be provided for webhook"));
        }
        let secret = p_str(p, "secret_token").map(str::to_owned);
        if let Some(secret) = &secret
            && (!(1..=256).contains(&secret.len())
                || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(bad("secret token contains unallowed characters"));
        }
        let max_connections = p_i64(p, "max_connections").unwrap_or(40).clamp(1, 100);
        let has_certificate = files
            .iter()
            .any(|(part, _, _)| part == "certificate" || p_str(p, "certificate") == Some(&format!("attach://{part}")));
        if let Some(kinds) = p.get("allowed_updates").and_then(Value::as_array) {
            self.allowed_updates = Some(kinds.iter().filter_map(Value::as_str).map(str::to_owned).collect());
        }
        if p_bool(p, "drop_pending_updates") {
            self.queue.clear();
        }
        if let Some(poll) = self.pending_poll.take() {
            let _ = poll.abort.send(TERMINATED_BY_SET_WEBHOOK);
        }
        let same = self.webhook.as_ref().is_some_and(|w| w.url == url && w.secret == secret);
        self.webhook = Some(Webhook { url: url.to_owned(), secret, max_connections, has_certificate });
        Ok((json!(true), Some(if same { "Webhook is already set" } else { "Webhook was set" })))
    }

    fn delete_webhook(&mut self, p: &Value) -> ApiResult {
        if p_bool(p, "drop_pending_updates") {
            self.queue.clear();
        }
        let existed = self.webhook.take().is_some();
        Ok((json!(true), Some(if existed { "Webhook was deleted" } else { "Webhook is already deleted" })))
    }

    // -- messages --

    /// `chat_id` as an integer, a numeric string, or `@username` of a chat seen in updates.
    fn resolve_chat(&self, p: &Value) -> Result<i64, ApiError> {
        match p.get("chat_id") {
            None | Some(Value::Null) => Err(bad("chat_id is empty")),
            Some(Value::String(s)) if s.is_empty() => Err(bad("chat_id is empty")),
            Some(Value::String(s)) if s.starts_with('@') => self
                .known_chats
                .iter()
                .find(|(_, chat)| chat["username"].as_str().is_some_and(|u| u.eq_ignore_ascii_case(&s[1..])))
                .map(|(id, _)| *id)
                .ok_or_else(|| bad("chat not found")),
            Some(v) => p_i64_value(v).filter(|id| *id != 0).ok_or_else(|| bad("chat not found")),
        }
    }

    fn send_message(&mut self, p: &Value) -> ApiResult {
        let chat_id = self.resolve_chat(p)?;
        let (text, entities) = format_text(p_str(p, "text").unwrap_or(""), p, "entities")?;
        if text.trim().is_empty() {
            return Err(bad("message text is empty"));
        }
        if utf16_len(&text) > 4096 {
            return Err(bad("message is too long"));
        }
        let markup = reply_markup(p, false)?;
        self.check_flood(chat_id)?;
        let stored = Stored {
            sent: new_sent(chat_id, text, p, markup),
            entities,
            date: unix_now(),
            edit_date: None,
            document: None,
        };
        let id = self.store(stored);
        Ok((self.message_json(chat_id, id, true), None))
    }

    fn send_document(&mut self, p: &Value, files: &[(String, String, Vec<u8>)]) -> ApiResult {
        let chat_id = self.resolve_chat(p)?;
        let file_part = |name: &str| files.iter().find(|(part, _, _)| part == name);
        let (file_name, bytes) = match p_str(p, "document") {
            Some(value) => match value.strip_prefix("attach://") {
                Some(part) => file_part(part).map(|(_, name, bytes)| (name.clone(), bytes.clone())),
                // A file_id or an HTTP URL: nothing was uploaded.
                None => Some((value.to_owned(), Vec::new())),
            },
            None => file_part("document").map(|(_, name, bytes)| (name.clone(), bytes.clone())),
        }
        .ok_or_else(|| bad("there is no document in the request"))?;
        if bytes.is_empty() && files.iter().any(|(_, name, _)| *name == file_name) {
            return Err(bad("file must be non-empty"));
        }
        let (caption, entities) = format_text(p_str(p, "caption").unwrap_or(""), p, "caption_entities")?;
        if utf16_len(&caption) > 1024 {
            return Err(bad("message caption is too long"));
        }
        let markup = reply_markup(p, false)?;
        self.check_flood(chat_id)?;
        let n = self.next_file;
        self.next_file += 1;
        let mut document = json!({
            "file_id": format!("BQACAgIAAxkBAAIB{n:08}"),
            "file_unique_id": format!("AgADfake{n:08}"),
            "file_size": bytes.len(),
        });
        if !file_name.is_empty() {
            document["file_name"] = file_name.clone().into();
        }
        let mut sent = new_sent(chat_id, caption, p, markup);
        sent.document = Some((file_name, bytes));
        let stored = Stored { sent, entities, date: unix_now(), edit_date: None, document: Some(document) };
        let id = self.store(stored);
        Ok((self.message_json(chat_id, id, true), None))
    }

    /// (chat, message id) of an edit; inline messages do not exist here.
    fn edit_target(&self, p: &Value) -> Result<(i64, i64), ApiError> {
        if p.get("inline_message_id").is_some() {
            return Err(bad("MESSAGE_ID_INVALID"));
        }
        let chat = self.resolve_chat(p)?;
        let id = p_i64(p, "message_id").ok_or_else(|| bad("message identifier is not specified"))?;
        Ok((chat, id))
    }

    fn edit_message_text(&mut self, p: &Value) -> ApiResult {
        let (chat_id, message_id) = self.edit_target(p)?;
        let (text, entities) = format_text(p_str(p, "text").unwrap_or(""), p, "entities")?;
        if text.trim().is_empty() {
            return Err(bad("message text is empty"));
        }
        if utf16_len(&text) > 4096 {
            return Err(bad("MESSAGE_TOO_LONG"));
        }
        // Omitting reply_markup removes the keyboard (§4, tba-server passes a null markup).
        let markup = reply_markup(p, true)?;
        let stored = self.live_mut(chat_id, message_id).ok_or_else(|| bad("message to edit not found"))?;
        if stored.document.is_some() {
            return Err(bad("there is no text in the message to edit"));
        }
        if stored.sent.text == text && stored.entities == entities && stored.sent.reply_markup == markup {
            return Err(bad(NOT_MODIFIED));
        }
        stored.sent.text = text;
        stored.sent.parse_mode = p_str(p, "parse_mode").map(str::to_owned);
        stored.entities = entities;
        stored.sent.reply_markup = markup;
        stored.sent.edits += 1;
        stored.edit_date = Some(unix_now());
        Ok((self.message_json(chat_id, message_id, true), None))
    }

    fn edit_message_reply_markup(&mut self, p: &Value) -> ApiResult {
        let (chat_id, message_id) = self.edit_target(p)?;
        let markup = reply_markup(p, true)?;
        let stored = self.live_mut(chat_id, message_id).ok_or_else(|| bad("message to edit not found"))?;
        if stored.sent.reply_markup == markup {
            return Err(bad(NOT_MODIFIED));
        }
        stored.sent.reply_markup = markup;
        stored.sent.edits += 1;
        stored.edit_date = Some(unix_now());
        Ok((self.message_json(chat_id, message_id, true), None))
    }

    fn delete_message(&mut self, p: &Value) -> ApiResult {
        let chat_id = self.resolve_chat(p)?;
        let message_id = p_i64(p, "message_id").ok_or_else(|| bad("message identifier is not specified"))?;
        if let Some(stored) = self.live_mut(chat_id, message_id) {
            stored.sent.deleted = true;
        } else if self.user_messages.remove(&(chat_id, message_id)).is_none() {
            return Err(bad("message to delete not found"));
        }
        Ok((json!(true), None))
    }

    fn answer_callback_query(&mut self, p: &Value) -> ApiResult {
        let id = p.get("callback_query_id").and_then(id_string).unwrap_or_default();
        if p_str(p, "text").is_some_and(|t| t.chars().count() > 200) {
            return Err(bad("MESSAGE_TOO_LONG"));
        }
        // Only ids that were pushed, and each once (§4).
        if !self.callback_ids.contains(&id) || !self.answered.insert(id) {
            return Err(bad(QUERY_TOO_OLD));
        }
        Ok((json!(true), None))
    }

    fn set_my_commands(&mut self, p: &Value) -> ApiResult {
        let invalid = || bad("BOT_COMMAND_INVALID");
        let commands = p.get("commands").and_then(Value::as_array).ok_or_else(invalid)?;
        if commands.len() > 100 {
            return Err(invalid());
        }
        let mut normalised = Vec::with_capacity(commands.len());
        for command in commands {
            // teloxide's bot_commands() sends "/ack"; accept one leading '/' and normalise (§6.5).
            let name = command["command"].as_str().ok_or_else(invalid)?;
            let name = name.strip_prefix('/').unwrap_or(name);
            let name_ok = (1..=32).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            let description = command["description"].as_str().ok_or_else(invalid)?;
            let description_ok = (1..=256).contains(&description.trim().chars().count());
            if !name_ok || !description_ok {
                return Err(invalid());
            }
            normalised.push(json!({"command": name, "description": description}));
        }
        let key = scope_key(p);
        let commands = Value::Array(normalised);
        self.commands.insert(key.clone(), commands.clone());
        self.last_commands = Some((key, commands));
        Ok((json!(true), None))
    }

    fn delete_my_commands(&mut self, p: &Value) -> ApiResult {
        let key = scope_key(p);
        self.commands.remove(&key);
        if self.last_commands.as_ref().is_some_and(|(last, _)| *last == key) {
            self.last_commands = None;
        }
        Ok((json!(true), None))
    }

    /// §5.1 limits for a send that is otherwise valid; only sends that pass count.
    fn check_flood(&mut self, chat_id: i64) -> Result<(), ApiError> {
        const BURST: f64 = 3.0;
        const TOLERANCE: f64 = 0.25;
        if !self.flood_on {
            return Ok(());
        }
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        let flood = &mut self.flood;
        let mut wait = Duration::ZERO;
        while flood.overall.front().is_some_and(|t| now - *t >= second) {
            flood.overall.pop_front();
        }
        if flood.overall.len() >= 30 {
            wait = wait.max(second - (now - flood.overall[0]));
        }
        let (tokens, refilled_at) = *flood.buckets.get(&chat_id).unwrap_or(&(BURST, now));
        let tokens = (tokens + (now - refilled_at).as_secs_f64()).min(BURST);
        // Telegram's limit is "about one a second": a client pacing exactly at
        // 1/s sees its requests arrive with some jitter, which is tolerated.
        if tokens < 1.0 - TOLERANCE {
            wait = wait.max(Duration::from_secs_f64(1.0 - tokens));
        }
        let group = flood.groups.entry(chat_id).or_default();
        while group.front().is_some_and(|t| now - *t >= minute) {
            group.pop_front();
        }
        if chat_id < 0 && group.len() >= 20 {
            wait = wait.max(minute - (now - group[0]));
        }
        if !wait.is_zero() {
            self.flood_violations += 1;
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ApiError::too_many(secs.max(1)));
        }
        flood.buckets.insert(chat_id, ((tokens - 1.0).max(0.0), now));
        flood.overall.push_back(now);
        if chat_id < 0 {
            group.push_back(now);
        }
        Ok(())
    }

    // -- storage and Message objects --

    /// Assigns the next message id of the chat (from 1) and keeps the message.
    fn store(&mut self, mut stored: Stored) -> i64 {
        let chat_id = stored.sent.chat_id;
        let log = self.chats.entry(chat_id).or_insert_with(|| ChatLog { next_id: 1, messages: Vec::new() });
        let id = log.next_id;
        log.next_id += 1;
        stored.sent.message_id = id;
        log.messages.push(stored);
        self.sent_order.push((chat_id, id));
        id
    }

    fn stored(&self, chat_id: i64, message_id: i64) -> Option<&Stored> {
        let index = usize::try_from(message_id.checked_sub(1)?).ok()?;
        self.chats.get(&chat_id)?.messages.get(index)
    }

    /// A stored message that was not deleted.
    fn live_mut(&mut self, chat_id: i64, message_id: i64) -> Option<&mut Stored> {
        let index = usize::try_from(message_id.checked_sub(1)?).ok()?;
        self.chats.get_mut(&chat_id)?.messages.get_mut(index).filter(|s| !s.sent.deleted)
    }

    /// The chat object seen in updates, else a private chat for positive ids and a supergroup otherwise.
    fn chat_json(&self, chat_id: i64) -> Value {
        if let Some(chat) = self.known_chats.get(&chat_id) {
            return chat.clone();
        }
        if chat_id > 0 {
            json!({"id": chat_id, "type": "private", "first_name": format!("User {chat_id}")})
        } else {
            json!({"id": chat_id, "type": "supergroup", "title": format!("Group {chat_id}")})
        }
    }

    /// The full Message for a stored bot message; `reply` adds `reply_to_message` (one level).
    fn message_json(&self, chat_id: i64, message_id: i64, reply: bool) -> Value {
        let Some(s) = self.stored(chat_id, message_id) else {
            return Value::Null;
        };
        let mut m = json!({
            "message_id": message_id,
            "from": bot_user(),
            "chat": self.chat_json(chat_id),
            "date": s.date,
        });
        if let Some(thread) = s.sent.thread_id {
            // Only forum topics echo message_thread_id (§3.2).
            m["message_thread_id"] = thread.into();
            m["is_topic_message"] = true.into();
        }
        if reply && let Some(target) = s.sent.reply_to {
            let replied = self.user_messages.get(&(chat_id, target)).cloned().or_else(|| {
                self.stored(chat_id, target)
                    .filter(|t| !t.sent.deleted)
                    .map(|_| self.message_json(chat_id, target, false))
            });
            if let Some(replied) = replied {
                m["reply_to_message"] = replied;
            }
        }
        if let Some(edited) = s.edit_date {
            m["edit_date"] = edited.into();
        }
        let entities = Value::Array(s.entities.clone());
        match &s.document {
            Some(document) => {
                m["document"] = document.clone();
                if !s.sent.text.is_empty() {
                    m["caption"] = s.sent.text.clone().into();
                    if !s.entities.is_empty() {
                        m["caption_entities"] = entities;
                    }
                }
            }
            None => {
                m["text"] = s.sent.text.clone().into();
                if !s.entities.is_empty() {
                    m["entities"] = entities;
                }
            }
        }
        // Messages carry only inline keyboards; reply keyboards are not part of them.
        if let Some(markup) = &s.sent.reply_markup
            && markup.get("inline_keyboard").is_some()
        {
            m["reply_markup"] = markup.clone();
        }
        m
    }
}

fn new_sent(chat_id: i64, text: String, p: &Value, reply_markup: Option<Value>) -> Sent {
    let reply_to =
        p.get("reply_parameters").and_then(|r| p_i64(r, "message_id")).or_else(|| p_i64(p, "reply_to_message_id"));
    Sent {
        chat_id,
        message_id: 0,
        text,
        parse_mode: p_str(p, "parse_mode").map(str::to_owned),
        reply_markup,
        thread_id: p_i64(p, "message_thread_id"),
        reply_to,
        document: None,
        edits: 0,
        deleted: false,
        at: Instant::now(),
    }
}

fn me_json() -> Value {
    json!({
        "id": BOT_ID,
        "is_bot": true,
        "first_name": BOT_FIRST_NAME,
        "username": BOT_USERNAME,
        "can_join_groups": true,
        "can_read_all_group_messages": false,
        "supports_inline_queries": false,
        "can_connect_to_business": false,
        "has_main_web_app": false,
    })
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": BOT_FIRST_NAME, "username": BOT_USERNAME})
}

/// setMyCommands state is per (scope, language_code).
fn scope_key(p: &Value) -> String {
    let scope = p.get("scope").filter(|s| !s.is_null()).cloned().unwrap_or_else(|| json!({"type": "default"}));
    format!("{scope}|{}", p_str(p, "language_code").unwrap_or(""))
}

/// Validates `reply_markup` (§3.7); an empty inline keyboard means none.
/// Edits accept only inline keyboards.
fn reply_markup(p: &Value, edit: bool) -> Result<Option<Value>, ApiError> {
    let markup = match p.get("reply_markup") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(markup)) => markup,
        Some(_) => return Err(bad("can't parse reply keyboard markup JSON object")),
    };
    let Some(rows) = markup.get("inline_keyboard") else {
        let known = ["keyboard", "remove_keyboard", "force_reply"].iter().any(|k| markup.contains_key(*k));
        return match (known, edit) {
            (true, false) => Ok(Some(Value::Object(markup.clone()))),
            (true, true) => Err(bad("inline keyboard expected")),
            (false, _) => Err(bad("can't parse reply keyboard markup JSON object")),
        };
    };
    let rows = rows.as_array().ok_or_else(|| bad("field \"inline_keyboard\" must be of type Array"))?;
    for row in rows {
        let buttons = row.as_array().ok_or_else(|| bad("field \"inline_keyboard\" must be an Array of Arrays"))?;
        for button in buttons {
            if !button["text"].is_string() {
                return Err(bad("can't parse inline keyboard button: Field \"text\" must be of type String"));
            }
            if let Some(data) = button.get("callback_data") {
                let len = data.as_str().map_or(0, str::len);
                if !(1..=64).contains(&len) {
                    return Err(bad("BUTTON_DATA_INVALID"));
                }
            } else if let Some(url) = button.get("url") {
                if url.as_str().is_none_or(|u| u.is_empty() || u.contains(char::is_whitespace)) {
                    return Err(bad("BUTTON_URL_INVALID"));
                }
            } else {
                let kinds = [
                    "web_app",
                    "login_url",
                    "switch_inline_query",
                    "switch_inline_query_current_chat",
                    "switch_inline_query_chosen_chat",
                    "copy_text",
                    "callback_game",
                    "pay",
                ];
                if !kinds.iter().any(|k| button.get(*k).is_some()) {
                    return Err(bad(
                        "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
                    ));
                }
            }
        }
    }
    let empty = rows.iter().all(|row| row.as_array().is_some_and(Vec::is_empty));
    Ok((!empty).then(|| Value::Object(markup.clone())))
}

// ---- formatting (§4.1) ----

/// The visible text and its entities for `text` under the request's `parse_mode`;
/// without one, the explicit `entities_key` entities are kept as given.
fn format_text(text: &str, p: &Value, entities_key: &str) -> Result<(String, Vec<Value>), ApiError> {
    match p_str(p, "parse_mode").map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => {
            let entities = p.get(entities_key).and_then(Value::as_array).cloned().unwrap_or_default();
            Ok((text.to_owned(), entities))
        }
        Some("html") => parse_html(text).map_err(|reason| bad(format!("can't parse entities: {reason}"))),
        // Not validated: kept as sent, markup characters included.
        Some("markdownv2" | "markdown") => Ok((text.to_owned(), Vec::new())),
        Some(other) => Err(bad(format!("unsupported parse_mode \"{other}\""))),
    }
}

struct OpenTag {
    name: String,
    /// UTF-16 offset in the visible text where it started.
    offset: usize,
    entity: Option<Value>,
}

/// Telegram's HTML subset: supported tags only, balanced, every `&` a known entity
/// (stricter than tdlib, which keeps a bare `&`, so missing escapes are caught).
/// Error texts follow tdlib's "… at byte offset N".
fn parse_html(src: &str) -> Result<(String, Vec<Value>), String> {
    let mut text = String::with_capacity(src.len());
    let mut units = 0;
    let mut stack: Vec<OpenTag> = Vec::new();
    let mut entities = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let rest = &src[i..];
        if let Some(after) = rest.strip_prefix("</") {
            let name_len = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'-').count();
            let name = after[..name_len].to_ascii_lowercase();
            let close = after[name_len..].trim_start();
            if !close.starts_with('>') {
                return Err(format!("Can't find end tag corresponding to start tag at byte offset {i}"));
            }
            let Some(open) = stack.pop() else {
                return Err(format!("Unexpected end tag at byte offset {i}"));
            };
            if open.name != name {
                return Err(format!(
                    "Unmatched end tag at byte offset {i}, expected \"</{}>\", found \"</{name}>\"",
                    open.name
                ));
            }
            if let Some(mut entity) = open.entity
                && units > open.offset
            {
                entity["offset"] = open.offset.into();
                entity["length"] = (units - open.offset).into();
                entities.push(entity);
            }
            i += 2 + name_len + (after[name_len..].len() - close.len()) + 1;
        } else if rest.starts_with('<') {
            let (name, attrs, len) = parse_start_tag(rest).map_err(|reason| format!("{reason} at byte offset {i}"))?;
            let attr = |key: &str| attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            let entity = match name.as_str() {
                "b" | "strong" => Some(json!({"type": "bold"})),
                "i" | "em" => Some(json!({"type": "italic"})),
                "u" | "ins" => Some(json!({"type": "underline"})),
                "s" | "strike" | "del" => Some(json!({"type": "strikethrough"})),
                "tg-spoiler" => Some(json!({"type": "spoiler"})),
                "span" if attr("class") == Some("tg-spoiler") => Some(json!({"type": "spoiler"})),
                "span" => return Err(format!("Tag \"span\" must have class \"tg-spoiler\" at byte offset {i}")),
                // Only links teloxide can parse back become text_link entities; others are dropped like Telegram drops bad URLs.
                "a" => attr("href")
                    .filter(|h| {
                        ["http://", "https://", "tg://"].iter().any(|s| h.starts_with(s))
                            && !h.contains(char::is_whitespace)
                    })
                    .map(|href| json!({"type": "text_link", "url": href})),
                "code" if stack.last().is_some_and(|t| t.name == "pre") => {
                    // <pre><code class="language-x"> sets the language of the pre block.
                    if let Some(language) = attr("class").and_then(|c| c.strip_prefix("language-"))
                        && let Some(pre) = stack.last_mut().and_then(|t| t.entity.as_mut())
                    {
                        pre["language"] = language.into();
                    }
                    None
                }
                "code" => Some(json!({"type": "code"})),
                "pre" => Some(json!({"type": "pre"})),
                "blockquote" if attr("expandable").is_some() => Some(json!({"type": "expandable_blockquote"})),
                "blockquote" => Some(json!({"type": "blockquote"})),
                "tg-emoji" => match attr("emoji-id") {
                    Some(id) if !id.is_empty() => Some(json!({"type": "custom_emoji", "custom_emoji_id": id})),
                    _ => return Err(format!("Custom emoji identifier must be non-empty at byte offset {i}")),
                },
                _ => return Err(format!("Unsupported start tag \"{name}\" at byte offset {i}")),
            };
            stack.push(OpenTag { name, offset: units, entity });
            i += len;
        } else if rest.starts_with('&') {
            let (c, len) = decode_entity(rest).ok_or_else(|| format!("Unsupported HTML entity at byte offset {i}"))?;
            text.push(c);
            units += c.len_utf16();
            i += len;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            text.push(c);
            units += c.len_utf16();
            i += c.len_utf8();
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("Can't find end tag corresponding to start tag \"{}\"", open.name));
    }
    entities.sort_by_key(|e| (e["offset"].as_u64(), Reverse(e["length"].as_u64())));
    Ok((text, entities))
}

/// Attribute names (lower-cased) and values (entities decoded) of a tag.
type Attrs = Vec<(String, String)>;

/// `<name attr="v" flag ...>` at the start of `s`: lower-cased name, attributes,
/// and the length up to and including '>'.
fn parse_start_tag(s: &str) -> Result<(String, Attrs, usize), String> {
    let b = s.as_bytes();
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut j = 1;
    while j < b.len() && is_name(b[j]) {
        j += 1;
    }
    if j == 1 {
        return Err("Unsupported start tag \"\"".into());
    }
    let name = s[1..j].to_ascii_lowercase();
    let mut attrs = Vec::new();
    loop {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        match b.get(j) {
            None => return Err(format!("Unclosed start tag \"{name}\"")),
            Some(b'>') => return Ok((name, attrs, j + 1)),
            Some(_) => {}
        }
        let key_start = j;
        while j < b.len() && is_name(b[j]) {
            j += 1;
        }
        if j == key_start {
            return Err(format!("Expected equal sign in declaration of an attribute of the tag \"{name}\""));
        }
        let key = s[key_start..j].to_ascii_lowercase();
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let mut value = String::new();
        if b.get(j) == Some(&b'=') {
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let raw = match b.get(j) {
                Some(&quote @ (b'"' | b'\'')) => {
                    let end = s[j + 1..].find(quote as char).ok_or_else(|| format!("Unclosed start tag \"{name}\""))?;
                    let raw = &s[j + 1..j + 1 + end];
                    j += end + 2;
                    raw
                }
                _ => {
                    let start = j;
                    while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' {
                        j += 1;
                    }
                    &s[start..j]
                }
            };
            value = decode_entities(raw).ok_or_else(|| "Unsupported HTML entity in an attribute value".to_owned())?;
        }
        attrs.push((key, value));
    }
}

/// `&lt;` `&gt;` `&amp;` `&quot;` `&#NN;` `&#xHH;` at the start of `s`: the character and its length.
fn decode_entity(s: &str) -> Option<(char, usize)> {
    let end = s.bytes().take(12).position(|b| b == b';')?;
    let name = &s[1..end];
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code).filter(|c| *c != '\0')?
        }
    };
    Some((c, end + 1))
}

fn decode_entities(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with('&') {
            let (c, len) = decode_entity(&s[i..])?;
            out.push(c);
            i += len;
        } else {
            let c = s[i..].chars().next()?;
            out.push(c);
            i += c.len_utf8();
        }
    }
    Some(out)
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `bot_command` for a leading `/cmd[@bot]` and `mention` for each `@word`, in UTF-16 units.
fn text_entities(text: &str) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    let mut offsets = Vec::with_capacity(chars.len() + 1);
    let mut units = 0;
    for c in &chars {
        offsets.push(units);
        units += c.len_utf16();
    }
    offsets.push(units);
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let run = |from: usize| from + chars[from..].iter().take_while(|c| word(**c)).count();
    let mut entities = Vec::new();
    let mut i = 0;
    if chars.first() == Some(&'/') && run(1) > 1 {
        let mut end = run(1);
        if chars.get(end) == Some(&'@') && run(end + 1) > end + 1 {
            end = run(end + 1);
        }
        entities.push(json!({"type": "bot_command", "offset": 0, "length": offsets[end]}));
        i = end;
    }
    while i < chars.len() {
        if chars[i] == '@' && (i == 0 || !word(chars[i - 1])) && run(i + 1) > i + 1 {
            let end = run(i + 1);
            entities.push(json!({"type": "mention", "offset": offsets[i], "length": offsets[end] - offsets[i]}));
            i = end;
        } else {
            i += 1;
        }
    }
    entities
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

// ---- parameters (§1.1) ----

fn p_str<'a>(p: &'a Value, key: &str) -> Option<&'a str> {
    p.get(key).and_then(Value::as_str)
}

/// An integer given as a JSON number or a numeric string.
fn p_i64(p: &Value, key: &str) -> Option<i64> {
    p.get(key).and_then(p_i64_value)
}

fn p_i64_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn p_bool(p: &Value, key: &str) -> bool {
    match p.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "1" | "True"),
        Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
        _ => false,
    }
}

/// A callback query id: a string, or a number some clients send.
fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A text parameter from a query string, form or multipart as the JSON it stands for.
fn text_param(key: &str, text: String) -> Value {
    if JSON_PARAMS.contains(&key) {
        return serde_json::from_str(&text).unwrap_or(Value::String(text));
    }
    if INT_PARAMS.contains(&key)
        && let Ok(n) = text.trim().parse::<i64>()
    {
        return n.into();
    }
    if BOOL_PARAMS.contains(&key) {
        match text.as_str() {
            "true" | "True" | "1" => return true.into(),
            "false" | "False" | "0" => return false.into(),
            _ => {}
        }
    }
    Value::String(text)
}

type Files = Vec<(String, String, Vec<u8>)>;

/// Query string and body merged into one object (the body wins), plus uploaded files.
fn parse_params(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<(Value, Files), String> {
    let mut params = Map::new();
    let mut files = Vec::new();
    for (key, value) in parse_urlencoded(query.unwrap_or("")) {
        let value = text_param(&key, value);
        params.insert(key, value);
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Value::Object(params), files));
    }
    match mime.as_str() {
        "multipart/form-data" => {
            let boundary = content_type
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.trim_matches('"'))
                .ok_or("multipart boundary is missing")?;
            for part in parse_multipart(body, boundary)? {
                match part.filename {
                    Some(filename) => files.push((part.name, filename, part.data)),
                    None => {
                        let text = String::from_utf8_lossy(&part.data).into_owned();
                        let value = text_param(&part.name, text);
                        params.insert(part.name, value);
                    }
                }
            }
        }
        "application/x-www-form-urlencoded" => {
            for (key, value) in parse_urlencoded(&String::from_utf8_lossy(body)) {
                let value = text_param(&key, value);
                params.insert(key, value);
            }
        }
        // JSON, also when the client did not say.
        _ => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => params.extend(object),
            _ => return Err("can't parse JSON object".into()),
        },
    }
    Ok((Value::Object(params), files))
}

fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                out.push((hex(b[i + 1]).unwrap_or(0) * 16 + hex(b[i + 2]).unwrap_or(0)) as u8);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Part {
    name: String,
    /// Present for file parts (possibly empty).
    filename: Option<String>,
    data: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let candidate = at + haystack[at..].iter().position(|b| *b == first)?;
        if haystack[candidate..].starts_with(needle) {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

/// RFC 7578 multipart/form-data, as reqwest (and so teloxide) and curl write it.
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}").into_bytes();
    let separator = [b"\r\n".as_slice(), &delimiter].concat();
    let mut pos = find(body, &delimiter, 0).ok_or("multipart boundary not found")? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        // The rest of the delimiter line (transport padding, then CRLF).
        pos = find(body, b"\r\n", pos).ok_or("unterminated multipart delimiter")? + 2;
        let (headers, data_start) = if body[pos..].starts_with(b"\r\n") {
            ("", pos + 2)
        } else {
            let end = find(body, b"\r\n\r\n", pos).ok_or("malformed multipart headers")?;
            (std::str::from_utf8(&body[pos..end]).map_err(|_| "multipart headers are not UTF-8")?, end + 4)
        };
        let data_end = find(body, &separator, data_start).ok_or("unterminated multipart part")?;
        let (name, filename) = content_disposition(headers).ok_or("multipart part without a name")?;
        parts.push(Part { name, filename, data: body[data_start..data_end].to_vec() });
        pos = data_end + separator.len();
    }
}

/// `name` and `filename` of a part; handles quoted strings with backslash escapes
/// (reqwest escapes `\` and `"` in file names) and RFC 5987 `name*=utf-8''…`.
fn content_disposition(headers: &str) -> Option<(String, Option<String>)> {
    let line = headers.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case("content-disposition").then_some(value)
    })?;
    let mut name = None;
    let mut filename = None;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i] == ';' || chars[i].is_whitespace()) {
            i += 1;
        }
        let key_start = i;
        while i < chars.len() && chars[i] != '=' && chars[i] != ';' {
            i += 1;
        }
        let key: String = chars[key_start..i].iter().collect::<String>().trim().to_ascii_lowercase();
        let mut value = String::new();
        if chars.get(i) == Some(&'=') {
            i += 1;
            if chars.get(i) == Some(&'"') {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    value.push(chars[i]);
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && chars[i] != ';' {
                    value.push(chars[i]);
                    i += 1;
                }
                value = value.trim().to_owned();
            }
        }
        let extended = |v: &str| v.split_once("''").map_or(v.to_owned(), |(_, encoded)| percent_decode(encoded, false));
        match key.as_str() {
            "name" => name = Some(value),
            "name*" => name = Some(extended(&value)),
            "filename" => filename = Some(value),
            "filename*" => filename = Some(extended(&value)),
            _ => {}
        }
    }
    Some((name?, filename))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().expect("client")
    }

    fn method_url(fake: &FakeTelegram, method: &str) -> String {
        format!("{}/bot{TOKEN}/{method}", fake.url())
    }

    /// POSTs JSON, as teloxide does; returns status and body.
    async fn post(fake: &FakeTelegram, method: &str, body: Value) -> (u16, Value) {
        let response = client().post(method_url(fake, method)).json(&body).send().await.expect("fake answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Waits on a condition with a deadline.
    async fn wait_for(what: &str, condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut ticks = tokio::time::interval(Duration::from_millis(5));
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            ticks.tick().await;
        }
    }

    fn pending_polls(fake: &FakeTelegram) -> usize {
        fake.calls_to("getUpdates").iter().filter(|c| c.status == 0).count()
    }

    #[tokio::test]
    async fn fake_telegram_get_me_and_routing() {
        let fake = FakeTelegram::start().await;
        let response = client().get(method_url(&fake, "getme")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"ok": true, "result": me_json()}));
        assert_eq!(body["result"]["has_main_web_app"], false);

        let (status, body) = post(&fake, "GetMe", json!({})).await;
        assert_eq!((status, body["result"]["username"].as_str()), (200, Some(BOT_USERNAME)));

        let wrong = client().post(format!("{}/bot123:nope/GetMe", fake.url())).json(&json!({})).send().await.unwrap();
        assert_eq!(wrong.status(), 401);
        assert_eq!(
            wrong.json::<Value>().await.unwrap(),
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
        );
        let (status, body) = post(&fake, "sendSticker", json!({})).await;
        assert_eq!((status, body["description"].as_str()), (404, Some("Not Found: method not found")));
        let other = client().get(format!("{}/foo/GetMe", fake.url())).send().await.unwrap();
        assert_eq!(other.status(), 404);
        assert_eq!(other.json::<Value>().await.unwrap()["description"], "Not Found");

        assert_eq!(fake.n_calls_to("GETME"), 3);
        assert_eq!(fake.calls_to("getMe")[2].status, 401);
        assert_eq!(fake.calls().len(), 4, "all method calls are recorded, failed ones too");
    }

    #[tokio::test]
    async fn fake_telegram_send_message_validates_html_and_keyboards() {
        let fake = FakeTelegram::start().await;
        let html =
            r#"<b>Disk &amp; CPU</b> on <a href="https://g.example/d?a=1&amp;b=2">db-01</a> &#128308; &lt;tag&gt;"#;
        let keyboard = json!({"inline_keyboard": [[{"text": "Ack", "callback_data": "v1:ack:Ab12"}]]});
        let (status, body) = post(
            &fake,
            "SendMessage",
            json!({"chat_id": 42, "text": html, "parse_mode": "HTML", "reply_markup": keyboard}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let message = &body["result"];
        assert_eq!(message["text"], "Disk & CPU on db-01 🔴 <tag>");
        assert_eq!(message["message_id"], 1);
        assert_eq!(message["chat"]["type"], "private");
        assert_eq!(message["from"]["id"], BOT_ID);
        assert_eq!(message["reply_markup"], keyboard);
        assert_eq!(message["entities"][0], json!({"type": "bold", "offset": 0, "length": 10}));
        assert_eq!(message["entities"][1]["url"], "https://g.example/d?a=1&b=2");

        for (bad_html, why) in [
            ("line<br>break", "unsupported tag"),
            ("a & b", "bare ampersand"),
            ("<b>open", "unclosed tag"),
            ("<b><i>x</b></i>", "crossed tags"),
            ("1 < 2", "bare <"),
            (r#"<span class="x">s</span>"#, "span without tg-spoiler"),
        ] {
            let (status, body) =
                post(&fake, "sendMessage", json!({"chat_id": 42, "text": bad_html, "parse_mode": "HTML"})).await;
            assert_eq!(status, 400, "{why}: {body}");
            assert!(body["description"].as_str().unwrap().starts_with("Bad Request: can't parse entities: "), "{why}");
        }
        let ok = r#"<pre><code class="language-rust">x</code></pre><blockquote expandable>q</blockquote><tg-spoiler>s</tg-spoiler><span class="tg-spoiler">t</span>"#;
        let (status, body) = post(&fake, "sendMessage", json!({"chat_id": 42, "text": ok, "parse_mode": "HTML"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["entities"][0], json!({"type": "pre", "offset": 0, "length": 1, "language": "rust"}));

        // The limit counts visible text: 4000 characters in 5000+ bytes of markup pass, 4097 do not.
        let long = format!("<b>{}</b>{}", "x".repeat(2000), "&amp;".repeat(2000));
        let (status, _) = post(&fake, "sendMessage", json!({"chat_id": 42, "text": long, "parse_mode": "HTML"})).await;
        assert_eq!(status, 200);
        let (status, body) = post(&fake, "sendMessage", json!({"chat_id": 42, "text": "y".repeat(4097)})).await;
        assert_eq!((status, body["description"].as_str()), (400, Some("Bad Request: message is too long")));
        let (_, body) = post(&fake, "sendMessage", json!({"chat_id": 42, "text": " "})).await;
        assert_eq!(body["description"], "Bad Request: message text is empty");
        let too_long_data = json!({"inline_keyboard": [[{"text": "x", "callback_data": "d".repeat(65)}]]});
        let (_, body) =
            post(&fake, "sendMessage", json!({"chat_id": 42, "text": "t", "reply_markup": too_long_data})).await;
        assert_eq!(body["description"], "Bad Request: BUTTON_DATA_INVALID");

        // The real API's other encodings: a form with JSON-text parameters, lower-case name.
        let form = format!(
            "chat_id=-1001234567890&text={}&message_thread_id=7&reply_markup={}",
            "hello+world%21",
            "%7B%22inline_keyboard%22%3A%5B%5B%7B%22text%22%3A%22a%22%2C%22callback_data%22%3A%22b%22%7D%5D%5D%7D"
        );
        let response = client()
            .post(method_url(&fake, "sendmessage"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let sent = fake.sent(-1001234567890);
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].text.as_str(), sent[0].thread_id, sent[0].message_id), ("hello world!", Some(7), 1));
        assert_eq!(sent[0].reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"], "b");
        let call = fake.calls_to("sendMessage").pop().unwrap();
        assert_eq!(call.params["chat_id"], -1001234567890i64, "integers are normalised");
        assert_eq!(fake.sent(42).len(), 3);
        assert_eq!(fake.n_sent(), 4);
    }

    #[tokio::test]
    async fn fake_telegram_edits_and_callback_answers() {
        let fake = FakeTelegram::start().await;
        let keyboard = json!({"inline_keyboard": [[{"text": "Ack", "callback_data": "ack"}]]});
        let (_, body) =
            post(&fake, "sendMessage", json!({"chat_id": 5, "text": "card", "reply_markup": keyboard})).await;
        let id = body["result"]["message_id"].as_i64().unwrap();
        let same = json!({"chat_id": 5, "message_id": id, "text": "card", "reply_markup": keyboard});
        let (status, body) = post(&fake, "editMessageText", same).await;
        assert_eq!((status, body["description"].as_str()), (400, Some(&*format!("Bad Request: {NOT_MODIFIED}"))));
        let (status, body) = post(
            &fake,
            "editMessageText",
            json!({"chat_id": 5, "message_id": id, "text": "<i>acked</i>", "parse_mode": "HTML"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["result"].get("reply_markup").is_none(), "omitting reply_markup removes the keyboard");
        assert!(body["result"]["edit_date"].is_i64());
        let (_, body) = post(&fake, "editMessageText", json!({"chat_id": 5, "message_id": 99, "text": "x"})).await;
        assert_eq!(body["description"], "Bad Request: message to edit not found");
        let (status, _) =
            post(&fake, "editMessageReplyMarkup", json!({"chat_id": 5, "message_id": id, "reply_markup": keyboard}))
                .await;
        assert_eq!(status, 200);
        let sent = &fake.sent(5)[0];
        assert_eq!((sent.text.as_str(), sent.edits, sent.reply_markup.is_some()), ("acked", 2, true));

        let card = fake.sent_message_json(5, id);
        assert_eq!(card["reply_markup"], keyboard);
        let press = FakeTelegram::callback_query("cb-1", FakeTelegram::user(5, "Alice", Some("alice")), card, "ack");
        fake.push("callback_query", press);
        let answer = json!({"callback_query_id": "cb-1", "text": "Acknowledged"});
        assert_eq!(post(&fake, "answerCallbackQuery", answer.clone()).await.0, 200);
        let (status, body) = post(&fake, "answerCallbackQuery", answer).await;
        assert_eq!((status, body["description"].as_str()), (400, Some(&*format!("Bad Request: {QUERY_TOO_OLD}"))));

        fake.rate_limit_chat(5, 1, 3);
        let response = client()
            .post(method_url(&fake, "sendMessage"))
            .json(&json!({"chat_id": 5, "text": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "3");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["description"], "Too Many Requests: retry after 3");
        assert_eq!(body["parameters"]["retry_after"], 3);
        assert_eq!(post(&fake, "sendMessage", json!({"chat_id": 5, "text": "x"})).await.0, 200);

        let commands =
            json!([{"command": "/ack", "description": "ack an alert"}, {"command": "status", "description": "s"}]);
        assert_eq!(post(&fake, "setMyCommands", json!({"commands": commands})).await.0, 200);
        assert_eq!(fake.commands().unwrap()[0]["command"], "ack");
        let (status, body) =
            post(&fake, "setMyCommands", json!({"commands": [{"command": "Ack", "description": "x"}]})).await;
        assert_eq!((status, body["description"].as_str()), (400, Some("Bad Request: BOT_COMMAND_INVALID")));
    }

    #[tokio::test]
    async fn fake_telegram_long_poll_wakes_on_push() {
        let fake = Arc::new(FakeTelegram::start().await);
        fake.set_poll_cap(Duration::from_secs(30));
        let poller = {
            let fake = fake.clone();
            tokio::spawn(async move { post(&fake, "GetUpdates", json!({"offset": 0, "timeout": 30})).await })
        };
        wait_for("a pending long poll", || pending_polls(&fake) == 1).await;
        let started = Instant::now();
        let chat = FakeTelegram::private_chat(42, "Alice");
        let message =
            FakeTelegram::text_message(10, chat, FakeTelegram::user(42, "Alice", Some("alice")), "/ack 123", None);
        let id = fake.push("message", message);
        let (status, body) = tokio::time::timeout(DEADLINE, poller).await.expect("the poll is answered").unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "woken by the push, not the timeout");
        assert_eq!(status, 200);
        assert_eq!(body["result"][0]["update_id"], id);
        assert_eq!(
            body["result"][0]["message"]["entities"],
            json!([{"type": "bot_command", "offset": 0, "length": 4}])
        );
        assert_eq!(fake.calls_to("getUpdates")[0].status, 200);

        // A short poll answers at once; a capped long poll answers [] when the cap passes.
        fake.set_poll_cap(Duration::from_millis(100));
        let (_, body) = post(&fake, "getUpdates", json!({"offset": id + 1, "timeout": 30})).await;
        assert_eq!(body["result"], json!([]));
    }

    #[tokio::test]
    async fn fake_telegram_older_poller_gets_409() {
        let fake = Arc::new(FakeTelegram::start().await);
        fake.set_poll_cap(Duration::from_secs(30));
        let spawn_poll = |fake: Arc<FakeTelegram>| {
            tokio::spawn(async move { post(&fake, "getUpdates", json!({"timeout": 30})).await })
        };
        let older = spawn_poll(fake.clone());
        wait_for("the first long poll", || pending_polls(&fake) == 1).await;
        let newer = spawn_poll(fake.clone());
        let (status, body) = tokio::time::timeout(DEADLINE, older).await.expect("the older poll ends").unwrap();
        assert_eq!((status, body["description"].as_str()), (409, Some(TERMINATED_BY_OTHER)));
        wait_for("the second long poll", || pending_polls(&fake) == 1).await;
        let id = fake
            .push("message", json!({"message_id": 1, "date": 1, "chat": {"id": 1, "type": "private"}, "text": "hi"}));
        let (status, body) = tokio::time::timeout(DEADLINE, newer).await.expect("the newer poll ends").unwrap();
        assert_eq!((status, body["result"][0]["message"]["text"].as_str()), (200, Some("hi")));

        // setWebhook ends a pending poll, and polling is refused while a webhook is set.
        post(&fake, "getUpdates", json!({"offset": id + 1})).await;
        let third = spawn_poll(fake.clone());
        wait_for("a third long poll", || pending_polls(&fake) == 1).await;
        let (status, _) = post(&fake, "setWebhook", json!({"url": "http://127.0.0.1:9/hook"})).await;
        assert_eq!(status, 200);
        let (status, body) = tokio::time::timeout(DEADLINE, third).await.expect("the third poll ends").unwrap();
        assert_eq!((status, body["description"].as_str()), (409, Some(TERMINATED_BY_SET_WEBHOOK)));
        let (status, body) = post(&fake, "getUpdates", json!({})).await;
        assert_eq!((status, body["description"].as_str()), (409, Some(WEBHOOK_ACTIVE)));
    }

    #[tokio::test]
    async fn fake_telegram_offsets_confirm_updates() {
        let fake = FakeTelegram::start().await;
        let ids: Vec<i64> = (0..3).map(|n| fake.push("message", json!({"message_id": n, "date": 1}))).collect();
        assert_eq!(ids, [1, 2, 3]);
        let (_, body) = post(&fake, "getUpdates", json!({"offset": 0, "limit": 2})).await;
        assert_eq!(body["result"].as_array().unwrap().len(), 2);
        let (_, body) = post(&fake, "getUpdates", json!({"offset": 0})).await;
        assert_eq!(body["result"].as_array().unwrap().len(), 3, "nothing is confirmed by delivery alone");
        let (_, body) = post(&fake, "getUpdates", json!({"offset": 3})).await;
        assert_eq!(body["result"][0]["update_id"], 3);
        assert_eq!(fake.confirmed_offset(), 3);
        let (_, body) = post(&fake, "getUpdates", json!({"offset": 4, "limit": 1, "timeout": 0})).await;
        assert_eq!(body["result"], json!([]));
        assert_eq!(fake.confirmed_offset(), 4);

        // allowed_updates is sticky and filters updates created after it.
        post(&fake, "getUpdates", json!({"allowed_updates": ["callback_query"]})).await;
        fake.push("message", json!({"message_id": 9, "date": 1}));
        let raw = fake.push_raw(json!({"unknown_kind": {}}));
        assert_eq!(raw, 5, "update 4 used its id but was never created");
        let (_, body) = post(&fake, "getWebhookInfo", json!({})).await;
        assert_eq!(body["result"], json!({"url": "", "has_custom_certificate": false, "pending_update_count": 1}));
    }

    #[tokio::test]
    async fn fake_telegram_multipart_send_document() {
        let fake = FakeTelegram::start().await;
        let boundary = "7d3c1a2b-boundary";
        let mut body = Vec::new();
        let mut text_part = |name: &str, value: &str| {
            body.extend(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            )
        };
        text_part("chat_id", "-1001234567890");
        text_part("document", "attach://0123456789abcdef0123456789abcdef");
        text_part("caption", "<b>deploy</b> log");
        text_part("parse_mode", "HTML");
        text_part("message_thread_id", "12");
        text_part("reply_parameters", r#"{"message_id":3}"#);
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"0123456789abcdef0123456789abcdef\"; \
                 filename=\"deploy \\\"42\\\".log\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend(b"line 1\r\n--not-a-boundary\r\nline 2\n");
        body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
        let response = client()
            .post(method_url(&fake, "SendDocument"))
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let message = response.json::<Value>().await.unwrap()["result"].clone();
        assert_eq!(message["document"]["file_name"], "deploy \"42\".log");
        assert!(message["document"]["file_id"].is_string() && message["document"]["file_unique_id"].is_string());
        assert_eq!(message["caption"], "deploy log");
        assert_eq!(message["message_thread_id"], 12);
        let sent = &fake.sent(-1001234567890)[0];
        let (name, bytes) = sent.document.as_ref().unwrap();
        assert_eq!(
            (name.as_str(), bytes.as_slice()),
            ("deploy \"42\".log", b"line 1\r\n--not-a-boundary\r\nline 2\n".as_slice())
        );
        assert_eq!((sent.text.as_str(), sent.reply_to, sent.thread_id), ("deploy log", Some(3), Some(12)));
        let call = &fake.calls_to("sendDocument")[0];
        assert_eq!(call.files[0].0, "0123456789abcdef0123456789abcdef");
        assert_eq!(call.params["reply_parameters"], json!({"message_id": 3}));
    }

    #[tokio::test]
    async fn fake_telegram_webhook_delivery() {
        let fake = FakeTelegram::start().await;
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let app = Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, Json(update): Json<Value>| {
                let seen = seen_tx.clone();
                async move {
                    let secret = headers.get("x-telegram-bot-api-secret-token").map(|v| v.to_str().unwrap().to_owned());
                    let _ = seen.send((secret, update));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (status, body) = post(&fake, "setWebhook", json!({"url": hook, "secret_token": "s3cret_-x"})).await;
        assert_eq!((status, body["description"].as_str()), (200, Some("Webhook was set")));
        assert_eq!(fake.webhook(), Some((hook.clone(), Some("s3cret_-x".to_owned()))));
        let status = fake.deliver_webhook("message", json!({"message_id": 1, "date": 1}), Some("s3cret_-x")).await;
        assert_eq!(status, 200);
        let (secret, update) = seen_rx.recv().await.unwrap();
        assert_eq!((secret.as_deref(), update["update_id"].as_i64()), (Some("s3cret_-x"), Some(1)));
        let (_, body) = post(&fake, "setWebhook", json!({"url": hook, "secret_token": "bad token!"})).await;
        assert_eq!(body["error_code"], 400);
        let (_, body) = post(&fake, "deleteWebhook", json!({})).await;
        assert_eq!(body["description"], "Webhook was deleted");
        assert_eq!(fake.webhook(), None);
        server.abort();
    }

    #[tokio::test]
    async fn fake_telegram_flood_limits() {
        let fake = FakeTelegram::start().await;
        fake.set_flood_limits(true);
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(post(&fake, "sendMessage", json!({"chat_id": 7, "text": "x"})).await.0);
        }
        // A burst of 3 passes; the next ones within the same second do not.
        assert_eq!(&statuses[..3], [200, 200, 200]);
        assert_eq!(statuses[4], 429);
        assert!(fake.flood_violations() >= 1);
        assert_eq!(post(&fake, "sendMessage", json!({"chat_id": 8, "text": "x"})).await.0, 200, "per chat");
    }

    /// teloxide 0.17 itself, the bot's client, against the fake.
    #[tokio::test]
    async fn fake_telegram_speaks_teloxide() {
        use teloxide::payloads::{EditMessageTextSetters, SendDocumentSetters, SendMessageSetters, SetWebhookSetters};
        use teloxide::requests::Requester;
        use teloxide::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, ParseMode};
        use teloxide::{ApiError, RequestError};

        let fake = FakeTelegram::start().await;
        let bot = teloxide::Bot::with_client(TOKEN, client()).set_api_url(fake.url().parse().unwrap());
        let me = bot.get_me().await.expect("getMe");
        assert_eq!(me.username(), BOT_USERNAME);
        assert!(bot.get_webhook_info().await.expect("getWebhookInfo").url.is_none());

        let keyboard = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("Ack", "v1:ack:1")]]);
        let message = bot
            .send_message(ChatId(-1001234567890), "<b>alert</b> &amp; more")
            .parse_mode(ParseMode::Html)
            .reply_markup(keyboard.clone())
            .await
            .expect("sendMessage");
        assert_eq!(message.text(), Some("alert & more"));
        let edit = bot
            .edit_message_text(message.chat.id, message.id, "<b>alert</b> &amp; more")
            .parse_mode(ParseMode::Html)
            .reply_markup(keyboard)
            .await;
        assert!(matches!(edit, Err(RequestError::Api(ApiError::MessageNotModified))), "{edit:?}");

        let document = bot
            .send_document(ChatId(42), InputFile::memory(b"log body".to_vec()).file_name("deploy-42.log"))
            .caption("logs")
            .await
            .expect("sendDocument");
        assert_eq!(document.document().and_then(|d| d.file_name.as_deref()), Some("deploy-42.log"));
        assert_eq!(fake.sent(42)[0].document, Some(("deploy-42.log".to_owned(), b"log body".to_vec())));

        fake.rate_limit_chat(42, 1, 1);
        let limited = bot.send_message(ChatId(42), "x").await;
        assert!(matches!(limited, Err(RequestError::RetryAfter(_))), "{limited:?}");

        bot.set_webhook("http://127.0.0.1:9/tg".parse().unwrap())
            .secret_token("abc".to_owned())
            .await
            .expect("setWebhook");
        assert_eq!(fake.webhook(), Some(("http://127.0.0.1:9/tg".to_owned(), Some("abc".to_owned()))));
        let conflict = bot.get_updates().await;
        assert!(matches!(conflict, Err(RequestError::Api(ApiError::Unknown(_)))), "{conflict:?}");
        bot.delete_webhook().await.expect("deleteWebhook");
        fake.push(
            "message",
            FakeTelegram::text_message(
                10,
                FakeTelegram::group_chat(-1001234567890, "ops", true, true),
                FakeTelegram::user(42, "Alice", None),
                "/deploy@ops_test_bot v1 @bob 🔴 @alice",
                Some(3),
            ),
        );
        let updates = bot.get_updates().await.expect("getUpdates");
        assert_eq!(updates.len(), 1);
        let teloxide::types::UpdateKind::Message(message) = &updates[0].kind else { panic!("{updates:?}") };
        let entities = message.parse_entities().expect("entities");
        let texts: Vec<&str> = entities.iter().map(|e| e.text()).collect();
        assert_eq!(texts, ["/deploy@ops_test_bot", "@bob", "@alice"]);
        assert_eq!(message.thread_id.map(|t| t.0.0), Some(3));
    }
}
