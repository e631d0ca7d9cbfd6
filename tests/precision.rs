//! `--precision int8` against float32: every sentence vector of the MiniLM fixture sentences
//! (`minilm_reference.json`) and of 200 STS-B dev pairs keeps a cosine above 0.99 with its f32
//! vector, and the STS-B pairs' similarity ranking barely moves; the families without an int8
//! path refuse it by name. The float32 path is untouched (the parity tests hold it).

mod common;

use common::*;
use sbert_tui::analysis::similarity::cosine;
use sbert_tui::model::{LoadOptions, Precision, SentenceEncoder};

fn load(dir: &std::path::Path, precision: Precision) -> SentenceEncoder {
    SentenceEncoder::load(
        dir,
        &LoadOptions {
            precision,
            ..Default::default()
        },
    )
    .unwrap()
}

fn worst_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| cosine(x, y))
        .fold(1.0, f32::min)
}

#[test]
fn int8_minilm_vectors_stay_within_cosine_0_99_of_f32() {
    let r = json("minilm_reference.json");
    let sentences = strings(&r["sentences"]);
    let f32_enc = minilm();
    let int8 = load(&minilm_dir(), Precision::Int8);
    assert_eq!(int8.info().precision, Precision::Int8);
    let exact = f32_enc.encode(&sentences, 32, &mut |_, _| {}).unwrap();
    let got = int8.encode(&sentences, 32, &mut |_, _| {}).unwrap();
    let worst = worst_cosine(&exact, &got);
    assert!(worst > 0.99, "worst cosine {worst}");
    // Quantised, not the f32 path under another name.
    assert!(worst < 0.99999, "int8 gave the f32 vectors");
    // One sentence alone (the latency path) and in a batch agree within rounding.
    let one = int8.encode(&sentences[..1], 1, &mut |_, _| {}).unwrap();
    assert!(cosine(&one[0], &got[0]) > 0.9999);

    // STS-B dev pairs: each vector near its f32 one, and the cosines ranked alike.
    let r = json("minilm_stsb_dev200.json");
    let (s1, s2) = (strings(&r["sentence1"]), strings(&r["sentence2"]));
    let mut scores = [Vec::new(), Vec::new()];
    for (i, enc) in [&f32_enc, &int8].into_iter().enumerate() {
        let a = enc.encode(&s1, 32, &mut |_, _| {}).unwrap();
        let b = enc.encode(&s2, 32, &mut |_, _| {}).unwrap();
        scores[i] = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).collect();
        if i == 1 {
            let exact_a = f32_enc.encode(&s1, 32, &mut |_, _| {}).unwrap();
            assert!(worst_cosine(&exact_a, &a) > 0.99);
        }
    }
    let drift = scores[0]
        .iter()
        .zip(&scores[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(drift < 0.03, "pair cosine moved by {drift}");
}

#[test]
fn int8_runs_for_the_bert_family_and_is_refused_elsewhere() {
    for name in ["tiny-bert-st", "tiny-distilbert-st", "tiny-mpnet-st"] {
        let exact = load(&fixture(name), Precision::F32);
        let int8 = load(&fixture(name), Precision::Int8);
        let s = ["A man is playing a guitar.", "Ein Hund läuft im Park."];
        let a = exact.encode(&s, 8, &mut |_, _| {}).unwrap();
        let b = int8.encode(&s, 8, &mut |_, _| {}).unwrap();
        let worst = worst_cosine(&a, &b);
        assert!(worst > 0.99, "{name}: {worst}");
    }
    for name in ["tiny-t5-st", "tiny-modernbert-st", "tiny-qwen3-st"] {
        let err = SentenceEncoder::load(
            &fixture(name),
            &LoadOptions {
                precision: Precision::Int8,
                ..Default::default()
            },
        )
        .err()
        .unwrap_or_else(|| panic!("{name}: int8 accepted"))
        .to_string();
        assert!(
            err.contains("--precision int8 covers the BERT family"),
            "{err}"
        );
    }
    assert!(
        "bf16"
            .parse::<Precision>()
            .unwrap_err()
            .contains("not implemented")
    );
}
