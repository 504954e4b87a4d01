//! Alerts end to end: a real Alertmanager posting to the real binary, whose
//! cards go to two Telegram chats on the fake Bot API; buttons pressed there
//! ack and silence (in Alertmanager) and update both copies in place.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

use super::alertmanager::RealAlertmanager;
use super::fake_telegram::{FakeTelegram, Sent, TOKEN};
use super::harness::{Proc, wait_until, write_config};

const ALICE: i64 = 4242;
const BOB: i64 = 4343;
const OPS: i64 = -1001111111111;
const DB: i64 = -1002222222222;
const HOOK_TOKEN: &str = "hook-token-for-tests";

/// Forwards what Alertmanager posts to the bot, whose port is only known once
/// it runs (Alertmanager needs its receiver URL before that).
#[derive(Clone, Default)]
struct Relay {
    target: Arc<Mutex<Option<String>>>,
}

impl Relay {
    async fn start(&self) -> String {
        async fn forward(State(relay): State<Relay>, headers: HeaderMap, body: Bytes) -> StatusCode {
            let Some(target) = relay.target.lock().unwrap().clone() else { return StatusCode::SERVICE_UNAVAILABLE };
            let mut request = reqwest::Client::new().post(format!("{target}/hooks/alertmanager")).body(body.to_vec());
            for name in ["authorization", "content-type"] {
                if let Some(v) = headers.get(name) {
                    request = request.header(name, v.to_str().unwrap());
                }
            }
            match request.send().await {
                Ok(r) => StatusCode::from_u16(r.status().as_u16()).unwrap(),
                Err(_) => StatusCode::BAD_GATEWAY,
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let app = Router::new().route("/", post(forward)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }
}

fn config(fake: &FakeTelegram, alertmanager: &str) -> String {
    format!(
        "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info,opsclaw=debug\"\n\
         [telegram]\napi_url = \"{}\"\ntoken_env = \"TELEGRAM_BOT_TOKEN\"\npoll_timeout = \"2s\"\n\
         [telegram.limits]\nper_chat_per_second = 50.0\nper_chat_burst = 50\nper_group_per_minute = 600.0\nper_group_burst = 50\n\
         [access]\nallowed_chats = [\"telegram:*\"]\n\
         [[principals]]\nname = \"alice\"\nroles = [\"responder\", \"viewer\"]\nids = [\"telegram:{ALICE}\"]\n\
         [[principals]]\nname = \"bob\"\nroles = [\"responder\", \"viewer\"]\nids = [\"telegram:{BOB}\"]\n\
         [alerts.sources.alertmanager]\nauth = \"bearer\"\ntoken_env = \"HOOK_TOKEN\"\n\
         [alerts.sources.generic]\nauth = \"bearer\"\ntoken_env = \"HOOK_TOKEN\"\n\
         {alertmanager}\n\
         [[alerts.routes]]\nmatch = ['team=\"db\"']\nchats = [\"telegram:{OPS}\", \"telegram:{DB}\"]\n\
         [[alerts.routes]]\nchats = [\"telegram:{OPS}\"]\n",
        fake.url()
    )
}

async fn start_bot(dir: &std::path::Path, config: &str) -> (Proc, String) {
    let path = write_config(dir, config);
    let mut bot = Proc::spawn_with_env(
        &["run", "--config", path.to_str().unwrap()],
        dir,
        &[("TELEGRAM_BOT_TOKEN", TOKEN), ("HOOK_TOKEN", HOOK_TOKEN)],
    );
    let addr = bot.http_addr().await;
    let url = format!("http://{addr}");
    let ready = format!("{url}/readyz");
    wait_until("the bot is ready", || async { reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) }).await;
    (bot, url)
}

fn user(id: i64, name: &str) -> Value {
    FakeTelegram::user(id, name, Some(&name.to_lowercase()))
}

/// The callback data of the button whose label contains `label`.
fn button(card: &Sent, label: &str) -> Option<String> {
    let keyboard = card.reply_markup.as_ref()?;
    keyboard["inline_keyboard"].as_array()?.iter().flat_map(|row| row.as_array().cloned().unwrap_or_default()).find_map(
        |b| {
            b["text"].as_str().filter(|t| t.contains(label))?;
            b["callback_data"].as_str().map(str::to_owned)
        },
    )
}

async fn press(fake: &FakeTelegram, chat: i64, card: &Sent, label: &str, who: Value, id: &str) {
    let data = button(card, label).unwrap_or_else(|| panic!("no {label} button on {}", card.text));
    let message = fake.sent_message_json(chat, card.message_id);
    fake.push("callback_query", FakeTelegram::callback_query(id, who, message, &data));
}

/// The first card (an HTML message; texts and mentions are plain) in `chat`
/// that passes `test`, once there is one.
async fn card_in(fake: &FakeTelegram, chat: i64, what: &str, test: impl Fn(&Sent) -> bool) -> Sent {
    let card = |s: &Sent| s.parse_mode.as_deref() == Some("HTML") && test(s);
    wait_until(what, || async { fake.sent(chat).iter().any(card) }).await;
    fake.sent(chat).into_iter().find(card).unwrap()
}

#[tokio::test]
async fn alertmanager_alerts_become_one_card_per_chat_that_ack_silence_and_resolution_update() {
    let relay = Relay::default();
    let relay_url = relay.start().await;
    let Some(am) = RealAlertmanager::start(&relay_url, Some(HOOK_TOKEN)).await else { return };
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let am_section = format!("[alerts.alertmanager]\nurl = \"{}\"\n", am.url);
    let (bot, url) = start_bot(dir.path(), &config(&fake, &am_section)).await;
    *relay.target.lock().unwrap() = Some(url.clone());

    let labels =
        |instance: &str| json!({"alertname": "DiskFull", "severity": "critical", "team": "db", "instance": instance});
    am.fire(json!([{"labels": labels("db1"), "annotations": {"summary": "disk 95% full"}}])).await;

    // One card in each routed chat.
    let first = card_in(&fake, OPS, "the alert card in ops", |c| c.text.contains("DiskFull")).await;
    card_in(&fake, DB, "the alert card in db", |c| c.text.contains("DiskFull")).await;
    assert!(first.text.contains("CRITICAL") && first.text.contains("disk 95% full"), "{}", first.text);
    assert!(button(&first, "Ack").is_some() && button(&first, "Silence 1h").is_some(), "{:?}", first.reply_markup);
    assert!(button(&first, "Resolve").is_none(), "Alertmanager resolves its own alerts");

    // A second alert of the group: the same card, updated, in both chats.
    am.fire(json!([
        {"labels": labels("db1"), "annotations": {"summary": "disk 95% full"}},
        {"labels": labels("db2"), "annotations": {"summary": "disk 97% full"}},
    ]))
    .await;
    for chat in [OPS, DB] {
        card_in(&fake, chat, "the card counts two alerts", |c| c.text.contains("2 / 2")).await;
        assert_eq!(fake.sent(chat).len(), 1, "updated in place, not posted again");
    }

    // Ack from ops: both copies say who; the Ack button goes away.
    let card = fake.sent(OPS).remove(0);
    let stale = fake.sent(DB).remove(0);
    press(&fake, OPS, &card, "Ack", user(ALICE, "Alice"), "cbq-ack").await;
    for chat in [OPS, DB] {
        let acked = card_in(&fake, chat, "the card shows the ack", |c| c.text.contains("Acknowledged by alice")).await;
        assert!(button(&acked, "Ack").is_none(), "{:?}", acked.reply_markup);
    }
    // Bob presses Ack on the copy he still saw: one effect, and he is told who was first.
    press(&fake, DB, &stale, "Ack", user(BOB, "Bob"), "cbq-ack2").await;
    wait_until("bob is told", || async {
        fake.sent(DB).iter().any(|s| s.text.contains("already acknowledged by alice"))
    })
    .await;
    assert!(fake.sent(DB)[0].text.contains("Acknowledged by alice"), "the card still tells the truth");

    let card = fake.sent(DB).remove(0);
    press(&fake, DB, &card, "Silence 1h", user(BOB, "Bob"), "cbq-s1").await;
    let silenced = card_in(&fake, DB, "the card shows the silence", |c| c.text.contains("Silenced by bob")).await;
    assert!(button(&silenced, "Unsilence").is_some() && button(&silenced, "Silence 1h").is_none());

    // The silences are in Alertmanager: one per firing alert, exact matchers from its labels.
    let silences = am.silences().await;
    let active: Vec<&Value> =
        silences.as_array().unwrap().iter().filter(|s| s["status"]["state"] == "active").collect();
    assert_eq!(active.len(), 2, "{silences:#}");
    for s in &active {
        assert_eq!(s["createdBy"], "bob");
        assert!(s["comment"].as_str().unwrap().contains(&format!("telegram:{DB}")), "{s}");
        let matchers = s["matchers"].as_array().unwrap();
        assert_eq!(matchers.len(), 4, "{s}");
        assert!(matchers.iter().all(|m| m["isEqual"] == true && m["isRegex"] == false), "{s}");
        assert!(matchers.iter().any(|m| m["name"] == "instance"), "{s}");
    }
    wait_until("Alertmanager marks both alerts suppressed", || async {
        let alerts = am.alerts().await;
        alerts.as_array().unwrap().iter().filter(|a| a["status"]["state"] == "suppressed").count() == 2
    })
    .await;

    // Unsilence expires them; then the alerts resolve and the card turns green.
    let card = fake.sent(OPS).remove(0);
    press(&fake, OPS, &card, "Unsilence", user(ALICE, "Alice"), "cbq-un").await;
    card_in(&fake, OPS, "the silence is gone from the card", |c| !c.text.contains("Silenced by")).await;
    wait_until("the silences are expired", || async {
        am.silences().await.as_array().unwrap().iter().all(|s| s["status"]["state"] == "expired")
    })
    .await;
    let past = "2020-01-01T00:00:00Z";
    am.fire(json!([
        {"labels": labels("db1"), "startsAt": "2019-12-31T00:00:00Z", "endsAt": past},
        {"labels": labels("db2"), "startsAt": "2019-12-31T00:00:00Z", "endsAt": past},
    ]))
    .await;
    for chat in [OPS, DB] {
        let resolved = card_in(&fake, chat, "the card is resolved", |c| c.text.contains("RESOLVED")).await;
        assert!(button(&resolved, "Ack").is_none() && button(&resolved, "Silence").is_none());
        let cards = fake.sent(chat).iter().filter(|s| s.text.contains("DiskFull")).count();
        assert_eq!(cards, 1, "one card per chat from start to end");
    }

    // `/alert 1` shows the history: every step with its time.
    fake.push(
        "message",
        FakeTelegram::text_message(
            1,
            FakeTelegram::group_chat(OPS, "ops", true, false),
            user(ALICE, "Alice"),
            "/alert 1",
            None,
        ),
    );
    wait_until("the history card", || async { fake.sent(OPS).iter().any(|s| s.text.contains("History of #1")) }).await;
    let history = fake.sent(OPS).into_iter().find(|s| s.text.contains("History of #1")).unwrap();
    for step in ["firing", "acked", "silenced", "unsilenced", "resolved"] {
        assert!(history.text.contains(step), "{step} missing from {}", history.text);
    }
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn a_storm_of_10000_alerts_in_50_groups_gives_ten_cards_and_one_digest_and_stores_everything() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let storm = "[alerts.storm]\nmax_cards_per_chat = 10\nwindow = \"10m\"\n";
    let (bot, url) = start_bot(dir.path(), &config(&fake, storm)).await;
    let client = reqwest::Client::new();
    let post = |body: Value| {
        let request = client.post(format!("{url}/hooks/generic")).bearer_auth(HOOK_TOKEN).json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        }
    };
    // Groups 45..50 are critical, and they arrive last in the first webhook:
    // the critical ones still get cards before the chat's budget is spent.
    let alert = |group: usize, n: usize| {
        let severity = if group >= 45 { "critical" } else { "warning" };
        json!({"labels": {"alertname": format!("Storm{group:02}"), "severity": severity, "team": "web", "instance": format!("host-{n}")}})
    };
    post(json!({"alerts": (0..50).map(|g| alert(g, 0)).collect::<Vec<_>>()})).await;
    for batch in 0..20 {
        let alerts: Vec<Value> =
            (0..500).map(|i| batch * 500 + i).filter(|&i| i >= 50).map(|i| alert(i % 50, i)).collect();
        post(json!({"alerts": alerts})).await;
    }

    wait_until("the digest lists the other 40 groups", || async {
        fake.sent(OPS).iter().any(|s| s.text.contains("Alert storm: 40 more groups"))
    })
    .await;
    let sent = fake.sent(OPS);
    let cards: Vec<&Sent> =
        sent.iter().filter(|s| s.text.contains("Storm") && !s.text.contains("Alert storm")).collect();
    let digests = sent.iter().filter(|s| s.text.contains("Alert storm")).count();
    assert_eq!((cards.len(), digests), (10, 1), "{:#?}", sent.iter().map(|s| &s.text).collect::<Vec<_>>());
    for group in 45..50 {
        assert!(
            cards.iter().any(|c| c.text.contains(&format!("Storm{group}"))),
            "critical Storm{group} has its own card"
        );
    }
    assert!(bot.terminate().await.success());

    let store = opsclaw::store::Store::connect(&format!("sqlite://{}", dir.path().join("data/opsclaw.db").display()))
        .await
        .unwrap();
    assert_eq!(store.count_alerts().await.unwrap(), 10_000, "every alert is stored");
}

#[tokio::test]
async fn bad_webhooks_get_a_status_and_reason_and_change_nothing() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let grafana = "[alerts.sources.grafana]\nauth = \"hmac\"\nhmac_secret_env = \"HOOK_TOKEN\"\n\
                   hmac_header = \"X-Grafana-Alerting-Signature\"\nmax_body_bytes = 2000\n";
    let (bot, url) = start_bot(dir.path(), &config(&fake, grafana)).await;
    let client = reqwest::Client::new();
    let send = |source: &str, token: Option<&str>, body: String| {
        let mut request = client.post(format!("{url}/hooks/{source}")).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let good = json!({"alerts": [{"labels": {"alertname": "Good", "team": "db"}}]}).to_string();
    let cases = [
        ("generic", Some("wrong"), good.clone(), 401, "bearer token"),
        ("generic", None, good.clone(), 401, "bearer token"),
        ("nagios", Some(HOOK_TOKEN), good.clone(), 404, "unknown alert source"),
        ("generic", Some(HOOK_TOKEN), "{not json".into(), 400, "not JSON"),
        ("generic", Some(HOOK_TOKEN), json!({"alerts": []}).to_string(), 400, "no alerts"),
        (
            "generic",
            Some(HOOK_TOKEN),
            json!({"alerts": [{"labels": {"alertname": "X"}, "sevrity": "high"}]}).to_string(),
            400,
            "sevrity",
        ),
        // One good alert and one without a name: nothing of the body is applied.
        (
            "generic",
            Some(HOOK_TOKEN),
            json!({"alerts": [{"labels": {"alertname": "Good"}}, {"labels": {"team": "db"}}]}).to_string(),
            400,
            "alerts[1]",
        ),
        ("alertmanager", Some(HOOK_TOKEN), json!({"version": "3", "alerts": []}).to_string(), 400, "version"),
        ("grafana", None, "x".repeat(3000), 413, "limit"),
        ("grafana", None, good.clone(), 401, "signature"),
    ];
    for (source, token, body, status, reason) in cases {
        let (got, text) = send(source, token, body).await;
        assert_eq!(got, status, "{source}: {text}");
        assert!(text.contains(reason), "{source} {status}: {text:?} should say {reason:?}");
    }
    // The bot is fine and nothing was stored or posted.
    let (status, text) = send("generic", Some(HOOK_TOKEN), good.clone()).await;
    assert_eq!(status, 200, "{text}");
    let (status, _) = send("generic", Some(HOOK_TOKEN), good).await;
    assert_eq!(status, 200);
    card_in(&fake, OPS, "the good alert's card", |c| c.text.contains("Good")).await;
    assert!(bot.terminate().await.success());
    assert_eq!(fake.sent(OPS).len(), 1, "the same alert twice is one card: {:?}", fake.sent(OPS));
    let store = opsclaw::store::Store::connect(&format!("sqlite://{}", dir.path().join("data/opsclaw.db").display()))
        .await
        .unwrap();
    assert_eq!(store.count_alerts().await.unwrap(), 1, "only the good alert is stored");
}

#[tokio::test]
async fn a_generic_alert_is_resolved_from_its_card_and_people_without_the_role_are_told() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (bot, url) = start_bot(dir.path(), &config(&fake, "")).await;
    let body = json!({"alerts": [{"labels": {"alertname": "QueueStuck", "severity": "warning"}}]});
    let response = reqwest::Client::new()
        .post(format!("{url}/hooks/generic"))
        .bearer_auth(HOOK_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let card = card_in(&fake, OPS, "the card", |c| c.text.contains("QueueStuck")).await;
    // Mallory has no role: she is told which role she lacks, and nothing changes.
    press(&fake, OPS, &card, "Resolve", user(9999, "Mallory"), "cbq-m").await;
    wait_until("mallory is told", || async { fake.sent(OPS).iter().any(|s| s.text.contains("responder")) }).await;
    assert!(!fake.sent(OPS)[0].text.contains("RESOLVED"));
    // Alice asks for /alerts in her DM, a chat no route names: she gets a live copy.
    let dm = FakeTelegram::private_chat(ALICE, "Alice");
    fake.push("message", FakeTelegram::text_message(1, dm, user(ALICE, "Alice"), "/alerts", None));
    card_in(&fake, ALICE, "the copy in the DM", |c| c.text.contains("QueueStuck")).await;
    press(&fake, OPS, &card, "Resolve", user(ALICE, "Alice"), "cbq-r").await;
    let resolved = card_in(&fake, OPS, "the card is resolved", |c| c.text.contains("Resolved by alice")).await;
    assert!(resolved.text.contains("RESOLVED") && button(&resolved, "Ack").is_none());
    card_in(&fake, ALICE, "the DM copy is updated too", |c| c.text.contains("Resolved by alice")).await;
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn a_signed_grafana_alert_becomes_a_card_with_its_links() {
    use hmac::{Hmac, Mac};
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let grafana = "[alerts.sources.grafana]\nauth = \"hmac\"\nhmac_secret_env = \"HOOK_TOKEN\"\n\
                   hmac_header = \"X-Grafana-Alerting-Signature\"\n";
    let (bot, url) = start_bot(dir.path(), &config(&fake, grafana)).await;
    let body = json!({
        "receiver": "opsclaw", "status": "firing", "orgId": 1, "version": "1", "truncatedAlerts": 0,
        "groupKey": "{}/{__grafana_autogenerated__=\"true\"}:{alertname=\"High CPU usage\"}",
        "groupLabels": {"alertname": "High CPU usage"},
        "commonLabels": {"alertname": "High CPU usage", "team": "db"}, "commonAnnotations": {},
        "externalURL": "https://grafana.example.com/", "title": "[FIRING:1] High CPU usage", "state": "alerting",
        "message": "**Firing**",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "High CPU usage", "team": "db", "zone": "eu-1", "severity": "warning"},
            "annotations": {"summary": "CPU above 90% in eu-1"},
            "startsAt": "2026-11-22T09:56:03.157076+02:00", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://grafana.example.com/alerting/grafana/d1rdpdv7k/view",
            "fingerprint": "bc97ff14869b13e3",
            "silenceURL": "https://grafana.example.com/alerting/silence/new",
            "dashboardURL": "https://grafana.example.com/d/node", "panelURL": "https://grafana.example.com/d/node?viewPanel=4",
            "values": {"B": 93.7}, "valueString": "[ var='B' value=93.7 ]"
        }]
    })
    .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HOOK_TOKEN.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let response = reqwest::Client::new()
        .post(format!("{url}/hooks/grafana"))
        .header("X-Grafana-Alerting-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let card = card_in(&fake, DB, "the Grafana card", |c| c.text.contains("High CPU usage")).await;
    assert!(card.text.contains("WARNING") && card.text.contains("CPU above 90% in eu-1"), "{}", card.text);
    assert!(card.text.contains("dashboard") && card.text.contains("panel"), "{}", card.text);
    assert!(button(&card, "Ack").is_some() && button(&card, "Resolve").is_none());
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn a_silence_alertmanager_cannot_take_is_shown_on_the_card_and_nothing_is_silenced() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    // An Alertmanager that is not there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let am = format!("[alerts.alertmanager]\nurl = \"http://{closed}\"\ntimeout = \"2s\"\n");
    let (bot, url) = start_bot(dir.path(), &config(&fake, &am)).await;
    let webhook = json!({
        "version": "4", "groupKey": "{}:{alertname=\"Down\"}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "opsclaw", "groupLabels": {"alertname": "Down"}, "commonLabels": {"alertname": "Down"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": "firing", "labels": {"alertname": "Down", "job": "api"}, "annotations": {},
                    "startsAt": "2026-11-22T08:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus/graph", "fingerprint": "0123456789abcdef"}]
    });
    let response = reqwest::Client::new()
        .post(format!("{url}/hooks/alertmanager"))
        .bearer_auth(HOOK_TOKEN)
        .json(&webhook)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let card = card_in(&fake, OPS, "the card", |c| c.text.contains("Down")).await;
    press(&fake, OPS, &card, "Silence 4h", user(ALICE, "Alice"), "cbq-s").await;
    let refused = card_in(&fake, OPS, "the refusal on the card", |c| c.text.contains("Alertmanager unavailable")).await;
    assert!(!refused.text.contains("Silenced by"), "{}", refused.text);
    assert!(button(&refused, "Silence 4h").is_some(), "it can be tried again");
    wait_until("alice is told too", || async {
        fake.sent(OPS).iter().any(|s| s.text.starts_with("Could not silence #1"))
    })
    .await;
    assert!(bot.terminate().await.success());
}

