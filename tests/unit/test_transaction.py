"""dart.transaction / dart.atomic in a plain process (no store, dart never enabled):
what a failing block changed is put back in place, bit for bit, in the same objects."""

from __future__ import annotations

import collections
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dart
from dart import rollback
from dart.delta import available
from dart.errors import TransactionError

BIG = rollback.SHADOW_MIN // 8 * 3  # float64 elements: a buffer big enough to be shadowed


class Boom(Exception):
    pass


@pytest.fixture(params=["dirty", "hash"])
def tracking(request, monkeypatch):
    """Both ways a shadow is kept in step: kernel dirty pages, and hashing (where the
    kernel refuses, or another tracker holds the pages)."""
    rollback.release_shadows()
    if request.param == "dirty" and not available():
        pytest.skip(f"no kernel dirty-page tracking here: {available().reason}")
    if request.param == "hash":
        monkeypatch.setattr(rollback, "available", lambda: False)
    yield request.param
    rollback.release_shadows()


def _modes():
    return {shadow.mode for shadow in rollback._shadows.values()}


def fails(block):
    with pytest.raises(Boom):
        with dart.transaction():
            block()
            raise Boom


# -- buffers ---------------------------------------------------------------------------


def test_numpy_in_place_mutation_rolls_back_bit_identical_same_object(tracking):
    big = np.random.default_rng(1).standard_normal(BIG)
    small = np.arange(100, dtype=np.int32)
    view = big[1000:3000]
    before_big, before_small = big.copy(), small.copy()
    ids = (id(big), id(small), id(view))

    def block():
        big[::977] = np.nan
        view[...] *= 3
        small[5:] = -1
        np.add(big[:50], 1, out=big[:50])

    fails(block)
    assert big.tobytes() == before_big.tobytes()  # bit-identical (NaN included)
    assert np.array_equal(small, before_small)
    assert (id(big), id(small), id(view)) == ids
    assert view.base is big and np.shares_memory(view, big)
    assert _modes() == {tracking}


def test_repeated_transactions_keep_the_shadow_in_step(tracking):
    # the shadow is reused: changes made between transactions must be picked up at entry
    a = np.zeros(BIG)
    for round_ in range(5):
        a[round_ * 5000] = round_ + 1  # outside any transaction: must stay
        expected = a.copy()
        with pytest.raises(Boom):
            with dart.transaction() as t:
                a[round_ * 5000 + 1: round_ * 5000 + 4000] = -7
                a[-1] = 9
                raise Boom
        assert np.array_equal(a, expected), round_
        assert t.shadowed >= 1
    with dart.transaction():
        a[7] = 42  # a completed transaction keeps its effects
    assert a[7] == 42


def test_writes_after_a_rollback_or_a_commit_are_seen_by_the_next_transaction(tracking):
    # a rollback and a commit-exit protect the pages they copied again: writes to those
    # same pages afterwards must reach the shadow at the next entry, or the next
    # rollback would put back bytes older than its entry
    a = np.zeros(BIG)
    span = slice(4000, 9000)  # several pages, past the first one
    for round_ in range(1, 4):
        with pytest.raises(Boom):
            with dart.transaction():
                a[span] = -round_
                raise Boom
        assert not a[span].any(), round_
        a[span] = round_  # between transactions, on the pages just restored
        with pytest.raises(Boom):
            with dart.transaction():
                a[span] = -1
                raise Boom
        assert (a[span] == round_).all(), round_
        with dart.transaction():
            a[span] = 10 * round_  # committed: the commit-exit copies these pages
        a[span.start] = 7  # after the commit, on a page it copied
        expected = a.copy()
        with pytest.raises(Boom):
            with dart.transaction():
                a[span] = 0
                raise Boom
        assert np.array_equal(a, expected), round_
        a[span] = 0
    assert _modes() == {tracking}


def _ragged(nbytes, lead):
    """A uint8 array starting `lead` bytes into its memory: its own root (not a view of
    another array), so its shadow has edge bytes at both ends."""
    return np.frombuffer(bytearray(nbytes + lead + 100), np.uint8, count=nbytes, offset=lead)


