//! The `loki` log backend against the fake Loki: the LogQL it builds is
//! parsed and run there, so these check what a user gets back.

use std::time::Duration;

use opsclaw::logs::config::LokiConfig;
use opsclaw::logs::loki::Loki;
use opsclaw::logs::{Level, LogError, LogSource, Search};

use super::fake_loki::{FakeLoki, Mode};
use super::harness::wait_until;

const TIMEOUT: Duration = Duration::from_millis(300);

fn config(url: &str) -> LokiConfig {
    LokiConfig { url: url.to_owned(), selector: r#"{app="api"}"#.into(), auth: None, tenant: None, level_label: None }
}

fn loki(config: LokiConfig) -> Loki {
    Loki::new(config, TIMEOUT, reqwest::Client::new())
}

fn search(pattern: Option<&str>, level: Option<Level>, limit: usize) -> Search {
    Search { pattern: pattern.map(str::to_owned), from_ms: 1_000, to_ms: 9_000, level, limit }
}

fn texts(found: &opsclaw::logs::Found) -> Vec<&str> {
    found.lines.iter().map(|l| l.text.as_str()).collect()
}

#[tokio::test]
async fn newest_first_across_streams_with_limit_and_truncated() {
    let fake = FakeLoki::start().await;
    fake.push(&[("app", "api"), ("pod", "a")], 2_000, "a2");
    fake.push(&[("app", "api"), ("pod", "b")], 3_000, "b3");
    fake.push(&[("app", "api"), ("pod", "a")], 4_000, "a4");
    fake.push(&[("app", "api"), ("pod", "b")], 5_000, "b5");
    let loki = loki(config(&fake.url()));

    let found = loki.search(&search(None, None, 3)).await.unwrap();
    assert_eq!(texts(&found), ["b5", "a4", "b3"]);
    assert!(found.truncated);
    assert_eq!(found.lines[0].ts_ms, Some(5_000));
    assert_eq!(found.lines[0].origin.as_deref(), Some(r#"{app="api", pod="b"}"#));
    assert_eq!(found.lines[1].origin.as_deref(), Some(r#"{app="api", pod="a"}"#));

    let found = loki.search(&search(None, None, 4)).await.unwrap();
    assert_eq!(texts(&found), ["b5", "a4", "b3", "a2"]);
    assert!(!found.truncated);
    let request = fake.requests().pop().unwrap();
    assert_eq!(request.param("limit"), Some("5"));
    assert_eq!(request.param("direction"), Some("backward"));
}

#[tokio::test]
async fn range_is_inclusive_to_the_millisecond() {
    let fake = FakeLoki::start().await;
    let api = [("app", "api")];
    fake.push_ns(&api, 999_999_999, "before");
    fake.push(&api, 1_000, "first");
    fake.push_ns(&api, 9_000_999_999, "last");
    fake.push(&api, 9_001, "after");
    let found = loki(config(&fake.url())).search(&search(None, None, 10)).await.unwrap();
    assert_eq!(texts(&found), ["last", "first"]);
    assert_eq!(found.lines[0].ts_ms, Some(9_000));
}

#[tokio::test]
async fn selector_pattern_and_level_label_filter_at_loki() {
    let fake = FakeLoki::start().await;
    fake.push(&[("app", "api"), ("level", "error")], 2_000, "db connection refused");
    fake.push(&[("app", "api"), ("level", "WARNING")], 3_000, "connection refused, retrying");
    fake.push(&[("app", "api"), ("level", "info")], 4_000, "connection refused? no, fine");
    fake.push(&[("app", "api"), ("level", "error")], 5_000, "disk full");
    fake.push(&[("app", "web"), ("level", "error")], 6_000, "connection refused upstream");
    let loki = loki(LokiConfig { level_label: Some("level".into()), ..config(&fake.url()) });

    let found = loki.search(&search(Some("refused"), Some(Level::Warn), 10)).await.unwrap();
    assert_eq!(texts(&found), ["connection refused, retrying", "db connection refused"]);
    assert_eq!(found.lines[0].level, Some(Level::Warn));
    assert_eq!(found.lines[1].level, Some(Level::Error));
    let query = fake.requests().pop().unwrap().params["query"].clone();
    assert!(query.starts_with(r#"{app="api"} |~ `(?i)refused` | level=~"#), "{query}");
}

#[tokio::test]
async fn level_without_a_label_filters_on_the_words() {
    let fake = FakeLoki::start().await;
    let api = [("app", "api")];
    fake.push(&api, 2_000, "ERROR payment failed");
    fake.push(&api, 3_000, "level=info all good");
    fake.push(&api, 4_000, "errors=0 is not a level word");
    fake.push(&api, 5_000, "panic: nil map");
    let found = loki(config(&fake.url())).search(&search(None, Some(Level::Error), 10)).await.unwrap();
    assert_eq!(texts(&found), ["panic: nil map", "ERROR payment failed"]);
}

#[tokio::test]
async fn smart_case() {
    let fake = FakeLoki::start().await;
    let api = [("app", "api")];
    fake.push(&api, 2_000, "Timeout calling bank");
    fake.push(&api, 3_000, "timeout calling bank");
    let loki = loki(config(&fake.url()));
    let found = loki.search(&search(Some("timeout"), None, 10)).await.unwrap();
    assert_eq!(found.lines.len(), 2);
    let found = loki.search(&search(Some("Timeout"), None, 10)).await.unwrap();
    assert_eq!(texts(&found), ["Timeout calling bank"]);
}

#[tokio::test]
async fn a_pattern_with_backticks_and_quotes_reaches_loki_intact() {
    let fake = FakeLoki::start().await;
    let api = [("app", "api")];
    fake.push(&api, 2_000, r#"ran `kubectl get "pods"` \ done"#);
    fake.push(&api, 3_000, "ran kubectl");
    let pattern = r#"`kubectl get "pods"` \\"#;
    let found = loki(config(&fake.url())).search(&search(Some(pattern), None, 10)).await.unwrap();
    assert_eq!(texts(&found), [r#"ran `kubectl get "pods"` \ done"#]);
}

#[tokio::test]
async fn authorization_and_tenant_are_sent() {
    let fake = FakeLoki::start().await;
    fake.require_authorization(Some("Bearer s3cret"));
    fake.push(&[("app", "api")], 2_000, "hello");
    let config = LokiConfig { auth: Some("Bearer s3cret".into()), tenant: Some("ops".into()), ..config(&fake.url()) };
    let found = loki(config).search(&search(None, None, 10)).await.unwrap();
    assert_eq!(texts(&found), ["hello"]);
    let request = fake.requests().pop().unwrap();
    assert_eq!(request.authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(request.tenant.as_deref(), Some("ops"));
    assert_eq!(request.param("start"), Some("1000000000"));
    assert_eq!(request.param("end"), Some("9001000000"));
}

#[tokio::test]
async fn without_the_right_authorization_it_is_unauthorized() {
    let fake = FakeLoki::start().await;
    fake.require_authorization(Some("Bearer s3cret"));
    let config = LokiConfig { auth: Some("Bearer wrong".into()), ..config(&fake.url()) };
    let error = loki(config).search(&search(None, None, 10)).await.unwrap_err();
    assert!(matches!(error, LogError::Unauthorized(_)), "{error:?}");
}

#[tokio::test]
async fn a_bad_regex_is_a_bad_query_with_lokis_reason() {
    let fake = FakeLoki::start().await;
    let error = loki(config(&fake.url())).search(&search(Some("(unclosed"), None, 10)).await.unwrap_err();
    let LogError::BadQuery(reason) = error else { panic!("{error:?}") };
    assert!(reason.starts_with("parse error : error parsing regexp"), "{reason}");
}

#[tokio::test]
async fn a_bad_selector_is_a_bad_query() {
    let fake = FakeLoki::start().await;
    let config = LokiConfig { selector: r#"{app="api" env="prod"}"#.into(), ..config(&fake.url()) };
    let error = loki(config).search(&search(None, None, 10)).await.unwrap_err();
    let LogError::BadQuery(reason) = error else { panic!("{error:?}") };
    assert!(reason.starts_with("parse error at line 1, col 12: syntax error"), "{reason}");
}

#[tokio::test]
async fn a_search_for_the_cap_asks_no_more_than_lokis_limit() {
    let fake = FakeLoki::start().await;
    fake.push(&[("app", "api")], 2_000, "one");
    let found = loki(config(&fake.url())).search(&search(None, None, 5_000)).await.unwrap();
    assert_eq!(texts(&found), ["one"]);
    assert!(!found.truncated);
    assert_eq!(fake.requests().pop().unwrap().param("limit"), Some("5000"));
}

#[tokio::test]
async fn down_is_unreachable() {
    let fake = FakeLoki::start().await;
    fake.set_mode(Mode::Down);
    let error = loki(config(&fake.url())).search(&search(None, None, 10)).await.unwrap_err();
    assert!(matches!(&error, LogError::Unreachable(m) if m.contains("503")), "{error:?}");
}

#[tokio::test]
async fn connection_refused_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error = loki(config(&format!("http://127.0.0.1:{port}"))).search(&search(None, None, 10)).await.unwrap_err();
    assert!(matches!(&error, LogError::Unreachable(m) if m.starts_with("cannot connect")), "{error:?}");
}

#[tokio::test]
async fn slow_is_a_timeout_and_answers_once_released() {
    let fake = FakeLoki::start().await;
    fake.set_mode(Mode::Slow);
    fake.push(&[("app", "api")], 2_000, "late");
    let error = loki(config(&fake.url())).search(&search(None, None, 10)).await.unwrap_err();
    assert_eq!(error, LogError::Timeout(TIMEOUT));

    // Patient enough for the answer, which comes only once released.
    let patient = Loki::new(config(&fake.url()), Duration::from_secs(30), reqwest::Client::new());
    let pending = tokio::spawn(async move { patient.search(&search(None, None, 10)).await });
    wait_until("the second search reaches Loki", || async { fake.requests().len() == 2 }).await;
    fake.release();
    assert_eq!(texts(&pending.await.unwrap().unwrap()), ["late"]);
}

#[tokio::test]
async fn garbage_is_garbage() {
    let fake = FakeLoki::start().await;
    fake.set_mode(Mode::Garbage);
    let error = loki(config(&fake.url())).search(&search(None, None, 10)).await.unwrap_err();
    assert!(matches!(error, LogError::Garbage(_)), "{error:?}");
}
