//! Training steps per second of our engine on fixed batches: the first `--steps` × 16 rows of a
//! scored-pairs file, in file order (so `bench/train_step_python.py` sees the same batches),
//! cosine loss, dropout on, AdamW with the linear schedule and clipping, one warm-up step
//! excluded. Prints one JSON object.
//!
//! Usage: cargo bench --bench train -- --model DIR --data FILE [--steps 60] [--batch-size 16]
//!        [--device cpu|cuda|...] [--no-dropout]
//!
//! `--no-dropout` turns dropout off: the difference says what drawing the masks costs.

use std::time::Instant;

use sbert_tui::model::{LoadOptions, SentenceEncoder};
use sbert_tui::train::data::{self, Example};
use sbert_tui::train::losses::LossKind;
use sbert_tui::train::optim::{AdamWConfig, linear_schedule};
use sbert_tui::train::session::{LossSetup, Session};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    sbert_tui::tune_runtime();
    let args: Vec<String> = std::env::args().collect();
    let Some(model) = arg(&args, "--model") else {
        eprintln!("usage: cargo bench --bench train -- --model DIR --data FILE");
        return;
    };
    let data_path = arg(&args, "--data").expect("--data FILE");
    let steps: usize = arg(&args, "--steps").map_or(60, |s| s.parse().unwrap());
    let batch: usize = arg(&args, "--batch-size").map_or(16, |s| s.parse().unwrap());
    let dataset = data::load(std::path::Path::new(&data_path)).expect("data");
    let enc = SentenceEncoder::load(
        std::path::Path::new(&model),
        &LoadOptions {
            device: arg(&args, "--device")
                .map_or(Default::default(), |d| d.parse().expect("--device")),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let device_name = sbert_tui::model::device::describe(enc.device());
    let mut session = Session::new(
        enc,
        LossSetup::new(LossKind::Cosine),
        AdamWConfig::default(),
        (!args.iter().any(|a| a == "--no-dropout")).then_some(42),
        42,
        Some(1.0),
    )
    .unwrap();
    let batches: Vec<Vec<&Example>> = dataset
        .examples
        .chunks(batch)
        .take(steps + 1)
        .map(|c| c.iter().collect())
        .collect();
    let total = batches.len();
    let warmup = total / 10;
    session
        .step(&batches[0], 2e-5 * linear_schedule(0, warmup, total))
        .unwrap();
    let t = Instant::now();
    let mut step_seconds = Vec::with_capacity(total);
    for (i, b) in batches.iter().enumerate().skip(1) {
        let s = Instant::now();
        session
            .step(b, 2e-5 * linear_schedule(i, warmup, total))
            .unwrap();
        step_seconds.push((s.elapsed().as_secs_f64() * 1e3).round() / 1e3);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "engine": "sbert-tui",
            "device": device_name,
            "steps": total - 1,
            "batch_size": batch,
            "dropout": !args.iter().any(|a| a == "--no-dropout"),
            "seconds": secs,
            "steps_per_second": (total - 1) as f64 / secs,
            "step_seconds": step_seconds,
        })
    );
}
