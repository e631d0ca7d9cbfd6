//! A BERT-family encoder (BERT, MiniLM, BGE, E5; RoBERTa / XLM-RoBERTa positions) on candle,
//! written so it can be trained: weights are variables in a [`VarMap`], dropout is real in
//! training mode and absent in evaluation mode. Weight names are PyTorch's (`vb.pp(...)` mirrors
//! `transformers.BertModel`'s module tree), so they are checkable by eye against the checkpoint.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Deserialize;

use super::error::{ModelError, Result, read_json};
use super::layers::{DropoutRng, Embedding, LayerNorm, Linear, Mode};
use super::weights::CheckedWeights;

mod backprop;
mod fused;

pub use super::transformer::EncoderInput;
pub use backprop::BertTape;

use super::transformer::{Tape, Transformer, WeightGrads};

/// The architectures this encoder runs, by `config.json`'s `model_type`.
pub const MODEL_TYPES: [&str; 3] = ["bert", "roberta", "xlm-roberta"];

/// `config.json` of a BERT-family model.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Reads and validates `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let raw: serde_json::Value = read_json(path)?;
        let model_type = raw
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if !MODEL_TYPES.contains(&model_type.as_str()) {
            let shown = if model_type.is_empty() {
                "no model_type".to_string()
            } else {
                format!("model_type `{model_type}`")
            };
            return Err(ModelError::config(
                path,
                format!(
                    "{shown} is not a BERT-family model_type ({})",
                    MODEL_TYPES.join(", ")
                ),
            ));
        }
        let config: BertConfig = serde_json::from_value(raw).map_err(|e| ModelError::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(ModelError::config(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        if let Some(kind) = &config.position_embedding_type
            && kind != "absolute"
        {
            return Err(ModelError::config(
                path,
                format!("position_embedding_type `{kind}` is not supported (only absolute)"),
            ));
        }
        HiddenAct::parse(&config.hidden_act).ok_or_else(|| {
            ModelError::config(
                path,
                format!("hidden_act `{}` is not supported", config.hidden_act),
            )
        })?;
        Ok(config)
    }

    /// RoBERTa-style models number positions from `pad_token_id + 1`.
    fn position_offset(&self) -> Option<usize> {
        match self.model_type.as_deref() {
            Some("roberta") | Some("xlm-roberta") => Some(self.pad_token_id.unwrap_or(1)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum HiddenAct {
    Gelu,
    GeluTanh,
    Relu,
    Silu,
}

impl HiddenAct {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => HiddenAct::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => HiddenAct::GeluTanh,
            "relu" => HiddenAct::Relu,
            "silu" | "swish" => HiddenAct::Silu,
            _ => return None,
        })
    }

    /// The activation of one value (the fused path's fallback for all but GELU).
    fn scalar(self, x: f32) -> f32 {
        self.value_and_grad(x).0
    }

    /// The activation of one value and its derivative there (the hand-written backward pass).
    fn value_and_grad(self, x: f32) -> (f32, f32) {
        match self {
            HiddenAct::Gelu => super::cpu::kernels::gelu_erf_and_grad(x),
            HiddenAct::GeluTanh => {
                // 0.5 x (1 + tanh(c (x + 0.044715 x³))), as torch's approximate="tanh".
                let c = (2.0f32 / std::f32::consts::PI).sqrt();
                let t = (c * (x + 0.044715 * x * x * x)).tanh();
                let dt = c * (1.0 + 3.0 * 0.044715 * x * x);
                (
                    0.5 * x * (1.0 + t),
                    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dt,
                )
            }
            HiddenAct::Relu => {
                if x > 0.0 {
                    (x, 1.0)
                } else {
                    (0.0, 0.0)
                }
            }
            HiddenAct::Silu => {
                let s = 1.0 / (1.0 + (-x).exp());
                (x * s, s * (1.0 + x * (1.0 - s)))
            }
        }
    }

    fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            HiddenAct::Gelu => x.gelu_erf(),
            HiddenAct::GeluTanh => x.gelu(),
            HiddenAct::Relu => x.relu(),
            HiddenAct::Silu => x.silu(),
        }
    }
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    dropout: f64,
    position_offset: Option<usize>,
}

