//! Training the encoder on the CPU without candle's autograd: a forward pass that records what
//! its backward pass needs ([`BertTape`]), and that backward pass written out by hand, on packed
//! tokens (no padding) with the fused kernels of `model/cpu/kernels.rs`.
//!
//! The gradients are those of the composition in `bert.rs` (training mode), dropout included:
//! masks are drawn from the same [`DropoutRng`] in the same order and shapes as the composition
//! draws them, so a run is the same run either way (`tests/backprop.rs` compares the two, with and
//! without dropout). Only the encoder is done here; pooling, Dense, Normalize and the loss stay
//! candle operations, and meet this code at the token vectors: the session takes their gradient
//! from candle's backward pass and hands it to [`BertTape::backward`].

use candle_core::Tensor;
use rayon::prelude::*;

use super::super::layers::{DropoutRng, LayerNorm, Linear};
use super::fused::{Data, Packed};
use super::{Bert, EncoderInput, HiddenAct, Layer};
use crate::model::cpu::kernels::{self, Mat};
use crate::model::cpu::packed;
use crate::model::transformer::{RowGrad, WeightGrads};

/// Everything the backward pass needs from one recorded forward pass.
pub struct BertTape {
    b: usize,
    seq: usize,
    h: usize,
    offsets: Vec<usize>,
    /// The longest sentence: the span of MPNet's relative position bias.
    span: usize,
    /// Per packed token: word id, position id, type id.
    ids: Vec<(usize, usize, usize)>,
    emb_norm: NormSaved,
    emb_mask: Vec<f32>,
    layers: Vec<LayerSaved>,
    /// The packed row of each sentence's one token whose vector the pass gave, where it gave
    /// those alone ([`forward`]'s `at`): the last layer past its attention holds those rows.
    picked: Option<Vec<usize>>,
}

struct NormSaved {
    xhat: Vec<f32>,
    inv: Vec<f32>,
}

struct LayerSaved {
    /// The layer's input.
    x0: Vec<f32>,
    qkv: Vec<f32>,
    /// Softmax weights, per sentence (at `prob_offsets`) `[head][i][j]`.
    probs: Vec<f32>,
    probs_mask: Vec<f32>,
    ctx: Vec<f32>,
    mask1: Vec<f32>,
    norm1: NormSaved,
    x1: Vec<f32>,
    /// The activation (GELU for most models) of the intermediate layer, and its derivative there.
    gelu: Vec<f32>,
    gelu_grad: Vec<f32>,
    mask2: Vec<f32>,
    norm2: NormSaved,
}

/// True when [`forward`] can train this model on this input.
pub(super) fn applies(bert: &Bert, input: &EncoderInput) -> bool {
    super::fused::applies(bert, input)
}

fn prob_offsets(offsets: &[usize], heads: usize) -> Vec<usize> {
    let mut out = vec![0];
    for w in offsets.windows(2) {
        let len = w[1] - w[0];
        out.push(out.last().copied().unwrap_or(0) + heads * len * len);
    }
    out
}

/// A dropout mask of the padded shape `dims` (drawn as the composition draws it), or empty when
/// dropout is off or `p` is 0.
fn draw(rng: Option<&DropoutRng>, dims: &[usize], p: f64) -> candle_core::Result<Vec<f32>> {
    match rng {
        Some(rng) if p > 0.0 => rng.mask_values(dims.iter().product(), p),
        _ => Ok(Vec::new()),
    }
}

/// Packs a `[b, seq, width]` padded mask to the real tokens' rows.
fn pack_rows(mask: Vec<f32>, offsets: &[usize], seq: usize, width: usize) -> Vec<f32> {
    if mask.is_empty() {
        return mask;
    }
    let mut out = Vec::with_capacity(offsets.last().copied().unwrap_or(0) * width);
    for (r, w) in offsets.windows(2).enumerate() {
        let len = w[1] - w[0];
        out.extend_from_slice(&mask[r * seq * width..(r * seq + len) * width]);
    }
    out
}

