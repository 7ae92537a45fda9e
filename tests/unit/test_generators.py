"""Generator objects of the user's code saved as their frame and re-created as a
continuation of their function (dart.resume.generators): after any number of
save/load round trips, a generator yields exactly what the uninterrupted one
yields, without running its body again."""

from __future__ import annotations

import collections
import importlib.util
import itertools
import pickle
import sys
import textwrap
import types

import numpy as np
import pytest

import dart.resume  # noqa: F401  (registers the generator saver with the pickler)
from dart.capture import pickler
from dart.capture.path import savable

SOURCE = textwrap.dedent(
    '''
    import numpy as np

    calls = []

    def rows(path):
        with open(path) as f:
            for line in f:
                name, value = line.split(",")
                yield name, int(value)

    def batches(data, size, seed):
        rng = np.random.default_rng(seed)
        epoch = 0
        while True:
            calls.append(epoch)
            order = rng.permutation(len(data))
            for start in range(0, len(data) - size + 1, size):
                yield epoch, data[order[start:start + size]]
            epoch += 1

    def forever(items):
        while True:
            yield from items

    def echo():
        total = 0
        while True:
            got = yield total
            total += 1 if got is None else got

    def make_counter(step):
        def count(n):
            for i in range(n):
                yield i * step
        return count

    class Source:
        def __init__(self, values):
            self.values = values

        def stream(self):
            for i, v in enumerate(self.values):
                yield i, v * 2

    def in_expression():
        while True:
            print((yield 1))

    def guarded(path):
        with open(path, "w") as f:
            for i in range(5):
                f.write(f"{i}\\n")
                yield i
            f.write("end\\n")

    def short():
        yield 1

    def make_genexpr():
        return (i * i for i in range(3))

    served = 0

    def make_counter_shared():
        seen = 0
        def count():
            nonlocal seen
            while True:
                seen += 1
                yield seen
        return count

    def by_kind(items):
        for kind, value in items:
            match kind:
                case "x":
                    yield value
                case _:
                    yield -value

    def counted(n):
        global served
        for i in range(n):
            served += 1
            yield i
    '''
)


@pytest.fixture
def mod(tmp_path):
    """The source above as an importable module of the user's code (a file
    beside the "main script"), and a main module in the same folder."""
    path = tmp_path / "gens.py"
    path.write_text(SOURCE)
    name = f"gens_{abs(hash(tmp_path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    main = types.ModuleType("main_for_test")
    main.__file__ = str(tmp_path / "train.py")
    module.main = main
    yield module
    del sys.modules[name]


def round_trip(obj, mod):
    data, buffers = pickler.dumps(obj, main_module=mod.main)
    return pickler.loads(data, buffers)


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("hops", [[0], [1], [3], [4, 1, 1, 7], [2, 0, 0, 5, 9]])
def test_suspended_in_nested_loops_continues_exactly(mod, hops):
    data = np.arange(30.0).reshape(10, 3)
    ref, gen = mod.batches(data, 3, 5), mod.batches(data, 3, 5)
    for hop in hops:
        for _ in range(hop):
            assert same(next(gen), next(ref))
        gen = round_trip(gen, mod)
    del mod.calls[:]
    for _ in range(12):  # past the end of the inner loop, into new epochs
        assert same(next(gen), next(ref))
    # The body was not run again: the re-created one started the same epochs as ref.
    starts = collections.Counter(mod.calls)
    assert len(starts) >= 3 and set(starts.values()) == {2}, mod.calls


def test_round_trip_does_not_rerun_the_body(mod):
    gen = mod.batches(np.arange(12.0).reshape(4, 3), 2, 0)
    next(gen)
    del mod.calls[:]
    gen = round_trip(round_trip(gen, mod), mod)
    next(gen)  # the second batch of epoch 0
    assert mod.calls == []
    next(gen)  # epoch 1 starts
    assert mod.calls == [1]


def test_yield_from_goes_on_delegating(mod):
    ref, gen = mod.forever([1, 2, 3]), mod.forever([1, 2, 3])
    for _ in range(4):
        assert next(gen) == next(ref)
    gen = round_trip(gen, mod)
    assert [next(gen) for _ in range(7)] == [next(ref) for _ in range(7)]


def test_yield_from_another_generator_of_the_user(mod):
    inner = mod.make_counter(3)(4)
    gen = mod.forever(inner)
    assert [next(gen), next(gen)] == [0, 3]
    gen = round_trip(gen, mod)
    assert list(itertools.islice(gen, 2)) == [6, 9]  # (then the loop spins: inner is exhausted)


def test_assigned_yield_receives_none(mod):
    ref, gen = mod.echo(), mod.echo()
    for _ in range(3):
        assert next(gen) == next(ref)
    gen = round_trip(gen, mod)
    assert gen.send(10) == ref.send(10)
    assert [next(gen) for _ in range(3)] == [next(ref) for _ in range(3)]


