"""Shared rendering helpers: value names -> identifiers, IR expressions -> source text, templates.

A backend is a renderer: it supplies a spelling table (one row per primitive) and a leaf-naming
function, and fills a template. Every identifier that reaches generated code comes from the naming
table (lstmc/names.py): a fixed prefix plus a validated name, so a spec can never shadow an import,
a builtin or a keyword.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import jinja2

from ..version import __version__
from ..ir import PRINTED_INFIX, Node, print_infix, walk
from ..names import LEAVES, ident, local_name
from ..ops import POINTWISE
from ..program import Block

def value_name(node: Node) -> str:
    """The generated-code identifier of a leaf: state, parameter or var (names.py's table)."""
    if node.op in LEAVES:
        return ident(LEAVES[node.op], node.attr)
    return local_name(node.attr)


def key_name(key: tuple) -> str:
    return local_name(key)


def render_expr(expr: Node, spell: dict, leaf=value_name, const=repr) -> str:
    """Source text of `expr` through the IR's printer (ir.print_infix: + - * / and unary - as
    infix), other ops through `spell` (a format string with {0}, {1}), leaves through `leaf`,
    numbers through `const` (a negative number is parenthesised as an operand)."""
    def atom(n: Node, args):
        if n.op == "const":
            return const(n.attr), (5 if n.attr >= 0 else 0)
        if n.is_leaf:
            return leaf(n), 5
        return spell[n.op].format(*(t for t, _ in args)), 5
    return print_infix(expr, atom)


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
    missing = [op for op in POINTWISE if op not in PRINTED_INFIX and op not in spell]
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


def ops_used(program) -> set[str]:
    """The primitives a Program's blocks use (a generated module imports only their math)."""
    roots = [let.expr for st in program.fwd + program.bwd if isinstance(st, Block) for let in st.lets]
    return {n.op for n in walk(roots)}


def spelled_functions(spell: dict, ops=None) -> set[str]:
    """The prelude functions a spelling table names (`_sigmoid` of "_sigmoid({0})"), for `ops` only
    when given."""
    return {re.match(r"(_\w+)\(", row).group(1) for op, row in spell.items()
            if row.startswith("_") and (ops is None or op in ops)}


def compile_spec(cell) -> str:
    """What `lstmc compile` takes to regenerate a cell's module (the header of generated code): its
    name for a built-in, the file name for a .cell file, a placeholder for a spec given as text."""
    fn = getattr(cell, "filename", "") or ""
    if fn.startswith("<builtin "):
        return cell.name
    if fn.startswith("<"):
        return "CELL_FILE.cell"
    return Path(fn).name


def is_batched(expr: Node) -> bool:
    """Does `expr` vary over batch rows (reads a state, a product, a seed...)? Otherwise it is [H] or scalar."""
    return any(n.op in ("state", "var") for n in walk([expr]))
