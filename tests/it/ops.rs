//! Ops commands end to end: the real binary on the fake Bot API runs
//! `tests/ops/tool.sh` as its deploy, verify and rollback tool (a real
//! process that records how it was called). Approvals, refusals, the lock,
//! timeouts, output floods, redaction, rollback and a restart mid-run.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::fake_telegram::{FakeTelegram, Sent, TOKEN};
use super::harness::{Proc, wait_until, write_config};

const ALICE: i64 = 5001; // deployer and approver
const BOB: i64 = 5002; // deployer and approver
const CAROL: i64 = 5003; // deployer, not an approver
const MALLORY: i64 = 5004; // no roles
const OPS: i64 = -1003333333333;
const SECRET: &str = "tok-SUPER-s3cret-value-42";
const BEARER: &str = "zyxwvutsrqponmlkjihg";

fn tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ops/tool.sh")
}

fn deploy_command() -> String {
    let tool = tool().display().to_string();
    format!(
        r#"
name = "deploy"
handler = "run"
role = "deployer"
summary = {{ en = "Deploy", zh-CN = "部署" }}

[[args]]
name = "app"
kind = "choice"
choices = ["pay"]
required = true

[[args]]
name = "version"
kind = "word"
required = true
pattern = "[0-9]+\\.[0-9]+\\.[0-9]+(-[a-z]+)?"

[[args]]
name = "env"
kind = "choice"
choices = ["staging", "prod"]
default = "staging"

[run]
target = "{{{{ app }}}}/{{{{ env }}}}"
history = {{ app = "app", env = "env", version = "version" }}
environments = ["staging", "prod"]
env = ["PATH"]
secrets = ["DEPLOY_TOKEN"]
auto_rollback = true
timeout = "3s"
output_cap = "4KiB"

[run.approval]
approvers = 1
role = "approver"
expires = "10m"
environments = ["prod"]

[[run.steps]]
name = "deploy"
argv = ["/bin/sh", "{tool}", "deploy", "{{{{ version }}}}", "{{{{ env }}}}"]

[[run.steps]]
name = "verify"
kind = "verify"
argv = ["/bin/sh", "{tool}", "verify"]
interval = "100ms"
timeout = "1s"

[[run.rollback]]
name = "rollback"
argv = ["/bin/sh", "{tool}", "rollback", "{{{{ previous_version }}}}"]
"#
    )
}

struct Bot {
    proc: Option<Proc>,
    fake: FakeTelegram,
    dir: tempfile::TempDir,
    messages: i64,
}

fn config(fake: &FakeTelegram, dir: &Path) -> String {
    format!(
        "data_dir = \"data\"\ncommands_dir = \"{}\"\n[log]\nformat = \"json\"\nlevel = \"info,opsclaw=debug\"\n\
         [telegram]\napi_url = \"{}\"\ntoken_env = \"TELEGRAM_BOT_TOKEN\"\npoll_timeout = \"2s\"\n\
         [telegram.limits]\nper_chat_per_second = 50.0\nper_chat_burst = 50\nper_group_per_minute = 600.0\nper_group_burst = 50\n\
         [access]\nallowed_chats = [\"telegram:*\"]\n\
         [[principals]]\nname = \"alice\"\nroles = [\"deployer\", \"approver\", \"viewer\"]\nids = [\"telegram:{ALICE}\"]\n\
         [[principals]]\nname = \"bob\"\nroles = [\"deployer\", \"approver\"]\nids = [\"telegram:{BOB}\"]\n\
         [[principals]]\nname = \"carol\"\nroles = [\"deployer\"]\nids = [\"telegram:{CAROL}\"]\n\
         [[principals]]\nname = \"mallory\"\nroles = []\nids = [\"telegram:{MALLORY}\"]\n",
        dir.join("commands").display(),
        fake.url()
    )
}

