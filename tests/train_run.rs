//! The training loop on the tiny fixture model: learning, checkpoints, stopping and resuming,
//! non-finite losses, refusals, every loss on its sample data, and SimCSE's dropout.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use sbert_tui::model::{LoadOptions, SentenceEncoder};
use sbert_tui::train::config::TrainConfig;
use sbert_tui::train::data::{self, Example};
use sbert_tui::train::events::TrainEvent;
use sbert_tui::train::losses::LossKind;
use sbert_tui::train::optim::AdamWConfig;
use sbert_tui::train::run::{self, Outcome, StopSignal, TrainError};
use sbert_tui::train::session::{LossSetup, Session};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample_data")
        .join(name)
}

fn config(data: &str, loss: LossKind, out: &Path) -> TrainConfig {
    let mut c = TrainConfig::new(
        fixture("tiny-bert-st").to_str().unwrap(),
        sample(data),
        loss,
        out.to_path_buf(),
    );
    c.lr = 1e-3;
    c.batch_size = 8;
    c.device = sbert_tui::model::DeviceChoice::Cpu;
    c
}

fn run(c: TrainConfig) -> (Result<Outcome, TrainError>, Vec<TrainEvent>) {
    let mut events = Vec::new();
    let r = run::train(c, None, &mut |e| events.push(e.clone()), &StopSignal::new());
    (r, events)
}

fn embed(dir: &Path) -> Vec<Vec<f32>> {
    let enc = SentenceEncoder::load(dir, &LoadOptions::default()).unwrap();
    enc.encode(
        &["A man is playing a guitar.", "A woman slices an onion."],
        4,
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn the_loss_goes_down_and_the_run_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut c = config("scored-pairs.csv", LossKind::Cosine, &out);
    c.epochs = 4;
    c.dropout = false;
    c.eval = Some(sample("scored-pairs-dev.csv"));
    let (r, events) = run(c);
    let Outcome::Finished { metrics, .. } = r.unwrap() else {
        panic!()
    };
    assert_eq!(metrics[0].0, "spearman_cosine");
    let losses: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect();
    assert_eq!(losses.len(), 4 * 38);
    let first: f64 = losses[..38].iter().sum::<f64>() / 38.0;
    let last: f64 = losses[losses.len() - 38..].iter().sum::<f64>() / 38.0;
    assert!(last < first * 0.9, "mean loss {first} -> {last}");
    // Evaluated before training and after each epoch.
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, TrainEvent::Eval { .. }))
            .count(),
        5
    );
    // The log holds every event, ending with `finished`.
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len());
    assert_eq!(lines.last().unwrap()["event"], "finished");
    // The model card.
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains("CosineSimilarityLoss") && card.contains("| batch size | 8 |"),
        "{card}"
    );
    assert!(card.contains("spearman_cosine"));
    SentenceEncoder::load(&out, &LoadOptions::default()).unwrap();
}

#[test]
fn a_stopped_run_resumes_to_the_same_model_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    // Uninterrupted, dropout on.
    let full = dir.path().join("full");
    let mut c = config("scored-pairs.csv", LossKind::CoSent, &full);
    c.epochs = 2;
    assert!(matches!(
        run(c.clone()).0.unwrap(),
        Outcome::Finished { .. }
    ));

    // The same run, stopped after step 23 (inside the second epoch), then resumed.
    let part = dir.path().join("part");
    c.output = part.clone();
    let stop = StopSignal::new();
    let mut steps = 0;
    let r = run::train(
        c.clone(),
        None,
        &mut |e| {
            if let TrainEvent::Step { step, .. } = e {
                steps = *step;
                if *step == 23 {
                    stop.stop(true);
                }
            }
        },
        &stop,
    )
    .unwrap();
    let Outcome::Cancelled {
        step: 23,
        checkpoint: Some(ckpt),
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(steps, 23);
    // A checkpoint is a loadable model, and nothing was saved over the output's model files.
    SentenceEncoder::load(&ckpt, &LoadOptions::default()).unwrap();
    assert!(!part.join("modules.json").exists());

    let found = run::find_checkpoint(&part).unwrap();
    assert_eq!(found, ckpt);
    let saved = run::saved_config(&found).unwrap();
    let mut events = Vec::new();
    let r = run::train(
        saved,
        Some(&found),
        &mut |e| events.push(e.clone()),
        &StopSignal::new(),
    )
    .unwrap();
    assert!(matches!(r, Outcome::Finished { .. }));
    assert!(matches!(
        events[0],
        TrainEvent::Started { start_step: 23, .. }
    ));
    let resumed_steps = events
        .iter()
        .filter(|e| matches!(e, TrainEvent::Step { .. }))
        .count();
    assert_eq!(resumed_steps, 76 - 23);
    assert_close(
        &embed(&part),
        &embed(&full),
        1e-6,
        "resumed vs uninterrupted",
    );
}

#[test]
fn checkpoints_are_kept_to_the_last_k() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut c = config("texts.csv", LossKind::SimCse, &out);
    c.checkpoint_steps = Some(10);
    c.keep_checkpoints = 2;
    let (r, events) = run(c.clone());
    r.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, TrainEvent::Checkpoint { .. }))
            .count(),
        3
    );
    let mut names: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["checkpoint-000020", "checkpoint-000030"]);
    // Starting a fresh run into a folder with checkpoints is refused.
    let err = run(c).0.unwrap_err().to_string();
    assert!(
        err.contains("already holds checkpoints") && err.contains("--resume"),
        "{err}"
    );
}

