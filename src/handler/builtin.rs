//! The built-in commands: `/help`, `/ping`, `/whoami`, `/status`, and the
//! button actions their cards carry; alert commands and buttons go to `alerts.rs`.

use minijinja::{Value, context};

use super::{Ctx, HandlerError};
use crate::action::{Action, ActionToken, Grant};
use crate::card::CardId;
use crate::clock::{format_duration, format_ms};
use crate::command::{ArgKind, Builtin, CommandSpec};
use crate::i18n::Msg;
use crate::reply::{CardKey, CardMode, Reply};
use crate::router::Invocation;

pub async fn invoke(ctx: &Ctx<'_>, invocation: &Invocation) -> Result<Vec<Reply>, HandlerError> {
    let args = &invocation.args;
    match invocation.command.handler {
        Builtin::Ping => {
            let text = match args.str("text") {
                Some(text) => ctx.t(Msg::PongWith, &[("text", text)]),
                None => ctx.t(Msg::Pong, &[]),
            };
            Ok(vec![Reply::text(ctx.event, text)])
        }
        Builtin::Whoami => whoami(ctx),
        Builtin::Help => help(ctx, args.str("command")),
        Builtin::Status => {
            let key = CardKey::new(format!("status:{}", ctx.event.id));
            Ok(vec![status_card(ctx, key, CardMode::New, invocation.command.role.clone()).await?])
        }
        alert @ (Builtin::Alerts | Builtin::Ack | Builtin::Silence | Builtin::Alert | Builtin::Oncall) => {
            super::alerts::invoke(ctx, alert, args).await
        }
        Builtin::Run => super::ops::request(ctx, &invocation.command, args).await,
        Builtin::Rollback => super::ops::rollback_command(ctx, args).await,
        Builtin::History => super::ops::history(ctx, args).await,
        Builtin::Audit => super::ops::audit(ctx, args).await,
        Builtin::Kb => super::kb::kb(ctx, args.str("query").unwrap_or_default()).await,
        Builtin::Ask => super::kb::ask(ctx, args.str("question").unwrap_or_default()).await,
        Builtin::Logs => super::logs::logs(ctx, args).await,
    }
}

/// A button press: the token must exist, belong to this chat, be unexpired,
/// and the presser must pass the grant's role and audience.
pub async fn press(ctx: &Ctx<'_>, token: &ActionToken) -> Result<Vec<Reply>, HandlerError> {
    let stored = ctx.bot.store.grant(token).await?.ok_or(HandlerError::UnknownToken)?;
    // A token from another chat is as good as forged: buttons only work where they were posted.
    if stored.chat != ctx.event.chat {
        return Err(HandlerError::UnknownToken);
    }
    if stored.expires_at_ms < ctx.bot.clock.now_ms() {
        return Err(HandlerError::ExpiredToken { expired_at_ms: stored.expires_at_ms });
    }
    let policy = &ctx.bot.policy;
    policy.check_role(ctx.principal, stored.grant.role.as_ref()).map_err(HandlerError::ButtonDenied)?;
    policy.check_audience(ctx.principal, &stored.grant.only).map_err(HandlerError::ButtonDenied)?;
    tracing::info!(action = ?stored.grant.action, by = ctx.principal.key(), "button pressed");
    match stored.grant.action {
        Action::RefreshStatus => {
            Ok(vec![status_card(ctx, stored.card_key, CardMode::Update, stored.grant.role).await?])
        }
        ref run @ (Action::RunApprove { .. }
        | Action::RunReject { .. }
        | Action::RunCancel { .. }
        | Action::RunStart { .. }
        | Action::RunRollback { .. }) => super::ops::press(ctx, run).await,
        ref logs @ (Action::LogsPage { .. } | Action::LogsDownload { .. }) => super::logs::press(ctx, logs).await,
        ref alert => super::alerts::press(ctx, alert).await,
    }
}

fn whoami(ctx: &Ctx<'_>) -> Result<Vec<Reply>, HandlerError> {
    let p = ctx.principal;
    let roles: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
    let values = context! {
        name => p.name,
        platform_id => p.platform_id,
        display_name => ctx.event.sender.display_name,
        roles => roles,
        chat => ctx.event.chat.to_string(),
        locale => ctx.locale.as_str(),
    };
    let card = ctx.bot.cards.render(CardId::WHOAMI, ctx.locale, &values, Vec::new())?;
    let key = CardKey::new(format!("whoami:{}", ctx.event.id));
    Ok(vec![Reply::card(ctx.event, key, card, CardMode::New)])
}

