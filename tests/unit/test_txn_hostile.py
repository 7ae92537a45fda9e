"""Hostile tests for dart.transaction / @dart.atomic / --atomic-steps (issue 12).

Written by a hostile review round to find bugs: each test states what issue 12 or
the README promises and checks it against the real thing (real objects, real
subprocesses, real SIGKILL). Tests whose failure could crash the interpreter run in
a child. The ones that found a bug now fixed stay here; those that found gaps still
open (class and module attributes, closure cells, function attributes and defaults,
the global random generators, resizing after a transaction, writes through a second
mapping, tasks inheriting the transaction context, ...) are listed in the issue's
closing note, not kept as failing tests.
"""

from __future__ import annotations

import array
import collections
import copy
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dart
from dart import rollback
from dart.delta import available

SRC = Path(dart.__file__).resolve().parent.parent
BIG = rollback.SHADOW_MIN // 8 * 3  # float64 elements: big enough to be shadowed


#: The tests that kill real subprocesses run in one of CI's two suites (one per Python,
#: run at the same time): DART_TEST_SHARE="k/n" (see tests/integration/test_resume_corpus.py).
in_one_suite = pytest.mark.skipif(
    os.environ.get("DART_TEST_SHARE", "0/1").split("/")[0] != "0",
    reason="runs in the other suite of this CI run (DART_TEST_SHARE)",
)


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def _clean_shadows():
    rollback.release_shadows()
    yield
    rollback.release_shadows()
    assert not rollback.is_open(), "a transaction was left open"


@pytest.fixture(params=["dirty", "hash"])
def tracking(request, monkeypatch):
    if request.param == "dirty" and not available():
        pytest.skip(f"no kernel dirty-page tracking here: {available().reason}")
    if request.param == "hash":
        monkeypatch.setattr(rollback, "available", lambda: False)
    return request.param


def fails(block, *roots, **kwargs):
    with pytest.raises(Boom):
        with dart.transaction(*roots, **kwargs):
            block()
            raise Boom


def child_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DART_")}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_child(code: str, tmp_path, *args, timeout=60, env=None):
    """Run ``code`` as a real script in a child (for what might crash the interpreter)."""
    path = tmp_path / f"child_{time.monotonic_ns()}.py"
    path.write_text(textwrap.dedent(code))
    proc = subprocess.run([sys.executable, *args, str(path)], cwd=tmp_path, env=env or child_env(),
                          capture_output=True, text=True, timeout=timeout)
    return proc


def describe(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr[-4000:]}"


# == state Python code keeps outside instances and containers ========================


class Model:
    counter = 0
    registry: list = []




def test_class_attribute_mutated_in_place_rolls_back():
    Model.registry = []
    registry = Model.registry

    def block():
        Model.registry.append("x")

    fails(block)
    assert registry == [] and Model.registry is registry




def make_counter():
    count = 0

    def bump():
        nonlocal count
        count += 1
        return count

    return bump




def test_nonlocal_rebinding_in_the_enclosing_function_rolls_back():
    total = 10
    seen = lambda: total  # noqa: E731 - makes total a cell variable of this frame

    def inner():
        nonlocal total
        with pytest.raises(Boom):
            with dart.transaction():
                total = 99
                raise Boom

    inner()
    assert total == 10 and seen() == 10


def test_cell_variable_of_the_with_frame_rolls_back():
    x = [1]
    y = 1
    get = lambda: (x, y)  # noqa: E731 - x and y are cells of this frame
    original = x
    with pytest.raises(Boom):
        with dart.transaction():
            x = [2]
            y = 2
            raise Boom
    assert get() == ([1], 1) and get()[0] is original










def test_defaultdict_default_factory_and_ordereddict_order_roll_back():
    dd = collections.defaultdict(list, a=[1])
    od = collections.OrderedDict([("a", 1), ("b", 2), ("c", 3)])

    def block():
        dd["new"].append(1)
        dd.default_factory = set
        od.move_to_end("a")
        od["b"] = 20

    fails(block)
    assert list(od.items()) == [("a", 1), ("b", 2), ("c", 3)]
    assert dict(dd) == {"a": [1]}
    assert dd.default_factory is list, f"default_factory after rollback: {dd.default_factory}"


def test_counter_rolls_back_to_its_counts():
    """Counter.update(pairs) counts the pairs: a restore through the subclass's own
    update() corrupts it."""
    counter = collections.Counter("aab")
    fails(lambda: counter.update("zzz"))
    assert counter == collections.Counter("aab"), counter


class LowerDict(dict):
    """A user dict subclass that normalises keys in __setitem__ and update()."""

    def __setitem__(self, key, value):
        super().__setitem__(key.lower(), value)

    def update(self, *args, **kwargs):
        for k, v in dict(*args, **kwargs).items():
            self[k] = v * 10 if isinstance(v, int) else v


def test_dict_subclass_with_its_own_update_rolls_back_exactly():
    d = LowerDict()
    dict.__setitem__(d, "Key", 1)  # stored as is
    fails(lambda: d.__setitem__("other", 2))
    assert dict(d) == {"Key": 1}, dict(d)




def test_array_array_and_memoryview_of_bytearray_roll_back():
    arr = array.array("d", [1.0, 2.0, 3.0])
    buf = bytearray(b"abcdef")
    view = memoryview(buf)[2:4]

    def block():
        arr[0] = 9.0
        arr.append(4.0)
        view[0] = ord("Z")

    fails(block)
    assert arr.tolist() == [1.0, 2.0, 3.0] and bytes(buf) == b"abcdef"


@dataclasses.dataclass(slots=True)
class SlotData:
    a: int
    b: list


@dataclasses.dataclass(frozen=True)
class Frozen:
    items: list


def test_slotted_and_frozen_dataclasses_roll_back():
    s = SlotData(1, [1])
    f = Frozen([1, 2])
    inner = s.b

    def block():
        s.a = 2
        s.b.append(3)
        s.b = [7]
        f.items.append(3)
        object.__setattr__(f, "items", [])

    fails(block)
    assert s.a == 1 and s.b is inner and inner == [1] and f.items == [1, 2]


class WithSlotsAndDict:
    __slots__ = ("x", "__dict__")


def test_slots_plus_dict_and_deleted_attributes_roll_back():
    o = WithSlotsAndDict()
    o.x = 1
    o.y = 2

    def block():
        del o.x
        o.y = 3
        o.z = 4

    fails(block)
    assert o.x == 1 and vars(o) == {"y": 2}


def test_tuple_of_mutables_and_frozenset_members_roll_back():
    class Box:
        def __init__(self, v):
            self.v = v

        def __hash__(self):
            return 1

    inner = [1]
    box = Box(1)
    pair = (inner, {"k": 1})
    members = frozenset([box])

    def block():
        pair[0].append(2)
        pair[1]["k"] = 2
        box.v = 2

    fails(block, pair, members)
    assert pair == ([1], {"k": 1}) and pair[0] is inner and box.v == 1


def test_cycles_and_objects_moved_between_containers():
    a, b = [], {}
    a.append(b)
    b["a"] = a
    node = {"payload": [1, 2]}
    a.append(node)

    def block():
        b["moved"] = a.pop()  # the object moves into another container
        node["payload"].append(3)
        a.append(a)  # a new cycle

    fails(block)
    assert len(a) == 2 and a[0] is b and a[1] is node and set(b) == {"a"} and node == {"payload": [1, 2]}


