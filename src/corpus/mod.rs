//! Corpora: files of up to millions of texts, embedded once and kept.
//!
//! - [`read`] opens plain text (one text per line), or one column of a CSV, TSV or JSON Lines
//!   file, naming the file, line and field of anything it cannot read;
//! - [`cache`] keeps the vectors on disk, keyed by the model, its pooling, the prompt and the text,
//!   so reopening a corpus is instant and an interrupted embedding resumes where it stopped;
//! - [`embed`] embeds a corpus through that cache with progress and cancellation.
//!
//! Knows nothing about terminals; the explorer's corpus screen and the headless `search`, `mine`,
//! `cluster` and `export` commands both build on it.

pub mod cache;
pub mod embed;

use std::fmt;
use std::path::{Path, PathBuf};

/// How a corpus file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CorpusFormat {
    /// From the extension: `.csv`, `.tsv`, `.jsonl`; anything else is plain text.
    #[default]
    Auto,
    /// One text per line; blank lines are skipped but keep their index.
    Text,
    /// Comma-separated with a header row.
    Csv,
    /// Tab-separated with a header row (quotes are plain characters).
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

impl CorpusFormat {
    /// The format `Auto` stands for with this file.
    pub fn resolve(self, path: &Path) -> CorpusFormat {
        if self != CorpusFormat::Auto {
            return self;
        }
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => CorpusFormat::Csv,
            Some("tsv") => CorpusFormat::Tsv,
            Some("jsonl") | Some("ndjson") => CorpusFormat::Jsonl,
            _ => CorpusFormat::Text,
        }
    }
}

/// A corpus that could not be read, naming where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for CorpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for CorpusError {}

/// The texts of a corpus file and where each came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Corpus {
    pub path: PathBuf,
    /// The column read (CSV, TSV, JSON Lines), `None` for plain text.
    pub column: Option<String>,
    pub texts: Vec<String>,
    /// For each text, its `corpus_id`: the 0-based line of a plain-text or JSON Lines file,
    /// the 0-based data row (after the header) of a CSV or TSV file.
    pub ids: Vec<usize>,
}

impl Corpus {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// A corpus of texts held in memory (ids 0, 1, ...).
    pub fn from_texts(name: &str, texts: Vec<String>) -> Corpus {
        Corpus {
            path: PathBuf::from(name),
            column: None,
            ids: (0..texts.len()).collect(),
            texts,
        }
    }

    /// Bytes the texts take (for memory reports).
    pub fn text_bytes(&self) -> usize {
        self.texts.iter().map(String::capacity).sum::<usize>()
            + self.texts.capacity() * std::mem::size_of::<String>()
            + self.ids.capacity() * std::mem::size_of::<usize>()
    }
}

/// Reads `path` as `format`, taking `column` of a CSV / TSV / JSON Lines file (default: a column
/// named `text`, else the only column; JSON Lines: `text`). Blank texts are skipped. An empty
/// corpus, a line that is not UTF-8, a missing column or field are errors naming the file and
/// line.
pub fn read(
    path: &Path,
    format: CorpusFormat,
    column: Option<&str>,
) -> Result<Corpus, CorpusError> {
    let bytes = std::fs::read(path).map_err(|e| CorpusError {
        path: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &bytes, format.resolve(path), column)
}

/// [`read`] on bytes already in memory; `path` names them in errors.
pub fn parse(
    path: &Path,
    bytes: &[u8],
    format: CorpusFormat,
    column: Option<&str>,
) -> Result<Corpus, CorpusError> {
    let err = |line: Option<usize>, message: String| CorpusError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut corpus = Corpus {
        path: path.to_path_buf(),
        ..Corpus::default()
    };
    match format.resolve(path) {
        CorpusFormat::Text | CorpusFormat::Auto => {
            if let Some(c) = column {
                return Err(err(
                    None,
                    format!("a plain-text corpus has no columns (asked for `{c}`)"),
                ));
            }
            for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
                let line = utf8_line(raw, i + 1).map_err(|m| err(Some(i + 1), m))?;
                if !line.trim().is_empty() {
                    corpus.texts.push(line.to_string());
                    corpus.ids.push(i);
                }
            }
        }
        CorpusFormat::Jsonl => {
            let field = column.unwrap_or("text");
            corpus.column = Some(field.to_string());
            for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
                let line = utf8_line(raw, i + 1).map_err(|m| err(Some(i + 1), m))?;
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| err(Some(i + 1), format!("not JSON: {e}")))?;
                let text = match value.get(field) {
                    Some(serde_json::Value::String(s)) => s,
                    Some(_) => {
                        return Err(err(Some(i + 1), format!("field `{field}` is not a string")));
                    }
                    None => return Err(err(Some(i + 1), format!("no field `{field}`"))),
                };
                if !text.trim().is_empty() {
                    corpus.texts.push(text.clone());
                    corpus.ids.push(i);
                }
            }
        }
        f @ (CorpusFormat::Csv | CorpusFormat::Tsv) => {
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(if f == CorpusFormat::Tsv { b'\t' } else { b',' })
                .quoting(f == CorpusFormat::Csv)
                .flexible(true)
                .from_reader(bytes);
            let header = reader
                .byte_headers()
                .map_err(|e| err(Some(1), format!("cannot read the header: {e}")))?
                .clone();
            let names: Vec<String> = header
                .iter()
                .map(|h| String::from_utf8_lossy(h).trim().to_string())
                .collect();
            let index = match column {
                Some(c) => names.iter().position(|n| n == c).ok_or_else(|| {
                    err(
                        Some(1),
                        format!("no column `{c}` (the header has: {})", names.join(", ")),
                    )
                })?,
                None => match names.iter().position(|n| n == "text") {
                    Some(i) => i,
                    None if names.len() == 1 => 0,
                    None => {
                        return Err(err(
                            Some(1),
                            format!(
                                "which column? give --column (the header has: {})",
                                names.join(", ")
                            ),
                        ));
                    }
                },
            };
            corpus.column = Some(names[index].clone());
            let mut record = csv::ByteRecord::new();
            let mut row = 0usize;
            loop {
                let line = reader.position().line() as usize;
                match reader.read_byte_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => return Err(err(Some(line.max(1)), format!("{e}"))),
                }
                let line = record.position().map_or(line, |p| p.line() as usize);
                let Some(field) = record.get(index) else {
                    return Err(err(
                        Some(line),
                        format!(
                            "no field `{}` (the row has {} fields)",
                            names[index],
                            record.len()
                        ),
                    ));
                };
                let text = std::str::from_utf8(field).map_err(|e| {
                    err(
                        Some(line),
                        format!(
                            "field `{}` is not valid UTF-8 (at byte {})",
                            names[index],
                            e.valid_up_to() + 1
                        ),
                    )
                })?;
                if !text.trim().is_empty() {
                    corpus.texts.push(text.to_string());
                    corpus.ids.push(row);
                }
                row += 1;
            }
        }
    }
    if corpus.texts.is_empty() {
        return Err(err(None, "no texts (an empty corpus)".into()));
    }
    corpus.texts.shrink_to_fit();
    corpus.ids.shrink_to_fit();
    Ok(corpus)
}

