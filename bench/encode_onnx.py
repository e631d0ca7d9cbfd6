"""Encoding throughput and single-sentence latency of ONNX Runtime: an fp32 export of the same
model and its dynamically quantised int8 export (what fastembed and the Python library's ONNX
backend run).

Mirrors bench/encode_python.py: same model folder, sentences, batch size and threads, model load
and export excluded, one warm-up batch. The transformer is exported with torch.onnx (opset 17,
dynamic batch and length); tokenisation (the model's fast tokenizer), mean pooling and the
Normalize module run in numpy around the session, so only mean-pooling models are supported.
int8: onnxruntime.quantization.quantize_dynamic (per-channel int8 weights, activations quantised
per call). Prints one JSON object per precision, with the mean cosine of its vectors to the fp32
export's, the lowest cosine to the Python library's own vectors (first 200 sentences) and, with
--stsb, the Spearman correlation of the pairs' cosines with the gold scores of an STS-B file.

    python bench/encode_onnx.py --model DIR --input FILE [--threads 2] [--out bench/out/onnx]
        [--stsb sample_data/stsb/sts-dev.csv]
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from sentence_transformers import SentenceTransformer

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--input", required=True)
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--stsb", help="an STS-B csv (sentence1, sentence2, score) to score each precision on")
p.add_argument("--latency", type=int, default=200)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--out", default="bench/out/onnx")
a = p.parse_args()

torch.set_num_threads(a.threads)
sentences = open(a.input, encoding="utf-8").read().split("\n")
if sentences and sentences[-1] == "":
    sentences.pop()

st = SentenceTransformer(a.model, device="cpu")
names = [type(m).__name__ for m in st]
pooling = st[1]
assert names[0] == "Transformer" and names[1] == "Pooling", names
assert pooling.get_config_dict().get("pooling_mode") == "mean", pooling.get_config_dict()
normalize = "Normalize" in names
tok = st.tokenizer
max_len = st.max_seq_length

os.makedirs(a.out, exist_ok=True)
fp32_path = os.path.join(a.out, "model.onnx")
int8_path = os.path.join(a.out, "model-int8.onnx")
if not os.path.exists(fp32_path):
    hf = st[0].auto_model.eval()
    enc = tok(["a warm up sentence", "another"], padding=True, return_tensors="pt")
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    args = tuple(enc[k] for k in inputs if k in enc)
    used = [k for k in inputs if k in enc]

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *xs):
            return self.m(**dict(zip(used, xs))).last_hidden_state

    torch.onnx.export(
        Wrap(hf), args, fp32_path, input_names=used, output_names=["hidden"],
        dynamic_axes={**{k: {0: "batch", 1: "seq"} for k in used}, "hidden": {0: "batch", 1: "seq"}},
        opset_version=17, dynamo=False,
    )
if not os.path.exists(int8_path):
    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = a.threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def encode(sess, batch):
    want = {i.name for i in sess.get_inputs()}
    enc = tok(batch, padding=True, truncation=True, max_length=max_len, return_tensors="np")
    feed = {k: v.astype(np.int64) for k, v in enc.items() if k in want}
    hidden = sess.run(None, feed)[0]
    mask = enc["attention_mask"][..., None].astype(np.float32)
    v = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
    if normalize:
        v = v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)
    return v


def encode_all(sess):
    # Length-sorted batches, as the Python library and ours do.
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    out = np.zeros((len(sentences), reference_dim), np.float32)
    for s in range(0, len(order), a.batch_size):
        idx = order[s : s + a.batch_size]
        out[idx] = encode(sess, [sentences[i] for i in idx])
    return out


reference = None
# The export checked against the library itself on the first sentences.
check = min(len(sentences), 200)
python_vectors = st.encode(sentences[:check], batch_size=a.batch_size)
reference_dim = python_vectors.shape[1]
for precision, path in [("fp32", fp32_path), ("int8", int8_path)]:
    sess = session(path)
    encode(sess, sentences[: a.batch_size])
    t = time.perf_counter()
    vectors = encode_all(sess)
    secs = time.perf_counter() - t
    if reference is None:
        reference = vectors
    unit = lambda x: x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    cos = float((unit(vectors) * unit(reference)).sum(1).mean())
    cos_py = float((unit(vectors[:check]) * unit(python_vectors)).sum(1).min())
    lat = []
    for s in sentences[: a.latency]:
        t = time.perf_counter()
        encode(sess, [s])
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    spearman = None
    if a.stsb:
        import csv
        from scipy.stats import spearmanr
        rows = list(csv.DictReader(open(a.stsb, encoding="utf-8")))
        all_vectors = {}
        for col in ("sentence1", "sentence2"):
            texts = [r[col] for r in rows]
            all_vectors[col] = unit(np.concatenate([encode(sess, texts[i : i + a.batch_size]) for i in range(0, len(texts), a.batch_size)]))
        cosines = (all_vectors["sentence1"] * all_vectors["sentence2"]).sum(1)
        spearman = float(spearmanr(cosines, [float(r["score"]) for r in rows]).statistic)
    print(json.dumps({
        "engine": f"onnxruntime-{precision}", "onnxruntime": ort.__version__,
        "sentences": len(sentences), "batch_size": a.batch_size,
        "encode_seconds": secs, "sentences_per_second": len(sentences) / secs,
        "latency_ms_median": statistics.median(lat),
        "latency_ms_p95": lat[round((len(lat) - 1) * 0.95)],
        "mean_cosine_to_fp32": cos,
        "min_cosine_to_python": cos_py, "threads": a.threads, "stsb_spearman": spearman,
    }), flush=True)
