"""Closures and decorators around a training loop in plain NumPy: the loss and
gradient come from a closure factory, the update is a closure over the momentum
buffers dict, the gradient is clipped by a closure with its own loop, the lr
schedule is a module-level lambda, and a functools.wraps decorator factory
wraps the epoch function that holds the batch loop."""

import functools
import hashlib
import time

import numpy as np

PAUSE = 0.02
schedule = lambda epoch: 0.2 * 0.5 ** (epoch // 2)  # noqa: E731


def report(label):
    """Decorator factory: print a summary line after each call."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            print(f"{label}: |w| {float(np.linalg.norm(out)):.10f}")
            return out

        return wrapper

    return decorate


def make_objective(x, y, l2):
    def objective(w):
        err = x @ w - y
        loss = float(err @ err / len(y) + l2 * w @ w)
        grad = 2 * x.T @ err / len(y) + 2 * l2 * w
        return loss, grad

    return objective


def make_momentum_step(buffers, beta):
    def step(name, param, grad, lr):
        buffers[name] = beta * buffers.get(name, 0.0) + grad
        return param - lr * buffers[name]

    return step


def make_clipper(limit):
    def clip(grad):
        scaled = grad.copy()
        for i in range(len(scaled)):  # a loop inside a closure: no safe points here
            scaled[i] = max(-limit, min(limit, scaled[i]))
        return scaled

    return clip


def batch_update(x, y, w, buffers, lr):
    """Builds the closures for one batch and applies them."""
    objective = make_objective(x, y, l2=1e-3)
    loss, grad = objective(w)
    grad = make_clipper(5.0)(grad)
    return make_momentum_step(buffers, beta=0.8)("w", w, grad, lr), loss


@report("epoch done")
def run_epoch(x, y, w, buffers, epoch):
    lr = schedule(epoch)
    order = np.random.permutation(len(x))
    for k in range(0, len(x), 20):
        idx = order[k : k + 20]
        w, loss = batch_update(x[idx], y[idx], w, buffers, lr)
        print(f"epoch {epoch} batch {k // 20} loss {loss:.10f} lr {lr}")
        time.sleep(PAUSE)
    return w


def main():
    np.random.seed(21)
    x = np.random.normal(size=(100, 3))
    y = x @ np.array([2.0, -3.0, 1.0]) + 0.1 * np.random.normal(size=100)
    w = np.zeros(3)
    buffers = {}
    for epoch in range(8):
        w = run_epoch(x, y, w, buffers, epoch)
    print("sha256", hashlib.sha256(w.tobytes() + buffers["w"].tobytes() + np.random.random(2).tobytes()).hexdigest())


main()
