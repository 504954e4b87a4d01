//! Configuration: one TOML file, parsed into [`RawConfig`] (unknown keys are
//! errors) and validated into a typed [`Config`]. Every problem is collected
//! and reported with its key. Secrets never live in the file: values such as
//! a database password come from environment variables the file names.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::event::{PlatformKind, UserId};
use crate::i18n::{Locale, LocaleRules};
use crate::platform::{Rate, SendLimits};
use crate::policy::{ChatPattern, PrincipalDef, Role};

/// The configuration `opsclaw chat` runs on when no file is given.
pub const CHAT_DEFAULTS: &str = include_str!("chat.toml");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    bot_names: Vec<String>,
    commands_dir: Option<PathBuf>,
    cards_dir: Option<PathBuf>,
    #[serde(default)]
    store: RawStore,
    http: Option<RawHttp>,
    #[serde(default)]
    locale: RawLocale,
    #[serde(default)]
    access: RawAccess,
    #[serde(default)]
    principals: Vec<RawPrincipal>,
    console: Option<RawConsole>,
    feishu: Option<RawFeishu>,
    telegram: Option<RawTelegram>,
    alerts: Option<crate::alert::config::RawAlerts>,
    #[serde(default)]
    kb: crate::kb::config::RawKb,
    #[serde(default)]
    logs: crate::logs::config::RawLogs,
    #[serde(default)]
    pipeline: RawPipeline,
    #[serde(default)]
    replicas: RawReplicas,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    url_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocale {
    default: Option<String>,
    #[serde(default)]
    platforms: HashMap<String, String>,
    #[serde(default)]
    chats: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    #[serde(default)]
    allowed_chats: Vec<String>,
    #[serde(default)]
    default_roles: Vec<String>,
    admin_role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    #[serde(default = "yes")]
    enabled: bool,
    user: Option<String>,
    chat: Option<String>,
    rate_per_second: Option<f64>,
    burst: Option<u32>,
    #[serde(default = "yes")]
    wait_for_replies: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeishu {
    #[serde(default = "yes")]
    enabled: bool,
    mode: Option<String>,
    domain: Option<String>,
    app_id: String,
    app_secret_env: String,
    encrypt_key_env: Option<String>,
    verification_token_env: Option<String>,
    replay_window: Option<String>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    limits: RawFeishuLimits,
}

/// Send rates. The defaults stay under Feishu's documented limits: 5 QPS per
/// group (shared by every bot in it) and 1000 per minute / 50 per second per app.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeishuLimits {
    per_chat_per_second: Option<f64>,
    per_chat_burst: Option<u32>,
    app_per_second: Option<f64>,
    app_burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegram {
    #[serde(default = "yes")]
    enabled: bool,
    mode: Option<String>,
    api_url: Option<String>,
    token_env: String,
    poll_timeout: Option<String>,
    webhook_url: Option<String>,
    webhook_secret_env: Option<String>,
    max_body_bytes: Option<usize>,
    document_over_chars: Option<usize>,
    #[serde(default)]
    limits: RawTelegramLimits,
}

/// Send rates, within Telegram's documented limits: about one message a
/// second per chat, 20 a minute per group, 30 a second overall. A bucket lets
/// through at most its burst plus its rate in any window, so a group gets a
/// burst of 5 and then 15 a minute: never more than 20 in a minute.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegramLimits {
    per_chat_per_second: Option<f64>,
    per_chat_burst: Option<u32>,
    per_group_per_minute: Option<f64>,
    per_group_burst: Option<u32>,
    global_per_second: Option<f64>,
    global_burst: Option<u32>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    max_concurrent_handlers: Option<usize>,
    inbox_retention: Option<String>,
    outbox_retention: Option<String>,
    token_ttl: Option<String>,
    shutdown_timeout: Option<String>,
    max_attempts: Option<u32>,
    retry_base: Option<String>,
    retry_max: Option<String>,
    send_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplicas {
    name: Option<String>,
    heartbeat: Option<String>,
    lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bot_names: Vec<String>,
    pub commands_dir: Option<PathBuf>,
    pub cards_dir: Option<PathBuf>,
    pub database_url: String,
    pub http_listen: Option<SocketAddr>,
    pub locales: LocaleRules,
    pub access: Access,
    pub console: Option<ConsoleConfig>,
    pub feishu: Option<FeishuConfig>,
    pub telegram: Option<TelegramConfig>,
    pub alerts: Option<crate::alert::config::AlertsConfig>,
    pub kb: crate::kb::config::KbConfig,
    pub logs: crate::logs::config::LogsConfig,
    pub pipeline: PipelineConfig,
    pub replicas: ReplicasConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct Access {
    pub principals: Vec<PrincipalDef>,
    pub default_roles: BTreeSet<Role>,
    pub allowed_chats: Vec<ChatPattern>,
    pub admin_role: Role,
}

#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub user: String,
    pub chat: String,
    pub rate: Rate,
    /// Read the next input line only once the previous one is answered.
    pub wait_for_replies: bool,
}

/// How Feishu delivers events to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeishuMode {
    /// We keep a WebSocket open to Feishu and receive events on it (the default).
    LongConnection,
    /// Feishu POSTs events to `/feishu/events` on our HTTP server.
    Http,
}

