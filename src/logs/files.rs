//! The `files` backend: globs over plain, rotated and gzip files, searched
//! with ripgrep's crates.
//!
//! Plain files are read backwards in chunks aligned to line starts, so the
//! newest `limit` matches of a common pattern cost one chunk, and a time
//! range stops at the first chunk older than its start. Gzip files (and
//! pipes) cannot be read backwards: they are decompressed forward into the
//! searcher, keeping the newest matches in a ring buffer.
//!
//! Files are read with positioned reads, not memory maps: a log rotated by
//! `copytruncate` while mapped would kill the process with SIGBUS.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkMatch};

use super::config::FilesConfig;
use super::line::{level_of, timestamp_of};
use super::{Found, Level, LogError, LogLine, LogSource, Search};

/// The newest chunk of a plain file is read first and small, so a common
/// pattern answers after one small read; later chunks double up to
/// [`MAX_CHUNK`], so a full scan makes few calls into the searcher.
const FIRST_CHUNK: usize = 1 << 20;
const MAX_CHUNK: usize = 16 << 20;
/// A "line" longer than this is not a log line; the file's older part is
/// skipped with a note rather than read into memory whole.
const LONGEST_LINE: usize = 64 << 20;
/// How much of a file's start is looked at for a NUL byte before searching.
const BINARY_PROBE: usize = 8 << 10;
/// How far back a continuation line's entry start is looked for (a Java
/// stack trace runs to a hundred lines and more).
const ENTRY_LINES: usize = 200;
/// A stored line is cut at this many characters.
pub(super) const MAX_LINE_CHARS: usize = 2000;

/// Searches the files a service's globs match.
pub struct Files {
    config: FilesConfig,
    timeout: Duration,
}

impl Files {
    /// `timeout` bounds each whole search.
    pub fn new(config: FilesConfig, timeout: Duration) -> Self {
        Self { config, timeout }
    }
}

#[async_trait]
impl LogSource for Files {
    fn kind(&self) -> &'static str {
        "files"
    }

    async fn search(&self, search: &Search) -> Result<Found, LogError> {
        let job = Job {
            globs: self.config.paths.clone(),
            tz: self.config.timezone.clone(),
            search: search.clone(),
            matcher: matcher(search.pattern.as_deref())?,
            now_ms: now_ms(),
            cancel: Arc::default(),
            chunks: Chunks { first: FIRST_CHUNK, max: MAX_CHUNK },
        };
        // Set when this future ends in any way (done, timed out, dropped by
        // the caller), so the blocking thread stops at its next check.
        let cancel = CancelOnDrop(job.cancel.clone());
        let task = tokio::task::spawn_blocking(move || job.run());
        let found = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(LogError::Unavailable(format!("the file search failed: {e}"))),
            Err(_) => Err(LogError::Timeout(self.timeout)),
        };
        drop(cancel);
        found
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The user's pattern for the searcher; `None` (or blank): every line.
fn matcher(pattern: Option<&str>) -> Result<Option<RegexMatcher>, LogError> {
    let Some(pattern) = pattern.filter(|p| !p.is_empty()) else { return Ok(None) };
    RegexMatcherBuilder::new()
        .case_insensitive(super::ignores_case(pattern))
        // Lets the searcher look for candidates across many lines at once.
        .line_terminator(Some(b'\n'))
        .build(pattern)
        .map(Some)
        .map_err(|e| LogError::BadPattern(e.to_string()))
}

/// Cuts a line at [`MAX_LINE_CHARS`] characters, marking the cut with `…`.
pub(super) fn capped(text: String) -> String {
    super::cut(text, MAX_LINE_CHARS)
}

/// Chunk sizes for reading a plain file backwards.
#[derive(Clone, Copy)]
struct Chunks {
    first: usize,
    max: usize,
}

/// A file the globs matched.
struct Candidate {
    path: PathBuf,
    name: String,
    mtime_ms: i64,
    regular: bool,
}

