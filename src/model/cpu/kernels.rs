//! Vectorised CPU kernels for the fused inference path and the hand-written training pass
//! (`bert/fused.rs`, `bert/backprop.rs`):
//! exact GELU, softmax, layer norm, dot products, bias adds.
//!
//! Each kernel is written once as plain loops over 8-lane chunks (`#[inline(always)]`), and
//! compiled three times: inside an AVX-512 function and an `avx2,fma` one, where the compiler
//! turns the chunks into vector instructions, and as a portable fallback. The choice is made at
//! run time, so one binary runs everywhere. Reductions keep eight partial sums, so they
//! vectorise without fast-math, and every build gives the same bits.
//!
//! Accuracy: `erf` is Eigen's single-precision rational approximation (absolute error below
//! 4.5e-7); `exp` is the Cephes single-precision polynomial (about 1 ulp). Both are checked
//! against `f64` in the tests below.

use gemm::Parallelism;
use rayon::prelude::*;

const LANES: usize = 8;

/// Up to this many rows of `x`, [`matmul_wt`] uses the unpacked kernel ([`small_matmul_wt`]).
pub const SMALL_M: usize = 48;
/// Below this many multiply-adds a matrix product runs on the calling thread.
const PARALLEL_MACS: usize = 1 << 20;

thread_local! {
    /// Set while [`fastest`] times kernels: every operation on this thread runs on it alone.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Threads for one operation: candle's setting (`RAYON_NUM_THREADS`, else the cores); 1 while
/// kernels are being timed on this thread.
///
/// Candle's setting is read once: candle works it out again on every call, reading
/// `/proc/cpuinfo` on Linux, which cost 5 ms of every BERT-base training step.
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if SERIAL.with(|s| s.get()) {
        1
    } else {
        *THREADS.get_or_init(candle_core::utils::get_num_threads)
    }
}

fn check_matmul(dst: &[f32], dst_rs: usize, x: &[f32], m: usize, k: usize, w: &[f32], n: usize) {
    assert!(x.len() >= m * k, "lhs too short");
    assert!(w.len() >= n * k, "weight too short");
    assert!(m == 0 || dst.len() >= (m - 1) * dst_rs + n, "dst too short");
}

/// `dst[i * dst_rs + j] = Σ_k x[i, k] · w[j, k]`: `x · wᵀ` for a PyTorch-layout `[n, k]` weight,
/// through the small-`m` kernel or `gemm`, whichever is faster for the shape (see the `kernels`
/// benchmark), on up to [`threads`] threads.
pub fn matmul_wt(
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
) {
    if m <= SMALL_M {
        small_matmul_wt_par(dst, dst_rs, x, m, k, w, n)
    } else {
        gemm_wt(dst, dst_rs, x, m, k, w, n)
    }
}

/// [`matmul_wt`] into a new `m × n` matrix (no zero fill first on the `gemm` path).
pub fn product_wt(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    if m <= SMALL_M {
        let mut dst = vec![0f32; m * n];
        small_matmul_wt_par(&mut dst, n, x, m, k, w, n);
        dst
    } else {
        product(Mat::rows(x, m, k), Mat::rows(w, n, k).t())
    }
}

/// [`matmul_wt`] through `gemm` (packed, blocked; what candle's matmul uses).
pub fn gemm_wt(dst: &mut [f32], dst_rs: usize, x: &[f32], m: usize, k: usize, w: &[f32], n: usize) {
    check_matmul(dst, dst_rs, x, m, k, w, n);
    matmul(
        dst,
        dst_rs,
        Mat::rows(x, m, k),
        Mat::rows(w, n, k).t(),
        false,
    )
}

/// Walks the tile rows `i0..i1` × columns `j0..j1` (`j0` a multiple of 16) in register blocks
/// of up to 6 rows × 4 groups of 16 columns, calling
/// `$block::<R, G>($args.., i, j, j1)` for each, `R` rows from `i` and `G` groups from `j` as
/// constants (the AVX-512 kernels of `packed.rs`, `bf16.rs` and `quant.rs`). Expands inside the
/// caller's `unsafe fn`, whose contract covers every block of the tile.
macro_rules! blocks_6x4 {
    ($block:ident, ($i0:expr, $i1:expr), ($j0:expr, $j1:expr), $($arg:expr),* $(,)?) => {{
        let (i1, j0, j1) = ($i1, $j0, $j1);
        let mut i = $i0;
        while i < i1 {
            let rows = (i1 - i).min(6);
            let mut j = j0;
            while j < j1 {
                let groups = (j1 - j).div_ceil(16).min(4);
                // SAFETY: rows `i..i + rows` and the groups up to `j1` lie in the tile, which
                // the caller's contract covers.
                match (rows, groups) {
                    (1, 1) => unsafe { $block::<1, 1>($($arg,)* i, j, j1) },
                    (1, 2) => unsafe { $block::<1, 2>($($arg,)* i, j, j1) },
                    (1, 3) => unsafe { $block::<1, 3>($($arg,)* i, j, j1) },
                    (1, 4) => unsafe { $block::<1, 4>($($arg,)* i, j, j1) },
                    (2, 1) => unsafe { $block::<2, 1>($($arg,)* i, j, j1) },
                    (2, 2) => unsafe { $block::<2, 2>($($arg,)* i, j, j1) },
                    (2, 3) => unsafe { $block::<2, 3>($($arg,)* i, j, j1) },
                    (2, 4) => unsafe { $block::<2, 4>($($arg,)* i, j, j1) },
                    (3, 1) => unsafe { $block::<3, 1>($($arg,)* i, j, j1) },
                    (3, 2) => unsafe { $block::<3, 2>($($arg,)* i, j, j1) },
                    (3, 3) => unsafe { $block::<3, 3>($($arg,)* i, j, j1) },
                    (3, 4) => unsafe { $block::<3, 4>($($arg,)* i, j, j1) },
                    (4, 1) => unsafe { $block::<4, 1>($($arg,)* i, j, j1) },
                    (4, 2) => unsafe { $block::<4, 2>($($arg,)* i, j, j1) },
                    (4, 3) => unsafe { $block::<4, 3>($($arg,)* i, j, j1) },
                    (4, 4) => unsafe { $block::<4, 4>($($arg,)* i, j, j1) },
                    (5, 1) => unsafe { $block::<5, 1>($($arg,)* i, j, j1) },
                    (5, 2) => unsafe { $block::<5, 2>($($arg,)* i, j, j1) },
                    (5, 3) => unsafe { $block::<5, 3>($($arg,)* i, j, j1) },
                    (5, 4) => unsafe { $block::<5, 4>($($arg,)* i, j, j1) },
                    (6, 1) => unsafe { $block::<6, 1>($($arg,)* i, j, j1) },
                    (6, 2) => unsafe { $block::<6, 2>($($arg,)* i, j, j1) },
                    (6, 3) => unsafe { $block::<6, 3>($($arg,)* i, j, j1) },
                    (6, 4) => unsafe { $block::<6, 4>($($arg,)* i, j, j1) },
                    _ => unreachable!(),
                }
                j += 64;
            }
            i += rows;
        }
    }};
}
pub(crate) use blocks_6x4;

/// Output columns per parallel task of [`tiles`].
pub(crate) const TILE_COLS: usize = 64;

/// Checks the operands of `dst (m × n, rows dst_rs apart) = x (m × k) · wᵀ`; false when the
/// product is empty (nothing to do).
pub fn check_product(dst: &[f32], dst_rs: usize, x: &[f32], m: usize, k: usize, n: usize) -> bool {
    assert!(x.len() >= m * k, "lhs too short");
    if m == 0 || n == 0 {
        return false;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n, "dst too short");
    true
}

/// Whether [`tiles`] runs a product of `m × n` outputs summing `k` terms as parallel tasks
/// (more than one thread, and at least [`PARALLEL_MACS`] multiply-adds).
pub fn in_parallel(m: usize, n: usize, k: usize) -> bool {
    threads() >= 2 && m * n * k >= PARALLEL_MACS
}

/// Runs `tile(rows, cols)` over the `m × n` output of a product summing `k` terms, in tiles of
/// 64 columns (a multiple of 16, so every tile starts on a SIMD group): one after another on the
/// calling thread when the product is small (or [`threads`] is 1), else as parallel tasks, split
/// by rows too when there are fewer column tasks than four per thread.
///
/// Each tile runs all its rows over its 64 columns' weights, so those stay in cache while the
/// rows go by. On one thread, a single tile of every column made each register block of rows
/// stream the whole weight from memory instead: on an Intel Xeon (Emerald Rapids) the float32
/// kernel summing 1,536 or 3,072 steps in one pass ran at 28-42 G multiply-adds/s on one thread
/// that way, 52-61 with the sum in passes of 256 steps, and 2 threads ran it at 92-106 in
/// 64-column tiles, where passes of 64-256 steps ran at 73-93 (`examples`-style timing,
/// interleaved, best of 20).
pub fn tiles(m: usize, n: usize, k: usize, tile: impl Fn((usize, usize), (usize, usize)) + Sync) {
    tiles_aligned(m, n, k, 1, tile)
}

/// [`tiles`], every tile's first row a multiple of `align` (for operands laid out in groups of
/// rows).
pub fn tiles_aligned(
    m: usize,
    n: usize,
    k: usize,
    align: usize,
    tile: impl Fn((usize, usize), (usize, usize)) + Sync,
) {
    if !in_parallel(m, n, k) {
        for j0 in (0..n).step_by(TILE_COLS) {
            tile((0, m), (j0, (j0 + TILE_COLS).min(n)));
        }
        return;
    }
    let col_tasks = n.div_ceil(TILE_COLS);
    let row_tasks = (4 * threads()).div_ceil(col_tasks).clamp(1, m.div_ceil(48));
    let rows_per = m.div_ceil(row_tasks).next_multiple_of(align);
    (0..row_tasks * col_tasks).into_par_iter().for_each(|task| {
        let (r, c) = (task / col_tasks, task % col_tasks);
        let rows = (r * rows_per, ((r + 1) * rows_per).min(m));
        let cols = (c * TILE_COLS, ((c + 1) * TILE_COLS).min(n));
        if rows.0 < rows.1 {
            tile(rows, cols)
        }
    });
}

