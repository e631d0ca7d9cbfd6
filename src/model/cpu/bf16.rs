//! bfloat16 products for `--precision bf16`: the linear layers' weights are rounded to bf16 once,
//! each row of activations when it arrives (round to nearest even, as the hardware does), and
//! the products of bf16 values are summed in `f32`.
//!
//! A product of two bf16 values is exact in `f32` (8 + 8 significant bits), so the kernels differ
//! only in the order of their `f32` sums:
//! - [`Bf16Kernel::Widened`]: the bf16 values widened back to `f32` and multiplied by the float32
//!   kernels (`kernels::matmul_wt`): any CPU, float32's speed, half the weights' rounding error
//!   of int8;
//! - [`Bf16Kernel::Avx512Bf16`]: AVX-512 BF16's `vdpbf16ps` (two bf16 products added into each
//!   `f32` lane per instruction, twice float32 FMA's multiply-adds), on weights packed for it.
//!
//! The kernel is chosen at run time by timing both on a layer-sized product (see
//! [`Bf16Kernel::best`]).

use std::sync::OnceLock;

use super::kernels::{self, Out};

/// `f32` → bf16, rounding to nearest even (NaN stays NaN).
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// bf16 → `f32` (exact).
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// `x` rounded to bf16 and widened back.
fn round(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// A `[n, k]` weight (PyTorch layout) rounded to bf16.
#[derive(Debug)]
pub struct Bf16Weight {
    pub n: usize,
    pub k: usize,
    /// `[n, k]`, the bf16 values widened to `f32` (for [`Bf16Kernel::Widened`]), made at first
    /// use.
    widened: OnceLock<Vec<f32>>,
    /// `[n, k]` bf16.
    data: Vec<u16>,
    /// The AVX-512 kernel's layout, made at first use (see `avx512::pack`).
    packed: OnceLock<Vec<u16>>,
}

impl Bf16Weight {
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k, "weight too short");
        Self {
            n,
            k,
            widened: OnceLock::new(),
            data: w[..n * k].iter().map(|&v| to_bf16(v)).collect(),
            packed: OnceLock::new(),
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

    fn widened(&self) -> &[f32] {
        self.widened
            .get_or_init(|| self.data.iter().map(|&v| from_bf16(v)).collect())
    }
}

/// Which kernel runs the bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// bf16 values widened to `f32`, through the float32 kernels (any CPU).
    Widened,
    /// AVX-512 BF16's `vdpbf16ps`, 6 rows × 64 columns per register block.
    Avx512Bf16,
}

impl Bf16Kernel {
    const ALL: [Bf16Kernel; 2] = [Bf16Kernel::Widened, Bf16Kernel::Avx512Bf16];

    /// Whether this CPU runs the kernel.
    pub fn supported(self) -> bool {
        match self {
            Bf16Kernel::Widened => true,
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU runs (for tests and benchmarks).
    pub fn available() -> Vec<Self> {
        Self::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// The kernel the products run on: the faster of those this CPU runs, timed once per
    /// process on a layer-sized product (see `kernels::fastest`).
    /// `SBERT_TUI_BF16_KERNEL=widened|avx512-bf16` overrides the choice.
    pub fn best() -> Self {
        static BEST: OnceLock<Bf16Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let chosen =
                kernels::chosen_by_env("SBERT_TUI_BF16_KERNEL", &Self::available(), |k| k.id());
            chosen.unwrap_or_else(|| {
                let (m, k, n) = kernels::TIMING_SHAPE;
                let (x, w) = kernels::timing_data(m, k, n);
                let w = Bf16Weight::new(&w, n, k);
                let mut dst = vec![0f32; m * n];
                kernels::fastest(&Self::available(), |kernel| {
                    matmul_with(kernel, &mut dst, n, &x, m, &w)
                })
            })
        })
    }

    /// The name `SBERT_TUI_BF16_KERNEL` takes.
    pub fn id(self) -> &'static str {
        match self {
            Bf16Kernel::Widened => "widened",
            Bf16Kernel::Avx512Bf16 => "avx512-bf16",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Widened => "widened to f32 (gemm)",
            Bf16Kernel::Avx512Bf16 => "avx512-bf16 (vdpbf16ps)",
        }
    }
}

