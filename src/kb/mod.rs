//! The knowledge base: Markdown runbooks under one or more roots, indexed
//! with tantivy by passage (a section under its headings). Title, aliases
//! (front-matter aliases and tags, the file name) and headings weigh more
//! than the body; a document's score is its best passage's. Queries are
//! analyzed like the text and turned into term queries directly, so query
//! syntax characters in what people type are just characters.

pub mod markdown;
pub mod tokenize;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::TokenStream;
use tantivy::{Index, IndexReader, TantivyDocument, Term, doc};

/// Files larger than this are skipped (with a log line): runbooks are not that big.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;
/// Longest query read; longer ones are refused.
pub const MAX_QUERY_CHARS: usize = 1000;
const WRITER_MEMORY: usize = 64 * 1024 * 1024;
/// Ops shorthand and the words runbooks use for it. A query with the left
/// side also looks for the right side, at `SYNONYM_WEIGHT`.
const SYNONYMS: &[(&str, &str)] = &[
    ("ntp", "clock synchronising"),
    ("pvc", "persistent volume"),
    ("pv", "persistent volume"),
    ("inode", "files"),
    ("inodes", "files"),
    ("fd", "file descriptor"),
    ("fds", "file descriptors"),
    ("oom", "out of memory"),
    ("oomkilled", "out of memory"),
    ("k8s", "kubernetes"),
    ("cert", "certificate"),
    ("certs", "certificates"),
    ("hpa", "horizontal pod autoscaler"),
    ("apiserver", "api server"),
    ("crashloop", "crash looping"),
    ("域名", "dns"),
    ("证书", "certificate"),
];
const SYNONYM_WEIGHT: f32 = 0.5;
/// How much a document's second matching passage adds to its best one.
const SECOND_PASSAGE: f32 = 0.3;

/// Field weights against the body's 1: where a word appears says how much it
/// tells (measured with `cargo bench --bench kb`; higher title weights let
/// siblings sharing title words win).
const TITLE_WEIGHT: f32 = 2.0;
const ALIASES_WEIGHT: f32 = 2.0;
const HEADING_WEIGHT: f32 = 1.5;

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("the query is longer than {MAX_QUERY_CHARS} characters")]
    QueryTooLong,
}

#[derive(Clone, Copy)]
struct Fields {
    root: Field,
    path: Field,
    title: Field,
    aliases: Field,
    heading: Field,
    body: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(tokenize::NAME)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text = TextOptions::default().set_indexing_options(indexing.clone());
    let stored_text = TextOptions::default().set_indexing_options(indexing).set_stored();
    let fields = Fields {
        root: b.add_text_field("root", STORED),
        path: b.add_text_field("path", STRING | STORED),
        title: b.add_text_field("title", stored_text.clone()),
        aliases: b.add_text_field("aliases", text),
        heading: b.add_text_field("heading", stored_text.clone()),
        body: b.add_text_field("body", stored_text),
    };
    (b.build(), fields)
}

fn fields_of(schema: &Schema) -> Result<Fields, KbError> {
    let f = |name: &str| schema.get_field(name).map_err(KbError::Index);
    Ok(Fields {
        root: f("root")?,
        path: f("path")?,
        title: f("title")?,
        aliases: f("aliases")?,
        heading: f("heading")?,
        body: f("body")?,
    })
}

/// What a build did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BuildStats {
    pub documents: usize,
    pub passages: usize,
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
    pub snippet: String,
}

pub struct Kb {
    reader: IndexReader,
    fields: Fields,
}

