//! HTTP callback mode: `POST /feishu/events`. In order: size limit, JSON,
//! signature (SHA-256 over timestamp ‖ nonce ‖ encrypt key ‖ raw body, before
//! decrypting), replay window, decryption, verification token, then the URL
//! challenge is answered or the event is persisted to the inbox before the
//! 200 goes back. Card clicks are answered with a toast at once; the card is
//! updated through the API after the handler ran. Every refusal is a 4xx with
//! a reason and one log line; nothing else is affected.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::crypto::{self, EncryptKey};
use super::event::{self, BotIdentity, Inbound};
use crate::clock::Clock;
use crate::i18n::{Catalog, LocaleRules};
use crate::pipeline::inbox::Inbox;
use crate::platform::Channels;

pub const CHANNEL: &str = "feishu";

pub struct CallbackState {
    pub inbox: Inbox,
    pub encrypt_key: Option<EncryptKey>,
    pub verification_token: Option<String>,
    pub bot: BotIdentity,
    pub replay_window: Duration,
    pub clock: Clock,
    pub channels: Channels,
    pub catalog: Arc<Catalog>,
    pub locales: LocaleRules,
}

pub fn routes(state: Arc<CallbackState>, max_body_bytes: usize) -> Router {
    Router::new().route("/feishu/events", post(events)).layer(DefaultBodyLimit::max(max_body_bytes)).with_state(state)
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    tracing::warn!(status = status.as_u16(), reason, "feishu callback refused");
    (status, axum::Json(json!({"msg": reason}))).into_response()
}

async fn events(State(state): State<Arc<CallbackState>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Ok(text) = std::str::from_utf8(&body) else { return refuse(StatusCode::BAD_REQUEST, "body is not UTF-8") };
    let Ok(outer) = serde_json::from_str::<Value>(text) else {
        return refuse(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    // Old card callbacks are signed with SHA-1 over the verification token;
    // everything else with SHA-256 over the encrypt key.
    let is_card_v1 = outer.get("encrypt").is_none() && outer.get("schema").is_none() && outer.get("action").is_some();
    let mut signed = false;
    if let (Some(ts), Some(nonce), Some(sig)) =
        (header("x-lark-request-timestamp"), header("x-lark-request-nonce"), header("x-lark-signature"))
    {
        let verdict = match (is_card_v1, &state.encrypt_key, &state.verification_token) {
            (true, _, Some(token)) => Some(crypto::verify_card_v1(token, &ts, &nonce, &body, &sig)),
            (false, Some(key), _) => Some(key.verify(&ts, &nonce, &body, &sig)),
            // Nothing configured to check this signature with; the token check below applies.
            _ => None,
        };
        match verdict {
            Some(false) => return refuse(StatusCode::UNAUTHORIZED, "signature does not match"),
            Some(true) => {
                if let Ok(sent) = ts.trim().parse::<i64>() {
                    // The timestamp is opaque to Feishu's SDKs; when it is Unix seconds we bound its age.
                    let age = (state.clock.now_ms() / 1000 - sent).unsigned_abs();
                    if age > state.replay_window.as_secs() {
                        return refuse(StatusCode::UNAUTHORIZED, "request timestamp is outside the replay window");
                    }
                }
                signed = true;
            }
            None => {}
        }
    }
    let plain = match (outer.get("encrypt").and_then(Value::as_str), &state.encrypt_key) {
        (Some(encrypted), Some(key)) => match key.decrypt(encrypted) {
            Ok(plain) => plain,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        (Some(_), None) => return refuse(StatusCode::BAD_REQUEST, "encrypted body, but no encrypt key is configured"),
        (None, _) => text.to_owned(),
    };
    let parsed = match event::parse(&plain, &state.bot, state.clock.now_ms()) {
        Ok(parsed) => parsed,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let is_challenge = matches!(parsed.inbound, Inbound::Challenge { .. });
    // With an encrypt key every event must be signed; a URL challenge is not (Feishu does not sign it).
    if state.encrypt_key.is_some() && !signed && !is_challenge {
        return refuse(StatusCode::UNAUTHORIZED, "missing signature headers");
    }
    if let Some(expected) = &state.verification_token {
        let token_ok = parsed.token.as_deref().is_some_and(|t| crypto::equal_secret(t, expected));
        // Old card callbacks carry no verification token; their SHA-1 signature covers it.
        if !(token_ok || is_card_v1 && signed) {
            return refuse(StatusCode::UNAUTHORIZED, "verification token does not match");
        }
    }
    match parsed.inbound {
        Inbound::Challenge { challenge } => axum::Json(json!({ "challenge": challenge })).into_response(),
        Inbound::Ignored { what } => {
            tracing::debug!(what, "feishu callback ignored");
            axum::Json(json!({"msg": "ignored"})).into_response()
        }
        Inbound::Event(event) => {
            let click = super::click_response(&state.catalog, &state.locales, &event);
            state.channels.event_seen(CHANNEL, state.clock.now_ms());
            if let Err(e) = state.inbox.submit(*event).await {
                // Not persisted: a 5xx makes Feishu deliver it again.
                tracing::error!(error = %e, "feishu event not accepted");
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"msg": "not accepted, retry"})))
                    .into_response();
            }
            axum::Json(click.unwrap_or_else(|| json!({"msg": "success"}))).into_response()
        }
    }
}
