//! Ops commands: deploys, rollbacks and any command file with a `[run]`
//! section. A request renders the steps into a [`plan::Plan`] and stores it
//! as a pending run holding its target's lock; approvals (never the
//! requester's own) move it to running; the runner executes the plan step by
//! step with [`exec`], shows progress on the run's card at most once a
//! second, and records the result. Every state change is one journal write
//! with its audit entry.
//!
//! After a request, [`Runs`] is the only writer of a run's card: handlers
//! change the stored run and call [`Runs::refresh`], which renders the card
//! from the stored state (and the live progress) under one lock, so the last
//! card queued always shows the latest state.

pub mod card;
pub mod demo;
pub mod exec;
pub mod plan;
pub mod redact;
pub mod spec;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::exec::{Capture, Exit, Sink};
use self::plan::{Plan, PlannedAction, PlannedKind, PlannedStep};
use self::redact::Redactor;
use crate::card::CardSet;
use crate::clock::Clock;
use crate::command::CommandSet;
use crate::event::ThreadId;
use crate::i18n::{Catalog, LocaleRules, Msg};
use crate::pipeline::dispatch::prepare;
use crate::pipeline::journal::{Journal, JournalError};
use crate::pipeline::outbox::Outbox;
use crate::reply::{CardKey, CardMode, Reply, ReplyBody};
use crate::status::Stats;
use crate::store::{Finish, RunOp, RunOutcome, RunView, Store, Write, Written};

/// Run cards keep their buttons (Roll back) as long as incidents are looked back on.
const TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);
/// At most one progress update of a card per this.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Lines of output a progress card shows.
const TAIL_LINES: usize = 12;
/// How often pending runs are checked for an expired approval time.
const EXPIRY_EVERY: Duration = Duration::from_secs(5);

pub fn card_key(run: i64) -> CardKey {
    CardKey::new(format!("run:{run}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Waiting,
    Running,
    Ok,
    Failed,
}

/// What a running run's card shows besides the stored state.
#[derive(Debug, Clone)]
pub struct Progress {
    pub steps: Vec<StepState>,
    pub tail: VecDeque<String>,
    /// e.g. "attempt 3" of a verify step.
    pub note: Option<String>,
}

#[derive(Debug)]
struct Live {
    progress: Mutex<Progress>,
    dirty: std::sync::atomic::AtomicBool,
}

impl Live {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock().expect("progress lock"));
        self.dirty.store(true, Ordering::Release);
    }

    fn snapshot(&self) -> Progress {
        self.progress.lock().expect("progress lock").clone()
    }
}

/// The runner and the one writer of run cards.
pub struct Runs {
    pub parts: RunsParts,
    /// This binary, for command files that run `{{ opsclaw }}` (the demo).
    pub opsclaw: PathBuf,
    pub redactor: Redactor,
    /// Values of the secrets command files name, read once at startup.
    pub secrets: BTreeMap<String, String>,
    live: Mutex<HashMap<i64, Arc<Live>>>,
    render: tokio::sync::Mutex<()>,
    renders: AtomicU64,
    stop: CancellationToken,
    tasks: TaskTracker,
    http: reqwest::Client,
}

/// Everything [`Runs::new`] needs.
pub struct RunsParts {
    pub store: Store,
    pub journal: Journal,
    pub outbox: Arc<Outbox>,
    pub cards: Arc<CardSet>,
    pub catalog: Arc<Catalog>,
    pub commands: Arc<CommandSet>,
    pub locales: LocaleRules,
    pub clock: Clock,
    pub stats: Arc<Stats>,
    pub data_dir: PathBuf,
}