#[tokio::test]
async fn an_unacked_critical_mentions_the_on_call_then_escalates_until_acked() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let escalation = "[[alerts.oncall]]\nname = \"primary\"\nrotation = \"weekly\"\npeople = [\"alice\", \"bob\"]\n\
                      handover = \"2026-01-05T09:00\"\ntimezone = \"Asia/Shanghai\"\n\
                      [alerts.policy.critical]\nschedule = \"primary\"\nmention_oncall = true\nescalate = [\"2s\", \"60s\"]\n";
    let (bot, url) = start_bot(dir.path(), &config(&fake, escalation)).await;
    let on_call = |text: &str| -> String {
        // Whoever the schedule has on call now: the bot and the test read the same clock.
        if text.contains("@alice") { "alice".into() } else { "bob".into() }
    };
    let body = json!({"alerts": [{"labels": {"alertname": "DbDown", "severity": "critical", "team": "db"}}]});
    let response = reqwest::Client::new()
        .post(format!("{url}/hooks/generic"))
        .bearer_auth(HOOK_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The card, and the on-call mentioned as the group starts firing, in both routed chats.
    wait_until("the on-call is mentioned", || async {
        [OPS, DB].iter().all(|chat| fake.sent(*chat).iter().any(|s| s.text.contains("is firing")))
    })
    .await;
    let mention = fake.sent(OPS).into_iter().find(|s| s.text.contains("is firing")).unwrap();
    let who = on_call(&mention.text);
    let entities = fake.sent_message_json(OPS, mention.message_id)["entities"].clone();
    let id = if who == "alice" { ALICE } else { BOB };
    assert_eq!(entities[0]["type"], "text_link", "{entities}");
    // teloxide writes the inline-mention link as tg://user/?id=N.
    let link = entities[0]["url"].as_str().unwrap_or_default();
    assert!(link.starts_with("tg://user") && link.ends_with(&format!("?id={id}")), "{entities}");

    // Two seconds later, still not acknowledged: called again, and the card says so.
    wait_until("the first escalation", || async {
        fake.sent(OPS).iter().any(|s| s.text.contains("still not acknowledged after 2s"))
    })
    .await;
    let card =
        card_in(&fake, OPS, "the card shows the escalation", |c| c.text.contains(&format!("Escalated to {who}"))).await;
    // An ack stops it: the card drops the escalation line and the 60 s step never comes.
    press(&fake, OPS, &card, "Ack", user(ALICE, "Alice"), "cbq-esc").await;
    card_in(&fake, OPS, "the ack", |c| c.text.contains("Acknowledged by alice") && !c.text.contains("Escalated")).await;
    assert!(bot.terminate().await.success());
    let store = opsclaw::store::Store::connect(&format!("sqlite://{}", dir.path().join("data/opsclaw.db").display()))
        .await
        .unwrap();
    let history: Vec<String> = store.alert_history(1, 50).await.unwrap().into_iter().map(|h| h.kind).collect();
    assert_eq!(history, ["firing", "notified", "escalated", "acked"]);
}
