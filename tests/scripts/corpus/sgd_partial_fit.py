"""scikit-learn out-of-core learning: SGDClassifier.partial_fit over shuffled
minibatches, for two losses in a top-level loop (module-level driver code)."""

import hashlib
import time

import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier

PAUSE = 0.025
EPOCHS = 3
BATCH = 100

X, y = make_classification(n_samples=500, n_features=10, n_informative=5, n_classes=3, random_state=0)
X_test, y_test = X[400:], y[400:]
X, y = X[:400], y[:400]
CLASSES = np.unique(y)


def stream_epochs(clf, name):
    for epoch in range(EPOCHS):
        perm = np.random.permutation(len(X))
        for k, start in enumerate(range(0, len(X), BATCH)):
            idx = perm[start : start + BATCH]
            clf.partial_fit(X[idx], y[idx], classes=CLASSES)
            print(f"{name} epoch {epoch} batch {k} train acc {clf.score(X, y):.4f}")
            time.sleep(PAUSE)
        print(f"{name} epoch {epoch} test acc {clf.score(X_test, y_test):.4f}")
    return clf


np.random.seed(0)
models = {}
for loss in ["hinge", "log_loss"]:
    clf = SGDClassifier(loss=loss, alpha=1e-3, learning_rate="optimal", random_state=42)
    models[loss] = stream_epochs(clf, loss)

digest = hashlib.sha256()
for loss, clf in sorted(models.items()):
    digest.update(clf.coef_.tobytes())
    digest.update(clf.intercept_.tobytes())
    digest.update(repr((clf.t_, clf.n_iter_)).encode())
digest.update(np.random.random(2).tobytes())
print("sha256", digest.hexdigest())
