#!/usr/bin/env bash
# Corpus scale, side by side with Python sentence-transformers on this machine (same threads,
# same texts, one run): embedding throughput on N (100,000) texts, exact top-10 search of single
# queries (p50 / p95), paraphrase mining and community detection of the whole corpus, t-SNE of
# 10,000 points, peak memory; ours also reports reopening from the vector cache, UMAP, and the
# HNSW index (build time, latency, recall@10 against exact search, speed-up).
#
# The corpus: every distinct sentence of sample_data/stsb (train + dev) and sample_data/nli.csv
# (premises and hypotheses), about 15,000, then "A B" joins of two of them picked by a seeded
# generator until N distinct texts (so the extra texts are about twice as long).
#
#   bench/corpus.sh              # N=, THREADS=, MODEL= to change; results in bench/out/corpus.md
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
N=${N:-100000}
OUT=bench/out
RESULTS=${RESULTS:-$OUT/corpus.md}
mkdir -p "$OUT"
[ -x .venv-ref/bin/python ] || { echo "needs the Python reference in .venv-ref (see bench/run.sh)" >&2; exit 1; }
cargo build -q --release
BIN=$(cargo bench --no-run --bench corpus 2>&1 | sed -n 's/.*Executable .* (\(.*\))$/\1/p' | tail -1)
MODEL=${MODEL:-$(./target/release/sbert-tui info | awk '$1 == "folder" { $1 = ""; sub(/^ +/, ""); print }')}
CORPUS=$OUT/corpus-$N.txt
.venv-ref/bin/python - "$N" > "$CORPUS" <<'PY'
import csv, random, sys
n = int(sys.argv[1])
seen, texts = set(), []
def add(t):
    t = " ".join(t.split())
    if t and t not in seen:
        seen.add(t); texts.append(t)
for f in ["sample_data/stsb/sts-train.csv", "sample_data/stsb/sts-dev.csv"]:
    for r in csv.DictReader(open(f, encoding="utf-8")):
        add(r["sentence1"]); add(r["sentence2"])
for r in csv.DictReader(open("sample_data/nli.csv", encoding="utf-8")):
    add(r["premise"]); add(r["hypothesis"])
base = list(texts)
rng = random.Random(13)
while len(texts) < n:
    add(rng.choice(base) + " " + rng.choice(base))
print("\n".join(texts[:n]))
PY
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
echo "corpus: sbert-tui..." >&2
/usr/bin/time -f "%M" -o "$OUT/rss-corpus-rust" "$BIN" --model "$MODEL" --input "$CORPUS" > "$OUT/corpus-rust.json"
echo "corpus: sentence-transformers..." >&2
/usr/bin/time -f "%M" -o "$OUT/rss-corpus-python" .venv-ref/bin/python bench/corpus_python.py --model "$MODEL" --input "$CORPUS" --threads "$THREADS" > "$OUT/corpus-python.json" 2>/dev/null
.venv-ref/bin/python - "$OUT" "$THREADS" "$MODEL" <<'PY' | tee "$RESULTS"
import json, sys
out, threads, model = sys.argv[1:4]
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
r, p = last(f"{out}/corpus-rust.json"), last(f"{out}/corpus-python.json")
rss = lambda n: int(open(f"{out}/rss-corpus-{n}").read().strip().splitlines()[-1]) / 1024
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
import sentence_transformers, torch
print(f"# Corpus benchmark: {r['texts']:,} texts, {model.rstrip('/').split('/')[-1]}, {threads} threads")
print(f"\nCPU: {cpu}; sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}\n")
print("| measure | sbert-tui | python | ratio (python / ours, higher is better for us) |")
print("|---|---|---|---|")
def row(name, a, b, fmt="{:.1f}", inverse=False):
    ra = fmt.format(a) if a is not None else "–"
    rb = fmt.format(b) if b is not None else "–"
    ratio = "–"
    if a and b:
        ratio = f"{(a / b if inverse else b / a):.2f}x"
    print(f"| {name} | {ra} | {rb} | {ratio} |")
row("embedding throughput (texts/s)", r["embed_per_s"], p["embed_per_s"], inverse=True)
row("search, query embedded + top-10, p50 (ms)", r["search_ms_p50"], p["search_ms_p50"], "{:.2f}")
row("search, query embedded + top-10, p95 (ms)", r["search_ms_p95"], p["search_ms_p95"], "{:.2f}")
row("search alone (exact top-10), p50 (ms)", r["search_only_ms_p50"], p["search_only_ms_p50"], "{:.2f}")
row("search alone (exact top-10), p95 (ms)", r["search_only_ms_p95"], p["search_only_ms_p95"], "{:.2f}")
print(f"| search alone, f32 scan only (same hits), p50 / p95 (ms) | {r['search_f32_ms_p50']:.2f} / {r['search_f32_ms_p95']:.2f} | – | – |")
if "search_dot_ms_p50" in p:
    print(f"| search alone, python normalised once + dot_score, p50 / p95 (ms) | {r['search_only_ms_p50']:.2f} / {r['search_only_ms_p95']:.2f} | {p['search_dot_ms_p50']:.2f} / {p['search_dot_ms_p95']:.2f} | {p['search_dot_ms_p50'] / r['search_only_ms_p50']:.2f}x (p50) |")
row(f"paraphrase mining of all {r['texts']:,} (s)", r["mine_s"], p["mine_s"])
row("community detection (0.75, min 10) (s)", r["communities_s"], p["communities_s"])
row(f"t-SNE of {r.get('map_points', 10000):,} points (s)", r.get("tsne_s"), p.get("tsne_s"))
row(f"UMAP of {r.get('map_points', 10000):,} points (s)", r.get("umap_s"), None)
row("peak memory after embedding (MB)", r["peak_mb_after_embed"], p["peak_mb_after_embed"], "{:.0f}")
row("peak memory, whole run (MB)", rss("rust"), rss("python"), "{:.0f}")
print(f"\nOurs only: vectors {r['vectors_mb']:.0f} MB; reopening the corpus from the vector cache {r['reopen_from_cache_s']:.2f} s;")
print(f"HNSW (m 16, ef_construction 200, ef_search 64): build {r['ann_build_s']:.1f} s, query p50 {r['ann_ms_p50']:.3f} ms / p95 {r['ann_ms_p95']:.3f} ms,")
print(f"recall@10 against exact search {r['ann_recall_at_10']:.4f}, {r['ann_speedup_p50']:.1f}x faster than exact search (p50).")
print(f"Mined pairs: ours {r['mine_pairs']:,}, python {p['mine_pairs']:,}; communities: ours {r['communities']}, python {p['communities']}.")
PY
