//! Pieces shared by the AVX2 kernels of exact search and of the f16 first pass.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// The sum of the 32 lanes of four 8-wide accumulators, in a fixed order (so every kernel
    /// that uses it rounds the same way). Must be inlined into a `target_feature(enable =
    /// "avx")` caller.
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[inline(always)]
    pub(crate) unsafe fn sum_lanes(acc: [__m256; 4]) -> f32 {
        // SAFETY: register-only arithmetic; the caller guarantees AVX.
        unsafe {
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }
}
