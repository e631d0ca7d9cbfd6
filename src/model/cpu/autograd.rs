//! candle operations with their backward passes on the CPU kernels: how the families without a
//! hand-written backward pass (T5, ModernBERT, Qwen3) train on the CPU.
//!
//! - The linear layer's product ([`linear`]). candle's own `matmul` runs on `gemm` and its
//!   backward pass goes through transposed copies; here the forward product packs the weight as
//!   the BERT family's training pass does (`packed::product_wt_fresh`), and the gradients are
//!   `dy · w` and `dyᵀ · x` on the same kernels (`packed::product`), each written once into a
//!   new buffer.
//! - Row operations: layer norm, RMS norm, softmax, the gated activations (GeGLU, SwiGLU) and
//!   rotary positions. candle composes each from five to a dozen element-wise operations, and
//!   its autograd walks each of them back with as many more (a ModernBERT layer norm: eleven
//!   operations forward, about thirty backward, each a pass over the activations). Here each is
//!   one pass forward and one backward, over blocks of rows on the kernels' threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Shape, Tensor, TensorId,
};
use rayon::prelude::*;

use super::kernels::{self, Mat};
use super::packed;
use super::prepared::Data;

/// `x · wᵀ` (`x` is `[m, k]`, `w` is `[n, k]`, both float32 on the CPU), differentiable in both.
pub fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, Product::Forward)
}

/// The slice of a contiguous float32 CPU operand, with its two dimensions.
fn operand<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("linear on the CPU kernels: an operand is not float32");
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("linear on the CPU kernels: an operand is not contiguous");
    };
    let (r, c) = l.shape().dims2()?;
    Ok((&v[start..end], r, c))
}

/// The three products of a linear layer `y = x · wᵀ` (`x` is `[m, k]`, `w` is `[n, k]`), each a
/// candle operation on two row-major operands.
enum Product {
    /// `y = x · wᵀ` from `(x, w)`; differentiable, through the other two.
    Forward,
    /// `dx = dy · w` from `(dy, w)`.
    InputGrad,
    /// `dw = dyᵀ · x` from `(dy, x)`, keeping the sum of its squares (as `f64` bits) for the
    /// backward pass to note.
    WeightGrad(AtomicU64),
}

thread_local! {
    /// The sums of squares of the weight gradients [`linear`]'s backward pass made on this
    /// thread and not yet taken ([`take_weight_grad_squares`]), by gradient tensor.
    static WEIGHT_GRAD_SQUARES: std::cell::RefCell<Vec<(TensorId, f64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many sums are kept untaken (a backward pass nobody takes them from, as in tests
/// of the operations, starts the list again rather than growing it).
const KEPT_SQUARES: usize = 1 << 14;

/// The sums of squares of the weight gradients made by [`linear`]'s backward passes on this
/// thread since the last call, each with the gradient tensor it belongs to. Gradient clipping
/// takes them (`Grads::note_squares`) instead of summing those gradients again: each was summed
/// by the product's tiles while they were in L1 (`packed::product_and_squares`).
pub fn take_weight_grad_squares() -> Vec<(TensorId, f64)> {
    WEIGHT_GRAD_SQUARES.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        match self {
            Product::Forward => "linear-kernels",
            Product::InputGrad => "linear-kernels-input-grad",
            Product::WeightGrad(_) => "linear-kernels-weight-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, m, p) = operand(s1, l1)?;
        let (b, q, r) = operand(s2, l2)?;
        let fits = match self {
            Product::Forward => p == r,
            Product::InputGrad => p == q,
            Product::WeightGrad(_) => m == q,
        };
        if !fits {
            candle_core::bail!("{}: operands [{m}, {p}] and [{q}, {r}]", self.name());
        }
        let (out, shape) = match self {
            Product::Forward => (packed::product_wt_fresh(a, m, p, b, q), (m, q)),
            Product::InputGrad => (
                packed::product(Mat::rows(a, m, p), Mat::rows(b, q, r)),
                (m, r),
            ),
            Product::WeightGrad(squares) => {
                let (out, sum) =
                    packed::product_and_squares(Mat::rows(a, m, p).t(), Mat::rows(b, q, r));
                squares.store(sum.to_bits(), Ordering::Relaxed);
                (out, (p, r))
            }
        };
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if !matches!(self, Product::Forward) {
            candle_core::bail!("{}: no second derivative", self.name());
        }
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &Product::InputGrad)?;
        let op = Product::WeightGrad(AtomicU64::new(0));
        let dw = dy.apply_op2_no_bwd(x, &op)?;
        let Product::WeightGrad(squares) = &op else {
            unreachable!("made as a weight-gradient product above")
        };
        let squares = f64::from_bits(squares.load(Ordering::Relaxed));
        WEIGHT_GRAD_SQUARES.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() >= KEPT_SQUARES {
                s.clear();
            }
            s.push((dw.id(), squares));
        });
        Ok((Some(dx), Some(dw)))
    }
}

/// The values of a contiguous float32 CPU operand.
fn flat<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op} on the CPU kernels: an operand is not float32");
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op} on the CPU kernels: an operand is not contiguous");
    };
    Ok(&v[start..end])
}

/// Rows per task of a row operation.
const ROWS_PER_TASK: usize = 32;

/// `f(first row, rows of out)` over blocks of `width`-wide rows of `out`, on the kernels' threads
/// where there is enough work; the blocks' results in order.
fn row_blocks<R: Send>(
    out: &mut [f32],
    width: usize,
    f: impl Fn(usize, &mut [f32]) -> R + Sync,
) -> Vec<R> {
    let block = ROWS_PER_TASK * width.max(1);
    if out.len() < 2 * block || kernels::threads() < 2 {
        return vec![f(0, out)];
    }
    out.par_chunks_mut(block)
        .enumerate()
        .map(|(i, rows)| f(i * ROWS_PER_TASK, rows))
        .collect()
}

