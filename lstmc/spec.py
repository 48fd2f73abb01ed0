"""Parse a .cell file into a `Cell`: the checked equations of one recurrent step as IR.

The language (README, "The cell language") is line oriented:

    cell NAME                 first statement
    state s1, s2[P], ...      recurrent state vectors; s is the value at t-1, s' the value at t; s2[P]
                              has the declared size P (default H; lstmc/spec_sizes.py infers the rest)
    output s                  optional; default the first state
    init NAME = VALUE         optional; VALUE is a number or zeros|ones|uniform|normal|xavier|orthogonal
    param NAME, ...           optional; once present, every free name must be declared
    heads N                   optional; every recurrent matrix is block-diagonal, [N, H/N, H/N]
    size K, ...               optional; named sizes besides H and I, given at run time (sizes={"K": 8})
    input dt, keep[H], u[K]   optional; extra per-step inputs: [T, B] (one number per row, broadcast
                              over H), [T, B, H] (element-wise), [T, B, K] (only as `V @ u`, hoisted
                              like `W @ x`: V is [H, K])
    NAME = EXPR               an intermediate, assigned once, in any order (no cycles)
    s' = EXPR                 each state updated exactly once

Expressions are parsed by a Lark LALR grammar (lstmc/spec_expr.py); nothing is ever evaluated. The
`input` and `size` lines are lstmc/spec_inputs.py's. Every error is a `SpecError` (lstmc/spec_errors.py,
with the hints and error builders) carrying the location and a fix.
"""

from __future__ import annotations

import keyword
import math
import numbers
import re
import unicodedata
from dataclasses import dataclass, field

from lark import Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .ir import Node
from .ops import FUNCTIONS
from .spec_expr import ROW_FUNCTIONS, Expressions, _parser
from .spec_errors import CHAR_HINTS, DIRECTIVES, FUNCS_TEXT, Diagnostics, SpecError, did_you_mean, with_article
from .spec_inputs import InputDeclarations
from .spec_sizes import SizedStates

__all__ = ["SpecError", "Cell", "parse", "INIT_KINDS"]

MAX_SOURCE_CHARS = 200_000
MAX_LINE_CHARS = 4_000
MAX_NESTING = 64
MAX_STATEMENTS = 2_000

INIT_KINDS = ("zeros", "ones", "uniform", "normal", "xavier", "orthogonal")
RESERVED = set(DIRECTIVES) | set(FUNCTIONS) | set(ROW_FUNCTIONS) | {"x"} | set(keyword.kwlist) | set(keyword.softkwlist)


# a number as the language writes it (the NUMBER terminal, optionally signed): used for `init` values
_NUMBER_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


@dataclass
class _Stmt:
    kind: str
    lineno: int
    text: str
    data: object = None
    col: int = 1


