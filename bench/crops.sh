#!/usr/bin/env bash
# Contriever-style crops against the plain unsupervised run on the same unlabelled text:
# all-MiniLM-L6-v2 trained 1 epoch (batch 32, lr 2e-5, seed 42) on 2,000 "documents" (each the
# two sentences of an STS-B train pair joined, so a crop is a span of a short paragraph):
#   - plain: unsupervised SimCSE (the document against itself under two dropout masks);
#   - crops: MNR on two independent random crops of each document (--crops 0.1,0.5).
# Scored on STS-B dev (Spearman) and on a retrieval set built from the STS-B dev pairs scored 4
# or more (each first sentence a query, its second sentence the relevant one among all second
# sentences: NDCG@10). The Python library has no crop transform: our runs only. About 10 minutes
# on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh crops
python3 - sample_data/stsb/sts-train.csv $DEV "$OUT/docs.txt" "$OUT/retrieval.tsv" <<'PY'
import csv, sys
train = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
with open(sys.argv[3], "w", encoding="utf-8") as f:
    for r in train[:2000]:
        f.write(f"{r['sentence1'].strip()} {r['sentence2'].strip()}\n")
dev = [r for r in csv.DictReader(open(sys.argv[2], encoding="utf-8")) if float(r["score"]) >= 4.0]
with open(sys.argv[4], "w", encoding="utf-8") as f:
    f.write("anchor\tpositive\n")
    for r in dev:
        f.write(f"{r['sentence1']}\t{r['sentence2']}\n")
PY
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-34s %16s %18s\n' run "STS-B dev x100" "retrieval NDCG@10"
printf '%-34s %16s %18s\n' "base model" "$(metric "$MODEL" $DEV spearman_cosine)" "$(metric "$MODEL" "$OUT/retrieval.tsv" ndcg@10)"
for run in simcse crops; do
  rm -rf "$OUT/$run"
  case $run in
    simcse) extra=(--loss simcse) ;;
    crops) extra=(--loss mnr --crops 0.1,0.5) ;;
  esac
  $BIN train --model "$MODEL" --data "$OUT/docs.txt" "${extra[@]}" --epochs 1 --batch-size 32 \
    --lr 2e-5 --seed 42 --device cpu --output "$OUT/$run" >/dev/null 2>&1
  printf '%-34s %16s %18s\n' "$run (${extra[*]})" "$(metric "$OUT/$run" $DEV spearman_cosine)" "$(metric "$OUT/$run" "$OUT/retrieval.tsv" ndcg@10)"
done
