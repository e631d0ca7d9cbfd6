//! Sentence vectors kept on disk, so a corpus is embedded once.
//!
//! One folder per *key* (the model's content, its pooling, settings and precision, and the
//! prompt):
//!
//! ```text
//! <cache>/vectors/<key>/meta.json     what the key stands for (model folder, pooling, prompt, dimension)
//! <cache>/vectors/<key>/vectors.f32   rows of `dim` little-endian f32, appended
//! <cache>/vectors/<key>/texts.key     one 16-byte hash (xxh3-128) of each row's text, appended
//! ```
//!
//! Rows are appended vectors first, hashes second, both flushed per chunk; a row counts only once
//! both files hold it, so a writer killed at any moment loses at most the chunk it was writing,
//! and the next open cuts both files back to the rows they agree on. Texts are found by hash;
//! a corpus shares the rows of every corpus embedded before with the same key. One process writes
//! a folder at a time (an exclusive file lock); another finds it busy and embeds without the cache.
//! `<cache>` is `$SBERT_TUI_CACHE` or the platform cache folder (`~/.cache/sbert-tui`).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use crate::model::SentenceEncoder;

/// Bumped when the layout or what a key covers changes.
const LAYOUT: u32 = 1;

/// The hash a text is found by.
pub fn text_hash(text: &str) -> u128 {
    xxh3_128(text.as_bytes())
}

/// What a cache folder holds vectors for.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheKey {
    /// 32 hex digits: the folder's name.
    pub id: String,
    pub dim: usize,
    /// Written to `meta.json` for people: what the key stands for.
    pub meta: serde_json::Value,
}

impl CacheKey {
    /// The key of `encoder` (the content of its folder's files, pooling, sequence length,
    /// Dense / Normalize / truncation, inference precision) with `prompt` (the prompt's text,
    /// `None` for none).
    ///
    /// Files up to 8 MiB are hashed whole; larger ones (the weights) by their size and their
    /// first and last 4 MiB, which any training changes. Paths and times are not part of it: a
    /// copied model shares its vectors; a retrained one does not.
    pub fn for_model(encoder: &SentenceEncoder, prompt: Option<&str>) -> io::Result<CacheKey> {
        let info = encoder.info();
        let mut h = Xxh3::new();
        h.update(&LAYOUT.to_le_bytes());
        let mut files = Vec::new();
        walk(&info.folder, &info.folder, &mut files)?;
        files.sort();
        for rel in &files {
            let path = info.folder.join(rel);
            h.update(rel.as_bytes());
            h.update(&[0]);
            hash_file(&path, &mut h)?;
        }
        let settings = serde_json::json!({
            "pooling": info.pooling.to_string(),
            "max_seq_length": info.max_seq_length,
            "truncate_dim": info.truncate_dim,
            "dense_layers": info.dense_layers,
            "normalize": info.normalize,
            "do_lower_case": info.do_lower_case,
            "include_prompt": info.include_prompt,
            "dim": info.embedding_dim,
            "prompt": prompt,
        });
        // bf16 and int8 vectors are not the f32 ones: their rows must never answer an f32 run
        // (which stays exact), nor f32 rows a faster run. f32 adds nothing, so the keys of
        // caches made before precisions existed still hold.
        let mut settings = settings;
        if info.precision != crate::model::Precision::F32 {
            settings["precision"] = serde_json::json!(info.precision.to_string());
        }
        h.update(settings.to_string().as_bytes());
        let id = format!("{:032x}", h.digest128());
        let mut meta = settings;
        meta["model"] = serde_json::json!(info.folder.display().to_string());
        meta["layout"] = serde_json::json!(LAYOUT);
        Ok(CacheKey {
            id,
            dim: info.embedding_dim,
            meta,
        })
    }
}

