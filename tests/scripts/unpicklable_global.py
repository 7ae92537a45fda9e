"""A global that cannot be pickled (a lock); nothing after the loop needs it."""

import threading
import time

handle = threading.Lock()
first_line = "locks do not pickle"
total = 0
for i in range(20):
    total += i
    print(f"i {i} total {total}")
    time.sleep(0.025)

print("first line:", first_line)
