#!/usr/bin/env bash
# Speed, side by side with Python sentence-transformers on this machine, the same threads, the
# same sentences and batches, in one run:
#   - encode throughput: all-MiniLM-L6-v2, the first N (5,000) STS-B train sentences, batch 32;
#   - single-sentence latency: median and p95 over the first 200 of them;
#   - training steps/second: cosine loss, batch 16, the same 60 batches (file order), dropout on;
#   - peak memory (RSS) of each process;
#   - --precision bf16 and int8 next to f32: encode throughput, latency and STS-B dev Spearman,
#     and the kernels the CPU chose for them;
#   - ONNX Runtime beside them (bench/encode_onnx.py): an fp32 export of the same model and its
#     dynamically quantised int8 export, encode throughput, latency and STS-B dev Spearman
#     (ONNX=0 to skip; needs `onnx` and `onnxruntime` in .venv-ref, installed on first use).
# Prints a table with both numbers and the ratio, and writes it to bench/out/results.md.
# ROUNDS=n runs the f32 encode and the training steps of both engines n times, alternating
# (sbert-tui, Python, sbert-tui, ...), and keeps each engine's best: on a shared machine whose
# cores change speed from one second to the next, a single run of either can land in a slow
# spell (all-mpnet-base-v2's encode on a 2-core Xeon VM: 57.8 and 103 sentences/s, an hour apart).
#
#   bench/run.sh                  # THREADS=, N=, STEPS=, ROUNDS= to change the defaults
#   MODEL=path/to/all-mpnet-base-v2 N=1000 STEPS=20 bench/run.sh    # another model
#   BIN=dir PY=python3 DEVICE=cpu MODEL=... bench/run.sh
#       # prebuilt binaries (dir holds sbert-tui, encode, train; no cargo needed), another
#       # Python with sentence-transformers, and an explicit device (a CUDA build's CPU path)
# Results go to bench/out/results.md (RESULTS= to name another file).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
N=${N:-5000}
STEPS=${STEPS:-60}
OUT=bench/out
RESULTS=${RESULTS:-$OUT/results.md}
ENCODE_GOAL=${ENCODE_GOAL:-1.5}
TRAIN_GOAL=${TRAIN_GOAL:-2}
ROUNDS=${ROUNDS:-1}
mkdir -p "$OUT"
if [ -z "${PY:-}" ] && [ ! -x .venv-ref/bin/python ]; then
  echo "setting up the Python reference in .venv-ref (a few GB, once)..." >&2
  python3 -m venv .venv-ref
  .venv-ref/bin/pip install -q "sentence-transformers[train]"
fi
PY=${PY:-.venv-ref/bin/python}
if [ -n "${BIN:-}" ]; then
  SBERT=$BIN/sbert-tui ENCODE_BIN=$BIN/encode TRAIN_BIN=$BIN/train
else
  cargo build -q --release
  # The bench executables themselves, so that memory is measured on them and not on cargo.
  bench_bin() { cargo bench --no-run --bench "$1" 2>&1 | sed -n 's/.*Executable .* (\(.*\))$/\1/p' | tail -1; }
  SBERT=./target/release/sbert-tui ENCODE_BIN=$(bench_bin encode) TRAIN_BIN=$(bench_bin train)
fi
DEV_ARGS=(); [ -n "${DEVICE:-}" ] && DEV_ARGS=(--device "$DEVICE")
sbert() { "$SBERT" "$1" "${DEV_ARGS[@]}" "${@:2}"; }
MODEL=${MODEL:-$(sbert info | awk '$1 == "folder" { $1 = ""; sub(/^ +/, ""); print }')}
$PY - "$N" > "$OUT/sentences.txt" <<'PY'
import csv, sys
for i, row in enumerate(csv.DictReader(open("sample_data/stsb/sts-train.csv", encoding="utf-8"))):
    if i >= int(sys.argv[1]):
        break
    print(row["sentence1"].replace("\n", " "))
PY
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
# Peak RSS in KiB into $1 (GNU time, else Python's getrusage of the child).
if [ -x /usr/bin/time ]; then
  timed() { /usr/bin/time -f "%M" -o "$1" "${@:2}"; }
else
  timed() {
    $PY -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
sys.exit(r)' "$@"
  }
