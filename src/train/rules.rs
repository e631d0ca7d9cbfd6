//! The rules a training run's settings and data must meet, in one place. The command line, the
//! training form and the run itself all check through here, and every refusal is a
//! [`SettingError`]: the setting it is about and why, so the form marks the right field and the
//! command line names the right flag.

use std::fmt;
use std::path::{Component, Path};

use super::checkpoint;
use super::config::{ColumnPrompt, TrainConfig};
use super::data::{DataKind, Dataset, columns_for};
use super::losses::LossKind;

/// A setting of a training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    Model,
    Data,
    Loss,
    Pooling,
    Epochs,
    BatchSize,
    Lr,
    WarmupRatio,
    WeightDecay,
    MaxGradNorm,
    MaxSeqLength,
    Seed,
    Device,
    Eval,
    EvalSteps,
    Teacher,
    Output,
    CheckpointSteps,
    KeepCheckpoints,
    TripletDistance,
    Margin,
    Scale,
    Prompts,
    MatryoshkaDims,
    MatryoshkaWeights,
    AddDense,
    DenseActivation,
    GradientAccumulation,
    MiniBatchSize,
    Augment,
    EdaRates,
    BackTranslation,
    Crops,
    Adversarial,
}

impl Setting {
    /// The command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::Model => "--model",
            Setting::Data => "--data",
            Setting::Loss => "--loss",
            Setting::Pooling => "--pooling",
            Setting::Epochs => "--epochs",
            Setting::BatchSize => "--batch-size",
            Setting::Lr => "--lr",
            Setting::WarmupRatio => "--warmup-ratio",
            Setting::WeightDecay => "--weight-decay",
            Setting::MaxGradNorm => "--max-grad-norm",
            Setting::MaxSeqLength => "--max-seq-length",
            Setting::Seed => "--seed",
            Setting::Device => "--device",
            Setting::Eval => "--eval",
            Setting::EvalSteps => "--eval-steps",
            Setting::Teacher => "--teacher",
            Setting::Output => "--output",
            Setting::CheckpointSteps => "--checkpoint-steps",
            Setting::KeepCheckpoints => "--keep-checkpoints",
            Setting::TripletDistance => "--triplet-distance",
            Setting::Margin => "--margin",
            Setting::Scale => "--scale",
            Setting::Prompts => "--prompts",
            Setting::MatryoshkaDims => "--matryoshka-dims",
            Setting::MatryoshkaWeights => "--matryoshka-weights",
            Setting::AddDense => "--add-dense",
            Setting::DenseActivation => "--dense-activation",
            Setting::GradientAccumulation => "--gradient-accumulation-steps",
            Setting::MiniBatchSize => "--mini-batch-size",
            Setting::Augment => "--augment-copies",
            Setting::EdaRates => "--eda-rates",
            Setting::BackTranslation => "--back-translation",
            Setting::Crops => "--crops",
            Setting::Adversarial => "--adversarial",
        }
    }

    /// The name the training form shows.
    pub fn label(self) -> &'static str {
        match self {
            Setting::Model => "model",
            Setting::Data => "dataset file",
            Setting::Loss => "loss",
            Setting::Pooling => "pooling",
            Setting::Epochs => "epochs",
            Setting::BatchSize => "batch size",
            Setting::Lr => "learning rate",
            Setting::WarmupRatio => "warm-up ratio",
            Setting::WeightDecay => "weight decay",
            Setting::MaxGradNorm => "max grad norm",
            Setting::MaxSeqLength => "max seq length",
            Setting::Seed => "seed",
            Setting::Device => "device",
            Setting::Eval => "evaluation file",
            Setting::EvalSteps => "evaluation steps",
            Setting::Teacher => "teacher model",
            Setting::Output => "output folder",
            Setting::CheckpointSteps => "checkpoint steps",
            Setting::KeepCheckpoints => "checkpoints kept",
            Setting::TripletDistance => "triplet distance",
            Setting::Margin => "margin",
            Setting::Scale => "scale",
            Setting::Prompts => "prompts",
            Setting::MatryoshkaDims => "matryoshka dims",
            Setting::MatryoshkaWeights => "matryoshka weights",
            Setting::AddDense => "added dense",
            Setting::DenseActivation => "dense activation",
            Setting::GradientAccumulation => "grad accumulation",
            Setting::MiniBatchSize => "mini-batch size",
            Setting::Augment => "augmented copies",
            Setting::EdaRates => "EDA rates",
            Setting::BackTranslation => "back-translation",
            Setting::Crops => "random crops",
            Setting::Adversarial => "adversarial",
        }
    }
}

