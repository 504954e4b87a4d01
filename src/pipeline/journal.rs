//! Group commit for the event path. Every inbox accept, completion and
//! delivery result goes through one writer task that takes whatever writes
//! are waiting (up to a batch) and commits them in one transaction, so a burst
//! of events costs one commit instead of one per write. Callers wait for their
//! own write to be durable.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::store::{Store, StoreError, Write, Written};

const MAX_BATCH: usize = 512;

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<(Write, oneshot::Sender<Result<Written, StoreError>>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the journal writer has stopped")]
    Stopped,
}

impl Journal {
    /// Starts the writer. It stops when every handle is dropped, or when
    /// `shutdown` fires and nothing is waiting.
    pub fn spawn(store: Store, clock: Clock, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let task = tokio::spawn(run(store, clock, rx, shutdown));
        (Self { tx }, task)
    }

    /// Writes and waits until the write is committed.
    pub async fn write(&self, write: Write) -> Result<Written, JournalError> {
        self.enqueue(write).await?.await
    }

    /// Queues `write` behind every write queued before it and returns a
    /// future for its commit, so a caller can keep writes in its own order
    /// while their commits are awaited concurrently.
    pub async fn enqueue(
        &self,
        write: Write,
    ) -> Result<impl Future<Output = Result<Written, JournalError>> + Send + 'static, JournalError> {
        let (done, result) = oneshot::channel();
        self.tx.send((write, done)).await.map_err(|_| JournalError::Stopped)?;
        Ok(async move { Ok(result.await.map_err(|_| JournalError::Stopped)??) })
    }
}

type Pending = (Write, oneshot::Sender<Result<Written, StoreError>>);

async fn run(store: Store, clock: Clock, mut rx: mpsc::Receiver<Pending>, shutdown: CancellationToken) {
    let mut writes: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            item = rx.recv() => item,
            // On shutdown keep taking writes for a moment: in-flight work finishing
            // after the signal must still be recorded.
            () = shutdown.cancelled() => tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.unwrap_or_default(),
        };
        let Some(mut item) = first else { return };
        loop {
            writes.push(item.0);
            waiters.push(item.1);
            if writes.len() == MAX_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(next) => item = next,
                Err(_) => break,
            }
        }
        let results = store.apply(&writes, clock.now_ms()).await;
        metrics::histogram!(crate::metrics::JOURNAL_BATCH).record(writes.len() as f64);
        writes.clear();
        for (done, result) in waiters.drain(..).zip(results) {
            if let Err(e) = &result {
                tracing::error!(error = %e, "journal write failed");
            }
            // The caller may have given up waiting; the write stands either way.
            let _ = done.send(result);
        }
    }
}
