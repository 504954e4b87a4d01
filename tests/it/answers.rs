//! Answers from the knowledge base in chat, end to end: the real binary in
//! the console, its index built at startup from a root on disk (kept current
//! by the watcher), `/kb`, `/kb add` (role and audit), `/ask` and free text,
//! with the fake OpenAI-compatible server writing answers (streamed, then
//! failing every way it can) and without a model (the passages answer).

use std::path::Path;
use std::time::Duration;

use super::fake_llm::{FakeLlm, Mode};
use super::harness::{Proc, write_config};

fn config(root: &Path, llm: Option<(&str, &str)>) -> String {
    let mut config = format!(
        r#"
data_dir = "data"

[console]
user = "you"

[access]
allowed_chats = ["console:*"]

[[principals]]
name = "you"
roles = ["admin"]
ids = ["console:you"]

[[principals]]
name = "guest"
ids = ["console:guest"]

[kb]
example = true

[[kb.roots]]
path = "{}"
url = "https://git.example.com/runbooks/blob/main"
exclude = ["drafts/**"]
"#,
        root.display()
    );
    if let Some((base_url, timeout)) = llm {
        config.push_str(&format!(
            "\n[kb.llm]\nbase_url = \"{base_url}\"\nmodel = \"fake-model\"\napi_key_env = \"OPSCLAW_TEST_LLM_KEY\"\ntimeout = \"{timeout}\"\n"
        ));
    }
    config
}

fn runbooks(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("runbooks");
    std::fs::create_dir_all(root.join("drafts")).unwrap();
    std::fs::write(
        root.join("kafka-lag.md"),
        "---\ntitle: Kafka consumer lag\naliases: [KafkaConsumerLagHigh]\n---\n# Kafka consumer lag\n\n\
         ## Check the consumers\n\nRun `kafka-consumer-groups --describe --group GROUP` and look at LAG per partition.\n\n\
         ## Fix\n\nScale the consumer deployment, or restart a stuck consumer.\n",
    )
    .unwrap();
    std::fs::write(root.join("drafts/secret-plan.md"), "# Kafka draft\n\nkafka kafka kafka unfinished draft.\n")
        .unwrap();
    root
}

/// Sends `line` and returns the output up to the next prompt's card end or text line.
async fn ask(bot: &mut Proc, line: &str, until: &str) -> String {
    let from = bot.seen.len();
    bot.send(line).await;
    bot.expect(until).await;
    bot.seen[from..].join("\n")
}

#[tokio::test]
async fn search_notes_and_answers_without_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let root = runbooks(dir.path());
    let path = write_config(dir.path(), &config(&root, None));
    let mut bot = Proc::spawn(&["chat", "--config", path.to_str().unwrap()], dir.path());

    // /kb: hits with links (the root has a url), snippets, the drafts excluded.
    let out = ask(&mut bot, "/kb kafka consumer lag", "documents indexed").await;
    assert!(out.contains("[Kafka consumer lag](https://git.example.com/runbooks/blob/main/kafka-lag.md)"), "{out}");
    assert!(!out.contains("secret-plan"), "excluded by the glob: {out}");

    // /ask without a model: the passage is the answer, with its source.
    let out = ask(&mut bot, "/ask how do I see the lag per partition of a kafka consumer group?", "match best").await;
    assert!(out.contains("**[1] Kafka consumer lag > Check the consumers**"), "{out}");
    assert!(out.contains("kafka-consumer-groups --describe"), "{out}");
    assert!(out.contains("[1] [Kafka consumer lag > Check the consumers](https://git.example.com/"), "{out}");
    // Free text in a DM (the console is one) is a question too; Chinese finds the Chinese runbook.
    let out = ask(&mut bot, "磁盘满了怎么处理", "match best").await;
    assert!(out.contains("example/zh/disk-full.md"), "{out}");
    // It asks what to do: the passage that says so answers first.
    assert!(out.contains("**[1] 磁盘空间不足 > 立即释放空间**"), "{out}");
    // Nothing relevant: said so, no guess; query syntax is just text.
    let out = ask(&mut bot, "/ask what is the wifi password (office:*)?", "won't guess").await;
    assert!(!out.contains("Sources"), "{out}");

    // /kb add: refused without the role (and audited), saved with it, found at once.
    bot.send(":user guest").await;
    bot.send("/kb add Redis failover\\").await;
    bot.send("Promote the replica with REPLICAOF NO ONE.").await;
    bot.expect("You need the role “editor” to run /kb add").await;
    bot.send(":user you").await;
    bot.send("/kb add Redis failover\\").await;
    bot.send("1. Check replica lag with INFO replication.\\").await;
    bot.send("2. Promote the replica with REPLICAOF NO ONE.").await;
    bot.expect("Saved “Redis failover” as notes/redis-failover.md").await;
    let saved = std::fs::read_to_string(dir.path().join("data/kb-notes/redis-failover.md")).unwrap();
    assert!(
        saved.starts_with("---\ntitle: Redis failover\nauthor: you\n") && saved.contains("REPLICAOF NO ONE"),
        "{saved}"
    );
    bot.send("/kb add Redis failover\\").await;
    bot.send("again").await;
    bot.expect("There is already a note redis-failover.md").await;
    let out = ask(&mut bot, "/ask how do I promote a redis replica", "match best").await;
    assert!(out.contains("notes/redis-failover.md"), "{out}");
    let out = ask(&mut bot, "/audit", "kb add").await;
    assert!(out.contains("guest") && out.contains("refuse") && out.contains("denied"), "{out}");
    bot.send("/audit").await;
    bot.expect("add /kb notes/redis-failover.md → saved").await;

    // The watcher: a runbook written, changed and deleted under the root is
    // searchable, updated and gone without a restart.
    let etcd = root.join("etcd.md");
    std::fs::write(&etcd, "# Etcd no leader\n\nCheck `etcdctl endpoint status` on every member.\n").unwrap();
    await_kb(&mut bot, "/kb etcdctl endpoint status", "etcd.md", true).await;
    std::fs::write(&etcd, "# Etcd no leader\n\nCompare the raft index with `etcdctl endpoint status -w table`.\n")
        .unwrap();
    await_kb(&mut bot, "/kb raft index", "etcd.md", true).await;
    std::fs::remove_file(&etcd).unwrap();
    await_kb(&mut bot, "/kb etcdctl raft", "etcd.md", false).await;
    let (status, _) = bot.finish().await;
    assert!(status.success());
}

