"""Deterministic torch training loop on CPU: an nn.Module with a 256x256 layer (256 KiB of
weights: its weights and both Adam moments are written as XOR deltas) + Adam.

One line per step with the loss, and a final sha256 over the bytes of every
parameter and optimizer-state tensor (and the next draw of torch's generator).
"""

import hashlib
import sys
import time

import torch
from torch import nn

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 24
PAUSE = 0.03

torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 256)
        self.mid = nn.Linear(256, 256)
        self.fc2 = nn.Linear(256, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.mid(torch.tanh(self.fc1(x)))))


model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
target = torch.linspace(-1.0, 1.0, 8)

for step in range(STEPS):
    x = torch.randn(32, 8)
    y = (x @ target).unsqueeze(1) + 0.01 * torch.randn(32, 1)
    optimizer.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item()!r}")
    time.sleep(PAUSE)


def state_bytes():
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    for index, slot in sorted(optimizer.state_dict()["state"].items()):
        for key, value in sorted(slot.items()):
            digest.update(f"{index}.{key}".encode())
            if torch.is_tensor(value):
                digest.update(value.detach().contiguous().numpy().tobytes())
            else:
                digest.update(repr(value).encode())
    digest.update(torch.rand(4).numpy().tobytes())
    return digest.hexdigest()


print("sha256", state_bytes())
