"""State the program keeps on its classes, functions and helper modules rather
than in variables: ``CFG.fold = fold`` on a Kaggle-style config class,
``config.LR *= 0.5`` on an imported ``config.py``, ``step.calls += 1`` on a
function. Classes and functions are saved by reference and re-made by the
resume's prologue from their source, and a helper module is imported afresh,
so these values went back to their defaults on resume.

At each commit, for the main script and each user module (monitor/usercode.py):
the data attributes of the classes defined at its top level (not functions,
descriptors, classes or modules), the attributes set on its top-level functions,
and, for modules other than the main script (whose globals a commit holds
already), its data globals. Resume sets them back once the prologue has run.
"""

from __future__ import annotations

import types

_KEPT_OUT = (types.FunctionType, types.BuiltinFunctionType, types.ModuleType, type, staticmethod, classmethod,
             property, types.MethodType)
#: Attributes functools.wraps and dart put on functions: not the program's state.
_FUNCTION_BOOKKEEPING = frozenset({"__wrapped__", "__dart_armed__"})


def _is_data(name: str, value) -> bool:
    if name.startswith("__") and name.endswith("__"):
        return False
    if isinstance(value, _KEPT_OUT):
        return False
    return not hasattr(type(value), "__get__")  # descriptors: behaviour, not state


def collect(main: types.ModuleType, modules: list[types.ModuleType]) -> dict[str, dict]:
    """{key: {attribute: value}} for the main module and ``modules``; keys are
    ``module:Class``, ``module:function()`` and ``module:`` (a module's globals)."""
    out: dict[str, dict] = {}
    for module in [main, *modules]:
        name = "__main__" if module is main else module.__name__
        here = module.__name__
        namespace = vars(module)
        if module is not main:
            data = {k: v for k, v in namespace.items() if _is_data(k, v)}
            if data:
                out[f"{name}:"] = data
        for attr, obj in list(namespace.items()):
            if getattr(obj, "__module__", None) != here or getattr(obj, "__qualname__", None) != attr:
                continue  # imported, or not defined at the top (saved by value with the rest)
            if isinstance(obj, type):
                data = {k: v for k, v in vars(obj).items() if _is_data(k, v)}
                if data:
                    out[f"{name}:{attr}"] = data
            elif isinstance(obj, types.FunctionType) and obj.__dict__:
                data = {k: v for k, v in obj.__dict__.items() if k not in _FUNCTION_BOOKKEEPING}
                if data:
                    out[f"{name}:{attr}()"] = data
    return out


def apply(statics: dict[str, dict], main: types.ModuleType, modules: dict[str, types.ModuleType]) -> list[str]:
    """Set the saved attributes back; returns what could not be (described)."""
    problems = []
    for key, values in statics.items():
        module_name, _, attr = key.partition(":")
        module = main if module_name == "__main__" else modules.get(module_name)
        if module is None:
            problems.append(f"module {module_name} is not imported: its saved state is not set back")
            continue
        if not attr:
            target = module
        else:
            target = vars(module).get(attr.removesuffix("()"))
            if target is None:
                problems.append(f"{module_name}.{attr} is no longer defined: its saved attributes are not set back")
                continue
        for name, value in values.items():
            try:
                setattr(target, name, value)
            except (AttributeError, TypeError) as exc:
                problems.append(f"{module_name}.{attr or name}: {exc}")
    return problems
