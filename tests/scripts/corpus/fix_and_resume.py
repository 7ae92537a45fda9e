"""Softmax regression in NumPy with periodic checkpoints and an lr schedule.

The corpus tests break this script on purpose (a bug in save_checkpoint, which
first runs at epoch 2, or in the lr decay after warm-up, also at epoch 2), let
it die under dart, restore the correct code and run the same command again.
FAIL_AT_EPOCH=<n> makes it raise at that epoch instead (a flaky failure).
"""

import hashlib
import os
import time

import numpy as np

PAUSE = 0.02
WARMUP = 2


def save_checkpoint(path, weights, bias, epoch):
    np.savez(path, weights=weights, bias=bias, epoch=np.array(epoch))
    print(f"checkpoint {path} epoch {epoch}")


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train(x, y, epochs, lr):
    classes = int(y.max()) + 1
    w = np.zeros((x.shape[1], classes))
    b = np.zeros(classes)
    onehot = np.eye(classes)[y]
    for epoch in range(epochs):
        order = np.random.permutation(len(x))
        for i, start in enumerate(range(0, len(x), 40)):
            idx = order[start : start + 40]
            p = softmax(x[idx] @ w + b)
            w -= lr * x[idx].T @ (p - onehot[idx]) / len(idx)
            b -= lr * (p - onehot[idx]).mean(axis=0)
            print(f"epoch {epoch} batch {i} loss {-np.mean(np.log(p[np.arange(len(idx)), y[idx]])):.10f}")
            time.sleep(PAUSE)
        if os.environ.get("FAIL_AT_EPOCH") == str(epoch):
            raise RuntimeError(f"simulated failure at epoch {epoch}")
        if epoch >= WARMUP:
            lr = lr * 0.7
        if epoch % 2 == 0 and epoch > 0:
            save_checkpoint(f"ckpt_{epoch}.npz", w, b, epoch)
        acc = float(np.mean(np.argmax(x @ w + b, axis=1) == y))
        print(f"epoch {epoch} acc {acc:.4f} lr {lr:.6f}")
    return w, b


def main():
    np.random.seed(4)
    centers = np.array([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    y = np.random.randint(0, 3, size=200)
    x = centers[y] + np.random.normal(scale=1.1, size=(200, 2))
    w, b = train(x, y, epochs=6, lr=0.5)
    print("sha256", hashlib.sha256(w.tobytes() + b.tobytes() + np.random.random(2).tobytes()).hexdigest())


main()
