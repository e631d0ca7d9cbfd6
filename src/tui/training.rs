//! The training pane's state: the form that builds a run's settings (validated field by field
//! before launch), the live view of a run fed by the engine's events, and the session's history
//! of runs. Pure data; the engine runs on its own thread (see `tui/mod.rs`).

use std::path::{Path, PathBuf};

use crate::model::{DeviceChoice, PoolingMode};
use crate::train::config::TrainConfig;
use crate::train::data::{DataKind, Dataset};
use crate::train::events::{Metrics, TrainEvent};
use crate::train::losses::LossKind;

/// What the form shows about a data file once it has been read (off the UI thread).
#[derive(Debug, Clone, PartialEq)]
pub struct DataSummary {
    pub kind: DataKind,
    pub rows: usize,
    pub columns: Vec<String>,
    /// The first rows, column by column.
    pub preview: Vec<Vec<String>>,
    pub scores_scaled: bool,
}

impl DataSummary {
    pub fn of(d: &Dataset) -> Self {
        Self {
            kind: d.kind,
            rows: d.examples.len(),
            columns: d.columns.clone(),
            preview: d
                .examples
                .iter()
                .take(3)
                .map(|e| {
                    let mut row: Vec<String> = e.texts().into_iter().map(str::to_string).collect();
                    match e {
                        crate::train::data::Example::Scored { score, .. } => {
                            row.push(format!("{score:.2}"))
                        }
                        crate::train::data::Example::Labeled { label, .. } => {
                            row.push(format!("{label}"))
                        }
                        crate::train::data::Example::Nli { label, .. } => {
                            row.push(crate::train::data::NLI_LABELS[*label as usize].to_string())
                        }
                        _ => {}
                    }
                    row
                })
                .collect(),
            scores_scaled: d.scores_scaled,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldId {
    Model,
    Data,
    Loss,
    Pooling,
    Epochs,
    BatchSize,
    Lr,
    Warmup,
    MaxSeq,
    Seed,
    Device,
    Eval,
    Teacher,
    Output,
}

impl FieldId {
    pub const ALL: [FieldId; 14] = [
        FieldId::Model,
        FieldId::Data,
        FieldId::Loss,
        FieldId::Pooling,
        FieldId::Epochs,
        FieldId::BatchSize,
        FieldId::Lr,
        FieldId::Warmup,
        FieldId::MaxSeq,
        FieldId::Seed,
        FieldId::Device,
        FieldId::Eval,
        FieldId::Teacher,
        FieldId::Output,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FieldId::Model => "model",
            FieldId::Data => "dataset file",
            FieldId::Loss => "loss",
            FieldId::Pooling => "pooling",
            FieldId::Epochs => "epochs",
            FieldId::BatchSize => "batch size",
            FieldId::Lr => "learning rate",
            FieldId::Warmup => "warm-up ratio",
            FieldId::MaxSeq => "max seq length",
            FieldId::Seed => "seed",
            FieldId::Device => "device",
            FieldId::Eval => "evaluation file",
            FieldId::Teacher => "teacher model",
            FieldId::Output => "output folder",
        }
    }

    /// Fields chosen from a list (←/→) rather than typed.
    pub fn is_choice(self) -> bool {
        matches!(self, FieldId::Loss | FieldId::Pooling | FieldId::Device)
    }
}

pub const MODEL_POOLING: &str = "model's own";
const DEVICES: [&str; 4] = ["auto", "cpu", "cuda", "metal"];

/// The training form: every value as typed, and what is wrong with it.
#[derive(Debug, Clone)]
pub struct Form {
    pub values: Vec<(FieldId, String)>,
    pub errors: Vec<(FieldId, String)>,
    pub selected: usize,
    pub data: Option<Result<DataSummary, String>>,
    pub eval: Option<Result<DataSummary, String>>,
}

impl Form {
    pub fn new(model: &str, output: String) -> Self {
        let exists = |p: &str| Path::new(p).is_file();
        let data = if exists("sample_data/scored-pairs.csv") {
            "sample_data/scored-pairs.csv"
        } else {
            ""
        };
        let eval = if exists("sample_data/scored-pairs-dev.csv") {
            "sample_data/scored-pairs-dev.csv"
        } else {
            ""
        };
        let defaults = TrainConfig::new(model, PathBuf::new(), LossKind::Cosine, PathBuf::new());
        let values = FieldId::ALL
            .iter()
            .map(|&f| {
                let v = match f {
                    FieldId::Model => model.to_string(),
                    FieldId::Data => data.to_string(),
                    FieldId::Loss => "cosine".to_string(),
                    FieldId::Pooling => MODEL_POOLING.to_string(),
                    FieldId::Epochs => defaults.epochs.to_string(),
                    FieldId::BatchSize => defaults.batch_size.to_string(),
                    FieldId::Lr => format!("{:e}", defaults.lr),
                    FieldId::Warmup => defaults.warmup_ratio.to_string(),
                    FieldId::MaxSeq => String::new(),
                    FieldId::Seed => defaults.seed.to_string(),
                    FieldId::Device => "auto".to_string(),
                    FieldId::Eval => eval.to_string(),
                    FieldId::Teacher => String::new(),
                    FieldId::Output => output.clone(),
                };
                (f, v)
            })
            .collect();
        Self {
            values,
            errors: Vec::new(),
            selected: 0,
            data: None,
            eval: None,
        }
    }

    pub fn get(&self, f: FieldId) -> &str {
        self.values
            .iter()
            .find(|(id, _)| *id == f)
            .map_or("", |(_, v)| v)
    }

    pub fn set(&mut self, f: FieldId, v: String) {
        if let Some(slot) = self.values.iter_mut().find(|(id, _)| *id == f) {
            slot.1 = v;
        }
        self.errors.retain(|(id, _)| *id != f);
    }

    pub fn error(&self, f: FieldId) -> Option<&str> {
        self.errors
            .iter()
            .find(|(id, _)| *id == f)
            .map(|(_, e)| e.as_str())
    }

    /// The fields shown: the teacher only for distillation.
    pub fn visible(&self) -> Vec<FieldId> {
        FieldId::ALL
            .into_iter()
            .filter(|&f| f != FieldId::Teacher || self.get(FieldId::Loss) == "mse")
            .collect()
    }

    pub fn selected_field(&self) -> FieldId {
        let v = self.visible();
        v[self.selected.min(v.len() - 1)]
    }

    /// The losses offered: those that fit the data when it has been read, else all.
    pub fn losses(&self) -> Vec<LossKind> {
        match &self.data {
            Some(Ok(d)) => d.kind.losses().to_vec(),
            _ => LossKind::ALL.to_vec(),
        }
    }

    fn choices(&self, f: FieldId) -> Vec<String> {
        match f {
            FieldId::Loss => self.losses().iter().map(|l| l.name().to_string()).collect(),
            FieldId::Pooling => std::iter::once(MODEL_POOLING.to_string())
                .chain(PoolingMode::ALL.iter().map(|m| m.name().to_string()))
                .collect(),
            FieldId::Device => DEVICES.iter().map(|d| d.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    /// Moves a choice field one option forward or back.
    pub fn cycle(&mut self, f: FieldId, forward: bool) {
        let options = self.choices(f);
        if options.is_empty() {
            return;
        }
        let i = options.iter().position(|o| o == self.get(f));
        let n = options.len();
        let next = match (i, forward) {
            (None, _) => 0,
            (Some(i), true) => (i + 1) % n,
            (Some(i), false) => (i + n - 1) % n,
        };
        self.set(f, options[next].clone());
    }

    /// The data file was read: offer only the losses that fit, keeping the chosen one if it does.
    pub fn data_inspected(&mut self, path: &str, result: Result<DataSummary, String>, eval: bool) {
        let field = if eval { FieldId::Eval } else { FieldId::Data };
        if self.get(field) != path {
            return; // the field changed meanwhile
        }
        if eval {
            self.eval = Some(result);
        } else {
            self.data = Some(result);
            let losses = self.losses();
            let current = self.get(FieldId::Loss).parse::<LossKind>().ok();
            if !current.is_some_and(|l| losses.contains(&l)) {
                self.set(FieldId::Loss, losses[0].name().to_string());
            }
        }
    }

    /// Checks every field; on success, the run's settings.
    pub fn validate(&mut self) -> Option<TrainConfig> {
        self.errors.clear();
        let mut errs: Vec<(FieldId, String)> = Vec::new();
        let text = |f: FieldId| self.get(f).trim().to_string();
        let mut need = |f: FieldId, ok: bool, why: &str| {
            if !ok {
                errs.push((f, why.to_string()));
            }
        };
        need(
            FieldId::Model,
            !text(FieldId::Model).is_empty(),
            "name a model folder or Hub id",
        );
        let loss = text(FieldId::Loss).parse::<LossKind>().ok();
        need(FieldId::Loss, loss.is_some(), "choose a loss");
        match (&self.data, text(FieldId::Data).is_empty()) {
            (_, true) => need(FieldId::Data, false, "choose a .csv, .tsv or .jsonl file"),
            (None, false) => need(
                FieldId::Data,
                false,
                "not read yet (press Enter on the field)",
            ),
            (Some(Err(e)), false) => need(FieldId::Data, false, e),
            (Some(Ok(d)), false) => {
                if let Some(l) = loss
                    && !d.kind.losses().contains(&l)
                {
                    let why = format!("`{l}` needs {}", crate::train::data::columns_for(l));
                    need(FieldId::Loss, false, &why);
                }
            }
        }
        let epochs = text(FieldId::Epochs)
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1);
        need(
            FieldId::Epochs,
            epochs.is_some(),
            "a whole number, at least 1",
        );
        let batch = text(FieldId::BatchSize)
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1);
        need(
            FieldId::BatchSize,
            batch.is_some(),
            "a whole number, at least 1",
        );
        let lr = text(FieldId::Lr)
            .parse::<f64>()
            .ok()
            .filter(|&x| x > 0.0 && x.is_finite());
        need(FieldId::Lr, lr.is_some(), "a positive number, such as 2e-5");
        let warmup = text(FieldId::Warmup)
            .parse::<f64>()
            .ok()
            .filter(|x| (0.0..1.0).contains(x));
        need(FieldId::Warmup, warmup.is_some(), "a number in [0, 1)");
        let max_seq = match text(FieldId::MaxSeq).as_str() {
            "" => Some(None),
            s => s.parse::<usize>().ok().filter(|&n| n >= 2).map(Some),
        };
        need(
            FieldId::MaxSeq,
            max_seq.is_some(),
            "empty (the model's) or a number, at least 2",
        );
        let seed = text(FieldId::Seed).parse::<u64>().ok();
        need(FieldId::Seed, seed.is_some(), "a whole number");
        let device = text(FieldId::Device).parse::<DeviceChoice>().ok();
        need(
            FieldId::Device,
            device.is_some(),
            "auto, cpu, cuda or metal",
        );
        let pooling = match text(FieldId::Pooling).as_str() {
            MODEL_POOLING => Some(None),
            p => p.parse().ok().map(Some),
        };
        need(FieldId::Pooling, pooling.is_some(), "choose a pooling");
        let eval = match (text(FieldId::Eval).is_empty(), &self.eval) {
            (true, _) => Some(None),
            (false, Some(Ok(e))) if e.kind == DataKind::Texts => {
                need(
                    FieldId::Eval,
                    false,
                    "unlabelled sentences cannot be evaluated",
                );
                None
            }
            (false, Some(Ok(e))) if e.kind == DataKind::Nli && loss != Some(LossKind::Softmax) => {
                need(
                    FieldId::Eval,
                    false,
                    "NLI data is evaluated with the softmax loss only",
                );
                None
            }
            (false, Some(Ok(_))) => Some(Some(PathBuf::from(text(FieldId::Eval)))),
            (false, Some(Err(e))) => {
                need(FieldId::Eval, false, e);
                None
            }
            (false, None) => {
                need(
                    FieldId::Eval,
                    false,
                    "not read yet (press Enter on the field)",
                );
                None
            }
        };
        let teacher = text(FieldId::Teacher);
        if loss == Some(LossKind::Mse) {
            need(
                FieldId::Teacher,
                !teacher.is_empty(),
                "distillation needs a teacher model",
            );
        }
        let output = text(FieldId::Output);
        let out_path = Path::new(&output);
        if output.is_empty() {
            need(
                FieldId::Output,
                false,
                "name a folder for the fine-tuned model",
            );
        } else if out_path.is_file() {
            need(FieldId::Output, false, "is a file");
        } else if out_path.read_dir().is_ok_and(|mut d| d.next().is_some()) {
            need(
                FieldId::Output,
                false,
                "exists and is not empty: choose a new folder",
            );
        }
        if !errs.is_empty() {
            self.errors = errs;
            return None;
        }
        let mut c = TrainConfig::new(
            &text(FieldId::Model),
            PathBuf::from(text(FieldId::Data)),
            loss?,
            PathBuf::from(output),
        );
        c.pooling = pooling?;
        c.epochs = epochs?;
        c.batch_size = batch?;
        c.lr = lr?;
        c.warmup_ratio = warmup?;
        c.max_seq_length = max_seq?;
        c.seed = seed?;
        c.device = device?;
        c.eval = eval?;
        c.teacher = (loss == Some(LossKind::Mse)).then_some(teacher);
        if let Err(e) = c.validate() {
            // The config's own checks name the field first ("batch size: ...").
            let field = FieldId::ALL
                .into_iter()
                .find(|f| {
                    e.starts_with(f.label())
                        || e.starts_with(f.label().split(' ').next().unwrap_or(""))
                })
                .unwrap_or(FieldId::Loss);
            self.errors = vec![(field, e)];
            return None;
        }
        Some(c)
    }
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Starting,
    Running,
    Stopping,
    Finished,
    Failed(String),
    Cancelled { checkpoint: Option<PathBuf> },
}

impl RunStatus {
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            RunStatus::Starting | RunStatus::Running | RunStatus::Stopping
        )
    }
}

/// A run as the pane shows it: settings, progress, the loss and metric curves.
#[derive(Debug, Clone)]
pub struct RunView {
    pub id: usize,
    pub config: TrainConfig,
    pub status: RunStatus,
    pub device: String,
    pub total_steps: usize,
    pub step: usize,
    pub epoch: f64,
    pub learning_rate: f64,
    pub sentences_per_second: f64,
    pub elapsed: f64,
    /// (step, loss) for finite losses only: a NaN never reaches a chart.
    pub losses: Vec<(f64, f64)>,
    /// Exponential moving average of the loss (weight 0.1 for the newest).
    pub smoothed: Vec<(f64, f64)>,
    pub evals: Vec<(usize, Metrics)>,
    pub last_checkpoint: Option<PathBuf>,
}

impl RunView {
    pub fn new(id: usize, config: TrainConfig) -> Self {
        Self {
            id,
            config,
            status: RunStatus::Starting,
            device: String::new(),
            total_steps: 0,
            step: 0,
            epoch: 0.0,
            learning_rate: 0.0,
            sentences_per_second: 0.0,
            elapsed: 0.0,
            losses: Vec::new(),
            smoothed: Vec::new(),
            evals: Vec::new(),
            last_checkpoint: None,
        }
    }

