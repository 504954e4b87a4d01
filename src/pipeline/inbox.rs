//! The inbox: the first durable step for every event. An adapter calls
//! [`Inbox::submit`] and acknowledges the platform only after it returns, so
//! an acknowledged event is always on disk; a redelivered event id is
//! recognized and handled once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::journal::{Journal, JournalError};
use crate::event::Event;
use crate::metrics as m;
use crate::status::Stats;
use crate::store::{Write, Written};

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
    pub async fn save_cursor(&self, name: &str, value: i64) -> Result<(), InboxError> {
        self.journal.write(Write::Cursor { name: name.to_owned(), value }).await?;
        Ok(())
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

fn count_in(event: &Event) {
    let platform = event.chat.platform.as_str();
    metrics::counter!(m::EVENTS_IN, "platform" => platform, "kind" => event.kind.label()).increment(1);
}
