//! What a bi-encoder saves over a cross-encoder, measured on the model at hand: N transformer
//! passes (one per sentence) plus N² dot products, against N(N-1)/2 passes over the pairs (a
//! cross-encoder reads each pair together; here the same transformer reads each pair's two texts
//! joined, which costs what a cross-encoder of this size costs). Both are timed now and
//! extrapolated to 10,000 sentences. Given a real cross-encoder ([`measure_with_cross`]), its
//! passes over the same pairs are timed too, and its score of each pair is kept next to the
//! bi-encoder's similarity.

use std::time::Instant;

use super::cross_encoder::CrossEncoder;
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
    /// The real cross-encoder's measurement, when one was given.
    pub cross_encoder: Option<CrossEncoderCost>,
}

/// A real cross-encoder over the same pairs as the simulated pass.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEncoderCost {
    /// Its folder's name.
    pub model: String,
    /// Its label names: each pair has one score per label.
    pub labels: Vec<String>,
    /// Pairs it ran (those of `cross_measured`).
    pub measured: usize,
    /// Seconds for those pairs (tokenization included).
    pub measured_seconds: f64,
    /// Seconds for all N(N-1)/2 pairs, extrapolated from `measured`.
    pub seconds: f64,
    /// Seconds extrapolated to [`EXTRAPOLATE_TO`] sentences.
    pub seconds_10k: f64,
    /// Every pair it ran, in the order (0, 1), (0, 2), ..., (1, 2), ...
    pub pairs: Vec<PairScore>,
}

/// One pair: the cross-encoder's scores and the bi-encoder's similarity.
#[derive(Debug, Clone, PartialEq)]
pub struct PairScore {
    /// Indices of the two sentences, `i < j`.
    pub i: usize,
    pub j: usize,
    /// The cross-encoder's scores (after its activation, as `CrossEncoder.predict`), one per
    /// label.
    pub cross: Vec<f32>,
    /// The bi-encoder's similarity of the two sentences (the model's similarity function:
    /// cosine for most models).
    pub bi: f32,
}

impl CrossEncoderCost {
    /// The `k` pairs with the highest cross-encoder score for `label` (0 for a one-label
    /// model), best first.
    pub fn top(&self, label: usize, k: usize) -> Vec<&PairScore> {
        let score = |p: &PairScore| p.cross.get(label).copied().unwrap_or(f32::NEG_INFINITY);
        let mut pairs: Vec<&PairScore> = self.pairs.iter().collect();
        pairs.sort_by(|a, b| score(b).total_cmp(&score(a)));
        pairs.truncate(k);
        pairs
    }
}

/// Times both ways on `texts` (at least two), running at most `max_pairs` pairs.
pub fn measure(
    enc: &SentenceEncoder,
    texts: &[String],
    prompt: &Prompt,
    max_pairs: usize,
) -> Result<CostReport> {
    measure_with_cross(enc, texts, prompt, max_pairs, None)
}

/// [`measure`], and when `cross` is given, that cross-encoder over the same (at most
/// `max_pairs`) pairs: timed, extrapolated, and its scores kept (`cross_encoder`).
pub fn measure_with_cross(
    enc: &SentenceEncoder,
    texts: &[String],
    prompt: &Prompt,
    max_pairs: usize,
    cross: Option<&CrossEncoder>,
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
    let indices: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .take(max_pairs)
        .collect();
    let pairs: Vec<String> = indices
        .iter()
        .map(|&(i, j)| format!("{} {}", texts[i], texts[j]))
        .collect();
    let start = Instant::now();
    let tokenized = enc.tokenize_prompted(&pairs, prompt)?;
    enc.encode_tokenized(&tokenized, 32, &mut |_, _| {})?;
    let measured_seconds = start.elapsed().as_secs_f64();
    let per_pair = measured_seconds / pairs.len().max(1) as f64;

    let big = EXTRAPOLATE_TO as f64;
    let cross_encoder = match cross {
        None => None,
        Some(ce) => {
            let text_pairs: Vec<(&str, &str)> = indices
                .iter()
                .map(|&(i, j)| (texts[i].as_str(), texts[j].as_str()))
                .collect();
            let start = Instant::now();
            let scores = ce.predict_with(&text_pairs, 32, &mut |_, _| {})?;
            let measured_seconds = start.elapsed().as_secs_f64();
            let per_pair = measured_seconds / indices.len().max(1) as f64;
            let sim = enc.info().similarity;
            Some(CrossEncoderCost {
                model: ce.info().name(),
                labels: ce.info().labels.clone(),
                measured: indices.len(),
                measured_seconds,
                seconds: per_pair * cross_passes as f64,
                seconds_10k: per_pair * big * (big - 1.0) / 2.0,
                pairs: indices
                    .iter()
                    .zip(scores)
                    .map(|(&(i, j), cross)| PairScore {
                        i,
                        j,
                        cross,
                        bi: sim.score(&vectors[i], &vectors[j]),
                    })
                    .collect(),
            })
        }
    };
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
        cross_encoder,
    })
}
