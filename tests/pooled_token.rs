//! Pooling that reads one token of each sentence (`cls`, `lasttoken`) has the transformer run
//! its last layer for that token alone, past the keys and values of every token
//! (`Transformer::forward_at`). Its vectors are the whole pass's at those tokens: for every
//! family that does it, at every precision, in padded batches, after a prompt that pooling
//! leaves out, and for the real model.

mod common;

use std::path::Path;

use common::*;
use sbert_tui::model::transformer::EncoderInput;
use sbert_tui::model::{LoadOptions, Mode, PoolingMode, Precision, Prompt, SentenceEncoder};

const SENTENCES: [&str; 6] = [
    "short",
    "A man is playing a guitar on the stage tonight.",
    "机器学习是我的爱好。",
    "",
    "long sentence with many repeated words sentence with many repeated words and more",
    "two words",
];

fn load(dir: &Path, pooling: PoolingMode, precision: Precision) -> SentenceEncoder {
    let options = LoadOptions {
        pooling: Some(sbert_tui::model::PoolingSpec::single(pooling)),
        precision,
        ..LoadOptions::default()
    };
    SentenceEncoder::load(dir, &options).expect("the model loads")
}

/// [`SENTENCES`] as one padded batch, and the token `pooling` reads in each (no prompt).
fn batch_and_picks(enc: &SentenceEncoder, pooling: PoolingMode) -> (EncoderInput, Vec<usize>) {
    let tokenized = enc.tokenize(&SENTENCES).unwrap();
    let items: Vec<_> = tokenized.iter().collect();
    let input = enc.batch(&items).unwrap();
    let at = match pooling {
        PoolingMode::Cls => vec![0; SENTENCES.len()],
        _ => input.lengths.iter().map(|&l| l - 1).collect(),
    };
    (input, at)
}

/// `forward_at` against the whole pass picked at the same tokens, and the pipeline's vectors
/// (`encode`, batches of 4) against the workshop view's (the whole pass, one sentence at a
/// time). `picks`: whether the family runs the pruned last layer (else `forward_at` is `None`).
fn check(dir: &Path, what: &str, picks: bool, precisions: &[Precision]) {
    for pooling in [PoolingMode::Cls, PoolingMode::LastToken] {
        for &precision in precisions {
            let what = format!("{what}, {pooling}, {precision}");
            let enc = load(dir, pooling, precision);
            let (input, at) = batch_and_picks(&enc, pooling);
            let transformer = enc.transformer();
            let whole: Vec<Vec<Vec<f32>>> = transformer
                .forward(&input, Mode::EVAL)
                .unwrap()
                .to_vec3()
                .unwrap();
            let want: Vec<Vec<f32>> = whole
                .iter()
                .zip(&at)
                .map(|(rows, &i)| rows[i].clone())
                .collect();
            match transformer.forward_at(&input, Mode::EVAL, &at).unwrap() {
                Some(got) => {
                    assert!(picks, "{what}: picked, but this family was not to");
                    let got: Vec<Vec<f32>> = got.to_vec2().unwrap();
                    assert_close(&got, &want, 1e-5, &format!("{what}: picked tokens"));
                }
                None => assert!(!picks, "{what}: the last layer ran for every token"),
            }

            let got = enc.encode(&SENTENCES, 4, &mut |_, _| {}).unwrap();
            let want: Vec<Vec<f32>> = SENTENCES
                .iter()
                .map(|s| {
                    let p = enc.pipeline(s, &Prompt::ModelDefault).unwrap();
                    p.stages.last().unwrap().1.clone()
                })
                .collect();
            assert_close(&got, &want, 1e-5, &format!("{what}: sentence vectors"));
        }
    }
}

const EVERY: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

#[test]
fn the_bert_family_picks_its_pooled_token() {
    check(&fixture("tiny-bert-st"), "tiny BERT", true, &EVERY);
    check(&fixture("tiny-xlmr-st"), "tiny XLM-R", true, &EVERY);
    check(
        &fixture("tiny-distilbert-st"),
        "tiny DistilBERT",
        true,
        &EVERY,
    );
    // MPNet: the relative position bias of the picked query's row.
    check(&fixture("tiny-mpnet-st"), "tiny MPNet", true, &EVERY);
}

#[test]
fn modernbert_and_qwen3_pick_their_pooled_token() {
    check(
        &fixture("tiny-modernbert-st"),
        "tiny ModernBERT",
        true,
        &EVERY,
    );
    check(&fixture("tiny-qwen3-st"), "tiny Qwen3", true, &EVERY);
}

