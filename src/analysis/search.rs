//! Exact semantic search: every query against every corpus vector, the best `k` kept. What the
//! Python library's `util.semantic_search` returns.
//!
//! Two ways in: [`top_k`] on rows of `Vec<f32>` (scores accumulated in f64, one query per
//! thread), and [`ExactIndex`] / [`top_k_flat`] on [`Embeddings`] at corpus scale. There one or a
//! few queries are scored row by row with SIMD kernels, the corpus cut into chunks spread over
//! the machine's threads (the corpus is read once, at memory speed); more queries get their
//! scores in blocks from matrix products ([`Embeddings::score_block`]), spread over blocks of
//! queries. The best `k` of each query are kept by a bounded selection that rejects a score with
//! one comparison when it cannot enter. Same ids as [`top_k`]; scores equal within f32 rounding.

use std::cmp::Ordering;

use rayon::prelude::*;

use super::embeddings::Embeddings;
use super::halfscan::HalfCorpus;
use super::similarity::Similarity;

/// One hit: the corpus row and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub corpus_id: usize,
    pub score: f32,
}

/// Best first: higher score, then lower corpus row.
fn order(a: &Hit, b: &Hit) -> Ordering {
    b.score
        .total_cmp(&a.score)
        .then(a.corpus_id.cmp(&b.corpus_id))
}

/// For each query, the `k` corpus vectors with the highest `sim` score, best first; equal scores
/// by corpus row. Unit-length vectors make cosine a dot product; the model's similarity
/// function is used as it is.
pub fn top_k(
    queries: &[Vec<f32>],
    corpus: &[Vec<f32>],
    k: usize,
    sim: Similarity,
) -> Vec<Vec<Hit>> {
    let k = k.min(corpus.len());
    queries
        .par_iter()
        .map(|q| {
            let mut hits: Vec<Hit> = corpus
                .iter()
                .enumerate()
                .map(|(i, c)| Hit {
                    corpus_id: i,
                    score: sim.score(q, c),
                })
                .collect();
            if k > 0 && k < hits.len() {
                hits.select_nth_unstable_by(k - 1, order);
                hits.truncate(k);
            }
            hits.sort_by(order);
            hits.truncate(k);
            hits
        })
        .collect()
}

/// [`top_k`] on flat sets of vectors: for each query, the `k` best corpus rows under `sim`, best
/// first, equal scores by corpus row. For cosine the corpus is normalised (copied) on every
/// call: to search one corpus many times build an [`ExactIndex`] once.
pub fn top_k_flat(
    queries: &Embeddings,
    corpus: &Embeddings,
    k: usize,
    sim: Similarity,
) -> Vec<Vec<Hit>> {
    match sim {
        // No f16 copy: it would be built for this one call.
        Similarity::Cosine => ExactIndex {
            sim,
            corpus: corpus.normalized(),
            half: None,
        }
        .search_many(queries, k),
        _ => search_prepared(sim, corpus, queries, k),
    }
}

/// A corpus ready for exact search under one similarity: for cosine its rows are normalised
/// once, here, so that every search is one matrix product per block.
///
/// From [`HALF_SCAN_MIN_ROWS`] rows, for cosine and dot, it also holds an f16 copy of the corpus
/// ([`HalfCorpus`], half the memory again) through which single queries (up to
/// [`FEW_QUERIES`]) read the corpus at half the bytes; the rows that might be among the best
/// are scored again in f32, so the hits are the f32 search's exactly.
#[derive(Debug, Clone)]
pub struct ExactIndex {
    sim: Similarity,
    corpus: Embeddings,
    half: Option<std::sync::Arc<HalfCorpus>>,
}

/// Corpora of at least this many rows get the f16 copy for single queries (below it the whole
/// f32 corpus is a few MB and the scan is short anyway).
pub const HALF_SCAN_MIN_ROWS: usize = 16_384;

impl ExactIndex {
    /// Takes the corpus; for cosine normalises its rows (a copy made once).
    pub fn new(corpus: Embeddings, sim: Similarity) -> Self {
        let corpus = if sim == Similarity::Cosine {
            corpus.normalized()
        } else {
            corpus
        };
        Self::from_normalized(corpus, sim)
    }

