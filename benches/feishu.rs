//! Load driver for Feishu: the real `opsclaw` binary against the fake Feishu
//! from `tests/it` on 127.0.0.1.
//!
//!     cargo bench --bench feishu -- [--events N] [--chats N] [--rate N] [--concurrency N] [--only ws|http]
//!
//! Long connection: N `/ping` events pushed as fast as the socket takes them
//! (throughput), then events paced at `--rate` per second (latency: push →
//! reply received by the fake API). HTTP callbacks: N encrypted, signed
//! callbacks posted over `--concurrency` connections (requests/s), replies
//! counted as they reach the fake API. Peak RSS is the bot's (`VmHWM`).
//! Send limits are raised in the bot's config so the fake's API, not Feishu's
//! real quota, is what replies run into.

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

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_feishu::{APP_ID, APP_SECRET, CallKind, Callbacks, FakeFeishu, message_event};
use support::{Bot, percentiles, reply_latencies, wait_for};

/// Load driver for Feishu against the fake on 127.0.0.1.
#[derive(clap::Parser)]
struct Args {
    /// Events (or callbacks) per phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Distinct chats the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    chats: usize,
    /// Events per second in the paced long-connection phase.
    #[arg(long, default_value_t = 5_000)]
    rate: usize,
    /// Concurrent HTTP connections for the callback phase.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Run only one part: `ws` or `http`.
    #[arg(long)]
    only: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn config(fake: &FakeFeishu, mode: &str) -> String {
    format!(
        "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
         [feishu]\nmode = \"{mode}\"\ndomain = \"{}\"\napp_id = \"{APP_ID}\"\napp_secret_env = \"FEISHU_APP_SECRET\"\n\
         encrypt_key_env = \"FEISHU_ENCRYPT_KEY\"\nverification_token_env = \"FEISHU_VERIFICATION_TOKEN\"\n\
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

async fn start_bot(fake: &FakeFeishu, mode: &str) -> Bot {
    let env =
        [("FEISHU_APP_SECRET", APP_SECRET), ("FEISHU_ENCRYPT_KEY", "bench key"), ("FEISHU_VERIFICATION_TOKEN", "vtok")];
    Bot::start(&config(fake, mode), &env).await
}

async fn long_connection(args: &Args) {
    let fake = FakeFeishu::start().await;
    *fake.ws.client_config.lock().unwrap() =
        serde_json::json!({"PingInterval": 30, "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0});
    let mut bot = start_bot(&fake, "long_connection").await;
    wait_for("the long connection", Duration::from_secs(30), || fake.ws.live() == 1).await;

    let n = args.events;
    let payloads: Vec<String> = (0..n)
        .map(|i| {
            message_event(
                &format!("ev-flood-{i}"),
                &format!("oc_{}", i % args.chats),
                "group",
                &format!("om_f{i}"),
                "/ping",
                true,
            )
        })
        .collect();
    let started = Instant::now();
    let mut pushed = Vec::with_capacity(n);
    for (i, payload) in payloads.iter().enumerate() {
        pushed.push(Instant::now());
        fake.ws.push(&format!("f{i}"), payload, 1, false, "event");
    }
    wait_for("every flood reply", Duration::from_secs(600), || fake.n_calls() >= n).await;
    let elapsed = started.elapsed();
    println!("feishu long connection: {n} events, {} chats, pushed as fast as the socket takes them", args.chats);
    println!("  replies delivered in {elapsed:.2?}: {:.0} events/s", n as f64 / elapsed.as_secs_f64());
    println!("  push -> reply at the API: {}", percentiles(latencies(&fake, "f", &pushed)));

    // Paced: `rate` events a second, for latency at that load.
    let paced = (args.rate * 5).min(n);
    let before = fake.n_calls();
    let mut pushed = Vec::with_capacity(paced);
    let took = support::paced(paced, args.rate, |i| {
        let payload = message_event(
            &format!("ev-paced-{i}"),
            &format!("oc_{}", i % args.chats),
            "group",
            &format!("om_p{i}"),
            "/ping",
            true,
        );
        pushed.push(Instant::now());
        fake.ws.push(&format!("p{i}"), &payload, 1, false, "event");
    })
    .await;
    wait_for("every paced reply", Duration::from_secs(600), || fake.n_calls() >= before + paced).await;
    println!(
        "  paced at {} events/s for {took:.1?}: push -> reply {}",
        args.rate,
        percentiles(latencies(&fake, "p", &pushed))
    );
    let acks = fake
        .ws
        .all_acks()
        .iter()
        .filter_map(|a| Some(a.at.duration_since(pushed[a.message_id.strip_prefix('p')?.parse::<usize>().ok()?])))
        .collect();
    println!("  push -> ACK read by the fake: {}", percentiles(acks));
    println!("  bot peak RSS: {:.1} MiB", bot.peak_rss_mib());
    bot.child.kill().await.unwrap();
}

async fn http_callbacks(args: &Args) {
    let fake = FakeFeishu::start().await;
    let mut bot = start_bot(&fake, "http").await;
    bot.ready().await;
    let addr = bot.http.clone();
    let callbacks = Arc::new(Callbacks::new(&addr, "bench key"));
    let n = args.events;
    // Encrypt and sign before the clock starts: the driver should not compete with the bot for CPU.
    let bodies: Vec<(String, String, String, String)> = (0..n)
        .map(|i| {
            let plain = message_event(
                &format!("ev-http-{i}"),
                &format!("oc_{}", i % args.chats),
                "group",
                &format!("om_h{i}"),
                "/ping",
                true,
            );
            callbacks.signed(&plain)
        })
        .collect();
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (bodies, next, callbacks) = (bodies.clone(), next.clone(), callbacks.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some((body, ts, nonce, sig)) = bodies.get(i) else { return };
                let (status, _) = callbacks.post_presigned(body, ts, nonce, sig).await;
                assert_eq!(status, 200, "callback {i}");
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let accepted = started.elapsed();
    wait_for("every callback reply", Duration::from_secs(600), || fake.n_calls() >= n).await;
    let replied = started.elapsed();
    println!(
        "feishu HTTP callbacks (AES-256-CBC + SHA-256 signature): {n} requests over {} connections",
        args.concurrency
    );
    println!("  accepted (200, persisted) in {accepted:.2?}: {:.0} requests/s", n as f64 / accepted.as_secs_f64());
    println!("  replies delivered in {replied:.2?}: {:.0} events/s", n as f64 / replied.as_secs_f64());
    println!("  bot peak RSS: {:.1} MiB", bot.peak_rss_mib());
    bot.child.kill().await.unwrap();
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        if args.only.as_deref() != Some("http") {
            long_connection(&args).await;
        }
        if args.only.as_deref() != Some("ws") {
            http_callbacks(&args).await;
        }
    });
}
