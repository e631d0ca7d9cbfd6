"""The Python library on the corpus benchmark (bench/corpus.sh), mirroring benches/corpus.rs:
embedding throughput (model.encode, batch 32), exact top-10 search of single queries
(util.semantic_search), paraphrase mining (util.paraphrase_mining_embeddings, the library's
defaults), community detection, and t-SNE of 10,000 points (scikit-learn, PCA init, 50 PCA
components first as ours). Prints one JSON object; peak memory after each stage.
"""
import argparse, json, resource, statistics, time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, util

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--input", required=True)
p.add_argument("--queries", type=int, default=200)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
p.add_argument("--map-points", type=int, default=10000)
a = p.parse_args()
torch.set_num_threads(a.threads)

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

texts = open(a.input, encoding="utf-8").read().split("\n")
if texts and texts[-1] == "":
    texts.pop()
out = {"engine": "sentence-transformers", "texts": len(texts), "threads": a.threads}
model = SentenceTransformer(a.model, device=a.device)
model.encode(texts[:32], batch_size=32)
t = time.perf_counter()
emb = model.encode(texts, batch_size=32, convert_to_tensor=True)
out["embed_s"] = time.perf_counter() - t
out["embed_per_s"] = len(texts) / out["embed_s"]
out["peak_mb_after_embed"] = peak_mb()

rng = np.random.default_rng(7)
qidx = rng.choice(len(texts), a.queries, replace=False)
lat = []
for i in qidx:
    t = time.perf_counter()
    q = model.encode([texts[i]], convert_to_tensor=True)
    util.semantic_search(q, emb, top_k=10)
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
pct = lambda q: lat[round((len(lat) - 1) * q)]
out["search_ms_p50"], out["search_ms_p95"] = pct(0.5), pct(0.95)
# The search alone (query already embedded), as ours reports it too.
qv = model.encode([texts[i] for i in qidx], convert_to_tensor=True)
lat = []
for k in range(len(qidx)):
    t = time.perf_counter()
    util.semantic_search(qv[k : k + 1], emb, top_k=10)
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
out["search_only_ms_p50"], out["search_only_ms_p95"] = pct(0.5), pct(0.95)
# The library's documented fast path: unit-length corpus and queries, dot_score (same hits for
# a cosine model), the corpus normalised once beforehand.
unit = torch.nn.functional.normalize(emb, dim=1)
qu = torch.nn.functional.normalize(qv, dim=1)
lat = []
for k in range(len(qidx)):
    t = time.perf_counter()
    util.semantic_search(qu[k : k + 1], unit, top_k=10, score_function=util.dot_score)
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
out["search_dot_ms_p50"], out["search_dot_ms_p95"] = pct(0.5), pct(0.95)
del unit

t = time.perf_counter()
pairs = util.paraphrase_mining_embeddings(emb)
out["mine_s"] = time.perf_counter() - t
out["mine_pairs"] = len(pairs)
out["peak_mb_after_mine"] = peak_mb()

t = time.perf_counter()
communities = util.community_detection(emb, threshold=0.75, min_community_size=10)
out["communities_s"] = time.perf_counter() - t
out["communities"] = len(communities)

try:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    sub = torch.nn.functional.normalize(emb[: a.map_points], dim=1).cpu().numpy()
    t = time.perf_counter()
    reduced = PCA(n_components=50, random_state=0).fit_transform(sub)
    TSNE(n_components=2, perplexity=30, init="pca", random_state=0, n_jobs=a.threads).fit_transform(reduced)
    out["tsne_s"] = time.perf_counter() - t
except ImportError as e:
    out["tsne_s"] = None
    out["tsne_error"] = str(e)
out["peak_mb"] = peak_mb()
print(json.dumps(out))
