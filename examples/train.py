"""A small, deterministic PyTorch training run (CPU, about 15 s), written the
way real training scripts are: a main(), a Trainer class, a shuffled DataLoader.

Run it plainly:            python examples/train.py
or so that a crash or kill -9 loses almost nothing:
                           python -m dart run --every 2 examples/train.py
then kill it (Ctrl-C, kill -9, power cut) and run the same command again: it
continues inside Trainer.fit(), in the same epoch and batch, with the same
shuffled batches, and prints the same final line as an uninterrupted run.
"""

import hashlib
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n_samples=4096, n_features=32):
    """A synthetic regression task: y = sin(x @ w) + noise."""
    inputs = torch.randn(n_samples, n_features)
    true_w = torch.randn(n_features, 1) / n_features**0.5
    targets = torch.sin(3 * inputs @ true_w) + 0.05 * torch.randn(n_samples, 1)
    return TensorDataset(inputs, targets)


class Trainer:
    def __init__(self, model, loader, lr=1e-3):
        self.model = model
        self.loader = loader
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.loss_fn = nn.MSELoss()
        self.history = []

    def fit(self, epochs):
        for epoch in range(epochs):
            total, seen = 0.0, 0
            for inputs, targets in self.loader:
                total += self.step(inputs, targets) * len(inputs)
                seen += len(inputs)
            self.history.append(total / seen)
            print(f"epoch {epoch + 1:2d}/{epochs}  loss {self.history[-1]:.6f}", flush=True)
            time.sleep(0.8)  # stands in for a bigger model, so there is time to kill it
        return self.history[-1]

    def step(self, inputs, targets):
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def main():
    torch.manual_seed(0)
    loader = DataLoader(make_data(), batch_size=128, shuffle=True)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1))
    trainer = Trainer(model, loader)
    trainer.fit(15)
    parameters = b"".join(t.numpy().tobytes() for t in model.state_dict().values())
    print(f"final parameters sha256 {hashlib.sha256(parameters).hexdigest()}")


if __name__ == "__main__":
    main()
