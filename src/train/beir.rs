//! Retrieval evaluation data in the BEIR layout: `corpus.jsonl` (`_id`, `title`, `text`),
//! `queries.jsonl` (`_id`, `text`) and `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`, with
//! a header). Several relevant documents per query; a score of 0 means "not relevant". Every bad
//! line is an error naming the file and the line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A retrieval set, ready for [`super::eval::information_retrieval`].
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieval {
    pub dir: PathBuf,
    /// Document ids and texts (`title text`, as BEIR's sentence-transformers wrapper joins
    /// them), sorted by id: the Python evaluator breaks score ties by id.
    pub doc_ids: Vec<String>,
    pub docs: Vec<String>,
    /// The queries that have at least one relevant document, in file order.
    pub query_ids: Vec<String>,
    pub queries: Vec<String>,
    /// For each query, the indices (into `docs`) of its relevant documents.
    pub relevant: Vec<Vec<usize>>,
}

impl Retrieval {
    /// Query-document pairs marked relevant.
    pub fn judgements(&self) -> usize {
        self.relevant.iter().map(Vec::len).sum()
    }
}

/// True when `dir` looks like a BEIR folder (it has `corpus.jsonl`).
pub fn is_beir(dir: &Path) -> bool {
    dir.is_dir() && dir.join("corpus.jsonl").is_file()
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

type Object = serde_json::Map<String, serde_json::Value>;

/// The lines of a JSON Lines file as objects, with their 1-based line numbers; blank lines are
/// skipped.
fn json_lines(path: &Path) -> Result<Vec<(usize, Object)>, String> {
    let bytes = read(path)?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let line = std::str::from_utf8(line).map_err(|_| format!("{at}: not valid UTF-8"))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{at}: not JSON ({e})"))?;
        match value {
            serde_json::Value::Object(map) => out.push((i + 1, map)),
            _ => return Err(format!("{at}: expected a JSON object")),
        }
    }
    Ok(out)
}

/// A string field: required (`_id`, `text`) or optional (`title`).
fn field(map: &Object, name: &str, at: &str, required: bool) -> Result<Option<String>, String> {
    match map.get(name) {
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        // Ids are sometimes numbers.
        Some(serde_json::Value::Number(n)) if name == "_id" => Ok(Some(n.to_string())),
        Some(serde_json::Value::Null) | None if !required => Ok(None),
        None => Err(format!("{at}: no `{name}`")),
        Some(other) => Err(format!("{at}: `{name}` must be a string, not {other}")),
    }
}