fi
rm -f "$OUT"/encode-rust-round*.json "$OUT"/encode-python-round*.json "$OUT"/train-step-*-round*.json
for r in $(seq "$ROUNDS"); do
  echo "encode: sbert-tui (round $r of $ROUNDS)..." >&2
  timed "$OUT/rss-encode-rust" "$ENCODE_BIN" "${DEV_ARGS[@]}" --model "$MODEL" --input "$OUT/sentences.txt" > "$OUT/encode-rust-round$r.json"
  echo "encode: sentence-transformers (round $r of $ROUNDS)..." >&2
  timed "$OUT/rss-encode-python" $PY bench/encode_python.py --model "$MODEL" --input "$OUT/sentences.txt" --threads "$THREADS" > "$OUT/encode-python-round$r.json" 2>/dev/null
done
STSB_DEV=sample_data/stsb/sts-dev.csv
for p in bf16 int8; do
  echo "encode: sbert-tui $p..." >&2
  "$ENCODE_BIN" "${DEV_ARGS[@]}" --model "$MODEL" --input "$OUT/sentences.txt" --precision $p > "$OUT/encode-rust-$p.json"
done
KERNELS="f32: $(sbert info --model "$MODEL" | sed -n 's/^f32 kernels *//p'); $(for p in bf16 int8; do sbert info --model "$MODEL" --precision $p | sed -n 's/.*(\(.* kernel: .*\))$/\1/p'; done | paste -sd ';' | sed 's/;/; /g')"
echo "quality: STS-B dev Spearman for each precision..." >&2
for p in f32 bf16 int8; do
  sbert eval --model "$MODEL" --data "$STSB_DEV" --precision $p | awk '$1 == "spearman_cosine" { print $2 }' > "$OUT/stsb-$p"
done
ONNX=${ONNX:-1}
rm -f "$OUT/encode-onnx.json"
if [ "$ONNX" = 1 ]; then
  $PY -c "import onnx, onnxruntime" 2>/dev/null || $PY -m pip install -q onnx onnxruntime
  echo "encode: ONNX Runtime fp32 and int8..." >&2
  $PY bench/encode_onnx.py --model "$MODEL" --input "$OUT/sentences.txt" --threads "$THREADS" --out "$OUT/onnx-$(basename "$MODEL")" --stsb "$STSB_DEV" > "$OUT/encode-onnx.json" 2> "$OUT/encode-onnx.err" ||
    { echo "ONNX Runtime failed (left out of the table):" >&2; tail -3 "$OUT/encode-onnx.err" >&2; : > "$OUT/encode-onnx.json"; }
fi
for r in $(seq "$ROUNDS"); do
  echo "training steps: sbert-tui (round $r of $ROUNDS)..." >&2
  timed "$OUT/rss-train-rust" "$TRAIN_BIN" "${DEV_ARGS[@]}" --model "$MODEL" --data sample_data/stsb/sts-train.csv --steps "$STEPS" > "$OUT/train-step-rust-round$r.json"
  echo "training steps: sentence-transformers (round $r of $ROUNDS)..." >&2
  timed "$OUT/rss-train-python" $PY bench/train_step_python.py --model "$MODEL" --data sample_data/stsb/sts-train.csv --steps "$STEPS" --threads "$THREADS" > "$OUT/train-step-python-round$r.json" 2>/dev/null
done
$PY - "$OUT" "$THREADS" "$MODEL" "$ENCODE_GOAL" "$TRAIN_GOAL" "$KERNELS" <<'PY' | tee "$RESULTS"
import glob, json, os, platform, subprocess, sys
out, threads, model, encode_goal, train_goal, kernels = sys.argv[1:7]
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
runs = lambda name: [last(f) for f in sorted(glob.glob(f"{out}/{name}-round*.json"))]
def best_encode(name):
    # The fastest round's throughput, and the lowest latencies of any round.
    rs = runs(name)
    return dict(max(rs, key=lambda j: j["sentences_per_second"]),
                latency_ms_median=min(j["latency_ms_median"] for j in rs),
                latency_ms_p95=min(j["latency_ms_p95"] for j in rs))
