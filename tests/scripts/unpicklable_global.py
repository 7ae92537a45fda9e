"""A global that cannot be pickled and cannot be rebuilt (a generator, which a
new run of its assignment would restart); nothing after the loop needs it."""

import time


def numbers():
    yield from range(100)


handle = numbers()
first_line = next(handle)
total = 0
for i in range(20):
    total += i
    print(f"i {i} total {total}")
    time.sleep(0.025)

print("first line:", first_line)
