"""Find a saved position again in source that was edited since the commit.

A position is a path of AST indexes (``body.3/body.1``). Indexes shift when the
user adds or removes a statement above, so each step of the path is saved with
an *anchor*: what the node is (``for epoch in range(epochs)``, ``def train``,
or a fingerprint of a plain statement). On resume each step is looked up again:
at the same index if the anchor still matches there, else at the one place in
its block where it matches. Loops are thus found by what they loop over and
their order, functions by name, not by line numbers.
"""

from __future__ import annotations

import ast

from ..errors import ResumeError

Path = tuple[tuple[str, int], ...]


def anchor(node: ast.AST) -> str:
    """A short description of ``node`` that survives edits elsewhere."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return f"def {node.name}"
    if isinstance(node, ast.ClassDef):
        return f"class {node.name}"
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return f"for {ast.unparse(node.target)} in {ast.unparse(node.iter)}"
    if isinstance(node, ast.While):
        return f"while {ast.unparse(node.test)}"
    if isinstance(node, ast.If):
        return f"if {ast.unparse(node.test)}"
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return "with " + ", ".join(ast.unparse(item) for item in node.items)
    if isinstance(node, (ast.Try, ast.TryStar)):
        return "try"
    if isinstance(node, ast.ExceptHandler):
        return "except " + (ast.unparse(node.type) if node.type is not None else "")
    return ast.unparse(node).split("\n", 1)[0][:200]


def anchors_of(root: ast.AST, path: Path) -> list[str]:
    """The anchor of every node along ``path``."""
    out, node = [], root
    for name, index in path:
        node = getattr(node, name)[index]
        out.append(anchor(node))
    return out


def relocate(root: ast.AST, path: Path, anchors: list[str] | None, what: str) -> Path:
    """``path`` in ``root`` (the edited source), step by step by anchor.
    ``what`` names the frame in messages. Raises ResumeError when a step is gone
    or ambiguous."""
    if not anchors:
        return path
    node, found = root, []
    for (name, index), expected in zip(path, anchors):
        block = getattr(node, name, None)
        if not isinstance(block, list):
            raise ResumeError(f"the code of {what} changed where the commit was taken ({expected!r})")
        if index < len(block) and anchor(block[index]) == expected:
            chosen = index
        else:
            matches = [i for i, child in enumerate(block) if anchor(child) == expected]
            if len(matches) != 1:
                line = getattr(node, "lineno", None)
                where = f" (near line {line})" if line else ""
                problem = "is no longer there" if not matches else "now appears more than once"
                raise ResumeError(f"in {what}, `{expected}`{where} {problem}")
            chosen = matches[0]
        found.append((name, chosen))
        node = block[chosen]
    return tuple(found)
