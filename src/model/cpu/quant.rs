//! int8 dynamic quantisation of the linear layers (`--precision int8`), as ONNX Runtime's
//! `quantize_dynamic` does it: the weights are quantised once, per output channel; each row of
//! activations is quantised when it arrives, with its own scale and zero point; the product runs
//! on integers and is scaled back to `f32`.
//!
//! - Weights: symmetric per output channel, 8 bits (`-127..=127`) where the kernel that runs
//!   sums in i32 (AVX-512 VNNI, AMX, portable), 7 bits (`-63..=63`) where it is AVX2: its
//!   `vpmaddubsw` (u8 × i8, two products summed into an i16) saturates beyond
//!   255 × 63 × 2 = 32,130 < 32,767. This is ONNX Runtime's `reduce_range` on CPUs without VNNI.
//!   ([`QuantWeight::new`] makes 7-bit weights, which every kernel takes; [`QuantWeight::for_kernel`]
//!   the most bits a kernel takes.)
//! - Activations: asymmetric u8 per row: `x ≈ scale · (q - zero)`, `q` in `0..=255`, `zero`
//!   chosen so that 0 is exact (`kernels::quantize_row`).
//! - `x · w ≈ sx · sw · (Σ q_x q_w - zero · Σ q_w)`; the integer sums are exact (i32), so every
//!   kernel (AMX, AVX-512 VNNI, AVX2 or portable) gives the same bits.
//!
//! Rows are padded to a multiple of 64 values with zeros (a zero weight adds nothing), and the
//! activations to a multiple of 32 rows (what one AMX block reads).
//!
//! The kernel is chosen at run time, by timing every kernel the CPU runs once on a layer-sized
//! product (see [`Int8Kernel::best`]).

use std::sync::OnceLock;

use rayon::prelude::*;

use super::kernels::{self, Out, threads};

/// Values per step: a multiple of one 256-bit register of bytes (AVX2) and of one AMX tile
/// row (64 bytes).
const STEP: usize = 64;
/// Activation rows are allocated in multiples of this (two AMX tiles of 16 rows).
const ROW_PAD: usize = 32;
/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MACS: usize = 1 << 20;
/// The largest weight magnitude in 7 bits (what AVX2's i16 sums take).
const W_MAX_7: f32 = 63.0;
/// The largest weight magnitude in 8 bits.
const W_MAX_8: f32 = 127.0;

/// Bits per weight for the largest magnitude `w_max`.
fn bits_of(w_max: f32) -> u32 {
    if w_max > W_MAX_7 { 8 } else { 7 }
}

/// A `[n, k]` weight (PyTorch layout) quantised per output channel.
#[derive(Debug, Clone)]
pub struct QuantWeight {
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to [`STEP`].
    kp: usize,
    /// `[n, kp]`.
    data: Vec<i8>,
    scale: Vec<f32>,
    /// Σ of each row's quantised values (for the activations' zero point).
    sums: Vec<i32>,
    /// The largest quantised magnitude: 63 (7 bits) or 127 (8 bits).
    w_max: f32,
    /// `data` in the VNNI kernel's layout, made at its first use (see `vnni::pack`).
    vnni: OnceLock<Vec<i8>>,
}