/// Sums per-block partial sums of one length.
fn add_up(parts: Vec<Vec<f32>>) -> Vec<f32> {
    let mut parts = parts.into_iter();
    let mut sum = parts.next().unwrap_or_default();
    for p in parts {
        for (s, v) in sum.iter_mut().zip(p) {
            *s += v;
        }
    }
    sum
}

fn new_tensor(v: Vec<f32>, like: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, like.shape(), like.device())
}

/// Layer norm over the last dimension (`x` float32 on the CPU), differentiable in `x`, `gamma`
/// and `beta`.
pub fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(gamma, beta, LayerNorm { eps: eps as f32 })
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm-kernels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (
            flat(s1, l1, self.name())?,
            flat(s2, l2, self.name())?,
            flat(s3, l3, self.name())?,
        );
        let h = gamma.len();
        if beta.len() != h || l1.dims().last() != Some(&h) {
            candle_core::bail!("{}: input {:?}, weight {h}", self.name(), l1.dims());
        }
        let mut y = x.to_vec();
        row_blocks(&mut y, h, |_, rows| {
            kernels::layer_norm_rows(rows, gamma, beta, self.eps)
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = gamma.dim(0)?;
        let dy = dy.contiguous()?;
        let (xs, dys, g) = (Data::of(x)?, Data::of(&dy)?, Data::of(gamma)?);
        let (xs, dys, g) = (xs.get(), dys.get(), g.get());
        let mut dx = vec![0f32; xs.len()];
        let parts = row_blocks(&mut dx, h, |first, dx| {
            let (lo, n) = (first * h, dx.len());
            let rows = n / h;
            let (mut xhat, mut inv, mut scratch) = (vec![0f32; n], vec![0f32; rows], vec![0f32; n]);
            kernels::layer_norm_save(
                &xs[lo..lo + n],
                g,
                &vec![0f32; h],
                self.eps,
                &mut scratch,
                &mut xhat,
                &mut inv,
            );
            let (mut dg, mut db) = (vec![0f32; h], vec![0f32; h]);
            kernels::layer_norm_backward(&dys[lo..lo + n], &xhat, &inv, g, dx, &mut dg, &mut db);
            (dg, db)
        });
        let (dg, db): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        Ok((
            Some(new_tensor(dx, x)?),
            Some(new_tensor(add_up(dg), gamma)?),
            Some(new_tensor(add_up(db), gamma)?),
        ))
    }
}

/// RMS norm over the last dimension (`x / sqrt(mean(x²) + eps) · gamma`, `x` float32 on the
/// CPU), differentiable in `x` and `gamma`.
pub fn rms_norm(x: &Tensor, gamma: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(gamma, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-kernels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, gamma) = (flat(s1, l1, self.name())?, flat(s2, l2, self.name())?);
        let h = gamma.len();
        if l1.dims().last() != Some(&h) {
            candle_core::bail!("{}: input {:?}, weight {h}", self.name(), l1.dims());
        }
        let mut y = x.to_vec();
        row_blocks(&mut y, h, |_, rows| {
            kernels::rms_norm_rows(rows, gamma, self.eps)
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let h = gamma.dim(0)?;
        let dy = dy.contiguous()?;
        let (xs, dys, g) = (Data::of(x)?, Data::of(&dy)?, Data::of(gamma)?);
        let (xs, dys, g) = (xs.get(), dys.get(), g.get());
        let mut dx = vec![0f32; xs.len()];
        let parts = row_blocks(&mut dx, h, |first, dx| {
            let (lo, n) = (first * h, dx.len());
            let mut dg = vec![0f32; h];
            kernels::rms_norm_backward(&xs[lo..lo + n], &dys[lo..lo + n], g, self.eps, dx, &mut dg);
            dg
        });
        Ok((
            Some(new_tensor(dx, x)?),
            Some(new_tensor(add_up(parts), gamma)?),
        ))
    }
}

/// Softmax over the last dimension (`x` float32 on the CPU), differentiable.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-kernels"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = flat(s, l, self.name())?;
        let w = *l.dims().last().unwrap_or(&1);
        let mut y = x.to_vec();
        row_blocks(&mut y, w, |_, rows| {
            rows.chunks_exact_mut(w.max(1))
                .for_each(kernels::softmax_row)
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let w = y.dim(D::Minus1)?;
        let dy = dy.contiguous()?;
        let (ys, dys) = (Data::of(y)?, Data::of(&dy)?);
        let (ys, dys) = (ys.get(), dys.get());
        let mut dx = vec![0f32; ys.len()];
        row_blocks(&mut dx, w, |first, dx| {
            let (lo, n) = (first * w, dx.len());
            kernels::softmax_backward(&ys[lo..lo + n], &dys[lo..lo + n], dx, w)
        });
        Ok(Some(new_tensor(dx, y)?))
    }
}

/// A gated activation of two halves: `act(a) ⊙ g` where `a` and `g` are the first and second
/// halves of `x`'s last dimension (ModernBERT's GeGLU on its `Wi`), `x` float32 on the CPU;
/// SiLU where `silu`, else the exact GELU. Differentiable.
pub fn gated_halves(x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(GatedHalves { silu })
}

struct GatedHalves {
    silu: bool,
}

impl CustomOp1 for GatedHalves {
    fn name(&self) -> &'static str {
        "gated-halves-kernels"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = flat(s, l, self.name())?;
        let mut dims = l.dims().to_vec();
        let w = dims.last().copied().unwrap_or(0);
        if w % 2 != 0 {
            candle_core::bail!("{}: an odd last dimension {w}", self.name());
        }
        let half = w / 2;
        *dims.last_mut().expect("checked") = half;
        let mut y = vec![0f32; x.len() / 2];
        row_blocks(&mut y, half, |first, out| {
            for (i, out) in out.chunks_exact_mut(half.max(1)).enumerate() {
                let row = &x[(first + i) * w..(first + i + 1) * w];
                kernels::gated(&row[..half], &row[half..], out, self.silu);
            }
        });
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let w = x.dim(D::Minus1)?;
        let half = w / 2;
        let dy = dy.contiguous()?;
        let (xs, dys) = (Data::of(x)?, Data::of(&dy)?);
        let (xs, dys) = (xs.get(), dys.get());
        let mut dx = vec![0f32; xs.len()];
        row_blocks(&mut dx, w, |first, dx| {
            for (i, d) in dx.chunks_exact_mut(w.max(1)).enumerate() {
                let r = first + i;
                let row = &xs[r * w..(r + 1) * w];
                let (da, dg) = d.split_at_mut(half);
                let dy = &dys[r * half..(r + 1) * half];
                kernels::gated_backward(&row[..half], &row[half..], dy, da, dg, self.silu);
            }
        });
        Ok(Some(new_tensor(dx, x)?))
    }
}

