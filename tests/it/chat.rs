//! `opsclaw chat` end to end, through the real binary in a pipe.

use super::harness::{Proc, pg_drop_schema, pg_schema, pg_url, run_script, write_config};

fn assert_contains(out: &str, needles: &[&str]) {
    for needle in needles {
        assert!(out.contains(needle), "missing {needle:?} in output:\n{out}");
    }
}

const SCRIPT: &[&str] = &[
    "/help",
    "/ping",
    "/nosuch",
    "/stauts",
    ":user guest",
    "/status",
    ":user you",
    "/status",
    "1",
    ":user guest",
    "1",
    ":press AAAAAAAAAAAAAAAAAAAAAA",
    "/help a b",
    "/help \"unclosed",
    "/whoami",
    ":user you",
    "/ping still here",
];

/// What the script above must print, in order.
const EXPECTED: &[&str] = &[
    "┌ Commands [blue] (card #1)",
    "**/status**  Bot health: channels, queues, version _(needs role viewer)_",
    "opsclaw> pong",
    "Unknown command /nosuch. Send /help for the list of commands.",
    "Unknown command /stauts. Did you mean /status?",
    "You need the role “viewer” to run /status. Your roles: none.",
    "┌ opsclaw status [green] (card #2)",
    "└ [1] Refresh",
    "┌ opsclaw status [green] (card #2 updated)",
    "└ [2] Refresh",
    "You need the role “viewer” to press this button. Your roles: none.",
    "This button is not valid here (unknown or forged). Nothing was done.",
    "/help: unexpected extra argument “b”",
    "Usage: /help [command]",
    "/help: a quote is opened but never closed",
    "┌ Who you are [blue] (card #3)",
    "Principal: guest",
    "opsclaw> pong: still here",
];

fn assert_in_order(out: &str, expected: &[&str]) {
    let mut rest = out;
    for needle in expected {
        match rest.find(needle) {
            Some(at) => rest = &rest[at + needle.len()..],
            None => panic!("missing {needle:?} (in this order) in output:\n{out}"),
        }
    }
}

#[tokio::test]
async fn chat_answers_commands_denials_and_buttons() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(&["chat"], dir.path(), SCRIPT).await;
    assert_in_order(&out, EXPECTED);
    assert!(dir.path().join("opsclaw-data/opsclaw.db").exists(), "chat keeps its SQLite file in ./opsclaw-data");
}

#[tokio::test]
async fn chat_runs_on_postgres_too() {
    let Some(url) = pg_url("chat_runs_on_postgres_too") else { return };
    let (schema_url, schema) = pg_schema(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[store]\nurl = \"{schema_url}\"\n[console]\nuser = \"you\"\n[access]\nallowed_chats = [\"console:*\"]\n\
         [[principals]]\nname = \"you\"\nroles = [\"admin\"]\nids = [\"console:you\"]\n\
         [[principals]]\nname = \"guest\"\nids = [\"console:guest\"]\n"
    );
    let path = write_config(dir.path(), &config);
    let out = run_script(&["chat", "--config", path.to_str().unwrap()], dir.path(), SCRIPT).await;
    assert_in_order(&out, EXPECTED);
    assert!(out.contains("Storage: postgres"), "{out}");
    pg_drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn over_long_and_malformed_input_is_answered_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("/ping {}", "x".repeat(17 * 1024));
    let long_arg = format!("/help {}", "y".repeat(300));
    let out = run_script(&["chat"], dir.path(), &[&long, "/ping", &long_arg, "just chatting", "/ping after"]).await;
    assert_in_order(
        &out,
        &[
            "That message is 18 KiB; messages over 16 KiB are not read. Nothing was done.",
            "opsclaw> pong",
            "/help: <command> is too long (at most 256 characters)",
            "Nothing in the runbooks answers “just chatting”, so I won't guess.",
            "pong: after",
        ],
    );
}

#[tokio::test]
async fn chat_stops_on_sigterm_while_its_input_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut bot = Proc::spawn(&["chat"], dir.path());
    bot.send("/ping").await;
    bot.expect("pong").await;
    // Nobody closes stdin: the signal alone ends the session.
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn chat_speaks_chinese() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(&["chat", "--locale", "zh-CN"], dir.path(), &["/nosuch", "／ping 你好", "/help ping"]).await;
    assert_contains(&out, &["未知命令 /nosuch。", "pong：你好", "检查机器人是否在线"]);
}

#[tokio::test]
async fn group_chats_answer_only_when_addressed() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(
        &["chat"],
        dir.path(),
        &[
            ":group",
            "hello everyone",
            "/ping@otherbot",
            "@opsclaw /ping one",
            "/ping two",
            "@opsclaw pod keeps restarting",
        ],
    )
    .await;
    // A mention with plain text is a question for the knowledge base.
    assert_in_order(&out, &["pong: one", "pong: two", "💡 pod keeps restarting"]);
    assert_eq!(out.matches("opsclaw> ").count(), 3, "only addressed messages get answers:\n{out}");
}

