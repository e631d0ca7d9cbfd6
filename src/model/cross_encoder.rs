//! A sentence-transformers `CrossEncoder`: a transformer that reads both texts of a pair together
//! and a classification head over its first token, scoring the pair as
//! `CrossEncoder.predict` does.
//!
//! The folder is what `CrossEncoder.save` writes. Since sentence-transformers 6 (checked against
//! 6.2): `config.json` with `architectures` (`BertForSequenceClassification`, ...) and
//! `id2label` (one entry per label), `model.safetensors` with the encoder under its prefix
//! (`bert.*`) and the head's weights (`bert.pooler.*`, `classifier.*`), the tokenizer files,
//! `modules.json` with one `Transformer` module, `sentence_bert_config.json` with
//! `transformer_task: sequence-classification`, and `config_sentence_transformers.json` with
//! `model_type: CrossEncoder` and `activation_fn` (`torch.nn.modules.activation.Sigmoid`).
//! Folders of versions 4 and 5 (no `modules.json`) keep the activation in `config.json`'s
//! `sentence_transformers` block; older ones in `sbert_ce_default_activation_function`. Without
//! any, the score is `Sigmoid` of the logit for one label and the logits themselves for several.
//!
//! The encoder is the family's [`Transformer`] (`families.rs`), its weights checked by name; the
//! head's weights are checked the same way. Pairs are tokenized with the model's pair template
//! and cut at the model's max length by `longest_first`, as `transformers` does.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

use super::device::{DeviceChoice, describe};
use super::error::{ModelError, Result, read_json};
use super::families;
use super::folder::{ModuleEntry, read_st_config, read_text_settings};
use super::layers::{Linear, Mode};
use super::pooling::mask_from_lengths;
use super::tokenize::{TextTokenizer, Tokenized};
use super::transformer::{EncoderInput, Transformer};
use super::weights::CheckedWeights;

/// The `architectures` a cross-encoder folder may name.
pub const SUPPORTED_ARCHITECTURES: [&str; 5] = [
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "DistilBertForSequenceClassification",
    "MPNetForSequenceClassification",
];

/// The batch size of [`CrossEncoder::predict`] (Python's default).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// What `predict` applies to the logits (`activation_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreActivation {
    Identity,
    Sigmoid,
    Tanh,
    Relu,
    /// Over the labels of each pair.
    Softmax,
}

impl ScoreActivation {
    /// The torch class name (`Sigmoid`).
    pub fn name(self) -> &'static str {
        match self {
            ScoreActivation::Identity => "Identity",
            ScoreActivation::Sigmoid => "Sigmoid",
            ScoreActivation::Tanh => "Tanh",
            ScoreActivation::Relu => "ReLU",
            ScoreActivation::Softmax => "Softmax",
        }
    }

    /// From a class path as the library saves it (`torch.nn.modules.activation.Sigmoid`,
    /// `torch.nn.modules.linear.Identity`, or the short `torch.nn.Sigmoid`).
    pub fn from_torch_path(path: &str) -> Option<Self> {
        if !path.starts_with("torch.") {
            return None;
        }
        Some(match path.rsplit('.').next()? {
            "Identity" => ScoreActivation::Identity,
            "Sigmoid" => ScoreActivation::Sigmoid,
            "Tanh" => ScoreActivation::Tanh,
            "ReLU" => ScoreActivation::Relu,
            "Softmax" => ScoreActivation::Softmax,
            _ => return None,
        })
    }

    /// Applies it to the logits of one pair.
    pub fn apply(self, logits: &mut [f32]) {
        match self {
            ScoreActivation::Identity => {}
            ScoreActivation::Sigmoid => logits
                .iter_mut()
                .for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            ScoreActivation::Tanh => logits.iter_mut().for_each(|x| *x = x.tanh()),
            ScoreActivation::Relu => logits.iter_mut().for_each(|x| *x = x.max(0.0)),
            ScoreActivation::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for x in logits.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                logits.iter_mut().for_each(|x| *x /= sum);
            }
        }
    }
}

