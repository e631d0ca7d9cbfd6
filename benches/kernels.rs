//! Micro-benchmarks of the hot CPU kernels of the fused inference path, at all-MiniLM-L6-v2's
//! shapes (hidden 384, intermediate 1536, 12 heads of 32): the two matrix-product paths across
//! row counts (which picks `kernels::SMALL_M`), the AVX-512 kernel on packed weights, the int8 and bf16 products of `--precision int8|bf16`
//! (each kernel this CPU runs), GELU, layer norm and attention.
//!
//!   cargo bench --bench kernels                 # all
//!   cargo bench --bench kernels -- matmul       # a group
//!
//! Reports time per call and, for the products, throughput in multiply-adds per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sbert_tui::model::cpu::{bf16, kernels, packed, quant};

fn data(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
}

fn matmul(c: &mut Criterion) {
    for (k, n) in [(384, 384), (384, 1536), (1536, 384)] {
        let mut group = c.benchmark_group(format!("matmul_k{k}_n{n}"));
        let w = data(n * k, 1.0);
        for m in [1, 4, 8, 12, 16, 24, 32, 64, 480] {
            let x = data(m * k, 2.0);
            let mut dst = vec![0f32; m * n];
            group.throughput(Throughput::Elements((m * n * k) as u64));
            group.bench_with_input(BenchmarkId::new("gemm", m), &m, |b, &m| {
                b.iter(|| kernels::gemm_wt(&mut dst, n, &x, m, k, &w, n))
            });
            group.bench_with_input(BenchmarkId::new("unpacked", m), &m, |b, &m| {
                b.iter(|| kernels::small_matmul_wt_par(&mut dst, n, &x, m, k, &w, n))
            });
            // The AVX-512 kernel on the weight packed once (not timed: done at load), with each
            // number of steps per pass it is timed with at load (`kc`).
            if packed::F32Kernel::Avx512.supported() {
                let pw = packed::PackedWeight::new(&w, n, k);
                for kc in packed::KC_CANDIDATES {
                    let id = match kc {
                        usize::MAX => "f32 avx512 packed".to_string(),
                        kc => format!("f32 avx512 packed kc{kc}"),
                    };
                    group.bench_with_input(BenchmarkId::new(id, m), &m, |b, &m| {
                        b.iter(|| {
                            let kernel = packed::F32Kernel::Avx512;
                            packed::matmul_kc(kernel, kc, &mut dst, n, &x, m, &pw)
                        })
                    });
                }
            }
            // The training forward: the weight packed at every call where the AVX-512 kernel
            // was chosen for it (`SBERT_TUI_F32_KERNEL=gemm|avx512` to compare).
            group.bench_with_input(BenchmarkId::new("f32 training forward", m), &m, |b, &m| {
                b.iter(|| packed::matmul_wt_fresh(&mut dst, n, &x, m, k, &[(&w, n)]))
            });
            // --precision int8: the activations' quantisation included.
            let q = quant::QuantWeight::new(&w, n, k);
            for kernel in quant::Int8Kernel::available() {
                let id = format!("int8 {}", kernel.name());
                group.bench_with_input(BenchmarkId::new(id, m), &m, |b, &m| {
                    b.iter(|| quant::qmatmul_wt_with(kernel, &mut dst, n, &x, m, &q))
                });
            }
            // --precision bf16: the activations' rounding included.
            let h = bf16::Bf16Weight::new(&w, n, k);
            for kernel in bf16::Bf16Kernel::available() {
                let id = format!("bf16 {}", kernel.name());
                group.bench_with_input(BenchmarkId::new(id, m), &m, |b, &m| {
                    b.iter(|| bf16::matmul_with(kernel, &mut dst, n, &x, m, &h))
                });
            }
        }
        group.finish();
    }
}

fn elementwise(c: &mut Criterion) {
    let rows = 480;
    let mut group = c.benchmark_group("elementwise");
    let bias = data(1536, 3.0);
    let src = data(rows * 1536, 4.0);
    let mut buf = src.clone();
    group.throughput(Throughput::Elements((rows * 1536) as u64));
    group.bench_function("bias_gelu_480x1536", |b| {
        b.iter(|| {
            buf.copy_from_slice(&src);
            kernels::bias_gelu(&mut buf, &bias)
        })
    });
    let gamma = data(384, 5.0);
    let beta = data(384, 6.0);
    let y = data(rows * 384, 7.0);
    let res = data(rows * 384, 8.0);
    let mut out = res.clone();
    group.throughput(Throughput::Elements((rows * 384) as u64));
    group.bench_function("bias_residual_layer_norm_480x384", |b| {
        b.iter(|| {
            out.copy_from_slice(&res);
            kernels::bias_residual_layer_norm(&y, &gamma[..384], &mut out, &gamma, &beta, 1e-12)
        })
    });
    // STS sentences average about 12 tokens; heads of 32 (MiniLM) and of 64 (MPNet, ModernBERT).
    for (len, d) in [(12, 32), (16, 32), (64, 32), (256, 32), (12, 64), (64, 64)] {
        let h = 12 * d;
        let qkv = data(len * 3 * h, 9.0);
        let mut ctx = vec![0f32; len * h];
        let mut scratch = vec![0f32; kernels::attend_scratch(len, d)];
        group.throughput(Throughput::Elements((12 * len * len * d * 2) as u64));
        group.bench_function(format!("attend_{len}_tokens_d{d}"), |b| {
            b.iter(|| {
                kernels::attend(
                    &qkv,
                    &mut ctx,
                    len,
                    12,
                    d,
                    1.0 / (d as f32).sqrt(),
                    Default::default(),
                    &mut scratch,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matmul, elementwise);
criterion_main!(benches);
