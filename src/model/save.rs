//! Writing a model in the classic sentence-transformers layout, readable by old and new Python
//! versions, through a temporary folder renamed into place ([`super::atomic`]).
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
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde_json::json;

use super::atomic::{Writer, write_folder_atomically};
use super::encoder::{SentenceEncoder, StageRef};
use super::error::{ModelError, Result};
use super::pooling::{PoolingMode, PoolingSpec};

/// Writes tensors as safetensors with the `{"format": "pt"}` metadata transformers expects.
pub fn write_tensors(w: &mut Writer, rel: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
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
            path: w.root().join(rel),
            message: e.to_string(),
        })?;
    w.file(rel, &bytes)
}

pub fn pooling_config(
    spec: &PoolingSpec,
    hidden: usize,
    include_prompt: bool,
) -> serde_json::Value {
    if spec.has_ours() {
        // A mode of ours: the newer `pooling_mode` list, which we read back (Python refuses it).
        let modes: Vec<&str> = spec.modes().iter().map(|m| m.name()).collect();
        return json!({
            "word_embedding_dimension": hidden,
            "pooling_mode": modes,
            "include_prompt": include_prompt
        });
    }
    let on = |m: PoolingMode| spec.modes().contains(&m);
    json!({
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": on(PoolingMode::Cls),
        "pooling_mode_mean_tokens": on(PoolingMode::Mean),
        "pooling_mode_max_tokens": on(PoolingMode::Max),
        "pooling_mode_mean_sqrt_len_tokens": on(PoolingMode::MeanSqrtLen),
        "pooling_mode_weightedmean_tokens": on(PoolingMode::WeightedMean),
        "pooling_mode_lasttoken": on(PoolingMode::LastToken),
        "include_prompt": include_prompt
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
    write_tensors(
        w,
        "model.safetensors",
        &varmap_tensors(encoder.transformer().varmap()),
    )?;
    // config.json and the tokenizer files, as read when the model was loaded (the folder it came
    // from may be gone by now: a checkpoint pruned while a resumed run trains).
    for (name, bytes) in encoder.transformer_files() {
        w.file(name, bytes)?;
    }
    w.json(
        "sentence_bert_config.json",
        &json!({ "max_seq_length": info.max_seq_length, "do_lower_case": info.do_lower_case }),
    )?;
    w.json(
        "config_sentence_transformers.json",
        &json!({
            "__version__": { "sbert_tui": env!("CARGO_PKG_VERSION") },
            "prompts": info.prompts,
            "default_prompt_name": info.default_prompt_name,
            "similarity_fn_name": info.similarity.name()
        }),
    )?;
    for (i, stage) in encoder.stages().into_iter().enumerate() {
        let idx = i + 1;
        let (class, dir) = match stage {
            StageRef::Pooling(spec) => {
                let dir = format!("{idx}_Pooling");
                w.json(
                    &format!("{dir}/config.json"),
                    &pooling_config(spec, info.hidden_size, info.include_prompt),
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
                write_tensors(
                    w,
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
