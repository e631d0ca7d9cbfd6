//! End to end: the real binary in a pseudo-terminal with the tiny fixture model: typing a
//! sentence and seeing the matrix grow, training from the form and comparing, and every way out
//! (quit, panic, abort, SIGTERM) leaving the terminal as it was. Also: emoji that terminals
//! measure differently leave every row aligned.

mod common;

use common::pty::{restored_after, spawn_here};

fn tiny() -> String {
    common::fixture("tiny-bert-st")
        .to_string_lossy()
        .into_owned()
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
    let mut pty = spawn_here(
        &[
            "--model",
            &tiny(),
            "--sentences",
            sentences.to_str().unwrap(),
        ],
        &[],
    );
    let text = pty
        .screen
        .wait_for("a 3 x 3 matrix", |s| s.contains("3 × 3"));
    assert!(
        text.contains("机器学习很有趣。"),
        "CJK shows as typed:\n{text}"
    );

    pty.send_now(b"a");
    pty.send_now("a fourth sentence".as_bytes());
    pty.screen
        .wait_for("the draft to show live", |s| s.contains("4 × 4"));
    pty.send_now(b"\r");
    let text = pty.screen.wait_for("the committed fourth row", |s| {
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

    pty.send_now(b"q");
    let status = pty.wait_exit(10);
    assert!(status.success(), "{status:?}");
    let out = pty.screen.output();
    assert!(restored_after(&out, out.rfind("\x1b[?1049h").unwrap()));
}

#[test]
fn a_panic_restores_the_terminal_before_the_message() {
    let mut pty = spawn_here(&["--model", &tiny()], &[("SBERT_TUI_TEST_PANIC", "1")]);
    assert!(!pty.wait_exit(10).success());
    let out = pty.screen.output();
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
fn an_abort_restores_the_terminal_before_the_message() {
    // An allocation failure aborts the process without a panic; the terminal was left in the
    // alternate screen with mouse capture on.
    let mut pty = spawn_here(&["--model", &tiny()], &[("SBERT_TUI_TEST_ABORT", "1")]);
    assert!(!pty.wait_exit(10).success());
    let out = pty.screen.output();
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
fn train_from_the_form_then_compare_before_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut pty = spawn_here(&["--model", &tiny()], &[]);
    pty.open_training_form();
    // Down to the output folder (the last field: the selection stops there), type a fresh
    // folder, then start.
    for _ in 0..30 {
        pty.send(b"j");
    }
    pty.send(b"\r\x15"); // Enter, Ctrl-U
    pty.send(out.to_str().unwrap().as_bytes());
    pty.send(b"\r");
    pty.send(b"s");
    let text = pty
        .screen
        .wait_for("the run to finish", |s| s.contains("finished · saved to"));
    assert!(text.contains("Loss · whole run"), "{text}");
    assert!(text.contains("spearman_cosine"), "{text}");
    assert!(out.join("modules.json").is_file(), "the model was saved");
    pty.send(b"l");
    let text = pty.screen.wait_for("the difference view", |s| {
        s.contains("fine-tuned − base · 8 × 8")
    });
    assert!(text.contains("○ base → ● fine-tuned"), "{text}");
    pty.send(b"q");
    let status = pty.wait_exit(10);
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_while_training_keeps_a_checkpoint_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut pty = spawn_here(&["--model", &tiny()], &[]);
    pty.open_training_form();
    // Epochs (the fifth field): many, so the run is still going when the signal comes.
    for _ in 0..4 {
        pty.send(b"j");
    }
    pty.send(b"\r\x15400\r");
    // On to the output folder, the last field.
    for _ in 0..30 {
        pty.send(b"j");
    }
    pty.send(b"\r\x15");
    pty.send(out.to_str().unwrap().as_bytes());
    pty.send(b"\r");
    pty.send(b"s");
    // 300 rows at batch 16: 19 steps an epoch, 7,600 in all.
    pty.screen.wait_for("the run to train", |s| {
        s.contains("step ") && s.contains("/7600")
    });
    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(pty.pid() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = pty.wait_exit(30);
    assert!(status.success(), "{status:?}");
    let text = pty.screen.output();
    assert!(
        restored_after(&text, text.find("\x1b[?1049h").unwrap()),
        "terminal restored"
    );
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "cancelled", "{log}");
    assert!(last["checkpoint"].as_str().unwrap().contains("checkpoint-"));
}

#[test]
fn joined_emoji_and_flags_leave_no_stray_glyphs() {
    // Terminals draw a family emoji (three joined by zero-width joiners) 2 or 6 columns wide,
    // and flags, skin tones and variation selectors vary too; a row measured wrong moved its
    // values sideways. Each row's borders and values must stay where the layout put them.
    let dir = tempfile::tempdir().unwrap();
    let sentences = dir.path().join("emoji.txt");
    std::fs::write(
        &sentences,
        "👨‍👩‍👧 a family\n🇫🇷 a flag\n👍🏽 a thumb\n❤️ a heart\nplain words\n",
    )
    .unwrap();
    let mut pty = spawn_here(
        &[
            "--model",
            &tiny(),
            "--sentences",
            sentences.to_str().unwrap(),
        ],
        &[],
    );
    pty.screen.wait_for("the matrix", |s| s.contains("5 × 5"));
    // Move through the list so every row is redrawn, then look at the screen.
    for k in [b"j", b"j", b"j", b"k"] {
        pty.send(k);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    {
        let parser = pty.screen.parser.lock().unwrap();
        let s = parser.screen();
        let at = |row: u16, col: u16| -> String {
            s.cell(row, col)
                .map(|c| c.contents().to_string())
                .unwrap_or_default()
        };
        // The sentences pane's top-right corner gives the column of its right border; the
        // matrix pane's left border is the next one. Every row of the top half keeps both.
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
        // In the matrix, the decimal points of each row's five values are in the same five
        // columns.
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
    }
    pty.send(b"q");
    assert!(pty.wait_exit(10).success());
}

/// A teacher's walk, in Chinese, through the pooling lesson and the cost lesson with the real
/// binary and the tiny model: every step runs, the demonstrations show computed numbers, and
/// `q` leaves the terminal as it was.
#[test]
fn walk_the_pooling_and_cost_lessons_in_chinese() {
    let mut pty = spawn_here(&["--model", &tiny(), "--lang", "zh"], &[]);
    pty.screen.wait_for("the explorer", |s| s.contains("8 × 8"));
    pty.send(b"W");
    pty.screen.wait_for("the lessons in Chinese", |s| {
        s.contains("课程") && s.contains("什么是句子嵌入")
    });
    pty.send(b"jj");
    pty.screen
        .wait_for("the pooling lesson", |s| s.contains("池化：从多个词向量"));
    // Every step of the pooling lesson: its sentences, then each pooling, then the table.
    pty.send(b"1");
    pty.screen
        .wait_for("its five sentences", |s| s.contains("5 × 5"));
    for (step, pooling) in [
        ("2", "mean"),
        ("3", "max"),
        ("4", "cls"),
        ("5", "weightedmean"),
        ("6", "attention"),
    ] {
        pty.send(b"W");
        pty.send(step.as_bytes());
        pty.screen.wait_for(&format!("pooling {pooling}"), |s| {
            s.contains(&format!("池化 {pooling} "))
        });
    }
    // The pipeline under attention pooling: tokens with their weights, then each module.
    pty.send(b"W");
    pty.send(b"7");
    let text = pty.screen.wait_for("the pipeline", |s| {
        s.contains("处理流程") && s.contains("[CLS]")
    });
    assert!(text.contains("pooling attention"), "{text}");
    pty.send(b"x");
    pty.send(b"W");
    pty.send(b"8");
    let text = pty.screen.wait_for("every pooling side by side", |s| {
        s.contains("所有池化方式并排比较")
    });
    for mode in ["cls", "mean_sqrt_len_tokens", "lasttoken", "attention"] {
        assert!(text.contains(mode), "{mode} in the table:\n{text}");
    }
    pty.send(b"x");
    // The cost lesson: its sentences, then the measurement.
    pty.send(b"W");
    pty.send(b"jjj");
    pty.screen
        .wait_for("the cost lesson", |s| s.contains("双塔编码器与交叉编码器"));
    pty.send(b"1");
    pty.screen
        .wait_for("six sentences", |s| s.contains("6 × 6"));
    pty.send(b"W");
    pty.send(b"2");
    let text = pty
        .screen
        .wait_for("the cost table", |s| s.contains("49,995,000 次前向"));
    assert!(
        text.contains("6 次前向 + 36 次点积") && text.contains("15 次前向"),
        "{text}"
    );
    pty.send(b"x");
    // The SimCSE lesson: its sentences, then 16 dropout copies of the first on the map.
    pty.send(b"W");
    pty.send(b"j");
    pty.screen
        .wait_for("the SimCSE lesson", |s| s.contains("SimCSE：把 dropout"));
    pty.send(b"1");
    pty.screen
        .wait_for("five sentences", |s| s.contains("5 × 5"));
    pty.send(b"W");
    pty.send(b"2");
    pty.screen
        .wait_for("the dropout cloud", |s| s.contains("×16 开 dropout"));
    let before = pty.screen.output().len();
    pty.send(b"q");
    assert!(pty.wait_exit(10).success());
    assert!(restored_after(&pty.screen.output(), before));
}
