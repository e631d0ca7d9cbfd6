//! The lessons screen driven by hand (no model runs: worker answers are made up, as in
//! `tests/tui.rs`): every built-in lesson drawn in both languages, and each kind of step acting
//! on the explorer or the training form.

mod common;

use common::tui_support::*;
use crossterm::event::KeyCode;
use sbert_tui::lessons::{self, Lang};
use sbert_tui::train::rules::Setting;
use sbert_tui::tui::app::Screen;
use sbert_tui::tui::messages::Request;
use sbert_tui::tui::shell::Effect;

/// Opens the lessons and moves to lesson `n` (from 1).
fn open_lesson(app: &mut sbert_tui::tui::app::App, n: usize) {
    app.on_key(key('W'));
    assert_eq!(app.screen, Screen::Lessons);
    for _ in 1..n {
        app.on_key(key('j'));
    }
    assert_eq!(app.lessons.selected, n - 1);
}

#[test]
fn snapshots_of_every_lesson_in_english_and_chinese() {
    let count = lessons::built_in().len();
    for lang in ["en", "zh"] {
        let mut app = ready_app(&["A man is playing a guitar."], false);
        open_lesson(&mut app, 1);
        if lang == "zh" {
            app.on_key(key('z'));
            assert_eq!(app.lang, Lang::Zh);
        }
        for i in 0..count {
            let t = render(&mut app, 120, 40);
            insta::assert_snapshot!(format!("lesson_{:02}_{lang}", i + 1), t.backend());
            app.on_key(key('j'));
        }
    }
}

#[test]
fn the_pooling_lesson_loads_its_sentences_and_switches_pooling() {
    let mut app = ready_app(&["x"], true);
    open_lesson(&mut app, 3);
    app.on_key(key('1'));
    assert_eq!(app.screen, Screen::Explorer, "a step shows what it did");
    let texts = app.texts();
    assert_eq!(texts[0], "A man is playing a guitar.");
    assert_eq!(texts.len(), lessons::built_in()[2].sentences.len());
    let status = app.status().unwrap();
    assert!(
        !status.error && status.text.starts_with("step 1: "),
        "{status:?}"
    );
    serve(&mut app);

    app.on_key(key('W'));
    assert_eq!(app.screen, Screen::Lessons, "W goes back to the lesson");
    app.on_key(key('3'));
    let reqs = app.take_requests();
    assert!(
        reqs.iter()
            .any(|r| matches!(r, Request::SetPooling { pooling, .. } if pooling == "max")),
        "step 3 is max pooling: {reqs:?}"
    );
    // A step the lesson does not have.
    app.on_key(key('W'));
    app.on_key(key('9'));
    assert!(app.status().unwrap().error);
    assert_eq!(app.screen, Screen::Lessons);
}

#[test]
fn a_prompt_step_on_a_model_without_that_prompt_says_so() {
    let mut app = ready_app(&["x"], true);
    open_lesson(&mut app, 8);
    app.on_key(key('2'));
    let status = app.status().unwrap();
    assert!(status.error, "{status:?}");
    assert!(status.text.contains("no prompt `query`"), "{}", status.text);
    assert!(app.take_requests().is_empty(), "nothing re-embedded");
}

#[test]
fn a_training_step_fills_the_form_and_reads_its_files() {
    let mut app = ready_app(&["x"], true);
    open_lesson(&mut app, 11);
    app.on_key(key('2'));
    assert_eq!(app.screen, Screen::Training);
    let form = &app.training.form;
    assert_eq!(form.get(Setting::Data), "sample_data/negation/train.csv");
    assert_eq!(form.get(Setting::Eval), "sample_data/negation/dev.csv");
    assert_eq!(form.get(Setting::Loss), "cosine");
    assert_eq!(form.get(Setting::Epochs), "4");
    let effects = app.take_effects();
    let read: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::InspectData { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        read,
        [
            "sample_data/negation/train.csv",
            "sample_data/negation/dev.csv"
        ]
    );
}

#[test]
fn esc_goes_back_and_other_keys_still_work_in_the_lessons() {
    let mut app = ready_app(&["a", "b", "c"], true);
    app.on_key(key('W'));
    // `p` (pooling) is global: it works from the lessons too.
    app.on_key(key('p'));
    assert!(!app.take_requests().is_empty());
    app.on_key(code(KeyCode::Esc));
    assert_eq!(app.screen, Screen::Explorer);
}