/// `n` values in `[-1, 1)` from a seeded linear congruential generator, for the kernels' tests.
#[cfg(test)]
pub(crate) fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The product on which kernels are timed against each other at run time: 64 rows at
/// all-MiniLM-L6-v2's attention-output shape (384 × 384).
pub const TIMING_SHAPE: (usize, usize, usize) = (64, 384, 384);

/// Deterministic `[m, k]` activations and `[n, k]` weights in `[-1, 1]` for timing kernels.
pub fn timing_data(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let x = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let w = (0..n * k).map(|i| (i as f32 * 0.73).cos()).collect();
    (x, w)
}

/// The quickest of `kernels` at `run`: one untimed call each (which also makes any packed
/// layout), then [`TIMING_ROUNDS`] rounds that time each kernel once, the best of each kernel's
/// kept. A single kernel is returned untimed.
///
/// Rounds, not each kernel's calls in a row: on a shared machine the speed of a core changes
/// from one moment to the next (on a 2-core Intel Xeon VM, a loop of FMAs ran at 36-73 G/s from
/// one run to the next), and a slow spell then falls on every kernel of a round alike instead
/// of on whichever kernel ran through it.
///
/// Everything runs on the calling thread (see [`threads`]): the kernels, not the pool, are
/// compared, and the choice, made inside a `OnceLock` that pool tasks may be waiting on, never
/// needs the pool (nor lets this thread pick up a pool task that would ask for it again).
pub fn fastest<K: Copy>(kernels: &[K], run: impl FnMut(K)) -> K {
    fastest_or_first(kernels, 0.0, run)
}

/// [`fastest`], but the first of `kernels` (the default) is kept unless another is faster by
/// more than `margin` (a fraction of its time): for choices whose candidates differ by a few
/// percent, where a shared machine's noise would otherwise flip the choice from run to run.
pub fn fastest_or_first<K: Copy>(kernels: &[K], margin: f64, mut run: impl FnMut(K)) -> K {
    assert!(!kernels.is_empty(), "no kernel to choose from");
    if kernels.len() == 1 {
        return kernels[0];
    }
    serial(|| {
        for &k in kernels {
            run(k);
        }
        let mut best = vec![std::time::Duration::MAX; kernels.len()];
        for _ in 0..TIMING_ROUNDS {
            for (&k, best) in kernels.iter().zip(&mut best) {
                let t = std::time::Instant::now();
                run(k);
                *best = (*best).min(t.elapsed());
            }
        }
        let at = (0..kernels.len())
            .min_by_key(|&i| best[i])
            .expect("not empty");
        if best[at].as_secs_f64() < best[0].as_secs_f64() * (1.0 - margin) {
            kernels[at]
        } else {
            kernels[0]
        }
    })
}

/// Timed calls of each kernel in [`fastest`].
const TIMING_ROUNDS: usize = 5;

/// Runs `f` with every operation of this thread on this thread alone ([`threads`] is 1): for
/// work inside a `OnceLock` that pool tasks may be waiting on.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// The kernel the environment variable `var` names, if it is one of `kernels` (those the CPU
/// runs); any other value is ignored.
pub fn chosen_by_env<K: Copy>(
    var: &str,
    kernels: &[K],
    id: impl Fn(K) -> &'static str,
) -> Option<K> {
    let name = std::env::var(var).ok()?;
    kernels.iter().copied().find(|&k| id(k) == name)
}

/// A matrix operand: `data[r * rs + c * cs]` is element `(r, c)` of a `rows × cols` matrix.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Panics unless every element the strides address lies in `data`.
    pub(crate) fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix operand out of bounds");
        }
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` row-major with rows `dst_rs`
/// apart; any strides for `a` and `b` (transposes are free). Through `gemm` (`packed::matmul`
/// chooses between it and the AVX-512 kernel).
pub fn matmul(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    a.check();
    b.check();
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n, "dst too short");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: `dst` holds the product's last element (checked), the operands theirs.
    unsafe { gemm_into(dst.as_mut_ptr(), dst_rs, a, b, accumulate) }
}

/// `a · b` as a new row-major matrix, written once: `gemm` does not read its destination when
/// not accumulating, so the buffer needs no zero fill first (which took 3% of a BERT-base
/// training step).
pub fn product(a: Mat, b: Mat) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    a.check();
    b.check();
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the buffer holds `m · n` elements, rows `n` apart; `gemm` stores every one of them
    // and, not accumulating, reads none before it has stored it; then they are initialised.
    unsafe {
        gemm_into(dst.as_mut_ptr(), n, a, b, false);
        dst.set_len(m * n);
    }
    dst
}

/// [`matmul`] for a `k > 0`, non-empty product.
///
/// # Safety
/// `dst` must hold `(m - 1) · dst_rs + n` elements (initialised where `accumulate`), the
/// operands every element their strides address (`Mat::check`).
unsafe fn gemm_into(dst: *mut f32, dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let parallelism = if in_parallel(m, n, k) {
        Parallelism::Rayon(threads())
    } else {
        Parallelism::None
    };
    // SAFETY: per this function's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// [`matmul_wt`] through [`small_matmul_wt`], the weight rows split across threads.
pub fn small_matmul_wt_par(
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
) {
    check_matmul(dst, dst_rs, x, m, k, w, n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: `dst` is borrowed mutably for this whole call; each task below writes only its own
    // columns `j0..j1`.
    let out = unsafe { Out::new(dst) };
    if !in_parallel(m, n, k) {
        small_matmul_wt(out, dst_rs, 0, x, m, k, w, n);
        return;
    }
    let t = threads();
    let per = n.div_ceil(t).next_multiple_of(4);
    (0..n.div_ceil(per)).into_par_iter().for_each(|part| {
        let j0 = part * per;
        let j1 = (j0 + per).min(n);
        small_matmul_wt(out, dst_rs, j0, x, m, k, &w[j0 * k..j1 * k], j1 - j0);
    });
}

/// True where the AVX2 + FMA versions can run.
#[inline]
fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True where the AVX-512 versions can run (F, VL, BW and DQ, with AVX2 and FMA).
#[inline]
fn avx512() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && avx2_fma()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The vector builds of a [`dispatch!`] kernel, narrowest first (the portable one is the
/// fallback of both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Build {
    Avx2,
    Avx512,
}

#[cfg(test)]
thread_local! {
    /// The widest build [`dispatch!`] may pick on this thread: tests compare each build the
    /// CPU runs with the portable one.
    static WIDEST: std::cell::Cell<Build> = const { std::cell::Cell::new(Build::Avx512) };
}

/// Whether [`dispatch!`] may pick `build` (always, outside tests).
#[inline(always)]
fn allowed(build: Build) -> bool {
    #[cfg(test)]
    {
        WIDEST.with(|w| build <= w.get())
    }
    #[cfg(not(test))]
    {
        let _ = build;
        true
    }
}

/// Defines `pub fn $name(args)`, which runs `$generic(args)` compiled with AVX-512 (F, VL, BW,
/// DQ) where the CPU has it, else with AVX2 + FMA where it has them, else the portable build of
/// the same code. The AVX-512 build runs the same operations in the same order on registers
/// twice as wide (the element-wise passes, attention's row operations): GELU over MiniLM's
/// feed-forward about 20% faster on an Intel Xeon than the AVX2 build.
macro_rules! dispatch {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn fast512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if avx512() && allowed(Build::Avx512) {
                    // SAFETY: the CPU has the features `fast512` was compiled for.
                    return unsafe { fast512($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if avx2_fma() && allowed(Build::Avx2) {
                    // SAFETY: the CPU has the features `fast` was compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

/// Quantises one row of activations to u8 for the int8 products: `x ≈ scale · (q - zero)` with
/// the row's range mapped onto `0..=255` and `zero` chosen so that 0 is exact; returns
/// `(scale, zero)`. Written so that it vectorises (lane-wise min / max, `roundeven`), and the
/// same bits in every build: `q = clamp(round_ties_even(fma(x, 1 / scale, zero)), 0, 255)`.
#[inline(always)]
fn quantize_row_generic(row: &[f32], q: &mut [u8]) -> (f32, i32) {
    const A_MAX: f32 = 255.0;
    let mut lo = [0f32; LANES];
    let mut hi = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    for &v in chunks.remainder() {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    for c in chunks {
        for l in 0..LANES {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    let lo = lo.iter().fold(0f32, |a, &b| a.min(b));
    let hi = hi.iter().fold(0f32, |a, &b| a.max(b));
    let s = if hi > lo { (hi - lo) / A_MAX } else { 1.0 };
    let z = (-lo / s).round().clamp(0.0, A_MAX);
    let inv = 1.0 / s;
    for (q, &v) in q.iter_mut().zip(row) {
        *q = v.mul_add(inv, z).round_ties_even().clamp(0.0, A_MAX) as u8;
    }
    (s, z as i32)
}

/// `exp(x)` for `f32`, branch-free so that loops over it vectorise. Below -87.3 the result is
/// 0 (as the true value underflows), above 88.7 it is clamped.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let under = x < -87.336_54;
    let xc = x.clamp(-87.336_54, 88.722_83);
    let n = (xc * LOG2E).round_ties_even();
    let r = n.mul_add(-C1, xc);
    let r = n.mul_add(-C2, r);
    let mut y = 1.987_569_1e-4_f32;
    y = y.mul_add(r, 1.398_199_9e-3);
    y = y.mul_add(r, 8.333_452e-3);
    y = y.mul_add(r, 4.166_579_6e-2);
    y = y.mul_add(r, 1.666_666_5e-1);
    y = y.mul_add(r, 0.5);
    let y = y.mul_add(r * r, r) + 1.0;
    // 2^n through the exponent bits; n is in [-126, 128] after the clamp. For n = 128 (only at
    // the very top of the range) split the scale in two so it does not overflow early. The
    // integer is read from the bits of n + 1.5 · 2^23 (exact for such n): `n as i32` would be
    // a saturating conversion with a NaN check, several instructions a lane.
    let n = (n + 12_582_912.0).to_bits() as i32 - 0x4B40_0000;
    let half = n >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((n - half + 127) as u32) << 23);
    let v = y * s1 * s2;
    if under { 0.0 } else { v }
}

/// `erf(x)` for `f32`: the rational approximation `x · p(x²) / q(x²)` below |x| = 3.92 (beyond,
/// erf is ±1 in `f32`) with Eigen's coefficients (`generic_fast_erf_float`, also XLA's). Within
/// 4.5e-7 of the true value everywhere (the test checks 5e-7); no exponential and no branch, so
/// it vectorises: the GELU pass runs about 4 times faster than with the Taylor / Abramowitz &
/// Stegun pair it replaced (12% of int8 encoding went to it).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    // Beyond 3.92, erf rounds to ±1 in `f32`; the rational falls 2 ulp short there.
    let saturated = x.abs() >= 3.92;
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906e-4);
    p = p.mul_add(x2, -2.954_6e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    if saturated {
        1f32.copysign(x)
    } else {
        x * p / q
    }
}

/// The exact (erf) GELU of `transformers`' `"gelu"`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `d gelu / dx` for the exact GELU: `Φ(x) + x φ(x)`.
#[inline(always)]
pub fn gelu_erf_grad(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

/// The exact GELU and its derivative at `x`, sharing the normal CDF.
#[inline(always)]
pub fn gelu_erf_and_grad(x: f32) -> (f32, f32) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    (x * cdf, cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x))
}

#[inline(always)]
fn gelu_and_grad_generic(x: &mut [f32], grad: &mut [f32]) {
    for (x, d) in x.iter_mut().zip(grad.iter_mut()) {
        (*x, *d) = gelu_erf_and_grad(*x);
    }
}

#[inline(always)]
fn mul_inplace_generic(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a *= b;
    }
}

#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s = reduce(acc);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s = x.mul_add(*y, s);
    }
    s
}

#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[inline(always)]
fn sum_generic(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut c = x.chunks_exact(LANES);
    for v in &mut c {
        for i in 0..LANES {
            acc[i] += v[i];
        }
    }
    let mut s = reduce(acc);
    for v in c.remainder() {
        s += v;
    }
    s
}

/// `y += a * x`.
#[inline(always)]
fn axpy_generic(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = a.mul_add(*x, *y);
    }
}

#[inline(always)]
fn bias_gelu_generic(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = gelu_erf(*v + b);
        }
    }
}

#[inline(always)]
fn gelu_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_erf(*v);
    }
}

/// SiLU, `x · sigmoid(x)`, as `x / (1 + e^-x)` (torch's form).
#[inline(always)]
fn silu_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + exp(-*v);
    }
}

/// Root-mean-square norm of each row of `gamma.len()` values in place: `x / sqrt(mean(x²) + eps)
/// · gamma` (T5's and Qwen3's norm).
#[inline(always)]
fn rms_norm_rows_generic(x: &mut [f32], gamma: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(gamma.len()) {
        let mut acc = [0f32; LANES];
        let mut c = row.chunks_exact(LANES);
        for v in &mut c {
            for i in 0..LANES {
                acc[i] = v[i].mul_add(v[i], acc[i]);
            }
        }
        let mut ss = reduce(acc);
        for v in c.remainder() {
            ss = v.mul_add(*v, ss);
        }
        let scale = (ss / gamma.len() as f32 + eps).sqrt();
        for (v, g) in row.iter_mut().zip(gamma) {
            *v = *v / scale * g;
        }
    }
}

