//! The training pane and the before / after comparison, fed by engine events and worker answers
//! made up here (no model, no training thread).

mod common;

use common::tui_support::*;
use crossterm::event::KeyCode;
use std::sync::Arc;

use sbert_tui::train::data::{DataKind, Dataset, Example};
use sbert_tui::train::events::TrainEvent;
use sbert_tui::train::rules::Setting;
use sbert_tui::tui::app::{App, Screen};
use sbert_tui::tui::explorer::MatrixView;
use sbert_tui::tui::shell::{Confirm, Effect, Mode};
use sbert_tui::tui::training::RunStatus;

const SENTENCES: [&str; 5] = [
    "A man is playing a guitar.",
    "Someone strums a guitar.",
    "A woman is slicing an onion.",
    "The stock market fell today.",
    "Share prices dropped sharply.",
];

/// A data file as the form would have read it: `rows` rows, the first two shown in the preview.
fn data(path: &str, kind: DataKind, rows: usize) -> Result<Arc<Dataset>, String> {
    let first = [
        ("A plane is taking off.", "An air plane is taking off.", 1.0),
        (
            "A man is playing a large flute.",
            "A man is playing a flute.",
            0.76,
        ),
    ];
    let examples = (0..rows)
        .map(|i| {
            let (a, b, score) = first.get(i).copied().unwrap_or(("a", "b", 0.5));
            match kind {
                DataKind::Nli => Example::Nli {
                    premise: a.into(),
                    hypothesis: b.into(),
                    label: 0,
                },
                _ => Example::Scored {
                    a: a.into(),
                    b: b.into(),
                    score,
                },
            }
        })
        .collect();
    Ok(Arc::new(Dataset {
        path: path.into(),
        kind,
        columns: vec!["sentence1".into(), "sentence2".into(), "score".into()],
        examples,
        scores_scaled: true,
        stamp: None,
    }))
}

/// The app on the training screen with a valid form. No run really starts, so the output folder
/// (fixed, for the snapshots) is never created.
fn training_app(out: &std::path::Path) -> App {
    let mut app = ready_app(&SENTENCES, true);
    app.on_key(key('t'));
    assert_eq!(app.screen, Screen::Training);
    app.take_effects();
    for (f, v) in [
        (Setting::Data, "sample_data/scored-pairs.csv"),
        (Setting::Eval, "sample_data/scored-pairs-dev.csv"),
        (Setting::Output, out.to_str().unwrap()),
    ] {
        app.training.form.set(f, v.into());
    }
    app.on_data(
        "sample_data/scored-pairs.csv",
        false,
        data("sample_data/scored-pairs.csv", DataKind::ScoredPairs, 300),
    );
    app.on_data(
        "sample_data/scored-pairs-dev.csv",
        true,
        data(
            "sample_data/scored-pairs-dev.csv",
            DataKind::ScoredPairs,
            200,
        ),
    );
    app
}

fn steps(app: &mut App, range: std::ops::RangeInclusive<usize>, total: usize) {
    for step in range {
        let loss = 0.3 / (1.0 + step as f64 / 5.0) + 0.02 * ((step * 7 % 5) as f64 / 5.0);
        app.on_train(&TrainEvent::Step {
            step,
            total_steps: total,
            epoch: step as f64 / 19.0,
            loss,
            learning_rate: 2e-5,
            grad_norm: Some(0.5),
            sentences_per_second: 24.0,
            elapsed_seconds: step as f64 * 1.3,
            batch: None,
        });
    }
}

fn start(app: &mut App) {
    app.on_key(key('s'));
    let effects = app.take_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::StartTraining { .. }]),
        "{effects:?}"
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
    app.on_train(&TrainEvent::Eval {
        step: 0,
        epoch: 0.0,
        metrics: vec![
            ("spearman_cosine".into(), 0.8672),
            ("pearson_cosine".into(), 0.8696),
        ],
    });
}