def test_globals_added_and_deleted_in_the_block_are_put_back():
    g = globals()
    g["_hostile_existing"] = [1]
    existing = g["_hostile_existing"]

    def block():
        del g["_hostile_existing"]
        g["_hostile_new"] = 1

    fails(block)
    assert g["_hostile_existing"] is existing and "_hostile_new" not in g
    del g["_hostile_existing"]


def test_locals_of_callers_two_levels_up_are_rebound():
    def outer():
        level = "outer"
        items = [1]
        middle(items)
        return level, items

    def middle(items):
        level = "middle"
        inner()
        return level

    def inner():
        frame = sys._getframe(1)
        with pytest.raises(Boom):
            with dart.transaction():
                # a debugger-style rebinding in the callers (what the README says is covered)
                from dart import compat
                compat.rebind_locals(frame, {"level": "changed"})
                compat.rebind_locals(frame.f_back, {"level": "changed", "items": []})
                raise Boom
        assert frame.f_locals["level"] == "middle"
        assert frame.f_back.f_locals["level"] == "outer"

    assert outer() == ("outer", [1])


def test_deleted_local_is_rebound():
    value = [1]
    original = value
    with pytest.raises(Boom):
        with dart.transaction():
            del value
            raise Boom
    assert value is original  # noqa: F821 - rebound by the rollback


# == exceptions ======================================================================


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_roll_back_and_propagate(kind):
    state = {"n": 0}
    with pytest.raises(kind):
        with dart.transaction():
            state["n"] = 1
            raise kind()
    assert state == {"n": 0}


def test_the_users_exception_propagates_when_warnings_are_errors():
    """Under `python -W error` (or pytest filterwarnings=error) the DartWarning about
    what was not undone must not replace the program's own exception."""
    gen = (i for i in range(3))  # a generator: named as not undone
    state = {"n": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Boom):
            with dart.transaction():
                state["n"] = 1
                next(gen)
                raise Boom
    assert state == {"n": 0}


def test_exception_keeps_its_traceback_and_identity():
    exc = Boom("mine")
    with pytest.raises(Boom) as info:
        with dart.transaction():
            raise exc
    assert info.value is exc and info.traceback[-1].name == "test_exception_keeps_its_traceback_and_identity"


def test_reused_transaction_object_reports_its_own_block():
    t = dart.transaction()
    with pytest.raises(Boom):
        with t:
            fresh_in_first = 1  # noqa: F841
            raise Boom
    assert t.rolled_back
    with t:
        pass
    assert not t.rolled_back, "rolled_back still says True after a block that completed"
    assert not t.left_bound, f"left_bound still names the first block's locals: {t.left_bound}"


# == @dart.atomic ====================================================================


class Account:
    def __init__(self):
        self.balance = 100
        self.history = []

    @dart.atomic
    def withdraw(self, amount):
        self.balance -= amount
        self.history.append(-amount)
        if self.balance < 0:
            raise Boom("overdrawn")
        return self.balance


def test_atomic_on_a_method_rolls_back_self():
    acct = Account()
    assert acct.withdraw(30) == 70
    with pytest.raises(Boom):
        acct.withdraw(100)
    assert acct.balance == 70 and acct.history == [-30]


def test_atomic_recursive_function_inner_failure_caught_by_outer_call():
    log = []

    @dart.atomic
    def walk(depth, acc, fail_top=False):
        acc.append(depth)
        log.append(depth)
        if depth == 3:
            raise Boom
        try:
            walk(depth + 1, acc)
        except Boom:
            acc.append(f"caught at {depth}")
        if fail_top and depth == 1:
            raise Boom
        return acc

    # depth 3 fails, its call is rolled back, depth 2 catches it and completes
    acc = []
    assert walk(1, acc) == [1, 2, "caught at 2"] and log == [1, 2]
    # the outermost call fails after its inner calls completed: everything back
    log.clear()
    acc = []
    with pytest.raises(Boom):
        walk(1, acc, fail_top=True)
    assert acc == [] and log == []


def test_atomic_on_an_async_function_rolls_back_or_refuses():
    import asyncio

    state = {"n": 0}

    try:
        @dart.atomic
        async def update():
            state["n"] = 1
            await asyncio.sleep(0)
            raise Boom
    except (TypeError, dart.TransactionError):
        return  # refusing to decorate a coroutine function is a defined behaviour

    with pytest.raises(Boom):
        asyncio.run(update())
    assert state == {"n": 0}, "@dart.atomic on an async def ran its body outside any transaction"


def test_atomic_on_a_generator_function_rolls_back_or_refuses():
    state = {"n": 0}

    try:
        @dart.atomic
        def produce():
            state["n"] = 1
            yield 1
            raise Boom
    except (TypeError, dart.TransactionError):
        return

    with pytest.raises(Boom):
        list(produce())
    assert state == {"n": 0}, "@dart.atomic on a generator function ran its body outside any transaction"


def test_atomic_keyword_arguments_are_covered():
    @dart.atomic(frames=False)
    def update(*, table):
        table["x"] = 1
        raise Boom

    table = {}
    with pytest.raises(Boom):
        update(table=table)
    assert table == {}


# == nested transactions: a random tree of levels over a big buffer ===================


def _nested_plan():
    leaf = st.tuples(st.just("write"), st.integers(0, BIG - 1), st.integers(1, 9))
    return st.recursive(
        st.lists(leaf, max_size=4),
        lambda children: st.lists(
            st.one_of(leaf, st.tuples(st.just("txn"), st.booleans(), children)), max_size=4),
        max_leaves=12)


def _apply(plan, arr, model):
    """Run ``plan`` against ``arr`` in nested transactions and against ``model`` (a
    dict of writes) by hand: both must agree."""
    for item in plan:
        if item[0] == "write":
            _, index, value = item
            arr[index] = value
            model[index] = value
        else:
            _, fail, body = item
            saved = dict(model)
            try:
                with dart.transaction(arr, frames=False):
                    _apply(body, arr, model)
                    if fail:
                        raise Boom
            except Boom:
                model.clear()
                model.update(saved)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=_nested_plan(), outer_fails=st.booleans(), mode=st.sampled_from(["dirty", "hash"]))
