//! `/alerts`, `/ack`, `/silence`, `/alert` and the buttons on alert cards.
//! Every change goes through [`Alerts::apply`], whose conditional updates
//! decide races (one Ack wins, the other is told who was first); the card
//! itself is refreshed by the notifier in every chat it was posted in.

use std::time::Duration;

use minijinja::context;

use super::{Ctx, HandlerError};
use crate::action::Action;
use crate::alert::Alerts;
use crate::alert::alertmanager::NewSilence;
use crate::alert::card::{self, ButtonRoles};
use crate::alert::model::GroupView;
use crate::alert::oncall::Rotation;
use crate::card::CardId;
use crate::clock::{format_duration, format_ms};
use crate::command::{Args, Builtin};
use crate::i18n::Msg;
use crate::reply::{CardKey, CardMode, Reply};
use crate::store::{AlertOp, OpOutcome};

/// Group cards `/alerts` posts; the rest are listed on one card.
const LISTED_CARDS: usize = 5;
const MAX_SILENCE: Duration = Duration::from_secs(30 * 86_400);
/// Alertmanager silences one click may create (one per firing alert of the group).
const MAX_SILENCES: i64 = 100;

pub async fn invoke(ctx: &Ctx<'_>, builtin: Builtin, args: &Args) -> Result<Vec<Reply>, HandlerError> {
    let Some(alerts) = ctx.bot.alerts.as_deref() else {
        return Ok(vec![Reply::text(ctx.event, ctx.t(Msg::AlertsNotEnabled, &[]))]);
    };
    let id = || args.str("id").and_then(|s| s.trim_start_matches('#').parse::<i64>().ok()).unwrap_or(0);
    let replies = match builtin {
        Builtin::Oncall => return oncall(ctx, alerts),
        Builtin::Alerts => return list(ctx).await,
        Builtin::Alert => return show(ctx, id()).await,
        Builtin::Ack => ack(ctx, alerts, id(), false).await?,
        Builtin::Silence => silence(ctx, alerts, id(), args.duration("duration").unwrap_or_default(), false).await?,
        other => unreachable!("/{} is not an alert command", other.as_str()),
    };
    Ok(replies.into_iter().map(|text| Reply::text(ctx.event, text)).collect())
}

/// A button on an alert card. Success shows on the card itself; only a
/// refusal or a failure is answered in the chat.
pub async fn press(ctx: &Ctx<'_>, action: &Action) -> Result<Vec<Reply>, HandlerError> {
    let Some(alerts) = ctx.bot.alerts.as_deref() else {
        return Ok(vec![Reply::text(ctx.event, ctx.t(Msg::AlertsNotEnabled, &[]))]);
    };
    let texts = match *action {
        Action::AlertAck { group } => ack(ctx, alerts, group, true).await?,
        Action::AlertSilence { group, hours } => {
            silence(ctx, alerts, group, Duration::from_secs(u64::from(hours) * 3600), true).await?
        }
        Action::AlertUnsilence { group } => unsilence(ctx, alerts, group).await?,
        Action::AlertResolve { group } => resolve(ctx, alerts, group).await?,
        _ => unreachable!("not an alert action"),
    };
    Ok(texts.into_iter().map(|text| Reply::text(ctx.event, text)).collect())
}

/// Who did it, as the card shows it: the configured name, else the platform's display name.
fn actor(ctx: &Ctx<'_>) -> String {
    match (&ctx.principal.name, ctx.event.sender.display_name.trim()) {
        (Some(name), _) => name.clone(),
        (None, "") => ctx.principal.platform_id.clone(),
        (None, shown) => shown.to_owned(),
    }
}

fn title(group: &GroupView) -> String {
    group.labels.get("alertname").cloned().unwrap_or_else(|| group.key.clone())
}

pub fn button_roles(ctx: &Ctx<'_>) -> ButtonRoles {
    ButtonRoles::from_commands(&ctx.bot.commands)
}

