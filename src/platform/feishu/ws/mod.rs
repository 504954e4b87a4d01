//! Feishu's long connection (WebSocket event subscription): endpoint
//! discovery, protobuf frames, ping / pong with live configuration, fragment
//! reassembly, ACKs within Feishu's 3 s, and a supervisor that reconnects
//! (jitter before the first attempt, the server's interval after), stops only
//! on fatal errors, and treats a silent socket as dead.
//!
//! An event is persisted to the inbox before its ACK is sent; the handler
//! runs after. Frames are handled concurrently, so one slow write never
//! stalls the reader.

pub mod frame;
pub mod reassembly;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use self::frame::{Frame, METHOD_CONTROL, METHOD_DATA};
use self::reassembly::Reassembly;
use super::callback::CHANNEL;
use super::event::{self, BotIdentity, Inbound};
use crate::clock::Clock;
use crate::i18n::{Catalog, LocaleRules};
use crate::pipeline::inbox::{Admission, Inbox, InboxError, Sequence};
use crate::platform::{ChannelState, Channels};

/// Endpoint discovery and the WebSocket handshake must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No retry comes sooner than this, whatever the server says.
const MIN_RETRY: Duration = Duration::from_millis(200);
/// Once the server's reconnect count is used up, retries back off to this.
const MAX_RETRY: Duration = Duration::from_secs(600);
/// Frames being persisted at once; beyond this the reader waits.
const MAX_IN_FLIGHT: usize = 512;

/// Reconnect and ping settings, from the endpoint response and every pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    pub ping_interval: Duration,
    pub reconnect_interval: Duration,
    pub reconnect_nonce: Duration,
    /// Attempts at `reconnect_interval`; negative means unlimited.
    pub reconnect_count: i64,
    /// Whether the server has sent its own settings yet.
    pub from_server: bool,
}

impl Default for ClientConfig {
    /// The official SDKs' defaults.
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(120),
            reconnect_interval: Duration::from_secs(120),
            reconnect_nonce: Duration::from_secs(30),
            reconnect_count: -1,
            from_server: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawClientConfig {
    ping_interval: Option<u64>,
    reconnect_interval: Option<u64>,
    reconnect_nonce: Option<u64>,
    reconnect_count: Option<i64>,
}

impl ClientConfig {
    fn update(&mut self, raw: &RawClientConfig) {
        if let Some(s) = raw.ping_interval.filter(|s| *s > 0) {
            self.ping_interval = Duration::from_secs(s);
        }
        if let Some(s) = raw.reconnect_interval {
            self.reconnect_interval = Duration::from_secs(s);
        }
        if let Some(s) = raw.reconnect_nonce {
            self.reconnect_nonce = Duration::from_secs(s);
        }
        if let Some(n) = raw.reconnect_count {
            self.reconnect_count = n;
        }
        self.from_server = true;
    }

    /// A socket with no inbound frame (not even a pong) for this long is dead.
    fn watchdog(&self) -> Duration {
        self.ping_interval * 2
    }
}

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Bad credentials, a banned app, the connection limit: retrying cannot help.
    #[error("{0}")]
    Fatal(String),
    #[error("{0}")]
    Retryable(String),
}

