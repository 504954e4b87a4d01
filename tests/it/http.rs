//! `opsclaw run` with its HTTP server: health, readiness and metrics.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::harness::{Proc, wait_until, write_config};

/// A plain HTTP/1.1 GET; returns the status code and body.
async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to opsclaw");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = "data_dir = \"data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
                  [console]\nuser = \"you\"\n[access]\nallowed_chats = [\"console:*\"]\n";
    let path = write_config(dir.path(), config);
    let mut bot = Proc::spawn(&["run", "--config", path.to_str().unwrap()], dir.path());
    let addr = bot.http_addr().await;

    assert_eq!(get(&addr, "/healthz").await, (200, "ok\n".into()));
    bot.send("/ping").await;
    bot.expect("opsclaw> pong").await;
    assert_eq!(get(&addr, "/readyz").await, (200, "ready\n".into()));

    // The reply is printed inside the send; the counter moves just after it
    // returns. The gauges are set by housekeeping's first round.
    wait_until("/metrics counts the send and has the gauges", || async {
        let metrics = get(&addr, "/metrics").await.1;
        metrics.contains("opsclaw_sends_total{platform=\"console\"} 1") && metrics.contains("opsclaw_outbox_depth")
    })
    .await;
    let (status, metrics) = get(&addr, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "opsclaw_events_total{platform=\"console\",kind=\"message\"} 1",
        "opsclaw_handler_seconds_bucket{command=\"ping\"",
        "opsclaw_sends_total{platform=\"console\"} 1",
        "opsclaw_outbox_depth",
        "opsclaw_channel_up{channel=\"console\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in /metrics:\n{metrics}");
    }
    let (status, _) = bot.finish().await;
    assert!(status.success());
}
