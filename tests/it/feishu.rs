//! Feishu in HTTP callback mode, end to end: the real binary between a fake
//! Feishu that posts encrypted, signed callbacks and records API calls.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::fake_feishu::{
    APP_SECRET, CallKind, Callbacks, FakeFeishu, Signing, card_click, message_event, replying_to,
};
use super::harness::{Proc, wait_until, write_config};

const ENCRYPT_KEY: &str = "test key";

struct Setup {
    fake: FakeFeishu,
    bot: Proc,
    /// The bot's HTTP address.
    addr: String,
    feishu: Callbacks,
    _dir: tempfile::TempDir,
}

/// Which secrets the app has configured.
#[derive(Clone, Copy, PartialEq)]
enum Secrets {
    EncryptKeyAndToken,
    TokenOnly,
}

async fn setup() -> Setup {
    setup_with(Secrets::EncryptKeyAndToken, "").await
}

async fn setup_with(secrets: Secrets, extra: &str) -> Setup {
    let fake = FakeFeishu::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
         [feishu]\nmode = \"http\"\ndomain = \"{}\"\napp_id = \"{}\"\napp_secret_env = \"FEISHU_APP_SECRET\"\n\
         {}verification_token_env = \"FEISHU_VERIFICATION_TOKEN\"\nmax_body_bytes = 65536\n\
         [access]\nallowed_chats = [\"feishu:*\"]\n[[principals]]\nname = \"alice\"\nroles = [\"admin\"]\nids = [\"feishu:ou_alice\"]\n{}",
        fake.url(),
        super::fake_feishu::APP_ID,
        if secrets == Secrets::TokenOnly { "" } else { "encrypt_key_env = \"FEISHU_ENCRYPT_KEY\"\n" },
        extra,
    );
    let path = write_config(dir.path(), &config);
    let env =
        [("FEISHU_APP_SECRET", APP_SECRET), ("FEISHU_ENCRYPT_KEY", ENCRYPT_KEY), ("FEISHU_VERIFICATION_TOKEN", "vtok")];
    let mut bot = Proc::spawn_with_env(&["run", "--config", path.to_str().unwrap()], dir.path(), &env);
    let addr = bot.http_addr().await;
    Setup { fake, bot, feishu: Callbacks::new(&addr, ENCRYPT_KEY), addr, _dir: dir }
}

impl Setup {
    fn replies_to(&self, parent: &str) -> Vec<super::fake_feishu::Call> {
        self.fake.replies_to(parent)
    }

    async fn wait_reply(&self, parent: &str) -> super::fake_feishu::Call {
        self.fake.wait_reply(parent).await
    }
}

