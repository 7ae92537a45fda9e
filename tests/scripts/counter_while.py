"""A top-level ``while`` loop with a manual counter."""

import hashlib
import random
import time

N = 30
random.seed(5)
step = 0
total = 0.0
while step < N:
    total += random.random() * (step + 1)
    print(f"step {step} total {total!r}")
    time.sleep(0.02)
    step += 1

print("sha256", hashlib.sha256(repr((step, total, random.random())).encode()).hexdigest())