#[inline(always)]
fn add_bias_generic(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Layer norm of one row in place (two passes: mean, then variance of the centred values).
#[inline(always)]
fn layer_norm_row(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = sum_generic(x) / n;
    for v in x.iter_mut() {
        *v -= mean;
    }
    let var = dot_generic(x, x) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
        *v = (*v * inv).mul_add(*g, *b);
    }
}

/// `out = LayerNorm(y + bias + out)` row by row (`out` holds the residual on entry).
#[inline(always)]
fn bias_residual_layer_norm_generic(
    y: &[f32],
    bias: &[f32],
    out: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let h = bias.len();
    for (o, y) in out.chunks_exact_mut(h).zip(y.chunks_exact(h)) {
        for ((o, y), b) in o.iter_mut().zip(y).zip(bias) {
            *o += *y + b;
        }
        layer_norm_row(o, gamma, beta, eps);
    }
}

#[inline(always)]
fn layer_norm_rows_generic(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(gamma.len()) {
        layer_norm_row(row, gamma, beta, eps);
    }
}

/// Softmax of one row in place.
#[inline(always)]
fn softmax_row_generic(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in x.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum_generic(x);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// [`softmax_row_generic`] of `row[..len]` in place, to the same bits, for a row padded to a
/// multiple of `LANES` (the padding's values are overwritten): the maximum in lanes (not one
/// comparison waiting on the last), the exponentials over whole chunks.
#[inline(always)]
fn softmax_padded(row: &mut [f32], len: usize) {
    debug_assert!(row.len().is_multiple_of(LANES) && len <= row.len());
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = row[..len].chunks_exact(LANES);
    for (l, &v) in chunks.remainder().iter().enumerate() {
        m[l] = if v > m[l] { v } else { m[l] };
    }
    for c in chunks {
        for l in 0..LANES {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    let max = m
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum_generic(&row[..len]);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// A relative position bias added to attention scores (MPNet): the score of query `i` and key `j`
/// of head `h` gets `values[h * (2 * span - 1) + (j + span - 1 - i)]`, for sentences of up to
/// `span` tokens. Empty `values`: no bias. With `window` `(before, after)`, every key more than
/// `before` places before the query or `after` places after it is masked, as an additive
/// `f32::MIN` would: ModernBERT's sliding window is `(w, w)`, causal attention `(usize::MAX, 0)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelBias<'a> {
    pub values: &'a [f32],
    pub span: usize,
    pub window: Option<(usize, usize)>,
}

impl RelBias<'_> {
    /// Where the bias of (head, query `i`, key `j`) is.
    #[inline(always)]
    fn at(&self, head: usize, i: usize, j: usize) -> usize {
        head * (2 * self.span - 1) + (j + self.span - 1 - i)
    }
}

/// Scratch values [`attend`], [`attend_record`] and [`attend_backward`] need for a sentence
/// of `len` tokens and heads of `d` values.
pub fn attend_scratch(len: usize, d: usize) -> usize {
    let lp = len.next_multiple_of(LANES);
    d * lp + QUERY_BLOCK * lp
}

/// Copies one head's `len` vectors (at `offset` in each `stride`-long row of `qkv`) transposed
/// into `t[c * lp + j]`; columns `len..lp` are left as they are (zero).
#[inline(always)]
fn transpose_head(
    qkv: &[f32],
    len: usize,
    stride: usize,
    offset: usize,
    d: usize,
    lp: usize,
    t: &mut [f32],
) {
    for j in 0..len {
        let k = &qkv[j * stride + offset..][..d];
        for (c, v) in k.iter().enumerate() {
            t[c * lp + j] = *v;
        }
    }
}

/// Queries a block of attention takes at once: independent sums for the FMAs to overlap (each
/// query's own sums one after another would wait on each other).
const QUERY_BLOCK: usize = 4;

/// `rows[r * lp + j] = (q_r · k_j) * scale` for `Q` queries (`q_r` the `d` values at
/// `q[r * stride..]`) and `j < lp`, with the keys transposed in `kt` (see [`transpose_head`]):
/// 16 keys of `Q` queries at a time in registers (32 of one query). Each key's sum runs over `q`
/// in order from 0, whatever the grouping.
#[inline(always)]
fn scores_rows<const Q: usize>(
    q: &[f32],
    stride: usize,
    d: usize,
    kt: &[f32],
    lp: usize,
    scale: f32,
    rows: &mut [f32],
) {
    let qs: [&[f32]; Q] = std::array::from_fn(|r| &q[r * stride..][..d]);
    let mut jb = 0;
    if Q == 1 {
        // One query (the backward pass's rows): four registers of keys at once instead.
        while jb + 4 * LANES <= lp {
            scores_block::<Q, 4>(&qs, kt, lp, jb, scale, rows);
            jb += 4 * LANES;
        }
    }
    while jb + 2 * LANES <= lp {
        scores_block::<Q, 2>(&qs, kt, lp, jb, scale, rows);
        jb += 2 * LANES;
    }
    if jb < lp {
        scores_block::<Q, 1>(&qs, kt, lp, jb, scale, rows);
    }
}

/// `row[j] = (q · k_j) * scale` for `j < lp`: [`scores_rows`] for one query.
#[inline(always)]
fn scores_row(q: &[f32], kt: &[f32], lp: usize, scale: f32, row: &mut [f32]) {
    scores_rows::<1>(q, 0, q.len(), kt, lp, scale, row)
}

/// [`scores_rows`] for keys `jb..jb + B * LANES`.
#[inline(always)]
fn scores_block<const Q: usize, const B: usize>(
    qs: &[&[f32]; Q],
    kt: &[f32],
    lp: usize,
    jb: usize,
    scale: f32,
    rows: &mut [f32],
) {
    let mut acc = [[[0f32; LANES]; B]; Q];
    let d = qs[0].len();
    for c in 0..d {
        let k = &kt[c * lp + jb..][..B * LANES];
        for r in 0..Q {
            let qc = qs[r][c];
            for b in 0..B {
                for l in 0..LANES {
                    acc[r][b][l] = qc.mul_add(k[b * LANES + l], acc[r][b][l]);
                }
            }
        }
    }
    for r in 0..Q {
        let row = &mut rows[r * lp + jb..][..B * LANES];
        for b in 0..B {
            for l in 0..LANES {
                row[b * LANES + l] = acc[r][b][l] * scale;
            }
        }
    }
}

/// `out[r * out_rs..][..d] = Σ_j w[r * lp + j] · v_j` for `Q` rows of weights (`j < len`), with
/// `v_j` the `d` values at `v[j * stride..]`: 16 columns of `Q` rows at a time held in
/// registers across all `j`. Each output is summed in `j` order from 0, as repeated
/// [`axpy_generic`] from zero would.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weighted_rows<const Q: usize>(
    out: &mut [f32],
    out_rs: usize,
    d: usize,
    w: &[f32],
    lp: usize,
    len: usize,
    v: &[f32],
    stride: usize,
) {
    let mut c0 = 0;
    while c0 + 2 * LANES <= d {
        weighted_block::<Q, 2>(out, out_rs, c0, w, lp, len, v, stride);
        c0 += 2 * LANES;
    }
    if c0 + LANES <= d {
        weighted_block::<Q, 1>(out, out_rs, c0, w, lp, len, v, stride);
        c0 += LANES;
    }
    if c0 < d {
        for r in 0..Q {
            let out = &mut out[r * out_rs + c0..r * out_rs + d];
            out.fill(0.0);
            for j in 0..len {
                axpy_generic(out, w[r * lp + j], &v[j * stride + c0..][..d - c0]);
            }
        }
    }
}

/// [`weighted_rows`] for columns `c0..c0 + C * LANES`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weighted_block<const Q: usize, const C: usize>(
    out: &mut [f32],
    out_rs: usize,
    c0: usize,
    w: &[f32],
    lp: usize,
    len: usize,
    v: &[f32],
    stride: usize,
) {
    let mut acc = [[[0f32; LANES]; C]; Q];
    for j in 0..len {
        let x = &v[j * stride + c0..][..C * LANES];
        for r in 0..Q {
            let p = w[r * lp + j];
            for c in 0..C {
                for l in 0..LANES {
                    acc[r][c][l] = p.mul_add(x[c * LANES + l], acc[r][c][l]);
                }
            }
        }
    }
    for r in 0..Q {
        let out = &mut out[r * out_rs + c0..][..C * LANES];
        for c in 0..C {
            out[c * LANES..][..LANES].copy_from_slice(&acc[r][c]);
        }
    }
}

