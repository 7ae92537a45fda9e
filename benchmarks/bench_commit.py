"""What a dart commit costs the program and the disk, side by side with the usual ways
of saving the same state, measured in one run (issue 4). Four parts:

1. training state: a ~100M-parameter torch model + Adam after a step, plus a 1 GiB
   NumPy array that never changes. For commits 2..N (one optimizer step between
   them), interleaved in the same run: dart's stall (capture + copy of changed
   chunks into staging) and time to durable, torch.save of the model and optimizer
   state dicts with fsync, DCP ``async_save`` (FileSystemWriter, files fsync'd;
   its stall and time to durable) where it runs, and ``dd conv=fsync`` of as many
   bytes as dart wrote, through the page cache and with oflag=direct, the faster
   of the two (the disk's durable throughput now). Targets (issue 14,
   2): stall <= 0.1x torch.save+fsync, time to durable <= 1.0x torch.save+fsync
   and <= DCP, durable throughput >= 0.8x dd's, bytes written <= 1.1x changed.
2. sparse change: a 1 GiB float32 array (4 KiB rows) with 0 / 0.1 / 1 / 10 % of its
   rows changed at random between commits: bytes written against the changed rows'
   bytes (target <= 2x + 1 MiB), and change detection time at 0 % for kernel dirty-page
   tracking (<= 10 ms) and hashing (<= 100 ms).
3. side by side (smaller state, 10 commits each): dart (stall, time to durable) vs
   torch.save, pickle protocol 5 and dill.dump_session, each with fsync; bytes on
   disk after 10 commits (each baseline keeps its 10 files, as a history would).
4. restore: loading dart's last commit of part 1 against reading its objects' bytes
   from disk (target <= 1.3x) and torch.load of the torch.save file.

    python benchmarks/bench_commit.py [--params 100e6] [--array-gib 1] [--commits 6] [--parts 1234]

Uses dart's pipeline in-process (capture -> buffer book -> staging -> flusher ->
store), as a session does at a safe point; the monitor's part is measured by
bench_monitor.py. Reported figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from dart.capture import Capturer, load_roots
from dart.delta import AdaptiveTracker, available
from dart.flush import CommitWriter
from dart.store import Store

from bench_delta import timed  # median wall time of repeats (same folder)

MiB = 1 << 20


def fsync_save(save, path):
    """Wall time of save(file) + flush + fsync."""
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        save(f)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t0


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class DartRun:
    """dart's commit path on a namespace."""

    def __init__(self, root: Path, staging: int):
        self.store = Store(root)
        self.main = types.ModuleType("__main__")
        self.capturer = Capturer(self.main)
        self.writer = CommitWriter(self.store, self.store.create_run({"key": "bench"}), None, staging=staging)

    def commit(self, namespace):
        """(stall s, durable s, record)."""
        t0 = time.perf_counter()
        pods, keep, _ = self.capturer.capture(namespace, {}, [])
        handle = self.writer.commit(pods, {"message": None})
        del keep
        stall = time.perf_counter() - t0
        cid = handle.wait()
        return stall, time.perf_counter() - t0, self.store.get_commit(cid)

    def close(self):
        self.writer.close()


def make_model(params: float, width: int = 4096):
    layers = max(1, round(params / (width * width + width)))
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    return model, opt


def train_step(model, opt):
    x = torch.randn(8, model[0].in_features)
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def state_bytes(model, opt) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    return 3 * n  # weights + exp_avg + exp_avg_sq


