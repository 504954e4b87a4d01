//! Durable state behind one [`Store`] handle: SQLite (the default, one
//! replica) or PostgreSQL, chosen by URL, with the same SQL for both through
//! sqlx's `Any` driver and per-backend migrations in `migrations/`.
//!
//! Writes on the event path go through [`Store::apply`], which runs a batch
//! of [`Write`]s in one transaction: the inbox and outbox use it to group-commit
//! many events per fsync. The store knows domain types and its own row
//! formats; it does not know platforms' wire formats.

mod alerts;
mod answers;
mod inbox;
mod outbox;
mod replicas;
mod runs;
mod tokens;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor};

use crate::alert::model::Ingest;
use crate::event::{ChatRef, Event, EventId, MessageId};
use crate::reply::CardKey;

pub use alerts::{AlertOp, EscalationCandidate, OpOutcome, StormLimit};
pub use answers::{AnswerOp, PendingAnswer};
pub use outbox::NewDelivery;
pub use replicas::{Fence, LeaseView, ReplicaView};
pub use runs::{AuditEntry, AuditView, Finish, NewRun, RunOp, RunOutcome, RunView, Who};
pub use tokens::{NewToken, StoredGrant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("stored row is unreadable: {0}")]
    Corrupt(String),
}

/// A cheap handle to the connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// This process as a replica: the owner of the work it takes.
    replica: Arc<str>,
    /// A replica unseen this long is dead and its work is taken over.
    lease_ms: i64,
}

