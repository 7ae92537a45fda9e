"""A run's identity (session.run_key): the same command on another machine, in
another directory, is the same run when the store is remote; a copied folder with
a local store is the same run too."""

from __future__ import annotations


from dart.session import run_key


def test_remote_store_names_the_script_relative_to_the_working_directory(tmp_path, monkeypatch):
    keys = []
    for machine in ("machine-a/work", "elsewhere/machine-b/checkout"):
        cwd = tmp_path / machine
        (cwd / "src").mkdir(parents=True)
        monkeypatch.chdir(cwd)
        keys.append((run_key(cwd / "train.py", ["--lr", "0.1"], None),
                     run_key(cwd / "src" / "train.py", [], None),
                     run_key(cwd.parent / "shared" / "train.py", [], None)))  # outside the checkout
    assert keys[0] == keys[1]
    assert len(set(keys[0])) == 3  # and different scripts stay different runs
    monkeypatch.chdir(tmp_path)
    assert run_key(tmp_path / "train.py", ["--lr", "0.2"], None) != run_key(tmp_path / "train.py", ["--lr", "0.1"], None)


def test_local_store_names_the_script_relative_to_the_store_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b" / "copy"
    assert run_key(a / "train.py", [], a) == run_key(b / "train.py", [], b)
    # a script outside the store's folder is named by its absolute path
    assert run_key(tmp_path / "x" / "t.py", [], a) != run_key(tmp_path / "y" / "t.py", [], b)
