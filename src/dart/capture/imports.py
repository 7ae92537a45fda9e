"""Hooks into libraries, put in when the library's module is imported (or at
once if it already is), and taken out again when dart stops."""

from __future__ import annotations

import importlib.util
import sys


class AfterImport:
    """A meta-path finder that calls ``hook(module)`` as soon as the module named
    ``name`` has run (not an ``importlib.abc.MetaPathFinder``: importing that costs ~30 ms)."""

    def __init__(self, name: str, hook):
        self.name, self.hook = name, hook

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, hook = spec.loader, self.hook
        run = loader.exec_module

        def exec_module(module):
            run(module)
            hook(module)

        loader.exec_module = exec_module
        return spec

    def install(self) -> None:
        module = sys.modules.get(self.name)
        if module is not None:
            self.hook(module)
        elif self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def uninstall(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
