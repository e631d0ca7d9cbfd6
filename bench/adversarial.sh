#!/usr/bin/env bash
# Adversarial training (FGM on the word embeddings) against the plain run: all-MiniLM-L6-v2
# fine-tuned on STS-B train (cosine loss, 1 epoch, batch 16, lr 2e-5, seed 42), then STS-B dev
# Spearman on the clean dev set and on a noisy copy (seeded typos: in each word of 4 letters or
# more, with probability 0.15, two neighbouring letters swapped or one letter dropped). Python's
# library has no FGM, so this compares our runs only. RUNS picks the runs (default: plain fgm
# pgd). About 30 minutes on 2 cores (PGD's three perturbed passes make it the slowest).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh adversarial
EPS=${EPS:-1.0}
NOISY=$OUT/sts-dev-typos.csv
python3 - "$DEV" "$NOISY" <<'PY'
import csv, random, sys
rng = random.Random(0)
def typo(word):
    if len(word) < 4 or not word.isalpha() or rng.random() >= 0.15:
        return word
    i = rng.randrange(len(word) - 1)
    if rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i + 1:]
rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
with open(sys.argv[2], "w", encoding="utf-8", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["sentence1", "sentence2", "score"])
    w.writeheader()
    for r in rows:
        w.writerow({"sentence1": " ".join(map(typo, r["sentence1"].split())),
                    "sentence2": " ".join(map(typo, r["sentence2"].split())),
                    "score": r["score"]})
PY
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-34s %12s %12s %10s\n' run "dev x100" "noisy x100" seconds
printf '%-34s %12s %12s %10s\n' "base model" "$(metric "$MODEL" $DEV)" "$(metric "$MODEL" $NOISY)" -
for run in ${RUNS:-plain fgm pgd}; do
  extra=()
  [ $run = fgm ] && extra=(--adversarial fgm --adv-epsilon "$EPS")
  [ $run = pgd ] && extra=(--adversarial pgd --adv-epsilon "$EPS" --pgd-steps 3 --pgd-alpha 0.3)
  rm -rf "$OUT/$run"
  start=$(date +%s.%N)
  $BIN train --model "$MODEL" --data sample_data/stsb/sts-train.csv --loss cosine --epochs 1 \
    --batch-size 16 --lr 2e-5 --seed 42 --device cpu --output "$OUT/$run" "${extra[@]}" \
    >/dev/null 2>&1
  secs=$(python3 -c "import time; print(round(time.time() - $start))")
  printf '%-34s %12s %12s %10s\n' "$run${extra[*]:+ (${extra[*]})}" \
    "$(metric "$OUT/$run" $DEV)" "$(metric "$OUT/$run" $NOISY)" "$secs"
done
