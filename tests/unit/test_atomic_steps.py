"""monitor/steps.py with rollback.Step, in this process (the session wires the same two
for `dart run --atomic-steps`): where iterations begin and end, and what a caught
exception rolls back."""

from __future__ import annotations

import ast
import textwrap

import pytest

from dart import rollback
from dart.monitor.steps import AtomicSteps, module_loops


def run_with_steps(source: str) -> dict:
    source = textwrap.dedent(source)
    tree = ast.parse(source)
    code = compile(tree, "<steps>", "exec")
    namespace: dict = {}
    steps = AtomicSteps(code, tree, rollback.Step)
    steps.start()
    try:
        exec(code, namespace)
    finally:
        steps.stop()
    assert rollback.current() is None
    return namespace


def test_module_loops_skip_functions_and_classes():
    tree = ast.parse("for i in x:\n    a\n    while y:\n        b\ndef f():\n    for j in z:\n        c\n")
    assert [(l.header, l.first, l.last) for l in module_loops(tree)] == [(1, 2, 4), (3, 4, 4)]


def test_a_caught_failure_rolls_the_iteration_back_before_the_handler():
    ns = run_with_steps("""
        log, seen = [], []
        for i in range(5):
            log.append(i)
            try:
                log.append("partial")
                if i % 2:
                    raise ValueError(i)
                log.pop()
            except ValueError:
                seen.append(list(log))
    """)
    assert ns["log"] == [0, 2, 4]
    assert ns["seen"] == [[0], [0, 2]]  # the handler saw the state at the start of its iteration


def test_a_failure_caught_around_the_loop_rolls_back_only_the_failing_iteration():
    ns = run_with_steps("""
        log = []
        try:
            for i in range(5):
                log.append(i)
                if i == 3:
                    log.append("partial")
                    raise KeyError(i)
        except KeyError:
            pass
    """)
    assert ns["log"] == [0, 1, 2]


def test_nested_loops_each_iteration_is_a_step():
    ns = run_with_steps("""
        log = []
        for i in range(3):
            for j in range(3):
                log.append((i, j))
                try:
                    if j == 1:
                        log.append("partial")
                        raise ValueError
                except ValueError:
                    pass
            log.append(("end", i))
    """)
    # the failing inner iteration (j == 1) is undone; the outer iteration goes on
    assert ns["log"] == [x for i in range(3) for x in ((i, 0), (i, 2), ("end", i))]


def test_without_steps_the_partial_changes_stay():
    source = "log = []\nfor i in range(2):\n    try:\n        log.append(i)\n        raise ValueError\n    except ValueError:\n        pass\n"
    namespace: dict = {}
    exec(compile(source, "<plain>", "exec"), namespace)
    assert namespace["log"] == [0, 1]
    assert run_with_steps(source)["log"] == []


@pytest.mark.parametrize("stop", ["break", "continue"])
def test_break_and_continue_end_the_step(stop):
    ns = run_with_steps(f"""
        log = []
        for i in range(4):
            log.append(i)
            if i == 1:
                {stop}
        try:
            raise ValueError
        except ValueError:
            log.append("after")
    """)
    assert ns["log"] == ([0, 1, "after"] if stop == "break" else [0, 1, 2, 3, "after"])
