#!/usr/bin/env bash
# Makes the pack that bench/gpu.sh runs on a GPU machine: the CUDA build of `sbert-tui` and of
# the `encode` / `train` benchmarks, stripped and xz-compressed, and all-MiniLM-L6-v2 with its
# weights in float16 (about 52 MB in all, to fit a 64 MiB transfer).
#
#   ROOT=<CUDA toolkit root> LINKDIR=<folder with libcuda stub and unversioned links> \
#   MODEL=<all-MiniLM-L6-v2 folder> bench/gpu-pack.sh
# (docs/GPU.md says how to get ROOT and LINKDIR on a machine without a GPU.)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ROOT:?CUDA toolkit root}" "${LINKDIR:?link folder}" "${MODEL:?all-MiniLM-L6-v2 folder}"
PACK=${PACK:-target/gpu-pack}
export CUDA_ROOT=$ROOT CUDA_PATH=$ROOT PATH=$ROOT/bin:$PATH CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export RUSTFLAGS="-L $LINKDIR" CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
cargo build --release --features cuda --bin sbert-tui
bench_bin() {
  cargo bench --features cuda --no-run --bench "$1" 2>&1 | sed -n 's/.*Executable .* (\(.*\))$/\1/p' | tail -1
}
mkdir -p "$PACK"
BINS=$(mktemp -d)
strip -o "$BINS/sbert-tui" "$CARGO_TARGET_DIR/release/sbert-tui"
strip -o "$BINS/encode" "$(bench_bin encode)"
strip -o "$BINS/train" "$(bench_bin train)"
# One archive, one xz stream: the three binaries share most of their bytes (10 MB, not 22).
tar -C "$BINS" -cf - sbert-tui encode train | xz -9 -T1 > "$PACK/bins.tar.xz"
rm -rf "$BINS"
rm -rf "$PACK/minilm-f16"
mkdir -p "$PACK/minilm-f16"
for f in config.json config_sentence_transformers.json modules.json sentence_bert_config.json \
         special_tokens_map.json tokenizer.json tokenizer_config.json model.safetensors 1_Pooling/config.json; do
  mkdir -p "$(dirname "$PACK/minilm-f16/$f")" && cp "$MODEL/$f" "$PACK/minilm-f16/$f"
done
PY=${PY:-.venv-ref/bin/python}
$PY - "$PACK/minilm-f16" <<'PY'
import os, sys
from safetensors.torch import load_file, save_file
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        if f.endswith(".safetensors"):
            p = os.path.join(root, f)
            save_file({k: v.half().contiguous() for k, v in load_file(p).items()}, p, metadata={"format": "pt"})
PY
xz -T2 -6 -f "$PACK/minilm-f16/model.safetensors"
du -sh "$PACK"/*