impl QuantWeight {
    /// Quantises a row-major `[n, k]` weight to 7 bits (every kernel takes it).
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        Self::with_max(w, n, k, W_MAX_7)
    }

    /// Quantises a row-major `[n, k]` weight to the most bits `kernel` takes.
    pub fn for_kernel(w: &[f32], n: usize, k: usize, kernel: Int8Kernel) -> Self {
        Self::with_max(w, n, k, kernel.weight_max())
    }

    /// Bits per weight: 7 or 8.
    pub fn bits(&self) -> u32 {
        bits_of(self.w_max)
    }

    fn with_max(w: &[f32], n: usize, k: usize, w_max: f32) -> Self {
        assert!(w.len() >= n * k, "weight too short");
        let kp = k.next_multiple_of(STEP);
        let mut data = vec![0i8; n * kp];
        let mut scale = vec![0f32; n];
        let mut sums = vec![0i32; n];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / w_max } else { 1.0 };
            let q = &mut data[j * kp..j * kp + k];
            for (q, v) in q.iter_mut().zip(row) {
                *q = (v / s).round().clamp(-w_max, w_max) as i8;
            }
            scale[j] = s;
            sums[j] = q.iter().map(|&v| v as i32).sum();
        }
        Self {
            n,
            k,
            kp,
            data,
            scale,
            sums,
            w_max,
            vnni: OnceLock::new(),
        }
    }

    /// Several weights of the same input width stacked (Q, K and V as one `[3h, h]` product),
    /// in the most bits `kernel` takes.
    pub fn stack(parts: &[(&[f32], usize)], k: usize, kernel: Int8Kernel) -> Self {
        let mut all = Vec::new();
        let mut n = 0;
        for (w, rows) in parts {
            all.extend_from_slice(&w[..rows * k]);
            n += rows;
        }
        Self::for_kernel(&all, n, k, kernel)
    }

    /// Bytes held (the weights in each layout made so far, scales and sums).
    pub fn bytes(&self) -> usize {
        self.data.len() + self.vnni.get().map_or(0, Vec::len) + 8 * self.n
    }

    /// The weights in the VNNI kernel's layout.
    #[cfg(target_arch = "x86_64")]
    fn vnni_packed(&self) -> &[i8] {
        self.vnni
            .get_or_init(|| vnni::pack(&self.data, self.n, self.kp))
    }
}

/// Activation rows quantised to u8, each with its scale and zero point.
pub struct QuantRows {
    kp: usize,
    data: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

/// Quantises the `m` rows of `x` (`k` values each), padded to `kp`; the rows past `m` up to a
/// multiple of [`ROW_PAD`] are zeros.
fn quantize_rows(x: &[f32], m: usize, k: usize, kp: usize) -> QuantRows {
    let mut data = vec![0u8; m.next_multiple_of(ROW_PAD) * kp];
    let mut scale = vec![0f32; m];
    let mut zero = vec![0i32; m];
    let one = |(i, q): (usize, &mut [u8])| -> (f32, i32) {
        // Padding stays 0: any value times a zero weight is 0; the zero point's correction uses
        // the weights' sums, which cover only the real values.
        kernels::quantize_row(&x[i * k..(i + 1) * k], &mut q[..k])
    };
    let real = &mut data[..m * kp];
    let rows: Vec<(f32, i32)> = if m * k >= PARALLEL_MACS / 16 && threads() > 1 {
        real.par_chunks_mut(kp).enumerate().map(one).collect()
    } else {
        real.chunks_mut(kp).enumerate().map(one).collect()
    };
    for (i, (s, z)) in rows.into_iter().enumerate() {
        scale[i] = s;
        zero[i] = z;
    }
    QuantRows {
        kp,
        data,
        scale,
        zero,
    }
}

/// Which integer kernel runs the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// Plain loops (any CPU).
    Portable,
    /// `vpmaddubsw` + `vpmaddwd`, 4 rows × 2 columns per register block.
    Avx2,
    /// AVX-512 VNNI's `vpdpbusd` (u8 × i8, four products summed into i32 in one instruction),
    /// 6 rows × 64 columns per register block, on weights packed for it.
    Avx512Vnni,
    /// AMX's `tdpbusd` (a 16 × 64 u8 tile times a 64 × 16 i8 tile into 16 × 16 i32), 32 rows
    /// × 32 columns per block, on the VNNI kernel's packed weights (Intel Xeon from Sapphire
    /// Rapids).
    Amx,
}

impl Int8Kernel {
    const ALL: [Int8Kernel; 4] = [
        Int8Kernel::Portable,
        Int8Kernel::Avx2,
        Int8Kernel::Avx512Vnni,
        Int8Kernel::Amx,
    ];

