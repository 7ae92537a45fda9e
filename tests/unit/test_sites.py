"""Matching bytecode to the AST: every loop's backward jumps and iterator slot,
in original code and in continuations (which hold copies of loops)."""

import ast

from dart.astpath import annotate_paths
from dart.monitor.sites import analyze
from dart.resume import continuation as cont

PROGRAM = '''
total = 0
for i in range(3):
    if i == 1:
        continue
    squares = [j * j for j in range(i)]
    for k in range(2):
        total += k
while total < 20:
    total += 1
    if total % 2:
        continue
with open(__file__) as fh:
    for line in fh:
        pass
if __name__ == "__main__":
    n = 0
    while True:
        n += 1
        if n > 2:
            break
'''

LOOPS = {
    (("body", 1),): ("for", 0),
    (("body", 1), ("body", 2)): ("for", 1),
    (("body", 2),): ("while", None),
    (("body", 3), ("body", 0)): ("for", 1),  # the with block's __exit__ sits below
    (("body", 4), ("body", 1)): ("while", None),
}


def sites_of(source):
    tree = annotate_paths(ast.parse(source))
    return tree, analyze(compile(tree, "prog.py", "exec"), tree)


def test_every_loop_has_its_backward_jumps_and_iterator_slot():
    _, sites = sites_of(PROGRAM)
    found = {site.path: (site.kind, site.iterator.stack_slot if site.iterator else None) for site in sites.back_edges.values()}
    assert found == LOOPS
    inner = next(s for s in sites.back_edges.values() if s.path == (("body", 1), ("body", 2)))
    assert [e.path for e in inner.enclosing] == [(("body", 1),)]


def test_top_level_statement_entries():
    _, sites = sites_of(PROGRAM)
    assert sorted(path for path, _ in sites.statement_entries.values()) == [(("body", i),) for i in range(5)]


def test_copies_of_a_loop_in_a_continuation_each_get_their_own_jumps():
    tree = annotate_paths(ast.parse(PROGRAM))
    # Resume inside the inner loop of the first outer iteration: the continuation
    # runs the rest of that iteration (one copy of the inner loop), then the
    # outer loop goes on (another copy).
    position = {"kind": "loop", "path": [["body", 1], ["body", 2]]}
    body = cont.continuation(tree, position)
    sites = analyze(compile(body, "prog.py", "exec"), body)
    inner = [s for s in sites.back_edges.values() if s.path == (("body", 1), ("body", 2))]
    assert len({id(s) for s in inner}) == 2  # two copies, told apart
    peeled, resumed = sorted(inner, key=lambda s: s.enclosing[0].iterator.global_name is None)
    assert peeled.enclosing[0].iterator.global_name == cont.iterator_global("body.1")
    assert resumed.enclosing[0].iterator.stack_slot == 0
    # The end of the interrupted outer iteration (the one-shot loop's jump) and
    # the outer loop going on both end an iteration of the outer loop.
    outer = [s for s in sites.back_edges.values() if s.path == (("body", 1),)]
    assert {s.iterator.global_name is not None for s in outer} == {True, False}


def test_a_long_loop_body_is_found_too():
    """A long body makes FOR_ITER jump far: it gets an EXTENDED_ARG prefix,
    and the loop's backward jump lands on the prefix."""
    body = "\n".join(f"        x{i} = epoch + {i}" for i in range(120))
    source = f"def f():\n    for epoch in range(3):\n{body}\n        for k in range(2):\n            pass\n"
    tree = annotate_paths(ast.parse(source))
    code = compile(tree, "long.py", "exec").co_consts[0]
    sites = analyze(code, tree.body[0])
    assert {s.path for s in sites.back_edges.values()} == {
        (("body", 0), ("body", 0)),
        (("body", 0), ("body", 0), ("body", 120)),
    }
