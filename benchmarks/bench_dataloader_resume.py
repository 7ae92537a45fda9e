"""Resuming a DataLoader in the middle of an epoch: time to re-create its iterator
at batch N from a commit (dart advances the sampler, loading nothing it skips)
against loading the N batches again (what a resume that replays the loader pays),
over a map-style dataset whose ``__getitem__`` sleeps 1 ms. Both measured in
this run; the replay is timed over ``--replay`` batches and scaled to N.

    python benchmarks/bench_dataloader_resume.py [--batches 10000] [--replay 1000] [--repeats 5]

Target (issue 9): re-creation time proportional to the indices skipped, not to
the time of loading the batches (ratio to the replay far below 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset

from dart.capture import dataloader, pickler


class Slow(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        time.sleep(0.001)
        return index


def at_batch(loader, batches):
    """An iterator of ``loader`` after ``batches`` batches, got without loading
    them (its sampler advanced), as the program's own iterator would be."""
    it = iter(loader)
    for _ in range(batches):
        it._sampler_iter.__next__()
    it._num_yielded = batches
    return it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--replay", type=int, default=1_000, help="batches actually loaded to time the replay")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dataloader.install()
    torch.manual_seed(0)
    loader = DataLoader(Slow(2 * args.batches), batch_size=1, shuffle=True)

    # Reference: the batch the program would take next.
    it = at_batch(loader, args.batches)
    saved = pickler.dumps(it)
    expected = next(it)

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        again = pickler.loads(saved[0], [b.raw() for b in saved[1]])
        first = next(again)
        times.append(time.perf_counter() - t0)
        assert torch.equal(first, expected), "the re-created iterator is not where the commit was"
    recreate = statistics.median(times)

    replay_it = iter(loader)
    t0 = time.perf_counter()
    for _ in range(args.replay):
        next(replay_it)
    replay = (time.perf_counter() - t0) * args.batches / args.replay

    load = os.getloadavg()[0]
    print(f"DataLoader resume at batch {args.batches} (batch_size 1, __getitem__ sleeps 1 ms), load {load:.1f}")
    print(f"  re-create from the commit (median of {args.repeats}), incl. the next batch: {recreate * 1e3:9.1f} ms")
    print(f"  replay: load the {args.batches} batches again (timed over {args.replay}):  {replay * 1e3:9.1f} ms")
    print(f"  ratio re-create / replay: {recreate / replay:.4f}")


if __name__ == "__main__":
    main()
