//! The float32 AVX-512 kernel's rate (G multiply-adds/s) on the weight packed once, at the
//! shapes of all-MiniLM-L6-v2 and all-mpnet-base-v2, for each number of steps per pass, the
//! candidates interleaved (each once per round, 20 rounds of 3 calls, the best kept) so that a
//! shared machine's slow spells fall on all alike. `bench/linear_torch.py` times
//! `torch.nn.functional.linear` on the same shapes, for the comparison in the README.
//!
//!   cargo run --release --example f32_kernel_rate            # RAYON_NUM_THREADS= to change
use std::time::Instant;

use sbert_tui::model::cpu::{kernels, packed};

fn main() {
    if !packed::F32Kernel::Avx512.supported() {
        eprintln!("this CPU has no AVX-512 F: the kernel does not run here");
        return;
    }
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
}
