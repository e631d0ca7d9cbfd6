"""Fine-tune with Python sentence-transformers, the same settings as `sbert-tui train`:
cosine loss (CosineSimilarityLoss), scores / 5, 1 epoch, batch 16, lr 2e-5, linear schedule
with 10% warm-up, AdamW weight decay 0.01 (not on biases / LayerNorm), max grad norm 1.0,
seed 42, dropout on. Evaluates STS-B dev Spearman (cosine) before and after. Prints JSON.
"""
import argparse
import csv
import json
import time

import torch
from datasets import Dataset
from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                   SentenceTransformerTrainingArguments, losses)
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from transformers import TrainerCallback

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--train", required=True)
p.add_argument("--dev", required=True)
p.add_argument("--output", required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--lr", type=float, default=2e-5)
a = p.parse_args()
torch.set_num_threads(a.threads)


def rows(path):
    return list(csv.DictReader(open(path, encoding="utf-8")))


train = rows(a.train)
dev = rows(a.dev)
train_ds = Dataset.from_dict({
    "sentence1": [r["sentence1"] for r in train],
    "sentence2": [r["sentence2"] for r in train],
    "score": [float(r["score"]) / 5.0 for r in train],
})
evaluator = EmbeddingSimilarityEvaluator(
    [r["sentence1"] for r in dev], [r["sentence2"] for r in dev], [float(r["score"]) / 5.0 for r in dev],
    name="sts-dev")
model = SentenceTransformer(a.model, device="cpu")
before = evaluator(model)["sts-dev_spearman_cosine"]


class Timer(TrainerCallback):
    def on_train_begin(self, *args, **kw):
        self.t = time.perf_counter()

    def on_train_end(self, *args, **kw):
        self.secs = time.perf_counter() - self.t


timer = Timer()
args = SentenceTransformerTrainingArguments(
    output_dir=a.output, num_train_epochs=a.epochs, per_device_train_batch_size=a.batch_size,
    learning_rate=a.lr, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0, seed=42,
    lr_scheduler_type="linear", save_strategy="no", eval_strategy="no", logging_steps=50,
    report_to=[], use_cpu=True, dataloader_drop_last=False)
trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds,
                                     loss=losses.CosineSimilarityLoss(model), callbacks=[timer])
out = trainer.train()
after = evaluator(model)["sts-dev_spearman_cosine"]
steps = out.global_step
print(json.dumps({
    "engine": "sentence-transformers", "steps": steps, "train_seconds": timer.secs,
    "steps_per_second": steps / timer.secs, "spearman_before": before, "spearman_after": after,
    "threads": torch.get_num_threads()}))