/// Packs a `[b, heads, seq, seq]` attention mask to each sentence's `[heads, len, len]`.
fn pack_probs(mask: Vec<f32>, offsets: &[usize], seq: usize, heads: usize) -> Vec<f32> {
    if mask.is_empty() {
        return mask;
    }
    let mut out = Vec::new();
    for (r, w) in offsets.windows(2).enumerate() {
        let len = w[1] - w[0];
        for head in 0..heads {
            for i in 0..len {
                let at = ((r * heads + head) * seq + i) * seq;
                out.extend_from_slice(&mask[at..at + len]);
            }
        }
    }
    out
}

/// Rows per task in the row-wise passes below. A fixed number, not one per thread, so that the
/// sums over rows (layer norm's scale and shift) come out the same on any number of threads.
const ROW_BLOCK: usize = 32;

/// `f(x, y)` on matching blocks of [`ROW_BLOCK`] rows of `x` and `y` (both `width` wide), on all
/// threads: the element-wise passes would otherwise leave all but one core idle between the
/// products.
fn par_rows2(x: &mut [f32], y: &[f32], width: usize, f: impl Fn(&mut [f32], &[f32]) + Sync + Send) {
    let block = ROW_BLOCK * width.max(1);
    x.par_chunks_mut(block)
        .zip(y.par_chunks(block))
        .for_each(|(x, y)| f(x, y));
}

/// `x = x ⊙ mask` (`mask` empty: no dropout), then `x += residual` when one is given.
fn apply_mask(x: &mut [f32], mask: &[f32], width: usize, residual: Option<&[f32]>) {
    match (mask.is_empty(), residual) {
        (true, None) => {}
        (false, None) => par_rows2(x, mask, width, kernels::mul_inplace),
        (true, Some(res)) => par_rows2(x, res, width, |x, res| {
            for (v, r) in x.iter_mut().zip(res) {
                *v += r;
            }
        }),
        (false, Some(res)) => {
            let block = ROW_BLOCK * width.max(1);
            x.par_chunks_mut(block)
                .zip(mask.par_chunks(block))
                .zip(res.par_chunks(block))
                .for_each(|((x, m), res)| {
                    for ((v, m), r) in x.iter_mut().zip(m).zip(res) {
                        *v = *v * m + r;
                    }
                })
        }
    }
}

