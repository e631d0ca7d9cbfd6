//! The fused CPU inference path of [`Bert`]: the same arithmetic as the candle composition in
//! `bert.rs`, on plain `f32` buffers, with none of its temporaries.
//!
//! - Tokens are packed without padding (`T` = the real tokens of the batch), so no work is spent
//!   on padding and attention needs no mask: each sentence attends over its own tokens, which is
//!   what the `-inf` bias of the padded form computes (its softmax weights are exactly 0).
//! - Matrix products write Q, K and V side by side into one buffer, through the kernel timed
//!   fastest on this CPU for the number of rows (`packed::F32Choice`): `gemm` (the library candle
//!   itself uses) or an unpacked kernel for a few rows (`kernels::matmul_wt`) on the weights'
//!   own storage, or an AVX-512 kernel on weights packed once at the first pass
//!   (`model/cpu/packed.rs`); `--precision bf16|int8` has its own kernels on weights prepared
//!   the same way.
//! - Bias, GELU, residual and layer norm are fused into one pass after each product
//!   (`model/cpu/kernels.rs`, AVX2 where available).
//! - Attention runs per sentence and head, the head's keys transposed so that eight scores are
//!   computed at once.
//! - One thread pool (rayon's, which gemm also uses) runs everything; small batches stay on the
//!   calling thread, where waking a pool costs more than it saves.
//!
//! Only evaluation (no autograd graph, no dropout) on CPU with `f32` weights takes this path;
//! `tests/fused_path.rs` holds it to the composition.

use candle_core::Tensor;
use rayon::prelude::*;

use super::{Bert, EncoderInput, HiddenAct, Layer};
use crate::model::Precision;
use crate::model::cpu::kernels;
pub(super) use crate::model::cpu::prepared::Data;
use crate::model::cpu::prepared::{self, PreparedWeight};

/// One layer's linear weights prepared for their kernels (Q, K and V stacked; the
/// feed-forward's second product as [`PreparedWeight::feed_forward_output`] says).
#[derive(Debug)]
pub(super) struct LowLayer {
    qkv: PreparedWeight,
    attention_output: PreparedWeight,
    intermediate: PreparedWeight,
    output: PreparedWeight,
}

impl LowLayer {
    fn new(p: Precision, layer: &Layer, h: usize, inter: usize) -> candle_core::Result<Self> {
        let a = &layer.attention;
        let (q, k, v) = (
            Data::of(a.query.weight())?,
            Data::of(a.key.weight())?,
            Data::of(a.value.weight())?,
        );
        let one =
            |lin: &super::Linear, n: usize, k: usize| -> candle_core::Result<PreparedWeight> {
                Ok(PreparedWeight::new(p, Data::of(lin.weight())?.get(), n, k))
            };
        Ok(Self {
            qkv: PreparedWeight::stack(p, &[(q.get(), h), (k.get(), h), (v.get(), h)], h),
            attention_output: one(&a.output, h, h)?,
            intermediate: one(&layer.intermediate, inter, h)?,
            output: PreparedWeight::feed_forward_output(
                p,
                Data::of(layer.output.weight())?.get(),
                h,
                inter,
            ),
        })
    }
}

/// The model's layers prepared for their kernels (made once, at the first pass), or `None` in
/// float32 where no product runs on packed weights or the model is being trained.
fn low_layers(bert: &Bert) -> candle_core::Result<Option<&[LowLayer]>> {
    if bert.precision == Precision::F32
        && !(bert.prepare && PreparedWeight::worth_it(Precision::F32))
    {
        return Ok(None);
    }
    if let Some(l) = bert.low.get() {
        return Ok(Some(l));
    }
    let c = &bert.config;
    let layers = bert
        .layers
        .par_iter()
        .map(|l| LowLayer::new(bert.precision, l, c.hidden_size, c.intermediate_size))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Some(bert.low.get_or_init(|| layers)))
}

