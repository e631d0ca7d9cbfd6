//! The float32 AVX-512 kernel's rate (G multiply-adds/s) on the weight packed once, at the
//! shapes of all-MiniLM-L6-v2 and all-mpnet-base-v2, for each number of steps per pass, the
//! candidates interleaved (each once per round, 20 rounds of 3 calls, the best kept) so that a
//! shared machine's slow spells fall on all alike; then the three products of a training step
//! at all-mpnet-base-v2's shapes for 310 tokens (a batch of 16 STS-B pairs), as the trainer runs
//! them with the kernels chosen at load: the forward `x · wᵀ` (the weight packed each call), the
//! input gradient `dy · W` and the weight gradient `dyᵀ · x`. `bench/linear_torch.py` times
//! torch's `linear`, `dy @ w` and `dy.t() @ x` on the same shapes, for the comparison in the
//! README. Before and after the tables, the machine's ceiling: a loop of independent 512-bit FMAs
//! on every thread of the pool (G multiply-adds/s), which no product kernel can pass.
//!
//!   cargo run --release --example f32_kernel_rate            # RAYON_NUM_THREADS= to change
use std::time::Instant;

use rayon::prelude::*;

use sbert_tui::model::cpu::kernels::{self, Mat};
use sbert_tui::model::cpu::packed;

fn main() {
    if !packed::F32Kernel::Avx512.supported() {
        eprintln!("this CPU has no AVX-512 F: the kernel does not run here");
        return;
    }
    println!("FMA ceiling: {:.1} G multiply-adds/s", fma_ceiling());
    let kcs = packed::KC_CANDIDATES;
    let name = |kc: usize| match kc {
        usize::MAX => "one pass".to_string(),
        kc => format!("{kc} a pass"),
    };
    println!("k → n, rows: {}", kcs.map(name).join(" | "));
    for (k, n) in [
        (768, 3072),
        (3072, 768),
        (768, 2304),
        (768, 768),
        (384, 1536),
        (1536, 384),
    ] {
        for m in [32, 400] {
            let (x, w) = kernels::timing_data(m, k, n);
            let mut dst = vec![0f32; m * n];
            let pw = packed::PackedWeight::new(&w, n, k);
            let mut best = [f64::MAX; 4];
            for _ in 0..20 {
                for (best, &kc) in best.iter_mut().zip(&kcs) {
                    let t = Instant::now();
                    for _ in 0..3 {
                        packed::matmul_kc(packed::F32Kernel::Avx512, kc, &mut dst, n, &x, m, &pw);
                    }
                    *best = best.min(t.elapsed().as_secs_f64() / 3.0);
                }
            }
            let rates: Vec<String> = best
                .iter()
                .map(|b| format!("{:.1}", (m * n * k) as f64 / b / 1e9))
                .collect();
            println!("{k} → {n}, {m}: {}", rates.join(" | "));
        }
    }
    training();
    println!("\nFMA ceiling: {:.1} G multiply-adds/s", fma_ceiling());
}

/// Multiply-adds per second of independent 512-bit FMAs on every thread of the pool: 12 chains
/// per thread (more than the FMA units' latency × throughput), the best of 40 rounds.
#[cfg(target_arch = "x86_64")]
fn fma_ceiling() -> f64 {
    const STEPS: usize = 200_000;
    let threads = rayon::current_num_threads();
    let mut best = f64::MAX;
    for _ in 0..40 {
        let start = Instant::now();
        let sums: f32 = (0..threads)
            .into_par_iter()
            // SAFETY: the CPU runs AVX-512 F (checked in `main`).
            .map(|t| unsafe { fma_chains(STEPS, t as f32) })
            .sum();
        std::hint::black_box(sums);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (threads * STEPS * 12 * 16) as f64 / best / 1e9
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_ceiling() -> f64 {
    f64::NAN
}

/// `steps` rounds of 12 independent FMAs on 16 lanes each.
///
/// # Safety
/// The CPU must run AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains(steps: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-3));
    let mut acc = [_mm512_set1_ps(seed); 12];
    for _ in 0..steps {
        for v in &mut acc {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

/// Rounds of the training table: more than the first table's, as each call is shorter than a
/// shared machine's spells of one speed.
const ROUNDS: usize = 60;

/// The training step's products at all-mpnet-base-v2's shapes, `t` tokens, interleaved rounds,
/// next to the forward's product on the weight packed once (what the packing costs).
fn training() {
    let t = 310;
    println!(
        "\ntraining, {t} tokens, in → out: forward | dy · W | dyᵀ · x | (inference: packed at load)"
    );
    for (i, o) in [(768, 3072), (3072, 768), (768, 768), (768, 2304)] {
        let (x, w) = kernels::timing_data(t, i, o);
        let (dy, _) = kernels::timing_data(t, o, 0);
        let (mut y, mut dx) = (vec![0f32; t * o], vec![0f32; t * i]);
        let pw = packed::PackedWeight::new(&w, o, i);
        let mut best = [f64::MAX; 4];
        for _ in 0..ROUNDS {
            for (v, best) in best.iter_mut().enumerate() {
                let start = Instant::now();
                match v {
                    0 => packed::matmul_wt_fresh(&mut y, o, &x, t, i, &[(&w, o)]),
                    1 => {
                        let (dy, w) = (Mat::rows(&dy, t, o), Mat::rows(&w, o, i));
                        packed::matmul(&mut dx, i, dy, w, false)
                    }
                    2 => {
                        let (dy, x) = (Mat::rows(&dy, t, o), Mat::rows(&x, t, i));
                        std::hint::black_box(packed::product(dy.t(), x));
                    }
                    _ => packed::matmul_with(packed::F32Kernel::Avx512, &mut y, o, &x, t, &pw),
                }
                *best = best.min(start.elapsed().as_secs_f64());
            }
        }
        let rates: Vec<String> = best
            .iter()
            .map(|b| format!("{:.1}", (t * i * o) as f64 / b / 1e9))
            .collect();
        println!("{i} → {o}: {}", rates.join(" | "));
    }
}
