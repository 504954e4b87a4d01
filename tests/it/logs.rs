//! `/logs` end to end through the real binary: the files backend on
//! generated logs (rotation and gzip are the backend's own tests), pages,
//! the download, masking, refusals, roles; the demo service of `opsclaw
//! chat`; Loki and Elasticsearch through their fakes; downloads on Feishu
//! and Telegram; an alert card's Logs button.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::harness::{Proc, write_config};

/// An RFC 3339 timestamp `ago` before now.
fn stamp(ago: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() - ago).to_string()
}

/// `n` lines of a payments service, one a minute, the newest a minute ago;
/// line `i` (0 = oldest) says `payment {i} failed` with a token in it.
fn write_log(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut file = std::fs::File::create(dir.join("payments.log")).unwrap();
    for i in 0..n {
        let ago = Duration::from_secs(60 * (n - i) as u64);
        writeln!(file, "{} ERROR payment {i} failed: upstream said 502 token=tok_{i}_SECRETVALUE", stamp(ago)).unwrap();
        writeln!(file, "{} INFO  healthz ok", stamp(ago)).unwrap();
    }
}

fn console_config(dir: &Path) -> String {
    format!(
        "data_dir = \"data\"\n[console]\nuser = \"you\"\nchat = \"ops\"\n[access]\nallowed_chats = [\"console:*\"]\n\
         [[principals]]\nname = \"you\"\nroles = [\"admin\"]\nids = [\"console:you\"]\n\
         [[principals]]\nname = \"guest\"\nids = [\"console:guest\"]\n\
         [logs]\npage = 3\n\
         [logs.services.payments]\nsource = \"files\"\npaths = [\"{0}/logs/*.log*\"]\nrole = \"responder\"\n\
         [logs.services.open]\nsource = \"files\"\npaths = [\"{0}/open/*.log\"]\n",
        dir.display()
    )
}

#[tokio::test]
async fn logs_pages_downloads_masks_and_refuses_in_the_console() {
    let dir = tempfile::tempdir().unwrap();
    write_log(&dir.path().join("logs"), 10);
    write_log(&dir.path().join("open"), 2);
    let config = write_config(dir.path(), &console_config(dir.path()));
    let mut bot = Proc::spawn(&["chat", "--config", config.to_str().unwrap()], dir.path());

    bot.send("/logs").await;
    bot.expect("Services whose logs you may read: open (files), payments (files).").await;
    bot.send("/logs nope").await;
    bot.expect("There is no service “nope” with logs. Known: open, payments.").await;

    // The newest three matching lines first, secrets masked, with More and Download.
    bot.send("/logs payments payment --since 1h").await;
    bot.expect("🪵 Logs of payments · payment [grey]").await;
    let first = bot.expect("payment 9 failed").await;
    assert!(first.contains("token=***") && !first.contains("SECRETVALUE"), "{first}");
    bot.expect("payment 8 failed").await;
    bot.expect("payment 7 failed").await;
    bot.expect("lines 1–3, newest first").await;
    bot.expect("[1] Older lines  [2] Download").await;
    bot.send("1").await;
    bot.expect("payment 6 failed").await;
    bot.expect("payment 4 failed").await;
    bot.expect("lines 4–6, newest first").await;
    bot.expect("[3] Older lines  [4] Download").await;

    // The whole excerpt as a file, oldest first, masked like the card.
    bot.send("2").await;
    bot.expect("📎 payments: 10 lines").await;
    let saved = bot.expect("payments-logs-").await;
    let path = saved.trim().trim_start_matches("opsclaw>").trim().split(" (").next().unwrap().to_owned();
    let file = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(file.starts_with("# opsclaw /logs payments \"payment\""), "{file}");
    let zero = file.find("payment 0 failed").expect("the oldest line");
    let nine = file.find("payment 9 failed").expect("the newest line");
    assert!(zero < nine, "oldest first:\n{file}");
    assert!(!file.contains("SECRETVALUE") && file.contains("token=***"), "{file}");
    assert!(!file.contains("healthz"), "only matching lines:\n{file}");

    // The level filter, and refusals that say why.
    bot.send("/logs payments --level error --limit 1").await;
    bot.expect("· level ≥ error [red]").await;
    bot.expect("payment 9 failed").await;
    bot.send("/logs payments --since 1h --from 2h").await;
    bot.expect("Give either --since or --from, not both.").await;
    bot.send("/logs payments --from 1h --to 2h").await;
    bot.expect("The range runs backwards").await;
    bot.send("/logs payments --since 400d").await;
    bot.expect("The range is too long: at most 31d").await;
    bot.send("/logs payments --from yesterday-ish").await;
    bot.expect("“yesterday-ish” is not a time.").await;
    bot.send("/logs payments (unclosed").await;
    bot.expect("That is not a valid pattern").await;
    bot.send("/logs payments nothing-like-this").await;
    bot.expect("No lines match in this range.").await;

    // Roles: the service's own, on the command and on its buttons.
    bot.send(":user guest").await;
    bot.send("/logs").await;
    bot.expect("Services whose logs you may read: open (files).").await;
    bot.send("/logs payments").await;
    bot.expect("Reading the logs of payments needs the role “responder”. Your roles: none.").await;
    bot.send("3").await;
    bot.expect("You need the role “responder” to press this button.").await;
    bot.send("/logs open").await;
    bot.expect("🪵 Logs of open [grey]").await;
    bot.expect("payment 1 failed").await;
    bot.terminate().await;
}

