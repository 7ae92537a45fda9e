"""A 24 MiB table updated a few rows at a time, a torch model trained beside it."""
import hashlib
import sys

import numpy as np
import torch


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    table = rng.random((6144, 1024), dtype=np.float32)  # 24 MiB, 4 KiB rows, incompressible
    model = torch.nn.Linear(256, 256)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    for step in range(steps):
        rows = rng.choice(len(table), 8, replace=False)
        table[rows] += step
        loss = model(torch.randn(16, 256)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step} rows {int(rows.sum())} loss {loss.item():.6f}", flush=True)
    digest = hashlib.sha256(table.tobytes() + model.weight.detach().numpy().tobytes()).hexdigest()
    print(f"sha256 {digest}")


main()
