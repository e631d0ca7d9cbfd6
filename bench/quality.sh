#!/usr/bin/env bash
# Fine-tuning quality and speed: all-MiniLM-L6-v2 on the STS-B train split, 1 epoch, cosine loss,
# mean pooling, batch 16, lr 2e-5, 10% warm-up; STS-B dev Spearman before and after, and
# training steps/second, for sbert-tui and Python sentence-transformers on the same machine and
# threads, in one run. Prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
OUT=bench/out
mkdir -p "$OUT"
if [ ! -x .venv-ref/bin/python ]; then
  python3 -m venv .venv-ref && .venv-ref/bin/pip install -q "sentence-transformers[train]"
fi
cargo build -q --release
MODEL=${MODEL:-$(./target/release/sbert-tui info | awk '$1 == "folder" { $1 = ""; sub(/^ +/, ""); print }')}
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
rm -rf "$OUT/train-rust" "$OUT/train-python"
echo "training with sbert-tui..." >&2
/usr/bin/time -v ./target/release/sbert-tui train --model "$MODEL" --data sample_data/stsb/sts-train.csv \
  --eval sample_data/stsb/sts-dev.csv --loss cosine --pooling mean --epochs 1 --batch-size 16 \
  --lr 2e-5 --warmup-ratio 0.1 --device cpu --output "$OUT/train-rust" 2> "$OUT/train-rust.time"
echo "training with sentence-transformers..." >&2
/usr/bin/time -v .venv-ref/bin/python bench/train_python.py --model "$MODEL" --train sample_data/stsb/sts-train.csv \
  --dev sample_data/stsb/sts-dev.csv --output "$OUT/train-python" --threads "$THREADS" \
  > "$OUT/train-python.json" 2> "$OUT/train-python.time"
.venv-ref/bin/python - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
events = [json.loads(l) for l in open(f"{out}/train-rust/metrics.jsonl")]
evals = [e for e in events if e["event"] == "eval"]
steps = [e for e in events if e["event"] == "step"]
r = {"spearman_before": evals[0]["metrics"]["spearman_cosine"], "spearman_after": evals[-1]["metrics"]["spearman_cosine"],
     "steps": steps[-1]["step"], "train_seconds": steps[-1]["elapsed_seconds"]}
r["steps_per_second"] = r["steps"] / r["train_seconds"]
p = json.loads(open(f"{out}/train-python.json").read().strip().splitlines()[-1])
def rss(f):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f).read())
    return int(m.group(1)) / 1024 if m else float("nan")
r["rss"], p["rss"] = rss(f"{out}/train-rust.time"), rss(f"{out}/train-python.time")
print(f"{'metric':<36}{'sbert-tui':>12}{'python':>12}")
for name, key, fmt in [("STS-B dev Spearman before", "spearman_before", "{:.4f}"),
                       ("STS-B dev Spearman after 1 epoch", "spearman_after", "{:.4f}"),
                       ("training steps", "steps", "{}"),
                       ("training seconds (no eval)", "train_seconds", "{:.1f}"),
                       ("steps/second", "steps_per_second", "{:.2f}"),
                       ("peak RSS, whole process (MiB)", "rss", "{:.0f}")]:
    print(f"{name:<36}{fmt.format(r[key]):>12}{fmt.format(p[key]):>12}")
print(f"steps/second ratio (sbert-tui / python): {r['steps_per_second'] / p['steps_per_second']:.2f}x")
PY
