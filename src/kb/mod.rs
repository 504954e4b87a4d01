//! The knowledge base: Markdown runbooks under one or more roots, indexed
//! with tantivy by passage (a section under its headings). Title, aliases
//! (front-matter aliases and tags, the file name) and headings weigh more
//! than the body. Each document also has an entry of its own with all its
//! words: a document's score is its best passage's (plus a little of its
//! second's and of its own entry's), times the share of the question's topic
//! words it has anywhere, times a little more the more of its title the
//! question asks about. Queries are analyzed like the text and turned into
//! term queries directly, so query syntax characters in what people type are
//! just characters; stop words and the whole of a CamelCase word (besides its
//! parts) weigh less than the other words.
//!
//! A [`Kb`] built from [`Root`]s remembers what it read (path, modification
//! time, size) and [`Kb::sync`] re-reads only what changed since, so a
//! watcher can keep it current while searches go on against the last commit.

pub mod answer;
pub mod config;
pub mod example;
pub mod llm;
pub mod markdown;
pub mod service;
pub mod tokenize;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use globset::{Glob, GlobSet, GlobSetBuilder};
use tantivy::DocSet;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::snippet::{Snippet, SnippetGenerator};
use tantivy::tokenizer::{TextAnalyzer, TokenStream};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Searcher, TantivyDocument, Term, doc};

/// Files larger than this are skipped (with a log line): runbooks are not that big.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;
/// Longest query read; longer ones are refused.
pub const MAX_QUERY_CHARS: usize = 1000;
const WRITER_MEMORY: usize = 64 * 1024 * 1024;
/// An update touches a few files: one indexing thread at tantivy's smallest budget.
const UPDATE_WRITER_MEMORY: usize = 15_000_000;
/// Ops shorthand, error messages people paste, and the words runbooks use
/// for them. A query that has the left side (a word, or words in order a
/// few apart, compared as stemmed: "restarting in a loop" has "restart
/// loop"; Chinese anywhere in the text) also looks for the right side's
/// words, at `SYNONYM_WEIGHT` (`CHINESE_SYNONYM_WEIGHT` for a Chinese
/// question), and a document that has those words counts as
/// having the left side's.
const SYNONYMS: &[(&str, &str)] = &[
    ("ntp", "clock synchronising"),
    ("drift", "clock skew"),
    ("pvc", "persistent volume"),
    ("pv", "persistent volume"),
    ("inode", "files"),
    ("inodes", "files"),
    ("fd", "file descriptor"),
    ("fds", "file descriptors"),
    ("open files", "file descriptors"),
    ("no space left", "filesystem space almost"),
    ("disk full", "filesystem space"),
    ("oom", "out of memory"),
    ("oomkilled", "out of memory"),
    ("k8s", "kubernetes"),
    ("cert", "certificate"),
    ("certs", "certificates"),
    ("x509", "certificate"),
    ("hpa", "horizontal pod autoscaler"),
    ("autoscaler", "hpa"),
    ("apiserver", "api server"),
    // Kubernetes kinds typed in lower case, one word, as kubectl takes them;
    // runbook titles write them CamelCase, which is split into its words.
    ("statefulset", "stateful set"),
    ("daemonset", "daemon set"),
    ("replicaset", "replica set"),
    ("configmap", "config map"),
    ("persistentvolume", "persistent volume"),
    ("persistentvolumeclaim", "persistent volume claim"),
    ("cronjob", "cron job"),
    ("resourcequota", "resource quota"),
    ("limitrange", "limit range"),
    ("networkpolicy", "network policy"),
    ("serviceaccount", "service account"),
    ("storageclass", "storage class"),
    ("priorityclass", "priority class"),
    ("poddisruptionbudget", "pod disruption budget"),
    ("horizontalpodautoscaler", "horizontal pod autoscaler"),
    ("customresourcedefinition", "custom resource definition"),
    ("servicemonitor", "service monitor"),
    ("podmonitor", "pod monitor"),
    ("prometheusrule", "prometheus rule"),
    ("alertmanagerconfig", "alertmanager config"),
    ("restart loop", "crash looping"),
    ("notready", "not ready"),
    ("nic", "network interface"),
    ("eth0", "network interface"),
    ("eth1", "network interface"),
    ("bond0", "network interface"),
    ("tx", "transmit"),
    ("rx", "receive"),
    ("up and down", "flapping"),
    ("flipping", "flapping"),
    ("network link", "network interface"),
    ("nearly", "almost"),
    ("used up", "full"),
    ("growing", "filling up"),
    // The stemmer keeps "failing" (fail) and "failures" (failur) apart, and
    // "syncing" (sync) and "synchronising" (synchronis).
    ("failing", "failures"),
    ("syncing", "synchronising"),
    ("unavailable", "down"),
    ("went over", "exceeded"),
    // An APIService object is how Kubernetes serves an aggregated API (metrics.k8s.io).
    ("apiservice", "aggregated api"),
    ("api service", "aggregated api"),
    // kubectl's short names and chat abbreviations.
    ("ds", "daemonset"),
    ("sts", "statefulset"),
    ("deploy", "deployment"),
    ("ns", "namespace"),
    ("svc", "service"),
    ("cm", "configmap"),
    ("sa", "serviceaccount"),
    ("rs", "replicaset"),
    ("cj", "cronjob"),
    ("po", "pod"),
    ("netpol", "network policy"),
    ("pdb", "pod disruption budget"),
    ("crd", "custom resource definition"),
    ("ksm", "kube state metrics"),
    ("prom", "prometheus"),
    ("mem", "memory"),
    ("ram", "memory"),
    ("msg", "message"),
    ("msgs", "messages"),
    ("err", "error"),
    // Alert names shorten errors (NodeNetworkReceiveErrs).
    ("errors", "errs"),
    ("errs", "errors"),
    ("req", "request"),
    ("reqs", "requests"),
    ("conn", "connection"),
    ("conns", "connections"),
    ("cfg", "config"),
    ("conf", "config"),
    ("db", "database"),
    ("fs", "filesystem"),
    ("tls", "certificate"),
    ("lb", "load balancer"),
    ("p99", "latency"),
    ("p95", "latency"),
    ("laggy", "latency"),
    ("keeps restarting", "crash looping"),
    ("keep restarting", "crash looping"),
    // Alertmanager calls where notifications go integrations (receivers).
    ("slack", "notifications integration"),
    ("pagerduty", "notifications integration"),
    ("opsgenie", "notifications integration"),
    ("webhook", "notifications integration"),
    ("email", "notifications integration"),
    ("md", "raid"),
    ("mdadm", "raid"),
    ("quorum", "insufficient members"),
    ("域名", "dns"),
    ("证书", "certificate"),
    ("有状态", "statefulset"),
    ("扩缩容", "scale"),
    ("定时任务", "cronjob"),
    ("内核参数", "sysctl"),
    ("审计", "audit"),
    ("探针", "probe"),
    ("端口转发", "port forward"),
    ("亲和", "affinity"),
    ("污点", "taint"),
    ("配额", "quota"),
    ("持久卷", "persistentvolume"),
    ("存储类", "storageclass"),
    ("服务账号", "serviceaccount"),
    ("环境变量", "env"),
    ("内存溢出", "out of memory"),
    ("守护进程", "daemonset"),
    ("退回", "回滚"),
    ("回退", "回滚"),
    ("钩子", "生命周期 处理函数"),
    // What Kubernetes, Prometheus and Linux print, as people paste it.
    ("back off restarting", "crash looping"),
    ("imagepullbackoff", "container waiting image pull"),
    ("errimagepull", "container waiting image pull"),
    ("containercreating", "container waiting"),
    ("createcontainerconfigerror", "container waiting"),
    ("backofflimitexceeded", "job failed"),
    ("cfs", "cpu throttling"),
    ("connection refused", "down"),
    ("database space exceeded", "backend quota space"),
    ("chrony", "clock synchronising"),
    ("chronyd", "clock synchronising"),
    ("timedatectl", "clock synchronising"),
    ("diskpressure", "filesystem space"),
    ("disk pressure", "filesystem space"),
    ("readiness probe failed", "not ready"),
    ("5xx", "errors"),
    ("slo", "error budget"),
    ("burn rate", "error budget burn"),
    // Symptoms in the words on-call engineers use for what alert names say.
    ("bouncing", "flapping"),
    ("up down", "flapping"),
    ("disk space", "filesystem space"),
    ("disk usage", "filesystem space"),
    ("root disk", "filesystem"),
    ("will hit", "filling up"),
    ("will fill", "filling up"),
    ("will run out", "filling up"),
    ("drive", "disk"),
    ("drives", "disks"),
    ("dead", "down"),
    ("died", "failure"),
    ("offline", "unreachable"),
    ("dropped off", "unreachable"),
    ("disagree", "mismatch inconsistent"),
    ("dont match", "mismatch"),
    ("don t match", "mismatch"),
    ("do not match", "mismatch"),
    ("heartbeat alert", "watchdog"),
    ("deadman", "watchdog"),
    ("dead man", "watchdog"),
    ("datapoint", "samples"),
    ("datapoints", "samples"),
    ("data points", "samples"),
    ("choked", "throttling"),
    ("choking", "throttling"),
    ("flaky", "errors"),
    ("flaking", "errors"),
    ("custom metrics", "aggregated api"),
    ("metrics server", "aggregated api"),
    ("take ages", "latency"),
    ("takes ages", "latency"),
    ("come up", "start up"),
    ("grow", "expand"),
    ("resize", "expand"),
    ("clock off", "clock skew"),
    ("time off", "clock skew"),
    ("date off", "clock skew"),
    ("minutes off", "clock skew"),
    ("seconds off", "clock skew"),
    ("ceiling", "limit"),
    // What client-go prints when a controller cannot list or watch.
    ("failed to list", "list errors"),
    ("cannot list", "list errors"),
    ("failed to watch", "watch errors"),
    ("cannot watch", "watch errors"),
    // Chat words for what runbooks name otherwise.
    ("am", "alertmanager"),
    ("batch", "job"),
    ("gone", "down"),
    ("vanished", "down"),
    ("peer", "members"),
    ("peers", "members"),
    ("call", "request"),
    ("calls", "requests"),
    ("bump", "update"),
    ("bumped", "updated"),
    ("receiver", "notifications integration"),
    ("receivers", "notifications integration"),
    ("stuck pending", "scheduler"),
    ("metrics api", "aggregated api"),
    ("kubectl top", "aggregated api"),
    ("went flat", "ingesting samples"),
    ("flatlined", "ingesting samples"),
    ("no new data", "ingesting samples"),
    ("too many requests", "terminated requests"),
    ("minutes ahead", "clock skew"),
    ("minutes behind", "clock skew"),
    ("seconds ahead", "clock skew"),
    ("seconds behind", "clock skew"),
    ("stopped storing", "ingesting samples"),
    ("not storing", "ingesting samples"),
    ("restart count", "crash looping"),
    ("wal", "fsync"),
    // Siblings told apart by what the question says: a job still running
    // is Kube Job Completion (Failed is the other); every Alertmanager is the
    // Cluster alert and the Any one, only one is the Some one.
    ("still running", "completion"),
    ("taking too long", "completion"),
    ("never finishes", "completion"),
    ("never finished", "completion"),
    ("not finished", "completion"),
    ("every", "cluster any"),
    ("all of the", "cluster any"),
    ("only one", "some"),
    ("one of the", "some"),
    ("just one", "some"),
    ("processor", "cpu"),
    ("inbound", "receive"),
    ("outbound", "transmit"),
    ("fdatasync", "fsync"),
    ("df -i", "inodes"),
    ("settings", "config"),
    ("backlog", "queue"),
    ("majority", "insufficient members"),
    ("control loops", "controller manager"),
    ("placement", "scheduler"),
    ("assigning", "scheduler"),
    ("node agent", "kubelet"),
    ("fell off", "unreachable"),
    ("allowance", "quota"),
    ("all replicas", "cluster any"),
    // kubectl's own words when it cannot reach the API server.
    ("connection to the server", "api server"),
    ("not available", "down"),
    // What Prometheus shows when it has no Alertmanager to send to.
    ("alertmanagers discovered", "not connected"),
    ("zero alertmanager", "not connected"),
    ("no alertmanager", "not connected"),
    // A pod the scheduler never looked at has no events.
    ("no events", "scheduler down"),
    ("pending forever", "scheduler"),
    // The operator's log lines for its alerts.
    ("listing nodes", "node lookup"),
    ("syncing nodes", "node lookup"),
    ("skipping servicemonitor", "rejected resources"),
    ("skipping podmonitor", "rejected resources"),
    ("out of order", "timestamps"),
    // An APIService's status when nothing serves it.
    ("missingendpoints", "down"),
    ("faileddiscoverycheck", "down"),
    // Inodes run out when a filesystem holds a great many small files.
    ("tiny files", "inodes"),
    ("small files", "inodes"),
    // Prometheus's recording rules, and a rule group's iterations.
    ("recording", "rule"),
    ("iterations", "evaluations"),
];

