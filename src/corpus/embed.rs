//! Embedding a corpus through the vector cache: texts embedded before come from disk, the rest
//! are encoded chunk by chunk and written to the cache after each chunk, so cancelling (or a
//! crash) keeps everything done so far and the next run resumes from there. The next chunk is
//! tokenised on a second thread while the current one runs through the transformer.

use std::path::PathBuf;

use anyhow::Result;
use rayon::prelude::*;

use super::cache::{CacheError, CacheKey, VectorCache, text_hash};
use crate::analysis::embeddings::Embeddings;
use crate::model::{Prompt, SentenceEncoder};

/// How to embed a corpus.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub batch_size: usize,
    /// Texts encoded between two cache writes (and two chances to cancel).
    pub chunk: usize,
    /// `None`: no cache, everything is encoded in memory.
    pub cache_root: Option<PathBuf>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            batch_size: 32,
            chunk: 256,
            cache_root: Some(VectorCache::default_root()),
        }
    }
}

/// Where an embedding stands, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedProgress {
    /// Texts with a vector so far (from the cache or encoded).
    pub done: usize,
    pub total: usize,
    /// Of `done`, how many came from the cache.
    pub cached: usize,
}

/// A corpus's vectors and how they were obtained.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// One row per text, in the corpus's order.
    pub vectors: Embeddings,
    /// Texts whose vectors came from the cache.
    pub cached: usize,
    /// Texts encoded now (each distinct text once).
    pub encoded: usize,
    /// The cache folder used, or why none was (busy, unwritable).
    pub cache: Result<PathBuf, String>,
}

/// Embeds `texts` with `prompt`, through the cache when `options.cache_root` is set. Calls
/// `progress` after the cached rows are read and after every batch; when it returns false the
/// embedding stops at the end of the current chunk and `Ok(None)` is returned (what was encoded
/// is in the cache).
pub fn embed_texts(
    encoder: &SentenceEncoder,
    texts: &[String],
    prompt: &Prompt,
    options: &EmbedOptions,
    progress: &mut dyn FnMut(EmbedProgress) -> bool,
) -> Result<Option<Embedded>> {
    let n = texts.len();
    let dim = encoder.info().embedding_dim;
    let prompt_text = encoder.prompt_text(prompt)?;
    let mut cache = match &options.cache_root {
        None => Err("no cache".to_string()),
        Some(root) => CacheKey::for_model(encoder, prompt_text.as_deref())
            .map_err(|e| format!("{}: {e}", encoder.info().folder.display()))
            .and_then(|key| match VectorCache::open(root, &key) {
                Ok(c) => Ok(c),
                Err(e @ CacheError::Busy(_)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }),
    };
    let hashes: Vec<u128> = texts.par_iter().map(|t| text_hash(t)).collect();
    let mut data = vec![0f32; n * dim];
    // For each text: its cached row, or the first text with the same hash (encoded once).
    let mut first_of: std::collections::HashMap<u128, usize> = Default::default();
    let mut wanted = Vec::new();
    let mut missing = Vec::new();
    let mut copies = Vec::new();
    for (i, h) in hashes.iter().enumerate() {
        if let Some(row) = cache.as_ref().ok().and_then(|c| c.row_of(*h)) {
            wanted.push((i, row));
        } else {
            match first_of.entry(*h) {
                std::collections::hash_map::Entry::Occupied(e) => copies.push((i, *e.get())),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                    missing.push(i);
                }
            }
        }
    }
    let cached = wanted.len();
    if let Ok(c) = &cache {
        c.gather(&mut wanted, &mut data)?;
    }
    let mut done = cached;
    let report = |done: usize| EmbedProgress {
        done,
        total: n,
        cached,
    };
    if !progress(report(done)) {
        return Ok(None);
    }
    let mut copies_done = 0;
    let chunk = options.chunk.max(1);
    let parts: Vec<&[usize]> = missing.chunks(chunk).collect();
    // Tokenising overlaps the transformer: a second thread tokenises the next chunk while this
    // one encodes the current one. The channel holds one chunk, so at most two tokenised chunks
    // exist at a time; when this thread stops early (cancelled, or an error), the channel
    // closes and the tokeniser stops after its current chunk.
    let cancelled = std::thread::scope(|scope| -> Result<bool> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let parts = &parts;
        scope.spawn(move || {
            for part in parts {
                let chunk_texts: Vec<&str> = part.iter().map(|&i| texts[i].as_str()).collect();
                if tx
                    .send(encoder.tokenize_prompted(&chunk_texts, prompt))
                    .is_err()
                {
                    break;
                }
            }
        });
        for (part, tokenized) in parts.iter().zip(rx) {
            let mut cancelled = false;
            let rows = encoder.encode_tokenized(&tokenized?, options.batch_size, &mut |d, _| {
                if !progress(report(done + d)) {
                    cancelled = true;
                }
            })?;
            let mut flat = Vec::with_capacity(part.len() * dim);
            for (&i, row) in part.iter().zip(&rows) {
                data[i * dim..(i + 1) * dim].copy_from_slice(row);
                flat.extend_from_slice(row);
            }
            done += part.len();
            let failed = cache.as_mut().ok().and_then(|c| {
                let part_hashes: Vec<u128> = part.iter().map(|&i| hashes[i]).collect();
                c.append(&part_hashes, &flat).err().map(|e| {
                    format!(
                        "{}: {e} (the cache is no longer written)",
                        c.dir().display()
                    )
                })
            });
            if let Some(message) = failed {
                cache = Err(message);
            }
            if cancelled {
                return Ok(true);
            }
        }
        Ok(false)
    })?;
    if cancelled {
        return Ok(None);
    }
    for &(i, src) in &copies {
        data.copy_within(src * dim..(src + 1) * dim, i * dim);
        copies_done += 1;
    }
    if !progress(report(n)) {
        return Ok(None);
    }
    debug_assert_eq!(done + copies_done, n);
    Ok(Some(Embedded {
        vectors: Embeddings::from_flat(dim.max(1), data),
        cached,
        encoded: missing.len(),
        cache: cache.map(|c| c.dir().to_path_buf()),
    }))
}
