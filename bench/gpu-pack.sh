#!/usr/bin/env bash
# Makes the pack that bench/gpu.sh runs on a GPU machine: the CUDA build of `sbert-tui` and of
# the `encode` / `train` benchmarks, stripped and xz-compressed, and all-MiniLM-L6-v2 with its
# weights in float16 (the word embeddings in bfloat16; about 50 MB in all, to fit a 64 MiB transfer), and (TESTS=1, the default)
# the CPU library tests bench/gpu.sh runs on the host CPU (every kernel the CPU runs against
# the portable one), built in the ordinary target folder. MORE_TESTS="backprop fused_path ..."
# adds integration test binaries (about 1-2 MB each, compressed), where the transfer has room.
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
if [ "${TESTS:-1}" = 1 ]; then
  # The CPU build's test binaries (the CUDA build's would carry the GPU kernels too).
  mkdir "$BINS/tests"
  test_bin() {
    env -u RUSTFLAGS -u CARGO_TARGET_DIR cargo test --release --no-run "$@" 2>&1 |
      sed -n 's/.*Executable .* (\(.*\))$/\1/p' | tail -1
  }
  strip -o "$BINS/tests/lib-tests" "$(test_bin --lib)" && echo "model::" > "$BINS/tests/lib-tests.filter"
  for t in ${MORE_TESTS:-}; do
    strip -o "$BINS/tests/$t-tests" "$(test_bin --test $t)"
  done
  # The kernel micro-benchmarks (criterion), for the host CPU's per-kernel timings.
  strip -o "$BINS/tests/kernels-bench" "$(env -u RUSTFLAGS -u CARGO_TARGET_DIR cargo bench --no-run --bench kernels 2>&1 |
    sed -n 's/.*Executable .* (\(.*\))$/\1/p' | tail -1)"
  echo "$PWD" > "$BINS/tests/built-in"
fi
# One archive, one xz stream with a window wider than a binary: the CUDA binaries share most of
# their bytes (candle's kernels), 12 MB for all, not 20.
tar -C "$BINS" -cf - . | xz --lzma2=preset=9,dict=256MiB -T1 > "$PACK/bins.tar.xz"
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
            # The word embeddings (half the weights, looked up, not multiplied) in bfloat16,
            # the rest in float16: 36 MB compressed, not 41.
            save_file({k: (v.bfloat16() if "word_embeddings" in k else v.half()).contiguous()
                       for k, v in load_file(p).items()}, p, metadata={"format": "pt"})
PY
xz -T2 -9 -f "$PACK/minilm-f16/model.safetensors" "$PACK/minilm-f16/tokenizer.json"
du -sh "$PACK"/*
