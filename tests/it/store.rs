//! The store suite, run on SQLite and on PostgreSQL (with OPSCLAW_TEST_PG_URL).

use std::time::Duration;

use opsclaw::action::{Action, ActionToken, Grant};
use opsclaw::card::{Button, ButtonStyle, CardOf, Color};
use opsclaw::event::{ChatKind, ChatRef, Event, EventId, EventKind, MessageId, PlatformKind, Quoted, Sender, UserId};
use opsclaw::i18n::Locale;
use opsclaw::pipeline::dispatch::prepare;
use opsclaw::policy::Role;
use opsclaw::reply::{CardKey, CardMode, QueuedBody, Reply, ReplyBody};
use opsclaw::store::{AnswerOp, PendingAnswer, Store, Write, Written};

use super::harness::{pg_drop_schema, pg_schema, pg_url};

const NOW: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

fn event(raw: &str, chat: &str, text: &str) -> Event {
    Event {
        id: EventId::new(PlatformKind::Feishu, raw),
        chat: ChatRef::new(PlatformKind::Feishu, chat),
        chat_kind: ChatKind::Group,
        sender: Sender { id: UserId::new("ou_1"), display_name: "张三".into() },
        message_id: Some(MessageId::new(format!("om_{raw}"))),
        thread: None,
        received_at_ms: NOW,
        kind: EventKind::Message { text: text.into(), mentions_bot: true, quoted: None },
    }
}

fn card_reply(e: &Event) -> Reply {
    let card = CardOf {
        title: "t".into(),
        color: Color::Red,
        fields: vec![],
        body: "b".into(),
        buttons: vec![Button {
            label: "Refresh".into(),
            style: ButtonStyle::Primary,
            confirm: Some("sure?".into()),
            target: Grant {
                action: Action::RefreshStatus,
                role: Some(Role::parse("viewer").unwrap()),
                only: vec!["zhangsan".into()],
            },
        }],
        footer: None,
    };
    Reply::to(e, ReplyBody::Card { key: CardKey::new(format!("status:{}", e.id)), card, mode: CardMode::New })
}

async fn ok(store: &Store, writes: Vec<Write>) -> Vec<Written> {
    store.apply(&writes, NOW).await.into_iter().map(|r| r.expect("write succeeds")).collect()
}

