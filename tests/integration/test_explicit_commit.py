"""Explicit commits: every form of ``dart.commit()`` the README shows saves the
whole call path (the locals of main() and of the method it calls), so a run
SIGKILLed right after one resumes from there with the same result as a plain
run; any other form says, in a warning, that it cannot be resumed from."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import PYTHON, child_env, dart_cmd, plain_cmd, run

SCRIPT = '''import os, signal, sys
import dart

FORM, WHERE = sys.argv[1], sys.argv[2]
if os.environ.get("PLAIN_RUN"):  # the reference run, without dart
    class _Durable:
        def wait(self):
            return "0" * 64

    class dart:
        commit = staticmethod(lambda message=None: _Durable())
        flush = staticmethod(lambda: None)


class Trainer:
    def __init__(self):
        self.weights = [0.5] * 64

    def fit(self, steps):
        history = []
        for step in range(steps):
            self.weights = [w * 1.01 + step for w in self.weights]
            history.append(round(sum(self.weights), 6))
            if FORM == "bare":
                dart.commit("step")
                dart.flush()
            elif FORM == "assign":
                h = dart.commit("step")
                h.wait()
            elif FORM == "chain":
                dart.commit("step").wait()
            elif FORM == "assign_id":
                cid = dart.commit("step").wait()
                assert isinstance(cid, str) and cid, cid
            if step == 2 and os.environ.get("KILL_AT_2"):
                os.kill(os.getpid(), signal.SIGKILL)
            print("step", step, history[-1], flush=True)
        return history


def main():
    if WHERE == "method":
        trainer = Trainer()
        history = trainer.fit(5)
        print("result", history)
        return
    model = {"w": [0.25] * 64}
    total = 0.0
    for step in range(5):
        model["w"] = [w * 1.02 + step for w in model["w"]]
        total += sum(model["w"])
        if FORM == "bare":
            dart.commit("step")
            dart.flush()
        elif FORM == "assign":
            h = dart.commit("step")
            assert isinstance(h.wait(), str)
        elif FORM == "chain":
            dart.commit("step").wait()
        elif FORM == "assign_id":
            cid = dart.commit("step").wait()
            assert isinstance(cid, str) and cid, cid
        if step == 2 and os.environ.get("KILL_AT_2"):
            os.kill(os.getpid(), signal.SIGKILL)
        print("step", step, round(total, 6), flush=True)
    print("result", round(total, 6), round(sum(model["w"]), 6))


if __name__ == "__main__":
    main()
'''


def _newest(store, cwd) -> dict:
    out = subprocess.run([PYTHON, "-m", "dart", "log", "--store", str(store), "--json"], cwd=cwd, env=child_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    commits = json.loads(out.stdout)
    commits = commits["commits"] if isinstance(commits, dict) else commits
    return commits[0]


@pytest.mark.parametrize("where", ["function", "method"])
@pytest.mark.parametrize("form", ["bare", "assign", "chain", "assign_id"])
def test_each_explicit_form_resumes_inside_the_call_path(tmp_path, form, where):
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    reference = run(plain_cmd(path, form, where), tmp_path, env=child_env(PLAIN_RUN="1"))
    store = tmp_path / ".dart"
    cmd = dart_cmd(path, form, where, store=store, every="never")
    killed = run(cmd, tmp_path, env=child_env(KILL_AT_2="1"))
    assert killed.returncode == -9, killed.describe()
    assert "cannot be resumed" not in killed.stderr, killed.describe()
    newest = _newest(store, tmp_path)
    assert newest["resumable"], newest
    frames = newest["location"]["frames"]
    assert [f["qualname"] for f in frames][-1] == ("Trainer.fit" if where == "method" else "main"), frames
    resumed = run(cmd, tmp_path)
    assert resumed.returncode == 0, resumed.describe()
    assert "resuming" in resumed.stderr, resumed.describe()
    # The killed run printed nothing for step 2 (killed before the print), the
    # resumed one starts right after the commit of step 2.
    assert killed.lines + resumed.lines == reference.lines, (killed.describe(), resumed.describe())


@pytest.mark.parametrize("statement", ["print(dart.commit().wait())", "handles.append(dart.commit())"])
def test_other_forms_warn_that_they_cannot_be_resumed(tmp_path, statement):
    path = tmp_path / "other.py"
    path.write_text(
        "import dart\n\ndef main():\n    handles = []\n    model = [1.0] * 8\n"
        f"    for step in range(2):\n        {statement}\n    dart.flush()\n    print('done')\n\n"
        "if __name__ == '__main__':\n    main()\n"
    )
    result = run(dart_cmd(path, store=tmp_path / ".dart", every="never"), tmp_path)
    assert result.returncode == 0, result.describe()
    assert "dart.commit() at other.py:7" in result.stderr and "cannot be resumed from" in result.stderr, result.describe()
    assert "statement of its own" in result.stderr, result.describe()
    assert result.stderr.count("cannot be resumed") == 1, result.describe()  # once per place, not per commit
