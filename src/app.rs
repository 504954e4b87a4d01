//! Wiring: builds every component from a [`Config`], starts the tasks, and
//! shuts them down in order. The only module that names concrete
//! implementations.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alert::Alerts;
use crate::alert::alertmanager::Alertmanager;
use crate::alert::card::ButtonRoles;
use crate::alert::escalate::Escalator;
use crate::alert::intake as alert_intake;
use crate::alert::notify::{self, Notifier};
use crate::card::CardSet;
use crate::clock::Clock;
use crate::command::CommandSet;
use crate::config::{Config, ConsoleConfig, FeishuConfig, FeishuMode, TelegramMode};
use crate::event::ChatKind;
use crate::handler::Bot;
use crate::http::{self, HttpState};
use crate::i18n::Catalog;
use crate::kb::llm::Llm;
use crate::kb::service::{Knowledge, KnowledgeParts};
use crate::kb::{Kb, Root};
use crate::metrics as m;
use crate::ops::{Runs, RunsParts};
use crate::pipeline::dispatch::Dispatcher;
use crate::pipeline::inbox::Inbox;
use crate::pipeline::journal::Journal;
use crate::pipeline::outbox::{Outbox, RetryPolicy};
use crate::platform::console::{Console, Intake, Session};
use crate::platform::feishu::api::OpenApi;
use crate::platform::feishu::callback::{self, CallbackState};
use crate::platform::feishu::crypto::EncryptKey;
use crate::platform::feishu::event::BotIdentity;
use crate::platform::feishu::ws::LongConnection;
use crate::platform::feishu::{API_TIMEOUT, Feishu};
use crate::platform::telegram::poll::Poller;
use crate::platform::telegram::webhook::{self as telegram_webhook, WebhookState};
use crate::platform::telegram::{self, Telegram};
use crate::platform::{ChannelState, Channels, ChatPlatform, Reader};
use crate::policy::Policy;
use crate::replica::Replica;
use crate::router::RouterConfig;
use crate::status::{Settle, Stats};
use crate::store::Store;

/// The static definitions the bot runs on, loaded and checked together.
pub struct Definitions {
    pub catalog: Arc<Catalog>,
    pub commands: Arc<CommandSet>,
    pub cards: Arc<CardSet>,
}

/// Loads the catalog, command files and card templates the config names.
/// Every problem is returned, each naming its file and key.
pub fn load_definitions(config: &Config) -> Result<Definitions, Vec<String>> {
    let strings =
        |errs: Vec<_>| errs.into_iter().map(|e: Box<dyn std::error::Error>| e.to_string()).collect::<Vec<_>>();
    let catalog =
        Catalog::embedded().map(Arc::new).map_err(|e| strings(e.into_iter().map(|e| Box::new(e) as _).collect()))?;
    let commands = match &config.commands_dir {
        Some(dir) => CommandSet::from_dir(dir),
        None => CommandSet::embedded(),
    };
    let cards = match &config.cards_dir {
        Some(dir) => CardSet::from_dir(catalog.clone(), dir),
        None => CardSet::embedded(catalog.clone()),
    };
    match (commands, cards) {
        (Ok(commands), Ok(cards)) => Ok(Definitions { catalog, commands: Arc::new(commands), cards: Arc::new(cards) }),
        (commands, cards) => {
            let mut problems: Vec<String> = Vec::new();
            if let Err(e) = commands {
                problems.extend(e.iter().map(ToString::to_string));
            }
            if let Err(e) = cards {
                problems.extend(e.iter().map(ToString::to_string));
            }
            Err(problems)
        }
    }
}

/// `opsclaw check-config FILE`: every problem in the config, commands and cards.
pub fn check_config(path: &Path) -> Vec<String> {
    match Config::load(path) {
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
        Ok(config) => load_definitions(&config).err().unwrap_or_default(),
    }
}

/// `opsclaw migrate`: applies the database migrations and exits.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(())
}

/// `opsclaw backup OUT`: a consistent copy of the SQLite database at `out`.
pub async fn backup(config: &Config, out: &std::path::Path) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url).await?;
    store.backup(out).await?;
    Ok(())
}

/// Where the console reads and writes; the binary passes stdin and stdout.
pub struct ConsoleIo {
    pub input: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    pub output: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
}

