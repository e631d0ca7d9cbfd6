//! Times paraphrase mining at corpus scale: 100,000 random unit vectors of dimension 384 with
//! the library's defaults (top 100, at most 500,000 pairs), and, for comparison, the matrix
//! products alone over the same blocks (the floor the mining cannot go below).
//!
//!   cargo run --release --example mine_100k [N [QUERY_CHUNK CORPUS_CHUNK]]
//!
//! (`SKIP_PRODUCTS=1` skips the products-only pass.)

use std::time::Instant;

use sbert_tui::analysis::embeddings::Embeddings;
use sbert_tui::analysis::mining::{MiningOptions, paraphrase_mining};
use sbert_tui::analysis::similarity::Similarity;

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().expect("a number of vectors"));
    let dim = 384;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<f32> = (0..n * dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let e = Embeddings::from_flat(dim, data).normalized();
    println!("{n} x {dim}, {} threads", rayon::current_num_threads());

    // The products alone, over the blocks the mining computes (upper triangle).
    if std::env::var_os("SKIP_PRODUCTS").is_none() {
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let mut block = Vec::new();
        for a in (0..n).step_by(1024) {
            for c in (a..n).step_by(4096) {
                Embeddings::dot_block(
                    &e,
                    a..(a + 1024).min(n),
                    &e,
                    c..(c + 4096).min(n),
                    &mut block,
                );
            }
        }
        println!(
            "products only: {:.1} s wall, {:.1} s CPU",
            t0.elapsed().as_secs_f64(),
            cpu_seconds() - c0
        );
    }

    let (c0, t0) = (cpu_seconds(), Instant::now());
    let mut opts = MiningOptions::default();
    if let Some(q) = std::env::args().nth(2) {
        opts.query_chunk_size = q.parse().expect("query chunk size");
    }
    if let Some(c) = std::env::args().nth(3) {
        opts.corpus_chunk_size = c.parse().expect("corpus chunk size");
    }
    let pairs =
        paraphrase_mining(&e, Similarity::Cosine, &opts, &mut |_, _| true).expect("not cancelled");
    println!(
        "paraphrase_mining: {} pairs in {:.1} s wall, {:.1} s CPU",
        pairs.len(),
        t0.elapsed().as_secs_f64(),
        cpu_seconds() - c0
    );
}
