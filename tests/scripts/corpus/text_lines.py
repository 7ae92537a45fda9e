"""A data-preparation pass over text files read line by line, the way such scripts
read a corpus: `for line in f:` inside `with open(...)` after `next(f)` took the
header (the body strips and rebinds the line), and `for i, raw in enumerate(open(p)):`
over a JSON-lines file. Both get commits in their first and only pass (a text
file's tell() is off while it is iterated: dart finds the loop's line in the file)."""

import hashlib
import json
import random
import time
from collections import Counter

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def make_inputs(rng):
    with open("corpus.tsv", "w", encoding="utf-8") as f:
        f.write("id\tlabel\ttext\n")
        for i in range(40):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
            f.write(f"{i}\t{i % 3}\t{text} é{i}\n")
    with open("events.jsonl", "w", encoding="utf-8") as f:
        for i in range(30):
            f.write(json.dumps({"id": i, "value": rng.random(), "tag": rng.choice(WORDS)}) + "\n")


def main():
    rng = random.Random(11)
    make_inputs(rng)
    vocab, by_label = Counter(), Counter()
    with open("corpus.tsv", encoding="utf-8") as f:
        header = next(f).rstrip("\n").split("\t")
        for line in f:
            line = line.strip()
            row = dict(zip(header, line.split("\t")))
            vocab.update(row["text"].split())
            by_label[row["label"]] += 1
            print(f"row {row['id']} words {len(vocab)} label {row['label']}")
            time.sleep(0.02)
    total = 0.0
    for i, raw in enumerate(open("events.jsonl", encoding="utf-8")):
        event = json.loads(raw)
        total += event["value"] * (1 + rng.random())
        print(f"event {i} {event['tag']} total {total:.9f}")
        time.sleep(0.02)
    with open("vocab.txt", "w") as out:
        for word, count in sorted(vocab.items()):
            out.write(f"{word} {count}\n")
    state = [sorted(vocab.items()), sorted(by_label.items()), round(total, 9), rng.random()]
    print("sha256", hashlib.sha256(json.dumps(state).encode()).hexdigest())


main()
