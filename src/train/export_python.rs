//! `train --export-python FILE`: a Python script that runs the same fine-tuning with
//! sentence-transformers' trainer, for when a run outgrows this machine. It runs unchanged with
//! `python`, `accelerate launch` or `torchrun` (the Hugging Face trainer spreads it over the
//! processes).
//!
//! The data go along as JSON Lines files next to the script, written from the rows as we read
//! them: the same columns in the same order, scores already divided by 5 where we did, NLI labels
//! as numbers, supervised SimCSE's triplets already built. So the script trains on exactly what
//! `train` would, whatever the original file's quirks.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::config::{DenseActivation, TrainConfig};
use super::data::{DataKind, Dataset, Example};
use super::losses::{LossKind, TripletDistance};
use super::rules::{Setting, SettingError};

/// What the script needs beyond the settings, found by reading the data and loading the model.
pub struct ExportPlan<'a> {
    /// The settings, with local paths absolute.
    pub config: &'a TrainConfig,
    /// The rows trained on (after supervised SimCSE's triplets were built), file by file.
    pub train: &'a [std::sync::Arc<Dataset>],
    pub eval: Option<&'a Dataset>,
    /// The prompt text of each column of each file's rows (by position), if any.
    pub prompts: Vec<Vec<Option<String>>>,
    /// `1_Pooling/config.json` for `--pooling`, when the run replaces the model's pooling.
    pub pooling: Option<Value>,
    /// The Dense module the run adds (`--add-dense`, or distillation's projection).
    pub add_dense: Option<super::config::AddDense>,
}

/// The files written: the script and its data, side by side.
pub struct ExportFiles {
    pub script: String,
    /// One per training file.
    pub train_rows: Vec<String>,
    pub eval_rows: Option<String>,
}

/// `FILE.train.jsonl` (then `FILE.train2.jsonl`, ... for more training files) and
/// `FILE.eval.jsonl`, next to `FILE.py`.
pub fn data_paths(script: &Path, train_files: usize) -> (Vec<PathBuf>, PathBuf) {
    let stem = script
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let dir = script.parent().unwrap_or(Path::new(""));
    let train = (0..train_files.max(1))
        .map(|i| match i {
            0 => dir.join(format!("{stem}.train.jsonl")),
            i => dir.join(format!("{stem}.train{}.jsonl", i + 1)),
        })
        .collect();
    (train, dir.join(format!("{stem}.eval.jsonl")))
}

/// The column names of a row kind, as the script's dataset has them. SimCSE's sentences become
/// (anchor, positive) pairs of the same text: the Python library's unsupervised SimCSE recipe.
fn columns(kind: DataKind, loss: LossKind) -> &'static [&'static str] {
    match kind {
        DataKind::ScoredPairs => &["sentence1", "sentence2", "score"],
        DataKind::LabeledPairs => &["sentence1", "sentence2", "label"],
        DataKind::Nli => &["premise", "hypothesis", "label"],
        DataKind::Pairs => &["anchor", "positive"],
        DataKind::Triplets => &["anchor", "positive", "negative"],
        DataKind::MarginTriplets => &["query", "positive", "negative", "label"],
        DataKind::Texts if loss == LossKind::SimCse => &["anchor", "positive"],
        DataKind::Texts => &["text"],
        DataKind::Parallel => &["source", "translation"],
    }
}

/// One JSON object per row, the columns in order.
pub fn rows_jsonl(data: &Dataset, loss: LossKind) -> String {
    let names = columns(data.kind, loss);
    let mut out = String::new();
    for e in &data.examples {
        let values: Vec<Value> = match e {
            Example::Scored { a, b, score } => vec![json!(a), json!(b), short(*score)],
            Example::Labeled { a, b, label } => vec![json!(a), json!(b), json!(*label as i64)],
            Example::Nli {
                premise,
                hypothesis,
                label,
            } => vec![json!(premise), json!(hypothesis), json!(label)],
            Example::Pair { anchor, positive } => vec![json!(anchor), json!(positive)],
            Example::Triplet {
                anchor,
                positive,
                negative,
            } => vec![json!(anchor), json!(positive), json!(negative)],
            Example::MarginTriplet {
                query,
                positive,
                negative,
                margin,
            } => vec![
                json!(query),
                json!(positive),
                json!(negative),
                short(*margin),
            ],
            Example::Text(t) if names.len() == 2 => vec![json!(t), json!(t)],
            Example::Text(t) => vec![json!(t)],
            Example::Parallel {
                source,
                translation,
            } => vec![json!(source), json!(translation)],
        };
        let obj: serde_json::Map<String, Value> =
            names.iter().map(|n| n.to_string()).zip(values).collect();
        out.push_str(&Value::Object(obj).to_string());
        out.push('\n');
    }
    out
}

