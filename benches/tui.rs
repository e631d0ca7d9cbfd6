//! Responsiveness of the explorer with the real all-MiniLM-L6-v2:
//! - launch to first frame: the real binary in a pseudo-terminal, until the layout is on screen;
//! - adding a sentence to 30: paste -> embedding worker -> matrix + PCA -> frame drawn, in-process
//!   (the app, the real worker thread and model, ratatui's TestBackend; terminal I/O excluded);
//! - rendering one frame with 100 sentences (TestBackend, 160 x 50).
//!
//! Usage: cargo bench --bench tui -- --model DIR [--sentences sample_data/stsb/sts-dev.csv]

use std::io::Read;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sbert_tui::model::DeviceChoice;
use sbert_tui::tui::app::App;
use sbert_tui::tui::messages::WorkerEvent;
use sbert_tui::tui::{ui, worker};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p95(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * 0.95).round() as usize]
}

fn sentences(path: &str, n: usize) -> Vec<String> {
    let mut r = csv::Reader::from_path(path).expect("sentence csv");
    r.records()
        .map(|rec| rec.unwrap()[0].to_string())
        .take(n)
        .collect()
}

fn launch_to_first_frame(model: &str, file: &str) -> f64 {
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_sbert-tui"));
    cmd.args(["--model", model, "--sentences", file]);
    cmd.env("TERM", "xterm-256color");
    let start = Instant::now();
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let parser = Arc::new(Mutex::new(vt100::Parser::new(
        std::num::NonZero::new(40).unwrap(),
        std::num::NonZero::new(120).unwrap(),
        0,
    )));
    let seen = Arc::new(Mutex::new(None::<Duration>));
    let mut reader = pair.master.try_clone_reader().unwrap();
    let (p, s) = (parser.clone(), seen.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut p = p.lock().unwrap();
            p.process(&buf[..n]);
            let mut s = s.lock().unwrap();
            if s.is_none() && p.screen().contents().contains("Sentences (") {
                *s = Some(start.elapsed());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let t = loop {
        if let Some(t) = *seen.lock().unwrap() {
            break t;
        }
        assert!(Instant::now() < deadline, "no frame");
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = child.kill();
    let _ = child.wait();
    t.as_secs_f64() * 1000.0
}

/// Answers requests with the real worker until nothing is pending.
fn settle(
    app: &mut App,
    req: &std::sync::mpsc::Sender<sbert_tui::tui::messages::Request>,
    rx: &std::sync::mpsc::Receiver<WorkerEvent>,
) {
    loop {
        for r in app.take_requests() {
            req.send(r).unwrap();
        }
        let loading = matches!(
            app.explorer.base.model,
            sbert_tui::tui::explorer::ModelState::Loading { .. }
        );
        if !app.explorer.pending() && !loading {
            return;
        }
        let ev = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("worker answers");
        app.on_worker(ev);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(model) = arg(&args, "--model") else {
        eprintln!("usage: cargo bench --bench tui -- --model DIR");
        return;
    };
    let csv = arg(&args, "--sentences").unwrap_or_else(|| "sample_data/stsb/sts-dev.csv".into());
    let pool = sentences(&csv, 200);

    // Launch to first frame, 5 runs.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("30.txt");
    std::fs::write(&file, pool[..30].join("\n")).unwrap();
    let launches: Vec<f64> = (0..5)
        .map(|_| launch_to_first_frame(&model, file.to_str().unwrap()))
        .collect();

    // Adding a sentence to 30, 20 times.
    let (tx, rx) = channel();
    let req = worker::spawn(
        tx,
        |e| e,
        worker::WorkerOptions {
            device: DeviceChoice::Cpu,
            ..Default::default()
        },
    );
    let mut app = App::new(pool[..30].to_vec(), true);
    app.load_model(&model, None);
    settle(&mut app, &req, &rx);
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    let mut updates = Vec::new();
    let mut embed_ms = Vec::new();
    for s in &pool[100..120] {
        let t = Instant::now();
        app.on_paste(s);
        settle(&mut app, &req, &rx);
        terminal
            .draw(|f| {
                ui::draw(&app, f);
            })
            .unwrap();
        updates.push(t.elapsed().as_secs_f64() * 1000.0);
        embed_ms.push(app.explorer.last_embed_ms.unwrap_or(f64::NAN));
        assert_eq!(app.explorer.analysis.as_ref().unwrap().texts.len(), 31);
        app.explorer.sentences.pop();
        app.explorer.selected = 0;
    }

    // Rendering with 100 sentences.
    let mut app100 = App::new(pool[..100].to_vec(), true);
    app100.load_model(&model, None);
    settle(&mut app100, &req, &rx);
    let mut big = Terminal::new(TestBackend::new(160, 50)).unwrap();
    app100.explorer.selected = 50;
    let renders: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            big.draw(|f| {
                ui::draw(&app100, f);
            })
            .unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();

    println!(
        "{}",
        serde_json::json!({
            "launch_to_first_frame_ms_median": median(launches.clone()),
            "launch_to_first_frame_ms_runs": launches,
            "add_sentence_to_30_update_ms_median": median(updates.clone()),
            "add_sentence_to_30_update_ms_p95": p95(updates),
            "of_which_embedding_ms_median": median(embed_ms),
            "render_100_sentences_ms_median": median(renders.clone()),
            "render_100_sentences_ms_max": renders.iter().cloned().fold(0.0, f64::max),
        })
    );
}
