"""`dart export` / `dart import` / `dart copy` / `push` / `pull` between a local
store and an S3 store (a real moto server): a commit travels as one file and
resumes elsewhere bit-identically; a tampered archive is refused with nothing
imported; a copy sends only what the other side lacks."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest

from conftest import PYTHON, check_resumed, child_env, dart_cmd, run, run_and_kill, script
from s3server import s3_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

NUMPY = "train_numpy.py"


def dart(*args, cwd, env) -> "object":
    return run([PYTHON, "-m", "dart", *map(str, args)], cwd=cwd, env=env)


def machine(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(script(NUMPY), folder / NUMPY)
    return folder


def log(store, cwd, env):
    res = dart("log", "--store", store, "--json", cwd=cwd, env=env)
    assert res.returncode == 0, res.describe()
    return json.loads(res.stdout)


def objects_in(store_dir) -> set[str]:
    return {p.parent.name + p.name for p in (store_dir / "objects").glob("*/*")}


def chain_objects(store_dir) -> set[str]:
    """The objects the commits `dart log` lists need (a kill may leave others, and
    records no ref reaches, behind: those are not copied)."""
    from dart.store.layout import object_names
    from dart.store.record import decode_record

    out = set()
    for entry in log(store_dir.name, store_dir.parent, None):
        path = store_dir / "commits" / f"{entry['id']}.json"
        out.update(object_names(decode_record(path.read_bytes(), str(path))))
    return out


@pytest.fixture
def killed_local_run(tmp_path, reference_outputs):
    """A run in a local store on machine A, SIGKILLed after 8 lines."""
    a = machine(tmp_path, "machine-a")
    cmd = dart_cmd(NUMPY, store=".dart", every="0")
    killed = run_and_kill(cmd, a, after_lines=8)
    return a, cmd, killed, reference_outputs(NUMPY)


def test_export_local_import_s3_resume_on_machine_b(tmp_path, s3_server, killed_local_run):
    a, cmd, killed, reference = killed_local_run
    env = child_env(**s3_server.env())
    head = log(".dart", a, env)[0]
    archive = tmp_path / "carry.dart.tar"
    res = dart("export", head["run"], archive, "--store", ".dart", "--json", cwd=a, env=env)
    assert res.returncode == 0, res.describe()
    assert json.loads(res.stdout)["commits"] == [head["id"]]  # that commit only
    url = f"s3://{s3_server.new_bucket()}/imported"
    b = machine(tmp_path, "machine-b")
    res = dart("import", archive, "--store", url, cwd=b, env=env)
    assert res.returncode == 0, res.describe()
    assert [c["id"] for c in log(url, b, env)] == [head["id"]]
    loaded = run([PYTHON, "-c", f"import dart; print(dart.load(store={url!r})['w'].tolist())"], cwd=b, env=env)
    from_a = run([PYTHON, "-c", "import dart; print(dart.load(store='.dart')['w'].tolist())"], cwd=a, env=env)
    assert loaded.returncode == 0 and loaded.stdout == from_a.stdout and "[" in loaded.stdout, loaded.describe()
    # machine B runs the same command against the S3 store: it continues from the commit
    resumed = run(dart_cmd(NUMPY, store=url, every="0"), cwd=b, env=env)
    assert f"from commit {head['id'][:12]}" in resumed.stderr, resumed.describe()
    check_resumed(reference, killed, resumed, 2)
    assert not (b / ".dart").exists()


def test_export_s3_with_history_import_local(tmp_path, s3_server, killed_local_run):
    a, cmd, killed, reference = killed_local_run
    env = child_env(**s3_server.env())
    url = f"s3://{s3_server.new_bucket()}/team"
    res = dart("push", url, "--store", ".dart", cwd=a, env=env)
    assert res.returncode == 0, res.describe()
    history = log(url, a, env)
    assert history == log(".dart", a, env) and len(history) > 2
    archive = tmp_path / "all.tar"
    res = dart("export", history[0]["id"][:8], archive, "--with-history", "--store", url, cwd=a, env=env)
    assert res.returncode == 0, res.describe()
    b = machine(tmp_path, "machine-b")
    res = dart("import", archive, "--store", ".dart", "--json", cwd=b, env=env)
    assert res.returncode == 0, res.describe()
    assert sorted(json.loads(res.stdout)["commits"]) == sorted(c["id"] for c in history)
    assert log(".dart", b, env) == history
    assert objects_in(b / ".dart") == chain_objects(a / ".dart")
    fsck = dart("fsck", "--store", ".dart", "--json", cwd=b, env=env)
    assert fsck.returncode == 0 and json.loads(fsck.stdout)["clean"], fsck.describe()
    # importing again adds nothing
    again = dart("import", archive, "--store", ".dart", "--json", cwd=b, env=env)
    assert json.loads(again.stdout)["commits"] == [] and json.loads(again.stdout)["objects_sent"] == 0
    resumed = run(cmd, cwd=b)
    check_resumed(reference, killed, resumed, 2)


def _rewrite(archive, out, change):
    """A copy of ``archive`` with ``change(name, data) -> (name, data) | None`` applied to each member."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for info in src:
            data = src.extractfile(info).read()
            changed = change(info.name, data)
            if changed is None:
                continue
            name, data = changed
            new = tarfile.TarInfo(name)
            new.size = len(data)
            dst.addfile(new, io.BytesIO(data))
        return out


