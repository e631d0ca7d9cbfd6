//! float32 products on weights packed once at load, for the fused inference path: an AVX-512
//! kernel (6 rows × 64 columns of FMAs per register block, 32 registers) whose weight layout
//! is made once instead of at every product (as `gemm` packs), and which needs no packing of the
//! activations. Whether it beats `gemm` and the unpacked AVX2 kernel depends on the CPU and the
//! number of rows, so [`F32Choice::get`] times them once per process, for a few rows (the
//! latency path) and for a batch, and keeps the faster of each.
//!
//! Sums run in another order than `gemm`'s, so results differ from it by float32 rounding only
//! (the parity tests hold every path to the Python library at their tolerance).

use std::sync::OnceLock;

use rayon::prelude::*;

use super::kernels::{self, Out, threads};

/// Weight rows per parallel task.
const COLS_PER_TASK: usize = 64;
/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MACS: usize = 1 << 20;

/// A `[n, k]` weight (PyTorch layout) packed for the AVX-512 kernel.
#[derive(Debug)]
pub struct PackedWeight {
    pub n: usize,
    pub k: usize,
    packed: Vec<f32>,
}

impl PackedWeight {
    /// Packs a row-major `[n, k]` weight.
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k, "weight too short");
        Self {
            n,
            k,
            packed: pack(w, n, k),
        }
    }

    /// Several weights of the same input width stacked (Q, K and V as one `[3h, h]` product).
    pub fn stack(parts: &[(&[f32], usize)], k: usize) -> Self {
        let all: Vec<f32> = parts
            .iter()
            .flat_map(|(w, rows)| w[..rows * k].iter().copied())
            .collect();
        let n = parts.iter().map(|p| p.1).sum();
        Self::new(&all, n, k)
    }
}

/// Columns per group (one 512-bit register of `f32`).
const LANES: usize = 16;

/// `[n, k]` rows → groups of 16 columns, each `k` steps of 16 columns (one 64-byte load: one `k`
/// of 16 columns, multiplied by a broadcast activation). Columns past `n` are zeros.
fn pack(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut p = vec![0f32; n.next_multiple_of(LANES) * k];
    for j in 0..n {
        let (g, c) = (j / LANES, j % LANES);
        for (s, &v) in w[j * k..(j + 1) * k].iter().enumerate() {
            p[g * LANES * k + s * LANES + c] = v;
        }
    }
    p
}

/// Which float32 kernel runs the inference products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Kernel {
    /// `kernels::matmul_wt`: the unpacked AVX2/FMA kernel up to `kernels::SMALL_M` rows, `gemm`
    /// (packing at every call) above.
    Gemm,
    /// This module's AVX-512 kernel on weights packed at load.
    Avx512Packed,
}

impl F32Kernel {
    /// Whether this CPU runs the kernel.
    pub fn supported(self) -> bool {
        match self {
            F32Kernel::Gemm => true,
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512Packed => std::arch::is_x86_feature_detected!("avx512f"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU runs (for tests and benchmarks).
    pub fn available() -> Vec<Self> {
        [F32Kernel::Gemm, F32Kernel::Avx512Packed]
            .into_iter()
            .filter(|k| k.supported())
            .collect()
    }

    /// The name `SBERT_TUI_F32_KERNEL` takes.
    pub fn id(self) -> &'static str {
        match self {
            F32Kernel::Gemm => "gemm",
            F32Kernel::Avx512Packed => "avx512-packed",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            F32Kernel::Gemm => "gemm / unpacked avx2-fma",
            F32Kernel::Avx512Packed => "avx512 on packed weights",
        }
    }
}

/// The float32 kernel for a few rows and for a batch, chosen once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct F32Choice {
    /// Up to `kernels::SMALL_M` rows (one or a few short sentences).
    pub small: F32Kernel,
    /// More rows (batches).
    pub large: F32Kernel,
}

impl F32Choice {
    /// Timed once per process: each kernel on 16 and on 256 rows of a 384 × 384 product (a few
    /// milliseconds). `SBERT_TUI_F32_KERNEL=gemm|avx512-packed` sets both instead.
    pub fn get() -> Self {
        static CHOICE: OnceLock<F32Choice> = OnceLock::new();
        *CHOICE.get_or_init(|| {
            let available = F32Kernel::available();
            if let Some(k) = kernels::chosen_by_env("SBERT_TUI_F32_KERNEL", &available, |k| k.id())
            {
                return F32Choice { small: k, large: k };
            }
            let (_, k, n) = kernels::TIMING_SHAPE;
            let time = |m: usize| {
                let (x, w) = kernels::timing_data(m, k, n);
                let packed = PackedWeight::new(&w, n, k);
                let mut dst = vec![0f32; m * n];
                kernels::fastest(&available, |kernel| match kernel {
                    F32Kernel::Gemm => kernels::matmul_wt(&mut dst, n, &x, m, k, &w, n),
                    _ => matmul_with(kernel, &mut dst, n, &x, m, &packed),
                })
            };
            F32Choice {
                small: time(16),
                large: time(256),
            }
        })
    }

    /// The kernel for a product of `m` rows.
    pub fn for_rows(self, m: usize) -> F32Kernel {
        if m <= kernels::SMALL_M {
            self.small
        } else {
            self.large
        }
    }

