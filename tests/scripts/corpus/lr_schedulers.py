"""Optimizers with learning-rate schedulers, the way training scripts chain
them: warm-up then cosine (SequentialLR), one-cycle, a lambda schedule made in
main(), and ReduceLROnPlateau fed a validation loss. A scheduler wraps the
optimizer's ``step`` in a function that holds a weak reference to it.

Usage: lr_schedulers.py KIND  (KIND: warmup_cosine, onecycle, lambda, plateau)"""

import hashlib
import sys
import time

import torch


def make(kind, model, steps):
    if kind == "warmup_cosine":
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=4)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - 4)
        return opt, torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[4])
    if kind == "onecycle":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    if kind == "lambda":
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        decay = 0.9
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: decay ** (step // 3))
    opt = torch.optim.RMSprop(model.parameters(), lr=5e-3)
    return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)


def main(kind):
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(256, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
    steps = 24
    optimizer, scheduler = make(kind, model, steps)
    for step in range(steps):
        batch = torch.randint(0, 256, (32,))
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
        if kind == "plateau":
            with torch.no_grad():
                scheduler.step(torch.nn.functional.mse_loss(model.eval()(x), y).item())
            model.train()
        else:
            scheduler.step()
        lr = optimizer.param_groups[0]["lr"]
        print(f"step {step} loss {loss.item():.9f} lr {lr:.9f}")
        time.sleep(0.05)
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.numpy().tobytes())
    print("sha256", digest.hexdigest())


if __name__ == "__main__":
    main(sys.argv[1])
