//! Soak: the real binary in a pseudo-terminal, a training run going, and thousands of random
//! keys, pastes and resizes. No panic (in any thread: the panic hook prints even caught ones),
//! the terminal restored at the end, memory flat.
//!
//! `cargo test --test soak` sends 2,000 events with the tiny model (a few seconds, in CI).
//! `SBERT_TUI_SOAK_KEYS=20000 SBERT_TUI_SOAK_MODEL=<folder> cargo test --release --test soak --
//! --nocapture` is the long run; it prints the figures (events, seconds, frames, memory).

mod common;

use std::time::{Duration, Instant};

use common::fixture;
use common::pty::{restored_after, spawn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One random input: keys of every pane and pop-up (never `q`, `x` or Ctrl-C: the run must go
/// on and the app must not quit), typed text, a paste, or a resize.
enum Event {
    Bytes(Vec<u8>),
    Resize(u16, u16),
}

fn random_event(rng: &mut ChaCha8Rng) -> Event {
    const KEYS: &[&[u8]] = &[
        b"\x1b[A", b"\x1b[B", b"\x1b[C", b"\x1b[D", // arrows
        b"\t", b"\x1b[Z", b"\r", b"\x1b", b"\x7f", b"\x1b[3~", b"\x1b[H", b"\x1b[F", b"\x15",
        b"\x17", // Ctrl-U, Ctrl-W
        b"a", b"e", b"d", b"j", b"k", b"h", b"l", b"K", b"J", b"p", b"c", b"t", b"v", b"u", b"D",
        b"n", b"s", b"y", b"?", b"m", b"o", b"w", b"L", b"1", b"0", b" ", b".",
    ];
    const TEXT: &[&str] = &[
        "a cat",
        "机器学习",
        "naïve café",
        "👨‍👩‍👧 family",
        "🇫🇷",
        "x",
        "The dog runs.",
    ];
    match rng.random_range(0..100) {
        0..=84 => Event::Bytes(KEYS[rng.random_range(0..KEYS.len())].to_vec()),
        85..=92 => Event::Bytes(TEXT[rng.random_range(0..TEXT.len())].as_bytes().to_vec()),
        93..=97 => {
            let lines = rng.random_range(1..4);
            let body: Vec<&str> = (0..lines)
                .map(|_| TEXT[rng.random_range(0..TEXT.len())])
                .collect();
            let mut p = b"\x1b[200~".to_vec();
            p.extend_from_slice(body.join("\n").as_bytes());
            p.extend_from_slice(b"\x1b[201~");
            Event::Bytes(p)
        }
        _ => Event::Resize(rng.random_range(20..200), rng.random_range(5..60)),
    }
}

#[test]
fn thousands_of_random_keys_while_a_run_trains() {
    let events: usize = std::env::var("SBERT_TUI_SOAK_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = std::env::var("SBERT_TUI_SOAK_MODEL")
        .unwrap_or_else(|_| fixture("tiny-bert-st").to_string_lossy().into_owned());
    // A scratch working folder: the form finds its sample data there, runs and saved sentence
    // files go there.
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("sample_data")).unwrap();
    for f in ["scored-pairs.csv", "scored-pairs-dev.csv"] {
        std::fs::copy(
            root.join("sample_data").join(f),
            work.path().join("sample_data").join(f),
        )
        .unwrap();
    }
    let trace = work.path().join("trace.txt");
    let trace_s = trace.to_string_lossy().into_owned();
    let mut pty = spawn(
        &["--model", &model],
        &[("SBERT_TUI_TRACE", &trace_s)],
        work.path(),
        40,
        120,
    );
    let pid = pty.pid();

    // A run that outlasts the soak: 100,000 epochs.
    pty.open_training_form();
    for _ in 0..4 {
        pty.send(b"j");
    }
    pty.send(b"\r\x15100000\r");
    pty.send(b"s");
    pty.screen
        .wait_for("the run", |s| s.contains("step ") && s.contains("epoch"));
    pty.send(b"t");

    let started = Instant::now();
    let first_rss = rss_kib(pid).unwrap_or(0);
    let mut samples = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(20_000);
    let (mut resizes, mut pastes) = (0, 0);
    for i in 0..events {
        match random_event(&mut rng) {
            Event::Bytes(b) => {
                pastes += usize::from(b.starts_with(b"\x1b[200~"));
                pty.send_now(&b);
            }
            Event::Resize(cols, rows) => {
                resizes += 1;
                pty.resize(rows, cols);
            }
        }
        std::thread::sleep(Duration::from_micros(800));
        if i % (events / 20).max(1) == 0 {
            samples.push((i, rss_kib(pid).unwrap_or(0)));
        }
        assert!(
            pty.child.try_wait().unwrap().is_none(),
            "the app ended after {i} events"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let last_rss = rss_kib(pid).unwrap_or(0);
    pty.resize(40, 120);
    // Still answering: the help opens once whatever is open is closed (Esc and the next key sent
    // together would read as Alt + that key).
    for _ in 0..2 {
        pty.send_now(b"\x1b");
        std::thread::sleep(Duration::from_millis(150));
    }
    pty.send(b"?");
    pty.screen.wait_for("the help", |s| {
        s.contains("Keys · Esc or any other key closes")
    });
    // Ctrl-C asks about the run; a second Ctrl-C quits at once.
    pty.send_now(b"\x03");
    std::thread::sleep(Duration::from_millis(200));
    pty.send_now(b"\x03");
    let status = pty.wait_exit(30);
    let out = pty.screen.output();
    assert!(status.success(), "{status:?}");
    assert!(!out.contains("panicked"), "a thread panicked");
    assert!(
        restored_after(&out, out.rfind("\x1b[?1049h").unwrap()),
        "terminal restored"
    );
    let trace = std::fs::read_to_string(&trace).unwrap_or_default();
    let frame_ms: Vec<f64> = trace
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "frame_ms")
                .nth(1)
                .and_then(|v| v.parse().ok())
        })
        .collect();
    let worst_frame = frame_ms.iter().copied().fold(0.0f64, f64::max);
    // Memory: after the first quarter (model loaded, caches warm) it must stay flat.
    let quarter = samples[samples.len() / 4].1;
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    eprintln!(
        "soak: {events} events ({pastes} pastes, {resizes} resizes) in {seconds:.1} s; \
         {} frames, slowest {worst_frame:.1} ms; RSS {first_rss} KiB at the start, \
         {quarter} KiB after a quarter, {last_rss} KiB at the end, peak {peak} KiB",
        frame_ms.len()
    );
    assert!(
        last_rss < quarter + 64 * 1024,
        "memory grew: {quarter} KiB -> {last_rss} KiB ({samples:?})"
    );
}
