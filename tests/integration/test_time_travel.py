"""Time travel on stores made by real runs: dart runs/show/diff/tag/log,
commit names, dart checkout / run --at, dart.load of frame locals, dart gc
(with a run writing at the same time) and the environment check."""

from __future__ import annotations

import json
import subprocess

import pytest

from dart.store import open_store
from dart.store.reach import objects_needed

from conftest import PYTHON, child_env, dart_cmd, run, run_and_kill, script



def dart(cwd, *args, env=None):
    return run([PYTHON, "-m", "dart", *map(str, args)], cwd=cwd, env=env)


def dart_json(cwd, *args):
    res = dart(cwd, *args, "--json")
    assert res.returncode == 0, res.describe()
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def numpy_store(tmp_path_factory):
    """A finished top-level NumPy run, and a killed one of another command."""
    folder = tmp_path_factory.mktemp("numpy")
    store = folder / "store"
    done = run(dart_cmd(script("train_numpy.py"), 2, store=store), cwd=folder)
    assert done.returncode == 0, done.describe()
    killed = run_and_kill(dart_cmd(script("train_numpy.py"), 3, store=store), cwd=folder, after_lines=7)
    return folder, store, done, killed


@pytest.fixture(scope="module")
def torch_store(tmp_path_factory):
    """A finished run of a torch Trainer in main() (commits at every safe point)."""
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("torch")
    store = folder / "store"
    reference = run([PYTHON, script("train_trainer.py"), 6], cwd=folder)
    done = run(dart_cmd(script("train_trainer.py"), 6, store=store), cwd=folder)
    assert done.returncode == 0 and done.lines == reference.lines, done.describe()
    return folder, store, reference


# ------------------------------------------------------------------- runs, log, show


def test_runs_json_matches_the_store(numpy_store):
    folder, store, done, killed = numpy_store
    runs = dart_json(folder, "runs", "--store", store)
    st = open_store(store, create=False)
    assert [r["id"] for r in runs] == [r["id"] for r in st.list_runs()]
    finished, dead = runs
    assert finished["status"] == "finished" and finished["argv"] == ["2"]
    assert dead["status"] == "killed" and dead["argv"] == ["3"]  # no process holds it: it died
    for row in runs:
        commits = st.log(run=row["id"])
        assert row["commits"] == len(commits)
        assert row["newest"] == commits[0].id
    assert "killed" in dart(folder, "runs", "--store", store).stdout


def test_show_lists_every_variable_with_what_changed(numpy_store):
    folder, store, *_ = numpy_store
    st = open_store(store, create=False)
    run_id = st.list_runs()[0]["id"]
    head = st.log(run=run_id)[1]  # the commit before the end
    info = dart_json(folder, "show", "--store", store, head.id[:8])
    assert info["id"] == head.id and info["parent"] == head.parent and info["run"] == run_id
    assert info["position"] == head.where
    globals_ = {row["name"]: row for row in info["variables"]["<module>"]}
    assert globals_["w"]["type"] == "numpy.ndarray" and globals_["w"]["shape"] == [8]
    assert globals_["xs"]["shape"] == [5, 16, 8] and globals_["xs"]["dtype"] == "float64"
    assert globals_["xs"]["bytes"] >= 5 * 16 * 8 * 8
    assert globals_["history"]["length"] == 10
    assert globals_["xs"]["changed"] == "same"  # never reassigned
    # the parent's value of each variable decides "changed"
    from dart import load

    before, now = load(head.parent, store=str(store)), load(head.id, store=str(store))
    for name, row in globals_.items():
        if row["changed"] == "same" and hasattr(now[name], "tobytes"):
            assert now[name].tobytes() == before[name].tobytes()
    assert info["environment"]["numpy"] and info["environment"]["python"]


