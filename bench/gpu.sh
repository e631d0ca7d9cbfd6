#!/usr/bin/env bash
# The GPU check, run on a machine with an NVIDIA GPU and Python sentence-transformers (+ torch)
# but no Rust toolchain: parity with the Python library on the same GPU, then encode throughput,
# single-sentence latency and training steps/s side by side.
#
# Expects a pack folder (PACK=, default target/gpu-pack) made on the build machine by
# bench/gpu-pack.sh: the CUDA build of `sbert-tui` and of the `encode` / `train` benchmarks
# (one xz-compressed tar), and all-MiniLM-L6-v2 with its weights in float16 (`minilm-f16/`, to fit the
# transfer); the weights are widened back to float32 here and both engines read that folder.
#
# The pack's archive may also hold `tests/` (CPU test binaries: the library's `model::` tests, with
# every kernel the CPU runs against the portable one, and any integration tests packed), run
# first on the host CPU. HOST=1 (the default) adds
# the host CPU's speed table: bench/run.sh on the CUDA build's CPU path, THREADS (2) threads for
# every engine, MiniLM, Python sentence-transformers and ONNX Runtime beside it.
# SECTIONS="tests host parity encode train finetune" (the default) picks what runs; `cpu-quick`
# (not in the default) encodes on the host CPU only, f32 and int8, at THREADS and at all cores,
# ours and the Python library's.
# LOG=file keeps a copy of everything printed; HOST_RESULTS=file the host table.
# PARITY_CPU=1 adds the Python library on the host CPU to the parity check; CPU_ENCODE=1 adds
# encoding on all the host's cores.
set -u
cd "$(dirname "$0")/.."
[ -n "${LOG:-}" ] && exec > >(tee "$LOG") 2>&1
# The sections to run (all by default).
SECTIONS=" ${SECTIONS:-tests host parity encode train finetune} "
has() { [[ "$SECTIONS" == *" $1 "* ]]; }
PACK=${PACK:-target/gpu-pack}
PY=${PY:-python3}
N=${N:-5000}
STEPS=${STEPS:-60}
DEV=${DEV:-cuda}   # DEV=cpu tries the script on a machine without a GPU
W=$(mktemp -d)
export TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
lscpu | grep -m1 'Model name'
echo "host: $(nproc) CPUs; $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512(f|bw|vl|_vnni|_bf16|_fp16)|amx_(tile|bf16|int8))$' | tr '\n' ' ')"
# Whether Linux (here, the sandbox's kernel) grants this process the AMX tile state.
$PY -c 'import ctypes; r = ctypes.CDLL(None, use_errno=True).syscall(158, 0x1023, 18); print("AMX tile permission (arch_prctl):", "granted" if r == 0 else f"refused, errno {ctypes.get_errno()}")'
$PY -c 'import torch, sentence_transformers as st, transformers as t; print("torch", torch.__version__, "cuda", torch.version.cuda, "| sentence-transformers", st.__version__, "| transformers", t.__version__)'

