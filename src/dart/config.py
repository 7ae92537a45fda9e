"""Options: explicit arguments, then DART_* environment variables, then
``[tool.dart]`` in the pyproject.toml of the current directory, then defaults."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

#: Seconds between automatic commits when nothing says otherwise. A crash loses
#: at most this much work; the interval is stretched when commits get expensive
#: so that their stalls stay under DEFAULT_BUDGET of the run time.
DEFAULT_EVERY = 30.0
DEFAULT_BUDGET = 0.02
DEFAULT_STORE = ".dart"
#: The longest commit interval accepted: a year (longer is "never").
MAX_EVERY = 365 * 24 * 3600.0
#: Memory a commit copies changed bytes into before the flusher writes them: a
#: quarter of the machine's memory, at most 4 GiB. Pages are touched only when a
#: commit needs them and are reused after, so a small program stays small.
MAX_DEFAULT_STAGING = 4 << 30
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


@dataclass(frozen=True)
class Options:
    store: str  # the location as given: a path (relative to the working directory) or a URL
    every: float | None  # None: only explicit dart.commit()
    every_is_default: bool = False
    fresh: bool = False
    local_modules: bool = True  # modules in the script's folder are user code
    user_code: tuple[str, ...] = ()  # packages treated as user code wherever they live
    staging: int = MAX_DEFAULT_STAGING  # bytes of staging memory (see flush/staging.py)
    on_store_error: str = "warn"  # "warn": go on without commits and retry; "stop": stop the program
    store_mode: str = "private"  # who may read what the store creates: private, group or public
    s3_endpoint: str | None = None  # the S3-compatible server of an s3:// store (None: AWS defaults)
    atomic_steps: bool = False  # roll back the live state of a loop iteration that raises (main script)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def default_staging() -> int:
    memory = _physical_memory()
    if memory is None:
        return MAX_DEFAULT_STAGING
    return max(64 << 20, min(MAX_DEFAULT_STAGING, memory // 4))


def parse_size(value, source: str) -> int:
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgib")
    unit = text[len(number):]
    try:
        size = int(float(number) * _UNITS[unit])
    except (ValueError, KeyError, OverflowError):
        raise ConfigError(f"{source}: {value!r} is not a size; give bytes or a size like 512M or 8G") from None
    if size < 8 << 20:
        raise ConfigError(f"{source}: {value!r} is too small; dart needs at least 8M of staging memory")
    memory = _physical_memory()
    if memory is not None and size > memory:
        raise ConfigError(
            f"{source}: {value!r} is more than this machine's memory ({memory >> 20} MiB); "
            "give at most that, e.g. 8G"
        )
    return size


def parse_every(value, source: str) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if text == "never":
            return None
        try:
            seconds = float(text.removesuffix("s"))
        except ValueError:
            raise ConfigError(
                f"{source}: {value!r} is not a commit interval; give seconds (e.g. 30, 0.5, 0) or 'never'"
            ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{source}: {value!r} must be a number of seconds >= 0, or 'never'")
    if seconds > MAX_EVERY:
        raise ConfigError(
            f"{source}: {value!r} seconds is longer than a year; give a shorter interval, or 'never' "
            "to commit only on dart.commit()"
        )
    return seconds


def _pyproject(cwd: Path) -> dict:
    path = cwd / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read [tool.dart] settings: {exc}") from exc
    return data.get("tool", {}).get("dart", {})


def _packages(value, source: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip() for item in items if str(item).strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"{source}: {name!r} is not a package name (e.g. mylib or mylib.training)")
    return names


def _choice(what: str, choices: dict[str, str]):
    """A parser for one of ``choices`` (value -> what it means)."""
    def parse(value, source: str) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            options = " or ".join(f"'{k}' ({v})" for k, v in choices.items())
            raise ConfigError(f"{source}: {value!r} is not {what}; use {options}")
        return text

    return parse


parse_on_store_error = _choice("a choice", {
    "warn": "the program goes on, dart retries",
    "stop": "dart stops the program when commits cannot be written",
})
parse_store_mode = _choice("a store mode", {
    "private": "only you, the default", "group": "your group may read", "public": "everyone may read",
})


def parse_endpoint(value, source: str) -> str:
    text = str(value).strip()
    if not text.startswith(("http://", "https://")) or len(text.split("://", 1)[1]) == 0:
        raise ConfigError(f"{source}: {value!r} is not an endpoint URL; give one like http://127.0.0.1:9000")
    return text


def _flag(value, source: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{source}: {value!r} is not a yes/no value (use 1 or 0)")


def _pick(arg, flag: str, env: str, key: str, table: dict, parse, default):
    """A setting from the argument, else $env, else [tool.dart] key, else default()."""
    if arg is not None:
        return parse(arg, flag)
    if os.environ.get(env):
        return parse(os.environ[env], env)
    if key in table:
        return parse(table[key], f"[tool.dart] {key}")
    return default()


def resolve(
    store=None, every=None, fresh: bool = False, cwd: Path | None = None, user_code=None, local_modules=None,
    staging=None, on_store_error=None, store_mode=None, s3_endpoint=None, atomic_steps=None,
) -> Options:
    cwd = Path.cwd() if cwd is None else cwd
    table = _pyproject(cwd)
    if store is None:
        store = os.environ.get("DART_STORE") or table.get("store") or DEFAULT_STORE
    is_default = every is None and not os.environ.get("DART_EVERY") and "every" not in table
    seconds = _pick(every, "--every", "DART_EVERY", "every", table, parse_every, lambda: DEFAULT_EVERY)
    store = str(store)
    if not store.strip():
        raise ConfigError("--store: an empty store location; give a directory (e.g. .dart) or leave it out")
    if user_code:
        packages = _packages(user_code, "--user-code")
    elif os.environ.get("DART_USER_CODE"):
        packages = _packages(os.environ["DART_USER_CODE"], "DART_USER_CODE")
    else:
        packages = _packages(table.get("user_code", ()), "[tool.dart] user_code")
    if local_modules is None:
        if os.environ.get("DART_LOCAL_MODULES"):
            local_modules = _flag(os.environ["DART_LOCAL_MODULES"], "DART_LOCAL_MODULES")
        else:
            local_modules = _flag(table.get("local_modules", True), "[tool.dart] local_modules")
    staging_bytes = _pick(staging, "--staging", "DART_STAGING", "staging", table, parse_size, default_staging)
    store_errors = _pick(
        on_store_error, "--on-store-error", "DART_ON_STORE_ERROR", "on_store_error", table, parse_on_store_error,
        lambda: "warn",
    )
    mode = _pick(store_mode, "store_mode", "DART_STORE_MODE", "store_mode", table, parse_store_mode, lambda: "private")
    endpoint = _pick(s3_endpoint, "--s3-endpoint", "DART_S3_ENDPOINT", "s3_endpoint", table, parse_endpoint,
                     lambda: None)
    if not atomic_steps and os.environ.get("DART_ATOMIC_STEPS"):
        atomic_steps = _flag(os.environ["DART_ATOMIC_STEPS"], "DART_ATOMIC_STEPS")
    elif atomic_steps is None:
        atomic_steps = _flag(table.get("atomic_steps", False), "[tool.dart] atomic_steps")
    return Options(
        store=store,
        s3_endpoint=endpoint,
        atomic_steps=bool(atomic_steps),
        staging=staging_bytes,
        on_store_error=store_errors,
        store_mode=mode,
        every=seconds,
        every_is_default=is_default,
        fresh=fresh,
        local_modules=local_modules,
        user_code=packages,
    )