#[derive(Clone)]
pub struct FeishuConfig {
    pub mode: FeishuMode,
    /// `https://open.feishu.cn`, `https://open.larksuite.com`, or another base URL.
    pub base_url: String,
    pub app_id: String,
    pub app_secret: String,
    pub encrypt_key: Option<String>,
    pub verification_token: Option<String>,
    pub replay_window: Duration,
    pub max_body_bytes: usize,
    pub limits: SendLimits,
}

impl std::fmt::Debug for FeishuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuConfig")
            .field("mode", &self.mode)
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// How Telegram delivers updates to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelegramMode {
    /// We long-poll getUpdates (the default); the offset is kept in the store.
    Polling,
    /// Telegram POSTs updates to `/telegram/webhook`; `url` is the public
    /// address registered with setWebhook, `secret` the token it must echo.
    Webhook { url: String, secret: String },
}

#[derive(Clone)]
pub struct TelegramConfig {
    pub mode: TelegramMode,
    /// `https://api.telegram.org`, or a local Bot API server.
    pub api_url: String,
    pub token: String,
    /// How long one getUpdates waits for updates.
    pub poll_timeout: Duration,
    pub max_body_bytes: usize,
    /// Replies longer than this go out as a document instead of several messages.
    pub document_over_chars: usize,
    pub limits: SendLimits,
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            TelegramMode::Polling => "polling".to_owned(),
            TelegramMode::Webhook { url, .. } => format!("webhook {url}"),
        };
        f.debug_struct("TelegramConfig").field("mode", &mode).field("api_url", &self.api_url).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub max_concurrent_handlers: usize,
    pub inbox_retention: Duration,
    pub outbox_retention: Duration,
    pub token_ttl: Duration,
    pub shutdown_timeout: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub send_timeout: Duration,
}

/// `[replicas]`: how replicas sharing one PostgreSQL database see each other.
#[derive(Debug, Clone)]
pub struct ReplicasConfig {
    /// This replica in `/status` (default: host name and process id).
    pub name: String,
    /// How often this replica says it is alive and looks for work a gone replica left.
    pub heartbeat: Duration,
    /// How long a replica may go unheard before the others take its work
    /// over; also the Telegram poller's lease.
    pub lease: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// Feishu keeps redelivering an unacknowledged event for up to 6 hours, so the
/// inbox must remember ids for longer than that.
const MIN_INBOX_RETENTION: Duration = Duration::from_secs(8 * 3600);

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, Vec<ConfigError>> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![ConfigError { file: file.clone(), key: "-".into(), message: e.to_string() }])?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &file, base, &|name| std::env::var(name).ok())
    }

    /// Parses `text`; relative paths are resolved against `base`, and
    /// `env` reads environment variables (secrets).
    pub fn parse(
        text: &str,
        file: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<ConfigError>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let key = e.span().map_or("-".to_owned(), |s| format!("line {}", line_of(text, s.start)));
            vec![ConfigError { file: file.to_owned(), key, message: e.message().to_owned() }]
        })?;
        let mut v = Validator { file, errors: Vec::new() };
        let config = v.config(raw, base, env);
        if v.errors.is_empty() { Ok(config) } else { Err(v.errors) }
    }
}

/// This machine's name (`gethostname`), for the default replica name.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated within it on success.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "opsclaw".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

