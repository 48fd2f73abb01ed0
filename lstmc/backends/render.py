"""Shared rendering helpers: value names -> identifiers, IR expressions -> source text, templates.

A backend is a renderer: it supplies a spelling table (one row per primitive) and a leaf-naming
function, and fills a template. Every identifier that reaches generated code comes from the naming
table (lstmc/names.py): a fixed prefix plus a validated name, so a spec can never shadow an import,
a builtin or a keyword.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import jinja2

from ..version import __version__
from ..ir import Node, walk
from ..names import LEAVES, ident, local_name
from ..ops import POINTWISE

def value_name(node: Node) -> str:
    """The generated-code identifier of a leaf: state, parameter or var (names.py's table)."""
    if node.op in LEAVES:
        return ident(LEAVES[node.op], node.attr)
    return local_name(node.attr)


def key_name(key: tuple) -> str:
    return local_name(key)


_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3}
_SYM = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def render_expr(expr: Node, spell: dict, leaf=value_name, const=repr) -> str:
    """Source text of `expr`: + - * / and unary - as Python infix, other ops through `spell`
    (a format string with {0}, {1}), leaves through `leaf`, numbers through `const`."""
    text: dict[Node, tuple[str, int]] = {}
    for n in walk([expr]):
        if n.op == "const":
            v = n.attr
            text[n] = (const(v), 5 if v >= 0 else 0)
        elif n.is_leaf:
            text[n] = (leaf(n), 5)
        elif n.op in _SYM:
            p = _PREC[n.op]
            (lt, lp), (rt, rp) = (text[a] for a in n.args)
            lt = lt if lp >= p else f"({lt})"
            rt = rt if (rp > p or (rp == p and n.op in ("add", "mul"))) else f"({rt})"
            text[n] = (f"{lt} {_SYM[n.op]} {rt}", p)
        elif n.op == "neg":
            at, ap = text[n.args[0]]
            text[n] = (f"-{at}" if ap > 3 else f"-({at})", 3)
        else:
            text[n] = (spell[n.op].format(*(text[a][0] for a in n.args)), 5)
    return text[expr][0]


def past_value(program, kind: str, old: str | None, zero: str) -> str:
    """Source text of what a batch row past its length gets for a value of `kind`, as the Program's
    past_length table says: `zero` ("zero"), or `old` ("keep": the value before the step; "pass":
    the incoming adjoint). Renderers print this; none decides it."""
    rule = program.past_length[kind]
    if rule == "zero":
        return zero
    if old is None:
        raise ValueError(f"past_length[{kind!r}] = {rule!r} needs a value before the step, and {kind} has none")
    return old


def check_spelling(spell: dict, backend: str) -> None:
    missing = [op for op in POINTWISE if op not in _SYM and op != "neg" and op not in spell]
    if missing:  # pragma: no cover - guarded by tests/test_tables.py
        raise RuntimeError(f"backend {backend} has no spelling for {missing}")


def template_dir() -> Path:
    """templates/ beside the package in a checkout; lstmc/templates inside an installed wheel."""
    here = Path(__file__).resolve().parents[2] / "templates"
    if here.is_dir() and any(here.glob("*.j2")):
        return here
    return Path(str(importlib.resources.files("lstmc.templates")))


_env = None


def render_template(name: str, **ctx) -> str:
    global _env
    if _env is None:
        _env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), keep_trailing_newline=True,
                                  undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                  autoescape=False)
    ctx.setdefault("version", __version__)
    return _env.get_template(name).render(**ctx)


def is_batched(expr: Node) -> bool:
    """Does `expr` vary over batch rows (reads a state, a product, a seed...)? Otherwise it is [H] or scalar."""
    return any(n.op in ("state", "var") for n in walk([expr]))
