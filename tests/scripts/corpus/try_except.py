"""Cleaning and aggregating a stream of noisy records: try/except/else/finally
inside the loop (bad records are skipped with `continue`), the epoch loop
inside a try block, and numerical errors turned into exceptions by np.errstate."""

import hashlib
import random
import time

import numpy as np

PAUSE = 0.015


def make_records(n, rnd):
    records = []
    for i in range(n):
        kind = rnd.random()
        if kind < 0.15:
            records.append(f"id{i},n/a")
        elif kind < 0.25:
            records.append(f"id{i},{rnd.uniform(800, 900):.3f}")  # overflows exp()
        else:
            records.append(f"id{i},{rnd.gauss(0, 2):.3f}")
    return records


def parse(record):
    name, raw = record.split(",")
    return name, float(raw)


def score(value):
    with np.errstate(over="raise"):
        return float(np.exp(np.float64(value)) / (1.0 + np.exp(np.float64(value))))


def clean(records, epoch):
    kept, skipped, seen = [], 0, 0
    for i, record in enumerate(records):
        try:
            name, value = parse(record)
            s = score(value + 0.1 * epoch)
        except ValueError as exc:
            skipped += 1
            print(f"epoch {epoch} record {i} skipped: {exc}")
            continue
        except FloatingPointError:
            skipped += 1
            print(f"epoch {epoch} record {i} overflow")
            continue
        else:
            kept.append((name, s))
        finally:
            seen += 1
        print(f"epoch {epoch} record {i} {name} score {s:.10f}")
        time.sleep(PAUSE)
    return kept, skipped, seen


def main():
    rnd = random.Random(17)
    records = make_records(24, rnd)
    summary = []
    try:
        for epoch in range(3):
            kept, skipped, seen = clean(records, epoch)
            mean = sum(s for _, s in kept) / len(kept)
            summary.append((len(kept), skipped, seen, mean))
            print(f"epoch {epoch} kept {len(kept)} skipped {skipped} seen {seen} mean {mean:.10f}")
            records = records[1:] + records[:1]
            if epoch == 2:
                raise StopIteration("done")
    except StopIteration as stop:
        print(f"stopped: {stop}")
    finally:
        print(f"epochs summarised: {len(summary)}")
    print("sha256", hashlib.sha256(repr((summary, rnd.random())).encode()).hexdigest())


main()
