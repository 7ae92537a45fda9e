"""tqdm bars and loops over them while dart runs (capture/progressbars.py)."""

from __future__ import annotations

import io

import pytest

tqdm_module = pytest.importorskip("tqdm")

from dart.capture import pickler, progressbars  # noqa: E402


@pytest.fixture
def hooked():
    progressbars.install()
    yield tqdm_module.tqdm
    progressbars.uninstall()


def test_the_hook_is_taken_out_again():
    original = tqdm_module.tqdm.__iter__
    progressbars.install()
    assert tqdm_module.tqdm.__iter__ is not original
    progressbars.uninstall()
    assert tqdm_module.tqdm.__iter__ is original


def test_a_loop_counts_like_tqdm_and_closes_the_bar(hooked):
    out = io.StringIO()
    bar = hooked(range(7), file=out, mininterval=0, miniters=1)
    seen = [x for x in bar]
    assert seen == list(range(7))
    assert bar.n == 7 and bar.disable  # closed
    assert "7/7" in out.getvalue()


def test_a_bar_and_its_loop_saved_mid_way_go_on_from_there(hooked):
    bar = hooked(list(range(10)), file=io.StringIO(), desc="train", mininterval=0, miniters=1)
    bar.set_postfix(loss="0.5")
    it = iter(bar)
    taken = [next(it) for _ in range(4)]  # the 4th is in flight (its body has not finished)
    data, buffers = pickler.dumps({"bar": bar, "it": it})
    state = pickler.loads(data, buffers)
    bar2, it2 = state["bar"], state["it"]
    assert isinstance(it2, progressbars.BarIterator) and it2.bar is bar2
    assert bar2.desc == "train" and bar2.n == 3 and "loss=0.5" in bar2.postfix
    assert taken + list(it2) == list(range(10))
    assert bar2.n == 10


def test_a_disabled_bar_iterates_its_iterable_plainly(hooked):
    bar = hooked(range(3), disable=True)
    assert list(bar) == [0, 1, 2]
    state = pickler.loads(*pickler.dumps(bar))
    assert state.disable and list(state) == [0, 1, 2]
