"""capture/statics.py: attributes of classes, functions and user modules, collected
at a commit and set back on resume."""

from __future__ import annotations

import types

from dart.capture import pickler, statics


def _module(name, source):
    module = types.ModuleType(name)
    exec(source, module.__dict__)
    return module


SOURCE = '''
import math

class CFG:
    lr = 0.1
    fold = None
    def method(self):
        return 1
    @property
    def prop(self):
        return 2
    @staticmethod
    def helper():
        return 3

def step():
    return 1

step.calls = 0
ALIAS = math
'''


def test_data_attributes_are_collected_and_set_back():
    main = _module("__main__", SOURCE)
    settings = _module("settings_mod", "LR = 0.5\nNAMES = ['a']\ndef f():\n    return 1\nimport os\n")
    main.CFG.fold, main.CFG.lr, main.step.calls = 3, 0.01, 7
    settings.LR = 0.25
    settings.NAMES.append("b")
    held = statics.collect(main, [settings])
    assert held == {"__main__:CFG": {"lr": 0.01, "fold": 3}, "__main__:step()": {"calls": 7},
                    "settings_mod:": {"LR": 0.25, "NAMES": ["a", "b"]}}
    data, buffers = pickler.dumps(held, main_module=main)
    fresh_main, fresh_settings = _module("__main__", SOURCE), _module("settings_mod", "LR = 0.5\nNAMES = ['a']\n")
    problems = statics.apply(pickler.loads(data, buffers), fresh_main, {"settings_mod": fresh_settings})
    assert problems == []
    assert (fresh_main.CFG.fold, fresh_main.CFG.lr, fresh_main.step.calls) == (3, 0.01, 7)
    assert (fresh_settings.LR, fresh_settings.NAMES) == (0.25, ["a", "b"])
    assert fresh_main.CFG().method() == 1 and fresh_main.CFG.helper() == 3


def test_what_is_gone_is_named():
    main = _module("__main__", "class Other:\n    pass\n")
    problems = statics.apply({"__main__:CFG": {"lr": 1}, "gone_mod:": {"X": 1}}, main, {})
    assert any("CFG" in p and "no longer defined" in p for p in problems)
    assert any("gone_mod" in p for p in problems)