/// Words that name what a runbook is about, in groups whose members exclude
/// each other (`|` separates one member's spellings). A question that names
/// a member of a group is not about a runbook whose title names only other
/// members of it: "statefulset rollout stuck" is not Kube Daemon Set Rollout
/// Stuck, "prometheus reload refused" is not Alertmanager Failed Reload.
const SUBJECTS: &[&[&str]] = &[
    // Kubernetes workload kinds (not pods: every one of them runs pods).
    &[
        "deployment",
        "statefulset|stateful set",
        "daemonset|daemon set",
        "job|cronjob|cron job",
        "hpa|horizontal pod autoscaler",
    ],
    &[
        "prometheus",
        "alertmanager",
        "etcd",
        "kubelet",
        "controller manager",
        "kube proxy",
        "kube state metrics",
        "config reloader",
    ],
    &["cpu", "memory"],
    &["receive", "transmit"],
    &["space", "files|inodes"],
];

/// [`SUBJECTS`] as the analyzer's terms: group, member, spelling, terms.
static SUBJECT_TERMS: LazyLock<Vec<Vec<Vec<Vec<String>>>>> = LazyLock::new(|| {
    SUBJECTS.iter().map(|group| group.iter().map(|m| m.split('|').map(analyze).collect()).collect()).collect()
});

/// Whether a title (its [`title_words`]) names only subjects other than those `asked`.
fn other_subject(title: &[String], asked: &HashSet<&str>) -> bool {
    // A member is named when all the terms of one of its spellings are there.
    let named = |member: &[Vec<String>], there: &dyn Fn(&str) -> bool| {
        member.iter().any(|spelling| spelling.iter().all(|t| there(t)))
    };
    let in_title = |member: &[Vec<String>]| named(member, &|t| title.iter().any(|w| w == t));
    let in_query = |member: &[Vec<String>]| named(member, &|t| asked.contains(t));
    SUBJECT_TERMS.iter().any(|group| {
        group.iter().any(|m| in_title(m))
            && group.iter().any(|m| in_query(m))
            && !group.iter().any(|m| in_title(m) && in_query(m))
    })
}

/// A title's topic words: its terms without stop words, and a CamelCase
/// word by its parts only, as the query's parts are asked.
fn title_words(title: &str) -> Vec<String> {
    let compound = compounds(title);
    analyze(title).into_iter().filter(|t| !STOP_TERMS.contains(t) && !compound.contains(t)).collect()
}

/// One of [`SYNONYMS`] as the query is matched against it.
struct Shorthand {
    /// The left side as written: lower-case English words, or Chinese text.
    short: &'static str,
    /// The left side's words, for English, stemmed as the query's are.
    words: Vec<String>,
    /// The left side as the analyzer's terms: the query terms it stands in for.
    terms: Vec<String>,
    /// The right side as the analyzer's terms.
    long: Vec<String>,
}

static SHORTHAND: LazyLock<Vec<Shorthand>> = LazyLock::new(|| {
    SYNONYMS
        .iter()
        .map(|&(short, long)| {
            let mut analyzer = tokenize::analyzer();
            Shorthand {
                short,
                words: short.split_whitespace().map(|w| stem(&mut analyzer, w)).collect(),
                terms: analyze(short),
                long: analyze(long),
            }
        })
        .collect()
});

/// The shorthand in `query`: each entry whose left side it has. The words of
/// a left side of several words may have up to `SHORTHAND_GAP` other words
/// between them, in order, as pasted messages put them ("the connection to
/// the server was refused").
fn shorthand_in(query: &str) -> impl Iterator<Item = &'static Shorthand> {
    let lower = query.to_lowercase();
    // Numbers are left out: an address or a count in a pasted message
    // ("server 10.0.0.1:6443 was refused") is not a word between.
    let mut analyzer = tokenize::analyzer();
    let words: Vec<String> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !is_number(w))
        .map(|w| stem(&mut analyzer, w))
        .collect();
    // "am" is Alertmanager in chat ("2 of 3 am pods"), except after "i".
    let words: Vec<String> = (0..words.len())
        .map(|i| if words[i] == "am" && i > 0 && words[i - 1] == "i" { String::new() } else { words[i].clone() })
        .collect();
    SHORTHAND
        .iter()
        .filter(move |s| if s.short.is_ascii() { in_order(&words, &s.words) } else { lower.contains(s.short) })
}

/// One lower-case word as `analyzer` stems it ("restarting" → "restart").
fn stem(analyzer: &mut TextAnalyzer, word: &str) -> String {
    analyzer.token_stream(word).next().map(|t| t.text.clone()).unwrap_or_default()
}

/// How many other words may stand between the words of a shorthand's left side.
const SHORTHAND_GAP: usize = 4;

/// Whether `wanted` are in `words` in order, each within `SHORTHAND_GAP`
/// words of the one before (the first anywhere).
fn in_order(words: &[String], wanted: &[String]) -> bool {
    let Some((first, rest)) = wanted.split_first() else { return true };
    (0..words.len()).filter(|&i| words[i] == *first).any(|start| {
        let mut at = start;
        rest.iter().all(|next| {
            let window = &words[at + 1..(at + 2 + SHORTHAND_GAP).min(words.len())];
            window.iter().position(|w| w == next).map(|i| at += 1 + i).is_some()
        })
    })
}

/// How much the words a shorthand stands for weigh against the words typed.
/// Measured with `cargo bench --bench kb` (session 20, after documents
/// having them counted as having the shorthand): 1 beat 0.5 and 0.7 on
/// English over all six question files together (MRR 0.864 against 0.855)
/// and on both held-out files, at 0.011 on the check file.
const SYNONYM_WEIGHT: f32 = 1.0;
/// The same for a question in Chinese: its shorthand's words are mostly
/// English ("pv" → persistent volume), the words of English runbook titles,
/// and at full weight they put an English runbook above the Chinese page the
/// question asks about.
const CHINESE_SYNONYM_WEIGHT: f32 = 0.5;
/// How much a misspelt word found by its respelling counts in relevance
/// against 1 for a word found as typed: a respelling is a guess, and an
/// English word the runbooks do not use ("office") is respelt into one they
/// do ("officially"), which must not make an off-topic question look answered.
const RESPELT_RELEVANCE: f32 = 0.5;
/// What asking about a whole title is worth in relevance: at the default bar
/// (0.35) a question must ask 70 % of a title (by rarity) to be about it.
/// Measured with `cargo bench --bench kb` (session 22): at 0.5, 84 % of the
/// tuned files' right top hits pass the bar (78 % without it) and the same 3
/// of 57 off-topic questions; 0.6 and 0.7 let more off-topic ones pass.
const TITLE_RELEVANCE: f32 = 0.5;
/// What a Chinese document's score is multiplied by for a question in
/// English: a Chinese page that only shares the English of its commands and
/// YAML (`kubectl`, `pv`, `deployment`) with the question is rarely what an
/// English reader wants. A Chinese question has Chinese words to match, so
/// it needs no such rule. Measured with `cargo bench --bench kb`: 0.5 raised
/// English MRR on every question file, 0.3 (session 20, with coverage by
/// stand-ins) again on every file; a Chinese question typed all in English
/// then finds its Chinese page lower (BENCHMARKS.md).
const OTHER_LANGUAGE: f32 = 0.3;
/// How much a document's second matching passage adds to its best one.
const SECOND_PASSAGE: f32 = 0.3;
/// How much a document's title the query asks about raises its score: times
/// 1 + this × the title's share of topic words in the query, weighed by rarity
/// (measured with `cargo bench --bench kb`: 0.5 beat 1 and 2 on both question
/// files; siblings differ by a title word, and the one whose title the
/// question covers is usually the answer).
const TITLE_SHARE_WEIGHT: f32 = 0.5;
/// A runbook's score when its title names only other subjects than the
/// question ([`SUBJECTS`]). Measured with `cargo bench --bench kb` on the
/// tuned files (session 23): 0.5 and 0.7 moved less, 0.3 the most.
const OTHER_SUBJECT: f32 = 0.3;
/// How much the whole document's own score adds to its passages'. The sum
/// is then multiplied by the share of the question's topic words the
/// document has (measured with `cargo bench --bench kb`: the share as a plain
/// factor beat its square and cube, and 0.3 beat 0.6 and 1 here).
const WHOLE_WEIGHT: f32 = 0.3;
/// The same for a Chinese question. A task page is long and its words are
/// spread over its sections, and jieba cuts a question into words each of
/// which may sit in another section: the page as a whole tells more than its
/// best passage. Measured with `cargo bench --bench kb` (session 21, with
/// `--baseline`): at 0.3 plain BM25 over whole pages beat this ranking on the
/// fresh E questions (MRR 0.80 against 0.69); 10 beat 0.3, 1, 3, 5 and 30 (15
/// about equal) on the Chinese questions of the tuned-on files together.
const CHINESE_WHOLE_WEIGHT: f32 = 10.0;
/// For an English question, a document longer than `LONG_DOCUMENT` words
/// (as the index counts its own entry's) has its score
/// times (`LONG_DOCUMENT` / length) ^ `LENGTH_PENALTY`: a long runbook has
/// some of any question's words by chance (Kube Persistent Volume Filling Up,
/// 700 words, came second for questions about stateful sets and jobs).
/// Measured with `cargo bench --bench kb` (session 21): 300 and 0.3 raised
/// English MRR on the tuned-on files together, 0.5 / 150 and 0.3 / 100 less
/// evenly; on Chinese questions any such rule lowered MRR.
const LONG_DOCUMENT: f32 = 300.0;
const LENGTH_PENALTY: f32 = 0.3;

/// Field weights against the body's 1: where a word appears says how much it
/// tells (measured with `cargo bench --bench kb`; higher title weights let
/// siblings sharing title words win).
const TITLE_WEIGHT: f32 = 2.0;
const ALIASES_WEIGHT: f32 = 2.0;
const HEADING_WEIGHT: f32 = 1.5;

/// Words that say nothing about the topic of a question: left out of the
/// shares of topic words ([`Kb::relevance`], coverage, title share) and
/// weighed [`STOP_WEIGHT`] in ranking except in titles ([`term_weight_in`]).
const STOP_WORDS: &str = "a an the is are was were be been am do does did doing i me my we our us you your it its \
    this that these those what which who whom why how when where there here of in on at to for from by with about \
    into and or but not no so if then than can could should would will shall may might must have has had get got \
    any some all just again keep keeps still please help anyone someone something happen happens happening going \
    fix fixing fixed solve resolve troubleshoot debug handle deal way steps \
    too very much lot lots really show shows showing says say see seeing seem seems went go goes now since after \
    before over each other every like take takes getting \
    的 了 吗 呢 吧 啊 是 在 我 我们 你 他 它 这 那 这个 那个 怎么 怎么办 怎样 如何 什么 为什么 哪 哪里 哪个 有 没有 \
    和 与 或 就 都 也 还 要 会 能 可以 一直 一下 请 问 下 该 应该 办 处理 解决 办法 方法 排查 修复 步骤";

