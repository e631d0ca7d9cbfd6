//! Sentence files, for the command line and the explorer alike:
//!
//! - `encode`'s input: plain text (one sentence per line, an empty line is the empty sentence)
//!   or JSON Lines with a `text` field ([`read_sentences`]);
//! - the explorer's sentence lists: one sentence per line, blank lines skipped ([`read_list`]),
//!   saved atomically ([`write_list`]).
//!
//! Every error names the file and, where there is one, the line.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

/// How the input file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// `jsonl` for a `.jsonl` file, `text` otherwise.
    Auto,
    /// One sentence per line; an empty line is the empty sentence.
    Text,
    /// One JSON object per line with a string field `text`; blank lines are skipped.
    Jsonl,
}

/// A bad input, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub source: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for InputError {}

/// Reads `path` (`-` for stdin).
pub fn read_sentences(path: &str, format: InputFormat) -> Result<Vec<String>, InputError> {
    let name = if path == "-" { "<stdin>" } else { path };
    let mut bytes = Vec::new();
    let read = if path == "-" {
        std::io::stdin().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| InputError {
        source: name.to_string(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    let format = match format {
        InputFormat::Auto if Path::new(path).extension().is_some_and(|e| e == "jsonl") => {
            InputFormat::Jsonl
        }
        InputFormat::Auto => InputFormat::Text,
        f => f,
    };
    parse_sentences(name, &bytes, format)
}

/// Parses the bytes of an input file; `name` is used in errors.
pub fn parse_sentences(
    name: &str,
    bytes: &[u8],
    format: InputFormat,
) -> Result<Vec<String>, InputError> {
    let err = |line: Option<usize>, message: String| InputError {
        source: name.to_string(),
        line,
        message,
    };
    if bytes.is_empty() {
        return Err(err(None, "the input is empty: nothing to encode".into()));
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut out = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|e| {
            err(
                Some(line_no),
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
            )
        })?;
        let line = if i == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        match format {
            InputFormat::Jsonl => {
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| err(Some(line_no), format!("invalid JSON: {e}")))?;
                let text = match value.get("text") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(_) => {
                        return Err(err(Some(line_no), "field `text` must be a string".into()));
                    }
                    None => return Err(err(Some(line_no), "missing field `text`".into())),
                };
                out.push(text);
            }
            _ => out.push(line.to_string()),
        }
    }
    if out.is_empty() {
        return Err(err(
            None,
            "the input holds no records: nothing to encode".into(),
        ));
    }
    Ok(out)
}

/// Reads a sentence list: one sentence per line, blank lines skipped.
pub fn read_list(path: &Path) -> Result<Vec<String>, InputError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| InputError {
        source: name.clone(),
        line: None,
        message: format!("cannot open: {e}"),
    })?;
    parse_list(&name, &bytes)
}

/// Parses a sentence list (see [`read_list`]); `name` is used in errors. A UTF-8 byte-order mark,
/// `\r\n` line ends and trailing blanks are dropped.
pub fn parse_list(name: &str, bytes: &[u8]) -> Result<Vec<String>, InputError> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(raw).map_err(|e| InputError {
            source: name.to_string(),
            line: Some(i + 1),
            message: format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
        })?;
        let line = line.strip_prefix('\u{feff}').unwrap_or(line).trim_end();
        if !line.trim().is_empty() {
            out.push(line.to_string());
        }
    }
    if out.is_empty() {
        return Err(InputError {
            source: name.to_string(),
            line: None,
            message: "holds no sentences".into(),
        });
    }
    Ok(out)
}

/// Writes one sentence per line (line breaks inside a sentence become spaces) through a
/// temporary file renamed into place, so an interrupted save never leaves half a file.
pub fn write_list(path: &Path, sentences: &[String]) -> Result<(), InputError> {
    let fail = |e: std::io::Error| InputError {
        source: path.display().to_string(),
        line: None,
        message: format!("cannot write: {e}"),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    for s in sentences {
        writeln!(tmp, "{}", s.replace(['\n', '\r'], " ")).map_err(fail)?;
    }
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> Result<Vec<String>, InputError> {
        parse_sentences("in.txt", bytes, InputFormat::Text)
    }

    #[test]
    fn lines_crlf_bom_and_empty_lines() {
        assert_eq!(text(b"a\nb\n").unwrap(), vec!["a", "b"]);
        assert_eq!(text(b"a\r\nb").unwrap(), vec!["a", "b"]);
        assert_eq!(text("\u{feff}a\n".as_bytes()).unwrap(), vec!["a"]);
        // An empty line is the empty sentence: output lines stay aligned with input lines.
        assert_eq!(text(b"a\n\nb\n").unwrap(), vec!["a", "", "b"]);
        assert_eq!(text(b"\n").unwrap(), vec![""]);
    }

    #[test]
    fn empty_input_is_an_error() {
        assert_eq!(
            text(b"").unwrap_err().to_string(),
            "in.txt: the input is empty: nothing to encode"
        );
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let e = text(b"fine\nbad \xff here\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "in.txt:2: invalid UTF-8 at byte 5 of the line"
        );
    }

    #[test]
    fn jsonl_records_and_errors() {
        let j = |b: &[u8]| parse_sentences("in.jsonl", b, InputFormat::Jsonl);
        assert_eq!(
            j(b"{\"text\": \"a\"}\n\n{\"text\": \"b\", \"id\": 3}\n").unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            j(b"{\"text\": \"a\"}\n{\"txt\": 1}\n")
                .unwrap_err()
                .to_string(),
            "in.jsonl:2: missing field `text`"
        );
        assert_eq!(
            j(b"{\"text\": 5}").unwrap_err().to_string(),
            "in.jsonl:1: field `text` must be a string"
        );
        assert!(
            j(b"{oops")
                .unwrap_err()
                .to_string()
                .starts_with("in.jsonl:1: invalid JSON")
        );
        assert!(j(b"\n\n").unwrap_err().to_string().contains("no records"));
    }

    #[test]
    fn lists_skip_blank_lines_and_round_trip() {
        assert_eq!(
            parse_list("l.txt", "\u{feff}a  \r\n\n  \nb\n".as_bytes()).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            parse_list("l.txt", b"\n \n").unwrap_err().to_string(),
            "l.txt: holds no sentences"
        );
        assert_eq!(
            parse_list("l.txt", b"ok\n\xc3\n").unwrap_err().to_string(),
            "l.txt:2: invalid UTF-8 at byte 1 of the line"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.txt");
        let s = vec!["机器学习".to_string(), "two\nlines".to_string()];
        write_list(&p, &s).unwrap();
        assert_eq!(read_list(&p).unwrap(), vec!["机器学习", "two lines"]);
        let e = write_list(&dir.path().join("no/such/dir/s.txt"), &s).unwrap_err();
        assert!(e.to_string().contains("cannot write"), "{e}");
    }
}
