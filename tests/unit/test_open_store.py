"""open_store: the one way to open a store, by path or URL."""

from __future__ import annotations

import os

import pytest

from dart.errors import StoreError
from dart.present import error_line
from dart.store import LocalBackend, MemoryBackend, open_store


def test_relative_path_is_local_and_resolved_at_open(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store(".dart")
    assert isinstance(store.backend, LocalBackend)
    assert store.root == tmp_path / ".dart" and store.home == tmp_path
    assert store.location == str(tmp_path / ".dart")


def test_file_url_and_home_dir(tmp_path, monkeypatch):
    store = open_store(f"file://{tmp_path}/s")
    assert store.root == tmp_path / "s"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_store("~/t").root == tmp_path / "t"


def test_memory_url():
    store = open_store("memory://open-store-test")
    assert isinstance(store.backend, MemoryBackend) and store.home is None
    assert store.location == "memory://open-store-test"
    MemoryBackend.discard("open-store-test")


@pytest.mark.parametrize("location", ["memory://", "memory://a/b"])
def test_bad_memory_urls(location):
    with pytest.raises(StoreError, match="memory://NAME"):
        open_store(location)


def test_unsupported_scheme_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match=r"ftp:// locations are not supported.*'ftp://host/runs'.*s3://BUCKET"):
        open_store("ftp://host/runs")
    assert os.listdir(tmp_path) == []  # nothing created for it


def test_missing_store_without_create(tmp_path):
    with pytest.raises(StoreError) as info:
        open_store(tmp_path / "none", create=False)
    assert "no dart store" in str(info.value) and info.value.next_step == "store"
    assert error_line(info.value, "cli").endswith("Pass the right --store.")
    assert "dart.enable()" in error_line(info.value, "enable")
    with pytest.raises(StoreError, match="no dart store at memory://never-made"):
        open_store("memory://never-made", create=False)
