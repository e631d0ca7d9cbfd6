//! The linear layer's product as a candle operation with its backward pass, both on the CPU
//! kernels: how the families without a hand-written backward pass (T5, ModernBERT, Qwen3) train
//! on the CPU. candle's own `matmul` runs on `gemm` and its backward pass goes through
//! transposed copies; here the forward product packs the weight as the BERT family's training
//! pass does (`packed::product_wt_fresh`), and the gradients are `dy · w` and `dyᵀ · x` on the
//! same kernels (`packed::product`), each written once into a new buffer.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::kernels::Mat;
use super::packed;

/// `x · wᵀ` (`x` is `[m, k]`, `w` is `[n, k]`, both float32 on the CPU), differentiable in both.
pub fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Product)
}

/// The slice of a contiguous float32 CPU operand, with its two dimensions.
fn operand<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("linear on the CPU kernels: {what} is not float32");
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("linear on the CPU kernels: {what} is not contiguous");
    };
    let (r, c) = l.shape().dims2()?;
    Ok((&v[start..end], r, c))
}

/// `y = x · wᵀ`.
struct Product;

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "linear-kernels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, m, k) = operand(s1, l1, "the input")?;
        let (w, n, kw) = operand(s2, l2, "the weight")?;
        if k != kw {
            candle_core::bail!("linear on the CPU kernels: input [{m}, {k}], weight [{n}, {kw}]");
        }
        let y = packed::product_wt_fresh(x, m, k, w, n);
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &InputGrad)?;
        let dw = dy.apply_op2_no_bwd(x, &WeightGrad)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `dx = dy · w` (`dy` is `[m, n]`, `w` is `[n, k]`).
struct InputGrad;

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "linear-kernels-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (dy, m, n) = operand(s1, l1, "the output's gradient")?;
        let (w, nw, k) = operand(s2, l2, "the weight")?;
        if n != nw {
            candle_core::bail!("linear gradient: dy [{m}, {n}], weight [{nw}, {k}]");
        }
        let dx = packed::product(Mat::rows(dy, m, n), Mat::rows(w, n, k));
        Ok((CpuStorage::F32(dx), Shape::from((m, k))))
    }
}

/// `dw = dyᵀ · x` (`dy` is `[m, n]`, `x` is `[m, k]`).
struct WeightGrad;

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "linear-kernels-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (dy, m, n) = operand(s1, l1, "the output's gradient")?;
        let (x, mx, k) = operand(s2, l2, "the input")?;
        if m != mx {
            candle_core::bail!("linear gradient: dy [{m}, {n}], input [{mx}, {k}]");
        }
        let dw = packed::product(Mat::rows(dy, m, n).t(), Mat::rows(x, m, k));
        Ok((CpuStorage::F32(dw), Shape::from((n, k))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

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
                assert_eq!(a.dims(), b.dims(), "{what} shape");
                let d: f32 = (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
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
        }
    }
}
