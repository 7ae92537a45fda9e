"""Simulated annealing of a small tour with `while` loops and manual counters:
an outer `while True` over restarts (ended by `break`) and an inner
`while step < max_steps` loop, in plain Python with `random`."""

import hashlib
import math
import random
import time

PAUSE = 0.012
CITIES = [(math.cos(i * 2.399) * (1 + i % 3), math.sin(i * 2.399) * (2 + i % 2)) for i in range(9)]


def tour_length(order):
    return sum(math.dist(CITIES[a], CITIES[b]) for a, b in zip(order, order[1:] + order[:1]))


def anneal(order, max_steps, temp):
    rnd = random.Random(len(order) * 7)
    current = tour_length(order)
    best = (current, list(order))
    step = 0
    while step < max_steps:
        i, j = sorted(rnd.sample(range(len(order)), 2))
        candidate = order[:i] + order[i:j + 1][::-1] + order[j + 1:]
        length = tour_length(candidate)
        if length < current or random.random() < math.exp((current - length) / temp):
            order, current = candidate, length
        if current < best[0]:
            best = (current, list(order))
        step += 1
        temp *= 0.93
        print(f"step {step} temp {temp:.6f} current {current:.6f} best {best[0]:.6f}")
        time.sleep(PAUSE)
    return best


def main():
    random.seed(2024)
    order = list(range(len(CITIES)))
    random.shuffle(order)
    restarts = 0
    results = []
    while True:
        best = anneal(order, max_steps=25, temp=2.0 / (restarts + 1))
        results.append(best[0])
        restarts += 1
        print(f"restart {restarts} best {best[0]:.6f} tour {best[1]}")
        if restarts == 3:
            break
        order = best[1][::-1]
    print("sha256", hashlib.sha256(repr((results, order, random.random())).encode()).hexdigest())


if __name__ == "__main__":
    main()