/// A gated activation `act(a) ⊙ g` of two tensors of one shape (Qwen3's SwiGLU), float32 on the
/// CPU; SiLU where `silu`, else the exact GELU. Differentiable in both.
pub fn gated(a: &Tensor, g: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
    a.contiguous()?.apply_op2(&g.contiguous()?, Gated { silu })
}

struct Gated {
    silu: bool,
}

impl CustomOp2 for Gated {
    fn name(&self) -> &'static str {
        "gated-kernels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, g) = (flat(s1, l1, self.name())?, flat(s2, l2, self.name())?);
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "{}: shapes {:?} and {:?}",
                self.name(),
                l1.dims(),
                l2.dims()
            );
        }
        let w = *l1.dims().last().unwrap_or(&1);
        let mut y = vec![0f32; a.len()];
        row_blocks(&mut y, w, |first, out| {
            let (lo, n) = (first * w, out.len());
            kernels::gated(&a[lo..lo + n], &g[lo..lo + n], out, self.silu)
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        g: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let w = a.dim(D::Minus1)?;
        let dy = dy.contiguous()?;
        let (av, gv, dys) = (Data::of(a)?, Data::of(g)?, Data::of(&dy)?);
        let (av, gv, dys) = (av.get(), gv.get(), dys.get());
        let n = av.len();
        let (mut da, mut dg) = (vec![0f32; n], vec![0f32; n]);
        let block = ROWS_PER_TASK * w.max(1);
        if n < 2 * block || kernels::threads() < 2 {
            kernels::gated_backward(av, gv, dys, &mut da, &mut dg, self.silu);
        } else {
            da.par_chunks_mut(block)
                .zip(dg.par_chunks_mut(block))
                .enumerate()
                .for_each(|(i, (da, dg))| {
                    let (lo, m) = (i * block, da.len());
                    let (a, g, dy) = (&av[lo..lo + m], &gv[lo..lo + m], &dys[lo..lo + m]);
                    kernels::gated_backward(a, g, dy, da, dg, self.silu);
                });
        }
        Ok((Some(new_tensor(da, a)?), Some(new_tensor(dg, g)?)))
    }
}

/// Rotary positions (`rotate_half` layout) on `x` (`[..., seq, dim]`, float32 on the CPU) with
/// `cos` and `sin` of `[seq, dim / 2]`: `x · cos + rotate_half(x) · sin`, as
/// `candle_nn::rotary_emb::rope_slow` composes it. Differentiable in `x` (the backward pass is
/// the rotation the other way).
pub fn rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rotate { inverse: false },
    )
}

/// One head's vector `v` rotated in place (`rotate_half` layout): `v · cos + rotate_half(v) · sin`,
/// or by minus the angle with `inverse` (the backward pass of the rotation).
#[inline(always)]
fn rotate_half(v: &mut [f32], cos: &[f32], sin: &[f32], inverse: bool) {
    let sign = if inverse { -1.0 } else { 1.0 };
    let (x1, x2) = v.split_at_mut(cos.len());
    for j in 0..cos.len() {
        let (a, b, s) = (x1[j], x2[j], sign * sin[j]);
        x1[j] = a * cos[j] - b * s;
        x2[j] = b * cos[j] + a * s;
    }
}

struct Rotate {
    /// Rotates by minus the angle (the backward pass).
    inverse: bool,
}

impl CustomOp3 for Rotate {
    fn name(&self) -> &'static str {
        "rotary-kernels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, cos, sin) = (
            flat(s1, l1, self.name())?,
            flat(s2, l2, self.name())?,
            flat(s3, l3, self.name())?,
        );
        let dims = l1.dims();
        let (seq, half) = l2.shape().dims2()?;
        if dims.len() < 2
            || dims[dims.len() - 1] != 2 * half
            || dims[dims.len() - 2] != seq
            || l3.dims() != l2.dims()
        {
            candle_core::bail!(
                "{}: input {dims:?}, cos and sin [{seq}, {half}]",
                self.name()
            );
        }
        let d = 2 * half;
        let mut y = x.to_vec();
        row_blocks(&mut y, d, |first, out| {
            for (i, v) in out.chunks_exact_mut(d.max(1)).enumerate() {
                let p = (first + i) % seq;
                rotate_half(
                    v,
                    &cos[p * half..][..half],
                    &sin[p * half..][..half],
                    self.inverse,
                );
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let inverse = Rotate {
            inverse: !self.inverse,
        };
        let dx = dy.contiguous()?.apply_op3_no_bwd(cos, sin, &inverse)?;
        Ok((Some(dx), None, None))
    }
}

/// The rows `index` names of `x` (`[rows, width]`, float32 on the CPU), in that order:
/// `[index.len(), width]`. Differentiable: the gradient goes back to those rows, zero elsewhere.
pub fn gather_rows(x: &Tensor, index: &Arc<Vec<u32>>) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Rows {
        index: index.clone(),
        scatter: None,
    })
}

