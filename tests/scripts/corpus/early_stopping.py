"""Logistic regression in NumPy: nested epoch/batch loops inside a function,
a ragged last batch skipped with `continue`, early stopping with `break`."""

import hashlib
import time

import numpy as np

PAUSE = 0.02


def load_data(rng):
    x = rng.normal(size=(400, 5))
    w = np.array([1.5, -2.0, 0.5, 0.0, 1.0])
    y = (x @ w + 1.5 * rng.normal(size=400) > 0).astype(np.float64)
    return x[:300], y[:300], x[300:], y[300:]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def loss_and_grad(w, b, x, y):
    p = sigmoid(x @ w + b)
    loss = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
    err = p - y
    return loss, x.T @ err / len(y), err.mean()


def fit(x, y, x_val, y_val, lr=0.8, max_epochs=40, patience=2, batch=56):
    w = np.zeros(x.shape[1])
    b = 0.0
    best, best_w, best_b, bad = np.inf, w.copy(), b, 0
    for epoch in range(max_epochs):
        order = np.random.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            if len(idx) < batch // 2:
                continue  # drop the ragged last batch
            loss, grad_w, grad_b = loss_and_grad(w, b, x[idx], y[idx])
            w -= lr * grad_w
            b -= lr * grad_b
            print(f"epoch {epoch} batch {start // batch} loss {loss:.8f}")
            time.sleep(PAUSE)
        val, _, _ = loss_and_grad(w, b, x_val, y_val)
        print(f"epoch {epoch} val {val:.8f} lr {lr:.5f}")
        if val < best - 5e-3:
            best, best_w, best_b, bad = val, w.copy(), b, 0
        else:
            bad += 1
            if bad >= patience:
                print(f"early stop at epoch {epoch}, best val {best:.8f}")
                break
        lr *= 0.8
    return best_w, best_b, best


def main():
    np.random.seed(3)
    rng = np.random.default_rng(0)
    x, y, x_val, y_val = load_data(rng)
    w, b, best = fit(x, y, x_val, y_val)
    state = np.concatenate([w, [b, best], np.random.random(2)])
    print("sha256", hashlib.sha256(state.tobytes()).hexdigest())


main()
