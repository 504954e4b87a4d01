//! Telegram end to end: the real binary against the fake Bot API, in
//! polling and webhook mode.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake_telegram::{BOT_USERNAME, FakeTelegram, Sent, TOKEN};
use super::harness::{Proc, wait_until, write_config};

const ALICE: i64 = 4242;
const GROUP: i64 = -1001234567890;

fn config(fake: &FakeTelegram, extra: &str) -> String {
    format!(
        "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info,opsclaw=debug\"\n\
         [telegram]\napi_url = \"{}\"\ntoken_env = \"TELEGRAM_BOT_TOKEN\"\npoll_timeout = \"2s\"\n{extra}\n\
         [access]\nallowed_chats = [\"telegram:*\"]\n\
         [[principals]]\nname = \"alice\"\nroles = [\"admin\"]\nids = [\"telegram:{ALICE}\"]\n",
        fake.url()
    )
}

fn spawn(dir: &Path, config: &str) -> Proc {
    let path = write_config(dir, config);
    Proc::spawn_with_env(&["run", "--config", path.to_str().unwrap()], dir, &[("TELEGRAM_BOT_TOKEN", TOKEN)])
}

fn alice() -> Value {
    FakeTelegram::user(ALICE, "Alice", Some("alice"))
}

fn group() -> Value {
    FakeTelegram::group_chat(GROUP, "ops", true, false)
}

fn dm() -> Value {
    FakeTelegram::private_chat(ALICE, "Alice")
}

async fn wait_sent(fake: &FakeTelegram, chat: i64, n: usize) -> Vec<Sent> {
    wait_until(&format!("{n} messages in chat {chat}"), || async { fake.sent(chat).len() >= n }).await;
    fake.sent(chat)
}

/// A commands directory whose /ping echoes up to 20,000 characters: a way to
/// get a long reply out of the bot.
fn long_echo_commands(dir: &Path) -> std::path::PathBuf {
    let commands = dir.join("commands");
    std::fs::create_dir(&commands).unwrap();
    std::fs::write(
        commands.join("ping.toml"),
        "name = \"ping\"\nhandler = \"ping\"\nsummary = { en = \"echo\", zh-CN = \"回显\" }\n\
         [[args]]\nname = \"text\"\nkind = \"text\"\nmax_len = 20000\n",
    )
    .unwrap();
    commands
}

async fn ready(bot: &mut Proc) -> String {
    let addr = bot.http_addr().await;
    let url = format!("http://{addr}/readyz");
    wait_until("the bot is ready", || async { reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) }).await;
    addr
}

