"""Writes metrics.csv with open(..., "w") around nested loops in a method of a
small experiment class; the file handle is kept on the instance."""

import hashlib
import random
import time

PAUSE = 0.02


class Experiment:
    def __init__(self, path, seed):
        self.path = path
        self.rnd = random.Random(seed)
        self.params = [self.rnd.uniform(-1, 1) for _ in range(3)]
        self.out = None

    def loss(self, sample):
        x, y = sample
        pred = self.params[0] * x * x + self.params[1] * x + self.params[2]
        return pred - y

    def run(self, epochs):
        data = [(x / 10, 0.3 * (x / 10) ** 2 - 0.2 * x / 10 + 0.1) for x in range(-10, 11)]
        with open(self.path, "w") as self.out:
            self.out.write("epoch,step,loss\n")
            for epoch in range(epochs):
                random.shuffle(data)
                for step in range(0, len(data), 3):
                    chunk = data[step : step + 3]
                    mse = self.update(chunk, lr=0.3)
                    self.out.write(f"{epoch},{step // 3},{mse:.12f}\n")
                    print(f"epoch {epoch} step {step // 3} mse {mse:.12f}")
                    time.sleep(PAUSE)
                self.out.write(f"# end of epoch {epoch}\n")
        return self.params

    def update(self, chunk, lr):
        grads = [0.0, 0.0, 0.0]
        total = 0.0
        for x, y in chunk:
            err = self.loss((x, y))
            total += err * err
            grads = [g + 2 * err * feature / len(chunk) for g, feature in zip(grads, (x * x, x, 1.0))]
        self.params = [p - lr * g for p, g in zip(self.params, grads)]
        return total / len(chunk)


random.seed(1)
experiment = Experiment("metrics.csv", seed=9)
params = experiment.run(epochs=6)
with open("metrics.csv", "rb") as f:
    written = f.read()
print("sha256", hashlib.sha256(repr((params, random.random())).encode() + written).hexdigest())
