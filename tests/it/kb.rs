//! `opsclaw kb`: the real binary indexes the example knowledge base shipped in
//! `kb/` (plus bad files) and answers searches, as text, JSON lines, and one
//! JSON line per query read from stdin.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::harness::BIN;

async fn opsclaw(args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("opsclaw starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_example_knowledge_base_is_indexed_and_searched_in_both_languages() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("kb");
    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("binary.md"), b"\x00\x01\x02").unwrap();
    std::fs::write(
        junk.join("broken.md"),
        "---\ntitle: never closed\n\nZookeeper session expired: restart the follower.",
    )
    .unwrap();
    let index = dir.path().join("index");
    let (ok, out, err) = opsclaw(
        &[
            "kb",
            "index",
            "--root",
            examples.to_str().unwrap(),
            "--root",
            junk.to_str().unwrap(),
            "--index",
            index.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("indexed 13 documents") && out.contains("1 skipped"), "{out}");
    assert_eq!(err.matches("knowledge base file skipped").count(), 1, "one log line per skipped file: {err}");

    let idx = index.to_str().unwrap();
    let (ok, out, _) = opsclaw(
        &["kb", "search", "--index", idx, "--json", "--limit", "3", "pod keeps restarting, exit code 137"],
        None,
    )
    .await;
    assert!(ok);
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["path"], "en/pod-crashloop.md");
    for key in ["title", "heading", "score", "snippet"] {
        assert!(!first[key].is_null(), "{key} missing in {first}");
    }

    let queries = "磁盘满了怎么处理\nTLS cert expired\n\"(*:-)\"\nzookeeper session expired\n";
    let (ok, out, _) = opsclaw(&["kb", "search", "--index", idx, "--limit", "5", "-"], Some(queries.as_bytes())).await;
    assert!(ok);
    let answers: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0]["q"], "磁盘满了怎么处理");
    assert_eq!(answers[0]["hits"][0]["path"], "zh/disk-full.md");
    assert_eq!(answers[1]["hits"][0]["path"], "en/certificate-expiry.md");
    assert_eq!(answers[2]["hits"], Value::Array(Vec::new()), "syntax characters are only characters");
    assert_eq!(answers[3]["hits"][0]["path"], "broken.md", "a file with broken front matter is indexed as text");
    // Documents are not repeated within one answer.
    let paths: Vec<&str> = answers[1]["hits"].as_array().unwrap().iter().map(|h| h["path"].as_str().unwrap()).collect();
    let unique: std::collections::HashSet<&str> = paths.iter().copied().collect();
    assert_eq!(paths.len(), unique.len(), "{paths:?}");
}

/// Builds an index of the example knowledge base in `dir/index`.
async fn example_index(dir: &Path) -> String {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("kb");
    let index = dir.join("index").to_str().unwrap().to_owned();
    let (ok, out, err) = opsclaw(&["kb", "index", "--root", examples.to_str().unwrap(), "--index", &index], None).await;
    assert!(ok, "{out}{err}");
    index
}

#[tokio::test]
async fn a_bad_query_in_a_batch_gets_an_error_line_and_the_rest_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let index = example_index(dir.path()).await;
    let mut queries = b"disk full\n".to_vec();
    queries.extend("x ".repeat(600).as_bytes());
    queries.extend(b"\ncert \xff expired\r\npod crash looping\n");
    let (ok, out, err) = opsclaw(&["kb", "search", "--index", &index, "-"], Some(&queries)).await;
    assert!(ok, "{err}");
    let answers: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 4, "one line per query: {out}");
    assert_eq!(answers[0]["hits"][0]["path"], "en/disk-full.md");
    assert!(answers[1]["error"].as_str().unwrap().contains("longer than 1000 characters"), "{}", answers[1]);
    assert_eq!(answers[1]["hits"], Value::Array(Vec::new()));
    assert_eq!(answers[2]["q"], "cert \u{fffd} expired", "the line ending and the bad byte");
    assert_eq!(answers[2]["hits"][0]["path"], "en/certificate-expiry.md");
    assert_eq!(answers[3]["hits"][0]["path"], "en/pod-crashloop.md");
    assert_eq!(err.matches("query 2: the query is longer").count(), 1, "{err}");
    assert_eq!(err.matches("query 3 is not valid UTF-8").count(), 1, "{err}");
}

#[tokio::test]
async fn an_index_is_never_built_over_other_files_and_a_missing_or_foreign_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let runbooks = dir.path().join("runbooks");
    std::fs::create_dir_all(&runbooks).unwrap();
    std::fs::write(runbooks.join("disk.md"), "# Disk full\n\nDelete old logs.\n").unwrap();
    std::fs::write(runbooks.join("meta.json"), "{}").unwrap();
    let root = runbooks.to_str().unwrap();
    // The root given as the index by mistake, twice: refused, nothing removed.
    for _ in 0..2 {
        let (ok, _, err) = opsclaw(&["kb", "index", "--root", root, "--index", root], None).await;
        assert!(!ok);
        assert!(err.contains("holds files that are not a knowledge index"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(runbooks.join("disk.md")).unwrap(), "# Disk full\n\nDelete old logs.\n");

    // An index is rebuilt in place.
    example_index(dir.path()).await;
    let index = example_index(dir.path()).await;
    let (ok, out, _) = opsclaw(&["kb", "search", "--index", &index, "--json", "disk full"], None).await;
    assert!(ok && out.contains("en/disk-full.md"), "{out}");

    let missing = dir.path().join("nothing").to_str().unwrap().to_owned();
    let (ok, _, err) = opsclaw(&["kb", "search", "--index", &missing, "disk full"], None).await;
    assert!(!ok);
    assert!(err.contains(&format!("no knowledge index in {missing}: build one with `opsclaw kb index")), "{err}");

    let manifest = Path::new(&index).join("opsclaw-manifest.json");
    std::fs::write(&manifest, r#"{"format":"0.0.1/1","files":{}}"#).unwrap();
    let (ok, _, err) = opsclaw(&["kb", "search", "--index", &index, "disk full"], None).await;
    assert!(!ok);
    assert!(err.contains("was built by another version of opsclaw"), "{err}");
}