/// `dst = input · Wᵀ` in float32, or through the prepared weight when there is one.
#[allow(clippy::too_many_arguments)]
fn product(
    dst: &mut [f32],
    dst_rs: usize,
    input: &[f32],
    rows: usize,
    k: usize,
    lin: &super::Linear,
    n: usize,
    low: Option<&PreparedWeight>,
) -> candle_core::Result<()> {
    let w = Data::of(lin.weight())?;
    prepared::product(dst, dst_rs, input, rows, k, w.get(), n, low);
    Ok(())
}

/// Rows per parallel task in the element-wise passes; below two tasks' worth, no pool.
const ROWS_PER_TASK: usize = 16;

/// True when this forward pass can take the fused path.
pub(super) fn applies(bert: &Bert, input: &EncoderInput) -> bool {
    input.ids.device().is_cpu()
        && Data::of(bert.embeddings.word.weight()).is_ok()
        && input.lengths.len() == input.ids.dims().first().copied().unwrap_or(0)
}

fn threads() -> usize {
    kernels::threads()
}

/// Runs `f` on chunks of whole rows (`width` values each), in parallel when there are enough.
fn for_rows(data: &mut [f32], width: usize, f: impl Fn(&mut [f32], usize) + Sync) {
    let rows = data.len() / width.max(1);
    if rows < 2 * ROWS_PER_TASK || threads() < 2 {
        f(data, 0);
    } else {
        data.par_chunks_mut(ROWS_PER_TASK * width)
            .enumerate()
            .for_each(|(i, chunk)| f(chunk, i * ROWS_PER_TASK));
    }
}

fn activate(act: HiddenAct, rows: &mut [f32], bias: &[f32]) {
    match act {
        HiddenAct::Gelu => kernels::bias_gelu(rows, bias),
        other => {
            kernels::add_bias(rows, bias);
            for v in rows.iter_mut() {
                *v = other.scalar(*v);
            }
        }
    }
}

/// A batch packed without padding: where each sentence's tokens start, and each token's word,
/// position and type ids.
pub(super) struct Packed {
    pub b: usize,
    pub seq: usize,
    /// `offsets[r]..offsets[r + 1]` are sentence `r`'s rows; the last entry is the token count.
    pub offsets: Vec<usize>,
    pub ids: Vec<(usize, usize, usize)>,
}

impl Packed {
    pub fn new(bert: &Bert, input: &EncoderInput) -> candle_core::Result<Self> {
        let (b, seq) = input.ids.dims2()?;
        let e = &bert.embeddings;
        e.check_positions(seq)?;
        let ids = input.ids.flatten_all()?.to_vec1::<u32>()?;
        let type_ids = input.type_ids.flatten_all()?.to_vec1::<u32>()?;
        let mut offsets = Vec::with_capacity(b + 1);
        offsets.push(0);
        let mut packed = Vec::new();
        for (r, &len) in input.lengths.iter().enumerate() {
            for i in 0..len.min(seq) {
                let p = e.position_offset.map_or(i, |pad| pad + 1 + i);
                packed.push((ids[r * seq + i] as usize, p, type_ids[r * seq + i] as usize));
            }
            offsets.push(packed.len());
        }
        Ok(Packed {
            b,
            seq,
            offsets,
            ids: packed,
        })
    }

    pub fn tokens(&self) -> usize {
        self.ids.len()
    }