impl Runs {
    pub fn new(parts: RunsParts) -> anyhow::Result<Self> {
        let mut secrets = BTreeMap::new();
        for command in parts.commands.iter() {
            for name in command.run.iter().flat_map(|r| &r.secrets) {
                if let Ok(value) = std::env::var(name) {
                    secrets.insert(name.clone(), value);
                }
            }
        }
        let redactor = Redactor::new(secrets.values().cloned());
        let opsclaw = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("opsclaw"));
        let http = reqwest::Client::builder()
            .user_agent(concat!("opsclaw/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client for run steps: {e}"))?;
        Ok(Self {
            parts,
            opsclaw,
            redactor,
            secrets,
            live: Mutex::new(HashMap::new()),
            render: tokio::sync::Mutex::new(()),
            renders: AtomicU64::new(0),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            http,
        })
    }

    /// One write through the journal.
    pub async fn write(&self, op: RunOp) -> Result<RunOutcome, JournalError> {
        match self.parts.journal.write(Write::Run(op)).await? {
            Written::Run(outcome) => Ok(outcome),
            other => unreachable!("a run op is answered with its outcome, not {other:?}"),
        }
    }

    /// The live progress of `run`, while it runs in this process.
    pub fn progress(&self, run: i64) -> Option<Progress> {
        self.live.lock().expect("live lock").get(&run).map(|l| l.snapshot())
    }

    /// Renders `run`'s card from its stored state and queues it as an update
    /// of every copy in its chat. Errors are logged: a card that could not be
    /// refreshed now is refreshed by the next change.
    pub async fn refresh(&self, run: i64) {
        if let Err(e) = self.try_refresh(run).await {
            tracing::error!(run, error = %e, "refreshing a run card failed");
        }
    }

    async fn try_refresh(&self, id: i64) -> anyhow::Result<()> {
        let _one_at_a_time = self.render.lock().await;
        let Some(run) = self.parts.store.run(id).await? else { return Ok(()) };
        let now = self.parts.clock.now_ms();
        let locale = self.parts.locales.for_chat(&run.chat);
        let rollbacks = self.parts.store.rollbacks_of(id).await?;
        let draft = card::render(
            &self.parts.cards,
            &self.parts.commands,
            locale,
            &run,
            self.progress(id).as_ref(),
            &rollbacks,
            now,
        )?;
        let reply = Reply {
            chat: run.chat.clone(),
            reply_to: None,
            thread: run.thread.clone().map(ThreadId::new),
            body: ReplyBody::Card { key: card_key(id), card: draft, mode: CardMode::Update },
        };
        self.enqueue(&format!("run:{id}:{now}:{}", self.renders.fetch_add(1, Ordering::Relaxed)), vec![reply]).await
    }

    async fn enqueue(&self, prefix: &str, replies: Vec<Reply>) -> anyhow::Result<()> {
        let (deliveries, tokens) = prepare(&prefix, replies, self.parts.clock.now_ms(), TOKEN_TTL);
        Ok(self.parts.outbox.commit(Write::Enqueue { deliveries: deliveries.clone(), tokens }, deliveries).await?)
    }

    /// A text into the run's chat (an interruption, an automatic rollback).
    async fn notice(&self, run: &RunView, key: &str, msg: Msg, args: &[(&str, &str)]) {
        let text = self.parts.catalog.text(self.parts.locales.for_chat(&run.chat), msg, args);
        let reply = Reply {
            chat: run.chat.clone(),
            reply_to: None,
            thread: run.thread.clone().map(ThreadId::new),
            body: ReplyBody::Text(text),
        };
        if let Err(e) = self.enqueue(&format!("run:{}:{key}", run.id), vec![reply]).await {
            tracing::error!(run = run.id, error = %e, "queueing a run notice failed");
        }
    }

    async fn notice_interrupted(&self, run: &RunView, step: Option<&str>) {
        let id = run.id.to_string();
        let args = [("id", id.as_str()), ("target", run.target.as_str()), ("step", step.unwrap_or("-"))];
        self.notice(run, "interrupted", Msg::RunInterrupted, &args).await;
    }

    /// At startup: runs a previous process left running are marked
    /// interrupted and reported in their chats. They are never re-run: only
    /// a person can tell whether the target is half-deployed.
    pub async fn recover(&self) -> Result<(), JournalError> {
        let reason = "opsclaw stopped while the run was in progress".to_owned();
        let RunOutcome::Runs(ids) = self.write(RunOp::Interrupt { reason }).await? else { return Ok(()) };
        for id in ids {
            tracing::warn!(run = id, "a run was interrupted by a restart; it is not re-run");
            if let Ok(Some(run)) = self.parts.store.run(id).await {
                self.notice_interrupted(&run, run.step.as_deref()).await;
            }
            self.refresh(id).await;
        }
        Ok(())
    }

    /// Expires pending runs whose approval time is over, until `stop`.
    pub async fn expire_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EXPIRY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            match self.parts.store.any_run_expired(self.parts.clock.now_ms()).await {
                Ok(true) => match self.write(RunOp::Expire).await {
                    Ok(RunOutcome::Runs(ids)) => {
                        for id in ids {
                            tracing::info!(run = id, "approval time over: run expired");
                            self.refresh(id).await;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expiring runs failed"),
                },
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "looking for expired runs failed"),
            }
        }
    }

    /// Starts executing `run` (which the store already moved to running).
    pub fn launch(self: &Arc<Self>, run: i64) {
        let runs = self.clone();
        self.parts.stats.runs_active.fetch_add(1, Ordering::SeqCst);
        self.tasks.spawn(async move {
            let stats = runs.parts.stats.clone();
            runs.execute(run).await;
            stats.runs_active.fetch_sub(1, Ordering::SeqCst);
            stats.progress.notify_waiters();
        });
    }

    /// Stops running steps (their process groups are killed; the runs are
    /// recorded as interrupted) and waits for the runner tasks.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn execute(self: Arc<Self>, id: i64) {
        let run = match self.parts.store.run(id).await {
            Ok(Some(run)) if run.state == "running" => run,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(run = id, error = %e, "loading a run to execute failed");
                return;
            }
        };
        let plan: Plan = match serde_json::from_str(&run.plan) {
            Ok(plan) => plan,
            Err(e) => {
                let error = format!("the stored plan is unreadable: {e}");
                self.finish(&run, "failed", None, None, String::new(), String::new(), Some(error), 0).await;
                return;
            }
        };
        let live = Arc::new(Live {
            progress: Mutex::new(Progress {
                steps: vec![StepState::Waiting; plan.steps.len()],
                tail: VecDeque::new(),
                note: None,
            }),
            dirty: false.into(),
        });
        self.live.lock().expect("live lock").insert(id, live.clone());
        tracing::info!(run = id, command = %run.command, target = %run.target, kind = %run.kind, "run started");
        self.refresh(id).await;
        let ticker = {
            let runs = self.clone();
            let live = live.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROGRESS_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if live.dirty.swap(false, Ordering::AcqRel) {
                        runs.refresh(id).await;
                    }
                }
            })
        };
        let started = Instant::now();
        let outcome = self.run_steps(&run, &plan, &live).await;
        ticker.abort();
        let _ = ticker.await;
        let duration_ms = started.elapsed().as_millis() as i64;
        self.finish(
            &run,
            outcome.state,
            outcome.step.clone(),
            outcome.exit.as_ref().and_then(Exit::code),
            outcome.output,
            outcome.digest,
            outcome.error.clone(),
            duration_ms,
        )
        .await;
        self.live.lock().expect("live lock").remove(&id);
        self.refresh(id).await;
        if let Some(undone) = run.rollback_of {
            // The undone run's card says how its rollback ended.
            self.refresh(undone).await;
        }
        tracing::info!(run = id, state = outcome.state, duration_ms, "run finished");
        if outcome.state == "interrupted" {
            self.notice_interrupted(&run, outcome.step.as_deref()).await;
        } else if outcome.verify_failed && plan.auto_rollback && run.kind == "run" && !plan.rollback.is_empty() {
            self.auto_rollback(&run, &plan).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        run: &RunView,
        state: &str,
        step: Option<String>,
        exit_code: Option<i64>,
        output: String,
        output_digest: String,
        error: Option<String>,
        duration_ms: i64,
    ) {
        let finish =
            Finish { run: run.id, state: state.into(), step, exit_code, output, output_digest, error, duration_ms };
        if let Err(e) = self.write(RunOp::Finish(Box::new(finish))).await {
            // The run stays `running` in the store; the next start reports it interrupted.
            tracing::error!(run = run.id, error = %e, "recording a run's result failed");
        }
    }

    /// After a failed verify, when the command file asks for it: the
    /// rollback runs at once as its own run (no approval: the run it undoes was approved).
    async fn auto_rollback(self: &Arc<Self>, run: &RunView, plan: &Plan) {
        let new = rollback_run(run, plan, format!("auto-rollback:{}", run.id), None, 0, None, None, true);
        let who = new.requester.clone();
        match self.write(RunOp::Request(Box::new(new))).await {
            Ok(RunOutcome::Requested { id, started: true }) => {
                tracing::info!(run = run.id, rollback = id, "verify failed: rolling back");
                let (ids, rid) = (run.id.to_string(), id.to_string());
                let version = run.from_version.clone().unwrap_or_else(|| "-".into());
                self.notice(
                    run,
                    "auto-rollback",
                    Msg::RunAutoRollback,
                    &[("id", &ids), ("rollback", &rid), ("version", &version)],
                )
                .await;
                self.refresh(run.id).await;
                self.refresh(id).await;
                self.launch(id);
            }
            Ok(RunOutcome::Locked { holder }) => {
                tracing::warn!(run = run.id, holder, by = %who.key, "automatic rollback refused: target locked");
            }
            Ok(other) => tracing::warn!(run = run.id, ?other, "automatic rollback not started"),
            Err(e) => tracing::error!(run = run.id, error = %e, "starting the automatic rollback failed"),
        }
    }

    async fn run_steps(&self, run: &RunView, plan: &Plan, live: &Live) -> StepsOutcome {
        let mut capture = Capture::new(plan.steps.first().map_or(1024, |s| s.output_cap));
        let mut output = String::new();
        let mut on_line = |line: &str| {
            live.update(|p| {
                p.tail.push_back(line.to_owned());
                while p.tail.len() > TAIL_LINES {
                    p.tail.pop_front();
                }
            })
        };
        let workdir =
            if plan.workdir.is_absolute() { plan.workdir.clone() } else { self.parts.data_dir.join(&plan.workdir) };
        for (i, step) in plan.steps.iter().enumerate() {
            if let Err(e) = self.write(RunOp::Step { run: run.id, step: step.name.clone() }).await {
                tracing::warn!(run = run.id, error = %e, "recording the current step failed");
            }
            live.update(|p| {
                p.steps[i] = StepState::Running;
                p.note = None;
            });
            output.push_str(&capture.next_step(step.output_cap));
            output.push_str(&format!("── {} ──\n", step.name));
            let result = {
                let mut sink = Sink { redactor: &self.redactor, capture: &mut capture, on_line: &mut on_line };
                self.step(step, plan, &workdir, &mut sink, live).await
            };
            let ok = result.as_ref().is_ok_and(|exit| exit.success());
            live.update(|p| p.steps[i] = if ok { StepState::Ok } else { StepState::Failed });
            if ok {
                continue;
            }
            let (exit, error) = match result {
                Ok(exit) => {
                    let error = describe(&exit, step);
                    (Some(exit), error)
                }
                Err(error) => (None, error),
            };
            let (tail, digest) = capture.finish();
            output.push_str(&tail);
            let state = if exit == Some(Exit::Cancelled) { "interrupted" } else { "failed" };
            return StepsOutcome {
                state,
                step: Some(step.name.clone()),
                verify_failed: matches!(step.kind, PlannedKind::Verify { .. }) && state == "failed",
                exit,
                error: Some(self.redactor.redact(&error).into_owned()),
                output: cap_total(output),
                digest,
            };
        }
        let (tail, digest) = capture.finish();
        output.push_str(&tail);
        StepsOutcome {
            state: "succeeded",
            step: plan.steps.last().map(|s| s.name.clone()),
            verify_failed: false,
            exit: Some(Exit::Code(0)),
            error: None,
            output: cap_total(output),
            digest,
        }
    }

    /// One step: `Ok(exit)` when it ran (successfully or not), `Err` when it could not start.
    async fn step(
        &self,
        step: &PlannedStep,
        plan: &Plan,
        workdir: &Path,
        sink: &mut Sink<'_>,
        live: &Live,
    ) -> Result<Exit, String> {
        let timeout = Duration::from_millis(step.timeout_ms);
        match step.kind {
            PlannedKind::Run => self.action(step, plan, workdir, timeout, sink).await,
            PlannedKind::Pause { ms } => {
                sink.line(&format!("pausing {}", humantime::format_duration(Duration::from_millis(ms))));
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(Exit::Code(0)),
                    () = self.stop.cancelled() => Ok(Exit::Cancelled),
                }
            }
            PlannedKind::Verify { interval_ms } => {
                let deadline = Instant::now() + timeout;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    live.update(|p| p.note = Some(format!("attempt {attempt}")));
                    sink.line(&format!("attempt {attempt}"));
                    let left = deadline.saturating_duration_since(Instant::now());
                    let exit = self.action(step, plan, workdir, left, sink).await?;
                    if exit.success() || exit == Exit::Cancelled {
                        return Ok(exit);
                    }
                    let next = Instant::now() + Duration::from_millis(interval_ms);
                    if next >= deadline {
                        sink.line(&format!("not healthy after {attempt} attempts"));
                        return Ok(if exit == Exit::TimedOut { Exit::TimedOut } else { exit });
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(next) => {}
                        () = self.stop.cancelled() => return Ok(Exit::Cancelled),
                    }
                }
            }
        }
    }

    async fn action(
        &self,
        step: &PlannedStep,
        plan: &Plan,
        workdir: &Path,
        timeout: Duration,
        sink: &mut Sink<'_>,
    ) -> Result<Exit, String> {
        match &step.action {
            PlannedAction::Argv { argv } => {
                let argv = argv.iter().map(|a| plan::with_secrets(a, &self.secrets)).collect::<Result<Vec<_>, _>>()?;
                let mut env: Vec<(String, String)> =
                    plan.env.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v))).collect();
                env.extend(plan.secrets.iter().filter_map(|k| self.secrets.get(k).map(|v| (k.clone(), v.clone()))));
                for (name, value) in &step.env {
                    env.push((name.clone(), plan::with_secrets(value, &self.secrets)?));
                }
                let command = exec::Command { argv, env, workdir: workdir.to_owned(), timeout };
                Ok(exec::run(&command, sink, &self.stop).await)
            }
            PlannedAction::Http { method, url, headers, body, expect } => {
                let url = plan::with_secrets(url, &self.secrets)?;
                let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
                let mut request = self.http.request(method, &url).timeout(timeout);
                for (name, value) in headers {
                    request = request.header(name, plan::with_secrets(value, &self.secrets)?);
                }
                if let Some(body) = body {
                    request = request.body(plan::with_secrets(body, &self.secrets)?);
                }
                let response = tokio::select! {
                    r = request.send() => r,
                    () = self.stop.cancelled() => return Ok(Exit::Cancelled),
                };
                let response = match response {
                    Ok(r) => r,
                    Err(e) if e.is_timeout() => return Ok(Exit::TimedOut),
                    Err(e) => {
                        sink.line(&format!("request failed: {e}"));
                        return Ok(Exit::Code(1));
                    }
                };
                let status = response.status().as_u16();
                sink.line(&format!("HTTP {status}"));
                let mut response = response;
                let mut read = 0usize;
                let mut lines = String::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    sink.raw(&chunk);
                    read += chunk.len();
                    lines.push_str(&String::from_utf8_lossy(&chunk));
                    if read > step.output_cap {
                        break;
                    }
                }
                for line in lines.lines() {
                    sink.line(line);
                }
                let ok = if expect.is_empty() { (200..300).contains(&status) } else { expect.contains(&status) };
                Ok(if ok { Exit::Code(0) } else { Exit::Code(i32::from(status)) })
            }
            PlannedAction::None => Ok(Exit::Code(0)),
        }
    }
}