#[test]
fn t5_runs_every_token() {
    check(&fixture("tiny-t5-st"), "tiny T5", false, &[Precision::F32]);
}

#[test]
fn the_real_model_picks_its_cls_token() {
    check(&minilm_dir(), "all-MiniLM-L6-v2", true, &[Precision::F32]);
}

#[test]
fn a_prompt_left_out_of_pooling_moves_the_picked_token() {
    // The tiny BERT model with CLS pooling and `include_prompt: false`: pooling reads the first
    // token after the prompt, and so must the pruned last layer.
    let dir = with_pooling_config("tiny-bert-st", |c| c["include_prompt"] = false.into());
    let prompt = Prompt::Text("query: ".into());
    for mode in [PoolingMode::Cls, PoolingMode::LastToken] {
        let enc = load(dir.path(), mode, Precision::F32);
        let got = enc
            .encode_prompted(&SENTENCES, &prompt, 4, &mut |_, _| {})
            .unwrap();
        let want: Vec<Vec<f32>> = SENTENCES
            .iter()
            .map(|s| {
                let p = enc.pipeline(s, &prompt).unwrap();
                assert!(p.prompt_len >= 2, "[CLS] and the prompt's pieces");
                p.stages.last().unwrap().1.clone()
            })
            .collect();
        assert_close(&got, &want, 1e-5, &format!("{mode} after a prompt"));
        // Not the vectors of the prompt's first token.
        let first = load(&fixture("tiny-bert-st"), mode, Precision::F32)
            .encode_prompted(&SENTENCES, &prompt, 4, &mut |_, _| {})
            .unwrap();
        if mode == PoolingMode::Cls {
            assert!(
                max_abs_diff(&got, &first, "prompt pooled or not") > 1e-3,
                "the prompt's [CLS] was pooled"
            );
        }
    }
}

/// A training pass (no dropout drawn: these tiny models' dropout probabilities are 0) through
/// the picked tokens gives every weight the gradient the whole pass gives it, picked the same
/// way (`index_select`, differentiable). The picked attention's backward pass is the whole
/// attention's with zero gradient at the other queries.
#[test]
fn training_through_the_picked_tokens_gives_the_whole_passs_gradients() {
    use candle_core::Tensor;
    for (name, pooling) in [
        ("tiny-qwen3-st", PoolingMode::LastToken),
        ("tiny-modernbert-st", PoolingMode::Cls),
        ("tiny-modernbert-st", PoolingMode::LastToken),
    ] {
        let what = format!("{name}, {pooling}");
        let mut enc = load(&fixture(name), pooling, Precision::F32);
        enc.set_trainable();
        let (input, at) = batch_and_picks(&enc, pooling);
        let t = enc.transformer();
        let mode = Mode::train_without_dropout();
        let loss = |v: &Tensor| {
            let n = v.elem_count();
            let w: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let w = Tensor::from_vec(w, v.shape(), v.device()).unwrap();
            (v * w).unwrap().sum_all().unwrap()
        };
        let picked = t
            .forward_at(&input, mode, &at)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: a training pass picks"));
        let seq = input.ids.dims()[1];
        let index: Vec<u32> = at
            .iter()
            .enumerate()
            .map(|(r, &i)| (r * seq + i) as u32)
            .collect();
        let index = Tensor::from_vec(index, at.len(), picked.device()).unwrap();
        let whole = t.forward(&input, mode).unwrap();
        let hidden = whole.dims()[2];
        let whole = whole
            .reshape((SENTENCES.len() * seq, hidden))
            .unwrap()
            .index_select(&index, 0)
            .unwrap();
        let a: Vec<Vec<f32>> = picked.to_vec2().unwrap();
        let b: Vec<Vec<f32>> = whole.to_vec2().unwrap();
        assert_close(&a, &b, 1e-5, &format!("{what}: vectors"));
        let ours = loss(&picked).backward().unwrap();
        let theirs = loss(&whole).backward().unwrap();
        let mut compared = 0;
        for var in t.varmap().all_vars() {
            let var = var.as_tensor();
            let (Some(g), Some(want)) = (ours.get(var), theirs.get(var)) else {
                assert!(
                    ours.get(var).is_none() && theirs.get(var).is_none(),
                    "{what}: a weight one pass reached and the other did not"
                );
                continue;
            };
            let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
            let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let diff = g
                .iter()
                .zip(&want)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                diff <= 1e-5 * scale,
                "{what}: a weight's gradient differs by {diff} (scale {scale})"
            );
            compared += 1;
        }
        assert!(compared > 10, "{what}: {compared} gradients compared");
    }
}
