//! The corpus benchmark, our side (bench/corpus.sh runs the Python library beside it): embed a
//! corpus (no cache), reopen it from the vector cache, exact top-10 search of single queries,
//! the approximate (HNSW) index's build time, latency and recall@10 against exact search,
//! paraphrase mining and community detection of the whole corpus, t-SNE and UMAP of 10,000
//! points, and peak memory after each stage. Prints one JSON object.
//!
//! Usage: cargo bench --bench corpus -- --model DIR --input FILE [--queries 200]
//!        [--map-points 10000] [--skip-maps]

use std::ops::ControlFlow;
use std::time::Instant;

use sbert_tui::analysis::ann::{AnnIndex, AnnParams, recall_at_k};
use sbert_tui::analysis::embeddings::Embeddings;
use sbert_tui::analysis::maps::{self, MapMethod, MapOptions};
use sbert_tui::analysis::mining::{self, MiningOptions};
use sbert_tui::analysis::search::{ExactIndex, Hit};
use sbert_tui::corpus::embed::{EmbedOptions, embed_texts};
use sbert_tui::model::{LoadOptions, Prompt, SentenceEncoder};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Peak resident memory of this process so far (VmHWM), in MB.
fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    sbert_tui::tune_runtime();
    let args: Vec<String> = std::env::args().collect();
    if arg(&args, "--model").is_none() {
        eprintln!("usage: cargo bench --bench corpus -- --model DIR --input FILE");
        return;
    }
    let model = arg(&args, "--model").unwrap();
    let input = arg(&args, "--input").expect("--input FILE");
    let n_queries: usize = arg(&args, "--queries").map_or(200, |s| s.parse().unwrap());
    let map_points: usize = arg(&args, "--map-points").map_or(10_000, |s| s.parse().unwrap());
    let texts: Vec<String> = std::fs::read_to_string(&input)
        .expect("input file")
        .lines()
        .map(str::to_string)
        .collect();
    let mut out = serde_json::json!({"engine": "sbert-tui", "texts": texts.len(),
        "threads": rayon::current_num_threads()});
    let enc = SentenceEncoder::load(std::path::Path::new(&model), &LoadOptions::default())
        .expect("model loads");
    enc.encode(&texts[..32], 32, &mut |_, _| {}).unwrap();

    // Embedding, first without and then through a fresh cache (written), then reopened.
    let cache = tempfile::tempdir().unwrap();
    let options = EmbedOptions {
        cache_root: Some(cache.path().to_path_buf()),
        ..EmbedOptions::default()
    };
    let t = Instant::now();
    let embedded = embed_texts(&enc, &texts, &Prompt::ModelDefault, &options, &mut |_| true)
        .unwrap()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    out["embed_s"] = secs.into();
    out["embed_per_s"] = (texts.len() as f64 / secs).into();
    out["peak_mb_after_embed"] = peak_mb().into();
    let t = Instant::now();
    let reopened = embed_texts(&enc, &texts, &Prompt::ModelDefault, &options, &mut |_| true)
        .unwrap()
        .unwrap();
    out["reopen_from_cache_s"] = t.elapsed().as_secs_f64().into();
    assert_eq!(reopened.cached, texts.len());
    drop(reopened);
    let vectors = embedded.vectors;
    out["vectors_mb"] = (vectors.as_flat().len() as f64 * 4.0 / 1e6).into();
    let sim = enc.info().similarity;

    // Exact search of single queries: embedding the query and searching, and the search alone.
    let index = ExactIndex::new(vectors.clone(), sim);
    let queries = sbert_tui_sample(texts.len(), n_queries);
    let mut with_embed = Vec::new();
    let mut alone = Vec::new();
    let mut exact_hits: Vec<Vec<Hit>> = Vec::new();
    let mut query_vectors = Embeddings::new(vectors.dim());
    for &q in &queries {
        let t = Instant::now();
        let v = enc
            .encode(&[texts[q].as_str()], 1, &mut |_, _| {})
            .unwrap()
            .remove(0);
        let _ = index.search(&v, 10);
        with_embed.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let hits = index.search(&v, 10);
        alone.push(t.elapsed().as_secs_f64() * 1000.0);
        exact_hits.push(hits);
        query_vectors.push(&v);
    }
    with_embed.sort_by(f64::total_cmp);
    alone.sort_by(f64::total_cmp);
    out["search_ms_p50"] = percentile(&with_embed, 0.5).into();
    out["search_ms_p95"] = percentile(&with_embed, 0.95).into();
    out["search_only_ms_p50"] = percentile(&alone, 0.5).into();
    out["search_only_ms_p95"] = percentile(&alone, 0.95).into();
    out["search_half_scan"] = index.has_half_scan().into();
    // The same searches reading the f32 corpus only (no f16 first pass): same hits, slower.
    let plain = index.clone().without_half_scan();
    let mut f32_ms = Vec::new();
    for (q, want) in query_vectors.rows().zip(&exact_hits) {
        let t = Instant::now();
        let hits = plain.search(q, 10);
        f32_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(&hits, want, "the f16 first pass changed the hits");
    }
    drop(plain);
    f32_ms.sort_by(f64::total_cmp);
    out["search_f32_ms_p50"] = percentile(&f32_ms, 0.5).into();
    out["search_f32_ms_p95"] = percentile(&f32_ms, 0.95).into();

    // The approximate index.
    let t = Instant::now();
    let ann = AnnIndex::build(&vectors, sim, AnnParams::default(), |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap()
    .unwrap();
    out["ann_build_s"] = t.elapsed().as_secs_f64().into();
    let mut ann_ms = Vec::new();
    let mut ann_hits = Vec::new();
    for q in query_vectors.rows() {
        let t = Instant::now();
        ann_hits.push(ann.search(q, 10));
        ann_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ann_ms.sort_by(f64::total_cmp);
    out["ann_ms_p50"] = percentile(&ann_ms, 0.5).into();
    out["ann_ms_p95"] = percentile(&ann_ms, 0.95).into();
    out["ann_recall_at_10"] = recall_at_k(&exact_hits, &ann_hits, 10).into();
    out["ann_speedup_p50"] = (percentile(&alone, 0.5) / percentile(&ann_ms, 0.5)).into();
    drop(ann);
    drop(index);
    out["peak_mb_after_search"] = peak_mb().into();

    // Paraphrase mining and community detection of the whole corpus.
    let t = Instant::now();
    let pairs =
        mining::paraphrase_mining(&vectors, sim, &MiningOptions::default(), &mut |_, _| true)
            .unwrap();
    out["mine_s"] = t.elapsed().as_secs_f64().into();
    out["mine_pairs"] = pairs.len().into();
    drop(pairs);
    out["peak_mb_after_mine"] = peak_mb().into();
    let t = Instant::now();
    let communities =
        mining::community_detection(&vectors, 0.75, 10, 1024, &mut |_, _| true).unwrap();
    out["communities_s"] = t.elapsed().as_secs_f64().into();
    out["communities"] = communities.len().into();

    if !args.iter().any(|a| a == "--skip-maps") {
        let sub = Embeddings::from_flat(
            vectors.dim(),
            vectors.as_flat()[..map_points.min(vectors.len()) * vectors.dim()].to_vec(),
        );
        for method in [MapMethod::Tsne, MapMethod::Umap] {
            let t = Instant::now();
            maps::project(&sub, &MapOptions::new(method), &mut |_| true)
                .unwrap()
                .unwrap();
            out[format!("{}_s", method.name())] = t.elapsed().as_secs_f64().into();
        }
        out["map_points"] = sub.len().into();
    }
    out["peak_mb"] = peak_mb().into();
    println!("{out}");
}

/// `k` distinct rows of `0..n`, the same every run.
fn sbert_tui_sample(n: usize, k: usize) -> Vec<usize> {
    sbert_tui::tui::corpus_worker::sample(n, k, 7)
}
