//! A fake Elasticsearch on 127.0.0.1: `POST /{target}/_search` over the
//! documents the test indexed, answering as Elasticsearch does. The target
//! is a comma-separated list of index names and patterns with `*`; an
//! unknown name is a 404 `index_not_found_exception`, a pattern matching
//! nothing is an empty answer. Queries: `bool` (`filter`, `must`, `should`,
//! `must_not`), `range` (epoch ms or RFC 3339 bounds), `term`, `terms`
//! (exact values, as on a keyword field), `match_all` and a small
//! `query_string` (terms and their tokens, `field:value`, quoted phrases,
//! `AND`/`OR`/`NOT`, parentheses, a trailing `*`, `default_operator`),
//! whose syntax errors are Elasticsearch's 400. `sort` by a date field,
//! `size`, `_source` filtering. Knobs: down (503), slow (hangs until the
//! test releases it), garbage (a 200 that is not JSON), a failed shard, and
//! an Authorization header it requires (401 otherwise). Every request is
//! recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::served::Served;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Answers searches.
    Normal,
    /// 503, as a cluster without a master.
    Down,
    /// Answers only once the test calls [`FakeElastic::release`].
    Slow,
    /// A 200 that is not JSON.
    Garbage,
    /// Answers, with one more shard that failed for this reason.
    ShardFailure(String),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub authorization: Option<String>,
    /// The target in the path: `logs-*`, `a,b`.
    pub target: String,
    /// The body, `Null` when it was not JSON.
    pub body: Value,
}

struct Shared {
    mode: Mutex<Mode>,
    authorization: Mutex<Option<String>>,
    indices: Mutex<BTreeMap<String, Vec<Value>>>,
    requests: Mutex<Vec<Request>>,
    /// Set when the test lets slow requests answer; cleared by `set_mode`.
    released: watch::Sender<bool>,
}

pub struct FakeElastic {
    served: Served,
    shared: Arc<Shared>,
}

