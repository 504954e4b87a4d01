//! The message catalog: every sentence a user reads, in `en` and `zh-CN`.
//!
//! Code names messages with the typed [`Msg`] enum; card templates name them by
//! key through the `t()` template function. Both catalogs are embedded and
//! checked at startup: same keys, same placeholders, every `Msg` present.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// A language users can be answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Locale {
    En,
    ZhCn,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::En, Locale::ZhCn];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::ZhCn => "zh-CN",
        }
    }

    /// Accepts the usual spellings (`zh`, `zh-cn`, `zh_CN`, `en-US`).
    pub fn parse(s: &str) -> Option<Self> {
        let lower = s.trim().to_ascii_lowercase().replace('_', "-");
        match lower.as_str() {
            "en" | "en-us" | "en-gb" => Some(Self::En),
            "zh" | "zh-cn" | "zh-hans" => Some(Self::ZhCn),
            _ => None,
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! messages {
    ($($variant:ident = $key:literal,)*) => {
        /// A message the code can show; its text lives in `locales/*.toml`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Msg { $($variant,)* }

        impl Msg {
            pub const ALL: &'static [Msg] = &[$(Msg::$variant,)*];

            pub fn key(self) -> &'static str {
                match self { $(Msg::$variant => $key,)* }
            }
        }
    };
}

messages! {
    UnknownCommand = "router.unknown_command",
    UnknownCommandSuggest = "router.unknown_command_suggest",
    BadArguments = "router.bad_arguments",
    MessageTooLong = "router.message_too_long",
    ArgMissing = "args.missing",
    ArgTooMany = "args.too_many",
    ArgPattern = "args.pattern",
    ArgChoice = "args.choice",
    ArgInteger = "args.integer",
    ArgDuration = "args.duration",
    ArgTooLong = "args.too_long",
    ArgUnknownFlag = "args.unknown_flag",
    ArgFlagNeedsValue = "args.flag_needs_value",
    ArgUnterminatedQuote = "args.unterminated_quote",
    DeniedChat = "policy.denied_chat",
    DeniedRole = "policy.denied_role",
    DeniedButtonRole = "policy.denied_button_role",
    DeniedAudience = "policy.denied_audience",
    TokenUnknown = "action.token_unknown",
    TokenExpired = "action.token_expired",
    ButtonReceived = "action.received",
    InternalError = "error.internal",
    Pong = "ping.pong",
    PongWith = "ping.pong_with",
    None = "common.none",
    AlertNotFound = "alert.not_found",
    AlertsNotEnabled = "alert.not_enabled",
    AlertAckDone = "alert.ack_done",
    AlertAckAlready = "alert.ack_already",
    AlertIsResolved = "alert.is_resolved",
    AlertSilenceDone = "alert.silence_done",
    AlertSilenceAlready = "alert.silence_already",
    AlertSilenceFailed = "alert.silence_failed",
    AlertUnsilenceDone = "alert.unsilence_done",
    AlertNotSilenced = "alert.not_silenced",
    AlertUnsilenceFailed = "alert.unsilence_failed",
    AlertResolveDone = "alert.resolve_done",
    AlertResolveNotGeneric = "alert.resolve_not_generic",
    AlertSilenceTooLong = "alert.silence_too_long",
    AlertOncallFiring = "alert.oncall_firing",
    AlertEscalated = "alert.escalated",
    RunInterrupted = "run.interrupted_notice",
    RunAutoRollback = "run.auto_rollback_notice",
    RunLocked = "run.locked",
    RunEnvNotAllowed = "run.env_not_allowed",
    RunCannotPlan = "run.cannot_plan",
    RunSelfApproval = "run.self_approval",
    RunApproverRole = "run.approver_role",
    RunAlreadyApproved = "run.already_approved",
    RunNotPending = "run.not_pending",
    RunExpired = "run.expired",
    RunNotFound = "run.not_found",
    RunNothingToRollBack = "run.nothing_to_roll_back",
    RunNoWayBack = "run.no_way_back",
    RunAlreadyRolledBack = "run.already_rolled_back",
    RunCommandGone = "run.command_gone",
    RunRollbackRole = "run.rollback_role",
    HistoryNoApp = "history.no_app",
    KbAddUsage = "kb.add_usage",
    KbAddDone = "kb.add_done",
    KbAddExists = "kb.add_exists",
    KbAddFailed = "kb.add_failed",
    KbAddQuoteEmpty = "kb.add_quote_empty",
    QuoteUnreadable = "quote.unreadable",
    KbQueryTooLong = "kb.query_too_long",
    AnswerNothing = "answer.nothing",
    AnswerNothingClosest = "answer.nothing_closest",
    AnswerWhyTimeout = "answer.why_timeout",
    AnswerWhyRateLimited = "answer.why_rate_limited",
    AnswerWhyError = "answer.why_error",
    AnswerWhyEmpty = "answer.why_empty",
    AnswerWhyStopped = "answer.why_stopped",
    LogsNoServices = "logs.no_services",
    LogsServices = "logs.services",
    LogsUnknownService = "logs.unknown_service",
    LogsDenied = "logs.denied",
    LogsSinceAndFrom = "logs.since_and_from",
    LogsBadTime = "logs.bad_time",
    LogsBackwards = "logs.backwards",
    LogsFuture = "logs.future",
    LogsTooLong = "logs.too_long",
    LogsBadPattern = "logs.bad_pattern",
    LogsBadQuery = "logs.bad_query",
    LogsTimeout = "logs.timeout",
    LogsUnreachable = "logs.unreachable",
    LogsUnauthorized = "logs.unauthorized",
    LogsGarbage = "logs.garbage",
    LogsUnavailable = "logs.unavailable",
    LogsNothingToDownload = "logs.nothing_to_download",
    LogsDownloadCaption = "logs.download_caption",
    LogsDownloadCapped = "logs.download_capped",
}

/// Which locale a chat is answered in: the chat's own setting, else its
/// platform's, else the default.
#[derive(Debug, Clone)]
pub struct LocaleRules {
    pub default: Locale,
    pub platforms: HashMap<crate::event::PlatformKind, Locale>,
    pub chats: HashMap<crate::event::ChatRef, Locale>,
}

impl LocaleRules {
    pub fn for_chat(&self, chat: &crate::event::ChatRef) -> Locale {
        self.chats.get(chat).or_else(|| self.platforms.get(&chat.platform)).copied().unwrap_or(self.default)
    }
}

/// The loaded catalogs.
#[derive(Debug)]
pub struct Catalog {
    texts: HashMap<Locale, HashMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("locales/{locale}.toml: {message}")]
    Parse { locale: Locale, message: String },
    #[error("locales/{locale}.toml: key `{key}` is missing (it exists in {other})")]
    MissingKey { locale: Locale, key: String, other: String },
    #[error("locales/{locale}.toml: key `{key}` has placeholders {found:?}, expected {expected:?}")]
    Placeholders { locale: Locale, key: String, found: BTreeSet<String>, expected: BTreeSet<String> },
}

