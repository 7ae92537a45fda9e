"""Files appended to between commits (dart.capture.appended): their lengths at
a commit, and the cut back on resume."""

import os

from dart.capture import appended


def test_append_mode_files_are_recorded_and_cut_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / ".dart"
    store.mkdir()
    appended.install(str(tmp_path), skip=(str(store),))
    try:
        (tmp_path / "sub").mkdir()
        with open("log.txt", "a") as f:
            f.write("one\n")
        with open(tmp_path / "sub" / "metrics.csv", "a") as f:
            f.write("a,b\n")
        with open("model.txt", "w") as f:  # rewritten by the redone work: not cut
            f.write("weights\n")
        with open(store / "journal", "a") as f:  # dart's own
            f.write("x")
        at_commit = appended.lengths()
        assert at_commit == {"log.txt": 4, os.path.join("sub", "metrics.csv"): 4}
        with open("log.txt", "a") as f:  # after the commit: redone after a resume
            f.write("two\n")
        with open("model.txt", "w") as f:
            f.write("weights, later\n")
        assert appended.cut_back(at_commit) == ["log.txt"]
        assert (tmp_path / "log.txt").read_text() == "one\n"
        assert (tmp_path / "model.txt").read_text() == "weights, later\n"
    finally:
        appended.uninstall()
    with open(tmp_path / "after.txt", "a") as f:  # no longer watched
        f.write("z")
    assert appended.lengths() == {}


def test_cut_back_never_extends_and_skips_missing_files(tmp_path):
    (tmp_path / "short.txt").write_text("ab")
    assert appended.cut_back({str(tmp_path / "short.txt"): 10, str(tmp_path / "gone.txt"): 3}) == []
    assert (tmp_path / "short.txt").read_text() == "ab"
    appended.uninstall()


def test_files_first_appended_to_after_the_commit_are_cut_back_from_the_journal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    journal = tmp_path / ".dart" / "appends" / "run-1"
    (tmp_path / "old.log").write_text("kept\n")
    appended.install(str(tmp_path), skip=(str(tmp_path / ".dart"),), journal=str(journal))
    try:
        at_commit = appended.lengths()  # nothing appended to yet
        with open("epoch3.log", "a") as f:  # created after the commit
            f.write("redone\n")
        with open("old.log", "a") as f:  # existed, first appended to after the commit
            f.write("redone\n")
    finally:
        appended.uninstall()
    first = appended.read_journal(str(journal))
    assert first == {"epoch3.log": 0, "old.log": 5}
    assert sorted(appended.cut_back(at_commit, first)) == ["epoch3.log", "old.log"]
    assert (tmp_path / "epoch3.log").read_text() == "" and (tmp_path / "old.log").read_text() == "kept\n"
    appended.uninstall()