impl FakeElastic {
    pub async fn start() -> FakeElastic {
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Normal),
            authorization: Mutex::new(None),
            indices: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(Vec::new()),
            released: watch::Sender::new(false),
        });
        let app = Router::new().route("/{target}/_search", post(search)).with_state(shared.clone());
        FakeElastic { served: Served::start(app, "fake Elasticsearch").await, shared }
    }

    /// The `url` to configure: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.served.addr)
    }

    /// Adds a document to the index `name`, creating it.
    pub fn index(&self, name: &str, doc: Value) {
        self.shared.indices.lock().unwrap().entry(name.to_owned()).or_default().push(doc);
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

/// An error answer in Elasticsearch's shape: `{"error":{"root_cause":[…],"type","reason"},"status"}`.
struct EsError {
    status: StatusCode,
    kind: &'static str,
    reason: String,
    /// The root cause when it differs from the error itself.
    root: Option<(&'static str, String)>,
}

impl IntoResponse for EsError {
    fn into_response(self) -> Response {
        let (root_kind, root_reason) = self.root.unwrap_or((self.kind, self.reason.clone()));
        let body = json!({
            "error": {
                "root_cause": [{ "type": root_kind, "reason": root_reason }],
                "type": self.kind,
                "reason": self.reason,
            },
            "status": self.status.as_u16(),
        });
        (self.status, axum::Json(body)).into_response()
    }
}

fn error(status: StatusCode, kind: &'static str, reason: String) -> EsError {
    EsError { status, kind, reason, root: None }
}

fn bad_request(reason: String) -> EsError {
    error(StatusCode::BAD_REQUEST, "parsing_exception", reason)
}

async fn search(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let parsed = serde_json::from_str::<Value>(&body);
    shared.requests.lock().unwrap().push(Request {
        authorization: authorization.clone(),
        target: target.clone(),
        body: parsed.as_ref().cloned().unwrap_or(Value::Null),
    });
    let mode = shared.mode.lock().unwrap().clone();
    match mode {
        Mode::Normal | Mode::ShardFailure(_) => {}
        Mode::Down => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "master_not_discovered_exception", "no master".into())
                .into_response();
        }
        Mode::Slow => {
            let mut released = shared.released.subscribe();
            // The sender lives in `shared`, so the wait ends only by a release.
            let _ = released.wait_for(|r| *r).await;
        }
        Mode::Garbage => {
            return (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "<html>Kibana</html>").into_response();
        }
    }
    let required = shared.authorization.lock().unwrap().clone();
    if required.is_some() && authorization != required {
        let reason = format!("missing authentication credentials for REST request [/{target}/_search]");
        let mut response = error(StatusCode::UNAUTHORIZED, "security_exception", reason).into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Basic realm=\"security\" charset=\"UTF-8\"".parse().unwrap());
        return response;
    }
    let Ok(body) = parsed else {
        return bad_request("request body is required and must be JSON".into()).into_response();
    };
    let indices = shared.indices.lock().unwrap();
    let names = match resolve(&indices, &target) {
        Ok(names) => names,
        Err(missing) => {
            let reason = format!("no such index [{missing}]");
            return error(StatusCode::NOT_FOUND, "index_not_found_exception", reason).into_response();
        }
    };
    let request = match SearchRequest::parse(&body) {
        Ok(r) => r,
        Err(error) => return error.into_response(),
    };
    let mut hits: Vec<(&str, usize, &Value)> = names
        .iter()
        .flat_map(|name| indices[*name].iter().enumerate().map(move |(i, doc)| (*name, i, doc)))
        .filter(|(_, _, doc)| request.query.matches(doc))
        .collect();
    if let Some((field, descending)) = &request.sort {
        // Documents without the field sort last either way, as with unmapped_type.
        hits.sort_by_key(|(_, _, doc)| {
            let ms = lookup(doc, field).and_then(date_ms);
            (ms.is_none(), ms.map(|m| if *descending { -m } else { m }))
        });
    }
    let total = names.len() + usize::from(matches!(mode, Mode::ShardFailure(_)));
    let mut shards = json!({ "total": total, "successful": names.len(), "skipped": 0, "failed": 0 });
    if let Mode::ShardFailure(reason) = &mode {
        shards["failed"] = json!(1);
        shards["failures"] = json!([{ "shard": 0, "index": "broken", "node": "fake", "reason": { "type": "exception", "reason": reason } }]);
    }
    let hits: Vec<Value> = hits
        .into_iter()
        .take(request.size)
        .map(|(index, i, doc)| {
            let sort = request.sort.as_ref().and_then(|(field, _)| lookup(doc, field)).and_then(date_ms);
            json!({
                "_index": index,
                "_id": format!("{index}-{i}"),
                "_score": null,
                "_source": request.source.as_ref().map_or_else(|| doc.clone(), |fields| select(doc, fields, "")),
                "sort": sort.map_or_else(Vec::new, |s| vec![json!(s)]),
            })
        })
        .collect();
    axum::Json(json!({ "took": 1, "timed_out": false, "_shards": shards, "hits": { "max_score": null, "hits": hits } }))
        .into_response()
}

/// The indices a target names; `Err` names an index that does not exist.
fn resolve<'a>(indices: &'a BTreeMap<String, Vec<Value>>, target: &str) -> Result<Vec<&'a str>, String> {
    let mut names = Vec::new();
    for part in target.split(',') {
        if part.contains('*') {
            names.extend(indices.keys().filter(|name| glob(part, name)).map(String::as_str));
        } else if let Some((name, _)) = indices.get_key_value(part) {
            names.push(name.as_str());
        } else {
            return Err(part.to_owned());
        }
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => name.strip_prefix(head).is_some_and(|tail| {
            tail.char_indices().map(|(i, _)| i).chain([tail.len()]).any(|i| glob(rest, &tail[i..]))
        }),
    }
}

struct SearchRequest {
    query: EsQuery,
    size: usize,
    /// (field, descending)
    sort: Option<(String, bool)>,
    source: Option<Vec<String>>,
}

impl SearchRequest {
    fn parse(body: &Value) -> Result<SearchRequest, EsError> {
        let size = match &body["size"] {
            Value::Null => 10,
            v => v.as_u64().ok_or_else(|| bad_request(format!("[size] must be a number, got {v}")))? as usize,
        };
        if size > 10_000 {
            let reason = format!(
                "Result window is too large, from + size must be less than or equal to: [10000] but was [{size}]"
            );
            return Err(error(StatusCode::BAD_REQUEST, "illegal_argument_exception", reason));
        }
        let query = match body.get("query") {
            None => EsQuery::MatchAll,
            Some(q) => EsQuery::parse(q)?,
        };
        Ok(SearchRequest { query, size, sort: sort(&body["sort"])?, source: source(&body["_source"])? })
    }
}

