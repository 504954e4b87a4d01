//! Load driver for Telegram: the real `opsclaw` binary, long polling the fake
//! Bot API from `tests/it` on 127.0.0.1.
//!
//!     cargo bench --bench telegram -- [--updates N] [--chats N] [--rate N]
//!
//! Flood: N `/ping` messages over `--chats` private chats, all queued in the
//! fake at once (the bot takes them in getUpdates batches of up to 100), then
//! every reply awaited (throughput, and push → reply latency). Paced: messages
//! pushed at `--rate` per second for 5 s (latency: push → sendMessage received
//! by the fake). A reply is matched to its message by `reply_parameters`
//! within the chat. Peak RSS is the bot's (`VmHWM`). Send limits are raised in
//! the bot's config so the fake's API, not Telegram's real quota, is what
//! replies run into.

// The fake is shared with the integration tests; this driver uses part of it
// (the fake allows dead code itself).
#[path = "../tests/it/fake_telegram.rs"]
mod fake_telegram;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fake_telegram::{FakeTelegram, TOKEN};
use support::{Bot, percentiles, wait_for};

/// Load driver for Telegram against the fake on 127.0.0.1.
#[derive(clap::Parser)]
struct Args {
    /// Updates in the flood phase.
    #[arg(long, default_value_t = 20_000)]
    updates: usize,
    /// Distinct private chats the updates are spread over.
    #[arg(long, default_value_t = 1_000)]
    chats: usize,
    /// Updates per second in the paced phase (which lasts 5 s).
    #[arg(long, default_value_t = 1_000)]
    rate: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Private chat ids (= user ids) start here.
const FIRST_USER: i64 = 10_000;
/// Paced message ids start here, above any flood message id.
const PACED_IDS: i64 = 1_000_000_000;

fn config(fake: &FakeTelegram) -> String {
    format!(
        "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
         [telegram]\napi_url = \"{}\"\ntoken_env = \"TELEGRAM_BOT_TOKEN\"\npoll_timeout = \"10s\"\n\
         [telegram.limits]\nper_chat_per_second = 1000000\nper_chat_burst = 1000000\n\
         per_group_per_minute = 60000000\nper_group_burst = 1000000\nglobal_per_second = 1000000\nglobal_burst = 1000000\n\
         [access]\nallowed_chats = [\"telegram:*\"]\n",
        fake.url()
    )
}

/// The `/ping` message `message_id` from the user whose private chat is `chat`.
fn ping(chat: i64, message_id: i64) -> serde_json::Value {
    let name = format!("u{chat}");
    FakeTelegram::text_message(
        message_id,
        FakeTelegram::private_chat(chat, &name),
        FakeTelegram::user(chat, &name, None),
        "/ping",
        None,
    )
}

/// Latency of each reply to a message in `pushed` ((chat, message id) → push time),
/// and when the last of them was created.
fn latencies(fake: &FakeTelegram, pushed: &HashMap<(i64, i64), Instant>) -> (Vec<Duration>, Option<Instant>) {
    let mut last = None;
    let latencies = fake
        .all_sent()
        .iter()
        .filter_map(|s| {
            let at = pushed.get(&(s.chat_id, s.reply_to?))?;
            last = last.max(Some(s.at));
            Some(s.at.duration_since(*at))
        })
        .collect::<Vec<_>>();
    (latencies, last)
}

async fn run(args: &Args) {
    let fake = FakeTelegram::start().await;
    // Long polls are held as long as the bot asks (10 s), not the fake's default 2 s.
    fake.set_poll_cap(Duration::from_secs(10));
    let mut bot = Bot::start(&config(&fake), &[("TELEGRAM_BOT_TOKEN", TOKEN)]).await;
    bot.ready().await;
    let chats = args.chats.max(1) as i64;
    let chat_of = |i: usize| FIRST_USER + i as i64 % chats;

    // Flood: everything queued at once.
    let n = args.updates;
    let messages: Vec<(i64, i64, serde_json::Value)> = (0..n)
        .map(|i| {
            let (chat, id) = (chat_of(i), i as i64 + 1);
            (chat, id, ping(chat, id))
        })
        .collect();
    let mut pushed = HashMap::with_capacity(n);
    let polls = fake.n_calls_to("getUpdates");
    let started = Instant::now();
    for (chat, id, message) in messages {
        pushed.insert((chat, id), Instant::now());
        fake.push("message", message);
    }
    let queued = started.elapsed();
    wait_for("every flood reply", Duration::from_secs(600), || fake.n_sent() >= n).await;
    let waited = started.elapsed();
    let (flood, last) = latencies(&fake, &pushed);
    let elapsed = last.map_or(waited, |last| last.duration_since(started));
    println!("telegram long polling: {n} /ping updates over {} private chats, queued at once in {queued:.2?}", chats);
    println!(
        "  {} replies matched, the last after {elapsed:.2?}: {:.0} updates/s",
        flood.len(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!("  push -> reply at the API: {}", percentiles(flood));
    let flood_polls = fake.n_calls_to("getUpdates") - polls;
    println!("  getUpdates calls: {flood_polls} ({:.1} updates per call)", n as f64 / flood_polls.max(1) as f64);

    // Paced: `rate` updates a second, for latency at that load.
    let paced = args.rate * 5;
    let before = fake.n_sent();
    let polls = fake.n_calls_to("getUpdates");
    let mut pushed = HashMap::with_capacity(paced);
    let took = support::paced(paced, args.rate, |i| {
        let (chat, id) = (chat_of(i), PACED_IDS + i as i64);
        let message = ping(chat, id);
        pushed.insert((chat, id), Instant::now());
        fake.push("message", message);
    })
    .await;
    wait_for("every paced reply", Duration::from_secs(600), || fake.n_sent() >= before + paced).await;
    println!(
        "  paced at {} updates/s for {took:.1?}: push -> reply {}",
        args.rate,
        percentiles(latencies(&fake, &pushed).0)
    );
    let paced_polls = fake.n_calls_to("getUpdates") - polls;
    println!("  getUpdates calls: {paced_polls} ({:.1} updates per call)", paced as f64 / paced_polls.max(1) as f64);
    println!("  bot peak RSS: {:.1} MiB", bot.peak_rss_mib());
    bot.child.kill().await.unwrap();
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(&args));
}
