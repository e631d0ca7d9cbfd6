#!/usr/bin/env bash
# Explorer responsiveness with all-MiniLM-L6-v2: launch to first frame, adding a sentence to 30
# (key to updated matrix and map), frame rendering with 100 sentences. Prints JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release
MODEL=${MODEL:-$(./target/release/sbert-tui info | awk '$1 == "folder" { $1 = ""; sub(/^ +/, ""); print }')}
export RAYON_NUM_THREADS=${THREADS:-$(nproc)}
cargo bench -q --bench tui -- --model "$MODEL" --sentences sample_data/stsb/sts-dev.csv
