//! Runs handlers: events of one chat in arrival order, chats concurrently
//! (bounded by a semaphore). Each handled event is completed in one write:
//! its replies and button tokens enter the outbox and the inbox row is marked
//! done together, so a crash either replays the event or keeps its replies,
//! never both and never neither.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::journal::Journal;
use super::lanes::{LaneRx, Lanes};
use super::outbox::Outbox;
use crate::clock::Clock;
use crate::event::{ChatRef, Event};
use crate::handler::Bot;
use crate::reply::{QueuedBody, QueuedReply, Reply, ReplyBody};
use crate::status::Stats;
use crate::store::{NewDelivery, NewToken, Write, Written};

pub struct Dispatcher {
    bot: Arc<Bot>,
    journal: Journal,
    outbox: Arc<Outbox>,
    lanes: Lanes<ChatRef, Event>,
    limit: Arc<Semaphore>,
    stats: Arc<Stats>,
    clock: Clock,
    token_ttl: Duration,
}

impl Dispatcher {
    pub fn new(
        bot: Arc<Bot>,
        journal: Journal,
        outbox: Arc<Outbox>,
        stats: Arc<Stats>,
        clock: Clock,
        max_concurrent: usize,
        token_ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            bot,
            journal,
            outbox,
            lanes: Lanes::new(256, Duration::from_secs(5)),
            limit: Arc::new(Semaphore::new(max_concurrent)),
            stats,
            clock,
            token_ttl,
        })
    }

    /// Takes events until `stop` fires or every [`crate::pipeline::inbox::Inbox`] is dropped.
    /// An event still queued then stays pending in the inbox and is replayed at the next start.
    pub async fn run(self: Arc<Self>, mut events: mpsc::Receiver<Event>, stop: CancellationToken) {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = stop.cancelled() => None,
            };
            let Some(event) = event else { return };
            let me = self.clone();
            self.lanes.send(event.chat.clone(), event, move |lane| me.clone().lane(lane)).await;
        }
    }

    async fn lane(self: Arc<Self>, mut events: LaneRx<ChatRef, Event>) {
        while let Some(event) = events.recv().await {
            let span = tracing::info_span!("event", platform = %event.chat.platform, chat = %event.chat.id, event_id = %event.id);
            self.process(event).instrument(span).await;
        }
    }

    async fn process(&self, event: Event) {
        let _permit = self.limit.acquire().await.expect("the semaphore is never closed");
        let started = tokio::time::Instant::now();
        // The handler runs in its own task so that a panic is contained to this event.
        let bot = self.bot.clone();
        let owned = event.clone();
        let replies = match tokio::spawn(async move { bot.handle(&owned).await }).await {
            Ok(replies) => replies,
            Err(e) => {
                tracing::error!(error = %e, "handler panicked");
                vec![self.bot.internal_error(&event)]
            }
        };
        let now = self.clock.now_ms();
        let (deliveries, tokens) = prepare(&event.id, replies, now, self.token_ttl);
        let write = Write::Complete { event: event.id.clone(), deliveries: deliveries.clone(), tokens };
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            match self.journal.write(write.clone()).await {
                Ok(Written::Enqueued(ids)) => {
                    // Already durable: deliver from memory instead of reading the rows back.
                    let rows =
                        deliveries.into_iter().zip(ids).filter_map(|(d, id)| Some(queued(d, id?, now))).collect();
                    self.outbox.hand_off(rows).await;
                    break;
                }
                Ok(other) => {
                    tracing::error!(?other, "a completion was answered as something else");
                    break;
                }
                Err(e) if attempt == 5 => {
                    // The event stays pending in the inbox and is replayed at the next start.
                    tracing::error!(error = %e, "could not record the event's replies; left pending");
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "recording replies failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "event handled");
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.stats.progress.notify_waiters();
    }
}

/// An outbox row as it was just written, to hand to the outbox without reading it back.
pub fn queued(d: NewDelivery, id: i64, now_ms: i64) -> QueuedReply {
    QueuedReply {
        id,
        key: d.key,
        chat: d.chat,
        reply_to: d.reply_to,
        thread: d.thread,
        body: d.body,
        attempts: 0,
        not_before_ms: now_ms,
    }
}

/// Turns replies into outbox rows with idempotency keys `<prefix>#<n>` (the
/// prefix is the event id, or what else caused the replies), and stores each
/// card button's grant behind a fresh token.
pub fn prepare(
    prefix: &dyn std::fmt::Display,
    replies: Vec<Reply>,
    now_ms: i64,
    token_ttl: Duration,
) -> (Vec<NewDelivery>, Vec<NewToken>) {
    let expires_at_ms = now_ms + token_ttl.as_millis() as i64;
    let mut tokens = Vec::new();
    let deliveries = replies
        .into_iter()
        .enumerate()
        .map(|(idx, reply)| {
            let body = match reply.body {
                ReplyBody::Text(text) => QueuedBody::Text(text),
                ReplyBody::Mention { text, people } => QueuedBody::Mention { text, people },
                ReplyBody::File { name, text, caption } => QueuedBody::File { name, text, caption },
                ReplyBody::Card { key, card, mode } => {
                    let card = card.mint(|token, grant| {
                        tokens.push(NewToken {
                            token,
                            card_key: key.clone(),
                            chat: reply.chat.clone(),
                            grant,
                            expires_at_ms,
                        })
                    });
                    QueuedBody::Card { key, card, mode }
                }
            };
            NewDelivery {
                key: format!("{prefix}#{idx}"),
                chat: reply.chat,
                reply_to: reply.reply_to,
                thread: reply.thread,
                body,
            }
        })
        .collect();
    (deliveries, tokens)
}
