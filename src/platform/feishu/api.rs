//! The Feishu / Lark Open API client: `tenant_access_token` cached and
//! refreshed before expiry (single-flight, invalidated and retried once on a
//! token error), send / reply / patch with the outbox key as the `uuid`
//! idempotency key, reading one message back, bot info, and every failure
//! mapped to a typed error.
//! Retrying is the outbox's job; this client only classifies.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::event::MessageId;
use crate::platform::PlatformError;

/// Refresh this long before the token expires.
const REFRESH_MARGIN_MS: i64 = 5 * 60 * 1000;
/// Feishu's `uuid` idempotency key is at most 50 characters.
const MAX_UUID: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("network error: {0}")]
    Network(String),
    #[error("HTTP {status}: code {code}: {msg}")]
    Api { status: u16, code: i64, msg: String },
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited { retry_after: Duration },
    #[error("unexpected response: {0}")]
    Malformed(String),
}

impl ApiError {
    /// Token errors: the cached token is dropped and the call made once more.
    fn is_token_error(&self) -> bool {
        matches!(self, ApiError::Api { code: 99991661 | 99991663 | 99991664 | 99991671, .. })
    }
}

impl From<ApiError> for PlatformError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::RateLimited { retry_after } => PlatformError::RateLimited { retry_after },
            ApiError::Network(_) | ApiError::Malformed(_) => PlatformError::Retryable(e.to_string()),
            ApiError::Api { status, .. } if status >= 500 => PlatformError::Retryable(e.to_string()),
            // 230049: "message still sending"; token errors that survived the refresh.
            ApiError::Api { code: 230049 | 99991663 | 99991664 | 99991671, .. } => {
                PlatformError::Retryable(e.to_string())
            }
            ApiError::Api { .. } => PlatformError::Rejected(e.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    refresh_at_ms: i64,
}

/// The bot's identity as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotInfo {
    pub open_id: String,
    pub app_name: String,
}

pub struct OpenApi {
    http: reqwest::Client,
    base: String,
    app_id: String,
    app_secret: String,
    token: Mutex<Option<CachedToken>>,
    clock: Clock,
}

/// Which message type a send carries.
#[derive(Debug, Clone, Copy)]
pub enum MsgType {
    Post,
    Interactive,
    File,
}

impl MsgType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Interactive => "interactive",
            Self::File => "file",
        }
    }
}

/// What a call sends.
enum Body<'a> {
    None,
    Json(&'a Value),
    /// A multipart file upload.
    File {
        name: &'a str,
        data: &'a [u8],
    },
}

