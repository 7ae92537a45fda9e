"""A state that grows by 128 KiB of new (incompressible) data per step: on a
small filesystem the store fills up while the program runs. DELETE_STORE=path
removes the store at step 10, as a user cleaning up the wrong folder would."""

import os
import shutil
import time

import numpy as np

rng = np.random.default_rng(0)
chunks = []
total = 0.0
for step in range(30):
    chunks.append(rng.random(16_384))
    total += float(chunks[-1].sum())
    print(f"step {step} total {total:.6f}", flush=True)
    if step == 10 and os.environ.get("DELETE_STORE"):
        shutil.rmtree(os.environ["DELETE_STORE"])
    time.sleep(0.01)
print("done", len(chunks), f"{total:.6f}")
