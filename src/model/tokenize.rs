//! Text to token ids with the model's `tokenizer.json` (or, without one, a WordPiece tokenizer
//! built from its `vocab.txt`: see `vocab.rs`).
//!
//! Truncation is set from the model's `max_seq_length` and padding is done by the batcher, so
//! whatever `tokenizer.json` says about either is ignored (all-MiniLM-L6-v2's says 128 where the
//! model uses 256).

use std::path::Path;

use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::{ModelError, Result};
use super::guard::catch_quietly;

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// True when tokens were cut off at `max_seq_length`.
    pub truncated: bool,
    /// Tokens at the start that belong to a prompt (0 without one).
    pub prompt_len: usize,
    /// Tokens that are not special tokens (`[CLS]`, `</s>`, ...), unknown ones included.
    pub content: usize,
    /// Unknown tokens (`[UNK]`, `<unk>`): pieces of text the vocabulary has no entry for.
    pub unknown: usize,
}

/// Runs `run` over `tokenized` in batches of `batch_size`, longest texts first (each batch pads
/// to a similar length), and returns its rows in input order; `progress(done, total)` after each
/// batch. A non-finite value in any row is an error: such a vector must never reach a
/// similarity, a chart or a file.
pub fn in_length_order(
    tokenized: &[Tokenized],
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
    mut run: impl FnMut(&[&Tokenized]) -> Result<Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    if batch_size == 0 {
        return Err(ModelError::Invalid("batch size must be at least 1".into()));
    }
    let mut order: Vec<usize> = (0..tokenized.len()).collect();
    // Longest first (stable).
    order.sort_by_key(|&i| std::cmp::Reverse(tokenized[i].ids.len()));
    let mut out = vec![Vec::new(); tokenized.len()];
    let mut done = 0;
    for chunk in order.chunks(batch_size) {
        let items: Vec<&Tokenized> = chunk.iter().map(|&i| &tokenized[i]).collect();
        for (&i, row) in chunk.iter().zip(run(&items)?) {
            if row.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::NonFinite {
                    index: i,
                    total: tokenized.len(),
                });
            }
            out[i] = row;
        }
        done += chunk.len();
        progress(done, tokenized.len());
    }
    Ok(out)
}

pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    lowercase: bool,
    pad_id: u32,
    /// Ids of the special tokens (`[CLS]`, `</s>`, `<|endoftext|>`, ...).
    special: std::collections::HashSet<u32>,
    /// The unknown token's id, when the vocabulary has one (byte-level BPE has none).
    unk_id: Option<u32>,
}

