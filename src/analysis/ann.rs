//! Approximate nearest neighbours: a hierarchical navigable small-world graph (HNSW, Malkov and
//! Yashunin 2016) over a corpus of vectors, built by the `hnsw_rs` crate in parallel. A search
//! visits a few thousand vectors where exact search ([`super::search`]) reads them all: at
//! 100,000 and more, an order of magnitude faster, at the price of missing some true neighbours
//! (see [`recall_at_k`]; random high-dimensional vectors are the worst case, real embeddings
//! cluster and fare far better). Building the graph is the slow part (minutes for 100,000
//! vectors of 384 numbers on two cores), hence the progress and cancel callback.
//!
//! Every [`Similarity`] is served, each through a distance the graph can use (never negative,
//! smaller is closer):
//!
//! - cosine: the rows are normalised once; distance `1 - a·b`.
//! - dot: maximum inner product is turned into cosine (Bachrach et al. 2014, "Speeding up the
//!   Xbox recommender system"): each corpus row `x` becomes `[x / M, sqrt(1 - |x|² / M²)]` with
//!   `M` the largest norm, so every row has length 1, and a query `q` becomes `[q / |q|, 0]`;
//!   then `1 - q'·x' = 1 - q·x / (|q| M)` orders the rows as `q·x` does.
//! - euclidean: squared distance (same order, no square root per step).
//! - manhattan: the L1 distance itself.
//!
//! Hits carry the model's similarity (recovered from the distance), so they compare with exact
//! search; [`recall_at_k`] measures how many of the exact hits an approximate search found.
//!
//! Reproducibility: `seed` fixes the order in which rows are inserted; `hnsw_rs` draws the
//! levels from its own fixed-seed generator. A build on one thread (inside a one-thread rayon
//! pool) is therefore the same graph every time; with more threads the inserts race and the
//! graph differs slightly from run to run (recall does not measurably).

use std::ops::ControlFlow;

use hnsw_rs::anndists::dist::distances::Distance;
use hnsw_rs::hnsw::Hnsw;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::embeddings::Embeddings;
use super::search::{Hit, kernels};
use super::similarity::Similarity;

/// How the graph is built and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// Links kept per node and layer (`M`; the bottom layer keeps twice as many in `hnsw_rs`).
    /// More: better recall, more memory, slower build. 2 to 255.
    pub m: usize,
    /// Candidates examined while inserting a row (`efConstruction`). More: a better graph, a
    /// slower build.
    pub ef_construction: usize,
    /// Candidates examined per search (`ef`), at least `k`. More: better recall, slower search.
    pub ef_search: usize,
    /// Fixes the order in which rows are inserted.
    pub seed: u64,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            seed: 42,
        }
    }
}

/// Why no index was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnError {
    #[error("an approximate index needs at least one vector (the corpus is empty)")]
    Empty,
    #[error("row {0} of the corpus holds NaN or infinity")]
    NonFinite(usize),
    #[error("invalid index parameters: {0}")]
    Params(String),
}

/// Which distance the graph uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `1 - a·b` on unit vectors (cosine, and dot after the transform).
    Angular,
    /// Squared euclidean distance.
    SquaredL2,
    /// Manhattan distance.
    L1,
}

/// The distance handed to `hnsw_rs`, with the kernels picked once for this CPU.
#[derive(Clone, Copy)]
struct Dist {
    kind: Kind,
    dot: fn(&[f32], &[f32]) -> f32,
    sq_l2: fn(&[f32], &[f32]) -> f32,
    l1: fn(&[f32], &[f32]) -> f32,
}

impl Dist {
    fn new(kind: Kind) -> Self {
        Dist {
            kind,
            dot: kernels::dot(),
            sq_l2: kernels::sq_l2(),
            l1: kernels::l1(),
        }
    }
}

impl Distance<f32> for Dist {
    #[inline]
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        // hnsw_rs requires distances >= 0; `1 - a·b` of unit vectors can round below.
        match self.kind {
            Kind::Angular => (1.0 - (self.dot)(a, b)).max(0.0),
            Kind::SquaredL2 => (self.sq_l2)(a, b),
            Kind::L1 => (self.l1)(a, b),
        }
    }
}

