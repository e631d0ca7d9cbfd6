//! A linear layer's weight prepared once for the product kernel of an inference pass at a
//! precision ([`PreparedWeight`]), and the product that runs on it ([`product`]): shared by the
//! BERT family's fused path and the linear layers of the others (`layers::Linear`).

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};

use super::bf16::{self, Bf16Weight};
use super::kernels;
use super::packed::{self, F32Choice, F32Kernel, PackedWeight};
use super::quant::{self, Int8Kernel, QuantWeight};
use crate::model::Precision;

/// A linear layer's weight prepared once for its kernel: float32 packed (where the packed
/// kernel was chosen), bf16 or int8.
#[derive(Debug)]
pub enum PreparedWeight {
    F32(PackedWeight),
    Int8(QuantWeight),
    Bf16(Bf16Weight),
}

impl PreparedWeight {
    /// The `[n, k]` weight `w` for `precision`'s kernel.
    pub fn new(precision: Precision, w: &[f32], n: usize, k: usize) -> Self {
        match precision {
            Precision::F32 => PreparedWeight::F32(PackedWeight::new(w, n, k)),
            Precision::Bf16 => PreparedWeight::Bf16(Bf16Weight::new(w, n, k)),
            Precision::Int8 => {
                PreparedWeight::Int8(QuantWeight::for_kernel(w, n, k, Int8Kernel::best()))
            }
        }
    }

    /// Weights of one input width stacked by output rows (Q, K and V as one).
    pub fn stack(precision: Precision, parts: &[(&[f32], usize)], k: usize) -> Self {
        match precision {
            Precision::F32 => PreparedWeight::F32(PackedWeight::stack(parts, k)),
            Precision::Bf16 => PreparedWeight::Bf16(Bf16Weight::stack(parts, k)),
            Precision::Int8 => {
                PreparedWeight::Int8(QuantWeight::stack(parts, k, Int8Kernel::best()))
            }
        }
    }

    /// A feed-forward block's second weight, whose input (the activation's long-tailed output)
    /// one u8 scale per row resolves worst: in int8 only where the kernel takes 8-bit weights
    /// and sums them fast (AVX-512 VNNI, AMX; [`Int8Kernel::wide`]), in bf16 elsewhere (with
    /// 7-bit weights there the worst cosine with the f32 vectors of the MiniLM fixture
    /// sentences fell to 0.9897).
    pub fn feed_forward_output(precision: Precision, w: &[f32], n: usize, k: usize) -> Self {
        match precision {
            Precision::Int8 if !Int8Kernel::best().wide() => {
                PreparedWeight::Bf16(Bf16Weight::new(w, n, k))
            }
            p => Self::new(p, w, n, k),
        }
    }

    /// Whether float32 products are worth preparing weights for on this CPU (the packed kernel
    /// was chosen for some row counts); bf16 and int8 always need theirs.
    pub fn worth_it(precision: Precision) -> bool {
        precision != Precision::F32 || F32Choice::get().packs()
    }

    /// Whether this weight runs a product of `rows` rows: always in bf16 and int8; in float32
    /// where the packed kernel was chosen for that many rows (else the weight's own storage
    /// goes through `kernels::matmul_wt`).
    pub fn runs(&self, rows: usize) -> bool {
        match self {
            PreparedWeight::F32(_) => F32Choice::get().for_rows(rows) != F32Kernel::Gemm,
            _ => true,
        }
    }

    /// `dst = x · Wᵀ` for `rows` rows of `x` (where [`PreparedWeight::runs`]).
    pub fn matmul(&self, dst: &mut [f32], dst_rs: usize, x: &[f32], rows: usize) {
        match self {
            PreparedWeight::F32(w) => {
                packed::matmul_with(F32Choice::get().for_rows(rows), dst, dst_rs, x, rows, w)
            }
            PreparedWeight::Int8(w) => quant::qmatmul_wt(dst, dst_rs, x, rows, w),
            PreparedWeight::Bf16(w) => bf16::matmul_wt(dst, dst_rs, x, rows, w),
        }
    }
}

/// `dst = x · Wᵀ` for `rows` rows of `x` (`k` wide) and the `[n, k]` float32 weight `w`, through
/// its prepared form where there is one for this many rows.
#[allow(clippy::too_many_arguments)]
pub fn product(
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    prepared: Option<&PreparedWeight>,
) {
    match prepared {
        Some(p) if p.runs(rows) => p.matmul(dst, dst_rs, x, rows),
        _ => kernels::matmul_wt(dst, dst_rs, x, rows, k, w, n),
    }
}

/// The `f32` data of a contiguous CPU tensor, read-locked while this lives.
pub struct Data<'a> {
    guard: StorageRef<'a>,
    start: usize,
    len: usize,
}

impl Data<'_> {
    pub fn of(t: &Tensor) -> candle_core::Result<Data<'_>> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("CPU kernels: tensor is not contiguous");
        };
        if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
            candle_core::bail!("CPU kernels: tensor is not f32 on the CPU");
        }
        Ok(Data {
            guard,
            start,
            len: end - start,
        })
    }

    pub fn get(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => unreachable!("checked in Data::of"),
        }
    }
}