def test_show_groups_frame_locals_and_load_returns_them_in_another_process(torch_store):
    folder, store, _ = torch_store
    st = open_store(store, create=False)
    commit = next(c for c in st.log() if "step=3" in c.where)
    info = dart_json(folder, "show", "--store", store, commit.id)
    assert [f["function"] for f in info["frames"]] == ["<module>", "main"]
    local = {row["name"]: row for row in info["variables"]["main"]}
    assert local["model"]["type"] == "torch.nn.modules.container.Sequential"
    assert local["step"]["value"] == 3
    assert local["x"]["shape"] == [16, 4]
    # Another process loads the frame-local model; it equals the model at that commit:
    # applied to step 4's batch (a local of the next commit) it gives the loss the
    # uninterrupted run printed for step 4 (computed before step 4's update).
    after = next(c for c in st.log() if "step=4]" in c.where)
    code = (
        "import dart\n"
        f"v = dart.load({commit.id!r}, store={str(store)!r})\n"
        "model = v.frames['main']['model']\n"
        f"same = dart.load({commit.id!r}, names=['main.model', 'main.trainer'], store={str(store)!r}, run_source=True)\n"
        "assert same['main.trainer'].model is same['main.model']\n"
        f"batch = dart.load({after.id!r}, names=['main.x', 'main.y'], store={str(store)!r})\n"
        "print(repr(((model(batch['main.x']) - batch['main.y']) ** 2).mean().item()))\n"
    )
    res = run([PYTHON, "-c", code], cwd=folder)
    assert res.returncode == 0, res.describe()
    reference_step4 = next(line for line in torch_store[2].lines if line.startswith("step 4 "))
    assert reference_step4 == f"step 4 loss {res.lines[-1]}"


# ------------------------------------------------------------------- names and tags


def test_commit_names_resolve_as_documented(numpy_store):
    folder, store, *_ = numpy_store
    st = open_store(store, create=False)
    run_id = st.list_runs()[0]["id"]
    own = list(reversed(st.log(run=run_id)))
    newest = st.log()[0]

    def shown(name):
        return dart_json(folder, "show", "--no-load", "--store", store, name)["id"]

    assert shown("HEAD") == newest.id
    assert shown("HEAD~1") == newest.parent
    assert shown("HEAD~2") == st.read_commit(newest.parent).parent
    assert shown(f"{run_id}@1") == own[0].id
    assert shown(f"{run_id}@3") == own[2].id
    assert shown(f"{run_id}@-1") == own[-1].id == shown(run_id)
    assert shown(f"{run_id}@-1~2") == own[-3].id


def test_tags_name_commits_and_clashes_are_refused(numpy_store):
    folder, store, *_ = numpy_store
    st = open_store(store, create=False)
    target = st.log()[3]
    out = dart_json(folder, "tag", "--store", store, "best", target.id[:10])
    assert out["commit"] == target.id
    assert st.read_ref("tags/best") == target.id
    assert dart_json(folder, "show", "--no-load", "--store", store, "best~1")["id"] == target.parent
    assert dart_json(folder, "show", "--no-load", "--store", store, "best")["tags"] == ["best"]
    assert {"name": "best", "commit": target.id} in dart_json(folder, "tag", "--store", store)
    log = dart_json(folder, "log", "--store", store)
    assert [row["tags"] for row in log if row["id"] == target.id] == [["best"]]
    clash = dart(folder, "tag", "--store", store, "best", "HEAD")
    assert clash.returncode == 2 and clash.stderr.count("dart: error:") == 1
    assert "tag best already names commit" in clash.stderr and "-f" in clash.stderr
    assert st.read_ref("tags/best") == target.id  # not moved
    moved = dart(folder, "tag", "--store", store, "-f", "best", "HEAD")
    assert moved.returncode == 0 and st.read_ref("tags/best") == st.log()[0].id
    gone = dart(folder, "tag", "--store", store, "-d", "best")
    assert gone.returncode == 0 and st.read_ref("tags/best") is None


@pytest.mark.parametrize(
    "args, words",
    [
        (["show", "ffffffffffff"], "no commit ffffffffffff"),
        (["show", "HEAD~999"], "goes back 999 commits"),
        (["show", "nosuchrun@2"], "no run nosuchrun"),
        (["diff", "HEAD", "nosuchtag"], "no commit nosuchtag"),
        (["tag", "HEAD", "HEAD"], "HEAD names the newest commit"),
        (["tag", "abcd", "HEAD"], "looks like a commit id"),
        (["tag", "-d", "never-made"], "no tag 'never-made'"),
        (["checkout", "ffffffffffff"], "no commit ffffffffffff"),
    ],
)
def test_bad_commit_names_get_one_clear_line_and_exit_2(numpy_store, args, words):
    folder, store, *_ = numpy_store
    res = dart(folder, *args, "--store", store)
    assert res.returncode == 2, res.describe()
    assert res.stderr.startswith("dart: error:") and res.stderr.count("\n") == 1, res.stderr
    assert words in res.stderr
    assert "Traceback" not in res.stderr