/// An HNSW graph over a corpus, searched under the corpus's similarity.
pub struct AnnIndex {
    graph: Hnsw<'static, f32, Dist>,
    sim: Similarity,
    params: AnnParams,
    len: usize,
    dim: usize,
    /// For dot: the largest corpus norm `M` of the transform.
    max_norm: f32,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("sim", &self.sim)
            .field("params", &self.params)
            .field("len", &self.len)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

/// Rows inserted between two calls of the progress callback (at least; more on many threads,
/// as `hnsw_rs` wants about a thousand per thread per parallel insert).
const PROGRESS_STEP: usize = 1000;

impl AnnIndex {
    /// Builds the graph over every row of `corpus`, in parallel on the current rayon pool.
    /// `progress(done, total)` is called before the first insert and after every batch of
    /// inserts; returning [`ControlFlow::Break`] stops the build and gives `Ok(None)`.
    pub fn build(
        corpus: &Embeddings,
        sim: Similarity,
        params: AnnParams,
        mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<Option<AnnIndex>, AnnError> {
        if !(2..=255).contains(&params.m) {
            return Err(AnnError::Params(format!(
                "m (links per node) must be 2 to 255, not {}",
                params.m
            )));
        }
        if params.ef_construction == 0 || params.ef_search == 0 {
            return Err(AnnError::Params(
                "ef_construction and ef_search must be at least 1".into(),
            ));
        }
        let n = corpus.len();
        if n == 0 || corpus.dim() == 0 {
            return Err(AnnError::Empty);
        }
        if let Some(row) = corpus.rows().position(|r| r.iter().any(|x| !x.is_finite())) {
            return Err(AnnError::NonFinite(row));
        }
        if progress(0, n).is_break() {
            return Ok(None);
        }
        let (kind, prepared, max_norm) = prepare(corpus, sim);
        let graph = Hnsw::new(params.m, n, 16, params.ef_construction, Dist::new(kind));
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(params.seed));
        let step = PROGRESS_STEP.max(1000 * rayon::current_num_threads());
        let mut done = 0;
        for batch in order.chunks(step) {
            let items: Vec<(&[f32], usize)> = batch.iter().map(|&i| (prepared.row(i), i)).collect();
            graph.parallel_insert_slice(&items);
            done += batch.len();
            if progress(done, n).is_break() {
                return Ok(None);
            }
        }
        let mut graph = graph;
        graph.set_searching_mode(true);
        Ok(Some(AnnIndex {
            graph,
            sim,
            params,
            len: n,
            dim: corpus.dim(),
            max_norm,
        }))
    }

    pub fn similarity(&self) -> Similarity {
        self.sim
    }

    pub fn params(&self) -> AnnParams {
        self.params
    }

