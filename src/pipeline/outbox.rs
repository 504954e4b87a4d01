//! Delivers persisted replies. Fresh replies are handed over by the
//! dispatcher right after their completion commits ([`Outbox::hand_off`]);
//! at startup every pending row is loaded ([`Outbox::load_pending`]), and a
//! sweep picks up any of this replica's pending rows older than ten seconds
//! that no lane holds, and takes over the rows of replicas that are gone
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so two replicas never claim one row).
//! A claim set makes sure each row is in at most one lane. A lane sends in order, within the
//! platform's per-chat and global rates, retries temporary failures with
//! jittered exponential backoff (persisting the next attempt), honours the
//! platform's retry-after without holding up other chats, and records the
//! result. Rows carry their idempotency key to the platform, so a resend
//! after a crash is recognized where the platform supports it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::dispatch::queued;
use super::journal::{Journal, JournalError};
use super::lanes::{LaneRx, Lanes};
use super::rate::TokenBucket;
use crate::clock::Clock;
use crate::event::{ChatRef, MessageId, PlatformKind};
use crate::metrics as m;
use crate::platform::{ChatPlatform, Content, Outbound, PlatformError};
use crate::reply::{CardKey, CardMode, QueuedBody, QueuedReply};
use crate::status::Stats;
use crate::store::{NewDelivery, Store, StoreError, Write, Written};

/// How often the sweep looks for stranded rows, and how old they must be:
/// fresh rows are handed over directly, so the sweep only catches what a
/// hand-off missed (a failed hand-off, rows written elsewhere). A hand-off
/// claims its rows as soon as their commit is reported, so the age only has to
/// exceed that report's delay, which is far below ten seconds.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_AGE_MS: i64 = 10_000;

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub send_timeout: Duration,
}

impl RetryPolicy {
    fn backoff(&self, attempts: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1 << attempts.min(16)).min(self.max_delay);
        // ±20% jitter so many failing chats do not retry in lockstep.
        exp.mul_f64(rand::rng().random_range(0.8..1.2))
    }
}

pub struct Outbox {
    store: Store,
    journal: Journal,
    platforms: HashMap<PlatformKind, Arc<dyn ChatPlatform>>,
    global_buckets: HashMap<PlatformKind, Arc<Mutex<TokenBucket>>>,
    lanes: Lanes<ChatRef, QueuedReply>,
    /// Rows currently in a lane; neither the sweep nor a hand-off queues them twice.
    claimed: StdMutex<HashSet<i64>>,
    retry: RetryPolicy,
    stats: Arc<Stats>,
    clock: Clock,
    shutdown: CancellationToken,
}

/// The outcome of one delivery attempt.
/// The rate limits one chat's lane waits on, besides the platform-wide one.
struct ChatBuckets {
    chat: TokenBucket,
    group: Option<TokenBucket>,
}

enum Attempt {
    Sent(Option<(CardKey, ChatRef, MessageId)>),
    Failed(PlatformError),
}

impl Outbox {
    #[allow(clippy::too_many_arguments)] // One constructor call in app.rs; a params struct would only rename these.
    pub fn new(
        store: Store,
        journal: Journal,
        platforms: Vec<Arc<dyn ChatPlatform>>,
        retry: RetryPolicy,
        stats: Arc<Stats>,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let global_buckets = platforms
            .iter()
            .filter_map(|p| p.limits().global.map(|g| (p.kind(), Arc::new(Mutex::new(TokenBucket::new(g))))))
            .collect();
        let platforms = platforms.into_iter().map(|p| (p.kind(), p)).collect();
        Arc::new(Self {
            store,
            journal,
            platforms,
            global_buckets,
            lanes: Lanes::new(1024, Duration::from_secs(60)),
            claimed: StdMutex::new(HashSet::new()),
            retry,
            stats,
            clock,
            shutdown,
        })
    }

    /// Queues every pending row no live replica owns, oldest first. Runs once
    /// at startup, before pending events are replayed, so replies keep their order per chat.
    pub async fn load_pending(self: &Arc<Self>) -> Result<(), StoreError> {
        self.sweep(i64::MAX).await
    }

    /// Commits `write`, which queues `deliveries` (replies no event caused:
    /// alert cards, run cards, notices), and hands the new rows over.
    pub async fn commit(self: &Arc<Self>, write: Write, deliveries: Vec<NewDelivery>) -> Result<(), JournalError> {
        let now = self.clock.now_ms();
        match self.journal.write(write).await? {
            Written::Enqueued(ids) => {
                let rows = deliveries.into_iter().zip(ids).filter_map(|(d, id)| Some(queued(d, id?, now))).collect();
                self.hand_off(rows).await;
            }
            other => tracing::error!(?other, "queued replies were answered as something else"),
        }
        Ok(())
    }

    /// Queues replies whose completion just committed. All are claimed at
    /// once, before any wait, so the sweep (which only looks at rows older
    /// than `SWEEP_AGE_MS`) cannot take one while it waits for a full lane.
    pub async fn hand_off(self: &Arc<Self>, rows: Vec<QueuedReply>) {
        let claimed: Vec<QueuedReply> = rows.into_iter().filter(|row| self.claim(row.id)).collect();
        for row in claimed {
            self.queue_claimed(row).await;
        }
    }