#[test]
fn a_non_finite_loss_stops_the_run_and_writes_no_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut c = config("pairs.tsv", LossKind::Mnr, &out);
    c.scale = Some(1e39); // beyond f32: cos * scale is infinite, and inf - inf is NaN
    let (r, events) = run(c);
    let err = r.unwrap_err().to_string();
    assert!(err.contains("the loss became NaN at step 1"), "{err}");
    assert!(err.contains("no checkpoint had been saved yet"), "{err}");
    assert!(matches!(events.last().unwrap(), TrainEvent::Failed { .. }));
    assert!(!out.join("modules.json").exists());
}

#[test]
fn a_loss_that_does_not_fit_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = run(config("scored-pairs.csv", LossKind::Softmax, &out))
        .0
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("loss `softmax` needs the columns premise, hypothesis, label"),
        "{err}"
    );
    assert!(!out.exists());
    let err = run(config("nli.csv", LossKind::Triplet, &out))
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("losses that fit this data: softmax"), "{err}");
}

#[test]
fn every_loss_trains_on_its_sample_data() {
    let cases = [
        ("scored-pairs.csv", LossKind::Cosine),
        ("scored-pairs.csv", LossKind::CoSent),
        ("scored-pairs.csv", LossKind::Angle),
        ("labeled-pairs.csv", LossKind::Contrastive),
        ("labeled-pairs.csv", LossKind::OnlineContrastive),
        ("nli.csv", LossKind::Softmax),
        ("triplets.csv", LossKind::Triplet),
        ("triplets.csv", LossKind::Mnr),
        ("pairs.tsv", LossKind::Mnr),
        ("retrieval.jsonl", LossKind::MnrSymmetric),
        ("texts.csv", LossKind::SimCse),
    ];
    for (file, loss) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut c = config(file, loss, &out);
        c.epochs = 1;
        if loss == LossKind::Softmax {
            c.eval = Some(sample("nli-dev.csv"));
        }
        let (r, events) = run(c);
        let outcome = r.unwrap_or_else(|e| panic!("{file} / {loss}: {e}"));
        let Outcome::Finished { metrics, .. } = outcome else {
            panic!()
        };
        if loss == LossKind::Softmax {
            assert_eq!(metrics[0].0, "classifier_accuracy");
        }
        assert!(
            events
                .iter()
                .all(|e| !matches!(e, TrainEvent::Step { loss, .. } if !loss.is_finite())),
            "{file} / {loss}"
        );
        assert_ne!(
            embed(&out),
            embed(&fixture("tiny-bert-st")),
            "{file} / {loss}: the model changed"
        );
    }
}

#[test]
fn distillation_learns_the_teacher_and_refuses_other_widths() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let xlmr = fixture("tiny-xlmr-st").to_string_lossy().into_owned();
    let mut c = config("texts.csv", LossKind::Mse, &out);
    c.teacher = Some(xlmr.clone());
    let err = run(c.clone()).0.unwrap_err().to_string();
    assert!(
        err.contains("gives 32-dimensional vectors but the student gives 16"),
        "{err}"
    );
    // Student: the same XLM-R with CLS pooling, teacher: its mean pooling.
    c.model = xlmr;
    c.pooling = Some("cls".parse().unwrap());
    c.epochs = 3;
    let (r, events) = run(c);
    r.unwrap();
    let losses: Vec<f64> = events
        .iter()
        .filter_map(|e| {
            if let TrainEvent::Step { loss, .. } = e {
                Some(*loss)
            } else {
                None
            }
        })
        .collect();
    assert!(
        losses.last().unwrap() < &(losses[0] * 0.5),
        "{} -> {}",
        losses[0],
        losses.last().unwrap()
    );
}

#[test]
fn simcse_views_differ_only_with_dropout() {
    let d = data::load(&sample("texts.csv")).unwrap();
    let batch: Vec<&Example> = d.examples.iter().take(4).collect();
    let setup = LossSetup::new(LossKind::SimCse);
    let with = Session::new(tiny(), setup, AdamWConfig::default(), Some(1), 1, Some(1.0)).unwrap();
    let views = with.embed_columns(&batch).unwrap();
    assert_eq!(views.len(), 2);
    let (a, b): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
        (views[0].to_vec2().unwrap(), views[1].to_vec2().unwrap());
    assert!(
        max_abs_diff(&a, &b, "views") > 1e-3,
        "dropout makes two views"
    );
    let without = Session::new(tiny(), setup, AdamWConfig::default(), None, 1, Some(1.0)).unwrap();
    let views = without.embed_columns(&batch).unwrap();
    let (a, b): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
        (views[0].to_vec2().unwrap(), views[1].to_vec2().unwrap());
    assert!(
        max_abs_diff(&a, &b, "views") < 1e-6,
        "no dropout, no second view"
    );
}

#[test]
fn a_stop_without_checkpoint_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stop = StopSignal::new();
    let r = run::train(
        config("scored-pairs.csv", LossKind::Cosine, &out),
        None,
        &mut |e| {
            if matches!(e, TrainEvent::Step { step: 3, .. }) {
                stop.stop(false);
            }
        },
        &stop,
    )
    .unwrap();
    assert_eq!(
        r,
        Outcome::Cancelled {
            step: 3,
            checkpoint: None
        }
    );
    assert!(!out.join("checkpoints").exists());
}
