//! Parity with the Python sentence-transformers library on the tiny fixture models.
//! Expected numbers: `tests/fixtures/tiny_reference.json` and `tiny-xlmr_reference.json`, made by
//! sentence-transformers 6.2.0 / torch 2.15 (see `tests/fixtures/README-shared.md`).

mod common;

use common::*;
use sbert_tui::model::{LoadOptions, PoolingMode, PoolingSpec, SentenceEncoder};

const TOL: f32 = 1e-5;

#[test]
fn tiny_token_ids_are_exact() {
    let r = json("tiny_reference.json");
    let enc = tiny();
    let got: Vec<Vec<u32>> = enc
        .tokenize(&strings(&r["sentences"]))
        .unwrap()
        .into_iter()
        .map(|t| t.ids)
        .collect();
    assert_eq!(got, ids(&r["token_ids"]));
    assert_eq!(
        enc.info().max_seq_length,
        64,
        "min(tokenizer 64, positions 128)"
    );
}

#[test]
fn tiny_token_embeddings_match() {
    let r = json("tiny_reference.json");
    let enc = tiny();
    let sentences = strings(&r["sentences"]);
    let got = enc.encode_tokens(&sentences[..3]).unwrap();
    for (i, want) in r["token_embeddings_first3"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_close(
            &got[i],
            &matrix(want),
            TOL,
            &format!("token embeddings of sentence {i}"),
        );
    }
}

#[test]
fn tiny_every_pooling_mode_matches() {
    let r = json("tiny_reference.json");
    let enc = tiny();
    let sentences = strings(&r["sentences"]);
    for mode in PoolingMode::ALL {
        let got = enc
            .encode_pooled(&sentences, &PoolingSpec::single(mode), 5)
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
fn tiny_final_embeddings_match_through_dense_and_normalize() {
    let r = json("tiny_reference.json");
    let enc = tiny();
    assert_eq!(enc.info().embedding_dim, 16);
    assert_eq!(enc.info().dense_layers, 1);
    assert!(enc.info().normalize);
    let got = enc
        .encode(&strings(&r["sentences"]), 4, &mut |_, _| {})
        .unwrap();
    assert_close(
        &got,
        &matrix(&r["sentence_embedding"]),
        TOL,
        "sentence embeddings",
    );
}

#[test]
fn tiny_xlmr_matches() {
    let r = json("tiny-xlmr_reference.json");
    let enc = SentenceEncoder::load(&fixture("tiny-xlmr-st"), &LoadOptions::default()).unwrap();
    let sentences = strings(&r["sentences"]);
    let got: Vec<Vec<u32>> = enc
        .tokenize(&sentences)
        .unwrap()
        .into_iter()
        .map(|t| t.ids)
        .collect();
    assert_eq!(got, ids(&r["token_ids"]));
    let got = enc.encode(&sentences, 3, &mut |_, _| {}).unwrap();
    assert_close(
        &got,
        &matrix(&r["sentence_embedding"]),
        TOL,
        "xlm-r sentence embeddings",
    );
}

/// The same weights saved by `torch.save` (with a `bert.` prefix, as a `BertForX` checkpoint
/// has): `tests/fixtures/tiny-bert-pt` was made from `tiny-bert-st` with
/// `torch.save({"bert." + k: v for k, v in load_file("model.safetensors").items()}, "pytorch_model.bin")`
/// (and the Dense weights without prefix).
#[test]
fn pytorch_model_bin_loads_the_same_model() {
    let r = json("tiny_reference.json");
    let enc = SentenceEncoder::load(&fixture("tiny-bert-pt"), &LoadOptions::default()).unwrap();
    let got = enc
        .encode(&strings(&r["sentences"]), 4, &mut |_, _| {})
        .unwrap();
    assert_close(
        &got,
        &matrix(&r["sentence_embedding"]),
        TOL,
        "from pytorch_model.bin",
    );
}