/// Writes a corpus's vectors by the path's extension: `.npy` (NumPy, float32, N x dim),
/// `.safetensors` (one tensor `embeddings`, the model named in the metadata), anything else a
/// folder for TensorFlow's Embedding Projector (`vectors.tsv`, `metadata.tsv` with the
/// `corpus_id` and text of each row). Every file is written whole or not at all.
pub fn export(
    path: &Path,
    corpus: &Corpus,
    vectors: &crate::analysis::embeddings::Embeddings,
    model: Option<&str>,
) -> anyhow::Result<()> {
    use crate::analysis::export;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npy") => export::write_npy(path, vectors)?,
        Some("safetensors") => {
            let rows = corpus.len().to_string();
            let mut meta = vec![("rows", rows.as_str())];
            if let Some(m) = model {
                meta.push(("model", m));
            }
            export::write_safetensors(path, vectors, "embeddings", &meta)?
        }
        _ => {
            std::fs::create_dir_all(path).map_err(|e| {
                anyhow::anyhow!("{}: cannot create the folder: {e}", path.display())
            })?;
            let metadata: Vec<Vec<String>> = corpus
                .ids
                .iter()
                .zip(&corpus.texts)
                .map(|(id, t)| vec![id.to_string(), t.clone()])
                .collect();
            export::write_projector_tsv(path, vectors, &metadata, &["corpus_id", "text"])?;
        }
    }
    Ok(())
}

/// One line's text without its `\r`; not UTF-8 is an error message.
fn utf8_line(raw: &[u8], _line: usize) -> Result<&str, String> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    std::str::from_utf8(raw).map_err(|e| {
        format!(
            "not valid UTF-8 (at byte {} of the line)",
            e.valid_up_to() + 1
        )
    })
}

/// Two `corpus_id`s read from `line` (1-based) of a pairs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPair {
    pub line: usize,
    pub a: usize,
    pub b: usize,
}

