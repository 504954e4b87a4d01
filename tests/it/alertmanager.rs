//! A real Prometheus Alertmanager for tests, and the tests that use it: the
//! [`Alertmanager`] client against it, and its webhook arriving at a local
//! receiver. The binary is whatever `OPSCLAW_TEST_ALERTMANAGER` names (CI
//! sets `/usr/bin/prometheus-alertmanager` from Debian's package); without it
//! the tests that need it print that they are skipped and pass.

use std::fs::File;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use opsclaw::alert::alertmanager::{Alertmanager, AlertmanagerError, NewSilence};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::harness::{DEADLINE, wait_until};

/// How many lines of Alertmanager's stderr a failure shows.
const STDERR_TAIL_LINES: usize = 30;

/// A running Alertmanager on 127.0.0.1, killed when dropped.
pub struct RealAlertmanager {
    /// The base URL, with the route prefix if there is one: `http://127.0.0.1:40775`.
    pub url: String,
    http: reqwest::Client,
    process: Process,
}

/// The child process and its temp dir (config, storage, `stderr.log`).
struct Process {
    child: Child,
    dir: TempDir,
}

impl RealAlertmanager {
    /// Starts the binary named by `OPSCLAW_TEST_ALERTMANAGER` with one receiver, a webhook to
    /// `webhook_url` (with `Authorization: Bearer <token>` when given). Alerts go out at once
    /// (`group_wait` 0s, `group_interval` 1s) and repeat only after an hour, longer than any test.
    /// Returns `None`, with a note, when the variable is unset.
    pub async fn start(webhook_url: &str, bearer: Option<&str>) -> Option<Self> {
        Self::start_under("", webhook_url, bearer).await
    }