#[test]
fn a_lesson_file_opens_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(
        &path,
        "title = { en = \"Mine\", zh = \"我的\" }\ntext = { en = \"Hello\", zh = \"你好\" }\n\
         sentences = [\"one\", \"two\"]\n[[step]]\nlabel = { en = \"show\", zh = \"显示\" }\n\
         sentences = true\n",
    )
    .unwrap();
    let lesson = lessons::load(&path).unwrap();
    let mut app = ready_app(&["x"], true);
    app.lessons.open_first(lesson);
    app.on_key(key('W'));
    app.on_key(key('1'));
    assert_eq!(app.texts(), ["one", "two"]);
    // A broken file names itself.
    std::fs::write(&path, "title = 3").unwrap();
    let e = lessons::load(&path).unwrap_err();
    assert!(e.starts_with(&path.display().to_string()), "{e}");
}

#[test]
fn every_pooling_side_by_side_from_a_key_and_from_the_pooling_lesson() {
    let mut app = ready_app(
        &[
            "A man is playing a guitar.",
            "A person plays an instrument.",
            "Someone strums a guitar.",
            "The stock market fell today.",
        ],
        false,
    );
    app.on_key(key('b'));
    let reqs = app.take_requests();
    let pair = match reqs.as_slice() {
        [Request::PoolingTable { pair, .. }] => pair.clone(),
        other => panic!("one pooling-table request: {other:?}"),
    };
    assert_eq!(pair.0, "A man is playing a guitar.");
    // Its nearest neighbour by the (fake) vectors.
    let a = app.explorer.analysis.as_ref().unwrap();
    let best = sbert_tui::analysis::similarity::top_neighbours(&a.base.matrix, 0, 1)[0].0;
    assert_eq!(pair.1, a.texts[best]);
    // The answer opens the pop-up; any key closes it.
    app.shell.request(Request::PoolingTable {
        slot: sbert_tui::tui::messages::Slot::Base,
        generation: app.explorer.base.generation,
        pair,
    });
    serve(&mut app);
    assert!(matches!(
        app.shell.mode,
        sbert_tui::tui::shell::Mode::Poolings(_)
    ));
    insta::assert_snapshot!("poolings_popup", render(&mut app, 100, 30).backend());
    app.lang = Lang::Zh;
    insta::assert_snapshot!("poolings_popup_zh", render(&mut app, 100, 30).backend());
    app.lang = Lang::En;
    app.on_key(key('x'));
    assert!(matches!(
        app.shell.mode,
        sbert_tui::tui::shell::Mode::Normal
    ));

    // The pooling lesson's last step asks for the same table.
    open_lesson(&mut app, 3);
    let last = lessons::built_in()[2].steps.len();
    app.on_key(key(char::from_digit(last as u32, 10).unwrap()));
    assert!(
        app.take_requests()
            .iter()
            .any(|r| matches!(r, Request::PoolingTable { .. }))
    );
}

#[test]
fn the_cost_lesson_times_both_ways_on_the_explorers_sentences() {
    let mut app = ready_app(&["x"], false);
    open_lesson(&mut app, 6);
    app.on_key(key('1'));
    app.on_key(key('W'));
    app.on_key(key('2'));
    let reqs = app.take_requests();
    let n = lessons::built_in()[5].sentences.len();
    assert!(
        reqs.iter()
            .any(|r| matches!(r, Request::Cost { texts, .. } if texts.len() == n)),
        "{reqs:?}"
    );
    app.shell.request(reqs.into_iter().last().unwrap());
    serve(&mut app);
    assert!(matches!(
        app.shell.mode,
        sbert_tui::tui::shell::Mode::Cost(_)
    ));
    // 6 sentences: 6 passes and 36 dot products against 15 pair passes; the fake worker's
    // times (10 ms a sentence, 20 ms a pair) extrapolated to 10,000 sentences.
    insta::assert_snapshot!("cost_popup", render(&mut app, 100, 30).backend());
    app.lang = Lang::Zh;
    insta::assert_snapshot!("cost_popup_zh", render(&mut app, 100, 30).backend());

    // With a cross-encoder folder (`--cross-encoder`), the request names it and the pop-up adds
    // its time and best pairs.
    app.lang = Lang::En;
    app.on_key(key('x'));
    app.explorer.cross_encoder = Some("my-cross-encoder".into());
    app.on_key(key('C'));
    let reqs = app.take_requests();
    assert!(
        reqs.iter().any(
            |r| matches!(r, Request::Cost { cross_encoder: Some(f), .. } if f == "my-cross-encoder")
        ),
        "{reqs:?}"
    );
    app.shell.request(reqs.into_iter().last().unwrap());
    serve(&mut app);
    insta::assert_snapshot!(
        "cost_popup_cross_encoder",
        render(&mut app, 100, 36).backend()
    );
    app.lang = Lang::Zh;
    insta::assert_snapshot!(
        "cost_popup_cross_encoder_zh",
        render(&mut app, 100, 36).backend()
    );
}