def test_property_random_nesting_with_caught_inner_failures(plan, outer_fails, mode):
    if mode == "dirty" and not available():
        return
    real_available = rollback.available
    if mode == "hash":
        rollback.available = lambda: False
    try:
        rollback.release_shadows()
        arr = np.zeros(BIG)
        # writes before any transaction are in the shadow's past
        arr[5] = 1
        with dart.transaction(arr, frames=False):
            pass
        arr[6] = 2
        model = {5: 1, 6: 2}
        _apply([("txn", outer_fails, plan)], arr, model)
        expected = np.zeros(BIG)
        for k, v in model.items():
            expected[k] = v
        assert np.array_equal(arr, expected)
        # and the shadow is still in step: one more failing transaction is exact too
        arr[BIG // 2] = 3
        expected[BIG // 2] = 3
        with pytest.raises(Boom):
            with dart.transaction(arr, frames=False):
                arr[:] = -1
                raise Boom
        assert np.array_equal(arr, expected)
    finally:
        rollback.available = real_available
        rollback.release_shadows()


def test_inner_failure_caught_then_outer_failure_returns_to_the_outer_entry(tracking):
    a = np.arange(BIG, dtype=np.float64)
    expected = a.copy()
    small = {"v": 0}
    with pytest.raises(Boom):
        with dart.transaction():
            a[100_000] = -1
            small["v"] = 1
            with pytest.raises(Boom):
                with dart.transaction():
                    a[100_000] = -2
                    a[200_000] = -2
                    small["v"] = 2
                    raise Boom
            assert a[100_000] == -1 and a[200_000] == expected[200_000] and small["v"] == 1
            a[300_000] = -3
            raise Boom
    assert np.array_equal(a, expected) and small == {"v": 0}


# == NumPy edge cases ================================================================


def test_numpy_edge_arrays_roll_back_bit_identical():
    zero_d = np.array(3.5)
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    structured = np.zeros(4, dtype=[("a", "i4"), ("b", "f8", (2,))])
    obj = np.array([[1], {"k": 1}, "s"], dtype=object)
    inner_list = obj[0]
    base = np.arange(100.0)
    strided = base[::7]
    strided_2d = np.arange(60.0).reshape(6, 10)[1::2, ::3]
    complex_ = np.ones(5, dtype=np.complex128)
    bools = np.zeros(9, dtype=bool)
    big_view = np.zeros(BIG)[1000:-1000:3]
    as_strided = np.lib.stride_tricks.as_strided(np.arange(10.0), shape=(4,), strides=(16,))
    snapshot = [x.copy() for x in (zero_d, fortran, structured, base, strided_2d, complex_, bools, big_view, as_strided)]

    def block():
        zero_d[...] = 9
        fortran[1, :] = -1
        structured["b"][2] = (7, 8)
        structured[0]["a"] = 5
        obj[1]["k"] = 2
        obj[0].append(2)
        obj[2] = "changed"
        strided[:] = -5
        strided_2d[...] *= 0
        complex_[...] *= 1j
        bools[::2] = True
        big_view[...] += 1
        as_strided[:] = 42

    fails(block)
    for before, now in zip(snapshot, (zero_d, fortran, structured, base, strided_2d, complex_, bools, big_view,
                                      as_strided)):
        assert before.tobytes() == now.tobytes()
    assert obj[0] is inner_list and inner_list == [1] and obj[1] == {"k": 1} and obj[2] == "s"






def test_numpy_array_replaced_by_reallocation_in_a_list():
    """np.append/np.resize return new arrays: rebinding a slot of a container is undone."""
    holder = {"w": np.zeros(3)}
    original = holder["w"]

    def block():
        holder["w"] = np.append(holder["w"], 1.0)
        holder["w"] = np.resize(holder["w"], 10)

    fails(block)
    assert holder["w"] is original and original.shape == (3,)


def test_memmap_array_rolls_back(tmp_path):
    path = tmp_path / "m.bin"
    m = np.memmap(path, dtype=np.float64, mode="w+", shape=(BIG,))
    m[:] = 1.0
    m.flush()

    def block():
        m[10] = 5
        m[-1] = 5

    fails(block)
    assert m[10] == 1.0 and m[-1] == 1.0


# == torch ===========================================================================


def test_requires_grad_toggle_rolls_back():
    p = torch.nn.Parameter(torch.ones(3))
    t = torch.zeros(2)

    def block():
        p.requires_grad_(False)
        t.requires_grad_(True)

    fails(block)
    assert p.requires_grad is True and t.requires_grad is False


def test_module_dtype_conversion_rolls_back():
    """`model.double()` rebinds each parameter's .data to a new dtype: undone too."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    weight = model.weight
    before = weight.detach().clone()

    def block():
        model.double()

    fails(block)
    assert model.weight is weight
    assert weight.dtype == torch.float32, f"dtype after rollback: {weight.dtype}"
    assert torch.equal(weight.detach(), before)


def test_tensor_data_rebound_to_another_dtype_rolls_back():
    t = torch.arange(6, dtype=torch.float32)

    def block():
        t.data = torch.zeros(6, dtype=torch.float16)

    fails(block)
    assert t.dtype == torch.float32 and torch.equal(t, torch.arange(6, dtype=torch.float32))






def test_torch_dtype_zoo_rolls_back_bit_identical():
    tensors = {
        "bf16": torch.randn(50).to(torch.bfloat16),
        "c64": torch.randn(20, dtype=torch.complex64),
        "bool": torch.zeros(33, dtype=torch.bool),
        "i8": torch.arange(-5, 5, dtype=torch.int8),
        "f16_noncontig": torch.randn(8, 8).half().t(),
        "zero_d": torch.tensor(2.5),
        "empty": torch.empty(0),
    }
    before = {k: v.clone() for k, v in tensors.items()}
    view = tensors["c64"][3:7]

    def block():
        tensors["bf16"].mul_(3)
        view.fill_(1 + 2j)
        tensors["bool"][::2] = True
        tensors["i8"].neg_()
        tensors["f16_noncontig"].zero_()
        tensors["zero_d"].add_(1)
        tensors["empty"].resize_(4).fill_(1)

    fails(block)
    for k, v in tensors.items():
        assert v.dtype == before[k].dtype and v.shape == before[k].shape, k
        assert torch.equal(v, before[k]), k


def test_train_eval_flags_buffers_and_scheduler_roll_back():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    x = torch.randn(16, 4)
    model(x).sum().backward()
    opt.step()
    sched.step()
    bn = model[1]
    snap = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone(),
            opt.param_groups[0]["lr"], sched.last_epoch, list(sched.get_last_lr()))
    weights = [p.detach().clone() for p in model.parameters()]

    def block():
        model.train()
        model(torch.randn(16, 4) * 10).sum().backward()
        opt.step()
        sched.step()
        model.eval()
        model.add_module("extra", torch.nn.ReLU())

    model.train()
    fails(block)
    assert model.training is True and bn.training is True
    assert torch.equal(bn.running_mean, snap[0]) and torch.equal(bn.running_var, snap[1])
    assert torch.equal(bn.num_batches_tracked, snap[2])
    assert opt.param_groups[0]["lr"] == snap[3] and sched.last_epoch == snap[4] and sched.get_last_lr() == snap[5]
    assert all(torch.equal(p.detach(), w) for p, w in zip(model.parameters(), weights))
    assert "extra" not in dict(model.named_children())


def test_grad_set_to_none_vs_zeroed_rolls_back():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    lin(torch.randn(5, 3)).sum().backward()
    grad_w = lin.weight.grad
    saved = grad_w.clone()
    assert lin.bias.grad is not None

    def block():
        lin.weight.grad.zero_()
        lin.bias.grad = None
        lin(torch.randn(5, 3)).sum().backward()  # bias.grad created fresh, weight.grad accumulated

    bias_grad = lin.bias.grad
    bias_saved = bias_grad.clone()
    fails(block)
    assert lin.weight.grad is grad_w and torch.equal(grad_w, saved)
    assert lin.bias.grad is bias_grad and torch.equal(bias_grad, bias_saved)


def test_optimizer_step_dies_in_a_hook_after_some_params():
    """A real post-accumulate-grad hook raises during backward(); then a real
    optimizer.step() with a step pre-hook that raises after Adam initialised its state."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(4, 8)
    model(x).sum().backward()
    opt.step()
    params = list(model.parameters())
    snap_p = [p.detach().clone() for p in params]
    snap_g = [p.grad.clone() for p in params]
    snap_state = {i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
                  for i, p in enumerate(params)}
    seen = []

    def hook(param):
        seen.append(param)
        if len(seen) == 3:
            raise Boom("in the middle of backward")

    handles = [p.register_post_accumulate_grad_hook(hook) for p in params]
    try:
        with pytest.raises(Boom):
            with dart.transaction(model, opt, frames=False):
                model(x * 3).sum().backward()
    finally:
        for h in handles:
            h.remove()
    for p, w, g in zip(params, snap_p, snap_g):
        assert torch.equal(p.detach(), w) and torch.equal(p.grad, g)

    def post_hook(optimizer, args, kwargs):
        raise Boom("after the step")

    h = opt.register_step_post_hook(post_hook)
    try:
        with pytest.raises(Boom):
            with dart.transaction(model, opt, frames=False):
                opt.step()
    finally:
        h.remove()
    for i, p in enumerate(params):
        assert torch.equal(p.detach(), snap_p[i])
        for k, v in opt.state[p].items():
            assert torch.equal(v, snap_state[i][k]) if torch.is_tensor(v) else v == snap_state[i][k], k


def test_numpy_view_of_a_tensor_and_the_tensor_both_roll_back():
    t = torch.zeros(BIG // 2, dtype=torch.float64)
    n = t.numpy()[1000:]

    def block():
        t[5] = 1
        n[7] = 2
        t[-1] = 3

    fails(block)
    assert not t.any() and not n.any()


# == pandas ==========================================================================


def test_pandas_inplace_operations_roll_back():
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "b": list("wxyz"),
                       "c": pd.Categorical(["p", "q", "p", "q"])}, index=[10, 11, 12, 13])
    expected = df.copy(deep=True)
    series = df["a"]

    def block():
        df.fillna(0, inplace=True)
        df.drop(columns=["b"], inplace=True)
        df.sort_index(ascending=False, inplace=True)
        df.rename(columns={"a": "A"}, inplace=True)
        df.loc[99] = [5.0, "p"]  # enlargement
        df.index = df.index * 2
        df["c"] = df["c"].cat.add_categories(["r"])
        df.reset_index(drop=True, inplace=True)

    fails(block)
    pd.testing.assert_frame_equal(df, expected)
    assert series.isna().sum() == 1


def test_pandas_series_and_index_mutations_roll_back():
    s = pd.Series([3, 1, 2], index=["a", "b", "c"], name="s")
    expected = s.copy(deep=True)

    def block():
        s.iloc[0] = 100
        s.name = "renamed"
        s.index = ["x", "y", "z"]
        s.sort_values(inplace=True)
        s["new"] = 7

    fails(block)
    pd.testing.assert_series_equal(s, expected)


def test_pandas_attrs_and_column_object_values_roll_back():
    df = pd.DataFrame({"obj": [[1], [2]]})
    df.attrs["source"] = "file"
    inner = df["obj"].iloc[0]

    def block():
        df.attrs["source"] = "other"
        df["obj"].iloc[0].append(99)

    fails(block)
    assert df.attrs == {"source": "file"} and inner == [1]


# == hypothesis: random object graphs, random mutations, deepcopy oracle ==============


class Obj:
    pass


class Slot2:
    __slots__ = ("a", "b")


KINDS = ["list", "dict", "set", "obj", "slot", "deque", "odict", "ddict", "bytearray", "array", "nd", "nd_view",
         "nd_big", "tensor", "tuple", "data"]


@dataclasses.dataclass
class Data:
    x: object = None


def _make(kind, i):
    if kind == "list":
        return [i]
    if kind == "dict":
        return {"v": i}
    if kind == "set":
        return {i}
    if kind == "obj":
        o = Obj()
        o.v = i
        return o
    if kind == "slot":
        s = Slot2()
        s.a = i
        return s
    if kind == "deque":
        return collections.deque([i])
    if kind == "odict":
        return collections.OrderedDict(v=i)
    if kind == "ddict":
        return collections.defaultdict(list, v=[i])
    if kind == "bytearray":
        return bytearray(b"x" * (i % 5 + 1))
    if kind == "array":
        return array.array("i", [i, i])
    if kind == "nd":
        return np.full(6, float(i))
    if kind == "nd_view":
        return np.arange(20.0)[2::3]
    if kind == "nd_big":
        return np.full(BIG // 4, float(i))
    if kind == "tensor":
        return torch.full((5,), float(i))
    if kind == "tuple":
        return ([i], {"t": i})
    return Data(i)


def _children_slots(obj):
    """(container, key) places in obj where a reference can be stored or replaced."""
    if isinstance(obj, list):
        return [("list", k) for k in range(len(obj))]
    if isinstance(obj, dict):
        return [("dict", k) for k in obj]
    if isinstance(obj, (Obj, Data)):
        return [("attr", k) for k in vars(obj)]
    if isinstance(obj, Slot2):
        return [("attr", k) for k in ("a", "b") if hasattr(obj, k)]
    if isinstance(obj, collections.deque):
        return [("list", k) for k in range(len(obj))]
    return []


def _mutate(nodes, op, i, j, value):
    a = nodes[i % len(nodes)]
    b = nodes[j % len(nodes)]
    fresh = [value, {"fresh": value}]
    op %= 8
    if isinstance(a, (list, collections.deque)):
        [lambda: a.append(b), lambda: a.clear(), lambda: a.insert(0, value), lambda: a.reverse(),
         lambda: a.extend(fresh), lambda: a.pop() if a else None, lambda: a.rotate(1) if hasattr(a, "rotate")
         else a.sort(key=id), lambda: a.__setitem__(0, b) if a else None][op]()
    elif isinstance(a, dict):
        [lambda: a.update(x=b), lambda: a.clear(), lambda: a.pop("v", None), lambda: a.setdefault("n", fresh),
         lambda: a.__setitem__("v", value), lambda: a.move_to_end("v") if hasattr(a, "move_to_end") and "v" in a
         else None, lambda: a.__getitem__("auto") if isinstance(a, collections.defaultdict) else a.update(y=1),
         lambda: a.popitem() if a else None][op]()
    elif isinstance(a, set):  # (no set.pop: which member it takes is not a function of the value)
        [lambda: a.add(value), lambda: a.clear(), lambda: a.discard(value), lambda: a.update({op, 100}),
         lambda: a.discard(0), lambda: a.add(-value), lambda: a.intersection_update({1}),
         lambda: a.symmetric_difference_update({1, 2})][op]()
    elif isinstance(a, (Obj, Data)):
        [lambda: setattr(a, "v", value), lambda: vars(a).clear(), lambda: setattr(a, "n", b),
         lambda: setattr(a, "x", fresh), lambda: a.__dict__.pop("v", None), lambda: setattr(a, "w", b),
         lambda: setattr(a, "x", None), lambda: setattr(a, "v", [value])][op]()
    elif isinstance(a, Slot2):
        [lambda: setattr(a, "a", value), lambda: setattr(a, "b", b), lambda: delattr(a, "a") if hasattr(a, "a")
         else None, lambda: setattr(a, "b", fresh)][op % 4]()
    elif isinstance(a, bytearray):
        [lambda: a.extend(b"zz"), lambda: a.clear(), lambda: a.__setitem__(slice(0, 1), b"Q"),
         lambda: a.reverse()][op % 4]()
    elif isinstance(a, array.array):
        [lambda: a.append(value), lambda: a.pop() if a else None, lambda: a.__setitem__(0, 77) if a else None,
         lambda: a.reverse()][op % 4]()
    elif isinstance(a, np.ndarray):
        [lambda: a.__setitem__((op * 31 + i) % a.size, value), lambda: a.__imul__(2), lambda: a.fill(value),
         lambda: a.__setitem__(slice(None, None, 2), -1)][op % 4]()
    elif isinstance(a, torch.Tensor):
        [lambda: a.add_(value), lambda: a.zero_(), lambda: a.__setitem__(0, value),
         lambda: setattr(a, "data", torch.full((2,), 9.0))][op % 4]()
    elif isinstance(a, tuple):
        [lambda: a[0].append(b), lambda: a[1].clear(), lambda: a[1].update(t=fresh), lambda: a[0].clear()][op % 4]()


def _shape(root):
    """Everything reachable, with identities: deep values plus ``id`` of each mutable."""
    memo = {}

    def walk(obj):
        if id(obj) in memo:
            return ("ref", memo[id(obj)])
        if isinstance(obj, (int, float, str, bytes, type(None))):
            return obj
        memo[id(obj)] = len(memo)
        tag = (type(obj).__name__, id(obj))
        if isinstance(obj, (list, tuple, collections.deque)):
            return tag + (tuple(walk(v) for v in obj),)
        if isinstance(obj, collections.defaultdict):
            return tag + (obj.default_factory, tuple((k, walk(v)) for k, v in obj.items()))
        if isinstance(obj, dict):
            return tag + (tuple((k, walk(v)) for k, v in obj.items()),)
        if isinstance(obj, set):
            return tag + (tuple(sorted(map(repr, obj))),)
        if isinstance(obj, (Obj, Data)):
            return tag + (tuple((k, walk(v)) for k, v in vars(obj).items()),)
        if isinstance(obj, Slot2):
            return tag + (tuple((k, walk(getattr(obj, k))) for k in ("a", "b") if hasattr(obj, k)),)
        if isinstance(obj, (bytearray, array.array)):
            return tag + (bytes(obj),)
        if isinstance(obj, np.ndarray):
            return tag + (obj.shape, obj.tobytes())
        if isinstance(obj, torch.Tensor):
            return tag + (tuple(obj.shape), obj.dtype, obj.untyped_storage().data_ptr(), obj.numpy().tobytes())
        return tag

    return walk(root)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=9),
    links=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=14),
    ops=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 30), st.integers(0, 30), st.integers(-4, 4)),
                 min_size=1, max_size=20),
    use_frames=st.booleans(),
)
def test_property_rich_graphs_roll_back_to_a_deepcopy_of_the_entry(kinds, links, ops, use_frames):
    nodes = [_make(k, i) for i, k in enumerate(kinds)]
    for src, dst in links:  # shared nodes, aliases, cycles
        a, b = nodes[src % len(nodes)], nodes[dst % len(nodes)]
        if isinstance(a, list):
            a.append(b)
        elif isinstance(a, dict):
            a[f"k{dst}"] = b
        elif isinstance(a, (Obj, Data)):
            setattr(a, f"a{dst}", b)
        elif isinstance(a, Slot2):
            a.b = b
        elif isinstance(a, tuple):
            a[0].append(b)
    root = [nodes]
    before = _shape(root)
    deep = copy.deepcopy(root)  # an independent oracle of the values
    with pytest.raises(Boom):
        with (dart.transaction() if use_frames else dart.transaction(root, frames=False)):
            for op, i, j, value in ops:
                _mutate(nodes, op, i, j, value)
            raise Boom
    after = _shape(root)
    assert after == before
    # values equal the deepcopy (structure only: identities differ there by design)
    assert _values(root) == _values(deep)


