//! Training and evaluation data: CSV, TSV and JSON Lines with a header. The columns say what the
//! rows are; every error names the file, the line and the column.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::losses::LossKind;

/// What a data file holds, decided by its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// `sentence1, sentence2, score`: similarity scores (0-5 scaled to [0, 1]).
    ScoredPairs,
    /// `sentence1, sentence2, label`: 1 for similar, 0 for dissimilar.
    LabeledPairs,
    /// `premise, hypothesis, label`: entailment / neutral / contradiction (or 0 / 1 / 2).
    Nli,
    /// `anchor, positive` or `query, passage`: positive pairs.
    Pairs,
    /// `anchor, positive, negative`.
    Triplets,
    /// `query, positive, negative, label`: triplets with a teacher's margin (its score of the
    /// positive minus its score of the negative), for MarginMSE.
    MarginTriplets,
    /// A single `text` (or `sentence`) column: unlabelled sentences.
    Texts,
    /// `source, translation`: parallel sentences, for multilingual distillation.
    Parallel,
}

impl DataKind {
    pub fn describe(self) -> &'static str {
        match self {
            DataKind::ScoredPairs => "scored pairs (sentence1, sentence2, score)",
            DataKind::LabeledPairs => "labelled pairs (sentence1, sentence2, label 0/1)",
            DataKind::Nli => "NLI pairs (premise, hypothesis, label)",
            DataKind::Pairs => "positive pairs (anchor, positive)",
            DataKind::Triplets => "triplets (anchor, positive, negative)",
            DataKind::MarginTriplets => "margin triplets (query, positive, negative, label)",
            DataKind::Texts => "sentences (text)",
            DataKind::Parallel => "parallel sentences (source, translation)",
        }
    }

    /// The losses that fit this kind of data.
    pub fn losses(self) -> &'static [LossKind] {
        use LossKind as L;
        match self {
            DataKind::ScoredPairs => &[L::Cosine, L::CoSent, L::Angle],
            DataKind::LabeledPairs => &[L::Contrastive, L::OnlineContrastive, L::Cosine, L::CoSent],
            // mnr on NLI: supervised SimCSE, on the triplets of `nli_triplets`.
            DataKind::Nli => &[L::Softmax, L::Mnr, L::MnrSymmetric, L::CachedMnr],
            DataKind::Pairs => &[L::Mnr, L::MnrSymmetric, L::CachedMnr],
            DataKind::Triplets => &[L::Triplet, L::Mnr, L::MnrSymmetric, L::CachedMnr],
            DataKind::MarginTriplets => &[L::MarginMse],
            DataKind::Texts => &[L::SimCse, L::Mse],
            DataKind::Parallel => &[L::Mse],
        }
    }
}

/// Which columns a loss needs, for the refusal message.
pub fn columns_for(loss: LossKind) -> &'static str {
    use LossKind as L;
    match loss {
        L::Cosine | L::CoSent | L::Angle => "sentence1, sentence2, score",
        L::Contrastive | L::OnlineContrastive => "sentence1, sentence2, label (0 or 1)",
        L::Softmax => "premise, hypothesis, label",
        L::Triplet => "anchor, positive, negative",
        L::Mnr | L::MnrSymmetric | L::CachedMnr => {
            "anchor, positive[, negative] (or query, passage)"
        }
        L::SimCse => "text (one sentence per row)",
        L::Mse => "text (one sentence per row), or source, translation",
        L::MarginMse => "query, positive, negative, label (the teacher's margin)",
    }
}

/// NLI classes in the order of the Hugging Face SNLI / MNLI datasets.
pub const NLI_LABELS: [&str; 3] = ["entailment", "neutral", "contradiction"];

