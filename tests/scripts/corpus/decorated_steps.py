"""Decorated train steps in torch: a functools.wraps call-counting decorator on
the epoch function and the train step, @torch.no_grad() on the evaluation loop
and on an exponential-moving-average update that loops over the parameters
and updates them in place (which fails unless grad mode is off)."""

import copy
import functools
import hashlib
import time
from collections import Counter

import torch
from torch import nn

PAUSE = 0.03
BATCH = 24
CALLS = Counter()


def counted(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        CALLS[fn.__name__] += 1
        return fn(*args, **kwargs)

    return wrapper


@counted
def train_step(model, optimizer, xb, yb):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def update_ema(ema, model, decay):
    for ema_p, p in zip(ema.parameters(), model.parameters()):
        ema_p.mul_(decay).add_(p, alpha=1 - decay)


@torch.no_grad()
def evaluate(model, x, y):
    total = 0.0
    for start in range(0, len(x), 32):
        total += nn.functional.mse_loss(model(x[start : start + 32]), y[start : start + 32], reduction="sum").item()
    return total / len(x)


@counted
def train_epoch(model, ema, optimizer, x, y, epoch):
    perm = torch.randperm(len(x))
    for i, start in enumerate(range(0, len(x), BATCH)):
        idx = perm[start : start + BATCH]
        loss = train_step(model, optimizer, x[idx], y[idx])
        update_ema(ema, model, decay=0.8)
        print(f"epoch {epoch} step {i} loss {loss!r} calls {CALLS['train_step']}")
        time.sleep(PAUSE)
    return evaluate(ema, x, y)


def main():
    torch.manual_seed(3)
    x = torch.randn(144, 4)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.05 * torch.randn(144, 1)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))
    ema = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(3):
        ema_loss = train_epoch(model, ema, optimizer, x, y, epoch)
        print(f"epoch {epoch} ema loss {ema_loss!r} epochs {CALLS['train_epoch']}")
    h = hashlib.sha256()
    for net in (model, ema):
        for tensor in net.state_dict().values():
            h.update(tensor.numpy().tobytes())
    for slot in optimizer.state_dict()["state"].values():
        h.update(slot["exp_avg"].numpy().tobytes() + slot["exp_avg_sq"].numpy().tobytes())
    h.update(torch.rand(3).numpy().tobytes())
    print("sha256", h.hexdigest())


main()
