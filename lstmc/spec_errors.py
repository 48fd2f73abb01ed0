"""The diagnostics of the cell-language parser: `SpecError` (file, line, column, the line with a
caret, a fix), the hints for misspellings and stray characters, and the parser's error builders as
a mixin (`Diagnostics`), so that lstmc/spec.py holds the grammar walk alone."""

from __future__ import annotations

import difflib
import keyword
import re

from lark import Token, Tree

from .ops import FUNCTIONS

DIRECTIVES = ("cell", "state", "output", "init", "param", "heads", "input", "size")
FUNCS_TEXT = ", ".join(FUNCTIONS)

_SHOW = 60   # an error message shows at most 2 * _SHOW characters of the offending line


class SpecError(ValueError):
    """A problem in a .cell spec, located at `line`/`col` (1-based) of `filename`."""

    def __init__(self, problem: str, *, filename: str = "<string>", line: int = 0, col: int = 0,
                 source_line: str = "", fix: str = ""):
        self.problem = problem
        self.filename = filename
        self.line = line
        self.col = col
        self.fix = fix
        parts = [f"{filename}:{line}:{col}: error: {problem}"]
        if source_line:
            src = source_line.rstrip("\r\n")
            at = max(col - 1, 0)                 # 0-based offset of the caret in `src`
            if len(src) > 2 * _SHOW:             # show a window of a long line around the caret
                start = max(0, min(at - _SHOW, len(src) - 2 * _SHOW))
                end = start + 2 * _SHOW
                src = ("..." if start else "") + src[start:end] + ("..." if end < len(src) else "")
                at = at - start + (3 if start else 0)
            # keep tabs in the caret's indent so the caret lines up under tab-indented text
            pad = "".join("\t" if c == "\t" else " " for c in src[:at]) + " " * max(at - len(src), 0)
            parts.append("    " + src)
            parts.append("    " + pad + "^")
        if fix:
            parts.append(f"  fix: {fix}")
        super().__init__("\n".join(parts))


