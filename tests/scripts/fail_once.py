"""Raises at iteration FAIL_AT the first time it runs: the failure happens only
while the file named by $FAIL_MARKER does not exist (the script creates it)."""

import hashlib
import os
import time

FAIL_AT = 5
marker = os.environ["FAIL_MARKER"]
total = 0
seen = []

for i in range(10):
    total += i * i
    seen.append(i)
    print(f"i {i} total {total}")
    if i == FAIL_AT and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"planned failure at iteration {i}")
    time.sleep(0.01)

print("sha256", hashlib.sha256(repr((total, seen)).encode()).hexdigest())
