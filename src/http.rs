//! The HTTP server: `/healthz` (the process answers), `/readyz` (migrations
//! ran, the database answers, every enabled channel is connected) and
//! `/metrics` (Prometheus text). Platform callbacks and webhooks mount here too.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics as m;
use crate::platform::{ChannelState, Channels};
use crate::status::Stats;
use crate::store::Store;

pub struct HttpState {
    pub stats: Arc<Stats>,
    pub channels: Channels,
    pub store: Store,
    pub prometheus: PrometheusHandle,
    pub clock: Clock,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves until `shutdown` fires.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, String) {
    if !state.stats.started.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n".into());
    }
    if let Err(e) = state.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: database: {e}\n"));
    }
    let problems = state.channels.not_ready();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join("; ")))
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> String {
    let now = state.clock.now_ms();
    for (name, status) in state.channels.snapshot() {
        // A standby channel (another replica polls Telegram) is healthy here.
        let up = if matches!(status.state, ChannelState::Connected | ChannelState::Standby(_)) { 1.0 } else { 0.0 };
        metrics::gauge!(m::CHANNEL_UP, "channel" => name.clone()).set(up);
        metrics::gauge!(m::CHANNEL_RECONNECTS, "channel" => name.clone()).set(status.reconnects as f64);
        if let Some(last) = status.last_event_ms {
            metrics::gauge!(m::CHANNEL_LAST_EVENT_AGE, "channel" => name).set((now - last).max(0) as f64 / 1000.0);
        }
    }
    state.prometheus.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn state(dir: &std::path::Path) -> Arc<HttpState> {
        let store = Store::connect(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
        store.migrate().await.unwrap();
        Arc::new(HttpState {
            stats: Arc::new(Stats::default()),
            channels: Channels::default(),
            store,
            prometheus: crate::metrics::install(),
            clock: Clock::new(),
        })
    }

    #[tokio::test]
    async fn ready_only_when_started_and_every_channel_is_connected() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        state.channels.register("feishu");
        let check = |state: Arc<HttpState>| async move { readyz(State(state)).await };
        assert_eq!(check(state.clone()).await, (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n".into()));
        state.stats.started.store(true, Ordering::SeqCst);
        assert_eq!(
            check(state.clone()).await,
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: feishu is connecting\n".into())
        );
        state.channels.set_state("feishu", ChannelState::Connected);
        assert_eq!(check(state.clone()).await, (StatusCode::OK, "ready\n".into()));
        state.channels.set_state("feishu", ChannelState::Reconnecting);
        assert_eq!(
            check(state.clone()).await,
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: feishu is reconnecting\n".into())
        );
    }
}
