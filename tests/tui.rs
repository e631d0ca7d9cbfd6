//! The explorer driven by hand: worker messages are constructed here (no model runs), keys are
//! fed as events, and frames are drawn on ratatui's `TestBackend` and compared with snapshots.

mod common;

use common::tui_support::*;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use sbert_tui::tui::app::App;
use sbert_tui::tui::explorer::ModelState;
use sbert_tui::tui::hits::Pane;
use sbert_tui::tui::messages::{Embedded, Request, Slot, TokenCount, WorkerEvent};
use sbert_tui::tui::shell::{EditTarget, Mode};
use sbert_tui::tui::ui;

const TYPICAL: [&str; 6] = [
    "A man is playing a guitar.",
    "A person plays an instrument.",
    "Someone strums a guitar.",
    "A woman is slicing an onion.",
    "The stock market fell today.",
    "Share prices dropped sharply.",
];

#[test]
fn snapshot_typical() {
    let mut app = ready_app(&TYPICAL, true);
    insta::assert_snapshot!(render(&mut app, 110, 32).backend());
}

#[test]
fn snapshot_no_color_uses_glyphs() {
    let mut app = ready_app(&TYPICAL, false);
    app.explorer.focus = Pane::Matrix;
    app.on_key(key('j'));
    app.on_key(key('l'));
    app.on_key(key('l'));
    let t = render(&mut app, 110, 32);
    // No cell carries a colour.
    for cell in t.backend().buffer().content() {
        assert_eq!(cell.fg, ratatui::style::Color::Reset);
        assert_eq!(cell.bg, ratatui::style::Color::Reset);
    }
    insta::assert_snapshot!(t.backend());
}

#[test]
fn snapshot_cjk_and_emoji() {
    let mut app = ready_app(
        &[
            "我喜欢机器学习。",
            "机器学习是我的爱好。",
            "今天天气很好。",
            "Emoji test 🙂🚀 done",
            "naïve café",
        ],
        true,
    );
    app.on_key(key('j'));
    insta::assert_snapshot!(render(&mut app, 100, 30).backend());
}

#[test]
fn snapshot_loading_before_the_model_arrives() {
    let mut app = App::new(TYPICAL.iter().map(|s| s.to_string()).collect(), true);
    app.load_model("sentence-transformers/all-MiniLM-L6-v2", None);
    insta::assert_snapshot!(render(&mut app, 100, 24).backend());
}

#[test]
fn snapshot_editing_and_help() {
    let mut app = ready_app(&TYPICAL[..3], true);
    app.on_key(key('a'));
    type_str(&mut app, "A guitarist on stage");
    serve(&mut app);
    insta::assert_snapshot!("editing", render(&mut app, 100, 26).backend());
    app.on_key(code(KeyCode::Esc));
    app.on_key(key('?'));
    insta::assert_snapshot!("help", render(&mut app, 100, 45).backend());
}

#[test]
fn snapshot_too_few_for_a_map() {
    let mut app = ready_app(&TYPICAL[..2], true);
    insta::assert_snapshot!(render(&mut app, 90, 24).backend());
}

#[test]
fn degenerate_sizes_do_not_panic() {
    let mut app = ready_app(&TYPICAL, true);
    for (w, h) in [
        (0, 0),
        (1, 1),
        (20, 5),
        (59, 16),
        (60, 15),
        (60, 16),
        (61, 17),
        (200, 16),
    ] {
        render(&mut app, w, h);
    }
    app.on_key(key('?'));
    for (w, h) in [(0, 0), (1, 1), (20, 5), (60, 16)] {
        render(&mut app, w, h);
    }
    let mut empty = ready_app(&[], true);
    for (w, h) in [(0, 0), (60, 16), (100, 30)] {
        render(&mut empty, w, h);
    }
    insta::assert_snapshot!("too_small_20x5", render(&mut app, 20, 5).backend());
}

#[test]
fn control_characters_and_escapes_never_reach_the_screen() {
    let mut app = ready_app(
        &["evil \x1b[2J\x1b]0;title\x07 text", "tab\there", "ok"],
        true,
    );
    let t = render(&mut app, 100, 24);
    for cell in t.backend().buffer().content() {
        assert!(
            !cell.symbol().chars().any(|c| c.is_control()),
            "{:?}",
            cell.symbol()
        );
    }
}