    /// Takes a corpus whose rows the caller has already normalised (for cosine; for the other
    /// similarities the same as [`ExactIndex::new`]). Rows that are not unit length give scores
    /// that are not cosines.
    pub fn from_normalized(corpus: Embeddings, sim: Similarity) -> Self {
        let index = ExactIndex {
            sim,
            corpus,
            half: None,
        };
        if index.len() >= HALF_SCAN_MIN_ROWS {
            index.with_half_scan()
        } else {
            index
        }
    }

    /// Builds the f16 copy whatever the size (cosine and dot only; none where the CPU lacks
    /// F16C, or a value is too large for f16).
    pub fn with_half_scan(mut self) -> Self {
        if matches!(self.sim, Similarity::Cosine | Similarity::Dot) {
            self.half = HalfCorpus::new(&self.corpus).map(std::sync::Arc::new);
        }
        self
    }

    /// Drops the f16 copy: every search reads the f32 corpus.
    pub fn without_half_scan(mut self) -> Self {
        self.half = None;
        self
    }

    /// Whether single queries go through the f16 copy first.
    pub fn has_half_scan(&self) -> bool {
        self.half.is_some()
    }

    /// Bytes of vectors held: the corpus, and the f16 copy if any.
    pub fn bytes(&self) -> usize {
        self.corpus.as_flat().len() * 4 + self.half.as_ref().map_or(0, |h| h.bytes())
    }

    pub fn similarity(&self) -> Similarity {
        self.sim
    }

    /// The vectors searched (normalised for cosine).
    pub fn corpus(&self) -> &Embeddings {
        &self.corpus
    }

    pub fn len(&self) -> usize {
        self.corpus.len()
    }

    pub fn is_empty(&self) -> bool {
        self.corpus.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.corpus.dim()
    }

    /// The `k` best corpus rows for one query, best first (equal scores by row), in parallel
    /// over chunks of the corpus.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let q = Embeddings::from_rows(&[query]);
        self.search_many(&q, k).pop().unwrap_or_default()
    }

    /// [`ExactIndex::search`] for every row of `queries`.
    pub fn search_many(&self, queries: &Embeddings, k: usize) -> Vec<Vec<Hit>> {
        let normalized;
        let queries = if self.sim == Similarity::Cosine {
            normalized = queries.normalized();
            &normalized
        } else {
            queries
        };
        let k = k.min(self.len());
        if let Some(half) = &self.half
            && (1..=FEW_QUERIES).contains(&queries.len())
            && k > 0
            && queries.dim() == self.dim()
            && queries.as_flat().iter().all(|x| x.is_finite())
        {
            return search_half(half, &self.corpus, queries, k);
        }
        search_prepared(self.sim, &self.corpus, queries, k)
    }
}

/// The best `k` of a stream of scores, seen in increasing corpus row: candidates pile up in a
/// buffer of twice `k` that is cut back to the best `k` when full; once it has been cut, a score
/// no better than the `k`-th best so far is rejected with one comparison (equal scores lose: the
/// row kept is lower).
struct Best {
    k: usize,
    hits: Vec<Hit>,
    floor: Option<f32>,
}

impl Best {
    fn new(k: usize) -> Self {
        Best {
            k,
            hits: Vec::with_capacity(2 * k),
            floor: None,
        }
    }