impl TextTokenizer {
    /// Reads `tokenizer.json` from `dir`. `lowercase` lower-cases text first
    /// (`do_lower_case` in `sentence_bert_config.json`).
    pub fn load(dir: &Path, max_len: usize, lowercase: bool) -> Result<Self> {
        let mut path = dir.join("tokenizer.json");
        let mut inner = if path.is_file() {
            // The tokenizers crate panics on some malformed files (found by fuzzing): a panic
            // here is a bad file, reported as one.
            catch_quietly(|| Tokenizer::from_file(&path))
                .map_err(|panic| format!("malformed ({panic})"))
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|message| ModelError::Tokenizer {
                    path: path.clone(),
                    message,
                })?
        } else if dir.join("vocab.txt").is_file() {
            // An older folder: build the WordPiece tokenizer as `transformers` does.
            path = dir.join("vocab.txt");
            let config: serde_json::Value = super::error::read_json(&dir.join("config.json"))?;
            let model_type = config
                .get("model_type")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            catch_quietly(|| super::vocab::wordpiece_tokenizer(dir, model_type))
                .unwrap_or_else(|panic| Err(format!("malformed ({panic})")))
                .map_err(|message| ModelError::Tokenizer {
                    path: path.clone(),
                    message,
                })?
        } else {
            return Err(ModelError::MissingFile {
                folder: dir.to_path_buf(),
                what: "tokenizer.json (or a WordPiece vocab.txt; save the tokenizer with a \
                       recent transformers version)"
                    .into(),
            });
        };
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                ["[PAD]", "<pad>", "<PAD>"]
                    .iter()
                    .find_map(|t| inner.token_to_id(t))
            })
            .unwrap_or(0);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        inner.with_padding(None);
        let special = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let unk_id = ["[UNK]", "<unk>", "<UNK>"]
            .iter()
            .find_map(|t| inner.token_to_id(t));
        Ok(Self {
            inner,
            max_len,
            lowercase,
            pad_id,
            special,
            unk_id,
        })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokenizes each text (special tokens added, truncated to `max_seq_length`).
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Tokenized>> {
        let inputs: Vec<String> = texts.iter().map(|t| self.cased(t.as_ref())).collect();
        self.encode_all(inputs, |text| self.inner.encode(text, true))
    }

    /// Tokenizes each pair as one input, the second text as the second segment: the model's
    /// pair template (`[CLS] a [SEP] b [SEP]` with token type 1 for `b`'s part in BERT,
    /// `<s> a </s></s> b </s>` in RoBERTa), cut to `max_seq_length` by `longest_first` as
    /// `transformers` tokenizes a text pair for a cross-encoder: a text shorter than half the
    /// room keeps all of it, else both get half, the longer one the odd token.
    ///
    /// tokenizers 0.23.2 stops tokenizing each text at `max_seq_length` pieces when truncation is
    /// on, so two long texts look equally long and the odd token goes to the second; the Python
    /// library (tokenizers 0.23.3) gives it to the longer. So each text is tokenized whole here,
    /// cut by `longest_first` on its true length, then put into the pair template.
    pub fn encode_pairs<A: AsRef<str>, B: AsRef<str>>(
        &self,
        pairs: &[(A, B)],
    ) -> Result<Vec<Tokenized>> {
        use tokenizers::PostProcessor;
        let inputs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (self.cased(a.as_ref()), self.cased(b.as_ref())))
            .collect();
        let mut whole = self.inner.clone();
        whole
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        let added = self
            .inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true));
        let params = TruncationParams {
            max_length: self.max_len.saturating_sub(added),
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        self.encode_all(inputs, |(a, b)| {
            let first = whole.encode(a, false)?;
            let mut second = whole.encode(b, false)?;
            second.set_type_ids(vec![1; second.len()]);
            let (first, second) =
                tokenizers::utils::truncation::truncate_encodings(first, Some(second), &params)?;
            whole.post_process(first, second, true)
        })
    }

    /// The text as the model sees it (lower-cased under `do_lower_case`).
    fn cased(&self, text: &str) -> String {
        if self.lowercase {
            text.to_lowercase()
        } else {
            text.to_string()
        }
    }

    /// Encodes every input with `encode` (single texts or pairs, special tokens added, truncated
    /// to `max_seq_length`).
    fn encode_all<I: Send>(
        &self,
        inputs: Vec<I>,
        encode: impl Fn(I) -> tokenizers::Result<tokenizers::Encoding> + Sync,
    ) -> Result<Vec<Tokenized>> {
        // What `encode_batch` does (padding is off), with each text guarded on the thread that
        // encodes it: a malformed tokenizer can panic while encoding too (found by fuzzing).
        let encodings = inputs
            .into_par_iter()
            .map(|input| {
                catch_quietly(|| encode(input))
                    .map_err(|panic| {
                        ModelError::Tokenize(format!("the tokenizer failed: {panic}"))
                    })?
                    .map_err(|e| ModelError::Tokenize(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(encodings
            .into_iter()
            .map(|e| {
                let ids = e.get_ids();
                let unknown = ids.iter().filter(|&&i| Some(i) == self.unk_id).count();
                let special = ids.iter().filter(|i| self.special.contains(i)).count();
                // The unknown token is itself among the special tokens of most vocabularies.
                let unk_special = self.unk_id.is_some_and(|u| self.special.contains(&u));
                // Overflow chunks repeat the special tokens; count only the text's own pieces.
                Tokenized {
                    truncated: !e.get_overflowing().is_empty(),
                    ids: ids.to_vec(),
                    type_ids: e.get_type_ids().to_vec(),
                    prompt_len: 0,
                    content: ids.len() - special + if unk_special { unknown } else { 0 },
                    unknown,
                }
            })
            .collect())
    }

    /// Tokenizes each text with `prompt` before it, as the Python library does (`prompt + text`),
    /// and records how many tokens at the start are the prompt's: its own tokens, less a trailing
    /// special token (what `include_prompt: false` leaves out of pooling).
    pub fn encode_prompted<S: AsRef<str>>(
        &self,
        texts: &[S],
        prompt: &str,
    ) -> Result<Vec<Tokenized>> {
        let joined: Vec<String> = texts
            .iter()
            .map(|t| format!("{prompt}{}", t.as_ref()))
            .collect();
        let own = self.encode(&[prompt])?.remove(0).ids;
        let prompt_len = match own.last() {
            Some(last) if self.special.contains(last) => own.len() - 1,
            _ => own.len(),
        };
        let mut out = self.encode(&joined)?;
        for t in &mut out {
            t.prompt_len = prompt_len.min(t.ids.len());
        }
        Ok(out)
    }

    /// How many tokens `text` makes without the cut at `max_seq_length` (special tokens added).
    /// Tokenizes again with a copy of the tokenizer: for displays, not for the batch path.
    pub fn untruncated_len(&self, text: &str) -> Result<usize> {
        let text = if self.lowercase {
            text.to_lowercase()
        } else {
            text.to_string()
        };
        let mut full = self.inner.clone();
        full.with_truncation(None)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        let enc = catch_quietly(|| full.encode(text, true))
            .map_err(|panic| ModelError::Tokenize(format!("the tokenizer failed: {panic}")))?
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        Ok(enc.get_ids().len())
    }

    /// The vocabulary's piece for each id (`##ing`, `▁the`, `[CLS]`), for display.
    pub fn pieces(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| self.inner.id_to_token(i).unwrap_or_else(|| format!("#{i}")))
            .collect()
    }

    /// True for a special token (`[CLS]`, `</s>`, ...), the unknown token included.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// True for the unknown token (`[UNK]`, `<unk>`).
    pub fn is_unknown(&self, id: u32) -> bool {
        Some(id) == self.unk_id
    }

    /// The token strings of one text, for display.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let text = if self.lowercase {
            text.to_lowercase()
        } else {
            text.to_string()
        };
        let enc = catch_quietly(|| self.inner.encode(text, true))
            .map_err(|panic| ModelError::Tokenize(format!("the tokenizer failed: {panic}")))?
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        Ok(enc.get_tokens().to_vec())
    }
}