static STOP_TERMS: LazyLock<HashSet<String>> = LazyLock::new(|| analyze(STOP_WORDS).into_iter().collect());

/// Words of section headings that say what to do, as the analyzer makes them.
const ACTION_HEADINGS: &str = "mitigation mitigate fix fixes resolution resolve remediation remedy solution \
    workaround recovery recover restore renew rollback free 处理 解决 释放 恢复 修复 缓解 应急 止损 回滚";

static ACTION_TERMS: LazyLock<Vec<String>> = LazyLock::new(|| analyze(ACTION_HEADINGS));

/// How much a query's stop word and a CamelCase word's whole (`NotReady`,
/// besides its parts `not`, `ready`) weigh in ranking, against 1 for another
/// word. A stop word that is rare in runbooks ("too", "went") otherwise lets a
/// sibling with it in its title win ("too many open files" found Kubelet Too
/// Many Pods), and a whole CamelCase word lets the runbook that writes it in
/// its title beat one that writes its parts ("node went NotReady" found
/// Prometheus Operator NotReady before Kube Node Not Ready). Measured with
/// `cargo bench --bench kb`: stop words at 0.3 beat 1 and 0.1, wholes at 0.3
/// beat 1 (see BENCHMARKS.md).
const STOP_WEIGHT: f32 = 0.3;
const COMPOUND_WEIGHT: f32 = 0.3;
/// A number in a question is mostly a measured value ("IUse% at 97", "expires
/// in 7 days", "2/5 pods"), rare in runbooks and so heavily weighed by idf,
/// and matching it says little: it weighs like a stop word, and is not one of
/// the question's topic words.
const NUMBER_WEIGHT: f32 = 0.3;

fn is_number(term: &str) -> bool {
    term.bytes().all(|b| b.is_ascii_digit())
}

/// A query term's weight in ranking: [`STOP_WEIGHT`] for a stop word,
/// [`COMPOUND_WEIGHT`] for a CamelCase word's whole, else 1.
fn term_weight(term: &str, compound: &HashSet<String>) -> f32 {
    if STOP_TERMS.contains(term) {
        STOP_WEIGHT
    } else if is_number(term) {
        NUMBER_WEIGHT
    } else if compound.contains(term) {
        COMPOUND_WEIGHT
    } else {
        1.0
    }
}

/// [`term_weight`] in a field: in the title a stop word weighs in full.
/// Alert names keep words that are filler in a question ("Any" and "Some"
/// Alertmanagers, "Not" Ready, "Too" Many): there they tell siblings apart.
/// Measured with `cargo bench --bench kb` (BENCHMARKS.md, session 19).
fn term_weight_in(title: bool, term: &str, compound: &HashSet<String>) -> f32 {
    if title && STOP_TERMS.contains(term) { 1.0 } else { term_weight(term, compound) }
}

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("the query is longer than {MAX_QUERY_CHARS} characters")]
    QueryTooLong,
    #[error("no knowledge index in {0}: build one with `opsclaw kb index --root DIR --index {0}`")]
    NoIndex(PathBuf),
    #[error(
        "the knowledge index in {0} was built by another version of opsclaw: build it again with `opsclaw kb index`"
    )]
    OtherVersion(PathBuf),
    #[error("{dir} holds files that are not a knowledge index ({file}, …): give the index a directory of its own")]
    NotAnIndex { dir: PathBuf, file: String },
}

/// Where Markdown files come from: a directory (filtered by include and
/// exclude globs on the path relative to it), or files built into the binary.
pub struct Root {
    /// As given (a path in config or on the command line), shown with hits.
    pub name: String,
    /// Web address of the root (e.g. the repository's blob view), joined with
    /// a hit's path to link it; also how an alert's `runbook_url` is matched.
    pub url: Option<String>,
    source: Source,
}

enum Source {
    Dir { path: PathBuf, include: Option<GlobSet>, exclude: GlobSet },
    Embedded(&'static [(&'static str, &'static str)]),
}

/// When a file was last read: modification time (ns since the epoch) and
/// size; for a built-in file, no time and a hash of its text.
type Stamp = (Option<u64>, u64);

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    let modified = meta.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
    (modified.map(|d| d.as_nanos() as u64), meta.len())
}

/// Built-in files change only with the binary; their hash tells a new text
/// of the same length from the old one.
fn embedded_stamp(text: &str) -> Stamp {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    (None, hasher.finish())
}

/// Next to the index: the files it holds and their stamps when read, so a
/// restart re-reads only what changed. Written after each commit, so it is
/// never ahead of the index (a file it lacks or has an old stamp for is read again).
const MANIFEST: &str = "opsclaw-manifest.json";
/// Bumped when what goes into the index changes (schema, analyzer, passages):
/// an index of another format (or another opsclaw version) is built anew.
const INDEX_FORMAT: u32 = 4;

#[derive(serde::Serialize, serde::Deserialize)]
struct ManifestFile {
    format: String,
    files: HashMap<String, Stamp>,
}

fn index_format() -> String {
    format!("{}/{INDEX_FORMAT}", env!("CARGO_PKG_VERSION"))
}

impl ManifestFile {
    /// The manifest in `dir`, when this version of opsclaw wrote it.
    fn current(dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(dir.join(MANIFEST)).ok()?;
        serde_json::from_slice::<Self>(&bytes).ok().filter(|m| m.format == index_format())
    }
}

/// Whether `name` is one of the files an index directory holds: tantivy's
/// (its meta files, locks, segment files named by a 32-digit hex id, and the
/// temporary file of a write a crash cut off) and the manifest.
fn is_index_file(name: &str) -> bool {
    let bytes = name.as_bytes();
    let segment = bytes.len() > 33 && bytes[32] == b'.' && bytes[..32].iter().all(u8::is_ascii_hexdigit);
    segment
        || [".tantivy-", ".tmp", MANIFEST].iter().any(|prefix| name.starts_with(prefix))
        || ["meta.json", ".managed.json"].contains(&name)
}

/// Makes `dir` an empty directory for a new index. Only an index's own files
/// are removed: a directory holding anything else (a runbook root given as
/// `--index` by mistake) is refused, never emptied.
fn clear_index_dir(dir: &Path) -> Result<(), KbError> {
    let io = |error| KbError::Io { path: dir.to_owned(), error };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut ours = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_index_file(&name) || !entry.file_type().map_err(io)?.is_file() {
            return Err(KbError::NotAnIndex { dir: dir.to_owned(), file: name });
        }
        ours.push(entry.path());
    }
    for path in ours {
        std::fs::remove_file(&path).map_err(|error| KbError::Io { path, error })?;
    }
    Ok(())
}

impl Root {
    /// A directory, every Markdown file in it.
    pub fn dir(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            name: path.display().to_string(),
            url: None,
            source: Source::Dir { path, include: None, exclude: GlobSet::empty() },
        }
    }

    /// A directory with include globs (default: every Markdown file) and
    /// exclude globs, matched against paths relative to it (`ops/**/*.md`).
    pub fn filtered(
        path: impl Into<PathBuf>,
        url: Option<String>,
        include: &[String],
        exclude: &[String],
    ) -> Result<Self, globset::Error> {
        let set = |globs: &[String]| -> Result<GlobSet, globset::Error> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g)?);
            }
            b.build()
        };
        let mut root = Self::dir(path);
        root.url = url;
        if let Source::Dir { include: inc, exclude: exc, .. } = &mut root.source {
            *inc = if include.is_empty() { None } else { Some(set(include)?) };
            *exc = set(exclude)?;
        }
        Ok(root)
    }

    /// Files built into the binary, as (relative path, text).
    pub fn embedded(name: &str, files: &'static [(&'static str, &'static str)]) -> Self {
        Self { name: name.to_owned(), url: None, source: Source::Embedded(files) }
    }

    /// The directory, for a root on disk.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::Dir { path, .. } => Some(path),
            Source::Embedded(_) => None,
        }
    }

    fn wants(&self, relative: &str) -> bool {
        match &self.source {
            Source::Dir { include, exclude, .. } => {
                let markdown = relative.ends_with(".md") || relative.ends_with(".markdown");
                let included = include.as_ref().map_or(markdown, |set| set.is_match(relative));
                included && !exclude.is_match(relative)
            }
            Source::Embedded(_) => true,
        }
    }

    /// Relative paths (with `/`) of the files this root indexes, with their stamps, sorted.
    fn scan(&self) -> Result<Vec<(String, Stamp)>, KbError> {
        let root = match &self.source {
            Source::Embedded(files) => {
                return Ok(files.iter().map(|(p, t)| (p.to_string(), embedded_stamp(t))).collect());
            }
            Source::Dir { path, .. } => path,
        };
        let mut out = Vec::new();
        let mut dirs = vec![root.to_owned()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|error| KbError::Io { path: dir.clone(), error })?;
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(path);
                } else if meta.is_file() {
                    let relative = path.strip_prefix(root).unwrap_or(&path);
                    let relative =
                        relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                    if self.wants(&relative) {
                        out.push((relative, stamp_of(&meta)));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The text of one file, or why it is left out.
    fn read(&self, relative: &str) -> Result<String, String> {
        let path = match &self.source {
            Source::Embedded(files) => {
                return files.iter().find(|(p, _)| *p == relative).map(|(_, t)| t.to_string()).ok_or("gone".into());
            }
            Source::Dir { path, .. } => path.join(relative),
        };
        let len = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
        if len > MAX_FILE_BYTES {
            return Err(format!("{len} bytes, over the {MAX_FILE_BYTES} byte limit"));
        }
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        if bytes.contains(&0) {
            return Err("binary content".into());
        }
        String::from_utf8(bytes).map_err(|_| "not UTF-8".into())
    }

    /// `url` + `relative`, when the root has an address.
    fn link(&self, relative: &str) -> Option<String> {
        self.url.as_ref().map(|u| format!("{}/{}", u.trim_end_matches('/'), relative))
    }
}

#[derive(Clone, Copy)]
struct Fields {
    /// `root \0 path`: one document's passages, for updates and lookups.
    key: Field,
    /// Lower-cased names an alert may use for the document (aliases, file stem).
    names: Field,
    root: Field,
    path: Field,
    title: Field,
    aliases: Field,
    heading: Field,
    body: Field,
    /// A document's entry of its own (besides its passages): every word of
    /// it, for a whole-document score and for which query words it has.
    all: Field,
    /// `root \0 path` on the document's own entry (passages have `key`).
    doc_key: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(tokenize::NAME)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let stored_text = TextOptions::default().set_indexing_options(indexing).set_stored();
    let fields = Fields {
        key: b.add_text_field("key", STRING),
        names: b.add_text_field("names", STRING),
        root: b.add_text_field("root", STORED),
        path: b.add_text_field("path", STRING | STORED),
        title: b.add_text_field("title", stored_text.clone()),
        aliases: b.add_text_field("aliases", stored_text.clone()),
        heading: b.add_text_field("heading", stored_text.clone()),
        body: b.add_text_field("body", stored_text),
        all: b.add_text_field(
            "all",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(tokenize::NAME)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        ),
        doc_key: b.add_text_field("doc_key", STRING),
    };
    (b.build(), fields)
}

fn fields_of(schema: &Schema) -> Result<Fields, KbError> {
    let f = |name: &str| schema.get_field(name).map_err(KbError::Index);
    Ok(Fields {
        key: f("key")?,
        names: f("names")?,
        root: f("root")?,
        path: f("path")?,
        title: f("title")?,
        aliases: f("aliases")?,
        heading: f("heading")?,
        body: f("body")?,
        all: f("all")?,
        doc_key: f("doc_key")?,
    })
}

fn doc_key(root: &str, relative: &str) -> String {
    format!("{root}\0{relative}")
}

/// What a build or an update did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BuildStats {
    pub documents: usize,
    pub passages: usize,
    /// Documents taken out (deleted files, or files that turned unreadable).
    pub removed: usize,
    /// (path, why) of files left out.
    pub skipped: Vec<(PathBuf, String)>,
}

