"""Progress while a commit's buffers are read (a resume or load of a big
commit): CommitState reports bytes read up to the total, and the terminal bar
starts only on a terminal and for big enough work, never taking over stdout."""

from __future__ import annotations

import io
import sys

import numpy as np

from dart.capture import snapshot
from dart.present import progress_on_terminal
from dart.store import open_store
from dart.store.layout import CommitState


def test_buffer_reads_report_progress_up_to_the_total(tmp_path):
    from dart.flush import CommitWriter

    store = open_store(str(tmp_path / "store"))
    run_id = store.create_run({"command": "progress-test"})
    arrays = {f"a{i}": np.full(300_000, i, dtype=np.float64) for i in range(3)}
    writer = CommitWriter(store, run_id, None)
    pods = snapshot(arrays)
    writer.commit(pods, {"time": 0.0, "position": {}, "resumable": False}).wait()
    writer.close()
    record = store.log()[0]
    state = CommitState(store, record)
    seen = []
    state.progress = lambda done, total: seen.append((done, total))
    state.read()
    assert seen, "no progress was reported"
    totals = {total for _, total in seen}
    assert len(totals) == 1 and seen[-1][0] == seen[-1][1] == totals.pop() >= 3 * 300_000 * 8
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_the_bar_shows_only_on_a_terminal_and_for_big_work(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_on_terminal("loading", least=100) as tick:
        assert tick is None  # not a terminal: nothing at all

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    stdout = sys.stdout
    with progress_on_terminal("loading", least=100) as tick:
        tick(10, 50)  # small work: no bar
        assert not terminal.getvalue()
        tick(10, 500)
        assert sys.stdout is stdout, "the bar must not redirect the program's stdout"
        tick(500, 500)