    /// Whether any product runs on packed weights (so that the model packs them at load).
    pub fn packs(self) -> bool {
        self.small != F32Kernel::Gemm || self.large != F32Kernel::Gemm
    }
}

/// `dst[i * dst_rs + j] = Σ_k x[i, k] · w[j, k]` through a packed-weight kernel (which the CPU
/// must run).
pub fn matmul_with(
    kernel: F32Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    m: usize,
    w: &PackedWeight,
) {
    let (k, n) = (w.k, w.n);
    assert!(x.len() >= m * k, "lhs too short");
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n, "dst too short");
    assert!(
        kernel != F32Kernel::Gemm && kernel.supported(),
        "the {} kernel does not run on packed weights here",
        kernel.name()
    );
    // SAFETY: `dst` is borrowed mutably for this whole call; each task writes only its own
    // columns.
    let out = unsafe { Out::new(dst) };
    let run = |j0: usize, j1: usize| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs AVX-512 F (checked above); `w.packed` is `pack` of the weight;
        // tasks start at multiples of 16 columns.
        unsafe {
            avx512::columns(out, dst_rs, x, m, k, &w.packed, n, j0, j1)
        }
    };
    if threads() < 2 || m * n * k < PARALLEL_MACS {
        run(0, n);
    } else {
        (0..n.div_ceil(COLS_PER_TASK))
            .into_par_iter()
            .for_each(|b| run(b * COLS_PER_TASK, ((b + 1) * COLS_PER_TASK).min(n)));
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{LANES, Out};

    const ROWS: usize = 6;
    const GROUPS: usize = 4;

    /// Columns `j0..j1` (`j0` a multiple of 16) of every row of `x` (`m` rows of `k`).
    ///
    /// # Safety
    /// The CPU must run AVX-512 F; `packed` is `pack` of an `[n, k]` weight; `dst` holds `m` rows
    /// of `dst_rs`, at least `n` wide.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn columns(
        dst: Out,
        dst_rs: usize,
        x: &[f32],
        m: usize,
        k: usize,
        packed: &[f32],
        n: usize,
        j0: usize,
        j1: usize,
    ) {
        debug_assert!(j0.is_multiple_of(LANES) && j1 <= n);
        debug_assert_eq!(packed.len(), n.next_multiple_of(LANES) * k);
        debug_assert!(x.len() >= m * k);
        macro_rules! go {
            ($rows:expr, $groups:expr, $i:expr, $j:expr; $(($r:literal, $g:literal)),*) => {
                match ($rows, $groups) {
                    // SAFETY: rows `i..i + r` < m, groups within `packed`, columns `j..j1`.
                    $(($r, $g) => unsafe {
                        block::<$r, $g>(dst, dst_rs, x, k, packed, $i, $j, j1)
                    },)*
                    _ => unreachable!(),
                }
            };
        }
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(ROWS);
            let mut j = j0;
            while j < j1 {
                let groups = (j1 - j).div_ceil(LANES).min(GROUPS);
                go!(rows, groups, i, j;
                    (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4),
                    (3, 1), (3, 2), (3, 3), (3, 4), (4, 1), (4, 2), (4, 3), (4, 4),
                    (5, 1), (5, 2), (5, 3), (5, 4), (6, 1), (6, 2), (6, 3), (6, 4));
                j += GROUPS * LANES;
            }
            i += rows;
        }
    }

    /// `R` rows from `i` × `G` groups of 16 columns from `j`, over the whole of `k`; stored with
    /// a mask past `j_end`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn block<const R: usize, const G: usize>(
        dst: Out,
        dst_rs: usize,
        x: &[f32],
        k: usize,
        packed: &[f32],
        i: usize,
        j: usize,
        j_end: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        // SAFETY (all pointer reads): rows `i..i + R` of `x` and groups `j / 16..j / 16 + G` of
        // `packed` (`16 · k` values each) exist, per `columns`.
        let a = unsafe { x.as_ptr().add(i * k) };
        let b = unsafe { packed.as_ptr().add(j * k) };
        for p in 0..k {
            let wv: [__m512; G] = std::array::from_fn(|g| unsafe {
                _mm512_loadu_ps(b.add(g * LANES * k + p * LANES))
            });
            for r in 0..R {
                let xv = _mm512_set1_ps(unsafe { *a.add(r * k + p) });
                for g in 0..G {
                    acc[r][g] = _mm512_fmadd_ps(xv, wv[g], acc[r][g]);
                }
            }
        }
        for g in 0..G {
            let j = j + g * LANES;
            let valid = (j_end - j).min(LANES);
            let mask: __mmask16 = if valid == LANES { !0 } else { (1 << valid) - 1 };
            for r in 0..R {
                // SAFETY: row `i + r`, columns `j..j + valid`, inside `dst`, this task's own.
                unsafe {
                    _mm512_mask_storeu_ps(dst.at((i + r) * dst_rs + j, valid), mask, acc[r][g])
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packed_kernel_matches_the_naive_product() {
        let data = |n: usize, s: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 + s) * 0.37).sin()).collect()
        };
        for (m, k, n) in [
            (1, 7, 1),
            (5, 33, 3),
            (13, 384, 37),
            (70, 101, 130),
            (33, 384, 1152),
        ] {
            let (x, w) = (data(m * k, 1.0), data(n * k, 2.0));
            let packed = PackedWeight::new(&w, n, k);
            for kernel in F32Kernel::available() {
                if kernel == F32Kernel::Gemm {
                    continue;
                }
                // A strided destination: the product lands in the middle of wider rows.
                let dst_rs = n + 5;
                let mut got = vec![f32::NAN; m * dst_rs];
                matmul_with(kernel, &mut got[2..], dst_rs, &x, m, &packed);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                            .sum();
                        let g = got[2 + i * dst_rs + j] as f64;
                        assert!(
                            (g - want).abs() <= 1e-5 * k as f64,
                            "{} at {m}x{k}x{n} [{i},{j}]: {g} vs {want}",
                            kernel.name()
                        );
                    }
                }
                // Nothing outside the product's columns was written.
                assert!(got[..2].iter().all(|v| v.is_nan()));
                assert!(got[2 + n..dst_rs].iter().all(|v| v.is_nan()));
            }
        }
    }
}
