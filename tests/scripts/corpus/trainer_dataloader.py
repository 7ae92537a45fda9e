"""main() + a Trainer class + a shuffled torch DataLoader.

Usage: trainer_dataloader.py [NUM_WORKERS]. One line per batch and per epoch,
then a sha256 over the model and optimizer state and the next torch draw.
"""

import hashlib
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

PAUSE = 0.03


class Net(nn.Module):
    def __init__(self, d_in, hidden):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 2))

    def forward(self, x):
        return self.body(x)


def make_datasets(n=224, d=8):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g)
    w = torch.linspace(-1.0, 1.0, d)
    y = (x @ w + 0.2 * torch.randn(n, generator=g) > 0).long()
    split = n * 3 // 4
    return TensorDataset(x[:split], y[:split]), (x[split:], y[split:])


class Trainer:
    def __init__(self, model, loader, val, lr):
        self.model = model
        self.loader = loader
        self.val_x, self.val_y = val
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        self.loss_fn = nn.CrossEntropyLoss()
        self.global_step = 0
        self.history = []

    def fit(self, epochs):
        for epoch in range(epochs):
            train_loss = self._run_epoch(epoch)
            val_loss, acc = self.evaluate()
            self.history.append((train_loss, val_loss, acc))
            print(f"epoch {epoch} train {train_loss:.6f} val {val_loss:.6f} acc {acc:.4f}")

    def _run_epoch(self, epoch):
        self.model.train()
        total, batches = 0.0, 0
        for i, (x, y) in enumerate(self.loader):
            loss = self._step(x, y)
            total += loss
            batches += 1
            self.global_step += 1
            print(f"epoch {epoch} batch {i} step {self.global_step} loss {loss!r}")
            time.sleep(PAUSE)
        return total / batches

    def _step(self, x, y):
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def evaluate(self):
        self.model.eval()
        logits = self.model(self.val_x)
        loss = self.loss_fn(logits, self.val_y).item()
        acc = (logits.argmax(1) == self.val_y).float().mean().item()
        return loss, acc


def digest(model, optimizer):
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.contiguous().numpy().tobytes())
    for index, slot in sorted(optimizer.state_dict()["state"].items()):
        for key, value in sorted(slot.items()):
            h.update(f"{index}.{key}".encode())
            h.update(value.contiguous().numpy().tobytes() if torch.is_tensor(value) else repr(value).encode())
    h.update(torch.rand(4).numpy().tobytes())
    return h.hexdigest()


def main():
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    torch.manual_seed(0)
    train_set, val = make_datasets()
    loader = DataLoader(train_set, batch_size=32, shuffle=True, num_workers=workers)
    model = Net(8, 16)
    trainer = Trainer(model, loader, val, lr=0.05)
    trainer.fit(epochs=3)
    print("sha256", digest(model, trainer.optimizer))


if __name__ == "__main__":
    main()
