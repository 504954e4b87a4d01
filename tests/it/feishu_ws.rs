//! Feishu over the long connection, end to end: the real binary against the
//! fake Feishu's WebSocket and API.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::fake_feishu::{APP_SECRET, CallKind, FakeFeishu, card_click, message_event};
use super::harness::{Proc, wait_until, write_config};

struct Setup {
    fake: FakeFeishu,
    bot: Proc,
    http: String,
    _dir: tempfile::TempDir,
}

async fn start_bot(fake: FakeFeishu) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
         [feishu]\ndomain = \"{}\"\napp_id = \"{}\"\napp_secret_env = \"FEISHU_APP_SECRET\"\n\
         [access]\nallowed_chats = [\"feishu:*\"]\n[[principals]]\nname = \"alice\"\nroles = [\"admin\"]\nids = [\"feishu:ou_alice\"]\n",
        fake.url(),
        super::fake_feishu::APP_ID,
    );
    let path = write_config(dir.path(), &config);
    let mut bot = Proc::spawn_with_env(
        &["run", "--config", path.to_str().unwrap()],
        dir.path(),
        &[("FEISHU_APP_SECRET", APP_SECRET)],
    );
    let http = bot.http_addr().await;
    Setup { fake, bot, http, _dir: dir }
}

async fn setup() -> Setup {
    let s = start_bot(FakeFeishu::start().await).await;
    wait_until("the bot connects", || async { s.fake.ws.live() == 1 }).await;
    s
}

impl Setup {
    fn replies_to(&self, parent: &str) -> Vec<super::fake_feishu::Call> {
        self.fake.replies_to(parent)
    }

    async fn wait_reply(&self, parent: &str) -> super::fake_feishu::Call {
        self.fake.wait_reply(parent).await
    }

    async fn wait_ack(&self, message_id: &str) -> super::fake_feishu_ws::Ack {
        wait_until(&format!("an ACK for {message_id}"), || async { !self.fake.ws.acks(message_id).is_empty() }).await;
        self.fake.ws.acks(message_id).remove(0)
    }