/// A refused setting: which, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub setting: Setting,
    pub reason: String,
}

impl SettingError {
    pub fn new(setting: Setting, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting.flag(), self.reason)
    }
}

impl std::error::Error for SettingError {}

/// Every refusal of `errors`, one per line.
pub fn describe(errors: &[SettingError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Losses that compare each row with the rest of its batch.
fn in_batch(loss: LossKind) -> bool {
    matches!(
        loss,
        LossKind::Mnr | LossKind::MnrSymmetric | LossKind::SimCse | LossKind::CachedMnr
    )
}

/// Checks the values of a run's settings (nothing on disk). Every problem is reported, not only
/// the first.
pub fn check_config(c: &TrainConfig) -> Result<(), Vec<SettingError>> {
    let mut errors = Vec::new();
    let mut need = |ok: bool, setting: Setting, reason: &str| {
        if !ok {
            errors.push(SettingError::new(setting, reason));
        }
    };
    need(
        !c.model.trim().is_empty(),
        Setting::Model,
        "name a model folder or Hub id",
    );
    need(
        c.data_files().iter().all(|p| !p.as_os_str().is_empty()),
        Setting::Data,
        "name a .csv, .tsv, .jsonl or .txt file",
    );
    need(c.epochs >= 1, Setting::Epochs, "must be at least 1");
    need(c.batch_size >= 1, Setting::BatchSize, "must be at least 1");
    need(
        c.batch_size >= 2 || !in_batch(c.loss),
        Setting::BatchSize,
        "in-batch negatives need a batch of at least 2",
    );
    need(
        c.lr > 0.0 && c.lr.is_finite(),
        Setting::Lr,
        "must be a positive number, such as 2e-5",
    );
    need(
        (0.0..1.0).contains(&c.warmup_ratio),
        Setting::WarmupRatio,
        "must be in [0, 1)",
    );
    need(
        c.weight_decay >= 0.0 && c.weight_decay.is_finite(),
        Setting::WeightDecay,
        "must be a number, 0 or more",
    );
    need(
        c.max_grad_norm.is_none_or(|n| n > 0.0 && n.is_finite()),
        Setting::MaxGradNorm,
        "must be a positive number (0 turns clipping off)",
    );
    need(
        c.max_seq_length.is_none_or(|n| n >= 2),
        Setting::MaxSeqLength,
        "must be at least 2",
    );
    let teacher = c.teacher.as_deref().map(str::trim).unwrap_or("");
    need(
        c.loss != LossKind::Mse || !teacher.is_empty(),
        Setting::Teacher,
        "the mse (distillation) loss needs a teacher model",
    );
    need(
        c.loss == LossKind::Mse || c.teacher.is_none(),
        Setting::Teacher,
        "only the mse loss uses a teacher",
    );
    need(
        c.eval_steps.is_none_or(|k| k >= 1),
        Setting::EvalSteps,
        "must be at least 1",
    );
    need(
        c.eval_steps.is_none() || c.eval.is_some(),
        Setting::EvalSteps,
        "there is nothing to evaluate: give an evaluation file",
    );
    need(
        c.checkpoint_steps.is_none_or(|k| k >= 1),
        Setting::CheckpointSteps,
        "must be at least 1",
    );
    need(
        c.keep_checkpoints >= 1,
        Setting::KeepCheckpoints,
        "must be at least 1 (the newest checkpoint is what a run resumes from)",
    );
    if let Some(m) = c.margin {
        need(
            m.is_finite() && m >= 0.0,
            Setting::Margin,
            "must be a number, 0 or more",
        );
        need(
            matches!(
                c.loss,
                LossKind::Triplet | LossKind::Contrastive | LossKind::OnlineContrastive
            ),
            Setting::Margin,
            "only the triplet, contrastive and online-contrastive losses use a margin",
        );
    }
    if let Some(s) = c.scale {
        need(
            s.is_finite() && s > 0.0,
            Setting::Scale,
            "must be a positive number",
        );
        need(
            in_batch(c.loss) || matches!(c.loss, LossKind::CoSent | LossKind::Angle),
            Setting::Scale,
            "only the mnr, mnr-symmetric, simcse, cosent and angle losses use a scale",
        );
    }
    if !c.matryoshka_dims.is_empty() {
        need(
            c.matryoshka_dims.iter().all(|&d| d >= 1),
            Setting::MatryoshkaDims,
            "every dimension must be at least 1",
        );
        let mut sorted = c.matryoshka_dims.clone();
        sorted.sort_unstable();
        sorted.dedup();
        need(
            sorted.len() == c.matryoshka_dims.len(),
            Setting::MatryoshkaDims,
            "a dimension is given twice",
        );
        need(
            !matches!(c.loss, LossKind::Softmax | LossKind::Mse),
            Setting::MatryoshkaDims,
            "the softmax loss's classifier and mse distillation need the full width",
        );
    }
    need(
        c.matryoshka_weights.is_empty() || c.matryoshka_weights.len() == c.matryoshka_dims.len(),
        Setting::MatryoshkaWeights,
        "give one weight per --matryoshka-dims dimension",
    );
    need(
        c.matryoshka_weights
            .iter()
            .all(|w| w.is_finite() && *w >= 0.0),
        Setting::MatryoshkaWeights,
        "every weight must be a number, 0 or more",
    );
    need(
        c.gradient_accumulation_steps >= 1,
        Setting::GradientAccumulation,
        "must be at least 1",
    );
    if let Some(a) = &c.augment {
        need(
            a.copies >= 1,
            Setting::Augment,
            "must be at least 1 (leave it out for none)",
        );
        need(
            a.eda.iter().all(|r| (0.0..=1.0).contains(r)),
            Setting::EdaRates,
            "four rates in [0, 1]: synonym replacement, insertion, swap, deletion",
        );
        need(
            a.eda.iter().any(|r| *r > 0.0) || a.back_translation.is_some(),
            Setting::EdaRates,
            "every rate is 0 and there is no --back-translation: nothing would change",
        );
    }
    if let Some(a) = &c.adversarial {
        need(
            a.epsilon.is_finite() && a.epsilon >= 0.0,
            Setting::Adversarial,
            "--adv-epsilon must be a number, 0 or more",
        );
        need(
            a.steps >= 1 && a.alpha.is_finite() && a.alpha > 0.0,
            Setting::Adversarial,
            "--pgd-steps must be at least 1 and --pgd-alpha above 0",
        );
    }
    if let Some([lo, hi]) = c.crops {
        need(
            lo > 0.0 && lo <= hi && hi <= 1.0,
            Setting::Crops,
            "two ratios MIN,MAX with 0 < MIN <= MAX <= 1, such as 0.1,0.5",
        );
        need(
            super::augment::CROP_LOSSES.contains(&c.loss),
            Setting::Crops,
            "crops are positive pairs for an in-batch loss: mnr, mnr-symmetric or cached-mnr",
        );
    }
    need(
        c.mini_batch_size >= 1,
        Setting::MiniBatchSize,
        "must be at least 1",
    );
    need(
        c.add_dense.is_none_or(|d| d.dim >= 1),
        Setting::AddDense,
        "the Dense module needs at least 1 output",
    );
    if let Err(e) = names_a_folder(&c.output) {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The output must end in a folder name that can be created and replaced (`.`, `..` and `/`
/// cannot).
fn names_a_folder(output: &Path) -> Result<(), SettingError> {
    if output.as_os_str().is_empty() {
        return Err(SettingError::new(
            Setting::Output,
            "name a folder for the fine-tuned model",
        ));
    }
    match output.components().next_back() {
        Some(Component::Normal(_)) => Ok(()),
        _ => Err(SettingError::new(
            Setting::Output,
            format!(
                "`{}` cannot become a model folder: name a new folder, such as runs/my-model",
                output.display()
            ),
        )),
    }
}

/// Refuses a per-column prompt for a column no training file has (or has, but not as text), and
/// two prompts for one column.
pub fn check_prompts(prompts: &[ColumnPrompt], data: &[&Dataset]) -> Result<(), SettingError> {
    let mut columns: Vec<String> = Vec::new();
    for d in data {
        for c in d.text_columns() {
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
    }
    let files = data
        .iter()
        .map(|d| d.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut seen: Vec<Option<&str>> = Vec::new();
    for p in prompts {
        let column = p.column.as_deref();
        if let Some(c) = column
            && !columns.iter().any(|t| t == c)
        {
            return Err(SettingError::new(
                Setting::Prompts,
                format!(
                    "`{c}` is not a text column of {files} (text columns: {})",
                    columns.join(", ")
                ),
            ));
        }
        if seen.contains(&column) || (column.is_some() && seen.contains(&None)) {
            return Err(SettingError::new(
                Setting::Prompts,
                format!(
                    "two prompts for {}",
                    column.map_or("every column".to_string(), |c| format!("column `{c}`"))
                ),
            ));
        }
        if column.is_none() && !seen.is_empty() {
            return Err(SettingError::new(
                Setting::Prompts,
                "a prompt for every column cannot be given with per-column prompts",
            ));
        }
        seen.push(column);
    }
    Ok(())
}

/// Refuses a loss that does not fit the columns of the training data.
pub fn check_data(kind: DataKind, path: &Path, loss: LossKind) -> Result<(), SettingError> {
    if kind.losses().contains(&loss) {
        return Ok(());
    }
    Err(SettingError::new(
        Setting::Loss,
        format!(
            "`{loss}` needs the columns {}, but {} holds {}; losses that fit this data: {}",
            columns_for(loss),
            path.display(),
            kind.describe(),
            kind.losses()
                .iter()
                .map(|l| l.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Refuses evaluation data that has no metric: for a run with `loss`, or for the `eval` command
/// (`None`: no trained classifier).
pub fn check_eval(kind: DataKind, path: &Path, loss: Option<LossKind>) -> Result<(), SettingError> {
    let why = match (kind, loss) {
        (DataKind::Texts, _) => format!(
            "{} holds unlabelled sentences, which have no metric; evaluate on scored pairs, labelled pairs, pairs or triplets",
            path.display()
        ),
        (DataKind::Nli, Some(LossKind::Softmax)) => return Ok(()),
        (DataKind::Nli, Some(l)) => format!(
            "{} holds NLI pairs, evaluated with the classifier the softmax loss trains, and this run uses `{l}`",
            path.display()
        ),
        (DataKind::Nli, None) => format!(
            "{} holds NLI pairs, evaluated with the classifier a softmax run trains, which `eval` does not have; use scored pairs, labelled pairs, pairs or triplets",
            path.display()
        ),
        _ => return Ok(()),
    };
    Err(SettingError::new(Setting::Eval, why))
}

/// Entries that a run writes into its output folder.
fn written_by_a_run(name: &str) -> bool {
    const FILES: [&str; 8] = [
        "modules.json",
        "model.safetensors",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "README.md",
        "metrics.jsonl",
        "checkpoints",
        ".sbert-tui-write",
    ];
    if FILES.contains(&name) || crate::model::folder::TRANSFORMER_FILES.contains(&name) {
        return true;
    }
    // 1_Pooling, 2_Dense, 3_Normalize, ...
    name.split_once('_').is_some_and(|(i, m)| {
        i.parse::<usize>().is_ok() && matches!(m, "Pooling" | "Dense" | "Normalize")
    })
}

/// True when `dir` is the output folder of one of our runs: its log starts with a `started` event.
pub fn is_run_folder(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("metrics.jsonl")) else {
        return false;
    };
    text.lines()
        .next()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .is_some_and(|v| v["event"] == "started")
}

/// Checks that a new run may write its model, log and checkpoints into `output`: a new or empty
/// folder, or the folder of an earlier run of ours that holds nothing else and no checkpoints to
/// continue from (it is replaced). Any other folder is refused: a run never deletes files it did
/// not write.
pub fn check_output(output: &Path) -> Result<(), SettingError> {
    names_a_folder(output)?;
    let refuse = |why: String| Err(SettingError::new(Setting::Output, why));
    if output.is_file() {
        return refuse(format!("{} is a file, not a folder", output.display()));
    }
    let Ok(entries) = std::fs::read_dir(output) else {
        return Ok(()); // a new folder (or one we cannot list, which the run will report)
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        return Ok(());
    }
    if !checkpoint::list(&output.join("checkpoints")).is_empty() {
        return refuse(format!(
            "{} already holds checkpoints of a run: continue it with `sbert-tui train --resume {}`, or choose another folder",
            output.display(),
            output.display()
        ));
    }
    let mut foreign: Vec<&String> = names.iter().filter(|n| !written_by_a_run(n)).collect();
    foreign.sort();
    if !is_run_folder(output) || !foreign.is_empty() {
        let listed: Vec<&String> = if foreign.is_empty() {
            names.iter().collect()
        } else {
            foreign
        };
        let shown: Vec<&str> = listed.iter().take(3).map(|s| s.as_str()).collect();
        return refuse(format!(
            "{} already holds files that are not from a run of ours ({}{}): choose a new or empty folder",
            output.display(),
            shown.join(", "),
            if listed.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(loss: LossKind) -> TrainConfig {
        TrainConfig::new("m", "d.csv".into(), loss, "out".into())
    }

    fn refused(c: &TrainConfig) -> Vec<(Setting, String)> {
        check_config(c)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.setting, e.reason))
            .collect()
    }

    #[test]
    fn every_problem_is_named_by_its_setting() {
        assert!(check_config(&config(LossKind::Cosine)).is_ok());
        let mut c = config(LossKind::Triplet);
        c.warmup_ratio = 1.5;
        c.margin = Some(f64::NAN);
        c.max_grad_norm = Some(-1.0);
        c.keep_checkpoints = 0;
        let settings: Vec<Setting> = refused(&c).into_iter().map(|e| e.0).collect();
        assert_eq!(
            settings,
            [
                Setting::WarmupRatio,
                Setting::MaxGradNorm,
                Setting::KeepCheckpoints,
                Setting::Margin
            ]
        );
        let e = check_config(&c).unwrap_err();
        assert_eq!(e[0].to_string(), "--warmup-ratio: must be in [0, 1)");
    }

    #[test]
    fn a_margin_or_scale_the_loss_does_not_use_is_refused() {
        let mut c = config(LossKind::Cosine);
        c.margin = Some(0.5);
        c.scale = Some(20.0);
        let settings: Vec<Setting> = refused(&c).into_iter().map(|e| e.0).collect();
        assert_eq!(settings, [Setting::Margin, Setting::Scale]);
        let mut c = config(LossKind::Mnr);
        c.scale = Some(f64::INFINITY);
        c.batch_size = 1;
        let settings: Vec<Setting> = refused(&c).into_iter().map(|e| e.0).collect();
        assert_eq!(settings, [Setting::BatchSize, Setting::Scale]);
    }

    #[test]
    fn teacher_rules() {
        let c = config(LossKind::Mse);
        assert_eq!(refused(&c)[0].0, Setting::Teacher);
        let mut c = config(LossKind::Cosine);
        c.teacher = Some("t".into());
        assert_eq!(
            refused(&c),
            [(Setting::Teacher, "only the mse loss uses a teacher".into())]
        );
    }

    #[test]
    fn an_output_that_cannot_be_a_folder_is_refused_before_anything_runs() {
        for bad in [".", "..", "/", "runs/.."] {
            let mut c = config(LossKind::Cosine);
            c.output = bad.into();
            let e = refused(&c);
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!(e[0].0, Setting::Output);
            assert!(e[0].1.contains("cannot become a model folder"), "{e:?}");
        }
    }

    #[test]
    fn data_and_evaluation_fit_the_loss() {
        let p = Path::new("d.csv");
        assert!(check_data(DataKind::ScoredPairs, p, LossKind::Cosine).is_ok());
        let e = check_data(DataKind::ScoredPairs, p, LossKind::Softmax).unwrap_err();
        assert_eq!(e.setting, Setting::Loss);
        assert!(
            e.reason
                .starts_with("`softmax` needs the columns premise, hypothesis, label")
        );
        assert!(
            e.reason
                .ends_with("losses that fit this data: cosine, cosent, angle")
        );
        assert!(check_eval(DataKind::Nli, p, Some(LossKind::Softmax)).is_ok());
        assert_eq!(
            check_eval(DataKind::Nli, p, Some(LossKind::Cosine))
                .unwrap_err()
                .setting,
            Setting::Eval
        );
        assert!(check_eval(DataKind::Nli, p, None).is_err());
        assert!(check_eval(DataKind::Texts, p, None).is_err());
        assert!(check_eval(DataKind::Triplets, p, None).is_ok());
    }

    #[test]
    fn only_new_empty_or_our_own_run_folders_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        assert!(check_output(&out).is_ok(), "new");
        std::fs::create_dir(&out).unwrap();
        assert!(check_output(&out).is_ok(), "empty");
        std::fs::write(out.join("train.csv"), "x").unwrap();
        let e = check_output(&out).unwrap_err();
        assert!(e.reason.contains("(train.csv)"), "{e}");
        // An earlier run of ours, finished: replaced.
        std::fs::remove_file(out.join("train.csv")).unwrap();
        std::fs::write(out.join("metrics.jsonl"), "{\"event\":\"started\"}\n").unwrap();
        std::fs::write(out.join("modules.json"), "[]").unwrap();
        std::fs::create_dir(out.join("1_Pooling")).unwrap();
        assert!(check_output(&out).is_ok(), "our run");
        // ... unless someone put their own files in it.
        std::fs::create_dir(out.join("sub")).unwrap();
        assert!(check_output(&out).unwrap_err().reason.contains("(sub)"));
        // A model folder that is not a run of ours (the base model, say).
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("modules.json"), "[]").unwrap();
        assert!(check_output(&model).is_err());
        assert!(check_output(&model.join("modules.json")).is_err(), "a file");
    }
}