    #[inline]
    fn offer(&mut self, corpus_id: usize, score: f32) {
        if let Some(floor) = self.floor
            && score.total_cmp(&floor) != Ordering::Greater
        {
            return;
        }
        self.hits.push(Hit { corpus_id, score });
        if self.hits.len() >= 2 * self.k {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.hits.len() > self.k {
            self.hits.select_nth_unstable_by(self.k - 1, order);
            self.hits.truncate(self.k);
            self.floor = Some(self.hits[self.k - 1].score);
        }
    }

    /// Best first.
    fn into_sorted(mut self) -> Vec<Hit> {
        self.cut();
        self.hits.sort_by(order);
        self.hits
    }
}

/// Up to this many queries are scored row by row ([`kernels`]) over chunks of the corpus; more
/// go through matrix products.
const FEW_QUERIES: usize = 8;
/// Corpus rows per task when one or a few queries are spread over threads.
const CORPUS_CHUNK: usize = 2048;
/// Queries per block when many queries are spread over threads.
const QUERY_BLOCK: usize = 64;
/// Corpus rows per matrix product in a block of queries.
const CORPUS_BLOCK: usize = 1024;

/// The search itself: `corpus` and `queries` already normalised for cosine.
fn search_prepared(
    sim: Similarity,
    corpus: &Embeddings,
    queries: &Embeddings,
    k: usize,
) -> Vec<Vec<Hit>> {
    let nq = queries.len();
    let n = corpus.len();
    let k = k.min(n);
    if nq == 0 {
        return Vec::new();
    }
    if k == 0 {
        return vec![Vec::new(); nq];
    }
    assert_eq!(
        queries.dim(),
        corpus.dim(),
        "queries and corpus of different dimensions"
    );
    let dim = corpus.dim();
    let threads = rayon::current_num_threads();
    if nq <= FEW_QUERIES {
        // One or a few queries: a matrix product would pack (copy) the corpus for nothing; each
        // corpus row is read once, from memory, and scored against every query while in cache.
        let kernel = match sim {
            Similarity::Cosine | Similarity::Dot => kernels::dot(),
            Similarity::Euclidean => kernels::sq_l2(),
            Similarity::Manhattan => kernels::l1(),
        };
        let finish = move |raw: f32| match sim {
            Similarity::Cosine | Similarity::Dot => raw,
            Similarity::Euclidean => -raw.sqrt(),
            Similarity::Manhattan => -raw,
        };
        let partial: Vec<Vec<Vec<Hit>>> = (0..n.div_ceil(CORPUS_CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut best: Vec<Best> = (0..nq).map(|_| Best::new(k)).collect();
                for j in c * CORPUS_CHUNK..((c + 1) * CORPUS_CHUNK).min(n) {
                    let row = corpus.row(j);
                    for (q, best) in queries.rows().zip(&mut best) {
                        best.offer(j, finish(kernel(q, row)));
                    }
                }
                best.into_iter().map(Best::into_sorted).collect()
            })
            .collect();
        merge(partial, nq, k)
    } else if nq.div_ceil(QUERY_BLOCK) >= 2 * threads {
        // Many queries: each thread takes whole blocks of queries through the corpus.
        let blocks: Vec<Vec<Vec<Hit>>> = (0..nq.div_ceil(QUERY_BLOCK))
            .into_par_iter()
            .map(|b| {
                let rows = b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(nq);
                let mut best: Vec<Best> = rows.clone().map(|_| Best::new(k)).collect();
                let mut scores = Vec::new();
                for start in (0..n).step_by(CORPUS_BLOCK) {
                    let cols = start..(start + CORPUS_BLOCK).min(n);
                    Embeddings::score_block(
                        sim,
                        queries,
                        rows.clone(),
                        corpus,
                        cols.clone(),
                        &mut scores,
                    );
                    for (line, best) in scores.chunks_exact(cols.len()).zip(&mut best) {
                        for (j, &s) in line.iter().enumerate() {
                            best.offer(start + j, s);
                        }
                    }
                }
                best.into_iter().map(Best::into_sorted).collect()
            })
            .collect();
        blocks.into_iter().flatten().collect()
    } else {
        // Some queries, too few blocks of them to keep every thread busy: the corpus is cut
        // into chunks small enough that one product stays on one thread (about half a million
        // multiply-adds), the chunks spread over threads, and the best of each chunk merged.
        let chunk = ((1usize << 19) / (nq * dim).max(1)).clamp(256, 8192);
        let partial: Vec<Vec<Vec<Hit>>> = (0..n.div_ceil(chunk))
            .into_par_iter()
            .map_init(Vec::new, |scores, c| {
                let cols = c * chunk..((c + 1) * chunk).min(n);
                Embeddings::score_block(sim, queries, 0..nq, corpus, cols.clone(), scores);
                scores
                    .chunks_exact(cols.len())
                    .map(|line| {
                        let mut best = Best::new(k);
                        for (j, &s) in line.iter().enumerate() {
                            best.offer(cols.start + j, s);
                        }
                        best.into_sorted()
                    })
                    .collect()
            })
            .collect();
        merge(partial, nq, k)
    }
}

/// Rows whose score is within `slack` of the `k`-th best seen so far, from a stream of scores:
/// they pile up and are cut back, every time their number doubles, to those within `slack` of
/// the `k`-th best among them.
struct Within {
    k: usize,
    slack: f32,
    hits: Vec<Hit>,
    floor: f32,
    cap: usize,
}

impl Within {
    fn new(k: usize, slack: f32) -> Self {
        Within {
            k,
            slack,
            hits: Vec::with_capacity(4 * k),
            floor: f32::NEG_INFINITY,
            cap: 4 * k,
        }
    }

