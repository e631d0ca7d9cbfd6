//! Training every model family, and prompts per column of the training data.
//!
//! Each family's tiny random-init model (the folders of `families2_reference.json` and the tiny
//! T5) runs a short CoSENT fine-tune on 32 scored pairs; the loss must fall, and the saved folder
//! must load with the same family, tokenizer and prompts. That Python loads these folders with
//! the same vectors was checked by hand (see the README's model section for the command).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use sbert_tui::model::{LoadOptions, Prompt, SentenceEncoder};
use sbert_tui::train::config::{ColumnPrompt, TrainConfig};
use sbert_tui::train::data;
use sbert_tui::train::events::TrainEvent;
use sbert_tui::train::losses::LossKind;
use sbert_tui::train::run::{self, Outcome, StopSignal, TrainError};
use sbert_tui::train::session::{LossSetup, Session};
use serde_json::Value;

const FAMILIES: [&str; 5] = [
    "tiny-distilbert-st",
    "tiny-mpnet-st",
    "tiny-t5-st",
    "tiny-modernbert-st",
    "tiny-qwen3-st",
];

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample_data")
        .join(name)
}

/// The header and the first `rows` rows of a sample file, written to `dir`.
fn head(file: &str, rows: usize, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(sample(file)).unwrap();
    let kept: Vec<&str> = text.lines().take(rows + 1).collect();
    let path = dir.join(file);
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    path
}

fn losses(events: &[TrainEvent]) -> Vec<f64> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_family_trains_and_saves_a_folder_that_loads() {
    for name in FAMILIES {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut c = TrainConfig::new(
            fixture(name).to_str().unwrap(),
            head("scored-pairs.csv", 32, dir.path()),
            LossKind::CoSent,
            out.clone(),
        );
        c.lr = 1e-3;
        c.batch_size = 16;
        c.epochs = 8;
        c.warmup_ratio = 0.0;
        c.device = sbert_tui::model::DeviceChoice::Cpu;
        let mut events = Vec::new();
        let r = run::train(c, &mut |e| events.push(e.clone()), &StopSignal::new());
        let output = match r {
            Ok(Outcome::Finished { output, .. }) => output,
            other => panic!("{name}: {other:?}"),
        };
        let l = losses(&events);
        assert_eq!(l.len(), 16, "{name}: 2 steps x 8 epochs");
        let first = (l[0] + l[1]) / 2.0;
        let last = (l[14] + l[15]) / 2.0;
        assert!(last < first, "{name}: loss {first:.4} -> {last:.4}");

        let base = SentenceEncoder::load(&fixture(name), &LoadOptions::default()).unwrap();
        let tuned = SentenceEncoder::load(&output, &LoadOptions::default()).unwrap();
        assert_eq!(
            tuned.transformer().model_type(),
            base.transformer().model_type(),
            "{name}"
        );
        assert!(tuned.info().unexpected_weights.is_empty(), "{name}");
        let texts = ["A man is playing a guitar.", "机器学习"];
        assert_eq!(
            tuned.tokenize(&texts).unwrap(),
            base.tokenize(&texts).unwrap(),
            "{name}: the same tokenizer"
        );
        let (a, b) = (
            tuned.encode(&texts, 2, &mut |_, _| {}).unwrap(),
            base.encode(&texts, 2, &mut |_, _| {}).unwrap(),
        );
        assert!(
            a.iter().flatten().all(|v| v.is_finite()),
            "{name}: finite vectors"
        );
        assert!(
            max_abs_diff(&a, &b, name) > 1e-4,
            "{name}: training changed the model"
        );
        // The base model's prompts and similarity function are kept.
        let st = |d: &Path| read_json(&d.join("config_sentence_transformers.json"));
        let (saved, was) = (st(&output), st(&fixture(name)));
        assert_eq!(saved["prompts"], was["prompts"], "{name}: prompts");
        assert_eq!(
            saved["default_prompt_name"], was["default_prompt_name"],
            "{name}"
        );
        assert_eq!(
            saved["similarity_fn_name"], was["similarity_fn_name"],
            "{name}"
        );
    }
}

/// Tiny Qwen3 has the Qwen3-Embedding prompts `query` (an instruction) and `document` (empty).
fn qwen3() -> SentenceEncoder {
    SentenceEncoder::load(&fixture("tiny-qwen3-st"), &LoadOptions::default()).unwrap()
}

#[test]
fn column_prompts_are_model_prompts_by_name_or_texts() {
    let dir = tempfile::tempdir().unwrap();
    let d = data::load(&head("pairs.tsv", 4, dir.path())).unwrap();
    assert_eq!(d.text_columns(), ["anchor", "positive"]);
    let enc = qwen3();
    let p = run::column_prompts(
        &ColumnPrompt::parse_list("anchor=query,positive=passage: "),
        &d,
        &enc,
    );
    assert_eq!(
        p,
        [
            Prompt::Name("query".into()),
            Prompt::Text("passage: ".into())
        ]
    );
    // One prompt for every column.
    let p = run::column_prompts(&ColumnPrompt::parse_list("query"), &d, &enc);
    assert_eq!(
        p,
        [Prompt::Name("query".into()), Prompt::Name("query".into())]
    );
    // None given: none used (as in Python, training adds no default prompt).
    assert_eq!(
        run::column_prompts(&[], &d, &enc),
        [Prompt::None, Prompt::None]
    );
}

#[test]
fn a_training_batch_carries_each_columns_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let d = data::load(&head("pairs.tsv", 4, dir.path())).unwrap();
    let mut session = Session::new(
        qwen3(),
        LossSetup::new(LossKind::Mnr),
        Default::default(),
        None,
        1,
        None,
    )
    .unwrap();
    session.column_prompts = run::column_prompts(
        &ColumnPrompt::parse_list("anchor=query"),
        &d,
        &session.encoder,
    );
    let batch: Vec<_> = d.examples.iter().collect();
    let cols = session.embed_columns(&batch).unwrap();
    let anchors: Vec<&str> = batch.iter().map(|e| e.texts()[0]).collect();
    let positives: Vec<&str> = batch.iter().map(|e| e.texts()[1]).collect();
    let enc = &session.encoder;
    let with =
        |texts: &[&str], p: &Prompt| enc.encode_prompted(texts, p, 8, &mut |_, _| {}).unwrap();
    let got = |t: &candle_core::Tensor| t.to_vec2::<f32>().unwrap();
    assert_close(
        &got(&cols[0]),
        &with(&anchors, &Prompt::Name("query".into())),
        1e-5,
        "anchors with the query prompt",
    );
    assert_close(
        &got(&cols[1]),
        &with(&positives, &Prompt::None),
        1e-5,
        "positives without",
    );
    assert!(
        max_abs_diff(&got(&cols[0]), &with(&anchors, &Prompt::None), "x") > 1e-3,
        "the prompt changes the anchors"
    );
}

#[test]
fn a_prompt_for_a_column_the_data_lacks_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut c = TrainConfig::new(
        fixture("tiny-qwen3-st").to_str().unwrap(),
        head("pairs.tsv", 4, dir.path()),
        LossKind::Mnr,
        out.clone(),
    );
    c.prompts = ColumnPrompt::parse_list("query=query");
    let r = run::train(c, &mut |_| {}, &StopSignal::new());
    let e = match r {
        Err(e @ TrainError::Settings(_)) => e.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(e.contains("--prompts"), "{e}");
    assert!(
        e.contains("`query` is not a text column") && e.contains("anchor, positive"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written");
}