impl Embeddings {
    fn load(vb: VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        Ok(Self {
            word: Embedding::load(vb.pp("word_embeddings"), c.vocab_size, c.hidden_size)?,
            position: Embedding::load(
                vb.pp("position_embeddings"),
                c.max_position_embeddings,
                c.hidden_size,
            )?,
            token_type: Embedding::load(
                vb.pp("token_type_embeddings"),
                c.type_vocab_size,
                c.hidden_size,
            )?,
            norm: LayerNorm::load(vb.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            dropout: c.hidden_dropout_prob,
            position_offset: c.position_offset(),
        })
    }

    /// Fails when `seq` tokens need more positions than the table has.
    fn check_positions(&self, seq: usize) -> candle_core::Result<()> {
        let needed = self.position_offset.map_or(seq, |pad| pad + 1 + seq);
        if needed > self.position.rows() {
            candle_core::bail!(
                "sequence of {seq} tokens needs {needed} positions, the model has {}",
                self.position.rows()
            );
        }
        Ok(())
    }

    fn forward(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor> {
        let (b, seq) = input.ids.dims2()?;
        let positions = self.position_ids(&input.lengths, b, seq, input.ids.device())?;
        self.check_positions(seq)?;
        let x = self.word.forward(&input.ids, mode)?;
        let x = (x + self.position.forward(&positions, mode)?)?;
        let x = (x + self.token_type.forward(&input.type_ids, mode)?)?;
        let x = self.norm.forward(&x, mode)?;
        mode.dropout(&x, self.dropout)
    }

    fn position_ids(
        &self,
        lengths: &[usize],
        b: usize,
        seq: usize,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.position_offset {
            None => Tensor::arange(0u32, seq as u32, dev)?
                .unsqueeze(0)?
                .repeat((b, 1)),
            Some(pad) => {
                // Real tokens get pad+1, pad+2, ...; padding keeps pad.
                let mut ids = vec![pad as u32; b * seq];
                for (row, &len) in lengths.iter().enumerate() {
                    for i in 0..len.min(seq) {
                        ids[row * seq + i] = (pad + 1 + i) as u32;
                    }
                }
                Tensor::from_vec(ids, (b, seq), dev)
            }
        }
    }
}

struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    attn_dropout: f64,
    hidden_dropout: f64,
}

impl SelfAttention {
    fn load(vb: VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        let s = vb.pp("self");
        let o = vb.pp("output");
        Ok(Self {
            query: Linear::load(s.pp("query"), h, h, true)?,
            key: Linear::load(s.pp("key"), h, h, true)?,
            value: Linear::load(s.pp("value"), h, h, true)?,
            output: Linear::load(o.pp("dense"), h, h, true)?,
            norm: LayerNorm::load(o.pp("LayerNorm"), h, c.layer_norm_eps)?,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
            attn_dropout: c.attention_probs_dropout_prob,
            hidden_dropout: c.hidden_dropout_prob,
        })
    }

    /// `x` `[b, seq, hidden]`, `bias` `[b, 1, 1, seq]` (0 for real tokens, very negative for padding).
    fn forward(&self, x: &Tensor, bias: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let (b, seq, hidden) = x.dims3()?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, seq, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward_mode(x, mode)?)?;
        let k = split(self.key.forward_mode(x, mode)?)?;
        let v = split(self.value.forward_mode(x, mode)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = mode.softmax_last_dim(&scores)?;
        let probs = mode.dropout(&probs, self.attn_dropout)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, seq, hidden))?;
        let out = self.output.forward_mode(&ctx, mode)?;
        let out = mode.dropout(&out, self.hidden_dropout)?;
        self.norm.forward(&(out + x)?, mode)
    }
}

struct Layer {
    attention: SelfAttention,
    intermediate: Linear,
    act: HiddenAct,
    output: Linear,
    norm: LayerNorm,
    dropout: f64,
}