def _build_graph(kinds, links):
    nodes = [_make(k, i) for i, k in enumerate(kinds)]
    for src, dst in links:
        a, b = nodes[src % len(nodes)], nodes[dst % len(nodes)]
        if isinstance(a, list):
            a.append(b)
        elif isinstance(a, dict):
            a[f"k{dst}"] = b
        elif isinstance(a, (Obj, Data)):
            setattr(a, f"a{dst}", b)
        elif isinstance(a, Slot2):
            a.b = b
        elif isinstance(a, tuple):
            a[0].append(b)
    return nodes




def _values(root):
    memo = set()

    def walk(obj):
        if isinstance(obj, (int, float, str, bytes, type(None))):
            return obj
        if id(obj) in memo:
            return "<ref>"
        memo.add(id(obj))
        if isinstance(obj, (list, tuple, collections.deque)):
            return (type(obj).__name__, [walk(v) for v in obj])
        if isinstance(obj, dict):
            return (type(obj).__name__, [(k, walk(v)) for k, v in obj.items()])
        if isinstance(obj, set):
            return sorted(map(repr, obj))
        if isinstance(obj, (Obj, Data)):
            return [(k, walk(v)) for k, v in vars(obj).items()]
        if isinstance(obj, Slot2):
            return [(k, walk(getattr(obj, k))) for k in ("a", "b") if hasattr(obj, k)]
        if isinstance(obj, (bytearray, array.array)):
            return bytes(obj)
        if isinstance(obj, np.ndarray):
            return obj.tobytes()
        if isinstance(obj, torch.Tensor):
            return obj.numpy().tobytes()
        return repr(obj)

    return walk(root)


