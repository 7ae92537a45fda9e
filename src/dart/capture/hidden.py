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