/// Relative paths of the files under `dir` (skipping hidden entries: our own write notes,
/// `.git`).
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn hash_file(path: &Path, h: &mut Xxh3) -> io::Result<()> {
    const WHOLE: u64 = 8 << 20;
    const PART: usize = 4 << 20;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    h.update(&len.to_le_bytes());
    if len <= WHOLE {
        let mut buf = Vec::with_capacity(len as usize);
        f.read_to_end(&mut buf)?;
        h.update(&buf);
    } else {
        let mut buf = vec![0u8; PART];
        f.read_exact_at(&mut buf, 0)?;
        h.update(&buf);
        f.read_exact_at(&mut buf, len - PART as u64)?;
        h.update(&buf);
    }
    Ok(())
}

/// An open cache folder.
pub struct VectorCache {
    dir: PathBuf,
    dim: usize,
    vectors: File,
    keys: File,
    rows: HashMap<u128, u32>,
    count: usize,
}

/// Why a cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{0}: in use by another sbert-tui")]
    Busy(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: made for vectors of another dimension")]
    Dimension(PathBuf),
}

impl VectorCache {
    /// The folder all keys live under.
    pub fn default_root() -> PathBuf {
        crate::model::source::cache_dir().join("vectors")
    }

    /// Opens (creating) the folder of `key` under `root`, locks it, and cuts its files back to
    /// the rows both hold.
    pub fn open(root: &Path, key: &CacheKey) -> Result<VectorCache, CacheError> {
        let dir = root.join(&key.id);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let meta_path = dir.join("meta.json");
        if let Ok(text) = fs::read_to_string(&meta_path) {
            let dim = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|m| m.get("dim").and_then(|d| d.as_u64()));
            if dim.is_some_and(|d| d as usize != key.dim) {
                return Err(CacheError::Dimension(dir));
            }
        } else {
            let pretty = serde_json::to_string_pretty(&key.meta).unwrap_or_default();
            fs::write(&meta_path, pretty).map_err(io_err(&meta_path))?;
        }
        let open = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(io_err(&path))
        };
        let keys = open("texts.key")?;
        match keys.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(CacheError::Busy(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&dir)(e)),
        }
        let vectors = open("vectors.f32")?;
        let row_bytes = 4 * key.dim as u64;
        let key_len = keys.metadata().map_err(io_err(&dir))?.len();
        let vec_len = vectors.metadata().map_err(io_err(&dir))?.len();
        let count = (key_len / 16).min(vec_len / row_bytes.max(1)) as usize;
        // A writer killed midway leaves a partial row or rows only one file holds: cut them.
        if key_len != count as u64 * 16 {
            keys.set_len(count as u64 * 16).map_err(io_err(&dir))?;
        }
        if vec_len != count as u64 * row_bytes {
            vectors
                .set_len(count as u64 * row_bytes)
                .map_err(io_err(&dir))?;
        }
        let mut raw = vec![0u8; count * 16];
        keys.read_exact_at(&mut raw, 0).map_err(io_err(&dir))?;
        let mut rows = HashMap::with_capacity(count);
        for (i, k) in raw.chunks_exact(16).enumerate() {
            rows.entry(u128::from_le_bytes(k.try_into().unwrap()))
                .or_insert(i as u32);
        }
        Ok(VectorCache {
            dir,
            dim: key.dim,
            vectors,
            keys,
            rows,
            count,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The row holding the text with this hash.
    pub fn row_of(&self, hash: u128) -> Option<u32> {
        self.rows.get(&hash).copied()
    }

    /// Copies row `row` into `out` (`dim` numbers).
    pub fn read_row(&self, row: u32, out: &mut [f32]) -> io::Result<()> {
        let mut buf = vec![0u8; 4 * self.dim];
        self.read_rows(row, 1, &mut buf)?;
        for (o, b) in out.iter_mut().zip(buf.chunks_exact(4)) {
            *o = f32::from_le_bytes(b.try_into().unwrap());
        }
        Ok(())
    }

    /// Raw bytes of `n` rows from `row`.
    fn read_rows(&self, row: u32, n: usize, buf: &mut [u8]) -> io::Result<()> {
        self.vectors.read_exact_at(
            &mut buf[..4 * self.dim * n],
            row as u64 * 4 * self.dim as u64,
        )
    }

    /// Fills `out` (row-major, `dim` per row) with the rows `wanted[i]` (`(slot in out, row)`).
    /// Reads runs of consecutive rows at once.
    pub fn gather(&self, wanted: &mut [(usize, u32)], out: &mut [f32]) -> io::Result<()> {
        wanted.sort_unstable_by_key(|&(_, r)| r);
        let d = self.dim;
        let mut buf = Vec::new();
        let mut i = 0;
        while i < wanted.len() {
            let mut j = i + 1;
            while j < wanted.len() && wanted[j].1 == wanted[j - 1].1 + 1 && j - i < 4096 {
                j += 1;
            }
            buf.resize(4 * d * (j - i), 0);
            self.read_rows(wanted[i].1, j - i, &mut buf)?;
            for (k, &(slot, _)) in wanted[i..j].iter().enumerate() {
                let src = &buf[4 * d * k..4 * d * (k + 1)];
                for (o, b) in out[slot * d..(slot + 1) * d]
                    .iter_mut()
                    .zip(src.chunks_exact(4))
                {
                    *o = f32::from_le_bytes(b.try_into().unwrap());
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Appends rows (vectors first, then their text hashes; each file flushed), so that a crash
    /// at any point keeps every earlier row.
    pub fn append(&mut self, hashes: &[u128], vectors: &[f32]) -> io::Result<()> {
        assert_eq!(hashes.len() * self.dim, vectors.len());
        let mut bytes = Vec::with_capacity(vectors.len() * 4);
        for v in vectors {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.vectors.write_all(&bytes)?;
        self.vectors.sync_data()?;
        let mut keys = Vec::with_capacity(hashes.len() * 16);
        for h in hashes {
            keys.extend_from_slice(&h.to_le_bytes());
        }
        self.keys.write_all(&keys)?;
        self.keys.sync_data()?;
        for h in hashes {
            self.rows.entry(*h).or_insert(self.count as u32);
            self.count += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dim: usize) -> CacheKey {
        CacheKey {
            id: format!("test{dim}"),
            dim,
            meta: serde_json::json!({"dim": dim}),
        }
    }

    #[test]
    fn rows_survive_reopening_and_a_torn_append_is_cut() {
        let root = tempfile::tempdir().unwrap();
        let k = key(3);
        {
            let mut c = VectorCache::open(root.path(), &k).unwrap();
            c.append(
                &[text_hash("a"), text_hash("b")],
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            )
            .unwrap();
            // A second process finds the folder busy while this one holds it.
            assert!(matches!(
                VectorCache::open(root.path(), &k),
                Err(CacheError::Busy(_))
            ));
        }
        // A writer killed between the two files: a vector row and a half without hashes.
        let dir = root.path().join(&k.id);
        let mut v = OpenOptions::new()
            .append(true)
            .open(dir.join("vectors.f32"))
            .unwrap();
        v.write_all(&[0u8; 18]).unwrap();
        let c = VectorCache::open(root.path(), &k).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(fs::metadata(dir.join("vectors.f32")).unwrap().len(), 24);
        let mut out = vec![0.0; 6];
        let mut wanted = vec![(0, c.row_of(text_hash("b")).unwrap()), (1, 0)];
        c.gather(&mut wanted, &mut out).unwrap();
        assert_eq!(out, [4.0, 5.0, 6.0, 1.0, 2.0, 3.0]);
        assert_eq!(c.row_of(text_hash("c")), None);
        drop(c);
        assert!(matches!(
            VectorCache::open(root.path(), &key(4)).map(|_| ()),
            Ok(())
        ));
        let mut other = key(4);
        other.id = k.id.clone();
        assert!(matches!(
            VectorCache::open(root.path(), &other),
            Err(CacheError::Dimension(_))
        ));
    }
}
