//! Ordered queues per key (a chat) that run concurrently across keys.
//!
//! Each key gets a bounded queue and a task, created on first use; the task
//! exits after its queue has been empty for `linger`. A sender registers
//! itself on the lane under the map lock, then waits for room in the queue
//! without it (a full lane, say a rate-limited chat, never holds up other
//! keys), behind earlier senders to the same key (a fair per-key lock keeps
//! their order). A lane only removes itself under the map lock when its queue
//! is empty and no sender is registered, so an item can never land in a lane
//! that is leaving.

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
    map: Mutex<HashMap<K, Lane<T>>>,
    capacity: usize,
    linger: Duration,
}

struct Lane<T> {
    tx: mpsc::Sender<T>,
    /// Held by a sender while it waits for room, so senders queue in order.
    /// Each sender keeps a clone until its item is queued: more than one
    /// reference means a sender is on its way.
    order: Arc<Mutex<()>>,
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
        let mut item = item;
        loop {
            let (tx, order) = {
                let mut map = self.inner.map.lock().await;
                let lane = map.entry(key.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(self.inner.capacity);
                    tokio::spawn(start(LaneRx { rx, key: key.clone(), inner: self.inner.clone() }));
                    Lane { tx, order: Arc::new(Mutex::new(())) }
                });
                (lane.tx.clone(), lane.order.clone())
            };
            let sent = {
                let _turn = order.lock().await;
                tx.send(item).await
            };
            drop(order);
            match sent {
                Ok(()) => return,
                // The lane task ended without deregistering (it panicked): replace it.
                Err(mpsc::error::SendError(back)) => {
                    tracing::error!("a lane task ended unexpectedly; starting a new one");
                    let mut map = self.inner.map.lock().await;
                    if map.get(&key).is_some_and(|lane| lane.tx.same_channel(&tx)) {
                        map.remove(&key);
                    }
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
                    let idle = map.get(&self.key).is_none_or(|lane| Arc::strong_count(&lane.order) == 1);
                    if idle && self.rx.is_empty() {
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

    #[tokio::test(start_paused = true)]
    async fn a_full_lane_does_not_hold_up_other_keys() {
        let lanes: Arc<Lanes<u32, u32>> = Arc::new(Lanes::new(2, Duration::from_secs(1)));
        let (release, released) = tokio::sync::watch::channel(false);
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let start = {
            let seen = seen.clone();
            move |mut rx: LaneRx<u32, u32>| {
                let (seen, mut released) = (seen.clone(), released.clone());
                async move {
                    while let Some(item) = rx.recv().await {
                        // Key 0 is stuck (a rate-limited chat) until released.
                        if item < 100 {
                            released.wait_for(|r| *r).await.unwrap();
                        }
                        seen.lock().unwrap().push(item);
                    }
                }
            }
        };
        // Key 0: one item in progress, two queued, and two senders waiting for room, in order.
        let mut waiting = Vec::new();
        for i in 0..5 {
            let (lanes, start) = (lanes.clone(), start.clone());
            waiting.push(tokio::spawn(async move { lanes.send(0, i, start).await }));
            tokio::task::yield_now().await;
        }
        // Key 1 goes through meanwhile.
        tokio::time::timeout(Duration::from_secs(5), lanes.send(1, 100, start.clone()))
            .await
            .expect("key 1 is not blocked");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !seen.lock().unwrap().contains(&100) {
            assert!(tokio::time::Instant::now() < deadline, "key 1's item was handled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release.send(true).unwrap();
        for w in waiting {
            w.await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !lanes.inner.map.lock().await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "lanes never went idle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let of_key0: Vec<u32> = seen.lock().unwrap().iter().copied().filter(|i| *i < 100).collect();
        assert_eq!(of_key0, [0, 1, 2, 3, 4], "key 0 kept its order");
    }
}
