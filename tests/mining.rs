//! Paraphrase mining, community detection and the paraphrase-mining evaluator against the
//! Python library, on the real all-MiniLM-L6-v2.
//!
//! - `mining_reference.json`: sentence-transformers 6.2's `util.paraphrase_mining` (top 5, at
//!   most 200 pairs; the same with query chunks of 50 and corpus chunks of 64; top 3 without
//!   cap) and `util.community_detection` (threshold 0.75, minimum 3; threshold 0.6, minimum 4,
//!   batches of 100) on the 352 sentences of `search_corpus.txt`, made by
//!   `tests/fixtures/generate/make_mining_reference.py`.
//! - `paraphrase_mining_reference.json`: `ParaphraseMiningEvaluator` (name "stsb", defaults) on
//!   538 STS-B dev sentences, copied from the shared fixture `evaluators_reference.json`.
//!
//! Our vectors differ from torch's by about 1e-6, so scores are compared within 1e-4, and two
//! items whose scores are within 1e-4 of each other may come in either order; a pair (or a
//! community member) whose score is within 1e-4 of a cut-off (the last pair kept, a sentence's
//! top-k boundary, the community threshold) may be on either side of it.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use sbert_tui::analysis::embeddings::Embeddings;
use sbert_tui::analysis::mining::{
    MinedPair, MiningOptions, community_detection, paraphrase_mining,
};
use sbert_tui::analysis::similarity::Similarity;
use sbert_tui::train::eval;
use serde_json::Value;

const TOL: f32 = 1e-4;

fn encode(texts: &[String], batch: usize) -> Embeddings {
    let vecs = minilm().encode(texts, batch, &mut |_, _| {}).unwrap();
    Embeddings::from_rows(&vecs)
}

