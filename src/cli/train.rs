//! `train` and `eval`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{MatrixFormat, ModelArgs};
use crate::model::{self, DeviceChoice, PoolingSpec};
use crate::train::augment::Augment;
use crate::train::checkpoint::Resume;
use crate::train::config::{AddDense, ColumnPrompt, DenseActivation, TrainConfig};
use crate::train::events::TrainEvent;
use crate::train::losses::{LossKind, TripletDistance};
use crate::train::rules;
use crate::train::run::{self, Outcome};
use crate::train::sampler::MultiSampler;
use crate::train::session::Adversarial;
use crate::train::{data, eval as evaluators};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Base model: folder or Hugging Face Hub id.
    #[arg(short, long, env = "SBERT_TUI_MODEL", default_value = model::DEFAULT_MODEL)]
    pub model: String,
    /// Training data: .csv, .tsv or .jsonl with a header (see the README for the columns), or
    /// .txt (one sentence per line). Repeat for several files: each batch comes from one file,
    /// the files interleaved by --multi-dataset-sampler.
    #[arg(long, required_unless_present = "resume")]
    pub data: Vec<PathBuf>,
    /// How the batches of several --data files are interleaved: proportional (every batch of
    /// every file once per epoch, files drawn in proportion to their size; the Python trainer's
    /// default) or round-robin (one batch of each file in turn while every file has one left).
    #[arg(long, default_value = "proportional")]
    pub multi_dataset_sampler: MultiSampler,
    /// Loss: cosine, cosent, angle, mse, softmax, triplet, mnr, mnr-symmetric, simcse,
    /// contrastive, online-contrastive, margin-mse, cached-mnr.
    #[arg(long, required_unless_present = "resume")]
    pub loss: Option<LossKind>,
    /// Folder for the fine-tuned model, its log and checkpoints.
    #[arg(short, long, required_unless_present = "resume")]
    pub output: Option<PathBuf>,
    /// Pooling, replacing the model's.
    #[arg(long)]
    pub pooling: Option<PoolingSpec>,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// Share of the steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// AdamW weight decay (never on biases and LayerNorm).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Gradient-norm clipping (0 turns it off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Device: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Evaluation data, evaluated before training, at each epoch's end and every --eval-steps.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    #[arg(long)]
    pub eval_steps: Option<usize>,
    /// Teacher model for the mse (distillation) loss.
    #[arg(long)]
    pub teacher: Option<String>,
    /// Save a checkpoint every N steps (a checkpoint is always saved when the run is stopped).
    #[arg(long)]
    pub checkpoint_steps: Option<usize>,
    /// How many checkpoints to keep.
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Distance for the triplet loss: euclidean or cosine.
    #[arg(long, default_value = "euclidean")]
    pub triplet_distance: TripletDistance,
    /// Margin for triplet and contrastive losses (default: the library's).
    #[arg(long)]
    pub margin: Option<f64>,
    /// Scale for mnr, mnr-symmetric, simcse, cosent, angle (default 20).
    #[arg(long)]
    pub scale: Option<f64>,
    /// Train without dropout (deterministic steps).
    #[arg(long)]
    pub no_dropout: bool,
    /// Prompts for the data's columns, as the Python trainer's `prompts`: `COLUMN=PROMPT` pairs
    /// (`anchor=query,positive=passage`), or one PROMPT for every column. A PROMPT that names one
    /// of the model's prompts is that prompt; otherwise it is the text itself. May be repeated.
    #[arg(long)]
    pub prompts: Vec<String>,
    /// Wrap the loss in MatryoshkaLoss: also train the first D values of each vector to work
    /// alone, for each D given (`768,512,256,128,64`; the full width is usually one of them).
    #[arg(long, value_delimiter = ',')]
    pub matryoshka_dims: Vec<usize>,
    /// A weight per --matryoshka-dims width (default 1 each).
    #[arg(long, value_delimiter = ',', requires = "matryoshka_dims")]
    pub matryoshka_weights: Vec<f64>,
    /// Add a trained Dense module of DIM outputs after pooling (saved as a sentence-transformers
    /// Dense module). Distillation from a wider or narrower teacher adds one of the teacher's
    /// width by itself.
    #[arg(long, value_name = "DIM")]
    pub add_dense: Option<usize>,
    /// Activation of the --add-dense module: tanh (the library's default), relu or identity.
    #[arg(long, default_value = "tanh", requires = "add_dense")]
    pub dense_activation: DenseActivation,
    /// Micro-batches of --batch-size whose mean gradient makes one optimizer step (a larger
    /// effective batch in the memory of a small one; in-batch negatives still come from one
    /// micro-batch).
    #[arg(long, default_value_t = 1)]
    pub gradient_accumulation_steps: usize,
    /// Rows per forward pass of --loss cached-mnr (GradCache): the whole --batch-size still
    /// gives the in-batch negatives, but only this many rows' activations are in memory at once.
    #[arg(long, default_value_t = 32)]
    pub mini_batch_size: usize,
    /// Augment the training data: N augmented copies of each row (EDA and / or back-translation;
    /// labels kept, the originals stay), seeded by --seed.
    #[arg(long, value_name = "N")]
    pub augment_copies: Option<usize>,
    /// EDA's rates: synonym replacement, random insertion, random swap, random deletion (each copy
    /// uses one operation whose rate is above 0). The synonyms: assets/synonyms/en.txt (CC0).
    #[arg(long, value_name = "SR,RI,RS,RD", value_parser = parse_rates,
          default_value = "0.1,0.1,0.1,0.1", requires = "augment_copies")]
    pub eda_rates: [f64; 4],
    /// A `source, translation` file of paraphrases (back-translations): a training text found as
    /// a source is replaced by one of its translations in augmented copies.
    #[arg(long, value_name = "FILE", requires = "augment_copies")]
    pub back_translation: Option<PathBuf>,
    /// Contriever: unlabelled documents (a `text` column or a .txt file) become positive pairs of
    /// two independent random crops, redrawn each epoch, for --loss mnr, mnr-symmetric or
    /// cached-mnr. Optional MIN,MAX: the crop's share of the document's words (default 0.1,0.5).
    #[arg(long, value_name = "MIN,MAX", value_delimiter = ',', num_args = 0..=2)]
    pub crops: Option<Vec<f64>>,
    /// Adversarial training on the word embeddings: fgm (one move of --adv-epsilon along the
    /// loss's gradient) or pgd (--pgd-steps moves of --pgd-alpha, kept within --adv-epsilon);
    /// each step trains on the clean plus the perturbed loss.
    #[arg(long, value_enum)]
    pub adversarial: Option<AdversarialKind>,
    #[arg(long, default_value_t = 1.0, requires = "adversarial")]
    pub adv_epsilon: f64,
    #[arg(long, default_value_t = 3, requires = "adversarial")]
    pub pgd_steps: usize,
    #[arg(long, default_value_t = 0.3, requires = "adversarial")]
    pub pgd_alpha: f64,
    /// Write a Python script that makes this run with sentence-transformers' trainer (same data,
    /// loss, pooling, prompts, hyper-parameters and evaluation; it runs under `accelerate launch`
    /// or `torchrun` on several GPUs), with the data beside it as FILE-stem.train.jsonl (and
    /// .eval.jsonl), and exit without training.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub export_python: Option<PathBuf>,
    /// Continue a run from a checkpoint folder (or a run's output folder: its newest checkpoint).
    /// The run's saved settings are used.
    #[arg(long)]
    pub resume: Option<PathBuf>,
}

