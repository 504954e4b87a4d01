//! The escalation timer. A firing group whose severity has a policy takes
//! its steps as their times come, counted from when it started firing: the
//! on-call is mentioned when it starts (with `mention_oncall`), again at the
//! first `escalate` delay, and the next person of the schedule at each later
//! one. An ack, a silence or the resolution stops it; firing again starts
//! over. Each step is one journal write that claims it (a conditional update
//! on the step number) and queues its messages, so a step is taken once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::{AlertsConfig, Policy};
use super::route;
use crate::clock::{Clock, format_duration};
use crate::event::PlatformKind;
use crate::i18n::{Catalog, LocaleRules, Msg};
use crate::pipeline::dispatch::{prepare, queued};
use crate::pipeline::journal::Journal;
use crate::pipeline::outbox::Outbox;
use crate::reply::{Mention, QueuedReply, Reply, ReplyBody};
use crate::store::{EscalationCandidate, Store, StoreError, Write, Written};

const TICK: Duration = Duration::from_secs(1);

/// One step of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// After the group started firing.
    pub after: Duration,
    /// Call the next person in the schedule rather than the one on call.
    pub next: bool,
    /// The first mention when the group starts firing, not an escalation.
    pub initial: bool,
}

pub fn steps(policy: &Policy) -> Vec<Step> {
    let initial = policy.mention_oncall.then_some(Step { after: Duration::ZERO, next: false, initial: true });
    let escalations =
        policy.escalate.iter().enumerate().map(|(i, after)| Step { after: *after, next: i > 0, initial: false });
    initial.into_iter().chain(escalations).collect()
}

/// The step `candidate` is due at `now_ms`, with its 1-based number.
pub fn due(policy: &Policy, candidate: &EscalationCandidate, now_ms: i64) -> Option<(i64, Step)> {
    let steps = steps(policy);
    let step = *steps.get(usize::try_from(candidate.level).ok()?)?;
    (now_ms >= candidate.firing_since + step.after.as_millis() as i64).then_some((candidate.level + 1, step))
}

pub struct Escalator {
    pub store: Store,
    pub journal: Journal,
    pub outbox: Arc<Outbox>,
    pub config: Arc<AlertsConfig>,
    /// Each principal's user ids by platform, to mention them.
    pub people: HashMap<String, Vec<(PlatformKind, String)>>,
    pub catalog: Arc<Catalog>,
    pub locales: LocaleRules,
    pub clock: Clock,
}