fn sort(value: &Value) -> Result<Option<(String, bool)>, EsError> {
    let first = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => match items.first() {
            None => return Ok(None),
            Some(first) => first,
        },
        other => other,
    };
    match first {
        Value::String(field) => Ok(Some((field.clone(), false))),
        Value::Object(map) if map.len() == 1 => {
            let (field, how) = map.iter().next().unwrap();
            let order = how.as_str().or_else(|| how["order"].as_str()).unwrap_or("asc");
            match order {
                "asc" | "desc" => Ok(Some((field.clone(), order == "desc"))),
                other => Err(bad_request(format!("[sort] unknown order [{other}]"))),
            }
        }
        other => Err(bad_request(format!("[sort] malformed: {other}"))),
    }
}

fn source(value: &Value) -> Result<Option<Vec<String>>, EsError> {
    match value {
        Value::Null | Value::Bool(true) => Ok(None),
        Value::Bool(false) => Ok(Some(Vec::new())),
        Value::String(field) => Ok(Some(vec![field.clone()])),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| bad_request("[_source] takes field names".into())))
            .collect::<Result<_, _>>()
            .map(Some),
        other => Err(bad_request(format!("[_source] malformed: {other}"))),
    }
}

/// The parts of `doc` that `fields` name, nested or flat keys alike.
fn select(doc: &Value, fields: &[String], prefix: &str) -> Value {
    let Some(object) = doc.as_object() else { return doc.clone() };
    let mut out = Map::new();
    for (key, value) in object {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if fields.iter().any(|f| *f == path || path.starts_with(&format!("{f}."))) {
            out.insert(key.clone(), value.clone());
        } else if value.is_object() && fields.iter().any(|f| f.starts_with(&format!("{path}."))) {
            out.insert(key.clone(), select(value, fields, &path));
        }
    }
    Value::Object(out)
}

/// A dotted field, nested or flat.
fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let object = doc.as_object()?;
    if let Some(value) = object.get(path) {
        return Some(value);
    }
    path.match_indices('.').find_map(|(i, _)| lookup(object.get(&path[..i])?, &path[i + 1..]))
}

/// A date field's value in epoch ms: a number, or an RFC 3339 string (UTC without an offset).
fn date_ms(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).ok().or_else(|| {
            let civil = s.parse::<jiff::civil::DateTime>().ok()?;
            Some(civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_millisecond())
        }),
        _ => None,
    }
}