impl Bot {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let commands = dir.path().join("commands");
        std::fs::create_dir_all(&commands).unwrap();
        std::fs::write(commands.join("deploy.toml"), deploy_command()).unwrap();
        for file in ["rollback.toml", "history.toml", "audit.toml"] {
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("commands").join(file);
            std::fs::copy(source, commands.join(file)).unwrap();
        }
        let fake = FakeTelegram::start().await;
        let proc = spawn(dir.path(), &fake).await;
        Self { proc: Some(proc), fake, dir, messages: 0 }
    }

    fn data(&self, file: &str) -> PathBuf {
        self.dir.path().join("data").join(file)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.data(file)).unwrap_or_default()
    }

    async fn say(&mut self, who: i64, name: &str, text: &str) {
        self.messages += 1;
        let chat = FakeTelegram::group_chat(OPS, "ops", true, false);
        let from = FakeTelegram::user(who, name, Some(&name.to_lowercase()));
        self.fake.push("message", FakeTelegram::text_message(self.messages, chat, from, text, None));
    }

    /// The newest message in the chat (by creation) that passes `test`, once there is one.
    async fn wait_for(&self, what: &str, test: impl Fn(&Sent) -> bool) -> Sent {
        wait_until(what, || async { self.fake.sent(OPS).iter().any(&test) }).await;
        self.fake.sent(OPS).into_iter().rev().find(test).unwrap()
    }

    async fn text(&self, needle: &str) -> Sent {
        self.wait_for(&format!("a message containing {needle:?}"), |s| s.text.contains(needle)).await
    }

    /// Run #`id`'s card once its text or a button shows `needle`.
    async fn card(&self, id: i64, needle: &str) -> Sent {
        let tag = format!("#{id} ·");
        self.wait_for(&format!("run #{id}'s card showing {needle:?}"), |s| {
            let buttons = s.reply_markup.as_ref().map(Value::to_string).unwrap_or_default();
            s.text.contains(&tag) && (s.text.contains(needle) || buttons.contains(needle))
        })
        .await
    }

    async fn stop(&mut self) -> String {
        self.proc.take().expect("the bot runs").terminate_with_stderr().await
    }

    async fn press(&mut self, card: &Sent, label: &str, who: i64, name: &str) {
        let data = button(card, label).unwrap_or_else(|| panic!("no {label} button on {}", card.text));
        self.messages += 1;
        let message = self.fake.sent_message_json(OPS, card.message_id);
        let from = FakeTelegram::user(who, name, Some(&name.to_lowercase()));
        let id = format!("cb{}", self.messages);
        self.fake.push("callback_query", FakeTelegram::callback_query(&id, from, message, &data));
    }

    /// Every text the chat shows, cards included, with the bot's logs.
    fn everything(&self) -> String {
        self.fake.sent(OPS).iter().map(|s| s.text.clone()).collect::<Vec<_>>().join("\n")
    }
}

async fn spawn(dir: &Path, fake: &FakeTelegram) -> Proc {
    let path = write_config(dir, &config(fake, dir));
    let mut proc = Proc::spawn_with_env(
        &["run", "--config", path.to_str().unwrap()],
        dir,
        &[("TELEGRAM_BOT_TOKEN", TOKEN), ("DEPLOY_TOKEN", SECRET)],
    );
    proc.expect_stderr("opsclaw ready").await;
    proc
}

fn button(card: &Sent, label: &str) -> Option<String> {
    let keyboard = card.reply_markup.as_ref()?;
    keyboard["inline_keyboard"].as_array()?.iter().flat_map(|row| row.as_array().cloned().unwrap_or_default()).find_map(
        |b: Value| {
            b["text"].as_str().filter(|t| t.contains(label))?;
            b["callback_data"].as_str().map(str::to_owned)
        },
    )
}

fn pid_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

