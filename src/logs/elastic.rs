//! The `elasticsearch` backend (OpenSearch speaks the same `_search`): one
//! `POST /{index}/_search` per search, newest first by the timestamp field,
//! the time range, the service's filter and the level as filters, the user's
//! query as a `query_string` on the message field.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::ElasticConfig;
use super::remote::{exchange, first_line, status_error};
use super::{Found, Level, LogError, LogLine, LogSource, Search, line};

/// A service whose logs are documents in Elasticsearch or OpenSearch indices.
pub struct Elastic {
    config: ElasticConfig,
    timeout: Duration,
    http: reqwest::Client,
}

impl Elastic {
    /// A backend that searches `config.index` at `config.url`, each search bounded by `timeout`.
    pub fn new(config: ElasticConfig, timeout: Duration, http: reqwest::Client) -> Self {
        Self { config, timeout, http }
    }

    async fn query(&self, search: &Search) -> Result<Found, LogError> {
        let url = format!("{}/{}/_search", self.config.url, self.config.index);
        let mut request = self.http.post(url).json(&request_body(&self.config, search));
        if let Some(auth) = &self.config.auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let (status, body) = exchange(request, self.timeout).await?;
        if !status.is_success() {
            return Err(self.failure(status, &body));
        }
        let response: SearchResponse = serde_json::from_slice(&body)
            .map_err(|e| LogError::Garbage(format!("not an Elasticsearch answer: {e}")))?;
        let mut notes = Vec::new();
        if let Some(shards) = &response.shards
            && shards.failed > 0
        {
            let reason = shards.failures.first().map(failure_reason).unwrap_or_default();
            notes.push(format!(
                "{} of {} shards failed, the lines may be incomplete: {reason}",
                shards.failed, shards.total
            ));
        }
        let hits = response.hits.hits;
        let truncated = hits.len() > search.limit;
        let lines = hits.into_iter().take(search.limit).map(|hit| self.line(hit)).collect();
        Ok(Found { lines, truncated, notes })
    }

    fn line(&self, hit: Hit) -> LogLine {
        let source = hit.source.unwrap_or(Value::Null);
        let text = match field(&source, &self.config.message_field) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            // Better the whole document than an empty line.
            None => source.to_string(),
        };
        let level = self.config.level_field.as_deref().and_then(|f| field(&source, f)).and_then(Value::as_str);
        let ts_ms = field(&source, &self.config.timestamp_field)
            .and_then(timestamp_ms)
            .or_else(|| hit.sort.first().and_then(Value::as_i64));
        LogLine {
            ts_ms,
            level: level.and_then(Level::named).or_else(|| line::level_of(&text)),
            text,
            origin: hit.index,
        }
    }

    fn failure(&self, status: StatusCode, body: &[u8]) -> LogError {
        let error = serde_json::from_slice::<ErrorResponse>(body).ok().map(|r| r.error);
        let reason = error.as_ref().and_then(ErrorBody::reason).or_else(|| first_line(body));
        match status {
            StatusCode::BAD_REQUEST => LogError::BadQuery(reason.unwrap_or_else(|| "HTTP 400".into())),
            StatusCode::NOT_FOUND if error.as_ref().is_some_and(|e| e.is_type("index_not_found_exception")) => {
                LogError::Unavailable(format!("index {} not found", self.config.index))
            }
            _ => status_error(status, reason),
        }
    }
}

#[async_trait]
impl LogSource for Elastic {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    async fn search(&self, search: &Search) -> Result<Found, LogError> {
        tokio::time::timeout(self.timeout, self.query(search)).await.map_err(|_| LogError::Timeout(self.timeout))?
    }
}

/// The `_search` body: one more hit than the limit, to know whether there were more.
fn request_body(config: &ElasticConfig, search: &Search) -> Value {
    let mut filter = vec![json!({ "range": { &config.timestamp_field: {
        "gte": search.from_ms, "lte": search.to_ms, "format": "epoch_millis",
    } } })];
    if let Some(f) = config.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        filter.push(json!({ "query_string": { "query": f } }));
    }
    if let Some(level) = search.level {
        filter.push(level_filter(config, level));
    }
    let must = match search.pattern.as_deref().filter(|p| !p.trim().is_empty()) {
        // AND: a few words narrow the search, as they do in grep and journald.
        Some(p) => json!({ "query_string": {
            "query": p, "default_field": &config.message_field, "default_operator": "AND",
        } }),
        None => json!({ "match_all": {} }),
    };
    let mut fields = vec![&config.timestamp_field, &config.message_field];
    fields.extend(&config.level_field);
    json!({
        "size": search.limit + 1,
        // unmapped_type: an index of the pattern without the field sorts it last instead of failing.
        "sort": [{ &config.timestamp_field: { "order": "desc", "unmapped_type": "date" } }],
        "query": { "bool": { "filter": filter, "must": [must] } },
        "_source": fields,
        "track_total_hits": false,
    })
}

