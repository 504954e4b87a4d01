//! Knowledge base benchmark: retrieval quality over `../shared/kb-corpus`
//! with the question files in [`QUESTIONS`] (development, check, fresh A to L
//! and off-topic ones; [`HELD_OUT`] never shows its misses), each file on its own (recall@5 and
//! MRR@10 per language; how many right answers and off-topic questions pass the
//! relevance bar), search latency, and the time to index 10,000 Markdown files
//! (the corpus copied over and over, renamed). With `--baseline` each file is
//! also scored by plain BM25 over whole documents (one field, the same
//! analyzer, the query's words OR-ed): the yardstick, which says how
//! hard a question file is.
//!
//!     cargo bench --bench kb -- [--corpus ../shared/kb-corpus] [--files 10000] [--misses] [--baseline] [--questions FILE]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opsclaw::kb::config::DEFAULT_RELEVANCE;
use opsclaw::kb::{Kb, Root, tokenize};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::tokenizer::TokenStream;
use tantivy::{Index, IndexReader, TantivyDocument, Term, doc};

/// The question files, scored separately: the development questions ranking is
/// tuned on, the check questions written before tuning, and the fresh ones
/// (A, D, F, I and J tuned on, B, C, E, G, H, K and L held out; see their headers).
const QUESTIONS: [&str; 16] = [
    "benches/kb_questions.tsv",
    "benches/kb_holdout.tsv",
    "benches/kb_fresh_a.tsv",
    "benches/kb_fresh_b.tsv",
    "benches/kb_fresh_c.tsv",
    "benches/kb_fresh_d.tsv",
    "benches/kb_fresh_e.tsv",
    "benches/kb_fresh_f.tsv",
    "benches/kb_fresh_g.tsv",
    "benches/kb_fresh_h.tsv",
    "benches/kb_fresh_i.tsv",
    "benches/kb_fresh_j.tsv",
    "benches/kb_fresh_k.tsv",
    "benches/kb_fresh_l.tsv",
    "benches/kb_offtopic_a.tsv",
    "benches/kb_offtopic_b.tsv",
];

/// Held-out files: only their scores are printed, never their misses, so
/// tuning cannot read them.
const HELD_OUT: [&str; 8] = [
    "kb_fresh_b.tsv",
    "kb_fresh_c.tsv",
    "kb_fresh_e.tsv",
    "kb_fresh_g.tsv",
    "kb_fresh_h.tsv",
    "kb_fresh_k.tsv",
    "kb_fresh_l.tsv",
    "kb_offtopic_b.tsv",
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn copy_tree(from: &Path, to: &Path, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()), files);
        } else if path.extension().is_some_and(|e| e == "md") {
            files.push((to.join(entry.file_name()), std::fs::read(&path).unwrap()));
        }
    }
}

