//! `/logs SERVICE [QUERY] [--since 30m | --from .. --to ..] [--level error]
//! [--limit N]` and the buttons of its card (More, Download) and of alert
//! cards (Logs). Every search reads the service's source through
//! [`crate::logs::service::Logs`]; a service's role is checked on the
//! command and again on every press, against the current config.

use minijinja::context;

use super::ops::text;
use super::{Ctx, HandlerError, roles_text};
use crate::action::{Action, Grant};
use crate::card::CardId;
use crate::clock::{format_duration, format_ms};
use crate::command::Args;
use crate::i18n::Msg;
use crate::logs::config::ServiceConfig;
use crate::logs::range::{self, RangeError};
use crate::logs::service::{LogQuery, Logs};
use crate::logs::{Level, LogError};
use crate::reply::{CardKey, CardMode, Reply, ReplyBody};

/// `/logs …`
pub async fn logs(ctx: &Ctx<'_>, args: &Args) -> Result<Vec<Reply>, HandlerError> {
    let logs = &ctx.bot.logs;
    let Some(name) = args.str("service") else { return Ok(services(ctx, logs)) };
    let Some(service) = logs.service(name) else {
        tracing::info!(service = name, "unknown log service");
        let known = known(logs);
        return Ok(text(ctx, Msg::LogsUnknownService, &[("service", name), ("services", &known)]));
    };
    if let Some(refusal) = denied(ctx, service) {
        return Ok(refusal);
    }
    let config = logs.config();
    let now = ctx.bot.clock.now_ms();
    let (from_ms, to_ms) = match range::resolve(
        args.duration("since"),
        args.str("from"),
        args.str("to"),
        now,
        config.default_since,
        config.max_range,
    ) {
        Ok(range) => range,
        Err(e) => {
            tracing::info!(error = ?e, "log range refused");
            return Ok(vec![Reply::text(ctx.event, range_text(ctx, &e))]);
        }
    };
    let page = args.int("limit").map_or(config.page, |n| n.clamp(1, 200) as usize);
    let query = LogQuery {
        service: service.name.clone(),
        pattern: args.str("query").map(str::to_owned),
        from_ms,
        to_ms,
        level: args.str("level").and_then(Level::parse),
        page,
    };
    page_card(ctx, service, &query, 0).await
}

/// A Logs, More or Download button.
pub async fn press(ctx: &Ctx<'_>, action: &Action) -> Result<Vec<Reply>, HandlerError> {
    let (Action::LogsPage { query, .. } | Action::LogsDownload { query }) = action else {
        unreachable!("builtin::press sends only log actions here")
    };
    let logs = &ctx.bot.logs;
    let Some(service) = logs.service(&query.service) else {
        let known = known(logs);
        return Ok(text(ctx, Msg::LogsUnknownService, &[("service", &query.service), ("services", &known)]));
    };
    if let Some(refusal) = denied(ctx, service) {
        return Ok(refusal);
    }
    match action {
        Action::LogsPage { offset, .. } => page_card(ctx, service, query, *offset).await,
        _ => download(ctx, query).await,
    }
}

/// The role a service's logs need, for the buttons that read them.
pub fn grant(service: &ServiceConfig, action: Action) -> Grant {
    Grant::new(action, service.role.clone())
}

async fn page_card(
    ctx: &Ctx<'_>,
    service: &ServiceConfig,
    query: &LogQuery,
    offset: usize,
) -> Result<Vec<Reply>, HandlerError> {
    let logs = &ctx.bot.logs;
    let page = match logs.page(query, offset).await {
        Ok(page) => page,
        Err(e) => return Ok(vec![Reply::text(ctx.event, error_text(ctx, service, &e))]),
    };
    let mut grants = Vec::new();
    if let Some(next) = page.next {
        grants.push(("more", grant(service, Action::LogsPage { query: query.clone(), offset: next })));
    }
    if !page.lines.is_empty() {
        grants.push(("download", grant(service, Action::LogsDownload { query: query.clone() })));
    }
    let values = context! {
        service => query.service,
        source => logs.kind(&query.service),
        pattern => query.pattern,
        level => query.level.map(Level::as_str),
        from => format_ms(query.from_ms),
        to => format_ms(query.to_ms),
        span => format_duration(std::time::Duration::from_millis((query.to_ms - query.from_ms).max(0) as u64)),
        first => page.offset + 1,
        last => page.offset + page.lines.len(),
        lines => page.lines,
        notes => page.notes,
        more => page.next.is_some(),
    };
    let card = ctx.bot.cards.render(CardId::LOGS, ctx.locale, &values, grants)?;
    let key = CardKey::new(format!("logs:{}", ctx.event.id));
    Ok(vec![Reply::card(ctx.event, key, card, CardMode::New)])
}

