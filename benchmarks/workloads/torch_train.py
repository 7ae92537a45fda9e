"""Monitor-overhead workload (b): a small torch CPU training loop at module level.

An MLP trained with Adam on a synthetic regression set, with the epoch loop
and the batch loop in module code (where dart's safe points are).  The state
is small (~0.2 M parameters plus Adam moments, a ~1 MiB dataset), so a commit
is cheap and the measured cost is the monitor's and the flusher's.

Usage: ``python torch_train.py [SCALE]`` (or ``DART_BENCH_SCALE``); SCALE 1.0
trains for about 5 s on the reference machine (CPython 3.12, 2 cores).  The
last lines printed are ``WORKLOAD_SECONDS`` (wall, perf_counter) and
``WORKLOAD_CPU_SECONDS`` (process CPU time of all threads) around the
training loop; the torch import is outside that window.

``DART_BENCH_COMMIT_EPOCHS=1,2,3`` (under ``dart run``): a commit falls due at
the end of those epochs, as when dart's timer fires there (the monitor armed,
the next safe point commits), so that runs of different lengths take the same
commits at the same steps (``benchmarks/bench_monitor_instructions.py``).

``DART_BENCH_IDLE_THREADS=N`` (plain python): start N idle daemon threads first,
before torch is imported, as dart's session starts its threads before the
script runs: a control for "does a sleeping thread cost per step".
"""

import os
import sys
import threading
import time

for _ in range(int(os.environ.get("DART_BENCH_IDLE_THREADS", "0"))):
    threading.Thread(target=threading.Event().wait, name="bench-idle", daemon=True).start()

import torch
from torch import nn

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else float(os.environ.get("DART_BENCH_SCALE", "1.0"))
EPOCHS = max(1, int(56 * SCALE))
BATCH = 64
THREADS = os.environ.get("DART_BENCH_TORCH_THREADS")
if THREADS:
    torch.set_num_threads(int(THREADS))

torch.manual_seed(0)
inputs = torch.randn(4096, 64)
true_w = torch.randn(64, 1)
targets = torch.tanh(inputs @ true_w) + 0.05 * torch.randn(4096, 1)

model = nn.Sequential(
    nn.Linear(64, 256),
    nn.ReLU(),
    nn.Linear(256, 256),
    nn.ReLU(),
    nn.Linear(256, 1),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.MSELoss()

COMMIT_EPOCHS = {int(e) for e in os.environ.get("DART_BENCH_COMMIT_EPOCHS", "").split(",") if e}


def commit_due():
    """What dart's timer does when a commit falls due (a no-op without dart)."""
    runner = sys.modules.get("dart.runner")
    if runner is not None and runner._active is not None:
        runner._active.monitor.due_now()


wall0 = time.perf_counter()
cpu0 = time.process_time()

losses = []
for epoch in range(EPOCHS):
    order = torch.randperm(inputs.shape[0])
    running = 0.0
    for start in range(0, inputs.shape[0], BATCH):
        index = order[start : start + BATCH]
        x = inputs[index]
        y = targets[index]
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()
    losses.append(running / (inputs.shape[0] // BATCH))
    if epoch + 1 in COMMIT_EPOCHS:
        commit_due()

wall = time.perf_counter() - wall0
cpu = time.process_time() - cpu0
print("epochs", EPOCHS, "final loss", f"{losses[-1]:.6f}", "threads", torch.get_num_threads())
print(f"WORKLOAD_CPU_SECONDS {cpu:.6f}")
print(f"WORKLOAD_SECONDS {wall:.6f}")
