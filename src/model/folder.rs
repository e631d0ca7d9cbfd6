//! The sentence-transformers model folder, read as the Python library reads it.
//!
//! `modules.json` lists the pipeline (Transformer, Pooling, Dense, Normalize). Both the classic
//! type names (`sentence_transformers.models.Pooling`) and the newer ones
//! (`sentence_transformers.base.modules.dense.Dense`,
//! `sentence_transformers.sentence_transformer.modules.pooling.Pooling`) are accepted: the class
//! name at the end decides. A plain Hugging Face folder without `modules.json` gets mean pooling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::dense::{Activation, DenseConfig};
use super::error::{ModelError, Result, read_json};
use super::pooling::{PoolingMode, PoolingSpec};
use crate::analysis::similarity::Similarity;

/// One entry of `modules.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModuleEntry {
    #[serde(default)]
    pub idx: Option<usize>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// `sentence_bert_config.json` (only the fields that change how text is embedded).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SentenceBertConfig {
    #[serde(default)]
    pub max_seq_length: Option<usize>,
    #[serde(default)]
    pub do_lower_case: bool,
}

/// `config_sentence_transformers.json`: the prompts, the default prompt and the similarity
/// function (the file is optional; so is each field).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StConfig {
    /// Prompt name -> text put before each sentence (`query` -> `query: `).
    pub prompts: BTreeMap<String, String>,
    /// The prompt `encode` uses when none is asked for.
    pub default_prompt_name: Option<String>,
    pub similarity: Similarity,
}

#[derive(Deserialize)]
struct RawStConfig {
    #[serde(default)]
    prompts: Option<BTreeMap<String, String>>,
    #[serde(default)]
    default_prompt_name: Option<String>,
    #[serde(default)]
    similarity_fn_name: Option<String>,
}

/// Reads `config_sentence_transformers.json` (absent: no prompts, cosine).
pub fn read_st_config(path: &Path) -> Result<StConfig> {
    if !path.is_file() {
        return Ok(StConfig::default());
    }
    let raw: RawStConfig = read_json(path)?;
    let prompts = raw.prompts.unwrap_or_default();
    if let Some(name) = &raw.default_prompt_name
        && !prompts.contains_key(name)
    {
        return Err(ModelError::config(
            path,
            format!(
                "default_prompt_name `{name}` is not one of the prompts ({})",
                prompt_names(&prompts)
            ),
        ));
    }
    let similarity = match raw.similarity_fn_name.as_deref() {
        None => Similarity::Cosine,
        Some(s) => s
            .parse()
            .map_err(|e: String| ModelError::config(path, format!("similarity_fn_name: {e}")))?,
    };
    Ok(StConfig {
        prompts,
        default_prompt_name: raw.default_prompt_name,
        similarity,
    })
}

