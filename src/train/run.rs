//! The training loop: epochs of shuffled batches, the learning-rate schedule, evaluation,
//! checkpoints (atomic, the last K kept), cancellation at the end of a step, a stop on a
//! non-finite loss, and the final model saved atomically with its model card.
//!
//! Output folder:
//! ```text
//! OUTPUT/                 the fine-tuned model (classic sentence-transformers layout) + README.md
//! OUTPUT/metrics.jsonl    every event of the run, one JSON object per line
//! OUTPUT/checkpoints/checkpoint-000100/   a loadable model + optimizer.safetensors + trainer_state.json
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::card;
use super::config::TrainConfig;
use super::data::{self, DataKind, Dataset, Example};
use super::eval::{self, Metrics};
use super::events::TrainEvent;
use super::losses::LossKind;
use super::optim::{AdamWConfig, linear_schedule};
use super::session::{LossSetup, Session, StepError};
use crate::model::save::{write_folder_atomically, write_model};
use crate::model::{self, LoadOptions, SentenceEncoder, SourceOptions};

/// A request to stop a run at the end of the current step, shared with the thread that runs it.
#[derive(Debug, Default)]
pub struct StopSignal(AtomicU8);

impl StopSignal {
    const RUN: u8 = 0;
    const KEEP: u8 = 1;
    const DISCARD: u8 = 2;

    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop; `keep_checkpoint` saves where it was first.
    pub fn stop(&self, keep_checkpoint: bool) {
        let v = if keep_checkpoint {
            Self::KEEP
        } else {
            Self::DISCARD
        };
        self.0.store(v, Ordering::SeqCst);
    }

    /// `Some(keep_checkpoint)` once a stop was asked for.
    pub fn requested(&self) -> Option<bool> {
        match self.0.load(Ordering::SeqCst) {
            Self::RUN => None,
            v => Some(v == Self::KEEP),
        }
    }
}

/// Why a run ended without a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error("{0}")]
    NonFinite(String),
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Model(e.into())
    }
}

/// How a run ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished {
        output: PathBuf,
        metrics: Metrics,
    },
    Cancelled {
        step: usize,
        checkpoint: Option<PathBuf>,
    },
}

/// Saved in each checkpoint: where the run was and how it was set up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub global_step: usize,
    /// The epoch in progress (0-based) and the next batch in it.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub total_steps: usize,
    /// Position of the dropout generator, as a decimal string (a u128).
    pub dropout_position: String,
    pub config: TrainConfig,
    /// The evaluations so far, for the model card.
    pub evals: Vec<(usize, Metrics)>,
    /// (step, loss) every step so far, for the model card.
    pub losses: Vec<(usize, f64)>,
}

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const CLASSIFIER_FILE: &str = "classifier.safetensors";

/// The configuration saved in a checkpoint, for `--resume`.
pub fn saved_config(checkpoint: &Path) -> Result<TrainConfig, TrainError> {
    let p = checkpoint.join(STATE_FILE);
    let text = fs::read_to_string(&p).map_err(|source| TrainError::Io {
        path: p.clone(),
        source,
    })?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
    Ok(state.config)
}

/// The newest checkpoint under `dir` if it is a run's output folder, else `dir` itself.
pub fn find_checkpoint(dir: &Path) -> Result<PathBuf, TrainError> {
    if dir.join(STATE_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    let ckpts = list_checkpoints(&dir.join("checkpoints"));
    ckpts.last().map(|(_, p)| p.clone()).ok_or_else(|| {
        TrainError::Config(format!(
            "{} holds no checkpoint (no {STATE_FILE}, no checkpoints/checkpoint-*)",
            dir.display()
        ))
    })
}

fn list_checkpoints(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The order of examples in an epoch: a shuffle seeded by (seed, epoch), so a resumed run sees
/// the same batches.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(epoch as u64),
    );
    order.shuffle(&mut rng);
    order
}

struct Log {
    file: fs::File,
    path: PathBuf,
}

impl Log {
    fn open(output: &Path, append: bool) -> Result<Self, TrainError> {
        let path = output.join("metrics.jsonl");
        fs::create_dir_all(output).map_err(|source| TrainError::Io {
            path: output.into(),
            source,
        })?;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .map_err(|source| TrainError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self { file, path })
    }