async fn group_or_text(ctx: &Ctx<'_>, id: i64) -> Result<Result<GroupView, String>, HandlerError> {
    Ok(ctx.bot.store.alert_group(id).await?.ok_or_else(|| ctx.t(Msg::AlertNotFound, &[("id", &id.to_string())])))
}

async fn ack(ctx: &Ctx<'_>, alerts: &Alerts, id: i64, button: bool) -> Result<Vec<String>, HandlerError> {
    let group = match group_or_text(ctx, id).await? {
        Ok(group) => group,
        Err(text) => return Ok(vec![text]),
    };
    let ids = id.to_string();
    let text = match alerts.apply(AlertOp::Ack { group: id, by: actor(ctx) }).await? {
        OpOutcome::Done if button => return Ok(Vec::new()),
        OpOutcome::Done | OpOutcome::Unchanged => ctx.t(Msg::AlertAckDone, &[("id", &ids), ("title", &title(&group))]),
        OpOutcome::Already { by, at_ms } => {
            ctx.t(Msg::AlertAckAlready, &[("id", &ids), ("who", &by), ("at", &format_ms(at_ms))])
        }
        OpOutcome::Resolved => ctx.t(Msg::AlertIsResolved, &[("id", &ids)]),
        OpOutcome::NotFound => ctx.t(Msg::AlertNotFound, &[("id", &ids)]),
    };
    Ok(vec![text])
}

async fn silence(
    ctx: &Ctx<'_>,
    alerts: &Alerts,
    id: i64,
    duration: Duration,
    button: bool,
) -> Result<Vec<String>, HandlerError> {
    let group = match group_or_text(ctx, id).await? {
        Ok(group) => group,
        Err(text) => return Ok(vec![text]),
    };
    let ids = id.to_string();
    if duration > MAX_SILENCE || duration.is_zero() {
        return Ok(vec![ctx.t(Msg::AlertSilenceTooLong, &[("max", &format_duration(MAX_SILENCE))])]);
    }
    if !group.firing {
        return Ok(vec![ctx.t(Msg::AlertIsResolved, &[("id", &ids)])]);
    }
    let by = actor(ctx);
    let now = ctx.bot.clock.now_ms();
    let until_ms = now + duration.as_millis() as i64;
    match alerts.apply(AlertOp::SilenceClaim { group: id, by: by.clone(), until_ms }).await? {
        OpOutcome::Done => {}
        OpOutcome::Already { by, at_ms } => {
            return Ok(vec![ctx.t(Msg::AlertSilenceAlready, &[("id", &ids), ("who", &by), ("at", &format_ms(at_ms))])]);
        }
        _ => return Ok(vec![ctx.t(Msg::AlertNotFound, &[("id", &ids)])]),
    }
    // Alertmanager's alerts are silenced there, so it stops notifying; other
    // sources' groups are silenced here only.
    let mut created = Vec::new();
    if let (Some(am), "alertmanager") = (&alerts.alertmanager, group.source.as_str()) {
        let firing = ctx.bot.store.group_alerts(id, MAX_SILENCES).await?;
        let comment = format!(
            "opsclaw: alert group #{id} silenced for {} from chat {}",
            format_duration(duration),
            ctx.event.chat
        );
        for alert in firing.iter().filter(|a| a.status == crate::alert::source::AlertStatus::Firing) {
            let request = NewSilence {
                matchers: alert.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                starts_at_ms: now,
                ends_at_ms: until_ms,
                created_by: by.clone(),
                comment: comment.clone(),
            };
            match am.create_silence(&request).await {
                Ok(silence_id) => created.push(silence_id),
                Err(e) => {
                    tracing::warn!(group = id, error = %e, "alertmanager refused a silence");
                    // All or nothing: the silences made so far are taken back.
                    for made in &created {
                        if let Err(e) = am.expire_silence(made).await {
                            tracing::warn!(silence = %made, error = %e, "expiring a partial silence failed");
                        }
                    }
                    let error = e.to_string();
                    alerts.apply(AlertOp::SilenceFailed { group: id, by, error: error.clone() }).await?;
                    return Ok(vec![ctx.t(Msg::AlertSilenceFailed, &[("id", &ids), ("error", &error)])]);
                }
            }
        }
    }
    alerts.apply(AlertOp::SilenceDone { group: id, by, ids: created }).await?;
    if button {
        return Ok(Vec::new());
    }
    Ok(vec![ctx.t(Msg::AlertSilenceDone, &[("id", &ids), ("title", &title(&group)), ("until", &format_ms(until_ms))])])
}