/// Attention of one sentence over its own tokens. Row `i` of `qkv` is `[q_i | k_i | v_i]`
/// (`3 * heads * d` values); row `i` of `ctx` gets `softmax(q_i kᵀ · scale) v` for each head.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_generic(
    qkv: &[f32],
    ctx: &mut [f32],
    len: usize,
    heads: usize,
    d: usize,
    scale: f32,
    rel: RelBias,
    scratch: &mut [f32],
) {
    attend_record_generic(qkv, ctx, len, heads, d, scale, rel, &mut [], &[], scratch)
}

/// [`attend_record_generic`] for the queries `first..first + count` alone (every key still
/// counts): `ctx` holds their `count` rows; `probs` and `mask` (each empty, or the whole
/// sentence's layout) only those queries' weights. The rows it gives are the bits
/// [`attend_generic`] gives them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_queries_generic(
    qkv: &[f32],
    ctx: &mut [f32],
    len: usize,
    heads: usize,
    d: usize,
    scale: f32,
    rel: RelBias,
    first: usize,
    count: usize,
    probs: &mut [f32],
    mask: &[f32],
    scratch: &mut [f32],
) {
    let queries = first..first + count;
    attend_range_generic(
        qkv, ctx, len, heads, d, scale, rel, queries, probs, mask, scratch,
    )
}

/// [`attend_generic`] for training: also stores the softmax weights of every head
/// (`probs[head * len * len + i * len + j]`; nothing is stored when `probs` is empty) and applies
/// an attention-dropout mask of the same layout when `mask` is not empty.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_record_generic(
    qkv: &[f32],
    ctx: &mut [f32],
    len: usize,
    heads: usize,
    d: usize,
    scale: f32,
    rel: RelBias,
    probs: &mut [f32],
    mask: &[f32],
    scratch: &mut [f32],
) {
    attend_range_generic(
        qkv,
        ctx,
        len,
        heads,
        d,
        scale,
        rel,
        0..len,
        probs,
        mask,
        scratch,
    )
}

/// The body of [`attend_record_generic`] and [`attend_queries_generic`]: the queries in
/// `queries`, `ctx` holding their rows from `queries.start` (`probs` and `mask` keep the
/// whole sentence's layout).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_range_generic(
    qkv: &[f32],
    ctx: &mut [f32],
    len: usize,
    heads: usize,
    d: usize,
    scale: f32,
    rel: RelBias,
    queries: std::ops::Range<usize>,
    probs: &mut [f32],
    mask: &[f32],
    scratch: &mut [f32],
) {
    let h = heads * d;
    let stride = 3 * h;
    let lp = len.next_multiple_of(LANES);
    let (kt, rest) = scratch.split_at_mut(d * lp);
    let rows = &mut rest[..QUERY_BLOCK * lp];
    kt.fill(0.0);
    for head in 0..heads {
        transpose_head(qkv, len, stride, h + head * d, d, lp, kt);
        let mut i = queries.start;
        while i < queries.end {
            let n = (queries.end - i).min(QUERY_BLOCK);
            let q = &qkv[i * stride + head * d..];
            match n {
                4 => scores_rows::<4>(q, stride, d, kt, lp, scale, rows),
                3 => scores_rows::<3>(q, stride, d, kt, lp, scale, rows),
                2 => scores_rows::<2>(q, stride, d, kt, lp, scale, rows),
                _ => scores_rows::<1>(q, stride, d, kt, lp, scale, rows),
            }
            for (r, padded) in rows.chunks_exact_mut(lp).take(n).enumerate() {
                let i = i + r;
                let base = head * len * len + i * len;
                let row = &mut padded[..len];
                if !rel.values.is_empty() {
                    let at = rel.at(head, i, 0);
                    for (s, b) in row.iter_mut().zip(&rel.values[at..at + len]) {
                        *s += b;
                    }
                }
                if let Some((before, after)) = rel.window {
                    let (lo, hi) = (i.saturating_sub(before), i.saturating_add(after));
                    for (j, s) in row.iter_mut().enumerate() {
                        if j < lo || j > hi {
                            *s = f32::MIN;
                        }
                    }
                }
                softmax_padded(padded, len);
                let row = &mut padded[..len];
                if !probs.is_empty() {
                    probs[base..base + len].copy_from_slice(row);
                }
                if !mask.is_empty() {
                    for (p, m) in row.iter_mut().zip(&mask[base..base + len]) {
                        *p *= m;
                    }
                }
            }
            let out = &mut ctx[(i - queries.start) * h + head * d..];
            let v = &qkv[2 * h + head * d..];
            match n {
                4 => weighted_rows::<4>(out, h, d, rows, lp, len, v, stride),
                3 => weighted_rows::<3>(out, h, d, rows, lp, len, v, stride),
                2 => weighted_rows::<2>(out, h, d, rows, lp, len, v, stride),
                _ => weighted_rows::<1>(out, h, d, rows, lp, len, v, stride),
            }
            i += n;
        }
    }
}

/// Backward of [`attend_record_generic`] for one sentence: from `dctx` (`[len, h]`) to
/// `dqkv` (`[len, 3h]`, overwritten), and (when it is not empty) the gradient of the relative
/// position bias added to `drel` (the layout of [`RelBias`]). `scratch` holds [`attend_scratch`]
/// values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_backward_generic(
    qkv: &[f32],
    probs: &[f32],
    mask: &[f32],
    dctx: &[f32],
    dqkv: &mut [f32],
    len: usize,
    heads: usize,
    d: usize,
    scale: f32,
    span: usize,
    drel: &mut [f32],
    scratch: &mut [f32],
) {
    let rel = RelBias {
        values: &[],
        span,
        window: None,
    };
    let h = heads * d;
    let stride = 3 * h;
    let lp = len.next_multiple_of(LANES);
    dqkv.fill(0.0);
    let (vt, rest) = scratch.split_at_mut(d * lp);
    let dp = &mut rest[..lp];
    vt.fill(0.0);
    for head in 0..heads {
        transpose_head(qkv, len, stride, 2 * h + head * d, d, lp, vt);
        for i in 0..len {
            let base = head * len * len + i * len;
            let p = &probs[base..base + len];
            let g = &dctx[i * h + head * d..][..d];
            // dP'_ij = dctx_i · v_j; dV_j += P'_ij dctx_i; dP = dP' ⊙ mask.
            scores_row(g, vt, lp, 1.0, dp);
            for j in 0..len {
                let m = if mask.is_empty() { 1.0 } else { mask[base + j] };
                dp[j] *= m;
                let dv = &mut dqkv[j * stride + 2 * h + head * d..][..d];
                axpy_generic(dv, p[j] * m, g);
            }
            // dS = P ⊙ (dP - Σ P dP): the bias's gradient as it is, then through the scaled
            // q kᵀ.
            let row_dot = dot_generic(p, &dp[..len]);
            for j in 0..len {
                let g = p[j] * (dp[j] - row_dot);
                if !drel.is_empty() {
                    drel[rel.at(head, i, j)] += g;
                }
                let ds = g * scale;
                if ds == 0.0 {
                    continue;
                }
                let k = &qkv[j * stride + h + head * d..][..d];
                let dq = &mut dqkv[i * stride + head * d..][..d];
                axpy_generic(dq, ds, k);
                let q = &qkv[i * stride + head * d..][..d];
                let dk = &mut dqkv[j * stride + h + head * d..][..d];
                axpy_generic(dk, ds, q);
            }
        }
    }
}

/// Layer norm of each row of `r` into `y`, keeping the normalised values and the inverse
/// standard deviations for the backward pass.
#[inline(always)]
fn layer_norm_save_generic(
    r: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    xhat: &mut [f32],
    inv: &mut [f32],
) {
    let h = gamma.len();
    for (row, ((r, y), xh)) in r
        .chunks_exact(h)
        .zip(y.chunks_exact_mut(h))
        .zip(xhat.chunks_exact_mut(h))
        .enumerate()
    {
        let n = h as f32;
        let mean = sum_generic(r) / n;
        for (x, v) in xh.iter_mut().zip(r) {
            *x = v - mean;
        }
        let var = dot_generic(xh, xh) / n;
        let s = 1.0 / (var + eps).sqrt();
        inv[row] = s;
        for ((x, y), (g, b)) in xh.iter_mut().zip(y.iter_mut()).zip(gamma.iter().zip(beta)) {
            *x *= s;
            *y = x.mul_add(*g, *b);
        }
    }
}

