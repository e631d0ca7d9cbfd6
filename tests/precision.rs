//! `--precision int8` and `--precision bf16` against float32: every sentence vector of the MiniLM
//! fixture sentences (`minilm_reference.json`) and of 200 STS-B dev pairs keeps a cosine above
//! 0.99 with its f32 vector (bf16: above 0.999), and the STS-B pairs' similarity scores barely
//! move; every family's tiny fixture keeps those bounds. The float32 path is untouched (the
//! parity tests hold it).

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

/// The worst cosine each reduced precision may have with the f32 vectors, and the most a pair's
/// cosine may move. bf16 keeps 8 significant bits of every value, int8 about 7 of each weight
/// and 8 of each activation row's range, with one scale per row.
const BOUNDS: [(Precision, f32, f32); 2] = [
    (Precision::Int8, 0.99, 0.03),
    (Precision::Bf16, 0.9995, 0.005),
];

#[test]
fn reduced_precision_minilm_vectors_stay_near_f32() {
    let r = json("minilm_reference.json");
    let sentences = strings(&r["sentences"]);
    let dev = json("minilm_stsb_dev200.json");
    let (s1, s2) = (strings(&dev["sentence1"]), strings(&dev["sentence2"]));
    let f32_enc = minilm();
    let exact = f32_enc.encode(&sentences, 32, &mut |_, _| {}).unwrap();
    let exact_a = f32_enc.encode(&s1, 32, &mut |_, _| {}).unwrap();
    let exact_b = f32_enc.encode(&s2, 32, &mut |_, _| {}).unwrap();
    let exact_scores: Vec<f32> = exact_a
        .iter()
        .zip(&exact_b)
        .map(|(x, y)| cosine(x, y))
        .collect();
    for (precision, bound, max_drift) in BOUNDS {
        let low = load(&minilm_dir(), precision);
        assert_eq!(low.info().precision, precision);
        let got = low.encode(&sentences, 32, &mut |_, _| {}).unwrap();
        let worst = worst_cosine(&exact, &got);
        assert!(worst > bound, "{precision}: worst cosine {worst}");
        // Reduced, not the f32 path under another name.
        assert!(worst < 0.99999, "{precision} gave the f32 vectors");
        // One sentence alone (the latency path) and in a batch agree within rounding.
        let one = low.encode(&sentences[..1], 1, &mut |_, _| {}).unwrap();
        assert!(cosine(&one[0], &got[0]) > 0.9999, "{precision}");

        // STS-B dev pairs: each vector near its f32 one, and the pairs' cosines barely moved.
        let a = low.encode(&s1, 32, &mut |_, _| {}).unwrap();
        let b = low.encode(&s2, 32, &mut |_, _| {}).unwrap();
        assert!(worst_cosine(&exact_a, &a) > bound, "{precision}");
        let drift = exact_scores
            .iter()
            .zip(a.iter().zip(&b))
            .map(|(e, (x, y))| (e - cosine(x, y)).abs())
            .fold(0f32, f32::max);
        assert!(
            drift < max_drift,
            "{precision}: pair cosine moved by {drift}"
        );
        eprintln!("{precision}: worst cosine {worst}, largest pair drift {drift}");
    }
}

#[test]
fn reduced_precision_runs_for_every_family() {
    for (precision, bound, _) in BOUNDS {
        for name in [
            "tiny-bert-st",
            "tiny-distilbert-st",
            "tiny-mpnet-st",
            "tiny-t5-st",
            "tiny-t5-encdec-st",
            "tiny-modernbert-st",
            "tiny-qwen3-st",
        ] {
            let exact = load(&fixture(name), Precision::F32);
            let low = load(&fixture(name), precision);
            assert_eq!(low.info().precision, precision, "{name}");
            let s = ["A man is playing a guitar.", "Ein Hund läuft im Park."];
            let a = exact.encode(&s, 8, &mut |_, _| {}).unwrap();
            let b = low.encode(&s, 8, &mut |_, _| {}).unwrap();
            let worst = worst_cosine(&a, &b);
            assert!(worst > bound, "{name} {precision}: {worst}");
            // The reduced path ran: not the float32 vectors.
            assert_ne!(a, b, "{name} {precision} gave the f32 vectors");
        }
    }
    assert!(
        "fp16"
            .parse::<Precision>()
            .unwrap_err()
            .contains("f32, bf16 or int8")
    );
}
