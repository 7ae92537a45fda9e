"""A training loop inside `with open(log_file, "a")`, appending one line per
step to train.log, plus a NumPy checkpoint written at the end of each epoch."""

import hashlib
import time

import numpy as np

PAUSE = 0.02
LOG_FILE = "train.log"


def run(log, epochs, steps):
    rng = np.random.default_rng(5)
    w = rng.normal(size=4)
    target = np.array([0.5, -1.0, 2.0, 0.25])
    for epoch in range(epochs):
        for step in range(steps):
            x = rng.normal(size=(16, 4))
            grad = x.T @ (x @ (w - target)) / 16
            w -= 0.1 * grad
            loss = float(np.sum((w - target) ** 2))
            log.write(f"epoch={epoch} step={step} loss={loss:.12f}\n")
            print(f"epoch {epoch} step {step} loss {loss:.12f}")
            time.sleep(PAUSE)
        log.write(f"checkpoint epoch={epoch}\n")
        log.flush()
        np.save("checkpoint.npy", w)
    return w


def main():
    with open(LOG_FILE, "a") as log:
        log.write("run started\n")
        w = run(log, epochs=4, steps=10)
        log.write("run finished\n")
    with open(LOG_FILE, "rb") as f:
        logged = f.read()
    print("sha256", hashlib.sha256(w.tobytes() + logged).hexdigest())


if __name__ == "__main__":
    main()