#[tokio::test]
async fn expired_buttons_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[console]\nuser = \"you\"\n[access]\nallowed_chats = [\"console:*\"]\n\
                  [pipeline]\ntoken_ttl = \"1s\"\n[[principals]]\nname = \"you\"\nroles = [\"admin\"]\nids = [\"console:you\"]\n";
    let path = write_config(dir.path(), config);
    let mut bot = Proc::spawn(&["chat", "--config", path.to_str().unwrap()], dir.path());
    bot.send("/status").await;
    bot.expect("└ [1] Refresh").await;
    // Button [1] keeps working until its token expires one second after it was minted.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "the button never expired");
        bot.send("1").await;
        let line = bot.expect("opsclaw> ").await;
        if line.contains("This button expired at") {
            break;
        }
        assert!(line.contains("(card #1 updated)"), "unexpected reply: {line}");
    }
    let (status, _) = bot.finish().await;
    assert!(status.success());
}

/// The README's alert walk-through: `opsclaw chat` prints where alerts go, a
/// posted alert becomes a card, the on-call is mentioned, and the commands work.
#[tokio::test]
async fn alerts_in_the_console_chat_as_the_readme_shows() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Proc::spawn(&["chat"], dir.path());
    let line = chat.expect_stderr("alerts: POST http://").await;
    let url = line.trim_start_matches("alerts: POST ").replace("/alertmanager", "/generic");
    let body = r#"{"alerts":[{"labels":{"alertname":"DiskFull","severity":"critical","host":"db1"},"annotations":{"summary":"disk 95% full"}}]}"#;
    let response = reqwest::Client::new().post(&url).body(body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    chat.expect("[CRITICAL] DiskFull [red] (card #1)").await;
    chat.expect("🔔 #1 DiskFull is firing (critical). On call: @you").await;
    for line in
        [":user guest", "/ack 1", ":user you", "/ack 1", "/ack 1", "/silence #1 30m", "/silence 1 45d", "/oncall"]
    {
        chat.send(line).await;
    }
    chat.expect("You need the role “responder” to run /ack. Your roles: none.").await;
    chat.expect("Acknowledged #1 DiskFull.").await;
    chat.expect("#1 was already acknowledged by you at").await;
    chat.expect("Silenced #1 DiskFull until").await;
    chat.expect("A silence may last at most 30d").await;
    chat.expect("- now: you, until").await;
    chat.send("/alert 1").await;
    chat.expect("History of #1 DiskFull").await;
    let (status, out) = chat.finish().await;
    assert!(status.success());
    let out = out.join("\n");
    assert!(out.contains("✔ Acknowledged by you at") && out.contains("🔕 Silenced by you until"), "{out}");
    assert!(
        out.contains("**firing** DiskFull") && out.contains("**notified** · you") && out.contains("**silenced** · you"),
        "{out}"
    );
}

/// The README's deploy walk-through: the bundled /deploy runs the demo app
/// end to end, a broken version rolls back by itself, staging needs another
/// person's approval, and /history and /audit show what happened.
#[tokio::test]
async fn deploys_in_the_console_chat_as_the_readme_shows() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(
        &["chat"],
        dir.path(),
        &[
            "/deploy demo 1.2.0",
            "1",
            "/deploy demo 1.3.0-broken",
            "3",
            "/deploy demo 1.4.0 staging",
            "6",
            ":user sam",
            "6",
            "/deploy demo 1.0;rm -rf /",
            ":user you",
            "/history demo",
            "/audit 5",
        ],
    )
    .await;
    assert_in_order(
        &out,
        &[
            "🚀 /deploy demo/local — waiting [yellow] (card #1)",
            "[1] Run  [2] Cancel",
            "🚀 /deploy demo/local — succeeded [green] (card #1 updated)",
            "demo 1.2.0 is live in local",
            "Version 1.3.0-broken (now 1.2.0)",
            "health check of demo 1.3.0-broken in local: HTTP 500 from /healthz",
            "↩️ Run #2 failed its verify step: rolling back to 1.2.0 as run #3.",
            "↩️ Rollback demo/local — succeeded [green]",
            "🔐 Needs 1 approval(s) from role “approver” (not the requester)",
            "You requested run #4: someone else with the role “approver” must approve it.",
            "(you are now sam)",
            "🚀 /deploy demo/staging — succeeded [green]",
            "approved by sam",
            "/deploy: <version> “1.0;rm” is not allowed",
            "Deployed now: **1.2.0 (local), 1.4.0 (staging)**",
            "Audit log: the last 5 entries",
            "**sam** refuse /deploy → bad arguments",
        ],
    );
}
