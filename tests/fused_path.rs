//! The fused CPU inference path (evaluation mode) against the candle composition it replaces
//! (the same forward pass built from candle ops, which training uses and which the parity tests
//! held to Python before the fused path existed): same token vectors on real tokens, for BERT and
//! XLM-R position numbering, every activation, padded batches and the real model.

mod common;

use candle_core::Tensor;
use common::*;
use sbert_tui::model::{DropoutRng, LoadOptions, Mode, SentenceEncoder};

const SENTENCES: [&str; 7] = [
    "short",
    "A man is playing a guitar on the stage tonight.",
    "",
    "机器学习是我的爱好。",
    "Emoji test 🙂🚀",
    "long sentence with many repeated words sentence with many repeated words and more",
    "two words",
];

/// Token vectors of real tokens, `[sentence][token][hidden]`, from one padded batch.
fn real_tokens(t: &Tensor, lengths: &[usize]) -> Vec<Vec<f32>> {
    let rows: Vec<Vec<Vec<f32>>> = t.to_vec3().unwrap();
    rows.into_iter()
        .zip(lengths)
        .flat_map(|(r, &len)| r.into_iter().take(len))
        .collect()
}

fn compare(enc: &SentenceEncoder, tol: f32, what: &str) {
    let tokenized = enc.tokenize(&SENTENCES).unwrap();
    let items: Vec<_> = tokenized.iter().collect();
    let input = enc.batch(&items).unwrap();
    let bert = enc.transformer();
    let fused = bert.forward(&input, Mode::EVAL).unwrap();
    let composed = bert.forward_composed(&input, Mode::EVAL).unwrap();
    assert_eq!(fused.dims(), composed.dims(), "{what}: shape");
    let a = real_tokens(&fused, &input.lengths);
    let b = real_tokens(&composed, &input.lengths);
    assert_close(&a, &b, tol, what);
    // Padding rows of the fused output are zero (pooling masks them either way).
    let all: Vec<Vec<Vec<f32>>> = fused.to_vec3().unwrap();
    for (row, &len) in all.iter().zip(&input.lengths) {
        assert!(
            row[len..].iter().flatten().all(|&v| v == 0.0),
            "{what}: padding"
        );
    }
}

#[test]
fn fused_equals_composed_tiny_bert() {
    compare(&tiny(), 1e-5, "tiny BERT");
}

#[test]
fn fused_equals_composed_tiny_xlmr() {
    let enc = SentenceEncoder::load(&fixture("tiny-xlmr-st"), &LoadOptions::default()).unwrap();
    compare(&enc, 1e-5, "tiny XLM-R");
}

#[test]
fn fused_equals_composed_tiny_mpnet() {
    // MPNet adds a relative position bias; the long sentence reaches its logarithmic buckets.
    let enc = SentenceEncoder::load(&fixture("tiny-mpnet-st"), &LoadOptions::default()).unwrap();
    compare(&enc, 1e-5, "tiny MPNet");
}

#[test]
fn fused_equals_composed_tiny_distilbert() {
    let enc =
        SentenceEncoder::load(&fixture("tiny-distilbert-st"), &LoadOptions::default()).unwrap();
    compare(&enc, 1e-5, "tiny DistilBERT");
}

#[test]
fn fused_equals_composed_for_every_activation() {
    for act in ["gelu_new", "relu", "silu"] {
        let (_dir, enc) = with_activation("tiny-bert-st", act);
        compare(&enc, 1e-5, act);
    }
}

#[test]
fn fused_equals_composed_minilm() {
    compare(&minilm(), 1e-5, "all-MiniLM-L6-v2");
}

#[test]
fn a_batch_larger_than_one_parallel_task_matches_too() {
    // 40 sentences: the element-wise passes and attention split across threads.
    let enc = tiny();
    let texts: Vec<String> = (0..40)
        .map(|i| format!("sentence number {i} has {} words", "some ".repeat(i % 9)))
        .collect();
    let tokenized = enc.tokenize(&texts).unwrap();
    let items: Vec<_> = tokenized.iter().collect();
    let input = enc.batch(&items).unwrap();
    let bert = enc.transformer();
    let a = real_tokens(&bert.forward(&input, Mode::EVAL).unwrap(), &input.lengths);
    let b = real_tokens(
        &bert.forward_composed(&input, Mode::EVAL).unwrap(),
        &input.lengths,
    );
    assert_close(&a, &b, 1e-5, "40 sentences");
}