/// One search, run on a blocking thread.
struct Job {
    globs: Vec<String>,
    tz: jiff::tz::TimeZone,
    search: Search,
    matcher: Option<RegexMatcher>,
    now_ms: i64,
    cancel: Arc<AtomicBool>,
    chunks: Chunks,
}

/// A kept line with the time it sorts by across files: its own timestamp,
/// or for a line without one the next newer line's (it continues the entry
/// before it), or its file's mtime.
struct Hit {
    key: i64,
    line: LogLine,
}

/// What one line is to the search.
enum Verdict {
    Keep(LogLine),
    /// Stamped before the range: every line before it in the file is too.
    Older,
    /// Stamped after the range: every line after it in the file is too.
    Newer,
    /// Not of the level asked.
    Filtered,
}

/// What one file gave: its kept lines (newest first) and, when something
/// stopped it, a note for the user.
#[derive(Default)]
struct FileResult {
    lines: Vec<LogLine>,
    note: Option<String>,
}

impl FileResult {
    fn binary(name: &str) -> Self {
        tracing::info!(file = name, "log search: binary file skipped");
        Self { lines: Vec::new(), note: Some(format!("{name}: binary file, skipped")) }
    }

    fn failed(name: &str, lines: Vec<LogLine>, e: &io::Error) -> Self {
        tracing::warn!(file = name, error = %e, "log search: file not fully read");
        Self { lines, note: Some(format!("{name}: {e}")) }
    }
}

impl Job {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Matches kept per file and in all: one more than asked tells that
    /// more matched.
    fn want(&self) -> usize {
        self.search.limit.saturating_add(1)
    }

    fn run(&self) -> Found {
        let (mut files, mut notes) = expand(&self.globs);
        // A file last written before the range holds only older lines.
        files.retain(|f| f.mtime_ms >= self.search.from_ms);
        files.sort_by_key(|f| std::cmp::Reverse(f.mtime_ms));
        let want = self.want();
        let mut hits: Vec<Hit> = Vec::new();
        for file in &files {
            if self.cancelled() {
                break;
            }
            // Every line of this file (and of the older ones) is older than
            // the `want` lines already kept.
            if hits.len() >= want && hits[want - 1].key > file.mtime_ms {
                break;
            }
            let result = self.search_file(file);
            notes.extend(result.note);
            hits.extend(keyed(result.lines, file.mtime_ms));
            hits.sort_by_key(|h| std::cmp::Reverse(h.key));
            hits.truncate(want);
        }
        let truncated = hits.len() > self.search.limit;
        hits.truncate(self.search.limit);
        Found { lines: hits.into_iter().map(|h| h.line).collect(), truncated, notes }
    }

