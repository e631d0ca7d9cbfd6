//! The model card (README.md) written next to a fine-tuned model: base model, data, loss,
//! hyper-parameters, the training log, and how to load it.

use std::fmt::Write;

use super::config::TrainConfig;
use super::data::Dataset;
use super::eval::Metrics;
use super::session::LossSetup;
use crate::model::ModelInfo;

pub struct CardInput<'a> {
    pub config: &'a TrainConfig,
    /// The training files (several: interleaved by `config.sampler`).
    pub datasets: &'a [std::sync::Arc<Dataset>],
    pub eval_set: Option<&'a Dataset>,
    pub setup: &'a LossSetup,
    pub model: &'a ModelInfo,
    pub total_steps: usize,
    pub evals: &'a [(usize, Metrics)],
    pub losses: &'a [(usize, f64)],
    pub seconds: f64,
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

pub fn model_card(c: &CardInput) -> String {
    let cfg = c.config;
    let mut s = String::new();
    let _ = writeln!(s, "---");
    let _ = writeln!(s, "library_name: sentence-transformers");
    let _ = writeln!(s, "pipeline_tag: sentence-similarity");
    let _ = writeln!(s, "base_model: {}", cfg.model);
    let _ = writeln!(
        s,
        "tags:\n- sentence-transformers\n- sentence-similarity\n- sbert-tui"
    );
    let _ = writeln!(s, "---\n");
    let _ = writeln!(s, "# Fine-tuned {}\n", cfg.model);
    let _ = writeln!(
        s,
        "Fine-tuned with sbert-tui {} from `{}`. It is a sentence-transformers model \
         in the classic folder layout: `SentenceTransformer(\"path/to/this/folder\")` loads it in Python \
         (unless its pooling is one of ours, below), `sbert-tui --model path/to/this/folder` here.\n",
        env!("CARGO_PKG_VERSION"),
        cfg.model
    );
    if c.model.pooling.has_ours() {
        let _ = writeln!(
            s,
            "**Note:** its pooling (`{}`) is a mode of sbert-tui that the Python library does not \
             have: this folder loads in sbert-tui only. Train with a standard pooling (mean, cls, \
             max, ...) to share the model with Python.\n",
            c.model.pooling
        );
    }
    let m = c.model;
    let _ = writeln!(s, "## Model\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| base model | `{}` |", cfg.model);
    let _ = writeln!(
        s,
        "| architecture | {} ({} layers, hidden {}) |",
        m.model_type, m.layers, m.hidden_size
    );
    let _ = writeln!(s, "| pooling | {} |", m.pooling);
    let _ = writeln!(s, "| dense layers | {} |", m.dense_layers);
    if let Some(d) = cfg.add_dense {
        let _ = writeln!(
            s,
            "| added by this run | Dense to {} values, {} activation |",
            d.dim, d.activation
        );
    }
    let _ = writeln!(s, "| normalize | {} |", m.normalize);
    let _ = writeln!(s, "| output dimension | {} |", m.embedding_dim);
    let _ = writeln!(s, "| max sequence length | {} |\n", m.max_seq_length);

    let _ = writeln!(s, "## Data\n");
    for d in c.datasets {
        let _ = writeln!(
            s,
            "- training: `{}`: {} rows of {}{}",
            file_name(&d.path),
            d.examples.len(),
            d.kind.describe(),
            if d.scores_scaled {
                "; scores on 0-5 divided by 5"
            } else {
                ""
            }
        );
    }
    if c.datasets.len() > 1 {
        let _ = writeln!(
            s,
            "- batches: each from one file, the files interleaved {} (sentence-transformers \
             `MultiDatasetBatchSamplers.{}`)",
            cfg.sampler,
            cfg.sampler.python_name()
        );
    }
    if let Some(e) = c.eval_set {
        let _ = writeln!(
            s,
            "- evaluation: `{}`: {} rows of {}",
            file_name(&e.path),
            e.examples.len(),
            e.kind.describe()
        );
    }
    let _ = writeln!(s);

    let _ = writeln!(s, "## Loss\n");
    let _ = writeln!(
        s,
        "`{}` (sentence-transformers `{}`, {}): {}.\n",
        cfg.loss,
        cfg.loss.python_class(),
        c.setup.describe(),
        cfg.loss.explain()
    );

    let _ = writeln!(s, "## Hyper-parameters\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let rows: Vec<(&str, String)> = vec![
        ("epochs", cfg.epochs.to_string()),
        ("batch size", cfg.batch_size.to_string()),
        (
            "gradient accumulation steps",
            cfg.gradient_accumulation_steps.to_string(),
        ),
        (
            "augmentation",
            cfg.augment
                .as_ref()
                .map_or_else(|| "none".to_string(), |a| a.describe()),
        ),
        (
            "adversarial training",
            cfg.adversarial
                .map_or_else(|| "none".to_string(), |a| a.describe()),
        ),
        (
            "random crops",
            cfg.crops.map_or_else(
                || "none".to_string(),
                |[a, b]| {
                    format!(
                        "Contriever: two independent crops of {a} to {b} of each document's \
                         words as a positive pair, redrawn each epoch"
                    )
                },
            ),
        ),
        ("learning rate", format!("{:e}", cfg.lr)),
        (
            "schedule",
            format!("linear, warm-up ratio {}", cfg.warmup_ratio),
        ),
        (
            "optimizer",
            format!(
                "AdamW, weight decay {} (not on biases and LayerNorm)",
                cfg.weight_decay
            ),
        ),
        (
            "max grad norm",
            cfg.max_grad_norm.map_or("off".into(), |n| n.to_string()),
        ),
        (
            "dropout",
            if cfg.dropout {
                "on (the model's own probabilities)".into()
            } else {
                "off".into()
            },
        ),
        ("seed", cfg.seed.to_string()),
        ("device", m.device.clone()),
        ("steps", c.total_steps.to_string()),
        ("training time", format!("{:.1} s", c.seconds)),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s);

    let _ = writeln!(s, "## Training log\n");
    if !c.evals.is_empty() {
        let names: Vec<&str> = c.evals[0].1.iter().map(|(k, _)| k.as_str()).collect();
        let _ = writeln!(s, "| step | {} |", names.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(names.len()));
        for (step, metrics) in c.evals {
            let vals: Vec<String> = metrics.iter().map(|(_, v)| format!("{v:.4}")).collect();
            let _ = writeln!(s, "| {step} | {} |", vals.join(" | "));
        }
        let _ = writeln!(s);
    }
    if !c.losses.is_empty() {
        // The mean loss over ten stretches of the run.
        let chunk = c.losses.len().div_ceil(10);
        let _ = writeln!(s, "| steps | mean loss |\n|---|---|");
        for part in c.losses.chunks(chunk) {
            let mean = part.iter().map(|l| l.1).sum::<f64>() / part.len() as f64;
            let _ = writeln!(
                s,
                "| {}-{} | {mean:.4} |",
                part[0].0,
                part[part.len() - 1].0
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "Every step and evaluation is in `metrics.jsonl` next to this file.\n"
    );
    let _ = writeln!(s, "## Usage\n");
    let _ = writeln!(
        s,
        "```python\nfrom sentence_transformers import SentenceTransformer\nmodel = SentenceTransformer(\"path/to/this/folder\")\nembeddings = model.encode([\"A sentence\", \"Another one\"])\n```\n"
    );
    let _ = writeln!(
        s,
        "```sh\nsbert-tui similarity --model path/to/this/folder \"A sentence\" \"Another one\"\n```"
    );
    s
}
