"""Writes train.csv and dev.csv: scored sentence pairs (0-5) that teach negation.

Out of the box, all-MiniLM-L6-v2 scores "A man is playing a guitar." / "A man is not playing a
guitar." about as similar as a true paraphrase. Each row pairs a sentence with one of:
  - a paraphrase (another word for the subject, or the simple present): 5.0
  - its negation ("is not" / "does not"):                                 1.0
  - the same subject doing something else:                               1.5
  - another subject doing something else:                                0.0
The dev set uses subjects and actions that never occur in train, so it measures what was learned,
not what was memorised. Deterministic (seeded); run `python3 generate.py` in this folder.
Made for sbert-tui; released under CC0 1.0 (no rights reserved).
"""
import csv
import random

# (subject, a synonym for it)
TRAIN_SUBJECTS = [
    ("A man", "A guy"), ("A woman", "A lady"), ("A boy", "A young boy"), ("A girl", "A young girl"),
    ("A chef", "A cook"), ("A child", "A kid"), ("An old man", "An elderly man"),
    ("A student", "A pupil"), ("A doctor", "A physician"), ("A police officer", "A cop"),
    ("A dog", "A puppy"), ("A farmer", "A grower"),
]
DEV_SUBJECTS = [
    ("A teenager", "A teen"), ("A mother", "A mom"), ("A soldier", "A trooper"),
    ("A worker", "A labourer"), ("A father", "A dad"), ("A cat", "A kitten"),
]
# (progressive, simple present third person, base form)
TRAIN_ACTIONS = [
    ("playing a guitar", "plays a guitar", "play a guitar"),
    ("riding a horse", "rides a horse", "ride a horse"),
    ("cutting an onion", "cuts an onion", "cut an onion"),
    ("reading a book", "reads a book", "read a book"),
    ("swimming in a pool", "swims in a pool", "swim in a pool"),
    ("driving a car", "drives a car", "drive a car"),
    ("eating an apple", "eats an apple", "eat an apple"),
    ("painting a wall", "paints a wall", "paint a wall"),
    ("climbing a tree", "climbs a tree", "climb a tree"),
    ("washing the dishes", "washes the dishes", "wash the dishes"),
    ("running on the beach", "runs on the beach", "run on the beach"),
    ("singing a song", "sings a song", "sing a song"),
]
DEV_ACTIONS = [
    ("playing the piano", "plays the piano", "play the piano"),
    ("riding a bicycle", "rides a bicycle", "ride a bicycle"),
    ("slicing a tomato", "slices a tomato", "slice a tomato"),
    ("writing a letter", "writes a letter", "write a letter"),
    ("dancing on a stage", "dances on a stage", "dance on a stage"),
    ("fixing a bike", "fixes a bike", "fix a bike"),
    ("drinking coffee", "drinks coffee", "drink coffee"),
    ("walking in the park", "walks in the park", "walk in the park"),
]


def rows(subjects, actions, rng, per_sentence):
    out = []
    for subj, syn in subjects:
        for i, (ing, pres, base) in enumerate(actions):
            s = f"{subj} is {ing}."
            kinds = [
                (f"{syn} is {ing}." if rng.random() < 0.5 else f"{subj} {pres}.", 5.0),
                (f"{subj} is not {ing}." if rng.random() < 0.5 else f"{subj} does not {base}.", 1.0),
            ]
            other = actions[(i + rng.randrange(1, len(actions))) % len(actions)]
            kinds.append((f"{subj} is {other[0]}.", 1.5))
            osubj = rng.choice([x for x in subjects if x[0] != subj])[0]
            kinds.append((f"{osubj} is {other[0]}.", 0.0))
            # Every sentence gets its paraphrase and its negation; the others by chance.
            chosen = kinds[:2] + rng.sample(kinds[2:], per_sentence - 2)
            for t, score in chosen:
                pair = [s, t] if rng.random() < 0.5 else [t, s]
                out.append(pair + [score])
    rng.shuffle(out)
    return out


def write(path, data):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["sentence1", "sentence2", "score"])
        for a, b, score in data:
            w.writerow([a, b, f"{score:.1f}"])


if __name__ == "__main__":
    rng = random.Random(7)
    write("train.csv", rows(TRAIN_SUBJECTS, TRAIN_ACTIONS, rng, 3))
    write("dev.csv", rows(DEV_SUBJECTS, DEV_ACTIONS, rng, 4))
