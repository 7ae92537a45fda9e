"""Metrics logged through the csv module, as training scripts do: a DictWriter
with a header for per-step rows and a plain csv.writer for per-epoch summaries,
both held in locals of main() while a NumPy model trains."""

import csv
import hashlib
import time

import numpy as np


def main():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 4))
    y = x @ np.array([0.5, -1.0, 2.0, 0.1]) + 0.05 * rng.normal(size=200)
    w = np.zeros(4)
    with open("steps.csv", "w", newline="") as steps_file, open("epochs.csv", "w", newline="") as epochs_file:
        steps = csv.DictWriter(steps_file, fieldnames=["epoch", "step", "loss"])
        steps.writeheader()
        epochs = csv.writer(epochs_file, delimiter=";")
        epochs.writerow(["epoch", "mean_loss", "norm"])
        for epoch in range(4):
            losses = []
            for step, batch in enumerate(np.array_split(rng.permutation(200), 5)):
                err = x[batch] @ w - y[batch]
                w -= 0.1 * x[batch].T @ err / len(batch)
                losses.append(float(np.mean(err**2)))
                steps.writerow({"epoch": epoch, "step": step, "loss": f"{losses[-1]:.9f}"})
                print(f"epoch {epoch} step {step} loss {losses[-1]:.9f}", flush=True)
                time.sleep(0.03)
            epochs.writerow([epoch, f"{np.mean(losses):.9f}", f"{np.linalg.norm(w):.9f}"])
    print("sha256", hashlib.sha256(w.tobytes()).hexdigest())


if __name__ == "__main__":
    main()
