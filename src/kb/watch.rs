//! Keeps the index current: the roots are watched (inotify on Linux), and a
//! burst of changes (an editor's save, a `git pull`) is followed, once quiet
//! for a moment, by one [`Kb::sync`] off the async runtime. What a watcher
//! reports is only the trigger: `sync` compares the files with what it read
//! before, so renames, deleted directories and missed events all come out right.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Kb;

/// How long the roots must be quiet before the index is updated.
const QUIET: Duration = Duration::from_millis(300);

/// Starts watching `kb`'s directories; the task ends when `stop` fires.
pub fn spawn(kb: Arc<Kb>, stop: CancellationToken) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    let changed = Arc::new(Notify::new());
    let signal = changed.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(e) if e.kind.is_access() => {}
        Ok(_) => signal.notify_one(),
        Err(e) => {
            tracing::warn!(error = %e, "watching the knowledge base failed; re-reading it");
            signal.notify_one();
        }
    })?;
    for path in kb.roots().iter().filter_map(|r| r.path()) {
        watcher.watch(path, RecursiveMode::Recursive)?;
    }
    Ok(tokio::spawn(async move {
        let _watching = watcher;
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = stop.cancelled() => return,
            }
            // Wait until the changes stop coming.
            loop {
                tokio::select! {
                    () = changed.notified() => {}
                    () = tokio::time::sleep(QUIET) => break,
                    () = stop.cancelled() => return,
                }
            }
            let kb = kb.clone();
            match tokio::task::spawn_blocking(move || kb.sync()).await {
                Ok(Ok(stats)) if stats.documents + stats.removed + stats.skipped.len() > 0 => tracing::info!(
                    updated = stats.documents,
                    removed = stats.removed,
                    skipped = stats.skipped.len(),
                    "knowledge base updated"
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "updating the knowledge base failed; the index keeps its last state")
                }
                Err(e) => tracing::error!(error = %e, "updating the knowledge base panicked"),
            }
        }
    }))
}