/// Backward of [`layer_norm_save_generic`]: `dr` from `dy`; `dgamma` and `dbeta` accumulate.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn layer_norm_backward_generic(
    dy: &[f32],
    xhat: &[f32],
    inv: &[f32],
    gamma: &[f32],
    dr: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let h = gamma.len();
    let n = h as f32;
    for (row, ((dy, xh), dr)) in dy
        .chunks_exact(h)
        .zip(xhat.chunks_exact(h))
        .zip(dr.chunks_exact_mut(h))
        .enumerate()
    {
        // dr temporarily holds dx̂ = dy ⊙ γ.
        for ((d, y), g) in dr.iter_mut().zip(dy).zip(gamma) {
            *d = y * g;
        }
        for ((dg, db), (y, x)) in dgamma
            .iter_mut()
            .zip(dbeta.iter_mut())
            .zip(dy.iter().zip(xh))
        {
            *dg = y.mul_add(*x, *dg);
            *db += y;
        }
        let mean_d = sum_generic(dr) / n;
        let mean_dx = dot_generic(dr, xh) / n;
        let s = inv[row];
        for (d, x) in dr.iter_mut().zip(xh) {
            *d = s * (*d - mean_d - x * mean_dx);
        }
    }
}

/// Backward of [`rms_norm_rows_generic`] for rows of `gamma.len()` values: `dx` from `dy`
/// (recomputing each row's scale from `x`); `dgamma` accumulates `dy ⊙ x̂`.
#[inline(always)]
fn rms_norm_backward_generic(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: &mut [f32],
) {
    let h = gamma.len();
    let n = h as f32;
    for ((x, dy), dx) in x
        .chunks_exact(h)
        .zip(dy.chunks_exact(h))
        .zip(dx.chunks_exact_mut(h))
    {
        let inv = 1.0 / (dot_generic(x, x) / n + eps).sqrt();
        // dx temporarily holds dx̂ = dy ⊙ γ; the mean of dx̂ ⊙ x̂ is inv · mean(dx̂ ⊙ x).
        for ((d, y), g) in dx.iter_mut().zip(dy).zip(gamma) {
            *d = y * g;
        }
        for ((dg, y), v) in dgamma.iter_mut().zip(dy).zip(x) {
            *dg = (y * v).mul_add(inv, *dg);
        }
        let mean = dot_generic(dx, x) / n * inv;
        for (d, v) in dx.iter_mut().zip(x) {
            *d = inv * (*d - v * inv * mean);
        }
    }
}

/// Backward of a softmax over rows of `width` values: `dx = y ⊙ (dy - Σ dy ⊙ y)` per row.
#[inline(always)]
fn softmax_backward_generic(y: &[f32], dy: &[f32], dx: &mut [f32], width: usize) {
    for ((y, dy), dx) in y
        .chunks_exact(width)
        .zip(dy.chunks_exact(width))
        .zip(dx.chunks_exact_mut(width))
    {
        let s = dot_generic(dy, y);
        for ((d, g), p) in dx.iter_mut().zip(dy).zip(y) {
            *d = p * (g - s);
        }
    }
}

/// SiLU and its derivative: `(x σ(x), σ(x) (1 + x (1 - σ(x))))`.
#[inline(always)]
pub fn silu_and_grad(x: f32) -> (f32, f32) {
    let sig = 1.0 / (1.0 + exp(-x));
    (x * sig, sig * (1.0 + x * (1.0 - sig)))
}

/// A gated activation `out = act(a) ⊙ g` (GeGLU, SwiGLU), elementwise; `silu` picks SiLU,
/// else the exact GELU.
#[inline(always)]
fn gated_generic(a: &[f32], g: &[f32], out: &mut [f32], silu: bool) {
    for ((o, a), g) in out.iter_mut().zip(a).zip(g) {
        let act = if silu {
            *a / (1.0 + exp(-*a))
        } else {
            gelu_erf(*a)
        };
        *o = act * g;
    }
}

/// Backward of [`gated_generic`]: `da = dy ⊙ g ⊙ act'(a)`, `dg = dy ⊙ act(a)`.
#[inline(always)]
fn gated_backward_generic(
    a: &[f32],
    g: &[f32],
    dy: &[f32],
    da: &mut [f32],
    dg: &mut [f32],
    silu: bool,
) {
    for ((((a, g), dy), da), dg) in a
        .iter()
        .zip(g)
        .zip(dy)
        .zip(da.iter_mut())
        .zip(dg.iter_mut())
    {
        let (act, grad) = if silu {
            silu_and_grad(*a)
        } else {
            gelu_erf_and_grad(*a)
        };
        *da = dy * g * grad;
        *dg = dy * act;
    }
}

/// Where [`small_matmul_wt`] writes: a raw view of the output, so that threads can fill
/// disjoint columns of the same rows.
#[derive(Clone, Copy)]
pub struct Out {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `Out::new`'s contract: writers through copies of one `Out` touch disjoint elements.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// # Safety
    /// `slice` must outlive every use of the returned value (and its copies), nothing else may
    /// access it meanwhile, and concurrent users must write disjoint elements.
    pub unsafe fn new(slice: &mut [f32]) -> Self {
        Out {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
        }
    }

    /// The spare capacity of `v` (at least `len` elements), to be written before it is read.
    ///
    /// # Safety
    /// As [`Out::new`], for `v`'s buffer; `v.capacity() >= len`.
    pub(crate) unsafe fn spare(v: &mut Vec<f32>, len: usize) -> Self {
        debug_assert!(v.capacity() >= len);
        Out {
            ptr: v.as_mut_ptr(),
            len,
        }
    }

    #[inline(always)]
    pub(crate) fn write(self, idx: usize, v: f32) {
        assert!(idx < self.len, "output index out of range");
        // SAFETY: in bounds (checked), and exclusive per `Out::new`'s contract.
        unsafe { *self.ptr.add(idx) = v }
    }

    /// A pointer to `len` elements from `idx` (checked to be in bounds), for SIMD stores.
    #[inline(always)]
    pub(crate) fn at(self, idx: usize, len: usize) -> *mut f32 {
        assert!(idx + len <= self.len, "output index out of range");
        // SAFETY: in bounds (checked).
        unsafe { self.ptr.add(idx) }
    }
}

/// One register block of [`small_matmul_wt`]: `R` rows of `x` against `C` rows of `w`.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn block<const R: usize, const C: usize>(
    dst: Out,
    dst_rs: usize,
    x: &[f32],
    k: usize,
    w: &[f32],
    i0: usize,
    j0: usize,
    j_base: usize,
) {
    let mut acc = [[[0f32; LANES]; C]; R];
    let full = k - k % LANES;
    let mut kk = 0;
    while kk < full {
        let mut wv = [[0f32; LANES]; C];
        for c in 0..C {
            wv[c].copy_from_slice(&w[(j0 + c) * k + kk..][..LANES]);
        }
        for r in 0..R {
            let xv = &x[(i0 + r) * k + kk..][..LANES];
            for c in 0..C {
                for l in 0..LANES {
                    acc[r][c][l] = xv[l].mul_add(wv[c][l], acc[r][c][l]);
                }
            }
        }
        kk += LANES;
    }
    for r in 0..R {
        for c in 0..C {
            let mut v = reduce(acc[r][c]);
            for t in full..k {
                v = x[(i0 + r) * k + t].mul_add(w[(j0 + c) * k + t], v);
            }
            dst.write((i0 + r) * dst_rs + j_base + j0 + c, v);
        }
    }
}

/// `dst[i, j_base + j] = x_i · w_j` for all rows `i < m` of `x` (`[m, k]`) and all rows `j` of
/// `w` (`[n, k]`, PyTorch's layout). No packing: for a few rows of `x` (one sentence) copying the
/// weight into a packed layout costs more than the product itself, so weight rows are streamed
/// once and each is used against every `x` row while it is in cache. Register blocks of
/// `R` rows of `x` by `C` rows of `w`, edges with smaller blocks.
macro_rules! small_matmul_body {
    ($block:ident, $R:literal, $C:literal, $dst:expr, $dst_rs:expr, $j_base:expr, $x:expr, $m:expr, $k:expr, $w:expr, $n:expr) => {{
        let (dst, dst_rs, j_base, x, m, k, w, n) = ($dst, $dst_rs, $j_base, $x, $m, $k, $w, $n);
        let mut j0 = 0;
        while j0 < n {
            let c = (n - j0).min($C);
            let mut i0 = 0;
            while i0 < m {
                let r = (m - i0).min($R);
                macro_rules! go {
                    ($r:literal, $c:literal) => {
                        $block::<$r, $c>(dst, dst_rs, x, k, w, i0, j0, j_base)
                    };
                }
                match (r, c) {
                    (3, 4) => go!(3, 4),
                    (3, 3) => go!(3, 3),
                    (3, 2) => go!(3, 2),
                    (3, 1) => go!(3, 1),
                    (2, 4) => go!(2, 4),
                    (2, 3) => go!(2, 3),
                    (2, 2) => go!(2, 2),
                    (2, 1) => go!(2, 1),
                    (1, 4) => go!(1, 4),
                    (1, 3) => go!(1, 3),
                    (1, 2) => go!(1, 2),
                    _ => go!(1, 1),
                }
                i0 += r;
            }
            j0 += c;
        }
    }};
}

#[allow(clippy::too_many_arguments)]
fn small_matmul_wt_generic(
    dst: Out,
    dst_rs: usize,
    j_base: usize,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
) {
    small_matmul_body!(block, 3, 4, dst, dst_rs, j_base, x, m, k, w, n)
}

