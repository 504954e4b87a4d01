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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::card::{self, ButtonRoles};
use super::config::AlertsConfig;
use super::model::{GroupView, Severity};
use super::route;
use crate::card::{CardId, CardSet};
use crate::clock::{Clock, format_ms};
use crate::event::ChatRef;
use crate::i18n::LocaleRules;
use crate::pipeline::dispatch::prepare;
use crate::pipeline::journal::{Journal, JournalError};
use crate::pipeline::outbox::Outbox;
use crate::reply::{CardKey, CardMode, Reply, ReplyBody};
use crate::store::{NewDelivery, Store, StoreError, Write, Written};
use minijinja::{Value, context};

/// How often dirty groups are looked for, besides being told.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// Alert cards live as long as incidents do; their buttons should too.
const TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Tells the notifier groups changed. Never blocks: when the queue is full
/// the groups are still dirty in the store and the next scan finds them.
#[derive(Debug, Clone)]
pub struct NotifyHandle {
    tx: mpsc::Sender<Vec<i64>>,
}

impl NotifyHandle {
    /// The groups of one change arrive together, so the notifier orders them
    /// by urgency before any of them takes a chat's card budget.
    pub fn changed(&self, groups: Vec<i64>) {
        if !groups.is_empty() {
            let _ = self.tx.try_send(groups);
        }
    }
}

pub fn channel() -> (NotifyHandle, mpsc::Receiver<Vec<i64>>) {
    let (tx, rx) = mpsc::channel(1024);
    (NotifyHandle { tx }, rx)
}

pub struct Notifier {
    /// Numbers digest renders, so each gets its own idempotency key.
    pub renders: AtomicU64,
    pub store: Store,
    pub journal: Journal,
    pub outbox: Arc<Outbox>,
    pub cards: Arc<CardSet>,
    pub locales: LocaleRules,
    pub config: Arc<AlertsConfig>,
    pub roles: ButtonRoles,
    /// Puts the runbook for each group on its card.
    pub kb: Arc<crate::kb::service::Knowledge>,
    /// For the Logs button of groups that map to a log service.
    pub logs: Arc<crate::logs::service::Logs>,
    pub clock: Clock,
}

impl Notifier {
    /// Runs until `stop`. Starts with a scan, so groups left dirty by the last run go first.
    pub async fn run(self, mut rx: mpsc::Receiver<Vec<i64>>, stop: CancellationToken) {
        let mut scan = tokio::time::interval(SCAN_EVERY);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut pending = BTreeSet::new();
            tokio::select! {
                Some(ids) = rx.recv() => pending.extend(ids),
                _ = scan.tick() => match self.store.dirty_alert_groups(10_000).await {
                    Ok(ids) => pending.extend(ids),
                    Err(e) => tracing::warn!(error = %e, "looking for alert groups to notify failed"),
                },
                () = stop.cancelled() => return,
            }
            while let Ok(ids) = rx.try_recv() {
                pending.extend(ids);
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
        let mut digests = BTreeSet::new();
        for group in groups {
            digests.extend(self.notify(&group).await?);
        }
        // Each digest touched by this batch is rendered once, after its groups changed.
        for (chat, digest) in digests {
            self.notify_digest(chat, digest).await?;
        }
        Ok(())
    }

    /// Re-renders the storm digest `digest` of `chat`.
    async fn notify_digest(&self, chat: ChatRef, digest: i64) -> Result<(), StoreError> {
        const LISTED: i64 = 40;
        let now = self.clock.now_ms();
        let (groups, total) = self.store.digest_groups(digest, LISTED).await?;
        let listed: Vec<Value> = groups.iter().map(|g| card::values(g, &[], now)).collect();
        let values = context! {
            total => total,
            hidden => (total - groups.len() as i64).max(0),
            firing => groups.iter().filter(|g| g.firing).count(),
            critical => groups.iter().any(|g| g.firing && g.severity == Severity::Critical),
            updated => format_ms(now),
            groups => listed,
        };
        let locale = self.locales.for_chat(&chat);
        let card = match self.cards.render(CardId::ALERT_DIGEST, locale, &values, Vec::new()) {
            Ok(card) => card,
            Err(e) => {
                tracing::error!(digest, error = %e, "rendering an alert digest failed");
                return Ok(());
            }
        };
        let key = CardKey::new(format!("alert-digest:{digest}"));
        let reply =
            Reply { chat, reply_to: None, thread: None, body: ReplyBody::Card { key, card, mode: CardMode::Update } };
        // Renders of one digest differ by time; the outbox sends only the latest waiting one.
        let prefix = format!("alert-digest:{digest}:{now}:{}", self.renders.fetch_add(1, Ordering::Relaxed));
        let (deliveries, tokens) = prepare(&prefix, vec![reply], now, TOKEN_TTL);
        self.enqueue(Write::Enqueue { deliveries: deliveries.clone(), tokens }, deliveries).await
    }

    async fn enqueue(&self, write: Write, deliveries: Vec<NewDelivery>) -> Result<(), StoreError> {
        match self.outbox.commit(write, deliveries).await {
            Ok(()) => Ok(()),
            Err(JournalError::Store(e)) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "the journal stopped; alert cards stay to be queued");
                Ok(())
            }
        }
    }

    /// Queues `group`'s card where it has its own card; returns the digests it is folded into.
    async fn notify(&self, group: &GroupView) -> Result<Vec<(ChatRef, i64)>, StoreError> {
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
        let placements =
            match self.journal.write(Write::AlertPlace { group: group.id, chats, storm: self.config.storm }).await {
                Ok(Written::Placements(placements)) => placements,
                Ok(other) => unreachable!("a placement is answered with placements, not {other:?}"),
                Err(JournalError::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "the journal stopped; alert group stays dirty");
                    return Ok(Vec::new());
                }
            };
        let key = card::key(group.id);
        let mut placements = placements;
        // Copies `/alerts` or `/alert ID` posted in other chats are kept up to date too.
        for chat in self.store.card_post_chats(&key).await? {
            if !placements.iter().any(|(c, _)| *c == chat) {
                placements.push((chat, None));
            }
        }
        let (url, names, text) = card::runbook_query(group, &alerts);
        let runbook = self.kb.runbook(url, names, text).await;
        let mut digests = Vec::new();
        let mut replies = Vec::with_capacity(placements.len());
        for (chat, digest) in placements {
            if let Some(digest) = digest {
                // A copy posted there anyway (`/alert ID`, `/alerts`) is kept up to date too.
                let posted = !self.store.card_posts(&key, &chat).await?.is_empty();
                digests.push((chat.clone(), digest));
                if !posted {
                    continue;
                }
            }
            let locale = self.locales.for_chat(&chat);
            let links = card::Links { runbook: runbook.as_ref(), logs: card::logs_button(&self.logs, group, &alerts) };
            let card = match card::render(&self.cards, locale, group, &alerts, &self.roles, links, now) {
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
        self.enqueue(write, deliveries).await?;
        Ok(digests)
    }
}