#[test]
fn typing_one_sentence_embeds_only_that_sentence() {
    let mut app = ready_app(&TYPICAL, true);
    assert_eq!(app.explorer.analysis.as_ref().unwrap().texts.len(), 6);
    app.on_key(key('a'));
    app.on_key(key('x'));
    assert_eq!(serve(&mut app), 1, "only the new text is embedded");
    assert_eq!(
        app.explorer.analysis.as_ref().unwrap().texts.len(),
        7,
        "the draft shows live"
    );
    app.on_key(key('y'));
    assert_eq!(serve(&mut app), 1);
    app.on_key(code(KeyCode::Backspace));
    assert_eq!(serve(&mut app), 0, "'x' is cached");
    app.on_key(code(KeyCode::Enter));
    assert_eq!(serve(&mut app), 0);
    assert_eq!(app.explorer.sentences.len(), 7);
    // Reordering needs no embedding at all.
    app.on_key(key('K'));
    assert_eq!(serve(&mut app), 0);
    assert_eq!(app.explorer.sentences[5], "x");
    assert_eq!(app.explorer.analysis.as_ref().unwrap().texts[5], "x");
}

#[test]
fn stale_results_are_dropped() {
    let mut app = ready_app(&TYPICAL[..3], true);
    app.on_key(key('a'));
    app.on_key(key('x'));
    let first = app.take_requests();
    app.on_key(key('y'));
    let second = app.take_requests();
    let (
        Request::Embed {
            id: id1,
            generation,
            ..
        },
        Request::Embed { id: id2, .. },
    ) = (&first[0], &second[0])
    else {
        panic!("{first:?} {second:?}")
    };
    assert!(id2 > id1);
    // The answer to the first request arrives after the second was sent: ignored.
    app.on_worker(WorkerEvent::Embedded {
        slot: Slot::Base,
        id: *id1,
        generation: *generation,
        items: vec![Embedded {
            text: "x".into(),
            vector: fake_vector("x"),
            tokens: TokenCount::plain(3),
        }],
        millis: 1.0,
    });
    assert_eq!(app.explorer.dropped_results, 1);
    assert!(!app.explorer.base.cached("x"));
    assert!(app.explorer.pending());
    // A result from an older model generation is ignored too.
    app.on_worker(WorkerEvent::Embedded {
        slot: Slot::Base,
        id: *id2,
        generation: generation - 1,
        items: vec![],
        millis: 1.0,
    });
    assert_eq!(app.explorer.dropped_results, 2);
    app.on_worker(WorkerEvent::Embedded {
        slot: Slot::Base,
        id: *id2,
        generation: *generation,
        items: vec![Embedded {
            text: "xy".into(),
            vector: fake_vector("xy"),
            tokens: TokenCount::plain(3),
        }],
        millis: 1.0,
    });
    assert!(!app.explorer.pending());
    assert_eq!(
        app.explorer
            .analysis
            .as_ref()
            .unwrap()
            .texts
            .last()
            .unwrap(),
        "xy"
    );
}

#[test]
fn pooling_switch_re_embeds_everything_and_a_refusal_keeps_the_old_model() {
    let mut app = ready_app(&TYPICAL[..3], true);
    app.on_key(key('p'));
    let reqs = app.take_requests();
    assert!(
        matches!(&reqs[0], Request::SetPooling { pooling, .. } if pooling == "max"),
        "mean is followed by max: {reqs:?}"
    );
    let generation = app.explorer.base.generation;
    app.on_worker(WorkerEvent::LoadFailed {
        slot: Slot::Base,
        generation,
        error: "Dense expects 32".into(),
    });
    assert!(matches!(app.explorer.base.model, ModelState::Ready(_)));
    assert!(app.shell.status.as_ref().unwrap().error);
    assert_eq!(
        serve(&mut app),
        3,
        "the cache was cleared with the generation"
    );
}

#[test]
fn a_failed_model_says_why() {
    let mut app = App::new(vec!["a".into()], true);
    app.load_model("./nope", None);
    let generation = app.explorer.base.generation;
    app.on_worker(WorkerEvent::LoadFailed {
        slot: Slot::Base,
        generation,
        error: "model folder `./nope` does not exist".into(),
    });
    let t = render(&mut app, 100, 24);
    let screen: String = t
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(screen.contains("model failed: model folder `./nope` does not exist"));
}

