//! The executor: one step's process, started from an argv (never a shell)
//! with a cleared environment plus an allow-list, in its own process group
//! so a timeout or a shutdown kills everything it started. stdout and stderr
//! share one pipe, so their lines keep the order a terminal would show.
//! Output is read as it comes, split into lines (long lines cut), and handed
//! to a [`Sink`] that redacts, caps and keeps the tail; nothing here keeps
//! more than one read buffer.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::redact::Redactor;

/// Longest line kept whole; longer ones are cut into pieces of this size.
const MAX_LINE: usize = 4096;
/// After SIGTERM, how long the group has before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// After the step's process exits, how long output still pipes in (from
/// what it left behind, before that is killed too).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    /// The bot is shutting down.
    Cancelled,
    SpawnFailed(String),
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }

    pub fn code(&self) -> Option<i64> {
        match self {
            Exit::Code(c) => Some(i64::from(*c)),
            _ => None,
        }
    }
}

/// Where output lines go.
pub struct Sink<'a> {
    pub redactor: &'a Redactor,
    pub capture: &'a mut Capture,
    /// Called with each redacted line (live progress).
    pub on_line: &'a mut (dyn FnMut(&str) + Send),
}

impl Sink<'_> {
    pub fn raw(&mut self, bytes: &[u8]) {
        self.capture.digest.update(bytes);
    }

    pub fn line(&mut self, line: &str) {
        let line = self.redactor.redact(line);
        (self.on_line)(&line);
        self.capture.push(&line);
    }
}

/// A step's output, capped: the first half of the cap and the last half are
/// kept, with a marker saying how much was left out between them.
#[derive(Debug)]
pub struct Capture {
    cap: usize,
    head: String,
    tail: VecDeque<String>,
    tail_bytes: usize,
    omitted_lines: u64,
    omitted_bytes: u64,
    /// Over everything the steps printed, before redaction.
    pub digest: Sha256,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            head: String::new(),
            tail: VecDeque::new(),
            tail_bytes: 0,
            omitted_lines: 0,
            omitted_bytes: 0,
            digest: Sha256::new(),
        }
    }

    /// Starts the next step: a new cap, the same digest.
    pub fn next_step(&mut self, cap: usize) -> String {
        let text = self.take();
        self.cap = cap;
        text
    }

    fn push(&mut self, line: &str) {
        let len = line.len() + 1;
        if self.tail.is_empty() && self.head.len() + len <= self.cap / 2 {
            self.head.push_str(line);
            self.head.push('\n');
            return;
        }
        self.tail.push_back(line.to_owned());
        self.tail_bytes += len;
        while self.tail_bytes > self.cap - self.cap / 2 {
            let Some(old) = self.tail.pop_front() else { break };
            self.tail_bytes -= old.len() + 1;
            self.omitted_lines += 1;
            self.omitted_bytes += old.len() as u64 + 1;
        }
    }

    /// The kept output, with the marker where lines were left out.
    fn take(&mut self) -> String {
        let mut out = std::mem::take(&mut self.head);
        if self.omitted_lines > 0 {
            out.push_str(&format!(
                "[… {} lines, {} omitted: output over {} …]\n",
                self.omitted_lines,
                human_bytes(self.omitted_bytes),
                human_bytes(self.cap as u64)
            ));
        }
        for line in self.tail.drain(..) {
            out.push_str(&line);
            out.push('\n');
        }
        self.tail_bytes = 0;
        self.omitted_lines = 0;
        self.omitted_bytes = 0;
        out
    }

    /// Everything kept of the last step, and the digest of all steps.
    pub fn finish(mut self) -> (String, String) {
        let text = self.take();
        let digest = self.digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
        (text, digest)
    }
}

pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, mut bytes: &[u8], sink: &mut Sink<'_>) {
        sink.raw(bytes);
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..end]);
            self.emit(sink);
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            self.emit(sink);
            self.partial = rest;
        }
    }

    fn emit(&mut self, sink: &mut Sink<'_>) {
        let line = String::from_utf8_lossy(&self.partial);
        sink.line(line.trim_end_matches('\r'));
        self.partial.clear();
    }

    fn flush(&mut self, sink: &mut Sink<'_>) {
        if !self.partial.is_empty() {
            self.emit(sink);
        }
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: killpg only sends a signal; a group that is gone yields ESRCH, which is fine.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// Runs `command` to its end, its timeout, or `stop`.
pub async fn run(command: &Command, sink: &mut Sink<'_>, stop: &CancellationToken) -> Exit {
    let (reader, writer) = match std::io::pipe() {
        Ok(pair) => pair,
        Err(e) => return Exit::SpawnFailed(format!("cannot create a pipe: {e}")),
    };
    let spawned = {
        let stderr = match writer.try_clone() {
            Ok(w) => w,
            Err(e) => return Exit::SpawnFailed(format!("cannot create a pipe: {e}")),
        };
        let mut cmd = tokio::process::Command::new(&command.argv[0]);
        cmd.args(&command.argv[1..])
            .env_clear()
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&command.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(true);
        cmd.spawn()
        // `cmd` drops here with the parent's copies of the pipe's write end,
        // so the reader sees end of file once the step's processes are gone.
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Exit::SpawnFailed(format!("cannot start `{}`: {e}", command.argv[0])),
    };
    let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return Exit::SpawnFailed("the process ended before it could be watched".into());
    };
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into()) {
        Ok(pipe) => pipe,
        Err(e) => {
            signal_group(pgid, libc::SIGKILL);
            return Exit::SpawnFailed(format!("cannot read the step's output: {e}"));
        }
    };
    let mut lines = Lines::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut status = None;
    let mut eof = false;
    let mut ended: Option<Exit> = None;
    let deadline = Instant::now() + command.timeout;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(86_400 * 365);
    while !(eof && status.is_some()) {
        tokio::select! {
            read = pipe.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => lines.feed(&buf[..n], sink),
            },
            exited = child.wait(), if status.is_none() => {
                status = Some(exited);
                // Whatever the step left running in its group goes with it.
                signal_group(pgid, libc::SIGKILL);
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
            () = tokio::time::sleep_until(deadline), if ended.is_none() && status.is_none() => {
                ended = Some(Exit::TimedOut);
                signal_group(pgid, libc::SIGTERM);
                kill_at = Some(Instant::now() + KILL_GRACE);
            }
            () = stop.cancelled(), if ended.is_none() && status.is_none() => {
                ended = Some(Exit::Cancelled);
                signal_group(pgid, libc::SIGTERM);
                kill_at = Some(Instant::now() + KILL_GRACE);
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or_else(far)), if kill_at.is_some() && status.is_none() => {
                signal_group(pgid, libc::SIGKILL);
                kill_at = None;
            }
            () = tokio::time::sleep_until(drain_until.unwrap_or_else(far)), if drain_until.is_some() && !eof => {
                // A process that left the group still holds the pipe: stop listening to it.
                break;
            }
        }
    }
    lines.flush(sink);
    if let Some(ended) = ended {
        return ended;
    }
    match status {
        Some(Ok(s)) => match (s.code(), s.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(-1),
        },
        Some(Err(e)) => Exit::SpawnFailed(format!("waiting for the step failed: {e}")),
        None => Exit::SpawnFailed("the step's status was lost".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sh(script: &str, timeout: Duration, cap: usize) -> (Exit, String, Vec<String>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let redactor = Redactor::new(["s3cr3t-value".to_owned()]);
            let mut capture = Capture::new(cap);
            let mut live = Vec::new();
            let mut on_line = |l: &str| live.push(l.to_owned());
            let command = Command {
                argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                workdir: std::env::temp_dir(),
                timeout,
            };
            let exit = {
                let mut sink = Sink { redactor: &redactor, capture: &mut capture, on_line: &mut on_line };
                run(&command, &mut sink, &CancellationToken::new()).await
            };
            let (text, _) = capture.finish();
            (exit, text, live)
        })
    }

    #[test]
    fn output_of_both_streams_is_kept_in_order_and_redacted() {
        let (exit, text, live) =
            run_sh("echo one; echo two >&2; echo token s3cr3t-value; exit 3", Duration::from_secs(10), 1024);
        assert_eq!(exit, Exit::Code(3));
        assert_eq!(text, "one\ntwo\ntoken ***\n");
        assert_eq!(live, ["one", "two", "token ***"]);
    }

    #[test]
    fn big_output_is_capped_with_a_marker() {
        let (exit, text, _) =
            run_sh("i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done", Duration::from_secs(30), 200);
        assert_eq!(exit, Exit::Code(0));
        assert!(text.starts_with("line 0\n"), "{text}");
        assert!(text.contains("lines,") && text.contains("omitted"), "{text}");
        assert!(text.ends_with("line 1999\n"), "{text}");
        assert!(text.len() < 400, "{}", text.len());
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let pidfile = std::env::temp_dir().join(format!("opsclaw-exec-{}", rand::random::<u64>()));
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let (exit, _, _) = run_sh(&script, Duration::from_millis(300), 1024);
        assert_eq!(exit, Exit::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        std::fs::remove_file(&pidfile).ok();
        // Gone, or a zombie waiting for its new parent to reap it.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(!alive(), "the background sleep {pid} survived the timeout");
    }

    #[test]
    fn a_missing_program_is_reported() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let exit = rt.block_on(async {
            let redactor = Redactor::new([]);
            let mut capture = Capture::new(100);
            let mut on_line = |_: &str| {};
            let mut sink = Sink { redactor: &redactor, capture: &mut capture, on_line: &mut on_line };
            let command = Command {
                argv: vec!["/nonexistent/tool".into()],
                env: vec![],
                workdir: std::env::temp_dir(),
                timeout: Duration::from_secs(5),
            };
            run(&command, &mut sink, &CancellationToken::new()).await
        });
        assert!(matches!(exit, Exit::SpawnFailed(ref m) if m.contains("/nonexistent/tool")), "{exit:?}");
    }
}
