//! A fake OpenAI-compatible chat-completions server on 127.0.0.1:
//! `POST /v1/chat/completions` answers as the real API does, streamed as
//! server-sent events (`data: {chunk}` lines, then `data: [DONE]`) when the
//! request asks for `stream: true`, else one JSON completion. Knobs make it
//! stream piece by piece as the test releases them (a slow model, under the
//! test's control), hang, fail with a status, rate limit with 429 and
//! `Retry-After`, or send garbage. Every request body is recorded.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::served::Served;

#[derive(Debug, Clone)]
pub enum Mode {
    /// The answer in these pieces. `paced`: the first is sent at once, each
    /// further one when the test calls [`FakeLlm::release`].
    Answer {
        pieces: Vec<String>,
        paced: bool,
    },
    /// Never answers.
    Hang,
    Status(u16),
    RateLimited {
        retry_after_secs: u64,
    },
    /// A 200 event stream whose data is not JSON.
    Garbage,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub authorization: Option<String>,
    pub body: Value,
}

struct Shared {
    mode: Mutex<Mode>,
    requests: Mutex<Vec<Request>>,
    /// One permit per piece the test has released.
    released: Semaphore,
}

pub struct FakeLlm {
    served: Served,
    shared: Arc<Shared>,
}

impl FakeLlm {
    pub async fn start(mode: Mode) -> FakeLlm {
        let shared =
            Arc::new(Shared { mode: Mutex::new(mode), requests: Mutex::new(Vec::new()), released: Semaphore::new(0) });
        let app = Router::new().route("/v1/chat/completions", post(completions)).with_state(shared.clone());
        FakeLlm { served: Served::start(app, "fake LLM").await, shared }
    }

    /// The `base_url` to configure: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.served.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Lets a paced answer send its next piece.
    pub fn release(&self) {
        self.shared.released.add_permits(1);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Bytes {
    let event = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    });
    Bytes::from(format!("data: {event}\n\n"))
}

async fn completions(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        let error = json!({ "error": { "message": "invalid JSON body", "type": "invalid_request_error" } });
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    shared.requests.lock().unwrap().push(Request { authorization, body: body.clone() });
    let model = body["model"].as_str().unwrap_or("fake").to_owned();
    let mode = shared.mode.lock().unwrap().clone();
    match mode {
        Mode::Hang => std::future::pending().await,
        Mode::Status(code) => {
            let error = json!({ "error": { "message": "the fake is failing on purpose", "type": "server_error" } });
            (StatusCode::from_u16(code).unwrap(), axum::Json(error)).into_response()
        }
        Mode::RateLimited { retry_after_secs } => {
            let error = json!({ "error": { "message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded" } });
            let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(error)).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, retry_after_secs.to_string().parse().unwrap());
            response
        }
        Mode::Garbage => event_stream(Body::from("data: {this is not json\n\n")),
        Mode::Answer { pieces, paced } if body["stream"] == json!(true) => {
            // (event, whether it waits for a release): the role chunk and the first piece go at once.
            let mut events = vec![(chunk(&model, json!({ "role": "assistant", "content": "" }), None), false)];
            let content = pieces.iter().enumerate().map(|(i, p)| (chunk(&model, json!({ "content": p }), None), paced && i > 0));
            events.extend(content);
            events.push((chunk(&model, json!({}), Some("stop")), false));
            events.push((Bytes::from("data: [DONE]\n\n"), false));
            let stream = futures_util::stream::unfold((events.into_iter(), shared), |(mut rest, shared)| async move {
                let (event, gated) = rest.next()?;
                if gated {
                    shared.released.acquire().await.expect("the semaphore is never closed").forget();
                }
                Some((Ok::<_, Infallible>(event), (rest, shared)))
            });
            event_stream(Body::from_stream(stream))
        }
        Mode::Answer { pieces, .. } => axum::Json(json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": pieces.concat() }, "finish_reason": "stop" }],
        }))
        .into_response(),
    }
}

fn event_stream(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap()
}
