"""MatryoshkaLoss next to the plain loss with Python sentence-transformers, the same settings as
bench/matryoshka.sh gives sbert-tui: CoSENTLoss, 1 epoch, batch 16, lr 2e-5, 10% warm-up, seed 42.
Prints one JSON line per run: STS-B dev Spearman (cosine) at each width.
"""
import argparse
import csv
import json

import torch
from datasets import Dataset
from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                   SentenceTransformerTrainingArguments, losses)
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--train", required=True)
p.add_argument("--dev", required=True)
p.add_argument("--output", required=True)
p.add_argument("--dims", default="384,128,64,32")
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
dims = [int(d) for d in a.dims.split(",")]
rows = lambda path: list(csv.DictReader(open(path, encoding="utf-8")))
train, dev = rows(a.train), rows(a.dev)
train_ds = Dataset.from_dict({
    "sentence1": [r["sentence1"] for r in train],
    "sentence2": [r["sentence2"] for r in train],
    "score": [float(r["score"]) / 5.0 for r in train],
})


def spearman(model, d):
    ev = EmbeddingSimilarityEvaluator([r["sentence1"] for r in dev], [r["sentence2"] for r in dev],
                                      [float(r["score"]) / 5.0 for r in dev], truncate_dim=d)
    return ev(model)[ev.primary_metric]


base = SentenceTransformer(a.model, device="cpu")
print(json.dumps({"engine": "python", "run": "base", **{str(d): spearman(base, d) for d in dims}}))
for run in ["plain", "matryoshka"]:
    model = SentenceTransformer(a.model, device="cpu")
    loss = losses.CoSENTLoss(model)
    if run == "matryoshka":
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=dims)
    args = SentenceTransformerTrainingArguments(
        output_dir=f"{a.output}/{run}", num_train_epochs=1, per_device_train_batch_size=16,
        learning_rate=2e-5, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0, seed=42,
        lr_scheduler_type="linear", save_strategy="no", eval_strategy="no", report_to=[],
        use_cpu=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds, loss=loss).train()
    print(json.dumps({"engine": "python", "run": run, **{str(d): spearman(model, d) for d in dims}}),
          flush=True)
