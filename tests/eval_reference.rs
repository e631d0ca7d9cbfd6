//! The evaluators against the Python library's, on the real all-MiniLM-L6-v2: the metrics of
//! `sbert-tui eval` (and of a run's evaluations) are the numbers sentence-transformers gives.
//!
//! - `eval_sample_reference.json`: the library's evaluators on each evaluable sample data file
//!   (made by `tests/fixtures/generate/make_eval_reference.py`);
//! - `evaluators_reference.json` (shared fixture): `BinaryClassificationEvaluator` on 300 SNLI
//!   pairs (`snli-binary-300.csv`) and `InformationRetrievalEvaluator` with several relevant
//!   documents per query.
//!
//! Tolerance 1e-4 (the fixtures' own).

mod common;

use std::path::Path;

use common::*;
use sbert_tui::analysis::similarity::Similarity;
use sbert_tui::train::data;
use sbert_tui::train::eval::{self, Metrics};

const TOL: f64 = 1e-4;

fn get(m: &Metrics, name: &str) -> f64 {
    m.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
        .1
}

#[test]
fn minilm_metrics_equal_the_librarys_on_every_sample_file() {
    let enc = minilm();
    let reference = json("eval_sample_reference.json");
    let expected = reference["models"]["all-MiniLM-L6-v2"].as_object().unwrap();
    assert_eq!(expected.len(), 5);
    for (file, metrics) in expected {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("sample_data")
            .join(file);
        let d = data::load(&path).unwrap();
        let got = eval::evaluate(&enc, &d, None, &Default::default()).unwrap();
        for (name, want) in metrics.as_object().unwrap() {
            let (g, w) = (get(&got, name), want.as_f64().unwrap());
            assert!(
                (g - w).abs() < TOL,
                "{file}: {name} = {g}, Python gives {w}"
            );
        }
        // The primary metric comes first, as the library names it.
        let primary = eval::primary_metric(d.kind, Similarity::Cosine).unwrap();
        assert_eq!(got[0].0, primary, "{file}");
    }
}

#[test]
fn minilm_binary_classification_equals_the_shared_reference() {
    let enc = minilm();
    let r = json("evaluators_reference.json");
    let want = r["binary_classification"]["metrics"].as_object().unwrap();
    let d = data::load(&fixture("snli-binary-300.csv")).unwrap();
    assert_eq!(d.examples.len(), 300);
    let got = eval::evaluate(&enc, &d, None, &Default::default()).unwrap();
    assert_eq!(want.len(), 8);
    for (name, value) in want {
        // `snli_cosine_accuracy` -> `cosine_accuracy`
        let ours = name.strip_prefix("snli_").unwrap();
        let (g, w) = (get(&got, ours), value.as_f64().unwrap());
        assert!((g - w).abs() < TOL, "{ours} = {g}, Python gives {w}");
    }
}

