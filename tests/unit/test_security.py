"""Security of a store: permissions, names that could reach outside the store,
signed records (DART_HMAC_KEY), and loads that run no code unless asked."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap

import pytest

from dart.capture import load_roots, snapshot
from dart.errors import CorruptObjectError, StoreError
from dart.flush import CommitWriter
from dart.store import Store, open_store
from dart.store.layout import CommitState
from dart.store.record import decode_record


def _commit(store, value, message="m"):
    run = store.create_run({"key": "k"})
    with CommitWriter(store, run, None, staging=8 << 20) as writer:
        cid = writer.commit(snapshot({"g:x": value}), {"message": message, "position": {}}).wait(30)
    return run, store.get_commit(cid)


def _modes(root):
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("mode, dirs, files", [("private", 0o700, 0o600), ("group", 0o750, 0o640)])
def test_store_files_are_private_by_default(tmp_path, mode, dirs, files):
    old = os.umask(0o022)
    try:
        store = open_store(tmp_path / "s", mode=mode)
        _commit(store, list(range(100_000)))
    finally:
        os.umask(old)
    modes = _modes(store.root)
    for name, got in modes.items():
        is_dir = (store.root / name).is_dir() if name != "." else True
        assert got == (dirs if is_dir else files), (name, oct(got))
    assert any(name.startswith("objects/") and not (store.root / name).is_dir() for name in modes)


@pytest.mark.parametrize("bad", ["../../../etc/passwd", "ab/../../x", "0" * 31 + "/", "/etc/passwd"])
def test_an_index_naming_a_path_is_damage_not_a_read(tmp_path, bad):
    store = Store(tmp_path / "s")
    _, record = _commit(store, [1, 2, 3])
    index = json.loads(store.get_object(record.state["index"]))
    index["objects"] = [bad for _ in index["objects"]]
    oid, _ = store.put_object(json.dumps(index).encode())
    forged = record.replace(state=dict(record.state, index=oid), id="")
    cid = store.put_commit(forged)
    with pytest.raises(CorruptObjectError, match="is not an object id"):
        load_roots(store, store.get_commit(cid))


@pytest.mark.parametrize("name", ["../../x", "runs/../../x", "/etc/passwd", "a\0b"])
def test_names_outside_the_store_are_refused(tmp_path, name):
    store = Store(tmp_path / "s")
    with pytest.raises(StoreError):
        store.get_commit(name)
    with pytest.raises(StoreError):
        store.write_ref(name, "a" * 16)
    with pytest.raises(StoreError):
        store.backend.put(name, [b"x"])


def test_signed_store_round_trip_and_tampering(tmp_path, monkeypatch):
    monkeypatch.setenv("DART_HMAC_KEY", "s3cret")
    store = Store(tmp_path / "s")
    run, record = _commit(store, {"weights": [1.0, 2.0]})
    assert "signature" in record.extra and "index_mac" in record.state
    assert load_roots(store, store.get_commit(record.id))["globals"] == {"x": {"weights": [1.0, 2.0]}}
    assert CommitState(store, record).read()  # index and pods verify
    # An attacker without the key rewrites the record (and its id, so it looks intact).
    raw = decode_record((store.root / "commits" / f"{record.id}.json").read_bytes(), "x")  # no key: not checked
    forged = Store(tmp_path / "s", key=b"other key").put_commit(raw.replace(message="evil", id=""))
    with pytest.raises(CorruptObjectError, match="signature that does not match"):
        store.get_commit(forged)
    # A store written without any key is refused when read with one.
    monkeypatch.delenv("DART_HMAC_KEY")
    plain = Store(tmp_path / "plain")
    _, plain_record = _commit(plain, [1])
    with pytest.raises(CorruptObjectError, match="is not signed"):
        Store(tmp_path / "plain", key=b"s3cret").get_commit(plain_record.id)


def test_crafted_pickle_runs_without_a_key_and_is_refused_with_one(tmp_path, monkeypatch):
    """What signing is for: a store whose pickle was replaced by one that runs code."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    def forge(store):
        _, record = _commit(store, [1, 2, 3])
        state = CommitState(store, record)
        pod = state.pods["g:x"]
        evil = pickle.dumps(Payload(), protocol=5)
        oid, _ = store.put_object(evil)
        index = state.index
        index["objects"].append(oid)
        pod[1], pod[2], pod[3] = len(index["objects"]) - 1, 0, len(evil)
        index_oid, _ = store.put_object(json.dumps(index).encode())
        objects = sorted({*record.state["objects"], oid, index_oid})
        return record.replace(state={"format": 2, "index": index_oid, "objects": objects}, id="", extra={})

    store = Store(tmp_path / "unsigned")
    forged = store.get_commit(Store(tmp_path / "unsigned", key=None).put_commit(forge(store)))
    load_roots(store, forged)
    assert marker.exists()  # no key: the pickle ran
    marker.unlink()
    monkeypatch.setenv("DART_HMAC_KEY", "k")
    signed = Store(tmp_path / "signed")
    attacker = Store(tmp_path / "signed", key=b"not the key")
    cid = attacker.put_commit(forge(attacker))
    with pytest.raises(CorruptObjectError):
        load_roots(signed, signed.get_commit(cid))
    assert not marker.exists()


def test_load_runs_no_script_code_unless_asked(tmp_path):
    (tmp_path / "sidefx.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(
        """
        import sidefx

        class Point:
            def __init__(self, x):
                self.x = x

        p = Point(3)
        raise SystemExit(1)
        """
    ))
    store = tmp_path / ".dart"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DART_")}
    done = subprocess.run([sys.executable, "-m", "dart", "run", "--store", str(store), "--every", "0", str(script)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    (tmp_path / "imported").unlink()
    code = f"import dart\nv = dart.load(store={str(store)!r})\n"
    refused = subprocess.run([sys.executable, "-c", code + "print(v['p'].x)"], cwd="/", env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "run_source=True" in refused.stderr, refused.stderr
    assert not (tmp_path / "imported").exists()  # nothing of the script ran
    code = f"import dart\nv = dart.load(store={str(store)!r}, run_source=True)\nprint(v['p'].x)"
    asked = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert asked.returncode == 0 and asked.stdout.strip() == "3", asked.stderr
    assert (tmp_path / "imported").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a store to another user needs root")
def test_a_store_of_another_user_warns_before_loading(tmp_path):
    store = open_store(tmp_path / "s")
    _commit(store, [1])
    for path in [store.root, *store.root.rglob("*")]:
        os.chown(path, 12345, 12345)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DART_")}
    code = f"import dart\nprint(sorted(dart.load(store={str(store.root)!r})))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "belongs to uid 12345, not to you" in done.stderr and "runs code" in done.stderr