/// The families without a fused path (T5, ModernBERT, Qwen3) run their linear layers on the
/// same product kernels in inference; the rest of their pass is the composition.
#[test]
fn linear_kernels_equal_composed_for_the_other_families() {
    for name in [
        "tiny-t5-st",
        "tiny-t5-encdec-st",
        "tiny-modernbert-st",
        "tiny-qwen3-st",
    ] {
        let enc = SentenceEncoder::load(&fixture(name), &LoadOptions::default()).unwrap();
        let tokenized = enc.tokenize(&SENTENCES).unwrap();
        let items: Vec<_> = tokenized.iter().collect();
        let input = enc.batch(&items).unwrap();
        let t = enc.transformer();
        let a = t.forward(&input, Mode::EVAL).unwrap();
        let b = t.forward_composed(&input, Mode::EVAL).unwrap();
        let (a, b) = (
            real_tokens(&a, &input.lengths),
            real_tokens(&b, &input.lengths),
        );
        assert_close(&a, &b, 1e-5, name);
    }
}

/// Once a model is being trained its weights change: inference must run on the live weights,
/// never on copies prepared before (a bf16 copy here, made by the first pass).
#[test]
fn a_trainable_model_drops_its_prepared_weights() {
    for name in ["tiny-t5-st", "tiny-modernbert-st", "tiny-qwen3-st"] {
        let opts = LoadOptions {
            precision: sbert_tui::model::Precision::Bf16,
            ..Default::default()
        };
        let mut enc = SentenceEncoder::load(&fixture(name), &opts).unwrap();
        let before = enc.encode(&SENTENCES, 8, &mut |_, _| {}).unwrap();
        enc.set_trainable();
        // Every weight changes, as an optimizer step would change it.
        for var in enc.transformer().varmap().all_vars() {
            let moved = (var.as_tensor() * 1.01).unwrap();
            var.set(&moved).unwrap();
        }
        let tokenized = enc.tokenize(&SENTENCES).unwrap();
        let items: Vec<_> = tokenized.iter().collect();
        let input = enc.batch(&items).unwrap();
        let t = enc.transformer();
        let live = t.forward_composed(&input, Mode::EVAL).unwrap();
        let got = t.forward(&input, Mode::EVAL).unwrap();
        // On the kernels in float32, packed for each pass (the weights moved by 1%, far more
        // than this bound).
        assert_close(
            &real_tokens(&got, &input.lengths),
            &real_tokens(&live, &input.lengths),
            1e-5,
            &format!("{name}: inference after set_trainable runs on the live weights"),
        );
        let after = enc.encode(&SENTENCES, 8, &mut |_, _| {}).unwrap();
        assert_ne!(before, after, "{name}: the weights moved");
    }
}

