//! The `files` and `journald` log backends as a library: generated logs
//! with rotation (plain, `.1`, `.gz`), binary files, pipes; journalctl
//! stand-in scripts from `tests/it/logs_journalctl/`, and real journal files
//! written by `systemd-journal-remote` when it is installed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, UNIX_EPOCH};

use opsclaw::logs::config::{FilesConfig, JournaldConfig};
use opsclaw::logs::files::Files;
use opsclaw::logs::journald::Journald;
use opsclaw::logs::{Found, Level, LogError, LogSource, Search};

/// 2026-12-02T00:00:00Z.
const T0: i64 = 1_796_169_600_000;
const LINES_PER_FILE: i64 = 1000;

/// Line `i` was written `i` seconds after T0.
fn t(i: i64) -> i64 {
    T0 + i * 1000
}

fn level(i: i64) -> &'static str {
    if i % 10 == 0 {
        "ERROR"
    } else if i % 7 == 0 {
        "WARN"
    } else {
        "INFO"
    }
}

/// Line `i`: an RFC 3339 timestamp, a level, a request number; the rare
/// `needle` on lines 500, 1500 and 2500; every 50th ERROR line has a stack
/// trace line after it, without a timestamp.
fn log_line(i: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(t(i)).unwrap();
    let mut line = format!("{ts} {} req={i} handled in {}ms", level(i), i % 97);
    if i % 1000 == 500 {
        line.push_str(" needle");
    }
    line.push('\n');
    if i % 50 == 0 {
        line.push_str("    at app.handler(handler.rs:42)\n");
    }
    line
}

fn set_mtime(path: &Path, ms: i64) {
    let f = File::options().append(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_millis(ms as u64)).unwrap();
}

/// `app.log.2.gz` (lines 0..1000), `app.log.1` (1000..2000), `app.log`
/// (2000..3000), each with the mtime of its last line.
fn rotated(dir: &Path) {
    let text = |n: i64| (n * LINES_PER_FILE..(n + 1) * LINES_PER_FILE).map(log_line).collect::<String>();
    let gz = dir.join("app.log.2.gz");
    let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(text(0).as_bytes()).unwrap();
    enc.finish().unwrap();
    std::fs::write(dir.join("app.log.1"), text(1)).unwrap();
    std::fs::write(dir.join("app.log"), text(2)).unwrap();
    for (name, last) in [("app.log.2.gz", 999), ("app.log.1", 1999), ("app.log", 2999)] {
        set_mtime(&dir.join(name), t(last));
    }
}

fn files(globs: &[String], timeout: Duration) -> Files {
    Files::new(FilesConfig { paths: globs.to_vec(), timezone: jiff::tz::TimeZone::UTC }, timeout)
}

fn glob(dir: &Path, pattern: &str) -> String {
    format!("{}/{pattern}", dir.display())
}

fn all(limit: usize) -> Search {
    Search { pattern: None, from_ms: T0 - 3_600_000, to_ms: T0 + 86_400_000, level: None, limit }
}

fn with(pattern: &str, limit: usize) -> Search {
    Search { pattern: Some(pattern.into()), ..all(limit) }
}

/// The request numbers of the stamped lines found, in order.
fn reqs(found: &Found) -> Vec<i64> {
    found.lines.iter().filter_map(|l| l.text.split("req=").nth(1)?.split(' ').next()?.parse().ok()).collect()
}

#[tokio::test]
async fn rotated_files_are_searched_newest_first_across_files() {
    let dir = tempfile::tempdir().unwrap();
    rotated(dir.path());
    let logs = files(&[glob(dir.path(), "app.log*")], Duration::from_secs(10));

    let found = logs.search(&with("needle", 10)).await.unwrap();
    assert_eq!(reqs(&found), [2500, 1500, 500]);
    let origins: Vec<_> = found.lines.iter().map(|l| l.origin.as_deref().unwrap()).collect();
    assert_eq!(origins, ["app.log", "app.log.1", "app.log.2.gz"]);
    assert!(!found.truncated && found.notes.is_empty());
    assert_eq!(found.lines[0].ts_ms, Some(t(2500)));
    assert_eq!(found.lines[0].level, Some(Level::Error));

    // A page of the newest lines, and the lines past it.
    let found = logs.search(&all(5)).await.unwrap();
    assert_eq!(reqs(&found), [2999, 2998, 2997, 2996, 2995]);
    assert!(found.truncated);

    // A page that spans two files; the stack trace lines are in place.
    let found = logs.search(&all(1200)).await.unwrap();
    let stamped = reqs(&found);
    assert_eq!(stamped.first(), Some(&2999));
    assert!(stamped.windows(2).all(|w| w[0] == w[1] + 1), "consecutive, newest first");
    assert_eq!(found.lines.len(), 1200);
    let trace = found.lines.iter().position(|l| l.text.starts_with("    at ")).unwrap();
    assert!(
        found.lines[trace + 1].text.contains("req=2950 "),
        "the trace follows its entry: {:?}",
        found.lines[trace + 1]
    );
    assert!(found.truncated);

    // Everything: not truncated; the oldest line comes from the gzip file.
    let total = 3 * LINES_PER_FILE as usize + 60;
    let found = logs.search(&all(total)).await.unwrap();
    assert_eq!((found.lines.len(), found.truncated), (total, false));
    assert_eq!(reqs(&found).last(), Some(&0));
    let found = logs.search(&all(total - 1)).await.unwrap();
    assert!(found.truncated);
}