/// `--eda-rates`: four comma-separated numbers.
fn parse_rates(s: &str) -> Result<[f64; 4], String> {
    Augment::parse_rates(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdversarialKind {
    Fgm,
    Pgd,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        let mut c = TrainConfig::new(
            &self.model,
            self.data.first().cloned().expect("required by clap"),
            self.loss.expect("required by clap"),
            self.output.clone().expect("required by clap"),
        );
        c.more_data = self.data.iter().skip(1).cloned().collect();
        c.sampler = self.multi_dataset_sampler;
        c.pooling = self.pooling.clone();
        c.epochs = self.epochs;
        c.batch_size = self.batch_size;
        c.lr = self.lr;
        c.warmup_ratio = self.warmup_ratio;
        c.weight_decay = self.weight_decay;
        // 0 turns clipping off; anything else is checked by the rules (a negative or NaN norm is
        // refused there, not silently ignored).
        c.max_grad_norm = (self.max_grad_norm != 0.0).then_some(self.max_grad_norm);
        c.max_seq_length = self.max_seq_length;
        c.seed = self.seed;
        c.device = self.device;
        c.eval = self.eval.clone();
        c.eval_steps = self.eval_steps;
        c.teacher = self.teacher.clone();
        c.checkpoint_steps = self.checkpoint_steps;
        c.keep_checkpoints = self.keep_checkpoints;
        c.triplet_distance = self.triplet_distance;
        c.margin = self.margin;
        c.scale = self.scale;
        c.dropout = !self.no_dropout;
        c.gradient_accumulation_steps = self.gradient_accumulation_steps;
        c.mini_batch_size = self.mini_batch_size;
        c.adversarial = self.adversarial.map(|kind| Adversarial {
            epsilon: self.adv_epsilon,
            steps: match kind {
                AdversarialKind::Fgm => 1,
                AdversarialKind::Pgd => self.pgd_steps,
            },
            alpha: self.pgd_alpha,
        });
        c.crops = self.crops.as_ref().map(|v| match v.as_slice() {
            [] => crate::train::augment::CONTRIEVER_CROP,
            [r] => [*r, *r],
            [lo, hi, ..] => [*lo, *hi],
        });
        c.augment = self.augment_copies.map(|copies| Augment {
            copies,
            eda: self.eda_rates,
            back_translation: self.back_translation.clone(),
        });
        c.matryoshka_dims = self.matryoshka_dims.clone();
        c.matryoshka_weights = self.matryoshka_weights.clone();
        c.add_dense = self.add_dense.map(|dim| AddDense {
            dim,
            activation: self.dense_activation,
        });
        c.prompts = self
            .prompts
            .iter()
            .flat_map(|v| ColumnPrompt::parse_list(v))
            .collect();
        c
    }
}

fn format_metrics(m: &[(String, f64)]) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn train(args: TrainArgs) -> Result<()> {
    if let Some(script) = &args.export_python {
        let written = run::export_python(&args.config(), script)?;
        for path in &written {
            eprintln!("wrote {}", path.display());
        }
        eprintln!(
            "run it with: python {0} (or accelerate launch {0}, torchrun --nproc_per_node N {0})",
            script.display()
        );
        return Ok(());
    }
    let resume = args.resume.as_deref().map(Resume::open).transpose()?;
    let config = match &resume {
        Some(r) => r.state.config.clone(),
        None => args.config(),
    };
    let stop = Arc::new(run::StopSignal::new());
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.requested().is_some() {
                eprintln!("\nstopping now, without a checkpoint");
                std::process::exit(130);
            }
            stop.stop(true);
            eprintln!("\nstopping at the end of this step and saving a checkpoint (Ctrl-C again to quit at once)");
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} steps · {msg} · eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut sink = |e: &TrainEvent| match e {
        TrainEvent::Started {
            total_steps,
            examples,
            data_kind,
            loss,
            device,
            start_step,
            ..
        } => {
            bar.set_length(*total_steps as u64);
            bar.set_position(*start_step as u64);
            bar.println(format!(
                "training: {examples} rows of {data_kind}, loss {loss}, {total_steps} steps on {device}{}",
                if *start_step > 0 { format!(", continuing from step {start_step}") } else { String::new() }
            ));
        }
        TrainEvent::Step {
            step,
            loss,
            learning_rate,
            sentences_per_second,
            ..
        } => {
            bar.set_position(*step as u64);
            bar.set_message(format!(
                "loss {loss:.4} · lr {learning_rate:.2e} · {sentences_per_second:.0} sent/s"
            ));
        }
        TrainEvent::Eval { step, metrics, .. } => {
            bar.println(format!("step {step}: {}", format_metrics(metrics)))
        }
        TrainEvent::Checkpoint { path, .. } => {
            bar.println(format!("checkpoint: {}", path.display()))
        }
        TrainEvent::Failed { .. } | TrainEvent::Cancelled { .. } | TrainEvent::Finished { .. } => {
            bar.finish_and_clear()
        }
    };
    let outcome = match resume {
        Some(r) => run::resume(r, &mut sink, &stop)?,
        None => run::train(config.clone(), &mut sink, &stop)?,
    };
    match outcome {
        Outcome::Finished { output, metrics } => {
            eprintln!("saved the fine-tuned model to {}", output.display());
            if !metrics.is_empty() {
                eprintln!("final evaluation: {}", format_metrics(&metrics));
            }
            Ok(())
        }
        Outcome::Cancelled { step, checkpoint } => {
            match checkpoint {
                Some(p) => eprintln!(
                    "stopped after step {step}; checkpoint {} (continue with: sbert-tui train --resume {})",
                    p.display(),
                    config.output.display()
                ),
                None => eprintln!("stopped after step {step}"),
            }
            std::process::exit(130);
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Data to evaluate on: scored pairs, labelled pairs, pairs (query/passage) or triplets; or
    /// a retrieval folder in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv).
    #[arg(long)]
    pub data: PathBuf,
    /// The qrels file of a BEIR folder to use: qrels/SPLIT.tsv.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Paraphrase mining: `--data` is then a corpus (plain lines, or a column of CSV / TSV /
    /// JSON Lines) and this file its known paraphrase pairs, two corpus ids per line (0-based
    /// line or row numbers, as `search` and `mine` print them). Gives average precision and
    /// the best F1 with its precision, recall and threshold, as the Python library's
    /// ParaphraseMiningEvaluator.
    #[arg(long)]
    pub duplicates: Option<PathBuf>,
    /// With --duplicates: the CSV / TSV column or JSON Lines field of the texts (default
    /// `text`).
    #[arg(long, requires = "duplicates")]
    pub column: Option<String>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(short, long, value_enum, default_value_t = MatrixFormat::Table)]
    pub format: MatrixFormat,
}

/// Prints `metrics`: after the line `what` as a table, or as one JSON object holding the model,
/// the similarity function, the data, `fields` and the metrics.
fn print_metrics(
    args: &EvalArgs,
    sim: crate::analysis::similarity::Similarity,
    what: &str,
    fields: serde_json::Value,
    metrics: &evaluators::Metrics,
) -> Result<()> {
    let mut out = io::stdout().lock();
    match args.format {
        MatrixFormat::Table => {
            writeln!(out, "{what}")?;
            for (k, v) in metrics {
                writeln!(out, "{k:<32} {v:.4}")?;
            }
        }
        MatrixFormat::Json => {
            let mut obj = serde_json::json!({
                "model": args.model.model,
                "similarity": sim.name(),
                "data": args.data,
            });
            let map = obj.as_object_mut().expect("an object");
            if let serde_json::Value::Object(f) = fields {
                map.extend(f);
            }
            let metrics: serde_json::Map<String, serde_json::Value> = metrics
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect();
            map.insert("metrics".into(), metrics.into());
            serde_json::to_writer(&mut out, &obj)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// `eval` on a BEIR retrieval folder: every query against the whole corpus.
fn eval_retrieval(args: &EvalArgs) -> Result<()> {
    let set = crate::train::beir::load(&args.data, &args.split).map_err(|e| anyhow::anyhow!(e))?;
    let encoder = args.model.load()?;
    let prompt = args.model.prompt();
    let queries =
        encoder.encode_prompted(&set.queries, &prompt, args.batch_size, &mut |_, _| {})?;
    let docs = encoder.encode_prompted(&set.docs, &prompt, args.batch_size, &mut |_, _| {})?;
    let sim = encoder.info().similarity;
    let metrics = evaluators::information_retrieval(&queries, &docs, &set.relevant, sim);
    let what = format!(
        "{} queries against {} documents, {} relevant pairs (qrels/{}.tsv)",
        set.queries.len(),
        set.docs.len(),
        set.judgements(),
        args.split
    );
    let fields = serde_json::json!({
        "kind": "retrieval (BEIR)",
        "queries": set.queries.len(),
        "documents": set.docs.len(),
        "relevant": set.judgements(),
    });
    print_metrics(args, sim, &what, fields, &metrics)
}

/// Paraphrase mining of a corpus against its known duplicates (`--duplicates`).
fn eval_paraphrase_mining(args: &EvalArgs, duplicates: &std::path::Path) -> Result<()> {
    use crate::analysis::embeddings::Embeddings;
    use crate::analysis::mining::MiningOptions;
    let corpus = crate::corpus::read(
        &args.data,
        crate::corpus::CorpusFormat::Auto,
        args.column.as_deref(),
    )?;
    let pairs = crate::corpus::read_id_pairs(duplicates)?;
    // Every id must name a text of the corpus: a typo would silently lower recall.
    let known: std::collections::HashSet<usize> = corpus.ids.iter().copied().collect();
    if let Some((line, id)) = pairs
        .iter()
        .flat_map(|p| [(p.line, p.a), (p.line, p.b)])
        .find(|(_, id)| !known.contains(id))
    {
        anyhow::bail!(
            "{}:{line}: corpus id {id} is not a text of {} ({} texts; ids are 0-based line or row numbers)",
            duplicates.display(),
            args.data.display(),
            corpus.len()
        );
    }
    let encoder = args.model.load()?;
    let vectors = encoder.encode_prompted(
        &corpus.texts,
        &args.model.prompt(),
        args.batch_size,
        &mut |_, _| {},
    )?;
    let ids: Vec<String> = corpus.ids.iter().map(usize::to_string).collect();
    let dups: Vec<(String, String)> = pairs
        .iter()
        .map(|p| (p.a.to_string(), p.b.to_string()))
        .collect();
    let metrics = evaluators::paraphrase_mining_metrics(
        &Embeddings::from_rows(&vectors),
        &ids,
        &dups,
        &MiningOptions::default(),
        "",
    );
    let what = format!(
        "paraphrase mining of {} texts against {} known pairs ({})",
        corpus.len(),
        pairs.len(),
        duplicates.display()
    );
    let fields = serde_json::json!({
        "kind": "paraphrase mining",
        "texts": corpus.len(),
        "duplicates": pairs.len(),
    });
    // Mining scores by cosine whatever the model's similarity, as the Python evaluator.
    let sim = crate::analysis::similarity::Similarity::Cosine;
    print_metrics(args, sim, &what, fields, &metrics)
}

pub fn eval(args: EvalArgs) -> Result<()> {
    if let Some(dups) = &args.duplicates {
        return eval_paraphrase_mining(&args, dups);
    }
    if crate::train::beir::is_beir(&args.data) {
        return eval_retrieval(&args);
    }
    let dataset = data::load(&args.data)?;
    rules::check_eval(dataset.kind, &dataset.path, None).map_err(|e| anyhow::anyhow!(e.reason))?;
    let encoder = args.model.load()?;
    let opts = evaluators::EvalOptions {
        batch: args.batch_size,
        prompt: args.model.prompt(),
    };
    let metrics = evaluators::evaluate(&encoder, &dataset, None, &opts)?;
    let what = format!(
        "{} rows of {}",
        dataset.examples.len(),
        dataset.kind.describe()
    );
    let fields = serde_json::json!({
        "kind": dataset.kind.describe(),
        "rows": dataset.examples.len(),
    });
    print_metrics(&args, encoder.info().similarity, &what, fields, &metrics)
}
