//! The BERT family of encoders on candle: BERT itself (MiniLM, BGE, E5, ...), RoBERTa and
//! XLM-RoBERTa (positions offset by the padding index), DistilBERT (no token types, its own
//! weight names) and MPNet (RoBERTa positions, no token types, and a relative position bias in
//! every layer's attention): all post-LN layers of self-attention and a feed-forward block.
//! Written so it can be trained: weights are variables in a [`VarMap`], dropout is real in
//! training mode and absent in evaluation mode. Weight names are PyTorch's (`vb.pp(...)` mirrors
//! each `transformers` model's module tree), so they are checkable by eye against the checkpoint
//! and a saved model loads in Python.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Deserialize;

use super::error::{ModelError, Result, read_json};
use super::layers::{DropoutRng, Embedding, LayerNorm, Linear, Mode, relative_position_bucket};
use super::weights::CheckedWeights;

mod backprop;
mod fused;

pub use super::transformer::EncoderInput;
pub use backprop::BertTape;

use super::transformer::{Tape, Transformer, WeightGrads};

/// The architectures this encoder runs, by `config.json`'s `model_type`.
pub const MODEL_TYPES: [&str; 5] = ["bert", "roberta", "xlm-roberta", "distilbert", "mpnet"];

/// Which member of the family: how its weights are named and what its layers add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Bert,
    DistilBert,
    MpNet,
}

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
    /// MPNet: buckets of the relative position bias.
    #[serde(default)]
    pub relative_attention_num_buckets: Option<usize>,
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
        let raw = match model_type.as_str() {
            "distilbert" => distilbert_as_bert(raw).map_err(|m| ModelError::config(path, m))?,
            "mpnet" => {
                let mut raw = raw;
                raw["type_vocab_size"] = 0.into(); // no token types
                raw
            }
            _ => raw,
        };
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

    pub fn variant(&self) -> Variant {
        match self.model_type.as_deref() {
            Some("distilbert") => Variant::DistilBert,
            Some("mpnet") => Variant::MpNet,
            _ => Variant::Bert,
        }
    }

    /// RoBERTa-style models (and MPNet) number positions from `pad_token_id + 1`.
    fn position_offset(&self) -> Option<usize> {
        match self.model_type.as_deref() {
            Some("roberta") | Some("xlm-roberta") | Some("mpnet") => {
                Some(self.pad_token_id.unwrap_or(1))
            }
            _ => None,
        }
    }
}

