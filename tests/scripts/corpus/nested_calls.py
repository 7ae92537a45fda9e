"""Calls nested in calls on the path to a loop: ``self.train_epoch(self.shuffle(data))``
(shuffle draws random numbers: running it again would change the order) and
``return self.head(self.body(x))`` (body counts its calls)."""

import hashlib
import time

import numpy as np


class TwoStage:
    def __init__(self, rng):
        self.rng = rng
        self.w = rng.normal(size=3)
        self.body_calls = 0

    def body(self, x):
        self.body_calls += 1
        return np.tanh(x)

    def head(self, h):
        total = 0.0
        for row in h:
            total += float(row @ self.w)
            self.w -= 0.001 * row
            time.sleep(0.01)
        return total

    def forward(self, x):
        return self.head(self.body(x))


class Pipeline:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.model = TwoStage(self.rng)
        self.data = self.rng.normal(size=(12, 3))

    def shuffle(self, data):
        return data[self.rng.permutation(len(data))]

    def train_epoch(self, rows):
        outputs = []
        for start in range(0, len(rows), 4):
            out = self.model.forward(rows[start : start + 4])
            outputs.append(out)
            print(f"batch {start} out {out:.10f} body_calls {self.model.body_calls}")
        return outputs

    def run(self, epochs):
        for epoch in range(epochs):
            outputs = self.train_epoch(self.shuffle(self.data))
            print(f"epoch {epoch} sum {sum(outputs):.10f}")


pipeline = Pipeline(seed=4)
pipeline.run(3)
print("sha256", hashlib.sha256(pipeline.model.w.tobytes() + pipeline.rng.random(2).tobytes()).hexdigest())
