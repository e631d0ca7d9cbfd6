//! Qwen3 as a sentence embedder (`model_type` `qwen3`: Qwen3-Embedding): a decoder with causal
//! attention, grouped key-value heads, RMS norms on the queries and keys of each head, rotary
//! positions and a SwiGLU feed-forward block; used with last-token pooling. Its tokenizer appends
//! the end-of-text token. Names and numerics follow `transformers.Qwen3Model`.
//!
//! Padding: Python pads these models on the left; we pad on the right. With causal attention a
//! real token never sees a padding token either way, and rotary positions only enter the scores
//! through the distance between query and key, so the vectors are the same (to rounding) and
//! last-token pooling takes each row's last real token.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::Deserialize;

use super::cpu::autograd::Positions;
use super::error::{ModelError, Result, read_json};
use super::layers::{Activation, Embedding, Linear, LinearKernels, Mode, Packing, RmsNorm, Rotary};
use super::transformer::{EncoderInput, KernelSettings, Transformer};
use super::weights::CheckedWeights;

/// `config.json` of a Qwen3 model.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Config {
    pub model_type: String,
    pub vocab_size: usize,
    /// The word table's row that gets no gradient in training (`torch.nn.Embedding`'s
    /// `padding_idx`, which the Hugging Face model sets from this).
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub use_sliding_window: bool,
}

fn default_max_positions() -> usize {
    32_768
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

impl Qwen3Config {
    pub fn read(path: &Path) -> Result<Self> {
        let c: Qwen3Config = read_json(path)?;
        let bad = |msg: String| Err(ModelError::config(path, msg));
        if c.num_attention_heads == 0
            || c.num_key_value_heads == 0
            || !c.num_attention_heads.is_multiple_of(c.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                c.num_attention_heads, c.num_key_value_heads
            ));
        }
        if c.head_dim() == 0 || !c.head_dim().is_multiple_of(2) {
            return bad("rotary positions need an even head_dim".into());
        }
        if c.use_sliding_window {
            return bad("use_sliding_window is not supported (only full attention)".into());
        }
        let scaling = c
            .rope_scaling
            .as_ref()
            .filter(|v| !v.is_null())
            .or(c.rope_parameters.as_ref());
        if let Some(t) = scaling
            .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
            .and_then(|t| t.as_str())
            && t != "default"
        {
            return bad(format!(
                "rope_type `{t}` is not supported (only the default rotary positions)"
            ));
        }
        Ok(c)
    }

    fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
            .or(self.rope_theta)
            .unwrap_or(1_000_000.0)
    }
}