    /// Whether this CPU runs the kernel.
    pub fn supported(self) -> bool {
        match self {
            Int8Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Amx => amx::usable(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU runs (for tests and benchmarks).
    pub fn available() -> Vec<Self> {
        Self::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// The kernel the products run on: the fastest of the SIMD kernels this CPU runs, timed once
    /// per process on a layer-sized product (`kernels::TIMING_SHAPE`, about a millisecond each),
    /// or the portable one where there is none. `SBERT_TUI_INT8_KERNEL=portable|avx2|avx512-vnni|amx`
    /// overrides the choice (for comparisons; a kernel the CPU lacks is ignored).
    pub fn best() -> Self {
        static BEST: OnceLock<Int8Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let available = Self::available();
            if let Some(k) = kernels::chosen_by_env("SBERT_TUI_INT8_KERNEL", &available, |k| k.id())
            {
                return k;
            }
            let simd: Vec<_> = available
                .into_iter()
                .filter(|&k| k != Int8Kernel::Portable)
                .collect();
            if simd.is_empty() {
                return Int8Kernel::Portable;
            }
            let (m, k, n) = kernels::TIMING_SHAPE;
            let (x, w) = kernels::timing_data(m, k, n);
            let w = QuantWeight::new(&w, n, k);
            let mut dst = vec![0f32; m * n];
            kernels::fastest(&simd, |kernel| {
                let q = quantize_rows(&x, m, w.k, w.kp);
                // SAFETY: `dst` is borrowed mutably for this call.
                let out = unsafe { Out::new(&mut dst) };
                tile(kernel, out, n, &q, &w, (0, m), (0, n));
            })
        })
    }

    /// The largest weight magnitude the kernel sums without saturating: 63 (7 bits) for AVX2's
    /// i16 sums, 127 (8 bits) for the others, which sum in i32.
    fn weight_max(self) -> f32 {
        match self {
            Int8Kernel::Avx2 => W_MAX_7,
            _ => W_MAX_8,
        }
    }

    /// Bits per weight the kernel takes: 7 or 8.
    pub fn weight_bits(self) -> u32 {
        bits_of(self.weight_max())
    }

    /// Whether the kernel takes `w` (AVX2 only 7-bit weights).
    pub fn takes(self, w: &QuantWeight) -> bool {
        w.w_max <= self.weight_max()
    }

    /// Whether the kernel sums in i32 on SIMD (AVX-512 VNNI, AMX): the products whose input is
    /// long-tailed (the feed-forward output's) need its 8 bits to stay near float32.
    pub fn wide(self) -> bool {
        matches!(self, Int8Kernel::Avx512Vnni | Int8Kernel::Amx)
    }

    /// The name `SBERT_TUI_INT8_KERNEL` takes.
    pub fn id(self) -> &'static str {
        match self {
            Int8Kernel::Portable => "portable",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Avx512Vnni => "avx512-vnni",
            Int8Kernel::Amx => "amx",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Portable => "portable",
            Int8Kernel::Avx2 => "avx2 (vpmaddubsw)",
            Int8Kernel::Avx512Vnni => "avx512-vnni (vpdpbusd)",
            Int8Kernel::Amx => "amx (tdpbusd)",
        }
    }
}

/// `dst[i * dst_rs + j] ≈ Σ_k x[i, k] · w[j, k]` with `w` quantised, through the fastest kernel.
pub fn qmatmul_wt(dst: &mut [f32], dst_rs: usize, x: &[f32], m: usize, w: &QuantWeight) {
    qmatmul_wt_with(Int8Kernel::best(), dst, dst_rs, x, m, w)
}

/// [`qmatmul_wt`] through a chosen kernel (which the CPU must run: see
/// [`Int8Kernel::available`]).
pub fn qmatmul_wt_with(
    kernel: Int8Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    m: usize,
    w: &QuantWeight,
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
    assert!(
        kernel.takes(w),
        "the {} kernel does not take {}-bit weights",
        kernel.name(),
        w.bits()
    );
    let q = quantize_rows(x, m, k, w.kp);
    // SAFETY: `dst` is borrowed mutably for this whole call; each task writes only its own
    // tile.
    let out = unsafe { Out::new(dst) };
    kernels::tiles(m, n, k, |rows, cols| {
        tile(kernel, out, dst_rs, &q, w, rows, cols)
    });
}

/// Activation rows `i0..i1` × weight rows `j0..j1` (`j0` a multiple of 16).
fn tile(
    kernel: Int8Kernel,
    dst: Out,
    dst_rs: usize,
    q: &QuantRows,
    w: &QuantWeight,
    (i0, i1): (usize, usize),
    (j0, j1): (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Int8Kernel::Avx512Vnni {
        // SAFETY: `qmatmul_wt_with` checked the CPU runs AVX-512 VNNI; `j0` is a multiple of
        // 16 (`kernels::tiles`); rows and columns are inside the product.
        unsafe { vnni::tile(dst, dst_rs, q, w, w.vnni_packed(), (i0, i1), (j0, j1)) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Int8Kernel::Amx {
        // SAFETY: `qmatmul_wt_with` checked that this process may use AMX (`amx::usable`);
        // `j0` is a multiple of 16; rows and columns are inside the product; `q` has rows up
        // to a multiple of 32 and `kp` is a multiple of 64.
        unsafe { amx::tile(dst, dst_rs, q, w, w.vnni_packed(), (i0, i1), (j0, j1)) };
        return;
    }
    let kp = q.kp;
    let finish = |i: usize, j: usize, acc: i32| {
        let v = acc - q.zero[i] * w.sums[j];
        dst.write(i * dst_rs + j, q.scale[i] * w.scale[j] * v as f32);
    };
    let mut i = i0;
    while i < i1 {
        let rows = (i1 - i).min(4);
        let mut j = j0;
        while j < j1 {
            let cols = (j1 - j).min(2);
            let mut acc = [[0i32; 2]; 4];
            let a: [&[u8]; 4] =
                std::array::from_fn(|r| &q.data[(i + r.min(rows - 1)) * kp..][..kp]);
            let b: [&[i8]; 2] =
                std::array::from_fn(|c| &w.data[(j + c.min(cols - 1)) * kp..][..kp]);
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `qmatmul_wt_with` checked the CPU runs AVX2; every slice is `kp` long,
                // a multiple of 32.
                Int8Kernel::Avx2 => unsafe { avx2::block(&a, &b, kp, &mut acc) },
                _ => block_portable(&a, &b, &mut acc),
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                for (c, &v) in acc.iter().enumerate().take(cols) {
                    finish(i + r, j + c, v);
                }
            }
            j += 2;
        }
        i += 4;
    }
}

fn block_portable(a: &[&[u8]; 4], b: &[&[i8]; 2], acc: &mut [[i32; 2]; 4]) {
    for (r, a) in a.iter().enumerate() {
        for (c, b) in b.iter().enumerate() {
            acc[r][c] = a.iter().zip(*b).map(|(&x, &y)| x as i32 * y as i32).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// 4 activation rows × 2 weight rows, 32 bytes a step: `vpmaddubsw` multiplies u8 by i8 and
    /// sums neighbours into i16 (no saturation with 7-bit weights), `vpmaddwd` by ones widens
    /// the pairs into i32.
    ///
    /// # Safety
    /// The CPU must have AVX2; every slice must be `kp` long, `kp` a multiple of 32.
    #[target_feature(enable = "avx2")]
    pub unsafe fn block(a: &[&[u8]; 4], b: &[&[i8]; 2], kp: usize, acc: &mut [[i32; 2]; 4]) {
        debug_assert!(kp.is_multiple_of(32));
        debug_assert!(a.iter().all(|s| s.len() >= kp) && b.iter().all(|s| s.len() >= kp));
        let ones = _mm256_set1_epi16(1);
        let mut s = [[_mm256_setzero_si256(); 2]; 4];
        let mut p = 0;
        while p < kp {
            // SAFETY: `p + 32 <= kp <= len` for every slice.
            let (w0, w1) = unsafe {
                (
                    _mm256_loadu_si256(b[0].as_ptr().add(p) as *const __m256i),
                    _mm256_loadu_si256(b[1].as_ptr().add(p) as *const __m256i),
                )
            };
            for r in 0..4 {
                // SAFETY: as above.
                let x = unsafe { _mm256_loadu_si256(a[r].as_ptr().add(p) as *const __m256i) };
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones);
                s[r][0] = _mm256_add_epi32(s[r][0], p0);
                s[r][1] = _mm256_add_epi32(s[r][1], p1);
            }
            p += 32;
        }
        for r in 0..4 {
            for c in 0..2 {
                acc[r][c] = hsum(s[r][c]);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256i) -> i32 {
        let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0b01_00_11_10));
        let x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0b10_11_00_01));
        _mm_cvtsi128_si32(x)
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{Out, QuantRows, QuantWeight};

    /// Columns per register (16 lanes of i32).
    const LANES: usize = 16;

    /// `[n, kp]` rows → groups of 16 columns, each `kp / 4` steps of 16 columns × 4 bytes, so that
    /// one 64-byte load holds four consecutive `k` of 16 columns (what `vpdpbusd` multiplies by
    /// four broadcast activation bytes). Columns past `n` are zeros.
    pub fn pack(data: &[i8], n: usize, kp: usize) -> Vec<i8> {
        let mut p = vec![0i8; n.next_multiple_of(LANES) * kp];
        for j in 0..n {
            let (g, c) = (j / LANES, j % LANES);
            let row = &data[j * kp..(j + 1) * kp];
            for (s, quad) in row.chunks_exact(4).enumerate() {
                let at = g * LANES * kp + s * 4 * LANES + c * 4;
                p[at..at + 4].copy_from_slice(quad);
            }
        }
        p
    }

    /// Activation rows `i0..i1` × columns `j0..j1` (`j0` a multiple of 16).
    ///
    /// # Safety
    /// The CPU must run AVX-512 F, BW and VNNI; `packed` is `pack` of `w`; `i1 <= q.m`,
    /// `j1 <= w.n`; `dst` holds those rows and columns; no other thread touches this tile.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile(
        dst: Out,
        dst_rs: usize,
        q: &QuantRows,
        w: &QuantWeight,
        packed: &[i8],
        (i0, i1): (usize, usize),
        (j0, j1): (usize, usize),
    ) {
        debug_assert!(j0.is_multiple_of(LANES) && j1 <= w.n);
        debug_assert_eq!(packed.len(), w.n.next_multiple_of(LANES) * q.kp);
        crate::model::cpu::kernels::blocks_6x4!(
            block,
            (i0, i1),
            (j0, j1),
            dst,
            dst_rs,
            q,
            w,
            packed
        );
    }

    /// `R` activation rows from `i` × `G` groups of 16 columns from `j`, over the whole of `kp`;
    /// then the zero-point correction and both scales, as the portable kernel computes them
    /// (`(sx · sw) · (acc - zero · Σw)`), stored with a mask past `j_end`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn block<const R: usize, const G: usize>(
        dst: Out,
        dst_rs: usize,
        q: &QuantRows,
        w: &QuantWeight,
        packed: &[i8],
        i: usize,
        j: usize,
        j_end: usize,
    ) {
        let kp = q.kp;
        let mut acc = [[_mm512_setzero_si512(); G]; R];
        // SAFETY (all pointer reads): rows `i..i + R` of `q.data` (`kp` bytes each) and groups
        // `j / 16..j / 16 + G` of `packed` (`16 · kp` bytes each) exist, per `tile`.
        let a = unsafe { q.data.as_ptr().add(i * kp) };
        let b = unsafe { packed.as_ptr().add(j * kp) };
        let mut p = 0;
        while p < kp {
            let wv: [__m512i; G] = std::array::from_fn(|g| unsafe {
                _mm512_loadu_si512(b.add(g * LANES * kp + p * LANES) as *const _)
            });
            for r in 0..R {
                let x = unsafe { (a.add(r * kp + p) as *const i32).read_unaligned() };
                let x = _mm512_set1_epi32(x);
                for g in 0..G {
                    acc[r][g] = _mm512_dpbusd_epi32(acc[r][g], x, wv[g]);
                }
            }
            p += 4;
        }
        for g in 0..G {
            // SAFETY: AVX-512 F (this function's); the group starts before `j_end <= n`.
            let cols = unsafe { Cols::load(w, j + g * LANES, j_end) };
            for r in 0..R {
                // SAFETY: row `i + r` and these columns are inside `dst` (checked by
                // `qmatmul_wt_with`), and this task's own.
                unsafe { cols.finish_row(dst, dst_rs, q, i + r, acc[r][g]) };
            }
        }
    }

    /// The weight sums and scales of 16 columns from `j` (masked past `j_end`), which finish the
    /// rows of a block (this kernel's and the AMX one's).
    pub struct Cols {
        j: usize,
        valid: usize,
        mask: __mmask16,
        sums: __m512i,
        sw: __m512,
    }

    impl Cols {
        /// # Safety
        /// The CPU runs AVX-512 F; `j < j_end <= w.n`.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn load(w: &QuantWeight, j: usize, j_end: usize) -> Self {
            let valid = (j_end - j).min(LANES);
            let mask: __mmask16 = if valid == LANES { !0 } else { (1 << valid) - 1 };
            // SAFETY: masked loads touch only columns `< j_end <= n`.
            let (sums, sw) = unsafe {
                (
                    _mm512_maskz_loadu_epi32(mask, w.sums.as_ptr().add(j)),
                    _mm512_maskz_loadu_ps(mask, w.scale.as_ptr().add(j)),
                )
            };
            Cols {
                j,
                valid,
                mask,
                sums,
                sw,
            }
        }

        /// Row `i` of these columns to `dst`, from its integer sums `acc`, as the portable
        /// kernel computes it: `(sx · sw) · (acc - zero · Σw)`.
        ///
        /// # Safety
        /// The CPU runs AVX-512 F; row `i`, columns `j..j + valid` are inside `dst` and the
        /// caller's own.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn finish_row(
            &self,
            dst: Out,
            dst_rs: usize,
            q: &QuantRows,
            i: usize,
            acc: __m512i,
        ) {
            let zero = _mm512_set1_epi32(q.zero[i]);
            let v = _mm512_sub_epi32(acc, _mm512_mullo_epi32(zero, self.sums));
            let s = _mm512_mul_ps(_mm512_set1_ps(q.scale[i]), self.sw);
            let o = _mm512_mul_ps(s, _mm512_cvtepi32_ps(v));
            // SAFETY: the caller's contract.
            unsafe { _mm512_mask_storeu_ps(dst.at(i * dst_rs + self.j, self.valid), self.mask, o) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    //! The int8 products on AMX's `tdpbusd` (see `cpu::amx`): 32 × 32 blocks, then the
    //! zero-point correction and scales with AVX-512.

    use std::arch::x86_64::*;

    use super::vnni::Cols;
    use super::{Int8Kernel, Out, QuantRows, QuantWeight};
    use crate::model::cpu::amx::{self, Acc, COLS, Op, ROWS};

    /// Whether AMX-INT8 runs here and a small product through it gives the portable kernel's
    /// bits (`amx::checked`).
    pub fn usable() -> bool {
        amx::checked(Op::Int8, self_check)
    }

    /// A product with ragged rows, columns and depth through AMX against the portable kernel.
    fn self_check() -> bool {
        let (m, k, n) = (37, 200, 53);
        let (x, w) = crate::model::cpu::kernels::timing_data(m, k, n);
        // The 8-bit weights the fused path gives AMX.
        let w = QuantWeight::for_kernel(&w, n, k, Int8Kernel::Amx);
        let q = super::quantize_rows(&x, m, k, w.kp);
        let run = |kernel| {
            let mut dst = vec![f32::NAN; m * n];
            // SAFETY: `dst` is borrowed mutably for this call.
            let out = unsafe { Out::new(&mut dst) };
            super::tile(kernel, out, n, &q, &w, (0, m), (0, n));
            dst
        };
        let (amx, portable) = (run(Int8Kernel::Amx), run(Int8Kernel::Portable));
        amx.iter()
            .zip(&portable)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// Activation rows `i0..i1` × columns `j0..j1` (`j0` a multiple of 16).
    ///
    /// # Safety
    /// `amx::usable(Op::Int8)`; `packed` is `vnni::pack` of `w`; `q.data` holds rows up to a
    /// multiple of 32 past `i1`; `q.kp` is a multiple of 64; `j1 <= w.n`; `dst` holds those
    /// rows and columns; no other thread touches this tile.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(
        dst: Out,
        dst_rs: usize,
        q: &QuantRows,
        w: &QuantWeight,
        packed: &[i8],
        rows: (usize, usize),
        cols: (usize, usize),
    ) {
        // SAFETY: AMX-INT8 is usable (caller); `blocks` gets the caller's contract, and runs
        // `amx::block` with the configuration loaded on this thread.
        unsafe {
            amx::configure();
            blocks(
                dst,
                dst_rs,
                q,
                w,
                packed,
                rows,
                cols,
                |a, b, kp, r, g, acc| amx::block(Op::Int8, a, b, kp, r, g, acc),
            );
            amx::release();
        }
    }

    /// [`tile`]'s blocks (`amx::for_blocks`), with the block's product as `run` (AMX, or its
    /// emulation in the tests), each finished by [`finish`].
    ///
    /// # Safety
    /// As [`tile`], less AMX; `run` must be safe to call as `amx::block` is; the CPU runs
    /// AVX-512 F.
    #[allow(clippy::too_many_arguments)]
    unsafe fn blocks(
        dst: Out,
        dst_rs: usize,
        q: &QuantRows,
        w: &QuantWeight,
        packed: &[i8],
        rows: (usize, usize),
        cols: (usize, usize),
        run: impl FnMut(*const u8, *const u8, usize, bool, bool, &mut Acc),
    ) {
        let b = amx::bytes(packed);
        amx::for_blocks(&q.data, b, q.kp, w.n, rows, cols, run, |acc, r0, c0| {
            // SAFETY: AVX-512 F (caller); the tile's rows and columns are inside the caller's.
            unsafe { finish(dst, dst_rs, q, w, acc, (r0, rows.1), (c0, cols.1)) }
        });
    }

    /// One accumulator tile to `dst`: rows `r0..min(r0 + 16, i1)`, columns
    /// `c0..min(c0 + 16, j1)`, as the portable kernel computes them
    /// (`(sx · sw) · (acc - zero · Σw)`).
    ///
    /// # Safety
    /// Those rows and columns are inside `dst` and the caller's own.
    #[target_feature(enable = "avx512f")]
    unsafe fn finish(
        dst: Out,
        dst_rs: usize,
        q: &QuantRows,
        w: &QuantWeight,
        acc: &[[u32; COLS]; ROWS],
        (r0, i1): (usize, usize),
        (c0, j1): (usize, usize),
    ) {
        // SAFETY: AVX-512 F (caller); `c0 < j1 <= n`.
        let cols = unsafe { Cols::load(w, c0, j1) };
        for (r, acc) in acc.iter().enumerate().take((i1 - r0).min(ROWS)) {
            // SAFETY: `acc` is 16 lanes of 32 bits; row `r0 + r` and these columns are inside
            // `dst` and this task's own (caller's contract).
            unsafe {
                let a = _mm512_loadu_si512(acc.as_ptr() as *const _);
                cols.finish_row(dst, dst_rs, q, r0 + r, a)
            };
        }
    }

    /// The block loop, layouts and finishing of the AMX kernel, with the tile instructions
    /// emulated, against the portable kernel (the instructions themselves are checked where
    /// AMX runs, by `every_kernel_gives_the_portable_bits...` and by [`usable`]'s own check).
    #[cfg(test)]
    #[test]
    fn blocks_give_the_portable_bits_with_emulated_tiles() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("SKIPPED blocks_give_the_portable_bits_with_emulated_tiles: no AVX-512 F");
            return;
        }
        let random = crate::model::cpu::kernels::random_values;
        for (m, k, n) in [
            (1, 7, 1),
            (5, 33, 3),
            (13, 384, 37),
            (37, 200, 53),
            (70, 100, 130),
            (33, 64, 80),
        ] {
            let x = random(m * k, 3 + m as u64);
            let wv = random(n * k, 4 + n as u64);
            // 7-bit weights, and the 8 bits AMX takes.
            for w in [
                QuantWeight::new(&wv, n, k),
                QuantWeight::for_kernel(&wv, n, k, Int8Kernel::Amx),
            ] {
                let q = super::quantize_rows(&x, m, k, w.kp);
                let packed = super::vnni::pack(&w.data, n, w.kp);
                let mut want = vec![f32::NAN; m * n];
                // SAFETY: `want` is borrowed mutably for this call.
                super::tile(
                    Int8Kernel::Portable,
                    unsafe { Out::new(&mut want) },
                    n,
                    &q,
                    &w,
                    (0, m),
                    (0, n),
                );
                // The whole product, then split as `kernels::tiles` may split it.
                let splits = [
                    vec![((0, m), (0, n))],
                    vec![
                        ((0, m / 2), (0, n)),
                        ((m / 2, m), (0, n.min(16))),
                        ((m / 2, m), (n.min(16), n)),
                    ],
                ];
                for split in splits {
                    let mut got = vec![f32::NAN; m * n];
                    // SAFETY: `got` is borrowed mutably for this loop; the parts are disjoint.
                    let out = unsafe { Out::new(&mut got) };
                    for (rows, cols) in split {
                        if rows.0 < rows.1 && cols.0 < cols.1 {
                            // SAFETY: AVX-512 F checked; the contract of `blocks` holds for these
                            // parts of the product, and the emulation reads what `amx::block` would.
                            unsafe {
                                blocks(
                                    out,
                                    n,
                                    &q,
                                    &w,
                                    &packed,
                                    rows,
                                    cols,
                                    |a, b, kp, r, g, acc| {
                                        amx::block_emulated(Op::Int8, a, b, kp, r, g, acc)
                                    },
                                )
                            };
                        }
                    }
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{m}x{k}x{n}, {} bits: emulated AMX blocks differ from the portable kernel",
                        w.bits()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu::kernels::random_values as random;

    #[test]
    fn every_kernel_gives_the_portable_bits_and_the_product_is_near_f32() {
        // Odd shapes: rows and columns not multiples of the block, k not a multiple of 32; the
        // last one large enough to run in parallel.
        for (m, k, n) in [
            (1, 7, 1),
            (5, 33, 3),
            (13, 384, 37),
            (70, 100, 130),
            (33, 384, 1152),
        ] {
            let x = random(m * k, 1 + m as u64);
            let w = random(n * k, 2 + n as u64);
            let mut exact = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    exact[i * n + j] = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
                }
            }
            // 7-bit weights (every kernel), then 8-bit (every kernel that sums in i32).
            for (q, bound) in [
                (QuantWeight::new(&w, n, k), 0.03),
                (
                    QuantWeight::for_kernel(&w, n, k, Int8Kernel::Portable),
                    0.02,
                ),
            ] {
                let bits = q.bits();
                let mut portable = vec![f32::NAN; m * n];
                qmatmul_wt_with(Int8Kernel::Portable, &mut portable, n, &x, m, &q);
                for kernel in Int8Kernel::available().into_iter().filter(|k| k.takes(&q)) {
                    let mut got = vec![f32::NAN; m * n];
                    qmatmul_wt_with(kernel, &mut got, n, &x, m, &q);
                    assert_eq!(got, portable, "{} {bits}-bit at {m}x{k}x{n}", kernel.name());
                }
                // Quantisation error: inputs in [-1, 1], so each product is off by about
                // 1/255 + 1/63 (7 bits) or 1/127 (8 bits) of its size; the sum's error grows
                // as √k.
                let worst = exact
                    .iter()
                    .zip(&portable)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < bound * (k as f32).sqrt(),
                    "{bits}-bit {m}x{k}x{n}: {worst}"
                );
            }
        }
    }

    #[test]
    fn eight_bit_weights_are_for_kernels_that_sum_in_i32() {
        let w = [0.3f32, -1.0, 0.25];
        let q = QuantWeight::for_kernel(&w, 1, 3, Int8Kernel::Avx512Vnni);
        assert_eq!(q.bits(), 8);
        // 0.3 · 127 = 38.1, 0.25 · 127 = 31.75.
        assert_eq!(&q.data[..3], &[38, -127, 32]);
        assert_eq!(q.scale[0], 1.0 / 127.0);
        assert_eq!(
            QuantWeight::for_kernel(&w, 1, 3, Int8Kernel::Avx2).bits(),
            7
        );
        assert!(!Int8Kernel::Avx2.takes(&q));
        assert!(Int8Kernel::Portable.takes(&q) && Int8Kernel::Amx.takes(&q));
        assert!(Int8Kernel::Avx2.takes(&QuantWeight::new(&w, 1, 3)));
    }

    #[test]
    fn weights_use_seven_bits_per_channel_and_zero_stays_exact() {
        let w = [0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0];
        let q = QuantWeight::new(&w, 2, 3);
        // 0.5 / (1/63) is 31.49999 in f32.
        assert_eq!(&q.data[..3], &[31, -63, 16]);
        assert_eq!(q.scale[0], 1.0 / 63.0);
        assert_eq!(q.sums, vec![-16, 0]);
        // A zero row gives exact zeros; so does a zero input row.
        let mut out = [f32::NAN; 4];
        qmatmul_wt(&mut out, 2, &[0.0, 0.0, 0.0, 1.0, 2.0, -3.0], 2, &q);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[1], 0.0);
        assert_eq!(out[3], 0.0);
        assert!((out[2] - (0.5 - 2.0 - 0.75)).abs() < 0.05, "{}", out[2]);
    }
}
