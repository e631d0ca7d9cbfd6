//! A half-precision (IEEE f16) copy of a corpus, for a first pass of exact single-query search
//! that reads half the memory.
//!
//! Scoring one query against a large corpus reads every corpus vector once; at 100,000 x 384
//! that is 150 MB of f32 per query, and memory bandwidth, not arithmetic, sets the time. This
//! copy is 2 bytes a value. [`HalfCorpus::scores`] gives dot products of an f32 query with the
//! f16 rows (widened in registers, summed in f32), and [`HalfCorpus::margin`] a bound on how far
//! such a score can lie from the f32 score of the same row. The search keeps every row whose
//! half score is within twice that bound of the `k`-th best, and scores those again in f32: the
//! result is the f32 search's, ids, order and scores (see `search::ExactIndex`).
//!
//! Only on x86-64 CPUs with AVX2, FMA and F16C (every AMD Zen and Intel Xeon since Haswell):
//! elsewhere [`HalfCorpus::new`] declines and the search reads f32.

use super::embeddings::Embeddings;

/// Unit roundoff of f16 (10 stored mantissa bits): a value rounds with relative error at most
/// this, within the normal range.
const F16_ROUNDOFF: f32 = 1.0 / 2048.0;
/// Largest absolute error of rounding a value in the f16 subnormal range (half its spacing).
const F16_SUBNORMAL_ERROR: f32 = 1.0 / (1u64 << 25) as f32;
/// Values larger than this in magnitude are not stored in f16 (its largest finite is 65504).
const F16_SAFE_MAX: f32 = 60000.0;

/// Rows of a corpus in f16, with what the error bound needs.
pub struct HalfCorpus {
    bits: Vec<u16>,
    dim: usize,
    /// The largest euclidean norm of a corpus row.
    max_norm: f32,
}

impl std::fmt::Debug for HalfCorpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HalfCorpus")
            .field("rows", &self.len())
            .field("dim", &self.dim)
            .field("max_norm", &self.max_norm)
            .finish()
    }
}

impl HalfCorpus {
    /// The f16 copy of `corpus`; `None` where the CPU lacks the instructions, or a value is not
    /// finite or too large for f16.
    pub fn new(corpus: &Embeddings) -> Option<HalfCorpus> {
        if !supported() || corpus.is_empty() || corpus.dim() == 0 {
            return None;
        }
        let flat = corpus.as_flat();
        if flat
            .iter()
            .any(|x| !x.is_finite() || x.abs() > F16_SAFE_MAX)
        {
            return None;
        }
        let bits = flat
            .iter()
            .map(|&x| half::f16::from_f32(x).to_bits())
            .collect();
        let max_norm = corpus
            .rows()
            .map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt())
            .fold(0f32, f32::max);
        Some(HalfCorpus {
            bits,
            dim: corpus.dim(),
            max_norm,
        })
    }

    pub fn len(&self) -> usize {
        self.bits.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 2
    }

    /// A bound on `|half score - f32 score|` of any row for a query of euclidean norm
    /// `query_norm`, where the f32 score is a dot product summed in f32 in any order.
    ///
    /// Rounding a row to f16 moves each value by at most `u |x_i|` (normal range) or
    /// `2^-25` (subnormal), so the exact dot moves by at most `u |q| |x| + 2^-25 sum |q_i|`
    /// (Cauchy-Schwarz). Each f32 sum of `d` products is within `d 2^-24 |q| |x|` of its exact
    /// value (to first order), and there are two sums; the bound takes them with room to spare.
    pub fn margin(&self, query_norm: f32) -> f32 {
        let d = self.dim as f32;
        let sum_err = 2.0 * d * f32::EPSILON / 2.0 * (1.0 + F16_ROUNDOFF);
        let scale = query_norm * self.max_norm;
        let bound = scale * (F16_ROUNDOFF + sum_err) + F16_SUBNORMAL_ERROR * d.sqrt() * query_norm;
        // Room for the first-order terms left out, and for the f32 arithmetic of the bound.
        bound * 1.25 + f32::MIN_POSITIVE
    }

    /// `out[j] = query · row(rows.start + j)` with the row widened from f16, summed in f32.
    pub fn scores(&self, query: &[f32], rows: std::ops::Range<usize>, out: &mut Vec<f32>) {
        assert_eq!(query.len(), self.dim, "query of another dimension");
        assert!(rows.end <= self.len(), "rows past the end of the corpus");
        out.clear();
        out.resize(rows.len(), 0.0);
        let data = &self.bits[rows.start * self.dim..rows.end * self.dim];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `HalfCorpus` exists only where `supported()` found AVX2, FMA and F16C.
        unsafe {
            x86::scores(query, data, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = data;
            unreachable!("HalfCorpus::new declines on this architecture")
        }
    }
}

fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::analysis::simd::x86::sum_lanes;

    /// Dot products of `query` with every row of `data` (rows of `query.len()` f16 values).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores(query: &[f32], data: &[u16], out: &mut [f32]) {
        let dim = query.len();
        let q = query.as_ptr();
        for (row, out) in data.chunks_exact(dim).zip(out.iter_mut()) {
            let x = row.as_ptr();
            // SAFETY (all loads): every offset read is below `dim`, inside the query and the
            // row; the caller has checked the CPU features.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                while i + 32 <= dim {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let h = _mm_loadu_si128(x.add(i + 8 * j) as *const __m128i);
                        let v = _mm256_cvtph_ps(h);
                        *acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i + 8 * j)), v, *acc);
                    }
                    i += 32;
                }
                while i + 8 <= dim {
                    let h = _mm_loadu_si128(x.add(i) as *const __m128i);
                    acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i)), _mm256_cvtph_ps(h), acc[0]);
                    i += 8;
                }
                let mut total = sum_lanes(acc);
                while i < dim {
                    total += *q.add(i) * half::f16::from_bits(*x.add(i)).to_f32();
                    i += 1;
                }
                *out = total;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn half_scores_stay_within_the_margin_of_f32_scores() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Odd dimension (a scalar tail), values over several magnitudes, some subnormal in f16.
        for dim in [1, 7, 40, 384, 397] {
            let rows: Vec<Vec<f32>> = (0..300)
                .map(|r| {
                    (0..dim)
                        .map(|i| {
                            let scale = [1e-6, 1e-3, 1.0, 30.0][(r + i) % 4];
                            scale * rng.random_range(-1.0..1.0f32)
                        })
                        .collect()
                })
                .collect();
            let corpus = Embeddings::from_rows(&rows);
            let Some(half) = HalfCorpus::new(&corpus) else {
                assert!(!supported());
                return;
            };
            assert_eq!((half.len(), half.bytes()), (300, 300 * dim * 2));
            let q: Vec<f32> = (0..dim).map(|_| rng.random_range(-2.0..2.0f32)).collect();
            let norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
            let m = half.margin(norm);
            let mut got = Vec::new();
            half.scores(&q, 10..300, &mut got);
            assert_eq!(got.len(), 290);
            let mut worst = 0f32;
            for (j, g) in got.iter().enumerate() {
                let exact: f64 = q
                    .iter()
                    .zip(&rows[10 + j])
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                let f32_sum: f32 = q.iter().zip(&rows[10 + j]).map(|(a, b)| a * b).sum();
                assert!(
                    ((*g as f64) - exact).abs() <= m as f64 / 2.0,
                    "dim {dim} row {j}"
                );
                worst = worst.max((g - f32_sum).abs() / m);
            }
            // The bound is not vacuous: the largest error is a visible share of it.
            assert!(worst > 1e-3, "dim {dim}: worst error {worst} of the margin");
        }
    }

    #[test]
    fn declines_values_f16_cannot_hold() {
        let big = Embeddings::from_rows(&[vec![1.0f32, 7e4]]);
        assert!(HalfCorpus::new(&big).is_none());
        let nan = Embeddings::from_rows(&[vec![1.0f32, f32::NAN]]);
        assert!(HalfCorpus::new(&nan).is_none());
    }
}
