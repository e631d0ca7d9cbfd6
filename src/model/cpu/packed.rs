//! float32 products on weights packed once at load, for the fused inference path: an AVX-512
//! kernel (6 rows × 64 columns of FMAs per register block, 32 registers) whose weight layout
//! is made once instead of at every product (as `gemm` packs), and which needs no packing of the
//! activations. Whether it beats `gemm` and the unpacked AVX2 kernel depends on the CPU and the
//! number of rows, so [`F32Choice::get`] times them once per process, for a few rows (the
//! latency path) and for a batch, and keeps the faster of each.
//!
//! The same kernel, reading its operands where they lie (any row and column strides for `A`,
//! contiguous rows of `B`), runs the training gradients `dyᵀ · x` and `dy · W` ([`matmul`])
//! where it was timed faster than `gemm` on one.
//!
//! Sums run in another order than `gemm`'s, so results differ from it by float32 rounding only
//! (the parity tests hold every path to the Python library at their tolerance).

use std::sync::OnceLock;

use super::kernels::{self, Mat, Out};

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
    /// This module's AVX-512 kernel: on weights packed at load (inference), on the operands'
    /// own storage (training gradients).
    Avx512,
}

impl F32Kernel {
    /// Whether this CPU runs the kernel.
    pub fn supported(self) -> bool {
        match self {
            F32Kernel::Gemm => true,
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU runs (for tests and benchmarks).
    pub fn available() -> Vec<Self> {
        [F32Kernel::Gemm, F32Kernel::Avx512]
            .into_iter()
            .filter(|k| k.supported())
            .collect()
    }

    /// The name `SBERT_TUI_F32_KERNEL` takes.
    pub fn id(self) -> &'static str {
        match self {
            F32Kernel::Gemm => "gemm",
            F32Kernel::Avx512 => "avx512",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            F32Kernel::Gemm => "gemm / unpacked avx2-fma",
            F32Kernel::Avx512 => "avx512 fma, 6x64 blocks",
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
    /// The training products ([`matmul`], whose `b` has contiguous rows): the weight gradient
    /// `dyᵀ · x` and the input gradient `dy · W`.
    pub strided: F32Kernel,
}

impl F32Choice {
    /// Timed once per process: each kernel on 16 and on 256 rows of a 384 × 384 product, and on
    /// a weight gradient of the same size (a few milliseconds).
    /// `SBERT_TUI_F32_KERNEL=gemm|avx512` sets all three instead.
    pub fn get() -> Self {
        static CHOICE: OnceLock<F32Choice> = OnceLock::new();
        *CHOICE.get_or_init(|| {
            let available = F32Kernel::available();
            if let Some(k) = kernels::chosen_by_env("SBERT_TUI_F32_KERNEL", &available, |k| k.id())
            {
                return F32Choice {
                    small: k,
                    large: k,
                    strided: k,
                };
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
            // A weight gradient's shape: 384 outputs, 256 tokens summed, 384 inputs.
            let strided = {
                let (dy, x) = kernels::timing_data(256, 384, 384);
                let mut dw = vec![0f32; 384 * 384];
                let (dy, x) = (Mat::rows(&dy, 256, 384), Mat::rows(&x, 256, 384));
                kernels::fastest(&available, |kernel| match kernel {
                    F32Kernel::Gemm => kernels::matmul(&mut dw, 384, dy.t(), x, false),
                    _ => strided_with(&mut dw, 384, dy.t(), x, false),
                })
            };
            F32Choice {
                small: time(16),
                large: time(256),
                strided,
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

    /// Whether any inference product runs on packed weights (so that the model packs them at
    /// load).
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
    if !kernels::check_product(dst, dst_rs, x, m, k, n) {
        return;
    }
    assert!(
        kernel != F32Kernel::Gemm && kernel.supported(),
        "the {} kernel does not run on packed weights here",
        kernel.name()
    );
    let geo = Geometry {
        ars: k,
        acs: 1,
        bgs: LANES * k,
        bps: LANES,
        k,
        accumulate: false,
    };
    // SAFETY: `dst` is borrowed mutably for this whole call; each task writes only its own tile.
    let out = unsafe { Out::new(dst) };
    kernels::tiles(m, n, k, |rows, cols| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs AVX-512 F (checked above); `x` holds `m` rows of `k`;
        // `w.packed` is `pack` of the weight (groups of `16 · k`, zeros past `n`); `dst` was
        // checked; tiles start at multiples of 16 columns.
        unsafe {
            avx512::tile(out, dst_rs, x, &w.packed, geo, rows, cols)
        }
    });
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` row-major with rows `dst_rs`
/// apart, any strides for `a` and `b`: through this module's AVX-512 kernel where `b`'s rows are
/// contiguous (`b.cs == 1`) and the kernel was timed faster than `gemm` on a weight gradient
/// ([`F32Choice`]), else through `kernels::matmul` (`gemm`). The training products come here.
pub fn matmul(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    if runs_strided(&b) {
        strided_with(dst, dst_rs, a, b, accumulate)
    } else {
        kernels::matmul(dst, dst_rs, a, b, accumulate)
    }
}

/// `a · b` as a new row-major matrix, as [`matmul`] computes it, written once (no zero fill
/// first): the weight gradients of a training step.
pub fn product(a: Mat, b: Mat) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if !runs_strided(&b) || m == 0 || n == 0 || k == 0 {
        return kernels::product(a, b);
    }
    assert!(F32Kernel::Avx512.supported());
    assert_eq!(k, b.rows, "inner dimensions");
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the buffer holds `m · n` elements, rows `n` apart, and nothing else sees it; the
    // kernel stores every element of the product once and, not accumulating, reads none; then
    // they are initialised.
    unsafe {
        strided_into(Out::spare(&mut dst, m * n), n, a, b, false);
        dst.set_len(m * n);
    }
    dst
}

/// Whether a training product with this `b` runs on the AVX-512 kernel: `b`'s rows are
/// contiguous and the kernel was timed faster than `gemm` ([`F32Choice`]).
fn runs_strided(b: &Mat) -> bool {
    b.cs == 1 && F32Choice::get().strided != F32Kernel::Gemm
}

/// [`matmul`] on the AVX-512 kernel, chosen or not (the CPU must run it, `b.cs == 1`).
fn strided_with(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    assert!(F32Kernel::Avx512.supported() && b.cs == 1);
    assert_eq!(a.cols, b.rows, "inner dimensions");
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n, "dst too short");
    // SAFETY: `dst` is borrowed mutably for this whole call and holds the product (checked).
    unsafe { strided_into(Out::new(dst), dst_rs, a, b, accumulate) }
}

/// The body of [`strided_with`], into `out`.
///
/// # Safety
/// The CPU runs AVX-512 F, `b.cs == 1`, `a.cols == b.rows`, the product is not empty, `out` holds
/// it at rows `dst_rs` apart (initialised where `accumulate`) under [`Out::new`]'s contract.
unsafe fn strided_into(out: Out, dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    a.check();
    b.check();
    let geo = Geometry {
        ars: a.rs,
        acs: a.cs,
        bgs: LANES,
        bps: b.rs,
        k,
        accumulate,
    };
    kernels::tiles(m, n, k, |rows, cols| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs AVX-512 F; every element of `a` and `b` at these strides exists
        // (checked); `out` holds the product; each task writes only its own tile, which starts
        // at a multiple of 16 columns.
        unsafe {
            avx512::tile(out, dst_rs, a.data, b.data, geo, rows, cols)
        }
    });
}

/// Where the kernel finds its operands: `A(i, p)` at `a[i · ars + p · acs]`; the 16 columns of
/// group `g` at step `p` of `B` at `b[g · bgs + p · bps ..][..16]` (contiguous).
#[derive(Clone, Copy)]
struct Geometry {
    ars: usize,
    acs: usize,
    bgs: usize,
    bps: usize,
    /// Steps of the sum.
    k: usize,
    /// Add to `dst` instead of overwriting it.
    accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Geometry, LANES, Out};

    /// Rows `i0..i1` × columns `j0..j1` (`j0` a multiple of 16) of `A · B`.
    ///
    /// # Safety
    /// The CPU must run AVX-512 F; `a` and `b` hold every element `geo` addresses for these rows
    /// and the columns up to `j1` (a partial last group is loaded with a mask); `dst` holds rows
    /// `i0..i1` of `dst_rs`, at least `j1` wide; no other thread touches this tile.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(
        dst: Out,
        dst_rs: usize,
        a: &[f32],
        b: &[f32],
        geo: Geometry,
        (i0, i1): (usize, usize),
        (j0, j1): (usize, usize),
    ) {
        debug_assert!(j0.is_multiple_of(LANES));
        crate::model::cpu::kernels::blocks_6x4!(block, (i0, i1), (j0, j1), dst, dst_rs, a, b, geo);
    }

    /// The lanes of a group with `valid` columns left.
    fn mask(valid: usize) -> __mmask16 {
        if valid >= LANES { !0 } else { (1 << valid) - 1 }
    }

    /// `R` rows from `i` × `G` groups of 16 columns from `j`, over the whole sum; columns past
    /// `j_end` are neither loaded nor stored.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn block<const R: usize, const G: usize>(
        dst: Out,
        dst_rs: usize,
        a: &[f32],
        b: &[f32],
        geo: Geometry,
        i: usize,
        j: usize,
        j_end: usize,
    ) {
        let masks: [__mmask16; G] = std::array::from_fn(|g| mask(j_end - (j + g * LANES)));
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        // Pointers step through the sum (wrapping: the last step may point past the operands
        // without reading there). Every read is of an element `geo` addresses for rows
        // `i..i + R` and columns `j..j_end`, which exist per `tile`'s contract; masked loads
        // touch only those.
        let mut ap: [*const f32; R] =
            std::array::from_fn(|r| a.as_ptr().wrapping_add((i + r) * geo.ars));
        let mut bp = b.as_ptr().wrapping_add((j / LANES) * geo.bgs);
        for _ in 0..geo.k {
            let wv: [__m512; G] = std::array::from_fn(|g| unsafe {
                _mm512_maskz_loadu_ps(masks[g], bp.wrapping_add(g * geo.bgs))
            });
            for r in 0..R {
                // SAFETY: as above.
                let xv = _mm512_set1_ps(unsafe { *ap[r] });
                for g in 0..G {
                    acc[r][g] = _mm512_fmadd_ps(xv, wv[g], acc[r][g]);
                }
                ap[r] = ap[r].wrapping_add(geo.acs);
            }
            bp = bp.wrapping_add(geo.bps);
        }
        for g in 0..G {
            let j = j + g * LANES;
            let valid = (j_end - j).min(LANES);
            for r in 0..R {
                // SAFETY: row `i + r`, columns `j..j + valid`, inside `dst`, this task's own.
                unsafe {
                    let out = dst.at((i + r) * dst_rs + j, valid);
                    let v = if geo.accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(masks[g], out), acc[r][g])
                    } else {
                        acc[r][g]
                    };
                    _mm512_mask_storeu_ps(out, masks[g], v)
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

    #[test]
    fn the_strided_kernel_matches_gemm_with_transposes_and_accumulation() {
        if !F32Kernel::Avx512.supported() {
            eprintln!("SKIPPED: this CPU has no AVX-512, so training products stay on gemm");
            return;
        }
        let data = |n: usize, s: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 + s) * 0.37).sin()).collect()
        };
        // (m, k, n): a weight gradient `dyᵀ · x` and an input gradient `dy · W`, odd sizes, and
        // one large enough to split into row and column tasks.
        for (m, k, n) in [(1, 1, 1), (7, 13, 19), (37, 101, 70), (384, 256, 130)] {
            let dy = data(k * m, 1.0); // [k, m], read transposed
            let x = data(k * n, 2.0); // [k, n]
            for (a, b) in [
                (Mat::rows(&dy, k, m).t(), Mat::rows(&x, k, n)),
                (Mat::rows(&dy, m, k), Mat::rows(&x, k, n)),
            ] {
                for accumulate in [false, true] {
                    let start = data(m * (n + 3), 4.0);
                    let (mut want, mut got) = (start.clone(), start.clone());
                    kernels::matmul(&mut want, n + 3, a, b, accumulate);
                    strided_with(&mut got, n + 3, a, b, accumulate);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-5 * (k as f32).max(1.0),
                            "{m}x{k}x{n} accumulate {accumulate} [{i}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
