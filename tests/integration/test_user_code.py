"""User code beyond the main script: a module in the script's folder holds the
training loop; killed runs resume inside it, also after the module was edited."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from dart.store import open_store
from conftest import PYTHON, check_resumed, child_env, dart_cmd, plain_cmd, run, run_and_kill

TRAINER = '''import random
import time


class Trainer:
    def __init__(self, steps):
        self.steps = steps
        self.total = 0.0

    def fit(self, epochs):
        for epoch in range(epochs):
            for step in range(self.steps):
                self.total += random.random()
                time.sleep(0.03)
            print("epoch", epoch, round(self.total, 6), flush=True)
        return self.total
'''

MAIN = '''import random
from trainer import Trainer


def main():
    random.seed(7)
    trainer = Trainer(5)
    result = trainer.fit(6)
    print("result", round(result, 6))


if __name__ == "__main__":
    main()
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "trainer.py").write_text(TRAINER)
    (tmp_path / "main.py").write_text(MAIN)
    reference = run(plain_cmd(tmp_path / "main.py"), tmp_path).lines
    assert len(reference) == 7
    return tmp_path, reference


def joined(killed, resumed, reference, repeat=1):
    k = killed.lines
    return any(k[:m] + resumed.lines == reference for m in range(max(0, len(k) - repeat), len(k) + 1))


@pytest.mark.slow
def test_resume_inside_a_method_of_a_local_module(project):
    folder, reference = project
    cmd = dart_cmd(folder / "main.py", store=folder / ".dart", every="0")
    killed = run_and_kill(cmd, folder, after_lines=2, extra_delay=0.05)
    resumed = run(cmd, folder)
    assert resumed.returncode == 0, resumed.describe()
    assert "Trainer.fit()" in resumed.stderr and "resuming" in resumed.stderr, resumed.describe()
    assert joined(killed, resumed, reference), resumed.describe()


@pytest.mark.slow
def test_edited_module_resumes_with_the_edit(project):
    """Lines added above and inside the loop shift every line number; dart
    finds the saved loops again by what they loop over."""
    folder, reference = project
    cmd = dart_cmd(folder / "main.py", store=folder / ".dart", every="0")
    killed = run_and_kill(cmd, folder, after_lines=2, extra_delay=0.05)
    edited = TRAINER.replace(
        "    def fit(self, epochs):\n",
        "    def fit(self, epochs):\n        note = 'edited'\n        assert note\n",
    ).replace("            for step in range(self.steps):\n", "            checked = True\n            for step in range(self.steps):\n")
    (folder / "trainer.py").write_text(edited)
    resumed = run(cmd, folder)
    assert resumed.returncode == 0, resumed.describe()
    assert "changed since commit" in resumed.stderr or "resuming" in resumed.stderr
    assert joined(killed, resumed, reference), resumed.describe()


@pytest.mark.slow
def test_a_changed_saved_loop_is_named_and_fresh_suggested(project):
    folder, _ = project
    cmd = dart_cmd(folder / "main.py", store=folder / ".dart", every="0")

    def inside_the_inner_loop() -> bool:
        # The two newest records are (the newest may not be durable yet, the one
        # before it is: under --every 0 the program waits for each commit), and
        # early enough in the inner loop that its end (an outer commit) is 60+ ms off.
        try:
            newest = open_store(folder / ".dart", create=False).log()[:2]
        except Exception:  # not created yet, or being written: look again
            return False
        inside = len(newest) == 2 and all("for@12" in record.where for record in newest)
        return inside and any(f"for@12[step={k}]" in newest[0].where for k in (1, 2))

    child = subprocess.Popen([str(c) for c in cmd], cwd=folder, env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while child.poll() is None and not inside_the_inner_loop() and time.monotonic() < deadline:
        time.sleep(0.003)
    landed = child.poll() is None
    child.kill()
    child.wait()
    assert landed, "the run ended before a commit inside the inner loop was seen"
    (folder / "trainer.py").write_text(TRAINER.replace("range(self.steps)", "range(self.steps + 1)"))
    resumed = run(cmd, folder)
    assert resumed.returncode == 2, resumed.describe()
    assert "for step in range(self.steps)" in resumed.stderr and "--fresh" in resumed.stderr, resumed.describe()
    assert resumed.stdout == ""


@pytest.mark.slow
def test_local_modules_can_be_switched_off(project):
    folder, reference = project
    env = child_env(DART_LOCAL_MODULES="0")
    result = run(dart_cmd(folder / "main.py", store=folder / ".dart", every="0"), folder, env=env)
    assert result.returncode == 0 and result.lines == reference, result.describe()
    log = run([PYTHON, "-m", "dart", "log", "--store", str(folder / ".dart"), "--json"], folder)
    assert "Trainer.fit" not in log.stdout, log.stdout[:2000]


LAUNCHER = '''import sys


def cli(component):
    """A pass-through launcher in the style of fire.Fire / tyro.cli: parses
    argv, then calls the user's function once, two frames down."""
    return _dispatch(component, sys.argv[1:])


