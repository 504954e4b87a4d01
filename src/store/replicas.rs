//! Replicas and leases. Every process serving a database is a replica with a
//! random id (one per [`Store::connect`]) and a heartbeat row; work in flight
//! (inbox, outbox, runs, answers rows) names its owner, and a replica not seen
//! for the store's lease time is dead: the others take its rows over.
//! A lease (Telegram's poller) is held by one replica at a time, with a
//! token that grows with every new holder, checked by the writes made under it.

use sqlx::Row;

use super::{Backend, Store, StoreError};

/// A replica as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub id: String,
    pub name: String,
    pub version: String,
    pub started_at_ms: i64,
    pub seen_at_ms: i64,
}

/// A lease as `/status` shows it: `holder` is `None` once released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub name: String,
    pub holder: Option<String>,
    pub token: i64,
    pub expires_at_ms: i64,
}

/// A lease this replica holds: its name and fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub token: i64,
}

/// Rows owned by a live replica are left alone; `{cut}` is the oldest
/// heartbeat that still counts as alive.
pub(super) const OWNER_IS_GONE: &str =
    "(owner IS NULL OR owner NOT IN (SELECT id FROM replicas WHERE seen_at >= {cut}))";

impl Store {
    /// This replica's id (owner of the rows it writes, holder of its leases).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// How long a replica may go unseen before it counts as dead.
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    /// `FOR UPDATE SKIP LOCKED` where rows can be contended (PostgreSQL):
    /// a replica claiming work skips rows another replica is claiming right
    /// now instead of waiting for it. SQLite has one writer and no such clause.
    pub(super) fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// [`OWNER_IS_GONE`] with its cut as parameter `$n`.
    pub(super) fn owner_is_gone(n: usize) -> String {
        OWNER_IS_GONE.replace("{cut}", &format!("${n}"))
    }

    /// Whether `table` has rows matching `filter` whose replica is gone. The
    /// take-overs ask this first: they run every second or heartbeat, and
    /// almost always find nothing, which then costs a read and no write (on
    /// SQLite a write would take the lock the journal commits under).
    pub(super) async fn any_gone(&self, table: &str, filter: &str, now_ms: i64) -> Result<bool, StoreError> {
        let sql = format!("SELECT 1 AS one FROM {table} WHERE {filter} AND {} LIMIT 1", Store::owner_is_gone(1));
        Ok(sqlx::query(&sql).bind(now_ms - self.lease_ms).fetch_optional(&self.pool).await?.is_some())
    }

    /// Registers this replica. On SQLite the caller holds the database's
    /// instance lock, so every other replica row is from a process that is
    /// gone: they are forgotten at once (their leases free) and their work taken over now.
    pub async fn register_replica(&self, name: &str, now_ms: i64) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("DELETE FROM replicas WHERE id <> $1").bind(self.replica()).execute(&self.pool).await?;
            sqlx::query("UPDATE leases SET holder = NULL, expires_at = 0").execute(&self.pool).await?;
        }
        sqlx::query(
            "INSERT INTO replicas (id, name, version, started_at, seen_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(self.replica())
        .bind(name)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Says this replica is alive; false when its row is gone (forgotten
    /// after a long outage), and it must register again.
    pub async fn heartbeat(&self, now_ms: i64) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE replicas SET seen_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(self.replica())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Hands everything this replica owns back and removes it: pending inbox
    /// and outbox rows and answers lose their owner (another replica takes
    /// them at once), leases are released. One transaction.
    pub async fn deregister_replica(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for sql in [
            "UPDATE inbox SET owner = NULL WHERE owner = $1 AND state = 0",
            "UPDATE outbox SET owner = NULL WHERE owner = $1 AND state = 0",
            "UPDATE answers SET owner = NULL WHERE owner = $1",
            "UPDATE leases SET holder = NULL, expires_at = 0 WHERE holder = $1",
            "DELETE FROM replicas WHERE id = $1",
        ] {
            sqlx::query(sql).bind(self.replica()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replicas seen within the lease time, oldest first.
    pub async fn live_replicas(&self, now_ms: i64) -> Result<Vec<ReplicaView>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, version, started_at, seen_at FROM replicas WHERE seen_at >= $1 ORDER BY started_at, id",
        )
        .bind(now_ms - self.lease_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaView {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    started_at_ms: r.try_get("started_at")?,
                    seen_at_ms: r.try_get("seen_at")?,
                })
            })
            .collect()
    }

    /// Forgets replicas gone for a day (their rows were taken over long ago).
    pub async fn cleanup_replicas(&self, now_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM replicas WHERE seen_at < $1")
            .bind(now_ms - 86_400_000)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Every lease, by name.
    pub async fn leases(&self) -> Result<Vec<LeaseView>, StoreError> {
        let rows = sqlx::query("SELECT name, holder, token, expires_at FROM leases ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseView {
                    name: r.try_get("name")?,
                    holder: r.try_get("holder")?,
                    token: r.try_get("token")?,
                    expires_at_ms: r.try_get("expires_at")?,
                })
            })
            .collect()
    }

    /// Takes lease `name` for `ttl_ms` when it is free (released or expired);
    /// the new token is one more than the last holder's. `None` while
    /// another replica holds it.
    pub async fn acquire_lease(&self, name: &str, ttl_ms: i64, now_ms: i64) -> Result<Option<Fence>, StoreError> {
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, token, expires_at, acquired_at) VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = leases.token + 1, \
             expires_at = excluded.expires_at, acquired_at = excluded.acquired_at \
             WHERE leases.holder IS NULL OR leases.expires_at < excluded.acquired_at RETURNING token",
        )
        .bind(name)
        .bind(self.replica())
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("token")).transpose()?.map(|token| Fence { lease: name.to_owned(), token }))
    }

    /// Extends a held lease; false when it was lost (taken by another replica).
    pub async fn renew_lease(&self, fence: &Fence, ttl_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE leases SET expires_at = $1 WHERE name = $2 AND holder = $3 AND token = $4")
            .bind(now_ms + ttl_ms)
            .bind(fence.lease.as_str())
            .bind(self.replica())
            .bind(fence.token)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Gives a held lease up, so the next replica need not wait for it to expire.
    pub async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        sqlx::query("UPDATE leases SET holder = NULL, expires_at = 0 WHERE name = $1 AND holder = $2 AND token = $3")
            .bind(fence.lease.as_str())
            .bind(self.replica())
            .bind(fence.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