/// The questions of a file: (language, expected document or `-`, question).
fn questions_in(file: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    file.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(|line| {
        let mut parts = line.splitn(3, '\t');
        (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
    })
}

/// Recall@1, recall@5 and MRR@10 per language, from the rank of each question's document.
#[derive(Default)]
struct Tally(std::collections::BTreeMap<String, (usize, usize, usize, f64)>);

impl Tally {
    fn add(&mut self, lang: &str, rank: Option<usize>) {
        let entry = self.0.entry(lang.to_string()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(rank == Some(0));
        entry.2 += usize::from(rank.is_some_and(|r| r < 5));
        entry.3 += rank.map_or(0.0, |r| 1.0 / (r as f64 + 1.0));
    }

    fn print(&self, prefix: &str) {
        for (lang, (n, top1, top5, rr)) in &self.0 {
            let share = |k: &usize| *k as f64 / *n as f64;
            let (first, recall, mrr) = (share(top1), share(top5), rr / *n as f64);
            println!("{prefix}{lang}: {n} questions, recall@5 {recall:.3}, MRR@10 {mrr:.3}, first {first:.3}");
        }
    }
}

/// Scores one question file: recall@5 and MRR@10 per language, and the relevance
/// of right top hits and of off-topic questions. Each search's time goes to `latencies`.
fn evaluate(kb: &Kb, questions: &str, show_misses: bool, latencies: &mut Vec<Duration>) {
    let mut tally = Tally::default();
    // Relevance of the top hit: for questions whose top hit is right, and for off-topic ones.
    let (mut on_topic, mut off_topic) = (Vec::new(), Vec::new());
    for (lang, expected, question) in questions_in(questions) {
        let t = Instant::now();
        let hits = kb.search(question, 10).unwrap();
        latencies.push(t.elapsed());
        let relevance = hits.first().map_or(0.0, |h| kb.relevance(question, h));
        if expected == "-" {
            off_topic.push(relevance);
            if show_misses && relevance >= DEFAULT_RELEVANCE {
                println!("  answered off-topic [{lang}] {question:?} with {} ({relevance:.2})", hits[0].path);
            }
            continue;
        }
        if hits.first().is_some_and(|h| h.path == expected) {
            on_topic.push(relevance);
            if show_misses && relevance < DEFAULT_RELEVANCE {
                println!("  found but not relevant enough [{lang}] {question:?} ({relevance:.2})");
            }
        }
        let rank = hits.iter().position(|h| h.path == expected);
        tally.add(lang, rank);
        if show_misses && rank.is_none_or(|r| r > 0) {
            let got: Vec<&str> = hits.iter().take(3).map(|h| h.path.as_str()).collect();
            println!("  miss [{lang}] {question:?}: want {expected} (rank {rank:?}), got {got:?}");
        }
    }
    tally.print("");
    on_topic.sort_by(f32::total_cmp);
    off_topic.sort_by(f32::total_cmp);
    if show_misses {
        println!("  relevance of right top hits: {on_topic:.2?}\n  of off-topic questions: {off_topic:.2?}");
    }
    let above = |v: &[f32]| v.iter().filter(|&&r| r >= DEFAULT_RELEVANCE).count();
    println!(
        "relevance >= {DEFAULT_RELEVANCE}: {}/{} right top hits, {}/{} off-topic questions",
        above(&on_topic),
        on_topic.len(),
        above(&off_topic),
        off_topic.len()
    );
}

/// Plain BM25 over whole documents: one indexed field per file, keyed by
/// its path relative to its root.
struct Baseline {
    reader: IndexReader,
    text: tantivy::schema::Field,
    path: tantivy::schema::Field,
}

impl Baseline {
    fn build(roots: &[PathBuf]) -> Self {
        let mut schema = Schema::builder();
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(tokenize::NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions);
        let text = schema.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
        let path = schema.add_text_field("path", STRING | STORED);
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register(tokenize::NAME, tokenize::analyzer());
        // One indexing thread: documents keep the files' order, so ties rank
        // the same on every run.
        let mut writer = index.writer_with_num_threads(1, 50_000_000).unwrap();
        for root in roots {
            let mut files = Vec::new();
            copy_tree(root, Path::new(""), &mut files);
            for (relative, bytes) in files {
                let body = String::from_utf8_lossy(&bytes).into_owned();
                writer.add_document(doc!(text => body, path => relative.to_string_lossy().into_owned())).unwrap();
            }
        }
        writer.commit().unwrap();
        Baseline { reader: index.reader().unwrap(), text, path }
    }

    fn search(&self, question: &str, limit: usize) -> Vec<String> {
        let mut analyzer = tokenize::analyzer();
        let mut stream = analyzer.token_stream(question);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        while let Some(token) = stream.next() {
            let term = Term::from_field_text(self.text, &token.text);
            clauses.push((Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))));
        }
        let searcher = self.reader.searcher();
        let top = searcher.search(&BooleanQuery::new(clauses), &TopDocs::with_limit(limit).order_by_score()).unwrap();
        top.into_iter()
            .map(|(_, address)| {
                let doc: TantivyDocument = searcher.doc(address).unwrap();
                doc.get_first(self.path).and_then(|v| v.as_str()).unwrap_or_default().to_string()
            })
            .collect()
    }

    /// Recall@5 and MRR@10 per language, as `evaluate` prints them.
    fn evaluate(&self, questions: &str) {
        let mut tally = Tally::default();
        for (lang, expected, question) in questions_in(questions).filter(|(_, expected, _)| *expected != "-") {
            tally.add(lang, self.search(question, 10).iter().position(|p| p == expected));
        }
        tally.print("baseline ");
    }
}

fn main() {
    let corpus = PathBuf::from(arg("--corpus").unwrap_or_else(|| "../shared/kb-corpus".into()));
    let n_files: usize = arg("--files").and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let show_misses = std::env::args().any(|a| a == "--misses");
    let baseline = std::env::args().any(|a| a == "--baseline");
    if !corpus.join("runbooks").is_dir() {
        eprintln!("kb bench: skipped: no corpus at {} (--corpus DIR)", corpus.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let roots = vec![Root::dir(corpus.join("runbooks")), Root::dir(corpus.join("k8s-zh"))];
    let started = Instant::now();
    let (kb, stats) = Kb::build(roots, &tmp.path().join("index")).unwrap();
    println!("corpus: {} documents, {} passages indexed in {:.2?}", stats.documents, stats.passages, started.elapsed());
    let baseline = baseline.then(|| Baseline::build(&[corpus.join("runbooks"), corpus.join("k8s-zh")]));

    let files = match arg("--questions") {
        Some(file) => vec![PathBuf::from(file)],
        None => QUESTIONS.iter().map(|f| Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).collect(),
    };
    let mut latencies = Vec::new();
    let mut all_questions = String::new();
    for file in &files {
        let questions = std::fs::read_to_string(file).unwrap();
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let held_out = HELD_OUT.contains(&name.as_ref());
        println!("{name}:{}", if held_out && show_misses { " (held out: misses not shown)" } else { "" });
        evaluate(&kb, &questions, show_misses && !held_out, &mut latencies);
        if let Some(baseline) = &baseline {
            baseline.evaluate(&questions);
        }
        all_questions.push_str(&questions);
    }
    // Latency: the questions again, many times.
    let qs: Vec<&str> = questions_in(&all_questions).map(|(_, _, question)| question).collect();
    for _ in 0..20 {
        for q in &qs {
            let t = Instant::now();
            let _ = kb.search(q, 5).unwrap();
            latencies.push(t.elapsed());
        }
    }
    latencies.sort();
    println!(
        "search: {} queries, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );

    // Index build at scale: the corpus's files copied until there are n_files.
    let mut files = Vec::new();
    copy_tree(&corpus, Path::new(""), &mut files);
    let big = tmp.path().join("big");
    for i in 0..n_files {
        let (path, bytes) = &files[i % files.len()];
        let target = big.join(format!("copy{}", i / files.len())).join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    let started = Instant::now();
    let (_, stats) = Kb::build(vec![Root::dir(&big)], &tmp.path().join("big-index")).unwrap();
    println!("index build: {} files ({} passages) in {:.2?}", stats.documents, stats.passages, started.elapsed());
}
