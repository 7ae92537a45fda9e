"""Continuations: what runs again on resume before the saved position."""

import ast

from dart.astpath import annotate_paths
from dart.resume import continuation as cont

SCRIPT = """
import os
import sys
import torch
import torch.backends.cudnn
from collections import namedtuple
sys.path.insert(0, "lib")
Point = namedtuple("Point", "x y")
torch.set_default_dtype(torch.float64)
os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
torch.backends.cudnn.deterministic = True
model = make()
print("start")
config.lr = 0.1
for epoch in range(3):
    pass
"""


def test_prologue_reruns_definitions_and_process_settings_only():
    tree = annotate_paths(ast.parse(SCRIPT))
    position = {"kind": "loop", "path": [["body", 13]]}
    rerun = [ast.unparse(s) for s in cont.prologue(tree, position).body]
    assert rerun == [
        "import os",
        "import sys",
        "import torch",
        "import torch.backends.cudnn",
        "from collections import namedtuple",
        "sys.path.insert(0, 'lib')",
        "Point = namedtuple('Point', 'x y')",
        "torch.set_default_dtype(torch.float64)",
        "os.environ['CUBLAS_WORKSPACE_CONFIG'] = ':4096:8'",
        "torch.backends.cudnn.deterministic = True",
    ]


def test_function_variant_reruns_settings_at_the_top_of_the_function():
    source = (
        "import torch\n"
        "def main(self):\n    torch.set_num_threads(1)\n    self.cfg.lr = 0.1\n"
        "    for i in range(3):\n        self.cfg.lr *= 0.5\n"
    )
    tree = annotate_paths(ast.parse(source))
    frame = {"qualname": "main", "def": [["body", 1]], "kind": "loop", "path": [["body", 1], ["body", 2]]}
    module, node = cont.function_variant(tree, frame, 1, ["self", "i"], ())
    text = ast.unparse(node)
    assert "torch.set_num_threads(1)" in text
    assert "self.cfg.lr = 0.1" not in text  # an object's state: restored, never reset


def test_function_variant_reruns_process_handlers_and_keeps_global_declarations():
    source = (
        "import atexit, os, signal\n"
        "BEST = 0\n"
        "def main(out):\n    global BEST\n    os.chdir(out)\n    atexit.register(print, 'bye')\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    for i in range(3):\n        BEST = max(BEST, i)\n        if i:\n            global LAST\n            LAST = i\n"
    )
    tree = annotate_paths(ast.parse(source))
    frame = {"qualname": "main", "def": [["body", 2]], "kind": "loop", "path": [["body", 2], ["body", 4]]}
    module, node = cont.function_variant(tree, frame, 1, ["out", "i"], ())
    text = ast.unparse(node)
    for call in ("os.chdir(out)", "atexit.register(print, 'bye')", "signal.signal(signal.SIGTERM, signal.SIG_IGN)"):
        assert call in text
    assert sorted(node.body[0].names) == ["BEST", "LAST"]  # first, so that the names are not locals
    assert sum(isinstance(n, ast.Global) for n in ast.walk(node)) == 1
    compile(ast.fix_missing_locations(module), "<variant>", "exec")  # no declaration after a use
