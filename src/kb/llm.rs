//! A client for any OpenAI-compatible chat-completions endpoint
//! (`POST {base_url}/chat/completions`), streaming (server-sent events) or
//! not, whichever the server answers with. Every wait is bounded: the first
//! token and each next one by `timeout`, the whole answer by `max_time`.

use std::time::Duration;

use serde::Serialize;

use super::config::LlmConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LlmError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("rate limited{}", .retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unreachable: {0}")]
    Transport(String),
    #[error("unreadable answer: {0}")]
    Garbage(String),
    #[error("an empty answer")]
    Empty,
    /// opsclaw is shutting down.
    #[error("stopped")]
    Stopped,
}

pub struct Llm {
    http: reqwest::Client,
    config: LlmConfig,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    max_tokens: u32,
    temperature: f32,
}

impl Llm {
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("opsclaw/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        Ok(Self { http, config })
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// Asks for a completion of `messages`; `on_text` sees the answer so far
    /// each time it grows. Returns the whole answer.
    pub async fn complete(
        &self,
        messages: &[Message],
        mut on_text: impl FnMut(&str) + Send,
    ) -> Result<String, LlmError> {
        let max_time = self.config.max_time;
        tokio::time::timeout(max_time, self.stream(messages, &mut on_text))
            .await
            .unwrap_or(Err(LlmError::Timeout(max_time)))
    }

    async fn stream(&self, messages: &[Message], on_text: &mut (dyn FnMut(&str) + Send)) -> Result<String, LlmError> {
        let wait = self.config.timeout;
        let body = Request {
            model: &self.config.model,
            messages,
            stream: true,
            max_tokens: self.config.max_tokens,
            temperature: 0.2,
        };
        let mut request = self.http.post(format!("{}/chat/completions", self.config.base_url)).json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let mut response = tokio::time::timeout(wait, request.send())
            .await
            .map_err(|_| LlmError::Timeout(wait))?
            .map_err(|e| LlmError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs);
            return Err(LlmError::RateLimited { retry_after });
        }
        let streaming = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !status.is_success() || !streaming {
            let bytes = tokio::time::timeout(wait, response.bytes())
                .await
                .map_err(|_| LlmError::Timeout(wait))?
                .map_err(|e| LlmError::Transport(e.without_url().to_string()))?;
            let text = String::from_utf8_lossy(&bytes);
            if !status.is_success() {
                return Err(LlmError::Status { status: status.as_u16(), body: text.chars().take(300).collect() });
            }
            let answer = whole_answer(&text)?;
            on_text(&answer);
            return nonempty(answer);
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut answer = String::new();
        loop {
            let chunk = tokio::time::timeout(wait, response.chunk())
                .await
                .map_err(|_| LlmError::Timeout(wait))?
                .map_err(|e| LlmError::Transport(e.without_url().to_string()))?;
            let Some(chunk) = chunk else { return nonempty(answer) };
            pending.extend_from_slice(&chunk);
            let mut grew = false;
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                match event_line(line.trim_end())? {
                    Line::Delta(text) => {
                        answer.push_str(&text);
                        grew |= !text.is_empty();
                    }
                    Line::Done => {
                        if grew {
                            on_text(&answer);
                        }
                        return nonempty(answer);
                    }
                    Line::Other => {}
                }
            }
            if grew {
                on_text(&answer);
            }
        }
    }
}

fn nonempty(answer: String) -> Result<String, LlmError> {
    if answer.trim().is_empty() { Err(LlmError::Empty) } else { Ok(answer) }
}

enum Line {
    Delta(String),
    Done,
    Other,
}

/// One line of a server-sent event stream: `data: {chunk}`, `data: [DONE]`,
/// or anything else (comments, `event:`, blank lines), which carries no text.
fn event_line(line: &str) -> Result<Line, LlmError> {
    let Some(data) = line.strip_prefix("data:") else { return Ok(Line::Other) };
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Line::Done);
    }
    let value: serde_json::Value = serde_json::from_str(data).map_err(|e| LlmError::Garbage(e.to_string()))?;
    if let Some(error) = value.get("error") {
        return Err(LlmError::Status { status: 200, body: error.to_string().chars().take(300).collect() });
    }
    let choice = value.get("choices").and_then(|c| c.get(0));
    Ok(Line::Delta(
        choice
            .and_then(|c| c.get("delta"))
            .and_then(|d| d.get("content"))
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned(),
    ))
}

/// A non-streamed completion: `choices[0].message.content`.
fn whole_answer(body: &str) -> Result<String, LlmError> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| LlmError::Garbage(e.to_string()))?;
    value
        .pointer("/choices/0/message/content")
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .ok_or_else(|| LlmError::Garbage("no choices[0].message.content".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines() {
        let delta = r#"data: {"choices":[{"index":0,"delta":{"content":"磁盘"}}]}"#;
        assert!(matches!(event_line(delta), Ok(Line::Delta(t)) if t == "磁盘"));
        assert!(matches!(event_line("data: [DONE]"), Ok(Line::Done)));
        assert!(matches!(event_line(": keep-alive"), Ok(Line::Other)));
        assert!(
            matches!(event_line(r#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#), Ok(Line::Delta(t)) if t.is_empty())
        );
        assert!(matches!(event_line("data: {nope"), Err(LlmError::Garbage(_))));
        assert!(matches!(event_line(r#"data: {"error":{"message":"overloaded"}}"#), Err(LlmError::Status { .. })));
        assert_eq!(whole_answer(r#"{"choices":[{"message":{"content":"ok [1]"}}]}"#).unwrap(), "ok [1]");
        assert!(whole_answer("<html>").is_err());
    }
}
