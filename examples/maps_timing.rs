//! Times the corpus maps (`sbert_tui::analysis::maps`) on synthetic clustered vectors and scores
//! them: how many of each point's 10 nearest neighbours on the map share its cluster.
//!
//! ```sh
//! cargo run --release --example maps_timing -- [N] [DIM] [CLUSTERS] [SPREAD] [METHODS] [LO,HI]
//! ```
//!
//! Defaults: 10,000 points of dimension 384 in 20 clusters, centres N(0, SPREAD^2 = 0.25) per
//! coordinate, each cluster N(centre, s^2) with its own s in [LO, HI] = [0.5, 1.5]; METHODS
//! `pca,tsne,umap`. Up to 5,000 points it also scores the vectors' own 10 nearest neighbours
//! (cosine), the most a map can keep.
//! Prints, per method: seconds in total and per stage, the longest wait between two progress
//! reports, and the 10-NN label agreement of the map. `MAPS_TRACE=1` prints every report;
//! `MAPS_DUMP=DIR` writes the vectors (`vectors.f32`, row-major little-endian), the labels
//! (`labels.u32`) and each map (`<method>.f32`, x y pairs) there, to compare with reference
//! implementations.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sbert_tui::analysis::embeddings::Embeddings;
use sbert_tui::analysis::maps::{MapMethod, MapOptions, MapStage, label_agreement, project};

fn gaussian(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn data(
    n: usize,
    dim: usize,
    clusters: usize,
    spread: f32,
    scales: (f32, f32),
) -> (Embeddings, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| spread * gaussian(&mut rng)).collect())
        .collect();
    let scales: Vec<f32> = (0..clusters)
        .map(|_| scales.0 + (scales.1 - scales.0) * rng.random::<f32>())
        .collect();
    let mut emb = Embeddings::new(dim);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.random_range(0..clusters);
        let row: Vec<f32> = centres[c]
            .iter()
            .map(|m| m + scales[c] * gaussian(&mut rng))
            .collect();
        emb.push(&row);
        labels.push(c);
    }
    (emb, labels)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.into());
    let n: usize = arg(0, "10000").parse().expect("N");
    let dim: usize = arg(1, "384").parse().expect("DIM");
    let clusters: usize = arg(2, "20").parse().expect("CLUSTERS");
    let spread: f32 = arg(3, "0.5").parse().expect("SPREAD");
    let methods: Vec<MapMethod> = arg(4, "pca,tsne,umap")
        .split(',')
        .map(|m| m.parse().expect("method"))
        .collect();
    let scales: Vec<f32> = arg(5, "0.5,1.5")
        .split(',')
        .map(|v| v.parse().expect("LO,HI"))
        .collect();
    let (emb, labels) = data(n, dim, clusters, spread, (scales[0], scales[1]));
    println!(
        "{n} points x {dim} dims, {clusters} clusters (spread {spread}); {} rayon threads",
        rayon::current_num_threads()
    );
    if n <= 5000 {
        let unit = emb.normalized();
        let score: f64 = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut d: Vec<(f32, usize)> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| {
                        let dot: f32 = unit
                            .row(i)
                            .iter()
                            .zip(unit.row(j))
                            .map(|(a, b)| a * b)
                            .sum();
                        (-dot, j)
                    })
                    .collect();
                d.select_nth_unstable_by(9, |a, b| a.0.total_cmp(&b.0));
                d[..10]
                    .iter()
                    .filter(|(_, j)| labels[*j] == labels[i])
                    .count() as f64
                    / 10.0
            })
            .sum::<f64>()
            / n as f64;
        println!("vectors: 10-NN agreement {score:.4}");
    }
    let dump = std::env::var_os("MAPS_DUMP").map(std::path::PathBuf::from);
    let write = |name: &str, bytes: Vec<u8>| {
        if let Some(dir) = &dump {
            std::fs::create_dir_all(dir).expect("MAPS_DUMP folder");
            std::fs::write(dir.join(name), bytes).expect("write dump");
        }
    };
    write(
        "vectors.f32",
        emb.as_flat().iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    write(
        "labels.u32",
        labels
            .iter()
            .flat_map(|&l| (l as u32).to_le_bytes())
            .collect(),
    );
    for method in methods {
        let opts = MapOptions::new(method);
        let start = Instant::now();
        let mut last = start;
        let mut longest_gap = 0.0f64;
        let mut stage_start: Vec<(MapStage, f64)> = Vec::new();
        let trace = std::env::var_os("MAPS_TRACE").is_some();
        let map = project(&emb, &opts, &mut |p| {
            let now = Instant::now();
            if trace {
                let at = (now - start).as_secs_f64();
                let gap = (now - last).as_secs_f64() * 1e3;
                eprintln!(
                    "{at:8.3}s (+{gap:5.0} ms) {} {}/{}",
                    p.stage.label(),
                    p.done,
                    p.total
                );
            }
            longest_gap = longest_gap.max((now - last).as_secs_f64());
            last = now;
            if stage_start.last().is_none_or(|s| s.0 != p.stage) {
                stage_start.push((p.stage, (now - start).as_secs_f64()));
            }
            true
        })
        .expect("map")
        .expect("not cancelled");
        let total = start.elapsed().as_secs_f64();
        write(
            &format!("{}.f32", method.name()),
            map.iter().flatten().flat_map(|v| v.to_le_bytes()).collect(),
        );
        let stages: Vec<String> = stage_start
            .iter()
            .enumerate()
            .map(|(i, (stage, t))| {
                let end = stage_start.get(i + 1).map_or(total, |s| s.1);
                format!("{} {:.2}s", stage.label(), end - t)
            })
            .collect();
        println!(
            "{:5}  total {total:6.2}s  [{}]  longest report gap {:.0} ms  10-NN agreement {:.4}  \
             (perplexity {}, n_neighbors {}, min_dist {}, iterations {}, pre-reduce {})",
            method.label(),
            stages.join(", "),
            longest_gap * 1e3,
            label_agreement(&map, &labels, 10),
            opts.perplexity,
            opts.n_neighbors,
            opts.min_dist,
            opts.resolved_iterations(n),
            opts.pre_reduce_dim,
        );
    }
}