/// A started pipeline: store migrated, pending events replayed, journal,
/// dispatcher, outbox and housekeeping running. Adapters feed [`Running::inbox`].
pub struct Running {
    pub inbox: Inbox,
    /// The alert intake and actions, when `[alerts]` is configured.
    pub alerts: Option<Arc<Alerts>>,
    pub catalog: Arc<Catalog>,
    pub commands: Arc<CommandSet>,
    pub store: Store,
    pub stats: Arc<Stats>,
    pub channels: Channels,
    pub clock: Clock,
    runs: Arc<Runs>,
    kb: Arc<Knowledge>,
    pub replica: Arc<Replica>,
    /// This process's claim on a SQLite database, held until it stops.
    _instance: Option<crate::store::InstanceLock>,
    /// Fired when shutdown starts: this replica takes no work over from others any more.
    draining: CancellationToken,
    stop: CancellationToken,
    journal: Journal,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

/// Starts the pipeline with `platforms` as the reply senders, on the clock
/// the platforms were built with.
pub async fn start(
    config: &Config,
    platforms: Vec<Arc<dyn ChatPlatform>>,
    channels: Channels,
    clock: Clock,
) -> anyhow::Result<Running> {
    let defs = load_definitions(config).map_err(|problems| anyhow::anyhow!(problems.join("\n")))?;
    let instance = crate::store::claim_instance(&config.database_url)?;
    let store =
        Store::connect(&config.database_url).await.context("opening the store")?.with_lease(config.replicas.lease);
    store.migrate().await.context("running migrations")?;
    let replica = Arc::new(
        Replica::register(store.clone(), config.replicas.clone(), clock).await.context("registering this replica")?,
    );

    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let draining = CancellationToken::new();
    let (journal, journal_task) = Journal::spawn(store.clone(), clock, stop.clone());

    let p = &config.pipeline;
    let retry = RetryPolicy {
        max_attempts: p.max_attempts,
        base_delay: p.retry_base,
        max_delay: p.retry_max,
        send_timeout: p.send_timeout,
    };
    // Handlers read from the platforms (a replied-to message); only the outbox sends.
    let reader = Reader::new(&platforms);
    let outbox = Outbox::new(store.clone(), journal.clone(), platforms, retry, stats.clone(), clock, stop.clone());
    let mut tasks = Vec::new();
    let kb = knowledge(config, &defs, outbox.clone(), clock).await?;
    let logs = Arc::new(log_search(config, &defs)?);
    if config.kb.watch {
        let watcher = crate::kb::watch::spawn(kb.kb.clone(), stop.clone()).context("watching the knowledge base")?;
        tasks.push(("knowledge base watcher", watcher));
    }
    let alerts = match &config.alerts {
        Some(alerts_config) => {
            let alerts_config = Arc::new(alerts_config.clone());
            let alertmanager = match &alerts_config.alertmanager {
                Some(am) => Some(
                    Alertmanager::new(&am.url, am.token.clone(), am.timeout)
                        .with_context(|| format!("alerts.alertmanager.url `{}`", am.url))?,
                ),
                None => None,
            };
            let (notify, notify_rx) = notify::channel();
            let notifier = Notifier {
                renders: Default::default(),
                store: store.clone(),
                journal: journal.clone(),
                outbox: outbox.clone(),
                cards: defs.cards.clone(),
                locales: config.locales.clone(),
                config: alerts_config.clone(),
                roles: ButtonRoles::from_commands(&defs.commands),
                kb: kb.clone(),
                logs: logs.clone(),
                clock,
            };
            tasks.push(("alert notifier", tokio::spawn(notifier.run(notify_rx, stop.clone()))));
            if !alerts_config.policies.is_empty() {
                let people = config
                    .access
                    .principals
                    .iter()
                    .map(|p| (p.name.clone(), p.ids.iter().map(|(k, u)| (*k, u.as_str().to_owned())).collect()))
                    .collect();
                let escalator = Escalator {
                    store: store.clone(),
                    journal: journal.clone(),
                    outbox: outbox.clone(),
                    config: alerts_config.clone(),
                    people,
                    catalog: defs.catalog.clone(),
                    locales: config.locales.clone(),
                    clock,
                };
                tasks.push(("alert escalation", tokio::spawn(escalator.run(stop.clone()))));
            }
            Some(Arc::new(Alerts { config: alerts_config, alertmanager, journal: journal.clone(), notify }))
        }
        None => None,
    };
    let runs = Arc::new(Runs::new(RunsParts {
        store: store.clone(),
        journal: journal.clone(),
        outbox: outbox.clone(),
        cards: defs.cards.clone(),
        catalog: defs.catalog.clone(),
        commands: defs.commands.clone(),
        locales: config.locales.clone(),
        clock,
        stats: stats.clone(),
        data_dir: config.data_dir.clone(),
    })?);
    let access = config.access.clone();
    let bot = Arc::new(Bot {
        store: store.clone(),
        alerts: alerts.clone(),
        runs: runs.clone(),
        kb: kb.clone(),
        logs,
        reader,
        catalog: defs.catalog.clone(),
        commands: defs.commands.clone(),
        cards: defs.cards,
        policy: Policy::new(access.principals, access.default_roles, access.allowed_chats, access.admin_role),
        router: RouterConfig { bot_names: config.bot_names.clone() },
        locales: config.locales.clone(),
        channels: channels.clone(),
        stats: stats.clone(),
        clock,
    });
    let (events_tx, events_rx) = mpsc::channel(1024);
    let dispatcher = Dispatcher::new(
        bot,
        journal.clone(),
        outbox.clone(),
        stats.clone(),
        clock,
        p.max_concurrent_handlers,
        p.token_ttl,
    );
    let inbox = Inbox::new(journal.clone(), events_tx, stats.clone());
    // Replies left from the last run go first, before replayed events add new ones.
    outbox.load_pending().await.context("loading the outbox")?;
    tasks.extend([
        ("journal", journal_task),
        ("outbox", tokio::spawn(outbox.run())),
        ("dispatcher", tokio::spawn(dispatcher.run(events_rx, stop.clone()))),
        (
            "housekeeping",
            tokio::spawn(housekeeping(
                store.clone(),
                clock,
                p.clone(),
                config.alerts.as_ref().map(|a| a.retention),
                stop.clone(),
            )),
        ),
    ]);

    // Runs a previous process left running are reported, never resumed.
    runs.recover().await.context("recovering interrupted runs")?;
    tasks.push(("run expiry", tokio::spawn(runs.clone().expire_loop(stop.clone()))));
    // Answers a crash cut off mid-stream are written again into their cards.
    let now = clock.now_ms();
    kb.resume(store.take_over_answers(now).await.context("reading pending answers")?).await;

    let pending = store.take_over_events(now).await.context("reading pending events")?;
    if !pending.is_empty() {
        tracing::info!(n = pending.len(), "replaying events accepted before the last stop");
    }
    for event in pending {
        inbox.requeue(event).await?;
    }
    tasks.push(("replica heartbeat", tokio::spawn(heartbeat(replica.clone(), stop.clone()))));
    tasks.push((
        "take-over of gone replicas' work",
        tokio::spawn(take_over(replica.clone(), inbox.clone(), runs.clone(), kb.clone(), draining.clone())),
    ));
    stats.started.store(true, Ordering::SeqCst);
    Ok(Running {
        inbox,
        alerts,
        catalog: defs.catalog,
        commands: defs.commands,
        store,
        stats,
        channels,
        clock,
        runs,
        kb,
        replica,
        _instance: instance,
        draining,
        stop,
        journal,
        tasks,
    })
}

/// The log services of `[logs]`. Lines shown or downloaded mask the values
/// of the ops commands' secrets too, which a service may well log.
fn log_search(config: &Config, defs: &Definitions) -> anyhow::Result<crate::logs::service::Logs> {
    let secrets = defs
        .commands
        .iter()
        .flat_map(|c| c.run.iter().flat_map(|r| r.secrets.clone()))
        .filter_map(|name| std::env::var(name).ok())
        .collect();
    let http = reqwest::Client::builder()
        .user_agent(concat!("opsclaw/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client for log search")?;
    Ok(crate::logs::service::Logs::new(config.logs.clone(), http, secrets))
}

/// Loads the knowledge index from `[kb]` (the example runbooks, the roots,
/// the notes directory `/kb add` writes to) in `<data_dir>/kb-index`, off the
/// async runtime: the index of the last run with the files changed since
/// read again, or a new one. Also the model client when one is configured.
async fn knowledge(
    config: &Config,
    defs: &Definitions,
    outbox: Arc<Outbox>,
    clock: Clock,
) -> anyhow::Result<Arc<Knowledge>> {
    let kb_config = &config.kb;
    let mut roots = Vec::new();
    if kb_config.example {
        roots.push(Root::embedded(crate::kb::example::NAME, crate::kb::example::FILES));
    }
    for r in &kb_config.roots {
        let mut root = Root::filtered(&r.path, r.url.clone(), &r.include, &r.exclude)
            .with_context(|| format!("kb root {}", r.name))?;
        root.name = r.name.clone();
        roots.push(root);
    }
    let notes = kb_config.add_root.clone().unwrap_or_else(|| config.data_dir.join("kb-notes"));
    std::fs::create_dir_all(&notes).with_context(|| format!("creating {}", notes.display()))?;
    // The notes are searched too: inside a root they already are, else as their own root.
    let within = kb_config.roots.iter().find_map(|r| {
        let relative = notes.strip_prefix(&r.path).ok()?;
        Some(Path::new(&r.name).join(relative).display().to_string())
    });
    let notes_shown = match within {
        Some(shown) => shown,
        None => {
            let mut root = Root::dir(&notes);
            root.name = crate::kb::service::NOTES.to_owned();
            roots.push(root);
            crate::kb::service::NOTES.to_owned()
        }
    };
    let dir = config.data_dir.join("kb-index");
    let started = std::time::Instant::now();
    let (kb, stats) = tokio::task::spawn_blocking(move || Kb::load(roots, &dir))
        .await
        .context("building the knowledge index")?
        .context("building the knowledge index")?;
    tracing::info!(
        documents = kb.documents(),
        read = stats.documents,
        removed = stats.removed,
        passages = stats.passages,
        skipped = stats.skipped.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "knowledge base indexed"
    );
    let llm = kb_config.llm.clone().map(Llm::new).transpose().context("the kb.llm client")?;
    let parts = KnowledgeParts {
        llm,
        relevance: kb_config.relevance,
        notes,
        notes_shown,
        add_role: kb_config.add_role.clone(),
        outbox,
        cards: defs.cards.clone(),
        catalog: defs.catalog.clone(),
        clock,
    };
    Ok(Arc::new(Knowledge::new(Arc::new(kb), parts)))
}

impl Running {
    /// Waits up to `deadline` for in-flight events and queued replies, then
    /// stops every task. What is still pending stays in the store, handed
    /// back: another replica takes it at once, or the next start does.
    pub async fn shutdown(self, deadline: Duration) -> anyhow::Result<()> {
        let Running { inbox, store, stats, runs, kb, draining, stop, journal, tasks, .. } = self;
        draining.cancel();
        // Dropping the last inbox handle ends the dispatcher once its queue is empty.
        drop(inbox);
        // Running steps are stopped (their process groups killed) and recorded as
        // interrupted, with their cards and notices queued before the drain.
        runs.shutdown().await;
        // Answers being written get their final card (the passages) queued too.
        kb.shutdown().await;
        tracing::info!("shutting down: draining in-flight events and queued replies");
        match stats.drain(&store, deadline).await {
            Ok(true) => tracing::info!("drained"),
            Ok(false) => {
                tracing::warn!("shutdown deadline reached; undelivered replies stay in the outbox for the next start")
            }
            Err(e) => tracing::error!(error = %e, "checking the outbox during shutdown failed"),
        }
        stop.cancel();
        drop(journal);
        for (name, task) in tasks {
            task.await.with_context(|| format!("{name} task"))?;
        }
        // What is still pending (replies past the deadline, events not
        // handled) goes back to the other replicas now, not after the lease.
        match store.deregister_replica().await {
            Ok(()) => tracing::info!("replica deregistered; its pending work is the other replicas' now"),
            // Not fatal: the others take it over once this replica's heartbeat is older than the lease.
            Err(e) => {
                tracing::error!(error = %e, "handing work back failed; the other replicas take it after the lease")
            }
        }
        Ok(())
    }
}

/// Runs the bot until a shutdown signal, or until the console input ends
/// when there is a console. Returns after a graceful drain.
pub async fn run(
    config: Config,
    console_io: Option<ConsoleIo>,
    shutdown_signal: CancellationToken,
) -> anyhow::Result<()> {
    let prometheus = crate::metrics::install();
    let channels = Channels::default();
    let clock = Clock::new();
    let mut platforms: Vec<Arc<dyn ChatPlatform>> = Vec::new();
    let console = match (&config.console, console_io) {
        (Some(console_config), Some(io)) => {
            let console = Console::new(io.output, console_config.rate, &clock, config.data_dir.join("downloads"));
            platforms.push(console.clone());
            channels.register("console");
            Some((console, console_config.clone(), io.input))
        }
        (Some(_), None) => bail!("the console channel is enabled but this process has no console"),
        (None, _) => None,
    };
    let feishu_bot = match &config.feishu {
        Some(feishu) => {
            let api =
                OpenApi::new(&feishu.base_url, feishu.app_id.clone(), feishu.app_secret.clone(), API_TIMEOUT, clock);
            // A network blip during a restart should not stop the bot; refused credentials should.
            let bot = api
                .bot_info_patiently(Duration::from_secs(60))
                .await
                .with_context(|| format!("asking {} who the bot is", feishu.base_url))?;
            tracing::info!(open_id = %bot.open_id, name = %bot.app_name, "feishu bot identity");
            platforms.push(Arc::new(Feishu::new(api, feishu.limits)));
            channels.register(callback::CHANNEL);
            Some(BotIdentity { open_id: bot.open_id })
        }
        None => None,
    };
    let telegram_bot = match &config.telegram {
        Some(tg) => {
            // Requests must outlive the long poll they may be.
            let bot = telegram::client(&tg.api_url, &tg.token, tg.poll_timeout + Duration::from_secs(15))?;
            let me = telegram::whoami(&bot, Duration::from_secs(60))
                .await
                .with_context(|| format!("asking {} who the bot is", tg.api_url))?;
            tracing::info!(id = me.id, username = %me.username, "telegram bot identity");
            platforms.push(Telegram::new(bot.clone(), tg.limits, tg.document_over_chars));
            channels.register(telegram::CHANNEL);
            Some((bot, me))
        }
        None => None,
    };
    let running = start(&config, platforms, channels.clone(), clock).await?;
    if let Some((bot, _)) = &telegram_bot {
        // The menu is a convenience: a failure is logged, not fatal.
        if let Err(e) = telegram::set_commands(bot, &running.commands).await {
            tracing::warn!(error = %e, "setMyCommands failed");
        }
    }

    let http_stop = CancellationToken::new();
    let http_task = match config.http_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "http listening");
            let state = Arc::new(HttpState {
                stats: running.stats.clone(),
                channels: channels.clone(),
                store: running.store.clone(),
                prometheus,
                clock: running.clock,
            });
            let mut router = http::router(state);
            if let Some(alerts) = running.alerts.as_ref().filter(|a| !a.config.sources.is_empty()) {
                router = router.merge(alert_intake::routes(alerts.clone()));
                if config.console.is_some() {
                    // `opsclaw chat`: say where alerts can be posted, since the port may be random.
                    let addr = listener.local_addr()?;
                    for kind in alerts.config.sources.keys() {
                        eprintln!("alerts: POST http://{addr}/hooks/{}", kind.as_str());
                    }
                }
            }
            if let (Some(feishu @ FeishuConfig { mode: FeishuMode::Http, .. }), Some(bot)) =
                (&config.feishu, &feishu_bot)
            {
                let callbacks = Arc::new(CallbackState {
                    inbox: running.inbox.clone(),
                    encrypt_key: feishu.encrypt_key.as_deref().map(EncryptKey::new),
                    verification_token: feishu.verification_token.clone(),
                    bot: bot.clone(),
                    replay_window: feishu.replay_window,
                    clock: running.clock,
                    channels: channels.clone(),
                    catalog: running.catalog.clone(),
                    locales: config.locales.clone(),
                });
                router = router.merge(callback::routes(callbacks, feishu.max_body_bytes));
                // In callback mode the channel is up as soon as Feishu can reach us.
                channels.set_state(callback::CHANNEL, ChannelState::Connected);
            }
            if let (Some(tg), Some((bot, me))) = (&config.telegram, &telegram_bot)
                && let TelegramMode::Webhook { url, secret } = &tg.mode
            {
                telegram_webhook::register(bot, url, secret)
                    .await
                    .with_context(|| format!("registering the Telegram webhook {url}"))?;
                tracing::info!(url = %url, "telegram webhook registered");
                let state = Arc::new(WebhookState {
                    bot: bot.clone(),
                    me: me.clone(),
                    secret: secret.clone(),
                    inbox: running.inbox.clone(),
                    channels: channels.clone(),
                    clock: running.clock,
                    catalog: running.catalog.clone(),
                    locales: config.locales.clone(),
                });
                router = router.merge(telegram_webhook::routes(state, tg.max_body_bytes));
                channels.set_state(telegram::CHANNEL, ChannelState::Connected);
            }
            Some(tokio::spawn(http::serve(listener, router, http_stop.clone())))
        }
        None => None,
    };

    // Adapters stop taking input on `intake_stop`, before the pipeline drains.
    let intake_stop = CancellationToken::new();
    let long_connection = match (&config.feishu, feishu_bot) {
        (Some(feishu @ FeishuConfig { mode: FeishuMode::LongConnection, .. }), Some(bot)) => {
            let client = Arc::new(LongConnection {
                base_url: feishu.base_url.clone(),
                app_id: feishu.app_id.clone(),
                app_secret: feishu.app_secret.clone(),
                inbox: running.inbox.clone(),
                bot,
                channels: channels.clone(),
                clock: running.clock,
                catalog: running.catalog.clone(),
                locales: config.locales.clone(),
            });
            Some(tokio::spawn(client.run(intake_stop.clone())))
        }
        _ => None,
    };
    let poller = match (&config.telegram, telegram_bot) {
        (Some(tg), Some((bot, me))) if tg.mode == TelegramMode::Polling => {
            let poller = Poller {
                bot,
                me,
                inbox: running.inbox.clone(),
                channels: channels.clone(),
                clock: running.clock,
                catalog: running.catalog.clone(),
                locales: config.locales.clone(),
                timeout: tg.poll_timeout,
                offset: None,
                fence: None,
            };
            Some(tokio::spawn(poll_under_lease(running.replica.clone(), poller, intake_stop.clone())))
        }
        _ => None,
    };
    let console_task = console.map(|(console, console_config, input)| {
        let ConsoleConfig { user, chat, wait_for_replies, .. } = console_config;
        let session = Session { user, chat, chat_kind: ChatKind::Direct };
        let settle = wait_for_replies.then(|| Settle {
            stats: running.stats.clone(),
            store: running.store.clone(),
            deadline: Duration::from_secs(30),
        });
        let intake = Intake { inbox: running.inbox.clone(), channels: channels.clone(), clock: running.clock, settle };
        tokio::spawn(console.read_input(input, intake, session, intake_stop.clone()))
    });
    tracing::info!(version = env!("CARGO_PKG_VERSION"), backend = ?running.store.backend(), "opsclaw ready");

    match console_task {
        // With a console, the session ends when its input does (or on a signal).
        Some(mut task) => tokio::select! {
            result = &mut task => result.context("console reader")?,
            () = shutdown_signal.cancelled() => {
                intake_stop.cancel();
                task.await.context("console reader")?;
            }
        },
        None => shutdown_signal.cancelled().await,
    }
    // Stop taking events first (callbacks answered with an error now are
    // redelivered by the platform), then drain what was already accepted.
    intake_stop.cancel();
    if let Some(task) = long_connection {
        task.await.context("feishu long connection")?;
    }
    if let Some(task) = poller {
        task.await.context("telegram poller")?;
    }
    http_stop.cancel();
    if let Some(task) = http_task {
        task.await.context("http server")??;
    }
    running.shutdown(config.pipeline.shutdown_timeout).await
}