#[test]
fn form_with_errors() {
    let dir = std::path::Path::new("target/never-created");
    let mut app = training_app(&dir.join("out"));
    app.training.form.set(Setting::Epochs, "zero".into());
    app.training.form.set(Setting::Lr, "-1".into());
    app.on_data(
        "sample_data/scored-pairs.csv",
        false,
        data("sample_data/scored-pairs.csv", DataKind::Nli, 300),
    );
    app.training.form.set(Setting::Loss, "cosine".into());
    app.on_key(key('s'));
    assert!(
        app.take_effects().is_empty(),
        "an invalid form does not start"
    );
    assert!(
        app.training
            .form
            .error(Setting::Loss)
            .unwrap()
            .contains("needs the columns sentence1, sentence2, score")
    );
    insta::assert_snapshot!(render(&mut app, 120, 36).backend());
}

#[test]
fn running_then_finished() {
    let dir = std::path::Path::new("target/never-created");
    let mut app = training_app(&dir.join("out"));
    start(&mut app);
    steps(&mut app, 1..=25, 38);
    app.on_train(&TrainEvent::Eval {
        step: 19,
        epoch: 1.0,
        metrics: vec![
            ("spearman_cosine".into(), 0.8801),
            ("pearson_cosine".into(), 0.8812),
        ],
    });
    assert!(app.active_run().is_some());
    insta::assert_snapshot!("running", render(&mut app, 120, 36).backend());
    // The explorer still answers while the run trains.
    app.on_key(key('t'));
    app.on_key(key('j'));
    assert_eq!((app.screen, app.explorer.selected), (Screen::Explorer, 1));
    app.on_key(key('t'));
    steps(&mut app, 26..=38, 38);
    app.on_train(&TrainEvent::Finished {
        step: 38,
        output: dir.join("out"),
        metrics: vec![("spearman_cosine".into(), 0.8926)],
    });
    assert_eq!(app.training.runs[0].status, RunStatus::Finished);
    insta::assert_snapshot!("finished", render(&mut app, 120, 36).backend());
}

#[test]
fn stopped_with_a_checkpoint_and_failed() {
    let dir = std::path::Path::new("target/never-created");
    let mut app = training_app(&dir.join("out"));
    start(&mut app);
    steps(&mut app, 1..=7, 38);
    app.on_key(key('x'));
    assert_eq!(app.shell.mode, Mode::Confirm(Confirm::StopRun));
    insta::assert_snapshot!("stop_question", render(&mut app, 120, 36).backend());
    app.on_key(key('k'));
    assert!(matches!(
        app.take_effects().as_slice(),
        [Effect::StopTraining {
            keep_checkpoint: true
        }]
    ));
    let ckpt = dir.join("out/checkpoints/checkpoint-000007");
    app.on_train(&TrainEvent::Checkpoint {
        step: 7,
        path: ckpt.clone(),
    });
    app.on_train(&TrainEvent::Cancelled {
        step: 7,
        checkpoint: Some(ckpt.clone()),
    });
    assert_eq!(
        app.training.runs[0].status,
        RunStatus::Cancelled {
            checkpoint: Some(ckpt)
        }
    );
    insta::assert_snapshot!("stopped", render(&mut app, 120, 36).backend());

    // A second run fails.
    app.on_key(key('n'));
    app.training.form.set(
        Setting::Output,
        dir.join("out2").to_string_lossy().into_owned(),
    );
    start(&mut app);
    steps(&mut app, 1..=3, 38);
    app.on_train(&TrainEvent::Failed {
        step: 3,
        message: "the loss became NaN at step 4 (epoch 1); training stopped and nothing was written over out2; no checkpoint had been saved yet. Try a lower learning rate.".into(),
    });
    assert!(matches!(app.training.runs[1].status, RunStatus::Failed(_)));
    insta::assert_snapshot!("failed", render(&mut app, 120, 36).backend());
    assert_eq!(app.training.runs.len(), 2, "the history keeps both runs");
}

#[test]
fn quitting_during_a_run_asks_and_stops_first() {
    let dir = std::path::Path::new("target/never-created");
    let mut app = training_app(&dir.join("out"));
    start(&mut app);
    app.on_key(key('q'));
    assert_eq!(app.shell.mode, Mode::Confirm(Confirm::QuitDuringRun));
    assert!(!app.quit);
    app.on_key(key('c'));
    assert_eq!(app.shell.mode, Mode::Normal);
    app.on_key(key('q'));
    app.on_key(key('d'));
    assert!(matches!(
        app.take_effects().as_slice(),
        [Effect::StopTraining {
            keep_checkpoint: false
        }]
    ));
    assert!(!app.quit, "waits for the run to stop");
    app.on_train(&TrainEvent::Cancelled {
        step: 1,
        checkpoint: None,
    });
    assert!(app.quit);
}