    /// Seconds left, from the pace so far.
    pub fn eta(&self) -> Option<f64> {
        (self.step > 0 && self.total_steps > self.step)
            .then(|| self.elapsed / self.step as f64 * (self.total_steps - self.step) as f64)
    }

    /// The folder to load into the explorer: the final model, else the newest checkpoint.
    pub fn loadable(&self) -> Option<PathBuf> {
        match &self.status {
            RunStatus::Finished => Some(self.config.output.clone()),
            _ => self.last_checkpoint.clone(),
        }
    }

    /// The primary metric of the last evaluation.
    pub fn final_metric(&self) -> Option<(String, f64)> {
        self.evals.last().and_then(|(_, m)| m.first().cloned())
    }

    pub fn on_event(&mut self, e: &TrainEvent) {
        match e {
            TrainEvent::Started {
                total_steps,
                device,
                start_step,
                ..
            } => {
                self.status = RunStatus::Running;
                self.total_steps = *total_steps;
                self.device = device.clone();
                self.step = *start_step;
            }
            TrainEvent::Step {
                step,
                total_steps,
                epoch,
                loss,
                learning_rate,
                sentences_per_second,
                elapsed_seconds,
                ..
            } => {
                self.step = *step;
                self.total_steps = *total_steps;
                self.epoch = *epoch;
                self.learning_rate = *learning_rate;
                self.sentences_per_second = *sentences_per_second;
                self.elapsed = *elapsed_seconds;
                if loss.is_finite() {
                    let x = *step as f64;
                    self.losses.push((x, *loss));
                    let s = match self.smoothed.last() {
                        Some(&(_, prev)) => 0.9 * prev + 0.1 * loss,
                        None => *loss,
                    };
                    self.smoothed.push((x, s));
                }
            }
            TrainEvent::Eval { step, metrics, .. } => {
                if metrics.iter().all(|(_, v)| v.is_finite()) {
                    self.evals.push((*step, metrics.clone()));
                }
            }
            TrainEvent::Checkpoint { path, .. } => self.last_checkpoint = Some(path.clone()),
            TrainEvent::Finished { .. } => self.status = RunStatus::Finished,
            TrainEvent::Failed { message, .. } => self.status = RunStatus::Failed(message.clone()),
            TrainEvent::Cancelled { checkpoint, .. } => {
                self.status = RunStatus::Cancelled {
                    checkpoint: checkpoint.clone(),
                }
            }
        }
    }
}

/// A free output folder name: `runs/run-N`.
pub fn next_output(base: &Path) -> String {
    (1..)
        .map(|n| base.join(format!("run-{n}")))
        .find(|p| !p.exists())
        .expect("some name is free")
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(kind: DataKind) -> DataSummary {
        DataSummary {
            kind,
            rows: 10,
            columns: vec![],
            preview: vec![],
            scores_scaled: false,
        }
    }

    #[test]
    fn invalid_values_are_marked_per_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Form::new("m", dir.path().join("new").to_string_lossy().into_owned());
        f.set(FieldId::Data, "d.csv".into());
        f.data_inspected("d.csv", Ok(summary(DataKind::ScoredPairs)), false);
        f.set(FieldId::Eval, String::new());
        f.set(FieldId::Epochs, "0".into());
        f.set(FieldId::Lr, "fast".into());
        f.set(FieldId::Warmup, "1.5".into());
        assert!(f.validate().is_none());
        assert_eq!(f.error(FieldId::Epochs), Some("a whole number, at least 1"));
        assert_eq!(
            f.error(FieldId::Lr),
            Some("a positive number, such as 2e-5")
        );
        assert_eq!(f.error(FieldId::Warmup), Some("a number in [0, 1)"));
        assert_eq!(f.error(FieldId::Model), None);
        f.set(FieldId::Epochs, "1".into());
        f.set(FieldId::Lr, "2e-5".into());
        f.set(FieldId::Warmup, "0.1".into());
        let c = f.validate().expect("valid");
        assert_eq!(c.loss, LossKind::Cosine);
        assert_eq!(c.lr, 2e-5);
    }

