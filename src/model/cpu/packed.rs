//! float32 products on weights packed once at load, for the fused inference path: an AVX-512
//! kernel (6 rows × 64 columns of FMAs per register block, 32 registers) whose weight layout
//! is made once instead of at every product (as `gemm` packs), and which needs no packing of the
//! activations. Whether it beats `gemm` and the unpacked AVX2 kernel depends on the CPU and the
//! number of rows, so [`F32Choice::get`] times them once per process, for a few rows (the
//! latency path) and for a batch, and keeps the faster of each.
//!
//! The same kernel runs the training forward (the weight packed at every product) and the
//! gradients `dyᵀ · x` and `dy · W` ([`matmul`]) where it was timed faster than `gemm` on one:
//! each tile's task packs or copies the one panel of `B` its tile reads, and `A` is read in rows
//! (laid out in groups of six rows first where its rows are not contiguous).
//!
//! Sums run in another order than `gemm`'s, so results differ from it by float32 rounding only
//! (the parity tests hold every path to the Python library at their tolerance).

use std::sync::OnceLock;

use rayon::prelude::*;

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
        Self::stack(&[(w, n)], k)
    }

    /// Several weights of the same input width stacked (Q, K and V as one `[3h, h]` product):
    /// each part's rows follow the previous part's.
    pub fn stack(parts: &[(&[f32], usize)], k: usize) -> Self {
        Self::stack_with(parts, k, F32Kernel::Avx512.supported())
    }

    /// [`PackedWeight::stack`], transposing in AVX-512 registers (`simd`, which the CPU must
    /// run) or not.
    fn stack_with(parts: &[(&[f32], usize)], k: usize, simd: bool) -> Self {
        let rows = stacked_rows(parts, k);
        let mut packed = vec![0.0; rows.len().next_multiple_of(PANEL) * k];
        pack_into(&rows, k, simd, &mut packed);
        Self {
            n: rows.len(),
            k,
            packed,
        }
    }
}

/// The rows of `parts` (weights of `k` columns, each with its number of rows) one after another.
fn stacked_rows<'a>(parts: &[(&'a [f32], usize)], k: usize) -> Vec<&'a [f32]> {
    for (w, rows) in parts {
        assert!(w.len() >= rows * k, "weight too short");
    }
    parts
        .iter()
        .flat_map(|&(w, rows)| (0..rows).map(move |r| &w[r * k..(r + 1) * k]))
        .collect()
}

/// Columns per group (one 512-bit register of `f32`).
const LANES: usize = 16;

/// Columns per panel: the widest register block (4 groups of 16), whose columns at one step of
/// the sum are 256 contiguous bytes.
const PANEL: usize = 4 * LANES;

/// Rows of `k` → panels of 64 columns (one a row), each `k` steps of 64 columns (four 64-byte
/// loads: one step of 64 columns, multiplied by a broadcast activation), written whole into
/// `out` (zeros where there is no row). A register block reads one panel front to back: one
/// stream, where four groups `k · 64` bytes apart would be four (that share cache sets).
/// Panels are made on all threads, transposed in AVX-512 registers where `simd` (which the CPU
/// must run).
fn pack_into(rows: &[&[f32]], k: usize, simd: bool, out: &mut [f32]) {
    assert_eq!(out.len(), rows.len().next_multiple_of(PANEL) * k);
    if k == 0 {
        return;
    }
    let fill = |(panel, out): (usize, &mut [f32])| {
        let here = &rows[panel * PANEL..rows.len().min((panel + 1) * PANEL)];
        #[cfg(target_arch = "x86_64")]
        if simd {
            assert!(F32Kernel::Avx512.supported());
            // SAFETY: the CPU runs AVX-512 F (checked).
            return unsafe { avx512::pack_panel(here, k, out) };
        }
        // 16 steps at a time: a cache line of each of the panel's rows, into 16 steps of the
        // panel (4 KiB).
        for s0 in (0..k).step_by(LANES) {
            let s1 = (s0 + LANES).min(k);
            for c in 0..PANEL {
                for s in s0..s1 {
                    out[s * PANEL + c] = here.get(c).map_or(0.0, |row| row[s]);
                }
            }
        }
    };
    if kernels::threads() < 2 {
        out.chunks_mut(PANEL * k).enumerate().for_each(fill);
    } else {
        out.par_chunks_mut(PANEL * k).enumerate().for_each(fill);
    }
}

/// Which float32 kernel runs the inference products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Kernel {
    /// `kernels::matmul_wt`: the unpacked AVX2/FMA kernel up to `kernels::SMALL_M` rows, `gemm`
    /// (packing at every call) above.
    Gemm,
    /// This module's AVX-512 kernel: on weights packed at load (inference), at every step (the
    /// training forward) or, copied into the same layout, at every product (training
    /// gradients).
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

/// Steps of the sum per pass over a tile ([`F32Choice::kc`]) that are timed: all of them (one
/// pass), or few enough for a panel's `kc · 256` bytes to stay in a 32 or 48 KiB L1 cache while
/// the tile's rows go by.
pub const KC_CANDIDATES: [usize; 4] = [usize::MAX, 64, 128, 256];

/// How much faster (a fraction of the time) shorter passes must be timed than one pass to be
/// chosen: on an Intel Xeon VM the candidates' timings at load differed by 3-8% on the inference
/// shape, within the machine's noise, and the choice flipped between runs, while 2 threads ran
/// the real products 5-15% faster in one pass.
const KC_MARGIN: f64 = 0.1;

/// The float32 kernels, chosen once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct F32Choice {
    /// Up to `kernels::SMALL_M` rows (one or a few short sentences).
    pub small: F32Kernel,
    /// More rows (batches).
    pub large: F32Kernel,
    /// The training forward ([`matmul_wt_fresh`]): weights that change at every step, packed
    /// for each product (the packing counted in the timing).
    pub fresh: F32Kernel,
    /// The training products ([`matmul`], whose `b` has contiguous rows): the weight gradient
    /// `dyᵀ · x` and the input gradient `dy · W`.
    pub strided: F32Kernel,
    /// Steps of the sum the AVX-512 kernel takes per pass over a tile (`usize::MAX`: the whole
    /// sum in one pass), for the inference and the training products alike (the latter's
    /// operands are copied into the same layout). Where two FMA units drain a panel from L2
    /// faster than L2 refills L1, shorter passes keep the panel in L1; where one does, one pass
    /// saves the stores between.
    pub kc: usize,
}