const EMBEDDED: [(Locale, &str); 2] =
    [(Locale::En, include_str!("../locales/en.toml")), (Locale::ZhCn, include_str!("../locales/zh-CN.toml"))];

impl Catalog {
    /// Loads the embedded catalogs and checks them; every problem is returned.
    pub fn embedded() -> Result<Self, Vec<CatalogError>> {
        let mut errors = Vec::new();
        let mut texts = HashMap::new();
        for (locale, source) in EMBEDDED {
            match toml::from_str::<HashMap<String, toml::Value>>(source) {
                Ok(table) => {
                    texts.insert(locale, flatten(table));
                }
                Err(e) => errors.push(CatalogError::Parse { locale, message: e.to_string() }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let catalog = Self { texts };
        catalog.check(&mut errors);
        if errors.is_empty() { Ok(catalog) } else { Err(errors) }
    }

    fn check(&self, errors: &mut Vec<CatalogError>) {
        let all_keys: BTreeSet<&str> = self
            .texts
            .values()
            .flat_map(|m| m.keys().map(String::as_str))
            .chain(Msg::ALL.iter().map(|m| m.key()))
            .collect();
        for key in all_keys {
            let mut expected: Option<BTreeSet<String>> = None;
            for locale in Locale::ALL {
                let Some(text) = self.texts.get(&locale).and_then(|m| m.get(key)) else {
                    let other = Locale::ALL
                        .iter()
                        .find(|l| self.texts.get(l).is_some_and(|m| m.contains_key(key)))
                        .map_or("the Msg enum".to_owned(), |l| format!("locales/{l}.toml"));
                    errors.push(CatalogError::MissingKey { locale, key: key.to_owned(), other });
                    continue;
                };
                let found = placeholders(text);
                match &expected {
                    None => expected = Some(found),
                    Some(exp) if *exp != found => errors.push(CatalogError::Placeholders {
                        locale,
                        key: key.to_owned(),
                        found,
                        expected: exp.clone(),
                    }),
                    Some(_) => {}
                }
            }
        }
    }

    /// The text of `msg` with `{name}` placeholders filled from `args`.
    pub fn text(&self, locale: Locale, msg: Msg, args: &[(&str, &str)]) -> String {
        self.lookup(locale, msg.key(), args).expect("every Msg key is checked at startup")
    }

    /// Looks a key up by name (card templates); `None` when it does not exist.
    pub fn lookup(&self, locale: Locale, key: &str, args: &[(&str, &str)]) -> Option<String> {
        let template = self.texts.get(&locale)?.get(key)?;
        Some(fill(template, args))
    }
}

/// Nested TOML tables become dotted keys, so catalogs can group messages.
fn flatten(table: HashMap<String, toml::Value>) -> HashMap<String, String> {
    fn walk(prefix: &str, value: toml::Value, out: &mut HashMap<String, String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            toml::Value::String(s) => {
                out.insert(prefix.to_owned(), s);
            }
            other => {
                out.insert(prefix.to_owned(), other.to_string());
            }
        }
    }
    let mut out = HashMap::new();
    for (k, v) in table {
        walk(&k, v, &mut out);
    }
    out
}

fn placeholders(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            found.insert(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    found
}

fn fill(template: &str, args: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let value =
            after.find('}').and_then(|end| args.iter().find(|(k, _)| *k == &after[..end]).map(|(_, v)| (end, *v)));
        match value {
            Some((end, v)) => {
                out.push_str(v);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogs_are_complete_and_consistent() {
        let catalog = Catalog::embedded()
            .unwrap_or_else(|errs| panic!("{}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")));
        for locale in Locale::ALL {
            for msg in Msg::ALL {
                assert!(catalog.lookup(locale, msg.key(), &[]).is_some(), "{locale} {msg:?}");
            }
        }
    }

    #[test]
    fn fills_placeholders_and_keeps_unknown_braces() {
        let check = |t: &str, args: &[(&str, &str)], expected: &str| assert_eq!(fill(t, args), expected);
        check("pong", &[], "pong");
        check("hi {name}!", &[("name", "张三")], "hi 张三!");
        check("{a}{b}", &[("a", "1"), ("b", "2")], "12");
        check("json {\"x\": 1} {name}", &[("name", "n")], "json {\"x\": 1} n");
        check("unclosed {name", &[("name", "n")], "unclosed {name");
    }

    #[test]
    fn parses_locale_spellings() {
        assert_eq!(Locale::parse("zh_CN"), Some(Locale::ZhCn));
        assert_eq!(Locale::parse("EN"), Some(Locale::En));
        assert_eq!(Locale::parse("fr"), None);
    }

    #[test]
    fn catalog_check_reports_missing_keys_and_placeholder_drift() {
        let mut texts = HashMap::new();
        texts.insert(Locale::En, HashMap::from([("a".to_owned(), "x {n}".to_owned())]));
        texts.insert(Locale::ZhCn, HashMap::from([("a".to_owned(), "x {m}".to_owned())]));
        let catalog = Catalog { texts };
        let mut errors = Vec::new();
        catalog.check(&mut errors);
        assert!(errors.iter().any(|e| matches!(e, CatalogError::Placeholders { key, .. } if key == "a")));
        assert!(errors.iter().any(|e| matches!(e, CatalogError::MissingKey { key, .. } if key == "ping.pong")));
    }
}