/// `n` zeros, written on all threads (filled by one thread, a step's buffers left the other core
/// idle). Buffers a product fills whole come from `packed::product_wt_fresh` / `packed::product`
/// instead, with no fill at all.
fn zeros(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

/// `rows += bias` on every row, on all threads.
fn add_bias(rows: &mut [f32], bias: &[f32]) {
    rows.par_chunks_mut(ROW_BLOCK * bias.len().max(1))
        .for_each(|c| kernels::add_bias(c, bias));
}

/// `Σ_rows dy` (a bias gradient), in row order for every column, columns split across threads.
fn column_sums(dy: Mat) -> Vec<f32> {
    const COLS: usize = 64;
    let mut db = vec![0f32; dy.cols];
    db.par_chunks_mut(COLS).enumerate().for_each(|(c, part)| {
        let first = c * COLS;
        for r in 0..dy.rows {
            let row = r * dy.rs;
            for (j, v) in part.iter_mut().enumerate() {
                *v += dy.data[row + (first + j) * dy.cs];
            }
        }
    });
    db
}

fn bias_of(lin: &Linear, n: usize) -> candle_core::Result<Vec<f32>> {
    Ok(match lin.bias() {
        Some(b) => Data::of(b)?.get().to_vec(),
        None => vec![0.0; n],
    })
}

fn norm_save(norm: &LayerNorm, r: &[f32], y: &mut [f32]) -> candle_core::Result<NormSaved> {
    let h = norm.weight().dim(0)?;
    let rows = r.len() / h;
    let mut saved = NormSaved {
        xhat: zeros(r.len()),
        inv: vec![0.0; rows],
    };
    let gamma = Data::of(norm.weight())?;
    let beta = Data::of(norm.bias())?;
    let (gamma, beta, eps) = (gamma.get(), beta.get(), norm.eps() as f32);
    let block = ROW_BLOCK * h;
    r.par_chunks(block)
        .zip(y.par_chunks_mut(block))
        .zip(saved.xhat.par_chunks_mut(block))
        .zip(saved.inv.par_chunks_mut(ROW_BLOCK))
        .for_each(|(((r, y), xhat), inv)| {
            kernels::layer_norm_save(r, gamma, beta, eps, y, xhat, inv)
        });
    Ok(saved)
}

/// Runs the encoder in training mode, recording the [`Tape`]. Returns the token vectors
/// `[b, seq, hidden]` (padding rows 0), as the composition would (up to rounding).
/// The recorded forward pass: every token's vectors `[b, seq, hidden]`, or with `at` the
/// vector of token `at[r]` of each sentence `r`, `[b, hidden]`, the last layer past its
/// attention run for those tokens alone (its dropout masks drawn whole, as the composition
/// draws them, and those tokens' rows kept).
pub(super) fn forward(
    bert: &Bert,
    input: &EncoderInput,
    rng: Option<&DropoutRng>,
    at: Option<&[usize]>,
) -> candle_core::Result<(Tensor, BertTape)> {
    let c = &bert.config;
    let (h, inter, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
    let d = h / heads;
    let e = &bert.embeddings;
    let packed = Packed::new(bert, input)?;
    let (b, seq, t) = (packed.b, packed.seq, packed.tokens());
    let offsets = packed.offsets.clone();
    // With no layer to run for them alone, the picked rows are the embeddings'.
    let picked = at
        .map(|at| super::fused::picked_rows(&offsets, at))
        .transpose()?;

    // Embeddings: sum, layer norm, dropout.
    let sum = packed.embedding_sums(bert)?;
    let mut x = zeros(t * h);
    let emb_norm = norm_save(&e.norm, &sum, &mut x)?;
    let emb_mask = pack_rows(draw(rng, &[b, seq, h], e.dropout)?, &offsets, seq, h);
    apply_mask(&mut x, &emb_mask, h, None);

    let prob_off = prob_offsets(&offsets, heads);
    let span = super::fused::longest(&offsets);
    let rel_values = match &bert.relative {
        Some(r) => r.values(span)?,
        None => Vec::new(),
    };
    let rel = kernels::RelBias {
        values: &rel_values,
        span,
        window: None,
    };
    let mut layers = Vec::with_capacity(bert.layers.len());
    for (i, layer) in bert.layers.iter().enumerate() {
        let a = &layer.attention;
        // The last layer past its attention for the picked rows alone.
        let only = picked.as_deref().filter(|_| i + 1 == bert.layers.len());
        let rows_out = only.map_or(t, <[usize]>::len);
        let x0 = x;
        // Q, K, V.
        let mut qkv = zeros(t * 3 * h);
        let mut qkv_bias = Vec::with_capacity(3 * h);
        {
            let ws = [&a.query, &a.key, &a.value]
                .map(|lin| Data::of(lin.weight()))
                .into_iter()
                .collect::<candle_core::Result<Vec<_>>>()?;
            let parts: Vec<(&[f32], usize)> = ws.iter().map(|w| (w.get(), h)).collect();
            packed::matmul_wt_fresh(&mut qkv, 3 * h, &x0, t, h, &parts);
        }
        for lin in [&a.query, &a.key, &a.value] {
            qkv_bias.extend(bias_of(lin, h)?);
        }
        add_bias(&mut qkv, &qkv_bias);
        // Attention, with the probabilities' dropout mask.
        let probs_mask = pack_probs(
            draw(rng, &[b, heads, seq, seq], a.attn_dropout)?,
            &offsets,
            seq,
            heads,
        );
        let mut probs = zeros(*prob_off.last().unwrap_or(&0));
        let mut ctx = zeros(rows_out * h);
        {
            let scale = 1.0 / (d as f32).sqrt();
            let mut jobs = Vec::new();
            let (mut ctx_rest, mut probs_rest) = (&mut ctx[..], &mut probs[..]);
            for (r, w) in offsets.windows(2).enumerate() {
                let len = w[1] - w[0];
                // Every query, or the picked one (its row, and its weights in the sentence's
                // layout: the others stay 0, which the backward pass reads as no gradient).
                let queries = match only {
                    Some(rows) => rows[r] - w[0]..rows[r] - w[0] + 1,
                    None => 0..len,
                };
                let (c, cr) = ctx_rest.split_at_mut(queries.len() * h);
                let (p, pr) = probs_rest.split_at_mut(heads * len * len);
                ctx_rest = cr;
                probs_rest = pr;
                jobs.push((w[0], len, prob_off[r], queries, c, p));
            }
            let qkv = &qkv;
            let probs_mask = &probs_mask;
            jobs.into_par_iter()
                .for_each(|(start, len, po, queries, c, p)| {
                    let m = if probs_mask.is_empty() {
                        &[][..]
                    } else {
                        &probs_mask[po..po + heads * len * len]
                    };
                    let mut scratch = vec![0f32; kernels::attend_scratch(len, d)];
                    kernels::attend_queries(
                        &qkv[start * 3 * h..(start + len) * 3 * h],
                        c,
                        len,
                        heads,
                        d,
                        scale,
                        rel,
                        queries.start,
                        queries.len(),
                        p,
                        m,
                        &mut scratch,
                    );
                });
        }
        // The picked rows of the layer's input, for the residual.
        let x0_rows = match only {
            Some(rows) => super::fused::pick(&x0, h, rows),
            None => Vec::new(),
        };
        let residual0: &[f32] = if only.is_some() { &x0_rows } else { &x0 };
        // A mask drawn whole, as the composition draws it, cut to the rows computed.
        let rows_of = |mask: Vec<f32>| match only {
            Some(rows) if !mask.is_empty() => super::fused::pick(&mask, h, rows),
            _ => mask,
        };
        let t = rows_out;
        // Output projection, dropout, residual, layer norm.
        let w = Data::of(a.output.weight())?;
        let mut r1 = packed::product_wt_fresh(&ctx, t, h, w.get(), h);
        drop(w);
        add_bias(&mut r1, &bias_of(&a.output, h)?);
        let mask1 = pack_rows(draw(rng, &[b, seq, h], a.hidden_dropout)?, &offsets, seq, h);
        let mask1 = rows_of(mask1);
        apply_mask(&mut r1, &mask1, h, Some(residual0));
        let mut x1 = zeros(t * h);
        let norm1 = norm_save(&a.norm, &r1, &mut x1)?;
        // Feed-forward.
        let w = Data::of(layer.intermediate.weight())?;
        let mut u = packed::product_wt_fresh(&x1, t, h, w.get(), inter);
        drop(w);
        add_bias(&mut u, &bias_of(&layer.intermediate, inter)?);
        // The activation in place (`u` becomes its value) and its derivative.
        let mut g = u;
        let mut gelu_grad = zeros(t * inter);
        let block = ROW_BLOCK * inter;
        g.par_chunks_mut(block)
            .zip(gelu_grad.par_chunks_mut(block))
            .for_each(|(g, gelu_grad)| match layer.act {
                HiddenAct::Gelu => kernels::gelu_and_grad(g, gelu_grad),
                act => {
                    for (g, d) in g.iter_mut().zip(gelu_grad.iter_mut()) {
                        (*g, *d) = act.value_and_grad(*g);
                    }
                }
            });
        let w = Data::of(layer.output.weight())?;
        let mut r2 = packed::product_wt_fresh(&g, t, inter, w.get(), h);
        drop(w);
        add_bias(&mut r2, &bias_of(&layer.output, h)?);
        let mask2 = rows_of(pack_rows(
            draw(rng, &[b, seq, h], layer.dropout)?,
            &offsets,
            seq,
            h,
        ));
        apply_mask(&mut r2, &mask2, h, Some(&x1));
        let mut x2 = zeros(t * h);
        let norm2 = norm_save(&layer.norm, &r2, &mut x2)?;
        layers.push(LayerSaved {
            x0,
            qkv,
            probs,
            probs_mask,
            ctx,
            mask1,
            norm1,
            x1,
            gelu: g,
            gelu_grad,
            mask2,
            norm2,
        });
        x = x2;
    }

    let tokens = match &picked {
        Some(rows) => {
            if bert.layers.is_empty() {
                x = super::fused::pick(&x, h, rows);
            }
            Tensor::from_vec(x, (b, h), input.ids.device())?
        }
        None => packed.unpack(&x, h, input.ids.device())?,
    };
    Ok((
        tokens,
        BertTape {
            b,
            seq,
            h,
            offsets,
            span,
            ids: packed.ids,
            emb_norm,
            emb_mask,
            layers,
            picked,
        },
    ))
}

/// `x`'s rows (`h` values each) at the places `rows` among `t` rows of zeros.
fn scatter(x: &[f32], h: usize, rows: &[usize], t: usize) -> Vec<f32> {
    let mut out = zeros(t * h);
    for (&r, v) in rows.iter().zip(x.chunks_exact(h)) {
        out[r * h..(r + 1) * h].copy_from_slice(v);
    }
    out
}

/// The gradients of a linear layer's weight and bias.
fn push_linear(
    grads: &mut WeightGrads,
    lin: &Linear,
    (dw, squares): (Vec<f32>, f64),
    db: Vec<f32>,
) {
    grads.push_with_squares(lin.weight(), dw, squares);
    if let Some(b) = lin.bias() {
        grads.push(b, db);
    }
}

/// The gradients of a layer norm's scale and shift.
fn push_norm(grads: &mut WeightGrads, norm: &LayerNorm, dgamma: Vec<f32>, dbeta: Vec<f32>) {
    grads.push(norm.weight(), dgamma);
    grads.push(norm.bias(), dbeta);
}

/// Where [`linear_backward`] puts `dy · w`: added into an existing gradient, or a new one.
enum Dx<'a> {
    AddTo(&'a mut [f32]),
    New,
}

/// `dw = dyᵀ · x` (`[n, k]`), `db = Σ dy`, and `dx = dy · w` (returned, or added into a given
/// gradient), for `y = x wᵀ + b`.
fn linear_backward(
    lin: &Linear,
    dy: Mat,
    x: Mat,
    dx: Dx,
    grads: &mut WeightGrads,
) -> candle_core::Result<Option<Vec<f32>>> {
    let (n, k) = (dy.cols, x.cols);
    let dw = packed::product_and_squares(dy.t(), x);
    let db = column_sums(dy);
    let w = Data::of(lin.weight())?;
    let w = Mat::rows(w.get(), n, k);
    let new = match dx {
        Dx::AddTo(dx) => {
            packed::matmul(dx, k, dy, w, true);
            None
        }
        Dx::New => Some(packed::product(dy, w)),
    };
    push_linear(grads, lin, dw, db);
    Ok(new)
}

fn norm_backward(
    norm: &LayerNorm,
    saved: &NormSaved,
    dy: &[f32],
    dr: &mut [f32],
    grads: &mut WeightGrads,
) -> candle_core::Result<()> {
    let h = saved.xhat.len() / saved.inv.len().max(1);
    let gamma = Data::of(norm.weight())?;
    let gamma = gamma.get();
    let block = ROW_BLOCK * h;
    // Each block of rows sums its own part of the scale and shift gradients; the parts are
    // added in block order.
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dy
        .par_chunks(block)
        .zip(saved.xhat.par_chunks(block))
        .zip(saved.inv.par_chunks(ROW_BLOCK))
        .zip(dr.par_chunks_mut(block))
        .map(|(((dy, xhat), inv), dr)| {
            let (mut dgamma, mut dbeta) = (vec![0f32; h], vec![0f32; h]);
            kernels::layer_norm_backward(dy, xhat, inv, gamma, dr, &mut dgamma, &mut dbeta);
            (dgamma, dbeta)
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0f32; h], vec![0f32; h]);
    for (g, b) in parts {
        kernels::axpy(&mut dgamma, 1.0, &g);
        kernels::axpy(&mut dbeta, 1.0, &b);
    }
    push_norm(grads, norm, dgamma, dbeta);
    Ok(())
}

impl BertTape {
    /// From the gradient of the token vectors (`[b, seq, hidden]`, as returned by [`forward`])
    /// to the gradient of every encoder weight.
    pub fn backward(&self, bert: &Bert, grad_tokens: &[f32]) -> candle_core::Result<WeightGrads> {
        let (h, seq) = (self.h, self.seq);
        let rows = if self.picked.is_some() { 1 } else { seq };
        if grad_tokens.len() != self.b * rows * h {
            candle_core::bail!("token gradient has {} values", grad_tokens.len());
        }
        let c = &bert.config;
        let (inter, heads) = (c.intermediate_size, c.num_attention_heads);
        let d = h / heads;
        let t = *self.offsets.last().unwrap_or(&0);
        let mut grads = WeightGrads::default();
        // Gradient of the last layer's output, packed (or the picked rows').
        let mut dx = Vec::with_capacity(t * h);
        match &self.picked {
            Some(_) => dx.extend_from_slice(grad_tokens),
            None => {
                for (r, w) in self.offsets.windows(2).enumerate() {
                    let len = w[1] - w[0];
                    dx.extend_from_slice(&grad_tokens[r * seq * h..(r * seq + len) * h]);
                }
            }
        }
        if let (Some(rows), true) = (&self.picked, bert.layers.is_empty()) {
            dx = scatter(&dx, h, rows, t);
        }
        let prob_off = prob_offsets(&self.offsets, heads);
        // MPNet: the gradient of the relative position bias, shared by every layer.
        let width = 2 * self.span.max(1) - 1;
        let mut drel = match &bert.relative {
            Some(_) => vec![0f32; heads * width],
            None => Vec::new(),
        };

        let last = bert.layers.len().wrapping_sub(1);
        for (i, (layer, saved)) in bert.layers.iter().zip(&self.layers).enumerate().rev() {
            let only = self.picked.as_deref().filter(|_| i == last);
            dx = self.layer_backward(
                layer,
                saved,
                dx,
                only,
                &prob_off,
                (h, inter, heads, d),
                &mut drel,
                &mut grads,
            )?;
        }
        if let Some(r) = &bert.relative {
            // Fold the per-offset gradient into the table's buckets.
            let mut dtable = vec![0f32; r.buckets * heads];
            for o in 0..width {
                let bucket = super::relative_bucket(o as i64 - (width / 2) as i64, r.buckets);
                for head in 0..heads {
                    dtable[bucket * heads + head] += drel[head * width + o];
                }
            }
            grads.push(r.table.weight(), dtable);
        }

        // Embeddings: dropout, layer norm, then the three tables.
        apply_mask(&mut dx, &self.emb_mask, h, None);
        let e = &bert.embeddings;
        let mut dsum = zeros(t * h);
        norm_backward(&e.norm, &self.emb_norm, &dx, &mut dsum, &mut grads)?;
        let rows = |w: &Tensor| w.dims()[0];
        let mut dpos = vec![0f32; rows(e.position.weight()) * h];
        // No token types (DistilBERT): an empty table that collects nothing.
        let mut dtype = vec![0f32; e.token_type.as_ref().map_or(0, |t| rows(t.weight())) * h];
        for (row, &(_, p, ty)) in self.ids.iter().enumerate() {
            let g = &dsum[row * h..(row + 1) * h];
            for (a, v) in dpos[p * h..(p + 1) * h].iter_mut().zip(g) {
                *a += v;
            }
            if let Some(d) = dtype.get_mut(ty * h..(ty + 1) * h) {
                for (a, v) in d.iter_mut().zip(g) {
                    *a += v;
                }
            }
        }
        // The word table's gradient only in the rows the batch looked up.
        let words: Vec<usize> = self.ids.iter().map(|&(id, _, _)| id).collect();
        grads.push_rows(e.word.weight(), RowGrad::gather(&words, &dsum, h));
        grads.push(e.position.weight(), dpos);
        if let Some(t) = &e.token_type {
            grads.push(t.weight(), dtype);
        }
        Ok(grads)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        layer: &Layer,
        s: &LayerSaved,
        dx2: Vec<f32>,
        only: Option<&[usize]>,
        prob_off: &[usize],
        (h, inter, heads, d): (usize, usize, usize, usize),
        drel: &mut [f32],
        grads: &mut WeightGrads,
    ) -> candle_core::Result<Vec<f32>> {
        // The rows past attention: every token's, or (`only`) the picked ones'.
        let t = dx2.len() / h;
        let a = &layer.attention;
        // Output layer norm; the residual carries its input gradient to x1.
        let mut dr2 = zeros(t * h);
        norm_backward(&layer.norm, &s.norm2, &dx2, &mut dr2, grads)?;
        let mut dx1 = dr2.clone();
        apply_mask(&mut dr2, &s.mask2, h, None);
        // Output dense, GELU, intermediate dense.
        let mut dg = linear_backward(
            &layer.output,
            Mat::rows(&dr2, t, h),
            Mat::rows(&s.gelu, t, inter),
            Dx::New,
            grads,
        )?
        .expect("a new gradient");
        par_rows2(&mut dg, &s.gelu_grad, inter, kernels::mul_inplace);
        linear_backward(
            &layer.intermediate,
            Mat::rows(&dg, t, inter),
            Mat::rows(&s.x1, t, h),
            Dx::AddTo(&mut dx1),
            grads,
        )?;
        drop(dg);
        // Attention layer norm; the residual carries its input gradient to x0.
        let mut dr1 = zeros(t * h);
        norm_backward(&a.norm, &s.norm1, &dx1, &mut dr1, grads)?;
        let dx0 = dr1.clone();
        apply_mask(&mut dr1, &s.mask1, h, None);
        let dctx = linear_backward(
            &a.output,
            Mat::rows(&dr1, t, h),
            Mat::rows(&s.ctx, t, h),
            Dx::New,
            grads,
        )?
        .expect("a new gradient");
        // The picked rows' gradients at their places among every token's (the others' context
        // reached nothing: zero).
        let all = *self.offsets.last().unwrap_or(&0);
        let (mut dx0, dctx) = match only {
            Some(rows) => (scatter(&dx0, h, rows, all), scatter(&dctx, h, rows, all)),
            None => (dx0, dctx),
        };
        let t = all;
        // Attention itself, per sentence.
        let mut dqkv = zeros(t * 3 * h);
        {
            let scale = 1.0 / (d as f32).sqrt();
            let mut jobs = Vec::new();
            let mut rest = &mut dqkv[..];
            for (r, w) in self.offsets.windows(2).enumerate() {
                let len = w[1] - w[0];
                let (part, tail) = rest.split_at_mut(len * 3 * h);
                rest = tail;
                jobs.push((w[0], len, prob_off[r], part));
            }
            let dctx = &dctx;
            let (span, rel_len) = (self.span, drel.len());
            let job_drel = jobs.into_par_iter().map(|(start, len, po, part)| {
                let n = heads * len * len;
                let mask = if s.probs_mask.is_empty() {
                    &[][..]
                } else {
                    &s.probs_mask[po..po + n]
                };
                let mut scratch = vec![0f32; kernels::attend_scratch(len, d)];
                let mut my_drel = vec![0f32; rel_len];
                kernels::attend_backward(
                    &s.qkv[start * 3 * h..(start + len) * 3 * h],
                    &s.probs[po..po + n],
                    mask,
                    &dctx[start * h..(start + len) * h],
                    part,
                    len,
                    heads,
                    d,
                    scale,
                    span,
                    &mut my_drel,
                    &mut scratch,
                );
                my_drel
            });
            // Summed in sentence order, so a run is the same run on any number of threads.
            let per_job: Vec<Vec<f32>> = job_drel.collect();
            for g in per_job {
                for (a, v) in drel.iter_mut().zip(g) {
                    *a += v;
                }
            }
        }
        for (which, lin) in [&a.query, &a.key, &a.value].into_iter().enumerate() {
            let dy = Mat {
                data: &dqkv[which * h..],
                rows: t,
                cols: h,
                rs: 3 * h,
                cs: 1,
            };
            linear_backward(lin, dy, Mat::rows(&s.x0, t, h), Dx::AddTo(&mut dx0), grads)?;
        }
        Ok(dx0)
    }
}
