//! Several replicas on one PostgreSQL database (`OPSCLAW_TEST_PG_URL`): three
//! real `opsclaw` processes against the fake Feishu and Telegram, sharing a
//! fresh schema. Without PostgreSQL each test says it was skipped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::{PgPool, Row};

use super::fake_feishu::{APP_ID, APP_SECRET, CallKind, Callbacks, FakeFeishu, Signing, card_click, message_event};
use super::fake_telegram::{FakeTelegram, TOKEN};
use super::feishu::find_button_token;
use super::harness::{DEADLINE, Proc, pg_drop_schema, pg_schema, pg_url, wait_until, wait_until_within, write_config};

const ENCRYPT_KEY: &str = "replica key";
/// Short enough for the tests to see hand-overs; `replicas.lease` must be three heartbeats at least.
const HEARTBEAT: &str = "250ms";
const LEASE: Duration = Duration::from_secs(2);

/// Three replicas at a time: these tests run one after another, so that on
/// a small machine they do not starve each other's heartbeats.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three replicas' shared database and their processes.
struct Cluster {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    url: String,
    schema: String,
    schema_url: String,
    pool: PgPool,
    dir: tempfile::TempDir,
    /// The platform and alert sections every replica's config has.
    sections: String,
    procs: Vec<Option<Proc>>,
    /// Each replica's HTTP address.
    addrs: Vec<String>,
    /// `replicas.lease` of every replica.
    lease: Duration,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

impl Cluster {
    async fn new(test: &str, sections: String) -> Option<Cluster> {
        let url = pg_url(test)?;
        let turn = ONE_CLUSTER.lock().await;
        let (schema_url, schema) = pg_schema(&url).await;
        let pool = PgPool::connect(&url).await.expect("PostgreSQL answers");
        let dir = tempfile::tempdir().unwrap();
        Some(Cluster {
            _turn: turn,
            url,
            schema,
            schema_url,
            pool,
            dir,
            sections,
            procs: Vec::new(),
            addrs: Vec::new(),
            lease: LEASE,
        })
    }