    /// Like [`start`](Self::start), with every endpoint below `route_prefix` (e.g. `/alertmanager`,
    /// Alertmanager's `--web.route-prefix`), as it is served behind a reverse proxy.
    pub async fn start_under(route_prefix: &str, webhook_url: &str, bearer: Option<&str>) -> Option<Self> {
        let binary = match std::env::var("OPSCLAW_TEST_ALERTMANAGER") {
            Ok(path) if !path.is_empty() => path,
            _ => {
                eprintln!("skipped: OPSCLAW_TEST_ALERTMANAGER is not set (path to prometheus-alertmanager)");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("create a temp dir");
        let config_file = dir.path().join("alertmanager.yml");
        // JSON is YAML, and serde_json does the quoting of URLs and tokens.
        std::fs::write(&config_file, config(webhook_url, bearer).to_string()).expect("write the Alertmanager config");
        let stderr = File::create(dir.path().join("stderr.log")).expect("create stderr.log");
        let mut command = Command::new(&binary);
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            // The kernel picks a free port and Alertmanager logs which one, so parallel tests
            // never race for a port the way probing for a free one and handing it over would.
            .arg("--web.listen-address=127.0.0.1:0")
            // Empty disables HA mode: no gossip listener on 0.0.0.0:9094 for parallel instances
            // to fight over, and /-/ready does not wait for a cluster to settle.
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if !route_prefix.is_empty() {
            command.arg(format!("--web.route-prefix={route_prefix}"));
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let mut process = Process { child, dir };

        let log = process.stderr_path();
        let addr = process
            .poll("Alertmanager logs its listen address", || {
                let log = log.clone();
                async move { listen_address(&std::fs::read_to_string(log).unwrap_or_default()) }
            })
            .await;
        let url = format!("http://{addr}{route_prefix}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client");
        let ready = format!("{url}/-/ready");
        process
            .poll("Alertmanager is ready", || {
                let request = http.get(&ready);
                async move { request.send().await.ok().filter(|r| r.status().is_success()).map(drop) }
            })
            .await;
        Some(Self { url, http, process })
    }

    /// `POST /api/v2/alerts`.
    pub async fn fire(&self, alerts: Value) {
        let response = self.http.post(self.api("alerts")).json(&alerts).send().await.expect("POST /api/v2/alerts");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST /api/v2/alerts answered {status}: {body}\n{}", self.process.stderr_tail());
    }

    /// `GET /api/v2/silences`.
    pub async fn silences(&self) -> Value {
        self.get("silences").await
    }

    /// `GET /api/v2/alerts`, which shows whether each alert is silenced (`status.state` "suppressed").
    pub async fn alerts(&self) -> Value {
        self.get("alerts").await
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.http.get(self.api(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(response.status().is_success(), "GET {path} answered {}", response.status());
        response.json().await.unwrap_or_else(|e| panic!("GET {path} answered non-JSON: {e}"))
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v2/{path}", self.url)
    }
}

impl Process {
    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    fn stderr_tail(&self) -> String {
        let log = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
        format!("Alertmanager stderr (last {STDERR_TAIL_LINES} lines):\n{tail}")
    }

    /// Polls `probe` every 10 ms until it yields; panics with the stderr tail if
    /// Alertmanager exits first or [`DEADLINE`] passes.
    async fn poll<T, F, Fut>(&mut self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            ticks.tick().await;
            if let Some(found) = probe().await {
                return found;
            }
            if let Some(status) = self.child.try_wait().expect("poll the Alertmanager process") {
                panic!("Alertmanager exited with {status} before {what}\n{}", self.stderr_tail());
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}\n{}", self.stderr_tail());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Killed and reaped before the temp dir goes, so nothing writes into a removed directory.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one-receiver config; see [`RealAlertmanager::start`].
fn config(webhook_url: &str, bearer: Option<&str>) -> Value {
    let mut webhook = json!({"url": webhook_url, "send_resolved": true});
    if let Some(token) = bearer {
        webhook["http_config"] = json!({"authorization": {"type": "Bearer", "credentials": token}});
    }
    json!({
        "route": {
            "receiver": "opsclaw",
            "group_by": ["alertname"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "opsclaw", "webhook_configs": [webhook]}],
    })
}

/// The address in `msg="Listening on" address=127.0.0.1:40775`, which Alertmanager's
/// web layer (prometheus/exporter-toolkit) logs from the bound listener, so port 0 shows
/// the real port.
fn listen_address(log: &str) -> Option<String> {
    let line = log.lines().find(|line| line.contains("msg=\"Listening on\""))?;
    let addr = line.split_whitespace().find_map(|field| field.strip_prefix("address="))?;
    Some(addr.trim_matches('"').to_owned())
}

/// A webhook receiver on 127.0.0.1 that records every POST.
struct Webhook {
    url: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

#[derive(Debug, Clone)]
struct Delivery {
    authorization: Option<String>,
    body: Value,
}

impl Webhook {
    async fn start() -> Self {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/hook", post(record)).with_state(deliveries.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, deliveries }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

async fn record(State(deliveries): State<Arc<Mutex<Vec<Delivery>>>>, headers: HeaderMap, Json(body): Json<Value>) {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    deliveries.lock().unwrap().push(Delivery { authorization, body });
}

const TOKEN: &str = "am-webhook-token";

fn disk_full() -> Value {
    json!({"alertname": "DiskFull", "instance": "db1:9100", "severity": "page"})
}

/// A silence of one hour from now with exact matchers for `labels`.
fn silence_for(labels: &Value) -> NewSilence {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let labels = labels.as_object().expect("labels are an object");
    NewSilence {
        matchers: labels.iter().map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned())).collect(),
        starts_at_ms: now_ms,
        ends_at_ms: now_ms + 3_600_000,
        created_by: "alice".into(),
        comment: "disk swap on db1".into(),
    }
}

fn client(url: &str) -> Alertmanager {
    Alertmanager::new(url, None, Duration::from_secs(5)).expect("a valid base URL")
}

fn silence_by_id(silences: &Value, id: &str) -> Value {
    let all = silences.as_array().expect("silences are an array");
    all.iter().find(|s| s["id"] == id).cloned().unwrap_or_else(|| panic!("no silence {id} in {silences:#}"))
}

/// The first alert's status, as `GET /api/v2/alerts` shows it.
async fn alert_status(am: &RealAlertmanager) -> Value {
    am.alerts().await.get(0).map(|alert| alert["status"].clone()).unwrap_or(Value::Null)
}

/// The matchers of a silence as (name, value, isEqual, isRegex), sorted by name.
fn matchers(silence: &Value) -> Vec<(String, String, bool, bool)> {
    let mut matchers: Vec<_> = silence["matchers"]
        .as_array()
        .expect("matchers are an array")
        .iter()
        .map(|m| {
            let text = |key: &str| m[key].as_str().expect("matcher text").to_owned();
            let flag = |key: &str| m[key].as_bool().expect("matcher flag");
            (text("name"), text("value"), flag("isEqual"), flag("isRegex"))
        })
        .collect();
    matchers.sort();
    matchers
}

#[tokio::test]
async fn a_silence_from_a_label_set_is_active_with_exactly_those_matchers_and_mutes_the_alert() {
    let webhook = Webhook::start().await;
    let Some(am) = RealAlertmanager::start(&webhook.url, None).await else { return };
    am.fire(json!([{"labels": disk_full()}])).await;
    wait_until("the alert is active", || async { alert_status(&am).await["state"] == "active" }).await;

    let id = client(&am.url).create_silence(&silence_for(&disk_full())).await.expect("silence created");

    let silence = silence_by_id(&am.silences().await, &id);
    assert_eq!(silence["status"]["state"], "active", "{silence:#}");
    let expected = [("alertname", "DiskFull"), ("instance", "db1:9100"), ("severity", "page")]
        .map(|(name, value)| (name.to_owned(), value.to_owned(), true, false));
    assert_eq!(matchers(&silence), expected);
    assert_eq!(silence["createdBy"], "alice");
    assert_eq!(silence["comment"], "disk swap on db1");
    wait_until("the alert is silenced", || async {
        let status = alert_status(&am).await;
        status["state"] == "suppressed" && status["silencedBy"] == json!([id])
    })
    .await;
}

#[tokio::test]
async fn an_expired_silence_stays_expired_and_expiring_twice_is_fine() {
    let webhook = Webhook::start().await;
    let Some(am) = RealAlertmanager::start(&webhook.url, None).await else { return };
    am.fire(json!([{"labels": disk_full()}])).await;
    let client = client(&am.url);
    let id = client.create_silence(&silence_for(&disk_full())).await.expect("silence created");
    wait_until("the alert is silenced", || async { alert_status(&am).await["state"] == "suppressed" }).await;

    client.expire_silence(&id).await.expect("silence expired");
    assert_eq!(silence_by_id(&am.silences().await, &id)["status"]["state"], "expired");
    client.expire_silence(&id).await.expect("expiring an expired silence succeeds");
    assert_eq!(silence_by_id(&am.silences().await, &id)["status"]["state"], "expired");
    wait_until("the alert is active again", || async { alert_status(&am).await["state"] == "active" }).await;
}

#[tokio::test]
async fn refusals_carry_alertmanagers_own_words() {
    let webhook = Webhook::start().await;
    let Some(am) = RealAlertmanager::start(&webhook.url, None).await else { return };
    let client = client(&am.url);

    let backwards =
        NewSilence { ends_at_ms: silence_for(&disk_full()).starts_at_ms - 60_000, ..silence_for(&disk_full()) };
    assert_eq!(
        client.create_silence(&backwards).await,
        Err(AlertmanagerError::Rejected {
            status: 400,
            message: "Failed to create silence: start time must be before end time".into()
        })
    );

    // The schema's `minItems: 1`, enforced by go-swagger before Alertmanager's own checks.
    let no_matchers = NewSilence { matchers: Vec::new(), ..silence_for(&disk_full()) };
    assert_eq!(
        client.create_silence(&no_matchers).await,
        Err(AlertmanagerError::Rejected {
            status: 422,
            message: "matchers in body should have at least 1 items".into()
        })
    );

    // 0.25 answers 500 "silence not found", 0.26 and later 404 with an empty body.
    match client.expire_silence("6132324f-fc0d-44ac-8642-2d9f1746a7c3").await {
        Err(AlertmanagerError::Rejected { message, .. }) => {
            assert!(message.to_lowercase().contains("not found"), "{message}")
        }
        other => panic!("expiring an unknown silence: {other:?}"),
    }
    assert_eq!(am.silences().await, json!([]));
}

#[tokio::test]
async fn the_client_works_below_a_route_prefix() {
    let webhook = Webhook::start().await;
    let Some(am) = RealAlertmanager::start_under("/alertmanager", &webhook.url, None).await else { return };
    let prefixed = client(&format!("{}/", am.url));
    let id = prefixed.create_silence(&silence_for(&disk_full())).await.expect("silence created");
    prefixed.expire_silence(&id).await.expect("silence expired");
    assert_eq!(silence_by_id(&am.silences().await, &id)["status"]["state"], "expired");

    // Without the prefix Alertmanager's router answers "404 page not found": a mistake to show, not to retry.
    let root = am.url.trim_end_matches("/alertmanager");
    assert_eq!(
        client(root).expire_silence(&id).await,
        Err(AlertmanagerError::Rejected { status: 404, message: "404 page not found".into() })
    );
}

#[tokio::test]
async fn a_closed_port_or_a_silent_server_is_unavailable() {
    // A port that was just free and is closed again: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = client(&format!("http://127.0.0.1:{port}"));
    match closed.create_silence(&silence_for(&disk_full())).await {
        Err(AlertmanagerError::Unavailable(message)) => assert!(message.starts_with("cannot connect"), "{message}"),
        other => panic!("closed port: {other:?}"),
    }

    // The kernel accepts the connection into the backlog, and nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let client = Alertmanager::new(&url, Some("never-shown".into()), Duration::from_millis(300)).unwrap();
    assert_eq!(client.expire_silence("x").await, Err(AlertmanagerError::Unavailable("no answer within 300ms".into())));
}

#[tokio::test]
async fn the_webhook_arrives_with_the_alert_and_the_bearer_token() {
    let webhook = Webhook::start().await;
    let Some(am) = RealAlertmanager::start(&webhook.url, Some(TOKEN)).await else { return };
    am.fire(json!([{"labels": disk_full(), "annotations": {"summary": "db1 disk is 95% full"}}])).await;

    wait_until("Alertmanager posts to the webhook", || async { !webhook.deliveries().is_empty() }).await;
    let delivery = webhook.deliveries().remove(0);
    assert_eq!(delivery.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    let body = &delivery.body;
    assert_eq!(body["version"], "4", "{body:#}");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "opsclaw");
    let alert = &body["alerts"][0];
    assert_eq!(alert["labels"], disk_full());
    assert_eq!(alert["annotations"]["summary"], "db1 disk is 95% full");
    let fingerprint = alert["fingerprint"].as_str().expect("a fingerprint");
    assert_eq!(fingerprint, am.alerts().await[0]["fingerprint"], "the webhook and the API agree on the fingerprint");
}

#[test]
fn the_listen_address_is_read_from_the_log() {
    let check = |log: &str, expected: Option<&str>| assert_eq!(listen_address(log).as_deref(), expected, "{log}");
    check(
        "ts=2026-11-22T08:54:43.503Z caller=tls_config.go:232 level=info msg=\"Listening on\" address=127.0.0.1:40775",
        Some("127.0.0.1:40775"),
    );
    // The slog format of Alertmanager 0.28 and later.
    check(
        "time=2026-11-22T08:54:43.503Z level=INFO source=tls_config.go:347 msg=\"Listening on\" address=127.0.0.1:9093",
        Some("127.0.0.1:9093"),
    );
    check("ts=… level=info msg=\"Starting Alertmanager\"", None);
}
