#!/usr/bin/env bash
# Encoding benchmark: sbert-tui next to Python sentence-transformers on the same machine, the same
# threads, the same sentences, in one run. Prints absolute numbers and the ratio.
#
#   bench/encode.sh                 # all-MiniLM-L6-v2, first 5,000 STS-B train sentences, batch 32
#   THREADS=1 N=1000 bench/encode.sh
#
# Needs: cargo, python3 (a venv with sentence-transformers is made in .venv-ref on first use).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-$(nproc)}
N=${N:-5000}
BATCH=${BATCH:-32}
OUT=bench/out
mkdir -p "$OUT"

if [ ! -x .venv-ref/bin/python ]; then
  echo "setting up the Python reference in .venv-ref (a few GB, once)..." >&2
  python3 -m venv .venv-ref
  .venv-ref/bin/pip install -q "sentence-transformers[train]"
fi

cargo build -q --release
MODEL=${MODEL:-$(./target/release/sbert-tui info | awk '$1 == "folder" { $1 = ""; sub(/^ +/, ""); print }')}

.venv-ref/bin/python - "$N" > "$OUT/sentences.txt" <<'PY'
import csv, sys
rows = csv.DictReader(open("sample_data/stsb/sts-train.csv", encoding="utf-8"))
for i, row in enumerate(rows):
    if i >= int(sys.argv[1]):
        break
    print(row["sentence1"].replace("\n", " "))
PY

export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
echo "model: $MODEL" >&2
echo "running sbert-tui..." >&2
cargo bench -q --bench encode -- --model "$MODEL" --input "$OUT/sentences.txt" --batch-size "$BATCH" > "$OUT/encode-rust.json"
echo "running sentence-transformers..." >&2
.venv-ref/bin/python bench/encode_python.py --model "$MODEL" --input "$OUT/sentences.txt" \
  --batch-size "$BATCH" --threads "$THREADS" > "$OUT/encode-python.json"

.venv-ref/bin/python - "$OUT/encode-rust.json" "$OUT/encode-python.json" <<'PY'
import json, platform, subprocess, sys
r = json.load(open(sys.argv[1])); p = json.load(open(sys.argv[2]))
import sentence_transformers, torch
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
print(f"machine: {cpu}, {r['threads']} threads (torch {p['threads']}); {rustc}; "
      f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}")
print(f"{r['sentences']} sentences, batch {r['batch_size']}")
print(f"{'metric':<34}{'sbert-tui':>12}{'python':>12}{'ratio':>8}")
rows = [
    ("encode throughput (sentences/s)", "sentences_per_second", True),
    ("single-sentence latency median (ms)", "latency_ms_median", False),
    ("single-sentence latency p95 (ms)", "latency_ms_p95", False),
]
for name, key, higher in rows:
    ratio = r[key] / p[key]
    print(f"{name:<34}{r[key]:>12.1f}{p[key]:>12.1f}{ratio:>7.2f}x")
print("(ratio = sbert-tui / python: above 1 is better for throughput, below 1 is better for latency)")
PY
