"""The cell-language parser (lstmc/spec.py; the language is documented in README.md): bad specs fail with a located, helpful
`SpecError`; good specs (all built-ins and some edge cases) parse to the expected `Cell`."""

from __future__ import annotations

import time

import pytest

import lstmc
from lstmc import SpecError, ir
from lstmc.spec import INIT_KINDS, MAX_NESTING

HEAD = "cell c\nstate h\n"          # lines 1-2; the equation under test is on line 3


def _cell(*equations: str, head: str = HEAD) -> str:
    return head + "".join(e + "\n" for e in equations)


# --------------------------------------------------------------------------------------- bad specs
#
# (id, source, line, col or None when the column is not meaningful, phrase the problem must contain)

BAD = [
    # syntax
    ("trailing-operator", _cell("h' = tanh(W @ x) +"), 3, 18, "ends with '+'"),
    ("trailing-matmul", _cell("h' = W @"), 3, 8, "ends with '@'"),
    ("nothing-after-equals", _cell("h' ="), 3, 4, "nothing after '='"),
    ("unclosed-paren", _cell("h' = tanh(W @ x + U @ h"), 3, 10, "never closed"),
    ("unclosed-inner-paren", _cell("h' = tanh((W @ x) + (U @ h)"), 3, 10, "never closed"),
    ("unmatched-close-paren", _cell("h' = tanh(W @ x))"), 3, 17, "unmatched ')'"),
    ("empty-parens", _cell("h' = W @ x + ()"), 3, 15, "unexpected ')'"),
    ("double-operator", _cell("h' = W @ x * / h"), 3, 14, "unexpected '/'"),
    ("missing-operator", _cell("h' = 2 (W @ x)"), 3, 8, "missing operator"),
    ("juxtaposed-names", _cell("h' = W @ x h"), 3, 12, "missing operator"),
    ("number-then-name", _cell("h' = 2h + W @ x"), 3, 6, "'2h' is neither a number nor a name"),
    ("bad-exponent", _cell("h' = 1e + W @ x"), 3, 6, "'1e' is neither a number nor a name"),
    ("two-dots", _cell("h' = 1.2.3 * (W @ x)"), 3, 6, "'1.2.3' is neither"),
    ("double-equals", _cell("h' == W @ x"), 3, 5, "unexpected '='"),
    ("chained-assign", _cell("a = b = W @ x", "h' = a"), 3, 7, "unexpected '='"),
    ("no-target", _cell("= W @ x"), 3, 1, "unexpected '='"),
    ("expression-target", _cell("a + b = W @ x"), 3, 3, "unexpected '+'"),
    ("no-equals", _cell("tanh(W @ x)"), 3, 1, "neither a directive nor an equation"),
    ("bare-name-line", _cell("h'"), 3, 1, "neither a directive nor an equation"),
    ("double-prime", _cell("h'' = W @ x"), 3, 3, "misplaced prime"),
    ("semicolon", _cell("a = W @ x; h' = a"), 3, 10, "';'"),
    ("backslash", _cell("h' = W @ x + \\"), 3, 14, "line continuations"),
    ("percent", _cell("h' = W @ x % 2"), 3, 12, "%"),
    ("caret-power", _cell("h' = h ^ 2"), 3, 8, "^"),
    ("too-many-signs", _cell("h' = " + "-" * (MAX_NESTING + 1) + "h"), 3, 6, "consecutive signs"),
    ("unicode-minus", _cell("h' = \u2212h + W @ x"), 3, 6, "non-ASCII character"),
    ("nbsp", _cell("h'\xa0= W @ x"), 3, 3, "NO-BREAK SPACE"),
    ("non-ascii-digit", _cell("h' = \u0661 * (W @ x)"), 3, 6, "non-ASCII"),
    ("non-ascii-name", _cell("\u03c3 = W @ x", "h' = \u03c3"), 3, 1, "non-ASCII"),
    ("nul-byte", _cell("h' = W @ x\x00"), 3, None, "NUL"),
    ("huge-number", _cell("h' = 1e999 * (W @ x)"), 3, 6, "too large"),
    # names and functions
    ("unknown-function", _cell("h' = sigmod(W @ x)"), 3, 6, "unknown function 'sigmod' (did you mean `sigmoid`?)"),
    ("unknown-function-2", _cell("h' = softmax(W @ x)"), 3, 6, "unknown function 'softmax'"),
    ("call-a-state", _cell("h' = h(W @ x)"), 3, 6, "'h' is not a function"),
    ("call-the-input", _cell("h' = x(h)"), 3, 6, "'x' is not a function"),
    ("function-without-call", _cell("h' = tanh + W @ x"), 3, 6, "used without arguments"),
    ("function-two-args", _cell("h' = tanh(W @ x, h)"), 3, 6, "exactly one argument, got 2"),
    ("function-no-args", _cell("h' = tanh()"), 3, 6, "exactly one argument, got 0"),
    ("keyword-argument", _cell("h' = sigmoid(x=1)"), 3, 14, "keyword arguments"),
    ("keyword-argument-2", _cell("h' = tanh(W @ x, approximate=1)"), 3, 18, "keyword arguments"),
    # directives
    ("unknown-directive", _cell("inputs x", "h' = W @ x"), 3, 1, "unknown directive 'inputs'"),
    ("input-x", _cell("input x", "h' = W @ x"), 3, 7, "'x' is the built-in step input"),
    ("misspelt-directive", "cell c\nstat h\nh' = W @ x\n", 2, 1, "did you mean `state`?"),
    ("missing-cell", "state h\nh' = W @ x\n", 1, 1, "first statement must be `cell NAME`"),
    ("cell-not-first", "state h\ncell c\nh' = W @ x\n", 1, 1, "first statement must be `cell NAME`"),
    ("cell-without-name", "cell\nstate h\nh' = W @ x\n", 1, 5, "missing cell name"),
    ("cell-two-names", "cell a, b\nstate h\nh' = W @ x\n", 1, None, "exactly one name"),
    ("cell-bad-name", "cell my-cell\nstate h\nh' = W @ x\n", 1, 6, "not a valid cell name"),
    ("second-cell", _cell("cell d", "h' = W @ x"), 3, None, "a second `cell`"),
    ("missing-state", "cell c\nh' = W @ x\n", 1, None, "no `state` statement"),
    ("second-state", _cell("state c", "h' = W @ x"), 3, None, "a second `state`"),
    ("state-listed-twice", "cell c\nstate h, h\nh' = W @ x\n", 2, 10, "listed twice"),
    ("state-trailing-comma", "cell c\nstate h,\nh' = W @ x\n", 2, 9, "missing state name"),
    ("state-bad-name", "cell c\nstate h, 2c\nh' = W @ x\n", 2, 10, "not a valid state name"),
    ("empty-file", "", 1, 1, "the spec is empty"),
    ("only-comments", "# nothing here\n\n   # still nothing\n", 1, 1, "the spec is empty"),
    ("whitespace-only", "  \n\t\n", 1, 1, "the spec is empty"),
    ("output-not-a-state", _cell("output y", "h' = W @ x"), 3, 8, "output 'y' is not a state"),
    ("output-intermediate", _cell("output a", "a = W @ x", "h' = a"), 3, 8, "output 'a' is not a state"),
    ("output-two-names", "cell c\nstate h, c\noutput h, c\nh' = W @ x\nc' = h\n", 3, None, "exactly one state"),
    ("second-output", _cell("output h", "output h", "h' = W @ x"), 4, None, "a second `output`"),
    ("init-not-a-parameter", _cell("init q = 1", "h' = W @ x"), 3, 6, "'q', which is not a parameter"),
    ("init-a-state", _cell("init h = 1", "h' = W @ x"), 3, 6, "not a parameter of this cell (a state)"),
    ("init-an-intermediate", _cell("init a = 1", "a = W @ x", "h' = a"), 3, 6, "(an intermediate)"),
    ("init-the-input", _cell("init x = 1", "h' = W @ x"), 3, 6, "(the input)"),
    ("init-bad-kind", _cell("init W = glorot", "h' = W @ x"), 3, 10, "unknown initialisation 'glorot'"),
    ("init-python-number", _cell("init b = 1_000", "h' = W @ x + b"), 3, 10, "unknown initialisation '1_000'"),
    ("init-nan", _cell("init b = nan", "h' = W @ x + b"), 3, 10, "must be finite"),
    ("init-inf", _cell("init b = -inf", "h' = W @ x + b"), 3, 10, "must be finite"),
    ("init-overflow", _cell("init b = 1e400", "h' = W @ x + b"), 3, 10, "must be finite"),
    ("init-malformed", _cell("init b 1", "h' = W @ x + b"), 3, None, "malformed `init`"),
    ("init-two-values", _cell("init b = 1 2", "h' = W @ x + b"), 3, None, "malformed `init`"),
    ("init-twice", _cell("init b = 1", "init b = 2", "h' = W @ x + b"), 4, 6, "initialised twice"),
    ("xavier-vector", _cell("init b = xavier", "h' = W @ x + b"), 3, 6, "'xavier' initialisation needs a matrix"),
    ("orthogonal-vector", _cell("init b = orthogonal", "h' = W @ x + b"), 3, 6,
     "'orthogonal' initialisation needs a matrix"),
    # assignments
    ("state-never-updated", "cell c\nstate h, c\nh' = tanh(W @ x + c)\n", 2, 10, "state 'c' is never updated"),
    ("state-updated-twice", _cell("h' = W @ x", "h' = U @ h"), 4, 1, "state 'h'' is assigned twice (first on line 3)"),
    ("intermediate-twice", _cell("a = W @ x", "a = U @ h", "h' = a"), 4, 1,
     "intermediate 'a' is assigned twice (first on line 3)"),
    ("assign-to-x", _cell("x = W @ h", "h' = U @ h"), 3, 1, "cannot assign to the input x"),
    ("assign-to-x-primed", _cell("x' = W @ h", "h' = U @ h"), 3, 1, "cannot assign to the input x"),
    ("assign-unprimed-state", _cell("h = W @ x"), 3, 1, "assignment to the old value of state 'h'"),
    ("primed-non-state", _cell("a' = W @ x", "h' = U @ h"), 3, 1, "'a'' is primed but 'a' is not a state"),
    ("primed-non-state-use", _cell("a = W @ x", "h' = a' + h"), 4, 6, "'a'' is primed but 'a' is not a state"),
    ("primed-x", _cell("h' = W @ x' + h"), 3, 10, "x has no primed value"),
    ("cycle", _cell("a = b + 1", "b = a * 2", "h' = a + W @ x"), 3, 1, "cycle: a -> b -> a"),
    ("self-cycle", _cell("a = a + W @ x", "h' = a"), 3, 1, "cycle: a -> a"),
    ("state-self-cycle", _cell("h' = U @ h'"), 3, 1, "cycle: h' -> h'"),
    ("constant-state", _cell("h' = 1"), 3, 1, "'h'' is a constant"),
    ("constant-intermediate", _cell("a = 2 * 3", "h' = a * h"), 3, 1, "'a' is a constant"),
    # @ and shapes
    ("matmul-left-sum", _cell("h' = (W + V) @ x"), 3, 7, "left side of @ must be a parameter name"),
    ("matmul-left-state", _cell("h' = h @ x"), 3, 6, "not the state 'h'"),
    ("matmul-left-input", _cell("h' = x @ W"), 3, 6, "not the input x"),
    ("matmul-left-intermediate", _cell("a = W @ x", "h' = a @ h"), 4, 6, "not the intermediate 'a'"),
    ("matmul-left-new-state", "cell c\nstate h, c\nc' = W @ x\nh' = c' @ h\n", 4, 6, "not the new state c'"),
    ("matmul-left-function", _cell("h' = tanh @ h"), 3, 6, "not the function 'tanh'"),
    ("matmul-left-number", _cell("h' = 2 @ x"), 3, 6, "not a number"),
    ("matmul-left-call", _cell("h' = tanh(W) @ x"), 3, 6, "not a function call"),
    ("matmul-chain", _cell("h' = V @ W @ x"), 3, 6, "left side of @ must be a parameter name"),
    ("matmul-after-product", _cell("h' = h * U @ h"), 3, 6, "`*` binds at least as tightly as `@`"),
    ("matmul-after-minus", _cell("h' = -W @ x"), 3, 7, "`-` binds at least as tightly as `@`"),
    ("matmul-right-number", _cell("h' = W @ 2 + h"), 3, 10, "right side of @ must be a vector"),
    ("matmul-right-constant", _cell("h' = W @ (1 + 2) + h"), 3, 11, "right side of @ must be a vector"),
    ("matrix-and-vector", _cell("h' = W @ x + W"), 3, None, "parameter 'W' is used as"),
    ("matrix-and-vector-2", _cell("a = b * h", "h' = b @ x + a"), None, None, "parameter 'b' is used as"),
    ("W-and-U", _cell("h' = M @ x + M @ h"), 3, None, "a matrix applied to x ([H, I])"),
    ("W-and-U-two-lines", _cell("a = M @ x", "h' = M @ h + a"), None, None, "a matrix applied to a hidden vector"),
    # x is only ever the operand of M @ x
    ("bare-x-sum", _cell("h' = x + h"), 3, 6, "x (size I) can only be used directly as `M @ x`"),
    ("bare-x-call", _cell("h' = tanh(x)"), 3, 11, "can only be used directly as `M @ x`"),
    ("bare-x-negated", _cell("h' = W @ -x"), 3, 11, "can only be used directly as `M @ x`"),
    ("bare-x-in-matmul-sum", _cell("h' = W @ (x + h)"), 3, 11, "can only be used directly as `M @ x`"),
    ("bare-x-whole-rhs", _cell("h' = x"), 3, 6, "can only be used directly as `M @ x`"),
    ("bare-x-alias", _cell("a = x", "h' = W @ a"), 3, 5, "can only be used directly as `M @ x`"),
    ("bare-x-parenthesised", _cell("a = (x)", "h' = W @ a"), 3, 6, "can only be used directly as `M @ x`"),
    # Python is not the cell language
    ("attribute", _cell("h' = np.tanh(W @ x)"), 3, 8, "attribute access"),
    ("attribute-2", _cell("h' = a.b + W @ x"), 3, 7, "attribute access"),
    ("subscript", _cell("h' = h[0] + W @ x"), 3, 7, "subscripts"),
    ("call-non-function", _cell("h' = h(x)"), 3, 6, "'h' is not a function"),
    ("call-parameter", _cell("h' = W @ x + b(h)"), 3, 14, "unknown function 'b'"),
    ("lambda", _cell("h' = lambda: h"), 3, 6, "'lambda' is Python"),
    ("lambda-arg", _cell("h' = (lambda v: v)(h)"), 3, 7, "'lambda' is Python"),
    ("keyword-arg", _cell("h' = sigmoid(x=1)"), 3, 14, "keyword arguments"),
    ("double-quoted-string", _cell('h\' = "h"'), 3, 6, "strings are not part of the cell language"),
    ("single-quoted-string", _cell("h' = 'h'"), 3, 6, "misplaced prime"),
    ("power", _cell("h' = h ** 2"), 3, 8, "the ** operator"),
    ("power-no-spaces", _cell("h' = W @ x + h**2"), 3, 15, "the ** operator"),
    ("if-expression", _cell("h' = h if h else W @ x"), 3, 8, "'if' is Python"),
    ("if-statement", _cell("if h: h' = W @ x"), 3, 1, "'if' is Python"),
    ("not", _cell("h' = not h"), 3, 6, "'not' is Python"),
    ("and", _cell("h' = h and W @ x"), 3, 8, "'and' is Python"),
    ("import", _cell("import os", "h' = W @ x"), 3, 1, "'import' is Python"),
    ("from-import", _cell("from os import system", "h' = W @ x"), 3, 1, "'from' is Python"),
    ("def", _cell("def f(v): return v", "h' = W @ x"), 3, 1, "'def' is Python"),
    ("return", _cell("return h"), 3, 1, "'return' is Python"),
    ("dunder-call", _cell("h' = __import__(W @ x)"), 3, 6, "unknown function '__import__'"),
    ("list", _cell("h' = [h]"), 3, 6, "subscripts"),
    ("dict", _cell("h' = {h}"), 3, 6, "dicts and sets"),
    ("walrus", _cell("h' = (a := h)"), 3, 9, "lambdas, slices"),
    ("comparison", _cell("h' = h < W @ x"), 3, 8, "a comparison (<) can only be the first argument of where"),
    # the second edition's constructs and typo rules (README, "The cell language")
    ("comparison in arithmetic", _cell("h' = (h >= W @ x) * h"), 3, 9, "can only be the first argument of where"),
    ("comparison in a call", _cell("h' = tanh(h > W @ x)"), 3, 13, "can only be the first argument of where"),
    ("comparison as where's branch", _cell("h' = where(h > 0, h < 1, W @ x)"), 3, 21, "first argument of where"),
    ("where without a comparison", _cell("h' = where(W @ x, h, 1 - h)"), 3, 12, "must be a comparison"),
    ("where with two arguments", _cell("h' = where(h > 0, W @ x)"), 3, 6, "takes exactly 3 arguments, got 2"),
    ("max with one argument", _cell("h' = max(W @ x + h)"), 3, 6, "takes exactly 2 arguments, got 1"),
    ("logsigmoid with two", _cell("h' = logsigmoid(h, W @ x)"), 3, 6, "takes exactly one argument, got 2"),
    ("mean with two arguments", _cell("h' = mean(h, W @ x)"), 3, 6, "mean() takes exactly one argument, got 2"),
    ("layernorm's eps is a state", _cell("h' = layernorm(W @ x, h)"), 3, 23, "eps must be a positive number"),
    ("layernorm's eps is negative", _cell("h' = layernorm(W @ x, -1)"), 3, 24, "eps must be a positive number"),
    ("mean of a constant", _cell("h' = h * mean(2)"), 3, 15, "mean() of a constant"),
    ("mean of x", _cell("h' = tanh(mean(x) + U @ h)"), 3, 16, "can only be used directly as `M @ x`"),
    ("a reduction's name", _cell("mean = tanh(W @ x)", "h' = mean"), 3, 1, "'mean' is reserved (a function)"),
    ("misspelt reduction", _cell("h' = tanh(U @ h + maen(W @ x))"), 3, 19, "did you mean `mean`?"),
    ("heads 0", "cell t\nheads 0\nstate h\nh' = tanh(W @ x + U @ h)\n", 2, 7, "`heads` takes a positive whole number"),
    ("heads two", "cell t\nheads two\nstate h\nh' = tanh(W @ x + U @ h)\n", 2, 7, "got `two`"),
    ("a second heads", "cell t\nheads 2\nheads 4\nstate h\nh' = tanh(W @ x + U @ h)\n", 3, None,
     "a second `heads` statement"),
    ("misspelt intermediate", "cell t\nstate h\ncand = tanh(W @ x)\nh' = h * cnad\n", 3, 1,
     "'cnad' on line 4 is taken as a learned parameter"),
    ("unused intermediate", "cell t\nstate h\nspare = tanh(W @ x)\nh' = tanh(U @ h)\n", 3, 1,
     "intermediate 'spare' is defined but never used"),
    ("undeclared parameter", "cell t\nstate h\nparam W, U\nh' = tanh(W @ x + U @ h + b)\n", 4, 27,
     "'b' is not declared"),
    ("declared, unused parameter", "cell t\nstate h\nparam W, U, q\nh' = tanh(W @ x + U @ h)\n", 3, 13,
     "parameter 'q' is declared but never used"),
    ("parameter declared twice", "cell t\nstate h\nparam W\nparam W\nh' = tanh(W @ x)\n", 4, 7,
     "declared twice"),
    ("a state declared as a parameter", "cell t\nstate h\nparam W, h\nh' = tanh(W @ x + h)\n", 3, 10,
     "declared as a parameter but is a state"),
    ("bitwise", _cell("h' = h | W @ x"), 3, 8, "unexpected character '|'"),
    ("backtick", _cell("h' = `h`"), 3, 6, "unexpected character '`'"),
    ("dollar", _cell("h' = $h"), 3, 6, "unexpected character '$'"),
    # reserved names
    ("keyword-intermediate", _cell("class = W @ x", "h' = class"), 3, 1,
     "'class' is reserved (a Python keyword) and cannot name an intermediate"),
    ("keyword-parameter", _cell("h' = W @ x + lambda"), 3, 14, "'lambda' is reserved (a Python keyword)"),
    ("keyword-matrix", _cell("h' = None @ x"), 3, 6, "'None' is reserved (a Python keyword)"),
    ("keyword-state", "cell c\nstate h, def\nh' = W @ x\ndef' = h\n", 2, 10, "'def' is reserved"),
    ("keyword-cell", "cell class\nstate h\nh' = W @ x\n", 1, 6, "'class' is reserved"),
    ("x-as-state", "cell c\nstate x\nx' = W @ h\n", 2, 7, "'x' is reserved (the step input) and cannot name a state"),
    ("function-intermediate", _cell("tanh = W @ x", "h' = tanh"), 3, 1,
     "'tanh' is reserved (a function) and cannot name an intermediate"),
    ("function-state", "cell c\nstate relu\nrelu' = W @ x\n", 2, 7, "'relu' is reserved (a function)"),
    ("function-parameter", _cell("h' = W @ x + relu"), 3, 14, "function 'relu' used without arguments"),
    ("directive-intermediate", _cell("state = W @ x", "h' = state"), 3, 1, "'state' is reserved (a directive)"),
    ("directive-intermediate-2", _cell("init = W @ x", "h' = init"), 3, 1, "'init' is reserved (a directive)"),
    ("directive-assign-without-state", "cell c\nstate = 3\n", 2, 1, "'state' is reserved (a directive)"),
]