def test_not_started_keeps_its_arguments(mod):
    gen = round_trip(mod.make_counter(5)(3), mod)
    assert list(gen) == [0, 5, 10]


def test_re_created_and_saved_again_before_its_first_next(mod):
    gen = mod.make_counter(2)(4)
    next(gen)
    again = round_trip(round_trip(gen, mod), mod)  # the middle one never ran
    assert list(again) == [2, 4, 6]


def test_finished_stays_finished(mod):
    gen = mod.short()
    list(gen)
    assert list(round_trip(gen, mod)) == []


def test_closure_and_method(mod):
    counter = mod.make_counter(7)(5)
    next(counter)
    source = mod.Source([1, 2, 3, 4])
    stream = source.stream()
    next(stream)
    counter2, stream2 = round_trip((counter, stream), mod)
    assert list(counter2) == [7, 14, 21, 28]
    assert list(stream2) == [(1, 4), (2, 6), (3, 8)]
    assert stream2.__qualname__ == "Source.stream"


def test_identity_kept(mod):
    gen = mod.forever("ab")
    next(gen)
    holder = {"a": gen, "b": [gen]}
    back = round_trip(holder, mod)
    assert back["a"] is back["b"][0]


def test_with_block_keeps_its_open_file(mod, tmp_path):
    out = tmp_path / "log.txt"
    gen = mod.guarded(str(out))
    assert [next(gen), next(gen)] == [0, 1]
    gen.gi_frame.f_locals["f"].flush()
    gen = round_trip(gen, mod)
    assert list(gen) == [2, 3, 4]
    assert out.read_text() == "0\n1\n2\n3\n4\nend\n"


def test_a_generator_reading_a_text_file_line_by_line_goes_on_from_its_line(mod, tmp_path):
    """`for line in f` turns the file's tell() off: the file is found again at the
    end of the line the generator holds (capture/textfiles.py)."""
    data = tmp_path / "rows.csv"
    data.write_text("".join(f"r{i},{i * i}\n" for i in range(500)))
    gen = mod.rows(str(data))
    taken = [next(gen) for _ in range(7)]
    for _ in range(3):
        gen = round_trip(gen, mod)
        taken += [next(gen) for _ in range(60)]
    taken += list(gen)
    assert taken == [(f"r{i}", i * i) for i in range(500)]


def test_yield_inside_an_expression_is_refused_with_the_line(mod):
    gen = mod.in_expression()
    next(gen)
    with pytest.raises(pickle.PicklingError, match=r"in_expression\(\).*yield inside an expression at line"):
        round_trip(gen, mod)


def test_generator_expressions_are_refused_with_a_reason(mod):
    genexpr = mod.make_genexpr()
    with pytest.raises(pickle.PicklingError, match="is a generator expression; make it a list"):
        round_trip(genexpr, mod)


def test_a_library_generator_in_python_is_saved_like_the_users(mod):
    import email.iterators
    from email.message import Message

    message = Message()
    message.set_payload("one\ntwo\nthree\nfour\n")
    lines = email.iterators.body_line_iterator(message)
    assert next(lines) == "one\n"
    assert savable(lines)
    assert list(round_trip(lines, mod)) == ["two\n", "three\n", "four\n"]


def test_edited_source_is_named_on_load(mod, tmp_path):
    gen = mod.forever([1])
    next(gen)
    data, buffers = pickler.dumps(gen, main_module=mod.main)
    (tmp_path / "gens.py").write_text("x = 1\n")  # forever() is gone
    with pytest.raises(pickle.UnpicklingError, match=r"forever\(\) is not where the commit saw it"):
        pickler.loads(data, buffers)


def test_a_loop_over_a_generator_variable_is_savable(mod, monkeypatch):
    monkeypatch.setitem(sys.modules, "__main__", mod.main)
    gen = mod.make_counter(1)(3)
    assert savable(gen)
    assert not savable(mod.make_genexpr())


def test_global_declarations_stay_global(mod):
    gen = mod.counted(4)
    next(gen)
    gen = round_trip(gen, mod)
    assert list(gen) == [1, 2, 3] and mod.served == 4


def test_a_generator_waiting_in_a_match_case_is_refused_when_saved(mod):
    gen = mod.by_kind([("x", 1), ("y", 2), ("x", 3)])
    next(gen)
    with pytest.raises(pickle.PicklingError, match=r"by_kind\(\).*yield inside a `match` statement \(line"):
        round_trip(gen, mod)


def test_a_generator_assigning_nonlocal_variables_is_refused(mod):
    gen = mod.make_counter_shared()()
    next(gen)
    with pytest.raises(pickle.PicklingError, match=r"nonlocal seen"):
        round_trip(gen, mod)