#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    Scored {
        a: String,
        b: String,
        score: f32,
    },
    Labeled {
        a: String,
        b: String,
        label: f32,
    },
    Nli {
        premise: String,
        hypothesis: String,
        label: u32,
    },
    Pair {
        anchor: String,
        positive: String,
    },
    Triplet {
        anchor: String,
        positive: String,
        negative: String,
    },
    /// A triplet with a teacher's margin: score(query, positive) - score(query, negative).
    MarginTriplet {
        query: String,
        positive: String,
        negative: String,
        margin: f32,
    },
    Text(String),
    /// A sentence and its translation: both must get the teacher's vector of the source.
    Parallel {
        source: String,
        translation: String,
    },
}

impl Example {
    /// The texts of this example, column by column.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            Example::Scored { a, b, .. } | Example::Labeled { a, b, .. } => vec![a, b],
            Example::Nli {
                premise,
                hypothesis,
                ..
            } => vec![premise, hypothesis],
            Example::Pair { anchor, positive } => vec![anchor, positive],
            Example::Triplet {
                anchor,
                positive,
                negative,
            } => vec![anchor, positive, negative],
            Example::MarginTriplet {
                query,
                positive,
                negative,
                ..
            } => vec![query, positive, negative],
            Example::Text(t) => vec![t],
            Example::Parallel {
                source,
                translation,
            } => vec![source, translation],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    pub kind: DataKind,
    pub columns: Vec<String>,
    pub examples: Vec<Example>,
    /// True when scores were on a 0-5 scale and were divided by 5.
    pub scores_scaled: bool,
    /// The file's size and modification time when it was read.
    pub stamp: Option<(u64, std::time::SystemTime)>,
}

impl Dataset {
    /// The names of the text columns, in the order of [`Example::texts`].
    pub fn text_columns(&self) -> Vec<String> {
        detect(&self.columns)
            .map(|(_, need)| {
                need.iter()
                    .filter(|n| !matches!(**n, "score" | "label"))
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// A bad data file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(col) = &self.column {
            write!(f, ": column `{col}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for DataError {}

struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(
        &self,
        line: Option<usize>,
        column: Option<&str>,
        message: impl Into<String>,
    ) -> DataError {
        DataError {
            path: self.path.to_path_buf(),
            line,
            column: column.map(str::to_string),
            message: message.into(),
        }
    }
}

/// Column layouts, most specific first: (kind, required columns).
const LAYOUTS: &[(DataKind, &[&str])] = &[
    (DataKind::ScoredPairs, &["sentence1", "sentence2", "score"]),
    (DataKind::LabeledPairs, &["sentence1", "sentence2", "label"]),
    (DataKind::Nli, &["premise", "hypothesis", "label"]),
    (
        DataKind::MarginTriplets,
        &["query", "positive", "negative", "label"],
    ),
    (
        DataKind::MarginTriplets,
        &["anchor", "positive", "negative", "label"],
    ),
    (DataKind::Triplets, &["anchor", "positive", "negative"]),
    (DataKind::Pairs, &["anchor", "positive"]),
    (DataKind::Pairs, &["query", "passage"]),
    (DataKind::Parallel, &["source", "translation"]),
    (DataKind::Texts, &["text"]),
    (DataKind::Texts, &["sentence"]),
];

fn detect(columns: &[String]) -> Option<(DataKind, &'static [&'static str])> {
    LAYOUTS
        .iter()
        .find(|(_, need)| need.iter().all(|n| columns.iter().any(|c| c == n)))
        .map(|&(k, need)| (k, need))
}

fn layouts_help() -> String {
    LAYOUTS
        .iter()
        .map(|(_, need)| need.join(","))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// How a data file is laid out, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.csv` or no extension: comma-separated, quoted as RFC 4180.
    Csv,
    /// `.txt`: plain text, one sentence per line and no header (unlabelled sentences, as the
    /// `text` column).
    Lines,
    /// `.tsv`, `.tab`: tab-separated, no quoting.
    Tsv,
    /// `.jsonl`, `.ndjson`: one JSON object per line.
    Jsonl,
}

impl Format {
    pub fn of(path: &Path) -> Result<Self, DataError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "tsv" | "tab" => Ok(Format::Tsv),
            "csv" | "" => Ok(Format::Csv),
            "txt" => Ok(Format::Lines),
            other => Err(Ctx { path }.err(
                None,
                None,
                format!("unknown file type `.{other}` (use .csv, .tsv, .jsonl or .txt)"),
            )),
        }
    }
}

/// Reads a CSV (`.csv`), TSV (`.tsv`, `.tab`) or JSON Lines (`.jsonl`) file.
pub fn load(path: &Path) -> Result<Dataset, DataError> {
    let format = Format::of(path)?;
    let bytes = std::fs::read(path)
        .map_err(|e| Ctx { path }.err(None, None, format!("cannot read: {e}")))?;
    let mut d = parse(path, &bytes, format)?;
    d.stamp = stamp(path);
    Ok(d)
}

/// Parses the bytes of a data file; `path` names it in errors.
pub fn parse(path: &Path, bytes: &[u8], format: Format) -> Result<Dataset, DataError> {
    let ctx = Ctx { path };
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        let expected = match format {
            Format::Lines => "one sentence per line",
            _ => "a header line, then rows",
        };
        return Err(ctx.err(
            None,
            None,
            format!("the file is empty (expected {expected})"),
        ));
    }
    let (columns, rows) = match format {
        Format::Lines => read_lines(&ctx, bytes)?,
        Format::Jsonl => read_jsonl(&ctx, bytes)?,
        Format::Tsv => read_delimited(&ctx, bytes, b'\t')?,
        Format::Csv => read_delimited(&ctx, bytes, b',')?,
    };
    build(&ctx, columns, rows)
}