    fn search_file(&self, file: &Candidate) -> FileResult {
        let opened = if file.regular {
            File::open(&file.path)
        } else {
            // A pipe: opening it must not wait for a writer.
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&file.path).and_then(blocking)
        };
        let f = match opened {
            Ok(f) => f,
            Err(e) => return FileResult::failed(&file.name, Vec::new(), &e),
        };
        if !file.regular {
            return self.search_stream(CancelRead { inner: f, cancel: &self.cancel }, &file.name);
        }
        let len = match f.metadata() {
            Ok(m) => m.len(),
            Err(e) => return FileResult::failed(&file.name, Vec::new(), &e),
        };
        let mut head = vec![0; BINARY_PROBE.min(usize::try_from(len).unwrap_or(usize::MAX))];
        if let Err(e) = f.read_exact_at(&mut head, 0) {
            return FileResult::failed(&file.name, Vec::new(), &e);
        }
        if head.starts_with(&[0x1f, 0x8b]) {
            let gz = flate2::read::MultiGzDecoder::new(CancelRead { inner: f, cancel: &self.cancel });
            return self.search_stream(gz, &file.name);
        }
        if memchr::memchr(0, &head).is_some() {
            return FileResult::binary(&file.name);
        }
        self.search_plain(&f, len, &file.name)
    }

    /// Reads `file` backwards, chunk by chunk, newest line first.
    fn search_plain(&self, file: &File, len: u64, name: &str) -> FileResult {
        let want = self.want();
        let mut searcher = searcher();
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        let mut end = len;
        let mut size = self.chunks.first;
        while end > 0 && lines.len() < want && !self.cancelled() {
            let (start, skip) = match read_chunk(file, end, size, &mut buf) {
                Ok(at) => at,
                Err(e) => return FileResult::failed(name, lines, &e),
            };
            size = (size * 2).min(self.chunks.max);
            let chunk = &buf[skip..];
            let first = self.first_timestamp(chunk);
            end = start;
            // Timestamps grow down a file: a chunk starting after the
            // range is after it all.
            if first.is_some_and(|t| t > self.search.to_ms) {
                continue;
            }
            let matched = match &self.matcher {
                None => every_line(chunk),
                Some(m) => grep_chunk(&mut searcher, m, chunk),
            };
            let Some(matched) = matched else { return FileResult::binary(name) };
            for range in matched.into_iter().rev() {
                let header = || self.header_timestamp(chunk, range.start);
                match self.judge(&chunk[range.clone()], name, header) {
                    Verdict::Keep(line) => lines.push(line),
                    Verdict::Older => return FileResult { lines, note: None },
                    Verdict::Newer | Verdict::Filtered => {}
                }
                if lines.len() >= want {
                    break;
                }
            }
            if first.is_some_and(|t| t < self.search.from_ms) {
                break;
            }
        }
        FileResult { lines, note: None }
    }

    /// Reads a gzip file or a pipe forward, keeping the newest `want`
    /// matches; stops at the first line after the range.
    fn search_stream(&self, reader: impl Read, name: &str) -> FileResult {
        let all;
        let matcher = match &self.matcher {
            Some(m) => m,
            None => match RegexMatcher::new_line_matcher("") {
                Ok(m) => {
                    all = m;
                    &all
                }
                Err(e) => return FileResult::failed(name, Vec::new(), &io::Error::other(e)),
            },
        };
        let mut sink = StreamSink { job: self, name, ring: Ring::new(self.want()), last_ts: None, binary: false };
        let searched = searcher().search_reader(matcher, reader, &mut sink);
        if sink.binary {
            return FileResult::binary(name);
        }
        let lines = sink.ring.newest_first();
        match searched {
            Ok(()) => FileResult { lines, note: None },
            Err(_) if self.cancelled() => FileResult { lines, note: None },
            Err(e) => FileResult::failed(name, lines, &e),
        }
    }

    /// The timestamp of one of a chunk's first lines (the first few may be
    /// a stack trace's continuation).
    fn first_timestamp(&self, chunk: &[u8]) -> Option<i64> {
        chunk.split(|&c| c == b'\n').take(8).find_map(|line| {
            let head = String::from_utf8_lossy(&line[..line.len().min(1024)]);
            timestamp_of(&head, &self.tz, self.now_ms)
        })
    }

    /// The timestamp of the entry a line at `at` continues: the nearest
    /// stamped line before it in the chunk, at most [`ENTRY_LINES`] back.
    fn header_timestamp(&self, chunk: &[u8], at: usize) -> Option<i64> {
        let mut start = at;
        for _ in 0..ENTRY_LINES {
            let end = start.checked_sub(1)?;
            start = memchr::memrchr(b'\n', &chunk[..end]).map_or(0, |i| i + 1);
            let line = &chunk[start..end.min(start + 1024)];
            if let Some(ts) = timestamp_of(&String::from_utf8_lossy(line), &self.tz, self.now_ms) {
                return Some(ts);
            }
        }
        None
    }

    /// A line without a timestamp (a stack trace's continuation, a wrapped
    /// message) is in the range when the entry it continues is, as told by
    /// `header`; when that is not known (the entry starts out of sight),
    /// it is kept: its file was written during the range, and dropping it
    /// could cut an entry in half.
    fn judge(&self, raw: &[u8], origin: &str, header: impl FnOnce() -> Option<i64>) -> Verdict {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = String::from_utf8_lossy(raw);
        let ts_ms = timestamp_of(&text, &self.tz, self.now_ms);
        match ts_ms.or_else(header) {
            Some(t) if t < self.search.from_ms => return Verdict::Older,
            Some(t) if t > self.search.to_ms => return Verdict::Newer,
            _ => {}
        }
        let level = level_of(&text);
        if !level_passes(level, self.search.level) {
            return Verdict::Filtered;
        }
        Verdict::Keep(LogLine { ts_ms, level, text: capped(text.into_owned()), origin: Some(origin.to_owned()) })
    }
}