    #[inline]
    fn offer(&mut self, corpus_id: usize, score: f32) {
        if score < self.floor {
            return;
        }
        self.hits.push(Hit { corpus_id, score });
        if self.hits.len() >= self.cap {
            self.cut();
            self.cap = self.cap.max(2 * self.hits.len());
        }
    }

    fn cut(&mut self) {
        if self.hits.len() > self.k {
            self.hits.select_nth_unstable_by(self.k - 1, order);
            self.floor = self.hits[self.k - 1].score - self.slack;
            let floor = self.floor;
            self.hits.retain(|h| h.score >= floor);
        }
    }
}

/// Single queries through the f16 copy: per chunk of the corpus (in parallel) the rows within
/// twice the [`HalfCorpus::margin`] of the chunk's `k`-th best half score; then, over all
/// chunks, those within twice the margin of the `k`-th best, scored again in f32 with the f32
/// search's own kernel and kept as it keeps them. Every row of the f32 search's best `k` is
/// among them: its half score is at most one margin below its f32 score, and the `k`-th best f32
/// score at most one margin below the `k`-th best half score. So the hits equal the f32
/// search's, scores to the bit. `queries` are normalised for cosine, finite, `1 <= k <= n`.
fn search_half(
    half: &HalfCorpus,
    corpus: &Embeddings,
    queries: &Embeddings,
    k: usize,
) -> Vec<Vec<Hit>> {
    let n = corpus.len();
    let slack: Vec<f32> = queries
        .rows()
        .map(|q| 2.0 * half.margin(q.iter().map(|x| x * x).sum::<f32>().sqrt()))
        .collect();
    let partial: Vec<Vec<Vec<Hit>>> = (0..n.div_ceil(CORPUS_CHUNK))
        .into_par_iter()
        .map_init(Vec::new, |scores, c| {
            let rows = c * CORPUS_CHUNK..((c + 1) * CORPUS_CHUNK).min(n);
            queries
                .rows()
                .zip(&slack)
                .map(|(q, &slack)| {
                    half.scores(q, rows.clone(), scores);
                    let mut within = Within::new(k, slack);
                    for (j, &s) in scores.iter().enumerate() {
                        within.offer(rows.start + j, s);
                    }
                    within.hits
                })
                .collect()
        })
        .collect();
    let kernel = kernels::dot();
    (0..queries.len())
        .map(|qi| {
            let mut candidates: Vec<Hit> =
                partial.iter().flat_map(|p| p[qi].iter().copied()).collect();
            candidates.select_nth_unstable_by(k - 1, order);
            let floor = candidates[k - 1].score - slack[qi];
            candidates.retain(|h| h.score >= floor);
            // In row order, as the f32 search offers them (equal scores keep the lower row).
            candidates.sort_unstable_by_key(|h| h.corpus_id);
            let q = queries.row(qi);
            let mut best = Best::new(k);
            for h in candidates {
                best.offer(h.corpus_id, kernel(q, corpus.row(h.corpus_id)));
            }
            best.into_sorted()
        })
        .collect()
}

/// The best `k` of each query over the best of every chunk (`partial[chunk][query]`).
fn merge(partial: Vec<Vec<Vec<Hit>>>, nq: usize, k: usize) -> Vec<Vec<Hit>> {
    (0..nq)
        .map(|q| {
            let mut hits: Vec<Hit> = partial.iter().flat_map(|p| p[q].iter().copied()).collect();
            hits.sort_by(order);
            hits.truncate(k);
            hits
        })
        .collect()
}

/// Distance kernels over `f32` slices: AVX2 + FMA intrinsics on x86-64 CPUs that have them
/// (picked once, by the caller), else portable loops with several partial sums. Shared by
/// exact search and the approximate HNSW index.
pub(crate) mod kernels {
    pub type Kernel = fn(&[f32], &[f32]) -> f32;