impl OpenApi {
    pub fn new(base: &str, app_id: String, app_secret: String, timeout: Duration, clock: Clock) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("opsclaw/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with rustls");
        Self { http, base: base.trim_end_matches('/').to_owned(), app_id, app_secret, token: Mutex::new(None), clock }
    }

    /// The bot's identity, retrying temporary failures (network, 5xx, rate
    /// limits) for up to `patience`; credentials Feishu refuses fail at once.
    pub async fn bot_info_patiently(&self, patience: Duration) -> Result<BotInfo, ApiError> {
        let give_up = tokio::time::Instant::now() + patience;
        let mut delay = Duration::from_secs(1);
        loop {
            match self.bot_info().await {
                Ok(info) => return Ok(info),
                Err(e)
                    if PlatformError::from(e.clone()).is_retryable()
                        && tokio::time::Instant::now() + delay < give_up =>
                {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "asking Feishu who the bot is failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(15));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn bot_info(&self) -> Result<BotInfo, ApiError> {
        let body = self.call(Method::GET, "/open-apis/bot/v3/info", None).await?;
        let bot = body.get("bot").ok_or_else(|| ApiError::Malformed("bot info without `bot`".into()))?;
        let field = |k: &str| bot.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        Ok(BotInfo { open_id: field("open_id"), app_name: field("app_name") })
    }

    /// Sends to a chat; returns the new message's id.
    pub async fn send(
        &self,
        chat_id: &str,
        msg_type: MsgType,
        content: &str,
        key: &str,
    ) -> Result<MessageId, ApiError> {
        let body = json!({"receive_id": chat_id, "msg_type": msg_type.as_str(), "content": content, "uuid": uuid(key)});
        let response = self.call(Method::POST, "/open-apis/im/v1/messages?receive_id_type=chat_id", Some(body)).await?;
        message_id(&response)
    }

    /// Replies to `message`, in its thread when `in_thread`.
    pub async fn reply(
        &self,
        message: &MessageId,
        msg_type: MsgType,
        content: &str,
        key: &str,
        in_thread: bool,
    ) -> Result<MessageId, ApiError> {
        let body =
            json!({"msg_type": msg_type.as_str(), "content": content, "uuid": uuid(key), "reply_in_thread": in_thread});
        let path = format!("/open-apis/im/v1/messages/{}/reply", path_segment(message.as_str()));
        message_id(&self.call(Method::POST, &path, Some(body)).await?)
    }

    /// Replaces the content of a card message.
    pub async fn patch(&self, message: &MessageId, content: &str) -> Result<(), ApiError> {
        let path = format!("/open-apis/im/v1/messages/{}", path_segment(message.as_str()));
        self.call(Method::PATCH, &path, Some(json!({"content": content}))).await.map(|_| ())
    }

    /// Uploads a file for a file message (POST /open-apis/im/v1/files,
    /// `file_type=stream`, at most 30 MB) and returns its `file_key`. A retry
    /// uploads again: an unused upload costs nothing but storage on Feishu's side.
    pub async fn upload_file(&self, name: &str, data: &[u8]) -> Result<String, ApiError> {
        let response = self.call_with(Method::POST, "/open-apis/im/v1/files", Body::File { name, data }).await?;
        match response.pointer("/data/file_key").and_then(Value::as_str) {
            Some(key) => Ok(key.to_owned()),
            None => Err(ApiError::Malformed("file upload response without data.file_key".into())),
        }
    }

    /// The message object of `message` (`data.items[0]`), as the API returns it.
    pub async fn message(&self, message: &MessageId) -> Result<Value, ApiError> {
        let path = format!("/open-apis/im/v1/messages/{}", path_segment(message.as_str()));
        let mut response = self.call(Method::GET, &path, None).await?;
        match response.pointer_mut("/data/items/0") {
            Some(item) => Ok(item.take()),
            None => Err(ApiError::Malformed("message response without data.items[0]".into())),
        }
    }

    /// One authenticated call; on a token error the token is refreshed and the call repeated once.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, ApiError> {
        let body = match &body {
            Some(json) => Body::Json(json),
            None => Body::None,
        };
        self.call_with(method, path, body).await
    }

    async fn call_with(&self, method: Method, path: &str, body: Body<'_>) -> Result<Value, ApiError> {
        let token = self.token().await?;
        match self.request(method.clone(), path, &body, &token).await {
            Err(e) if e.is_token_error() => {
                tracing::info!(error = %e, "tenant token rejected; refreshing");
                self.invalidate(&token).await;
                let token = self.token().await?;
                self.request(method, path, &body, &token).await
            }
            other => other,
        }
    }

    async fn request(&self, method: Method, path: &str, body: &Body<'_>, token: &str) -> Result<Value, ApiError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        match body {
            Body::None => {}
            Body::Json(json) => request = request.json(json),
            // Built anew for each attempt: a multipart form is consumed by sending it.
            Body::File { name, data } => {
                let part = reqwest::multipart::Part::bytes(data.to_vec()).file_name(name.to_string());
                let form = reqwest::multipart::Form::new()
                    .text("file_type", "stream")
                    .text("file_name", name.to_string())
                    .part("file", part);
                request = request.multipart(form);
            }
        }
        let response = request.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
        read(response).await
    }

    async fn token(&self) -> Result<String, ApiError> {
        // Holding the lock across the fetch makes concurrent callers share one refresh.
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| t.refresh_at_ms > self.clock.now_ms()) {
            return Ok(t.token.clone());
        }
        let response = self
            .http
            .post(format!("{}/open-apis/auth/v3/tenant_access_token/internal", self.base))
            .json(&json!({"app_id": self.app_id, "app_secret": self.app_secret}))
            .send()
            .await
            .map_err(|e| ApiError::Network(e.to_string()))?;
        let body = read(response).await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            tenant_access_token: String,
            expire: i64,
        }
        let parsed: TokenResponse = serde_json::from_value(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
        let refresh_at_ms = self.clock.now_ms() + (parsed.expire * 1000 - REFRESH_MARGIN_MS).max(parsed.expire * 500);
        *cached = Some(CachedToken { token: parsed.tenant_access_token.clone(), refresh_at_ms });
        Ok(parsed.tenant_access_token)
    }

    async fn invalidate(&self, rejected: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.token == rejected) {
            *cached = None;
        }
    }
}

