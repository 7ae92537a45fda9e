"""Settings: an explicit option wins over DART_* variables, which win over
[tool.dart] in the working directory's pyproject.toml, which wins over defaults."""

from __future__ import annotations

import pytest

from dart.config import DEFAULT_EVERY, DEFAULT_STORE, resolve
from dart.errors import ConfigError


@pytest.fixture
def project(tmp_path, monkeypatch):
    for name in ("DART_STORE", "DART_EVERY", "DART_STAGING", "DART_USER_CODE", "DART_LOCAL_MODULES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    def write(table: str) -> None:
        (tmp_path / "pyproject.toml").write_text("[tool.dart]\n" + table)

    return write


def test_defaults(project):
    options = resolve()
    assert options.store == DEFAULT_STORE and options.every == DEFAULT_EVERY and options.every_is_default
    assert options.user_code == () and options.local_modules is True


def test_pyproject_over_defaults(project):
    project('store = "runs/.dart"\nevery = 5\nstaging = "64M"\nuser_code = ["mylib"]\nlocal_modules = false\n')
    options = resolve()
    assert options.store == "runs/.dart" and options.every == 5 and not options.every_is_default
    assert options.staging == 64 << 20 and options.user_code == ("mylib",) and options.local_modules is False


def test_environment_over_pyproject(project, monkeypatch):
    project('store = "from-toml"\nevery = 5\nstaging = "64M"\nuser_code = ["a"]\nlocal_modules = true\n')
    monkeypatch.setenv("DART_STORE", "from-env")
    monkeypatch.setenv("DART_EVERY", "never")
    monkeypatch.setenv("DART_STAGING", "32M")
    monkeypatch.setenv("DART_USER_CODE", "b,c")
    monkeypatch.setenv("DART_LOCAL_MODULES", "0")
    options = resolve()
    assert options.store == "from-env" and options.every is None and options.staging == 32 << 20
    assert options.user_code == ("b", "c") and options.local_modules is False


def test_arguments_over_environment(project, monkeypatch):
    project('store = "from-toml"\nevery = 5\n')
    monkeypatch.setenv("DART_STORE", "from-env")
    monkeypatch.setenv("DART_EVERY", "7")
    monkeypatch.setenv("DART_STAGING", "32M")
    monkeypatch.setenv("DART_USER_CODE", "b")
    options = resolve(store="from-arg", every="0", staging="16M", user_code=["d"], local_modules=True)
    assert options.store == "from-arg" and options.every == 0 and options.staging == 16 << 20
    assert options.user_code == ("d",) and options.local_modules is True


def test_store_is_kept_as_given(project):
    """Not made absolute: the run identity must not depend on where the store lies."""
    assert resolve(store="rel/store").store == "rel/store"
    assert resolve(store="memory://x").store == "memory://x"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every": "soon"}, "--every: 'soon' is not a commit interval"),
        ({"every": "-1"}, "must be a number of seconds"),
        ({"staging": "lots"}, "--staging: 'lots' is not a size"),
        ({"staging": "1M"}, "too small"),
        ({"user_code": ["not a package"]}, "is not a package name"),
        ({"store": " "}, "empty store location"),
    ],
)
def test_bad_values_name_their_source(project, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        resolve(**kwargs)


def test_bad_pyproject_value_names_the_table(project):
    project('every = "often"\n')
    with pytest.raises(ConfigError, match=r"\[tool.dart\] every"):
        resolve()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every": "1e308"}, "longer than a year"),
        ({"every": "inf"}, "must be a number of seconds"),
        ({"staging": "1e30"}, "more than this machine's memory"),
        ({"staging": "1e400G"}, "is not a size"),
    ],
)
def test_absurd_values_are_refused(project, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        resolve(**kwargs)
