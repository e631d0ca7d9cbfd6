//! What the corpus commands (`search`, `mine`, `cluster`, `export`) share: reading the corpus
//! file and embedding it through the vector cache, with a progress bar on stderr.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::corpus::embed::{EmbedOptions, Embedded, embed_texts};
use crate::corpus::{self, Corpus, CorpusFormat};
use crate::model::{Prompt, SentenceEncoder};

/// The corpus file and how to embed it.
#[derive(Debug, Clone, Args)]
pub struct CorpusArgs {
    /// The corpus: plain text (one text per line; its 0-based line index is its `corpus_id`;
    /// blank lines are skipped but keep their index), or a column of a CSV / TSV / JSON Lines
    /// file (`corpus_id`: the 0-based data row, or line for JSON Lines).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Layout of the corpus file: auto (by extension), text, csv, tsv, jsonl.
    #[arg(long, value_enum, default_value_t = CorpusFormat::Auto)]
    pub corpus_format: CorpusFormat,
    /// The CSV / TSV column or JSON Lines field holding the texts (default: `text`, or a CSV's
    /// only column).
    #[arg(long)]
    pub column: Option<String>,
    /// Neither read nor write the vector cache ($SBERT_TUI_CACHE/vectors, by default
    /// ~/.cache/sbert-tui/vectors), where vectors are kept by model, pooling, prompt and text so
    /// that a corpus is embedded once and an interrupted run resumes.
    #[arg(long)]
    pub no_cache: bool,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

impl CorpusArgs {
    /// Reads the corpus file.
    pub fn read(&self) -> Result<Corpus> {
        Ok(corpus::read(
            &self.corpus,
            self.corpus_format,
            self.column.as_deref(),
        )?)
    }