/// The names of `prompts`, for messages (`none` when there are none).
pub fn prompt_names(prompts: &BTreeMap<String, String>) -> String {
    if prompts.is_empty() {
        "the model has none".to_string()
    } else {
        prompts
            .keys()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What follows the transformer, in the order of `modules.json`.
#[derive(Debug, Clone)]
pub enum Stage {
    Pooling(PoolingSpec),
    Dense {
        dir: PathBuf,
        config: DenseConfig,
        activation: Activation,
    },
    Normalize,
}

/// Everything needed to build the encoder, read from the folder's files.
#[derive(Debug, Clone)]
pub struct ModelLayout {
    pub folder: PathBuf,
    /// Folder of the Transformer module (holds `config.json`, weights and tokenizer).
    pub transformer_dir: PathBuf,
    /// Token limit: `sentence_bert_config.json`, else the tokenizer's `model_max_length` capped by
    /// `max_position_embeddings`, as in Python.
    pub max_seq_length: usize,
    pub do_lower_case: bool,
    /// True when the folder has a `modules.json`; false for a plain Hugging Face model.
    pub has_modules_json: bool,
    pub stages: Vec<Stage>,
    /// `include_prompt` of the pooling config: false leaves the prompt's tokens out of pooling.
    pub include_prompt: bool,
    pub st_config: StConfig,
}

impl ModelLayout {
    pub fn pooling(&self) -> Option<&PoolingSpec> {
        self.stages.iter().find_map(|s| match s {
            Stage::Pooling(p) => Some(p),
            _ => None,
        })
    }

    pub fn normalizes(&self) -> bool {
        self.stages.iter().any(|s| matches!(s, Stage::Normalize))
    }

    /// Reads the folder. `max_position_embeddings` comes from `config.json` and caps the
    /// tokenizer's limit when `sentence_bert_config.json` does not give one.
    pub fn read(folder: &Path) -> Result<Self> {
        if !folder.exists() {
            return Err(ModelError::MissingFolder(folder.to_path_buf()));
        }
        if !folder.is_dir() {
            return Err(ModelError::NotAFolder(folder.to_path_buf()));
        }
        let modules_path = folder.join("modules.json");
        let has_modules_json = modules_path.is_file();
        let entries: Vec<ModuleEntry> = if has_modules_json {
            read_json(&modules_path)?
        } else {
            Vec::new()
        };

        let mut transformer_dir = None;
        let mut stages = Vec::new();
        let mut include_prompt = true;
        for (i, entry) in entries.iter().enumerate() {
            let dir = folder.join(&entry.path);
            let class = class_name(&entry.kind);
            if !entry.kind.starts_with("sentence_transformers.") {
                return Err(ModelError::config(
                    &modules_path,
                    format!(
                        "entry {i}: module type `{}` is not a sentence_transformers module",
                        entry.kind
                    ),
                ));
            }
            match class {
                "Transformer" => {
                    if transformer_dir.is_some() {
                        return Err(ModelError::config(
                            &modules_path,
                            format!("entry {i}: a second Transformer module is not supported"),
                        ));
                    }
                    transformer_dir = Some(dir);
                }
                "Pooling" => {
                    let (spec, include) = read_pooling_config(&dir.join("config.json"))?;
                    include_prompt = include;
                    stages.push(Stage::Pooling(spec));
                }
                "Dense" => {
                    let config_path = dir.join("config.json");
                    let config: DenseConfig = read_json(&config_path)?;
                    let activation = match &config.activation_function {
                        None => Activation::Tanh,
                        Some(name) => Activation::from_torch_name(name).ok_or_else(|| {
                            ModelError::config(
                                &config_path,
                                format!("activation_function `{name}` is not supported"),
                            )
                        })?,
                    };
                    stages.push(Stage::Dense {
                        dir,
                        config,
                        activation,
                    });
                }
                "Normalize" => stages.push(Stage::Normalize),
                other => {
                    return Err(ModelError::config(
                        &modules_path,
                        format!(
                            "entry {i}: module `{other}` ({}) is not supported yet \
                             (supported: Transformer, Pooling, Dense, Normalize)",
                            entry.kind
                        ),
                    ));
                }
            }
        }
        let transformer_dir = match transformer_dir {
            Some(dir) => dir,
            None if has_modules_json => {
                return Err(ModelError::config(
                    &modules_path,
                    "no Transformer module: this tool needs a transformer-based model",
                ));
            }
            None => folder.to_path_buf(),
        };
        if !has_modules_json {
            // A plain Hugging Face model: Python wraps it in Transformer + mean Pooling.
            stages.push(Stage::Pooling(PoolingSpec::single(PoolingMode::Mean)));
        }
        if !stages.iter().any(|s| matches!(s, Stage::Pooling(_))) {
            return Err(ModelError::config(
                &modules_path,
                "no Pooling module: cannot turn token vectors into one sentence vector",
            ));
        }

        let text = read_text_settings(&transformer_dir)?;
        let st_config = read_st_config(&folder.join("config_sentence_transformers.json"))?;
        Ok(ModelLayout {
            folder: folder.to_path_buf(),
            transformer_dir,
            max_seq_length: text.max_seq_length,
            do_lower_case: text.do_lower_case,
            has_modules_json,
            stages,
            include_prompt,
            st_config,
        })
    }
}

/// How the transformer in a folder reads text, as the Python library decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextSettings {
    /// Token limit: `sentence_bert_config.json`, else the tokenizer's `model_max_length` capped
    /// by `max_position_embeddings`.
    pub max_seq_length: usize,
    /// `do_lower_case` of `sentence_bert_config.json`.
    pub do_lower_case: bool,
}

/// Reads [`TextSettings`] from the Transformer module's folder (`config.json`, and
/// `sentence_bert_config.json` and `tokenizer_config.json` where present).
pub fn read_text_settings(transformer_dir: &Path) -> Result<TextSettings> {
    let config_path = transformer_dir.join("config.json");
    if !config_path.is_file() {
        return Err(ModelError::MissingFile {
            folder: transformer_dir.to_path_buf(),
            what: "config.json (the transformer's configuration)".into(),
        });
    }
    let config: Value = read_json(&config_path)?;
    let max_positions = config
        .get("max_position_embeddings")
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
        .map(|n| n as usize);

    let sbert_path = transformer_dir.join("sentence_bert_config.json");
    let sbert: SentenceBertConfig = if sbert_path.is_file() {
        read_json(&sbert_path)?
    } else {
        SentenceBertConfig::default()
    };
    let tokenizer_limit =
        read_tokenizer_max_length(&transformer_dir.join("tokenizer_config.json"))?;
    let max_seq_length = match (sbert.max_seq_length, tokenizer_limit, max_positions) {
        (Some(n), _, _) => n,
        (None, Some(t), Some(p)) => t.min(p),
        (None, Some(t), None) => t,
        (None, None, Some(p)) => p,
        (None, None, None) => 512,
    };
    if max_seq_length == 0 {
        return Err(ModelError::config(
            &sbert_path,
            "max_seq_length must be at least 1",
        ));
    }
    Ok(TextSettings {
        max_seq_length,
        do_lower_case: sbert.do_lower_case,
    })
}

/// The transformer's own files that a saved model carries along: its configuration and every
/// tokenizer file present.
pub const TRANSFORMER_FILES: [&str; 10] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spiece.model",
];