/// Reads `{code, msg, …}`; any non-zero code or HTTP error becomes an [`ApiError`].
async fn read(response: reqwest::Response) -> Result<Value, ApiError> {
    let status = response.status();
    let reset = response
        .headers()
        .get("x-ogw-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let text = response.text().await.map_err(|e| ApiError::Network(e.to_string()))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let code = body.get("code").and_then(Value::as_i64);
    let msg = body.get("msg").and_then(Value::as_str).unwrap_or_default().to_owned();
    // Rate limits: HTTP 429, the rate-limit code, or the reset header on an error.
    if status == StatusCode::TOO_MANY_REQUESTS || code == Some(99991400) || code == Some(230020) {
        let retry_after = Duration::from_secs(reset.unwrap_or(1).max(1));
        return Err(ApiError::RateLimited { retry_after });
    }
    match code {
        Some(0) if status.is_success() => Ok(body),
        Some(code) => Err(ApiError::Api { status: status.as_u16(), code, msg }),
        None if status.is_server_error() => Err(ApiError::Api { status: status.as_u16(), code: -1, msg: text }),
        None => Err(ApiError::Malformed(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()))),
    }
}

fn message_id(response: &Value) -> Result<MessageId, ApiError> {
    response
        .pointer("/data/message_id")
        .and_then(Value::as_str)
        .map(MessageId::new)
        .ok_or_else(|| ApiError::Malformed("message response without data.message_id".into()))
}

/// The outbox key when it fits Feishu's 50 characters, else a stable digest of it.
fn uuid(key: &str) -> String {
    if key.len() <= MAX_UUID {
        return key.to_owned();
    }
    Sha256::digest(key.as_bytes()).iter().take(24).map(|b| format!("{b:02x}")).collect()
}

/// Message ids are `om_…`; anything else is percent-encoded rather than trusted in a path.
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_fit_feishu_and_stay_stable() {
        assert_eq!(uuid("feishu:ev1#0"), "feishu:ev1#0");
        let long = format!("feishu:{}#12", "e".repeat(64));
        assert_eq!(uuid(&long).len(), 48);
        assert_eq!(uuid(&long), uuid(&long));
        assert_ne!(uuid(&long), uuid(&long.replace("#12", "#13")));
    }

    #[test]
    fn errors_map_to_platform_errors() {
        let api = |status, code| ApiError::Api { status, code, msg: String::new() };
        assert!(matches!(PlatformError::from(api(500, -1)), PlatformError::Retryable(_)));
        assert!(matches!(PlatformError::from(api(400, 230002)), PlatformError::Rejected(_)));
        assert!(matches!(PlatformError::from(api(400, 230049)), PlatformError::Retryable(_)));
        assert!(matches!(
            PlatformError::from(ApiError::RateLimited { retry_after: Duration::from_secs(2) }),
            PlatformError::RateLimited { .. }
        ));
        assert!(api(400, 99991663).is_token_error());
    }

    #[tokio::test]
    async fn bot_info_gives_up_at_once_on_refused_credentials_and_after_patience_otherwise() {
        // A port that was just free and is closed again: every attempt is a network error.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let api = OpenApi::new(&base, "cli_x".into(), "s".into(), Duration::from_secs(1), Clock::new());
        let started = tokio::time::Instant::now();
        let err = api.bot_info_patiently(Duration::from_millis(1500)).await.unwrap_err();
        assert!(matches!(err, ApiError::Network(_)), "{err:?}");
        assert!(started.elapsed() >= Duration::from_secs(1), "retried once before giving up");
    }

    #[test]
    fn path_segments_are_safe() {
        assert_eq!(path_segment("om_abc-1"), "om_abc-1");
        assert_eq!(path_segment("../x"), "%2E%2E%2Fx");
    }
}