@pytest.mark.parametrize("lead", [1, 1000, 4095])
def test_a_buffer_off_page_boundaries_rolls_back_bit_identical(tracking, lead):
    a = _ragged((3 << 20) + 1234, lead)
    address = a.__array_interface__["data"][0]
    assert address % 4096 and (address + a.nbytes) % 4096  # starts and ends inside a page
    rng = np.random.default_rng(lead)
    a[:] = rng.integers(0, 256, a.nbytes, dtype=np.uint8)
    for round_ in range(3):
        before = a.copy()
        spans = [(0, 1), (a.nbytes - 1, 1), (4096 - address % 4096 - 3, 6)]
        spans += [(int(o), int(n)) for o, n in zip(rng.integers(0, a.nbytes - 9000, 20), rng.integers(1, 9000, 20))]
        with pytest.raises(Boom):
            with dart.transaction():
                for off, n in spans:
                    a[off:off + n] ^= 0xFF
                raise Boom
        assert a.tobytes() == before.tobytes(), round_
        a[int(rng.integers(0, a.nbytes))] ^= 1  # between transactions: kept
    assert _modes() == {tracking}


def test_rollback_survives_the_kernel_losing_track_of_the_pages():
    # pages mapped anew under the tracker (MAP_FIXED over part of the array) are no
    # longer write-protected: the native restore refuses (EPERM), the whole shadow is
    # copied back instead and the buffer goes on with the hash tracker
    if not available():
        pytest.skip(f"no kernel dirty-page tracking here: {available().reason}")
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    map_fixed = 0x10  # Linux; the mmap module does not export it
    rollback.release_shadows()
    a = np.random.default_rng(3).standard_normal(BIG)
    before = a.copy()
    start = (a.ctypes.data + 8 * 4096) // 4096 * 4096  # whole pages well inside the array
    with pytest.raises(Boom):
        with dart.transaction():
            a[:100] = 1
            got = libc.mmap(start, 4 * 4096, mmap.PROT_READ | mmap.PROT_WRITE,
                            mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | map_fixed, -1, 0)
            assert got == start, ctypes.get_errno()
            raise Boom
    assert a.tobytes() == before.tobytes()
    assert rollback._shadows[(a.ctypes.data, a.nbytes)].mode == "hash"
    with pytest.raises(Boom):  # and it goes on working
        with dart.transaction():
            a[-5:] = 0
            raise Boom
    assert a.tobytes() == before.tobytes()
    rollback.release_shadows()


def test_torch_in_place_mutation_and_metadata_roll_back():
    w = torch.randn(300, 400)
    b = torch.zeros(3)
    alias = w[10]
    before = w.clone()
    storage = w.untyped_storage().data_ptr()

    def block():
        w.mul_(2)
        alias.fill_(5)
        b.data = torch.ones(7)  # rebinds the storage: undone too

    fails(block)
    assert torch.equal(w, before) and w.untyped_storage().data_ptr() == storage
    assert torch.equal(alias, before[10]) and alias.untyped_storage().data_ptr() == storage
    assert b.shape == (3,) and torch.equal(b, torch.zeros(3))


def _model_and_optimizer(kind):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 8))
    opt = (torch.optim.Adam(model.parameters(), lr=1e-2, foreach=False) if kind == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=False))
    x, y = torch.randn(32, 64), torch.randint(0, 8, (32,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return model, opt, step


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_optimizer_step_interrupted_half_way_rolls_back(kind, monkeypatch):
    model, opt, step = _model_and_optimizer(kind)
    step()  # optimizer state exists
    params = list(model.parameters())
    weights = [p.detach().clone() for p in params]
    grads = [p.grad for p in params]
    grad_values = [g.clone() for g in grads]
    state = {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()} for p in params}

    # a real optimizer.step() that dies after updating half of the parameters
    update = "addcdiv_" if kind == "adam" else "add_"
    real, calls = getattr(torch.Tensor, update), []

    def dying(self, *args, **kwargs):
        if any(self is p for p in params):
            calls.append(1)
            if len(calls) > len(params) // 2:
                raise Boom(len(calls))  # (calls itself is rolled back with the test's locals)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, update, dying)
    with pytest.raises(Boom) as info:
        with dart.transaction():
            step()
    monkeypatch.setattr(torch.Tensor, update, real)
    assert info.value.args == (len(params) // 2 + 1,)  # really stopped in the middle
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    assert all(p.grad is g and torch.equal(g, v) for p, g, v in zip(params, grads, grad_values))
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in params]  # same parameter objects
    for p in params:
        assert opt.state[p].keys() == state[id(p)].keys()
        for k, v in opt.state[p].items():
            assert torch.equal(v, state[id(p)][k]) if torch.is_tensor(v) else v == state[id(p)][k]
    step()  # and training goes on from clean state
    assert not all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))


