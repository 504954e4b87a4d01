//! Ordered queues per key (a chat) that run concurrently across keys.
//!
//! Each key gets a bounded queue and a task, created on first use; the task
//! exits after its queue has been empty for `linger`. The map lock is held
//! while an item is queued, and a lane only removes itself under that lock
//! when its queue is empty, so an item can never land in a lane that is
//! leaving: per-key order holds without a second queue.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};

pub struct Lanes<K, T> {
    inner: Arc<Inner<K, T>>,
}

struct Inner<K, T> {
    map: Mutex<HashMap<K, mpsc::Sender<T>>>,
    capacity: usize,
    linger: Duration,
}

/// The receiving end a lane task reads from.
pub struct LaneRx<K, T> {
    rx: mpsc::Receiver<T>,
    key: K,
    inner: Arc<Inner<K, T>>,
}

impl<K, T> Lanes<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + 'static,
{
    pub fn new(capacity: usize, linger: Duration) -> Self {
        Self { inner: Arc::new(Inner { map: Mutex::new(HashMap::new()), capacity, linger }) }
    }

    /// Queues `item` on `key`'s lane, starting the lane with `start` if it is
    /// not running. Waits while the lane's queue is full.
    pub async fn send<F, Fut>(&self, key: K, item: T, start: F)
    where
        F: Fn(LaneRx<K, T>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut map = self.inner.map.lock().await;
        let mut item = item;
        loop {
            let tx = match map.get(&key) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::channel(self.inner.capacity);
                    tokio::spawn(start(LaneRx { rx, key: key.clone(), inner: self.inner.clone() }));
                    map.insert(key.clone(), tx.clone());
                    tx
                }
            };
            match tx.send(item).await {
                Ok(()) => return,
                // The lane task ended without deregistering (it panicked): replace it.
                Err(mpsc::error::SendError(back)) => {
                    tracing::error!("a lane task ended unexpectedly; starting a new one");
                    map.remove(&key);
                    item = back;
                }
            }
        }
    }
}

impl<K: Hash + Eq, T> LaneRx<K, T> {
    /// The next item, or `None` once the lane has been idle for `linger` and
    /// has deregistered itself.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            match tokio::time::timeout(self.inner.linger, self.rx.recv()).await {
                Ok(item) => return item,
                Err(_) => {
                    let mut map = self.inner.map.lock().await;
                    if self.rx.is_empty() {
                        map.remove(&self.key);
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[tokio::test(start_paused = true)]
    async fn keeps_order_per_key_and_reaps_idle_lanes() {
        let lanes: Lanes<u32, u32> = Lanes::new(2, Duration::from_secs(1));
        let seen = Arc::new(StdMutex::new(Vec::new()));
        for i in 0..20 {
            let seen = seen.clone();
            lanes
                .send(i % 3, i, move |mut rx| {
                    let seen = seen.clone();
                    async move {
                        while let Some(item) = rx.recv().await {
                            tokio::task::yield_now().await;
                            seen.lock().unwrap().push(item);
                        }
                    }
                })
                .await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !lanes.inner.map.lock().await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "lanes never went idle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 20);
        for key in 0..3 {
            let of_key: Vec<_> = seen.iter().filter(|i| *i % 3 == key).collect();
            assert!(of_key.windows(2).all(|w| w[0] < w[1]), "key {key}: {of_key:?}");
        }
    }
}
