//! The `elasticsearch` log backend against the fake Elasticsearch: the
//! search body it builds is parsed and run there.

use std::time::Duration;

use opsclaw::logs::config::ElasticConfig;
use opsclaw::logs::elastic::Elastic;
use opsclaw::logs::{Found, Level, LogError, LogSource, Search};
use serde_json::json;

use super::fake_elastic::{FakeElastic, Mode};
use super::harness::wait_until;

const TIMEOUT: Duration = Duration::from_millis(300);

fn config(url: &str) -> ElasticConfig {
    ElasticConfig {
        url: url.to_owned(),
        index: "logs-*".into(),
        timestamp_field: "@timestamp".into(),
        message_field: "message".into(),
        level_field: Some("log.level".into()),
        filter: None,
        auth: None,
    }
}

fn elastic(config: ElasticConfig) -> Elastic {
    Elastic::new(config, TIMEOUT, reqwest::Client::new())
}

fn search(pattern: Option<&str>, level: Option<Level>, limit: usize) -> Search {
    Search { pattern: pattern.map(str::to_owned), from_ms: 1_000, to_ms: 9_000, level, limit }
}

fn texts(found: &Found) -> Vec<&str> {
    found.lines.iter().map(|l| l.text.as_str()).collect()
}

/// `@timestamp` in RFC 3339 for `ms` after the epoch.
fn at(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

#[tokio::test]
async fn newest_first_across_indices_with_limit_and_truncated() {
    let fake = FakeElastic::start().await;
    fake.index("logs-a", json!({ "@timestamp": at(2_000), "message": "a2" }));
    fake.index("logs-b", json!({ "@timestamp": 3_000, "message": "b3" }));
    fake.index("logs-a", json!({ "@timestamp": at(4_000), "message": "a4" }));
    fake.index("logs-b", json!({ "@timestamp": at(5_000), "message": "b5" }));
    fake.index("other", json!({ "@timestamp": at(6_000), "message": "not in the pattern" }));
    let elastic = elastic(config(&fake.url()));

    let found = elastic.search(&search(None, None, 3)).await.unwrap();
    assert_eq!(texts(&found), ["b5", "a4", "b3"]);
    assert!(found.truncated);
    assert_eq!(found.lines[0].ts_ms, Some(5_000));
    assert_eq!(found.lines[2].ts_ms, Some(3_000));
    assert_eq!(found.lines[0].origin.as_deref(), Some("logs-b"));

    let found = elastic.search(&search(None, None, 4)).await.unwrap();
    assert_eq!(texts(&found), ["b5", "a4", "b3", "a2"]);
    assert!(!found.truncated);
    let request = fake.requests().pop().unwrap();
    assert_eq!(request.target, "logs-*");
    assert_eq!(request.body["size"], 5);
}

#[tokio::test]
async fn range_is_inclusive() {
    let fake = FakeElastic::start().await;
    for (ms, text) in [(999, "before"), (1_000, "first"), (9_000, "last"), (9_001, "after")] {
        fake.index("logs-a", json!({ "@timestamp": at(ms), "message": text }));
    }
    let found = elastic(config(&fake.url())).search(&search(None, None, 10)).await.unwrap();
    assert_eq!(texts(&found), ["last", "first"]);
}

#[tokio::test]
async fn filter_pattern_and_level_field_nested_or_flat() {
    let fake = FakeElastic::start().await;
    let doc = |ms, service: &str, level: &str, message: &str| json!({ "@timestamp": at(ms), "service": { "name": service }, "log": { "level": level }, "message": message });
    fake.index("logs-a", doc(2_000, "search", "ERROR", "db connection refused"));
    fake.index("logs-a", json!({ "@timestamp": at(3_000), "service.name": "search", "log.level": "warning", "message": "connection refused, retrying" }));
    fake.index("logs-a", doc(4_000, "search", "info", "connection refused? no, fine"));
    fake.index("logs-a", doc(5_000, "search", "error", "disk full"));
    fake.index("logs-a", doc(6_000, "web", "error", "connection refused upstream"));
    let config = ElasticConfig { filter: Some(r#"service.name:"search""#.into()), ..config(&fake.url()) };

    let found = elastic(config).search(&search(Some("connection refused"), Some(Level::Warn), 10)).await.unwrap();
    assert_eq!(texts(&found), ["connection refused, retrying", "db connection refused"]);
    assert_eq!(found.lines[0].level, Some(Level::Warn));
    assert_eq!(found.lines[1].level, Some(Level::Error));
    assert_eq!(found.lines[1].ts_ms, Some(2_000));
}

#[tokio::test]
async fn level_without_a_field_searches_the_message_words() {
    let fake = FakeElastic::start().await;
    fake.index("logs-a", json!({ "@timestamp": at(2_000), "message": "ERROR payment failed" }));
    fake.index("logs-a", json!({ "@timestamp": at(3_000), "message": "level=info all good" }));
    fake.index("logs-a", json!({ "@timestamp": at(4_000), "message": "FATAL out of memory" }));
    let config = ElasticConfig { level_field: None, ..config(&fake.url()) };
    let found = elastic(config).search(&search(None, Some(Level::Error), 10)).await.unwrap();
    assert_eq!(texts(&found), ["FATAL out of memory", "ERROR payment failed"]);
}

#[tokio::test]
async fn query_string_syntax_reaches_elasticsearch() {
    let fake = FakeElastic::start().await;
    fake.index("logs-a", json!({ "@timestamp": at(2_000), "message": "payment timeout after 30s" }));
    fake.index("logs-a", json!({ "@timestamp": at(3_000), "message": "payments ok" }));
    fake.index("logs-a", json!({ "@timestamp": at(4_000), "message": "refund timeout" }));
    let elastic = elastic(config(&fake.url()));
    let found = elastic.search(&search(Some("payment* AND NOT timeout"), None, 10)).await.unwrap();
    assert_eq!(texts(&found), ["payments ok"]);
    let found = elastic.search(&search(Some(r#""payment timeout" OR refund"#), None, 10)).await.unwrap();
    assert_eq!(texts(&found), ["refund timeout", "payment timeout after 30s"]);
}

#[tokio::test]
async fn authorization_is_sent() {
    let fake = FakeElastic::start().await;
    fake.require_authorization(Some("ApiKey abc"));
    fake.index("logs-a", json!({ "@timestamp": at(2_000), "message": "hello" }));
    let config = ElasticConfig { auth: Some("ApiKey abc".into()), ..config(&fake.url()) };
    let found = elastic(config).search(&search(None, None, 10)).await.unwrap();
    assert_eq!(texts(&found), ["hello"]);
    assert_eq!(fake.requests()[0].authorization.as_deref(), Some("ApiKey abc"));
}

#[tokio::test]
async fn without_the_right_authorization_it_is_unauthorized() {
    let fake = FakeElastic::start().await;
    fake.require_authorization(Some("ApiKey abc"));
    let error = elastic(config(&fake.url())).search(&search(None, None, 10)).await.unwrap_err();
    let LogError::Unauthorized(reason) = error else { panic!("{error:?}") };
    assert!(reason.contains("missing authentication credentials"), "{reason}");
}

#[tokio::test]
async fn a_syntax_error_is_a_bad_query_with_the_root_cause() {
    let fake = FakeElastic::start().await;
    fake.index("logs-a", json!({ "@timestamp": at(2_000), "message": "hello" }));
    let error = elastic(config(&fake.url())).search(&search(Some("hello AND (world"), None, 10)).await.unwrap_err();
    assert_eq!(error, LogError::BadQuery("Failed to parse query [hello AND (world]".into()));
}

#[tokio::test]
async fn an_unknown_index_is_unavailable() {
    let fake = FakeElastic::start().await;
    let config = ElasticConfig { index: "nope".into(), ..config(&fake.url()) };
    let error = elastic(config).search(&search(None, None, 10)).await.unwrap_err();
    assert_eq!(error, LogError::Unavailable("index nope not found".into()));
}

#[tokio::test]
async fn a_pattern_matching_no_index_finds_nothing() {
    let fake = FakeElastic::start().await;
    let found = elastic(config(&fake.url())).search(&search(None, None, 10)).await.unwrap();
    assert_eq!(found, Found::default());
}

#[tokio::test]
async fn a_failed_shard_is_a_note() {
    let fake = FakeElastic::start().await;
    fake.index("logs-a", json!({ "@timestamp": at(2_000), "message": "hello" }));
    fake.set_mode(Mode::ShardFailure("node left the cluster".into()));
    let found = elastic(config(&fake.url())).search(&search(None, None, 10)).await.unwrap();
    assert_eq!(texts(&found), ["hello"]);
    assert_eq!(found.notes.len(), 1);
    assert!(found.notes[0].contains("node left the cluster"), "{:?}", found.notes);
}

#[tokio::test]
async fn down_is_unreachable() {
    let fake = FakeElastic::start().await;
    fake.set_mode(Mode::Down);
    let error = elastic(config(&fake.url())).search(&search(None, None, 10)).await.unwrap_err();
    assert!(matches!(&error, LogError::Unreachable(m) if m.contains("503")), "{error:?}");
}

#[tokio::test]
async fn connection_refused_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error = elastic(config(&format!("http://127.0.0.1:{port}"))).search(&search(None, None, 10)).await.unwrap_err();
    assert!(matches!(&error, LogError::Unreachable(m) if m.starts_with("cannot connect")), "{error:?}");
}

#[tokio::test]
async fn slow_is_a_timeout_and_answers_once_released() {
    let fake = FakeElastic::start().await;
    fake.set_mode(Mode::Slow);
    fake.index("logs-a", json!({ "@timestamp": at(2_000), "message": "late" }));
    let error = elastic(config(&fake.url())).search(&search(None, None, 10)).await.unwrap_err();
    assert_eq!(error, LogError::Timeout(TIMEOUT));

    // Patient enough for the answer, which comes only once released.
    let patient = Elastic::new(config(&fake.url()), Duration::from_secs(30), reqwest::Client::new());
    let pending = tokio::spawn(async move { patient.search(&search(None, None, 10)).await });
    wait_until("the second search reaches Elasticsearch", || async { fake.requests().len() == 2 }).await;
    fake.release();
    assert_eq!(texts(&pending.await.unwrap().unwrap()), ["late"]);
}

#[tokio::test]
async fn garbage_is_garbage() {
    let fake = FakeElastic::start().await;
    fake.set_mode(Mode::Garbage);
    let error = elastic(config(&fake.url())).search(&search(None, None, 10)).await.unwrap_err();
    assert!(matches!(error, LogError::Garbage(_)), "{error:?}");
}
