//! A fake Grafana Loki on 127.0.0.1: `GET /loki/api/v1/query_range` over the
//! entries the test pushed, answering as Loki does. It parses the LogQL it
//! gets (a stream selector `{k="v", k2=~"re", k3!="v", k4!~"re"}`, line
//! filters `|=`, `!=`, `|~`, `!~`, label filters `| k=~"re"` and the like,
//! strings double-quoted with Go's escapes or in backticks) and answers 400
//! with Loki's plain-text `parse error …` for bad syntax, a bad regex or a
//! limit over 5000. `start` is inclusive and `end` exclusive, in ns, as in
//! Loki. Knobs: down (503), slow (hangs until the test releases it), garbage
//! (a 200 that is not JSON), and an Authorization header it requires (401
//! otherwise). Every request is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use regex::Regex;
use serde_json::json;
use tokio::sync::watch;

use super::served::Served;

/// Loki's default `max_entries_limit_per_query`.
const MAX_ENTRIES: usize = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers queries.
    Normal,
    /// 503, as a gateway in front of a Loki that is down.
    Down,
    /// Answers only once the test calls [`FakeLoki::release`].
    Slow,
    /// A 200 that is not JSON.
    Garbage,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub authorization: Option<String>,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
    /// The query parameters.
    pub params: BTreeMap<String, String>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

struct Entry {
    labels: BTreeMap<String, String>,
    ns: i64,
    line: String,
}

struct Shared {
    mode: Mutex<Mode>,
    authorization: Mutex<Option<String>>,
    entries: Mutex<Vec<Entry>>,
    requests: Mutex<Vec<Request>>,
    /// Set when the test lets slow requests answer; cleared by `set_mode`.
    released: watch::Sender<bool>,
}

pub struct FakeLoki {
    served: Served,
    shared: Arc<Shared>,
}

