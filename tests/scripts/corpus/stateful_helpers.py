"""K-fold cross-validation of a NumPy ridge model, through helper functions
that hold local state across their own loops: main -> cross_validate ->
train_fold -> run_epoch -> running_stats, each with loops and accumulators."""

import hashlib
import time

import numpy as np

PAUSE = 0.012


def running_stats(values):
    """Welford's running mean and variance, one value at a time."""
    n, mean, m2 = 0, 0.0, 0.0
    for v in values:
        n += 1
        delta = v - mean
        mean += delta / n
        m2 += delta * (v - mean)
    return mean, m2 / max(n - 1, 1)


def run_epoch(w, x, y, lr, batch):
    losses = []
    order = np.random.permutation(len(x))
    for start in range(0, len(x), batch):
        idx = order[start : start + batch]
        err = x[idx] @ w - y[idx]
        w = w - lr * (x[idx].T @ err / len(idx) + 0.01 * w)
        losses.append(float(np.mean(err**2)))
        time.sleep(PAUSE)
    mean, var = running_stats(losses)
    return w, mean, var


def train_fold(x, y, fold, epochs):
    w = np.zeros(x.shape[1])
    lr = 0.1
    history = []
    for epoch in range(epochs):
        w, mean, var = run_epoch(w, x, y, lr, batch=16)
        history.append(mean)
        lr *= 0.9
        print(f"fold {fold} epoch {epoch} loss {mean:.10f} var {var:.10f}")
    return w, history


def cross_validate(x, y, folds, epochs):
    fold_size = len(x) // folds
    scores = []
    weights = []
    for fold in range(folds):
        test = np.arange(fold * fold_size, (fold + 1) * fold_size)
        train = np.setdiff1d(np.arange(len(x)), test)
        w, history = train_fold(x[train], y[train], fold, epochs)
        mse = float(np.mean((x[test] @ w - y[test]) ** 2))
        scores.append(mse)
        weights.append(w)
        print(f"fold {fold} test mse {mse:.10f} first {history[0]:.6f} last {history[-1]:.6f}")
    return scores, weights


def main():
    np.random.seed(11)
    x = np.random.normal(size=(96, 5))
    y = x @ np.array([1.0, -1.0, 0.5, 2.0, 0.0]) + 0.2 * np.random.normal(size=96)
    scores, weights = cross_validate(x, y, folds=4, epochs=4)
    mean, var = running_stats(scores)
    print(f"cv mse {mean:.10f} +- {var ** 0.5:.10f}")
    print("sha256", hashlib.sha256(np.stack(weights).tobytes() + np.random.random(2).tobytes()).hexdigest())


main()
