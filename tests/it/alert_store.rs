//! The alert tables, run on SQLite and on PostgreSQL (with OPSCLAW_TEST_PG_URL):
//! dedup, grouping, history, races decided by conditional updates, placement.

use std::collections::BTreeMap;
use std::sync::Arc;

use opsclaw::alert::model::Ingest;
use opsclaw::alert::source::{AlertStatus, IncomingAlert, IncomingBatch, SourceKind};
use opsclaw::event::{ChatRef, PlatformKind};
use opsclaw::store::{AlertOp, OpOutcome, Store, StormLimit, Write, Written};

use super::harness::{pg_drop_schema, pg_replicas, pg_schema, pg_url};

const NOW: i64 = 1_700_000_000_000;

fn alert(name: &str, instance: &str, status: AlertStatus) -> IncomingAlert {
    let labels: BTreeMap<String, String> = [("alertname", name), ("instance", instance), ("severity", "critical")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    IncomingAlert {
        fingerprint: format!("{name}-{instance}"),
        status,
        labels,
        annotations: BTreeMap::from([("summary".to_owned(), format!("{name} on {instance}"))]),
        starts_at_ms: Some(NOW - 60_000),
        ends_at_ms: None,
        generator_url: Some("http://prometheus/graph".into()),
        links: Vec::new(),
    }
}

fn ingest(alerts: Vec<IncomingAlert>) -> Write {
    let batch = IncomingBatch {
        source: SourceKind::Generic,
        group_key: None,
        group_labels: BTreeMap::new(),
        external_url: None,
        truncated_alerts: 0,
        alerts,
    };
    Write::AlertIngest(Arc::new(Ingest::new(batch, &[])))
}

async fn one(store: &Store, write: Write, at: i64) -> Written {
    store.apply(&[write], at).await.remove(0).expect("write succeeds")
}

async fn op(store: &Store, op: AlertOp, at: i64) -> OpOutcome {
    match one(store, Write::Alert(op), at).await {
        Written::Alert(outcome) => outcome,
        other => panic!("{other:?}"),
    }
}

async fn suite(store: Store) {
    use AlertStatus::{Firing, Resolved};
    store.migrate().await.unwrap();
    let write = || {
        ingest(vec![alert("DiskFull", "db1", Firing), alert("DiskFull", "db2", Firing), alert("Cpu", "web1", Firing)])
    };
    let Written::AlertGroups(groups) = one(&store, write(), NOW).await else { panic!() };
    assert_eq!(groups.len(), 2, "grouped by alertname");
    let disk = groups[0];
    let view = store.alert_group(disk).await.unwrap().unwrap();
    assert_eq!((view.firing, view.n_firing, view.n_total, view.version), (true, 2, 2, 1));
    assert_eq!(store.dirty_alert_groups(10).await.unwrap().len(), 2);

    // The same notification again changes nothing.
    assert_eq!(one(&store, write(), NOW + 1).await, Written::AlertGroups(vec![]));
    assert_eq!(store.count_alerts().await.unwrap(), 3);
    let alerts = store.group_alerts(disk, 10).await.unwrap();
    assert_eq!(alerts[0].received, 2);

    // Notified: no longer dirty, unless a newer version came meanwhile.
    let notified = Write::AlertNotified { group: disk, version: 1, deliveries: vec![], tokens: vec![] };
    assert_eq!(one(&store, notified, NOW + 2).await, Written::Enqueued(vec![]));
    assert!(!store.dirty_alert_groups(10).await.unwrap().contains(&disk));

    // One resolves: the group changes, history has both.
    let Written::AlertGroups(changed) = one(&store, ingest(vec![alert("DiskFull", "db1", Resolved)]), NOW + 3).await
    else {
        panic!()
    };
    assert_eq!(changed, vec![disk]);
    let view = store.alert_group(disk).await.unwrap().unwrap();
    assert_eq!((view.n_firing, view.version), (1, 2));
    assert!(store.dirty_alert_groups(10).await.unwrap().contains(&disk));

    // Two acks: one wins, the other learns who was first.
    let ack = |by: &str| AlertOp::Ack { group: disk, by: by.into() };
    assert_eq!(op(&store, ack("alice"), NOW + 4).await, OpOutcome::Done);
    assert_eq!(op(&store, ack("bob"), NOW + 5).await, OpOutcome::Already { by: "alice".into(), at_ms: NOW + 4 });
    assert_eq!(op(&store, AlertOp::Ack { group: 999_999, by: "x".into() }, NOW).await, OpOutcome::NotFound);

    // Silence: claimed once, shown once done, undone once.
    let claim = |by: &str| AlertOp::SilenceClaim { group: disk, by: by.into(), until_ms: NOW + 3_600_000 };
    assert_eq!(op(&store, claim("bob"), NOW + 6).await, OpOutcome::Done);
    assert!(store.alert_group(disk).await.unwrap().unwrap().silenced.is_none(), "not shown until created");
    assert_eq!(op(&store, claim("carol"), NOW + 7).await, OpOutcome::Already { by: "bob".into(), at_ms: NOW + 6 });
    let done = AlertOp::SilenceDone { group: disk, by: "bob".into(), ids: vec!["s-1".into()] };
    assert_eq!(op(&store, done, NOW + 8).await, OpOutcome::Done);
    let silenced = store.alert_group(disk).await.unwrap().unwrap().silenced.unwrap();
    assert_eq!((silenced.by.as_str(), silenced.ids.clone()), ("bob", vec!["s-1".to_owned()]));
    let unsilence = || AlertOp::Unsilence { group: disk, by: "alice".into() };
    assert_eq!(op(&store, unsilence(), NOW + 9).await, OpOutcome::Done);
    assert_eq!(op(&store, unsilence(), NOW + 10).await, OpOutcome::Unchanged);

    // Resolution by hand, then a refire: a new incident, the old ack gone.
    assert_eq!(op(&store, AlertOp::Resolve { group: disk, by: "alice".into() }, NOW + 11).await, OpOutcome::Done);
    assert_eq!(op(&store, ack("bob"), NOW + 12).await, OpOutcome::Resolved);
    one(&store, ingest(vec![alert("DiskFull", "db2", Firing)]), NOW + 13).await;
    let view = store.alert_group(disk).await.unwrap().unwrap();
    assert!(view.firing && view.acked.is_none() && view.resolved_by.is_none(), "{view:?}");
    let kinds: Vec<String> = store.alert_history(disk, 50).await.unwrap().into_iter().map(|h| h.kind).collect();
    assert_eq!(
        kinds,
        ["firing", "firing", "resolved", "acked", "silenced", "unsilenced", "resolved", "firing"],
        "every change, in order"
    );

    // Placement: one card per window, then the digest; a group keeps its placement.
    let chat = ChatRef::new(PlatformKind::Telegram, "-100");
    let storm = StormLimit { max_cards: 1, window_ms: 60_000 };
    let place = |group: i64| Write::AlertPlace { group, chats: vec![chat.clone()], storm };
    assert_eq!(one(&store, place(disk), NOW).await, Written::Placements(vec![(chat.clone(), None)]));
    let Written::Placements(p) = one(&store, place(groups[1]), NOW + 1).await else { panic!() };
    let digest = p[0].1.expect("over the budget: folded");
    assert_eq!(one(&store, place(disk), NOW + 2).await, Written::Placements(vec![(chat.clone(), None)]));
    let (folded, total) = store.digest_groups(digest, 10).await.unwrap();
    assert_eq!((folded.len(), total, folded[0].id), (1, 1, groups[1]));
    // After the window, a new card is allowed again.
    let third = match one(&store, ingest(vec![alert("Mem", "web1", Firing)]), NOW).await {
        Written::AlertGroups(g) => g[0],
        other => panic!("{other:?}"),
    };
    assert_eq!(one(&store, place(third), NOW + 61_000).await, Written::Placements(vec![(chat, None)]));

    // Escalation steps are claimed once each; an ack stops them.
    let esc =
        |level, initial| Write::AlertEscalate { group: third, level, to: "alice".into(), initial, deliveries: vec![] };
    // Only a group whose card is queued is a candidate: a mention never comes before its card.
    assert!(!store.escalation_candidates(NOW, 0, 100).await.unwrap().iter().any(|c| c.group == third));
    let version = store.alert_group(third).await.unwrap().unwrap().version;
    one(&store, Write::AlertNotified { group: third, version, deliveries: vec![], tokens: vec![] }, NOW).await;
    let page = store.escalation_candidates(NOW, third - 1, 1).await.unwrap();
    assert_eq!(page.iter().map(|c| c.group).collect::<Vec<_>>(), [third], "pages go by id");
    assert!(store.escalation_candidates(NOW, 0, 100).await.unwrap().iter().any(|c| c.group == third && c.level == 0));
    assert_eq!(one(&store, esc(1, true), NOW).await, Written::Enqueued(vec![]));
    assert_eq!(one(&store, esc(1, true), NOW).await, Written::Alert(OpOutcome::Unchanged), "taken once");
    assert_eq!(store.alert_group(third).await.unwrap().unwrap().escalated_to, None, "the first mention is not shown");
    assert_eq!(one(&store, esc(2, false), NOW).await, Written::Enqueued(vec![]));
    assert_eq!(store.alert_group(third).await.unwrap().unwrap().escalated_to.as_deref(), Some("alice"));
    assert_eq!(op(&store, AlertOp::Ack { group: third, by: "bob".into() }, NOW).await, OpOutcome::Done);
    assert_eq!(one(&store, esc(3, false), NOW).await, Written::Alert(OpOutcome::Unchanged), "acked: no more steps");
    assert!(!store.escalation_candidates(NOW, 0, 100).await.unwrap().iter().any(|c| c.group == third));

    // Retention: resolved groups are forgotten after it, firing ones never.
    let firing_before = store.firing_alert_groups(100).await.unwrap().len();
    assert_eq!(op(&store, AlertOp::Resolve { group: third, by: "bob".into() }, NOW).await, OpOutcome::Done);
    assert_eq!(store.cleanup_alerts(NOW - 1).await.unwrap(), 0, "not yet past retention");
    assert!(store.cleanup_alerts(NOW + 1).await.unwrap() > 0);
    assert!(store.alert_group(third).await.unwrap().is_none());
    assert_eq!(store.firing_alert_groups(100).await.unwrap().len(), firing_before - 1, "firing groups stay");

    // One group of 3,000 alerts in one webhook (past the parameter limits of one statement).
    let big: Vec<IncomingAlert> = (0..3000).map(|i| alert("Big", &format!("h{i}"), Firing)).collect();
    let Written::AlertGroups(changed) = one(&store, ingest(big), NOW).await else { panic!() };
    let view = store.alert_group(changed[0]).await.unwrap().unwrap();
    assert_eq!((view.n_firing, view.n_total), (3000, 3000));
}

#[tokio::test]
async fn alert_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    suite(Store::connect(&format!("sqlite://{}", dir.path().join("a.db").display())).await.unwrap()).await;
}

