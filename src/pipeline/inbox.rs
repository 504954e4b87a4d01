//! The inbox: the first durable step for every event. An adapter calls
//! [`Inbox::submit`] and acknowledges the platform only after it returns, so
//! an acknowledged event is always on disk; a redelivered event id is
//! recognized and handled once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::journal::{Journal, JournalError};
use crate::event::Event;
use crate::metrics as m;
use crate::status::Stats;
use crate::store::{Fence, Write, Written};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New: persisted and queued for handling.
    Accepted,
    /// Seen before (a platform retry): nothing more will happen.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("could not persist the event: {0}")]
    Journal(#[from] JournalError),
    #[error("the bot is shutting down")]
    Closed,
}

#[derive(Debug, Clone)]
pub struct Inbox {
    journal: Journal,
    dispatch: mpsc::Sender<Event>,
    stats: Arc<Stats>,
}

impl Inbox {
    pub fn new(journal: Journal, dispatch: mpsc::Sender<Event>, stats: Arc<Stats>) -> Self {
        Self { journal, dispatch, stats }
    }

    /// Persists `event` and queues it for handling. Returns once it is durable.
    pub async fn submit(&self, event: Event) -> Result<Admission, InboxError> {
        count_in(&event);
        let written = self.journal.write(Write::Accept(event.clone())).await;
        self.admit(event, written).await
    }

    /// Persists `events` together (one group commit for a batch of platform
    /// updates) and queues the new ones in the order given, so a chat's
    /// messages are handled in the order the platform sent them.
    pub async fn submit_all(&self, events: Vec<Event>) -> Vec<Result<Admission, InboxError>> {
        let pending = events.iter().map(|event| {
            count_in(event);
            self.journal.write(Write::Accept(event.clone()))
        });
        let written = futures_util::future::join_all(pending).await;
        let mut results = Vec::with_capacity(events.len());
        for (event, written) in events.into_iter().zip(written) {
            results.push(self.admit(event, written).await);
        }
        results
    }

    /// Starts persisting `event` now, behind every event this `sequence` was
    /// given before, and returns the rest of the submission as a future.
    /// Futures of one sequence may be awaited in separate tasks: their
    /// commits overlap, but each queues its event only after the previous
    /// one did, so a connection's events reach the dispatcher in the order
    /// they arrived.
    pub async fn submit_in_order(
        &self,
        event: Event,
        sequence: &mut Sequence,
    ) -> impl Future<Output = Result<Admission, InboxError>> + Send + 'static {
        count_in(&event);
        let written = self.journal.enqueue(Write::Accept(event.clone())).await;
        let (turn_done, next_turn) = oneshot::channel::<()>();
        let my_turn = sequence.last.replace(next_turn);
        let inbox = self.clone();
        async move {
            let written = match written {
                Ok(commit) => commit.await,
                Err(e) => Err(e),
            };
            // Err means the previous submission was dropped: nothing to wait for.
            if let Some(turn) = my_turn {
                let _ = turn.await;
            }
            let admission = inbox.admit(event, written).await;
            let _ = turn_done.send(());
            admission
        }
    }

    /// Queues `event` once its write says it is new.
    async fn admit(&self, event: Event, written: Result<Written, JournalError>) -> Result<Admission, InboxError> {
        if written? == Written::Duplicate {
            metrics::counter!(m::EVENTS_DUPLICATE, "platform" => event.chat.platform.as_str()).increment(1);
            tracing::debug!(event_id = %event.id, "duplicate event ignored");
            return Ok(Admission::Duplicate);
        }
        self.requeue(event).await?;
        Ok(Admission::Accepted)
    }

    /// Saves a position in a platform's update stream. Adapters call it after
    /// every update before the position is accepted, so a restart resumes
    /// there: nothing is lost, and what is fetched again is a duplicate.
    /// Under `fence` (the lease of the one replica that polls) it is saved
    /// only while that lease is held; false when it was lost.
    pub async fn save_cursor(&self, name: &str, value: i64, fence: Option<Fence>) -> Result<bool, InboxError> {
        let written = self.journal.write(Write::Cursor { name: name.to_owned(), value, fence }).await?;
        Ok(written != Written::Fenced)
    }

    /// Queues an already persisted event (startup replay of pending events).
    pub async fn requeue(&self, event: Event) -> Result<(), InboxError> {
        self.stats.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.dispatch.send(event).await.is_err() {
            self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(InboxError::Closed);
        }
        Ok(())
    }
}

/// The order of one stream of events (one long connection); see [`Inbox::submit_in_order`].
#[derive(Debug, Default)]
pub struct Sequence {
    last: Option<oneshot::Receiver<()>>,
}

fn count_in(event: &Event) {
    let platform = event.chat.platform.as_str();
    metrics::counter!(m::EVENTS_IN, "platform" => platform, "kind" => event.kind.label()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::event::{ChatKind, ChatRef, EventId, EventKind, PlatformKind, Sender, UserId};
    use crate::store::Store;
    use tokio_util::sync::CancellationToken;

    fn event(n: usize) -> Event {
        Event {
            id: EventId::new(PlatformKind::Feishu, &format!("e{n}")),
            chat: ChatRef::new(PlatformKind::Feishu, "oc_1"),
            chat_kind: ChatKind::Direct,
            sender: Sender { id: UserId::new("u"), display_name: "u".into() },
            message_id: None,
            thread: None,
            received_at_ms: 0,
            kind: EventKind::Message { text: format!("/ping {n}"), mentions_bot: false, quoted: None },
        }
    }

    #[tokio::test]
    async fn a_sequence_queues_events_in_submission_order_however_its_futures_are_awaited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        store.migrate().await.unwrap();
        let (journal, _task) = Journal::spawn(store, Clock::new(), CancellationToken::new());
        let (tx, mut rx) = mpsc::channel(64);
        let inbox = Inbox::new(journal, tx, Arc::new(Stats::default()));
        let mut sequence = Sequence::default();
        let mut pending = Vec::new();
        for n in 0..20 {
            pending.push(inbox.submit_in_order(event(n), &mut sequence).await);
        }
        // The last submission is awaited first, each in its own task.
        let tasks: Vec<_> = pending.into_iter().rev().map(tokio::spawn).collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), Admission::Accepted);
        }
        let mut order = Vec::new();
        while let Ok(e) = rx.try_recv() {
            order.push(e.id.to_string());
        }
        let expected: Vec<String> = (0..20).map(|n| event(n).id.to_string()).collect();
        assert_eq!(order, expected);
    }
}
