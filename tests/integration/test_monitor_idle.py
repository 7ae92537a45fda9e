"""Between commits the monitor costs the program nothing (issue 14, target 4):
after a commit taken through the monitor (a commit falls due, the next safe
point takes it), the script's code carries no instrumented instruction and no
local event, no global event is set, and dart's threads sleep: none of them
wakes up while the program runs. Each of these would cost per step of the
program's own work (benchmarks/bench_monitor_instructions.py measures it)."""

from __future__ import annotations

import json
import textwrap

from conftest import child_env, dart_cmd, dart_log, run

# A commit falls due by dart.transaction(commit=True) (what the timer does: the
# monitor armed, the next safe point commits), then the program works on.
PROGRAM = textwrap.dedent(
    """
    import dis, json, sys, threading, time
    import dart

    def work(n):
        total = 0
        for i in range(n):
            total += i * i
        return total

    with dart.transaction(commit=True):
        pass
    for step in range(3):
        work(1000)
    dart.flush()  # the commit is durable: the flusher has nothing left to do
    time.sleep(0.3)  # its threads finish the commit's bookkeeping and go back to waiting

    def switches(thread):
        # voluntary context switches of one thread: each wake-up is one
        with open(f"/proc/self/task/{thread.native_id}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    return int(line.split()[1])

    dart_threads = [t for t in threading.enumerate() if t.name.startswith("dart-")]
    before = {t.name: switches(t) for t in dart_threads}
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        work(1000)
    after = {t.name: switches(t) for t in dart_threads}

    mon = sys.monitoring
    tool = next(i for i in range(6) if mon.get_tool(i) == "dart")
    codes = [sys._getframe().f_code, work.__code__]
    print(json.dumps({
        "global_events": mon.get_events(tool),
        "local_events": [mon.get_local_events(tool, c) for c in codes],
        "instrumented": [[i.opname for i in dis.get_instructions(c, adaptive=True)
                          if i.opname.startswith("INSTRUMENTED")] for c in codes],
        "threads": sorted(before),
        "wakeups": {name: after[name] - before[name] for name in before},
    }))
    """
)


def test_nothing_left_on_after_a_commit(tmp_path):
    program = tmp_path / "idle.py"
    program.write_text(PROGRAM)
    store = tmp_path / "store"
    result = run(dart_cmd(program, store=store, every="100000"), cwd=tmp_path, env=child_env())
    assert result.returncode == 0, result.describe()
    report = json.loads(result.lines[-1])
    commits = dart_log(store, tmp_path)
    assert len(commits) == 2, commits  # the transaction's commit, and the one at the end
    assert report["global_events"] == 0, report
    assert report["local_events"] == [0, 0], report
    assert report["instrumented"] == [[], []], report
    assert any(name.startswith("dart-flusher") for name in report["threads"]), report
    assert any(name == "dart-timer" for name in report["threads"]), report
    # A thread waiting for work or for the next due time does not wake up.
    assert all(count == 0 for count in report["wakeups"].values()), report["wakeups"]