    #[test]
    fn only_losses_that_fit_are_offered() {
        let mut f = Form::new("m", "out".into());
        f.set(FieldId::Data, "nli.csv".into());
        f.data_inspected("nli.csv", Ok(summary(DataKind::Nli)), false);
        assert_eq!(f.get(FieldId::Loss), "softmax");
        f.cycle(FieldId::Loss, true);
        assert_eq!(f.get(FieldId::Loss), "softmax", "the only one");
        f.set(FieldId::Data, "t.csv".into());
        f.data_inspected("t.csv", Ok(summary(DataKind::Texts)), false);
        assert_eq!(f.losses(), vec![LossKind::SimCse, LossKind::Mse]);
        f.cycle(FieldId::Loss, true);
        assert_eq!(f.get(FieldId::Loss), "mse");
        assert!(f.visible().contains(&FieldId::Teacher));
    }

    #[test]
    fn a_nan_never_reaches_the_curves() {
        let mut r = RunView::new(
            1,
            TrainConfig::new("m", "d".into(), LossKind::Cosine, "o".into()),
        );
        for (step, loss) in [(1, 0.5), (2, f64::NAN), (3, f64::INFINITY), (4, 0.3)] {
            r.on_event(&TrainEvent::Step {
                step,
                total_steps: 10,
                epoch: 0.1,
                loss,
                learning_rate: 1e-5,
                grad_norm: None,
                sentences_per_second: 10.0,
                elapsed_seconds: step as f64,
            });
        }
        assert_eq!(r.losses, vec![(1.0, 0.5), (4.0, 0.3)]);
        assert!(r.smoothed.iter().all(|p| p.1.is_finite()));
        assert_eq!(r.eta(), Some(6.0));
    }
}
