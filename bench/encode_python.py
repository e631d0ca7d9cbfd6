"""Encoding throughput and single-sentence latency of Python sentence-transformers.

Mirrors benches/encode.rs: same model folder, same sentences, same batch size, model load
excluded, one warm-up batch. Prints one JSON object.
"""
import argparse
import json
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--input", required=True)
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--latency", type=int, default=200)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
a = p.parse_args()

torch.set_num_threads(a.threads)
# Lines split on "\n" only, as benches/encode.rs reads them (splitlines also splits on U+2028, ...).
sentences = open(a.input, encoding="utf-8").read().split("\n")
if sentences and sentences[-1] == "":
    sentences.pop()
model = SentenceTransformer(a.model, device=a.device)
model.encode(sentences[: a.batch_size], batch_size=a.batch_size)

t = time.perf_counter()
vectors = model.encode(sentences, batch_size=a.batch_size)
secs = time.perf_counter() - t
assert len(vectors) == len(sentences)

lat = []
for s in sentences[: a.latency]:
    t = time.perf_counter()
    model.encode([s], batch_size=1)
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()


def pct(q):
    return lat[round((len(lat) - 1) * q)]


print(json.dumps({
    "engine": "sentence-transformers", "device": str(model.device),
    "sentences": len(sentences),
    "batch_size": a.batch_size,
    "encode_seconds": secs,
    "sentences_per_second": len(sentences) / secs,
    "latency_ms_median": statistics.median(lat),
    "latency_ms_p95": pct(0.95),
    "threads": torch.get_num_threads(),
}))