impl Dataset {
    /// Supervised SimCSE's triplets from an NLI file: for each premise, every entailed
    /// hypothesis as the positive, its contradictions in turn as the hard negative (the i-th
    /// entailment with the (i mod n)-th contradiction). Premises without both are left out.
    pub fn nli_triplets(&self) -> Result<Dataset, DataError> {
        let mut order: Vec<&str> = Vec::new();
        let mut by_premise: HashMap<&str, (Vec<&str>, Vec<&str>)> = HashMap::new();
        for e in &self.examples {
            if let Example::Nli {
                premise,
                hypothesis,
                label,
            } = e
            {
                let slot = by_premise.entry(premise).or_insert_with(|| {
                    order.push(premise);
                    (Vec::new(), Vec::new())
                });
                match *label {
                    0 => slot.0.push(hypothesis),
                    2 => slot.1.push(hypothesis),
                    _ => {}
                }
            }
        }
        let mut examples = Vec::new();
        for premise in order {
            let (entailed, contradicted) = &by_premise[premise];
            if contradicted.is_empty() {
                continue;
            }
            for (i, positive) in entailed.iter().enumerate() {
                examples.push(Example::Triplet {
                    anchor: premise.to_string(),
                    positive: positive.to_string(),
                    negative: contradicted[i % contradicted.len()].to_string(),
                });
            }
        }
        if examples.is_empty() {
            return Err(Ctx { path: &self.path }.err(
                None,
                Some("label"),
                "no premise has both an entailment and a contradiction: no triplets for \
                 supervised SimCSE",
            ));
        }
        Ok(Dataset {
            path: self.path.clone(),
            kind: DataKind::Triplets,
            columns: vec!["anchor".into(), "positive".into(), "negative".into()],
            examples,
            scores_scaled: false,
            stamp: self.stamp,
        })
    }

    /// True while the file on disk is the one that was read (same size and modification time).
    pub fn is_current(&self) -> bool {
        self.stamp.is_some() && stamp(&self.path) == self.stamp
    }
}

/// One row: line number and the value of each column (by name).
type Row = (usize, HashMap<String, String>);

fn strip_bom(s: &str) -> &str {
    s.strip_prefix('\u{feff}').unwrap_or(s)
}

