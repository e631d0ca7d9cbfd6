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
#[derive(Clone, Copy)]
enum Product {
    /// `y = x · wᵀ` from `(x, w)`; differentiable, through the other two.
    Forward,
    /// `dx = dy · w` from `(dy, w)`.
    InputGrad,
    /// `dw = dyᵀ · x` from `(dy, x)`.
    WeightGrad,
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        match self {
            Product::Forward => "linear-kernels",
            Product::InputGrad => "linear-kernels-input-grad",
            Product::WeightGrad => "linear-kernels-weight-grad",
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
            Product::WeightGrad => m == q,
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
            Product::WeightGrad => (
                packed::product(Mat::rows(a, m, p).t(), Mat::rows(b, q, r)),
                (p, r),
            ),
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
        let dw = dy.apply_op2_no_bwd(x, &Product::WeightGrad)?;
        Ok((Some(dx), Some(dw)))
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
        }
    }
}