@dataclass
class Cell:
    """A checked cell: its states, parameters (with shapes) and the step equations as IR."""

    name: str
    states: tuple[str, ...]
    output: str
    new: dict[str, Node]                   # state name -> IR of s' (in terms of x, states at t-1, params)
    params: dict[str, str]                 # name -> "W" ([H, I]), "U" ([H, H]) or "b" ([H])
    inits: dict[str, object]               # name -> float or one of INIT_KINDS
    equations: list[tuple[str, Node]]      # (target, IR) in evaluation order, for display
    names: dict[Node, str] = field(default_factory=dict)   # IR node -> the name it has in the spec
    source: str = ""
    filename: str = "<string>"
    heads: int = 1                         # `heads N`: every U is block-diagonal, [N, H/N, H/N]
    inputs: dict = field(default_factory=dict)        # extra input -> None ([T, B]), "H" or a size name
    sizes: tuple = ()                                  # `size K` lines, in order
    param_inputs: dict = field(default_factory=dict)  # a "V" parameter -> the input it multiplies
    state_sizes: dict = field(default_factory=dict)   # state -> "H" or a size name (`state h[P]`)
    param_sizes: dict = field(default_factory=dict)   # parameter -> its dimensions as size names

    def state_size(self, s: str) -> str:
        return self.state_sizes.get(s, "H")

    @property
    def sized(self) -> bool:
        """Does some state have a size other than H (`state h[P]`)?"""
        return any(v != "H" for v in self.state_sizes.values())

    def size_value(self, size: str, input_size: int, hidden_size: int, sizes: dict | None = None) -> int:
        """The number a size name stands for: H, I, or a declared size's value in `sizes`."""
        if size == "H":
            return hidden_size
        if size == "I":
            return input_size
        if not sizes or size not in sizes:
            raise ValueError(f"cell '{self.name}' declares `size {size}`: pass its value, e.g. sizes={{{size!r}: 8}}")
        k = sizes[size]
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"sizes[{size!r}] must be a positive integer, got {k!r}")
        return int(k)

    def input_size_of(self, name: str, hidden_size: int, sizes: dict | None = None) -> int | None:
        """The feature count of extra input `name`: None for a scalar input ([T, B]), H for [H], else
        the value of its declared size in `sizes` (a ValueError saying how to pass it when missing)."""
        size = self.inputs[name]
        if size is None or size == "H":
            return None if size is None else hidden_size
        if not sizes or size not in sizes:
            raise ValueError(f"cell '{self.name}' declares `size {size}` (for `input {name}[{size}]`): pass its "
                             f"value, e.g. sizes={{{size!r}: 8}}")
        k = sizes[size]
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"sizes[{size!r}] must be a positive integer, got {k!r}")
        return int(k)

    def param_dims(self, name: str) -> str:
        """A parameter's shape in words: [H, I], [H, H] ([N, H/N, H/N] with heads), [H], [H, K]."""
        kind = self.params[name]
        if kind != "V" and self.sized and name in self.param_sizes:
            return f"[{', '.join(self.param_sizes[name])}]"
        if kind == "V":
            return f"[H, {self.inputs[self.param_inputs[name]] or 1}]"
        if kind == "U" and self.heads > 1:
            return f"[{self.heads}, H/{self.heads}, H/{self.heads}]"
        return {"W": "[H, I]", "U": "[H, H]", "b": "[H]"}[kind]

    def param_shape(self, name: str, input_size: int, hidden_size: int, sizes: dict | None = None) -> tuple[int, ...]:
        kind = self.params[name]
        if kind != "V" and self.sized and name in self.param_sizes:
            return tuple(self.size_value(d, input_size, hidden_size, sizes) for d in self.param_sizes[name])
        if kind == "V":
            return (hidden_size, self.input_size_of(self.param_inputs[name], hidden_size, sizes))
        if kind == "U" and self.heads > 1:
            if hidden_size % self.heads:
                raise ValueError(f"cell '{self.name}' has {self.heads} heads, so hidden_size must be a multiple of "
                                 f"{self.heads}, got {hidden_size}")
            d = hidden_size // self.heads
            return (self.heads, d, d)
        return {"W": (hidden_size, input_size), "U": (hidden_size, hidden_size), "b": (hidden_size,)}[kind]

    def __repr__(self):
        return f"Cell({self.name!r}, states={self.states}, params={list(self.params)})"


# ---------------------------------------------------------------------------------------- parsing

def parse(text: str, filename: str = "<string>") -> Cell:
    """Parse and check cell-language text; raise `SpecError` on any problem."""
    if not isinstance(text, str):
        raise SpecError(f"a cell spec must be text, not {type(text).__name__}", filename=filename, line=1, col=1)
    return _Parser(text, filename).run()