/// Pairs of `corpus_id`s, one pair per line: two whole numbers separated by a comma, a tab or
/// spaces (a `.csv` / `.tsv` file, or plain text). A first line that is not two numbers is a
/// header and skipped; blank lines are skipped. Known duplicates for a paraphrase-mining
/// evaluation, in the ids `search` and `mine` print.
pub fn read_id_pairs(path: &Path) -> Result<Vec<IdPair>, CorpusError> {
    let err = |line: Option<usize>, message: String| CorpusError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(None, format!("cannot read: {e}")))?;
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
    let mut pairs = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = utf8_line(raw, i + 1).map_err(|m| err(Some(i + 1), m))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        let numbers: Vec<Option<usize>> = fields.iter().map(|f| f.parse().ok()).collect();
        match numbers.as_slice() {
            [Some(a), Some(b)] => pairs.push(IdPair {
                line: i + 1,
                a: *a,
                b: *b,
            }),
            _ if i == 0 => {} // a header
            _ => {
                return Err(err(
                    Some(i + 1),
                    format!(
                        "expected two corpus ids (0-based line or row numbers), found `{}`",
                        line.trim()
                    ),
                ));
            }
        }
    }
    if pairs.is_empty() {
        return Err(err(None, "holds no pairs of corpus ids".into()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_as(name: &str, bytes: &[u8], column: Option<&str>) -> Result<Corpus, CorpusError> {
        parse(Path::new(name), bytes, CorpusFormat::Auto, column)
    }

    #[test]
    fn plain_lines_keep_their_index() {
        let c = parse_as("c.txt", "\u{feff}one\r\n\n  \nfour\n".as_bytes(), None).unwrap();
        assert_eq!(c.texts, ["one", "four"]);
        assert_eq!(c.ids, [0, 3]);
    }

    #[test]
    fn csv_tsv_and_jsonl_columns() {
        let c = parse_as("c.csv", b"id,text\n1,\"a, b\"\n2,\n3,c\n", None).unwrap();
        assert_eq!(c.texts, ["a, b", "c"]);
        assert_eq!(c.ids, [0, 2]);
        assert_eq!(c.column.as_deref(), Some("text"));
        let c = parse_as("c.tsv", b"s1\ts2\nx \"q\ty\n", Some("s2")).unwrap();
        assert_eq!(c.texts, ["y"]);
        let c = parse_as("c.tsv", b"s1\ts2\nx \"q\ty\n", Some("s1")).unwrap();
        assert_eq!(c.texts, ["x \"q"]);
        let c = parse_as(
            "c.jsonl",
            b"{\"_id\":\"a\",\"text\":\"t\"}\n\n{\"text\":\"u\"}\n",
            None,
        )
        .unwrap();
        assert_eq!(
            (c.texts.as_slice(), c.ids.as_slice()),
            (&["t".to_string(), "u".into()][..], &[0, 2][..])
        );
        let c = parse_as("c.csv", b"only\nx\n", None).unwrap();
        assert_eq!(c.texts, ["x"]);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = parse_as("c.txt", b"ok\n\xff\xfe\n", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.txt:2: not valid UTF-8 (at byte 1 of the line)"
        );
        let e = parse_as("c.txt", b"\n \n", None).unwrap_err();
        assert_eq!(e.to_string(), "c.txt: no texts (an empty corpus)");
        let e = parse_as("c.txt", b"", None).unwrap_err();
        assert_eq!(e.to_string(), "c.txt: no texts (an empty corpus)");
        let e = parse_as("c.csv", b"a,b\n1,2\n", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.csv:1: which column? give --column (the header has: a, b)"
        );
        let e = parse_as("c.csv", b"a,b\n1,2\n", Some("c")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.csv:1: no column `c` (the header has: a, b)"
        );
        let e = parse_as("c.csv", b"a,b\n1,2\n3\n", Some("b")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.csv:3: no field `b` (the row has 1 fields)"
        );
        let e = parse_as("c.csv", b"a,b\n1,2\n3,\xff\n", Some("b")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.csv:3: field `b` is not valid UTF-8 (at byte 1)"
        );
        let e = parse_as("c.jsonl", b"{\"text\":\"a\"}\n{\"title\":\"b\"}\n", None).unwrap_err();
        assert_eq!(e.to_string(), "c.jsonl:2: no field `text`");
        let e = parse_as("c.jsonl", b"{\"text\":1}\n", None).unwrap_err();
        assert_eq!(e.to_string(), "c.jsonl:1: field `text` is not a string");
        let e = parse_as("c.jsonl", b"nope\n", None).unwrap_err();
        assert!(e.to_string().starts_with("c.jsonl:1: not JSON"), "{e}");
        let e = parse_as("c.txt", b"a\n", Some("text")).unwrap_err();
        assert!(e.to_string().contains("no columns"), "{e}");
    }

    #[test]
    fn id_pairs_with_or_without_a_header_and_errors_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dups.tsv");
        std::fs::write(&p, "id1\tid2\n0\t3\n\n5\t2\r\n").unwrap();
        let ab = |p: Vec<IdPair>| p.iter().map(|p| (p.line, p.a, p.b)).collect::<Vec<_>>();
        assert_eq!(ab(read_id_pairs(&p).unwrap()), [(2, 0, 3), (4, 5, 2)]);
        std::fs::write(&p, "1,2\n3 4\n").unwrap();
        assert_eq!(ab(read_id_pairs(&p).unwrap()), [(1, 1, 2), (2, 3, 4)]);
        std::fs::write(&p, "1,2\n3,x\n").unwrap();
        let e = read_id_pairs(&p).unwrap_err().to_string();
        assert!(e.contains("dups.tsv:2: expected two corpus ids"), "{e}");
        std::fs::write(&p, "a,b\n").unwrap();
        let e = read_id_pairs(&p).unwrap_err().to_string();
        assert!(e.ends_with("dups.tsv: holds no pairs of corpus ids"), "{e}");
    }
}
