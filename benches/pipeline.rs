//! Load driver for the event pipeline: events go through the inbox (SQLite
//! by default), the router, the `/ping` handler and the outbox into a sink
//! platform that records when each reply was delivered. Prints events/s,
//! submit-to-delivery latency (p50, p99, max) and peak RSS.
//!
//!     cargo bench --bench pipeline -- [--events N] [--chats N] [--producers N] [--pg URL]
//!
//! It runs the same `app::start` the binary runs; only the platform is a sink.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opsclaw::app;
use opsclaw::clock::Clock;
use opsclaw::config::Config;
use opsclaw::event::{ChatKind, ChatRef, Event, EventId, EventKind, PlatformKind, Sender, UserId};
use opsclaw::platform::{Channels, ChatPlatform, Outbound, PlatformError, Rate, SendLimits, Sent};
use tokio::sync::Notify;

/// Load driver for the event pipeline.
#[derive(clap::Parser)]
struct Args {
    /// Events to push through.
    #[arg(long, default_value_t = 50_000)]
    events: usize,
    /// Distinct chats the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    chats: usize,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 64)]
    producers: usize,
    /// A PostgreSQL URL to run on instead of SQLite.
    #[arg(long)]
    pg: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Records the delivery instant of each event's reply, by event number.
struct Sink {
    delivered_at: Mutex<Vec<Option<Instant>>>,
    n_delivered: AtomicUsize,
    all_done: Notify,
    total: usize,
}

#[async_trait]
impl ChatPlatform for Sink {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Console
    }

    fn limits(&self) -> SendLimits {
        SendLimits { per_chat: Rate { per_second: 1e9, burst: 1_000_000 }, per_group: None, global: None }
    }

    async fn send(&self, msg: &Outbound<'_>) -> Result<Sent, PlatformError> {
        // Keys are `console:bench:<n>#0`.
        let n: usize = msg
            .key
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('#').next())
            .and_then(|n| n.parse().ok())
            .expect("bench keys carry the event number");
        self.delivered_at.lock().unwrap()[n] = Some(Instant::now());
        if self.n_delivered.fetch_add(1, Ordering::SeqCst) + 1 == self.total {
            self.all_done.notify_one();
        }
        Ok(Sent { message_id: None })
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let dir = tempfile::tempdir().unwrap();
    let store = match &args.pg {
        Some(url) => format!("[store]\nurl = \"{url}\"\n"),
        None => String::new(),
    };
    let text = format!(
        "data_dir = \"{}\"\n{store}[access]\nallowed_chats = [\"console:*\"]\n[pipeline]\nshutdown_timeout = \"60s\"\n",
        dir.path().display()
    );
    let config = Config::parse(&text, "bench", dir.path(), &|_| None).expect("bench config is valid");
    let sink = Arc::new(Sink {
        delivered_at: Mutex::new(vec![None; args.events]),
        n_delivered: AtomicUsize::new(0),
        all_done: Notify::new(),
        total: args.events,
    });
    let running =
        app::start(&config, vec![sink.clone()], Channels::default(), Clock::new()).await.expect("pipeline starts");

    let submitted_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; args.events]));
    let started = Instant::now();
    let mut producers = Vec::new();
    for p in 0..args.producers {
        let inbox = running.inbox.clone();
        let submitted_at = submitted_at.clone();
        let (n_events, n_chats, n_producers) = (args.events, args.chats, args.producers);
        producers.push(tokio::spawn(async move {
            for n in (p..n_events).step_by(n_producers) {
                let event = Event {
                    id: EventId::new(PlatformKind::Console, &format!("bench:{n}")),
                    chat: ChatRef::new(PlatformKind::Console, format!("chat{}", n % n_chats)),
                    chat_kind: ChatKind::Direct,
                    sender: Sender { id: UserId::new("bench"), display_name: "bench".into() },
                    message_id: None,
                    thread: None,
                    received_at_ms: 0,
                    kind: EventKind::Message { text: "/ping".into(), mentions_bot: false, quoted: None },
                };
                submitted_at.lock().unwrap()[n] = Some(Instant::now());
                inbox.submit(event).await.expect("event accepted");
            }
        }));
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let accepted_in = started.elapsed();
    if sink.n_delivered.load(Ordering::SeqCst) < args.events {
        tokio::time::timeout(Duration::from_secs(600), sink.all_done.notified()).await.expect("all replies delivered");
    }
    let elapsed = started.elapsed();

    let mut latencies: Vec<Duration> = {
        let submitted = submitted_at.lock().unwrap();
        let delivered = sink.delivered_at.lock().unwrap();
        submitted
            .iter()
            .zip(delivered.iter())
            .map(|(s, d)| d.expect("delivered").duration_since(s.expect("submitted")))
            .collect()
    };
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let backend = if args.pg.is_some() { "postgres" } else { "sqlite" };
    println!("pipeline ({backend}): {} events, {} chats, {} producers", args.events, args.chats, args.producers);
    println!(
        "  accepted (persisted) in {:.2?}: {:.0} events/s",
        accepted_in,
        args.events as f64 / accepted_in.as_secs_f64()
    );
    println!("  replies delivered in {:.2?}: {:.0} events/s", elapsed, args.events as f64 / elapsed.as_secs_f64());
    println!("  submit -> reply delivered: p50 {:.2?}  p99 {:.2?}  max {:.2?}", pct(0.50), pct(0.99), pct(1.0));
    println!("  peak RSS: {:.1} MiB", peak_rss_kib() as f64 / 1024.0);
    running.shutdown(Duration::from_secs(60)).await.expect("clean shutdown");
}
