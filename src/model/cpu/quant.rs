//! int8 dynamic quantisation of the linear layers (`--precision int8`), as ONNX Runtime's
//! `quantize_dynamic` does it: the weights are quantised once, per output channel; each row of
//! activations is quantised when it arrives, with its own scale and zero point; the product runs
//! on integers and is scaled back to `f32`.
//!
//! - Weights: symmetric, 7 bits (`-63..=63`) per output channel. Seven bits, not eight, so that
//!   AVX2's `vpmaddubsw` (u8 × i8, two products summed into an i16) cannot saturate:
//!   255 × 63 × 2 = 32,130 < 32,767. This is ONNX Runtime's `reduce_range` on CPUs without VNNI.
//! - Activations: asymmetric u8 per row: `x ≈ scale · (q - zero)`, `q` in `0..=255`, `zero`
//!   chosen so that 0 is exact.
//! - `x · w ≈ sx · sw · (Σ q_x q_w - zero · Σ q_w)`; the integer sums are exact (i32), so every
//!   kernel (AVX2 or portable) gives the same bits.
//!
//! Rows are padded to a multiple of 32 values with zeros (a zero weight adds nothing).

use rayon::prelude::*;

use super::kernels::{Out, threads};

/// Values per SIMD step (one 256-bit register of bytes).
const STEP: usize = 32;
/// Weight rows per parallel task.
const COLS_PER_TASK: usize = 64;
/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MACS: usize = 1 << 20;
/// The largest weight magnitude (7 bits).
const W_MAX: f32 = 63.0;
const A_MAX: f32 = 255.0;

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
}

impl QuantWeight {
    /// Quantises a row-major `[n, k]` weight.
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k, "weight too short");
        let kp = k.next_multiple_of(STEP);
        let mut data = vec![0i8; n * kp];
        let mut scale = vec![0f32; n];
        let mut sums = vec![0i32; n];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / W_MAX } else { 1.0 };
            let q = &mut data[j * kp..j * kp + k];
            for (q, v) in q.iter_mut().zip(row) {
                *q = (v / s).round().clamp(-W_MAX, W_MAX) as i8;
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
        }
    }

    /// Several weights of the same input width stacked (Q, K and V as one `[3h, h]` product).
    pub fn stack(parts: &[(&[f32], usize)], k: usize) -> Self {
        let mut all = Vec::new();
        let mut n = 0;
        for (w, rows) in parts {
            all.extend_from_slice(&w[..rows * k]);
            n += rows;
        }
        Self::new(&all, n, k)
    }

    /// Bytes held (the weights, scales and sums).
    pub fn bytes(&self) -> usize {
        self.data.len() + 8 * self.n
    }
}

/// Activation rows quantised to u8, each with its scale and zero point.
pub struct QuantRows {
    m: usize,
    kp: usize,
    data: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

/// Quantises the `m` rows of `x` (`k` values each), padded to `kp`.
fn quantize_rows(x: &[f32], m: usize, k: usize, kp: usize) -> QuantRows {
    let mut data = vec![0u8; m * kp];
    let mut scale = vec![0f32; m];
    let mut zero = vec![0i32; m];
    let one = |(i, q): (usize, &mut [u8])| -> (f32, i32) {
        let row = &x[i * k..(i + 1) * k];
        let (lo, hi) = row
            .iter()
            .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let s = if hi > lo { (hi - lo) / A_MAX } else { 1.0 };
        let z = (-lo / s).round().clamp(0.0, A_MAX);
        for (q, v) in q[..k].iter_mut().zip(row) {
            *q = (v / s + z).round().clamp(0.0, A_MAX) as u8;
        }
        // Padding: any value times a zero weight is 0; the zero point's correction uses the
        // weights' sums, which cover only the real values.
        (s, z as i32)
    };
    let rows: Vec<(f32, i32)> = if m * k >= PARALLEL_MACS / 16 && threads() > 1 {
        data.par_chunks_mut(kp).enumerate().map(one).collect()
    } else {
        data.chunks_mut(kp).enumerate().map(one).collect()
    };
    for (i, (s, z)) in rows.into_iter().enumerate() {
        scale[i] = s;
        zero[i] = z;
    }
    QuantRows {
        m,
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
}

impl Int8Kernel {
    /// The fastest this CPU runs.
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Int8Kernel::Avx2;
        }
        Int8Kernel::Portable
    }

    /// Every kernel this CPU runs (for tests and benchmarks).
    pub fn available() -> Vec<Self> {
        let mut v = vec![Int8Kernel::Portable];
        if Self::best() == Int8Kernel::Avx2 {
            v.push(Int8Kernel::Avx2);
        }
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Portable => "portable",
            Int8Kernel::Avx2 => "avx2 (vpmaddubsw)",
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
    assert!(x.len() >= m * k, "lhs too short");
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n, "dst too short");
    assert!(
        kernel == Int8Kernel::Portable || Int8Kernel::best() == kernel,
        "this CPU does not run the {} kernel",
        kernel.name()
    );
    let q = quantize_rows(x, m, k, w.kp);
    // SAFETY: `dst` is borrowed mutably for this whole call; each task writes only its own
    // columns.
    let out = unsafe { Out::new(dst) };
    let run = |j0: usize, j1: usize| columns(kernel, out, dst_rs, &q, w, j0, j1);
    if threads() < 2 || m * n * k < PARALLEL_MACS {
        run(0, n);
    } else {
        (0..n.div_ceil(COLS_PER_TASK))
            .into_par_iter()
            .for_each(|b| run(b * COLS_PER_TASK, ((b + 1) * COLS_PER_TASK).min(n)));
    }
}

/// Weight rows `j0..j1` against every activation row.
fn columns(
    kernel: Int8Kernel,
    dst: Out,
    dst_rs: usize,
    q: &QuantRows,
    w: &QuantWeight,
    j0: usize,
    j1: usize,
) {
    let kp = q.kp;
    let finish = |i: usize, j: usize, acc: i32| {
        let v = acc - q.zero[i] * w.sums[j];
        dst.write(i * dst_rs + j, q.scale[i] * w.scale[j] * v as f32);
    };
    let mut i = 0;
    while i < q.m {
        let rows = (q.m - i).min(4);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
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

    #[test]
    fn every_kernel_gives_the_portable_bits_and_the_product_is_near_f32() {
        // Odd shapes: rows and columns not multiples of the block, k not a multiple of 32.
        for (m, k, n) in [(1, 7, 1), (5, 33, 3), (13, 384, 37), (70, 100, 130)] {
            let x = random(m * k, 1 + m as u64);
            let w = random(n * k, 2 + n as u64);
            let q = QuantWeight::new(&w, n, k);
            let mut exact = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    exact[i * n + j] = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
                }
            }
            let mut portable = vec![f32::NAN; m * n];
            qmatmul_wt_with(Int8Kernel::Portable, &mut portable, n, &x, m, &q);
            for kernel in Int8Kernel::available() {
                let mut got = vec![f32::NAN; m * n];
                qmatmul_wt_with(kernel, &mut got, n, &x, m, &q);
                assert_eq!(got, portable, "{} at {m}x{k}x{n}", kernel.name());
            }
            // Quantisation error: inputs in [-1, 1], so each product is off by about
            // 1/255 + 1/63 of its size; the sum's error grows as √k.
            let worst = exact
                .iter()
                .zip(&portable)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 0.03 * (k as f32).sqrt(), "{m}x{k}x{n}: {worst}");
        }
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