/// With a level field, its exact values (a keyword field's values are as
/// written: `error`, `ERROR`, `Error`); without one, the level words in the message.
fn level_filter(config: &ElasticConfig, level: Level) -> Value {
    let names = level.names_at_and_above();
    match &config.level_field {
        Some(field) => {
            let values: Vec<String> =
                names.iter().flat_map(|n| [n.to_string(), n.to_uppercase(), capitalized(n)]).collect();
            json!({ "terms": { field: values } })
        }
        None => json!({ "query_string": { "query": names.join(" OR "), "default_field": &config.message_field } }),
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// A dotted field of a document: `log.level` as `{"log":{"level":…}}`,
/// as a flat `"log.level"` key, or any mix of the two.
fn field<'a>(source: &'a Value, path: &str) -> Option<&'a Value> {
    let object = source.as_object()?;
    if let Some(value) = object.get(path) {
        return Some(value);
    }
    path.match_indices('.').find_map(|(i, _)| field(object.get(&path[..i])?, &path[i + 1..]))
}

/// A date as Elasticsearch stores it in `_source`: RFC 3339 (UTC when it
/// has no offset), or epoch milliseconds as a number or a string.
fn timestamp_ms(value: &Value) -> Option<i64> {
    match value {
        // An f64 beyond i64 saturates; a date that far out is garbage either way.
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(ts) = s.parse::<jiff::Timestamp>() {
                return Some(ts.as_millisecond());
            }
            if let Ok(ms) = s.parse::<i64>() {
                return Some(ms);
            }
            let civil = s.parse::<jiff::civil::DateTime>().ok()?;
            Some(civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_millisecond())
        }
        _ => None,
    }
}

fn failure_reason(failure: &Value) -> String {
    let reason = &failure["reason"];
    reason["reason"].as_str().or_else(|| reason.as_str()).or_else(|| reason["type"].as_str()).unwrap_or("").to_owned()
}

#[derive(Deserialize)]
struct SearchResponse {
    #[serde(rename = "_shards")]
    shards: Option<Shards>,
    hits: Hits,
}

#[derive(Deserialize)]
struct Shards {
    total: u64,
    failed: u64,
    #[serde(default)]
    failures: Vec<Value>,
}

#[derive(Deserialize)]
struct Hits {
    hits: Vec<Hit>,
}

#[derive(Deserialize)]
struct Hit {
    #[serde(rename = "_index")]
    index: Option<String>,
    #[serde(rename = "_source")]
    source: Option<Value>,
    /// The sort values: the timestamp in epoch ms, whatever `_source` holds.
    #[serde(default)]
    sort: Vec<Value>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: ErrorBody,
}

/// `{"root_cause":[{"type","reason"}],"type","reason"}`, or a bare string
/// from old versions and proxies.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Structured {
        #[serde(default)]
        root_cause: Vec<Cause>,
        #[serde(rename = "type")]
        kind: Option<String>,
        reason: Option<String>,
    },
    Text(String),
}

#[derive(Deserialize)]
struct Cause {
    #[serde(rename = "type")]
    kind: Option<String>,
    reason: Option<String>,
}

impl ErrorBody {
    /// The most specific reason: the first root cause's, else the error's.
    fn reason(&self) -> Option<String> {
        match self {
            ErrorBody::Structured { root_cause, reason, .. } => {
                root_cause.first().and_then(|c| c.reason.clone()).or_else(|| reason.clone())
            }
            ErrorBody::Text(text) => Some(text.clone()),
        }
    }