#[test]
fn editing_deleting_and_moving() {
    let mut app = ready_app(&["one", "two", "three"], true);
    app.on_key(key('j'));
    app.on_key(key('e'));
    assert!(
        matches!(&app.shell.mode, Mode::Editing(EditTarget::Sentence(1), e) if e.text() == "two")
    );
    type_str(&mut app, " more");
    app.on_key(code(KeyCode::Enter));
    assert_eq!(app.explorer.sentences, ["one", "two more", "three"]);
    app.on_key(key('J'));
    assert_eq!(app.explorer.sentences, ["one", "three", "two more"]);
    assert_eq!(app.explorer.selected, 2);
    app.on_key(key('d'));
    assert_eq!(app.explorer.sentences, ["one", "three"]);
    assert_eq!(app.explorer.selected, 1);
    // An empty new sentence is not kept.
    app.on_key(key('a'));
    app.on_key(code(KeyCode::Enter));
    assert_eq!(app.explorer.sentences.len(), 2);
    assert!(app.shell.status.as_ref().unwrap().error);
    // q while typing is a letter; Ctrl-C always quits.
    app.on_key(key('a'));
    app.on_key(key('q'));
    assert!(!app.quit);
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.quit);
}

#[test]
fn paste_adds_lines_or_types_into_the_line() {
    let mut app = ready_app(&["one"], true);
    app.on_paste("first pasted\n\nsecond pasted\n");
    assert_eq!(
        app.explorer.sentences,
        ["one", "first pasted", "second pasted"]
    );
    app.on_key(key('a'));
    app.on_paste("multi\nline");
    assert!(matches!(&app.shell.mode, Mode::Editing(_, e) if e.text() == "multi line"));
}

