//! A fake Feishu Open Platform on 127.0.0.1, speaking the real HTTP API shapes
//! (shared/ref/feishu.md §6): tenant tokens, bot info, send / reply / patch
//! with `uuid` idempotency and the 30 KB limit, reading a message back (GET
//! /open-apis/im/v1/messages/:message_id: the bot's own and those users "sent"
//! with [`FakeFeishu::user_message`]), and knobs for rate limits (429 with
//! `x-ogw-ratelimit-reset`), server errors and refused reads. Files are
//! uploaded as Feishu takes them (POST /open-apis/im/v1/files, multipart
//! with `file_type`, `file_name`, `file`; 30 MB at most) and sent as `file`
//! messages naming an uploaded `file_key`. [`Callbacks`]
//! plays Feishu's side of HTTP callback mode: encrypted, signed POSTs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::fake_feishu_ws::WsState;

pub const APP_ID: &str = "cli_a1b2c3d4e5f60718";
pub const APP_SECRET: &str = "app-secret";
pub const BOT_OPEN_ID: &str = "ou_bot";

/// One call that reached the message API.
#[derive(Debug, Clone)]
pub struct Call {
    pub kind: CallKind,
    pub msg_type: String,
    pub content: String,
    pub uuid: Option<String>,
    /// The id of the message created (send, reply) or patched.
    pub message_id: String,
    /// When the call arrived.
    pub at: std::time::Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallKind {
    Send { chat: String },
    Reply { parent: String, in_thread: bool },
    Patch,
}

impl Call {
    /// The text of a post message, its lines joined.
    pub fn text(&self) -> String {
        let content: Value = serde_json::from_str(&self.content).unwrap_or(Value::Null);
        let lines = content.pointer("/zh_cn/content").and_then(Value::as_array).cloned().unwrap_or_default();
        lines
            .iter()
            .map(|line| line.as_array().into_iter().flatten().filter_map(|e| e["text"].as_str()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn card(&self) -> Value {
        serde_json::from_str(&self.content).expect("card content is JSON")
    }
}

#[derive(Default)]
struct FakeState {
    tokens: Mutex<Vec<String>>,
    calls: Mutex<Vec<Call>>,
    by_uuid: Mutex<HashMap<String, String>>,
    messages: Mutex<HashMap<String, String>>,
    /// Every message as GET /open-apis/im/v1/messages/:id returns it, by id.
    items: Mutex<HashMap<String, Value>>,
    /// Reads of a message so far, and the refusal every read gets while set.
    reads: AtomicUsize,
    refuse_reads: Mutex<Option<(StatusCode, i64, &'static str)>>,
    next_id: AtomicUsize,
    rate_limit_next: AtomicUsize,
    fail_next: AtomicUsize,
    refused: AtomicUsize,
    /// Uploaded files by file_key: (file_name, bytes).
    files: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

pub struct FakeFeishu {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    /// The long-connection side.
    pub ws: Arc<WsState>,
}

impl FakeFeishu {
    pub async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        let ws = WsState::new();
        ws.listen().await;
        let endpoint_ws = ws.clone();
        let app = Router::new()
            .route(
                "/callback/ws/endpoint",
                post(move |Json(body): Json<Value>| {
                    let ws = endpoint_ws.clone();
                    async move { Json(ws.endpoint(&body)) }
                }),
            )
            .route("/open-apis/auth/v3/tenant_access_token/internal", post(token))
            .route("/open-apis/bot/v3/info", get(bot_info))
            .route("/open-apis/im/v1/messages", post(send))
            .route("/open-apis/im/v1/messages/{id}/reply", post(reply))
            .route("/open-apis/im/v1/messages/{id}", patch(patch_message).get(get_message))
            .route("/open-apis/im/v1/files", post(upload_file))
            .layer(axum::extract::DefaultBodyLimit::max(31 << 20))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state, ws }
    }

    /// An uploaded file: its name and bytes.
    pub fn file(&self, file_key: &str) -> Option<(String, Vec<u8>)> {
        self.state.files.lock().unwrap().get(file_key).cloned()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Replies to the message `parent`, in arrival order.
    pub fn replies_to(&self, parent: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches!(&c.kind, CallKind::Reply { parent: p, .. } if p == parent))
            .collect()
    }

    /// Waits for the first reply to `parent`.
    pub async fn wait_reply(&self, parent: &str) -> Call {
        super::harness::wait_until(&format!("a reply to {parent}"), || async { !self.replies_to(parent).is_empty() })
            .await;
        self.replies_to(parent).remove(0)
    }

    pub fn n_calls(&self) -> usize {
        self.state.calls.lock().unwrap().len()
    }

    /// Revoke every tenant token issued so far (as an expiry or rotation would).
    pub fn revoke_tokens(&self) {
        let mut tokens = self.state.tokens.lock().unwrap();
        let issued = tokens.len();
        tokens.clear();
        // Keep numbering going so a new token never equals a revoked one.
        tokens.extend((0..issued).map(|n| format!("revoked-{n}")));
    }

    /// Tenant tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.tokens.lock().unwrap().len()
    }

    /// Refuse the next `n` message calls with 429 and a one-second reset.
    pub fn rate_limit_next(&self, n: usize) {
        self.state.rate_limit_next.store(n, Ordering::SeqCst);
    }

    /// Fail the next `n` message calls with HTTP 500.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// How many message calls were refused by the knobs.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// A message a user sent to `chat` (before the event that replies to it),
    /// so that reading it back finds it. `content` is the body's JSON, e.g.
    /// `{"text": "…"}` or a post's `{"title": …, "content": [[…]]}`.
    pub fn user_message(&self, message_id: &str, chat: &str, msg_type: &str, content: &Value) {
        let sender = json!({"id": "ou_alice", "id_type": "open_id", "sender_type": "user", "tenant_key": "t1"});
        let item = item(message_id, chat, msg_type, &content.to_string(), sender);
        self.state.items.lock().unwrap().insert(message_id.to_owned(), item);
    }

    /// Every read of a message from now on is refused with this error, as when
    /// the app lacks the scope (HTTP 400, code 230027); `None` lifts it.
    pub fn refuse_reads(&self, refusal: Option<(StatusCode, i64, &'static str)>) {
        *self.state.refuse_reads.lock().unwrap() = refusal;
    }

    /// How many times a message was read back.
    pub fn reads(&self) -> usize {
        self.state.reads.load(Ordering::SeqCst)
    }
}

/// A message object in the shape the message API returns (§6.2 response `data`).
fn item(message_id: &str, chat: &str, msg_type: &str, content: &str, sender: Value) -> Value {
    json!({
        "message_id": message_id, "root_id": "", "parent_id": "", "thread_id": "", "msg_type": msg_type,
        "create_time": "1700000000100", "update_time": "1700000000100", "deleted": false, "updated": false,
        "chat_id": chat, "sender": sender, "body": {"content": content}, "mentions": [], "upper_message_id": "",
    })
}

fn error(status: StatusCode, code: i64, msg: &str) -> Response {
    (status, Json(json!({"code": code, "msg": msg}))).into_response()
}

async fn token(State(state): State<Arc<FakeState>>, Json(body): Json<Value>) -> Response {
    if body["app_id"] != APP_ID || body["app_secret"] != APP_SECRET {
        return error(StatusCode::OK, 10014, "app secret invalid");
    }
    let token = format!("t-{}", state.tokens.lock().unwrap().len() + 1);
    state.tokens.lock().unwrap().push(token.clone());
    Json(json!({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": 7200})).into_response()
}

fn authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    bearer.is_some_and(|t| state.tokens.lock().unwrap().iter().any(|known| known == t))
}

fn unauthorized() -> Response {
    error(StatusCode::BAD_REQUEST, 99991663, "Invalid access token for authorization")
}

async fn bot_info(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    Json(json!({"code": 0, "msg": "ok", "bot": {"activate_status": 2, "app_name": "OpsBot", "open_id": BOT_OPEN_ID}}))
        .into_response()
}

/// Knobs first, then validation; returns the created or patched message id.
fn record(state: &FakeState, kind: CallKind, body: &Value, target: Option<&str>) -> Response {
    if take(&state.rate_limit_next) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, 99991400, "request trigger frequency limit");
        response.headers_mut().insert("x-ogw-ratelimit-reset", "1".parse().unwrap());
        return response;
    }
    if take(&state.fail_next) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream error").into_response();
    }
    let Some(content) = body["content"].as_str() else {
        return error(StatusCode::BAD_REQUEST, 230001, "content must be a JSON string");
    };
    let msg_type = match (&kind, body["msg_type"].as_str()) {
        (CallKind::Patch, _) => "interactive".to_owned(),
        (_, Some(t)) => t.to_owned(),
        (_, None) => return error(StatusCode::BAD_REQUEST, 230001, "msg_type is required"),
    };
    if content.len() > 30 * 1024 {
        return error(StatusCode::BAD_REQUEST, 230025, "content too long");
    }
    if msg_type == "file" {
        let file: Value = serde_json::from_str(content).unwrap_or(Value::Null);
        let known = file["file_key"].as_str().is_some_and(|k| state.files.lock().unwrap().contains_key(k));
        if !known {
            return error(StatusCode::BAD_REQUEST, 230001, "file message needs the file_key of an uploaded file");
        }
    }
    if msg_type == "interactive" {
        let card: Value = serde_json::from_str(content).unwrap_or(Value::Null);
        if card["schema"] != "2.0" || card["config"]["update_multi"] != true {
            return error(StatusCode::BAD_REQUEST, 230001, "card must be schema 2.0 with update_multi");
        }
    }
    let uuid = body["uuid"].as_str().map(str::to_owned);
    if let Some(u) = &uuid {
        if u.len() > 50 {
            return error(StatusCode::BAD_REQUEST, 230001, "uuid longer than 50");
        }
        // Same uuid within the hour: succeed without sending again.
        if let Some(existing) = state.by_uuid.lock().unwrap().get(u) {
            return Json(json!({"code": 0, "msg": "ok", "data": {"message_id": existing}})).into_response();
        }
    }
    let message_id = match (&kind, target) {
        (CallKind::Patch, Some(id)) => {
            if state.messages.lock().unwrap().get(id).map(String::as_str) != Some("interactive") {
                return error(StatusCode::BAD_REQUEST, 230001, "only sent cards can be patched");
            }
            id.to_owned()
        }
        _ => format!("om_{}", state.next_id.fetch_add(1, Ordering::SeqCst) + 1),
    };
    if let Some(u) = &uuid {
        state.by_uuid.lock().unwrap().insert(u.clone(), message_id.clone());
    }
    state.messages.lock().unwrap().insert(message_id.clone(), msg_type.clone());
    let chat = match &kind {
        CallKind::Send { chat } => chat.as_str(),
        // The fake does not track where replies land; nothing reads that back.
        CallKind::Reply { .. } | CallKind::Patch => "",
    };
    let sender = json!({"id": APP_ID, "id_type": "app_id", "sender_type": "app", "tenant_key": "t1"});
    let mut items = state.items.lock().unwrap();
    match items.get_mut(&message_id) {
        Some(existing) => existing["body"]["content"] = content.into(),
        None => {
            items.insert(message_id.clone(), item(&message_id, chat, &msg_type, content, sender));
        }
    }
    drop(items);
    state.calls.lock().unwrap().push(Call {
        kind,
        msg_type,
        content: content.to_owned(),
        uuid,
        message_id: message_id.clone(),
        at: std::time::Instant::now(),
    });
    Json(json!({"code": 0, "msg": "ok", "data": {"message_id": message_id}})).into_response()
}

/// POST /open-apis/im/v1/files: a multipart form with `file_type`,
/// `file_name` and the `file` part.
async fn upload_file(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(boundary) = content_type.strip_prefix("multipart/form-data; boundary=") else {
        return error(StatusCode::BAD_REQUEST, 234001, "multipart/form-data expected");
    };
    let parts = multipart(&body, boundary);
    let field = |name: &str| parts.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let (Some(file_type), Some(file_name), Some(file)) = (field("file_type"), field("file_name"), field("file")) else {
        return error(StatusCode::BAD_REQUEST, 234001, "file_type, file_name and file are required");
    };
    if file_type != b"stream" && !matches!(&file_type[..], b"opus" | b"mp4" | b"pdf" | b"doc" | b"xls" | b"ppt") {
        return error(StatusCode::BAD_REQUEST, 234001, "invalid file_type");
    }
    if file.is_empty() || file.len() > 30 << 20 {
        return error(StatusCode::BAD_REQUEST, 234006, "file size must be between 1 byte and 30 MB");
    }
    let mut files = state.files.lock().unwrap();
    let key = format!("file_v3_{}", files.len() + 1);
    files.insert(key.clone(), (String::from_utf8_lossy(&file_name).into_owned(), file));
    Json(json!({"code": 0, "msg": "success", "data": {"file_key": key}})).into_response()
}

/// The (name, value) of each part of a multipart/form-data body.
fn multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let after = &rest[head_end + 4..];
        let end = find(after, format!("\r\n{delimiter}").as_bytes()).unwrap_or(after.len());
        let name = head.split("name=\"").nth(1).and_then(|n| n.split('"').next()).unwrap_or_default().to_owned();
        parts.push((name, after[..end].to_vec()));
        rest = &after[end..];
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn take(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

async fn send(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    if query.get("receive_id_type").map(String::as_str) != Some("chat_id") {
        return error(StatusCode::BAD_REQUEST, 230001, "receive_id_type");
    }
    let chat = body["receive_id"].as_str().unwrap_or_default().to_owned();
    record(&state, CallKind::Send { chat }, &body, None)
}

async fn reply(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let in_thread = body["reply_in_thread"].as_bool().unwrap_or(false);
    record(&state, CallKind::Reply { parent: id, in_thread }, &body, None)
}

async fn patch_message(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    record(&state, CallKind::Patch, &body, Some(&id))
}

async fn get_message(State(state): State<Arc<FakeState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    state.reads.fetch_add(1, Ordering::SeqCst);
    if let Some((status, code, msg)) = *state.refuse_reads.lock().unwrap() {
        return error(status, code, msg);
    }
    match state.items.lock().unwrap().get(&id) {
        Some(item) => Json(json!({"code": 0, "msg": "success", "data": {"items": [item]}})).into_response(),
        None => error(StatusCode::BAD_REQUEST, 230001, "invalid message_id"),
    }
}

/// Feishu's side of HTTP callback mode.
pub struct Callbacks {
    pub url: String,
    pub encrypt_key: String,
    pub client: reqwest::Client,
}

/// How a callback is signed.
pub enum Signing<'a> {
    Valid,
    /// Signed with the right key but this timestamp (Unix seconds).
    At(i64),
    Wrong,
    Unsigned,
    /// An arbitrary raw body, signed correctly.
    Raw(&'a [u8]),
}

impl Callbacks {
    pub fn new(bot_addr: &str, encrypt_key: &str) -> Self {
        Self {
            url: format!("http://{bot_addr}/feishu/events"),
            encrypt_key: encrypt_key.into(),
            client: reqwest::Client::new(),
        }
    }

    /// `{"encrypt": base64(iv ‖ AES-256-CBC(sha256(key), plaintext))}`.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let key: [u8; 32] = Sha256::digest(self.encrypt_key.as_bytes()).into();
        let iv: [u8; 16] = rand::random();
        let ciphertext = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
        let mut raw = iv.to_vec();
        raw.extend(ciphertext);
        json!({"encrypt": base64::engine::general_purpose::STANDARD.encode(raw)}).to_string()
    }

    /// POSTs `plaintext` encrypted (or `Signing::Raw` as is); returns status and body.
    pub async fn post(&self, plaintext: &str, signing: Signing<'_>) -> (u16, String) {
        if let Signing::Valid = signing {
            let (body, timestamp, nonce, signature) = self.signed(plaintext);
            return self.post_presigned(&body, &timestamp, &nonce, &signature).await;
        }
        let body = match signing {
            Signing::Raw(raw) => raw.to_vec(),
            _ => self.encrypt(plaintext).into_bytes(),
        };
        let timestamp = match signing {
            Signing::At(ts) => ts.to_string(),
            _ => now_secs().to_string(),
        };
        let nonce = format!("{:x}", rand::random::<u64>());
        let mut signature = self.sign(&timestamp, &nonce, &body);
        if matches!(signing, Signing::Wrong) {
            signature = signature.replace('a', "b").replace('0', "1");
        }
        let headers =
            (!matches!(signing, Signing::Unsigned)).then_some((timestamp.as_str(), nonce.as_str(), signature.as_str()));
        self.send(body, headers).await
    }

    /// An encrypted body with its timestamp, nonce and signature, for sending later.
    pub fn signed(&self, plaintext: &str) -> (String, String, String, String) {
        let body = self.encrypt(plaintext);
        let timestamp = now_secs().to_string();
        let nonce = format!("{:x}", rand::random::<u64>());
        let signature = self.sign(&timestamp, &nonce, body.as_bytes());
        (body, timestamp, nonce, signature)
    }

    /// POSTs a body prepared by [`Callbacks::signed`].
    pub async fn post_presigned(&self, body: &str, timestamp: &str, nonce: &str, signature: &str) -> (u16, String) {
        self.send(body.as_bytes().to_vec(), Some((timestamp, nonce, signature))).await
    }

    /// hex(SHA-256(timestamp ‖ nonce ‖ encrypt key ‖ body)), as Feishu signs.
    fn sign(&self, timestamp: &str, nonce: &str, body: &[u8]) -> String {
        let mut hash = Sha256::new();
        hash.update(timestamp.as_bytes());
        hash.update(nonce.as_bytes());
        hash.update(self.encrypt_key.as_bytes());
        hash.update(body);
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    async fn send(&self, body: Vec<u8>, signature: Option<(&str, &str, &str)>) -> (u16, String) {
        let mut request = self.client.post(&self.url).header("content-type", "application/json").body(body);
        if let Some((timestamp, nonce, signature)) = signature {
            request = request
                .header("X-Lark-Request-Timestamp", timestamp)
                .header("X-Lark-Request-Nonce", nonce)
                .header("X-Lark-Signature", signature);
        }
        let response = request.send().await.expect("the bot answers");
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

impl Callbacks {
    /// POSTs a plaintext body as Feishu does without an encrypt key: unsigned.
    pub async fn post_plain(&self, body: &str) -> (u16, String) {
        self.send(body.as_bytes().to_vec(), None).await
    }

    /// POSTs an old-style card callback signed with SHA-1 over `token`.
    pub async fn post_card_v1(&self, body: &str, token: &str) -> (u16, String) {
        use sha1::Sha1;
        let timestamp = now_secs().to_string();
        let nonce = "abc123";
        let mut hash = Sha1::new();
        hash.update(timestamp.as_bytes());
        hash.update(nonce.as_bytes());
        hash.update(token.as_bytes());
        hash.update(body.as_bytes());
        let signature: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.send(body.as_bytes().to_vec(), Some((&timestamp, nonce, &signature))).await
    }
}

/// A schema 2.0 `im.message.receive_v1` body, compact as Feishu sends it.
pub fn message_event(
    event_id: &str,
    chat: &str,
    chat_type: &str,
    message_id: &str,
    text: &str,
    mention_bot: bool,
) -> String {
    let (text, mentions) = if mention_bot {
        (
            format!("@_user_1 {text}"),
            json!([{"key": "@_user_1", "id": {"open_id": BOT_OPEN_ID, "union_id": "on_bot", "user_id": ""}, "name": "OpsBot", "tenant_key": "t1"}]),
        )
    } else {
        (text.to_owned(), json!([]))
    };
    json!({
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": "im.message.receive_v1", "create_time": "1700000000123",
                   "token": "vtok", "app_id": APP_ID, "tenant_key": "t1"},
        "event": {
            "sender": {"sender_id": {"open_id": "ou_alice", "union_id": "on_alice", "user_id": "alice"}, "sender_type": "user", "tenant_key": "t1"},
            "message": {"message_id": message_id, "chat_id": chat, "chat_type": chat_type, "message_type": "text",
                        "create_time": "1700000000100", "update_time": "1700000000100",
                        "content": json!({"text": text}).to_string(), "mentions": mentions}
        }
    })
    .to_string()
}

/// `body` (from [`message_event`]) as a reply to `parent`: Feishu then sets
/// `root_id` and `parent_id` (both the parent, for a reply to a message that
/// is itself no reply).
pub fn replying_to(body: &str, parent: &str) -> String {
    let mut body: Value = serde_json::from_str(body).expect("a message event");
    body["event"]["message"]["root_id"] = parent.into();
    body["event"]["message"]["parent_id"] = parent.into();
    body.to_string()
}

/// A schema 2.0 `card.action.trigger` body for a click on `token`.
pub fn card_click(event_id: &str, chat: &str, message_id: &str, operator: &str, token: &str) -> String {
    json!({
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": "card.action.trigger", "create_time": "1700000000123000",
                   "token": "vtok", "app_id": APP_ID, "tenant_key": "t1"},
        "event": {
            "operator": {"open_id": operator, "tenant_key": "t1"},
            "token": "c-update-token",
            "action": {"value": {"t": token}, "tag": "button"},
            "host": "im_message",
            "context": {"open_message_id": message_id, "open_chat_id": chat}
        }
    })
    .to_string()
}