    fn is_type(&self, wanted: &str) -> bool {
        match self {
            ErrorBody::Structured { root_cause, kind, .. } => {
                kind.as_deref() == Some(wanted) || root_cause.iter().any(|c| c.kind.as_deref() == Some(wanted))
            }
            ErrorBody::Text(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ElasticConfig {
        ElasticConfig {
            url: "http://es:9200".into(),
            index: "logs-*".into(),
            timestamp_field: "@timestamp".into(),
            message_field: "message".into(),
            level_field: Some("log.level".into()),
            filter: Some(r#"service.name:"search""#.into()),
            auth: None,
        }
    }

    fn search() -> Search {
        Search { pattern: Some("refused".into()), from_ms: 10, to_ms: 20, level: Some(Level::Error), limit: 5 }
    }

    #[test]
    fn body_has_range_filter_level_and_query() {
        let body = request_body(&config(), &search());
        assert_eq!(body["size"], 6);
        assert_eq!(body["track_total_hits"], false);
        assert_eq!(body["sort"][0]["@timestamp"]["order"], "desc");
        assert_eq!(body["_source"], json!(["@timestamp", "message", "log.level"]));
        let filter = &body["query"]["bool"]["filter"];
        assert_eq!(filter[0]["range"]["@timestamp"], json!({ "gte": 10, "lte": 20, "format": "epoch_millis" }));
        assert_eq!(filter[1]["query_string"]["query"], r#"service.name:"search""#);
        let levels = filter[2]["terms"]["log.level"].as_array().unwrap();
        for name in ["error", "ERROR", "Error", "err", "FATAL", "Critical"] {
            assert!(levels.contains(&json!(name)), "{name}");
        }
        assert!(!levels.contains(&json!("warn")));
        let must = &body["query"]["bool"]["must"][0]["query_string"];
        assert_eq!(must["query"], "refused");
        assert_eq!(must["default_field"], "message");
    }

    #[test]
    fn no_pattern_matches_all_and_no_level_field_searches_the_words() {
        let config = ElasticConfig { level_field: None, filter: None, ..config() };
        let body = request_body(&config, &Search { pattern: None, level: Some(Level::Fatal), ..search() });
        assert_eq!(body["query"]["bool"]["must"][0], json!({ "match_all": {} }));
        let filter = &body["query"]["bool"]["filter"];
        assert_eq!(filter.as_array().unwrap().len(), 2);
        assert_eq!(filter[1]["query_string"]["default_field"], "message");
        assert!(filter[1]["query_string"]["query"].as_str().unwrap().starts_with("fatal OR critical OR"));
        assert_eq!(body["_source"], json!(["@timestamp", "message"]));
    }

    #[test]
    fn dotted_fields_nested_flat_or_mixed() {
        let doc = json!({ "log": { "level": "warn", "origin.file": "a.rs" }, "service.name": "x" });
        assert_eq!(field(&doc, "log.level"), Some(&json!("warn")));
        assert_eq!(field(&doc, "log.origin.file"), Some(&json!("a.rs")));
        assert_eq!(field(&doc, "service.name"), Some(&json!("x")));
        assert_eq!(field(&doc, "log.missing"), None);
        assert_eq!(field(&json!("scalar"), "a"), None);
    }

    #[test]
    fn timestamps_as_strings_or_numbers() {
        assert_eq!(timestamp_ms(&json!("1970-01-01T00:00:01.5Z")), Some(1500));
        assert_eq!(timestamp_ms(&json!("1970-01-01T08:00:01+08:00")), Some(1000));
        assert_eq!(timestamp_ms(&json!("1970-01-01T00:00:02")), Some(2000));
        assert_eq!(timestamp_ms(&json!(1234)), Some(1234));
        assert_eq!(timestamp_ms(&json!("1234")), Some(1234));
        assert_eq!(timestamp_ms(&json!(1.0e300)), Some(i64::MAX));
        assert_eq!(timestamp_ms(&json!("yesterday")), None);
        assert_eq!(timestamp_ms(&json!(null)), None);
    }

    #[test]
    fn error_bodies_give_their_most_specific_reason() {
        let body: ErrorResponse = serde_json::from_value(json!({ "error": {
            "root_cause": [{ "type": "query_shard_exception", "reason": "Failed to parse query [a AND]" }],
            "type": "search_phase_execution_exception", "reason": "all shards failed",
        }, "status": 400 }))
        .unwrap();
        assert_eq!(body.error.reason().as_deref(), Some("Failed to parse query [a AND]"));
        assert!(body.error.is_type("query_shard_exception"));
        let text: ErrorResponse = serde_json::from_value(json!({ "error": "no handler" })).unwrap();
        assert_eq!(text.error.reason().as_deref(), Some("no handler"));
    }

    #[test]
    fn capitalizes_level_names() {
        assert_eq!(capitalized("warn"), "Warn");
        assert_eq!(capitalized(""), "");
    }
}