/// The inverse of [`gather_rows`]: `[rows, width]` with row `index[i]` from row `i` of `x` and
/// zeros elsewhere (`index` distinct). Differentiable.
pub fn scatter_rows(x: &Tensor, index: &Arc<Vec<u32>>, rows: usize) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Rows {
        index: index.clone(),
        scatter: Some(rows),
    })
}

/// [`gather_rows`] (`scatter: None`) and [`scatter_rows`] (`Some(rows)`), each the other's
/// backward pass.
struct Rows {
    index: Arc<Vec<u32>>,
    scatter: Option<usize>,
}

impl CustomOp1 for Rows {
    fn name(&self) -> &'static str {
        if self.scatter.is_some() {
            "scatter-rows"
        } else {
            "gather-rows"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = flat(s, l, self.name())?;
        let (n, w) = l.shape().dims2()?;
        // Gather: `index` names rows of the input; scatter: rows of the output, one per input row.
        let (out_rows, named) = match self.scatter {
            None => (self.index.len(), n),
            Some(rows) => {
                if n != self.index.len() {
                    candle_core::bail!(
                        "{}: {n} rows for {} indices",
                        self.name(),
                        self.index.len()
                    );
                }
                (rows, rows)
            }
        };
        if let Some(&bad) = self.index.iter().find(|&&i| i as usize >= named) {
            candle_core::bail!("{}: row {bad} of {named}", self.name());
        }
        let mut y = vec![0f32; out_rows * w];
        for (i, &r) in self.index.iter().enumerate() {
            let r = r as usize;
            let (dst, src) = match self.scatter {
                Some(_) => (r, i),
                None => (i, r),
            };
            y[dst * w..(dst + 1) * w].copy_from_slice(&x[src * w..(src + 1) * w]);
        }
        Ok((CpuStorage::F32(y), Shape::from((out_rows, w))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let back = Rows {
            index: self.index.clone(),
            scatter: match self.scatter {
                Some(_) => None,
                None => Some(x.dim(0)?),
            },
        };
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}

/// Self-attention of sentences packed one after another: `qkv` is `[tokens, 3 * heads * d]`
/// (each token's row `[q | k | v]`, heads of `d` values), the sentences `spec.lengths` tokens
/// each; the result is `[tokens, heads * d]`. Each sentence attends over its own tokens alone,
/// so there is no padding to mask. Positions enter as [`Positions`]. Differentiable in `qkv`
/// and in a relative position bias.
///
/// One operation forward and one backward (per sentence on the kernels' threads, the BERT
/// family's `attend_record` / `attend_backward`) where candle composes about a dozen (slices of
/// q, k and v, transposed copies, the scaled products, the masks, softmax, the context's
/// transposed copy) and walks each back.
pub fn packed_attention(
    qkv: &Tensor,
    positions: Positions,
    spec: PackedAttention,
) -> candle_core::Result<Tensor> {
    let qkv = qkv.contiguous()?;
    match positions {
        Positions::Rotary(cos, sin) => qkv.apply_op3(&cos.contiguous()?, &sin.contiguous()?, spec),
        Positions::Relative(rel) => qkv.apply_op2(&rel.contiguous()?, spec),
    }
}

/// How [`packed_attention`] knows where tokens are.
#[derive(Clone, Copy)]
pub enum Positions<'a> {
    /// q and k rotated by their place in the sentence first, with `cos` and `sin` of
    /// `[seq, d / 2]` (as [`rotary`]): ModernBERT, Qwen3.
    Rotary(&'a Tensor, &'a Tensor),
    /// A bias added to each score by relative position, `[heads, 2 * span - 1]` in the layout
    /// of `kernels::RelBias` (sentences of up to `span` tokens), differentiable: T5.
    Relative(&'a Tensor),
}

/// The shape of a [`packed_attention`].
#[derive(Clone)]
pub struct PackedAttention {
    /// Tokens of each sentence, in order.
    pub lengths: Arc<Vec<usize>>,
    pub heads: usize,
    /// Applied to `q · k` before the softmax.
    pub scale: f32,
    /// Keys outside `(before, after)` places of the query are masked (`kernels::RelBias`).
    pub window: Option<(usize, usize)>,
    /// Attention dropout, as `[heads, len, len]` per sentence, one after another; empty: none.
    pub dropout: Arc<Vec<f32>>,
    /// The one query of each sentence whose context is wanted (its place in the sentence), the
    /// result then `[sentences, heads * d]`; empty: every query. Not with dropout.
    pub queries: Arc<Vec<usize>>,
}

/// The rotary tables of a [`Positions::Rotary`] pass: `cos` and `sin`, `d / 2` per position.
type Tables<'a> = Option<(&'a [f32], &'a [f32])>;

impl PackedAttention {
    /// Each sentence's first token row, and where its `heads * len * len` attention weights
    /// start.
    fn offsets(&self) -> Vec<(usize, usize, usize)> {
        let (mut row, mut weight) = (0, 0);
        self.lengths
            .iter()
            .map(|&len| {
                let at = (row, weight, len);
                row += len;
                weight += self.heads * len * len;
                at
            })
            .collect()
    }

    /// The heads' size from the rows' layout, checking the shapes against the sentences, the
    /// dropout mask, and the longest sentence the positions cover (`span`).
    fn head_size(&self, l: &Layout, span: usize) -> candle_core::Result<usize> {
        let (tokens, width) = l.shape().dims2()?;
        let total: usize = self.lengths.iter().sum();
        let weights: usize = self.lengths.iter().map(|l| self.heads * l * l).sum();
        if tokens != total || self.heads == 0 || !width.is_multiple_of(3 * self.heads) {
            candle_core::bail!(
                "packed attention: rows [{tokens}, {width}] for {total} tokens of {} heads",
                self.heads
            );
        }
        if !self.dropout.is_empty() && self.dropout.len() != weights {
            candle_core::bail!("packed attention: a dropout mask of the wrong size");
        }
        if self.lengths.iter().any(|&l| l > span) {
            candle_core::bail!("packed attention: positions for sentences of up to {span} tokens");
        }
        let picked = self.queries.iter().zip(self.lengths.iter());
        if !self.queries.is_empty()
            && (self.queries.len() != self.lengths.len() || picked.clone().any(|(q, l)| q >= l))
        {
            candle_core::bail!("packed attention: a query picked outside its sentence");
        }
        if !self.queries.is_empty() && !self.dropout.is_empty() {
            candle_core::bail!("packed attention: picked queries with a dropout mask");
        }
        Ok(width / (3 * self.heads))
    }

    /// The `[q | k | v]` rows with q and k rotated by position (by minus the angle with
    /// `inverse`, the backward pass of the rotation); v as it is. Without tables, the rows.
    fn rotate(&self, x: &[f32], tables: Tables, d: usize, inverse: bool) -> Vec<f32> {
        let mut y = x.to_vec();
        let Some((cos, sin)) = tables else {
            return y;
        };
        let (h, half) = (self.heads * d, d / 2);
        let positions: Vec<usize> = self.lengths.iter().flat_map(|&len| 0..len).collect();
        row_blocks(&mut y, 3 * h, |first, out| {
            for (i, row) in out.chunks_exact_mut(3 * h).enumerate() {
                let p = positions[first + i];
                let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
                for v in row[..2 * h].chunks_exact_mut(d) {
                    rotate_half(v, c, s, inverse);
                }
            }
        });
        y
    }

    /// `f(first row, its length, its weights' offset, its slice of out)` for each sentence, on
    /// the kernels' threads; `out` has `width` values per token.
    fn per_sentence<R: Send>(
        &self,
        out: &mut [f32],
        width: usize,
        f: impl Fn(usize, usize, usize, &mut [f32]) -> R + Sync,
    ) -> Vec<R> {
        let mut jobs = Vec::with_capacity(self.lengths.len());
        let mut rest = out;
        for (row, weight, len) in self.offsets() {
            let (part, tail) = rest.split_at_mut(len * width);
            rest = tail;
            jobs.push((row, len, weight, part));
        }
        jobs.into_par_iter()
            .map(|(row, len, weight, part)| f(row, len, weight, part))
            .collect()
    }

    /// The gradient of every token's context from `dctx`: itself, or where queries were
    /// picked, their rows of it with zeros elsewhere (the other queries reached nothing, so
    /// the whole attention's backward pass gives the picked ones' gradients).
    fn every_row<'a>(&self, dctx: &'a [f32], h: usize) -> std::borrow::Cow<'a, [f32]> {
        if self.queries.is_empty() {
            return dctx.into();
        }
        let tokens: usize = self.lengths.iter().sum();
        let mut all = vec![0f32; tokens * h];
        for (((row, _, _), &q), g) in self
            .offsets()
            .into_iter()
            .zip(self.queries.iter())
            .zip(dctx.chunks_exact(h))
        {
            all[(row + q) * h..(row + q + 1) * h].copy_from_slice(g);
        }
        all.into()
    }

    fn mask(&self, weight: usize, len: usize) -> &[f32] {
        if self.dropout.is_empty() {
            &[]
        } else {
            &self.dropout[weight..weight + self.heads * len * len]
        }
    }

    fn rel<'a>(&self, values: &'a [f32], span: usize) -> kernels::RelBias<'a> {
        kernels::RelBias {
            values,
            span,
            window: self.window,
        }
    }

    /// The context rows: every token's, or with [`PackedAttention::queries`] each sentence's
    /// one.
    fn forward(&self, qkv: &[f32], tables: Tables, rel: kernels::RelBias, d: usize) -> Vec<f32> {
        let h = self.heads * d;
        let rot = self.rotate(qkv, tables, d, false);
        if !self.queries.is_empty() {
            let mut ctx = vec![0f32; self.queries.len() * h];
            let jobs: Vec<_> = self
                .offsets()
                .into_iter()
                .zip(self.queries.iter())
                .zip(ctx.chunks_exact_mut(h))
                .collect();
            jobs.into_par_iter()
                .for_each(|(((row, _, len), &query), ctx)| {
                    let mut scratch = vec![0f32; kernels::attend_scratch(len, d)];
                    kernels::attend_queries(
                        &rot[row * 3 * h..(row + len) * 3 * h],
                        ctx,
                        len,
                        self.heads,
                        d,
                        self.scale,
                        rel,
                        query,
                        1,
                        &mut [],
                        &[],
                        &mut scratch,
                    );
                });
            return ctx;
        }
        let mut ctx = vec![0f32; rot.len() / 3];
        self.per_sentence(&mut ctx, h, |row, len, weight, ctx| {
            let mut scratch = vec![0f32; kernels::attend_scratch(len, d)];
            kernels::attend_record(
                &rot[row * 3 * h..(row + len) * 3 * h],
                ctx,
                len,
                self.heads,
                d,
                self.scale,
                rel,
                &mut [],
                self.mask(weight, len),
                &mut scratch,
            );
        });
        ctx
    }

    /// The gradients of the rows and (with a bias) of the relative position bias, from the
    /// context's.
    fn backward(
        &self,
        qkv: &[f32],
        tables: Tables,
        rel: kernels::RelBias,
        d: usize,
        dctx: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let h = self.heads * d;
        let dctx = &*self.every_row(dctx, h);
        let rot = self.rotate(qkv, tables, d, false);
        let mut drot = vec![0f32; rot.len()];
        let drel = self.per_sentence(&mut drot, 3 * h, |row, len, weight, drot| {
            // The weights again (cheaper to recompute than to keep for every layer).
            let mut scratch = vec![0f32; kernels::attend_scratch(len, d)];
            let mut probs = vec![0f32; self.heads * len * len];
            let mut ctx = vec![0f32; len * h];
            let mut drel = vec![0f32; rel.values.len()];
            let rows = &rot[row * 3 * h..(row + len) * 3 * h];
            let mask = self.mask(weight, len);
            kernels::attend_record(
                rows,
                &mut ctx,
                len,
                self.heads,
                d,
                self.scale,
                rel,
                &mut probs,
                mask,
                &mut scratch,
            );
            kernels::attend_backward(
                rows,
                &probs,
                mask,
                &dctx[row * h..(row + len) * h],
                drot,
                len,
                self.heads,
                d,
                self.scale,
                rel.span,
                &mut drel,
                &mut scratch,
            );
            drel
        });
        // Summed in sentence order, so a run is the same run on any number of threads.
        (self.rotate(&drot, tables, d, true), add_up(drel))
    }
}