/// The default of `replicas.lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// One write on the event path; see [`Store::apply`].
#[derive(Debug, Clone)]
pub enum Write {
    /// Persist an inbound event unless its id was seen before.
    Accept(Event),
    /// The event was handled: enqueue its replies and button tokens, mark it done.
    Complete { event: EventId, deliveries: Vec<NewDelivery>, tokens: Vec<NewToken> },
    /// An outbox row reached the platform; a new card records where it was posted.
    Sent { id: i64, post: Option<(CardKey, ChatRef, MessageId)> },
    /// Delivery failed and will be retried at `next_attempt_at`.
    Retry { id: i64, attempts: u32, next_attempt_at: i64, error: String },
    /// Delivery failed for good.
    Failed { id: i64, attempts: u32, error: String },
    /// A position in a platform's update stream, saved once everything before
    /// it is accepted; under `fence`, only while this replica holds that lease
    /// (`Written::Fenced` otherwise, and nothing changes).
    Cursor { name: String, value: i64, fence: Option<Fence> },
    /// A webhook's alerts: deduplicated by fingerprint, grouped, history recorded.
    AlertIngest(Arc<Ingest>),
    /// An action on an alert group (ack, silence, resolve).
    Alert(AlertOp),
    /// An alert group's card of `version` is queued for its chats (with its button tokens).
    AlertNotified { group: i64, version: i64, deliveries: Vec<NewDelivery>, tokens: Vec<NewToken> },
    /// Decides, once per group and chat, whether the group gets its own card there
    /// or joins the chat's storm digest.
    AlertPlace { group: i64, chats: Vec<ChatRef>, storm: StormLimit },
    /// Replies not caused by an event (storm digests), queued with their tokens.
    Enqueue { deliveries: Vec<NewDelivery>, tokens: Vec<NewToken> },
    /// Escalation step `level` of `group`, calling `to`, with its messages: all
    /// or nothing (`Written::Alert(Unchanged)` when the group was acked meanwhile).
    AlertEscalate { group: i64, level: i64, to: String, initial: bool, deliveries: Vec<NewDelivery> },
    /// A change to an ops run (with its audit entry), or an audit entry alone.
    Run(RunOp),
    /// A model's answer card queued, with the answer recorded as pending
    /// (the "writing" card) or finished (the final one).
    Answer { op: AnswerOp, deliveries: Vec<NewDelivery>, tokens: Vec<NewToken> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Accepted,
    Duplicate,
    /// A completion: the outbox id of each delivery, in order; `None` where
    /// the idempotency key was already queued (the event was replayed).
    Enqueued(Vec<Option<i64>>),
    /// An alert ingest: the groups whose card changed.
    AlertGroups(Vec<i64>),
    /// Where a group is shown in each chat: its own card (`None`) or a digest.
    Placements(Vec<(ChatRef, Option<i64>)>),
    Alert(OpOutcome),
    Run(RunOutcome),
    /// Made under a lease this replica no longer holds: not written.
    Fenced,
    Done,
}

impl Store {
    /// Opens `url` (`sqlite://path` or `postgres://…`). SQLite files are
    /// created with their directory and run in WAL mode with a busy timeout.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Connect(format!("unsupported database URL scheme in `{}`", redact_url(url))));
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url).map_err(|e| StoreError::Connect(e.to_string()))?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(10))
            // A pooled SQLite connection is a file handle that cannot go stale;
            // checking it costs a worker-thread round trip on every acquire, and
            // retiring it gains nothing (and would keep a reaper timer running).
            .test_before_acquire(backend == Backend::Postgres)
            .idle_timeout((backend == Backend::Postgres).then(|| Duration::from_secs(600)))
            .max_lifetime((backend == Backend::Postgres).then(|| Duration::from_secs(1800)))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; NORMAL sync is
                        // durable across process crashes, which is what the outbox needs.
                        // Checkpoints run in the background (`Store::checkpoint`): an
                        // automatic one would stall whichever commit crossed the
                        // threshold, so it is only a backstop at 10,000 pages.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
                             PRAGMA wal_autocheckpoint = 10000; PRAGMA journal_size_limit = 67108864;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        let replica = format!("{:016x}", rand::random::<u64>()).into();
        Ok(Self { pool, backend, replica, lease_ms: DEFAULT_LEASE.as_millis() as i64 })
    }

    /// The same store with `lease` as the time after which a silent replica is dead.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease_ms = lease.as_millis() as i64;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// A transaction that will write. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`): a deferred one that reads first cannot
    /// upgrade after another connection committed (SQLITE_BUSY without
    /// waiting), while an immediate one waits out the busy timeout.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Runs `writes` in one transaction and returns one result per write.
    /// When the batch fails as a whole, each write is retried alone so one
    /// bad write cannot fail its neighbours.
    pub async fn apply(&self, writes: &[Write], now_ms: i64) -> Vec<Result<Written, StoreError>> {
        match self.apply_all(writes, now_ms).await {
            Ok(results) => results.into_iter().map(Ok).collect(),
            Err(e) if writes.len() == 1 => vec![Err(e)],
            Err(_) => {
                let mut results = Vec::with_capacity(writes.len());
                for write in writes {
                    let one = self.apply_all(std::slice::from_ref(write), now_ms).await;
                    results.push(one.map(|mut r| r.remove(0)));
                }
                results
            }
        }
    }

    /// One transaction, a few statements: writes of one kind in a batch are
    /// independent (an event is accepted, completed and delivered in separate
    /// batches), so each kind is written with multi-row statements.
    async fn apply_all(&self, writes: &[Write], now_ms: i64) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut results = vec![Written::Done; writes.len()];

        let accepts: Vec<(usize, &Event)> = writes
            .iter()
            .enumerate()
            .filter_map(|(i, w)| if let Write::Accept(e) = w { Some((i, e)) } else { None })
            .collect();
        for chunk in accepts.chunks(CHUNK) {
            let events: Vec<&Event> = chunk.iter().map(|(_, e)| *e).collect();
            let mut fresh = inbox::insert(&mut tx, &events, self.replica()).await?;
            for (i, event) in chunk {
                // Only the first of two same-id events in one batch is new.
                results[*i] = if fresh.remove(event.id.as_str()) { Written::Accepted } else { Written::Duplicate };
            }
        }

        // Alert and run writes depend on each other's state: applied one by one, in order.
        let mut skipped = std::collections::HashSet::new();
        for (i, write) in writes.iter().enumerate() {
            match write {
                Write::AlertEscalate { group, level, to, initial, .. } => {
                    let outcome = alerts::escalate(&mut tx, *group, *level, to, *initial, now_ms).await?;
                    if outcome != OpOutcome::Done {
                        skipped.insert(i);
                        results[i] = Written::Alert(outcome);
                    }
                }
                Write::AlertIngest(ingest) => {
                    results[i] = Written::AlertGroups(alerts::ingest(&mut tx, ingest, now_ms).await?)
                }
                Write::Alert(op) => results[i] = Written::Alert(alerts::apply_op(&mut tx, op, now_ms).await?),
                Write::Run(op) => {
                    let cut = now_ms - self.lease_ms;
                    results[i] = Written::Run(runs::apply_op(&mut tx, op, self.replica(), cut, now_ms).await?)
                }
                Write::Answer { op, .. } => answers::apply(&mut tx, op, self.replica(), now_ms).await?,
                Write::AlertNotified { group, version, .. } => alerts::mark_notified(&mut tx, *group, *version).await?,
                Write::AlertPlace { group, chats, storm } => {
                    results[i] = Written::Placements(alerts::place(&mut tx, *group, chats, *storm, now_ms).await?)
                }
                _ => {}
            }
        }

        let mut done: Vec<&EventId> = Vec::new();
        let mut deliveries: Vec<&NewDelivery> = Vec::new();
        let mut new_tokens: Vec<&NewToken> = Vec::new();
        let mut sent: Vec<i64> = Vec::new();
        let mut posts: Vec<&(CardKey, ChatRef, MessageId)> = Vec::new();
        for (i, write) in writes.iter().enumerate() {
            match write {
                Write::Accept(_)
                | Write::AlertIngest(_)
                | Write::Alert(_)
                | Write::AlertPlace { .. }
                | Write::Run(_) => {}
                Write::AlertEscalate { deliveries: d, .. } => {
                    if !skipped.contains(&i) {
                        deliveries.extend(d);
                    }
                }
                Write::AlertNotified { deliveries: d, tokens: t, .. }
                | Write::Enqueue { deliveries: d, tokens: t }
                | Write::Answer { deliveries: d, tokens: t, .. } => {
                    deliveries.extend(d);
                    new_tokens.extend(t);
                }
                Write::Complete { event, deliveries: d, tokens: t } => {
                    done.push(event);
                    deliveries.extend(d);
                    new_tokens.extend(t);
                }
                Write::Sent { id, post } => {
                    sent.push(*id);
                    posts.extend(post);
                }
                Write::Retry { id, attempts, next_attempt_at, error } => {
                    outbox::mark_retry(&mut tx, *id, *attempts, *next_attempt_at, error).await?;
                }
                Write::Failed { id, attempts, error } => {
                    outbox::mark_failed(&mut tx, *id, *attempts, error, now_ms).await?;
                }
                Write::Cursor { name, value, fence } => {
                    if !save_cursor(&mut tx, name, *value, fence.as_ref(), self.replica(), now_ms).await? {
                        results[i] = Written::Fenced;
                    }
                }
            }
        }
        let mut ids = HashMap::new();
        for chunk in deliveries.chunks(CHUNK) {
            ids.extend(outbox::insert(&mut tx, chunk, self.replica(), now_ms).await?);
        }
        for (i, write) in writes.iter().enumerate() {
            if skipped.contains(&i) {
                continue;
            }
            if let Write::Complete { deliveries, .. }
            | Write::AlertNotified { deliveries, .. }
            | Write::Enqueue { deliveries, .. }
            | Write::Answer { deliveries, .. }
            | Write::AlertEscalate { deliveries, .. } = write
            {
                results[i] = Written::Enqueued(deliveries.iter().map(|d| ids.get(&d.key).copied()).collect());
            }
        }
        for chunk in new_tokens.chunks(CHUNK) {
            tokens::insert(&mut tx, chunk, now_ms).await?;
        }
        for chunk in done.chunks(CHUNK) {
            inbox::mark_done(&mut tx, chunk, now_ms).await?;
        }
        for chunk in sent.chunks(CHUNK) {
            outbox::mark_sent(&mut tx, chunk, now_ms).await?;
        }
        for chunk in posts.chunks(CHUNK) {
            outbox::record_posts(&mut tx, chunk, now_ms).await?;
        }
        tx.commit().await?;
        Ok(results)
    }

    /// Deletes what no longer needs keeping: handled inbox rows older than
    /// `inbox_keep`, finished outbox rows older than `outbox_keep`, expired tokens.
    pub async fn cleanup(&self, now_ms: i64, inbox_keep: Duration, outbox_keep: Duration) -> Result<u64, StoreError> {
        let inbox_cut = now_ms - inbox_keep.as_millis() as i64;
        let outbox_cut = now_ms - outbox_keep.as_millis() as i64;
        let mut n = sqlx::query("DELETE FROM inbox WHERE state = 1 AND done_at < $1")
            .bind(inbox_cut)
            .execute(&self.pool)
            .await?
            .rows_affected();
        n += sqlx::query("DELETE FROM outbox WHERE state <> 0 AND finished_at < $1")
            .bind(outbox_cut)
            .execute(&self.pool)
            .await?
            .rows_affected();
        n += sqlx::query("DELETE FROM action_tokens WHERE expires_at < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }

    /// Copies committed WAL frames into the SQLite database without blocking
    /// writers; called every 25 ms (`app::housekeeping`) so commits never pay for a
    /// checkpoint and each one flushes little.
    /// PostgreSQL needs nothing of the kind.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Writes a consistent copy of a SQLite database to `to` (`VACUUM INTO`:
    /// one read transaction, so it is safe while the bot runs and writes).
    /// PostgreSQL is backed up with `pg_dump`; this refuses it.
    pub async fn backup(&self, to: &Path) -> Result<(), StoreError> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Connect(
                "`opsclaw backup` copies SQLite databases; back PostgreSQL up with pg_dump".into(),
            ));
        }
        if to.exists() {
            return Err(StoreError::Connect(format!("{} exists; choose a new file", to.display())));
        }
        let target = to.to_str().ok_or_else(|| StoreError::Connect(format!("{} is not UTF-8", to.display())))?;
        sqlx::query("VACUUM INTO $1").bind(target).execute(&self.pool).await?;
        Ok(())
    }

    /// The saved position `name`, if any (see [`Write::Cursor`]).
    pub async fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let row =
            sqlx::query("SELECT value FROM cursors WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| sqlx::Row::try_get::<i64, _>(&r, "value")).transpose()?)
    }

    /// Checks the database answers, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }
}

