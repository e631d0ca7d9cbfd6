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
//!   `f32` lane per instruction, twice float32 FMA's multiply-adds), on weights packed for it;
//! - [`Bf16Kernel::Amx`]: AMX's `tdpbf16ps` (`cpu::amx`) on the same packed weights (Intel Xeon
//!   from Sapphire Rapids).
//!
//! The kernel is chosen at run time by timing both on a layer-sized product (see
//! [`Bf16Kernel::best`]).

use std::sync::OnceLock;

use super::kernels::{self, Out};

/// `f32` → bf16, rounding to nearest even (NaN stays NaN).
/// Branch-free, so that loops over it vectorise.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let quiet = ((b >> 16) | 0x40) as u16;
    let round = 0x7fff + ((b >> 16) & 1);
    let rounded = (b.wrapping_add(round) >> 16) as u16;
    if x.is_nan() { quiet } else { rounded }
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

    /// `k` padded for the packed kernels: a multiple of 32 values (one 64-byte AMX tile row).
    #[cfg(target_arch = "x86_64")]
    fn kp(&self) -> usize {
        self.k.next_multiple_of(32)
    }

    /// The weights in the AVX-512 and AMX kernels' layout.
    #[cfg(target_arch = "x86_64")]
    fn packed(&self) -> &[u16] {
        self.packed
            .get_or_init(|| avx512::pack(&self.data, self.n, self.k, self.kp()))
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
    /// AMX's `tdpbf16ps`, 32 rows × 32 columns per block.
    Amx,
}

impl Bf16Kernel {
    const ALL: [Bf16Kernel; 3] = [Bf16Kernel::Widened, Bf16Kernel::Avx512Bf16, Bf16Kernel::Amx];