#[test]
fn prompts_side_by_side_from_the_prompts_lesson() {
    let mut app = ready_app(&["x"], false);
    open_lesson(&mut app, 8);
    app.on_key(key('1'));
    serve(&mut app);
    // The stand-in model has no prompts: the step says so and asks nothing.
    app.on_key(key('W'));
    app.on_key(key('5'));
    let status = app.status().unwrap();
    assert!(
        status.error && status.text.contains("no prompts"),
        "{status:?}"
    );
    assert!(app.take_requests().is_empty());
    // With a model that has prompts, the worker's table opens as a pop-up.
    app.shell.request(Request::PromptTable {
        slot: sbert_tui::tui::messages::Slot::Base,
        generation: app.explorer.base.generation,
        pair: ("how much protein".into(), "46 grams per day".into()),
    });
    serve(&mut app);
    assert!(matches!(
        app.shell.mode,
        sbert_tui::tui::shell::Mode::Prompts(_)
    ));
    insta::assert_snapshot!("prompts_popup", render(&mut app, 100, 30).backend());
    app.lang = Lang::Zh;
    insta::assert_snapshot!("prompts_popup_zh", render(&mut app, 100, 30).backend());
    app.lang = Lang::En;
}

/// `T` (and the first lesson's second step) opens the selected sentence's pipeline: tokens with
/// their weights, then each module's output; in both languages.
#[test]
fn the_pipeline_from_a_key_and_from_the_first_lesson() {
    let mut app = ready_app(
        &[
            "A man is playing a guitar.",
            "机器学习 is fun",
            "The stock market fell today.",
        ],
        false,
    );
    app.on_key(key('j'));
    app.on_key(key('T'));
    let reqs = app.take_requests();
    let req = match reqs.as_slice() {
        [r @ Request::Pipeline { text, .. }] if text == "机器学习 is fun" => r.clone(),
        other => panic!("one pipeline request for the selected sentence: {other:?}"),
    };
    app.shell.request(req);
    serve(&mut app);
    assert!(matches!(
        app.shell.mode,
        sbert_tui::tui::shell::Mode::Pipeline(_)
    ));
    insta::assert_snapshot!("pipeline_popup_en", render(&mut app, 110, 32).backend());
    app.lang = Lang::Zh;
    insta::assert_snapshot!("pipeline_popup_zh", render(&mut app, 110, 32).backend());
    app.on_key(key('x'));
    assert!(matches!(
        app.shell.mode,
        sbert_tui::tui::shell::Mode::Normal
    ));
    open_lesson(&mut app, 1);
    app.on_key(key('2'));
    assert!(
        app.take_requests()
            .iter()
            .any(|r| matches!(r, Request::Pipeline { .. }))
    );
}

/// `S` (and the SimCSE lesson's second step) draws the selected sentence's dropout copies on the
/// map with their mean cosines in the map's legend; `S` again hides them.
#[test]
fn the_dropout_cloud_on_the_map() {
    let mut app = ready_app(
        &[
            "A man is playing a guitar.",
            "A person plays an instrument.",
            "Someone strums a guitar.",
            "The stock market fell today.",
        ],
        false,
    );
    app.on_key(key('S'));
    let reqs = app.take_requests();
    let req = match reqs.as_slice() {
        [r @ Request::Dropout { copies: 16, .. }] => r.clone(),
        other => panic!("one dropout request: {other:?}"),
    };
    app.shell.request(req);
    serve(&mut app);
    let cloud = app.explorer.visible_cloud().expect("a cloud");
    assert_eq!(cloud.points.len(), 16);
    // The stand-in copies nudge one letter count each: cosines below 1, above 0.9.
    assert!(cloud.between < 1.0 && cloud.between > 0.9, "{cloud:?}");
    assert!(cloud.to_eval < 1.0 && cloud.to_eval > cloud.between - 0.05);
    insta::assert_snapshot!("dropout_cloud_en", render(&mut app, 100, 30).backend());
    app.lang = Lang::Zh;
    insta::assert_snapshot!("dropout_cloud_zh", render(&mut app, 100, 30).backend());
    app.on_key(key('S'));
    assert!(app.explorer.visible_cloud().is_none());
    assert!(app.take_requests().is_empty());
    // Another map (a sentence added) hides a cloud projected on the old one.
    app.on_key(key('S'));
    let r = app.take_requests();
    app.shell.request(r[0].clone());
    serve(&mut app);
    assert!(app.explorer.visible_cloud().is_some());
    app.explorer.replace_sentences(
        vec!["a".into(), "b c".into(), "d e f".into()],
        &mut app.shell,
    );
    serve(&mut app);
    assert!(app.explorer.visible_cloud().is_none());

    open_lesson(&mut app, 7);
    app.on_key(key('2'));
    assert!(
        app.take_requests()
            .iter()
            .any(|r| matches!(r, Request::Dropout { .. }))
    );
}