/// Saves cursor `name`; under a fence only while `replica` holds that lease
/// with that token. Returns whether it was saved.
async fn save_cursor(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    value: i64,
    fence: Option<&Fence>,
    replica: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    const UPSERT: &str = "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
    let done = match fence {
        None => {
            sqlx::query(&format!("INSERT INTO cursors (name, value, updated_at) VALUES ($1, $2, $3) {UPSERT}"))
                .bind(name)
                .bind(value)
                .bind(now_ms)
                .execute(&mut *conn)
                .await?
        }
        Some(fence) => {
            sqlx::query(&format!(
                "INSERT INTO cursors (name, value, updated_at) SELECT $1, $2, $3 WHERE EXISTS \
                 (SELECT 1 FROM leases WHERE name = $4 AND holder = $5 AND token = $6) {UPSERT}"
            ))
            .bind(name)
            .bind(value)
            .bind(now_ms)
            .bind(fence.lease.as_str())
            .bind(replica)
            .bind(fence.token)
            .execute(&mut *conn)
            .await?
        }
    };
    Ok(done.rows_affected() == 1)
}

/// Rows per multi-row statement: far below SQLite's and PostgreSQL's
/// parameter limits for the widest table (9 columns).
const CHUNK: usize = 256;

/// How a statement writes its parameters. PostgreSQL needs `$n`; SQLite gets
/// bare `?`, because it looks each `$n` name up in a list while preparing and
/// binding, which is quadratic in a multi-row statement.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Params {
    Numbered,
    Positional,
}