    /// Starts replica `i` (again, after a stop) and waits for its HTTP listener.
    async fn start(&mut self, i: usize) {
        let dir = self.dir.path().join(format!("r{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "data_dir = \"data\"\n[store]\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [log]\nformat = \"json\"\nlevel = \"info,opsclaw=debug\"\n\
             [replicas]\nname = \"r{i}\"\nheartbeat = \"{HEARTBEAT}\"\nlease = \"{}s\"\n{}\n\
             [access]\nallowed_chats = [\"feishu:*\", \"telegram:*\"]\n\
             [[principals]]\nname = \"alice\"\nroles = [\"admin\"]\nids = [\"feishu:ou_alice\", \"telegram:1001\"]\n",
            self.schema_url,
            self.lease.as_secs(),
            self.sections
        );
        let path = write_config(&dir, &config);
        let env = [
            ("FEISHU_APP_SECRET", APP_SECRET),
            ("FEISHU_ENCRYPT_KEY", ENCRYPT_KEY),
            ("FEISHU_VERIFICATION_TOKEN", "vtok"),
            ("TELEGRAM_BOT_TOKEN", TOKEN),
        ];
        let mut proc = Proc::spawn_with_env(&["run", "--config", path.to_str().unwrap()], &dir, &env);
        let addr = proc.http_addr().await;
        if self.procs.len() <= i {
            self.procs.resize_with(i + 1, || None);
            self.addrs.resize(i + 1, String::new());
        }
        self.procs[i] = Some(proc);
        self.addrs[i] = addr;
    }

    async fn start_all(&mut self, n: usize) {
        for i in 0..n {
            self.start(i).await;
        }
        wait_until("every replica registered", || async { self.live().await.len() == n }).await;
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    /// Names of the replicas heartbeating within the lease time.
    async fn live(&self) -> Vec<String> {
        let sql = format!("SELECT name FROM {} WHERE seen_at >= $1 ORDER BY name", self.table("replicas"));
        let rows =
            sqlx::query(&sql).bind(now_ms() - self.lease.as_millis() as i64).fetch_all(&self.pool).await.unwrap();
        rows.iter().map(|r| r.get("name")).collect()
    }

    /// The name of the replica holding an unexpired `lease`, and its token.
    async fn holder(&self, lease: &str) -> Option<(String, i64)> {
        let sql = format!(
            "SELECT r.name, l.token FROM {} l JOIN {} r ON r.id = l.holder WHERE l.name = $1 AND l.expires_at > $2",
            self.table("leases"),
            self.table("replicas")
        );
        let row = sqlx::query(&sql).bind(lease).bind(now_ms()).fetch_optional(&self.pool).await.unwrap()?;
        Some((row.get("name"), row.get("token")))
    }

    async fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{inbox}", &self.table("inbox")).replace("{outbox}", &self.table("outbox"));
        sqlx::query(&sql).fetch_one(&self.pool).await.unwrap().get::<i64, _>(0)
    }

    /// Waits until every accepted event is handled and every reply delivered.
    async fn quiet(&self) {
        wait_until("nothing pending in the inbox or the outbox", || async {
            self.count("SELECT COUNT(*) FROM {inbox} WHERE state = 0").await == 0
                && self.count("SELECT COUNT(*) FROM {outbox} WHERE state = 0").await == 0
        })
        .await;
    }

    /// SIGTERM, and a graceful exit.
    async fn stop(&mut self, i: usize) {
        let proc = self.procs[i].take().expect("replica is running");
        assert!(proc.terminate().await.success(), "replica r{i} exits cleanly");
    }

    async fn kill(&mut self, i: usize) {
        self.procs[i].take().expect("replica is running").kill().await;
    }

    fn index(name: &str) -> usize {
        name.trim_start_matches('r').parse().unwrap()
    }

    async fn finish(mut self) {
        for i in 0..self.procs.len() {
            if self.procs[i].is_some() {
                self.stop(i).await;
            }
        }
        pg_drop_schema(&self.url, &self.schema).await;
    }
}

fn feishu_ws(fake: &FakeFeishu) -> String {
    format!(
        "[feishu]\ndomain = \"{}\"\napp_id = \"{APP_ID}\"\napp_secret_env = \"FEISHU_APP_SECRET\"\n\
         [feishu.limits]\nper_chat_per_second = 1000000\nper_chat_burst = 1000000\napp_per_second = 1000000\napp_burst = 1000000\n",
        fake.url()
    )
}

fn telegram(fake: &FakeTelegram) -> String {
    format!(
        "[telegram]\napi_url = \"{}\"\ntoken_env = \"TELEGRAM_BOT_TOKEN\"\npoll_timeout = \"1s\"\n\
         [telegram.limits]\nper_chat_per_second = 1000\nper_chat_burst = 1000\nglobal_per_second = 1000\nglobal_burst = 1000\n",
        fake.url()
    )
}

/// Each parent message's replies, by parent.
fn replies_by_parent(fake: &FakeFeishu) -> BTreeMap<String, usize> {
    let mut replies = BTreeMap::new();
    for call in fake.calls() {
        if let CallKind::Reply { parent, .. } = call.kind {
            *replies.entry(parent).or_insert(0) += 1;
        }
    }
    replies
}

/// Every replica keeps its own long connection; Feishu hands each event to
/// one of them (and redelivers some to another): every event is answered once.
#[tokio::test]
async fn ten_thousand_events_over_three_replicas_get_ten_thousand_replies() {
    const N: usize = 10_000;
    let fake = FakeFeishu::start().await;
    // Pings every 30 s: a connection the fake drops loses what was pushed into it
    // (Feishu would redeliver it elsewhere), so none should be dropped for a late pong.
    *fake.ws.client_config.lock().unwrap() =
        serde_json::json!({"PingInterval": 30, "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0});
    let Some(mut cluster) = Cluster::new("replicas: 10,000 events", feishu_ws(&fake)).await else { return };
    cluster.start_all(3).await;
    wait_until("three long connections", || async { fake.ws.live() == 3 }).await;

    let event = |n: usize| {
        message_event(&format!("ev-{n}"), &format!("oc_{}", n % 200), "group", &format!("om_{n}"), "/ping", true)
    };
    for n in 0..N {
        fake.ws.push_via(n, &format!("m{n}"), &event(n));
    }
    // Feishu redelivers an event it saw no ACK for, on any connection.
    for n in 0..300 {
        fake.ws.push_via(n + 1, &format!("m{n}-again"), &event(n));
    }
    // Every reply reached the fake (a doubled one would count too: checked below, once all are in).
    wait_until_within("10,000 replies", Duration::from_secs(300), || async { fake.n_calls() >= N }).await;
    cluster.quiet().await;
    let replies = replies_by_parent(&fake);
    assert_eq!(replies.len(), N, "every event answered");
    let doubled: Vec<_> = replies.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "answered more than once: {doubled:?}");
    let owners = cluster.count("SELECT COUNT(DISTINCT owner) FROM {outbox}").await;
    assert_eq!(owners, 3, "every replica answered some of them");
    cluster.finish().await;
}

/// One replica polls Telegram under the lease; SIGKILL it and another takes
/// over within the lease time, resuming at the saved offset: no update lost
/// or handled twice, and the token grew (the old holder is fenced out).
#[tokio::test]
async fn the_telegram_lease_holder_killed_another_replica_takes_over() {
    let fake = FakeTelegram::start().await;
    let Some(mut cluster) = Cluster::new("replicas: telegram lease", telegram(&fake)).await else { return };
    cluster.start_all(3).await;
    wait_until("one replica holds the poller lease", || async { cluster.holder("telegram.poller").await.is_some() })
        .await;
    let (first, token) = cluster.holder("telegram.poller").await.unwrap();
    // The two standing by are ready too: callbacks and webhooks may reach them.
    for addr in &cluster.addrs {
        wait_until("every replica ready", || async {
            reqwest::get(format!("http://{addr}/readyz")).await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    let alice = FakeTelegram::user(1001, "Alice", Some("alice"));
    let dm = FakeTelegram::private_chat(1001, "Alice");
    let push = |n: i64| {
        fake.push("message", FakeTelegram::text_message(n, dm.clone(), alice.clone(), &format!("/ping {n}"), None))
    };
    for n in 1..=100 {
        push(n);
    }
    wait_until("the first hundred answered", || async { fake.sent(1001).len() >= 100 }).await;

    cluster.kill(Cluster::index(&first)).await;
    let killed = Instant::now();
    for n in 101..=200 {
        push(n);
    }
    wait_until("another replica holds the lease", || async {
        cluster.holder("telegram.poller").await.is_some_and(|(name, _)| name != first)
    })
    .await;
    let took = killed.elapsed();
    let (second, new_token) = cluster.holder("telegram.poller").await.unwrap();
    // The lease expires within LEASE of its last renewal; the others try every heartbeat.
    assert!(took <= LEASE + Duration::from_secs(3), "taken over after {took:?}");
    assert!(new_token > token, "a new holder gets a larger fencing token");

    wait_until("all two hundred answered", || async { fake.sent(1001).len() >= 200 }).await;
    cluster.quiet().await;
    // Each update handled once: one reply row per update, whichever replica handled it.
    let rows = cluster.count("SELECT COUNT(*) FROM {outbox} WHERE idem_key LIKE 'telegram:m:1001:%'").await;
    assert_eq!(rows, 200, "one reply per update");
    let mut answered: Vec<String> = fake.sent(1001).into_iter().map(|s| s.text).collect();
    answered.sort();
    let mut distinct = answered.clone();
    distinct.dedup();
    let once: std::collections::BTreeSet<String> = answered.iter().cloned().collect();
    let expected: std::collections::BTreeSet<String> = (1..=200).map(|n| format!("pong: {n}")).collect();
    assert_eq!(once, expected, "every update answered, none lost");
    // The Bot API has no idempotency key: the one send the killed replica had
    // made but not recorded yet (its chat's lane sends one at a time) may be sent
    // again by the replica that took its replies over. Nothing else is.
    assert!(answered.len() - distinct.len() <= 1, "sent twice: {answered:?}");
    let conflicts = fake.calls_to("getUpdates").iter().filter(|c| c.status == 409).count();
    assert!(conflicts <= 1, "{conflicts} getUpdates conflicts (at most the dead poller's own long poll)");
    assert_ne!(second, first);

    // /status names the live replicas and the lease's holder; the killed one
    // drops out once its last heartbeat is older than the lease.
    wait_until("the killed replica counts as gone", || async { !cluster.live().await.contains(&first) }).await;
    fake.push("message", FakeTelegram::text_message(201, dm.clone(), alice.clone(), "/status", None));
    wait_until("a status card", || async { fake.sent(1001).iter().any(|s| s.text.contains("Replicas")) }).await;
    let status = fake.sent(1001).into_iter().find(|s| s.text.contains("Replicas")).unwrap().text;
    assert!(status.contains(&format!("telegram.poller: held by {second}")), "{status}");
    assert!(!status.contains(&format!("{first}:")), "the killed replica is gone: {status}");
    cluster.finish().await;
}

/// HTTP callbacks and alert webhooks may reach any replica: the same alert
/// posted to all three at once makes one group and one card, and an Ack
/// pressed through a replica that did not post the card updates it.
#[tokio::test]
async fn one_alert_posted_to_three_replicas_is_one_card_and_acks_from_any_replica() {
    let fake = FakeFeishu::start().await;
    let sections = format!(
        "[feishu]\nmode = \"http\"\ndomain = \"{}\"\napp_id = \"{APP_ID}\"\napp_secret_env = \"FEISHU_APP_SECRET\"\n\
         encrypt_key_env = \"FEISHU_ENCRYPT_KEY\"\nverification_token_env = \"FEISHU_VERIFICATION_TOKEN\"\n\
         [alerts.sources.alertmanager]\nauth = \"none\"\n[[alerts.routes]]\nchats = [\"feishu:oc_ops\"]\n",
        fake.url()
    );
    let Some(mut cluster) = Cluster::new("replicas: one alert", sections).await else { return };
    cluster.start_all(3).await;

    let payload = r#"{"version":"4","groupKey":"{}:{alertname=\"DiskFull\"}","status":"firing","receiver":"opsclaw",
        "groupLabels":{"alertname":"DiskFull"},"commonLabels":{"alertname":"DiskFull","severity":"critical"},
        "commonAnnotations":{},"externalURL":"http://am","alerts":[{"status":"firing",
        "labels":{"alertname":"DiskFull","severity":"critical","instance":"db1"},"annotations":{"summary":"disk 95% full"},
        "startsAt":"2026-12-01T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"f1"}]}"#;
    let client = reqwest::Client::new();
    let posts = cluster.addrs.iter().map(|addr| {
        client
            .post(format!("http://{addr}/hooks/alertmanager"))
            .body(payload)
            .header("content-type", "application/json")
            .send()
    });
    for response in futures_util::future::join_all(posts).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    let cards = || {
        fake.calls()
            .into_iter()
            .filter(|c| c.kind == CallKind::Send { chat: "oc_ops".into() } && c.msg_type == "interactive")
            .collect::<Vec<_>>()
    };
    wait_until("the alert card", || async { !cards().is_empty() }).await;
    cluster.quiet().await;
    wait_until("no alert group left to notify", || async {
        cluster.count(&format!("SELECT COUNT(*) FROM {} WHERE dirty = 1", cluster.table("alert_groups"))).await == 0
    })
    .await;
    cluster.quiet().await;
    assert_eq!(cards().len(), 1, "one card for one alert posted three times");
    assert_eq!(cluster.count(&format!("SELECT COUNT(*) FROM {}", cluster.table("alert_groups"))).await, 1);
    assert_eq!(cluster.count(&format!("SELECT COUNT(*) FROM {}", cluster.table("alerts"))).await, 1);

    // Press Ack through a replica other than the one that delivered the card.
    let card = cards().remove(0);
    let sql = format!(
        "SELECT r.name FROM {} o JOIN {} r ON r.id = o.owner WHERE o.card_key LIKE 'alert-group:%' AND o.state = 1 LIMIT 1",
        cluster.table("outbox"),
        cluster.table("replicas")
    );
    let poster: String = sqlx::query(&sql).fetch_one(&cluster.pool).await.unwrap().get("name");
    let other = (Cluster::index(&poster) + 1) % 3;
    let ack = find_button_token(&card.card()).expect("Ack is the card's first button");
    let click = card_click("ev-ack-replica", "oc_ops", &card.message_id, "ou_alice", &ack);
    let callbacks = Callbacks::new(&cluster.addrs[other], ENCRYPT_KEY);
    assert_eq!(callbacks.post(&click, Signing::Valid).await.0, 200);
    wait_until("the card is updated with the ack", || async {
        fake.calls().iter().any(|c| {
            c.kind == CallKind::Patch && c.message_id == card.message_id && c.content.contains("Acknowledged by alice")
        })
    })
    .await;
    cluster.quiet().await;
    assert_eq!(cards().len(), 1, "the ack updated the card in place");
    cluster.finish().await;
}

/// A rolling restart: each replica in turn gets SIGTERM (stops taking
/// events, drains, hands its work and the poller lease back) and starts
/// again, while events keep coming over Telegram and Feishu callbacks
/// (posted to any replica, retried on another when refused, as Feishu
/// does). Every event is answered once; the lease changes hands without a
/// getUpdates conflict storm.
#[tokio::test]
async fn a_rolling_restart_of_all_three_loses_nothing() {
    let feishu = FakeFeishu::start().await;
    let telegram_fake = FakeTelegram::start().await;
    let sections = format!(
        "[feishu]\nmode = \"http\"\ndomain = \"{}\"\napp_id = \"{APP_ID}\"\napp_secret_env = \"FEISHU_APP_SECRET\"\n\
         encrypt_key_env = \"FEISHU_ENCRYPT_KEY\"\nverification_token_env = \"FEISHU_VERIFICATION_TOKEN\"\n\
         [feishu.limits]\nper_chat_per_second = 1000000\nper_chat_burst = 1000000\napp_per_second = 1000000\napp_burst = 1000000\n{}",
        feishu.url(),
        telegram(&telegram_fake)
    );
    let Some(mut cluster) = Cluster::new("replicas: rolling restart", sections).await else { return };
    cluster.start_all(3).await;
    wait_until("one replica polls", || async { cluster.holder("telegram.poller").await.is_some() }).await;

    let mut traffic = Traffic { telegram: &telegram_fake, n_telegram: 0, n_feishu: 0 };
    for round in 0..3 {
        traffic.send(&cluster, 60).await;
        // SIGTERM while events keep coming: the stopping replica takes no more
        // (its callbacks are refused, its poller stops), drains, hands back.
        let stopping = cluster.procs[round].take().expect("replica is running");
        let exit = tokio::spawn(stopping.terminate());
        traffic.send(&cluster, 20).await;
        assert!(exit.await.unwrap().success(), "replica r{round} exits cleanly");
        traffic.send(&cluster, 20).await;
        cluster.start(round).await;
        wait_until("three replicas again", || async { cluster.live().await.len() == 3 }).await;
    }
    let Traffic { n_telegram, n_feishu, .. } = traffic;
    let n_telegram_usize = n_telegram as usize;
    wait_until("every telegram update answered", || async { telegram_fake.sent(1001).len() >= n_telegram_usize }).await;
    wait_until("every feishu event answered", || async { replies_by_parent(&feishu).len() >= n_feishu }).await;
    cluster.quiet().await;
    let mut answered: Vec<String> = telegram_fake.sent(1001).into_iter().map(|s| s.text).collect();
    answered.sort();
    let mut expected: Vec<String> = (1..=n_telegram).map(|n| format!("pong: {n}")).collect();
    expected.sort();
    assert_eq!(answered, expected, "each telegram update answered once");
    let replies = replies_by_parent(&feishu);
    assert_eq!(replies.len(), n_feishu);
    assert!(replies.values().all(|n| *n == 1), "each feishu event answered once: {replies:?}");
    let conflicts = telegram_fake.calls_to("getUpdates").iter().filter(|c| c.status == 409).count();
    assert!(conflicts <= 3, "{conflicts} getUpdates conflicts over three hand-overs");
    cluster.finish().await;
}

/// `/ping` messages over Telegram and Feishu callbacks, numbered as they go.
struct Traffic<'a> {
    telegram: &'a FakeTelegram,
    n_telegram: i64,
    n_feishu: usize,
}

impl Traffic<'_> {
    /// `n` Telegram updates and `n` Feishu callbacks, the callbacks spread
    /// over the running replicas.
    async fn send(&mut self, cluster: &Cluster, n: usize) {
        let alice = FakeTelegram::user(1001, "Alice", Some("alice"));
        let dm = FakeTelegram::private_chat(1001, "Alice");
        for _ in 0..n {
            self.n_telegram += 1;
            let text = format!("/ping {}", self.n_telegram);
            self.telegram
                .push("message", FakeTelegram::text_message(self.n_telegram, dm.clone(), alice.clone(), &text, None));
            let n = self.n_feishu;
            let body = message_event(
                &format!("ev-roll-{n}"),
                &format!("oc_{}", n % 7),
                "group",
                &format!("om_roll{n}"),
                "/ping",
                true,
            );
            post_to_any(cluster, n, &body).await;
            self.n_feishu += 1;
        }
    }
}

/// Posts a callback to replica `pick` (modulo the running ones), and to the
/// next one while it is refused: what Feishu does for a callback without a 200.
async fn post_to_any(cluster: &Cluster, pick: usize, body: &str) {
    let running: Vec<&String> =
        cluster.addrs.iter().zip(&cluster.procs).filter(|(_, p)| p.is_some()).map(|(a, _)| a).collect();
    let deadline = Instant::now() + DEADLINE;
    for attempt in 0.. {
        let addr = running[(pick + attempt) % running.len()];
        if let (200, _) = Callbacks::new(addr, ENCRYPT_KEY).post(body, Signing::Valid).await {
            return;
        }
        assert!(Instant::now() < deadline, "no replica took the callback");
    }
}

/// SIGTERM on a replica whose reply cannot be delivered yet: it stops within
/// `pipeline.shutdown_timeout` and hands the reply back, and another replica
/// delivers it at once (not after the lease time), exactly once.
#[tokio::test]
async fn a_stopping_replica_hands_undelivered_replies_to_another_within_its_deadline() {
    let fake = FakeFeishu::start().await;
    let sections = format!(
        "[feishu]\nmode = \"http\"\ndomain = \"{}\"\napp_id = \"{APP_ID}\"\napp_secret_env = \"FEISHU_APP_SECRET\"\n\
         encrypt_key_env = \"FEISHU_ENCRYPT_KEY\"\nverification_token_env = \"FEISHU_VERIFICATION_TOKEN\"\n\
         [pipeline]\nshutdown_timeout = \"2s\"\nretry_base = \"200ms\"\nretry_max = \"1s\"\nmax_attempts = 100\n",
        fake.url()
    );
    let Some(mut cluster) = Cluster::new("replicas: hand-back on shutdown", sections).await else { return };
    // Long, so that a reply taken over only after the lease would be late.
    cluster.lease = Duration::from_secs(60);
    cluster.start_all(2).await;
    fake.fail_next(1_000_000);
    let body = message_event("ev-hand-back", "oc_ops", "group", "om_hand_back", "/ping", true);
    assert_eq!(Callbacks::new(&cluster.addrs[0], ENCRYPT_KEY).post(&body, Signing::Valid).await.0, 200);
    wait_until("r0 is retrying the reply", || async { fake.refused() >= 2 }).await;

    let stopping = Instant::now();
    cluster.stop(0).await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(2) + Duration::from_secs(5), "stopped after {took:?}");
    fake.fail_next(0);
    let handed_back = Instant::now();
    wait_until("r1 delivers the reply", || async { replies_by_parent(&fake).get("om_hand_back") == Some(&1) }).await;
    assert!(handed_back.elapsed() < cluster.lease / 2, "handed back, not taken after the lease");
    cluster.quiet().await;
    assert_eq!(replies_by_parent(&fake).get("om_hand_back"), Some(&1), "delivered once");
    let sql = format!(
        "SELECT r.name FROM {} o JOIN {} r ON r.id = o.owner",
        cluster.table("outbox"),
        cluster.table("replicas")
    );
    let owner: String = sqlx::query(&sql).fetch_one(&cluster.pool).await.unwrap().get("name");
    assert_eq!(owner, "r1");
    cluster.finish().await;
}