#[test]
fn minilm_retrieval_with_several_relevant_documents_equals_the_shared_reference() {
    let enc = minilm();
    let r = &json("evaluators_reference.json")["information_retrieval"];
    let queries = r["queries"].as_object().unwrap();
    let corpus = r["corpus"].as_object().unwrap();
    // The library ranks ties by document id (as strings); ours by position: order the documents
    // by id so both agree.
    let mut doc_ids: Vec<&String> = corpus.keys().collect();
    doc_ids.sort();
    let doc_texts: Vec<&str> = doc_ids
        .iter()
        .map(|k| corpus[*k].as_str().unwrap())
        .collect();
    let query_ids: Vec<&String> = queries.keys().collect();
    let query_texts: Vec<&str> = query_ids
        .iter()
        .map(|k| queries[*k].as_str().unwrap())
        .collect();
    let relevant: Vec<Vec<usize>> = query_ids
        .iter()
        .map(|q| {
            r["relevant"][q.as_str()]
                .as_array()
                .map(|docs| {
                    docs.iter()
                        .map(|d| {
                            doc_ids
                                .iter()
                                .position(|k| *k == d.as_str().unwrap())
                                .unwrap()
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    assert!(relevant.iter().any(|r| r.len() > 1), "several per query");
    let q = enc.encode(&query_texts, 32, &mut |_, _| {}).unwrap();
    let d = enc.encode(&doc_texts, 32, &mut |_, _| {}).unwrap();
    let got = eval::information_retrieval(&q, &d, &relevant, Similarity::Cosine);
    let want = r["metrics"].as_object().unwrap();
    assert_eq!(want.len(), 15);
    for (name, value) in want {
        let ours = name.strip_prefix("snli_").unwrap();
        let (g, w) = (get(&got, ours), value.as_f64().unwrap());
        assert!((g - w).abs() < TOL, "{ours} = {g}, Python gives {w}");
    }
}

/// `sbert-tui eval --data DIR` on the same retrieval data written out in the BEIR layout
/// (corpus.jsonl, queries.jsonl, qrels/test.tsv with a header): the Python library's metrics
/// within 1e-4, under their names (`cosine_ndcg@10`, ...).
#[test]
fn eval_on_a_beir_folder_equals_the_shared_reference() {
    let r = &json("evaluators_reference.json")["information_retrieval"];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("qrels")).unwrap();
    let lines = |map: &serde_json::Map<String, serde_json::Value>| -> String {
        map.iter()
            .map(|(id, text)| {
                serde_json::json!({"_id": id, "title": "", "text": text}).to_string() + "\n"
            })
            .collect()
    };
    std::fs::write(
        d.join("corpus.jsonl"),
        lines(r["corpus"].as_object().unwrap()),
    )
    .unwrap();
    std::fs::write(
        d.join("queries.jsonl"),
        lines(r["queries"].as_object().unwrap()),
    )
    .unwrap();
    let mut qrels = String::from("query-id\tcorpus-id\tscore\n");
    for (q, docs) in r["relevant"].as_object().unwrap() {
        for doc in docs.as_array().unwrap() {
            qrels.push_str(&format!("{q}\t{}\t1\n", doc.as_str().unwrap()));
        }
    }
    std::fs::write(d.join("qrels/test.tsv"), qrels).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sbert-tui"))
        .args(["eval", "--model"])
        .arg(minilm_dir())
        .arg("--data")
        .arg(d)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = r["metrics"].as_object().unwrap();
    for (name, value) in want {
        let ours = name.strip_prefix("snli_").unwrap();
        let g = got["metrics"][ours].as_f64().unwrap_or(f64::NAN);
        let w = value.as_f64().unwrap();
        assert!((g - w).abs() < TOL, "{ours} = {g}, Python gives {w}");
    }
    assert_eq!(got["documents"], r["corpus"].as_object().unwrap().len());

    // A qrels line naming a document the corpus lacks: one line naming the file and the line.
    std::fs::write(
        d.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq0\tnope\t1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sbert-tui"))
        .args(["eval", "--model"])
        .arg(minilm_dir())
        .arg("--data")
        .arg(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("test.tsv:2: corpus-id `nope` is not in"),
        "{err}"
    );
}

/// `eval --data CORPUS --duplicates PAIRS`: the ParaphraseMiningEvaluator's metrics on the
/// shared reference (copied to `tests/fixtures/paraphrase_mining_reference.json`: 300 STS-B dev
/// rows, pairs scored 4 or more as the duplicates), the sentences written one per line so that
/// the reference's `s{i}` ids become 0-based line numbers.
#[test]
fn eval_paraphrase_mining_equals_the_librarys_evaluator() {
    let r = json("paraphrase_mining_reference.json");
    let dir = tempfile::tempdir().unwrap();
    let sentences = r["sentences"].as_array().unwrap();
    let line_of: std::collections::HashMap<&str, usize> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| (s[0].as_str().unwrap(), i))
        .collect();
    let corpus = dir.path().join("sentences.txt");
    let text: Vec<&str> = sentences.iter().map(|s| s[1].as_str().unwrap()).collect();
    std::fs::write(&corpus, text.join("\n") + "\n").unwrap();
    let mut pairs = String::from("id1\tid2\n");
    for p in r["duplicates"].as_array().unwrap() {
        let id = |v: &serde_json::Value| line_of[v.as_str().unwrap()];
        pairs.push_str(&format!("{}\t{}\n", id(&p[0]), id(&p[1])));
    }
    let dups = dir.path().join("duplicates.tsv");
    std::fs::write(&dups, pairs).unwrap();
    let eval = |dups: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sbert-tui"))
            .args(["eval", "--model"])
            .arg(minilm_dir())
            .arg("--data")
            .arg(&corpus)
            .arg("--duplicates")
            .arg(dups)
            // The evaluator encodes in batches of 16.
            .args(["--batch-size", "16", "--format", "json"])
            .output()
            .unwrap()
    };
    let out = eval(&dups);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = r["metrics"].as_object().unwrap();
    assert_eq!(want.len(), 5);
    for (name, value) in want {
        let ours = name.strip_prefix("stsb_").unwrap();
        let g = got["metrics"][ours].as_f64().unwrap_or(f64::NAN);
        let w = value.as_f64().unwrap();
        assert!((g - w).abs() < TOL, "{ours} = {g}, Python gives {w}");
    }
    assert_eq!(got["kind"], "paraphrase mining");
    assert_eq!(got["texts"], sentences.len());

    // A pair naming a line past the end: one line naming the pairs file and its line.
    std::fs::write(&dups, "0\t1\n2\t100000\n").unwrap();
    let out = eval(&dups);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("duplicates.tsv:2: corpus id 100000 is not a text of"),
        "{err}"
    );
}
