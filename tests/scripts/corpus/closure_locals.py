"""A batch loop in a plain function that keeps closures in local variables
(a loss closure and an optimizer-step closure over its momentum buffers)."""

import hashlib
import time

import numpy as np

PAUSE = 0.02


def make_objective(x, y):
    def objective(w):
        err = x @ w - y
        return float(err @ err / len(y)), 2 * x.T @ err / len(y)

    return objective


def make_momentum_step(beta, lr):
    buffers = {}

    def step(w, grad):
        buffers["w"] = beta * buffers.get("w", 0.0) + grad
        return w - lr * buffers["w"]

    return step


def train(x, y, epochs):
    w = np.zeros(x.shape[1])
    objective = make_objective(x, y)
    step = make_momentum_step(0.8, 0.05)
    for epoch in range(epochs):
        for k in range(5):
            loss, grad = objective(w)
            w = step(w, grad)
            print(f"epoch {epoch} step {k} loss {loss:.10f}")
            time.sleep(PAUSE)
    return w


def main():
    np.random.seed(2)
    x = np.random.normal(size=(60, 3))
    y = x @ np.array([1.0, 2.0, -1.0])
    w = train(x, y, epochs=6)
    print("sha256", hashlib.sha256(w.tobytes()).hexdigest())


main()