/// The AVX2 + FMA build of the unpacked product, with intrinsics: the portable loop does not
/// keep its twelve accumulators in registers.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn, clippy::needless_range_loop)]
mod avx2 {
    use super::Out;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const R: usize, const C: usize>(
        dst: Out,
        dst_rs: usize,
        x: &[f32],
        k: usize,
        w: &[f32],
        i0: usize,
        j0: usize,
        j_base: usize,
    ) {
        // Bounds for the raw reads below: rows i0..i0+R of x, j0..j0+C of w, k values each.
        assert!((i0 + R) * k <= x.len() && (j0 + C) * k <= w.len());
        let xp = x.as_ptr().add(i0 * k);
        let wp = w.as_ptr().add(j0 * k);
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let full = k - k % 8;
        let mut kk = 0;
        while kk < full {
            let mut wv = [_mm256_setzero_ps(); C];
            for c in 0..C {
                wv[c] = _mm256_loadu_ps(wp.add(c * k + kk));
            }
            for r in 0..R {
                let xv = _mm256_loadu_ps(xp.add(r * k + kk));
                for c in 0..C {
                    acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
                }
            }
            kk += 8;
        }
        for r in 0..R {
            for c in 0..C {
                let mut v = hsum(acc[r][c]);
                for t in full..k {
                    v = (*xp.add(r * k + t)).mul_add(*wp.add(c * k + t), v);
                }
                dst.write((i0 + r) * dst_rs + j_base + j0 + c, v);
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn small_matmul_wt(
        dst: Out,
        dst_rs: usize,
        j_base: usize,
        x: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        n: usize,
    ) {
        small_matmul_body!(block, 2, 4, dst, dst_rs, j_base, x, m, k, w, n)
    }
}

/// `dst[i * dst_rs + j_base + j] = x_i · w_j` without packing (see `small_matmul_body`).
#[allow(clippy::too_many_arguments)]
pub fn small_matmul_wt(
    dst: Out,
    dst_rs: usize,
    j_base: usize,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
) {
    assert!(x.len() >= m * k && w.len() >= n * k, "operands too short");
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has the features; `block` checks its reads.
        return unsafe { avx2::small_matmul_wt(dst, dst_rs, j_base, x, m, k, w, n) };
    }
    small_matmul_wt_generic(dst, dst_rs, j_base, x, m, k, w, n)
}

/// [`quantize_row_generic`], the same bits: written out in AVX2 where the CPU has it (compiled
/// from the generic code, the conversion to bytes went element by element, 7% of an int8
/// encode).
pub fn quantize_row(row: &[f32], q: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { quantize_row_avx2(row, q) };
    }
    quantize_row_generic(row, q)
}

/// [`quantize_row_generic`] in AVX2: lane-wise minimum and maximum (`vminps` / `vmaxps` pick
/// as its comparisons do, NaN skipped), then 32 values at a time through the same FMA, rounding
/// and clamp, packed to bytes.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(row: &[f32], q: &mut [u8]) -> (f32, i32) {
    use std::arch::x86_64::*;
    const A_MAX: f32 = 255.0;
    assert!(q.len() >= row.len(), "output too short");
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        // SAFETY: `c` holds 8 values.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        lo = _mm256_min_ps(v, lo);
        hi = _mm256_max_ps(v, hi);
    }
    let (mut los, mut his) = ([0f32; 8], [0f32; 8]);
    // SAFETY: 8 values each.
    unsafe {
        _mm256_storeu_ps(los.as_mut_ptr(), lo);
        _mm256_storeu_ps(his.as_mut_ptr(), hi);
    }
    for &v in chunks.remainder() {
        los[0] = if v < los[0] { v } else { los[0] };
        his[0] = if v > his[0] { v } else { his[0] };
    }
    let lo = los.iter().fold(0f32, |a, &b| a.min(b));
    let hi = his.iter().fold(0f32, |a, &b| a.max(b));
    let s = if hi > lo { (hi - lo) / A_MAX } else { 1.0 };
    let z = (-lo / s).round().clamp(0.0, A_MAX);
    let inv = 1.0 / s;
    let (inv_v, z_v) = (_mm256_set1_ps(inv), _mm256_set1_ps(z));
    let (floor, ceil) = (_mm256_setzero_ps(), _mm256_set1_ps(A_MAX));
    // Bytes 0-3 of each 128-bit half hold values 0-3 and 4-7 of the first vector, and so on:
    // this gathers them back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let body = row.len() / 32 * 32;
    for i in (0..body).step_by(32) {
        let v: [__m256i; 4] = std::array::from_fn(|o| {
            // SAFETY: `i + 8o + 8 <= body <= row.len()`.
            let v = unsafe { _mm256_loadu_ps(row.as_ptr().add(i + 8 * o)) };
            let y = _mm256_fmadd_ps(v, inv_v, z_v);
            let y = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
            // max first: a NaN becomes 0, as `f32::clamp` then `as u8` make it.
            _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(y, floor), ceil))
        });
        let words = (
            _mm256_packus_epi32(v[0], v[1]),
            _mm256_packus_epi32(v[2], v[3]),
        );
        let bytes = _mm256_packus_epi16(words.0, words.1);
        // SAFETY: `q` holds `row.len() >= i + 32` bytes (checked).
        unsafe {
            _mm256_storeu_si256(
                q.as_mut_ptr().add(i).cast(),
                _mm256_permutevar8x32_epi32(bytes, order),
            )
        };
    }
    for (q, &v) in q[body..].iter_mut().zip(&row[body..]) {
        *q = v.mul_add(inv, z).round_ties_even().clamp(0.0, A_MAX) as u8;
    }
    (s, z as i32)
}

dispatch!(
    /// Dot product (eight partial sums).
    pub fn dot(a: &[f32], b: &[f32]) -> f32 => dot_generic
);

/// Sum of the squares of `data`: [`dot`] over chunks of 4,096 values, the chunks' sums added in
/// `f64`.
pub fn sum_of_squares(data: &[f32]) -> f64 {
    data.par_chunks(1 << 12).map(|c| dot(c, c) as f64).sum()
}

