//! Embeddings written for other tools: the TensorFlow Embedding Projector's two TSV files, a
//! NumPy `.npy` array and a safetensors file. Every file is written to a temporary file in its
//! own folder, synced, then renamed over the target, so a reader (or a crash) never sees half a
//! file; errors name the path.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::embeddings::Embeddings;

/// Why an export failed, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl ExportError {
    fn invalid(path: &Path, message: impl Into<String>) -> Self {
        ExportError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// The file that could not be written.
    pub fn path(&self) -> &Path {
        match self {
            ExportError::Io { path, .. } | ExportError::Invalid { path, .. } => path,
        }
    }
}

/// Writes `path` through a temporary file in the same folder (created if missing), synced and
/// renamed into place; an error leaves the old file, if any, as it was.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> io::Result<()>,
) -> Result<(), ExportError> {
    let fail = |source: io::Error| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".sbert-tui-export")
        .tempfile_in(dir)
        .map_err(fail)?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        fill(&mut out).map_err(fail)?;
        out.flush().map_err(fail)?;
    }
    tmp.as_file().sync_all().map_err(fail)?;
    // A temporary file is private (0600); the file written is an ordinary one.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(fail)?;
    }
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// The files [`write_projector_tsv`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorFiles {
    pub vectors: PathBuf,
    /// `None` when no metadata was given.
    pub metadata: Option<PathBuf>,
}