def dd_fsync(path: Path, nbytes: int, direct: bool = False) -> float:
    """Wall time of ``dd`` writing ``nbytes`` (8 MiB blocks) to a new file and
    fsyncing it; ``direct``: with oflag=direct (no page cache), else through it."""
    path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=8M", f"count={max(1, -(-nbytes // (8 * MiB)))}",
                    "conv=fsync", "status=none", *(["oflag=direct"] if direct else [])], check=True)
    return time.perf_counter() - t0


def dcp_async_save():
    """A function (state, folder) -> (stall s, durable s) saving with DCP async_save
    in this single process, or None where it does not run here."""
    try:
        import warnings

        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import FileSystemWriter
    except ImportError:
        return None

    def save(state, folder):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
            t0 = time.perf_counter()
            future = dcp.async_save(state, storage_writer=FileSystemWriter(str(folder), sync_files=True))
            stall = time.perf_counter() - t0
            future.result()
        return stall, time.perf_counter() - t0

    return save


def part_training(args, tmp: Path) -> dict:
    print(f"\n## 1. training state: {args.params:.0f} parameters + Adam + {args.array_gib} GiB unchanged array")
    model, opt = make_model(args.params)
    train_step(model, opt)
    frozen = np.ones(int(args.array_gib * (1 << 30)) // 4, dtype=np.float32)
    changed = state_bytes(model, opt)
    ns = {"model": model, "opt": opt, "frozen": frozen}
    run = DartRun(tmp / "train.dart", staging=2 * (changed + frozen.nbytes))
    stall0, durable0, rec0 = run.commit(ns)
    print(f"commit 1 (everything): stall {stall0:.3f} s, durable {durable0:.2f} s, wrote {rec0.bytes_written / MiB:.0f} MiB")
    dcp_save = dcp_async_save()
    rows = []  # per commit: stall, durable, written, torch.save, dcp stall, dcp durable, dd
    for k in range(2, args.commits + 1):
        train_step(model, opt)
        stall, durable, rec = run.commit(ns)
        t_save = fsync_save(lambda f: torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, f),
                            tmp / "torch_save.pt")
        dcp_stall = dcp_durable = float("nan")
        if dcp_save is not None:
            try:
                dcp_stall, dcp_durable = dcp_save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp / f"dcp{k}")
            except Exception as exc:  # noqa: BLE001 - a baseline that does not run here is reported, not fatal
                print(f"DCP async_save does not run here: {type(exc).__name__}: {str(exc)[:160]}")
                dcp_save = None
            shutil.rmtree(tmp / f"dcp{k}", ignore_errors=True)
        # the disk's best: dd through the page cache or with direct I/O, whichever is faster now
        t_dd = min(dd_fsync(tmp / "dd.bin", rec.bytes_written), dd_fsync(tmp / "dd.bin", rec.bytes_written, True))
        rows.append((stall, durable, rec.bytes_written, t_save, dcp_stall, dcp_durable, t_dd))
        print(f"commit {k}: stall {stall * 1e3:.0f} ms, durable {durable:.2f} s, wrote {rec.bytes_written / MiB:.0f} MiB"
              f" (changed {changed / MiB:.0f} MiB); torch.save+fsync {t_save:.2f} s; DCP async_save stall "
              f"{dcp_stall * 1e3:.0f} ms, durable {dcp_durable:.2f} s; dd (best of page cache, direct) {t_dd:.2f} s")
    med = [statistics.median(col) for col in zip(*rows)]
    stall, durable, wrote, save, dcp_stall, dcp_durable, t_dd = med
    # throughput: each commit's bytes over its own time. The write path's: from the
    # end of the stall (the bytes are in staging) to durable, as dd's from its
    # start (its bytes are in its buffer); end to end: from the commit's start.
    dart_rate = statistics.median(r[2] / (r[1] - r[0]) for r in rows)
    dart_rate_all = statistics.median(r[2] / r[1] for r in rows)
    dd_rate = statistics.median(r[2] / r[6] for r in rows)
    checks = [
        ("stall / torch.save+fsync", stall / save, 0.1),
        ("time to durable / torch.save+fsync", durable / save, 1.0),
        ("time to durable / DCP async_save", durable / dcp_durable, 1.0),
        ("bytes written / changed bytes", wrote / changed, 1.1),
    ]
    print(f"medians: dart stall {stall * 1e3:.0f} ms, durable {durable:.2f} s; torch.save+fsync {save:.2f} s; "
          f"DCP async_save stall {dcp_stall * 1e3:.0f} ms, durable {dcp_durable:.2f} s; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, ratio, limit in checks:
        verdict = "n/a" if ratio != ratio else ("PASS" if ratio <= limit else "FAIL")
        print(f"{name}: {ratio:.3f} (target <= {limit}) {verdict}")
    rate = dart_rate / dd_rate
    print(f"durable throughput of the write path (staged -> durable): dart {dart_rate / 1e9:.2f} GB/s, "
          f"dd conv=fsync (best of page cache and oflag=direct) {dd_rate / 1e9:.2f} GB/s: "
          f"ratio {rate:.3f} (target >= 0.8) {'PASS' if rate >= 0.8 else 'FAIL'}")
    print(f"durable throughput end to end (stall included): dart {dart_rate_all / 1e9:.2f} GB/s, "
          f"ratio to dd {dart_rate_all / dd_rate:.3f}")
    last = rec
    result = {"run": run, "record": last, "torch_file": tmp / "torch_save.pt", "ns": ns}
    return result


def part_sparse(args, tmp: Path):
    print(f"\n## 2. sparse change: {args.array_gib} GiB float32 array, 4 KiB rows")
    rng = np.random.default_rng(0)
    rows = int(args.array_gib * (1 << 30)) // 4096
    table = rng.random((rows, 1024), dtype=np.float32)
    run = DartRun(tmp / "sparse.dart", staging=512 * MiB)
    run.commit({"table": table})
    for pct in (0.0, 0.1, 1.0, 10.0):
        n = int(rows * pct / 100)
        picked = rng.choice(rows, n, replace=False) if n else []
        table[picked] += 1.0
        stall, durable, rec = run.commit({"table": table})
        got = rec.bytes_written
        limit = 2 * n * 4096 + MiB
        print(f"{pct:5.1f} % rows changed ({n * 4096 / MiB:7.2f} MiB): wrote {got / MiB:7.2f} MiB, "
              f"limit {limit / MiB:7.2f} MiB {'PASS' if got <= limit else 'FAIL'}; stall {stall * 1e3:.0f} ms")
    run.close()
    for strategy, dirty in (("dirty pages", True), ("hashing", False)):
        if dirty and not available():
            print(f"detection, 0 % changed, {strategy}: unavailable here ({available().reason})")
            continue
        tracker = AdaptiveTracker(table.nbytes, 4096, dirty=dirty)
        tracker.changed(table)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            assert tracker.changed(table) == []
            times.append(time.perf_counter() - t0)
        tracker.close()
        t, limit = statistics.median(times) * 1e3, 10 if dirty else 100
        print(f"detection, 0 % changed, {strategy}: {t:.2f} ms (target <= {limit} ms) {'PASS' if t <= limit else 'FAIL'}")


def part_side_by_side(args, tmp: Path):
    import dill

    print("\n## 3. side by side: 10M parameters + Adam + 128 MiB array, 10 commits each, one step between")
    model, opt = make_model(10e6, width=1024)
    frozen = np.ones(32 * MiB, dtype=np.float32)
    # dill saves a module's globals: a module holding just the state (this script's
    # own globals include objects dill cannot pickle)
    session = types.ModuleType("__main__")
    rows = []

    def ten(name, save_one):
        torch.manual_seed(1)
        folder = tmp / name
        folder.mkdir()
        stalls = []
        for k in range(10):
            train_step(model, opt)
            stalls.append(save_one(folder, k))
        return statistics.median(stalls), dir_bytes(folder)

    run = DartRun(tmp / "side" / "dart.dart", staging=256 * MiB)
    durables = []

    def dart_one(folder, k):
        stall, durable, _ = run.commit({"model": model, "opt": opt, "frozen": frozen})
        durables.append(durable)
        return stall

    stall, _ = ten("side/dart-files", dart_one)
    run.close()
    rows.append(("dart", stall, statistics.median(durables), dir_bytes(tmp / "side" / "dart.dart")))

    def torch_one(folder, k):
        return fsync_save(lambda f: torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "frozen": frozen}, f),
                          folder / f"{k}.pt")

    def pickle_one(folder, k):
        return fsync_save(lambda f: pickle.dump({"model": model, "opt": opt, "frozen": frozen}, f, protocol=5),
                          folder / f"{k}.pkl")

    def dill_one(folder, k, objects=True):
        if objects:
            session.model, session.opt, session.frozen = model, opt, frozen
        else:
            session.model, session.opt, session.frozen = model.state_dict(), opt.state_dict(), frozen
        t0 = time.perf_counter()
        dump = getattr(dill, "dump_module", None)
        if dump is not None:
            dump(str(folder / f"{k}.session"), module=session)
        else:
            dill.dump_session(str(folder / f"{k}.session"), main=session)
        with open(folder / f"{k}.session", "rb+") as f:
            os.fsync(f.fileno())
        return time.perf_counter() - t0

    for name, fn in (("torch.save", torch_one), ("pickle 5", pickle_one), ("dill.dump_session", dill_one)):
        try:
            stall, size = ten(f"side/{name}", fn)
        except Exception as exc:  # dill cannot pickle torch's patched optimizer methods
            print(f"{name} failed on the objects: {type(exc).__name__}: {str(exc)[:120]}; "
                  "measured on the state dicts instead")
            name += " (state dicts)"
            stall, size = ten(f"side/{name}", lambda folder, k: dill_one(folder, k, objects=False))
        rows.append((name, stall, stall, size))
    base = rows[1][1]
    print(f"{'tool':<32}{'stall (median)':>16}{'durable':>10}{'vs torch.save':>15}{'disk after 10':>15}")
    for name, stall, durable, size in rows:
        print(f"{name:<32}{stall * 1e3:13.0f} ms{durable:9.2f}s{stall / base:14.3f}x{size / MiB:11.0f} MiB")


