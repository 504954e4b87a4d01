//! Handlers: from a routed event to the replies it deserves.
//!
//! [`Bot::handle`] is the one place that routes, applies policy, calls the
//! handler and turns every error into what the user sees (logged once, in
//! the event's span). Handlers return [`Reply`] values and never send; they
//! reach the outside world only through the [`Store`] and the services on
//! [`Bot`]: alerts (Alertmanager silences), runs (which execute approved
//! runs and re-render their cards through the outbox), the knowledge base and
//! the platforms' [`Reader`] (a replied-to message's text; it cannot send).

mod alerts;
mod builtin;
mod kb;
mod logs;
mod ops;

use std::sync::Arc;

use crate::card::{CardSet, CardTemplateError};
use crate::clock::Clock;
use crate::command::{ArgError, CommandSet};
use crate::event::Event;
use crate::i18n::{Catalog, Locale, LocaleRules, Msg};
use crate::metrics as m;
use crate::platform::{Channels, PlatformError, Reader};
use crate::policy::{Denial, Policy, Principal};
use crate::reply::Reply;
use crate::router::{self, Rejection, Route, RouterConfig};
use crate::status::Stats;
use crate::store::{Store, StoreError};

/// Everything handlers may use. Built once in `app.rs`.
pub struct Bot {
    pub store: Store,
    /// Present when `[alerts]` is configured.
    pub alerts: Option<Arc<crate::alert::Alerts>>,
    /// Ops runs: requests, approvals, the runner and run cards.
    pub runs: Arc<crate::ops::Runs>,
    /// The knowledge base: search, answers (streamed by a model when one is configured), notes.
    pub kb: Arc<crate::kb::service::Knowledge>,
    /// Log search over the configured services' sources.
    pub logs: Arc<crate::logs::service::Logs>,
    /// Reads from the platforms what an event only names (a replied-to message).
    pub reader: Reader,
    pub catalog: Arc<Catalog>,
    pub commands: Arc<CommandSet>,
    pub cards: Arc<CardSet>,
    pub policy: Policy,
    pub router: RouterConfig,
    pub locales: LocaleRules,
    pub channels: Channels,
    pub stats: Arc<Stats>,
    pub clock: Clock,
}

/// One event being handled.
pub struct Ctx<'a> {
    pub bot: &'a Bot,
    pub event: &'a Event,
    pub principal: &'a Principal,
    pub locale: Locale,
}

