"""The import rule of docs/architecture.md, checked: each part of dart imports
only the parts below it. A new import that crosses the layers fails here; if it
is right, change the rule in the doc and in ALLOWED together."""

from __future__ import annotations

import ast
from pathlib import Path

import dart

PACKAGE = Path(dart.__file__).parent

#: part -> the parts it may import (besides itself). A part is a top-level module
#: or subpackage of dart; "capture.hidden" and "monitor.sites" are named on their own.
LEAVES = {"errors", "compat", "astpath", "capture.hidden"}
ALLOWED = {
    "errors": set(),
    "compat": set(),
    "astpath": set(),
    "capture.hidden": set(),
    "config": {"errors"},
    "_native": {"errors"},
    "store": {"errors"},
    "delta": {"_native", "errors"},
    "monitor": {"_native", "astpath", "compat", "capture.hidden", "errors"},
    "capture": {"astpath", "capture.hidden", "errors", "store"},  # + monitor.sites for types only
    "flush": {"delta", "store", "errors"},
    "resume": {"astpath", "capture", "capture.hidden", "monitor", "store", "errors"},
    "coordinate": {"config"},
    "history": {"capture", "capture.hidden", "errors", "store"},
    "rollback": {"compat", "delta", "errors"},
    "session": {"astpath", "capture", "capture.hidden", "config", "coordinate", "errors", "flush", "history",
                "monitor", "resume", "rollback", "store"},
    "present": {"errors"},
    "runner": {"config", "errors", "present", "session"},
    "cli": {"__init__", "capture", "config", "errors", "history", "present", "runner", "store"},
    "__init__": {"_native", "capture", "config", "errors", "flush", "history", "present", "resume", "rollback",
                 "runner", "store"},
    "__main__": {"cli"},
}


def _part(module: str) -> str:
    """dart.capture.pods -> capture; dart.capture.hidden -> capture.hidden."""
    parts = module.split(".")[1:] or ["__init__"]
    if parts[:2] == ["capture", "hidden"]:
        return "capture.hidden"
    if parts[0].startswith("__") and parts[0] != "__main__":
        return "__init__"  # an attribute of the package itself (__version__)
    return parts[0]


def _imports(path: Path) -> set[str]:
    module = "dart." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    module = module.removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if isinstance(getattr(node, "parent", None), ast.If):
            continue
        found.update(n for n in names if n == "dart" or n.startswith("dart."))
    return found


def _type_checking_only(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    out.add(inner.module.lstrip("."))
    return out


def test_every_import_follows_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "store" and rel.name == "contract.py":
            continue  # test support: imports pytest and the store only
        module = "dart." + ".".join(rel.with_suffix("").parts)
        part = _part(module.removesuffix(".__init__") if rel.name == "__init__.py" else module)
        if rel == Path("__init__.py"):
            part = "__init__"
        allowed = ALLOWED[part] | {part}
        typing_only = _type_checking_only(path)
        for target in _imports(path):
            other = _part(target)
            if other in allowed or target.split(".")[-1] in {"_monitor", "_delta"} and part == "_native":
                continue
            if target.removeprefix("dart.") in typing_only or any(t in target for t in typing_only):
                continue
            wrong.append(f"{rel}: imports {target} ({part} -> {other})")
    assert not wrong, "imports that cross the layers of docs/architecture.md:\n" + "\n".join(wrong)


def test_only_monitor_and_delta_use_the_native_modules():
    users = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if "_native" in text and ("from .._native" in text or "from . import _native" in text or "from .. import _native" in text):
            users.add(path.relative_to(PACKAGE).parts[0])
    # dart/__init__.py imports the loader only to fail early with its message; it calls nothing
    assert users - {"__init__.py"} <= {"monitor", "delta"}, users


def test_leaves_import_nothing_of_dart():
    for leaf in LEAVES:
        path = PACKAGE / (leaf.replace(".", "/") + ".py")
        assert not _imports(path), (leaf, _imports(path))
