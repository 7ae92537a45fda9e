"""A global that cannot be pickled and cannot be rebuilt (a hash object, which a
new run of its assignment would empty); nothing after the loop needs it."""

import hashlib
import time

handle = hashlib.sha256(b"first")
first_line = handle.hexdigest()[:8]
total = 0
for i in range(20):
    total += i
    print(f"i {i} total {total}")
    time.sleep(0.025)

print("first line:", first_line)