    /// Sweeps for stranded rows until shutdown.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => {}
                () = self.shutdown.cancelled() => return,
            }
            if let Err(e) = self.sweep(self.clock.now_ms() - SWEEP_AGE_MS).await {
                tracing::error!(error = %e, "sweeping the outbox failed");
            }
        }
    }

    /// Queues the pending rows of replicas that are gone (taking them over),
    /// then this replica's own rows created at or before `created_by_ms`
    /// that no lane holds.
    async fn sweep(self: &Arc<Self>, created_by_ms: i64) -> Result<(), StoreError> {
        const PAGE: u32 = 256;
        let mut after = 0;
        let mut taken = 0;
        loop {
            let rows = self.store.take_over_outbox(after, PAGE, self.clock.now_ms()).await?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            let full = rows.len() == PAGE as usize;
            taken += rows.len();
            self.queue_unclaimed(rows).await?;
            if !full {
                break;
            }
        }
        if taken > 0 {
            tracing::info!(rows = taken, "took over replies of a replica that is gone");
        }
        let mut after = 0;
        loop {
            let rows = self.store.outbox_pending(after, created_by_ms, PAGE).await?;
            let Some(last) = rows.last() else { return Ok(()) };
            after = last.id;
            self.queue_unclaimed(rows).await?;
        }
    }

    /// Queues the rows of a page that no lane holds and that are still pending.
    async fn queue_unclaimed(self: &Arc<Self>, rows: Vec<QueuedReply>) -> Result<(), StoreError> {
        for row in rows {
            if !self.claim(row.id) {
                continue;
            }
            // The page may be stale: a lane can have delivered this row and
            // released it since the read. A lane releases only after its final
            // write committed, so the store now tells the truth.
            if !self.store.outbox_is_pending(row.id).await? {
                self.release(row.id);
                continue;
            }
            self.queue_claimed(row).await;
        }
        Ok(())
    }

    fn claim(&self, id: i64) -> bool {
        self.claimed.lock().expect("claim set lock is never poisoned").insert(id)
    }

    async fn queue_claimed(self: &Arc<Self>, row: QueuedReply) {
        if !self.platforms.contains_key(&row.chat.platform) {
            let error = format!("platform {} is not enabled", row.chat.platform);
            tracing::warn!(outbox_id = row.id, chat = %row.chat, "{error}; reply dropped");
            self.record(Write::Failed { id: row.id, attempts: row.attempts, error }).await;
            self.release(row.id);
            return;
        }
        let me = self.clone();
        self.lanes.send(row.chat.clone(), row, move |lane| me.clone().lane(lane)).await;
    }

    fn release(&self, id: i64) {
        self.claimed.lock().expect("claim set lock is never poisoned").remove(&id);
    }

    async fn lane(self: Arc<Self>, mut rows: LaneRx<ChatRef, QueuedReply>) {
        let mut buckets: Option<ChatBuckets> = None;
        while let Some(row) = rows.recv().await {
            let platform = self.platforms[&row.chat.platform].clone();
            let bucket = buckets.get_or_insert_with(|| {
                let limits = platform.limits();
                ChatBuckets {
                    chat: TokenBucket::new(limits.per_chat),
                    group: limits.per_group.filter(|_| platform.is_group(&row.chat)).map(TokenBucket::new),
                }
            });
            // The logs below name the chat and row themselves: a span per
            // delivery cost a tenth of the CPU per event at info level.
            let id = row.id;
            self.deliver(platform.as_ref(), bucket, row).await;
            self.release(id);
            self.stats.progress.notify_waiters();
        }
    }

    async fn deliver(&self, platform: &dyn ChatPlatform, bucket: &mut ChatBuckets, row: QueuedReply) {
        let wait_ms = row.not_before_ms - self.clock.now_ms();
        if wait_ms > 0 && !self.pause(Duration::from_millis(wait_ms as u64)).await {
            return;
        }
        if self.superseded(&row).await {
            metrics::counter!(m::CARD_UPDATES_SUPERSEDED).increment(1);
            self.record(Write::Sent { id: row.id, post: None }).await;
            return;
        }
        let mut attempts = row.attempts;
        let mut throttled = 0u32;
        loop {
            bucket.chat.take().await;
            if let Some(group) = &mut bucket.group {
                group.take().await;
            }
            if let Some(global) = self.global_buckets.get(&platform.kind()) {
                global.lock().await.take().await;
            }
            let attempt = match tokio::time::timeout(self.retry.send_timeout, self.attempt(platform, &row)).await {
                Ok(attempt) => attempt,
                Err(_) => Attempt::Failed(PlatformError::Retryable("send timed out".into())),
            };
            let label = platform.kind().as_str();
            let error = match attempt {
                Attempt::Sent(post) => {
                    metrics::counter!(m::SENDS, "platform" => label).increment(1);
                    self.record(Write::Sent { id: row.id, post }).await;
                    return;
                }
                Attempt::Failed(PlatformError::RateLimited { retry_after }) if throttled < 50 => {
                    throttled += 1;
                    metrics::counter!(m::SEND_RATE_LIMITED, "platform" => label).increment(1);
                    tracing::info!(
                        chat = %row.chat,
                        outbox_id = row.id,
                        retry_after_ms = retry_after.as_millis() as u64,
                        "platform rate limit; waiting"
                    );
                    if !self.pause(retry_after).await {
                        return;
                    }
                    continue;
                }
                Attempt::Failed(e) => e,
            };
            attempts += 1;
            let reason = match &error {
                PlatformError::Rejected(_) => "rejected",
                PlatformError::RateLimited { .. } => "rate_limited",
                PlatformError::Retryable(_) => "retryable",
            };
            metrics::counter!(m::SEND_FAILURES, "platform" => label, "reason" => reason).increment(1);
            if !error.is_retryable() || attempts >= self.retry.max_attempts {
                tracing::error!(chat = %row.chat, outbox_id = row.id, error = %error, attempts, "delivery failed for good");
                self.record(Write::Failed { id: row.id, attempts, error: error.to_string() }).await;
                return;
            }
            let delay = self.retry.backoff(attempts);
            tracing::warn!(
                chat = %row.chat,
                outbox_id = row.id,
                error = %error,
                attempts,
                delay_ms = delay.as_millis() as u64,
                "delivery failed; will retry"
            );
            let next_attempt_at = self.clock.now_ms() + delay.as_millis() as i64;
            self.record(Write::Retry { id: row.id, attempts, next_attempt_at, error: error.to_string() }).await;
            if !self.pause(delay).await {
                return;
            }
        }
    }

    /// Whether `row` is a card update that a later update of the same card to
    /// the same chat replaces whole: under a storm of changes a chat gets the
    /// latest card (before any rate-limit token is spent), not every step.
    async fn superseded(&self, row: &QueuedReply) -> bool {
        let QueuedBody::Card { key, mode: CardMode::Update, .. } = &row.body else { return false };
        match self.store.card_update_superseded(row.id, key, &row.chat).await {
            Ok(superseded) => superseded,
            Err(e) => {
                // Sending a card that turns out stale is harmless; the next one fixes it.
                tracing::warn!(outbox_id = row.id, error = %e, "checking for a newer card update failed");
                false
            }
        }
    }

    /// One delivery of `row`: an update patches every earlier post of the card
    /// in that chat, or posts it when there is none.
    async fn attempt(&self, platform: &dyn ChatPlatform, row: &QueuedReply) -> Attempt {
        let outbound = |content| Outbound {
            key: &row.key,
            chat: &row.chat,
            reply_to: row.reply_to.as_ref(),
            thread: row.thread.as_ref(),
            content,
        };
        let result = match &row.body {
            QueuedBody::Text(text) => platform.send(&outbound(Content::Text(text))).await.map(|_| None),
            QueuedBody::Mention { text, people } => {
                platform.send(&outbound(Content::Mention { text, people })).await.map(|_| None)
            }
            QueuedBody::File { name, text, caption } => {
                let content = Content::File { name, data: text.as_bytes(), caption };
                platform.send(&outbound(content)).await.map(|_| None)
            }
            QueuedBody::Card { key, card, mode } => {
                let posts = match mode {
                    CardMode::New => Vec::new(),
                    CardMode::Update => match self.store.card_posts(key, &row.chat).await {
                        Ok(posts) => posts,
                        Err(e) => return Attempt::Failed(PlatformError::Retryable(e.to_string())),
                    },
                };
                if posts.is_empty() {
                    platform
                        .send(&outbound(Content::NewCard(card)))
                        .await
                        .map(|sent| sent.message_id.map(|id| (key.clone(), row.chat.clone(), id)))
                } else {
                    let mut result = Ok(None);
                    for message in &posts {
                        if let Err(e) = platform.send(&outbound(Content::UpdateCard { message, card })).await {
                            result = Err(e);
                            break;
                        }
                    }
                    result
                }
            }
        };
        match result {
            Ok(post) => Attempt::Sent(post),
            Err(e) => Attempt::Failed(e),
        }
    }

    async fn record(&self, write: Write) {
        let id = match &write {
            Write::Sent { id, .. } | Write::Retry { id, .. } | Write::Failed { id, .. } => Some(*id),
            _ => None,
        };
        if let Err(e) = self.journal.write(write).await {
            tracing::error!(outbox_id = ?id, error = %e, "recording a delivery result failed");
        }
    }

    /// Sleeps for `d`; false when shutdown came first.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            send_timeout: Duration::from_secs(30),
        };
        for (attempts, nominal) in [(1, 2), (2, 4), (5, 32), (8, 256), (9, 300), (30, 300)] {
            let nominal = Duration::from_secs(nominal);
            for _ in 0..50 {
                let d = policy.backoff(attempts);
                assert!(d >= nominal.mul_f64(0.8) && d <= nominal.mul_f64(1.2), "attempt {attempts}: {d:?}");
            }
        }
    }
}