impl CustomOp3 for PackedAttention {
    fn name(&self) -> &'static str {
        "packed-attention-kernels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (qkv, cos, sin) = (
            flat(s1, l1, <Self as CustomOp3>::name(self))?,
            flat(s2, l2, <Self as CustomOp3>::name(self))?,
            flat(s3, l3, <Self as CustomOp3>::name(self))?,
        );
        let (seq, half) = l2.shape().dims2()?;
        let d = self.head_size(l1, seq)?;
        if d != 2 * half || l3.dims() != l2.dims() {
            candle_core::bail!(
                "{}: rotary tables [{seq}, {half}] for heads of {d}",
                <Self as CustomOp3>::name(self)
            );
        }
        let ctx = self.forward(qkv, Some((cos, sin)), self.rel(&[], 0), d);
        let rows = ctx.len() / (self.heads * d);
        Ok((CpuStorage::F32(ctx), Shape::from((rows, self.heads * d))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _ctx: &Tensor,
        dctx: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = 2 * cos.dim(1)?;
        let dctx = dctx.contiguous()?;
        let (x, c, s, g) = (
            Data::of(qkv)?,
            Data::of(cos)?,
            Data::of(sin)?,
            Data::of(&dctx)?,
        );
        let tables = Some((c.get(), s.get()));
        let (dqkv, _) = self.backward(x.get(), tables, self.rel(&[], 0), d, g.get());
        Ok((Some(new_tensor(dqkv, qkv)?), None, None))
    }
}

