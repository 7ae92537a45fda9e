"""End-to-end workload: a deterministic PyTorch MLP trained with Adam on CPU.

An MLP of about 6.3 M parameters (1024-2048-2048-10) on a synthetic data set
of 20000 x 1024 floats (80 MiB) created once, batch 256, one torch thread.
The training loop is in ``main()``, so dart's safe points are its iterations.

Usage: ``python e2e_train.py [STEPS]`` (default 190 steps, about 30 s on the
reference machine: 2 cores, CPython 3.12).  Prints the loss every 50 steps,
then ``sha256 HEX`` (the final weights) and ``peak_rss_kib N`` (this
process's peak resident set size).
"""

import hashlib
import resource
import sys

import torch
from torch import nn

DEFAULT_STEPS = 190
BATCH = 256


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_STEPS
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = torch.randn(20000, 1024)
    labels = torch.randint(0, 10, (20000,))
    model = nn.Sequential(
        nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    for step in range(steps):
        start = (step * BATCH) % (data.shape[0] - BATCH + 1)
        optimizer.zero_grad()
        loss = loss_fn(model(data[start : start + BATCH]), labels[start : start + BATCH])
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.6f}", flush=True)

    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    print("sha256", digest.hexdigest())
    print("peak_rss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


if __name__ == "__main__":
    main()
