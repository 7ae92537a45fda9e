"""The store contract (dart.store.contract) on the local and in-memory backends,
plus what is particular to each.
"""

from __future__ import annotations

import itertools
import json
import os

import pytest

from dart.errors import CorruptObjectError, StoreError
from dart.store import MemoryBackend, Store, open_store
from dart.store.codec import HEADER_SIZE
from dart.store.contract import StoreContract, _record


class TestLocalStore(StoreContract):
    def make_store(self, tmp_path):
        return Store(tmp_path / ".dart")

    def child_open_code(self, store) -> str:
        return f"from dart.store import Store\nstore = Store({str(store.root)!r})\n"

    # ----------------------------------------------------------- layout

    def test_layout(self, store):
        root = store.root
        assert json.loads((root / "store.json").read_text()) == {"format": 1}
        for name in ["objects", "commits", "refs", "runs", "tmp", "locks"]:
            assert (root / name).is_dir()
        oid, _ = store.put_object(b"abc")
        assert store.object_path(oid) == root / "objects" / oid[:2] / oid[2:]
        assert store.object_path(oid).read_bytes()[:6] == b"DART\x01\x00"
        run = store.create_run({})
        cid = store.put_commit(_record(run=run))
        store.write_ref(f"runs/{run}", cid)
        assert (root / "commits" / f"{cid}.json").is_file()
        assert (root / "refs" / "runs" / run).read_text().strip() == cid
        assert (root / "runs" / f"{run}.json").is_file()
        assert list((root / "tmp").iterdir()) == []

    def test_reopen(self, tmp_path):
        store = Store(tmp_path / "s")
        oid, _ = store.put_object(b"persist")
        again = Store(tmp_path / "s", create=False)
        assert again.get_object(oid) == b"persist"

    def test_header_records_codec_and_length(self, store):
        oid, _ = store.put_object(bytes(100000))
        blob = store.object_path(oid).read_bytes()
        assert blob[:5] == b"DART\x01" and blob[5] == 1
        assert int.from_bytes(blob[6:14], "little") == 100000
        oid, _ = store.put_object(os.urandom(100000))
        assert store.object_path(oid).read_bytes()[5] == 0

    # ----------------------------------------------------------- corruption

    @pytest.mark.parametrize(
        "data",
        [os.urandom(50000), bytes(50000), b"small object"],
        ids=["raw", "compressed", "small"],
    )
    @pytest.mark.parametrize("where", ["magic", "codec", "length", "payload-start", "payload-end"])
    def test_flipped_byte_detected(self, store, data, where):
        oid, _ = store.put_object(data)
        path = store.object_path(oid)
        blob = bytearray(path.read_bytes())
        offset = {
            "magic": 0,
            "codec": 5,
            "length": 6,
            "payload-start": HEADER_SIZE,
            "payload-end": len(blob) - 1,
        }[where]
        blob[offset] ^= 0x01
        path.write_bytes(bytes(blob))
        with pytest.raises(CorruptObjectError) as info:
            store.get_object(oid)
        message = str(info.value)
        assert str(path) in message
        assert "damaged" in message and "--fresh" in message

    def test_truncated_object(self, store):
        oid, _ = store.put_object(b"some bytes here")
        path = store.object_path(oid)
        path.write_bytes(path.read_bytes()[:8])
        with pytest.raises(CorruptObjectError, match="truncated"):
            store.get_object(oid)

    def test_garbage_commit_json(self, store):
        cid = store.put_commit(_record())
        path = store.root / "commits" / f"{cid}.json"
        path.write_bytes(b"{not json\x00\xff")
        with pytest.raises(CorruptObjectError) as info:
            store.get_commit(cid)
        assert str(path) in str(info.value)

    def test_garbage_run_json(self, store):
        run = store.create_run({})
        path = store.root / "runs" / f"{run}.json"
        path.write_text("[1, 2")
        with pytest.raises(CorruptObjectError, match=str(path)):
            store.get_run(run)

    # ----------------------------------------------------------- bad roots

    def test_root_is_a_file(self, tmp_path):
        target = tmp_path / "afile"
        target.write_text("hello")
        with pytest.raises(StoreError, match=f"{target} is a file"):
            Store(target)

    def test_root_under_a_file(self, tmp_path):
        target = tmp_path / "afile"
        target.write_text("hello")
        with pytest.raises(StoreError, match=f"cannot create store directory {target / 'store'}"):
            Store(target / "store")

    def test_foreign_directory(self, tmp_path):
        foreign = tmp_path / "project"
        foreign.mkdir()
        (foreign / "train.py").write_text("print(1)")
        with pytest.raises(StoreError, match="not a dart store"):
            Store(foreign)
        assert sorted(p.name for p in foreign.iterdir()) == ["train.py"]  # untouched

    def test_empty_directory_becomes_store(self, tmp_path):
        Store(tmp_path)
        assert (tmp_path / "store.json").is_file()

    def test_interrupted_creation_is_finished(self, tmp_path):
        root = tmp_path / "s"
        (root / "objects").mkdir(parents=True)
        (root / "tmp").mkdir()
        Store(root)
        assert (root / "store.json").is_file()

    def test_missing_store_without_create(self, tmp_path):
        with pytest.raises(StoreError, match="no dart store"):
            Store(tmp_path / "nothing", create=False)
        assert not (tmp_path / "nothing").exists()

    def test_other_format(self, tmp_path):
        root = tmp_path / "s"
        Store(root)
        (root / "store.json").write_text('{"format": 2}')
        with pytest.raises(StoreError, match="format 2"):
            Store(root)

    def test_unreadable_store_json(self, tmp_path):
        root = tmp_path / "s"
        Store(root)
        (root / "store.json").write_text("garbage{")
        with pytest.raises(StoreError, match="store.json"):
            Store(root)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
    def test_read_only_root(self, tmp_path):
        root = tmp_path / "s"
        Store(root)
        (root / "tmp").chmod(0o500)
        try:
            with pytest.raises(StoreError, match="cannot write"):
                Store(root)
        finally:
            (root / "tmp").chmod(0o700)


_names = itertools.count()


class TestMemoryStore(StoreContract):
    shared_between_processes = False

    def make_store(self, tmp_path):
        return open_store(f"memory://contract-{next(_names)}")

    def test_same_name_same_store(self):
        store = open_store("memory://same-name")
        oid, _ = store.put_object(b"kept")
        assert open_store("memory://same-name", create=False).get_object(oid) == b"kept"
        MemoryBackend.discard("same-name")
        with pytest.raises(StoreError, match="no dart store at memory://same-name"):
            open_store("memory://same-name", create=False)
        assert open_store("memory://same-name").object_ids() == []
