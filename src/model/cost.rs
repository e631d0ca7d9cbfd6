//! What a bi-encoder saves over a cross-encoder, measured on the model at hand: N transformer
//! passes (one per sentence) plus N² dot products, against N(N-1)/2 passes over the pairs (a
//! cross-encoder reads each pair together; here the same transformer reads each pair's two texts
//! joined, which costs what a cross-encoder of this size costs). Both are timed now and
//! extrapolated to 10,000 sentences.

use std::time::Instant;

use super::encoder::{Prompt, SentenceEncoder};
use super::error::Result;

/// The sentence count the measurement is extrapolated to.
pub const EXTRAPOLATE_TO: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct CostReport {
    /// Sentences measured.
    pub n: usize,
    /// Transformer passes of the bi-encoder: one per sentence.
    pub bi_passes: usize,
    /// Seconds for those passes.
    pub bi_seconds: f64,
    /// Seconds for the N² dot products of the similarity matrix (one matrix product).
    pub dot_seconds: f64,
    /// Passes a cross-encoder needs: N(N-1)/2.
    pub cross_passes: usize,
    /// Pairs actually run (at most `max_pairs`; the rest is extrapolated from them).
    pub cross_measured: usize,
    /// Seconds for all N(N-1)/2 pairs (measured, or extrapolated from `cross_measured`).
    pub cross_seconds: f64,
    /// Seconds extrapolated to [`EXTRAPOLATE_TO`] sentences.
    pub bi_seconds_10k: f64,
    pub cross_seconds_10k: f64,
}

/// Times both ways on `texts` (at least two), running at most `max_pairs` pairs.
pub fn measure(
    enc: &SentenceEncoder,
    texts: &[String],
    prompt: &Prompt,
    max_pairs: usize,
) -> Result<CostReport> {
    let n = texts.len();
    let start = Instant::now();
    let tokenized = enc.tokenize_prompted(texts, prompt)?;
    let vectors = enc.encode_tokenized(&tokenized, 32, &mut |_, _| {})?;
    let bi_seconds = start.elapsed().as_secs_f64();

    // The N² dot products as one matrix product (as a search does), timed on a 1,024 × 1,024
    // product of the vectors over again: a few dozen are too quick for the clock.
    const M: usize = 1024;
    let dim = vectors.first().map_or(0, Vec::len);
    let flat: Vec<f32> = vectors.iter().cycle().take(M).flatten().copied().collect();
    let m = candle_core::Tensor::from_vec(flat, (M, dim), &candle_core::Device::Cpu)?;
    let start = Instant::now();
    let product = m.matmul(&m.t()?)?;
    std::hint::black_box(product.sum_all()?.to_scalar::<f32>()?);
    let per_dot = start.elapsed().as_secs_f64() / (M * M) as f64;
    let dot_seconds = per_dot * (n * n) as f64;

    let cross_passes = n * n.saturating_sub(1) / 2;
    let pairs: Vec<String> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .take(max_pairs)
        .map(|(i, j)| format!("{} {}", texts[i], texts[j]))
        .collect();
    let start = Instant::now();
    let tokenized = enc.tokenize_prompted(&pairs, prompt)?;
    enc.encode_tokenized(&tokenized, 32, &mut |_, _| {})?;
    let measured_seconds = start.elapsed().as_secs_f64();
    let per_pair = measured_seconds / pairs.len().max(1) as f64;

    let big = EXTRAPOLATE_TO as f64;
    // The time per sentence at scale: a handful of sentences fills no batch, so time at least
    // 256 (the sentences over again).
    let per_sentence = if n >= 256 {
        bi_seconds / n as f64
    } else {
        let many: Vec<&String> = texts.iter().cycle().take(256).collect();
        let start = Instant::now();
        let tokenized = enc.tokenize_prompted(&many, prompt)?;
        enc.encode_tokenized(&tokenized, 32, &mut |_, _| {})?;
        start.elapsed().as_secs_f64() / 256.0
    };
    Ok(CostReport {
        n,
        bi_passes: n,
        bi_seconds,
        dot_seconds,
        cross_passes,
        cross_measured: pairs.len(),
        cross_seconds: per_pair * cross_passes as f64,
        bi_seconds_10k: per_sentence * big + per_dot * big * big,
        cross_seconds_10k: per_pair * big * (big - 1.0) / 2.0,
    })
}