@pytest.fixture(scope="module")
def good_archive(tmp_path_factory):
    """An archive (with history) of a run killed after 6 lines, made once for the tamper tests."""
    a = machine(tmp_path_factory.mktemp("archive"), "machine-a")
    run_and_kill(dart_cmd(NUMPY, store=".dart", every="0"), a, after_lines=6)
    archive = a.parent / "good.tar"
    head = log(".dart", a, None)[0]
    assert dart("export", head["id"], archive, "--with-history", "--store", ".dart", cwd=a, env=None).returncode == 0
    return archive


EXPECTED_REASON = {
    "flipped-object-byte": "failed its checksum",
    "flipped-record-byte": "does not match its id",
    "traversal-name": "has a name no dart archive holds",
    "absolute-name": "has a name no dart archive holds",
    "symlink": "is not a plain file",
    "dropped-object": "missing",
    "not-a-tar": "not a dart archive",
    "manifest-run": "which is not the run of commit",
}


@pytest.mark.parametrize("tamper", ["flipped-object-byte", "flipped-record-byte", "traversal-name",
                                    "absolute-name", "symlink", "dropped-object", "not-a-tar",
                                    "manifest-run"])
def test_tampered_archive_is_refused_and_nothing_imported(tmp_path, good_archive, tamper):
    archive = good_archive
    bad = tmp_path / "bad.tar"
    if tamper == "flipped-object-byte":
        def change(name, data):
            if name.startswith("objects/") and len(data) > 100:
                data = bytearray(data)
                data[len(data) // 2] ^= 1
                return name, bytes(data)
            return name, data
        _rewrite(archive, bad, change)
    elif tamper == "flipped-record-byte":
        _rewrite(archive, bad, lambda n, d: (n, d.replace(b'"message"', b'"messagf"', 1) if n.startswith("commits/") else d))
    elif tamper in ("traversal-name", "absolute-name"):
        evil = "../../evil.py" if tamper == "traversal-name" else "/tmp/evil-dart-import.py"
        _rewrite(archive, bad, lambda n, d: (evil, d) if n.startswith("runs/") else (n, d))
    elif tamper == "symlink":
        shutil.copy(archive, bad)
        with tarfile.open(bad, "a") as tar:
            link = tarfile.TarInfo("objects/" + "0" * 32)
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tar.addfile(link)
    elif tamper == "dropped-object":
        dropped = []
        _rewrite(archive, bad, lambda n, d: None if n.startswith("objects/") and not dropped and not dropped.append(n) else (n, d))
    elif tamper == "manifest-run":
        def change(name, data):
            if name == "dart-archive.json":
                manifest = json.loads(data)
                manifest["run"] = "x/../../elsewhere"
                data = json.dumps(manifest).encode()
            return name, data
        _rewrite(archive, bad, change)
    else:
        bad.write_bytes(b"this is not an archive" * 100)
    b = tmp_path / "machine-b"
    b.mkdir()
    res = dart("import", bad, "--store", ".dart", cwd=b, env=None)
    assert res.returncode == 2, res.describe()
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("dart: error:") and ("refused" in line or "not a dart archive" in line), res.stderr
    assert EXPECTED_REASON[tamper] in line, line
    assert "Traceback" not in res.stderr
    store = b / ".dart"
    if store.exists():  # the store may have been created, but holds nothing of the archive
        assert not objects_in(store) and not list((store / "commits").glob("*"))
        assert not list((store / "refs" / "runs").glob("*"))
    assert not (tmp_path / "evil.py").exists() and not (b / "evil.py").exists()


def test_copy_sends_only_what_is_missing(tmp_path, s3_server, reference_outputs):
    env = child_env(**s3_server.env())
    a = machine(tmp_path, "machine-a")
    url = f"s3://{s3_server.new_bucket()}/mirror"
    cmd = dart_cmd(NUMPY, 2, store=".dart", every="0")
    killed = run_and_kill(cmd, a, after_lines=6)
    first = dart("copy", ".dart", url, "--json", cwd=a, env=env)
    assert first.returncode == 0, first.describe()
    first = json.loads(first.stdout)
    assert first["objects_sent"] == len(chain_objects(a / ".dart"))
    second = json.loads(dart("copy", ".dart", url, "--json", cwd=a, env=env).stdout)
    assert second["objects_sent"] == 0 and second["commits"] == [] and second["objects_present"] > 0
    resumed = run(cmd, cwd=a)  # more commits locally
    check_resumed(reference_outputs(NUMPY, 2), killed, resumed, 2)
    third = json.loads(dart("push", url, "--store", ".dart", "--json", cwd=a, env=env).stdout)
    total = len(chain_objects(a / ".dart"))
    assert third["objects_sent"] == total - first["objects_sent"] > 0 and third["objects_present"] > 0
    assert log(url, a, env) == log(".dart", a, env)
    # pull into a fresh local store on machine B: everything arrives
    b = machine(tmp_path, "machine-b")
    pulled = dart("pull", url, "--store", ".dart", "--json", cwd=b, env=env)
    assert pulled.returncode == 0, pulled.describe()
    assert objects_in(b / ".dart") == chain_objects(a / ".dart")
    assert log(".dart", b, env) == log(".dart", a, env)


def test_copy_refuses_a_diverged_run(tmp_path, s3_server):
    """The run continued in both stores from the same commit: pushing one over the
    other is refused, naming the run, and the destination is left as it was."""
    env = child_env(**s3_server.env())
    a = machine(tmp_path, "machine-a")
    url = f"s3://{s3_server.new_bucket()}/div"
    run_and_kill(dart_cmd(NUMPY, 2, store=".dart", every="0"), a, after_lines=4)
    assert dart("push", url, "--store", ".dart", cwd=a, env=env).returncode == 0
    b = machine(tmp_path, "machine-b")
    assert run(dart_cmd(NUMPY, 2, store=url, every="0"), cwd=b, env=env).returncode == 0  # on S3
    assert run(dart_cmd(NUMPY, 2, store=".dart", every="0"), cwd=a, env=env).returncode == 0  # locally
    before = log(url, a, env)
    res = dart("push", url, "--store", ".dart", cwd=a, env=env)
    assert res.returncode == 2, res.describe()
    run_id = before[0]["run"]
    assert f"run {run_id} in store {url}" in res.stderr and "diverged" in res.stderr, res.stderr
    assert log(url, a, env) == before


@pytest.mark.parametrize("args, says", [
    (["import", "no-such.tar", "--store", "s"], "no archive no-such.tar"),
    (["export", "deadbeef", "out.tar", "--store", "s"], "no commit deadbeef"),
    (["export", "deadbeef", "out.tar", "--store", "never-made"], "no dart store"),
    (["copy", "never-made", "dst"], "no dart store"),
    (["log", "--store", "s3://b/x", "--s3-endpoint", "not-a-url"], "is not an endpoint URL"),
])
def test_bad_input_is_one_error_line(tmp_path, args, says):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "store.json").write_text('{"format": 1}\n')
    res = dart(*args, cwd=tmp_path, env=None)
    assert res.returncode == 2, res.describe()
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dart: error:") and says in lines[0], res.stderr
    assert not (tmp_path / "out.tar").exists() and not (tmp_path / "dst").exists()
