"""One long epoch over a DataLoader (the large-data case): every commit falls in
the first and only pass over the loader.

Usage: one_epoch_loader.py [NUM_WORKERS] [shuffle|replacement|distributed|stream]
(stream: an iterable-style dataset, which has no sampler).
"""

import argparse
import hashlib
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler


class SyntheticRegression(Dataset):
    """Deterministic samples computed from the index (safe in worker processes)."""

    def __init__(self, n, dim):
        self.n, self.dim = n, dim
        g = torch.Generator().manual_seed(3)
        self.weight = torch.randn(dim, generator=g)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        x = torch.sin(torch.arange(self.dim, dtype=torch.float32) * (index + 1) * 0.37)
        return x, (x @ self.weight).unsqueeze(0), index


class SyntheticStream(IterableDataset):
    """The same samples as an iterable-style dataset, in a shuffled order drawn
    from torch's global generator when iteration starts."""

    def __init__(self, source):
        self.source = source

    def __iter__(self):
        for index in torch.randperm(len(self.source)).tolist():
            yield self.source[index]


def build_loader(dataset, workers, sampling):
    if sampling == "stream":
        return DataLoader(SyntheticStream(dataset), batch_size=6, num_workers=workers)
    if sampling == "replacement":
        sampler = RandomSampler(dataset, replacement=True, num_samples=len(dataset))
    elif sampling == "distributed":
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=11)
    else:
        sampler = None
    return DataLoader(dataset, batch_size=6, shuffle=sampler is None, sampler=sampler, num_workers=workers)


def train_one_epoch(model, loader, optimizer, log_every=1):
    model.train()
    running = 0.0
    for step, (x, y, index) in enumerate(loader):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()
        if step % log_every == 0:
            print(f"step {step} first {index[:3].tolist()} loss {loss.item():.8f}", flush=True)
        time.sleep(0.04)
    return running


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workers", nargs="?", type=int, default=0)
    parser.add_argument("sampling", nargs="?", default="shuffle")
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = SyntheticRegression(120, 5)
    loader = build_loader(dataset, args.workers, args.sampling)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    total = train_one_epoch(model, loader, optimizer)
    print(f"total {total:.8f}")
    digest = hashlib.sha256()
    for tensor in [*model.state_dict().values(), torch.rand(3)]:
        digest.update(tensor.detach().numpy().tobytes())
    print("sha256", digest.hexdigest())


if __name__ == "__main__":
    main()