/// A `--level` search keeps lines stating that level or a more severe one,
/// and drops lines that state none.
pub(super) fn level_passes(level: Option<Level>, min: Option<Level>) -> bool {
    min.is_none_or(|min| level.is_some_and(|l| l >= min))
}

/// Sort keys for one file's lines, newest first (see [`Hit`]).
fn keyed(lines: Vec<LogLine>, mtime_ms: i64) -> impl Iterator<Item = Hit> {
    let mut carry = mtime_ms;
    lines.into_iter().map(move |line| {
        if let Some(t) = line.ts_ms {
            carry = t;
        }
        Hit { key: carry, line }
    })
}

fn searcher() -> Searcher {
    SearcherBuilder::new().line_number(false).binary_detection(BinaryDetection::quit(0)).build()
}

/// Reads the chunk of `file` that ends at `end` and starts at a line start,
/// about `size` bytes (more when a line is longer). Returns the chunk's
/// offset in the file and where it starts in `buf`.
fn read_chunk(file: &File, end: u64, mut size: usize, buf: &mut Vec<u8>) -> io::Result<(u64, usize)> {
    loop {
        let lo = end.saturating_sub(size as u64);
        buf.resize(usize::try_from(end - lo).map_err(io::Error::other)?, 0);
        file.read_exact_at(buf, lo).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::other("the file shrank while it was read"),
            _ => e,
        })?;
        if lo == 0 {
            return Ok((0, 0));
        }
        // The bytes up to the first newline belong to a line that starts
        // in the previous chunk; a newline that is the last byte ends the
        // chunk's only (partial) line.
        if let Some(i) = memchr::memchr(b'\n', &buf[..buf.len() - 1]) {
            return Ok((lo + i as u64 + 1, i + 1));
        }
        if size >= LONGEST_LINE {
            return Err(io::Error::other("a line longer than 64 MiB; the older part of the file was not read"));
        }
        size *= 2;
    }
}

/// Every non-empty line of a chunk, or `None` if it holds a NUL byte.
fn every_line(chunk: &[u8]) -> Option<Vec<Range<usize>>> {
    if memchr::memchr(0, chunk).is_some() {
        return None;
    }
    let mut lines = Vec::new();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', chunk).chain((chunk.last() != Some(&b'\n')).then_some(chunk.len())) {
        if nl > start {
            lines.push(start..nl);
        }
        start = nl + 1;
    }
    Some(lines)
}

/// The matching lines of a chunk, or `None` if the searcher found binary
/// data (in the chunk's start or in a matching line).
fn grep_chunk(searcher: &mut Searcher, matcher: &RegexMatcher, chunk: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut sink = RangeSink { lines: Vec::new(), binary: false };
    // A slice search does no IO; its only error would be the sink's, and
    // this sink has none.
    searcher.search_slice(matcher, chunk, &mut sink).ok()?;
    (!sink.binary).then_some(sink.lines)
}

struct RangeSink {
    lines: Vec<Range<usize>>,
    binary: bool,
}

impl Sink for RangeSink {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, io::Error> {
        let start = usize::try_from(mat.absolute_byte_offset()).map_err(io::Error::other)?;
        self.lines.push(start..start + mat.bytes().len());
        Ok(true)
    }

    fn binary_data(&mut self, _: &Searcher, _: u64) -> Result<bool, io::Error> {
        self.binary = true;
        Ok(false)
    }
}

/// The newest `cap` items pushed.
struct Ring<T> {
    items: VecDeque<T>,
    cap: usize,
}