@pytest.mark.parametrize("src, line, col, phrase", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_spec(src, line, col, phrase):
    with pytest.raises(SpecError) as info:
        lstmc.parse(src, filename="bad.cell")
    e = info.value
    assert phrase in e.problem, f"{phrase!r} not in {e.problem!r}"
    if line is not None:
        assert e.line == line, str(e)
    if col is not None:
        assert e.col == col, str(e)
    # every error is located inside the text and says how to fix it
    assert 1 <= e.line <= max(src.count("\n") + 1, 1)
    assert e.col >= 1
    assert e.fix, f"no fix for {e.problem!r}"
    assert e.filename == "bad.cell"
    assert str(e).startswith(f"bad.cell:{e.line}:{e.col}: error: {e.problem}")


def test_bad_ids_are_unique():
    ids = [c[0] for c in BAD]
    assert len(ids) == len(set(ids))


def test_message_format():
    src = _cell("i = sigmoid(W_i @ x)", "h' = tanh(W @ x) + sigmod(i)")
    with pytest.raises(SpecError) as info:
        lstmc.parse(src, filename="my.cell")
    e = info.value
    lines = str(e).split("\n")
    assert lines[0] == "my.cell:4:20: error: unknown function 'sigmod' (did you mean `sigmoid`?)"
    assert lines[1] == "    h' = tanh(W @ x) + sigmod(i)"
    assert lines[2] == "    " + " " * 19 + "^"
    assert lines[2].index("^") == lines[1].index("sigmod")
    assert lines[3].startswith("  fix: ") and "sigmoid" in lines[3]
    assert e.line == 4 and e.col == 20 and e.fix and e.problem.startswith("unknown function")
    assert isinstance(e, ValueError)         # SpecError is a ValueError


def test_message_caret_under_tabs():
    src = _cell("\th' =\ttanh(W @ x) +\tsigmod(h)")
    with pytest.raises(SpecError) as info:
        lstmc.parse(src, filename="tabs.cell")
    lines = str(info.value).split("\n")
    src_line, caret = lines[1], lines[2]
    # the caret's indent keeps the tabs, so it lines up under the `s` of sigmod in a terminal
    assert caret.index("^") == src_line.index("sigmod")
    assert caret.expandtabs().index("^") == src_line.expandtabs().index("sigmod")


def test_message_default_filename_and_crlf():
    with pytest.raises(SpecError) as info:
        lstmc.parse("cell c\r\nstate h\r\nh' = sigmod(W @ x)\r\n")
    e = info.value
    assert str(e).startswith("<string>:3:6: error:")
    assert "\r" not in str(e)


def test_message_shows_a_window_of_long_lines():
    src = _cell("h' = " + "h + " * 500 + "sigmod(h) + " + "h + " * 400 + "h")
    with pytest.raises(SpecError) as info:
        lstmc.parse(src)
    e = info.value
    assert e.line == 3 and e.col == 5 + 4 * 500 + 1
    lines = str(e).split("\n")
    assert len(lines[1]) < 200 and lines[1].startswith("    ...") and lines[1].endswith("...")
    assert lines[1][lines[2].index("^"):].startswith("sigmod(h)")


def test_spec_error_fields():
    e = SpecError("bad thing", filename="f.cell", line=2, col=3, source_line="abcdef", fix="do better")
    assert (e.problem, e.filename, e.line, e.col, e.fix) == ("bad thing", "f.cell", 2, 3, "do better")
    assert str(e) == "f.cell:2:3: error: bad thing\n    abcdef\n      ^\n  fix: do better"


@pytest.mark.parametrize("value", [b"cell c\nstate h\nh' = W @ x\n", None, 3, ["cell c"]],
                         ids=["bytes", "None", "int", "list"])
def test_non_text_is_a_spec_error(value):
    with pytest.raises(SpecError, match="must be text"):
        lstmc.parse(value)


# ------------------------------------------------------------------ pathological size and nesting

def _raises_quickly(src: str, phrase: str, limit_s: float = 2.0) -> SpecError:
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as info:     # never RecursionError, MemoryError or a hang
        lstmc.parse(src)
    assert time.perf_counter() - t0 < limit_s
    assert phrase in info.value.problem, info.value.problem
    return info.value


def test_deeply_nested_parentheses():
    _raises_quickly(_cell("h' = " + "(" * 10_000 + "h" + ")" * 10_000), "characters long")


def test_nested_parentheses_within_the_line_limit():
    e = _raises_quickly(_cell("h' = " + "(" * 1_500 + "h" + ")" * 1_500), "nested deeper")
    assert e.line == 3 and e.col == 5 + MAX_NESTING + 1


def test_deeply_nested_calls():
    e = _raises_quickly(_cell("h' = " + "tanh(" * 500 + "h" + ")" * 500), "nested deeper")
    assert e.line == 3


def test_unclosed_deep_nesting():
    _raises_quickly(_cell("h' = " + "(" * 3_000), "nested deeper")


def test_nesting_at_the_limit_parses():
    cell = lstmc.parse(_cell("h' = " + "tanh(" * MAX_NESTING + "W @ x" + ")" * MAX_NESTING))
    assert cell.params == {"W": "W"}


def test_very_long_line():
    _raises_quickly(_cell("h' = " + "h + " * 250_000 + "h"), "characters long")   # 1 MB


def test_long_line_under_the_size_limit():
    e = _raises_quickly(_cell("h' = " + "h + " * 10_000 + "h"), "characters long")
    assert e.line == 3


def test_one_megabyte_of_garbage():
    _raises_quickly("cell c\nstate h\n" + "@" * 1_000_000, "characters long")


def test_many_statements():
    _raises_quickly(_cell(*(f"a{i} = W @ x" for i in range(100_000)), "h' = W @ x"), "characters long")


def test_many_statements_under_the_size_limit():
    e = _raises_quickly(_cell(*(f"a{i} = h" for i in range(10_000)), "h' = h"), "statements")
    assert e.line > 2_000


def test_many_unary_signs():
    _raises_quickly(_cell("h' = " + "-" * 3_000 + "h"), "consecutive signs")


def test_long_chains_parse_in_linear_time():
    # spaced signs, long sums and a long chain of intermediates are legal: no recursion, no quadratic blow-up
    t0 = time.perf_counter()
    lstmc.parse(_cell("h' = " + "- " * 1_900 + "h"))
    lstmc.parse(_cell("h' = " + "h * " * 900 + "(W @ x)"))
    chain = ["a0 = W @ x"] + [f"a{i} = a{i - 1} + h" for i in range(1, 1_500)] + ["h' = a1499"]
    cell = lstmc.parse(_cell(*chain))
    assert len(cell.equations) == 1_501
    assert time.perf_counter() - t0 < 5.0


def test_long_cycle_is_reported_not_recursed():
    chain = [f"a{i} = a{i + 1} + h" for i in range(1_500)] + ["a1500 = a0 * h", "h' = a0 + W @ x"]
    e = _raises_quickly(_cell(*chain), "cycle: ")
    assert e.line >= 3


# -------------------------------------------------------------------------------------- good specs

@pytest.mark.parametrize("name", lstmc.builtin_cells())
def test_builtin_cells_parse(name):
    cell = lstmc.load(name)
    assert cell.name == name
    assert cell.states and cell.output == cell.states[0]
    assert set(cell.new) == set(cell.states)
    assert set(cell.params.values()) <= {"W", "U", "b"}
    assert cell.equations[-1][0].endswith("'")
    # re-parsing the source gives the same interned IR
    again = lstmc.parse(cell.source, filename="again.cell")
    assert again.new == cell.new and again.params == cell.params and again.inits == cell.inits


def test_builtin_list():
    names = lstmc.builtin_cells()
    assert {"lstm", "gru", "indrnn", "peephole_lstm"} <= set(names)
    assert names == sorted(names)


def test_lstm_fields():
    cell = lstmc.load("lstm")
    assert cell.states == ("h", "c")
    assert cell.output == "h"
    assert cell.params["W_i"] == "W" and cell.params["U_f"] == "U" and cell.params["b_hg"] == "b"
    assert list(cell.params)[:4] == ["W_i", "b_ii", "U_i", "b_hi"]      # order of first appearance
    assert sum(k == "W" for k in cell.params.values()) == 4
    assert sum(k == "U" for k in cell.params.values()) == 4
    assert sum(k == "b" for k in cell.params.values()) == 8
    assert [k for k, _ in cell.equations] == ["i", "f", "g", "o", "c'", "h'"]
    assert cell.inits == {}
    assert cell.param_shape("W_i", 3, 5) == (5, 3)
    assert cell.param_shape("U_i", 3, 5) == (5, 5)
    assert cell.param_shape("b_ii", 3, 5) == (5,)


def test_peephole_uses_old_and_new_c():
    cell = lstmc.load("peephole_lstm")
    assert {cell.params[p] for p in ("p_i", "p_f", "p_o")} == {"b"}
    order = [k for k, _ in cell.equations]
    assert order.index("c'") < order.index("o")          # o reads c'


def test_janet_init():
    cell = lstmc.load("janet")
    assert cell.inits == {"b_f": 1.0}
    assert cell.params["b_f"] == "b"


def test_indrnn_single_state_no_recurrent_product():
    cell = lstmc.load("indrnn")
    assert cell.states == ("h",) and cell.output == "h"
    assert cell.params == {"W": "W", "u": "b", "b": "b"}
    assert "U" not in cell.params.values()


GOOD = [
    ("minimal", "cell c\nstate h\nh' = tanh(W @ x + U @ h + b)\n"),
    ("use-before-definition", "cell c\nstate h\nh' = o * tanh(a)\no = sigmoid(V @ x)\na = W @ x + U @ h\n"),
    ("state-before-definition", "cell c\nstate h, c\nh' = tanh(c')\nc' = c + W @ x\n"),
    ("comments-and-blank-lines", "# leading comment\n\ncell c   # the name\n\n   \nstate h # state\n\n"
                                 "# an equation follows\nh' = tanh(W @ x)   # trailing\n\n# done\n"),
    ("no-trailing-newline", "cell c\nstate h\nh' = W @ x"),
    ("crlf", "cell c\r\nstate h\r\nh' = W @ x\r\n"),
    ("tabs-and-indent", "\tcell c\n  state h\n\th'\t=\ttanh( W @ x )\n"),
    ("unary-minus", "cell c\nstate h\nh' = -h + -(W @ x) - -b\n"),
    ("unary-plus", "cell c\nstate h\nh' = +h + W @ x\n"),
    ("numbers", "cell c\nstate h\nh' = 1e-3 * h + .5 * (W @ x) + 2. * b + 1E+2 * h + 0.25 / h + 7 * h\n"),
    ("indrnn-like", "cell ind\nstate h\nh' = relu(W @ x + u * h + b)\n"),
    ("output-second-state", "cell c\nstate h, c\noutput c\nh' = W @ x + c\nc' = U @ h\n"),
    ("all-functions", "cell c\nstate h\nh' = sigmoid(h) + tanh(h) + relu(h) + exp(h) + log(h) + softplus(h)"
                      " + sqrt(h) + abs(W @ x)\n"),
    ("matmul-of-expression", "cell c\nstate h\nh' = U @ (tanh(W @ x) * h)\n"),
    ("matmul-of-new-state", "cell c\nstate h, c\nc' = W @ x + c\nh' = U @ c'\n"),
    ("directive-prefixed-names", "cell c\nstate h\ncellar = W @ x\nstates = cellar * h\nh' = states\n"),
    ("names-with-digits", "cell c2\nstate h1, h_2\nh1' = W1 @ x + h_2\nh_2' = U_2 @ h1\n"),
    ("inits", "cell c\nstate h\ninit W = xavier\ninit U = orthogonal\ninit b = -0.5\n"
              "h' = tanh(W @ x + U @ h + b)\n"),
    ("state-updated-to-itself", "cell c\nstate h, c\nc' = c\nh' = W @ x + c\n"),
    ("directive-then-spaces", "cell    c\nstate   h ,c\nh' = W @ x\nc' = c\n"),
]


@pytest.mark.parametrize("src", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_spec(src):
    cell = lstmc.parse(src, filename="good.cell")
    assert isinstance(cell, lstmc.Cell)
    assert cell.filename == "good.cell" and cell.source == src
    assert set(cell.new) == set(cell.states)
    assert cell.output in cell.states


def test_good_spec_fields():
    cell = lstmc.parse("cell c\nstate h\nh' = o * tanh(a)\no = sigmoid(V @ x)\na = W @ x + U @ h + b\n")
    assert cell.name == "c" and cell.states == ("h",) and cell.output == "h"
    assert list(cell.params.items()) == [("V", "W"), ("W", "W"), ("U", "U"), ("b", "b")]  # source order
    keys = [k for k, _ in cell.equations]
    assert keys.index("o") < keys.index("h'") and keys.index("a") < keys.index("h'")
    assert str(cell.new["h"]) == str(dict(cell.equations)["h'"])


def test_output_default_is_first_state():
    assert lstmc.parse("cell c\nstate c, h\nc' = W @ x\nh' = c\n").output == "c"
    assert lstmc.parse("cell c\nstate c, h\noutput h\nc' = W @ x\nh' = c\n").output == "h"


def test_inits_parsed():
    src = ("cell c\nstate h\ninit W = xavier\ninit U = orthogonal\ninit b = -0.5\ninit p = 1e-2\n"
           "init q = zeros\nh' = tanh(W @ x + U @ h + b + p * h + q)\n")
    cell = lstmc.parse(src)
    assert cell.inits == {"W": "xavier", "U": "orthogonal", "b": -0.5, "p": 0.01, "q": "zeros"}
    assert cell.params == {"W": "W", "U": "U", "b": "b", "p": "b", "q": "b"}
    assert set(INIT_KINDS) >= {"zeros", "ones", "uniform", "normal", "xavier", "orthogonal"}


def test_numbers_are_constants():
    cell = lstmc.parse("cell c\nstate h\nh' = .5 * h + 1e-3 * (W @ x)\n")
    consts = sorted(n.attr for n in ir.walk([cell.new["h"]]) if n.op == "const")
    assert consts == [0.001, 0.5]


def test_unary_minus_is_negation():
    cell = lstmc.parse("cell c\nstate h\nh' = -h + W @ x\n")
    ops = {n.op for n in ir.walk([cell.new["h"]])}
    assert "neg" in ops and "matvec" in ops and "input" in ops


def test_matrix_kinds_from_use():
    cell = lstmc.parse("cell c\nstate h\na = tanh(W @ x)\nh' = U @ (a * h) + V @ a + p * h\n")
    assert cell.params == {"W": "W", "U": "U", "V": "U", "p": "b"}


def test_names_map_nodes_to_spec_names():
    cell = lstmc.load("gru")
    assert set(cell.names.values()) >= {"r", "z", "n", "h'"}