#[tokio::test]
async fn alert_store_on_postgres() {
    let Some(url) = pg_url("alert_store_on_postgres") else { return };
    let (schema_url, schema) = pg_schema(&url).await;
    suite(Store::connect(&schema_url).await.unwrap()).await;
    pg_drop_schema(&url, &schema).await;
}

/// The same webhook reaching three replicas at the same moment is one group
/// with one alert; three replicas acking it at once: one ack wins.
#[tokio::test]
async fn concurrent_ingest_and_acks_from_three_replicas_agree() {
    let Some(url) = pg_url("concurrent_ingest_and_acks_from_three_replicas_agree") else { return };
    let (schema_url, schema) = pg_schema(&url).await;
    let stores = pg_replicas(&schema_url, 3).await;
    for round in 0..5 {
        let name = format!("Race{round}");
        let write = || ingest(vec![alert(&name, "db1", AlertStatus::Firing), alert(&name, "db2", AlertStatus::Firing)]);
        let (a, b, c) =
            tokio::join!(one(&stores[0], write(), NOW), one(&stores[1], write(), NOW), one(&stores[2], write(), NOW));
        let groups: std::collections::BTreeSet<i64> = [a, b, c]
            .into_iter()
            .flat_map(|w| match w {
                Written::AlertGroups(ids) => ids,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(groups.len(), 1, "one group for one alert group key");
        let group = *groups.first().unwrap();
        let alerts = stores[0].group_alerts(group, 10).await.unwrap();
        assert_eq!(alerts.len(), 2, "each alert once");
        let ack = |i: usize, by: &'static str| op(&stores[i], AlertOp::Ack { group, by: by.into() }, NOW);
        let (a, b, c) = tokio::join!(ack(0, "alice"), ack(1, "bob"), ack(2, "carol"));
        let outcomes = [a, b, c];
        assert_eq!(outcomes.iter().filter(|o| **o == OpOutcome::Done).count(), 1, "{outcomes:?}");
        assert_eq!(outcomes.iter().filter(|o| matches!(o, OpOutcome::Already { .. })).count(), 2, "{outcomes:?}");
    }
    pg_drop_schema(&url, &schema).await;
}