    /// Word + position + type embedding of every token (before the layer norm).
    pub fn embedding_sums(&self, bert: &Bert) -> candle_core::Result<Vec<f32>> {
        let e = &bert.embeddings;
        let h = bert.config.hidden_size;
        let word = Data::of(e.word.weight())?;
        let pos = Data::of(e.position.weight())?;
        let typ = e
            .token_type
            .as_ref()
            .map(|t| Data::of(t.weight()))
            .transpose()?;
        let (word, pos) = (word.get(), pos.get());
        let typ = typ.as_ref().map(|t| t.get());
        let vocab = word.len() / h;
        let types = typ.map_or(1, |t| t.len() / h);
        let mut x = vec![0f32; self.tokens() * h];
        for (dst, &(id, p, t)) in x.chunks_exact_mut(h).zip(&self.ids) {
            if id >= vocab || t >= types {
                candle_core::bail!(
                    "token id {id} / type id {t} out of range (vocabulary {vocab}, types {types})"
                );
            }
            let (w, pe) = (&word[id * h..(id + 1) * h], &pos[p * h..(p + 1) * h]);
            match typ {
                Some(typ) => {
                    let te = &typ[t * h..(t + 1) * h];
                    for j in 0..h {
                        dst[j] = (w[j] + pe[j]) + te[j];
                    }
                }
                None => {
                    for j in 0..h {
                        dst[j] = w[j] + pe[j];
                    }
                }
            }
        }
        Ok(x)
    }

    /// Packed rows (`width` values each) back into a padded `[b, seq, width]` tensor, padding 0.
    pub fn unpack(
        &self,
        x: &[f32],
        width: usize,
        device: &candle_core::Device,
    ) -> candle_core::Result<Tensor> {
        let (b, seq) = (self.b, self.seq);
        let mut out = vec![0f32; b * seq * width];
        for (r, w) in self.offsets.windows(2).enumerate() {
            let len = w[1] - w[0];
            out[r * seq * width..(r * seq + len) * width]
                .copy_from_slice(&x[w[0] * width..w[1] * width]);
        }
        Tensor::from_vec(out, (b, seq, width), device)
    }
}

/// `[b, seq]` ids -> `[b, seq, hidden]` token vectors (padding rows are 0).
pub(super) fn forward(bert: &Bert, input: &EncoderInput) -> candle_core::Result<Tensor> {
    let (packed, x) = run(bert, input, None)?;
    packed.unpack(&x, bert.config.hidden_size, input.ids.device())
}

/// `[b, hidden]`: the vector of token `at[r]` of each sentence `r`, the last layer run for
/// those tokens alone past its keys and values (CLS and last-token pooling read no other).
pub(super) fn forward_at(
    bert: &Bert,
    input: &EncoderInput,
    at: &[usize],
) -> candle_core::Result<Tensor> {
    let (packed, x) = run(bert, input, Some(at))?;
    Tensor::from_vec(x, (packed.b, bert.config.hidden_size), input.ids.device())
}

/// The pass: every token's rows, or with `at` one row per sentence (that token's).
fn run(
    bert: &Bert,
    input: &EncoderInput,
    at: Option<&[usize]>,
) -> candle_core::Result<(Packed, Vec<f32>)> {
    let c = &bert.config;
    let h = c.hidden_size;
    let packed = Packed::new(bert, input)?;
    let mut x = packed.embedding_sums(bert)?;
    let e = &bert.embeddings;
    let gamma = Data::of(e.norm.weight())?;
    let beta = Data::of(e.norm.bias())?;
    let (g, bt) = (gamma.get(), beta.get());
    let eps = e.norm.eps() as f32;
    for_rows(&mut x, h, |rows, _| {
        kernels::layer_norm_rows(rows, g, bt, eps)
    });
    drop((gamma, beta));

    let mut scratch = Scratch::take(packed.tokens(), h, c.intermediate_size);
    let span = longest(&packed.offsets);
    let rel_values = match &bert.relative {
        Some(r) => r.values(span)?,
        None => Vec::new(),
    };
    let rel = kernels::RelBias {
        values: &rel_values,
        span,
        window: None,
    };
    let low = low_layers(bert)?;
    let rows = at.map(|at| picked_rows(&packed.offsets, at)).transpose()?;
    let every = bert.layers.len() - usize::from(rows.is_some() && !bert.layers.is_empty());
    for (i, layer) in bert.layers.iter().enumerate().take(every) {
        let q = low.map(|l| &l[i]);
        layer_forward(layer, q, bert, &packed.offsets, rel, &mut x, &mut scratch)?;
    }
    if let Some(rows) = rows {
        let mut picked = pick(&x, h, &rows);
        if let Some((i, layer)) = bert.layers.iter().enumerate().nth(every) {
            let q = low.map(|l| &l[i]);
            let at = at.expect("rows come from `at`");
            let offsets = &packed.offsets;
            last_layer_at(
                layer,
                q,
                bert,
                offsets,
                at,
                rel,
                &x,
                &mut picked,
                &mut scratch,
            )?;
        }
        x = picked;
    }
    scratch.give_back();
    Ok((packed, x))
}

