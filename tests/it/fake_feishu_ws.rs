//! The fake Feishu long-connection side (shared/ref/feishu.md §1): endpoint
//! discovery, the WebSocket with protobuf frames, pongs with ClientConfig,
//! ACK recording, and knobs to fragment, reorder, redeliver, drop the socket,
//! go silent, refuse the handshake or the endpoint, and send garbage.
//! The frame types are defined here from the reference's field table, not
//! shared with the bot, so a mistake on one side cannot hide on the other.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

#[derive(Clone, PartialEq, prost::Message)]
pub struct PbHeader {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PbFrame {
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<PbHeader>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
}

impl PbFrame {
    fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.key == key).map(|h| h.value.as_str())
    }
}

/// An ACK the bot sent back for a data frame.
#[derive(Debug, Clone)]
pub struct Ack {
    pub message_id: String,
    pub code: i64,
    /// The decoded `data` (base64 JSON), for card callbacks.
    pub data: Option<Value>,
    pub biz_rt: Option<String>,
    /// When the fake read it; the load driver (benches/feishu.rs) reports push → ACK.
    #[allow(dead_code)]
    pub at: std::time::Instant,
}

enum Command {
    Send(Vec<u8>),
    Drop,
    Silence,
}

struct Conn {
    tx: mpsc::UnboundedSender<Command>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
pub struct WsState {
    /// `ClientConfig` in endpoint responses and pongs.
    pub client_config: Mutex<Value>,
    /// Endpoint `code` to answer with (0 = success).
    pub endpoint_code: AtomicI64,
    /// `(handshake-status, handshake-autherrcode)` to refuse upgrades with.
    pub refuse_handshake: Mutex<Option<(u16, Option<&'static str>)>>,
    handshakes: AtomicUsize,
    endpoint_calls: AtomicUsize,
    conns: Mutex<Vec<Conn>>,
    acks: Mutex<Vec<Ack>>,
    seq: AtomicU64,
    ws_addr: Mutex<String>,
}

impl WsState {
    pub fn new() -> Arc<Self> {
        let state = Arc::new(WsState::default());
        *state.client_config.lock().unwrap() =
            json!({"PingInterval": 1, "ReconnectCount": -1, "ReconnectInterval": 0, "ReconnectNonce": 0});
        state
    }

