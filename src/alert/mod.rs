//! Alerts: webhooks from Alertmanager, Grafana and generic sources become
//! stored alert groups (deduplicated by fingerprint, with their history),
//! each shown as one card per routed chat that acks, silences and
//! resolutions update in place.
//!
//! `source` parses webhooks, `model` holds the shared types, `intake` is the
//! HTTP side, `route` picks chats, `card` renders a group, `notify` queues
//! the cards, `alertmanager` talks to Alertmanager's API, `config` reads `[alerts]`.

pub mod alertmanager;
pub mod card;
pub mod config;
pub mod escalate;
pub mod intake;
pub mod model;
pub mod notify;
pub mod oncall;
pub mod route;
pub mod source;

use std::sync::Arc;

use self::alertmanager::Alertmanager;
use self::config::AlertsConfig;
use self::model::Ingest;
use self::notify::NotifyHandle;
use crate::pipeline::journal::{Journal, JournalError};
use crate::store::{AlertOp, OpOutcome, Write, Written};

/// What handlers and the intake use to change alerts: every change is one
/// journal write, after which the notifier is told.
pub struct Alerts {
    pub config: Arc<AlertsConfig>,
    pub alertmanager: Option<Alertmanager>,
    pub journal: Journal,
    pub notify: NotifyHandle,
}

impl Alerts {
    /// Stores a webhook's alerts; returns the groups whose card changed.
    pub async fn ingest(&self, ingest: Ingest) -> Result<Vec<i64>, JournalError> {
        let groups = match self.journal.write(Write::AlertIngest(Arc::new(ingest))).await? {
            Written::AlertGroups(groups) => groups,
            other => unreachable!("an alert ingest is answered with its groups, not {other:?}"),
        };
        self.notify.changed(groups.clone());
        Ok(groups)
    }

    /// Applies `op`; the group's card is refreshed when it changed.
    pub async fn apply(&self, op: AlertOp) -> Result<OpOutcome, JournalError> {
        let group = match &op {
            AlertOp::Ack { group, .. }
            | AlertOp::SilenceClaim { group, .. }
            | AlertOp::SilenceDone { group, .. }
            | AlertOp::SilenceFailed { group, .. }
            | AlertOp::Failed { group, .. }
            | AlertOp::Unsilence { group, .. }
            | AlertOp::Resolve { group, .. } => *group,
        };
        let outcome = match self.journal.write(Write::Alert(op)).await? {
            Written::Alert(outcome) => outcome,
            other => unreachable!("an alert op is answered with its outcome, not {other:?}"),
        };
        if outcome == OpOutcome::Done {
            self.notify.changed(vec![group]);
        }
        Ok(outcome)
    }
}
