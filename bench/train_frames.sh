#!/usr/bin/env bash
# Frames while training: runs the explorer in tmux with all-MiniLM-L6-v2, starts a one-epoch
# cosine run on sample_data/scored-pairs.csv (300 STS-B pairs) from the training form, uses the
# explorer while it trains (adds a sentence, moves around), and reports from the app's frame
# trace (SBERT_TUI_TRACE) the longest gap between frames and the key-to-frame time during the run.
# Needs tmux.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release
OUT=$(mktemp -d)
SESSION=sbert-frames-$$
tmux new-session -d -s "$SESSION" -x 150 -y 45 "SBERT_TUI_TRACE=$OUT/trace.txt ./target/release/sbert-tui; sleep 5"
trap 'tmux kill-session -t "$SESSION" 2>/dev/null || true; rm -rf "$OUT"' EXIT
until grep -q "max 256 tokens" <(tmux capture-pane -p -t "$SESSION"); do sleep 0.5; done
tmux send-keys -t "$SESSION" t; sleep 1
for _ in $(seq 14); do tmux send-keys -t "$SESSION" j; done
tmux send-keys -t "$SESSION" Enter C-u; tmux send-keys -t "$SESSION" -l "$OUT/run"; tmux send-keys -t "$SESSION" Enter
sleep 0.5; tmux send-keys -t "$SESSION" s
until grep -q "training run 1" <(tmux capture-pane -p -t "$SESSION"); do sleep 0.2; done
tmux send-keys -t "$SESSION" t; sleep 0.5
tmux send-keys -t "$SESSION" a; tmux send-keys -t "$SESSION" -l "A guitarist plays on stage"; tmux send-keys -t "$SESSION" Enter
for _ in $(seq 10); do tmux send-keys -t "$SESSION" j; sleep 0.3; tmux send-keys -t "$SESSION" k; sleep 0.3; done
until grep -q "run 1 finished" <(tmux capture-pane -p -t "$SESSION"); do sleep 0.5; done
tmux send-keys -t "$SESSION" q
sleep 1
python3 - "$OUT/trace.txt" <<'PY'
import sys
rows = []
for line in open(sys.argv[1]).read().splitlines():
    f = line.split()
    if f[0] == "at_ms":
        rows.append(dict(zip(f[0::2], f[1::2])))
tr = [r for r in rows if r["training"] == "true"]
at = [float(r["at_ms"]) for r in tr]
gaps = sorted(b - a for a, b in zip(at, at[1:]))
keys = sorted(float(r["handled_ms"]) for r in tr if r["input"] == "true")
draw = sorted(float(r["frame_ms"]) for r in tr)
print(f"frames while training: {len(tr)} over {(at[-1] - at[0]) / 1000:.1f} s")
print(f"gap between frames: median {gaps[len(gaps) // 2]:.1f} ms, p99 {gaps[int(len(gaps) * 0.99)]:.1f} ms, max {gaps[-1]:.1f} ms (goal < 100 ms)")
print(f"key press to frame drawn: median {keys[len(keys) // 2]:.2f} ms, max {keys[-1]:.2f} ms over {len(keys)} key frames")
print(f"drawing a frame: median {draw[len(draw) // 2]:.2f} ms, max {draw[-1]:.2f} ms")
PY
