//! This process as one replica among those sharing a database. It
//! heartbeats its row in the store ([`Replica::beat`]); work it left when it
//! stopped heartbeating is taken over by the others. Leases
//! ([`Replica::hold`]) make one replica at a time do what only one may
//! (poll Telegram), with a fencing token for the writes made under them and
//! a bounded hand-over: released at shutdown, expired after a crash.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::ReplicasConfig;
use crate::store::{Fence, Store, StoreError};

pub struct Replica {
    pub store: Store,
    pub config: ReplicasConfig,
    pub clock: Clock,
}

/// A lease this replica holds: `lost` fires when it could not be renewed
/// (taken by another replica, or the database unreachable for too long), or
/// on shutdown; what was done under it must stop then.
pub struct Held {
    pub fence: Fence,
    pub lost: CancellationToken,
    renew: tokio::task::JoinHandle<()>,
}

impl Replica {
    /// Registers this replica in the store.
    pub async fn register(store: Store, config: ReplicasConfig, clock: Clock) -> Result<Self, StoreError> {
        store.register_replica(&config.name, clock.now_ms()).await?;
        tracing::info!(replica = store.replica(), name = %config.name, "replica registered");
        Ok(Self { store, config, clock })
    }

    /// One heartbeat. A replica whose row is gone (unheard of for a day)
    /// registers again.
    pub async fn beat(&self) -> Result<(), StoreError> {
        if !self.store.heartbeat(self.clock.now_ms()).await? {
            tracing::warn!(replica = self.store.replica(), "this replica was forgotten; registering again");
            self.store.register_replica(&self.config.name, self.clock.now_ms()).await?;
        }
        Ok(())
    }

    /// Waits until lease `name` is this replica's, or `None` on `stop`;
    /// `standby` is called when another replica turns out to hold it.
    /// A free lease is tried every heartbeat, so a released one changes hands
    /// within a heartbeat and one whose holder died within the lease time and a heartbeat.
    pub async fn hold(&self, name: &str, stop: &CancellationToken, standby: impl Fn()) -> Option<Held> {
        let ttl = self.config.lease.as_millis() as i64;
        let mut told = false;
        loop {
            match self.store.acquire_lease(name, ttl, self.clock.now_ms()).await {
                Ok(Some(fence)) => {
                    tracing::info!(lease = name, token = fence.token, "lease acquired");
                    let lost = stop.child_token();
                    let renew = tokio::spawn(renew(
                        self.store.clone(),
                        fence.clone(),
                        self.config.clone(),
                        self.clock,
                        lost.clone(),
                    ));
                    return Some(Held { fence, lost, renew });
                }
                Ok(None) if !told => {
                    tracing::info!(lease = name, "another replica holds the lease; standing by");
                    standby();
                    told = true;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(lease = name, error = %e, "trying the lease failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.heartbeat) => {}
                () = stop.cancelled() => return None,
            }
        }
    }
}

impl Held {
    /// Stops renewing and gives the lease up for the next replica.
    pub async fn release(self, store: &Store) {
        self.lost.cancel();
        let _ = self.renew.await;
        match store.release_lease(&self.fence).await {
            Ok(()) => tracing::info!(lease = %self.fence.lease, token = self.fence.token, "lease released"),
            // It expires by itself within the lease time.
            Err(e) => tracing::warn!(lease = %self.fence.lease, error = %e, "releasing the lease failed"),
        }
    }
}

/// Renews `fence` every third of the lease until `lost` fires; fires it when
/// the lease was taken, or when renewals failed for so long that it may
/// expire before the next one (the others may take it then).
async fn renew(store: Store, fence: Fence, config: ReplicasConfig, clock: Clock, lost: CancellationToken) {
    let ttl = config.lease.as_millis() as i64;
    let every = config.lease / 3;
    let mut renewed = clock.now_ms();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = lost.cancelled() => return,
        }
        let now = clock.now_ms();
        match store.renew_lease(&fence, ttl, now).await {
            Ok(true) => renewed = now,
            Ok(false) => {
                tracing::error!(lease = %fence.lease, token = fence.token, "lease lost to another replica; stopping");
                lost.cancel();
                return;
            }
            Err(e) if now - renewed + every.as_millis() as i64 >= ttl - margin(&config) => {
                tracing::error!(lease = %fence.lease, error = %e, "lease cannot be renewed in time; stopping");
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(lease = %fence.lease, error = %e, "renewing the lease failed; retrying"),
        }
    }
}

/// Time kept between giving a lease up and its expiry: clocks of replicas
/// on different machines differ a little.
fn margin(config: &ReplicasConfig) -> i64 {
    config.heartbeat.min(Duration::from_secs(2)).as_millis() as i64
}