fn help(ctx: &Ctx<'_>, topic: Option<&str>) -> Result<Vec<Reply>, HandlerError> {
    let commands = &ctx.bot.commands;
    let key = CardKey::new(format!("help:{}", ctx.event.id));
    let Some(topic) = topic else {
        let list: Vec<Value> = commands.iter().map(|c| command_value(ctx, c)).collect();
        let card = ctx.bot.cards.render(CardId::HELP, ctx.locale, &context! { commands => list }, Vec::new())?;
        return Ok(vec![Reply::card(ctx.event, key, card, CardMode::New)]);
    };
    let name = topic.trim_start_matches(['/', '／']);
    let Some(spec) = commands.get(name) else {
        let text = match commands.closest(name) {
            Some(s) => ctx.t(Msg::UnknownCommandSuggest, &[("name", name), ("suggestion", s)]),
            None => ctx.t(Msg::UnknownCommand, &[("name", name)]),
        };
        return Ok(vec![Reply::text(ctx.event, text)]);
    };
    let card = ctx.bot.cards.render(CardId::HELP_COMMAND, ctx.locale, &command_value(ctx, spec), Vec::new())?;
    Ok(vec![Reply::card(ctx.event, key, card, CardMode::New)])
}

fn command_value(ctx: &Ctx<'_>, spec: &CommandSpec) -> Value {
    let args: Vec<Value> = spec
        .args
        .iter()
        .map(|a| {
            let kind = match &a.kind {
                ArgKind::Word { pattern: Some(p) } => format!("word {}", p.as_str()),
                ArgKind::Word { pattern: None } => "word".to_owned(),
                ArgKind::Text | ArgKind::Words => "text".to_owned(),
                ArgKind::Int { .. } => "int".to_owned(),
                ArgKind::Duration => "duration".to_owned(),
                ArgKind::Choice(c) => c.join(" | "),
                ArgKind::Flag => "flag".to_owned(),
            };
            context! {
                name => if a.option { format!("--{}", a.name) } else { a.name.clone() },
                kind => kind,
                required => a.required,
                help => a.help.as_ref().map(|h| h.get(ctx.locale)),
            }
        })
        .collect();
    context! {
        name => spec.name,
        usage => spec.usage(),
        summary => spec.summary.get(ctx.locale),
        aliases => spec.aliases,
        role => spec.role.as_ref().map(|r| r.as_str()),
        allowed => ctx.bot.policy.check_role(ctx.principal, spec.role.as_ref()).is_ok(),
        args => args,
    }
}

async fn status_card(
    ctx: &Ctx<'_>,
    key: CardKey,
    mode: CardMode,
    role: Option<crate::policy::Role>,
) -> Result<Reply, HandlerError> {
    let bot = ctx.bot;
    let now = bot.clock.now_ms();
    let channels: Vec<Value> = bot
        .channels
        .snapshot()
        .into_iter()
        .map(|(name, s)| {
            let detail = s.state.detail().map(str::to_owned);
            context! {
                name => name,
                state => s.state.label(),
                detail => detail,
                reconnects => s.reconnects,
                last_event_age => s.last_event_ms.map(|t| format_duration(std::time::Duration::from_millis((now - t).max(0) as u64))),
            }
        })
        .collect();
    let age = |ms: i64| format_duration(std::time::Duration::from_millis(ms.max(0) as u64));
    let live = bot.store.live_replicas(now).await?;
    let name_of = |id: &str| live.iter().find(|r| r.id == id).map_or_else(|| id.to_owned(), |r| r.name.clone());
    let replicas: Vec<Value> = live
        .iter()
        .map(|r| {
            context! {
                name => r.name,
                this => r.id == bot.store.replica(),
                seen_age => age(now - r.seen_at_ms),
                up => age(now - r.started_at_ms),
                version => r.version,
            }
        })
        .collect();
    let leases: Vec<Value> = bot
        .store
        .leases()
        .await?
        .into_iter()
        .map(|l| {
            // An expired lease is free for the next replica to take.
            let holder = l.holder.filter(|_| l.expires_at_ms > now).map(|h| name_of(&h));
            context! { name => l.name, holder => holder, token => l.token, left => age(l.expires_at_ms - now) }
        })
        .collect();
    let values = context! {
        version => env!("CARGO_PKG_VERSION"),
        uptime => format_duration(bot.clock.uptime()),
        now => format_ms(now),
        backend => format!("{:?}", bot.store.backend()).to_lowercase(),
        channels => channels,
        replicas => replicas,
        leases => leases,
        // The event asking is itself in flight and pending while this runs; count only the others.
        queued => (bot.stats.in_flight() - 1).max(0),
        inbox_pending => (bot.store.inbox_pending_count().await? - 1).max(0),
        outbox_pending => bot.store.outbox_pending_count().await?,
        alerts_firing => match bot.alerts {
            Some(_) => Some(bot.store.count_firing_alert_groups().await?),
            None => None,
        },
    };
    let grants = vec![("refresh", Grant::new(Action::RefreshStatus, role))];
    let card = bot.cards.render(CardId::STATUS, ctx.locale, &values, grants)?;
    Ok(Reply::card(ctx.event, key, card, mode))
}