/// The corpus as the generator reads it (non-blank lines).
fn corpus() -> Vec<String> {
    std::fs::read_to_string(fixture("search_corpus.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// Our cosine matrix of the corpus (f64-accumulated), for the tolerance at cut-offs.
fn cosines(e: &Embeddings) -> Vec<Vec<f32>> {
    Similarity::Cosine.matrix(&e.to_rows())
}

/// The k-th best score of row `i` among the others (1-based `k`), or -inf.
fn kth_best(m: &[Vec<f32>], i: usize, k: usize) -> f32 {
    let mut row: Vec<f32> = (0..m.len()).filter(|&j| j != i).map(|j| m[i][j]).collect();
    row.sort_by(|a, b| b.total_cmp(a));
    row.get(k - 1).copied().unwrap_or(f32::NEG_INFINITY)
}

/// Compares our pairs with Python's; returns the largest score difference of the common pairs
/// and the number of places where the two lists hold different pairs.
fn compare_pairs(got: &[MinedPair], want: &Value, params: &Value, m: &[Vec<f32>]) -> (f32, usize) {
    let top_k = params["top_k"].as_u64().unwrap() as usize;
    let max_pairs = params["max_pairs"].as_u64().unwrap() as usize;
    let want: Vec<(f32, usize, usize)> = want
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["score"].as_f64().unwrap() as f32,
                p["i"].as_u64().unwrap() as usize,
                p["j"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let want_score: HashMap<(usize, usize), f32> =
        want.iter().map(|&(s, i, j)| ((i, j), s)).collect();
    let got_pairs: HashSet<(usize, usize)> = got.iter().map(|p| (p.i, p.j)).collect();
    // The max_pairs cut-off: the lowest score kept when the list is full.
    let cut = (want.len() == max_pairs).then(|| want.last().unwrap().0);
    // A pair may be on either side of a cut-off it is within TOL of: the last pair kept, or the
    // top-k boundary of either of its sentences (k-th and (k+1)-th best).
    let near_cut = |s: f32, i: usize, j: usize| {
        cut.is_some_and(|c| (s - c).abs() < TOL)
            || [i, j].iter().any(|&r| {
                (s - kth_best(m, r, top_k)).abs() < TOL
                    || (s - kth_best(m, r, top_k + 1)).abs() < TOL
            })
    };
    for &(s, i, j) in &want {
        assert!(
            got_pairs.contains(&(i, j)) || near_cut(s, i, j),
            "Python's pair ({i}, {j}) at {s} is missing"
        );
    }
    let mut worst = 0f32;
    let mut last_want = f32::INFINITY;
    for p in got {
        assert!(p.i < p.j);
        match want_score.get(&(p.i, p.j)) {
            Some(&w) => {
                worst = worst.max((p.score - w).abs());
                assert!(
                    (p.score - w).abs() < TOL,
                    "({}, {}): {} vs {w}",
                    p.i,
                    p.j,
                    p.score
                );
                // Same order, but for scores within TOL of each other.
                assert!(
                    w <= last_want + TOL,
                    "({}, {}) at {w} comes after a pair at {last_want}",
                    p.i,
                    p.j
                );
                last_want = w;
            }
            None => assert!(
                near_cut(p.score, p.i, p.j),
                "our pair ({}, {}) at {} is not Python's",
                p.i,
                p.j,
                p.score
            ),
        }
    }
    let moved = got.len().abs_diff(want.len())
        + got
            .iter()
            .zip(&want)
            .filter(|(g, w)| (g.i, g.j) != (w.1, w.2))
            .count();
    (worst, moved)
}

#[test]
fn paraphrase_mining_equals_the_librarys() {
    let r = json("mining_reference.json");
    let e = encode(&corpus(), 32);
    assert_eq!(e.len(), 352);
    let m = cosines(&e.normalized());
    for run in r["paraphrase_mining"].as_array().unwrap() {
        let p = &run["params"];
        let opts = MiningOptions {
            query_chunk_size: p["query_chunk_size"].as_u64().unwrap() as usize,
            corpus_chunk_size: p["corpus_chunk_size"].as_u64().unwrap() as usize,
            max_pairs: p["max_pairs"].as_u64().unwrap() as usize,
            top_k: p["top_k"].as_u64().unwrap() as usize,
        };
        let got = paraphrase_mining(&e, Similarity::Cosine, &opts, &mut |_, _| true).unwrap();
        let (worst, moved) = compare_pairs(&got, &run["pairs"], p, &m);
        eprintln!(
            "{p}: {} pairs, max score difference {worst:e}, {moved} places differ",
            got.len()
        );
    }
}

#[test]
fn community_detection_equals_the_librarys() {
    let r = json("mining_reference.json");
    let e = encode(&corpus(), 32);
    let m = cosines(&e.normalized());
    for run in r["community_detection"].as_array().unwrap() {
        let p = &run["params"];
        let threshold = p["threshold"].as_f64().unwrap() as f32;
        let got = community_detection(
            &e,
            threshold,
            p["min_community_size"].as_u64().unwrap() as usize,
            p["batch_size"].as_u64().unwrap() as usize,
            &mut |_, _| true,
        )
        .unwrap();
        let want = ids(&run["communities"]);
        let want_scores = matrix(&run["scores"]);
        assert_eq!(got.len(), want.len(), "{p}: number of communities");
        let mut worst = 0f32;
        for (c, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g[0], w[0] as usize, "{p}: seed of community {c}");
            let seed = g[0];
            let score: HashMap<usize, f32> = w
                .iter()
                .zip(&want_scores[c])
                .map(|(&j, &s)| (j as usize, s))
                .collect();
            // Members: the same, but for one within TOL of the threshold.
            for &j in g
                .iter()
                .chain(w.iter().map(|&j| j as usize).collect::<Vec<_>>().iter())
            {
                let ours = g.contains(&j);
                let theirs = score.contains_key(&j);
                assert!(
                    ours == theirs || (m[seed][j] - threshold).abs() < TOL,
                    "{p}: community {c} (seed {seed}): member {j} at {} ours {ours} theirs {theirs}",
                    m[seed][j]
                );
            }
            // Order: by score to the seed, but for scores within TOL of each other.
            let mut last = f32::INFINITY;
            for &j in &g[1..] {
                if let Some(&w) = score.get(&j) {
                    worst = worst.max((m[seed][j] - w).abs());
                    assert!(w <= last + TOL, "{p}: community {c}: {j} out of order");
                    last = w;
                }
            }
        }
        let same = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.iter().map(|&j| j as u32).eq(w.iter().copied()))
            .count();
        eprintln!(
            "{p}: {} communities ({same} identical, order included), sizes {:?}, max member \
             score difference {worst:e}",
            got.len(),
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}

#[test]
fn paraphrase_mining_evaluator_equals_the_librarys() {
    let r = json("paraphrase_mining_reference.json");
    let sentences: Vec<(String, String)> = r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect();
    let duplicates: Vec<(String, String)> = r["duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect();
    let ids: Vec<&str> = sentences.iter().map(|s| s.0.as_str()).collect();
    let texts: Vec<String> = sentences.iter().map(|s| s.1.clone()).collect();
    // The evaluator encodes with batches of 16.
    let e = encode(&texts, 16);
    let got =
        eval::paraphrase_mining_metrics(&e, &ids, &duplicates, &MiningOptions::default(), "stsb");
    let want = r["metrics"].as_object().unwrap();
    assert_eq!(got.len(), want.len());
    assert_eq!(got[0].0, "stsb_average_precision");
    for (name, g) in &got {
        let w = want[name].as_f64().unwrap();
        eprintln!("{name}: {g} (Python {w}, difference {:e})", (g - w).abs());
        assert!((g - w).abs() < 1e-4, "{name} = {g}, Python gives {w}");
    }
}