def _dispatch(component, argv):
    options = dict(arg.split("=", 1) for arg in argv)
    return component(**{k: int(v) for k, v in options.items()})
'''

LAUNCHED = '''import hashlib
import random
import time

from launcher import cli


def train(epochs, steps):
    random.seed(3)
    total = 0.0
    for epoch in range(epochs):
        for step in range(steps):
            total += random.random()
            time.sleep(0.02)
        print("epoch", epoch, round(total, 6), flush=True)
    print("sha256", hashlib.sha256(repr((total, random.random())).encode()).hexdigest())


if __name__ == "__main__":
    cli(train)
'''


@pytest.mark.slow
def test_resume_through_a_pass_through_launcher(tmp_path):
    """``cli(train)`` where cli is library code that calls train through frames
    that all hold it: commits happen inside train and the re-run resumes there."""
    lib, project = tmp_path / "lib", tmp_path / "project"
    lib.mkdir()
    project.mkdir()
    (lib / "launcher.py").write_text(LAUNCHER)
    (project / "main.py").write_text(LAUNCHED)
    env = child_env(PYTHONPATH=os.pathsep.join(filter(None, [str(lib), os.environ.get("PYTHONPATH")])))
    args = ("epochs=8", "steps=5")
    reference = run(plain_cmd(project / "main.py", *args), project, env=env).lines
    assert len(reference) == 9
    store = project / ".dart"
    cmd = dart_cmd(project / "main.py", *args, store=store, every="0")
    killed = run_and_kill(cmd, project, env=env, after_lines=4, extra_delay=0.05)
    assert "dart cannot continue" not in killed.stderr, killed.describe()
    resumed = run(cmd, project, env=env)
    assert "train() for@" in resumed.stderr, resumed.describe()  # resumed inside train's loop
    check_resumed(reference, killed, resumed, max_repeated=1)


ANNOTATED = '''
import dataclasses
import hashlib
import time
import typing


@dataclasses.dataclass
class Config:
    lr: float = 0.1
    tags: typing.ClassVar[list] = []


def step(x: int, scale: float = 2.0) -> float:
    return x * scale


def main():
    seen = []
    for i in range(10):
        seen.append(repr((step.__annotations__, Config.__annotations__, typing.get_type_hints(step))))
        print(i, seen[-1], flush=True)
        time.sleep(0.05)
    print("sha256", hashlib.sha256("".join(seen).encode()).hexdigest())


main()
'''


def test_the_script_gets_real_annotations_on_a_first_run_and_on_resume(tmp_path):
    """dart's modules use ``from __future__ import annotations``; compiling the
    script without dont_inherit passed it on, so annotations became strings
    under dart (tyro / pydantic-style configs then see other types)."""
    path = tmp_path / "annotated.py"
    path.write_text(ANNOTATED)
    ref = run(plain_cmd(path), tmp_path)
    assert ref.returncode == 0 and "<class 'int'>" in ref.lines[0], ref.describe()
    store = tmp_path / "store"
    killed = run_and_kill(dart_cmd(path, store=store), tmp_path, after_lines=4)
    assert killed.lines and killed.lines[0] == ref.lines[0], killed.describe()
    resumed = run(dart_cmd(path, store=store), tmp_path)
    check_resumed(ref.lines, killed, resumed, 1)


RECEIVERS = '''
import functools
import hashlib
import random
import time

built = []


