//! Driving the real binary: spawn it with piped stdio, feed lines, and wait
//! for output lines with a deadline.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_opsclaw");
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The PostgreSQL URL for tests, or `None` with a note that they are skipped.
pub fn pg_url(test: &str) -> Option<String> {
    match std::env::var("OPSCLAW_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "{test}: skipped: set OPSCLAW_TEST_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/test) to run it against PostgreSQL"
            );
            None
        }
    }
}

/// A fresh schema in the test database; returns a URL whose connections use it.
pub async fn pg_schema(url: &str) -> (String, String) {
    use sqlx::Executor;
    let schema = format!("opsclaw_test_{:x}", rand::random::<u64>());
    let pool = sqlx::PgPool::connect(url).await.expect("PostgreSQL at OPSCLAW_TEST_PG_URL answers");
    pool.execute(format!("CREATE SCHEMA {schema}").as_str()).await.expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}options=-c%20search_path%3D{schema}"), schema)
}

/// `n` stores on one database, as `n` replicas see it: each its own id and pool.
pub async fn pg_replicas(url: &str, n: usize) -> Vec<opsclaw::store::Store> {
    let mut stores = Vec::with_capacity(n);
    for _ in 0..n {
        stores.push(opsclaw::store::Store::connect(url).await.expect("PostgreSQL answers"));
    }
    stores[0].migrate().await.expect("migrations run");
    stores
}

pub async fn pg_drop_schema(url: &str, schema: &str) {
    use sqlx::Executor;
    let pool = sqlx::PgPool::connect(url).await.expect("PostgreSQL answers");
    pool.execute(format!("DROP SCHEMA {schema} CASCADE").as_str()).await.expect("drop schema");
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

/// A running `opsclaw` process.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(args: &[&str], cwd: &Path) -> Self {
        Self::spawn_with_env(args, cwd, &[])
    }

    pub fn spawn_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the opsclaw binary starts");
        let stdout = lines(child.stdout.take().expect("stdout is piped"));
        let stderr = lines(child.stderr.take().expect("stderr is piped"));
        Self { stdin: child.stdin.take(), child, stdout, stderr, seen: Vec::new() }
    }

    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write to opsclaw");
        stdin.flush().await.expect("flush to opsclaw");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a stdout line containing `needle`; returns it.
    pub async fn expect(&mut self, needle: &str) -> String {
        wait_for_line(&mut self.stdout, &mut self.seen, needle, "stdout").await
    }

    /// Waits for a stderr line containing `needle`.
    pub async fn expect_stderr(&mut self, needle: &str) -> String {
        wait_for_line(&mut self.stderr, &mut Vec::new(), needle, "stderr").await
    }

    /// Closes stdin and waits for the process to exit; returns its status and all stdout.
    pub async fn finish(mut self) -> (ExitStatus, Vec<String>) {
        self.close_stdin();
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("opsclaw exits after its input ends")
            .expect("wait for opsclaw");
        while let Some(line) = self.stdout.recv().await {
            self.seen.push(line);
        }
        (status, self.seen)
    }

    /// SIGTERM, then waits for a graceful exit; returns its status.
    pub async fn terminate(mut self) -> ExitStatus {
        self.sigterm_and_wait().await
    }

    async fn sigterm_and_wait(&mut self) -> ExitStatus {
        let pid = self.child.id().expect("opsclaw is running").to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await.expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("opsclaw exits after SIGTERM")
            .expect("wait for opsclaw")
    }

    /// SIGTERM, then waits for a graceful exit; returns what it wrote to
    /// stderr that was not read before.
    pub async fn terminate_with_stderr(mut self) -> String {
        self.sigterm_and_wait().await;
        let mut lines = Vec::new();
        while let Some(line) = self.stderr.recv().await {
            lines.push(line);
        }
        lines.join("\n")
    }

    /// Waits for a process that should stop by itself (a refused start) and
    /// returns its stderr with its exit status; panics if it succeeds.
    pub async fn refused_stderr(mut self) -> String {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("opsclaw stops by itself")
            .expect("wait for opsclaw");
        assert!(!status.success(), "opsclaw should have refused to start");
        let mut lines = Vec::new();
        while let Some(line) = self.stderr.recv().await {
            lines.push(line);
        }
        lines.join("\n")
    }

    /// The address `opsclaw run` logged as its HTTP listener (JSON logs).
    pub async fn http_addr(&mut self) -> String {
        let line = self.expect_stderr("http listening").await;
        let log: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        log["fields"]["addr"].as_str().expect("addr field").to_owned()
    }

    /// SIGKILL: no shutdown, no drain.
    pub async fn kill(mut self) -> Vec<String> {
        self.child.kill().await.expect("kill opsclaw");
        while let Ok(line) = self.stdout.try_recv() {
            self.seen.push(line);
        }
        self.seen
    }
}

async fn wait_for_line(
    lines: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    stream: &str,
) -> String {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.recv().await {
            seen.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        _ => panic!("no {stream} line containing {needle:?}; {stream} so far:\n{}", seen.join("\n")),
    }
}

fn lines(reader: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `opsclaw` with `args`, feeds it `input` and returns its stdout once it exits.
pub async fn run_script(args: &[&str], cwd: &Path, input: &[&str]) -> String {
    let mut proc = Proc::spawn(args, cwd);
    for line in input {
        proc.send(line).await;
    }
    let (status, out) = proc.finish().await;
    assert!(status.success(), "opsclaw exited with {status}; stdout:\n{}", out.join("\n"));
    out.join("\n")
}

/// Polls `condition` every 10 ms until it holds; panics after [`DEADLINE`] with `what`.
pub async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until_within(what, DEADLINE, condition).await;
}

/// [`wait_until`] with its own deadline, for waits longer than [`DEADLINE`].
pub async fn wait_until_within<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        ticks.tick().await;
        if condition().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
    }
}
