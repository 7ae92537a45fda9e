"""torch in main() with a Trainer: the model lives in main()'s frame and in the
Trainer. One line per step, then a sha256 of the parameters and of the next draw.
Usage: train_trainer.py [STEPS] [LR]."""

import hashlib
import sys
import time

import torch
from torch import nn

PAUSE = 0.02


class Trainer:
    def __init__(self, model, lr):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        self.step = 0

    def train_step(self, x, y):
        self.optimizer.zero_grad()
        loss = ((self.model(x) - y) ** 2).mean()
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.item()


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    lr = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    trainer = Trainer(model, lr)
    target = torch.linspace(-1.0, 1.0, 4)
    for step in range(steps):
        x = torch.randn(16, 4)
        y = (x @ target).unsqueeze(1)
        loss = trainer.train_step(x, y)
        print(f"step {step} loss {loss!r}")
        time.sleep(PAUSE)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().numpy().tobytes())
    digest.update(torch.rand(2).numpy().tobytes())
    print("sha256", digest.hexdigest())


main()
