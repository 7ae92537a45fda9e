"""A loop whose every third step fails half-way inside dart.transaction(): the
failed step's partial changes (array rows, dict entries, list items) are rolled back
and the loop goes on. The step's work is a function with a loop of its own, so under
dart it has safe points inside the transaction (where dart must not commit). Runs
plainly or under dart; prints one line per step."""

import hashlib
import time

import numpy as np

import dart

weights = np.zeros((512, 1024))  # 4 MiB: shadowed by the transaction between steps
stats = {"ok": 0, "failed": 0}
history = []


def update(step):
    for row in range(4):
        weights[(step * 4 + row) % 512] += step  # rows of the array, in place
        weights[(7 * step + row) % 512, ::3] -= 1.5
        time.sleep(0.002)
        if row == 2 and step % 3 == 2:
            raise ValueError(f"step {step} fails half-way")


for step in range(40):
    try:
        with dart.transaction():
            history.append(step)
            stats["ok"] += 1
            update(step)
            stats["last"] = step
    except ValueError:
        stats["failed"] += 1
    digest = hashlib.sha256(weights.tobytes()).hexdigest()[:16]
    print(f"step {step} ok {stats['ok']} failed {stats['failed']} history {len(history)} weights {digest}")
    time.sleep(0.01)

print("sha256", hashlib.sha256(weights.tobytes() + repr((stats, history)).encode()).hexdigest())
