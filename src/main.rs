//! The `opsclaw` binary: parses the command line, sets up logging and hands
//! over to `app`. Nothing else happens here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opsclaw::app::{self, ConsoleIo};
use opsclaw::config::{self, Config, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "opsclaw",
    version,
    about = "ChatOps bot for on-call and platform teams on Feishu (Lark) and Telegram"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Talk to the bot in this terminal (or pipe): console adapter, SQLite, bundled commands and cards.
    Chat {
        /// A config file to use instead of the embedded defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Where the SQLite database lives (default: ./opsclaw-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Reply language: en or zh-CN.
        #[arg(long)]
        locale: Option<String>,
        /// Where the HTTP server (alert webhooks, /metrics) listens (default: a random loopback port).
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
    },
    /// Check a config file with its command files and card templates; list every problem.
    CheckConfig { file: PathBuf },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy the SQLite database, consistently, while the bot runs or not
    /// (PostgreSQL: use pg_dump). Restore: stop opsclaw, put the copy in place.
    Backup {
        #[arg(long, short)]
        config: PathBuf,
        /// The new file to write.
        out: PathBuf,
    },
    /// Build or search a knowledge base index of Markdown runbooks.
    Kb {
        #[command(subcommand)]
        action: KbAction,
    },
    /// The pretend deploy tool the bundled /deploy command runs in `opsclaw chat`.
    #[command(hide = true)]
    DemoApp {
        /// deploy or verify
        action: String,
        #[arg(long)]
        app: String,
        #[arg(long)]
        env: String,
        #[arg(long)]
        version: Option<String>,
    },
}

#[derive(Subcommand)]
enum KbAction {
    /// Index every Markdown file under the roots (replacing an index in IDX).
    Index {
        /// A directory of Markdown files; repeat for more.
        #[arg(long, required = true)]
        root: Vec<PathBuf>,
        #[arg(long)]
        index: PathBuf,
    },
    /// Print the best documents for QUERY (`-`: one query per line from stdin, JSON out).
    Search {
        #[arg(long)]
        index: PathBuf,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// One JSON object per hit (per query with `-`).
        #[arg(long)]
        json: bool,
        query: String,
    },
}

/// Where the demo app's logs are, under the data directory (as in `chat.toml`).
const DEMO_LOGS: &str = "demo-app/logs/*.log*";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the tokio runtime starts");
    let code = match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("opsclaw: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Everything that must finish has by now (the pipeline drained, the
    // journal flushed). What may still run is a blocking read of the console's
    // stdin, which no signal ends; dropping the runtime would wait for it.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    code
}