/// One search hit: a document, by its best passage.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// The root as given.
    pub root: String,
    /// Relative to the root.
    pub path: String,
    pub title: String,
    pub heading: String,
    pub score: f32,
    /// The best passage's words around the query's, matches in `**bold**`.
    pub snippet: String,
    /// A link to the document, when its root has an address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The whole best passage.
    #[serde(skip)]
    pub text: String,
    /// The document's aliases and tags, one per line.
    #[serde(skip)]
    pub aliases: String,
}

pub struct Kb {
    /// Where the index lives (and its manifest).
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    roots: Vec<Root>,
    /// Every file read, by document key, with its stamp then; `sync` diffs against it.
    manifest: Mutex<HashMap<String, Stamp>>,
}

/// What a pasted log line carries besides its message: logfmt's time, level
/// and source fields, klog's header (`E0301 04:02:17.889 manager.go:488]`),
/// Go source locations and RFC 3339 times. A runbook quoting some other log
/// line has those words too ("level error ts caller msg"), so they found it
/// for every pasted line.
static LOG_NOISE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(concat!(
        r#"\b(?:ts|time|caller|level|lvl)=(?:"[^"]*"|\S+)"#,
        r#"|\b(?:msg|err|component)="#,
        r"|\b[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+(?:\d+\s+)?[\w.-]+\.go:\d+\]",
        r"|[\w-]+\.go:\d+",
        r"|\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?",
    ))
    .expect("the log noise pattern compiles")
});

/// A count of pods as "N of M" or "N/M" ("only 1 of its 3 pods", "2/5
/// pods available", "0/1 ready"): runbooks say replicas for it.
static PODS_OF: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(concat!(
        r"(?i)\b\d+\s*(?:/|of|out of)\s*(?:(?:its|the|our|my|all)\s+)?\d+\b",
        r"(?:\s+\w+)?\s+(?:pods|replicas|ready|available|up|running)\b",
    ))
    .expect("the pod count pattern compiles")
});

/// An address with a component's well-known port ("dial tcp 10.0.3.12:10250:
/// connect: connection refused"): the port names what is down.
const PORTS: &[(&str, &str)] =
    &[("10250", "kubelet"), ("6443", "api server"), ("2379", "etcd"), ("2380", "etcd"), ("9093", "alertmanager")];
static PORT: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"[\w.\]-]:(\d{4,5})\b").expect("the port pattern compiles"));

/// A sibling the question rules out, "(not the kubelet one)": its words are
/// not searched, or they would find it.
static NOT_THAT: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?i)\(?\bnot (?:the|a|an) [\w-]+(?: [\w-]+)? ones?\)?").expect("the ruled-out pattern compiles")
});

/// A share of storage or quota given as a percentage near full ("97% full",
/// "IUse% at 97", "3% free"), or as all of it ("100%"). Runbooks name the
/// alert for what is full now "almost" (out of space, full) and the one for
/// what will be "filling up": the number is how the question says which.
static NEARLY_FULL: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"(?i)\b(?:[89]\d(?:\.\d+)?\s*%|%\D{0,8}\b[89]\d\b|\d(?:\.\d+)?\s*%\s*(?:free|left|remaining|avail))",
    )
    .expect("the nearly full pattern compiles")
});
/// All of it: "df -i shows 100%" (Almost Out Of Files), "quota 100% used" (Fully Used).
static ALL_FULL: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"(?i)\b100\s*%").expect("the full pattern compiles"));
/// What a percentage near full is of, for [`NEARLY_FULL`]: "cpu at 95%" is not.
static STORAGE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?i)\b(?:disks?|fs|filesystems?|volumes?|pvcs?|pvs?|inodes?|space|full|quotas?|resourcequotas?|storage|df|partitions?|mounts?|iuse)\b")
        .expect("the storage pattern compiles")
});

/// A disk's own share, for [`NEARLY_FULL`]: near full, it is out of space
/// (unless it is the inodes', [`INODES`], or a volume claim's, [`CLAIM`]).
static DISK: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?i)\b(?:disks?|fs|filesystems?|volumes?|partitions?|mounts?|storage)\b")
        .expect("the disk pattern compiles")
});
static INODES: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?i)\b(?:inodes?|iuse|iused|ifree)\b|\bdf -i\b").expect("the inodes pattern compiles")
});
/// A Kubernetes volume's share: its runbook says "filling up", not "space".
static CLAIM: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?i)\b(?:pvcs?|pvs?|claims?|persistent ?volumes?|persistentvolumeclaims?)\b")
        .expect("the volume claim pattern compiles")
});
/// A share that will be full, not one that is: "will hit 100% by morning",
/// "trending to zero in a few hrs" ask the "filling up" runbook ("will pods
/// be evicted?" asks nothing of the share).
static PREDICTED: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(concat!(
        r"(?i)\bwill (?:hit|fill|reach|run out|be full|be out)\b|\b(?:going to|trending|growing|predicted|forecast|projected)\b",
        r"|\bby (?:morning|tonight|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
        r"|\bin (?:a few|an?|\d+) ?(?:h|hrs?|hours?|d|days?)\b",
    ))
    .expect("the predicted pattern compiles")
});

/// `query` as it is searched: without [`LOG_NOISE`] and what it rules out
/// ([`NOT_THAT`]), with "replicas" when it counts pods ([`PODS_OF`]), and with
/// "almost" ("fully almost" at 100%, and "space" for a disk's) when it gives
/// storage or a quota as nearly full ([`NEARLY_FULL`]), or "filling up" when
/// it will be ([`PREDICTED`]).
fn as_searched(query: &str) -> std::borrow::Cow<'_, str> {
    let query = LOG_NOISE.replace_all(query, " ");
    let query = match NOT_THAT.replace_all(&query, " ") {
        std::borrow::Cow::Owned(without) => without.into(),
        std::borrow::Cow::Borrowed(_) => query,
    };
    let mut extra = String::new();
    if PODS_OF.is_match(&query) {
        extra.push_str(" replicas");
    }
    for port in PORT.captures_iter(&query) {
        if let Some((_, component)) = PORTS.iter().find(|(p, _)| *p == &port[1])
            && !extra.contains(component)
        {
            extra.push(' ');
            extra.push_str(component);
        }
    }
    let full = ALL_FULL.is_match(&query);
    let near = STORAGE.is_match(&query) && (full || NEARLY_FULL.is_match(&query));
    let predicted = PREDICTED.is_match(&query);
    if near {
        extra.push_str(if predicted {
            " filling up"
        } else if full {
            " fully almost"
        } else {
            " almost"
        });
    }
    if (near || predicted) && DISK.is_match(&query) && !INODES.is_match(&query) && !CLAIM.is_match(&query) {
        extra.push_str(" space");
    }
    if extra.is_empty() { query } else { format!("{query}{extra}").into() }
}

/// The terms of `text` as the analyzer makes them, without repeats.
fn analyze(text: &str) -> Vec<String> {
    let mut analyzer = tokenize::analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut seen = HashSet::new();
    let mut terms = Vec::new();
    while let Some(token) = stream.next() {
        if seen.insert(token.text.clone()) {
            terms.push(token.text.clone());
        }
    }
    terms
}

/// The CamelCase words of `text` (which the analyzer also splits into their
/// parts), as their whole terms.
fn compounds(text: &str) -> HashSet<String> {
    let mut analyzer = tokenize::analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = HashSet::new();
    let mut last: Option<(usize, String)> = None;
    while let Some(token) = stream.next() {
        match &last {
            Some((p, whole)) if *p == token.position => {
                out.insert(whole.clone());
            }
            _ => last = Some((token.position, token.text.clone())),
        }
    }
    out
}

/// One document while ranking: its best passage, score, whether a second
/// passage counted, its own entry (for the words it has) and its title.
struct Ranked {
    key: String,
    best: DocAddress,
    score: f32,
    second: bool,
    entry: Option<DocAddress>,
    title: String,
    /// Its title or best passage's heading is written in Chinese.
    chinese: bool,
}

/// One of the question's topic words while ranking: its term in the
/// documents' entries, how rare it is, and the words that stand in for it
/// (each stand-in counts when all its words are there).
struct Topic {
    term: Term,
    weight: f32,
    stand_ins: Vec<Vec<Term>>,
}

/// How rare `term` is in the index: its inverse document frequency.
fn rarity(searcher: &Searcher, term: &Term) -> f32 {
    let docs = searcher.num_docs().max(1) as f32;
    let df = searcher.doc_freq(term).unwrap_or(0) as f32;
    (1.0 + docs / (1.0 + df)).ln()
}

/// A stored text field's value ("" when absent).
fn stored(doc: &TantivyDocument, field: Field) -> String {
    doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned()
}

