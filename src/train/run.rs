//! A training run: prepared (settings checked, data read, model loaded), then stepped batch by
//! batch with evaluations and checkpoints, then finished (the model saved with its card) or
//! cancelled. [`TrainingRun`] is the object; [`train`] and [`resume`] drive it to the end.
//!
//! Output folder:
//! ```text
//! OUTPUT/                 the fine-tuned model (classic sentence-transformers layout) + README.md
//! OUTPUT/metrics.jsonl    every event of the run, one JSON object per line
//! OUTPUT/checkpoints/checkpoint-000100/   see `checkpoint.rs`
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use super::card;
use super::checkpoint::{
    self, CLASSIFIER_FILE, CheckpointError, OPTIMIZER_FILE, Resume, TrainerState,
};
use super::config::{AddDense, ColumnPrompt, DenseActivation, TrainConfig};
use super::data::{self, Dataset, Example};
use super::eval::{self, Metrics};
use super::events::TrainEvent;
use super::export_python;
use super::losses::LossKind;
use super::optim::{AdamWConfig, linear_schedule};
use super::rules::{self, Setting, SettingError};
use super::sampler::{self, EpochPlan};
use super::session::{LossSetup, Session, StepError};
use crate::model::atomic::write_folder_atomically;
use crate::model::save::write_model;
use crate::model::{self, LoadOptions, ModelError, Prompt, SentenceEncoder, SourceOptions};

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
    /// Settings that break the rules (see `rules.rs`), all of them.
    #[error("{}", rules::describe(.0))]
    Settings(Vec<SettingError>),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The loss or the weights became NaN or infinite.
    #[error("{0}")]
    NonFinite(String),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
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

impl From<SettingError> for TrainError {
    fn from(e: SettingError) -> Self {
        TrainError::Settings(vec![e])
    }
}