    /// Whether this CPU runs the kernel.
    pub fn supported(self) -> bool {
        match self {
            Bf16Kernel::Widened => true,
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Amx => amx::usable(),
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
    /// `SBERT_TUI_BF16_KERNEL=widened|avx512-bf16|amx` overrides the choice.
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
            Bf16Kernel::Amx => "amx",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Widened => "widened to f32 (gemm)",
            Bf16Kernel::Avx512Bf16 => "avx512-bf16 (vdpbf16ps)",
            Bf16Kernel::Amx => "amx (tdpbf16ps)",
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
        Bf16Kernel::Avx512Bf16 | Bf16Kernel::Amx => {
            let kp = w.kp();
            let xb = avx512::rows(x, m, k, kp);
            let packed = w.packed();
            // SAFETY: `dst` is borrowed mutably for this whole call; each task writes only its
            // own tile.
            let out = unsafe { Out::new(dst) };
            // SAFETY: the CPU runs the kernel (checked above); `packed` is `pack` of `w`, `xb`
            // holds `m` rows of `kp` (a multiple of 32) and zero rows to a multiple of 32;
            // tiles start at multiples of 16 columns.
            kernels::tiles(m, n, k, |rows, cols| unsafe {
                if kernel == Bf16Kernel::Amx {
                    amx::tile(out, dst_rs, &xb, kp, packed, n, rows, cols)
                } else {
                    avx512::tile(out, dst_rs, &xb, kp, packed, n, rows, cols)
                }
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

    /// Activation rows rounded to bf16, each padded to `kp` with zeros, and zero rows up to a
    /// multiple of 32 (what one AMX block reads); on all threads when there are many (one
    /// thread left the other idle for 4% of int8 encoding).
    pub fn rows(x: &[f32], m: usize, k: usize, kp: usize) -> Vec<u16> {
        const ROWS: usize = 16;
        let mut out = vec![0u16; m.next_multiple_of(32) * kp];
        let x = &x[..m * k];
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        let convert = |(rows, src): (&mut [u16], &[f32])| {
            for (row, src) in rows.chunks_exact_mut(kp).zip(src.chunks_exact(k)) {
                // SAFETY: the CPU runs AVX-512 F (checked).
                unsafe { to_bf16_row(src, row) }
            }
        };
        let real = &mut out[..m * kp];
        if m > ROWS && threads() > 1 {
            real.par_chunks_mut(ROWS * kp)
                .zip(x.par_chunks(ROWS * k))
                .for_each(convert);
        } else {
            convert((real, x));
        }
        out
    }

    /// `dst[i] = to_bf16(src[i])`, compiled for AVX-512 (16 values an instruction; the
    /// baseline build converted one at a time, 2.4% of an int8 encode).
    #[target_feature(enable = "avx512f")]
    fn to_bf16_row(src: &[f32], dst: &mut [u16]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = to_bf16(v);
        }
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

/// The first entry of `got` (`[m, n]`) farther from the exact sum of the bf16 products of `x`
/// (`[m, k]`) and `w` (`[n, k]`) than the bf16 kernels' tolerance (their `f32` sums may run in any
/// order: within `k` ulps of the terms' size), as (index, got, exact); `None` when all are within.
#[cfg(target_arch = "x86_64")]
fn off_bf16_sum(
    x: &[f32],
    w: &[f32],
    (m, k, n): (usize, usize, usize),
    got: &[f32],
) -> Option<(usize, f32, f64)> {
    (0..m * n).find_map(|idx| {
        let (i, j) = (idx / n, idx % n);
        let (mut sum, mut size) = (0f64, 0f64);
        for p in 0..k {
            let t = round(x[i * k + p]) as f64 * round(w[j * k + p]) as f64;
            sum += t;
            size += t.abs();
        }
        ((got[idx] as f64 - sum).abs() > size * k as f64 * f32::EPSILON as f64)
            .then_some((idx, got[idx], sum))
    })
}

#[cfg(target_arch = "x86_64")]
mod amx {
    //! The bf16 products on AMX's `tdpbf16ps` (see `cpu::amx`): 32 × 32 blocks on the AVX-512
    //! kernel's packed weights.

    use std::arch::x86_64::*;

    use super::{Bf16Weight, Out};
    use crate::model::cpu::amx::{self, Acc, COLS, Op, ROWS};

    /// Whether AMX-BF16 runs here and a small product through it is within the bf16 kernels'
    /// tolerance of the exact sum of the same bf16 products (`amx::checked`).
    pub fn usable() -> bool {
        amx::checked(Op::Bf16, self_check)
    }

    fn self_check() -> bool {
        let (m, k, n) = (37, 200, 53);
        let (x, w) = crate::model::cpu::kernels::timing_data(m, k, n);
        let bw = Bf16Weight::new(&w, n, k);
        let (kp, packed) = (bw.kp(), bw.packed());
        let xb = super::avx512::rows(&x, m, k, kp);
        let mut got = vec![f32::NAN; m * n];
        // SAFETY: AMX-BF16 is usable (checked by the caller); `got` is borrowed mutably for
        // this call; the operands are as `matmul_with` makes them.
        unsafe { tile(Out::new(&mut got), n, &xb, kp, packed, n, (0, m), (0, n)) };
        super::off_bf16_sum(&x, &w, (m, k, n), &got).is_none()
    }

    /// Rows `i0..i1` × columns `j0..j1` (`j0` a multiple of 16) of the product.
    ///
    /// # Safety
    /// `amx::usable(Op::Bf16)`; `xb` holds rows up to a multiple of 32 past `i1`, `kp` values
    /// each (a multiple of 32); `packed` is `avx512::pack` of an `[n, k]` weight with this
    /// `kp`; `dst` holds rows `i0..i1` of `dst_rs`, at least `n` wide; no other thread touches
    /// this tile.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        dst: Out,
        dst_rs: usize,
        xb: &[u16],
        kp: usize,
        packed: &[u16],
        n: usize,
        rows: (usize, usize),
        cols: (usize, usize),
    ) {
        // SAFETY: AMX-BF16 is usable (caller); `blocks` gets the caller's contract, and runs
        // `amx::block` with the configuration loaded on this thread.
        unsafe {
            amx::configure();
            blocks(
                dst,
                dst_rs,
                xb,
                kp,
                packed,
                n,
                rows,
                cols,
                |a, b, kpb, r, g, acc| amx::block(Op::Bf16, a, b, kpb, r, g, acc),
            );
            amx::release();
        }
    }

    /// [`tile`]'s blocks (`amx::for_blocks`), with the block's product as `run` (AMX, or its
    /// emulation in the tests), each tile stored to `dst`.
    ///
    /// # Safety
    /// As [`tile`], less AMX; `run` must be safe to call as `amx::block` is; the CPU runs
    /// AVX-512 F.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn blocks(
        dst: Out,
        dst_rs: usize,
        xb: &[u16],
        kp: usize,
        packed: &[u16],
        n: usize,
        rows: (usize, usize),
        cols: (usize, usize),
        run: impl FnMut(*const u8, *const u8, usize, bool, bool, &mut Acc),
    ) {
        assert!(kp.is_multiple_of(32));
        let (a, b) = (amx::bytes(xb), amx::bytes(packed));
        amx::for_blocks(a, b, 2 * kp, n, rows, cols, run, |acc, r0, c0| {
            // SAFETY: AVX-512 F (caller); the tile's rows and columns are inside the caller's.
            unsafe { store(dst, dst_rs, acc, (r0, rows.1), (c0, cols.1)) }
        });
    }

    /// One accumulator tile (`f32` bits) to `dst`: rows `r0..min(r0 + 16, i1)`, columns
    /// `c0..min(c0 + 16, j1)`.
    ///
    /// # Safety
    /// Those rows and columns are inside `dst` and the caller's own; the CPU runs AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn store(
        dst: Out,
        dst_rs: usize,
        acc: &[[u32; COLS]; ROWS],
        (r0, i1): (usize, usize),
        (c0, j1): (usize, usize),
    ) {
        let valid = (j1 - c0).min(COLS);
        let mask: __mmask16 = if valid == COLS { !0 } else { (1 << valid) - 1 };
        for (r, acc) in acc.iter().enumerate().take((i1 - r0).min(ROWS)) {
            // SAFETY: `acc` is 16 lanes of f32 bits; row `r0 + r`, columns `c0..c0 + valid` are
            // inside `dst` and this tile's own.
            unsafe {
                let v = _mm512_loadu_ps(acc.as_ptr() as *const f32);
                _mm512_mask_storeu_ps(dst.at((r0 + r) * dst_rs + c0, valid), mask, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu::kernels::random_values as random;

    /// The AMX kernel's block loop and layouts, with the tile instructions emulated, within the
    /// bf16 kernels' tolerance of the exact sum (the instructions themselves are checked where
    /// AMX runs, by `every_kernel_sums_the_same_bf16_products` and by `amx::usable`).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn amx_blocks_sum_the_bf16_products_with_emulated_tiles() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("SKIPPED amx_blocks_sum_the_bf16_products_with_emulated_tiles: no AVX-512 F");
            return;
        }
        for (m, k, n) in [
            (1, 7, 1),
            (5, 33, 3),
            (13, 384, 37),
            (70, 101, 130),
            (33, 64, 80),
        ] {
            let x = random(m * k, 3 + m as u64);
            let w = random(n * k, 4 + n as u64);
            let bw = Bf16Weight::new(&w, n, k);
            let (kp, packed) = (bw.kp(), bw.packed());
            let xb = avx512::rows(&x, m, k, kp);
            let mut got = vec![f32::NAN; m * n];
            // SAFETY: `got` is borrowed mutably for this loop; the parts are disjoint.
            let out = unsafe { Out::new(&mut got) };
            let parts = [
                ((0, m / 2), (0, n)),
                ((m / 2, m), (0, n.min(16))),
                ((m / 2, m), (n.min(16), n)),
            ];
            for (rows, cols) in parts {
                if rows.0 < rows.1 && cols.0 < cols.1 {
                    // SAFETY: AVX-512 F checked; the operands are as `matmul_with` makes them;
                    // the emulation reads what `amx::block` would.
                    unsafe {
                        amx::blocks(
                            out,
                            n,
                            &xb,
                            kp,
                            packed,
                            n,
                            rows,
                            cols,
                            |a, b, kpb, r, g, acc| {
                                crate::model::cpu::amx::block_emulated(
                                    crate::model::cpu::amx::Op::Bf16,
                                    a,
                                    b,
                                    kpb,
                                    r,
                                    g,
                                    acc,
                                )
                            },
                        )
                    };
                }
            }
            if let Some((idx, g, sum)) = off_bf16_sum(&x, &w, (m, k, n), &got) {
                panic!("{m}x{k}x{n} [{idx}]: {g} vs {sum}");
            }
        }
    }

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

    /// The activation rows, converted 16 at a time, hold what `to_bf16` makes of each value
    /// (ties, NaN, infinities, a denormal, a value that rounds up to infinity), padded with
    /// zeros.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn activation_rows_round_each_value_as_to_bf16_does() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("SKIPPED: no AVX-512 F");
            return;
        }
        let mut x = random(40 * 37, 5);
        let special = [
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
            f32::MAX,
            -0.0,
        ];
        for (i, v) in special.into_iter().enumerate() {
            x[i * 7] = v;
        }
        let (m, k, kp) = (40, 37, 38);
        let rows = avx512::rows(&x, m, k, kp);
        assert_eq!(rows.len(), 64 * kp);
        for i in 0..64 {
            for j in 0..kp {
                let want = if i < m && j < k {
                    to_bf16(x[i * k + j])
                } else {
                    0
                };
                assert_eq!(rows[i * kp + j], want, "[{i},{j}]");
            }
        }
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
