//! Long polling without duplicates or losses. Telegram forgets an update
//! when a getUpdates call asks for a later offset, so the loop asks for
//! `last + 1` only after every update of the previous batch is in the inbox,
//! and saves that offset in the store: a restart (or a crash) resumes where
//! the inbox ends, and anything fetched twice is recognized by its event id.
//!
//! A 409 (another poller, or a webhook is set) puts the channel in the
//! `conflict` state and backs off; other errors back off exponentially to a
//! minute; nothing here ever spins.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use teloxide::payloads::setters::*;
use teloxide::requests::Requester;
use teloxide::types::Update;
use teloxide::{ApiError, Bot, RequestError};
use tokio_util::sync::CancellationToken;

use super::update::{self, Inbound, Me};
use super::{ALLOWED_UPDATES, CHANNEL, OFFSET_CURSOR};
use crate::clock::Clock;
use crate::i18n::{Catalog, LocaleRules};
use crate::pipeline::inbox::{Admission, Inbox};
use crate::platform::{ChannelState, Channels};
use crate::store::Fence;

/// Longest wait between failed polls.
const MAX_BACKOFF: Duration = Duration::from_secs(64);

#[derive(Clone)]
pub struct Poller {
    pub bot: Bot,
    pub me: Me,
    pub inbox: Inbox,
    pub channels: Channels,
    pub clock: Clock,
    pub catalog: Arc<Catalog>,
    pub locales: LocaleRules,
    pub timeout: Duration,
    /// The saved offset, if any.
    pub offset: Option<i64>,
    /// The lease this poller runs under (the one replica that polls); the
    /// offset is saved only while it is held.
    pub fence: Option<Fence>,
}

/// A batch of updates and the offset past all of them (none when empty).
type Polled = (Vec<Update>, Option<i64>);

impl Poller {
    /// Polls until `shutdown`, or until its lease is lost (another replica
    /// polls now). Webhooks and polling exclude each other, so a webhook left
    /// from webhook mode is deleted first (its queue is kept).
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.channels.set_state(CHANNEL, ChannelState::Connecting);
        match self.bot.get_webhook_info().await {
            Ok(info) if info.url.is_some() => match self.bot.delete_webhook().await {
                Ok(_) => tracing::info!("deleted the webhook left from webhook mode; polling now"),
                Err(e) => tracing::warn!(error = %e, "deleting the webhook failed; getUpdates will say why"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "getWebhookInfo failed"),
        }
        let mut failures: u32 = 0;
        // The first poll does not wait: it tells at once whether polling works
        // (readiness) and picks up what queued while we were down.
        let mut wait = Duration::ZERO;
        loop {
            let result = tokio::select! {
                result = self.poll(wait) => result,
                () = shutdown.cancelled() => break,
            };
            let delay = match result {
                Ok(polled) => {
                    if failures > 0 {
                        tracing::info!(failures, "telegram getUpdates works again");
                    }
                    self.channels.set_state(CHANNEL, ChannelState::Connected);
                    failures = 0;
                    wait = self.timeout;
                    // Finish the batch even when shutdown comes meanwhile: the
                    // updates are fetched, and persisting them is quick.
                    if !self.accept(polled).await {
                        return;
                    }
                    continue;
                }
                Err(RequestError::RetryAfter(after)) => {
                    tracing::warn!(retry_after_s = after.seconds(), "getUpdates rate limited");
                    after.duration()
                }
                Err(e) => {
                    failures += 1;
                    let delay = Duration::from_secs(1 << failures.min(6)).min(MAX_BACKOFF);
                    match conflict(&e) {
                        Some(why) => {
                            if failures == 1 {
                                tracing::error!(
                                    error = %e,
                                    retry_in_s = delay.as_secs(),
                                    "telegram getUpdates conflict: {why}; only one poller per bot token can run"
                                );
                            } else {
                                tracing::warn!(
                                    retry_in_s = delay.as_secs(),
                                    failures,
                                    "telegram getUpdates conflict continues"
                                );
                            }
                            self.channels.set_state(CHANNEL, ChannelState::Conflict(why.to_owned()));
                        }
                        None => {
                            tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "telegram getUpdates failed");
                            self.channels.set_state(CHANNEL, ChannelState::Reconnecting);
                        }
                    }
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.channels.set_state(CHANNEL, ChannelState::Closed);
    }

    async fn poll(&self, wait: Duration) -> Result<Polled, RequestError> {
        let mut request = self.bot.get_updates().timeout(wait.as_secs() as u32).allowed_updates(ALLOWED_UPDATES);
        if let Some(offset) = self.offset {
            request = request.offset(offset as i32);
        }
        match request.await {
            Ok(updates) => {
                let next = updates.iter().map(|u| i64::from(u.id.0) + 1).max();
                Ok((updates, next))
            }
            // The batch did not parse as a whole: keep the updates that did,
            // and move past all of them.
            Err(RequestError::InvalidJson { raw, source }) => match salvage(&raw) {
                Some((updates, next)) => {
                    tracing::error!(error = %source, "a getUpdates batch did not parse; skipped what was unreadable");
                    Ok((updates, Some(next)))
                }
                None => Err(RequestError::InvalidJson { raw, source }),
            },
            Err(e) => Err(e),
        }
    }

    /// Persists the batch in order, answers button presses, then moves the
    /// offset past it. False when the lease was lost: this replica must stop
    /// polling (the batch is in the inbox; the new holder fetches it again
    /// and finds duplicates).
    async fn accept(&mut self, (updates, next): Polled) -> bool {
        let Some(next) = next else { return true };
        let now = self.clock.now_ms();
        self.channels.event_seen(CHANNEL, now);
        let mut events = Vec::with_capacity(updates.len());
        let mut queries = Vec::new();
        for u in &updates {
            match update::parse(u, &self.me, now) {
                Inbound::Event(event, query) => {
                    if let Some(query) = query {
                        queries.push((query, event.chat.clone()));
                    }
                    events.push(*event);
                }
                Inbound::Ignored(why) => tracing::debug!(update_id = u.id.0, why, "telegram update ignored"),
                Inbound::Malformed(start) => {
                    tracing::warn!(
                        update_id = u.id.0,
                        update = start,
                        "telegram update of an unknown kind or shape skipped"
                    )
                }
            }
        }
        let results = self.inbox.submit_all(events).await;
        if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
            // Not persisted: keep the offset, so Telegram sends the batch again.
            tracing::error!(error = %e, "telegram updates not accepted; fetching them again");
            return true;
        }
        let accepted = results.iter().filter(|r| matches!(r, Ok(Admission::Accepted))).count();
        tracing::debug!(n = updates.len(), accepted, "telegram updates accepted");
        for (query, chat) in queries {
            super::answer_click(&self.bot, query, &chat, &self.catalog, &self.locales);
        }
        match self.inbox.save_cursor(OFFSET_CURSOR, next, self.fence.clone()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!("the telegram lease was lost; this replica stops polling");
                return false;
            }
            // Telegram still forgets the batch at the next poll; its events are in the inbox.
            Err(e) => tracing::error!(error = %e, "saving the telegram offset failed"),
        }
        self.offset = Some(next);
        true
    }
}