/// Says every `replicas.heartbeat` that this replica is alive; nothing else
/// runs in this loop, so no slow work can make the replica look gone.
async fn heartbeat(replica: Arc<Replica>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(replica.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = replica.beat().await {
            tracing::warn!(error = %e, "replica heartbeat failed");
        }
    }
}

/// Takes over, every heartbeat until shutdown starts, what replicas that
/// went silent left: events not yet handled (queued here), runs cut off
/// (reported as interrupted) and answers being written (written again).
/// Their replies are taken over by the outbox's sweep.
async fn take_over(
    replica: Arc<Replica>,
    inbox: Inbox,
    runs: Arc<Runs>,
    kb: Arc<Knowledge>,
    draining: CancellationToken,
) {
    let mut tick = tokio::time::interval(replica.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = draining.cancelled() => return,
        }
        let now = replica.clock.now_ms();
        match replica.store.take_over_events(now).await {
            Ok(events) => {
                if !events.is_empty() {
                    tracing::warn!(n = events.len(), "taking over events a gone replica accepted");
                }
                for event in events {
                    if inbox.requeue(event).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking for events of gone replicas failed"),
        }
        match replica.store.any_run_of_a_gone_replica(now).await {
            Ok(true) => {
                if let Err(e) = runs.recover().await {
                    tracing::warn!(error = %e, "reporting runs of gone replicas failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "looking for runs of gone replicas failed"),
        }
        match replica.store.take_over_answers(now).await {
            Ok(answers) => kb.resume(answers).await,
            Err(e) => tracing::warn!(error = %e, "looking for answers of gone replicas failed"),
        }
    }
}

/// Polls Telegram while this replica holds the poller lease: only one
/// replica may call getUpdates (Telegram answers a second with 409 and
/// breaks the first's long poll). Each turn starts at the offset the last
/// holder saved; the poller stops when the lease is lost, and the lease is
/// released when it stops, so the next replica takes over within a heartbeat.
async fn poll_under_lease(replica: Arc<Replica>, template: Poller, stop: CancellationToken) {
    let channels = template.channels.clone();
    let held_gauge = metrics::gauge!(m::LEASE_HELD, "lease" => telegram::POLL_LEASE);
    loop {
        held_gauge.set(0.0);
        // Connecting until the lease says which: this replica polls, or another one does.
        let standby =
            || channels.set_state(telegram::CHANNEL, ChannelState::Standby("another replica polls getUpdates".into()));
        let Some(held) = replica.hold(telegram::POLL_LEASE, &stop, standby).await else { break };
        held_gauge.set(1.0);
        let offset = match replica.store.cursor(telegram::OFFSET_CURSOR).await {
            Ok(offset) => offset,
            Err(e) => {
                tracing::warn!(error = %e, "reading the telegram offset failed; trying again");
                held.release(&replica.store).await;
                continue;
            }
        };
        let poller = Poller { offset, fence: Some(held.fence.clone()), ..template.clone() };
        poller.run(held.lost.clone()).await;
        held_gauge.set(0.0);
        held.release(&replica.store).await;
        if stop.is_cancelled() {
            break;
        }
    }
    channels.set_state(telegram::CHANNEL, ChannelState::Closed);
}

/// How often SQLite's WAL is checkpointed. Each checkpoint fsyncs what was
/// written since the last one, and while the kernel flushes that, appends to
/// the WAL wait; small, frequent flushes keep that wait to a millisecond or
/// two instead of one long stall a second (at 5,000 events/s, p99 went from
/// 9 - 11 ms at 100 ms to 6.5 - 8 ms at 25 ms; 10 ms was no better).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(25);
/// Ticks between gauge refreshes (five seconds) and retention sweeps (ten minutes).
const GAUGE_TICKS: u64 = 200;
const CLEANUP_TICKS: u64 = 24_000;

/// Checkpoints SQLite's WAL, keeps gauges current and deletes what retention
/// no longer needs.
async fn housekeeping(
    store: Store,
    clock: Clock,
    p: crate::config::PipelineConfig,
    alert_retention: Option<Duration>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    let mut n_ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = store.checkpoint().await {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
        if n_ticks.is_multiple_of(GAUGE_TICKS) {
            if let (Ok(outbox), Ok(inbox)) = (store.outbox_pending_count().await, store.inbox_pending_count().await) {
                metrics::gauge!(m::OUTBOX_DEPTH).set(outbox as f64);
                metrics::gauge!(m::INBOX_PENDING).set(inbox as f64);
            }
            if let Ok(firing) = store.count_firing_alert_groups().await {
                metrics::gauge!(m::ALERT_GROUPS_FIRING).set(firing as f64);
            }
        }
        // Starting with the first tick.
        if n_ticks.is_multiple_of(CLEANUP_TICKS) {
            match store.cleanup(clock.now_ms(), p.inbox_retention, p.outbox_retention).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "retention cleanup"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention cleanup failed"),
            }
            if let Some(keep) = alert_retention {
                match store.cleanup_alerts(clock.now_ms() - keep.as_millis() as i64).await {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "resolved alert groups past retention forgotten"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "alert retention cleanup failed"),
                }
            }
        }
        n_ticks += 1;
    }
}
