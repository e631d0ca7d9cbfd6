//! The encoder's hand-written CPU backward pass against candle's autograd over the same
//! composition: same outputs and the same gradient for every weight (transformer and Dense), with
//! dropout off and with dropout on (the masks come from the same seeded stream in the same order),
//! for BERT and XLM-R position numbering. Then a whole training step both ways.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::*;
use sbert_tui::model::{DropoutRng, LoadOptions, Mode, SentenceEncoder};
use sbert_tui::train::data::Example;
use sbert_tui::train::losses::LossKind;
use sbert_tui::train::optim::AdamWConfig;
use sbert_tui::train::session::{LossSetup, Session, parameters};

const SENTENCES: [&str; 6] = [
    "A man is playing a guitar.",
    "short",
    "",
    "机器学习是我的爱好。",
    "long sentence with many repeated words sentence with many repeated words",
    "two words",
];

type ByName = HashMap<String, Vec<f32>>;

/// Gradients of `sum(out ⊙ r)` for a fixed `r`, by variable name: candle's autograd through the
/// composition, and the hand-written pass.
fn both_ways(enc: &SentenceEncoder, seed: Option<u64>) -> (ByName, ByName, f32) {
    let tokenized = enc.tokenize(&SENTENCES).unwrap();
    let items: Vec<_> = tokenized.iter().collect();
    let input = enc.batch(&items).unwrap();
    let weights = |out: &Tensor| {
        let n = out.elem_count();
        let r: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        Tensor::from_vec(r, out.dims(), &Device::Cpu).unwrap()
    };

    let rng_a = seed.map(DropoutRng::new);
    let mode = match &rng_a {
        Some(r) => Mode::train(r),
        None => Mode::train_without_dropout(),
    };
    let out_a = enc.forward(&input, mode).unwrap();
    let loss_a = (&out_a * weights(&out_a)).unwrap().sum_all().unwrap();
    let grads_a = loss_a.backward().unwrap();

    let rng_b = seed.map(DropoutRng::new);
    let (out_b, leaf, tape) = enc
        .forward_recorded(&input, rng_b.as_ref())
        .unwrap()
        .expect("the hand-written path applies on the CPU");
    let loss_b = (&out_b * weights(&out_b)).unwrap().sum_all().unwrap();
    let mut grads_b = loss_b.backward().unwrap();
    let dtok = grads_b.remove(leaf.as_tensor()).unwrap();
    let hand = enc
        .backward(tape, &dtok.flatten_all().unwrap().to_vec1().unwrap())
        .unwrap();
    // The word table's gradient comes as the rows the batch looked up.
    assert_eq!(hand.rows.len(), 1, "one row gradient: the word table's");
    let rows = hand
        .rows
        .into_iter()
        .map(|(w, r)| (w.clone(), r.to_dense(w.dims()[0])));
    let dense = hand.dense.into_iter().map(|(w, g, _squares)| (w, g));
    for (w, g) in dense.chain(rows) {
        let g = Tensor::from_vec(g, w.shape(), w.device()).unwrap();
        grads_b.insert(&w, g);
    }
    let diff_out = max_abs_diff(
        &out_a.to_vec2::<f32>().unwrap(),
        &out_b.to_vec2::<f32>().unwrap(),
        "outputs",
    );

    let mut a = HashMap::new();
    let mut b = HashMap::new();
    for p in parameters(enc, None) {
        let t = p.var.as_tensor();
        let flat = |g: &Tensor| g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        if let Some(g) = grads_a.get(t) {
            a.insert(p.name.clone(), flat(g));
        }
        if let Some(g) = grads_b.get(t) {
            b.insert(p.name.clone(), flat(g));
        }
    }
    (a, b, diff_out)
}

fn compare(enc: &SentenceEncoder, seed: Option<u64>, what: &str) {
    let (a, b, diff_out) = both_ways(enc, seed);
    assert!(diff_out < 1e-5, "{what}: outputs differ by {diff_out}");
    let mut names: Vec<_> = a.keys().collect();
    names.sort();
    assert_eq!(
        {
            let mut k: Vec<_> = b.keys().collect();
            k.sort();
            k
        },
        names,
        "{what}: the same weights get gradients"
    );
    assert!(names.len() > 20, "{what}: {} gradients", names.len());
    for name in names {
        let (ga, gb) = (&a[name], &b[name]);
        let scale = ga.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        let worst = ga
            .iter()
            .zip(gb)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "{what}: gradient of {name} differs by {worst:e} (largest value {scale:e})"
        );
    }
}