    const LANES: usize = 8;

    #[inline(always)]
    fn fold(a: &[f32], b: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for l in 0..LANES {
                acc[l] = f(acc[l], x[l], y[l]);
            }
        }
        let mut tail = 0f32;
        for (&x, &y) in ra.iter().zip(rb) {
            tail = f(tail, x, y);
        }
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
    }

    fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
        fold(a, b, |s, x, y| s + x * y)
    }

    fn sq_l2_portable(a: &[f32], b: &[f32]) -> f32 {
        fold(a, b, |s, x, y| s + (x - y) * (x - y))
    }

    fn l1_portable(a: &[f32], b: &[f32]) -> f32 {
        fold(a, b, |s, x, y| s + (x - y).abs())
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use std::arch::x86_64::*;

        use crate::analysis::simd::x86::sum_lanes;

        /// Sums `op(acc, x, y)` over 8-wide pieces with four independent accumulators, then the
        /// scalar `tail` over what is left. `op` must be inlined into a `target_feature` caller.
        #[inline(always)]
        unsafe fn fold(
            a: &[f32],
            b: &[f32],
            op: impl Fn(__m256, __m256, __m256) -> __m256,
            tail: impl Fn(f32, f32, f32) -> f32,
        ) -> f32 {
            let n = a.len().min(b.len());
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            // SAFETY (all loads): every offset read is below `n`, inside both slices; the
            // caller has checked that the CPU has AVX2 and FMA.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                while i + 32 <= n {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_loadu_ps(pa.add(i + 8 * j));
                        let y = _mm256_loadu_ps(pb.add(i + 8 * j));
                        *acc = op(*acc, x, y);
                    }
                    i += 32;
                }
                while i + 8 <= n {
                    let x = _mm256_loadu_ps(pa.add(i));
                    let y = _mm256_loadu_ps(pb.add(i));
                    acc[0] = op(acc[0], x, y);
                    i += 8;
                }
                let mut total = sum_lanes(acc);
                while i < n {
                    total = tail(total, *pa.add(i), *pb.add(i));
                    i += 1;
                }
                total
            }
        }

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
            unsafe {
                fold(
                    a,
                    b,
                    |s, x, y| _mm256_fmadd_ps(x, y, s),
                    |s, x, y| s + x * y,
                )
            }
        }

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn sq_l2(a: &[f32], b: &[f32]) -> f32 {
            unsafe {
                fold(
                    a,
                    b,
                    |s, x, y| {
                        let d = _mm256_sub_ps(x, y);
                        _mm256_fmadd_ps(d, d, s)
                    },
                    |s, x, y| s + (x - y) * (x - y),
                )
            }
        }

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn l1(a: &[f32], b: &[f32]) -> f32 {
            unsafe {
                let sign = _mm256_set1_ps(-0.0);
                fold(
                    a,
                    b,
                    |s, x, y| _mm256_add_ps(s, _mm256_andnot_ps(sign, _mm256_sub_ps(x, y))),
                    |s, x, y| s + (x - y).abs(),
                )
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2_fma() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// `pub fn $name() -> Kernel`: the AVX2 version where the CPU has it, else `$portable`.
    macro_rules! pick {
        ($name:ident, $portable:ident) => {
            pub fn $name() -> Kernel {
                #[cfg(target_arch = "x86_64")]
                {
                    fn checked(a: &[f32], b: &[f32]) -> f32 {
                        // SAFETY: only handed out below when the CPU has AVX2 and FMA.
                        unsafe { avx2::$name(a, b) }
                    }
                    if avx2_fma() {
                        return checked;
                    }
                }
                $portable
            }
        };
    }

    pick!(dot, dot_portable);
    pick!(sq_l2, sq_l2_portable);
    pick!(l1, l1_portable);

    #[cfg(test)]
    mod tests {
        #[test]
        fn kernels_agree_with_plain_sums() {
            for n in [0, 1, 7, 8, 9, 31, 32, 33, 384, 385] {
                let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
                let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0).collect();
                let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                let l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
                let l1: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum();
                let close = |x: f32, y: f32| (x - y).abs() <= 1e-4 * y.abs().max(1.0);
                for (got, want) in [
                    (super::dot()(&a, &b), dot),
                    (super::dot_portable(&a, &b), dot),
                    (super::sq_l2()(&a, &b), l2),
                    (super::sq_l2_portable(&a, &b), l2),
                    (super::l1()(&a, &b), l1),
                    (super::l1_portable(&a, &b), l1),
                ] {
                    assert!(close(got, want), "n = {n}: {got} vs {want}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn best_first_ties_by_row_and_k_capped() {
        let corpus = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 0.0],
            vec![-1.0, 0.0],
        ];
        let hits = top_k(&[vec![1.0, 0.0]], &corpus, 3, Similarity::Cosine);
        let ids: Vec<usize> = hits[0].iter().map(|h| h.corpus_id).collect();
        assert_eq!(ids, [0, 2, 1]);
        assert!((hits[0][0].score - 1.0).abs() < 1e-6);
        assert_eq!(
            top_k(&[vec![1.0, 0.0]], &corpus, 10, Similarity::Cosine)[0].len(),
            4
        );
        assert!(top_k(&[vec![1.0, 0.0]], &[], 5, Similarity::Cosine)[0].is_empty());

        // The same through the flat search.
        let index = ExactIndex::new(Embeddings::from_rows(&corpus), Similarity::Cosine);
        let ids: Vec<usize> = index
            .search(&[2.0, 0.0], 3)
            .iter()
            .map(|h| h.corpus_id)
            .collect();
        assert_eq!(ids, [0, 2, 1]);
        assert_eq!(index.search(&[1.0, 0.0], 10).len(), 4);
        assert!(index.search(&[1.0, 0.0], 0).is_empty());
        let empty = ExactIndex::new(Embeddings::new(2), Similarity::Cosine);
        assert!(empty.search(&[1.0, 0.0], 5).is_empty());
        assert!(
            top_k_flat(&Embeddings::new(2), &Embeddings::new(2), 3, Similarity::Dot).is_empty()
        );
    }

    fn random(rng: &mut impl Rng, n: usize, dim: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect())
            .collect()
    }

    /// Same ids in the same order and scores within 1e-5 (relative beyond 1), except that two
    /// rows whose true scores differ by less than that may swap places: f32 products cannot
    /// order them (hundreds of random scores have such pairs). `exact(q, id)` is the true score.
    fn assert_same(
        want: &[Vec<Hit>],
        got: &[Vec<Hit>],
        what: &str,
        exact: impl Fn(usize, usize) -> f32,
    ) {
        assert_eq!(want.len(), got.len(), "{what}: number of queries");
        for (q, (w, g)) in want.iter().zip(got).enumerate() {
            assert_eq!(w.len(), g.len(), "{what}: number of hits of query {q}");
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(1.0);
            for (rank, (a, b)) in w.iter().zip(g).enumerate() {
                assert!(
                    close(a.score, b.score),
                    "{what}: query {q} rank {rank}: {} vs {}",
                    b.score,
                    a.score
                );
                if a.corpus_id != b.corpus_id {
                    let true_score = exact(q, b.corpus_id);
                    assert!(
                        close(a.score, true_score),
                        "{what}: query {q} rank {rank}: row {} (score {true_score}) where row {} \
                         (score {}) belongs",
                        b.corpus_id,
                        a.corpus_id,
                        a.score
                    );
                }
            }
            let mut ids: Vec<usize> = g.iter().map(|h| h.corpus_id).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), g.len(), "{what}: a row twice for query {q}");
        }
    }

    /// Random data, every similarity, one query and many (both ways of spreading the work), with
    /// duplicated corpus rows and a zero row for the ties and the edge of cosine.
    #[test]
    fn flat_search_equals_top_k_on_random_data() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let dim = 24;
        let mut corpus = random(&mut rng, 3000, dim);
        for i in 0..40 {
            corpus[2000 + i] = corpus[i * 7].clone();
        }
        corpus[1234] = vec![0.0; dim];
        let mut queries = random(&mut rng, 300, dim);
        queries[3] = corpus[14].clone();
        queries[4] = vec![0.0; dim];
        let flat_corpus = Embeddings::from_rows(&corpus);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            for sim in Similarity::ALL {
                let index = ExactIndex::new(flat_corpus.clone(), sim);
                for k in [1, 10, 97, 5000] {
                    for nq in [1, 5, 40, 300] {
                        let q = &queries[..nq];
                        let want = top_k(q, &corpus, k, sim);
                        let flat_q = Embeddings::from_rows(q);
                        let what = format!("{sim} k={k} queries={nq}");
                        let exact = |qi: usize, id: usize| sim.score(&q[qi], &corpus[id]);
                        assert_same(&want, &index.search_many(&flat_q, k), &what, exact);
                        let flat = top_k_flat(&flat_q, &flat_corpus, k, sim);
                        assert_same(&want, &flat, &what, exact);
                    }
                    let want = top_k(&queries[3..4], &corpus, k, sim);
                    let got = [index.search(&queries[3], k)];
                    // The query is corpus row 14, also at row 2002: the tie goes to row 14
                    // (first for all but dot, where a longer row can score higher).
                    if sim != Similarity::Dot {
                        let ids: Vec<usize> = got[0].iter().map(|h| h.corpus_id).collect();
                        assert_eq!(ids[..2.min(k)], [14, 2002][..2.min(k)], "{sim}");
                    }
                    let exact = |_: usize, id: usize| sim.score(&queries[3], &corpus[id]);
                    assert_same(&want, &got, &format!("{sim} one"), exact);
                }
            }
        });
    }

    /// The f16 first pass changes nothing: ids, order and scores (to the bit) equal the f32
    /// search's, for cosine and for dot on rows of unequal length, with exact duplicates (ties)
    /// and near-duplicates (scores closer than f16 can tell), for one and several queries.
    #[test]
    fn half_scan_gives_the_f32_hits_exactly() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (n, dim) = (6000, 96);
        let mut rows = random(&mut rng, n, dim);
        for i in 0..200 {
            // Exact copies and copies nudged by less than f16 resolves.
            let src = rows[i * 7].clone();
            rows[n - 1 - i] = if i % 2 == 0 {
                src
            } else {
                src.iter().map(|x| x * (1.0 + 1e-5)).collect()
            };
        }
        for (i, r) in rows.iter_mut().enumerate() {
            // Unequal lengths, for dot.
            let scale = 0.5 + (i % 5) as f32 * 0.3;
            r.iter_mut().for_each(|x| *x *= scale);
        }
        let corpus = Embeddings::from_rows(&rows);
        // Queries: copies of corpus rows (many near-ties at the top) and random ones.
        let mut queries: Vec<Vec<f32>> = (0..6).map(|i| rows[i * 7].clone()).collect();
        queries.extend(random(&mut rng, 4, dim));
        for sim in [Similarity::Cosine, Similarity::Dot] {
            let plain = ExactIndex::new(corpus.clone(), sim).without_half_scan();
            let half = ExactIndex::new(corpus.clone(), sim).with_half_scan();
            if !half.has_half_scan() {
                return; // a CPU without F16C: nothing to compare
            }
            assert!(half.bytes() == plain.bytes() * 3 / 2);
            for k in [1, 10, 50] {
                for q in &queries {
                    assert_eq!(half.search(q, k), plain.search(q, k), "{sim} k {k}");
                }
                let several = Embeddings::from_rows(&queries[..5]);
                assert_eq!(
                    half.search_many(&several, k),
                    plain.search_many(&several, k),
                    "{sim} k {k}"
                );
            }
            // k past the corpus: every row, best first.
            assert_eq!(half.search(&queries[0], n + 5).len(), n);
        }
        // Large corpora get it on their own; small ones and euclidean do not.
        let small = ExactIndex::new(Embeddings::from_rows(&rows[..100]), Similarity::Cosine);
        assert!(!small.has_half_scan());
        let l2 = ExactIndex::new(corpus, Similarity::Euclidean).with_half_scan();
        assert!(!l2.has_half_scan());
    }
}