async fn suite(store: Store) {
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrations are idempotent");

    // Inbox: accept once, recognize the redelivery, replay while pending, in order.
    let first = event("ev1", "oc_a", "/ping");
    let mut second = event("ev2", "oc_a", "/kb add Title");
    // A reply whose quoted message must still be known when the event is replayed.
    second.kind = EventKind::Message {
        text: "/kb add Title".into(),
        mentions_bot: true,
        quoted: Some(Quoted::Id(MessageId::new("om_parent"))),
    };
    let results =
        ok(&store, vec![Write::Accept(first.clone()), Write::Accept(first.clone()), Write::Accept(second.clone())])
            .await;
    assert_eq!(results, vec![Written::Accepted, Written::Duplicate, Written::Accepted]);
    assert_eq!(store.take_over_events(NOW).await.unwrap(), vec![first.clone(), second.clone()]);
    assert_eq!(store.inbox_pending_count().await.unwrap(), 2);

    // Completion: replies enter the outbox and the event is done, in one write.
    let replies = vec![Reply::text(&first, "pong"), card_reply(&first)];
    let (deliveries, tokens) = prepare(&first.id, replies, NOW, Duration::from_secs(3600));
    assert_eq!(tokens.len(), 1);
    let complete = Write::Complete { event: first.id.clone(), deliveries: deliveries.clone(), tokens: tokens.clone() };
    let Written::Enqueued(ids) = ok(&store, vec![complete]).await.remove(0) else { panic!("a completion enqueues") };
    assert!(ids.iter().all(Option::is_some) && ids[0] < ids[1], "ids in delivery order: {ids:?}");
    assert_eq!(store.take_over_events(NOW).await.unwrap(), vec![second.clone()]);
    let queued = store.outbox_pending(0, i64::MAX, 10).await.unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued.iter().map(|q| Some(q.id)).collect::<Vec<_>>(), ids);
    assert!(store.outbox_pending(0, NOW - 1, 10).await.unwrap().is_empty(), "rows newer than the cutoff are left");
    assert_eq!(queued[0].key, format!("{}#0", first.id));
    assert_eq!(queued[0].body, QueuedBody::Text("pong".into()));
    assert_eq!(queued[0].reply_to, first.message_id);
    let QueuedBody::Card { key, card, mode } = &queued[1].body else { panic!("second reply is a card") };
    assert_eq!((key.as_str(), *mode), (format!("status:{}", first.id).as_str(), CardMode::New));
    assert_eq!(card.buttons[0].target, tokens[0].token);
    assert_eq!(store.outbox_pending(queued[0].id, i64::MAX, 10).await.unwrap().len(), 1, "paging skips earlier rows");

    // Replaying the same completion (same idempotency keys) adds nothing.
    let replay = prepare(
        &first.id,
        vec![Reply::text(&first, "pong"), Reply::text(&first, "pong")],
        NOW,
        Duration::from_secs(3600),
    );
    let replayed =
        ok(&store, vec![Write::Complete { event: first.id.clone(), deliveries: replay.0, tokens: replay.1 }]).await;
    assert_eq!(replayed, vec![Written::Enqueued(vec![None, None])], "nothing new to deliver");
    assert_eq!(store.outbox_pending_count().await.unwrap(), 2);

    // Tokens: found with their grant, chat and card; unknown tokens are not.
    let grant = store.grant(&tokens[0].token).await.unwrap().expect("token stored");
    assert_eq!(grant.grant, tokens[0].grant);
    assert_eq!(grant.chat, first.chat);
    assert_eq!(grant.expires_at_ms, NOW + HOUR);
    assert!(store.grant(&ActionToken::generate()).await.unwrap().is_none());

    // Delivery results: sent (recording the card post), retried, failed.
    let post = (key.clone(), first.chat.clone(), MessageId::new("om_card"));
    ok(
        &store,
        vec![
            Write::Sent { id: queued[1].id, post: Some(post.clone()) },
            Write::Sent { id: queued[1].id, post: Some(post) },
        ],
    )
    .await;
    assert_eq!(store.card_posts(key, &first.chat).await.unwrap(), vec![MessageId::new("om_card")]);
    assert!(store.card_posts(key, &ChatRef::new(PlatformKind::Feishu, "oc_other")).await.unwrap().is_empty());
    ok(&store, vec![Write::Retry { id: queued[0].id, attempts: 3, next_attempt_at: NOW + 5000, error: "503".into() }])
        .await;
    let retried = store.outbox_pending(0, i64::MAX, 10).await.unwrap();
    assert_eq!((retried.len(), retried[0].attempts, retried[0].not_before_ms), (1, 3, NOW + 5000));
    ok(&store, vec![Write::Failed { id: queued[0].id, attempts: 4, error: "400 bad card".into() }]).await;
    assert_eq!(store.outbox_pending_count().await.unwrap(), 0);

    // One bad write in a batch fails alone: a token that already exists.
    let third = event("ev3", "oc_b", "/ping");
    let dup_token = Write::Complete { event: second.id.clone(), deliveries: vec![], tokens: tokens.clone() };
    let results = store.apply(&[Write::Accept(third.clone()), dup_token], NOW).await;
    assert_eq!(*results[0].as_ref().unwrap(), Written::Accepted);
    assert!(results[1].is_err(), "a duplicate token is refused");
    assert_eq!(
        store.take_over_events(NOW).await.unwrap(),
        vec![second.clone(), third.clone()],
        "nothing partial applied"
    );

    // Retention: handled ids are forgotten only after the retention window.
    let keep = Duration::from_secs(8 * 3600);
    store.cleanup(NOW + HOUR, keep, keep).await.unwrap();
    assert_eq!(ok(&store, vec![Write::Accept(first.clone())]).await, vec![Written::Duplicate], "kept within 8h");
    store.cleanup(NOW + 9 * HOUR, keep, keep).await.unwrap();
    assert_eq!(
        ok(&store, vec![Write::Accept(first.clone())]).await,
        vec![Written::Accepted],
        "forgotten after retention"
    );
    assert!(store.grant(&tokens[0].token).await.unwrap().is_none(), "expired tokens are deleted");
    assert_eq!(store.take_over_events(NOW).await.unwrap().len(), 3, "pending events are never cleaned");

    // A model's answer: pending from its first card (once, however often the
    // question is replayed) until its final card is queued.
    let answer = PendingAnswer {
        key: CardKey::new("ask:feishu:ev9"),
        chat: ChatRef::new(PlatformKind::Feishu, "oc_a"),
        reply_to: Some(MessageId::new("om_ev9")),
        thread: None,
        locale: Locale::ZhCn,
        question: "磁盘满了怎么处理".into(),
    };
    let start = || Write::Answer { op: AnswerOp::Start(answer.clone()), deliveries: vec![], tokens: vec![] };
    ok(&store, vec![start(), start()]).await;
    assert_eq!(store.take_over_answers(NOW).await.unwrap(), vec![answer.clone()]);
    let finish = Write::Answer { op: AnswerOp::Finish(answer.key.clone()), deliveries: vec![], tokens: vec![] };
    ok(&store, vec![finish]).await;
    assert!(store.take_over_answers(NOW).await.unwrap().is_empty());
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("nested/dir/opsclaw.db").display());
    suite(Store::connect(&url).await.unwrap()).await;
}