def test_an_ambiguous_prefix_names_the_candidates(tmp_path):
    from dart.store import CommitRecord, commit_id

    st = open_store(tmp_path / "store")
    seen: dict[str, int] = {}
    i = 0
    while (prefix := commit_id(CommitRecord(run="r", time=float(i)))[:4]) not in seen:  # birthday: ~300 tries
        seen[prefix] = i
        i += 1
    a = st.put_commit(CommitRecord(run="r", time=float(seen[prefix])))
    b = st.put_commit(CommitRecord(run="r", time=float(i)))
    res = dart(tmp_path, "show", "--store", tmp_path / "store", prefix)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.describe()
    assert "is ambiguous" in res.stderr and a in res.stderr and b in res.stderr


# ------------------------------------------------------------------- diff


def test_diff_reports_arrays_elements_and_per_parameter(numpy_store, torch_store):
    folder, store, *_ = numpy_store
    st = open_store(store, create=False)
    run_id = st.list_runs()[0]["id"]
    own = list(reversed(st.log(run=run_id)))
    a, b = next(c for c in own if "for@30" in c.where), own[-2]  # inside the batch loop, and near the end
    out = dart_json(folder, "diff", "--store", store, a.id, b.id)
    changes = {(c["frame"], c["name"]): c for c in out["changes"]}
    from dart import load

    va, vb = load(a.id, store=str(store)), load(b.id, store=str(store))
    w = changes[("<module>", "w")]["change"]
    assert w["differing"] == int((va["w"] != vb["w"]).sum())
    assert w["max_abs_diff"] == pytest.approx(float(abs(va["w"] - vb["w"]).max()))
    assert ("<module>", "xs") not in changes  # the same bytes: not even loaded
    folder, tstore, _ = torch_store
    ts = open_store(tstore, create=False)
    c3, c5 = (next(c for c in ts.log() if f"step={n}]" in c.where) for n in (3, 5))
    out = dart_json(folder, "diff", "--store", tstore, c3.id, c5.id)
    model = next(c for c in out["changes"] if c["frame"] == "main" and c["name"] == "model")["change"]
    assert model["kind"] == "parameters" and set(model["parameters"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(p["differing"] > 0 for p in model["parameters"].values())


# ------------------------------------------------------------------- checkout


def test_checkout_of_a_past_commit_continues_exactly_and_starts_a_branch(torch_store):
    folder, store, reference = torch_store
    st = open_store(store, create=False)
    original = st.list_runs()[0]["id"]
    commit = next(c for c in st.log(run=original) if "step=2]" in c.where)
    later = [c.id for c in st.log(run=original)]
    res = dart(folder, "checkout", "--store", store, "--every", "0", commit.id[:10])
    assert res.returncode == 0, res.describe()
    at = reference.lines.index(next(l for l in reference.lines if l.startswith("step 3 ")))
    assert res.lines == reference.lines[at:]
    assert f"from commit {commit.short}" in res.stderr
    runs = dart_json(folder, "runs", "--store", store)
    branch = next(r for r in runs if r["branched_from"] == commit.id)
    assert branch["status"] == "finished" and branch["argv"] == ["6"]
    log = dart_json(folder, "log", "--store", store)
    assert [row["id"] for row in log if row["branched_from"] == commit.id]  # the branch's first commit
    assert set(later) <= {row["id"] for row in log}  # the later commits stay
    # `dart run --at` with changed arguments: the position is still valid
    res = run([PYTHON, "-m", "dart", "run", "--quiet", "--store", store, "--at", commit.id,
               script("train_trainer.py"), "6", "0.05"], cwd=folder)
    assert res.returncode == 0 and res.lines == reference.lines[at:], res.describe()
    assert "resuming" not in res.stderr


def test_checkout_of_the_end_commit_is_refused(torch_store):
    folder, store, _ = torch_store
    res = dart(folder, "checkout", "--store", store, open_store(store, create=False).list_runs()[0]["id"])
    assert res.returncode == 2 and "cannot be continued" in res.stderr, res.describe()


# ------------------------------------------------------------------- gc


def test_gc_keeps_what_the_policy_promises_and_a_killed_run_resumes_after_it(tmp_path, reference_outputs):
    store = tmp_path / "store"
    done = run(dart_cmd(script("train_numpy.py"), 2, store=store), cwd=tmp_path)
    assert done.returncode == 0
    run_and_kill(dart_cmd(script("train_numpy.py"), 3, store=store), cwd=tmp_path, after_lines=12)
    st = open_store(store, create=False)
    finished_run, killed_run = (r["id"] for r in st.list_runs())
    tagged = st.log(run=finished_run)[-3]
    assert dart(tmp_path, "tag", "--store", store, "keep-me", tagged.id).returncode == 0
    before_objects = set(st.object_ids())
    dry = dart_json(tmp_path, "gc", "--store", store, "--keep-last", "2", "--dry-run")
    assert set(st.object_ids()) == before_objects  # nothing deleted
    out = dart_json(tmp_path, "gc", "--store", store, "--keep-last", "2")
    assert out["deleted"]["commits"] == dry["would_delete"]["commits"] and out["freed_bytes"] > 0
    kept = set(st.commit_ids())
    for run_id in (finished_run, killed_run):
        assert {c.id for c in st.log(run=run_id)[:2]} <= kept
    assert tagged.id in kept
    assert kept == set(out["kept"])
    # exactly the objects the kept commits need are left
    assert set(st.object_ids()) == objects_needed(st.read_commit(c) for c in kept)
    assert dart(tmp_path, "show", "--store", store, "keep-me").returncode == 0
    fsck = dart(tmp_path, "fsck", "--store", store)
    assert fsck.returncode == 0, fsck.describe()
    resumed = run(dart_cmd(script("train_numpy.py"), 3, store=store), cwd=tmp_path)
    reference = reference_outputs("train_numpy.py", "3")
    assert resumed.returncode == 0 and resumed.lines[-1] == reference[-1], resumed.describe()


def test_gc_never_deletes_while_a_run_writes(tmp_path, reference_outputs):
    store = tmp_path / "store"
    assert run(dart_cmd(script("train_numpy.py"), 2, store=store), cwd=tmp_path).returncode == 0
    writer = subprocess.Popen([str(c) for c in dart_cmd(script("train_numpy.py"), 4, store=store)], cwd=tmp_path,
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().startswith("epoch 0")  # it is writing commits now
        st = open_store(store, create=False)
        before = set(st.object_ids())
        refused = dart(tmp_path, "gc", "--store", store, "--keep-last", "1")
        assert refused.returncode == 2 and "while a run is writing" in refused.stderr, refused.describe()
        assert before <= set(st.object_ids())  # nothing was deleted
        # with --wait, gc waits for the writer to end, then collects
        waited = dart(tmp_path, "gc", "--store", store, "--keep-last", "1", "--wait", "60", "--json")
        assert waited.returncode == 0, waited.describe()
        out, _ = writer.communicate(timeout=60)
    finally:
        writer.kill()
    assert writer.returncode == 0
    reference = reference_outputs("train_numpy.py", "4")
    assert out.splitlines()[-1] == reference[-1]
    assert dart(tmp_path, "fsck", "--store", store).returncode == 0


# ------------------------------------------------------------------- environment


def test_an_environment_mismatch_is_reported(numpy_store):
    folder, store, *_ = numpy_store
    st = open_store(store, create=False)
    record = st.log()[2]
    env = dict(record.env, numpy="1.0.0", modules=dict(record.env.get("modules", {}), numpy="1.0.0"))
    broken = st.put_commit(record.replace(env=env, id=""))
    code = f"import dart; dart.load({broken!r}, store={str(store)!r})"
    res = run([PYTHON, "-c", code], cwd=folder)
    assert res.returncode != 0
    assert "module numpy was 1.0.0" in res.stderr and "another major version" in res.stderr
    import numpy

    minor = numpy.__version__.split(".")[0] + ".0.0"
    env = dict(record.env, numpy=minor, modules=dict(record.env.get("modules", {}), numpy=minor))
    warned = st.put_commit(record.replace(env=env, id=""))
    res = run([PYTHON, "-W", "always", "-c", f"import dart; v = dart.load({warned!r}, store={str(store)!r}); v['w']"],
              cwd=folder)
    assert res.returncode == 0, res.describe()
    assert res.stderr.count(f"module numpy was {minor}") == 1


def test_a_new_run_says_so_once_unless_quiet(tmp_path):
    store = tmp_path / "store"
    res = run(dart_cmd(script("train_numpy.py"), 1, store=store), cwd=tmp_path)
    assert res.returncode == 0 and res.stderr.count("dart: run ") == 1 and str(store) in res.stderr
    res = run(dart_cmd(script("train_numpy.py"), 1, store=store, fresh=True), cwd=tmp_path,
              env=child_env(DART_QUIET="1"))
    assert res.returncode == 0 and "dart: run " not in res.stderr


def test_a_killed_branch_resumes_as_itself(tmp_path, reference_outputs):
    """Kill a checkout mid-way; the same command as the branch's resumes the
    branch (not the run it came from), and the output joins up."""
    store = tmp_path / "store"
    assert run(dart_cmd(script("train_numpy.py"), 2, store=store), cwd=tmp_path).returncode == 0
    st = open_store(store, create=False)
    start = next(c for c in reversed(st.log()) if "epoch=0]" in c.where and "for@30" not in c.where)
    reference = reference_outputs("train_numpy.py", "2")
    at = reference.index(next(line for line in reference if line.startswith("epoch 0 done"))) + 1
    killed = run_and_kill([PYTHON, "-m", "dart", "checkout", "--store", store, "--every", "0", start.id],
                          cwd=tmp_path, after_lines=3)
    assert killed.lines == reference[at : at + len(killed.lines)], killed.describe()
    resumed = run(dart_cmd(script("train_numpy.py"), 2, store=store), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.describe()
    joined = None
    for m in range(len(killed.lines), -1, -1):
        if killed.lines[:m] + resumed.lines == reference[at:]:
            joined = m
    assert joined is not None, resumed.describe()
    runs = dart_json(tmp_path, "runs", "--store", store)
    assert [r["status"] for r in runs] == ["finished", "finished"]
    assert runs[1]["branched_from"] == start.id


def test_checkout_with_edited_code_runs_the_fix_from_that_commit(tmp_path, reference_outputs):
    copy = tmp_path / "train_numpy.py"
    copy.write_text(script("train_numpy.py").read_text())
    store = tmp_path / "store"
    assert run(dart_cmd(copy, 2, store=store), cwd=tmp_path).returncode == 0
    st = open_store(store, create=False)
    commit = next(c for c in st.log() if c.where.endswith("for@28[epoch=0]"))  # epoch 0 done
    copy.write_text(copy.read_text().replace('print(f"epoch {epoch} batch {i} loss {loss!r}")',
                                             'print(f"epoch {epoch} batch {i} loss {loss!r} (fixed)")'))
    res = dart(tmp_path, "checkout", "--store", store, "--every", "0", commit.id)
    assert res.returncode == 0, res.describe()
    reference = reference_outputs("train_numpy.py", "2")
    at = reference.index(next(line for line in reference if line.startswith("epoch 0 done"))) + 1
    expected = [line + " (fixed)" if " batch " in line else line for line in reference[at:]]
    assert res.lines == expected


def test_a_resume_under_another_major_version_stops_naming_the_module(tmp_path):
    store = tmp_path / "store"
    killed = run_and_kill(dart_cmd(script("train_numpy.py"), 3, store=store), cwd=tmp_path, after_lines=4)
    assert killed.killed
    st = open_store(store, create=False)
    run_id = st.list_runs()[0]["id"]
    head = st.head(run_id)
    env = dict(head.env, numpy="0.9.0", modules=dict(head.env.get("modules", {}), numpy="0.9.0"))
    altered = st.put_commit(head.replace(env=env, id=""))
    st.write_ref(f"runs/{run_id}", altered, expected=head.id)
    res = run(dart_cmd(script("train_numpy.py"), 3, store=store), cwd=tmp_path)
    assert res.returncode == 2, res.describe()
    assert res.stderr.count("dart: error:") == 1 and "module numpy was 0.9.0" in res.stderr
    assert "another major version" in res.stderr and res.stdout == ""
    shown = dart_json(tmp_path, "show", "--no-load", "--store", store, altered)
    assert shown["environment"]["numpy"] == "0.9.0"


def test_runs_says_how_a_failed_run_ended(tmp_path):
    program = tmp_path / "fails.py"
    program.write_text("total = 0\nfor i in range(5):\n    total += i\n    if i == 3:\n        raise ValueError('bad batch')\n")
    store = tmp_path / "store"
    res = run(dart_cmd(program, store=store), cwd=tmp_path)
    assert res.returncode == 1
    (row,) = dart_json(tmp_path, "runs", "--store", store)
    assert row["status"] == "failed"
    assert row["error"]["type"] == "ValueError" and row["error"]["message"] == "bad batch"
    assert row["error"]["where"] == "fails.py:5"
    table = dart(tmp_path, "runs", "--store", store).stdout
    assert "failed (ValueError: bad batch at fails.py:5)" in table
