//! Load driver for alert intake: the real `opsclaw` binary on SQLite taking
//! Alertmanager webhooks (payload version 4) on `/hooks/alertmanager`, with
//! its cards going to two chats on the fake Bot API from `tests/it`.
//!
//!     cargo bench --bench alerts -- [--alerts N] [--groups N] [--batch N] [--clients N]
//!
//! Fresh: N alerts with distinct fingerprints, `--batch` per webhook (one
//! group per webhook, as Alertmanager sends them), from `--clients`
//! concurrent senders; alerts/s is N over the time until the last webhook
//! was answered 200 (stored). Repeat: the same webhooks again, as
//! Alertmanager's repeat notifications (deduplicated: nothing new stored).
//! Then the cards the chats got are counted, and the SQLite file is opened to
//! check every alert is stored.

// The fake is shared with the integration tests; this driver uses part of it
// (the fake allows dead code itself).
#[path = "../tests/it/fake_telegram.rs"]
mod fake_telegram;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_telegram::{FakeTelegram, TOKEN};
use serde_json::{Value, json};
use support::{Bot, percentiles, wait_for};

#[derive(clap::Parser)]
struct Args {
    /// Distinct alerts sent.
    #[arg(long, default_value_t = 100_000)]
    alerts: usize,
    /// Alert groups they fall into (Alertmanager group keys).
    #[arg(long, default_value_t = 50)]
    groups: usize,
    /// Alerts per webhook.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const HOOK_TOKEN: &str = "bench-hook-token";
const CHATS: [i64; 2] = [-1001000000001, -1001000000002];

fn config(fake: &FakeTelegram) -> String {
    format!(
        "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
         [telegram]\napi_url = \"{}\"\ntoken_env = \"TELEGRAM_BOT_TOKEN\"\npoll_timeout = \"10s\"\n\
         [telegram.limits]\nper_chat_per_second = 1000000\nper_chat_burst = 1000000\n\
         per_group_per_minute = 60000000\nper_group_burst = 1000000\nglobal_per_second = 1000000\nglobal_burst = 1000000\n\
         [access]\nallowed_chats = [\"telegram:*\"]\n\
         [alerts.sources.alertmanager]\nauth = \"bearer\"\ntoken_env = \"HOOK_TOKEN\"\nmax_body_bytes = 16777216\n\
         [alerts.storm]\nmax_cards_per_chat = 100\n\
         [[alerts.routes]]\nchats = [\"telegram:{}\", \"telegram:{}\"]\n",
        fake.url(),
        CHATS[0],
        CHATS[1]
    )
}

/// The webhook Alertmanager would send for `alerts` (indices) of `group`.
fn webhook(group: usize, alerts: std::ops::Range<usize>) -> String {
    let common = json!({"alertname": format!("HighLatency{group:02}"), "service": format!("svc-{group}"), "severity": if group.is_multiple_of(5) { "critical" } else { "warning" }});
    let alerts: Vec<Value> = alerts
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {
                    "alertname": common["alertname"], "service": common["service"], "severity": common["severity"],
                    "instance": format!("10.0.{}.{}:9100", i / 250 % 250, i % 250), "job": "node", "cluster": "prod-eu-1"
                },
                "annotations": {
                    "summary": format!("p99 latency above 500ms on instance {i}"),
                    "description": "The 99th percentile of request latency has been above 500ms for 5 minutes.",
                    "runbook_url": "https://runbooks.example.com/high-latency"
                },
                "startsAt": "2026-11-22T08:00:00.123456789+08:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=histogram_quantile",
                "fingerprint": format!("{i:016x}")
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": format!("{{}}:{{alertname=\"HighLatency{group:02}\"}}"), "truncatedAlerts": 0,
        "status": "firing", "receiver": "opsclaw", "groupLabels": {"alertname": common["alertname"]},
        "commonLabels": common, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": alerts
    })
    .to_string()
}

/// Posts every body from `clients` senders; returns the time until the last
/// answer and each request's latency.
async fn send_all(url: &str, bodies: Arc<Vec<String>>, clients: usize) -> (Duration, Vec<Duration>) {
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(clients).build().unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, bodies, next, url) = (client.clone(), bodies.clone(), next.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { return latencies };
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(HOOK_TOKEN)
                        .body(body.clone())
                        .send()
                        .await
                        .expect("the bot answers");
                    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (started.elapsed(), latencies)
}

async fn run(args: &Args) {
    let fake = FakeTelegram::start().await;
    let mut bot = Bot::start(&config(&fake), &[("TELEGRAM_BOT_TOKEN", TOKEN), ("HOOK_TOKEN", HOOK_TOKEN)]).await;
    bot.ready().await;
    let url = format!("http://{}/hooks/alertmanager", bot.http);
    let (n, batch, groups) = (args.alerts, args.batch.max(1), args.groups.max(1));
    // Webhook k carries alerts [k*batch, (k+1)*batch) of group k % groups.
    let bodies: Arc<Vec<String>> =
        Arc::new((0..n.div_ceil(batch)).map(|k| webhook(k % groups, k * batch..((k + 1) * batch).min(n))).collect());
    let bytes: usize = bodies.iter().map(String::len).sum();
    println!(
        "alert intake: {n} alerts in {} webhooks of {batch} ({:.0} KiB each), {groups} groups, {} senders, 2 chats",
        bodies.len(),
        bytes as f64 / bodies.len() as f64 / 1024.0,
        args.clients
    );

    let (took, latencies) = send_all(&url, bodies.clone(), args.clients).await;
    println!(
        "  fresh:  {:.0} alerts/s ({took:.2?}); webhook latency {}",
        n as f64 / took.as_secs_f64(),
        percentiles(latencies)
    );
    let (took, latencies) = send_all(&url, bodies, args.clients).await;
    println!(
        "  repeat: {:.0} alerts/s ({took:.2?}); webhook latency {}",
        n as f64 / took.as_secs_f64(),
        percentiles(latencies)
    );

    // Cards: each group posted once per chat, then edited; superseded updates are skipped.
    let expected = groups.min(n.div_ceil(batch)) * CHATS.len();
    wait_for("a card per group per chat", Duration::from_secs(120), || fake.n_sent() >= expected).await;
    let settle = Instant::now();
    let mut last = (fake.n_calls_to("editMessageText"), Instant::now());
    // Card updates have stopped when no edit arrived for a second.
    while last.1.elapsed() < Duration::from_secs(1) && settle.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let edits = fake.n_calls_to("editMessageText");
        if edits != last.0 {
            last = (edits, Instant::now());
        }
    }
    println!("  cards: {} posted ({expected} groups x chats), {} edits in place", fake.n_sent(), last.0);
    println!("  bot peak RSS: {:.1} MiB", bot.peak_rss_mib());
    bot.child.kill().await.unwrap();
    bot.child.wait().await.unwrap();

    let db = format!("sqlite://{}?mode=ro", bot.dir().join("data/opsclaw.db").display());
    let store = opsclaw::store::Store::connect(&db).await.unwrap();
    let stored = store.count_alerts().await.unwrap();
    println!("  stored alerts: {stored} (of {n} distinct)");
    assert_eq!(stored as usize, n, "every alert is stored");
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(&args));
}