#[tokio::test]
async fn opsclaw_chat_reads_the_demo_apps_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut bot = Proc::spawn(&["chat"], dir.path());
    bot.send("/logs").await;
    bot.expect("Services whose logs you may read: demo (files).").await;
    bot.send("/deploy demo 1.2.0").await;
    bot.expect("[1] Run  [2] Cancel").await;
    bot.send("1").await;
    bot.expect("— succeeded [green]").await;
    bot.send("/logs demo").await;
    bot.expect("🪵 Logs of demo [grey]").await;
    bot.expect("GET /healthz 200").await;
    let connect = bot.expect("connecting to postgres://").await;
    assert!(connect.contains("postgres://demo:***@db.local") && !connect.contains("s3cr3t"), "{connect}");
    bot.terminate().await;
}

#[tokio::test]
async fn telegram_gets_the_download_as_a_document() {
    use super::fake_telegram::{FakeTelegram, TOKEN};
    use super::harness::wait_until;
    const OPS: i64 = -1004444444444;
    const ALICE: i64 = 6001;
    let dir = tempfile::tempdir().unwrap();
    write_log(&dir.path().join("logs"), 4);
    let fake = FakeTelegram::start().await;
    let config = format!(
        "data_dir = \"data\"\n[telegram]\napi_url = \"{}\"\ntoken_env = \"TELEGRAM_BOT_TOKEN\"\npoll_timeout = \"2s\"\n\
         [access]\nallowed_chats = [\"telegram:*\"]\n\
         [[principals]]\nname = \"alice\"\nroles = [\"responder\"]\nids = [\"telegram:{ALICE}\"]\n\
         [logs.services.payments]\nsource = \"files\"\npaths = [\"{}/logs/*.log\"]\nrole = \"responder\"\n",
        fake.url(),
        dir.path().display()
    );
    let path = write_config(dir.path(), &config);
    let mut bot = Proc::spawn_with_env(
        &["run", "--config", path.to_str().unwrap()],
        dir.path(),
        &[("TELEGRAM_BOT_TOKEN", TOKEN)],
    );
    bot.expect_stderr("opsclaw ready").await;
    let chat = FakeTelegram::group_chat(OPS, "ops", true, false);
    let alice = FakeTelegram::user(ALICE, "Alice", Some("alice"));
    fake.push("message", FakeTelegram::text_message(1, chat, alice.clone(), "/logs payments failed --since 1h", None));
    wait_until("the logs card", || async { fake.sent(OPS).iter().any(|s| s.text.contains("payment 3 failed")) }).await;
    let card = fake.sent(OPS).into_iter().find(|s| s.text.contains("payment 3 failed")).unwrap();
    assert!(card.text.contains("token=***") && !card.text.contains("SECRETVALUE"), "{}", card.text);
    let keyboard = card.reply_markup.clone().expect("the card has buttons");
    let download = keyboard["inline_keyboard"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .find(|b| b["text"] == "Download")
        .and_then(|b| b["callback_data"].as_str().map(str::to_owned))
        .expect("a Download button");
    let message = fake.sent_message_json(OPS, card.message_id);
    fake.push("callback_query", FakeTelegram::callback_query("cb1", alice, message, &download));
    wait_until("the document", || async { fake.sent(OPS).iter().any(|s| s.document.is_some()) }).await;
    let sent = fake.sent(OPS).into_iter().find(|s| s.document.is_some()).unwrap();
    let (name, bytes) = sent.document.unwrap();
    assert!(name.starts_with("payments-logs-"), "{name}");
    assert!(sent.text.starts_with("payments: 4 lines"), "the caption: {}", sent.text);
    let file = String::from_utf8(bytes).unwrap();
    assert!(file.contains("payment 0 failed") && file.contains("payment 3 failed") && !file.contains("SECRETVALUE"));
    bot.terminate().await;
}

/// Now, in ms since the epoch.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn loki_and_elasticsearch_services_answer_through_the_chat() {
    use super::fake_elastic::{FakeElastic, Mode as EsMode};
    use super::fake_loki::{FakeLoki, Mode as LokiMode};
    let loki = FakeLoki::start().await;
    let es = FakeElastic::start().await;
    let now = now_ms();
    loki.push(&[("app", "api"), ("pod", "api-1")], now - 120_000, "level=error msg=\"db timeout\" password=p4ssw0rd-x");
    loki.push(&[("app", "api"), ("pod", "api-2")], now - 60_000, "level=info msg=\"request served\"");
    loki.push(&[("app", "web")], now - 30_000, "level=error msg=\"not this service\"");
    loki.require_authorization(Some("Bearer loki-token-123"));
    es.index("logs-2026", serde_json::json!({"@timestamp": now - 90_000, "message": "checkout failed: card declined", "service": "shop", "log": {"level": "error"}}));
    es.index("logs-2026", serde_json::json!({"@timestamp": now - 80_000, "message": "checkout ok", "service": "shop", "log": {"level": "info"}}));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "data_dir = \"data\"\n[console]\nuser = \"you\"\n[access]\nallowed_chats = [\"console:*\"]\n\
         [[principals]]\nname = \"you\"\nroles = [\"admin\"]\nids = [\"console:you\"]\n\
         [logs.services.api]\nsource = \"loki\"\nurl = \"{}\"\nselector = '{{app=\"api\"}}'\nauth_env = \"LOKI_AUTH\"\ntimeout = \"2s\"\n\
         [logs.services.shop]\nsource = \"elasticsearch\"\nurl = \"{}\"\nindex = \"logs-*\"\nlevel_field = \"log.level\"\nfilter = \"service:shop\"\n",
        loki.url(),
        es.url()
    );
    let path = write_config(dir.path(), &config);
    let mut bot = Proc::spawn_with_env(
        &["chat", "--config", path.to_str().unwrap()],
        dir.path(),
        &[("LOKI_AUTH", "Bearer loki-token-123")],
    );
    bot.send("/logs api --level error").await;
    bot.expect("🪵 Logs of api · level ≥ error [red]").await;
    let line = bot.expect("db timeout").await;
    assert!(line.contains("password=***"), "{line}");
    bot.expect("lines 1–1, newest first").await;
    bot.send("/logs shop checkout").await;
    bot.expect("🪵 Logs of shop · checkout [grey]").await;
    bot.expect("checkout ok").await;
    bot.expect("checkout failed: card declined").await;
    bot.send("/logs shop \"unclosed").await;
    bot.expect("a quote is opened but never closed").await;
    bot.send("/logs shop checkout AND (").await;
    bot.expect("The logs of shop refused the query: Failed to parse query").await;
    es.set_mode(EsMode::Down);
    bot.send("/logs shop").await;
    bot.expect("Cannot reach the logs of shop").await;
    loki.set_mode(LokiMode::Slow);
    bot.send("/logs api").await;
    bot.expect("The logs of api did not answer within 2s.").await;
    loki.set_mode(LokiMode::Garbage);
    bot.send("/logs api").await;
    bot.expect("The logs of api answered something unexpected").await;
    // Everything else keeps working.
    bot.send("/ping").await;
    bot.expect("pong").await;
    bot.terminate().await;
}