/// The values of a field as strings: each element of an array.
fn values(doc: &Value, field: &str) -> Vec<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    match lookup(doc, field) {
        Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(v) => scalar(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Every string leaf, for a query_string without a field.
fn all_strings(doc: &Value, out: &mut Vec<String>) {
    match doc {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| all_strings(i, out)),
        Value::Object(map) => map.values().for_each(|v| all_strings(v, out)),
        _ => {}
    }
}

/// The standard analyzer, roughly: lower-cased runs of letters and digits.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

enum EsQuery {
    MatchAll,
    Bool { filter: Vec<EsQuery>, must: Vec<EsQuery>, should: Vec<EsQuery>, must_not: Vec<EsQuery> },
    Range { field: String, gte: Option<i64>, lte: Option<i64>, gt: Option<i64>, lt: Option<i64> },
    Terms { field: String, values: Vec<String> },
    QueryString { expr: Expr, default_field: Option<String> },
}

impl EsQuery {
    fn parse(value: &Value) -> Result<EsQuery, EsError> {
        let Some((kind, body)) = value.as_object().filter(|m| m.len() == 1).and_then(|m| m.iter().next()) else {
            return Err(bad_request(format!("query malformed, must be an object of one key: {value}")));
        };
        match kind.as_str() {
            "match_all" => Ok(EsQuery::MatchAll),
            "bool" => {
                let clauses = |name: &str| -> Result<Vec<EsQuery>, EsError> {
                    match &body[name] {
                        Value::Null => Ok(Vec::new()),
                        Value::Array(items) => items.iter().map(EsQuery::parse).collect(),
                        one => Ok(vec![EsQuery::parse(one)?]),
                    }
                };
                Ok(EsQuery::Bool {
                    filter: clauses("filter")?,
                    must: clauses("must")?,
                    should: clauses("should")?,
                    must_not: clauses("must_not")?,
                })
            }
            "range" => {
                let (field, bounds) = single(body, "range")?;
                let epoch = bounds["format"].as_str() == Some("epoch_millis");
                let bound = |name: &str| -> Result<Option<i64>, EsError> {
                    let v = &bounds[name];
                    if v.is_null() {
                        return Ok(None);
                    }
                    let ms = if epoch { v.as_i64().or_else(|| v.as_str()?.parse().ok()) } else { date_ms(v) };
                    ms.map(Some).ok_or_else(|| bad_request(format!("failed to parse date field [{v}]")))
                };
                Ok(EsQuery::Range { field, gte: bound("gte")?, lte: bound("lte")?, gt: bound("gt")?, lt: bound("lt")? })
            }
            "term" => {
                let (field, v) = single(body, "term")?;
                let v = v.get("value").unwrap_or(&v);
                Ok(EsQuery::Terms { field, values: vec![v.as_str().map_or_else(|| v.to_string(), str::to_owned)] })
            }
            "terms" => {
                let (field, v) = single(body, "terms")?;
                let values =
                    v.as_array().ok_or_else(|| bad_request("[terms] query requires an array of values".into()))?;
                let values = values.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect();
                Ok(EsQuery::Terms { field, values })
            }
            "query_string" => {
                let query =
                    body["query"].as_str().ok_or_else(|| bad_request("[query_string] requires query".into()))?;
                let and = match body["default_operator"].as_str().map(str::to_ascii_uppercase).as_deref() {
                    None | Some("OR") => false,
                    Some("AND") => true,
                    Some(other) => {
                        return Err(bad_request(format!("[query_string] unknown default_operator [{other}]")));
                    }
                };
                let expr = QueryParser::parse(query, and).map_err(|()| EsError {
                    status: StatusCode::BAD_REQUEST,
                    kind: "search_phase_execution_exception",
                    reason: "all shards failed".into(),
                    root: Some(("query_shard_exception", format!("Failed to parse query [{query}]"))),
                })?;
                Ok(EsQuery::QueryString { expr, default_field: body["default_field"].as_str().map(str::to_owned) })
            }
            other => Err(bad_request(format!("unknown query [{other}]"))),
        }
    }

    fn matches(&self, doc: &Value) -> bool {
        match self {
            EsQuery::MatchAll => true,
            EsQuery::Bool { filter, must, should, must_not } => {
                filter.iter().chain(must).all(|q| q.matches(doc))
                    && (should.is_empty() || should.iter().any(|q| q.matches(doc)))
                    && !must_not.iter().any(|q| q.matches(doc))
            }
            EsQuery::Range { field, gte, lte, gt, lt } => lookup(doc, field).and_then(date_ms).is_some_and(|ms| {
                gte.is_none_or(|b| ms >= b)
                    && lte.is_none_or(|b| ms <= b)
                    && gt.is_none_or(|b| ms > b)
                    && lt.is_none_or(|b| ms < b)
            }),
            EsQuery::Terms { field, values: wanted } => values(doc, field).iter().any(|v| wanted.contains(v)),
            EsQuery::QueryString { expr, default_field } => expr.matches(doc, default_field.as_deref()),
        }
    }
}

/// `{"field": body}` of a one-field query.
fn single(body: &Value, kind: &str) -> Result<(String, Value), EsError> {
    body.as_object()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.iter().next())
        .map(|(k, v)| (k.clone(), v.clone()))
        .ok_or_else(|| bad_request(format!("[{kind}] query malformed, must name one field")))
}

enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `field:` or the default field; the value's tokens in a row; a prefix when it ended with `*`.
    Match {
        field: Option<String>,
        tokens: Vec<String>,
        prefix: bool,
    },
    /// `*`, or `field:*`: the field exists.
    Exists {
        field: Option<String>,
    },
}

impl Expr {
    fn matches(&self, doc: &Value, default_field: Option<&str>) -> bool {
        match self {
            Expr::And(a, b) => a.matches(doc, default_field) && b.matches(doc, default_field),
            Expr::Or(a, b) => a.matches(doc, default_field) || b.matches(doc, default_field),
            Expr::Not(e) => !e.matches(doc, default_field),
            Expr::Exists { field } => !texts(doc, field.as_deref().or(default_field)).is_empty(),
            Expr::Match { field, tokens: wanted, prefix } => {
                texts(doc, field.as_deref().or(default_field)).iter().any(|text| {
                    let have = tokens(text);
                    have.windows(wanted.len()).any(|window| {
                        window.iter().zip(wanted).enumerate().all(|(i, (h, w))| {
                            if *prefix && i == wanted.len() - 1 { h.starts_with(w.as_str()) } else { h == w }
                        })
                    })
                })
            }
        }
    }
}

