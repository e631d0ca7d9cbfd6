//! The T5 encoder (`model_type` `t5` and `mt5`): Sentence-T5 and GTR. Pre-norm blocks with RMS
//! norms (no bias anywhere), unscaled dot-product attention with a relative position bias that the
//! first block computes and every block adds, and a feed-forward block that is ReLU (T5) or gated
//! GELU (T5 v1.1, mT5). Written for training: weights are variables, dropout (`dropout_rate`) is
//! real in training mode. Names follow `transformers.T5EncoderModel`.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarMap;
use serde::Deserialize;

use super::cpu::autograd::Positions;
use super::error::{ModelError, Result, read_json};
use super::layers::{
    Activation as Act, Embedding, Linear, LinearKernels, Mode, Packing, RmsNorm,
    relative_position_bucket,
};
use super::transformer::{EncoderInput, KernelSettings, Transformer};
use super::weights::CheckedWeights;

/// `config.json` of a T5 model (the encoder's part).
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub model_type: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_dropout")]
    pub dropout_rate: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_proj")]
    pub feed_forward_proj: String,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-6
}
fn default_proj() -> String {
    "relu".into()
}

impl T5Config {
    pub fn read(path: &Path) -> Result<Self> {
        let c: T5Config = read_json(path)?;
        if c.num_heads == 0 || c.d_kv == 0 {
            return Err(ModelError::config(
                path,
                "num_heads and d_kv must be at least 1",
            ));
        }
        c.ffn(path)?;
        Ok(c)
    }

    /// Whether the feed-forward block is gated, and its activation (as `transformers` reads
    /// `feed_forward_proj`: `relu`, `gated-gelu` (which means `gelu_new`), `gated-silu`, ...).
    fn ffn(&self, path: &Path) -> Result<(bool, Act)> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let gated = parts.len() == 2 && parts[0] == "gated";
        if parts.len() > 2 || (parts.len() == 2 && !gated) {
            return Err(ModelError::config(
                path,
                format!(
                    "feed_forward_proj `{}` is not understood",
                    self.feed_forward_proj
                ),
            ));
        }
        let name = if self.feed_forward_proj == "gated-gelu" {
            "gelu_new"
        } else {
            parts[parts.len() - 1]
        };
        let act = Act::parse(name).ok_or_else(|| {
            ModelError::config(
                path,
                format!("feed-forward activation `{name}` is not supported"),
            )
        })?;
        Ok((gated, act))
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    d_kv: usize,
}

struct FeedForward {
    /// `wi`, or `wi_0` when gated.
    wi: Linear,
    /// `wi_1` when gated.
    gate: Option<Linear>,
    wo: Linear,
    act: Act,
}

struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