    async fn readyz(&self) -> (u16, String) {
        let response = reqwest::get(format!("http://{}/readyz", self.http)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

fn ping(n: u32, text: &str) -> String {
    message_event(&format!("ev-ws-{n}"), "oc_ops", "group", &format!("om_ws{n}"), text, true)
}

#[tokio::test]
async fn ping_fragments_redelivery_and_acks() {
    let s = setup().await;
    assert_eq!(s.readyz().await.0, 200);

    let started = Instant::now();
    s.fake.ws.push("f1", &ping(1, "/ping"), 1, false, "event");
    let ack = s.wait_ack("f1").await;
    assert!(started.elapsed() < Duration::from_secs(3), "ACKed within Feishu's 3 s");
    assert_eq!((ack.code, ack.data.is_none()), (200, true));
    assert!(ack.biz_rt.is_some(), "the ACK carries biz_rt");
    assert_eq!(s.wait_reply("om_ws1").await.text(), "pong");

    // Fragmented and out of order: one ACK, one reply.
    s.fake.ws.push("f2", &ping(2, "/ping in pieces"), 4, true, "event");
    assert_eq!(s.wait_reply("om_ws2").await.text(), "pong: in pieces");
    // The ACK and the reply travel separately; wait for the ACK, then count.
    s.wait_ack("f2").await;
    assert_eq!(s.fake.ws.acks("f2").len(), 1, "one ACK for a fragmented message");

    // Redelivered: ACKed again, answered once. A `type=card` frame is handled like an event.
    s.fake.ws.push("f3", &ping(1, "/ping"), 1, false, "event");
    s.wait_ack("f3").await;
    s.fake.ws.push("f4", &ping(4, "/ping as card frame"), 1, false, "card");
    assert_eq!(s.wait_reply("om_ws4").await.text(), "pong: as card frame");
    assert_eq!(s.replies_to("om_ws1").len(), 1);

    // Garbage and frames without a type are skipped; the connection stays up.
    s.fake.ws.push_raw(b"\xff\xfe garbage".to_vec());
    s.fake.ws.push("f5", "{not json", 1, false, "event");
    s.fake.ws.push("f6", &ping(6, "/ping after garbage"), 1, false, "event");
    assert_eq!(s.wait_reply("om_ws6").await.text(), "pong: after garbage");
    assert_eq!(s.fake.ws.handshakes(), 1, "no reconnect was needed");
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn dropped_and_half_open_sockets_are_replaced_and_nothing_is_lost() {
    let s = setup().await;
    s.fake.ws.push("d1", &ping(11, "/ping one"), 1, false, "event");
    s.wait_reply("om_ws11").await;

    s.fake.ws.drop_socket();
    wait_until("the bot reconnects after a drop", || async { s.fake.ws.handshakes() == 2 && s.fake.ws.live() == 1 })
        .await;
    s.fake.ws.push("d2", &ping(12, "/ping two"), 1, false, "event");
    s.wait_reply("om_ws12").await;

    // Half-open: the socket stays open but nothing moves. PingInterval is 1 s;
    // the bot must give up on it and reconnect within twice that plus reconnecting.
    let silent_at = Instant::now();
    s.fake.ws.go_silent();
    wait_until("the bot replaces the silent socket", || async { s.fake.ws.handshakes() == 3 }).await;
    assert!(silent_at.elapsed() < Duration::from_secs(6), "replaced after {:?}", silent_at.elapsed());
    wait_until("the new connection is up", || async { s.fake.ws.live() >= 1 }).await;
    s.fake.ws.push("d3", &ping(13, "/ping three"), 1, false, "event");
    s.wait_reply("om_ws13").await;

    for parent in ["om_ws11", "om_ws12", "om_ws13"] {
        assert_eq!(s.replies_to(parent).len(), 1, "{parent} answered exactly once");
    }
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn a_revoked_tenant_token_is_refreshed_and_the_call_repeated() {
    let s = setup().await;
    s.fake.ws.push("t1", &ping(31, "/ping before"), 1, false, "event");
    s.wait_reply("om_ws31").await;
    let issued = s.fake.tokens_issued();
    s.fake.revoke_tokens();
    s.fake.ws.push("t2", &ping(32, "/ping after"), 1, false, "event");
    assert_eq!(s.wait_reply("om_ws32").await.text(), "pong: after");
    assert_eq!(s.fake.tokens_issued(), issued + 1, "one new token for the rejected call");
    assert_eq!(s.replies_to("om_ws32").len(), 1);
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn card_clicks_are_acked_with_a_toast_and_patched() {
    let s = setup().await;
    s.fake.ws.push("c1", &ping(21, "/status"), 1, false, "event");
    let card = s.wait_reply("om_ws21").await;
    let token =
        card.card().to_string().split("\"t\":\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned).unwrap();
    s.fake.ws.push("c2", &card_click("ev-ws-click", "oc_ops", &card.message_id, "ou_alice", &token), 1, false, "event");
    let ack = s.wait_ack("c2").await;
    assert_eq!(ack.code, 200);
    assert_eq!(ack.data.as_ref().unwrap()["toast"]["type"], "info", "{ack:?}");
    wait_until("the card is patched", || async { s.fake.calls().iter().any(|c| c.kind == CallKind::Patch) }).await;
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn the_connection_limit_is_fatal_and_reported() {
    let fake = FakeFeishu::start().await;
    *fake.ws.refuse_handshake.lock().unwrap() = Some((514, Some("1000040350")));
    let mut s = start_bot(fake).await;
    s.bot.expect_stderr("connection limit exceeded (1000040350)").await;
    let (status, body) = s.readyz().await;
    assert_eq!(status, 503);
    assert!(body.contains("feishu is failed"), "the state is set before the log line: {body}");
    assert_eq!(s.fake.ws.handshakes(), 1, "a fatal refusal is not retried");
    assert!(s.bot.terminate().await.success());
}

#[tokio::test]
async fn retryable_endpoint_errors_are_retried() {
    let fake = FakeFeishu::start().await;
    fake.ws.endpoint_code.store(1000040343, Ordering::SeqCst);
    let s = start_bot(fake).await;
    wait_until("the bot keeps asking", || async { s.readyz().await.1.contains("feishu is reconnecting") }).await;
    s.fake.ws.endpoint_code.store(0, Ordering::SeqCst);
    wait_until("the bot connects once the endpoint recovers", || async { s.fake.ws.live() == 1 }).await;
    assert_eq!(s.readyz().await.0, 200);
    assert!(s.bot.terminate().await.success());
}