#[tokio::test]
async fn ping_in_a_dm_and_in_a_group_and_commands_for_other_bots() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bot = spawn(dir.path(), &config(&fake, ""));
    ready(&mut bot).await;

    // The command menu comes from the command files, in both languages.
    wait_until("setMyCommands", || async { fake.n_calls_to("setMyCommands") >= 2 }).await;
    let menus = fake.calls_to("setMyCommands");
    let names: Vec<&str> =
        menus[0].params["commands"].as_array().unwrap().iter().filter_map(|c| c["command"].as_str()).collect();
    assert!(names.contains(&"ping") && names.contains(&"status"), "{names:?}");
    assert!(menus.iter().any(|c| c.params["language_code"] == "zh"));

    fake.push("message", FakeTelegram::text_message(1, dm(), alice(), "/ping", None));
    let replies = wait_sent(&fake, ALICE, 1).await;
    assert_eq!(replies[0].text, "pong");
    assert_eq!(replies[0].reply_to, Some(1), "the reply quotes the message");

    // In a group: addressed with @ourbot, or to another bot, or plain chatter.
    fake.push("message", FakeTelegram::text_message(2, group(), alice(), "/ping@other_bot", None));
    fake.push("message", FakeTelegram::text_message(3, group(), alice(), "just talking", None));
    fake.push("message", FakeTelegram::text_message(4, group(), alice(), &format!("/ping@{BOT_USERNAME} hi"), None));
    let replies = wait_sent(&fake, GROUP, 1).await;
    assert_eq!(replies[0].text, "pong: hi");
    assert_eq!(replies[0].reply_to, Some(4));

    // A forum topic: the reply stays in the thread.
    let forum = FakeTelegram::group_chat(-1009999, "forum", true, true);
    fake.push("message", FakeTelegram::text_message(5, forum, alice(), &format!("/ping@{BOT_USERNAME}"), Some(77)));
    let replies = wait_sent(&fake, -1009999, 1).await;
    assert_eq!(replies[0].thread_id, Some(77));

    // Bad input: an unknown update kind and a malformed message change nothing.
    fake.push("poll_answer", json!({"poll_id": "1", "option_ids": [0], "user": alice()}));
    fake.push_raw(json!({"message": {"message_id": "not a number"}}));
    fake.push("message", FakeTelegram::text_message(6, dm(), alice(), "/ping after", None));
    let replies = wait_sent(&fake, ALICE, 2).await;
    assert_eq!(replies[1].text, "pong: after");
    assert_eq!(fake.sent(GROUP).len(), 1, "nothing answered the other bot's command or the chatter");

    // Only the update kinds we handle are asked for.
    let polls = fake.calls_to("getUpdates");
    let allowed = &polls[0].params["allowed_updates"];
    assert_eq!(allowed, &json!(["message", "callback_query"]), "{allowed}");
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn a_restart_or_a_crash_neither_repeats_nor_loses_an_update() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&fake, "");
    let mut bot = spawn(dir.path(), &config);
    ready(&mut bot).await;
    fake.push("message", FakeTelegram::text_message(1, dm(), alice(), "/ping one", None));
    wait_sent(&fake, ALICE, 1).await;
    assert!(bot.terminate().await.success());

    // Sent while the bot is down, then a restart.
    fake.push("message", FakeTelegram::text_message(2, dm(), alice(), "/ping two", None));
    let mut bot = spawn(dir.path(), &config);
    ready(&mut bot).await;
    let replies = wait_sent(&fake, ALICE, 2).await;
    assert_eq!(replies[1].text, "pong: two");

    // A crash right after a reply: the restarted bot resumes from the saved offset.
    // Killed once the send is recorded: a crash between Telegram's answer and
    // that record sends the reply again (Telegram has no idempotency key; README).
    fake.push("message", FakeTelegram::text_message(3, dm(), alice(), "/ping three", None));
    wait_sent(&fake, ALICE, 3).await;
    let db = format!("sqlite://{}", dir.path().join("data/opsclaw.db").display());
    let store = opsclaw::store::Store::connect(&db).await.unwrap();
    wait_until("the reply is recorded as sent", || async { store.outbox_pending_count().await.unwrap() == 0 }).await;
    drop(store);
    bot.kill().await;
    fake.push("message", FakeTelegram::text_message(4, dm(), alice(), "/ping four", None));
    let mut bot = spawn(dir.path(), &config);
    ready(&mut bot).await;
    let replies = wait_sent(&fake, ALICE, 4).await;
    assert_eq!(replies[3].text, "pong: four");
    // A fifth message is the barrier: once it is answered, nothing older can still come.
    fake.push("message", FakeTelegram::text_message(5, dm(), alice(), "/ping five", None));
    let replies = wait_sent(&fake, ALICE, 5).await;
    let texts: Vec<&str> = replies.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["pong: one", "pong: two", "pong: three", "pong: four", "pong: five"]);
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn a_second_poller_gets_409_and_the_bot_keeps_working() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bot = spawn(dir.path(), &config(&fake, ""));
    let addr = ready(&mut bot).await;

    // Another process starts polling with the same token while ours is
    // pending (the fake records a waiting poll with status 0): ours is refused.
    wait_until("a poll is pending", || async { fake.calls_to("getUpdates").iter().any(|c| c.status == 0) }).await;
    let intruder = reqwest::Client::new()
        .post(format!("{}/bot{TOKEN}/getUpdates", fake.url()))
        .json(&json!({"timeout": 1}))
        .send()
        .await
        .unwrap();
    assert!(intruder.status().is_success() || intruder.status() == 409);
    bot.expect_stderr("getUpdates conflict").await;
    let readyz = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(readyz.text().await.unwrap().contains("telegram is conflict"));

    // The intruder is gone; the bot backs off, polls again and answers.
    wait_until("the bot is ready again", || async {
        reqwest::get(format!("http://{addr}/readyz")).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    fake.push("message", FakeTelegram::text_message(1, dm(), alice(), "/ping", None));
    wait_sent(&fake, ALICE, 1).await;
    // Backoff, not a hot loop: a handful of polls, not hundreds.
    assert!(fake.n_calls_to("getUpdates") < 50, "{} polls", fake.n_calls_to("getUpdates"));
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn flood_control_on_one_chat_delays_only_that_chat() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bot = spawn(dir.path(), &config(&fake, ""));
    ready(&mut bot).await;
    fake.rate_limit_chat(GROUP, 1, 2);
    let started = Instant::now();
    fake.push("message", FakeTelegram::text_message(1, group(), alice(), &format!("/ping@{BOT_USERNAME} a"), None));
    fake.push("message", FakeTelegram::text_message(2, dm(), alice(), "/ping b", None));
    let other = wait_sent(&fake, ALICE, 1).await;
    let limited = wait_sent(&fake, GROUP, 1).await;
    assert!(other[0].at < limited[0].at, "the other chat was not held up");
    assert!(limited[0].at.duration_since(started) >= Duration::from_secs(2), "retry_after was honored");
    assert_eq!(fake.sent(GROUP).len(), 1, "delivered once");
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn button_press_toasts_and_edits_the_card() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bot = spawn(dir.path(), &config(&fake, ""));
    ready(&mut bot).await;
    fake.push("message", FakeTelegram::text_message(1, group(), alice(), &format!("/status@{BOT_USERNAME}"), None));
    let card = wait_sent(&fake, GROUP, 1).await.remove(0);
    assert_eq!(card.parse_mode.as_deref(), Some("HTML"));
    assert!(card.text.contains("opsclaw status"), "{}", card.text);
    let keyboard = card.reply_markup.clone().expect("the status card has a keyboard");
    let token = keyboard["inline_keyboard"][0][0]["callback_data"].as_str().unwrap().to_owned();
    assert!(token.len() <= 64);

    let message = fake.sent_message_json(GROUP, card.message_id);
    let pressed = Instant::now();
    fake.push("callback_query", FakeTelegram::callback_query("cbq-1", alice(), message.clone(), &token));
    wait_until("the press is answered", || async { fake.n_calls_to("answerCallbackQuery") >= 1 }).await;
    let answer = fake.calls_to("answerCallbackQuery").remove(0);
    assert_eq!(answer.params["callback_query_id"], "cbq-1");
    assert!(!answer.params["text"].as_str().unwrap_or_default().is_empty(), "a toast");
    assert!(answer.at.duration_since(pressed) < Duration::from_secs(3));
    wait_until("the card is edited in place", || async { fake.sent(GROUP)[0].edits >= 1 }).await;
    let edited = fake.sent(GROUP).remove(0);
    assert!(edited.reply_markup.is_some(), "the edited card keeps its Refresh button");
    assert_eq!(fake.sent(GROUP).len(), 1, "edited, not posted again");

    // A token we never issued gets a toast and a clear answer in the chat.
    fake.push("callback_query", FakeTelegram::callback_query("cbq-2", alice(), message, "forged-token"));
    wait_until("the forged press is answered", || async { fake.n_calls_to("answerCallbackQuery") >= 2 }).await;
    let replies = wait_sent(&fake, GROUP, 2).await;
    assert!(replies[1].text.to_lowercase().contains("button"), "{}", replies[1].text);
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn hostile_text_is_shown_escaped_and_long_replies_are_split_in_order() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let commands = long_echo_commands(dir.path());
    std::fs::write(
        commands.join("whoami.toml"),
        "name = \"whoami\"\nhandler = \"whoami\"\nsummary = { en = \"me\", zh-CN = \"我\" }\n",
    )
    .unwrap();
    let mut bot = spawn(dir.path(), &format!("commands_dir = \"commands\"\n{}", config(&fake, "")));
    ready(&mut bot).await;

    // Markup in a name shown on a card, and in echoed text.
    let mallory = FakeTelegram::user(ALICE, "<i>Mallory</i> & <a href=\"x\">co</a>", None);
    fake.push("message", FakeTelegram::text_message(1, dm(), mallory.clone(), "/whoami", None));
    let card = wait_sent(&fake, ALICE, 1).await.remove(0);
    assert!(card.text.contains("<i>Mallory</i> & <a href=\"x\">co</a>"), "shown literally: {}", card.text);
    fake.push("message", FakeTelegram::text_message(2, dm(), mallory, "/ping <b>hi</b> &amp;", None));
    let echo = wait_sent(&fake, ALICE, 2).await.remove(1);
    assert_eq!(echo.text, "pong: <b>hi</b> &amp;");

    let body: String = (0..420).map(|i| format!("line {i:03} of a long reply\n")).collect();
    assert!(body.chars().count() > 10_000);
    fake.push("message", FakeTelegram::text_message(3, dm(), alice(), &format!("/ping {body}"), None));
    wait_until("the long reply", || async {
        fake.sent(ALICE).iter().skip(2).map(|s| s.text.chars().count()).sum::<usize>() >= 10_000
    })
    .await;
    let parts: Vec<Sent> = fake.sent(ALICE).into_iter().skip(2).collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    assert!(parts.iter().all(|p| p.text.encode_utf16().count() <= 4096));
    let joined: String = parts.iter().map(|p| p.text.as_str()).collect();
    assert!(joined.contains("line 000") && joined.contains("line 419"));
    let positions: Vec<usize> = (0..420).map(|i| joined.find(&format!("line {i:03} ")).expect("every line")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn webhook_mode_checks_the_secret_and_polling_deletes_the_webhook() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret_token-1";
    // The public URL is the bot's own address; it is known once the bot listens, so use a fixed port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let webhook = config(
        &fake,
        &format!(
            "mode = \"webhook\"\nwebhook_url = \"http://127.0.0.1:{port}/telegram/webhook\"\nwebhook_secret_env = \"TG_SECRET\"\n"
        ),
    )
    .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    let path = write_config(dir.path(), &webhook);
    let mut bot = Proc::spawn_with_env(
        &["run", "--config", path.to_str().unwrap()],
        dir.path(),
        &[("TELEGRAM_BOT_TOKEN", TOKEN), ("TG_SECRET", secret)],
    );
    ready(&mut bot).await;
    assert_eq!(fake.webhook(), Some((format!("http://127.0.0.1:{port}/telegram/webhook"), Some(secret.to_owned()))));

    let ping = FakeTelegram::text_message(1, dm(), alice(), "/ping hook", None);
    assert_eq!(fake.deliver_webhook("message", ping.clone(), Some("wrong")).await, 401);
    assert_eq!(fake.deliver_webhook("message", ping.clone(), None).await, 401);
    assert_eq!(fake.deliver_webhook("message", ping.clone(), Some(secret)).await, 200);
    // Telegram retries a delivery it thinks failed: still one reply.
    assert_eq!(fake.deliver_webhook("message", ping, Some(secret)).await, 200);
    let replies = wait_sent(&fake, ALICE, 1).await;
    assert_eq!(replies[0].text, "pong: hook");
    assert!(bot.terminate().await.success());

    // Back to polling: the webhook is deleted and updates flow through getUpdates.
    let mut bot = spawn(dir.path(), &config(&fake, ""));
    ready(&mut bot).await;
    assert!(fake.webhook().is_none());
    assert!(fake.n_calls_to("deleteWebhook") >= 1);
    fake.push("message", FakeTelegram::text_message(2, dm(), alice(), "/ping polled", None));
    let replies = wait_sent(&fake, ALICE, 2).await;
    assert_eq!(replies[1].text, "pong: polled");
    assert_eq!(replies.len(), 2, "the webhook's update was not answered twice");
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn a_burst_in_one_group_stays_under_telegrams_limits_and_in_order() {
    let fake = FakeTelegram::start().await;
    fake.set_flood_limits(true);
    let dir = tempfile::tempdir().unwrap();
    let mut bot = spawn(dir.path(), &config(&fake, ""));
    ready(&mut bot).await;
    // Six commands at once: three go at once, then one a second per chat,
    // and the group's budget (a burst of 5) holds the sixth back.
    for i in 1..=6 {
        fake.push(
            "message",
            FakeTelegram::text_message(i, group(), alice(), &format!("/ping@{BOT_USERNAME} {i}"), None),
        );
    }
    let replies = wait_sent(&fake, GROUP, 6).await;
    let texts: Vec<&str> = replies.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["pong: 1", "pong: 2", "pong: 3", "pong: 4", "pong: 5", "pong: 6"]);
    assert_eq!(fake.flood_violations(), 0, "no 429 was provoked");
    assert!(replies[5].at.duration_since(replies[0].at) >= Duration::from_secs(3));
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn long_outputs_go_as_a_document() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    long_echo_commands(dir.path());
    let config = format!("commands_dir = \"commands\"\n{}", config(&fake, "document_over_chars = 5000"));
    let mut bot = spawn(dir.path(), &config);
    ready(&mut bot).await;
    let body: String = (0..300).map(|i| format!("row {i:03} of the output\n")).collect();
    fake.push("message", FakeTelegram::text_message(1, dm(), alice(), &format!("/ping {body}"), None));
    let sent = wait_sent(&fake, ALICE, 1).await.remove(0);
    let (name, bytes) = sent.document.expect("sent as a document");
    assert_eq!(name, "reply.txt");
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("row 000") && text.contains("row 299"));
    assert_eq!(sent.reply_to, Some(1));
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn a_split_reply_cut_short_by_flood_control_resumes_without_repeating_parts() {
    let fake = FakeTelegram::start().await;
    fake.set_flood_limits(true);
    let dir = tempfile::tempdir().unwrap();
    long_echo_commands(dir.path());
    let config = format!("commands_dir = \"commands\"\n{}", config(&fake, "document_over_chars = 20000"));
    let mut bot = spawn(dir.path(), &config);
    ready(&mut bot).await;
    // Four parts: Telegram takes three at once from one chat, then says 429.
    let body: String = (0..520).map(|i| format!("line {i:03} of a long reply\n")).collect();
    fake.push("message", FakeTelegram::text_message(1, dm(), alice(), &format!("/ping {body}"), None));
    wait_until("the fourth part", || async { fake.sent(ALICE).len() >= 4 }).await;
    assert!(fake.flood_violations() >= 1, "the fake refused a part");
    // A later reply is the barrier: nothing of the first can still come after it.
    fake.push("message", FakeTelegram::text_message(2, dm(), alice(), "/ping done", None));
    let sent = wait_sent(&fake, ALICE, 5).await;
    assert_eq!(sent.len(), 5, "four parts and one reply, nothing repeated");
    assert_eq!(sent[4].text, "pong: done");
    let joined: String = sent[..4].iter().map(|p| p.text.as_str()).collect();
    for i in 0..520 {
        assert_eq!(joined.matches(&format!("line {i:03} ")).count(), 1, "line {i} once");
    }
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn kb_add_as_a_reply_saves_the_replied_to_message_but_not_a_topic() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bot = spawn(dir.path(), &config(&fake, ""));
    ready(&mut bot).await;

    // Someone explains the fix; replying to it with /kb add saves it.
    let fix = "Promote the replica with REPLICAOF NO ONE.\nThen repoint the clients at the new primary.";
    fake.push("message", FakeTelegram::text_message(1, dm(), alice(), fix, None));
    let n = wait_sent(&fake, ALICE, 1).await.len();
    let add = FakeTelegram::text_message(2, dm(), alice(), "/kb add Redis failover", None);
    fake.push("message", fake.replying_to(add, 1));
    let replies = wait_sent(&fake, ALICE, n + 1).await;
    assert!(replies[n].text.contains("Saved “Redis failover” as notes/redis-failover.md"), "{}", replies[n].text);
    let saved = std::fs::read_to_string(dir.path().join("data/kb-notes/redis-failover.md")).unwrap();
    assert!(saved.starts_with("---\ntitle: Redis failover\nauthor: alice\n"), "{saved}");
    assert!(saved.ends_with(&format!("# Redis failover\n\n{fix}\n")), "{saved}");
    fake.push("message", FakeTelegram::text_message(3, dm(), alice(), "/kb repoint the clients", None));
    let replies = wait_sent(&fake, ALICE, n + 2).await;
    assert!(replies[n + 1].text.contains("Redis failover"), "found at once: {}", replies[n + 1].text);

    // In a forum topic every message "replies" to the topic's creation message: not a quote.
    let forum = FakeTelegram::group_chat(-1009999, "forum", true, true);
    let in_topic = format!("/kb@{BOT_USERNAME} add Topic note");
    fake.push("message", FakeTelegram::text_message(4, forum.clone(), alice(), &in_topic, Some(77)));
    let replies = wait_sent(&fake, -1009999, 1).await;
    assert!(replies[0].text.contains("as a reply to the message"), "the usage: {}", replies[0].text);
    assert_eq!(replies[0].thread_id, Some(77));
    // A reply to a real message inside the topic is one.
    fake.push("message", FakeTelegram::text_message(5, forum.clone(), alice(), "drain the node first", Some(77)));
    let add = FakeTelegram::text_message(6, forum, alice(), &format!("/kb@{BOT_USERNAME} add Node drain"), Some(77));
    fake.push("message", fake.replying_to(add, 5));
    let replies = wait_sent(&fake, -1009999, 2).await;
    assert!(replies[1].text.contains("Saved “Node drain”"), "{}", replies[1].text);
    assert!(!dir.path().join("data/kb-notes/topic-note.md").exists());
    let saved = std::fs::read_to_string(dir.path().join("data/kb-notes/node-drain.md")).unwrap();
    assert!(saved.ends_with("# Node drain\n\ndrain the node first\n"), "{saved}");
    assert!(bot.terminate().await.success());
}