/// Training on the CPU, the families without a hand-written backward pass run their linear
/// layers as a candle operation on the kernels and take their tables' gradients as rows
/// (`Mode::lookups`): every weight's gradient equals candle's own composition's.
#[test]
fn training_on_the_kernels_has_the_compositions_gradients() {
    use candle_core::backprop::GradStore;
    use sbert_tui::model::Lookups;
    for name in [
        "tiny-t5-st",
        "tiny-t5-encdec-st",
        "tiny-modernbert-st",
        "tiny-qwen3-st",
    ] {
        let mut enc = SentenceEncoder::load(&fixture(name), &LoadOptions::default()).unwrap();
        enc.set_trainable();
        let tokenized = enc.tokenize(&SENTENCES).unwrap();
        let items: Vec<_> = tokenized.iter().collect();
        let input = enc.batch(&items).unwrap();
        let t = enc.transformer();
        // A loss that weighs every real token's output differently, so that no gradient is a
        // plain sum. Padding outputs get no weight, as in every pooling: a training pass on the
        // kernels computes the real tokens alone (`Packing`).
        let loss = |out: &Tensor| {
            let (seq, h) = (out.dim(1).unwrap(), out.dim(2).unwrap());
            let w: Vec<f32> = (0..out.elem_count())
                .map(|i| {
                    let (row, pos) = (i / (seq * h), i / h % seq);
                    if pos < input.lengths[row] {
                        ((i * 37 % 101) as f32 - 50.0) / 50.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let w = Tensor::from_vec(w, out.shape(), out.device()).unwrap();
            (out * w).unwrap().sum_all().unwrap()
        };
        let lookups = Lookups::default();
        let mode = Mode::train_without_dropout();
        let ours = t.forward(&input, mode.with_lookups(&lookups)).unwrap();
        let mut ours_grads: GradStore = loss(&ours).backward().unwrap();
        let lookups = lookups.into_inner();
        assert!(!lookups.is_empty(), "{name}: the word table was looked up");
        let theirs = t.forward_composed(&input, mode).unwrap();
        let theirs_grads = loss(&theirs).backward().unwrap();
        assert_close(
            &real_tokens(&ours, &input.lengths),
            &real_tokens(&theirs, &input.lengths),
            1e-5,
            name,
        );
        let mut tables = Vec::new();
        for l in &lookups {
            let rows = l.row_grad(&mut ours_grads).unwrap().expect("rows reached");
            tables.push((l.table.clone(), rows.to_dense(l.table.dims()[0])));
        }
        let vars = t.varmap().all_vars();
        for var in &vars {
            let var = var.as_tensor();
            let table = tables.iter().find(|(t, _)| t.id() == var.id());
            let Some(expected) = theirs_grads.get(var) else {
                // A weight the encoder does not use (T5's decoder): none here either.
                assert!(table.is_none() && ours_grads.get(var).is_none(), "{name}");
                continue;
            };
            let expected: Vec<f32> = expected.flatten_all().unwrap().to_vec1().unwrap();
            let got: Vec<f32> = match table {
                Some((_, dense)) => dense.clone(),
                None => ours_grads
                    .get(var)
                    .expect("a weight the composition differentiates")
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            };
            let scale = expected.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let diff = got
                .iter()
                .zip(&expected)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-5 * scale,
                "{name}: a weight's gradient differs by {diff} (scale {scale})"
            );
        }
    }
}

/// With dropout on, a training pass on the kernels (the real tokens alone, `Packing`) draws the
/// masks the padded composition draws: the same outputs at every real token, and the generator
/// left at the same place. Tiny T5 has dropout 0.1 at six places a block.
#[test]
fn training_on_the_kernels_draws_the_compositions_dropout() {
    // The tiny ModernBERT and Qwen3 set their dropouts to 0; copies set them to 0.1, attention's
    // too (ModernBERT's runs in one operation on the kernels).
    let dropout = |config: &mut serde_json::Value| {
        for key in ["embedding_dropout", "attention_dropout", "mlp_dropout"] {
            if config.get(key).is_some() {
                config[key] = 0.1.into();
            }
        }
    };
    for name in [
        "tiny-t5-st",
        "tiny-t5-encdec-st",
        "tiny-modernbert-st",
        "tiny-qwen3-st",
    ] {
        let (_dir, mut enc) = with_config(name, dropout);
        enc.set_trainable();
        let tokenized = enc.tokenize(&SENTENCES).unwrap();
        let items: Vec<_> = tokenized.iter().collect();
        let input = enc.batch(&items).unwrap();
        let (short, long) = (input.lengths.iter().min(), input.lengths.iter().max());
        assert!(short < long, "{name}: the batch has padding");
        let t = enc.transformer();
        let (ours_rng, theirs_rng) = (DropoutRng::new(11), DropoutRng::new(11));
        let ours = t.forward(&input, Mode::train(&ours_rng)).unwrap();
        let theirs = t
            .forward_composed(&input, Mode::train(&theirs_rng))
            .unwrap();
        assert_close(
            &real_tokens(&ours, &input.lengths),
            &real_tokens(&theirs, &input.lengths),
            1e-5,
            name,
        );
        assert_eq!(ours_rng.position(), theirs_rng.position(), "{name}");
        let plain = t
            .forward_composed(&input, Mode::train_without_dropout())
            .unwrap();
        let moved = max_abs_diff(
            &real_tokens(&plain, &input.lengths),
            &real_tokens(&theirs, &input.lengths),
            name,
        );
        assert!(moved > 1e-3, "{name}: dropout changed the outputs");
    }
}