def part_restore(args, tmp: Path, trained: dict):
    print("\n## 4. restore of the last commit of part 1")
    run, record = trained["run"], trained["record"]
    objects = [run.store.object_path(oid) for oid in [record.state["index"], *record.state["objects"]]]
    total = sum(p.stat().st_size for p in objects)

    def read_all():
        for p in objects:
            with open(p, "rb", buffering=0) as f:
                buf = bytearray(p.stat().st_size)
                f.readinto(buf)

    t_read = timed(read_all, 3)
    t_load = timed(lambda: load_roots(run.store, record), 3)
    t_torch = timed(lambda: torch.load(trained["torch_file"], weights_only=False), 3)
    ratio = t_load / t_read
    print(f"dart load {t_load:.2f} s; reading its {total / MiB:.0f} MiB of objects {t_read:.2f} s: ratio {ratio:.2f} "
          f"(target <= 1.3) {'PASS' if ratio <= 1.3 else 'FAIL'}; torch.load of the model+optimizer file "
          f"{t_torch:.2f} s")
    roots = load_roots(run.store, record)
    ns = trained["ns"]
    same = all(torch.equal(a, b) for a, b in zip(roots["globals"]["model"].state_dict().values(),
                                                  ns["model"].state_dict().values()))
    print(f"restored model equals the committed one: {same}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, default=100e6, help="model parameters in part 1")
    parser.add_argument("--array-gib", type=float, default=1.0, help="size of the unchanged / sparse array")
    parser.add_argument("--commits", type=int, default=6, help="commits in part 1")
    parser.add_argument("--parts", default="1234", help="which parts to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, dirty tracking: {bool(available())}")
    with tempfile.TemporaryDirectory(prefix="dart-bench-") as tmp:
        tmp = Path(tmp)
        trained = None
        if "1" in args.parts or "4" in args.parts:
            trained = part_training(args, tmp)
        if "2" in args.parts:
            part_sparse(args, tmp)
        if "3" in args.parts:
            (tmp / "side").mkdir()
            part_side_by_side(args, tmp)
        if "4" in args.parts and trained:
            part_restore(args, tmp, trained)
        if trained:
            trained["run"].close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