#[tokio::test]
async fn a_time_range_and_a_level_narrow_the_lines() {
    let dir = tempfile::tempdir().unwrap();
    rotated(dir.path());
    let logs = files(&[glob(dir.path(), "app.log*")], Duration::from_secs(10));

    // Across the boundary of app.log and app.log.1, exact to the ms.
    let range = Search { from_ms: t(1995), to_ms: t(2004), ..all(100) };
    let found = logs.search(&range).await.unwrap();
    assert_eq!(reqs(&found), (1995..=2004).rev().collect::<Vec<_>>());
    // The trace after line 2000 is kept, with its entry.
    assert_eq!(found.lines.len(), 11);
    assert!(!found.truncated);

    // Inside the gzip file: the newer files are searched and give nothing.
    let range = Search { from_ms: t(100), to_ms: t(199), ..all(1000) };
    let found = logs.search(&range).await.unwrap();
    assert_eq!(reqs(&found), (100..=199).rev().collect::<Vec<_>>());
    let limited = logs.search(&Search { limit: 10, ..range.clone() }).await.unwrap();
    assert_eq!(reqs(&limited), (190..=199).rev().collect::<Vec<_>>());
    assert!(limited.truncated);

    // Errors only, then warnings and worse; unstamped trace lines have no level.
    let errors = Search { level: Some(Level::Error), from_ms: t(1900), to_ms: t(2099), ..all(1000) };
    let found = logs.search(&errors).await.unwrap();
    assert_eq!(reqs(&found), (1900..=2099).rev().filter(|i| i % 10 == 0).collect::<Vec<_>>());
    assert!(found.lines.iter().all(|l| l.level == Some(Level::Error)));
    let warns = Search { level: Some(Level::Warn), ..errors };
    let found = logs.search(&warns).await.unwrap();
    assert_eq!(reqs(&found), (1900..=2099).rev().filter(|i| i % 10 == 0 || i % 7 == 0).collect::<Vec<_>>());

    // A pattern and a level: smart case makes `error` match `ERROR`.
    let found = logs.search(&Search { level: Some(Level::Error), ..with("error req=2[0-9]{2}0 ", 3) }).await.unwrap();
    assert_eq!(reqs(&found), [2990, 2980, 2970]);
    assert!(logs.search(&with("Error", 3)).await.unwrap().lines.is_empty(), "an upper-case letter: exact case");
}

#[tokio::test]
async fn files_older_than_the_range_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    rotated(dir.path());
    // Garbage in the rotated file: it would be a note if it were read.
    std::fs::write(dir.path().join("app.log.1"), b"\0\0\0 not a log\n").unwrap();
    set_mtime(&dir.path().join("app.log.1"), t(1999));
    let logs = files(&[glob(dir.path(), "app.log*")], Duration::from_secs(10));
    let found = logs.search(&Search { from_ms: t(2000), ..all(10) }).await.unwrap();
    assert_eq!(reqs(&found).len(), 10);
    assert!(found.notes.is_empty(), "{:?}", found.notes);
}

#[tokio::test]
async fn a_binary_file_is_skipped_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    rotated(dir.path());
    let mut bin = b"2026-12-02T01:00:00Z ERROR needle\n".to_vec();
    bin.extend([0u8, 1, 2, 3, 0xff]);
    std::fs::write(dir.path().join("core.log"), &bin).unwrap();
    // A NUL far from the start, on a matching line.
    let mut late = log_line(2998).into_bytes().repeat(1000);
    late.extend(b"2026-12-02T01:00:00Z ERROR needle \0\n");
    std::fs::write(dir.path().join("late.log"), &late).unwrap();
    let logs = files(&[glob(dir.path(), "*.log*")], Duration::from_secs(10));
    let found = logs.search(&with("needle", 10)).await.unwrap();
    assert_eq!(reqs(&found), [2500, 1500, 500]);
    let mut notes = found.notes.clone();
    notes.sort();
    assert_eq!(notes, ["core.log: binary file, skipped", "late.log: binary file, skipped"]);
}

