"""Continuations: what runs again on resume before the saved position."""

import ast

from dart.astpath import annotate_paths
from dart.resume import continuation as cont

SCRIPT = """
import os
import torch
import torch.backends.cudnn
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
    position = {"kind": "loop", "path": [["body", 9]]}
    rerun = [ast.unparse(s) for s in cont.prologue(tree, position).body]
    assert rerun == [
        "import os",
        "import torch",
        "import torch.backends.cudnn",
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