impl Ctx<'_> {
    pub fn t(&self, msg: Msg, args: &[(&str, &str)]) -> String {
        self.bot.catalog.text(self.locale, msg, args)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("denied /{command}: {denial:?}")]
    CommandDenied { command: String, denial: Denial },
    #[error("button denied: {0:?}")]
    ButtonDenied(Denial),
    #[error("unknown or forged action token")]
    UnknownToken,
    #[error("expired action token")]
    ExpiredToken { expired_at_ms: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Card(#[from] CardTemplateError),
    #[error(transparent)]
    Journal(#[from] crate::pipeline::journal::JournalError),
    #[error(transparent)]
    Kb(#[from] crate::kb::KbError),
    /// The message the event replies to could not be read from its platform.
    #[error("reading the replied-to message: {0}")]
    Quoted(PlatformError),
}

impl Bot {
    /// Handles one event; always returns what the user should see (possibly nothing).
    pub async fn handle(&self, event: &Event) -> Vec<Reply> {
        let route = router::route(&self.router, &self.commands, event);
        if let Route::Ignore(reason) = route {
            tracing::debug!(?reason, "event ignored");
            return Vec::new();
        }
        let locale = self.locales.for_chat(&event.chat);
        let principal = self.policy.principal(event.chat.platform, &event.sender.id);
        let ctx = Ctx { bot: self, event, principal: &principal, locale };
        if let Err(denial) = self.policy.check_chat(&event.chat) {
            tracing::info!(?denial, "chat not allowed");
            return vec![Reply::text(event, explain_denial(&ctx, &denial, None))];
        }
        let started = tokio::time::Instant::now();
        let (label, result) = match route {
            Route::Invoke(invocation) => {
                let name = invocation.command.name.clone();
                let result = match self.policy.check_role(&principal, invocation.command.role.as_ref()) {
                    Ok(()) => builtin::invoke(&ctx, &invocation).await,
                    Err(denial) if invocation.command.is_ops() => {
                        let detail = format!("{denial:?}");
                        match ops::audit_refusal(&ctx, &name, None, "denied", detail).await {
                            Ok(()) => Err(HandlerError::CommandDenied { command: name.clone(), denial }),
                            Err(e) => Err(e),
                        }
                    }
                    Err(denial) => Err(HandlerError::CommandDenied { command: name.clone(), denial }),
                };
                (name, result)
            }
            Route::Action(token) => ("button".to_owned(), builtin::press(&ctx, &token).await),
            Route::Chat(text) => ("ask".to_owned(), kb::ask(&ctx, &text).await),
            Route::Reject(rejection) => {
                tracing::info!(?rejection, "command refused");
                let text = explain_rejection(&ctx, &rejection);
                let result = match &rejection {
                    // Bad arguments to an ops command (an injection attempt among them) are on record.
                    Rejection::BadArguments { command, .. } if command.is_ops() => {
                        ops::audit_refusal(&ctx, &command.name, None, "bad arguments", text.clone()).await
                    }
                    _ => Ok(()),
                };
                ("rejected".to_owned(), result.map(|()| vec![Reply::text(event, text)]))
            }
            Route::Ignore(_) => unreachable!("ignored events returned above"),
        };
        metrics::histogram!(m::HANDLER_SECONDS, "command" => label.clone()).record(started.elapsed().as_secs_f64());
        match result {
            Ok(replies) => replies,
            Err(error) => vec![self.error_reply(&ctx, &label, error)],
        }
    }

    /// The reply for a handler that panicked.
    pub fn internal_error(&self, event: &Event) -> Reply {
        let locale = self.locales.for_chat(&event.chat);
        Reply::text(event, self.catalog.text(locale, Msg::InternalError, &[("ref", event.id.as_str())]))
    }

    fn error_reply(&self, ctx: &Ctx<'_>, label: &str, error: HandlerError) -> Reply {
        let text = match &error {
            HandlerError::CommandDenied { command, denial } => {
                tracing::info!(command, ?denial, "command denied");
                explain_denial(ctx, denial, Some(command))
            }
            HandlerError::ButtonDenied(denial) => {
                tracing::info!(?denial, "button denied");
                explain_denial(ctx, denial, None)
            }
            HandlerError::UnknownToken => {
                tracing::info!("unknown or forged button token");
                ctx.t(Msg::TokenUnknown, &[])
            }
            HandlerError::ExpiredToken { expired_at_ms } => {
                tracing::info!("expired button token");
                ctx.t(Msg::TokenExpired, &[("at", &crate::clock::format_ms(*expired_at_ms))])
            }
            HandlerError::Quoted(cause) => {
                tracing::warn!(handler = label, error = %cause, "reading the replied-to message failed");
                ctx.t(Msg::QuoteUnreadable, &[("error", &cause.to_string())])
            }
            HandlerError::Store(_) | HandlerError::Card(_) | HandlerError::Journal(_) | HandlerError::Kb(_) => {
                tracing::error!(handler = label, error = %error, "handler failed");
                return self.internal_error(ctx.event);
            }
        };
        Reply::text(ctx.event, text)
    }
}

/// The presser's roles, for a refusal: "deployer, viewer" or "none".
fn roles_text(ctx: &Ctx<'_>) -> String {
    let roles = ctx.principal.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
    if roles.is_empty() { ctx.t(Msg::None, &[]) } else { roles }
}

fn explain_denial(ctx: &Ctx<'_>, denial: &Denial, command: Option<&str>) -> String {
    match denial {
        Denial::ChatNotAllowed { chat } => ctx.t(Msg::DeniedChat, &[("chat", &chat.to_string())]),
        Denial::MissingRole { role } => {
            let roles = roles_text(ctx);
            match command {
                Some(command) => {
                    ctx.t(Msg::DeniedRole, &[("role", role.as_str()), ("command", command), ("roles", &roles)])
                }
                None => ctx.t(Msg::DeniedButtonRole, &[("role", role.as_str()), ("roles", &roles)]),
            }
        }
        Denial::NotInAudience { allowed } => ctx.t(Msg::DeniedAudience, &[("who", &allowed.join(", "))]),
    }
}

fn explain_rejection(ctx: &Ctx<'_>, rejection: &Rejection) -> String {
    match rejection {
        Rejection::UnknownCommand { name, suggestion: Some(s) } => {
            ctx.t(Msg::UnknownCommandSuggest, &[("name", name), ("suggestion", s)])
        }
        Rejection::UnknownCommand { name, suggestion: None } => ctx.t(Msg::UnknownCommand, &[("name", name)]),
        Rejection::TooLong { bytes } => {
            let kib = bytes.div_ceil(1024).to_string();
            let max = (router::MAX_MESSAGE_BYTES / 1024).to_string();
            ctx.t(Msg::MessageTooLong, &[("size", &kib), ("max", &max)])
        }
        Rejection::BadArguments { command, error } => {
            let reason = explain_arg_error(ctx, error);
            ctx.t(Msg::BadArguments, &[("command", &command.name), ("reason", &reason), ("usage", &command.usage())])
        }
    }
}

fn explain_arg_error(ctx: &Ctx<'_>, error: &ArgError) -> String {
    match error {
        ArgError::Missing { arg } => ctx.t(Msg::ArgMissing, &[("arg", arg)]),
        ArgError::TooMany { value } => ctx.t(Msg::ArgTooMany, &[("value", value)]),
        ArgError::Pattern { arg, value, pattern } => {
            ctx.t(Msg::ArgPattern, &[("arg", arg), ("value", value), ("pattern", pattern)])
        }
        ArgError::Choice { arg, value, choices } => {
            ctx.t(Msg::ArgChoice, &[("arg", arg), ("value", value), ("choices", &choices.join(", "))])
        }
        ArgError::Integer { arg, value, range } => {
            ctx.t(Msg::ArgInteger, &[("arg", arg), ("value", value), ("range", range)])
        }
        ArgError::Duration { arg, value } => ctx.t(Msg::ArgDuration, &[("arg", arg), ("value", value)]),
        ArgError::TooLong { arg, max } => ctx.t(Msg::ArgTooLong, &[("arg", arg), ("max", &max.to_string())]),
        ArgError::UnknownFlag { flag } => ctx.t(Msg::ArgUnknownFlag, &[("flag", flag)]),
        ArgError::FlagNeedsValue { flag } => ctx.t(Msg::ArgFlagNeedsValue, &[("flag", flag)]),
        ArgError::UnterminatedQuote => ctx.t(Msg::ArgUnterminatedQuote, &[]),
    }
}
