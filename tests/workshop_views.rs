//! The model-side numbers behind the workshop's demonstrations: one text through the whole
//! pipeline (`SentenceEncoder::pipeline`) and SimCSE's dropout copies
//! (`SentenceEncoder::dropout_views`). Every expected value is derived from the encoder's own
//! `encode` / tokenizer, which the parity tests tie to the Python library.

mod common;

use common::*;
use sbert_tui::model::pooling::PoolingMode;
use sbert_tui::model::{LoadOptions, PoolingSpec, Prompt, SentenceEncoder};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

fn check_pipeline(enc: &SentenceEncoder, text: &str) {
    let p = enc.pipeline(text, &Prompt::ModelDefault).unwrap();
    let want = enc.encode(&[text], 1, &mut |_, _| {}).unwrap().remove(0);
    let last = &p.stages.last().unwrap().1;
    let diff = last
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-5,
        "{text:?}: final vector differs from encode by {diff}"
    );
    let pieces: Vec<String> = p.tokens.iter().map(|t| t.piece.clone()).collect();
    assert_eq!(pieces, enc.tokenizer().tokens(text).unwrap(), "{text:?}");
    let tokenized = enc.tokenize(&[text]).unwrap().remove(0);
    let ids: Vec<u32> = p.tokens.iter().map(|t| t.id).collect();
    assert_eq!(ids, tokenized.ids);
    assert_eq!(
        p.tokens.iter().filter(|t| t.unknown).count(),
        tokenized.unknown
    );
    let hidden = enc.info().hidden_size;
    assert!(p.tokens.iter().all(|t| t.vector.len() == hidden));
    // Mean pooling: every token the same weight, 1/n.
    let n = p.tokens.len() as f32;
    for t in &p.tokens {
        assert!((t.weight.unwrap() - 1.0 / n).abs() < 1e-6, "{t:?}");
    }
    // Pooling's output is the weighted sum of the token vectors it shows.
    let pooled = &p.stages[0].1;
    for (d, &want) in pooled.iter().enumerate().take(hidden) {
        let sum: f32 = p
            .tokens
            .iter()
            .map(|t| t.weight.unwrap() * t.vector[d])
            .sum();
        assert!((sum - want).abs() < 1e-4, "dimension {d}");
    }
}

#[test]
fn the_pipeline_ends_in_the_encoded_vector_tiny() {
    let enc = tiny();
    for text in ["A man is playing a guitar.", "", "机器学习是我的爱好。"] {
        check_pipeline(&enc, text);
    }
    let p = enc
        .pipeline("A man is playing a guitar.", &Prompt::None)
        .unwrap();
    let names: Vec<&str> = p.stages.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names[0], "pooling mean");
    assert!(p.tokens[0].special && p.tokens.last().unwrap().special);
    assert!(!p.truncated && p.dropped == 0);
}

#[test]
fn the_pipeline_ends_in_the_encoded_vector_minilm() {
    let enc = minilm();
    for text in [
        "A man is playing a guitar.",
        "A man is not playing a guitar.",
        "机器学习是我的爱好。",
    ] {
        check_pipeline(&enc, text);
    }
    // all-MiniLM-L6-v2: mean pooling, then Normalize; the last stage is a unit vector.
    let p = enc.pipeline("机器学习是我的爱好。", &Prompt::None).unwrap();
    let names: Vec<&str> = p.stages.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["pooling mean", "normalize"]);
    let norm: f32 = p.stages[1].1.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    // Its English vocabulary has no piece for most of these characters.
    let unknown = p.tokens.iter().filter(|t| t.unknown).count();
    assert!(unknown >= 5, "{:?}", p.tokens);
}

#[test]
fn the_pipeline_says_where_a_long_text_was_cut() {
    let options = LoadOptions {
        max_seq_length: Some(8),
        ..LoadOptions::default()
    };
    let enc = SentenceEncoder::load(&fixture("tiny-bert-st"), &options).unwrap();
    let text = "one two three four five six seven eight nine ten";
    let full = tiny().tokenize(&[text]).unwrap().remove(0);
    let p = enc.pipeline(text, &Prompt::None).unwrap();
    assert!(p.truncated);
    assert_eq!(p.tokens.len(), 8);
    assert_eq!(p.max_seq_length, 8);
    // 8 kept = [CLS] + 6 pieces + [SEP]; the rest of the text's pieces were dropped.
    assert_eq!(full.ids.len(), 12);
    assert_eq!(p.dropped, 4);
    check_pipeline(&enc, text);
}

#[test]
fn token_weights_follow_the_pooling_mode() {
    let mut enc = tiny();
    let text = "A man is playing a guitar.";
    enc.set_pooling(PoolingSpec::single(PoolingMode::Cls))
        .unwrap();
    let p = enc.pipeline(text, &Prompt::None).unwrap();
    let w: Vec<f32> = p.tokens.iter().map(|t| t.weight.unwrap()).collect();
    assert_eq!(w[0], 1.0);
    assert!(w[1..].iter().all(|&x| x == 0.0));

    enc.set_pooling(PoolingSpec::single(PoolingMode::Attention))
        .unwrap();
    let p = enc.pipeline(text, &Prompt::None).unwrap();
    let sum: f32 = p.tokens.iter().map(|t| t.weight.unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-5);
    let want = enc
        .encode_pooled(&[text], &PoolingSpec::single(PoolingMode::Attention), 1)
        .unwrap()
        .remove(0);
    assert!(cosine(&p.stages[0].1, &want) > 0.99999);

    enc.set_pooling(PoolingSpec::single(PoolingMode::Max))
        .unwrap();
    let p = enc.pipeline(text, &Prompt::None).unwrap();
    let sum: f32 = p.tokens.iter().map(|t| t.weight.unwrap()).sum();
    assert!(
        (sum - 1.0).abs() < 1e-5,
        "max: the shares of dimensions add to 1"
    );
}

#[test]
fn dropout_copies_differ_from_each_other_and_repeat_with_the_seed() {
    let enc = minilm();
    let text = "A man is playing a guitar.";
    let views = enc.dropout_views(text, &Prompt::None, 8, 42).unwrap();
    assert_eq!(views.len(), 8);
    for i in 0..8 {
        for j in i + 1..8 {
            assert_ne!(views[i], views[j], "copies {i} and {j} are identical");
        }
    }
    assert_eq!(
        views,
        enc.dropout_views(text, &Prompt::None, 8, 42).unwrap()
    );
    assert_ne!(
        views,
        enc.dropout_views(text, &Prompt::None, 8, 43).unwrap()
    );
    // Dropout is noise around the evaluation-mode vector, not a different sentence.
    let eval = enc.encode(&[text], 1, &mut |_, _| {}).unwrap().remove(0);
    for v in &views {
        let c = cosine(v, &eval);
        assert!(c > 0.8 && c < 0.99999, "cosine with the eval vector {c}");
    }
}