/// Repeats `/kb` until its card lists `path` (or no longer does), within the deadline.
async fn await_kb(bot: &mut Proc, query: &str, path: &str, present: bool) {
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..500 {
        ticks.tick().await;
        if ask(bot, query, "documents indexed").await.contains(path) == present {
            return;
        }
    }
    panic!("{query}: {path} never {}", if present { "appeared" } else { "went away" });
}

#[tokio::test]
async fn a_model_writes_the_answer_into_the_card_and_every_failure_falls_back_to_the_passages() {
    let dir = tempfile::tempdir().unwrap();
    let root = runbooks(dir.path());
    let pieces =
        ["Check the lag per partition with ", "`kafka-consumer-groups --describe` [1]", ", then scale [1][7]."];
    let llm =
        FakeLlm::start(Mode::Answer { pieces: pieces.iter().map(|p| p.to_string()).collect(), paced: true }).await;
    let path = write_config(dir.path(), &config(&root, Some((&llm.base_url(), "5s"))));
    let mut bot = Proc::spawn_with_env(
        &["chat", "--config", path.to_str().unwrap()],
        dir.path(),
        &[("OPSCLAW_TEST_LLM_KEY", "sk-test-123")],
    );

    // Streamed: the card is posted as "writing", updated as the text grows
    // (each piece released once the card shows the one before), then final.
    bot.send("/ask kafka consumer lag is growing, what do I check?").await;
    bot.expect("Writing an answer from the runbooks").await;
    bot.expect("Check the lag per partition with ✍️").await;
    llm.release();
    bot.expect("`kafka-consumer-groups --describe` [1] ✍️").await;
    llm.release();
    let last = bot.expect("Written by fake-model").await;
    let out = bot.seen.join("\n");
    assert!(
        out.contains("Check the lag per partition with `kafka-consumer-groups --describe` [1], then scale [1]."),
        "the whole answer, citation [7] of one source dropped: {out}\n{last}"
    );
    assert!(out.contains("[1] [Kafka consumer lag > Check the consumers]"), "{out}");
    let updates = out.matches("(card #1 updated)").count();
    assert!(updates >= 2, "at least one update while writing, then the final one: {out}");

    let request = &llm.requests()[0];
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test-123"));
    assert_eq!(request.body["model"], "fake-model");
    assert_eq!(request.body["stream"], true);
    let system = request.body["messages"][0]["content"].as_str().unwrap();
    let user = request.body["messages"][1]["content"].as_str().unwrap();
    assert!(system.contains("ONLY") && system.contains("Answer in English"), "{system}");
    assert!(user.contains("[1] Kafka consumer lag > Check the consumers (kafka-lag.md)"), "{user}");
    assert!(user.contains("Question: kafka consumer lag is growing"), "{user}");

    // A Chinese question is answered in Chinese.
    llm.set_mode(Mode::Answer { pieces: vec!["先清理日志 [1]。".into()], paced: false });
    bot.send("磁盘满了怎么处理").await;
    bot.expect("先清理日志 [1]。").await;
    let system = llm.requests()[1].body["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(system.contains("Chinese"), "{system}");

    // Every failure: the passages, with a note saying why.
    let failures = [
        (Mode::RateLimited { retry_after_secs: 20 }, "it is rate limited"),
        (Mode::Status(500), "it returned an error"),
        (Mode::Garbage, "it returned an error"),
        (Mode::Hang, "it took too long"),
    ];
    for (mode, why) in failures {
        llm.set_mode(mode);
        bot.send("/ask kafka consumer lag per partition").await;
        bot.expect(&format!("The model did not answer ({why})")).await;
        bot.expect("**[1] Kafka consumer lag").await;
    }
    // The bot stayed up through all of it.
    bot.send("/ping").await;
    bot.expect("pong").await;
    assert_eq!(llm.requests().len(), 6, "one request per question");
    let (status, _) = bot.finish().await;
    assert!(status.success());
}

#[tokio::test]
async fn an_answer_cut_off_by_a_crash_is_written_again_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = runbooks(dir.path());
    let pieces = vec!["Check the lag per partition ".to_owned(), "then scale [1].".to_owned()];
    let llm = FakeLlm::start(Mode::Answer { pieces, paced: true }).await;
    let path = write_config(dir.path(), &config(&root, Some((&llm.base_url(), "5s"))));
    let args = ["chat", "--config", path.to_str().unwrap()];
    let env = [("OPSCLAW_TEST_LLM_KEY", "sk-test-123")];

    // The model is halfway through when the process dies.
    let mut bot = Proc::spawn_with_env(&args, dir.path(), &env);
    bot.send("/ask kafka consumer lag is growing, what do I check?").await;
    bot.expect("Check the lag per partition ✍️").await;
    bot.kill().await;

    // The next start asks the model again and finishes the same card.
    llm.set_mode(Mode::Answer { pieces: vec!["Describe the consumer group, then scale [1].".into()], paced: false });
    let mut bot = Proc::spawn_with_env(&args, dir.path(), &env);
    bot.expect("Describe the consumer group, then scale [1].").await;
    bot.expect("Written by fake-model").await;
    assert_eq!(llm.requests().len(), 2, "asked once before the crash, once after");
    let user = llm.requests()[1].body["messages"][1]["content"].as_str().unwrap().to_owned();
    assert!(user.contains("Question: kafka consumer lag is growing"), "{user}");
    let (status, _) = bot.finish().await;
    assert!(status.success());

    // A finished answer is not written again.
    let mut bot = Proc::spawn_with_env(&args, dir.path(), &env);
    bot.send("/ping").await;
    bot.expect("pong").await;
    let (status, _) = bot.finish().await;
    assert!(status.success());
    assert_eq!(llm.requests().len(), 2, "nothing pending after the final card");
}

