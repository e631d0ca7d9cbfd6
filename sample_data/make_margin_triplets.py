"""Writes margin-triplets.tsv: the rows of triplets.csv with a teacher's margin as `label`.

The margin is cos(query, positive) - cos(query, negative) under all-MiniLM-L6-v2, a stand-in for
the cross-encoder a MarginMSE run would usually distil (none can be fetched offline here).

    python3 make_margin_triplets.py PATH/TO/all-MiniLM-L6-v2
"""

import csv
import sys

from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
with open("triplets.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
enc = lambda col: model.encode([r[col] for r in rows], normalize_embeddings=True)
q, p, n = enc("anchor"), enc("positive"), enc("negative")
with open("margin-triplets.tsv", "w", encoding="utf-8") as f:
    f.write("query\tpositive\tnegative\tlabel\n")
    for r, a, b, c in zip(rows, q, p, n):
        margin = float(a @ b - a @ c)
        f.write(f"{r['anchor']}\t{r['positive']}\t{r['negative']}\t{margin:.4f}\n")