impl<T> Ring<T> {
    fn new(cap: usize) -> Self {
        Self { items: VecDeque::with_capacity(cap.min(1024)), cap }
    }

    fn push(&mut self, item: T) {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    fn newest_first(self) -> Vec<T> {
        self.items.into_iter().rev().collect()
    }
}

struct StreamSink<'a> {
    job: &'a Job,
    name: &'a str,
    ring: Ring<LogLine>,
    last_ts: Option<i64>,
    binary: bool,
}

impl Sink for StreamSink<'_> {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, io::Error> {
        if self.job.cancelled() {
            return Ok(false);
        }
        if memchr::memchr(0, mat.bytes()).is_some() {
            self.binary = true;
            return Ok(false);
        }
        // Forward, the entry a continuation belongs to is the last stamped
        // line seen (exact without a pattern, where every line is seen).
        let last = self.last_ts;
        let verdict = self.job.judge(mat.bytes(), self.name, || last);
        if let Verdict::Keep(LogLine { ts_ms: Some(t), .. }) = &verdict {
            self.last_ts = Some(*t);
        }
        match verdict {
            Verdict::Keep(line) => self.ring.push(line),
            Verdict::Newer => return Ok(false),
            Verdict::Older | Verdict::Filtered => {}
        }
        Ok(true)
    }

    fn binary_data(&mut self, _: &Searcher, _: u64) -> Result<bool, io::Error> {
        self.binary = true;
        Ok(false)
    }
}

/// A reader that fails once the search is cancelled, so a long forward
/// read (a big gzip file, a rare pattern) stops between reads.
struct CancelRead<'a, R> {
    inner: R,
    cancel: &'a AtomicBool,
}

impl<R: Read> Read for CancelRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the search was cancelled"));
        }
        self.inner.read(buf)
    }
}

/// Back to blocking reads once a pipe is open: reading it then waits for
/// data, and ends when its writers close (or the search times out).
fn blocking(f: File) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns, with flag arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// The files the globs match: regular files and pipes (following
/// symlinks), each once. A glob that matches none gets a note.
fn expand(globs: &[String]) -> (Vec<Candidate>, Vec<String>) {
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    let mut notes = Vec::new();
    for glob in globs {
        let mut paths = Vec::new();
        if let Err(e) = glob_paths(glob, &mut paths) {
            notes.push(format!("{glob}: {e}"));
            continue;
        }
        let mut matched = false;
        for path in paths {
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    // A dangling symlink, a file gone since the walk.
                    matched = true;
                    let name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy();
                    tracing::warn!(file = %path.display(), error = %e, "log search: file not readable");
                    notes.push(format!("{name}: {e}"));
                    continue;
                }
            };
            if !(meta.is_file() || meta.file_type().is_fifo()) {
                continue;
            }
            matched = true;
            if seen.insert((meta.dev(), meta.ino())) {
                files.push(candidate(path, &meta));
            }
        }
        if !matched {
            notes.push(format!("{glob}: no file matches"));
        }
    }
    (files, notes)
}

fn candidate(path: PathBuf, meta: &Metadata) -> Candidate {
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Candidate { name, mtime_ms, regular: meta.is_file(), path }
}

/// The paths one absolute glob matches, walking only below its literal
/// directory prefix, and only as deep as it reaches (unless it has `**`).
fn glob_paths(glob: &str, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if !glob.starts_with('/') {
        return Err("not an absolute path".into());
    }
    let is_meta = |part: &str| part.contains(['*', '?', '[', '{', '\\']);
    let parts: Vec<&str> = glob.split('/').collect();
    let Some(first_meta) = parts.iter().position(|p| is_meta(p)) else {
        out.push(PathBuf::from(glob));
        return Ok(());
    };
    let base = match parts[..first_meta].join("/") {
        root if root.is_empty() => PathBuf::from("/"),
        dir => PathBuf::from(dir),
    };
    let rest = &parts[first_meta..];
    let depth = (!rest.iter().any(|p| p.contains("**"))).then_some(rest.len());
    let matcher =
        globset::GlobBuilder::new(glob).literal_separator(true).build().map_err(|e| e.to_string())?.compile_matcher();
    walk(&base, depth, &matcher, out);
    Ok(())
}