# -- Python objects --------------------------------------------------------------------


class Point:
    def __init__(self):
        self.x, self.tags = 1, ["a"]


class Slotted:
    __slots__ = ("a", "__b")

    def __init__(self):
        self.a = 1


def test_containers_and_attributes_roll_back_in_place_with_aliases():
    d = {"k": 1, "nested": {"n": [1, 2]}}
    lst = [1, [2, 3], "s"]
    s = {1, 2, 3}
    dq = collections.deque([1, 2], maxlen=5)
    ba = bytearray(b"hello")
    p, q = Point(), Slotted()
    alias_d, alias_inner = d, d["nested"]["n"]
    snapshot = (repr(d), repr(lst), s.copy(), list(dq), bytes(ba), vars(p).copy())

    def block():
        d["k"] = 2
        del d["nested"]
        d["new"] = object()
        alias_inner.append(99)
        lst[1].append(4)
        lst.insert(0, "first")
        s.discard(2)
        s.add(7)
        dq.appendleft(0)
        ba.extend(b" world")
        ba[0] = ord("J")
        p.x = 5
        p.tags.clear()
        p.extra = 1
        q.a = 2
        q._Slotted__b = 3

    fails(block)
    assert (repr(d), repr(lst), s, list(dq), bytes(ba), vars(p)) == snapshot
    assert alias_d is d and d["nested"]["n"] is alias_inner and alias_inner == [1, 2]
    assert q.a == 1 and not hasattr(q, "_Slotted__b")


def test_dataframe_mutation_rolls_back():
    df = pd.DataFrame({"a": np.arange(6.0), "b": list("uvwxyz"), "c": np.arange(6)})
    expected = df.copy()
    column = df["a"]
    df_id = id(df)

    def block():
        df.loc[0, "a"] = 100.0
        df.iloc[2, 2] = -5
        df["d"] = 1
        df["b"] = df["b"].str.upper()
        df.sort_values("a", ascending=False, inplace=True)

    fails(block)
    assert id(df) == df_id
    pd.testing.assert_frame_equal(df, expected)
    assert column.tolist() == list(np.arange(6.0))


def test_locals_of_the_enclosing_frame_are_rebound():
    counter, items = 0, []
    with pytest.raises(Boom):
        with dart.transaction():
            counter += 1
            items = items + [1]
            raise Boom
    assert counter == 0 and items == []


def test_a_local_first_bound_inside_is_named_not_warned():
    with pytest.raises(Boom):
        with dart.transaction() as t:
            fresh_name = 1
            raise Boom
    assert fresh_name == 1 and any("'fresh_name'" in n for n in t.left_bound) and not t.not_undone


def test_atomic_decorator_covers_its_arguments():
    @dart.atomic
    def update(table, key):
        table[key] = 1
        table.pop("keep")
        raise Boom

    table = {"keep": 0}
    with pytest.raises(Boom):
        update(table, "x")
    assert table == {"keep": 0}

    @dart.atomic(strict=True)
    def fine(table):
        table["ok"] = True
        return "done"

    assert fine(table) == "done" and table["ok"] is True


