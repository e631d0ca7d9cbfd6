//! `sbert-tui search`: exact semantic search of queries over a corpus file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;

use super::{MatrixFormat, ModelArgs};
use crate::analysis::search;

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The corpus: one text per line (its line index, from 0, is its `corpus_id`; blank lines
    /// are skipped but keep their index).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Queries, one per line (instead of, or besides, the QUERY arguments).
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Hits per query.
    #[arg(short = 'k', long, default_value_t = 10)]
    pub top_k: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// `table` for people; `json`: one object per query, `{"query", "hits": [{"corpus_id",
    /// "text", "score"}]}`, one per line.
    #[arg(short, long, value_enum, default_value_t = MatrixFormat::Table)]
    pub format: MatrixFormat,
    /// The queries.
    pub query: Vec<String>,
}

/// The non-blank lines of a text file with their 0-based line indices; a line that is not UTF-8
/// is an error naming the file and the line.
pub fn read_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let Ok(text) = std::str::from_utf8(line) else {
            bail!("{}:{}: not valid UTF-8", path.display(), i + 1);
        };
        let text = text.trim_end_matches('\r');
        if !text.trim().is_empty() {
            out.push((i, text.to_string()));
        }
    }
    Ok(out)
}

pub fn run(args: SearchArgs) -> Result<()> {
    let corpus = read_lines(&args.corpus)?;
    if corpus.is_empty() {
        bail!("{}: no texts (an empty corpus)", args.corpus.display());
    }
    let mut queries = args.query.clone();
    if let Some(path) = &args.queries {
        let lines = read_lines(path)?;
        if lines.is_empty() {
            bail!("{}: no queries", path.display());
        }
        queries.extend(lines.into_iter().map(|(_, t)| t));
    }
    if queries.is_empty() {
        bail!("no query: give QUERY arguments or --queries FILE");
    }
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let encoder = args.model.load()?;
    let prompt = args.model.prompt();
    let texts: Vec<&str> = corpus.iter().map(|(_, t)| t.as_str()).collect();
    let corpus_vectors =
        encoder.encode_prompted(&texts, &prompt, args.batch_size, &mut |_, _| {})?;
    let query_vectors =
        encoder.encode_prompted(&queries, &prompt, args.batch_size, &mut |_, _| {})?;
    let sim = encoder.info().similarity;
    let hits = search::top_k(&query_vectors, &corpus_vectors, args.top_k, sim);
    let mut out = io::stdout().lock();
    for (q, hits) in queries.iter().zip(&hits) {
        match args.format {
            MatrixFormat::Table => {
                writeln!(out, "{q}")?;
                for h in hits {
                    let (line, text) = &corpus[h.corpus_id];
                    writeln!(out, "  {:>8.4}  [{line}] {text}", h.score)?;
                }
            }
            MatrixFormat::Json => {
                let hits: Vec<serde_json::Value> = hits
                    .iter()
                    .map(|h| {
                        let (line, text) = &corpus[h.corpus_id];
                        serde_json::json!({"corpus_id": line, "text": text, "score": h.score})
                    })
                    .collect();
                serde_json::to_writer(&mut out, &serde_json::json!({"query": q, "hits": hits}))?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}