#[test]
fn hand_backward_matches_autograd_tiny_bert() {
    let enc = tiny();
    compare(&enc, None, "tiny BERT, no dropout");
    compare(&enc, Some(11), "tiny BERT, dropout");
}

#[test]
fn hand_backward_matches_autograd_for_every_activation() {
    for act in ["gelu_new", "relu", "silu"] {
        let (_dir, enc) = with_activation("tiny-bert-st", act);
        compare(&enc, Some(23), act);
    }
}

#[test]
fn hand_backward_matches_autograd_tiny_xlmr() {
    let enc = SentenceEncoder::load(&fixture("tiny-xlmr-st"), &LoadOptions::default()).unwrap();
    compare(&enc, None, "tiny XLM-R, no dropout");
    compare(&enc, Some(5), "tiny XLM-R, dropout");
}

#[test]
fn hand_backward_matches_autograd_tiny_distilbert() {
    // No token types, DistilBERT's own weight names.
    let enc =
        SentenceEncoder::load(&fixture("tiny-distilbert-st"), &LoadOptions::default()).unwrap();
    compare(&enc, None, "distilbert, no dropout");
    compare(&enc, Some(3), "distilbert, dropout");
}

#[test]
fn hand_backward_matches_autograd_tiny_mpnet() {
    // The relative position bias table is shared by every layer: its gradient sums them all.
    let enc = SentenceEncoder::load(&fixture("tiny-mpnet-st"), &LoadOptions::default()).unwrap();
    compare(&enc, None, "mpnet, no dropout");
    compare(&enc, Some(5), "mpnet, dropout");
    let (a, _, _) = both_ways(&enc, None);
    assert!(
        a.keys().any(|k| k.contains("relative_attention_bias")),
        "the relative bias gets a gradient: {:?}",
        a.keys().collect::<Vec<_>>()
    );
}

/// CLS and last-token pooling: the recorded pass gives the pooled token's vector alone, its
/// last layer past attention run for that token (the dropout masks drawn whole, as the
/// composition draws them); the composition runs every token. Same outputs, same gradients.
#[test]
fn hand_backward_of_the_pooled_token_alone_matches_autograd() {
    use sbert_tui::model::{PoolingMode, PoolingSpec};
    for name in ["tiny-bert-st", "tiny-distilbert-st", "tiny-mpnet-st"] {
        for mode in [PoolingMode::Cls, PoolingMode::LastToken] {
            let options = LoadOptions {
                pooling: Some(PoolingSpec::single(mode)),
                ..LoadOptions::default()
            };
            let enc = SentenceEncoder::load(&fixture(name), &options).unwrap();
            let tokenized = enc.tokenize(&SENTENCES).unwrap();
            let items: Vec<_> = tokenized.iter().collect();
            let input = enc.batch(&items).unwrap();
            let (_, leaf, _) = enc
                .forward_recorded(&input, None)
                .unwrap()
                .expect("the hand-written path applies");
            assert_eq!(
                leaf.as_tensor().dims(),
                [SENTENCES.len(), enc.info().hidden_size],
                "{name}, {mode}: the pooled tokens alone"
            );
            compare(&enc, None, &format!("{name}, {mode}, no dropout"));
            compare(&enc, Some(17), &format!("{name}, {mode}, dropout"));
        }
    }
}

#[test]
fn a_training_step_is_the_same_step_either_way() {
    let examples: Vec<Example> = SENTENCES
        .windows(2)
        .enumerate()
        .map(|(i, w)| Example::Scored {
            a: w[0].to_string(),
            b: w[1].to_string(),
            score: i as f32 / 5.0,
        })
        .collect();
    let batch: Vec<&Example> = examples.iter().collect();
    let run = |hand: bool| {
        let mut s = Session::new(
            tiny(),
            LossSetup::new(LossKind::Cosine),
            AdamWConfig::default(),
            Some(3),
            3,
            Some(1.0),
        )
        .unwrap();
        s.hand_backward = hand;
        let mut losses = Vec::new();
        for _ in 0..3 {
            losses.push(s.step(&batch, 1e-3).unwrap().loss);
        }
        let after = s.encoder.encode(&SENTENCES, 8, &mut |_, _| {}).unwrap();
        (losses, after)
    };
    let (la, ea) = run(false);
    let (lb, eb) = run(true);
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-5, "losses {la:?} vs {lb:?}");
    }
    assert_close(&ea, &eb, 1e-4, "embeddings after three steps");
}

#[test]
fn hand_backward_matches_autograd_minilm() {
    // The real model's shapes: 12 heads of 32, hidden 384, intermediate 1536, six layers.
    let enc = minilm();
    compare(&enc, Some(17), "all-MiniLM-L6-v2, dropout");
}
