"""Algebraic simplification and common-subexpression elimination.

CSE needs no pass of its own: IR nodes are interned (ir.py), so equal subexpressions are one node
and every consumer shares it. `simplify` rewrites a DAG bottom-up with local identities
(x + 0, x * 1, x * 0, --x, where(c, p, p), constant folding, ...) until nothing changes. It is iterative and
memoised across calls, so simplifying many expressions that share a DAG costs the size of the
DAG once, and it has no recursion limit.
"""

from __future__ import annotations

from .ir import Node, const
from .ops import EVAL, mk

__all__ = ["simplify", "simplify_all"]


def _is(n: Node, v: float) -> bool:
    return n.op == "const" and n.attr == v


def _rule(n: Node) -> Node:
    """One local rewrite of `n` whose args are already simplified; returns n when no rule applies."""
    op, args = n.op, n.args
    if op in ("const", "input", "state", "param", "var", "matvec", "mean", "sum"):   # no folding: sum needs H
        return n
    if all(a.op == "const" for a in args):
        return const(float(EVAL[op](*[a.attr for a in args])))
    if op == "neg":
        (a,) = args
        if a.op == "neg":
            return a.args[0]
        if a.op == "sub":
            return mk("sub", a.args[1], a.args[0])
        return n
    if op == "add":
        a, b = args
        if _is(a, 0.0):
            return b
        if _is(b, 0.0):
            return a
        if b.op == "neg":
            return mk("sub", a, b.args[0])
        if a.op == "neg":
            return mk("sub", b, a.args[0])
        return n
    if op == "sub":
        a, b = args
        if _is(b, 0.0):
            return a
        if _is(a, 0.0):
            return mk("neg", b)
        if a is b:
            return const(0.0)
        if b.op == "neg":
            return mk("add", a, b.args[0])
        return n
    if op == "mul":
        a, b = args
        if _is(a, 0.0) or _is(b, 0.0):
            return const(0.0)
        if _is(a, 1.0):
            return b
        if _is(b, 1.0):
            return a
        if _is(a, -1.0):
            return mk("neg", b)
        if _is(b, -1.0):
            return mk("neg", a)
        if a.op == "neg" and b.op == "neg":
            return mk("mul", a.args[0], b.args[0])
        if a.op == "neg":
            return mk("neg", mk("mul", a.args[0], b))
        if b.op == "neg":
            return mk("neg", mk("mul", a, b.args[0]))
        if b.op == "const" and a.op != "const":
            return mk("mul", b, a)  # constants first: "2 * x"
        return n
    if op == "div":
        a, b = args
        if _is(b, 1.0):
            return a
        if _is(a, 0.0):
            return const(0.0)
        if a.op == "neg":
            return mk("neg", mk("div", a.args[0], b))
        return n
    if op == "where":
        c, p, q = args
        if p is q:
            return p
        if c.op == "const":
            return p if c.attr != 0 else q
        return n
    if op in ("max", "min") and args[0] is args[1]:
        return args[0]
    if op in ("step", "sign") and args[0].op in ("sigmoid", "exp"):
        return const(1.0)  # always positive
    return n


def simplify_all(roots: list[Node]) -> list[Node]:
    """Simplify several roots."""
    return [_fixed(r) for r in roots]


# Both memos are global and never shrink: nodes are interned for the life of the process anyway
# (ir.Node._table), so a memo entry costs one pointer per node. They are what keeps lowering linear:
# grad.py and lower.py simplify one expression per node/root, and those expressions share almost all
# of their DAG with earlier ones, which must not be walked again.
_PASS: dict[Node, Node] = {}    # node -> one bottom-up application of `_rule` to its whole DAG
_FIXED: dict[Node, Node] = {}   # node -> the fixed point `_fixed` returns for it


def _pass(n: Node) -> Node:
    """One bottom-up rewrite of n's DAG, descending only into nodes not rewritten before."""
    memo = _PASS
    stack = [n]
    while stack:
        k = stack[-1]
        if k in memo:
            stack.pop()
            continue
        todo = [a for a in k.args if a not in memo]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        ka = tuple(memo[a] for a in k.args)
        memo[k] = _rule(k if ka == k.args else Node(k.op, ka, k.attr))
    return memo[n]


_LIMIT = 50


def _fixed(n: Node) -> Node:
    """Repeat the bottom-up pass until nothing changes (at most _LIMIT times)."""
    done = _FIXED.get(n)
    if done is not None:
        return done
    start = n
    for _ in range(_LIMIT):
        m = _pass(n)
        if m is n:
            break
        n = m
    _FIXED[start] = n
    return n


def simplify(node: Node) -> Node:
    return _fixed(node)