# == threads and generators ===========================================================


def test_thread_mutating_shared_list_during_a_rollback_does_not_corrupt_it():
    """A rollback while another thread appends: afterwards the list is a valid list
    holding the entry items, then only whole appended items (no crash, no lost entry items)."""
    shared = list(range(1000))
    entry = list(shared)
    stop = threading.Event()

    def appender():
        while not stop.is_set() and len(shared) < 20_000:
            shared.append("t")
            time.sleep(0)

    th = threading.Thread(target=appender)
    th.start()
    try:
        for _ in range(20):
            with pytest.raises(Boom):
                with dart.transaction(shared, frames=False):
                    shared.insert(0, "mine")
                    raise Boom
    finally:
        stop.set()
        th.join(5)
    assert shared[:1000] == entry and all(x == "t" for x in shared[1000:])


def test_generator_yielding_inside_a_transaction_then_failing_rolls_back_its_block():
    state = {"n": 0}

    def gen():
        with dart.transaction(state, frames=False):
            state["n"] = 1
            yield "inside"
            state["n"] = 2
            raise Boom

    g = gen()
    assert next(g) == "inside"
    assert rollback.is_open()
    with pytest.raises(Boom):
        next(g)
    assert state == {"n": 0} and not rollback.is_open()


def test_generator_closed_while_suspended_inside_its_transaction_rolls_back():
    state = {"n": 0}

    def gen():
        with dart.transaction(state, frames=False):
            state["n"] = 1
            yield "inside"

    g = gen()
    next(g)
    g.close()  # GeneratorExit inside the with block
    assert state == {"n": 0} and not rollback.is_open()


def test_abandoned_generator_does_not_block_commits_forever():
    """A generator suspended inside a transaction and dropped (garbage collected):
    is_open() must go back to False, or commits are held back for good."""
    import gc

    def gen():
        with dart.transaction(frames=False):
            yield 1

    g = gen()
    next(g)
    del g
    gc.collect()
    assert not rollback.is_open()


