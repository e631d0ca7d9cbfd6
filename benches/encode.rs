//! Encoding throughput and single-sentence latency of our engine, in-process (model load
//! excluded). Run through `bench/encode.sh`, which runs the Python library beside it.
//!
//! Usage: cargo bench --bench encode -- --model DIR --input FILE [--batch-size 32] [--latency 200]
//!        [--precision f32|int8]
//! Prints one JSON object.

use std::time::Instant;

use sbert_tui::model::{LoadOptions, SentenceEncoder};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The `q` quantile of sorted values; null (in the JSON) when there are none (`--latency 0`).
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[(last as f64 * q).round() as usize])
}

fn main() {
    sbert_tui::tune_runtime();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && arg(&args, "--model").is_none() {
        // `cargo bench` without arguments: nothing to do (the driver script passes them).
        eprintln!("usage: cargo bench --bench encode -- --model DIR --input FILE");
        return;
    }
    let model = arg(&args, "--model").expect("--model DIR");
    let input = arg(&args, "--input").expect("--input FILE");
    let batch: usize = arg(&args, "--batch-size").map_or(32, |s| s.parse().unwrap());
    let latency_n: usize = arg(&args, "--latency").map_or(200, |s| s.parse().unwrap());
    let sentences: Vec<String> = std::fs::read_to_string(&input)
        .expect("input file")
        .lines()
        .map(str::to_string)
        .collect();

    let enc = SentenceEncoder::load(
        std::path::Path::new(&model),
        &LoadOptions {
            device: arg(&args, "--device")
                .map_or(Default::default(), |d| d.parse().expect("--device")),
            precision: arg(&args, "--precision")
                .map_or(Default::default(), |p| p.parse().expect("--precision")),
            ..LoadOptions::default()
        },
    )
    .expect("model loads");
    // Warm-up: one batch.
    enc.encode(
        &sentences[..batch.min(sentences.len())],
        batch,
        &mut |_, _| {},
    )
    .unwrap();

    let t = Instant::now();
    let vectors = enc.encode(&sentences, batch, &mut |_, _| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(vectors.len(), sentences.len());

    let mut lat = Vec::with_capacity(latency_n);
    for s in sentences.iter().take(latency_n) {
        let t = Instant::now();
        enc.encode(std::slice::from_ref(s), 1, &mut |_, _| {})
            .unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "engine": "sbert-tui",
            "device": sbert_tui::model::device::describe(enc.device()),
            "sentences": sentences.len(),
            "batch_size": batch,
            "encode_seconds": secs,
            "sentences_per_second": sentences.len() as f64 / secs,
            "latency_ms_median": percentile(&lat, 0.5),
            "latency_ms_p95": percentile(&lat, 0.95),
            "threads": candle_core::utils::get_num_threads(),
        })
    );
}