fn read_delimited(
    ctx: &Ctx,
    bytes: &[u8],
    delimiter: u8,
) -> Result<(Vec<String>, Vec<Row>), DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .quoting(delimiter != b'\t')
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let utf8 = |field: &[u8], line: usize| {
        std::str::from_utf8(field).map(str::to_string).map_err(|e| {
            ctx.err(
                Some(line),
                None,
                format!("invalid UTF-8 at byte {} of a field", e.valid_up_to() + 1),
            )
        })
    };
    let header = records
        .next()
        .ok_or_else(|| ctx.err(None, None, "the file is empty"))?
        .map_err(|e| ctx.err(Some(1), None, e.to_string()))?;
    let columns: Vec<String> = header
        .iter()
        .map(|f| utf8(f, 1).map(|s| strip_bom(&s).trim().to_ascii_lowercase()))
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for rec in records {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize);
            ctx.err(line, None, e.to_string())
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if rec.len() == 1 && rec.get(0).is_some_and(|f| f.is_empty()) {
            continue; // a blank line
        }
        if rec.len() != columns.len() {
            return Err(ctx.err(
                Some(line),
                None,
                format!("{} fields, but the header has {}", rec.len(), columns.len()),
            ));
        }
        let mut row = HashMap::new();
        for (name, field) in columns.iter().zip(rec.iter()) {
            row.insert(name.clone(), utf8(field, line)?);
        }
        rows.push((line, row));
    }
    Ok((columns, rows))
}

