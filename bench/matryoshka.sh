#!/usr/bin/env bash
# Matryoshka: all-MiniLM-L6-v2 fine-tuned on STS-B train (CoSENT, 1 epoch, batch 16, lr 2e-5) with
# and without --matryoshka-dims 384,128,64,32, then STS-B dev Spearman (cosine) with the vectors
# cut to each width; the same two runs with Python sentence-transformers' MatryoshkaLoss in the
# same invocation. Prints a table. About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
DIMS=${DIMS:-384,128,64,32}
OUT=bench/out/matryoshka
mkdir -p "$OUT"
cargo build -q --release
BIN=./target/release/sbert-tui
MODEL=${MODEL:-$($BIN info | awk '$1 == "folder" { $1 = ""; sub(/^ +/, ""); print }')}
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
TRAIN=sample_data/stsb/sts-train.csv DEV=sample_data/stsb/sts-dev.csv
rm -rf "$OUT/plain" "$OUT/matryoshka" "$OUT/rust.jsonl"
for run in plain matryoshka; do
  extra=()
  [ "$run" = matryoshka ] && extra=(--matryoshka-dims "$DIMS")
  echo "training $run with sbert-tui..." >&2
  $BIN train --model "$MODEL" --data $TRAIN --loss cosent --epochs 1 --batch-size 16 --lr 2e-5 \
    --device cpu --output "$OUT/$run" "${extra[@]}" 2>/dev/null
done
for run in base plain matryoshka; do
  m=$MODEL; [ "$run" != base ] && m=$OUT/$run
  line="{\"engine\": \"sbert-tui\", \"run\": \"$run\""
  for d in ${DIMS//,/ }; do
    s=$($BIN eval --model "$m" --data $DEV --truncate-dim "$d" --format json 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["spearman_cosine"])')
    line="$line, \"$d\": $s"
  done
  echo "$line}" >> "$OUT/rust.jsonl"
done
echo "training with sentence-transformers..." >&2
.venv-ref/bin/python bench/matryoshka_python.py --model "$MODEL" --train $TRAIN --dev $DEV \
  --output "$OUT/python" --dims "$DIMS" --threads "$THREADS" 2>/dev/null > "$OUT/python.jsonl"
python3 - "$OUT" "$DIMS" <<'PY'
import json, sys
out, dims = sys.argv[1], sys.argv[2].split(",")
rows = [json.loads(l) for f in ("rust", "python") for l in open(f"{out}/{f}.jsonl") if l.startswith('{"')]
print(f"CPU: {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
print(f"{'STS-B dev Spearman x100':<34}" + "".join(f"{'dim ' + d:>10}" for d in dims))
for r in rows:
    print(f"{r['engine'] + ' ' + r['run']:<34}" + "".join(f"{100 * r[d]:>10.2f}" for d in dims))
PY
