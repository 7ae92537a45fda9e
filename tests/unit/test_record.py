"""The commit record: one writer, one reader, versions."""

from __future__ import annotations

import json

import xxhash

import pytest

from dart.errors import CorruptObjectError, StoreError
from dart.store import RECORD_VERSION, CommitRecord, decode_record, encode_record, open_store, record_id


def _full_record() -> CommitRecord:
    return CommitRecord(
        run="20260101-000000-abcdef",
        parent="0123456789abcdef",
        time=12.5,
        message="after warm-up",
        position={"file": "train.py", "line": 3, "kind": "loop", "path": [["body", 2]], "loops": [], "frames": []},
        where="train.py:3",
        resumable=True,
        state={"format": 2, "index": "a" * 32, "objects": ["a" * 32]},
        bytes_written=123,
        staged_bytes=64,
        skipped={"h": "hashlib: cannot pickle"},
        rebuild={"0": {"pool": [["body", 1]]}},
        recreated=["body.2"],
        tracked=[["__main__", None, [["body", 2]]]],
        env={"python": "3.12.1"},
        source={"file": "/x/train.py", "hash": "ff"},
    )


def test_round_trip_keeps_every_field():
    record = _full_record()
    cid, data, written = encode_record(record)
    assert cid == record_id(record) == written.id and len(cid) == 16
    back = decode_record(data, "test")
    assert back == written
    assert back.version == RECORD_VERSION
    assert json.loads(data)["version"] == RECORD_VERSION


def test_id_ignores_the_id_field_and_follows_content():
    record = _full_record()
    assert record_id(record.replace(id="whatever")) == record_id(record)
    assert record_id(record.replace(message="other")) != record_id(record)


def _v1(**fields) -> dict:
    """A record as dart 0.1 wrote it: no version field, its id over the rest."""
    body = dict({"run": "r1", "parent": None, "time": 1.0, "message": None,
                 "position": {"file": "s.py", "line": 1}, "resumable": True,
                 "state": {"pickle": "b" * 32, "buffers": []}, "bytes_written": 10}, **fields)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return dict(body, id=xxhash.xxh3_128_hexdigest(canonical.encode())[:16])


def test_version_1_record_is_read():
    body = _v1()
    record = decode_record(json.dumps(body).encode(), "old", expected_id=body["id"])
    assert record.version == 1 and record.id == body["id"] and record.run == "r1"
    assert record.state == {"pickle": "b" * 32, "buffers": []} and record.extra == {}


@pytest.mark.parametrize("change", ["field", "id", "name"])
def test_a_record_changed_after_it_was_written_is_refused(change):
    _, data, written = encode_record(_full_record())
    body = json.loads(data)
    expected = written.id
    if change == "field":
        body["state"]["objects"] = ["c" * 32]  # a bit flip in the object list
    elif change == "id":
        body["id"] = "0" * 16
    else:
        expected = "f" * 16  # stored under another name
    with pytest.raises(CorruptObjectError, match="does not match its id"):
        decode_record(json.dumps(body).encode(), "x", expected_id=expected)


def test_newer_version_is_refused_naming_both_versions():
    _, data, _ = encode_record(_full_record())
    body = json.loads(data)
    body["version"] = RECORD_VERSION + 5
    body = _v1(**{k: v for k, v in body.items() if k != "id"})  # a newer dart's record, with its own id
    with pytest.raises(StoreError) as info:
        decode_record(json.dumps(body).encode(), "commits/x.json")
    message = str(info.value)
    assert f"record version {RECORD_VERSION + 5}" in message and f"versions 1 to {RECORD_VERSION}" in message
    assert "commits/x.json" in message and "upgrade dart" in message


def test_older_unknown_version_is_refused():
    with pytest.raises(StoreError, match="version 0, which this dart no longer reads"):
        decode_record(json.dumps(_v1(version=0)).encode(), "x")


@pytest.mark.parametrize("data", [b"[1, 2]", b"{bad", json.dumps({"version": "2", "run": "r"}).encode(),
                                  json.dumps({"time": 1.0}).encode()])
def test_malformed_records_are_corrupt(data):
    with pytest.raises(CorruptObjectError, match="damaged"):
        decode_record(data, "x")


def test_writer_refuses_other_versions():
    with pytest.raises(ValueError):
        encode_record(_full_record().replace(version=1))


def test_store_reads_back_through_the_record():
    store = open_store("memory://record-test")
    cid = store.put_commit(_full_record())
    got = store.get_commit(cid[:6])
    assert isinstance(got, CommitRecord) and got.id == cid and got.message == "after warm-up"