#[tokio::test]
async fn an_alert_card_carries_its_runbook() {
    let dir = tempfile::tempdir().unwrap();
    let root = runbooks(dir.path());
    let mut config = config(&root, None);
    config.push_str("\n[http]\nlisten = \"127.0.0.1:0\"\n\n[alerts.sources.generic]\nauth = \"none\"\n\n[[alerts.routes]]\nchats = [\"console:local\"]\n");
    let path = write_config(dir.path(), &config);
    let mut bot = Proc::spawn(&["chat", "--config", path.to_str().unwrap()], dir.path());
    let line = bot.expect_stderr("alerts: POST http://").await;
    let url = line.trim_start_matches("alerts: POST ").to_owned();
    let post = |body: &'static str| {
        let url = url.clone();
        async move { reqwest::Client::new().post(url).body(body).send().await.unwrap().status() }
    };
    // By runbook_url inside the root's url.
    let status = post(r#"{"alerts":[{"labels":{"alertname":"LagAlarm","severity":"warning"},"annotations":{"runbook_url":"https://git.example.com/runbooks/blob/main/kafka-lag#fix"}}]}"#).await;
    assert_eq!(status, 200);
    bot.expect("LagAlarm").await;
    bot.expect("📖 **Runbook:** [Kafka consumer lag](https://git.example.com/runbooks/blob/main/kafka-lag.md)").await;
    // By alert name (a front-matter alias).
    let status =
        post(r#"{"alerts":[{"labels":{"alertname":"NodeFilesystemAlmostOutOfSpace","severity":"critical"}}]}"#).await;
    assert_eq!(status, 200);
    bot.expect("📖 **Runbook:** Disk almost full").await;
    // By the words of its labels and annotations.
    let status = post(r#"{"alerts":[{"labels":{"alertname":"CertSoon","severity":"warning"},"annotations":{"summary":"TLS certificate expiring in 5 days"}}]}"#).await;
    assert_eq!(status, 200);
    bot.expect("📖 **Runbook:** TLS certificate expiring").await;
    let (status, _) = bot.finish().await;
    assert!(status.success());
}