dispatch!(
    /// `y += a * x`.
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) => axpy_generic
);
dispatch!(
    /// `rows[i] = gelu(rows[i] + bias)` for each row of `bias.len()` values.
    pub fn bias_gelu(rows: &mut [f32], bias: &[f32]) => bias_gelu_generic
);
dispatch!(
    /// `x = gelu(x)` (the erf form).
    pub fn gelu(x: &mut [f32]) => gelu_generic
);
dispatch!(
    /// `x = silu(x)`.
    pub fn silu(x: &mut [f32]) => silu_generic
);
dispatch!(
    /// RMS norm of each row of `gamma.len()` values, in place.
    pub fn rms_norm_rows(x: &mut [f32], gamma: &[f32], eps: f32) => rms_norm_rows_generic
);
dispatch!(
    /// `rows[i] += bias` for each row of `bias.len()` values.
    pub fn add_bias(rows: &mut [f32], bias: &[f32]) => add_bias_generic
);
dispatch!(
    /// `out = LayerNorm(y + bias + out)` for each row of `bias.len()` values.
    pub fn bias_residual_layer_norm(
        y: &[f32],
        bias: &[f32],
        out: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32
    ) => bias_residual_layer_norm_generic
);
dispatch!(
    /// Layer norm of each row of `gamma.len()` values, in place.
    pub fn layer_norm_rows(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) => layer_norm_rows_generic
);
dispatch!(
    /// Softmax of one row, in place.
    pub fn softmax_row(x: &mut [f32]) => softmax_row_generic
);
dispatch!(
    /// Attention of one sentence over its own tokens (see `attend_generic`).
    pub fn attend(
        qkv: &[f32],
        ctx: &mut [f32],
        len: usize,
        heads: usize,
        d: usize,
        scale: f32,
        rel: RelBias<'_>,
        scratch: &mut [f32]
    ) => attend_generic
);
dispatch!(
    /// Attention of some of one sentence's queries over all its keys (see
    /// `attend_queries_generic`).
    pub fn attend_queries(
        qkv: &[f32],
        ctx: &mut [f32],
        len: usize,
        heads: usize,
        d: usize,
        scale: f32,
        rel: RelBias<'_>,
        first: usize,
        count: usize,
        probs: &mut [f32],
        mask: &[f32],
        scratch: &mut [f32]
    ) => attend_queries_generic
);
dispatch!(
    /// Attention of one sentence, keeping the softmax weights (see `attend_record_generic`).
    pub fn attend_record(
        qkv: &[f32],
        ctx: &mut [f32],
        len: usize,
        heads: usize,
        d: usize,
        scale: f32,
        rel: RelBias<'_>,
        probs: &mut [f32],
        mask: &[f32],
        scratch: &mut [f32]
    ) => attend_record_generic
);
dispatch!(
    /// Backward of [`attend_record`] for one sentence.
    pub fn attend_backward(
        qkv: &[f32],
        probs: &[f32],
        mask: &[f32],
        dctx: &[f32],
        dqkv: &mut [f32],
        len: usize,
        heads: usize,
        d: usize,
        scale: f32,
        span: usize,
        drel: &mut [f32],
        scratch: &mut [f32]
    ) => attend_backward_generic
);
dispatch!(
    /// Layer norm of each row, keeping what the backward pass needs.
    pub fn layer_norm_save(
        r: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        y: &mut [f32],
        xhat: &mut [f32],
        inv: &mut [f32]
    ) => layer_norm_save_generic
);
dispatch!(
    /// Backward of [`layer_norm_save`].
    pub fn layer_norm_backward(
        dy: &[f32],
        xhat: &[f32],
        inv: &[f32],
        gamma: &[f32],
        dr: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32]
    ) => layer_norm_backward_generic
);
dispatch!(
    /// Backward of [`rms_norm_rows`]; `dgamma` accumulates.
    pub fn rms_norm_backward(
        x: &[f32],
        dy: &[f32],
        gamma: &[f32],
        eps: f32,
        dx: &mut [f32],
        dgamma: &mut [f32]
    ) => rms_norm_backward_generic
);
dispatch!(
    /// Backward of a softmax over rows of `width` values.
    pub fn softmax_backward(y: &[f32], dy: &[f32], dx: &mut [f32], width: usize) => softmax_backward_generic
);
dispatch!(
    /// `out = act(a) ⊙ g`, SiLU where `silu`, else exact GELU.
    pub fn gated(a: &[f32], g: &[f32], out: &mut [f32], silu: bool) => gated_generic
);
dispatch!(
    /// Backward of [`gated`].
    pub fn gated_backward(
        a: &[f32],
        g: &[f32],
        dy: &[f32],
        da: &mut [f32],
        dg: &mut [f32],
        silu: bool
    ) => gated_backward_generic
);
dispatch!(
    /// `grad = gelu'(x)` and `x = gelu(x)` (exact GELU) in one pass.
    pub fn gelu_and_grad(x: &mut [f32], grad: &mut [f32]) => gelu_and_grad_generic
);
dispatch!(
    /// `x[i] *= y[i]`.
    pub fn mul_inplace(x: &mut [f32], y: &[f32]) => mul_inplace_generic
);
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_products_run_in_64_column_tiles_on_the_calling_thread() {
        // 5 × 150 summing 4: far below the size that goes parallel.
        let calls = std::sync::Mutex::new(Vec::new());
        tiles(5, 150, 4, |rows, cols| {
            calls.lock().unwrap().push((rows, cols))
        });
        assert_eq!(
            calls.into_inner().unwrap(),
            [((0, 5), (0, 64)), ((0, 5), (64, 128)), ((0, 5), (128, 150))]
        );
    }

    #[test]
    fn fastest_or_first_keeps_the_first_unless_another_wins_by_the_margin() {
        // Kernel 1 takes half kernel 0's time (sleeps: far apart on any machine).
        let run = |k: usize| std::thread::sleep(std::time::Duration::from_millis([4, 2][k]));
        assert_eq!(fastest_or_first(&[0, 1], 0.1, run), 1);
        assert_eq!(fastest_or_first(&[0, 1], 0.9, run), 0);
        assert_eq!(fastest(&[0, 1], run), 1);
        assert_eq!(fastest(&[1, 0], run), 1);
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The grouped attention sums give the bits of one key (or one output) at a time, for
    /// every number of queries a block takes.
    #[test]
    fn attention_sums_keep_their_order_whatever_the_grouping() {
        fn check<const Q: usize>(d: usize, lp: usize) {
            let stride = 3 * d + 5;
            let q = random_values(Q * stride, 3 + d as u64);
            let kt = random_values(d * lp, 5 + lp as u64);
            let mut got = vec![f32::NAN; Q * lp];
            scores_rows::<Q>(&q, stride, d, &kt, lp, 0.125, &mut got);
            for r in 0..Q {
                let want: Vec<f32> = (0..lp)
                    .map(|j| {
                        let acc =
                            (0..d).fold(0f32, |a, c| q[r * stride + c].mul_add(kt[c * lp + j], a));
                        acc * 0.125
                    })
                    .collect();
                assert_eq!(
                    bits(&got[r * lp..][..lp]),
                    bits(&want),
                    "scores Q {Q} d {d} lp {lp}"
                );
            }

            let len = lp - 3;
            let w = random_values(Q * lp, 7);
            let v = random_values(len * stride, 13);
            let out_rs = d + 9;
            let mut got = vec![f32::NAN; Q * out_rs];
            weighted_rows::<Q>(&mut got, out_rs, d, &w, lp, len, &v, stride);
            for r in 0..Q {
                let mut want = vec![0f32; d];
                for j in 0..len {
                    axpy_generic(&mut want, w[r * lp + j], &v[j * stride..][..d]);
                }
                assert_eq!(
                    bits(&got[r * out_rs..][..d]),
                    bits(&want),
                    "weighted rows Q {Q} d {d} len {len}"
                );
            }
        }
        for d in [4, 16, 20, 32, 48, 64] {
            for lp in [8, 16, 24, 32, 40, 56, 72] {
                check::<1>(d, lp);
                check::<2>(d, lp);
                check::<3>(d, lp);
                check::<4>(d, lp);
            }
        }
    }

    /// The padded softmax gives the bits of the plain one, whatever lies in the padding.
    #[test]
    fn padded_softmax_keeps_the_plain_ones_bits() {
        for len in [1usize, 3, 7, 8, 9, 12, 16, 17, 31, 64] {
            let lp = len.next_multiple_of(LANES);
            let mut plain = random_values(len, len as u64);
            // Large and masked scores too (ModernBERT's window writes f32::MIN).
            plain[0] *= 40.0;
            if len > 2 {
                plain[len - 1] = f32::MIN;
            }
            let mut padded = plain.clone();
            padded.resize(lp, 1e30);
            softmax_row_generic(&mut plain);
            softmax_padded(&mut padded, len);
            assert_eq!(bits(&padded[..len]), bits(&plain), "len {len}");
        }
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// The portable build of each kernel (what CPUs without AVX2 + FMA run) against each
    /// dispatched one this CPU runs (AVX-512, AVX2 + FMA), to the bit. On a CPU with neither every call runs
    /// the portable build, so the comparison would prove nothing: the test says so and stops.
    #[test]
    fn portable_and_dispatched_builds_agree() {
        if !avx2_fma() {
            eprintln!(
                "SKIPPED portable_and_dispatched_builds_agree: this CPU has no AVX2 + FMA, so \
                 the dispatched kernels are the portable ones"
            );
            return;
        }
        let builds = [(Build::Avx512, avx512()), (Build::Avx2, true)];
        for (build, runs) in builds {
            if runs {
                WIDEST.with(|w| w.set(build));
                builds_agree(build);
            }
        }
        WIDEST.with(|w| w.set(Build::Avx512));
    }

    fn builds_agree(build: Build) {
        // The same operations in the same order: the same bits, except for the small-row
        // product, whose AVX2 build is written with intrinsics and sums in another order.
        let close = |a: &[f32], b: &[f32], what: &str| {
            if what == "small_matmul_wt" {
                close(a, b, &format!("{build:?} {what}"))
            } else {
                assert_eq!(bits(a), bits(b), "{build:?} {what}")
            }
        };
        let data = |n: usize, s: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 + s) * 0.37).sin()).collect()
        };
        let (m, k, n) = (7, 40, 13);
        let (x, w) = (data(m * k, 1.0), data(n * k, 2.0));
        let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
        small_matmul_wt_generic(unsafe { Out::new(&mut a) }, n, 0, &x, m, k, &w, n);
        small_matmul_wt(unsafe { Out::new(&mut b) }, n, 0, &x, m, k, &w, n);
        close(&a, &b, "small_matmul_wt");

        // The int8 activations: the same bytes, scale and zero point. Lengths with and without a
        // tail past the 8- and 32-value blocks; rows all positive, all negative, constant, and
        // with a NaN or an infinity.
        for len in [1, 7, 8, 37, 64, 100, 384] {
            let base: Vec<f32> = data(len, 4.0).iter().map(|v| v * 3.0 - 0.5).collect();
            let mut rows = vec![
                base.clone(),
                base.iter().map(|v| v.abs() + 0.1).collect(),
                base.iter().map(|v| -v.abs() - 0.1).collect(),
                vec![2.5; len],
            ];
            for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut r = base.clone();
                r[len / 2] = special;
                rows.push(r);
            }
            for (which, row) in rows.iter().enumerate() {
                let (mut qa, mut qb) = (vec![0u8; len], vec![0u8; len]);
                let sa = quantize_row_generic(row, &mut qa);
                let sb = quantize_row(row, &mut qb);
                assert!(
                    sa.0.to_bits() == sb.0.to_bits() && sa.1 == sb.1 && qa == qb,
                    "row {which} of {len}: {sa:?} {qa:?} vs {sb:?} {qb:?}"
                );
                if which == 0 && len > 8 {
                    assert!(
                        qa.contains(&0) && qa.contains(&255),
                        "the range spans the bytes"
                    );
                }
            }
        }

        let (len, heads, d) = (11, 3, 8);
        let h = heads * d;
        let qkv = data(len * 3 * h, 3.0);
        let scratch_len = attend_scratch(len, d);
        // With and without a relative position bias (MPNet), for sentences of up to 13 tokens.
        let span = 13;
        let bias = data(heads * (2 * span - 1), 5.0);
        for rel in [
            RelBias::default(),
            RelBias {
                values: &bias,
                span,
                window: None,
            },
            RelBias {
                window: Some((3, 3)),
                ..Default::default()
            },
            RelBias {
                window: Some((usize::MAX, 0)),
                ..Default::default()
            },
        ] {
            let what = if let Some((_, after)) = rel.window {
                if after == 0 {
                    "causal"
                } else {
                    "sliding window"
                }
            } else if rel.values.is_empty() {
                "no bias"
            } else {
                "relative bias"
            };
            let (mut ca, mut cb) = (vec![0f32; len * h], vec![0f32; len * h]);
            attend_generic(
                &qkv,
                &mut ca,
                len,
                heads,
                d,
                0.3,
                rel,
                &mut vec![0.0; scratch_len],
            );
            attend(
                &qkv,
                &mut cb,
                len,
                heads,
                d,
                0.3,
                rel,
                &mut vec![0.0; scratch_len],
            );
            close(&ca, &cb, &format!("attend, {what}"));
            // Some queries alone: their rows of the whole sentence's attention, bit for bit.
            for (first, count) in [(0, 1), (len - 1, 1), (3, 4), (0, len)] {
                let mut some = vec![0f32; count * h];
                attend_queries(
                    &qkv,
                    &mut some,
                    len,
                    heads,
                    d,
                    0.3,
                    rel,
                    first,
                    count,
                    &mut [],
                    &[],
                    &mut vec![0.0; scratch_len],
                );
                assert_eq!(
                    bits(&some),
                    bits(&cb[first * h..(first + count) * h]),
                    "queries {first}..{} alone, {what}",
                    first + count
                );
            }

            let mask: Vec<f32> = (0..heads * len * len)
                .map(|i| if i % 7 == 0 { 0.0 } else { 1.1 })
                .collect();
            let (mut pa, mut pb) = (vec![0f32; heads * len * len], vec![0f32; heads * len * len]);
            attend_record_generic(
                &qkv,
                &mut ca,
                len,
                heads,
                d,
                0.3,
                rel,
                &mut pa,
                &mask,
                &mut vec![0.0; scratch_len],
            );
            attend_record(
                &qkv,
                &mut cb,
                len,
                heads,
                d,
                0.3,
                rel,
                &mut pb,
                &mask,
                &mut vec![0.0; scratch_len],
            );
            close(&pa, &pb, &format!("attend_record probs, {what}"));
            close(&ca, &cb, &format!("attend_record ctx, {what}"));
            // One query with the dropout mask: its row and its weights of the whole pass, bit
            // for bit, and no other query's weights.
            let q = len / 2;
            let (mut one, mut probs) = (vec![0f32; h], vec![0f32; heads * len * len]);
            attend_queries(
                &qkv,
                &mut one,
                len,
                heads,
                d,
                0.3,
                rel,
                q,
                1,
                &mut probs,
                &mask,
                &mut vec![0.0; scratch_len],
            );
            assert_eq!(
                bits(&one),
                bits(&cb[q * h..(q + 1) * h]),
                "{what}: query {q}"
            );
            for (i, (got, want)) in probs.chunks(len).zip(pb.chunks(len)).enumerate() {
                let want = if i % len == q {
                    want
                } else {
                    &vec![0f32; len][..]
                };
                assert_eq!(
                    bits(got),
                    bits(want),
                    "{what}: weights of query {}",
                    i % len
                );
            }

            let dctx = data(len * h, 4.0);
            let (mut da, mut db) = (vec![0f32; len * 3 * h], vec![0f32; len * 3 * h]);
            let (mut ra, mut rb) = (vec![0f32; bias.len()], vec![0f32; bias.len()]);
            attend_backward_generic(
                &qkv,
                &pa,
                &mask,
                &dctx,
                &mut da,
                len,
                heads,
                d,
                0.3,
                span,
                &mut ra,
                &mut vec![0.0; scratch_len],
            );
            attend_backward(
                &qkv,
                &pa,
                &mask,
                &dctx,
                &mut db,
                len,
                heads,
                d,
                0.3,
                span,
                &mut rb,
                &mut vec![0.0; scratch_len],
            );
            close(&da, &db, &format!("attend_backward, {what}"));
            close(&ra, &rb, &format!("attend_backward bias, {what}"));
        }

        let (rows, h) = (5, 24);
        let (r, gamma, beta) = (data(rows * h, 5.0), data(h, 6.0), data(h, 7.0));
        let (mut ya, mut yb) = (vec![0f32; rows * h], vec![0f32; rows * h]);
        let (mut xa, mut xb) = (vec![0f32; rows * h], vec![0f32; rows * h]);
        let (mut ia, mut ib) = (vec![0f32; rows], vec![0f32; rows]);
        layer_norm_save_generic(&r, &gamma, &beta, 1e-12, &mut ya, &mut xa, &mut ia);
        layer_norm_save(&r, &gamma, &beta, 1e-12, &mut yb, &mut xb, &mut ib);
        close(&ya, &yb, "layer_norm_save");
        let dy = data(rows * h, 8.0);
        let (mut ra, mut rb) = (vec![0f32; rows * h], vec![0f32; rows * h]);
        let (mut ga, mut gb) = (vec![0f32; h], vec![0f32; h]);
        let (mut ba, mut bb) = (vec![0f32; h], vec![0f32; h]);
        layer_norm_backward_generic(&dy, &xa, &ia, &gamma, &mut ra, &mut ga, &mut ba);
        layer_norm_backward(&dy, &xb, &ib, &gamma, &mut rb, &mut gb, &mut bb);
        close(&ra, &rb, "layer_norm_backward dr");
        close(&ga, &gb, "layer_norm_backward dgamma");

        let u = data(rows * h, 9.0);
        let (mut oa, mut ob) = (u.clone(), u.clone());
        bias_gelu_generic(&mut oa, &beta);
        bias_gelu(&mut ob, &beta);
        close(&oa, &ob, "bias_gelu");
        let (mut g1, mut g2) = (u.clone(), u.clone());
        let (mut d1, mut d2) = (vec![0f32; u.len()], vec![0f32; u.len()]);
        gelu_and_grad_generic(&mut g1, &mut d1);
        gelu_and_grad(&mut g2, &mut d2);
        close(&g1, &g2, "gelu");
        close(&d1, &d2, "gelu'");
        let (mut la, mut lb) = (u.clone(), u.clone());
        bias_residual_layer_norm_generic(&r, &beta, &mut la, &gamma, &beta, 1e-12);
        bias_residual_layer_norm(&r, &beta, &mut lb, &gamma, &beta, 1e-12);
        close(&la, &lb, "bias_residual_layer_norm");
    }

    #[test]
    fn strided_matmul_handles_transposes_and_accumulation() {
        let (m, k, n) = (6, 5, 4);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.7).cos()).collect();
        // aᵀ stored as k × m, so Mat::rows(..).t() is `a` again.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut dst = vec![1f32; m * n];
        matmul(
            &mut dst,
            n,
            Mat::rows(&at, k, m).t(),
            Mat::rows(&b, k, n),
            true,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn both_matmul_paths_match_a_naive_product_with_strided_output() {
        for (m, k, n) in [
            (5, 7, 3),
            (1, 32, 9),
            (17, 40, 13),
            (3, 8, 4),
            (40, 64, 33),
            // Large enough to split across threads.
            (12, 384, 300),
            (64, 256, 80),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.3).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.7).cos()).collect();
            for path in [gemm_wt, small_matmul_wt_par, matmul_wt] {
                let mut dst = vec![-1f32; m * 2 * n];
                path(&mut dst[n..], 2 * n, &x, m, k, &w, n);
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum();
                        let got = dst[i * 2 * n + n + j];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{m}x{k}x{n} [{i},{j}]: {got} vs {want}"
                        );
                        assert_eq!(dst[i * 2 * n + j], -1.0, "left half untouched");
                    }
                }
            }
        }
    }

    /// `erf` in f64 (Numerical Recipes' erfc, relative error < 1.2e-7 ... not enough), so use a
    /// series / continued fraction accurate to 1e-15 instead.
    fn erf64(x: f64) -> f64 {
        // Abramowitz & Stegun 7.1.5 series for |x| < 3, asymptotic continued fraction beyond.
        let a = x.abs();
        let v = if a < 3.0 {
            let mut sum = 0.0;
            let mut term = a;
            let mut n = 0.0;
            loop {
                let add = term / (2.0 * n + 1.0);
                sum += add;
                if add.abs() < 1e-17 {
                    break;
                }
                n += 1.0;
                term *= -a * a / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc continued fraction (Lentz), converges fast for a >= 3.
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / (f * std::f64::consts::PI.sqrt())
        };
        v.copysign(x)
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .collect()
    }

    /// The row passes of the families that compose candle operations (GELU, SiLU, RMS norm)
    /// against their textbook forms in f64, on widths with and without a tail past 8 values.
    #[test]
    fn activation_and_rms_norm_rows_match_their_definitions() {
        for width in [1, 7, 8, 13, 64] {
            let rows = 3;
            let x: Vec<f32> = (0..rows * width)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
                .collect();
            let gamma: Vec<f32> = (0..width).map(|i| 0.5 + i as f32 / 10.0).collect();
            let mut g = x.clone();
            gelu(&mut g);
            let mut s = x.clone();
            silu(&mut s);
            let mut r = x.clone();
            rms_norm_rows(&mut r, &gamma, 1e-6);
            for (row, xs) in x.chunks(width).enumerate() {
                let ms = xs.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / width as f64;
                for (c, &v) in xs.iter().enumerate() {
                    let (i, v) = (row * width + c, v as f64);
                    let want_silu = v / (1.0 + (-v).exp());
                    let want_rms = v / (ms + 1e-6).sqrt() * gamma[c] as f64;
                    assert!((s[i] as f64 - want_silu).abs() < 1e-5, "silu({v})");
                    assert!((r[i] as f64 - want_rms).abs() < 1e-5, "rms {width} {c}");
                    assert_eq!(g[i].to_bits(), gelu_erf(v as f32).to_bits(), "gelu({v})");
                }
            }
        }
    }

    #[test]
    fn exp_is_within_two_ulp_and_underflows_to_zero() {
        for x in grid(-87.0, 88.0, 200_000) {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            let rel = ((got - want) / want).abs();
            assert!(rel < 2.5e-7, "exp({x}) = {got}, want {want} (rel {rel})");
        }
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        // The exponent read from the float's bits is the integer `as` gives, over the whole
        // clamped range and at every rounding of it.
        for n in -126..=128 {
            for x in [n as f32, n as f32 - 0.5, n as f32 + 0.49] {
                let r = x.round_ties_even();
                assert_eq!((r + 12_582_912.0).to_bits() as i32 - 0x4B40_0000, r as i32);
            }
        }
    }

    #[test]
    fn erf_and_gelu_match_f64() {
        for x in grid(-8.0, 8.0, 400_000) {
            let want = erf64(x as f64);
            let got = erf(x) as f64;
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
            let g = gelu_erf(x) as f64;
            let gw = 0.5 * x as f64 * (1.0 + erf64(x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (g - gw).abs() < 4e-7 * (1.0 + (x as f64).abs()),
                "gelu({x})"
            );
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn fused_gelu_and_grad_agree_with_the_separate_kernels() {
        let x = grid(-6.0, 6.0, 999);
        let (mut g, mut d) = (x.clone(), vec![0f32; x.len()]);
        gelu_and_grad(&mut g, &mut d);
        for i in 0..x.len() {
            assert!((g[i] - gelu_erf(x[i])).abs() <= 1e-6 * (1.0 + x[i].abs()));
            assert!((d[i] - gelu_erf_grad(x[i])).abs() <= 1e-6);
        }
    }

    #[test]
    fn gelu_grad_matches_a_central_difference() {
        for x in grid(-6.0, 6.0, 2_000) {
            let h = 1e-3f64;
            let f = |v: f64| 0.5 * v * (1.0 + erf64(v / std::f64::consts::SQRT_2));
            let want = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            let got = gelu_erf_grad(x) as f64;
            assert!((got - want).abs() < 1e-5, "gelu'({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn vector_kernels_match_scalar_formulas() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let y: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let want: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((dot(&x, &y) as f64 - want).abs() < 1e-5);

        let mut row = x.clone();
        softmax_row(&mut row);
        let max = x.iter().copied().fold(f32::MIN, f32::max) as f64;
        let denom: f64 = x.iter().map(|v| (*v as f64 - max).exp()).sum();
        for (p, v) in row.iter().zip(&x) {
            assert!((*p as f64 - (*v as f64 - max).exp() / denom).abs() < 1e-7);
        }

        let gamma: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 * 0.01).collect();
        let beta: Vec<f32> = (0..37).map(|i| i as f32 * -0.02).collect();
        let mut out = y.clone();
        bias_residual_layer_norm(&x, &beta, &mut out, &gamma, &beta, 1e-12);
        let s: Vec<f64> = (0..37)
            .map(|i| x[i] as f64 + beta[i] as f64 + y[i] as f64)
            .collect();
        let mean = s.iter().sum::<f64>() / 37.0;
        let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 37.0;
        for i in 0..37 {
            let want = (s[i] - mean) / (var + 1e-12).sqrt() * gamma[i] as f64 + beta[i] as f64;
            assert!((out[i] as f64 - want).abs() < 1e-5, "{i}");
        }
    }
}
