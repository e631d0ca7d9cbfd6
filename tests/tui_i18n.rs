//! The interface in Chinese: the explorer, the help, the training pane, and `z` switching the
//! language (no model runs: worker answers are made up, as in `tests/tui.rs`).

mod common;

use std::sync::Arc;

use common::tui_support::*;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sbert_tui::lessons::Lang;
use sbert_tui::train::data::{DataKind, Dataset, Example};
use sbert_tui::train::events::TrainEvent;
use sbert_tui::train::rules::Setting;
use sbert_tui::tui::app::{App, Screen};
use sbert_tui::tui::keys::BINDINGS;

const TYPICAL: [&str; 6] = [
    "A man is playing a guitar.",
    "A person plays an instrument.",
    "Someone strums a guitar.",
    "A woman is slicing an onion.",
    "The stock market fell today.",
    "Share prices dropped sharply.",
];

/// The screen as lines of text (a wide character once, its hidden second cell skipped).
fn screen_text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut skip = 0;
        for x in 0..buf.area.width {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let s = buf[(x, y)].symbol();
            skip = sbert_tui::text::width(s).saturating_sub(1);
            out.push_str(s);
        }
        out.push('\n');
    }
    out
}

/// No wide character is cut at a border: every cell that follows a two-column character is the
/// blank that ratatui leaves under it.
fn assert_no_cut_characters(t: &Terminal<TestBackend>) {
    let buf = t.backend().buffer();
    for y in 0..buf.area.height {
        let mut x = 0;
        while x < buf.area.width {
            let w = sbert_tui::text::width(buf[(x, y)].symbol()).max(1) as u16;
            assert!(
                x + w <= buf.area.width,
                "a wide character cut at ({x}, {y})"
            );
            x += w;
        }
    }
}

fn chinese_app(sentences: &[&str]) -> App {
    let mut app = ready_app(sentences, true);
    app.lang = Lang::Zh;
    app
}

#[test]
fn explorer_in_chinese() {
    let mut app = chinese_app(&TYPICAL);
    let t = render(&mut app, 110, 32);
    let text = screen_text(&t);
    for word in [
        "句子 (6)",
        "相似度 · cosine",
        "分布图 · PCA",
        "最近邻",
        "维度 27",
        "? 帮助",
    ] {
        assert!(text.contains(word), "{word} missing:\n{text}");
    }
    assert_no_cut_characters(&t);
    insta::assert_snapshot!(t.backend());
}

#[test]
fn help_in_chinese() {
    let mut app = chinese_app(&TYPICAL[..3]);
    app.on_key(key('?'));
    // Wide enough for the help's three columns of 62.
    let t = render(&mut app, 190, 45);
    let text = screen_text(&t);
    for word in [
        "按键 · Esc 或任意键关闭",
        "任意位置",
        "下一种池化方式",
        "中文 / English",
    ] {
        assert!(text.contains(word), "{word} missing:\n{text}");
    }
    assert!(!text.contains("keys."), "a key shown instead of its text");
    assert_no_cut_characters(&t);
    insta::assert_snapshot!(t.backend());
    // Every binding's text, in the language asked for, whatever the app's is.
    for b in BINDINGS {
        assert_ne!(b.help(Lang::Zh), b.help(Lang::En), "{}", b.help);
    }
}

/// A data file as the form would have read it.
fn data(path: &str, rows: usize) -> Result<Arc<Dataset>, String> {
    let examples = (0..rows)
        .map(|i| Example::Scored {
            a: format!("A plane is taking off ({i})."),
            b: "An air plane is taking off.".into(),
            score: 1.0,
        })
        .collect();
    Ok(Arc::new(Dataset {
        path: path.into(),
        kind: DataKind::ScoredPairs,
        columns: vec!["sentence1".into(), "sentence2".into(), "score".into()],
        examples,
        scores_scaled: true,
        stamp: None,
    }))
}

