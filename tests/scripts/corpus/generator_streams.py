"""Generator objects held in variables and attributes, pulled with next():
an endless `yield from` over a shuffling DataLoader, a two-stage pipeline of
generators (the inner one a closure of main()), and a generator method kept
on a trainer object. Each generator's place (the yield it waits at, its loops'
iterators, its locals) is part of the commit."""

import hashlib
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def forever(loader):
    """Endless batches: epoch after epoch."""
    while True:
        yield from loader


def noisy(stream, scale, gen):
    """Adds noise to every other batch (draws from its own generator)."""
    count = 0
    for x, y in stream:
        count += 1
        if count % 2 == 0:
            x = x + scale * torch.randn(x.shape, generator=gen)
        yield x, y


class Trainer:
    def __init__(self, net, data):
        self.net = net
        self.opt = torch.optim.Adam(net.parameters(), lr=0.02)
        self.data = data
        self.schedule = self.warmup(4)

    def warmup(self, steps):
        for k in range(steps):
            yield (k + 1) / steps
        while True:
            yield 1.0

    def step(self, x, y):
        scale = next(self.schedule)
        for group in self.opt.param_groups:
            group["lr"] = 0.02 * scale
        loss = F.cross_entropy(self.net(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item(), scale


def main(steps):
    torch.manual_seed(7)
    features = torch.randn(40, 5)
    labels = (features[:, 0] - features[:, 1] > 0).long()
    loader = DataLoader(TensorDataset(features, labels), batch_size=8, shuffle=True)
    noise = torch.Generator().manual_seed(3)

    def chunks(source, size):  # a closure: reads `size` from main()
        for x, y in source:
            for start in range(0, len(x), size):
                yield x[start:start + size], y[start:start + size]

    stream = noisy(chunks(forever(loader), 4), 0.1, noise)
    trainer = Trainer(torch.nn.Linear(5, 2), stream)
    for step in range(steps):
        x, y = next(trainer.data)
        loss, scale = trainer.step(x, y)
        print(f"step {step} y {y.tolist()} scale {scale:.2f} loss {loss:.7f}")
        time.sleep(0.03)
    digest = hashlib.sha256()
    for t in [*trainer.net.parameters(), torch.randn(3), torch.randn(2, generator=noise)]:
        digest.update(t.detach().numpy().tobytes())
    print("sha256", digest.hexdigest())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
