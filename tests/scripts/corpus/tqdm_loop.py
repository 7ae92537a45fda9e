"""Progress bars as training scripts use them: ``for x, y in tqdm(loader)`` with
a loss in the postfix, a bar over epochs made by ``trange``, and a manual bar
updated by hand; the loops sit inside main()."""

import hashlib
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm, trange


def main():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(192, 6), torch.randn(192, 1))
    loader = DataLoader(data, batch_size=16, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    seen = tqdm(total=3 * len(data), desc="samples", file=sys.stderr, mininterval=0)
    for epoch in trange(3, desc="epochs"):
        bar = tqdm(loader, desc=f"epoch {epoch}", leave=False)
        for step, (x, y) in enumerate(bar):
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
            seen.update(len(x))
            print(f"epoch {epoch} batch {step} loss {loss.item():.9f} seen {seen.n}", flush=True)
            time.sleep(0.03)
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.numpy().tobytes())
    print("sha256", digest.hexdigest(), bar.n, seen.n)


if __name__ == "__main__":
    main()