/// A snippet as Markdown: the matched words in bold, whitespace collapsed.
fn snippet_markdown(snippet: &Snippet) -> String {
    let fragment = snippet.fragment();
    let mut out = String::with_capacity(fragment.len() + 16);
    // Touching ranges (the parts of a CamelCase or run-together word) are
    // one bold run: `**Crash****Loop**` would show its asterisks.
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for range in snippet.highlighted().iter().filter(|r| r.end <= fragment.len()) {
        match runs.last_mut() {
            Some(last) if range.start < last.end => {}
            Some(last) if range.start == last.end => last.end = range.end,
            _ => runs.push(range.clone()),
        }
    }
    let mut at = 0;
    for range in runs {
        out.push_str(&fragment[at..range.start]);
        out.push_str("**");
        out.push_str(&fragment[range.clone()]);
        out.push_str("**");
        at = range.end;
    }
    out.push_str(&fragment[at..]);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Kb {
    /// The index of `roots` in `dir`: the one there, brought up to date
    /// (only files that changed since are read), when it was written by this
    /// version of opsclaw; otherwise built anew.
    pub fn load(roots: Vec<Root>, dir: &Path) -> Result<(Self, BuildStats), KbError> {
        let Some(previous) = ManifestFile::current(dir) else { return Self::build(roots, dir) };
        let opened = Index::open_in_dir(dir).map_err(KbError::from).and_then(|i| Ok((fields_of(&i.schema())?, i)));
        let (fields, index) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "knowledge index unreadable; building it anew");
                return Self::build(roots, dir);
            }
        };
        index.tokenizers().register(tokenize::NAME, tokenize::analyzer());
        let reader = index.reader()?;
        let kb = Self { dir: dir.to_owned(), index, reader, fields, roots, manifest: Mutex::new(previous.files) };
        let stats = kb.sync()?;
        Ok((kb, stats))
    }

    /// Builds a fresh index of `roots` in `dir` (replacing an index there).
    pub fn build(roots: Vec<Root>, dir: &Path) -> Result<(Self, BuildStats), KbError> {
        clear_index_dir(dir)?;
        let (schema, fields) = schema();
        let index = Index::create_in_dir(dir, schema)?;
        index.tokenizers().register(tokenize::NAME, tokenize::analyzer());
        let mut writer = index.writer::<TantivyDocument>(WRITER_MEMORY)?;
        let mut stats = BuildStats::default();
        let mut manifest = HashMap::new();
        for root in &roots {
            for (relative, stamp) in root.scan()? {
                add_file(&writer, fields, root, &relative, &mut stats)?;
                manifest.insert(doc_key(&root.name, &relative), stamp);
            }
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        let reader = index.reader()?;
        reader.reload()?;
        let kb = Self { dir: dir.to_owned(), index, reader, fields, roots, manifest: Mutex::new(HashMap::new()) };
        kb.save_manifest(&manifest)?;
        *kb.manifest.lock().expect("manifest lock") = manifest;
        Ok((kb, stats))
    }

    /// Opens an index built earlier by this version (for searching; it is
    /// not kept current): one built by another may analyze words otherwise.
    pub fn open(dir: &Path) -> Result<Self, KbError> {
        if !dir.join("meta.json").is_file() {
            return Err(KbError::NoIndex(dir.to_owned()));
        }
        if ManifestFile::current(dir).is_none() {
            return Err(KbError::OtherVersion(dir.to_owned()));
        }
        let index = Index::open_in_dir(dir)?;
        index.tokenizers().register(tokenize::NAME, tokenize::analyzer());
        let fields = fields_of(&index.schema())?;
        let reader = index.reader()?;
        let manifest = Mutex::new(HashMap::new());
        Ok(Self { dir: dir.to_owned(), index, reader, fields, roots: Vec::new(), manifest })
    }

    /// Writes what the index now holds next to it (a new file, then renamed over the old).
    fn save_manifest(&self, files: &HashMap<String, Stamp>) -> Result<(), KbError> {
        let manifest = ManifestFile { format: index_format(), files: files.clone() };
        let bytes = serde_json::to_vec(&manifest).expect("a map of strings and numbers serializes");
        let (path, temporary) = (self.dir.join(MANIFEST), self.dir.join(format!("{MANIFEST}.new")));
        std::fs::write(&temporary, bytes).map_err(|error| KbError::Io { path: temporary.clone(), error })?;
        std::fs::rename(&temporary, &path).map_err(|error| KbError::Io { path, error })
    }

    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// How many documents are indexed.
    pub fn documents(&self) -> usize {
        self.manifest.lock().expect("manifest lock").len()
    }

    /// Re-reads the files that changed, appeared or disappeared under the
    /// roots since the last build or sync, in one commit. Searches keep
    /// answering from the previous commit until this one is in.
    pub fn sync(&self) -> Result<BuildStats, KbError> {
        let mut manifest = self.manifest.lock().expect("manifest lock");
        let mut seen: HashMap<String, (usize, String, Stamp)> = HashMap::new();
        for (i, root) in self.roots.iter().enumerate() {
            for (relative, stamp) in root.scan()? {
                seen.insert(doc_key(&root.name, &relative), (i, relative, stamp));
            }
        }
        let changed: Vec<&String> =
            seen.iter().filter(|(k, v)| manifest.get(*k) != Some(&v.2)).map(|(k, _)| k).collect();
        let removed: Vec<String> = manifest.keys().filter(|k| !seen.contains_key(*k)).cloned().collect();
        let mut stats = BuildStats::default();
        if changed.is_empty() && removed.is_empty() {
            return Ok(stats);
        }
        let mut writer: IndexWriter<TantivyDocument> = self.index.writer_with_num_threads(1, UPDATE_WRITER_MEMORY)?;
        for key in changed.iter().copied().chain(&removed) {
            writer.delete_term(Term::from_field_text(self.fields.key, key));
            writer.delete_term(Term::from_field_text(self.fields.doc_key, key));
        }
        for key in &changed {
            let (i, relative, stamp) = &seen[*key];
            add_file(&writer, self.fields, &self.roots[*i], relative, &mut stats)?;
            manifest.insert((*key).clone(), *stamp);
        }
        for key in &removed {
            manifest.remove(key);
        }
        stats.removed = removed.len();
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        self.save_manifest(&manifest)?;
        Ok(stats)
    }

    /// Terms the query's shorthand stands for, and the indexed words a
    /// misspelt query word was meant to be (`respelt`), not already in
    /// `terms`, each with its weight.
    fn synonyms(&self, query: &str, terms: &[String], respelt: &[(String, Vec<String>)]) -> Vec<(String, f32)> {
        let mut extra: Vec<(String, f32)> = Vec::new();
        let add = |term: &String, weight: f32, extra: &mut Vec<(String, f32)>| {
            if !terms.contains(term) && !extra.iter().any(|(e, _)| e == term) {
                extra.push((term.clone(), weight));
            }
        };
        let weight = if answer::is_chinese(query) { CHINESE_SYNONYM_WEIGHT } else { SYNONYM_WEIGHT };
        for shorthand in shorthand_in(query) {
            for t in &shorthand.long {
                add(t, weight, &mut extra);
            }
        }
        // At full weight: the closest spelling stands for the word typed.
        for (_, near) in respelt {
            for t in near {
                add(t, 1.0, &mut extra);
            }
        }
        extra
    }

    /// Each of `terms` that no document has, with the indexed words it was
    /// probably meant to be ([`Kb::spelt_like`]); words with none are left out.
    fn respellings(&self, searcher: &Searcher, terms: &[String]) -> Result<Vec<(String, Vec<String>)>, KbError> {
        let mut out = Vec::new();
        for t in terms {
            let near = self.spelt_like(searcher, t)?;
            if !near.is_empty() {
                out.push((t.clone(), near));
            }
        }
        Ok(out)
    }

    /// For an English word of 4 letters or more that no document has: the
    /// indexed words closest to it within one edit (two from 7 letters;
    /// a swap of neighbours is one), starting with the same letter, as a
    /// typo ("alertmanger", "certficate") rarely hits the first. Only
    /// unknown words are looked at, so a right word is never replaced, and
    /// only the terms under one letter are read.
    fn spelt_like(&self, searcher: &Searcher, term: &str) -> Result<Vec<String>, KbError> {
        let wanted = term.len() >= 4 && term.is_ascii() && !STOP_TERMS.contains(term) && !is_number(term);
        if !wanted || searcher.doc_freq(&Term::from_field_text(self.fields.all, term))? > 0 {
            return Ok(Vec::new());
        }
        let max = if term.len() >= 7 { 2 } else { 1 };
        let from = &term.as_bytes()[..1];
        let to = [from[0] + 1];
        let mut near: Vec<(usize, String)> = Vec::new();
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(self.fields.all)?;
            let mut words =
                inverted.terms().range().ge(from).lt(to).into_stream().map_err(|e| KbError::Index(e.into()))?;
            while words.advance() {
                let Ok(word) = std::str::from_utf8(words.key()) else { continue };
                if word.len() < 4 || word.len().abs_diff(term.len()) > max {
                    continue;
                }
                let distance = strsim::osa_distance(term, word);
                if distance <= max && !near.iter().any(|(_, w)| w == word) {
                    near.push((distance, word.to_owned()));
                }
            }
        }
        let closest = near.iter().map(|(d, _)| *d).min();
        Ok(near.into_iter().filter(|(d, _)| Some(*d) == closest).map(|(_, w)| w).collect())
    }

    /// The query's words (and shorthand) against the passages' fields.
    fn clauses(
        &self,
        terms: &[String],
        synonyms: &[(String, f32)],
        compound: &HashSet<String>,
    ) -> Vec<(Occur, Box<dyn Query>)> {
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let fields = [(f.title, TITLE_WEIGHT), (f.aliases, ALIASES_WEIGHT), (f.heading, HEADING_WEIGHT), (f.body, 1.0)];
        for (field, boost) in fields {
            let weighted = terms.iter().map(|t| (t, boost)).chain(synonyms.iter().map(|(t, w)| (t, boost * w)));
            for (term, weight) in weighted {
                let q = TermQuery::new(Term::from_field_text(field, term), IndexRecordOption::WithFreqs);
                let weight = weight * term_weight_in(field == f.title, term, compound);
                clauses.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), weight))));
            }
        }
        clauses
    }

    /// The best `limit` documents for `query`, best first, each once.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, KbError> {
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(KbError::QueryTooLong);
        }
        let query = &*as_searched(query);
        let terms = analyze(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let respelt = self.respellings(&searcher, &terms)?;
        let synonyms = self.synonyms(query, &terms, &respelt);
        let topic = self.topic_terms(&searcher, query, &terms, &respelt);
        let compound = compounds(query);
        let asks_chinese = answer::is_chinese(query);
        let query = BooleanQuery::new(self.clauses(&terms, &synonyms, &compound));
        let top = searcher.search(&query, &TopDocs::with_limit(limit * 10).order_by_score())?;
        // A document ranks by its best passage, plus a little for a second one
        // that also matches: a runbook whose several sections answer beats a
        // sibling that only shares its title's words.
        let mut ranked: Vec<Ranked> = Vec::new();
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let key = doc_key(&stored(&doc, self.fields.root), &stored(&doc, self.fields.path));
            match ranked.iter_mut().find(|r| r.key == key) {
                Some(r) if !r.second => {
                    r.second = true;
                    r.score += SECOND_PASSAGE * score;
                }
                Some(_) => {}
                None => {
                    let title = stored(&doc, self.fields.title);
                    let chinese = answer::is_chinese(&title) || answer::is_chinese(&stored(&doc, self.fields.heading));
                    ranked.push(Ranked { key, best: address, score, second: false, entry: None, title, chinese })
                }
            }
        }
        // Then the whole document: its own score for the query's words, and
        // the share of the question's topic words it has anywhere. A sibling
        // that shares two title words loses to the runbook that has them all.
        let whole = BooleanQuery::new(self.whole_clauses(&terms, &synonyms, &compound));
        let mut whole_scores = HashMap::new();
        for (score, address) in searcher.search(&whole, &TopDocs::with_limit(limit * 10).order_by_score())? {
            let doc: TantivyDocument = searcher.doc(address)?;
            let key = doc_key(&stored(&doc, self.fields.root), &stored(&doc, self.fields.path));
            whole_scores.insert(key, (score, address));
        }
        for r in &mut ranked {
            r.entry = match whole_scores.get(&r.key) {
                Some(&(score, address)) => {
                    r.score += if asks_chinese { CHINESE_WHOLE_WEIGHT } else { WHOLE_WEIGHT } * score;
                    Some(address)
                }
                None => {
                    let by_key =
                        TermQuery::new(Term::from_field_text(self.fields.doc_key, &r.key), IndexRecordOption::Basic);
                    searcher.search(&by_key, &TopDocs::with_limit(1).order_by_score())?.first().map(|(_, a)| *a)
                }
            };
        }
        let coverage = self.coverage(&searcher, &topic, &ranked)?;
        // A document's length, for an English question: see `LONG_DOCUMENT`. Chinese task
        // pages are long by nature, and their length tells nothing.
        let lengths = if asks_chinese { vec![0; ranked.len()] } else { self.lengths(&searcher, &ranked)? };
        for ((r, c), length) in ranked.iter_mut().zip(coverage).zip(lengths) {
            r.score *= (LONG_DOCUMENT / (length as f32).max(LONG_DOCUMENT)).powf(LENGTH_PENALTY);
            r.score *= c;
            if r.chinese && !asks_chinese {
                r.score *= OTHER_LANGUAGE;
            }
        }
        // Last, the title: of siblings sharing most of the question's words,
        // the one whose title the question asks about more is the answer.
        // It raises a score at most 1 + TITLE_SHARE_WEIGHT times, so only the
        // documents within that of the `limit`-th can reach the top.
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        let bar = ranked.get(limit - 1).map_or(0.0, |r| r.score) / (1.0 + TITLE_SHARE_WEIGHT);
        let asked: HashSet<&str> =
            terms.iter().map(String::as_str).chain(synonyms.iter().map(|(t, _)| t.as_str())).collect();
        let mut rarities = HashMap::new();
        for r in ranked.iter_mut().take_while(|r| r.score >= bar) {
            let title = title_words(&r.title);
            let share = self.title_share(&searcher, &title, &asked, &mut rarities);
            r.score *= 1.0 + TITLE_SHARE_WEIGHT * share;
            if other_subject(&title, &asked) {
                r.score *= OTHER_SUBJECT;
            }
        }
        // Equal scores in the order of the documents' keys: the index's
        // segments (several writer threads) otherwise decide it, run to run.
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
        let snippets = self.snippets(&searcher, &query)?;
        ranked.into_iter().take(limit).map(|r| self.hit(&searcher, &snippets, r.best, r.score)).collect()
    }

    /// The query's words (and shorthand) against the documents' own entries.
    fn whole_clauses(
        &self,
        terms: &[String],
        synonyms: &[(String, f32)],
        compound: &HashSet<String>,
    ) -> Vec<(Occur, Box<dyn Query>)> {
        let weighted = terms.iter().map(|t| (t, 1.0)).chain(synonyms.iter().map(|(t, w)| (t, *w)));
        weighted
            .map(|(term, weight)| {
                let q = TermQuery::new(Term::from_field_text(self.fields.all, term), IndexRecordOption::WithFreqs);
                let weight = weight * term_weight(term, compound);
                (Occur::Should, Box::new(BoostQuery::new(Box::new(q), weight)) as Box<dyn Query>)
            })
            .collect()
    }

    /// How much of a title (its [`title_words`]) the query asks about, 0 to
    /// 1: the title's words in `asked`, each weighed by how rare it is
    /// (`rarities` caches that).
    fn title_share(
        &self,
        searcher: &Searcher,
        title: &[String],
        asked: &HashSet<&str>,
        rarities: &mut HashMap<String, f32>,
    ) -> f32 {
        let (mut total, mut matched) = (0.0f32, 0.0f32);
        for term in title {
            let weight = match rarities.get(term) {
                Some(&weight) => weight,
                None => *rarities
                    .entry(term.clone())
                    .or_insert(rarity(searcher, &Term::from_field_text(self.fields.all, term))),
            };
            total += weight;
            if asked.contains(term.as_str()) {
                matched += weight;
            }
        }
        if total == 0.0 { 0.0 } else { matched / total }
    }

    /// The query's topic words (no stop words), each with its weight (how
    /// rare it is) and what stands in for it: the words of its shorthand,
    /// the spellings it was meant to be.
    fn topic_terms(
        &self,
        searcher: &Searcher,
        query: &str,
        terms: &[String],
        respelt: &[(String, Vec<String>)],
    ) -> Vec<Topic> {
        let all = |text: &String| Term::from_field_text(self.fields.all, text);
        let shorthand: Vec<&Shorthand> = shorthand_in(query).collect();
        terms
            .iter()
            .filter(|t| !STOP_TERMS.contains(*t) && !is_number(t))
            .map(|t| {
                let term = all(t);
                let weight = rarity(searcher, &term);
                let mut stand_ins: Vec<Vec<Term>> = shorthand
                    .iter()
                    .filter(|s| s.terms.contains(t))
                    .map(|s| s.long.iter().map(all).collect())
                    .collect();
                if let Some((_, near)) = respelt.iter().find(|(typed, _)| typed == t) {
                    stand_ins.extend(near.iter().map(|n| vec![all(n)]));
                }
                Topic { term, weight, stand_ins }
            })
            .collect()
    }

    /// For each ranked document, the weighed share of `topic` its own entry
    /// has (1 when the query has no topic words), read from the postings. A
    /// topic word counts as there when all the words of one of its stand-ins
    /// are: a runbook that says "RAID" answers a question that says "md".
    fn coverage(&self, searcher: &Searcher, topic: &[Topic], ranked: &[Ranked]) -> Result<Vec<f32>, KbError> {
        let total: f32 = topic.iter().map(|t| t.weight).sum();
        if total == 0.0 {
            return Ok(vec![1.0; ranked.len()]);
        }
        // Every term to look up, once: the topic words and their stand-ins.
        let mut wanted: Vec<&Term> = Vec::new();
        for t in topic {
            for term in std::iter::once(&t.term).chain(t.stand_ins.iter().flatten()) {
                if !wanted.contains(&term) {
                    wanted.push(term);
                }
            }
        }
        // has[i][j]: ranked document i has wanted term j.
        let mut has = vec![vec![false; wanted.len()]; ranked.len()];
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let mut local: Vec<(u32, usize)> = ranked
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.entry.filter(|a| a.segment_ord as usize == ord).map(|a| (a.doc_id, i)))
                .collect();
            if local.is_empty() {
                continue;
            }
            local.sort_unstable();
            let inverted = segment.inverted_index(self.fields.all)?;
            for (j, term) in wanted.iter().enumerate() {
                let postings = inverted.read_postings(term, IndexRecordOption::Basic);
                let postings = postings.map_err(|e| KbError::Index(e.into()))?;
                let Some(mut postings) = postings else { continue };
                for &(doc, i) in &local {
                    if postings.doc() < doc {
                        postings.seek(doc);
                    }
                    if postings.doc() == doc {
                        has[i][j] = true;
                    }
                }
            }
        }
        let at = |term: &Term| wanted.iter().position(|w| *w == term).expect("every topic term is wanted");
        Ok(has
            .iter()
            .map(|has| {
                let there = |term: &Term| has[at(term)];
                let matched: f32 = topic
                    .iter()
                    .filter(|t| there(&t.term) || t.stand_ins.iter().any(|s| s.iter().all(there)))
                    .map(|t| t.weight)
                    .sum();
                matched / total
            })
            .collect())
    }

    /// Each ranked document's length in words (its own entry's, as the
    /// index's field norm keeps it; 0 when it has none).
    fn lengths(&self, searcher: &Searcher, ranked: &[Ranked]) -> Result<Vec<u32>, KbError> {
        let norms = searcher
            .segment_readers()
            .iter()
            .map(|segment| segment.get_fieldnorms_reader(self.fields.all))
            .collect::<Result<Vec<_>, _>>()?;
        let length = |a: DocAddress| norms[a.segment_ord as usize].fieldnorm(a.doc_id);
        Ok(ranked.iter().map(|r| r.entry.map_or(0, length)).collect())
    }

    fn snippets(&self, searcher: &Searcher, query: &dyn Query) -> Result<SnippetGenerator, KbError> {
        let mut snippets = SnippetGenerator::create(searcher, query, self.fields.body)?;
        snippets.set_max_num_chars(200);
        Ok(snippets)
    }

    fn hit(
        &self,
        searcher: &Searcher,
        snippets: &SnippetGenerator,
        at: DocAddress,
        score: f32,
    ) -> Result<Hit, KbError> {
        let doc: TantivyDocument = searcher.doc(at)?;
        let text = |field: Field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let body = text(self.fields.body);
        let snippet = snippets.snippet_from_doc(&doc);
        let snippet = if snippet.fragment().is_empty() {
            body.chars().take(200).collect::<String>().split_whitespace().collect::<Vec<_>>().join(" ")
        } else {
            snippet_markdown(&snippet)
        };
        let (root, path) = (text(self.fields.root), text(self.fields.path));
        let url = self.roots.iter().find(|r| r.name == root).and_then(|r| r.link(&path));
        Ok(Hit {
            root,
            path,
            title: text(self.fields.title),
            heading: text(self.fields.heading),
            score,
            snippet,
            url,
            text: body,
            aliases: text(self.fields.aliases),
        })
    }

    /// How much of what `query` asks about `hit`'s passage covers, 0 to 1:
    /// the query's topic words (not "how", "the", "怎么") each weighed by how
    /// rare it is in the index, counting a shorthand word as present when the
    /// words it stands for are; or, when more, [`TITLE_RELEVANCE`] times the
    /// share of the hit's title the query asks about. Used to tell "nothing
    /// relevant" from a weak match.
    pub fn relevance(&self, query: &str, hit: &Hit) -> f32 {
        let query = &*as_searched(query);
        let searcher = self.reader.searcher();
        let all = format!("{}\n{}\n{}\n{}", hit.title, hit.aliases, hit.heading, hit.text);
        let present: HashSet<String> = analyze(&all).into_iter().collect();
        // jieba cuts the same characters differently in different contexts (满 in 快满了).
        let found = |t: &String| present.contains(t) || (answer::is_chinese(t) && all.contains(t.as_str()));
        let (mut total, mut matched) = (0.0f32, 0.0f32);
        // A word of the query's shorthand counts as present when the words it stands for are.
        let stood_for: Vec<&Shorthand> = shorthand_in(query).collect();
        let terms = analyze(query);
        for term in terms.iter().filter(|t| !STOP_TERMS.contains(*t) && !is_number(t)) {
            let weight = rarity(&searcher, &Term::from_field_text(self.fields.body, term));
            total += weight;
            let mut stands_for = stood_for.iter().filter(|s| s.terms.contains(term));
            // A misspelt word counts as present when a spelling search took for it is; an
            // index read failing here only makes the passage look less relevant.
            let respelt = || self.spelt_like(&searcher, term).unwrap_or_default().iter().any(|t| present.contains(t));
            if found(term) || stands_for.any(|s| s.long.iter().all(|t| present.contains(t))) {
                matched += weight;
            } else if respelt() {
                matched += RESPELT_RELEVANCE * weight;
            }
        }
        let words = if total == 0.0 { 0.0 } else { matched / total };
        // A question that asks about most of a runbook's title is about that
        // runbook, whatever else it says ("kube job failed for the nightly
        // billing export"): an alert name is the most a tired question names.
        let asked: HashSet<&str> =
            terms.iter().chain(stood_for.iter().flat_map(|s| s.long.iter())).map(String::as_str).collect();
        let title = self.title_share(&searcher, &title_words(&hit.title), &asked, &mut HashMap::new());
        words.max(TITLE_RELEVANCE * title)
    }

    /// The runbook for an alert: the document its `runbook_url` points at
    /// (inside a root with a `url`), else one whose aliases or file name is
    /// one of `names`, else the best search hit for `text` that is relevant
    /// enough. Within a chosen document, the passage that best matches `text`.
    pub fn runbook(
        &self,
        url: Option<&str>,
        names: &[&str],
        text: &str,
        min_relevance: f32,
    ) -> Result<Option<Hit>, KbError> {
        if let Some(key) = url.and_then(|u| self.key_for_url(u))
            && let Some(hit) = self.best_within(Term::from_field_text(self.fields.key, &key), text, None)?
        {
            return Ok(Some(hit));
        }
        for name in names.iter().map(|n| n.trim().to_lowercase()).filter(|n| !n.is_empty()) {
            if let Some(hit) = self.best_within(Term::from_field_text(self.fields.names, &name), text, None)? {
                return Ok(Some(hit));
            }
        }
        let text: String = text.chars().take(MAX_QUERY_CHARS).collect();
        let best = self.search(&text, 1)?.into_iter().next();
        Ok(best.filter(|hit| self.relevance(&text, hit) >= min_relevance))
    }

    /// The document key a web address names, when it starts with a root's `url`
    /// (with or without `.md`, a trailing `/` or a `#fragment`).
    fn key_for_url(&self, url: &str) -> Option<String> {
        let url = url.split(['#', '?']).next().unwrap_or(url);
        let manifest = self.manifest.lock().expect("manifest lock");
        self.roots.iter().find_map(|root| {
            let base = root.url.as_deref()?.trim_end_matches('/');
            let relative = url.strip_prefix(base)?.trim_matches('/');
            [
                relative.to_owned(),
                format!("{relative}.md"),
                format!("{relative}/index.md"),
                format!("{relative}/README.md"),
            ]
            .into_iter()
            .map(|r| doc_key(&root.name, &r))
            .find(|k| manifest.contains_key(k))
        })
    }

    /// The passage of `hit`'s document under a heading that says what to do
    /// (Mitigation, Fix, 处理 …) that best matches `question`; `None` when
    /// `hit` is one already or the document has none.
    pub fn action_passage(&self, hit: &Hit, question: &str) -> Result<Option<Hit>, KbError> {
        let section = hit.heading.rsplit(" > ").next().unwrap_or(&hit.heading);
        if analyze(section).iter().any(|t| ACTION_TERMS.contains(t)) {
            return Ok(None);
        }
        let under_action: Vec<(Occur, Box<dyn Query>)> = ACTION_TERMS
            .iter()
            .map(|t| {
                let q = TermQuery::new(Term::from_field_text(self.fields.heading, t), IndexRecordOption::Basic);
                (Occur::Should, Box::new(q) as Box<dyn Query>)
            })
            .collect();
        let key = Term::from_field_text(self.fields.key, &doc_key(&hit.root, &hit.path));
        let found = self.best_within(key, question, Some(Box::new(BooleanQuery::new(under_action))))?;
        Ok(found.filter(|action| action.heading != hit.heading))
    }

    /// The passage of the documents `filter` selects (and `also` matches,
    /// when given) that best matches `text` (the first passage when nothing
    /// in `text` matches).
    fn best_within(&self, filter: Term, text: &str, also: Option<Box<dyn Query>>) -> Result<Option<Hit>, KbError> {
        let terms = analyze(&text.chars().take(MAX_QUERY_CHARS).collect::<String>());
        let mut clauses = self.clauses(&terms, &[], &compounds(text));
        clauses.push((Occur::Must, Box::new(TermQuery::new(filter, IndexRecordOption::Basic))));
        clauses.extend(also.map(|q| (Occur::Must, q)));
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let Some((score, at)) = searcher.search(&query, &TopDocs::with_limit(1).order_by_score())?.into_iter().next()
        else {
            return Ok(None);
        };
        let snippets = self.snippets(&searcher, &query)?;
        self.hit(&searcher, &snippets, at, score).map(Some)
    }
}

