//! ModernBERT (`model_type` `modernbert`): pre-norm blocks without biases, rotary positions with
//! one base for global and one for local layers, a GeGLU feed-forward block, and attention that
//! is global on every `global_attn_every_n_layers`-th layer and a sliding window
//! (`|query - key| <= local_attention / 2`) on the others. The first layer has no attention norm.
//! Written for training: weights are variables, the three dropouts are real in training mode.
//! Names and numerics follow `transformers.ModernBertModel` (its SDPA path: padding is masked, not
//! removed).

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::Deserialize;

use super::cpu::autograd::Positions;
use super::error::{ModelError, Result, read_json};
use super::layers::{
    Activation, Embedding, LayerNorm, Linear, LinearKernels, Mode, Packing, Rotary,
};
use super::transformer::{EncoderInput, KernelSettings, Transformer};
use super::weights::CheckedWeights;

/// `config.json` of a ModernBERT model, old layout (`global_rope_theta`, `local_rope_theta`,
/// `global_attn_every_n_layers`) or new (`layer_types`, `rope_parameters`).
#[derive(Debug, Clone, Deserialize)]
pub struct ModernBertConfig {
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
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub embedding_dropout: f64,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub mlp_dropout: f64,
    #[serde(default = "default_activation")]
    pub hidden_activation: String,
    #[serde(default = "default_local_attention")]
    pub local_attention: usize,
    #[serde(default = "default_global_every")]
    pub global_attn_every_n_layers: usize,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_global_theta")]
    pub global_rope_theta: f64,
    #[serde(default = "default_local_theta")]
    pub local_rope_theta: f64,
}

fn default_max_positions() -> usize {
    8192
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu".into()
}
fn default_local_attention() -> usize {
    128
}
fn default_global_every() -> usize {
    3
}
fn default_global_theta() -> f64 {
    160_000.0
}
fn default_local_theta() -> f64 {
    10_000.0
}

/// Whether a layer attends globally or over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Full,
    Sliding,
}

impl ModernBertConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let c: ModernBertConfig = read_json(path)?;
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(ModelError::config(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
            ));
        }
        if !(c.hidden_size / c.num_attention_heads).is_multiple_of(2) {
            return Err(ModelError::config(
                path,
                "rotary positions need an even head size",
            ));
        }
        c.kinds(path)?;
        c.theta(Kind::Full, path)?;
        c.theta(Kind::Sliding, path)?;
        Ok(c)
    }

    fn kinds(&self, path: &Path) -> Result<Vec<Kind>> {
        match &self.layer_types {
            Some(types) => {
                if types.len() != self.num_hidden_layers {
                    return Err(ModelError::config(
                        path,
                        format!(
                            "layer_types has {} entries for {} layers",
                            types.len(),
                            self.num_hidden_layers
                        ),
                    ));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "full_attention" => Ok(Kind::Full),
                        "sliding_attention" => Ok(Kind::Sliding),
                        other => Err(ModelError::config(
                            path,
                            format!(
                                "layer type `{other}` is not supported (full_attention, sliding_attention)"
                            ),
                        )),
                    })
                    .collect()
            }
            None => Ok((0..self.num_hidden_layers)
                .map(|i| {
                    if i % self.global_attn_every_n_layers.max(1) == 0 {
                        Kind::Full
                    } else {
                        Kind::Sliding
                    }
                })
                .collect()),
        }
    }

    /// The rotary base of a layer kind; only the default rotary type is supported.
    fn theta(&self, kind: Kind, path: &Path) -> Result<f64> {
        let (key, fallback) = match kind {
            Kind::Full => ("full_attention", self.global_rope_theta),
            Kind::Sliding => ("sliding_attention", self.local_rope_theta),
        };
        let Some(params) = self.rope_parameters.as_ref().and_then(|p| p.get(key)) else {
            return Ok(fallback);
        };
        if let Some(t) = params.get("rope_type").and_then(|t| t.as_str())
            && t != "default"
        {
            return Err(ModelError::config(
                path,
                format!("rope_type `{t}` is not supported (only the default rotary positions)"),
            ));
        }
        Ok(params
            .get("rope_theta")
            .and_then(|t| t.as_f64())
            .unwrap_or(fallback))
    }
}

struct Layer {
    /// `None` on the first layer (`nn.Identity`).
    attn_norm: Option<LayerNorm>,
    wqkv: Linear,
    wo: Linear,
    mlp_norm: LayerNorm,
    wi: Linear,
    mlp_wo: Linear,
    kind: Kind,
}