/// A decoder block: self-attention, attention over the encoder's tokens, feed-forward.
struct DecoderBlock {
    self_norm: RmsNorm,
    self_attn: Attention,
    cross_norm: RmsNorm,
    cross_attn: Attention,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

/// The decoder of a full T5 checkpoint, for ST5-EncDec pooling.
struct Decoder {
    blocks: Vec<DecoderBlock>,
    final_norm: RmsNorm,
    /// The decoder's first input: `decoder_start_token_id` (the padding id, 0, in T5).
    start: u32,
}

/// The T5 encoder: token ids to token vectors.
pub struct T5Encoder {
    config: T5Config,
    embed: Embedding,
    /// `[buckets, heads]`, in the first block.
    relative: Embedding,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    /// Present in a full encoder-decoder checkpoint.
    decoder: Option<Decoder>,
    varmap: VarMap,
    unexpected: Vec<String>,
    kernels: LinearKernels,
}

/// The position bias of a self-attention.
#[derive(Clone, Copy)]
enum Bias<'a> {
    /// Of every (query, key) pair, padding masked: broadcasts to `[b, heads, seq, seq]`.
    Pairs(&'a Tensor),
    /// By relative position ([`T5Encoder::relative_bias`]), in a pass on the CPU kernels,
    /// which attends in one operation ([`Packing::attention`]).
    Relative(&'a Tensor),
}

impl Attention {
    fn linears(&self) -> [&Linear; 4] {
        [&self.q, &self.k, &self.v, &self.o]
    }
}

impl FeedForward {
    fn linears(&self) -> impl Iterator<Item = &Linear> {
        [&self.wi, &self.wo].into_iter().chain(self.gate.as_ref())
    }
}

impl T5Encoder {
    /// Every linear layer of the encoder's `blocks` and the `decoder`'s.
    fn linears<'a>(blocks: &'a [Block], decoder: Option<&'a Decoder>) -> Vec<&'a Linear> {
        let mut all = Vec::new();
        for b in blocks {
            all.extend(b.attn.linears());
            all.extend(b.ff.linears());
        }
        for b in decoder.iter().flat_map(|d| &d.blocks) {
            all.extend(b.self_attn.linears());
            all.extend(b.cross_attn.linears());
            all.extend(b.ff.linears());
        }
        all
    }

    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join("config.json");
        let c = T5Config::read(&path)?;
        let (gated, act) = c.ffn(&path)?;
        let weights = CheckedWeights::open(dir, "encoder.final_layer_norm.weight")?;
        let vb = weights.var_builder(device);
        let (h, inner) = (c.d_model, c.num_heads * c.d_kv);
        // The word embedding is `shared` (tied to `encoder.embed_tokens`); some checkpoints keep
        // only the encoder's copy.
        let embed_vb = if vb.contains_tensor("shared.weight") {
            vb.pp("shared")
        } else {
            vb.pp("encoder").pp("embed_tokens")
        };
        let embed = Embedding::load(embed_vb, c.vocab_size, h)?;
        let enc = vb.pp("encoder");
        let mut blocks = Vec::with_capacity(c.num_layers);
        let mut relative = None;
        for i in 0..c.num_layers {
            let b = enc.pp("block").pp(i);
            let sa = b.pp("layer").pp(0);
            let att = sa.pp("SelfAttention");
            if i == 0 {
                relative = Some(Embedding::load(
                    att.pp("relative_attention_bias"),
                    c.relative_attention_num_buckets,
                    c.num_heads,
                )?);
            }
            let ff = b.pp("layer").pp(1);
            let dense = ff.pp("DenseReluDense");
            let (wi, gate) = if gated {
                (
                    Linear::load(dense.pp("wi_0"), h, c.d_ff, false)?,
                    Some(Linear::load(dense.pp("wi_1"), h, c.d_ff, false)?),
                )
            } else {
                (Linear::load(dense.pp("wi"), h, c.d_ff, false)?, None)
            };
            blocks.push(Block {
                attn_norm: RmsNorm::load(sa.pp("layer_norm"), h, c.layer_norm_epsilon)?,
                attn: Attention {
                    q: Linear::load(att.pp("q"), h, inner, false)?,
                    k: Linear::load(att.pp("k"), h, inner, false)?,
                    v: Linear::load(att.pp("v"), h, inner, false)?,
                    o: Linear::load(att.pp("o"), inner, h, false)?,
                    heads: c.num_heads,
                    d_kv: c.d_kv,
                },
                ff_norm: RmsNorm::load(ff.pp("layer_norm"), h, c.layer_norm_epsilon)?,
                ff: FeedForward {
                    wi,
                    gate,
                    wo: Linear::load(dense.pp("wo"), c.d_ff, h, false)?.feed_forward_output(),
                    act,
                },
            });
        }
        let final_norm = RmsNorm::load(enc.pp("final_layer_norm"), h, c.layer_norm_epsilon)?;
        // A full checkpoint's decoder is loaded (trained and saved with the encoder) for
        // ST5-EncDec pooling.
        let decoder = if vb.contains_tensor("decoder.final_layer_norm.weight") {
            let dec = vb.pp("decoder");
            let attention = |vb: candle_nn::VarBuilder| -> candle_core::Result<Attention> {
                Ok(Attention {
                    q: Linear::load(vb.pp("q"), h, inner, false)?,
                    k: Linear::load(vb.pp("k"), h, inner, false)?,
                    v: Linear::load(vb.pp("v"), h, inner, false)?,
                    o: Linear::load(vb.pp("o"), inner, h, false)?,
                    heads: c.num_heads,
                    d_kv: c.d_kv,
                })
            };
            let mut blocks = Vec::new();
            for i in 0..c.num_decoder_layers.unwrap_or(c.num_layers) {
                let b = dec.pp("block").pp(i);
                let sa = b.pp("layer").pp(0);
                if i == 0 {
                    // Its relative position bias: with one decoder token, the softmax over one
                    // score is 1 whatever the bias is; kept so the checkpoint stays whole.
                    sa.pp("SelfAttention")
                        .pp("relative_attention_bias")
                        .get((c.relative_attention_num_buckets, c.num_heads), "weight")?;
                }
                let ca = b.pp("layer").pp(1);
                let ff = b.pp("layer").pp(2);
                let dense = ff.pp("DenseReluDense");
                let (wi, gate) = if gated {
                    (
                        Linear::load(dense.pp("wi_0"), h, c.d_ff, false)?,
                        Some(Linear::load(dense.pp("wi_1"), h, c.d_ff, false)?),
                    )
                } else {
                    (Linear::load(dense.pp("wi"), h, c.d_ff, false)?, None)
                };
                blocks.push(DecoderBlock {
                    self_norm: RmsNorm::load(sa.pp("layer_norm"), h, c.layer_norm_epsilon)?,
                    self_attn: attention(sa.pp("SelfAttention"))?,
                    cross_norm: RmsNorm::load(ca.pp("layer_norm"), h, c.layer_norm_epsilon)?,
                    cross_attn: attention(ca.pp("EncDecAttention"))?,
                    ff_norm: RmsNorm::load(ff.pp("layer_norm"), h, c.layer_norm_epsilon)?,
                    ff: FeedForward {
                        wi,
                        gate,
                        wo: Linear::load(dense.pp("wo"), c.d_ff, h, false)?.feed_forward_output(),
                        act,
                    },
                });
            }
            Some(Decoder {
                blocks,
                final_norm: RmsNorm::load(dec.pp("final_layer_norm"), h, c.layer_norm_epsilon)?,
                start: c.decoder_start_token_id.unwrap_or(0),
            })
        } else {
            None
        };
        let relative = relative.ok_or_else(|| {
            ModelError::config(&path, "num_layers must be at least 1 for a T5 encoder")
        })?;
        // The embedding is tied (`encoder.embed_tokens` is `shared`); a full encoder-decoder
        // checkpoint's decoder weights are not used here.
        let (varmap, unexpected) = weights.finish_with_unexpected(&[
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
            "lm_head.weight",
        ])?;
        Ok(Self {
            config: c,
            embed,
            relative,
            blocks,
            final_norm,
            decoder,
            varmap,
            unexpected,
            kernels: LinearKernels::default(),
        })
    }

    /// The position bias by relative position, for sentences of up to `span` tokens:
    /// `[heads, 2 * span - 1]`, the bias of key `j` for query `i` at `j - i + span - 1` (the
    /// layout of `kernels::RelBias`).
    fn relative_bias(&self, span: usize, dev: &Device, mode: Mode) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let span = span.max(1) as i64;
        let ids: Vec<u32> = (1 - span..span)
            .map(|r| {
                relative_position_bucket(
                    r,
                    c.relative_attention_num_buckets,
                    c.relative_attention_max_distance,
                ) as u32
            })
            .collect();
        let n = ids.len();
        self.relative
            .forward(&Tensor::from_vec(ids, n, dev)?, mode)?
            .t()?
            .contiguous()
    }

