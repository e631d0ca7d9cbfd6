#!/usr/bin/env bash
# CachedMNR (GradCache) against plain MNR: all-MiniLM-L6-v2 fine-tuned for 1 epoch on the STS-B
# train pairs scored 4 or more (anchor, positive), lr 2e-5, seed 42, then STS-B dev Spearman. Each
# run is its own process under /usr/bin/time: peak resident memory (RSS) and wall time. The same
# runs with Python sentence-transformers (MultipleNegativesRankingLoss and
# CachedMultipleNegativesRankingLoss) in the same invocation. Prints a table. About 20 minutes on
# 2 cores.
#
# Our --mini-batch-size counts rows (anchor and positive embedded together); Python's counts
# sentences per column. MINI=16 rows is 32 sentences per forward pass, as Python's 32.
# SKIP_RUST=1 runs the Python half only, adding to the last results.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${BATCH:-256}
MINI=${MINI:-16}
source bench/common.sh cached_mnr
PAIRS=$OUT/pairs.tsv
python3 - sample_data/stsb/sts-train.csv "$PAIRS" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1], encoding="utf-8")) if float(r["score"]) >= 4.0]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write("anchor\tpositive\n")
    for r in rows:
        f.write(f"{r['sentence1']}\t{r['sentence2']}\n")
print(f"{len(rows)} pairs", file=sys.stderr)
PY
[ -n "${SKIP_RUST:-}" ] || : > "$OUT/results.jsonl"
measure() { # name, command...: one JSON line with peak RSS (MiB), seconds and the dev Spearman
  local name=$1; shift
  /usr/bin/time -f "%M %e" -o "$OUT/$name.time" "$@" > "$OUT/$name.log" 2>&1
  read -r kb secs < <(tail -1 "$OUT/$name.time")
  echo "{\"run\": \"$name\", \"rss_mib\": $((kb / 1024)), \"seconds\": $secs}" >> "$OUT/results.jsonl"
}
for run in "mnr 16" "mnr $BATCH" "cached-mnr $BATCH"; do
  [ -n "${SKIP_RUST:-}" ] && break
  set -- $run
  name="sbert-tui $1 batch $2"
  rm -rf "$OUT/rust-$1-$2"
  echo "training $name..." >&2
  measure "$name" $BIN train --model "$MODEL" --data "$PAIRS" --loss "$1" --batch-size "$2" \
    --mini-batch-size "$MINI" --epochs 1 --lr 2e-5 --device cpu --output "$OUT/rust-$1-$2"
  s=$($BIN eval --model "$OUT/rust-$1-$2" --data $DEV --format json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["spearman_cosine"])')
  echo "{\"run\": \"$name\", \"spearman\": $s}" >> "$OUT/results.jsonl"
done
for run in "mnr 16" "mnr $BATCH" "cached $BATCH"; do
  set -- $run
  name="python $1 batch $2"
  echo "training $name..." >&2
  measure "$name" .venv-ref/bin/python bench/cached_mnr_python.py --model "$MODEL" --train "$PAIRS" \
    --dev $DEV --loss "$1" --batch-size "$2" --mini-batch-size $((2 * MINI)) --threads "$THREADS"
  grep '^{' "$OUT/$name.log" | sed "s/^{/{\"run\": \"$name\", /" >> "$OUT/results.jsonl"
done
python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r.pop("run"), {}).update(r)
print(f"CPU: {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
print(f"{'run':<34}{'peak RSS MiB':>14}{'seconds':>10}{'STS-B dev x100':>16}")
for name, r in runs.items():
    print(f"{name:<34}{r['rss_mib']:>14}{r['seconds']:>10.0f}{100 * r['spearman']:>16.2f}")
PY
