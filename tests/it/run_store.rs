//! The run tables, on SQLite and on PostgreSQL (with OPSCLAW_TEST_PG_URL):
//! one run per target, one vote per approver and never the requester's,
//! expiry, results, interruption, and an audit log that refuses changes.

use opsclaw::event::{ChatRef, PlatformKind};
use opsclaw::store::{Finish, NewRun, RunOp, RunOutcome, Store, Who, Write, Written};

use super::harness::{pg_drop_schema, pg_replicas, pg_schema, pg_url};

const NOW: i64 = 1_700_000_000_000;

fn who(name: &str) -> Who {
    Who {
        key: name.into(),
        id: format!("telegram:{name}"),
        chat: Some("telegram:-1".into()),
        message: Some("9".into()),
    }
}

fn new_run(event: &str, version: &str, needed: i64) -> NewRun {
    NewRun {
        event_id: event.into(),
        command: "deploy".into(),
        kind: "run".into(),
        target: "pay/prod".into(),
        app: Some("pay".into()),
        env: Some("prod".into()),
        version: Some(version.into()),
        from_version: None,
        rollback_of: None,
        args: r#"{"app":"pay"}"#.into(),
        plan: r#"{"steps":[],"rollback":[],"auto_rollback":false,"workdir":".","env":[],"secrets":[]}"#.into(),
        requester: who("alice"),
        chat: ChatRef::new(PlatformKind::Telegram, "-1"),
        thread: None,
        approvals_needed: needed,
        approver_role: Some("approver".into()),
        expires_at: Some(NOW + 60_000),
        start: false,
    }
}

async fn op(store: &Store, op: RunOp, at: i64) -> RunOutcome {
    match store.apply(&[Write::Run(op)], at).await.remove(0).expect("write succeeds") {
        Written::Run(outcome) => outcome,
        other => panic!("{other:?}"),
    }
}

fn finish(run: i64, state: &str) -> RunOp {
    RunOp::Finish(Box::new(Finish {
        run,
        state: state.into(),
        step: Some("deploy".into()),
        exit_code: Some(0),
        output: "ok\n".into(),
        output_digest: "ab".into(),
        error: None,
        duration_ms: 5,
    }))
}

