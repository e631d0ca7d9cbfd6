//! `sbert-tui search`: exact semantic search of queries over a corpus file.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::corpus::CorpusArgs;
use super::{MatrixFormat, ModelArgs};
use crate::analysis::embeddings::Embeddings;
use crate::analysis::search;
use crate::corpus::{self, CorpusFormat};

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Queries, one per line (instead of, or besides, the QUERY arguments).
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Hits per query.
    #[arg(short = 'k', long, default_value_t = 10)]
    pub top_k: usize,
    /// `table` for people; `json`: one object per query, `{"query", "hits": [{"corpus_id",
    /// "text", "score"}]}`, one per line.
    #[arg(short, long, value_enum, default_value_t = MatrixFormat::Table)]
    pub format: MatrixFormat,
    /// The queries.
    pub query: Vec<String>,
}

pub fn run(args: SearchArgs) -> Result<()> {
    let corpus = args.corpus.read()?;
    let mut queries = args.query.clone();
    if let Some(path) = &args.queries {
        let lines = corpus::read(path, CorpusFormat::Text, None)?;
        queries.extend(lines.texts);
    }
    if queries.is_empty() {
        bail!("no query: give QUERY arguments or --queries FILE");
    }
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let encoder = args.model.load()?;
    let prompt = args.model.prompt();
    let embedded = args.corpus.embed(&encoder, &corpus, &prompt)?;
    let query_vectors =
        encoder.encode_prompted(&queries, &prompt, args.corpus.batch_size, &mut |_, _| {})?;
    let sim = encoder.info().similarity;
    let index = search::ExactIndex::new(embedded.vectors, sim);
    let hits = index.search_many(&Embeddings::from_rows(&query_vectors), args.top_k);
    let mut out = io::BufWriter::new(io::stdout().lock());
    for (q, hits) in queries.iter().zip(&hits) {
        match args.format {
            MatrixFormat::Table => {
                writeln!(out, "{q}")?;
                for h in hits {
                    let (id, text) = (corpus.ids[h.corpus_id], &corpus.texts[h.corpus_id]);
                    writeln!(out, "  {:>8.4}  [{id}] {text}", h.score)?;
                }
            }
            MatrixFormat::Json => {
                let hits: Vec<serde_json::Value> = hits
                    .iter()
                    .map(|h| {
                        let (id, text) = (corpus.ids[h.corpus_id], &corpus.texts[h.corpus_id]);
                        serde_json::json!({"corpus_id": id, "text": text, "score": h.score})
                    })
                    .collect();
                serde_json::to_writer(&mut out, &serde_json::json!({"query": q, "hits": hits}))?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