def test_strict_refuses_a_reachable_generator_and_leaves_nothing_open():
    gen = (i for i in range(3))
    with pytest.raises(dart.TransactionError, match="gen"):
        with dart.transaction(strict=True):
            pass
    assert not rollback.is_open() and rollback.current() is None
    next(gen)


# == under dart run: real subprocesses, real SIGKILL ==================================


def dart_run(path, store, *extra, every="0"):
    return [sys.executable, "-m", "dart", "run", "--store", str(store), "--every", every, *extra, str(path)]


def run_until(cmd, cwd, marker: str, timeout=60):
    """Start ``cmd``, SIGKILL it right after it printed a line containing ``marker``."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                proc.send_signal(signal.SIGKILL)
                break
            if time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        rest, err = proc.communicate(timeout=30)
    return "".join(lines) + rest, err, proc.returncode


STEP_FAIL_SCRIPT = """\
import time
import numpy as np

weights = np.zeros(1000)
log = []
for step in range(6):
    log.append(step)
    weights[step] += 1
    try:
        if step == 3:
            weights[500] = 99
            log.append("partial")
            print("about to fail", flush=True)
            time.sleep(0.6)
            raise ValueError(step)
    except ValueError:
        pass
    time.sleep(0.05)
print("final", log, float(weights.sum()), float(weights[500]))
"""


@in_one_suite
def test_atomic_steps_killed_inside_a_failing_iteration_resume_faithfully(tmp_path):
    """Steps do not hold commits back, so a commit can hold the inside of an iteration
    that later fails. Killed there and resumed, the run must still end as an
    uninterrupted --atomic-steps run does (the failing iteration leaves nothing)."""
    program = tmp_path / "steps.py"
    program.write_text(STEP_FAIL_SCRIPT)
    reference = subprocess.run(dart_run(program, tmp_path / "ref", "--atomic-steps"), cwd=tmp_path,
                               env=child_env(), capture_output=True, text=True, timeout=60)
    assert reference.returncode == 0, describe(reference)
    final = [line for line in reference.stdout.splitlines() if line.startswith("final")]
    assert final == ["final [0, 1, 2, 4, 5] 5.0 0.0"], describe(reference)  # iteration 3 left nothing
    out, err, _ = run_until(dart_run(program, tmp_path / "store", "--atomic-steps"), tmp_path, "about to fail")
    assert "about to fail" in out, err
    resumed = subprocess.run(dart_run(program, tmp_path / "store", "--atomic-steps"), cwd=tmp_path,
                             env=child_env(), capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, describe(resumed)
    assert "resuming" in resumed.stderr, describe(resumed)
    assert [line for line in resumed.stdout.splitlines() if line.startswith("final")] == final, describe(resumed)


TXN_KILL_SCRIPT = """\
import time
import numpy as np
import dart

table = {"rows": []}
weights = np.zeros(200_000)  # 1.6 MiB: shadowed
for step in range(8):
    try:
        with dart.transaction(commit=True):
            table["rows"].append(step)
            weights[step * 1000:(step + 1) * 1000] += 1
            print("inside", step, flush=True)
            time.sleep(0.15)
            if step % 3 == 2:
                raise ValueError(step)
    except ValueError:
        pass
    print("done", step, len(table["rows"]), float(weights.sum()), flush=True)
