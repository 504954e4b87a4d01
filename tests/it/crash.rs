//! Crash safety: SIGKILL while replies sit in the outbox; after a restart on
//! the same database every reply is delivered exactly once.

use opsclaw::store::Store;

use super::harness::{Proc, wait_until, write_config};

const N: usize = 8;

#[tokio::test]
async fn replies_queued_at_a_crash_are_delivered_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // One reply a second and no waiting for answers: the outbox fills up, and the
    // kill below lands far from the next send.
    let config = "data_dir = \"data\"\n[console]\nuser = \"you\"\nrate_per_second = 1\nburst = 1\nwait_for_replies = false\n\
                  [access]\nallowed_chats = [\"console:*\"]\n[pipeline]\nshutdown_timeout = \"60s\"\n";
    let path = write_config(dir.path(), config);
    let args = ["chat", "--config", path.to_str().unwrap()];

    let mut first = Proc::spawn(&args, dir.path());
    for n in 1..=N {
        first.send(&format!("/ping {n}")).await;
    }
    first.expect("pong: 2").await;
    // Kill only once the two printed replies are recorded as sent and the
    // rest are queued, so the crash lands between deliveries, mid-backlog.
    let db = format!("sqlite://{}", dir.path().join("data/opsclaw.db").display());
    let store = Store::connect(&db).await.unwrap();
    wait_until("two replies are sent and the rest queued", || async {
        store.outbox_pending_count().await.unwrap() == (N - 2) as i64 && store.inbox_pending_count().await.unwrap() == 0
    })
    .await;
    let before = first.kill().await;

    let second = Proc::spawn(&args, dir.path());
    let (status, after) = second.finish().await;
    assert!(status.success(), "restart exited with {status}");
    assert_eq!(store.outbox_pending_count().await.unwrap(), 0);

    let all: Vec<&String> = before.iter().chain(&after).filter(|l| l.contains("pong: ")).collect();
    for n in 1..=N {
        let reply = format!("opsclaw> pong: {n}");
        let count = all.iter().filter(|l| **l == &reply).count();
        assert_eq!(count, 1, "{reply:?} delivered {count} times; before: {before:?} after: {after:?}");
    }
}