def did_you_mean(word: str, choices) -> str:
    """' (did you mean `state`?)' when `word` looks like a misspelling of one of `choices`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""


def with_article(word: str) -> str:
    """`word` with its indefinite article: 'an intermediate', 'a state'."""
    return ("an " if word[:1] in "aeiou" else "a ") + word

# what an unexpected character most likely means, and how to fix it
CHAR_HINTS = {
    ".": ("attribute access and malformed numbers are not part of the cell language",
          "write numbers like 0.5 or 1e-3; names cannot contain '.'"),
    "[": ("subscripts are not part of the cell language", "give each vector its own name"),
    "]": ("subscripts are not part of the cell language", "give each vector its own name"),
    '"': ("strings are not part of the cell language", "remove the quotes"),
    ":": ("lambdas, slices and annotations are not part of the cell language", "write the expression directly"),
    "{": ("dicts and sets are not part of the cell language", "write the expression directly"),
    "}": ("dicts and sets are not part of the cell language", "write the expression directly"),
    "%": ("the % operator is not part of the cell language", "use + - * / @ and the functions"),
    "^": ("the ^ operator is not part of the cell language", "write powers as products, e.g. v * v"),
    ";": ("';' is not part of the cell language", "put each statement on its own line"),
    "\\": ("line continuations are not part of the cell language", "write each statement on one line"),
}


class Diagnostics:
    """Error builders of the parser; needs `self.lines` and `self.filename`."""

    def err(self, problem: str, lineno: int, col: int = 1, fix: str = "") -> SpecError:
        src = self.lines[lineno - 1] if 1 <= lineno <= len(self.lines) else ""
        return SpecError(problem, filename=self.filename, line=lineno, col=max(col, 1), source_line=src, fix=fix)

    def python_keyword(self, line: str, lineno: int, upto: int):
        """Raise if a Python keyword (`if`, `lambda`, `not`...) appears before column `upto`."""
        for m in re.finditer(r"(?<![A-Za-z0-9_.])[A-Za-z_][A-Za-z0-9_]*", line[: max(upto - 1, 0)]):
            if keyword.iskeyword(m.group()):
                raise self.err(f"'{m.group()}' is Python, not part of the cell language", lineno, m.start() + 1,
                               fix=f"write the math with + - * / @ and the functions {FUNCS_TEXT}") from None

    def not_an_equation(self, line: str, lineno: int) -> SpecError:
        return self.err("this line is neither a directive nor an equation (it has no '=')", lineno,
                        len(line) - len(line.lstrip()) + 1,
                        fix=f"directives are {', '.join(DIRECTIVES)}; equations look like NAME = EXPR")

    def early_end(self, line: str, lineno: int, opened: list[int]) -> SpecError:
        """The error for an equation that stops before its expression is complete."""
        text = line.rstrip()
        if "=" not in line:
            return self.not_an_equation(line, lineno)
        if text.endswith("="):
            return self.err("nothing after '='", lineno, len(text), fix="write the expression: NAME = EXPR")
        if text and text[-1] in "+-*/@,(":
            return self.err(f"the equation ends with '{text[-1]}'", lineno, len(text),
                            fix="complete the expression after it, or remove it")
        if opened:
            return self.err("this '(' is never closed", lineno, opened[-1], fix="add the missing ')'")
        return self.err("the equation ends too early", lineno, len(text) + 1,
                        fix="complete the expression (unbalanced parentheses or a trailing operator?)")

    def bad_matmul_left(self, left_tree, lname, st, state_set, values):
        """Raise the error for `L @ v` whose L is not a parameter name, saying what L is."""
        col = self.col_of(left_tree, st)
        fix = "write M @ v with M a parameter, e.g. W_i @ x or U_i @ h"
        d = left_tree.data if isinstance(left_tree, Tree) else ""
        last = left_tree.children[-1] if d in ("mul", "div", "neg", "pos") else None
        if d in ("mul", "div", "neg", "pos") and isinstance(last, Tree) and last.data == "name":
            # `a * W @ v` is (a * W) @ v and `-W @ v` is (-W) @ v, as in Python
            op = {"mul": "*", "div": "/", "neg": "-", "pos": "+"}[d]
            m = str(last.children[0])
            example = f"a {op} ({m} @ v)" if d in ("mul", "div") else f"{op}({m} @ v)"
            raise self.err(f"`{op}` binds at least as tightly as `@`, so the left side of this @ is not just "
                           f"'{m}'", st.lineno, col, fix=f"add parentheses: {example}")
        if d == "name" and len(left_tree.children) > 1:
            what = f"the new state {left_tree.children[0]}'"
        elif d == "number":
            what = "a number"
        elif d == "call":
            what = "a function call"
        elif lname == "x":
            what = "the input x"
        elif lname in self._inputs:
            what = f"the input '{lname}' (declared on line {self._inputs[lname][1]})"
        elif lname in state_set:
            what = f"the state '{lname}'"
        elif lname in values:
            what = f"the intermediate '{lname}'"
        elif lname in FUNCTIONS:
            what = f"the function '{lname}'"
        else:
            what = "an expression"
        raise self.err(f"the left side of @ must be a parameter name (a weight matrix), not {what}", st.lineno, col,
                       fix=fix)

    def no_bare_x(self, node, st, tree):
        """Reject x, or an extra input of a size other than H (`input u[K]`), used other than as `M @ x`
        (`tree` locates it; its column is only looked up on error). `input dt` (one number per row,
        broadcast over H) and `input keep[H]` are read element-wise like any hidden-size value."""
        if node is None or node.op != "input":
            return
        if node.attr is None:
            raise self.err("x (size I) can only be used directly as `M @ x`", st.lineno, self.col_of(tree, st),
                           fix="multiply it by an input weight matrix first, e.g. W @ x")
        size = self._inputs[node.attr][0]
        if size not in (None, "H"):
            raise self.err(f"the input '{node.attr}' has size {size}, not H, so it can only be used directly as "
                           f"`M @ {node.attr}`", st.lineno, self.col_of(tree, st),
                           fix=f"multiply it by a weight matrix first, e.g. V @ {node.attr} (V becomes [H, {size}]), "
                               f"or declare it `input {node.attr}[H]` to use it element-wise")

    @staticmethod
    def col_of(t, st) -> int:
        if isinstance(t, Token):
            return t.column or 1
        for sub in t.iter_subtrees_topdown():
            for c in sub.children:
                if isinstance(c, Token) and c.column:
                    return c.column
        return 1


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def sized_items(parser, rest: str, lineno: int, line: str, kind: str, item_fix: str, size_fix) -> list[tuple]:
    """The comma-separated items `name` or `name[SIZE]` of a `state` or `input` line: (name, col,
    size or None, size's col) per item, each name checked by `parser.check_name`. A malformed item
    or a size that is not a name is a SpecError at its column; `size_fix(name)` says how to write one."""
    out = []
    pos = len(line) - len(rest)
    for item in rest.split(","):
        col = pos + (len(item) - len(item.lstrip())) + 1
        m = re.fullmatch(rf"\s*({_NAME})\s*(?:\[\s*([^\]]*?)\s*\])?\s*", item)
        if not m:
            what = f"`{item.strip()}` is not a valid {kind} name" if item.strip() else f"missing {kind} name"
            raise parser.err(what, lineno, col, fix=item_fix)
        name, size = m.group(1), m.group(2)
        if kind == "input" and name == "x":
            raise parser.err("'x' is the built-in step input and needs no `input` line", lineno, col,
                             fix="remove it; extra inputs take other names: `input dt`, `input keep[H]`")
        parser.check_name(name, lineno, col, kind)
        scol = pos + item.index("[") + 2 if size is not None else col
        if size is not None and not re.fullmatch(_NAME, size):
            raise parser.err(f"the size of {kind} '{name}' must be a name, got `{size}`", lineno, scol,
                             fix=size_fix(name))
        out.append((name, col, size, scol))
        pos += len(item) + 1
    return out