async fn download(ctx: &Ctx<'_>, query: &LogQuery) -> Result<Vec<Reply>, HandlerError> {
    let logs = &ctx.bot.logs;
    let service = logs.service(&query.service).expect("checked by the caller");
    let excerpt = match logs.excerpt(query, ctx.bot.clock.now_ms()).await {
        Ok(excerpt) => excerpt,
        Err(e) => return Ok(vec![Reply::text(ctx.event, error_text(ctx, service, &e))]),
    };
    if excerpt.lines == 0 {
        return Ok(text(ctx, Msg::LogsNothingToDownload, &[]));
    }
    let caption = ctx.t(
        if excerpt.truncated { Msg::LogsDownloadCapped } else { Msg::LogsDownloadCaption },
        &[
            ("service", &query.service),
            ("lines", &excerpt.lines.to_string()),
            ("from", &format_ms(query.from_ms)),
            ("to", &format_ms(query.to_ms)),
        ],
    );
    let body = ReplyBody::File { name: excerpt.name, text: excerpt.text, caption };
    Ok(vec![Reply::to(ctx.event, body)])
}

/// The refusal when the user lacks the service's role.
fn denied(ctx: &Ctx<'_>, service: &ServiceConfig) -> Option<Vec<Reply>> {
    let denial = ctx.bot.policy.check_role(ctx.principal, service.role.as_ref()).err()?;
    tracing::info!(service = service.name, ?denial, "log access denied");
    let role = service.role.as_ref().map(|r| r.as_str()).unwrap_or_default();
    Some(text(ctx, Msg::LogsDenied, &[("service", &service.name), ("role", role), ("roles", &roles_text(ctx))]))
}

/// `/logs` alone: the services this user may read.
fn services(ctx: &Ctx<'_>, logs: &Logs) -> Vec<Reply> {
    let readable: Vec<String> = logs
        .services()
        .filter(|s| ctx.bot.policy.check_role(ctx.principal, s.role.as_ref()).is_ok())
        .map(|s| format!("{} ({})", s.name, logs.kind(&s.name).unwrap_or("?")))
        .collect();
    if readable.is_empty() {
        return text(ctx, Msg::LogsNoServices, &[]);
    }
    text(ctx, Msg::LogsServices, &[("services", &readable.join(", "))])
}

fn known(logs: &Logs) -> String {
    let names: Vec<&str> = logs.services().map(|s| s.name.as_str()).collect();
    if names.is_empty() { "—".to_owned() } else { names.join(", ") }
}

fn range_text(ctx: &Ctx<'_>, e: &RangeError) -> String {
    match e {
        RangeError::SinceAndFrom => ctx.t(Msg::LogsSinceAndFrom, &[]),
        RangeError::BadTime(value) => ctx.t(Msg::LogsBadTime, &[("value", value)]),
        RangeError::Backwards { from_ms, to_ms } => {
            ctx.t(Msg::LogsBackwards, &[("from", &format_ms(*from_ms)), ("to", &format_ms(*to_ms))])
        }
        RangeError::Future { from_ms } => ctx.t(Msg::LogsFuture, &[("from", &format_ms(*from_ms))]),
        RangeError::TooLong { max } => ctx.t(Msg::LogsTooLong, &[("max", &format_duration(*max))]),
    }
}

/// What the user reads when a search failed (the failure was logged by `Logs`).
fn error_text(ctx: &Ctx<'_>, service: &ServiceConfig, e: &LogError) -> String {
    let name = service.name.as_str();
    match e {
        LogError::BadPattern(why) => ctx.t(Msg::LogsBadPattern, &[("error", why)]),
        LogError::BadQuery(why) => ctx.t(Msg::LogsBadQuery, &[("service", name), ("error", why)]),
        LogError::Timeout(after) => {
            ctx.t(Msg::LogsTimeout, &[("service", name), ("timeout", &format_duration(*after))])
        }
        LogError::Unreachable(why) => ctx.t(Msg::LogsUnreachable, &[("service", name), ("error", why)]),
        LogError::Unauthorized(why) => ctx.t(Msg::LogsUnauthorized, &[("service", name), ("error", why)]),
        LogError::Garbage(why) => ctx.t(Msg::LogsGarbage, &[("service", name), ("error", why)]),
        LogError::Unavailable(why) => ctx.t(Msg::LogsUnavailable, &[("service", name), ("error", why)]),
    }
}