impl CustomOp2 for PackedAttention {
    fn name(&self) -> &'static str {
        "packed-attention-kernels-relative"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (qkv, rel) = (
            flat(s1, l1, <Self as CustomOp2>::name(self))?,
            flat(s2, l2, <Self as CustomOp2>::name(self))?,
        );
        let (heads, width) = l2.shape().dims2()?;
        if heads != self.heads || width.is_multiple_of(2) {
            candle_core::bail!(
                "{}: a bias [{heads}, {width}]",
                <Self as CustomOp2>::name(self)
            );
        }
        let span = width.div_ceil(2);
        let d = self.head_size(l1, span)?;
        let ctx = self.forward(qkv, None, self.rel(rel, span), d);
        let rows = ctx.len() / (self.heads * d);
        Ok((CpuStorage::F32(ctx), Shape::from((rows, self.heads * d))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        rel: &Tensor,
        _ctx: &Tensor,
        dctx: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = qkv.dim(1)? / (3 * self.heads);
        let span = rel.dim(1)?.div_ceil(2);
        let dctx = dctx.contiguous()?;
        let (x, r, g) = (Data::of(qkv)?, Data::of(rel)?, Data::of(&dctx)?);
        let (dqkv, drel) = self.backward(x.get(), None, self.rel(r.get(), span), d, g.get());
        Ok((Some(new_tensor(dqkv, qkv)?), Some(new_tensor(drel, rel)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7 + seed * 13) % 31) as f32 - 15.0) / 11.0)
            .collect()
    }

