#!/usr/bin/env bash
# EDA augmentation against the plain run, in a low-data setting where augmentation is meant to
# help: all-MiniLM-L6-v2 fine-tuned on the 300 STS-B train pairs of sample_data/scored-pairs.csv
# (cosine loss, 1 epoch, batch 16, lr 2e-5, seed 42), with 0, 2 and 4 augmented copies of each
# row (EDA at its default rates, 0.1 each), then STS-B dev Spearman. Python's library has no EDA,
# so this compares our runs only. A few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh augment
SEEDS=${SEEDS:-42 7 1}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-28s %s\n' "run" "STS-B dev Spearman x100 (seeds: $SEEDS)"
# "0x3": no augmentation but 3 epochs, as many steps as 2 copies (is it the data or the steps?).
for copies in 0 0x3 2 4; do
  line=""
  for seed in $SEEDS; do
    extra=(--epochs 1)
    [ "$copies" = 0x3 ] && extra=(--epochs 3)
    case $copies in 0|0x3) ;; *) extra+=(--augment-copies "$copies") ;; esac
    rm -rf "$OUT/run"
    $BIN train --model "$MODEL" --data sample_data/scored-pairs.csv --loss cosine \
      --batch-size 16 --lr 2e-5 --seed "$seed" --device cpu --output "$OUT/run" "${extra[@]}" \
      >/dev/null 2>&1
    s=$(metric "$OUT/run")
    line="$line $s"
  done
  mean=$(python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(round(sum(v)/len(v), 2))" $line)
  name="EDA copies $copies"; [ "$copies" = 0x3 ] && name="no EDA, 3 epochs"
  printf '%-28s %s (mean %s)\n' "$name" "$line" "$mean"
done