/// Each sentence's row `at[r]` among the packed rows, checked against its length.
pub(super) fn picked_rows(offsets: &[usize], at: &[usize]) -> candle_core::Result<Vec<usize>> {
    if at.len() + 1 != offsets.len() {
        candle_core::bail!(
            "{} tokens picked for {} sentences",
            at.len(),
            offsets.len() - 1
        );
    }
    offsets
        .windows(2)
        .zip(at)
        .map(|(w, &i)| {
            if w[0] + i >= w[1] {
                candle_core::bail!("token {i} picked from a sentence of {} tokens", w[1] - w[0]);
            }
            Ok(w[0] + i)
        })
        .collect()
}

/// The rows `rows` of `x` (`h` values each), one after another.
pub(super) fn pick(x: &[f32], h: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| &x[r * h..(r + 1) * h])
        .copied()
        .collect()
}

/// Buffers reused by every layer of one forward pass.
struct Scratch {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
    qkv_bias: Vec<f32>,
}

thread_local! {
    /// The last pass's buffers, kept for the next pass on this thread (the fused pass runs on the
    /// pool's first thread): made anew, their zero fill was 3-4% of an int8 encode.
    static KEPT: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
}

impl Scratch {
    /// Buffers kept are given back only up to this many values in all (a long batch's are let
    /// go rather than held while the model sits idle).
    const KEEP_AT_MOST: usize = 4 << 20;

    /// Buffers for `tokens` tokens: this thread's kept ones, cut or grown to the sizes (only
    /// new room is zeroed; every value is written before it is read), else new ones.
    fn take(tokens: usize, h: usize, inter: usize) -> Self {
        let mut s = KEPT.with(|k| k.borrow_mut().take()).unwrap_or(Self {
            qkv: Vec::new(),
            ctx: Vec::new(),
            tmp: Vec::new(),
            inter: Vec::new(),
            qkv_bias: Vec::new(),
        });
        s.qkv.resize(tokens * 3 * h, 0.0);
        s.ctx.resize(tokens * h, 0.0);
        s.tmp.resize(tokens * h, 0.0);
        s.inter.resize(tokens * inter, 0.0);
        s.qkv_bias.resize(3 * h, 0.0);
        s
    }

    /// Keeps the buffers for this thread's next pass, unless they are large.
    fn give_back(self) {
        let size = [&self.qkv, &self.ctx, &self.tmp, &self.inter]
            .iter()
            .map(|v| v.capacity())
            .sum::<usize>();
        if size <= Self::KEEP_AT_MOST {
            KEPT.with(|k| *k.borrow_mut() = Some(self));
        }
    }
}

