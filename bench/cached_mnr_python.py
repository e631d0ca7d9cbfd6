"""MultipleNegativesRankingLoss or CachedMultipleNegativesRankingLoss with Python
sentence-transformers, the settings bench/cached_mnr.sh gives sbert-tui: 1 epoch, lr 2e-5, 10%
warm-up, seed 42. Prints one JSON line: STS-B dev Spearman (cosine) after training.
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
p.add_argument("--loss", choices=["mnr", "cached"], required=True)
p.add_argument("--batch-size", type=int, required=True)
p.add_argument("--mini-batch-size", type=int, default=32)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
# The pairs file is plain TSV: quotes are text, not quoting (as sbert-tui reads it).
pairs = list(csv.DictReader(open(a.train, encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
dev = list(csv.DictReader(open(a.dev, encoding="utf-8")))
train_ds = Dataset.from_dict({"anchor": [r["anchor"] for r in pairs],
                              "positive": [r["positive"] for r in pairs]})
model = SentenceTransformer(a.model, device="cpu")
if a.loss == "cached":
    loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=a.mini_batch_size)
else:
    loss = losses.MultipleNegativesRankingLoss(model)
args = SentenceTransformerTrainingArguments(
    output_dir="/tmp/cached_mnr_python", num_train_epochs=1,
    per_device_train_batch_size=a.batch_size, learning_rate=2e-5, warmup_ratio=0.1,
    weight_decay=0.01, max_grad_norm=1.0, seed=42, lr_scheduler_type="linear",
    save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True)
SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds, loss=loss).train()
ev = EmbeddingSimilarityEvaluator([r["sentence1"] for r in dev], [r["sentence2"] for r in dev],
                                  [float(r["score"]) / 5.0 for r in dev])
print(json.dumps({"spearman": ev(model)[ev.primary_metric]}), flush=True)
