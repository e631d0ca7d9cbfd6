//! Parity with the Python sentence-transformers library on the real all-MiniLM-L6-v2.
//! Expected numbers: `tests/fixtures/minilm_reference.json` and `minilm_stsb_dev200.json`, made by
//! sentence-transformers 6.2.0 / torch 2.15 (see `tests/fixtures/README-shared.md`).
//! The model itself is fetched (see `common::minilm_dir`); these tests always run in CI.

mod common;

use common::*;
use sbert_tui::analysis::similarity::cosine;
use sbert_tui::model::{PoolingMode, PoolingSpec};

const TOL: f32 = 1e-4;

#[test]
fn minilm_token_ids_are_exact_and_truncated_at_256() {
    let r = json("minilm_reference.json");
    let enc = minilm();
    assert_eq!(
        enc.info().max_seq_length,
        256,
        "sentence_bert_config.json, not tokenizer.json's 128"
    );
    let tokenized = enc.tokenize(&strings(&r["sentences"])).unwrap();
    let got: Vec<Vec<u32>> = tokenized.iter().map(|t| t.ids.clone()).collect();
    assert_eq!(got, ids(&r["token_ids"]));
    assert_eq!(got[11].len(), 256);
    assert!(tokenized[11].truncated && !tokenized[0].truncated);
}

#[test]
fn minilm_embeddings_match() {
    let r = json("minilm_reference.json");
    let enc = minilm();
    let got = enc
        .encode(&strings(&r["sentences"]), 32, &mut |_, _| {})
        .unwrap();
    let want = matrix(&r["sentence_embedding"]);
    assert_close(&got, &want, TOL, "all-MiniLM-L6-v2 sentence embeddings");
    for (g, w) in got.iter().zip(&want) {
        assert!(cosine(g, w) > 0.99999);
    }
}

#[test]
fn minilm_every_pooling_mode_matches() {
    let r = json("minilm_reference.json");
    let enc = minilm();
    let sentences = strings(&r["sentences"]);
    for mode in PoolingMode::ALL {
        let got = enc
            .encode_pooled(&sentences, &PoolingSpec::single(mode), 32)
            .unwrap();
        assert_close(
            &got,
            &matrix(&r["pooled"][mode.name()]),
            TOL,
            &format!("pooling {mode}"),
        );
    }
}

#[test]
fn minilm_stsb_dev_cosines_match() {
    let r = json("minilm_stsb_dev200.json");
    let enc = minilm();
    let a = enc
        .encode(&strings(&r["sentence1"]), 32, &mut |_, _| {})
        .unwrap();
    let b = enc
        .encode(&strings(&r["sentence2"]), 32, &mut |_, _| {})
        .unwrap();
    let want: Vec<f32> = r["cosine"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let mut worst = 0f32;
    for i in 0..want.len() {
        worst = worst.max((cosine(&a[i], &b[i]) - want[i]).abs());
    }
    assert!(worst <= TOL, "worst STS-B cosine difference {worst:e}");
}

/// The explorer's "every pooling side by side" (one transformer pass, every mode pooled from
/// it) gives the cosine of the Python library's pooled vectors (`pooled` in the fixture, made
/// with sentence-transformers 6.2.0) for each mode.
#[test]
fn pooling_side_by_side_matches_the_python_pooled_vectors() {
    let r = json("minilm_reference.json");
    let sentences = strings(&r["sentences"]);
    let enc = minilm();
    for (i, j) in [(0, 1), (0, 2), (3, 4)] {
        let table = enc
            .pooling_table(
                &sentences[i],
                &sentences[j],
                &sbert_tui::model::Prompt::ModelDefault,
            )
            .unwrap();
        assert_eq!(table.len(), PoolingMode::FROM_TOKENS.len());
        for (mode, value) in table {
            let want = if mode.is_ours() {
                // Not in Python: the same mode through `encode_pooled`, our batch path.
                let v = enc
                    .encode_pooled(
                        &[&sentences[i], &sentences[j]],
                        &PoolingSpec::single(mode),
                        2,
                    )
                    .unwrap();
                cosine(&v[0], &v[1])
            } else {
                let pooled = matrix(&r["pooled"][mode.name()]);
                cosine(&pooled[i], &pooled[j])
            };
            assert!(
                (value - want).abs() < TOL,
                "{mode} [{i}] vs [{j}]: {value} against Python's {want}"
            );
        }
    }
}
