//! Load driver for replicas: one and then three real `opsclaw` processes on
//! one PostgreSQL database, each with its own long connection to the fake
//! Feishu from `tests/it`, which hands every event to one of them.
//!
//!     cargo bench --bench replicas -- [--events N] [--chats N] [--rate N] [--replicas 1,3] [--pg URL]
//!
//! For each replica count, a fresh schema: N `/ping` events pushed as fast as
//! the sockets take them, spread over the connections (throughput: events/s
//! until every reply reached the fake API), then events paced at `--rate`
//! per second (latency: push -> reply). Peak RSS is each replica's (`VmHWM`).
//! The PostgreSQL URL defaults to `OPSCLAW_TEST_PG_URL`.

// The fakes are shared with the integration tests; this driver uses part of them.
#[allow(dead_code)]
#[path = "../tests/it/fake_feishu.rs"]
mod fake_feishu;
#[allow(dead_code)]
#[path = "../tests/it/fake_feishu_ws.rs"]
mod fake_feishu_ws;
#[allow(dead_code)]
#[path = "../tests/it/harness.rs"]
mod harness;
mod support;

use std::time::{Duration, Instant};

use fake_feishu::{APP_ID, APP_SECRET, CallKind, FakeFeishu, message_event};
use support::{Bot, percentiles, reply_latencies, wait_for};

#[derive(clap::Parser)]
struct Args {
    /// Events in the flood phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Distinct chats the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    chats: usize,
    /// Events per second in the paced phase.
    #[arg(long, default_value_t = 2_000)]
    rate: usize,
    /// Replica counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    replicas: Vec<usize>,
    /// PostgreSQL (trust auth); default `OPSCLAW_TEST_PG_URL`.
    #[arg(long)]
    pg: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn config(fake: &FakeFeishu, url: &str, i: usize) -> String {
    format!(
        "data_dir = \"data\"\n[store]\nurl = \"{url}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n[replicas]\nname = \"r{i}\"\n\
         [feishu]\ndomain = \"{}\"\napp_id = \"{APP_ID}\"\napp_secret_env = \"FEISHU_APP_SECRET\"\n\
         [feishu.limits]\nper_chat_per_second = 1000000\nper_chat_burst = 1000000\napp_per_second = 1000000\napp_burst = 1000000\n\
         [access]\nallowed_chats = [\"feishu:*\"]\n",
        fake.url()
    )
}

/// Latency of each reply to `om_<prefix><n>`, from `pushed[n]`.
fn latencies(fake: &FakeFeishu, prefix: &str, pushed: &[Instant]) -> Vec<Duration> {
    let replies = fake.calls().into_iter().filter_map(|c| match c.kind {
        CallKind::Reply { parent, .. } => Some((parent, c.at)),
        _ => None,
    });
    reply_latencies(replies, prefix, pushed)
}

async fn measure(args: &Args, pg: &str, replicas: usize) {
    let (url, schema) = harness::pg_schema(pg).await;
    let fake = FakeFeishu::start().await;
    *fake.ws.client_config.lock().unwrap() =
        serde_json::json!({"PingInterval": 30, "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0});
    let mut bots = Vec::new();
    for i in 0..replicas {
        bots.push(Bot::start(&config(&fake, &url, i), &[("FEISHU_APP_SECRET", APP_SECRET)]).await);
    }
    wait_for("every long connection", Duration::from_secs(60), || fake.ws.live() == replicas).await;

    let n = args.events;
    let event = |prefix: &str, i: usize| {
        message_event(
            &format!("ev-{prefix}{i}"),
            &format!("oc_{}", i % args.chats),
            "group",
            &format!("om_{prefix}{i}"),
            "/ping",
            true,
        )
    };
    let payloads: Vec<String> = (0..n).map(|i| event("f", i)).collect();
    let started = Instant::now();
    let mut pushed = Vec::with_capacity(n);
    for (i, payload) in payloads.iter().enumerate() {
        pushed.push(Instant::now());
        fake.ws.push_via(i, &format!("f{i}"), payload);
    }
    wait_for("every flood reply", Duration::from_secs(900), || fake.n_calls() >= n).await;
    let elapsed = started.elapsed();
    println!(
        "{replicas} replica(s) on PostgreSQL: {n} events over {} chats, pushed as fast as the sockets take them",
        args.chats
    );
    println!("  replies delivered in {elapsed:.2?}: {:.0} events/s", n as f64 / elapsed.as_secs_f64());
    println!("  push -> reply at the API: {}", percentiles(latencies(&fake, "f", &pushed)));

    let paced = (args.rate * 5).min(n);
    let before = fake.n_calls();
    let mut pushed = Vec::with_capacity(paced);
    let took = support::paced(paced, args.rate, |i| {
        let payload = event("p", i);
        pushed.push(Instant::now());
        fake.ws.push_via(i, &format!("p{i}"), &payload);
    })
    .await;
    wait_for("every paced reply", Duration::from_secs(900), || fake.n_calls() >= before + paced).await;
    println!(
        "  paced at {} events/s for {took:.1?}: push -> reply {}",
        args.rate,
        percentiles(latencies(&fake, "p", &pushed))
    );
    let rss: Vec<String> = bots.iter().map(|b| format!("{:.1} MiB", b.peak_rss_mib())).collect();
    println!("  peak RSS per replica: {}", rss.join(", "));
    drop(bots);
    harness::pg_drop_schema(pg, &schema).await;
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let Some(pg) = args.pg.clone().or_else(|| std::env::var("OPSCLAW_TEST_PG_URL").ok()) else {
        eprintln!("replicas bench: needs PostgreSQL: pass --pg URL or set OPSCLAW_TEST_PG_URL");
        std::process::exit(2);
    };
    for &n in &args.replicas {
        measure(&args, &pg, n).await;
    }
}
