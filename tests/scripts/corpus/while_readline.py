"""`while` loops whose test takes the next item: `while (line := f.readline()):`
over a data file, and `while (batch := source.next_batch()) is not None:` with a
source that draws random numbers, with `continue` in the body. A commit at the
end of an iteration comes after the next test ran: resume must not run it again."""

import hashlib
import random
import time


class Source:
    def __init__(self, seed, count):
        self.rnd = random.Random(seed)
        self.left = count

    def next_batch(self):
        if self.left == 0:
            return None
        self.left -= 1
        return [self.rnd.gauss(0, 1) for _ in range(3)]


def main():
    with open("data.txt", "w") as f:
        for i in range(12):
            f.write(f"{i} {i * i % 7}\n")
    total = 0
    with open("data.txt") as f:
        while (line := f.readline()):
            a, b = map(int, line.split())
            if b == 0:
                print(f"skip {a}")
                continue
            total += a * b
            print(f"line {a} total {total}")
            time.sleep(0.02)
    source, step, acc = Source(7, 14), 0, 0.0
    while (batch := source.next_batch()) is not None:
        step += 1
        if step % 5 == 0:
            print(f"step {step} skipped")
            continue
        acc += sum(batch)
        print(f"step {step} left {source.left} acc {acc:.9f}")
        time.sleep(0.02)
    print("sha256", hashlib.sha256(f"{total} {acc!r}".encode()).hexdigest())


main()
