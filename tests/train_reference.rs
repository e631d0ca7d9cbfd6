//! Six AdamW steps on the tiny models against `tests/fixtures/tiny_train_reference.json`
//! (sentence-transformers 6.2.0: dropout 0, CosineSimilarityLoss with score / 5, AdamW lr 1e-3,
//! betas (0.9, 0.999), eps 1e-8, weight decay 0 over all parameters, no schedule, no clipping).

mod common;

use common::*;
use sbert_tui::model::{LoadOptions, SentenceEncoder};
use sbert_tui::train::data::Example;
use sbert_tui::train::losses::LossKind;
use sbert_tui::train::optim::AdamWConfig;
use sbert_tui::train::session::{LossSetup, Session};
use serde_json::Value;

#[test]
fn six_adamw_steps_reproduce_python() {
    let r = json("tiny_train_reference.json");
    reproduce(tiny(), &r, &r, "tiny BERT");
}

/// The same six steps on the families candle's autograd trains (their linear layers and the
/// gradients on the CPU kernels, the word table's gradient as rows) against
/// `tests/fixtures/families_train_reference.json` (made by
/// `tests/fixtures/generate/make_family_train_reference.py`, same recipe and batches).
#[test]
fn six_adamw_steps_reproduce_python_for_the_other_families() {
    let r = json("families_train_reference.json");
    for folder in ["tiny-t5-st", "tiny-modernbert-st", "tiny-qwen3-st"] {
        let enc = SentenceEncoder::load(&fixture(folder), &LoadOptions::default()).unwrap();
        reproduce(enc, &r, &r["models"][folder], folder);
    }
}

/// Six steps on `r`'s batches from `encoder`: each step's loss within 1e-5 of `want`'s, and the
/// embeddings of `r`'s sentences after them within 1e-4.
fn reproduce(encoder: SentenceEncoder, r: &Value, want: &Value, what: &str) {
    let batches: Vec<Vec<Example>> = r["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b.as_array()
                .unwrap()
                .iter()
                .map(|row| Example::Scored {
                    a: row[0].as_str().unwrap().into(),
                    b: row[1].as_str().unwrap().into(),
                    score: row[2].as_f64().unwrap() as f32 / 5.0,
                })
                .collect()
        })
        .collect();
    let adamw = AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    };
    let mut session = Session::new(
        encoder,
        LossSetup::new(LossKind::Cosine),
        adamw,
        None,
        0,
        None,
    )
    .unwrap();
    // An evaluation before training (as `--eval-steps` makes) must not pin the weights it saw:
    // the embeddings after the steps are checked below.
    let before = session
        .encoder
        .encode(&strings(&r["sentences_after"]), 8, &mut |_, _| {})
        .unwrap();
    let losses: Vec<f64> = want["loss_per_step"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    for (step, want) in losses.iter().enumerate() {
        let batch: Vec<&Example> = batches[step % 3].iter().collect();
        let got = session.step(&batch, 1e-3).unwrap().loss;
        assert!(
            (got - want).abs() <= 1e-5,
            "{what}: step {step}: loss {got} vs {want}"
        );
    }
    let after = session
        .encoder
        .encode(&strings(&r["sentences_after"]), 8, &mut |_, _| {})
        .unwrap();
    assert_close(
        &after,
        &matrix(&want["embedding_after"]),
        1e-4,
        &format!("{what}: embeddings after six steps"),
    );
    assert!(
        (before[0][0] - after[0][0]).abs() > 1e-6,
        "{what}: training moved the embeddings"
    );
}
