//! Live counters of the running bot, shared by the pipeline (which updates
//! them) and `/status`, `/readyz` and the drain on shutdown (which read them).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::{Store, StoreError};

/// Waits for the pipeline to go quiet: what the console does between lines.
#[derive(Debug, Clone)]
pub struct Settle {
    pub stats: std::sync::Arc<Stats>,
    pub store: Store,
    pub deadline: Duration,
}

impl Settle {
    pub async fn wait(&self) {
        match self.stats.drain(&self.store, self.deadline).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("replies still pending after the settle deadline"),
            Err(e) => tracing::warn!(error = %e, "checking the outbox failed"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Events accepted and not yet completed.
    pub in_flight: AtomicI64,
    /// Signalled whenever an event completes or a delivery finishes.
    pub progress: Notify,
    /// Ops runs executing in this process.
    pub runs_active: AtomicI64,
    /// Set once migrations ran and the pipeline is up.
    pub started: AtomicBool,
}

impl Stats {
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no event is in flight, no run executes and the outbox is
    /// empty, or until `deadline` passes. Returns whether it drained.
    pub async fn drain(&self, store: &Store, deadline: Duration) -> Result<bool, StoreError> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.progress.notified();
            if self.in_flight() == 0
                && self.runs_active.load(Ordering::SeqCst) == 0
                && store.outbox_owned_count().await? == 0
            {
                return Ok(true);
            }
            // The timer catches rows that finish without signalling (another replica, a failed write).
            let tick = tokio::time::sleep(Duration::from_millis(200).min(until - tokio::time::Instant::now()));
            tokio::select! {
                () = notified => {}
                () = tick => {}
            }
            if tokio::time::Instant::now() >= until {
                return Ok(false);
            }
        }
    }
}
