"""Which code is the user's: the main script, the modules in its folder (unless
switched off) and the packages named as user code. Only user code is watched;
library code runs uninstrumented and cannot hold a safe point.
"""

from __future__ import annotations

import ast
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

from ..astpath import annotate_paths

# Folders under the script's folder that hold installed code, not the user's.
_NOT_USER_DIRS = {"site-packages", "dist-packages", "__pycache__", "node_modules", ".tox", ".nox"}


@dataclass
class UserCode:
    script_dir: Path
    local_modules: bool = True  # modules under script_dir
    packages: tuple[str, ...] = ()  # packages named as user code, wherever they live
    _seen: set = field(default_factory=set)
    _count: int = 0  # len(sys.modules) at the last look
    modules: list = field(default_factory=list)  # the user modules found so far
    #: folder -> its real path: a resume after importing torch looks at ~1300
    #: modules in ~150 folders; realpath per module cost ~0.8 s of it
    _real_dirs: dict = field(default_factory=dict)

    def _realpath(self, path: str) -> str:
        """os.path.realpath(path), the folder's part looked up once per folder."""
        if os.path.islink(path):
            return os.path.realpath(path)
        folder, name = os.path.split(path)
        real = self._real_dirs.get(folder)
        if real is None:
            real = self._real_dirs[folder] = os.path.realpath(folder)
        return os.path.join(real, name)

    def is_user_module(self, module: types.ModuleType) -> bool:
        name = module.__name__
        if name == "__main__" or name.startswith("dart.") or name == "dart":
            return False
        if any(name == p or name.startswith(p + ".") for p in self.packages):
            return True
        try:
            path = module.__dict__.get("__file__")  # not getattr: some modules fake attributes
        except Exception:
            return False
        if not self.local_modules or not isinstance(path, str) or not path.endswith(".py"):
            return False
        if not os.path.isabs(path) or not os.path.isfile(path):
            return False
        root = self._real_dirs.get(None)
        if root is None:
            root = self._real_dirs[None] = os.path.realpath(self.script_dir)
        real = self._realpath(path)
        if not real.startswith(root.rstrip(os.sep) + os.sep):
            return False
        relative = Path(real).relative_to(root)
        parts = relative.parts[:-1]
        return not any(p in _NOT_USER_DIRS or p.startswith(".venv") or p in ("venv", ".env") for p in parts)

    def new_modules(self) -> list[types.ModuleType]:
        """User modules imported since the last call (a cheap no when nothing
        was imported: this runs at every commit)."""
        if len(sys.modules) == self._count:
            return []
        self._count = len(sys.modules)
        found = []
        for name, module in list(sys.modules.items()):
            if id(module) in self._seen or not isinstance(module, types.ModuleType):
                continue
            self._seen.add(id(module))
            if self.is_user_module(module):
                found.append(module)
        self.modules.extend(found)
        return found


def module_tree(module: types.ModuleType) -> ast.Module | None:
    """The module's source, parsed and annotated with paths (None if unavailable)."""
    try:
        path = module.__dict__["__file__"]
        with open(path, encoding="utf-8") as f:
            return annotate_paths(ast.parse(f.read(), path))
    except (KeyError, OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None


def module_functions(module: types.ModuleType):
    """Code objects of the functions and methods defined at the top of
    ``module`` (decorators looked through)."""
    seen = set()

    def visit(obj, depth=0):
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        elif isinstance(obj, property):
            for part in (obj.fget, obj.fset, obj.fdel):
                if part is not None:
                    yield from visit(part, depth)
            return
        while hasattr(obj, "__wrapped__") and not isinstance(obj, type):
            obj = obj.__wrapped__
        if isinstance(obj, types.FunctionType):
            code = obj.__code__
            if code.co_filename == module.__file__ and id(code) not in seen:
                seen.add(id(code))
                yield code
        elif isinstance(obj, type) and obj.__module__ == module.__name__ and depth < 4 and id(obj) not in seen:
            seen.add(id(obj))
            for value in vars(obj).values():
                yield from visit(value, depth + 1)

    for value in list(vars(module).values()):
        try:
            yield from visit(value)
        except Exception:  # an object with a hostile __getattr__: not user code
            continue