def test_nested_rolls_back_to_its_own_entry_and_the_outer_goes_on(tracking):
    a = np.zeros(BIG)
    x = a[10_000:]  # past the first page: the tracked pages, not the edge bytes copied at entry
    log = []
    with dart.transaction():
        x[0] = 1
        log.append("outer")
        with pytest.raises(Boom):
            with dart.transaction():
                x[1] = 2
                x[-1] = 3
                log.append("inner")
                raise Boom
        assert x[1] == 0 and x[-1] == 0 and x[0] == 1 and log == ["outer"]
        with dart.transaction():  # an inner one that completes
            x[2] = 4
            log.append("inner ok")
        assert rollback.current() is not None
    assert x[:3].tolist() == [1, 0, 4] and log == ["outer", "inner ok"]

    with pytest.raises(Boom):
        with dart.transaction():
            x[3] = 5
            with dart.transaction():
                x[3] = 6  # the inner entry overwrote the shadow: the outer's undo log keeps 0
                x[4] = 7
                log.append("x")
            raise Boom
    assert x[:5].tolist() == [1, 0, 4, 0, 0] and log == ["outer", "inner ok"]

    with pytest.raises(Boom):
        with dart.transaction():
            with dart.transaction():
                x[5] = 8
                with dart.transaction():  # its entry moves x[5]'s new bytes into the shadow
                    pass
            raise Boom  # the undo log of the middle level passed on to the outer one
    assert x[5] == 0
    assert rollback.current() is None and not rollback.is_open()


# -- what cannot be undone --------------------------------------------------------------


def test_open_file_is_named_and_strict_refuses(tmp_path):
    path = tmp_path / "out.txt"
    handle = open(path, "w")
    try:
        with pytest.raises(TransactionError, match=r"handle.*out.txt.*writing"):
            with dart.transaction(strict=True):
                pass
        with pytest.warns(dart.DartWarning, match="out.txt"):
            with pytest.raises(Boom) as info:
                with dart.transaction() as t:
                    handle.write("partial")
                    raise Boom
        assert t.rolled_back and any("out.txt" in n for n in t.not_undone)
        assert any("out.txt" in note for note in info.value.__notes__)
    finally:
        handle.close()


def test_read_position_of_a_file_is_restored(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("line1\nline2\nline3\n")
    with open(path) as reader:
        reader.readline()
        with pytest.raises(Boom):
            with dart.transaction(strict=True):
                reader.readline()
                raise Boom
        assert reader.readline() == "line2\n"


def test_generator_suspended_inside_a_transaction_and_ended_out_of_order_is_refused():
    def gen():
        with dart.transaction():
            yield 1
            yield 2

    g = gen()
    next(g)  # opens the generator's transaction and suspends inside it
    with pytest.raises(TransactionError, match="generator or coroutine"):
        with dart.transaction():
            next(g)
            g.close()  # the generator's transaction ends first: out of order
    assert not rollback.is_open()


def test_transactions_in_threads_are_independent():
    shared = np.zeros(BIG)
    mine = {"value": 0}
    inside, release, errors = threading.Event(), threading.Event(), []

    def worker():
        try:
            with dart.transaction(shared):
                shared[10] = 1  # committed by this thread
                inside.set()
                release.wait(10)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(10)
    assert rollback.is_open() and rollback.current() is None  # open in the other thread only
    with pytest.raises(Boom):
        with dart.transaction():
            mine["value"] = 1
            shared[20] = 2
            raise Boom
    release.set()
    thread.join(10)
    assert not errors and mine == {"value": 0} and shared[20] == 0 and shared[10] == 1


# -- property: random mutations of random object graphs ----------------------------------


class Node:
    pass


def _build(draw_data):
    """A random graph of lists, dicts, sets, instances and arrays, with shared nodes."""
    kinds, links, values = draw_data
    nodes = []
    for i, kind in enumerate(kinds):
        if kind == "list":
            nodes.append([values[i % len(values)]])
        elif kind == "dict":
            nodes.append({"v": values[i % len(values)]})
        elif kind == "set":
            nodes.append({values[i % len(values)]})
        elif kind == "node":
            n = Node()
            n.v = values[i % len(values)]
            nodes.append(n)
        else:
            nodes.append(np.full(4 if kind == "array" else BIG, float(i)))
    for src, dst in links:
        a, b = nodes[src % len(nodes)], nodes[dst % len(nodes)]
        if isinstance(a, list):
            a.append(b)
        elif isinstance(a, dict):
            a[f"k{dst}"] = b
        elif isinstance(a, Node):
            setattr(a, f"a{dst}", b)
    return nodes


def _fingerprint(root):
    """Structure, identities and values of everything reachable: equal iff rolled back."""
    out, seen, todo = [], {}, [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            out.append(("ref", seen[id(obj)]))
            continue
        seen[id(obj)] = len(seen)
        if isinstance(obj, list):
            out.append(("list", id(obj), len(obj)))
            todo.extend(obj)
        elif isinstance(obj, dict):
            out.append(("dict", id(obj), tuple(obj)))
            todo.extend(obj.values())
        elif isinstance(obj, set):
            out.append(("set", id(obj), tuple(sorted(map(repr, obj)))))
        elif isinstance(obj, Node):
            out.append(("node", id(obj), tuple(vars(obj))))
            todo.extend(vars(obj).values())
        elif isinstance(obj, np.ndarray):
            out.append(("array", id(obj), obj.tobytes()))
        else:
            out.append(("value", repr(obj)))
    return out


def _mutate(nodes, op, i, value):
    target = nodes[i % len(nodes)]
    if isinstance(target, list):
        [lambda: target.append(value), lambda: target.clear(), lambda: target.insert(0, nodes[0]),
         lambda: target.reverse()][op % 4]()
    elif isinstance(target, dict):
        [lambda: target.update(x=value), lambda: target.clear(), lambda: target.pop("v", None),
         lambda: target.setdefault("n", nodes[-1])][op % 4]()
    elif isinstance(target, set):
        [lambda: target.add(value), lambda: target.clear(), lambda: target.discard(value),
         lambda: target.update({op})][op % 4]()
    elif isinstance(target, Node):
        [lambda: setattr(target, "v", value), lambda: vars(target).clear(), lambda: setattr(target, "n", nodes[0]),
         lambda: setattr(target, "v", [value])][op % 4]()
    else:
        target[(op * 7919 + i) % target.size] = value


graphs = st.tuples(
    st.lists(st.sampled_from(["list", "dict", "set", "node", "array", "big"]), min_size=1, max_size=8),
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=12),
    st.lists(st.integers(-5, 5), min_size=1, max_size=4),
)
mutations = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20), st.integers(-9, 9)), min_size=1, max_size=15)


