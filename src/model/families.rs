//! The transformer families, by `config.json`'s `model_type`: each is a module implementing
//! [`Transformer`](super::transformer::Transformer).

use std::path::Path;

use candle_core::Device;

use super::error::{ModelError, Result, read_json};
use super::transformer::Transformer;

/// The families, by `model_type`.
pub const SUPPORTED_MODEL_TYPES: [&str; 9] = [
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "mpnet",
    "t5",
    "mt5",
    "modernbert",
    "qwen3",
];

/// Loads the transformer in `dir` (`config.json` and the weights) with the family its
/// `model_type` names.
pub fn load(dir: &Path, device: &Device) -> Result<Box<dyn Transformer>> {
    let path = dir.join("config.json");
    let raw: serde_json::Value = read_json(&path)?;
    let model_type = raw
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    match model_type.as_str() {
        "bert" | "roberta" | "xlm-roberta" | "distilbert" | "mpnet" => {
            Ok(Box::new(super::bert::Bert::load(dir, device)?))
        }
        "t5" | "mt5" => Ok(Box::new(super::t5::T5Encoder::load(dir, device)?)),
        "modernbert" => Ok(Box::new(super::modernbert::ModernBert::load(dir, device)?)),
        "qwen3" => Ok(Box::new(super::qwen3::Qwen3::load(dir, device)?)),
        other => {
            let shown = if other.is_empty() {
                "no model_type".to_string()
            } else {
                format!("model_type `{other}`")
            };
            Err(ModelError::config(
                path,
                format!(
                    "{shown} is not supported (supported: {})",
                    SUPPORTED_MODEL_TYPES.join(", ")
                ),
            ))
        }
    }
}
