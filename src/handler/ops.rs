//! Ops commands (`handler = "run"`), `/rollback`, `/history`, `/audit` and
//! the buttons of run cards. A request becomes a pending run and its preview
//! card; every later change goes through a [`RunOp`] (with its audit entry)
//! and the card is re-rendered by [`Runs::refresh`]. Refusals are answered
//! in the chat and recorded in the audit log.

use std::sync::Arc;
use std::time::Duration;

use minijinja::context;

use super::{Ctx, HandlerError};
use crate::action::Action;
use crate::card::CardId;
use crate::clock::{format_duration, format_ms};
use crate::command::{ArgValue, Args, CommandSpec};
use crate::i18n::Msg;
use crate::ops::plan::{self, Plan, Vars};
use crate::ops::{Runs, card, card_key, rollback_run};
use crate::reply::{CardKey, CardMode, Reply};
use crate::store::{AuditEntry, NewRun, RunOp, RunOutcome, RunView, Who};

const HISTORY_ROWS: i64 = 20;
const AUDIT_DEFAULT: i64 = 20;
const AUDIT_MAX: i64 = 100;

fn runs<'a>(ctx: &'a Ctx<'_>) -> &'a Arc<Runs> {
    &ctx.bot.runs
}

pub(super) fn who(ctx: &Ctx<'_>) -> Who {
    Who {
        key: ctx.principal.key().to_owned(),
        id: ctx.principal.platform_id.clone(),
        chat: Some(ctx.event.chat.to_string()),
        message: ctx.event.message_id.as_ref().map(|m| m.as_str().to_owned()),
    }
}

pub(super) fn text(ctx: &Ctx<'_>, msg: Msg, args: &[(&str, &str)]) -> Vec<Reply> {
    vec![Reply::text(ctx.event, ctx.t(msg, args))]
}

fn state_name(ctx: &Ctx<'_>, state: &str) -> String {
    ctx.bot.catalog.lookup(ctx.locale, &format!("run.state_{state}"), &[]).unwrap_or_else(|| state.to_owned())
}