#[test]
fn demo_sets_open_save_and_clicks() {
    let mut app = ready_app(&["one"], true);
    app.on_key(key('D'));
    app.on_key(key('j'));
    app.on_key(code(KeyCode::Enter));
    assert!(
        app.explorer
            .sentences
            .iter()
            .any(|s| s.contains("not good"))
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saved.txt");
    app.on_key(key('w'));
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    type_str(&mut app, path.to_str().unwrap());
    app.on_key(code(KeyCode::Enter));
    let saved = std::fs::read_to_string(&path).unwrap();
    assert_eq!(saved.lines().count(), app.explorer.sentences.len());

    let mut other = ready_app(&["x"], true);
    other.on_key(key('o'));
    type_str(&mut other, path.to_str().unwrap());
    other.on_key(code(KeyCode::Enter));
    serve(&mut other);
    assert_eq!(other.explorer.sentences, app.explorer.sentences);
    other.on_key(key('o'));
    type_str(&mut other, "/no/such/file.txt");
    other.on_key(code(KeyCode::Enter));
    assert!(
        other
            .shell
            .status
            .as_ref()
            .unwrap()
            .text
            .contains("/no/such/file.txt: cannot open")
    );

    // A click on the third row of the list selects the third sentence.
    render(&mut other, 100, 30);
    let areas = ui::layout(ratatui::layout::Rect::new(0, 0, 100, 30));
    other.on_mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: areas.sentences.x + 5,
        row: areas.sentences.y + 3,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(other.explorer.selected, 2);
    // A click on a matrix cell selects that pair.
    other.on_mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        // Inside the border: the label column (a third of the width), then cells of 7.
        column: areas.matrix.x + 1 + (areas.matrix.width - 2) / 3 + 7 + 2,
        row: areas.matrix.y + 1 + 1 + 3,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(other.explorer.focus, Pane::Matrix);
    assert_eq!((other.explorer.selected, other.explorer.matrix_col), (3, 1));
}

#[test]
fn a_model_that_fails_to_load_leaves_the_old_one_in_use() {
    let mut app = ready_app(&TYPICAL[..3], true);
    app.on_key(key('m'));
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    type_str(&mut app, "./nope");
    app.on_key(code(KeyCode::Enter));
    let reqs = app.take_requests();
    assert!(matches!(&reqs[0], Request::Load { spec, .. } if spec == "./nope"));
    let generation = app.explorer.base.generation;
    app.on_worker(WorkerEvent::LoadFailed {
        slot: Slot::Base,
        generation,
        error: "model folder `./nope` does not exist".into(),
    });
    assert!(
        matches!(&app.explorer.base.model, ModelState::Ready(m) if m.name.ends_with("all-MiniLM-L6-v2"))
    );
    assert!(
        app.shell
            .status
            .as_ref()
            .unwrap()
            .text
            .contains("still using sentence-transformers/all-MiniLM-L6-v2")
    );
    assert_eq!(serve(&mut app), 3);
}

#[test]
fn t_opens_the_training_pane() {
    let mut app = ready_app(&TYPICAL[..3], true);
    app.on_key(key('t'));
    assert_eq!(app.screen, sbert_tui::tui::app::Screen::Training);
}

#[test]
fn non_finite_vectors_are_reported_never_analysed() {
    // A model with NaN weights once hung the explorer for good (the PCA's SVD spun on NaN).
    let mut app = ready_app(&TYPICAL[..3], true);
    app.on_key(key('a'));
    type_str(&mut app, "broken");
    app.on_key(code(KeyCode::Enter));
    let reqs = app.take_requests();
    let Some(Request::Embed { id, generation, .. }) = reqs.last() else {
        panic!("{reqs:?}")
    };
    app.on_worker(WorkerEvent::Embedded {
        slot: Slot::Base,
        id: *id,
        generation: *generation,
        items: vec![Embedded {
            text: "broken".into(),
            vector: vec![f32::NAN; 27],
            tokens: TokenCount::plain(3),
        }],
        millis: 1.0,
    });
    assert!(app.explorer.analysis.is_none(), "nothing analysed");
    let status = app.shell.status.clone().unwrap();
    assert!(
        status.error && status.text.contains("non-finite"),
        "{status:?}"
    );
    // The same texts are not asked for again (that would fail again), and the app still
    // answers keys: q quits.
    app.on_key(key('j'));
    assert!(app.take_requests().is_empty());
    let t = render(&mut app, 100, 30);
    let screen = format!("{}", t.backend());
    assert!(screen.contains("cannot embed the sentences"), "{screen}");
    app.on_key(key('q'));
    assert!(app.quit);
}

#[test]
fn the_training_form_keeps_its_keys_after_tab_into_an_empty_run_list() {
    // Tab into the (empty) run list and back once left the form dead until `n`.
    let mut app = ready_app(&TYPICAL[..3], true);
    app.on_key(key('t'));
    app.on_key(code(KeyCode::Tab)); // an empty run list takes no focus
    app.on_key(code(KeyCode::Down));
    app.on_key(code(KeyCode::Tab));
    app.on_key(code(KeyCode::Down));
    assert_eq!(
        app.training.form.selected, 2,
        "each ↓ moved to the next field"
    );
    app.on_key(code(KeyCode::Up));
    app.on_key(code(KeyCode::Enter));
    assert!(
        matches!(app.shell.mode, Mode::Editing(EditTarget::Field(_), _)),
        "Enter edits the model field"
    );
}

#[test]
fn a_file_of_more_sentences_than_the_explorer_holds_is_cut_with_a_warning() {
    use sbert_tui::tui::explorer::MAX_SENTENCES;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.txt");
    let lines: Vec<String> = (0..MAX_SENTENCES + 100)
        .map(|i| format!("sentence {i}"))
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let mut app = ready_app(&["one"], true);
    app.on_key(key('o'));
    type_str(&mut app, path.to_str().unwrap());
    app.on_key(code(KeyCode::Enter));
    assert_eq!(app.explorer.sentences.len(), MAX_SENTENCES);
    let status = app.shell.status.clone().unwrap();
    assert!(
        status.error
            && status
                .text
                .contains(&format!("kept the first {MAX_SENTENCES} of 600")),
        "{status:?}"
    );
    // Adding beyond the limit is refused; pasting adds what fits.
    app.on_key(key('a'));
    assert!(matches!(app.shell.mode, Mode::Normal));
    app.explorer.sentences.pop();
    app.on_paste("x\ny\n");
    assert_eq!(app.explorer.sentences.len(), MAX_SENTENCES);
    assert!(
        app.shell
            .status
            .as_ref()
            .unwrap()
            .text
            .contains("added 1 of 2")
    );
}

#[test]
fn a_new_pooling_rebuilds_the_analysis() {
    // A new pooling (or model) once changed the status bar but not the matrix: the analysis of
    // the same texts was kept. It belongs to the model generation that made it.
    let mut app = ready_app(&TYPICAL[..3], true);
    let before = app.explorer.analysis.as_ref().unwrap().generations;
    app.on_key(key('p'));
    serve(&mut app);
    let after = app.explorer.analysis.as_ref().unwrap().generations;
    assert_ne!(before, after);
    assert_eq!(after.0, app.explorer.base.generation);
}