#[tokio::test]
async fn store_suite_on_postgres() {
    let Some(url) = pg_url("store_suite_on_postgres") else { return };
    let (schema_url, schema) = pg_schema(&url).await;
    suite(Store::connect(&schema_url).await.unwrap()).await;
    pg_drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn unsupported_urls_are_refused_clearly() {
    let err = Store::connect("mysql://u:secret@h/db").await.unwrap_err().to_string();
    assert!(err.contains("unsupported database URL scheme") && !err.contains("secret"), "{err}");
}

/// Two replicas of one database: leases with growing fencing tokens, writes
/// fenced by them, and work taken over only from a replica that went silent
/// (or handed it back), never from a live one.
async fn replicas_suite(url: &str) {
    const LEASE: i64 = 10_000;
    let a = Store::connect(url).await.unwrap().with_lease(Duration::from_millis(LEASE as u64));
    a.migrate().await.unwrap();
    let b = Store::connect(url).await.unwrap().with_lease(Duration::from_millis(LEASE as u64));
    assert_ne!(a.replica(), b.replica());
    a.register_replica("a", NOW).await.unwrap();
    b.register_replica("b", NOW + 1).await.unwrap();
    let names: Vec<String> = a.live_replicas(NOW + 1).await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a", "b"]);

    // One holder at a time; a new holder gets a larger token and fences the old one out.
    let first = a.acquire_lease("poller", 5_000, NOW).await.unwrap().expect("a free lease is taken");
    assert!(b.acquire_lease("poller", 5_000, NOW + 1_000).await.unwrap().is_none(), "held by a");
    assert!(a.renew_lease(&first, 5_000, NOW + 2_000).await.unwrap());
    assert!(b.acquire_lease("poller", 5_000, NOW + 6_000).await.unwrap().is_none(), "renewed until +7s");
    let second = b.acquire_lease("poller", 5_000, NOW + 7_001).await.unwrap().expect("expired: b takes it");
    assert!(second.token > first.token);
    assert!(!a.renew_lease(&first, 5_000, NOW + 7_002).await.unwrap(), "a lost it");
    let cursor = |store: &Store, value: i64, fence| {
        let write = Write::Cursor { name: "offset".into(), value, fence: Some(fence) };
        let store = store.clone();
        async move { store.apply(&[write], NOW).await.remove(0).unwrap() }
    };
    assert_eq!(cursor(&a, 5, first.clone()).await, Written::Fenced, "the old holder cannot move the offset");
    assert_eq!(cursor(&b, 9, second.clone()).await, Written::Done);
    assert_eq!(a.cursor("offset").await.unwrap(), Some(9));
    b.release_lease(&second).await.unwrap();
    let third = a.acquire_lease("poller", 5_000, NOW + 7_003).await.unwrap().expect("released: taken at once");
    assert!(third.token > second.token);
    let leases = b.leases().await.unwrap();
    assert_eq!((leases[0].holder.as_deref(), leases[0].token), (Some(a.replica()), third.token));

    // a's work is a's while it heartbeats.
    let e = event("ev-replica", "oc_r", "/ping");
    ok(&a, vec![Write::Accept(e.clone())]).await;
    let done = event("ev-replica-done", "oc_r", "/ping");
    ok(&a, vec![Write::Accept(done.clone())]).await;
    let (deliveries, tokens) = prepare(&done.id, vec![Reply::text(&done, "pong")], NOW, Duration::from_secs(60));
    ok(&a, vec![Write::Complete { event: done.id.clone(), deliveries, tokens }]).await;
    assert!(b.take_over_events(NOW + 1_000).await.unwrap().is_empty(), "a is alive");
    assert!(b.take_over_outbox(0, 10, NOW + 1_000).await.unwrap().is_empty(), "a is alive");
    assert_eq!(a.outbox_owned_count().await.unwrap(), 1);

    // a goes silent: after the lease time b takes its event and its reply, once.
    let later = NOW + LEASE + 1_000;
    assert!(b.heartbeat(later).await.unwrap());
    assert_eq!(b.take_over_events(later).await.unwrap(), vec![e.clone()]);
    assert!(b.take_over_events(later).await.unwrap().is_empty(), "now b's");
    let taken = b.take_over_outbox(0, 10, later).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(b.outbox_pending(0, i64::MAX, 10).await.unwrap(), taken, "b's own pending row now");
    assert!(a.outbox_pending(0, i64::MAX, 10).await.unwrap().is_empty());

    // b stops: its work goes back at once, to a replica alive then.
    b.deregister_replica().await.unwrap();
    assert!(a.heartbeat(later).await.unwrap());
    assert_eq!(a.take_over_events(later).await.unwrap(), vec![e]);
    assert_eq!(a.take_over_outbox(0, 10, later).await.unwrap().len(), 1);
    assert!(a.leases().await.unwrap().iter().all(|l| l.holder.as_deref() != Some(b.replica())));
    let names: Vec<String> = a.live_replicas(later).await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a"]);
}

#[tokio::test]
async fn replicas_on_postgres() {
    let Some(url) = pg_url("replicas_on_postgres") else { return };
    let (schema_url, schema) = pg_schema(&url).await;
    replicas_suite(&schema_url).await;
    pg_drop_schema(&url, &schema).await;

    // Two replicas taking over the same gone replica's 600 replies at once
    // claim disjoint rows (FOR UPDATE SKIP LOCKED), together all of them.
    let (schema_url, schema) = pg_schema(&url).await;
    let gone = Store::connect(&schema_url).await.unwrap();
    gone.migrate().await.unwrap();
    let rows: Vec<Reply> = (0..600).map(|n| Reply::text(&event("ev-gone", "oc_g", "/ping"), n.to_string())).collect();
    let (deliveries, tokens) = prepare(&"gone", rows, NOW, Duration::from_secs(60));
    ok(&gone, vec![Write::Enqueue { deliveries, tokens }]).await;
    let (x, y) = (Store::connect(&schema_url).await.unwrap(), Store::connect(&schema_url).await.unwrap());
    let later = NOW + 3_600_000;
    x.register_replica("x", later).await.unwrap();
    y.register_replica("y", later).await.unwrap();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let (mut x_after, mut y_after) = (0, 0);
    loop {
        let (px, py) = tokio::join!(x.take_over_outbox(x_after, 50, later), y.take_over_outbox(y_after, 50, later));
        let (px, py) = (px.unwrap(), py.unwrap());
        if px.is_empty() && py.is_empty() {
            break;
        }
        x_after = px.last().map_or(x_after, |r| r.id);
        y_after = py.last().map_or(y_after, |r| r.id);
        xs.extend(px.into_iter().map(|r| r.id));
        ys.extend(py.into_iter().map(|r| r.id));
    }
    let mut all: Vec<i64> = xs.iter().chain(&ys).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), xs.len() + ys.len(), "no row claimed twice");
    assert_eq!(all.len(), 600, "every row claimed");
    pg_drop_schema(&url, &schema).await;
}

/// SQLite serves one process: the next one to register forgets the replicas
/// before it (their leases free at once) and takes their work over.
#[tokio::test]
async fn replicas_on_sqlite_the_next_process_takes_everything_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let before = Store::connect(&url).await.unwrap();
    before.migrate().await.unwrap();
    before.register_replica("before", NOW).await.unwrap();
    let lease = before.acquire_lease("poller", 60_000, NOW).await.unwrap().unwrap();
    let e = event("ev-sqlite", "oc_s", "/ping");
    ok(&before, vec![Write::Accept(e.clone())]).await;

    let next = Store::connect(&url).await.unwrap();
    next.register_replica("next", NOW + 1).await.unwrap();
    let taken = next.acquire_lease("poller", 60_000, NOW + 2).await.unwrap().expect("free at once");
    assert!(taken.token > lease.token);
    assert_eq!(next.take_over_events(NOW + 3).await.unwrap(), vec![e]);
    let names: Vec<String> = next.live_replicas(NOW + 3).await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["next"]);
}