/// Everything a long-connection client needs.
pub struct LongConnection {
    pub base_url: String,
    pub app_id: String,
    pub app_secret: String,
    pub inbox: Inbox,
    pub bot: BotIdentity,
    pub channels: Channels,
    pub clock: Clock,
    pub catalog: Arc<Catalog>,
    pub locales: LocaleRules,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

impl LongConnection {
    /// Connects and stays connected until `shutdown`, or until a fatal error.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let http = reqwest::Client::builder()
            .timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("opsclaw/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with rustls");
        let mut config = ClientConfig::default();
        let mut failures: i64 = 0;
        self.channels.set_state(CHANNEL, ChannelState::Connecting);
        loop {
            let delay = match self.connect(&http, &mut config).await {
                Ok((socket, service)) => {
                    failures = 0;
                    self.channels.set_state(CHANNEL, ChannelState::Connected);
                    tracing::info!("feishu long connection established");
                    match self.session(socket, service, &mut config, &shutdown).await {
                        SessionEnd::Shutdown => return,
                        SessionEnd::Lost(reason) => {
                            tracing::warn!(reason, "feishu long connection lost; reconnecting");
                            self.channels.set_state(CHANNEL, ChannelState::Reconnecting);
                            // Jitter before the first attempt, so many clients do not return at once.
                            jitter(config.reconnect_nonce)
                        }
                    }
                }
                Err(ConnectError::Fatal(reason)) => {
                    // State first: whoever reads the log line then sees `failed` everywhere.
                    self.channels.set_state(CHANNEL, ChannelState::Failed(reason.clone()));
                    tracing::error!(reason, "feishu long connection failed for good; not retrying");
                    return;
                }
                Err(ConnectError::Retryable(reason)) => {
                    failures += 1;
                    let delay = retry_delay(&config, failures);
                    tracing::warn!(
                        reason,
                        attempt = failures,
                        delay_ms = delay.as_millis() as u64,
                        "feishu connect failed; retrying"
                    );
                    self.channels.set_state(CHANNEL, ChannelState::Reconnecting);
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Endpoint discovery, then the WebSocket handshake.
    async fn connect(&self, http: &reqwest::Client, config: &mut ClientConfig) -> Result<(Socket, i32), ConnectError> {
        let response = http
            .post(format!("{}/callback/ws/endpoint", self.base_url))
            .header("locale", "zh")
            .json(&json!({"AppID": self.app_id, "AppSecret": self.app_secret}))
            .send()
            .await
            .map_err(|e| ConnectError::Retryable(format!("endpoint request: {e}")))?;
        if !response.status().is_success() {
            return Err(ConnectError::Retryable(format!("endpoint answered HTTP {}", response.status())));
        }
        let body: Value =
            response.json().await.map_err(|e| ConnectError::Retryable(format!("endpoint response: {e}")))?;
        let code = body.get("code").and_then(Value::as_i64).unwrap_or(-1);
        let msg = body.get("msg").and_then(Value::as_str).unwrap_or_default();
        match code {
            0 => {}
            // System busy, internal error: the server's trouble.
            1 | 1000040343 => return Err(ConnectError::Retryable(format!("endpoint code {code}: {msg}"))),
            1000040350 => return Err(ConnectError::Fatal(format!("connection limit exceeded (code {code}): {msg}"))),
            _ => return Err(ConnectError::Fatal(format!("endpoint refused the app (code {code}): {msg}"))),
        }
        if let Some(raw) = body.pointer("/data/ClientConfig")
            && let Ok(raw) = serde_json::from_value::<RawClientConfig>(raw.clone())
        {
            config.update(&raw);
        }
        let url = body
            .pointer("/data/URL")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ConnectError::Retryable("endpoint response has no URL".into()))?
            .to_owned();
        let service = query_param(&url, "service_id").and_then(|s| s.parse().ok()).unwrap_or(0);
        let handshake = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .map_err(|_| ConnectError::Retryable("handshake timed out".into()))?;
        match handshake {
            Ok((socket, _)) => Ok((socket, service)),
            Err(tungstenite::Error::Http(response)) => Err(classify_handshake(&response)),
            // The URL carries short-lived credentials: never log it.
            Err(e) => Err(ConnectError::Retryable(format!("handshake: {e}"))),
        }
    }

    async fn session(
        self: &Arc<Self>,
        socket: Socket,
        service: i32,
        config: &mut ClientConfig,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let (mut sink, mut stream) = socket.split();
        let (ack_tx, mut ack_rx) = mpsc::channel::<Frame>(MAX_IN_FLIGHT);
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut reassembly = Reassembly::new(Duration::from_secs(10));
        let mut sequence = Sequence::default();
        let mut ping = tokio::time::interval(config.ping_interval);
        // After a stall, ping once and resume the rhythm rather than sending a volley.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_inbound = Instant::now();
        loop {
            let dead_at = last_inbound + config.watchdog();
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = sink.close().await;
                    return SessionEnd::Shutdown;
                }
                _ = ping.tick() => {
                    if let Err(e) = sink.send(Message::Binary(Frame::ping(service).to_bytes().into())).await {
                        return SessionEnd::Lost(format!("sending ping: {e}"));
                    }
                }
                () = tokio::time::sleep_until(dead_at) => {
                    return SessionEnd::Lost(format!("no frame for {:?}: the socket is half-open", config.watchdog()));
                }
                Some(ack) = ack_rx.recv() => {
                    if let Err(e) = sink.send(Message::Binary(ack.to_bytes().into())).await {
                        return SessionEnd::Lost(format!("sending ACK: {e}"));
                    }
                }
                message = stream.next() => {
                    last_inbound = Instant::now();
                    let bytes = match message {
                        Some(Ok(Message::Binary(bytes))) => bytes,
                        Some(Ok(Message::Text(text))) => {
                            tracing::debug!(len = text.len(), "feishu sent a text message; ignored");
                            continue;
                        }
                        Some(Ok(Message::Close(_))) | None => return SessionEnd::Lost("closed by the server".into()),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return SessionEnd::Lost(format!("reading: {e}")),
                    };
                    let frame = match Frame::from_bytes(&bytes) {
                        Ok(frame) => frame,
                        Err(e) => {
                            tracing::warn!(error = %e, len = bytes.len(), "undecodable frame skipped");
                            continue;
                        }
                    };
                    match frame.method {
                        METHOD_CONTROL => {
                            if frame.header("type") == Some("pong")
                                && let Some(raw) = frame.payload.as_deref().filter(|p| !p.is_empty()).and_then(|p| serde_json::from_slice::<RawClientConfig>(p).ok()) {
                                    let before = config.ping_interval;
                                    config.update(&raw);
                                    if config.ping_interval != before {
                                        ping = tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
                                        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                                    }
                                }
                        }
                        METHOD_DATA => self.on_data(frame, &mut reassembly, &ack_tx, &in_flight, &mut sequence).await,
                        other => tracing::warn!(method = other, "frame of unknown method skipped"),
                    }
                }
            }
        }
    }