#[tokio::test]
async fn a_prod_deploy_needs_someone_elses_approval_and_a_failed_verify_rolls_back() {
    let mut bot = Bot::start().await;
    bot.say(ALICE, "Alice", "/deploy pay 1.0.0 prod").await;
    let preview = bot.card(1, "Approve").await;
    // The preview shows the exact argv and who must approve.
    assert!(preview.text.contains("deploy 1.0.0 prod"), "{}", preview.text);
    assert!(preview.text.contains("approver"), "{}", preview.text);

    bot.press(&preview, "Approve", ALICE, "Alice").await;
    bot.text("someone else with the role").await;
    bot.press(&preview, "Approve", CAROL, "Carol").await;
    bot.text("needs the role “approver”").await;
    assert!(!bot.data("calls.log").exists(), "nothing ran before the approval");

    bot.press(&preview, "Approve", BOB, "Bob").await;
    let done = bot.card(1, "succeeded").await;
    assert!(done.text.contains("approved by bob"), "{}", done.text);
    assert!(bot.read("calls.log").starts_with("deploy 1.0.0 prod\nverify\n"), "{}", bot.read("calls.log"));

    // The next version deploys but fails its health check: rolled back to 1.0.0 at once.
    bot.say(ALICE, "Alice", "/deploy pay 1.1.0-bad prod").await;
    let preview = bot.card(2, "Approve").await;
    assert!(preview.text.contains("1.0.0"), "the preview names the current version: {}", preview.text);
    bot.press(&preview, "Approve", BOB, "Bob").await;
    bot.text("rolling back to 1.0.0 as run #3").await;
    bot.card(3, "succeeded").await;
    bot.card(2, "Rolled back as run #3").await;
    assert!(bot.read("calls.log").ends_with("rollback 1.0.0\n"), "{}", bot.read("calls.log"));
    assert_eq!(bot.read("current").trim(), "1.0.0");

    bot.say(ALICE, "Alice", "/history pay prod").await;
    let history = bot.text("Deployments of pay").await;
    assert!(history.text.contains("Deployed now: 1.0.0"), "{}", history.text);
    assert!(history.text.contains("#2 1.1.0-bad"), "{}", history.text);

    bot.say(ALICE, "Alice", "/audit 30").await;
    let audit = bot.text("Audit log").await;
    for needle in [
        "alice approve /deploy #1 pay/prod → refused · the requester cannot approve their own run",
        "carol approve /deploy #1 pay/prod → refused · missing role approver",
        "bob approve /deploy #1 pay/prod → 1 of 1",
        // Verify retries until its 1 s timeout: the run ends with the last
        // attempt's exit 1, or, on a loaded machine, with the timeout itself.
        "opsclaw finish /deploy #2 pay/prod → failed",
        "opsclaw finish /deploy #3 pay/prod → succeeded (exit 0)",
    ] {
        assert!(audit.text.contains(needle), "{needle:?} not in\n{}", audit.text);
    }
    // A second Roll back of the same run is refused: it is already undone.
    let failed = bot.card(2, "failed").await;
    assert!(button(&failed, "Roll back").is_none(), "{}", failed.text);
    bot.say(BOB, "Bob", "/rollback pay prod").await;
    bot.text("already rolled back by run #3").await;

    // A good deploy, rolled back later from its card: through approval, as prod asks.
    bot.say(BOB, "Bob", "/deploy pay 1.2.0 prod").await;
    let preview = bot.card(4, "Approve").await;
    bot.press(&preview, "Approve", ALICE, "Alice").await;
    let done = bot.card(4, "succeeded").await;
    bot.press(&done, "Roll back", CAROL, "Carol").await;
    let rollback = bot.card(5, "Approve").await;
    assert!(
        rollback.text.contains("Rollback pay/prod") && rollback.text.contains("undoes run #4"),
        "{}",
        rollback.text
    );
    bot.press(&rollback, "Approve", BOB, "Bob").await;
    bot.card(5, "succeeded").await;
    bot.card(4, "Rolled back as run #5").await;
    assert_eq!(bot.read("current").trim(), "1.0.0");
    assert!(
        bot.read("calls.log").ends_with("deploy 1.2.0 prod\nverify\nrollback 1.0.0\n"),
        "{}",
        bot.read("calls.log")
    );
    bot.stop().await;
}

