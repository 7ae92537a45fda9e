"""A GAN (two optimizers) trained per fold of an outer loop, after a process pool
prepared the data in a `with` block (the shut-down pool stays a local of main()),
with a moving-average deque and early-stopping callbacks."""
import collections
import hashlib
import multiprocessing as mp
import random
import time

import numpy as np
import torch
from torch import nn


class EarlyStop:
    def __init__(self, patience):
        self.patience, self.best, self.bad = patience, float("inf"), 0
    def __call__(self, value):
        if value < self.best - 1e-4:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return self.bad > self.patience


def square(v):
    return v * v


def run_fold(fold, data, callbacks):
    torch.manual_seed(fold)
    G = nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(0.2), nn.Linear(16, 2))
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    window = collections.deque(maxlen=5)
    for step in range(8):
        real = data[torch.randint(0, len(data), (32,))]
        fake = G(torch.randn(32, 4))
        d_loss = bce(D(real), torch.ones(32, 1)) + bce(D(fake.detach()), torch.zeros(32, 1))
        opt_d.zero_grad(); d_loss.backward(); opt_d.step()
        g_loss = bce(D(fake), torch.ones(32, 1))
        opt_g.zero_grad(); g_loss.backward(); opt_g.step()
        window.append(g_loss.item())
        print(f"step fold {fold} {step} d {d_loss.item():.6f} g {g_loss.item():.6f} avg {np.mean(window):.6f}", flush=True)
        time.sleep(0.02)
        if any(cb(np.mean(window)) for cb in callbacks):
            break
    return float(np.mean(window))


def main():
    random.seed(0)
    with mp.Pool(2) as pool:
        squares = pool.map(square, range(100))
    data = torch.tensor(np.array(squares[:64], dtype=np.float32)).view(32, 2) / 1e3
    results = {}
    for fold in range(3):
        results[fold] = run_fold(fold, data, [EarlyStop(patience=3)])
    print("sha256", hashlib.sha256(repr({k: round(v, 6) for k, v in results.items()}).encode()).hexdigest())


if __name__ == "__main__":
    main()