#[tokio::test]
async fn bad_patterns_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    rotated(dir.path());
    let logs = files(&[glob(dir.path(), "app.log*")], Duration::from_secs(10));
    match logs.search(&with("req=(12", 10)).await {
        Err(LogError::BadPattern(m)) => assert!(m.contains("unclosed"), "{m}"),
        other => panic!("{other:?}"),
    }

    let nothing = glob(dir.path(), "nothing-*.log");
    let elsewhere = "/nonexistent-opsclaw-dir/*.log".to_owned();
    let logs = files(&[nothing.clone(), elsewhere.clone(), glob(dir.path(), "app.log")], Duration::from_secs(10));
    let found = logs.search(&with("needle", 10)).await.unwrap();
    assert_eq!(reqs(&found), [2500]);
    assert_eq!(found.notes, [format!("{nothing}: no file matches"), format!("{elsewhere}: no file matches")]);

    let logs = files(std::slice::from_ref(&nothing), Duration::from_secs(10));
    let found = logs.search(&all(10)).await.unwrap();
    assert!(found.lines.is_empty() && !found.truncated);
    assert_eq!(found.notes, [format!("{nothing}: no file matches")]);
}

#[tokio::test]
async fn a_file_that_cannot_be_read_is_a_note_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    rotated(dir.path());
    // A dangling symlink: matched by name, but nothing to open.
    std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("app.log.0")).unwrap();
    // A directory matched by the glob is not a file.
    std::fs::create_dir(dir.path().join("app.log.d")).unwrap();
    let logs = files(&[glob(dir.path(), "app.log*")], Duration::from_secs(10));
    let found = logs.search(&with("needle", 10)).await.unwrap();
    assert_eq!(reqs(&found), [2500, 1500, 500]);
    assert_eq!(found.notes.len(), 1, "{:?}", found.notes);
    assert!(found.notes[0].starts_with("app.log.0: No such file"), "{:?}", found.notes);
}

#[tokio::test]
async fn a_search_that_cannot_finish_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stuck.log");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Held open for writing and never written: reading it blocks.
    let writer = File::options().read(true).write(true).open(&fifo).unwrap();
    let logs = files(&[glob(dir.path(), "*.log")], Duration::from_millis(200));
    let search = Search { from_ms: 0, to_ms: i64::MAX, ..with("needle", 10) };
    match logs.search(&search).await {
        Err(LogError::Timeout(d)) => assert_eq!(d, Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
    // Its writer gone, the blocked read ends and the cancelled search stops.
    drop(writer);
}

// ---------------------------------------------------------------- journald

fn stand_in(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/logs_journalctl").join(name)
}

fn journald(program: PathBuf, directory: Option<PathBuf>, timeout: Duration) -> Journald {
    Journald::new(JournaldConfig { unit: "app.service".into(), directory, journalctl: program }, timeout)
}

fn range(from_ms: i64, to_ms: i64, limit: usize) -> Search {
    Search { pattern: None, from_ms, to_ms, level: None, limit }
}

#[tokio::test]
async fn journalctl_missing_failing_or_stuck() {
    let j = journald("/nonexistent/journalctl".into(), None, Duration::from_secs(10));
    match j.search(&range(0, 1, 10)).await {
        Err(LogError::Unavailable(m)) => assert!(m.starts_with("journalctl not found"), "{m}"),
        other => panic!("{other:?}"),
    }
    let j = journald(stand_in("fails"), None, Duration::from_secs(10));
    assert_eq!(
        j.search(&range(0, 1, 10)).await,
        Err(LogError::Unavailable("Failed to open /nowhere: No such file or directory".into()))
    );
    let j = journald(stand_in("hang"), None, Duration::from_millis(200));
    assert_eq!(j.search(&range(0, 1, 10)).await, Err(LogError::Timeout(Duration::from_millis(200))));
    assert!(matches!(
        j.search(&Search { pattern: Some("(".into()), ..range(0, 1, 1) }).await,
        Err(LogError::BadPattern(_))
    ));
}

#[tokio::test]
async fn journalctl_output_is_read_and_cut_short() {
    let j = journald(stand_in("garbage"), None, Duration::from_secs(10));
    let found = j.search(&range(0, 2_000_000, 10)).await.unwrap();
    let texts: Vec<_> = found.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["third", "second", "first"]);
    assert_eq!(found.lines[1].origin.as_deref(), Some("app"));
    assert_eq!(found.lines[1].level, Some(Level::Error));
    assert_eq!(found.notes, ["2 line(s) of journalctl's output were not JSON entries, skipped"]);
    assert!(!found.truncated);

    // It never exits: the search stops reading at limit + 1 and kills it.
    let j = journald(stand_in("endless"), None, Duration::from_secs(10));
    let found = j.search(&range(0, 2_000_000, 2)).await.unwrap();
    let texts: Vec<_> = found.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["three", "two"]);
    assert!(found.truncated);
}

