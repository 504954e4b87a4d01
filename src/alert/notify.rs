//! The notifier: the one place alert cards are queued. Whatever changes a
//! group (a webhook, a click, a command) bumps its version and marks it
//! dirty in the same transaction, then tells the notifier. The notifier
//! renders the group's card for every routed chat and, in one transaction,
//! queues the cards and marks that version notified. Because it is the only
//! writer of alert cards and handles one group at a time, a chat receives a
//! group's versions in order; the outbox skips an update that a later one
//! replaces. A crash in between leaves the group dirty, and the periodic
//! scan (and startup) picks it up again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::card::{self, ButtonRoles};
use super::config::AlertsConfig;
use super::model::GroupView;
use super::route;
use crate::card::CardSet;
use crate::clock::Clock;
use crate::i18n::LocaleRules;
use crate::pipeline::dispatch::{prepare, queued};
use crate::pipeline::journal::Journal;
use crate::pipeline::outbox::Outbox;
use crate::reply::{CardMode, Reply, ReplyBody};
use crate::store::{Store, StoreError, Write, Written};

/// How often dirty groups are looked for, besides being told.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// Alert cards live as long as incidents do; their buttons should too.
const TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Tells the notifier a group changed. Never blocks: when the queue is full
/// the group is still dirty in the store and the next scan finds it.
#[derive(Debug, Clone)]
pub struct NotifyHandle {
    tx: mpsc::Sender<i64>,
}

impl NotifyHandle {
    pub fn changed(&self, group: i64) {
        let _ = self.tx.try_send(group);
    }
}

pub fn channel() -> (NotifyHandle, mpsc::Receiver<i64>) {
    let (tx, rx) = mpsc::channel(4096);
    (NotifyHandle { tx }, rx)
}

pub struct Notifier {
    pub store: Store,
    pub journal: Journal,
    pub outbox: Arc<Outbox>,
    pub cards: Arc<CardSet>,
    pub locales: LocaleRules,
    pub config: Arc<AlertsConfig>,
    pub roles: ButtonRoles,
    pub clock: Clock,
}

impl Notifier {
    /// Runs until `stop`. Starts with a scan, so groups left dirty by the last run go first.
    pub async fn run(self, mut rx: mpsc::Receiver<i64>, stop: CancellationToken) {
        let mut scan = tokio::time::interval(SCAN_EVERY);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut pending = BTreeSet::new();
            tokio::select! {
                Some(id) = rx.recv() => { pending.insert(id); }
                _ = scan.tick() => match self.store.dirty_alert_groups(10_000).await {
                    Ok(ids) => pending.extend(ids),
                    Err(e) => tracing::warn!(error = %e, "looking for alert groups to notify failed"),
                },
                () = stop.cancelled() => return,
            }
            while let Ok(id) = rx.try_recv() {
                pending.insert(id);
            }
            if let Err(e) = self.notify_all(pending).await {
                // The groups stay dirty; the next scan retries them.
                tracing::error!(error = %e, "queueing alert cards failed");
            }
        }
    }

    /// Most urgent first: firing before resolved, then by severity.
    async fn notify_all(&self, ids: BTreeSet<i64>) -> Result<(), StoreError> {
        let mut groups = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(group) = self.store.alert_group(id).await? {
                groups.push(group);
            }
        }
        groups.sort_by_key(|g| (std::cmp::Reverse(g.firing), std::cmp::Reverse(g.severity), g.id));
        for group in groups {
            self.notify(&group).await?;
        }
        Ok(())
    }

    async fn notify(&self, group: &GroupView) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let alerts = self.store.group_alerts(group.id, self.config.shown_alerts as i64).await?;
        // Route on what the group's most urgent alert says about itself.
        let mut labels = group.labels.clone();
        if let Some(first) = alerts.first() {
            labels.extend(first.labels.clone());
        }
        let chats = route::chats_for(&self.config.routes, &labels, now);
        if chats.is_empty() {
            tracing::info!(group = group.id, key = %group.key, "no route matches this alert group; stored only");
        }
        let key = card::key(group.id);
        let mut replies = Vec::with_capacity(chats.len());
        for chat in chats {
            let locale = self.locales.for_chat(&chat);
            let card = match card::render(&self.cards, locale, group, &alerts, &self.roles, now) {
                Ok(card) => card,
                Err(e) => {
                    tracing::error!(group = group.id, error = %e, "rendering an alert card failed");
                    continue;
                }
            };
            replies.push(Reply {
                chat,
                reply_to: None,
                thread: None,
                body: ReplyBody::Card { key: key.clone(), card, mode: CardMode::Update },
            });
        }
        let prefix = format!("alert:{}:v{}", group.id, group.version);
        let (deliveries, tokens) = prepare(&prefix, replies, now, TOKEN_TTL);
        let write =
            Write::AlertNotified { group: group.id, version: group.version, deliveries: deliveries.clone(), tokens };
        match self.journal.write(write).await {
            Ok(Written::Enqueued(ids)) => {
                let rows = deliveries.into_iter().zip(ids).filter_map(|(d, id)| Some(queued(d, id?, now))).collect();
                self.outbox.hand_off(rows).await;
                Ok(())
            }
            Ok(other) => {
                tracing::error!(?other, "an alert notification was answered as something else");
                Ok(())
            }
            Err(crate::pipeline::journal::JournalError::Store(e)) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "the journal stopped; alert group stays dirty");
                Ok(())
            }
        }
    }
}