/// The most tokens of one sentence.
pub(super) fn longest(offsets: &[usize]) -> usize {
    offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

/// Q, K and V of every row of `x` into `s.qkv`, biases added.
fn queries_keys_values(
    layer: &Layer,
    low: Option<&LowLayer>,
    bert: &Bert,
    x: &[f32],
    s: &mut Scratch,
) -> candle_core::Result<()> {
    let h = bert.config.hidden_size;
    let t = x.len() / h;
    let a = &layer.attention;

    // Q, K, V side by side: row i of `qkv` is [q_i | k_i | v_i] (one product in int8 and bf16,
    // whose weight has them stacked).
    let stacked = low.is_some_and(|l| l.qkv.runs(t));
    if let Some(l) = low.filter(|_| stacked) {
        l.qkv.matmul(&mut s.qkv, 3 * h, x, t);
    }
    for (which, lin) in [&a.query, &a.key, &a.value].into_iter().enumerate() {
        if !stacked {
            let w = Data::of(lin.weight())?;
            kernels::matmul_wt(&mut s.qkv[which * h..], 3 * h, x, t, h, w.get(), h);
        }
        match lin.bias() {
            Some(bias) => {
                s.qkv_bias[which * h..(which + 1) * h].copy_from_slice(Data::of(bias)?.get())
            }
            None => s.qkv_bias[which * h..(which + 1) * h].fill(0.0),
        }
    }
    let qkv_bias = &s.qkv_bias;
    for_rows(&mut s.qkv[..t * 3 * h], 3 * h, |rows, _| {
        kernels::add_bias(rows, qkv_bias)
    });
    Ok(())
}

fn layer_forward(
    layer: &Layer,
    low: Option<&LowLayer>,
    bert: &Bert,
    offsets: &[usize],
    rel: kernels::RelBias,
    x: &mut [f32],
    s: &mut Scratch,
) -> candle_core::Result<()> {
    let (h, a) = (bert.config.hidden_size, &layer.attention);
    queries_keys_values(layer, low, bert, x, s)?;
    attention(&s.qkv, &mut s.ctx, offsets, h, a.heads, a.head_dim, rel);
    after_attention(layer, low, bert, x, s)
}

/// The last layer for the tokens `at[r]` of each sentence alone: the keys and values of every
/// token of `x`, then attention, its output and the feed-forward block for `picked` (those
/// tokens' rows of `x`, one per sentence), which become their output rows.
#[allow(clippy::too_many_arguments)]
fn last_layer_at(
    layer: &Layer,
    low: Option<&LowLayer>,
    bert: &Bert,
    offsets: &[usize],
    at: &[usize],
    rel: kernels::RelBias,
    x: &[f32],
    picked: &mut [f32],
    s: &mut Scratch,
) -> candle_core::Result<()> {
    let (h, a) = (bert.config.hidden_size, &layer.attention);
    queries_keys_values(layer, low, bert, x, s)?;
    attention_at(&s.qkv, &mut s.ctx, offsets, at, h, a.heads, a.head_dim, rel);
    after_attention(layer, low, bert, picked, s)
}

/// Attention output, residual and layer norm, then the feed-forward block, for the rows of `x`
/// (their context rows first in `s.ctx`).
fn after_attention(
    layer: &Layer,
    low: Option<&LowLayer>,
    bert: &Bert,
    x: &mut [f32],
    s: &mut Scratch,
) -> candle_core::Result<()> {
    let c = &bert.config;
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let t = x.len() / h;
    let a = &layer.attention;
    // Attention output, residual, layer norm.
    let q = |f: fn(&LowLayer) -> &PreparedWeight| low.map(f);
    dense_residual_norm(
        &a.output,
        q(|l| &l.attention_output),
        &a.norm,
        &s.ctx[..t * h],
        h,
        &mut s.tmp,
        x,
    )?;

    // Feed-forward: intermediate + activation, output + residual + layer norm.
    let w = q(|l| &l.intermediate);
    let hidden = &mut s.inter[..t * inter];
    product(hidden, inter, x, t, h, &layer.intermediate, inter, w)?;
    let bias = bias_or_zeros(layer.intermediate.bias(), inter)?;
    let act = layer.act;
    for_rows(hidden, inter, |rows, _| activate(act, rows, &bias));
    dense_residual_norm(
        &layer.output,
        q(|l| &l.output),
        &layer.norm,
        hidden,
        inter,
        &mut s.tmp,
        x,
    )
}

fn bias_or_zeros(bias: Option<&Tensor>, n: usize) -> candle_core::Result<Vec<f32>> {
    Ok(match bias {
        Some(b) => Data::of(b)?.get().to_vec(),
        None => vec![0.0; n],
    })
}

/// `x = LayerNorm(input · Wᵀ + b + x)`.
fn dense_residual_norm(
    lin: &super::Linear,
    low: Option<&PreparedWeight>,
    norm: &super::LayerNorm,
    input: &[f32],
    in_dim: usize,
    tmp: &mut [f32],
    x: &mut [f32],
) -> candle_core::Result<()> {
    let h = norm.weight().dim(0)?;
    let t = x.len() / h;
    product(tmp, h, input, t, in_dim, lin, h, low)?;
    let bias = bias_or_zeros(lin.bias(), h)?;
    let gamma = Data::of(norm.weight())?;
    let beta = Data::of(norm.bias())?;
    let (gamma, beta) = (gamma.get(), beta.get());
    let eps = norm.eps() as f32;
    let tmp = &*tmp;
    for_rows(x, h, |rows, first| {
        let y = &tmp[first * h..first * h + rows.len()];
        kernels::bias_residual_layer_norm(y, &bias, rows, gamma, beta, eps)
    });
    Ok(())
}

/// [`attention`] for the query `at[r]` of each sentence `r` alone: `ctx` row `r` gets its
/// context.
#[allow(clippy::too_many_arguments)]
fn attention_at(
    qkv: &[f32],
    ctx: &mut [f32],
    offsets: &[usize],
    at: &[usize],
    h: usize,
    heads: usize,
    d: usize,
    rel: kernels::RelBias,
) {
    let scale = 1.0 / (d as f32).sqrt();
    let run = |((w, &i), out): ((&[usize], &usize), &mut [f32])| {
        let len = w[1] - w[0];
        let mut scratch = vec![0f32; kernels::attend_scratch(len, d)];
        let rows = &qkv[w[0] * 3 * h..w[1] * 3 * h];
        let (none, scratch) = (&mut [][..], &mut scratch);
        kernels::attend_queries(
            rows,
            out,
            len,
            heads,
            d,
            scale,
            rel,
            i,
            1,
            none,
            &[],
            scratch,
        );
    };
    let jobs = offsets.windows(2).zip(at).zip(ctx.chunks_exact_mut(h));
    let tokens = offsets.last().copied().unwrap_or(0);
    if at.len() > 1 && tokens >= 2 * ROWS_PER_TASK && threads() > 1 {
        jobs.collect::<Vec<_>>().into_par_iter().for_each(run);
    } else {
        jobs.for_each(run);
    }
}

/// Multi-head attention of each sentence over its own tokens: `ctx` rows get
/// `softmax(q kᵀ / √d + rel) v` per head.
fn attention(
    qkv: &[f32],
    ctx: &mut [f32],
    offsets: &[usize],
    h: usize,
    heads: usize,
    d: usize,
    rel: kernels::RelBias,
) {
    let scale = 1.0 / (d as f32).sqrt();
    // Split `ctx` into each sentence's rows.
    let mut parts = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut rest = ctx;
    for w in offsets.windows(2) {
        let (part, tail) = rest.split_at_mut((w[1] - w[0]) * h);
        parts.push((w[0], part));
        rest = tail;
    }
    let run = |(start, part): (usize, &mut [f32])| {
        let len = part.len() / h;
        let mut scratch = vec![0f32; kernels::attend_scratch(len, d)];
        kernels::attend(
            &qkv[start * 3 * h..(start + len) * 3 * h],
            part,
            len,
            heads,
            d,
            scale,
            rel,
            &mut scratch,
        );
    };
    let tokens = offsets.last().copied().unwrap_or(0);
    if parts.len() > 1 && tokens >= 2 * ROWS_PER_TASK && threads() > 1 {
        parts.into_par_iter().for_each(run);
    } else {
        parts.into_iter().for_each(run);
    }
}
