"""capture/filechanges.py: files removed after a commit are put back on resume
(those that existed at the commit), files and folders created after it are
removed; kept files go as commits land."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from dart.capture import filechanges


@pytest.fixture
def project(tmp_path, monkeypatch):
    store = tmp_path / ".dart"
    folder = store / "files" / "run1"
    monkeypatch.chdir(tmp_path)
    filechanges.install(str(tmp_path), str(folder), skip=(str(store),))
    yield tmp_path, str(folder)
    filechanges.uninstall()


def _commit_time() -> float:
    time.sleep(0.01)
    at = time.time()
    time.sleep(0.01)
    return at


def test_removed_files_and_folders_come_back_and_new_ones_go(project):
    root, folder = project
    (root / "ckpt" / "old").mkdir(parents=True)
    (root / "ckpt" / "old" / "w.bin").write_bytes(b"weights-1")
    (root / "latest.txt").write_text("step 3\n")
    committed = _commit_time()
    shutil.rmtree(root / "ckpt" / "old")  # checkpoint rotation after the commit
    os.remove(root / "latest.txt")
    (root / "ckpt" / "new").mkdir()
    (root / "ckpt" / "new" / "w.bin").write_bytes(b"weights-2")  # cut short by the kill, perhaps
    (root / "latest.txt").write_text("step 7\n")  # made anew after the commit
    filechanges.uninstall()  # the run is killed here
    changed = filechanges.restore(folder, committed, str(root))
    assert (root / "ckpt" / "old" / "w.bin").read_bytes() == b"weights-1"
    assert not (root / "ckpt" / "new").exists()
    assert (root / "latest.txt").read_text() == "step 3\n"  # the file the commit saw, not its successor
    assert sorted(changed) == sorted(["ckpt/new/w.bin", "ckpt/new", "latest.txt", "latest.txt", "ckpt/old/w.bin"])


def test_a_folder_made_and_removed_after_the_commit_stays_removed(project):
    """A checkpoint folder saved after the commit and rotated out again (rmtree)."""
    root, folder = project
    committed = _commit_time()
    (root / "ckpt" / "step-20").mkdir(parents=True)
    (root / "ckpt" / "step-20" / "w.bin").write_bytes(b"w")
    shutil.rmtree(root / "ckpt" / "step-20")
    filechanges.restore(folder, committed, str(root))
    assert not (root / "ckpt" / "step-20").exists()
    assert not (root / "ckpt").exists()


def test_nothing_done_before_the_commit_is_undone(project):
    root, folder = project
    (root / "a.txt").write_text("a")
    os.remove(root / "a.txt")
    (root / "b.txt").write_text("b")
    committed = _commit_time()
    filechanges.restore(folder, committed, str(root))
    assert not (root / "a.txt").exists()
    assert (root / "b.txt").read_text() == "b"


def test_a_file_written_after_the_commit_then_removed_stays_removed(project):
    root, folder = project
    (root / "t.txt").write_text("old")
    committed = _commit_time()
    (root / "t.txt").write_text("rewritten after the commit")
    os.remove(root / "t.txt")
    filechanges.restore(folder, committed, str(root))
    assert not (root / "t.txt").exists()


def test_files_outside_the_folder_or_in_the_store_are_not_touched(project, tmp_path_factory):
    root, folder = project
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "out.txt"
    committed = _commit_time()
    elsewhere.write_text("kept")
    (root / ".dart" / "objects").mkdir(parents=True)
    (root / ".dart" / "objects" / "x").write_text("store")
    filechanges.restore(folder, committed, str(root))
    assert elsewhere.read_text() == "kept"
    assert (root / ".dart" / "objects" / "x").exists()


def test_prune_drops_what_no_resume_needs(project):
    root, folder = project
    (root / "c1").write_bytes(b"1" * 1000)
    os.remove(root / "c1")
    durable = _commit_time()
    (root / "c2").write_bytes(b"2" * 1000)
    os.remove(root / "c2")
    kept = [n for n in os.listdir(folder) if n != "journal"]
    assert len(kept) == 2
    filechanges.prune(durable)
    assert len([n for n in os.listdir(folder) if n != "journal"]) == 1
    assert all(float(line.split("\t")[0]) >= durable for line in open(os.path.join(folder, "journal")))


def test_a_finished_run_leaves_no_kept_files(project):
    root, folder = project
    (root / "c").write_text("c")
    os.remove(root / "c")
    assert os.path.isdir(folder)
    filechanges.uninstall(finished=True)
    assert not os.path.exists(folder)
