"""A small, deterministic PyTorch training run (CPU, about 15 s).

Run it plainly:            python examples/train.py
or so that a crash or kill -9 loses almost nothing:
                           python -m dart run --every 2 examples/train.py
then kill it (Ctrl-C, kill -9, power cut) and run the same command again: it
continues from the newest commit and prints the same final line as an
uninterrupted run.

Everything runs at the top level of the script (dart commits between top-level
statements and between iterations of top-level loops), and the batches come
from torch.randperm rather than a DataLoader, whose iterators dart cannot save
yet.
"""

import hashlib
import time

import torch
from torch import nn

torch.manual_seed(0)

# A synthetic regression task: y = sin(x @ w) + noise, 4096 samples, 32 features.
n_samples, n_features = 4096, 32
inputs = torch.randn(n_samples, n_features)
true_w = torch.randn(n_features, 1) / n_features**0.5
targets = torch.sin(3 * inputs @ true_w) + 0.05 * torch.randn(n_samples, 1)

model = nn.Sequential(
    nn.Linear(n_features, 128),
    nn.ReLU(),
    nn.Linear(128, 128),
    nn.ReLU(),
    nn.Linear(128, 1),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.MSELoss()

epochs, batch_size = 15, 128
history = []

for epoch in range(epochs):
    order = torch.randperm(n_samples)
    total = 0.0
    for start in range(0, n_samples, batch_size):
        batch = order[start : start + batch_size]
        optimizer.zero_grad()
        loss = loss_fn(model(inputs[batch]), targets[batch])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    history.append(total / n_samples)
    print(f"epoch {epoch + 1:2d}/{epochs}  loss {history[-1]:.6f}", flush=True)
    time.sleep(0.8)  # stands in for a bigger model, so there is time to kill it

parameters = b"".join(t.numpy().tobytes() for t in model.state_dict().values())
print(f"final parameters sha256 {hashlib.sha256(parameters).hexdigest()}")