/// The ModernBERT encoder: token ids to token vectors.
pub struct ModernBert {
    config: ModernBertConfig,
    embed: Embedding,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    act: Activation,
    global_rotary: Rotary,
    local_rotary: Rotary,
    varmap: VarMap,
    unexpected: Vec<String>,
    kernels: LinearKernels,
}

impl Layer {
    fn linears(&self) -> [&Linear; 4] {
        [&self.wqkv, &self.wo, &self.wi, &self.mlp_wo]
    }
}

impl ModernBert {
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
        let seq = input.ids.dim(1)?;
        let (heads, h) = (c.num_attention_heads, c.hidden_size);
        let d = h / heads;
        let dev = input.ids.device();
        let global = self.global_rotary.cos_sin(seq, dev)?;
        let local = self.local_rotary.cos_sin(seq, dev)?;
        let scale = 1.0 / (d as f64).sqrt();

        // The rows of the residual stream: the real tokens alone on the CPU kernels.
        let rows = Packing::new(&input.ids, &input.lengths, mode)?;
        // Decided before anything is looked up or drawn (the table's dtype and device are the
        // rows').
        let dropout = [c.embedding_dropout, c.attention_dropout, c.mlp_dropout];
        let p = dropout.into_iter().fold(0.0, f64::max);
        if at.is_some() && !rows.picks(self.embed.weight(), mode, p) {
            return Ok(None);
        }
        let x = rows.pack(&self.embed.forward(&input.ids, mode)?)?;
        let mut x = rows.dropout(
            mode,
            &self.embed_norm.forward(&x, mode)?,
            c.embedding_dropout,
        )?;
        // The additive masks only where attention is composed (`Packing::attention` masks
        // nothing: each sentence attends over its own tokens, the window given as a range).
        let masks = match rows.attends_on_kernels(&x, mode) {
            true => None,
            false => Some(self.masks(input)?),
        };
        let last = self.layers.len().wrapping_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            let ((cos, sin), rotary) = match layer.kind {
                Kind::Full => (&global, &self.global_rotary),
                Kind::Sliding => (&local, &self.local_rotary),
            };
            let normed = match &layer.attn_norm {
                Some(n) => n.forward(&x, mode)?,
                None => x.clone(),
            };
            let qkv = layer.wqkv.forward_mode(&normed, mode)?;
            let half = c.local_attention / 2;
            let window = (layer.kind == Kind::Sliding).then_some((half, half));
            if let Some(at) = at.filter(|_| i == last) {
                // The last layer for the picked tokens alone: their queries over every key.
                let positions = Positions::Rotary(cos, sin);
                let ctx = rows.attention_at(&qkv, positions, heads, scale, window, mode, at)?;
                let x = (rows.pick(&x, at)? + layer.wo.forward_mode(&ctx, mode)?)?;
                let x = self.feed_forward(layer, x, &rows, mode)?;
                return Ok(Some(self.final_norm.forward(&x, mode)?));
            }
            let fused = rows.attention(
                &qkv,
                Positions::Rotary(cos, sin),
                heads,
                scale,
                window,
                mode,
                c.attention_dropout,
            )?;
            let ctx = match (fused, &masks) {
                (Some(ctx), _) => ctx,
                (None, Some((full, sliding))) => {
                    let mask = match layer.kind {
                        Kind::Full => full,
                        Kind::Sliding => sliding,
                    };
                    rows.pack(&self.attend(&rows.unpack(&qkv)?, mask, (cos, sin), rotary, mode)?)?
                }
                (None, None) => candle_core::bail!("ModernBERT: attention left unmasked"),
            };
            let out = layer.wo.forward_mode(&ctx, mode)?;
            x = (x + rows.dropout(mode, &out, c.attention_dropout)?)?;
            x = self.feed_forward(layer, x, &rows, mode)?;
        }
        let x = self.final_norm.forward(&x, mode)?;
        match at {
            // No layers: the picked tokens' embeddings.
            Some(at) => rows.pick(&x, at).map(Some),
            None => rows.unpack(&x).map(Some),
        }
    }

    /// `x` plus the layer's GeGLU block of it: act(input) * gate, the two halves of Wi.
    fn feed_forward(
        &self,
        layer: &Layer,
        x: Tensor,
        rows: &Packing,
        mode: Mode,
    ) -> candle_core::Result<Tensor> {
        let normed = layer.mlp_norm.forward(&x, mode)?;
        let wi = layer.wi.forward_mode(&normed, mode)?;
        let hidden = self.act.gated_halves(&wi, mode)?;
        let hidden = rows.dropout(mode, &hidden, self.config.mlp_dropout)?;
        x + layer.mlp_wo.forward_mode(&hidden, mode)?
    }

    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join("config.json");
        let c = ModernBertConfig::read(&path)?;
        let act = Activation::parse(&c.hidden_activation).ok_or_else(|| {
            ModelError::config(
                &path,
                format!(
                    "hidden_activation `{}` is not supported",
                    c.hidden_activation
                ),
            )
        })?;
        let kinds = c.kinds(&path)?;
        let weights = CheckedWeights::open(dir, "embeddings.tok_embeddings.weight")?;
        let vb = weights.var_builder(device);
        let (h, inter, eps) = (c.hidden_size, c.intermediate_size, c.norm_eps);
        let norm = |vb| LayerNorm::load_with_bias(vb, h, eps, c.norm_bias);
        let emb = vb.pp("embeddings");
        let embed =
            Embedding::load(emb.pp("tok_embeddings"), c.vocab_size, h)?.padding_idx(c.pad_token_id);
        let embed_norm = norm(emb.pp("norm"))?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for (i, kind) in kinds.into_iter().enumerate() {
            let l = vb.pp("layers").pp(i);
            layers.push(Layer {
                attn_norm: if i == 0 {
                    None
                } else {
                    Some(norm(l.pp("attn_norm"))?)
                },
                wqkv: Linear::load(l.pp("attn").pp("Wqkv"), h, 3 * h, c.attention_bias)?,
                wo: Linear::load(l.pp("attn").pp("Wo"), h, h, c.attention_bias)?,
                mlp_norm: norm(l.pp("mlp_norm"))?,
                wi: Linear::load(l.pp("mlp").pp("Wi"), h, 2 * inter, c.mlp_bias)?,
                mlp_wo: Linear::load(l.pp("mlp").pp("Wo"), inter, h, c.mlp_bias)?
                    .feed_forward_output(),
                kind,
            });
        }
        let final_norm = norm(vb.pp("final_norm"))?;
        let d = h / c.num_attention_heads;
        let global_rotary = Rotary::new(d, c.theta(Kind::Full, &path)?);
        let local_rotary = Rotary::new(d, c.theta(Kind::Sliding, &path)?);
        // A masked-language-model checkpoint's head is not used here.
        let (varmap, unexpected) = weights.finish_with_unexpected(&[])?;
        Ok(Self {
            config: c,
            embed,
            embed_norm,
            layers,
            final_norm,
            act,
            global_rotary,
            local_rotary,
            varmap,
            unexpected,
            kernels: LinearKernels::default(),
        })
    }

    /// Additive attention masks `[b, 1, seq, seq]`: padding keys get `f32::MIN`; the sliding one
    /// also every key further than the half window from the query.
    fn masks(&self, input: &EncoderInput) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, seq) = input.ids.dims2()?;
        let half = self.config.local_attention / 2;
        let mut full = vec![0f32; b * seq * seq];
        let mut sliding = vec![0f32; b * seq * seq];
        for (row, &len) in input.lengths.iter().enumerate() {
            for i in 0..seq {
                for j in 0..seq {
                    let at = (row * seq + i) * seq + j;
                    if j >= len {
                        full[at] = f32::MIN;
                        sliding[at] = f32::MIN;
                    } else if i.abs_diff(j) > half {
                        sliding[at] = f32::MIN;
                    }
                }
            }
        }
        let dev = input.ids.device();
        Ok((
            Tensor::from_vec(full, (b, 1, seq, seq), dev)?,
            Tensor::from_vec(sliding, (b, 1, seq, seq), dev)?,
        ))
    }

    /// Attention composed from candle operations over the padded batch: `qkv` `[b, seq, 3h]`
    /// (each token's `[q | k | v]`) to the context `[b, seq, h]`.
    fn attend(
        &self,
        qkv: &Tensor,
        mask: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        rotary: &Rotary,
        mode: Mode,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, seq, _) = qkv.dims3()?;
        let (heads, h) = (c.num_attention_heads, c.hidden_size);
        let d = h / heads;
        let scale = 1.0 / (d as f64).sqrt();
        // [b, seq, 3, heads, d] -> q, k, v as [b, heads, seq, d].
        let qkv = qkv.reshape((b, seq, 3, heads, d))?;
        let part = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = rotary.apply(&part(0)?, cos, sin, mode)?;
        let k = rotary.apply(&part(1)?, cos, sin, mode)?;
        let v = part(2)?;
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let probs = mode.dropout(&mode.softmax_last_dim(&scores)?, c.attention_dropout)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, seq, h))
    }
}

impl Transformer for ModernBert {
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
