#!/usr/bin/env bash
# Distillation next to the Python library: all-mpnet-base-v2 (768) taught to all-MiniLM-L6-v2
# (384 + a trained Dense projection to 768), MSE on the teacher's vectors of 4,000 unlabelled
# STS-B train sentences, 1 epoch, batch 32, lr 1e-4, seed 42. Python makes the same run from the
# script `train --export-python` writes (same rows, loss, projection, hyper-parameters), so the two
# differ only in the trainer. Both are scored on STS-B dev (Spearman) and on how near the
# student's dev vectors are to the teacher's (mean cosine). Needs .venv-ref (sentence-transformers)
# and the two model folders: MODEL (student) and TEACHER. About 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh distillation
PY=${PYTHON_REF:-.venv-ref/bin/python}
TEACHER=${TEACHER:?set TEACHER to an all-mpnet-base-v2 folder}
python3 - sample_data/stsb/sts-train.csv "$OUT/sentences.txt" <<'PY'
import csv, sys
seen = []
for r in csv.DictReader(open(sys.argv[1], encoding="utf-8")):
    for s in (r["sentence1"], r["sentence2"]):
        if s not in seen:
            seen.append(s)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write("\n".join(seen[:4000]) + "\n")
PY
# Mean cosine of a model's STS-B dev vectors with the teacher's (the distillation target).
python3 -c 'import csv,sys; rows=list(csv.DictReader(open(sys.argv[1]))); print("\n".join(sorted({s for r in rows for s in (r["sentence1"], r["sentence2"])})))' \
  $DEV > "$OUT/dev-sentences.txt"
$BIN encode --model "$TEACHER" -i "$OUT/dev-sentences.txt" >"$OUT/teacher.jsonl" 2>/dev/null
nearness() {
  $BIN encode --model "$1" -i "$OUT/dev-sentences.txt" >"$OUT/student.jsonl" 2>/dev/null
  $PY -c 'import json,numpy as np,sys
load=lambda p: np.array([json.loads(l)["embedding"] for l in open(p)])
a=load(sys.argv[1]); b=load(sys.argv[2])
if a.shape != b.shape: print("-"); sys.exit()
a/=np.linalg.norm(a,axis=1,keepdims=True); b/=np.linalg.norm(b,axis=1,keepdims=True)
print(round(float((a*b).sum(1).mean()),4))' "$OUT/student.jsonl" "$OUT/teacher.jsonl"
}
ARGS=(--model "$MODEL" --teacher "$TEACHER" --loss mse --data "$OUT/sentences.txt" --epochs 1
      --batch-size 32 --lr 1e-4 --seed 42 --device cpu)
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
rm -rf "$OUT/ours" "$OUT/python" "$OUT/python-checkpoints"
start=$(date +%s.%N)
$BIN train "${ARGS[@]}" --output "$OUT/ours" >/dev/null 2>&1
ours_s=$(python3 -c "import time; print(round(time.time() - $start))")
$BIN train "${ARGS[@]}" --output "$OUT/python" --export-python "$OUT/run.py" >/dev/null
start=$(date +%s.%N)
CUDA_VISIBLE_DEVICES= $PY "$OUT/run.py" >"$OUT/python.log" 2>&1
py_s=$(python3 -c "import time; print(round(time.time() - $start))")
printf '%-40s %14s %22s %8s\n' run "STS-B dev x100" "cosine with teacher" seconds
printf '%-40s %14s %22s %8s\n' "teacher (all-mpnet-base-v2)" "$(metric "$TEACHER")" 1 -
printf '%-40s %14s %22s %8s\n' "student before (all-MiniLM-L6-v2)" "$(metric "$MODEL")" "- (384 wide)" -
printf '%-40s %14s %22s %8s\n' "sbert-tui distilled" "$(metric "$OUT/ours")" "$(nearness "$OUT/ours")" "$ours_s"
printf '%-40s %14s %22s %8s\n' "Python 6.2 distilled (exported script)" "$(metric "$OUT/python")" "$(nearness "$OUT/python")" "$py_s"