@settings(max_examples=60, deadline=None)
@given(graphs, mutations, st.booleans())
def test_property_rollback_equals_the_entry_snapshot(graph, ops, nest):
    nodes = _build(graph)
    root = [nodes]
    before = _fingerprint(root)
    with pytest.raises(Boom):
        with dart.transaction(root):
            for op, i, value in ops[: len(ops) // 2]:
                _mutate(nodes, op, i, value)
            if nest:
                with dart.transaction(root):  # a completed inner transaction in between
                    for op, i, value in ops[len(ops) // 2:]:
                        _mutate(nodes, op, i, value)
            raise Boom
    assert _fingerprint(root) == before


def test_asyncio_tasks_each_have_their_own_transactions():
    import asyncio

    ledger = {"a": 0, "b": 0}

    async def keeps():
        with dart.transaction(ledger, frames=False) as t:
            ledger["a"] = 1
            await asyncio.sleep(0.01)  # the other task opens its own meanwhile
        return t  # ends while the other task's transaction is still open: not out of order

    async def fails():
        await asyncio.sleep(0)
        with pytest.raises(Boom):
            with dart.transaction(ledger, frames=False) as t:
                ledger["b"] = 2
                await asyncio.sleep(0.03)
                raise Boom
        return t

    async def main():
        return await asyncio.gather(keeps(), fails())

    kept, failed = asyncio.run(main())
    # b's rollback restored the ledger to its entry state (a=1 was already there)
    assert ledger == {"a": 1, "b": 0} and failed.rolled_back and not kept.rolled_back
    assert not rollback.is_open()


def test_a_c_object_without_visible_state_is_named_and_strict_refuses():
    import itertools

    counter = itertools.count()
    next(counter)
    with pytest.raises(TransactionError, match=r"counter \(a itertools.count: a C object"):
        with dart.transaction(strict=True):
            pass
    with dart.transaction() as t:
        pass
    assert any(".counter (a itertools.count" in n for n in t.not_undone)
    assert next(counter) == 1
