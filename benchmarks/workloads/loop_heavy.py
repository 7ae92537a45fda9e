"""Monitor-overhead workload (a): pure-Python, loop-heavy, hot loops at module level.

dart's safe points are the boundaries between top-level statements and between
iterations of loops in user code, so tight loops in *module* code are the worst
case for the monitor: every back edge is a location it watches.  This script
puts several kinds of tight loop at module level (nested ``for`` over ``range``,
a ``while`` loop, list/dict work, calls to small helpers, a helper with its own
loop, an inlined comprehension) and keeps the global state small, so that a
commit is cheap and the measured cost is the monitor's.

Usage: ``python loop_heavy.py [SCALE]`` (or ``DART_BENCH_SCALE``); SCALE 1.0
runs for about 5 s on the reference machine (CPython 3.12, 2 cores).  The last
lines printed are ``WORKLOAD_SECONDS`` (wall, perf_counter) and
``WORKLOAD_CPU_SECONDS`` (process CPU time of all threads) around the workload.
"""

import os
import sys
import time

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else float(os.environ.get("DART_BENCH_SCALE", "1.0"))
OUTER = max(1, int(280 * SCALE))


def square_plus(x):
    return x * x + 1


def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def poly_sum(n):
    # A helper with a loop of its own (function code, not module code).
    acc = 0
    for k in range(n):
        acc += k * 3 - 1
    return acc


class Point:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm1(self):
        return abs(self.x) + abs(self.y)


wall0 = time.perf_counter()
cpu0 = time.process_time()

total = 0
checksum = 0
counts = {}
window = []
for outer in range(OUTER):
    # 1. nested tight arithmetic loops
    for i in range(300):
        for j in range(100):
            total += i * j ^ j
    # 2. small helper calls inside a module-level loop
    for i in range(15000):
        checksum += square_plus(i) % 7 + clamp(i - 7000, -100, 100)
    # 3. dict and list work (bounded, so the state stays small)
    for i in range(12000):
        key = i % 257
        counts[key] = counts.get(key, 0) + 1
        window.append(i)
        if len(window) > 64:
            window.pop(0)
    # 4. a while loop with object attribute work
    n = 0
    p = Point(0, 0)
    while n < 8000:
        p.x += 1
        p.y -= 2
        n += 1
    checksum += p.norm1()
    # 5. a helper that loops, and an (inlined, PEP 709) comprehension
    checksum += poly_sum(20000)
    squares = [v * v for v in range(2000)]
    checksum += squares[-1] % 1000

wall = time.perf_counter() - wall0
cpu = time.process_time() - cpu0
print("total", total, "checksum", checksum, "keys", len(counts))
print(f"WORKLOAD_CPU_SECONDS {cpu:.6f}")
print(f"WORKLOAD_SECONDS {wall:.6f}")