struct Layer {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The Qwen3 decoder used as an encoder: token ids to token vectors.
pub struct Qwen3 {
    config: Qwen3Config,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    act: Activation,
    rotary: Rotary,
    varmap: VarMap,
    unexpected: Vec<String>,
    kernels: LinearKernels,
}

impl Layer {
    fn linears(&self) -> [&Linear; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }
}

impl Qwen3 {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join("config.json");
        let c = Qwen3Config::read(&path)?;
        let act = Activation::parse(&c.hidden_act).ok_or_else(|| {
            ModelError::config(
                &path,
                format!("hidden_act `{}` is not supported", c.hidden_act),
            )
        })?;
        // A `Qwen3ForCausalLM` checkpoint keeps the model under `model.`; the anchor strips it.
        let weights = CheckedWeights::open(dir, "embed_tokens.weight")?;
        let vb = weights.var_builder(device);
        let (h, d, eps) = (c.hidden_size, c.head_dim(), c.rms_norm_eps);
        let (qd, kvd) = (c.num_attention_heads * d, c.num_key_value_heads * d);
        let bias = c.attention_bias;
        let embed =
            Embedding::load(vb.pp("embed_tokens"), c.vocab_size, h)?.padding_idx(c.pad_token_id);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp("layers").pp(i);
            let a = l.pp("self_attn");
            let m = l.pp("mlp");
            layers.push(Layer {
                input_norm: RmsNorm::load(l.pp("input_layernorm"), h, eps)?,
                q: Linear::load(a.pp("q_proj"), h, qd, bias)?,
                k: Linear::load(a.pp("k_proj"), h, kvd, bias)?,
                v: Linear::load(a.pp("v_proj"), h, kvd, bias)?,
                o: Linear::load(a.pp("o_proj"), qd, h, bias)?,
                q_norm: RmsNorm::load(a.pp("q_norm"), d, eps)?,
                k_norm: RmsNorm::load(a.pp("k_norm"), d, eps)?,
                post_norm: RmsNorm::load(l.pp("post_attention_layernorm"), h, eps)?,
                gate: Linear::load(m.pp("gate_proj"), h, c.intermediate_size, false)?,
                up: Linear::load(m.pp("up_proj"), h, c.intermediate_size, false)?,
                down: Linear::load(m.pp("down_proj"), c.intermediate_size, h, false)?
                    .feed_forward_output(),
            });
        }
        let norm = RmsNorm::load(vb.pp("norm"), h, eps)?;
        let rotary = Rotary::new(d, c.theta());
        // A causal-LM checkpoint's `lm_head` is not used for embeddings.
        let (varmap, unexpected) = weights.finish_with_unexpected(&["lm_head.weight"])?;
        Ok(Self {
            config: c,
            embed,
            layers,
            norm,
            act,
            rotary,
            varmap,
            unexpected,
            kernels: LinearKernels::default(),
        })
    }

    /// The causal mask `[1, 1, seq, seq]`: `f32::MIN` on every key after the query. Right
    /// padding sits after every real token, so it needs no mask of its own.
    fn causal_mask(seq: usize, dev: &Device) -> candle_core::Result<Tensor> {
        let mask: Vec<f32> = (0..seq)
            .flat_map(|i| (0..seq).map(move |j| if j > i { f32::MIN } else { 0.0 }))
            .collect();
        Tensor::from_vec(mask, (1, 1, seq, seq), dev)
    }

    /// Causal attention in one operation on the CPU kernels, where this pass runs there
    /// ([`Packing::attention`]; with `at`, of the token `at[r]` of each sentence alone,
    /// `[b, heads * d]`: [`Packing::attention_at`]). `None` elsewhere.
    fn fused_attention(
        &self,
        rows: &Packing,
        qkv: [&Tensor; 3],
        rotary: (&Tensor, &Tensor),
        mode: Mode,
        at: Option<&[usize]>,
    ) -> candle_core::Result<Option<Tensor>> {
        let c = &self.config;
        if !rows.attends_on_kernels(qkv[0], mode) {
            return Ok(None);
        }
        let (qkv, heads) = (self.grouped(qkv)?, c.num_attention_heads);
        let positions = Positions::Rotary(rotary.0, rotary.1);
        let (scale, causal) = (1.0 / (c.head_dim() as f64).sqrt(), Some((usize::MAX, 0)));
        match at {
            Some(at) => rows
                .attention_at(&qkv, positions, heads, scale, causal, mode, at)
                .map(Some),
            None => rows.attention(
                &qkv,
                positions,
                heads,
                scale,
                causal,
                mode,
                c.attention_dropout,
            ),
        }
    }

    /// The rows `[q | k | v]` with each key-value head repeated for its group of query heads.
    fn grouped(&self, [q, k, v]: [&Tensor; 3]) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (heads, kv_heads, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let groups = heads / kv_heads;
        let repeat = |t: &Tensor| -> candle_core::Result<Tensor> {
            if groups == 1 {
                return Ok(t.clone());
            }
            let mut dims = t.dims().to_vec();
            dims.pop();
            let n: usize = dims.iter().product();
            let grouped = t
                .reshape((n, kv_heads, 1, d))?
                .broadcast_as((n, kv_heads, groups, d))?
                .contiguous()?;
            dims.push(heads * d);
            grouped.reshape(dims)
        };
        Tensor::cat(&[q, &repeat(k)?, &repeat(v)?], candle_core::D::Minus1)
    }
}

