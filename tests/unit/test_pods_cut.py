"""The fast cut (each pod pickled by the C pickler alone, re-pickled with
references only when it holds an object of an earlier pod) against the reference
cut that looks every object up: same streams, same buffers, same dependencies,
and objects shared between roots come back shared."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dart.capture.pods import assemble, cut

atoms = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans(), st.none())


class Box:
    def __init__(self, value):
        self.value = value


@st.composite
def rooted_graphs(draw):
    """Roots over a pool of mutable objects, some reachable from several roots."""
    pool = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["list", "dict", "box", "array", "tuple"]))
        inner = draw(st.lists(st.one_of(atoms, st.sampled_from(pool) if pool else atoms), max_size=4))
        if kind == "list":
            pool.append(list(inner))
        elif kind == "dict":
            pool.append({f"k{i}": v for i, v in enumerate(inner)})
        elif kind == "box":
            pool.append(Box(inner))
        elif kind == "array":
            pool.append(np.arange(draw(st.sampled_from([3, 20000])), dtype=np.float32))
        else:
            pool.append(tuple(inner))
    roots = []
    for i in range(draw(st.integers(1, 5))):
        picked = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
        roots.append((f"g:r{i}", picked if draw(st.booleans()) else picked[0]))
    return roots


def _same(a, b) -> bool:
    """Equal values (tuples, which dart repeats rather than shares, by value)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, Box):
        return _same(a.value, b.value)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b or (a != a and b != b)


def _shape(pods):
    return [(p.name, p.stream, [bytes(b.raw()) for b in p.buffers], p.deps) for p in pods]


@pytest.mark.parametrize("oracle_min", [1 << 20, 0, 200])  # memo copies; every pod an oracle; a mix
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(roots=rooted_graphs())
def test_fast_cut_equals_the_reference_cut(monkeypatch, oracle_min, roots):
    from dart.capture import pods as module

    monkeypatch.setattr(module, "ORACLE_MIN", oracle_min)
    fast, keep_fast = cut(roots)
    slow, keep_slow = cut(roots, fast=False)
    assert _shape(fast) == _shape(slow)
    values = assemble([(p.name, p.stream, [bytearray(b.raw()) for b in p.buffers]) for p in fast])
    # identity across roots: every place that held one object gets one object back
    places = {}
    for name, value in roots:
        items = value if isinstance(value, list) else [value]
        restored = values[name] if isinstance(value, list) else [values[name]]
        for item, back in zip(items, restored):
            if isinstance(item, (list, dict, Box, np.ndarray)):
                places.setdefault(id(item), []).append(back)
    for backs in places.values():
        assert all(b is backs[0] for b in backs)
    assert all(_same(values[n], v) for n, v in roots)


def test_an_object_of_an_earlier_pod_is_a_reference_in_the_later_one():
    shared = [1, 2, 3]
    pods, _ = cut([("g:a", {"x": shared}), ("g:b", [shared, "text"])])
    assert pods[1].deps == ["g:a"]
    values = assemble([(p.name, p.stream, []) for p in pods])
    assert values["g:b"][0] is values["g:a"]["x"]


def test_a_large_pod_with_no_shared_object_is_not_pickled_again(monkeypatch):
    from dart.capture import pods as module

    calls = []
    real = module._dump
    monkeypatch.setattr(module, "_dump", lambda *a: calls.append(a[3] is None) or real(*a))
    monkeypatch.setattr(module, "ORACLE_MIN", 1 << 16)  # the big pod answers from its pickler
    big = {f"k{i}": [i, str(i)] for i in range(20000)}
    cut([("g:small", [1, 2]), ("g:big", big), ("g:other", {"n": 3})])
    assert calls == [True, True, True]  # each pod pickled once, without lookups


def test_an_oracle_pod_shares_with_earlier_and_later_pods():
    from dart.capture import pods as module

    first, last = [1, 2], {"k": 3}
    big = {f"k{i}": [i, str(i)] for i in range(50000)}
    big["first"], big["last"] = first, last
    roots = [("g:a", first), ("g:big", big), ("g:z", [last, big["k7"]])]
    pods, _ = cut(roots)
    assert len(pods[1].stream) >= module.ORACLE_MIN
    assert pods[1].deps == ["g:a"] and pods[2].deps == ["g:big"]
    assert _shape(pods) == _shape(cut(roots, fast=False)[0])
    values = assemble([(p.name, p.stream, []) for p in pods])
    assert values["g:big"]["first"] is values["g:a"]
    assert values["g:z"][0] is values["g:big"]["last"] and values["g:z"][1] is values["g:big"]["k7"]


def test_a_fresh_root_asks_no_earlier_pod(monkeypatch):
    """The random states are made by the capture: asking a large earlier pod about
    them would copy its memo for nothing. A commit's cut names them fresh, and the
    result is still the reference cut's."""
    import numpy as np

    from dart.capture import FRESH_ROOTS, capture_hidden
    from dart.capture import pods as module

    monkeypatch.setattr(module, "ORACLE_MIN", 1 << 16)
    asked = []
    real = module._MemoOracle.index_of
    monkeypatch.setattr(module._MemoOracle, "index_of", lambda self, obj: asked.append(obj) or real(self, obj))
    big = {f"k{i}": [i, str(i)] for i in range(20000)}
    roots = [("g:big", big), ("g:arr", np.arange(4)), ("hidden", capture_hidden())]
    pods, _ = cut(roots, fresh=FRESH_ROOTS)
    assert not any(obj is roots[2][1] for obj in asked)
    assert _shape(pods) == _shape(cut(roots, fast=False)[0])
    asked.clear()
    cut(roots)  # without the hint the hidden pod's dict is looked up
    assert any(obj is roots[2][1] for obj in asked)