impl FakeLoki {
    pub async fn start() -> FakeLoki {
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Normal),
            authorization: Mutex::new(None),
            entries: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            released: watch::Sender::new(false),
        });
        let app = Router::new().route("/loki/api/v1/query_range", get(query_range)).with_state(shared.clone());
        FakeLoki { served: Served::start(app, "fake Loki").await, shared }
    }

    /// The `url` to configure: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.served.addr)
    }

    /// Adds a line to the stream with these labels, at `ts_ms`.
    pub fn push(&self, labels: &[(&str, &str)], ts_ms: i64, line: &str) {
        self.push_ns(labels, ts_ms * 1_000_000, line);
    }

    /// Adds a line at a nanosecond timestamp.
    pub fn push_ns(&self, labels: &[(&str, &str)], ns: i64, line: &str) {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.shared.entries.lock().unwrap().push(Entry { labels, ns, line: line.to_owned() });
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        self.shared.released.send_replace(false);
    }

    /// From now on, answer 401 unless the request's Authorization is this.
    pub fn require_authorization(&self, value: Option<&str>) {
        *self.shared.authorization.lock().unwrap() = value.map(str::to_owned);
    }

    /// Lets every slow request answer, those waiting and those to come.
    pub fn release(&self) {
        self.shared.released.send_replace(true);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

async fn query_range(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorization = header(header::AUTHORIZATION.as_str());
    shared.requests.lock().unwrap().push(Request {
        authorization: authorization.clone(),
        tenant: header("x-scope-orgid"),
        params: params.clone(),
    });
    let mode = *shared.mode.lock().unwrap();
    match mode {
        Mode::Normal => {}
        Mode::Down => return text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
        Mode::Slow => {
            let mut released = shared.released.subscribe();
            // The sender lives in `shared`, so the wait ends only by a release.
            let _ = released.wait_for(|r| *r).await;
        }
        Mode::Garbage => {
            return (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "<html><body>Grafana</body></html>")
                .into_response();
        }
    }
    let required = shared.authorization.lock().unwrap().clone();
    if required.is_some() && authorization != required {
        return text(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    match answer(&shared, &params) {
        Ok(body) => axum::Json(body).into_response(),
        Err(message) => text(StatusCode::BAD_REQUEST, message),
    }
}

fn answer(shared: &Shared, params: &BTreeMap<String, String>) -> Result<serde_json::Value, String> {
    let query = parse(params.get("query").map(String::as_str).unwrap_or(""))?;
    let limit = match params.get("limit") {
        None => 100,
        Some(l) => l.parse::<usize>().map_err(|_| format!("invalid parameter \"limit\": cannot parse {l:?}"))?,
    };
    if limit == 0 {
        return Err("limit must be a positive value".into());
    }
    if limit > MAX_ENTRIES {
        return Err(format!(
            "max entries limit per query exceeded, limit > max_entries_limit_per_query ({limit} > {MAX_ENTRIES})"
        ));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let ns = |name: &str, default: i64| match params.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| format!("invalid parameter \"{name}\": cannot parse {v:?} to a valid timestamp")),
    };
    let end = ns("end", now)?;
    let start = ns("start", end - 3_600_000_000_000)?;
    if end < start {
        return Err("end timestamp must not be before or equal to start time".into());
    }
    let backward = match params.get("direction").map(String::as_str) {
        None | Some("backward") | Some("BACKWARD") => true,
        Some("forward") | Some("FORWARD") => false,
        Some(other) => return Err(format!("invalid direction {other:?}")),
    };
    let entries = shared.entries.lock().unwrap();
    let mut found: Vec<&Entry> = entries.iter().filter(|e| start <= e.ns && e.ns < end && query.matches(e)).collect();
    found.sort_by_key(|e| e.ns);
    if backward {
        found.reverse();
    }
    found.truncate(limit);
    let mut streams: BTreeMap<&BTreeMap<String, String>, Vec<[String; 2]>> = BTreeMap::new();
    for e in &found {
        streams.entry(&e.labels).or_default().push([e.ns.to_string(), e.line.clone()]);
    }
    let result: Vec<_> =
        streams.into_iter().map(|(labels, values)| json!({ "stream": labels, "values": values })).collect();
    Ok(json!({
        "status": "success",
        "data": {
            "resultType": "streams",
            "result": result,
            "stats": { "summary": { "totalEntriesReturned": found.len() } },
        },
    }))
}

// LogQL, the part this fake understands.

struct LogQuery {
    selector: Vec<Matcher>,
    stages: Vec<Stage>,
}

enum Stage {
    Line { negated: bool, filter: LineFilter },
    Label(Matcher),
}

enum LineFilter {
    Contains(String),
    Regex(Regex),
}

struct Matcher {
    name: String,
    op: MatchOp,
}

enum MatchOp {
    Eq(String),
    Ne(String),
    Re(Regex),
    Nre(Regex),
}

impl Matcher {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        // An absent label matches as the empty string, as in Prometheus.
        let value = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match &self.op {
            MatchOp::Eq(v) => value == v,
            MatchOp::Ne(v) => value != v,
            MatchOp::Re(r) => r.is_match(value),
            MatchOp::Nre(r) => !r.is_match(value),
        }
    }
}

impl LogQuery {
    fn matches(&self, entry: &Entry) -> bool {
        self.selector.iter().all(|m| m.matches(&entry.labels))
            && self.stages.iter().all(|stage| match stage {
                Stage::Line { negated, filter } => {
                    let hit = match filter {
                        LineFilter::Contains(s) => entry.line.contains(s.as_str()),
                        LineFilter::Regex(r) => r.is_match(&entry.line),
                    };
                    hit != *negated
                }
                Stage::Label(m) => m.matches(&entry.labels),
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LBrace,
    RBrace,
    Comma,
    Ident(String),
    Str(String),
    /// `=`, `!=`, `=~`, `!~`, `|=`, `|~`, `|`.
    Op(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::LBrace => "{".into(),
            Token::RBrace => "}".into(),
            Token::Comma => ",".into(),
            Token::Ident(_) => "IDENTIFIER".into(),
            Token::Str(_) => "STRING".into(),
            Token::Op(op) => (*op).into(),
        }
    }
}

fn syntax_error(col: usize, what: &str) -> String {
    format!("parse error at line 1, col {col}: syntax error: {what}")
}

/// (token, 1-based column).
fn lex(query: &str) -> Result<Vec<(Token, usize)>, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        let (token, len) = match chars[i] {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '{' => (Token::LBrace, 1),
            '}' => (Token::RBrace, 1),
            ',' => (Token::Comma, 1),
            '|' if next == Some('=') => (Token::Op("|="), 2),
            '|' if next == Some('~') => (Token::Op("|~"), 2),
            '|' => (Token::Op("|"), 1),
            '!' if next == Some('=') => (Token::Op("!="), 2),
            '!' if next == Some('~') => (Token::Op("!~"), 2),
            '=' if next == Some('~') => (Token::Op("=~"), 2),
            '=' => (Token::Op("="), 1),
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| syntax_error(col, "unterminated raw string"))?;
                (Token::Str(chars[i + 1..i + 1 + end].iter().collect()), end + 2)
            }
            '"' => {
                let (s, len) = go_string(&chars[i..]).map_err(|e| syntax_error(col, &e))?;
                (Token::Str(s), len)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let len = chars[i..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').count();
                (Token::Ident(chars[i..i + len].iter().collect()), len)
            }
            c => return Err(syntax_error(col, &format!("unexpected character {c:?}"))),
        };
        tokens.push((token, col));
        i += len;
    }
    Ok(tokens)
}