    /// Embeds `corpus` through the cache, with a progress bar for long corpora; says on stderr
    /// how many vectors came from the cache.
    pub fn embed(
        &self,
        encoder: &SentenceEncoder,
        corpus: &Corpus,
        prompt: &Prompt,
    ) -> Result<Embedded> {
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let options = EmbedOptions {
            batch_size: self.batch_size,
            cache_root: (!self.no_cache).then(crate::corpus::cache::VectorCache::default_root),
            ..EmbedOptions::default()
        };
        let bar = (corpus.len() > 4 * self.batch_size).then(|| {
            let bar = ProgressBar::new(corpus.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} embedding [{bar:30}] {pos}/{len} texts ({per_sec}, eta {eta}) {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        let embedded = embed_texts(encoder, &corpus.texts, prompt, &options, &mut |p| {
            if let Some(bar) = &bar {
                if p.cached > 0 {
                    bar.set_message(format!("({} from the cache)", p.cached));
                }
                bar.set_position(p.done as u64);
            }
            true
        })?
        .expect("never cancelled");
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        match &embedded.cache {
            Ok(_) if embedded.cached > 0 => eprintln!(
                "{} of {} vectors from the cache, {} embedded",
                embedded.cached,
                corpus.len(),
                embedded.encoded
            ),
            Ok(_) => {}
            Err(why) if !self.no_cache => eprintln!("warning: vector cache not used: {why}"),
            Err(_) => {}
        }
        Ok(embedded)
    }
}

/// `sbert-tui mine`: paraphrase mining over a corpus.
#[derive(Debug, Args)]
pub struct MineArgs {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// For each text, only its K most similar others are candidates (Python's `top_k`).
    #[arg(long, default_value_t = 100)]
    pub top_k: usize,
    /// The most pairs written (Python's `max_pairs`).
    #[arg(long, default_value_t = 500_000)]
    pub max_pairs: usize,
    /// Write only pairs scoring at least this.
    #[arg(long)]
    pub min_score: Option<f32>,
}

/// `sbert-tui cluster`: community detection or k-means over a corpus.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// `communities` (the Python library's `community_detection`) or `kmeans` (linfa).
    #[arg(long, value_enum, default_value_t = ClusterKind::Communities)]
    pub method: ClusterKind,
    /// Communities: the similarity two texts need to count as close.
    #[arg(long, default_value_t = 0.75)]
    pub threshold: f32,
    /// Communities: the fewest members a community may have.
    #[arg(long, default_value_t = 10)]
    pub min_size: usize,
    /// K-means: the number of clusters.
    #[arg(short, long, default_value_t = 8)]
    pub k: usize,
    /// K-means: the seed of its initialisation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Most central members listed per cluster (`central`, `central_texts`).
    #[arg(long, default_value_t = 3)]
    pub central: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterKind {
    Communities,
    Kmeans,
}

/// `sbert-tui export`: a corpus's vectors to a file.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// `FILE.npy` (NumPy float32, N x dim), `FILE.safetensors` (tensor `embeddings`), or a folder
    /// for TensorFlow's Embedding Projector (`vectors.tsv` and `metadata.tsv`).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Loads the model, reads and embeds the corpus.
fn load(
    model: &super::ModelArgs,
    args: &CorpusArgs,
) -> Result<(SentenceEncoder, Corpus, Embedded)> {
    let corpus = args.read()?;
    let encoder = model.load()?;
    let embedded = args.embed(&encoder, &corpus, &model.prompt())?;
    Ok((encoder, corpus, embedded))
}

pub fn mine(args: MineArgs) -> Result<()> {
    use std::io::Write;
    if args.top_k == 0 || args.max_pairs == 0 {
        bail!("--top-k and --max-pairs must be at least 1");
    }
    let (encoder, corpus, embedded) = load(&args.model, &args.corpus)?;
    let options = crate::analysis::mining::MiningOptions {
        top_k: args.top_k,
        max_pairs: args.max_pairs,
        ..Default::default()
    };
    let pairs = crate::analysis::mining::paraphrase_mining(
        &embedded.vectors,
        encoder.info().similarity,
        &options,
        &mut |_, _| true,
    )
    .expect("never cancelled");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for p in pairs {
        if args.min_score.is_some_and(|m| p.score < m) {
            break;
        }
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "score": p.score,
                "corpus_id_1": corpus.ids[p.i],
                "corpus_id_2": corpus.ids[p.j],
                "text_1": corpus.texts[p.i],
                "text_2": corpus.texts[p.j],
            }),
        )?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

pub fn cluster(args: ClusterArgs) -> Result<()> {
    use crate::analysis::mining;
    use std::io::Write;
    if args.method == ClusterKind::Kmeans && args.k == 0 {
        bail!("--k must be at least 1");
    }
    if args.method == ClusterKind::Communities && !(-1.0..=1.0).contains(&args.threshold) {
        bail!("--threshold must lie between -1 and 1");
    }
    let (encoder, corpus, embedded) = load(&args.model, &args.corpus)?;
    let vectors = &embedded.vectors;
    let groups: Vec<Vec<usize>> = match args.method {
        ClusterKind::Communities => mining::community_detection(
            vectors,
            args.threshold,
            args.min_size,
            1024,
            &mut |_, _| true,
        )
        .expect("never cancelled"),
        ClusterKind::Kmeans => {
            let unit;
            let input =
                if encoder.info().similarity == crate::analysis::similarity::Similarity::Cosine {
                    unit = vectors.normalized();
                    &unit
                } else {
                    vectors
                };
            let r = mining::kmeans(input, args.k, args.seed, 300);
            let mut groups = vec![Vec::new(); r.centroids.len()];
            for (i, &l) in r.labels.iter().enumerate() {
                groups[l].push(i);
            }
            groups
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (c, members) in groups.iter().enumerate() {
        let central = mining::central_members(vectors, members, args.central);
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "cluster": c,
                "size": members.len(),
                "members": members.iter().map(|&m| corpus.ids[m]).collect::<Vec<_>>(),
                "central": central.iter().map(|&m| corpus.ids[m]).collect::<Vec<_>>(),
                "central_texts": central.iter().map(|&m| &corpus.texts[m]).collect::<Vec<_>>(),
            }),
        )?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

pub fn export(args: ExportArgs) -> Result<()> {
    let (encoder, corpus, embedded) = load(&args.model, &args.corpus)?;
    let model = encoder.info().folder.display().to_string();
    crate::corpus::export(&args.output, &corpus, &embedded.vectors, Some(&model))?;
    eprintln!(
        "wrote {} vectors of dimension {} to {}",
        corpus.len(),
        embedded.vectors.dim(),
        args.output.display()
    );
    Ok(())
}