struct Validator<'a> {
    file: &'a str,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn err(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError { file: self.file.to_owned(), key: key.to_owned(), message: message.into() });
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value.map(humantime::parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.err(key, format!("not a duration ({e}); write e.g. 30s, 15m, 8h, 7d"));
                default
            }
        }
    }

    fn role(&mut self, key: &str, name: &str) -> Option<Role> {
        Role::parse(name).map_err(|m| self.err(key, m)).ok()
    }

    fn locale(&mut self, key: &str, name: &str) -> Locale {
        Locale::parse(name).unwrap_or_else(|| {
            self.err(key, format!("unknown locale `{name}` (en, zh-CN)"));
            Locale::En
        })
    }

    fn config(&mut self, raw: RawConfig, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Config {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let data_dir = resolve(raw.data_dir.unwrap_or_else(|| PathBuf::from("opsclaw-data")));
        let bot_names = if raw.bot_names.is_empty() { vec!["opsclaw".to_owned()] } else { raw.bot_names };
        if bot_names.iter().any(|n| n.is_empty() || n.contains(char::is_whitespace)) {
            self.err("bot_names", "bot names must be non-empty and contain no spaces");
        }
        let database_url = self.database_url(raw.store, &data_dir, env);
        let http_listen = raw.http.and_then(|h| {
            h.listen.parse().map_err(|e| self.err("http.listen", format!("`{}`: {e} (write host:port)", h.listen))).ok()
        });
        let locales = self.locales(raw.locale);
        let access = self.access(raw.access, raw.principals);
        let console = raw.console.filter(|c| c.enabled).map(|c| {
            let rate = self.rate("console.rate_per_second", c.rate_per_second, 20.0, c.burst, 20);
            ConsoleConfig {
                user: c.user.unwrap_or_else(|| "you".into()),
                chat: c.chat.unwrap_or_else(|| "local".into()),
                rate,
                wait_for_replies: c.wait_for_replies,
            }
        });
        let feishu = raw.feishu.filter(|f| f.enabled).and_then(|f| self.feishu(f, env));
        if feishu.as_ref().is_some_and(|f| f.mode == FeishuMode::Http) && http_listen.is_none() {
            self.err("feishu.mode", "\"http\" needs the [http] section: Feishu posts events to /feishu/events");
        }
        let telegram = raw.telegram.filter(|t| t.enabled).and_then(|t| self.telegram(t, env));
        if telegram.as_ref().is_some_and(|t| t.mode != TelegramMode::Polling) && http_listen.is_none() {
            self.err(
                "telegram.mode",
                "\"webhook\" needs the [http] section: Telegram posts updates to /telegram/webhook",
            );
        }
        let names: Vec<String> = access.principals.iter().map(|p| p.name.clone()).collect();
        let alerts = raw
            .alerts
            .and_then(|a| crate::alert::config::validate(a, &names, env, &mut |key, message| self.err(&key, message)));
        if let Some(alerts) = &alerts {
            if !alerts.sources.is_empty() && http_listen.is_none() {
                self.err("alerts.sources", "alert webhooks need the [http] section: sources post to /hooks/<source>");
            }
            let open = alerts.sources.iter().filter(|(_, s)| s.auth == crate::alert::config::HookAuth::None);
            for (kind, _) in open {
                if http_listen.is_some_and(|a: SocketAddr| !a.ip().is_loopback()) {
                    self.err(
                        &format!("alerts.sources.{}.auth", kind.as_str()),
                        "\"none\" is only allowed when http.listen is a loopback address; use bearer or hmac",
                    );
                }
            }
        }
        let kb = crate::kb::config::validate(raw.kb, base, env, &mut |key, message| self.err(&key, message));
        let logs = crate::logs::config::validate(raw.logs, base, env, &mut |key, message| self.err(&key, message));
        let pipeline = self.pipeline(raw.pipeline);
        let replicas = self.replicas(raw.replicas, env);
        let log = LogConfig {
            format: match raw.log.format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    self.err("log.format", format!("unknown format `{other}` (text, json)"));
                    LogFormat::Text
                }
            },
            level: raw.log.level.unwrap_or_else(|| "info".into()),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
            self.err("log.level", e.to_string());
        }
        Config {
            data_dir,
            bot_names,
            commands_dir: raw.commands_dir.map(resolve),
            cards_dir: raw.cards_dir.map(resolve),
            database_url,
            http_listen,
            locales,
            access,
            console,
            feishu,
            telegram,
            alerts,
            kb,
            logs,
            pipeline,
            replicas,
            log,
        }
    }

    fn rate(
        &mut self,
        key: &str,
        per_second: Option<f64>,
        default: f64,
        burst: Option<u32>,
        default_burst: u32,
    ) -> Rate {
        let per_second = per_second.unwrap_or(default);
        if per_second.is_nan() || per_second <= 0.0 {
            self.err(key, "must be greater than 0");
        }
        Rate { per_second, burst: burst.unwrap_or(default_burst).max(1) }
    }

    fn secret(&mut self, key: &str, var: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        match env(var).filter(|v| !v.is_empty()) {
            Some(value) => Some(value),
            None => {
                self.err(key, format!("environment variable `{var}` is not set"));
                None
            }
        }
    }

    fn feishu(&mut self, raw: RawFeishu, env: &dyn Fn(&str) -> Option<String>) -> Option<FeishuConfig> {
        let mode = match raw.mode.as_deref() {
            None | Some("long_connection") => Some(FeishuMode::LongConnection),
            Some("http") => Some(FeishuMode::Http),
            Some(other) => {
                self.err("feishu.mode", format!("unknown mode `{other}` (long_connection, http)"));
                None
            }
        };
        let base_url = match raw.domain.as_deref() {
            None | Some("feishu") => crate::platform::feishu::FEISHU_DOMAIN.to_owned(),
            Some("lark") => crate::platform::feishu::LARK_DOMAIN.to_owned(),
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                url.trim_end_matches('/').to_owned()
            }
            Some(other) => {
                self.err("feishu.domain", format!("`{other}` is not feishu, lark or an http(s) URL"));
                String::new()
            }
        };
        if raw.app_id.is_empty() {
            self.err("feishu.app_id", "must not be empty");
        }
        let app_secret = self.secret("feishu.app_secret_env", &raw.app_secret_env, env);
        let encrypt_key = raw.encrypt_key_env.as_deref().and_then(|v| self.secret("feishu.encrypt_key_env", v, env));
        let verification_token =
            raw.verification_token_env.as_deref().and_then(|v| self.secret("feishu.verification_token_env", v, env));
        if mode == Some(FeishuMode::Http) && raw.encrypt_key_env.is_none() && raw.verification_token_env.is_none() {
            self.err(
                "feishu",
                "set encrypt_key_env or verification_token_env (or both): unauthenticated callbacks are refused",
            );
        }
        let replay_window =
            self.duration("feishu.replay_window", raw.replay_window.as_deref(), Duration::from_secs(300));
        let l = &raw.limits;
        let limits = SendLimits {
            per_chat: self.rate("feishu.limits.per_chat_per_second", l.per_chat_per_second, 4.0, l.per_chat_burst, 4),
            per_group: None,
            global: Some(self.rate("feishu.limits.app_per_second", l.app_per_second, 1000.0 / 60.0, l.app_burst, 50)),
        };
        Some(FeishuConfig {
            mode: mode?,
            base_url,
            app_id: raw.app_id,
            app_secret: app_secret?,
            encrypt_key,
            verification_token,
            replay_window,
            max_body_bytes: raw.max_body_bytes.unwrap_or(1024 * 1024),
            limits,
        })
    }

    fn telegram(&mut self, raw: RawTelegram, env: &dyn Fn(&str) -> Option<String>) -> Option<TelegramConfig> {
        let token = self.secret("telegram.token_env", &raw.token_env, env);
        let mode = match raw.mode.as_deref() {
            None | Some("polling") => {
                if raw.webhook_url.is_some() || raw.webhook_secret_env.is_some() {
                    self.err("telegram.webhook_url", "only used with mode = \"webhook\"");
                }
                Some(TelegramMode::Polling)
            }
            Some("webhook") => {
                let url = match raw.webhook_url {
                    Some(url) if url.starts_with("https://") || url.starts_with("http://") => Some(url),
                    Some(url) => {
                        self.err("telegram.webhook_url", format!("`{url}` is not an http(s) URL"));
                        None
                    }
                    None => {
                        self.err(
                            "telegram.webhook_url",
                            "required with mode = \"webhook\": the public URL Telegram posts to",
                        );
                        None
                    }
                };
                let secret = match raw.webhook_secret_env.as_deref() {
                    Some(var) => self.secret("telegram.webhook_secret_env", var, env),
                    None => {
                        self.err(
                            "telegram.webhook_secret_env",
                            "required with mode = \"webhook\": unauthenticated updates are refused",
                        );
                        None
                    }
                };
                // Telegram accepts 1-256 characters of A-Z, a-z, 0-9, _ and -.
                if let Some(s) = &secret
                    && !(s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
                {
                    self.err(
                        "telegram.webhook_secret_env",
                        "the secret must be 1-256 characters of A-Z, a-z, 0-9, _ and -",
                    );
                }
                Some(TelegramMode::Webhook { url: url?, secret: secret? })
            }
            Some(other) => {
                self.err("telegram.mode", format!("unknown mode `{other}` (polling, webhook)"));
                None
            }
        };
        let api_url = match raw.api_url {
            None => crate::platform::telegram::API_URL.to_owned(),
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                url.trim_end_matches('/').to_owned()
            }
            Some(other) => {
                self.err("telegram.api_url", format!("`{other}` is not an http(s) URL"));
                String::new()
            }
        };
        let poll_timeout = self.duration("telegram.poll_timeout", raw.poll_timeout.as_deref(), Duration::from_secs(25));
        if poll_timeout > Duration::from_secs(50) {
            self.err("telegram.poll_timeout", "at most 50s: Telegram answers sooner anyway");
        }
        let l = &raw.limits;
        let limits = SendLimits {
            per_chat: self.rate("telegram.limits.per_chat_per_second", l.per_chat_per_second, 1.0, l.per_chat_burst, 3),
            per_group: Some(self.rate(
                "telegram.limits.per_group_per_minute",
                l.per_group_per_minute.map(|n| n / 60.0),
                15.0 / 60.0,
                l.per_group_burst,
                5,
            )),
            global: Some(self.rate("telegram.limits.global_per_second", l.global_per_second, 30.0, l.global_burst, 30)),
        };
        Some(TelegramConfig {
            mode: mode?,
            api_url,
            token: token?,
            poll_timeout,
            max_body_bytes: raw.max_body_bytes.unwrap_or(1024 * 1024),
            document_over_chars: raw.document_over_chars.unwrap_or(12_000).max(4096),
            limits,
        })
    }

    fn database_url(&mut self, raw: RawStore, data_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> String {
        let url = match (raw.url, raw.url_env) {
            (Some(_), Some(_)) => {
                self.err("store", "set either store.url or store.url_env, not both");
                return String::new();
            }
            (Some(url), None) => {
                if url.contains('@') && crate::store::redact_url(&url) != url {
                    self.err(
                        "store.url",
                        "contains a password; put the URL in an environment variable and name it in store.url_env",
                    );
                }
                url
            }
            (None, Some(var)) => match env(&var) {
                Some(url) => url,
                None => {
                    self.err("store.url_env", format!("environment variable `{var}` is not set"));
                    return String::new();
                }
            },
            (None, None) => format!("sqlite://{}", data_dir.join("opsclaw.db").display()),
        };
        if !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            self.err("store.url", "must start with sqlite:, postgres: or postgresql:");
        }
        url
    }

    fn locales(&mut self, raw: RawLocale) -> LocaleRules {
        let default = raw.default.map_or(Locale::En, |l| self.locale("locale.default", &l));
        let mut platforms = HashMap::new();
        for (name, locale) in raw.platforms {
            let key = format!("locale.platforms.{name}");
            match PlatformKind::parse(&name) {
                Some(p) => {
                    platforms.insert(p, self.locale(&key, &locale));
                }
                None => self.err(&key, format!("unknown platform `{name}` (console, feishu, telegram)")),
            }
        }
        let mut chats = HashMap::new();
        for (chat, locale) in raw.chats {
            let key = format!("locale.chats.\"{chat}\"");
            match ChatPattern::parse(&chat) {
                Ok(ChatPattern::Exact(c)) => {
                    chats.insert(c, self.locale(&key, &locale));
                }
                Ok(ChatPattern::AnyOn(_)) => self.err(&key, "use locale.platforms for a whole platform"),
                Err(m) => self.err(&key, m),
            }
        }
        LocaleRules { default, platforms, chats }
    }

    fn access(&mut self, raw: RawAccess, raw_principals: Vec<RawPrincipal>) -> Access {
        let allowed_chats = raw
            .allowed_chats
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                ChatPattern::parse(c).map_err(|m| self.err(&format!("access.allowed_chats[{i}]"), m)).ok()
            })
            .collect();
        let default_roles = raw
            .default_roles
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.role(&format!("access.default_roles[{i}]"), r))
            .collect();
        let admin_role = self
            .role("access.admin_role", raw.admin_role.as_deref().unwrap_or("admin"))
            .unwrap_or_else(|| Role::parse("admin").expect("`admin` is a valid role name"));
        let mut principals = Vec::new();
        let mut names = HashSet::new();
        let mut ids_seen: HashMap<(PlatformKind, UserId), String> = HashMap::new();
        for (i, p) in raw_principals.into_iter().enumerate() {
            let key = format!("principals[{i}]");
            if p.name.is_empty() || p.name.contains(':') {
                self.err(&format!("{key}.name"), "a name must be non-empty and contain no `:`");
            }
            if !names.insert(p.name.clone()) {
                self.err(&format!("{key}.name"), format!("duplicate principal `{}`", p.name));
            }
            let roles =
                p.roles.iter().enumerate().filter_map(|(j, r)| self.role(&format!("{key}.roles[{j}]"), r)).collect();
            let mut ids = Vec::new();
            for (j, id) in p.ids.iter().enumerate() {
                let id_key = format!("{key}.ids[{j}]");
                let Some((platform, user)) = id.split_once(':') else {
                    self.err(&id_key, format!("`{id}` must look like platform:user_id"));
                    continue;
                };
                let Some(platform) = PlatformKind::parse(platform).filter(|_| !user.is_empty()) else {
                    self.err(&id_key, format!("`{id}` must look like platform:user_id with a known platform"));
                    continue;
                };
                let pair = (platform, UserId::new(user));
                if let Some(other) = ids_seen.insert(pair.clone(), p.name.clone()) {
                    self.err(&id_key, format!("`{id}` is already given to `{other}`"));
                }
                ids.push(pair);
            }
            principals.push(PrincipalDef { name: p.name, roles, ids });
        }
        Access { principals, default_roles, allowed_chats, admin_role }
    }

    fn replicas(&mut self, raw: RawReplicas, env: &dyn Fn(&str) -> Option<String>) -> ReplicasConfig {
        let heartbeat = self.duration("replicas.heartbeat", raw.heartbeat.as_deref(), Duration::from_secs(2));
        let lease = self.duration("replicas.lease", raw.lease.as_deref(), crate::store::DEFAULT_LEASE);
        if heartbeat.is_zero() {
            self.err("replicas.heartbeat", "must be more than 0s");
        }
        // Two missed heartbeats must not make a replica look dead.
        if lease < heartbeat * 3 {
            self.err("replicas.lease", format!("must be at least 3 heartbeats ({:?})", heartbeat * 3));
        }
        let name = raw.name.unwrap_or_else(|| {
            let host = env("HOSTNAME").filter(|h| !h.is_empty()).unwrap_or_else(host_name);
            format!("{host}:{}", std::process::id())
        });
        if name.is_empty() || name.len() > 100 {
            self.err("replicas.name", "must be 1 to 100 characters");
        }
        ReplicasConfig { name, heartbeat, lease }
    }

    fn pipeline(&mut self, raw: RawPipeline) -> PipelineConfig {
        let inbox_retention =
            self.duration("pipeline.inbox_retention", raw.inbox_retention.as_deref(), Duration::from_secs(24 * 3600));
        if inbox_retention < MIN_INBOX_RETENTION {
            self.err("pipeline.inbox_retention", "must be at least 8h: Feishu redelivers events for up to 6 hours");
        }
        let max_concurrent_handlers = raw.max_concurrent_handlers.unwrap_or(64);
        if max_concurrent_handlers == 0 {
            self.err("pipeline.max_concurrent_handlers", "must be at least 1");
        }
        let max_attempts = raw.max_attempts.unwrap_or(10);
        if max_attempts == 0 {
            self.err("pipeline.max_attempts", "must be at least 1");
        }
        PipelineConfig {
            max_concurrent_handlers,
            inbox_retention,
            outbox_retention: self.duration(
                "pipeline.outbox_retention",
                raw.outbox_retention.as_deref(),
                Duration::from_secs(7 * 86_400),
            ),
            token_ttl: self.duration("pipeline.token_ttl", raw.token_ttl.as_deref(), Duration::from_secs(7 * 86_400)),
            shutdown_timeout: self.duration(
                "pipeline.shutdown_timeout",
                raw.shutdown_timeout.as_deref(),
                Duration::from_secs(10),
            ),
            max_attempts,
            retry_base: self.duration("pipeline.retry_base", raw.retry_base.as_deref(), Duration::from_secs(1)),
            retry_max: self.duration("pipeline.retry_max", raw.retry_max.as_deref(), Duration::from_secs(300)),
            send_timeout: self.duration("pipeline.send_timeout", raw.send_timeout.as_deref(), Duration::from_secs(30)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        let env = |name: &str| (name == "DB_URL").then(|| "postgres://u:pw@db/opsclaw".to_owned());
        Config::parse(text, "test.toml", Path::new("/etc/opsclaw"), &env)
    }

    fn keys(text: &str) -> Vec<String> {
        parse(text).unwrap_err().into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn chat_defaults_are_valid() {
        let config = parse(CHAT_DEFAULTS).unwrap();
        assert!(config.console.is_some());
        assert!(config.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../deploy/config.example.toml");
        let config = Config::parse(text, "config.example.toml", Path::new("/etc/opsclaw"), &|_| None)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(config.http_listen.is_some());
        assert!(config.feishu.is_none(), "the example ships with Feishu disabled");
        // Its Feishu section is valid once enabled with the secrets exported.
        let enabled = text.replace("[feishu]\nenabled = false", "[feishu]\nenabled = true");
        let config = Config::parse(&enabled, "config.example.toml", Path::new("/etc/opsclaw"), &|_| Some("x".into()))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(config.feishu.map(|f| f.base_url), Some("https://open.feishu.cn".to_owned()));
        // And so is its Telegram section, in both modes.
        assert!(config.telegram.is_none(), "the example ships with Telegram disabled");
        let enabled = text.replace("[telegram]\nenabled = false", "[telegram]\nenabled = true");
        let config = Config::parse(&enabled, "config.example.toml", Path::new("/etc/opsclaw"), &|_| Some("x".into()))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let telegram = config.telegram.unwrap();
        assert_eq!((telegram.mode, telegram.poll_timeout), (TelegramMode::Polling, Duration::from_secs(25)));
        assert_eq!(telegram.limits.per_group.map(|r| (r.per_second, r.burst)), Some((15.0 / 60.0, 5)));
        let webhook = enabled.replace("mode = \"polling\"", "mode = \"webhook\"").replace("# webhook_", "webhook_");
        let config = Config::parse(&webhook, "config.example.toml", Path::new("/etc/opsclaw"), &|_| Some("x".into()))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(
            matches!(config.telegram.unwrap().mode, TelegramMode::Webhook { url, .. } if url.ends_with("/telegram/webhook"))
        );
        // Its [alerts] section too.
        assert!(config.alerts.is_none(), "the example ships with alerts disabled");
        let enabled = text.replace("[alerts]\nenabled = false", "[alerts]\nenabled = true");
        let config = Config::parse(&enabled, "config.example.toml", Path::new("/etc/opsclaw"), &|_| Some("x".into()))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let alerts = config.alerts.unwrap();
        assert_eq!((alerts.sources.len(), alerts.routes.len()), (3, 3));
        assert!(alerts.alertmanager.is_some() && alerts.routes[1].window.is_some());
        assert_eq!(alerts.oncall[0].people, ["zhangsan", "alice"]);
        let critical = &alerts.policies[&crate::alert::model::Severity::Critical];
        assert_eq!((critical.mention_oncall, critical.escalate.len()), (true, 2));
    }

    #[test]
    fn alert_settings_are_checked() {
        let text = "[http]\nlisten = \"0.0.0.0:8080\"\n[alerts.sources.generic]\nauth = \"none\"\n\
                    [alerts.sources.nagios]\nauth = \"bearer\"\ntoken_env = \"T\"\n\
                    [alerts.sources.alertmanager]\nauth = \"bearer\"\ntoken_env = \"UNSET\"\n\
                    [alerts.alertmanager]\nurl = \"alertmanager:9093\"\n\
                    [[alerts.routes]]\nmatch = ['severity=critical']\nchats = [\"feishu:*\"]\nhours = \"9-5\"\n";
        let found = keys(text);
        for key in [
            "alerts.sources.generic.auth",
            "alerts.sources.nagios",
            "alerts.sources.alertmanager.token_env",
            "alerts.alertmanager.url",
            "alerts.routes[0].match",
            "alerts.routes[0].chats",
            "alerts.routes[0].days/hours/timezone",
        ] {
            assert!(found.contains(&key.to_owned()), "{key} missing from {found:?}");
        }
        let oncall = "[[principals]]\nname = \"alice\"\nids = [\"telegram:1\"]\n\
                      [[alerts.oncall]]\nname = \"primary\"\nrotation = \"fortnightly\"\npeople = [\"alice\", \"zed\"]\n\
                      handover = \"monday\"\ntimezone = \"Mars/Olympus\"\n\
                      [alerts.policy.critical]\nschedule = \"secondary\"\nescalate = [\"30m\", \"15m\"]\n\
                      [alerts.policy.urgent]\nschedule = \"primary\"\n";
        let found = keys(oncall);
        for key in [
            "alerts.oncall[0].rotation",
            "alerts.oncall[0].people",
            "alerts.oncall[0].handover",
            "alerts.oncall[0].timezone",
            "alerts.policy.critical.schedule",
            "alerts.policy.critical.escalate",
            "alerts.policy.urgent",
        ] {
            assert!(found.contains(&key.to_owned()), "{key} missing from {found:?}");
        }
        let no_http = "[alerts.sources.generic]\nauth = \"none\"\n";
        assert_eq!(keys(no_http), ["alerts.sources"]);
    }

    #[test]
    fn telegram_settings_are_checked() {
        let base = "[telegram]\ntoken_env = \"TG\"\n";
        let errors = parse(&format!("{base}mode = \"webhook\"\n")).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"telegram.token_env"), "{keys:?}");
        assert!(keys.contains(&"telegram.webhook_url") && keys.contains(&"telegram.webhook_secret_env"), "{keys:?}");
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n{base}mode = \"webhook\"\nwebhook_url = \"https://x/telegram/webhook\"\nwebhook_secret_env = \"S\"\n"
        );
        let errors = Config::parse(&text, "c.toml", Path::new("/"), &|v| {
            Some(if v == "S" { "bad secret!".into() } else { "t".into() })
        })
        .unwrap_err();
        assert_eq!(errors[0].key, "telegram.webhook_secret_env", "{errors:?}");
        let errors = parse(&format!("{base}poll_timeout = \"2m\"\n")).unwrap_err();
        assert!(errors.iter().any(|e| e.key == "telegram.poll_timeout"), "{errors:?}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let errors = parse("data_dir = \"x\"\n[access]\nallowed_chat = []\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, "line 3");
        assert!(errors[0].message.contains("allowed_chat"), "{errors:?}");
    }

    #[test]
    fn every_semantic_problem_is_listed_with_its_key() {
        let text = r#"
[store]
url = "postgres://u:hunter2@db/x"
[http]
listen = "localhost"
[locale]
default = "fr"
platforms = { irc = "en" }
[access]
allowed_chats = ["feishu:oc_1", "slack:*"]
default_roles = ["Bad Role"]
[[principals]]
name = "a"
ids = ["feishu:ou_1", "nope"]
[[principals]]
name = "a"
ids = ["feishu:ou_1"]
[pipeline]
inbox_retention = "1h"
token_ttl = "soon"
"#;
        let got = keys(text);
        for expected in [
            "store.url",
            "http.listen",
            "locale.default",
            "locale.platforms.irc",
            "access.allowed_chats[1]",
            "access.default_roles[0]",
            "principals[0].ids[1]",
            "principals[1].name",
            "principals[1].ids[0]",
            "pipeline.inbox_retention",
            "pipeline.token_ttl",
        ] {
            assert!(got.contains(&expected.to_owned()), "missing {expected} in {got:?}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let config = parse("[store]\nurl_env = \"DB_URL\"\n").unwrap();
        assert_eq!(config.database_url, "postgres://u:pw@db/opsclaw");
        assert_eq!(keys("[store]\nurl_env = \"MISSING\"\n"), vec!["store.url_env"]);
    }

    #[test]
    fn feishu_secrets_come_from_the_environment() {
        let text = "[http]\nlisten = \"127.0.0.1:0\"\n[feishu]\nmode = \"http\"\ndomain = \"lark\"\napp_id = \"cli_a\"\n\
                    app_secret_env = \"SECRET\"\nencrypt_key_env = \"KEY\"\n";
        let env = |name: &str| match name {
            "SECRET" => Some("s3cret".to_owned()),
            "KEY" => Some("k".to_owned()),
            _ => None,
        };
        let config = Config::parse(text, "t.toml", Path::new("/"), &env).unwrap();
        let feishu = config.feishu.unwrap();
        assert_eq!((feishu.base_url.as_str(), feishu.app_secret.as_str()), ("https://open.larksuite.com", "s3cret"));
        assert!(!format!("{feishu:?}").contains("s3cret"), "secrets stay out of debug output");
        let errors = Config::parse(text, "t.toml", Path::new("/"), &|_| None).unwrap_err();
        let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["feishu.app_secret_env", "feishu.encrypt_key_env"]);
        let no_http = text.replace("[http]\nlisten = \"127.0.0.1:0\"\n", "");
        let errors = Config::parse(&no_http, "t.toml", Path::new("/"), &env).unwrap_err();
        assert_eq!(errors[0].key, "feishu.mode");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_file() {
        let config = parse("data_dir = \"data\"\ncommands_dir = \"/abs/cmds\"\n").unwrap();
        assert_eq!(config.data_dir, Path::new("/etc/opsclaw/data"));
        assert_eq!(config.commands_dir.as_deref(), Some(Path::new("/abs/cmds")));
        assert_eq!(config.database_url, "sqlite:///etc/opsclaw/data/opsclaw.db");
    }
}