/// What a loaded cross-encoder is, for status lines and reports.
#[derive(Debug, Clone)]
pub struct CrossEncoderInfo {
    pub folder: PathBuf,
    /// Folder of the Transformer module (config, weights, tokenizer), usually `folder` itself.
    pub transformer_dir: PathBuf,
    /// `config.json`'s `architectures[0]`.
    pub architecture: String,
    pub model_type: String,
    pub hidden_size: usize,
    pub layers: usize,
    /// Scores per pair.
    pub num_labels: usize,
    /// `id2label`, in label order.
    pub labels: Vec<String>,
    pub activation: ScoreActivation,
    /// Tokens per pair, special tokens included.
    pub max_seq_length: usize,
    pub do_lower_case: bool,
    pub device: String,
    /// Names in the checkpoint that neither the encoder nor the head uses.
    pub unexpected_weights: Vec<String>,
}

impl CrossEncoderInfo {
    /// The folder's last component, for display.
    pub fn name(&self) -> String {
        self.folder.file_name().map_or_else(
            || self.folder.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// The classification head over the first token's vector.
enum Head {
    /// BERT: the pooler (dense + tanh), then `classifier`.
    Pooler { dense: Linear, classifier: Linear },
    /// RoBERTa, XLM-RoBERTa, MPNet: `classifier.dense` + tanh, then `classifier.out_proj`.
    Dense { dense: Linear, out_proj: Linear },
    /// DistilBERT: `pre_classifier` + ReLU, then `classifier`.
    PreClassifier { pre: Linear, classifier: Linear },
}

impl Head {
    fn load(
        architecture: &str,
        vb: VarBuilder,
        hidden: usize,
        labels: usize,
    ) -> candle_core::Result<Self> {
        Ok(match architecture {
            "BertForSequenceClassification" => Head::Pooler {
                dense: Linear::load(vb.pp("pooler").pp("dense"), hidden, hidden, true)?,
                classifier: Linear::load(vb.pp("classifier"), hidden, labels, true)?,
            },
            "DistilBertForSequenceClassification" => Head::PreClassifier {
                pre: Linear::load(vb.pp("pre_classifier"), hidden, hidden, true)?,
                classifier: Linear::load(vb.pp("classifier"), hidden, labels, true)?,
            },
            _ => Head::Dense {
                dense: Linear::load(vb.pp("classifier").pp("dense"), hidden, hidden, true)?,
                out_proj: Linear::load(vb.pp("classifier").pp("out_proj"), hidden, labels, true)?,
            },
        })
    }

    /// `[b, hidden]` first-token vectors to `[b, labels]` logits.
    fn forward(&self, first: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Head::Pooler { dense, classifier } => {
                classifier.forward(&dense.forward(first, false)?.tanh()?, false)
            }
            Head::Dense { dense, out_proj } => {
                out_proj.forward(&dense.forward(first, false)?.tanh()?, false)
            }
            Head::PreClassifier { pre, classifier } => {
                classifier.forward(&pre.forward(first, false)?.relu()?, false)
            }
        }
    }
}

/// A cross-encoder that scores pairs exactly as `CrossEncoder.predict` does.
pub struct CrossEncoder {
    info: CrossEncoderInfo,
    tokenizer: TextTokenizer,
    transformer: Box<dyn Transformer>,
    head: Head,
    /// The model reads token types (BERT); the others get zeros, as their tokenizers give
    /// Python no `token_type_ids`.
    token_types: bool,
    device: Device,
}

impl CrossEncoder {
    /// Loads a folder written by sentence-transformers' `CrossEncoder.save` (or a plain Hugging
    /// Face `*ForSequenceClassification` folder).
    pub fn load(folder: &Path, device: DeviceChoice) -> Result<Self> {
        if !folder.exists() {
            return Err(ModelError::MissingFolder(folder.to_path_buf()));
        }
        if !folder.is_dir() {
            return Err(ModelError::NotAFolder(folder.to_path_buf()));
        }
        let transformer_dir = transformer_dir(folder)?;
        let config_path = transformer_dir.join("config.json");
        if !config_path.is_file() {
            return Err(ModelError::MissingFile {
                folder: transformer_dir.clone(),
                what: "config.json (the transformer's configuration)".into(),
            });
        }
        let config: Value = read_json(&config_path)?;
        let architecture = architecture(&config, &config_path)?;
        let labels = labels(&config);

        let st_path = folder.join("config_sentence_transformers.json");
        let st_config = read_st_config(&st_path)?;
        if let Some(name) = &st_config.default_prompt_name
            && st_config.prompts.get(name).is_some_and(|p| !p.is_empty())
        {
            return Err(ModelError::config(
                &st_path,
                format!(
                    "default_prompt_name `{name}`: prompts are not supported for a cross-encoder"
                ),
            ));
        }
        let activation = activation(&st_path, &config, &config_path, labels.len())?;

        let device = device.open()?;
        let transformer = families::load(&transformer_dir, &device)?;
        let hidden = transformer.hidden_size();
        let weights = CheckedWeights::open(&transformer_dir, "embeddings.word_embeddings.weight")?;
        let head = Head::load(
            &architecture,
            weights.var_builder(&device),
            hidden,
            labels.len(),
        )?;
        let (_, head_unused) = weights.finish_with_unexpected(&["embeddings.position_ids"])?;
        // What neither part asked for.
        let unexpected_weights = transformer
            .unexpected_weights()
            .iter()
            .filter(|n| head_unused.contains(n))
            .cloned()
            .collect();

        let text = read_text_settings(&transformer_dir)?;
        let max_seq_length = text.max_seq_length.min(transformer.max_tokens());
        if max_seq_length < 4 {
            return Err(ModelError::Invalid(format!(
                "max_seq_length {max_seq_length} leaves no room for a pair of texts"
            )));
        }
        let tokenizer = TextTokenizer::load(&transformer_dir, max_seq_length, text.do_lower_case)?;
        let info = CrossEncoderInfo {
            folder: folder.to_path_buf(),
            transformer_dir,
            architecture,
            model_type: transformer.model_type().to_string(),
            hidden_size: hidden,
            layers: transformer.layers(),
            num_labels: labels.len(),
            labels,
            activation,
            max_seq_length,
            do_lower_case: text.do_lower_case,
            device: describe(&device),
            unexpected_weights,
        };
        Ok(Self {
            token_types: info.model_type == "bert",
            info,
            tokenizer,
            transformer,
            head,
            device,
        })
    }

    pub fn info(&self) -> &CrossEncoderInfo {
        &self.info
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The pairs as the model reads them: one input each, cut at `max_seq_length`.
    pub fn tokenize_pairs<A: AsRef<str>, B: AsRef<str>>(
        &self,
        pairs: &[(A, B)],
    ) -> Result<Vec<Tokenized>> {
        self.tokenizer.encode_pairs(pairs)
    }

    /// The scores of each pair, as `CrossEncoder.predict(pairs)`: one row per pair with one value
    /// per label, after the model's activation (batches of [`DEFAULT_BATCH_SIZE`]).
    pub fn predict<A: AsRef<str>, B: AsRef<str>>(&self, pairs: &[(A, B)]) -> Result<Vec<Vec<f32>>> {
        self.predict_with(pairs, DEFAULT_BATCH_SIZE, &mut |_, _| {})
    }

    /// [`CrossEncoder::predict`] in batches of `batch_size`, calling `progress(done, total)` after
    /// each batch.
    pub fn predict_with<A: AsRef<str>, B: AsRef<str>>(
        &self,
        pairs: &[(A, B)],
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let mut scores = self.logits_with(pairs, batch_size, progress)?;
        for row in &mut scores {
            self.info.activation.apply(row);
        }
        Ok(scores)
    }

    /// The logits of each pair (no activation: `predict(..., activation_fn=Identity())`).
    pub fn logits_with<A: AsRef<str>, B: AsRef<str>>(
        &self,
        pairs: &[(A, B)],
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let tokenized = self.tokenize_pairs(pairs)?;
        self.logits_tokenized(&tokenized, batch_size, progress)
    }

    /// The logits of pairs tokenized already (by [`CrossEncoder::tokenize_pairs`]), in batches
    /// sorted by length (less padding), returned in input order.
    pub fn logits_tokenized(
        &self,
        tokenized: &[Tokenized],
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        super::tokenize::in_length_order(tokenized, batch_size, progress, |items| {
            let tokens = self.transformer.forward(&self.batch(items)?, Mode::EVAL)?;
            let first = tokens.narrow(1, 0, 1)?.squeeze(1)?;
            Ok(self
                .head
                .forward(&first)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?)
        })
    }

    /// Pads tokenized pairs into one batch (right padding; token types kept where the model
    /// reads them).
    fn batch(&self, items: &[&Tokenized]) -> Result<EncoderInput> {
        let seq = items.iter().map(|t| t.ids.len()).max().unwrap_or(0).max(1);
        let b = items.len();
        let mut ids = vec![self.tokenizer.pad_id(); b * seq];
        let mut type_ids = vec![0u32; b * seq];
        let mut lengths = Vec::with_capacity(b);
        for (row, t) in items.iter().enumerate() {
            ids[row * seq..row * seq + t.ids.len()].copy_from_slice(&t.ids);
            if self.token_types {
                type_ids[row * seq..row * seq + t.type_ids.len()].copy_from_slice(&t.type_ids);
            }
            lengths.push(t.ids.len());
        }
        Ok(EncoderInput {
            ids: Tensor::from_vec(ids, (b, seq), &self.device)?,
            type_ids: Tensor::from_vec(type_ids, (b, seq), &self.device)?,
            mask: mask_from_lengths(&lengths, seq, &self.device)?,
            lengths,
            prompt_lens: vec![0; b],
        })
    }
}

/// The Transformer module's folder: the one `modules.json` names (a cross-encoder has no other
/// module), or the folder itself without `modules.json`.
fn transformer_dir(folder: &Path) -> Result<PathBuf> {
    let modules_path = folder.join("modules.json");
    if !modules_path.is_file() {
        return Ok(folder.to_path_buf());
    }
    let entries: Vec<ModuleEntry> = read_json(&modules_path)?;
    let mut dir = None;
    for (i, entry) in entries.iter().enumerate() {
        let class = entry.kind.rsplit('.').next().unwrap_or(&entry.kind);
        if class != "Transformer"
            || !entry.kind.starts_with("sentence_transformers.")
            || dir.is_some()
        {
            return Err(ModelError::config(
                &modules_path,
                format!(
                    "entry {i}: module `{}` is not supported in a cross-encoder (supported: one \
                     Transformer module with a classification head)",
                    entry.kind
                ),
            ));
        }
        dir = Some(folder.join(&entry.path));
    }
    let dir = dir.ok_or_else(|| ModelError::config(&modules_path, "no Transformer module"))?;
    // A generative reranker (`text-generation` with LogitScore) has a Transformer module too.
    let sbert_path = dir.join("sentence_bert_config.json");
    if sbert_path.is_file() {
        let sbert: Value = read_json(&sbert_path)?;
        if let Some(task) = sbert.get("transformer_task").and_then(Value::as_str)
            && task != "sequence-classification"
        {
            return Err(ModelError::config(
                &sbert_path,
                format!(
                    "transformer_task `{task}` is not supported for a cross-encoder (only sequence-classification)"
                ),
            ));
        }
    }
    Ok(dir)
}

/// `architectures[0]`, if it is one this module runs.
fn architecture(config: &Value, path: &Path) -> Result<String> {
    let Some(arch) = config
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
    else {
        return Err(ModelError::config(
            path,
            "no `architectures`: cannot tell which classification head the cross-encoder has",
        ));
    };
    if SUPPORTED_ARCHITECTURES.contains(&arch) {
        return Ok(arch.to_string());
    }
    let why = if arch.ends_with("ForSequenceClassification") {
        format!(
            "is not supported (supported: {})",
            SUPPORTED_ARCHITECTURES.join(", ")
        )
    } else {
        "has no sequence-classification head: not a cross-encoder (a SentenceTransformer \
         folder loads as a model instead)"
            .to_string()
    };
    Err(ModelError::config(
        path,
        format!("architecture `{arch}` {why}"),
    ))
}

/// The label names in order: `id2label`, else `num_labels` labels `LABEL_i` (2 without either,
/// as `transformers`).
fn labels(config: &Value) -> Vec<String> {
    if let Some(map) = config.get("id2label").and_then(Value::as_object)
        && !map.is_empty()
    {
        let mut pairs: Vec<(usize, String)> = map
            .iter()
            .map(|(k, v)| {
                let name = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                (k.parse().unwrap_or(usize::MAX), name)
            })
            .collect();
        pairs.sort();
        return pairs.into_iter().map(|(_, n)| n).collect();
    }
    let n = config
        .get("num_labels")
        .and_then(Value::as_u64)
        .map_or(2, |n| n as usize);
    (0..n).map(|i| format!("LABEL_{i}")).collect()
}

/// The activation `CrossEncoder` loads with: `config_sentence_transformers.json`'s
/// `activation_fn`, else `config.json`'s `sentence_transformers.activation_fn`, else its
/// `sbert_ce_default_activation_function`, else Sigmoid for one label and Identity for several.
/// A path outside `torch.` is skipped, as Python skips it without `trust_remote_code`.
fn activation(
    st_path: &Path,
    config: &Value,
    config_path: &Path,
    labels: usize,
) -> Result<ScoreActivation> {
    let parse = |path: &Path, name: &str| -> Result<Option<ScoreActivation>> {
        if !name.starts_with("torch.") {
            return Ok(None);
        }
        ScoreActivation::from_torch_path(name).map(Some).ok_or_else(|| {
            ModelError::config(
                path,
                format!(
                    "activation_fn `{name}` is not supported (supported: Identity, Sigmoid, Tanh, \
                     ReLU, Softmax)"
                ),
            )
        })
    };
    if st_path.is_file() {
        let st: Value = read_json(st_path)?;
        if let Some(name) = st.get("activation_fn").and_then(Value::as_str)
            && let Some(a) = parse(st_path, name)?
        {
            return Ok(a);
        }
    }
    let legacy = match config
        .get("sentence_transformers")
        .and_then(|b| b.get("activation_fn"))
    {
        Some(v) => v.as_str(),
        None => config
            .get("sbert_ce_default_activation_function")
            .and_then(Value::as_str),
    };
    if let Some(name) = legacy
        && let Some(a) = parse(config_path, name)?
    {
        return Ok(a);
    }
    Ok(if labels == 1 {
        ScoreActivation::Sigmoid
    } else {
        ScoreActivation::Identity
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_by_torch_path() {
        let a = ScoreActivation::from_torch_path;
        assert_eq!(
            a("torch.nn.modules.activation.Sigmoid"),
            Some(ScoreActivation::Sigmoid)
        );
        assert_eq!(
            a("torch.nn.modules.linear.Identity"),
            Some(ScoreActivation::Identity)
        );
        assert_eq!(a("torch.nn.Tanh"), Some(ScoreActivation::Tanh));
        assert_eq!(a("torch.nn.GELU"), None);
        assert_eq!(a("my_module.Sigmoid"), None);
        let mut v = [0.0, 2.0f32.ln()];
        ScoreActivation::Softmax.apply(&mut v);
        assert!((v[0] - 1.0 / 3.0).abs() < 1e-6 && (v[1] - 2.0 / 3.0).abs() < 1e-6);
        let mut v = [0.0f32];
        ScoreActivation::Sigmoid.apply(&mut v);
        assert_eq!(v, [0.5]);
    }

    #[test]
    fn activation_precedence_follows_the_library() {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("config_sentence_transformers.json");
        let cfg = dir.path().join("config.json");
        let none = serde_json::json!({});
        assert_eq!(
            activation(&st, &none, &cfg, 1).unwrap(),
            ScoreActivation::Sigmoid
        );
        assert_eq!(
            activation(&st, &none, &cfg, 3).unwrap(),
            ScoreActivation::Identity
        );
        let old = serde_json::json!({"sbert_ce_default_activation_function": "torch.nn.modules.activation.Tanh"});
        assert_eq!(
            activation(&st, &old, &cfg, 1).unwrap(),
            ScoreActivation::Tanh
        );
        let block = serde_json::json!({
            "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"},
            "sbert_ce_default_activation_function": "torch.nn.modules.activation.Tanh"
        });
        assert_eq!(
            activation(&st, &block, &cfg, 1).unwrap(),
            ScoreActivation::Identity
        );
        // An untrusted path is skipped: the default applies.
        let custom = serde_json::json!({"sentence_transformers": {"activation_fn": "mine.Act"}});
        assert_eq!(
            activation(&st, &custom, &cfg, 1).unwrap(),
            ScoreActivation::Sigmoid
        );
        std::fs::write(
            &st,
            r#"{"activation_fn": "torch.nn.modules.activation.ReLU"}"#,
        )
        .unwrap();
        assert_eq!(
            activation(&st, &block, &cfg, 1).unwrap(),
            ScoreActivation::Relu
        );
        std::fs::write(
            &st,
            r#"{"activation_fn": "torch.nn.modules.activation.GELU"}"#,
        )
        .unwrap();
        let err = activation(&st, &block, &cfg, 1).unwrap_err().to_string();
        assert!(
            err.contains("GELU") && err.contains("config_sentence_transformers.json"),
            "{err}"
        );
    }

    #[test]
    fn labels_from_the_config() {
        let l = labels(&serde_json::json!({"id2label": {"1": "b", "0": "a", "2": "c"}}));
        assert_eq!(l, ["a", "b", "c"]);
        assert_eq!(labels(&serde_json::json!({"num_labels": 1})), ["LABEL_0"]);
        assert_eq!(labels(&serde_json::json!({})).len(), 2);
    }
}