er, ep = best_encode("encode-rust"), best_encode("encode-python")
best_train = lambda name: max(runs(name), key=lambda j: j["steps_per_second"])
tr, tp = best_train("train-step-rust"), best_train("train-step-python")
rounds = len(runs("encode-rust"))
rss = lambda n: int(open(f"{out}/rss-{n}").read().strip().splitlines()[-1]) / 1024
import sentence_transformers, torch
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
simd = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
try:
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
except FileNotFoundError:
    rustc = "prebuilt binaries"
print(f"Model: {os.path.basename(os.path.normpath(model))}. Machine: {cpu} ({simd}), {threads} threads "
      f"for each engine; {rustc}; sentence-transformers {sentence_transformers.__version__}, "
      f"torch {torch.__version__}"
      + (f"; f32 encode and training: the best of {rounds} alternating rounds per engine" if rounds > 1 else "")
      + ".\n")
print("| measure | sbert-tui | python | ratio | goal |")
print("|---|---|---|---|---|")
def row(name, r, p, fmt, goal):
    print(f"| {name} | {fmt.format(r)} | {fmt.format(p)} | {r / p:.2f}x | {goal} |")
row(f"encode throughput, {er['sentences']} sentences, batch 32 (sentences/s)", er["sentences_per_second"], ep["sentences_per_second"], "{:.1f}", f">= {encode_goal}x")
row("single-sentence latency, median (ms)", er["latency_ms_median"], ep["latency_ms_median"], "{:.2f}", "<= 0.5x")
row("single-sentence latency, p95 (ms)", er["latency_ms_p95"], ep["latency_ms_p95"], "{:.2f}", "")
row(f"training steps/s, cosine loss, batch 16, {tr['steps']} steps", tr["steps_per_second"], tp["steps_per_second"], "{:.2f}", f">= {train_goal}x")
row("peak RSS while encoding (MiB)", rss("encode-rust"), rss("encode-python"), "{:.0f}", "")
row("peak RSS while training (MiB)", rss("train-rust"), rss("train-python"), "{:.0f}", "<= 1.0x")
low = {p: last(f"{out}/encode-rust-{p}.json") for p in ("bf16", "int8")}
stsb = {p: float(open(f"{out}/stsb-{p}").read()) for p in ("f32", "bf16", "int8")}
print(f"\nKernels chosen on this CPU: {kernels}.\n")
onnx = {}
if os.path.exists(f"{out}/encode-onnx.json") and os.path.getsize(f"{out}/encode-onnx.json"):
    onnx = {j["engine"]: j for j in map(json.loads, open(f"{out}/encode-onnx.json").read().split("\n")[:-1])}
print("| precision | encode (sentences/s) | vs our f32 | latency, median (ms) | STS-B dev Spearman x 100 | ONNX Runtime (sentences/s) | ratio | ONNX Spearman x 100 |")
print("|---|---|---|---|---|---|---|---|")
for p, ours, ort_name in [("f32", er, "onnxruntime-fp32"), ("bf16", low["bf16"], None), ("int8", low["int8"], "onnxruntime-int8")]:
    o = onnx.get(ort_name) if ort_name else None
    ort_cols = (f"{o['sentences_per_second']:.1f} | {ours['sentences_per_second'] / o['sentences_per_second']:.2f}x | "
                + (f"{100 * o['stsb_spearman']:.2f}" if o.get("stsb_spearman") is not None else "")) if o else " | | "
    print(f"| {p} | {ours['sentences_per_second']:.1f} | {ours['sentences_per_second'] / er['sentences_per_second']:.2f}x | "
          f"{ours['latency_ms_median']:.2f} | {100 * stsb[p]:.2f} | {ort_cols} |")
if onnx:
    f32, i8 = onnx["onnxruntime-fp32"], onnx["onnxruntime-int8"]
    print(f"\nONNX Runtime {f32['onnxruntime']}: latency, median {f32['latency_ms_median']:.2f} ms (fp32), "
          f"{i8['latency_ms_median']:.2f} ms (int8). Export check: lowest cosine to the Python library's vectors "
          f"{f32['min_cosine_to_python']:.7f} (fp32), {i8['min_cosine_to_python']:.4f} (int8); int8 mean cosine to fp32 "
          f"{i8['mean_cosine_to_fp32']:.4f}.")
PY