impl F32Choice {
    /// Timed once per process (about 0.1 s on a 2-core Intel Xeon VM, on the calling thread):
    /// the AVX-512 kernel's steps per pass on a feed-forward output (64 rows summing 1,536
    /// steps); then each kernel on 16 and on 256 rows of a 384 × 384 product, packing included
    /// for the training forward, and on a weight gradient of the same size (its copies
    /// included).
    /// `SBERT_TUI_F32_KERNEL=gemm|avx512` sets the four kernels instead, and `SBERT_TUI_F32_KC`
    /// the steps per pass (0: all).
    pub fn get() -> Self {
        static CHOICE: OnceLock<F32Choice> = OnceLock::new();
        *CHOICE.get_or_init(|| kernels::serial(Self::choose))
    }

    fn choose() -> Self {
        let available = F32Kernel::available();
        let kc = match std::env::var("SBERT_TUI_F32_KC").map(|v| v.parse::<usize>()) {
            Ok(Ok(0)) => usize::MAX,
            Ok(Ok(kc)) => kc,
            _ if !F32Kernel::Avx512.supported() => usize::MAX,
            _ => {
                // A feed-forward output's shape: 64 rows summing 1,536 steps into 384 columns.
                let (m, k, n) = (64, 1536, 384);
                let (x, w) = kernels::timing_data(m, k, n);
                let packed = PackedWeight::new(&w, n, k);
                let mut dst = vec![0f32; m * n];
                kernels::fastest_or_first(&KC_CANDIDATES, KC_MARGIN, |kc| {
                    matmul_kc(F32Kernel::Avx512, kc, &mut dst, n, &x, m, &packed)
                })
            }
        };
        if let Some(k) = kernels::chosen_by_env("SBERT_TUI_F32_KERNEL", &available, |k| k.id()) {
            return F32Choice {
                small: k,
                large: k,
                fresh: k,
                strided: k,
                kc,
            };
        }
        let (_, k, n) = kernels::TIMING_SHAPE;
        let time = |m: usize, fresh: bool| {
            let (x, w) = kernels::timing_data(m, k, n);
            let mut dst = vec![0f32; m * n];
            if fresh {
                // As the training forward runs: packed into the thread's kept storage each call.
                return kernels::fastest(&available, |kernel| {
                    fresh_with(kernel, kc, &mut dst, n, &x, m, k, &[(&w, n)])
                });
            }
            let packed = PackedWeight::new(&w, n, k);
            kernels::fastest(&available, |kernel| match kernel {
                F32Kernel::Gemm => kernels::matmul_wt(&mut dst, n, &x, m, k, &w, n),
                _ => matmul_kc(kernel, kc, &mut dst, n, &x, m, &packed),
            })
        };
        // A weight gradient's shape: 384 outputs, 256 tokens summed, 384 inputs.
        let strided = {
            let (dy, x) = kernels::timing_data(256, 384, 384);
            let mut dw = vec![0f32; 384 * 384];
            let (dy, x) = (Mat::rows(&dy, 256, 384), Mat::rows(&x, 256, 384));
            kernels::fastest(&available, |kernel| match kernel {
                F32Kernel::Gemm => kernels::matmul(&mut dw, 384, dy.t(), x, false),
                _ => strided_with(kc, &mut dw, 384, dy.t(), x, false),
            })
        };
        F32Choice {
            small: time(16, false),
            large: time(256, false),
            // A training batch: 16 pairs of sentences of about 16 tokens.
            fresh: time(512, true),
            strided,
            kc,
        }
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

    /// The choice in words (for `sbert-tui info` and the benchmarks).
    pub fn describe(self) -> String {
        let kc = match self.kc {
            usize::MAX => "whole sums".to_string(),
            kc => format!("{kc} steps a pass"),
        };
        format!(
            "{} (up to {} rows), {} (more rows), {} (training forward), {} (training gradients); \
             avx512 {kc}",
            self.small.name(),
            kernels::SMALL_M,
            self.large.name(),
            self.fresh.name(),
            self.strided.name(),
        )
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
    matmul_kc(kernel, F32Choice::get().kc, dst, dst_rs, x, m, w)
}

/// [`matmul_with`], `kc` steps of the sum per pass (`usize::MAX`: all): what
/// [`F32Choice::kc`] chooses from, for the micro-benchmarks to compare.
pub fn matmul_kc(
    kernel: F32Kernel,
    kc: usize,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    m: usize,
    w: &PackedWeight,
) {
    if !kernels::check_product(dst, dst_rs, x, m, w.k, w.n) {
        return;
    }
    // SAFETY: `dst` is borrowed mutably for this whole call and holds the product (checked).
    unsafe { packed_into(kernel, kc, Out::new(dst), dst_rs, x, m, w) }
}

/// The body of [`matmul_kc`], into `out`.
///
/// # Safety
/// `x` holds `m` rows of `w.k`; the product is not empty; `out` holds it at rows `dst_rs` apart
/// under [`Out::new`]'s contract.
unsafe fn packed_into(
    kernel: F32Kernel,
    kc: usize,
    out: Out,
    dst_rs: usize,
    x: &[f32],
    m: usize,
    w: &PackedWeight,
) {
    let (k, n) = (w.k, w.n);
    assert!(
        kernel != F32Kernel::Gemm && kernel.supported(),
        "the {} kernel does not run on packed weights here",
        kernel.name()
    );
    // SAFETY: as this function's contract; `w.packed` holds every panel of the weight.
    unsafe {
        run_tiles(
            out,
            dst_rs,
            (x, k, false),
            (m, k, n),
            kc,
            false,
            Panels::Packed(&w.packed),
            None,
        )
    }
}

/// Where the tiles of a product find `B`'s 64-column panels (`PackedWeight`'s layout).
#[derive(Clone, Copy)]
enum Panels<'a> {
    /// All of them, made before (a weight packed at load).
    Packed(&'a [f32]),
    /// Made by each task for its own tile: `make(q, out)` writes panel `q` (`k · 64` values)
    /// into `out`, storage the thread keeps, where the panel stays in L2 while the tile's rows
    /// go by (a tile split by rows makes its panel once per part). Made whole before the
    /// product, a 768 × 3,072 weight's packed copy (9 MiB) went to memory and came back.
    PerTask(&'a (dyn Fn(usize, &mut [f32]) + Sync)),
}

/// `out (m × n, rows dst_rs apart) = A · B` (or `+=` where `accumulate`) on the AVX-512 kernel's
/// tiles, `A` in rows of `k` `ars` apart (or in groups of six rows, [`group_rows`]), `B` from
/// `panels`, `kc` steps of the sum per pass; each tile's sum of squares into `squares` where
/// given.
///
/// # Safety
/// The CPU runs AVX-512 F; `a` holds `m` rows of `k`, `ars` apart (where `grouped`, the
/// layout [`group_rows`] makes, `ars == k`); `panels` holds (or makes)
/// every panel of `B` (zeros past `n`); `out` holds the product (initialised where
/// `accumulate`) under [`Out::new`]'s contract.
#[allow(clippy::too_many_arguments)]
unsafe fn run_tiles(
    out: Out,
    dst_rs: usize,
    (a, ars, grouped): (&[f32], usize, bool),
    (m, k, n): (usize, usize, usize),
    kc: usize,
    accumulate: bool,
    panels: Panels,
    squares: Option<&TileSquares>,
) {
    let geo = Geometry {
        ars,
        grouped,
        panel0: 0,
        k,
        kc,
        accumulate,
        far_prefetch: m <= FAR_PREFETCH_ROWS && k * n >= FAR_PREFETCH_WEIGHT,
    };
    // SAFETY (every call): the CPU runs AVX-512 F; `a` holds the tile's rows; `b` holds the
    // panels of the tile's columns from `panel0`; `out` holds the product; tiles start at
    // multiples of 64 columns and each task writes only its own.
    #[cfg(target_arch = "x86_64")]
    let run = |b: &[f32], geo: Geometry, rows, cols| match squares {
        None => unsafe { avx512::tile(out, dst_rs, a, b, geo, rows, cols) },
        Some(s) => {
            let sum = unsafe { avx512::tile_squares(out, dst_rs, a, b, geo, rows, cols) };
            s.add(rows.0, cols.0, sum)
        }
    };
    let align = if grouped { GROUP } else { 1 };
    kernels::tiles_aligned(m, n, k, align, |rows, cols| match panels {
        #[cfg(target_arch = "x86_64")]
        Panels::Packed(b) => run(b, geo, rows, cols),
        #[cfg(target_arch = "x86_64")]
        Panels::PerTask(make) => {
            // One tile is one panel wide (`kernels::TILE_COLS`).
            debug_assert!(cols.0.is_multiple_of(PANEL) && cols.1 - cols.0 <= PANEL);
            let q = cols.0 / PANEL;
            with_panel_storage(k * PANEL, |panel| {
                make(q, panel);
                // `panel` holds panel `q`, the tile's columns.
                run(panel, Geometry { panel0: q, ..geo }, rows, cols)
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("the AVX-512 kernel runs on x86-64 only"),
    });
}

/// The sums of squares of a product's tiles ([`product_and_squares`]), each kept with where
/// its tile starts, so that they are added in one order whichever thread ran which tile.
#[derive(Default)]
struct TileSquares(std::sync::Mutex<Vec<((usize, usize), f64)>>);

impl TileSquares {
    fn add(&self, row: usize, col: usize, sum: f64) {
        self.0.lock().expect("tile sums").push(((row, col), sum));
    }

    /// The sum of every tile's sum, in the order of the tiles' first rows, then columns.
    fn total(self) -> f64 {
        let mut parts = self.0.into_inner().expect("tile sums");
        parts.sort_by_key(|&(at, _)| at);
        parts.into_iter().map(|(_, s)| s).sum()
    }
}

const _: () = assert!(kernels::TILE_COLS == PANEL);

thread_local! {
    /// The panel a thread's task makes for its tile ([`Panels::PerTask`]), kept from task to
    /// task.
    static PANEL_STORE: std::cell::RefCell<Vec<f32>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

/// Runs `f` on `len` values of this thread's [`PANEL_STORE`] (kept values, not zeroed).
fn with_panel_storage<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_kept(&PANEL_STORE, |kept| {
        if kept.len() < len {
            kept.resize(len, 0.0);
        }
        f(&mut kept[..len])
    })
}

/// Runs `f` on storage this thread keeps from call to call in `key`, or on new storage where
/// the thread is already inside `f` on it (a pool thread waiting on one product may run
/// another's task).
fn with_kept<R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
    f: impl FnOnce(&mut Vec<f32>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut kept) => f(&mut kept),
        Err(_) => f(&mut Vec::new()),
    })
}

/// `dst = x · wᵀ` for weights that change between calls (the training forward), the weights
/// given as parts stacked by rows (`PackedWeight::stack`): packed then and run on the AVX-512
/// kernel where [`F32Choice::fresh`] chose it (timed with the packing), else through
/// `kernels::matmul_wt`, part by part. Up to `kernels::SMALL_M` rows always go the latter way.
pub fn matmul_wt_fresh(
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    m: usize,
    k: usize,
    parts: &[(&[f32], usize)],
) {
    let choice = F32Choice::get();
    fresh_with(choice.fresh, choice.kc, dst, dst_rs, x, m, k, parts)
}

/// [`matmul_wt_fresh`] through a given kernel, `kc` steps of the sum per pass.
#[allow(clippy::too_many_arguments)]
fn fresh_with(
    kernel: F32Kernel,
    kc: usize,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    m: usize,
    k: usize,
    parts: &[(&[f32], usize)],
) {
    if m > kernels::SMALL_M && kernel != F32Kernel::Gemm {
        let rows = stacked_rows(parts, k);
        if !kernels::check_product(dst, dst_rs, x, m, k, rows.len()) {
            return;
        }
        // SAFETY: `dst` is borrowed mutably for this whole call and holds the product (checked).
        return unsafe { fresh_into(kernel, kc, Out::new(dst), dst_rs, (x, m, k), &rows) };
    }
    let mut col = 0;
    for &(w, n) in parts {
        kernels::matmul_wt(&mut dst[col..], dst_rs, x, m, k, w, n);
        col += n;
    }
}

/// [`matmul_wt_fresh`] of one weight into a new `m × n` matrix, written once (no zero fill).
pub fn product_wt_fresh(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    let choice = F32Choice::get();
    fresh_product_with(choice.fresh, choice.kc, x, m, k, w, n)
}

/// [`product_wt_fresh`] through a given kernel, `kc` steps of the sum per pass.
fn fresh_product_with(
    kernel: F32Kernel,
    kc: usize,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
) -> Vec<f32> {
    if m <= kernels::SMALL_M || kernel == F32Kernel::Gemm || n == 0 {
        return kernels::product_wt(x, m, k, w, n);
    }
    assert!(x.len() >= m * k, "lhs too short");
    let rows = stacked_rows(&[(w, n)], k);
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the buffer holds `m · n` elements, rows `n` apart, and nothing else sees it; the
    // kernel stores every element of the product once and reads none; then they are
    // initialised.
    unsafe {
        fresh_into(kernel, kc, Out::spare(&mut dst, m * n), n, (x, m, k), &rows);
        dst.set_len(m * n);
    }
    dst
}

/// `out = x · wᵀ`, `w` given by its rows (of `k`), each tile's panel packed by its task
/// ([`Panels::PerTask`]).
///
/// # Safety
/// `x` holds `m` rows of `k`, `rows` the weight's rows of `k`; the product is not empty; `out`
/// holds it at rows `dst_rs` apart under [`Out::new`]'s contract.
unsafe fn fresh_into(
    kernel: F32Kernel,
    kc: usize,
    out: Out,
    dst_rs: usize,
    (x, m, k): (&[f32], usize, usize),
    rows: &[&[f32]],
) {
    assert!(
        kernel == F32Kernel::Avx512 && kernel.supported(),
        "the {} kernel does not pack weights here",
        kernel.name()
    );
    let make = |q: usize, panel: &mut [f32]| {
        let here = &rows[q * PANEL..rows.len().min((q + 1) * PANEL)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU runs AVX-512 F (checked above).
        unsafe {
            avx512::pack_panel(here, k, panel)
        }
    };
    // SAFETY: as this function's contract; `make` packs each panel of `w`.
    unsafe {
        run_tiles(
            out,
            dst_rs,
            (x, k, false),
            (m, k, rows.len()),
            kc,
            false,
            Panels::PerTask(&make),
            None,
        )
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` row-major with rows `dst_rs`
/// apart, any strides for `a` and `b`: through this module's AVX-512 kernel where `b`'s rows are
/// contiguous (`b.cs == 1`) and the kernel was timed faster than `gemm` on a weight gradient
/// ([`F32Choice`]), else through `kernels::matmul` (`gemm`). The training products come here.
pub fn matmul(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    if runs_strided(&b) {
        strided_with(F32Choice::get().kc, dst, dst_rs, a, b, accumulate)
    } else {
        kernels::matmul(dst, dst_rs, a, b, accumulate)
    }
}

/// `a · b` as a new row-major matrix, as [`matmul`] computes it, written once (no zero fill
/// first): the weight gradients of a training step.
pub fn product(a: Mat, b: Mat) -> Vec<f32> {
    strided_product(a, b, None).unwrap_or_else(|| kernels::product(a, b))
}

/// [`product`] and the sum of the squares of its elements (a weight gradient's share of the
/// gradients' norm, which clipping needs). On the AVX-512 kernel each tile sums its squares as
/// it stores its rows, while they are in L1, instead of a pass of its own over the whole
/// gradient afterwards (2.5% of all-mpnet-base-v2's training step on an Intel Xeon, reading
/// 440 MB); elsewhere as [`kernels::sum_of_squares`] sums them.
pub fn product_and_squares(a: Mat, b: Mat) -> (Vec<f32>, f64) {
    let squares = TileSquares::default();
    match strided_product(a, b, Some(&squares)) {
        Some(p) => (p, squares.total()),
        None => {
            let p = kernels::product(a, b);
            let s = kernels::sum_of_squares(&p);
            (p, s)
        }
    }
}

/// [`product`] on the AVX-512 kernel where it runs this product (`None` where not), the
/// tiles' sums of squares into `squares` where given.
fn strided_product(a: Mat, b: Mat, squares: Option<&TileSquares>) -> Option<Vec<f32>> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if !runs_strided(&b) || m == 0 || n == 0 || k == 0 {
        return None;
    }
    assert!(F32Kernel::Avx512.supported());
    assert_eq!(k, b.rows, "inner dimensions");
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the buffer holds `m · n` elements, rows `n` apart, and nothing else sees it; the
    // kernel stores every element of the product once and, not accumulating, reads none (the
    // sums of squares read each element after the kernel stored it); then they are
    // initialised.
    unsafe {
        strided_into(
            F32Choice::get().kc,
            Out::spare(&mut dst, m * n),
            n,
            a,
            b,
            false,
            squares,
        );
        dst.set_len(m * n);
    }
    Some(dst)
}

/// Whether a training product with this `b` runs on the AVX-512 kernel: `b`'s rows are
/// contiguous and the kernel was timed faster than `gemm` ([`F32Choice`]).
fn runs_strided(b: &Mat) -> bool {
    b.cs == 1 && F32Choice::get().strided != F32Kernel::Gemm
}

/// [`matmul`] on the AVX-512 kernel, chosen or not (the CPU must run it, `b.cs == 1`), `kc`
/// steps of the sum per pass.
fn strided_with(kc: usize, dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    assert!(F32Kernel::Avx512.supported() && b.cs == 1);
    assert_eq!(a.cols, b.rows, "inner dimensions");
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n, "dst too short");
    // SAFETY: `dst` is borrowed mutably for this whole call and holds the product (checked).
    unsafe { strided_into(kc, Out::new(dst), dst_rs, a, b, accumulate, None) }
}

/// The body of [`strided_with`], into `out`: `a`, where its rows are not contiguous (the weight
/// gradient's `dyᵀ`), laid out in groups of rows ([`group_rows`], into this thread's [`ROWS`]
/// storage); then the inference kernel's tiles, each task copying the 64-column panel of `b` its
/// tile reads (as a weight is packed at load, [`Panels::PerTask`]).
///
/// Read where they lay, `dyᵀ`'s six rows of a register block were a step of the sum apart by a
/// whole row of `dy` (12 KiB at 3,072 columns), and `b`'s 64 columns a row of `b` apart: a new
/// page at nearly every step, which the prefetchers do not follow. all-mpnet-base-v2's
/// gradients for 310 tokens on an Intel Xeon (Emerald Rapids), 2 threads, G multiply-adds/s:
/// `dyᵀ · x` 51-66 → 74-98, `dy · W` 62-85 → 75-86; the copies are `k · (m + n)` elements
/// against the product's `m · k · n` multiply-adds.
///
/// With `squares`, each tile's sum of squares goes there ([`product_and_squares`]).
///
/// # Safety
/// The CPU runs AVX-512 F, `b.cs == 1`, `a.cols == b.rows`, the product is not empty, `out` holds
/// it at rows `dst_rs` apart (initialised where `accumulate`) under [`Out::new`]'s contract.
unsafe fn strided_into(
    kc: usize,
    out: Out,
    dst_rs: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    squares: Option<&TileSquares>,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    a.check();
    b.check();
    let make = |q: usize, panel: &mut [f32]| copy_panel(b, q, panel);
    let run = |a_rows: &[f32], ars: usize, grouped: bool| {
        // SAFETY: as this function's contract; `a_rows` holds `m` rows of `k`, `ars` apart (in
        // groups where `grouped`); `make` copies each panel of `b`.
        unsafe {
            run_tiles(
                out,
                dst_rs,
                (a_rows, ars, grouped),
                (m, k, n),
                kc,
                accumulate,
                Panels::PerTask(&make),
                squares,
            )
        }
    };
    if a.cs == 1 {
        return run(a.data, a.rs, false);
    }
    // On all threads where the product's tiles run on them.
    let parallel = kernels::in_parallel(m, n, k);
    with_kept(&ROWS, |rows| {
        group_rows(a, parallel, rows);
        run(rows, k, true)
    })
}

thread_local! {
    /// The groups of rows [`strided_into`] lays `a` out in, kept from product to product.
    static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Columns `64q..64q + 64` of `b` (`k × n`, contiguous rows) into `out` as `k` steps of 64 (the
/// layout of a [`PackedWeight`]'s panel; past `n` zeros): row pieces copied, not transposed.
fn copy_panel(b: Mat, q: usize, out: &mut [f32]) {
    assert_eq!(b.cs, 1);
    let (k, n) = (b.rows, b.cols);
    let c0 = q * PANEL;
    let w = (n - c0).min(PANEL);
    for (p, step) in out.chunks_exact_mut(PANEL).take(k).enumerate() {
        step[..w].copy_from_slice(&b.data[p * b.rs + c0..][..w]);
        step[w..].fill(0.0);
    }
}

/// Rows per group of [`group_rows`]' layout: a register block's rows.
const GROUP: usize = 6;

/// `a` (`m × k`, any strides; `dyᵀ`, whose columns are contiguous) into `out` in groups of
/// [`GROUP`] rows, each group's `k` steps one after another, the group's six values of a step
/// together (`A(i, p)` at `out[(i / 6) · 6k + 6p + i % 6]`; a last group of fewer rows leaves
/// its other values as they were). A register block then reads its rows as one stream: as six
/// rows of all-mpnet-base-v2's weight gradients for 310 tokens (1.2 KiB each, too short for the
/// prefetchers to follow), `dyᵀ · x` ran 3-11% slower on an Intel Xeon (Emerald Rapids), 2
/// threads, interleaved rounds of the products at 310 and 620 tokens.
fn group_rows(a: Mat, parallel: bool, out: &mut Vec<f32>) {
    let (m, k) = (a.rows, a.cols);
    // Every value a block reads is written below: kept values are not zeroed first.
    out.resize(m.next_multiple_of(GROUP) * k, 0.0);
    if k == 0 {
        return;
    }
    // Eight groups (48 rows) a task: where `a`'s columns are contiguous, a step's 48 values
    // (192 bytes of a row of `dy`) lie together.
    const CHUNK: usize = 8 * GROUP;
    let fill = |(c, part): (usize, &mut [f32])| {
        let i0 = c * CHUNK;
        let rows = (m - i0).min(CHUNK);
        for p in 0..k {
            if a.rs == 1 {
                let src = &a.data[i0 + p * a.cs..][..rows];
                for (g, vals) in src.chunks(GROUP).enumerate() {
                    let at = g * GROUP * k + GROUP * p;
                    match <&[f32; GROUP]>::try_from(vals) {
                        // Six values as one move, not a call to `memmove` for 24 bytes.
                        Ok(six) => {
                            let dst: &mut [f32; GROUP] =
                                (&mut part[at..at + GROUP]).try_into().expect("six values");
                            *dst = *six;
                        }
                        Err(_) => part[at..][..vals.len()].copy_from_slice(vals),
                    }
                }
            } else {
                for r in 0..rows {
                    part[(r / GROUP) * GROUP * k + GROUP * p + r % GROUP] =
                        a.data[(i0 + r) * a.rs + p * a.cs];
                }
            }
        }
    };
    if parallel {
        out.par_chunks_mut(CHUNK * k).enumerate().for_each(fill);
    } else {
        out.chunks_mut(CHUNK * k).enumerate().for_each(fill);
    }
}

/// Where the kernel finds its operands: `A(i, p)` at `a[i · ars + p]` (rows of `k`, `ars`
/// apart), or in groups of rows (`grouped`); `B` packed (`PackedWeight`'s layout), the 64
/// columns of panel `q` (columns `64q..64q + 64`) at step `p` at `b[q · 64k + 64p ..][..64]`.
#[derive(Clone, Copy)]
struct Geometry {
    ars: usize,
    /// `A` in groups of [`GROUP`] rows, each group's steps interleaved ([`group_rows`]):
    /// `A(i, p)` at `a[(i / 6) · 6 · ars + 6p + i % 6]`.
    grouped: bool,
    /// The panel `b` starts at: `b` holds panels `panel0..` (all of them where a weight was
    /// packed at load; the one a task made for its own tile otherwise).
    panel0: usize,
    /// Steps of the sum.
    k: usize,
    /// Steps per pass over a tile: each register block sums `kc` steps, then the next pass adds
    /// the next `kc` to what it stored, so that the panel's `kc · 256` bytes stay in L1 while
    /// the tile's rows go by.
    kc: usize,
    /// Add to `dst` instead of overwriting it.
    accumulate: bool,
    /// Ask for the panel 64 steps (16 KiB) ahead into L2 too: for products of few rows
    /// ([`FAR_PREFETCH_ROWS`]) on large weights ([`FAR_PREFETCH_WEIGHT`]), which read each
    /// weight once from memory, where the L1 prefetch alone keeps about 16 lines in flight a
    /// core (the L1's fill buffers). all-mpnet-base-v2's four products on 12 layers' distinct
    /// weights (340 MB), one process, with and without, alternating, best of 12 rounds on an
    /// Intel Xeon (Emerald Rapids), 2 threads: 10 rows 17.0-18.3 → 14.7-16.2 ms; 1 and 32 rows
    /// level; 320 rows (bound by the FMAs) 190-204 → 199-214, so not there. MPNet's
    /// single-sentence latency, alternating runs of the encode bench: 20.3 → 17.7 ms (mean of
    /// four pairs). MiniLM's weights (at most 2.4 MB each) do not take it.
    far_prefetch: bool,
}

/// Products of at most this many rows prefetch far ([`Geometry::far_prefetch`]).
const FAR_PREFETCH_ROWS: usize = 48;
/// ... on weights of at least this many values (4 MiB).
const FAR_PREFETCH_WEIGHT: usize = 1 << 20;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Geometry, LANES, Out, PANEL};

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
        debug_assert!(j0.is_multiple_of(PANEL));
        let mut p0 = 0;
        loop {
            let p1 = (p0 + geo.kc.max(1)).min(geo.k);
            let steps = (p0, p1);
            macro_rules! blocks {
                ($block:ident) => {
                    crate::model::cpu::kernels::blocks_6x4!(
                        $block,
                        (i0, i1),
                        (j0, j1),
                        dst,
                        dst_rs,
                        a,
                        b,
                        geo,
                        steps
                    )
                };
            }
            if geo.grouped {
                debug_assert!(i0.is_multiple_of(super::GROUP));
                blocks!(grouped_block);
            } else {
                blocks!(rows_block);
            }
            if p1 >= geo.k {
                break;
            }
            p0 = p1;
        }
    }

    /// [`tile`], a few rows at a time, and the sum of the squares of the tile's elements, each
    /// part's read back while it is in L1 (16 lanes of `f32` sums per part, the parts added in
    /// `f64`). The elements are the same bits as [`tile`] stores (each sums its steps in the
    /// same order whatever rows a call covers).
    ///
    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_squares(
        dst: Out,
        dst_rs: usize,
        a: &[f32],
        b: &[f32],
        geo: Geometry,
        (i0, i1): (usize, usize),
        (j0, j1): (usize, usize),
    ) -> f64 {
        /// Rows per part: 48 rows of 64 columns are 12 KiB.
        const PART: usize = 48;
        let mut total = 0f64;
        let mut i = i0;
        while i < i1 {
            let end = (i + PART).min(i1);
            // SAFETY: as this function's contract, for rows `i..end` of the tile.
            unsafe { tile(dst, dst_rs, a, b, geo, (i, end), (j0, j1)) };
            let mut acc = _mm512_setzero_ps();
            for r in i..end {
                for j in (j0..j1).step_by(LANES) {
                    let valid = (j1 - j).min(LANES);
                    // SAFETY: row `r`, columns `j..j + valid` of this task's own tile, which
                    // `tile` has just stored.
                    let v = unsafe {
                        _mm512_maskz_loadu_ps(mask(valid), dst.at(r * dst_rs + j, valid))
                    };
                    acc = _mm512_fmadd_ps(v, v, acc);
                }
            }
            total += f64::from(_mm512_reduce_add_ps(acc));
            i = end;
        }
        total
    }

    /// One panel of [`super::pack_into`]: up to 64 rows of `k` into `k` steps of 64 columns
    /// (`out`, zeros where there is no row), 16 rows × 16 steps at a time, transposed in
    /// registers.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pack_panel(rows: &[&[f32]], k: usize, out: &mut [f32]) {
        assert!(rows.len() <= PANEL && rows.iter().all(|r| r.len() >= k));
        assert!(out.len() >= k * PANEL);
        for g in 0..PANEL / LANES {
            let group = rows.get(g * LANES..).unwrap_or_default();
            let group = &group[..group.len().min(LANES)];
            for s0 in (0..k).step_by(LANES) {
                let valid = (k - s0).min(LANES);
                let m = mask(valid);
                // SAFETY: every row holds `k` (checked); the mask reads steps `s0..s0 + valid`.
                let mut r: [__m512; LANES] = std::array::from_fn(|c| match group.get(c) {
                    Some(row) => unsafe { _mm512_maskz_loadu_ps(m, row.as_ptr().add(s0)) },
                    None => _mm512_setzero_ps(),
                });
                transpose(&mut r);
                for (t, v) in r.iter().take(valid).enumerate() {
                    // SAFETY: `(s0 + t) · 64 + 16g + 16 <= k · 64 <= out.len()` (checked).
                    unsafe {
                        _mm512_storeu_ps(out.as_mut_ptr().add((s0 + t) * PANEL + g * LANES), *v)
                    };
                }
            }
        }
    }

    /// Transposes 16 × 16 values in 16 registers (rows in, columns out): pairs, then quads of
    /// values within 128-bit lanes, then lanes across registers.
    #[target_feature(enable = "avx512f")]
    fn transpose(r: &mut [__m512; LANES]) {
        let mut t = [_mm512_setzero_ps(); LANES];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for q in 0..4 {
            let b = 4 * q;
            r[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
            r[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
            r[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
            r[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
        }
        for h in 0..2 {
            let b = 8 * h;
            for i in 0..4 {
                t[b + i] = _mm512_shuffle_f32x4::<0x88>(r[b + i], r[b + 4 + i]);
                t[b + 4 + i] = _mm512_shuffle_f32x4::<0xDD>(r[b + i], r[b + 4 + i]);
            }
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
            r[8 + i] = _mm512_shuffle_f32x4::<0xDD>(t[i], t[8 + i]);
        }
    }

    /// How many steps of the sum ahead a register block asks for its panel.
    const PREFETCH_STEPS: usize = 16;
    /// How many steps ahead it asks for it into L2 as well, where [`Geometry::far_prefetch`].
    const FAR_PREFETCH_STEPS: usize = 64;

    /// The lanes of a group with `valid` columns left.
    fn mask(valid: usize) -> __mmask16 {
        if valid >= LANES { !0 } else { (1 << valid) - 1 }
    }

    /// The register blocks `blocks_6x4!` runs: [`block`] with `A` in rows or in groups.
    macro_rules! block_of_layout {
        ($(#[$doc:meta])* $name:ident, $grouped:literal) => {
            $(#[$doc])*
            #[target_feature(enable = "avx512f")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $name<const R: usize, const G: usize>(
                dst: Out,
                dst_rs: usize,
                a: &[f32],
                b: &[f32],
                geo: Geometry,
                steps: (usize, usize),
                i: usize,
                j: usize,
                j_end: usize,
            ) {
                // SAFETY: as `block`'s contract.
                unsafe { block::<R, G, $grouped>(dst, dst_rs, a, b, geo, steps, i, j, j_end) }
            }
        };
    }
    block_of_layout!(
        /// [`block`] with `A` in rows.
        rows_block,
        false
    );
    block_of_layout!(
        /// [`block`] with `A` in groups of six rows (`i` a multiple of 6).
        grouped_block,
        true
    );

    /// `R` rows from `i` × `G` groups of 16 columns from `j` (a multiple of 64), over steps
    /// `p0..p1` of the sum; columns past `j_end` are neither loaded nor stored. The first pass
    /// sums from zero (then adds `dst` where accumulating); later passes go on from the sums
    /// the previous one stored, so that without accumulation every element is summed in the
    /// same order, to the same bits, whatever the steps per pass. `A` in groups of rows where
    /// `GROUPED` ([`Geometry::grouped`]).
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn block<const R: usize, const G: usize, const GROUPED: bool>(
        dst: Out,
        dst_rs: usize,
        a: &[f32],
        b: &[f32],
        geo: Geometry,
        (p0, p1): (usize, usize),
        i: usize,
        j: usize,
        j_end: usize,
    ) {
        let masks: [__mmask16; G] = std::array::from_fn(|g| mask(j_end - (j + g * LANES)));
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        if p0 > 0 {
            for r in 0..R {
                for g in 0..G {
                    // SAFETY: row `i + r`, columns from `j + 16g` (masked to those before
                    // `j_end`), inside `dst`, this task's own; stored by the previous pass.
                    acc[r][g] = unsafe {
                        let at = (i + r) * dst_rs + j + g * LANES;
                        _mm512_maskz_loadu_ps(
                            masks[g],
                            dst.at(at, (j_end - j - g * LANES).min(LANES)),
                        )
                    };
                }
            }
        }
        // Pointers step through the sum (wrapping: the last step may point past the operands
        // without reading there). Every read is of an element `geo` addresses for rows
        // `i..i + R` and columns `j..j_end`, which exist per `tile`'s contract; masked loads
        // touch only those.
        let mut ap: [*const f32; R] =
            std::array::from_fn(|r| a.as_ptr().wrapping_add((i + r) * geo.ars + p0));
        // Grouped: the group's values of step `p0`; a step's six lie together.
        let mut gp = a.as_ptr().wrapping_add(i * geo.ars + super::GROUP * p0);
        let mut bp = b
            .as_ptr()
            .wrapping_add((j / PANEL - geo.panel0) * PANEL * geo.k + p0 * PANEL);
        // The steps of the sum, `$load(g)` reading the panel's group `g` at `bp`.
        macro_rules! steps {
            ($load:expr) => {
                for _ in p0..p1 {
                    for g in 0..G {
                        // A hint, which never faults: the panel `PREFETCH_STEPS` steps on.
                        _mm_prefetch::<_MM_HINT_T0>(
                            bp.wrapping_add(PREFETCH_STEPS * PANEL + g * LANES).cast(),
                        );
                        if geo.far_prefetch {
                            // And into L2, further on (see `Geometry::far_prefetch`).
                            _mm_prefetch::<_MM_HINT_T1>(
                                bp.wrapping_add(FAR_PREFETCH_STEPS * PANEL + g * LANES)
                                    .cast(),
                            );
                        }
                    }
                    let wv: [__m512; G] = std::array::from_fn($load);
                    for r in 0..R {
                        // SAFETY: as above.
                        let xv = _mm512_set1_ps(unsafe {
                            if GROUPED { *gp.wrapping_add(r) } else { *ap[r] }
                        });
                        for g in 0..G {
                            acc[r][g] = _mm512_fmadd_ps(xv, wv[g], acc[r][g]);
                        }
                        if !GROUPED {
                            ap[r] = ap[r].wrapping_add(1);
                        }
                    }
                    if GROUPED {
                        gp = gp.wrapping_add(super::GROUP);
                    }
                    bp = bp.wrapping_add(PANEL);
                }
            };
        }
        if j + G * LANES <= j_end {
            // Every column of the block exists: plain loads (on an Intel Xeon VM the kernel ran
            // 3-10% faster with them than with masked loads of every lane, in interleaved
            // rounds of all-MiniLM-L6-v2's products).
            // SAFETY: as above; the groups lie before `j_end`.
            steps!(|g| unsafe { _mm512_loadu_ps(bp.wrapping_add(g * LANES)) })
        } else {
            // SAFETY: as above; the masks load only the columns before `j_end`.
            steps!(|g| unsafe { _mm512_maskz_loadu_ps(masks[g], bp.wrapping_add(g * LANES)) })
        }
        for g in 0..G {
            let j = j + g * LANES;
            let valid = (j_end - j).min(LANES);
            for r in 0..R {
                // SAFETY: row `i + r`, columns `j..j + valid`, inside `dst`, this task's own.
                unsafe {
                    let out = dst.at((i + r) * dst_rs + j, valid);
                    let v = if geo.accumulate && p0 == 0 {
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
            // A last panel of two whole groups (plain loads in a block narrower than 64).
            (9, 50, 96),
            (33, 384, 1152),
        ] {
            let (x, w) = (data(m * k, 1.0), data(n * k, 2.0));
            let packed = PackedWeight::new(&w, n, k);
            let kernels = F32Kernel::available()
                .into_iter()
                .filter(|&k| k != F32Kernel::Gemm);
            for (kernel, kc) in kernels.flat_map(|k| [usize::MAX, 7, 64, 128].map(|kc| (k, kc))) {
                // A strided destination: the product lands in the middle of wider rows.
                let dst_rs = n + 5;
                let mut got = vec![f32::NAN; m * dst_rs];
                matmul_kc(kernel, kc, &mut got[2..], dst_rs, &x, m, &packed);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                            .sum();
                        let g = got[2 + i * dst_rs + j] as f64;
                        assert!(
                            (g - want).abs() <= 1e-5 * k as f64,
                            "{} ({kc} a pass) at {m}x{k}x{n} [{i},{j}]: {g} vs {want}",
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
        // one large enough to split into row and column tasks; growing, then shrinking again
        // (the copies go into storage kept from product to product).
        let sizes = [(1, 1, 1), (7, 13, 19), (37, 101, 70), (384, 256, 130)];
        for (m, k, n) in sizes.into_iter().chain(sizes.into_iter().rev()) {
            let dy = data(k * m, 1.0); // [k, m], read transposed
            let x = data(k * n, 2.0); // [k, n]
            // Neither rows nor columns contiguous (copied element by element into rows).
            let spread = data(2 * m * (2 * k + 1), 3.0);
            let odd = Mat {
                data: &spread,
                rows: m,
                cols: k,
                rs: 2,
                cs: 2 * m + 1,
            };
            for (a, b) in [
                (Mat::rows(&dy, k, m).t(), Mat::rows(&x, k, n)),
                (Mat::rows(&dy, m, k), Mat::rows(&x, k, n)),
                (odd, Mat::rows(&x, k, n)),
            ] {
                for (accumulate, kc) in [false, true]
                    .into_iter()
                    .flat_map(|acc| [usize::MAX, 7, 64].map(|kc| (acc, kc)))
                {
                    let start = data(m * (n + 3), 4.0);
                    let (mut want, mut got) = (start.clone(), start.clone());
                    kernels::matmul(&mut want, n + 3, a, b, accumulate);
                    strided_with(kc, &mut got, n + 3, a, b, accumulate);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-5 * (k as f32).max(1.0),
                            "{m}x{k}x{n} accumulate {accumulate}, {kc} a pass [{i}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn products_sum_their_squares_as_they_store_them() {
        // (m, k, n) of a weight gradient `dyᵀ · x`: one tile; parts of 48 rows and a partial
        // one, a partial last panel; row and column tasks in parallel.
        for (m, k, n) in [(1, 1, 1), (7, 13, 19), (101, 37, 70), (768, 310, 200)] {
            let dy = kernels::random_values(k * m, 1);
            let x = kernels::random_values(k * n, 2);
            let (a, b) = (Mat::rows(&dy, k, m).t(), Mat::rows(&x, k, n));
            let (got, squares) = product_and_squares(a, b);
            assert!(got == product(a, b), "{m}x{k}x{n}: the product changed");
            let want: f64 = got.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            assert!(
                (squares - want).abs() <= 1e-6 * want,
                "{m}x{k}x{n}: {squares} vs {want}"
            );
            // The same sum however the threads ran the tiles.
            assert_eq!(product_and_squares(a, b).1.to_bits(), squares.to_bits());
        }
    }

    #[test]
    fn passes_of_the_sum_change_no_bit_of_the_product() {
        if !F32Kernel::Avx512.supported() {
            eprintln!("SKIPPED: this CPU has no AVX-512");
            return;
        }
        let (m, k, n) = (50, 1000, 200);
        let (x, w) = (
            kernels::random_values(m * k, 1),
            kernels::random_values(n * k, 2),
        );
        let packed = PackedWeight::new(&w, n, k);
        let run = |kc| {
            let mut dst = vec![0f32; m * n];
            matmul_kc(F32Kernel::Avx512, kc, &mut dst, n, &x, m, &packed);
            dst
        };
        let whole = run(usize::MAX);
        for kc in [1, 64, 999, 1000] {
            assert!(run(kc) == whole, "{kc} steps a pass");
        }
    }

    #[test]
    fn fresh_products_match_the_unpacked_kernels_part_by_part() {
        // Q, K and V stacked as in the training forward, more rows than `SMALL_M` (so the
        // chosen kernel runs) and fewer (the unpacked kernel): one panel (run on the calling
        // thread), and three, the last partial, in parallel tasks that split the rows (each
        // packing its panel).
        for (k, first_rows, step, big_m) in [(40, 17, 1, 100), (96, 40, 13, 300)] {
            let parts: Vec<Vec<f32>> = (0..3)
                .map(|p| kernels::random_values(k * (first_rows + step * p), 10 + p as u64))
                .collect();
            let stacked: Vec<(&[f32], usize)> = parts
                .iter()
                .enumerate()
                .map(|(p, w)| (&w[..], first_rows + step * p))
                .collect();
            let n: usize = stacked.iter().map(|p| p.1).sum();
            for (m, kernel) in [3, big_m]
                .into_iter()
                .flat_map(|m| F32Kernel::available().into_iter().map(move |k| (m, k)))
            {
                let x = kernels::random_values(m * k, 3);
                let mut got = vec![f32::NAN; m * (n + 2)];
                fresh_with(kernel, 16, &mut got, n + 2, &x, m, k, &stacked);
                let mut col = 0;
                for &(w, rows) in &stacked {
                    let want = kernels::product_wt(&x, m, k, w, rows);
                    let one = fresh_product_with(kernel, 16, &x, m, k, w, rows);
                    for i in 0..m {
                        for j in 0..rows {
                            let (g, o, e) = (
                                got[i * (n + 2) + col + j],
                                one[i * rows + j],
                                want[i * rows + j],
                            );
                            let tol = 1e-5 * (1.0 + e.abs());
                            assert!(
                                (g - e).abs() <= tol && (o - e).abs() <= tol,
                                "{} {m} x {k} x {n} [{i},{j}]: {g} {o} vs {e}",
                                kernel.name()
                            );
                        }
                    }
                    col += rows;
                }
                assert!(got.chunks(n + 2).all(|r| r[n..].iter().all(|v| v.is_nan())));
            }
        }
    }

    #[test]
    fn panels_hold_each_weight_at_its_step_and_column() {
        // Odd sizes: a partial last panel, a partial last group of rows, a partial last block
        // of 16 steps; the portable packing and, where the CPU runs it, the AVX-512 one.
        let simd = [false, true]
            .into_iter()
            .filter(|&s| !s || F32Kernel::Avx512.supported());
        for ((n, k), simd) in [(1, 1), (17, 5), (70, 33), (128, 16)]
            .into_iter()
            .flat_map(|shape| simd.clone().map(move |s| (shape, s)))
        {
            let w = kernels::random_values(n * k, 7);
            let p = PackedWeight::stack_with(&[(&w, n)], k, simd);
            let packed = &p.packed;
            assert_eq!(packed.len(), n.next_multiple_of(PANEL) * k);
            for j in 0..n.next_multiple_of(PANEL) {
                for s in 0..k {
                    let want = if j < n { w[j * k + s] } else { 0.0 };
                    let at = (j / PANEL) * PANEL * k + s * PANEL + j % PANEL;
                    assert_eq!(
                        packed[at], want,
                        "{n}x{k}, simd {simd}: column {j}, step {s}"
                    );
                }
            }
        }
    }
}
