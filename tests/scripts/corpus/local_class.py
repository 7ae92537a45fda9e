"""Everything inside main(), classes included: the model and a metrics helper
are classes defined in the function, so their objects' classes have no global name."""

import hashlib
import time

import numpy as np


def main():
    class Meter:
        def __init__(self):
            self.values = []

        def update(self, value):
            self.values.append(value)

        @property
        def mean(self):
            return sum(self.values) / len(self.values)

    class LogisticModel:
        def __init__(self, dim, rng):
            self.w = rng.normal(scale=0.1, size=dim)
            self.b = 0.0

        def predict(self, x):
            return 1.0 / (1.0 + np.exp(-(x @ self.w + self.b)))

        def step(self, x, y, lr):
            p = self.predict(x)
            self.w -= lr * x.T @ (p - y) / len(y)
            self.b -= lr * float(np.mean(p - y))
            return float(-np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9)))

    rng = np.random.default_rng(9)
    x = rng.normal(size=(64, 3))
    y = (x[:, 0] - x[:, 2] > 0).astype(float)
    model = LogisticModel(3, rng)
    meter = Meter()
    for epoch in range(3):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 16):
            idx = order[start : start + 16]
            meter.update(model.step(x[idx], y[idx], lr=0.5))
            print(f"epoch {epoch} start {start} loss {meter.values[-1]:.10f} mean {meter.mean:.10f}")
            time.sleep(0.03)
    print("sha256", hashlib.sha256(model.w.tobytes() + rng.random(2).tobytes()).hexdigest())


if __name__ == "__main__":
    main()