/// The arguments as typed, for the run row and the audit log (redacted).
fn args_json(runs: &Runs, args: &Args) -> String {
    let map: serde_json::Map<String, serde_json::Value> = args
        .iter()
        .map(|(k, v)| {
            let v = match v {
                ArgValue::Str(s) => serde_json::Value::from(runs.redactor.redact(s).into_owned()),
                ArgValue::Int(n) => serde_json::Value::from(*n),
                ArgValue::Duration(d) => serde_json::Value::from(humantime::format_duration(*d).to_string()),
                ArgValue::Flag(b) => serde_json::Value::from(*b),
            };
            (k.to_owned(), v)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Records a refusal of `command` that changed nothing.
pub async fn audit_refusal(
    ctx: &Ctx<'_>,
    command: &str,
    args: Option<String>,
    result: &str,
    detail: String,
) -> Result<(), HandlerError> {
    let by = who(ctx);
    let entry = AuditEntry {
        actor: by.key,
        actor_id: by.id,
        action: "refuse".into(),
        command: command.to_owned(),
        args,
        result: result.to_owned(),
        chat: by.chat,
        message_id: by.message,
        detail: Some(runs(ctx).redactor.redact(&detail).into_owned()),
        ..AuditEntry::default()
    };
    runs(ctx).write(RunOp::Audit(Box::new(entry))).await?;
    Ok(())
}

/// `/deploy …` and every other command with a `[run]` section.
pub async fn request(ctx: &Ctx<'_>, command: &CommandSpec, args: &Args) -> Result<Vec<Reply>, HandlerError> {
    let runs = runs(ctx);
    let spec = command.run.as_ref().expect("handler `run` commands have a [run] section");
    let args_text = args_json(runs, args);
    let refuse = |reason: String| {
        let args_text = args_text.clone();
        async move {
            audit_refusal(ctx, &command.name, Some(args_text), "refused", reason.clone()).await?;
            Ok::<_, HandlerError>(text(ctx, Msg::RunCannotPlan, &[("command", &command.name), ("reason", &reason)]))
        }
    };
    if let Err(e) = plan::check_args(args) {
        return refuse(e.to_string()).await;
    }
    let (app, env, version) = match &spec.history {
        Some(h) => (
            args.str(&h.app).map(str::to_owned),
            h.env.as_deref().and_then(|e| args.str(e)).map(str::to_owned),
            args.str(&h.version).map(str::to_owned),
        ),
        None => (None, None, None),
    };
    if let Some(env) = &env
        && !spec.environments.is_empty()
        && !spec.environments.contains(env)
    {
        let allowed = spec.environments.join(", ");
        audit_refusal(
            ctx,
            &command.name,
            Some(args_text.clone()),
            "refused",
            format!("environment `{env}` is not allowed"),
        )
        .await?;
        return Ok(text(
            ctx,
            Msg::RunEnvNotAllowed,
            &[("command", &command.name), ("env", env), ("allowed", &allowed)],
        ));
    }
    if let Some(missing) = spec.secrets.iter().find(|s| !runs.secrets.contains_key(*s)) {
        return refuse(format!("the secret {missing} is not set in opsclaw's environment")).await;
    }
    let current = match &app {
        Some(app) => ctx.bot.store.deployed_version(app, env.as_deref()).await?,
        None => None,
    };
    let requester = ctx.principal.key().to_owned();
    let vars = Vars {
        requester: &requester,
        current_version: current.as_deref(),
        opsclaw: &runs.opsclaw,
        data_dir: &runs.parts.data_dir,
    };
    let target = match plan::target(spec, args, &vars) {
        Ok(t) if !t.is_empty() => t,
        Ok(_) => return refuse("the target renders empty".into()).await,
        Err(e) => return refuse(e.to_string()).await,
    };
    let workdir = spec.workdir.clone().unwrap_or_else(|| ".".into());
    let plan = match plan::render(spec, args, &vars, &target, workdir) {
        Ok(plan) => plan,
        Err(e) => return refuse(e.to_string()).await,
    };
    let approval = spec.approval_for(env.as_deref(), false);
    let now = ctx.bot.clock.now_ms();
    let new = NewRun {
        event_id: ctx.event.id.as_str().to_owned(),
        command: command.name.clone(),
        kind: "run".into(),
        target,
        app,
        env,
        version,
        from_version: current,
        rollback_of: None,
        args: args_text,
        plan: serde_json::to_string(&plan).expect("a plan serializes"),
        requester: who(ctx),
        chat: ctx.event.chat.clone(),
        thread: ctx.event.thread.as_ref().map(|t| t.as_str().to_owned()),
        approvals_needed: approval.map_or(0, |a| i64::from(a.approvers)),
        approver_role: approval.map(|a| a.role.as_str().to_owned()),
        expires_at: Some(now + approval.map_or(Duration::from_secs(3600), |a| a.expires).as_millis() as i64),
        start: false,
    };
    submit(ctx, new).await
}

/// Stores a new run and answers with its preview card (or why it cannot run now).
async fn submit(ctx: &Ctx<'_>, new: NewRun) -> Result<Vec<Reply>, HandlerError> {
    let runs = runs(ctx);
    let target = new.target.clone();
    match runs.write(RunOp::Request(Box::new(new))).await? {
        RunOutcome::Requested { id, .. } | RunOutcome::Existing(id) => {
            let Some(run) = ctx.bot.store.run(id).await? else {
                return Ok(text(ctx, Msg::RunNotFound, &[("id", &id.to_string())]));
            };
            tracing::info!(run = id, command = %run.command, target = %run.target, by = %run.requester, "run requested");
            let card =
                card::render(&ctx.bot.cards, &ctx.bot.commands, ctx.locale, &run, None, &[], ctx.bot.clock.now_ms())?;
            Ok(vec![Reply::card(ctx.event, card_key(id), card, CardMode::New)])
        }
        RunOutcome::Locked { holder } => {
            let (state, who) = match ctx.bot.store.run(holder).await? {
                Some(h) => (state_name(ctx, &h.state), h.requester),
                None => (String::new(), String::new()),
            };
            let holder = holder.to_string();
            Ok(text(ctx, Msg::RunLocked, &[("target", &target), ("holder", &holder), ("state", &state), ("who", &who)]))
        }
        other => {
            tracing::error!(?other, "a run request was answered unexpectedly");
            Ok(Vec::new())
        }
    }
}

/// `/rollback APP [ENV]`: undoes the newest deployment of the app there.
pub async fn rollback_command(ctx: &Ctx<'_>, args: &Args) -> Result<Vec<Reply>, HandlerError> {
    let app = args.str("app").unwrap_or_default();
    let env = args.str("env");
    match ctx.bot.store.last_deployment(app, env).await? {
        Some(run) => rollback(ctx, &run).await,
        None => {
            audit_refusal(ctx, "rollback", None, "refused", format!("no deployment of {app} to roll back")).await?;
            let shown = format!("{app} {}", env.unwrap_or(""));
            Ok(text(ctx, Msg::RunNothingToRollBack, &[("app", shown.trim())]))
        }
    }
}

async fn rollback(ctx: &Ctx<'_>, run: &RunView) -> Result<Vec<Reply>, HandlerError> {
    let ids = run.id.to_string();
    let refuse = |detail: String| audit_refusal(ctx, &run.command, Some(run.args.clone()), "refused", detail);
    if let Some(done) =
        ctx.bot.store.rollbacks_of(run.id).await?.into_iter().find(|r| r.is_active() || r.state == "succeeded")
    {
        refuse(format!("run #{} is already rolled back by #{}", run.id, done.id)).await?;
        let state = state_name(ctx, &done.state);
        return Ok(text(
            ctx,
            Msg::RunAlreadyRolledBack,
            &[("id", &ids), ("rollback", &done.id.to_string()), ("state", &state)],
        ));
    }
    let Some(command) = ctx.bot.commands.get(&run.command).filter(|c| c.run.is_some()) else {
        refuse(format!("/{} no longer exists", run.command)).await?;
        return Ok(text(ctx, Msg::RunCommandGone, &[("id", &ids), ("command", &run.command)]));
    };
    // Undoing a deployment needs what making it needed.
    if let Err(crate::policy::Denial::MissingRole { role }) =
        ctx.bot.policy.check_role(ctx.principal, command.role.as_ref())
    {
        refuse(format!("missing role {role} to roll back /{}", run.command)).await?;
        let roles = super::roles_text(ctx);
        return Ok(text(
            ctx,
            Msg::RunRollbackRole,
            &[("command", &run.command), ("role", role.as_str()), ("roles", &roles)],
        ));
    }
    let plan: Plan = match serde_json::from_str(&run.plan) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::error!(run = run.id, error = %e, "a stored plan is unreadable");
            return Ok(text(ctx, Msg::RunNoWayBack, &[("id", &ids)]));
        }
    };
    if plan.rollback.is_empty() {
        refuse(format!("run #{} has no way back", run.id)).await?;
        return Ok(text(ctx, Msg::RunNoWayBack, &[("id", &ids)]));
    }
    let spec = command.run.as_ref().expect("filtered above");
    let approval = spec.approval_for(run.env.as_deref(), true);
    let now = ctx.bot.clock.now_ms();
    let mut new = rollback_run(
        run,
        &plan,
        ctx.event.id.as_str().to_owned(),
        Some(who(ctx)),
        approval.map_or(0, |a| i64::from(a.approvers)),
        approval.map(|a| a.role.as_str().to_owned()),
        Some(now + approval.map_or(Duration::from_secs(3600), |a| a.expires).as_millis() as i64),
        false,
    );
    // The rollback's card goes where it was asked for.
    new.chat = ctx.event.chat.clone();
    new.thread = ctx.event.thread.as_ref().map(|t| t.as_str().to_owned());
    if let Some(app) = &run.app {
        new.from_version = ctx.bot.store.deployed_version(app, run.env.as_deref()).await?.or(new.from_version);
    }
    let replies = submit(ctx, new).await?;
    runs(ctx).refresh(run.id).await;
    Ok(replies)
}

/// A button on a run card.
pub async fn press(ctx: &Ctx<'_>, action: &Action) -> Result<Vec<Reply>, HandlerError> {
    let runs = runs(ctx);
    let id = match *action {
        Action::RunApprove { run }
        | Action::RunReject { run }
        | Action::RunCancel { run }
        | Action::RunStart { run }
        | Action::RunRollback { run } => run,
        _ => unreachable!("not a run action"),
    };
    let ids = id.to_string();
    let Some(run) = ctx.bot.store.run(id).await? else {
        return Ok(text(ctx, Msg::RunNotFound, &[("id", &ids)]));
    };
    let by = who(ctx);
    let outcome = match action {
        Action::RunRollback { .. } => return rollback(ctx, &run).await,
        Action::RunApprove { .. } | Action::RunReject { .. } => {
            let role = run.approver_role.clone().unwrap_or_default();
            let allowed = crate::policy::Role::parse(&role)
                .is_ok_and(|r| ctx.bot.policy.check_role(ctx.principal, Some(&r)).is_ok());
            if !allowed {
                let verb = if matches!(action, Action::RunApprove { .. }) { "approve" } else { "reject" };
                let entry = AuditEntry {
                    actor: by.key.clone(),
                    actor_id: by.id.clone(),
                    action: verb.into(),
                    command: run.command.clone(),
                    run_id: Some(id),
                    target: Some(run.target.clone()),
                    args: Some(run.args.clone()),
                    result: "refused".into(),
                    chat: by.chat.clone(),
                    message_id: by.message.clone(),
                    detail: Some(format!("missing role {role}")),
                    ..AuditEntry::default()
                };
                runs.write(RunOp::Audit(Box::new(entry))).await?;
                tracing::info!(run = id, by = %by.key, role, "approval refused: missing role");
                let roles = super::roles_text(ctx);
                return Ok(text(ctx, Msg::RunApproverRole, &[("id", &ids), ("role", &role), ("roles", &roles)]));
            }
            if matches!(action, Action::RunApprove { .. }) {
                runs.write(RunOp::Approve { run: id, by }).await?
            } else {
                runs.write(RunOp::Reject { run: id, by }).await?
            }
        }
        Action::RunCancel { .. } => runs.write(RunOp::Cancel { run: id, by }).await?,
        Action::RunStart { .. } => runs.write(RunOp::Start { run: id, by }).await?,
        _ => unreachable!("matched above"),
    };
    let changed =
        matches!(outcome, RunOutcome::Started | RunOutcome::Approved { .. } | RunOutcome::Done | RunOutcome::Expired);
    let replies = match outcome {
        RunOutcome::Started => {
            runs.launch(id);
            Vec::new()
        }
        RunOutcome::Approved { .. } | RunOutcome::Done => Vec::new(),
        RunOutcome::SelfApproval => {
            let role = run.approver_role.clone().unwrap_or_default();
            tracing::info!(run = id, by = %ctx.principal.key(), "self-approval refused");
            text(ctx, Msg::RunSelfApproval, &[("id", &ids), ("role", &role)])
        }
        RunOutcome::AlreadyApproved => text(ctx, Msg::RunAlreadyApproved, &[("id", &ids)]),
        RunOutcome::Expired => {
            let at = run.expires_at.map(format_ms).unwrap_or_default();
            text(ctx, Msg::RunExpired, &[("id", &ids), ("at", &at)])
        }
        RunOutcome::NotPending(state) => {
            let state = state_name(ctx, &state);
            text(ctx, Msg::RunNotPending, &[("id", &ids), ("state", &state)])
        }
        RunOutcome::NotFound => text(ctx, Msg::RunNotFound, &[("id", &ids)]),
        other => {
            tracing::error!(?other, "a run action was answered unexpectedly");
            Vec::new()
        }
    };
    if changed {
        runs.refresh(id).await;
    }
    Ok(replies)
}

/// `/history APP [ENV]`
pub async fn history(ctx: &Ctx<'_>, args: &Args) -> Result<Vec<Reply>, HandlerError> {
    let app = args.str("app").unwrap_or_default();
    let env = args.str("env");
    let rows = ctx.bot.store.deployments(app, env, HISTORY_ROWS).await?;
    // Without an environment, what runs where: one version per environment seen.
    let current = match env {
        Some(_) => ctx.bot.store.deployed_version(app, env).await?,
        None => {
            let mut envs: Vec<&str> = rows.iter().filter_map(|r| r.env.as_deref()).collect();
            envs.sort_unstable();
            envs.dedup();
            let mut shown = Vec::new();
            for e in envs {
                if let Some(v) = ctx.bot.store.deployed_version(app, Some(e)).await? {
                    shown.push(format!("{v} ({e})"));
                }
            }
            if shown.is_empty() { ctx.bot.store.deployed_version(app, None).await? } else { Some(shown.join(", ")) }
        }
    };
    let runs: Vec<_> = rows
        .iter()
        .map(|r| {
            let duration = match (r.started_at, r.finished_at) {
                (Some(s), Some(f)) => Some(format_duration(Duration::from_millis((f - s).max(0) as u64))),
                _ => None,
            };
            context! {
                id => r.id, kind => r.kind, version => r.version, env => r.env, state => r.state,
                requester => r.requester, at => format_ms(r.created_at), duration => duration,
            }
        })
        .collect();
    let values = context! { app => app, env => env, current => current, runs => runs };
    let card = ctx.bot.cards.render(CardId::RUN_HISTORY, ctx.locale, &values, Vec::new())?;
    Ok(vec![Reply::card(ctx.event, CardKey::new(format!("history:{}", ctx.event.id)), card, CardMode::New)])
}

/// `/audit [N]`
pub async fn audit(ctx: &Ctx<'_>, args: &Args) -> Result<Vec<Reply>, HandlerError> {
    let n = args.int("n").unwrap_or(AUDIT_DEFAULT).clamp(1, AUDIT_MAX);
    let entries: Vec<_> = ctx
        .bot
        .store
        .audit_log(n)
        .await?
        .into_iter()
        .map(|a| {
            let e = a.entry;
            context! {
                at => format_ms(a.at_ms), actor => e.actor, action => e.action, command => e.command,
                run => e.run_id, target => e.target, result => e.result, exit_code => e.exit_code,
                duration => e.duration_ms.map(|ms| format_duration(Duration::from_millis(ms.max(0) as u64))),
                detail => e.detail, digest => e.output_digest,
            }
        })
        .collect();
    let values = context! { entries => entries };
    let card = ctx.bot.cards.render(CardId::AUDIT, ctx.locale, &values, Vec::new())?;
    Ok(vec![Reply::card(ctx.event, CardKey::new(format!("audit:{}", ctx.event.id)), card, CardMode::New)])
}