    /// Reassembles a data frame and, once whole, persists and ACKs it in a task.
    async fn on_data(
        self: &Arc<Self>,
        frame: Frame,
        reassembly: &mut Reassembly,
        acks: &mpsc::Sender<Frame>,
        in_flight: &Arc<Semaphore>,
        sequence: &mut Sequence,
    ) {
        match frame.header("type") {
            // `card` frames carry the same payload as events when a callback
            // configuration was not republished; answering them avoids failed clicks.
            Some("event" | "card") => {}
            other => {
                tracing::warn!(kind = ?other, "data frame of unknown type skipped");
                return;
            }
        }
        let sum = frame.header("sum").and_then(|s| s.parse().ok()).unwrap_or(1);
        let seq = frame.header("seq").and_then(|s| s.parse().ok()).unwrap_or(0);
        let Some(message_id) = frame.header("message_id").map(str::to_owned).or_else(|| (sum == 1).then(String::new))
        else {
            tracing::warn!("fragment without message_id skipped");
            return;
        };
        let payload = frame.payload.clone().unwrap_or_default();
        let whole = match reassembly.add(&message_id, sum, seq, payload) {
            Ok(Some(whole)) => whole,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, message_id, "bad fragment skipped");
                return;
            }
        };
        let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
        let started = Instant::now();
        // Parsed and handed to the journal here, in arrival order; only the
        // wait for the commit and the ACK run concurrently.
        let accepted = self.accept(&whole, sequence).await;
        let acks = acks.clone();
        tokio::spawn(async move {
            let response = match accepted {
                Accepted::Answered(response) => response,
                Accepted::Submitted { admission, click } => match admission.await {
                    // A click's response travels base64-encoded in the ACK's `data`.
                    Ok(_) => match click {
                        Some(body) => {
                            json!({"code": 200, "data": base64::engine::general_purpose::STANDARD.encode(body.to_string())})
                        }
                        None => json!({"code": 200}),
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "feishu event not accepted; asking for redelivery");
                        json!({"code": 500})
                    }
                },
            };
            let ack = frame.ack(started.elapsed().as_millis() as u64, response.to_string().into_bytes());
            // The session may have ended; Feishu then redelivers, and the inbox dedups.
            let _ = acks.send(ack).await;
            drop(permit);
        });
    }

    /// Parses one event payload and starts persisting it.
    async fn accept(&self, payload: &[u8], sequence: &mut Sequence) -> Accepted {
        let now = self.clock.now_ms();
        self.channels.event_seen(CHANNEL, now);
        let text = String::from_utf8_lossy(payload);
        let parsed = match event::parse(&text, &self.bot, now) {
            Ok(parsed) => parsed,
            Err(e) => {
                // Acknowledged anyway: a malformed payload would be malformed again on redelivery.
                tracing::warn!(error = %e, "undecodable event payload skipped");
                return Accepted::Answered(json!({"code": 200}));
            }
        };
        let Inbound::Event(event) = parsed.inbound else {
            tracing::debug!(?parsed.inbound, "long-connection payload ignored");
            return Accepted::Answered(json!({"code": 200}));
        };
        let click = super::click_response(&self.catalog, &self.locales, &event);
        let admission = Box::pin(self.inbox.submit_in_order(*event, sequence).await);
        Accepted::Submitted { admission, click }
    }
}