xz -dc "$PACK/bins.tar.xz" | tar -C "$W" -xf - && chmod +x "$W/sbert-tui" "$W/encode" "$W/train"
# The CUDA runtime libraries of the Python installation (cudart, cublas, curand, nvrtc).
LIBS=$($PY - 2>/dev/null <<'PY'
import os, glob, nvidia
dirs = set()
for root in nvidia.__path__:
    for f in glob.glob(os.path.join(root, "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$W/sbert-tui" | grep -q 'not found'; then
  echo "missing libraries:"; ldd "$W/sbert-tui" | grep 'not found'
fi

# all-MiniLM-L6-v2 in float32 again (the float16 / bfloat16 rounding is the same for both engines).
cp -r "$PACK/minilm-f16" "$W/minilm"
xz -d "$W/minilm"/*.xz
$PY - "$W/minilm" <<'PY'
import sys, os
from safetensors.torch import load_file, save_file
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        if f.endswith(".safetensors"):
            p = os.path.join(root, f)
            save_file({k: v.float().contiguous() for k, v in load_file(p).items()}, p, metadata={"format": "pt"})
PY

if has tests && [ -d "$W/tests" ]; then
  echo "== CPU tests on this host (every kernel the CPU runs against the portable one)"
  # The test binaries find their fixtures under the folder they were built in.
  BUILT=$(cat "$W/tests/built-in")
  [ -e "$BUILT" ] || { mkdir -p "$(dirname "$BUILT")" && ln -s "$PWD" "$BUILT"; }
  if [ -x "$W/tests/kernels-bench" ] || [ -f "$W/tests/kernels-bench" ]; then
    chmod +x "$W/tests/kernels-bench"
    echo "== kernel micro-benchmarks on this host, ${THREADS:-2} threads: [1536, 384] and [384, 1536] weights, 32 and 480 rows (time per call; kcN: N steps of the sum a pass)"
    RAYON_NUM_THREADS=${THREADS:-2} timeout 200 "$W/tests/kernels-bench" --bench 'matmul_k(384_n1536|1536_n384)/.*/(32|480)$' \
      --warm-up-time 0.3 --measurement-time 1 --noplot 2>&1 | grep -E '^matmul|time:' | paste - - | awk '{ print $1, $2, $3, $4, $5, $6, $7 }'
  fi
  for t in "$W"/tests/*-tests; do
    chmod +x "$t"
    SBERT_TUI_MINILM_DIR="$W/minilm" timeout 240 "$t" --test-threads 4 $(cat "$t.filter" 2>/dev/null) 2>&1 |
      grep -E '^test result|FAILED|panicked|SKIPPED' | sed "s|^|$(basename "$t"): |"
  done
fi

if has host; then
  echo "== host CPU, ${THREADS:-2} threads: sbert-tui (CPU path) next to sentence-transformers and ONNX Runtime (bench/run.sh)"
  mkdir -p "$W/bin" && ln -sf "$W/sbert-tui" "$W/encode" "$W/train" "$W/bin/"
  BIN="$W/bin" PY=$PY DEVICE=cpu MODEL="$W/minilm" THREADS=${THREADS:-2} N="$N" STEPS=${HOST_STEPS:-30} \
    RESULTS="${HOST_RESULTS:-$W/results-host.md}" timeout 420 bench/run.sh || echo "host CPU benchmark failed"
fi

# Sentences: the MiniLM fixture's 12 (one past 256 tokens) and STS-B dev.
$PY - "$N" > "$W/sentences.txt" <<'PY'
import csv, json, sys
out = [" ".join(s.split()) for s in json.load(open("tests/fixtures/minilm_reference.json"))["sentences"]]
for r in csv.DictReader(open("sample_data/stsb/sts-train.csv", encoding="utf-8")):
    out.append(r["sentence1"].replace("\n", " "))
for s in out[: int(sys.argv[1])]:
    print(s)
PY
head -300 "$W/sentences.txt" > "$W/parity.txt"

if has cpu-quick; then
  echo "== host CPU: encode, $N sentences, batch 32, at ${THREADS:-2} threads and at $(nproc)"
  for t in ${THREADS:-2} $(nproc); do
    for p in f32 int8; do
      RAYON_NUM_THREADS=$t timeout 120 "$W/encode" --device cpu --model "$W/minilm" --input "$W/sentences.txt" --precision $p --latency 50 | cut -c1-300
    done
    timeout 120 $PY bench/encode_python.py --model "$W/minilm" --input "$W/sentences.txt" --device cpu --threads $t --latency 50 2>/dev/null
  done
fi

if has parity; then
echo "== parity: sbert-tui ($DEV) against sentence-transformers ($DEV${PARITY_CPU:+ and CPU}), 300 sentences"
MODELS=("$W/minilm" tests/fixtures/tiny-bert-st tests/fixtures/tiny-xlmr-st tests/fixtures/tiny-distilbert-st
        tests/fixtures/tiny-mpnet-st tests/fixtures/tiny-t5-st tests/fixtures/tiny-modernbert-st tests/fixtures/tiny-qwen3-st)
for m in "${MODELS[@]}"; do
  name=$(basename "$m")
  if ! timeout 120 "$W/sbert-tui" encode --device $DEV --model "$m" --input "$W/parity.txt" > "$W/ours-$name.jsonl" 2> "$W/err"; then
    echo "$name: sbert-tui failed: $(tail -3 "$W/err")"; rm -f "$W/ours-$name.jsonl"
  fi
done
timeout 300 $PY - "$W" "$DEV" "${PARITY_CPU:-}" "${MODELS[@]}" <<'PY'
import json, os, sys, numpy as np
from sentence_transformers import SentenceTransformer
w, gpu, with_cpu, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sents = open(f"{w}/parity.txt", encoding="utf-8").read().split("\n")[:-1]
for model in models:
    name = os.path.basename(model)
    if not os.path.exists(f"{w}/ours-{name}.jsonl"):
        continue
    o = np.array([json.loads(l)["embedding"] for l in open(f"{w}/ours-{name}.jsonl")], dtype=np.float64)
    res = []
    for dev in (gpu, "cpu") if with_cpu else (gpu,):
        p = SentenceTransformer(model, device=dev).encode(sents, batch_size=32).astype(np.float64)
        no, npy = np.linalg.norm(o, axis=1), np.linalg.norm(p, axis=1)
        cos = np.where((no < 1e-12) & (npy < 1e-12), 1.0, (o * p).sum(1) / np.maximum(no * npy, 1e-30))
        res.append(f"vs python {dev}: max abs {np.abs(o - p).max():.2e}, min cosine {cos.min():.8f}")
    print(f"{name:20s} {o.shape[0]}x{o.shape[1]}  " + " | ".join(res), flush=True)
PY
fi

if has encode; then
echo "== encode: all-MiniLM-L6-v2, $N sentences, batch 32, then 200 single sentences"
for dev in $DEV ${CPU_ENCODE:+cpu}; do
  timeout 300 "$W/encode" --model "$W/minilm" --input "$W/sentences.txt" --device $dev || echo "sbert-tui encode on $dev failed"
  timeout 300 $PY bench/encode_python.py --model "$W/minilm" --input "$W/sentences.txt" --device $dev --threads "$(nproc)" 2>/dev/null || echo "python encode on $dev failed"
done
echo "== encode, batch 256, $DEV"
timeout 300 "$W/encode" --model "$W/minilm" --input "$W/sentences.txt" --device $DEV --batch-size 256 --latency 1 || true
timeout 300 $PY bench/encode_python.py --model "$W/minilm" --input "$W/sentences.txt" --device $DEV --batch-size 256 --latency 1 2>/dev/null || true
fi

if has train; then
for b in 16 64; do
  echo "== training steps: cosine loss, batch $b, $STEPS steps, dropout on (then off, ours), $DEV"
  timeout 300 "$W/train" --model "$W/minilm" --data sample_data/stsb/sts-train.csv --steps "$STEPS" --batch-size $b --device $DEV | cut -c1-400 || echo "sbert-tui train failed"
  timeout 300 "$W/train" --model "$W/minilm" --data sample_data/stsb/sts-train.csv --steps "$STEPS" --batch-size $b --device $DEV --no-dropout | cut -c1-400 || echo "sbert-tui train failed"
  timeout 300 $PY bench/train_step_python.py --model "$W/minilm" --data sample_data/stsb/sts-train.csv --steps "$STEPS" --batch-size $b --device $DEV 2>/dev/null || echo "python train failed"
done
fi

if has finetune; then
echo "== a short fine-tune through the CLI on $DEV, loaded back by Python"
if timeout 300 "$W/sbert-tui" train --device $DEV --model tests/fixtures/tiny-bert-st --data sample_data/stsb/sts-train.csv \
     --loss cosent --epochs 1 --batch-size 16 --output "$W/tuned" > "$W/train.log" 2>&1; then
  tail -2 "$W/train.log"
  "$W/sbert-tui" encode --device $DEV --model "$W/tuned" --input "$W/parity.txt" > "$W/tuned.jsonl"
  $PY - "$W/tuned" "$W/parity.txt" "$W/tuned.jsonl" "$DEV" <<'PY'
import json, sys, numpy as np
from sentence_transformers import SentenceTransformer
o = np.array([json.loads(l)["embedding"] for l in open(sys.argv[3])])
p = SentenceTransformer(sys.argv[1], device=sys.argv[4]).encode(open(sys.argv[2], encoding="utf-8").read().split("\n")[:-1])
print(f"fine-tuned on {sys.argv[4]}, loaded by python: max abs {np.abs(o - p).max():.2e}")
PY
else
  echo "train failed:"; tail -5 "$W/train.log"
fi
fi