/// `systemd-journal-remote`, where Debian puts it (not on the PATH).
fn journal_remote() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("systemd-journal-remote"));
    let known = ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"].map(PathBuf::from);
    on_path.chain(known).find(|p| p.is_file())
}

fn journalctl() -> Option<PathBuf> {
    let found = std::process::Command::new("journalctl").arg("--version").stdout(Stdio::null()).status();
    found.is_ok_and(|s| s.success()).then(|| PathBuf::from("journalctl"))
}

/// One entry in the journal export format; MESSAGE in the binary form
/// (name, newline, 64-bit little-endian length, bytes) when `binary`.
fn export_entry(out: &mut Vec<u8>, us: i64, unit: &str, priority: u8, message: &[u8], binary: bool) {
    let mut field = |name: &str, value: &str| out.extend(format!("{name}={value}\n").as_bytes());
    field("__REALTIME_TIMESTAMP", &us.to_string());
    field("__MONOTONIC_TIMESTAMP", &us.to_string());
    field("_BOOT_ID", "0123456789abcdef0123456789abcdef");
    field("_SYSTEMD_UNIT", unit);
    field("SYSLOG_IDENTIFIER", unit.trim_end_matches(".service"));
    field("PRIORITY", &priority.to_string());
    if binary {
        out.extend(b"MESSAGE\n");
        out.extend((message.len() as u64).to_le_bytes());
        out.extend(message);
        out.push(b'\n');
    } else {
        out.extend(b"MESSAGE=");
        out.extend(message);
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[tokio::test]
async fn real_journal_files_through_journalctl() {
    let (Some(journalctl), Some(remote)) = (journalctl(), journal_remote()) else {
        eprintln!("skipped: needs journalctl and systemd-journal-remote (apt-get install systemd-journal-remote)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Entry i of app.service at T0 + i s + 250 ms, priorities 3, 4, 6, 7 in
    // turn; other.service's entries in between must not show.
    let us = |i: i64| (t(i) + 250) * 1000;
    let mut export = Vec::new();
    for i in 0..60 {
        let priority = [3, 4, 6, 7][i as usize % 4];
        let msg = if i == 42 { "request 42 needle".to_owned() } else { format!("request {i}") };
        export_entry(&mut export, us(i), "app.service", priority, msg.as_bytes(), false);
        export_entry(&mut export, us(i) + 1, "other.service", 3, b"other needle", false);
    }
    export_entry(&mut export, us(60), "app.service", 6, b"raw \x01\xff bytes", true);
    let mut writer = std::process::Command::new(&remote)
        .arg("-o")
        .arg(dir.path().join("x.journal"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writer.stdin.take().unwrap().write_all(&export).unwrap();
    assert!(writer.wait().unwrap().success());

    let j = journald(journalctl, Some(dir.path().to_owned()), Duration::from_secs(20));
    let day = range(T0, T0 + 86_400_000, 3);
    let found = j.search(&day).await.unwrap();
    let texts: Vec<_> = found.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["raw \u{1}\u{fffd} bytes", "request 59", "request 58"]);
    assert!(found.truncated);
    assert_eq!(found.lines[1].ts_ms, Some(t(59) + 250));
    assert_eq!(found.lines[1].origin.as_deref(), Some("app.service"));
    assert_eq!(found.lines[1].level, Some(Level::Debug));

    let found = j.search(&Search { pattern: Some("NEEDLE".into()), ..day.clone() }).await.unwrap();
    assert!(found.lines.is_empty(), "upper case: exact");
    let found = j.search(&Search { pattern: Some("needle".into()), ..day.clone() }).await.unwrap();
    let texts: Vec<_> = found.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["request 42 needle"]);

    // Exact to the ms at both ends, though journalctl is asked in seconds.
    let found = j.search(&range(t(10) + 250, t(12) + 250, 10)).await.unwrap();
    let texts: Vec<_> = found.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["request 12", "request 11", "request 10"]);
    let found = j.search(&range(t(10) + 251, t(12) + 249, 10)).await.unwrap();
    let texts: Vec<_> = found.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["request 11"]);

    // Warnings and worse: priorities 3 and 4.
    let found = j.search(&Search { level: Some(Level::Warn), ..range(T0, T0 + 86_400_000, 100) }).await.unwrap();
    assert_eq!(found.lines.len(), 30);
    assert!(found.lines.iter().all(|l| matches!(l.level, Some(Level::Warn | Level::Error))));
    assert_eq!(found.lines[0].text, "request 57");
}
