//! Writing a model in the classic sentence-transformers layout, readable by old and new Python
//! versions, through a temporary folder renamed into place.
//!
//! ```text
//! modules.json                      sentence_transformers.models.{Transformer,Pooling,Dense,Normalize}
//! config.json, model.safetensors    the transformer (PyTorch weight names)
//! tokenizer.json, ...               copied from the source model
//! sentence_bert_config.json         max_seq_length, do_lower_case
//! config_sentence_transformers.json
//! 1_Pooling/config.json             classic pooling_mode_*_tokens flags
//! 2_Dense/{config.json,model.safetensors}   when present
//! 3_Normalize/                      when present
//! README.md                         the model card, when given
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde_json::json;

use super::encoder::{SentenceEncoder, StageRef};
use super::error::{ModelError, Result};
use super::pooling::{PoolingMode, PoolingSpec};

/// Tokenizer files copied when present.
const TOKENIZER_FILES: [&str; 9] = [
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

/// Where files go while a folder is being written; lets tests fail a write midway.
pub struct Writer {
    root: PathBuf,
    written: usize,
    /// Test hook: fail when this many files have been written.
    pub fail_after: Option<usize>,
}

impl Writer {
    fn new(root: PathBuf) -> Self {
        Self {
            root,
            written: 0,
            fail_after: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `bytes` to `rel` (creating folders) and syncs it to disk.
    pub fn file(&mut self, rel: &str, bytes: &[u8]) -> Result<()> {
        if self.fail_after == Some(self.written) {
            return Err(ModelError::io(
                self.root.join(rel),
                std::io::Error::other("simulated failure while saving"),
            ));
        }
        let path = self.root.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        }
        let mut f = fs::File::create(&path).map_err(|e| ModelError::io(&path, e))?;
        f.write_all(bytes).map_err(|e| ModelError::io(&path, e))?;
        f.sync_all().map_err(|e| ModelError::io(&path, e))?;
        self.written += 1;
        Ok(())
    }

    pub fn json(&mut self, rel: &str, value: &serde_json::Value) -> Result<()> {
        let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
        text.push('\n');
        self.file(rel, text.as_bytes())
    }

    pub fn dir(&mut self, rel: &str) -> Result<()> {
        let path = self.root.join(rel);
        fs::create_dir_all(&path).map_err(|e| ModelError::io(&path, e))
    }

    /// Writes tensors as safetensors with the `{"format": "pt"}` metadata transformers expects.
    pub fn tensors(&mut self, rel: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let cpu: Vec<(String, Tensor)> = {
            let mut v = tensors
                .iter()
                .map(|(k, t)| {
                    Ok((
                        k.clone(),
                        t.to_device(&Device::Cpu)?
                            .to_dtype(DType::F32)?
                            .contiguous()?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = safetensors::serialize(cpu.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
            .map_err(|e| ModelError::Weights {
                path: self.root.join(rel),
                message: e.to_string(),
            })?;
        self.file(rel, &bytes)
    }
}

/// Writes a folder through `<parent>/.<name>.tmp-<pid>` and renames it into place. An existing
/// folder is kept until the new one is complete (then replaced); entries of the old folder named
/// in `carry` (for example `checkpoints`) move into the new one. On any error the temporary
/// folder is removed and the old folder is left as it was.
pub fn write_folder_atomically(
    target: &Path,
    carry: &[&str],
    fail_after: Option<usize>,
    fill: impl FnOnce(&mut Writer) -> Result<()>,
) -> Result<()> {
    let name = target
        .file_name()
        .ok_or_else(|| ModelError::Invalid(format!("`{}` is not a folder name", target.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| ModelError::io(&parent, e))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    let mut writer = Writer::new(tmp.clone());
    writer.fail_after = fail_after;
    if let Err(e) = fill(&mut writer) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let swap = || -> std::io::Result<()> {
        if target.exists() {
            for c in carry {
                let from = target.join(c);
                if from.exists() {
                    fs::rename(&from, tmp.join(c))?;
                }
            }
            fs::rename(target, &old)?;
            fs::rename(&tmp, target)?;
            fs::remove_dir_all(&old)?;
        } else {
            fs::rename(&tmp, target)?;
        }
        Ok(())
    };
    swap().map_err(|e| ModelError::io(target, e))
}

fn pooling_config(spec: &PoolingSpec, hidden: usize) -> serde_json::Value {
    let on = |m: PoolingMode| spec.modes().contains(&m);
    json!({
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": on(PoolingMode::Cls),
        "pooling_mode_mean_tokens": on(PoolingMode::Mean),
        "pooling_mode_max_tokens": on(PoolingMode::Max),
        "pooling_mode_mean_sqrt_len_tokens": on(PoolingMode::MeanSqrtLen),
        "pooling_mode_weightedmean_tokens": on(PoolingMode::WeightedMean),
        "pooling_mode_lasttoken": on(PoolingMode::LastToken),
        "include_prompt": true
    })
}

fn varmap_tensors(map: &VarMap) -> HashMap<String, Tensor> {
    map.data()
        .lock()
        .expect("varmap poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// Writes every file of `encoder` into `w` (the classic layout), plus `card` as README.md.
pub fn write_model(encoder: &SentenceEncoder, w: &mut Writer, card: Option<&str>) -> Result<()> {
    let info = encoder.info();
    let mut modules = vec![json!({
        "idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"
    })];
    w.tensors(
        "model.safetensors",
        &varmap_tensors(encoder.transformer().varmap()),
    )?;
    let src = &info.transformer_dir;
    let config = fs::read(src.join("config.json"))
        .map_err(|e| ModelError::io(src.join("config.json"), e))?;
    w.file("config.json", &config)?;
    for f in TOKENIZER_FILES {
        let p = src.join(f);
        if p.is_file() {
            let bytes = fs::read(&p).map_err(|e| ModelError::io(&p, e))?;
            w.file(f, &bytes)?;
        }
    }
    w.json(
        "sentence_bert_config.json",
        &json!({ "max_seq_length": info.max_seq_length, "do_lower_case": info.do_lower_case }),
    )?;
    w.json(
        "config_sentence_transformers.json",
        &json!({
            "__version__": { "sbert_tui": env!("CARGO_PKG_VERSION") },
            "prompts": {},
            "default_prompt_name": null,
            "similarity_fn_name": "cosine"
        }),
    )?;
    for (i, stage) in encoder.stages().into_iter().enumerate() {
        let idx = i + 1;
        let (class, dir) = match stage {
            StageRef::Pooling(spec) => {
                let dir = format!("{idx}_Pooling");
                w.json(
                    &format!("{dir}/config.json"),
                    &pooling_config(spec, info.hidden_size),
                )?;
                ("Pooling", dir)
            }
            StageRef::Dense(d) => {
                let dir = format!("{idx}_Dense");
                let c = d.config();
                w.json(
                    &format!("{dir}/config.json"),
                    &json!({
                        "in_features": c.in_features,
                        "out_features": c.out_features,
                        "bias": c.bias,
                        "activation_function": d.activation().torch_name()
                    }),
                )?;
                w.tensors(
                    &format!("{dir}/model.safetensors"),
                    &varmap_tensors(d.varmap()),
                )?;
                ("Dense", dir)
            }
            StageRef::Normalize => {
                let dir = format!("{idx}_Normalize");
                w.dir(&dir)?;
                ("Normalize", dir)
            }
        };
        modules.push(json!({
            "idx": idx, "name": idx.to_string(), "path": dir,
            "type": format!("sentence_transformers.models.{class}")
        }));
    }
    w.json("modules.json", &serde_json::Value::Array(modules))?;
    if let Some(card) = card {
        w.file("README.md", card.as_bytes())?;
    }
    Ok(())
}

/// Saves `encoder` to `target`, atomically.
pub fn save(encoder: &SentenceEncoder, target: &Path, card: Option<&str>) -> Result<()> {
    write_folder_atomically(target, &[], None, |w| write_model(encoder, w, card))
}
