"""Functions and classes that no top-level ``def``/``class`` of their module
defines (in a loop body, a branch, ``main()``) are saved by value and load in a
fresh process that never defined them; top-level ones stay references. And the
call-path rule for calls nested in the call's arguments."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import pytest

from dart.capture.path import blanked_arguments, call_on_path, call_position
from dart.resume.continuation import blank_arguments
from dart.errors import ResumeError

SAVER = textwrap.dedent(
    '''
    import sys, pickle
    from dart.capture import pickler
    import __main__

    def top(x):
        return x + 1

    for i in range(3):
        def in_loop(x, i=i):
            return x * 10 + i

    if True:
        class InBranch:
            def __init__(self, v):
                self.v = v
            @property
            def double(self):
                return 2 * self.v

    def main():
        scale = 7
        class Local(InBranch):
            __slots__ = ("extra",)
            def total(self):
                return super().double + scale
            @staticmethod
            def name():
                return "local"
            @classmethod
            def make(cls, v):
                return cls(v)
        obj = Local.make(5)
        obj.extra = "x"
        return obj

    state = {"top": top, "in_loop": in_loop, "obj": main(), "lam": lambda y: y - 1}
    data, buffers = pickler.dumps(state, main_module=__main__)
    assert not buffers
    open(sys.argv[1], "wb").write(data)
    '''
)

LOADER = textwrap.dedent(
    '''
    import sys
    from dart.capture import pickler

    def top(x):  # what resume re-runs before loading: the top-level definitions only
        return x + 1

    state = pickler.loads(open(sys.argv[1], "rb").read(), [], main_namespace={"top": top})
    obj = state["obj"]
    print(state["top"] is top, state["in_loop"](4), obj.total(), obj.name(), obj.extra,
          type(obj).__name__, type(obj).__mro__[1].__name__, state["lam"](3))
    '''
)


def test_definitions_not_at_the_top_load_in_a_fresh_process(tmp_path):
    saver, loader, data = tmp_path / "saver.py", tmp_path / "loader.py", tmp_path / "state.pickle"
    saver.write_text(SAVER)
    loader.write_text(LOADER)
    subprocess.run([sys.executable, str(saver), str(data)], check=True, capture_output=True, text=True)
    out = subprocess.run([sys.executable, str(loader), str(data)], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "42", "17", "local", "x", "Local", "InBranch", "2"]


def _stmt(source: str) -> ast.stmt:
    return ast.parse(source).body[0]


def _call(stmt: ast.stmt, name: str) -> ast.Call:
    return next(
        n for n in ast.walk(stmt)
        if isinstance(n, ast.Call) and (getattr(n.func, "attr", None) == name or getattr(n.func, "id", None) == name)
    )


def _pos(call: ast.Call):
    return (call.lineno, call.end_lineno, call.col_offset, call.end_col_offset)


@pytest.mark.parametrize(
    "source,callee,ok,blanked",
    [
        ("return self.head(self.body(x))", "head", True, True),
        ("data = self.tokenize(self.clean(path), lower=norm(x))", "tokenize", True, True),
        ("print(train(load()))", "train", True, True),
        ("y = f(x)", "f", True, False),
        ("print(f(x))", "f", True, False),
        ("y = g() + f(x)", "f", False, False),
        ("make_trainer().fit(x)", "fit", True, False),
        ("history = Trainer(load_cfg(), seed=1).fit(data)", "fit", True, False),
        ("out = trainers[pick()].fit(x)", "fit", True, False),
        ("y = fit(x).save(path())", "fit", False, False),
        ("super().fit(x)", "fit", True, False),
        ("return super(Child, self).step(batch)", "step", True, False),
        ("f(*g())", "f", False, False),
        ("f(**g())", "f", False, False),
        ("r = [f(c) for c in cs]", "f", False, False),
        ("fit([load(p) for p in paths], key=lambda v: v)", "fit", True, True),
        ("fit(sorted(xs, key=lambda v: -v))", "fit", True, True),
        ("r = fit(x) + sum(g(y) for y in ys)", "fit", False, False),
    ],
)
def test_which_statements_can_be_re_run(source, callee, ok, blanked):
    stmt = _stmt(source)
    target = call_on_path(stmt, _pos(_call(stmt, callee)))
    assert (target is not None) == ok
    if ok:
        assert blanked_arguments(target) == blanked


def test_placeholders_replace_the_arguments_of_the_call_on_the_path_only():
    source = "\n\nout = log(self.head(self.body(x), scale=k()))"
    stmt = ast.parse(source).body[0]
    position = call_position(_call(stmt, "head"), stmt)
    moved = ast.parse("\n\n\n\n" + source).body[0]  # lines added above the statement
    blank_arguments(moved, position)
    assert ast.unparse(moved) == "out = log(self.head(None, scale=None))"
    edited = ast.parse("out = log(self.other(self.body(x)))").body[0]
    with pytest.raises(ResumeError, match="edited"):
        blank_arguments(edited, position)


class Box:
    def total(self):
        return 41


def test_a_wraps_wrapper_and_its_weak_reference_round_trip():
    """A library's functools.wraps wrapper (made in a function, its __qualname__
    copied from the function it wraps, a weak reference in its closure), as an LR
    scheduler puts on optimizer.step: saved by value, the weak reference to an
    object the state holds still alive after loading, a dead one dead."""
    import functools
    import weakref

    from dart.capture import pickler

    def wrap(box):
        box_ref = weakref.ref(box)
        func = Box.total

        @functools.wraps(func)
        def wrapper():
            return func(box_ref()) + 1

        return wrapper

    box = Box()
    box.total_plus = wrap(box)
    gone = weakref.ref(Box())
    data, buffers = pickler.dumps({"box": box, "gone": gone})
    state = pickler.loads(data, buffers)
    assert state["box"].total_plus() == 42
    assert state["box"].total_plus.__qualname__ == Box.total.__qualname__
    assert state["box"].total_plus.__closure__[0].cell_contents() is state["box"]
    assert state["gone"]() is None


def test_a_computed_receiver_is_replaced_by_a_direct_call_of_the_callee():
    from dart.capture.path import computed_receiver

    stmt = _stmt("history = Trainer(cfg, seed=1).fit(data)")
    assert ast.unparse(computed_receiver(_call(stmt, "fit"))) == "Trainer(cfg, seed=1)"
    assert computed_receiver(_call(_stmt("super().fit(data)"), "fit")) is None
    assert computed_receiver(_call(_stmt("self.model.fit(data)"), "fit")) is None
    position = call_position(_call(stmt, "fit"), stmt)
    blank_arguments(stmt, position, callee=2)
    assert ast.unparse(stmt) == "history = __dart_callee_2__(*__dart_self_2__, None)"
    # a later commit inside the resumed call sees the direct call and keeps it so
    target = call_on_path(stmt, _pos(stmt.value))
    assert target is not None and computed_receiver(target) is not None
