"""Hidden state: what a program depends on but keeps in no variable of its own.

Today: the random generators of ``random``, NumPy's legacy global generator and
torch (CPU, and CUDA when it is initialized). Generators held in variables
(``np.random.default_rng()``, ``random.Random``) are ordinary objects and pickle
with them. Libraries are only looked at if the program already imported them.
"""

from __future__ import annotations

import platform
import random
import sys


def capture_hidden() -> dict:
    state: dict = {"random": random.getstate()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        state["numpy"] = numpy.random.get_state()
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_rng_state"):
        state["torch"] = torch.get_rng_state()
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_available() and cuda.is_initialized():
            state["torch.cuda"] = cuda.get_rng_state_all()
    return state


def restore_hidden(state: dict) -> None:
    random.setstate(state["random"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])
    if "torch" in state:
        import torch

        torch.set_rng_state(state["torch"])
        if "torch.cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["torch.cuda"])


_modules_seen = (0, {})  # (len(sys.modules) when computed, versions): modules are rarely imported mid-run


def module_versions() -> dict[str, str]:
    """The version of every imported top-level package outside the standard
    library that says its version (``__version__``): what the state's objects
    may need to be unpickled."""
    global _modules_seen
    count, versions = _modules_seen
    if count == len(sys.modules):
        return versions
    versions = {}
    stdlib = sys.stdlib_module_names
    for name, module in list(sys.modules.items()):
        if "." in name or name.startswith("_") or name in stdlib or name == "__main__":
            continue
        version = getattr(module, "__version__", None)
        if isinstance(version, str) and name != "dart":
            versions[name] = version
    _modules_seen = (len(sys.modules), versions)
    return versions


def environment() -> dict:
    """Versions a commit depends on, recorded so a resume elsewhere can check them."""
    env = {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": f"{platform.system()}-{platform.machine()}",
        "byteorder": sys.byteorder,
    }
    for name in ("numpy", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            env[name] = getattr(module, "__version__", "?")
    env["modules"] = dict(module_versions())
    return env


def compare_environment(recorded: dict) -> list[str]:
    """Differences that matter between ``recorded`` and this process, as sentences."""
    here = environment()
    problems = []
    for key in ("python", "platform", "byteorder", "numpy", "torch"):
        then = recorded.get(key)
        now = here.get(key)
        if key in ("numpy", "torch") and now is None:
            continue  # the resumed program has not imported it (yet): nothing to compare
        if then is not None and then != now:
            problems.append(f"{key} was {then} when the commit was made and is {now} here")
    return problems


def _major(version: str) -> str:
    return version.split(".", 1)[0].split("+", 1)[0]


def installed_version(name: str) -> str | None:
    """The version of package ``name`` this process would import: of the module
    if it is imported, else from the installed distribution; "" if it is
    installed with no version known; None if it cannot be imported here."""
    module = sys.modules.get(name)
    if module is not None:
        return str(getattr(module, "__version__", ""))
    import importlib.metadata
    import importlib.util

    try:
        if importlib.util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def environment_differences(recorded: dict, needed: set[str] | None = None) -> tuple[list[str], list[str]]:
    """(breaking, other) differences between the environment ``recorded`` in a
    commit and this process. Breaking: a package the state needs (``needed``:
    names; default every recorded one) is missing here or at another major
    version. Other: any other version change (Python's included)."""
    breaking, other = [], []
    then_python, now_python = recorded.get("python"), platform.python_version()
    if then_python and then_python != now_python:
        # Pickles of data load across Python versions; code saved by value may not,
        # and then the load itself says which variable failed.
        other.append(f"Python was {then_python} when the commit was made and is {now_python} here")
    for key in ("platform", "byteorder"):
        if recorded.get(key) is not None and recorded[key] != environment()[key]:
            other.append(f"{key} was {recorded[key]} when the commit was made and is {environment()[key]} here")
    versions = dict(recorded.get("modules") or {})
    for name in ("numpy", "torch"):
        if recorded.get(name):
            versions.setdefault(name, recorded[name])
    for name, then in sorted(versions.items()):
        now = installed_version(name)
        if now is None:
            if needed is None or name in needed:
                breaking.append(f"module {name} ({then} when the commit was made) is not installed here")
            continue
        if not now or now.split("+", 1)[0] == then.split("+", 1)[0]:
            continue  # the same release (a local build tag such as +cu130 is not always reported)
        sentence = f"module {name} was {then} when the commit was made and is {now} here"
        if _major(now) != _major(then) and (needed is None or name in needed):
            breaking.append(sentence + " (another major version)")
        else:
            other.append(sentence)
    return breaking, other
