//! Ops runs, approvals, target locks and the audit log. Every change of a
//! run's state runs inside the journal's transaction together with its audit
//! entry, so the log never misses a state change and never shows one that
//! did not happen. Races are decided by conditional updates and the lock
//! table's primary key: one run per target, one vote per approver.

use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::event::{ChatRef, PlatformKind};

/// Who did something, and where, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// Principal key (the configured name), or `opsclaw` for the bot itself.
    pub key: String,
    /// `platform:user id`.
    pub id: String,
    pub chat: Option<String>,
    pub message: Option<String>,
}

impl Who {
    pub fn bot() -> Self {
        Self { key: "opsclaw".into(), id: "opsclaw".into(), chat: None, message: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    pub event_id: String,
    pub command: String,
    /// `run` or `rollback`.
    pub kind: String,
    pub target: String,
    pub app: Option<String>,
    pub env: Option<String>,
    pub version: Option<String>,
    pub from_version: Option<String>,
    pub rollback_of: Option<i64>,
    /// JSON object of the arguments as typed (redacted).
    pub args: String,
    /// JSON of the rendered plan.
    pub plan: String,
    pub requester: Who,
    pub chat: ChatRef,
    pub thread: Option<String>,
    pub approvals_needed: i64,
    pub approver_role: Option<String>,
    pub expires_at: Option<i64>,
    /// Start at once (an automatic rollback): no approval, no button.
    pub start: bool,
}

/// One audit log row as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEntry {
    pub actor: String,
    pub actor_id: String,
    pub action: String,
    pub command: String,
    pub run_id: Option<i64>,
    pub target: Option<String>,
    pub args: Option<String>,
    pub approvals: Option<String>,
    pub result: String,
    pub exit_code: Option<i64>,
    pub duration_ms: Option<i64>,
    pub output_digest: Option<String>,
    pub chat: Option<String>,
    pub message_id: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOp {
    Request(Box<NewRun>),
    Approve {
        run: i64,
        by: Who,
    },
    Reject {
        run: i64,
        by: Who,
    },
    Cancel {
        run: i64,
        by: Who,
    },
    /// The requester starts a run that needs no approval.
    Start {
        run: i64,
        by: Who,
    },
    /// The step now running, so an interruption can say where it stopped.
    Step {
        run: i64,
        step: String,
    },
    Finish(Box<Finish>),
    /// Every pending run whose approval time is over.
    Expire,
    /// Every run left `running` by a replica that is gone (at startup, and
    /// when another replica stops heartbeating).
    Interrupt {
        reason: String,
    },
    /// A refusal that changed nothing but must be on record.
    Audit(Box<AuditEntry>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub run: i64,
    /// succeeded | failed | interrupted
    pub state: String,
    pub step: Option<String>,
    pub exit_code: Option<i64>,
    pub output: String,
    pub output_digest: String,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// A new run; `started` when it runs at once.
    Requested {
        id: i64,
        started: bool,
    },
    /// The event was seen before: its run.
    Existing(i64),
    /// Another pending or running run holds the target.
    Locked {
        holder: i64,
    },
    /// An approval counted; the run starts when `got == needed`.
    Approved {
        got: i64,
        needed: i64,
    },
    Started,
    SelfApproval,
    AlreadyApproved,
    /// The run is no longer waiting (someone decided first): its state.
    NotPending(String),
    Expired,
    NotFound,
    Done,
    /// Runs an `Expire` or `Interrupt` changed.
    Runs(Vec<i64>),
}

/// A stored run as handlers and cards see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunView {
    pub id: i64,
    pub event_id: String,
    pub command: String,
    pub kind: String,
    pub target: String,
    pub app: Option<String>,
    pub env: Option<String>,
    pub version: Option<String>,
    pub from_version: Option<String>,
    pub rollback_of: Option<i64>,
    pub args: String,
    pub plan: String,
    pub requester: String,
    pub requester_id: String,
    pub chat: ChatRef,
    pub thread: Option<String>,
    pub approvals_needed: i64,
    pub approver_role: Option<String>,
    pub state: String,
    pub step: Option<String>,
    pub exit_code: Option<i64>,
    pub output: Option<String>,
    pub output_digest: Option<String>,
    pub error: Option<String>,
    pub closed_by: Option<String>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Approvers so far, in order.
    pub approvals: Vec<(String, i64)>,
}

impl RunView {
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditView {
    pub id: i64,
    pub at_ms: i64,
    pub entry: AuditEntry,
}

const RUN_COLUMNS: &str = "id, event_id, command, kind, target, app, env, version, from_version, rollback_of, args, \
    plan, requester, requester_id, chat_platform, chat_id, thread_id, approvals_needed, approver_role, state, step, \
    exit_code, output, output_digest, error, closed_by, expires_at, created_at, started_at, finished_at";

async fn audit(conn: &mut AnyConnection, e: &AuditEntry, now_ms: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, actor_id, action, command, run_id, target, args, approvals, result, \
         exit_code, duration_ms, output_digest, chat, message_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(now_ms)
    .bind(&e.actor)
    .bind(&e.actor_id)
    .bind(&e.action)
    .bind(&e.command)
    .bind(e.run_id)
    .bind(&e.target)
    .bind(&e.args)
    .bind(&e.approvals)
    .bind(&e.result)
    .bind(e.exit_code)
    .bind(e.duration_ms)
    .bind(&e.output_digest)
    .bind(&e.chat)
    .bind(&e.message_id)
    .bind(&e.detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The audit entry of an action on `run`, filled from the run.
fn entry(run: &RunView, by: &Who, action: &str, result: &str) -> AuditEntry {
    AuditEntry {
        actor: by.key.clone(),
        actor_id: by.id.clone(),
        action: action.into(),
        command: run.command.clone(),
        run_id: Some(run.id),
        target: Some(run.target.clone()),
        args: Some(run.args.clone()),
        approvals: Some(approvers_json(&run.approvals)),
        result: result.into(),
        chat: by.chat.clone(),
        message_id: by.message.clone(),
        ..AuditEntry::default()
    }
}

fn approvers_json(approvals: &[(String, i64)]) -> String {
    serde_json::to_string(&approvals.iter().map(|(who, _)| who).collect::<Vec<_>>()).unwrap_or_default()
}

async fn load(conn: &mut AnyConnection, id: i64) -> Result<Option<RunView>, StoreError> {
    let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut run = decode_run(&row)?;
    run.approvals = approvals(conn, id).await?;
    Ok(Some(run))
}

async fn approvals(conn: &mut AnyConnection, id: i64) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query("SELECT approver, at FROM run_approvals WHERE run_id = $1 ORDER BY at, approver")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| Ok((r.try_get("approver")?, r.try_get("at")?))).collect()
}

fn decode_run(row: &sqlx::any::AnyRow) -> Result<RunView, StoreError> {
    let platform: String = row.try_get("chat_platform")?;
    let platform =
        PlatformKind::parse(&platform).ok_or_else(|| StoreError::Corrupt(format!("run platform `{platform}`")))?;
    Ok(RunView {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        command: row.try_get("command")?,
        kind: row.try_get("kind")?,
        target: row.try_get("target")?,
        app: row.try_get("app")?,
        env: row.try_get("env")?,
        version: row.try_get("version")?,
        from_version: row.try_get("from_version")?,
        rollback_of: row.try_get("rollback_of")?,
        args: row.try_get("args")?,
        plan: row.try_get("plan")?,
        requester: row.try_get("requester")?,
        requester_id: row.try_get("requester_id")?,
        chat: ChatRef::new(platform, row.try_get::<String, _>("chat_id")?),
        thread: row.try_get("thread_id")?,
        approvals_needed: row.try_get("approvals_needed")?,
        approver_role: row.try_get("approver_role")?,
        state: row.try_get("state")?,
        step: row.try_get("step")?,
        exit_code: row.try_get("exit_code")?,
        output: row.try_get("output")?,
        output_digest: row.try_get("output_digest")?,
        error: row.try_get("error")?,
        closed_by: row.try_get("closed_by")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        approvals: Vec::new(),
    })
}

async fn release(conn: &mut AnyConnection, run: &RunView) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM run_locks WHERE target = $1 AND run_id = $2")
        .bind(&run.target)
        .bind(run.id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Moves `run` from `from` to `to`; false when someone else moved it first.
async fn transition(
    conn: &mut AnyConnection,
    run: i64,
    from: &str,
    to: &str,
    now_ms: i64,
    closed_by: Option<&str>,
) -> Result<bool, StoreError> {
    let started = if to == "running" { Some(now_ms) } else { None };
    let finished = if to != "running" { Some(now_ms) } else { None };
    let n = sqlx::query(
        "UPDATE runs SET state = $1, started_at = COALESCE($2, started_at), finished_at = COALESCE($3, finished_at), \
         closed_by = COALESCE($4, closed_by) WHERE id = $5 AND state = $6",
    )
    .bind(to)
    .bind(started)
    .bind(finished)
    .bind(closed_by)
    .bind(run)
    .bind(from)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Applies `op` for replica `owner`: a run it starts is owned by it (the
/// replica that executes it), and `Interrupt` takes only runs whose replica
/// was last seen before `live_cut`.
pub(super) async fn apply_op(
    conn: &mut AnyConnection,
    op: &RunOp,
    owner: &str,
    live_cut: i64,
    now_ms: i64,
) -> Result<RunOutcome, StoreError> {
    let outcome = apply(conn, op, live_cut, now_ms).await?;
    // Runs started in this transaction are the only running ones without an
    // owner started now (rows from before replicas had owners are left to `Interrupt`).
    sqlx::query("UPDATE runs SET owner = $1 WHERE state = 'running' AND owner IS NULL AND started_at = $2")
        .bind(owner)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    Ok(outcome)
}

async fn apply(conn: &mut AnyConnection, op: &RunOp, live_cut: i64, now_ms: i64) -> Result<RunOutcome, StoreError> {
    match op {
        RunOp::Request(new) => request(conn, new, now_ms).await,
        RunOp::Approve { run, by } => approve(conn, *run, by, now_ms).await,
        RunOp::Reject { run, by } | RunOp::Cancel { run, by } => {
            let (to, action) =
                if matches!(op, RunOp::Reject { .. }) { ("rejected", "reject") } else { ("cancelled", "cancel") };
            let Some(view) = load(conn, *run).await? else { return Ok(RunOutcome::NotFound) };
            if view.state != "pending" {
                return Ok(RunOutcome::NotPending(view.state));
            }
            if !transition(conn, *run, "pending", to, now_ms, Some(&by.key)).await? {
                return Ok(RunOutcome::NotPending(load(conn, *run).await?.map_or_else(String::new, |r| r.state)));
            }
            release(conn, &view).await?;
            audit(conn, &entry(&view, by, action, to), now_ms).await?;
            Ok(RunOutcome::Done)
        }
        RunOp::Start { run, by } => {
            let Some(view) = load(conn, *run).await? else { return Ok(RunOutcome::NotFound) };
            if view.state != "pending" {
                return Ok(RunOutcome::NotPending(view.state));
            }
            if view.expires_at.is_some_and(|at| at < now_ms) {
                return expire_one(conn, &view, now_ms).await;
            }
            if view.approvals_needed > 0 {
                return Ok(RunOutcome::NotPending("pending".into()));
            }
            if !transition(conn, *run, "pending", "running", now_ms, None).await? {
                return Ok(RunOutcome::NotPending("running".into()));
            }
            audit(conn, &entry(&view, by, "start", "running"), now_ms).await?;
            Ok(RunOutcome::Started)
        }
        RunOp::Step { run, step } => {
            sqlx::query("UPDATE runs SET step = $1 WHERE id = $2").bind(step).bind(*run).execute(&mut *conn).await?;
            Ok(RunOutcome::Done)
        }
        RunOp::Finish(f) => {
            let Some(view) = load(conn, f.run).await? else { return Ok(RunOutcome::NotFound) };
            let n = sqlx::query(
                "UPDATE runs SET state = $1, step = COALESCE($2, step), exit_code = $3, output = $4, \
                 output_digest = $5, error = $6, finished_at = $7 WHERE id = $8 AND state = 'running'",
            )
            .bind(&f.state)
            .bind(&f.step)
            .bind(f.exit_code)
            .bind(&f.output)
            .bind(&f.output_digest)
            .bind(&f.error)
            .bind(now_ms)
            .bind(f.run)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(RunOutcome::NotPending(view.state));
            }
            release(conn, &view).await?;
            let mut e = entry(&view, &Who::bot(), "finish", &f.state);
            e.exit_code = f.exit_code;
            e.duration_ms = Some(f.duration_ms);
            e.output_digest = Some(f.output_digest.clone());
            e.detail = match (&f.step, &f.error) {
                (Some(step), Some(error)) => Some(format!("{step}: {error}")),
                (None, Some(error)) => Some(error.clone()),
                (Some(step), None) => Some(format!("last step: {step}")),
                (None, None) => None,
            };
            audit(conn, &e, now_ms).await?;
            Ok(RunOutcome::Done)
        }
        RunOp::Expire => {
            let rows = sqlx::query("SELECT id FROM runs WHERE state = 'pending' AND expires_at < $1 ORDER BY id")
                .bind(now_ms)
                .fetch_all(&mut *conn)
                .await?;
            let mut expired = Vec::new();
            for row in rows {
                let id: i64 = row.try_get("id")?;
                if let Some(view) = load(conn, id).await?
                    && expire_one(conn, &view, now_ms).await? == RunOutcome::Expired
                {
                    expired.push(id);
                }
            }
            Ok(RunOutcome::Runs(expired))
        }
        RunOp::Interrupt { reason } => {
            let sql =
                format!("SELECT id FROM runs WHERE state = 'running' AND {} ORDER BY id", Store::owner_is_gone(1));
            let rows = sqlx::query(&sql).bind(live_cut).fetch_all(&mut *conn).await?;
            let mut interrupted = Vec::new();
            for row in rows {
                let id: i64 = row.try_get("id")?;
                let Some(view) = load(conn, id).await? else { continue };
                sqlx::query(
                    "UPDATE runs SET state = 'interrupted', error = $1, finished_at = $2 WHERE id = $3 AND state = 'running'",
                )
                .bind(reason)
                .bind(now_ms)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                release(conn, &view).await?;
                let mut e = entry(&view, &Who::bot(), "interrupt", "interrupted");
                e.detail = Some(match &view.step {
                    Some(step) => format!("{reason} (during step {step})"),
                    None => reason.clone(),
                });
                audit(conn, &e, now_ms).await?;
                interrupted.push(id);
            }
            Ok(RunOutcome::Runs(interrupted))
        }
        RunOp::Audit(e) => {
            audit(conn, e, now_ms).await?;
            Ok(RunOutcome::Done)
        }
    }
}

async fn expire_one(conn: &mut AnyConnection, view: &RunView, now_ms: i64) -> Result<RunOutcome, StoreError> {
    if !transition(conn, view.id, "pending", "expired", now_ms, None).await? {
        return Ok(RunOutcome::NotPending(load(conn, view.id).await?.map_or_else(String::new, |r| r.state)));
    }
    release(conn, view).await?;
    let mut e = entry(view, &Who::bot(), "expire", "expired");
    e.detail = Some(format!("{} of {} approvals", view.approvals.len(), view.approvals_needed));
    audit(conn, &e, now_ms).await?;
    Ok(RunOutcome::Expired)
}

async fn request(conn: &mut AnyConnection, new: &NewRun, now_ms: i64) -> Result<RunOutcome, StoreError> {
    if let Some(row) =
        sqlx::query("SELECT id FROM runs WHERE event_id = $1").bind(&new.event_id).fetch_optional(&mut *conn).await?
    {
        return Ok(RunOutcome::Existing(row.try_get("id")?));
    }
    // A pending run whose approval time is over must not hold the target.
    if let Some(row) = sqlx::query("SELECT run_id FROM run_locks WHERE target = $1")
        .bind(&new.target)
        .fetch_optional(&mut *conn)
        .await?
    {
        let holder: i64 = row.try_get("run_id")?;
        match load(conn, holder).await? {
            Some(view) if view.state == "pending" && view.expires_at.is_some_and(|at| at < now_ms) => {
                expire_one(conn, &view, now_ms).await?;
            }
            Some(view) if view.is_active() => {
                let mut e = AuditEntry {
                    actor: new.requester.key.clone(),
                    actor_id: new.requester.id.clone(),
                    action: "refuse".into(),
                    command: new.command.clone(),
                    target: Some(new.target.clone()),
                    args: Some(new.args.clone()),
                    result: "locked".into(),
                    chat: new.requester.chat.clone(),
                    message_id: new.requester.message.clone(),
                    ..AuditEntry::default()
                };
                e.detail = Some(format!("run #{holder} ({}) holds {}", view.state, new.target));
                audit(conn, &e, now_ms).await?;
                return Ok(RunOutcome::Locked { holder });
            }
            // A lock left by a finished run (it is released with the state change, so
            // this is only after manual database surgery): taken over.
            _ => {
                sqlx::query("DELETE FROM run_locks WHERE target = $1").bind(&new.target).execute(&mut *conn).await?;
            }
        }
    }
    let state = if new.start { "running" } else { "pending" };
    let row = sqlx::query(
        "INSERT INTO runs (event_id, command, kind, target, app, env, version, from_version, rollback_of, args, plan, \
         requester, requester_id, chat_platform, chat_id, thread_id, message_id, approvals_needed, approver_role, \
         state, expires_at, created_at, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
         RETURNING id",
    )
    .bind(&new.event_id)
    .bind(&new.command)
    .bind(&new.kind)
    .bind(&new.target)
    .bind(&new.app)
    .bind(&new.env)
    .bind(&new.version)
    .bind(&new.from_version)
    .bind(new.rollback_of)
    .bind(&new.args)
    .bind(&new.plan)
    .bind(&new.requester.key)
    .bind(&new.requester.id)
    .bind(new.chat.platform.as_str())
    .bind(new.chat.id.as_str())
    .bind(&new.thread)
    .bind(&new.requester.message)
    .bind(new.approvals_needed)
    .bind(&new.approver_role)
    .bind(state)
    .bind(new.expires_at)
    .bind(now_ms)
    .bind(new.start.then_some(now_ms))
    .fetch_one(&mut *conn)
    .await?;
    let id: i64 = row.try_get("id")?;
    sqlx::query("INSERT INTO run_locks (target, run_id, at) VALUES ($1, $2, $3)")
        .bind(&new.target)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    let view = load(conn, id).await?.ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))?;
    let mut e = entry(&view, &new.requester, "request", state);
    e.detail = match (new.rollback_of, new.approvals_needed) {
        (Some(of), _) => Some(format!("rollback of #{of}")),
        (None, 0) => None,
        (None, n) => Some(format!("needs {n} approval(s) from {}", new.approver_role.as_deref().unwrap_or("-"))),
    };
    audit(conn, &e, now_ms).await?;
    if new.start {
        audit(conn, &entry(&view, &new.requester, "start", "running"), now_ms).await?;
    }
    Ok(RunOutcome::Requested { id, started: new.start })
}

async fn approve(conn: &mut AnyConnection, run: i64, by: &Who, now_ms: i64) -> Result<RunOutcome, StoreError> {
    let Some(view) = load(conn, run).await? else { return Ok(RunOutcome::NotFound) };
    let refuse = |result: &str| {
        let mut e = entry(&view, by, "approve", "refused");
        e.detail = Some(result.to_owned());
        e
    };
    if view.state != "pending" {
        audit(conn, &refuse(&format!("the run is {}", view.state)), now_ms).await?;
        return Ok(RunOutcome::NotPending(view.state));
    }
    if view.expires_at.is_some_and(|at| at < now_ms) {
        audit(conn, &refuse("the approval time is over"), now_ms).await?;
        return expire_one(conn, &view, now_ms).await;
    }
    if view.requester == by.key {
        audit(conn, &refuse("the requester cannot approve their own run"), now_ms).await?;
        return Ok(RunOutcome::SelfApproval);
    }
    if view.approvals.iter().any(|(who, _)| *who == by.key) {
        return Ok(RunOutcome::AlreadyApproved);
    }
    sqlx::query("INSERT INTO run_approvals (run_id, approver, approver_id, at) VALUES ($1, $2, $3, $4)")
        .bind(run)
        .bind(&by.key)
        .bind(&by.id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    let got = view.approvals.len() as i64 + 1;
    audit(conn, &entry(&view, by, "approve", &format!("{got} of {}", view.approvals_needed)), now_ms).await?;
    if got < view.approvals_needed {
        return Ok(RunOutcome::Approved { got, needed: view.approvals_needed });
    }
    if !transition(conn, run, "pending", "running", now_ms, None).await? {
        return Ok(RunOutcome::NotPending("running".into()));
    }
    let mut approvals = view.approvals.clone();
    approvals.push((by.key.clone(), now_ms));
    let mut e = entry(&view, &Who::bot(), "start", "running");
    e.approvals = Some(approvers_json(&approvals));
    audit(conn, &e, now_ms).await?;
    Ok(RunOutcome::Started)
}

impl Store {
    pub async fn run(&self, id: i64) -> Result<Option<RunView>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, id).await
    }

    /// Runs of `app` (in `env`), newest first.
    pub async fn deployments(&self, app: &str, env: Option<&str>, limit: i64) -> Result<Vec<RunView>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE app = $1 AND ($2 IS NULL OR env = $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(app)
        .bind(env)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_run).collect()
    }

    /// The version of `app` in `env` from the last run that succeeded.
    pub async fn deployed_version(&self, app: &str, env: Option<&str>) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT version FROM runs WHERE app = $1 AND ($2 IS NULL OR env = $2) AND state = 'succeeded' \
             AND version IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT 1",
        )
        .bind(app)
        .bind(env)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("version")).transpose()?)
    }

    /// The newest deployment (not a rollback) of `app` in `env` that ran.
    pub async fn last_deployment(&self, app: &str, env: Option<&str>) -> Result<Option<RunView>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE app = $1 AND ($2 IS NULL OR env = $2) AND kind = 'run' \
             AND state IN ('succeeded', 'failed', 'interrupted') ORDER BY id DESC LIMIT 1"
        ))
        .bind(app)
        .bind(env)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_run).transpose()
    }

    /// Rollbacks of `run`, newest first.
    pub async fn rollbacks_of(&self, run: i64) -> Result<Vec<RunView>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE rollback_of = $1 ORDER BY id DESC"))
            .bind(run)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_run).collect()
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditView>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, actor_id, action, command, run_id, target, args, approvals, result, exit_code, \
             duration_ms, output_digest, chat, message_id, detail FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditView {
                    id: r.try_get("id")?,
                    at_ms: r.try_get("at")?,
                    entry: AuditEntry {
                        actor: r.try_get("actor")?,
                        actor_id: r.try_get("actor_id")?,
                        action: r.try_get("action")?,
                        command: r.try_get("command")?,
                        run_id: r.try_get("run_id")?,
                        target: r.try_get("target")?,
                        args: r.try_get("args")?,
                        approvals: r.try_get("approvals")?,
                        result: r.try_get("result")?,
                        exit_code: r.try_get("exit_code")?,
                        duration_ms: r.try_get("duration_ms")?,
                        output_digest: r.try_get("output_digest")?,
                        chat: r.try_get("chat")?,
                        message_id: r.try_get("message_id")?,
                        detail: r.try_get("detail")?,
                    },
                })
            })
            .collect()
    }

    /// Whether a pending run's approval time is over: the expiry sweep writes only then.
    pub async fn any_run_expired(&self, now_ms: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM runs WHERE state = 'pending' AND expires_at < $1")
            .bind(now_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Whether a run is left `running` by a replica that is gone: the
    /// take-over writes `RunOp::Interrupt` only then.
    pub async fn any_run_of_a_gone_replica(&self, now_ms: i64) -> Result<bool, StoreError> {
        self.any_gone("runs", "state = 'running'", now_ms).await
    }
}