impl TrainError {
    /// The settings this error is about (empty for other errors), for forms that mark fields.
    pub fn settings(&self) -> &[SettingError] {
        match self {
            TrainError::Settings(v) => v,
            _ => &[],
        }
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

/// Data files the caller has read already (the training form reads them for its preview), so
/// the run does not parse them again. Used only while the file on disk is unchanged.
#[derive(Debug, Clone, Default)]
pub struct Preloaded {
    pub data: Option<Arc<Dataset>>,
    pub eval: Option<Arc<Dataset>>,
}

fn read_data(path: &Path, preloaded: Option<&Arc<Dataset>>) -> Result<Arc<Dataset>, TrainError> {
    match preloaded {
        Some(d) if d.path == path && d.is_current() => Ok(d.clone()),
        _ => Ok(Arc::new(data::load(path)?)),
    }
}

/// The settings as a checkpoint keeps them: every local path absolute, so `--resume` continues
/// the same run from any working folder.
fn absolute_paths(c: &TrainConfig) -> TrainConfig {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let spec = |s: &str| {
        if Path::new(s).exists() {
            abs(Path::new(s)).to_string_lossy().into_owned()
        } else {
            s.to_string() // a Hub id
        }
    };
    TrainConfig {
        model: spec(&c.model),
        data: abs(&c.data),
        more_data: c.more_data.iter().map(|p| abs(p)).collect(),
        eval: c.eval.as_deref().map(abs),
        teacher: c.teacher.as_deref().map(spec),
        augment: c.augment.as_ref().map(|a| super::augment::Augment {
            back_translation: a.back_translation.as_deref().map(abs),
            ..a.clone()
        }),
        output: abs(&c.output),
        ..c.clone()
    }
}

struct Log {
    file: fs::File,
    path: PathBuf,
}

impl Log {
    fn open(output: &Path, append: bool) -> Result<Self, TrainError> {
        let path = output.join("metrics.jsonl");
        fs::create_dir_all(output).map_err(|source| TrainError::Write {
            path: output.into(),
            source,
        })?;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .map_err(|source| TrainError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(Self { file, path })
    }

    fn write(&mut self, event: &TrainEvent) -> Result<(), TrainError> {
        let line = serde_json::to_string(event).expect("events serialize");
        writeln!(self.file, "{line}").map_err(|source| TrainError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Sends each event to the caller and to the log (once it is open: nothing is written before
/// every check has passed).
struct Reporter<'a> {
    log: Option<Log>,
    sink: &'a mut dyn FnMut(&TrainEvent),
}

impl Reporter<'_> {
    fn emit(&mut self, event: TrainEvent) -> Result<(), TrainError> {
        if let Some(log) = &mut self.log {
            log.write(&event)?;
        }
        (self.sink)(&event);
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
            truncate_dim: None,
            precision: model::Precision::F32,
        },
    )?)
}

/// The teacher of a distillation run (with its own pooling).
fn load_teacher(config: &TrainConfig) -> Result<SentenceEncoder, TrainError> {
    let spec = config.teacher.clone().unwrap_or_default();
    load_encoder(
        &spec,
        &TrainConfig {
            pooling: None,
            ..config.clone()
        },
    )
}

/// Adds the student's new Dense modules before a run: `--add-dense`, and for distillation from a
/// teacher of another width a projection to the teacher's width (identity activation, as the
/// library's distillation examples), unless `--add-dense` already gives that width. Checks the
/// Matryoshka widths against the result. Returns the Dense module added, for the settings that
/// checkpoints and the model card keep.
fn add_dense_modules(
    encoder: &mut SentenceEncoder,
    config: &TrainConfig,
    teacher: Option<&SentenceEncoder>,
) -> Result<Option<AddDense>, TrainError> {
    let mut added = config.add_dense;
    let dense_error = |e: ModelError| SettingError::new(Setting::AddDense, e.to_string());
    if let Some(d) = config.add_dense {
        encoder
            .add_dense(d.dim, d.activation.activation(), config.seed)
            .map_err(dense_error)?;
    }
    if let Some(teacher) = teacher {
        let (t, s) = (teacher.info().embedding_dim, encoder.info().embedding_dim);
        if t != s {
            if config.add_dense.is_some() {
                return Err(SettingError::new(
                    Setting::AddDense,
                    format!(
                        "the teacher gives {t}-dimensional vectors: the added Dense module must \
                         give {t}, not {s} (or leave --add-dense out: a projection is added)"
                    ),
                )
                .into());
            }
            let projection = AddDense {
                dim: t,
                activation: DenseActivation::Identity,
            };
            encoder
                .add_dense(t, projection.activation.activation(), config.seed)
                .map_err(dense_error)?;
            added = Some(projection);
        }
    }
    let width = encoder.info().embedding_dim;
    if let Some(&d) = config.matryoshka_dims.iter().find(|&&d| d > width) {
        return Err(SettingError::new(
            Setting::MatryoshkaDims,
            format!("{d} is wider than the model's {width}-dimensional vectors"),
        )
        .into());
    }
    Ok(added)
}

/// `train --export-python SCRIPT`: checks the settings, the data and the model as a run would,
/// then writes the Python script and its data files (each whole, or not at all) instead of
/// training. Returns the files written.
pub fn export_python(config: &TrainConfig, script: &Path) -> Result<Vec<PathBuf>, TrainError> {
    rules::check_config(config).map_err(TrainError::Settings)?;
    let (datasets, eval_set) = TrainingRun::read_inputs(config, &Preloaded::default())?;
    let (encoder, _teacher, add_dense) = load_models(config)?;
    let prompts = datasets
        .iter()
        .map(|d| {
            column_prompts(&config.prompts, d, &encoder)
                .iter()
                .map(|p| encoder.prompt_text(p))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = absolute_paths(config);
    let info = encoder.info();
    let pooling = config
        .pooling
        .as_ref()
        .map(|p| crate::model::save::pooling_config(p, info.hidden_size, info.include_prompt));
    let plan = export_python::ExportPlan {
        config: &config,
        train: &datasets,
        eval: eval_set.as_deref(),
        prompts,
        pooling,
        add_dense,
    };
    let files = export_python::render(&plan, script)?;
    let (train_paths, eval_path) = export_python::data_paths(script, datasets.len());
    let mut outputs: Vec<(PathBuf, String)> =
        train_paths.into_iter().zip(files.train_rows).collect();
    if let Some(rows) = files.eval_rows {
        outputs.push((eval_path, rows));
    }
    outputs.push((script.to_path_buf(), files.script));
    let mut written = Vec::new();
    for (path, text) in outputs {
        crate::analysis::export::write_atomically(&path, |out| out.write_all(text.as_bytes()))
            .map_err(|e| TrainError::Write {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        written.push(path);
    }
    Ok(written)
}

/// The models a new run starts from: the student with its new Dense modules, the teacher of a
/// distillation run, and the Dense module added (for the settings checkpoints keep).
fn load_models(
    config: &TrainConfig,
) -> Result<(SentenceEncoder, Option<SentenceEncoder>, Option<AddDense>), TrainError> {
    let mut encoder = load_encoder(&config.model, config)?;
    let teacher = match config.loss {
        LossKind::Mse => Some(load_teacher(config)?),
        _ => None,
    };
    let added = add_dense_modules(&mut encoder, config, teacher.as_ref())?;
    Ok((encoder, teacher, added))
}

/// The training files and the evaluation file, as a run reads them.
type Inputs = (Vec<Arc<Dataset>>, Option<Arc<Dataset>>);

/// A run in progress.
pub struct TrainingRun<'a> {
    config: TrainConfig,
    /// `config` with absolute paths: what checkpoints record.
    saved_config: TrainConfig,
    /// The training files, `config.data` first.
    datasets: Vec<Arc<Dataset>>,
    /// The prompt of each column, for each file (the files' columns may differ).
    prompts: Vec<Vec<Prompt>>,
    eval_set: Option<Arc<Dataset>>,
    session: Session,
    report: Reporter<'a>,
    steps_per_epoch: usize,
    total_steps: usize,
    warmup: usize,
    global_step: usize,
    /// The epoch in progress (0-based) and its next step.
    epoch: usize,
    batch_in_epoch: usize,
    plan: EpochPlan,
    evals: Vec<(usize, Metrics)>,
    losses: Vec<(usize, f64)>,
    last_checkpoint: Option<PathBuf>,
    started: Instant,
    sentences_done: usize,
}

/// The prompt of each text column of `data`: a model prompt's name where `prompts` names one the
/// model has, the text as given otherwise (as the Python trainer's `prompts`, which are texts).
pub fn column_prompts(
    prompts: &[ColumnPrompt],
    data: &Dataset,
    encoder: &SentenceEncoder,
) -> Vec<Prompt> {
    let names = &encoder.info().prompts;
    data.text_columns()
        .iter()
        .map(|col| {
            let given = prompts
                .iter()
                .find(|p| p.column.as_deref() == Some(col.as_str()))
                .or_else(|| prompts.iter().find(|p| p.column.is_none()));
            match given {
                Some(p) if names.contains_key(&p.prompt) => Prompt::Name(p.prompt.clone()),
                Some(p) if !p.prompt.is_empty() => Prompt::Text(p.prompt.clone()),
                _ => Prompt::None,
            }
        })
        .collect()
}

impl<'a> TrainingRun<'a> {
    /// Checks everything a new run needs, loads the data and the model, opens the log and
    /// evaluates once before the first step. Nothing is written before every check has passed.
    pub fn prepare(
        config: TrainConfig,
        preloaded: Preloaded,
        sink: &'a mut dyn FnMut(&TrainEvent),
    ) -> Result<Self, TrainError> {
        rules::check_config(&config).map_err(TrainError::Settings)?;
        let (datasets, eval_set) = Self::read_inputs(&config, &preloaded)?;
        checkpoint::recover_run_folder(&config.output)?;
        rules::check_output(&config.output)?;
        let (encoder, teacher, add_dense) = load_models(&config)?;
        let mut config = config;
        config.add_dense = add_dense;
        let mut run = Self::assemble(config, datasets, eval_set, encoder, None, sink)?;
        if let Some(teacher) = &teacher {
            run.distillation_targets(teacher)?;
        }
        run.report.log = Some(Log::open(&run.config.output, false)?);
        run.emit_started()?;
        let metrics = run.evaluate()?;
        run.record_eval(metrics)?;
        Ok(run)
    }

    /// Continues the run a checkpoint was saved from, with its saved settings.
    pub fn resume(
        resume: Resume,
        preloaded: Preloaded,
        sink: &'a mut dyn FnMut(&TrainEvent),
    ) -> Result<Self, TrainError> {
        let config = resume.state.config.clone();
        rules::check_config(&config).map_err(TrainError::Settings)?;
        let (datasets, eval_set) = Self::read_inputs(&config, &preloaded)?;
        let encoder = load_encoder(&resume.dir.to_string_lossy(), &config)?;
        let mut run = Self::assemble(config, datasets, eval_set, encoder, Some(&resume), sink)?;
        if run.config.loss == LossKind::Mse {
            let teacher = load_teacher(&run.config)?;
            run.distillation_targets(&teacher)?;
        }
        run.report.log = Some(Log::open(&run.config.output, true)?);
        run.emit_started()?;
        Ok(run)
    }

    /// Reads the training files (each checked against the loss and turned into what the run
    /// trains on: SimCSE triplets from NLI, augmented copies) and the evaluation file.
    fn read_inputs(config: &TrainConfig, preloaded: &Preloaded) -> Result<Inputs, TrainError> {
        let mut datasets = Vec::new();
        for (i, path) in config.data_files().into_iter().enumerate() {
            let given = if i == 0 {
                preloaded.data.as_ref()
            } else {
                None
            };
            datasets.push(Self::read_training_file(config, path, given)?);
        }
        let all: Vec<&Dataset> = datasets.iter().map(|d| d.as_ref()).collect();
        rules::check_prompts(&config.prompts, &all)?;
        let eval_set = match &config.eval {
            Some(p) => {
                let d = read_data(p, preloaded.eval.as_ref())?;
                rules::check_eval(d.kind, &d.path, Some(config.loss))?;
                Some(d)
            }
            None => None,
        };
        Ok((datasets, eval_set))
    }

    fn read_training_file(
        config: &TrainConfig,
        path: &Path,
        preloaded: Option<&Arc<Dataset>>,
    ) -> Result<Arc<Dataset>, TrainError> {
        let mut dataset = read_data(path, preloaded)?;
        if config.crops.is_some() {
            // Documents become pairs of crops at each step.
            if dataset.kind != data::DataKind::Texts {
                return Err(SettingError::new(
                    Setting::Crops,
                    format!(
                        "crops are cut from unlabelled documents (a `text` column or a .txt \
                         file), but {} holds {}",
                        dataset.path.display(),
                        dataset.kind.describe()
                    ),
                )
                .into());
            }
        } else {
            rules::check_data(dataset.kind, &dataset.path, config.loss)?;
        }
        if dataset.kind == data::DataKind::Nli && config.loss != LossKind::Softmax {
            // Supervised SimCSE: (premise, entailment, contradiction) triplets.
            dataset = Arc::new(dataset.nli_triplets()?);
        }
        if let Some(a) = &config.augment {
            dataset = Arc::new(super::augment::augment(&dataset, a, config.seed)?);
        }
        Ok(dataset)
    }

    fn assemble(
        config: TrainConfig,
        datasets: Vec<Arc<Dataset>>,
        eval_set: Option<Arc<Dataset>>,
        encoder: SentenceEncoder,
        resume: Option<&Resume>,
        sink: &'a mut dyn FnMut(&TrainEvent),
    ) -> Result<Self, TrainError> {
        let device = encoder.device().clone();
        let setup = LossSetup {
            kind: config.loss,
            triplet_distance: config.triplet_distance,
            margin: config.margin,
            scale: config.scale,
            matryoshka: config
                .matryoshka_dims
                .iter()
                .copied()
                .zip(config.matryoshka_weights())
                .collect(),
            mini_batch_size: config.mini_batch_size,
        };
        let adamw = AdamWConfig {
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        };
        let mut session = Session::new(
            encoder,
            setup,
            adamw,
            config.dropout.then_some(config.seed),
            config.seed,
            config.max_grad_norm,
        )?;
        let prompts: Vec<Vec<Prompt>> = datasets
            .iter()
            .map(|d| column_prompts(&config.prompts, d, &session.encoder))
            .collect();
        session.column_prompts = prompts[0].clone();
        session.adversarial = config.adversarial;
        // Every epoch has as many steps (only the files' shuffles and the mix change).
        let plan = Self::plan(&config, &datasets, resume.map_or(0, |r| r.state.epoch));
        let steps_per_epoch = plan.steps.len();
        let total_steps = steps_per_epoch * config.epochs;
        let (mut global_step, mut epoch, mut batch_in_epoch) = (0, 0, 0);
        let (mut evals, mut losses, mut last_checkpoint) = (Vec::new(), Vec::new(), None);
        if let Some(r) = resume {
            let s = &r.state;
            (global_step, epoch, batch_in_epoch) = (s.global_step, s.epoch, s.batch_in_epoch);
            evals = s.evals.clone();
            losses = s.losses.clone();
            session
                .optimizer
                .load_state(&r.tensors(OPTIMIZER_FILE, &device)?)?;
            if let Some(c) = &session.classifier {
                c.load(&r.tensors(CLASSIFIER_FILE, &device)?)?;
            }
            if let Some(rng) = &session.dropout {
                rng.set_position(s.dropout_position.parse().unwrap_or(0));
            }
            last_checkpoint = Some(r.dir.clone());
            if batch_in_epoch >= steps_per_epoch {
                return Err(SettingError::new(
                    Setting::Data,
                    format!(
                        "the checkpoint is at step {} of an epoch, but the data now make {} \
                         steps per epoch: the training files changed since it was saved",
                        batch_in_epoch + 1,
                        steps_per_epoch
                    ),
                )
                .into());
            }
        }
        Ok(Self {
            saved_config: absolute_paths(&config),
            plan,
            warmup: (total_steps as f64 * config.warmup_ratio).ceil() as usize,
            config,
            datasets,
            prompts,
            eval_set,
            session,
            report: Reporter { log: None, sink },
            steps_per_epoch,
            total_steps,
            global_step,
            epoch,
            batch_in_epoch,
            evals,
            losses,
            last_checkpoint,
            started: Instant::now(),
            sentences_done: 0,
        })
    }

    /// The steps of `epoch`: each `batch_size × gradient_accumulation_steps` rows of one file.
    fn plan(config: &TrainConfig, datasets: &[Arc<Dataset>], epoch: usize) -> EpochPlan {
        let sizes: Vec<usize> = datasets.iter().map(|d| d.examples.len()).collect();
        sampler::epoch_plan(
            &sizes,
            config.batch_size * config.gradient_accumulation_steps,
            config.sampler,
            config.seed,
            epoch,
        )
    }

    /// The teacher's vectors of every training sentence, computed once (distillation).
    fn distillation_targets(&mut self, teacher: &SentenceEncoder) -> Result<(), TrainError> {
        let (t, s) = (
            teacher.info().embedding_dim,
            self.session.encoder.info().embedding_dim,
        );
        if t != s {
            return Err(SettingError::new(
                Setting::Teacher,
                format!(
                    "the teacher gives {t}-dimensional vectors but the student gives {s}: \
                     mse distillation needs equal widths"
                ),
            )
            .into());
        }
        // The teacher's vector of each sentence (of each source, for parallel sentences), through
        // the vector cache: a second run, or a resumed one, on the same data reads them back.
        let mut texts: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in self.datasets.iter().flat_map(|d| &d.examples) {
            let source = e.texts()[0];
            if seen.insert(source) {
                texts.push(source.to_string());
            }
        }
        let embedded = crate::corpus::embed::embed_texts(
            teacher,
            &texts,
            &Prompt::ModelDefault,
            &crate::corpus::embed::EmbedOptions::default(),
            &mut |_| true,
        )
        .map_err(|e| ModelError::Invalid(format!("the teacher's vectors: {e:#}")))?
        .expect("never cancelled");
        let vectors = embedded.vectors;
        self.session.targets = Some(
            texts
                .into_iter()
                .enumerate()
                .map(|(i, t)| (t, vectors.row(i).to_vec()))
                .collect(),
        );
        Ok(())
    }

    fn emit_started(&mut self) -> Result<(), TrainError> {
        let event = TrainEvent::Started {
            total_steps: self.total_steps,
            steps_per_epoch: self.steps_per_epoch,
            epochs: self.config.epochs,
            examples: self.datasets.iter().map(|d| d.examples.len()).sum(),
            data_kind: self
                .datasets
                .iter()
                .map(|d| d.kind.describe())
                .collect::<Vec<_>>()
                .join(" + "),
            loss: self.config.loss.name().into(),
            device: self.session.encoder.info().device.clone(),
            start_step: self.global_step,
        };
        self.report.emit(event)
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn global_step(&self) -> usize {
        self.global_step
    }

    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// True once every epoch has been trained.
    pub fn is_done(&self) -> bool {
        self.epoch >= self.config.epochs
    }

    fn progress(&self) -> f64 {
        self.global_step as f64 / self.steps_per_epoch as f64
    }

    /// Evaluates on the evaluation file, when there is one (evaluation mode: no dropout).
    pub fn evaluate(&mut self) -> Result<Option<Metrics>, TrainError> {
        let Some(set) = self.eval_set.clone() else {
            return Ok(None);
        };
        let result = {
            let classifier = self.session.classifier.as_ref().map(|c| eval::Classifier {
                weight: c.weight.as_tensor(),
                bias: c.bias.as_tensor(),
            });
            eval::evaluate(
                &self.session.encoder,
                &set,
                classifier.as_ref(),
                &eval::EvalOptions::default(),
            )
        };
        match result {
            Ok(m) => Ok(Some(m)),
            Err(ModelError::NonFinite { .. }) => {
                Err(self.diverged("the model gives non-finite vectors", self.global_step))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn record_eval(&mut self, metrics: Option<Metrics>) -> Result<(), TrainError> {
        if let Some(metrics) = metrics {
            self.evals.push((self.global_step, metrics.clone()));
            self.report.emit(TrainEvent::Eval {
                step: self.global_step,
                epoch: self.progress(),
                metrics,
            })?;
        }
        Ok(())
    }

    /// The error for a model that has gone non-finite at `step`, after reporting it: nothing is
    /// written over the output, and the last checkpoint (checked when it was saved) stays the
    /// good one.
    fn diverged(&mut self, what: &str, step: usize) -> TrainError {
        let kept = match &self.last_checkpoint {
            Some(p) => format!("the last good checkpoint is {}", p.display()),
            None => "no checkpoint had been saved yet".to_string(),
        };
        let epoch = ((step.max(1) - 1) / self.steps_per_epoch).min(self.config.epochs - 1) + 1;
        let message = format!(
            "{what} at step {step} (epoch {epoch}); training stopped and nothing was written over \
             {}; {kept}. Try a lower learning rate.",
            self.config.output.display()
        );
        let _ = self.report.emit(TrainEvent::Failed {
            step: self.global_step,
            message: message.clone(),
        });
        TrainError::NonFinite(message)
    }

    /// One optimisation step on the next batch; at an epoch's end (and every `eval_steps`), an
    /// evaluation. Does nothing once the run is done.
    pub fn step(&mut self) -> Result<(), TrainError> {
        if self.is_done() {
            return Ok(());
        }
        // One step: `gradient_accumulation_steps` micro-batches of `batch_size` (fewer at an
        // epoch's end).
        let bs = self.config.batch_size;
        let planned = self.plan.steps[self.batch_in_epoch].clone();
        let rows = &self.plan.orders[planned.file][planned.rows];
        let dataset = self.datasets[planned.file].clone();
        self.session.column_prompts = self.prompts[planned.file].clone();
        let cropped: Vec<Example>;
        let examples: Vec<&Example> = match self.config.crops {
            Some(ratio) => {
                let docs: Vec<(usize, &Example)> =
                    rows.iter().map(|&i| (i, &dataset.examples[i])).collect();
                // Each file draws its own crops (the seed moves with the file).
                let seed = self.config.seed.wrapping_add(planned.file as u64);
                cropped = super::augment::crop_pairs(&docs, ratio, seed, self.epoch);
                cropped.iter().collect()
            }
            None => rows.iter().map(|&i| &dataset.examples[i]).collect(),
        };
        let micro: Vec<&[&Example]> = examples.chunks(bs).collect();
        let lr = self.config.lr * linear_schedule(self.global_step, self.warmup, self.total_steps);
        let outcome = match self.session.step_accumulated(&micro, lr) {
            Ok(o) => o,
            Err(StepError::NonFinite(v)) => {
                let step = self.global_step + 1;
                return Err(self.diverged(&format!("the loss became {v}"), step));
            }
            Err(StepError::Model(e)) => {
                let _ = self.report.emit(TrainEvent::Failed {
                    step: self.global_step,
                    message: e.to_string(),
                });
                return Err(e.into());
            }
        };
        self.global_step += 1;
        self.sentences_done += outcome.sentences;
        self.losses.push((self.global_step, outcome.loss));
        let elapsed = self.started.elapsed().as_secs_f64();
        self.report.emit(TrainEvent::Step {
            step: self.global_step,
            total_steps: self.total_steps,
            epoch: self.progress(),
            loss: outcome.loss,
            learning_rate: lr,
            grad_norm: outcome.grad_norm,
            sentences_per_second: self.sentences_done as f64 / elapsed.max(1e-9),
            elapsed_seconds: elapsed,
            batch: outcome.batch,
        })?;
        self.batch_in_epoch += 1;
        let epoch_end = self.batch_in_epoch >= self.plan.steps.len();
        if epoch_end {
            self.epoch += 1;
            self.batch_in_epoch = 0;
            self.plan = Self::plan(&self.config, &self.datasets, self.epoch);
        }
        let due = self
            .config
            .eval_steps
            .is_some_and(|k| self.global_step.is_multiple_of(k));
        if epoch_end || due {
            let metrics = self.evaluate()?;
            self.record_eval(metrics)?;
        }
        Ok(())
    }

    /// True when `checkpoint_steps` says the step just taken ends with a checkpoint.
    pub fn checkpoint_due(&self) -> bool {
        self.global_step > 0
            && self
                .config
                .checkpoint_steps
                .is_some_and(|k| self.global_step.is_multiple_of(k))
    }

    /// Refuses to call a model good that is not: every weight finite, and finite vectors for a
    /// few training sentences (weights can be finite yet overflow inside the network).
    fn check_model(&mut self) -> Result<(), TrainError> {
        let finite_weights = self.session.encoder.varmaps().iter().all(|map| {
            map.all_vars().iter().all(|v| {
                v.as_tensor()
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .is_ok_and(|x| x.iter().all(|f| f.is_finite()))
            })
        });
        if !finite_weights {
            return Err(self.diverged("the weights became non-finite", self.global_step));
        }
        let probe: Vec<&str> = self.datasets[0]
            .examples
            .iter()
            .take(4)
            .flat_map(|e| e.texts())
            .collect();
        match self.session.encoder.encode(&probe, 8, &mut |_, _| {}) {
            Ok(_) => Ok(()),
            Err(ModelError::NonFinite { .. }) => {
                Err(self.diverged("the model gives non-finite vectors", self.global_step))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Saves a checkpoint of where the run is (after checking the model is sound).
    pub fn checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        self.check_model()?;
        let state = TrainerState {
            global_step: self.global_step,
            epoch: self.epoch,
            batch_in_epoch: self.batch_in_epoch,
            total_steps: self.total_steps,
            dropout_position: self
                .session
                .dropout
                .as_ref()
                .map_or(0, |r| r.position())
                .to_string(),
            config: self.saved_config.clone(),
            evals: self.evals.clone(),
            losses: self.losses.clone(),
        };
        let files: Vec<&Path> = self.datasets.iter().map(|d| d.path.as_path()).collect();
        let path = checkpoint::save(&self.session, &state, &files)?;
        self.report.emit(TrainEvent::Checkpoint {
            step: self.global_step,
            path: path.clone(),
        })?;
        self.last_checkpoint = Some(path.clone());
        Ok(path)
    }

    /// Ends the run early; the caller saves a checkpoint first if one is wanted.
    pub fn cancel(mut self) -> Result<Outcome, TrainError> {
        let checkpoint = self.last_checkpoint.clone();
        self.report.emit(TrainEvent::Cancelled {
            step: self.global_step,
            checkpoint: checkpoint.clone(),
        })?;
        Ok(Outcome::Cancelled {
            step: self.global_step,
            checkpoint,
        })
    }

    /// Saves the fine-tuned model (atomically, with its model card) over the output folder.
    pub fn finish(mut self) -> Result<Outcome, TrainError> {
        self.check_model()?;
        let final_metrics = self.evals.last().map(|e| e.1.clone()).unwrap_or_default();
        let card = card::model_card(&card::CardInput {
            config: &self.config,
            datasets: &self.datasets,
            eval_set: self.eval_set.as_deref(),
            setup: &self.session.setup,
            model: self.session.encoder.info(),
            total_steps: self.global_step,
            evals: &self.evals,
            losses: &self.losses,
            seconds: self.started.elapsed().as_secs_f64(),
        });
        let output = self.config.output.clone();
        write_folder_atomically(&output, &["checkpoints", "metrics.jsonl"], None, |w| {
            write_model(&self.session.encoder, w, Some(&card))
        })?;
        // The log file moved with the folder: reopen it to record the end.
        self.report.log = Some(Log::open(&output, true)?);
        self.report.emit(TrainEvent::Finished {
            step: self.global_step,
            output: output.clone(),
            metrics: final_metrics.clone(),
        })?;
        Ok(Outcome::Finished {
            output,
            metrics: final_metrics,
        })
    }
}

/// Drives a run to its end: steps until done or stopped (`stop` is checked after every step),
/// checkpoints when due or when a stop asks to keep one.
pub fn drive(mut run: TrainingRun, stop: &StopSignal) -> Result<Outcome, TrainError> {
    while !run.is_done() {
        run.step()?;
        let stop_request = stop.requested();
        if run.checkpoint_due() || stop_request == Some(true) {
            run.checkpoint()?;
        }
        if stop_request.is_some() {
            return run.cancel();
        }
    }
    run.finish()
}

/// Runs a new training run to its end. Every event goes to `sink` and to
/// `OUTPUT/metrics.jsonl`.
pub fn train(
    config: TrainConfig,
    sink: &mut dyn FnMut(&TrainEvent),
    stop: &StopSignal,
) -> Result<Outcome, TrainError> {
    train_with(config, Preloaded::default(), sink, stop)
}

/// [`train`] with data files read already.
pub fn train_with(
    config: TrainConfig,
    preloaded: Preloaded,
    sink: &mut dyn FnMut(&TrainEvent),
    stop: &StopSignal,
) -> Result<Outcome, TrainError> {
    drive(TrainingRun::prepare(config, preloaded, sink)?, stop)
}

/// Continues a run from a checkpoint to its end.
pub fn resume(
    from: Resume,
    sink: &mut dyn FnMut(&TrainEvent),
    stop: &StopSignal,
) -> Result<Outcome, TrainError> {
    drive(TrainingRun::resume(from, Preloaded::default(), sink)?, stop)
}
