"""The pickler: identity, views, tensors, files, and variables that do not pickle."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dart.capture import Capturer, UnsavableIterator, pickler, restore_pods


def roundtrip(obj):
    stream, buffers = pickler.dumps(obj)
    return pickler.loads(stream, [bytearray(b.raw()) for b in buffers])


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    dtype=st.sampled_from(["f4", "f8", "i2", "u1", ">i4", "c8", "?"]),
    data=st.data(),
)
def test_views_of_one_array_restore_as_views(shape, dtype, data):
    base = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
    slices = tuple(
        slice(data.draw(st.integers(0, n - 1)), None, data.draw(st.sampled_from([1, 2, -1]))) for n in shape
    )
    view = base[slices]
    restored = roundtrip({"base": base, "view": view, "t": base.T})
    assert restored["base"].dtype == base.dtype and restored["view"].dtype == view.dtype
    assert np.array_equal(restored["view"], view) and np.array_equal(restored["t"], base.T)
    # Writing through the base shows in the views: they share memory again.
    restored["base"].flat[:] = restored["base"].flat[::-1].copy()
    assert np.array_equal(restored["view"], restored["base"][slices])
    assert np.array_equal(restored["t"], restored["base"].T)


def test_two_names_for_one_object_restore_as_one():
    shared = [1, 2, 3]
    restored = roundtrip({"a": shared, "b": shared, "c": {"x": shared}})
    assert restored["a"] is restored["b"] is restored["c"]["x"]


def test_big_arrays_leave_the_stream_small_ones_stay():
    stream, buffers = pickler.dumps({"big": np.zeros(1 << 17), "small": np.zeros(8)})
    assert len(buffers) == 1 and buffers[0].raw().nbytes == 8 << 17
    assert len(stream) < 4096


def test_torch_state_keeps_identity_views_and_training():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.Linear(300, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(5, 64)).sum().backward()
    opt.step()
    base = torch.arange(40000, dtype=torch.bfloat16)
    state = {"model": model, "opt": opt, "base": base, "view": base[10:70].view(6, 10)}
    restored = roundtrip(state)
    params = list(restored["model"].parameters())
    assert restored["opt"].param_groups[0]["params"][0] is params[0]
    assert all(type(p) is torch.nn.Parameter and p.requires_grad for p in params)
    restored["base"][12] = 5
    assert restored["view"][0, 2] == 5

    def step(m, o):
        torch.manual_seed(1)
        o.zero_grad()
        m(torch.randn(5, 64)).sum().backward()
        o.step()

    step(model, opt)
    step(restored["model"], restored["opt"])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), restored["model"].parameters()))


def test_an_open_file_comes_back_cut_to_its_length_at_the_commit(tmp_path):
    path = tmp_path / "log.txt"
    f = open(path, "w")
    f.write("one\n")
    stream, buffers = pickler.dumps({"f": f})
    f.write("two\n")  # after the commit: must vanish on resume
    f.close()
    restored = pickler.loads(stream, [bytes(b.raw()) for b in buffers])["f"]
    restored.write("three\n")
    restored.close()
    assert path.read_text() == "one\nthree\n"


def test_unpicklable_global_is_skipped_or_rebuilt_and_named_once():
    import types

    main = types.ModuleType("__main__")
    rebuild = {"lock"}
    capturer = Capturer(main, lambda frame, name, value: "line 3" if name in rebuild else None)
    namespace = {"lock": threading.Lock(), "gen": (i for i in range(3)), "x": 41}
    with pytest.warns(Warning) as caught:
        cut, _, info = capturer.capture(namespace, {}, [])
    assert {"gen"} == set(info["skipped"]) and info["rebuilt"] == {0: ["lock"]}
    assert len(caught) == 2
    assert restore_pods(cut)["globals"] == {"x": 41}
    with _no_warning():
        capturer.capture(namespace, {}, [])  # known values: no second warning


def test_unpicklable_local_without_rebuild_refuses_the_commit_every_time():
    import types

    capturer = Capturer(types.ModuleType("__main__"))
    frame = [("main", {"pool": threading.Lock()})]
    for _ in range(2):  # the second time from what the first one learned
        with pytest.raises(UnsavableIterator, match="local variable 'pool' of main"):
            capturer.capture({}, {}, frame)


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        assert not self._caught, [str(w.message) for w in self._caught]


def make_counter(start):
    count = [start]

    def bump(by=1):
        count[0] += by
        return count[0]

    def peek():
        return count[0]

    def again():  # refers back to itself through its cell
        return again

    return bump, peek, again


def test_closures_are_saved_by_value_with_shared_cells():
    import types

    main = types.ModuleType("__main__")
    main.__file__ = __file__
    bump, peek, again = make_counter(10)
    bump(5)
    for f in (bump, peek, again):  # pretend they belong to the script
        f.__module__ = "__main__"
    stream, buffers = pickler.dumps({"bump": bump, "peek": peek, "again": again}, main_module=main)
    import sys

    saved_main = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        restored = pickler.loads(stream, [bytearray(b.raw()) for b in buffers])
    finally:
        sys.modules["__main__"] = saved_main
    assert restored["bump"]() == 16 and restored["peek"]() == 16  # one shared cell, state kept
    assert restored["again"]() is restored["again"]
    assert bump() == 16  # the original is untouched


class _BreaksOnLoad:
    def __setstate__(self, state):
        raise RecursionError("maximum recursion depth exceeded")


def test_an_object_that_fails_to_load_is_named_in_one_clear_error():
    """A library's __setstate__ can fail any way (a pickled tqdm bar's file
    wrapper recursed): the error names the variable and says what to do."""
    from dart.capture import assemble
    from dart.capture.pods import cut
    from dart.errors import CaptureError

    broken = _BreaksOnLoad()
    broken.x = 1
    pods, _ = cut([("g:fine", [1, 2]), ("f1:pbar", broken)])
    with pytest.raises(CaptureError) as info:
        assemble([(p.name, p.stream, []) for p in pods])
    message = str(info.value)
    assert "local variable 'pbar'" in message and "RecursionError" in message
    assert "--fresh" in message and "dart run --at" in message


def test_a_pool_left_behind_by_its_with_block_is_saved_shut_down():
    """``with Pool() as pool:`` leaves a shut-down pool in the frame: it cannot be
    pickled, and used to stop every commit there. It is saved as a stand-in that
    says what it was; a pool still running is still refused."""
    import multiprocessing.pool
    from concurrent.futures import ThreadPoolExecutor

    from dart.capture import pickler

    with multiprocessing.pool.ThreadPool(1) as pool, ThreadPoolExecutor(1) as executor:
        assert pool.apply(len, ("abc",)) == 3
        executor.submit(len, "ab").result()
        with pytest.raises(Exception):
            pickler.dumps(pool)
    executor.shutdown()
    state = pickler.loads(*pickler.dumps({"pool": pool, "executor": executor}))
    assert "ThreadPool" in repr(state["pool"]) and "ThreadPoolExecutor" in repr(state["executor"])
    with pytest.raises(RuntimeError, match="shut down before dart's commit"):
        state["pool"].map(len, ["a"])
    assert pickler.loads(*pickler.dumps(state["pool"])).kind == state["pool"].kind  # saved again after a resume


def test_a_logger_keeps_its_handlers_and_a_file_handler_its_file(tmp_path):
    """A logger pickles by name only, so a resume lost the handlers main() had
    attached; a handler did not pickle at all. Saved, both come back configured;
    the log file is cut back to its size at the commit."""
    import logging

    from dart.capture import pickler

    path = tmp_path / "run.log"
    log = logging.getLogger("dart-test.handlers")
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.info("before the commit")
    saved = pickler.dumps({"log": log, "handler": handler})
    log.info("after the commit")  # work a resume does again
    for h in list(log.handlers):  # a fresh process: the logger has no handlers
        log.removeHandler(h)
        h.close()
    state = pickler.loads(*saved)
    assert state["log"] is log and log.handlers == [state["handler"]] and state["handler"] is not handler
    assert log.level == logging.DEBUG and not log.propagate and state["handler"].level == logging.INFO
    log.info("redone after the resume")
    log.debug("below the handler's level")
    state["handler"].close()
    log.removeHandler(state["handler"])
    assert path.read_text() == "INFO before the commit\nINFO redone after the resume\n"


def test_a_logger_with_a_handler_dart_cannot_save_is_saved_by_name():
    """A library's logger with a handler of its own kind still pickles (as
    pickle saves loggers: by name), and a NullHandler is saved."""
    import logging
    import logging.handlers

    from dart.capture import pickler

    quiet = logging.getLogger("dart-test.quiet")
    quiet.addHandler(logging.NullHandler())
    odd = logging.getLogger("dart-test.odd")
    queue_handler = logging.handlers.QueueHandler(__import__("queue").Queue())
    odd.addHandler(queue_handler)
    state = pickler.loads(*pickler.dumps({"quiet": quiet, "odd": odd}))
    assert state["odd"] is odd and odd.handlers == [queue_handler]  # left as the process has it
    assert state["quiet"] is quiet and type(quiet.handlers[0]) is logging.NullHandler


def test_a_tensor_whose_graph_backward_still_needs_refuses_the_commit():
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.ones(3))
    acc = 0
    for _ in range(2):
        acc = acc + ((w * torch.arange(3.0)) ** 2).sum()  # summed over steps, backward() later
    with pytest.raises(Exception, match="autograd graph backward\\(\\) has not used yet"):
        pickler.dumps({"acc": acc, "w": w})
    acc.backward()  # the graph is spent: saved like any tensor, as a leaf
    back = roundtrip({"acc": acc, "w": w})
    assert torch.equal(back["acc"], acc.detach()) and back["w"].requires_grad


def test_loaded_arrays_have_the_canonical_dtype_objects():
    state = {"a": np.arange(4.0), "big": np.zeros(200_000, dtype=np.float32), "view": np.arange(9)[2:]}
    back = roundtrip(state)
    assert all(back[k].dtype is np.dtype(state[k].dtype.name) for k in state)
    import pickle

    assert pickle.dumps(back) == pickle.dumps(state)  # what a script hashing its state sees


def test_a_memmap_is_saved_as_its_file_not_a_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = np.lib.format.open_memmap("out.npy", mode="w+", dtype=np.float64, shape=(4, 2))
    out[0] = 1.0  # not flushed yet: the commit flushes it
    back = roundtrip({"out": out})["out"]
    assert isinstance(back, np.memmap) and back.mode == "r+"  # "w+" again would empty the file
    back[1] = 2.0
    back.flush()
    assert np.load("out.npy").tolist() == [[1.0, 1.0], [2.0, 2.0], [0.0, 0.0], [0.0, 0.0]]
