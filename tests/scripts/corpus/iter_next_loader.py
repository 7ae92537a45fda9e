"""``it = iter(loader)`` kept across a step loop inside main(), re-created on
StopIteration with the sampler's epoch advanced (DistributedSampler style)."""

import hashlib
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def main():
    torch.manual_seed(5)
    np.random.seed(5)
    data = TensorDataset(torch.arange(30, dtype=torch.float32).unsqueeze(1), torch.arange(30) % 3)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=2)
    loader = DataLoader(data, batch_size=7, sampler=sampler, drop_last=False)
    weights = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weights], lr=0.001)
    epoch = 0
    sampler.set_epoch(epoch)
    it = iter(loader)
    for step in range(20):
        try:
            x, y = next(it)
        except StopIteration:
            epoch += 1
            sampler.set_epoch(epoch)
            it = iter(loader)
            x, y = next(it)
        noise = float(np.random.normal())
        loss = ((x.squeeze(1) * weights - y.float()) ** 2).mean() + noise * 0.0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step} epoch {epoch} x {x.squeeze(1).int().tolist()} loss {loss.item():.7f} noise {noise:.6f}")
        time.sleep(0.04)
    digest = hashlib.sha256(weights.detach().numpy().tobytes() + np.random.random(2).tobytes())
    print("sha256", digest.hexdigest())


main()