    /// The product and both gradients equal candle's `matmul` and its backward pass, on shapes
    /// below and above the kernels' small-row cut-off.
    #[test]
    fn product_and_gradients_equal_candles() {
        let dev = Device::Cpu;
        for (m, k, n) in [(3, 5, 4), (70, 45, 33), (129, 64, 96)] {
            let x = Var::from_vec(values(m * k, 1), (m, k), &dev).unwrap();
            let w = Var::from_vec(values(n * k, 2), (n, k), &dev).unwrap();
            let up = Tensor::from_vec(values(m * n, 3), (m, n), &dev).unwrap();
            let ours = linear(x.as_tensor(), w.as_tensor()).unwrap();
            let theirs = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
            let g_ours = (&ours * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_theirs = (&theirs * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let d = crate::model::layers::max_abs_diff(a, b);
                assert!(d < 1e-4, "{what} ({m}x{k}x{n}) differs by {d}");
            };
            close(&ours, &theirs, "product");
            for var in [&x, &w] {
                let (a, b) = (
                    g_ours.get(var.as_tensor()).unwrap(),
                    g_theirs.get(var.as_tensor()).unwrap(),
                );
                close(a, b, "gradient");
            }
            // The weight gradient's sum of squares was noted with the very tensor the store
            // holds, and is its sum of squares.
            let dw = g_ours.get(w.as_tensor()).unwrap();
            let known = take_weight_grad_squares();
            assert_eq!(known.len(), 1, "one weight gradient ({m}x{k}x{n})");
            assert_eq!(known[0].0, dw.id());
            let want = dw
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            assert!(
                (known[0].1 - want).abs() <= 1e-5 * want,
                "sum of squares {} against {want} ({m}x{k}x{n})",
                known[0].1
            );
        }
    }

    /// `ours` and `theirs` (candle's composition) on the same variables: values, and the
    /// gradients of `Σ out ⊙ up` for each variable, within `tol` of each other.
    fn same_op(
        what: &str,
        vars: &[Var],
        ours: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
        theirs: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
        tol: f32,
    ) {
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (ours(&ts).unwrap(), theirs(&ts).unwrap());
        let up = Tensor::from_vec(values(a.elem_count(), 9), a.shape(), a.device()).unwrap();
        let d = crate::model::layers::max_abs_diff(&a, &b);
        assert!(d < tol, "{what}: values differ by {d}");
        let ga = (&a * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v.as_tensor()), gb.get(v.as_tensor()));
            match (x, y) {
                (Some(x), Some(y)) => {
                    let d = crate::model::layers::max_abs_diff(x, y);
                    assert!(d < tol, "{what}: gradient {i} differs by {d}");
                }
                (x, y) => panic!(
                    "{what}: gradient {i} present {} and {}",
                    x.is_some(),
                    y.is_some()
                ),
            }
        }
    }

    /// Every row operation equals candle's composition, values and gradients, on 150 rows
    /// (in blocks on the threads where there are two) and on 5 (one block); gathering and
    /// scattering rows equal `index_select` and `index_add` exactly.
    #[test]
    fn row_operations_equal_candles_compositions() {
        let dev = Device::Cpu;
        for rows in [5usize, 150] {
            let (b, seq, h) = (rows / 5, 5, 24);
            let var = |dims: &[usize], seed| {
                let n = dims.iter().product();
                Var::from_vec(values(n, seed), dims, &dev).unwrap()
            };
            let x = var(&[b, seq, h], 1);
            let gamma = var(&[h], 2);
            let beta = var(&[h], 3);
            same_op(
                "layer norm",
                &[x.clone(), gamma.clone(), beta.clone()],
                |t| layer_norm(&t[0], &t[1], &t[2], 1e-5),
                |t| candle_nn::ops::layer_norm_slow(&t[0], &t[1], &t[2], 1e-5),
                1e-4,
            );
            same_op(
                "rms norm",
                &[x.clone(), gamma.clone()],
                |t| rms_norm(&t[0], &t[1], 1e-6),
                |t| candle_nn::ops::rms_norm_slow(&t[0], &t[1], 1e-6),
                1e-4,
            );
            same_op(
                "softmax",
                std::slice::from_ref(&x),
                |t| softmax_last_dim(&t[0]),
                |t| candle_nn::ops::softmax(&t[0], D::Minus1),
                1e-5,
            );
            for silu in [false, true] {
                let act = |t: &Tensor| if silu { t.silu() } else { t.gelu_erf() };
                same_op(
                    "gated halves",
                    std::slice::from_ref(&x),
                    |t| gated_halves(&t[0], silu),
                    |t| act(&t[0].narrow(2, 0, h / 2)?)? * t[0].narrow(2, h / 2, h / 2)?,
                    1e-5,
                );
                let g = var(&[b, seq, h], 4);
                same_op(
                    "gated",
                    &[x.clone(), g],
                    |t| gated(&t[0], &t[1], silu),
                    |t| act(&t[0])? * &t[1],
                    1e-5,
                );
            }
            let heads = var(&[b, 2, seq, h], 5);
            let angle = |i: usize| (i as f32 * 0.37).sin();
            let cos = Tensor::from_vec(
                (0..seq * h / 2).map(|i| angle(i).cos()).collect(),
                (seq, h / 2),
                &dev,
            )
            .unwrap();
            let sin = Tensor::from_vec(
                (0..seq * h / 2).map(|i| angle(i).sin()).collect(),
                (seq, h / 2),
                &dev,
            )
            .unwrap();
            let index = Arc::new(if rows == 5 {
                vec![3u32, 0, 4]
            } else {
                vec![3, 0, 7, 8, 12, 149]
            });
            same_op(
                "gather rows",
                std::slice::from_ref(&x),
                |t| gather_rows(&t[0].reshape((rows, h))?, &index),
                |t| {
                    let i = Tensor::from_vec(index.to_vec(), index.len(), &dev)?;
                    t[0].reshape((rows, h))?.index_select(&i, 0)
                },
                1e-7,
            );
            let few = var(&[index.len(), h], 6);
            same_op(
                "scatter rows",
                &[few],
                |t| scatter_rows(&t[0], &index, rows),
                |t| {
                    let i = Tensor::from_vec(index.to_vec(), index.len(), &dev)?;
                    Tensor::zeros((rows, h), candle_core::DType::F32, &dev)?.index_add(&i, &t[0], 0)
                },
                1e-7,
            );
            same_op(
                "rotary",
                &[heads],
                |t| rotary(&t[0], &cos, &sin),
                |t| candle_nn::rotary_emb::rope_slow(&t[0], &cos, &sin),
                1e-5,
            );
        }
    }

    /// Packed attention equals candle's composition sentence by sentence (slices of q, k and v,
    /// rotary positions or a relative bias, the window as an additive mask, softmax, dropout),
    /// values and gradients (of the rows and of the bias), for sentences of several lengths.
    #[test]
    fn packed_attention_equals_candles_composition() {
        let dev = Device::Cpu;
        let (heads, d) = (2, 8);
        let h = heads * d;
        let lengths = Arc::new(vec![5usize, 1, 9, 3]);
        let (tokens, span) = (18, 9);
        let qkv = Var::from_vec(values(tokens * 3 * h, 1), (tokens, 3 * h), &dev).unwrap();
        let rel = Var::from_vec(
            values(heads * (2 * span - 1), 2),
            (heads, 2 * span - 1),
            &dev,
        )
        .unwrap();
        let angle = |i: usize| (i as f32 * 0.37).sin();
        let table = |f: fn(f32) -> f32| {
            let v = (0..span * d / 2).map(|i| f(angle(i))).collect();
            Tensor::from_vec(v, (span, d / 2), &dev).unwrap()
        };
        let (cos, sin) = (table(f32::cos), table(f32::sin));
        let weights: usize = lengths.iter().map(|l| heads * l * l).sum();
        let keep: Vec<f32> = (0..weights)
            .map(|i| if i % 7 == 3 { 0.0 } else { 1.25 })
            .collect();
        // The composition of one sentence of `len` tokens from row `start`.
        let compose = |t: &[Tensor],
                       start: usize,
                       len: usize,
                       rotary: bool,
                       window: Option<(usize, usize)>,
                       mask: &[f32]|
         -> candle_core::Result<Tensor> {
            let rows = t[0].narrow(0, start, len)?;
            let part = |i: usize| -> candle_core::Result<Tensor> {
                rows.narrow(1, i * h, h)?
                    .reshape((len, heads, d))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let (mut q, mut k, v) = (part(0)?, part(1)?, part(2)?);
            if rotary {
                let (c, s) = (cos.narrow(0, 0, len)?, sin.narrow(0, 0, len)?);
                q = candle_nn::rotary_emb::rope_slow(&q.unsqueeze(0)?, &c, &s)?.squeeze(0)?;
                k = candle_nn::rotary_emb::rope_slow(&k.unsqueeze(0)?, &c, &s)?.squeeze(0)?;
            }
            let mut scores = (q.matmul(&k.t()?)? * 0.3)?;
            if !rotary {
                let mut at = Vec::new();
                for head in 0..heads {
                    for i in 0..len {
                        for j in 0..len {
                            at.push((head * (2 * span - 1) + j + span - 1 - i) as u32);
                        }
                    }
                }
                let at = Tensor::from_vec(at, heads * len * len, &dev)?;
                let bias = t[1].flatten_all()?.index_select(&at, 0)?;
                scores = (scores + bias.reshape((heads, len, len))?)?;
            }
            if let Some((before, after)) = window {
                let m: Vec<f32> = (0..len * len)
                    .map(|x| {
                        let (i, j) = (x / len, x % len);
                        if j.saturating_add(before) < i || j > i.saturating_add(after) {
                            f32::MIN
                        } else {
                            0.0
                        }
                    })
                    .collect();
                scores = scores.broadcast_add(&Tensor::from_vec(m, (len, len), &dev)?)?;
            }
            let mut probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            if !mask.is_empty() {
                probs = (probs * Tensor::from_vec(mask.to_vec(), (heads, len, len), &dev)?)?;
            }
            probs
                .matmul(&v)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((len, h))
        };
        for rotary in [true, false] {
            for window in [None, Some((2, 2)), Some((usize::MAX, 0))] {
                for dropout in [false, true] {
                    let spec = PackedAttention {
                        lengths: lengths.clone(),
                        heads,
                        scale: 0.3,
                        window,
                        dropout: Arc::new(if dropout { keep.clone() } else { Vec::new() }),
                        queries: Arc::new(Vec::new()),
                    };
                    let vars = if rotary {
                        vec![qkv.clone()]
                    } else {
                        vec![qkv.clone(), rel.clone()]
                    };
                    same_op(
                        &format!(
                            "packed attention (rotary {rotary}, {window:?}, dropout {dropout})"
                        ),
                        &vars,
                        |t| {
                            let positions = if rotary {
                                Positions::Rotary(&cos, &sin)
                            } else {
                                Positions::Relative(&t[1])
                            };
                            packed_attention(&t[0], positions, spec.clone())
                        },
                        |t| {
                            let (mut start, mut weight, mut parts) = (0, 0, Vec::new());
                            for &len in lengths.iter() {
                                let n = heads * len * len;
                                let mask = if dropout {
                                    &keep[weight..weight + n]
                                } else {
                                    &[][..]
                                };
                                parts.push(compose(t, start, len, rotary, window, mask)?);
                                start += len;
                                weight += n;
                            }
                            Tensor::cat(&parts, 0)
                        },
                        1e-5,
                    );
                    if dropout {
                        continue;
                    }
                    // One query per sentence (the first, the last, one between): the rows of
                    // the whole attention at those tokens, bit for bit.
                    let picked: Vec<usize> = lengths
                        .iter()
                        .enumerate()
                        .map(|(i, &len)| [0, len - 1, len / 2][i % 3])
                        .collect();
                    let positions = match rotary {
                        true => Positions::Rotary(&cos, &sin),
                        false => Positions::Relative(&rel),
                    };
                    let full = packed_attention(qkv.as_tensor(), positions, spec.clone())
                        .unwrap()
                        .to_vec2::<f32>()
                        .unwrap();
                    let some = PackedAttention {
                        queries: Arc::new(picked.clone()),
                        ..spec.clone()
                    };
                    let rows = packed_attention(qkv.as_tensor(), positions, some)
                        .unwrap()
                        .to_vec2::<f32>()
                        .unwrap();
                    let mut first = 0;
                    for ((&len, &q), row) in lengths.iter().zip(&picked).zip(&rows) {
                        let want = &full[first + q];
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(row), bits(want), "query {q} of {len}, {window:?}");
                        first += len;
                    }
                }
            }
        }
    }
}
