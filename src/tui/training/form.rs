//! The training form: every setting of a new run as typed, checked field by field before launch
//! through the same rules the command line and the run use (`train/rules.rs`), and the data
//! files as they were read (kept, so the run does not parse them again).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{DeviceChoice, PoolingMode};
use crate::train::augment::{Augment, Augmenter, CROP_LOSSES};
use crate::train::config::{AddDense, DenseActivation, TrainConfig};
use crate::train::data::{DataKind, Dataset, Example, NLI_LABELS};
use crate::train::losses::LossKind;
use crate::train::rules::{self, Setting, SettingError};
use crate::train::run::Preloaded;

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
                        Example::Scored { score, .. } => row.push(format!("{score:.2}")),
                        Example::Labeled { label, .. } => row.push(format!("{label}")),
                        Example::Nli { label, .. } => {
                            row.push(NLI_LABELS[*label as usize].to_string())
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

/// A data file read for the form: what it shows, and the rows themselves for the run.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub summary: DataSummary,
    pub dataset: Arc<Dataset>,
}

/// The form's fields, in order.
pub const FIELDS: [Setting; 25] = [
    Setting::Model,
    Setting::Data,
    Setting::Loss,
    Setting::Pooling,
    Setting::Epochs,
    Setting::BatchSize,
    Setting::MiniBatchSize,
    Setting::GradientAccumulation,
    Setting::Lr,
    Setting::WarmupRatio,
    Setting::MaxSeqLength,
    Setting::Seed,
    Setting::Device,
    Setting::Eval,
    Setting::Teacher,
    Setting::MatryoshkaDims,
    Setting::MatryoshkaWeights,
    Setting::AddDense,
    Setting::DenseActivation,
    Setting::Augment,
    Setting::EdaRates,
    Setting::BackTranslation,
    Setting::Crops,
    Setting::Adversarial,
    Setting::Output,
];

/// Fields chosen from a list (←/→) rather than typed.
pub fn is_choice(f: Setting) -> bool {
    matches!(
        f,
        Setting::Loss
            | Setting::Pooling
            | Setting::Device
            | Setting::DenseActivation
            | Setting::Adversarial
    )
}

pub const MODEL_POOLING: &str = "model's own";
const DEVICES: [&str; 4] = ["auto", "cpu", "cuda", "metal"];
const DENSE_ACTIVATIONS: [&str; 3] = ["tanh", "relu", "identity"];
/// The adversarial field's options: FGM and PGD at the command line's defaults.
const ADVERSARIAL: [&str; 3] = ["off", "fgm", "pgd"];