impl Escalator {
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            match self.tick().await {
                Ok(rows) => self.outbox.hand_off(rows).await,
                Err(e) => tracing::warn!(error = %e, "escalation check failed"),
            }
        }
    }

    /// Takes every step that is due now; returns the messages queued.
    pub async fn tick(&self) -> Result<Vec<QueuedReply>, StoreError> {
        if self.config.policies.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        let mut rows = Vec::new();
        // Every open group is looked at, page by page: groups past their last
        // step stay candidates and must not crowd out later ones.
        let mut after = 0;
        loop {
            let page = self.store.escalation_candidates(now, after, 500).await?;
            let Some(last) = page.last() else { return Ok(rows) };
            after = last.group;
            for candidate in page {
                let Some(policy) = self.config.policy(candidate.severity) else { continue };
                let Some((level, step)) = due(policy, &candidate, now) else { continue };
                rows.extend(self.take(&candidate, policy, level, step, now).await?);
            }
        }
    }

    async fn take(
        &self,
        candidate: &EscalationCandidate,
        policy: &Policy,
        level: i64,
        step: Step,
        now: i64,
    ) -> Result<Vec<QueuedReply>, StoreError> {
        let Some(group) = self.store.alert_group(candidate.group).await? else { return Ok(Vec::new()) };
        let schedule = &self.config.oncall[policy.schedule];
        let at = jiff::Timestamp::from_millisecond(now).unwrap_or_default();
        let shift = if step.next { schedule.next(at).or_else(|| schedule.on_call(at)) } else { schedule.on_call(at) };
        let Some(shift) = shift else { return Ok(Vec::new()) };
        let alerts = self.store.group_alerts(group.id, 1).await?;
        let mut labels = group.labels.clone();
        if let Some(first) = alerts.first() {
            labels.extend(first.labels.clone());
        }
        let title = labels.get("alertname").cloned().unwrap_or_else(|| group.key.clone());
        let id = group.id.to_string();
        let replies: Vec<Reply> = route::chats_for(&self.config.routes, &labels, now)
            .into_iter()
            .map(|chat| {
                let locale = self.locales.for_chat(&chat);
                let text = if step.initial {
                    let severity = group.severity.as_str();
                    self.catalog.text(
                        locale,
                        Msg::AlertOncallFiring,
                        &[("id", &id), ("title", &title), ("severity", severity)],
                    )
                } else {
                    let after = format_duration(step.after);
                    self.catalog.text(locale, Msg::AlertEscalated, &[("id", &id), ("title", &title), ("after", &after)])
                };
                // Named in the text either way; mentioned where they have an id on this platform.
                let user = self.people.get(&shift.person).and_then(|ids| ids.iter().find(|(p, _)| *p == chat.platform));
                let people = vec![Mention {
                    name: shift.person.clone(),
                    user: user.map(|(_, u)| u.clone()).unwrap_or_default(),
                }];
                Reply { chat, reply_to: None, thread: None, body: ReplyBody::Mention { text, people } }
            })
            .collect();
        let prefix = format!("alert-escalation:{}:{}:{level}", group.id, candidate.firing_since);
        let (deliveries, _) = prepare(&prefix, replies, now, Duration::ZERO);
        let write = Write::AlertEscalate {
            group: group.id,
            level,
            to: shift.person.clone(),
            initial: step.initial,
            deliveries: deliveries.clone(),
        };
        match self.journal.write(write).await {
            Ok(Written::Enqueued(ids)) => {
                tracing::info!(group = group.id, level, to = %shift.person, "alert escalated");
                Ok(deliveries.into_iter().zip(ids).filter_map(|(d, id)| Some(queued(d, id?, now))).collect())
            }
            // Acked or taken meanwhile.
            Ok(_) => Ok(Vec::new()),
            Err(crate::pipeline::journal::JournalError::Store(e)) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "the journal stopped; the step is taken at the next start");
                Ok(Vec::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::alert::config::{Policy, SourceConfig};
    use crate::alert::model::{Ingest, Severity};
    use crate::alert::oncall::{Rotation, Schedule};
    use crate::alert::route::Route;
    use crate::alert::source::{AlertStatus, IncomingAlert, IncomingBatch, SourceKind};
    use crate::event::ChatRef;
    use crate::pipeline::outbox::RetryPolicy;
    use crate::reply::QueuedBody;
    use crate::status::Stats;
    use crate::store::{AlertOp, StormLimit};

    const MIN: Duration = Duration::from_secs(60);

    fn policy() -> Policy {
        Policy { schedule: 0, mention_oncall: true, escalate: vec![15 * MIN, 30 * MIN] }
    }

    #[test]
    fn steps_mention_then_repeat_then_call_the_next() {
        let s = steps(&policy());
        let shape: Vec<_> = s.iter().map(|s| (s.after.as_secs() / 60, s.next, s.initial)).collect();
        assert_eq!(shape, [(0, false, true), (15, false, false), (30, true, false)]);
        let quiet = Policy { mention_oncall: false, ..policy() };
        assert_eq!(steps(&quiet).len(), 2);
        let candidate = |level| EscalationCandidate { group: 1, severity: Severity::Critical, firing_since: 0, level };
        let at = |m: u64| (m * 60_000) as i64;
        assert_eq!(due(&policy(), &candidate(0), 0).map(|(n, _)| n), Some(1));
        assert_eq!(due(&policy(), &candidate(1), at(14)), None);
        assert_eq!(due(&policy(), &candidate(1), at(15)).map(|(n, s)| (n, s.next)), Some((2, false)));
        assert_eq!(due(&policy(), &candidate(2), at(30)).map(|(n, s)| (n, s.next)), Some((3, true)));
        assert_eq!(due(&policy(), &candidate(3), at(600)), None, "no steps after the last");
    }

    fn incoming(name: &str) -> Ingest {
        let labels: BTreeMap<String, String> =
            [("alertname", name), ("severity", "critical")].into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let alert = IncomingAlert {
            fingerprint: name.into(),
            status: AlertStatus::Firing,
            labels,
            annotations: BTreeMap::new(),
            starts_at_ms: None,
            ends_at_ms: None,
            generator_url: None,
            links: vec![],
        };
        let batch = IncomingBatch {
            source: SourceKind::Generic,
            group_key: None,
            group_labels: BTreeMap::new(),
            external_url: None,
            truncated_alerts: 0,
            alerts: vec![alert],
        };
        Ingest::new(batch, &[])
    }

    /// (text, who is mentioned) of each queued message.
    fn said(rows: &[QueuedReply]) -> Vec<(String, String)> {
        rows.iter()
            .map(|r| match &r.body {
                QueuedBody::Mention { text, people } => {
                    (text.clone(), format!("{}={}", people[0].name, people[0].user))
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn escalation_steps_follow_the_clock_and_an_ack_stops_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        store.migrate().await.unwrap();
        // Time moves for the escalator only (`Clock::shifted`): a paused tokio
        // clock would also fire sqlx's acquire timeout while a query waits on
        // SQLite's worker thread.
        let clock = Clock::new();
        let stop = CancellationToken::new();
        let (journal, _task) = Journal::spawn(store.clone(), clock, stop.clone());
        let retry = RetryPolicy {
            max_attempts: 1,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
        };
        let outbox =
            Outbox::new(store.clone(), journal.clone(), vec![], retry, Arc::new(Stats::default()), clock, stop.clone());
        let chat = ChatRef::new(PlatformKind::Telegram, "-100");
        let schedule = Schedule {
            name: "primary".into(),
            rotation: Rotation::Weekly,
            people: vec!["alice".into(), "bob".into()],
            handover: jiff::Timestamp::from_millisecond(clock.now_ms() - 3_600_000)
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .datetime(),
            tz: jiff::tz::TimeZone::UTC,
            overrides: vec![],
        };
        let config = AlertsConfig {
            sources: HashMap::<SourceKind, SourceConfig>::new(),
            alertmanager: None,
            routes: vec![Route { matchers: vec![], window: None, chats: vec![chat.clone()], continue_matching: false }],
            shown_alerts: 5,
            storm: StormLimit { max_cards: 10, window_ms: 60_000 },
            oncall: vec![schedule],
            policies: HashMap::from([(Severity::Critical, policy())]),
            retention: Duration::from_secs(86_400),
        };
        let people = HashMap::from([
            ("alice".to_owned(), vec![(PlatformKind::Telegram, "111".to_owned())]),
            ("bob".to_owned(), vec![(PlatformKind::Telegram, "222".to_owned())]),
        ]);
        let mut escalator = Escalator {
            store: store.clone(),
            journal: journal.clone(),
            outbox,
            config: Arc::new(config),
            people,
            catalog: Arc::new(Catalog::embedded().unwrap()),
            locales: LocaleRules { default: crate::i18n::Locale::En, platforms: HashMap::new(), chats: HashMap::new() },
            clock,
        };
        let ingest = |name: &str| Write::AlertIngest(Arc::new(incoming(name)));
        journal.write(ingest("DiskFull")).await.unwrap();

        // Stands in for the notifier: the group's latest card is queued before each step.
        async fn step(store: &Store, journal: &Journal, escalator: &Escalator) -> Vec<(String, String)> {
            for group in store.dirty_alert_groups(10).await.unwrap() {
                let version = store.alert_group(group).await.unwrap().unwrap().version;
                let notified = Write::AlertNotified { group, version, deliveries: vec![], tokens: vec![] };
                journal.write(notified).await.unwrap();
            }
            said(&escalator.tick().await.unwrap())
        }
        let mut elapsed = Duration::ZERO;
        let mut advance = |escalator: &mut Escalator, by: Duration| {
            elapsed += by;
            escalator.clock = clock.shifted(elapsed);
        };
        let first = step(&store, &journal, &escalator).await;
        assert_eq!(first.len(), 1);
        assert!(first[0].0.contains("#1 DiskFull is firing (critical)"), "{first:?}");
        assert_eq!(first[0].1, "alice=111");
        assert!(step(&store, &journal, &escalator).await.is_empty(), "a step is taken once");

        advance(&mut escalator, 14 * MIN);
        assert!(step(&store, &journal, &escalator).await.is_empty(), "not yet");
        advance(&mut escalator, MIN);
        let second = step(&store, &journal, &escalator).await;
        assert!(second[0].0.contains("not acknowledged after 15m"), "{second:?}");
        assert_eq!(second[0].1, "alice=111");
        advance(&mut escalator, 15 * MIN);
        assert_eq!(step(&store, &journal, &escalator).await[0].1, "bob=222", "then the next person");
        advance(&mut escalator, 600 * MIN);
        assert!(step(&store, &journal, &escalator).await.is_empty(), "and nothing after the last step");
        let card = store.alert_group(1).await.unwrap().unwrap();
        assert_eq!((card.escalation_level, card.escalated_to.as_deref()), (3, Some("bob")));

        // A second incident, acknowledged after the first mention: no escalation.
        journal.write(ingest("QueueStuck")).await.unwrap();
        assert_eq!(step(&store, &journal, &escalator).await.len(), 1);
        journal.write(Write::Alert(AlertOp::Ack { group: 2, by: "alice".into() })).await.unwrap();
        advance(&mut escalator, 60 * MIN);
        assert!(step(&store, &journal, &escalator).await.is_empty(), "an ack stops escalation");
        stop.cancel();
    }
}
