"""Symbolic reverse mode: the vector-Jacobian product of one step, as IR.

`differentiate(seeds, wrt)` takes pairs (node, adjoint) — the gradients flowing into the step's
outputs — and returns the adjoint of each node in `wrt`, built from the rule table `ops.DERIV`.
Nothing is computed: the result is IR that every backend renders. Matrix products are not
differentiated here: lowering replaces them by leaf variables first and connects their adjoints
through the GEMMs it plans (lower.py), which is what lets backward share the forward's GEMM plan.
"""

from __future__ import annotations

from .ir import Node, walk
from .ops import DERIV, ZERO, mk
from .simplify import simplify

__all__ = ["differentiate"]


def _sum(terms: list[Node]) -> Node:
    if not terms:
        return ZERO
    acc = terms[0]
    for t in terms[1:]:
        acc = mk("add", acc, t)
    return acc


def differentiate(seeds: list[tuple[Node, Node]], wrt: list[Node]) -> dict[Node, Node]:
    """Adjoints of `wrt` given output adjoints `seeds`; nodes not reached get the constant 0.

    Every node in the DAG is visited once, in reverse topological order, so its adjoint is complete
    (the sum of all its consumers' contributions) before it is pushed to its arguments.
    """
    contrib: dict[Node, list[Node]] = {}
    for node, g in seeds:
        contrib.setdefault(node, []).append(g)
    for node in reversed(walk([n for n, _ in seeds])):
        terms = contrib.get(node)
        if not terms or node.op not in DERIV:
            continue
        g = simplify(_sum(terms))   # memoised (simplify.py): costs only the nodes new since the last call
        if g.op == "const" and g.attr == 0.0:
            continue
        for arg, ga in zip(node.args, DERIV[node.op](node, g)):
            contrib.setdefault(arg, []).append(ga)
    return {w: simplify(_sum(contrib.get(w, []))) for w in wrt}
