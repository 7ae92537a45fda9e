"""Files a training script makes and removes as it goes: output shards written
with "skip it if it exists" logic (a shard the killed run wrote after the commit,
maybe cut short, must not be skipped by the redone work), then a loop that saves
a checkpoint folder every few steps and keeps the last two (shutil.rmtree of the
oldest, os.remove of the previous "latest" file, os.replace of the new one): the
redone work removes those files again, which must not fail, and reads the oldest
kept checkpoint back."""

import hashlib
import json
import os
import shutil
import time

import numpy as np


def write_shards(rng):
    os.makedirs("shards", exist_ok=True)
    total = 0.0
    for shard in range(8):
        path = f"shards/part-{shard:02d}.npy"
        if os.path.exists(path):
            print(f"shard {shard} already there")
            continue
        data = rng.normal(size=(64, 4))
        np.save(path, data)
        total += float(data.sum())
        print(f"shard {shard} written {total:.9f}")
        time.sleep(0.03)
    return total


def save_checkpoint(step, w, velocity):
    folder = f"ckpt/step-{step:03d}"
    os.makedirs(folder, exist_ok=True)
    np.save(f"{folder}/w.npy", w)
    np.save(f"{folder}/velocity.npy", velocity)
    with open(f"{folder}/meta.json", "w") as f:
        json.dump({"step": step}, f)
    return folder


def main():
    rng = np.random.default_rng(5)
    shard_total = write_shards(rng)
    w, velocity = np.zeros(16), np.zeros(16)
    kept = []
    for step in range(36):
        shard = np.load(f"shards/part-{step % 8:02d}.npy")
        grad = shard[:, :2].mean(axis=0).repeat(8) + 0.01 * w
        velocity = 0.9 * velocity + grad
        w -= 0.05 * velocity
        time.sleep(0.02)
        if step % 3 == 2:
            kept.append(save_checkpoint(step, w, velocity))
            if len(kept) > 2:
                shutil.rmtree(kept.pop(0))
            np.save("latest.tmp.npy", w)
            if os.path.exists("latest.npy"):
                os.remove("latest.npy")
            os.replace("latest.tmp.npy", "latest.npy")
            oldest = np.load(f"{kept[0]}/w.npy")
            print(f"step {step} w {w.sum():.9f} kept {sorted(os.listdir('ckpt'))} oldest {oldest.sum():.9f}")
    digest = hashlib.sha256(w.tobytes() + velocity.tobytes() + repr(shard_total).encode() + rng.random(2).tobytes())
    print("sha256", digest.hexdigest())


main()