async fn unsilence(ctx: &Ctx<'_>, alerts: &Alerts, id: i64) -> Result<Vec<String>, HandlerError> {
    let group = match group_or_text(ctx, id).await? {
        Ok(group) => group,
        Err(text) => return Ok(vec![text]),
    };
    let ids = id.to_string();
    let Some(silenced) = group.silenced_at(ctx.bot.clock.now_ms()) else {
        return Ok(vec![ctx.t(Msg::AlertNotSilenced, &[("id", &ids)])]);
    };
    let by = actor(ctx);
    if let Some(am) = &alerts.alertmanager {
        for silence_id in &silenced.ids {
            if let Err(e) = am.expire_silence(silence_id).await {
                let error = e.to_string();
                alerts.apply(AlertOp::Failed { group: id, by, error: error.clone() }).await?;
                return Ok(vec![ctx.t(Msg::AlertUnsilenceFailed, &[("id", &ids), ("error", &error)])]);
            }
        }
    }
    match alerts.apply(AlertOp::Unsilence { group: id, by }).await? {
        OpOutcome::Done => Ok(Vec::new()),
        _ => Ok(vec![ctx.t(Msg::AlertNotSilenced, &[("id", &ids)])]),
    }
}

async fn resolve(ctx: &Ctx<'_>, alerts: &Alerts, id: i64) -> Result<Vec<String>, HandlerError> {
    let group = match group_or_text(ctx, id).await? {
        Ok(group) => group,
        Err(text) => return Ok(vec![text]),
    };
    let ids = id.to_string();
    if group.source != "generic" {
        return Ok(vec![ctx.t(Msg::AlertResolveNotGeneric, &[("id", &ids), ("source", &group.source)])]);
    }
    match alerts.apply(AlertOp::Resolve { group: id, by: actor(ctx) }).await? {
        OpOutcome::Done => Ok(Vec::new()),
        OpOutcome::NotFound => Ok(vec![ctx.t(Msg::AlertNotFound, &[("id", &ids)])]),
        _ => Ok(vec![ctx.t(Msg::AlertIsResolved, &[("id", &ids)])]),
    }
}

/// The most severe firing groups as their own cards (with buttons), the rest listed.
async fn list(ctx: &Ctx<'_>) -> Result<Vec<Reply>, HandlerError> {
    let bot = ctx.bot;
    let shown = bot.alerts.as_ref().map_or(5, |a| a.config.shown_alerts) as i64;
    let total = bot.store.count_firing_alert_groups().await?;
    let groups = bot.store.firing_alert_groups(50).await?;
    let now = bot.clock.now_ms();
    let roles = button_roles(ctx);
    let mut replies = Vec::new();
    for group in groups.iter().take(LISTED_CARDS) {
        let alerts = bot.store.group_alerts(group.id, shown).await?;
        let (url, names, text) = card::runbook_query(group, &alerts);
        let runbook = bot.kb.runbook(url, names, text).await;
        let links = card::Links { runbook: runbook.as_ref(), logs: card::logs_button(&bot.logs, group, &alerts) };
        let card = card::render(&bot.cards, ctx.locale, group, &alerts, &roles, links, now)?;
        // The same key as the routed card: later changes update this copy too.
        replies.push(Reply::card(ctx.event, card::key(group.id), card, CardMode::New));
    }
    if groups.len() > LISTED_CARDS || groups.is_empty() {
        let rest: Vec<_> = groups.iter().skip(LISTED_CARDS).map(|g| card::values(g, &[], now)).collect();
        let hidden = (total - groups.len() as i64).max(0);
        let values = context! { total => total, hidden => hidden, groups => rest };
        let list = bot.cards.render(CardId::ALERTS, ctx.locale, &values, Vec::new())?;
        replies.push(Reply::card(ctx.event, CardKey::new(format!("alerts:{}", ctx.event.id)), list, CardMode::New));
    }
    Ok(replies)
}

