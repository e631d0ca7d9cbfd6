//! End to end: the real binary in a pseudo-terminal with the tiny fixture model. Loads three
//! sentences, types a fourth, reads the screen until the matrix is 4 x 4, quits, checks the exit
//! status and that the terminal was restored.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};

/// Starts the binary in a 40 x 120 pseudo-terminal.
fn spawn(
    args: &[&str],
    env: &[(&str, &str)],
) -> (
    Box<dyn portable_pty::Child + Send + Sync>,
    Screen,
    Box<dyn Write + Send>,
) {
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_sbert-tui"));
    cmd.args(args);
    cmd.cwd(env!("CARGO_MANIFEST_DIR"));
    cmd.env("TERM", "xterm-256color");
    cmd.env("HF_HUB_OFFLINE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let parser = Arc::new(Mutex::new(vt100::Parser::new(
        std::num::NonZero::new(40).unwrap(),
        std::num::NonZero::new(120).unwrap(),
        0,
    )));
    let raw = Arc::new(Mutex::new(Vec::new()));
    let mut reader = pair.master.try_clone_reader().unwrap();
    let (p, r) = (parser.clone(), raw.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            p.lock().unwrap().process(&buf[..n]);
            r.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let keys = pair.master.take_writer().unwrap();
    // Keep the master open for the child's lifetime.
    std::mem::forget(pair.master);
    (child, Screen(parser, raw), keys)
}

fn wait_exit(child: &mut Box<dyn portable_pty::Child + Send + Sync>) -> portable_pty::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Screen(Arc<Mutex<vt100::Parser>>, Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn text(&self) -> String {
        self.0.lock().unwrap().screen().contents()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if pred(&text) {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}; screen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn type_a_fourth_sentence_and_see_a_four_by_four_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let sentences = dir.path().join("three.txt");
    std::fs::write(
        &sentences,
        "The cat sleeps.\nA dog runs in the park.\n机器学习很有趣。\n",
    )
    .unwrap();

    let tiny = common::fixture("tiny-bert-st");
    let (mut child, screen, mut keys) = spawn(
        &[
            "--model",
            tiny.to_str().unwrap(),
            "--sentences",
            sentences.to_str().unwrap(),
        ],
        &[],
    );

    let text = screen.wait_for("a 3 x 3 matrix", |s| s.contains("3 × 3"));
    assert!(
        text.contains("机器学习很有趣。"),
        "CJK shows as typed:\n{text}"
    );

    keys.write_all(b"a").unwrap();
    keys.write_all("a fourth sentence".as_bytes()).unwrap();
    keys.flush().unwrap();
    screen.wait_for("the draft to show live", |s| s.contains("4 × 4"));
    keys.write_all(b"\r").unwrap();
    keys.flush().unwrap();
    let text = screen.wait_for("the committed fourth row", |s| {
        s.contains("4 × 4")
            && s.lines()
                .any(|l| l.contains(" 3 a fourth") && l.contains("1.00"))
    });
    // The fourth row holds four values.
    let row = text
        .lines()
        .find(|l| l.contains("││ 3 a fourth"))
        .expect("matrix row 3");
    let values = row
        .split_whitespace()
        .filter(|w| w.parse::<f32>().is_ok())
        .count();
    assert!(values >= 4, "{row}");

    keys.write_all(b"q").unwrap();
    keys.flush().unwrap();
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    let raw = screen.1.lock().unwrap();
    let tail = String::from_utf8_lossy(&raw[raw.len().saturating_sub(200)..]).to_string();
    assert!(
        tail.contains("\x1b[?1049l"),
        "left the alternate screen: {tail:?}"
    );
    assert!(
        tail.contains("\x1b[?2004l"),
        "bracketed paste off: {tail:?}"
    );
}

#[test]
fn a_panic_restores_the_terminal_before_the_message() {
    let tiny = common::fixture("tiny-bert-st");
    let (mut child, screen, _keys) = spawn(
        &["--model", tiny.to_str().unwrap()],
        &[("SBERT_TUI_TEST_PANIC", "1")],
    );
    let status = wait_exit(&mut child);
    assert!(!status.success());
    std::thread::sleep(Duration::from_millis(200));
    let raw = screen.1.lock().unwrap();
    let out = String::from_utf8_lossy(&raw).to_string();
    let restored = out.find("\x1b[?1049l").expect("left the alternate screen");
    let message = out
        .find("test panic after the first frame")
        .expect("panic message shown");
    assert!(
        restored < message,
        "the terminal is restored before the message is printed"
    );
}

#[test]
fn train_from_the_form_then_compare_before_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let tiny = common::fixture("tiny-bert-st");
    let (mut child, screen, mut keys) = spawn(&["--model", tiny.to_str().unwrap()], &[]);
    screen.wait_for("the explorer", |s| s.contains("8 × 8"));
    let mut send = |bytes: &[u8]| {
        keys.write_all(bytes).unwrap();
        keys.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    };
    send(b"t");
    screen.wait_for("the form with the sample data read", |s| {
        s.contains("scored pairs (sentence1")
    });
    // Down to the output folder (the last field), type a fresh folder, then start.
    for _ in 0..14 {
        send(b"j");
    }
    send(b"\r");
    send(b"\x15"); // Ctrl-U
    send(out.to_str().unwrap().as_bytes());
    send(b"\r");
    send(b"s");
    let text = screen.wait_for("the run to finish", |s| s.contains("finished · saved to"));
    assert!(text.contains("Loss · whole run"), "{text}");
    assert!(text.contains("spearman_cosine"), "{text}");
    assert!(out.join("modules.json").is_file(), "the model was saved");
    send(b"l");
    let text = screen.wait_for("the difference view", |s| {
        s.contains("fine-tuned − base · 8 × 8")
    });
    assert!(text.contains("○ base → ● fine-tuned"), "{text}");
    send(b"q");
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
}