struct StepsOutcome {
    state: &'static str,
    step: Option<String>,
    verify_failed: bool,
    exit: Option<Exit>,
    error: Option<String>,
    output: String,
    digest: String,
}

/// Stored output of a whole run: each step is capped already; this bounds a run of many steps.
fn cap_total(output: String) -> String {
    const MAX: usize = 1024 * 1024;
    if output.len() <= MAX {
        return output;
    }
    let mut cut = output.len() - MAX;
    while !output.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[… {} omitted …]\n{}", exec::human_bytes(cut as u64), &output[cut..])
}

fn describe(exit: &Exit, step: &PlannedStep) -> String {
    let timeout = humantime::format_duration(Duration::from_millis(step.timeout_ms));
    match exit {
        Exit::Code(code) => match step.action {
            PlannedAction::Http { .. } if *code >= 100 => format!("answered HTTP {code}"),
            _ => format!("exited with code {code}"),
        },
        Exit::Signal(signal) => format!("killed by signal {signal}"),
        Exit::TimedOut => format!("timed out after {timeout}; its process group was killed"),
        Exit::Cancelled => "stopped: opsclaw is shutting down".into(),
        Exit::SpawnFailed(e) => e.clone(),
    }
}

/// The run that undoes `run`: its rollback steps (or its steps with the
/// previous version), on the same target.
#[allow(clippy::too_many_arguments)]
pub fn rollback_run(
    run: &RunView,
    plan: &Plan,
    event_id: String,
    requester: Option<crate::store::Who>,
    approvals_needed: i64,
    approver_role: Option<String>,
    expires_at: Option<i64>,
    start: bool,
) -> crate::store::NewRun {
    let rollback_plan = Plan {
        steps: plan.rollback.clone(),
        rollback: Vec::new(),
        auto_rollback: false,
        workdir: plan.workdir.clone(),
        env: plan.env.clone(),
        secrets: plan.secrets.clone(),
    };
    let requester = requester.unwrap_or_else(|| crate::store::Who {
        key: "opsclaw".into(),
        id: "opsclaw".into(),
        chat: Some(run.chat.to_string()),
        message: None,
    });
    crate::store::NewRun {
        event_id,
        command: run.command.clone(),
        kind: "rollback".into(),
        target: run.target.clone(),
        app: run.app.clone(),
        env: run.env.clone(),
        version: run.from_version.clone(),
        from_version: run.version.clone(),
        rollback_of: Some(run.id),
        args: run.args.clone(),
        plan: serde_json::to_string(&rollback_plan).expect("a plan serializes"),
        requester,
        chat: run.chat.clone(),
        thread: run.thread.clone(),
        approvals_needed,
        approver_role,
        expires_at,
        start,
    }
}