/// `dst[i * dst_rs + j] ≈ Σ_k x[i, k] · w[j, k]`, `x` and `w` rounded to bf16, sums in `f32`,
/// through the fastest kernel.
pub fn matmul_wt(dst: &mut [f32], dst_rs: usize, x: &[f32], m: usize, w: &Bf16Weight) {
    matmul_with(Bf16Kernel::best(), dst, dst_rs, x, m, w)
}

/// [`matmul_wt`] through a chosen kernel (which the CPU must run: see
/// [`Bf16Kernel::available`]).
pub fn matmul_with(
    kernel: Bf16Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    m: usize,
    w: &Bf16Weight,
) {
    let (k, n) = (w.k, w.n);
    if !kernels::check_product(dst, dst_rs, x, m, k, n) {
        return;
    }
    assert!(
        kernel.supported(),
        "this CPU does not run the {} kernel",
        kernel.name()
    );
    match kernel {
        Bf16Kernel::Widened => {
            let xr: Vec<f32> = x[..m * k].iter().map(|&v| round(v)).collect();
            kernels::matmul_wt(dst, dst_rs, &xr, m, k, w.widened(), n)
        }
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Avx512Bf16 => {
            let kp = k.next_multiple_of(2);
            let xb = avx512::rows(x, m, k, kp);
            let packed = w.packed.get_or_init(|| avx512::pack(&w.data, n, k, kp));
            // SAFETY: `dst` is borrowed mutably for this whole call; each task writes only its
            // own tile.
            let out = unsafe { Out::new(dst) };
            // SAFETY: the CPU runs AVX-512 F and BF16 (checked above); `packed` is `pack` of
            // `w`, `xb` holds `m` rows of `kp`; tiles start at multiples of 16 columns.
            kernels::tiles(m, n, k, |rows, cols| unsafe {
                avx512::tile(out, dst_rs, &xb, kp, packed, n, rows, cols)
            });
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked by `supported`"),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use rayon::prelude::*;

    use super::{Out, to_bf16};
    use crate::model::cpu::kernels::threads;

    const LANES: usize = 16;

    /// Activation rows rounded to bf16, each padded to `kp` (even) with a zero; on all threads
    /// when there are many (one thread left the other idle for 4% of int8 encoding).
    pub fn rows(x: &[f32], m: usize, k: usize, kp: usize) -> Vec<u16> {
        const ROWS: usize = 16;
        let mut out = vec![0u16; m * kp];
        let x = &x[..m * k];
        let convert = |(rows, src): (&mut [u16], &[f32])| {
            for (row, src) in rows.chunks_exact_mut(kp).zip(src.chunks_exact(k)) {
                for (d, &v) in row.iter_mut().zip(src) {
                    *d = to_bf16(v);
                }
            }
        };
        if m > ROWS && threads() > 1 {
            out.par_chunks_mut(ROWS * kp)
                .zip(x.par_chunks(ROWS * k))
                .for_each(convert);
        } else {
            convert((&mut out, x));
        }
        out
    }

    /// `[n, k]` bf16 rows → groups of 16 columns, each `kp / 2` steps of 16 columns × 2 values
    /// (one 64-byte load: two consecutive `k` of 16 columns, what `vdpbf16ps` multiplies by a
    /// broadcast pair of activations). Columns past `n` and `k` past the row are zeros.
    pub fn pack(data: &[u16], n: usize, k: usize, kp: usize) -> Vec<u16> {
        let mut p = vec![0u16; n.next_multiple_of(LANES) * kp];
        for j in 0..n {
            let (g, c) = (j / LANES, j % LANES);
            for (s, &v) in data[j * k..(j + 1) * k].iter().enumerate() {
                p[g * LANES * kp + (s / 2) * 2 * LANES + c * 2 + s % 2] = v;
            }
        }
        p
    }

    /// Rows `i0..i1` × columns `j0..j1` (`j0` a multiple of 16) of the product.
    ///
    /// # Safety
    /// The CPU must run AVX-512 F and BF16; `xb` holds at least `i1` rows of `kp` (even) bf16
    /// values; `packed` is `pack` of an `[n, k]` weight with this `kp`; `dst` holds rows
    /// `i0..i1` of `dst_rs`, at least `n` wide; no other thread touches this tile.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        dst: Out,
        dst_rs: usize,
        xb: &[u16],
        kp: usize,
        packed: &[u16],
        n: usize,
        (i0, i1): (usize, usize),
        (j0, j1): (usize, usize),
    ) {
        debug_assert!(j0.is_multiple_of(LANES) && j1 <= n);
        debug_assert_eq!(packed.len(), n.next_multiple_of(LANES) * kp);
        debug_assert!(xb.len() >= i1 * kp);
        crate::model::cpu::kernels::blocks_6x4!(
            block,
            (i0, i1),
            (j0, j1),
            dst,
            dst_rs,
            xb,
            kp,
            packed
        );
    }

    /// `R` rows from `i` × `G` groups of 16 columns from `j`, over the whole of `kp`; stored with
    /// a mask past `j_end`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn block<const R: usize, const G: usize>(
        dst: Out,
        dst_rs: usize,
        xb: &[u16],
        kp: usize,
        packed: &[u16],
        i: usize,
        j: usize,
        j_end: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        // SAFETY (all pointer reads): rows `i..i + R` of `xb` and groups `j / 16..j / 16 + G` of
        // `packed` (`16 · kp` values each) exist, per `tile`.
        let a = unsafe { xb.as_ptr().add(i * kp) };
        let b = unsafe { packed.as_ptr().add(j * kp) };
        let mut p = 0;
        while p < kp {
            let wv: [__m512bh; G] = std::array::from_fn(|g| unsafe {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    b.add(g * LANES * kp + p * LANES) as *const _,
                ))
            });
            for r in 0..R {
                let x = unsafe { (a.add(r * kp + p) as *const i32).read_unaligned() };
                // SAFETY: same size; a pair of bf16 values in every lane.
                let x = unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(x)) };
                for g in 0..G {
                    acc[r][g] = _mm512_dpbf16_ps(acc[r][g], x, wv[g]);
                }
            }
            p += 2;
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
    use crate::model::cpu::kernels::random_values as random;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: ties to the even (1 + 2⁻⁶).
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn every_kernel_sums_the_same_bf16_products() {
        // Odd shapes (k odd, columns not multiples of the block), and one large enough to run
        // in parallel.
        for (m, k, n) in [
            (1, 7, 1),
            (5, 33, 3),
            (13, 384, 37),
            (70, 101, 130),
            (33, 384, 1152),
        ] {
            let x = random(m * k, 3 + m as u64);
            let w = random(n * k, 4 + n as u64);
            let bw = Bf16Weight::new(&w, n, k);
            // The exact sum of the bf16 products, in f64, and the size of its terms.
            let mut exact = vec![0f64; m * n];
            let mut size = vec![0f64; m * n];
            let mut f32_exact = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    for p in 0..k {
                        let a = round(x[i * k + p]) as f64 * round(w[j * k + p]) as f64;
                        exact[i * n + j] += a;
                        size[i * n + j] += a.abs();
                        f32_exact[i * n + j] += x[i * k + p] * w[j * k + p];
                    }
                }
            }
            for kernel in Bf16Kernel::available() {
                let mut got = vec![f32::NAN; m * n];
                matmul_with(kernel, &mut got, n, &x, m, &bw);
                for (idx, &g) in got.iter().enumerate() {
                    // Only the f32 summation order differs: within k ulps of the terms' size.
                    let tol = size[idx] * k as f64 * f32::EPSILON as f64;
                    assert!(
                        (g as f64 - exact[idx]).abs() <= tol,
                        "{} at {m}x{k}x{n}, [{idx}]: {g} vs {}",
                        kernel.name(),
                        exact[idx]
                    );
                    // And bf16's rounding keeps it near the float32 product: about 2⁻⁸ of
                    // each term.
                    assert!(
                        (g - f32_exact[idx]).abs() as f64 <= size[idx] / 128.0,
                        "{} at {m}x{k}x{n}: far from f32",
                        kernel.name()
                    );
                }
            }
        }
    }
}
