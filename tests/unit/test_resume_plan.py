"""Resume as a plan, and capture/restore of roots without a Session.

The store is made by a real `dart run` of a small script that stops inside a
function's loop; the plan is then computed in this process with no Session at
all, checked, and applied by hand the way Session.apply does.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from dart.astpath import annotate_paths
from dart.capture import restore_snapshot, snapshot
from dart.errors import ResumeError
from dart.resume.restore import Program, plan_resume
from dart.store import open_store

SCRIPT = textwrap.dedent(
    """
    import sys

    history = []

    def train(n):
        total = 0
        for i in range(n):
            total += i
            history.append(total)
            if i == 3 and len(sys.argv) > 1:
                raise SystemExit(3)
        return total

    result = train(6)
    print("result", result, history)
    """
)


@pytest.fixture
def stopped_run(tmp_path):
    script = tmp_path / "train_plan.py"
    script.write_text(SCRIPT)
    store = tmp_path / ".dart"
    done = subprocess.run(
        [sys.executable, "-m", "dart", "run", "--store", str(store), "--every", "0", str(script), "stop"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 3, done.stderr
    return script, open_store(store, create=False)


def _program(script, run_id="r"):
    module = types.ModuleType("__main__")
    module.__file__ = str(script)
    source = script.read_text()
    tree = annotate_paths(ast.parse(source, str(script)))
    import xxhash

    return Program(module, script, tree, xxhash.xxh3_64_hexdigest(source.encode()), run_id)


def test_plan_says_what_to_do_and_applying_it_continues(stopped_run, capsys, monkeypatch):
    script, store = stopped_run
    record = next(r for r in store.log() if r.resumable)
    before = record.position
    program = _program(script)
    plan = plan_resume(program, record, store)

    assert record.position == before  # the record is not edited
    assert [f["qualname"] for f in plan.position["frames"]] == ["<module>", "train"]
    assert plan.position["frames"][1]["loops"][0]["target"] == "i=2"  # the last iteration that ended
    assert not plan.edited and plan.problems == []
    [(namespace, values)] = plan.namespaces
    assert namespace is program.module.__dict__
    assert values["history"] == [0, 1, 3]
    assert "history" not in namespace  # not applied yet: only the prologue ran
    assert callable(namespace["train"])
    [arm] = plan.arms
    assert arm.function is namespace["train"] and arm.variant is not arm.function.__code__
    assert plan.state is not None and plan.hidden is not None

    # Apply it as Session.apply does (no monitor here) and run the continuation.
    monkeypatch.setattr(sys, "argv", [str(script)])
    namespace.update(values)
    arm.function.__code__ = arm.variant
    exec(plan.code, namespace)
    assert capsys.readouterr().out == "result 15 [0, 1, 3, 6, 10, 15]\n"
    assert arm.function.__code__ is not arm.variant  # put back at its first call


def test_plan_of_a_changed_loop_is_refused(stopped_run):
    script, store = stopped_run
    script.write_text(SCRIPT.replace("for i in range(n):", "for i in reversed(range(n)):"))
    record = next(r for r in store.log() if r.resumable)
    with pytest.raises(ResumeError) as info:
        plan_resume(_program(script), record, store)
    assert info.value.next_step == "fresh" and "train" in info.value.message


def test_snapshot_and_restore_roots_without_a_session():
    weights = np.arange(100_000, dtype=np.float32)
    view = weights[10:20]
    shared = {"lr": 0.1}
    roots = {"weights": weights, "view": view, "config": shared, "again": shared, "steps": [1, 2]}
    cut = snapshot(roots)
    weights[:] = -1  # live state changes after the snapshot
    shared["lr"] = 99
    back = restore_snapshot(cut)
    assert back["weights"][0] == 0 and back["weights"][-1] == 99_999
    assert np.shares_memory(back["view"], back["weights"]) and back["view"][0] == 10
    assert back["config"] is back["again"] and back["config"] == {"lr": 0.1}
    assert back["steps"] == [1, 2]