class _Parser(SizedStates, InputDeclarations, Expressions, Diagnostics):
    def __init__(self, text: str, filename: str):
        self.text = text
        self.filename = filename
        self.lines = text.split("\n")
        self._vector: dict[Node, bool] = {}
        self._conditions: set[int] = set()
        self._declared: dict | None = None     # `param` lines (None: free names are parameters)
        self._known: set[str] = set()          # every name the cell declares or defines (for hints)
        self._inputs: dict = {}                # `input` lines: name -> (size, line, col, size col)
        self._sizes: dict = {}                 # `size` lines: name -> (line, col)
        self._used_inputs: set[str] = set()

    # top level ------------------------------------------------------------------------------
    def run(self) -> Cell:
        if len(self.text) > MAX_SOURCE_CHARS:
            raise self.err(f"the spec is {len(self.text)} characters long (limit {MAX_SOURCE_CHARS})", 1,
                           fix="a cell is a few dozen lines; split it or remove generated text")
        if "\x00" in self.text:
            ln = self.text[: self.text.index("\x00")].count("\n") + 1
            raise self.err("the spec contains a NUL byte", ln, fix="save the file as plain text")
        stmts = []
        for lineno, raw in enumerate(self.lines, start=1):
            line = raw.split("#", 1)[0]
            if not line.strip():
                continue
            if len(line) > MAX_LINE_CHARS:
                raise self.err(f"line is {len(line)} characters long (limit {MAX_LINE_CHARS})", lineno,
                               fix="name parts of the expression as intermediates")
            stmts.append(self.statement(line, lineno))
            if len(stmts) > MAX_STATEMENTS:
                raise self.err(f"more than {MAX_STATEMENTS} statements", lineno, fix="a cell is a few dozen lines")
        if not stmts:
            raise self.err("the spec is empty", 1, fix="start with `cell NAME`, then `state h`, then the equations")
        return self.check(stmts)

    def statement(self, line: str, lineno: int) -> _Stmt:
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)(?=\s|$)(.*)$", line)
        col0 = len(line) - len(line.lstrip()) + 1
        if m and m.group(1) in DIRECTIVES and not re.match(r"\s*'?\s*=", m.group(2)):
            return getattr(self, "d_" + m.group(1))(m.group(2), lineno, line)
        if m and keyword.iskeyword(m.group(1)) and not re.match(r"\s*'?\s*=", m.group(2)):
            # `import os`, `if h: ...`, `return h`, `def f(): ...`
            raise self.err(f"'{m.group(1)}' is Python, not part of the cell language", lineno, col0,
                           fix="a cell is `cell`, `state`, `output` and `init` lines and equations NAME = EXPR")
        if m and "=" not in line and re.match(r"\s+[A-Za-z_(]", m.group(2) or ""):
            word = m.group(1)
            fix = f"directives are {', '.join(DIRECTIVES)}; equations look like NAME = EXPR"
            if m.group(2).strip() == "x":
                fix = "x is the built-in step input and needs no declaration; " + fix
            raise self.err(f"unknown directive '{word}'{did_you_mean(word, DIRECTIVES)}", lineno, col0, fix=fix)
        return _Stmt("assign", lineno, line, self.parse_assign(line, lineno))

    # directives -----------------------------------------------------------------------------
    def _names(self, rest: str, lineno: int, line: str, what: str) -> list[tuple[str, int]]:
        items = rest.split(",")
        out = []
        pos = len(line) - len(rest)
        for item in items:
            name = item.strip()
            col = pos + (len(item) - len(item.lstrip())) + 1
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise self.err(f"`{name}` is not a valid {what} name" if name else f"missing {what} name",
                               lineno, col, fix=f"{what} names are letters, digits and _, separated by commas")
            self.check_name(name, lineno, col, what)
            out.append((name, col))
            pos += len(item) + 1
        return out

    def check_name(self, name: str, lineno: int, col: int, what: str):
        if name in RESERVED:
            why = ("a Python keyword" if keyword.iskeyword(name) or keyword.issoftkeyword(name)
                   else "the step input" if name == "x" else "a function" if name in RESERVED - set(DIRECTIVES)
                   else "a directive")
            raise self.err(f"'{name}' is reserved ({why}) and cannot name {with_article(what)}", lineno, col,
                           fix="choose another name")

    def d_cell(self, rest, lineno, line):
        names = self._names(rest, lineno, line, "cell")
        if len(names) != 1:
            raise self.err("`cell` takes exactly one name", lineno, fix="write `cell my_cell`")
        return _Stmt("cell", lineno, line, names[0][0])

    def d_output(self, rest, lineno, line):
        names = self._names(rest, lineno, line, "output")
        if len(names) != 1:
            raise self.err("`output` takes exactly one state name", lineno, fix="write `output h`")
        return _Stmt("output", lineno, line, names[0])

    def d_heads(self, rest, lineno, line):
        m = re.fullmatch(r"\s*([0-9]+)\s*", rest)
        col = len(line) - len(rest.lstrip()) + 1
        if not m or int(m.group(1)) < 1:
            raise self.err(f"`heads` takes a positive whole number, got `{rest.strip()}`", lineno, col,
                           fix="write `heads 4`: every recurrent matrix becomes block-diagonal with 4 blocks")
        return _Stmt("heads", lineno, line, int(m.group(1)))

    @staticmethod
    def stmt(kind, lineno, line, data) -> _Stmt:
        return _Stmt(kind, lineno, line, data)

    def d_param(self, rest, lineno, line):
        return _Stmt("param", lineno, line, self._names(rest, lineno, line, "parameter"))

    def d_init(self, rest, lineno, line):
        m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\S+)\s*", rest)
        if not m:
            raise self.err("malformed `init`", lineno, fix=f"write `init NAME = VALUE` with VALUE a number or one of "
                           f"{', '.join(INIT_KINDS)}")
        name, value = m.group(1), m.group(2)
        vcol = line.rindex(value) + 1
        if value in INIT_KINDS:
            v = value
        else:
            # only the language's own number syntax: Python's float() would also take '1_000', 'nan', 'inf'
            # and digits of other scripts
            numeric = _NUMBER_RE.fullmatch(value)
            if not numeric and not re.fullmatch(r"[+-]?(inf|infinity|nan)", value, re.IGNORECASE):
                raise self.err(f"unknown initialisation '{value}'", lineno, vcol,
                               fix=f"use a number (like 1, -0.5 or 1e-3) or one of {', '.join(INIT_KINDS)}")
            v = float(value) if numeric else math.nan
            if not math.isfinite(v):
                raise self.err(f"initial value must be finite, not {value}", lineno, vcol, fix="use a finite number")
        return _Stmt("init", lineno, line, (name, v), col=line.index(name, line.index("init") + 4) + 1)

    # equations ------------------------------------------------------------------------------
    def parse_assign(self, line: str, lineno: int) -> Tree:
        depth = 0
        opened: list[int] = []          # columns of the '(' not closed yet
        unmatched = 0                   # column of the first ')' that closes nothing
        for i, ch in enumerate(line):
            if ch == "(":
                depth += 1
                opened.append(i + 1)
                if depth > MAX_NESTING:
                    raise self.err(f"parentheses nested deeper than {MAX_NESTING}", lineno, i + 1,
                                   fix="name inner parts of the expression as intermediates")
            elif ch == ")":
                depth -= 1
                if opened:
                    opened.pop()
                elif not unmatched:
                    unmatched = i + 1
        run = re.search(r"[-+]{%d,}" % (MAX_NESTING + 1), line)
        if run:
            raise self.err("too many consecutive signs", lineno, run.start() + 1, fix="simplify the signs")
        try:
            return _parser.parse(line)
        except UnexpectedCharacters as e:
            col = e.column if 0 < e.column <= len(line) else len(line.rstrip()) + 1
            ch = line[col - 1] if col <= len(line) else ""
            self.python_keyword(line, lineno, col)
            if ch in CHAR_HINTS:
                problem, fix = CHAR_HINTS[ch]
            elif ch and not ch.isascii():
                problem = (f"non-ASCII character {ch!r} (U+{ord(ch):04X} "
                           f"{unicodedata.name(ch, 'unnamed character')})")
                fix = ("the cell language is plain ASCII: retype it (e.g. '-' for a minus sign, '*' for a product, "
                       "an ordinary space)")
            else:
                problem = f"unexpected character {ch!r}"
                fix = f"use names, numbers, + - * / @, parentheses and the functions {FUNCS_TEXT}"
            raise self.err(problem, lineno, col, fix=fix) from None
        except UnexpectedEOF:
            raise self.early_end(line, lineno, opened) from None
        except UnexpectedToken as e:
            tok = e.token
            if "=" not in line:
                raise self.not_an_equation(line, lineno) from None
            if tok.type == "$END":
                raise self.early_end(line, lineno, opened) from None
            col = getattr(tok, "column", None) or len(line.rstrip()) + 1
            self.python_keyword(line, lineno, col + len(str(tok)))
            before = line[: col - 1]
            if tok.type == "STAR" and before.endswith("*"):
                raise self.err("the ** operator is not part of the cell language", lineno, col - 1,
                               fix="write powers as products, e.g. v * v") from None
            if tok.type == "EQUAL":
                raise self.err("unexpected '='", lineno, col,
                               fix="an equation is NAME = EXPR; the left side is a name or a primed state") from None
            if tok.type == "PRIME":
                raise self.err("misplaced prime (')", lineno, col,
                               fix="a prime follows a state name to mean its new value, as in c'; strings and "
                                   "double primes are not part of the cell language") from None
            if tok.type == "RPAR" and unmatched == col:
                raise self.err("unmatched ')'", lineno, col, fix="remove it or add the matching '('") from None
            if tok.type in ("NAME", "NUMBER") and re.search(r"[0-9.]$", before):
                word = re.search(r"[A-Za-z0-9_.]+$", before).group() + str(tok)
                wcol = col - len(word) + len(str(tok))
                raise self.err(f"'{word}' is neither a number nor a name", lineno, wcol,
                               fix="write numbers like 2, 0.5 or 1e-3 and names starting with a letter; "
                                   "to multiply, write 2 * h") from None
            if tok.type in ("NAME", "NUMBER", "LPAR") and re.search(r"[A-Za-z0-9_)']\s*$", before):
                raise self.err(f"missing operator before '{tok!s:.20}'", lineno, col,
                               fix="write * to multiply, e.g. 2 * h or a * (b + c); functions are called "
                                   "as tanh(v)") from None
            raise self.err(f"unexpected '{tok!s:.20}'", lineno, col,
                           fix="equations look like `i = sigmoid(W_i @ x + U_i @ h + b_i)`") from None
        except (UnexpectedInput, LarkError) as e:  # pragma: no cover - any other Lark complaint
            raise self.err(f"cannot parse this line ({type(e).__name__})", lineno, 1) from None

    # checking -------------------------------------------------------------------------------
    def check(self, stmts: list[_Stmt]) -> Cell:
        first = stmts[0]
        if first.kind != "cell":
            raise self.err("the first statement must be `cell NAME`", first.lineno,
                           fix="add a line `cell my_cell` at the top")
        name = first.data
        states: list[tuple[str, int]] = []
        state_line = 0
        output = None
        heads = None
        inits: dict[str, tuple] = {}
        declared: dict[str, tuple[int, int]] = {}    # `param` lines: name -> (line, col)
        sizes: dict[str, tuple[int, int]] = {}       # `size` lines: name -> (line, col)
        inputs: dict[str, tuple] = {}                # `input` lines: name -> (size, line, col, size col)
        assigns: dict[str, tuple] = {}      # target ("s'" for states) -> (tree, stmt)
        for st in stmts[1:]:
            if st.kind == "cell":
                raise self.err("a second `cell` statement", st.lineno, fix="one cell per file")
            elif st.kind == "state":
                if states:
                    raise self.err("a second `state` statement", st.lineno,
                                   fix=f"list all states on the first one (line {state_line}): state a, b")
                sized_states, state_line = st.data, st.lineno
                states = [(s_, c_) for s_, c_, _, _ in sized_states]
                seen = set()
                for s, col in states:
                    if s in seen:
                        raise self.err(f"state '{s}' listed twice", st.lineno, col, fix="list each state once")
                    seen.add(s)
            elif st.kind == "output":
                if output is not None:
                    raise self.err("a second `output` statement", st.lineno, fix="name one output state")
                output = (st.data[0], st.lineno, st.data[1])
            elif st.kind == "heads":
                if heads is not None:
                    raise self.err("a second `heads` statement", st.lineno, fix="one `heads N` per cell")
                heads = st.data
            elif st.kind == "param":
                for pname, col in st.data:
                    if pname in declared:
                        raise self.err(f"parameter '{pname}' is declared twice (first on line {declared[pname][0]})",
                                       st.lineno, col, fix="declare each parameter once")
                    declared[pname] = (st.lineno, col)
            elif st.kind in ("size", "input"):
                self.declare(st, sizes, inputs)
            elif st.kind == "init":
                pname, value = st.data
                if pname in inits:
                    raise self.err(f"'{pname}' initialised twice", st.lineno, st.col, fix="keep one `init` line")
                inits[pname] = (value, st)
            else:
                tree = st.data
                tname, primed = self.target(tree)
                key = tname + ("'" if primed else "")
                col = tree.children[0].children[0].column
                if tname == "x":
                    raise self.err("cannot assign to the input x", st.lineno, col, fix="choose another name")
                if not primed:
                    self.check_name(tname, st.lineno, col, "intermediate")
                if key in assigns:
                    what = "state" if primed else "intermediate"
                    raise self.err(f"{what} '{key}' is assigned twice (first on line {assigns[key][1].lineno})",
                                   st.lineno, col, fix="assign each name exactly once")
                assigns[key] = (tree, st)
        if not states:
            raise self.err("no `state` statement", first.lineno,
                           fix="declare the recurrent state after the cell name, e.g. `state h, c`")
        state_names = [s for s, _ in states]
        state_set = set(state_names)
        for key, (tree, st) in assigns.items():
            col = tree.children[0].children[0].column
            base = key.rstrip("'")
            if key.endswith("'") and base not in state_set:
                raise self.err(f"'{key}' is primed but '{base}' is not a state", st.lineno, col,
                               fix=f"declare it (`state {', '.join(state_names + [base])}`) or drop the prime")
            if not key.endswith("'"):
                if base in state_set:
                    raise self.err(f"assignment to the old value of state '{base}'", st.lineno, col,
                                   fix=f"the new value is written {base}' = ...")
        for s, col in states:
            if s + "'" not in assigns:
                raise self.err(f"state '{s}' is never updated", state_line, col, fix=f"add an equation {s}' = ...")
        if output is None:
            out_name = state_names[0]
        else:
            out_name, oline, ocol = output
            if out_name not in state_set:
                raise self.err(f"output '{out_name}' is not a state", oline, ocol,
                               fix=f"name one of the states: {', '.join(state_names)}")
        self._declared = declared if declared else None
        self._known = set(declared) | {k.rstrip("'") for k in assigns} | state_set | set(inputs)
        self._inputs = inputs
        self._sizes = sizes
        self._state_line = state_line
        self._state_sizes = self.check_state_sizes(sized_states, sizes, heads)
        self.check_inputs(inputs, sizes, state_set, declared, assigns)
        for pname, (line, col) in declared.items():
            if pname in state_set or pname in assigns:
                raise self.err(f"'{pname}' is declared as a parameter but is "
                               + ("a state" if pname in state_set else "an intermediate"), line, col,
                               fix="declare only free names (matrices and vectors that are learned)")
        cell = self.build(name, state_names, out_name, inits, assigns)
        cell.heads = heads or 1
        cell.sizes = tuple(sizes)
        cell.inputs = {n: v[0] for n, v in inputs.items()}
        return cell

    @staticmethod
    def target(tree: Tree) -> tuple[str, bool]:
        t = tree.children[0]
        return str(t.children[0]), len(t.children) > 1

    def build(self, name, states, output, inits, assigns) -> Cell:
        state_set = set(states)
        # dependency order (iterative DFS; cycles reported with their path)
        assigned = set(assigns)   # built once: a set per statement made parsing quadratic
        deps = {key: self.refs(tree, assigned, state_set) for key, (tree, _) in assigns.items()}
        order: list[str] = []
        mark: dict[str, int] = {}
        for root in assigns:
            if mark.get(root):
                continue
            stack = [(root, iter(deps[root]))]
            mark[root] = 1
            path = [root]
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    path.pop()
                    mark[node] = 2
                    order.append(node)
                    continue
                if mark.get(nxt) == 1:
                    cyc = path[path.index(nxt):] + [nxt]
                    st = assigns[nxt][1]
                    raise self.err(f"cycle: {' -> '.join(cyc)}", st.lineno,
                                   assigns[nxt][0].children[0].children[0].column,
                                   fix="a value cannot depend on itself; use the old state value (no prime) "
                                       "to refer to t-1")
                if not mark.get(nxt):
                    mark[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, iter(deps[nxt])))

        params: dict[str, tuple[str, int, int]] = {}   # name -> (kind, line, col) of first use
        values: dict[str, Node] = {}
        names: dict[Node, str] = {}
        equations = []
        for key in order:
            tree, st = assigns[key]
            node = self.expr(tree.children[1], st, values, state_set, params)
            # `h' = x` or `a = x`: states and intermediates have hidden size H, x has size I
            self.no_bare_x(node, st, tree.children[1])
            if not self.is_vector(node):
                raise self.err(f"'{key}' is a constant; " + ("a state" if key.endswith("'") else "an intermediate")
                               + " must depend on x, a state or a parameter", st.lineno,
                               tree.children[0].children[0].column,
                               fix="use a number directly where it is needed" if not key.endswith("'")
                               else "a state update must involve the input, a state or a parameter")
            values[key] = node
            names.setdefault(node, key)
            equations.append((key, node))
        self.unused(assigns, deps, params)
        self.unused_inputs(params)
        self._param_lines = {p: (line, col) for p, (_, line, col) in params.items()}
        param_sizes, _ = self.infer_sizes(order, values, assigns, self._state_sizes)
        # parameters in order of first appearance in the source; a "V:u" kind is a V multiplying input u
        pkinds = {p: k for p, (k, _, _) in sorted(params.items(), key=lambda kv: kv[1][1:])}
        param_inputs = {p: k[2:] for p, k in pkinds.items() if k.startswith("V:")}
        pkinds = {p: "V" if p in param_inputs else k for p, k in pkinds.items()}
        init_vals = {}
        for pname, (value, st) in inits.items():
            if pname not in pkinds:
                what = ("the input" if pname == "x" else "a state" if pname in state_set
                        else "an extra input" if pname in self._inputs
                        else "an intermediate" if pname in values else "not used in any equation")
                raise self.err(f"`init` names '{pname}', which is not a parameter of this cell ({what})", st.lineno,
                               st.col, fix=f"parameters are: {', '.join(sorted(pkinds)) or '(none)'}")
            if pkinds[pname] == "b" and value in ("xavier", "orthogonal"):
                raise self.err(f"'{value}' initialisation needs a matrix, and '{pname}' is a vector", st.lineno,
                               st.col, fix="use a number, zeros, ones, uniform or normal")
            init_vals[pname] = value
        new = {s: values[s + "'"] for s in states}
        return Cell(name=name, states=tuple(states), output=output, new=new, params=pkinds, inits=init_vals,
                    equations=equations, names=names, source=self.text, filename=self.filename,
                    param_inputs=param_inputs, state_sizes=dict(self._state_sizes),
                    param_sizes={p: param_sizes.get(p, ("H",)) for p in pkinds})

    def unused(self, assigns, deps, params) -> None:
        """The typo rules: an intermediate never used, or a declared parameter never used, is an error
        (a misspelt use leaves the real name unused and quietly becomes a learned parameter)."""
        used = {r for refs in deps.values() for r in refs}
        for key, (tree, st) in assigns.items():
            if key.endswith("'") or key in used:
                continue
            close = [p for p in params if did_you_mean(p, [key])]
            hint = (f"; '{close[0]}' on line {params[close[0]][1]} is taken as a learned parameter: a misspelling "
                    f"of '{key}'?" if close else "")
            raise self.err(f"intermediate '{key}' is defined but never used{hint}", st.lineno,
                           tree.children[0].children[0].column,
                           fix=(f"write '{key}' where '{close[0]}' is written" if close
                                else "use it in an equation or delete the line"))
        for pname, (line, col) in (self._declared or {}).items():
            if pname not in params:
                raise self.err(f"parameter '{pname}' is declared but never used", line, col,
                               fix="use it in an equation or remove it from the `param` line")

    @staticmethod
    def refs(tree: Tree, assigned: set, state_set: set) -> list[str]:
        out = []
        for sub in tree.children[1].iter_subtrees() if isinstance(tree.children[1], Tree) else []:
            if sub.data == "name":
                n = str(sub.children[0]) + ("'" if len(sub.children) > 1 else "")
                if n in assigned and n not in out:
                    out.append(n)
        return out
