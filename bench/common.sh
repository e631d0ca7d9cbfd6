# Sourced by the fine-tuning benchmarks (`source bench/common.sh NAME` from the repository root):
# the release build, the model (MODEL, else the default model's folder), threads (THREADS, else
# every core) for both engines, OUT=bench/out/NAME, and `metric` to read a model's score.
THREADS=${THREADS:-$(nproc)}
OUT=bench/out/$1
mkdir -p "$OUT"
cargo build -q --release
BIN=./target/release/sbert-tui
MODEL=${MODEL:-$($BIN info | awk '$1 == "folder" { $1 = ""; sub(/^ +/, ""); print }')}
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
DEV=sample_data/stsb/sts-dev.csv

# metric MODEL [DATA] [KEY]: `eval`'s metric whose name ends with KEY (default spearman_cosine)
# on DATA (default STS-B dev), x 100, two decimals.
metric() {
  $BIN eval --model "$1" --data "${2:-$DEV}" --format json 2>/dev/null |
    python3 -c "import json,sys; m=json.load(sys.stdin)['metrics']; k=next(k for k in m if k.endswith('${3:-spearman_cosine}')); print(round(100 * m[k], 2))"
}