def traced(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        print("traced", method.__name__, flush=True)
        return method(self, *args, **kwargs)
    return wrapper


class Trainer:
    def __init__(self, cfg):
        built.append(cfg["seed"])
        print("built", cfg["seed"], len(built), flush=True)
        self.rng = random.Random(cfg["seed"])
        self.w = 0.0

    @staticmethod
    def make(seed):
        return Trainer({"seed": seed})

    def fit(self, epochs):
        for epoch in range(epochs):
            for _ in range(4):
                self.w += self.rng.random()
                time.sleep(0.02)
            print("fit", epoch, round(self.w, 6), flush=True)
        return self.w

    @traced
    def tune(self, rounds):
        for r in range(rounds):
            self.w -= self.rng.random() / 4
            time.sleep(0.06)
            print("tune", r, round(self.w, 6), flush=True)
        return self.w

    @staticmethod
    def summarize(values):
        total = 0.0
        for v in values:
            total += v
            time.sleep(0.06)
            print("sum", round(total, 6), flush=True)
        return total


def load_cfg():
    print("load_cfg", flush=True)
    return {"seed": 5}


def main():
    a = Trainer(load_cfg()).fit(4)
    b = Trainer.make(seed=6).tune(rounds=4)
    c = Trainer.make(7).summarize([a, b, 0.125])
    print("sha256", hashlib.sha256(repr((round(a, 9), round(b, 9), round(c, 9), built)).encode()).hexdigest())


if __name__ == "__main__":
    main()
'''


@pytest.mark.slow
@pytest.mark.parametrize("after_lines", [3, 10, 14])
def test_a_method_called_on_a_computed_receiver_resumes_without_computing_it_again(tmp_path, after_lines):
    """``Trainer(load_cfg()).fit(4)``: the receiver is made by calls (which print and
    count) that the re-run statement must not make again; the method resumes with its
    own ``self``. Also a decorated method and a static method on a computed receiver."""
    (tmp_path / "main.py").write_text(RECEIVERS)
    reference = run(plain_cmd(tmp_path / "main.py"), tmp_path).lines
    assert len(reference) == 17, reference
    cmd = dart_cmd(tmp_path / "main.py", store=tmp_path / ".dart", every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=after_lines, extra_delay=0.03)
    assert "would call something else first" not in killed.stderr, killed.describe()
    resumed = run(cmd, tmp_path)
    assert "resuming" in resumed.stderr and "Trainer." in resumed.stderr, resumed.describe()
    check_resumed(reference, killed, resumed, max_repeated=1)


WRAPPED = '''
import contextlib
import hashlib
import time


def timed(fn):  # no functools.wraps
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


class Counted:  # a decorator object
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


class FetchError(Exception):
    def __init__(self, url, status):  # not the exception's args: pickle alone cannot load it
        super().__init__(f"{url} -> {status}")
        self.status = status


@timed
def collect(n, failures):
    for i in range(n):
        if i % 3 == 1:
            failures.append(FetchError(f"http://x/{i}", 500 + i))
        time.sleep(0.04)
        print("collect", i, len(failures), flush=True)
    return failures


@Counted
def tally(failures, log):
    total = 0
    with contextlib.ExitStack() as stack:
        stack.callback(log.append, "closed")
        for f in failures:
            total += f.status
            time.sleep(0.04)
            print("tally", total, flush=True)
    return total


def main():
    log = []
    failures = collect(12, [])
    total = tally(failures, log)
    print("sha256", hashlib.sha256(repr((total, log, tally.calls, [f.args for f in failures])).encode()).hexdigest())


if __name__ == "__main__":
    main()
'''


@pytest.mark.slow
@pytest.mark.parametrize("after_lines", [4, 14])
def test_decorators_without_wraps_exceptions_and_exit_stacks_resume(tmp_path, after_lines):
    """A decorator written without functools.wraps and a decorator object around the
    function holding the loop (resume found neither), exceptions whose __init__ takes
    other arguments than their args (their commits could not be loaded) and an ExitStack
    whose callback must run once at the end (a new, empty stack was entered)."""
    (tmp_path / "main.py").write_text(WRAPPED)
    reference = run(plain_cmd(tmp_path / "main.py"), tmp_path).lines
    assert len(reference) == 17, reference
    cmd = dart_cmd(tmp_path / "main.py", store=tmp_path / ".dart", every="0")
    killed = run_and_kill(cmd, tmp_path, after_lines=after_lines, extra_delay=0.02)
    resumed = run(cmd, tmp_path)
    assert "resuming" in resumed.stderr and "no longer defines" not in resumed.stderr, resumed.describe()
    check_resumed(reference, killed, resumed, max_repeated=1)