impl Params {
    fn of(conn: &sqlx::AnyConnection) -> Params {
        if conn.backend_name() == "SQLite" { Params::Positional } else { Params::Numbered }
    }

    /// The `n`th parameter (1-based); positional parameters must be bound in
    /// the order they appear.
    fn push(self, sql: &mut String, n: usize) {
        match self {
            Params::Numbered => {
                sql.push('$');
                sql.push_str(&n.to_string());
            }
            Params::Positional => sql.push('?'),
        }
    }

    /// `($1, $2), ($3, $4)` for `rows` rows of `cols` columns, numbered after `offset` parameters.
    fn tuples(self, rows: usize, cols: usize, offset: usize) -> String {
        let mut sql = String::with_capacity(rows * cols * 5);
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for col in 0..cols {
                if col > 0 {
                    sql.push_str(", ");
                }
                self.push(&mut sql, offset + row * cols + col + 1);
            }
            sql.push(')');
        }
        sql
    }

    /// `$2, $3, $4` for `n` parameters numbered after `offset`.
    fn list(self, n: usize, offset: usize) -> String {
        let mut sql = String::with_capacity(n * 5);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push(&mut sql, offset + i + 1);
        }
        sql
    }
}

/// Adds `mode=rwc` so SQLite creates the file, and creates its directory.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:"
        && let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Connect(format!("cannot create {}: {e}", dir.display())))?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".into()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Held while a process serves a SQLite database: an exclusive `flock` on
