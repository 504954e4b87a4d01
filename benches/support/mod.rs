//! What the load drivers share: starting the real `opsclaw` binary on a
//! config, waiting on conditions, percentiles and the bot's peak RSS.

// Each load driver compiles this module and uses part of it.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `opsclaw` binary to run: this build's, or the one `OPSCLAW_BENCH_BIN`
/// names, to compare two commits on one machine with the same driver.
fn binary() -> std::ffi::OsString {
    std::env::var_os("OPSCLAW_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_opsclaw").into())
}

pub struct Bot {
    pub child: Child,
    /// The address the bot logged for its HTTP listener.
    pub http: String,
    _dir: tempfile::TempDir,
}

impl Bot {
    /// Starts `opsclaw run` on `config` (which must have `[http]` and JSON
    /// logs) in a temp directory, with `env` set.
    pub async fn start(config: &str, env: &[(&str, &str)]) -> Bot {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(binary())
            .args(["run", "--config", path.to_str().unwrap()])
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the opsclaw binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut http = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("http listening") {
                let log: serde_json::Value = serde_json::from_str(&line).unwrap();
                http = log["fields"]["addr"].as_str().map(str::to_owned);
                break;
            }
        }
        // Keep draining stderr so the bot never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Bot { child, http: http.expect("the bot logged its HTTP address"), _dir: dir }
    }

    /// The directory the bot runs in (its SQLite file is `data/opsclaw.db` when the config says `data_dir = "data"`).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Polls `GET /readyz` every 5 ms until it answers 200.
    pub async fn ready(&self) {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
        let url = format!("http://{}/readyz", self.http);
        wait_for_async("/readyz", Duration::from_secs(30), || async {
            client.get(&url).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// The bot's peak resident memory (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id().unwrap())).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

/// Checks `condition` every 5 ms; panics after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    wait_for_async(what, limit, || std::future::ready(condition())).await;
}

async fn wait_for_async<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tick.tick().await;
    }
}

/// Calls `push(i)` for `i` in `0..n`, event `i` at `i / rate` seconds,
/// checked every millisecond (coarser slices would measure the driver's own
/// bursts). Returns how long it took.
pub async fn paced(n: usize, rate: usize, mut push: impl FnMut(usize)) -> Duration {
    let mut slice = tokio::time::interval(Duration::from_millis(1));
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        slice.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(n);
        while i < due {
            push(i);
            i += 1;
        }
    }
    started.elapsed()
}

/// How long after `pushed[n]` each reply to `om_<prefix><n>` arrived, from
/// the replies' (parent message, arrival) pairs.
pub fn reply_latencies(
    replies: impl IntoIterator<Item = (String, Instant)>,
    prefix: &str,
    pushed: &[Instant],
) -> Vec<Duration> {
    let prefix = format!("om_{prefix}");
    replies
        .into_iter()
        .filter_map(|(parent, at)| {
            let n: usize = parent.strip_prefix(&prefix)?.parse().ok()?;
            Some(at.duration_since(pushed[n]))
        })
        .collect()
}

pub fn percentiles(mut latencies: Vec<Duration>) -> String {
    if latencies.is_empty() {
        return "no replies matched".to_owned();
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    format!("p50 {:.2?}  p99 {:.2?}  max {:.2?}", pct(0.50), pct(0.99), pct(1.0))
}
