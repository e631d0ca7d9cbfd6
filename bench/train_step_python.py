"""Training steps per second of Python sentence-transformers on the same fixed batches as
benches/train.rs: the first steps x 16 rows of a scored-pairs file in file order, CosineSimilarityLoss,
dropout on (train mode), AdamW (weight decay 0.01, not on biases / LayerNorm), linear schedule with
10% warm-up, grad-norm clipping 1.0, one warm-up step excluded. Prints one JSON object.
"""
import argparse
import csv
import json
import time

import torch
from sentence_transformers import SentenceTransformer, losses
from transformers import get_linear_schedule_with_warmup

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--data", required=True)
p.add_argument("--steps", type=int, default=60)
p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(42)

rows = list(csv.DictReader(open(a.data, encoding="utf-8")))
scale = 5.0 if max(float(r["score"]) for r in rows) > 1 else 1.0
batches = [rows[i:i + a.batch_size] for i in range(0, (a.steps + 1) * a.batch_size, a.batch_size)]
model = SentenceTransformer(a.model, device=a.device)
model.train()
loss_fn = losses.CosineSimilarityLoss(model)
no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
params = list(loss_fn.named_parameters())
groups = [
    {"params": [p for n, p in params if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
    {"params": [p for n, p in params if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
]
opt = torch.optim.AdamW(groups, lr=2e-5)
sched = get_linear_schedule_with_warmup(opt, len(batches) // 10, len(batches))


def step(batch):
    to_dev = lambda f: {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in f.items()}
    a_feat = to_dev(model.tokenize([r["sentence1"] for r in batch]))
    b_feat = to_dev(model.tokenize([r["sentence2"] for r in batch]))
    labels = torch.tensor([float(r["score"]) / scale for r in batch], device=model.device)
    loss = loss_fn([a_feat, b_feat], labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(loss_fn.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad()


step(batches[0])
if model.device.type == "cuda":
    torch.cuda.synchronize()
t = time.perf_counter()
for b in batches[1:]:
    step(b)
if model.device.type == "cuda":
    torch.cuda.synchronize()
secs = time.perf_counter() - t
print(json.dumps({"engine": "sentence-transformers", "device": str(model.device), "steps": len(batches) - 1, "batch_size": a.batch_size,
                  "seconds": secs, "steps_per_second": (len(batches) - 1) / secs, "threads": torch.get_num_threads()}))