/// A double-quoted Go string at the start of `chars`: its value and length.
fn go_string(chars: &[char]) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut i = 1;
    loop {
        match chars.get(i) {
            None | Some('\n') => return Err("unterminated string".into()),
            Some('"') => return Ok((out, i + 1)),
            Some('\\') => {
                let escape = chars.get(i + 1).ok_or("unterminated string")?;
                let simple = match escape {
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    _ => None,
                };
                if let Some(c) = simple {
                    out.push(c);
                    i += 2;
                    continue;
                }
                let digits = match escape {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => return Err(format!("invalid syntax: unknown escape \\{escape}")),
                };
                let hex: String = chars.get(i + 2..i + 2 + digits).ok_or("invalid syntax")?.iter().collect();
                let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).ok_or("invalid syntax")?;
                out.push(c);
                i += 2 + digits;
            }
            Some(c) => {
                out.push(*c);
                i += 1;
            }
        }
    }
}

fn regex(pattern: &str, anchored: bool) -> Result<Regex, String> {
    let source = if anchored { format!("^(?:{pattern})$") } else { pattern.to_owned() };
    Regex::new(&source).map_err(|e| {
        let text = e.to_string();
        let short = text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("invalid").to_owned();
        format!("parse error : error parsing regexp: {}: `{pattern}`", short.trim_start_matches("error: "))
    })
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    /// The column just past the query, for errors at its end.
    end_col: usize,
}

impl Parser {
    fn next(&mut self) -> Option<(Token, usize)> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn unexpected(&self, token: Option<(Token, usize)>, expecting: &str) -> String {
        match token {
            Some((t, col)) => syntax_error(col, &format!("unexpected {}, expecting {expecting}", t.describe())),
            None => syntax_error(self.end_col, &format!("unexpected $end, expecting {expecting}")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some((Token::Str(s), _)) => Ok(s),
            other => Err(self.unexpected(other, "STRING")),
        }
    }

    fn matcher(&mut self, name: String) -> Result<Matcher, String> {
        let op = match self.next() {
            Some((Token::Op(op @ ("=" | "!=" | "=~" | "!~")), _)) => op,
            other => return Err(self.unexpected(other, "= or != or =~ or !~")),
        };
        let value = self.string()?;
        let op = match op {
            "=" => MatchOp::Eq(value),
            "!=" => MatchOp::Ne(value),
            "=~" => MatchOp::Re(regex(&value, true)?),
            _ => MatchOp::Nre(regex(&value, true)?),
        };
        Ok(Matcher { name, op })
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, String> {
        match self.next() {
            Some((Token::LBrace, _)) => {}
            other => return Err(self.unexpected(other, "{")),
        }
        let mut matchers = Vec::new();
        loop {
            match self.next() {
                Some((Token::Ident(name), _)) => matchers.push(self.matcher(name)?),
                other => return Err(self.unexpected(other, "IDENTIFIER")),
            }
            match self.next() {
                Some((Token::Comma, _)) => {}
                Some((Token::RBrace, _)) => return Ok(matchers),
                other => return Err(self.unexpected(other, ", or }")),
            }
        }
    }

    fn stage(&mut self, token: (Token, usize)) -> Result<Stage, String> {
        let line = |negated, regex_filter: bool, value: String| -> Result<Stage, String> {
            let filter =
                if regex_filter { LineFilter::Regex(regex(&value, false)?) } else { LineFilter::Contains(value) };
            Ok(Stage::Line { negated, filter })
        };
        match token.0 {
            Token::Op("|=") => line(false, false, self.string()?),
            Token::Op("!=") => line(true, false, self.string()?),
            Token::Op("|~") => line(false, true, self.string()?),
            Token::Op("!~") => line(true, true, self.string()?),
            Token::Op("|") => match self.next() {
                Some((Token::Ident(name), _)) => Ok(Stage::Label(self.matcher(name)?)),
                other => Err(self.unexpected(other, "IDENTIFIER")),
            },
            _ => Err(self.unexpected(Some(token), "|= or != or |~ or !~ or |")),
        }
    }
}

fn parse(query: &str) -> Result<LogQuery, String> {
    let mut parser = Parser { tokens: lex(query)?, at: 0, end_col: query.chars().count() + 1 };
    let selector = parser.selector()?;
    let mut stages = Vec::new();
    while let Some(token) = parser.next() {
        stages.push(parser.stage(token)?);
    }
    Ok(LogQuery { selector, stages })
}