    /// The position bias of every (query, key) pair: `[1, heads, seq, seq]`.
    fn position_bias(&self, seq: usize, dev: &Device, mode: Mode) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let ids: Vec<u32> = (0..seq)
            .flat_map(|i| {
                (0..seq).map(move |j| {
                    relative_position_bucket(
                        j as i64 - i as i64,
                        c.relative_attention_num_buckets,
                        c.relative_attention_max_distance,
                    ) as u32
                })
            })
            .collect();
        let ids = Tensor::from_vec(ids, (seq, seq), dev)?;
        self.relative
            .forward(&ids, mode)?
            .permute((2, 0, 1))?
            .contiguous()?
            .unsqueeze(0)
    }
}

impl Attention {
    /// Self-attention of `x` `[b, seq, hidden]` (or the rows of `rows`). T5 does not scale
    /// scores.
    fn forward(
        &self,
        x: &Tensor,
        bias: Bias,
        dropout: f64,
        mode: Mode,
        rows: &Packing,
    ) -> candle_core::Result<Tensor> {
        let relative = match bias {
            Bias::Pairs(bias) => return self.attend(x, x, bias, dropout, mode, rows),
            Bias::Relative(relative) => relative,
        };
        let qkv = Tensor::cat(
            &[
                self.q.forward_mode(x, mode)?,
                self.k.forward_mode(x, mode)?,
                self.v.forward_mode(x, mode)?,
            ],
            D::Minus1,
        )?;
        let positions = Positions::Relative(relative);
        match rows.attention(&qkv, positions, self.heads, 1.0, None, mode, dropout)? {
            Some(ctx) => self.o.forward_mode(&ctx, mode),
            None => {
                candle_core::bail!("T5: a relative bias outside a pass on the kernels")
            }
        }
    }

    /// Queries from `x` `[b, q_len, hidden]`, keys and values from `kv` `[b, kv_len, hidden]`
    /// (both as the rows of `rows`); `bias` broadcasts to `[b, heads, q_len, kv_len]`.
    fn attend(
        &self,
        x: &Tensor,
        kv: &Tensor,
        bias: &Tensor,
        dropout: f64,
        mode: Mode,
        rows: &Packing,
    ) -> candle_core::Result<Tensor> {
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            let t = rows.unpack(&t)?;
            let (b, len, _) = t.dims3()?;
            t.reshape((b, len, self.heads, self.d_kv))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward_mode(x, mode)?)?;
        let k = split(self.k.forward_mode(kv, mode)?)?;
        let v = split(self.v.forward_mode(kv, mode)?)?;
        let (b, _, q_len, _) = q.dims4()?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = mode.softmax_last_dim(&scores)?;
        let probs = mode.dropout(&probs, dropout)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((
            b,
            q_len,
            self.heads * self.d_kv,
        ))?;
        self.o.forward_mode(&rows.pack(&ctx)?, mode)
    }
}