    fn write(&mut self, event: &TrainEvent) -> Result<(), TrainError> {
        let line = serde_json::to_string(event).expect("events serialize");
        writeln!(self.file, "{line}").map_err(|source| TrainError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Sends each event to the caller and to the log.
struct Reporter<'a> {
    log: Log,
    sink: &'a mut dyn FnMut(&TrainEvent),
}

impl Reporter<'_> {
    fn emit(&mut self, event: TrainEvent) -> Result<(), TrainError> {
        self.log.write(&event)?;
        (self.sink)(&event);
        Ok(())
    }

    /// Records and reports an evaluation, when there was one.
    fn eval(
        &mut self,
        metrics: Option<Metrics>,
        step: usize,
        epoch: f64,
        evals: &mut Vec<(usize, Metrics)>,
    ) -> Result<(), TrainError> {
        if let Some(metrics) = metrics {
            evals.push((step, metrics.clone()));
            self.emit(TrainEvent::Eval {
                step,
                epoch,
                metrics,
            })?;
        }
        Ok(())
    }
}

/// Loads the model a run starts from (or continues).
fn load_encoder(spec: &str, config: &TrainConfig) -> Result<SentenceEncoder, TrainError> {
    let mut source = SourceOptions::from_env();
    source.progress = false;
    Ok(model::load(
        spec,
        &source,
        &LoadOptions {
            device: config.device,
            pooling: config.pooling.clone(),
            max_seq_length: config.max_seq_length,
        },
    )?)
}

/// Runs (or, with `resume`, continues) a training run. Every event goes to `sink` and to
/// `OUTPUT/metrics.jsonl`. `stop` is checked after every step.
pub fn train(
    config: TrainConfig,
    resume: Option<&Path>,
    sink: &mut dyn FnMut(&TrainEvent),
    stop: &StopSignal,
) -> Result<Outcome, TrainError> {
    config.validate().map_err(TrainError::Config)?;
    let dataset = data::load(&config.data)?;
    dataset
        .check_loss(config.loss)
        .map_err(TrainError::Config)?;
    let eval_set = match &config.eval {
        Some(p) => {
            let d = data::load(p)?;
            check_evaluable(&d, config.loss)?;
            Some(d)
        }
        None => None,
    };

    let state: Option<TrainerState> = match resume {
        Some(dir) => {
            let p = dir.join(STATE_FILE);
            let text = fs::read_to_string(&p).map_err(|source| TrainError::Io {
                path: p.clone(),
                source,
            })?;
            Some(
                serde_json::from_str(&text)
                    .map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let model_spec = resume.map_or(config.model.clone(), |d| d.to_string_lossy().into_owned());
    let encoder = load_encoder(&model_spec, &config)?;
    let device = encoder.device().clone();
    let device_name = encoder.info().device.clone();

    let setup = LossSetup {
        kind: config.loss,
        triplet_distance: config.triplet_distance,
        margin: config.margin,
        scale: config.scale,
    };
    let adamw = AdamWConfig {
        weight_decay: config.weight_decay,
        ..AdamWConfig::default()
    };
    let dropout_seed = config.dropout.then_some(config.seed);
    let mut session = Session::new(
        encoder,
        setup,
        adamw,
        dropout_seed,
        config.seed,
        config.max_grad_norm,
    )?;

    if config.loss == LossKind::Mse {
        let teacher_spec = config.teacher.as_deref().expect("validated");
        let teacher = load_encoder(
            teacher_spec,
            &TrainConfig {
                pooling: None,
                ..config.clone()
            },
        )?;
        let (t, s) = (
            teacher.info().embedding_dim,
            session.encoder.info().embedding_dim,
        );
        if t != s {
            return Err(TrainError::Config(format!(
                "teacher `{teacher_spec}` gives {t}-dimensional vectors but the student gives {s}: \
                 mse distillation needs equal widths"
            )));
        }
        let texts: Vec<&str> = dataset.examples.iter().map(|e| e.texts()[0]).collect();
        let vectors = teacher.encode(&texts, 32, &mut |_, _| {})?;
        session.targets = Some(texts.iter().map(|t| t.to_string()).zip(vectors).collect());
    }

    let n = dataset.examples.len();
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let total_steps = steps_per_epoch * config.epochs;
    let warmup = (total_steps as f64 * config.warmup_ratio).ceil() as usize;

    let (mut global_step, mut epoch, mut batch_start, mut evals, mut losses) =
        (0, 0, 0, Vec::new(), Vec::new());
    if let (Some(state), Some(dir)) = (&state, resume) {
        global_step = state.global_step;
        epoch = state.epoch;
        batch_start = state.batch_in_epoch;
        evals = state.evals.clone();
        losses = state.losses.clone();
        let opt = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), &device)?;
        session.optimizer.load_state(&opt)?;
        if let Some(c) = &session.classifier {
            c.load(&candle_core::safetensors::load(
                dir.join(CLASSIFIER_FILE),
                &device,
            )?)?;
        }
        if let Some(rng) = &session.dropout {
            let pos = state
                .dropout_position
                .parse()
                .map_err(|_| TrainError::Config("bad dropout position".into()))?;
            rng.set_position(pos);
        }
    }

    if resume.is_none() && !list_checkpoints(&config.output.join("checkpoints")).is_empty() {
        return Err(TrainError::Config(format!(
            "{} already holds checkpoints of a run: continue it with --resume {}, or choose another --output",
            config.output.display(),
            config.output.display()
        )));
    }
    if config.output.is_file() {
        return Err(TrainError::Config(format!(
            "--output {} is a file, not a folder",
            config.output.display()
        )));
    }
    let mut report = Reporter {
        log: Log::open(&config.output, resume.is_some())?,
        sink,
    };
    report.emit(TrainEvent::Started {
        total_steps,
        steps_per_epoch,
        epochs: config.epochs,
        examples: n,
        data_kind: dataset.kind.describe().into(),
        loss: config.loss.name().into(),
        device: device_name,
        start_step: global_step,
    })?;

    let evaluate = |session: &Session| -> Result<Option<Metrics>, TrainError> {
        let Some(set) = &eval_set else {
            return Ok(None);
        };
        let classifier = session.classifier.as_ref().map(|c| eval::Classifier {
            weight: c.weight.as_tensor(),
            bias: c.bias.as_tensor(),
        });
        Ok(Some(eval::evaluate(
            &session.encoder,
            set,
            classifier.as_ref(),
            32,
        )?))
    };
    if global_step == 0 {
        report.eval(evaluate(&session)?, 0, 0.0, &mut evals)?;
    }

    let started = Instant::now();
    let mut sentences_done = 0usize;
    let mut last_checkpoint: Option<PathBuf> = list_checkpoints(&config.output.join("checkpoints"))
        .last()
        .map(|c| c.1.clone());
    let progress = |step: usize| step as f64 / steps_per_epoch as f64;

    while epoch < config.epochs {
        let order = epoch_order(n, config.seed, epoch);
        let batches: Vec<&[usize]> = order.chunks(config.batch_size).collect();
        for (b, idx) in batches.iter().enumerate().skip(batch_start) {
            let batch: Vec<&Example> = idx.iter().map(|&i| &dataset.examples[i]).collect();
            let lr = config.lr * linear_schedule(global_step, warmup, total_steps);
            let outcome = match session.step(&batch, lr) {
                Ok(o) => o,
                Err(StepError::NonFinite(v)) => {
                    let kept = match &last_checkpoint {
                        Some(p) => format!("the last good checkpoint is {}", p.display()),
                        None => "no checkpoint had been saved yet".to_string(),
                    };
                    let message = format!(
                        "the loss became {v} at step {} (epoch {}); training stopped and nothing was \
                         written over {}; {kept}. Try a lower learning rate.",
                        global_step + 1,
                        epoch + 1,
                        config.output.display()
                    );
                    report.emit(TrainEvent::Failed {
                        step: global_step,
                        message: message.clone(),
                    })?;
                    return Err(TrainError::NonFinite(message));
                }
                Err(StepError::Model(e)) => {
                    report.emit(TrainEvent::Failed {
                        step: global_step,
                        message: e.to_string(),
                    })?;
                    return Err(e.into());
                }
            };
            global_step += 1;
            sentences_done += outcome.sentences;
            losses.push((global_step, outcome.loss));
            let elapsed = started.elapsed().as_secs_f64();
            report.emit(TrainEvent::Step {
                step: global_step,
                total_steps,
                epoch: progress(global_step),
                loss: outcome.loss,
                learning_rate: lr,
                grad_norm: outcome.grad_norm,
                sentences_per_second: sentences_done as f64 / elapsed.max(1e-9),
                elapsed_seconds: elapsed,
            })?;
            let next = (epoch, b + 1);
            let at_epoch_end = b + 1 == batches.len();
            if config.eval_steps.is_some_and(|k| global_step % k == 0) && !at_epoch_end {
                report.eval(
                    evaluate(&session)?,
                    global_step,
                    progress(global_step),
                    &mut evals,
                )?;
            }
            let stop_request = stop.requested();
            let due = config
                .checkpoint_steps
                .is_some_and(|k| global_step % k == 0);
            if due || stop_request == Some(true) {
                let state = TrainerState {
                    global_step,
                    epoch: if at_epoch_end { next.0 + 1 } else { next.0 },
                    batch_in_epoch: if at_epoch_end { 0 } else { next.1 },
                    total_steps,
                    dropout_position: session
                        .dropout
                        .as_ref()
                        .map_or(0, |r| r.position())
                        .to_string(),
                    config: config.clone(),
                    evals: evals.clone(),
                    losses: losses.clone(),
                };
                let path = save_checkpoint(&session, &state, &dataset)?;
                report.emit(TrainEvent::Checkpoint {
                    step: global_step,
                    path: path.clone(),
                })?;
                last_checkpoint = Some(path);
            }
            if stop_request.is_some() {
                report.emit(TrainEvent::Cancelled {
                    step: global_step,
                    checkpoint: last_checkpoint.clone(),
                })?;
                return Ok(Outcome::Cancelled {
                    step: global_step,
                    checkpoint: last_checkpoint,
                });
            }
        }
        batch_start = 0;
        epoch += 1;
        report.eval(
            evaluate(&session)?,
            global_step,
            progress(global_step),
            &mut evals,
        )?;
    }

    let final_metrics = evals.last().map(|e| e.1.clone()).unwrap_or_default();
    let card = card::model_card(&card::CardInput {
        config: &config,
        dataset: &dataset,
        eval_set: eval_set.as_ref(),
        setup: &session.setup,
        model: session.encoder.info(),
        total_steps: global_step,
        evals: &evals,
        losses: &losses,
        seconds: started.elapsed().as_secs_f64(),
    });
    write_folder_atomically(
        &config.output,
        &["checkpoints", "metrics.jsonl"],
        None,
        |w| write_model(&session.encoder, w, Some(&card)),
    )?;
    // The log file moved with the folder: reopen it to record the end.
    report.log = Log::open(&config.output, true)?;
    report.emit(TrainEvent::Finished {
        step: global_step,
        output: config.output.clone(),
        metrics: final_metrics.clone(),
    })?;
    Ok(Outcome::Finished {
        output: config.output.clone(),
        metrics: final_metrics,
    })
}

fn check_evaluable(d: &Dataset, loss: LossKind) -> Result<(), TrainError> {
    match d.kind {
        DataKind::Texts => Err(TrainError::Config(format!(
            "{}: unlabelled sentences cannot be evaluated; give --eval scored pairs, labelled pairs, pairs or triplets",
            d.path.display()
        ))),
        DataKind::Nli if loss != LossKind::Softmax => Err(TrainError::Config(format!(
            "{}: NLI data is evaluated with the softmax loss's classifier, and this run uses `{loss}`",
            d.path.display()
        ))),
        _ => Ok(()),
    }
}

/// Writes `OUTPUT/checkpoints/checkpoint-NNNNNN` atomically, then drops the oldest beyond K.
fn save_checkpoint(
    session: &Session,
    state: &TrainerState,
    dataset: &Dataset,
) -> Result<PathBuf, TrainError> {
    let dir = state.config.output.join("checkpoints");
    let path = dir.join(format!("checkpoint-{:06}", state.global_step));
    let note = format!(
        "# Checkpoint at step {} of {}\n\nA loadable sentence-transformers model, plus the optimizer state \
         to continue with `sbert-tui train --resume {}`. Data: {}.\n",
        state.global_step,
        state.total_steps,
        path.display(),
        dataset.path.display()
    );
    let optimizer = session.optimizer.state_tensors()?;
    let classifier = session.classifier.as_ref().map(|c| c.tensors());
    let state_json = serde_json::to_string_pretty(state).expect("state serializes");
    write_folder_atomically(&path, &[], None, |w| {
        write_model(&session.encoder, w, Some(&note))?;
        w.tensors(OPTIMIZER_FILE, &optimizer)?;
        if let Some(c) = &classifier {
            w.tensors(CLASSIFIER_FILE, c)?;
        }
        w.file(STATE_FILE, state_json.as_bytes())
    })?;
    let all = list_checkpoints(&dir);
    let keep = state.config.keep_checkpoints.max(1);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
        let _ = fs::remove_dir_all(old);
    }
    Ok(path)
}