#[test]
fn before_and_after_views() {
    let dir = std::path::Path::new("target/never-created");
    let mut app = training_app(&dir.join("out"));
    start(&mut app);
    steps(&mut app, 1..=38, 38);
    app.on_train(&TrainEvent::Finished {
        step: 38,
        output: dir.join("out"),
        metrics: vec![],
    });
    app.on_key(key('l'));
    assert_eq!(app.screen, Screen::Explorer);
    assert_eq!(
        serve(&mut app),
        SENTENCES.len(),
        "the fine-tuned model embeds every sentence"
    );
    assert_eq!(app.explorer.view, MatrixView::Difference);
    let a = app.explorer.analysis.as_ref().unwrap();
    assert!(a.tuned.is_some());
    assert_eq!(
        a.tuned_coords.len(),
        SENTENCES.len(),
        "drawn in the base basis"
    );
    insta::assert_snapshot!("difference", render(&mut app, 120, 36).backend());
    app.on_key(key('v')); // difference -> base
    app.on_key(key('v')); // base -> fine-tuned
    assert_eq!(app.explorer.view, MatrixView::Tuned);
    insta::assert_snapshot!("tuned", render(&mut app, 120, 36).backend());
    app.color = false;
    app.explorer.view = MatrixView::Difference;
    insta::assert_snapshot!("difference_no_color", render(&mut app, 120, 36).backend());
    // Typing a sentence embeds it with both models.
    app.on_key(key('a'));
    app.on_key(key('x'));
    assert_eq!(serve(&mut app), 2);
    app.on_key(code(KeyCode::Esc));
    app.on_key(key('u'));
    assert!(app.explorer.tuned.is_none());
    assert_eq!(app.explorer.view, MatrixView::Base);
}

/// What an MNR or triplet loss saw in the newest batch, in the run view, both languages.
#[test]
fn the_run_view_shows_the_batch_the_loss_saw() {
    use sbert_tui::lessons::Lang;
    use sbert_tui::train::events::BatchView;
    let dir = std::path::Path::new("target/never-created");
    let mut app = training_app(dir);
    start(&mut app);
    let step = |app: &mut App, batch: BatchView| {
        app.on_train(&TrainEvent::Step {
            step: 3,
            total_steps: 38,
            epoch: 0.1,
            loss: 0.5,
            learning_rate: 2e-5,
            grad_norm: None,
            sentences_per_second: 24.0,
            elapsed_seconds: 4.0,
            batch: Some(batch),
        });
    };
    // Anchor 2's own positive (0.41) loses to positive 0 (0.55): marked as a miss.
    let cos = [
        [0.91, 0.12, 0.05, 0.30],
        [0.10, 0.88, 0.22, 0.01],
        [0.55, 0.20, 0.41, 0.18],
        [0.02, 0.15, 0.33, 0.79],
    ];
    step(
        &mut app,
        BatchView::Ranking {
            anchors: SENTENCES[..4].iter().map(|s| s.to_string()).collect(),
            cosines: cos.iter().map(|r| r.to_vec()).collect(),
            scale: 20.0,
            rows: 16,
            correct: 13,
        },
    );
    insta::assert_snapshot!("batch_ranking_en", render(&mut app, 120, 40).backend());
    app.lang = Lang::Zh;
    insta::assert_snapshot!("batch_ranking_zh", render(&mut app, 120, 40).backend());
    app.lang = Lang::En;
    step(
        &mut app,
        BatchView::Triplet {
            anchors: SENTENCES[..3].iter().map(|s| s.to_string()).collect(),
            distances: vec![(1.2, 7.5), (3.9, 4.1), (2.0, 1.5)],
            margin: 5.0,
            distance: "euclidean".into(),
            rows: 3,
            violating: 2,
        },
    );
    let t = render(&mut app, 120, 40);
    let screen = format!("{:?}", t.backend());
    assert!(
        screen.contains("2/3 triplets still inside the margin"),
        "{screen}"
    );
    insta::assert_snapshot!("batch_triplet_en", t.backend());
    app.lang = Lang::Zh;
    insta::assert_snapshot!("batch_triplet_zh", render(&mut app, 120, 40).backend());
}