impl FeedForward {
    fn forward(
        &self,
        x: &Tensor,
        dropout: f64,
        mode: Mode,
        rows: &Packing,
    ) -> candle_core::Result<Tensor> {
        let a = self.wi.forward_mode(x, mode)?;
        let hidden = match &self.gate {
            Some(g) => self.act.gated(&a, &g.forward_mode(x, mode)?, mode)?,
            None => self.act.forward_mode(&a, mode)?,
        };
        let hidden = rows.dropout(mode, &hidden, dropout)?;
        self.wo.forward_mode(&hidden, mode)
    }
}

impl Transformer for T5Encoder {
    fn model_type(&self) -> &str {
        &self.config.model_type
    }

    fn hidden_size(&self) -> usize {
        self.config.d_model
    }

    fn layers(&self) -> usize {
        self.config.num_layers
    }

    fn max_tokens(&self) -> usize {
        // Relative positions: no table limits the length.
        usize::MAX >> 1
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
            linears: Self::linears(&self.blocks, self.decoder.as_ref()),
            device: self.embed.weight().device(),
        })
    }

    fn forward_composed(&self, input: &EncoderInput, mode: Mode) -> candle_core::Result<Tensor> {
        let p = self.config.dropout_rate;
        let (seq, dev) = (input.ids.dim(1)?, input.ids.device());
        // The rows of the residual stream: the real tokens alone on the CPU kernels.
        let rows = Packing::new(&input.ids, &input.lengths, mode)?;
        let mut x = rows.dropout(mode, &rows.pack(&self.embed.forward(&input.ids, mode)?)?, p)?;
        let fused = rows.attends_on_kernels(&x, mode);
        let bias = if fused {
            self.relative_bias(seq, dev, mode)?
        } else {
            let mask = ((1.0 - &input.mask)? * f32::MIN as f64)?
                .to_dtype(DType::F32)?
                .unsqueeze(1)?
                .unsqueeze(1)?;
            self.position_bias(seq, dev, mode)?.broadcast_add(&mask)?
        };
        let bias = match fused {
            true => Bias::Relative(&bias),
            false => Bias::Pairs(&bias),
        };
        for block in &self.blocks {
            let h = block.attn_norm.forward(&x, mode)?;
            let a = block.attn.forward(&h, bias, p, mode, &rows)?;
            x = (x + rows.dropout(mode, &a, p)?)?;
            let h = block.ff_norm.forward(&x, mode)?;
            let f = block.ff.forward(&h, p, mode, &rows)?;
            x = (x + rows.dropout(mode, &f, p)?)?;
        }
        let x = self.final_norm.forward(&x, mode)?;
        rows.unpack(&rows.dropout(mode, &x, p)?)
    }

    fn has_decoder(&self) -> bool {
        self.decoder.is_some()
    }

    /// The decoder run for one step: its start token attends to itself (a softmax over one
    /// score, so no position bias matters) and over the encoder's tokens (padding masked, no
    /// position bias, as `T5Stack` does for cross-attention).
    fn decoder_first(
        &self,
        tokens: &Tensor,
        input: &EncoderInput,
        mode: Mode,
    ) -> candle_core::Result<Tensor> {
        let Some(dec) = &self.decoder else {
            candle_core::bail!("this T5 checkpoint has no decoder");
        };
        let p = self.config.dropout_rate;
        let b = tokens.dim(0)?;
        let dev = tokens.device();
        let mode = self.kernels.mode(mode, dev);
        let start = Tensor::full(dec.start, (b, 1), dev)?;
        let mut x = mode.dropout(&self.embed.forward(&start, mode)?, p)?;
        let self_bias = Tensor::zeros((1, 1, 1, 1), DType::F32, dev)?;
        let cross_bias = ((1.0 - &input.mask)? * f32::MIN as f64)?
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        let rows = Packing::padded();
        for block in &dec.blocks {
            let h = block.self_norm.forward(&x, mode)?;
            let a = block
                .self_attn
                .forward(&h, Bias::Pairs(&self_bias), p, mode, &rows)?;
            x = (x + mode.dropout(&a, p)?)?;
            let h = block.cross_norm.forward(&x, mode)?;
            let a = block
                .cross_attn
                .attend(&h, tokens, &cross_bias, p, mode, &rows)?;
            x = (x + mode.dropout(&a, p)?)?;
            let h = block.ff_norm.forward(&x, mode)?;
            let f = block.ff.forward(&h, p, mode, &rows)?;
            x = (x + mode.dropout(&f, p)?)?;
        }
        let x = mode.dropout(&dec.final_norm.forward(&x, mode)?, p)?;
        x.squeeze(1)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