impl Layer {
    fn load(vb: VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        Ok(Self {
            attention: SelfAttention::load(vb.pp("attention"), c)?,
            intermediate: Linear::load(
                vb.pp("intermediate").pp("dense"),
                c.hidden_size,
                c.intermediate_size,
                true,
            )?,
            act: HiddenAct::parse(&c.hidden_act).expect("validated in BertConfig::read"),
            output: Linear::load(
                vb.pp("output").pp("dense"),
                c.intermediate_size,
                c.hidden_size,
                true,
            )?,
            norm: LayerNorm::load(
                vb.pp("output").pp("LayerNorm"),
                c.hidden_size,
                c.layer_norm_eps,
            )?,
            dropout: c.hidden_dropout_prob,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let attn = self.attention.forward(x, bias, mode)?;
        let h = self
            .act
            .forward(&self.intermediate.forward_mode(&attn, mode)?)?;
        let h = self.output.forward_mode(&h, mode)?;
        let h = mode.dropout(&h, self.dropout)?;
        self.norm.forward(&(h + attn)?, mode)
    }
}

/// The BERT encoder: token ids to contextual token vectors (`last_hidden_state`).
pub struct Bert {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    varmap: VarMap,
    /// Checkpoint names no module asked for (warned about, not fatal).
    unexpected: Vec<String>,
}

impl Bert {
    /// Loads `config.json` and the weights from `dir`, checking every weight name.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = BertConfig::read(&dir.join("config.json"))?;
        let weights = CheckedWeights::open(dir, "embeddings.word_embeddings.weight")?;
        let vb = weights.var_builder(device);
        let embeddings = Embeddings::load(vb.pp("embeddings"), &config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp("encoder").pp("layer").pp(i), &config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // The pooler is not used by sentence-transformers, but it is kept so that a saved model
        // loads in Python without "newly initialised" warnings.
        if vb.contains_tensor("pooler.dense.weight") {
            Linear::load(
                vb.pp("pooler").pp("dense"),
                config.hidden_size,
                config.hidden_size,
                true,
            )?;
        }
        let (varmap, unexpected) = weights.finish_with_unexpected(&["embeddings.position_ids"])?;
        Ok(Self {
            config,
            embeddings,
            layers,
            varmap,
            unexpected,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Training-mode forward pass on the CPU that records a [`BertTape`] for the hand-written
    /// backward pass (`None` where that path does not apply: devices other than the CPU, weights
    /// that are not contiguous float32). The returned token vectors are not part of any candle
    /// graph.
    pub fn forward_recorded_bert(
        &self,
        input: &EncoderInput,
        dropout: Option<&DropoutRng>,
    ) -> candle_core::Result<Option<(Tensor, BertTape)>> {
        if !backprop::applies(self, input) {
            return Ok(None);
        }
        backprop::forward(self, input, dropout).map(Some)
    }
}

impl Transformer for Bert {
    fn model_type(&self) -> &str {
        self.config.model_type.as_deref().unwrap_or("bert")
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn layers(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn max_tokens(&self) -> usize {
        match self.embeddings.position_offset {
            None => self.config.max_position_embeddings,
            Some(pad) => self.config.max_position_embeddings.saturating_sub(pad + 1),
        }
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn unexpected_weights(&self) -> &[String] {
        &self.unexpected
    }

    fn forward(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor> {
        if !mode.grad && mode.dropout.is_none() && fused::applies(self, input) {
            return fused::forward(self, input);
        }
        self.forward_composed(input, mode)
    }

    fn forward_composed(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor> {
        // Padding gets a bias of f32::MIN before the softmax, as transformers does.
        let bias = ((1.0 - &input.mask)? * f32::MIN as f64)?
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        let mut x = self.embeddings.forward(input, mode)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias, mode)?;
        }
        Ok(x)
    }

    fn forward_recorded(
        &self,
        input: &EncoderInput,
        dropout: Option<&DropoutRng>,
    ) -> candle_core::Result<Option<(Tensor, Tape)>> {
        Ok(self
            .forward_recorded_bert(input, dropout)?
            .map(|(t, tape)| (t, Tape(Box::new(tape)))))
    }

    fn backward(&self, tape: Tape, grad_tokens: &[f32]) -> candle_core::Result<WeightGrads> {
        let Ok(tape) = tape.0.downcast::<BertTape>() else {
            candle_core::bail!("a tape of another family");
        };
        tape.backward(self, grad_tokens)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