/// An f32 as the shortest decimal that reads back to it (0.76, not 0.7599999904632568).
fn short(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map_or(Value::Null, |v| json!(v))
}

/// A Python string literal (JSON's escapes are Python's).
fn py(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn py_floats(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// The loss constructor, as Python code on `model`.
fn loss_code(c: &TrainConfig, classes_dim: &str) -> String {
    let scale = |default: f64| format!("{:?}", c.scale.unwrap_or(default));
    let margin = |default: f64| format!("{:?}", c.margin.unwrap_or(default));
    use super::losses as l;
    let inner = match c.loss {
        LossKind::Cosine => "losses.CosineSimilarityLoss(model)".to_string(),
        LossKind::CoSent => format!("losses.CoSENTLoss(model, scale={})", scale(l::COSENT_SCALE)),
        LossKind::Angle => format!("losses.AnglELoss(model, scale={})", scale(l::COSENT_SCALE)),
        LossKind::Mse => "losses.MSELoss(model)".to_string(),
        LossKind::Softmax => format!(
            "losses.SoftmaxLoss(model, sentence_embedding_dimension={classes_dim}, num_labels=3)"
        ),
        LossKind::Triplet => {
            let (metric, default) = match c.triplet_distance {
                TripletDistance::Euclidean => ("EUCLIDEAN", l::TRIPLET_MARGIN_EUCLIDEAN),
                TripletDistance::Cosine => ("COSINE", l::TRIPLET_MARGIN_COSINE),
            };
            format!(
                "losses.TripletLoss(model, distance_metric=losses.TripletDistanceMetric.{metric}, \
                 triplet_margin={})",
                margin(default)
            )
        }
        LossKind::Mnr | LossKind::SimCse => format!(
            "losses.MultipleNegativesRankingLoss(model, scale={})",
            scale(l::MNR_SCALE)
        ),
        LossKind::MnrSymmetric => format!(
            "losses.MultipleNegativesSymmetricRankingLoss(model, scale={})",
            scale(l::MNR_SCALE)
        ),
        LossKind::CachedMnr => format!(
            "losses.CachedMultipleNegativesRankingLoss(model, scale={}, mini_batch_size={})",
            scale(l::MNR_SCALE),
            c.mini_batch_size
        ),
        LossKind::Contrastive | LossKind::OnlineContrastive => format!(
            "losses.{}(model, distance_metric=losses.SiameseDistanceMetric.COSINE_DISTANCE, \
             margin={})",
            c.loss.python_class(),
            margin(l::CONTRASTIVE_MARGIN)
        ),
        LossKind::MarginMse => "losses.MarginMSELoss(model)".to_string(),
    };
    if c.matryoshka_dims.is_empty() {
        return inner;
    }
    let dims: Vec<String> = c.matryoshka_dims.iter().map(ToString::to_string).collect();
    format!(
        "losses.MatryoshkaLoss(model, {inner}, matryoshka_dims=[{}], matryoshka_weights={})",
        dims.join(", "),
        py_floats(&c.matryoshka_weights())
    )
}

/// The evaluator for the evaluation rows, as Python code reading `eval_rows`; `None` with the
/// reason where Python has no evaluator of ours.
fn evaluator_code(kind: DataKind) -> Result<String, String> {
    let col = |n: &str| format!("[r[{}] for r in eval_rows]", py(n));
    Ok(match kind {
        DataKind::ScoredPairs => format!(
            "EmbeddingSimilarityEvaluator({}, {}, {}, name=\"eval\")",
            col("sentence1"),
            col("sentence2"),
            col("score")
        ),
        DataKind::LabeledPairs => format!(
            "BinaryClassificationEvaluator({}, {}, {}, name=\"eval\")",
            col("sentence1"),
            col("sentence2"),
            col("label")
        ),
        DataKind::Triplets => format!(
            "TripletEvaluator({}, {}, {}, name=\"eval\")",
            col("anchor"),
            col("positive"),
            col("negative")
        ),
        DataKind::MarginTriplets => format!(
            "TripletEvaluator({}, {}, {}, name=\"eval\")",
            col("query"),
            col("positive"),
            col("negative")
        ),
        DataKind::Pairs => "retrieval_evaluator(eval_rows)".to_string(),
        DataKind::Nli => {
            return Err(
                "NLI evaluation uses the softmax classifier, which the Python trainer does not \
                 expose to an evaluator"
                    .into(),
            );
        }
        DataKind::Parallel => format!(
            "TranslationEvaluator({}, {}, name=\"eval\")",
            col("source"),
            col("translation")
        ),
        DataKind::Texts => return Err("unlabelled sentences have no metric".into()),
    })
}

/// The script, and the data files' contents.
pub fn render(plan: &ExportPlan, script_path: &Path) -> Result<ExportFiles, SettingError> {
    let c = plan.config;
    if c.adversarial.is_some() {
        return Err(SettingError::new(
            Setting::Adversarial,
            "the Python trainer has no FGM / PGD: a run with --adversarial cannot be exported",
        ));
    }
    if c.crops.is_some() {
        return Err(SettingError::new(
            Setting::Crops,
            "crops are redrawn at every step here; the Python trainer has no such transform, \
             so a run with --crops cannot be exported",
        ));
    }
    if c.pooling.as_ref().is_some_and(|p| p.has_ours()) {
        return Err(SettingError::new(
            Setting::Pooling,
            "a pooling of ours, which the Python library does not have: it cannot be exported",
        ));
    }
    let (train_paths, eval_path) = data_paths(script_path, plan.train.len());
    let file_name = |p: &Path| {
        p.file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned()
    };
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "\"\"\"Fine-tune {model} with sentence-transformers' trainer: the run that `sbert-tui train`
would make, exported by sbert-tui {version} with --export-python.

Run it as it is:
    python {script}
or on several GPUs (per_device_train_batch_size is per process: N processes make the batch
N times larger, and in-batch losses see only their own process's rows):
    accelerate launch {script}
    torchrun --nproc_per_node N {script}

The data are {train}{eval_note} beside this file: the rows sbert-tui read, as it read them.
The model is saved to the output folder; `sbert-tui encode --model OUTPUT` and the explorer load it.
\"\"\"",
        model = c.model,
        version = env!("CARGO_PKG_VERSION"),
        script = file_name(script_path),
        train = train_paths
            .iter()
            .map(|p| file_name(p))
            .collect::<Vec<_>>()
            .join(", "),
        eval_note = if plan.eval.is_some() {
            format!(" and {}", file_name(&eval_path))
        } else {
            String::new()
        },
    );
    let _ = writeln!(
        w,
        "import json
from collections import OrderedDict
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict
from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                   SentenceTransformerTrainingArguments)

try:  # sentence-transformers 6
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer import modules as models
    from sentence_transformers.sentence_transformer.evaluation import (
        BinaryClassificationEvaluator, EmbeddingSimilarityEvaluator,
        InformationRetrievalEvaluator, TranslationEvaluator, TripletEvaluator)
except ImportError:  # sentence-transformers 3 to 5
    from sentence_transformers import losses, models
    from sentence_transformers.evaluation import (
        BinaryClassificationEvaluator, EmbeddingSimilarityEvaluator,
        InformationRetrievalEvaluator, TranslationEvaluator, TripletEvaluator)

HERE = Path(__file__).resolve().parent
MODEL = {model}
OUTPUT = {output}
TRAIN = [{train}]
EVAL = {eval}


def read_rows(path):
    with open(path, encoding=\"utf-8\") as f:
        return [json.loads(line) for line in f if line.strip()]


def table(path, columns):
    rows = read_rows(path)
    return Dataset.from_dict({{k: [r[k] for r in rows] for k in columns}})


def retrieval_evaluator(rows):
    # Queries and documents by their text, as sbert-tui evaluates positive pairs.
    queries, corpus, relevant = {{}}, {{}}, {{}}
    qid, did = {{}}, {{}}
    for r in rows:
        q, d = r[\"anchor\"], r[\"positive\"]
        qi = qid.setdefault(q, str(len(qid)))
        di = did.setdefault(d, str(len(did)))
        queries[qi], corpus[di] = q, d
        relevant.setdefault(qi, set()).add(di)
    return InformationRetrievalEvaluator(queries, corpus, relevant, name=\"eval\")


def embedding_dimension(model):
    # Renamed in sentence-transformers 6.
    get = getattr(model, \"get_embedding_dimension\", None) or model.get_sentence_embedding_dimension
    return get()


def insert_before_normalize(model, module):
    # A new module after pooling (and after any Dense modules), before Normalize.
    mods = list(model._modules.values())
    at = next((i for i, m in enumerate(mods) if isinstance(m, models.Normalize)), len(mods))
    mods.insert(at, module)
    model._modules = OrderedDict((str(i), m) for i, m in enumerate(mods))


def main():",
        model = py(&c.model),
        output = py(&c.output.to_string_lossy()),
        train = train_paths
            .iter()
            .map(|p| format!("HERE / {}", py(&file_name(p))))
            .collect::<Vec<_>>()
            .join(", "),
        eval = if plan.eval.is_some() {
            format!("HERE / {}", py(&file_name(&eval_path)))
        } else {
            "None".to_string()
        },
    );
    let _ = writeln!(w, "    torch.manual_seed({})", c.seed);
    let _ = writeln!(w, "    model = SentenceTransformer(MODEL)");
    if let Some(n) = c.max_seq_length {
        let _ = writeln!(w, "    model.max_seq_length = {n}");
    }
    if let Some(p) = &plan.pooling {
        let _ = writeln!(
            w,
            "    # --pooling: the pooling module replaced.\n    \
             model._modules[\"1\"] = models.Pooling(**json.loads({}))",
            py(&p.to_string())
        );
    }
    if let Some(d) = plan.add_dense {
        let act = match d.activation {
            DenseActivation::Tanh => "torch.nn.Tanh()",
            DenseActivation::Relu => "torch.nn.ReLU()",
            DenseActivation::Identity => "torch.nn.Identity()",
        };
        let _ = writeln!(
            w,
            "    insert_before_normalize(model, models.Dense(\n        \
             in_features=embedding_dimension(model), out_features={}, \
             activation_function={act}))",
            d.dim
        );
    }
    if !c.dropout {
        let _ = writeln!(
            w,
            "    # --no-dropout\n    for m in model.modules():\n        \
             if isinstance(m, torch.nn.Dropout):\n            m.p = 0.0"
        );
    }
    let names: Vec<&[&str]> = plan.train.iter().map(|d| columns(d.kind, c.loss)).collect();
    // Several files: a DatasetDict (a batch never mixes files), named data1, data2, ...
    let set_name = |i: usize| format!("data{}", i + 1);
    let tables: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("table(TRAIN[{i}], {})", py_list(n)))
        .collect();
    if tables.len() == 1 {
        let _ = writeln!(w, "    train_dataset = {}", tables[0]);
    } else {
        let items: Vec<String> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| format!("        {}: {t},", py(&set_name(i))))
            .collect();
        let _ = writeln!(
            w,
            "    train_dataset = DatasetDict({{\n{}\n    }})",
            items.join("\n")
        );
    }
    if c.loss == LossKind::Mse {
        let teacher = c.teacher.clone().unwrap_or_default();
        let _ = writeln!(
            w,
            "    # Distillation: the teacher's vectors of each sentence, computed once.\n    \
             teacher = SentenceTransformer({})\n\n    \
             def with_labels(ds):\n        \
             labels = teacher.encode(ds[{}], batch_size=64, convert_to_numpy=True)\n        \
             return ds.add_column(\"label\", [list(map(float, v)) for v in labels])\n",
            py(&teacher),
            py(names[0][0])
        );
        if tables.len() == 1 {
            let _ = writeln!(w, "    train_dataset = with_labels(train_dataset)");
        } else {
            let _ = writeln!(
                w,
                "    train_dataset = DatasetDict({{k: with_labels(v) for k, v in train_dataset.items()}})"
            );
        }
        let _ = writeln!(w, "    del teacher");
    }
    let dim_expr = "embedding_dimension(model)";
    let _ = writeln!(w, "    loss = {}", loss_code(c, dim_expr));
    let evaluator = match plan.eval {
        Some(e) => match evaluator_code(e.kind) {
            Ok(code) => format!("    eval_rows = read_rows(EVAL)\n    evaluator = {code}"),
            Err(why) => format!("    evaluator = None  # {why}"),
        },
        None => "    evaluator = None".to_string(),
    };
    let _ = writeln!(w, "{evaluator}");
    // Prompts by column: the trainer's `prompts` takes texts by column name (by dataset name,
    // then column name, for several files).
    let by_column = |names: &[&str], prompts: &[Option<String>]| -> Option<String> {
        let items: Vec<String> = names
            .iter()
            .zip(prompts)
            .filter_map(|(n, p)| p.as_ref().map(|p| format!("{}: {}", py(n), py(p))))
            .collect();
        (!items.is_empty()).then(|| format!("{{{}}}", items.join(", ")))
    };
    let per_file: Vec<Option<String>> = names
        .iter()
        .zip(&plan.prompts)
        .map(|(n, p)| by_column(n, p))
        .collect();
    let prompts = match per_file.as_slice() {
        [one] => one.clone().unwrap_or_else(|| "None".to_string()),
        many if many.iter().all(Option::is_none) => "None".to_string(),
        many => {
            let items: Vec<String> = many
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|p| format!("{}: {p}", py(&set_name(i)))))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    };
    let sampler = if plan.train.len() > 1 {
        format!(
            "\n        multi_dataset_batch_sampler={},",
            py(&c.sampler.python_name().to_ascii_lowercase())
        )
    } else {
        String::new()
    };
    let (eval_strategy, eval_steps) = match (plan.eval.is_some(), c.eval_steps) {
        (true, Some(n)) => ("\"steps\"".to_string(), n.to_string()),
        _ => ("\"no\"".to_string(), "None".to_string()),
    };
    let (save_strategy, save_steps) = match c.checkpoint_steps {
        Some(n) => ("\"steps\"".to_string(), n.to_string()),
        None => ("\"no\"".to_string(), "None".to_string()),
    };
    let _ = writeln!(
        w,
        "    args = SentenceTransformerTrainingArguments(
        output_dir=OUTPUT + \"-checkpoints\",
        num_train_epochs={epochs},
        per_device_train_batch_size={batch},
        gradient_accumulation_steps={accumulation},
        learning_rate={lr:?},
        lr_scheduler_type=\"linear\",
        warmup_ratio={warmup:?},
        weight_decay={decay:?},
        max_grad_norm={clip:?},
        seed={seed},
        prompts={prompts},{sampler}
        eval_strategy={eval_strategy},
        eval_steps={eval_steps},
        save_strategy={save_strategy},
        save_steps={save_steps},
        save_total_limit={keep},
        logging_steps=10,
        report_to=[],
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset,
                                         loss=loss, evaluator=evaluator)
    if evaluator is not None and trainer.is_world_process_zero():
        print(\"before training:\", evaluator(model))
    trainer.train()
    if trainer.is_world_process_zero():
        if evaluator is not None:
            print(\"after training:\", evaluator(model))
        model.save_pretrained(OUTPUT)
        print(\"saved the fine-tuned model to\", OUTPUT)


if __name__ == \"__main__\":
    main()",
        epochs = c.epochs,
        batch = c.batch_size,
        accumulation = c.gradient_accumulation_steps,
        lr = c.lr,
        warmup = c.warmup_ratio,
        decay = c.weight_decay,
        clip = c.max_grad_norm.unwrap_or(0.0),
        seed = c.seed,
        keep = c.keep_checkpoints,
    );
    Ok(ExportFiles {
        script: s,
        train_rows: plan.train.iter().map(|d| rows_jsonl(d, c.loss)).collect(),
        eval_rows: plan.eval.map(|e| rows_jsonl(e, c.loss)),
    })
}

fn py_list(names: &[&str]) -> String {
    let items: Vec<String> = names.iter().map(|n| py(n)).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_columns_in_order_and_simcse_pairs_a_sentence_with_itself() {
        let d = Dataset {
            path: "d.txt".into(),
            kind: DataKind::Texts,
            columns: vec!["text".into()],
            examples: vec![Example::Text("a \"quoted\" line".into())],
            scores_scaled: false,
            stamp: None,
        };
        assert_eq!(
            rows_jsonl(&d, LossKind::SimCse),
            "{\"anchor\":\"a \\\"quoted\\\" line\",\"positive\":\"a \\\"quoted\\\" line\"}\n"
        );
        assert_eq!(
            rows_jsonl(&d, LossKind::Mse),
            "{\"text\":\"a \\\"quoted\\\" line\"}\n"
        );
    }

    #[test]
    fn losses_name_the_python_classes_with_our_arguments() {
        let mut c = TrainConfig::new("m", "d".into(), LossKind::Triplet, "o".into());
        assert_eq!(
            loss_code(&c, "D"),
            "losses.TripletLoss(model, distance_metric=losses.TripletDistanceMetric.EUCLIDEAN, \
             triplet_margin=5.0)"
        );
        c.loss = LossKind::CoSent;
        c.matryoshka_dims = vec![16, 8];
        assert_eq!(
            loss_code(&c, "D"),
            "losses.MatryoshkaLoss(model, losses.CoSENTLoss(model, scale=20.0), \
             matryoshka_dims=[16, 8], matryoshka_weights=[1.0, 1.0])"
        );
        c.matryoshka_dims.clear();
        c.loss = LossKind::CachedMnr;
        c.mini_batch_size = 8;
        assert!(loss_code(&c, "D").contains("mini_batch_size=8"));
    }
}