/// What became of a data frame's payload: answered at once, or on its way into the inbox.
enum Accepted {
    Answered(Value),
    Submitted {
        admission: std::pin::Pin<Box<dyn Future<Output = Result<Admission, InboxError>> + Send>>,
        click: Option<Value>,
    },
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Handshake refusals carry their reason in `handshake-*` response headers.
fn classify_handshake(response: &tungstenite::http::Response<Option<Vec<u8>>>) -> ConnectError {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let message = header("handshake-msg").unwrap_or_default();
    let status = header("handshake-status").and_then(|s| s.parse::<u16>().ok());
    let auth_code = header("handshake-autherrcode");
    match (status, auth_code.as_deref()) {
        (Some(514), Some("1000040350")) => {
            ConnectError::Fatal(format!("connection limit exceeded (1000040350): {message}"))
        }
        (Some(514), _) => ConnectError::Retryable(format!("handshake auth failed (514): {message}")),
        (Some(403), _) => ConnectError::Fatal(format!("the app is forbidden (403): {message}")),
        (Some(other), _) => ConnectError::Retryable(format!("handshake refused ({other}): {message}")),
        (None, _) if response.status() == 403 => ConnectError::Fatal(format!("handshake refused: HTTP 403 {message}")),
        (None, _) => ConnectError::Retryable(format!("handshake refused: HTTP {}", response.status())),
    }
}

/// The server's interval for its reconnect count, then doubling up to ten minutes; never giving up.
/// Before the server has said anything (it was down at startup), back off from one second
/// up to the default interval instead of waiting the full default at once.
fn retry_delay(config: &ClientConfig, failures: i64) -> Duration {
    if !config.from_server {
        let exp = (failures - 1).clamp(0, 16) as u32;
        return Duration::from_secs(1).saturating_mul(1 << exp).min(config.reconnect_interval).max(MIN_RETRY);
    }
    let base = config.reconnect_interval.max(MIN_RETRY);
    if config.reconnect_count < 0 || failures <= config.reconnect_count {
        return base;
    }
    let over = (failures - config.reconnect_count).min(16) as u32;
    base.saturating_mul(1 << over).min(MAX_RETRY)
}

fn jitter(nonce: Duration) -> Duration {
    if nonce.is_zero() {
        return MIN_RETRY;
    }
    let ms = rand::rng().random_range(0..nonce.as_millis().max(1) as u64);
    Duration::from_millis(ms).max(MIN_RETRY)
}

fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_follow_the_server_then_back_off() {
        let config = ClientConfig {
            ping_interval: Duration::from_secs(120),
            reconnect_interval: Duration::from_secs(2),
            reconnect_nonce: Duration::from_secs(30),
            reconnect_count: 3,
            from_server: true,
        };
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(&config, n).as_secs()).collect();
        assert_eq!(delays, [2, 2, 2, 4, 8, 16, 32]);
        assert_eq!(retry_delay(&config, 100), MAX_RETRY);
        let unlimited = ClientConfig { reconnect_count: -1, ..config };
        assert_eq!(retry_delay(&unlimited, 100), Duration::from_secs(2));
        let zero = ClientConfig { reconnect_interval: Duration::ZERO, ..unlimited };
        assert_eq!(retry_delay(&zero, 1), MIN_RETRY, "never a hot loop");
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(30)) < Duration::from_secs(30));
        }
        let startup: Vec<u64> = (1..=9).map(|n| retry_delay(&ClientConfig::default(), n).as_secs()).collect();
        assert_eq!(startup, [1, 2, 4, 8, 16, 32, 64, 120, 120], "before the server's settings arrive");
    }

    #[test]
    fn config_updates_from_pongs() {
        let mut config = ClientConfig::default();
        let raw: RawClientConfig =
            serde_json::from_str(r#"{"PingInterval":5,"ReconnectCount":-1,"ReconnectInterval":1,"ReconnectNonce":0}"#)
                .unwrap();
        config.update(&raw);
        assert_eq!(config.ping_interval, Duration::from_secs(5));
        assert_eq!(config.reconnect_nonce, Duration::ZERO);
        assert_eq!(config.watchdog(), Duration::from_secs(10));
    }

    #[test]
    fn handshake_refusals_are_classified() {
        let refuse = |headers: &[(&str, &str)], status: u16| {
            let mut builder = tungstenite::http::Response::builder().status(status);
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            classify_handshake(&builder.body(None).unwrap())
        };
        assert!(
            matches!(refuse(&[("handshake-status", "514"), ("handshake-autherrcode", "1000040350")], 400), ConnectError::Fatal(m) if m.contains("connection limit"))
        );
        assert!(matches!(refuse(&[("Handshake-Status", "514")], 400), ConnectError::Retryable(_)));
        assert!(matches!(refuse(&[("handshake-status", "403")], 400), ConnectError::Fatal(_)));
        assert!(matches!(refuse(&[("handshake-status", "500")], 400), ConnectError::Retryable(_)));
        assert!(matches!(refuse(&[], 503), ConnectError::Retryable(_)));
    }

    #[test]
    fn service_id_from_the_url() {
        let url = "wss://msg-frontier.feishu.cn/ws/v2?fpid=1&device_id=d9&service_id=33&ticket=t";
        assert_eq!(query_param(url, "service_id"), Some("33"));
        assert_eq!(query_param(url, "device_id"), Some("d9"));
        assert_eq!(query_param(url, "missing"), None);
    }
}