/// the database file (SQLite's own locks are `fcntl` locks, which do not
/// interact with it). SQLite has one writer by design, so a second opsclaw on
/// the same file would double every reply and race the Telegram poller; it is
/// refused at start instead. The kernel drops the lock with the process,
/// however it ends, so a crash never leaves it behind.
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
}

/// Takes the [`InstanceLock`] of a SQLite `url`; `None` for PostgreSQL and
/// in-memory databases, which need none.
pub fn claim_instance(url: &str) -> Result<Option<InstanceLock>, StoreError> {
    use std::os::fd::AsRawFd;
    if !url.starts_with("sqlite:") {
        return Ok(None);
    }
    let url = sqlite_url(url)?;
    let rest = url.trim_start_matches("sqlite://");
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    if path == ":memory:" {
        return Ok(None);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::Connect(format!("cannot open {path}: {e}")))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(StoreError::Connect(match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => format!(
                "another opsclaw process is using {path}: a SQLite database serves one process; \
                 stop the other one, or use PostgreSQL (store.url) to run several replicas"
            ),
            _ => format!("cannot lock {path}: {error}"),
        }));
    }
    Ok(Some(InstanceLock { _file: file }))
}

/// Hides the password of a URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_lists() {
        assert_eq!(Params::Numbered.tuples(2, 3, 0), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(Params::Numbered.tuples(1, 2, 1), "($2, $3)");
        assert_eq!(Params::Numbered.list(3, 1), "$2, $3, $4");
        assert_eq!(Params::Positional.tuples(2, 2, 0), "(?, ?), (?, ?)");
        assert_eq!(Params::Positional.list(2, 1), "?, ?");
    }

    #[test]
    fn urls() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(sqlite_url("sqlite::memory:").unwrap(), "sqlite://:memory:?mode=rwc");
    }
}