#[test]
fn training_pane_in_chinese() {
    let mut app = chinese_app(&TYPICAL);
    app.on_key(key('t'));
    assert_eq!(app.screen, Screen::Training);
    app.take_effects();
    let out = std::path::Path::new("target/never-created/out");
    for (f, v) in [
        (Setting::Data, "sample_data/scored-pairs.csv"),
        (Setting::Eval, "sample_data/scored-pairs-dev.csv"),
        (Setting::Output, out.to_str().unwrap()),
    ] {
        app.training.form.set(f, v.into());
    }
    for (path, eval, rows) in [
        ("sample_data/scored-pairs.csv", false, 300),
        ("sample_data/scored-pairs-dev.csv", true, 200),
    ] {
        app.on_data(path, eval, data(path, rows));
    }
    let t = render(&mut app, 120, 36);
    let text = screen_text(&t);
    for word in [
        "训练 · 新建运行",
        "数据集文件",
        "学习率",
        "损失函数",
        "带分数的句对",
        "◀ 模型自带 ▶",
    ] {
        assert!(text.contains(word), "{word} missing:\n{text}");
    }
    assert_no_cut_characters(&t);
    insta::assert_snapshot!("training_form_zh", t.backend());

    // A run under way.
    app.on_key(key('s'));
    assert!(
        !app.take_effects().is_empty(),
        "the run starts: {:?}",
        app.status()
    );
    app.on_train(&TrainEvent::Started {
        total_steps: 38,
        steps_per_epoch: 19,
        epochs: 2,
        examples: 300,
        data_kind: "scored pairs".into(),
        loss: "cosine".into(),
        device: "cpu".into(),
        start_step: 0,
    });
    for step in 1..=10 {
        app.on_train(&TrainEvent::Step {
            step,
            total_steps: 38,
            epoch: step as f64 / 19.0,
            loss: 0.3 / (1.0 + step as f64 / 5.0),
            learning_rate: 2e-5,
            grad_norm: Some(0.5),
            sentences_per_second: 24.0,
            elapsed_seconds: step as f64 * 1.3,
            batch: None,
        });
    }
    let t = render(&mut app, 120, 36);
    let text = screen_text(&t);
    for word in ["训练 · 运行 1", "第 10/38 步", "模型自带", "训练运行 1 26%"] {
        assert!(text.contains(word), "{word} missing:\n{text}");
    }
    assert_no_cut_characters(&t);
    insta::assert_snapshot!("training_run_zh", t.backend());
}

#[test]
fn z_switches_the_whole_interface_and_back() {
    let mut app = ready_app(&TYPICAL, true);
    assert_eq!(app.lang, Lang::En);
    let english = screen_text(&render(&mut app, 110, 32));
    assert!(english.contains(" Sentences (6) ") && english.contains("? help · q quit"));

    app.on_key(key('z'));
    assert_eq!(app.lang, Lang::Zh);
    let chinese = screen_text(&render(&mut app, 110, 32));
    for word in [
        " 句子 (6) ",
        " 相似度 · cosine",
        " 最近邻 ",
        "池化 mean",
        "? 帮助 · q 退出",
    ] {
        assert!(chinese.contains(word), "{word} missing:\n{chinese}");
    }
    assert!(!chinese.contains("Sentences") && !chinese.contains("? help"));

    // The lessons follow the same language, and `z` there switches it for the whole app.
    app.on_key(key('W'));
    assert_eq!(app.screen, Screen::Lessons);
    let lessons = screen_text(&render(&mut app, 120, 40));
    assert!(
        lessons.contains(" 课程 ") && lessons.contains("z English"),
        "{lessons}"
    );
    app.on_key(key('z'));
    app.on_key(key('W'));
    assert_eq!((app.screen, app.lang), (Screen::Explorer, Lang::En));
    assert_eq!(screen_text(&render(&mut app, 110, 32)), english);

    // While typing, `z` is a letter.
    app.on_key(key('a'));
    app.on_key(key('z'));
    assert_eq!(app.lang, Lang::En);
}