/// Reads the [`TRANSFORMER_FILES`] present in `dir`, by name.
pub fn read_transformer_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for name in TRANSFORMER_FILES {
        let path = dir.join(name);
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
            files.push((name.to_string(), bytes));
        }
    }
    Ok(files)
}

/// `sentence_transformers.models.Pooling` -> `Pooling`.
fn class_name(kind: &str) -> &str {
    kind.rsplit('.').next().unwrap_or(kind)
}

/// `model_max_length` of `tokenizer_config.json`; transformers writes 1e30 for "no limit".
fn read_tokenizer_max_length(path: &Path) -> Result<Option<usize>> {
    if !path.is_file() {
        return Ok(None);
    }
    let v: Value = read_json(path)?;
    Ok(v.get("model_max_length")
        .and_then(Value::as_f64)
        .filter(|&n| (1.0..1e9).contains(&n))
        .map(|n| n as usize))
}

/// `1_Pooling/config.json`: the newer `pooling_mode` string (or list), or the classic
/// `pooling_mode_*_tokens` flags, concatenated in the library's order when several are on.
pub fn read_pooling(path: &Path) -> Result<PoolingSpec> {
    Ok(read_pooling_config(path)?.0)
}

/// [`read_pooling`], and `include_prompt` (default true).
pub fn read_pooling_config(path: &Path) -> Result<(PoolingSpec, bool)> {
    let v: Value = read_json(path)?;
    let spec = parse_pooling_config(&v).map_err(|m| ModelError::config(path, m))?;
    let include = match v.get("include_prompt") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ModelError::config(
                path,
                "include_prompt: expected true or false",
            ));
        }
    };
    Ok((spec, include))
}

fn parse_pooling_config(v: &Value) -> std::result::Result<PoolingSpec, String> {
    if let Some(mode) = v.get("pooling_mode") {
        let names: Vec<&str> = match mode {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .map(|x| x.as_str().ok_or("pooling_mode: expected strings"))
                .collect::<std::result::Result<_, _>>()?,
            _ => return Err("pooling_mode: expected a string or a list of strings".into()),
        };
        let modes = names
            .iter()
            .map(|n| n.parse::<PoolingMode>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("pooling_mode: {e}"))?;
        return PoolingSpec::new(modes).ok_or_else(|| "pooling_mode: empty list".into());
    }
    // Classic flags, in the order the library concatenates them.
    const LEGACY: [(&str, PoolingMode); 6] = [
        ("pooling_mode_cls_token", PoolingMode::Cls),
        ("pooling_mode_max_tokens", PoolingMode::Max),
        ("pooling_mode_mean_tokens", PoolingMode::Mean),
        (
            "pooling_mode_mean_sqrt_len_tokens",
            PoolingMode::MeanSqrtLen,
        ),
        (
            "pooling_mode_weightedmean_tokens",
            PoolingMode::WeightedMean,
        ),
        ("pooling_mode_lasttoken", PoolingMode::LastToken),
    ];
    let modes: Vec<PoolingMode> = LEGACY
        .iter()
        .filter(|(key, _)| v.get(key).and_then(Value::as_bool).unwrap_or(false))
        .map(|&(_, m)| m)
        .collect();
    Ok(PoolingSpec::new(modes).unwrap_or_else(|| PoolingSpec::single(PoolingMode::Mean)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pooling_new_string_form() {
        let p = parse_pooling_config(&json!({"embedding_dimension": 32, "pooling_mode": "mean"}));
        assert_eq!(p.unwrap().modes(), &[PoolingMode::Mean]);
        let p = parse_pooling_config(&json!({"pooling_mode": ["cls", "max"]})).unwrap();
        assert_eq!(p.modes(), &[PoolingMode::Cls, PoolingMode::Max]);
        assert!(parse_pooling_config(&json!({"pooling_mode": "median"})).is_err());
    }

    #[test]
    fn pooling_classic_flags() {
        let p = parse_pooling_config(&json!({
            "word_embedding_dimension": 384,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false
        }))
        .unwrap();
        assert_eq!(p.modes(), &[PoolingMode::Mean]);
        // Several flags concatenate in the library's order: cls, max, mean, ...
        let p = parse_pooling_config(&json!({
            "pooling_mode_mean_tokens": true,
            "pooling_mode_cls_token": true
        }))
        .unwrap();
        assert_eq!(p.modes(), &[PoolingMode::Cls, PoolingMode::Mean]);
        // No flag on: the library falls back to mean.
        let p = parse_pooling_config(&json!({"pooling_mode_cls_token": false})).unwrap();
        assert_eq!(p.modes(), &[PoolingMode::Mean]);
    }

    #[test]
    fn class_names_of_every_generation() {
        assert_eq!(
            class_name("sentence_transformers.models.Transformer"),
            "Transformer"
        );
        assert_eq!(
            class_name("sentence_transformers.base.modules.transformer.Transformer"),
            "Transformer"
        );
        assert_eq!(
            class_name("sentence_transformers.sentence_transformer.modules.pooling.Pooling"),
            "Pooling"
        );
    }
}