/// Reads `dir` with the qrels of `split` (`test`, `dev`, ...).
pub fn load(dir: &Path, split: &str) -> Result<Retrieval, String> {
    let corpus_path = dir.join("corpus.jsonl");
    let queries_path = dir.join("queries.jsonl");
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));

    let mut docs: Vec<(String, String)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, map) in json_lines(&corpus_path)? {
        let at = format!("{}:{line}", corpus_path.display());
        let id = field(&map, "_id", &at, true)?.expect("required");
        let text = field(&map, "text", &at, true)?.expect("required");
        let title = field(&map, "title", &at, false)?.unwrap_or_default();
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(format!("{at}: `_id` {id:?} again (first on line {first})"));
        }
        let joined = if title.trim().is_empty() {
            text.trim().to_string()
        } else {
            format!("{title} {text}").trim().to_string()
        };
        docs.push((id, joined));
    }
    if docs.is_empty() {
        return Err(format!("{}: no documents", corpus_path.display()));
    }
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    let doc_index: HashMap<&str, usize> = docs
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();

    let mut queries: Vec<(String, String)> = Vec::new();
    let mut query_index: HashMap<String, usize> = HashMap::new();
    for (line, map) in json_lines(&queries_path)? {
        let at = format!("{}:{line}", queries_path.display());
        let id = field(&map, "_id", &at, true)?.expect("required");
        let text = field(&map, "text", &at, true)?.expect("required");
        if query_index.insert(id.clone(), queries.len()).is_some() {
            return Err(format!("{at}: `_id` {id:?} again"));
        }
        queries.push((id, text));
    }
    if queries.is_empty() {
        return Err(format!("{}: no queries", queries_path.display()));
    }

    let bytes = read(&qrels_path)?;
    let mut relevant: Vec<Vec<usize>> = vec![Vec::new(); queries.len()];
    let mut lines = bytes.split(|&b| b == b'\n').enumerate();
    let header = lines
        .next()
        .map(|(_, h)| String::from_utf8_lossy(h).trim().to_string())
        .unwrap_or_default();
    let cols: Vec<&str> = header.split('\t').map(str::trim).collect();
    let col = |name: &str| {
        cols.iter().position(|c| *c == name).ok_or_else(|| {
            format!(
                "{}:1: the header must name `query-id`, `corpus-id` and `score` (tab-separated), found {header:?}",
                qrels_path.display()
            )
        })
    };
    let (qc, dc, sc) = (col("query-id")?, col("corpus-id")?, col("score")?);
    for (i, line) in lines {
        let at = format!("{}:{}", qrels_path.display(), i + 1);
        let line = std::str::from_utf8(line).map_err(|_| format!("{at}: not valid UTF-8"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split('\t').map(str::trim).collect();
        let get = |c: usize, name: &str| {
            parts.get(c).copied().ok_or_else(|| {
                format!(
                    "{at}: no `{name}` (expected {} tab-separated fields)",
                    cols.len()
                )
            })
        };
        let (q, d, s) = (
            get(qc, "query-id")?,
            get(dc, "corpus-id")?,
            get(sc, "score")?,
        );
        let score: f64 = s
            .parse()
            .map_err(|_| format!("{at}: score: `{s}` is not a number"))?;
        let qi = *query_index
            .get(q)
            .ok_or_else(|| format!("{at}: query-id `{q}` is not in {}", queries_path.display()))?;
        let di = *doc_index
            .get(d)
            .ok_or_else(|| format!("{at}: corpus-id `{d}` is not in {}", corpus_path.display()))?;
        if score > 0.0 && !relevant[qi].contains(&di) {
            relevant[qi].push(di);
        }
    }
    // Only the queries with a relevant document are evaluated, as the Python evaluator does.
    let mut out = Retrieval {
        dir: dir.to_path_buf(),
        doc_ids: Vec::with_capacity(docs.len()),
        docs: Vec::with_capacity(docs.len()),
        query_ids: Vec::new(),
        queries: Vec::new(),
        relevant: Vec::new(),
    };
    for ((id, text), rel) in queries.into_iter().zip(relevant) {
        if !rel.is_empty() {
            out.query_ids.push(id);
            out.queries.push(text);
            out.relevant.push(rel);
        }
    }
    if out.queries.is_empty() {
        return Err(format!(
            "{}: no query has a relevant document (a score above 0)",
            qrels_path.display()
        ));
    }
    for (id, text) in docs {
        out.doc_ids.push(id);
        out.docs.push(text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, corpus: &str, queries: &str, qrels: &str) {
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
        std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
        std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
    }

    const CORPUS: &str = "{\"_id\": \"d2\", \"title\": \"Guitars\", \"text\": \"A man plays.\"}\n\
                          {\"_id\": \"d1\", \"text\": \"A cat sleeps.\"}\n\n";
    const QUERIES: &str =
        "{\"_id\": \"q1\", \"text\": \"music\"}\n{\"_id\": \"q2\", \"text\": \"pets\"}\n";

    #[test]
    fn reads_a_folder_sorting_documents_by_id() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            CORPUS,
            QUERIES,
            "query-id\tcorpus-id\tscore\nq1\td2\t1\nq1\td1\t0\nq2\td1\t2\n",
        );
        let r = load(t.path(), "test").unwrap();
        assert_eq!(r.doc_ids, ["d1", "d2"]);
        assert_eq!(r.docs, ["A cat sleeps.", "Guitars A man plays."]);
        assert_eq!(r.query_ids, ["q1", "q2"]);
        // Score 0 is not relevant.
        assert_eq!(r.relevant, vec![vec![1], vec![0]]);
        assert_eq!(r.judgements(), 2);
    }

    #[test]
    fn bad_input_names_the_file_and_line() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        let qrels = "query-id\tcorpus-id\tscore\nq1\td2\t1\n";
        let cases: [(&str, &str, &str, &str); 7] = [
            ("", QUERIES, qrels, "corpus.jsonl: no documents"),
            (
                CORPUS,
                "{\"text\": \"no id\"}\n",
                qrels,
                "queries.jsonl:1: no `_id`",
            ),
            (
                CORPUS,
                QUERIES,
                "query-id\tcorpus-id\tscore\nq1\td9\t1\n",
                "test.tsv:2: corpus-id `d9` is not in",
            ),
            (
                CORPUS,
                QUERIES,
                "query-id\tcorpus-id\tscore\nq7\td1\t1\n",
                "test.tsv:2: query-id `q7` is not in",
            ),
            (
                CORPUS,
                QUERIES,
                "q1\td2\t1\n",
                "test.tsv:1: the header must name",
            ),
            (
                CORPUS,
                QUERIES,
                "query-id\tcorpus-id\tscore\nq1\td2\thigh\n",
                "test.tsv:2: score: `high` is not a number",
            ),
            (
                "{\"_id\": \"d1\", \"text\": \"x\"}\nnot json\n",
                QUERIES,
                qrels,
                "corpus.jsonl:2: not JSON",
            ),
        ];
        for (corpus, queries, qrels, want) in cases {
            write(p, corpus, queries, qrels);
            let e = load(p, "test").unwrap_err();
            assert!(e.contains(want), "{e} should say {want}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // A corpus line that is not UTF-8.
        std::fs::write(
            p.join("corpus.jsonl"),
            b"{\"_id\": \"d1\", \"text\": \"\xff\"}\n",
        )
        .unwrap();
        let e = load(p, "test").unwrap_err();
        assert!(e.contains("corpus.jsonl:1: not valid UTF-8"), "{e}");
    }
}