/// Markdown files under `root`, sorted; hidden directories are skipped.
fn markdown_files(root: &Path) -> Result<Vec<PathBuf>, KbError> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|error| KbError::Io { path: dir.clone(), error })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() && path.extension().is_some_and(|e| e == "md" || e == "markdown") => {
                    out.push(path)
                }
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Kb {
    /// Builds a fresh index of `roots` in `dir` (replacing an index there).
    pub fn build(roots: &[PathBuf], dir: &Path) -> Result<(Self, BuildStats), KbError> {
        if dir.join("meta.json").exists() {
            std::fs::remove_dir_all(dir).map_err(|error| KbError::Io { path: dir.to_owned(), error })?;
        }
        std::fs::create_dir_all(dir).map_err(|error| KbError::Io { path: dir.to_owned(), error })?;
        let (schema, fields) = schema();
        let index = Index::create_in_dir(dir, schema)?;
        index.tokenizers().register(tokenize::NAME, tokenize::analyzer());
        let mut writer = index.writer::<TantivyDocument>(WRITER_MEMORY)?;
        let mut stats = BuildStats::default();
        for root in roots {
            let root_name = root.display().to_string();
            for path in markdown_files(root)? {
                let skip = |stats: &mut BuildStats, why: String| {
                    tracing::warn!(path = %path.display(), why, "knowledge base file skipped");
                    stats.skipped.push((path.clone(), why));
                };
                match std::fs::metadata(&path) {
                    Ok(m) if m.len() > MAX_FILE_BYTES => {
                        skip(&mut stats, format!("{} bytes, over the {MAX_FILE_BYTES} byte limit", m.len()));
                        continue;
                    }
                    Err(e) => {
                        skip(&mut stats, e.to_string());
                        continue;
                    }
                    Ok(_) => {}
                }
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        skip(&mut stats, e.to_string());
                        continue;
                    }
                };
                if bytes.contains(&0) {
                    skip(&mut stats, "binary content".into());
                    continue;
                }
                let Ok(text) = String::from_utf8(bytes) else {
                    skip(&mut stats, "not UTF-8".into());
                    continue;
                };
                let relative = path.strip_prefix(root).unwrap_or(&path).display().to_string();
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let parsed = markdown::parse(&stem, &text);
                let aliases = parsed.aliases.join("\n");
                for passage in &parsed.passages {
                    writer.add_document(doc!(
                        fields.root => root_name.clone(),
                        fields.path => relative.clone(),
                        fields.title => parsed.title.clone(),
                        fields.aliases => aliases.clone(),
                        fields.heading => passage.heading.clone(),
                        fields.body => passage.text.clone(),
                    ))?;
                    stats.passages += 1;
                }
                stats.documents += 1;
            }
        }
        writer.commit()?;
        let reader = index.reader()?;
        reader.reload()?;
        Ok((Self { reader, fields }, stats))
    }

    pub fn open(dir: &Path) -> Result<Self, KbError> {
        let index = Index::open_in_dir(dir)?;
        index.tokenizers().register(tokenize::NAME, tokenize::analyzer());
        let fields = fields_of(&index.schema())?;
        let reader = index.reader()?;
        Ok(Self { reader, fields })
    }

    /// The query's terms, analyzed like the text, without repeats.
    fn terms(&self, query: &str) -> Vec<String> {
        let mut analyzer = tokenize::analyzer();
        let mut stream = analyzer.token_stream(query);
        let mut seen = HashSet::new();
        let mut terms = Vec::new();
        while let Some(token) = stream.next() {
            if seen.insert(token.text.clone()) {
                terms.push(token.text.clone());
            }
        }
        terms
    }

    /// Terms the query's shorthand stands for, not already in `terms`.
    fn synonyms(&self, query: &str, terms: &[String]) -> Vec<String> {
        let lower = query.to_lowercase();
        let words: HashSet<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let mut extra = Vec::new();
        for (short, long) in SYNONYMS {
            let present = if short.is_ascii() { words.contains(short) } else { lower.contains(short) };
            if present {
                for t in self.terms(long) {
                    if !terms.contains(&t) && !extra.contains(&t) {
                        extra.push(t);
                    }
                }
            }
        }
        extra
    }

    fn query(&self, terms: &[String], synonyms: &[String]) -> BooleanQuery {
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let fields = [(f.title, TITLE_WEIGHT), (f.aliases, ALIASES_WEIGHT), (f.heading, HEADING_WEIGHT), (f.body, 1.0)];
        for (field, boost) in fields {
            let weighted = terms.iter().map(|t| (t, boost)).chain(synonyms.iter().map(|t| (t, boost * SYNONYM_WEIGHT)));
            for (term, weight) in weighted {
                let q = TermQuery::new(Term::from_field_text(field, term), IndexRecordOption::WithFreqs);
                clauses.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), weight))));
            }
        }
        BooleanQuery::new(clauses)
    }

    /// The best `limit` documents for `query`, best first, each once.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, KbError> {
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(KbError::QueryTooLong);
        }
        let terms = self.terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let synonyms = self.synonyms(query, &terms);
        let query = self.query(&terms, &synonyms);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit * 10).order_by_score())?;
        let mut snippets = SnippetGenerator::create(&searcher, &query, self.fields.body)?;
        snippets.set_max_num_chars(200);
        // A document ranks by its best passage, plus a little for a second one
        // that also matches: a runbook whose several sections answer beats a
        // sibling that only shares its title's words. Snippets only for the winners.
        struct Ranked {
            key: (String, String),
            best: tantivy::DocAddress,
            score: f32,
            second: bool,
        }
        let mut ranked: Vec<Ranked> = Vec::new();
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field: Field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let key = (text(self.fields.root), text(self.fields.path));
            match ranked.iter_mut().find(|r| r.key == key) {
                Some(r) if !r.second => {
                    r.second = true;
                    r.score += SECOND_PASSAGE * score;
                }
                Some(_) => {}
                None => ranked.push(Ranked { key, best: address, score, second: false }),
            }
        }
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut hits = Vec::with_capacity(limit);
        for r in ranked.into_iter().take(limit) {
            let doc: TantivyDocument = searcher.doc(r.best)?;
            let text = |field: Field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let snippet = snippets.snippet_from_doc(&doc);
            let snippet = if snippet.fragment().is_empty() {
                text(self.fields.body).chars().take(200).collect()
            } else {
                snippet.fragment().to_owned()
            };
            hits.push(Hit {
                root: r.key.0,
                path: r.key.1,
                title: text(self.fields.title),
                heading: text(self.fields.heading),
                score: r.score,
                snippet: snippet.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
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
        let roots = vec![root.path().to_owned()];
        let (kb, stats) = Kb::build(&roots, &idx.path().join("i")).unwrap();
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
}