/// Why a getUpdates error is a conflict over who receives updates.
fn conflict(e: &RequestError) -> Option<&'static str> {
    match e {
        RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => Some("another process polls this bot token"),
        RequestError::Api(ApiError::CantGetUpdates) => Some("a webhook is set for this bot token"),
        RequestError::Api(ApiError::Unknown(text)) if text.starts_with("Conflict") => {
            if text.contains("webhook") {
                Some("a webhook is set for this bot token")
            } else {
                Some("another client holds getUpdates for this bot token")
            }
        }
        _ => None,
    }
}

/// Reads a batch update by update, when teloxide could not read it whole
/// (an update without `update_id` fails the batch): the readable updates,
/// and the offset past every id seen.
fn salvage(raw: &str) -> Option<(Vec<Update>, i64)> {
    let body: Value = serde_json::from_str(raw).ok()?;
    let items = body.get("result")?.as_array()?;
    let next = items.iter().filter_map(|u| u.get("update_id")?.as_i64()).max()? + 1;
    let updates = items.iter().filter_map(update::from_value).collect();
    Some((updates, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salvage_skips_what_does_not_parse() {
        let raw = r#"{"ok":true,"result":[
            {"update_id":5,"message":{"message_id":1,"date":1750000000,"chat":{"id":1,"type":"private","first_name":"a"},"text":"/ping"}},
            {"message":{"message_id":2}},
            {"update_id":7,"message":"garbage"}]}"#;
        let (updates, next) = salvage(raw).unwrap();
        assert_eq!(next, 8);
        assert_eq!(updates.iter().map(|u| u.id.0).collect::<Vec<_>>(), [5, 7]);
        assert!(salvage("not json").is_none());
    }

    #[test]
    fn conflicts_are_told_apart() {
        assert!(conflict(&RequestError::Api(ApiError::TerminatedByOtherGetUpdates)).is_some());
        let webhook = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";
        assert_eq!(
            conflict(&RequestError::Api(ApiError::Unknown(webhook.into()))),
            Some("a webhook is set for this bot token")
        );
        assert_eq!(conflict(&RequestError::Api(ApiError::BotBlocked)), None);
    }
}
