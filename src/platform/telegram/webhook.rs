//! Webhook mode: `POST /telegram/webhook`. The secret token registered with
//! setWebhook must come back in `X-Telegram-Bot-Api-Secret-Token` (compared
//! in constant time) or the request is a 401; then the body limit, the
//! update is parsed, persisted to the inbox, and only then answered 200.
//! Telegram retries anything else, so a 500 means "not persisted, send again".

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use teloxide::Bot;
use teloxide::payloads::setters::*;
use teloxide::requests::Requester;
use teloxide::types::Update;

use super::update::{self, Inbound, Me};
use super::{ALLOWED_UPDATES, CHANNEL};
use crate::clock::Clock;
use crate::i18n::{Catalog, LocaleRules};
use crate::pipeline::inbox::Inbox;
use crate::platform::Channels;

pub const PATH: &str = "/telegram/webhook";
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

pub struct WebhookState {
    pub bot: Bot,
    pub me: Me,
    pub secret: String,
    pub inbox: Inbox,
    pub channels: Channels,
    pub clock: Clock,
    pub catalog: Arc<Catalog>,
    pub locales: LocaleRules,
}

/// Registers `url` with Telegram, with the secret and the update kinds we handle.
pub async fn register(bot: &Bot, url: &str, secret: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(url)?;
    bot.set_webhook(url).secret_token(secret.to_owned()).allowed_updates(ALLOWED_UPDATES).await?;
    Ok(())
}

pub fn routes(state: Arc<WebhookState>, max_body_bytes: usize) -> Router {
    Router::new().route(PATH, post(receive)).layer(DefaultBodyLimit::max(max_body_bytes)).with_state(state)
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    tracing::warn!(status = status.as_u16(), reason, "telegram webhook request refused");
    (status, axum::Json(json!({"error": reason}))).into_response()
}

async fn receive(State(state): State<Arc<WebhookState>>, headers: HeaderMap, body: Bytes) -> Response {
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(given, state.secret.as_bytes())) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong secret token");
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("not a Telegram update: {e}")),
    };
    let now = state.clock.now_ms();
    state.channels.event_seen(CHANNEL, now);
    match update::parse(&update, &state.me, now) {
        Inbound::Ignored(why) => {
            tracing::debug!(update_id = update.id.0, why, "telegram update ignored");
            StatusCode::OK.into_response()
        }
        // Telegram would only send it again: take it, say so once.
        Inbound::Malformed(start) => {
            tracing::warn!(
                update_id = update.id.0,
                update = start,
                "telegram update of an unknown kind or shape skipped"
            );
            StatusCode::OK.into_response()
        }
        Inbound::Event(event, query) => {
            let chat = event.chat.clone();
            if let Err(e) = state.inbox.submit(*event).await {
                tracing::error!(error = %e, "telegram update not accepted");
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": "not accepted, retry"})))
                    .into_response();
            }
            if let Some(query) = query {
                super::answer_click(&state.bot, query, &chat, &state.catalog, &state.locales);
            }
            StatusCode::OK.into_response()
        }
    }
}
