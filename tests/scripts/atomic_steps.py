"""For `dart run --atomic-steps`: every third iteration fails half-way and is caught by a
try inside the loop; a last loop fails and is caught by a try around it. With atomic
steps the failing iterations leave no trace; without, their partial changes stay."""

import hashlib
import time

import numpy as np

weights = np.zeros(300_000)  # 2.4 MiB
log = []
caught = []

for step in range(30):
    log.append(step)
    weights[step * 1000:(step + 1) * 1000] += 1
    try:
        weights[50_000 + step] = 7
        if step % 3 == 1:
            log.append("partial")
            raise ValueError(step)
    except ValueError as exc:
        caught.append((int(exc.args[0]), len(log), float(weights.sum())))
    print(f"step {step} log {len(log)} sum {float(weights.sum())}")
    time.sleep(0.02)

try:
    for i in range(3):
        log.append(("outer", i))
        if i == 1:
            raise KeyError(i)
except KeyError:
    print("after loop failure", log[-2:])
print("caught", caught[:3])
print("sha256", hashlib.sha256(weights.tobytes() + repr((log, caught)).encode()).hexdigest())
