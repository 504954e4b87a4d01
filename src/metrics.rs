//! Metric names and the Prometheus recorder. Code records through the
//! `metrics` facade with these names; `/metrics` renders the recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const EVENTS_IN: &str = "opsclaw_events_total";
pub const EVENTS_DUPLICATE: &str = "opsclaw_events_duplicate_total";
pub const HANDLER_SECONDS: &str = "opsclaw_handler_seconds";
pub const OUTBOX_DEPTH: &str = "opsclaw_outbox_depth";
pub const INBOX_PENDING: &str = "opsclaw_inbox_pending";
pub const SENDS: &str = "opsclaw_sends_total";
pub const SEND_FAILURES: &str = "opsclaw_send_failures_total";
pub const SEND_RATE_LIMITED: &str = "opsclaw_send_rate_limited_total";
pub const CARD_UPDATES_SUPERSEDED: &str = "opsclaw_card_updates_superseded_total";
pub const ALERTS_IN: &str = "opsclaw_alerts_received_total";
pub const ALERTS_REJECTED: &str = "opsclaw_alert_webhooks_rejected_total";
pub const ALERT_GROUPS_FIRING: &str = "opsclaw_alert_groups_firing";
pub const JOURNAL_BATCH: &str = "opsclaw_journal_batch_size";
pub const CHANNEL_UP: &str = "opsclaw_channel_up";
/// 1 on the replica holding the lease (`telegram.poller`), 0 on the others.
pub const LEASE_HELD: &str = "opsclaw_lease_held";
pub const CHANNEL_RECONNECTS: &str = "opsclaw_channel_reconnects";
pub const CHANNEL_LAST_EVENT_AGE: &str = "opsclaw_channel_last_event_age_seconds";
pub const LOG_SEARCH_SECONDS: &str = "opsclaw_log_search_seconds";
pub const LOG_SEARCH_ERRORS: &str = "opsclaw_log_search_errors_total";

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(HANDLER_SECONDS.to_owned()),
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(LOG_SEARCH_SECONDS.to_owned()),
                    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(JOURNAL_BATCH.to_owned()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed by an embedding program; ours then only renders.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}