#[tokio::test]
async fn challenge_ping_redelivery_and_threads() {
    let s = setup().await;
    let challenge = r#"{"challenge":"ajls384kdj","token":"vtok","type":"url_verification"}"#;
    let (status, body) = s.feishu.post(challenge, Signing::Unsigned).await;
    assert_eq!((status, body.as_str()), (200, r#"{"challenge":"ajls384kdj"}"#));

    let ping = message_event("ev-1", "oc_ops", "group", "om_in1", "/ping", true);
    assert_eq!(s.feishu.post(&ping, Signing::Valid).await.0, 200);
    let reply = s.wait_reply("om_in1").await;
    assert_eq!(reply.text(), "pong");
    assert_eq!(reply.msg_type, "post");
    assert_eq!(reply.uuid.as_deref(), Some("feishu:ev-1#0"));

    // Feishu re-pushes the same event: accepted, and still one reply.
    assert_eq!(s.feishu.post(&ping, Signing::Valid).await.0, 200);
    let after = message_event("ev-2", "oc_ops", "group", "om_in2", "/ping after", true);
    s.feishu.post(&after, Signing::Valid).await;
    assert_eq!(s.wait_reply("om_in2").await.text(), "pong: after");
    assert_eq!(s.replies_to("om_in1").len(), 1, "a redelivered event is handled once");

    // Group chatter without a mention or a slash is ignored; a p2p message is answered.
    s.feishu.post(&message_event("ev-3", "oc_ops", "group", "om_in3", "morning all", false), Signing::Valid).await;
    s.feishu.post(&message_event("ev-4", "oc_dm", "p2p", "om_in4", "/ping dm", false), Signing::Valid).await;
    assert_eq!(s.wait_reply("om_in4").await.text(), "pong: dm");
    assert!(s.replies_to("om_in3").is_empty());
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn bad_requests_are_refused_and_nothing_is_processed() {
    let s = setup().await;
    let event = |id: &str, msg: &str| message_event(id, "oc_ops", "group", msg, "/ping", true);
    let cases = [
        ("wrong signature", s.feishu.post(&event("bad-1", "om_b1"), Signing::Wrong).await, 401),
        ("no signature", s.feishu.post(&event("bad-2", "om_b2"), Signing::Unsigned).await, 401),
        ("stale timestamp", s.feishu.post(&event("bad-3", "om_b3"), Signing::At(1_600_000_000)).await, 401),
        ("not JSON", s.feishu.post("", Signing::Raw(b"{nope")).await, 400),
        ("garbage ciphertext", s.feishu.post("", Signing::Raw(br#"{"encrypt":"AAAA"}"#)).await, 400),
        ("oversized", s.feishu.post("", Signing::Raw(&vec![b' '; 70_000])).await, 413),
        (
            "wrong verification token",
            s.feishu.post(&event("bad-4", "om_b4").replace("\"vtok\"", "\"other\""), Signing::Valid).await,
            401,
        ),
    ];
    for (what, (status, body), expected) in cases {
        assert_eq!(status, expected, "{what}: {body}");
    }
    let unknown = event("ok-1", "om_x").replace("im.message.receive_v1", "im.chat.disbanded_v1");
    assert_eq!(s.feishu.post(&unknown, Signing::Valid).await.0, 200, "unknown event types are acknowledged");

    // The bot is still up and only the good event after all that is answered.
    s.feishu.post(&event("good-1", "om_good"), Signing::Valid).await;
    s.wait_reply("om_good").await;
    let answered: Vec<_> = s.fake.calls().into_iter().map(|c| c.kind).collect();
    assert_eq!(answered, [CallKind::Reply { parent: "om_good".into(), in_thread: false }]);
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn card_click_toasts_fast_and_patches_the_card() {
    let s = setup().await;
    s.feishu.post(&message_event("ev-s", "oc_ops", "group", "om_status", "/status", true), Signing::Valid).await;
    let card_message = s.wait_reply("om_status").await;
    assert_eq!(card_message.msg_type, "interactive");
    let card = card_message.card();
    assert_eq!(card["header"]["template"], "green");
    let token = find_button_token(&card).expect("the status card has a Refresh button");

    let started = Instant::now();
    let click = card_click("ev-click-1", "oc_ops", &card_message.message_id, "ou_alice", &token);
    let (status, body) = s.feishu.post(&click, Signing::Valid).await;
    assert!(started.elapsed() < Duration::from_secs(3), "the click is answered within Feishu's 3 s");
    assert_eq!(status, 200);
    let toast: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(toast["toast"]["type"], "info", "{body}");

    wait_until("the card is patched", || async { s.fake.calls().iter().any(|c| c.kind == CallKind::Patch) }).await;
    let patch = s.fake.calls().into_iter().find(|c| c.kind == CallKind::Patch).unwrap();
    assert_eq!(patch.message_id, card_message.message_id);
    assert!(patch.at >= started, "the card is updated after the click was answered");
    assert_eq!(patch.card()["header"]["title"]["content"], "opsclaw status");

    // A click by someone without the role is refused with a reason, in the chat.
    let stranger = card_click("ev-click-2", "oc_ops", &card_message.message_id, "ou_stranger", &token);
    assert_eq!(s.feishu.post(&stranger, Signing::Valid).await.0, 200);
    wait_until("the refusal is posted", || async {
        s.fake.calls().iter().any(|c| c.text().contains("You need the role “viewer” to press this button"))
    })
    .await;
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_and_delivered_once() {
    let s = setup().await;
    s.fake.rate_limit_next(2);
    s.feishu.post(&message_event("ev-rl", "oc_ops", "group", "om_rl", "/ping limited", true), Signing::Valid).await;
    assert_eq!(s.wait_reply("om_rl").await.text(), "pong: limited");
    s.fake.fail_next(1);
    s.feishu.post(&message_event("ev-5xx", "oc_ops", "group", "om_5xx", "/ping flaky", true), Signing::Valid).await;
    assert_eq!(s.wait_reply("om_5xx").await.text(), "pong: flaky");
    assert_eq!(s.fake.refused(), 3);
    assert_eq!(s.fake.n_calls(), 2, "each reply stored once");
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn token_only_apps_and_old_card_callbacks() {
    let s = setup_with(Secrets::TokenOnly, "").await;
    let ping = message_event("ev-t1", "oc_ops", "group", "om_t1", "/status", true);
    assert_eq!(s.feishu.post_plain(&ping).await.0, 200);
    let card_message = s.wait_reply("om_t1").await;
    let token = find_button_token(&card_message.card()).unwrap();
    let forged = message_event("ev-t2", "oc_ops", "group", "om_t2", "/ping", true).replace("\"vtok\"", "\"guess\"");
    assert_eq!(s.feishu.post_plain(&forged).await.0, 401);

    let old_click = serde_json::json!({
        "open_id": "ou_alice", "open_message_id": card_message.message_id, "open_chat_id": "oc_ops",
        "tenant_key": "t1", "token": "c-abc", "action": {"value": {"t": token}, "tag": "button"}
    })
    .to_string();
    assert_eq!(s.feishu.post_card_v1(&old_click, "wrong-token").await.0, 401);
    let (status, body) = s.feishu.post_card_v1(&old_click, "vtok").await;
    assert_eq!(status, 200, "{body}");
    wait_until("the card is patched", || async { s.fake.calls().iter().any(|c| c.kind == CallKind::Patch) }).await;
    assert!(s.replies_to("om_t2").is_empty());
    assert!(s.bot.terminate().await.success());
}

/// An alert routed to a Feishu chat: an interactive card and a post mentioning
/// the on-call with an `at` element; Ack from the card patches it.
#[tokio::test]
async fn an_alert_card_in_feishu_is_acked_from_the_card() {
    let alerts = "[alerts.sources.generic]\nauth = \"none\"\n[[alerts.routes]]\nchats = [\"feishu:oc_ops\"]\n\
                  [[alerts.oncall]]\nname = \"p\"\nrotation = \"daily\"\npeople = [\"alice\"]\nhandover = \"2026-01-01T09:00\"\n\
                  [alerts.policy.critical]\nschedule = \"p\"\nmention_oncall = true\n";
    let s = setup_with(Secrets::EncryptKeyAndToken, alerts).await;
    let addr = &s.addr;
    let body = r#"{"alerts":[{"labels":{"alertname":"DiskFull","severity":"critical"},"annotations":{"summary":"disk 95% full"}}]}"#;
    let response = reqwest::Client::new().post(format!("http://{addr}/hooks/generic")).body(body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let sent_to_ops = |msg_type: &str| {
        s.fake
            .calls()
            .into_iter()
            .find(|c| c.kind == CallKind::Send { chat: "oc_ops".into() } && c.msg_type == msg_type)
    };
    wait_until("the card and the mention", || async {
        sent_to_ops("interactive").is_some() && sent_to_ops("post").is_some()
    })
    .await;
    let card_message = sent_to_ops("interactive").unwrap();
    let card = card_message.card();
    assert_eq!(card["header"]["template"], "red", "{card}");
    let mention: Value = serde_json::from_str(&sent_to_ops("post").unwrap().content).unwrap();
    let lines = mention["zh_cn"]["content"].as_array().unwrap();
    assert_eq!(lines.last().unwrap()[0]["tag"], "at");
    assert_eq!(lines.last().unwrap()[0]["user_id"], "ou_alice");

    let ack = find_button_token(&card).expect("Ack is the card's first button");
    let click = card_click("ev-ack", "oc_ops", &card_message.message_id, "ou_alice", &ack);
    assert_eq!(s.feishu.post(&click, Signing::Valid).await.0, 200);
    wait_until("the card is patched with the ack", || async {
        s.fake.calls().iter().any(|c| {
            c.kind == CallKind::Patch
                && c.message_id == card_message.message_id
                && c.content.contains("Acknowledged by alice")
        })
    })
    .await;
}

#[tokio::test]
async fn an_alert_cards_logs_button_opens_its_services_logs_and_download_sends_a_file() {
    let logs = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now();
    let mut text = String::new();
    for i in 0..5u64 {
        let at = humantime::format_rfc3339_millis(now - Duration::from_secs(60 * (5 - i)));
        text.push_str(&format!("{at} ERROR payment {i} failed: password=hunter2-{i}\n"));
    }
    std::fs::write(logs.path().join("payments.log"), text).unwrap();
    let extra = format!(
        "[alerts.sources.generic]\nauth = \"none\"\n[[alerts.routes]]\nchats = [\"feishu:oc_ops\"]\n\
         [logs.services.payments]\nsource = \"files\"\npaths = [\"{}/*.log\"]\nlabels = {{ service = \"payments\" }}\n",
        logs.path().display()
    );
    let s = setup_with(Secrets::EncryptKeyAndToken, &extra).await;
    let body = r#"{"alerts":[{"labels":{"alertname":"HighErrorRate","service":"payments","severity":"warning"}}]}"#;
    let url = format!("http://{}/hooks/generic", s.addr);
    assert_eq!(reqwest::Client::new().post(url).body(body).send().await.unwrap().status(), 200);
    let card_with = |needle: &'static str| {
        let calls = s.fake.calls();
        calls.into_iter().find(|c| c.msg_type == "interactive" && c.content.contains(needle))
    };
    wait_until("the alert card", || async { card_with("HighErrorRate").is_some() }).await;
    let alert = card_with("HighErrorRate").unwrap();
    let logs_button = find_button(&alert.card(), "Logs").expect("a Logs button on the alert card");
    let click = card_click("ev-logs", "oc_ops", &alert.message_id, "ou_alice", &logs_button);
    assert_eq!(s.feishu.post(&click, Signing::Valid).await.0, 200);
    wait_until("the logs card", || async { card_with("payment 4 failed").is_some() }).await;
    let page = card_with("payment 4 failed").unwrap();
    assert!(page.content.contains("password=***") && !page.content.contains("hunter2"), "{}", page.content);

    let download = find_button(&page.card(), "Download").expect("a Download button");
    let click = card_click("ev-download", "oc_ops", &page.message_id, "ou_alice", &download);
    assert_eq!(s.feishu.post(&click, Signing::Valid).await.0, 200);
    wait_until("the file message", || async { s.fake.calls().iter().any(|c| c.msg_type == "file") }).await;
    let file_message = s.fake.calls().into_iter().find(|c| c.msg_type == "file").unwrap();
    let key: Value = serde_json::from_str(&file_message.content).unwrap();
    let (name, bytes) = s.fake.file(key["file_key"].as_str().unwrap()).expect("the file was uploaded first");
    assert!(name.starts_with("payments-logs-") && name.ends_with(".txt"), "{name}");
    let file = String::from_utf8(bytes).unwrap();
    assert!(file.find("payment 0 failed").unwrap() < file.find("payment 4 failed").unwrap(), "{file}");
    assert!(!file.contains("hunter2"), "{file}");
    assert!(s.bot.terminate().await.success());
}

/// The callback token of the button labelled `label`.
pub(super) fn find_button(value: &Value, label: &str) -> Option<String> {
    match value {
        Value::Object(map) => {
            if map.get("tag").and_then(Value::as_str) == Some("button")
                && value.pointer("/text/content").and_then(Value::as_str) == Some(label)
            {
                return value.pointer("/behaviors/0/value/t").and_then(Value::as_str).map(str::to_owned);
            }
            map.values().find_map(|v| find_button(v, label))
        }
        Value::Array(items) => items.iter().find_map(|v| find_button(v, label)),
        _ => None,
    }
}

pub(super) fn find_button_token(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => {
            if map.get("tag").and_then(Value::as_str) == Some("button") {
                return value.pointer("/behaviors/0/value/t").and_then(Value::as_str).map(str::to_owned);
            }
            map.values().find_map(find_button_token)
        }
        Value::Array(items) => items.iter().find_map(find_button_token),
        _ => None,
    }
}

#[tokio::test]
async fn kb_add_as_a_reply_reads_the_parent_message_after_the_ack() {
    let s = setup().await;
    let dir = s._dir.path().to_owned();
    let fix = "Promote the replica with REPLICAOF NO ONE.\nThen repoint the clients at the new primary.";
    s.fake.user_message("om_fix", "oc_ops", "text", &json!({"text": fix}));
    let post = json!({"title": "", "content": [
        [{"tag": "text", "text": "Drain the node: "}, {"tag": "code_block", "language": "shell", "text": "kubectl drain NODE"}],
        [{"tag": "img", "image_key": "img_1"}],
    ]});
    s.fake.user_message("om_post", "oc_ops", "post", &post);
    s.fake.user_message("om_image", "oc_ops", "image", &json!({"image_key": "img_1"}));

    // The event names only the parent; the bot acks first, then the handler reads it.
    let add =
        replying_to(&message_event("ev-kb1", "oc_ops", "group", "om_kb1", "/kb add Redis failover", true), "om_fix");
    assert_eq!(s.feishu.post(&add, Signing::Valid).await.0, 200);
    let reply = s.wait_reply("om_kb1").await;
    assert!(reply.text().contains("Saved “Redis failover” as notes/redis-failover.md"), "{}", reply.text());
    let saved = std::fs::read_to_string(dir.join("data/kb-notes/redis-failover.md")).unwrap();
    assert!(saved.starts_with("---\ntitle: Redis failover\nauthor: alice\n"), "{saved}");
    assert!(saved.ends_with(&format!("# Redis failover\n\n{fix}\n")), "{saved}");
    assert_eq!(s.fake.reads(), 1);
    let search = message_event("ev-kb2", "oc_ops", "group", "om_kb2", "/kb repoint the clients", true);
    s.feishu.post(&search, Signing::Valid).await;
    let card = s.wait_reply("om_kb2").await.card().to_string();
    assert!(card.contains("Redis failover"), "found at once: {card}");

    // A rich-text parent: its text elements, paragraph by paragraph.
    let add = replying_to(&message_event("ev-kb3", "oc_ops", "group", "om_kb3", "/kb add Node drain", true), "om_post");
    s.feishu.post(&add, Signing::Valid).await;
    assert!(s.wait_reply("om_kb3").await.text().contains("Saved “Node drain”"));
    let saved = std::fs::read_to_string(dir.join("data/kb-notes/node-drain.md")).unwrap();
    assert!(saved.ends_with("# Node drain\n\nDrain the node: kubectl drain NODE\n"), "{saved}");

    // Lines of its own win: the parent is not even read.
    let own = "/kb add Own words\nCheck the disk first.";
    let add = replying_to(&message_event("ev-kb4", "oc_ops", "group", "om_kb4", own, true), "om_fix");
    s.feishu.post(&add, Signing::Valid).await;
    assert!(s.wait_reply("om_kb4").await.text().contains("Saved “Own words”"));
    let saved = std::fs::read_to_string(dir.join("data/kb-notes/own-words.md")).unwrap();
    assert!(saved.ends_with("# Own words\n\nCheck the disk first.\n") && !saved.contains("REPLICAOF"), "{saved}");
    assert_eq!(s.fake.reads(), 2, "only the post was read since");

    // A parent without text: said so, nothing written.
    let add =
        replying_to(&message_event("ev-kb5", "oc_ops", "group", "om_kb5", "/kb add Screenshot", true), "om_image");
    s.feishu.post(&add, Signing::Valid).await;
    assert!(s.wait_reply("om_kb5").await.text().contains("has no text to save"));
    assert!(!dir.join("data/kb-notes/screenshot.md").exists());
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn kb_add_when_the_parent_cannot_be_read_says_so_and_saves_nothing() {
    let s = setup().await;
    let dir = s._dir.path().to_owned();
    // Feishu refuses: the message is unknown to it (code 230001) …
    let add = replying_to(&message_event("ev-r1", "oc_ops", "group", "om_r1", "/kb add Lost note", true), "om_unknown");
    assert_eq!(s.feishu.post(&add, Signing::Valid).await.0, 200);
    let reply = s.wait_reply("om_r1").await.text();
    assert!(reply.contains("Could not read the message you replied to") && reply.contains("230001"), "{reply}");
    // … or the app lacks the scope to read messages.
    s.fake.user_message("om_fix", "oc_ops", "text", &json!({"text": "restart it"}));
    s.fake.refuse_reads(Some((StatusCode::BAD_REQUEST, 230027, "Lack of necessary permissions")));
    let add = replying_to(&message_event("ev-r2", "oc_ops", "group", "om_r2", "/kb add Denied note", true), "om_fix");
    s.feishu.post(&add, Signing::Valid).await;
    let reply = s.wait_reply("om_r2").await.text();
    assert!(reply.contains("Could not read the message you replied to") && reply.contains("230027"), "{reply}");
    assert!(!dir.join("data/kb-notes/lost-note.md").exists() && !dir.join("data/kb-notes/denied-note.md").exists());
    let stderr = s.bot.terminate_with_stderr().await;
    let logged = stderr.lines().filter(|l| l.contains("reading the replied-to message failed")).count();
    assert_eq!(logged, 2, "logged once each: {stderr}");
}