/// The text of one metadata field: tabs and line breaks become spaces (they would split the
/// field or the row).
fn tsv_field(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// Written for a row whose fields are all blank: the Projector skips blank lines, which would
/// shift every later label onto the wrong point.
pub const BLANK_ROW_LABEL: &str = "(empty)";

/// Writes the two files of the TensorFlow Embedding Projector (<https://projector.tensorflow.org>,
/// "Load" in its data panel; TensorBoard's projector plugin reads the same):
///
/// - `vectors.tsv`: one row per vector, its numbers separated by tabs, no header.
/// - `metadata.tsv` (only when `metadata` is not empty): one row per vector, in the same order,
///   fields separated by tabs. With more than one column the first line holds the column
///   names (`header`); with a single column there is no header line, each line being the
///   label itself.
///
/// The format is the one the TensorFlow guide "Visualizing data using the embedding projector
/// in TensorBoard" describes (tensorflow/docs, `site/en/guide/embedding.md`, section on
/// metadata: "If the TSV metadata file has only a single column, then we don't expect a
/// header row") and that the projector's parser implements (tensorflow/tensorboard,
/// `tensorboard/plugins/projector/vz_projector/data-provider.ts`: `parseMetadata` takes the
/// first line as a header exactly when it holds a tab, and skips blank lines; `parseTensors`
/// splits rows on tabs and refuses vectors of one dimension). Hence: tabs and line breaks in
/// texts become spaces, a row whose fields are all blank is written as [`BLANK_ROW_LABEL`] so
/// that no line is skipped, and NaN or infinite numbers are refused (the parser would take
/// them for a label).
///
/// `dir_or_prefix`: an existing folder, or a path ending in `/`, gets `vectors.tsv` and
/// `metadata.tsv` inside it (created if needed); anything else is a prefix glued to the file
/// names (`out/stsb-` gives `out/stsb-vectors.tsv`). Each file is written atomically.
pub fn write_projector_tsv(
    dir_or_prefix: &Path,
    emb: &Embeddings,
    metadata: &[Vec<String>],
    header: &[&str],
) -> Result<ProjectorFiles, ExportError> {
    let text = dir_or_prefix.as_os_str().to_string_lossy();
    let is_dir = dir_or_prefix.is_dir() || text.ends_with('/') || text.ends_with('\\');
    let file = |name: &str| {
        if is_dir {
            dir_or_prefix.join(name)
        } else {
            PathBuf::from(format!("{text}{name}"))
        }
    };
    let vectors = file("vectors.tsv");
    let meta_path = (!metadata.is_empty()).then(|| file("metadata.tsv"));

    if !emb.is_empty() && emb.dim() < 2 {
        return Err(ExportError::invalid(
            &vectors,
            "the Embedding Projector needs vectors of at least 2 dimensions",
        ));
    }
    if let Some(row) = emb.rows().position(|r| r.iter().any(|x| !x.is_finite())) {
        return Err(ExportError::invalid(
            &vectors,
            format!("vector {row} holds NaN or infinity"),
        ));
    }
    if let Some(path) = &meta_path {
        if metadata.len() != emb.len() {
            return Err(ExportError::invalid(
                path,
                format!("{} metadata rows for {} vectors", metadata.len(), emb.len()),
            ));
        }
        if header.is_empty() {
            return Err(ExportError::invalid(path, "no column names"));
        }
        if let Some(i) = metadata.iter().position(|r| r.len() != header.len()) {
            return Err(ExportError::invalid(
                path,
                format!(
                    "metadata row {i} has {} fields for {} columns",
                    metadata[i].len(),
                    header.len()
                ),
            ));
        }
    }

    write_atomically(&vectors, |out| {
        let mut line = String::new();
        for row in emb.rows() {
            line.clear();
            for (j, x) in row.iter().enumerate() {
                if j > 0 {
                    line.push('\t');
                }
                // Display gives the shortest text that reads back as the same f32.
                use std::fmt::Write as _;
                let _ = write!(line, "{x}");
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        Ok(())
    })?;

    if let Some(path) = &meta_path {
        write_atomically(path, |out| {
            if header.len() > 1 {
                let names: Vec<String> = header.iter().map(|h| tsv_field(h)).collect();
                writeln!(out, "{}", names.join("\t"))?;
            }
            for row in metadata {
                let mut fields: Vec<String> = row.iter().map(|f| tsv_field(f)).collect();
                if fields.iter().all(|f| f.trim().is_empty()) {
                    fields[0] = BLANK_ROW_LABEL.to_string();
                }
                writeln!(out, "{}", fields.join("\t"))?;
            }
            Ok(())
        })?;
    }
    Ok(ProjectorFiles {
        vectors,
        metadata: meta_path,
    })
}

/// The header of a NumPy `.npy` file, version 1.0, for a C-order little-endian `f32` array of
/// `shape`: magic `\x93NUMPY`, version bytes 1 and 0, the header length as a little-endian u16,
/// then a Python dict literal padded with spaces and ended by `\n` so that the data starts at a
/// multiple of 64 bytes (the format of `numpy.lib.format`, NEP 1 "A simple file format for
/// NumPy arrays").
fn npy_header(shape: (usize, usize)) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape.0, shape.1
    );
    // magic (6) + version (2) + length (2) + dict + padding + '\n'
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.next_multiple_of(64);
    let header_len = total - 10;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Writes `emb` as a NumPy `.npy` file (version 1.0): `float32` little-endian (`<f4`), shape
/// `(N, dim)`, C order, readable with `numpy.load`. Atomic.
pub fn write_npy(path: &Path, emb: &Embeddings) -> Result<(), ExportError> {
    write_atomically(path, |out| {
        out.write_all(&npy_header((emb.len(), emb.dim())))?;
        write_f32_le(out, emb.as_flat())
    })
}

/// The numbers as little-endian bytes, in pieces.
fn write_f32_le(out: &mut impl Write, values: &[f32]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(4 * 16384);
    for chunk in values.chunks(16384) {
        bytes.clear();
        for x in chunk {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        out.write_all(&bytes)?;
    }
    Ok(())
}

/// The tensor name [`write_safetensors`] is usually given.
pub const DEFAULT_TENSOR_NAME: &str = "embeddings";

/// Writes `emb` as a safetensors file holding one `F32` tensor `name` (usually
/// [`DEFAULT_TENSOR_NAME`]) of shape `[N, dim]`; `metadata` (for example the model's name),
/// when not empty, goes into the header's `__metadata__`. Atomic.
pub fn write_safetensors(
    path: &Path,
    emb: &Embeddings,
    name: &str,
    metadata: &[(&str, &str)],
) -> Result<(), ExportError> {
    if name.is_empty() || name == "__metadata__" {
        return Err(ExportError::invalid(
            path,
            format!("`{name}` cannot name a tensor"),
        ));
    }
    let mut bytes = Vec::with_capacity(4 * emb.as_flat().len());
    write_f32_le(&mut bytes, emb.as_flat()).expect("writing to memory");
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![emb.len(), emb.dim()],
        &bytes,
    )
    .map_err(|e| ExportError::invalid(path, e.to_string()))?;
    let info: Option<HashMap<String, String>> = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    let file = safetensors::serialize([(name, view)], info)
        .map_err(|e| ExportError::invalid(path, e.to_string()))?;
    drop(bytes);
    write_atomically(path, |out| out.write_all(&file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Embeddings {
        Embeddings::from_rows(&[
            vec![0.1, -2.5, 3.0e-7],
            vec![1.0, 0.0, -0.0],
            vec![f32::MAX, f32::MIN_POSITIVE, 123456.79],
        ])
    }

    /// Parses a `.npy` file the way `numpy.lib.format` does (for `<f4`, C order).
    fn read_npy(bytes: &[u8]) -> (Vec<usize>, Vec<f32>) {
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0, "data not aligned to 64 bytes");
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.ends_with('\n'));
        assert!(header.contains("'descr': '<f4'"), "{header}");
        assert!(header.contains("'fortran_order': False"), "{header}");
        let shape = header.split("'shape': (").nth(1).unwrap();
        let shape = &shape[..shape.find(')').unwrap()];
        let shape: Vec<usize> = shape
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let data: Vec<f32> = bytes[10 + len..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(data.len(), shape.iter().product::<usize>());
        (shape, data)
    }

    #[test]
    fn npy_round_trip_and_header_padding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/emb.npy");
        let e = sample();
        write_npy(&path, &e).unwrap();
        let (shape, data) = read_npy(&std::fs::read(&path).unwrap());
        assert_eq!(shape, [3, 3]);
        assert_eq!(data, e.as_flat());
        // Header lengths around the 64-byte boundary, and an empty array.
        for rows in [0, 1, 9, 99_999, 1 << 40] {
            let h = npy_header((rows, 384));
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
        }
        write_npy(&path, &Embeddings::new(5)).unwrap();
        let (shape, data) = read_npy(&std::fs::read(&path).unwrap());
        assert_eq!((shape, data.len()), (vec![0, 5], 0));
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["emb.npy"]);
    }

    #[test]
    fn safetensors_round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emb.safetensors");
        let e = sample();
        let meta = [("model", "sentence-transformers/all-MiniLM-L6-v2")];
        write_safetensors(&path, &e, DEFAULT_TENSOR_NAME, &meta).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("embeddings").unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        assert_eq!(t.shape(), [3, 3]);
        let data: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(data, e.as_flat());
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let info = header.metadata().as_ref().unwrap();
        assert_eq!(info["model"], "sentence-transformers/all-MiniLM-L6-v2");

        write_safetensors(&path, &e, "vectors", &[]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert!(header.metadata().is_none());
        assert!(
            safetensors::SafeTensors::deserialize(&bytes)
                .unwrap()
                .tensor("vectors")
                .is_ok()
        );
        let err = write_safetensors(&path, &e, "", &[]).unwrap_err();
        assert_eq!(err.path(), path);
    }

    #[test]
    fn projector_files_parse_back() {
        let dir = tempfile::tempdir().unwrap();
        let e = sample();
        let meta = vec![
            vec!["a\tb".to_string(), "x".to_string()],
            vec!["line\nbreak\r".to_string(), "".to_string()],
            vec!["".to_string(), " ".to_string()],
        ];
        let files = write_projector_tsv(dir.path(), &e, &meta, &["text", "lab\tel"]).unwrap();
        assert_eq!(files.vectors, dir.path().join("vectors.tsv"));
        let vectors = std::fs::read_to_string(&files.vectors).unwrap();
        let rows: Vec<Vec<f32>> = vectors
            .lines()
            .map(|l| l.split('\t').map(|x| x.parse().unwrap()).collect())
            .collect();
        assert_eq!(rows, e.to_rows());

        let text = std::fs::read_to_string(files.metadata.unwrap()).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(
            lines,
            [
                vec!["text", "lab el"],
                vec!["a b", "x"],
                vec!["line break ", ""],
                vec![BLANK_ROW_LABEL, " "],
            ]
        );

        // One column: no header line, a prefix instead of a folder.
        let prefix = dir.path().join("run1-");
        let one: Vec<Vec<String>> = ["first", "", "third\tpart"]
            .iter()
            .map(|s| vec![s.to_string()])
            .collect();
        let files = write_projector_tsv(&prefix, &e, &one, &["sentence"]).unwrap();
        assert_eq!(files.vectors, dir.path().join("run1-vectors.tsv"));
        let text = std::fs::read_to_string(files.metadata.unwrap()).unwrap();
        assert_eq!(text, format!("first\n{BLANK_ROW_LABEL}\nthird part\n"));

        // No metadata: only the vectors.
        let files = write_projector_tsv(&dir.path().join("v-"), &e, &[], &[]).unwrap();
        assert!(files.metadata.is_none());
    }

    #[test]
    fn projector_refusals_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = sample();
        let err = write_projector_tsv(dir.path(), &e, &[vec!["a".into()]], &["t"]).unwrap_err();
        assert_eq!(err.path(), dir.path().join("metadata.tsv"));
        assert!(
            err.to_string().contains("1 metadata rows for 3 vectors"),
            "{err}"
        );
        let mut bad = e.clone();
        bad.push(&[1.0, f32::NAN, 0.0]);
        let err = write_projector_tsv(dir.path(), &bad, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("vector 3"), "{err}");
        assert!(err.to_string().contains("vectors.tsv"), "{err}");
        // A folder that cannot be created.
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let err = write_npy(&file.join("x.npy"), &e).unwrap_err();
        assert_eq!(err.path(), file.join("x.npy"));
        assert!(matches!(err, ExportError::Io { .. }));
    }
}