    /// Starts the WebSocket listener; the endpoint route hands out its URL.
    pub async fn listen(self: &Arc<Self>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *self.ws_addr.lock().unwrap() = listener.local_addr().unwrap().to_string();
        let state = self.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(state.clone().serve(tcp));
            }
        });
    }

    /// `POST /callback/ws/endpoint`.
    pub fn endpoint(&self, body: &Value) -> Value {
        self.endpoint_calls.fetch_add(1, Ordering::SeqCst);
        if body["AppID"] != super::fake_feishu::APP_ID || body["AppSecret"] != super::fake_feishu::APP_SECRET {
            return json!({"code": 10003, "msg": "invalid app credentials"});
        }
        let code = self.endpoint_code.load(Ordering::SeqCst);
        if code != 0 {
            return json!({"code": code, "msg": "refused by the fake"});
        }
        let n = self.endpoint_calls.load(Ordering::SeqCst);
        let url = format!(
            "ws://{}/ws/v2?fpid=1&device_id=dev{n}&access_key=k&service_id=7&ticket=tk{n}",
            self.ws_addr.lock().unwrap()
        );
        json!({"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": *self.client_config.lock().unwrap()}})
    }

    async fn serve(self: Arc<Self>, tcp: tokio::net::TcpStream) {
        self.handshakes.fetch_add(1, Ordering::SeqCst);
        let refusal = *self.refuse_handshake.lock().unwrap();
        // The result type is tungstenite's handshake `Callback` signature; it cannot be boxed.
        #[allow(clippy::result_large_err)]
        let callback = move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            if let Some((status, auth)) = refusal {
                let mut refused = tokio_tungstenite::tungstenite::http::Response::builder()
                    .status(400)
                    .header("handshake-status", status.to_string())
                    .header("handshake-msg", "refused by the fake");
                if let Some(code) = auth {
                    refused = refused.header("handshake-autherrcode", code);
                }
                return Err(refused.body(None).unwrap());
            }
            assert!(request.uri().query().unwrap_or_default().contains("ticket="), "the bot uses the endpoint's URL");
            Ok(response)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        self.conns.lock().unwrap().push(Conn { tx, alive: alive.clone() });
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Send(bytes)) => {
                        if ws.send(Message::Binary(bytes.into())).await.is_err() {
                            break;
                        }
                    }
                    Some(Command::Silence) => {
                        // Half-open: keep the socket, never read or write again.
                        while let Some(command) = rx.recv().await {
                            if matches!(command, Command::Drop) {
                                break;
                            }
                        }
                        break;
                    }
                    Some(Command::Drop) | None => break,
                },
                message = ws.next() => match message {
                    Some(Ok(Message::Binary(bytes))) => self.on_frame(&bytes, &mut ws).await,
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
        alive.store(false, Ordering::SeqCst);
    }

    async fn on_frame(&self, bytes: &[u8], ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
        let frame = PbFrame::decode(bytes).expect("the bot sends valid frames");
        match (frame.method, frame.header("type")) {
            (0, Some("ping")) => {
                assert_eq!(frame.service, 7, "pings carry the service_id from the URL");
                let pong = PbFrame {
                    seq_id: 0,
                    log_id: 0,
                    service: 7,
                    method: 0,
                    headers: vec![PbHeader { key: "type".into(), value: "pong".into() }],
                    payload: Some(self.client_config.lock().unwrap().to_string().into_bytes()),
                };
                let _ = ws.send(Message::Binary(pong.encode_to_vec().into())).await;
            }
            (1, _) => {
                let payload: Value =
                    serde_json::from_slice(frame.payload.as_deref().unwrap_or_default()).expect("ACK payload is JSON");
                let data = payload["data"].as_str().map(|d| {
                    use base64::Engine;
                    let raw = base64::engine::general_purpose::STANDARD.decode(d).expect("ACK data is base64");
                    serde_json::from_slice(&raw).expect("ACK data is base64 JSON")
                });
                self.acks.lock().unwrap().push(Ack {
                    message_id: frame.header("message_id").unwrap_or_default().to_owned(),
                    code: payload["code"].as_i64().unwrap_or(-1),
                    data,
                    biz_rt: frame.header("biz_rt").map(str::to_owned),
                    at: std::time::Instant::now(),
                });
            }
            other => panic!("unexpected frame from the bot: {other:?}"),
        }
    }

    fn live_conn(&self) -> mpsc::UnboundedSender<Command> {
        let conns = self.conns.lock().unwrap();
        conns.iter().rev().find(|c| c.alive.load(Ordering::SeqCst)).map(|c| c.tx.clone()).expect("a live connection")
    }

    /// Pushes `payload` (one event frame) through the `pick`th live connection,
    /// counted modulo their number: Feishu gives each event to one of an app's
    /// connections, whichever process holds it.
    pub fn push_via(&self, pick: usize, message_id: &str, payload: &str) {
        let conn = {
            let conns = self.conns.lock().unwrap();
            let live: Vec<_> = conns.iter().filter(|c| c.alive.load(Ordering::SeqCst)).collect();
            assert!(!live.is_empty(), "a live connection");
            live[pick % live.len()].tx.clone()
        };
        self.push_on(&conn, message_id, payload, 1, false, "event");
    }

    /// Pushes `payload` as `fragments` data frames (reversed when `reverse`).
    pub fn push(&self, message_id: &str, payload: &str, fragments: usize, reverse: bool, kind: &str) {
        self.push_on(&self.live_conn(), message_id, payload, fragments, reverse, kind);
    }

    fn push_on(
        &self,
        conn: &mpsc::UnboundedSender<Command>,
        message_id: &str,
        payload: &str,
        fragments: usize,
        reverse: bool,
        kind: &str,
    ) {
        let bytes = payload.as_bytes();
        let size = bytes.len().div_ceil(fragments);
        let mut frames: Vec<Vec<u8>> = bytes
            .chunks(size)
            .enumerate()
            .map(|(seq, chunk)| {
                let header = |k: &str, v: String| PbHeader { key: k.into(), value: v };
                PbFrame {
                    seq_id: self.seq.fetch_add(1, Ordering::SeqCst) + 1,
                    log_id: 42,
                    service: 7,
                    method: 1,
                    headers: vec![
                        header("type", kind.into()),
                        header("message_id", message_id.into()),
                        header("sum", fragments.to_string()),
                        header("seq", seq.to_string()),
                        header("trace_id", format!("trace-{message_id}")),
                    ],
                    payload: Some(chunk.to_vec()),
                }
                .encode_to_vec()
            })
            .collect();
        if reverse {
            frames.reverse();
        }
        for frame in frames {
            conn.send(Command::Send(frame)).unwrap();
        }
    }

    pub fn push_raw(&self, bytes: Vec<u8>) {
        self.live_conn().send(Command::Send(bytes)).unwrap();
    }

    pub fn drop_socket(&self) {
        self.live_conn().send(Command::Drop).unwrap();
    }

    pub fn go_silent(&self) {
        self.live_conn().send(Command::Silence).unwrap();
    }

    pub fn live(&self) -> usize {
        self.conns.lock().unwrap().iter().filter(|c| c.alive.load(Ordering::SeqCst)).count()
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Every ACK so far, for the load driver (benches/feishu.rs).
    #[allow(dead_code)]
    pub fn all_acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    pub fn acks(&self, message_id: &str) -> Vec<Ack> {
        self.acks.lock().unwrap().iter().filter(|a| a.message_id == message_id).cloned().collect()
    }
}