/// Every schedule's current shift and the next.
fn oncall(ctx: &Ctx<'_>, alerts: &Alerts) -> Result<Vec<Reply>, HandlerError> {
    let now = ctx.bot.clock.now_ms();
    let at = jiff::Timestamp::from_millisecond(now).unwrap_or_default();
    let ms = |t: jiff::Timestamp| format_ms(t.as_millisecond());
    let schedules: Vec<_> = alerts
        .config
        .oncall
        .iter()
        .map(|s| {
            let current = s.on_call(at);
            let next = s.next(at);
            context! {
                name => s.name,
                rotation => match s.rotation { Rotation::Daily => "daily", Rotation::Weekly => "weekly" },
                now => current.as_ref().map(|c| c.person.clone()),
                until => current.as_ref().map(|c| ms(c.to)),
                next => next.as_ref().map(|n| n.person.clone()),
                next_from => next.as_ref().map(|n| ms(n.from)),
            }
        })
        .collect();
    let values = context! { schedules => schedules, now => format_ms(now) };
    let card = ctx.bot.cards.render(CardId::ONCALL, ctx.locale, &values, Vec::new())?;
    Ok(vec![Reply::card(ctx.event, CardKey::new(format!("oncall:{}", ctx.event.id)), card, CardMode::New)])
}

/// The group's card (a live copy, with buttons) and its history.
async fn show(ctx: &Ctx<'_>, id: i64) -> Result<Vec<Reply>, HandlerError> {
    const HISTORY: i64 = 50;
    let bot = ctx.bot;
    let group = match group_or_text(ctx, id).await? {
        Ok(group) => group,
        Err(text) => return Ok(vec![Reply::text(ctx.event, text)]),
    };
    let shown = bot.alerts.as_ref().map_or(5, |a| a.config.shown_alerts) as i64;
    let alerts = bot.store.group_alerts(id, shown).await?;
    let (url, names, text) = card::runbook_query(&group, &alerts);
    let runbook = bot.kb.runbook(url, names, text).await;
    let now = bot.clock.now_ms();
    let links = card::Links { runbook: runbook.as_ref(), logs: card::logs_button(&bot.logs, &group, &alerts) };
    let card = card::render(&bot.cards, ctx.locale, &group, &alerts, &button_roles(ctx), links, now)?;
    let history = bot.store.alert_history(id, HISTORY).await?;
    let entries: Vec<_> = history
        .iter()
        .map(|h| {
            context! {
                at => format_ms(h.at_ms),
                kind => h.kind,
                alert => h.alert.as_ref().map(|(name, fp)| format!("{name} ({fp})")),
                actor => h.actor,
                detail => h.detail,
            }
        })
        .collect();
    let values = context! {
        id => id,
        title => title(&group),
        history => entries,
        shown => history.len(),
        truncated => history.len() as i64 == HISTORY,
    };
    let history_card = bot.cards.render(CardId::ALERT_HISTORY, ctx.locale, &values, Vec::new())?;
    Ok(vec![
        Reply::card(ctx.event, card::key(id), card, CardMode::New),
        Reply::card(ctx.event, CardKey::new(format!("alert-history:{}", ctx.event.id)), history_card, CardMode::New),
    ])
}