impl Transformer for Qwen3 {
    fn model_type(&self) -> &str {
        &self.config.model_type
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn layers(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn max_tokens(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn unexpected_weights(&self) -> &[String] {
        &self.unexpected
    }

    fn forward(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor> {
        self.kernels.run(mode, input.ids.device(), |mode| {
            self.forward_composed(input, mode)
        })
    }

    fn linear_kernels(&mut self) -> Option<KernelSettings<'_>> {
        Some(KernelSettings {
            kernels: &mut self.kernels,
            linears: self.layers.iter().flat_map(Layer::linears).collect(),
            device: self.embed.weight().device(),
        })
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
        self.kernels.run(mode, input.ids.device(), |mode| {
            self.pass(input, mode, Some(at))
        })
    }

    fn forward_composed(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor> {
        Ok(self
            .pass(input, mode, None)?
            .expect("a pass of every token gives them all"))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Qwen3 {
    /// The pass: every token's vectors `[b, seq, hidden]`, or with `at` the token `at[r]` of
    /// each sentence's, `[b, hidden]`, its last layer run past the keys and values for those
    /// tokens alone; `None` where this pass cannot pick ([`Packing::picks`]).
    fn pass(
        &self,
        input: &EncoderInput,
        mode: Mode,
        at: Option<&[usize]>,
    ) -> candle_core::Result<Option<Tensor>> {
        let c = &self.config;
        let (b, seq) = input.ids.dims2()?;
        let (heads, kv_heads, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let groups = heads / kv_heads;
        let dev = input.ids.device();
        let mask = Self::causal_mask(seq, dev)?;
        let (cos, sin) = self.rotary.cos_sin(seq, dev)?;
        let scale = 1.0 / (d as f64).sqrt();

        // The rows of the residual stream: the real tokens alone on the CPU kernels.
        let rows = Packing::new(&input.ids, &input.lengths, mode)?;
        // Decided before anything is looked up (the table's dtype and device are the rows').
        if at.is_some() && !rows.picks(self.embed.weight(), mode, c.attention_dropout) {
            return Ok(None);
        }
        let mut x = rows.pack(&self.embed.forward(&input.ids, mode)?)?;
        let last = self.layers.len().wrapping_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            let normed = layer.input_norm.forward(&x, mode)?;
            // The pass's rows of q, k (each after its per-head RMS norm) and v.
            let project = |lin: &Linear, n: usize, norm: Option<&RmsNorm>| {
                let t = lin.forward_mode(&normed, mode)?;
                match norm {
                    Some(norm) => {
                        let dims = t.dims().to_vec();
                        let mut heads = dims[..dims.len() - 1].to_vec();
                        heads.extend([n, d]);
                        norm.forward(&t.reshape(heads)?, mode)?.reshape(dims)
                    }
                    None => Ok(t),
                }
            };
            let q = project(&layer.q, heads, Some(&layer.q_norm))?;
            let k = project(&layer.k, kv_heads, Some(&layer.k_norm))?;
            let v = project(&layer.v, kv_heads, None)?;
            if let Some(at) = at.filter(|_| i == last) {
                // The last layer for the picked tokens alone: their queries over every key.
                let ctx = self
                    .fused_attention(&rows, [&q, &k, &v], (&cos, &sin), mode, Some(at))?
                    .expect("a pass that picks attends on the kernels");
                x = rows.pick(&x, at)?;
                x = self.feed_forward(layer, (x + layer.o.forward_mode(&ctx, mode)?)?, mode)?;
                return Ok(Some(self.norm.forward(&x, mode)?));
            }
            let ctx = match self.fused_attention(&rows, [&q, &k, &v], (&cos, &sin), mode, None)? {
                Some(ctx) => ctx,
                None => {
                    // [rows, n * d] -> [b, seq, n, d] -> [b, n, seq, d].
                    let split = |t: &Tensor, n: usize| {
                        rows.unpack(t)?
                            .reshape((b, seq, n, d))?
                            .transpose(1, 2)?
                            .contiguous()
                    };
                    let q = self.rotary.apply(&split(&q, heads)?, &cos, &sin, mode)?;
                    let k = self.rotary.apply(&split(&k, kv_heads)?, &cos, &sin, mode)?;
                    let v = split(&v, kv_heads)?;
                    // Grouped key-value heads: query head `i` reads key-value head `i / groups`.
                    let repeat = |t: Tensor| -> candle_core::Result<Tensor> {
                        if groups == 1 {
                            return Ok(t);
                        }
                        t.unsqueeze(2)?
                            .broadcast_as((b, kv_heads, groups, seq, d))?
                            .contiguous()?
                            .reshape((b, heads, seq, d))
                    };
                    let (k, v) = (repeat(k)?, repeat(v)?);
                    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
                    let probs =
                        mode.dropout(&mode.softmax_last_dim(&scores)?, c.attention_dropout)?;
                    let ctx = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((
                        b,
                        seq,
                        heads * d,
                    ))?;
                    rows.pack(&ctx)?
                }
            };
            x = self.feed_forward(layer, (x + layer.o.forward_mode(&ctx, mode)?)?, mode)?;
        }
        let x = self.norm.forward(&x, mode)?;
        match at {
            // No layers: the picked tokens' embeddings.
            Some(at) => rows.pick(&x, at).map(Some),
            None => rows.unpack(&x).map(Some),
        }
    }

    /// `x` plus the layer's SwiGLU block of it.
    fn feed_forward(&self, layer: &Layer, x: Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let normed = layer.post_norm.forward(&x, mode)?;
        let hidden = self.act.gated(
            &layer.gate.forward_mode(&normed, mode)?,
            &layer.up.forward_mode(&normed, mode)?,
            mode,
        )?;
        x + layer.down.forward_mode(&hidden, mode)?
    }
}