/// DistilBERT's `config.json` under BERT's names (`dim` is `hidden_size`, ...). Its layer norms
/// use 1e-12, fixed in `transformers`; it has no token types.
fn distilbert_as_bert(raw: serde_json::Value) -> std::result::Result<serde_json::Value, String> {
    if raw.get("sinusoidal_pos_embds").and_then(|v| v.as_bool()) == Some(true) {
        return Err("sinusoidal_pos_embds: fixed sinusoidal positions are not supported".into());
    }
    let get = |k: &str| raw.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let mut out = serde_json::json!({
        "model_type": "distilbert",
        "vocab_size": get("vocab_size"),
        "hidden_size": get("dim"),
        "num_hidden_layers": get("n_layers"),
        "num_attention_heads": get("n_heads"),
        "intermediate_size": get("hidden_dim"),
        "max_position_embeddings": get("max_position_embeddings"),
        "type_vocab_size": 0,
        "layer_norm_eps": 1e-12,
    });
    if let Some(a) = raw.get("activation") {
        out["hidden_act"] = a.clone();
    }
    if let Some(d) = raw.get("dropout") {
        out["hidden_dropout_prob"] = d.clone();
    }
    if let Some(d) = raw.get("attention_dropout") {
        out["attention_probs_dropout_prob"] = d.clone();
    }
    if let Some(p) = raw.get("pad_token_id") {
        out["pad_token_id"] = p.clone();
    }
    Ok(out)
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
    /// BERT's token types (absent in DistilBERT and MPNet).
    token_type: Option<Embedding>,
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
            token_type: (c.type_vocab_size > 0)
                .then(|| {
                    Embedding::load(
                        vb.pp("token_type_embeddings"),
                        c.type_vocab_size,
                        c.hidden_size,
                    )
                })
                .transpose()?,
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
        let mut x = (x + self.position.forward(&positions, mode)?)?;
        if let Some(t) = &self.token_type {
            x = (x + t.forward(&input.type_ids, mode)?)?;
        }
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

/// MPNet's relative position bias: each head adds a learned value to the score of a query and a
/// key, by the bucket of their distance (`MPNetEncoder.relative_position_bucket`: exact up to 8
/// either way, then logarithmic up to 128).
struct RelativeBias {
    /// `[buckets, heads]`.
    table: Embedding,
    buckets: usize,
}

/// The bucket of `key - query` (the relative position), as `transformers` computes it for MPNet
/// (at most 128 apart).
pub fn relative_bucket(relative: i64, num_buckets: usize) -> usize {
    relative_position_bucket(relative, num_buckets, 128)
}

impl RelativeBias {
    /// The bias of every relative position `-(span-1)..=span-1` per head, in the layout of
    /// `kernels::RelBias` (`values[head * (2 * span - 1) + (key - query + span - 1)]`), for the
    /// fused kernels.
    pub(super) fn values(&self, span: usize) -> candle_core::Result<Vec<f32>> {
        let table = self.table.weight().to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let heads = table.first().map_or(0, Vec::len);
        let width = 2 * span.max(1) - 1;
        let mut out = vec![0f32; heads * width];
        for o in 0..width {
            let bucket = relative_bucket(o as i64 - (span.max(1) as i64 - 1), self.buckets);
            for (head, v) in table[bucket].iter().enumerate() {
                out[head * width + o] = *v;
            }
        }
        Ok(out)
    }

    /// The bias of every (query, key) pair of a `seq`-token input, per head: `[1, heads, seq, seq]`.
    fn forward(&self, seq: usize, dev: &Device, mode: Mode) -> candle_core::Result<Tensor> {
        let ids: Vec<u32> = (0..seq)
            .flat_map(|i| {
                (0..seq).map(move |j| relative_bucket(j as i64 - i as i64, self.buckets) as u32)
            })
            .collect();
        let ids = Tensor::from_vec(ids, (seq, seq), dev)?;
        self.table
            .forward(&ids, mode)? // [seq, seq, heads]
            .permute((2, 0, 1))?
            .contiguous()?
            .unsqueeze(0)
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
    /// `layer` is the layer's module (the attention's weights are under it).
    fn load(layer: VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        let vb = layer.pp("attention");
        // (query, key, value, output, layer norm) under each member's names.
        let (q, k, v, o, n) = match c.variant() {
            Variant::Bert => (
                vb.pp("self").pp("query"),
                vb.pp("self").pp("key"),
                vb.pp("self").pp("value"),
                vb.pp("output").pp("dense"),
                vb.pp("output").pp("LayerNorm"),
            ),
            Variant::DistilBert => (
                vb.pp("q_lin"),
                vb.pp("k_lin"),
                vb.pp("v_lin"),
                vb.pp("out_lin"),
                layer.pp("sa_layer_norm"),
            ),
            Variant::MpNet => (
                vb.pp("attn").pp("q"),
                vb.pp("attn").pp("k"),
                vb.pp("attn").pp("v"),
                vb.pp("attn").pp("o"),
                vb.pp("LayerNorm"),
            ),
        };
        Ok(Self {
            query: Linear::load(q, h, h, true)?,
            key: Linear::load(k, h, h, true)?,
            value: Linear::load(v, h, h, true)?,
            output: Linear::load(o, h, h, true)?,
            norm: LayerNorm::load(n, h, c.layer_norm_eps)?,
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
        let (inter, out, norm) = match c.variant() {
            Variant::DistilBert => (
                vb.pp("ffn").pp("lin1"),
                vb.pp("ffn").pp("lin2"),
                vb.pp("output_layer_norm"),
            ),
            Variant::Bert | Variant::MpNet => (
                vb.pp("intermediate").pp("dense"),
                vb.pp("output").pp("dense"),
                vb.pp("output").pp("LayerNorm"),
            ),
        };
        Ok(Self {
            attention: SelfAttention::load(vb.clone(), c)?,
            intermediate: Linear::load(inter, c.hidden_size, c.intermediate_size, true)?,
            act: HiddenAct::parse(&c.hidden_act).expect("validated in BertConfig::read"),
            output: Linear::load(out, c.intermediate_size, c.hidden_size, true)?,
            norm: LayerNorm::load(norm, c.hidden_size, c.layer_norm_eps)?,
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
    /// MPNet's relative position bias, shared by every layer.
    relative: Option<RelativeBias>,
    varmap: VarMap,
    /// Checkpoint names no module asked for (warned about, not fatal).
    unexpected: Vec<String>,
    /// Inference precision of the fused CPU path.
    precision: crate::model::Precision,
    /// The linear layers prepared for their kernels (float32 packed, bf16 or int8), made at the
    /// first inference pass; never while training (see `set_trainable`), as they are copies.
    low: std::sync::OnceLock<Vec<fused::LowLayer>>,
    /// False once the weights may change: float32 inference then reads them where they lie.
    prepare: bool,
}

impl Bert {
    /// Loads `config.json` and the weights from `dir`, checking every weight name.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = BertConfig::read(&dir.join("config.json"))?;
        let weights = CheckedWeights::open(dir, "embeddings.word_embeddings.weight")?;
        let vb = weights.var_builder(device);
        let embeddings = Embeddings::load(vb.pp("embeddings"), &config)?;
        let stack = match config.variant() {
            Variant::DistilBert => vb.pp("transformer"),
            Variant::Bert | Variant::MpNet => vb.pp("encoder"),
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(stack.pp("layer").pp(i), &config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let relative = match config.variant() {
            Variant::MpNet => {
                let buckets = config.relative_attention_num_buckets.unwrap_or(32);
                Some(RelativeBias {
                    table: Embedding::load(
                        stack.pp("relative_attention_bias"),
                        buckets,
                        config.num_attention_heads,
                    )?,
                    buckets,
                })
            }
            _ => None,
        };
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
            relative,
            varmap,
            unexpected,
            precision: crate::model::Precision::F32,
            low: std::sync::OnceLock::new(),
            prepare: true,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Training-mode forward pass on the CPU that records a [`BertTape`] for the hand-written
    /// backward pass (`None` where that path does not apply: devices other than the CPU, weights
    /// that are not contiguous float32). The returned token vectors are not part of any candle
    /// graph.
    /// The hand-written training path's recorded pass (see [`Transformer::forward_recorded`]
    /// and, with `at`, [`Transformer::forward_recorded_at`]).
    pub fn forward_recorded_bert(
        &self,
        input: &EncoderInput,
        dropout: Option<&DropoutRng>,
        at: Option<&[usize]>,
    ) -> candle_core::Result<Option<(Tensor, BertTape)>> {
        if !backprop::applies(self, input) {
            return Ok(None);
        }
        backprop::forward(self, input, dropout, at).map(Some)
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

    fn set_precision(&mut self, precision: crate::model::Precision) -> Result<(), String> {
        if precision != crate::model::Precision::F32
            && !self.embeddings.word.weight().device().is_cpu()
        {
            return Err(format!("--precision {precision} runs on the CPU only"));
        }
        self.precision = precision;
        self.low = std::sync::OnceLock::new();
        Ok(())
    }

    fn set_trainable(&mut self) {
        self.precision = crate::model::Precision::F32;
        self.prepare = false;
        self.low = std::sync::OnceLock::new();
    }

    fn forward(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor> {
        if self.infers_fused(input, mode) {
            return on_first_thread(|| fused::forward(self, input));
        }
        self.forward_composed(input, mode)
    }

    fn picks_pooled_token(&self) -> bool {
        true
    }

    fn forward_at(
        &self,
        input: &EncoderInput,
        mode: Mode,
        at: &[usize],
    ) -> candle_core::Result<Option<Tensor>> {
        if self.infers_fused(input, mode) {
            return on_first_thread(|| fused::forward_at(self, input, at)).map(Some);
        }
        Ok(None)
    }

    fn forward_composed(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor> {
        // Padding gets a bias of f32::MIN before the softmax, as transformers does.
        let mut bias = ((1.0 - &input.mask)? * f32::MIN as f64)?
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        if let Some(r) = &self.relative {
            // [1, heads, seq, seq] + [b, 1, 1, seq]: MPNet adds the position bias first.
            let seq = input.ids.dim(1)?;
            bias = r
                .forward(seq, input.ids.device(), mode)?
                .broadcast_add(&bias)?;
        }
        let mut x = self.embeddings.forward(input, mode)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias, mode)?;
        }
        Ok(x)
    }

    fn cpu_paths(&self) -> &'static str {
        "inference: the fused pass, without padding; training: the hand-written backward pass"
    }

    fn forward_recorded(
        &self,
        input: &EncoderInput,
        dropout: Option<&DropoutRng>,
    ) -> candle_core::Result<Option<(Tensor, Tape)>> {
        Ok(self
            .forward_recorded_bert(input, dropout, None)?
            .map(|(t, tape)| (t, Tape(Box::new(tape)))))
    }

    fn forward_recorded_at(
        &self,
        input: &EncoderInput,
        dropout: Option<&DropoutRng>,
        at: &[usize],
    ) -> candle_core::Result<Option<(Tensor, Tape)>> {
        Ok(self
            .forward_recorded_bert(input, dropout, Some(at))?
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

impl Bert {
    /// Whether this pass takes the fused inference path (evaluation on the CPU).
    fn infers_fused(&self, input: &EncoderInput, mode: Mode) -> bool {
        !mode.grad && mode.dropout.is_none() && fused::applies(self, input)
    }
}

/// Runs a fused pass on a thread of the pool: the pass is some sixty short parallel steps, and
/// from outside the pool each one hands its work over and sleeps until it is done (a wake-up
/// each way). Single-sentence latency fell by a third (int8 1.5 -> 0.9-1.1 ms). Always the
/// pool's first thread, so that one allocator arena holds the pass's buffers, whichever thread
/// asks and however many threads there are (the others return at once and help with its
/// parallel steps).
fn on_first_thread<T: Send>(pass: impl Fn() -> T + Sync) -> T {
    let mut runs = rayon::broadcast(|ctx| (ctx.index() == 0).then(&pass));
    runs.swap_remove(0)
        .expect("the pool's first thread runs the pass")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpnet_buckets_equal_the_librarys() {
        // transformers' MPNetEncoder.relative_position_bucket(torch.arange(-300, 301), 32):
        // (first relative position of a run, its bucket), runs in order.
        const RUNS: [(i64, usize); 31] = [
            (-300, 15),
            (-90, 14),
            (-63, 13),
            (-45, 12),
            (-31, 11),
            (-22, 10),
            (-15, 9),
            (-11, 8),
            (-7, 7),
            (-6, 6),
            (-5, 5),
            (-4, 4),
            (-3, 3),
            (-2, 2),
            (-1, 1),
            (0, 0),
            (1, 17),
            (2, 18),
            (3, 19),
            (4, 20),
            (5, 21),
            (6, 22),
            (7, 23),
            (8, 24),
            (12, 25),
            (16, 26),
            (23, 27),
            (32, 28),
            (46, 29),
            (64, 30),
            (91, 31),
        ];
        for rel in -300i64..=300 {
            let want = RUNS
                .iter()
                .rev()
                .find(|(start, _)| *start <= rel)
                .unwrap()
                .1;
            assert_eq!(relative_bucket(rel, 32), want, "relative position {rel}");
        }
    }
}
