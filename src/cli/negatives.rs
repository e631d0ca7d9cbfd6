//! `sbert-tui mine-negatives`: hard negatives for (anchor, positive) pairs, as the Python
//! library's `util.mine_hard_negatives`, written as a training file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::analysis::embeddings::Embeddings;
use crate::analysis::export::write_atomically;
use crate::analysis::hard_negatives::{
    MinedRow, MiningOptions, MiningPlan, OutputFormat, Sampling, mine_hard_negatives,
};
use crate::corpus::{self, CorpusFormat};
use crate::model::Prompt;
use crate::train::data::{self, DataKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SamplingArg {
    /// The most similar candidates left after the filters.
    Top,
    /// Random candidates among those left (seeded by --seed).
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MinedFormat {
    /// anchor, positive, negative: for --loss mnr (hard negatives) or triplet.
    Triplet,
    /// sentence1, sentence2, label: each positive (1) then its negatives (0), for --loss
    /// contrastive or online-contrastive.
    LabeledPair,
}

#[derive(Debug, Args)]
pub struct MineNegativesArgs {
    /// The model that ranks the candidates; --prompt / --prompt-name apply to the anchors.
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// (anchor, positive) pairs: a training file with `anchor, positive` (or `query, passage`)
    /// columns; an `anchor, positive, negative` file's negatives are ignored.
    #[arg(long)]
    pub data: PathBuf,
    /// More candidate texts (one per line, or a `text` column), besides the data's positives.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Where to write the mined rows: .csv, .tsv or .jsonl (written whole, or not at all).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Put the model's prompt of this name before each corpus text.
    #[arg(long)]
    pub corpus_prompt_name: Option<String>,
    /// Put this text before each corpus text.
    #[arg(long)]
    pub corpus_prompt: Option<String>,
    /// Skip the N most similar candidates (they may be unlabelled positives).
    #[arg(long, default_value_t = 0)]
    pub range_min: usize,
    /// Consider only the N most similar candidates (default: range-min + num-negatives + the
    /// most positives of an anchor; ten times the negatives with a margin or --max-score).
    #[arg(long)]
    pub range_max: Option<usize>,
    /// A candidate scoring above this (cosine) is not a negative.
    #[arg(long)]
    pub max_score: Option<f32>,
    /// A candidate scoring below this is not a negative.
    #[arg(long)]
    pub min_score: Option<f32>,
    /// A negative must score at least this much below the anchor's positive.
    #[arg(long)]
    pub absolute_margin: Option<f32>,
    /// A negative must score below positive - |positive| * M.
    #[arg(long)]
    pub relative_margin: Option<f32>,
    /// Negatives per anchor.
    #[arg(long, default_value_t = 3)]
    pub num_negatives: usize,
    #[arg(long, value_enum, default_value_t = SamplingArg::Top)]
    pub sampling: SamplingArg,
    #[arg(long, value_enum, default_value_t = MinedFormat::Triplet)]
    pub format: MinedFormat,
    /// Triplets only: add a `label` column, the positive's cosine minus the negative's (the
    /// file is then margin triplets, for --loss margin-mse).
    #[arg(long)]
    pub margins: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

/// Which file layout to write, by the output's extension.
fn delimiter(path: &Path) -> Result<Option<u8>> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
    {
        Some(e) if e == "csv" => Ok(Some(b',')),
        Some(e) if e == "tsv" => Ok(Some(b'\t')),
        Some(e) if e == "jsonl" => Ok(None),
        _ => bail!(
            "--output {}: name a .csv, .tsv or .jsonl file",
            path.display()
        ),
    }
}

pub fn run(args: MineNegativesArgs) -> Result<()> {
    let delim = delimiter(&args.output)?;
    if args.margins && args.format != MinedFormat::Triplet {
        bail!("--margins goes with --format triplet");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let d = data::load(&args.data)?;
    if !matches!(d.kind, DataKind::Pairs | DataKind::Triplets) {
        bail!(
            "{}: mining needs (anchor, positive) pairs, but this file holds {}",
            args.data.display(),
            d.kind.describe()
        );
    }
    let pairs: Vec<(String, String)> = d
        .examples
        .iter()
        .map(|e| {
            let t = e.texts();
            (t[0].to_string(), t[1].to_string())
        })
        .collect();
    let extra = match &args.corpus {
        Some(path) => corpus::read(path, CorpusFormat::Auto, None)?.texts,
        None => Vec::new(),
    };
    let plan = MiningPlan::new(&pairs, &extra)?;
    let options = MiningOptions {
        range_min: args.range_min,
        range_max: args.range_max,
        max_score: args.max_score,
        min_score: args.min_score,
        absolute_margin: args.absolute_margin,
        relative_margin: args.relative_margin,
        num_negatives: args.num_negatives,
        sampling: match args.sampling {
            SamplingArg::Top => Sampling::Top,
            SamplingArg::Random => Sampling::Random,
        },
        seed: args.seed,
    };
    let format = match args.format {
        MinedFormat::Triplet => OutputFormat::Triplet,
        MinedFormat::LabeledPair => OutputFormat::LabeledPair,
    };
    let encoder = args.model.load()?;
    let corpus_prompt = Prompt::from_flags(
        args.corpus_prompt_name.as_deref(),
        args.corpus_prompt.as_deref(),
    );
    encoder.prompt_text(&corpus_prompt)?;
    eprintln!(
        "embedding {} anchors and {} corpus texts...",
        plan.queries.len(),
        plan.corpus.len()
    );
    let embed = |texts: &[String], prompt: &Prompt| -> Result<Embeddings> {
        let v = encoder.encode_prompted(texts, prompt, args.batch_size, &mut |_, _| {})?;
        Ok(Embeddings::from_rows(&v).normalized())
    };
    let queries = embed(&plan.queries, &args.model.prompt())?;
    let corpus = embed(&plan.corpus, &corpus_prompt)?;
    let mined = mine_hard_negatives(&plan, &queries, &corpus, &options, format)?;
    write_rows(&args.output, delim, &mined.rows, args.margins)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "{} rows written to {}: {} of {} negatives found (mean cosine: negatives {:.4}, positives {:.4})",
        mined.rows.len(),
        args.output.display(),
        mined.negatives,
        mined.asked,
        mined.mean_negative_score,
        mined.mean_positive_score
    );
    Ok(())
}

/// The rows as CSV / TSV (with a header) or JSON Lines, through a temporary file.
fn write_rows(path: &Path, delim: Option<u8>, rows: &[MinedRow], margins: bool) -> Result<()> {
    let header: Vec<&str> = match rows.first() {
        Some(MinedRow::Labeled { .. }) => vec!["sentence1", "sentence2", "label"],
        _ if margins => vec!["anchor", "positive", "negative", "label"],
        _ => vec!["anchor", "positive", "negative"],
    };
    let fields = |r: &MinedRow| -> Vec<String> {
        match r {
            MinedRow::Triplet {
                anchor,
                positive,
                negative,
                scores,
            } => {
                let mut v = vec![anchor.clone(), positive.clone(), negative.clone()];
                if margins {
                    v.push((scores.0 - scores.1).to_string());
                }
                v
            }
            MinedRow::Labeled {
                anchor,
                document,
                label,
                ..
            } => vec![anchor.clone(), document.clone(), label.to_string()],
        }
    };
    write_atomically(path, |out| {
        match delim {
            Some(d) => {
                let mut w = csv::WriterBuilder::new().delimiter(d).from_writer(out);
                w.write_record(&header)?;
                for r in rows {
                    w.write_record(fields(r))?;
                }
                w.flush()?;
            }
            None => {
                for r in rows {
                    let mut obj = serde_json::Map::new();
                    for (k, v) in header.iter().zip(fields(r)) {
                        let value = match *k {
                            "label" => serde_json::from_str(&v).unwrap_or(serde_json::Value::Null),
                            _ => serde_json::Value::String(v),
                        };
                        obj.insert(k.to_string(), value);
                    }
                    serde_json::to_writer(&mut *out, &obj)?;
                    writeln!(out)?;
                }
            }
        }
        Ok(())
    })?;
    Ok(())
}