#[tokio::test]
async fn injection_attempts_unknown_apps_and_missing_roles_are_refused_and_recorded() {
    let mut bot = Bot::start().await;
    for attack in [
        "/deploy pay 1.0.0;rm -rf / staging",
        "/deploy pay $(touch /tmp/opsclaw-pwned) staging",
        "/deploy pay \"1.0.0 && reboot\"",
        "/deploy pay `id`",
        "/deploy shop 1.0.0",
        "/deploy pay 1.0.0 qa",
    ] {
        bot.say(ALICE, "Alice", attack).await;
    }
    bot.say(MALLORY, "Mallory", "/deploy pay 1.0.0").await;
    bot.text("You need the role “deployer” to run /deploy").await;
    wait_until("every refusal is answered", || async {
        bot.fake.sent(OPS).iter().filter(|s| s.text.contains("/deploy:")).count() == 6
    })
    .await;
    let all = bot.everything();
    assert!(all.contains("is not allowed (it must match"), "{all}");
    assert!(all.contains("must be one of: pay"), "{all}");
    assert!(all.contains("must be one of: staging, prod"), "{all}");
    assert!(!bot.data("calls.log").exists(), "a refused command ran something");
    assert!(!Path::new("/tmp/opsclaw-pwned").exists());

    bot.say(ALICE, "Alice", "/audit 50").await;
    let audit = bot.text("Audit log").await;
    assert_eq!(audit.text.matches("refuse /deploy → bad arguments").count(), 6, "{}", audit.text);
    assert!(audit.text.contains("mallory refuse /deploy → denied"), "{}", audit.text);
    bot.stop().await;
}

#[tokio::test]
async fn a_hanging_step_is_killed_with_its_process_group_and_holds_the_lock_until_then() {
    let mut bot = Bot::start().await;
    bot.say(ALICE, "Alice", "/deploy pay 2.0.0-hang").await;
    let preview = bot.card(1, "Run").await;
    bot.press(&preview, "Run", ALICE, "Alice").await;
    wait_until("the hanging deploy started its background sleep", || async { bot.data("hang.pid").exists() }).await;

    // A second run on the same target is refused while the first holds the lock.
    bot.say(BOB, "Bob", "/deploy pay 2.0.1").await;
    bot.text("pay/staging is busy: run #1 is running (requested by alice)").await;

    let failed = bot.card(1, "timed out after 3s").await;
    assert!(failed.text.contains("failed"), "{}", failed.text);
    let pid = bot.read("hang.pid");
    wait_until("the background sleep of the timed-out step is gone", || async { !pid_alive(&pid) }).await;

    // Once it ended, the target is free again (the refused request made no run).
    bot.say(BOB, "Bob", "/deploy pay 2.0.1").await;
    bot.card(2, "Run").await;
    bot.stop().await;
}

#[tokio::test]
async fn a_flood_of_output_is_capped_and_secrets_never_show() {
    let mut bot = Bot::start().await;
    bot.say(ALICE, "Alice", "/deploy pay 4.0.0-flood").await;
    let preview = bot.card(1, "Run").await;
    bot.press(&preview, "Run", ALICE, "Alice").await;
    let failed = bot.card(1, "timed out").await;
    assert!(failed.text.contains("flood line"), "{}", failed.text);

    bot.say(ALICE, "Alice", "/deploy pay 4.0.1").await;
    let preview = bot.card(2, "Run").await;
    bot.press(&preview, "Run", ALICE, "Alice").await;
    let done = bot.card(2, "succeeded").await;
    assert!(done.text.contains("using token ***"), "{}", done.text);
    assert!(done.text.contains("Authorization: Bearer ***"), "{}", done.text);

    // The step's environment: the allow-list and the secret, nothing of the bot's own.
    let env = bot.read("env.log");
    assert!(env.contains(&format!("DEPLOY_TOKEN={SECRET}")), "{env}");
    assert!(!env.contains("TELEGRAM_BOT_TOKEN"), "the bot's environment leaked into the step: {env}");

    bot.say(ALICE, "Alice", "/audit").await;
    bot.text("Audit log").await;
    let logs = bot.stop().await;
    let db = std::fs::read(bot.data("opsclaw.db")).unwrap_or_default();
    let wal = std::fs::read(bot.data("opsclaw.db-wal")).unwrap_or_default();
    let stored = String::from_utf8_lossy(&[db, wal].concat()).into_owned();
    for secret in [SECRET, BEARER] {
        assert!(!bot.everything().contains(secret), "{secret} shown in the chat");
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!stored.contains(secret), "{secret} stored in the database");
    }
    // Capped: the flood's stored output is bounded, with the marker.
    assert!(stored.contains("omitted: output over 4.0 KiB"), "no cap marker stored");
}