    /// Changes the candidates examined per search (at least 1).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// About the `k` corpus rows most similar to `query`, best first (equal scores by row),
    /// scored with the corpus's similarity.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        assert_eq!(
            query.len(),
            self.dim,
            "a query of dimension {} for an index of dimension {}",
            query.len(),
            self.dim
        );
        let k = k.min(self.len);
        if k == 0 {
            return Vec::new();
        }
        let ef = self.params.ef_search.max(k);
        let (q, q_norm) = match self.sim {
            Similarity::Cosine => (unit(query, 0), 1.0),
            Similarity::Dot => (unit(query, 1), norm(query)),
            Similarity::Euclidean | Similarity::Manhattan => (query.to_vec(), 1.0),
        };
        let mut hits: Vec<Hit> = self
            .graph
            .search(&q, k, ef)
            .into_iter()
            .map(|nb| Hit {
                corpus_id: nb.d_id,
                score: self.score(nb.distance, q_norm),
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.corpus_id.cmp(&b.corpus_id))
        });
        hits.truncate(k);
        hits
    }

    /// [`AnnIndex::search`] for every row of `queries`, in parallel.
    pub fn search_many(&self, queries: &Embeddings, k: usize) -> Vec<Vec<Hit>> {
        queries
            .rows()
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|q| self.search(q, k))
            .collect()
    }

    /// The similarity that a graph distance stands for.
    fn score(&self, distance: f32, q_norm: f32) -> f32 {
        match self.sim {
            Similarity::Cosine => 1.0 - distance,
            Similarity::Dot => (1.0 - distance) * q_norm * self.max_norm,
            Similarity::Euclidean => -distance.sqrt(),
            Similarity::Manhattan => -distance,
        }
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// `v / max(|v|, 1e-12)` followed by `extra` zeros.
fn unit(v: &[f32], extra: usize) -> Vec<f32> {
    let d = norm(v).max(1e-12);
    let mut out: Vec<f32> = v.iter().map(|x| x / d).collect();
    out.resize(v.len() + extra, 0.0);
    out
}

/// The rows as the graph sees them, its distance, and (for dot) the largest norm.
fn prepare(corpus: &Embeddings, sim: Similarity) -> (Kind, Embeddings, f32) {
    match sim {
        Similarity::Cosine => (Kind::Angular, corpus.normalized(), 1.0),
        Similarity::Dot => {
            let norms: Vec<f32> = corpus.rows().map(norm).collect();
            let max = norms.iter().copied().fold(0f32, f32::max).max(1e-12);
            let dim = corpus.dim() + 1;
            let mut data = Vec::with_capacity(corpus.len() * dim);
            for (row, &nr) in corpus.rows().zip(&norms) {
                data.extend(row.iter().map(|x| x / max));
                let r = nr / max;
                data.push((1.0 - r * r).max(0.0).sqrt());
            }
            (Kind::Angular, Embeddings::from_flat(dim, data), max)
        }
        Similarity::Euclidean => (Kind::SquaredL2, corpus.clone(), 1.0),
        Similarity::Manhattan => (Kind::L1, corpus.clone(), 1.0),
    }
}

/// The share of the exact top `k` that the approximate top `k` found, averaged over queries
/// (by corpus id). A query whose exact list is empty counts as fully found; no queries at all
/// give 1.
pub fn recall_at_k(exact: &[Vec<Hit>], approx: &[Vec<Hit>], k: usize) -> f64 {
    assert_eq!(exact.len(), approx.len(), "different numbers of queries");
    if exact.is_empty() {
        return 1.0;
    }
    let total: f64 = exact
        .iter()
        .zip(approx)
        .map(|(e, a)| {
            let want: Vec<usize> = e.iter().take(k).map(|h| h.corpus_id).collect();
            if want.is_empty() {
                return 1.0;
            }
            let found = a
                .iter()
                .take(k)
                .filter(|h| want.contains(&h.corpus_id))
                .count();
            found as f64 / want.len() as f64
        })
        .sum();
    total / exact.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::search::ExactIndex;
    use rand::Rng;

    /// `n` vectors around `centres` random centres (unit-length centres, noise of `spread`).
    pub(crate) fn clustered(
        n: usize,
        dim: usize,
        centres: usize,
        spread: f32,
        seed: u64,
    ) -> Embeddings {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let gauss = |rng: &mut rand_chacha::ChaCha8Rng| {
            // Box-Muller.
            let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        };
        let cs: Vec<Vec<f32>> = (0..centres)
            .map(|_| unit(&(0..dim).map(|_| gauss(&mut rng)).collect::<Vec<_>>(), 0))
            .collect();
        let mut e = Embeddings::new(dim);
        for _ in 0..n {
            let c = &cs[rng.random_range(0..centres)];
            let row: Vec<f32> = c.iter().map(|x| x + spread * gauss(&mut rng)).collect();
            e.push(&row);
        }
        e
    }

    fn go(_: usize, _: usize) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    #[test]
    fn recall_above_0_9_on_clustered_data_for_every_similarity() {
        let corpus = clustered(5000, 48, 50, 0.08, 1);
        let queries = clustered(200, 48, 50, 0.08, 2);
        for sim in Similarity::ALL {
            let exact = ExactIndex::new(corpus.clone(), sim).search_many(&queries, 10);
            // The graph is built on several threads, so it differs a little from run to run;
            // dot product (not a metric) sat at 0.92 with the default ef 64, so search wider.
            let params = AnnParams {
                ef_search: 128,
                ..AnnParams::default()
            };
            let ann = AnnIndex::build(&corpus, sim, params, go).unwrap().unwrap();
            assert_eq!((ann.len(), ann.dim()), (5000, 48));
            let approx = ann.search_many(&queries, 10);
            let recall = recall_at_k(&exact, &approx, 10);
            assert!(recall > 0.9, "{sim}: recall@10 {recall}");
            // Scores are the similarity itself, best first.
            for (q, hits) in approx.iter().enumerate() {
                assert_eq!(hits.len(), 10);
                for w in hits.windows(2) {
                    assert!(w[0].score >= w[1].score);
                }
                for h in hits {
                    let want = sim.score(queries.row(q), corpus.row(h.corpus_id));
                    assert!(
                        (h.score - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{sim}: {} vs {want}",
                        h.score
                    );
                }
            }
        }
    }

    #[test]
    fn empty_corpus_and_bad_input_are_errors() {
        let p = AnnParams::default();
        let sim = Similarity::Cosine;
        assert_eq!(
            AnnIndex::build(&Embeddings::new(8), sim, p, go).unwrap_err(),
            AnnError::Empty
        );
        let mut bad = Embeddings::from_rows(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
        bad.push(&[f32::NAN, 1.0]);
        assert_eq!(
            AnnIndex::build(&bad, sim, p, go).unwrap_err(),
            AnnError::NonFinite(2)
        );
        let one = Embeddings::from_rows(&[vec![1.0, 0.0]]);
        for m in [0, 1, 256, 1000] {
            let err = AnnIndex::build(&one, sim, AnnParams { m, ..p }, go).unwrap_err();
            assert!(matches!(err, AnnError::Params(_)), "m = {m}");
        }
        let err = AnnIndex::build(&one, sim, AnnParams { ef_search: 0, ..p }, go).unwrap_err();
        assert!(matches!(err, AnnError::Params(_)));
    }

    #[test]
    fn tiny_corpus_k_capped_and_cancel() {
        let corpus = Embeddings::from_rows(&[vec![1.0, 0.0], vec![0.0, 1.0], vec![-1.0, 0.1]]);
        let ann = AnnIndex::build(&corpus, Similarity::Dot, AnnParams::default(), go)
            .unwrap()
            .unwrap();
        let hits = ann.search(&[2.0, 0.0], 10);
        let ids: Vec<usize> = hits.iter().map(|h| h.corpus_id).collect();
        assert_eq!(ids, [0, 1, 2]);
        assert!((hits[0].score - 2.0).abs() < 1e-5, "{hits:?}");
        assert!(ann.search(&[2.0, 0.0], 0).is_empty());

        let mut calls = Vec::new();
        let corpus = clustered(2500, 8, 5, 0.1, 3);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let cancelled = pool.install(|| {
            AnnIndex::build(&corpus, Similarity::Cosine, AnnParams::default(), |d, t| {
                calls.push((d, t));
                if d > 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap()
        });
        assert!(cancelled.is_none());
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], (0, 2500));
        assert!(calls[1].0 > 0 && calls[1].0 < 2500);
    }

    #[test]
    fn one_thread_builds_are_reproducible() {
        let corpus = clustered(1500, 16, 10, 0.1, 4);
        let queries = clustered(50, 16, 10, 0.1, 5);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let run = || {
            pool.install(|| {
                let ann = AnnIndex::build(&corpus, Similarity::Cosine, AnnParams::default(), go)
                    .unwrap()
                    .unwrap();
                ann.search_many(&queries, 10)
            })
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn recall_counts_shared_ids() {
        let h = |ids: &[usize]| -> Vec<Hit> {
            ids.iter()
                .map(|&corpus_id| Hit {
                    corpus_id,
                    score: 0.0,
                })
                .collect()
        };
        let exact = vec![h(&[1, 2, 3, 4]), h(&[5, 6])];
        let approx = vec![h(&[2, 1, 9, 4]), h(&[7, 8])];
        assert!((recall_at_k(&exact, &approx, 4) - (0.75 + 0.0) / 2.0).abs() < 1e-12);
        assert!((recall_at_k(&exact, &approx, 2) - 0.5).abs() < 1e-12);
        assert_eq!(recall_at_k(&[], &[], 10), 1.0);
        assert_eq!(recall_at_k(&[vec![]], &[vec![]], 10), 1.0);
    }
}
