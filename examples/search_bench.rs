//! Timings of exact and approximate search on synthetic vectors (release build):
//!
//! ```sh
//! cargo run --release --example search_bench -- [N] [DIM] [random|clustered] [QUERIES] [exact]
//! ```
//!
//! Defaults: 100,000 x 384 random unit vectors, 200 queries. Prints exact single-query latency
//! (p50 / p95) of the f32 scan and of the default (f16 first pass, same hits); then, unless
//! `exact`, the HNSW build time, its single-query latency and recall@10 against exact search for
//! a few `ef_search` values.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sbert_tui::analysis::ann::{AnnIndex, AnnParams, recall_at_k};
use sbert_tui::analysis::embeddings::Embeddings;
use sbert_tui::analysis::search::ExactIndex;
use sbert_tui::analysis::similarity::Similarity;

fn gauss(rng: &mut impl Rng) -> f32 {
    let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// `n` rows: isotropic Gaussian (random directions) or around `n / 100` centres.
fn data(n: usize, dim: usize, clustered: bool, seed: u64) -> Embeddings {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut centre_rng = rand_chacha::ChaCha8Rng::seed_from_u64(1234);
    let centres: Vec<Vec<f32>> = (0..1000)
        .map(|_| (0..dim).map(|_| gauss(&mut centre_rng)).collect())
        .collect();
    let mut e = Embeddings::new(dim);
    let mut row = vec![0f32; dim];
    for _ in 0..n {
        if clustered {
            // Noise about half as long as the centre.
            let c = &centres[rng.random_range(0..centres.len())];
            for (x, c) in row.iter_mut().zip(c) {
                *x = c + 0.5 * gauss(&mut rng);
            }
        } else {
            row.iter_mut().for_each(|x| *x = gauss(&mut rng));
        }
        e.push(&row);
    }
    e.normalized()
}

fn percentiles(mut t: Vec<Duration>) -> (f64, f64) {
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |p: f64| ms(t[((t.len() - 1) as f64 * p).round() as usize]);
    (at(0.5), at(0.95))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(100_000, |s| s.parse().unwrap());
    let dim: usize = args.get(1).map_or(384, |s| s.parse().unwrap());
    let clustered = args.get(2).is_some_and(|s| s == "clustered");
    let nq: usize = args.get(3).map_or(200, |s| s.parse().unwrap());
    let sim = Similarity::Cosine;
    println!(
        "{n} x {dim} {} unit vectors, {nq} queries, {} threads",
        if clustered { "clustered" } else { "random" },
        rayon::current_num_threads()
    );
    let corpus = data(n, dim, clustered, 1);
    let queries = data(nq, dim, clustered, 2);

    // The f32 scan, then the default (an f16 first pass from 16,384 rows, same hits).
    let plain = ExactIndex::from_normalized(corpus.clone(), sim).without_half_scan();
    let exact = ExactIndex::from_normalized(corpus.clone(), sim);
    let time = |index: &ExactIndex| {
        for q in queries.rows().take(5) {
            index.search(q, 10);
        }
        let mut times = Vec::new();
        let mut hits = Vec::new();
        for q in queries.rows() {
            let t = Instant::now();
            hits.push(index.search(q, 10));
            times.push(t.elapsed());
        }
        (percentiles(times), hits)
    };
    let ((f50, f95), f32_hits) = time(&plain);
    println!("exact search, f32 scan, one query at a time: p50 {f50:.2} ms, p95 {f95:.2} ms");
    let ((e50, e95), truth) = time(&exact);
    println!(
        "exact search, default ({}), one query at a time: p50 {e50:.2} ms, p95 {e95:.2} ms \
         (hits equal to the f32 scan's: {})",
        if exact.has_half_scan() {
            "f16 first pass"
        } else {
            "f32 scan"
        },
        truth == f32_hits
    );
    let t = Instant::now();
    let many = exact.search_many(&queries, 10);
    let per = t.elapsed().as_secs_f64() * 1e3 / nq as f64;
    println!(
        "exact search, {nq} queries at once: {per:.3} ms per query (same ids: {:.4})",
        recall_at_k(&truth, &many, 10)
    );

    if args.get(4).is_some_and(|s| s == "exact") {
        return;
    }
    let params = AnnParams::default();
    let t = Instant::now();
    let ann = AnnIndex::build(&corpus, sim, params, |_, _| ControlFlow::Continue(()))
        .unwrap()
        .unwrap();
    println!(
        "HNSW build (m {}, ef_construction {}): {:.1} s",
        params.m,
        params.ef_construction,
        t.elapsed().as_secs_f64()
    );
    let mut ann = ann;
    for ef in [16, 32, 64, 128, 256] {
        ann.set_ef_search(ef);
        for q in queries.rows().take(5) {
            ann.search(q, 10);
        }
        let mut times = Vec::new();
        let mut found = Vec::new();
        for q in queries.rows() {
            let t = Instant::now();
            found.push(ann.search(q, 10));
            times.push(t.elapsed());
        }
        let (a50, a95) = percentiles(times);
        println!(
            "HNSW ef_search {ef:>3}: p50 {a50:.3} ms, p95 {a95:.3} ms, recall@10 {:.3}, \
             {:.0}x faster than exact (p50)",
            recall_at_k(&truth, &found, 10),
            e50 / a50
        );
    }
}
