#!/usr/bin/env bash
# Speed of the families with no real model reachable offline, next to Python
# sentence-transformers on this machine: Sentence-T5-base, ModernBERT-base and
# Qwen3-Embedding-0.6B sized models with random weights (bench/make_family_models.py; speed does
# not depend on the values), all-MiniLM-L6-v2's tokenizer, the first N STS-B train sentences.
# For each: our encode throughput and single-sentence latency in f32, bf16 and int8, the Python
# library's, the parity of our f32 vectors with its vectors on the first 64 sentences, and
# training steps/s next to the library's (the train benchmark: cosine loss, batch 16, dropout
# on, the same batches; STEPS of them, Qwen3 QWEN_STEPS).
#
#   bench/families.sh                   # THREADS=, N= (1000), FAMILIES="t5 modernbert qwen3",
#                                       # STEPS= (10), QWEN_STEPS= (4), TRAIN=0 to skip training
#   MINILM=<all-MiniLM-L6-v2 folder>    # for its tokenizer (default: the model `info` finds)
# Writes the models under bench/out/families/ (2.7 GB, made once) and the table to
# bench/out/results-families.md.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
N=${N:-1000}
FAMILIES=${FAMILIES:-t5 modernbert qwen3}
STEPS=${STEPS:-10}
QWEN_STEPS=${QWEN_STEPS:-4}
TRAIN=${TRAIN:-1}
OUT=bench/out
RESULTS=${RESULTS:-$OUT/results-families.md}
mkdir -p "$OUT/families"
if [ ! -x .venv-ref/bin/python ]; then
  echo "setting up the Python reference in .venv-ref (a few GB, once)..." >&2
  python3 -m venv .venv-ref
  .venv-ref/bin/pip install -q "sentence-transformers[train]"
fi
PY=.venv-ref/bin/python
cargo build -q --release
bench_bin() { cargo bench --no-run --bench "$1" 2>&1 | sed -n 's/.*Executable .* (\(.*\))$/\1/p' | tail -1; }
ENCODE_BIN=$(bench_bin encode)
TRAIN_BIN=$(bench_bin train)
SBERT=./target/release/sbert-tui
MINILM=${MINILM:-$($SBERT info | awk '$1 == "folder" { $1 = ""; sub(/^ +/, ""); print }')}
for f in $FAMILIES; do
  [ -f "$OUT/families/$f/model.safetensors" ] || $PY bench/make_family_models.py "$MINILM" "$OUT/families" "$f" 2>/dev/null
done
$PY - "$N" > "$OUT/sentences.txt" <<'PY'
import csv, sys
for i, row in enumerate(csv.DictReader(open("sample_data/stsb/sts-train.csv", encoding="utf-8"))):
    if i >= int(sys.argv[1]):
        break
    print(row["sentence1"].replace("\n", " "))
PY
head -64 "$OUT/sentences.txt" > "$OUT/sentences-64.txt"
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
for f in $FAMILIES; do
  M=$OUT/families/$f
  for p in f32 bf16 int8; do
    echo "encode: sbert-tui $f $p..." >&2
    "$ENCODE_BIN" --model "$M" --input "$OUT/sentences.txt" --latency 50 --precision $p > "$OUT/family-$f-$p.json"
  done
  echo "encode: sentence-transformers $f..." >&2
  $PY bench/encode_python.py --model "$M" --input "$OUT/sentences.txt" --latency 50 --threads "$THREADS" > "$OUT/family-$f-python.json" 2>/dev/null
  echo "parity: $f..." >&2
  $SBERT encode --model "$M" --input "$OUT/sentences-64.txt" > "$OUT/family-$f-64.jsonl"
  $PY tests/fixtures/generate/compare_embeddings.py "$M" "$OUT/sentences-64.txt" "$OUT/family-$f-64.jsonl" > "$OUT/family-$f-parity.txt" 2>/dev/null
  rm -f "$OUT/family-$f-train-rust.json" "$OUT/family-$f-train-python.json"
  if [ "$TRAIN" = 1 ]; then
    steps=$STEPS
    [ "$f" = qwen3 ] && steps=$QWEN_STEPS
    echo "training: sbert-tui $f ($steps steps)..." >&2
    "$TRAIN_BIN" --model "$M" --data sample_data/stsb/sts-train.csv --steps "$steps" > "$OUT/family-$f-train-rust.json"
    echo "training: sentence-transformers $f..." >&2
    $PY bench/train_step_python.py --model "$M" --data sample_data/stsb/sts-train.csv --steps "$steps" --threads "$THREADS" > "$OUT/family-$f-train-python.json" 2>/dev/null
  fi
done
$PY - "$OUT" "$THREADS" "$FAMILIES" <<'PY' | tee "$RESULTS"
import json, platform, sys
out, threads, families = sys.argv[1], sys.argv[2], sys.argv[3].split()
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
import sentence_transformers, torch
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"Machine: {cpu}, {threads} threads for each engine; sentence-transformers "
      f"{sentence_transformers.__version__}, torch {torch.__version__}. Random-weight models of the "
      "real shapes, all-MiniLM-L6-v2's tokenizer.\n")
names = {"t5": "Sentence-T5-base (T5 encoder + Dense)", "modernbert": "ModernBERT-base",
         "qwen3": "Qwen3-Embedding-0.6B"}
print("| model | python (sent/s) | ours f32 | ratio | ours bf16 | ours int8 | latency python / ours f32 / int8 (ms) | f32 parity (64 sentences) | training steps/s python / ours (ratio) |")
print("|---|---|---|---|---|---|---|---|---|")
for f in families:
    py = last(f"{out}/family-{f}-python.json")
    r = {p: last(f"{out}/family-{f}-{p}.json") for p in ("f32", "bf16", "int8")}
    s = lambda j: j["sentences_per_second"]
    parity = open(f"{out}/family-{f}-parity.txt").read().strip().split(": ", 1)[-1]
    try:
        tp, tr = (last(f"{out}/family-{f}-train-{e}.json") for e in ("python", "rust"))
        sp = lambda j: j["steps_per_second"]
        train = f"{sp(tp):.3f} / {sp(tr):.3f} ({sp(tr) / sp(tp):.2f}x, {tr['steps']} steps)"
    except (OSError, ValueError, KeyError, IndexError):
        train = "not run"
    print(f"| {names.get(f, f)} | {s(py):.1f} | {s(r['f32']):.1f} | {s(r['f32']) / s(py):.2f}x | "
          f"{s(r['bf16']):.1f} ({s(r['bf16']) / s(py):.2f}x) | {s(r['int8']):.1f} ({s(r['int8']) / s(py):.2f}x) | "
          f"{py['latency_ms_median']:.1f} / {r['f32']['latency_ms_median']:.1f} / {r['int8']['latency_ms_median']:.1f} | {parity} | {train} |")
print(f"\n{r['f32']['sentences']} sentences, batch 32; latency: median of the first 50 alone; training: the train benchmark (cosine loss, batch 16, dropout on).")
PY
