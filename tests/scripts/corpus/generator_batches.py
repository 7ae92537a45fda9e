"""Linear regression with momentum, fed by user generators: a shuffling batch
generator wrapped by an augmenting generator, consumed through enumerate().
The generators and the loop body both draw from NumPy's global generator; the
loop's generators are saved as their frames, so what they print is not
printed again on resume."""

import hashlib
import time

import numpy as np

PAUSE = 0.02


def batches(x, y, size):
    order = np.random.permutation(len(x))
    print(f"shuffled {len(order)} rows, first {order[0]}")  # printed once per epoch, never again on resume
    for start in range(0, len(x), size):
        idx = order[start : start + size]
        yield x[idx], y[idx]


def augment(stream, noise):
    for xb, yb in stream:
        yield xb + noise * np.random.normal(size=xb.shape), yb


def train(x, y, epochs, lr=0.05, momentum=0.9):
    w = np.zeros(x.shape[1])
    velocity = np.zeros_like(w)
    for epoch in range(epochs):
        seen = 0
        for step, (xb, yb) in enumerate(augment(batches(x, y, 32), noise=0.05)):
            keep = np.random.random(len(xb)) > 0.1  # randomly drop samples
            err = xb[keep] @ w - yb[keep]
            grad = xb[keep].T @ err / max(keep.sum(), 1)
            velocity = momentum * velocity - lr * grad
            w = w + velocity
            seen += int(keep.sum())
            print(f"epoch {epoch} step {step} mse {float(np.mean(err ** 2)):.10f}")
            time.sleep(PAUSE)
        print(f"epoch {epoch} samples {seen} |w| {float(np.linalg.norm(w)):.10f}")
    return w, velocity


def main():
    np.random.seed(7)
    x = np.random.normal(size=(192, 6))
    y = x @ np.arange(1.0, 7.0) + 0.1 * np.random.normal(size=192)
    w, velocity = train(x, y, epochs=6)
    state = np.concatenate([w, velocity, np.random.random(2)])
    print("sha256", hashlib.sha256(state.tobytes()).hexdigest())


if __name__ == "__main__":
    main()