/// Reads and indexes one file; a file that cannot be read is skipped with one log line.
fn add_file(
    writer: &IndexWriter,
    fields: Fields,
    root: &Root,
    relative: &str,
    stats: &mut BuildStats,
) -> Result<(), KbError> {
    let text = match root.read(relative) {
        Ok(text) => text,
        Err(why) => {
            let path = root.path().map_or_else(|| PathBuf::from(relative), |p| p.join(relative));
            tracing::warn!(path = %path.display(), why, "knowledge base file skipped");
            stats.skipped.push((path, why));
            return Ok(());
        }
    };
    let stem = relative.rsplit('/').next().unwrap_or(relative);
    let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
    let parsed = markdown::parse(stem, &text);
    let aliases = parsed.aliases.join("\n");
    let key = doc_key(&root.name, relative);
    for passage in &parsed.passages {
        let mut doc = doc!(
            fields.key => key.clone(),
            fields.root => root.name.clone(),
            fields.path => relative.to_owned(),
            fields.title => parsed.title.clone(),
            fields.aliases => aliases.clone(),
            fields.heading => passage.heading.clone(),
            fields.body => passage.text.clone(),
        );
        for name in &parsed.names {
            doc.add_text(fields.names, name);
        }
        writer.add_document(doc)?;
        stats.passages += 1;
    }
    let mut all = format!("{}\n{aliases}\n", parsed.title);
    for passage in &parsed.passages {
        all.push_str(&passage.heading);
        all.push('\n');
        all.push_str(&passage.text);
        all.push('\n');
    }
    writer.add_document(doc!(
        fields.doc_key => key,
        fields.root => root.name.clone(),
        fields.path => relative.to_owned(),
        fields.all => all,
    ))?;
    stats.documents += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kb::config::DEFAULT_RELEVANCE;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_number_in_the_question_does_not_pick_the_sibling_that_prints_it() {
        // Ranked among documents that share the rest of the question, the one
        // that prints the same number must not win for it.
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "KubeClientCertificateExpiration.md",
            "# Kube Client Certificate Expiration\n\nA client certificate expires in less than 7 days.\n",
        );
        write(
            dir.path(),
            "KubeletClientCertificateExpiration.md",
            "# Kubelet Client Certificate Expiration\n\nThe kubelet's client certificate expires soon.\n",
        );
        let (kb, _) = Kb::build(vec![Root::dir(dir.path())], &dir.path().join("idx")).unwrap();
        let hits = kb.search("kubelet client certificate expires in 7 days", 2).unwrap();
        assert_eq!(hits[0].path, "KubeletClientCertificateExpiration.md", "{hits:?}");
        assert_eq!(term_weight("7", &HashSet::new()), NUMBER_WEIGHT);
        assert!(analyze("IUse% at 97").iter().any(|t| is_number(t)));
    }

    #[test]
    fn the_parts_of_one_word_are_highlighted_as_one_bold_run() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "crash.md", "# Pod crash looping\n\nThe pod is in CrashLoopBackOff after the deploy.\n");
        let (kb, _) = Kb::build(vec![Root::dir(dir.path())], &dir.path().join("idx")).unwrap();
        let hits = kb.search("crash loop after deploy", 1).unwrap();
        let snippet = &hits[0].snippet;
        assert!(snippet.contains("**CrashLoop**BackOff"), "{snippet}");
        assert!(snippet.contains("**deploy**"), "{snippet}");
        assert!(!snippet.contains("****"), "{snippet}");
    }

    #[test]
    fn a_document_has_a_shorthand_word_when_it_has_what_the_word_stands_for() {
        // "mdadm" stands for RAID: the RAID runbook covers the question's
        // rarest word, though it never writes it, and beats the document that
        // shares only the question's common words.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "NodeRAIDDegraded.md", "# Node RAID Degraded\n\nThe RAID device lost a disk.\n");
        write(dir.path(), "StorageArray.md", "# Storage Array\n\nThe array of volumes is degraded.\n");
        let (kb, _) = Kb::build(vec![Root::dir(dir.path())], &dir.path().join("idx")).unwrap();
        let hits = kb.search("mdadm array is degraded", 2).unwrap();
        assert_eq!(hits[0].path, "NodeRAIDDegraded.md", "{hits:?}");
    }

    #[test]
    fn a_stop_word_weighs_in_full_in_a_title_only() {
        let none = HashSet::new();
        let any = &analyze("any")[0];
        assert_eq!(term_weight_in(true, any, &none), 1.0);
        assert_eq!(term_weight_in(false, any, &none), STOP_WEIGHT);
        // Other words weigh the same in every field.
        let whole = compounds("NotReady");
        let not_ready = &analyze("NotReady").into_iter().find(|t| whole.contains(t)).unwrap();
        assert_eq!(term_weight_in(true, not_ready, &whole), COMPOUND_WEIGHT);
        assert_eq!(term_weight_in(true, "7", &none), NUMBER_WEIGHT);
    }

    #[test]
    fn a_misspelt_word_finds_the_word_it_was_meant_to_be() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "am.md", "# Alertmanager Cluster Down\n\nHalf of the Alertmanager instances are down.\n");
        write(dir.path(), "etcd.md", "# etcd Members Down\n\nOne etcd member is down.\n");
        let (kb, _) = Kb::build(vec![Root::dir(dir.path())], &dir.path().join("idx")).unwrap();
        let searcher = kb.reader.searcher();
        assert_eq!(kb.spelt_like(&searcher, "alertmang").unwrap(), ["alertmanag"]);
        // A word the index has, a short word and a stop word are left as they are.
        assert!(kb.spelt_like(&searcher, "member").unwrap().is_empty());
        assert!(kb.spelt_like(&searcher, "dwn").unwrap().is_empty());
        assert!(kb.spelt_like(&searcher, "about").unwrap().is_empty());
        let hits = kb.search("alertmanger instances down", 2).unwrap();
        assert_eq!(hits[0].path, "am.md", "{hits:?}");
        // The passage says what was asked, the typo counting for less than a
        // word found as typed, more than a word nowhere.
        let typo = kb.relevance("alertmanger instances down", &hits[0]);
        let unknown = kb.relevance("zqxwvutsr instances down", &hits[0]);
        assert!(unknown < typo && typo < 1.0, "{unknown} {typo}");
    }

    #[test]
    fn an_english_question_prefers_an_english_document_to_a_chinese_one_sharing_its_commands() {
        let dir = tempfile::tempdir().unwrap();
        let zh = "# 配置持久卷\n\n## 创建 PersistentVolume\n\n运行 `kubectl get pv` 查看 pv 的 status，Failed 表示回收失败。\n";
        write(dir.path(), "zh.md", zh);
        let en = "# Kube Persistent Volume Errors\n\nA persistent volume is in phase Failed: see its status.\n";
        write(dir.path(), "en.md", en);
        let (kb, _) = Kb::build(vec![Root::dir(dir.path())], &dir.path().join("idx")).unwrap();
        let english = kb.search("kubectl get status Failed", 2).unwrap();
        assert_eq!(english[0].path, "en.md", "{english:?}");
        // The Chinese page matches the English words better: the rule decided it.
        assert!(english[1].score / OTHER_LANGUAGE > english[0].score, "{english:?}");
        let chinese = kb.search("pv 的 status 是 Failed 怎么回收", 2).unwrap();
        assert_eq!(chinese[0].path, "zh.md", "{chinese:?}");
    }

    #[test]
    fn a_pasted_log_line_is_searched_by_its_message_not_its_fields() {
        // The runbook quoting another logfmt line shares the pasted line's
        // field names and level; the one about its message must win.
        let dir = tempfile::tempdir().unwrap();
        let quoting = "# Config Reload Failed\n\n```\nlevel=error ts=2021-09-24T11:24:52Z caller=runutil.go:101 \
            msg=\"function failed\" err=\"connection refused\"\n```\n";
        write(dir.path(), "reload.md", quoting);
        write(
            dir.path(),
            "tsdb.md",
            "# TSDB Blocks Not Loading\n\nPrometheus cannot open a block: meta.json missing.\n",
        );
        let (kb, _) = Kb::build(vec![Root::dir(dir.path())], &dir.path().join("idx")).unwrap();
        let pasted = r#"level=error ts=2024-03-11T02:58:10.114Z caller=db.go:1021 component=tsdb msg="Failed to open block" err="open meta.json: no such file""#;
        let hits = kb.search(pasted, 2).unwrap();
        assert_eq!(hits[0].path, "tsdb.md", "{hits:?}");
        assert_eq!(
            as_searched(pasted).split_whitespace().collect::<Vec<_>>().join(" "),
            r#"tsdb "Failed to open block" "open meta.json: no such file""#
        );
        let klog = "E0301 04:02:17.889 certificate_manager.go:488] Failed while requesting a certificate";
        assert_eq!(as_searched(klog).trim(), "Failed while requesting a certificate");
        // Words that only look like fields stay.
        assert_eq!(as_searched("timeout=30s level 3"), "timeout=30s level 3");
        // A count of pods is asked about replicas.
        assert_eq!(as_searched("only 1 of its 3 pods for an hour"), "only 1 of its 3 pods for an hour replicas");
        assert_eq!(as_searched("web 0/1 ready"), "web 0/1 ready replicas");
        assert_eq!(as_searched("1 of 3 nodes"), "1 of 3 nodes");
    }

    #[test]
    fn a_ruled_out_sibling_and_a_share_near_full_are_searched_as_meant() {
        assert_eq!(as_searched("client cert expires (not the kubelet one), renew?"), "client cert expires  , renew?");
        assert_eq!(as_searched("root fs 97% full"), "root fs 97% full almost space");
        assert_eq!(as_searched("df -i shows IUse% at 97"), "df -i shows IUse% at 97 almost");
        assert_eq!(as_searched("namespace quota 100% used"), "namespace quota 100% used fully almost");
        assert_eq!(as_searched("only 3% free on /var"), "only 3% free on /var");
        assert_eq!(as_searched("disk only 3% free on /var"), "disk only 3% free on /var almost space");
        // Near full of inodes is not out of space; a share that will be full is filling up.
        assert_eq!(as_searched("df -i on the disk: IUse% 98%"), "df -i on the disk: IUse% 98% almost");
        assert_eq!(
            as_searched("root disk will hit 100% by morning"),
            "root disk will hit 100% by morning filling up space"
        );
        assert_eq!(as_searched("data volume at 93% and growing"), "data volume at 93% and growing filling up space");
        assert_eq!(as_searched("data pvc at 93% and growing"), "data pvc at 93% and growing filling up");
        // "will" asks about the share only when the share is what will come.
        assert_eq!(
            as_searched("disk 97% full, will pods be evicted?"),
            "disk 97% full, will pods be evicted? almost space"
        );
        assert_eq!(as_searched("filesystem will fill up in 4 hours"), "filesystem will fill up in 4 hours space");
        // A percentage of something that is not storage or a quota says nothing of "almost".
        assert_eq!(as_searched("cpu at 95% on every node"), "cpu at 95% on every node");
        // A well-known port names its component; another port, a time or a count does not.
        assert_eq!(
            as_searched("dial tcp 10.0.3.12:10250: connect: refused"),
            "dial tcp 10.0.3.12:10250: connect: refused kubelet"
        );
        assert_eq!(
            as_searched("GET http://10.2.3.4:8080/metrics at 03:15"),
            "GET http://10.2.3.4:8080/metrics at 03:15"
        );
    }

    #[test]
    fn a_runbook_about_another_subject_than_the_question_names_ranks_below() {
        // The Daemon Set runbook says more of the question's words, but the
        // question is about a stateful set: the sibling about it is the answer.
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "KubeDaemonSetRolloutStuck.md",
            "# Kube Daemon Set Rollout Stuck\n\n## Meaning\n\nThe rollout is stuck: pods are not updated.\n",
        );
        write(
            dir.path(),
            "KubeStatefulSetUpdateNotRolledOut.md",
            "# Kube Stateful Set Update Not Rolled Out\n\n## Meaning\n\nA stateful set update has not rolled out.\n",
        );
        let (kb, _) = Kb::build(vec![Root::dir(dir.path())], &dir.path().join("idx")).unwrap();
        let hits = kb.search("statefulset rollout stuck, pods not updated", 2).unwrap();
        assert_eq!(hits[0].path, "KubeStatefulSetUpdateNotRolledOut.md", "{hits:?}");
        // Naming no subject of the title's group, or the title's as well, changes nothing.
        let other = |title: &str, question: &str| {
            let asked = analyze(question);
            other_subject(&title_words(title), &asked.iter().map(String::as_str).collect())
        };
        assert!(!other("Kube Daemon Set Rollout Stuck", "rollout stuck"));
        assert!(!other("Prometheus Not Connected To Alertmanagers", "alertmanager gets nothing from prometheus"));
        assert!(other("Prometheus Bad Config", "alertmanager reload refused"));
    }

    #[test]
    fn a_question_about_most_of_a_title_is_relevant_to_it() {
        // The passage lacks most of the question's rarer words, but the
        // question names the runbook's whole title: it is about that runbook.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "KubeJobFailed.md", "# Kube Job Failed\n\n## Meaning\n\nJob failed complete.\n");
        write(dir.path(), "KubePodNotReady.md", "# Kube Pod Not Ready\n\nA pod is not ready: its job waits.\n");
        let (kb, _) = Kb::build(vec![Root::dir(dir.path())], &dir.path().join("idx")).unwrap();
        let question = "kube job failed for the nightly billing export in tenant acme";
        let hits = kb.search(question, 2).unwrap();
        assert_eq!(hits[0].path, "KubeJobFailed.md", "{hits:?}");
        assert!(kb.relevance(question, &hits[0]) >= DEFAULT_RELEVANCE, "{}", kb.relevance(question, &hits[0]));
        // A question sharing one word of a title is not about it.
        let other = "nightly billing export job in tenant acme is slow";
        let hit = kb.search(other, 1).unwrap().remove(0);
        assert!(kb.relevance(other, &hit) < DEFAULT_RELEVANCE, "{}", kb.relevance(other, &hit));
    }

    #[test]
    fn am_is_alertmanager_except_after_i() {
        let found = |query: &str| shorthand_in(query).any(|s| s.short == "am");
        assert!(found("2 of our 3 am pods are gone"));
        assert!(found("am replicas disagree"));
        assert!(!found("i am seeing pods restart"));
    }

    #[test]
    fn a_long_english_document_scores_less_for_the_same_words() {
        // The same title and passage; the long one also has 2,000 words
        // about nothing asked. Its whole entry alone puts it at 0.86 of the
        // short one (measured with LENGTH_PENALTY at 0); its length, under 0.6.
        let dir = tempfile::tempdir().unwrap();
        let passage = "# Job Completion\n\nA batch job runs longer than expected.\n";
        write(dir.path(), "short.md", passage);
        let filler = "other unrelated filler text ".repeat(500);
        write(dir.path(), "long.md", &format!("{passage}\n## Notes\n\n{filler}\n"));
        let (kb, _) = Kb::build(vec![Root::dir(dir.path())], &dir.path().join("idx")).unwrap();
        let hits = kb.search("batch job runs longer", 2).unwrap();
        assert_eq!(hits.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(), ["short.md", "long.md"], "{hits:?}");
        assert!(hits[1].score < 0.6 * hits[0].score, "{hits:?}");
    }

    #[test]
    fn shorthand_of_several_words_may_have_words_between_in_order() {
        let found = |query: &str, short: &str| shorthand_in(query).any(|s| s.short == short);
        assert!(found("The connection to the server 10.0.0.1:6443 was refused", "connection refused"));
        assert!(found("accept4: too many open files", "open files"));
        assert!(!found("refused the connection", "connection refused"));
        assert!(!found("connection was reset, then one more retry was refused", "connection refused"));
        // One word is a word, not part of one.
        assert!(!found("errorsx", "errors"));
        // Words match as the analyzer stems them.
        assert!(found("alertmanager pods restarting in a loop", "restart loop"));
    }

    #[test]
    fn compounds_are_the_wholes_of_camel_case_words() {
        let check = |text: &str, expected: &[&str]| {
            let got = compounds(text);
            assert_eq!(got, expected.iter().map(|w| w.to_string()).collect::<HashSet<_>>(), "{text}");
        };
        check("node went NotReady", &["notreadi"]);
        check("Kube Node Not Ready", &[]);
        check("kube-proxy PLEG metrics.k8s.io", &[]);
    }

    #[test]
    fn builds_searches_and_skips_bad_files() {
        let root = tempfile::tempdir().unwrap();
        let idx = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "disk/disk-full.md",
            "---\ntitle: Disk full\naliases: [NodeFilesystemAlmostOutOfSpace]\n---\n# Disk full\n\n## Diagnosis\n\nRun df -h and find what grows under /var/log.\n",
        );
        write(root.path(), "cpu.md", "# High CPU\n\nA process spins. Use top and perf.\n");
        write(root.path(), "clock.md", "# Clock not synchronising\n\nCheck chronyd and the time sources.\n");
        write(root.path(), "zh/磁盘.md", "# 磁盘空间不足\n\n## 处理\n\n清理日志文件，扩容磁盘。\n");
        std::fs::write(root.path().join("bin.md"), b"\x00\x01binary").unwrap();
        std::fs::write(root.path().join("latin1.md"), b"caf\xe9").unwrap();
        let (kb, stats) = Kb::build(vec![Root::dir(root.path())], &idx.path().join("i")).unwrap();
        assert_eq!(stats.documents, 4);
        assert_eq!(stats.skipped.len(), 2, "{:?}", stats.skipped);

        let hits = kb.search("disk is full, what grows in /var/log?", 5).unwrap();
        assert_eq!(hits[0].path, "disk/disk-full.md");
        assert_eq!(hits[0].heading, "Disk full > Diagnosis");
        assert!(hits[0].snippet.contains("var"), "{:?}", hits[0]);
        let hits = kb.search("NodeFilesystemAlmostOutOfSpace", 5).unwrap();
        assert_eq!(hits[0].path, "disk/disk-full.md");
        let hits = kb.search("磁盘满了怎么处理", 5).unwrap();
        assert_eq!(hits[0].path, "zh/磁盘.md");
        // Shorthand finds the words runbooks use.
        assert_eq!(kb.search("ntp broken", 5).unwrap()[0].path, "clock.md");
        // Query syntax is just text; nothing matching is an empty answer.
        assert!(kb.search("\"(*:-)\"", 5).unwrap().is_empty());
        assert!(kb.search("", 5).unwrap().is_empty());
        assert!(matches!(kb.search(&"x".repeat(MAX_QUERY_CHARS + 1), 5), Err(KbError::QueryTooLong)));

        // Reopened from disk, the same answers.
        drop(kb);
        let kb = Kb::open(&idx.path().join("i")).unwrap();
        assert_eq!(kb.search("top perf cpu", 1).unwrap()[0].path, "cpu.md");
    }

    #[test]
    fn the_passage_that_says_what_to_do_is_found_within_the_document() {
        let root = tempfile::tempdir().unwrap();
        let idx = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "disk.md",
            "# Disk full\n\n## Meaning\n\nThe disk is almost full.\n\n## Mitigation\n\nDelete old logs under /var/log.\n",
        );
        write(root.path(), "zh.md", "# 磁盘空间不足\n\n## 预防\n\n磁盘扩容。\n\n## 立即释放空间\n\n清理日志。\n");
        write(root.path(), "plain.md", "# Notes\n\n## Background\n\nDisk facts.\n");
        let (kb, _) = Kb::build(vec![Root::dir(root.path())], &idx.path().join("i")).unwrap();
        let check = |question: &str, path: &str, expected: Option<&str>| {
            let hit = kb.search(question, 5).unwrap().into_iter().find(|h| h.path == path).unwrap();
            let action = kb.action_passage(&hit, question).unwrap();
            assert_eq!(action.as_ref().map(|a| a.heading.as_str()), expected, "{question}: best {:?}", hit.heading);
        };
        check("disk almost full meaning", "disk.md", Some("Disk full > Mitigation"));
        check("磁盘扩容", "zh.md", Some("磁盘空间不足 > 立即释放空间"));
        check("delete old logs", "disk.md", None);
        check("disk facts", "plain.md", None);
    }

    #[test]
    fn a_restart_reads_only_what_changed_since() {
        let root = tempfile::tempdir().unwrap();
        let idx = tempfile::tempdir().unwrap();
        let dir = idx.path().join("i");
        write(root.path(), "cpu.md", "# High CPU\n\nA process spins. Use top and perf.\n");
        write(root.path(), "clock.md", "# Clock not synchronising\n\nCheck chronyd.\n");
        let roots = || vec![Root::dir(root.path())];
        let (kb, stats) = Kb::load(roots(), &dir).unwrap();
        assert_eq!((stats.documents, kb.documents()), (2, 2));
        drop(kb);

        // Nothing changed: nothing read, the same answers.
        let (kb, stats) = Kb::load(roots(), &dir).unwrap();
        assert_eq!((stats.documents, stats.removed, kb.documents()), (0, 0, 2));
        assert_eq!(kb.search("chronyd", 1).unwrap()[0].path, "clock.md");
        drop(kb);

        // A file changed and one gone while the bot was down.
        write(root.path(), "cpu.md", "# High CPU\n\nA process spins. Use top, perf and flamegraphs.\n");
        std::fs::remove_file(root.path().join("clock.md")).unwrap();
        let (kb, stats) = Kb::load(roots(), &dir).unwrap();
        assert_eq!((stats.documents, stats.removed, kb.documents()), (1, 1, 1));
        assert_eq!(kb.search("flamegraphs", 1).unwrap()[0].path, "cpu.md");
        assert!(kb.search("chronyd", 1).unwrap().is_empty());
        assert_eq!(kb.search("perf", 5).unwrap().len(), 1, "the changed file is in once");
        drop(kb);

        // An index of another format is built anew.
        std::fs::write(dir.join(MANIFEST), r#"{"format":"0.0.0/1","files":{}}"#).unwrap();
        let (kb, stats) = Kb::load(roots(), &dir).unwrap();
        assert_eq!((stats.documents, kb.documents()), (1, 1));
        assert_eq!(kb.search("perf", 5).unwrap().len(), 1);
        drop(kb);

        // So is one tantivy cannot open.
        std::fs::remove_file(dir.join("meta.json")).unwrap();
        let (kb, stats) = Kb::load(roots(), &dir).unwrap();
        assert_eq!((stats.documents, kb.documents()), (1, 1));
        assert_eq!(kb.search("flamegraphs", 1).unwrap()[0].path, "cpu.md");
    }
}
