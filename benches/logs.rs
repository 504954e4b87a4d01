//! Log search benchmark: the `files` backend over 1 GiB of generated plain
//! log lines in 8 rotated files (`app.log`, `app.log.1` … `app.log.7`, a day
//! each, RFC 3339 timestamps, levels, varied messages, a rare marker on 5
//! lines). Warms up once, then times each case: a rare string (every byte
//! is searched), a common string with limit 20 and 5000 (the newest chunk
//! answers), and a regex (every byte again). Bytes read per search come
//! from /proc/self/io.
//!
//!     cargo bench --bench logs -- [--dir DIR] [--runs 20] [--mib 1024]
//!
//! `--dir` keeps the generated files there and reuses them on the next run.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use opsclaw::logs::config::FilesConfig;
use opsclaw::logs::files::Files;
use opsclaw::logs::{LogSource, Search};

const FILES: usize = 8;
const MARKER: &str = "deadbeef-rare-marker";
/// 2026-11-24T00:00:00Z: the oldest file's first line; each file is a day.
const START_MS: i64 = 1_795_478_400_000;
const DAY_MS: i64 = 86_400_000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Bytes this process has read through read(2) and pread(2) so far.
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// xorshift64*: fast, deterministic, good enough to vary log lines.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PATHS: [&str; 8] = [
    "/api/v1/orders",
    "/api/v1/users",
    "/api/v2/payments",
    "/healthz",
    "/api/v1/cart",
    "/static/app.js",
    "/login",
    "/api/v2/search",
];
const SERVICES: [&str; 5] = ["postgres", "redis", "kafka", "billing", "inventory"];

/// One line at `ms` (second prefix cached in `second`).
fn line(out: &mut Vec<u8>, rng: &mut Rng, ms: i64, second: &mut (i64, String), marker: bool) {
    if second.0 != ms / 1000 {
        let ts = jiff::Timestamp::from_second(ms / 1000).unwrap();
        *second = (ms / 1000, ts.strftime("%Y-%m-%dT%H:%M:%S").to_string());
    }
    let level = match rng.below(100) {
        0..=2 => "ERROR",
        3..=9 => "WARN",
        10..=19 => "DEBUG",
        _ => "INFO",
    };
    let _ = write!(out, "{}.{:03}Z {level} [worker-{}] ", second.1, ms % 1000, rng.below(16));
    let _ = match rng.below(6) {
        0..=2 => write!(
            out,
            "GET {} status={} latency={}ms user=u{} req={:016x}",
            PATHS[rng.below(8) as usize],
            [200, 200, 200, 201, 204, 301, 404, 500, 503][rng.below(9) as usize],
            rng.below(900) + 1,
            rng.below(100_000),
            rng.next()
        ),
        3 => write!(
            out,
            "upstream {} answered in {}ms (pool {}/{})",
            SERVICES[rng.below(5) as usize],
            rng.below(400),
            rng.below(64),
            64
        ),
        4 => write!(
            out,
            "cache {} for key session:{:08x} ttl={}s",
            ["hit", "miss"][rng.below(2) as usize],
            rng.next() as u32,
            rng.below(3600)
        ),
        _ => write!(out, "job {} finished: {} items, {} retries", rng.below(10_000), rng.below(5000), rng.below(4)),
    };
    if marker {
        let _ = write!(out, " {MARKER}");
    }
    out.push(b'\n');
}

/// Writes the 8 files (`mib` MiB in all) unless `dir` holds them already.
fn generate(dir: &Path, mib: u64) -> Vec<PathBuf> {
    let names: Vec<PathBuf> =
        (0..FILES).map(|i| dir.join(if i == 0 { "app.log".to_owned() } else { format!("app.log.{i}") })).collect();
    let done = dir.join(format!(".complete-{mib}"));
    if done.exists() {
        return names;
    }
    let per_file = mib * 1024 * 1024 / FILES as u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Marker lines: file (0 newest), fraction of the way through it.
    let markers: [(usize, f64); 5] = [(0, 0.3), (2, 0.9), (4, 0.5), (7, 0.1), (7, 0.7)];
    let t = Instant::now();
    for (age, path) in names.iter().enumerate().rev() {
        let day_start = START_MS + (FILES - 1 - age) as i64 * DAY_MS;
        // Spread the file's lines over its day.
        let lines_estimate = per_file / 120;
        let step = (DAY_MS / lines_estimate as i64).max(1);
        let mut marks: Vec<u64> =
            markers.iter().filter(|m| m.0 == age).map(|m| (m.1 * per_file as f64) as u64).collect();
        marks.sort();
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
        let (mut written, mut ms, mut second, mut buf) =
            (0u64, day_start, (-1, String::new()), Vec::with_capacity(256));
        while written < per_file {
            let marker = marks.first().is_some_and(|&m| written >= m);
            if marker {
                marks.remove(0);
            }
            buf.clear();
            line(&mut buf, &mut rng, ms, &mut second, marker);
            w.write_all(&buf).unwrap();
            written += buf.len() as u64;
            ms += rng.below(2 * step as u64) as i64;
        }
        let f = w.into_inner().unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_millis(ms as u64)).unwrap();
    }
    std::fs::write(&done, b"").unwrap();
    println!("generated {mib} MiB in {FILES} files in {:.1} s", t.elapsed().as_secs_f64());
    names
}

#[tokio::main]
async fn main() {
    let runs: usize = arg("--runs").map_or(20, |r| r.parse().expect("--runs N"));
    let mib: u64 = arg("--mib").map_or(1024, |m| m.parse().expect("--mib N"));
    let temp = tempfile::tempdir().unwrap();
    let dir = arg("--dir").map_or_else(|| temp.path().to_owned(), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let files = generate(&dir, mib);
    let total: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    println!("corpus: {} files, {:.0} MiB in {}", files.len(), total as f64 / 1048576.0, dir.display());

    let logs = Files::new(
        FilesConfig { paths: vec![format!("{}/app.log*", dir.display())], timezone: jiff::tz::TimeZone::UTC },
        Duration::from_secs(120),
    );
    let search = |pattern: &str, limit: usize| Search {
        pattern: Some(pattern.into()),
        from_ms: START_MS - 1,
        // A day past the newest file's: its last lines run a little past its day.
        to_ms: START_MS + (FILES as i64 + 1) * DAY_MS,
        level: None,
        limit,
    };
    let cases = [
        ("rare string, limit 20", search(MARKER, 20)),
        ("common string, limit 20", search("GET /api/v1/orders", 20)),
        ("common string, limit 5000", search("GET /api/v1/orders", 5000)),
        ("regex, limit 20", search(r"upstream (kafka|redis) answered in 39\d{2}ms", 20)),
    ];
    for (_, case) in &cases {
        logs.search(case).await.unwrap();
    }
    println!("| case | lines | truncated | read per search | median | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for (name, case) in &cases {
        let mut times = Vec::with_capacity(runs);
        let (mut lines, mut truncated, mut read) = (0, false, 0);
        for _ in 0..runs {
            let before = bytes_read();
            let t = Instant::now();
            let found = logs.search(case).await.unwrap();
            times.push(t.elapsed());
            read = bytes_read() - before;
            (lines, truncated) = (found.lines.len(), found.truncated);
        }
        times.sort();
        println!(
            "| {name} | {lines} | {truncated} | {:.1} MiB | {:.1} ms | {:.1} ms | {:.1} ms |",
            read as f64 / 1048576.0,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
        );
    }
}