async fn suite(store: Store) {
    store.migrate().await.unwrap();
    let RunOutcome::Requested { id: first, started: false } =
        op(&store, RunOp::Request(Box::new(new_run("e1", "1.0.0", 2))), NOW).await
    else {
        panic!("the first request is stored")
    };
    // The same event again (a replay) finds its run; another run on the target is refused.
    assert_eq!(op(&store, RunOp::Request(Box::new(new_run("e1", "1.0.0", 2))), NOW).await, RunOutcome::Existing(first));
    assert_eq!(
        op(&store, RunOp::Request(Box::new(new_run("e2", "1.0.1", 2))), NOW).await,
        RunOutcome::Locked { holder: first }
    );
    // Never the requester; each approver once; the run starts at the second.
    assert_eq!(op(&store, RunOp::Approve { run: first, by: who("alice") }, NOW).await, RunOutcome::SelfApproval);
    assert_eq!(
        op(&store, RunOp::Approve { run: first, by: who("bob") }, NOW).await,
        RunOutcome::Approved { got: 1, needed: 2 }
    );
    assert_eq!(op(&store, RunOp::Approve { run: first, by: who("bob") }, NOW).await, RunOutcome::AlreadyApproved);
    assert_eq!(op(&store, RunOp::Approve { run: first, by: who("carol") }, NOW).await, RunOutcome::Started);
    assert_eq!(
        op(&store, RunOp::Approve { run: first, by: who("dave") }, NOW).await,
        RunOutcome::NotPending("running".into())
    );
    let run = store.run(first).await.unwrap().unwrap();
    assert_eq!(run.state, "running");
    assert_eq!(run.approvals.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(), ["bob", "carol"]);
    assert_eq!(op(&store, finish(first, "succeeded"), NOW + 10).await, RunOutcome::Done);
    assert_eq!(store.deployed_version("pay", Some("prod")).await.unwrap().as_deref(), Some("1.0.0"));
    assert_eq!(store.deployed_version("pay", None).await.unwrap().as_deref(), Some("1.0.0"));

    // The finished run released the target. The next one expires unapproved.
    let RunOutcome::Requested { id: second, .. } =
        op(&store, RunOp::Request(Box::new(new_run("e3", "1.1.0", 1))), NOW).await
    else {
        panic!("the target is free")
    };
    assert_eq!(op(&store, RunOp::Expire, NOW + 1_000).await, RunOutcome::Runs(Vec::new()));
    assert_eq!(op(&store, RunOp::Expire, NOW + 61_000).await, RunOutcome::Runs(vec![second]));
    assert_eq!(
        op(&store, RunOp::Approve { run: second, by: who("bob") }, NOW + 62_000).await,
        RunOutcome::NotPending("expired".into())
    );

    // A run left running by a dead process is interrupted, once.
    let mut third = new_run("e4", "1.2.0", 0);
    third.start = true;
    let RunOutcome::Requested { id: third, started: true } = op(&store, RunOp::Request(Box::new(third)), NOW).await
    else {
        panic!("started at once")
    };
    let interrupt = || RunOp::Interrupt { reason: "restart".into() };
    assert_eq!(op(&store, interrupt(), NOW + 5).await, RunOutcome::Runs(vec![third]));
    assert_eq!(op(&store, interrupt(), NOW + 6).await, RunOutcome::Runs(Vec::new()));
    assert_eq!(op(&store, finish(third, "succeeded"), NOW + 7).await, RunOutcome::NotPending("interrupted".into()));
    assert_eq!(store.last_deployment("pay", Some("prod")).await.unwrap().map(|r| r.id), Some(third));
    let history = store.deployments("pay", Some("prod"), 10).await.unwrap();
    assert_eq!(history.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(), ["interrupted", "expired", "succeeded"]);

    let audit = store.audit_log(100).await.unwrap();
    let actions: Vec<String> =
        audit.iter().rev().map(|a| format!("{} {} {}", a.entry.actor, a.entry.action, a.entry.result)).collect();
    assert_eq!(
        actions,
        [
            "alice request pending",
            "alice refuse locked",
            "alice approve refused",
            "bob approve 1 of 2",
            "carol approve 2 of 2",
            "opsclaw start running",
            "dave approve refused",
            "opsclaw finish succeeded",
            "alice request pending",
            "opsclaw expire expired",
            "bob approve refused",
            "alice request running",
            "alice start running",
            "opsclaw interrupt interrupted",
        ]
    );
    let started = audit.iter().find(|a| a.entry.action == "start" && a.entry.run_id == Some(first)).unwrap();
    assert_eq!(started.entry.approvals.as_deref(), Some(r#"["bob","carol"]"#));
    assert_eq!(started.entry.chat, None, "the bot itself started it");
}

/// The audit log refuses UPDATE and DELETE, whoever asks.
async fn append_only(result_update: Result<(), sqlx::Error>, result_delete: Result<(), sqlx::Error>) {
    let update = result_update.expect_err("UPDATE audit_log is refused");
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = result_delete.expect_err("DELETE FROM audit_log is refused");
    assert!(delete.to_string().contains("append-only"), "{delete}");
}

#[tokio::test]
async fn run_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    suite(Store::connect(&format!("sqlite://{}", path.display())).await.unwrap()).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let update = sqlx::query("UPDATE audit_log SET result = 'ok'").execute(&pool).await.map(|_| ());
    let delete = sqlx::query("DELETE FROM audit_log").execute(&pool).await.map(|_| ());
    append_only(update, delete).await;
}

#[tokio::test]
async fn run_store_on_postgres() {
    let Some(url) = pg_url("run_store_on_postgres") else { return };
    let (schema_url, schema) = pg_schema(&url).await;
    suite(Store::connect(&schema_url).await.unwrap()).await;
    let pool = sqlx::PgPool::connect(&schema_url).await.unwrap();
    let update = sqlx::query("UPDATE audit_log SET result = 'ok'").execute(&pool).await.map(|_| ());
    let delete = sqlx::query("DELETE FROM audit_log").execute(&pool).await.map(|_| ());
    append_only(update, delete).await;
    pg_drop_schema(&url, &schema).await;
}

/// Three replicas approving one run (one approval needed) at the same
/// moment: one vote starts it, owned by that replica; the others change nothing.
#[tokio::test]
async fn concurrent_approvals_from_three_replicas_start_a_run_once() {
    let Some(url) = pg_url("concurrent_approvals_from_three_replicas_start_a_run_once") else { return };
    let (schema_url, schema) = pg_schema(&url).await;
    let stores = pg_replicas(&schema_url, 3).await;
    for (round, version) in ["1.0.0", "1.0.1", "1.0.2"].into_iter().enumerate() {
        let request = RunOp::Request(Box::new(new_run(&format!("race{round}"), version, 1)));
        let RunOutcome::Requested { id, .. } = op(&stores[0], request, NOW).await else { panic!("requested") };
        let approve = |i: usize, name: &'static str| op(&stores[i], RunOp::Approve { run: id, by: who(name) }, NOW);
        let (a, b, c) = tokio::join!(approve(0, "bob"), approve(1, "carol"), approve(2, "dave"));
        let outcomes = [a, b, c];
        let started: Vec<usize> = (0..3).filter(|i| outcomes[*i] == RunOutcome::Started).collect();
        assert_eq!(started.len(), 1, "one vote starts it: {outcomes:?}");
        let pool = sqlx::PgPool::connect(&schema_url).await.unwrap();
        let owner: String =
            sqlx::query_scalar("SELECT owner FROM runs WHERE id = $1").bind(id).fetch_one(&pool).await.unwrap();
        assert_eq!(owner, stores[started[0]].replica(), "the replica that started it runs it");
        // Its run is another replica's to report only once it stops heartbeating.
        stores[started[0]].register_replica("runner", NOW).await.unwrap();
        assert!(!stores[0].any_run_of_a_gone_replica(NOW + 1_000).await.unwrap());
        let gone = NOW + stores[0].lease_ms() + 1;
        assert!(stores[0].any_run_of_a_gone_replica(gone).await.unwrap());
        op(&stores[started[0]], finish(id, "succeeded"), NOW).await;
        assert!(!stores[0].any_run_of_a_gone_replica(gone).await.unwrap(), "finished");
    }
    pg_drop_schema(&url, &schema).await;
}