/// The terminal modes the app turned on are turned off in `out` after `from`: the alternate
/// screen left, mouse capture and bracketed paste off.
fn restored_after(out: &str, from: usize) -> bool {
    let tail = &out[from..];
    tail.contains("\x1b[?1049l") && tail.contains("\x1b[?1000l") && tail.contains("\x1b[?2004l")
}

#[test]
fn an_abort_restores_the_terminal_before_the_message() {
    // An allocation failure aborts the process without a panic; the terminal was left in the
    // alternate screen with mouse capture on.
    let tiny = common::fixture("tiny-bert-st");
    let (mut child, screen, _keys) = spawn(
        &["--model", tiny.to_str().unwrap()],
        &[("SBERT_TUI_TEST_ABORT", "1")],
    );
    let status = wait_exit(&mut child);
    assert!(!status.success());
    std::thread::sleep(Duration::from_millis(200));
    let raw = screen.1.lock().unwrap();
    let out = String::from_utf8_lossy(&raw).to_string();
    let entered = out
        .find("\x1b[?1049h")
        .expect("entered the alternate screen");
    assert!(
        restored_after(&out, entered),
        "{:?}",
        &out[out.len().saturating_sub(300)..]
    );
    let restored = out.rfind("\x1b[?1049l").unwrap();
    let message = out
        .find("memory allocation of")
        .expect("the allocator's message");
    assert!(restored < message, "restored before the message");
}

#[test]
fn sigterm_while_training_keeps_a_checkpoint_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let tiny = common::fixture("tiny-bert-st");
    let (mut child, screen, mut keys) = spawn(&["--model", tiny.to_str().unwrap()], &[]);
    screen.wait_for("the explorer", |s| s.contains("8 × 8"));
    let mut send = |bytes: &[u8]| {
        keys.write_all(bytes).unwrap();
        keys.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    };
    send(b"t");
    screen.wait_for("the form with the sample data read", |s| {
        s.contains("scored pairs (sentence1")
    });
    // Epochs (the fifth field): many, so the run is still going when the signal comes.
    for _ in 0..4 {
        send(b"j");
    }
    send(b"\r\x15400\r");
    for _ in 0..10 {
        send(b"j");
    }
    send(b"\r\x15");
    send(out.to_str().unwrap().as_bytes());
    send(b"\r");
    send(b"s");
    // 300 rows at batch 16: 19 steps an epoch, 7,600 in all.
    screen.wait_for("the run to train", |s| {
        s.contains("step ") && s.contains("/7600")
    });
    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(child.process_id().unwrap() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    let raw = screen.1.lock().unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let entered = text.find("\x1b[?1049h").unwrap();
    assert!(restored_after(&text, entered), "terminal restored");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "cancelled", "{log}");
    assert!(last["checkpoint"].as_str().unwrap().contains("checkpoint-"));
}

#[test]
fn joined_emoji_and_flags_leave_no_stray_glyphs() {
    // A family emoji (three joined by zero-width joiners) is 2 columns for ratatui but 6 for
    // many terminals (and for vt100, standing in for one here): the rest of the row shifted
    // and left stray glyphs. Each row's pane borders must stay where the layout put them.
    let dir = tempfile::tempdir().unwrap();
    let sentences = dir.path().join("emoji.txt");
    std::fs::write(
        &sentences,
        "👨‍👩‍👧 a family\n🇫🇷 a flag\n👍🏽 a thumb\n❤️ a heart\nplain words\n",
    )
    .unwrap();
    let tiny = common::fixture("tiny-bert-st");
    let (mut child, screen, mut keys) = spawn(
        &[
            "--model",
            tiny.to_str().unwrap(),
            "--sentences",
            sentences.to_str().unwrap(),
        ],
        &[],
    );
    screen.wait_for("the matrix", |s| s.contains("5 × 5"));
    // Move through the list so every row is redrawn, then look at the screen.
    for k in [b"j", b"j", b"j", b"k"] {
        keys.write_all(k).unwrap();
        keys.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let parser = screen.0.lock().unwrap();
    let s = parser.screen();
    let at = |row: u16, col: u16| -> String {
        s.cell(row, col)
            .map(|c| c.contents().to_string())
            .unwrap_or_default()
    };
    // The sentences pane's top-right corner gives the column of its right border; the matrix
    // pane's left border is the next one. Every row of the top half keeps both there.
    let corner = (0..120)
        .find(|&c| at(0, c) == "┐")
        .expect("the sentences pane's corner");
    assert_eq!(at(0, corner + 1), "┌");
    for row in 1..12 {
        assert_eq!(
            (at(row, corner), at(row, corner + 1)),
            ("│".to_string(), "│".to_string()),
            "row {row}: {:?}",
            s.contents().lines().nth(row as usize)
        );
    }
    // In the matrix, each row's values sit under the same columns: the decimal points of the
    // five values of each row are in the same five columns (a label measured wrong once moved
    // its row's values sideways).
    let dots =
        |row: u16| -> Vec<u16> { (corner + 2..120).filter(|&c| at(row, c) == ".").collect() };
    let rows: Vec<Vec<u16>> = (2..7).map(dots).collect();
    assert_eq!(rows[0].len(), 5, "{:?}", s.contents().lines().nth(2));
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(
            r,
            &rows[0],
            "row {i}: {:?}",
            s.contents().lines().nth(i + 2)
        );
    }
    drop(parser);
    keys.write_all(b"q").unwrap();
    keys.flush().unwrap();
    assert!(wait_exit(&mut child).success());
}