/// Two comma- or space-separated numbers `MIN,MAX`.
fn parse_pair(s: &str) -> Option<[f64; 2]> {
    let v: Vec<f64> = s
        .split([',', ' '])
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

fn format_rates(r: &[f64]) -> String {
    r.iter().map(f64::to_string).collect::<Vec<_>>().join(",")
}

/// The training form: every value as typed, and what is wrong with it.
#[derive(Debug, Clone)]
pub struct Form {
    values: Vec<(Setting, String)>,
    pub errors: Vec<SettingError>,
    pub selected: usize,
    pub data: Option<Result<DataFile, String>>,
    pub eval: Option<Result<DataFile, String>>,
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
        let values = FIELDS
            .iter()
            .map(|&f| {
                let v = match f {
                    Setting::Model => model.to_string(),
                    Setting::Data => data.to_string(),
                    Setting::Loss => "cosine".to_string(),
                    Setting::Pooling => MODEL_POOLING.to_string(),
                    Setting::Epochs => defaults.epochs.to_string(),
                    Setting::BatchSize => defaults.batch_size.to_string(),
                    Setting::MiniBatchSize => defaults.mini_batch_size.to_string(),
                    Setting::GradientAccumulation => {
                        defaults.gradient_accumulation_steps.to_string()
                    }
                    Setting::Lr => format!("{:e}", defaults.lr),
                    Setting::WarmupRatio => defaults.warmup_ratio.to_string(),
                    Setting::Seed => defaults.seed.to_string(),
                    Setting::Device => "auto".to_string(),
                    Setting::Eval => eval.to_string(),
                    Setting::Output => output.clone(),
                    Setting::DenseActivation => DENSE_ACTIVATIONS[0].to_string(),
                    Setting::EdaRates => format_rates(&Augment::DEFAULT_EDA),
                    Setting::Crops => format_rates(&crate::train::augment::CONTRIEVER_CROP),
                    Setting::Adversarial => ADVERSARIAL[0].to_string(),
                    _ => String::new(),
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

    pub fn get(&self, f: Setting) -> &str {
        self.values
            .iter()
            .find(|(id, _)| *id == f)
            .map_or("", |(_, v)| v)
    }

    pub fn set(&mut self, f: Setting, v: String) {
        if let Some(slot) = self.values.iter_mut().find(|(id, _)| *id == f) {
            slot.1 = v;
        }
        self.errors.retain(|e| e.setting != f);
    }

    pub fn error(&self, f: Setting) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.setting == f)
            .map(|e| e.reason.as_str())
    }

    /// The fields shown: the teacher only for distillation, the mini-batch only for cached-mnr,
    /// Matryoshka widths only for losses that can be cut (not softmax or mse) and their weights
    /// only once widths are typed, the activation only with an added Dense module, EDA's rates
    /// and back-translation only with augmented copies, crops only for an in-batch loss on
    /// unlabelled documents.
    pub fn visible(&self) -> Vec<Setting> {
        let loss = self.get(Setting::Loss);
        let cut = !matches!(loss, "mse" | "softmax");
        let augmenting = !self.get(Setting::Augment).trim().is_empty();
        let crops = self.crops_apply();
        FIELDS
            .into_iter()
            .filter(|&f| match f {
                Setting::Teacher => loss == "mse",
                Setting::MiniBatchSize => loss == "cached-mnr",
                Setting::MatryoshkaDims => cut,
                Setting::MatryoshkaWeights => {
                    cut && !self.get(Setting::MatryoshkaDims).trim().is_empty()
                }
                Setting::DenseActivation => !self.get(Setting::AddDense).trim().is_empty(),
                Setting::EdaRates | Setting::BackTranslation => augmenting,
                Setting::Crops => crops,
                _ => true,
            })
            .collect()
    }

    /// True when the run cuts crops: an in-batch loss on unlabelled documents.
    fn crops_apply(&self) -> bool {
        let texts = matches!(&self.data, Some(Ok(d)) if d.summary.kind == DataKind::Texts);
        texts
            && self
                .get(Setting::Loss)
                .parse::<LossKind>()
                .is_ok_and(|l| CROP_LOSSES.contains(&l))
    }

    /// The augmentation the fields ask for, if any (rates that do not parse: the defaults; the
    /// check refuses them).
    fn augment(&self) -> Option<Augment> {
        let copies = self.get(Setting::Augment).trim().parse::<usize>().ok()?;
        let back = self.get(Setting::BackTranslation).trim();
        (copies > 0).then(|| Augment {
            copies,
            eda: Augment::parse_rates(self.get(Setting::EdaRates)).unwrap_or(Augment::DEFAULT_EDA),
            back_translation: (!back.is_empty()).then(|| PathBuf::from(back)),
        })
    }

    /// The augmented copies of the data's first row (up to three), each as its text columns: as
    /// the run makes them, except that back-translation (a file read when the run starts) is
    /// left out of the preview.
    pub fn augment_preview(&self) -> Vec<Vec<String>> {
        let (Some(Ok(d)), Some(mut a)) = (&self.data, self.augment()) else {
            return Vec::new();
        };
        a.back_translation = None;
        if a.eda.iter().all(|r| *r == 0.0) {
            return Vec::new();
        }
        let seed = self.get(Setting::Seed).trim().parse().unwrap_or(42);
        let (Ok(mut aug), Some(first)) = (Augmenter::new(&a, seed), d.dataset.examples.first())
        else {
            return Vec::new();
        };
        (0..a.copies.min(3))
            .map(|_| {
                aug.row(first)
                    .texts()
                    .iter()
                    .map(|t| t.to_string())
                    .collect()
            })
            .collect()
    }

    pub fn selected_field(&self) -> Setting {
        let v = self.visible();
        v[self.selected.min(v.len() - 1)]
    }

    /// The losses offered: those that fit the data when it has been read, else all.
    pub fn losses(&self) -> Vec<LossKind> {
        match &self.data {
            // Unlabelled documents also train in-batch losses on crops of themselves.
            Some(Ok(d)) if d.summary.kind == DataKind::Texts => {
                let mut l = d.summary.kind.losses().to_vec();
                l.extend(CROP_LOSSES);
                l
            }
            Some(Ok(d)) => d.summary.kind.losses().to_vec(),
            _ => LossKind::ALL.to_vec(),
        }
    }

    fn choices(&self, f: Setting) -> Vec<String> {
        match f {
            Setting::Loss => self.losses().iter().map(|l| l.name().to_string()).collect(),
            Setting::Pooling => std::iter::once(MODEL_POOLING.to_string())
                .chain(
                    PoolingMode::FROM_TOKENS
                        .iter()
                        .map(|m| m.name().to_string()),
                )
                .collect(),
            Setting::Device => DEVICES.iter().map(|d| d.to_string()).collect(),
            Setting::DenseActivation => DENSE_ACTIVATIONS.iter().map(|d| d.to_string()).collect(),
            Setting::Adversarial => ADVERSARIAL.iter().map(|d| d.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    /// Moves a choice field one option forward or back.
    pub fn cycle(&mut self, f: Setting, forward: bool) {
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

    /// A data file was read: offer only the losses that fit, keeping the chosen one if it does.
    pub fn data_inspected(&mut self, path: &str, result: Result<Arc<Dataset>, String>, eval: bool) {
        let field = if eval { Setting::Eval } else { Setting::Data };
        if self.get(field) != path {
            return; // the field changed meanwhile
        }
        let file = result.map(|dataset| DataFile {
            summary: DataSummary::of(&dataset),
            dataset,
        });
        if eval {
            self.eval = Some(file);
        } else {
            self.data = Some(file);
            let losses = self.losses();
            let current = self.get(Setting::Loss).parse::<LossKind>().ok();
            if !current.is_some_and(|l| losses.contains(&l)) {
                self.set(Setting::Loss, losses[0].name().to_string());
            }
        }
    }

    /// Checks every field; on success, the run's settings and the data files as read. The rules
    /// are the command line's and the run's (`train/rules.rs`); only turning the typed text into
    /// values is the form's own.
    pub fn validate(&mut self) -> Option<(TrainConfig, Preloaded)> {
        let mut errs: Vec<SettingError> = Vec::new();
        let text = |f: Setting| self.get(f).trim().to_string();
        let mut parsed = |f: Setting, ok: bool, why: &str| {
            if !ok {
                errs.push(SettingError::new(f, why));
            }
        };
        let loss = text(Setting::Loss).parse::<LossKind>().ok();
        parsed(Setting::Loss, loss.is_some(), "choose a loss");
        let epochs = text(Setting::Epochs).parse::<usize>().ok();
        parsed(
            Setting::Epochs,
            epochs.is_some(),
            "a whole number, at least 1",
        );
        let batch = text(Setting::BatchSize).parse::<usize>().ok();
        parsed(
            Setting::BatchSize,
            batch.is_some(),
            "a whole number, at least 1",
        );
        let mini_batch = text(Setting::MiniBatchSize).parse::<usize>().ok();
        parsed(
            Setting::MiniBatchSize,
            mini_batch.is_some(),
            "a whole number, at least 1",
        );
        let accumulation = text(Setting::GradientAccumulation).parse::<usize>().ok();
        parsed(
            Setting::GradientAccumulation,
            accumulation.is_some(),
            "a whole number, at least 1",
        );
        let lr = text(Setting::Lr).parse::<f64>().ok();
        parsed(Setting::Lr, lr.is_some(), "a positive number, such as 2e-5");
        let warmup = text(Setting::WarmupRatio).parse::<f64>().ok();
        parsed(Setting::WarmupRatio, warmup.is_some(), "a number in [0, 1)");
        let max_seq = match text(Setting::MaxSeqLength).as_str() {
            "" => Some(None),
            s => s.parse::<usize>().ok().map(Some),
        };
        parsed(
            Setting::MaxSeqLength,
            max_seq.is_some(),
            "empty (the model's) or a number, at least 2",
        );
        let seed = text(Setting::Seed).parse::<u64>().ok();
        parsed(Setting::Seed, seed.is_some(), "a whole number");
        let device = text(Setting::Device).parse::<DeviceChoice>().ok();
        parsed(
            Setting::Device,
            device.is_some(),
            "auto, cpu, cuda or metal",
        );
        let pooling = match text(Setting::Pooling).as_str() {
            MODEL_POOLING => Some(None),
            p => p.parse().ok().map(Some),
        };
        parsed(Setting::Pooling, pooling.is_some(), "choose a pooling");
        let matryoshka = text(Setting::MatryoshkaDims)
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().ok())
            .collect::<Option<Vec<usize>>>();
        parsed(
            Setting::MatryoshkaDims,
            matryoshka.is_some(),
            "empty (off) or widths such as 16,8,4",
        );
        let matryoshka_weights = text(Setting::MatryoshkaWeights)
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<f64>().ok())
            .collect::<Option<Vec<f64>>>();
        parsed(
            Setting::MatryoshkaWeights,
            matryoshka_weights.is_some(),
            "empty (1 each) or one weight per width, such as 1,1,0.5",
        );
        let add_dense = match text(Setting::AddDense).as_str() {
            "" => Some(None),
            s => s.parse::<usize>().ok().map(Some),
        };
        parsed(
            Setting::AddDense,
            add_dense.is_some(),
            "empty (none) or the module's output width",
        );
        let augment = match text(Setting::Augment).as_str() {
            "" => Some(None),
            s => s.parse::<usize>().ok().filter(|n| *n >= 1).map(Some),
        };
        parsed(
            Setting::Augment,
            augment.is_some(),
            "empty (none) or the augmented copies of each row, at least 1",
        );
        let eda_rates = Augment::parse_rates(&text(Setting::EdaRates)).ok();
        parsed(
            Setting::EdaRates,
            eda_rates.is_some(),
            "four rates SR,RI,RS,RD, such as 0.1,0.1,0.1,0.1",
        );
        let back = text(Setting::BackTranslation);
        parsed(
            Setting::BackTranslation,
            back.is_empty() || Path::new(&back).is_file(),
            "empty (none) or a `source, translation` file that exists",
        );
        let crops_apply = self.crops_apply();
        let crops = parse_pair(&text(Setting::Crops));
        parsed(
            Setting::Crops,
            crops.is_some() || !crops_apply,
            "two ratios MIN,MAX of a document's words, such as 0.1,0.5",
        );
        let adversarial = match text(Setting::Adversarial).as_str() {
            "off" => Some(None),
            "fgm" => Some(Some(crate::train::session::Adversarial::FGM)),
            "pgd" => Some(Some(crate::train::session::Adversarial::PGD)),
            _ => None,
        };
        parsed(
            Setting::Adversarial,
            adversarial.is_some(),
            "off, fgm or pgd",
        );
        let activation = text(Setting::DenseActivation)
            .parse::<DenseActivation>()
            .ok();
        parsed(
            Setting::DenseActivation,
            activation.is_some(),
            "tanh, relu or identity",
        );

        // The data files: read, and fitting the loss.
        let file_state = |f: Setting, state: &Option<Result<DataFile, String>>| match (
            state,
            text(f).is_empty(),
        ) {
            (_, true) => Ok(None),
            (None, false) => Err(SettingError::new(
                f,
                "not read yet (press Enter on the field)",
            )),
            (Some(Err(e)), false) => Err(SettingError::new(f, e.clone())),
            (Some(Ok(d)), false) => Ok(Some(d.clone())),
        };
        let data = match file_state(Setting::Data, &self.data) {
            Ok(None) => {
                errs.push(SettingError::new(
                    Setting::Data,
                    "choose a .csv, .tsv or .jsonl file",
                ));
                None
            }
            Ok(Some(d)) => Some(d),
            Err(e) => {
                errs.push(e);
                None
            }
        };
        let eval = match file_state(Setting::Eval, &self.eval) {
            Ok(d) => d,
            Err(e) => {
                errs.push(e);
                None
            }
        };
        if let (Some(d), Some(l)) = (&data, loss)
            && !crops_apply
            && let Err(e) = rules::check_data(d.summary.kind, &d.dataset.path, l)
        {
            errs.push(e);
        }
        if let (Some(e), Some(l)) = (&eval, loss)
            && let Err(e) = rules::check_eval(e.summary.kind, &e.dataset.path, Some(l))
        {
            errs.push(e);
        }

        // The rules run on what did parse (defaults stand in for the rest), so every problem
        // shows at once; a field that did not parse keeps its own message.
        let defaults = TrainConfig::new("", PathBuf::new(), LossKind::Cosine, PathBuf::new());
        let mut c = TrainConfig::new(
            &text(Setting::Model),
            PathBuf::from(text(Setting::Data)),
            loss.unwrap_or(defaults.loss),
            PathBuf::from(text(Setting::Output)),
        );
        c.pooling = pooling.clone().unwrap_or(None);
        c.epochs = epochs.unwrap_or(defaults.epochs);
        c.batch_size = batch.unwrap_or(defaults.batch_size);
        c.mini_batch_size = mini_batch.unwrap_or(defaults.mini_batch_size);
        c.gradient_accumulation_steps =
            accumulation.unwrap_or(defaults.gradient_accumulation_steps);
        c.lr = lr.unwrap_or(defaults.lr);
        c.warmup_ratio = warmup.unwrap_or(defaults.warmup_ratio);
        c.max_seq_length = max_seq.unwrap_or(None);
        c.seed = seed.unwrap_or(defaults.seed);
        c.device = device.unwrap_or(defaults.device);
        c.eval = (!text(Setting::Eval).is_empty()).then(|| PathBuf::from(text(Setting::Eval)));
        c.teacher = (c.loss == LossKind::Mse).then(|| text(Setting::Teacher));
        if !matches!(c.loss, LossKind::Mse | LossKind::Softmax) {
            c.matryoshka_dims = matryoshka.clone().unwrap_or_default();
            if !c.matryoshka_dims.is_empty() {
                c.matryoshka_weights = matryoshka_weights.clone().unwrap_or_default();
            }
        }
        c.augment = self.augment();
        c.crops = crops.filter(|_| crops_apply);
        c.adversarial = adversarial.flatten();
        c.add_dense = add_dense.flatten().map(|dim| AddDense {
            dim,
            activation: activation.unwrap_or_default(),
        });
        if let Err(more) = rules::check_config(&c) {
            let unparsed: Vec<Setting> = errs.iter().map(|e| e.setting).collect();
            errs.extend(more.into_iter().filter(|e| !unparsed.contains(&e.setting)));
        }
        if errs.iter().all(|e| e.setting != Setting::Output)
            && let Err(e) = rules::check_output(&c.output)
        {
            errs.push(e);
        }
        // One message per field (the first), in the order of the form.
        let mut seen = Vec::new();
        errs.retain(|e| {
            let first = !seen.contains(&e.setting);
            seen.push(e.setting);
            first
        });
        errs.sort_by_key(|e| FIELDS.iter().position(|f| *f == e.setting));
        let all_parsed = loss.is_some()
            && epochs.is_some()
            && batch.is_some()
            && mini_batch.is_some()
            && accumulation.is_some()
            && lr.is_some()
            && warmup.is_some()
            && max_seq.is_some()
            && seed.is_some()
            && device.is_some()
            && pooling.is_some()
            && matryoshka.is_some()
            && matryoshka_weights.is_some()
            && add_dense.is_some()
            && augment.is_some()
            && eda_rates.is_some()
            && (crops.is_some() || !crops_apply)
            && adversarial.is_some()
            && activation.is_some();
        if !errs.is_empty() || !all_parsed {
            self.errors = errs;
            return None;
        }
        self.errors.clear();
        let preloaded = Preloaded {
            data: data.map(|d| d.dataset),
            eval: eval.map(|d| d.dataset),
        };
        Some((c, preloaded))
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

    /// A data file of `kind` with `rows` made-up rows.
    pub fn dataset(path: &str, kind: DataKind, rows: usize) -> Arc<Dataset> {
        let ex = |i: usize| match kind {
            DataKind::ScoredPairs => Example::Scored {
                a: format!("a{i}"),
                b: format!("b{i}"),
                score: 0.5,
            },
            DataKind::Nli => Example::Nli {
                premise: format!("p{i}"),
                hypothesis: format!("h{i}"),
                label: 0,
            },
            _ => Example::Text(format!("t{i}")),
        };
        Arc::new(Dataset {
            path: path.into(),
            kind,
            columns: vec![],
            examples: (0..rows).map(ex).collect(),
            scores_scaled: false,
            stamp: None,
        })
    }

    #[test]
    fn invalid_values_are_marked_per_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Form::new("m", dir.path().join("new").to_string_lossy().into_owned());
        f.set(Setting::Data, "d.csv".into());
        f.data_inspected(
            "d.csv",
            Ok(dataset("d.csv", DataKind::ScoredPairs, 10)),
            false,
        );
        f.set(Setting::Eval, String::new());
        f.set(Setting::Epochs, "0".into());
        f.set(Setting::Lr, "fast".into());
        f.set(Setting::WarmupRatio, "1.5".into());
        assert!(f.validate().is_none());
        // Lr does not parse: the form says so. Epochs and warm-up parse, and the rules refuse
        // them in the same pass.
        assert_eq!(
            f.error(Setting::Lr),
            Some("a positive number, such as 2e-5")
        );
        assert_eq!(f.error(Setting::Epochs), Some("must be at least 1"));
        assert_eq!(
            f.errors[0].setting,
            Setting::Epochs,
            "in the order of the form"
        );
        f.set(Setting::Lr, "2e-5".into());
        assert!(f.validate().is_none());
        assert_eq!(f.error(Setting::Lr), None);
        assert_eq!(f.error(Setting::WarmupRatio), Some("must be in [0, 1)"));
        assert_eq!(f.error(Setting::Model), None);
        f.set(Setting::Epochs, "1".into());
        f.set(Setting::WarmupRatio, "0.1".into());
        let (c, pre) = f.validate().expect("valid");
        assert_eq!(c.loss, LossKind::Cosine);
        assert_eq!(c.lr, 2e-5);
        assert_eq!(pre.data.unwrap().examples.len(), 10, "the rows as read");
    }

    #[test]
    fn only_losses_that_fit_are_offered() {
        let mut f = Form::new("m", "out".into());
        f.set(Setting::Data, "nli.csv".into());
        f.data_inspected("nli.csv", Ok(dataset("nli.csv", DataKind::Nli, 3)), false);
        assert_eq!(f.get(Setting::Loss), "softmax");
        assert!(
            !f.visible().contains(&Setting::MatryoshkaDims),
            "not for softmax"
        );
        f.cycle(Setting::Loss, true);
        assert_eq!(f.get(Setting::Loss), "mnr", "supervised SimCSE on NLI");
        assert!(f.visible().contains(&Setting::MatryoshkaDims));
        assert!(
            !f.visible().contains(&Setting::DenseActivation),
            "no added Dense yet"
        );
        f.set(Setting::AddDense, "64".into());
        assert!(f.visible().contains(&Setting::DenseActivation));
        f.set(Setting::Data, "t.csv".into());
        f.data_inspected("t.csv", Ok(dataset("t.csv", DataKind::Texts, 3)), false);
        // Unlabelled sentences: SimCSE, distillation, and in-batch losses on crops.
        assert_eq!(
            f.losses(),
            vec![
                LossKind::SimCse,
                LossKind::Mse,
                LossKind::Mnr,
                LossKind::MnrSymmetric,
                LossKind::CachedMnr
            ]
        );
        assert_eq!(
            f.get(Setting::Loss),
            "mnr",
            "still fits: crops of the documents"
        );
        assert!(f.visible().contains(&Setting::Crops));
        f.set(Setting::Loss, "simcse".into());
        f.cycle(Setting::Loss, true);
        assert_eq!(f.get(Setting::Loss), "mse");
        assert!(f.visible().contains(&Setting::Teacher));
        assert!(!f.visible().contains(&Setting::Crops));
    }

    #[test]
    fn augmentation_crops_and_adversarial_fields_reach_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Form::new("m", dir.path().join("o").to_string_lossy().into_owned());
        f.set(Setting::Data, "d.csv".into());
        f.data_inspected(
            "d.csv",
            Ok(dataset("d.csv", DataKind::ScoredPairs, 4)),
            false,
        );
        f.set(Setting::Eval, String::new());
        // EDA's rates and back-translation show only with augmented copies; crops never for
        // scored pairs.
        let v = f.visible();
        assert!(!v.contains(&Setting::EdaRates) && !v.contains(&Setting::BackTranslation));
        assert!(!v.contains(&Setting::Crops) && v.contains(&Setting::Adversarial));
        f.set(Setting::Augment, "2".into());
        assert!(f.visible().contains(&Setting::EdaRates));
        assert_eq!(f.get(Setting::EdaRates), "0.1,0.1,0.1,0.1");
        f.set(Setting::EdaRates, "0.2,0,0".into());
        f.set(Setting::BackTranslation, "no-such-file.tsv".into());
        f.cycle(Setting::Adversarial, true);
        assert!(f.validate().is_none());
        assert_eq!(
            f.error(Setting::EdaRates),
            Some("four rates SR,RI,RS,RD, such as 0.1,0.1,0.1,0.1")
        );
        assert!(
            f.error(Setting::BackTranslation)
                .unwrap()
                .contains("exists")
        );
        // Every rate 0 and no back-translation: refused by the run's rules, on the field.
        f.set(Setting::EdaRates, "0,0,0,0".into());
        f.set(Setting::BackTranslation, String::new());
        assert!(f.validate().is_none());
        assert!(
            f.error(Setting::EdaRates)
                .unwrap()
                .contains("nothing would change")
        );
        assert!(f.augment_preview().is_empty(), "no EDA: nothing to preview");
        let back = dir.path().join("bt.tsv");
        std::fs::write(&back, "source\ttranslation\na0\tan a0\n").unwrap();
        f.set(Setting::EdaRates, "0.2,0,0,0.1".into());
        f.set(
            Setting::BackTranslation,
            back.to_string_lossy().into_owned(),
        );
        let (c, _) = f.validate().expect("valid");
        let a = c.augment.unwrap();
        assert_eq!((a.copies, a.eda), (2, [0.2, 0.0, 0.0, 0.1]));
        assert_eq!(a.back_translation.as_deref(), Some(back.as_path()));
        let adv = c.adversarial.unwrap();
        assert_eq!((adv.steps, adv.epsilon), (1, 1.0), "fgm");
        assert_eq!(c.crops, None);
        f.cycle(Setting::Adversarial, true);
        assert_eq!(f.validate().unwrap().0.adversarial.unwrap().steps, 3, "pgd");

        // Crops: an in-batch loss on unlabelled documents, the field's ratios.
        f.set(Setting::Augment, String::new());
        f.set(Setting::Data, "t.csv".into());
        f.data_inspected("t.csv", Ok(dataset("t.csv", DataKind::Texts, 4)), false);
        f.set(Setting::Loss, "mnr".into());
        f.set(Setting::BatchSize, "2".into());
        assert_eq!(f.validate().expect("valid").0.crops, Some([0.1, 0.5]));
        f.set(Setting::Crops, "0.6,0.2".into());
        assert!(f.validate().is_none());
        assert!(f.error(Setting::Crops).unwrap().contains("MIN <= MAX"));
        f.set(Setting::Crops, "half".into());
        assert!(f.validate().is_none());
        assert!(f.error(Setting::Crops).unwrap().contains("two ratios"));
    }

    #[test]
    fn a_rule_lands_on_its_own_field() {
        // The form once matched error texts to labels by prefix, so an error about one setting
        // could land on another. Now each refusal carries its setting.
        let dir = tempfile::tempdir().unwrap();
        let mut f = Form::new("m", dir.path().join("o").to_string_lossy().into_owned());
        f.set(Setting::Data, "t.csv".into());
        f.data_inspected("t.csv", Ok(dataset("t.csv", DataKind::Texts, 3)), false);
        f.set(Setting::Eval, String::new());
        f.set(Setting::Loss, "simcse".into());
        f.set(Setting::BatchSize, "1".into());
        f.set(Setting::MaxSeqLength, "1".into());
        assert!(f.validate().is_none());
        assert_eq!(
            f.error(Setting::BatchSize),
            Some("in-batch negatives need a batch of at least 2")
        );
        assert_eq!(f.error(Setting::MaxSeqLength), Some("must be at least 2"));
        assert_eq!(f.errors.len(), 2, "{:?}", f.errors);
    }

    #[test]
    fn a_folder_that_is_not_ours_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let mut f = Form::new("m", dir.path().to_string_lossy().into_owned());
        f.set(Setting::Data, "d.csv".into());
        f.data_inspected(
            "d.csv",
            Ok(dataset("d.csv", DataKind::ScoredPairs, 4)),
            false,
        );
        f.set(Setting::Eval, String::new());
        assert!(f.validate().is_none());
        assert!(f.error(Setting::Output).unwrap().contains("notes.txt"));
    }
}
