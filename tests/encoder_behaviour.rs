//! Properties of the encoder that hold for any model: batching does not change results, dropout
//! is real in training mode and absent in evaluation mode.

mod common;

use common::*;
use sbert_tui::model::{DropoutRng, Mode};

const SENTENCES: [&str; 6] = [
    "short",
    "A man is playing a guitar on the stage tonight.",
    "",
    "机器学习是我的爱好。",
    "Emoji test 🙂🚀",
    "long sentence with many repeated words sentence with many repeated words and more",
];

fn one_by_one(enc: &sbert_tui::model::SentenceEncoder) -> Vec<Vec<f32>> {
    SENTENCES
        .iter()
        .map(|s| enc.encode(&[s], 1, &mut |_, _| {}).unwrap().remove(0))
        .collect()
}

#[test]
fn a_sentence_alone_equals_the_same_sentence_in_a_padded_batch_tiny() {
    let enc = tiny();
    let batched = enc.encode(&SENTENCES, 6, &mut |_, _| {}).unwrap();
    assert_close(&batched, &one_by_one(&enc), 1e-5, "batched vs single");
    // Batch sizes that split the length-sorted order differently give the same vectors, in order.
    let in_threes = enc.encode(&SENTENCES, 4, &mut |_, _| {}).unwrap();
    assert_close(&batched, &in_threes, 1e-5, "batch 6 vs 4");
}

#[test]
fn a_sentence_alone_equals_the_same_sentence_in_a_padded_batch_minilm() {
    let enc = minilm();
    let batched = enc.encode(&SENTENCES, 6, &mut |_, _| {}).unwrap();
    assert_close(&batched, &one_by_one(&enc), 1e-5, "batched vs single");
}

#[test]
fn progress_reports_every_batch() {
    let enc = tiny();
    let mut seen = Vec::new();
    enc.encode(&SENTENCES, 4, &mut |done, total| seen.push((done, total)))
        .unwrap();
    assert_eq!(seen, vec![(4, 6), (6, 6)]);
}

#[test]
fn dropout_changes_outputs_in_training_mode_only() {
    let enc = tiny();
    let tokenized = enc.tokenize(&SENTENCES).unwrap();
    let items: Vec<_> = tokenized.iter().collect();
    let input = enc.batch(&items).unwrap();
    let run = |mode| -> Vec<Vec<f32>> { enc.forward(&input, mode).unwrap().to_vec2().unwrap() };

    let eval_a = run(Mode::EVAL);
    let eval_b = run(Mode::EVAL);
    assert_eq!(eval_a, eval_b, "evaluation mode is deterministic");
    assert_close(
        &run(Mode::train_without_dropout()),
        &eval_a,
        1e-5,
        "no-dropout training pass",
    );

    let rng = DropoutRng::new(42);
    let train_a = run(Mode::train(&rng));
    let train_b = run(Mode::train(&rng));
    assert!(
        max_abs_diff(&train_a, &eval_a, "train vs eval") > 1e-3,
        "dropout must change outputs"
    );
    assert!(
        max_abs_diff(&train_a, &train_b, "two train passes") > 1e-3,
        "two dropout passes differ"
    );

    // The same seed reproduces the same masks.
    let again = DropoutRng::new(42);
    assert_eq!(run(Mode::train(&again)), train_a);
}

#[test]
fn gradients_reach_every_weight_in_training_mode() {
    let enc = tiny();
    let tokenized = enc.tokenize(&SENTENCES[..3]).unwrap();
    let items: Vec<_> = tokenized.iter().collect();
    let input = enc.batch(&items).unwrap();
    let rng = DropoutRng::new(1);
    let loss = enc
        .forward(&input, Mode::train(&rng))
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let mut without = Vec::new();
    for map in enc.varmaps() {
        for (name, var) in map.data().lock().unwrap().iter() {
            if grads.get(var.as_tensor()).is_none() && !name.starts_with("pooler.") {
                without.push(name.clone());
            }
        }
    }
    without.sort();
    assert!(without.is_empty(), "weights without gradient: {without:?}");
}

/// Unknown pieces are counted among the text's own tokens (special tokens left out), for the
/// explorer's "7 of 9 tokens unknown to this model". Expected tokens from the `tokenizers`
/// Python package on each fixture's `tokenizer.json`.
#[test]
fn unknown_tokens_are_counted_among_the_texts_own_tokens() {
    let load = |name: &str| {
        sbert_tui::model::SentenceEncoder::load(
            &fixture(name),
            &sbert_tui::model::LoadOptions::default(),
        )
        .unwrap()
    };
    let counts = |enc: &sbert_tui::model::SentenceEncoder, text: &str| {
        let t = enc.tokenize(&[text]).unwrap().remove(0);
        (t.ids.len(), t.content, t.unknown)
    };
    // tiny BERT's vocabulary is a few test words: [CLS] + 7 x [UNK] + [SEP].
    assert_eq!(
        counts(&load("tiny-bert-st"), "A man is playing a guitar."),
        (9, 7, 7)
    );
    // tiny XLM-R: <s> ▁ 猫 在 睡觉 ▁cat </s>, ids [0, 7, 3, 651, 3, 258, 2]: 猫 and 睡觉 are
    // pieces of the Unigram model that map to <unk> (id 3).
    assert_eq!(counts(&load("tiny-xlmr-st"), "猫在睡觉 cat"), (7, 5, 2));
    // byte-level BPE has no unknown token: 12 byte pieces, Ġcat, <|endoftext|>.
    assert_eq!(counts(&load("tiny-qwen3-st"), "猫在睡觉 cat"), (14, 13, 0));
}

/// all-MiniLM-L6-v2's vocabulary has no Chinese characters: every one is [UNK] (Python's
/// tokenizer gives [CLS] [UNK] [UNK] [UNK] [UNK] [SEP]).
#[test]
fn chinese_is_unknown_to_minilm() {
    let t = minilm().tokenize(&["猫在睡觉"]).unwrap().remove(0);
    assert_eq!((t.ids.len(), t.content, t.unknown), (6, 4, 4));
}

/// The cost demonstration counts N passes against N(N-1)/2, runs at most the pairs it is
/// allowed, and extrapolates per pair.
#[test]
fn the_cost_measure_counts_passes_and_extrapolates() {
    use sbert_tui::model::{Prompt, cost};
    let enc = tiny();
    let texts: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    let r = cost::measure(&enc, &texts, &Prompt::None, 300).unwrap();
    assert_eq!(
        (r.n, r.bi_passes, r.cross_passes, r.cross_measured),
        (6, 6, 15, 15)
    );
    assert!(r.bi_seconds > 0.0 && r.cross_seconds > 0.0);
    let per_pair = r.cross_seconds / 15.0;
    let want = per_pair * 10_000.0 * 9_999.0 / 2.0;
    assert!((r.cross_seconds_10k - want).abs() <= 1e-9 * want);
    let capped = cost::measure(&enc, &texts, &Prompt::None, 4).unwrap();
    assert_eq!((capped.cross_passes, capped.cross_measured), (15, 4));
}
