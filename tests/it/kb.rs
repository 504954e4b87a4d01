//! `opsclaw kb`: the real binary indexes the example knowledge base shipped in
//! `kb/` (plus bad files) and answers searches, as text, JSON lines, and one
//! JSON line per query read from stdin.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::harness::BIN;

async fn opsclaw(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("opsclaw starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
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
    std::fs::write(junk.join("broken.md"), "---\ntitle: never closed\n\nZookeeper session expired: restart the follower.")
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
    let (ok, out, _) = opsclaw(&["kb", "search", "--index", idx, "--limit", "5", "-"], Some(queries)).await;
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