/// The non-blank lines of a file with their 1-based numbers, without `\r` or a byte-order
/// mark; a line that is not UTF-8 is an error naming it.
fn text_lines<'a>(
    ctx: &'a Ctx,
    bytes: &'a [u8],
) -> impl Iterator<Item = Result<(usize, &'a str), DataError>> + 'a {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter_map(move |(i, raw)| {
            let line = i + 1;
            match std::str::from_utf8(raw) {
                Err(e) => Some(Err(ctx.err(
                    Some(line),
                    None,
                    format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
                ))),
                Ok(text) => {
                    let text = strip_bom(text.trim_end_matches('\r'));
                    (!text.trim().is_empty()).then_some(Ok((line, text)))
                }
            }
        })
}

/// A plain text file: each non-blank line is one sentence, as the `text` column.
fn read_lines(ctx: &Ctx, bytes: &[u8]) -> Result<(Vec<String>, Vec<Row>), DataError> {
    let rows = text_lines(ctx, bytes)
        .map(|r| {
            r.map(|(line, text)| {
                (
                    line,
                    HashMap::from([("text".to_string(), text.to_string())]),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((vec!["text".to_string()], rows))
}

fn read_jsonl(ctx: &Ctx, bytes: &[u8]) -> Result<(Vec<String>, Vec<Row>), DataError> {
    let mut columns: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for item in text_lines(ctx, bytes) {
        let (line, text) = item?;
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ctx.err(Some(line), None, format!("invalid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| ctx.err(Some(line), None, "expected a JSON object"))?;
        let names = columns
            .get_or_insert_with(|| obj.keys().map(|k| k.trim().to_ascii_lowercase()).collect());
        let mut row = HashMap::new();
        for (k, v) in obj {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => (*b as u8).to_string(),
                serde_json::Value::Null => String::new(),
                _ => return Err(ctx.err(Some(line), Some(k), "expected a string or a number")),
            };
            row.insert(k.trim().to_ascii_lowercase(), v);
        }
        for name in names.iter() {
            if !row.contains_key(name) {
                return Err(ctx.err(Some(line), Some(name), "missing in this record"));
            }
        }
        rows.push((line, row));
    }
    Ok((columns.unwrap_or_default(), rows))
}

fn build(ctx: &Ctx, columns: Vec<String>, rows: Vec<Row>) -> Result<Dataset, DataError> {
    let Some((kind, _)) = detect(&columns) else {
        // The layout the file comes nearest to: the fewest columns missing (the first on a tie).
        let near: Option<String> = LAYOUTS
            .iter()
            .filter_map(|(_, need)| {
                let missing: Vec<&str> = need
                    .iter()
                    .filter(|n| !columns.iter().any(|c| c == *n))
                    .copied()
                    .collect();
                (missing.len() < need.len()).then_some((missing, need))
            })
            .min_by_key(|(missing, _)| missing.len())
            .map(|(missing, need)| {
                format!(
                    "missing column `{}` (for {})",
                    missing.join("`, `"),
                    need.join(",")
                )
            });
        let message = near.unwrap_or_else(|| {
            format!(
                "columns {} match no known layout; expected one of: {}",
                columns.join(","),
                layouts_help()
            )
        });
        return Err(ctx.err(Some(1), None, message));
    };
    if rows.is_empty() {
        return Err(ctx.err(None, None, "no rows after the header"));
    }
    let text = |row: &Row, col: &str| -> Result<String, DataError> {
        let v = row.1.get(col).cloned().unwrap_or_default();
        if v.trim().is_empty() {
            return Err(ctx.err(Some(row.0), Some(col), "is empty"));
        }
        Ok(v)
    };
    let number = |row: &Row, col: &str| -> Result<f32, DataError> {
        let v = row.1.get(col).map(|s| s.trim()).unwrap_or("");
        v.parse::<f32>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| ctx.err(Some(row.0), Some(col), format!("`{v}` is not a number")))
    };
    let mut examples = Vec::with_capacity(rows.len());
    let mut scores_scaled = false;
    match kind {
        DataKind::ScoredPairs => {
            let mut raw = Vec::with_capacity(rows.len());
            for row in &rows {
                let s = number(row, "score")?;
                if !(0.0..=5.0).contains(&s) {
                    return Err(ctx.err(
                        Some(row.0),
                        Some("score"),
                        format!("{s} is outside 0-5 (or 0-1)"),
                    ));
                }
                raw.push((text(row, "sentence1")?, text(row, "sentence2")?, s));
            }
            scores_scaled = raw.iter().any(|r| r.2 > 1.0);
            let div = if scores_scaled { 5.0 } else { 1.0 };
            examples.extend(raw.into_iter().map(|(a, b, s)| Example::Scored {
                a,
                b,
                score: s / div,
            }));
        }
        DataKind::LabeledPairs => {
            for row in &rows {
                let label = number(row, "label")?;
                if label != 0.0 && label != 1.0 {
                    return Err(ctx.err(
                        Some(row.0),
                        Some("label"),
                        format!("`{label}` must be 0 or 1"),
                    ));
                }
                examples.push(Example::Labeled {
                    a: text(row, "sentence1")?,
                    b: text(row, "sentence2")?,
                    label,
                });
            }
        }
        DataKind::Nli => {
            for row in &rows {
                let raw = row
                    .1
                    .get("label")
                    .map(|s| s.trim().to_ascii_lowercase())
                    .unwrap_or_default();
                let label = NLI_LABELS
                    .iter()
                    .position(|l| *l == raw)
                    .or_else(|| raw.parse::<usize>().ok().filter(|&n| n < 3))
                    .ok_or_else(|| {
                        ctx.err(
                            Some(row.0),
                            Some("label"),
                            format!("unknown label `{raw}` (expected entailment, neutral, contradiction, or 0, 1, 2)"),
                        )
                    })?;
                examples.push(Example::Nli {
                    premise: text(row, "premise")?,
                    hypothesis: text(row, "hypothesis")?,
                    label: label as u32,
                });
            }
        }
        DataKind::Triplets => {
            for row in &rows {
                examples.push(Example::Triplet {
                    anchor: text(row, "anchor")?,
                    positive: text(row, "positive")?,
                    negative: text(row, "negative")?,
                });
            }
        }
        DataKind::MarginTriplets => {
            let q = if columns.iter().any(|c| c == "query") {
                "query"
            } else {
                "anchor"
            };
            for row in &rows {
                examples.push(Example::MarginTriplet {
                    query: text(row, q)?,
                    positive: text(row, "positive")?,
                    negative: text(row, "negative")?,
                    margin: number(row, "label")?,
                });
            }
        }
        DataKind::Pairs => {
            let (a, b) = if columns.iter().any(|c| c == "anchor") {
                ("anchor", "positive")
            } else {
                ("query", "passage")
            };
            for row in &rows {
                examples.push(Example::Pair {
                    anchor: text(row, a)?,
                    positive: text(row, b)?,
                });
            }
        }
        DataKind::Texts => {
            let col = if columns.iter().any(|c| c == "text") {
                "text"
            } else {
                "sentence"
            };
            for row in &rows {
                examples.push(Example::Text(text(row, col)?));
            }
        }
        DataKind::Parallel => {
            for row in &rows {
                examples.push(Example::Parallel {
                    source: text(row, "source")?,
                    translation: text(row, "translation")?,
                });
            }
        }
    }
    Ok(Dataset {
        path: ctx.path.to_path_buf(),
        kind,
        columns,
        examples,
        scores_scaled,
        stamp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(name: &str, content: &[u8]) -> Result<Dataset, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        load(&p).map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
    }

    #[test]
    fn scored_pairs_scale_0_to_5() {
        let d = load_str(
            "s.csv",
            b"sentence1,sentence2,score\na,b,5.0\nc,\"d, e\",2.5\n",
        )
        .unwrap();
        assert_eq!(d.kind, DataKind::ScoredPairs);
        assert!(d.scores_scaled);
        assert_eq!(
            d.examples[1],
            Example::Scored {
                a: "c".into(),
                b: "d, e".into(),
                score: 0.5
            }
        );
        let d = load_str("s.csv", b"sentence1,sentence2,score\na,b,0.9\n").unwrap();
        assert!(!d.scores_scaled);
    }

    #[test]
    fn nli_becomes_supervised_simcse_triplets() {
        let d = load_str(
            "n.csv",
            b"premise,hypothesis,label\np,e1,entailment\np,c1,contradiction\np,n,neutral\np,e2,0\nq,e3,entailment\nr,c2,contradiction\n",
        )
        .unwrap();
        let t = d.nli_triplets().unwrap();
        assert_eq!(t.kind, DataKind::Triplets);
        let rows: Vec<Vec<&str>> = t.examples.iter().map(|e| e.texts()).collect();
        assert_eq!(rows, [["p", "e1", "c1"], ["p", "e2", "c1"]]);
        let d = load_str("n.csv", b"premise,hypothesis,label\np,e1,entailment\n").unwrap();
        let e = d.nli_triplets().unwrap_err().to_string();
        assert!(
            e.ends_with("n.csv: column `label`: no premise has both an entailment and a contradiction: no triplets for supervised SimCSE"),
            "{e}"
        );
    }

    #[test]
    fn a_txt_file_is_one_sentence_per_line() {
        let d = load_str(
            "s.txt",
            b"\xef\xbb\xbfFirst, with a comma.\r\n\n  second \"quoted\"\n",
        )
        .unwrap();
        assert_eq!(d.kind, DataKind::Texts);
        assert_eq!(
            d.examples,
            [
                Example::Text("First, with a comma.".into()),
                Example::Text("  second \"quoted\"".into())
            ]
        );
        assert_eq!(
            load_str("e.txt", b"\n \n").unwrap_err(),
            "DIR/e.txt: the file is empty (expected one sentence per line)"
        );
        assert_eq!(
            load_str("b.txt", b"fine\nbad \xff\n").unwrap_err(),
            "DIR/b.txt:2: invalid UTF-8 at byte 5 of the line"
        );
    }

    #[test]
    fn every_kind_is_detected() {
        let k = |name: &str, c: &[u8]| load_str(name, c).unwrap().kind;
        assert_eq!(
            k(
                "n.csv",
                b"premise,hypothesis,label\na,b,entailment\nc,d,2\n"
            ),
            DataKind::Nli
        );
        assert_eq!(
            k("t.tsv", b"anchor\tpositive\tnegative\na\tb\tc\n"),
            DataKind::Triplets
        );
        assert_eq!(
            k("p.jsonl", b"{\"query\": \"q\", \"passage\": \"p\"}\n"),
            DataKind::Pairs
        );
        assert_eq!(k("x.csv", b"text\nhello\n"), DataKind::Texts);
        let d = load_str(
            "m.tsv",
            b"query\tpositive\tnegative\tlabel\nq\tp\tn\t-1.5\n",
        )
        .unwrap();
        assert_eq!(d.kind, DataKind::MarginTriplets);
        assert_eq!(
            d.examples[0],
            Example::MarginTriplet {
                query: "q".into(),
                positive: "p".into(),
                negative: "n".into(),
                margin: -1.5
            }
        );
        assert_eq!(d.text_columns(), ["query", "positive", "negative"]);
        assert_eq!(
            load_str("m.csv", b"anchor,positive,negative,label\na,b,c,x\n").unwrap_err(),
            "DIR/m.csv:2: column `label`: `x` is not a number"
        );
        assert_eq!(
            k("l.csv", b"sentence1,sentence2,label\na,b,1\n"),
            DataKind::LabeledPairs
        );
        assert_eq!(
            k("x.csv", b"id,sentence\n1,hello\n"),
            DataKind::Texts,
            "extra columns are ignored"
        );
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = |name: &str, c: &[u8]| load_str(name, c).unwrap_err();
        assert_eq!(
            e("e.csv", b""),
            "DIR/e.csv: the file is empty (expected a header line, then rows)"
        );
        assert_eq!(
            e("h.csv", b"sentence1,sentence2,score\n"),
            "DIR/h.csv: no rows after the header"
        );
        assert_eq!(
            e("m.csv", b"sentence1,sentence2\na,b\n"),
            "DIR/m.csv:1: missing column `score` (for sentence1,sentence2,score)"
        );
        assert_eq!(
            e("n.csv", b"sentence1,sentence2,score\na,b,3\nc,d,high\n"),
            "DIR/n.csv:3: column `score`: `high` is not a number"
        );
        assert_eq!(
            e("l.csv", b"premise,hypothesis,label\na,b,maybe\n"),
            "DIR/l.csv:2: column `label`: unknown label `maybe` (expected entailment, neutral, contradiction, or 0, 1, 2)"
        );
        assert_eq!(
            e("r.csv", b"sentence1,sentence2,score\na,b,3\nc,d\n"),
            "DIR/r.csv:3: 2 fields, but the header has 3"
        );
        assert_eq!(
            e("u.csv", b"sentence1,sentence2,score\na,b\xff,3\n"),
            "DIR/u.csv:2: invalid UTF-8 at byte 2 of a field"
        );
        assert_eq!(
            e("x.csv", b"foo,bar\n1,2\n"),
            "DIR/x.csv:1: columns foo,bar match no known layout; expected one of: sentence1,sentence2,score | sentence1,sentence2,label | premise,hypothesis,label | query,positive,negative,label | anchor,positive,negative,label | anchor,positive,negative | anchor,positive | query,passage | source,translation | text | sentence"
        );
        assert_eq!(
            e("j.jsonl", b"{\"text\": \"a\"}\n{\"txt\": \"b\"}\n"),
            "DIR/j.jsonl:2: column `text`: missing in this record"
        );
        assert_eq!(
            e("s.csv", b"sentence1,sentence2,score\na,,3\n"),
            "DIR/s.csv:2: column `sentence2`: is empty"
        );
        assert_eq!(
            e("o.csv", b"sentence1,sentence2,score\na,b,7\n"),
            "DIR/o.csv:2: column `score`: 7 is outside 0-5 (or 0-1)"
        );
    }
}
