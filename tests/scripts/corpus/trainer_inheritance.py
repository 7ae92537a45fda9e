"""A trainer class hierarchy (the loop in the base class, reached through
super().fit()), a namedtuple record type made at module level, a `global`
best score, the working directory changed and an exit handler registered in
main() before the loop, and a loss summed over micro-batches before one
backward() (commits wait until its graph is spent)."""

import atexit
import hashlib
import os
import signal
import sys
import time
from collections import namedtuple

import torch
import torch.nn.functional as F

Record = namedtuple("Record", "step loss")
BEST = float("inf")
stopping = []


class BaseTrainer:
    def __init__(self, net, micro):
        self.net = net
        self.opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        self.micro = micro
        self.history = []

    def fit(self, x, y, steps):
        global BEST
        for step in range(steps):
            if stopping:
                print("stopped by signal")
                break
            total = 0
            for k in range(self.micro):
                rows = slice(k * 4, k * 4 + 4)
                total = total + F.mse_loss(self.net(x[rows]), y[rows]) / self.micro
            self.opt.zero_grad()
            total.backward()
            self.opt.step()
            BEST = min(BEST, total.item())
            self.history.append(Record(step, round(total.item(), 9)))
            with open("progress.txt", "a") as f:
                f.write(f"{step} {total.item():.9f}\n")
            print(f"step {step} loss {total.item():.9f} best {BEST:.9f}")
            time.sleep(0.04)


class Trainer(BaseTrainer):
    def fit(self, x, y, steps):
        print("fitting", type(self).__name__)
        super().fit(x, y, steps)
        return self.history


def main(steps):
    torch.manual_seed(5)
    os.makedirs("run_out", exist_ok=True)
    os.chdir("run_out")
    atexit.register(lambda: open("done.txt", "w").write(f"best {BEST:.9f}\n"))
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    x = torch.randn(12, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    trainer = Trainer(torch.nn.Linear(3, 1), micro=3)
    history = trainer.fit(x, y, steps)
    digest = hashlib.sha256()
    for p in trainer.net.parameters():
        digest.update(p.detach().numpy().tobytes())
    digest.update(repr([tuple(r) for r in history]).encode())
    print("sha256", digest.hexdigest())


main(int(sys.argv[1]) if len(sys.argv) > 1 else 24)