/// How long blocking work left over after a clean stop may take to end.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Kb { action } => kb(action),
        Command::DemoApp { action, app, env, version } => {
            Ok(ExitCode::from(opsclaw::ops::demo::run(&action, &app, &env, version.as_deref()).await?))
        }
        Command::CheckConfig { file } => {
            let problems = app::check_config(&file);
            if problems.is_empty() {
                println!("{}: ok", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            for p in &problems {
                println!("{p}");
            }
            eprintln!("{} problem(s) found", problems.len());
            Ok(ExitCode::FAILURE)
        }
        Command::Migrate { config } => {
            let config = load(&config)?;
            init_logging(&config, "info");
            app::migrate(&config).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { config, out } => {
            let config = load(&config)?;
            init_logging(&config, "info");
            app::backup(&config, &out).await?;
            println!("backed up to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let config = load(&config)?;
            init_logging(&config, &config.log.level);
            let io = config.console.as_ref().map(|_| stdio());
            app::run(config, io, signals()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat { config: path, data_dir, locale, http } => {
            let mut config = match &path {
                Some(path) => load(path)?,
                None => {
                    let cwd = std::env::current_dir()?;
                    Config::parse(config::CHAT_DEFAULTS, "(embedded chat defaults)", &cwd, &|name| {
                        std::env::var(name).ok()
                    })
                    .map_err(|e| anyhow::anyhow!(join(&e)))?
                }
            };
            if let Some(dir) = data_dir {
                config.database_url = format!("sqlite://{}", dir.join("opsclaw.db").display());
                // The embedded `demo` log service reads what the demo app writes in the data directory.
                if path.is_none()
                    && let Some(demo) = config.logs.services.get_mut("demo")
                    && let opsclaw::logs::config::BackendConfig::Files(files) = &mut demo.backend
                {
                    let dir = if dir.is_absolute() { dir.clone() } else { std::env::current_dir()?.join(&dir) };
                    files.paths = vec![dir.join(DEMO_LOGS).display().to_string()];
                }
                config.data_dir = dir;
            }
            if let Some(locale) = locale {
                config.locales.default = opsclaw::i18n::Locale::parse(&locale)
                    .ok_or_else(|| anyhow::anyhow!("unknown locale `{locale}` (en, zh-CN)"))?;
            }
            if let Some(addr) = http {
                let open = config
                    .alerts
                    .as_ref()
                    .is_some_and(|a| a.sources.values().any(|s| s.auth == opsclaw::alert::config::HookAuth::None));
                if open && !addr.ip().is_loopback() {
                    anyhow::bail!("--http {addr}: alert sources without auth may only listen on a loopback address");
                }
                config.http_listen = Some(addr);
            }
            if config.console.is_none() {
                anyhow::bail!("this config does not enable [console]");
            }
            // The conversation owns stdout; logs go to stderr and stay quiet unless asked.
            init_logging(&config, "warn");
            eprintln!("opsclaw chat: type /help (:help for console commands, Ctrl-D to quit)");
            app::run(config, Some(stdio()), signals()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration:\n{}", join(&e)))
}

fn kb(action: KbAction) -> anyhow::Result<ExitCode> {
    use std::io::{BufRead, Write};

    use opsclaw::kb::Kb;
    match action {
        KbAction::Index { root, index } => {
            tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("warn").init();
            let started = std::time::Instant::now();
            let (_, stats) = Kb::build(root.into_iter().map(opsclaw::kb::Root::dir).collect(), &index)?;
            println!(
                "indexed {} documents ({} passages) into {} in {:.2?}; {} skipped",
                stats.documents,
                stats.passages,
                index.display(),
                started.elapsed(),
                stats.skipped.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        KbAction::Search { index, limit, json, query } => {
            let kb = Kb::open(&index)?;
            let mut out = std::io::stdout().lock();
            if query == "-" {
                // One JSON line per input line, whatever the line holds, so
                // answers stay aligned with questions: a bad one gets an
                // `error` (and one line on stderr), not the end of the batch.
                let (mut stdin, mut line, mut n) = (std::io::stdin().lock(), Vec::new(), 0);
                while stdin.read_until(b'\n', &mut line)? > 0 {
                    n += 1;
                    let raw = line.strip_suffix(b"\n").unwrap_or(&line);
                    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                    let q = String::from_utf8_lossy(raw);
                    if matches!(q, std::borrow::Cow::Owned(_)) {
                        eprintln!("opsclaw: query {n} is not valid UTF-8; searched with its bad bytes replaced");
                    }
                    let answer = match kb.search(&q, limit) {
                        Ok(hits) => serde_json::json!({ "q": q, "hits": hits }),
                        Err(e) => {
                            eprintln!("opsclaw: query {n}: {e}");
                            serde_json::json!({ "q": q, "hits": [], "error": e.to_string() })
                        }
                    };
                    writeln!(out, "{answer}")?;
                    line.clear();
                }
                return Ok(ExitCode::SUCCESS);
            }
            let hits = kb.search(&query, limit)?;
            for (i, hit) in hits.iter().enumerate() {
                if json {
                    writeln!(out, "{}", serde_json::to_string(hit)?)?;
                } else {
                    writeln!(out, "{}. {} — {} ({:.2})\n   {}", i + 1, hit.path, hit.heading, hit.score, hit.snippet)?;
                }
            }
            if hits.is_empty() && !json {
                eprintln!("nothing found");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn join(errors: &[config::ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

fn stdio() -> ConsoleIo {
    ConsoleIo { input: Box::new(tokio::io::stdin()), output: Box::new(tokio::io::stdout()) }
}

/// Logs to stderr; `RUST_LOG` overrides the level.
fn init_logging(config: &Config, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Cancelled on SIGINT or SIGTERM.
fn signals() -> CancellationToken {
    let token = CancellationToken::new();
    let fired = token.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                eprintln!("opsclaw: cannot listen for SIGTERM: {e}");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        fired.cancel();
    });
    token
}