print("final", table["rows"], float(weights.sum()))
"""


@in_one_suite
@pytest.mark.parametrize("kill_at,every", [("inside 4", "never"), ("done 5", "0")])
def test_transaction_loop_with_commit_true_killed_and_resumed(tmp_path, kill_at, every):
    program = tmp_path / "txnloop.py"
    program.write_text(TXN_KILL_SCRIPT)
    plain = subprocess.run([sys.executable, str(program)], cwd=tmp_path, env=child_env(), capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode == 0, describe(plain)
    expected = [line for line in plain.stdout.splitlines() if line.startswith("final")]
    assert expected == ["final [0, 1, 3, 4, 6, 7] 6000.0"], describe(plain)
    out, err, _ = run_until(dart_run(program, tmp_path / "store", every=every), tmp_path, kill_at)
    assert kill_at in out, err
    resumed = subprocess.run(dart_run(program, tmp_path / "store", every=every), cwd=tmp_path, env=child_env(),
                             capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, describe(resumed)
    assert "resuming" in resumed.stderr, describe(resumed)
    assert [line for line in resumed.stdout.splitlines() if line.startswith("final")] == expected, describe(resumed)


def test_atomic_steps_exception_caught_in_a_called_function_does_not_roll_back(tmp_path):
    """Only a handler in the main script's loop fails a step; an exception raised and
    caught inside a function the loop calls is that function's business."""
    program = tmp_path / "calls.py"
    program.write_text(textwrap.dedent("""\
        def lookup(cache, key):
            try:
                return cache[key]
            except KeyError:
                cache[key] = key * 10
                return cache[key]

        cache, total = {}, []
        for i in range(4):
            total.append(i)
            lookup(cache, i % 2)
            total.append(-i)
        print("final", total, sorted(cache.items()))
    """))
    proc = subprocess.run(dart_run(program, tmp_path / "store", "--atomic-steps"), cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert "final [0, 0, 1, -1, 2, -2, 3, -3] [(0, 0), (1, 10)]" in proc.stdout, describe(proc)


def test_atomic_steps_with_statement_and_finally_in_the_loop(tmp_path):
    """An exception that passes through a `with` or `finally` inside the iteration and is
    caught by the `try` in the same iteration: the iteration is rolled back once."""
    program = tmp_path / "finally_steps.py"
    program.write_text(textwrap.dedent("""\
        import contextlib
        log, cleanups = [], []
        for i in range(4):
            log.append(i)
            try:
                with contextlib.suppress(KeyError):
                    log.append(("in with", i))
                    if i == 1:
                        raise KeyError(i)
                try:
                    log.append(("in try", i))
                    if i == 2:
                        raise ValueError(i)
                finally:
                    cleanups.append(i)
            except ValueError:
                print("handler sees", log[-1], cleanups[-1:] , flush=True)
        print("final", log, cleanups)
    """))
    proc = subprocess.run(dart_run(program, tmp_path / "store", "--atomic-steps"), cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, describe(proc)
    # i == 1: the KeyError suppressed by the `with` is a caught exception (README: any
    # caught exception counts), so the iteration's start (1, ('in with', 1)) is undone;
    # i == 2: rolled back before the handler, the `finally`'s cleanup with it
    assert "handler sees ('in try', 1) [1]" in proc.stdout, describe(proc)
    assert ("final [0, ('in with', 0), ('in try', 0), ('in try', 1), 3, ('in with', 3), ('in try', 3)] [0, 1, 3]"
            in proc.stdout), describe(proc)


def test_atomic_steps_while_loop_with_one_line_body(tmp_path):
    """A `while` loop whose body starts with a one-line compound statement; the failure
    is raised once (a marker in os.environ, which a rollback does not reach)."""
    program = tmp_path / "while_steps.py"
    program.write_text(textwrap.dedent("""\
        import os
        box = []
        n = 0
        while n < 4:
            n += 1; box.append(n)
            try:
                if n == 2 and not os.environ.get("FAILED"): os.environ["FAILED"] = "1"; box.append("bad"); raise RuntimeError
            except RuntimeError:
                print("caught", n, box, flush=True)
        print("final", n, box)
    """))
    proc = subprocess.run(dart_run(program, tmp_path / "store", "--atomic-steps"), cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, describe(proc)
    # the failing iteration is rolled back to its start (n == 1, box == [1]) before the handler
    assert "caught 1 [1]" in proc.stdout, describe(proc)
    assert "final 4 [1, 2, 3, 4]" in proc.stdout, describe(proc)


def test_dart_enable_transaction_rollback_and_commit_true(tmp_path):
    program = tmp_path / "enabled.py"
    program.write_text(textwrap.dedent("""\
        import dart
        dart.enable()
        import numpy as np
        state = {"n": 0}
        arr = np.zeros(10)
        for i in range(3):
            try:
                with dart.transaction(commit=True) as t:
                    state["n"] += 1
                    arr[i] = 1
                    if i == 1:
                        raise ValueError
            except ValueError:
                pass
        print("final", state, arr.tolist())
    """))
    env = child_env(DART_STORE=str(tmp_path / "store"), DART_EVERY="never")
    proc = subprocess.run([sys.executable, str(program)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert "final {'n': 2} [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]" in proc.stdout, describe(proc)
    log = subprocess.run([sys.executable, "-m", "dart", "log", "--store", str(tmp_path / "store"), "--json"],
                         cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60)
    assert log.returncode == 0, describe(log)
    import json
    commits = json.loads(log.stdout)
    assert len(commits) == 2, commits  # the two completed commit=True transactions, not the failed one


# == state hidden behind callables and odd objects ====================================


class Recorder:
    def __init__(self):
        self.events = []

    def record(self, event):
        self.events.append(event)


def _hidden_recorder():
    rec = Recorder()
    return rec.record, rec








class Unbound:
    """Like a lazy proxy whose target is not set: every attribute access raises."""

    def __getattribute__(self, name):
        raise RuntimeError("proxy is not bound to an object")




def _make_transaction():
    return dart.transaction(strict=False)


def test_transaction_built_by_a_helper_covers_the_with_frame():
    """`with helpers.txn():` is a natural wrapper; the locals of the frame that runs the
    with block must still be covered (not the helper's finished frame)."""
    counter = 0
    with pytest.raises(Boom):
        with _make_transaction():
            counter += 1
            raise Boom
    assert counter == 0


def test_transaction_in_a_class_body_rolls_back_the_class_namespace():
    class Config:
        x = 1
        try:
            with dart.transaction():
                x = 2
                y = 3
                raise Boom
        except Boom:
            pass

    assert Config.x == 1 and not hasattr(Config, "y")




# == CUDA (skipped without a GPU; README: "that path has not been tested on a GPU yet") ==

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
def test_cuda_tensors_parameters_and_optimizer_state_roll_back():
    torch.manual_seed(0)
    model = torch.nn.Linear(256, 256).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(64, 256, device="cuda")
    model(x).sum().backward()
    opt.step()
    big = torch.randn(1 << 20, device="cuda")  # 4 MiB
    view = big[1000:2000]
    snap = ([p.detach().clone() for p in model.parameters()], [p.grad.clone() for p in model.parameters()],
            {i: {k: v.clone() for k, v in opt.state[p].items()} for i, p in enumerate(model.parameters())},
            big.clone())

    def block():
        opt.zero_grad(set_to_none=False)
        model(x * 2).sum().backward()
        opt.step()
        view.fill_(3)
        big.mul_(2)

    fails(block)
    torch.cuda.synchronize()
    for p, w, g in zip(model.parameters(), snap[0], snap[1]):
        assert torch.equal(p.detach(), w) and torch.equal(p.grad, g)
    for i, p in enumerate(model.parameters()):
        for k, v in opt.state[p].items():
            assert torch.equal(v, snap[2][i][k]), k
    assert torch.equal(big, snap[3]) and torch.equal(view, snap[3][1000:2000])


@cuda
def test_cuda_tensor_moved_between_devices_rolls_back():
    t = torch.arange(10.0, device="cuda")
    p = torch.nn.Parameter(torch.ones(4))

    def block():
        t.data = t.data.cpu()
        p.data = p.data.cuda()

    fails(block)
    assert t.device.type == "cuda" and torch.equal(t.cpu(), torch.arange(10.0))
    assert p.device.type == "cpu" and torch.equal(p.detach(), torch.ones(4))


@cuda
def test_cuda_nested_transactions_roll_back_to_their_own_entry():
    t = torch.zeros(1 << 18, device="cuda")
    with dart.transaction():
        t[0] = 1
        with pytest.raises(Boom):
            with dart.transaction():
                t[1] = 2
                raise Boom
        assert t[:2].tolist() == [1, 0]
    assert t[:2].tolist() == [1, 0]


# == the shadow between transactions: writes the page tracking cannot see =============




def test_readinto_between_transactions_is_seen(tmp_path, tracking):
    path = tmp_path / "data.bin"
    payload = np.full(1024, 7.0).tobytes()
    path.write_bytes(payload)
    a = np.zeros(BIG)
    with dart.transaction(a, frames=False):
        pass
    with open(path, "rb") as f:
        f.readinto(memoryview(a)[50_000:51_024].cast("B"))  # a kernel write into the tracked pages
    assert a[50_000] == 7.0
    with pytest.raises(Boom):
        with dart.transaction(a, frames=False):
            a[50_001] = -1.0
            raise Boom
    assert a[50_000] == 7.0 and a[50_001] == 7.0


def _atomic_steps_output(tmp_path, source):
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent(source))
    proc = subprocess.run(dart_run(program, tmp_path / "store", "--atomic-steps"), cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, describe(proc)
    return proc


def test_atomic_steps_loop_inside_a_match_case(tmp_path):
    """A loop in module code under `match` is still the script's top-level code."""
    proc = _atomic_steps_output(tmp_path, """\
        import sys
        box = []
        match len(sys.argv):
            case _:
                for i in range(3):
                    box.append(i)
                    try:
                        if i == 1:
                            box.append("bad")
                            raise ValueError
                    except ValueError:
                        pass
        print("final", box)
    """)
    assert "final [0, 2]" in proc.stdout, describe(proc)


def test_atomic_steps_loop_inside_if_and_with_blocks(tmp_path):
    proc = _atomic_steps_output(tmp_path, """\
        import contextlib
        box = []
        if True:
            with contextlib.nullcontext():
                for i in range(3):
                    box.append(i)
                    try:
                        if i == 1:
                            box.append("bad")
                            raise ValueError
                    except ValueError:
                        pass
        print("final", box)
    """)
    assert "final [0, 2]" in proc.stdout, describe(proc)




@pytest.mark.parametrize("first", ["try", "with", "for", "if"])
def test_atomic_steps_loop_body_that_starts_with_a_compound_statement(tmp_path, first):
    bodies = {
        "try": """\
            for i in range(3):
                try:
                    box.append(i)
                    if i == 1:
                        raise ValueError
                except ValueError:
                    pass
        """,
        "with": """\
            for i in range(3):
                with contextlib.nullcontext():
                    box.append(i)
                try:
                    if i == 1:
                        raise ValueError
                except ValueError:
                    pass
        """,
        "for": """\
            for i in range(3):
                for j in range(1):
                    box.append(i)
                try:
                    if i == 1:
                        raise ValueError
                except ValueError:
                    pass
        """,
        "if": """\
            for i in range(3):
                if i >= 0:
                    box.append(i)
                try:
                    if i == 1:
                        raise ValueError
                except ValueError:
                    pass
        """,
    }
    proc = _atomic_steps_output(tmp_path, "import contextlib\nbox = []\n" + textwrap.dedent(bodies[first])
                                + 'print("final", box)\n')
    assert "final [0, 2]" in proc.stdout, describe(proc)




def test_generator_frame_locals_are_rebound():
    def gen():
        count = 0
        with pytest.raises(Boom):
            with dart.transaction():
                count = 5
                raise Boom
        yield count

    assert next(gen()) == 0


def test_coroutine_frame_locals_are_rebound():
    import asyncio

    async def work():
        count = 0
        with pytest.raises(Boom):
            with dart.transaction():
                count = 5
                await asyncio.sleep(0)
                raise Boom
        return count

    assert asyncio.run(work()) == 0




# == what runs during a rollback ======================================================

_closed: list = []


class Resource:
    def __del__(self):
        _closed.append("closed")  # a global lookup, as finalisers do (loggers, registries)


def test_a_finaliser_run_by_the_rollback_sees_the_module_globals():
    """Objects first bound to a global in the block are dropped by the rollback; their
    __del__ runs then and must find the module's globals (not a cleared dict)."""
    g = globals()
    _closed.clear()
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda info: unraisable.append(repr(info.exc_value))
    try:
        def block():
            g["_hostile_resource"] = Resource()

        fails(block)
    finally:
        sys.unraisablehook = old_hook
    assert "_hostile_resource" not in g
    assert not unraisable, f"a finaliser failed during the rollback: {unraisable}"
    assert _closed == ["closed"]


class Watching(list):
    """A list subclass whose item assignment runs Python code (as user subclasses do)."""

    seen_open: list = []

    def __setitem__(self, key, value):
        Watching.seen_open.append(rollback.is_open())  # a safe point here could commit
        super().__setitem__(key, value)




THREAD_ROLLBACK_SCRIPT = """\
import threading, time
import dart

class Slow(list):
    # stands for any rollback that takes time (a big buffer's restore releases the GIL)
    def __setitem__(self, key, value):
        print("rolling back", flush=True)
        time.sleep(1.0)
        super().__setitem__(key, value)

box = Slow([1, 2, 3])
started = threading.Event()

def worker():
    try:
        with dart.transaction(box, frames=False):
            box.append(4)
            started.set()
            time.sleep(0.3)
            raise ValueError
    except ValueError:
        pass

threading.Thread(target=worker, daemon=True).start()
started.wait()
for i in range(60):
    time.sleep(0.05)
print("box", list(box))
"""


@in_one_suite
def test_commit_taken_while_another_thread_rolls_back_holds_the_failed_transaction(tmp_path):
    """A transaction counts as open until its rollback is done: a commit the main
    thread takes meanwhile must not hold the inside of the failed transaction (box with
    the 4 the rollback is removing), which a kill and a resume would bring back (it
    did, when __exit__ counted the transaction closed before rolling back)."""
    program = tmp_path / "thr.py"
    program.write_text(THREAD_ROLLBACK_SCRIPT)
    cmd = dart_run(program, tmp_path / "store")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stdout:
            if "rolling back" in line:
                time.sleep(0.5)  # the main thread's loop passes several safe points
                break
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    resumed = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, describe(resumed)
    assert "box [1, 2, 3]" in resumed.stdout, describe(resumed)




def test_tensor_in_place_metadata_ops_roll_back():
    t = torch.arange(6.0).reshape(2, 3)
    u = torch.arange(4.0)

    def block():
        t.t_()
        u.unsqueeze_(0)
        u.as_strided_((2,), (2,))

    fails(block)
    assert t.shape == (2, 3) and t.stride() == (3, 1) and torch.equal(t, torch.arange(6.0).reshape(2, 3))
    assert u.shape == (4,) and u.stride() == (1,)


STEPS_SOURCE = """\
box = []
for i in range(3):
    box.append(i)
    try:
        if i == 1:
            box.append("bad")
            raise ValueError
    except ValueError:
        pass
print("final", box)
"""


@pytest.mark.parametrize("how", ["env under dart run", "env under dart.enable()"])
def test_atomic_steps_from_the_environment_variable(tmp_path, how):
    program = tmp_path / "prog.py"
    env = child_env(DART_ATOMIC_STEPS="1")
    if how == "env under dart run":
        program.write_text(STEPS_SOURCE)
        cmd = dart_run(program, tmp_path / "store")
    else:
        program.write_text("import dart\ndart.enable()\n" + STEPS_SOURCE)
        env.update(DART_STORE=str(tmp_path / "store"), DART_EVERY="0")
        cmd = [sys.executable, str(program)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert "final [0, 2]" in proc.stdout, describe(proc)






class InterruptedOnRestore(list):
    """Ctrl-C arriving while the rollback runs (a real SIGINT, raised in user code the
    rollback calls)."""

    armed = False

    def __setitem__(self, key, value):
        if InterruptedOnRestore.armed:
            InterruptedOnRestore.armed = False
            signal.raise_signal(signal.SIGINT)
        super().__setitem__(key, value)


def test_ctrl_c_during_the_rollback_does_not_leave_it_half_done():
    first = {"n": 0}
    box = InterruptedOnRestore([1])
    last = {"n": 0}
    try:
        with dart.transaction():
            first["n"] = 1
            box.append(2)
            last["n"] = 1
            InterruptedOnRestore.armed = True
            raise Boom
    except (Boom, KeyboardInterrupt):
        pass
    finally:
        InterruptedOnRestore.armed = False
    assert (first, list(box), last) == ({"n": 0}, [1], {"n": 0}), "the rollback stopped half-way"


def test_locals_are_freed_when_the_function_returns_without_waiting_for_the_gc():
    """`with dart.transaction() as t` inside a function: once it returns, its big locals
    go as they would without dart (no reference cycle through the transaction's frame)."""
    import gc
    import weakref

    def work():
        big = np.zeros(1000)
        with dart.transaction() as t:
            big[0] = 1
        return weakref.ref(big), t.reached

    gc.disable()
    try:
        ref, reached = work()
        assert reached > 0
        assert ref() is None, "the function's locals outlive it until the cyclic GC runs"
    finally:
        gc.enable()


def test_generator_objects_roll_back_or_are_named():
    import random

    rng = np.random.default_rng(1)
    legacy = np.random.RandomState(2)
    pyrng = random.Random(3)
    trng = torch.Generator().manual_seed(4)
    expected = (rng.random(), legacy.rand(), pyrng.random(), torch.rand(1, generator=trng).item())
    rng, legacy, pyrng = np.random.default_rng(1), np.random.RandomState(2), random.Random(3)
    trng = torch.Generator().manual_seed(4)
    with pytest.raises(Boom):
        with dart.transaction() as t:
            rng.random(5), legacy.rand(5), pyrng.random(), torch.rand(5, generator=trng)
            raise Boom
    assert (rng.random(), legacy.rand(), pyrng.random()) == expected[:3]
    assert torch.rand(1, generator=trng).item() == expected[3] or any("trng" in n for n in t.not_undone), \
        "a torch.Generator advanced in the block was neither rolled back nor named"


