"""A data-cleaning loop in pandas style: rows taken with `df.iterrows()` and days
with `pd.date_range(...)` (pandas iterates both with generators of its own),
running sums kept in a dict, a cleaned frame written to CSV at the end."""

import hashlib
import time

import numpy as np
import pandas as pd


def main():
    rng = np.random.default_rng(11)
    df = pd.DataFrame({"store": rng.integers(0, 4, 14), "sales": rng.normal(100, 15, 14).round(2)})
    per_store = {}
    kept = []
    for idx, row in df.iterrows():
        if row["sales"] < 85:
            print(f"row {idx} dropped")
            continue
        per_store[int(row["store"])] = per_store.get(int(row["store"]), 0.0) + row["sales"]
        kept.append(idx)
        print(f"row {idx} store {int(row['store'])} running {per_store[int(row['store'])]:.2f}")
        time.sleep(0.02)
    days = []
    for day in pd.date_range("2024-02-25", periods=8, freq="D"):
        days.append((day.strftime("%a %d %b"), rng.integers(0, 100)))
        print(f"day {days[-1][0]} visitors {days[-1][1]}")
        time.sleep(0.02)
    df.loc[kept].to_csv("clean.csv", index=False)
    print("sha256", hashlib.sha256(repr((sorted(per_store.items()), days)).encode()).hexdigest())


main()