#[tokio::test]
async fn a_run_cut_off_by_a_crash_is_reported_interrupted_and_not_run_again() {
    let mut bot = Bot::start().await;
    bot.say(ALICE, "Alice", "/deploy pay 3.0.0-slow").await;
    let preview = bot.card(1, "Run").await;
    bot.press(&preview, "Run", ALICE, "Alice").await;
    wait_until("the slow deploy started", || async { bot.data("slow.pid").exists() }).await;
    bot.card(1, "slow deploy started").await;

    bot.proc.take().expect("the bot runs").kill().await;
    // The deploy's own processes outlive a SIGKILLed bot; the test cleans them up.
    let orphan = bot.read("slow.pid");
    let _ = std::process::Command::new("kill").arg(orphan.trim()).status();

    bot.proc = Some(spawn(bot.dir.path(), &bot.fake).await);
    bot.text("Run #1 on pay/staging was interrupted during step “deploy”").await;
    bot.card(1, "interrupted").await;
    bot.say(ALICE, "Alice", "/audit").await;
    let audit = bot.text("Audit log").await;
    assert!(audit.text.contains("opsclaw interrupt /deploy #1 pay/staging → interrupted"), "{}", audit.text);
    assert_eq!(bot.read("calls.log").matches("deploy 3.0.0-slow").count(), 1, "the run was started again");
    // The interrupted run no longer holds its target.
    bot.say(ALICE, "Alice", "/deploy pay 3.0.1").await;
    bot.card(2, "Run").await;
    bot.stop().await;
}

#[tokio::test]
async fn a_graceful_shutdown_stops_a_running_step_and_says_so_before_exiting() {
    let mut bot = Bot::start().await;
    bot.say(ALICE, "Alice", "/deploy pay 5.0.0-slow").await;
    let preview = bot.card(1, "Run").await;
    bot.press(&preview, "Run", ALICE, "Alice").await;
    wait_until("the slow deploy started", || async { bot.data("slow.pid").exists() }).await;
    let pid = bot.read("slow.pid");
    bot.stop().await;
    // The step's process group went with it, and the chat was told before the bot exited.
    assert!(!pid_alive(&pid), "the step's sleep {pid} outlived the shutdown");
    let all = bot.everything();
    assert!(all.contains("Run #1 on pay/staging was interrupted during step “deploy”"), "{all}");
    assert!(all.contains("stopped: opsclaw is shutting down"), "{all}");

    bot.proc = Some(spawn(bot.dir.path(), &bot.fake).await);
    bot.say(ALICE, "Alice", "/audit").await;
    let audit = bot.text("Audit log").await;
    assert!(audit.text.contains("opsclaw finish /deploy #1 pay/staging → interrupted"), "{}", audit.text);
    assert!(!audit.text.contains("opsclaw interrupt"), "already recorded at shutdown: {}", audit.text);
    assert_eq!(bot.read("calls.log").matches("deploy 5.0.0-slow").count(), 1);
    bot.stop().await;
}
