//! Hard-negative mining against the Python library's `util.mine_hard_negatives` (with the real
//! all-MiniLM-L6-v2), and `sbert-tui mine-negatives` end to end on the tiny model: the file it
//! writes trains, its errors name what is wrong, and a refused run writes nothing.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use sbert_tui::analysis::embeddings::Embeddings;
use sbert_tui::analysis::hard_negatives::{
    MinedRow, MiningOptions, MiningPlan, OutputFormat, mine_hard_negatives,
};
use sbert_tui::corpus::{self, CorpusFormat};
use sbert_tui::model::SentenceEncoder;
use sbert_tui::train::data::{self, DataKind};
use serde_json::Value;

fn sample(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample_data")
        .join(name)
}

fn embed(enc: &SentenceEncoder, texts: &[String]) -> Embeddings {
    Embeddings::from_rows(&enc.encode(texts, 32, &mut |_, _| {}).unwrap()).normalized()
}

/// (anchor, document, anchor-document cosine) of a row, ours or Python's.
fn ours(r: &MinedRow) -> (String, String, String, f32) {
    match r {
        MinedRow::Triplet {
            anchor,
            positive,
            negative,
            scores,
        } => (anchor.clone(), positive.clone(), negative.clone(), scores.1),
        MinedRow::Labeled {
            anchor,
            document,
            label,
            score,
        } => (anchor.clone(), document.clone(), label.to_string(), *score),
    }
}

fn theirs(r: &Value) -> (String, String, String, f32) {
    let s = |k: &str| r[k].as_str().unwrap().to_string();
    match r.get("negative") {
        Some(_) => (
            s("anchor"),
            s("positive"),
            s("negative"),
            r["scores"][1].as_f64().unwrap() as f32,
        ),
        // labeled-pair with output_scores: (anchor, positive = the document, score); the label is
        // not written, so it is not compared.
        None => (
            s("anchor"),
            s("positive"),
            String::new(),
            r["score"].as_f64().unwrap() as f32,
        ),
    }
}

#[test]
fn mining_matches_python_mine_hard_negatives() {
    let reference = json("hard_negatives_reference.json");
    let d = data::load(&sample("pairs.tsv")).unwrap();
    let pairs: Vec<(String, String)> = d
        .examples
        .iter()
        .map(|e| (e.texts()[0].to_string(), e.texts()[1].to_string()))
        .collect();
    let extra = corpus::read(&sample("texts.csv"), CorpusFormat::Auto, None)
        .unwrap()
        .texts;
    let plan = MiningPlan::new(&pairs, &extra).unwrap();
    let enc = minilm();
    let (q, c) = (embed(&enc, &plan.queries), embed(&enc, &plan.corpus));
    for case in reference["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let s = &case["settings"];
        let f = |k: &str| s.get(k).and_then(Value::as_f64).map(|v| v as f32);
        let u = |k: &str| s.get(k).and_then(Value::as_u64).map(|v| v as usize);
        let options = MiningOptions {
            range_min: u("range_min").unwrap_or(0),
            range_max: u("range_max"),
            max_score: f("max_score"),
            min_score: f("min_score"),
            absolute_margin: f("absolute_margin"),
            relative_margin: f("relative_margin"),
            num_negatives: u("num_negatives").unwrap_or(3),
            ..MiningOptions::default()
        };
        let format = match s.get("output_format").and_then(Value::as_str) {
            Some("labeled-pair") => OutputFormat::LabeledPair,
            _ => OutputFormat::Triplet,
        };
        let mined = mine_hard_negatives(&plan, &q, &c, &options, format).unwrap();
        let expected: Vec<_> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(theirs)
            .collect();
        let got: Vec<_> = mined.rows.iter().map(ours).collect();
        assert_eq!(got.len(), expected.len(), "{name}: rows");
        let mut swaps = 0;
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g.0, e.0, "{name} row {i}: anchor");
            assert!(
                (g.3 - e.3).abs() < 1e-4,
                "{name} row {i}: score {} vs {}",
                g.3,
                e.3
            );
            let document = match format {
                OutputFormat::Triplet => {
                    assert_eq!(g.1, e.1, "{name} row {i}: positive");
                    (&g.2, &e.2)
                }
                OutputFormat::LabeledPair => (&g.1, &e.1),
            };
            // Two candidates whose scores agree to 1e-4 may come in either order.
            if document.0 != document.1 {
                swaps += 1;
            }
        }
        assert!(swaps <= 2, "{name}: {swaps} rows differ beyond near-ties");
        eprintln!("{name}: {} rows, {swaps} near-tie swaps", got.len());
    }
}

fn sbert(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sbert-tui"))
        .args(args)
        .env(
            "SBERT_TUI_CACHE",
            std::env::temp_dir().join("sbert-tui-test-cache"),
        )
        .output()
        .unwrap()
}

#[test]
fn mine_negatives_writes_a_file_that_trains() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-bert-st");
    let (model, data) = (model.to_str().unwrap(), sample("pairs.tsv"));
    let out = dir.path().join("mined.tsv");
    let o = sbert(&[
        "mine-negatives",
        "--model",
        model,
        "--data",
        data.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--num-negatives",
        "2",
        "--margins",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("400 rows written"), "{stderr}");
    let mined = data::load(&out).unwrap();
    assert_eq!(mined.kind, DataKind::MarginTriplets);
    assert_eq!(mined.examples.len(), 400);
    for e in &mined.examples {
        let t = e.texts();
        assert_ne!(t[1], t[2], "a positive is never its own negative");
    }

    // Labelled pairs for contrastive losses, as JSON Lines.
    let labeled = dir.path().join("mined.jsonl");
    let o = sbert(&[
        "mine-negatives",
        "--model",
        model,
        "--data",
        data.to_str().unwrap(),
        "--output",
        labeled.to_str().unwrap(),
        "--num-negatives",
        "1",
        "--format",
        "labeled-pair",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let l = data::load(&labeled).unwrap();
    assert_eq!(l.kind, DataKind::LabeledPairs);
    assert_eq!(l.examples.len(), 400);

    // The mined triplets train with hard negatives.
    let trained = dir.path().join("model");
    let o = sbert(&[
        "train",
        "--model",
        model,
        "--data",
        out.to_str().unwrap(),
        "--loss",
        "margin-mse",
        "--output",
        trained.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn refused_mining_names_the_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-bert-st");
    let model = model.to_str().unwrap();
    let out = dir.path().join("mined.csv");
    let run = |data: &Path, extra: &[&str]| {
        let mut args = vec![
            "mine-negatives",
            "--model",
            model,
            "--data",
            data.to_str().unwrap(),
        ];
        if !extra.contains(&"--output") {
            args.extend(["--output", out.to_str().unwrap()]);
        }
        args.extend_from_slice(extra);
        let o = sbert(&args);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = run(&sample("scored-pairs.csv"), &[]);
    assert!(
        e.contains("scored-pairs.csv") && e.contains("(anchor, positive) pairs"),
        "{e}"
    );
    let e = run(
        &sample("pairs.tsv"),
        &["--range-min", "5", "--range-max", "5"],
    );
    assert!(
        e.contains("range_min must be smaller than range_max"),
        "{e}"
    );
    let e = run(
        &sample("pairs.tsv"),
        &["--format", "labeled-pair", "--margins"],
    );
    assert!(e.contains("--margins goes with --format triplet"), "{e}");
    assert!(!out.exists(), "nothing written");
    let e = run(&sample("pairs.tsv"), &["--output", "x.parquet"]);
    assert!(e.contains("name a .csv, .tsv or .jsonl file"), "{e}");
}