fn texts(doc: &Value, field: Option<&str>) -> Vec<String> {
    match field {
        Some(f) if f != "*" => values(doc, f),
        _ => {
            let mut out = Vec::new();
            all_strings(doc, &mut out);
            out
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum QToken {
    Word(String),
    Phrase(String),
    Colon,
    Open,
    Close,
}

/// Lucene's classic syntax, the part this fake understands.
struct QueryParser {
    tokens: Vec<QToken>,
    at: usize,
    default_and: bool,
}

impl QueryParser {
    fn parse(query: &str, default_and: bool) -> Result<Expr, ()> {
        let mut parser = QueryParser { tokens: qlex(query)?, at: 0, default_and };
        let expr = parser.or()?;
        if parser.at == parser.tokens.len() { Ok(expr) } else { Err(()) }
    }

    fn peek(&self) -> Option<&QToken> {
        self.tokens.get(self.at)
    }

    fn keyword(&self, word: &str) -> bool {
        self.peek() == Some(&QToken::Word(word.into()))
    }

    /// Whether a clause starts here (so two clauses sit side by side).
    fn clause_follows(&self) -> bool {
        matches!(self.peek(), Some(QToken::Word(w)) if w != "AND" && w != "OR")
            || matches!(self.peek(), Some(QToken::Phrase(_) | QToken::Open))
    }

    fn or(&mut self) -> Result<Expr, ()> {
        let mut left = self.and()?;
        loop {
            if self.keyword("OR") {
                self.at += 1;
            } else if !self.clause_follows() || self.default_and {
                return Ok(left);
            }
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
    }

    fn and(&mut self) -> Result<Expr, ()> {
        let mut left = self.unary()?;
        loop {
            if self.keyword("AND") {
                self.at += 1;
            } else if !(self.clause_follows() && self.default_and) {
                return Ok(left);
            }
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ()> {
        let token = self.tokens.get(self.at).cloned().ok_or(())?;
        self.at += 1;
        match token {
            QToken::Word(w) if w == "NOT" => Ok(Expr::Not(Box::new(self.unary()?))),
            QToken::Word(w) if w == "AND" || w == "OR" => Err(()),
            QToken::Open => {
                let expr = self.or()?;
                if self.peek() != Some(&QToken::Close) {
                    return Err(());
                }
                self.at += 1;
                Ok(expr)
            }
            QToken::Close | QToken::Colon => Err(()),
            QToken::Word(w) if self.peek() == Some(&QToken::Colon) => {
                self.at += 1;
                let value = self.tokens.get(self.at).cloned().ok_or(())?;
                self.at += 1;
                value_expr(Some(w), value)
            }
            value => value_expr(None, value),
        }
    }
}

fn value_expr(field: Option<String>, value: QToken) -> Result<Expr, ()> {
    match value {
        QToken::Word(w) if w == "*" => Ok(Expr::Exists { field }),
        QToken::Word(w) => {
            let prefix = w.ends_with('*');
            let tokens = tokens(w.trim_end_matches('*'));
            if tokens.is_empty() { Err(()) } else { Ok(Expr::Match { field, tokens, prefix }) }
        }
        QToken::Phrase(p) => {
            let tokens = tokens(&p);
            // An empty phrase matches nothing, as its analyzed form is empty.
            Ok(if tokens.is_empty() {
                Expr::Not(Box::new(Expr::Exists { field: None }))
            } else {
                Expr::Match { field, tokens, prefix: false }
            })
        }
        _ => Err(()),
    }
}

fn qlex(query: &str) -> Result<Vec<QToken>, ()> {
    let mut tokens = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => tokens.push(QToken::Open),
            ')' => tokens.push(QToken::Close),
            ':' => tokens.push(QToken::Colon),
            '"' => {
                let mut phrase = String::new();
                loop {
                    match chars.next().ok_or(())? {
                        '"' => break,
                        '\\' => phrase.push(chars.next().ok_or(())?),
                        c => phrase.push(c),
                    }
                }
                tokens.push(QToken::Phrase(phrase));
            }
            c => {
                let mut word = String::new();
                let mut c = Some(c);
                while let Some(ch) = c {
                    match ch {
                        '\\' => word.push(chars.next().ok_or(())?),
                        ch => word.push(ch),
                    }
                    c = chars.next_if(|n| !n.is_whitespace() && !matches!(n, '(' | ')' | ':' | '"'));
                }
                tokens.push(QToken::Word(word));
            }
        }
    }
    if tokens.is_empty() { Err(()) } else { Ok(tokens) }
}
