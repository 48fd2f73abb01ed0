"""The IR: one immutable, interned node type for the math of one recurrent step.

A `Node` is `(op, args, attr)`. Nodes are interned on construction, so two structurally equal
expressions are the same object: common-subexpression elimination is free, identity comparison is
structural comparison, and nodes can be dict keys. The closed set of ops lives in `ops.py`; this
module only builds, walks and prints nodes.

Leaf ops (no args):
  const   attr=float                   a number
  input   attr=None                    x, the step input (size I); only ever the operand of a matvec
          attr=name                    an extra per-step input (`input dt`, `input keep[H]`, `input u[K]`)
  state   attr=name                    a state's value at t-1 (size H)
  param   attr=name                    a per-unit parameter vector [H]
  var     attr=(kind, name...)         a named value of the lowered program (buffers, seeds, saved)
Structural op:
  matvec  attr=param name, args=(v,)   M @ v
Pointwise ops: see `ops.POINTWISE`.
"""

from __future__ import annotations

import threading

__all__ = ["Node", "const", "var", "state", "param", "input_", "matvec", "walk", "to_text", "print_infix", "PRINTED_INFIX"]


class Node:
    __slots__ = ("op", "args", "attr", "_text", "__weakref__")
    _table: dict = {}
    _lock = threading.Lock()

    op: str
    args: tuple
    attr: object

    def __new__(cls, op: str, args: tuple = (), attr=None):
        key = (op, args, attr)
        node = cls._table.get(key)
        if node is None:
            with cls._lock:
                node = cls._table.get(key)
                if node is None:
                    node = object.__new__(cls)
                    object.__setattr__(node, "op", op)
                    object.__setattr__(node, "args", args)
                    object.__setattr__(node, "attr", attr)
                    object.__setattr__(node, "_text", None)
                    cls._table[key] = node
        return node

    def __setattr__(self, name, value):  # immutable
        raise AttributeError("IR nodes are immutable")

    def __reduce__(self):
        return (Node, (self.op, self.args, self.attr))

    def __repr__(self):
        return f"Node<{to_text(self)}>"

    def __str__(self):
        return to_text(self)

    @property
    def is_leaf(self) -> bool:
        return not self.args


def const(value: float) -> Node:
    v = float(value)
    if v == 0.0:
        v = 0.0  # fold -0.0 into 0.0 so both intern to one node
    return Node("const", (), v)


def var(*key) -> Node:
    return Node("var", (), tuple(key))


def state(name: str) -> Node:
    return Node("state", (), name)


def param(name: str) -> Node:
    return Node("param", (), name)


def input_(name: str | None = None) -> Node:
    """x (no name), or the extra per-step input `name`."""
    return Node("input", (), name)


def matvec(mat: str, v: Node) -> Node:
    return Node("matvec", (v,), mat)


def walk(roots) -> list[Node]:
    """All nodes reachable from `roots`, each once, children before parents (iterative: no recursion limit)."""
    seen: set[int] = set()
    order: list[Node] = []
    stack = [(r, False) for r in reversed(list(roots))]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for a in reversed(node.args):
            if id(a) not in seen:
                stack.append((a, False))
    return order


# ---------------------------------------------------------------------------------------- printing

_INFIX = {"add": ("+", 1), "sub": ("-", 1), "mul": ("*", 2), "div": ("/", 2)}
# comparisons print infix in the IR's text (`where(a > b, p, q)`); backends spell them as masks
COMPARISONS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
PRINTED_INFIX = frozenset(_INFIX) | {"neg"}     # ops print_infix spells itself; a backend spells the rest


def var_name(key: tuple) -> str:
    """Readable name of a `var` key, e.g. ('xp', 'W_i') -> xp[W_i], ('ds1', 'h') -> dh'."""
    kind, *rest = key
    if kind == "s1":
        return f"{rest[0]}'"
    if kind == "ds1":
        return f"d{rest[0]}'"
    if kind == "ds":
        return f"d{rest[0]}"
    if kind in ("t", "sv"):
        return str(rest[0])
    if kind == "dt":
        return f"d{rest[0]}"
    return f"{kind}[{','.join(str(r) for r in rest)}]"


def _fmt_const(v: float) -> str:
    return repr(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def print_infix(expr: Node, atom, memo: dict | None = None) -> str:
    """The one expression printer: `expr` with + - * / and unary minus as infix, parenthesised only
    where precedence needs it. Every other node is printed by `atom(node, args)`, where args are its
    arguments' (text, precedence) pairs, and returns its own (text, precedence): leaves, constants
    and calls (5 binds tightest; a negative constant may say 0 to be parenthesised as an operand).
    `memo` (Node -> (text, precedence)) may hold nodes already printed. Used by `to_text` and by
    every backend's renderer (backends/render.py), so the IR and the generated code read alike."""
    memo = {} if memo is None else memo
    for n in walk([expr]):
        if n in memo:
            continue
        args = [memo[a] for a in n.args]
        if n.op in _INFIX:
            sym, p = _INFIX[n.op]
            (lt, lp), (rt, rp) = args
            lt = lt if lp >= p else f"({lt})"
            # the right operand of - and / needs parentheses at equal precedence
            rt = rt if (rp > p or (rp == p and n.op in ("add", "mul"))) else f"({rt})"
            memo[n] = (f"{lt} {sym} {rt}", p)
        elif n.op == "neg":
            (at, ap), = args
            memo[n] = (f"-{at}" if ap > 3 else f"-({at})", 3)
        else:
            memo[n] = atom(n, args)
    return memo[expr][0]


def to_text(node: Node) -> str:
    """A canonical one-line text for a node: used for debugging, golden tests and cache keys.
    Each node keeps its text (interned nodes are shared, so a subexpression is printed once)."""
    if node._text is not None:
        return node._text
    memo = {n: (n._text, _prec(n)) for n in walk([node]) if n._text is not None}
    print_infix(node, _atom, memo)
    for n, (text, _) in memo.items():
        if n._text is None:
            object.__setattr__(n, "_text", text)
    return node._text


def _prec(n: Node) -> int:
    if n.op in _INFIX:
        return _INFIX[n.op][1]
    if n.op == "neg":
        return 3
    if n.op == "matvec":
        return 4
    return 5


def _atom(n: Node, args) -> tuple[str, int]:
    """IR text of a node that is not infix: leaves by name, M @ v, op(args)."""
    op = n.op
    if op == "const":
        return _fmt_const(n.attr), 5
    if op == "input":
        return n.attr or "x", 5
    if op in ("state", "param"):
        return n.attr, 5
    if op == "var":
        return var_name(n.attr), 5
    if op == "matvec":
        (at, ap), = args
        return f"{n.attr} @ {at if ap >= 5 else f'({at})'}", 4
    if op in COMPARISONS:
        (lt, _), (rt, _) = args
        return f"{lt} {COMPARISONS[op]} {rt}", 0
    return f"{op}({', '.join(t for t, _ in args)})", 5
