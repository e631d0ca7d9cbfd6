"""torch.nn.functional.linear's rate (G multiply-adds/s) at the shapes of
examples/f32_kernel_rate.rs (all-MiniLM-L6-v2's and all-mpnet-base-v2's linear layers), best of
20 rounds of 3 calls, for comparing our float32 kernel with torch's GEMM (MKL on x86) on the same
machine and threads; then a training step's three products at all-mpnet-base-v2's shapes for 310
tokens (`linear`, `dy @ w`, `dy.t() @ x`), best of 20 interleaved rounds, as the example prints
them.

    .venv-ref/bin/python bench/linear_torch.py --threads 2
"""
import argparse
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
print("k → n, rows: G multiply-adds/s")
for k, n in ((768, 3072), (3072, 768), (768, 2304), (768, 768), (384, 1536), (1536, 384)):
    for m in (32, 400):
        x, w = torch.randn(m, k), torch.randn(n, k)
        for _ in range(5):
            torch.nn.functional.linear(x, w)
        best = float("inf")
        for _ in range(20):
            t = time.perf_counter()
            for _ in range(3):
                torch.nn.functional.linear(x, w)
            best = min(best, (time.perf_counter() - t) / 3)
        print(f"{k} → {n}, {m}: {m * k * n / best / 1e9:.1f}")

t = 310
print(f"\ntraining, {t} tokens, in → out: forward | dy · W | dyᵀ · x")
for i, o in ((768, 3072), (3072, 768), (768, 768), (768, 2304)):
    x, w, dy = torch.randn(t, i), torch.randn(o, i), torch.randn(t, o)
    calls = (lambda: torch.nn.functional.linear(x, w), lambda: dy @ w, lambda: dy.t() @ x)
    best = [float("inf")] * 3
    for _ in range(20):
        for v, call in enumerate(calls):
            start = time.perf_counter()
            call()
            best[v] = min(best[v], time.perf_counter() - start)
    print(f"{i} → {o}: " + " | ".join(f"{t * i * o / b / 1e9:.1f}" for b in best))