fn walk(dir: &Path, depth: Option<usize>, glob: &globset::GlobMatcher, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        // Directories are entered only when not symlinks: no loops.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if depth.is_none_or(|d| d > 1) {
                walk(&path, depth.map(|d| d - 1), glob, out);
            }
        } else if glob.is_match(&path) {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(search: Search, chunks: Chunks) -> Job {
        Job {
            globs: Vec::new(),
            tz: jiff::tz::TimeZone::UTC,
            matcher: matcher(search.pattern.as_deref()).unwrap(),
            search,
            now_ms: 0,
            cancel: Arc::default(),
            chunks,
        }
    }

    fn all(limit: usize) -> Search {
        Search { pattern: None, from_ms: i64::MIN, to_ms: i64::MAX, level: None, limit }
    }

    fn texts(result: &FileResult) -> Vec<&str> {
        result.lines.iter().map(|l| l.text.as_str()).collect()
    }

    fn plain(job: &Job, content: &str) -> FileResult {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
        job.search_plain(&f, content.len() as u64, "t.log")
    }

    #[test]
    fn smart_case() {
        assert!(super::super::ignores_case("timeout"));
        assert!(super::super::ignores_case(r"conn\S+ refused\W"));
        assert!(super::super::ignores_case(r"\p{Lu}x"));
        assert!(!super::super::ignores_case("Timeout"));
        assert!(!super::super::ignores_case(r"\p{L}X"));
        assert!(!super::super::ignores_case("ÉCHEC"));
        let m = matcher(Some("timeout")).unwrap().unwrap();
        let found = grep_chunk(&mut searcher(), &m, b"a TIMEOUT\nb\nc timeout\n").unwrap();
        assert_eq!(found.len(), 2);
        let m = matcher(Some("Timeout")).unwrap().unwrap();
        assert!(grep_chunk(&mut searcher(), &m, b"a TIMEOUT\nb timeout\n").unwrap().is_empty());
    }

    #[test]
    fn bad_and_blank_patterns() {
        assert!(matches!(matcher(Some("(unclosed")), Err(LogError::BadPattern(m)) if m.contains("unclosed")));
        assert!(matches!(matcher(Some("")), Ok(None)));
    }

    #[test]
    fn lines_across_chunk_boundaries_are_whole_and_in_order() {
        // Lines of varied length, some longer than a chunk.
        let lines: Vec<String> = (0..300)
            .map(|i| format!("line {i:03} {}", "x".repeat((i * 7) % 23 + if i % 50 == 0 { 40 } else { 0 })))
            .collect();
        let content = lines.join("\n") + "\n";
        for (first, max) in [(1, 1), (5, 16), (16, 16), (64, 1024), (1 << 20, 1 << 20)] {
            let j = job(all(1000), Chunks { first, max });
            let got = plain(&j, &content);
            let want: Vec<&str> = lines.iter().rev().map(String::as_str).collect();
            assert_eq!(texts(&got), want, "chunks {first}/{max}");
            // Without a final newline too.
            let got = plain(&j, content.strip_suffix('\n').unwrap());
            assert_eq!(texts(&got), want, "chunks {first}/{max}, no final newline");
        }
    }

    #[test]
    fn stops_after_limit_plus_one_and_at_the_range_start() {
        let content: String = (0..100).map(|i| format!("2026-12-02T03:04:{:02}Z INFO n{i}\n", i % 60)).collect();
        let j = job(all(3), Chunks { first: 64, max: 64 });
        assert_eq!(
            texts(&plain(&j, &content)),
            [
                "2026-12-02T03:04:39Z INFO n99",
                "2026-12-02T03:04:38Z INFO n98",
                "2026-12-02T03:04:37Z INFO n97",
                "2026-12-02T03:04:36Z INFO n96"
            ]
        );
        let t = |s: u32| 1_796_180_640_000 + i64::from(s) * 1000;
        let mut s = all(100);
        (s.from_ms, s.to_ms) = (t(30), t(33));
        let j = job(s, Chunks { first: 64, max: 64 });
        let got = plain(&j, &content);
        assert_eq!(got.lines.iter().map(|l| l.ts_ms.unwrap()).collect::<Vec<_>>(), [t(33), t(32), t(31), t(30)]);
    }

    #[test]
    fn level_filter_and_continuations() {
        let content = "2026-12-02T03:04:05Z ERROR boom\n    at a.b(C.java:1)\n2026-12-02T03:04:06Z INFO fine\n";
        let j = job(all(10), Chunks { first: 1 << 20, max: 1 << 20 });
        assert_eq!(plain(&j, content).lines.len(), 3);
        let mut s = all(10);
        s.level = Some(Level::Warn);
        let j = job(s, Chunks { first: 1 << 20, max: 1 << 20 });
        assert_eq!(texts(&plain(&j, content)), ["2026-12-02T03:04:05Z ERROR boom"]);
        // The unstamped line goes with its entry: out of the range, then in it.
        let mut s = all(10);
        (s.from_ms, s.to_ms) = (1_796_180_645_500, 1_796_180_647_000);
        let j = job(s, Chunks { first: 1 << 20, max: 1 << 20 });
        assert_eq!(texts(&plain(&j, content)), ["2026-12-02T03:04:06Z INFO fine"]);
        let mut s = all(10);
        (s.from_ms, s.to_ms) = (1_796_180_644_000, 1_796_180_645_500);
        let j = job(s, Chunks { first: 1 << 20, max: 1 << 20 });
        assert_eq!(texts(&plain(&j, content)), ["    at a.b(C.java:1)", "2026-12-02T03:04:05Z ERROR boom"]);
        // Its entry out of sight: kept.
        assert_eq!(texts(&plain(&j, "    at a.b(C.java:1)\n")), ["    at a.b(C.java:1)"]);
    }

    #[test]
    fn ring_keeps_the_newest() {
        let mut r = Ring::new(3);
        for i in 0..10 {
            r.push(i);
        }
        assert_eq!(r.newest_first(), [9, 8, 7]);
        let mut r = Ring::new(5);
        r.push(1);
        assert_eq!(r.newest_first(), [1]);
    }

    #[test]
    fn binary_chunks_are_refused() {
        assert!(every_line(b"a\n\0b\n").is_none());
        let m = matcher(Some("b")).unwrap().unwrap();
        assert!(grep_chunk(&mut searcher(), &m, b"a\n\0b\n").is_none());
    }

    #[test]
    fn long_lines_are_cut() {
        let cut = capped("é".repeat(MAX_LINE_CHARS + 5));
        assert_eq!(cut.chars().count(), MAX_LINE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(capped("short".into()), "short");
    }

    #[test]
    fn globs_walk_below_their_literal_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        for f in ["x.log", "x.log.1", "y.txt", "a/z.log", "a/b/w.log"] {
            std::fs::write(d.join(f), "x\n").unwrap();
        }
        let names = |glob: String| {
            let (files, notes) = expand(&[glob]);
            let mut n: Vec<String> = files.into_iter().map(|f| f.name).collect();
            n.sort();
            (n, notes)
        };
        assert_eq!(names(format!("{}/*.log*", d.display())).0, ["x.log", "x.log.1"]);
        assert_eq!(names(format!("{}/*/*.log", d.display())).0, ["z.log"]);
        assert_eq!(names(format!("{}/**/*.log", d.display())).0, ["w.log", "x.log", "z.log"]);
        assert_eq!(names(format!("{}/x.log", d.display())).0, ["x.log"]);
        let (none, notes) = names(format!("{}/*.gz", d.display()));
        assert!(none.is_empty());
        assert_eq!(notes, [format!("{}/*.gz: no file matches", d.display())]);
        // The same file through two globs is searched once.
        let (files, _) = expand(&[format!("{}/x.log", d.display()), format!("{}/x.*", d.display())]);
        assert_eq!(files.len(), 2);
    }
}
