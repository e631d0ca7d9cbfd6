//! `sbert-tui search` against the Python library's `util.semantic_search` (top 10, cosine) on a
//! corpus of 352 STS-B dev sentences with all-MiniLM-L6-v2: the reference
//! (`tests/fixtures/search_reference.json`) was made by
//! `tests/fixtures/generate/make_search_reference.py` with sentence-transformers 6.2.

mod common;

use std::process::{Command, Output};

use common::*;

fn search(args: &[&str]) -> Output {
    // Vectors go to a cache of this call's own, not the user's.
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_sbert-tui"))
        .arg("search")
        .arg("--model")
        .arg(minilm_dir())
        .args(args)
        .env("SBERT_TUI_CACHE", cache.path())
        .output()
        .unwrap()
}

#[test]
fn hits_and_scores_equal_semantic_search() {
    let r = json("search_reference.json");
    let corpus = fixture("search_corpus.txt");
    let queries: Vec<&str> = r["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap())
        .collect();
    let mut args = vec!["--corpus", corpus.to_str().unwrap(), "--format", "json"];
    args.extend(&queries);
    let out = search(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), queries.len());
    let texts: Vec<String> = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    for (q, (got, want)) in lines.iter().zip(r["hits"].as_array().unwrap()).enumerate() {
        assert_eq!(got["query"], queries[q]);
        let got = got["hits"].as_array().unwrap();
        let want = want.as_array().unwrap();
        assert_eq!(got.len(), 10);
        for (g, w) in got.iter().zip(want) {
            let (gs, ws) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
            assert!((gs - ws).abs() < 1e-4, "query {q}: score {gs} vs {ws}");
            // Ids equal, unless two hits tie within the tolerance (then either order is right).
            if g["corpus_id"] != w["corpus_id"] {
                let tie = want.iter().any(|x| {
                    x["corpus_id"] == g["corpus_id"]
                        && (x["score"].as_f64().unwrap() - gs).abs() < 1e-4
                });
                assert!(tie, "query {q}: {g} vs {w}");
            }
            let id = g["corpus_id"].as_u64().unwrap() as usize;
            assert_eq!(g["text"], texts[id]);
        }
    }
}

#[test]
fn bad_input_is_one_line_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"fine\nnot \xff utf-8\n").unwrap();
    let corpus = fixture("search_corpus.txt");
    for (args, want) in [
        (
            vec!["--corpus", empty.to_str().unwrap(), "q"],
            "empty.txt: no texts (an empty corpus)",
        ),
        (
            vec!["--corpus", bad.to_str().unwrap(), "q"],
            "bad.txt:2: not valid UTF-8",
        ),
        (vec!["--corpus", corpus.to_str().unwrap()], "no query"),
        (
            vec![
                "--corpus",
                corpus.to_str().unwrap(),
                "--queries",
                bad.to_str().unwrap(),
            ],
            "bad.txt:2: not valid UTF-8",
        ),
    ] {
        let out = search(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err} should say {want}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
